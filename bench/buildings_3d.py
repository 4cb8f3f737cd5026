"""Extruded buildings per second: basemap footprints to LOD1 3D Tiles, demo district and a generated city.

Ours: `tiles.threed.buildings.build` on every footprint layer (ground from the DEM where there is
one, walls and earcut roofs, quadtree tiles with generalised levels of detail, per-feature
metadata, meshopt glb), timed from the features in memory to the files written.

Baseline, same footprints, same run: `trimesh.creation.extrude_polygon` per footprint (the
usual way to extrude a shapely polygon in Python), moved to its base height, all concatenated
and exported as one glb with `trimesh` — no georeferencing, tiles, levels of detail or
metadata, so it does less than ours. On the city it runs on a sample of footprints (its rate
does not depend on how many there are) to keep the benchmark short.

The city is `python -m sample_data OUT --size 20 --parts basemap`, generated once into the
temporary folder and kept between runs (the generator is deterministic).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import shapely
import trimesh

from bench.report import heading, line, timed
from ingestion.manifest import load_manifest
from tiles.threed import buildings
from twin.store import Store, init_store

CITY_KM = 20
SEED = 20240601
BASELINE_SAMPLE = 4000


def _footprint_manifest(manifest: dict) -> dict:
    """The manifest cut to the footprint layers and the DEM."""
    return {
        "layers": [e for e in manifest["layers"] if e["id"].startswith("buildings_")],
        "rasters": [r for r in manifest.get("rasters", []) if r.get("role") == "dem"],
    }


def _twin(sources: Path, manifest: dict, data: Path) -> Store:
    store = init_store(data, manifest["crs"])
    store.set_meta("geoid_offset", str(manifest.get("geoid_offset", 0.0)))
    seconds, _ = timed(lambda: load_manifest(store, sources, _footprint_manifest(manifest)))
    line("loaded the footprint layers into a twin", f"{seconds:.1f} s")
    return store


def _city_sources() -> Path:
    folder = Path(tempfile.gettempdir()) / f"cim-twin-bench-buildings-{CITY_KM}km-{SEED}"
    if not (folder / "manifest.json").exists():
        command = [sys.executable, "-m", "sample_data", str(folder), "--size", str(CITY_KM), "--seed", str(SEED)]
        seconds, _ = timed(lambda: subprocess.run([*command, "--parts", "basemap"], check=True, capture_output=True))
        line(f"generated the {CITY_KM} km city's basemap (first run only)", f"{seconds:.0f} s")
    return folder


def baseline(store: Store, features: list, out: Path) -> tuple[int, int]:
    """trimesh: extrude each footprint, lift it to its ground, one glb; returns (buildings, bytes)."""
    settings = buildings.ExtrudeSettings()
    heights = buildings.feature_heights(features, settings)
    chosen = [i for i in np.flatnonzero(np.isfinite(heights)).tolist() if features[i].geometry is not None]
    geometries = np.array([features[i].geometry for i in chosen], dtype=object)
    base = buildings.ground_heights(store, geometries)
    origin = shapely.get_coordinates(shapely.centroid(shapely.GeometryCollection(list(geometries))))[0]
    meshes = []
    for geometry, ground, height in zip(geometries, base, heights[chosen], strict=True):
        for part in shapely.get_parts(shapely.affinity.translate(geometry, -origin[0], -origin[1])):
            mesh = trimesh.creation.extrude_polygon(part, float(height))
            mesh.apply_translation([0.0, 0.0, float(ground)])
            meshes.append(mesh)
    data = trimesh.util.concatenate(meshes).export(file_type="glb")
    (out / "baseline.glb").write_bytes(data)
    return len(chosen), len(data)


def _layer(store: Store, layer, out: Path, sample: int | None) -> tuple[float, int, float, int]:
    """One layer, ours then the baseline: (our seconds, buildings, baseline seconds, buildings)."""
    features = list(store.iter_features(layer.id))
    seconds, summary = timed(lambda: buildings.build(store, layer, features, out / layer.id))
    line(
        f"{layer.id}: {summary['features']:,} buildings, {summary['tiles']} tiles",
        f"{seconds:.2f} s, {summary['features'] / seconds:,.0f} buildings/s, {summary['bytes'] / 1e6:.2f} MB "
        f"({summary['bytes'] / max(summary['features'], 1):,.0f} B/building)",
    )
    subset = features if sample is None else features[: min(sample, len(features))]
    base_seconds, (count, size) = timed(lambda: baseline(store, subset, out / "base"))
    line(
        f"  baseline trimesh extrude_polygon + glb ({count:,} buildings)",
        f"{base_seconds:.2f} s, {count / base_seconds:,.0f} buildings/s, {size / 1e6:.2f} MB "
        f"({size / max(count, 1):,.0f} B/building)",
    )
    return seconds, summary["features"], base_seconds, count


def _measure(name: str, store: Store, out: Path, sample: int | None) -> None:
    heading(f"buildings to 3D Tiles: {name}")
    runs = np.array(
        [_layer(store, layer, out, sample) for layer in store.list_layers() if buildings.is_extruded(layer)]
    )
    ours, theirs = runs[:, 1].sum() / runs[:, 0].sum(), runs[:, 3].sum() / runs[:, 2].sum()
    line(f"{name}: ours, all footprint layers", f"{ours:,.0f} buildings/s")
    line(f"{name}: baseline trimesh", f"{theirs:,.0f} buildings/s")
    line(f"{name}: ratio ours / trimesh", f"{ours / theirs:.1f}x")


def run() -> None:
    from sample_data.district import generate

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "out" / "base").mkdir(parents=True)
        manifest = generate(root / "sources", parts={"basemap", "dem"})
        with _twin(root / "sources", manifest, root / "demo") as store:
            _measure("demo district (2 km)", store, root / "out", None)
        sources = _city_sources()
        manifest = json.loads((sources / "manifest.json").read_text())
        (root / "city-out" / "base").mkdir(parents=True)
        with _twin(sources, manifest, root / "city") as store:
            _measure(f"generated city ({CITY_KM} km, no DEM)", store, root / "city-out", BASELINE_SAMPLE)


if __name__ == "__main__":
    run()
