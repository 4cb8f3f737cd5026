"""`POST /ingest`: uploads become jobs that run the CLI's readers; unsafe or oversized uploads are
refused with 4xx problems and leave nothing behind."""

from __future__ import annotations

import io
import stat
import time
import zipfile
from dataclasses import replace
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from fastapi.testclient import TestClient
from rasterio.transform import from_origin
from shapely.geometry import box

from tests.api_fixtures import X0, Y0, make_twin
from twin.api.app import create_app
from twin.auth import KeyStore
from twin.jobs import JOBS_DIR, JobState
from twin.model import TimeFilter

WAIT_S = 120


@pytest.fixture
def twin(tmp_path, monkeypatch):
    """A small twin, an app on it and an editor key; uploads limited to 2 MB for the tests."""
    monkeypatch.setenv("TWIN_MAX_UPLOAD_MB", "2")
    monkeypatch.setenv("TWIN_MAX_EXTRACT_MB", "8")
    store = make_twin(tmp_path / "data")
    token = KeyStore(store.data_dir).create("loader", "editor")[1]
    client = TestClient(create_app(store), raise_server_exceptions=False)
    client.headers["Authorization"] = f"Bearer {token}"
    yield store, client
    client.app.state.jobs.close()
    store.close()


def snapshot(store) -> list[tuple]:
    rows = []
    for layer in store.list_layers():
        for f in store.query(layer.id, time=TimeFilter(None, None), limit=None).features:
            rows.append((layer.id, layer.version, f.fid, f.version, str(f.valid_to), f.geometry.wkb_hex, f.properties))
    return sorted(rows, key=str)


def geojson_bytes(n: int = 3, crs: str = "EPSG:4549") -> bytes:
    frame = gpd.GeoDataFrame(
        {"bid": [f"n{i}" for i in range(n)], "floors": list(range(1, n + 1))},
        geometry=[box(X0 + 20 * i, Y0 + 100, X0 + 20 * i + 10, Y0 + 110) for i in range(n)],
        crs=crs,
    )
    return frame.to_json().encode()


def shapefile_zip(tmp_path: Path, name: str = "roads") -> bytes:
    folder = tmp_path / f"shp-{name}"
    folder.mkdir()
    frame = gpd.GeoDataFrame(
        {"name": ["中山路", "北京路"]},
        geometry=[box(X0, Y0 + 300, X0 + 50, Y0 + 305), box(X0, Y0 + 320, X0 + 5, Y0 + 400)],
    ).set_crs("EPSG:4549")
    frame.to_file(folder / f"{name}.shp")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.iterdir()):
            archive.write(path, f"data/{path.name}")
    return buffer.getvalue()


def wait_job(client: TestClient, url: str) -> dict:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        job = client.get(url).json()
        if JobState(job["state"]).finished:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job at {url} did not finish")


def upload(client: TestClient, name: str, content: bytes, **fields: str):
    return client.post("/ingest", files={"file": (name, content)}, data={"kind": "basemap", **fields})


def work_folders(store) -> list[Path]:
    root = Path(store.data_dir) / JOBS_DIR / "work"
    return sorted(root.iterdir()) if root.is_dir() else []


