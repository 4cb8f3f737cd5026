"""Point clouds: every LAS/LAZ/COPC test file converts or is refused clearly; what converts is exact.

The expected coordinates come from the file through laspy and from pyproj directly (not from
`twin.crs`): every point decoded from the built glb tiles, taken through the tileset's root
transform to ECEF and back to the file's CRS, must equal a point of the file to a millimetre, with
its class and intensity. Every glb passes the Khronos glTF validator.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import laspy
import numpy as np
import pytest
from fastapi.testclient import TestClient
from pyproj import CRS, Transformer
from scipy.spatial import cKDTree

from ingestion.pointcloud import ingest_pointcloud
from tests.conftest import TESTDATA, shared_file
from tiles.threed.build import ensure_built
from tiles.threed.gltf import accessor_array, decompress_glb, read_glb
from tiles.threed.validate import check_tileset, validate_glbs, validator_available
from twin.model import InvalidInput, TimeFilter
from twin.store import init_store

PROJECT_CRS = "EPSG:5070"  # NAD83 / Conus Albers: every US test file lies in its area
GEOID = -21.5  # a plausible undulation, so the test sees the vertical datum applied
FOLDER = "pointcloud/laspy"
# What each file must do; any other file in the folder must at least convert or fail clearly.
EXPECTED = {
    "1_4_w_evlr.laz": "converts",
    "autzen_trim.laz": "converts",
    "file_with_both_wkt_and_geotiff_vlrs.las": "converts",
    "extrabytes.las": "no CRS",
    "simple.las": "no CRS",
    "simple.laz": "no CRS",
    "vegetation_1_3.las": "no CRS",
    "simple.copc.laz": "outside the area",  # labelled Oregon LCC in metres, the numbers are feet
    "simple1_4.las": "outside the area",  # lon/lat labels on numbers up to 226
}


def folder_files() -> list[str]:
    folder = TESTDATA / FOLDER
    return sorted(p.name for p in folder.glob("*.la[sz]")) if folder.is_dir() else sorted(EXPECTED)


@pytest.fixture
def store(tmp_path):
    twin = init_store(tmp_path / "twin", PROJECT_CRS)
    twin.set_meta("geoid_offset", str(GEOID))
    yield twin
    twin.close()


def state(store) -> tuple:
    layers = [(layer.id, layer.version) for layer in store.list_layers()]
    return layers, store.assets.keys()


# ----- decoding what was built, independently of the writer ---------------------------------------------
def decode_tileset(folder: Path) -> dict[str, np.ndarray]:
    """Every point of every tile as ECEF, with class and intensity (and linear colours when present)."""
    import json

    document = json.loads((folder / "tileset.json").read_text())
    frame = np.asarray(document["root"]["transform"], dtype=float).reshape(4, 4).T
    out: dict[str, list[np.ndarray]] = {"ecef": [], "classification": [], "intensity": [], "color": []}

    def visit(tile: dict) -> None:
        if "content" in tile:
            gltf, binary = read_glb(decompress_glb((folder / tile["content"]["uri"]).read_bytes()))
            node = gltf["nodes"][0]
            primitive = gltf["meshes"][0]["primitives"][0]
            assert primitive["mode"] == 0
            raw = accessor_array(gltf, binary, primitive["attributes"]["POSITION"]).astype(np.float64)
            yup = raw * np.array(node.get("scale", [1, 1, 1])) + np.array(node["translation"])
            enu = np.column_stack([yup[:, 0], -yup[:, 2], yup[:, 1]])
            out["ecef"].append((frame @ np.column_stack([enu, np.ones(len(enu))]).T).T[:, :3])
            for name, key in (("classification", "_CLASSIFICATION"), ("intensity", "_INTENSITY")):
                out[name].append(accessor_array(gltf, binary, primitive["attributes"][key])[:, 0])
            if "COLOR_0" in primitive["attributes"]:
                out["color"].append(accessor_array(gltf, binary, primitive["attributes"]["COLOR_0"]))
        for child in tile.get("children", []):
            visit(child)

    visit(document["root"])
    return {k: np.concatenate(v) for k, v in out.items() if v}


def to_source(ecef: np.ndarray, source: CRS) -> np.ndarray:
    """ECEF back to the file's x, y (its horizontal CRS) and z (its height unit), with pyproj only."""
    lon, lat, h = Transformer.from_crs("EPSG:4978", "EPSG:4979", always_xy=True).transform(*ecef.T)
    horizontal = source.sub_crs_list[0] if source.is_compound else source
    # the inverse of the forward operation, so both directions use the same datum shift
    x, y = Transformer.from_crs(horizontal, "OGC:CRS84", always_xy=True).transform(lon, lat, direction="INVERSE")
    vertical = source.sub_crs_list[1] if source.is_compound else horizontal
    unit = 1.0 if vertical.is_geographic else vertical.axis_info[-1].unit_conversion_factor
    return np.column_stack([x, y, (h - GEOID) / unit]), unit


