"""One flood run from plain inputs: a DEM array, its transform, a storm and what lies on the ground.

This is the library entry point a job, the CLI or a notebook calls; it knows nothing of the
store or the web. `run_flood` prepares the grid, burns land use into Manning's n, places the
drainage inlets, runs the surface model and picks out the flooded road sections.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import rasterio
import shapely
from affine import Affine
from rio_cogeo.cogeo import cog_translate
from rio_cogeo.profiles import cog_profiles

from twin.analysis.flood.drainage import CLOGGING, GRATE_M3S, design_rate_capacity
from twin.analysis.flood.grid import Grid, prepare
from twin.analysis.flood.roads import DEFAULT_WIDTH_M, LIMIT_M, Road, RoadSection, flooded_sections
from twin.analysis.flood.roughness import DEFAULT_N, manning_for
from twin.analysis.flood.storms import Hyetograph
from twin.analysis.flood.surface import Backend, Inlets, Progress, SurfaceResult, simulate
from twin.analysis.flood.swmm_coupling import SwmmCoupling
from twin.model import InvalidInput

DRY_M = 0.01  # depths below this are written as nodata (transparent on a map)
DrainMode = Literal["network", "design", "none"]


@dataclass
class FloodParams:
    """How to run: the storm, the grid, drainage, and what counts as flooded."""

    storm: Hyetograph
    resolution_m: float | None = None
    after_storm_s: float = 1800.0
    drainage: DrainMode = "network"
    design_capacity_mm_h: float | None = None
    grate_capacity_m3s: float = GRATE_M3S
    inlet_clogging: float = CLOGGING
    boundary: str = "open"
    limit_m: float = LIMIT_M
    fill_nodata: bool = False
    record_every_s: float = 60.0
    frame_every_s: float | None = None
    alpha: float = 0.7
    backend: Backend = "numba"
    swmm_model: Path | None = None  # a SWMM .inp of the sewers, run coupled (it is then the drainage)
    swmm_crs: str | None = None  # CRS of its [COORDINATES]; default the DEM's
    swmm_interval_s: float = 60.0

    def __post_init__(self) -> None:
        if not isinstance(self.storm, Hyetograph):
            raise InvalidInput("a flood run needs a storm (a hyetograph)")
        if not self.swmm_interval_s > 0:
            raise InvalidInput(f"the SWMM coupling interval must be positive, got {self.swmm_interval_s} s")
        if self.swmm_model is not None and self.drainage != "network":
            raise InvalidInput("a coupled SWMM model is the drainage network: leave drainage at 'network'")
        if self.after_storm_s < 0:
            raise InvalidInput("the time simulated after the storm must not be negative")
        if self.drainage not in ("network", "design", "none"):
            raise InvalidInput("drainage must be 'network', 'design' or 'none'")
        if self.drainage == "design" and not (self.design_capacity_mm_h or 0) > 0:
            raise InvalidInput("design drainage needs a positive design capacity in mm/h")
        if not 0.0 <= self.inlet_clogging < 1.0:
            raise InvalidInput("inlet clogging is the fraction of grate capacity lost: 0 <= clogging < 1")
        if not self.limit_m > 0:
            raise InvalidInput("the depth limit for road sections must be positive")

    @property
    def grate_m3s(self) -> float:
        """What one grate takes once partly blocked by leaves and litter."""
        return self.grate_capacity_m3s * (1.0 - self.inlet_clogging)

    def as_dict(self) -> dict[str, Any]:
        return {
            "storm": self.storm.as_dict(),
            "resolution_m": self.resolution_m,
            "after_storm_s": self.after_storm_s,
            "drainage": self.drainage,
            "design_capacity_mm_h": self.design_capacity_mm_h,
            "grate_capacity_m3s": self.grate_capacity_m3s,
            "inlet_clogging": self.inlet_clogging,
            "boundary": self.boundary,
            "limit_m": self.limit_m,
            "backend": self.backend,
            **(self._swmm_dict() if self.swmm_model is not None else {}),
        }

    def _swmm_dict(self) -> dict[str, Any]:
        """The coupled model by file name only: a result never shows where the server keeps it."""
        return {
            "swmm_model": Path(self.swmm_model).name,
            "swmm_crs": self.swmm_crs,
            "swmm_interval_s": self.swmm_interval_s,
        }


@dataclass
class FloodInputs:
    """What lies on the ground, all in the DEM's CRS; every part is optional."""

    landuse: Sequence[tuple[shapely.Geometry, str]] = ()
    roads: Sequence[Road] = ()
    inlet_xy: np.ndarray | None = None
    inlet_ids: Sequence[str] = ()
    inlet_capacity_m3s: np.ndarray | None = None
    water: Sequence[shapely.Geometry] = ()
    probes: Sequence[tuple[str, float, float]] = ()
    manning_table: dict[str, float] | None = None


