"""Vector tiles over HTTP: `/tiles/{tileset}/{z}/{x}/{y}.mvt` with TileJSON, and OGC API Tiles.

Tilesets are layer ids, `basemap` (the scale-aware composite) and `pipes` (every pipe network);
see `tiles/vector/tilesets.py`. Tiles are gzip-compressed when the client accepts it, carry a
strong ETag (304 on If-None-Match) and Cache-Control, and an empty tile is a 204.

Cached tiles of anonymous requests are answered by `CachedTileMiddleware` before routing, so
a warm tile costs a dictionary look-up; everything else (misses, keys, errors) goes through the
router below, which builds, caches and explains.
"""

from __future__ import annotations

import functools
import gzip
import itertools
import logging
import os
import re
import threading
import time
import uuid
from typing import Annotated, Any
from urllib.parse import parse_qsl, urlencode

from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from tiles.vector.service import TileResult, TileService
from tiles.vector.tms import TILE_MATRIX_SET, matrix_set, mercator_bounds, tile_range
from twin import metrics
from twin.api import links as ln
from twin.api.ops import CLIENT_ID
from twin.api.params import LayerDep, TimeDep, time_filter
from twin.api.problems import problem_responses
from twin.api.security import RestrictedLayerGuard, authenticate, is_restricted, key_store
from twin.crs import CRS84_URI, crs_uri
from twin.model import BBox, NotFound, Scenario, TwinError

MVT_MEDIA_TYPE = "application/vnd.mapbox-vector-tile"
TILING_SCHEME = "http://www.opengis.net/def/rel/ogc/1.0/tiling-scheme"
DEFAULT_MAX_AGE = 60
TILE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {MVT_MEDIA_TYPE: {}}, "description": "Mapbox Vector Tile 2.1 (gzip when accepted)"},
    204: {"description": "The tile is empty"},
    304: {"description": "The tile has not changed (If-None-Match)"},
    **problem_responses(400, 401, 404),
}

router = APIRouter(tags=["Vector tiles"], dependencies=[RestrictedLayerGuard])
_service_lock = threading.Lock()

ScenarioParam = Annotated[
    Scenario,
    Query(description="current, or planned: the composites then add planned layers on top of the current ones"),
]


# ----- the service and the HTTP answer --------------------------------------------------------------
def service_for(app: FastAPI) -> TileService:
    """The app's tile service, made on first use (it opens the tile cache in the data directory)."""
    service = getattr(app.state, "vector_tiles", None)
    if service is None:
        with _service_lock:
            service = getattr(app.state, "vector_tiles", None)
            if service is None:
                service = TileService(app.state.store, restricted=is_restricted)
                app.state.vector_tiles = service
    return service


def tile_service(request: Request) -> TileService:
    return service_for(request.app)


ServiceDep = Annotated[TileService, Depends(tile_service)]


def anonymous(request: Request) -> bool:
    return authenticate(key_store(request), request.scope) is None


@functools.cache
def max_age() -> int:
    """`Cache-Control: max-age` of tiles: `TWIN_TILE_MAX_AGE` seconds (default 60), read once."""
    try:
        return max(0, int(os.environ.get("TWIN_TILE_MAX_AGE", DEFAULT_MAX_AGE)))
    except ValueError:
        return DEFAULT_MAX_AGE


@functools.lru_cache(maxsize=256)
def accepts_gzip(accept_encoding: str) -> bool:
    for item in accept_encoding.split(","):
        coding, _, params = item.strip().partition(";")
        if coding.strip().lower() in ("gzip", "*"):
            return not re.search(r"q\s*=\s*0(\.0*)?\s*$", params.strip())
    return False


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """Whether If-None-Match names this tile (either of its encodings' tags, or '*')."""
    if not if_none_match:
        return False
    bare = etag.strip('"')
    for tag in if_none_match.split(","):
        tag = tag.strip().removeprefix("W/").strip('"')
        if tag in ("*", bare, f"{bare}-gzip"):
            return True
    return False


@functools.lru_cache(maxsize=65536)
def answer_headers(
    etag: str, gzip_ok: bool, status: int, length: int, vary: str = "Accept-Encoding"
) -> tuple[tuple[bytes, bytes], ...]:
    """The headers of a tile answer, made once per tile and encoding (the warm path reuses them)."""
    headers = [
        ("etag", etag[:-1] + '-gzip"' if gzip_ok else etag),
        ("cache-control", f"public, max-age={max_age()}"),
        ("vary", vary),
    ]
    if status == 200:
        headers.append(("content-type", MVT_MEDIA_TYPE))
        if gzip_ok:
            headers.append(("content-encoding", "gzip"))
    if status != 304:
        headers.append(("content-length", str(length)))
    return tuple((k.encode("latin-1"), v.encode("latin-1")) for k, v in headers)


