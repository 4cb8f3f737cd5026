"""Flooded road sections: stretches of road where water stood deeper than a limit.

GB 50014 takes 15 cm on a traffic lane as the limit for waterlogging of a road. Each road
centreline is walked in steps of half a cell; at every station the deepest water across the
carriageway (its width, or 7 m) is taken from the max-depth grid, and runs of stations over the
limit become sections with their own geometry, deepest point and time over the limit.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import shapely
from shapely.ops import substring

from twin.analysis.flood.grid import Grid

LIMIT_M = 0.15
DEFAULT_WIDTH_M = 7.0
JOIN_M = 10.0  # flooded stretches closer than this along a road are one section
MIN_LENGTH_M = 5.0  # shorter ones are puddles at a model cell's corner, not a flooded section


@dataclass
class Road:
    """A road centreline with what identifies it to a person."""

    id: str
    geometry: shapely.LineString | shapely.MultiLineString
    name: str = ""
    width_m: float | None = None
    properties: dict[str, Any] = field(default_factory=dict)


@dataclass
class RoadSection:
    id: str
    road_id: str
    road_name: str
    geometry: shapely.LineString
    length_m: float
    max_depth_m: float
    time_above_s: float
    deepest_xy: tuple[float, float]

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "road_id": self.road_id,
            "road_name": self.road_name,
            "length_m": round(self.length_m, 1),
            "max_depth_m": round(self.max_depth_m, 3),
            "time_above_limit_s": round(self.time_above_s, 1),
            "deepest_point": [round(self.deepest_xy[0], 2), round(self.deepest_xy[1], 2)],
            "geometry": shapely.geometry.mapping(self.geometry),
        }


def flooded_sections(
    roads: Iterable[Road],
    grid: Grid,
    max_depth: np.ndarray,
    time_above_s: np.ndarray,
    *,
    limit_m: float = LIMIT_M,
    exclude: np.ndarray | None = None,
) -> list[RoadSection]:
    """Sections of `roads` whose max depth exceeds `limit_m`, deepest first.

    `exclude` marks cells to ignore (rivers and ponds under bridges are not road flooding).
    """
    depth = max_depth if exclude is None else np.where(exclude, 0.0, max_depth)
    out: list[RoadSection] = []
    for road in roads:
        first = len(out)
        for part in getattr(road.geometry, "geoms", [road.geometry]):
            if not part.is_empty and part.length > 0:
                out.extend(_sections(road, part, grid, depth, time_above_s, limit_m, len(out) - first))
    return sorted(out, key=lambda s: -s.max_depth_m)


def _sections(road, line, grid, depth, time_above, limit, numbered) -> list[RoadSection]:
    step = grid.dx / 2.0
    along = np.linspace(0.0, line.length, max(2, int(np.ceil(line.length / step)) + 1))
    points = shapely.get_coordinates(shapely.line_interpolate_point(line, along))
    ahead = shapely.get_coordinates(shapely.line_interpolate_point(line, np.minimum(along + step, line.length)))
    behind = shapely.get_coordinates(shapely.line_interpolate_point(line, np.maximum(along - step, 0.0)))
    tangent = ahead - behind
    tangent /= np.maximum(np.hypot(tangent[:, 0], tangent[:, 1]), 1e-12)[:, None]
    normal = np.column_stack([-tangent[:, 1], tangent[:, 0]])
    half = (road.width_m or DEFAULT_WIDTH_M) / 2.0
    offsets = np.linspace(-half, half, max(3, int(np.ceil(2 * half / step)) + 1))
    samples = points[:, None, :] + offsets[None, :, None] * normal[:, None, :]
    rows, cols, inside = grid.cells(samples.reshape(-1, 2))
    r, c = np.where(inside, rows, 0), np.where(inside, cols, 0)
    d = np.where(inside, depth[r, c], 0.0).reshape(len(along), len(offsets))
    ta = np.where(inside, time_above[r, c], 0.0).reshape(len(along), len(offsets))
    station_depth = d.max(axis=1)
    wet = _joined(station_depth > limit, int(JOIN_M / step))
    runs = [(a, b) for a, b in _runs(wet) if (b - a) * step >= MIN_LENGTH_M]
    sections = []
    for k, (a, b) in enumerate(runs):
        d0 = max(along[a] - step / 2.0, 0.0)
        d1 = min(along[b - 1] + step / 2.0, line.length)
        deepest = a + int(np.argmax(station_depth[a:b]))
        which = int(np.argmax(d[deepest]))
        sections.append(
            RoadSection(
                id=f"{road.id}#{numbered + k + 1}",
                road_id=road.id,
                road_name=road.name,
                geometry=substring(line, d0, d1),
                length_m=d1 - d0,
                max_depth_m=float(station_depth[deepest]),
                time_above_s=float(ta[a:b].max()),
                deepest_xy=tuple(float(v) for v in samples[deepest, which]),
            )
        )
    return sections


def _joined(flags: np.ndarray, gap: int) -> np.ndarray:
    """Fill dry gaps of at most `gap` stations between wet ones."""
    out = flags.copy()
    for a, b in _runs(~flags):
        if a > 0 and b < len(flags) and b - a <= gap:
            out[a:b] = True
    return out


def _runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """Start and end (exclusive) of each run of True."""
    edges = np.diff(np.concatenate([[0], flags.astype(np.int8), [0]]))
    return list(zip(np.nonzero(edges == 1)[0], np.nonzero(edges == -1)[0], strict=True))
