"""The planners' 3D viewer `/viewer/` in headless Chromium over a served demo twin.

A real `twin serve` runs on a loopback port over the session's demo district (with its IFC
building); the page must load CesiumJS, terrain, orthophoto, 3D Tiles and feature layers from this
server only, run a burst analysis when a pipe is clicked, measure what is clicked, search, cut a
cross-section, show live sensor alerts and a flood run, show the planned scenario and compare it
with a swipe.
Each step keeps a screenshot in docs/img/viewer*.png for the README.
"""

from __future__ import annotations

import base64
import io
import re
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from pyproj import Geod

from tests.browser import chromium, open_page, screenshot, serve_twin, wait_for
from tests.demo_twin import shared_demo
from twin.api import viewer as viewer_api
from twin.api.app import create_app
from twin.api.threed import CESIUM_BUILD
from twin.auth import KeyStore
from twin.store import init_store

VIEWPORT = {"width": 1280, "height": 800}
BURST_PIPE = ("water_pipes", "WP000100")
LOADED = "window.twinViewer && twinViewer.ready && twinViewer.tilesLoaded"
ERROR = "window.twinViewer && twinViewer.error"
WGS84 = Geod(ellps="WGS84")
# three places on the district, clear of the panel, in the first view
CLICKS = [(700, 400), (900, 420), (800, 550)]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the session's demo twin: the sensor test writes readings into it."""
    data = tmp_path_factory.mktemp("viewer") / "twin-data"
    shutil.copytree(shared_demo(tmp_path_factory), data, ignore=shutil.ignore_patterns("sources"))
    return data


@pytest.fixture(scope="module")
def editor(demo: Path) -> dict[str, str]:
    keys = KeyStore(demo)
    token = keys.create("viewer-test", "editor")[1]
    keys.close()
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def server(demo: Path, tmp_path_factory: pytest.TempPathFactory):
    with serve_twin(demo, tmp_path_factory.mktemp("viewer-server") / "server.log") as base:
        yield base


@pytest.fixture(scope="module")
def browser():
    with chromium(CESIUM_BUILD / "Cesium.js") as launched:
        yield launched


@pytest.fixture(scope="module")
def opened(browser, server):
    """The viewer after its first frame and the first view's tiles and layers."""
    page, recorder = open_page(browser, VIEWPORT)
    page.goto(f"{server}/viewer/")
    wait_for(page, "window.twinViewer && twinViewer.firstFrame", ERROR)
    wait_for(page, LOADED, ERROR)
    yield page, recorder
    page.close()


def settle(page, condition: str = LOADED) -> None:
    """Wait until `condition` holds and a few more frames are drawn (software rendering is slow)."""
    wait_for(page, condition, ERROR)
    page.evaluate("twinViewer.renderFrames(3)")


def reveal(page, element_id: str) -> None:
    """Scroll the panel so a section shows in the screenshot."""
    page.evaluate(f"document.getElementById('{element_id}').scrollIntoView({{block: 'end'}})")


def toggle(page, selector: str) -> None:
    """Click a control of the panel as the DOM does (the pointer path waits on slow WebGL frames)."""
    page.dispatch_event(selector, "click")


def test_viewer_draws_the_twin_from_this_server_only(opened, server):
    page, recorder = opened
    layers = page.evaluate("twinViewer.layers")
    assert {"ortho", "bim_community_centre", "water_pipes", "gas_pipes", "drainage_pipes", "buildings_2000"} <= set(
        layers
    )
    assert layers["bim_community_centre"]["source"] == "3D Tiles" and layers["water_pipes"]["count"] > 1000
    root = {
        child["extras"]["layer"]
        for child in httpx.get(f"{server}/3dtiles/twin/tileset.json").json()["root"]["children"]
    }
    assert {layer for layer, info in layers.items() if info["source"] == "3D Tiles"} == root
    assert "buildings_planned" not in layers
    assert [s for s in recorder.statuses("/3dtiles/twin/tileset.json")] == [200]
    assert recorder.statuses("/terrain/layer.json") == [200] and 200 in recorder.statuses(".terrain")
    assert recorder.statuses("/static/cesium/Cesium.js") == [200]
    networks = [c for c in httpx.get(f"{server}/collections").json()["collections"] if c["kind"] == "pipe_network"]
    assert page.locator("#layers details[data-group=pipes] input[type=checkbox]").count() == len(networks) >= 3
    settle(page)
    screenshot(page, "viewer")
    recorder.assert_clean()


