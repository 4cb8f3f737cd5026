"""Raster layers (orthophotos, DEMs, flood depths) served by titiler.core's mounted factories.

`/raster/{layer_id}/...` is titiler's `TilerFactory` (tiles, TileJSON, point, info, statistics,
previews) plus the WMTS extension, with the dataset path taken from the twin: the path
dependency maps the layer id to its COG asset (the version valid at `datetime=` when given).
Colour is chosen per request (`colormap_name=`, `colormap=`, `rescale=`, `algorithm=hillshade`),
so a DEM, a flood-depth result and an orthophoto use the same endpoints. rio-tiler's errors and
bad tile indexes become problem+json answers like every other error of the API.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any

import morecantile
import numpy as np
from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.routing import APIRoute
from rasterio.errors import RasterioIOError
from rio_tiler import errors as rt
from rio_tiler.colormap import cmap as default_colormaps
from rio_tiler.io import BaseReader
from starlette.exceptions import HTTPException as StarletteHTTPException
from titiler.core.dependencies import create_colormap_dependency
from titiler.core.errors import BadRequestError, TileNotFoundError
from titiler.core.factory import TilerFactory
from titiler.extensions import wmtsExtension

from ingestion.raster import COVERAGE_FID
from twin.api.params import StoreDep
from twin.api.raster_cache import cached_tile, keep_tile, tile_key
from twin.api.security import RestrictedLayerGuard
from twin.model import InvalidInput, Layer, NotFound, TimeFilter
from twin.store import Store

PREFIX = "/raster/{layer_id}"
TILE_MATRIX_SETS = morecantile.TileMatrixSets(
    {name: morecantile.tms.get(name) for name in ("WebMercatorQuad", "WorldCRS84Quad")}
)

# rio-tiler's and titiler's errors as the HTTP status they mean (titiler's own table maps a
# point outside the raster to 500; here it is a 404 like a tile outside it).
ERROR_STATUS: dict[type[Exception], int] = {
    rt.TileOutsideBounds: 404,
    rt.PointOutsideBounds: 404,
    TileNotFoundError: 404,
    rt.InvalidBandName: 400,
    rt.InvalidExpression: 400,
    rt.InvalidFormat: 400,
    rt.InvalidColorFormat: 400,
    rt.InvalidColorMapName: 400,
    rt.InvalidBufferSize: 400,
    rt.MissingBands: 400,
    rt.InvalidBounds: 400,
    rt.MaxArraySizeError: 400,
    BadRequestError: 400,
}


def _flood_depth_colormap() -> dict[int, tuple[int, int, int, int]]:
    """Water depth, 0 (transparent) to deep blue: light cyan at shallow ponding, navy above ~1 m.

    Register name `flood_depth`; use with `rescale=0,1` (metres) so that 255 is one metre.
    """
    stops = np.array([[0, 200, 240, 255, 0], [1, 160, 220, 250, 150], [64, 70, 160, 230, 200], [255, 8, 40, 120, 235]])
    positions = np.arange(256)
    channels = [np.interp(positions, stops[:, 0], stops[:, c]).round().astype(int) for c in range(1, 5)]
    return {i: tuple(int(channel[i]) for channel in channels) for i in positions}


COLORMAPS = default_colormaps.register({"flood_depth": _flood_depth_colormap()})


def raster_asset(layer: Layer, store: Store, when: str | None = None) -> str:
    """The COG asset key of the layer, or of the survey valid at the instant `when` (RFC 3339)."""
    raster = layer.metadata.get("raster")
    if not isinstance(raster, dict) or "asset" not in raster:
        raise NotFound(f"layer {layer.id!r} is a {layer.kind.value} layer with no raster: /raster serves raster layers")
    instant = TimeFilter.parse(when)
    if instant is None:
        return raster["asset"]
    if not instant.instant:
        raise InvalidInput(f"datetime {when!r} for a raster must be one instant: an interval may hold several surveys")
    try:
        return store.get_feature(layer.id, COVERAGE_FID, instant).properties["asset"]
    except NotFound:
        raise NotFound(f"layer {layer.id!r} has no raster valid at {when}") from None


class CogPath(str):
    """A COG's local path that remembers the layer it belongs to (for WMTS layer names)."""

    layer_id: str = "raster"


