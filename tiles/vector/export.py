"""Tilesets as files for offline clients: PMTiles v3 and MBTiles 1.3 (gzip-compressed MVT).

Tiles come from the `TileService` (so the tile cache is filled and reused on the way) for every
tile of the zoom range that touches the tileset's data; empty tiles are left out.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pmtiles.tile import Compression, TileType, zxy_to_tileid
from pmtiles.writer import Writer

from tiles.vector.service import TileService
from tiles.vector.tms import TileAddress, mercator_bounds, tiles_in
from twin.model import BBox, InvalidInput, Scenario, TimeFilter

FORMATS = ("pmtiles", "mbtiles")
DEFAULT_MAXZOOM = 18  # 1:500 detail (z18 and beyond) is overzoomed by clients from here


def plan(
    service: TileService, tileset: str, minzoom: int | None, maxzoom: int | None, scenario: Scenario
) -> tuple[dict[str, Any], list[TileAddress]]:
    """The tileset's description and the tiles to write, in PMTiles tile-id order."""
    described = service.describe(tileset, scenario)
    found = described["tileset"]
    low = found.minzoom if minzoom is None else minzoom
    high = min(found.maxzoom, DEFAULT_MAXZOOM) if maxzoom is None else maxzoom
    if not found.minzoom <= low <= high <= found.maxzoom:
        raise InvalidInput(
            f"zoom range {low}..{high} must be ascending and inside the tileset's range "
            f"{found.minzoom}..{found.maxzoom}"
        )
    if described["bounds"] is None:
        raise InvalidInput(f"tileset {tileset!r} holds no features to export")
    box = mercator_bounds(BBox(*described["bounds"]), "OGC:CRS84")
    tiles = [t for z in range(low, high + 1) for t in tiles_in(box, z)]
    tiles.sort(key=lambda t: zxy_to_tileid(t.z, t.x, t.y))
    return {**described, "minzoom": low, "maxzoom": high}, tiles


def metadata(tileset: str, described: dict[str, Any]) -> dict[str, Any]:
    """MBTiles/PMTiles metadata: name, bounds, zooms and the TileJSON vector_layers."""
    layers: dict[str, dict[str, Any]] = {}
    for layer in described["vector_layers"]:
        entry = layers.setdefault(layer["id"], {**layer, "fields": dict(layer["fields"])})
        entry["minzoom"] = max(min(entry["minzoom"], layer["minzoom"]), described["minzoom"])
        entry["maxzoom"] = min(max(entry["maxzoom"], layer["maxzoom"]), described["maxzoom"])
        entry["fields"] |= layer["fields"]
    return {
        "name": tileset,
        "format": "pbf",
        "type": "overlay",
        "version": "1",
        "bounds": described["bounds"],
        "minzoom": described["minzoom"],
        "maxzoom": described["maxzoom"],
        "vector_layers": list(layers.values()),
    }


def export_tiles(
    service: TileService,
    tileset: str,
    out: Path,
    kind: str,
    *,
    minzoom: int | None = None,
    maxzoom: int | None = None,
    scenario: Scenario = Scenario.current,
    time: TimeFilter | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Write the tileset as `kind` ('pmtiles' or 'mbtiles') to `out`; returns a summary."""
    if kind not in FORMATS:
        raise InvalidInput(f"unknown export format {kind!r}; expected one of {', '.join(FORMATS)}")
    described, addresses = plan(service, tileset, minzoom, maxzoom, scenario)
    meta = metadata(tileset, described)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    partial.unlink(missing_ok=True)
    written = 0
    tiles = ((a, service.tile(tileset, a.z, a.x, a.y, time, scenario)) for a in addresses)
    try:
        if kind == "pmtiles":
            written = _write_pmtiles(partial, tiles, meta, len(addresses), progress)
        else:
            written = _write_mbtiles(partial, tiles, meta, len(addresses), progress)
        partial.replace(out)
    finally:
        partial.unlink(missing_ok=True)
    return {"tileset": tileset, "format": kind, "out": str(out), "tiles": written, **_zooms(meta)}


def _zooms(meta: dict[str, Any]) -> dict[str, int]:
    return {"minzoom": meta["minzoom"], "maxzoom": meta["maxzoom"]}


def _write_pmtiles(path: Path, tiles, meta: dict[str, Any], total: int, progress) -> int:
    written = 0
    with open(path, "wb") as handle:
        writer = Writer(handle)
        for n, (address, result) in enumerate(tiles, 1):
            if not result.empty:
                writer.write_tile(zxy_to_tileid(address.z, address.x, address.y), result.data)
                written += 1
            if progress is not None:
                progress(n, total)
        if not written:
            raise InvalidInput(f"every tile of {meta['name']!r} in zooms {meta['minzoom']}..{meta['maxzoom']} is empty")
        west, south, east, north = meta["bounds"]
        header = {
            "tile_type": TileType.MVT,
            "tile_compression": Compression.GZIP,
            "min_lon_e7": int(west * 1e7),
            "min_lat_e7": int(south * 1e7),
            "max_lon_e7": int(east * 1e7),
            "max_lat_e7": int(north * 1e7),
            "center_zoom": meta["minzoom"],
            "center_lon_e7": int((west + east) / 2 * 1e7),
            "center_lat_e7": int((south + north) / 2 * 1e7),
        }
        writer.finalize(header, meta)
    return written


def _write_mbtiles(path: Path, tiles, meta: dict[str, Any], total: int, progress) -> int:
    con = sqlite3.connect(path)
    try:
        con.executescript(
            "CREATE TABLE metadata (name TEXT, value TEXT);"
            "CREATE TABLE tiles (zoom_level INTEGER, tile_column INTEGER, tile_row INTEGER, tile_data BLOB);"
            "CREATE UNIQUE INDEX tile_index ON tiles (zoom_level, tile_column, tile_row);"
        )
        written = 0
        for n, (address, result) in enumerate(tiles, 1):
            if not result.empty:
                tms_row = (1 << address.z) - 1 - address.y  # MBTiles counts rows from the south
                con.execute("INSERT INTO tiles VALUES (?, ?, ?, ?)", (address.z, address.x, tms_row, result.data))
                written += 1
            if progress is not None:
                progress(n, total)
        if not written:
            raise InvalidInput(f"every tile of {meta['name']!r} in zooms {meta['minzoom']}..{meta['maxzoom']} is empty")
        west, south, east, north = meta["bounds"]
        rows = {
            "name": meta["name"],
            "format": "pbf",
            "type": meta["type"],
            "version": meta["version"],
            "bounds": f"{west},{south},{east},{north}",
            "center": f"{(west + east) / 2},{(south + north) / 2},{meta['minzoom']}",
            "minzoom": str(meta["minzoom"]),
            "maxzoom": str(meta["maxzoom"]),
            "json": json.dumps({"vector_layers": meta["vector_layers"]}),
        }
        con.executemany("INSERT INTO metadata VALUES (?, ?)", rows.items())
        con.commit()
    finally:
        con.close()
    return written
