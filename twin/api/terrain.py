"""Quantized-mesh terrain for CesiumJS: `GET /terrain/layer.json`, `GET /terrain/{z}/{x}/{y}.terrain`.

`new Cesium.CesiumTerrainProvider.fromUrl('/terrain/', {requestVertexNormals: true})` reads
layer.json, then asks for tiles with `Accept: application/vnd.quantized-mesh;extensions=
octvertexnormals`; the normals are added when the Accept header lists them. Tiles are
gzip-compressed for clients that accept it, with strong ETags; a tile URL carrying the current
`v=` version may be cached for a year, since a new DEM or geoid setting changes the version.
"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response
from fastapi.responses import JSONResponse

from tiles.terrain import EncodedTile, TerrainSource, TileId, find_dem_layer
from twin.api.params import StoreDep
from twin.api.problems import problem_responses
from twin.api.security import CHALLENGE, authenticate, is_restricted, key_store
from twin.store import Store

router = APIRouter(prefix="/terrain", tags=["Terrain"])
MEDIA_TYPE = "application/vnd.quantized-mesh"
NORMALS = "octvertexnormals"
RECHECK_SECONDS = 1.0  # how long a source is trusted before the store's layer versions are read again


def _source_key(store: Store) -> tuple:
    layer = find_dem_layer(store)
    dem = (layer.id, layer.version, layer.metadata["raster"]["asset"]) if layer else None
    return dem, store.get_meta("geoid_offset"), store.get_meta("geoid_grid")


def terrain_source(request: Request, store: StoreDep) -> TerrainSource:
    """The terrain of the app's store, rebuilt when the DEM layer or the geoid setting changes."""
    state = request.app.state
    cached = getattr(state, "terrain_source", None)
    now = time.monotonic()
    if cached is not None and now - cached[2] < RECHECK_SECONDS:
        return cached[1]
    key = _source_key(store)
    source = cached[1] if cached is not None and cached[0] == key else TerrainSource.from_store(store)
    state.terrain_source = (key, source, now)
    return source


def readable_terrain(request: Request, terrain: Annotated[TerrainSource, Depends(terrain_source)]) -> TerrainSource:
    """401 for an anonymous request when the DEM layer is restricted, as for the layer itself."""
    layer = terrain.layer
    if layer is not None and is_restricted(layer) and authenticate(key_store(request), request.scope) is None:
        detail = f"the terrain comes from the restricted layer {layer.id!r}: send an API key to read it"
        raise HTTPException(401, detail, headers=CHALLENGE)
    return terrain


TerrainDep = Annotated[TerrainSource, Depends(readable_terrain)]


def wants_normals(accept: str | None) -> bool:
    """Whether the Accept header asks for quantized-mesh with the oct-encoded normals extension."""
    for part in (accept or "").split(","):
        media, *parameters = (piece.strip() for piece in part.split(";"))
        if media.lower() != MEDIA_TYPE:
            continue
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "extensions" and NORMALS in value.strip().strip('"').split("-"):
                return True
    return False


def _not_modified(request: Request, etag: str) -> bool:
    tags = request.headers.get("if-none-match", "")
    return any(tag.strip() in (etag, "*") for tag in tags.split(","))


@router.get("/layer.json", responses=problem_responses(401))
def layer_json(request: Request, terrain: TerrainDep) -> Response:
    """Cesium's terrain layer description: tile template, zoom range and availability."""
    body = terrain.layer_json()
    etag = f'"{body["version"]}"'
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if _not_modified(request, etag):
        return Response(status_code=304, headers=headers)
    return JSONResponse(body, headers=headers)


@router.get(
    "/{z}/{x}/{y}.terrain",
    response_class=Response,
    responses={200: {"content": {MEDIA_TYPE: {}}}, **problem_responses(400, 401, 404)},
)
def terrain_tile(
    request: Request,
    terrain: TerrainDep,
    z: Annotated[int, Path(description="Zoom level (0: two tiles, west and east hemispheres)")],
    x: Annotated[int, Path(description="Column, 0 at 180W")],
    y: Annotated[int, Path(description="Row in the TMS convention, 0 at 90S")],
    v: Annotated[str | None, Query(description="Version from layer.json; lets caches keep the tile")] = None,
) -> Response:
    """A quantized-mesh-1.0 tile; the geoid surface where the twin has no DEM."""
    tile = TileId(z, x, y)
    terrain.check(tile)
    normals = wants_normals(request.headers.get("accept"))
    encoded: EncodedTile = terrain.tile(tile, normals=normals)
    compressed = "gzip" in request.headers.get("accept-encoding", "").lower()
    etag = encoded.gzip_etag if compressed else encoded.etag
    current = v is not None and v == terrain.tile_version
    headers = {
        "ETag": etag,
        "Vary": "Accept, Accept-Encoding",
        "Cache-Control": "public, max-age=31536000, immutable" if current else "public, max-age=60",
    }
    if _not_modified(request, etag):
        return Response(status_code=304, headers=headers)
    if compressed:
        headers["Content-Encoding"] = "gzip"
    media_type = f"{MEDIA_TYPE};extensions={NORMALS}" if normals else MEDIA_TYPE
    return Response(encoded.gzipped if compressed else encoded.raw, media_type=media_type, headers=headers)
