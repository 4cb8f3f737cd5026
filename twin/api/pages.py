"""The 2D map page `GET /map/` and the MapLibre GL JS files it loads from this server.

MapLibre comes from the npm package installed by `make install` (`node_modules/maplibre-gl/dist`),
served under `/static/maplibre-gl/`, so the page needs nothing from outside the server. Without
node_modules the page answers 503 saying how to install it, instead of a page that cannot load.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, Response

from twin.api.problems import problem_response, problem_responses
from twin.api.static_files import static_file
from twin.model import NotFound

router = APIRouter(tags=["Map"])
REPO = Path(__file__).resolve().parents[2]
PAGE_DIR = Path(__file__).resolve().parents[1] / "map"
FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,100}$")
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".map": "application/json",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}


def maplibre_dist() -> Path:
    """Where the MapLibre GL JS build is: `$TWIN_NODE_MODULES` or the repository's node_modules."""
    node_modules = Path(os.environ.get("TWIN_NODE_MODULES", REPO / "node_modules"))
    return node_modules / "maplibre-gl" / "dist"


def _file(request: Request, directory: Path, name: str, what: str) -> Response:
    """A file directly inside `directory` with a known type; NotFound for anything else."""
    path = directory / name
    media_type = MEDIA_TYPES.get(path.suffix)
    if not FILE_NAME.match(name) or media_type is None or not path.is_file():
        raise NotFound(f"no {what} file {name!r}")
    return static_file(request, path, "no-cache", media_type)


def _missing_maplibre(request: Request) -> Response | None:
    if (maplibre_dist() / "maplibre-gl.mjs").is_file():
        return None
    return problem_response(
        503,
        f"MapLibre GL JS is not installed ({maplibre_dist()} is missing): run `make install` "
        "(it runs `npm install`) in the repository, then reload",
        instance=request.url.path,
    )


@router.get(
    "/map/",
    name="map",
    summary="2D map (MapLibre GL JS): basemap, orthophoto, pipes",
    response_class=FileResponse,
    responses=problem_responses(503),
)
def map_page(request: Request) -> Response:
    return _missing_maplibre(request) or _file(request, PAGE_DIR, "index.html", "map page")


@router.get("/map/{name}", name="map_asset", summary="Scripts and styles of the map page", include_in_schema=False)
def map_asset(request: Request, name: Annotated[str, PathParam()]) -> Response:
    return _file(request, PAGE_DIR, name, "map page")


@router.get(
    "/static/maplibre-gl/{name}",
    name="maplibre",
    summary="MapLibre GL JS, served from the installed npm package",
    include_in_schema=False,
)
def maplibre_file(request: Request, name: Annotated[str, PathParam()]) -> Response:
    return _missing_maplibre(request) or _file(request, maplibre_dist(), name, "MapLibre GL JS")
