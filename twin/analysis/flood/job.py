"""The rainfall flood run as a durable job: a request checked and planned, the run, its results.

`plan_flood` turns a request (plain JSON, as `POST /analysis/flood` takes it) into a checked
plan in the project CRS and refuses, before anything runs, what the job could not do: a storm
that makes no sense, an unknown DEM, a bbox off the DEM, a grid over the server's cell limit.
`run_flood_job` runs the model through `twin_adapter.run_on_twin`, keeps a sequence of depth
frames (16-bit PNG, depth in millimetres, on a lon/lat-regular grid so a map drapes them as one
image) in the job's folder, and stores the max-depth COG and the flooded road sections as
layers named after the job. A failed or cancelled run leaves no frames, layers or assets.

The web layer (`twin.api.flood`) registers the job kind and adds URLs; nothing here knows HTTP.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.windows
from affine import Affine
from PIL import Image

from twin.analysis.flood.gauges import gauge_rain
from twin.analysis.flood.grid import Grid
from twin.analysis.flood.roads import LIMIT_M
from twin.analysis.flood.run import DRY_M, FloodParams, FloodResult
from twin.analysis.flood.storms import Hyetograph, StormFormula, design_storm, measured
from twin.analysis.flood.surface import Cancelled as ModelCancelled
from twin.analysis.flood.swmm_coupling import check_model
from twin.analysis.flood.twin_adapter import dem_path, dem_window, run_on_twin
from twin.analysis.geometry_requests import input_crs, to_project
from twin.crs import CRS84, crs_code, transform_bbox, transform_points
from twin.integrity import ingest_lock, recover
from twin.jobs import JOBS_DIR, Job, JobCancelled, JobState
from twin.model import BBox, InvalidInput, NotFound, parse_instant
from twin.store import Store

JOB_KIND = "flood"
RESULTS_DIR = "flood"  # DATA/jobs/flood/<job id>/: the frames of a run
INDEX_FILE = "frames.json"
PARTIAL = ".partial"
POINT_PREFIX = "point:"  # probe ids of the user's points, told apart from sensor ids
DEFAULT_AFTER_S = 1800.0
DEFAULT_FRAMES = 40
MAX_FRAMES = 200
FRAME_MEMORY_BYTES = 512 * 2**20  # frames are held in memory (float32 grids) until the run ends
MIN_FRAME_PX, MAX_FRAME_PX = 256, 1024
MM_PER_M = 1000.0
DESIGN_KEYS = ("city", "formula", "return_period", "duration_min", "step_min", "peak_ratio")
ASSET_KEY = re.compile(r"[0-9a-f]{64}(\.[a-z0-9]{1,10})?")


# ----- the request --------------------------------------------------------------------------------
@dataclass(frozen=True)
class FloodPlan:
    """A checked request in the project CRS, and the size of the grid it will run on."""

    storm: Hyetograph
    dem_layer: str
    bbox: BBox | None
    cell_m: float | None
    grid_shape: tuple[int, int]
    drainage: str
    design_capacity_mm_h: float | None
    simulate_s: float
    points: list[tuple[str, float, float]]
    frame_every_s: float
    roads_layer: str | None
    fill_nodata: bool
    swmm_model: Path | None = None
    swmm_crs: str | None = None
    swmm_interval_s: float = 60.0

    @property
    def cells(self) -> int:
        return self.grid_shape[0] * self.grid_shape[1]

    def params(self) -> FloodParams:
        return FloodParams(
            storm=self.storm,
            resolution_m=self.cell_m,
            after_storm_s=self.simulate_s - self.storm.duration_s,
            drainage=self.drainage,  # type: ignore[arg-type]
            design_capacity_mm_h=self.design_capacity_mm_h,
            fill_nodata=self.fill_nodata,
            frame_every_s=self.frame_every_s,
            record_every_s=min(60.0, self.frame_every_s),
            swmm_model=self.swmm_model,
            swmm_crs=self.swmm_crs,
            swmm_interval_s=self.swmm_interval_s,
        )


def storm_from(spec: dict[str, Any] | None, store: Store | None = None) -> Hyetograph:
    """A GB 50014 design storm (city or own formula, P, duration, step, peak ratio), a measured
    series (`series`: times_s, values, unit), or what a rain gauge of the twin logged (`gauge`,
    with `start` and `end` optional)."""
    spec = dict(spec or {})
    sources = [key for key in ("series", "gauge") if spec.get(key) is not None]
    if len(sources) > 1:
        raise InvalidInput("storm: give either a measured series or a rain gauge, not both")
    if sources:
        given = [key for key in DESIGN_KEYS if spec.get(key) is not None]
        if given:
            raise InvalidInput(f"storm: give either a measured {sources[0]} or a design storm, not both ({given[0]!r})")
    window = [key for key in ("start", "end") if spec.get(key) is not None]
    if window and spec.get("gauge") is None:
        raise InvalidInput(f"storm: {window[0]!r} goes with a rain gauge")
    if spec.get("gauge") is not None:
        if store is None:
            raise InvalidInput("storm: rain from a gauge needs the twin that holds its readings")
        start, end = (parse_instant(str(spec[key])) if spec.get(key) else None for key in ("start", "end"))
        return gauge_rain(store, str(spec["gauge"]), start, end).hyetograph
    series = spec.get("series")
    if series is not None:
        return measured(series.get("times_s") or [], series.get("values") or [], unit=series.get("unit") or "mm/h")
    if spec.get("city") is not None and spec.get("formula") is not None:
        raise InvalidInput("storm: give either a city or your own formula, not both")
    formula = spec.get("formula")
    try:
        own: str | StormFormula = StormFormula(**formula) if formula else (spec.get("city") or "nanjing")
        return design_storm(
            own,
            _number(spec, "return_period", 3.0),
            _number(spec, "duration_min", 120.0),
            _number(spec, "step_min", 5.0),
            _number(spec, "peak_ratio", 0.4),
        )
    except NotFound as exc:  # an unknown city is a bad request, not a missing resource
        raise InvalidInput(f"storm: {exc}") from exc
    except TypeError as exc:
        raise InvalidInput("storm formula needs exactly the numbers A1, C, b and n") from exc


def _number(spec: dict[str, Any], key: str, default: float) -> float:
    value = spec.get(key)
    return default if value is None else float(value)


def _grid_shape(store: Store, dem_layer: str, bbox: BBox | None, cell_m: float | None) -> tuple[tuple[int, int], Grid]:
    """The model grid's shape from the DEM's header alone (nothing is read), and the DEM part's
    footprint as a Grid without heights (for checking points)."""
    with rasterio.open(dem_path(store, dem_layer)) as src:
        transform, height, width = src.transform, src.height, src.width
    if bbox is not None:
        window = dem_window(transform, height, width, bbox)
        transform = rasterio.windows.transform(window, transform)
        height, width = int(window.height), int(window.width)
    k = 1
    if cell_m is not None and not math.isclose(cell_m, transform.a, rel_tol=1e-6):
        factor = cell_m / transform.a
        k = int(round(factor))
        if k < 1 or abs(factor - k) > 1e-6:
            raise InvalidInput(f"cell_m {cell_m:g} must be a whole multiple of the DEM cell ({transform.a:g} m)")
    shape = (height // k, width // k)
    if min(shape) < 1:
        raise InvalidInput(f"cell_m {cell_m:g} is coarser than the whole DEM area")
    coarse = Affine(transform.a * k, 0.0, transform.c, 0.0, transform.e * k, transform.f)
    return shape, Grid(np.broadcast_to(np.float32(0.0), shape), coarse)  # no heights: a footprint only


def plan_flood(store: Store, request: dict[str, Any], max_cells: int) -> FloodPlan:
    """Check a flood request against the twin and the server's limits; InvalidInput (400) or
    NotFound (404, an unknown DEM) naming what is wrong, before anything runs."""
    storm = storm_from(request.get("storm"), store)
    crs = input_crs(store, request.get("crs"))
    bbox = None
    if request.get("bbox") is not None:
        values = [float(v) for v in request["bbox"]]
        if len(values) != 4:
            raise InvalidInput("bbox must be four numbers [minx, miny, maxx, maxy]")
        given = BBox(*values)
        to_project(store, np.array([values[:2], values[2:]]), crs, "bbox")  # refuses a box off the twin's area
        bbox = given if crs == store.crs else transform_bbox(given, crs, store.crs)
    cell_m = request.get("cell_m")
    dem_layer = request.get("dem") or "dem"
    if request.get("roads"):
        store.get_layer(request["roads"])  # NotFound now rather than a failed job
    shape, footprint = _grid_shape(store, dem_layer, bbox, cell_m)
    cells = shape[0] * shape[1]
    if cells > max_cells:
        raise InvalidInput(
            f"the flood grid would have {cells:,} cells ({shape[0]} × {shape[1]}); this server runs at most "
            f"{max_cells:,} (TWIN_MAX_FLOOD_CELLS): use a larger cell_m or a smaller bbox"
        )
    capacity = request.get("drainage_capacity_mm_h")
    drainage = request.get("drainage") or ("design" if capacity is not None else "network")
    if capacity is not None and drainage != "design":
        raise InvalidInput(f"drainage_capacity_mm_h goes with drainage 'design', not {drainage!r}")
    simulate_min = request.get("simulate_min")
    simulate_s = storm.duration_s + DEFAULT_AFTER_S if simulate_min is None else float(simulate_min) * 60.0
    if simulate_s < storm.duration_s - 1e-6:
        raise InvalidInput(
            f"simulate_min {simulate_s / 60:g} is shorter than the storm ({storm.duration_s / 60:g} min): "
            "the run covers the whole storm and the time after it"
        )
    swmm = _swmm(store, request, footprint, drainage)
    return FloodPlan(
        storm=storm,
        dem_layer=dem_layer,
        bbox=bbox,
        cell_m=cell_m,
        grid_shape=shape,
        drainage=drainage,
        design_capacity_mm_h=capacity,
        simulate_s=max(simulate_s, storm.duration_s),
        points=_points(store, request.get("points") or [], crs, footprint),
        frame_every_s=_frame_every(request.get("frame_every_min"), simulate_s, cells),
        roads_layer=request.get("roads"),
        fill_nodata=bool(request.get("fill_nodata")),
        **swmm,
    )


def swmm_model_path(store: Store, ref: str) -> Path:
    """The SWMM model a request names: the key of an asset, or a path inside the data directory
    (relative to it). Nothing else on the server can be named, not even through a symlink."""
    ref = str(ref).strip()
    if ASSET_KEY.fullmatch(ref):
        return store.assets.open_path(ref)
    root = Path(store.data_dir).resolve()
    path = (root / ref).resolve()
    if not ref or Path(ref).is_absolute() or not path.is_relative_to(root):
        raise InvalidInput("swmm_model must be an asset key or a path relative to the data directory, inside it")
    if path.suffix.lower() != ".inp" or not path.is_file():
        raise InvalidInput(f"swmm_model {ref!r}: no SWMM .inp file there")
    return path


def _swmm(store: Store, request: dict[str, Any], footprint: Grid, drainage: str) -> dict[str, Any]:
    """The coupled SWMM model of a request, checked against the grid before the job is queued."""
    if request.get("swmm_model") is None:
        for key in ("swmm_crs", "swmm_interval_s"):
            if request.get(key) is not None:
                raise InvalidInput(f"{key} goes with a swmm_model")
        return {}
    if drainage != "network":
        raise InvalidInput(f"a swmm_model is the drainage network: it does not go with drainage {drainage!r}")
    path = swmm_model_path(store, request["swmm_model"])
    crs = crs_code(request["swmm_crs"]) if request.get("swmm_crs") else store.crs
    interval = _number(request, "swmm_interval_s", 60.0)
    if not interval > 0:
        raise InvalidInput(f"swmm_interval_s must be positive, got {interval}")
    check_model(path, footprint, crs, store.crs)
    return {"swmm_model": path, "swmm_crs": crs, "swmm_interval_s": interval}


def _points(store: Store, points: list[dict[str, Any]], crs: str, footprint: Grid) -> list[tuple[str, float, float]]:
    """The output points in the project CRS, each inside the flood grid, with unique ids."""
    if not points:
        return []
    ids = [str(p.get("id") or f"p{k + 1}") for k, p in enumerate(points)]
    if len(set(ids)) != len(ids):
        raise InvalidInput("points: ids must be unique")
    try:
        xy = np.array([[float(v) for v in p["coordinates"]] for p in points], dtype=float).reshape(len(points), 2)
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidInput("points: each needs coordinates [x, y]") from exc
    xy = to_project(store, xy, crs, "points")
    inside = footprint.cells(xy)[2]
    if not inside.all():
        raise InvalidInput(f"point {ids[int(np.argmin(inside))]!r} lies outside the flood grid (the DEM or bbox)")
    return [(i, float(x), float(y)) for i, (x, y) in zip(ids, xy, strict=True)]


def _frame_every(minutes: float | None, simulate_s: float, cells: int) -> float:
    """Seconds between frames: as asked (or about 40 over the run), but never more frames than
    `MAX_FRAMES` or than fit in `FRAME_MEMORY_BYTES`."""
    most = max(1, min(MAX_FRAMES, FRAME_MEMORY_BYTES // max(4 * cells, 1) - 1))
    asked = simulate_s / DEFAULT_FRAMES if minutes is None else float(minutes) * 60.0
    return float(math.ceil(max(asked, simulate_s / most, 1.0)))


# ----- frames ---------------------------------------------------------------------------------------
def frames_folder(data_dir: Path, job_id: str) -> Path:
    """The job's folder of frames (`DATA/jobs/flood/<job id>`)."""
    return Path(data_dir) / JOBS_DIR / RESULTS_DIR / job_id


