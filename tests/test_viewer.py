"""The planners' 3D viewer `/viewer/` in headless Chromium over a served demo twin.

A real `twin serve` runs on a loopback port over the demo district with its IFC building; the
page must load CesiumJS, terrain, orthophoto, 3D Tiles and feature layers from this server only,
run a burst analysis when a pipe is clicked, and show the planned scenario. Each step keeps a
screenshot in docs/img/viewer*.png for the README.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest
from fastapi.testclient import TestClient

from ingestion.ifc import ingest_ifc
from tests.test_map_page import (
    CHROMIUM,
    CHROMIUM_ARGS,
    LOCAL_HOSTS,
    Recorder,
    server,  # noqa: F401  (the served twin over this module's `demo`)
)
from twin.api import viewer as viewer_api
from twin.api.app import create_app
from twin.api.threed import CESIUM_BUILD
from twin.model import parse_instant
from twin.store import init_store, open_store

REPO = Path(__file__).resolve().parents[1]
IMG = REPO / "docs" / "img"
READY_MS = 240_000
VIEWPORT = {"width": 1280, "height": 800}
BURST_PIPE = ("water_pipes", "WP000100")
LOADED = "window.twinViewer && twinViewer.ready && twinViewer.tilesLoaded"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo district plus its IFC community centre, so the root tileset has a 3D layer."""
    data = tmp_path_factory.mktemp("viewer-demo") / "twin-data"
    result = subprocess.run(
        [sys.executable, "-c", "from twin.cli import main; main()", "demo", "--no-serve", "--data", str(data)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    entry = json.loads((data / "sources" / "manifest.json").read_text())["ifc"]
    with open_store(data) as store:
        ingest_ifc(
            store, data / "sources" / entry["path"], layer_id=entry["id"], valid_from=parse_instant(entry["valid_from"])
        )
    return data


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="Python playwright is not installed")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} not found: apt-get install chromium")
    if not (CESIUM_BUILD / "Cesium.js").exists():
        pytest.skip("cesium is not installed: run make install")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def opened(browser, server):  # noqa: F811
    """The viewer after its first frame and the first view's tiles and layers."""
    page = browser.new_page(viewport=VIEWPORT)
    recorder = Recorder(page)
    page.route(lambda url: urlparse(url).hostname not in LOCAL_HOSTS, lambda route: route.abort())
    page.goto(f"{server}/viewer/")
    page.wait_for_function("window.twinViewer && twinViewer.firstFrame", timeout=READY_MS, polling=100)
    page.wait_for_function(f"({LOADED}) || twinViewer.error", timeout=READY_MS, polling=100)
    assert page.evaluate("twinViewer.error") is None
    yield page, recorder
    page.close()


def settle(page, condition: str = LOADED) -> None:
    """Wait until `condition` holds and a few more frames are drawn (software rendering is slow)."""
    page.wait_for_function(f"({condition}) || twinViewer.error", timeout=READY_MS, polling=100)
    assert page.evaluate("twinViewer.error") is None
    page.evaluate("twinViewer.renderFrames(3)")


def test_viewer_draws_the_twin_from_this_server_only(opened):
    page, recorder = opened
    layers = page.evaluate("twinViewer.layers")
    assert {"ortho", "bim_community_centre", "water_pipes", "gas_pipes", "drainage_pipes", "buildings_2000"} <= set(
        layers
    )
    assert layers["bim_community_centre"]["source"] == "3D Tiles" and layers["water_pipes"]["count"] > 1000
    assert "buildings_planned" not in layers
    assert [s for s in recorder.statuses("/3dtiles/twin/tileset.json")] == [200]
    assert recorder.statuses("/terrain/layer.json") == [200] and 200 in recorder.statuses(".terrain")
    assert recorder.statuses("/static/cesium/Cesium.js") == [200]
    assert page.locator("#layers details[data-group=pipes] input[type=checkbox]").count() == 3
    settle(page)
    page.screenshot(path=str(IMG / "viewer.png"))
    recorder.assert_clean()


def test_clicking_a_pipe_draws_its_burst_analysis(opened, server):  # noqa: F811
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
    page.screenshot(path=str(IMG / "viewer_burst.png"))

    page.locator("#valves li input").first.check()
    page.click("#rerun")
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
    recorder.assert_clean()


def test_planned_scenario_brings_the_planned_buildings(opened, server):  # noqa: F811
    page, recorder = opened
    page.evaluate("twinViewer.setUnderground(false)")
    page.check("input[name=scenario][value=planned]")
    settle(page, f"twinViewer.scenario === 'planned' && {LOADED}")
    layers = page.evaluate("twinViewer.layers")
    planned = httpx.get(f"{server}/collections/buildings_planned/items").json()["features"]
    assert layers["buildings_planned"]["count"] == len(planned) > 0
    assert any("scenario=planned" in url for _, url in recorder.responses if "/3dtiles/twin/tileset.json" in url)
    lon, lat = planned[0]["geometry"]["coordinates"][0][0]
    page.evaluate(f"twinViewer.lookAtLonLat({lon}, {lat}, 420)")
    settle(page)
    page.screenshot(path=str(IMG / "viewer_planned.png"))
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
