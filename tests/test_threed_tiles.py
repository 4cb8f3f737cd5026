"""The 3D Tiles library: glb writer, property tables, levels of detail, tileset checks.

glb files are checked by the Khronos glTF-Validator (npm `gltf-validator`, run with node) and
read back independently of the writer (trimesh for geometry distances); the tileset checker is
shown to catch each fault it looks for, and to accept CesiumGS's own 3D Tiles 1.1 samples.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import trimesh
from scipy.spatial import cKDTree

from tests.conftest import shared_file
from tiles.threed.gltf import TileMesh, decompress_glb, encode_glb, mesh_positions, read_glb
from tiles.threed.metadata import BOOLEAN, FLOAT64, INT32, Column, PropertyTable, decode_table
from tiles.threed.subdivide import build_lod_tree
from tiles.threed.tileset import Tile, box_volume, tileset_document, write_tileset
from tiles.threed.validate import check_glb_features, check_tileset, validate_glbs, validator_available

pytestmark = pytest.mark.skipif(not validator_available(), reason="gltf-validator not installed: run npm install")


def scene(count: int, *, translucent_every: int = 0, subdivisions: int = 2) -> TileMesh:
    """`count` spheres and boxes on a grid, one feature each, some translucent."""
    positions, indices, ids, colors = [], [], [], []
    offset = 0
    side = int(np.ceil(np.sqrt(count)))
    for i in range(count):
        shape = trimesh.creation.icosphere(subdivisions, radius=1.5) if i % 2 else trimesh.creation.box((2, 3, 4))
        shape.apply_translation([(i % side) * 6.0, (i // side) * 6.0, 2.0 + (i % 3)])
        positions.append(shape.vertices)
        indices.append(shape.faces + offset)
        ids.append(np.full(len(shape.vertices), i))
        alpha = 100 if translucent_every and i % translucent_every == 0 else 255
        colors.append(np.tile([(37 * i) % 256, 120, 200, alpha], (len(shape.vertices), 1)))
        offset += len(shape.vertices)
    return TileMesh(np.concatenate(positions), np.concatenate(indices), np.concatenate(ids), np.concatenate(colors))


def table_for(count: int) -> PropertyTable:
    columns = [Column("GlobalId"), Column("height", FLOAT64), Column("floors", INT32), Column("external", BOOLEAN)]
    rows = [
        {"GlobalId": f"元素-{i}", "height": 3.5 * i, "floors": i if i % 4 else None, "external": i % 3 == 0}
        for i in range(count)
    ]
    return PropertyTable("element", columns, rows)


@pytest.mark.parametrize("compression", ["meshopt", None])
def test_glb_without_colours_or_table_passes_the_validator(compression):
    mesh = scene(5)
    data = encode_glb(TileMesh(mesh.positions, mesh.indices, mesh.feature_ids), None, compression=compression)
    assert validate_glbs([data])[0]["numErrors"] == 0
    gltf, _ = read_glb(data)
    assert "COLOR_0" not in gltf["meshes"][0]["primitives"][0]["attributes"]
    assert check_glb_features(data) == []


@pytest.mark.parametrize("compression", ["meshopt", None])
def test_glb_passes_the_khronos_validator_and_reads_back(compression):
    mesh = scene(12, translucent_every=4)
    data = encode_glb(mesh, table_for(12), compression=compression)
    plain = decompress_glb(data)
    reports = validate_glbs([data, plain])
    assert [r["numErrors"] for r in reports] == [0, 0], reports
    assert check_glb_features(data) == []
    gltf, _ = read_glb(data)
    assert [m.get("alphaMode", "OPAQUE") for m in gltf["materials"]] == ["OPAQUE", "BLEND"]
    assert len(gltf["meshes"][0]["primitives"]) == 2  # opaque and translucent, one draw call each
    if compression:
        assert gltf["extensionsRequired"] == ["EXT_meshopt_compression", "KHR_mesh_quantization"]
    points, ids = mesh_positions(data)
    extent = np.ptp(mesh.positions, axis=0).max()
    for feature in range(12):
        expected = mesh.positions[mesh.feature_ids == feature]
        got = points[ids == feature]
        assert np.abs(got.min(axis=0) - expected.min(axis=0)).max() <= extent / 65535 + 1e-9
        assert np.abs(got.max(axis=0) - expected.max(axis=0)).max() <= extent / 65535 + 1e-9


def test_property_table_round_trips_every_type():
    table = table_for(9)
    gltf, binary = read_glb(decompress_glb(encode_glb(scene(9), table)))

    def view(index: int) -> bytes:
        v = gltf["bufferViews"][index]
        return binary[v.get("byteOffset", 0) : v.get("byteOffset", 0) + v["byteLength"]]

    assert decode_table(gltf, view) == table.rows
    assert all(v.get("byteOffset", 0) % 8 == 0 for v in gltf["bufferViews"])


def test_meshopt_makes_content_smaller():
    mesh, table = scene(60, subdivisions=3), table_for(60)
    plain, packed = encode_glb(mesh, table, compression=None), encode_glb(mesh, table, compression="meshopt")
    assert len(packed) < 0.6 * len(plain)


def test_lod_tree_keeps_every_feature_whole_and_errors_halve():
    mesh = scene(120, subdivisions=3)
    tree = build_lod_tree(mesh, leaf_triangles=3000)
    nodes = list(tree.walk())
    leaves = [n for n in nodes if not n.children]
    assert len(leaves) > 4 and tree.children
    assert sum(n.mesh.triangle_count for n in leaves) == mesh.triangle_count
    leaf_features = [set(np.unique(n.mesh.feature_ids).tolist()) for n in leaves]
    assert set().union(*leaf_features) == set(range(120))
    assert sum(len(f) for f in leaf_features) == 120  # no feature is cut between tiles
    for node in nodes:
        assert np.all(node.mesh.positions >= node.low - 1e-9) and np.all(node.mesh.positions <= node.high + 1e-9)
        if node.children:
            assert node.mesh.triangle_count < sum(c.mesh.triangle_count for c in node.children)
            assert node.error >= 2 * max(c.error for c in node.children) > -1
            assert node.error > 0
        else:
            assert node.error == 0


def test_inner_tile_error_bounds_the_real_distance_to_full_detail():
    """Every full-detail vertex lies within the root's geometric error of the coarse root content."""
    mesh = scene(40, subdivisions=4)
    tree = build_lod_tree(mesh, leaf_triangles=6000)
    coarse = trimesh.Trimesh(tree.mesh.positions, tree.mesh.indices, process=False)
    samples, _ = trimesh.sample.sample_surface(coarse, 300_000, seed=1)
    spacing = np.sqrt(coarse.area / len(samples))  # nearest-sample distance overestimates by about this
    kept = np.isin(mesh.feature_ids, np.unique(tree.mesh.feature_ids))
    distance, _ = cKDTree(samples).query(mesh.positions[kept])
    assert tree.mesh.triangle_count < mesh.triangle_count / 3
    assert 0 < distance.max() <= tree.content_error + 2 * spacing
    assert tree.error >= tree.content_error


