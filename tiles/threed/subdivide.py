"""Spatial subdivision and levels of detail for a layer's triangles.

Features (BIM elements, pipes, buildings) are kept whole and sorted into an adaptive octree by
the centre of their bounding box: a node splits along the axes whose extent is at least half of
its largest (so flat districts become quadtrees and towers split vertically too) until it holds
at most `leaf_triangles`. Leaves carry the full geometry. Every inner node carries a coarser
version of its children's content, simplified with meshoptimizer (quadric edge collapse;
small disconnected parts pruned) to about `leaf_triangles`, and its geometric error is the
simplification error meshoptimizer measures, plus the error its children's content already
had, plus the size of any feature dropped: the real distance between what is drawn and the
full model. Errors are also made to at least halve at each level, so the screen-space error
test in the client refines one level at a time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import meshoptimizer
import numpy as np
from scipy.spatial import cKDTree

from tiles.threed.gltf import TileMesh

WELD_PRECISION = 1e-4  # metres: vertices closer than this are one vertex for the simplifier
MIN_ERROR = 0.001  # metres: the smallest geometric error an inner tile gets
SURFACE_SAMPLES = 100_000


@dataclass
class LodNode:
    """A tile of the tree: bounds in the layer frame, its mesh (global feature ids), its error."""

    address: str
    low: np.ndarray
    high: np.ndarray
    mesh: TileMesh
    error: float
    content_error: float
    children: list[LodNode] = field(default_factory=list)

    def walk(self):
        yield self
        for child in self.children:
            yield from child.walk()


def submesh(mesh: TileMesh, triangles: np.ndarray) -> TileMesh:
    """The given triangles with only the vertices they use."""
    used, local = np.unique(mesh.indices[triangles].reshape(-1), return_inverse=True)
    return TileMesh(
        positions=mesh.positions[used],
        indices=local.reshape(-1, 3),
        feature_ids=mesh.feature_ids[used],
        colors=None if mesh.colors is None else mesh.colors[used],
    )


def concatenate(meshes: list[TileMesh]) -> TileMesh:
    offsets = np.cumsum([0] + [len(m.positions) for m in meshes[:-1]])
    colored = all(m.colors is not None for m in meshes)
    return TileMesh(
        positions=np.concatenate([m.positions for m in meshes]),
        indices=np.concatenate([m.indices + o for m, o in zip(meshes, offsets, strict=True)]),
        feature_ids=np.concatenate([m.feature_ids for m in meshes]),
        colors=np.concatenate([m.colors for m in meshes]) if colored else None,
    )


def weld(mesh: TileMesh) -> TileMesh:
    """Merge vertices of one feature and colour that share a position, so faces connect."""
    grid = np.round(mesh.positions / WELD_PRECISION).astype(np.int64)
    parts = [grid, mesh.feature_ids.astype(np.int64)[:, None]]
    if mesh.colors is not None:
        parts.append(mesh.colors.astype(np.int64))
    _, first, inverse = np.unique(np.concatenate(parts, axis=1), axis=0, return_index=True, return_inverse=True)
    indices = inverse.reshape(-1)[mesh.indices]
    keep = (indices[:, 0] != indices[:, 1]) & (indices[:, 1] != indices[:, 2]) & (indices[:, 0] != indices[:, 2])
    return TileMesh(
        positions=mesh.positions[first],
        indices=indices[keep],
        feature_ids=mesh.feature_ids[first],
        colors=None if mesh.colors is None else mesh.colors[first],
    )


def feature_sizes(mesh: TileMesh) -> dict[int, float]:
    """Bounding-box diagonal of each feature: the error of leaving it out."""
    order = np.argsort(mesh.feature_ids, kind="stable")
    ids = mesh.feature_ids[order]
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    low = np.minimum.reduceat(mesh.positions[order], starts, axis=0)
    high = np.maximum.reduceat(mesh.positions[order], starts, axis=0)
    return dict(zip(ids[starts].tolist(), np.linalg.norm(high - low, axis=1).tolist(), strict=True))


def simplify(mesh: TileMesh, target_triangles: int) -> tuple[TileMesh, float]:
    """A coarser mesh of about `target_triangles` and the real error (metres) of the reduction."""
    if mesh.triangle_count <= target_triangles:
        return mesh, 0.0
    welded = weld(mesh)
    if welded.triangle_count == 0:
        return welded, float(np.linalg.norm(np.ptp(mesh.positions, axis=0)))
    extent = float(np.linalg.norm(np.ptp(welded.positions, axis=0))) or 1.0
    origin = welded.positions.min(axis=0)
    positions = (welded.positions - origin).astype(np.float32)
    indices = welded.indices.reshape(-1).astype(np.uint32)
    destination = np.zeros_like(indices)
    result_error = np.zeros(1, dtype=np.float32)
    options = meshoptimizer.SIMPLIFY_ERROR_ABSOLUTE | meshoptimizer.SIMPLIFY_PRUNE
    count = meshoptimizer.simplify(
        destination,
        indices,
        positions,
        target_index_count=target_triangles * 3,
        target_error=extent,
        options=options,
        result_error=result_error,
    )
    error = float(result_error[0])
    if count > target_triangles * 3 * 2:  # topology held it back: cluster vertices instead
        sloppy = np.zeros_like(indices)
        count = meshoptimizer.simplify_sloppy(
            sloppy,
            indices,
            positions,
            target_index_count=target_triangles * 3,
            target_error=extent,
            result_error=result_error,
        )
        destination = sloppy
        error = float(result_error[0]) * meshoptimizer.simplify_scale(positions)  # sloppy's error is relative
    coarse = submesh(
        TileMesh(welded.positions, destination[:count].reshape(-1, 3), welded.feature_ids, welded.colors),
        np.arange(count // 3),
    )
    sizes = feature_sizes(welded)
    kept = set(np.unique(coarse.feature_ids).tolist()) if coarse.triangle_count else set()
    dropped = [size for fid, size in sizes.items() if fid not in kept]
    if coarse.triangle_count:
        still_drawn = np.isin(welded.feature_ids, np.fromiter(kept, dtype=np.int64))
        error = max(error, surface_distance(coarse, welded.positions[still_drawn]))
    return coarse, max([error, *dropped])


def surface_distance(mesh: TileMesh, points: np.ndarray, samples: int = SURFACE_SAMPLES, worst: int = 64) -> float:
    """The largest distance from `points` to the surface of `mesh` (a one-sided Hausdorff distance).

    The simplifier's own error is a quadric estimate; this measures what the eye sees. Distances
    to dense surface samples bound every point's distance from above; the `worst` points are then
    measured exactly against the triangles near them, so the result is an upper bound that is
    tight where it matters.
    """
    a, b, c = (mesh.positions[mesh.indices[:, k]] for k in range(3))
    areas = np.linalg.norm(np.cross(b - a, c - a), axis=1) / 2.0
    if areas.sum() <= 0 or len(points) == 0:
        return 0.0
    rng = np.random.default_rng(0)
    chosen = rng.choice(len(areas), size=samples, p=areas / areas.sum())
    u, v = rng.random(samples), rng.random(samples)
    flip = u + v > 1
    u[flip], v[flip] = 1 - u[flip], 1 - v[flip]
    surface = a[chosen] + u[:, None] * (b - a)[chosen] + v[:, None] * (c - a)[chosen]
    bound, _ = cKDTree(np.concatenate([surface, mesh.positions])).query(points)
    order = np.argsort(bound)[::-1]
    top, rest = order[:worst], order[worst:]
    centroids = (a + b + c) / 3.0
    reach = float(np.max(np.linalg.norm(np.stack([a, b, c], axis=1) - centroids[:, None], axis=2)))
    near = cKDTree(centroids).query_ball_point(points[top], bound[top] + reach)
    owners = np.concatenate([np.full(len(n), i) for i, n in enumerate(near)]).astype(np.int64)
    triangles = np.concatenate([np.asarray(n, dtype=np.int64) for n in near])
    distances = point_triangle_distance(points[top][owners], a[triangles], b[triangles], c[triangles])
    exact = np.array(bound[top], dtype=float)
    np.minimum.at(exact, owners, distances)
    return max(float(exact.max()), float(bound[rest].max()) if len(rest) else 0.0)


def point_triangle_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Distance from each point to its triangle (rows paired), by the closest-point regions."""
    ab, ac, ap = b - a, c - a, p - a
    d1, d2 = np.einsum("ij,ij->i", ab, ap), np.einsum("ij,ij->i", ac, ap)
    bp = p - b
    d3, d4 = np.einsum("ij,ij->i", ab, bp), np.einsum("ij,ij->i", ac, bp)
    cp = p - c
    d5, d6 = np.einsum("ij,ij->i", ab, cp), np.einsum("ij,ij->i", ac, cp)
    va, vb, vc = d3 * d6 - d5 * d4, d5 * d2 - d1 * d6, d1 * d4 - d3 * d2
    with np.errstate(divide="ignore", invalid="ignore"):
        denominator = va + vb + vc
        v = np.where(denominator != 0, vb / denominator, 0.0)
        w = np.where(denominator != 0, vc / denominator, 0.0)
        closest = a + ab * v[:, None] + ac * w[:, None]  # inside the face
        t_ab = np.where(d1 - d3 != 0, d1 / (d1 - d3), 0.0)
        t_ac = np.where(d2 - d6 != 0, d2 / (d2 - d6), 0.0)
        t_bc = np.where((d4 - d3) + (d5 - d6) != 0, (d4 - d3) / ((d4 - d3) + (d5 - d6)), 0.0)
    regions = [
        (va <= 0) & (d4 - d3 >= 0) & (d5 - d6 >= 0),
        (vb <= 0) & (d2 >= 0) & (d6 <= 0),
        (vc <= 0) & (d1 >= 0) & (d3 <= 0),
        (d6 >= 0) & (d5 <= d6),
        (d3 >= 0) & (d4 <= d3),
        (d1 <= 0) & (d2 <= 0),
    ]
    points = [b + (c - b) * t_bc[:, None], a + ac * t_ac[:, None], a + ab * t_ab[:, None], c, b, a]
    for mask, point in zip(regions, points, strict=True):  # later regions take precedence, as in Ericson
        closest = np.where(mask[:, None], point, closest)
    return np.linalg.norm(p - closest, axis=1)


