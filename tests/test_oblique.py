"""OSGB tile trees (oblique photography) to 3D Tiles: position, LOD hierarchy, textures, bad input."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from ingestion.oblique import ingest_oblique, node_error, read_metadata
from ingestion.osgt import parse, scene_nodes
from sample_data.oblique import scene_osgt
from tests.conftest import shared_file
from tests.demo_twin import shared_demo
from tiles.threed.build import ensure_built
from tiles.threed.gltf import read_glb
from tiles.threed.mesh_gltf import TexturedPart
from tiles.threed.validate import check_tileset, validate_glbs, validator_available
from twin.crs import ECEF, parse_crs, transform_points
from twin.model import InvalidInput
from twin.store import init_store, open_store

FANVANZH = "mesh/osgb_fanvanzh_test/test.osgb"
FANVANZH_LON, FANVANZH_LAT = 106.50709895, 31.55338961
needs_osgconv = pytest.mark.skipif(shutil.which("osgconv") is None, reason="osgconv (openscenegraph) not installed")


def twin_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "from twin.cli import main; main()", *args], capture_output=True, text=True, timeout=300
    )


def metadata_xml(folder: Path, srs: str, origin: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metadata.xml").write_text(
        '<?xml version="1.0" encoding="utf-8"?>\n<ModelMetadata version="1">\n'
        f"\t<SRS>{srs}</SRS>\n\t<SRSOrigin>{origin}</SRSOrigin>\n</ModelMetadata>\n",
        encoding="utf-8",
    )


def fanvanzh_folder(root: Path, srs: str = "EPSG:4544", origin: str = "643104,3493316,0") -> Path:
    tile = root / "Data" / "Tile_+000_+000"
    tile.mkdir(parents=True)
    shutil.copyfile(shared_file(FANVANZH), tile / "Tile_+000_+000.osgb")
    metadata_xml(root, srs, origin)
    return root


def root_position(tileset: Path) -> tuple[float, float, float]:
    """lon, lat, height of the root transform's origin (where the mesh's SRSOrigin lands)."""
    document = json.loads(tileset.read_text())
    matrix = np.asarray(document["root"]["transform"], dtype=float).reshape(4, 4).T
    lon, lat, h = transform_points(ECEF, "EPSG:4979", [matrix[0, 3]], [matrix[1, 3]], [matrix[2, 3]])
    return float(lon[0]), float(lat[0]), float(h[0])


def ingest_folder(tmp_path: Path, folder: Path, project_crs: str = "EPSG:4549", **options):
    store = init_store(tmp_path / "twin", project_crs)
    report, summary = ingest_oblique(store, folder, layer_id="oblique", **options)
    return store, report, summary


def glb_images(data: bytes) -> list[dict]:
    gltf, _ = read_glb(data)
    return gltf.get("images", [])


@needs_osgconv
def test_fanvanzh_lands_at_its_published_position(tmp_path: Path) -> None:
    folder = fanvanzh_folder(tmp_path / "production")
    store, report, summary = ingest_folder(tmp_path, folder, project_crs="EPSG:4544")
    assert report.inserted == 1
    built = ensure_built(store, "oblique")
    lon, lat, _ = root_position(built.folder / "tileset.json")
    assert lon == pytest.approx(FANVANZH_LON, abs=1e-6)
    assert lat == pytest.approx(FANVANZH_LAT, abs=1e-6)
    # the PagedLOD names a finer file that was not delivered: reported, the node kept as a leaf
    assert summary["missing"] == ["Tile_+000_+000/Tile_+000_+000_L16_0.osgb"]
    assert summary["triangles"] == 114  # 112 textured + 2 plain triangles of the two osg::Geometry
    check = check_tileset(built.folder / "tileset.json")
    assert check.ok, check.errors
    contents = list(check.contents.values())
    assert contents and all(glb_images(c) for c in contents)  # the inline texture is kept
    image = glb_images(contents[0])[0]
    assert image["mimeType"] == "image/jpeg"
    if validator_available():
        assert [r["numErrors"] for r in validate_glbs(contents)] == [0] * len(contents)
    store.close()


@needs_osgconv
def test_gauss_kruger_with_custom_false_easting(tmp_path: Path) -> None:
    """The same survey in a CGCS2000 3-degree zone whose false easting is 400 km, given as WKT."""
    wkt = parse_crs("EPSG:4544").to_wkt().replace("500000", "400000")
    assert "400000" in wkt
    folder = fanvanzh_folder(tmp_path / "production", srs=wkt, origin="543104,3493316,0")
    geo = read_metadata(folder / "metadata.xml")
    assert geo.enu is None and geo.origin == (543104.0, 3493316.0, 0.0)
    store, _, summary = ingest_folder(tmp_path, folder)
    lon, lat, _ = root_position(ensure_built(store, "oblique").folder / "tileset.json")
    assert (lon, lat) == (pytest.approx(FANVANZH_LON, abs=1e-6), pytest.approx(FANVANZH_LAT, abs=1e-6))
    store.close()


@needs_osgconv
def test_enu_metadata_and_crs_option(tmp_path: Path) -> None:
    folder = fanvanzh_folder(tmp_path / "enu", srs="ENU:31.5,106.5", origin="0,0,0")
    store, _, summary = ingest_folder(tmp_path / "a", folder)
    lon, lat, _ = root_position(ensure_built(store, "oblique").folder / "tileset.json")
    assert (lon, lat) == (pytest.approx(106.5, abs=1e-9), pytest.approx(31.5, abs=1e-9))
    store.close()
    # without metadata.xml: --crs and --origin are required, and then place it the same way
    (folder / "metadata.xml").unlink()
    with pytest.raises(InvalidInput, match="no metadata.xml"):
        ingest_folder(tmp_path / "b", folder)
    twin_dir = tmp_path / "d"
    store = init_store(twin_dir, "EPSG:4544")
    ingest_oblique(store, folder, layer_id="oblique", crs="EPSG:4544", origin="643104,3493316,0")
    lon, lat, _ = root_position(ensure_built(store, "oblique").folder / "tileset.json")
    assert (lon, lat) == (pytest.approx(FANVANZH_LON, abs=1e-6), pytest.approx(FANVANZH_LAT, abs=1e-6))
    store.close()


def _part(x0: float, size: float, n: int) -> TexturedPart:
    """A textured n x n grid of a `size` metre square at x0."""
    g = np.linspace(0.0, 1.0, n + 1)
    u, v = np.meshgrid(g, g)
    positions = np.column_stack([x0 + u.ravel() * size, v.ravel() * size, np.zeros(u.size)])
    idx = np.arange(u.size).reshape(n + 1, n + 1)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, 1:].ravel(), idx[1:, :-1].ravel()
    faces = np.concatenate([np.column_stack([a, b, c]), np.column_stack([a, c, d])])
    return TexturedPart(positions, faces, np.column_stack([u.ravel(), v.ravel()]), b"", "image/jpeg")


def write_osgt_tree(folder: Path, image: bytes) -> dict[str, float]:
    """Three levels as .osgt text: root PagedLOD -> two PagedLODs -> leaves; returns their thresholds."""
    tile = folder / "Data" / "Tile_+000_+000"
    tile.mkdir(parents=True)
    thresholds = {"root": 40.0, "mid": 160.0}
    for name in ("root", "mid_0", "mid_1", "leaf_0", "leaf_1"):
        (tile / f"{name}.jpg").write_bytes(image)
    root = scene_osgt(_part(0.0, 100.0, 2), "root.jpg", ["mid_0.osgt", "mid_1.osgt"], thresholds["root"])
    (tile / "Tile_+000_+000.osgt").write_text(root)
    for i in range(2):
        mid = scene_osgt(_part(50.0 * i, 50.0, 4), f"mid_{i}.jpg", [f"leaf_{i}.osgt"], thresholds["mid"])
        (tile / f"mid_{i}.osgt").write_text(mid)
        (tile / f"leaf_{i}.osgt").write_text(scene_osgt(_part(50.0 * i, 50.0, 8), f"leaf_{i}.jpg", [], 0.0))
    return thresholds


@pytest.fixture
def jpeg() -> bytes:
    from io import BytesIO

    from PIL import Image

    buffer = BytesIO()
    Image.fromarray((np.indices((32, 32)).sum(axis=0) * 4 % 256).astype(np.uint8)).convert("RGB").save(buffer, "JPEG")
    return buffer.getvalue()


def test_paged_lod_ranges_become_decreasing_geometric_errors(tmp_path: Path, jpeg: bytes) -> None:
    folder = tmp_path / "tree"
    thresholds = write_osgt_tree(folder, jpeg)
    metadata_xml(folder, "EPSG:4549", "385800,3547900,10")
    store, _, summary = ingest_folder(tmp_path, folder)
    assert summary["files"] == 5 and summary["missing"] == []
    tileset = ensure_built(store, "oblique").folder / "tileset.json"
    check = check_tileset(tileset)
    assert check.ok, check.errors
    document = json.loads(tileset.read_text())
    (top,) = document["root"]["children"]
    # error = 16 px x bounding-sphere diameter / pixel-size threshold, as OSG would switch
    root_radius = np.linalg.norm([100.0, 100.0]) / 2.0
    assert top["geometricError"] == pytest.approx(16 * 2 * root_radius / thresholds["root"], rel=1e-3)
    mids = top["children"]
    assert len(mids) == 2
    for mid in mids:
        assert mid["geometricError"] == pytest.approx(
            16 * 2 * np.linalg.norm([50, 50]) / 2 / thresholds["mid"], rel=1e-3
        )
        assert 0 < mid["geometricError"] < top["geometricError"]
        (leaf,) = mid["children"]
        assert leaf["geometricError"] == 0.0 and "children" not in leaf
    assert document["root"]["geometricError"] > top["geometricError"]
    assert summary["triangles"] == 2 * 2 * 2 + 2 * (4 * 4 * 2) + 2 * (8 * 8 * 2)
    if validator_available():
        assert all(r["numErrors"] == 0 for r in validate_glbs(list(check.contents.values())))
    store.close()


def test_osgt_parser_reads_strips_fans_and_shared_objects() -> None:
    text = """#Ascii Scene