def test_measuring_distance_area_and_height_between_clicked_points(opened):
    """Clicks at fixed window positions; the figures equal WGS 84 geodesics between the points picked."""
    page, recorder = opened
    settle(page)
    figures = {}
    for mode, clicks in (("distance", CLICKS), ("area", CLICKS), ("height", CLICKS[::2])):
        toggle(page, f"[data-measure={mode}]")
        for x, y in clicks:
            page.mouse.click(x, y)
        wait_for(page, f"twinViewer.measure.points.length === {len(clicks)}", ERROR)
        measure = page.evaluate("twinViewer.measure")
        shown = page.inner_text("#measure-value")
        figures[mode] = (measure, float(re.search(r": (-?[\d.]+) m", shown).group(1)))
        if mode == "area":
            settle(page)
            screenshot(page, "viewer_measure")
    (distance, distance_shown), (area, area_shown), (height, height_shown) = figures.values()
    lon, lat, h = (list(axis) for axis in zip(*distance["points"], strict=True))
    assert len({round(v, 7) for v in lon}) == 3, "three different places were picked"
    assert min(h) > 0 and max(h) < 150, "the points lie on the terrain or on buildings, not far above or below"
    geodesic = WGS84.line_length(lon, lat)
    assert distance["value"] == pytest.approx(geodesic, abs=1e-3) and distance_shown == pytest.approx(
        geodesic, abs=0.006
    )
    assert area["points"] == distance["points"]
    enclosed = abs(WGS84.polygon_area_perimeter(lon, lat)[0])
    assert area["value"] == pytest.approx(enclosed, rel=1e-6) and area_shown == pytest.approx(enclosed, abs=0.006)
    (lon0, lat0, h0), (lon1, lat1, h1) = height["points"]
    assert height["value"] == pytest.approx(h1 - h0, abs=1e-9) and height_shown == pytest.approx(h1 - h0, abs=0.006)
    assert height["horizontal"] == pytest.approx(WGS84.inv(lon0, lat0, lon1, lat1)[2], abs=1e-3)
    toggle(page, "#measure-clear")
    assert page.evaluate("twinViewer.measure.mode") is None
    recorder.assert_clean()


def test_clicking_a_pipe_draws_its_burst_analysis(opened, server):
    page, recorder = opened
    layer, pipe = BURST_PIPE
    page.evaluate(f"twinViewer.setUnderground(true); twinViewer.lookAtPipe('{layer}', '{pipe}', 220)")
    settle(page)
    x, y = page.evaluate(f"twinViewer.pipeScreenPosition('{layer}', '{pipe}')")
    page.mouse.click(x, y)
    settle(page, "twinViewer.burst && twinViewer.burstDrawn > 0")
    reference = httpx.post(f"{server}/analysis/burst", json={"network": layer, "pipe_id": pipe}).json()
    valves = [v["id"] for v in reference["valves_to_close"]]
    assert valves and page.locator("#valves li input").evaluate_all("(boxes) => boxes.map((b) => b.value)") == valves
    drawn = len(reference["features"]["features"]) + len(reference["buildings"]) + 1
    assert page.evaluate("twinViewer.burstDrawn") == drawn
    assert page.evaluate("twinViewer.picked.id") == pipe
    assert page.locator("#props").inner_text().count(pipe) >= 1
    page.evaluate(f"twinViewer.lookAtPipe('{layer}', '{pipe}', 520)")
    settle(page)
    screenshot(page, "viewer_burst")

    page.locator("#valves li input").first.check()
    toggle(page, "#rerun")
    settle(
        page,
        f"twinViewer.burst && twinViewer.burst.failed.length === 1 && twinViewer.burst.failed[0] === '{valves[0]}'",
    )
    failed = httpx.post(
        f"{server}/analysis/burst", json={"network": layer, "pipe_id": pipe, "failed_valves": [valves[0]]}
    ).json()
    shown = page.locator("#valves li input").evaluate_all("(boxes) => boxes.map((b) => b.value)")
    assert shown == [v["id"] for v in failed["valves_to_close"]] + [v["id"] for v in failed["passed_valves"]]
    assert valves[0] in shown and page.locator("#valves li.failed").count() == 1
    page.evaluate("twinViewer.setUnderground(false)")
    recorder.assert_clean()


