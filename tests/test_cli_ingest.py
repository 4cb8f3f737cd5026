"""The `twin` command end to end: init, ingest basemap/raster/observations, bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from shapely.geometry import Point, box

from tests.conftest import shared_file
from twin.model import BBox, TimeFilter
from twin.store import open_store

X0, Y0 = 386_000.0, 3_546_000.0


def twin(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "from twin.cli import main; main()", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )


@pytest.fixture
def data(tmp_path: Path) -> Path:
    directory = tmp_path / "twin-data"
    result = twin("init", str(directory), "--crs", "EPSG:4549")
    assert result.returncode == 0, result.stderr
    return directory


def write_buildings(path: Path, crs: str | None = "EPSG:4549", floors: int = 3, n: int = 4, driver=None) -> None:
    frame = gpd.GeoDataFrame(
        {"bid": [f"b{i}" for i in range(n)], "floors": [floors] * n, "name": [f"楼{i}" for i in range(n)]},
        geometry=[box(X0 + 20 * i, Y0, X0 + 20 * i + 10, Y0 + 10) for i in range(n)],
        crs=crs,
    )
    frame.to_file(path, driver=driver)


def state(directory: Path) -> list[tuple]:
    """Every layer's version and every feature version, to prove a failure changed nothing."""
    with open_store(directory) as store:
        rows = []
        for layer in store.list_layers():
            everything = TimeFilter(None, None)
            for f in store.query(layer.id, time=everything, limit=None).features:
                rows.append((layer.id, layer.version, f.fid, f.version, f.valid_to, f.geometry.wkt))
        return sorted(rows, key=str)


def assert_one_line_error(result: subprocess.CompletedProcess, *words: str) -> None:
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for word in words:
        assert word in lines[0], lines[0]


def test_init_makes_a_geopackage_that_gdal_lists(data):
    write_buildings(data.parent / "b.gpkg")
    result = twin(
        "ingest",
        "basemap",
        str(data.parent / "b.gpkg"),
        "--layer",
        "buildings_500",
        "--scale",
        "1:500",
        "--data",
        str(data),
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["inserted"] == 4
    if shutil.which("ogrinfo") is None:
        pytest.skip("ogrinfo (Debian gdal-bin) is not installed")
    listing = subprocess.run(["ogrinfo", "-ro", str(data / "twin.gpkg")], capture_output=True, text=True)
    assert listing.returncode == 0 and "buildings_500" in listing.stdout
    summary = subprocess.run(
        ["ogrinfo", "-ro", "-so", str(data / "twin.gpkg"), "buildings_500"], capture_output=True, text=True
    ).stdout
    assert "Feature Count: 4" in summary and "CM 120E" in summary


def test_editions_build_history(data, tmp_path):
    old, new = tmp_path / "old.geojson", tmp_path / "new.geojson"
    write_buildings(old, floors=3, n=4)
    write_buildings(new, floors=5, n=3)  # b3 demolished, the others got two more floors
    for path, when in ((old, "2015-01-01T00:00:00Z"), (new, "2021-06-01T00:00:00Z")):
        result = twin(
            "ingest", "basemap", str(path), "--layer", "buildings_500", "--valid-from", when, "--data", str(data)
        )
        assert result.returncode == 0, result.stderr
    with open_store(data) as store:
        past = store.query("buildings_500", time=TimeFilter.parse("2020-01-01T00:00:00Z"), limit=None).features
        now = store.query("buildings_500", limit=None).features
    assert sorted((f.fid, f.properties["floors"]) for f in past) == [("b0", 3), ("b1", 3), ("b2", 3), ("b3", 3)]
    assert sorted((f.fid, f.properties["floors"]) for f in now) == [("b0", 5), ("b1", 5), ("b2", 5)]
    assert now[0].properties["name"].startswith("楼")


def test_reprojects_from_the_files_crs(data, tmp_path):
    lonlat = tmp_path / "wgs84.fgb"
    frame = gpd.GeoDataFrame({"id": ["p"]}, geometry=[Point(118.78, 32.04)], crs="EPSG:4326")
    frame.to_file(lonlat, driver="FlatGeobuf")
    result = twin("ingest", "basemap", str(lonlat), "--layer", "poi", "--data", str(data))
    assert result.returncode == 0, result.stderr
    with open_store(data) as store:
        point = store.get_feature("poi", "p").geometry
        assert store.get_layer("poi").source_crs == "EPSG:4326"
    assert (point.x, point.y) == pytest.approx((384_764.607, 3_546_938.841), abs=0.01)


def test_shapefile_and_geopackage_from_the_shared_data(tmp_path):
    shp = shared_file("vector/shp_fiona/coutwildrnp.shp")
    gpkg = shared_file("vector/osm_helsinki_gpkg/helsinki_osm.gpkg")
    us = tmp_path / "us"
    assert twin("init", str(us), "--crs", "EPSG:5070").returncode == 0  # CONUS Albers, metres
    result = twin("ingest", "basemap", str(shp), "--data", str(us))
    assert result.returncode == 0, result.stderr
    fi = tmp_path / "fi"
    assert twin("init", str(fi), "--crs", "EPSG:3067").returncode == 0
    result = twin(
        "ingest",
        "basemap",
        str(gpkg),
        "--source-layer",
        "buildings",
        "--layer",
        "helsinki_buildings",
        "--data",
        str(fi),
    )
    assert result.returncode == 0, result.stderr
    with open_store(us) as store:
        assert store.get_layer("coutwildrnp").feature_count == 67
    with open_store(fi) as store:
        layer = store.get_layer("helsinki_buildings")
        assert layer.feature_count == 446
        centre = BBox(*layer.bbox)
        assert 380_000 < centre.minx < 400_000 and 6_660_000 < centre.miny < 6_690_000  # Helsinki in TM35FIN


def test_wrong_area_is_refused(data):
    shp = shared_file("vector/shp_fiona/coutwildrnp.shp")  # Colorado, not near Nanjing
    before = state(data)
    result = twin("ingest", "basemap", str(shp), "--data", str(data))
    assert_one_line_error(result, "outside the project CRS")
    assert state(data) == before


def test_bad_inputs_are_one_line_errors_and_change_nothing(data, tmp_path):
    good = tmp_path / "good.gpkg"
    write_buildings(good)
    assert twin("ingest", "basemap", str(good), "--layer", "buildings_500", "--data", str(data)).returncode == 0
    before = state(data)

    not_geodata = tmp_path / "notes.txt"
    not_geodata.write_text("this is not a map\n")
    assert_one_line_error(twin("ingest", "basemap", str(not_geodata), "--data", str(data)), "notes.txt")

    no_crs = tmp_path / "nocrs.geojson"
    no_crs.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [
                    {"type": "Feature", "properties": {"id": 1}, "geometry": {"type": "Point", "coordinates": [X0, Y0]}}
                ],
            }
        )
    )
    nocrs_shp = tmp_path / "nocrs.shp"
    gpd.GeoDataFrame({"id": [1]}, geometry=[Point(X0, Y0)]).to_file(nocrs_shp)
    assert_one_line_error(twin("ingest", "basemap", str(nocrs_shp), "--data", str(data)), "--crs")
    # GeoJSON is CRS84 by definition: projected numbers in it are caught as not lon/lat
    assert_one_line_error(twin("ingest", "basemap", str(no_crs), "--data", str(data)), "--crs")

    corrupt = tmp_path / "corrupt.gpkg"
    corrupt.write_bytes(good.read_bytes()[:4096] + b"\x00garbage" * 512)
    assert_one_line_error(twin("ingest", "basemap", str(corrupt), "--data", str(data)), "corrupt.gpkg")

    missing = twin("ingest", "basemap", str(tmp_path / "absent.gpkg"), "--data", str(data))
    assert_one_line_error(missing, "absent.gpkg")
    assert_one_line_error(twin("ingest", "teleport", str(good), "--data", str(data)), "teleport")
    assert_one_line_error(twin("ingest", "basemap", str(good), "--layer", "Bad Name", "--data", str(data)), "layer id")
    assert_one_line_error(twin("ingest", "basemap", str(good), "--valid-from", "yesterday", "--data", str(data)))
    assert_one_line_error(twin("ingest", "basemap", str(good), "--crs", "EPSG:0", "--data", str(data)), "CRS")
    assert state(data) == before


