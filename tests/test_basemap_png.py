"""PNG tiles drawn from the vector tilesets: `/tiles/{tileset}/{z}/{x}/{y}.png` over the demo twin.

References are independent of the renderer: tile bounds from the closed-form WebMercatorQuad
grid, feature geometries from the store projected to pixels with pyproj, and colours read
straight from `styles/basemap.json`.
"""

from __future__ import annotations

import io
import json
import shutil
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyproj
import pytest
import shapely
from fastapi.testclient import TestClient
from PIL import Image
from shapely.geometry import box

from tests.demo_twin import shared_demo
from tiles.vector.mapstyle import Context, evaluate, parse_colour
from twin.api.app import create_app
from twin.model import BBox, TimeFilter
from twin.store import open_store

WORLD = 20037508.342789244
TO_MERCATOR = pyproj.Transformer.from_crs("EPSG:4549", "EPSG:3857", always_xy=True)
STYLE = json.loads((Path(__file__).resolve().parents[1] / "styles" / "basemap.json").read_text())
BEFORE_THE_REST = "2018-01-01T00:00:00Z"  # the 1:500 buildings exist, the other 1:500 layers not yet
Z = 19  # in the 1:500 band (z18 and finer)
BAND_500 = tuple(f"{c}_500" for c in ("buildings", "green", "landuse", "parcels", "road_centrelines", "roads", "water"))


# ----- independent references --------------------------------------------------------------------
def bounds_of(z: int, x: int, y: int) -> tuple[float, float, float, float]:
    size = 2 * WORLD / 2**z
    return (-WORLD + x * size, WORLD - (y + 1) * size, -WORLD + (x + 1) * size, WORLD - y * size)


