"""Coupled SWMM drainage: the surface grid and a SWMM model of the sewers trade water.

The explicit coupling of SWMM-2D, PCSWMM and TUFLOW-SWMM, with a coupling interval (60 s by
default):

- after every surface step, water on the cell of each SWMM junction drains into it, up to what
  the cell holds and the inlet's capacity: the lesser of the weir and orifice equations of a
  grate in a sag (FHWA HEC-22, less clogging) on the head over the inlet, or a fixed capacity.
  The head is the depth on the cell, or the water surface over the node's water level when that
  stands above the cell's bed; a node standing higher than the surface, or still giving back
  its flooding, takes nothing;
- at the end of each interval SWMM runs over the same interval with that water as each node's
  lateral inflow (`Node.generated_inflow`), and what each node lost to flooding over it (its
  surcharge, SWMM's node flooding volume) goes back onto the node's cell, spread evenly over the
  next interval so that the surface sees a flow rather than a wall of water.

The surface books what it gave and got (`to_sewer`, `from_sewer`) in its own mass balance;
SWMM's flow routing continuity error is reported next to it. Ponding at the coupled nodes is
turned off so that every flooded litre comes back onto the grid instead of waiting in SWMM's
pond. SWMM writes its report and binary output into a temporary folder, never beside the model.
The SWMM engine holds one model per process, so coupled runs in one process take turns.
"""

from __future__ import annotations

import math
import re
import shutil
import tempfile
import threading
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np

from twin.analysis.flood.drainage import CLOGGING
from twin.analysis.flood.grid import Grid
from twin.crs import crs_code, transform_points
from twin.model import InvalidInput

G = 9.81
FEET = 0.3048
FLOW_M3S = {  # SWMM flow units in m³/s
    "CMS": 1.0,
    "LPS": 1e-3,
    "MLD": 1e3 / 86400.0,
    "CFS": FEET**3,
    "GPM": 3.785411784e-3 / 60.0,
    "MGD": 3785.411784 / 86400.0,
}
WEIR_C = 1.66  # HEC-22 weir coefficient of a grate in a sag, SI units
ORIFICE_C = 0.67  # HEC-22 orifice coefficient
GRATE_PERIMETER_M = 2.0  # a 0.6 m × 0.4 m grate, open on all four sides
GRATE_OPEN_AREA_M2 = 0.12  # about half of its area is openings
SECTION = re.compile(r"^\[([A-Za-z_]+)\]")
LISTED = 20  # node ids listed by name in a report before "and N more"
_ENGINE = threading.Lock()  # the SWMM engine is one global model per process


@dataclass(frozen=True)
class InletCapacity:
    """What one node's inlet takes from its cell (m³/s) for a head over it (m)."""

    perimeter_m: float = GRATE_PERIMETER_M
    open_area_m2: float = GRATE_OPEN_AREA_M2
    clogging: float = CLOGGING
    fixed_m3s: float | None = None

    def __post_init__(self) -> None:
        if not (self.perimeter_m >= 0 and self.open_area_m2 >= 0 and 0 <= self.clogging < 1):
            raise InvalidInput("inlet perimeter and open area must not be negative, clogging in [0, 1)")
        if self.fixed_m3s is not None and not self.fixed_m3s >= 0:
            raise InvalidInput("a fixed inlet capacity must not be negative")

    def flow(self, head: np.ndarray) -> np.ndarray:
        """Weir flow for shallow water, orifice flow for deep: the lesser of the two (HEC-22)."""
        head = np.maximum(head, 0.0)
        if self.fixed_m3s is not None:
            return np.where(head > 0.0, self.fixed_m3s, 0.0)
        open_share = 1.0 - self.clogging
        weir = WEIR_C * self.perimeter_m * open_share * head**1.5
        orifice = ORIFICE_C * self.open_area_m2 * open_share * np.sqrt(2.0 * G * head)
        return np.minimum(weir, orifice)


def read_coordinates(path: Path) -> dict[str, tuple[float, float]]:
    """The [COORDINATES] of a SWMM .inp: node id to (x, y); InvalidInput for a malformed line."""
    out: dict[str, tuple[float, float]] = {}
    section = None
    try:
        text = Path(path).read_text(encoding="utf-8-sig", errors="strict")
    except UnicodeDecodeError:
        text = Path(path).read_text(encoding="gb18030", errors="replace")
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split(";", 1)[0].strip()
        match = SECTION.match(line)
        if match:
            section = match.group(1).upper()
        elif line and section == "COORDINATES":
            fields = line.split()
            try:
                out[fields[0]] = (float(fields[1]), float(fields[2]))
            except (IndexError, ValueError):
                raise InvalidInput(f"{Path(path).name}:{number}: a coordinate needs a node id, x and y") from None
    return out


