"""3D Tiles endpoints, the picked feature's full record, and a minimal CesiumJS preview page.

`GET /3dtiles/{layer}/tileset.json?datetime=` answers the layer's tileset for that time (built
on first use, see `tiles.threed.build`); its content lives under `/3dtiles/{layer}/{build}/`,
named by the build digest, so it is cached forever. `GET /3dtiles/twin/tileset.json` is the
root over every 3D layer of a scenario (`?scenario=current|planned`) at a time (`?datetime=`).
`GET /features/{layer}/{fid}` is what a click in the viewer fetches: every property of the
version valid at `datetime` (default now) and the footprint in CRS84.
CesiumJS is served from the installed npm package under `/static/cesium/`, so the preview page
(`/3dtiles/preview/{layer}`) needs nothing from outside the server.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response

from tiles.threed.build import ensure_built, twin_root
from twin.api.geojson import encode_geometries, rfc3339
from twin.api.params import StoreDep, TimeDep, crs_choice
from twin.api.problems import problem_responses
from twin.api.security import RestrictedLayerGuard
from twin.api.static_files import static_file
from twin.crs import CRS84
from twin.model import InvalidInput, NotFound, Scenario

router = APIRouter(tags=["3D Tiles"], dependencies=[RestrictedLayerGuard])
REPO = Path(__file__).resolve().parents[2]
CESIUM_BUILD = REPO / "node_modules" / "cesium" / "Build" / "Cesium"
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "public, max-age=60"
BUILD_KEY = re.compile(r"^[0-9a-f]{24}$")
MEDIA_TYPES = {".glb": "model/gltf-binary", ".json": "application/json", ".subtree": "application/octet-stream"}


def _tileset_with_prefix(folder: Path, prefix: str) -> dict[str, Any]:
    """The built tileset.json with content URIs made relative to the layer's tileset URL."""
    document = json.loads((folder / "tileset.json").read_text())

    def visit(tile: dict[str, Any]) -> None:
        if "content" in tile:
            tile["content"]["uri"] = f"{prefix}/{tile['content']['uri']}"
        for child in tile.get("children", []):
            visit(child)

    visit(document["root"])
    return document


@router.get(
    "/3dtiles/twin/tileset.json",
    name="twin_tileset",
    summary="Root tileset over every 3D layer of a scenario at a time",
    responses=problem_responses(400, 404),
)
def twin_tileset(
    request: Request,
    store: StoreDep,
    time: TimeDep,
    scenario: Annotated[Scenario, Query(description="current, or planned (current plus planned layers)")] = (
        Scenario.current
    ),
) -> JSONResponse:
    kept = [(k, v) for k, v in request.query_params.multi_items() if k == "datetime"]
    query = "&".join(f"{k}={v}" for k, v in kept)
    document = twin_root(store, scenario, time, query)
    return JSONResponse(document, headers={"Cache-Control": REVALIDATE})


@router.get(
    "/3dtiles/{layer_id}/tileset.json",
    name="layer_tileset",
    summary="3D Tiles 1.1 tileset of a layer (BIM, ...), for a time with datetime=",
    responses=problem_responses(400, 404),
)
def layer_tileset(store: StoreDep, time: TimeDep, layer_id: Annotated[str, PathParam()]) -> JSONResponse:
    built = ensure_built(store, layer_id, time)
    return JSONResponse(_tileset_with_prefix(built.folder, built.key), headers={"Cache-Control": REVALIDATE})


@router.get(
    "/3dtiles/{layer_id}/{build}/{path:path}",
    name="layer_content",
    summary="Tile content (glb) of a built tileset; immutable",
    responses=problem_responses(404),
)
def layer_content(
    store: StoreDep,
    layer_id: Annotated[str, PathParam()],
    build: Annotated[str, PathParam(description="Build digest, as the tileset's content URIs give it")],
    path: Annotated[str, PathParam()],
) -> FileResponse:
    if not BUILD_KEY.match(build):
        raise NotFound(f"no tileset build {build!r} of layer {layer_id!r}")
    root = (Path(store.data_dir) / "tiles" / "3d" / layer_id / build).resolve()
    target = (root / path).resolve()
    if root not in target.parents or not target.is_file():
        raise NotFound(f"no tile content {path!r} in build {build} of layer {layer_id!r}")
    media = MEDIA_TYPES.get(target.suffix, "application/octet-stream")
    return FileResponse(target, media_type=media, headers={"Cache-Control": IMMUTABLE})


@router.get(
    "/features/{layer_id}/{fid}",
    name="picked_feature",
    summary="Full record of a picked feature (all properties, times, footprint in CRS84)",
    responses=problem_responses(400, 404),
)
def picked_feature(
    store: StoreDep, time: TimeDep, layer_id: Annotated[str, PathParam()], fid: Annotated[str, PathParam()]
) -> Response:
    layer = store.get_layer(layer_id)
    feature = store.get_feature(layer_id, fid, time)
    geometry = encode_geometries([feature.geometry], store.crs, crs_choice(CRS84))[0]
    body = {
        "layer": layer.id,
        "kind": layer.kind.value,
        "id": feature.fid,
        "version": feature.version,
        "valid_from": rfc3339(feature.valid_from),
        "valid_to": rfc3339(feature.valid_to),
        "properties": feature.properties,
    }
    text = json.dumps(body, ensure_ascii=False, default=str)
    text = f'{text[:-1]},"geometry":{geometry or "null"}}}'
    return Response(text.encode("utf-8"), media_type="application/json")


@router.get("/static/cesium/{path:path}", name="cesium", include_in_schema=False)
def cesium_file(request: Request, path: Annotated[str, PathParam()]) -> Response:
    """CesiumJS from the npm package (`npm install`), so no page needs a CDN."""
    root = CESIUM_BUILD.resolve()
    target = (root / path).resolve()
    if not root.is_dir():
        raise NotFound("CesiumJS is not installed: run `npm install` (make install) in the repository")
    if root not in target.parents or not target.is_file():
        raise NotFound(f"no CesiumJS file {path!r}")
    return static_file(request, target, "public, max-age=86400")


@lru_cache(maxsize=1)
def _preview_template() -> str:
    return (Path(__file__).with_name("threed_preview.html")).read_text(encoding="utf-8")


@router.get(
    "/3dtiles/preview/{layer_id}",
    name="tileset_preview",
    summary="Minimal CesiumJS page showing one layer's tileset ('twin' for the root)",
    response_class=HTMLResponse,
)
def preview(
    store: StoreDep,
    layer_id: Annotated[str, PathParam()],
    datetime: Annotated[str | None, Query(description="Time to show (RFC 3339)")] = None,
    scenario: Annotated[Scenario, Query()] = Scenario.current,
) -> HTMLResponse:
    if layer_id != "twin":
        store.get_layer(layer_id)
    params = [f"datetime={datetime}"] if datetime else []
    if layer_id == "twin":
        params.append(f"scenario={scenario.value}")
    url = f"../{layer_id}/tileset.json" + (f"?{'&'.join(params)}" if params else "")
    if any(c in url for c in "<>\"'"):
        raise InvalidInput("invalid characters in the preview parameters")
    return HTMLResponse(_preview_template().replace("{{TILESET_URL}}", url))
