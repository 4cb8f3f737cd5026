"""Pipe networks as 3D Tiles: tubes, boxes, shafts and symbols on the demo district and a hand-built network.

Geometry is read back from the written glbs (meshopt decoded), placed with the tileset's root
transform and compared in ECEF with centrelines computed independently through
`twin.crs.to_ecef` from hand-worked elevations (tests/pipe_network_fixtures.py) or from
`twin.analysis.pipe_solids` (the demo). Every glb goes through the Khronos glTF-Validator and
every tileset through the structural checks; the twin root over HTTP must list the pipe layers.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import shapely
from fastapi.testclient import TestClient
from PIL import Image
from shapely.geometry import LineString

from tests.api_fixtures import http_fetch
from tests.browser import chromium, open_page, screenshot, serve_twin, wait_for
from tests.demo_twin import shared_demo
from tests.pipe_network_fixtures import X0, Y0
from tests.pipe_network_fixtures import build as build_hand_network
from tiles.threed import pipes
from tiles.threed.gltf import accessor_array, decompress_glb, encode_glb, mesh_positions, read_glb, srgb_to_linear
from tiles.threed.metadata import PropertyTable, decode_table
from tiles.threed.pipes_mesh import Sweeps, circle_sides, sweep_mesh
from tiles.threed.validate import check_glb_features, check_tileset, validate_glbs, validator_available
from twin.analysis.dem_sample import Dem
from twin.analysis.pipe_solids import load_pipe_ids
from twin.api.app import create_app
from twin.api.threed import CESIUM_BUILD
from twin.crs import CRS84, ECEF, GEODETIC_3D, VerticalDatum, to_ecef, transform_points
from twin.model import FeatureInput, InvalidInput, Layer
from twin.store import init_store, open_store

pytestmark = pytest.mark.skipif(not validator_available(), reason="gltf-validator not installed: run npm install")

PIPE_LAYERS = ("water_pipes", "gas_pipes", "drainage_pipes")
NODE_LAYERS = ("water_nodes", "gas_nodes", "drainage_nodes")
CJJ61 = {"water": (0, 255, 255), "drainage": (76, 57, 38), "gas": (255, 0, 255)}
GEOID = 3.0


# ----- reading built tilesets back -----------------------------------------------------------
def root_frame(folder: Path) -> np.ndarray:
    document = json.loads((folder / "tileset.json").read_text())
    return np.asarray(document["root"]["transform"], dtype=float).reshape(4, 4).T


def tiles_of(folder: Path, leaves_only: bool = False) -> list[dict]:
    document = json.loads((folder / "tileset.json").read_text())
    out = []

    def visit(tile: dict) -> None:
        if not leaves_only or not tile.get("children"):
            out.append(tile)
        for child in tile.get("children", []):
            visit(child)

    visit(document["root"])
    return out


def rows_of(data: bytes) -> list[dict]:
    gltf, binary = read_glb(decompress_glb(data))

    def view(index: int) -> bytes:
        v = gltf["bufferViews"][index]
        return binary[v.get("byteOffset", 0) : v.get("byteOffset", 0) + v["byteLength"]]

    return decode_table(gltf, view)


def feature_points(folder: Path, fid: str) -> np.ndarray:
    """ECEF vertices of one feature, from the leaf tile that holds it."""
    frame = root_frame(folder)
    for tile in tiles_of(folder, leaves_only=True):
        data = (folder / tile["content"]["uri"]).read_bytes()
        ids = [row["id"] for row in rows_of(data)]
        if fid in ids:
            points, local = mesh_positions(data)
            chosen = points[local == ids.index(fid)]
            return chosen @ frame[:3, :3].T + frame[:3, 3]
    raise AssertionError(f"{fid} is in no leaf tile")


def axis_distance(points: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance of each point to the infinite line through a and b."""
    direction = (b - a) / np.linalg.norm(b - a)
    offset = points - a
    return np.linalg.norm(offset - np.outer(offset @ direction, direction), axis=1)


def heights(points: np.ndarray) -> np.ndarray:
    return np.asarray(transform_points(ECEF, GEODETIC_3D, points[:, 0], points[:, 1], points[:, 2])[2])


def colours_of(data: bytes) -> set[tuple[int, int, int]]:
    gltf, binary = read_glb(decompress_glb(data))
    found = set()
    for primitive in gltf["meshes"][0]["primitives"]:
        values = accessor_array(gltf, binary, primitive["attributes"]["COLOR_0"])
        found |= {tuple(int(round(v * 255)) for v in row[:3]) for row in np.unique(values, axis=0)}
    return found


