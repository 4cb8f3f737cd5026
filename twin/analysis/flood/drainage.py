"""How much water the drainage system can take from the surface, inlet by inlet.

From a pipe network: each inlet takes at most its grate's capacity (less clogging) and its lead pipe's full
flow; and every pipe downstream can carry no more than its full flow (Manning, full bore), so
when the inlets upstream of a pipe together could take more than it carries, they are scaled
down by that ratio (the tightest pipe on the way to the outfall decides). A static, capacity-
limited view that ignores storage and surcharge; SWMM coupling is the dynamic alternative.

From a design capacity in mm/h: each inlet takes that rate over the cells nearest to it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from twin.model import InvalidInput

GRATE_M3S = 0.020  # a single flat grate inlet (GB 50014 commentary and design handbooks: about 20 L/s)
CLOGGING = 0.5  # share of a grate's capacity lost to debris; FHWA HEC-22 takes 50 % for grates in sags
PIPE_N = 0.013  # concrete sewer roughness commonly used in design (GB 50014's pipe roughness table)
MIN_SLOPE = 0.0005  # a flat or reversed pipe is given this slope rather than no capacity


def full_flow(diameter_m: np.ndarray, width_m: np.ndarray, height_m: np.ndarray, slope: np.ndarray, n: float = PIPE_N):
    """Manning full-bore capacity (m³/s) of circular (diameter) or box (width × height) pipes."""
    d = np.nan_to_num(np.asarray(diameter_m, dtype=float))
    w = np.nan_to_num(np.asarray(width_m, dtype=float))
    h = np.nan_to_num(np.asarray(height_m, dtype=float))
    box = (d <= 0) & (w > 0) & (h > 0)
    area = np.where(box, w * h, np.pi * d * d / 4.0)
    perimeter = np.where(box, 2.0 * (w + h), np.pi * d)
    radius = np.divide(area, perimeter, out=np.zeros_like(area), where=perimeter > 0)
    s = np.maximum(np.nan_to_num(np.asarray(slope, dtype=float), nan=MIN_SLOPE), MIN_SLOPE)
    return area * radius ** (2.0 / 3.0) * np.sqrt(s) / n


@dataclass
class PipeNetwork:
    """A drainage network as arrays: nodes (ids, inlet flags) and pipes (ends, size, slope)."""

    node_ids: np.ndarray
    is_inlet: np.ndarray
    pipe_start: np.ndarray
    pipe_end: np.ndarray
    capacity_m3s: np.ndarray

    @classmethod
    def from_pipes(
        cls,
        node_ids,
        is_inlet,
        start_ids,
        end_ids,
        *,
        diameter_m,
        width_m,
        height_m,
        slope,
        roughness: float = PIPE_N,
    ) -> PipeNetwork:
        ids = np.asarray(node_ids, dtype=object).astype(str)
        lookup = {k: i for i, k in enumerate(ids)}
        try:
            start = np.fromiter((lookup[str(s)] for s in start_ids), np.int64)
            end = np.fromiter((lookup[str(e)] for e in end_ids), np.int64)
        except KeyError as exc:
            raise InvalidInput(f"drainage pipe refers to unknown node {exc.args[0]!r}") from None
        return cls(
            ids, np.asarray(is_inlet, bool), start, end, full_flow(diameter_m, width_m, height_m, slope, roughness)
        )

    def inlet_capacity(self, grate_m3s: float = GRATE_M3S) -> np.ndarray:
        """Capacity (m³/s) of every node flagged as an inlet, in node order of `np.nonzero(is_inlet)`."""
        n = len(self.node_ids)
        down = np.full(n, -1, np.int64)  # the first pipe leaving each node
        order = np.argsort(self.pipe_start, kind="stable")
        first = np.unique(self.pipe_start[order], return_index=True)
        down[first[0]] = order[first[1]]
        inlets = np.nonzero(self.is_inlet)[0]
        own = np.full(len(inlets), grate_m3s)
        lead = down[inlets]
        own = np.where(lead >= 0, np.minimum(own, self.capacity_m3s[np.maximum(lead, 0)]), own)
        paths = [self._path(down, node) for node in inlets]
        upstream = np.zeros(len(self.pipe_start))
        for k, path in enumerate(paths):
            upstream[path] += own[k]
        scale = np.minimum(1.0, np.divide(self.capacity_m3s, upstream, out=np.ones_like(upstream), where=upstream > 0))
        return np.array([own[k] * (scale[p].min() if len(p) else 1.0) for k, p in enumerate(paths)])

    def _path(self, down: np.ndarray, node: int) -> np.ndarray:
        seen: set[int] = set()
        pipes = []
        while down[node] >= 0 and node not in seen:
            seen.add(node)
            pipe = down[node]
            pipes.append(pipe)
            node = self.pipe_end[pipe]
        return np.asarray(pipes, np.int64)


def design_rate_capacity(shape: tuple[int, int], rows: np.ndarray, cols: np.ndarray, rate_mm_h: float, dx: float):
    """Each inlet's share of a design drainage rate: the rate over the cells nearest to it (m³/s)."""
    if not rate_mm_h >= 0:
        raise InvalidInput(f"design drainage capacity must not be negative, got {rate_mm_h} mm/h")
    if len(rows) == 0:
        return np.zeros(0)
    marks = np.ones(shape, bool)
    marks[rows, cols] = False
    _, (ni, nj) = ndimage.distance_transform_edt(marks, return_indices=True)
    nearest = (ni * shape[1] + nj).ravel()
    cells_per = np.bincount(nearest, minlength=shape[0] * shape[1])
    flat = rows * shape[1] + cols
    sharing = np.bincount(flat, minlength=shape[0] * shape[1])[flat]
    return rate_mm_h / 3.6e6 * dx * dx * cells_per[flat] / sharing
