"""Ground heights with the low-lying road sections, and the DEM GeoTIFF.

A low road section is a stretch of road pressed 0.4–0.8 m below the natural road grade, across
the carriageway and tapering out at its ends and just past the kerbs: a closed hollow that fills
with rain, which is what the ponding sensors, the flood model and its tests rely on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import shapely
from rasterio.transform import Affine
from rasterio.windows import Window

from .frame import CRS, Frame, rng
from .layout import Layout
from .relief import Relief

DEM_RES = 2.0
NODATA = -9999.0
KERB_TAPER = 4.0


@dataclass(frozen=True)
class LowSection:
    """A deliberately depressed stretch of one road segment."""

    id: str
    road_id: str
    road_name: str
    p0: tuple[float, float]
    p1: tuple[float, float]
    half_width: float
    depth: float
    z0: float
    z1: float

    @property
    def length(self) -> float:
        return float(np.hypot(self.p1[0] - self.p0[0], self.p1[1] - self.p0[1]))

    @property
    def midpoint(self) -> tuple[float, float]:
        return ((self.p0[0] + self.p1[0]) / 2.0, (self.p0[1] + self.p1[1]) / 2.0)

    def line(self) -> shapely.LineString:
        return shapely.LineString([self.p0, self.p1])

    def area(self) -> shapely.Polygon:
        return self.line().buffer(self.half_width + KERB_TAPER, cap_style="flat")

    def lowering(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """How far the ground is pressed down: the full depth mid-way along the carriageway,
        fading to nothing at the section ends and just beyond the kerbs."""
        p0 = np.asarray(self.p0)
        d = np.asarray(self.p1) - p0
        length = float(np.hypot(*d))
        e = d / length
        rx, ry = x - p0[0], y - p0[1]
        s = (rx * e[0] + ry * e[1]) / length
        n = np.abs(-rx * e[1] + ry * e[0])
        bowl = np.where((s > 0.0) & (s < 1.0), 1.0 - (2.0 * s - 1.0) ** 4, 0.0)
        w = np.clip((self.half_width + KERB_TAPER - n) / KERB_TAPER, 0.0, 1.0)
        return self.depth * bowl * w


class Terrain:
    """Natural relief plus the road hollows; `elevation` is what the DEM holds."""

    def __init__(self, relief: Relief, sections: list[LowSection]) -> None:
        self.relief = relief
        self.sections = sections
        self._areas = np.array([s.area() for s in sections], dtype=object)
        self._tree = shapely.STRtree(self._areas) if sections else None

    def _apply(self, z: np.ndarray, x: np.ndarray, y: np.ndarray, k: int) -> np.ndarray:
        return z - self.sections[k].lowering(x, y)

    def elevation(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Ground height (1985 datum metres) at any points, vectorised."""
        x = np.asarray(x, dtype=float)
        y = np.asarray(y, dtype=float)
        shape = np.broadcast_shapes(x.shape, y.shape)
        x, y = np.broadcast_to(x, shape).ravel(), np.broadcast_to(y, shape).ravel()
        z = self.relief.natural(x, y)
        if self._tree is not None and len(x):
            pi, si = self._tree.query(shapely.points(x, y), predicate="intersects")
            for k in np.unique(si):
                sel = pi[si == k]
                z[sel] = self._apply(z[sel], x[sel], y[sel], int(k))
        return z.reshape(shape)

    def grid(self, x0: float, y_top: float, res: float, width: int, height: int) -> np.ndarray:
        """Heights at cell centres of a north-up grid (rows from the top)."""
        xs = x0 + (np.arange(width) + 0.5) * res
        ys = y_top - (np.arange(height) + 0.5) * res
        z = self.relief.natural(xs[None, :], ys[:, None])
        for k, area in enumerate(self._areas):
            bx0, by0, bx1, by1 = area.bounds
            c0, c1 = np.searchsorted(xs, [bx0, bx1])
            r0, r1 = np.searchsorted(-ys, [-by1, -by0])
            if c1 <= c0 or r1 <= r0:
                continue
            gx, gy = np.meshgrid(xs[c0:c1], ys[r0:r1])
            z[r0:r1, c0:c1] = self._apply(z[r0:r1, c0:c1], gx, gy, k)
        return z


