"""Basemap footprints as LOD1 3D Tiles: placement on the DEM, metadata, scenario and time, courtyards.

The demo twin (shared, read-only) has footprints at three scales plus a planned scheme; each is
served as 3D Tiles and walked over HTTP with the structural checks and the Khronos validator.
Heights are checked against the DEM read independently with rasterio, ids against the store,
the planned and demolished buildings against the manifest. A courtyard building (a polygon with
a hole) goes through a fresh twin from a GeoPackage, `twin ingest basemap`'s path.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urljoin

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from fastapi.testclient import TestClient
from PIL import Image
from scipy.ndimage import map_coordinates

from ingestion.basemap import ingest_basemap
from tests.api_fixtures import http_fetch
from tests.browser import chromium, open_page, screenshot, serve_twin, wait_for
from tests.demo_twin import shared_demo
from tiles.threed import buildings
from tiles.threed.build import ensure_built, is_3d
from tiles.threed.buildings_mesh import extrude
from tiles.threed.gltf import decompress_glb, mesh_positions, read_glb
from tiles.threed.metadata import decode_table
from tiles.threed.validate import check_glb_features, check_tileset, validate_glbs, validator_available
from twin.api.app import create_app
from twin.api.threed import CESIUM_BUILD
from twin.crs import CRS84, ECEF, transform_points
from twin.model import InvalidInput, Layer
from twin.store import init_store, open_store

LAYERS = ("buildings_500", "buildings_2000", "buildings_10000", "buildings_planned")
CM = 0.03  # metres: 16-bit quantization of a 1 km tile is 1.5 cm a step


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    data = shared_demo(tmp_path_factory)
    return data, json.loads((data / "sources" / "manifest.json").read_text())


@pytest.fixture(scope="module")
def client(demo):
    store = open_store(demo[0])
    with TestClient(create_app(store), raise_server_exceptions=False) as test_client:
        yield test_client
    store.close()


def tile_rows(data: bytes) -> list[dict]:
    gltf, binary = read_glb(decompress_glb(data))

    def view(i: int) -> bytes:
        v = gltf["bufferViews"][i]
        return binary[v.get("byteOffset", 0) : v.get("byteOffset", 0) + v["byteLength"]]

    return decode_table(gltf, view)


def leaf_contents(url: str, fetch) -> list[tuple[str, bytes, np.ndarray]]:
    """(uri, glb, 4x4 tile frame) of every leaf tile of a tileset (no external tilesets)."""
    document = json.loads(fetch(url))
    found = []

    def visit(tile: dict, frame: np.ndarray) -> None:
        if "transform" in tile:
            frame = frame @ np.asarray(tile["transform"], dtype=float).reshape(4, 4).T
        if not tile.get("children"):
            target = urljoin(url, tile["content"]["uri"])
            found.append((target, fetch(target), frame))
        for child in tile.get("children", []):
            visit(child, frame)

    visit(document["root"], np.eye(4))
    return found


def drawn_buildings(url: str, fetch, crs: str, geoid: float) -> tuple[dict[str, np.ndarray], dict[str, dict]]:
    """Per fid: its leaf vertices as project-CRS x, y and orthometric height; and its metadata row."""
    points: dict[str, np.ndarray] = {}
    rows: dict[str, dict] = {}
    for _, data, frame in leaf_contents(url, fetch):
        local, ids = mesh_positions(data)
        ecef = (frame @ np.column_stack([local, np.ones(len(local))]).T).T[:, :3]
        lon, lat, h = transform_points(ECEF, "EPSG:4979", ecef[:, 0], ecef[:, 1], ecef[:, 2])
        x, y = transform_points(CRS84, crs, lon, lat)
        table = tile_rows(data)
        for index, row in enumerate(table):
            assert row["id"] not in rows, f"{row['id']} drawn in two leaf tiles"
            rows[row["id"]] = row
            mine = ids == index
            points[row["id"]] = np.column_stack([x[mine], y[mine], h[mine] - geoid])
    return points, rows


def dem_ground(dem_path: Path, footprint) -> float:
    """Lowest bilinear DEM height under the footprint's corners, read with rasterio and scipy."""
    xy = shapely.get_coordinates(footprint.exterior if footprint.geom_type == "Polygon" else footprint)
    with rasterio.open(dem_path) as src:
        grid = src.read(1).astype(float)
        inverse = ~src.transform
        cols = inverse.a * xy[:, 0] + inverse.b * xy[:, 1] + inverse.c
        rows = inverse.d * xy[:, 0] + inverse.e * xy[:, 1] + inverse.f
    heights = map_coordinates(grid, [rows - 0.5, cols - 0.5], order=1, mode="nearest")  # cell centres
    return float(heights.min())


