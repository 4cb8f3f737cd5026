"""Flood model: cell updates per second of the surface model, numba against plain numpy, and the demo storm.

Both implementations run the same scheme on the same wet, rough grid for a fixed number of
steps (the step is fixed too, so the work is identical); the numba figure is on every core the
machine has. Then the demo district's 3-year, 2-hour Nanjing storm runs end to end.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numba
import numpy as np

from bench.report import heading, line
from twin.analysis.flood import FloodParams, design_storm, simulate

SIZES = (100_000, 1_000_000, 4_000_000)
NUMBA_STEPS = {100_000: 400, 1_000_000: 60, 4_000_000: 20}
NUMPY_STEPS = {100_000: 40, 1_000_000: 6, 4_000_000: 3}
DX = 2.0
DT = 0.2  # below α·Δx/√(g·h) for the deepest water on the grid, so every step is a full one


def terrain(cells: int) -> tuple[np.ndarray, np.ndarray]:
    """A sloping, rough surface half under water: wet and dry cells, flow in every direction."""
    n = int(round(np.sqrt(cells)))
    rng = np.random.default_rng(1)
    y, x = np.mgrid[0:n, 0:n] * DX
    z = 0.002 * x + 0.3 * np.sin(x / 37.0) * np.cos(y / 23.0) + rng.uniform(0.0, 0.2, (n, n))
    h0 = np.maximum(z.mean() - z, 0.0) + 0.02 * (rng.random((n, n)) < 0.5)
    return z, h0


def rate(z: np.ndarray, h0: np.ndarray, backend: str, steps: int) -> float:
    """Cell updates per second over `steps` fixed steps (after a warm-up step)."""
    simulate(z, DX, None, duration_s=DT, h0=h0, dt_max=DT, alpha=1.0, backend=backend, boundary="open")
    start = time.perf_counter()
    result = simulate(
        z, DX, None, duration_s=DT * steps, h0=h0, dt_max=DT, alpha=1.0, backend=backend, boundary="open",
        record_every_s=1e9,
    )  # fmt: skip
    elapsed = time.perf_counter() - start
    assert result.steps == steps
    return result.cell_updates / elapsed


def surface() -> None:
    heading(f"flood surface model: cell updates per second (numba on {numba.get_num_threads()} threads)")
    for cells in SIZES:
        z, h0 = terrain(cells)
        fast = rate(z, h0, "numba", NUMBA_STEPS[cells])
        slow = rate(z, h0, "numpy", NUMPY_STEPS[cells])
        line(f"{z.size:>9,} cells, numba", f"{fast / 1e6:8.1f} M/s   ({fast / slow:5.1f}× numpy)")
        line(f"{z.size:>9,} cells, plain numpy (same scheme)", f"{slow / 1e6:8.1f} M/s")


def demo_storm(resolution: float = 8.0) -> None:
    """The demo district, its 3-year 2-hour storm at `resolution` metres: wall time and answer."""
    from ingestion.manifest import load_manifest
    from sample_data.district import generate
    from twin.analysis.flood.twin_adapter import run_on_twin
    from twin.store import init_store

    heading(f"flood: demo district, Nanjing 3-year 2-hour storm, {resolution:g} m grid")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        manifest = generate(root / "sources", parts={"basemap", "dem", "networks", "sensors"})
        with init_store(root / "twin", manifest["crs"]) as store:
            load_manifest(store, root / "sources", manifest)
            storm = design_storm("nanjing", 3, 120)
            start = time.perf_counter()
            answer = run_on_twin(store, FloodParams(storm=storm, resolution_m=resolution), write=False)
            wall = time.perf_counter() - start
    model = answer["model"]
    low = {s["id"] for s in manifest["low_road_sections"]}
    named = {x["low_section_id"] for s in answer["road_sections"] for x in s.get("sensors", [])} & low
    line("wall time of the run (read, model, road sections)", f"{wall:8.1f} s")
    line("surface model", f"{model['wall_s']:8.1f} s, {model['steps']} steps, {model['cells']:,} cells")
    line("cell updates per second in the run", f"{model['cell_updates_per_s'] / 1e6:8.1f} M/s")
    line("mass balance relative error", f"{model['mass_balance']['relative_error']:.1e}")
    line("flooded road sections (> 0.15 m)", f"{len(answer['road_sections'])}")
    line("low road sections named by the answer", f"{len(named)} of {len(low)} ({', '.join(sorted(named))})")


def run() -> None:
    surface()
    demo_storm(float(os.environ.get("FLOOD_BENCH_RESOLUTION", "8")))
