"""A twin's terrain: its DEM as quantized-mesh tiles in Cesium's geographic tiling scheme.

`TerrainSource.from_store` finds the DEM (the `dem` layer, else the first `terrain` layer with
a raster), the vertical datum of the store (orthometric 1985 heights to ellipsoidal ones, the
same conversion the buildings and BIM use) and the zoom range that the DEM's resolution
supports. Outside the DEM the surface is the geoid (orthometric height 0), so the globe stays
whole. Each tile's samples and own mesh are kept in a small LRU cache, because a tile needs
its four neighbours' meshes to agree with them on its edge vertices.
"""

from __future__ import annotations

import gzip
import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from twin.crs import VerticalDatum
from twin.model import BBox, Layer, LayerKind
from twin.store import Store

from .dem import Dem
from .encode import QUANTIZED_MAX, TerrainMesh, encode_tile
from .grid import (
    CELLS,
    TileId,
    available,
    check_tile,
    lattice,
    level_error,
    max_zoom_for,
    neighbours,
)
from .mesh import OPPOSITE, GridMesh, extract_mesh, propagated_errors, stitch
from .normals import lattice_normals

FORMAT_REVISION = "1"  # bump when the tiles written for the same inputs change
GRID_CACHE_TILES = 512
TILE_CACHE_TILES = 2048


