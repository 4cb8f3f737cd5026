"""The map page `/map/` in headless Chromium over a served demo twin.

A real `twin serve` runs on a loopback port; the page must load MapLibre from this server, draw
vector and raster tiles, talk to nothing but this server, and show a feature's full record on
click. The screenshot is kept in docs/img/map.png for the README.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import httpx
import numpy as np
import pytest
import shapely
from fastapi.testclient import TestClient
from PIL import Image

from tests.browser import chromium, open_page, screenshot, serve_twin, wait_for
from tests.demo_twin import shared_demo
from twin.api.app import create_app
from twin.api.pages import maplibre_dist
from twin.crs import CRS84, transform_points
from twin.model import BBox
from twin.store import open_store

SCREENSHOT_NAME = "map"
READY_MS = 180_000
VIEWPORT = {"width": 960, "height": 600}
SCREENSHOT_SIZE = {"width": 1280, "height": 800}
PIPE_LAYERS = ("water_pipes", "gas_pipes", "drainage_pipes")


def wait_idle(page, action: str = "") -> None:
    """Run `action` (JavaScript on `map`) and wait for the map's next `idle` event."""
    page.evaluate(
        "(action) => new Promise((done) => { const map = window.twinMap; map.once('idle', done);"
        " new Function('map', action)(map); map.triggerRepaint(); })",
        action,
    )


def canvas_pixels(page) -> np.ndarray:
    """The map canvas read back (preserveDrawingBuffer), as an RGB array."""
    data_url = page.evaluate("() => window.twinMap.getCanvas().toDataURL('image/png')")
    image = Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1])))
    return np.asarray(image.convert("RGB"))


def near(pixels: np.ndarray, rgb: tuple[int, int, int], tolerance: int = 40) -> int:
    """How many pixels lie within `tolerance` of a colour on each channel."""
    return int((np.abs(pixels.astype(int) - np.array(rgb)).max(axis=-1) <= tolerance).sum())


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_demo(tmp_path_factory)


@pytest.fixture(scope="module")
def server(demo: Path, tmp_path_factory: pytest.TempPathFactory):
    """`twin serve` on a free loopback port, until the module's tests are done."""
    with serve_twin(demo, tmp_path_factory.mktemp("map-server") / "server.log") as base:
        yield base


@pytest.fixture(scope="module")
def browser():
    with chromium(maplibre_dist() / "maplibre-gl.mjs") as launched:
        yield launched


@pytest.fixture(scope="module")
def opened(browser, server):
    """The map page opened at the twin's extent, after its first `idle`."""
    page, recorder = open_page(browser, VIEWPORT)
    page.goto(f"{server}/map/")
    wait_for(page, "window.mapReady === true", timeout_ms=READY_MS)
    yield page, recorder
    page.close()


def test_map_draws_basemap_and_pipe_tiles_from_this_server_only(opened):
    page, recorder = opened
    basemap, pipes = recorder.statuses("/tiles/basemap/"), recorder.statuses("/tiles/pipes/")
    assert basemap.count(200) >= 2 and pipes.count(200) >= 1, recorder.responses
    assert set(basemap + pipes) <= {200, 204}
    assert recorder.statuses("/static/maplibre-gl/maplibre-gl.mjs") == [200]
    pixels = canvas_pixels(page)
    assert pixels.shape == (VIEWPORT["height"], VIEWPORT["width"], 3)
    assert pixels.std() > 15 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 200
    assert near(pixels, (169, 207, 233), 12) > 500  # water fill
    recorder.assert_clean()


def test_map_centres_on_the_twin_extent(opened, server):
    page, _ = opened
    collections = httpx.get(f"{server}/collections").json()["collections"]
    boxes = np.array([c["extent"]["spatial"]["bbox"][0][:4] for c in collections if "extent" in c])
    minlon, minlat = boxes[:, 0].min(), boxes[:, 1].min()
    maxlon, maxlat = boxes[:, 2].max(), boxes[:, 3].max()
    west, south, east, north = page.evaluate("() => window.twinMap.getBounds().toArray().flat()")
    assert west <= minlon + 1e-4 and east >= maxlon - 1e-4 and south <= minlat + 1e-4 and north >= maxlat - 1e-4
    span = max((maxlon - minlon) / (east - west), (maxlat - minlat) / (north - south))
    assert span > 0.7, "the extent should fill most of the view, not a corner of it"