osg::Geode {
  UniqueID 1
  Drawables 2 {
    osg::Geometry {
      UniqueID 2
      PrimitiveSetList 2 {
        osg::DrawArrays {
          UniqueID 3
          Mode TRIANGLE_STRIP
          First 0
          Count 4
        }
        osg::DrawElementsUShort {
          UniqueID 4
          Mode TRIANGLE_FAN
          vector 4 {
            0 1 2 3
          }
        }
      }
      VertexArray TRUE {
        osg::Vec3Array {
          UniqueID 5
          Binding BIND_PER_VERTEX
          vector 4 {
            0 0 0
            1 0 0
            0 1 0
            1 1 0
          }
        }
      }
    }
    osg::Geometry {
      UniqueID 6
      PrimitiveSetList 1 {
        osg::DrawArrays {
          UniqueID 7
          Mode TRIANGLES
          First 1
          Count 3
        }
      }
      VertexArray TRUE {
        osg::Vec3Array {
          UniqueID 5
        }
      }
    }
  }
}
"""
    (node,) = scene_nodes(parse(text, "t.osgt"), Path("."), "t.osgt")
    first, second = node.geometries
    assert first.indices.tolist() == [[0, 1, 2], [1, 3, 2], [0, 1, 2], [0, 2, 3]]
    # the second geometry refers to the first one's vertex array by its UniqueID
    assert second.positions.tolist() == first.positions.tolist() and second.indices.tolist() == [[1, 2, 3]]
    assert node.threshold is None and node_error(node) == 0.0


def test_bad_trees_fail_clearly_and_write_nothing(tmp_path: Path, jpeg: bytes) -> None:
    twin_dir = tmp_path / "twin"
    init_store(twin_dir, "EPSG:4549").close()

    def fails(folder: Path, needle: str) -> None:
        result = twin_cli("ingest", "oblique", str(folder), "--data", str(twin_dir), "--layer", "bad")
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0], result.stderr
        with open_store(twin_dir) as store:
            assert [layer.id for layer in store.list_layers()] == []
            assert store.assets.keys() == []

    # a PagedLOD naming a file outside the production folder
    escape = tmp_path / "escape"
    write_osgt_tree(escape, jpeg)
    metadata_xml(escape, "EPSG:4549", "385800,3547900,10")
    root = escape / "Data" / "Tile_+000_+000" / "Tile_+000_+000.osgt"
    root.write_text(root.read_text().replace('"mid_0.osgt"', '"../../../outside.osgt"'))
    fails(escape, "points outside the tile folder")
    # a child file that is a link to a file outside the folder
    linked = tmp_path / "linked"
    write_osgt_tree(linked, jpeg)
    metadata_xml(linked, "EPSG:4549", "385800,3547900,10")
    tile = linked / "Data" / "Tile_+000_+000"
    shutil.move(tile / "mid_0.osgt", tmp_path / "elsewhere.osgt")
    (tile / "mid_0.osgt").symlink_to(tmp_path / "elsewhere.osgt")
    fails(linked, "points outside the tile folder")
    # a texture that was not delivered
    missing = tmp_path / "missing"
    write_osgt_tree(missing, jpeg)
    metadata_xml(missing, "EPSG:4549", "385800,3547900,10")
    (missing / "Data" / "Tile_+000_+000" / "leaf_1.jpg").unlink()
    fails(missing, "texture leaf_1.jpg is missing")
    # a broken OSGB
    if shutil.which("osgconv"):
        broken = tmp_path / "broken"
        (broken / "Data" / "Tile_+000_+000").mkdir(parents=True)
        (broken / "Data" / "Tile_+000_+000" / "Tile_+000_+000.osgb").write_bytes(b"\x00garbage" * 64)
        metadata_xml(broken, "EPSG:4549", "0,0,0")
        fails(broken, "OpenSceneGraph cannot read it")
    # a broken text scene, a metadata.xml without SRS, a geographic SRS
    text = tmp_path / "text"
    write_osgt_tree(text, jpeg)
    metadata_xml(text, "EPSG:4549", "385800,3547900,10")
    (text / "Data" / "Tile_+000_+000" / "mid_1.osgt").write_text("osg::Geode {\n  Drawables 1 {\n")
    fails(text, "not a readable OSG scene")
    metadata_xml(text, "EPSG:4326", "0,0,0")
    fails(text, "is not projected")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_demo(tmp_path_factory)


@needs_osgconv
def test_demo_reality_mesh_is_an_osgb_tree_at_the_manifest_origin(demo: Path) -> None:
    manifest = json.loads((demo / "sources" / "manifest.json").read_text())
    mesh = manifest["reality_mesh"]
    osgb = demo / "sources" / mesh["osgb"]["path"]
    assert (osgb / "metadata.xml").is_file()
    files = sorted(osgb.glob("Data/Tile_*/*.osgb"))
    assert len(files) == mesh["osgb"]["files"] and not list(osgb.rglob("*.jpg"))  # textures inside the OSGB
    with open_store(demo) as store:
        layer = store.get_layer(mesh["id"])
        assert layer.kind.value == "mesh"
        assert layer.metadata["mesh"]["format"] == "osgb"
        assert layer.metadata["mesh"]["missing"] == []
        built = ensure_built(store, mesh["id"])
        lon, lat, height = root_position(built.folder / "tileset.json")
        x, y = transform_points("EPSG:4979", manifest["crs"], [lon], [lat])
        assert np.hypot(x[0] - mesh["origin"][0], y[0] - mesh["origin"][1]) < 1.0
        offset = float(store.get_meta("geoid_offset") or 0.0)
        assert height == pytest.approx(mesh["origin"][2] + offset, abs=0.01)  # orthometric to ellipsoidal
        check = check_tileset(built.folder / "tileset.json")
        assert check.ok, check.errors
        document = json.loads((built.folder / "tileset.json").read_text())

        def depth(tile: dict) -> int:
            return 1 + max((depth(c) for c in tile.get("children", [])), default=0)

        def decreasing(tile: dict) -> None:
            for child in tile.get("children", []):
                assert child["geometricError"] < tile["geometricError"]
                decreasing(child)

        assert depth(document["root"]) == 4  # root, L16 tiles, L17 quadrants, L18 leaves
        decreasing(document["root"])
        assert built.summary["tiles"] == len(files)
        # the twin root lists it, with a region around the origin, and the server streams it
        from fastapi.testclient import TestClient

        from twin.api.app import create_app

        client = TestClient(create_app(store))
        root = client.get("/3dtiles/twin/tileset.json").json()
        (entry,) = [c for c in root["root"]["children"] if c["extras"]["layer"] == mesh["id"]]
        west, south, east, north = np.degrees(entry["boundingVolume"]["region"][:4])
        assert west < lon < east and south < lat < north
        served = client.get(f"/3dtiles/{mesh['id']}/tileset.json")
        assert served.status_code == 200
        first = served.json()["root"]["children"][0]["content"]["uri"]
        assert client.get(f"/3dtiles/{mesh['id']}/{first}").status_code == 200
        contents = list(check.contents.values())
        assert all(glb_images(c) for c in contents)
        if validator_available():
            reports = validate_glbs(contents)
            assert [r["numErrors"] for r in reports] == [0] * len(contents)


def zipped(folder: Path, prefix: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, f"{prefix}/{path.relative_to(folder).as_posix()}")
    return buffer.getvalue()


def test_upload_over_http(tmp_path: Path, jpeg: bytes) -> None:
    """POST /ingest kind=oblique takes a .zip of the production folder; bad trees fail the job, change nothing."""
    from fastapi.testclient import TestClient

    from twin.api.app import create_app
    from twin.auth import KeyStore

    store = init_store(tmp_path / "twin", "EPSG:4549")
    token = KeyStore(store.data_dir).create("loader", "editor")[1]
    client = TestClient(create_app(store), raise_server_exceptions=False)
    client.headers["Authorization"] = f"Bearer {token}"

    def post(name: str, content: bytes):
        return client.post("/ingest", files={"file": (name, content)}, data={"kind": "oblique", "layer": "survey"})

    def finished(response) -> dict:
        assert response.status_code == 202, response.text
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            job = client.get(response.headers["Location"]).json()
            if job["state"] in ("succeeded", "failed", "cancelled"):
                return job
            time.sleep(0.05)
        raise AssertionError("the ingest job did not finish")

    try:
        refused = post("Tile_+000_+000.osgb", b"\x00" * 16)  # a folder kind: only a .zip of the folder
        assert refused.status_code == 400 and refused.headers["content-type"].startswith("application/problem+json")
        bad = tmp_path / "bad"
        write_osgt_tree(bad, jpeg)
        metadata_xml(bad, "EPSG:4549", "385800,3547900,10")
        root = bad / "Data" / "Tile_+000_+000" / "Tile_+000_+000.osgt"
        root.write_text(root.read_text().replace('"mid_1.osgt"', '"/etc/passwd"'))
        job = finished(post("bad.zip", zipped(bad, "production")))
        assert job["state"] == "failed" and "points outside the tile folder" in job["message"], job
        assert store.list_layers() == [] and store.assets.keys() == []
        good = tmp_path / "good"
        write_osgt_tree(good, jpeg)
        metadata_xml(good, "EPSG:4549", "385800,3547900,10")
        job = finished(post("survey.zip", zipped(good, "production")))
        assert job["state"] == "succeeded", job
        assert job["result"]["mesh"]["files"] == 5
        tileset = client.get("/3dtiles/survey/tileset.json")
        assert tileset.status_code == 200 and tileset.json()["root"]["children"]
    finally:
        client.app.state.jobs.close()
        store.close()


def test_distance_ranges_and_missing_osgconv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Eye-distance ranges: children are drawn nearer than 300 m, so the error reaches 16 px there."""
    part = _part(0.0, 10.0, 1)
    text = scene_osgt(part, "t.jpg", ["child.osgt"], 0.0).replace("PIXEL_SIZE_ON_SCREEN", "DISTANCE_FROM_EYE_POINT")
    text = text.replace("0 0.0000 \n    0.0000 1e+30", "300 1e+30 \n    0 300")
    (tmp_path / "t.jpg").write_bytes(b"\xff\xd8\xff")
    (node,) = scene_nodes(parse(text, "d.osgt"), tmp_path, "d.osgt")
    assert node.range_mode == "DISTANCE_FROM_EYE_POINT" and node.threshold == 300.0
    assert node_error(node) == pytest.approx(16 * 300 / 935.0)
    # without OpenSceneGraph: one clear line saying what to install
    from ingestion.osgt import osgconv_path

    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(InvalidInput, match="apt-get install openscenegraph"):
        osgconv_path()
