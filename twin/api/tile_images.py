"""PNG tiles of the vector tilesets: `/tiles/{tileset}/{z}/{x}/{y}.png` (and `@2x.png`), with a
raster TileJSON at `/tiles/{tileset}/png/tilejson.json`.

For clients that drape images rather than draw vector tiles (CesiumJS imagery layers, WMTS-style
clients): each tile is the tileset's MVT tile drawn with the MapLibre style of `styles/` whose
source is that tileset (`tiles/vector/imagery.py`). Same contract as the MVT route: ETag and
304, Cache-Control, `datetime=` and `scenario=`, problem+json for bad requests; a tile without
features is a transparent PNG (200), which image clients draw as nothing, where a 204 would be
reported by CesiumJS as a failed tile. The basemap's TileJSON lists its scale bands with their
zoom ranges, so that a client can offer one image layer per band.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse

from tiles.vector.imagery import png_tile
from tiles.vector.mapstyle import RenderStyle, render_style
from tiles.vector.service import TileResult, TileService
from tiles.vector.tilesets import BASEMAP
from twin.api.params import TimeDep
from twin.api.problems import problem_responses
from twin.api.security import RestrictedLayerGuard
from twin.api.stylebook import STYLES_DIR
from twin.api.styles import load_style, style_names
from twin.api.tiles import ScenarioParam, ServiceDep, anonymous, etag_matches, max_age, tilejson
from twin.model import Scenario
from twin.store import Store

PNG = "image/png"
PNG_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {PNG: {}}, "description": "The tile drawn as a PNG (transparent when it has no features)"},
    304: {"description": "The tile has not changed (If-None-Match)"},
    **problem_responses(400, 401, 404),
}
router = APIRouter(tags=["Vector tiles"], dependencies=[RestrictedLayerGuard])


# ----- styles --------------------------------------------------------------------------------------
def _styles_signature(directory: Path = STYLES_DIR) -> tuple[tuple[str, int], ...]:
    return tuple((p.name, p.stat().st_mtime_ns) for p in sorted(directory.glob("*.json")))


@lru_cache(maxsize=8)
def _styles(signature: tuple[tuple[str, int], ...]) -> dict[str, dict[str, Any]]:
    return {name: load_style(name) for name in style_names()}


@lru_cache(maxsize=256)
def _render_style(tileset: str, mvt_layers: tuple[str, ...], signature: tuple[tuple[str, int], ...]) -> RenderStyle:
    return render_style(tileset, _styles(signature), mvt_layers)


def style_of(service: TileService, name: str, scenario: Scenario, anonymous_request: bool) -> RenderStyle:
    """The drawing rules of a tileset (re-read when a file of `styles/` changes)."""
    tileset, _ = service.tileset(name, scenario, anonymous_request)
    return _render_style(name, tuple(sorted({m.name for m in tileset.layers})), _styles_signature())


# ----- tiles ---------------------------------------------------------------------------------------
def png_response(request: Request, result: TileResult) -> Response:
    headers = {"ETag": result.etag, "Cache-Control": f"public, max-age={max_age()}"}
    if etag_matches(request.headers.get("if-none-match"), result.etag):
        return Response(status_code=304, headers=headers)
    return Response(result.data, media_type=PNG, headers=headers)


Tileset = Annotated[str, PathParam(description="A layer id, `basemap` or `pipes`")]
Zoom = Annotated[int, PathParam(description="Zoom level")]
Column = Annotated[int, PathParam(description="Column")]
Row = Annotated[int, PathParam(description="Row, counted from the north")]


@router.api_route(
    "/tiles/{tileset}/{z}/{x}/{y}.png",
    methods=["GET", "HEAD"],
    name="vector_tile_png",
    summary="A vector tileset's tile drawn as a 256-pixel PNG with its MapLibre style",
    description=(
        "WebMercatorQuad z/x/y (XYZ scheme). The tile's MVT content drawn with the fills, lines and "
        "circles of the style in `/styles` whose source is this tileset (no labels). `basemap` shows "
        "at each zoom the scale band configured for it. A tile without features is transparent."
    ),
    response_class=Response,
    responses=PNG_RESPONSES,
)
@router.api_route(  # registered first, so that `{y}.png` never sees a `5@2x`
    "/tiles/{tileset}/{z}/{x}/{y}@2x.png",
    methods=["GET", "HEAD"],
    name="vector_tile_png_2x",
    summary="A vector tileset's tile drawn as a 512-pixel PNG (HiDPI)",
    response_class=Response,
    responses=PNG_RESPONSES,
)
def png_tile_route(
    request: Request,
    service: ServiceDep,
    tileset: Tileset,
    z: Zoom,
    x: Column,
    y: Row,
    time: TimeDep,
    scenario: ScenarioParam = Scenario.current,
) -> Response:
    scale = 2 if request.url.path.endswith("@2x.png") else 1
    who = anonymous(request)
    style = style_of(service, tileset, scenario, who)
    return png_response(request, png_tile(service, tileset, z, x, y, style, time, scenario, who, scale))


# ----- TileJSON ------------------------------------------------------------------------------------
def scale_bands(store: Store, described: dict[str, Any]) -> list[dict[str, Any]]:
    """The basemap's bands that have layers, coarse to fine: band, zoom range, layer ids."""
    layers = {layer.id: layer for layer in store.list_layers()}
    bands: dict[str, dict[str, Any]] = {}
    for mvt in described["tileset"].layers:
        for lid in mvt.layer_ids:
            band = layers[lid].scale_band if lid in layers else None
            if band is None:
                continue
            entry = bands.setdefault(band, {"band": band, "minzoom": mvt.minzoom, "maxzoom": mvt.maxzoom, "layers": []})
            entry["layers"].append(lid)
    for entry in bands.values():
        entry["layers"].sort()
    return sorted(bands.values(), key=lambda b: b["minzoom"])


@router.get(
    "/tiles/{tileset}/png/tilejson.json",
    name="vector_png_tilejson",
    summary="TileJSON 3.0.0 of a vector tileset drawn as PNG tiles (the basemap with its scale bands)",
    responses=problem_responses(400, 401, 404),
)
def png_tilejson(
    request: Request, service: ServiceDep, tileset: Tileset, time: TimeDep, scenario: ScenarioParam = Scenario.current
) -> JSONResponse:
    described = service.describe(tileset, scenario, anonymous=anonymous(request))
    description = f"{tileset!r} ({scenario.value}) drawn as PNG tiles"
    document = tilejson(request, tileset, described, description, {"": ".png", "@2x": "@2x.png"})
    document["tileSize"] = 256
    document["style"] = style_of(service, tileset, scenario, anonymous(request)).name
    if tileset == BASEMAP:
        document["scale_bands"] = scale_bands(service.store, described)
    return JSONResponse(document, headers={"Cache-Control": f"public, max-age={max_age()}"})
