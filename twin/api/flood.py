"""`POST /analysis/flood`: the rainfall flood model as a job, and its animation frames.

The body names a storm (a GB 50014 design storm of a city or the user's own formula, or a
measured series) and optionally a bbox, a model cell size, drainage, how long to simulate and
output points. The request is checked against the twin and `max_flood_cells` before it is
queued (400 problem otherwise); the job (`twin.analysis.flood.job`) stores the max-depth COG as
a raster layer and the flooded road sections as a vector layer, so the raster, OGC API
Features and vector tile endpoints serve them; its result carries the URL templates.
`GET /analysis/flood/{job_id}/frames` lists the depth frames and `.../frames/{i}.png` draws one
(lon/lat-regular, to drape over `bounds_crs84`).
"""

from __future__ import annotations

import io
from datetime import datetime
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field
from rio_tiler.errors import InvalidColorMapName

from twin.analysis.flood.job import (
    JOB_KIND,
    cleanup_flood_job,
    plan_flood,
    read_frame,
    read_frames,
    run_flood_job,
)
from twin.api import links as ln
from twin.api.jobs import JOB_ACCEPTED, EditorDep, RunnerDep, accepted
from twin.api.params import StoreDep
from twin.api.problems import problem_responses
from twin.api.raster import COLORMAPS
from twin.api.security import app_settings
from twin.config import Settings
from twin.jobs import Cancelled, JobState, Progress, job_kind, new_job_id
from twin.model import InvalidInput, NotFound
from twin.store import Store

router = APIRouter(prefix="/analysis/flood", tags=["Analysis: flooding"])

DEPTH_COLORMAP = "flood_depth"
DEPTH_RESCALE = "0,1"
PNG = "image/png"
FRAME_MAX_AGE = 3600
PNG_LEVEL = 3  # zlib level: frames are drawn per request, so speed over the last few per cent of size


# ----- the request ---------------------------------------------------------------------------------
class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Formula(Strict):
    A1: float = Field(gt=0, description="mm/min")
    C: float
    b: float = Field(ge=0, description="minutes")
    n: float = Field(gt=0, lt=2)


class RainSeries(Strict):
    times_s: list[float] = Field(min_length=2, max_length=100_000, description="Starts of equal intervals (s)")
    values: list[float] = Field(min_length=2, max_length=100_000, description="Intensity (mm/h) or depth (mm)")
    unit: Literal["mm/h", "mm"] = "mm/h"


class Storm(Strict):
    """A design storm (city or formula, P, duration, step, peak ratio) or a measured `series`."""

    city: str | None = Field(None, max_length=64, description="City of the GB 50014 formula (default nanjing)")
    formula: Formula | None = Field(None, description="Your own formula parameters instead of a city's")
    return_period: float | None = Field(None, gt=0, le=1000, description="Years (default 3)")
    duration_min: float | None = Field(None, gt=0, le=1440, description="Storm duration, minutes (default 120)")
    step_min: float | None = Field(None, gt=0, le=60, description="Hyetograph step, minutes (default 5)")
    peak_ratio: float | None = Field(None, ge=0, le=1, description="Chicago peak position r (default 0.4)")
    series: RainSeries | None = Field(None, description="A measured rainfall series instead of a design storm")
    gauge: str | None = Field(None, max_length=64, description="A rain gauge sensor whose readings are the rain")
    start: datetime | None = Field(None, description="With `gauge`: first moment of the rain to replay")
    end: datetime | None = Field(None, description="With `gauge`: last moment (default: to the gauge's last rain)")


class Point(Strict):
    id: str | None = Field(None, max_length=64, description="Name of the point in the result (default p1, p2, ...)")
    coordinates: list[float] = Field(min_length=2, max_length=2, description="[x, y] in `crs`")


class FloodBody(Strict):
    storm: Storm = Field(default_factory=Storm)
    crs: str | None = Field(None, description="CRS of bbox and points: CRS84 (default) or the project CRS")
    bbox: list[float] | None = Field(None, min_length=4, max_length=4, description="[minx, miny, maxx, maxy]")
    cell_m: float | None = Field(None, gt=0, le=10_000, description="Model cell size, a multiple of the DEM's")
    drainage: Literal["network", "design", "none"] | None = Field(
        None, description="network (the twin's inlets and pipes; default), design (a capacity in mm/h) or none"
    )
    drainage_capacity_mm_h: float | None = Field(None, gt=0, le=1000, description="Design drainage capacity")
    simulate_min: float | None = Field(None, gt=0, le=10_080, description="Minutes simulated (default: storm + 30)")
    points: list[Point] = Field(default_factory=list, max_length=1000, description="Where to record depth series")
    frame_every_min: float | None = Field(None, gt=0, le=1440, description="Minutes between animation frames")
    dem: str | None = Field(None, max_length=63, description="DEM layer (default dem)")
    roads: str | None = Field(None, max_length=63, description="Road centreline layer (default: best covering)")
    fill_nodata: bool = Field(False, description="Fill DEM nodata holes instead of refusing them")
    swmm_model: str | None = Field(
        None, max_length=255, description="SWMM .inp of the sewers (an asset key or a path inside the data directory)"
    )
    swmm_crs: str | None = Field(None, max_length=64, description="CRS of the SWMM coordinates (default: the twin's)")
    swmm_interval_s: float | None = Field(None, gt=0, le=3600, description="Coupling interval with SWMM, seconds")


SettingsDep = Annotated[Settings, Depends(app_settings)]