def tile_answer(
    result: TileResult, accept_encoding: str, if_none_match: str | None, vary: str = "Accept-Encoding"
) -> tuple[int, tuple[tuple[bytes, bytes], ...], bytes]:
    """Status, raw headers and body of a tile: 304, 204, or the tile gzip-encoded when accepted."""
    gzip_ok = "gzip" in accept_encoding and accepts_gzip(accept_encoding)
    if if_none_match and etag_matches(if_none_match, result.etag):
        status, body = 304, b""
    elif result.empty:
        status, body = 204, b""
    else:
        status, body = 200, result.data if gzip_ok else gzip.decompress(result.data)
    return status, answer_headers(result.etag, gzip_ok, status, len(body), vary), body


def tile_response(request: Request, result: TileResult) -> Response:
    metrics.TILE_CACHE.inc(result="miss" if result.built else "hit")
    status, headers, body = tile_answer(
        result, request.headers.get("accept-encoding", ""), request.headers.get("if-none-match")
    )
    response = Response(body, status_code=status)
    response.raw_headers = list(headers)
    return response


# ----- /tiles/{tileset} ----------------------------------------------------------------------------
@router.api_route(
    "/tiles/{tileset}/{z}/{x}/{y}.mvt",
    methods=["GET", "HEAD"],
    name="vector_tile",
    summary="A vector tile (MVT) of a layer, of `basemap` or of `pipes`",
    description=(
        "WebMercatorQuad z/x/y (XYZ scheme). `basemap` holds every vector layer with a scale band, one "
        "MVT layer per feature class taken from the band of this zoom; `pipes` every pipe network layer. "
        "Each feature carries its properties (scalar values) and `fid`."
    ),
    response_class=Response,
    responses=TILE_RESPONSES,
)
def vector_tile(
    request: Request,
    service: ServiceDep,
    tileset: Annotated[str, Path(description="A layer id, `basemap` or `pipes`")],
    z: Annotated[int, Path(description="Zoom level")],
    x: Annotated[int, Path(description="Column")],
    y: Annotated[int, Path(description="Row, counted from the north")],
    time: TimeDep,
    scenario: ScenarioParam = Scenario.current,
) -> Response:
    result = service.tile(tileset, z, x, y, time, scenario, anonymous=anonymous(request))
    return tile_response(request, result)


def _query_suffix(request: Request) -> str:
    kept = [(k, v) for k, v in request.query_params.multi_items() if k in ("datetime", "scenario")]
    return "?" + urlencode(kept) if kept else ""


def _center(bounds: list[float], minzoom: int, maxzoom: int) -> list[float]:
    """Middle of the bounds, at the zoom where they span about two tiles."""
    box = mercator_bounds(BBox(*bounds), "OGC:CRS84")
    zoom = minzoom
    while zoom < maxzoom:
        xmin, ymin, xmax, ymax = tile_range(box, zoom + 1)
        if max(xmax - xmin, ymax - ymin) >= 2:
            break
        zoom += 1
    return [round((bounds[0] + bounds[2]) / 2, 7), round((bounds[1] + bounds[3]) / 2, 7), zoom]


def vector_layers(described: dict[str, Any]) -> list[dict[str, Any]]:
    """TileJSON vector_layers: one per MVT layer name (a basemap class spans several bands)."""
    merged: dict[str, dict[str, Any]] = {}
    for layer in described["vector_layers"]:
        entry = merged.setdefault(layer["id"], {**layer, "fields": dict(layer["fields"])})
        entry["minzoom"] = min(entry["minzoom"], layer["minzoom"])
        entry["maxzoom"] = max(entry["maxzoom"], layer["maxzoom"])
        entry["fields"] |= layer["fields"]
    return list(merged.values())