def test_a_line_drawn_across_pipes_shows_the_servers_cross_section(opened, server):
    page, recorder = opened
    layer, pipe = BURST_PIPE
    page.evaluate(f"twinViewer.lookAtPipe('{layer}', '{pipe}', 220)")
    settle(page)
    x, y = page.evaluate(f"twinViewer.pipeScreenPosition('{layer}', '{pipe}')")
    toggle(page, "#section-start")
    page.mouse.click(x - 120, y - 90)
    page.mouse.click(x + 120, y + 90)
    settle(page, "twinViewer.section !== null")
    section = page.evaluate("twinViewer.section")
    body = {"line": {"type": "LineString", "coordinates": section["line"]}, "vertical_exaggeration": 2}
    reference = httpx.post(f"{server}/analysis/cross-section", json=body).json()
    drawing = httpx.post(f"{server}/analysis/cross-section?f=svg", json=body).text
    assert section["pipes"] == [p["id"] for p in reference["pipes"]] and len(section["pipes"]) >= 1
    assert section["svg"] == drawing
    assert page.locator("#section-drawing svg").count() == 1 and not page.locator("#section-panel").is_hidden()
    assert f"{len(section['pipes'])} pipe(s) crossed" in page.inner_text("#section-summary")
    reveal(page, "measure-value")
    screenshot(page, "viewer_section")
    toggle(page, "#section-close")
    recorder.assert_clean()


def test_search_by_id_and_by_name_flies_to_the_feature(opened, server):
    page, recorder = opened
    layer, pipe = BURST_PIPE
    page.fill("#search", pipe)
    page.press("#search", "Enter")
    settle(page, f"twinViewer.search && twinViewer.search.shown && twinViewer.search.shown.id === '{pipe}'")
    assert page.evaluate("twinViewer.search.results") == [{"layer": layer, "id": pipe, "name": None}]
    assert page.evaluate("twinViewer.picked.id") == pipe
    assert any("pipe_id=" + pipe in url for _, url in recorder.responses if f"/collections/{layer}/items?" in url)

    building = httpx.get(f"{server}/collections/buildings_2000/items", params={"limit": 1}).json()["features"][0]
    name = building["properties"]["name"]
    page.fill("#search", name)
    page.press("#search", "Enter")
    settle(page, f"twinViewer.search && twinViewer.search.shown && twinViewer.search.shown.id === '{building['id']}'")
    found = {(r["layer"], r["id"]) for r in page.evaluate("twinViewer.search.results")}
    expected = set()
    for collection in ("buildings_500", "buildings_2000", "buildings_10000"):
        items = httpx.get(f"{server}/collections/{collection}/items", params={"name": name}).json()["features"]
        expected |= {(collection, f["id"]) for f in items}
    assert ("buildings_2000", building["id"]) in found and found == expected
    lon, lat = page.evaluate("twinViewer.search.shown.centre")
    ring = building["geometry"]["coordinates"][0]
    assert min(p[0] for p in ring) <= lon <= max(p[0] for p in ring)
    assert min(p[1] for p in ring) <= lat <= max(p[1] for p in ring)
    assert page.locator("#search-results li").count() == len(found)
    screenshot(page, "viewer_search")
    recorder.assert_clean()