def test_footprint_layers_and_only_they_are_3d(demo):
    with open_store(demo[0]) as store:
        layers = {layer.id: layer for layer in store.list_layers()}
    for layer_id in LAYERS:
        assert "extrude" in layers[layer_id].metadata and is_3d(layers[layer_id]), layer_id
    for layer_id in ("landuse_500", "parcels_500", "roads_500", "water_2000", "road_centrelines_500"):
        assert not is_3d(layers[layer_id]), layer_id


@pytest.mark.parametrize("layer_id", LAYERS)
def test_layer_tilesets_pass_the_structural_checks_and_the_validator(client, layer_id):
    url = f"http://testserver/3dtiles/{layer_id}/tileset.json"
    document = client.get(url).json()
    assert document["asset"]["version"] == "1.1" and "region" in document["root"]["boundingVolume"]
    report = check_tileset(url, http_fetch(client))
    assert report.errors == [] and report.contents, report.errors
    glbs = list(report.contents.values())
    assert all(check_glb_features(data) == [] for data in glbs)
    if validator_available():
        assert [r["numErrors"] for r in validate_glbs(glbs)] == [0] * len(glbs)
    gltf, _ = read_glb(glbs[0])
    assert "EXT_meshopt_compression" in gltf["extensionsRequired"]


def test_buildings_stand_on_the_dem_at_their_height(client, demo):
    data, manifest = demo
    dem_path = data / "sources" / next(r["path"] for r in manifest["rasters"] if r.get("role") == "dem")
    with open_store(data) as store:
        geoid = float(store.get_meta("geoid_offset") or 0.0)
        features = {f.fid: f for f in store.iter_features("buildings_500")}
    points, rows = drawn_buildings(
        "http://testserver/3dtiles/buildings_500/tileset.json", http_fetch(client), manifest["crs"], geoid
    )
    assert set(rows) == set(features)  # every footprint drawn once, ids are the twin's fids
    tallest = max(features.values(), key=lambda f: f.properties["height"])
    sloped = max(
        features.values(),
        key=lambda f: np.ptp(shapely.get_coordinates(f.geometry.exterior)[:, 0]),  # the widest: most slope
    )
    for feature in (tallest, sloped, features[sorted(features)[0]]):
        ground = dem_ground(dem_path, feature.geometry)
        height = feature.properties["height"]
        z = points[feature.fid][:, 2]
        assert abs(z.min() - ground) < CM and abs(z.max() - (ground + height)) < CM, feature.fid
        assert abs(rows[feature.fid]["base"] - ground) < 0.01 and rows[feature.fid]["height"] == pytest.approx(height)
        outline = shapely.MultiPoint(points[feature.fid][:, :2])
        assert shapely.hausdorff_distance(outline.convex_hull, feature.geometry.convex_hull) < CM