def check_model(model: Path, grid: Grid, model_crs: str | None, grid_crs: str | None) -> int:
    """How many of a model's nodes lie on the grid, from its text alone (a request is checked
    before it is queued without waiting for the SWMM engine); InvalidInput when none does."""
    at = read_coordinates(model)
    if not at:
        raise InvalidInput(
            f"SWMM model {Path(model).name}: no [COORDINATES], so its nodes cannot be placed on the grid"
        )
    inside = grid.cells(_project(np.array(list(at.values()), float), model_crs, grid_crs))[2]
    if not inside.any():
        raise _off_grid(Path(model), len(at), "nodes", grid, grid_crs)
    return int(inside.sum())


def _project(xy: np.ndarray, model_crs: str | None, grid_crs: str | None) -> np.ndarray:
    """Model coordinates in the grid's CRS (taken as the same when either is not known)."""
    if not len(xy) or not model_crs or not grid_crs or crs_code(model_crs) == crs_code(grid_crs):
        return xy
    x, y = transform_points(model_crs, grid_crs, xy[:, 0], xy[:, 1])
    return np.column_stack([x, y])


def _off_grid(path: Path, count: int, what: str, grid: Grid, grid_crs: str | None) -> InvalidInput:
    west, south, east, north = grid.bounds
    return InvalidInput(
        f"SWMM model {path.name}: none of its {count} {what} lies on the grid ({west:.0f}, {south:.0f}) – "
        f"({east:.0f}, {north:.0f}) in {grid_crs or 'the DEM CRS'}; is the model's CRS right (--swmm-crs)?"
    )


def _named(ids: list[str]) -> list[str]:
    return ids[:LISTED] + ([f"... and {len(ids) - LISTED} more"] if len(ids) > LISTED else [])