def _split_axes(low: np.ndarray, high: np.ndarray) -> list[int]:
    extent = high - low
    return [axis for axis in range(3) if extent[axis] >= 0.5 * extent.max() and extent[axis] > 0]


def build_lod_tree(mesh: TileMesh, *, leaf_triangles: int = 20_000, max_depth: int = 12) -> LodNode:
    """The tile tree of a layer's mesh (features whole, adaptive octree, simplified inner tiles)."""
    if mesh.triangle_count == 0:
        raise ValueError("nothing to tile: the mesh has no triangles")
    triangle_feature = mesh.feature_ids[mesh.indices[:, 0]]
    order = np.argsort(triangle_feature, kind="stable")
    sorted_features = triangle_feature[order]
    features, starts, counts = np.unique(sorted_features, return_index=True, return_counts=True)
    corner_points = mesh.positions[mesh.indices[order].reshape(-1)].reshape(-1, 3, 3)
    low = np.minimum.reduceat(corner_points.min(axis=1), starts, axis=0)
    high = np.maximum.reduceat(corner_points.max(axis=1), starts, axis=0)

    def triangles_of(selection: np.ndarray) -> np.ndarray:
        return np.concatenate([order[starts[i] : starts[i] + counts[i]] for i in selection])

    def node(selection: np.ndarray, address: str, depth: int) -> LodNode:
        box_low, box_high = low[selection].min(axis=0), high[selection].max(axis=0)
        total = int(counts[selection].sum())
        groups: list[np.ndarray] = []
        if total > leaf_triangles and len(selection) > 1 and depth < max_depth:
            groups = _partition(selection, (low[selection] + high[selection]) / 2.0, box_low, box_high)
        if len(groups) <= 1:
            leaf = submesh(mesh, triangles_of(selection))
            return LodNode(address, box_low, box_high, leaf, 0.0, 0.0)
        children = [node(group, f"{address}_{i}", depth + 1) for i, group in enumerate(groups)]
        return _inner(address, box_low, box_high, children, leaf_triangles)

    root = node(np.arange(len(features)), "0", 0)
    if not root.children and root.mesh.triangle_count > leaf_triangles // 2:
        # one tile holds everything: still give the client a coarse first level
        root = _inner(
            "0", root.low, root.high, [LodNode("0_0", root.low, root.high, root.mesh, 0.0, 0.0)], leaf_triangles // 4
        )
    return root


def _partition(selection: np.ndarray, centres: np.ndarray, low: np.ndarray, high: np.ndarray) -> list[np.ndarray]:
    """Octree (or quadtree) cells of the node's box; a median split when all centres share a cell."""
    middle = (low + high) / 2.0
    code = np.zeros(len(selection), dtype=np.int64)
    for bit, axis in enumerate(_split_axes(low, high)):
        code |= (centres[:, axis] > middle[axis]).astype(np.int64) << bit
    groups = [selection[code == c] for c in np.unique(code)]
    if len(groups) > 1:
        return groups
    axis = int(np.argmax(high - low))
    ranks = np.argsort(centres[:, axis], kind="stable")
    half = len(selection) // 2
    return [selection[ranks[:half]], selection[ranks[half:]]] if half else [selection]


def _inner(address: str, low: np.ndarray, high: np.ndarray, children: list[LodNode], target: int) -> LodNode:
    merged = concatenate([child.mesh for child in children])
    coarse, measured = simplify(merged, min(target, max(merged.triangle_count // 4, 1)))
    content_error = measured + max(child.content_error for child in children)
    error = max(content_error, 2.0 * max(child.error for child in children), MIN_ERROR)
    return LodNode(address, low, high, coarse, error, content_error, children)