@dataclass
class FloodResult:
    """The run on the model `grid`, and its max depth and time over the limit mapped back onto
    the DEM's own cells (`map_grid`): each coarse cell's water stands level over its fine cells."""

    grid: Grid
    surface: SurfaceResult
    map_grid: Grid
    max_depth: np.ndarray
    time_above_s: np.ndarray
    sections: list[RoadSection]
    probes: dict[str, dict[str, Any]]
    params: FloodParams
    inlets: int
    crs: str | None = None
    notes: list[str] = field(default_factory=list)
    swmm: dict[str, Any] | None = None

    def summary(self) -> dict[str, Any]:
        s = self.surface
        wet = self.max_depth > self.params.limit_m
        return {
            "grid": {"shape": list(self.grid.shape), "cell_m": self.grid.dx, "bounds": list(self.grid.bounds)},
            "map_grid": {"shape": list(self.map_grid.shape), "cell_m": self.map_grid.dx},
            "storm": {k: v for k, v in self.params.storm.as_dict().items() if k != "intensity_mm_h"},
            "drainage": {"mode": "swmm" if self.swmm else self.params.drainage, "inlets": self.inlets},
            "model": s.summary(),
            "flooded_area_m2": float(wet.sum() * self.map_grid.dx**2),
            "max_depth_m": round(float(self.max_depth.max()), 3),
            "limit_m": self.params.limit_m,
            "road_sections": [section.as_dict() for section in self.sections],
            "probes": self.probes,
            "notes": self.notes,
            **({"swmm": self.swmm} if self.swmm else {}),
        }

    def write_max_depth(self, path: Path) -> Path:
        """The max-depth grid as a Cloud-Optimised GeoTIFF (float32 m, dry cells nodata)."""
        write_cog(path, self.max_depth, self.map_grid.transform, self.crs)
        return path


def write_cog(path: Path, depth: np.ndarray, transform: Affine, crs: str | None) -> None:
    """A depth grid as a COG: deflate, internal overviews, dry (< 1 cm) cells as nodata 0."""
    data = np.where(depth >= DRY_M, depth, 0.0).astype(np.float32)
    profile = {
        "driver": "GTiff",
        "dtype": "float32",
        "count": 1,
        "width": data.shape[1],
        "height": data.shape[0],
        "transform": transform,
        "crs": crs,
        "nodata": 0.0,
    }
    with tempfile.TemporaryDirectory(dir=Path(path).parent) as tmp:
        plain = Path(tmp) / "depth.tif"
        with rasterio.open(plain, "w", **profile) as dst:
            dst.write(data, 1)
            dst.update_tags(UNITS="metre", QUANTITY="maximum water depth")
        cog_translate(str(plain), str(path), cog_profiles.get("deflate"), quiet=True, in_memory=True)