class LruCache:
    """A small thread-safe least-recently-used map."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        return None

    def put(self, key, value) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)


@dataclass(frozen=True)
class SampledTile:
    """Ellipsoidal heights on the tile's lattice with a one-sample margin, and the tile's own
    mesh (before its edges take in the neighbours' edge vertices)."""

    lon: np.ndarray
    lat: np.ndarray
    heights: np.ndarray  # (GRID_SIZE + 2, GRID_SIZE + 2), rows south→north
    mesh: GridMesh

    @property
    def inner(self) -> np.ndarray:
        return self.heights[1:-1, 1:-1]


def find_dem_layer(store: Store) -> Layer | None:
    """The twin's DEM: layer `dem` when it is one, else the first terrain layer with a raster."""
    candidates = [layer for layer in store.list_layers() if "asset" in (layer.metadata.get("raster") or {})]
    for layer in candidates:
        if layer.id == "dem" and layer.kind == LayerKind.terrain:
            return layer
    return next((layer for layer in candidates if layer.kind == LayerKind.terrain), None)


class TerrainSource:
    """Terrain tiles of one DEM in one vertical datum; safe to share between threads."""

    def __init__(self, dem: Dem | None, datum: VerticalDatum, key: str = "", layer: Layer | None = None) -> None:
        self.dem = dem
        self.layer = layer  # the DEM layer, for access checks (`restricted` in its metadata)
        self.datum = datum
        self.max_zoom = max_zoom_for(dem.resolution, dem.latitude) if dem else 0
        self.bounds: BBox | None = dem.geographic_bounds if dem else None
        self.available = available(self.bounds, self.max_zoom)
        self.version = hashlib.sha256(f"{FORMAT_REVISION}|{key}|{datum}".encode()).hexdigest()[:12]
        self._grids = LruCache(GRID_CACHE_TILES)
        self._tiles = LruCache(TILE_CACHE_TILES)

    @classmethod
    def from_store(cls, store: Store) -> TerrainSource:
        datum = VerticalDatum(
            offset=float(store.get_meta("geoid_offset") or 0.0), geoid_grid=store.get_meta("geoid_grid")
        )
        layer = find_dem_layer(store)
        if layer is None:
            return cls(None, datum, "no-dem")
        raster = layer.metadata["raster"]
        dem = Dem(store.assets.open_path(raster["asset"]), raster.get("crs") or store.crs)
        return cls(dem, datum, f"{layer.id}|{layer.version}|{raster['asset']}", layer)

    @property
    def tile_version(self) -> str:
        """layer.json's `version`, which Cesium puts into each tile URL (`?v=`)."""
        return f"1.0.{self.version}"

    def layer_json(self, name: str = "terrain") -> dict:
        """Cesium's layer.json: TileJSON 2.1.0 with quantized-mesh availability per zoom."""
        bounds = self.bounds.as_tuple() if self.bounds else (-180.0, -90.0, 180.0, 90.0)
        return {
            "tilejson": "2.1.0",
            "name": name,
            "description": "Quantized-mesh terrain from the twin's DEM, ellipsoidal heights (WGS 84)",
            "version": self.tile_version,
            "format": "quantized-mesh-1.0",
            "scheme": "tms",
            "tiles": ["{z}/{x}/{y}.terrain?v={version}"],
            "projection": "EPSG:4326",
            "extensions": ["octvertexnormals"],
            "minzoom": 0,
            "maxzoom": self.max_zoom,
            "bounds": list(bounds),
            "available": self.available,
        }

    def check(self, tile: TileId) -> None:
        """InvalidInput / NotFound for an index outside the scheme or deeper than the DEM goes."""
        check_tile(tile, self.max_zoom)

    def sample(self, tile: TileId) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Longitudes, latitudes and ellipsoidal heights of the tile's lattice with a one-sample
        margin; the geoid (orthometric 0) where the DEM has no data."""
        lon, lat = lattice(tile, margin=1)
        orthometric = np.full((lat.size, lon.size), np.nan)
        if self.dem is not None and self.dem.touches(BBox(lon[0], lat[0], lon[-1], lat[-1])):
            orthometric = self.dem.sample(lon, lat, tile.z)
        lons, lats = np.meshgrid(lon, lat)
        return lon, lat, self.datum.to_ellipsoidal(lons, lats, np.nan_to_num(orthometric, nan=0.0))

    def sampled(self, tile: TileId) -> SampledTile:
        """The tile's samples and its own mesh, from the cache when a neighbour already needed them."""
        cached = self._grids.get(tile)
        if cached is not None:
            return cached
        lon, lat, heights = self.sample(tile)
        own = extract_mesh(propagated_errors(heights[1:-1, 1:-1]), level_error(tile.z))
        result = SampledTile(lon, lat, heights, own)
        self._grids.put(tile, result)
        return result

    def mesh(self, tile: TileId) -> TerrainMesh:
        """The tile's RTIN mesh within Cesium's geometric error for its zoom, crack-free with its
        neighbours, with normals from the sampled surface."""
        self.check(tile)
        own = self.sampled(tile)
        extra = {}
        for edge, other in neighbours(tile).items():
            if other is not None:
                extra[edge] = self.sampled(other).mesh.edge_positions(OPPOSITE[edge], CELLS)
        grid = stitch(own.mesh, extra, CELLS)
        col, row = grid.vertices[:, 0], grid.vertices[:, 1]
        normals = lattice_normals(own.lon, own.lat, own.heights)
        return TerrainMesh(
            u=(col.astype(np.int64) * QUANTIZED_MAX + CELLS // 2) // CELLS,
            v=(row.astype(np.int64) * QUANTIZED_MAX + CELLS // 2) // CELLS,
            lon=own.lon[1:-1][col],
            lat=own.lat[1:-1][row],
            height=own.inner[row, col],
            triangles=grid.triangles,
            normals=normals[row, col],
        )

    def tile(self, tile: TileId, normals: bool = False) -> EncodedTile:
        """The tile's quantized-mesh bytes, plain and gzip-compressed, with a strong ETag each."""
        cached = self._tiles.get((tile, normals))
        if cached is None:
            cached = EncodedTile.of(encode_tile(self.mesh(tile), normals=normals))
            self._tiles.put((tile, normals), cached)
        return cached


@dataclass(frozen=True)
class EncodedTile:
    raw: bytes
    gzipped: bytes
    etag: str
    gzip_etag: str

    @classmethod
    def of(cls, raw: bytes) -> EncodedTile:
        gzipped = gzip.compress(raw, compresslevel=6, mtime=0)
        return cls(raw, gzipped, _etag(raw), _etag(gzipped))


def _etag(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
