"""The excavation window: a clipping polygon with ECEF positions and the DEM's ground range, bad windows refused."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from fastapi.testclient import TestClient
from pyproj import Transformer
from rasterio.windows import from_bounds
from shapely.geometry import Polygon

from tests.demo_twin import shared_demo
from twin.api.app import create_app
from twin.store import open_store

WINDOW = (385_700.0, 3_547_800.0, 385_760.0, 3_547_850.0)  # EPSG:4549, inside the demo DEM


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    store = open_store(shared_demo(tmp_path_factory))
    with TestClient(create_app(store)) as client:
        yield store, client
    store.close()


def lonlat_bbox() -> str:
    to_lonlat = Transformer.from_crs("EPSG:4549", "OGC:CRS84", always_xy=True)
    lon, lat = to_lonlat.transform([WINDOW[0], WINDOW[2]], [WINDOW[1], WINDOW[3]])
    return f"{lon[0]},{lat[0]},{lon[1]},{lat[1]}"


def dem_extremes(store) -> tuple[float, float]:
    """Lowest and highest DEM cell touching the window, read straight from the COG."""
    key = store.get_layer("dem").metadata["raster"]["asset"]
    with rasterio.open(store.assets.open_path(key)) as src:
        window = from_bounds(*WINDOW, transform=src.transform).round_offsets().round_lengths()
        padded = rasterio.windows.Window(window.col_off - 1, window.row_off - 1, window.width + 3, window.height + 3)
        cells = src.read(1, window=padded, masked=True)
    return float(cells.min()), float(cells.max())


def test_window_in_the_project_crs(demo):
    store, client = demo
    response = client.get("/analysis/excavation", params={"bbox": ",".join(map(str, WINDOW)), "crs": "EPSG:4549"})
    assert response.status_code == 200, response.text
    body = response.json()
    ring = np.asarray(body["ring"])
    assert np.allclose(ring[0], ring[-1]) and len(ring) == 5
    assert Polygon(ring).exterior.is_ccw
    to_map = Transformer.from_crs("OGC:CRS84", "EPSG:4549", always_xy=True)
    x, y = to_map.transform(ring[:, 0], ring[:, 1])
    assert np.allclose(sorted(set(np.round(x, 3))), [WINDOW[0], WINDOW[2]], atol=1e-3)
    assert np.allclose(sorted(set(np.round(y, 3))), [WINDOW[1], WINDOW[3]], atol=1e-3)
    positions = np.asarray(body["positions"]).reshape(-1, 3)
    lon, lat, h = Transformer.from_crs("EPSG:4978", "EPSG:4979", always_xy=True).transform(*positions.T)
    assert np.allclose(np.column_stack([lon, lat]), ring[:-1], atol=1e-8)
    low, high = dem_extremes(store)
    ground = body["ground"]
    assert low - 1e-6 <= ground["min"] <= ground["max"] <= high + 1e-6 and ground["dem"] == "dem"
    offset = float(store.get_meta("geoid_offset") or 0.0)
    assert np.all((h >= low + offset - 0.01) & (h <= high + offset + 0.01))  # ring on the ground, ellipsoidal
    assert body["bottom"] == pytest.approx(ground["min"] - 3.0)
    assert body["area_m2"] == pytest.approx(60 * 50, rel=1e-6)


def test_window_in_crs84_and_as_a_polygon(demo):
    _, client = demo
    by_box = client.get("/analysis/excavation", params={"bbox": lonlat_bbox(), "depth": "5"}).json()
    assert by_box["depth"] == 5 and by_box["area_m2"] == pytest.approx(3000, rel=0.01)
    polygon = "POLYGON((385700 3547800, 385760 3547800, 385730 3547850, 385700 3547800))"
    triangle = client.get("/analysis/excavation", params={"polygon": polygon, "crs": "EPSG:4549"}).json()
    assert len(triangle["ring"]) == 4 and triangle["area_m2"] == pytest.approx(1500, rel=1e-6)


@pytest.mark.parametrize(
    ("params", "status", "word"),
    [
        ({}, 400, "bbox"),
        ({"bbox": "a,b,c,d"}, 400, "bbox"),
        ({"bbox": "118.8,32.0,118.7"}, 400, "bbox"),
        ({"bbox": "118.8,32.1,118.7,32.0"}, 400, "minimum is greater"),
        ({"bbox": "0,0,0.001,0.001"}, 400, "outside the twin's area"),
        ({"bbox": "118.70,32.00,118.73,32.03"}, 400, "must cover"),
        ({"bbox": ",".join(map(str, WINDOW)), "crs": "EPSG:4549", "depth": "-1"}, 400, "depth"),
        ({"bbox": ",".join(map(str, WINDOW)), "crs": "EPSG:0"}, 400, "unknown CRS"),
        ({"polygon": "LINESTRING(0 0, 1 1)", "crs": "EPSG:4549"}, 400, "polygon"),
    ],
)
def test_bad_windows_are_refused(demo, params, status, word):
    _, client = demo
    response = client.get("/analysis/excavation", params=params)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert word in response.json().get("detail", "") or not word, response.json()
