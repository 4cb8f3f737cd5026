"""The tile tree of a pipe network: a quadtree over whole features, coarse tiles that keep the mains.

Pipes, shafts and symbols are kept whole and sorted into a quadtree by the centre of their box
until a tile holds at most `leaf_triangles` (and `leaf_features`). Leaves draw their features
in full detail. An inner tile draws its whole subtree again, coarsely: circular sections get
fewer sides and no end caps, and only the thickest features are kept, as many as fit in the
same triangle budget (the mains; service pipes drop out first). Its geometric error is what
that costs, measured: the largest n-gon sag of a kept pipe (r·(1 − cos π/n) against the true
circle) and the size (box diagonal) of the largest feature left out, at least twice the
children's error so that clients refine one level at a time. Volumes are geographic regions,
each the union of its features' own padded regions, so a child's volume is always inside its
parent's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

MIN_ERROR = 0.001  # metres: the smallest geometric error an inner tile gets


@dataclass
class FeatureStats:
    """Per feature: centre (ENU x, y), thickness and size (m), triangles full and coarse, coarse sag, region."""

    centre: np.ndarray
    thickness: np.ndarray
    size: np.ndarray
    full_triangles: np.ndarray
    coarse_triangles: np.ndarray
    coarse_error: np.ndarray
    region: np.ndarray  # (n, 6): west, south, east, north (degrees), low, high (ellipsoidal metres)


@dataclass
class PipeTile:
    """One tile: the features below it, those its content draws (coarsely unless a leaf), volume, error."""

    address: str
    features: np.ndarray
    drawn: np.ndarray
    coarse: bool
    region: np.ndarray
    error: float
    children: list[PipeTile] = field(default_factory=list)

    def walk(self):
        yield self
        for child in self.children:
            yield from child.walk()


def build_tree(
    stats: FeatureStats, *, leaf_triangles: int = 40_000, leaf_features: int = 4_000, max_depth: int = 14
) -> PipeTile:
    """The tree over every feature (indices into `stats`)."""
    if not len(stats.size):
        raise ValueError("nothing to tile: no features")

    def node(selection: np.ndarray, address: str, depth: int) -> PipeTile:
        region = _union(stats.region[selection])
        heavy = stats.full_triangles[selection].sum() > leaf_triangles or len(selection) > leaf_features
        groups = _partition(selection, stats.centre[selection]) if heavy and depth < max_depth else []
        if len(groups) <= 1:
            return PipeTile(address, selection, selection, False, region, 0.0)
        children = [node(group, f"{address}_{i}", depth + 1) for i, group in enumerate(groups)]
        drawn, content_error = coarse_content(stats, selection, leaf_triangles)
        error = max(content_error, 2.0 * max(c.error for c in children), MIN_ERROR)
        return PipeTile(address, selection, drawn, True, region, error, children)

    return node(np.arange(len(stats.size)), "0", 0)


def coarse_content(stats: FeatureStats, selection: np.ndarray, budget: int) -> tuple[np.ndarray, float]:
    """The thickest features that fit in `budget` coarse triangles, and the error of drawing only them."""
    order = selection[np.lexsort((-stats.size[selection], -stats.thickness[selection]))]
    fits = np.cumsum(stats.coarse_triangles[order]) <= budget
    fits[0] = True
    kept, dropped = order[fits], order[~fits]
    error = float(stats.coarse_error[kept].max())
    if len(dropped):
        error = max(error, float(stats.size[dropped].max()))
    return np.sort(kept), error


def _union(regions: np.ndarray) -> np.ndarray:
    return np.concatenate(
        [regions[:, :2].min(axis=0), regions[:, 2:4].max(axis=0), [regions[:, 4].min()], [regions[:, 5].max()]]
    )


def _partition(selection: np.ndarray, centres: np.ndarray) -> list[np.ndarray]:
    """Quadrants (or halves, for long thin extents) of the centres' box; a median split when they coincide."""
    low, high = centres.min(axis=0), centres.max(axis=0)
    extent = high - low
    middle = (low + high) / 2.0
    code = np.zeros(len(selection), dtype=np.int64)
    for axis in range(2):
        if extent[axis] > 0 and extent[axis] >= 0.5 * extent.max():
            code |= (centres[:, axis] > middle[axis]).astype(np.int64) << axis
    groups = [selection[code == c] for c in np.unique(code)]
    if len(groups) > 1:
        return groups
    axis = int(np.argmax(extent))
    ranks = np.argsort(centres[:, axis], kind="stable")
    half = len(selection) // 2
    return [selection[ranks[:half]], selection[ranks[half:]]] if half else [selection]
