"""The demo district under a 3-year, 2-hour Nanjing storm: the low road sections flood and are named."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
from rio_cogeo.cogeo import cog_validate

from ingestion.manifest import load_manifest
from sample_data.district import generate
from twin.analysis.flood import Cancelled, FloodParams, design_storm
from twin.analysis.flood.twin_adapter import ponding_on_twin, run_on_twin
from twin.model import NotFound
from twin.store import init_store

RESOLUTION = 8.0  # the 2 m DEM averaged over 4 × 4 blocks keeps the test short


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("flood")
    manifest = generate(root / "sources", parts={"basemap", "dem", "networks", "sensors"})
    store = init_store(root / "twin", manifest["crs"])
    load_manifest(store, root / "sources", manifest)
    yield store, manifest, root / "twin"
    store.close()


@pytest.fixture(scope="module")
def storm():
    return design_storm("nanjing", 3, 120)


@pytest.fixture(scope="module")
def answer(demo, storm):
    store, _, _ = demo
    return run_on_twin(store, FloodParams(storm=storm, resolution_m=RESOLUTION), result_id="flood")


def named_low_sections(answer: dict, manifest: dict) -> dict[str, dict]:
    """Each low section of the manifest and the reported section that covers its lowest point."""
    found = {}
    for low in manifest["low_road_sections"]:
        lowest = shapely.Point(low["lowest_point"])
        for section in answer["road_sections"]:
            if shapely.geometry.shape(section["geometry"]).distance(lowest) < RESOLUTION:
                found[low["id"]] = section
    return found


def test_the_storm_floods_every_low_road_section_and_names_it(answer, demo):
    _, manifest, _ = demo
    found = named_low_sections(answer, manifest)
    assert set(found) == {low["id"] for low in manifest["low_road_sections"]}
    for low in manifest["low_road_sections"]:
        section = found[low["id"]]
        assert section["road_name"] == low["road_name"]
        assert section["max_depth_m"] > 0.15
        assert section["time_above_limit_s"] > 0
        assert low["id"] in [s["low_section_id"] for s in section["sensors"]]  # named by its gauge


def test_mass_balance_and_storm_of_the_run(answer, storm):
    model = answer["model"]
    assert model["mass_balance"]["relative_error"] < 1e-3
    assert model["mass_balance"]["rain_in_m3"] == pytest.approx(
        storm.depth_mm / 1000 * np.prod(answer["grid"]["shape"]) * RESOLUTION**2, rel=1e-9
    )
    assert model["mass_balance"]["drained_m3"] > 0 and model["mass_balance"]["outflow_m3"] > 0
    assert answer["storm"]["depth_mm"] == pytest.approx(storm.depth_mm, abs=1e-3)
    assert answer["drainage"]["inlets"] > 100
    assert answer["inputs"]["roads_layer"] == "roads_2000"


def test_results_are_written_as_a_cog_layer_and_a_sections_layer(answer, demo):
    store, manifest, _ = demo
    raster = store.get_layer(answer["layers"]["max_depth"])
    meta = raster.metadata["raster"]
    path = store.assets.open_path(meta["asset"])
    assert cog_validate(str(path), quiet=True)[0]
    with rasterio.open(path) as src:
        depth = src.read(1)
        assert src.crs.to_string() == store.crs and src.nodata == 0.0
        for low in manifest["low_road_sections"]:
            row, col = src.index(*low["lowest_point"])
            assert depth[max(row - 1, 0) : row + 2, max(col - 1, 0) : col + 2].max() > 0.15, low["id"]
    sections = store.get_layer(answer["layers"]["road_sections"])
    assert sections.feature_count == len(answer["road_sections"])
    feature = next(store.iter_features(sections.id))
    assert feature.properties["max_depth_m"] > 0.15 and feature.geometry.geom_type == "LineString"


def test_static_ponding_names_the_low_sections_at_once(demo, storm):
    store, manifest, _ = demo
    quick = ponding_on_twin(store, storm.depth_mm, resolution_m=RESOLUTION)
    found = named_low_sections(quick, manifest)
    assert set(found) == {low["id"] for low in manifest["low_road_sections"]}
    assert quick["stored_m3"] + quick["outflow_m3"] == pytest.approx(quick["rain_m3"], rel=1e-9)


def test_a_cancelled_run_writes_nothing(demo, storm):
    store, _, _ = demo
    layers = {lay.id for lay in store.list_layers()}
    assets = set(store.assets.keys())
    with pytest.raises(Cancelled):
        run_on_twin(store, FloodParams(storm=storm, resolution_m=20.0), result_id="halted", cancel=lambda: True)
    assert {lay.id for lay in store.list_layers()} == layers
    assert set(store.assets.keys()) == assets


def test_unknown_dem_layer(demo, storm):
    store, _, _ = demo
    with pytest.raises(NotFound):
        run_on_twin(store, FloodParams(storm=storm), dem_layer="no_such_dem")


def twin_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "from twin.cli import main; main()", "analyze", "flood", *args],
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_cli_static_ponding_and_bad_storm(demo):
    _, manifest, data = demo
    done = twin_cli("--static", "--resolution", "20", "--data", str(data))
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["rain_mm"] == pytest.approx(design_storm("nanjing", 3, 120).depth_mm)
    assert answer["grid"]["cell_m"] == 20.0
    bad = twin_cli("--duration", "-30", "--data", str(data))
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0 and "duration" in bad.stderr
    unknown = twin_cli("--city", "atlantis", "--data", str(data))
    assert unknown.returncode == 2 and "atlantis" in unknown.stderr
    nodem = twin_cli("--dem", "no_such_dem", "--data", str(Path(data)))
    assert nodem.returncode == 2


def test_cli_replays_a_rain_gauge_as_static_ponding(demo):
    store, _, data = demo
    logged = sum(r.value for r in store.query_observations("RG002", quantity="rainfall"))
    done = twin_cli("--static", "--gauge", "RG002", "--resolution", "20", "--data", str(data))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["rain_mm"] == pytest.approx(logged)
    lonely = twin_cli("--static", "--start", "2024-07-15T00:00:00Z", "--data", str(data))
    assert lonely.returncode == 2 and "--gauge" in lonely.stderr and lonely.stderr.strip().count("\n") == 0