def assert_refused(response, status: int, *words: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    for word in words:
        assert word in response.json()["detail"], response.json()["detail"]


def test_geojson_upload_is_ingested_as_a_job(twin):
    store, client = twin
    response = upload(client, "new_buildings.geojson", geojson_bytes(), scale="1:500", title="新建筑")
    assert response.status_code == 202, response.text
    job = wait_job(client, response.headers["Location"])
    assert job["state"] == "succeeded", job
    assert job["result"]["layer"] == "new_buildings" and job["result"]["inserted"] == 3
    layer = store.get_layer("new_buildings")
    assert layer.feature_count == 3 and layer.scale_band == "1:500" and layer.title == "新建筑"
    assert job["params"]["filename"] == "new_buildings.geojson" and job["owner"]
    assert work_folders(store) == []  # the upload is gone once ingested


def test_zipped_shapefile_upload(twin, tmp_path):
    store, client = twin
    response = upload(client, "roads.zip", shapefile_zip(tmp_path), layer="roads_500", append="false")
    job = wait_job(client, response.headers["Location"])
    assert job["state"] == "succeeded", job
    names = {f.properties["name"] for f in store.query("roads_500", limit=None).features}
    assert names == {"中山路", "北京路"}


def test_raster_upload_becomes_a_cog_asset(twin, tmp_path):
    store, client = twin
    path = tmp_path / "dem.tif"
    profile = {"driver": "GTiff", "width": 64, "height": 64, "count": 1, "dtype": "float32", "crs": "EPSG:4549"}
    with rasterio.open(path, "w", transform=from_origin(X0, Y0 + 640, 10, 10), **profile) as dst:
        dst.write(np.arange(64 * 64, dtype="float32").reshape(1, 64, 64))
    job = wait_job(client, upload(client, "dem.tif", path.read_bytes(), kind="raster", layer="dem").headers["Location"])
    assert job["state"] == "succeeded", job
    key = store.get_layer("dem").metadata["raster"]["asset"]
    with rasterio.open(store.assets.open_path(key)) as cog:
        assert cog.overviews(1) is not None and cog.crs.to_epsg() == 4549


def test_a_failed_ingest_changes_nothing_and_names_no_server_path(twin):
    store, client = twin
    before = snapshot(store)
    job = wait_job(client, upload(client, "broken.geojson", b'{"type": "FeatureCollection", "feat').headers["Location"])
    assert job["state"] == "failed"
    assert "broken.geojson" in job["message"] and str(store.data_dir) not in job["message"], job["message"]
    assert snapshot(store) == before and work_folders(store) == []


def zip_with(members: list[tuple[zipfile.ZipInfo | str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for info, data in members:
            archive.writestr(info, data)
    return buffer.getvalue()


def symlink_member(name: str, target: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info, target.encode()


@pytest.mark.parametrize(
    ("members", "status", "word"),
    [
        ([("../../evil.geojson", b"{}")], 400, "climbs out"),
        ([("data/../../../evil.geojson", b"{}")], 400, "climbs out"),
        ([("/etc/cron.d/evil.geojson", b"{}")], 400, "absolute"),
        ([("C:/evil.geojson", b"{}")], 400, "absolute"),
        ([("data\\..\\evil.geojson", b"{}")], 400, "backslash"),
        ([symlink_member("link.geojson", "/etc/passwd")], 400, "link"),
        ([("a.geojson", b"{}"), ("A.geojson", b"{}")], 400, "more than once"),
        ([("bomb.geojson", b"\0" * (60 << 20))], 413, "zip bomb"),  # 60 MB of zeros packs to ~60 KB
        ([(f"part{i}.bin", np.random.default_rng(i).bytes(3 << 20)) for i in range(3)], 413, "TWIN_MAX_EXTRACT_MB"),
        ([("readme.txt", b"no data here")], 400, "no basemap file"),
        ([("a.geojson", b"{}"), ("b.geojson", b"{}")], 400, "several datasets"),
    ],
    ids=[
        "dotdot",
        "nested-dotdot",
        "absolute",
        "drive",
        "backslash",
        "symlink",
        "duplicate",
        "bomb",
        "too-big",
        "empty",
        "ambiguous",
    ],  # fmt: skip
)
def test_unsafe_archives_are_refused_before_anything_is_written(twin, tmp_path, members, status, word):
    store, client = twin
    before = snapshot(store)
    content = zip_with(members)
    if len(content) > 2 << 20:  # the random members do not compress: raise the upload limit for this one
        client.app.state.settings = replace(client.app.state.settings, max_upload_mb=16)
    response = upload(client, "upload.zip", content, kind="basemap")
    assert_refused(response, status, word)
    assert snapshot(store) == before and work_folders(store) == []
    assert client.get("/jobs").json()["jobs"] == []
    assert not list(tmp_path.parent.rglob("evil.geojson"))


def test_a_lying_archive_is_stopped_while_unpacking(tmp_path):
    """A member whose header claims fewer bytes than it holds: the count while unpacking stops it."""
    from twin.archives import ArchiveLimits, extract_zip

    content = bytearray(zip_with([("a.geojson", b"x" * 5000)]))
    path = tmp_path / "liar.zip"
    # both size fields (local header at 22, central directory at its offset + 24) claim 100 bytes
    content[22:26] = (100).to_bytes(4, "little")
    central = content.rfind(b"PK\x01\x02")
    content[central + 24 : central + 28] = (100).to_bytes(4, "little")
    path.write_bytes(bytes(content))
    with pytest.raises(Exception) as caught:
        extract_zip(path, tmp_path / "out", ArchiveLimits(1 << 20, 100, 10))
    assert getattr(caught.value, "status", None) in (400, 413), caught.value
    assert not (tmp_path / "out" / "a.geojson").exists() or (tmp_path / "out" / "a.geojson").stat().st_size <= 100


def test_uploads_over_the_limit_are_refused_while_streaming(twin):
    store, client = twin
    big = b"x" * (3 << 20)
    assert_refused(upload(client, "big.geojson", big, kind="basemap"), 413, "MB")

    def chunked():  # no Content-Length: the limit is enforced on the bytes received
        boundary = b"--b0undary"
        yield boundary + b'\r\nContent-Disposition: form-data; name="kind"\r\n\r\nbasemap\r\n'
        yield boundary + b'\r\nContent-Disposition: form-data; name="file"; filename="big.geojson"\r\n\r\n'
        for _ in range(6):
            yield b"y" * (1 << 19)
        yield b"\r\n" + boundary + b"--\r\n"

    response = client.post(
        "/ingest", content=chunked(), headers={"Content-Type": "multipart/form-data; boundary=b0undary"}
    )
    assert_refused(response, 413, "TWIN_MAX_UPLOAD_MB")
    assert work_folders(store) == [] and client.get("/jobs").json()["jobs"] == []


@pytest.mark.parametrize(
    ("fields", "name", "status", "word"),
    [
        ({"kind": "teleport"}, "a.geojson", 400, "unknown ingest kind"),
        ({"kind": "basemap", "layer": "../../etc"}, "a.geojson", 400, "layer"),
        ({"kind": "basemap", "layer": "twin_meta"}, "a.geojson", 400, "twin_meta"),
        ({"kind": "basemap", "crs": "EPSG:999999"}, "a.geojson", 400, "999999"),
        ({"kind": "basemap", "scale": "1:1"}, "a.geojson", 400, "scale"),
        ({"kind": "basemap", "valid_from": "yesterday"}, "a.geojson", 400, "yesterday"),
        ({"kind": "basemap", "colour": "red"}, "a.geojson", 400, "colour"),
        ({"kind": "basemap"}, "payload.exe", 400, ".geojson"),
        ({"kind": "raster"}, "a.geojson", 400, ".tif"),
    ],
)
def test_bad_options_are_refused_and_nothing_is_queued(twin, fields, name, status, word):
    store, client = twin
    assert_refused(upload(client, name, geojson_bytes(), **fields), status, word)
    assert work_folders(store) == [] and client.get("/jobs").json()["jobs"] == []


def test_requests_that_are_not_uploads(twin):
    _, client = twin
    assert_refused(client.post("/ingest", json={"kind": "basemap"}), 415, "multipart")
    assert_refused(client.post("/ingest", data={"kind": "basemap"}), 415, "multipart")
    assert_refused(client.post("/ingest", files={"other": ("a.txt", b"1")}, data={"kind": "basemap"}), 400, "file")
    assert_refused(upload(client, "empty.geojson", b"", kind="basemap"), 400, "empty")


def test_kinds_are_listed(twin):
    _, client = twin
    kinds = {k["kind"]: k for k in client.get("/ingest/kinds").json()["kinds"]}
    assert {"basemap", "raster", "ifc", "observations"} <= set(kinds)
    assert ".tif" in kinds["raster"]["suffixes"] and ".zip" in kinds["basemap"]["archives"]


def test_an_ifczip_is_unpacked_and_ingested(twin):
    from tests.conftest import shared_file

    store, client = twin
    ifc = shared_file("ifc/ifc4x3_bsi_sample_models/wall-extruded-solid.ifc")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.write(ifc, "model/wall.ifc")
    response = upload(client, "wall.ifczip", buffer.getvalue(), kind="ifc", layer="bim_upload", at="118.79,32.05,8")
    job = wait_job(client, response.headers["Location"])
    assert job["state"] == "succeeded", job
    layer = store.get_layer("bim_upload")
    assert layer.feature_count > 0 and store.assets.exists(layer.metadata["bim"]["meshes"][0])
    assert job["result"]["layer"] == "bim_upload"
