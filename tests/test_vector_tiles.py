"""Vector tiles: MVT content against the store, generalisation, HTTP behaviour, time and scenario,
the size budget, cache invalidation, and the same tiles from the GeoPackage and PostGIS backends.

References are computed here, independently of `tiles/vector`: tile bounds from the closed-form
WebMercatorQuad grid, projections with pyproj, clipping and sizes with shapely, and an MVT
geometry decoder written from the specification.
"""

from __future__ import annotations

import gzip
import json
import math
from datetime import UTC, datetime
from pathlib import Path

import mapbox_vector_tile
import numpy as np
import pyproj
import pytest
import shapely
from fastapi.testclient import TestClient
from mapbox_vector_tile.Mapbox import vector_tile_pb2
from shapely.geometry import Point, Polygon, box

from ingestion.manifest import load_manifest
from sample_data.district import generate
from tiles.vector.service import TileService
from twin.api.app import create_app
from twin.model import FeatureInput, Layer
from twin.store import Store, init_store, open_store

WORLD = 20037508.342789244
EXTENT, BUFFER = 4096, 64
PIXEL = EXTENT / 512  # tile units per screen pixel (tiles drawn 512 px wide)
BUDGET = 500 * 1024
TO_MERCATOR = pyproj.Transformer.from_crs("EPSG:4549", "EPSG:3857", always_xy=True)
TO_LONLAT = pyproj.Transformer.from_crs("EPSG:4549", "EPSG:4326", always_xy=True)
PAST = "2020-01-01T00:00:00Z"


# ----- independent references --------------------------------------------------------------------
def tile_of(x: float, y: float, z: int) -> tuple[int, int]:
    """The WebMercatorQuad tile holding a project-CRS point."""
    mx, my = TO_MERCATOR.transform(x, y)
    size = 2 * WORLD / 2**z
    return int((mx + WORLD) // size), int((WORLD - my) // size)


def bounds_of(z: int, x: int, y: int) -> tuple[float, float, float, float]:
    size = 2 * WORLD / 2**z
    return (-WORLD + x * size, WORLD - (y + 1) * size, -WORLD + (x + 1) * size, WORLD - y * size)


def to_tile(geom, z: int, x: int, y: int):
    """A project-CRS geometry in tile units (y down), by pyproj and an affine map."""
    minx, _, maxx, maxy = bounds_of(z, x, y)
    scale = EXTENT / (maxx - minx)

    def project(coords: np.ndarray) -> np.ndarray:
        mx, my = TO_MERCATOR.transform(coords[:, 0], coords[:, 1])
        return np.column_stack(((np.asarray(mx) - minx) * scale, (maxy - np.asarray(my)) * scale))

    return shapely.transform(geom, project)


def survives_the_grid(part) -> bool:
    """Whether the part of a feature inside the buffered tile is still a line or an area once its
    coordinates are rounded to the integer grid of tile units."""
    if part.is_empty:
        return False
    rounded = shapely.transform(part, np.round)
    if part.geom_type.endswith("Point"):
        return True
    if part.geom_type.endswith("LineString"):
        return len(np.unique(shapely.get_coordinates(rounded), axis=0)) >= 2
    return rounded.area > 0


def expected_fids(store: Store, layer_ids: list[str], z: int, x: int, y: int, when: datetime | None = None) -> set[str]:
    """Features at least a pixel big (the documented rule) whose part in the buffered tile is
    still a geometry on the tile's integer grid."""
    from twin.model import TimeFilter

    window = box(-BUFFER, -BUFFER, EXTENT + BUFFER, EXTENT + BUFFER)
    found = set()
    for layer_id in layer_ids:
        time = TimeFilter.at(when) if when else None
        features = store.query(layer_id, time=time, limit=None).features
        geoms = to_tile(shapely.force_2d(np.array([f.geometry for f in features], dtype=object)), z, x, y)
        parts = shapely.intersection(geoms, window)
        for feature, geom, part in zip(features, geoms, parts, strict=True):
            if geom.geom_type.endswith("Polygon") and geom.area < PIXEL**2:
                continue
            if geom.geom_type.endswith("LineString") and geom.length < PIXEL:
                continue
            if survives_the_grid(part):
                found.add(feature.fid)
    return found


def decode(data: bytes) -> dict:
    return mapbox_vector_tile.decode(data, default_options={"y_coord_down": True}) if data else {}


def fids(decoded: dict, layer: str) -> set[str]:
    return {f["properties"]["fid"] for f in decoded.get(layer, {}).get("features", [])}


def rings_from_commands(geometry: list[int]) -> list[list[tuple[int, int]]]:
    """Rings of an MVT polygon from its command integers (spec 4.3), cursor carried across rings."""
    rings, ring, x, y, i = [], [], 0, 0, 0
    while i < len(geometry):
        command, count = geometry[i] & 0x7, geometry[i] >> 3
        i += 1
        if command == 7:
            rings.append(ring)
            ring = []
            continue
        for _ in range(count):
            dx, dy = geometry[i], geometry[i + 1]
            x += (dx >> 1) ^ -(dx & 1)
            y += (dy >> 1) ^ -(dy & 1)
            i += 2
            if command == 1:
                ring = [(x, y)]
            else:
                ring.append((x, y))
    return rings


def surveyor_area(ring: list[tuple[int, int]]) -> float:
    return sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(ring, ring[1:] + ring[:1], strict=True)) / 2


