"""Heights of the twin's DEM at the longitudes/latitudes of a terrain tile's samples.

Each sample's lon/lat is carried into the DEM's CRS through `twin.crs` and the height is
interpolated bilinearly between the four surrounding DEM cells (weighted over the valid ones
where some are nodata), from the DEM overview whose cells are no larger than the tile's sample
spacing. The height at a point depends only on the point and the zoom, never on which tile asks,
so neighbouring tiles agree on the samples they share. Heights are orthometric; NaN where the
DEM has no data.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numba
import numpy as np
import rasterio
from affine import Affine

from twin.crs import CRS84, transform_bbox, transform_points
from twin.model import BBox

from .grid import sample_spacing_m


@dataclass(frozen=True)
class Level:
    """One resolution of the DEM file: the full raster (overview None) or one of its overviews."""

    overview: int | None
    transform: Affine
    width: int
    height: int

    @property
    def resolution(self) -> float:
        return max(abs(self.transform.a), abs(self.transform.e))


class Dem:
    """A DEM file read by windows, with its geographic footprint and resolutions."""

    def __init__(self, path: str | Path, crs: str) -> None:
        self.path = str(path)
        self.crs = crs
        self._local = threading.local()  # GDAL handles are not shared between threads
        with rasterio.open(self.path) as src:
            self.nodata = src.nodata
            self.bounds = BBox(*src.bounds)
            levels = [Level(None, src.transform, src.width, src.height)]
            overviews = len(src.overviews(1))
        for i in range(overviews):
            with rasterio.open(self.path, overview_level=i) as overview:
                levels.append(Level(i, overview.transform, overview.width, overview.height))
        self.levels = tuple(levels)
        self.geographic_bounds = transform_bbox(self.bounds, crs, CRS84)
        self.latitude = (self.geographic_bounds.miny + self.geographic_bounds.maxy) / 2

    @property
    def resolution(self) -> float:
        return self.levels[0].resolution

    def level_for(self, z: int) -> Level:
        """The coarsest resolution not coarser than the tile's sample spacing at zoom z."""
        spacing = sample_spacing_m(z, self.latitude)
        fitting = [level for level in self.levels if level.resolution <= spacing]
        return max(fitting, key=lambda level: level.resolution) if fitting else self.levels[0]

    def touches(self, box: BBox) -> bool:
        g = self.geographic_bounds
        return box.minx <= g.maxx and box.maxx >= g.minx and box.miny <= g.maxy and box.maxy >= g.miny

    def _dataset(self, level: Level) -> rasterio.io.DatasetReader:
        handles = self._local.__dict__.setdefault("handles", {})
        if level.overview not in handles:
            options = {} if level.overview is None else {"overview_level": level.overview}
            handles[level.overview] = rasterio.open(self.path, **options)
        return handles[level.overview]

    def sample(self, lon: np.ndarray, lat: np.ndarray, z: int) -> np.ndarray:
        """Orthometric heights at the points of the lon × lat lattice (rows = lat), NaN outside."""
        lons, lats = np.meshgrid(lon, lat)
        out = np.full(lons.shape, np.nan)
        level = self.level_for(z)
        pad = 2 * level.resolution / 111_000.0  # degrees: the cells around the footprint still count
        g = self.geographic_bounds
        inside = (lons >= g.minx - pad) & (lons <= g.maxx + pad) & (lats >= g.miny - pad) & (lats <= g.maxy + pad)
        if not inside.any():
            return out
        x, y = transform_points(CRS84, self.crs, lons[inside], lats[inside])
        inverse = ~level.transform
        x, y = np.asarray(x), np.asarray(y)
        col = inverse.a * x + inverse.b * y + inverse.c - 0.5  # 0 at the first cell's centre
        row = inverse.d * x + inverse.e * y + inverse.f - 0.5
        out[inside] = self._bilinear(level, col, row)
        return out

    def _bilinear(self, level: Level, col: np.ndarray, row: np.ndarray) -> np.ndarray:
        c0, r0 = np.floor(col).astype(np.int64), np.floor(row).astype(np.int64)
        left, top = max(int(c0.min()), 0), max(int(r0.min()), 0)
        right, bottom = min(int(c0.max()) + 2, level.width), min(int(r0.max()) + 2, level.height)
        if left >= right or top >= bottom:
            return np.full(col.shape, np.nan)
        data = self._dataset(level).read(1, window=((top, bottom), (left, right))).astype(np.float64)
        nodata = np.nan if self.nodata is None else float(self.nodata)
        return _bilinear(data, col - left, row - top, nodata)


@numba.njit(cache=True)
def _bilinear(data: np.ndarray, col: np.ndarray, row: np.ndarray, nodata: float) -> np.ndarray:
    """Bilinear interpolation at fractional cell-centre coordinates, over the valid cells only
    (weights renormalised where some of the four are nodata or outside); NaN where none is."""
    out = np.empty(col.size)
    rows, cols = data.shape
    for i in range(col.size):
        c0, r0 = int(np.floor(col[i])), int(np.floor(row[i]))
        fc, fr = col[i] - c0, row[i] - r0
        total = 0.0
        weight = 0.0
        for dr in range(2):
            for dc in range(2):
                r, c = r0 + dr, c0 + dc
                if r < 0 or r >= rows or c < 0 or c >= cols:
                    continue
                value = data[r, c]
                if not np.isfinite(value) or value == nodata:
                    continue
                w = (fr if dr else 1.0 - fr) * (fc if dc else 1.0 - fc)
                total += w * value
                weight += w
        out[i] = total / weight if weight > 1e-12 else np.nan
    return out