@router.get(
    "/tiles/{tileset}/tilejson.json",
    name="vector_tilejson",
    summary="TileJSON 3.0.0 of a vector tileset (with vector_layers)",
    responses=problem_responses(400, 401, 404),
)
def vector_tilejson(
    request: Request, service: ServiceDep, tileset: str, time: TimeDep, scenario: ScenarioParam = Scenario.current
) -> JSONResponse:
    described = service.describe(tileset, scenario, anonymous=anonymous(request))
    document = tilejson(request, tileset, described, f"Vector tiles of {tileset!r} ({scenario.value})", {"": ".mvt"})
    document["vector_layers"] = vector_layers(described)
    return JSONResponse(document, headers={"Cache-Control": f"public, max-age={max_age()}"})


def tilejson(
    request: Request, name: str, described: dict[str, Any], description: str, endings: dict[str, str]
) -> dict[str, Any]:
    """The TileJSON 3.0 fields every tile format of a tileset shares; `endings` maps a suffix of
    the `tiles` key (`""`, `"@2x"`) to the end of its URL template (`.mvt`, `@2x.png`)."""
    found = described["tileset"]
    bounds = described["bounds"] or [-180.0, -85.0511287798066, 180.0, 85.0511287798066]
    query = _query_suffix(request)
    document: dict[str, Any] = {"tilejson": "3.0.0", "name": name, "description": description}
    document |= {"version": "1.0.0", "scheme": "xyz"}
    for key, ending in endings.items():
        document[f"tiles{key}"] = [ln.app_url(request, f"/tiles/{name}/{{z}}/{{x}}/{{y}}{ending}") + query]
    document |= {"minzoom": found.minzoom, "maxzoom": found.maxzoom, "bounds": [round(v, 7) for v in bounds]}
    document["center"] = _center(bounds, found.minzoom, found.maxzoom)
    return document


# ----- OGC API Tiles -------------------------------------------------------------------------------
def _check_matrix_set(tile_matrix_set_id: str) -> None:
    if tile_matrix_set_id != TILE_MATRIX_SET:
        raise NotFound(f"no tile matrix set {tile_matrix_set_id!r}: this server offers {TILE_MATRIX_SET}")


def _matrix_set_link(request: Request, rel: str) -> dict[str, Any]:
    href = ln.url_for(request, "tile_matrix_set", tile_matrix_set_id=TILE_MATRIX_SET)
    return ln.link(href, rel, ln.JSON, "WebMercatorQuad tile matrix set")


@router.get("/tileMatrixSets", name="tile_matrix_sets", summary="Tile matrix sets offered (OGC API Tiles)")
def tile_matrix_sets(request: Request) -> JSONResponse:
    tms = matrix_set()
    entry = {"id": tms.id, "title": tms.title, "uri": str(tms.uri), "links": [_matrix_set_link(request, "self")]}
    return JSONResponse({"tileMatrixSets": [entry], "links": [ln.link(str(request.url), "self", ln.JSON)]})


@router.get(
    "/tileMatrixSets/{tile_matrix_set_id}",
    name="tile_matrix_set",
    summary="A tile matrix set (OGC Two Dimensional Tile Matrix Set 2.0)",
    responses=problem_responses(404),
)
def tile_matrix_set(tile_matrix_set_id: str) -> JSONResponse:
    _check_matrix_set(tile_matrix_set_id)
    return JSONResponse(matrix_set().model_dump(mode="json", exclude_none=True))


def _tileset_links(request: Request, collection_id: str) -> list[dict[str, Any]]:
    metadata = ln.url_for(
        request, "collection_tileset", collection_id=collection_id, tile_matrix_set_id=TILE_MATRIX_SET
    )
    template = metadata + "/{tileMatrix}/{tileRow}/{tileCol}"
    item = ln.link(template, "item", MVT_MEDIA_TYPE, "Vector tiles")
    item["templated"] = True
    return [ln.link(metadata, "self", ln.JSON, "Tileset metadata"), _matrix_set_link(request, TILING_SCHEME), item]


def _tileset_summary(request: Request, collection_id: str, title: str) -> dict[str, Any]:
    return {
        "title": title,
        "dataType": "vector",
        "crs": crs_uri("EPSG:3857"),
        "tileMatrixSetURI": str(matrix_set().uri),
        "links": _tileset_links(request, collection_id),
    }


@router.get(
    "/collections/{collection_id}/tiles",
    name="collection_tilesets",
    summary="The vector tilesets of a collection (OGC API Tiles)",
    responses=problem_responses(401, 404),
)
def collection_tilesets(request: Request, layer: LayerDep) -> JSONResponse:
    document = {
        "links": [ln.link(str(request.url), "self", ln.JSON)],
        "tilesets": [_tileset_summary(request, layer.id, f"{layer.title} (vector tiles)")],
    }
    return JSONResponse(document)


