"""Pipe networks to 3D Tiles: features and tiles per second, wall time, peak memory, output size.

Two twins: the demo district (`twin demo --no-serve`) and the city-sized networks
(`python -m sample_data OUT --size 20 --parts networks`: its water network, about 310,000 pipes
and 290,000 nodes, loaded with its manifest; `BENCH_PIPES_CITY_NETWORKS=water,gas,drainage`
loads the other networks too). Every pipe_network layer is built with `tiles.threed.pipes.build`
in a fresh process per twin (peak memory is that process's largest resident set). Baseline,
measured in the same run on a sample of the demo's pipes: one `trimesh.creation.cylinder` per
pipe (same sides) concatenated and exported as one glb with trimesh: no metadata, no
compression, no levels of detail.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import shapely

from bench.report import heading, line

CITY_KM = 20
CITY_NETWORKS = os.environ.get("BENCH_PIPES_CITY_NETWORKS", "water").split(",")
BASELINE_SAMPLE = 2000
BUILD = """
import json, resource, sys, time
from pathlib import Path
from tiles.threed import pipes
from twin.model import LayerKind
from twin.store import open_store
data, out = Path(sys.argv[1]), Path(sys.argv[2])
totals = {"features": 0, "tiles": 0, "bytes": 0, "triangles": 0, "layers": 0, "seconds": 0.0}
with open_store(data) as store:
    for layer in store.list_layers():
        if layer.kind != LayerKind.pipe_network:
            continue
        features = list(store.iter_features(layer.id))
        folder = out / layer.id
        folder.mkdir(parents=True)
        start = time.perf_counter()
        summary = pipes.build(store, layer, features, folder)
        totals["seconds"] += time.perf_counter() - start
        totals["layers"] += 1
        for key in ("features", "tiles", "bytes", "triangles"):
            totals[key] += summary[key]
totals["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(totals))
"""


def _build(data: Path, out: Path) -> dict:
    result = subprocess.run([sys.executable, "-c", BUILD, str(data), str(out)], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-2000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def _report(name: str, totals: dict) -> float:
    rate = totals["features"] / totals["seconds"]
    line(f"{name}: {totals['layers']} layers, {totals['features']:,} features", f"{totals['seconds']:.1f} s build")
    line(f"{name}: features per second", f"{rate:,.0f}")
    line(f"{name}: tiles per second ({totals['tiles']} tiles)", f"{totals['tiles'] / totals['seconds']:,.1f}")
    line(f"{name}: peak memory (build process)", f"{totals['peak_mb']:,.0f} MB")
    line(f"{name}: output ({totals['triangles']:,} triangles)", f"{totals['bytes'] / 2**20:,.1f} MiB")
    line(f"{name}: bytes per feature (all levels)", f"{totals['bytes'] / totals['features']:,.0f}")
    return rate


def _baseline(data: Path) -> tuple[float, float]:
    """trimesh: pipes per second and glb bytes per pipe, on a sample of the demo's pipes."""
    import trimesh

    from tiles.threed.pipes_mesh import circle_sides
    from twin.analysis.dem_sample import Dem
    from twin.analysis.pipe_solids import load_pipes, pipe_layers
    from twin.store import open_store

    with open_store(data) as store:
        solids = load_pipes(store, pipe_layers(store), dem=Dem.from_store(store))
    pick = np.random.default_rng(0).choice(len(solids), size=min(BASELINE_SAMPLE, len(solids)), replace=False)
    solids = solids.take(pick[np.isfinite(solids.bottom[pick]).all(axis=1)])
    ends = np.stack([shapely.get_coordinates(shapely.get_point(solids.geometry, i)) for i in (0, -1)], axis=1)
    centre = solids.bottom + solids.height[:, None] / 2
    points = np.concatenate([ends, centre[:, :, None]], axis=2)
    points -= points.reshape(-1, 3).min(axis=0)
    sides = circle_sides(solids.width)
    start = time.perf_counter()
    meshes = [
        trimesh.creation.cylinder(radius=w / 2, segment=seg, sections=int(s))
        for seg, w, s in zip(points, solids.width, sides, strict=True)
    ]
    glb = trimesh.util.concatenate(meshes).export(file_type="glb")
    seconds = time.perf_counter() - start
    return len(meshes) / seconds, len(glb) / len(meshes)


def run() -> None:
    heading("Pipe networks to 3D Tiles (tubes, shafts, symbols; meshopt; levels of detail)")
    with tempfile.TemporaryDirectory(prefix="pipes-3d-bench-") as tmp:
        root = Path(tmp)
        demo = root / "demo"
        subprocess.run(
            [sys.executable, "-c", "from twin.cli import main; main()", "demo", "--no-serve", "--data", str(demo)],
            check=True,
            capture_output=True,
        )
        demo_totals = _build(demo, root / "demo-out")
        ours = _report("demo", demo_totals)
        base_rate, base_bytes = _baseline(demo)
        line("baseline: trimesh cylinder per pipe + glb export (sample)", f"{base_rate:,.0f} pipes/s")
        line("baseline: glb bytes per pipe (no metadata, uncompressed)", f"{base_bytes:,.0f}")
        line("demo: speed-up over the trimesh baseline", f"{ours / base_rate:,.1f}x")
        line(
            "demo: size ratio, ours (every level) / baseline",
            f"{demo_totals['bytes'] / demo_totals['features'] / base_bytes:.2f}",
        )
        city_src, city = root / "city-src", root / "city"
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "sample_data", str(city_src), "--size", str(CITY_KM), "--parts", "networks"],
            check=True,
            capture_output=True,
        )
        _load(city_src, city)
        line(
            f"city ({CITY_KM} km, {'+'.join(CITY_NETWORKS)}): generated and loaded",
            f"{time.perf_counter() - start:.0f} s",
        )
        city_rate = _report(f"city {CITY_KM} km", _build(city, root / "city-out"))
        line(f"city {CITY_KM} km: speed-up over the trimesh baseline", f"{city_rate / base_rate:,.1f}x")


def _load(source: Path, data: Path) -> None:
    from ingestion.manifest import load_manifest
    from twin.store import init_store

    manifest = json.loads((source / "manifest.json").read_text())
    wanted = {f"{network}_{role}" for network in CITY_NETWORKS for role in ("pipes", "nodes")}
    manifest["layers"] = [entry for entry in manifest["layers"] if entry["id"] in wanted]
    with init_store(data, manifest.get("crs", "EPSG:4549")) as store:
        load_manifest(store, source, manifest)