def assert_exact(folder: Path, path: Path, crs: CRS) -> dict[str, np.ndarray]:
    las = laspy.read(path)
    decoded = decode_tileset(folder)
    assert len(decoded["ecef"]) == len(las.points)
    xyz, unit = to_source(decoded["ecef"], crs)
    original = np.column_stack([las.x, las.y, las.z])
    distance, nearest = cKDTree(original).query(xyz)
    assert distance.max() * unit < 0.001, f"worst point is {distance.max() * unit * 1000:.2f} mm off"
    unique_rows, counts = np.unique(original, axis=0, return_counts=True)
    alone = cKDTree(unique_rows[counts == 1]).query(xyz)[0] < 1e-6  # points no other point shares
    assert np.array_equal(decoded["classification"][alone], np.asarray(las.classification)[nearest[alone]])
    assert np.array_equal(decoded["intensity"][alone], np.asarray(las.intensity)[nearest[alone]])
    return {"nearest": nearest, **decoded}


# ----- every file of the folder ------------------------------------------------------------------------
@pytest.mark.parametrize("name", folder_files())
def test_every_file_converts_or_is_refused_clearly(store, name):
    path = shared_file(f"{FOLDER}/{name}")
    expected = EXPECTED.get(name)
    before = state(store)
    try:
        report = ingest_pointcloud(store, path)
    except InvalidInput as exc:
        message = str(exc)
        assert "\n" not in message and path.name in message and len(message) < 300, message
        assert expected is None or expected in message, message
        assert state(store) == before  # nothing written
        return
    assert expected in (None, "converts"), f"{name} should have been refused ({expected})"
    built = ensure_built(store, report.layer)
    tileset = check_tileset(built.folder / "tileset.json")
    assert tileset.ok, tileset.errors
    if validator_available():
        reports = validate_glbs(sorted((built.folder / "tiles").glob("*.glb")))
        assert reports and all(r["numErrors"] == 0 for r in reports), [r["messages"][:3] for r in reports]
    crs = laspy.read(path).header.parse_crs()
    assert_exact(built.folder, path, crs)


def test_crs_option_places_a_file_without_one_and_keeps_colours(store):
    path = shared_file(f"{FOLDER}/simple.las")
    report = ingest_pointcloud(store, path, source_crs="EPSG:2992")  # Oregon Lambert, international feet
    built = ensure_built(store, report.layer)
    lon, lat, _ = built.summary["anchor"]
    assert abs(lon - -123.07) < 0.05 and abs(lat - 44.06) < 0.05  # Autzen Stadium, Eugene, Oregon
    decoded = assert_exact(built.folder, path, CRS.from_user_input("EPSG:2992"))
    las = laspy.read(path)
    rgb = np.column_stack([las.red, las.green, las.blue]).astype(float)
    rgb = rgb / 65535.0 if rgb.max() > 255 else rgb / 255.0
    srgb = np.floor(rgb * 255.0) / 255.0
    linear = np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)
    assert np.abs(decoded["color"] - linear[decoded["nearest"]]).max() < 1.5 / 255.0
    feature = next(iter(store.iter_features(report.layer, time=TimeFilter(None, None))))
    assert feature.properties["point_count"] == len(las.points) and feature.properties["has_color"]
    assert sum(feature.properties["classes"].values()) == len(las.points)


def test_copc_converts_with_the_right_crs(store):
    """simple.copc.laz says Oregon LCC in metres over numbers in feet: with the right CRS it is exact."""
    path = shared_file(f"{FOLDER}/simple.copc.laz")
    built = ensure_built(store, ingest_pointcloud(store, path, source_crs="EPSG:2992").layer)
    assert_exact(built.folder, path, CRS.from_user_input("EPSG:2992"))


def test_octree_levels_sample_and_halve_their_error(store):
    path = shared_file(f"{FOLDER}/autzen_trim.laz")
    built = ensure_built(store, ingest_pointcloud(store, path).layer)
    import json

    document = json.loads((built.folder / "tileset.json").read_text())
    root = document["root"]
    assert root["refine"] == "ADD" and root["children"], "110,000 points need more than one tile"
    for child in root["children"]:
        assert child["geometricError"] == pytest.approx(root["geometricError"] / 2) or child["geometricError"] == 0
    assert built.summary["points"] == 110_000 and built.summary["tiles"] > 1


