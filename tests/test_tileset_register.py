"""Registering existing 3D Tiles: served byte for byte under the layer, in the twin root, traversal refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from ingestion.tileset import ingest_tileset
from tests.conftest import shared_file
from tiles.threed.validate import check_tileset
from twin.api.app import create_app
from twin.model import InvalidInput
from twin.store import init_store

SAMPLES = "mesh/3dtiles_samples_1.1"
NANJING = (118.78, 32.04, 12.0)


@pytest.fixture
def store(tmp_path):
    twin = init_store(tmp_path / "twin", "EPSG:4549")
    yield twin
    twin.close()


def state(store) -> tuple:
    return [(layer.id, layer.version) for layer in store.list_layers()], store.assets.keys()


def fetch_all(client: TestClient, url: str) -> dict[str, bytes]:
    """Every file a client reaches from `url`: external tilesets, explicit contents, implicit subtrees."""
    seen: dict[str, bytes] = {}
    pending = [url]
    while pending:
        current = pending.pop()
        response = client.get(current)
        assert response.status_code == 200, (current, response.text)
        seen[current] = response.content
        document = json.loads(response.content)
        base = current.rsplit("/", 1)[0]
        stack = [document["root"]]
        while stack:
            tile = stack.pop()
            for item in tile.get("contents", []) + ([tile["content"]] if "content" in tile else []):
                if "implicitTiling" in tile:
                    continue
                target = f"{base}/{item['uri']}"
                if target.endswith(".json"):
                    pending.append(target)
                else:
                    seen[target] = client.get(target).content
            stack.extend(tile.get("children", []))
    return seen


@pytest.mark.parametrize("name", ["SparseImplicitQuadtree", "MetadataGranularities", "TilesetWithFullMetadata"])
def test_sample_tilesets_are_served_byte_identical_and_joined_to_the_twin_root(store, name):
    folder = shared_file(f"{SAMPLES}/{name}")
    with pytest.raises(InvalidInput, match="not georeferenced"):
        ingest_tileset(store, folder)  # a sample at the Earth's centre needs a place
    report = ingest_tileset(store, folder, at=NANJING, layer_id="sample")
    with TestClient(create_app(store)) as client:
        outer = client.get("/3dtiles/sample/tileset.json").json()
        build = outer["root"]["content"]["uri"].split("/")[0]
        prefix = f"/3dtiles/sample/{build}/source/"
        fetched = fetch_all(client, "/3dtiles/sample/tileset.json")
        served = {url[len(prefix) :]: data for url, data in fetched.items() if url.startswith(prefix)}
        assert served["tileset.json"] == (folder / "tileset.json").read_bytes()
        for relative, data in served.items():
            assert data == (folder / relative).read_bytes(), relative
        for path in folder.rglob("*"):  # subtrees and template contents too, every file as delivered
            if path.is_file():
                response = client.get(prefix + path.relative_to(folder).as_posix())
                assert response.status_code == 200 and response.content == path.read_bytes()
        root = client.get("/3dtiles/twin/tileset.json").json()
        assert any(c["content"]["uri"].startswith("../sample/tileset.json") for c in root["root"]["children"])
        report_check = check_tileset("http://testserver/3dtiles/twin/tileset.json", lambda u: client.get(u).content)
        assert report_check.ok, report_check.errors
    assert report.layer == "sample" and store.get_layer("sample").kind.value == "tileset"


def georeferenced_copy(tmp_path: Path, **changes) -> Path:
    """A small georeferenced tileset: a sample glb under a region near Nanjing."""
    folder = tmp_path / "city"
    (folder / "tiles").mkdir(parents=True)
    shutil.copy(shared_file(f"{SAMPLES}/MetadataGranularities/house1-1.glb"), folder / "tiles" / "house.glb")
    region = [2.07310, 0.55920, 2.07312, 0.55922, 0.0, 30.0]
    document = {
        "asset": {"version": "1.0"},
        "geometricError": 50.0,
        "root": {"boundingVolume": {"region": region}, "geometricError": 0.0, "content": {"uri": "tiles/house.glb"}},
    }
    document["root"].update(changes)
    (folder / "tileset.json").write_text(json.dumps(document))
    return folder


def test_a_georeferenced_tileset_is_served_where_it_is(store, tmp_path):
    folder = georeferenced_copy(tmp_path)
    report = ingest_tileset(store, folder)
    with TestClient(create_app(store)) as client:
        outer = client.get(f"/3dtiles/{report.layer}/tileset.json").json()
        assert "transform" not in outer["root"]
        assert (
            outer["root"]["boundingVolume"]["region"]
            == json.loads((folder / "tileset.json").read_text())["root"]["boundingVolume"]["region"]
        )
        build = outer["root"]["content"]["uri"].split("/")[0]
        glb = client.get(f"/3dtiles/{report.layer}/{build}/source/tiles/house.glb")
        assert glb.content == (folder / "tiles" / "house.glb").read_bytes()
        outside = client.get(f"/3dtiles/{report.layer}/{build}/source/../../../twin.gpkg")
        assert outside.status_code == 404


@pytest.mark.parametrize(
    ("uri", "word"),
    [
        ("../secret.glb", "outside the tileset folder"),
        ("tiles/../../secret.glb", "outside the tileset folder"),
        ("/etc/passwd", "not a relative path"),
        ("file:///etc/passwd", "not a relative path"),
        ("https://example.com/house.glb", "not a relative path"),
        ("tiles/missing.glb", "missing"),
    ],
)
def test_traversal_and_missing_contents_are_refused(store, tmp_path, uri, word):
    (tmp_path / "secret.glb").write_bytes(b"glTF")
    folder = georeferenced_copy(tmp_path, content={"uri": uri})
    before = state(store)
    with pytest.raises(InvalidInput, match=word):
        ingest_tileset(store, folder)
    assert state(store) == before


def test_links_and_broken_documents_are_refused(store, tmp_path):
    folder = georeferenced_copy(tmp_path)
    (folder / "tiles" / "link.glb").symlink_to(folder / "tiles" / "house.glb")
    with pytest.raises(InvalidInput, match="link"):
        ingest_tileset(store, folder)
    (folder / "tiles" / "link.glb").unlink()
    (folder / "tileset.json").write_text('{"asset": {"version": "1.0"}, "geometricError": 1, "root": {"geometricEr')
    with pytest.raises(InvalidInput, match="not a readable tileset JSON"):
        ingest_tileset(store, folder)
    (folder / "tileset.json").write_text('{"asset": {"version": "1.0"}, "geometricError": 1, "root": {}}')
    with pytest.raises(InvalidInput, match="no bounding volume"):
        ingest_tileset(store, folder)
    assert store.list_layers() == []


def test_cli_refuses_an_unplaced_sample_with_one_line(tmp_path):
    import subprocess
    import sys

    data = tmp_path / "cli"
    init_store(data, "EPSG:4549").close()
    folder = shared_file(f"{SAMPLES}/TilesetWithFullMetadata")
    command = [sys.executable, "-c", "from twin.cli import main; main()", "ingest", "tileset", str(folder)]
    refused = subprocess.run([*command, "--data", str(data)], capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and refused.stderr.strip().count("\n") == 0 and "--at" in refused.stderr
    done = subprocess.run([*command, "--at", "118.78,32.04,10", "--data", str(data)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_the_ingest_api_takes_a_zipped_tileset_folder(store, tmp_path):
    import io
    import time
    import zipfile

    from twin.auth import KeyStore

    def zipped(folder: Path) -> bytes:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            for path in sorted(folder.rglob("*")):
                if path.is_file():
                    archive.write(path, f"city/{path.relative_to(folder).as_posix()}")
        return buffer.getvalue()

    def wait(client: TestClient, url: str) -> dict:
        for _ in range(1200):
            job = client.get(url).json()
            if job["state"] in ("succeeded", "failed", "cancelled"):
                return job
            time.sleep(0.05)
        raise AssertionError("job did not finish")

    token = KeyStore(store.data_dir).create("loader", "editor")[1]
    good = zipped(georeferenced_copy(tmp_path / "good"))
    bad = zipped(georeferenced_copy(tmp_path / "bad", content={"uri": "../../outside.glb"}))
    with TestClient(create_app(store), raise_server_exceptions=False) as client:
        client.headers["Authorization"] = f"Bearer {token}"
        loose = client.post("/ingest", files={"file": ("tileset.json", b"{}")}, data={"kind": "tileset"})
        assert loose.status_code == 400 and ".zip" in loose.json()["detail"]
        before = state(store)
        refused = client.post("/ingest", files={"file": ("bad.zip", bad)}, data={"kind": "tileset"})
        job = wait(client, refused.headers["Location"])
        assert job["state"] == "failed" and "outside the tileset folder" in job["message"], job
        assert state(store) == before
        accepted = client.post("/ingest", files={"file": ("city.zip", good)}, data={"kind": "tileset", "layer": "city"})
        job = wait(client, accepted.headers["Location"])
        assert job["state"] == "succeeded", job
        assert client.get("/3dtiles/city/tileset.json").status_code == 200
        client.app.state.jobs.close()
