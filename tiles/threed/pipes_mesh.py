"""Straight swept solids (pipe runs, shafts, symbols) as triangles, all of one kind at once.

Everything a pipe network draws is a prism swept along a straight segment: a pipe is one per
segment of its centreline, a manhole a vertical one from the invert to the ground, a valve a
short box. A `Sweeps` holds many of them as arrays, and `sweep_mesh` turns them into one
`TileMesh` with numpy broadcasting (one pass per section kind and side count, no loop per
pipe). Circular sections are regular n-gons inscribed in the outer circle with smooth normals;
box sections are width × height rectangles with flat sides. The section's width runs
horizontally across the segment and its height in the vertical plane through it, so a box
culvert stands upright and a vertical shaft's section lies flat.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from tiles.threed.gltf import TileMesh

UP = np.array([0.0, 0.0, 1.0])
EAST = np.array([1.0, 0.0, 0.0])


@dataclass(eq=False)
class Sweeps:
    """Straight solids: segment ends `a`, `b` (n, 3), half width and height (m), shape, owner, colour."""

    a: np.ndarray
    b: np.ndarray
    half_width: np.ndarray
    half_height: np.ndarray
    box: np.ndarray
    feature: np.ndarray
    colour: np.ndarray
    caps: np.ndarray

    def __len__(self) -> int:
        return len(self.feature)

    def take(self, index: np.ndarray) -> Sweeps:
        return Sweeps(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    @classmethod
    def concat(cls, parts: list[Sweeps]) -> Sweeps:
        return cls(**{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(cls)})

    @classmethod
    def make(cls, a, b, half_width, half_height, box, feature, colour, caps=True) -> Sweeps:
        """Arrays from anything array-like; scalars are repeated for every segment."""
        a = np.asarray(a, dtype=np.float64).reshape(-1, 3)
        n = len(a)

        def column(value, dtype) -> np.ndarray:
            return np.broadcast_to(np.asarray(value, dtype=dtype), (n,)).copy()

        return cls(
            a=a,
            b=np.asarray(b, dtype=np.float64).reshape(n, 3),
            half_width=column(half_width, np.float64),
            half_height=column(half_height, np.float64),
            box=column(box, bool),
            feature=column(feature, np.int64),
            colour=np.broadcast_to(np.asarray(colour, dtype=np.uint8), (n, 4)).copy(),
            caps=column(caps, bool),
        )


def circle_sides(outer: np.ndarray, coarse: bool = False) -> np.ndarray:
    """Sides of a circular section by outer diameter (m): more for large pipes, fewer far away."""
    outer = np.asarray(outer, dtype=float)
    if coarse:
        return np.where(outer >= 1.0, 8, np.where(outer >= 0.3, 6, 4))
    return np.where(outer >= 1.0, 16, np.where(outer >= 0.3, 12, 8))


def polygon_error(radius: np.ndarray, sides: np.ndarray) -> np.ndarray:
    """Largest distance between a circle and the regular n-gon inscribed in it (mid-edge sag)."""
    return np.asarray(radius, dtype=float) * (1.0 - np.cos(np.pi / np.asarray(sides, dtype=float)))


def _profile(box: bool, sides: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Unit ring offsets (m, 2), their normals (m, 2), side quads as ring-index pairs, cap corners."""
    if box:
        corners = np.array([[1, -1], [1, 1], [1, 1], [-1, 1], [-1, 1], [-1, -1], [-1, -1], [1, -1]], dtype=float)
        normals = np.repeat(np.array([[1, 0], [0, 1], [-1, 0], [0, -1]], dtype=float), 2, axis=0)
        edges = np.array([[0, 1], [2, 3], [4, 5], [6, 7]])
        return corners, normals, edges, np.array([0, 1, 3, 5])
    angle = 2.0 * np.pi * np.arange(sides) / sides
    ring = np.column_stack([np.cos(angle), np.sin(angle)])
    edges = np.column_stack([np.arange(sides), (np.arange(sides) + 1) % sides])
    return ring, ring.copy(), edges, np.arange(sides)