def test_corrupt_and_wrong_files_are_refused(store, tmp_path):
    data = shared_file(f"{FOLDER}/simple.laz").read_bytes()
    truncated = tmp_path / "truncated.laz"
    truncated.write_bytes(data[: len(data) // 2])
    text = tmp_path / "notes.las"
    text.write_text("not a point cloud")
    before = state(store)
    for path, crs, words in (
        (truncated, "EPSG:2992", "truncated.laz"),
        (text, "EPSG:2992", "not a readable LAS/LAZ file"),
        (shared_file(f"{FOLDER}/simple.las"), "EPSG:4549", "outside the area"),  # a Chinese CRS for Oregon
        (shared_file(f"{FOLDER}/simple.las"), "EPSG:99999", "unknown CRS"),
    ):
        with pytest.raises(InvalidInput, match=words):
            ingest_pointcloud(store, path, source_crs=crs)
    assert state(store) == before


def test_cli_exit_code_two_with_one_line(tmp_path):
    data = tmp_path / "cli"
    init_store(data, PROJECT_CRS).close()
    path = shared_file(f"{FOLDER}/simple.las")
    command = [sys.executable, "-c", "from twin.cli import main; main()", "ingest", "pointcloud", str(path)]
    refused = subprocess.run([*command, "--data", str(data)], capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and refused.stderr.strip().count("\n") == 0, refused.stderr
    assert "no CRS" in refused.stderr
    done = subprocess.run([*command, "--crs", "EPSG:2992", "--data", str(data)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert '"layer": "simple"' in done.stdout


def test_ingest_api_runs_the_reader_and_refuses_bad_uploads(store):
    from twin.api.app import create_app
    from twin.auth import KeyStore

    token = KeyStore(store.data_dir).create("loader", "editor")[1]
    with TestClient(create_app(store), raise_server_exceptions=False) as client:
        client.headers["Authorization"] = f"Bearer {token}"
        content = shared_file(f"{FOLDER}/simple.las").read_bytes()
        wrong = client.post("/ingest", files={"file": ("points.txt", b"x")}, data={"kind": "pointcloud"})
        assert wrong.status_code == 400 and "pointcloud" in wrong.json()["detail"]
        before = state(store)
        failed = client.post("/ingest", files={"file": ("simple.las", content)}, data={"kind": "pointcloud"})
        assert failed.status_code == 202
        job = wait(client, failed.headers["Location"])
        assert job["state"] == "failed" and "no CRS" in job["message"]
        assert state(store) == before
        ok = client.post(
            "/ingest", files={"file": ("simple.las", content)}, data={"kind": "pointcloud", "crs": "EPSG:2992"}
        )
        job = wait(client, ok.headers["Location"])
        assert job["state"] == "succeeded", job
        tileset = client.get("/3dtiles/simple/tileset.json")
        assert tileset.status_code == 200 and tileset.json()["root"]["refine"] == "ADD"
        client.app.state.jobs.close()


def wait(client: TestClient, url: str) -> dict:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        job = client.get(url).json()
        if job["state"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.05)
    raise AssertionError("job did not finish")


def test_cesium_draws_the_point_cloud_without_errors(tmp_path):
    """The POINTS glbs with enum property attributes load and draw in CesiumJS (headless Chromium)."""
    from PIL import Image

    from tests.browser import READY_MS, chromium, open_page, screenshot, serve_twin, wait_for
    from twin.api.threed import CESIUM_BUILD

    data = tmp_path / "served"
    twin = init_store(data, PROJECT_CRS)
    ingest_pointcloud(twin, shared_file(f"{FOLDER}/autzen_trim.laz"), layer_id="autzen")
    twin.close()
    with (
        serve_twin(data, tmp_path / "server.log", timeout_s=300) as server,
        chromium(CESIUM_BUILD / "Cesium.js") as browser,
    ):
        page, recorder = open_page(browser, {"width": 1000, "height": 650})
        page.goto(f"{server}/3dtiles/preview/autzen")
        wait_for(page, "window.previewState.ready || window.previewState.error", timeout_ms=READY_MS)
        state = page.evaluate("() => window.previewState")
        assert state["ready"] and state["error"] is None, state
        wait_for(page, "window.previewTileset.tilesLoaded === true", timeout_ms=READY_MS)
        page.wait_for_timeout(1500)
        pixels = np.asarray(Image.open(screenshot(page, "pointcloud")).convert("RGB"))
    assert set(recorder.statuses("/3dtiles/autzen/")) == {200}
    recorder.assert_clean()
    ground = np.array([0xD9, 0xDF, 0xD2])
    drawn = (np.abs(pixels.astype(int) - ground).max(axis=-1) > 30).sum()
    assert drawn > 0.005 * pixels.shape[0] * pixels.shape[1], "the points should cover part of the view"
