"""`POST /analysis/flood` as a job on a copy of the demo twin: results as layers, tiles and frames.

One short storm whose rain rises to its end (a Chicago storm with the peak last) is run through
the app with its job runner; the tests read what it stored through the raster, features, vector
tile and frame endpoints and check it against the demo's manifest (the low road sections the
generator made) and against the COG itself. A long run is cancelled and must leave nothing.
"""

from __future__ import annotations

import io
import json
import shutil
import time
from datetime import timedelta
from pathlib import Path

import mapbox_vector_tile
import morecantile
import numpy as np
import pytest
import rasterio
import rasterio.warp
import shapely
from fastapi.testclient import TestClient
from PIL import Image
from rio_cogeo.cogeo import cog_validate

from tests.demo_twin import shared_demo
from twin.analysis.flood.job import frames_folder
from twin.api.app import create_app
from twin.auth import KeyStore
from twin.store import open_store

WAIT_S = 120  # a bound on waiting for a job, not a performance claim
MAX_CELLS = 200_000  # the copy's twin.toml limit: the 2 m DEM whole (10^6 cells) is over it
CELL_M = 10.0
RISING = {"city": "nanjing", "return_period": 3, "duration_min": 30, "step_min": 5, "peak_ratio": 1.0}
PROBLEM = "application/problem+json"
TMS = morecantile.tms.get("WebMercatorQuad")


@pytest.fixture(scope="module")
def twin(tmp_path_factory: pytest.TempPathFactory):
    """A writable copy of the demo, its manifest, keys and a client whose app runs jobs."""
    data = tmp_path_factory.mktemp("flood-api") / "twin-data"
    shutil.copytree(shared_demo(tmp_path_factory), data)
    (data / "twin.toml").write_text(f"max_flood_cells = {MAX_CELLS}\n", encoding="utf-8")
    manifest = json.loads((data / "sources" / "manifest.json").read_text(encoding="utf-8"))
    store = open_store(data)
    keys = KeyStore(data)
    tokens = {role: keys.create(f"flood-{role}", role)[1] for role in ("reader", "editor")}
    with TestClient(create_app(store), raise_server_exceptions=False) as client:
        yield {"client": client, "store": store, "manifest": manifest, "tokens": tokens, "data": data}
    store.close()


def auth(twin: dict, role: str = "editor") -> dict[str, str]:
    return {"Authorization": f"Bearer {twin['tokens'][role]}"}


def wait_job(client: TestClient, job_id: str, *states: str) -> dict:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        job = client.get(f"/jobs/{job_id}").json()
        if job["state"] in states:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not reach {states}: {job}")


def lowest(manifest: dict, k: int) -> list[float]:
    return manifest["low_road_sections"][k]["lowest_point"]


@pytest.fixture(scope="module")
def run(twin: dict) -> dict:
    """The rising storm on the whole DEM at 10 m, with one output point at a low road's lowest point."""
    client, manifest = twin["client"], twin["manifest"]
    body = {
        "storm": RISING,
        "cell_m": CELL_M,
        "simulate_min": 30,
        "frame_every_min": 3,
        "crs": manifest["crs"],
        "points": [{"id": "dip", "coordinates": lowest(manifest, 0)}],
    }
    answer = client.post("/analysis/flood", json=body, headers=auth(twin))
    assert answer.status_code == 202, answer.text
    job = answer.json()
    assert job["kind"] == "flood" and answer.headers["location"].endswith(f"/jobs/{job['id']}")
    done = wait_job(client, job["id"], "succeeded", "failed", "cancelled")
    assert done["state"] == "succeeded", done["message"]
    return done


def test_the_job_reports_a_balanced_run_of_the_storm_asked_for(run):
    result = run["result"]
    assert run["progress"] == 1.0
    assert result["grid"]["cell_m"] == CELL_M and result["grid"]["shape"] == [200, 200]
    assert result["model"]["simulated_s"] == pytest.approx(1800.0)
    assert result["storm"]["duration_s"] == 1800.0
    intensity = run["params"]["request"]["storm"]
    assert intensity["peak_ratio"] == 1.0
    assert result["model"]["mass_balance"]["relative_error"] < 1e-3
    assert result["max_depth_m"] > 0.15 and result["flooded_area_m2"] > 0