def cog_path(
    store: StoreDep,
    layer_id: Annotated[str, Path(description="Raster layer id (kind raster or terrain), as listed by /collections")],
    when: Annotated[
        str | None,
        Query(alias="datetime", description="RFC 3339 instant: serve the survey valid then (default: the current one)"),
    ] = None,
) -> CogPath:
    """titiler's path dependency: the layer id in the URL becomes the local path of its COG."""
    layer = store.get_layer(layer_id)
    key = raster_asset(layer, store, when)
    path = CogPath(store.assets.open_path(key))
    path.layer_id = layer.id
    return path


def check_tile_index(request: Request) -> None:
    """Zoom and column/row inside the tile matrix set, before any file is opened (400/404)."""
    params = request.path_params
    if "z" not in params or params.get("tileMatrixSetId") not in TILE_MATRIX_SETS.list():
        return
    tms = TILE_MATRIX_SETS.get(params["tileMatrixSetId"])
    try:
        z, x, y = (int(params[name]) for name in ("z", "x", "y"))
    except ValueError:
        raise InvalidInput(f"tile {params['z']}/{params['x']}/{params['y']}: z, x and y must be integers") from None
    if not tms.minzoom <= z <= tms.maxzoom:
        raise InvalidInput(f"zoom {z} is outside {tms.id}'s zoom levels {tms.minzoom} to {tms.maxzoom}")
    matrix = tms.matrix(z)
    if not (0 <= x < matrix.matrixWidth and 0 <= y < matrix.matrixHeight):
        raise NotFound(
            f"tile {z}/{x}/{y} is outside {tms.id}'s matrix at zoom {z} "
            f"({matrix.matrixWidth} columns, {matrix.matrixHeight} rows)"
        )


def elevation_renders(reader: BaseReader) -> dict[str, dict[str, Any]]:
    """Named renders for one-band elevation-like rasters: hillshade and a terrain colour ramp.

    They appear in TileJSON (`raster_layers`) and as WMTS layers; the query string of each is
    what a client appends to a tile URL.
    """
    dataset = reader.dataset
    if dataset.count != 1 or not np.issubdtype(np.dtype(dataset.dtypes[0]), np.floating):
        return {}
    sample = dataset.read(1, out_shape=(min(dataset.height, 256), min(dataset.width, 256)), masked=True)
    if sample.count() == 0:
        return {}
    low, high = float(sample.min()), float(sample.max())
    return {
        "hillshade": {"algorithm": "hillshade", "buffer": 3},
        "terrain": {"colormap_name": "terrain", "rescale": [f"{low:g},{high:g}"]},
    }


class RasterRoute(APIRoute):
    """Turns rio-tiler's errors into HTTP errors, which the app answers as problem+json."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            key = tile_key(request)
            if key is not None and (hit := cached_tile(request, key)) is not None:
                return hit
            try:
                response = await handler(request)
                return response if key is None else keep_tile(request, key, response)
            except tuple(ERROR_STATUS) as exc:
                status = next(code for kind, code in ERROR_STATUS.items() if isinstance(exc, kind))
                raise StarletteHTTPException(status, str(exc)) from exc
            except RasterioIOError as exc:
                raise StarletteHTTPException(500, "the raster file of this layer cannot be read") from exc

        return route


def _factory() -> TilerFactory:
    return TilerFactory(
        router=APIRouter(route_class=RasterRoute),
        router_prefix=PREFIX,
        path_dependency=cog_path,
        colormap_dependency=create_colormap_dependency(COLORMAPS),
        supported_tms=TILE_MATRIX_SETS,
        get_renders=elevation_renders,
        extensions=[wmtsExtension(layer_identifier_provider=lambda path: getattr(path, "layer_id", "raster"))],
        add_viewer=False,
        add_part=False,
        name="raster",
    )


factory = _factory()
router = APIRouter(prefix=PREFIX, tags=["Raster tiles"], dependencies=[RestrictedLayerGuard, Depends(check_tile_index)])
router.include_router(factory.router)
