"""Pipe-network analyses over HTTP: burst, isolation, valve segments, statistics.

The work is done by `twin.analysis.service` on the network models cached per layer version
(one `AnalysisContext` per app); this router only reads requests and writes answers. Answers are
JSON whose geometries are GeoJSON in CRS84 (or the project CRS with `crs=`), encoded in one pass.
"""

from __future__ import annotations

import json
import re
import threading
from typing import Annotated, Any

import numpy as np
import shapely
from fastapi import APIRouter, Body, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from shapely.geometry.base import BaseGeometry

from twin.analysis import service
from twin.analysis.stats import GROUPS
from twin.api.geojson import encode_geometries
from twin.api.params import BBoxDep, CrsChoice, StoreDep, choose_crs
from twin.api.problems import problem_responses

router = APIRouter(prefix="/analysis", tags=["Pipe network analyses"])
_context_lock = threading.Lock()
_PLACEHOLDER = re.compile(r'"\\u0000(\d+)\\u0000"')


def analysis_context(request: Request) -> service.AnalysisContext:
    """The app's analysis caches (network models, building index), made on first use.

    A plain function, not a dependency: the burst endpoint then costs one hop to the thread
    pool instead of one per dependency, which is a good part of a cached burst's latency.
    """
    store = request.app.state.store
    with _context_lock:
        context = getattr(request.app.state, "pipe_analysis", None)
        if context is None or context.store is not store:
            context = service.AnalysisContext(store)
            request.app.state.pipe_analysis = context
    return context


CrsQuery = Annotated[
    str | None,
    Query(description="Output CRS URI: CRS84 (default) or the project CRS, in that CRS's axis order"),
]


def _answer(request: Request, crs: str | None, work) -> Response:
    """Run `work(context)` and answer its result as JSON in the CRS asked for."""
    context = analysis_context(request)
    target = choose_crs(crs, "crs", context.store)
    text = answer_text(work(context), context.store.crs, target)
    return Response(text.encode("utf-8"), media_type="application/json")


def answer_text(answer: dict[str, Any], store_crs: str, target: CrsChoice) -> str:
    """JSON text of an answer whose shapely geometries become GeoJSON in `target` (one pass)."""
    geometries: list[BaseGeometry] = []

    def default(value: Any) -> Any:
        if isinstance(value, BaseGeometry):
            geometries.append(value)
            return f"\x00{len(geometries) - 1}\x00"
        if isinstance(value, np.generic):
            return value.item()
        raise TypeError(f"cannot encode {type(value).__name__}")

    text = json.dumps(answer, ensure_ascii=False, separators=(",", ":"), default=default)
    if not geometries:
        return text
    encoded = encode_geometries(geometries, store_crs, target)
    return _PLACEHOLDER.sub(lambda m: encoded[int(m.group(1))] or "null", text)


class BurstRequest(BaseModel):
    """A burst on a pipe, or at a point snapped to the nearest pipe."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    network: str = Field("water", description="Network name (e.g. water, gas) or its pipes layer id")
    pipe_id: str | list[str] | None = Field(None, description="The burst pipe (or pipes)")
    point: list[float] | None = Field(None, description="[lon, lat] in CRS84, snapped to the nearest pipe")
    tolerance: float = Field(service.DEFAULT_SNAP, description="Snapping distance for `point`, metres")
    failed_valves: list[str] = Field(default_factory=list, description="Valves that will not close")
    when: str | None = Field(None, alias="datetime", description="The network as it was at this instant")
    simulate: bool = Field(False, description="Add the pressure impact from a WNTR pressure-driven simulation")


class IsolationRequest(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    network: str = Field("water", description="Network name or its pipes layer id")
    closed_valves: list[str] = Field(description="Valves to close")
    when: str | None = Field(None, alias="datetime", description="The network as it was at this instant")


BURST_EXAMPLE = {"network": "water", "point": [118.785881, 32.047757], "failed_valves": []}


@router.post(
    "/burst",
    name="burst",
    summary="Pipe burst: valves to close in crew order, what is shut in and loses supply, who to notify",
    responses=problem_responses(400, 404),
)
def burst(
    request: Request,
    body: Annotated[BurstRequest, Body(openapi_examples={"demo": {"value": BURST_EXAMPLE}})],
    crs: CrsQuery = None,
) -> Response:
    return _answer(
        request,
        crs,
        lambda context: service.burst(
            context,
            body.network,
            pipe_id=body.pipe_id,
            point=body.point,
            tolerance=body.tolerance,
            failed_valves=body.failed_valves,
            when=body.when,
            simulate=body.simulate,
        ),
    )


@router.post(
    "/isolation",
    name="isolation",
    summary="Valve isolation: what loses supply when these valves are closed",
    responses=problem_responses(400, 404),
)
def isolation(request: Request, body: IsolationRequest, crs: CrsQuery = None) -> Response:
    return _answer(request, crs, lambda context: service.isolate(context, body.network, body.closed_valves, body.when))


@router.get(
    "/segments",
    name="segments",
    summary="Valve-bounded segments of a network and the criticality of each valve",
    responses=problem_responses(400, 404),
)
def segments(
    request: Request,
    network: Annotated[str, Query(description="Network name (e.g. water) or its pipes layer id")] = "water",
    members: Annotated[bool, Query(description="List the node and pipe ids of every segment")] = False,
    geometry: Annotated[bool, Query(description="Add every segment's pipes as a MultiLineString")] = False,
    when: Annotated[str | None, Query(alias="datetime", description="The network at this instant")] = None,
    crs: CrsQuery = None,
) -> Response:
    return _answer(
        request, crs, lambda context: service.segments(context, network, members=members, geometry=geometry, when=when)
    )


def _polygon(text: str | None, crs: CrsChoice) -> BaseGeometry | None:
    shape = service.parse_polygon(text)
    if shape is not None and crs.swap_xy:
        shape = shapely.transform(shape, lambda xy: xy[:, ::-1])
    return shape


@router.get(
    "/stats",
    name="stats",
    summary="Pipe length and count by class, material, diameter band, age band, owner in a region",
    responses=problem_responses(400, 404),
)
def stats(
    request: Request,
    store: StoreDep,
    bbox: BBoxDep,
    layer: Annotated[
        str | None, Query(description="Pipe layers or network names, comma-separated (default: every network)")
    ] = None,
    polygon: Annotated[
        str | None, Query(description="Region as WKT or GeoJSON, in polygon-crs (default CRS84)")
    ] = None,
    polygon_crs: Annotated[str | None, Query(alias="polygon-crs", description="CRS of polygon")] = None,
    group_by: Annotated[
        str | None, Query(description=f"Comma-separated groupings: {', '.join(GROUPS)} or any property name")
    ] = None,
    when: Annotated[str | None, Query(alias="datetime", description="Pipes as they were at this instant")] = None,
) -> Response:
    polygon_choice = choose_crs(polygon_crs, "polygon-crs", store)
    shape = _polygon(polygon, polygon_choice)
    region = service.region_of(
        store,
        bbox.bbox if bbox else None,
        shape,
        (bbox.crs if bbox else polygon_choice).code,
    )
    names = [n.strip() for n in (layer or "").split(",") if n.strip()]
    groups = [g.strip() for g in (group_by or "").split(",") if g.strip()] or list(GROUPS)
    answer = service.stats(analysis_context(request), names, region=region, group_by=groups, when=when)
    return Response(json.dumps(answer, ensure_ascii=False).encode("utf-8"), media_type="application/json")