def test_layer_switcher_turns_the_orthophoto_on_with_raster_tiles(opened):
    page, recorder = opened
    before, plain = len(recorder.statuses("/raster/")), canvas_pixels(page)
    page.check("input[data-group=orthophoto]")
    wait_idle(page)
    changed = (np.abs(plain.astype(int) - canvas_pixels(page).astype(int)).max(axis=-1) > 30).sum()
    west, south, east, north = page.evaluate(
        "async () => (await (await fetch('../raster/ortho/WebMercatorQuad/tilejson.json')).json()).bounds"
    )
    corners = page.evaluate(
        f"() => [[{west}, {north}], [{east}, {south}]].map((c) => window.twinMap.project(c)).map((p) => [p.x, p.y])"
    )
    footprint = (corners[1][0] - corners[0][0]) * (corners[1][1] - corners[0][1])
    assert changed > 0.5 * footprint > 10_000, f"the orthophoto changed {changed} of its {footprint:.0f} pixels"
    ortho = recorder.statuses("/raster/ortho/tiles/WebMercatorQuad/")
    assert len(recorder.statuses("/raster/")) > before and ortho and set(ortho) == {200}
    assert page.evaluate("() => window.twinMap.getLayoutProperty('orthophoto', 'visibility')") == "visible"
    page.uncheck("input[data-group=orthophoto]")
    for group in ("water", "gas", "drainage"):
        page.uncheck(f"input[data-group={group}]")
    wait_idle(page)
    assert page.evaluate("() => window.twinMap.getLayoutProperty('water_pipes', 'visibility')") == "none"
    changed = (np.abs(plain.astype(int) - canvas_pixels(page).astype(int)).max(axis=-1) > 30).sum()
    assert changed > 1000, f"hiding the pipes changed only {changed} pixels"
    for group in ("water", "gas", "drainage"):
        page.check(f"input[data-group={group}]")
    recorder.assert_clean()


def click_at(page, recorder, layer_id: str, fid: str, lonlat: tuple[float, float]) -> dict:
    """Click a place on the map and return the full record the popup fetched."""
    page.evaluate(
        "() => { window.lastRecord = null; document.querySelectorAll('.maplibregl-popup').forEach((p) => p.remove()); }"
    )
    x, y = page.evaluate(
        f"() => {{ const p = window.twinMap.project([{lonlat[0]}, {lonlat[1]}]); return [p.x, p.y]; }}"
    )
    assert 0 < x < VIEWPORT["width"] and 0 < y < VIEWPORT["height"]
    page.mouse.click(x, y)
    wait_for(page, "window.lastRecord !== null", timeout_ms=60_000)
    assert recorder.statuses(f"/collections/{layer_id}/items/{fid}") == [200]
    return page.evaluate("() => window.lastRecord")


def clear_spot(store, building, clearance: float = 8.0):
    """A water pipe beside a 1:500 building, each clickable with no other pipe or node near.

    Returns (pipe, pipe point, building point) in the project CRS, or None.
    """
    point = building.geometry.representative_point()
    area = point.buffer(120).bounds
    bbox = BBox(*area)
    lines = {name: store.query(name, bbox=bbox, limit=None).features for name in PIPE_LAYERS}
    everything = [f.geometry for features in lines.values() for f in features]
    everything += [f.geometry for f in store.query("water_nodes", bbox=bbox, limit=None).features]
    tree = shapely.STRtree(everything)
    if len(tree.query(point, predicate="dwithin", distance=clearance)):
        return None
    for pipe in sorted(lines["water_pipes"], key=lambda f: f.geometry.distance(point)):
        middle = pipe.geometry.interpolate(0.5, normalized=True)
        if len(tree.query(middle, predicate="dwithin", distance=clearance)) == 1:
            return pipe, middle, point
    return None


