"""LOD1 prisms from footprints: walls along every ring edge and a flat roof triangulated with its holes.

Array-first: walls of all footprints come out of a few numpy operations on the rings' edges;
roofs of convex quadrilaterals (most footprints) are fanned in bulk and every other roof goes
through earcut (`mapbox_earcut`) with its courtyards as holes. Rings are oriented here
(exteriors counter-clockwise, holes clockwise seen from above), so wall normals point out of the
building, into a courtyard for a hole's walls, and roof normals point up. No floor is drawn: a
building stands on the terrain. Coordinates stay in the caller's metric frame (project CRS)
with heights in metres.
"""

from __future__ import annotations

from dataclasses import dataclass

import mapbox_earcut
import numpy as np
import shapely

QUAD = np.array([[0, 1, 2], [0, 2, 3]], dtype=np.int64)
MIN_EDGE = 1e-6  # metres: shorter ring edges get no wall


@dataclass
class Prisms:
    """Triangles of extruded footprints: xyz (project CRS, heights in metres), feature index per vertex."""

    positions: np.ndarray
    indices: np.ndarray
    feature_ids: np.ndarray


def polygon_parts(geometries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every polygon of (multi)polygon geometries and the index of the geometry it came from."""
    parts, owner = shapely.get_parts(np.asarray(geometries, dtype=object), return_index=True)
    polygonal = (shapely.get_type_id(parts) == 3) & ~shapely.is_empty(parts)
    return parts[polygonal], owner[polygonal]


def _rings(parts: np.ndarray):
    """Ring coordinates (closing point kept), ring per coordinate, part per ring, exterior flag per ring."""
    rings, ring_part = shapely.get_rings(parts, return_index=True)
    exterior = np.r_[True, ring_part[1:] != ring_part[:-1]] if len(ring_part) else np.zeros(0, dtype=bool)
    coords, ring_of = shapely.get_coordinates(rings, return_index=True)
    return coords, ring_of, ring_part, exterior


def walls(parts: np.ndarray, owner: np.ndarray, base: np.ndarray, top: np.ndarray) -> Prisms:
    """One quad (two triangles) per ring edge, from the feature's base to its roof height."""
    coords, ring_of, ring_part, exterior = _rings(parts)
    same = ring_of[1:] == ring_of[:-1]
    a, b, edge_ring = coords[:-1][same], coords[1:][same], ring_of[:-1][same]
    twice_area = np.bincount(edge_ring, a[:, 0] * b[:, 1] - b[:, 0] * a[:, 1], minlength=len(exterior))
    swap = ((twice_area > 0) != exterior)[edge_ring]  # exteriors run counter-clockwise, holes clockwise
    a, b = np.where(swap[:, None], b, a), np.where(swap[:, None], a, b)
    long_enough = np.hypot(*(b - a).T) > MIN_EDGE
    a, b, edge_ring = a[long_enough], b[long_enough], edge_ring[long_enough]
    feature = owner[ring_part[edge_ring]]
    low, high = base[feature], top[feature]
    corners = np.stack(
        [
            np.column_stack([a, low]),
            np.column_stack([b, low]),
            np.column_stack([b, high]),
            np.column_stack([a, high]),
        ],
        axis=1,
    )
    first = (np.arange(len(a)) * 4)[:, None, None]
    return Prisms(
        corners.reshape(-1, 3),
        (first + QUAD[None]).reshape(-1, 3),
        np.repeat(feature, 4),
    )


def roofs(parts: np.ndarray, owner: np.ndarray, top: np.ndarray) -> Prisms:
    """Flat roofs at `top`, holes left open: convex quadrilaterals fanned, the rest by earcut."""
    coords, ring_of, ring_part, exterior = _rings(parts)
    closing = np.r_[ring_of[1:] != ring_of[:-1], True]  # the repeated first point of each ring
    coords, ring_of = coords[~closing], ring_of[~closing]
    ring_sizes = np.bincount(ring_of, minlength=len(exterior))
    part_rings = np.bincount(ring_part, minlength=len(parts))
    ring_start = np.r_[0, np.cumsum(ring_sizes)[:-1]]
    part_first_ring = np.r_[0, np.cumsum(part_rings)[:-1]]
    quad = (part_rings == 1) & (ring_sizes[part_first_ring] == 4)
    quad[quad] = _convex_quads(coords, ring_start[part_first_ring[quad]])
    positions, indices, ids = [], [], []
    count = 0
    if quad.any():
        starts = ring_start[part_first_ring[quad]]
        corners = coords[starts[:, None] + np.arange(4)[None]]
        feature = owner[quad]
        positions.append(np.column_stack([corners.reshape(-1, 2), np.repeat(top[feature], 4)]))
        indices.append(((np.arange(len(starts)) * 4)[:, None, None] + QUAD[None]).reshape(-1, 3))
        ids.append(np.repeat(feature, 4))
        count = 4 * len(starts)
    for part in np.flatnonzero(~quad):
        first, n_rings = part_first_ring[part], part_rings[part]
        ends = ring_start[first : first + n_rings] + ring_sizes[first : first + n_rings]
        start, stop = ring_start[first], ends[-1]
        ring_ends = (ends - start).astype(np.uint32)
        xy = coords[start:stop]
        if len(xy) < 3:
            continue
        origin = xy.min(axis=0)
        triangles = mapbox_earcut.triangulate_float64(xy - origin, ring_ends).astype(np.int64).reshape(-1, 3)
        if not len(triangles):
            continue
        feature = owner[part]
        positions.append(np.column_stack([xy, np.full(len(xy), top[feature])]))
        indices.append(triangles + count)
        ids.append(np.full(len(xy), feature))
        count += len(xy)
    if not positions:
        return Prisms(np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64), np.zeros(0, dtype=np.int64))
    prisms = Prisms(np.concatenate(positions), np.concatenate(indices), np.concatenate(ids))
    return _facing_up(prisms)