def _limits(bounds: list[float] | None, minzoom: int, maxzoom: int) -> list[dict[str, Any]]:
    if bounds is None:
        return []
    box = mercator_bounds(BBox(*bounds), "OGC:CRS84")
    limits = []
    for z in range(minzoom, maxzoom + 1):
        xmin, ymin, xmax, ymax = tile_range(box, z)
        limits.append(
            {"tileMatrix": str(z), "minTileRow": ymin, "maxTileRow": ymax, "minTileCol": xmin, "maxTileCol": xmax}
        )
    return limits


@router.get(
    "/collections/{collection_id}/tiles/{tile_matrix_set_id}",
    name="collection_tileset",
    summary="Metadata of a collection's vector tileset (OGC API Tiles)",
    responses=problem_responses(401, 404),
)
def collection_tileset(request: Request, service: ServiceDep, layer: LayerDep, tile_matrix_set_id: str) -> JSONResponse:
    _check_matrix_set(tile_matrix_set_id)
    described = service.describe(layer.id, anonymous=anonymous(request))
    found = described["tileset"]
    document: dict[str, Any] = {
        **_tileset_summary(request, layer.id, f"{layer.title} (vector tiles)"),
        "tileMatrixSetLimits": _limits(described["bounds"], found.minzoom, found.maxzoom),
        "layers": [
            {
                "id": entry["id"],
                "dataType": "vector",
                "minTileMatrix": str(entry["minzoom"]),
                "maxTileMatrix": str(entry["maxzoom"]),
                "propertiesSchema": {
                    "type": "object",
                    "properties": {name: {"type": kind.lower()} for name, kind in entry["fields"].items()},
                },
            }
            for entry in vector_layers(described)
        ],
    }
    if described["bounds"] is not None:
        b = described["bounds"]
        document["boundingBox"] = {"lowerLeft": b[:2], "upperRight": b[2:], "crs": CRS84_URI}
    return JSONResponse(document)


@router.api_route(
    "/collections/{collection_id}/tiles/{tile_matrix_set_id}/{tile_matrix}/{tile_row}/{tile_col}",
    methods=["GET", "HEAD"],
    name="collection_tile",
    summary="A vector tile of a collection (OGC API Tiles: row before column)",
    response_class=Response,
    responses=TILE_RESPONSES,
)
def collection_tile(
    request: Request,
    service: ServiceDep,
    layer: LayerDep,
    tile_matrix_set_id: str,
    tile_matrix: Annotated[int, Path(description="Zoom level")],
    tile_row: Annotated[int, Path(description="Row (y), counted from the north")],
    tile_col: Annotated[int, Path(description="Column (x)")],
    time: TimeDep,
) -> Response:
    _check_matrix_set(tile_matrix_set_id)
    result = service.tile(layer.id, tile_matrix, tile_col, tile_row, time, anonymous=anonymous(request))
    return tile_response(request, result)


# ----- cached tiles before routing -----------------------------------------------------------------
TILE_PATH = re.compile(r"^/tiles/([a-z][a-z0-9_]{0,62})/(\d{1,2})/(\d{1,9})/(\d{1,9})\.mvt$")
SCENARIOS = {s.value: s for s in Scenario}
TILE_ROUTE = "/tiles/{tileset}/{z}/{x}/{y}.mvt"
access_log = logging.getLogger("twin.access")
_REQUEST_IDS = itertools.count()
_REQUEST_ID_PREFIX = uuid.uuid4().hex[:16]


def request_id(given: str) -> str:
    """The caller's X-Request-ID when plain, else a new one (unique: a per-process prefix and a count)."""
    return given if given and CLIENT_ID.match(given) else f"{_REQUEST_ID_PREFIX}{next(_REQUEST_IDS):016x}"


class _RouteLabel:
    """What the metrics middleware reads from `scope['route']`: the route's path template."""

    path = TILE_ROUTE