# ----- the demo district ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The demo district's basemaps and networks (no rasters: not needed here) in a new twin."""
    root = tmp_path_factory.mktemp("vector-tiles")
    manifest = generate(root / "sources", parts={"basemap", "networks"})
    with init_store(root / "data", manifest["crs"]) as store:
        load_manifest(store, root / "sources", manifest)
    return root / "data", manifest


@pytest.fixture(scope="module")
def store(demo) -> Store:
    twin = open_store(demo[0])
    yield twin
    twin.close()


@pytest.fixture(scope="module")
def client(store):
    with TestClient(create_app(store), raise_server_exceptions=False) as test_client:
        yield test_client


def centre(manifest: dict, key: str = "bbox") -> tuple[float, float]:
    minx, miny, maxx, maxy = manifest[key]
    return (minx + maxx) / 2, (miny + maxy) / 2


def get_tile(client, tileset: str, z: int, x: int, y: int, **params) -> dict:
    response = client.get(f"/tiles/{tileset}/{z}/{x}/{y}.mvt", params=params)
    assert response.status_code in (200, 204), response.text
    return decode(response.content)


# ----- content ------------------------------------------------------------------------------------
def test_z14_tile_over_the_district_has_the_features_of_the_10000_map_and_the_pipes(client, store, demo):
    x, y = tile_of(*centre(demo[1]), 14)
    basemap = get_tile(client, "basemap", 14, x, y)
    assert set(basemap) == {"buildings", "roads", "water", "green", "landuse"}
    for name in basemap:
        expected = expected_fids(store, [f"{name}_10000"], 14, x, y)
        assert fids(basemap, name) == expected and expected, name
    pipes = get_tile(client, "water_pipes", 14, x, y)
    expected = expected_fids(store, ["water_pipes"], 14, x, y)
    assert fids(pipes, "water_pipes") == expected
    short = {f.fid for f in store.query("water_pipes", limit=None).features if f.geometry.length < 2.0}
    assert short and not short & expected  # sub-pixel pipes are dropped at z14


def test_z18_tile_over_a_500_sheet_has_the_features_of_the_500_map(client, store, demo):
    x, y = tile_of(*centre(demo[1], "core_bbox"), 18)
    tile = get_tile(client, "basemap", 18, x, y)
    assert "buildings" in tile and "parcels" in tile
    for name in tile:
        assert fids(tile, name) == expected_fids(store, [f"{name}_500"], 18, x, y), name
    nodes = get_tile(client, "drainage_nodes", 18, x, y)
    assert fids(nodes, "drainage_nodes") == expected_fids(store, ["drainage_nodes"], 18, x, y)


def test_attributes_are_the_scalar_properties_plus_fid(client, store, demo):
    x, y = tile_of(*centre(demo[1], "core_bbox"), 17)
    tile = get_tile(client, "water_pipes", 17, x, y)
    for feature in tile["water_pipes"]["features"][:50]:
        stored = store.get_feature("water_pipes", feature["properties"]["fid"]).properties
        expected = {k: v for k, v in stored.items() if isinstance(v, str | int | float | bool)}
        assert feature["properties"] == {**expected, "fid": feature["properties"]["fid"]}


