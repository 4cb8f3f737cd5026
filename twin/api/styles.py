"""MapLibre styles from `styles/`, pointed at this server: `GET /styles`, `GET /styles/{name}.json`.

The files keep server-relative URLs; each answer makes them absolute from the request's base URL
(so the same style works behind any host name or proxy prefix), resolves `{orthophoto}` to the
twin's orthophoto layer, and leaves out sources the twin cannot serve (a raster or tileset that
is not there) with the layers drawing from them, so that a client never requests a missing tile.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse

from twin.api.params import StoreDep
from twin.api.problems import problem_responses
from twin.api.stylebook import STYLES_DIR
from twin.model import Layer, LayerKind, NotFound
from twin.store import Store

router = APIRouter(tags=["Styles"])
STYLE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
COMPOSITE_TILESETS = frozenset({"basemap", "pipes"})
TILESET_URL = re.compile(r"^/tiles/([^/]+)/")
RASTER_URL = re.compile(r"^/raster/([^/]+)/")


@lru_cache(maxsize=64)
def _read_style(path: Path, mtime_ns: int) -> dict[str, Any] | None:
    """The style in `path` (cached per modification time), or None when it is not a MapLibre style."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(document, dict) or document.get("version") != 8 or "layers" not in document:
        return None
    return document


def load_style(name: str, directory: Path = STYLES_DIR) -> dict[str, Any]:
    """A fresh copy of the style `name` from `directory`; NotFound when there is none."""
    path = directory / f"{name}.json"
    style = _read_style(path, path.stat().st_mtime_ns) if STYLE_NAME.match(name) and path.is_file() else None
    if style is None:
        raise NotFound(f"no style {name!r}: see /styles for the styles this server has")
    return json.loads(json.dumps(style))


def style_names(directory: Path = STYLES_DIR) -> list[str]:
    """Names of the MapLibre styles in `directory` (other JSON files there are not styles)."""
    names = []
    for path in sorted(directory.glob("*.json")):
        if STYLE_NAME.match(path.stem) and _read_style(path, path.stat().st_mtime_ns) is not None:
            names.append(path.stem)
    return names


def orthophoto_layer(layers: list[Layer]) -> Layer | None:
    """The orthophoto: a raster layer with the role `orthophoto`, else the first colour raster."""
    rasters = [layer for layer in layers if layer.kind == LayerKind.raster and "raster" in layer.metadata]
    for layer in rasters:
        if layer.metadata["raster"].get("role") == "orthophoto":
            return layer
    return next((layer for layer in rasters if layer.metadata["raster"].get("count", 0) >= 3), None)


def _servable(url: str, layer_ids: set[str]) -> bool:
    """Whether a server-relative source URL names something this twin has."""
    if match := TILESET_URL.match(url):
        return match.group(1) in layer_ids or match.group(1) in COMPOSITE_TILESETS
    if match := RASTER_URL.match(url):
        return match.group(1) in layer_ids
    return True


def resolve_style(style: dict[str, Any], base_url: str, store: Store) -> dict[str, Any]:
    """Absolute URLs on `base_url`, placeholders resolved, unservable sources and their layers removed."""
    layers = store.list_layers()
    ortho = orthophoto_layer(layers)
    placeholders = {"{orthophoto}": ortho.id if ortho else None}
    layer_ids = {layer.id for layer in layers}

    def resolve(url: str) -> str | None:
        for placeholder, value in placeholders.items():
            if placeholder in url:
                if value is None:
                    return None
                url = url.replace(placeholder, value)
        if not url.startswith("/"):
            return url
        return base_url + url if _servable(url, layer_ids) else None

    kept: dict[str, Any] = {}
    for name, source in style.get("sources", {}).items():
        urls = [source["url"]] if "url" in source else list(source.get("tiles", []))
        resolved = [resolve(url) for url in urls]
        if any(url is None for url in resolved):
            continue
        if "url" in source:
            source["url"] = resolved[0]
        elif "tiles" in source:
            source["tiles"] = resolved
        kept[name] = source
    style["sources"] = kept
    style["layers"] = [layer for layer in style["layers"] if layer.get("source") in (None, *kept)]
    for key in ("glyphs", "sprite"):
        value = style.get(key)
        if isinstance(value, str) and value.startswith("/"):
            style[key] = base_url + value
    return style


def base_url(request: Request) -> str:
    """Scheme, host and mount prefix of this server, without a trailing slash."""
    return str(request.base_url).rstrip("/")


@router.get("/styles", name="styles", summary="The MapLibre styles of this server")
def list_styles(request: Request) -> JSONResponse:
    root = base_url(request)
    styles = [
        {"id": name, "title": load_style(name).get("name", name), "href": f"{root}/styles/{name}.json"}
        for name in style_names()
    ]
    return JSONResponse({"styles": styles})


@router.get(
    "/styles/{name}.json",
    name="style",
    summary="A MapLibre style whose sources point at this server",
    responses=problem_responses(404),
)
def get_style(
    request: Request,
    store: StoreDep,
    name: Annotated[str, PathParam(description="Style name, as listed by /styles (e.g. basemap, pipes)")],
) -> JSONResponse:
    style = resolve_style(load_style(name), base_url(request), store)
    return JSONResponse(style, headers={"Cache-Control": "no-cache"})
