"""Quantized-mesh terrain over the demo district, read back with decoders written from the spec.

Every tile is decoded here from the quantized-mesh-1.0 specification (and cross-checked with the
`quantized-mesh-tile` package), then compared with the DEM read by rasterio and reprojected by
pyproj directly: vertex heights, the surface between vertices (within Cesium's geometric error
for the zoom), shared edges of neighbouring tiles, header volumes, normals, availability and
the HTTP behaviour Cesium relies on.
"""

from __future__ import annotations

import gzip
import io
import json
import math
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from fastapi.testclient import TestClient
from pyproj import Transformer
from scipy.ndimage import map_coordinates

from tests.browser import chromium, open_page, screenshot, wait_for
from twin.api.app import create_app
from twin.store import open_store

NORMALS_ACCEPT = "application/vnd.quantized-mesh;extensions=octvertexnormals,application/octet-stream;q=0.9,*/*;q=0.01"
PLAIN_ACCEPT = "application/vnd.quantized-mesh,application/octet-stream;q=0.9,*/*;q=0.01"
RADII = np.array([6378137.0, 6378137.0, 6356752.3142451793])
E2 = 6.69437999014e-3  # WGS 84 first eccentricity squared


# ----- an independent reader of the format ------------------------------------------------
def zigzag_decode(values: np.ndarray) -> np.ndarray:
    v = values.astype(np.int64)
    return np.cumsum((v >> 1) ^ -(v & 1))


def decode(data: bytes) -> dict:
    """quantized-mesh-1.0 from the specification, written without the server's code."""
    header = struct.unpack_from("<3d2f4d3d", data, 0)
    pos = 88
    (n,) = struct.unpack_from("<I", data, pos)
    pos += 4
    arrays = np.frombuffer(data, "<u2", 3 * n, pos).reshape(3, n)
    pos += 6 * n
    u, v, h = (zigzag_decode(a) for a in arrays)
    wide = n > 65536
    size, kind = (4, "<u4") if wide else (2, "<u2")
    if pos % size:
        pos += size - pos % size
    (triangles,) = struct.unpack_from("<I", data, pos)
    pos += 4
    codes = np.frombuffer(data, kind, 3 * triangles, pos).astype(np.int64)
    pos += 3 * triangles * size
    indices, highest = np.empty_like(codes), 0
    for i, code in enumerate(codes):
        indices[i] = highest - code
        highest += code == 0
    edges = {}
    for name in ("west", "south", "east", "north"):
        (count,) = struct.unpack_from("<I", data, pos)
        pos += 4
        edges[name] = np.frombuffer(data, kind, count, pos).astype(np.int64)
        pos += count * size
    extensions = {}
    while pos < len(data):
        ext_id, length = struct.unpack_from("<BI", data, pos)
        pos += 5
        extensions[ext_id] = data[pos : pos + length]
        pos += length
    assert pos == len(data)
    return {
        "center": np.array(header[0:3]),
        "min_height": header[3],
        "max_height": header[4],
        "sphere_center": np.array(header[5:8]),
        "sphere_radius": header[8],
        "occlusion": np.array(header[9:12]),
        "u": u,
        "v": v,
        "h": h,
        "triangles": indices.reshape(-1, 3),
        "edges": edges,
        "extensions": extensions,
    }


def tile_bounds(z: int, x: int, y: int) -> tuple[float, float, float, float]:
    size = 180.0 / 2**z
    return -180 + x * size, -90 + y * size, -180 + (x + 1) * size, -90 + (y + 1) * size


