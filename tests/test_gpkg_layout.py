"""The embedded store is a real GeoPackage: other tools read it and can keep editing it."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime

import pyogrio
import pytest
from shapely.geometry import Point, box

from twin.model import BBox, FeatureInput, Layer
from twin.store import init_store

X0, Y0 = 386_000.0, 3_546_000.0


@pytest.fixture
def gpkg(tmp_path):
    store = init_store(tmp_path / "data", "EPSG:4549")
    features = [FeatureInput(f"b{i}", box(X0 + 20 * i, Y0, X0 + 20 * i + 10, Y0 + 10), {"floors": i}) for i in range(5)]
    store.write_features(Layer(id="buildings_500", scale_band="1:500"), features, valid_from=datetime(2015, 1, 1))
    store.write_features(
        Layer(id="buildings_500", scale_band="1:500"), features[:2], valid_from=datetime(2021, 1, 1), mode="replace"
    )
    yield store
    store.close()


def test_header_tables_and_rtree_are_valid(gpkg):
    header = gpkg.path.read_bytes()[:100]
    assert header[68:72] == b"GPKG"  # what GDAL checks, straight from the file
    con = sqlite3.connect(gpkg.path)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert con.execute("SELECT rtreecheck('rtree_buildings_500_geom')").fetchone()[0] == "ok"
    triggers = {row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")}
    expected = {
        f"rtree_buildings_500_geom_{suffix}"
        for suffix in ("insert", "update1", "update2", "update3", "update4", "delete")
    }
    assert expected <= triggers
    srs = con.execute("SELECT srs_id FROM gpkg_geometry_columns WHERE table_name = 'buildings_500'").fetchone()[0]
    assert srs == 4549
    indexed = con.execute("SELECT count(*) FROM rtree_buildings_500_geom").fetchone()[0]
    assert indexed == 5  # every version is indexed, open or closed


def test_gdal_reads_versions_with_their_times(gpkg):
    frame = pyogrio.read_dataframe(gpkg.path, layer="buildings_500")
    assert len(frame) == 5
    assert frame.crs.to_epsg() == 4549
    closed = frame[frame["valid_to"].notna()]
    assert sorted(closed["feature_id"]) == ["b2", "b3", "b4"]


def test_another_writer_keeps_the_index_up_to_date(gpkg):
    """A row added by a plain SQLite client (as QGIS would) goes through the restored trigger."""
    con = gpkg.con
    blob = con.execute("SELECT geom FROM buildings_500 WHERE feature_id = 'b0'").fetchone()[0]
    far = gpkg_blob_at(gpkg, Point(X0 + 5000, Y0 + 5000))
    con.execute(
        "INSERT INTO buildings_500 (geom, feature_id, version, valid_from, properties, twin_digest) "
        "VALUES (?, 'qgis1', 1, '2022-01-01T00:00:00.000Z', '{}', 'x')",
        (far,),
    )
    assert blob is not None
    found = gpkg.query("buildings_500", bbox=BBox(X0 + 4990, Y0 + 4990, X0 + 5010, Y0 + 5010)).features
    assert [f.fid for f in found] == ["qgis1"]


def gpkg_blob_at(store, point: Point) -> bytes:
    import shapely

    from twin.store import gpkg_geometry

    return gpkg_geometry.encode(shapely.to_wkb(point, flavor="iso"), point.bounds, store.srs_id)


def test_times_are_utc_text_in_order(gpkg):
    history = gpkg.history("buildings_500", "b3")
    assert history[0].valid_from == datetime(2015, 1, 1, tzinfo=UTC)
    assert history[0].valid_to == datetime(2021, 1, 1, tzinfo=UTC)
