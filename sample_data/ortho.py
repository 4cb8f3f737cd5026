"""A synthetic true-colour orthophoto painted from the vector features.

Polygons are burnt with rasterio.features.rasterize in painter's order (land use, green, water,
pavements, carriageways, shadows, roofs); colour comes from a lookup table and texture from a
hash of the absolute pixel position, so any window at any resolution is seamless and the same
for the same seed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
import shapely
from rasterio.enums import Resampling
from rasterio.features import rasterize
from rasterio.transform import Affine
from rasterio.windows import Window

from .features import DetailLayers
from .frame import CRS, Frame

ORTHO_RES = 1.0

GROUND = {
    "residential": (150, 152, 128),
    "commercial": (178, 174, 166),
    "office": (172, 174, 176),
    "industrial": (160, 156, 146),
    "school": (168, 156, 136),
    "hospital": (184, 184, 178),
    "park": (84, 122, 62),
    "utility": (158, 158, 154),
    "vacant": (162, 144, 112),
    "construction": (176, 154, 118),
}
GREEN = {"riverside_park": (92, 132, 70), "park": (78, 118, 58), "sports_ground": (104, 150, 82)}
ROOFS = {
    "residential": [(192, 186, 176), (158, 92, 72), (132, 132, 142), (204, 202, 196), (176, 160, 140)],
    "commercial": [(142, 150, 160), (196, 196, 192), (120, 128, 136)],
    "office": [(118, 138, 160), (150, 160, 170), (96, 112, 130)],
    "industrial": [(112, 140, 172), (150, 160, 170), (170, 170, 166)],
    "school": [(198, 122, 92), (206, 196, 180)],
    "hospital": [(214, 214, 208), (190, 196, 200)],
    "utility": [(150, 150, 150), (120, 150, 150)],
    "ancillary": [(124, 112, 100), (150, 140, 128)],
}
BACKGROUND = (146, 138, 118)
WATER = (52, 84, 92)
PAVEMENT = (176, 172, 166)
ASPHALT = (74, 74, 78)
SHADOW_FACTOR = 0.55
SHADOW_OFFSET = np.array([-0.22, 0.30])  # per metre of height: sun in the south-east


def _hash_noise(ix: np.ndarray, iy: np.ndarray, seed: int) -> np.ndarray:
    """Uniform [-1, 1) noise from integer coordinates: stateless, so windows agree."""
    h = ix.astype(np.uint32) * np.uint32(374761393) + iy.astype(np.uint32) * np.uint32(668265263)
    h = h + np.uint32((int(seed) * 2246822519) & 0xFFFFFFFF)
    h = (h ^ (h >> np.uint32(13))) * np.uint32(1274126177)
    h = h ^ (h >> np.uint32(16))
    return h.astype(np.float64) / 2147483648.0 - 1.0


def _value_noise(x: np.ndarray, y: np.ndarray, cell: float, seed: int) -> np.ndarray:
    """Smooth noise: hash noise on a coarse lattice, bilinearly interpolated."""
    gx, gy = x / cell, y / cell
    ix, iy = np.floor(gx).astype(np.int64), np.floor(gy).astype(np.int64)
    fx, fy = gx - ix, gy - iy
    fx, fy = fx * fx * (3 - 2 * fx), fy * fy * (3 - 2 * fy)
    n00 = _hash_noise(ix, iy, seed)
    n10 = _hash_noise(ix + 1, iy, seed)
    n01 = _hash_noise(ix, iy + 1, seed)
    n11 = _hash_noise(ix + 1, iy + 1, seed)
    return (n00 * (1 - fx) + n10 * fx) * (1 - fy) + (n01 * (1 - fx) + n11 * fx) * fy


class OrthoPainter:
    """Holds the shapes and colour tables; paints any north-up window."""

    def __init__(self, details: DetailLayers, seed: int) -> None:
        self.seed = seed
        lut: list[tuple[int, int, int]] = [BACKGROUND]
        shapes: list[np.ndarray] = []
        values: list[np.ndarray] = []

        def add(geoms: np.ndarray, colours: list[tuple[int, int, int]]) -> None:
            base = len(lut)
            lut.extend(colours)
            shapes.append(np.asarray(geoms))
            values.append(np.arange(base, base + len(colours)))

        lu = details.landuse
        add(lu.geometry.values, [GROUND[_use_of(v)] for v in lu["landuse"]])
        gr = details.green
        add(gr.geometry.values, [GREEN[k] for k in gr["kind"]])
        add(details.water.geometry.values, [WATER] * len(details.water))
        add(details.roads.geometry.values, [PAVEMENT] * len(details.roads))
        add(details.carriageways, [ASPHALT] * len(details.carriageways))
        b = details.buildings
        pick = (_hash_noise(np.arange(len(b)), np.zeros(len(b), int), seed) + 1.0) / 2.0
        roofs = []
        for use, p in zip(b["use"], pick, strict=True):
            pal = ROOFS.get(use, ROOFS["ancillary"])
            roofs.append(pal[int(p * len(pal)) % len(pal)])
        self.n_before_roofs = len(lut)
        add(b.geometry.values, roofs)
        self.lut = np.array(lut, dtype=np.float32)
        self.geoms = np.concatenate(shapes)
        self.values = np.concatenate(values).astype(np.int32)
        self.roof_first = self.n_before_roofs
        # shadows: hull of the footprint and its copy moved away from the sun
        fp = b.geometry.values
        coords, idx = shapely.get_coordinates(shapely.get_exterior_ring(fp), return_index=True)
        moved = coords + SHADOW_OFFSET[None, :] * b["height"].to_numpy()[idx][:, None]
        allc = np.concatenate([coords, moved])
        alli = np.concatenate([idx, idx])
        order = np.argsort(alli, kind="stable")
        self.shadows = shapely.convex_hull(shapely.multipoints(allc[order], indices=alli[order]))
        self.tree = shapely.STRtree(self.geoms)
        self.shadow_tree = shapely.STRtree(self.shadows)

    def paint(self, x0: float, y_top: float, res: float, width: int, height: int) -> np.ndarray:
        """RGB uint8 array (3, height, width) for the window with top-left corner (x0, y_top)."""
        transform = Affine(res, 0.0, x0, 0.0, -res, y_top)
        win = shapely.box(x0, y_top - height * res, x0 + width * res, y_top)
        hit = np.sort(self.tree.query(win))
        cls = np.zeros((height, width), np.int32)
        if len(hit):
            cls = rasterize(
                zip(self.geoms[hit], self.values[hit], strict=True),
                out_shape=(height, width),
                transform=transform,
                fill=0,
                dtype="int32",
            )
        shade = np.zeros((height, width), np.uint8)
        sh = np.sort(self.shadow_tree.query(win))
        if len(sh):
            shade = rasterize(
                ((g, 1) for g in self.shadows[sh]),
                out_shape=(height, width),
                transform=transform,
                fill=0,
                dtype="uint8",
            )
        rgb = self.lut[cls]  # (h, w, 3)
        xs = (x0 + (np.arange(width) + 0.5) * res)[None, :]
        ys = (y_top - (np.arange(height) + 0.5) * res)[:, None]
        ix = np.floor(xs / 0.5).astype(np.int64)
        iy = np.floor(ys / 0.5).astype(np.int64)
        fine = _hash_noise(ix + 0 * iy, iy + 0 * ix, self.seed)
        coarse = _value_noise(xs + 0 * ys, ys + 0 * xs, 14.0, self.seed + 1)
        roof = cls >= self.roof_first
        veg = np.isin(cls, np.nonzero(self.lut[:, 1] > self.lut[:, 0] + 25)[0])
        amp_fine = np.where(roof, 4.0, 9.0)
        amp_coarse = np.where(roof, 2.0, np.where(veg, 22.0, 12.0))
        delta = fine * amp_fine + coarse * amp_coarse
        rgb = rgb + delta[:, :, None] * np.array([0.9, 1.0, 0.8])
        dark = (shade > 0) & ~roof
        rgb[dark] *= SHADOW_FACTOR
        return np.clip(np.rint(rgb), 0, 255).astype(np.uint8).transpose(2, 0, 1)


def _use_of(landuse: str) -> str:
    return {"business": "office", "education": "school", "medical": "hospital"}.get(landuse, landuse)


def write_ortho(path: Path, frame: Frame, painter: OrthoPainter) -> dict:
    """1 m RGB GeoTIFF, tiled and deflated, with overviews, painted in strips of ~4 Mpixel."""
    width = height = int(round(frame.size / ORTHO_RES))
    strip_rows = max(256, (4_000_000 // width) // 256 * 256)
    profile = {
        "driver": "GTiff",
        "dtype": "uint8",
        "count": 3,
        "width": width,
        "height": height,
        "crs": CRS,
        "transform": Affine(ORTHO_RES, 0.0, frame.x0, 0.0, -ORTHO_RES, frame.y1),
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "compress": "deflate",
        "photometric": "RGB",
        "interleave": "pixel",
    }
    with rasterio.open(path, "w", **profile) as dst:
        for r0 in range(0, height, strip_rows):
            rows = min(strip_rows, height - r0)
            img = painter.paint(frame.x0, frame.y1 - r0 * ORTHO_RES, ORTHO_RES, width, rows)
            dst.write(img, window=Window(0, r0, width, rows))
        factors = [f for f in (2, 4, 8, 16, 32) if width // f >= 256]
        if factors:
            dst.build_overviews(factors, Resampling.average)
    return {"width": width, "height": height, "resolution": ORTHO_RES, "bands": 3}
