"""The planners' 3D viewer `GET /viewer/` (CesiumJS) and the page's own scripts and styles.

CesiumJS itself is served by the 3D Tiles router under `/static/cesium/` from the npm package
installed by `make install`; without it the page answers 503 saying how to install it, instead of
a page that cannot load. Terrain, imagery, tiles and analyses all come from this server.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, RedirectResponse, Response

from twin.api.pages import _file
from twin.api.problems import problem_response, problem_responses
from twin.api.threed import CESIUM_BUILD

router = APIRouter(tags=["Viewer"])
VIEWER_DIR = Path(__file__).resolve().parents[1] / "viewer"


def _missing_cesium(request: Request) -> Response | None:
    if (CESIUM_BUILD / "Cesium.js").is_file():
        return None
    return problem_response(
        503,
        f"CesiumJS is not installed ({CESIUM_BUILD} is missing): run `make install` "
        "(it runs `npm install`) in the repository, then reload",
        instance=request.url.path,
    )


@router.get("/viewer", include_in_schema=False)
def viewer_redirect() -> RedirectResponse:
    """The page's relative URLs need the trailing slash."""
    return RedirectResponse("/viewer/", status_code=308)


@router.get(
    "/viewer/",
    name="viewer",
    summary="3D viewer (CesiumJS): terrain, orthophoto, the twin's 3D Tiles, picking, burst analysis",
    response_class=FileResponse,
    responses=problem_responses(503),
)
def viewer_page(request: Request) -> Response:
    return _missing_cesium(request) or _file(request, VIEWER_DIR, "index.html", "viewer")


@router.get("/viewer/{name}", name="viewer_asset", summary="Scripts and styles of the viewer", include_in_schema=False)
def viewer_asset(request: Request, name: Annotated[str, PathParam()]) -> Response:
    return _file(request, VIEWER_DIR, name, "viewer")
