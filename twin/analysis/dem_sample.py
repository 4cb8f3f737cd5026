"""Ground heights from the twin's DEM: bilinear samples at any project-CRS points.

Sections and profiles draw the ground line from the DEM and pipes with depths but no surveyed
ground take their ground from it, so one small reader serves both. Only the window around the
points is read from the COG, never the whole raster.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

from twin.crs import crs_code, transform_points
from twin.model import InvalidInput, Layer, LayerKind, NotFound
from twin.store import Store


@dataclass(frozen=True)
class Dem:
    """A single-band elevation raster (1985 datum metres) in a known CRS."""

    path: Path
    crs: str
    layer: str = ""

    @classmethod
    def from_store(cls, store: Store, layer_id: str | None = None) -> Dem | None:
        """The DEM named, else the twin's first terrain raster (role `dem`); None when it has none."""
        if layer_id is not None:
            try:
                layer = store.get_layer(layer_id)
            except NotFound:
                raise InvalidInput(f"unknown DEM layer {layer_id!r}") from None
            if not _raster(layer):
                raise InvalidInput(f"layer {layer_id!r} is not a raster layer with an elevation asset")
            return cls._of(store, layer)
        for layer in store.list_layers():
            raster = _raster(layer)
            if raster and (raster.get("role") == "dem" or layer.kind == LayerKind.terrain):
                return cls._of(store, layer)
        return None

    @classmethod
    def _of(cls, store: Store, layer: Layer) -> Dem:
        raster = _raster(layer)
        return cls(store.assets.open_path(raster["asset"]), crs_code(raster.get("crs") or store.crs), layer.id)

    def sample(self, x: np.ndarray, y: np.ndarray, crs: str) -> np.ndarray:
        """Bilinear heights at points given in `crs`; NaN outside the raster or on nodata."""
        x = np.asarray(x, dtype=float).ravel()
        y = np.asarray(y, dtype=float).ravel()
        out = np.full(len(x), np.nan)
        if not len(x):
            return out
        if crs_code(crs) != self.crs:
            x, y = transform_points(crs, self.crs, x, y)
        with rasterio.open(self.path) as src:
            inverse = ~src.transform
            col = inverse.a * x + inverse.b * y + inverse.c - 0.5  # relative to cell centres
            row = inverse.d * x + inverse.e * y + inverse.f - 0.5
            ok = np.isfinite(col) & np.isfinite(row)
            ok &= (col > -1.0) & (row > -1.0) & (col < src.width) & (row < src.height)
            if not ok.any():
                return out
            c0 = max(int(np.floor(col[ok].min())), 0)
            r0 = max(int(np.floor(row[ok].min())), 0)
            c1 = min(int(np.floor(col[ok].max())) + 2, src.width)
            r1 = min(int(np.floor(row[ok].max())) + 2, src.height)
            grid = src.read(1, window=Window(c0, r0, c1 - c0, r1 - r0), masked=True).astype(float).filled(np.nan)
        out[ok] = _bilinear(grid, col[ok] - c0, row[ok] - r0)
        return out


def _raster(layer: Layer) -> dict | None:
    raster = (layer.metadata or {}).get("raster")
    return raster if isinstance(raster, dict) and raster.get("asset") else None


def _bilinear(grid: np.ndarray, col: np.ndarray, row: np.ndarray) -> np.ndarray:
    """Bilinear interpolation between cell centres, clamped at the raster's edge cells."""
    h, w = grid.shape
    col = np.clip(col, 0.0, w - 1.0)
    row = np.clip(row, 0.0, h - 1.0)
    i0 = np.minimum(np.floor(row).astype(int), max(h - 2, 0))
    j0 = np.minimum(np.floor(col).astype(int), max(w - 2, 0))
    i1, j1 = np.minimum(i0 + 1, h - 1), np.minimum(j0 + 1, w - 1)
    fr, fc = row - i0, col - j0
    top = grid[i0, j0] * (1 - fc) + grid[i0, j1] * fc
    bottom = grid[i1, j0] * (1 - fc) + grid[i1, j1] * fc
    return top * (1 - fr) + bottom * fr
