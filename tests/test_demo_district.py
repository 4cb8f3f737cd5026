"""`twin demo --no-serve` end to end: the generated district, loaded and served over OGC API."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import geopandas as gpd
import pytest
from fastapi.testclient import TestClient

from tests.demo_twin import shared_demo
from twin.api.app import create_app
from twin.store import open_store

PAST = "2020-01-01T00:00:00Z"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_demo(tmp_path_factory)


@pytest.fixture(scope="module")
def manifest(demo: Path) -> dict:
    return json.loads((demo / "sources" / "manifest.json").read_text())


@pytest.fixture(scope="module")
def client(demo: Path):
    store = open_store(demo)
    with TestClient(create_app(store)) as test_client:
        yield test_client
    store.close()


def test_collections_list_every_manifest_layer_with_its_description(client, manifest):
    collections = {c["id"]: c for c in client.get("/collections").json()["collections"]}
    for entry in manifest["layers"]:
        got = collections[entry["id"]]
        assert (got["kind"], got["scale_band"], got["scenario"]) == (
            entry["kind"],
            entry["scale_band"],
            entry["scenario"],
        )
    for raster in manifest["rasters"]:
        assert collections[raster["id"]]["kind"] == raster["kind"]
    bands = {c["scale_band"] for c in collections.values()}
    assert {"1:500", "1:2000", "1:10000"} <= bands
    assert collections["buildings_planned"]["scenario"] == "planned"
    assert collections["buildings_500"]["extent"]["temporal"]["interval"] == [["2015-01-01T00:00:00Z", None]]


def test_every_layer_starts_at_a_date_of_its_data_not_of_the_build(client):
    """The demo is reproducible: no layer's history may begin on the day the demo was built."""
    today = datetime.now(UTC).date().isoformat()
    for collection in client.get("/collections").json()["collections"]:
        start = collection["extent"]["temporal"]["interval"][0][0]
        assert start is not None and not start.startswith(today), (collection["id"], start)


def test_collections_sit_over_the_district(client, manifest):
    minlon, minlat, maxlon, maxlat = manifest["bbox_lonlat"]
    extent = client.get("/collections/water_pipes").json()["extent"]["spatial"]["bbox"][0]
    assert minlon - 0.01 < extent[0] < extent[2] < maxlon + 0.01
    assert minlat - 0.01 < extent[1] < extent[3] < maxlat + 0.01


def test_past_and_present_give_the_versions_of_their_time(client, manifest):
    history = manifest["history"]
    bbox = ",".join(str(v) for v in manifest["bbox_lonlat"])

    def buildings(when: str | None) -> dict[str, dict]:
        params = {"bbox": bbox, "limit": 10000, **({"datetime": when} if when else {})}
        body = client.get("/collections/buildings_500/items", params=params).json()
        assert body["numberReturned"] == body["numberMatched"]
        return {f["id"]: f["properties"] for f in body["features"]}

    past, now = buildings(PAST), buildings(None)
    assert set(history["demolished"]) <= set(past) and not set(history["demolished"]) & set(now)
    assert set(history["new"]) <= set(now) and not set(history["new"]) & set(past)
    for bid in history["changed"]:
        assert (past[bid]["floors"], past[bid]["height"]) != (now[bid]["floors"], now[bid]["height"])
        assert past[bid]["twin:valid_to"] == "2021-06-01T00:00:00Z" and now[bid]["twin:valid_to"] is None
    unchanged = set(past) & set(now) - set(history["changed"])
    assert unchanged and all(past[b]["floors"] == now[b]["floors"] for b in unchanged)


def test_networks_and_sensors_are_loaded(demo, manifest):
    with open_store(demo) as store:
        water = store.get_layer("water_pipes")
        assert water.feature_count == manifest["networks"]["water"]["pipe_count"] >= 2000
        assert water.metadata["network"] == "water" and water.metadata["nodes_layer"] == "water_nodes"
        sensors = store.query("sensors", limit=None).features
        assert len(sensors) == store.get_layer("sensors").feature_count > 0
        readings = store.query_observations(sensors[0].fid)
        assert len(readings) == 24 * 12  # a day every five minutes
        dem = store.get_layer("dem").metadata["raster"]
        assert store.assets.exists(dem["asset"]) and dem["crs"] == "EPSG:4549"


def test_a_building_is_found_by_its_address(client, demo, manifest):
    entry = next(e for e in manifest["layers"] if e["id"] == "buildings_2000")
    source = gpd.read_file(demo / "sources" / entry["path"], layer=entry["layer"])
    wanted = source.iloc[len(source) // 2]
    page = client.get("/collections/buildings_2000/items", params={"address": wanted["address"]}).json()
    assert [f["properties"]["bid"] for f in page["features"]] == [wanted["bid"]]


def test_gdal_lists_the_layers(demo, manifest):
    if shutil.which("ogrinfo") is None:
        pytest.skip("ogrinfo (Debian gdal-bin) is not installed")
    listing = subprocess.run(["ogrinfo", "-ro", "-q", str(demo / "twin.gpkg")], capture_output=True, text=True)
    assert listing.returncode == 0, listing.stderr
    listed = set(re.findall(r"^\d+: (\S+)", listing.stdout, re.MULTILINE))
    assert {entry["id"] for entry in manifest["layers"]} <= listed


def test_second_demo_into_the_same_directory_is_refused(demo):
    result = subprocess.run(
        [sys.executable, "-c", "from twin.cli import main; main()", "demo", "--no-serve", "--data", str(demo)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "already holds a twin" in result.stderr