def vertices(tile: dict, z: int, x: int, y: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    west, south, east, north = tile_bounds(z, x, y)
    lon = west + tile["u"] / 32767 * (east - west)
    lat = south + tile["v"] / 32767 * (north - south)
    height = tile["min_height"] + tile["h"] / 32767 * (tile["max_height"] - tile["min_height"])
    return lon, lat, height


def quantum(tile: dict) -> float:
    """Height resolution of a tile (plus float32 rounding of the header's heights)."""
    return (tile["max_height"] - tile["min_height"]) / 32767 + 1e-4 * max(1.0, abs(tile["max_height"]))


def geodetic_to_ecef(lon, lat, h) -> np.ndarray:
    lam, phi = np.radians(lon), np.radians(lat)
    n = RADII[0] / np.sqrt(1 - E2 * np.sin(phi) ** 2)
    return np.column_stack(
        [(n + h) * np.cos(phi) * np.cos(lam), (n + h) * np.cos(phi) * np.sin(lam), (n * (1 - E2) + h) * np.sin(phi)]
    )


def cesium_level_error(z: int) -> float:
    """CesiumTerrainProvider: maximumRadius * 2pi * 0.25 / (65 * 2) / 2^z."""
    return 6378137.0 * 2 * math.pi * 0.25 / (65 * 2) / 2**z


def tiles_over(bbox: list[float], z: int) -> tuple[range, range]:
    size = 180.0 / 2**z
    xs = range(math.floor((bbox[0] + 180) / size), math.floor((bbox[2] + 180) / size) + 1)
    ys = range(math.floor((bbox[1] + 90) / size), math.floor((bbox[3] + 90) / size) + 1)
    return xs, ys


# ----- the demo twin, served ----------------------------------------------------------------
@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("terrain-demo") / "twin-data"
    result = subprocess.run(
        [sys.executable, "-c", "from twin.cli import main; main()", "demo", "--no-serve", "--data", str(data)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    return data


@pytest.fixture(scope="module")
def manifest(demo: Path) -> dict:
    return json.loads((demo / "sources" / "manifest.json").read_text())


@pytest.fixture(scope="module")
def store(demo: Path):
    twin = open_store(demo)
    yield twin
    twin.close()


@pytest.fixture(scope="module")
def client(store):
    with TestClient(create_app(store)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def layer(client) -> dict:
    response = client.get("/terrain/layer.json")
    assert response.status_code == 200
    return response.json()


class Reference:
    """The DEM as rasterio reads it, sampled bilinearly at lon/lat reprojected by pyproj."""

    def __init__(self, path: str, crs: str, offset: float) -> None:
        self.offset = offset
        self.to_grid = Transformer.from_crs("EPSG:4490", crs, always_xy=True)
        self.levels = []
        with rasterio.open(path) as src:
            overviews = len(src.overviews(1))
            self.levels.append((src.read(1).astype(float), src.transform, src.nodata))
        for i in range(overviews):
            with rasterio.open(path, overview_level=i) as src:
                self.levels.append((src.read(1).astype(float), src.transform, src.nodata))

    def heights(self, lon, lat, resolution: float | None = None) -> np.ndarray:
        """Ellipsoidal heights from the coarsest level not coarser than `resolution` (default full)."""
        fitting = [lv for lv in self.levels if resolution is not None and abs(lv[1].a) <= resolution]
        data, transform, nodata = max(fitting, key=lambda lv: abs(lv[1].a)) if fitting else self.levels[0]
        x, y = self.to_grid.transform(np.asarray(lon), np.asarray(lat))
        col = (x - transform.c) / transform.a - 0.5
        row = (y - transform.f) / transform.e - 0.5
        inside = (col >= 0) & (col <= data.shape[1] - 1) & (row >= 0) & (row <= data.shape[0] - 1)
        values = map_coordinates(data, [row, col], order=1, mode="nearest")
        assert nodata is None or not (values[inside] == nodata).any()
        return np.where(inside, values + self.offset, np.nan)


@pytest.fixture(scope="module")
def reference(store, manifest) -> Reference:
    raster = store.get_layer("dem").metadata["raster"]
    return Reference(str(store.assets.open_path(raster["asset"])), manifest["crs"], manifest["geoid_offset"])


def get_tile(client, layer: dict, z: int, x: int, y: int, normals: bool = True) -> dict:
    response = client.get(
        f"/terrain/{z}/{x}/{y}.terrain?v={layer['version']}",
        headers={"Accept": NORMALS_ACCEPT if normals else PLAIN_ACCEPT},
    )
    assert response.status_code == 200, response.text
    tile = decode(response.content)
    tile["raw"] = response.content
    return tile


def inner_tile(layer: dict, manifest: dict, z: int) -> tuple[int, int]:
    """A tile at zoom z lying wholly inside the DEM, near the district centre."""
    bbox = manifest["bbox_lonlat"]
    xs, ys = tiles_over(bbox, z)
    candidates = [
        (x, y)
        for x in xs
        for y in ys
        if tile_bounds(z, x, y)[0] > bbox[0]
        and tile_bounds(z, x, y)[2] < bbox[2]
        and tile_bounds(z, x, y)[1] > bbox[1]
        and tile_bounds(z, x, y)[3] < bbox[3]
    ]
    assert candidates, f"no tile at zoom {z} inside the district"
    return candidates[len(candidates) // 2]


# ----- layer.json ---------------------------------------------------------------------------
def test_layer_json_describes_cesium_terrain_covering_the_district(layer, manifest):
    assert layer["tilejson"] == "2.1.0"
    assert layer["format"] == "quantized-mesh-1.0"
    assert layer["scheme"] == "tms"
    assert layer["projection"] == "EPSG:4326"
    assert layer["tiles"] == ["{z}/{x}/{y}.terrain?v={version}"]
    assert "octvertexnormals" in layer["extensions"]
    assert layer["minzoom"] == 0 and len(layer["available"]) == layer["maxzoom"] + 1
    assert layer["available"][0] == [{"startX": 0, "startY": 0, "endX": 1, "endY": 0}]
    # the deepest level's sample spacing is about the DEM's 2 m (no deeper, no coarser than 2x)
    spacing = 180 / 2 ** layer["maxzoom"] / 64 * math.pi * 6378137 / 180 * math.cos(math.radians(32.05))
    assert 1.0 < spacing < 2 * 2.0 * math.sqrt(2)
    west, south, east, north = manifest["bbox_lonlat"]
    b = layer["bounds"]  # the DEM square's lon/lat envelope: it holds the district, turned by grid convergence
    assert b[0] <= west + 1e-6 and b[1] <= south + 1e-6 and b[2] >= east - 1e-6 and b[3] >= north - 1e-6
    assert b == pytest.approx([west, south, east, north], abs=5e-4)
    for z in range(1, layer["maxzoom"] + 1):
        xs, ys = tiles_over(manifest["bbox_lonlat"], z)
        ranges = layer["available"][z]
        for x in xs:
            for y in ys:
                assert any(r["startX"] <= x <= r["endX"] and r["startY"] <= y <= r["endY"] for r in ranges), (z, x, y)
        # and nothing far beyond the district is claimed
        assert all(r["endX"] - r["startX"] <= len(xs) and r["endY"] - r["startY"] <= len(ys) for r in ranges)


# ----- heights -----------------------------------------------------------------------------
def test_vertex_heights_equal_the_dem_plus_geoid_offset(client, layer, manifest, reference):
    z = layer["maxzoom"]
    x, y = inner_tile(layer, manifest, z)
    tile = get_tile(client, layer, z, x, y)
    lon, lat, height = vertices(tile, z, x, y)
    expected = reference.heights(lon, lat)
    assert np.isfinite(expected).all()
    assert len(lon) > 4, "a hilly tile keeps more than its corners"
    assert np.abs(height - expected).max() <= quantum(tile) + 1e-3


def barycentric_heights(tile: dict, z: int, x: int, y: int, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """The mesh surface at points, by locating each point in a triangle (u/v plane)."""
    vlon, vlat, vh = vertices(tile, z, x, y)
    out = np.full(lon.shape, np.nan)
    a, b, c = (tile["triangles"][:, k] for k in range(3))
    for i, (px, py) in enumerate(zip(lon, lat, strict=True)):
        x1, y1, x2, y2, x3, y3 = vlon[a], vlat[a], vlon[b], vlat[b], vlon[c], vlat[c]
        det = (y2 - y3) * (x1 - x3) + (x3 - x2) * (y1 - y3)
        l1 = ((y2 - y3) * (px - x3) + (x3 - x2) * (py - y3)) / det
        l2 = ((y3 - y1) * (px - x3) + (x1 - x3) * (py - y3)) / det
        l3 = 1 - l1 - l2
        inside = (l1 >= -1e-9) & (l2 >= -1e-9) & (l3 >= -1e-9)
        j = np.flatnonzero(inside)[0]
        out[i] = l1[j] * vh[a[j]] + l2[j] * vh[b[j]] + l3[j] * vh[c[j]]
    return out


@pytest.mark.parametrize("depth,where", [(0, "centre"), (0, "corner"), (1, "centre"), (3, "corner"), (5, "centre")])
def test_surface_between_vertices_stays_within_the_level_error(client, layer, manifest, reference, depth, where):
    """Every one of the 65 x 65 samples a tile is built from lies within Cesium's geometric error
    for the zoom of the simplified surface (at zoom z the DEM level used is the coarsest one not
    coarser than the sample spacing); compared wherever the DEM has data."""
    z = layer["maxzoom"] - depth
    west, south, east, north = manifest["bbox_lonlat"]
    point = ((west + east) / 2, (south + north) / 2) if where == "centre" else (west, south)
    size = 180 / 2**z
    x, y = math.floor((point[0] + 180) / size), math.floor((point[1] + 90) / size)
    tile = get_tile(client, layer, z, x, y)
    w, s, e, n = tile_bounds(z, x, y)
    lon, lat = (a.ravel() for a in np.meshgrid(np.linspace(w, e, 65), np.linspace(s, n, 65)))
    spacing = (e - w) / 64 * math.pi * 6378137 / 180 * math.cos(math.radians(lat.mean()))
    expected = reference.heights(lon, lat, resolution=spacing)
    known = np.isfinite(expected)
    assert known.sum() > 200
    surface = barycentric_heights(tile, z, x, y, lon[known], lat[known])
    error = np.abs(surface - expected[known])
    assert error.max() <= cesium_level_error(z) + 2 * quantum(tile)
    assert len(tile["u"]) < 65 * 65, "the mesh is simplified, not the full grid"


def test_triangles_cover_the_tile_once_counter_clockwise(client, layer, manifest):
    z = layer["maxzoom"] - 2
    x, y = inner_tile(layer, manifest, z)
    tile = get_tile(client, layer, z, x, y)
    u, v = tile["u"].astype(float) / 32767, tile["v"].astype(float) / 32767
    a, b, c = (tile["triangles"][:, k] for k in range(3))
    area = ((u[b] - u[a]) * (v[c] - v[a]) - (v[b] - v[a]) * (u[c] - u[a])) / 2
    assert (area > 0).all()
    assert area.sum() == pytest.approx(1.0, abs=1e-9)
    assert tile["triangles"].max() == len(u) - 1


def test_edge_lists_name_exactly_the_vertices_on_each_edge(client, layer, manifest):
    z = layer["maxzoom"]
    x, y = inner_tile(layer, manifest, z)
    tile = get_tile(client, layer, z, x, y)
    u, v = tile["u"], tile["v"]
    for name, on_edge in (("west", u == 0), ("south", v == 0), ("east", u == 32767), ("north", v == 32767)):
        assert sorted(tile["edges"][name]) == sorted(np.flatnonzero(on_edge)), name


@pytest.mark.parametrize("depth", [0, 3])
def test_neighbouring_tiles_share_their_edge_vertices(client, layer, manifest, depth):
    """No cracks: where two tiles meet, both have the same vertices at the same heights."""
    z = layer["maxzoom"] - depth
    xs, ys = tiles_over(manifest["bbox_lonlat"], z)
    x0, y0 = xs[0], ys[0]  # around the DEM's south-west corner: hills, and the drop to the geoid outside
    block = {(x, y): get_tile(client, layer, z, x, y) for x in (x0 - 1, x0, x0 + 1) for y in (y0 - 1, y0, y0 + 1)}
    shared = 0
    for (x, y), tile in block.items():
        for other_key, mine, theirs in (((x + 1, y), "east", "west"), ((x, y + 1), "north", "south")):
            if other_key not in block:
                continue
            other = block[other_key]
            a = np.column_stack(vertices(tile, z, x, y))[tile["edges"][mine]]
            b = np.column_stack(vertices(other, z, *other_key))[other["edges"][theirs]]
            along = 1 if mine == "east" else 0
            a, b = a[np.argsort(a[:, along])], b[np.argsort(b[:, along])]
            assert a.shape == b.shape, f"{z}/{x}/{y} {mine} edge has {len(a)} vertices, its neighbour {len(b)}"
            assert np.abs(a[:, :2] - b[:, :2]).max() < 1e-12
            assert np.abs(a[:, 2] - b[:, 2]).max() <= quantum(tile) + quantum(other)
            shared += len(a)
    assert shared > 2 * 12 + 10, "more than the tiles' corners are shared"


# ----- header volumes and normals -----------------------------------------------------------
def occluded(camera: np.ndarray, point: np.ndarray) -> bool:
    """Cesium's EllipsoidalOccluder.isScaledSpacePointVisible, negated (scaled-space inputs)."""
    vh2 = camera @ camera - 1.0
    vt = point - camera
    vt_dot_vc = -(vt @ camera)
    return bool(vt_dot_vc > vh2 and vt_dot_vc * vt_dot_vc / (vt @ vt) > vh2)


@pytest.mark.parametrize("zoom", ["max", 12, 6])
def test_bounding_sphere_and_horizon_occlusion_point_hold_every_vertex(client, layer, manifest, zoom):
    z = layer["maxzoom"] if zoom == "max" else zoom
    xs, ys = tiles_over(manifest["bbox_lonlat"], z)
    x, y = xs[0], ys[0]
    tile = get_tile(client, layer, z, x, y)
    lon, lat, height = vertices(tile, z, x, y)
    points = geodetic_to_ecef(lon, lat, height)
    distance = np.linalg.norm(points - tile["sphere_center"], axis=1)
    assert distance.max() <= tile["sphere_radius"] * (1 + 1e-9) + 1e-3
    assert np.linalg.norm(tile["center"] - points.mean(axis=0)) <= tile["sphere_radius"] + 1e-3
    assert tile["min_height"] <= height.min() + 1e-3 and tile["max_height"] >= height.max() - 1e-3

    hop = tile["occlusion"]
    scaled_centre = tile["sphere_center"] / RADII
    assert np.linalg.norm(hop) >= 1.0, "the horizon occlusion point is above the ellipsoid"
    assert np.dot(hop, scaled_centre) / np.linalg.norm(hop) / np.linalg.norm(scaled_centre) > 1 - 1e-9
    # wherever the point is behind the horizon, so is every vertex (Cesium culls the tile then)
    rng = np.random.default_rng(7)
    hidden = 0
    scaled_points = points / RADII
    for _ in range(400):
        direction = rng.normal(size=3)
        camera = direction / np.linalg.norm(direction) * rng.uniform(1.0001, 3.0)
        if occluded(camera, hop):
            hidden += 1
            assert all(occluded(camera, p) for p in scaled_points)
    assert hidden > 20


def oct_decode(data: bytes) -> np.ndarray:
    xy = np.frombuffer(data, np.uint8).reshape(-1, 2).astype(float) / 255 * 2 - 1
    z = 1 - np.abs(xy).sum(axis=1)
    fold = z < 0
    sign = np.where(xy >= 0, 1.0, -1.0)
    xy[fold] = ((1 - np.abs(xy[:, ::-1])) * sign)[fold]
    return np.column_stack([xy, z])


def test_normals_are_sent_when_asked_and_follow_the_slope(client, layer, manifest, reference):
    z = layer["maxzoom"]
    x, y = inner_tile(layer, manifest, z)
    plain = get_tile(client, layer, z, x, y, normals=False)
    assert plain["extensions"] == {}
    tile = get_tile(client, layer, z, x, y)
    assert set(tile["extensions"]) == {1}
    raw = oct_decode(tile["extensions"][1])
    assert raw.shape == (len(tile["u"]), 3)
    length = np.linalg.norm(raw, axis=1)
    assert (length > 0.55).all() and (length <= 1.0 + 1e-9).all()  # octahedron surface, before normalising
    normals = raw / length[:, None]
    assert np.allclose(np.linalg.norm(normals, axis=1), 1.0)

    # the DEM's own gradient at each vertex (central differences over 2 m), as an ECEF normal
    lon, lat, _ = vertices(tile, z, x, y)
    dlat = 2.0 / (math.pi * 6378137 / 180)
    dlon = dlat / np.cos(np.radians(lat))
    dx = (reference.heights(lon + dlon, lat) - reference.heights(lon - dlon, lat)) / 4
    dy = (reference.heights(lon, lat + dlat) - reference.heights(lon, lat - dlat)) / 4
    lam, phi = np.radians(lon), np.radians(lat)
    east = np.column_stack([-np.sin(lam), np.cos(lam), np.zeros_like(lam)])
    north = np.column_stack([-np.sin(phi) * np.cos(lam), -np.sin(phi) * np.sin(lam), np.cos(phi)])
    up = np.column_stack([np.cos(phi) * np.cos(lam), np.cos(phi) * np.sin(lam), np.sin(phi)])
    expected = -dx[:, None] * east - dy[:, None] * north + up
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    angle = np.degrees(np.arccos(np.clip((normals * expected).sum(axis=1), -1, 1)))
    assert np.median(angle) < 2.0 and np.percentile(angle, 95) < 6.0
    tilt = np.degrees(np.arccos(np.clip((normals * up).sum(axis=1), -1, 1)))
    assert tilt.max() > 0.5, "the district has slopes, so some normals lean away from the vertical"


# ----- outside the DEM, errors, HTTP ----------------------------------------------------------
@pytest.mark.parametrize("z,x,y", [(0, 0, 0), (0, 1, 0), (5, 3, 7), ("max", 0, 0)])
def test_a_tile_away_from_the_dem_is_the_flat_geoid(client, layer, manifest, z, x, y):
    z = layer["maxzoom"] if z == "max" else z
    tile = get_tile(client, layer, z, x, y)
    _, _, height = vertices(tile, z, x, y)
    assert tile["min_height"] == tile["max_height"] == pytest.approx(manifest["geoid_offset"], abs=1e-6)
    assert np.allclose(height, manifest["geoid_offset"], atol=1e-6)
    corners = set(zip(tile["u"].tolist(), tile["v"].tolist(), strict=True))
    assert {(0, 0), (32767, 0), (0, 32767), (32767, 32767)} <= corners
    assert len(tile["triangles"]) >= 2


def test_tiles_at_the_dem_border_fall_to_the_geoid_outside_it(client, layer, manifest, reference):
    z = layer["maxzoom"] - 4
    xs, ys = tiles_over(manifest["bbox_lonlat"], z)
    tile = get_tile(client, layer, z, xs[0], ys[0])
    lon, lat, height = vertices(tile, z, xs[0], ys[0])
    west, south = manifest["bbox_lonlat"][:2]
    outside = (lon < west - 1e-4) | (lat < south - 1e-4)
    assert outside.any() and (~outside).any()
    assert np.allclose(height[outside], manifest["geoid_offset"], atol=quantum(tile))
    assert height[~outside].max() > manifest["geoid_offset"] + 4.0


@pytest.mark.parametrize(
    "path,status",
    [
        ("/terrain/{deeper}/0/0.terrain", 404),
        ("/terrain/-1/0/0.terrain", 400),
        ("/terrain/1/4/0.terrain", 404),
        ("/terrain/1/0/2.terrain", 404),
        ("/terrain/2/-3/0.terrain", 400),
        ("/terrain/a/0/0.terrain", 400),
        ("/terrain/3/0/1.5.terrain", 400),
    ],
)
def test_bad_tile_indices_are_problems(client, layer, path, status):
    response = client.get(path.format(deeper=layer["maxzoom"] + 1))
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == status and problem["detail"]


def test_tiles_are_gzipped_with_strong_etags(client, layer, manifest):
    z = layer["maxzoom"]
    x, y = inner_tile(layer, manifest, z)
    url = f"/terrain/{z}/{x}/{y}.terrain?v={layer['version']}"
    zipped = client.get(url, headers={"Accept": NORMALS_ACCEPT, "Accept-Encoding": "gzip"})
    assert zipped.headers["content-encoding"] == "gzip"
    assert zipped.headers["content-type"] == "application/vnd.quantized-mesh;extensions=octvertexnormals"
    assert "immutable" in zipped.headers["cache-control"]
    assert "Accept" in zipped.headers["vary"] and "Accept-Encoding" in zipped.headers["vary"]
    assert int(zipped.headers["content-length"]) < len(zipped.content)  # httpx unzipped it
    plain = client.get(url, headers={"Accept": NORMALS_ACCEPT, "Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers
    assert plain.content == zipped.content
    with client.stream("GET", url, headers={"Accept": NORMALS_ACCEPT, "Accept-Encoding": "gzip"}) as raw:
        assert gzip.decompress(b"".join(raw.iter_raw())) == plain.content
    etag = zipped.headers["etag"]
    assert etag.startswith('"') and not etag.startswith("W/")
    assert etag != plain.headers["etag"]
    again = client.get(url, headers={"Accept": NORMALS_ACCEPT, "Accept-Encoding": "gzip", "If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    without_normals = client.get(url, headers={"Accept": PLAIN_ACCEPT, "Accept-Encoding": "gzip"})
    assert without_normals.headers["content-type"] == "application/vnd.quantized-mesh"
    assert without_normals.headers["etag"] != etag
    stale = client.get(f"/terrain/{z}/{x}/{y}.terrain?v=old", headers={"Accept": PLAIN_ACCEPT})
    assert "immutable" not in stale.headers["cache-control"]


def test_the_quantized_mesh_tile_package_reads_the_same_tile(client, layer, manifest):
    from quantized_mesh_tile.terrain import TerrainTile

    z = layer["maxzoom"]
    x, y = inner_tile(layer, manifest, z)
    mine = get_tile(client, layer, z, x, y)
    west, south, east, north = tile_bounds(z, x, y)
    theirs = TerrainTile(west=west, south=south, east=east, north=north)
    theirs.fromBytesIO(io.BytesIO(mine["raw"]), hasLighting=True)
    assert theirs.u == mine["u"].tolist() and theirs.v == mine["v"].tolist() and theirs.h == mine["h"].tolist()
    assert theirs.indices == mine["triangles"].ravel().tolist()
    assert theirs.westI == mine["edges"]["west"].tolist() and theirs.northI == mine["edges"]["north"].tolist()
    assert len(theirs.vLight) == len(mine["u"])
    assert theirs.header["minimumHeight"] == pytest.approx(mine["min_height"])


def test_a_new_geoid_offset_moves_the_terrain_and_its_version(store, layer, manifest):
    z = layer["maxzoom"]
    x, y = inner_tile(layer, manifest, z)
    store.set_meta("geoid_offset", "10.95")
    try:
        with TestClient(create_app(store)) as fresh:
            moved_layer = fresh.get("/terrain/layer.json").json()
            assert moved_layer["version"] != layer["version"]
            moved = get_tile(fresh, moved_layer, z, x, y)
    finally:
        store.set_meta("geoid_offset", str(manifest["geoid_offset"]))
    with TestClient(create_app(store)) as back:
        before = get_tile(back, layer, z, x, y)
    assert moved["min_height"] == pytest.approx(before["min_height"] + 10.0, abs=1e-3)
    assert moved["max_height"] == pytest.approx(before["max_height"] + 10.0, abs=1e-3)


def test_closed_form_ecef_matches_pyproj():
    from twin.crs import geodetic_to_ecef

    rng = np.random.default_rng(3)
    lon, lat, h = rng.uniform(-180, 180, 500), rng.uniform(-90, 90, 500), rng.uniform(-500, 9000, 500)
    expected = np.column_stack(Transformer.from_crs("EPSG:4979", "EPSG:4978", always_xy=True).transform(lon, lat, h))
    assert np.abs(geodetic_to_ecef(lon, lat, h) - expected).max() < 1e-6


# ----- CesiumJS reads the terrain (headless Chromium) --------------------------------------
CESIUM_JS = Path(__file__).resolve().parents[1] / "node_modules" / "cesium" / "Build" / "Cesium" / "Cesium.js"
SMOKE_PAGE = """<!doctype html><html><head><meta charset="utf-8"><link rel="icon" href="data:,">
<script>window.CESIUM_BASE_URL = '/static/cesium/';</script>
<script src="/static/cesium/Cesium.js"></script>
<link rel="stylesheet" href="/static/cesium/Widgets/widgets.css">
</head><body style="margin:0"><div id="globe" style="width:960px;height:600px"></div><script>
(async () => {
  try {
    Cesium.Ion.defaultAccessToken = '';
    const terrain = await Cesium.CesiumTerrainProvider.fromUrl('/terrain/', {requestVertexNormals: true});
    const errors = [];
    terrain.errorEvent.addEventListener((e) => errors.push(String(e.message || e)));
    const [point] = await Cesium.sampleTerrainMostDetailed(terrain, [Cesium.Cartographic.fromDegrees(LON, LAT)]);
    const viewer = new Cesium.Viewer('globe', {
      terrainProvider: terrain, baseLayer: false, baseLayerPicker: false, geocoder: false, timeline: false,
      animation: false, homeButton: false, sceneModePicker: false, navigationHelpButton: false,
      fullscreenButton: false, infoBox: false, selectionIndicator: false, msaaSamples: 1,
      contextOptions: {webgl: {preserveDrawingBuffer: true}},
    });
    viewer.scene.fog.enabled = false;
    viewer.scene.globe.baseColor = Cesium.Color.fromCssColorString('#d8d2c4');
    viewer.scene.globe.enableLighting = true;
    viewer.scene.light = new Cesium.DirectionalLight({direction: new Cesium.Cartesian3(0.6, -0.3, -0.75)});
    viewer.scene.verticalExaggeration = 6.0;
    viewer.camera.setView({
      destination: Cesium.Cartesian3.fromDegrees(LON, LAT - 0.02, 1300),
      orientation: {heading: 0.0, pitch: Cesium.Math.toRadians(-35), roll: 0.0},
    });
    let frames = 0;
    viewer.scene.postRender.addEventListener(() => { frames += 1; });
    const start = performance.now();
    let settled = 0;  // tilesLoaded must hold for ten polls in a row, after the first frames
    while (settled < 10 && performance.now() - start < 60000) {
      await new Promise((r) => setTimeout(r, 100));
      settled = frames > 10 && viewer.scene.globe.tilesLoaded ? settled + 1 : 0;
    }
    window.result = {height: point.height, normals: terrain.hasVertexNormals, errors,
                     loaded: viewer.scene.globe.tilesLoaded};
  } catch (e) {
    window.result = {failure: String((e && e.stack) || e)};
  }
})();
</script></body></html>"""


@pytest.fixture(scope="module")
def server(store):
    """The app on a loopback port (uvicorn in a thread), for the browser."""
    import socket
    import threading
    import time

    import uvicorn

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = uvicorn.Config(create_app(store), host="127.0.0.1", port=port, log_level="warning")
    web = uvicorn.Server(config)
    thread = threading.Thread(target=web.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not web.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.1)
    yield f"http://127.0.0.1:{port}"
    web.should_exit = True
    thread.join(timeout=10)


def test_cesium_loads_the_terrain_and_samples_the_dem_height(server, manifest, reference):
    west, south, east, north = manifest["bbox_lonlat"]
    lon, lat = (west + east) / 2 + 0.001234, (south + north) / 2 - 0.000987
    page_html = SMOKE_PAGE.replace("LON", repr(lon)).replace("LAT", repr(lat))
    with chromium(CESIUM_JS) as browser:
        page, recorder = open_page(browser, {"width": 960, "height": 600})
        page.route(f"{server}/smoke.html", lambda route: route.fulfill(body=page_html, content_type="text/html"))
        page.goto(f"{server}/smoke.html")
        wait_for(page, "window.result !== undefined")
        result = page.evaluate("() => window.result")
        if result.get("loaded"):
            screenshot(page, "terrain")
    assert "failure" not in result, result.get("failure")
    recorder.assert_clean()
    assert not result["errors"], result["errors"][:5]
    assert result["normals"] is True, result
    terrain_status = recorder.statuses(".terrain")
    assert terrain_status and set(terrain_status) == {200}
    # Cesium's own decoder and interpolation give the DEM height (ellipsoidal) within the level error
    expected = float(reference.heights(np.array([lon]), np.array([lat]))[0])
    assert result["height"] == pytest.approx(expected, abs=cesium_level_error(17) + 0.05)


def test_a_restricted_dem_needs_a_key(store):
    """Runs last: it changes the DEM layer's version."""
    dem = store.get_layer("dem")
    dem.metadata = {**dem.metadata, "restricted": True}
    store.put_layer(dem)
    try:
        with TestClient(create_app(store)) as anonymous:
            answers = [anonymous.get("/terrain/layer.json"), anonymous.get("/terrain/0/0/0.terrain")]
    finally:
        dem.metadata = {key: value for key, value in dem.metadata.items() if key != "restricted"}
        store.put_layer(dem)
    for response in answers:
        assert response.status_code == 401
        assert response.headers["content-type"] == "application/problem+json"
        assert "restricted" in response.json()["detail"]


def test_a_starting_server_warms_up_the_terrain_encoder(demo):
    """`twin serve`'s app encodes one terrain tile in the background, so that a fresh process has
    the compiled loops loaded before the first viewer asks."""
    code = (
        "import sys\n"
        "from tiles.terrain import mesh\n"
        "from twin.api.app import warm_up\n"
        "from twin.store import open_store\n"
        "before = len(mesh._extract.signatures) + len(mesh._errors.signatures)\n"
        "warm_up(open_store(sys.argv[1]))\n"
        "print(before, len(mesh._extract.signatures) + len(mesh._errors.signatures))\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(demo)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0", "2"]
