"""CesiumJS and the pages' scripts: gzip once, kept in memory, the same bytes as on disk."""

from __future__ import annotations

import gzip

import pytest
from fastapi.testclient import TestClient

from twin.api.app import create_app
from twin.api.threed import CESIUM_BUILD
from twin.api.viewer import VIEWER_DIR
from twin.store import init_store


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory):
    store = init_store(tmp_path_factory.mktemp("static") / "twin", "EPSG:4549")
    with TestClient(create_app(store)) as test_client:
        yield test_client
    store.close()


def fetch(client: TestClient, url: str, **headers: str):
    return client.get(url, headers=headers)


@pytest.mark.parametrize(
    "url, path",
    [("/static/cesium/Cesium.js", CESIUM_BUILD / "Cesium.js"), ("/viewer/viewer.js", VIEWER_DIR / "viewer.js")],
)
def test_scripts_go_out_gzipped_with_a_304_and_plain_to_clients_without_gzip(client, url, path):
    if not path.is_file():
        pytest.skip(f"{path} is not installed: run `make install`")
    on_disk = path.read_bytes()
    # httpx would undo the gzip itself: read the raw stream to see what went over the wire
    with client.stream("GET", url, headers={"Accept-Encoding": "gzip"}) as zipped:
        wire = b"".join(zipped.iter_raw())
        assert zipped.status_code == 200 and zipped.headers["content-encoding"] == "gzip"
        assert "Accept-Encoding" in zipped.headers["vary"]
        etag = zipped.headers["etag"]
    assert gzip.decompress(wire) == on_disk
    assert len(wire) < 0.5 * len(on_disk)
    assert fetch(client, url, **{"Accept-Encoding": "gzip", "If-None-Match": etag}).status_code == 304
    plain = fetch(client, url, **{"Accept-Encoding": "identity"})
    assert plain.status_code == 200 and "content-encoding" not in plain.headers and plain.content == on_disk


def test_paths_outside_the_package_are_still_refused(client):
    for url in ("/static/cesium/../package.json", "/static/cesium/%2e%2e/%2e%2e/pyproject.toml", "/viewer/..%2fcli.py"):
        assert client.get(url, headers={"Accept-Encoding": "gzip"}).status_code == 404, url
