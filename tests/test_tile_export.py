"""`twin export pmtiles|mbtiles`: archives that other readers open (the `pmtiles` package,
plain sqlite3), holding the same tiles the server gives."""

from __future__ import annotations

import gzip
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import mapbox_vector_tile
import pyproj
import pytest
from pmtiles.reader import MmapSource, Reader, all_tiles
from pmtiles.tile import Compression, TileType
from shapely.geometry import LineString, box

from tiles.vector.service import TileService
from twin.model import FeatureInput, Layer
from twin.store import init_store, open_store

X0, Y0 = 386_000.0, 3_547_000.0
TO_LONLAT = pyproj.Transformer.from_crs("EPSG:4549", "EPSG:4326", always_xy=True)


def twin_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "from twin.cli import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A block of 1:500 buildings and a water main across it."""
    directory = tmp_path_factory.mktemp("export") / "data"
    with init_store(directory, "EPSG:4549") as store:
        buildings = [
            FeatureInput(
                f"b{i}-{j}", box(X0 + 30 * i, Y0 + 30 * j, X0 + 30 * i + 18, Y0 + 30 * j + 12), {"floors": i + j}
            )
            for i in range(12)
            for j in range(8)
        ]
        store.write_features(Layer("buildings_500", scale_band="1:500", title="Buildings"), buildings)
        main = LineString([(X0 - 20, Y0 + 100), (X0 + 380, Y0 + 110)])
        store.write_features(Layer("water_pipes", kind="pipe_network"), [FeatureInput("w1", main, {"dn": 300})])
    return directory


def test_pmtiles_export_reads_back(data, tmp_path):
    out = tmp_path / "buildings.pmtiles"
    result = twin_cli(
        "export", "pmtiles", "buildings_500", str(out), "--minzoom", "14", "--maxzoom", "18", "--data", str(data)
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert (summary["minzoom"], summary["maxzoom"]) == (14, 18)
    with open(out, "rb") as handle:
        get = MmapSource(handle)
        reader = Reader(get)
        header = reader.header()
        assert header["tile_type"] == TileType.MVT and header["tile_compression"] == Compression.GZIP
        assert (header["min_zoom"], header["max_zoom"]) == (14, 18)
        lon, lat = TO_LONLAT.transform(X0 + 180, Y0 + 120)
        assert header["min_lon_e7"] / 1e7 < lon < header["max_lon_e7"] / 1e7
        assert header["min_lat_e7"] / 1e7 < lat < header["max_lat_e7"] / 1e7
        metadata = reader.metadata()
        assert metadata["vector_layers"][0]["id"] == "buildings_500"
        tiles = dict(all_tiles(get))
    assert len(tiles) == summary["tiles"] > 5
    seen = set()
    with open_store(data) as store:
        service = TileService(store, check_interval=0)
        for (z, x, y), blob in tiles.items():
            decoded = mapbox_vector_tile.decode(gzip.decompress(blob))
            seen |= {f["properties"]["fid"] for f in decoded["buildings_500"]["features"]}
            assert blob == service.tile("buildings_500", z, x, y).data  # the server's tile
        service.close()
    assert len(seen) == 96


def test_mbtiles_export_reads_back_with_sqlite(data, tmp_path):
    out = tmp_path / "basemap.mbtiles"
    result = twin_cli(
        "export", "mbtiles", "basemap", str(out), "--minzoom", "18", "--maxzoom", "19", "--data", str(data)
    )
    assert result.returncode == 0, result.stderr
    with sqlite3.connect(out) as con:
        metadata = dict(con.execute("SELECT name, value FROM metadata"))
        rows = con.execute("SELECT zoom_level, tile_column, tile_row, tile_data FROM tiles").fetchall()
    assert metadata["format"] == "pbf" and (metadata["minzoom"], metadata["maxzoom"]) == ("18", "19")
    layers = json.loads(metadata["json"])["vector_layers"]
    assert [layer["id"] for layer in layers] == ["buildings"]  # the basemap class of buildings_500
    assert {z for z, _, _, _ in rows} == {18, 19}
    with open_store(data) as store:
        service = TileService(store, check_interval=0)
        for z, x, tms_row, blob in rows:
            y = (1 << z) - 1 - tms_row  # MBTiles counts rows from the south
            assert blob == service.tile("basemap", z, x, y).data
            assert "buildings" in mapbox_vector_tile.decode(gzip.decompress(blob))
        service.close()


def test_bad_exports_exit_2_and_write_nothing(data, tmp_path):
    out = tmp_path / "x.pmtiles"
    for args in (
        ("export", "geojson", "buildings_500", str(out)),
        ("export", "pmtiles", "no_such_layer", str(out)),
        ("export", "pmtiles", "buildings_500", str(out), "--minzoom", "12", "--maxzoom", "9"),
        ("export", "pmtiles", "basemap", str(out), "--minzoom", "16"),  # the 1:500 band starts at z18
    ):
        result = twin_cli(*args, "--data", str(data))
        assert result.returncode == 2, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("error:")
        assert not out.exists() and not list(tmp_path.glob("*.partial"))
