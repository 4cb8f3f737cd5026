"""The model grid: a DEM checked and coarsened, and vector inputs burnt onto it.

Nodata is refused by default with a count and where it is, because a hole in the ground model
would silently drain or dam water; `fill_nodata=True` fills holes by inverse-distance
interpolation from their rims (GDAL's FillNodata) when the user accepts that.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from affine import Affine
from rasterio.features import rasterize
from rasterio.fill import fillnodata
from shapely.geometry.base import BaseGeometry

from twin.model import InvalidInput

FILL_SEARCH_CELLS = 100


@dataclass(frozen=True)
class Grid:
    """A north-up grid of square cells: bed heights and the transform of its top-left corner.

    A coarsened grid keeps the DEM it came from (`fine`, `factor` cells a side per coarse cell)
    so that results can be mapped back onto the ground's real shape.
    """

    z: np.ndarray
    transform: Affine
    fine: np.ndarray | None = None
    factor: int = 1

    def fine_grid(self) -> Grid:
        """The DEM under this grid at its own resolution (itself when not coarsened)."""
        if self.fine is None:
            return self
        t = self.transform
        return Grid(self.fine, Affine(t.a / self.factor, 0.0, t.c, 0.0, t.e / self.factor, t.f))

    def blocks(self) -> np.ndarray:
        """The fine cells of each coarse cell, lowest first: shape (ny, nx, factor²)."""
        ny, nx = self.shape
        k = self.factor
        cells = self.fine.reshape(ny, k, nx, k).transpose(0, 2, 1, 3).reshape(ny, nx, k * k)
        return np.sort(cells, axis=2)

    def to_fine(self, depth: np.ndarray) -> np.ndarray:
        """Each coarse cell's water poured into its own fine cells: the level that holds the same
        volume over the real ground (volume-conserving sub-grid depths)."""
        if self.fine is None:
            return depth
        low = self.blocks()
        m = low.shape[2]
        level = (depth[:, :, None] * m + np.cumsum(low, axis=2)) / np.arange(1, m + 1)
        j = np.maximum((low < level).sum(axis=2), 1) - 1  # the lowest j + 1 fine cells are under water
        level = np.take_along_axis(level, j[:, :, None], axis=2)[:, :, 0]
        k = self.factor
        up = np.repeat(np.repeat(np.where(depth > 0, level, -np.inf), k, axis=0), k, axis=1)
        return np.maximum(up - self.fine, 0.0)

    def to_fine_cells(self, values: np.ndarray) -> np.ndarray:
        """A coarse grid's values repeated over its fine cells."""
        if self.fine is None:
            return values
        return np.repeat(np.repeat(values, self.factor, axis=0), self.factor, axis=1)

    def threshold_for(self, limit: float) -> np.ndarray:
        """The coarse depth at which the deepest fine cell of each coarse cell reaches `limit`."""
        if self.fine is None:
            return np.full(self.shape, float(limit))
        low = self.blocks()
        return np.maximum(low[:, :, :1] + limit - low, 0.0).mean(axis=2)

    @property
    def dx(self) -> float:
        return float(self.transform.a)

    @property
    def shape(self) -> tuple[int, int]:
        return self.z.shape

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        ny, nx = self.z.shape
        x0, y1 = self.transform.c, self.transform.f
        return (x0, y1 - ny * self.dx, x0 + nx * self.dx, y1)

    def cells(self, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Row, column and an inside flag for points in the grid's CRS."""
        xy = np.asarray(xy, dtype=float).reshape(-1, 2)
        col = np.floor((xy[:, 0] - self.transform.c) / self.dx).astype(np.int64)
        row = np.floor((self.transform.f - xy[:, 1]) / self.dx).astype(np.int64)
        inside = (row >= 0) & (row < self.shape[0]) & (col >= 0) & (col < self.shape[1])
        return row, col, inside

    def centres(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        return np.column_stack([self.transform.c + (cols + 0.5) * self.dx, self.transform.f - (rows + 0.5) * self.dx])

    def burn(
        self, shapes: Iterable[tuple[BaseGeometry, float]], default: float, all_touched: bool = False
    ) -> np.ndarray:
        """Values of polygons (later ones on top) on the grid; `default` elsewhere."""
        pairs = [(g, float(v)) for g, v in shapes if g is not None and not g.is_empty]
        if not pairs:
            return np.full(self.shape, float(default))
        return rasterize(
            pairs, out_shape=self.shape, transform=self.transform, fill=float(default), dtype="float64",
            all_touched=all_touched,
        )  # fmt: skip


def prepare(
    dem: np.ndarray,
    transform: Affine,
    *,
    nodata: float | None = None,
    resolution: float | None = None,
    fill_nodata: bool = False,
) -> Grid:
    """Check the DEM (north-up, square cells, no holes) and coarsen it to `resolution` metres.

    Coarsening averages whole blocks of cells (the water volume a hollow holds is kept better
    than by sampling), so `resolution` must be a whole multiple of the DEM's cell size.
    """
    z = np.array(dem, dtype=np.float64)
    if z.ndim != 2 or min(z.shape) < 2:
        raise InvalidInput("the DEM must be a 2D grid of at least 2 × 2 cells")
    t = Affine(*transform[:6]) if not isinstance(transform, Affine) else transform
    if t.b != 0 or t.d != 0 or t.a <= 0 or t.e >= 0 or not np.isclose(t.a, -t.e, rtol=1e-6):
        raise InvalidInput("the DEM must be north-up with square cells (no rotation)")
    holes = ~np.isfinite(z)
    if nodata is not None and np.isfinite(nodata):
        holes |= z == nodata
    if holes.any():
        z = _fill(z, holes, fill_nodata)
    if resolution is not None and resolution > 0 and not np.isclose(resolution, t.a):
        coarse, ct, fine, k = _coarsen(z, t, float(resolution))
        return Grid(np.ascontiguousarray(coarse), ct, fine, k)
    return Grid(np.ascontiguousarray(z), t)


def _fill(z: np.ndarray, holes: np.ndarray, fill: bool) -> np.ndarray:
    count = int(holes.sum())
    if not fill:
        rows, cols = np.nonzero(holes)
        raise InvalidInput(
            f"the DEM has {count} nodata cells ({100.0 * count / holes.size:.2f} %, rows {rows.min()}–{rows.max()}, "
            f"columns {cols.min()}–{cols.max()}); fill them first or ask for filling (fill_nodata, --fill-nodata)"
        )
    if count == holes.size:
        raise InvalidInput("the DEM holds no data at all")
    work = np.where(holes, np.nan, z).astype(np.float32)
    filled = fillnodata(work, mask=(~holes).astype(np.uint8), max_search_distance=FILL_SEARCH_CELLS)
    if np.isnan(filled).any():
        raise InvalidInput(f"the DEM has holes wider than {FILL_SEARCH_CELLS} cells that cannot be filled")
    return np.where(holes, filled.astype(np.float64), z)


def _coarsen(z: np.ndarray, t: Affine, resolution: float) -> tuple[np.ndarray, Affine, np.ndarray, int]:
    factor = resolution / t.a
    k = int(round(factor))
    if k < 1 or abs(factor - k) > 1e-6:
        raise InvalidInput(f"resolution {resolution:g} m must be a whole multiple of the DEM cell ({t.a:g} m)")
    ny, nx = (z.shape[0] // k) * k, (z.shape[1] // k) * k
    if ny == 0 or nx == 0:
        raise InvalidInput(f"resolution {resolution:g} m is coarser than the whole DEM")
    blocks = z[:ny, :nx].reshape(ny // k, k, nx // k, k).mean(axis=(1, 3))
    return blocks, Affine(resolution, 0.0, t.c, 0.0, -resolution, t.f), np.ascontiguousarray(z[:ny, :nx]), k
