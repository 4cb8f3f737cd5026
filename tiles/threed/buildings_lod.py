"""Tiles and levels of detail for extruded buildings: a quadtree by feature count and triangle budget.

Buildings are kept whole and sorted by the centre of their footprint into a quadtree (a median
split when all centres share one quadrant) until a leaf holds at most `max_features` buildings
and `max_triangles` triangles (the byte budget). Leaves draw the full LOD1 prisms. An inner tile
draws a generalised city for its area: the largest buildings (by the diagonal of their 3D box)
as prisms of their footprint's oriented bounding rectangle, as many as fit a quarter of a
leaf's triangle budget; smaller ones are left out. Its geometric error is the real distance between
that and the full model: the largest building left out (its diagonal) or the largest Hausdorff
distance between a kept footprint and its rectangle, whichever is more, and at least twice its
children's error so that clients refine one level at a time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tiles.threed.gltf import TileMesh
from tiles.threed.subdivide import MIN_ERROR, LodNode, submesh


@dataclass
class Footprints:
    """Per building (feature ids 0..n-1): full prisms, rectangle prisms, 3D size and rectangle error."""

    full: TileMesh
    boxes: TileMesh
    size: np.ndarray
    box_error: np.ndarray


class _Index:
    """Triangles of each feature in a mesh, for cutting out any set of features at once."""

    def __init__(self, mesh: TileMesh, features: int) -> None:
        owner = mesh.feature_ids[mesh.indices[:, 0]]
        self.mesh = mesh
        self.order = np.argsort(owner, kind="stable")
        self.counts = np.bincount(owner, minlength=features)
        self.starts = np.r_[0, np.cumsum(self.counts)[:-1]]

    def cut(self, selection: np.ndarray) -> TileMesh:
        counts = self.counts[selection]
        offsets = np.repeat(self.starts[selection] - np.r_[0, np.cumsum(counts)[:-1]], counts)
        triangles = self.order[np.arange(int(counts.sum())) + offsets]
        return submesh(self.mesh, triangles)


def build_tree(footprints: Footprints, *, max_triangles: int, max_features: int, max_depth: int = 16) -> LodNode:
    """The tile tree of a layer's buildings (feature ids are global: rows of the layer's table)."""
    count = len(footprints.size)
    full, boxes = _Index(footprints.full, count), _Index(footprints.boxes, count)
    positions, owner = footprints.full.positions, footprints.full.feature_ids
    low = np.full((count, 3), np.inf)
    high = np.full((count, 3), -np.inf)
    np.minimum.at(low, owner, positions)
    np.maximum.at(high, owner, positions)
    centres = (low[:, :2] + high[:, :2]) / 2.0
    coarse_budget = max(max_triangles // 4, 1)

    def node(selection: np.ndarray, address: str, depth: int) -> LodNode:
        box_low, box_high = low[selection].min(axis=0), high[selection].max(axis=0)
        fits = full.counts[selection].sum() <= max_triangles and len(selection) <= max_features
        groups = [] if fits or depth >= max_depth or len(selection) < 2 else _quadrants(selection, centres)
        if len(groups) < 2:
            return LodNode(address, box_low, box_high, full.cut(selection), 0.0, 0.0)
        children = [node(group, f"{address}_{i}", depth + 1) for i, group in enumerate(groups)]
        by_size = selection[np.argsort(-footprints.size[selection], kind="stable")]
        kept = by_size[np.cumsum(boxes.counts[by_size]) <= coarse_budget]
        dropped = by_size[len(kept) :]
        content_error = max(
            float(footprints.size[dropped].max()) if len(dropped) else 0.0,
            float(footprints.box_error[kept].max()) if len(kept) else 0.0,
        )
        error = max(content_error, 2.0 * max(child.error for child in children), MIN_ERROR)
        if not len(kept):  # not even one rectangle fits: draw the largest building anyway
            kept = by_size[:1]
        return LodNode(address, box_low, box_high, boxes.cut(np.sort(kept)), error, content_error, children)

    return node(np.arange(count), "0", 0)


def _quadrants(selection: np.ndarray, centres: np.ndarray) -> list[np.ndarray]:
    """Quadrants of the centres' extent; a median split along the longer side when one holds all."""
    points = centres[selection]
    middle = (points.min(axis=0) + points.max(axis=0)) / 2.0
    code = (points[:, 0] > middle[0]).astype(np.int64) | ((points[:, 1] > middle[1]).astype(np.int64) << 1)
    groups = [selection[code == c] for c in np.unique(code)]
    if len(groups) > 1:
        return groups
    axis = int(np.argmax(np.ptp(points, axis=0)))
    ranks = np.argsort(points[:, axis], kind="stable")
    half = len(selection) // 2
    return [selection[ranks[:half]], selection[ranks[half:]]]