def test_geometry_round_trip_within_half_a_pixel(client, store, demo):
    x, y = tile_of(*centre(demo[1], "core_bbox"), 18)
    tile = get_tile(client, "buildings_500", 18, x, y)
    window = box(0, 0, EXTENT, EXTENT)
    checked = 0
    for feature in tile["buildings_500"]["features"]:
        got = shapely.geometry.shape(feature["geometry"])
        original = to_tile(store.get_feature("buildings_500", feature["properties"]["fid"]).geometry, 18, x, y)
        if not original.within(window):
            continue  # clipped at the tile edge: compared elsewhere by the tiles around it
        # half a pixel of simplification plus half a unit of snapping on each axis
        assert got.hausdorff_distance(original) <= PIXEL / 2 + math.sqrt(0.5)
        assert got.area == pytest.approx(original.area, rel=0.05)
        checked += 1
    assert checked >= 3


def test_list_and_object_properties_are_left_out_and_the_rest_kept(tmp_path):
    store = init_store(tmp_path / "data", "EPSG:4549")
    x0, y0 = 386_000.0, 3_547_000.0
    features = [
        FeatureInput("a", box(x0, y0, x0 + 10, y0 + 10), {"ids": ["s1", "s2"], "depth": 0.3, "name": "A"}),
        FeatureInput("b", box(x0 + 20, y0, x0 + 30, y0 + 10), {"ids": {"k": 1}, "depth": 0.5, "name": "B"}),
    ]
    store.write_features(Layer("sections"), features)
    x, y = tile_of(x0 + 15, y0 + 5, 17)
    data = gzip.decompress(TileService(store, check_interval=0).tile("sections", 17, x, y).data)
    decoded = mapbox_vector_tile.decode(data)["sections"]["features"]
    assert {f["properties"]["fid"]: f["properties"] for f in decoded} == {
        "a": {"fid": "a", "depth": 0.3, "name": "A"},
        "b": {"fid": "b", "depth": 0.5, "name": "B"},
    }
    store.close()


def test_rings_wind_as_the_spec_says_with_holes(tmp_path):
    """Exterior rings have positive surveyor's area in tile coordinates (clockwise on screen with y
    down), holes negative; checked on the raw command stream."""
    store = init_store(tmp_path / "data", "EPSG:4549")
    x0, y0 = 386_000.0, 3_547_000.0
    courtyard = Polygon(
        [(x0, y0), (x0 + 60, y0), (x0 + 60, y0 + 40), (x0, y0 + 40)],
        [[(x0 + 20, y0 + 10), (x0 + 40, y0 + 10), (x0 + 40, y0 + 30), (x0 + 20, y0 + 30)]],
    )
    clockwise = Polygon(list(box(x0 + 100, y0, x0 + 130, y0 + 30).exterior.coords)[::-1])
    store.write_features(Layer("blocks"), [FeatureInput("a", courtyard, {}), FeatureInput("b", clockwise, {})])
    z = 17
    x, y = tile_of(x0 + 30, y0 + 20, z)
    data = gzip.decompress(TileService(store, check_interval=0).tile("blocks", z, x, y).data)
    message = vector_tile_pb2.tile()
    message.ParseFromString(data)
    [layer] = message.layers
    assert (layer.version, layer.extent) == (2, 4096)
    areas = {}
    for feature in layer.features:
        assert feature.type == 3  # POLYGON
        tags = list(feature.tags)
        fid = layer.values[tags[tags.index(list(layer.keys).index("fid")) + 1]].string_value
        areas[fid] = [surveyor_area(ring) for ring in rings_from_commands(list(feature.geometry))]
    assert len(areas["a"]) == 2 and areas["a"][0] > 0 > areas["a"][1]
    assert len(areas["b"]) == 1 and areas["b"][0] > 0
    store.close()


# ----- HTTP -----------------------------------------------------------------------------------------
def test_empty_tile_is_204(client):
    response = client.get("/tiles/basemap/16/0/0.mvt")
    assert response.status_code == 204 and response.content == b""


