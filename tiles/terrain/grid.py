"""Cesium's geographic tiling scheme (EPSG:4326, TMS rows): tile bounds, coverage, level errors.

Level z has 2^(z+1) columns and 2^z rows of square tiles 180/2^z degrees wide; column 0 starts
at 180W and, in the TMS convention that layer.json's `"scheme": "tms"` announces, row 0 starts
at 90S. Each tile is sampled on a (GRID_SIZE x GRID_SIZE) lattice of vertices that neighbours
share along their common edge, so every sample's longitude/latitude is a function of its global
lattice index and zoom only (the same floating-point value in every tile that holds it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from twin.model import BBox, InvalidInput, NotFound

GRID_SIZE = 65  # vertices per tile side: 64 cells, Cesium's own heightmap width
CELLS = GRID_SIZE - 1
WGS84_MAX_RADIUS = 6378137.0
# CesiumTerrainProvider's level-zero error: maximumRadius * 2pi * 0.25 / (65 * 2 tiles).
LEVEL_ZERO_ERROR = WGS84_MAX_RADIUS * 2 * math.pi * 0.25 / (65 * 2)
MAX_ZOOM_LIMIT = 24


@dataclass(frozen=True)
class TileId:
    """A terrain tile: zoom, column, TMS row (0 at the south pole)."""

    z: int
    x: int
    y: int

    def __str__(self) -> str:
        return f"{self.z}/{self.x}/{self.y}"


def columns(z: int) -> int:
    return 2 << z


def rows(z: int) -> int:
    return 1 << z


def tile_degrees(z: int) -> float:
    """Width and height of a tile at zoom z, in degrees (exact: 180 times a power of two)."""
    return 180.0 / (1 << z)


def check_tile(tile: TileId, max_zoom: int = MAX_ZOOM_LIMIT) -> None:
    """InvalidInput for a negative index, NotFound past `max_zoom` or outside level z's matrix."""
    if min(tile.z, tile.x, tile.y) < 0:
        raise InvalidInput(f"tile {tile}: zoom, column and row are whole numbers from 0")
    if tile.z > max_zoom:
        raise NotFound(f"terrain tile {tile} is beyond the deepest terrain zoom {max_zoom}")
    if not (0 <= tile.x < columns(tile.z) and 0 <= tile.y < rows(tile.z)):
        raise NotFound(
            f"tile {tile} is outside the geographic tiling scheme at zoom {tile.z} "
            f"({columns(tile.z)} columns, {rows(tile.z)} rows)"
        )


def tile_bounds(tile: TileId) -> BBox:
    """West, south, east, north in degrees."""
    size = tile_degrees(tile.z)
    return BBox(
        -180.0 + tile.x * size, -90.0 + tile.y * size, -180.0 + (tile.x + 1) * size, -90.0 + (tile.y + 1) * size
    )


def lattice(tile: TileId, margin: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Longitudes (columns, west to east) and latitudes (rows, south to north) of the tile's
    samples, with `margin` extra samples beyond each edge; computed from global lattice indices
    so that two tiles give bit-identical coordinates to the samples they share."""
    step = tile_degrees(tile.z) / CELLS
    local = np.arange(-margin, GRID_SIZE + margin, dtype=np.int64)
    lon = -180.0 + (tile.x * CELLS + local) * step
    lat = -90.0 + (tile.y * CELLS + local) * step
    return lon, np.clip(lat, -90.0, 90.0)


def neighbours(tile: TileId) -> dict[str, TileId | None]:
    """The four edge neighbours at the same zoom; columns wrap at the antimeridian, none past a pole."""
    n = columns(tile.z)
    return {
        "west": TileId(tile.z, (tile.x - 1) % n, tile.y),
        "east": TileId(tile.z, (tile.x + 1) % n, tile.y),
        "south": TileId(tile.z, tile.x, tile.y - 1) if tile.y > 0 else None,
        "north": TileId(tile.z, tile.x, tile.y + 1) if tile.y + 1 < rows(tile.z) else None,
    }


def level_error(z: int) -> float:
    """The geometric error (metres) CesiumJS assumes for a terrain tile at zoom z; each tile's
    mesh is simplified to stay within it, so Cesium's screen-space error test is honest."""
    return LEVEL_ZERO_ERROR / (1 << z)


def sample_spacing_m(z: int, latitude: float) -> float:
    """Ground distance between neighbouring samples at zoom z (the shorter, east-west, one)."""
    metres_per_degree = math.pi * WGS84_MAX_RADIUS / 180.0
    return tile_degrees(z) / CELLS * metres_per_degree * max(math.cos(math.radians(latitude)), 1e-6)


def max_zoom_for(resolution_m: float, latitude: float) -> int:
    """The zoom whose sample spacing is nearest the DEM's own resolution (no point going finer)."""
    for z in range(MAX_ZOOM_LIMIT + 1):
        if sample_spacing_m(z, latitude) <= resolution_m * math.sqrt(2.0):
            return z
    return MAX_ZOOM_LIMIT


def tile_range(bounds: BBox, z: int) -> tuple[int, int, int, int]:
    """startX, startY, endX, endY (inclusive, TMS rows) of the tiles that a lon/lat box touches."""
    size = tile_degrees(z)
    start_x = max(0, math.floor((bounds.minx + 180.0) / size))
    end_x = min(columns(z) - 1, math.floor((bounds.maxx + 180.0) / size))
    start_y = max(0, math.floor((bounds.miny + 90.0) / size))
    end_y = min(rows(z) - 1, math.floor((bounds.maxy + 90.0) / size))
    return start_x, start_y, end_x, end_y


def available(bounds: BBox | None, max_zoom: int) -> list[list[dict[str, int]]]:
    """layer.json `available`: the whole world at zoom 0 (so the globe is whole), then per zoom
    the tiles covering the DEM; Cesium upsamples its parents' tiles everywhere else."""
    levels: list[list[dict[str, int]]] = [[{"startX": 0, "startY": 0, "endX": 1, "endY": 0}]]
    for z in range(1, max_zoom + 1):
        if bounds is None:
            break
        sx, sy, ex, ey = tile_range(bounds, z)
        levels.append([{"startX": sx, "startY": sy, "endX": ex, "endY": ey}])
    return levels


def is_available(levels: list[list[dict[str, int]]], tile: TileId) -> bool:
    if tile.z >= len(levels):
        return False
    return any(r["startX"] <= tile.x <= r["endX"] and r["startY"] <= tile.y <= r["endY"] for r in levels[tile.z])