def linear(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    return tuple(int(v) for v in srgb_to_linear(np.array(rgb)))


# ----- fixtures -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_demo(tmp_path_factory)


@pytest.fixture(scope="module")
def built(demo: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict]]:
    """Every demo pipe network layer built into a folder of this module (the demo stays untouched)."""
    out = tmp_path_factory.mktemp("pipes-3d")
    result = {}
    with open_store(demo) as store:
        for layer_id in PIPE_LAYERS + NODE_LAYERS:
            layer = store.get_layer(layer_id)
            folder = out / layer_id
            folder.mkdir()
            summary = pipes.build(store, layer, list(store.iter_features(layer_id)), folder)
            result[layer_id] = (folder, summary)
    return result


@pytest.fixture(scope="module")
def hand(tmp_path_factory: pytest.TempPathFactory):
    """The hand-built network with a 3 m geoid offset, its pipe layers built."""
    root = tmp_path_factory.mktemp("pipes-3d-hand")
    store = init_store(root / "data", "EPSG:4549")
    build_hand_network(store)
    store.set_meta("geoid_offset", str(GEOID))
    # a bent heat pipe (three vertices), crowns surveyed at 9.0 and 8.6: 8.8 at the bend, half-way
    heat = Layer(id="heat_pipes", kind="pipe_network", metadata={"network": "heat", "role": "pipes"})
    bend = LineString([(X0 + 20, Y0 - 20), (X0 + 20, Y0), (X0 + 40, Y0)])
    store.write_features(
        heat, [FeatureInput("H1", bend, {"class": "RL", "diameter": 300, "start_elev": 9.0, "end_elev": 8.6})]
    )
    folders = {}
    for layer_id in ("water_pipes", "drainage_pipes", "heat_pipes"):
        folders[layer_id] = root / layer_id
        folders[layer_id].mkdir()
        pipes.build(store, store.get_layer(layer_id), list(store.iter_features(layer_id)), folders[layer_id])
    yield store, folders
    store.close()


# ----- tests ----------------------------------------------------------------------------------
def test_every_glb_kind_passes_the_validator(built):
    assert built["drainage_pipes"][1]["kinds"]["tube"] > 4000 and built["drainage_pipes"][1]["kinds"]["box"] > 10
    assert built["drainage_nodes"][1]["kinds"]["shaft"] > 4000
    assert built["water_nodes"][1]["kinds"]["symbol"] > 500 and built["gas_nodes"][1]["kinds"]["symbol"] > 100
    files = [folder / t["content"]["uri"] for folder, _ in built.values() for t in tiles_of(folder)]
    # one glb of each kind alone too: tubes, boxes, shafts, symbols, and the coarse (capless) variant
    a, b = np.zeros((4, 3)), np.array([[10.0, 0, -1], [0, 10, 0], [0, 0, 3], [5, 5, 0]])
    kinds = [
        Sweeps.make(a[:2], b[:2], 0.2, 0.2, False, [0, 1], (0, 255, 255, 255)),
        Sweeps.make(a[:2], b[:2], 1.0, 0.75, True, [0, 1], (76, 57, 38, 255)),
        Sweeps.make(a[2:3], b[2:3], 0.6, 0.6, False, [0], (76, 57, 38, 255)),
        Sweeps.make(a[3:], b[3:], 0.25, 0.25, True, [0], (255, 0, 255, 255)),
    ]
    single = []
    for sweeps in kinds:
        count = int(sweeps.feature.max()) + 1
        rows = [{"id": f"f{i}", "diameter": 400.0} for i in range(count)]
        table = PropertyTable("pipe", pipes.PIPE_COLUMNS, rows)
        for coarse in (False, True):
            mesh = sweep_mesh(sweeps, circle_sides(2 * sweeps.half_width, coarse), caps=not coarse)
            single.append(encode_glb(mesh, table))
    reports = validate_glbs([*files, *single])
    assert len(reports) > 40
    assert [r["numErrors"] for r in reports] == [0] * len(reports), [r for r in reports if r["numErrors"]][:1]
    for item in files + single:
        data = item.read_bytes() if isinstance(item, Path) else item
        assert check_glb_features(data) == []
        gltf, _ = read_glb(data)
        assert "EXT_meshopt_compression" in gltf["extensionsUsed"]
        assert "EXT_structural_metadata" in gltf["extensionsUsed"]