@router.post(
    "",
    name="flood",
    summary="Run a rainfall flood as a job (needs an editor key)",
    status_code=202,
    responses={**JOB_ACCEPTED, **problem_responses(404)},
)
def flood(
    request: Request, body: FloodBody, runner: RunnerDep, key: EditorDep, store: StoreDep, settings: SettingsDep
) -> Response:
    spec = body.model_dump(mode="json", exclude_none=True)  # stored with the job: JSON only
    plan_flood(store, spec, settings.max_flood_cells)  # a bad request is a 400 now, not a failed job
    job_id = new_job_id()
    params = {"job": job_id, "request": spec, "max_cells": settings.max_flood_cells}
    return accepted(request, runner.submit(JOB_KIND, params, owner=key.id, job_id=job_id))


def result_links(job_id: str, result: dict[str, Any]) -> dict[str, str]:
    """Root-relative URLs (templates for tiles) of what the run stored."""
    raster, sections = result["layers"]["max_depth"], result["layers"]["road_sections"]
    style = f"colormap_name={DEPTH_COLORMAP}&rescale={DEPTH_RESCALE}"
    return {
        "max_depth_tiles": f"/raster/{raster}/tiles/WebMercatorQuad/{{z}}/{{x}}/{{y}}.png?{style}",
        "max_depth_tilejson": f"/raster/{raster}/WebMercatorQuad/tilejson.json?{style}",
        "road_sections_items": f"/collections/{sections}/items",
        "road_sections_tiles": f"/tiles/{sections}/{{z}}/{{x}}/{{y}}.mvt",
        "road_sections_tilejson": f"/tiles/{sections}/tilejson.json",
        "frames": f"/analysis/flood/{job_id}/frames",
    }


@job_kind(JOB_KIND, cleanup=cleanup_flood_job)
def flood_job(params: dict, progress: Progress, cancelled: Cancelled, store: Store) -> dict:
    """The library's run, with the URLs of its results."""
    result = run_flood_job(params, progress, cancelled, store)
    return {**result, "links": result_links(params["job"], result)}


# ----- frames ----------------------------------------------------------------------------------------
JobId = Annotated[str, Path(max_length=64, description="The flood job's id")]


def _flood_job_state(runner: RunnerDep, job_id: str) -> JobState:
    job = runner.jobs.get(job_id)
    if job.kind != JOB_KIND:
        raise NotFound(f"job {job_id} is a {job.kind} job, not a flood run")
    return job.state


@router.get(
    "/{job_id}/frames",
    name="flood_frames",
    summary="The depth frames of a flood run, with their times and the bounds to drape them on",
    responses=problem_responses(404),
)
def flood_frames(request: Request, runner: RunnerDep, store: StoreDep, job_id: JobId) -> JSONResponse:
    state = _flood_job_state(runner, job_id)
    index = read_frames(store.data_dir, job_id)
    if index is None:
        if state.finished:
            raise NotFound(f"flood job {job_id} {state.value}: it has no frames")
        return JSONResponse({"job_id": job_id, "state": state.value, "frames": []})
    frames = [
        {k: v for k, v in frame.items() if k != "file"}
        | {"href": ln.url_for(request, "flood_frame", job_id=job_id, index=str(frame["index"]))}
        for frame in index["frames"]
    ]
    return JSONResponse(
        {
            "job_id": job_id,
            "state": state.value,
            **{k: v for k, v in index.items() if k not in ("frames", "depth_unit")},
            "crs": "http://www.opengis.net/def/crs/OGC/1.3/CRS84",
            "colormap_name": DEPTH_COLORMAP,
            "rescale": [float(v) for v in DEPTH_RESCALE.split(",")],
            "frames": frames,
        }
    )


def depth_png(depth_m: np.ndarray, colormap_name: str, rescale: str) -> bytes:
    """Depths as an RGBA PNG through a named colour map, dry cells transparent."""
    try:
        colormap = COLORMAPS.get(colormap_name)
    except InvalidColorMapName as exc:
        raise InvalidInput(f"invalid colormap_name {colormap_name!r}: {exc}") from exc
    try:
        low, high = (float(v) for v in rescale.split(","))
    except ValueError:
        raise InvalidInput(f"invalid rescale {rescale!r}: expected two numbers 'min,max' in metres") from None
    if not (np.isfinite(low) and np.isfinite(high) and high > low):
        raise InvalidInput(f"invalid rescale {rescale!r}: max must be greater than min")
    table = np.array([colormap.get(i, (0, 0, 0, 0)) for i in range(256)], dtype=np.uint8)
    scaled = np.clip((depth_m - low) * (255.0 / (high - low)) + 0.5, 0, 255).astype(np.uint8)
    rgba = np.take(table, scaled, axis=0)
    rgba[depth_m <= 0, 3] = 0
    out = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(out, format="PNG", compress_level=PNG_LEVEL)
    return out.getvalue()


@router.get(
    "/{job_id}/frames/{index}.png",
    name="flood_frame",
    summary="One depth frame as a PNG over the frame list's bounds_crs84",
    response_class=Response,
    responses={200: {"content": {PNG: {}}, "description": "RGBA PNG"}, **problem_responses(400, 404)},
)
def flood_frame(
    runner: RunnerDep,
    store: StoreDep,
    job_id: JobId,
    index: Annotated[int, Path(ge=0, le=100_000, description="Frame number, from 0")],
    colormap_name: Annotated[str, Query(max_length=64, description="A titiler colour map")] = DEPTH_COLORMAP,
    rescale: Annotated[str, Query(max_length=64, description="Depths (m) mapped to the ends of the map")] = (
        DEPTH_RESCALE
    ),
) -> Response:
    _flood_job_state(runner, job_id)
    body = depth_png(read_frame(store.data_dir, job_id, index), colormap_name, rescale)
    return Response(body, media_type=PNG, headers={"Cache-Control": f"public, max-age={FRAME_MAX_AGE}"})