def test_metadata_rows_and_picked_features_match_the_store(client, demo):
    with open_store(demo[0]) as store:
        features = {f.fid: f for f in store.iter_features("buildings_2000")}
    url = "http://testserver/3dtiles/buildings_2000/tileset.json"
    _, rows = drawn_buildings(url, http_fetch(client), "EPSG:4549", 0)
    assert rows and set(rows) <= set(features)
    for fid, row in rows.items():
        props = features[fid].properties
        assert (row["name"], row["use"], row["floors"], row["year"]) == (
            props["name"],
            props["use"],
            props["floors"],
            props["year"],
        )
    fid = sorted(rows)[len(rows) // 2]
    record = client.get(f"/features/buildings_2000/{fid}").json()
    assert record["id"] == fid and record["properties"]["name"] == rows[fid]["name"]


def test_each_area_is_drawn_from_its_most_detailed_band(client, demo):
    _, manifest = demo
    fetch = http_fetch(client)
    core, district = shapely.box(*manifest["core_bbox"]), shapely.box(*manifest["bbox"])
    with open_store(demo[0]) as store:
        for layer_id, skipped_area in (("buildings_2000", core), ("buildings_10000", district)):
            footprints = {f.fid: f.geometry for f in store.iter_features(layer_id)}
            _, rows = drawn_buildings(f"http://testserver/3dtiles/{layer_id}/tileset.json", fetch, "EPSG:4549", 0)
            inside = {fid for fid, g in footprints.items() if skipped_area.contains(g.point_on_surface())}
            assert inside and rows and set(rows) == set(footprints) - inside, layer_id


def children_layers(document: dict) -> dict[str, str]:
    return {c["extras"]["layer"]: c["content"]["uri"] for c in document["root"]["children"]}


def test_twin_root_shows_planned_buildings_only_in_the_planned_scenario(client):
    now = children_layers(client.get("/3dtiles/twin/tileset.json").json())
    planned = children_layers(client.get("/3dtiles/twin/tileset.json?scenario=planned").json())
    assert {"buildings_500", "buildings_2000", "buildings_10000"} <= set(now) and "buildings_planned" not in now
    assert set(LAYERS) <= set(planned)
    report = check_tileset("http://testserver/3dtiles/twin/tileset.json?scenario=planned", http_fetch(client))
    assert report.errors == [], report.errors


def test_a_demolished_building_stands_only_before_its_valid_to(client, demo):
    data, manifest = demo
    history = manifest["history"]
    with open_store(data) as store:
        versions = {fid: store.history("buildings_500", fid) for fid in history["demolished"]}
    gone = next(fid for fid, kept in versions.items() if kept and kept[-1].valid_to is not None)
    end = versions[gone][-1].valid_to
    before = (end.replace(year=end.year - 1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    root = client.get("/3dtiles/twin/tileset.json", params={"datetime": before}).json()
    uri = children_layers(root)["buildings_500"]
    assert "datetime=" in uri
    fetch = http_fetch(client)
    url = urljoin("http://testserver/3dtiles/twin/tileset.json", uri)
    _, past = drawn_buildings(url, fetch, "EPSG:4549", 0)
    _, current = drawn_buildings("http://testserver/3dtiles/buildings_500/tileset.json", fetch, "EPSG:4549", 0)
    assert gone in past and gone not in current
    assert set(history["new"]) & set(current) and not set(history["new"]) & set(past)


def courtyard_block() -> shapely.Polygon:
    return shapely.Polygon(
        [(0, 0), (40, 0), (40, 30), (0, 30)], [[(10, 8), (10, 22), (30, 22), (30, 8)]]
    )  # hole given counter-clockwise on purpose: orientation is the builder's job


def test_a_courtyard_roof_leaves_the_hole_open_and_its_walls_face_it():
    block = courtyard_block()
    prisms = extrude(np.array([block]), np.array([5.0]), np.array([17.0]))
    a, b, c = (prisms.positions[prisms.indices[:, k]] for k in range(3))
    normals = np.cross(b - a, c - a)
    roof = np.isclose(a[:, 2], 17.0) & np.isclose(b[:, 2], 17.0) & np.isclose(c[:, 2], 17.0)
    assert (normals[roof, 2] > 0).all()  # facing up
    assert normals[roof, 2].sum() / 2.0 == pytest.approx(block.area)  # roof area = footprint minus courtyard
    hole = shapely.Polygon(block.interiors[0])
    centroids = (a + b + c)[roof] / 3.0
    assert not shapely.contains_xy(hole, centroids[:, 0], centroids[:, 1]).any()
    walls = ~roof
    assert np.allclose(normals[walls, 2], 0.0)
    middle = ((a + b + c)[walls] / 3.0)[:, :2]
    on_hole = shapely.distance(shapely.points(middle), hole.exterior) < 1e-6
    towards_court = np.einsum("ij,ij->i", normals[walls][on_hole, :2], np.array([20.0, 15.0]) - middle[on_hole])
    towards_outside = np.einsum("ij,ij->i", normals[walls][~on_hole, :2], middle[~on_hole] - np.array([20.0, 15.0]))
    assert on_hole.sum() == 8 and (towards_court > 0).all() and (towards_outside > 0).all()


def test_footprints_ingested_from_a_file_become_3d_tiles_with_their_courtyard(tmp_path):
    origin = np.array([385500.0, 3547600.0])
    block = shapely.affinity.translate(courtyard_block(), *origin)
    tower = shapely.box(*(origin + [60, 0]), *(origin + [80, 20]))
    source = tmp_path / "footprints.gpkg"
    gpd.GeoDataFrame(
        {
            "bid": ["C1", "T1", "X1"],
            "name": ["Court", "Tower", "Unknown"],
            "floors": [4, 20, None],
            "use": ["office"] * 3,
        },
        geometry=[block, tower, shapely.box(*(origin - 50), *(origin - 40))],
        crs="EPSG:4549",
    ).to_file(source, layer="footprints")
    with init_store(tmp_path / "twin", "EPSG:4549") as store:
        store.set_meta("geoid_offset", "2.5")
        ingest_basemap(store, source, layer_id="footprints", id_field="bid")
        layer = store.get_layer("footprints")
        assert layer.metadata["extrude"] == {} and is_3d(layer)
        built = ensure_built(store, "footprints")
    assert built.summary["features"] == 2 and built.summary["skipped"] == 1  # no floors, no height: left out
    fetch = lambda url: Path(url.removeprefix("file://")).read_bytes()  # noqa: E731
    url = (built.folder / "tileset.json").as_uri()
    assert check_tileset(url).errors == []
    points, rows = drawn_buildings(url, fetch, "EPSG:4549", 2.5)
    assert rows["C1"]["floors"] == 4 and rows["C1"]["height"] == pytest.approx(12.0)  # 4 storeys x 3 m
    assert points["T1"][:, 2].max() == pytest.approx(60.0, abs=CM)  # no DEM: the ground is 0
    assert points["C1"][:, 2].min() == pytest.approx(0.0, abs=CM)
    ((_, data, frame),) = leaf_contents(url, fetch)
    if validator_available():
        assert validate_glbs([data])[0]["numErrors"] == 0
    local, ids = mesh_positions(data)
    court = [i for i, row in enumerate(tile_rows(data)) if row["id"] == "C1"][0]
    gltf, binary = read_glb(decompress_glb(data))
    ecef = (frame @ np.column_stack([local, np.ones(len(local))]).T).T[:, :3]
    lon, lat, h = transform_points(ECEF, "EPSG:4979", ecef[:, 0], ecef[:, 1], ecef[:, 2])
    x, y = transform_points(CRS84, "EPSG:4549", lon, lat)
    indices = triangle_indices(gltf, binary)
    mine = ids[indices[:, 0]] == court
    top = (np.abs(h[indices] - 2.5 - 12.0) < CM).all(axis=1) & mine
    cx, cy = x[indices[top]].mean(axis=1), y[indices[top]].mean(axis=1)
    hole = shapely.Polygon(block.interiors[0])
    assert top.sum() >= 8 and not shapely.contains_xy(hole, cx, cy).any()
    roof_area = sum(shapely.Polygon(np.column_stack([x[t], y[t]])).area for t in indices[top])
    assert roof_area == pytest.approx(block.area, rel=1e-3)


def triangle_indices(gltf: dict, binary: bytes) -> np.ndarray:
    """Every primitive's triangles, numbered in the concatenated vertex order of `mesh_positions`."""
    from tiles.threed.gltf import accessor_array

    out, offset = [], 0
    for primitive in gltf["meshes"][0]["primitives"]:
        out.append(accessor_array(gltf, binary, primitive["indices"]).reshape(-1, 3).astype(np.int64) + offset)
        offset += gltf["accessors"][primitive["attributes"]["POSITION"]]["count"]
    return np.concatenate(out)


def test_a_small_tile_budget_gives_levels_of_detail(demo, tmp_path):
    with open_store(demo[0]) as store:
        layer = store.get_layer("buildings_2000")
        features = list(store.iter_features("buildings_2000"))
        settings = {**layer.metadata["extrude"], "max_tile_features": 40}
        budget = Layer(**{**layer.__dict__, "metadata": {"extrude": settings}})
        summary = buildings.build(store, budget, features, tmp_path)
    document = json.loads((tmp_path / "tileset.json").read_text())
    assert summary["tiles"] > 5 and summary["features"] == len(features) - summary["skipped"]
    report = check_tileset(tmp_path / "tileset.json")
    assert report.errors == [], report.errors
    root = document["root"]
    assert root["geometricError"] > 0 and all(c["geometricError"] < root["geometricError"] for c in root["children"])
    leaves = leaf_contents(
        (tmp_path / "tileset.json").as_uri(), lambda url: Path(url.removeprefix("file://")).read_bytes()
    )
    ids = [row["id"] for _, data, _ in leaves for row in tile_rows(data)]
    assert len(ids) == len(set(ids)) == summary["features"] and all(len(tile_rows(d)) <= 40 for _, d, _ in leaves)
    if validator_available():
        reports = validate_glbs(list(report.contents.values()))
        assert [r["numErrors"] for r in reports] == [0] * len(reports)


@pytest.mark.parametrize(
    "settings",
    [{"storey_height": -3}, {"storey_hieght": 3}, {"skip_within": [1, 2, 0, 5]}, {"max_tile_bytes": "big"}],
)
def test_bad_extrude_settings_are_refused(settings):
    layer = Layer(id="footprints", metadata={"extrude": settings})
    with pytest.raises(InvalidInput):
        buildings.ExtrudeSettings.of(layer)


def test_cesium_draws_the_buildings_without_errors(demo, tmp_path_factory):
    with (
        serve_twin(demo[0], tmp_path_factory.mktemp("buildings-server") / "server.log") as server,
        chromium(CESIUM_BUILD / "Cesium.js") as browser,
    ):
        page, recorder = open_page(browser, {"width": 880, "height": 560})
        page.goto(f"{server}/3dtiles/preview/buildings_500")
        wait_for(page, "window.previewState.ready || window.previewState.error")
        state = page.evaluate("() => window.previewState")
        assert state["ready"] and state["error"] is None, state
        wait_for(page, "window.previewTileset.tilesLoaded === true")
        page.wait_for_timeout(1500)  # a few more frames at software-rendering speed
        pixels = np.asarray(Image.open(screenshot(page, "buildings")).convert("RGB"))
    glbs = recorder.statuses("/3dtiles/buildings_500/")
    assert glbs and set(glbs) == {200}
    recorder.assert_clean()
    background = np.median(pixels.reshape(-1, 3), axis=0)
    drawn = (np.abs(pixels.astype(int) - background).max(axis=-1) > 30).sum()
    assert drawn > 0.02 * pixels.shape[0] * pixels.shape[1], "the buildings should cover part of the view"