def tile_of(x: float, y: float, z: int) -> tuple[int, int]:
    mx, my = TO_MERCATOR.transform(x, y)
    size = 2 * WORLD / 2**z
    return int((mx + WORLD) // size), int((WORLD - my) // size)


def to_pixels(geom, z: int, x: int, y: int, size: int = 256):
    """A project-CRS geometry in the tile's pixel space (y down)."""
    minx, _, maxx, maxy = bounds_of(z, x, y)
    scale = size / (maxx - minx)

    def project(coords: np.ndarray) -> np.ndarray:
        mx, my = TO_MERCATOR.transform(coords[:, 0], coords[:, 1])
        return np.column_stack(((np.asarray(mx) - minx) * scale, (maxy - np.asarray(my)) * scale))

    return shapely.transform(geom, project)


def style_fill(layer_id: str, properties: dict) -> tuple[int, int, int]:
    """The fill colour the style gives these properties (a constant or a `match` on a property)."""
    paint = next(layer for layer in STYLE["layers"] if layer["id"] == layer_id)["paint"]["fill-color"]
    if isinstance(paint, list):
        assert paint[0] == "match" and paint[1][0] == "get", "the test reads constant or match colours"
        value, pairs, paint = properties.get(paint[1][1]), paint[2:-1], paint[-1]
        for label, out in zip(pairs[::2], pairs[1::2], strict=True):
            if value == label or (isinstance(label, list) and value in label):
                paint = out
                break
    digits = paint.lstrip("#")
    return tuple(int(digits[i : i + 2], 16) for i in (0, 2, 4))


def background() -> tuple[int, int, int]:
    colour = next(layer for layer in STYLE["layers"] if layer["type"] == "background")["paint"]["background-color"]
    return tuple(int(colour.lstrip("#")[i : i + 2], 16) for i in (0, 2, 4))


def sample_points(area, count: int = 60) -> np.ndarray:
    """Pixel positions (x, y) of a grid over `area` whose pixel centres lie inside it."""
    minx, miny, maxx, maxy = area.bounds
    xs, ys = np.meshgrid(np.arange(int(minx), int(maxx) + 1), np.arange(int(miny), int(maxy) + 1))
    grid = np.column_stack((xs.ravel(), ys.ravel()))
    inside = grid[shapely.contains_xy(area, grid[:, 0] + 0.5, grid[:, 1] + 0.5)]
    step = max(1, len(inside) // count)
    return inside[::step]


def rgba(response) -> np.ndarray:
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    return np.asarray(Image.open(io.BytesIO(response.content)).convert("RGBA"), dtype=np.int16)


def colours_at(image: np.ndarray, points: np.ndarray) -> np.ndarray:
    return image[points[:, 1], points[:, 0]]


# ----- fixtures ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the demo twin: a test edits a building."""
    target = tmp_path_factory.mktemp("basemap-png") / "twin-data"
    shutil.copytree(shared_demo(tmp_path_factory), target, ignore=shutil.ignore_patterns("sources"))
    return target


@pytest.fixture(scope="module")
def store(data: Path):
    twin = open_store(data)
    yield twin
    twin.close()


@pytest.fixture(scope="module")
def client(store):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TWIN_TILE_CHECK_INTERVAL", "0")  # a write shows in the next tile
        with TestClient(create_app(store)) as test_client:
            yield test_client


@pytest.fixture(scope="module")
def building(store) -> dict:
    """The largest 1:500 building already standing in 2018 (drawn opaque: no `coverage`), its
    tile at Z, and every 1:500 building of that tile then."""
    then = TimeFilter.parse(BEFORE_THE_REST)
    layer = store.get_layer("buildings_500")
    candidates = [f for f in store.iter_features("buildings_500", time=then) if "coverage" not in f.properties]
    chosen = max(candidates, key=lambda f: f.geometry.area)
    x, y = tile_of(*chosen.geometry.centroid.coords[0], Z)
    region = BBox(*layer.bbox)
    others = {lid: sum(1 for _ in store.iter_features(lid, bbox=region, time=then)) for lid in BAND_500[1:]}
    assert not any(others.values()), f"the other 1:500 layers should start later: {others}"
    near = [f.geometry for f in store.iter_features("buildings_500", time=then)]
    return {"feature": chosen, "x": x, "y": y, "all": near}


# ----- tests -------------------------------------------------------------------------------------
def test_a_building_shows_in_the_styles_colour_where_its_geometry_is_and_background_elsewhere(client, building):
    feature, x, y = building["feature"], building["x"], building["y"]
    tile = box(0, 0, 256, 256)
    inside = to_pixels(feature.geometry, Z, x, y).buffer(-3).intersection(tile.buffer(-1))
    assert inside.area > 20, "the building covers a good part of its tile"
    points = sample_points(inside)
    expected = style_fill("buildings", feature.properties)

    then = rgba(client.get(f"/tiles/basemap/{Z}/{x}/{y}.png", params={"datetime": BEFORE_THE_REST}))
    assert then.shape == (256, 256, 4)
    found = colours_at(then, points)
    assert np.abs(found[:, :3] - expected).max() <= 2 and (found[:, 3] == 255).all()

    buildings = shapely.union_all([to_pixels(g, Z, x, y) for g in building["all"]]).buffer(4)
    elsewhere = sample_points(tile.buffer(-1).difference(buildings), 200)
    assert len(elsewhere) > 20, "part of the tile is clear of buildings"
    assert np.abs(colours_at(then, elsewhere)[:, :3] - background()).max() <= 2
    assert (np.abs(then[..., :3] - expected).max(axis=2) <= 2).sum() > 0.5 * inside.area  # no colour elsewhere

    now = rgba(client.get(f"/tiles/basemap/{Z}/{x}/{y}.png"))  # land use and roads now drawn under it
    assert np.abs(colours_at(now, points)[:, :3] - expected).max() <= 2
    assert np.abs(colours_at(now, elsewhere)[:, :3] - background()).max(axis=1).mean() > 3

    hidpi = rgba(client.get(f"/tiles/basemap/{Z}/{x}/{y}@2x.png", params={"datetime": BEFORE_THE_REST}))
    assert hidpi.shape == (512, 512, 4)
    assert np.abs(colours_at(hidpi, points * 2 + 1)[:, :3] - expected).max() <= 2


def test_an_empty_tile_is_a_transparent_png_with_an_etag(client):
    for suffix, size in ((".png", 256), ("@2x.png", 512)):
        response = client.get(f"/tiles/basemap/18/0/0{suffix}")
        image = rgba(response)
        assert image.shape == (size, size, 4) and (image[..., 3] == 0).all()
        assert response.headers["etag"] and "max-age" in response.headers["cache-control"]
    long_ago = rgba(client.get("/tiles/basemap/19/436000/213000.png", params={"datetime": "1990-01-01T00:00:00Z"}))
    assert (long_ago[..., 3] == 0).all()


def test_etag_answers_304_and_stays_the_same_across_requests(client, building):
    path = f"/tiles/basemap/{Z}/{building['x']}/{building['y']}.png"
    first = client.get(path)
    etag = first.headers["etag"]
    assert etag.startswith('"') and first.headers["cache-control"].startswith("public, max-age=")
    again = client.get(path)
    assert again.headers["etag"] == etag and again.content == first.content
    unchanged = client.get(path, headers={"If-None-Match": etag})
    assert unchanged.status_code == 304 and unchanged.content == b""
    assert client.get(path, headers={"If-None-Match": '"other"'}).status_code == 200
    assert client.head(path).status_code == 200


@pytest.mark.parametrize(
    ("path", "status", "words"),
    [
        ("/tiles/basemap/23/0/0.png", 404, "zoom"),
        ("/tiles/basemap/5/32/0.png", 400, "outside the WebMercatorQuad matrix"),
        ("/tiles/basemap/5/0/-1.png", 400, "outside the WebMercatorQuad matrix"),
        ("/tiles/basemap/z/0/0.png", 400, "'z'"),
        ("/tiles/no_such_layer/5/0/0.png", 404, "no tileset"),
        ("/tiles/dem/5/0/0.png", 404, "no vector tiles"),
        ("/tiles/basemap/5/0/0.png?datetime=yesterday", 400, "datetime"),
        ("/tiles/basemap/5/0/0@2x.png?scenario=future", 400, "scenario"),
        ("/tiles/no_such_layer/png/tilejson.json", 404, "no tileset"),
    ],
)
def test_bad_requests_get_problem_json(client, path, status, words):
    response = client.get(path)
    assert response.status_code == status and response.headers["content-type"] == "application/problem+json"
    assert words in response.json()["detail"]


def test_the_basemap_tilejson_gives_each_scale_band_its_configured_zooms(store, monkeypatch):
    document = TestClient(create_app(store)).get("/tiles/basemap/png/tilejson.json").json()
    assert document["tiles"][0].endswith("/tiles/basemap/{z}/{x}/{y}.png") and document["style"] == "basemap"
    bands = {b["band"]: (b["minzoom"], b["maxzoom"]) for b in document["scale_bands"]}
    assert bands == {"1:10000": (0, 15), "1:2000": (16, 17), "1:500": (18, 22)}
    assert next(b for b in document["scale_bands"] if b["band"] == "1:500")["layers"] == list(BAND_500)
    monkeypatch.setenv("TWIN_BASEMAP_ZOOMS", "1:10000=0-14,1:2000=15-16,1:500=17-21")
    changed = TestClient(create_app(store)).get("/tiles/basemap/png/tilejson.json").json()
    bands = {b["band"]: (b["minzoom"], b["maxzoom"]) for b in changed["scale_bands"]}
    assert bands == {"1:10000": (0, 14), "1:2000": (15, 16), "1:500": (17, 21)} and changed["maxzoom"] == 21


def test_pipes_are_drawn_in_their_class_colours_on_a_transparent_ground(client, store):
    pipe = next(store.iter_features("water_pipes", page=1))
    x, y = tile_of(*pipe.geometry.interpolate(0.5, normalized=True).coords[0], 18)
    image = rgba(client.get(f"/tiles/water_pipes/18/{x}/{y}.png"))
    line = to_pixels(pipe.geometry, 18, x, y).buffer(6)
    far = sample_points(box(0, 0, 256, 256).difference(line.buffer(30)), 50)
    assert (image[..., 3] > 0).any()
    water = np.array(parse_colour("rgb(0,255,255)")[:3])  # CJJ 61 water supply
    drawn = image[image[..., 3] == 255][:, :3]
    assert (np.abs(drawn - water).max(axis=1) <= 40).any()
    assert len(far) == 0 or (colours_at(image, far)[:, 3] == 0).mean() > 0.5


def test_an_edit_drops_the_png_tiles_it_touches_and_redraws_them(client, store, data, building):
    feature, x, y = building["feature"], building["x"], building["y"]
    far_x, far_y = x + 40, y + 40
    path = f"/tiles/basemap/{Z}/{x}/{y}.png"
    before = client.get(path)
    client.get(f"/tiles/basemap/{Z}/{far_x}/{far_y}.png")
    cache = sqlite3.connect(data / "cache" / "vector_tiles.sqlite")

    def cached(tx: int, ty: int) -> int:
        sql = "SELECT count(*) FROM tiles WHERE tileset LIKE '%/png1/%' AND z = ? AND x = ? AND y = ? AND variant = ''"
        return cache.execute(sql, (Z, tx, ty)).fetchone()[0]

    assert cached(x, y) == 1 and cached(far_x, far_y) == 1
    store.close_features("buildings_500", [feature.fid], at=datetime.now(UTC))
    after = client.get(path)
    assert after.headers["etag"] != before.headers["etag"]
    assert cached(far_x, far_y) == 1, "a tile away from the edit stays cached"
    points = sample_points(to_pixels(feature.geometry, Z, x, y).buffer(-3).intersection(box(1, 1, 255, 255)))
    expected = style_fill("buildings", feature.properties)
    assert np.abs(colours_at(rgba(before), points)[:, :3] - expected).max() <= 2
    assert (np.abs(colours_at(rgba(after), points)[:, :3] - expected).max(axis=1) > 2).all()
    assert client.get(path, headers={"If-None-Match": before.headers["etag"]}).status_code == 200
    cache.close()


def test_style_expressions_follow_maplibre():
    at = Context(zoom=15.0, properties={"class": "primary", "use": "industrial"}, geometry_type="LineString")
    width = ["interpolate", ["exponential", 1.6], ["zoom"], 14, 2, 16, 10]
    t = (1.6 ** (15 - 14) - 1) / (1.6 ** (16 - 14) - 1)  # the style spec's exponential interpolation
    assert evaluate(width, at) == pytest.approx(2 + t * 8)
    assert evaluate(["match", ["get", "class"], ["primary", "trunk"], 3, 1], at) == 3
    assert evaluate(["case", ["has", "coverage"], 0.5, 1], at) == 1
    assert evaluate(["==", ["geometry-type"], "LineString"], at) is True
    assert evaluate({"stops": [[10, 1], [20, 11]]}, at) == pytest.approx(6)
    assert parse_colour("rgba(255,255,255,0.5)") == (255, 255, 255, 128)
    assert parse_colour("#abc") == (0xAA, 0xBB, 0xCC, 255)
