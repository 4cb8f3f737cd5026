"""Single textured meshes (OBJ+MTL, glTF/glb, PLY) to streamable 3D Tiles with levels of detail."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
import trimesh
from PIL import Image
from scipy.spatial import cKDTree

from ingestion.mesh import ingest_mesh, read_parts
from tests.conftest import shared_file
from tiles.threed.build import ensure_built
from tiles.threed.gltf import read_glb
from tiles.threed.mesh_lod import build_mesh_tree
from tiles.threed.validate import check_tileset, validate_glbs, validator_available
from twin.crs import ECEF, transform_points
from twin.store import init_store, open_store

ORIGIN = (385800.0, 3547900.0, 12.0)  # EPSG:4549, near the demo district


def twin_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "from twin.cli import main; main()", *args], capture_output=True, text=True, timeout=300
    )


def copy_fuze(folder: Path, with_texture: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("fuze.obj", "fuze.obj.mtl", "fuze uv.jpg"):
        if name.endswith(".jpg") and not with_texture:
            continue
        shutil.copyfile(shared_file(f"mesh/trimesh_models/{name}"), folder / name)
    return folder / "fuze.obj"


def tileset_of(store, layer: str) -> tuple[Path, dict]:
    built = ensure_built(store, layer)
    return built.folder / "tileset.json", json.loads((built.folder / "tileset.json").read_text())


def image_sizes(data: bytes) -> list[tuple[int, int]]:
    gltf, binary = read_glb(data)
    sizes = []
    for image in gltf.get("images", []):
        view = gltf["bufferViews"][image["bufferView"]]
        raw = binary[view.get("byteOffset", 0) : view.get("byteOffset", 0) + view["byteLength"]]
        sizes.append(Image.open(BytesIO(raw)).size)
    return sizes


def walk(tile: dict, depth: int = 0):
    yield tile, depth
    for child in tile.get("children", []):
        yield from walk(child, depth + 1)


def test_textured_obj_streams_with_levels_of_detail(tmp_path: Path) -> None:
    obj = copy_fuze(tmp_path / "src")
    store = init_store(tmp_path / "twin", "EPSG:4549")
    origin = ",".join(str(v) for v in ORIGIN)
    report, summary = ingest_mesh(store, obj, layer_id="fuze", crs="EPSG:4549", origin=origin, leaf_triangles=150)
    assert report.inserted == 1 and summary["source_triangles"] == 1000
    path, document = tileset_of(store, "fuze")
    check = check_tileset(path)
    assert check.ok, check.errors
    tiles = list(walk(document["root"]))
    assert max(depth for _, depth in tiles) >= 3  # root, LOD levels, leaves
    for tile, _ in tiles:
        for child in tile.get("children", []):
            assert child["geometricError"] < tile["geometricError"]
    leaves = [t for t, _ in tiles if not t.get("children")]
    assert all(t["geometricError"] == 0.0 for t in leaves)
    # every tile keeps its texture; a coarser tile's is smaller than the original, a leaf's is cropped
    original = Image.open(obj.parent / "fuze uv.jpg").size
    by_uri = {u.rsplit("/", 1)[-1]: d for u, d in check.contents.items()}
    leaf_areas = []
    for tile, _ in tiles:
        if "content" in tile:
            sizes = image_sizes(by_uri[tile["content"]["uri"].rsplit("/", 1)[-1]])
            assert sizes, tile["content"]["uri"]
            assert all(w <= original[0] and h <= original[1] for w, h in sizes)
            if not tile.get("children"):
                leaf_areas += [w * h for w, h in sizes]
    assert min(leaf_areas) < original[0] * original[1]
    top = document["root"]["children"][0]
    top_sizes = image_sizes(by_uri[top["content"]["uri"].rsplit("/", 1)[-1]])
    assert max(w for w, _ in top_sizes) <= original[0] // 2
    # the coarse top level has fewer triangles than the leaves together
    assert summary["triangles"] > summary["source_triangles"]
    # the mesh sits at the origin: its root transform is the ENU frame there
    matrix = np.asarray(document["root"]["transform"], dtype=float).reshape(4, 4).T
    lon, lat, _ = transform_points(ECEF, "EPSG:4979", [matrix[0, 3]], [matrix[1, 3]], [matrix[2, 3]])
    x, y = transform_points("EPSG:4979", "EPSG:4549", lon, lat)
    assert np.hypot(x[0] - ORIGIN[0], y[0] - ORIGIN[1]) < 0.01
    if validator_available():
        assert [r["numErrors"] for r in validate_glbs(list(check.contents.values()))] == [0] * len(check.contents)
    store.close()


def test_simplified_levels_stay_close_to_the_full_mesh() -> None:
    """The error a tile claims bounds how far its vertices are from the full-resolution surface."""
    parts = read_parts(shared_file("mesh/trimesh_models/fuze.obj"))
    tree = build_mesh_tree(parts, leaf_triangles=150)
    full = trimesh.Trimesh(parts[0].positions, parts[0].indices, process=False)
    samples, _ = trimesh.sample.sample_surface(full, 200_000, seed=1)
    spacing = float(np.sqrt(full.area / len(samples)))
    surface = cKDTree(samples)
    coarse = 0
    for tile in tree.walk():
        if tile.children:
            coarse += 1
            assert tile.parts and sum(p.triangle_count for p in tile.parts) < parts[0].triangle_count
            for part in tile.parts:
                distance, _ = surface.query(part.positions)
                assert distance.max() <= tile.error + 3 * spacing
    assert coarse >= 2


def test_glb_and_ply_are_placed_z_up(tmp_path: Path) -> None:
    duck = shared_file("mesh/trimesh_models/Duck.glb")
    store = init_store(tmp_path / "twin", "EPSG:4549")
    origin = ",".join(str(v) for v in ORIGIN)
    ingest_mesh(store, duck, layer_id="duck", crs="EPSG:4549", origin=origin)
    path, document = tileset_of(store, "duck")
    box = np.asarray(document["root"]["boundingVolume"]["box"])
    source = trimesh.load(duck, force="mesh")
    # glTF is y-up: the duck's height (its y extent) becomes the box's vertical (z) extent
    assert 2 * box[11] == pytest.approx(np.ptp(source.vertices[:, 1]), rel=0.01)
    check = check_tileset(path)
    assert check.ok, check.errors
    assert all(image_sizes(c) for c in check.contents.values())
    # a coloured PLY (no texture): plain-colour material
    ply = tmp_path / "box.ply"
    cube = trimesh.creation.box(extents=(4.0, 2.0, 6.0))
    cube.visual.face_colors = [200, 30, 30, 255]
    cube.export(ply)
    ingest_mesh(store, ply, layer_id="cube", crs="EPSG:4549", origin=origin)
    path, document = tileset_of(store, "cube")
    box = np.asarray(document["root"]["boundingVolume"]["box"])
    assert 2 * box[11] == pytest.approx(6.0, abs=0.01)
    # grid north is not true north 1.2 degrees east of the zone's meridian: the cube turns by the
    # meridian convergence (about 0.66 degrees here) in the east-north-up frame
    theta = np.radians(0.66)
    expected = (4 * np.cos(theta) + 2 * np.sin(theta), 4 * np.sin(theta) + 2 * np.cos(theta))
    assert (2 * box[3], 2 * box[7]) == pytest.approx(expected, abs=0.01)
    check = check_tileset(path)
    (data,) = check.contents.values()
    gltf, _ = read_glb(data)
    assert "images" not in gltf and gltf["materials"][0]["pbrMetallicRoughness"]["baseColorFactor"][0] > 0.7
    if validator_available():
        assert all(r["numErrors"] == 0 for r in validate_glbs([data]))
    store.close()


def test_metadata_xml_beside_the_mesh_places_it(tmp_path: Path) -> None:
    obj = copy_fuze(tmp_path / "src")
    (obj.parent / "metadata.xml").write_text(
        "<ModelMetadata><SRS>EPSG:4549</SRS><SRSOrigin>385800,3547900,12</SRSOrigin></ModelMetadata>", encoding="utf-8"
    )
    twin_dir = tmp_path / "twin"
    init_store(twin_dir, "EPSG:4549").close()
    result = twin_cli("ingest", "mesh", str(obj), "--data", str(twin_dir), "--layer", "fuze")
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["inserted"] == 1 and answer["mesh"]["tiles"] >= 1
    with open_store(twin_dir) as store:
        layer = store.get_layer("fuze")
        assert layer.kind.value == "mesh" and layer.metadata["mesh"]["georeference"]["srs"] == "EPSG:4549"
        minx, miny, maxx, maxy = layer.bbox
        assert minx < ORIGIN[0] + 2 and maxx > ORIGIN[0] - 2 and miny < ORIGIN[1] + 2 and maxy > ORIGIN[1] - 2


def test_bad_meshes_fail_clearly_and_write_nothing(tmp_path: Path) -> None:
    twin_dir = tmp_path / "twin"
    init_store(twin_dir, "EPSG:4549").close()

    def fails(path: Path, needle: str, *extra: str) -> None:
        args = (
            "ingest",
            "mesh",
            str(path),
            "--data",
            str(twin_dir),
            "--crs",
            "EPSG:4549",
            "--origin",
            "385800,3547900",
        )
        result = twin_cli(*args, *extra)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0], result.stderr
        with open_store(twin_dir) as store:
            assert store.list_layers() == [] and store.assets.keys() == []

    fails(copy_fuze(tmp_path / "notex", with_texture=False), "texture fuze uv.jpg is missing")
    escape = copy_fuze(tmp_path / "escape")
    mtl = escape.parent / "fuze.obj.mtl"
    mtl.write_text(mtl.read_text().replace("map_Kd fuze uv.jpg", "map_Kd ../../secret.jpg"))
    fails(escape, "points outside the tile folder")
    broken = tmp_path / "broken.glb"
    broken.write_bytes(b"glTF" + b"\x00" * 40)
    fails(broken, "not a readable mesh")
    fails(tmp_path / "model.fbx", "unsupported mesh format")
    no_crs = copy_fuze(tmp_path / "nocrs")
    result = twin_cli("ingest", "mesh", str(no_crs), "--data", str(twin_dir))
    assert result.returncode == 2 and "give --crs" in result.stderr


def test_webp_textures_when_asked(tmp_path: Path) -> None:
    obj = copy_fuze(tmp_path / "src")
    twin_dir = tmp_path / "twin"
    init_store(twin_dir, "EPSG:4549").close()
    common = ("ingest", "mesh", str(obj), "--data", str(twin_dir), "--crs", "EPSG:4549", "--origin", "385800,3547900")
    bad = twin_cli(*common, "--layer", "fuze", "--texture", "ktx9")
    assert bad.returncode == 2 and "texture format 'ktx9'" in bad.stderr
    result = twin_cli(*common, "--layer", "fuze", "--texture", "webp")
    assert result.returncode == 0, result.stderr
    with open_store(twin_dir) as store:
        path, _ = tileset_of(store, "fuze")
        check = check_tileset(path)
        assert check.ok, check.errors
        for data in check.contents.values():
            gltf, binary = read_glb(data)
            assert "EXT_texture_webp" in gltf["extensionsRequired"]
            assert {i["mimeType"] for i in gltf["images"]} == {"image/webp"}
            assert all(
                "source" not in t and t["extensions"]["EXT_texture_webp"]["source"] >= 0 for t in gltf["textures"]
            )
            view = gltf["bufferViews"][gltf["images"][0]["bufferView"]]
            raw = binary[view.get("byteOffset", 0) : view.get("byteOffset", 0) + view["byteLength"]]
            assert Image.open(BytesIO(raw)).format == "WEBP"
        if validator_available():
            reports = validate_glbs(list(check.contents.values()))
            assert [r["numErrors"] for r in reports] == [0] * len(reports)