def test_tilesets_pass_structural_checks_with_levels_of_detail(built):
    depths = []
    for layer_id, (folder, summary) in built.items():
        report = check_tileset(folder / "tileset.json")
        assert report.errors == [], (layer_id, report.errors[:3])
        assert report.tiles == summary["tiles"] == len(list((folder / "tiles").glob("*.glb")))
        document = json.loads((folder / "tileset.json").read_text())
        assert document["asset"]["version"] == "1.1" and "region" in document["root"]["boundingVolume"]

        def walk(tile: dict, depth: int) -> int:
            for child in tile.get("children", []):
                assert tile["geometricError"] >= 2 * child["geometricError"] > -1
            if not tile.get("children"):
                assert tile["geometricError"] == 0
            return max([depth, *(walk(c, depth + 1) for c in tile.get("children", []))])

        depths.append(walk(document["root"], 0))
    assert max(depths) >= 2  # the larger layers are split over more than one level


def test_every_feature_is_in_exactly_one_leaf_and_ids_map_to_fids(built, demo):
    folder, summary = built["water_pipes"]
    frame = root_frame(folder)
    with open_store(demo) as store:
        features = {f.fid: f for f in store.iter_features("water_pipes")}
        seen: list[str] = []
        for tile in tiles_of(folder, leaves_only=True):
            data = (folder / tile["content"]["uri"]).read_bytes()
            rows = rows_of(data)
            seen += [row["id"] for row in rows]
            points, local = mesh_positions(data)
            ecef = points @ frame[:3, :3].T + frame[:3, 3]
            lon, lat, _ = transform_points(ECEF, GEODETIC_3D, ecef[:, 0], ecef[:, 1], ecef[:, 2])
            x, y = transform_points(CRS84, store.crs, lon, lat)
            for index in np.random.default_rng(1).choice(len(rows), size=min(40, len(rows)), replace=False):
                row = rows[index]
                feature = features[row["id"]]
                mine = local == index
                reach = shapely.distance(shapely.points(x[mine], y[mine]), feature.geometry).max()
                assert reach <= feature.properties["diameter"] / 2000 + 0.05, row["id"]
                assert row["diameter"] == feature.properties["diameter"] and row["class"] == "JS"
                assert row["material"] == feature.properties["material"]
                assert row["year"] == feature.properties["year"]
        assert sorted(seen) == sorted(features) and summary["features"] == len(features)


def test_hand_built_pipes_lie_at_their_worked_elevations(hand):
    store, folders = hand
    datum = VerticalDatum(offset=GEOID)

    def axis(x: float, z: float) -> tuple[np.ndarray, np.ndarray]:
        ends = to_ecef(store.crs, [x, x], [Y0 - 20, Y0 + 20], [z, z], datum)
        points = np.column_stack(ends)
        return points[0], points[1]

    # W1: DN200, crown 9.0 at both ends (ground 10.0 - cover 1.0, 10.4 - 1.4): centre 8.9
    w1 = feature_points(folders["water_pipes"], "W1")
    assert np.allclose(axis_distance(w1, *axis(X0, 8.9)), 0.1, atol=0.01)
    assert heights(w1).min() == pytest.approx(8.8 + GEOID, abs=0.01)
    assert heights(w1).max() == pytest.approx(9.0 + GEOID, abs=0.01)
    # D1: DN400 sewer from invert 8.0 to 7.6 at x = X0 + 5
    d1 = feature_points(folders["drainage_pipes"], "D1")
    start, end = np.column_stack(to_ecef(store.crs, [X0 + 5] * 2, [Y0 - 20, Y0 + 20], [8.2, 7.8], datum))
    assert np.allclose(axis_distance(d1, start, end), 0.2, atol=0.01)
    assert heights(d1).min() == pytest.approx(7.6 + GEOID, abs=0.01)
    assert heights(d1).max() == pytest.approx(8.4 + GEOID, abs=0.01)
    # D2: box culvert 2000 x 1500, bottom 6.0, top 7.5: corners 1.25 m from the axis at 6.75
    d2 = feature_points(folders["drainage_pipes"], "D2")
    distance = axis_distance(d2, *axis(X0 + 9, 6.75))
    assert distance.max() == pytest.approx(1.25, abs=0.01) and distance.min() >= 1.0 - 0.01
    assert heights(d2).min() == pytest.approx(6.0 + GEOID, abs=0.01)
    assert heights(d2).max() == pytest.approx(7.5 + GEOID, abs=0.01)


