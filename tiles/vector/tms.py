"""WebMercatorQuad tile addressing: tile bounds, checks of z/x/y, the tiles covering a box.

The hot path uses the closed-form grid (every tile is a square of the EPSG:3857 world split
2^z times); `morecantile` describes the same matrix set for the OGC API Tiles documents.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from twin.crs import CRS84, WEB_MERCATOR, transform_bbox
from twin.model import BBox, InvalidInput

EXTENT = 4096  # tile coordinate units per tile side (MVT 2.1)
BUFFER = 64  # units drawn beyond each tile edge, so that strokes join across tiles
MAX_ZOOM = 22
ORIGIN = 20037508.342789244  # half the EPSG:3857 world width in metres
WORLD = 2 * ORIGIN
TILE_MATRIX_SET = "WebMercatorQuad"
MAX_LATITUDE = 85.0511287798066


@dataclass(frozen=True)
class TileAddress:
    z: int
    x: int
    y: int

    def __str__(self) -> str:
        return f"{self.z}/{self.x}/{self.y}"


def check_tile(z: int, x: int, y: int, minzoom: int = 0, maxzoom: int = MAX_ZOOM) -> TileAddress:
    """The address if it names a tile of the matrix at a zoom the tileset serves; 400 otherwise."""
    if not minzoom <= z <= maxzoom:
        raise InvalidInput(f"zoom level {z} is outside this tileset's range {minzoom}..{maxzoom}")
    limit = (1 << z) - 1
    if not (0 <= x <= limit and 0 <= y <= limit):
        raise InvalidInput(
            f"tile {z}/{x}/{y} is outside the WebMercatorQuad matrix: at zoom {z} x and y lie in 0..{limit}"
        )
    return TileAddress(z, x, y)


def tile_size(z: int) -> float:
    """Side of a tile at zoom z in EPSG:3857 metres."""
    return WORLD / (1 << z)


def tile_bounds(z: int, x: int, y: int) -> tuple[float, float, float, float]:
    """(minx, miny, maxx, maxy) of a tile in EPSG:3857; y counts down from the north edge."""
    size = tile_size(z)
    minx = -ORIGIN + x * size
    maxy = ORIGIN - y * size
    return (minx, maxy - size, minx + size, maxy)


def buffered_bounds(z: int, x: int, y: int, buffer: int = BUFFER) -> tuple[float, float, float, float]:
    """The tile's bounds grown by the MVT buffer."""
    minx, miny, maxx, maxy = tile_bounds(z, x, y)
    margin = (maxx - minx) * buffer / EXTENT
    return (minx - margin, miny - margin, maxx + margin, maxy + margin)


def tile_range(bounds: tuple[float, float, float, float], z: int) -> tuple[int, int, int, int]:
    """(xmin, ymin, xmax, ymax), inclusive, of the tiles at zoom z that touch an EPSG:3857 box."""
    size = tile_size(z)
    limit = (1 << z) - 1
    minx, miny, maxx, maxy = bounds

    def clamp(value: float) -> int:
        return max(0, min(limit, int(value)))

    return (
        clamp((minx + ORIGIN) // size),
        clamp((ORIGIN - maxy) // size),
        clamp((maxx + ORIGIN) // size),
        clamp((ORIGIN - miny) // size),
    )


def tiles_in(bounds: tuple[float, float, float, float], z: int) -> Iterator[TileAddress]:
    """Every tile at zoom z touching an EPSG:3857 box, row by row."""
    xmin, ymin, xmax, ymax = tile_range(bounds, z)
    for y in range(ymin, ymax + 1):
        for x in range(xmin, xmax + 1):
            yield TileAddress(z, x, y)


def mercator_bounds(bbox: BBox, crs: str) -> tuple[float, float, float, float]:
    """A box of any CRS as an EPSG:3857 box (densified, clipped to the Mercator latitudes)."""
    lonlat = transform_bbox(bbox, crs, CRS84)

    def latitude(value: float) -> float:
        return min(max(value, -MAX_LATITUDE), MAX_LATITUDE)

    clipped = BBox(lonlat.minx, latitude(lonlat.miny), lonlat.maxx, latitude(lonlat.maxy))
    return transform_bbox(clipped, CRS84, WEB_MERCATOR).as_tuple()


def lonlat_bounds(z: int, x: int, y: int) -> BBox:
    """A tile's extent in CRS84."""
    return transform_bbox(BBox(*tile_bounds(z, x, y)), WEB_MERCATOR, CRS84)


@lru_cache(maxsize=1)
def matrix_set() -> Any:
    """The morecantile description of WebMercatorQuad (OGC Two Dimensional Tile Matrix Set 2.0)."""
    import morecantile

    return morecantile.tms.get(TILE_MATRIX_SET)