def test_gzip_etag_304_and_cache_control(client, demo):
    x, y = tile_of(*centre(demo[1]), 16)
    url = f"/tiles/basemap/16/{x}/{y}.mvt"
    zipped = client.get(url, headers={"Accept-Encoding": "gzip"})
    plain = client.get(url, headers={"Accept-Encoding": "identity"})
    assert zipped.headers["content-encoding"] == "gzip" and "content-encoding" not in plain.headers
    assert zipped.headers["content-type"] == "application/vnd.mapbox-vector-tile"
    assert decode(plain.content) == decode(zipped.content)  # the client decompresses gzip
    assert "max-age" in zipped.headers["cache-control"] and "Accept-Encoding" in zipped.headers["vary"]
    for response in (zipped, plain):
        etag = response.headers["etag"]
        assert etag.startswith('"') and not etag.startswith("W/")
        again = client.get(url, headers={"If-None-Match": etag, "Accept-Encoding": "gzip"})
        assert again.status_code == 304 and again.content == b""
    assert zipped.headers["etag"] != plain.headers["etag"]  # two encodings, two strong tags
    other = client.get(url, headers={"If-None-Match": '"0000"'})
    assert other.status_code == 200
    head = client.head(url, headers={"Accept-Encoding": "gzip"})
    assert head.status_code == 200 and head.content == b"" and head.headers["etag"] == zipped.headers["etag"]


def test_cors_on_tiles(client, demo):
    x, y = tile_of(*centre(demo[1]), 15)
    response = client.get(f"/tiles/pipes/15/{x}/{y}.mvt", headers={"Origin": "http://example.org"})
    assert response.headers["access-control-allow-origin"] in ("*", "http://example.org")


@pytest.mark.parametrize(
    ("path", "status", "words"),
    [
        ("/tiles/basemap/23/0/0.mvt", (400, 404), "zoom"),  # 404 when the server's TWIN_MAX_ZOOM says first
        ("/tiles/basemap/-1/0/0.mvt", 400, "zoom"),
        ("/tiles/basemap/3/8/0.mvt", 400, "outside"),
        ("/tiles/basemap/3/0/9.mvt", 400, "outside"),
        ("/tiles/no_such_layer/3/0/0.mvt", 404, "no tileset"),
        ("/tiles/basemap/3/0/0.mvt?datetime=yesterday", 400, "datetime"),
        ("/tiles/basemap/3/0/0.mvt?scenario=dreamt", 400, "scenario"),
        ("/tiles/basemap/x/0/0.mvt", 400, "z"),
        ("/collections/water_pipes/tiles/WebMercatorQuad/2/9/0", 400, "outside"),
        ("/collections/water_pipes/tiles/OtherQuad/2/0/0", 404, "tile matrix set"),
        ("/collections/nothing/tiles", 404, "nothing"),
        ("/tileMatrixSets/OtherQuad", 404, "OtherQuad"),
    ],
)
def test_bad_requests_are_problems(client, path, status, words):
    response = client.get(path)
    assert response.status_code in (status if isinstance(status, tuple) else (status,))
    assert response.headers["content-type"].startswith("application/problem+json")
    assert words in response.json()["detail"]


def test_tilejson(client, demo):
    document = client.get("/tiles/basemap/tilejson.json", params={"scenario": "planned"}).json()
    assert document["tilejson"] == "3.0.0"
    assert document["tiles"] == ["http://testserver/tiles/basemap/{z}/{x}/{y}.mvt?scenario=planned"]
    layers = {entry["id"]: entry for entry in document["vector_layers"]}
    assert {"buildings", "roads", "water", "green", "landuse", "parcels", "buildings_planned"} <= set(layers)
    assert (layers["parcels"]["minzoom"], layers["parcels"]["maxzoom"]) == (18, 22)
    assert layers["buildings"]["fields"]["floors"] == "Number" and layers["buildings"]["fields"]["fid"] == "String"
    west, south, east, north = document["bounds"]
    lon, lat = demo[1]["anchor_lonlat"][:2]
    assert west < lon < east and south < lat < north
    pipes = client.get("/tiles/pipes/tilejson.json").json()
    assert {entry["id"] for entry in pipes["vector_layers"]} == {
        "water_pipes", "water_nodes", "gas_pipes", "gas_nodes", "drainage_pipes", "drainage_nodes",
    }  # fmt: skip


