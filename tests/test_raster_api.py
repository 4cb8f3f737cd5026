"""`/raster/{id}/...`: titiler's factories over the twin's COGs (the demo's orthophoto and DEM).

References are independent of the server: the demo's source GeoTIFFs read with rasterio, tile
geometry from morecantile, coordinates from twin.crs.
"""

from __future__ import annotations

import io
import json
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path

import morecantile
import numpy as np
import pytest
import rasterio
from fastapi.testclient import TestClient
from PIL import Image

from ingestion.raster import ingest_raster
from tests.demo_twin import shared_demo
from twin.api.app import create_app
from twin.crs import CRS84, WEB_MERCATOR, transform_points
from twin.store import init_store, open_store

WMQ = morecantile.tms.get("WebMercatorQuad")
PROBLEM = "application/problem+json"
WMTS = {"wmts": "http://www.opengis.net/wmts/1.0", "ows": "http://www.opengis.net/ows/1.1"}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_demo(tmp_path_factory)


@pytest.fixture(scope="module")
def manifest(demo: Path) -> dict:
    return json.loads((demo / "sources" / "manifest.json").read_text())


@pytest.fixture(scope="module")
def client(demo: Path):
    store = open_store(demo)
    with TestClient(create_app(store), raise_server_exceptions=False) as test_client:
        yield test_client
    store.close()


def district_centre(manifest: dict) -> tuple[float, float]:
    minlon, minlat, maxlon, maxlat = manifest["bbox_lonlat"]
    return (minlon + maxlon) / 2, (minlat + maxlat) / 2


def png(response) -> Image.Image:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    return Image.open(io.BytesIO(response.content))


def assert_problem(response, status: int | tuple[int, ...], *words: str) -> None:
    statuses = status if isinstance(status, tuple) else (status,)
    assert response.status_code in statuses, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["status"] == response.status_code and body["detail"]
    for word in words:
        assert word in body["detail"]


def test_orthophoto_tile_over_the_district_is_a_full_picture(client, manifest):
    tile = WMQ.tile(*district_centre(manifest), 16)
    image = png(client.get(f"/raster/ortho/tiles/WebMercatorQuad/16/{tile.x}/{tile.y}.png"))
    assert image.size == (256, 256)
    rgba = np.asarray(image.convert("RGBA"))
    assert (rgba[..., 3] == 255).all()  # inside the district: no hole
    assert rgba[..., :3].std() > 10 and len(np.unique(rgba[..., :3].reshape(-1, 3), axis=0)) > 500


def test_orthophoto_tile_on_the_west_edge_is_transparent_outside(client, demo, manifest):
    """The transparent/opaque boundary in the tile lies where the raster's west edge projects."""
    minlon, minlat, maxlon, maxlat = manifest["bbox_lonlat"]
    z = 16
    tile = WMQ.tile(minlon + 0.0005, (minlat + maxlat) / 2, z)
    alpha = np.asarray(
        png(client.get(f"/raster/ortho/tiles/WebMercatorQuad/{z}/{tile.x}/{tile.y}.png")).convert("RGBA")
    )[..., 3]
    bounds = WMQ.xy_bounds(tile)
    with rasterio.open(demo / "sources" / "ortho.tif") as src:
        west, top, bottom = src.bounds.left, src.bounds.top, src.bounds.bottom
        crs = src.crs.to_string()
    rows = np.arange(8, 256, 16)
    row_y = bounds.top - (rows + 0.5) * (bounds.top - bounds.bottom) / 256
    # the west edge (constant easting) through each row's mercator y, found by transforming the edge densely
    edge_north = np.linspace(bottom, top, 2001)
    edge_x, edge_y = transform_points(crs, WEB_MERCATOR, np.full_like(edge_north, west), edge_north)
    expected_x = np.interp(row_y, edge_y, edge_x)
    expected_col = (expected_x - bounds.left) / (bounds.right - bounds.left) * 256
    assert ((expected_col > 20) & (expected_col < 236)).all(), "the chosen tile should straddle the edge"
    for row, col in zip(rows, expected_col, strict=True):
        assert (alpha[row, : int(col) - 2] == 0).all(), f"row {row}: opaque left of the edge at column {col:.1f}"
        assert (alpha[row, int(col) + 2 :] == 255).all(), (
            f"row {row}: transparent right of the edge at column {col:.1f}"
        )