def test_clicking_a_pipe_and_a_building_shows_their_full_records(opened, demo):
    page, recorder = opened
    with open_store(demo) as store:
        buildings = sorted(store.query("buildings_500", limit=None).features, key=lambda f: -f.geometry.area)
        building, (pipe, pipe_point, building_point) = next(
            (b, spot) for b in buildings if (spot := clear_spot(store, b)) is not None
        )
        pipe_lonlat, building_lonlat = store_to_lonlat(store.crs, [pipe_point, building_point])
    centre = ((pipe_lonlat[0] + building_lonlat[0]) / 2, (pipe_lonlat[1] + building_lonlat[1]) / 2)
    wait_idle(page, f"map.jumpTo({{center: [{centre[0]}, {centre[1]}], zoom: 18.4}})")
    record = click_at(page, recorder, "water_pipes", pipe.fid, pipe_lonlat)
    assert record["id"] == pipe.fid and record["properties"]["pipe_id"] == pipe.properties["pipe_id"]
    popup = page.inner_text(".maplibregl-popup-content")
    assert pipe.fid in popup and pipe.properties["material"] in popup
    # the composite basemap at z18+ is the 1:500 map: the popup fetches from buildings_500
    record = click_at(page, recorder, "buildings_500", building.fid, building_lonlat)
    assert record["id"] == building.fid and record["properties"]["name"] == building.properties["name"]
    assert building.properties["name"] in page.inner_text(".maplibregl-popup-content")
    recorder.assert_clean()


def store_to_lonlat(crs: str, points) -> list[tuple[float, float]]:
    lon, lat = transform_points(crs, CRS84, np.array([p.x for p in points]), np.array([p.y for p in points]))
    return list(zip(lon.tolist(), lat.tolist(), strict=True))


def test_screenshot_of_the_district_for_the_readme(opened, server):
    """A view over the district's core, opened by its address (#zoom/lat/lon); kept for the README."""
    page, recorder = opened
    page.set_viewport_size(SCREENSHOT_SIZE)
    extent = httpx.get(f"{server}/collections/water_pipes").json()["extent"]["spatial"]["bbox"][0]
    lon, lat = (extent[0] + extent[2]) / 2, (extent[1] + extent[3]) / 2
    page.goto("about:blank")
    page.goto(f"{server}/map/#16.05/{lat:.5f}/{lon:.5f}")
    wait_for(page, "window.mapReady === true", timeout_ms=READY_MS)
    assert page.evaluate("() => window.twinMap.getZoom()") == pytest.approx(16.05)
    shot = np.asarray(Image.open(screenshot(page, SCREENSHOT_NAME)).convert("RGB"))
    assert shot.std() > 15 and near(shot, (255, 0, 255), 60) > 100  # gas pipes in CJJ 61 magenta
    assert near(shot, (0, 255, 255), 60) > 100  # water supply pipes in CJJ 61 cyan
    recorder.assert_clean()


def test_without_maplibre_the_page_says_how_to_install_it(demo, monkeypatch, tmp_path):
    monkeypatch.setenv("TWIN_NODE_MODULES", str(tmp_path / "absent"))
    with open_store(demo) as store, TestClient(create_app(store)) as client:
        response = client.get("/map/")
        assert response.status_code == 503 and response.headers["content-type"] == "application/problem+json"
        assert "make install" in response.json()["detail"]
        assert client.get("/static/maplibre-gl/maplibre-gl.mjs").status_code == 503


def test_page_files_are_served_and_nothing_else(demo):
    if not (maplibre_dist() / "maplibre-gl.mjs").exists():
        pytest.skip("maplibre-gl is not installed: run make install")
    with open_store(demo) as store, TestClient(create_app(store)) as client:
        page = client.get("/map/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert '<link rel="icon" href="data:,">' in page.text
        assert client.get("/map", follow_redirects=False).headers["location"].endswith("/map/")
        assert client.get("/static/maplibre-gl/maplibre-gl.mjs").headers["content-type"].startswith("text/javascript")
        assert client.get("/map/map.js").headers["content-type"].startswith("text/javascript")
        for url in (
            "/static/maplibre-gl/..%2F..%2F..%2Fpyproject.toml",
            "/static/maplibre-gl/package.json",
            "/map/nope.js",
        ):
            response = client.get(url)
            assert response.status_code == 404 and response.headers["content-type"] == "application/problem+json"