@dataclass(frozen=True)
class FrameSampler:
    """Where each pixel of a lon/lat-regular image falls on the depth grid (nearest cell)."""

    bounds_crs84: tuple[float, float, float, float]
    width: int
    height: int
    rows: np.ndarray
    cols: np.ndarray
    inside: np.ndarray

    @classmethod
    def over(cls, grid: Grid, crs: str) -> FrameSampler:
        w, s, e, n = transform_bbox(BBox(*grid.bounds), crs, CRS84).as_tuple()
        ny, nx = grid.shape
        long_side = min(max(ny, nx, MIN_FRAME_PX), MAX_FRAME_PX)
        height = max(2, round(ny * long_side / max(ny, nx)))
        ground = (e - w) * math.cos(math.radians((s + n) / 2.0)) / (n - s)
        width = max(2, round(height * ground))
        lon = w + (np.arange(width) + 0.5) * (e - w) / width
        lat = n - (np.arange(height) + 0.5) * (n - s) / height
        glon, glat = np.meshgrid(lon, lat)
        x, y = transform_points(CRS84, crs, glon.ravel(), glat.ravel())
        rows, cols, inside = grid.cells(np.column_stack([x, y]))
        return cls((w, s, e, n), width, height, rows, cols, inside)

    def sample(self, depth: np.ndarray) -> np.ndarray:
        """Depth in mm (uint16) per pixel; 0 where dry (< 1 cm) or outside the grid."""
        values = np.zeros(self.width * self.height)
        values[self.inside] = depth[self.rows[self.inside], self.cols[self.inside]]
        values[values < DRY_M] = 0.0
        return np.clip(np.round(values * MM_PER_M), 0, 65535).astype(np.uint16).reshape(self.height, self.width)


