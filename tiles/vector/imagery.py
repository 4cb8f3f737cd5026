"""PNG tiles of any vector tileset, served next to its MVT tiles and cached the same way.

A PNG tile is drawn from the tileset's MVT tile (so the same query, clipping, generalisation and
MVT cache), with the drawing rules of a MapLibre style (`render.py`). The image goes into the
same tile cache as the MVT tiles under a key of its own (tileset key, output scale and style
digest) registered with the same layers, so that an edit to a layer drops its PNG tiles exactly
where it drops its MVT tiles.
"""

from __future__ import annotations

import gzip
from dataclasses import replace

from tiles.vector.cache import CachedTile
from tiles.vector.mapstyle import RenderStyle
from tiles.vector.render import render_png
from tiles.vector.service import TileResult, TileService, etag_of, variant_key
from tiles.vector.tilesets import Tileset
from tiles.vector.tms import check_tile
from twin.model import Scenario, TimeFilter

SCALES = (1, 2)


def image_key(tileset_key: str, scale: int, style: RenderStyle) -> str:
    """The cache key of a tileset's PNG tiles at one scale drawn in one style."""
    return f"{tileset_key}/png{scale}/{style.digest}"


def png_tile(
    service: TileService,
    name: str,
    z: int,
    x: int,
    y: int,
    style: RenderStyle,
    time: TimeFilter | None = None,
    scenario: Scenario = Scenario.current,
    anonymous: bool = False,
    scale: int = 1,
) -> TileResult:
    """The PNG of a tile (`TileResult.data` holds the PNG bytes; never empty: a tile without
    features is a transparent image). InvalidInput/NotFound for bad requests, as `service.tile`."""
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}")
    snap = service.snapshot()
    tileset, key = service.tileset(name, scenario, anonymous)
    check_tile(z, x, y, tileset.minzoom, tileset.maxzoom)
    png_key = image_key(key, scale, style)
    variant = variant_key(time)
    memory_key = (png_key, z, x, y, variant)
    found = service.memory.get(memory_key)
    if found is not None:
        return found
    stored = service.cache.get(png_key, z, x, y, variant)
    if stored is not None:
        result = TileResult(stored.data, stored.etag)
        service.memory.put(memory_key, result)
        return result
    mvt = service.tile(name, z, x, y, time, scenario, anonymous)
    png = render_png(gzip.decompress(mvt.data) if mvt.data else b"", style, z, scale)
    result = TileResult(png, etag_of(png))
    versions = _versions(snap.versions, tileset)
    if service.cache.put(png_key, name, versions, z, x, y, variant, CachedTile(png, result.etag)):
        service.memory.put(memory_key, result)
    return replace(result, built=True)


def _versions(versions: dict[str, int], tileset: Tileset) -> dict[str, int]:
    return {lid: versions[lid] for lid in tileset.layer_ids if lid in versions}