def test_dem_point_query_equals_the_source_cell(client, demo):
    with rasterio.open(demo / "sources" / "dem.tif") as src:
        data = src.read(1)
        crs = src.crs.to_string()
        cells = [(137, 211), (500, 500), (880, 64)]
        for row, col in cells:
            x, y = src.xy(row, col)  # cell centre
            lon, lat = transform_points(crs, CRS84, np.array([x]), np.array([y]))
            body = client.get(f"/raster/dem/point/{lon[0]:.10f},{lat[0]:.10f}").json()
            assert body["values"][0] == pytest.approx(float(data[row, col]), abs=1e-4)


def test_dem_statistics_match_rasterio(client, demo):
    with rasterio.open(demo / "sources" / "dem.tif") as src:
        values = src.read(1, masked=True)
    stats = client.get("/raster/dem/statistics").json()["b1"]
    assert stats["min"] == pytest.approx(float(values.min()), abs=1e-3)
    assert stats["max"] == pytest.approx(float(values.max()), abs=1e-3)
    assert stats["mean"] == pytest.approx(float(values.mean()), rel=1e-4)
    info = client.get("/raster/dem/info").json()
    assert (info["width"], info["height"], info["dtype"]) == (1000, 1000, "float32")


def test_dem_hillshade_and_colormap_rendering(client, manifest):
    tile = WMQ.tile(*district_centre(manifest), 16)
    url = f"/raster/dem/tiles/WebMercatorQuad/16/{tile.x}/{tile.y}.png"
    shade = png(client.get(url, params={"algorithm": "hillshade", "buffer": 3}))
    assert shade.size == (256, 256) and shade.mode in ("LA", "L")
    grey = np.asarray(shade.convert("L"), dtype=float)
    assert grey.std() > 1  # relief shows
    coloured = np.asarray(png(client.get(url, params={"colormap_name": "terrain", "rescale": "6,26"})).convert("RGBA"))
    assert len(np.unique(coloured[..., :3].reshape(-1, 3), axis=0)) > 20
    flood = np.asarray(png(client.get(url, params={"colormap_name": "flood_depth", "rescale": "0,30"})).convert("RGBA"))
    assert not np.array_equal(flood, coloured)
    assert_problem(client.get(url, params={"colormap_name": "no_such_ramp"}), 400, "colormap_name")


def test_tilejson_offers_the_dem_renders_and_absolute_tile_urls(client, manifest):
    body = client.get("/raster/dem/WebMercatorQuad/tilejson.json").json()
    assert body["tiles"][0].startswith("http://testserver/raster/dem/tiles/WebMercatorQuad/{z}/{x}/{y}")
    minlon, minlat, maxlon, maxlat = manifest["bbox_lonlat"]
    assert body["bounds"] == pytest.approx([minlon, minlat, maxlon, maxlat], abs=2e-3)
    assert body["raster_layers"]["hillshade"]["algorithm"] == "hillshade"
    assert body["raster_layers"]["terrain"]["colormap_name"] == "terrain"
    ortho = client.get("/raster/ortho/WebMercatorQuad/tilejson.json").json()
    assert ortho["raster_layers"] == {} and ortho["maxzoom"] >= 17


def test_wmts_capabilities_parse_and_their_template_serves_tiles(client, manifest):
    response = client.get("/raster/ortho/WMTSCapabilities.xml")
    assert response.status_code == 200 and "xml" in response.headers["content-type"]
    root = ET.fromstring(response.content)
    matrix_sets = root.findall("wmts:Contents/wmts:TileMatrixSet", WMTS)
    assert "WebMercatorQuad" in {m.findtext("ows:Identifier", namespaces=WMTS) for m in matrix_sets}
    layer = next(
        lyr
        for lyr in root.findall("wmts:Contents/wmts:Layer", WMTS)
        if lyr.find("wmts:TileMatrixSetLink/wmts:TileMatrixSet", WMTS).text == "WebMercatorQuad"
    )
    assert layer.findtext("ows:Identifier", namespaces=WMTS).startswith("ortho_")
    template = layer.find("wmts:ResourceURL", WMTS).get("template")
    assert "/raster/ortho/tiles/WebMercatorQuad/{TileMatrix}/{TileCol}/{TileRow}" in template
    tile = WMQ.tile(*district_centre(manifest), 15)
    url = template.replace("{TileMatrix}", "15").replace("{TileCol}", str(tile.x)).replace("{TileRow}", str(tile.y))
    assert png(client.get(url.replace("http://testserver", ""))).size == (256, 256)