def test_live_sensor_values_get_an_alert_badge_when_an_alert_is_raised(opened, server, editor):
    page, recorder = opened
    wait_for(page, "twinViewer.sensors.streaming && twinViewer.sensors.list.length > 0", ERROR)
    listed = httpx.get(f"{server}/sensors").json()["features"]
    shown = {s["id"]: s for s in page.evaluate("twinViewer.sensors.list")}
    assert set(shown) == {f["id"] for f in listed}
    for feature in listed:
        assert shown[feature["id"]]["value"] == feature["properties"]["latest_value"]
        assert shown[feature["id"]]["alert"] == (feature["properties"]["alert_state"] == "alert")
    assert not shown["WL002"]["alert"] and page.locator("#sensor-list li[data-sensor=WL002] .badge").count() == 0

    now = datetime.now(UTC).replace(microsecond=0)
    levels = [(now - timedelta(minutes=10), 0.05), (now - timedelta(minutes=5), 0.2), (now, 0.25)]
    body = {"observations": [{"time": t.strftime("%Y-%m-%dT%H:%M:%SZ"), "value": v} for t, v in levels]}
    answer = httpx.post(f"{server}/sensors/WL002/observations", json=body, headers=editor)
    assert answer.status_code == 201 and [a["change"] for a in answer.json()["alerts"]] == ["raised"]
    # the page hears of it on the alert stream and reads the values again
    wait_for(page, "twinViewer.sensors.list.some((s) => s.id === 'WL002' && s.alert && s.value === 0.25)", ERROR)
    assert page.evaluate("twinViewer.sensors.events") >= 1
    assert page.locator("#sensor-list li[data-sensor=WL002] .badge").inner_text() == "ponding"
    sensor = next(f for f in listed if f["id"] == "WL002")
    lon, lat = sensor["geometry"]["coordinates"]
    page.evaluate(f"twinViewer.lookAtLonLat({lon}, {lat}, 600)")
    settle(page)
    reveal(page, "sensor-list")
    screenshot(page, "viewer_sensors")
    recorder.assert_clean()


def test_a_flood_run_shows_progress_depth_frames_and_the_flooded_roads(opened, server, editor):
    page, recorder = opened
    page.select_option("#flood-period", "3")
    page.select_option("#flood-duration", "30")
    page.select_option("#flood-cell", "8")
    page.fill("#flood-key", editor["Authorization"].removeprefix("Bearer "))
    toggle(page, "#flood-run")
    wait_for(page, "twinViewer.flood && twinViewer.flood.sections !== null", ERROR, timeout_ms=600_000)
    flood = page.evaluate("twinViewer.flood")
    job = httpx.get(f"{server}/jobs/{flood['job']}").json()
    assert job["state"] == "succeeded" and job["params"]["request"]["storm"] == {"return_period": 3, "duration_min": 30}
    progress = flood["progress"]
    assert progress[-1] == 1 and progress == sorted(progress)
    frames = httpx.get(f"{server}/analysis/flood/{flood['job']}/frames").json()["frames"]
    assert [f["index"] for f in flood["frames"]] == [f["index"] for f in frames] and len(frames) >= 3
    assert flood["frame"] == len(frames) - 1
    drawn = recorder.statuses(f"/analysis/flood/{flood['job']}/frames/")
    assert drawn.count(200) == len(frames) and set(drawn) == {200}
    sections = job["result"]["road_sections"]
    assert flood["sections"] == [s["id"] for s in sections] and sections
    assert page.locator("#flood-sections button").count() == len(sections)
    toggle(page, "#flood-sections button")
    assert page.evaluate("twinViewer.flood.flownTo") == sections[0]["id"]
    settle(page)
    reveal(page, "flood-sections")
    screenshot(page, "viewer_flood")
    page.evaluate("twinViewer.showFloodFrame(1)")
    assert page.inner_text("#flood-time") == f"{round(frames[1]['time_s'] / 60)} min"
    recorder.assert_clean()