def test_the_max_depth_cog_opens_and_matches_the_reported_depth(twin, run):
    result, store = run["result"], twin["store"]
    layer = store.get_layer(result["layers"]["max_depth"])
    assert layer.kind.value == "raster" and layer.metadata["raster"]["asset"] == result["max_depth_asset"]
    path = store.assets.open_path(result["max_depth_asset"])
    assert cog_validate(str(path), quiet=True)[0]
    with rasterio.open(path) as src:
        depth = src.read(1)
        assert src.crs.to_string() == store.crs
        assert float(depth.max()) == pytest.approx(result["max_depth_m"], abs=1e-3)
        at_dip = float(next(src.sample([tuple(lowest(twin["manifest"], 0))]))[0])
    assert result["points"]["dip"]["max_depth_m"] == pytest.approx(at_dip, abs=1e-3)
    assert at_dip > 0.15  # the point is the lowest spot of a road the generator made low


def tile_at(lon: float, lat: float, z: int = 16) -> morecantile.Tile:
    return TMS.tile(lon, lat, z)


def test_a_raster_tile_of_the_max_depth_is_a_coloured_png(twin, run):
    client, manifest = twin["client"], twin["manifest"]
    template = run["result"]["links"]["max_depth_tiles"]
    assert "colormap_name=flood_depth" in template and "rescale=0,1" in template
    centre = shapely.from_wkt(manifest["low_road_sections"][0]["geometry"]).centroid
    lon, lat = rasterio.warp.transform(manifest["crs"], "OGC:CRS84", [centre.x], [centre.y])
    tile = tile_at(lon[0], lat[0])
    answer = client.get(template.format(z=tile.z, x=tile.x, y=tile.y))
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
    pixels = np.asarray(Image.open(io.BytesIO(answer.content)).convert("RGBA"))
    assert (pixels[:, :, 3] > 0).any()  # water drawn over the low road
    tilejson = client.get(run["result"]["links"]["max_depth_tilejson"]).json()
    assert "colormap_name=flood_depth" in tilejson["tiles"][0]


def sections_geojson(twin: dict, run: dict) -> dict:
    url = run["result"]["links"]["road_sections_items"]
    answer = twin["client"].get(url, params={"limit": 1000, "crs": twin["store"].crs})
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_flooded_road_sections_are_features_over_the_known_low_roads(twin, run):
    features = sections_geojson(twin, run)["features"]
    assert len(features) == len(run["result"]["road_sections"]) > 0
    # EPSG:4549 is northing first in OGC API answers: back to x = easting for shapely
    lines = [shapely.transform(shapely.geometry.shape(f["geometry"]), lambda c: c[:, ::-1]) for f in features]
    for low in twin["manifest"]["low_road_sections"]:
        area = shapely.from_wkt(low["area"])
        over = [f for f, line in zip(features, lines, strict=True) if line.intersects(area)]
        assert over, f"{low['id']} ({low['road_name']}) is not reported flooded"
        assert max(f["properties"]["max_depth_m"] for f in over) > 0.15
        assert all(f["properties"]["time_above_limit_s"] > 0 for f in over)
        assert {f["properties"]["road_name"] for f in over} == {low["road_name"]}


def test_the_sections_are_a_vector_tileset(twin, run):
    client, manifest = twin["client"], twin["manifest"]
    layer = run["result"]["layers"]["road_sections"]
    lowest_lonlat = rasterio.warp.transform(manifest["crs"], "OGC:CRS84", *zip(lowest(manifest, 1), strict=True))
    tile = tile_at(lowest_lonlat[0][0], lowest_lonlat[1][0])
    template = run["result"]["links"]["road_sections_tiles"]
    answer = client.get(template.format(z=tile.z, x=tile.x, y=tile.y))
    assert answer.status_code == 200, answer.text
    decoded = mapbox_vector_tile.decode(answer.content)
    assert layer in decoded and decoded[layer]["features"]
    names = {f["properties"]["road_name"] for f in decoded[layer]["features"]}
    assert manifest["low_road_sections"][1]["road_name"] in names
    tilejson = client.get(run["result"]["links"]["road_sections_tilejson"]).json()
    assert layer in [v["id"] for v in tilejson["vector_layers"]]