def frames(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit tangent, horizontal across (u) and upward across (v) for each segment."""
    t = b - a
    t = t / np.linalg.norm(t, axis=1, keepdims=True)
    u = np.cross(t, UP)
    length = np.linalg.norm(u, axis=1, keepdims=True)
    vertical = length[:, 0] < 1e-9
    u = np.where(vertical[:, None], EAST, u / np.where(length > 0, length, 1.0))
    v = np.cross(u, t)
    return t, u, v


def _group_mesh(s: Sweeps, box: bool, sides: int, caps: bool) -> TileMesh:
    offsets, ring_normals, edges, corners = _profile(box, sides)
    m, c, n = len(offsets), len(corners), len(s)
    t, u, v = frames(s.a, s.b)
    across_u = offsets[None, :, 0:1] * s.half_width[:, None, None] * u[:, None, :]
    across_v = offsets[None, :, 1:2] * s.half_height[:, None, None] * v[:, None, :]
    ring = across_u + across_v  # (n, m, 3)
    normal = ring_normals[None, :, 0:1] * u[:, None, :] + ring_normals[None, :, 1:2] * v[:, None, :]
    parts_p = [s.a[:, None, :] + ring, s.b[:, None, :] + ring]
    parts_n = [normal, normal]
    quads_a, quads_b = edges[:, 0], edges[:, 1]
    tris = [
        np.stack([quads_a, m + quads_b, quads_b], axis=1),  # wound outwards: (u, v, t) is left-handed
        np.stack([quads_a, m + quads_a, m + quads_b], axis=1),
    ]
    per = 2 * m
    if caps:
        fan = np.stack([np.zeros(c - 2, int), np.arange(1, c - 1), np.arange(2, c)], axis=1)
        parts_p += [s.a[:, None, :] + ring[:, corners], s.b[:, None, :] + ring[:, corners]]
        parts_n += [np.repeat(-t[:, None, :], c, axis=1), np.repeat(t[:, None, :], c, axis=1)]
        tris += [per + fan, per + c + fan[:, ::-1]]
        per += 2 * c
    positions = np.concatenate(parts_p, axis=1).reshape(-1, 3)
    normals = np.concatenate(parts_n, axis=1).reshape(-1, 3)
    local = np.concatenate(tris)
    indices = (np.arange(n)[:, None, None] * per + local[None, :, :]).reshape(-1, 3)
    return TileMesh(
        positions=positions,
        indices=indices,
        feature_ids=np.repeat(s.feature, per),
        colors=np.repeat(s.colour, per, axis=0),
        normals=normals,
    )


def sweep_mesh(s: Sweeps, sides: np.ndarray, *, caps: bool = True) -> TileMesh:
    """The solids' triangles; `sides` per segment (ignored for boxes); end caps where `caps` and s.caps."""
    sides = np.where(s.box, 4, np.asarray(sides, dtype=np.int64))
    with_caps = s.caps & caps
    meshes = []
    for box, count, capped in sorted(set(zip(s.box.tolist(), sides.tolist(), with_caps.tolist(), strict=True))):
        chosen = np.flatnonzero((s.box == box) & (sides == count) & (with_caps == capped))
        meshes.append(_group_mesh(s.take(chosen), box, count, capped))
    return _concatenate(meshes)


def triangle_count(s: Sweeps, sides: np.ndarray, *, caps: bool = True) -> np.ndarray:
    """Triangles `sweep_mesh` makes for each segment, without making them."""
    sides = np.where(s.box, 4, np.asarray(sides, dtype=np.int64))
    capped = s.caps & caps
    return 2 * sides + np.where(capped, 2 * (sides - 2), 0)


def _concatenate(meshes: list[TileMesh]) -> TileMesh:
    offsets = np.cumsum([0] + [len(m.positions) for m in meshes[:-1]])
    return TileMesh(
        positions=np.concatenate([m.positions for m in meshes]),
        indices=np.concatenate([m.indices.astype(np.int64) + o for m, o in zip(meshes, offsets, strict=True)]),
        feature_ids=np.concatenate([m.feature_ids for m in meshes]),
        colors=np.concatenate([m.colors for m in meshes]),
        normals=np.concatenate([m.normals for m in meshes]),
    )