def test_planned_scenario_brings_the_planned_buildings(opened, server):
    page, recorder = opened
    toggle(page, "input[name=scenario][value=planned]")
    settle(page, f"twinViewer.scenario === 'planned' && {LOADED}")
    layers = page.evaluate("twinViewer.layers")
    planned = httpx.get(f"{server}/collections/buildings_planned/items").json()["features"]
    assert layers["buildings_planned"]["count"] == len(planned) > 0
    assert any("scenario=planned" in url for _, url in recorder.responses if "/3dtiles/twin/tileset.json" in url)
    lon, lat = planned[0]["geometry"]["coordinates"][0][0]
    page.evaluate(f"twinViewer.lookAtLonLat({lon}, {lat}, 420)")
    settle(page)
    screenshot(page, "viewer_planned")
    recorder.assert_clean()


def test_swipe_shows_the_planned_building_right_of_the_divider_only(opened, server):
    page, recorder = opened
    toggle(page, "input[name=scenario][value=current]")
    settle(page, f"twinViewer.scenario === 'current' && {LOADED}")
    toggle(page, "#compare")
    settle(page, f"twinViewer.compare && {LOADED}")
    assert "buildings_planned" in page.evaluate("twinViewer.layers")
    tower = httpx.get(f"{server}/collections/buildings_planned/items").json()["features"][1]
    ring = tower["geometry"]["coordinates"][0][:-1]
    lon, lat = sum(p[0] for p in ring) / len(ring), sum(p[1] for p in ring) / len(ring)
    page.evaluate(f"twinViewer.lookAtLonLat({lon}, {lat}, 420)")
    settle(page)
    x, y = page.evaluate(f"twinViewer.screenPosition({lon}, {lat}, {tower['properties']['height'] * 0.6})")
    assert 400 < x < VIEWPORT["width"] - 200 and 0 < y < VIEWPORT["height"]

    def drag_divider_to(to_x: float) -> None:
        start = page.evaluate("twinViewer.splitPosition") * VIEWPORT["width"]
        page.mouse.move(start, 300)
        page.mouse.down()
        page.mouse.move(to_x, 300, steps=4)
        page.mouse.up()
        assert page.evaluate("twinViewer.splitPosition") == pytest.approx(to_x / VIEWPORT["width"], abs=0.01)
        page.evaluate("twinViewer.renderFrames(2)")

    drag_divider_to(x - 150)  # the tower stands right of the divider: planned, so drawn
    right = page.evaluate(f"twinViewer.pickRecordAt({x}, {y})")
    assert right and (right["layer"], right["fid"]) == ("buildings_planned", tower["id"])
    drag_divider_to(x + 150)  # now left of it: the current scenario, without the tower
    left = page.evaluate(f"twinViewer.pickRecordAt({x}, {y})")
    assert left is None or left["layer"] != "buildings_planned"
    drag_divider_to(x)
    screenshot(page, "viewer_compare")
    toggle(page, "#compare")
    settle(page, f"!twinViewer.compare && {LOADED}")
    assert "buildings_planned" not in page.evaluate("twinViewer.layers")
    recorder.assert_clean()


BASEMAP_PNG = re.compile(r"/tiles/basemap/(\d+)/(\d+)/(\d+)\.png")
PAPER = (244, 241, 234)  # the basemap style's background colour


def canvas_pixels(page) -> np.ndarray:
    """The globe's WebGL canvas as an RGB array (the page keeps its drawing buffer)."""
    url = page.evaluate("twinViewer.viewer.scene.canvas.toDataURL('image/png')")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB"), dtype=np.int16)


def paper_share(pixels: np.ndarray) -> float:
    """Share of the canvas in the basemap's background colour (the orthophoto has next to none)."""
    return float((np.abs(pixels - np.array(PAPER)).max(axis=2) <= 4).mean())


