"""3D Tiles over HTTP on the demo district: the demo IFC on its parcel, tilesets, picking, the twin root.

The demo twin gets its IFC building as a current BIM layer, the same model as a planned layer
and as a layer demolished in 2019, so scenario and time choices of the twin root can be seen.
The tilesets are walked over HTTP with the structural checks, their glbs go through the Khronos
validator, and a minimal CesiumJS page loads the BIM tileset in headless Chromium (the
screenshot is kept in docs/img/bim.png for the README).
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import shapely
from fastapi.testclient import TestClient
from PIL import Image

from ingestion.ifc import ingest_ifc
from tests.api_fixtures import http_fetch
from tests.browser import chromium, open_page, screenshot, serve_twin, wait_for
from tests.test_ifc_ingest import landed_elements
from tiles.threed.gltf import decompress_glb, read_glb
from tiles.threed.metadata import decode_table
from tiles.threed.validate import check_glb_features, check_tileset, validate_glbs, validator_available
from twin.api.app import create_app
from twin.api.threed import CESIUM_BUILD
from twin.crs import CRS84, ECEF, transform_points
from twin.model import parse_instant
from twin.store import open_store

PLANNED, DEMOLISHED = "bim_planned_annex", "bim_old_hall"
DEMOLITION = datetime(2019, 3, 1, tzinfo=UTC)
READY_MS = 240_000


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    data = tmp_path_factory.mktemp("threed-demo") / "twin-data"
    result = subprocess.run(
        [sys.executable, "-c", "from twin.cli import main; main()", "demo", "--no-serve", "--data", str(data)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    manifest = json.loads((data / "sources" / "manifest.json").read_text())
    entry = manifest["ifc"]
    ifc = data / "sources" / entry["path"]
    with open_store(data) as store:
        ingest_ifc(store, ifc, layer_id=entry["id"], valid_from=parse_instant(entry["valid_from"]))
        ingest_ifc(store, ifc, layer_id=PLANNED, scenario="planned", valid_from=datetime(2024, 3, 1, tzinfo=UTC))
        ingest_ifc(store, ifc, layer_id=DEMOLISHED, valid_from=datetime(2010, 1, 1, tzinfo=UTC))
        store.close_features(DEMOLISHED, [f.fid for f in store.iter_features(DEMOLISHED)], at=DEMOLITION)
    return data, manifest


@pytest.fixture(scope="module")
def client(demo):
    store = open_store(demo[0])
    with TestClient(create_app(store), raise_server_exceptions=False) as test_client:
        yield test_client
    store.close()


def test_demo_building_lands_on_its_parcel(demo):
    data, manifest = demo
    entry, parcel_entry = manifest["ifc"], manifest["parcels"]["ifc"]
    parcel = shapely.from_wkt(parcel_entry["geometry"])
    footprint = shapely.from_wkt(entry["footprint"])
    with open_store(data) as store:
        features = list(store.iter_features(entry["id"]))
        drawn = shapely.union_all([f.geometry for f in features if f.geometry is not None])
        assert parcel.buffer(0.5).contains(drawn)
        assert shapely.hausdorff_distance(drawn.convex_hull, footprint) < 0.5
        heights = [f.properties["z_min"] for f in features if "z_min" in f.properties]
        origin_height = parcel_entry["expected_map_conversion_origin"][2]
        assert abs(min(heights) - origin_height) < 0.5  # the ground slab's underside, 0.25 m below the origin
        geoid = float(store.get_meta("geoid_offset") or 0)
        landed = np.concatenate(list(landed_elements(store, entry["id"]).values()))
    lon, lat, h = transform_points(ECEF, "EPSG:4979", landed[:, 0], landed[:, 1], landed[:, 2])
    x, y = transform_points(CRS84, manifest["crs"], lon, lat)
    assert parcel.buffer(0.5).contains(shapely.multipoints(np.column_stack([x, y])))
    assert abs(h.min() - (origin_height - 0.25 + geoid)) < 0.5  # the geoid setting lifts it to the terrain


def test_layer_tileset_over_http_passes_structural_checks_and_the_validator(client, demo):
    layer = demo[1]["ifc"]["id"]
    response = client.get(f"/3dtiles/{layer}/tileset.json")
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/json")
    document = response.json()
    assert document["asset"]["version"] == "1.1" and "box" in document["root"]["boundingVolume"]
    assert len(document["root"]["transform"]) == 16
    report = check_tileset("http://testserver" + f"/3dtiles/{layer}/tileset.json", http_fetch(client))
    assert report.errors == [] and report.tiles >= 1
    glbs = list(report.contents.values())
    if validator_available():
        assert [r["numErrors"] for r in validate_glbs(glbs)] == [0] * len(glbs)
    assert all(check_glb_features(data) == [] for data in glbs)
    first = next(iter(report.contents))
    content = client.get(first)
    assert content.headers["content-type"] == "model/gltf-binary"
    assert "immutable" in content.headers["cache-control"]


def test_a_picked_feature_gives_its_full_record(client, demo):
    data, manifest = demo
    layer = manifest["ifc"]["id"]
    report = check_tileset("http://testserver" + f"/3dtiles/{layer}/tileset.json", http_fetch(client))
    gltf, binary = read_glb(decompress_glb(next(iter(report.contents.values()))))

    def view(i: int) -> bytes:
        v = gltf["bufferViews"][i]
        return binary[v.get("byteOffset", 0) : v.get("byteOffset", 0) + v["byteLength"]]

    rows = decode_table(gltf, view)
    wall = next(row for row in rows if row["class"] == "IfcWall")
    record = client.get(f"/features/{layer}/{wall['id']}").json()
    assert record["id"] == wall["id"] and record["properties"]["GlobalId"] == wall["GlobalId"]
    assert record["properties"]["storey"] == wall["storey"]
    assert record["properties"]["psets"]["Pset_WallCommon"]["FireRating"] == "REI 120"
    lon, lat = np.array(record["geometry"]["coordinates"][0]).mean(axis=0)
    minlon, minlat, maxlon, maxlat = manifest["bbox_lonlat"]
    assert minlon < lon < maxlon and minlat < lat < maxlat
    missing = client.get(f"/features/{layer}/not-a-guid")
    assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"


def layers_of(document: dict) -> set[str]:
    """The BIM layers a root tileset references (buildings, pipes and meshes have their own tests)."""
    return {c["extras"]["layer"] for c in document["root"].get("children", []) if c["extras"]["kind"] == "bim"}


def test_twin_root_follows_scenario_and_time(client, demo):
    current = demo[1]["ifc"]["id"]
    now = client.get("/3dtiles/twin/tileset.json").json()
    assert layers_of(now) == {current}
    assert layers_of(client.get("/3dtiles/twin/tileset.json?scenario=planned").json()) == {current, PLANNED}
    past = client.get("/3dtiles/twin/tileset.json", params={"datetime": "2018-01-01T00:00:00Z"}).json()
    assert layers_of(past) == {DEMOLISHED}  # before the current building, while the old hall stood
    (old_hall,) = [c for c in past["root"]["children"] if c["extras"]["layer"] == DEMOLISHED]
    assert old_hall["content"]["uri"].startswith(f"../{DEMOLISHED}/tileset.json?datetime=")
    for query in ("", "?scenario=planned", "?datetime=2018-01-01T00:00:00Z"):
        report = check_tileset(f"http://testserver/3dtiles/twin/tileset.json{query}", http_fetch(client))
        assert report.errors == [] and report.tilesets >= 2, (query, report.errors)
    gone = client.get(f"/3dtiles/{DEMOLISHED}/tileset.json")
    assert gone.status_code == 404 and "no features" in gone.json()["detail"]
    assert client.get("/3dtiles/twin/tileset.json", params={"datetime": "2000-01-01"}).status_code == 404


def test_bad_requests_get_problems(client, demo):
    layer = demo[1]["ifc"]["id"]
    for url, status in [
        ("/3dtiles/roads_500/tileset.json", 404),
        ("/3dtiles/no_such_layer/tileset.json", 404),
        (f"/3dtiles/{layer}/tileset.json?datetime=yesterday", 400),
        ("/3dtiles/twin/tileset.json?scenario=imagined", 400),
        (f"/3dtiles/{layer}/0123456789abcdef01234567/tiles/0.glb", 404),
        (f"/3dtiles/{layer}/zzz/tiles/0.glb", 404),
    ]:
        response = client.get(url)
        assert response.status_code == status, (url, response.text)
        assert response.headers["content-type"] == "application/problem+json"
    key = client.get(f"/3dtiles/{layer}/tileset.json").json()["root"]["content"]["uri"].split("/")[0]
    escape = client.get(f"/3dtiles/{layer}/{key}/..%2F..%2F..%2F..%2Ftwin.gpkg")
    assert escape.status_code == 404


# ----- the tileset in CesiumJS (headless Chromium) -----------------------------------------------------
@pytest.fixture(scope="module")
def server(demo, tmp_path_factory):
    with serve_twin(demo[0], tmp_path_factory.mktemp("threed-server") / "server.log") as base:
        yield base


def test_cesium_loads_the_bim_tileset_without_errors(server, demo):
    layer = demo[1]["ifc"]["id"]
    with chromium(CESIUM_BUILD / "Cesium.js") as browser:
        page, recorder = open_page(browser, {"width": 1100, "height": 700})
        page.goto(f"{server}/3dtiles/preview/{layer}")
        wait_for(page, "window.previewState.ready || window.previewState.error", timeout_ms=READY_MS)
        state = page.evaluate("() => window.previewState")
        assert state["ready"] and state["error"] is None, state
        wait_for(page, "window.previewTileset.tilesLoaded === true", timeout_ms=READY_MS)
        loaded = page.evaluate("() => window.previewTileset.tilesLoaded")
        page.wait_for_timeout(1500)  # a few more frames at software-rendering speed
        pixels = np.asarray(Image.open(screenshot(page, "bim")).convert("RGB"))
    assert loaded is True
    glbs = recorder.statuses(f"/3dtiles/{layer}/")
    assert glbs and set(glbs) == {200}
    assert recorder.statuses("/static/cesium/Cesium.js") == [200]
    recorder.assert_clean()
    ground = np.array([0xD9, 0xDF, 0xD2])
    drawn = (np.abs(pixels.astype(int) - ground).max(axis=-1) > 30).sum()
    assert drawn > 0.02 * pixels.shape[0] * pixels.shape[1], "the building should cover part of the view"