def test_depth_series_at_the_road_sensors_and_the_points(twin, run):
    result, store = run["result"], twin["store"]
    sensors = result["sensors"]
    gauges = {f.fid: f.properties for f in store.iter_features("sensors")}
    road = {sid for sid, p in gauges.items() if p.get("type") == "road_water_level"}
    assert road and set(sensors) == road
    with rasterio.open(store.assets.open_path(result["max_depth_asset"])) as src:
        for sid, series in sensors.items():
            assert len(series["times_s"]) == len(series["depth_m"]) > 10
            assert series["times_s"][-1] == pytest.approx(1800.0)
            at_gauge = float(next(src.sample([(series["x"], series["y"])]))[0])
            assert series["max_depth_m"] == pytest.approx(at_gauge, abs=1e-3), sid
    named = {s["sensor_id"] for section in result["road_sections"] for s in section["sensors"]}
    assert {sid for sid in road if gauges[sid].get("low_section_id")} <= named  # each low road's gauge
    dip = result["points"]["dip"]
    assert dip["depth_m"][0] == 0.0 and max(dip["depth_m"]) > 0.05


def wet_pixels(content: bytes) -> int:
    return int((np.asarray(Image.open(io.BytesIO(content)).convert("RGBA"))[:, :, 3] > 0).sum())


def test_frames_list_and_pngs_show_the_water_spreading_as_the_rain_rises(twin, run):
    client, manifest = twin["client"], twin["manifest"]
    listing = client.get(run["result"]["links"]["frames"]).json()
    frames = listing["frames"]
    assert len(frames) == run["result"]["frames"]["count"] == 11  # t = 0, 3, ..., 30 min
    times = [f["time_s"] for f in frames]
    assert times[0] == 0.0 and times == sorted(times) and times[-1] == pytest.approx(1800.0)
    assert listing["bounds_crs84"] == pytest.approx(manifest["bbox_lonlat"], abs=5e-4)
    wet = []
    for frame in frames:
        answer = client.get(frame["href"])
        assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
        image = Image.open(io.BytesIO(answer.content))
        assert image.size == (listing["width"], listing["height"])
        wet.append(wet_pixels(answer.content))
    assert wet[0] == 0 and wet[-1] > wet[1] > 0
    assert all(later >= earlier for earlier, later in zip(wet, wet[1:], strict=False)), wet
    areas = [f["wet_area_m2"] for f in frames]
    assert all(later >= earlier for earlier, later in zip(areas, areas[1:], strict=False)), areas
    viridis = client.get(frames[-1]["href"], params={"colormap_name": "viridis", "rescale": "0,0.5"})
    assert viridis.status_code == 200 and viridis.content != client.get(frames[-1]["href"]).content


def test_the_last_frame_is_draped_where_the_low_roads_flooded(twin, run):
    """Drawn with only water over 15 cm visible, the last frame (the rain's peak) shows it at the
    deepest point of each low road's flooded section, placed by the listed CRS84 bounds, and
    hardly anywhere else."""
    client, manifest = twin["client"], twin["manifest"]
    listing = client.get(run["result"]["links"]["frames"]).json()
    w, s, e, n = listing["bounds_crs84"]
    answer = client.get(listing["frames"][-1]["href"], params={"rescale": "0.15,1"})
    alpha = np.asarray(Image.open(io.BytesIO(answer.content)).convert("RGBA"))[:, :, 3]
    assert 0 < (alpha > 0).mean() < 0.1
    for low in manifest["low_road_sections"]:
        sections = [x for x in run["result"]["road_sections"] if x["road_name"] == low["road_name"]]
        x, y = max(sections, key=lambda x: x["max_depth_m"])["deepest_point"]
        lon, lat = rasterio.warp.transform(manifest["crs"], "OGC:CRS84", [x], [y])
        col = int((lon[0] - w) / (e - w) * listing["width"])
        row = int((n - lat[0]) / (n - s) * listing["height"])
        assert alpha[row - 2 : row + 3, col - 2 : col + 3].any(), low["id"]


