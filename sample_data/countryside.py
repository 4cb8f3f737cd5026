"""The 1:10000 ring of countryside around the district: fields, woods, villages, ponds, roads.

Cells of a jittered grid become land parcels; the river runs on through them; the district's
main streets continue as country roads and an expressway rings the town.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely

from .frame import Frame, rng
from .layout import Layout
from .relief import Relief, polygon_array

CELL = 320.0
LANDUSE = ("farmland", "paddy", "forest", "village", "orchard", "pond")
WEIGHTS = np.array([0.5, 0.2, 0.12, 0.09, 0.05, 0.04])


@dataclass
class Countryside:
    landuse: np.ndarray  # class per polygon
    landuse_geom: np.ndarray
    villages: np.ndarray  # built-up block polygons
    village_name: np.ndarray
    village_floors: np.ndarray
    roads: np.ndarray  # lines
    road_cls: np.ndarray
    road_name: np.ndarray
    river: shapely.Polygon


def build_countryside(frame: Frame, relief: Relief, layout: Layout) -> Countryside:
    """Countryside content of the ring between the district and the 1:10000 extent."""
    g = rng(frame.seed, "countryside")
    rx0, ry0, rx1, ry1 = frame.ring_bbox
    nx = int(np.ceil((rx1 - rx0) / CELL))
    ny = int(np.ceil((ry1 - ry0) / CELL))
    xs = rx0 + np.arange(nx + 1) * (rx1 - rx0) / nx
    ys = ry0 + np.arange(ny + 1) * (ry1 - ry0) / ny
    xs[1:-1] += g.uniform(-60, 60, nx - 1)
    ys[1:-1] += g.uniform(-60, 60, ny - 1)
    i, j = np.meshgrid(np.arange(nx), np.arange(ny), indexing="ij")
    i, j = i.ravel(), j.ravel()
    quad = np.stack(
        [
            np.column_stack([xs[i], ys[j]]),
            np.column_stack([xs[i + 1], ys[j]]),
            np.column_stack([xs[i + 1], ys[j + 1]]),
            np.column_stack([xs[i], ys[j + 1]]),
        ],
        axis=1,
    )
    cells = polygon_array(quad)
    town = shapely.box(*frame.bbox)
    river = relief.river.channel(rx0, rx1)
    corridor = relief.river.corridor(rx0, rx1)
    mask = shapely.difference(shapely.box(rx0, ry0, rx1, ry1), shapely.union(town, corridor))
    touching = shapely.intersects(cells, town) | shapely.intersects(cells, corridor)
    cells = cells.copy()
    cells[touching] = shapely.intersection(cells[touching], mask)
    parts, idx = shapely.get_parts(cells, return_index=True)
    ok = shapely.area(parts) > 3000.0
    parts, idx = parts[ok], idx[ok]
    c = shapely.get_coordinates(shapely.centroid(parts))
    z = relief.natural(c[:, 0], c[:, 1])
    w = np.tile(WEIGHTS, (len(parts), 1))
    w[:, 2] *= 1.0 + np.clip((z - 18.0) / 4.0, 0.0, 3.0)  # woods on the hills
    w[:, 1] *= np.where(z < 14.0, 2.5, 0.6)  # paddies in the valley
    cum = np.cumsum(w / w.sum(axis=1, keepdims=True), axis=1)
    k = np.minimum((cum < g.random(len(parts))[:, None]).sum(axis=1), len(LANDUSE) - 1)
    use = np.array(LANDUSE, dtype=object)[k]

    vil = np.nonzero(use == "village")[0]
    vil_geom = shapely.buffer(parts[vil], -40.0, join_style="mitre")
    vil_ok = ~shapely.is_empty(vil_geom) & (shapely.area(vil_geom) > 2000.0)
    from .names import BASES

    vnames = np.array([f"{BASES[(n * 7 + 3) % len(BASES)]} Village" for n in range(int(vil_ok.sum()))], dtype=object)
    floors = g.integers(2, 4, int(vil_ok.sum()))

    # country roads: main streets carried on to the edge of the map, plus a ring expressway
    lines, cls, names = [], [], []
    for fam, orient in ((layout.vlines, "v"), (layout.hlines, "h")):
        for a, b, cl, nm in zip(fam.a, fam.b, fam.cls, fam.name, strict=True):
            if cl not in ("primary", "secondary"):
                continue
            cx, cy = frame.center
            if orient == "v":
                y = np.array([ry0, frame.y0, frame.y1, ry1])
                x = a + b * (np.clip(y, frame.y0, frame.y1) - cy)
            else:
                x = np.array([rx0, frame.x0, frame.x1, rx1])
                y = a + b * (np.clip(x, frame.x0, frame.x1) - cx)
            pts = np.column_stack([x, y])
            lines += [shapely.LineString(pts[:2]), shapely.LineString(pts[2:])]
            cls += [cl, cl]
            names += [nm, nm]
    d = 500.0
    ring = shapely.LineString(
        [
            (frame.x0 - d, frame.y0 - d),
            (frame.x1 + d, frame.y0 - d),
            (frame.x1 + d, frame.y1 + d),
            (frame.x0 - d, frame.y1 + d),
            (frame.x0 - d, frame.y0 - d),
        ]
    )
    lines.append(ring)
    cls.append("expressway")
    names.append("Ring Expressway")
    return Countryside(
        landuse=use,
        landuse_geom=parts,
        villages=vil_geom[vil_ok],
        village_name=vnames,
        village_floors=floors,
        roads=np.array(lines, dtype=object),
        road_cls=np.array(cls, dtype=object),
        road_name=np.array(names, dtype=object),
        river=river,
    )