def _inlets(grid: Grid, inputs: FloodInputs, params: FloodParams, notes: list[str]) -> tuple[Inlets | None, float]:
    """Inlet cells and capacities, or a uniform drainage rate when no inlets are known."""
    if params.drainage == "none" or params.swmm_model is not None:
        return None, 0.0
    xy = np.zeros((0, 2)) if inputs.inlet_xy is None else np.asarray(inputs.inlet_xy, float).reshape(-1, 2)
    rows, cols, inside = grid.cells(xy)
    ids = list(inputs.inlet_ids) or [f"inlet{k + 1}" for k in range(len(xy))]
    rows, cols = rows[inside], cols[inside]
    ids = [i for i, keep in zip(ids, inside, strict=True) if keep]
    if params.drainage == "design":
        if len(rows) == 0:
            notes.append("no inlets on the grid: the design capacity drains every cell uniformly")
            return None, float(params.design_capacity_mm_h)
        cap = design_rate_capacity(grid.shape, rows, cols, float(params.design_capacity_mm_h), grid.dx)
        return Inlets(rows, cols, cap, ids), 0.0
    if inputs.inlet_capacity_m3s is None:
        raise InvalidInput("network drainage needs inlet capacities (or use a design capacity in mm/h)")
    cap = np.asarray(inputs.inlet_capacity_m3s, float).reshape(-1)
    if len(cap) != len(xy):
        raise InvalidInput("one capacity per inlet is needed")
    if len(rows) == 0:
        notes.append("no drainage inlets inside the DEM: nothing is drained")
    return Inlets(rows, cols, cap[inside], ids), 0.0


def run_flood(
    dem: np.ndarray,
    transform: Affine,
    params: FloodParams,
    inputs: FloodInputs | None = None,
    *,
    nodata: float | None = None,
    crs: str | None = None,
    progress: Progress | None = None,
    cancel: Callable[[], bool] | None = None,
) -> FloodResult:
    """Run the rainfall flood model on a DEM; see `FloodParams` and `FloodInputs`."""
    inputs = inputs or FloodInputs()
    notes: list[str] = []
    say = progress or (lambda fraction, message: None)
    say(0.0, "preparing the grid")
    grid = prepare(dem, transform, nodata=nodata, resolution=params.resolution_m, fill_nodata=params.fill_nodata)
    manning = grid.burn(
        ((g, manning_for(kind, inputs.manning_table)) for g, kind in inputs.landuse),
        DEFAULT_N,
    )
    road_n = manning_for("road", inputs.manning_table)
    carriageways = [
        (r.geometry.buffer((r.width_m or DEFAULT_WIDTH_M) / 2.0, cap_style="flat"), road_n) for r in inputs.roads
    ]
    if carriageways:
        manning = np.where(grid.burn(carriageways, 0.0) > 0, road_n, manning)
    inlets, uniform_rate = _inlets(grid, inputs, params, notes)
    probe_rc = grid.cells(np.array([(x, y) for _, x, y in inputs.probes], float).reshape(-1, 2))
    probe_keep = probe_rc[2]
    duration_s = params.storm.duration_s + params.after_storm_s
    sewer = _coupling(grid, params, crs, duration_s, notes)
    say(0.05, "running the surface model")
    try:
        surface = simulate(
            grid.z,
            grid.dx,
            params.storm,
            duration_s=duration_s,
            manning=manning,
            inlets=inlets,
            drain_rate_mm_h=uniform_rate,
            boundary=params.boundary,
            alpha=params.alpha,
            threshold_m=grid.threshold_for(params.limit_m),
            probes=list(zip(probe_rc[0][probe_keep], probe_rc[1][probe_keep], strict=True)),
            record_every_s=params.record_every_s,
            frame_every_s=params.frame_every_s,
            backend=params.backend,
            progress=lambda f, m: say(0.05 + 0.9 * f, m),
            cancel=cancel,
            exchange=sewer,
        )
    finally:
        if sewer is not None:
            sewer.close()
    fine = grid.fine_grid()
    max_depth = grid.to_fine(surface.max_depth)
    time_above = np.where(max_depth > params.limit_m, grid.to_fine_cells(surface.time_above_s), 0.0)
    exclude = fine.burn(((w, 1.0) for w in inputs.water), 0.0, all_touched=True) > 0 if inputs.water else None
    sections = flooded_sections(inputs.roads, fine, max_depth, time_above, limit_m=params.limit_m, exclude=exclude)
    kept = [p for p, keep in zip(inputs.probes, probe_keep, strict=True) if keep]
    fine_rc = fine.cells(np.array([(x, y) for _, x, y in kept], float).reshape(-1, 2))
    probes = {
        pid: {
            "x": x,
            "y": y,
            "times_s": surface.probe_times_s.round(1).tolist(),
            "depth_m": surface.probe_depths[k].round(4).tolist(),  # mean over the model cell
            "max_depth_m": round(float(max_depth[fine_rc[0][k], fine_rc[1][k]]), 4),
        }
        for k, (pid, x, y) in enumerate(kept)
    }
    if len(kept) < len(inputs.probes):
        notes.append(f"{len(inputs.probes) - len(kept)} probe point(s) outside the DEM were skipped")
    if surface.mass.relative_error > 1e-3:
        notes.append(f"mass balance error {surface.mass.relative_error:.2e} exceeds 0.1 %")
    say(1.0, "done")
    n_inlets = len(sewer.ids) if sewer is not None else 0 if inlets is None else len(inlets.rows)
    swmm = sewer.report() if sewer is not None else None
    return FloodResult(grid, surface, fine, max_depth, time_above, sections, probes, params, n_inlets, crs, notes, swmm)


