"""Rendered raster tiles kept in memory, so a tile titiler drew once is not drawn again.

Drawing an orthophoto or hillshade tile takes titiler 0.2–0.3 s (seconds under load), and a
viewer asks for dozens at once; the answer depends only on the URL and the layer's data, so it
is kept under the layer's version (an ingest of a new survey changes the version, and with it
every key). Each app keeps its own cache (two twins in one process never share tiles).
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request, Response

from tiles.vector.service import LruCache, etag_of
from twin.api.security import is_restricted
from twin.model import TwinError

CAPACITY_BYTES = 64 * 2**20
TILE_MAX_AGE = 300  # browsers may reuse a tile this long; the server's copy follows the version


@dataclass(frozen=True)
class RenderedTile:
    data: bytes
    etag: str
    media_type: str | None


def _cache(request: Request) -> LruCache:
    state = request.app.state
    cache = getattr(state, "rendered_raster_tiles", None)
    if cache is None:
        cache = state.rendered_raster_tiles = LruCache(CAPACITY_BYTES)
    return cache


def tile_key(request: Request) -> tuple | None:
    """The cache key of a raster tile request, or None for anything that is not a tile (or
    names a layer that does not exist: the route then explains)."""
    if request.method != "GET" or "/tiles/" not in request.url.path:
        return None
    layer_id = request.path_params.get("layer_id")
    try:
        layer = request.app.state.store.get_layer(layer_id)
    except TwinError:
        return None
    return (layer_id, layer.version, is_restricted(layer), request.url.path, request.url.query)


def cached_tile(request: Request, key: tuple) -> Response | None:
    """The kept tile, for requests the access rules let through without a key only: the lookup
    runs before the route's dependencies, so anything else takes the guarded path."""
    settings = getattr(request.app.state, "settings", None)
    anonymous = "authorization" not in request.headers
    if key[2] or not anonymous or settings is None or not settings.public_read:
        return None
    tile = _cache(request).get(key)
    return None if tile is None else _answer(request, tile)


def keep_tile(request: Request, key: tuple, response: Response) -> Response:
    """Keep a freshly drawn tile (200 with a body) and answer it with its ETag."""
    if response.status_code != 200 or not isinstance(response.body, bytes):
        return response
    tile = RenderedTile(response.body, etag_of(response.body), response.media_type)
    _cache(request).put(key, tile)  # type: ignore[arg-type]  # LruCache only needs `.data`
    return _answer(request, tile)


def _answer(request: Request, tile: RenderedTile) -> Response:
    headers = {"ETag": tile.etag, "Cache-Control": f"public, max-age={TILE_MAX_AGE}"}
    if tile.etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return Response(tile.data, media_type=tile.media_type, headers=headers)
