"""Faults, for real: an ingest killed with SIGKILL in the middle of its write, on both backends,
leaves the twin exactly as it was and no orphan assets; a PostGIS server that goes down under a
running app gives 503 problems, and the app serves again once the server is back."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from fastapi.testclient import TestClient
from rasterio.transform import from_origin
from shapely import box

from tests.api_fixtures import X0, Y0, populate
from twin.api.app import create_app
from twin.integrity import orphan_assets
from twin.model import TimeFilter
from twin.store import init_store, open_store

REPO = Path(__file__).resolve().parents[1]
WAIT_S = 180  # bound on waiting for the write to be under way
BIG = 200_000  # polygons in the file whose ingest is killed: many seconds of writing


def snapshot(store) -> tuple:
    """Every layer's description and version, every feature version, every asset file."""
    layers, rows = [], []
    for layer in store.list_layers():
        layers.append((layer.id, layer.version, layer.feature_count, layer.bbox, layer.metadata))
        for f in store.query(layer.id, time=TimeFilter(None, None), limit=None).features:
            rows.append((layer.id, f.fid, f.version, str(f.valid_from), str(f.valid_to), f.geometry.wkb, f.properties))
    return sorted(layers, key=str), sorted(rows, key=str), store.assets.keys()


def write_raster(path: Path, offset: float) -> Path:
    profile = {"driver": "GTiff", "width": 32, "height": 32, "count": 1, "dtype": "float32", "crs": "EPSG:4549"}
    with rasterio.open(path, "w", transform=from_origin(X0, Y0 + 320, 10, 10), **profile) as dst:
        dst.write(np.full((1, 32, 32), offset, dtype="float32"))
    return path


def twin_env(url: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "TWIN_STORE"}
    return {**env, "TWIN_STORE": url} if url else env


@pytest.fixture
def twin(backend, tmp_path, request):
    """A twin with vector layers, and a raster layer with two editions (two assets, the older one
    named only by the history), on each backend."""
    url = request.getfixturevalue("postgis_database") if backend == "postgis" else None
    (tmp_path / "data").mkdir()  # the assets' home, also for PostGIS
    store = init_store(tmp_path / "data", "EPSG:4549", url=url)
    populate(store)
    from ingestion.raster import ingest_raster

    ingest_raster(store, write_raster(tmp_path / "dem1.tif", 1.0), "dem")
    ingest_raster(store, write_raster(tmp_path / "dem2.tif", 2.0), "dem")
    yield store, url
    store.close()


@pytest.fixture(scope="module")
def big_file(tmp_path_factory) -> Path:
    return big_vector_file(tmp_path_factory.mktemp("big") / "city_buildings.fgb")


def big_vector_file(path: Path) -> Path:
    side = int(np.ceil(np.sqrt(BIG)))
    i = np.arange(BIG)
    x, y = X0 + (i % side) * 3.0, Y0 + 1000 + (i // side) * 3.0
    frame = gpd.GeoDataFrame(
        {"bid": [f"b{k}" for k in i], "floors": (i % 30) + 1, "name": [f"楼{k}" for k in i]},
        geometry=box(x, y, x + 2, y + 2),
        crs="EPSG:4549",
    )
    frame.to_file(path, driver="FlatGeobuf")
    return path


def write_under_way(backend: str, data: Path, url: str | None, baseline_wal: int) -> bool:
    """The killed process's transaction has written rows but not committed."""
    if backend == "gpkg":
        wal = data / "twin.gpkg-wal"
        return wal.exists() and wal.stat().st_size > baseline_wal + (8 << 20)
    import psycopg

    with psycopg.connect(url, autocommit=True) as con:
        row = con.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'cim-twin' "
            "AND query LIKE 'COPY%%' AND state <> 'idle' AND xact_start IS NOT NULL"
        ).fetchone()
    return row[0] > 0