def test_a_bent_pipe_follows_its_centreline(hand):
    store, folders = hand
    points = feature_points(folders["heat_pipes"], "H1")
    datum = VerticalDatum(offset=GEOID)
    a, bend, b = np.column_stack(
        to_ecef(store.crs, [X0 + 20, X0 + 20, X0 + 40], [Y0 - 20, Y0, Y0], [8.85, 8.65, 8.45], datum)
    )
    nearest = np.minimum(axis_distance(points, a, bend), axis_distance(points, bend, b))
    assert nearest.max() == pytest.approx(0.15, abs=0.01)
    assert heights(points).min() == pytest.approx(8.3 + GEOID, abs=0.01)  # outer bottom at the end
    assert heights(points).max() == pytest.approx(9.0 + GEOID, abs=0.01)  # crown at the start
    data = (folders["heat_pipes"] / "tiles" / "0.glb").read_bytes()
    assert colours_of(data) == {linear((255, 128, 0))}  # CJJ 61 heat orange
    assert rows_of(data)[0]["elevation_from"] == "elevation"


def test_sections_are_wound_outwards_with_unit_normals():
    a = np.array([[0.0, 0, 0], [0, 0, 0], [3, 3, 0]])
    b = np.array([[10.0, 2, -1], [0, 0, 4], [4, 8, 1]])
    for box in (False, True):
        sweeps = Sweeps.make(a, b, 0.5, 0.3 if box else 0.5, box, [0, 1, 2], (0, 255, 255, 255))
        mesh = sweep_mesh(sweeps, circle_sides(2 * sweeps.half_width))
        corners = mesh.positions[mesh.indices]
        face = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
        assert np.all(np.einsum("ij,ij->i", face, mesh.normals[mesh.indices[:, 0]]) > 0)
        assert np.allclose(np.linalg.norm(mesh.normals, axis=1), 1.0)
        if not box:  # every vertex on the circle around its own axis
            for i in range(3):
                mine = mesh.positions[mesh.feature_ids == i]
                assert np.allclose(axis_distance(mine, a[i], b[i]), 0.5)


def test_demo_pipes_lie_at_their_pipe_solids_elevations(built, demo):
    with open_store(demo) as store:
        datum = pipes.store_datum(store)
        dem = Dem.from_store(store)
        for layer_id, fid in (("drainage_pipes", "DP000001"), ("water_pipes", "WP000001"), ("gas_pipes", "GP000001")):
            solids = load_pipe_ids(store, store.get_layer(layer_id), [fid], dem=dem)
            xy = shapely.get_coordinates(solids.geometry[0])
            centre = solids.bottom[0] + solids.height[0] / 2
            a, b = np.column_stack(to_ecef(store.crs, xy[:, 0], xy[:, 1], centre, datum))
            points = feature_points(built[layer_id][0], fid)
            radius = solids.diameter_mm[0] / 2000
            assert np.abs(axis_distance(points, a, b) - radius).max() < 0.03, layer_id
            low = solids.bottom[0].min() + datum.offset
            high = (solids.bottom[0] + solids.height[0]).max() + datum.offset
            assert heights(points).min() == pytest.approx(low, abs=0.03)
            assert heights(points).max() == pytest.approx(high, abs=0.03)


def test_colours_follow_the_cjj61_class_table(built):
    for network, rgb in CJJ61.items():
        for suffix in ("pipes", "nodes"):
            folder, _ = built[f"{network}_{suffix}"]
            assert colours_of((folder / "tiles" / "0.glb").read_bytes()) == {linear(rgb)}, (network, suffix)


def test_manholes_reach_from_invert_to_ground_and_valves_sit_on_the_pipe(built, demo):
    with open_store(demo) as store:
        datum = pipes.store_datum(store)
        manhole = store.get_feature("drainage_nodes", "DN000001").properties
        points = feature_points(built["drainage_nodes"][0], "DN000001")
        assert heights(points).min() == pytest.approx(manhole["invert_elev"] + datum.offset, abs=0.03)
        assert heights(points).max() == pytest.approx(manhole["ground_elev"] + datum.offset, abs=0.03)
        valve = next(f for f in store.iter_features("water_nodes") if f.properties["type"] == "valve")
        points = feature_points(built["water_nodes"][0], valve.fid)
        middle = (heights(points).min() + heights(points).max()) / 2 - datum.offset
        crown = valve.properties["ground_elev"] - valve.properties["depth"]
        assert crown - 1.0 < middle < crown  # centred on a pipe whose crown is at the node's depth