def write_scene_tileset(folder: Path) -> Path:
    """A small tileset of the synthetic scene (what a layer builder writes)."""
    mesh = scene(60, subdivisions=3)
    tree = build_lod_tree(mesh, leaf_triangles=3000)
    (folder / "tiles").mkdir(parents=True)
    for node in tree.walk():
        present, local = np.unique(node.mesh.feature_ids, return_inverse=True)
        part = TileMesh(node.mesh.positions, node.mesh.indices, local, node.mesh.colors)
        rows = [table_for(60).rows[i] for i in present]
        table = PropertyTable("element", table_for(1).columns, rows)
        (folder / "tiles" / f"{node.address}.glb").write_bytes(encode_glb(part, table))

    def tile(node) -> Tile:
        return Tile(
            box_volume(node.low, node.high), node.error, f"tiles/{node.address}.glb", [tile(c) for c in node.children]
        )

    root = tile(tree)
    root.transform = np.array([[1, 0, 0, 4e6], [0, 1, 0, 1e6], [0, 0, 1, 4.8e6], [0, 0, 0, 1.0]])
    return write_tileset(folder / "tileset.json", tileset_document(root, 500.0))


def test_tileset_checks_pass_on_written_tilesets_and_catch_each_fault(tmp_path):
    path = write_scene_tileset(tmp_path / "ok")
    report = check_tileset(path)
    assert report.errors == [] and report.tiles > 4
    assert all(r["numErrors"] == 0 for r in validate_glbs(list(report.contents.values())))
    assert all(check_glb_features(data) == [] for data in report.contents.values())

    def broken(name: str, change) -> list[str]:
        folder = tmp_path / name
        shutil.copytree(tmp_path / "ok", folder)
        document = json.loads((folder / "tileset.json").read_text())
        change(document, folder)
        (folder / "tileset.json").write_text(json.dumps(document))
        return check_tileset(folder / "tileset.json").errors

    def move_child(document, _):
        document["root"]["children"][0]["boundingVolume"]["box"][0] += 1000.0

    def grow_error(document, _):
        document["root"]["children"][0]["geometricError"] = document["root"]["geometricError"] + 1

    def drop_file(document, folder):
        (folder / document["root"]["children"][0]["content"]["uri"]).unlink()

    def bad_version(document, _):
        document["asset"]["version"] = "0.0"

    assert any("outside its parent" in e for e in broken("moved", move_child))
    assert any("exceeds its parent" in e for e in broken("error", grow_error))
    assert any("does not resolve" in e for e in broken("missing", drop_file))
    assert any("asset.version" in e for e in broken("version", bad_version))


def test_cesium_samples_pass_the_same_checks():
    root = shared_file("mesh/3dtiles_samples_1.1")
    tilesets = sorted(root.glob("*/tileset.json"))
    assert len(tilesets) >= 3
    contents = []
    for path in tilesets:
        report = check_tileset(path)
        assert report.errors == [], (path, report.errors)
        contents += list(report.contents.values())
    assert contents
    assert all(r["numErrors"] == 0 for r in validate_glbs(contents[:6]))


def test_a_build_key_changes_with_the_layers_the_build_reads():
    """Pipes take ground levels from their nodes layer and everything stands on the terrain: an
    edit to either must give a new build, an edit to an unrelated layer must not."""
    from datetime import UTC, datetime

    from tiles.threed.build import build_key, dependencies
    from twin.model import Feature, Layer

    pipes = Layer("water_pipes", kind="pipe_network", metadata={"nodes_layer": "water_nodes"})
    others = [Layer("water_nodes", kind="pipe_network"), Layer("dem", kind="terrain"), Layer("roads_500")]
    features = [Feature("water_pipes", "P1", 1, datetime(2021, 6, 1, tzinfo=UTC), None, None, {})]

    def key(**versions: int) -> str:
        for other in others:
            other.version = versions.get(other.id, 1)
        layers = {layer.id: layer for layer in [pipes, *others]}
        return build_key(pipes, [(f.fid, f.version) for f in features], dependencies(pipes, layers))

    first = key()
    assert key(water_nodes=2) != first and key(dem=2) != first
    assert key(roads_500=7) == first
    pipes.metadata["extrude"] = {"storey_height_m": 3.5}
    assert key() != first
