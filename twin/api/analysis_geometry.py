"""Cross-section, profile and clearance endpoints: JSON, or an SVG drawing on request.

`POST /analysis/cross-section` cuts the pipes with a line, `POST /analysis/profile` follows a
pipe run, `POST /analysis/clearance` lists GB 50289 violations. Each answers JSON, and SVG
with `?f=svg` or `Accept: image/svg+xml`. Coordinates are CRS84 unless `crs` names the
project CRS; bad input is a 400 problem. Restricted layers (gas, power) are left out for a
request without an API key, and naming one is a 401, as for their collections.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from twin.analysis.clearance import DEFAULT_PARALLEL_ANGLE, clearance_svg
from twin.analysis.geometry_requests import (
    area_input,
    instant,
    line_input,
    run_clearance,
    run_cross_section,
    run_profile,
)
from twin.analysis.pipe_solids import find_pipe_layer, is_pipe_layer
from twin.analysis.section import cross_section_svg, profile_svg
from twin.analysis.svg import SVG_MEDIA_TYPE
from twin.api.params import StoreDep
from twin.api.problems import problem_responses
from twin.api.security import CHALLENGE, visible_layers
from twin.model import NotFound
from twin.store import Store

router = APIRouter(prefix="/analysis", tags=["Analysis: sections and clearance"])

ANSWERS = {
    200: {"content": {"application/json": {}, SVG_MEDIA_TYPE: {}}, "description": "JSON, or an SVG drawing"},
    **problem_responses(400, 401, 404),
}


class Drawing(StrEnum):
    json = "json"
    svg = "svg"


def wants_svg(request: Request, f: Drawing | None) -> bool:
    """`f` decides; otherwise SVG when the Accept header prefers it to JSON."""
    if f is not None:
        return f is Drawing.svg
    best = {"svg": -1.0, "json": -1.0}
    for item in request.headers.get("accept", "").split(","):
        media, *options = (part.strip() for part in item.split(";"))
        q = 1.0
        for option in options:
            name, _, number = option.partition("=")
            if name.strip() == "q":
                try:
                    q = float(number)
                except ValueError:
                    q = 0.0
        kind = "svg" if media == SVG_MEDIA_TYPE else "json" if media in ("application/json", "*/*") else None
        if kind:
            best[kind] = max(best[kind], q)
    return best["svg"] > 0 and best["svg"] > best["json"]


FormatQuery = Annotated[Drawing | None, Query(description="json (default) or svg")]


class Common(BaseModel):
    model_config = ConfigDict(extra="forbid")

    crs: str | None = Field(None, description="CRS of the coordinates given: CRS84 (default) or the project CRS")
    datetime: str | None = Field(None, description="RFC 3339 instant to analyse (default: now)")
    dem: str | None = Field(None, description="DEM layer for the ground (default: the twin's DEM)")


class CrossSectionBody(Common):
    line: dict[str, Any] = Field(description="GeoJSON LineString (or a Feature holding one), at least two positions")
    layers: list[str] | None = Field(None, description="Pipe layers to cut (default: every pipe layer)")
    vertical_exaggeration: float = Field(1.0, gt=0, le=100, description="SVG only: heights drawn this many times")


class ProfileBody(Common):
    pipes: list[str] | None = Field(None, description="Pipe ids of a contiguous run, in order")
    layer: str | None = Field(None, description="Pipe layer of the run (found from the first pipe when omitted)")
    start_node: str | None = Field(None, description="With end_node and layer: the run is the shortest path")
    end_node: str | None = None
    crossing_layers: list[str] | None = Field(None, description="Layers whose crossings are marked (default: all)")
    vertical_exaggeration: float = Field(10.0, gt=0, le=200, description="SVG only: heights drawn this many times")


class ClearanceBody(Common):
    bbox: list[float] | None = Field(None, description="[minx, miny, maxx, maxy] in crs")
    polygon: dict[str, Any] | None = Field(None, description="GeoJSON Polygon or MultiPolygon in crs")
    layers: list[str] | None = Field(None, description="Pipe layers to check (default: every pipe layer)")
    structures: list[str] = Field(default_factory=list, description="Building or BIM layers to check pipes against")
    parallel_angle: float = Field(
        DEFAULT_PARALLEL_ANGLE, ge=0, le=90, description="Pipes within this plan angle run alongside (degrees)"
    )


class Access:
    """The layers this request may read; restricted ones need an API key."""

    def __init__(self, request: Request, store: Store) -> None:
        self.store = store
        self.visible = visible_layers(request, store.list_layers())
        self.readable = {layer.id for layer in self.visible}

    def check(self, *names: str | None) -> None:
        """401 for a restricted layer named without a key (unknown names are the analysis's 400)."""
        for name in names:
            if not name or name in self.readable:
                continue
            try:
                self.store.get_layer(name)
            except NotFound:
                continue
            raise HTTPException(401, f"layer {name!r} is restricted: send an API key to read it", headers=CHALLENGE)

    def pipe_layers(self, named: list[str] | None) -> list[str]:
        """The layers named (checked), else every pipe layer this request may read."""
        if named is not None:
            self.check(*named)
            return named
        return [layer.id for layer in self.visible if is_pipe_layer(layer)]


def _answer(body: dict[str, Any], svg: str | None) -> Response:
    if svg is not None:
        return Response(svg.encode("utf-8"), media_type=SVG_MEDIA_TYPE)
    return JSONResponse(body)


@router.post(
    "/cross-section",
    summary="Pipes crossed by a line: depths, elevations, sizes and the gaps between them",
    responses=ANSWERS,
)
def cross_section(request: Request, body: CrossSectionBody, store: StoreDep, f: FormatQuery = None) -> Response:
    access = Access(request, store)
    access.check(body.dem)
    line = line_input(store, body.line, body.crs)
    layers = access.pipe_layers(body.layers)
    section = run_cross_section(store, line, layers=layers, time=instant(body.datetime), dem_layer=body.dem)
    if wants_svg(request, f):
        return _answer({}, cross_section_svg(section, exaggeration=body.vertical_exaggeration))
    return _answer(section.as_dict(), None)


@router.post(
    "/profile",
    summary="Longitudinal profile of a pipe run: ground, invert and crown lines, crossing pipes",
    responses=ANSWERS,
)
def profile(request: Request, body: ProfileBody, store: StoreDep, f: FormatQuery = None) -> Response:
    access = Access(request, store)
    time = instant(body.datetime)
    layer = body.layer
    if layer is None and body.pipes and body.start_node is None and body.end_node is None:
        layer = find_pipe_layer(store, str(body.pipes[0]), time).id
    access.check(layer, body.dem)
    result = run_profile(
        store,
        pipes=body.pipes,
        layer=layer,
        start_node=body.start_node,
        end_node=body.end_node,
        crossing_layers=access.pipe_layers(body.crossing_layers),
        time=time,
        dem_layer=body.dem,
    )
    if wants_svg(request, f):
        return _answer({}, profile_svg(result, exaggeration=body.vertical_exaggeration))
    return _answer(result.as_dict(), None)


@router.post(
    "/clearance",
    summary="Pipe pairs and pipe-structure pairs closer than GB 50289-2016 allows",
    responses=ANSWERS,
)
def clearance(request: Request, body: ClearanceBody, store: StoreDep, f: FormatQuery = None) -> Response:
    access = Access(request, store)
    access.check(*body.structures, body.dem)
    area = area_input(store, body.bbox, body.polygon, body.crs)
    report = run_clearance(
        store,
        area=area,
        layers=access.pipe_layers(body.layers),
        structures=body.structures,
        time=instant(body.datetime),
        parallel_angle=body.parallel_angle,
        dem_layer=body.dem,
    )
    if wants_svg(request, f):
        return _answer({}, clearance_svg(report))
    return _answer(report.as_dict(), None)