def assert_problem(answer, status: int, *words: str) -> None:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith(PROBLEM)
    for word in words:
        assert word in answer.json()["detail"], answer.json()["detail"]


def test_frames_of_unknown_jobs_and_frames(twin, run):
    client = twin["client"]
    assert_problem(client.get("/analysis/flood/nope/frames"), 404, "nope")
    assert_problem(client.get(f"/analysis/flood/{run['id']}/frames/999.png"), 404, "999")
    assert_problem(client.get(f"/analysis/flood/{run['id']}/frames/1.png", params={"rescale": "1,0"}), 400, "rescale")
    assert_problem(client.get(f"/analysis/flood/{run['id']}/frames/1.png", params={"colormap_name": "x"}), 400)


def test_writes_need_an_editor_key(twin):
    client = twin["client"]
    assert_problem(client.post("/analysis/flood", json={"storm": RISING}), 401)
    assert client.post("/analysis/flood", json={"storm": RISING}, headers=auth(twin, "reader")).status_code == 403


BAD_BODIES = [
    ({"storm": {"duration_min": -30}}, "duration_min"),
    ({"storm": {"city": "atlantis"}}, "atlantis"),
    ({"storm": {"city": "nanjing", "series": {"times_s": [0, 60], "values": [5, 5]}}}, "not both"),
    ({"storm": {"series": {"times_s": [0, 60, 200], "values": [5, 5, 5]}}}, "equally spaced"),
    ({"storm": RISING, "cell_m": 3}, "whole multiple"),
    ({"storm": RISING, "cell_m": 2}, "TWIN_MAX_FLOOD_CELLS"),
    ({"storm": RISING}, "TWIN_MAX_FLOOD_CELLS"),  # the DEM's own 2 m cells
    ({"storm": RISING, "cell_m": 10, "bbox": [118.9, 32.2, 118.95, 32.25]}, "does not overlap"),
    ({"storm": RISING, "cell_m": 10, "points": [{"coordinates": [118.9, 32.2]}]}, "outside the flood grid"),
    ({"storm": RISING, "cell_m": 10, "simulate_min": 10}, "shorter than the storm"),
    ({"storm": RISING, "cell_m": 10, "drainage": "none", "drainage_capacity_mm_h": 30}, "design"),
    ({"storm": RISING, "cell_m": 10, "colour": "blue"}, "colour"),
    ({"storm": RISING, "cell_m": 10, "bbox": [1, 2, 3]}, "bbox"),
    ({"storm": {"gauge": "RG404"}, "cell_m": 10}, "fewer than two"),
    ({"storm": {"gauge": "RG001", "series": {"times_s": [0, 60], "values": [5, 5]}}, "cell_m": 10}, "not both"),
    ({"storm": {"gauge": "RG001", "return_period": 5}, "cell_m": 10}, "not both"),
    ({"storm": {"start": "2024-07-15T00:00:00Z"}, "cell_m": 10}, "goes with a rain gauge"),
    ({"storm": RISING, "cell_m": 10, "swmm_model": "/etc/passwd"}, "swmm_model"),
    ({"storm": RISING, "cell_m": 10, "swmm_interval_s": 60}, "goes with a swmm_model"),
]


@pytest.mark.parametrize(("body", "word"), BAD_BODIES)
def test_bad_requests_are_refused_before_a_job_is_queued(twin, body, word):
    client = twin["client"]
    before = client.get("/jobs", params={"kind": "flood"}).json()["jobs"]
    assert_problem(client.post("/analysis/flood", json=body, headers=auth(twin)), 400, word)
    assert client.get("/jobs", params={"kind": "flood"}).json()["jobs"] == before


def test_a_body_that_is_not_json_is_refused(twin):
    headers = auth(twin) | {"Content-Type": "application/json"}
    assert_problem(twin["client"].post("/analysis/flood", content=b"{storm: rain", headers=headers), 400)


