"""A tile's heightfield as a right-triangulated irregular network (RTIN) with bounded error.

The grid of (2^k + 1)^2 samples is split recursively into right triangles (the "Martini"
scheme of Evans, Kirkpatrick & Townsend 2001): a triangle is split while any sample inside it
lies farther than the allowed error from its plane, with errors shared between the two
triangles of a hypotenuse and propagated up the tree, so the mesh has no T-junctions inside
the tile. The error is the true one (every sample of the triangle is checked), so the bound
holds for the finished mesh, not only for each level's midpoints.

Between tiles: both tiles on a shared edge compute their own mesh and their neighbour's (from
the same samples), and each inserts the other's edge vertices into the triangles along that
edge (a fan from the opposite corner). Both end with the union of the two edge vertex sets, so
no crack opens. A fan moves the surface inside its triangle by at most that triangle's own
error, so triangles along the tile's edges are held to half the allowed error.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numba
import numpy as np


@lru_cache(maxsize=4)
def triangle_coords(size: int) -> np.ndarray:
    """(ax, ay, bx, by) of every triangle of the implicit binary tree, parents before children."""
    return _triangle_coords(size - 1)


@numba.njit(cache=True)
def _triangle_coords(tile: int) -> np.ndarray:
    count = tile * tile * 2 - 2
    coords = np.empty((count, 4), dtype=np.int32)
    for i in range(count):
        node = i + 2
        ax = ay = bx = by = cx = cy = 0
        if node & 1:
            bx = by = cx = tile
        else:
            ax = ay = cy = tile
        node >>= 1
        while node > 1:
            mx = (ax + bx) >> 1
            my = (ay + by) >> 1
            if node & 1:
                bx, by = ax, ay
                ax, ay = cx, cy
            else:
                ax, ay = bx, by
                bx, by = cx, cy
            cx, cy = mx, my
            node >>= 1
        coords[i, 0], coords[i, 1], coords[i, 2], coords[i, 3] = ax, ay, bx, by
    return coords


@numba.njit(cache=True)
def _span(a: int, rest: int, lo: int, hi: int) -> tuple[int, int]:
    """Narrow the column range [lo, hi] to where a * x + rest >= 0, for a in (-1, 0, 1)."""
    if a > 0:
        return max(lo, -rest), hi
    if a < 0:
        return lo, min(hi, rest)
    return (lo, hi) if rest >= 0 else (lo, lo - 1)


@numba.njit(cache=True)
def _triangle_error(heights: np.ndarray, ax: int, ay: int, bx: int, by: int, cx: int, cy: int) -> float:
    """The largest vertical distance from the triangle's plane of the samples inside it.

    Rows are scanned over the columns inside the triangle's three edges; RTIN edges run along
    an axis or a diagonal, so each edge function divided by its leg length has coefficients -1,
    0 or 1 and a row's column range needs no division.
    """
    det = (bx - ax) * (cy - ay) - (cx - ax) * (by - ay)
    s = 1 if det > 0 else -1
    g1 = max(abs(cx - ax), abs(cy - ay))
    g2 = max(abs(bx - ax), abs(by - ay))
    g3 = max(abs(cx - bx), abs(cy - by))
    a1, b1 = (cy - ay) // g1 * s, -(cx - ax) // g1 * s
    c1 = -ax * a1 - ay * b1
    a2, b2 = -(by - ay) // g2 * s, (bx - ax) // g2 * s
    c2 = -ax * a2 - ay * b2
    a3, b3 = (by - cy) // g3 * s, -(bx - cx) // g3 * s
    c3 = -cx * a3 - cy * b3
    ha = heights[ay, ax]
    du, dv = heights[by, bx] - ha, heights[cy, cx] - ha
    px = (du * (cy - ay) - dv * (by - ay)) / det  # the plane: ha + px (x - ax) + py (y - ay)
    py = (dv * (bx - ax) - du * (cx - ax)) / det
    xlo, xhi = min(ax, bx, cx), max(ax, bx, cx)
    worst = 0.0
    for y in range(min(ay, by, cy), max(ay, by, cy) + 1):
        lo, hi = _span(a1, b1 * y + c1, xlo, xhi)
        lo, hi = _span(a2, b2 * y + c2, lo, hi)
        lo, hi = _span(a3, b3 * y + c3, lo, hi)
        base = ha + py * (y - ay) - px * ax
        for x in range(lo, hi + 1):
            error = abs(heights[y, x] - (base + px * x))
            if error > worst:
                worst = error
    return worst


@numba.njit(cache=True)
def _on_boundary(px: int, py: int, qx: int, qy: int, tile: int) -> bool:
    return (px == qx and (px == 0 or px == tile)) or (py == qy and (py == 0 or py == tile))


@numba.njit(cache=True)
def _errors(heights: np.ndarray, coords: np.ndarray, errors: np.ndarray) -> None:
    size = heights.shape[0]
    tile = size - 1
    parents = coords.shape[0] - tile * tile
    for i in range(coords.shape[0] - 1, -1, -1):
        ax, ay, bx, by = coords[i, 0], coords[i, 1], coords[i, 2], coords[i, 3]
        mx = (ax + bx) >> 1
        my = (ay + by) >> 1
        cx = mx + my - ay
        cy = my + ax - mx
        error = _triangle_error(heights, ax, ay, bx, by, cx, cy)
        if (
            _on_boundary(ax, ay, bx, by, tile)
            or _on_boundary(bx, by, cx, cy, tile)
            or _on_boundary(cx, cy, ax, ay, tile)
        ):
            error *= 2.0  # a fan may later add up to this triangle's own error again
        if error > errors[my, mx]:
            errors[my, mx] = error
        if i < parents:
            left = errors[(ay + cy) >> 1, (ax + cx) >> 1]
            right = errors[(by + cy) >> 1, (bx + cx) >> 1]
            if left > errors[my, mx]:
                errors[my, mx] = left
            if right > errors[my, mx]:
                errors[my, mx] = right


def propagated_errors(heights: np.ndarray) -> np.ndarray:
    """Per-sample split errors of the RTIN over `heights` (rows south→north, columns west→east):
    the mesh keeps a sample as a vertex exactly when its error exceeds the allowed one."""
    heights = np.ascontiguousarray(heights, dtype=np.float64)
    size = heights.shape[0]
    if heights.shape != (size, size) or (size - 1) & (size - 2):
        raise ValueError(f"an RTIN needs a square grid of 2^k + 1 samples, got {heights.shape}")
    errors = np.zeros_like(heights)
    _errors(heights, triangle_coords(size), errors)
    return errors


OPPOSITE = {"west": "east", "east": "west", "south": "north", "north": "south"}


@numba.njit(cache=True)
def _push(stack: np.ndarray, top: int, ax: int, ay: int, bx: int, by: int, cx: int, cy: int) -> int:
    stack[top, 0], stack[top, 1], stack[top, 2] = ax, ay, bx
    stack[top, 3], stack[top, 4], stack[top, 5] = by, cx, cy
    return top + 1


@numba.njit(cache=True)
def _vertex(index: np.ndarray, vertices: np.ndarray, count: int, px: int, py: int) -> int:
    if index[py, px] < 0:
        index[py, px] = count
        vertices[count, 0] = px
        vertices[count, 1] = py
    return index[py, px]


@numba.njit(cache=True)
def _extract(errors: np.ndarray, max_error: float) -> tuple[np.ndarray, np.ndarray]:
    size = errors.shape[0]
    tile = size - 1
    index = -np.ones((size, size), dtype=np.int32)
    vertices = np.empty((size * size, 2), dtype=np.int32)
    triangles = np.empty((2 * tile * tile, 3), dtype=np.int32)
    n_vertices = 0
    n_triangles = 0
    stack = np.empty((4 * size, 6), dtype=np.int32)
    top = _push(stack, 0, 0, 0, tile, tile, tile, 0)
    top = _push(stack, top, tile, tile, 0, 0, 0, tile)
    while top > 0:
        top -= 1
        ax, ay, bx, by, cx, cy = (
            stack[top, 0],
            stack[top, 1],
            stack[top, 2],
            stack[top, 3],
            stack[top, 4],
            stack[top, 5],
        )
        mx = (ax + bx) >> 1
        my = (ay + by) >> 1
        if abs(ax - cx) + abs(ay - cy) > 1 and errors[my, mx] > max_error:
            top = _push(stack, top, cx, cy, ax, ay, mx, my)
            top = _push(stack, top, bx, by, cx, cy, mx, my)
            continue
        if (bx - ax) * (cy - ay) - (by - ay) * (cx - ax) < 0:  # counter-clockwise seen from above
            bx, by, cx, cy = cx, cy, bx, by
        i = _vertex(index, vertices, n_vertices, ax, ay)
        n_vertices += i == n_vertices
        j = _vertex(index, vertices, n_vertices, bx, by)
        n_vertices += j == n_vertices
        k = _vertex(index, vertices, n_vertices, cx, cy)
        n_vertices += k == n_vertices
        triangles[n_triangles, 0], triangles[n_triangles, 1], triangles[n_triangles, 2] = i, j, k
        n_triangles += 1
    return vertices[:n_vertices].copy(), triangles[:n_triangles].copy()


@dataclass(frozen=True)
class GridMesh:
    """Vertices as (column, row) sample indices and counter-clockwise triangles (from above)."""

    vertices: np.ndarray  # (n, 2) int32: column (west→east), row (south→north)
    triangles: np.ndarray  # (m, 3) int32

    def edge_positions(self, edge: str, tile: int) -> np.ndarray:
        """Sorted positions along `edge` (row for west/east, column for south/north) of its vertices."""
        col, row = self.vertices[:, 0], self.vertices[:, 1]
        on, along = {
            "west": (col == 0, row),
            "east": (col == tile, row),
            "south": (row == 0, col),
            "north": (row == tile, col),
        }[edge]
        return np.sort(along[on])


def extract_mesh(errors: np.ndarray, max_error: float) -> GridMesh:
    """The RTIN mesh whose triangles all keep their samples within `max_error` (half of it along
    the tile's edges, see `propagated_errors`)."""
    vertices, triangles = _extract(np.ascontiguousarray(errors, dtype=np.float64), float(max_error))
    return GridMesh(vertices, triangles)


def _point(edge: str, position: int, tile: int) -> tuple[int, int]:
    return {"west": (0, position), "east": (tile, position), "south": (position, 0), "north": (position, tile)}[edge]


def _segment_edge(p: tuple[int, int], q: tuple[int, int], tile: int) -> tuple[str, int, int] | None:
    """The tile edge a segment lies on, with its two positions along that edge."""
    if p[0] == q[0] and p[0] in (0, tile):
        return ("west" if p[0] == 0 else "east"), p[1], q[1]
    if p[1] == q[1] and p[1] in (0, tile):
        return ("south" if p[1] == 0 else "north"), p[0], q[0]
    return None


def stitch(mesh: GridMesh, extra: dict[str, np.ndarray], tile: int) -> GridMesh:
    """`mesh` with the edge positions in `extra` (per edge name) added as vertices: each triangle
    holding such a position on its edge becomes a fan from its opposite corner, so the
    triangulation stays conforming and counter-clockwise."""
    wanted = {edge: set(np.asarray(values).tolist()) for edge, values in extra.items()}
    vertices = [tuple(v) for v in mesh.vertices.tolist()]
    index = {v: i for i, v in enumerate(vertices)}
    for edge, positions in wanted.items():
        for position in sorted(positions):
            point = _point(edge, position, tile)
            if point not in index:
                index[point] = len(vertices)
                vertices.append(point)
    if len(vertices) == len(mesh.vertices):
        return mesh

    def between(p: tuple[int, int], q: tuple[int, int]) -> list[tuple[int, int]]:
        found = _segment_edge(p, q, tile)
        if found is None:
            return []
        edge, a, b = found
        inner = [t for t in wanted.get(edge, ()) if min(a, b) < t < max(a, b)]
        return [_point(edge, t, tile) for t in sorted(inner, reverse=a > b)]

    def split(corners: tuple[tuple[int, int], ...], out: list[tuple[int, int, int]]) -> None:
        for k in range(3):
            p, q, opposite = corners[k], corners[(k + 1) % 3], corners[(k + 2) % 3]
            chain = between(p, q)
            if chain:
                points = [p, *chain, q]
                for s, t in zip(points[:-1], points[1:], strict=True):
                    split((s, t, opposite), out)
                return
        out.append(tuple(index[c] for c in corners))

    on_edge = ((mesh.vertices == 0) | (mesh.vertices == tile)).any(axis=1)
    touching = on_edge[mesh.triangles].sum(axis=1) >= 2
    triangles: list[tuple[int, int, int]] = []
    for triangle in mesh.triangles[touching].tolist():
        split(tuple(vertices[i] for i in triangle), triangles)
    kept = mesh.triangles[~touching]
    added = np.array(triangles, dtype=np.int32).reshape(-1, 3)
    return GridMesh(np.array(vertices, dtype=np.int32), np.concatenate([kept, added]))