def write_frames(folder: Path, result: FloodResult, crs: str) -> dict[str, Any]:
    """Each kept depth grid, mapped onto the DEM's cells, as a 16-bit PNG; and the index."""
    folder.mkdir(parents=True, exist_ok=True)
    fine = result.map_grid
    sampler = FrameSampler.over(fine, crs)
    frames = []
    for index, (t, depth) in enumerate(result.surface.frames):
        on_ground = result.grid.to_fine(np.asarray(depth, dtype=np.float64))
        name = f"{index:04d}.png"
        Image.fromarray(sampler.sample(on_ground)).save(folder / name, compress_level=1)
        frames.append(
            {
                "index": index,
                "time_s": round(float(t), 1),
                "max_depth_m": round(float(on_ground.max()), 3),
                "wet_area_m2": round(float((on_ground >= DRY_M).sum() * fine.dx**2), 1),
                "file": name,
            }
        )
    index_doc = {
        "bounds_crs84": [round(v, 8) for v in sampler.bounds_crs84],
        "width": sampler.width,
        "height": sampler.height,
        "every_s": result.params.frame_every_s,
        "depth_unit": "mm (16-bit grey; 0 = dry, under 1 cm, or outside the DEM)",
        "frames": frames,
    }
    (folder / INDEX_FILE).write_text(json.dumps(index_doc), encoding="utf-8")
    return index_doc