def test_coarse_tiles_keep_the_thickest_pipes_and_report_what_they_drop(demo, tmp_path):
    with open_store(demo) as store:
        layer = store.get_layer("water_pipes")
        features = list(store.iter_features("water_pipes"))
        summary = pipes.build(store, layer, features, tmp_path, leaf_triangles=6000)
        diameters = {f.fid: f.properties["diameter"] for f in features}
        lengths = {f.fid: f.geometry.length for f in features}
    assert summary["tiles"] > 8
    document = json.loads((tmp_path / "tileset.json").read_text())
    root = document["root"]
    coarse = rows_of((tmp_path / root["content"]["uri"]).read_bytes())
    kept = {row["id"] for row in coarse}
    dropped = set(diameters) - kept
    assert kept and dropped
    assert min(diameters[f] for f in kept) >= max(diameters[f] for f in dropped)  # mains first
    assert root["geometricError"] >= max(lengths[f] for f in dropped)  # leaving a pipe out costs its size
    leaf_triangles = sum(
        len(mesh_positions((tmp_path / t["content"]["uri"]).read_bytes())[0]) for t in tiles_of(tmp_path, True)
    )
    assert len(mesh_positions((tmp_path / root["content"]["uri"]).read_bytes())[0]) < leaf_triangles / 4


def test_bad_layers_get_clear_errors(hand, tmp_path):
    store, _ = hand
    with pytest.raises(InvalidInput, match="no shaft or symbol"):  # nodes without types: nothing to draw
        pipes.build(store, store.get_layer("water_nodes"), list(store.iter_features("water_nodes")), tmp_path)
    with pytest.raises(InvalidInput, match="not a pipe network layer"):
        pipes.build(store, Layer(id="roads", kind="vector"), [], tmp_path)
    assert not list(tmp_path.iterdir())


@pytest.fixture(scope="module")
def served(demo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the demo that the server may write its tile builds into."""
    data = tmp_path_factory.mktemp("pipes-3d-served") / "twin-data"
    shutil.copytree(demo, data, ignore=shutil.ignore_patterns("tiles"))
    return data


def test_twin_root_lists_every_pipe_layer(served):
    with open_store(served) as store, TestClient(create_app(store)) as client:
        document = client.get("/3dtiles/twin/tileset.json").json()
        layers = {child["extras"]["layer"] for child in document["root"]["children"]}
        assert set(PIPE_LAYERS + NODE_LAYERS) <= layers
        report = check_tileset("http://testserver/3dtiles/twin/tileset.json", http_fetch(client), keep_contents=False)
        assert report.errors == [] and report.tilesets >= 7


def test_cesium_draws_the_pipes_and_a_pick_gives_the_pipe_id(served, tmp_path):
    with open_store(served) as store:
        culverts = [f for f in store.iter_features("drainage_pipes") if f.properties.get("shape") == "box"]
        culvert = max(culverts, key=lambda f: (f.properties["width"], f.geometry.length))
        solids = load_pipe_ids(store, store.get_layer("drainage_pipes"), [culvert.fid], dem=Dem.from_store(store))
        middle = culvert.geometry.interpolate(0.5, normalized=True)
        lon, lat = transform_points(store.crs, CRS84, [middle.x], [middle.y])
        top = float(solids.bottom[0].mean() + solids.height[0]) + pipes.store_datum(store).offset
    # 60 m south of the culvert's middle and 45 m above its top, looking north at it
    view = f"Cesium.Cartesian3.fromDegrees({lon[0]}, {lat[0] - 60.0 / 111_320.0}, {top + 45.0})"
    pitch = -np.degrees(np.arctan2(45.0, 60.0))
    with serve_twin(served, tmp_path / "server.log") as base, chromium(CESIUM_BUILD / "Cesium.js") as browser:
        page, recorder = open_page(browser, {"width": 640, "height": 420})
        page.goto(f"{base}/3dtiles/preview/drainage_pipes")
        wait_for(page, "window.previewTileset !== undefined", "window.previewState.error")
        page.evaluate(
            f"""() => viewer.camera.setView({{destination: {view},
                orientation: {{heading: 0, pitch: Cesium.Math.toRadians({pitch}), roll: 0}}}})"""
        )
        page.wait_for_timeout(500)
        wait_for(page, "window.previewTileset.tilesLoaded === true", "window.previewState.error")
        picked = page.evaluate(
            """() => { viewer.scene.render();
              const f = viewer.scene.pick(new Cesium.Cartesian2(320, 210));
              return f && f.getProperty ? [f.getProperty("id"), f.getProperty("shape")] : null; }"""
        )
        pixels = np.asarray(Image.open(screenshot(page, "pipes_3d")).convert("RGB")).astype(int)
    assert picked == [culvert.fid, "box"]
    assert set(recorder.statuses("/3dtiles/drainage_pipes/")) == {200}
    recorder.assert_clean()
    brown = np.abs(pixels - np.array(CJJ61["drainage"])).max(axis=-1) < 60
    assert brown.sum() > 500, "the drainage pipes should be drawn in their class colour"