@pytest.mark.parametrize(
    ("url", "status", "word"),
    [
        ("/raster/nowhere/info", 404, "nowhere"),
        ("/raster/water_pipes/tiles/WebMercatorQuad/16/0/0.png", 404, "water_pipes"),
        ("/raster/ortho/tiles/WebMercatorQuad/30/0/0.png", (400, 404), "zoom 30"),  # or the server's TWIN_MAX_ZOOM
        ("/raster/ortho/tiles/WebMercatorQuad/-1/0/0.png", 400, "zoom -1"),
        ("/raster/ortho/tiles/WebMercatorQuad/3/8/0.png", 404, "outside"),
        ("/raster/ortho/tiles/WebMercatorQuad/5/0/0.png", 404, "outside bounds"),
        ("/raster/ortho/tiles/NoSuchMatrixSet/5/0/0.png", 400, "tileMatrixSetId"),
        ("/raster/dem/point/0,0", 404, "outside"),
        ("/raster/dem/info?datetime=yesterday", 400, "datetime"),
        ("/raster/dem/info?datetime=2020-01-01T00:00:00Z/..", 400, "instant"),
    ],
)
def test_bad_requests_are_problems(client, url, status, word):
    assert_problem(client.get(url), status, word)


def test_datetime_selects_the_survey_valid_then(tmp_path, demo):
    """A second survey replaces the first; asking for a time before it still gets the first."""
    source = demo / "sources" / "dem.tif"
    raised = tmp_path / "dem_raised.tif"
    with rasterio.open(source) as src:
        profile, data = src.profile, src.read(1)
        x, y = src.xy(300, 300)
        crs = src.crs.to_string()
    with rasterio.open(raised, "w", **profile) as dst:
        dst.write(np.where(data == profile["nodata"], data, data + 1.5), 1)
    with init_store(tmp_path / "twin", "EPSG:4549") as store:
        ingest_raster(store, source, "dem", kind="terrain", role="dem", valid_from=datetime(2015, 1, 1, tzinfo=UTC))
        ingest_raster(store, raised, "dem", kind="terrain", role="dem", valid_from=datetime(2022, 1, 1, tzinfo=UTC))
        lon, lat = transform_points(crs, CRS84, np.array([x]), np.array([y]))
        with TestClient(create_app(store)) as test_client:
            point = f"/raster/dem/point/{lon[0]:.10f},{lat[0]:.10f}"
            now = test_client.get(point).json()["values"][0]
            before = test_client.get(point, params={"datetime": "2018-06-01T00:00:00Z"}).json()["values"][0]
            assert now - before == pytest.approx(1.5, abs=1e-4)
            assert before == pytest.approx(float(data[300, 300]), abs=1e-4)
            assert_problem(test_client.get(point, params={"datetime": "2001-01-01T00:00:00Z"}), 404, "2001")


def test_drawn_tiles_are_kept_until_the_layer_changes_and_stay_behind_the_access_rules(tmp_path, demo, manifest):
    from twin.auth import KeyStore, set_restricted

    source = demo / "sources" / "dem.tif"
    raised = tmp_path / "dem_raised.tif"
    with rasterio.open(source) as src:
        profile, data = src.profile, src.read(1)
    with rasterio.open(raised, "w", **profile) as dst:
        dst.write(np.where(data == profile["nodata"], data, data + 5.0), 1)
    tile = WMQ.tile(*district_centre(manifest), 15)
    url = f"/raster/dem/tiles/WebMercatorQuad/15/{tile.x}/{tile.y}.png?colormap_name=terrain&rescale=0,60"
    with init_store(tmp_path / "twin", "EPSG:4549") as store:
        ingest_raster(store, source, "dem", kind="terrain", role="dem", valid_from=datetime(2015, 1, 1, tzinfo=UTC))
        token = KeyStore(store.data_dir).create("reader", "reader")[1]
        with TestClient(create_app(store), raise_server_exceptions=False) as test_client:
            first = test_client.get(url)
            again = test_client.get(url)
            assert first.status_code == again.status_code == 200
            assert first.content == again.content and first.headers["etag"] == again.headers["etag"]
            assert "max-age" in again.headers["cache-control"]
            kept = test_client.app.state.rendered_raster_tiles
            assert len(kept.items) == 1  # drawn once, answered twice
            assert test_client.get(url, headers={"If-None-Match": first.headers["etag"]}).status_code == 304
            # a new survey: a new version, so the tile is drawn again from the new heights
            ingest_raster(store, raised, "dem", kind="terrain", role="dem", valid_from=datetime(2022, 1, 1, tzinfo=UTC))
            newer = test_client.get(url)
            assert newer.status_code == 200 and newer.content != first.content
            # restricted after being drawn: the kept tile is not a way around the key
            set_restricted(store, "dem", True)
            assert_problem(test_client.get(url), 401, "restricted")
            with_key = test_client.get(url, headers={"Authorization": f"Bearer {token}"})
            assert with_key.status_code == 200 and with_key.content == newer.content
            assert_problem(test_client.get(url), 401, "restricted")