def read_frames(data_dir: Path, job_id: str) -> dict[str, Any] | None:
    """The frame index of a finished run, or None when it has none (yet)."""
    path = frames_folder(data_dir, job_id) / INDEX_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def read_frame(data_dir: Path, job_id: str, index: int) -> np.ndarray:
    """Frame `index` of a run as depths in metres (0 where dry); NotFound when there is none."""
    frames = read_frames(data_dir, job_id)
    if frames is None or not 0 <= index < len(frames["frames"]):
        count = 0 if frames is None else len(frames["frames"])
        raise NotFound(f"flood job {job_id} has no frame {index} (it has {count})")
    with Image.open(frames_folder(data_dir, job_id) / frames["frames"][index]["file"]) as image:
        return np.asarray(image, dtype=np.float64) / MM_PER_M


# ----- the job ---------------------------------------------------------------------------------------
def result_id(job_id: str) -> str:
    """Prefix of the run's layers: `flood_<job id>_max_depth`, `flood_<job id>_road_sections`."""
    return f"flood_{job_id}"


def run_flood_job(
    params: dict[str, Any], progress: Callable[[float, str], None], cancelled: Callable[[], bool], store: Store
) -> dict[str, Any]:
    """The job: plan again (the twin may have changed since it was queued), run, keep frames,
    store the results; JobCancelled when asked to stop, with nothing kept."""
    job_id = params["job"]
    plan = plan_flood(store, params["request"], int(params["max_cells"]))
    folder = frames_folder(store.data_dir, job_id)
    partial = folder.with_name(folder.name + PARTIAL)
    shutil.rmtree(partial, ignore_errors=True)
    kept: dict[str, Any] = {}

    def keep_frames(result: FloodResult) -> None:
        progress(0.9, "writing the frames")
        kept.update(write_frames(partial, result, result.crs or store.crs))
        shutil.rmtree(folder, ignore_errors=True)  # a run of the same job that a restart cut short
        partial.rename(folder)

    try:
        with ingest_lock(store.data_dir):  # the COG asset is not an orphan to `recover` while it is written
            summary = run_on_twin(
                store,
                plan.params(),
                dem_layer=plan.dem_layer,
                roads_layer=plan.roads_layer,
                probes=[(POINT_PREFIX + pid, x, y) for pid, x, y in plan.points],
                result_id=result_id(job_id),
                progress=lambda fraction, message: progress(0.88 * fraction, message),
                cancel=cancelled,
                bbox=plan.bbox,
                on_result=keep_frames,
            )
    except ModelCancelled as exc:
        raise JobCancelled() from exc
    return result_document(summary, kept)  # no progress call after the write: it could cancel a stored run