class CachedTileMiddleware:
    """Answer GET requests for cached tiles without routing; anything else goes on unchanged.

    Only anonymous requests take this path (a key may see more layers, and is checked by the
    router), and only tiles already in memory or in the tile cache: misses, bad requests and
    restricted layers fall through to the router, which builds or explains.

    Installed twice. Inside access control and CORS it skips the routing only. Outermost (the
    fast lane) it also skips the rest of the stack, doing itself what that stack would do to a
    cached tile: CORS headers (the app's own CORSMiddleware settings), a request id, the HTTP
    metrics; it stands aside, leaving the inner one to answer, whenever that would not be the
    same: reads closed to anonymous clients, a zoom outside the served range, or the access log on.
    """

    def __init__(self, app: ASGIApp, outermost: bool = False) -> None:
        self.app = app
        self.outermost = outermost
        self._cors: CORSMiddleware | bool | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        answer = None
        started = time.perf_counter()
        if scope["type"] == "http" and scope["method"] in ("GET", "HEAD"):
            match = TILE_PATH.match(scope["path"])
            if match is not None:
                answer = self._cached(scope, match)
        if answer is None:
            await self.app(scope, receive, send)
            return
        status, headers, body, given_id, origin = answer
        scope["route"] = _RouteLabel
        start = {"type": "http.response.start", "status": status, "headers": list(headers)}
        if scope["method"] == "HEAD":
            body = b""
        if not self.outermost:
            await send(start)
            await send({"type": "http.response.body", "body": body})
            return
        start["headers"].append((b"x-request-id", request_id(given_id).encode("latin-1")))
        cors = self._cors_for(scope["app"])
        if cors is not None and origin:  # without an Origin the answer already says Vary: Origin
            await cors.send(start, send=send, request_headers=Headers(scope=scope))
        else:
            await send(start)
        await send({"type": "http.response.body", "body": body})
        metrics.HTTP_REQUESTS.inc(method=scope["method"], route=TILE_ROUTE, status=str(status))
        metrics.HTTP_LATENCY.observe(time.perf_counter() - started, method=scope["method"], route=TILE_ROUTE)

    def _cors_for(self, app: FastAPI) -> CORSMiddleware | None:
        """The app's CORS middleware settings, as an instance whose `send` adds its headers."""
        if self._cors is None:
            entry = next((m for m in app.user_middleware if m.cls is CORSMiddleware), None)
            self._cors = False if entry is None else CORSMiddleware(self.app, *entry.args, **entry.kwargs)
        return self._cors or None

    def _cached(self, scope: Scope, match: re.Match) -> tuple[int, tuple, bytes, str, bool] | None:
        """(status, headers, body, given request id, has Origin) of a cached tile, or None."""
        state = scope["app"].state
        service = getattr(state, "vector_tiles", None)
        if service is None:
            return None
        name, z, x, y = match.group(1), int(match.group(2)), int(match.group(3)), int(match.group(4))
        if self.outermost:
            settings = getattr(state, "settings", None)
            if settings is None or not settings.public_read or not settings.min_zoom <= z <= settings.max_zoom:
                return None
            if access_log.isEnabledFor(logging.INFO):
                return None
        accept_encoding, if_none_match, given_id, origin = "", None, "", False
        for key, value in scope["headers"]:
            if key == b"authorization":
                return None
            if key == b"accept-encoding":
                accept_encoding = value.decode("latin-1")
            elif key == b"if-none-match":
                if_none_match = value.decode("latin-1")
            elif key == b"x-request-id":
                given_id = value.decode("latin-1")
            elif key == b"origin":
                origin = True
        when, scenario = None, Scenario.current
        query = scope["query_string"]
        for key, value in parse_qsl(query.decode("latin-1")) if query else ():
            if key == "datetime":
                when = value
            elif key == "scenario":
                scenario = SCENARIOS.get(value)
                if scenario is None:
                    return None
        try:
            result = service.cached(name, z, x, y, time_filter(when), scenario, anonymous=True)
        except TwinError:
            return None
        if result is None:
            return None
        metrics.TILE_CACHE.inc(result="hit")
        # outermost, the answer carries what CORS adds to every answer (Vary: Origin) by itself
        adds_vary = self.outermost and not origin and self._cors_for(scope["app"]) is not None
        vary = "Accept-Encoding, Origin" if adds_vary else "Accept-Encoding"
        return (*tile_answer(result, accept_encoding, if_none_match, vary), given_id, origin)


def install_tile_cache(app: FastAPI) -> None:
    """Serve cached tiles before routing; call before CORS and access control are added, so that
    both still wrap this path."""
    app.add_middleware(CachedTileMiddleware)


def install_tile_fast_lane(app: FastAPI) -> None:
    """Serve cached tiles of anonymous requests before every other middleware; call last."""
    app.add_middleware(CachedTileMiddleware, outermost=True)


__all__ = ["install_tile_cache", "install_tile_fast_lane", "router", "service_for"]