def test_ogc_api_tiles(client, demo):
    sets = client.get("/tileMatrixSets").json()["tileMatrixSets"]
    assert [s["id"] for s in sets] == ["WebMercatorQuad"]
    matrix = client.get("/tileMatrixSets/WebMercatorQuad").json()
    assert matrix["crs"].endswith("3857") and matrix["tileMatrices"][0]["matrixWidth"] == 1
    listing = client.get("/collections/water_pipes/tiles").json()
    [tileset] = listing["tilesets"]
    template = next(link["href"] for link in tileset["links"] if link["rel"] == "item")
    assert template.endswith("/collections/water_pipes/tiles/WebMercatorQuad/{tileMatrix}/{tileRow}/{tileCol}")
    metadata = client.get("/collections/water_pipes/tiles/WebMercatorQuad").json()
    assert metadata["dataType"] == "vector" and metadata["layers"][0]["id"] == "water_pipes"
    x, y = tile_of(*centre(demo[1]), 16)
    limits = next(limit for limit in metadata["tileMatrixSetLimits"] if limit["tileMatrix"] == "16")
    assert limits["minTileCol"] <= x <= limits["maxTileCol"] and limits["minTileRow"] <= y <= limits["maxTileRow"]
    ogc = client.get(f"/collections/water_pipes/tiles/WebMercatorQuad/16/{y}/{x}")  # row (y) before column
    xyz = client.get(f"/tiles/water_pipes/16/{x}/{y}.mvt")
    assert ogc.status_code == 200 and decode(ogc.content) == decode(xyz.content)


# ----- time and scenario -----------------------------------------------------------------------------
def test_datetime_selects_the_buildings_of_its_time(client, store, demo):
    demolished = demo[1]["history"]["demolished"]
    building = store.history("buildings_500", demolished[0])[0].geometry
    x, y = tile_of(building.centroid.x, building.centroid.y, 18)
    past = get_tile(client, "buildings_500", 18, x, y, datetime=PAST)
    now = get_tile(client, "buildings_500", 18, x, y)
    assert demolished[0] in fids(past, "buildings_500") and demolished[0] not in fids(now, "buildings_500")
    when = datetime(2020, 1, 1, tzinfo=UTC)
    assert fids(past, "buildings_500") == expected_fids(store, ["buildings_500"], 18, x, y, when)
    basemap_past = client.get(f"/tiles/basemap/18/{x}/{y}.mvt", params={"datetime": PAST})
    basemap_now = client.get(f"/tiles/basemap/18/{x}/{y}.mvt")
    assert basemap_past.headers["etag"] != basemap_now.headers["etag"]
    assert demolished[0] in fids(decode(basemap_past.content), "buildings")


def test_planned_scenario_adds_the_planned_buildings(client, store):
    planned = store.query("buildings_planned", limit=None).features
    centroid = shapely.unary_union([f.geometry for f in planned]).centroid
    x, y = tile_of(centroid.x, centroid.y, 18)
    current = get_tile(client, "basemap", 18, x, y)
    future = get_tile(client, "basemap", 18, x, y, scenario="planned")
    assert "buildings_planned" not in current
    assert fids(future, "buildings_planned") == {f.fid for f in planned}
    assert fids(future, "buildings") == fids(current, "buildings")  # on top of the current map
    composites = get_tile(client, "pipes", 18, x, y, scenario="planned")
    assert "buildings_planned" not in composites