def pick_low_sections(layout: Layout, relief: Relief) -> list[LowSection]:
    """Choose road stretches on nearly level, ordinary segments, some of them in the 1:500 core."""
    g = rng(layout.frame.seed, "low_sections")
    roads = layout.roads
    xy = roads.node_xy
    length = roads.length
    deg = roads.degree()
    z = relief.natural(xy[:, 0], xy[:, 1])
    slope = np.abs(z[roads.v] - z[roads.u]) / np.maximum(length, 1.0)
    ok = (~roads.bridge) & (length >= 100.0) & (slope < 0.002) & (deg[roads.u] > 1) & (deg[roads.v] > 1)
    cand = np.nonzero(ok)[0]
    mid = (xy[roads.u] + xy[roads.v]) / 2.0
    c = layout.frame.core_bbox
    in_core = (mid[:, 0] > c[0]) & (mid[:, 0] < c[2]) & (mid[:, 1] > c[1]) & (mid[:, 1] < c[3])
    area_km2 = (layout.frame.size / 1000.0) ** 2
    n = max(3, int(round(1.5 * area_km2)))
    core_cand = cand[in_core[cand]]
    n_core = min(len(core_cand), max(2, n // 3))
    first = g.choice(core_cand, n_core, replace=False) if n_core else np.array([], int)
    rest = np.setdiff1d(cand, first)
    second = g.choice(rest, min(len(rest), n - n_core), replace=False)
    chosen = np.sort(np.concatenate([first, second]).astype(int))
    sections = []
    for i, s in enumerate(chosen):
        a, b = xy[roads.u[s]], xy[roads.v[s]]
        seg_len = float(length[s])
        sec_len = float(min(g.uniform(60.0, 150.0), seg_len - 36.0))
        start = float(g.uniform(18.0, seg_len - 18.0 - sec_len))
        e = (b - a) / seg_len
        p0 = a + e * start
        p1 = a + e * (start + sec_len)
        z0, z1 = relief.natural(np.array([p0[0], p1[0]]), np.array([p0[1], p1[1]]))
        sections.append(
            LowSection(
                id=f"LRS{i + 1:03d}",
                road_id=str(roads.road_id[s]),
                road_name=str(roads.name[s]),
                p0=(round(float(p0[0]), 2), round(float(p0[1]), 2)),
                p1=(round(float(p1[0]), 2), round(float(p1[1]), 2)),
                half_width=float(roads.width[s]) / 2.0,
                depth=round(float(g.uniform(0.4, 0.8)), 2),
                z0=float(z0),
                z1=float(z1),
            )
        )
    return sections


def write_dem(path: Path, frame: Frame, terrain: Terrain, strip_rows: int = 512) -> dict:
    """2 m float32 GeoTIFF of the district, written in strips so a 20 km district fits in memory."""
    width = height = int(round(frame.size / DEM_RES))
    transform = Affine(DEM_RES, 0.0, frame.x0, 0.0, -DEM_RES, frame.y1)
    profile = {
        "driver": "GTiff",
        "dtype": "float32",
        "count": 1,
        "width": width,
        "height": height,
        "crs": CRS,
        "transform": transform,
        "nodata": NODATA,
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "compress": "deflate",
        "predictor": 3,
    }
    lo, hi = np.inf, -np.inf
    with rasterio.open(path, "w", **profile) as dst:
        dst.update_tags(AREA_OR_POINT="Area", VERTICAL_DATUM="1985 National Height Datum", UNITS="metre")
        for r0 in range(0, height, strip_rows):
            rows = min(strip_rows, height - r0)
            z = terrain.grid(frame.x0, frame.y1 - r0 * DEM_RES, DEM_RES, width, rows).astype("float32")
            lo, hi = min(lo, float(z.min())), max(hi, float(z.max()))
            dst.write(z, 1, window=Window(0, r0, width, rows))
    return {"width": width, "height": height, "resolution": DEM_RES, "min": round(lo, 2), "max": round(hi, 2)}
