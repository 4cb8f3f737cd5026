"""Tile builders: 3D Tiles (`threed`), vector tiles, terrain; they read the store, never the web layer."""