def _coupling(
    grid: Grid, params: FloodParams, crs: str | None, duration_s: float, notes: list[str]
) -> SwmmCoupling | None:
    """The SWMM model opened and placed on the grid, when the run has one (bad models refused here)."""
    if params.swmm_model is None:
        return None
    sewer = SwmmCoupling(
        params.swmm_model, grid, duration_s, model_crs=params.swmm_crs or crs, grid_crs=crs,
        interval_s=params.swmm_interval_s,
    )  # fmt: skip
    if sewer.outside:
        notes.append(f"{len(sewer.outside)} SWMM junction(s) outside the grid were left uncoupled")
    if sewer.without_coordinates:
        notes.append(f"{len(sewer.without_coordinates)} SWMM junction(s) without coordinates were left uncoupled")
    return sewer


def static_ponding(
    dem: np.ndarray,
    transform: Affine,
    rain_mm: float,
    inputs: FloodInputs | None = None,
    *,
    nodata: float | None = None,
    resolution_m: float | None = None,
    fill_nodata: bool = False,
    boundary: str = "open",
    limit_m: float = LIMIT_M,
) -> dict[str, Any]:
    """The instant estimate: where `rain_mm` stands after fill–spill, and the roads under it."""
    from twin.analysis.flood.ponding import fill_spill

    inputs = inputs or FloodInputs()
    grid = prepare(dem, transform, nodata=nodata, resolution=resolution_m, fill_nodata=fill_nodata)
    pond = fill_spill(grid.z, grid.dx, rain_mm, boundary=boundary)
    exclude = grid.burn(((w, 1.0) for w in inputs.water), 0.0, all_touched=True) > 0 if inputs.water else None
    sections = flooded_sections(inputs.roads, grid, pond.depth, np.zeros(grid.shape), limit_m=limit_m, exclude=exclude)
    ponds = pond.ponds(grid.dx, min_depth=limit_m)
    for p in ponds:
        x, y = grid.centres(np.array([p["deepest_cell"][0]]), np.array([p["deepest_cell"][1]]))[0]
        p["deepest_point"] = [round(float(x), 2), round(float(y), 2)]
    return {
        "grid": {"shape": list(grid.shape), "cell_m": grid.dx, "bounds": list(grid.bounds)},
        "rain_mm": rain_mm,
        "rain_m3": pond.rain_m3,
        "stored_m3": pond.stored_m3,
        "outflow_m3": pond.outflow_m3,
        "limit_m": limit_m,
        "ponds": ponds,
        "road_sections": [{k: v for k, v in s.as_dict().items() if k != "time_above_limit_s"} for s in sections],
    }