def basemap_tiles(recorder) -> list[int]:
    """Zoom levels of the basemap PNG tiles the page has fetched."""
    return [int(m.group(1)) for _, url in recorder.responses if (m := BASEMAP_PNG.search(url))]


def test_basemap_bands_by_scale_are_server_drawn_images_in_the_layer_tree(opened, server):
    page, recorder = opened
    tilejson = httpx.get(f"{server}/tiles/basemap/png/tilejson.json").json()
    bands = {b["band"]: b for b in tilejson["scale_bands"]}
    assert list(bands) == ["1:10000", "1:2000", "1:500"]
    group = page.locator("#layers details[data-group=basemap]")
    ids = group.locator("input[type=checkbox]").evaluate_all("(boxes) => boxes.map((b) => b.dataset.layer)")
    assert ids == ["ortho", "basemap_10000", "basemap_2000", "basemap_500"]
    assert group.locator("input[type=range]").count() == len(ids)
    assert not basemap_tiles(recorder), "the bands are off at first and fetch nothing"
    lon, lat = (tilejson["bounds"][0] + tilejson["bounds"][2]) / 2, (tilejson["bounds"][1] + tilejson["bounds"][3]) / 2

    for band, range_m in (("1:10000", 2500), ("1:500", 120)):
        layer = "basemap_" + band.removeprefix("1:")
        page.evaluate(f"twinViewer.lookAtLonLat({lon}, {lat}, {range_m})")
        settle(page)
        before, fetched = canvas_pixels(page), len(basemap_tiles(recorder))
        toggle(page, f"#layers input[data-layer={layer}]")
        settle(page, f"{LOADED} && twinViewer.globeLoaded")
        page.evaluate("twinViewer.renderFrames(3)")
        after, zooms = canvas_pixels(page), basemap_tiles(recorder)[fetched:]
        low, high = bands[band]["minzoom"], bands[band]["maxzoom"]
        assert zooms and all(low <= z <= high for z in zooms), (band, zooms)
        changed = float((np.abs(after - before).max(axis=2) > 12).mean())
        assert changed > 0.1, (band, changed)
        if band == "1:10000":  # the map's paper shows where the orthophoto was
            assert paper_share(before) < 0.01 < paper_share(after), (paper_share(before), paper_share(after))
        toggle(page, f"#layers input[data-layer={layer}]")

    # all three on: each draws at its own distances, coarse far away and fine near the camera
    page.evaluate(f"twinViewer.lookAtLonLat({lon}, {lat}, 900)")
    fetched = len(basemap_tiles(recorder))
    for band in bands:
        toggle(page, f"#layers input[data-layer=basemap_{band.removeprefix('1:')}]")
    settle(page, f"{LOADED} && twinViewer.globeLoaded")
    zooms = basemap_tiles(recorder)[fetched:]
    shown = {band for band, b in bands.items() if any(b["minzoom"] <= z <= b["maxzoom"] for z in zooms)}
    assert len(shown) >= 2, zooms
    reveal(page, "layers")
    screenshot(page, "viewer_basemap")
    for band in bands:
        toggle(page, f"#layers input[data-layer=basemap_{band.removeprefix('1:')}]")
    settle(page)
    recorder.assert_clean()


def test_viewer_page_says_how_to_install_cesium_when_missing(tmp_path, monkeypatch):
    store = init_store(tmp_path / "twin", "EPSG:4549")
    with TestClient(create_app(store)) as client:
        assert client.get("/viewer/viewer.js").status_code == 200
        assert client.get("/viewer/nothing.js").status_code == 404
        monkeypatch.setattr(viewer_api, "CESIUM_BUILD", tmp_path / "absent")
        response = client.get("/viewer/")
        assert response.status_code == 503 and response.headers["content-type"].startswith("application/problem+json")
        assert "make install" in response.json()["detail"]
    store.close()
