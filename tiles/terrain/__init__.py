"""Quantized-mesh-1.0 terrain from the twin's DEM, so a CesiumJS viewer needs no outside terrain.

`TerrainSource.from_store(store)` gives layer.json and tiles; `grid` is Cesium's geographic
tiling scheme, `dem` samples the DEM at tile lattices, `mesh` simplifies a tile to an RTIN
within Cesium's geometric error, `normals` lights it and `encode` writes the binary format.
"""

from tiles.terrain.build import EncodedTile, TerrainSource, find_dem_layer
from tiles.terrain.grid import TileId

__all__ = ["EncodedTile", "TerrainSource", "TileId", "find_dem_layer"]