def test_an_unknown_dem_or_road_layer_is_not_found(twin):
    client = twin["client"]
    for field, name in (("dem", "no_dem"), ("roads", "no_roads")):
        answer = client.post("/analysis/flood", json={"storm": RISING, "cell_m": 10, field: name}, headers=auth(twin))
        assert_problem(answer, 404, name)


def test_a_bbox_limits_the_grid(twin):
    """A bbox in CRS84 around one low section: the plan takes the DEM cells under it only."""
    from twin.analysis.flood.job import plan_flood

    x, y = lowest(twin["manifest"], 2)
    lon, lat = rasterio.warp.transform(twin["manifest"]["crs"], "OGC:CRS84", [x - 200, x + 200], [y - 150, y + 150])
    plan = plan_flood(twin["store"], {"storm": RISING, "cell_m": 10, "bbox": [lon[0], lat[0], lon[1], lat[1]]}, 10**6)
    assert plan.grid_shape[0] in range(29, 33) and plan.grid_shape[1] in range(39, 43)
    assert plan.bbox.minx <= x - 199 and plan.bbox.maxy >= y + 149


def test_a_rain_gauge_log_replays_as_the_storm(twin):
    """An hour around the wettest reading of the demo's gauge RG001: the run's rain is what the
    gauge logged in that hour, read back from its observations."""
    client, store = twin["client"], twin["store"]
    readings = store.query_observations("RG001", quantity="rainfall")
    wettest = max(readings, key=lambda r: r.value).time
    start, end = wettest - timedelta(minutes=30), wettest + timedelta(minutes=30)
    logged = sum(r.value for r in readings if start <= r.time <= end)
    x, y = lowest(twin["manifest"], 0)
    body = {
        "storm": {"gauge": "RG001", "start": start.isoformat(), "end": end.isoformat()},
        "cell_m": CELL_M,
        "crs": twin["manifest"]["crs"],
        "bbox": [x - 200, y - 200, x + 200, y + 200],
        "drainage": "none",
    }
    answer = client.post("/analysis/flood", json=body, headers=auth(twin))
    assert answer.status_code == 202, answer.text
    done = wait_job(client, answer.json()["id"], "succeeded", "failed", "cancelled")
    assert done["state"] == "succeeded", done["message"]
    storm = done["result"]["storm"]
    assert "RG001" in storm["label"] and logged > 0
    assert storm["depth_mm"] == pytest.approx(logged, abs=1e-3)
    balance = done["result"]["model"]["mass_balance"]
    cells = done["result"]["grid"]["shape"][0] * done["result"]["grid"]["shape"][1]
    assert balance["rain_in_m3"] == pytest.approx(logged / 1000 * cells * CELL_M**2, rel=1e-6)


def test_a_cancelled_run_ends_cancelled_and_leaves_nothing(twin, run):
    client, store = twin["client"], twin["store"]
    layers = {layer.id for layer in store.list_layers()}
    assets = set(store.assets.keys())
    body = {"storm": {"duration_min": 120}, "cell_m": 6}  # long enough to be stopped while it runs
    job = client.post("/analysis/flood", json=body, headers=auth(twin)).json()
    deadline = time.monotonic() + WAIT_S
    while client.get(f"/jobs/{job['id']}").json()["progress"] < 0.06 and time.monotonic() < deadline:
        time.sleep(0.05)  # until the surface model is under way
    answer = client.post(f"/jobs/{job['id']}/cancel", headers=auth(twin))
    assert answer.status_code == 202
    done = wait_job(client, job["id"], "succeeded", "failed", "cancelled")
    assert done["state"] == "cancelled" and done["result"] is None
    assert {layer.id for layer in store.list_layers()} == layers
    assert set(store.assets.keys()) == assets
    folder = frames_folder(Path(twin["data"]), job["id"])
    assert not folder.exists() and not folder.with_name(folder.name + ".partial").exists()
    assert_problem(client.get(f"/analysis/flood/{job['id']}/frames"), 404, "cancelled")