def test_no_twin_and_bad_project_crs(tmp_path):
    assert_one_line_error(twin("layers", "--data", str(tmp_path / "nothing")), "twin init")
    assert_one_line_error(twin("init", str(tmp_path / "geo"), "--crs", "EPSG:4490"), "projected")
    assert not (tmp_path / "geo" / "twin.gpkg").exists()
    not_a_store = tmp_path / "fake"
    not_a_store.mkdir()
    (not_a_store / "twin.gpkg").write_text("hello")
    assert_one_line_error(twin("layers", "--data", str(not_a_store)), "GeoPackage")


def test_raster_becomes_a_cog_asset(data, tmp_path):
    dem = tmp_path / "dem.tif"
    heights = np.linspace(5, 25, 64 * 64, dtype="float32").reshape(64, 64)
    with rasterio.open(
        dem,
        "w",
        driver="GTiff",
        width=64,
        height=64,
        count=1,
        dtype="float32",
        crs="EPSG:4549",
        transform=from_origin(X0, Y0 + 128, 2, 2),
        nodata=-9999,
    ) as dst:
        dst.write(heights, 1)
    result = twin("ingest", "raster", str(dem), "--layer", "dem", "--data", str(data))
    assert result.returncode == 0, result.stderr
    with open_store(data) as store:
        layer = store.get_layer("dem")
        raster = layer.metadata["raster"]
        cog = store.assets.open_path(raster["asset"])
        assert layer.kind == "raster" and raster["width"] == 64
        assert layer.bbox == pytest.approx((X0, Y0, X0 + 128, Y0 + 128))
    from rio_cogeo.cogeo import cog_validate

    assert cog_validate(str(cog), quiet=True)[0]
    with rasterio.open(cog) as src:
        assert np.array_equal(src.read(1), heights)
    broken = tmp_path / "broken.tif"
    broken.write_bytes(dem.read_bytes()[:300])
    assert_one_line_error(twin("ingest", "raster", str(broken), "--layer", "dem2", "--data", str(data)))


def test_observations_csv(data, tmp_path):
    good = tmp_path / "obs.csv"
    good.write_text(
        "sensor_id,time,quantity,value,unit\nwl1,2024-07-15T00:00:00Z,water_level,0.05,m\n"
        "wl1,2024-07-15T00:05:00Z,water_level,0.21,m\n"
    )
    assert twin("ingest", "observations", str(good), "--data", str(data)).returncode == 0
    bad = tmp_path / "bad.csv"
    bad.write_text("sensor_id,time,quantity,value,unit\nwl1,2024-07-15T00:10:00Z,water_level,deep,m\n")
    assert_one_line_error(twin("ingest", "observations", str(bad), "--data", str(data)), "bad.csv:2")
    with open_store(data) as store:
        assert [o.value for o in store.query_observations("wl1")] == [0.05, 0.21]