class SwmmCoupling:
    """A SWMM model stepped alongside the surface model; pass it to `simulate(exchange=...)`.

    Open it before the surface run (a bad model is refused here, before anything runs) and
    `close` it after, whatever happened; `report` then gives SWMM's side of the books."""

    every_s = 0.0  # called after every surface step: inlets drain continuously

    def __init__(
        self,
        model: Path | str,
        grid: Grid,
        duration_s: float,
        *,
        model_crs: str | None = None,
        grid_crs: str | None = None,
        interval_s: float = 60.0,
        inlet: InletCapacity | None = None,
    ) -> None:
        self.path = Path(model)
        if not (math.isfinite(interval_s) and interval_s > 0):
            raise InvalidInput(f"the SWMM coupling interval must be a positive number of seconds, got {interval_s}")
        if not self.path.is_file():
            raise InvalidInput(f"SWMM model {self.path.name!r}: no such file")
        self.interval_s = float(interval_s)
        self.duration_s = float(duration_s)
        self.inlet = inlet or InletCapacity()
        self.model_crs = model_crs or grid_crs
        self.area = grid.dx * grid.dx
        self._workdir = Path(tempfile.mkdtemp(prefix="twin-swmm-"))
        self._sim: Any = None
        self._errors: list[float] = []
        _ENGINE.acquire()
        self._engine = True
        try:
            self._open()
            at = read_coordinates(self.path)
            if not at:
                raise InvalidInput(
                    f"SWMM model {self.path.name}: no [COORDINATES], so its nodes cannot be placed on the grid"
                )
            self._place(grid, at, grid_crs)
        except BaseException:
            self.close()
            raise

    # ----- set-up ----------------------------------------------------------------------------------
    def _open(self) -> None:
        from pyswmm import Nodes, Simulation

        report = self._workdir / "model.rpt"
        try:
            self._sim = Simulation(str(self.path), str(report), str(self._workdir / "model.out"))
        except Exception as exc:  # pyswmm raises plain Exceptions; SWMM explains in its report
            self._sim = None
            raise InvalidInput(f"SWMM model {self.path.name}: {_swmm_errors(report) or str(exc).strip()}") from None
        sim = self._sim
        units = str(sim.flow_units).upper()
        if units not in FLOW_M3S:
            raise InvalidInput(f"SWMM model {self.path.name}: unknown flow units {units!r}")
        self.flow_m3s = FLOW_M3S[units]
        self.metre = FEET if str(sim.system_units).upper() == "US" else 1.0
        self.volume_m3 = self.metre**3
        end = sim.start_time + timedelta(seconds=math.ceil(self.duration_s + 2 * self.interval_s))
        sim.end_time = end
        if sim.report_start > end:
            sim.report_start = sim.start_time
        sim.add_after_end(lambda: self._keep_errors(sim))  # SWMM works its continuity out at the end
        self._nodes = Nodes(sim)

    def _place(self, grid: Grid, at: dict[str, tuple[float, float]], grid_crs: str | None) -> None:
        junctions, others = [], 0
        for node in self._nodes:
            if node.is_junction():
                junctions.append(node)
            else:
                others += 1
        located = [n for n in junctions if n.nodeid in at]
        self.without_coordinates = [n.nodeid for n in junctions if n.nodeid not in at]
        self.other_nodes = others
        xy = _project(np.array([at[n.nodeid] for n in located], dtype=float).reshape(-1, 2), self.model_crs, grid_crs)
        rows, cols, inside = grid.cells(xy)
        self.outside = [n.nodeid for n, keep in zip(located, inside, strict=True) if not keep]
        if not inside.any():
            raise _off_grid(self.path, len(junctions), "junctions", grid, grid_crs)
        self.nodes = [n for n, keep in zip(located, inside, strict=True) if keep]
        self.ids = [n.nodeid for n in self.nodes]
        self.xy = xy[inside]
        self.rows, self.cols = rows[inside], cols[inside]
        flat = self.rows * grid.shape[1] + self.cols
        self.cells, self.where = np.unique(flat, return_inverse=True)
        self.z_cell = grid.z.reshape(-1)[flat]
        for node in self.nodes:
            node.ponding_area = 0.0  # a flooded node gives its water back to the grid, not to a pond
        count = len(self.nodes)
        self.rim = np.array([n.invert_elevation + n.full_depth for n in self.nodes]) * self.metre
        self.head = np.array([n.invert_elevation + n.initial_depth for n in self.nodes]) * self.metre
        self.to_node = np.zeros(count)  # m³ each node took from the surface
        self.from_node = np.zeros(count)  # m³ each node's flooding put back on the surface
        self.gathered = np.zeros(count)  # taken since the last SWMM advance
        self.pending = np.zeros(count)  # flooded in SWMM, not yet back on the grid
        self.release_rate = np.zeros(count)
        self.flood_seen = np.zeros(count)
        self.peak_flooding = np.zeros(count)  # m³/s
        self.peak_surcharge = np.full(count, -np.inf)  # m of head over the rim
        self.accepting = np.ones(count, bool)
        self.t_last = self.swmm_t = 0.0
        self.next_sync = self.interval_s
        self.finished = False
        self.routing: dict[str, float] = {}
        self._start()

    def _start(self) -> None:
        """Take SWMM's first, shortened routing step with no inflow. SWMM books a changed inflow
        as the mean of the old and new rates over the first step after the change; over a run
        those half-steps cancel out, except when the first change falls on that short step."""
        self._sim.step_advance(1)
        next(self._sim)
        self.swmm_t = (self._sim.current_time - self._sim.start_time).total_seconds()

    # ----- the exchange --------------------------------------------------------------------------------
    def __call__(self, t: float, h: np.ndarray) -> tuple[float, float]:
        """Drain the inlets over the step that ended at `t`, give back flooding; advance SWMM when due."""
        dt = t - self.t_last
        self.t_last = t
        if dt <= 0.0:
            return 0.0, 0.0
        flat = h.reshape(-1)
        depth = flat[self.cells][self.where]
        over = np.where(self.head <= self.z_cell, depth, self.z_cell + depth - self.head)
        want = self.inlet.flow(over) * self.accepting * (dt / self.area)  # depth each node would take
        want_cell = np.bincount(self.where, want, len(self.cells))
        have = flat[self.cells]
        take_cell = np.minimum(have, want_cell)
        share = np.divide(take_cell, want_cell, out=np.zeros_like(want_cell), where=want_cell > 0)
        taken = want * share[self.where] * self.area
        release = np.minimum(self.pending, self.release_rate * dt)
        self.pending -= release
        add_cell = np.bincount(self.where, release, len(self.cells)) / self.area
        flat[self.cells] = (have - take_cell) + add_cell
        self.gathered += taken
        self.to_node += taken
        self.from_node += release
        if t >= self.next_sync - 1e-9 or t >= self.duration_s - 1e-9:
            self._advance(t, final=t >= self.duration_s - 1e-9)
        return float(take_cell.sum()) * self.area, float(add_cell.sum()) * self.area

    def _advance(self, t: float, final: bool) -> None:
        """Run SWMM up to the surface's time with what the inlets took as lateral inflow."""
        stride = int(round(t - self.swmm_t))
        if final:
            stride = max(stride, 1)
        self.next_sync = t + self.interval_s
        if stride < 1 or self.finished:
            return  # less than SWMM's one-second clock: the water waits for the next advance
        rates = np.maximum(self.gathered, 0.0) / stride / self.flow_m3s
        for node, rate in zip(self.nodes, rates, strict=True):
            node.generated_inflow(float(rate))
        self._sim.step_advance(stride)
        try:
            next(self._sim)
        except StopIteration:
            self.finished = True
        before, self.swmm_t = self.swmm_t, (self._sim.current_time - self._sim.start_time).total_seconds()
        # SWMM ends a stride on a routing step, often past it: what it got over and above (or
        # short of) the water gathered is settled in the next interval's rate
        self.gathered -= rates * self.flow_m3s * (self.swmm_t - before)
        flooded = np.array([n.statistics["flooding_volume"] for n in self.nodes]) * self.volume_m3
        self.pending += np.maximum(flooded - self.flood_seen, 0.0)
        self.flood_seen = flooded
        self.release_rate = self.pending / self.interval_s
        self.accepting = self.pending <= 0.0
        self.head = np.array([n.head for n in self.nodes]) * self.metre
        rate = np.array([n.flooding for n in self.nodes]) * self.flow_m3s
        np.maximum(self.peak_flooding, rate, out=self.peak_flooding)
        np.maximum(self.peak_surcharge, self.head - self.rim, out=self.peak_surcharge)
        if final or self.finished:
            from pyswmm import SystemStats

            self.routing = {k: float(v) for k, v in SystemStats(self._sim).routing_stats.items()}

    # ----- the end ---------------------------------------------------------------------------------------
    def _keep_errors(self, sim: Any) -> None:
        self._errors = [float(sim.runoff_error), float(sim.flow_routing_error)]

    def close(self) -> None:
        """End SWMM (it works out its continuity), drop its files, let the next run have the engine."""
        try:
            if self._sim is not None:
                sim, self._sim = self._sim, None
                sim.close()
        finally:
            shutil.rmtree(self._workdir, ignore_errors=True)
            if self._engine:
                self._engine = False
                _ENGINE.release()

    def report(self, top: int = 10) -> dict[str, Any]:
        """Both sides of the exchange, node by node, SWMM's own routing totals and continuity error."""
        vol = self.volume_m3
        routing = {
            f"{key}_m3": round(self.routing.get(key, math.nan) * vol, 6)
            for key in ("external_inflow", "wet_weather_inflow", "dry_weather_inflow", "flooding", "outflow")
        }
        runoff_error, routing_error = (self._errors + [math.nan, math.nan])[:2]
        nodes = [
            {
                "node_id": node_id,
                "x": round(float(x), 3),
                "y": round(float(y), 3),
                "to_sewer_m3": round(float(inn), 4),
                "from_sewer_m3": round(float(out), 4),
                "peak_flooding_m3s": round(float(peak), 5),
                "peak_surcharge_m": round(float(sur), 3) if np.isfinite(sur) else None,
            }
            for node_id, (x, y), inn, out, peak, sur in zip(
                self.ids, self.xy, self.to_node, self.from_node, self.peak_flooding, self.peak_surcharge, strict=True
            )
        ]
        surcharged = sorted((n for n in nodes if n["peak_flooding_m3s"] > 0), key=lambda n: -n["peak_flooding_m3s"])
        return {
            "model": self.path.name,
            "crs": self.model_crs,
            "interval_s": self.interval_s,
            "inlet": {
                "perimeter_m": self.inlet.perimeter_m,
                "open_area_m2": self.inlet.open_area_m2,
                "clogging": self.inlet.clogging,
                "fixed_m3s": self.inlet.fixed_m3s,
            },
            "coupled_nodes": len(self.ids),
            "outside_grid": _named(self.outside),
            "without_coordinates": _named(self.without_coordinates),
            "other_nodes_uncoupled": self.other_nodes,
            "to_sewer_m3": round(float(self.to_node.sum()), 6),
            "from_sewer_m3": round(float(self.from_node.sum()), 6),
            "flooding_not_yet_returned_m3": round(float(self.pending.sum()), 6),
            "inflow_not_yet_given_m3": round(float(self.gathered.sum()), 6),
            "swmm_routing": routing,
            "swmm_continuity_error_pct": round(routing_error, 4),
            "swmm_runoff_continuity_error_pct": round(runoff_error, 4),
            "nodes": [n for n in nodes if n["to_sewer_m3"] > 0 or n["from_sewer_m3"] > 0],
            "surcharge_nodes": surcharged[:top],
        }


def _swmm_errors(report: Path) -> str:
    """SWMM's ERROR lines from its report file, joined into one line."""
    if not report.is_file():
        return ""
    lines = report.read_text(encoding="utf-8", errors="replace").splitlines()
    found = []
    for k, line in enumerate(lines):
        if "ERROR" in line:
            detail = lines[k + 1].strip() if k + 1 < len(lines) and lines[k + 1].startswith("  ") else ""
            found.append(" ".join(part for part in (line.strip(), detail) if part))
    return "; ".join(found[:3])