def kill_when(process: subprocess.Popen, condition, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    try:
        while not condition():
            if process.poll() is not None:
                raise AssertionError(f"the ingest ended before {what}: {process.stderr.read()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(0.02)
        assert process.poll() is None, "the ingest finished before it could be killed"
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()


def test_an_ingest_killed_mid_write_leaves_the_twin_as_it_was(twin, backend, tmp_path, big_file):
    store, url = twin
    source = big_file
    before = snapshot(store)
    data = Path(store.data_dir)
    wal = data / "twin.gpkg-wal"
    baseline = wal.stat().st_size if wal.exists() else 0
    command = [sys.executable, "-c", "from twin.cli import main; main()", "ingest", "basemap", str(source)]
    process = subprocess.Popen(
        [*command, "--layer", "buildings", "--data", str(data)],  # a new edition of an existing layer
        env=twin_env(url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    kill_when(process, lambda: write_under_way(backend, data, url, baseline), "the write to be under way")
    assert process.returncode == -signal.SIGKILL
    with open_store(data, url=url) as reopened:
        assert snapshot(reopened) == before
        assert orphan_assets(reopened) == []
    done = subprocess.run(  # the twin still takes writes
        [*command[:4], "raster", str(tmp_path / "dem1.tif"), "--layer", "dem_copy", "--data", str(data)],
        env=twin_env(url),
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr


STALLED_RASTER_INGEST = """
import sys, time
from ingestion.raster import ingest_raster
from twin.integrity import guarded_ingest
from twin.store import open_store

store = open_store(sys.argv[1])
write = store.write_features

def stalled(layer, features, **options):
    def then_stall():
        yield from features
        print("in the transaction, asset stored", flush=True)
        time.sleep(600)  # killed here: the transaction is open, the COG asset already on disk
    return write(layer, then_stall(), **options)

store.write_features = stalled
with guarded_ingest(store):
    ingest_raster(store, sys.argv[2], sys.argv[3])
"""


def test_a_killed_raster_ingest_leaves_no_orphan_asset(twin, tmp_path):
    store, url = twin
    data = Path(store.data_dir)
    before = snapshot(store)
    process = subprocess.Popen(
        [sys.executable, "-c", STALLED_RASTER_INGEST, str(data), str(write_raster(tmp_path / "new.tif", 7.0)), "dem"],
        env=twin_env(url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        line = process.stdout.readline()
        assert "asset stored" in line, process.stderr.read() if process.poll() is not None else line
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    with open_store(data, url=url) as reopened:
        left = orphan_assets(reopened)
        assert len(left) == 1 and reopened.assets.keys() == sorted([*before[2], *left])  # the new COG
        client = TestClient(create_app(reopened))  # starting a server clears what the kill left
        assert client.get("/ready").status_code == 200
        assert snapshot(reopened) == before and orphan_assets(reopened) == []
        client.app.state.jobs.close()
    assert not list(data.glob("tmp*")) and not list((data / "assets").glob(".incoming-*"))


def test_postgis_outage_under_a_running_app(postgis_cluster, tmp_path):
    url = postgis_cluster.create_database("outage_app", template="twin_template")
    store = init_store(tmp_path / "data", "EPSG:4549", url=url)
    try:
        populate(store)
        client = TestClient(create_app(store), raise_server_exceptions=False)
        urls = ["/collections", "/collections/buildings/items", "/collections/buildings/items/b2", "/ready"]
        answers = {u: client.get(u) for u in urls}
        assert all(r.status_code == 200 for r in answers.values())
        postgis_cluster.stop()
        try:
            for u in [*urls, "/health"]:
                response = client.get(u)
                assert response.status_code == 503, (u, response.status_code, response.text)
                assert response.headers["content-type"].startswith("application/problem+json")
                assert response.json()["status"] == 503 and response.json()["detail"]
        finally:
            postgis_cluster.start()
        for u in urls:  # same app, same store object: it reconnects by itself
            again = client.get(u)
            assert again.status_code == 200, (u, again.text)
        assert (
            client.get("/collections/buildings/items").json()["features"]
            == (answers["/collections/buildings/items"].json()["features"])
        )
        client.app.state.jobs.close()
    finally:
        store.close()
        postgis_cluster.drop_database("outage_app")