def _convex_quads(coords: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Whether each four-corner ring is strictly convex (so a fan from its first corner is right)."""
    corners = coords[starts[:, None] + np.arange(4)[None]]
    edges = np.roll(corners, -1, axis=1) - corners
    turns = edges[:, :, 0] * np.roll(edges, -1, axis=1)[:, :, 1] - edges[:, :, 1] * np.roll(edges, -1, axis=1)[:, :, 0]
    return np.all(turns > 0, axis=1) | np.all(turns < 0, axis=1)


def _facing_up(prisms: Prisms) -> Prisms:
    a, b, c = (prisms.positions[prisms.indices[:, k], :2] for k in range(3))
    upward = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    indices = prisms.indices.copy()
    down = upward < 0
    indices[down] = indices[down][:, [0, 2, 1]]
    return Prisms(prisms.positions, indices, prisms.feature_ids)


def extrude(geometries: np.ndarray, base: np.ndarray, top: np.ndarray) -> Prisms:
    """Walls and roofs of each footprint (feature id = its index in `geometries`) from base to top."""
    parts, owner = polygon_parts(geometries)
    base, top = np.asarray(base, dtype=float), np.asarray(top, dtype=float)
    pieces = [walls(parts, owner, base, top), roofs(parts, owner, top)]
    offsets = np.cumsum([0] + [len(p.positions) for p in pieces[:-1]])
    return Prisms(
        np.concatenate([p.positions for p in pieces]),
        np.concatenate([p.indices + o for p, o in zip(pieces, offsets, strict=True)]),
        np.concatenate([p.feature_ids for p in pieces]),
    )


def prism_normals(positions: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Per-vertex normals of prism meshes, whose faces share no vertex (each face its own corners):
    the face normal scattered to its corners, with no search for shared vertices."""
    a, b, c = (positions[indices[:, k]] for k in range(3))
    normals = np.cross(b - a, c - a)
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    normals = np.divide(normals, length, out=np.zeros_like(normals), where=length > 0)
    out = np.zeros_like(positions, dtype=np.float64)
    out[indices.reshape(-1)] = np.repeat(normals, 3, axis=0)
    return out