# ----- size budget --------------------------------------------------------------------------------
def test_no_tile_of_the_demo_pyramid_exceeds_500_kb(store, demo):
    """z12-z14 walked in full for the composites and the densest layers, 20 tiles of each zoom above."""
    service = TileService(store, check_interval=0)
    minx, miny, maxx, maxy = demo[1]["bbox"]
    largest: dict[int, int] = {}
    for z in range(12, 20):
        x0, y1 = tile_of(minx, miny, z)
        x1, y0 = tile_of(maxx, maxy, z)
        tiles = [(x, y) for x in range(x0, x1 + 1) for y in range(y0, y1 + 1)]
        if z >= 15:
            tiles = tiles[:: max(1, len(tiles) // 20)]
        tilesets = ["basemap", "pipes"] + (["drainage_nodes", "water_pipes"] if z <= 14 else [])
        for name in tilesets:
            for x, y in tiles:
                result = service.tile(name, z, x, y)
                size = len(gzip.decompress(result.data)) if result.data else 0
                largest[z] = max(largest.get(z, 0), size)
                assert size <= BUDGET, (name, z, x, y, size)
    assert largest[12] > 100_000  # the budget was approached, not trivially met


def test_a_dense_layer_is_thinned_to_the_budget(tmp_path):
    store = init_store(tmp_path / "data", "EPSG:4549")
    rng = np.random.default_rng(5)
    count = 25_000
    xs = 386_000 + rng.uniform(0, 1000, count)
    ys = 3_547_000 + rng.uniform(0, 1000, count)
    features = [
        FeatureInput(f"p{i:05d}", Point(x, y), {"address": f"No. {i} Zhongshan Road, Xuanwu", "reading": i + 0.5})
        for i, (x, y) in enumerate(zip(xs, ys, strict=True))
    ]
    store.write_features(Layer("meters"), features)
    x, y = tile_of(386_500, 3_547_500, 13)
    assert tile_of(386_000, 3_547_000, 13) == tile_of(387_000, 3_548_000, 13) == (x, y)
    data = gzip.decompress(TileService(store, check_interval=0).tile("meters", 13, x, y).data)
    kept = decode(data)["meters"]["features"]
    # a pixel here is 9.5 m: at one point per pixel the ~11,000 survivors would need about 700 KB
    assert len(data) <= BUDGET and 1000 < len(kept) < 8000
    # thinned evenly: every 64 px cell of the data area still has points
    cells = {(int(f["geometry"]["coordinates"][0]) // 512, int(f["geometry"]["coordinates"][1]) // 512) for f in kept}
    assert len(cells) >= 4
    store.close()


# ----- cache -----------------------------------------------------------------------------------------
def test_an_edit_invalidates_only_the_tiles_it_touches(tmp_path):
    store = init_store(tmp_path / "data", "EPSG:4549")
    x0, y0 = 386_000.0, 3_547_000.0
    houses = [FeatureInput(f"h{i}", box(x0 + 40 * i, y0, x0 + 40 * i + 20, y0 + 20), {"floors": 2}) for i in range(40)]
    store.write_features(Layer("houses", scale_band="1:500"), houses, valid_from=datetime(2020, 1, 1, tzinfo=UTC))
    service = TileService(store, check_interval=0)
    z = 18
    row = sorted({tile_of(x0 + 40 * i + 10, y0 + 10, z) for i in range(40)})
    assert len(row) >= 6
    first = {t: service.tile("houses", z, *t) for t in row}
    basemap = {t: service.tile("basemap", z, *t) for t in row}
    assert all(r.built for r in first.values()) and service.cache.count() == 2 * len(row)
    # another process edits one house at the east end
    with open_store(tmp_path / "data") as writer:
        report = writer.write_features(
            Layer("houses", scale_band="1:500"), [FeatureInput("h39", houses[39].geometry, {"floors": 3})]
        )
    assert report.changed_bbox == pytest.approx(houses[39].geometry.bounds)
    touched = tile_of(x0 + 40 * 39 + 10, y0 + 10, z)
    second = {t: service.tile("houses", z, *t) for t in row}
    rebuilt = {t for t, r in second.items() if r.built}
    assert touched in rebuilt and len(rebuilt) <= 2  # the edited house's tile (and a neighbour in its buffer)
    assert all(second[t].etag == first[t].etag for t in row if t not in rebuilt)
    tile = decode(gzip.decompress(second[touched].data))
    floors = {f["properties"]["fid"]: f["properties"]["floors"] for f in tile["houses"]["features"]}
    assert floors["h39"] == 3
    assert service.tile("basemap", z, *touched).built and not service.tile("basemap", z, *row[0]).built
    assert basemap[row[0]].etag == service.tile("basemap", z, *row[0]).etag
    # a deleted layer leaves nothing cached behind
    store.delete_layer("houses")
    with pytest.raises(Exception, match="no tileset"):
        service.tile("houses", z, *row[0])
    assert service.cache.count() == 0
    service.close()
    store.close()


def test_change_log_on_both_backends(store_backend):
    """Every write reports and records the box it touched: new versions and the ones it closed."""
    twin = store_backend
    layer = Layer("lots")
    twin.write_features(layer, [FeatureInput("a", box(0, 0, 10, 10), {}), FeatureInput("b", box(100, 0, 110, 10), {})])
    before = max((c.seq for c in twin.layer_changes(0)), default=0)
    moved = twin.write_features(layer, [FeatureInput("a", box(50, 50, 60, 60), {})])
    assert moved.changed_bbox == (0.0, 0.0, 60.0, 60.0)  # the old place and the new one
    twin.close_features("lots", ["b"])
    changes = twin.layer_changes(before)
    assert [(c.layer, c.version) for c in changes] == [("lots", 2), ("lots", 3)]
    assert changes[0].bbox == pytest.approx((0, 0, 60, 60)) and changes[1].bbox == pytest.approx((100, 0, 110, 10))
    assert twin.layer_versions()["lots"] == 3
    twin.delete_layer("lots")
    assert all(math.isinf(v) for v in twin.layer_changes(before)[-1].bbox)


@pytest.fixture(params=["gpkg", "postgis"])
def store_backend(request, tmp_path):
    url = request.getfixturevalue("postgis_database") if request.param == "postgis" else None
    twin = init_store(tmp_path / "data", "EPSG:4549", url=url)
    yield twin
    twin.close()


# ----- restricted layers ------------------------------------------------------------------------------
def test_restricted_layers_stay_out_of_anonymous_composites(tmp_path):
    store = init_store(tmp_path / "data", "EPSG:4549")
    x0, y0 = 386_000.0, 3_547_000.0
    line = shapely.LineString([(x0, y0), (x0 + 80, y0 + 5)])
    store.write_features(Layer("water_pipes", kind="pipe_network"), [FeatureInput("w1", line, {})])
    gas = Layer("gas_pipes", kind="pipe_network", metadata={"restricted": True})
    store.write_features(gas, [FeatureInput("g1", shapely.LineString([(x0, y0 + 10), (x0 + 80, y0 + 15)]), {})])
    x, y = tile_of(x0 + 40, y0 + 8, 17)
    with TestClient(create_app(store), raise_server_exceptions=False) as anonymous:
        assert set(decode(anonymous.get(f"/tiles/pipes/17/{x}/{y}.mvt").content)) == {"water_pipes"}
        assert anonymous.get(f"/tiles/gas_pipes/17/{x}/{y}.mvt").status_code == 401
        layers = {entry["id"] for entry in anonymous.get("/tiles/pipes/tilejson.json").json()["vector_layers"]}
        assert layers == {"water_pipes"}
    store.close()


# ----- both backends -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def postgis_twin(demo, postgis_cluster) -> Store:
    """The demo's buildings (with their history), water network and drainage nodes on PostGIS."""
    from tests.postgis_cluster import TEMPLATE

    url = postgis_cluster.create_database("vector_tiles_demo", template=TEMPLATE)
    sources = demo[0].parent / "sources"
    manifest = json.loads((sources / "manifest.json").read_text())
    wanted = {"buildings_500", "buildings_planned", "landuse_500", "water_pipes", "water_nodes", "drainage_nodes"}
    manifest["layers"] = [entry for entry in manifest["layers"] if entry["id"] in wanted]
    twin = init_store(demo[0].parent / "pg-data", manifest["crs"], url=url)
    load_manifest(twin, sources, manifest)
    yield twin
    twin.close()
    postgis_cluster.drop_database("vector_tiles_demo")


def test_postgis_and_geopackage_tiles_have_the_same_features(store, postgis_twin, demo):
    embedded = TileService(store, cache_path=demo[0].parent / "cache-gpkg.sqlite", check_interval=0)
    server = TileService(postgis_twin, cache_path=demo[0].parent / "cache-pg.sqlite", check_interval=0)
    layers = ["buildings_500", "landuse_500", "water_pipes", "water_nodes", "drainage_nodes"]
    (cx, cy), compared = centre(demo[1], "core_bbox"), 0
    for z in (13, 15, 17, 18):
        x, y = tile_of(cx, cy, z)
        for name in layers:
            a = decode(gzip.decompress(embedded.tile(name, z, x, y).data))
            b = decode(gzip.decompress(server.tile(name, z, x, y).data))
            features_a = {f["properties"]["fid"]: f for f in a.get(name, {}).get("features", [])}
            features_b = {f["properties"]["fid"]: f for f in b.get(name, {}).get("features", [])}
            assert set(features_a) == set(features_b), (name, z)
            for fid, feature in features_a.items():
                other = features_b[fid]
                assert feature["properties"] == other["properties"]
                assert feature["geometry"]["type"] == other["geometry"]["type"]
                ga, gb = shapely.geometry.shape(feature["geometry"]), shapely.geometry.shape(other["geometry"])
                assert ga.hausdorff_distance(gb) <= PIXEL, (name, z, fid)
            compared += len(features_a)
    x, y = tile_of(*centre(demo[1], "core_bbox"), 18)
    past = [decode(gzip.decompress(s.tile("buildings_500", 18, x, y, time=_past()).data)) for s in (embedded, server)]
    assert fids(past[0], "buildings_500") == fids(past[1], "buildings_500")
    assert compared > 2000
    embedded.close()
    server.close()


def _past():
    from twin.model import TimeFilter

    return TimeFilter.parse(PAST)


# ----- cached tiles before routing ----------------------------------------------------------------
def _asgi_get(app, middleware, path: str, headers: list[tuple[bytes, bytes]]) -> tuple[list[dict], list[str]]:
    """One GET through a middleware whose inner app only records that it was reached."""
    import asyncio

    reached: list[str] = []

    async def inner(scope, receive, send):
        reached.append(scope["path"])

    sent: list[dict] = []

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    scope = {
        "type": "http", "method": "GET", "path": path, "raw_path": path.encode(), "query_string": b"",
        "headers": headers, "http_version": "1.1", "scheme": "http", "server": ("testserver", 80),
        "client": ("127.0.0.1", 1), "root_path": "", "app": app,
    }  # fmt: skip
    asyncio.run(middleware(inner)(scope, receive, send))
    return sent, reached


def test_cached_tiles_are_answered_before_routing(client, demo, monkeypatch):
    from twin.api.tiles import CachedTileMiddleware

    x, y = tile_of(*centre(demo[1]), 17)
    path = f"/tiles/pipes/17/{x}/{y}.mvt"
    routed = client.get(path, headers={"Accept-Encoding": "gzip"})
    assert routed.status_code == 200
    app = client.app
    for outermost in (False, True):
        monkeypatch.setattr("twin.api.tiles.access_log.isEnabledFor", lambda level: False)
        sent, reached = _asgi_get(
            app,
            lambda inner, o=outermost: CachedTileMiddleware(inner, outermost=o),
            path,
            [(b"accept-encoding", b"gzip")],
        )
        assert not reached and sent[0]["status"] == 200
        headers = dict(sent[0]["headers"])
        assert headers[b"etag"].decode() == routed.headers["etag"]
        assert decode(gzip.decompress(sent[1]["body"])) == decode(routed.content)
        if outermost:  # what the stack it skipped would have added
            assert headers[b"vary"] == b"Accept-Encoding, Origin" and len(headers[b"x-request-id"]) == 32
        # not cached, a key, or (outermost) the access log on: the request goes on to the app
        _, reached = _asgi_get(
            app, lambda inner, o=outermost: CachedTileMiddleware(inner, o), f"/tiles/pipes/17/{x}/{y + 9}.mvt", []
        )
        assert reached
        _, reached = _asgi_get(
            app, lambda inner, o=outermost: CachedTileMiddleware(inner, o), path, [(b"authorization", b"Bearer k")]
        )
        assert reached
    monkeypatch.setattr("twin.api.tiles.access_log.isEnabledFor", lambda level: True)
    _, reached = _asgi_get(app, lambda inner: CachedTileMiddleware(inner, outermost=True), path, [])
    assert reached


def test_basemap_zoom_ranges_are_configurable(store, demo, monkeypatch, tmp_path):
    from twin.model import InvalidInput

    x, y = tile_of(*centre(demo[1]), 16)
    ids = {band: {f.fid for f in store.query(f"buildings_{band}", limit=None).features} for band in ("2000", "10000")}

    def buildings_at_16() -> set[str]:
        service = TileService(store, cache_path=tmp_path / f"cache-{len(list(tmp_path.iterdir()))}.sqlite")
        try:
            return fids(decode(gzip.decompress(service.tile("basemap", 16, x, y).data)), "buildings")
        finally:
            service.close()

    default = buildings_at_16()
    assert default and default <= ids["2000"]
    monkeypatch.setenv("TWIN_BASEMAP_ZOOMS", "1:10000=0-16, 1:2000=17-17")
    moved = buildings_at_16()
    assert moved and moved <= ids["10000"]
    monkeypatch.setenv("TWIN_BASEMAP_ZOOMS", "1:10000=0-16,1:2000=16-17")
    with pytest.raises(InvalidInput, match="overlap"):
        buildings_at_16()
    monkeypatch.setenv("TWIN_BASEMAP_ZOOMS", "1:5000=0-3")
    with pytest.raises(InvalidInput, match="1:5000"):
        buildings_at_16()