def result_document(summary: dict[str, Any], frames: dict[str, Any]) -> dict[str, Any]:
    """The job's result: figures, the result layers, series at sensors and points, frame index."""
    probes = summary.pop("probes", {})
    sections = summary.pop("road_sections", [])
    layers = summary.pop("layers")
    return {
        **summary,
        "layers": {"max_depth": layers["max_depth"], "road_sections": layers["road_sections"]},
        "max_depth_asset": layers["asset"],
        "road_sections": [{k: v for k, v in s.items() if k != "geometry"} for s in sections],
        "sensors": {pid: series for pid, series in probes.items() if not pid.startswith(POINT_PREFIX)},
        "points": {pid.removeprefix(POINT_PREFIX): s for pid, s in probes.items() if pid.startswith(POINT_PREFIX)},
        "frames": {
            "count": len(frames.get("frames", [])),
            "every_s": frames.get("every_s"),
            "bounds_crs84": frames.get("bounds_crs84"),
        },
        "limit_m": summary.get("limit_m", LIMIT_M),
    }


def cleanup_flood_job(job: Job, store: Store) -> None:
    """After a failed or cancelled run: its frames, and any asset it stored before it stopped."""
    if job.state == JobState.succeeded:
        return
    folder = frames_folder(store.data_dir, job.id)
    shutil.rmtree(folder.with_name(folder.name + PARTIAL), ignore_errors=True)
    shutil.rmtree(folder, ignore_errors=True)
    recover(store)
