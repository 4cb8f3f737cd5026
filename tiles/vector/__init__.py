"""Vector tiles (MVT 2.1) of the twin's layers: tilesets, generalisation, encoding, the tile cache
and PMTiles/MBTiles export. `service.TileService` is the entry point for the API and the CLI."""
