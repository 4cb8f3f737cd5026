"""MapLibre styles: the files in styles/, their validity, and `GET /styles/{name}.json`."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import rasterio
from fastapi.testclient import TestClient
from rasterio.transform import from_origin

from ingestion.raster import ingest_raster
from tests.api_fixtures import X0, Y0, building, make_twin
from twin.api.app import create_app
from twin.api.stylebook import BAND_CLASSES, STYLES_DIR, all_styles, style_text
from twin.api.styles import load_style, style_names
from twin.model import Layer

REPO = Path(__file__).resolve().parents[1]
VALIDATOR = REPO / "node_modules" / ".bin" / "gl-style-validate"
BASE = "http://maps.example.test:9000"
FEATURE_CLASSES = {"buildings", "roads", "road_centrelines", "water", "green", "landuse", "parcels"}
CJJ61 = {
    "JS": (0, 255, 255),
    "PS": (76, 57, 38),
    "YS": (76, 57, 38),
    "WS": (76, 57, 38),
    "RQ": (255, 0, 255),
    "RL": (255, 128, 0),
    "DL": (255, 0, 0),
    "TX": (0, 255, 0),
}
NAMES = ["basemap", "basemap_500", "basemap_2000", "basemap_10000", "pipes", "orthophoto"]


def write_orthophoto(path: Path) -> Path:
    """A small 3-band GeoTIFF beside the fixture twin's buildings (EPSG:4549)."""
    rgb = np.random.default_rng(7).integers(0, 255, (3, 40, 40), dtype=np.uint8)
    profile = {"driver": "GTiff", "width": 40, "height": 40, "count": 3, "dtype": "uint8", "crs": "EPSG:4549"}
    with rasterio.open(path, "w", transform=from_origin(X0, Y0 + 400, 10, 10), **profile) as dst:
        dst.write(rgb)
    return path


@pytest.fixture
def twin(tmp_path: Path):
    store = make_twin(tmp_path / "twin")
    yield store
    store.close()


def client_for(store) -> TestClient:
    return TestClient(create_app(store), base_url=BASE, raise_server_exceptions=False)


def colour(text: str) -> tuple[int, int, int]:
    match = re.fullmatch(r"rgb\((\d+),(\d+),(\d+)\)", text.replace(" ", ""))
    assert match, f"not an rgb() colour: {text}"
    return tuple(int(v) for v in match.groups())


def match_output(expression: list, value: str):
    """What a MapLibre `match` expression gives for `value`."""
    assert expression[0] == "match"
    pairs, default = expression[2:-1], expression[-1]
    for labels, output in zip(pairs[::2], pairs[1::2], strict=True):
        if value == labels or (isinstance(labels, list) and value in labels):
            return output
    return default


def source_urls(style: dict) -> list[str]:
    urls = []
    for source in style["sources"].values():
        urls += [source["url"]] if "url" in source else source.get("tiles", [])
    return urls


def test_style_files_are_what_the_stylebook_builds():
    """The files are generated (`python -m twin.api.stylebook`): hand edits would drift."""
    for name, style in all_styles().items():
        path = STYLES_DIR / f"{name}.json"
        assert path.is_file(), f"{path} is missing: run python -m twin.api.stylebook"
        assert path.read_text(encoding="utf-8") == style_text(style), f"{path} differs from the stylebook"
    assert set(NAMES) <= set(style_names())


@pytest.mark.parametrize("name", NAMES)
def test_styles_are_consistent(name):
    style = load_style(name)
    ids = [layer["id"] for layer in style["layers"]]
    assert len(ids) == len(set(ids))
    for layer in style["layers"]:
        if layer["type"] == "background":
            continue
        source = style["sources"][layer["source"]]
        assert (source["type"] == "vector") == ("source-layer" in layer)
        assert layer["metadata"]["twin:group"] and layer["metadata"]["twin:group-title"]
    for url in source_urls(style):
        assert url.startswith(("/tiles/", "/raster/")), f"{url} is not a path on this server"
    assert "glyphs" not in style and "sprite" not in style  # nothing fetched from outside


def test_band_styles_use_their_band_layers_and_the_basemap_the_composite_classes():
    basemap = load_style("basemap")
    assert {layer.get("source-layer") for layer in basemap["layers"]} - {None} == FEATURE_CLASSES
    assert source_urls(basemap) == ["/tiles/basemap/tilejson.json"]
    for band, classes in BAND_CLASSES.items():
        style = load_style(f"basemap_{band}")
        used = {layer.get("source-layer") for layer in style["layers"]} - {None}
        assert used == {f"{c}_{band}" for c in classes}
        assert sorted(source_urls(style)) == sorted(f"/tiles/{c}_{band}/tilejson.json" for c in classes)


def test_pipe_colours_are_the_cjj61_class_colours():
    style = load_style("pipes")
    pipe_lines = [
        layer for layer in style["layers"] if layer["type"] == "line" and layer["source-layer"].endswith("_pipes")
    ]
    coloured = [layer for layer in pipe_lines if not layer["id"].endswith("-casing")]
    assert {layer["source-layer"] for layer in coloured} >= {"water_pipes", "gas_pipes", "drainage_pipes"}
    for layer in coloured:
        by_class = layer["paint"]["line-color"][2]  # ["case", ["has", "class"], <match on class>, fallback]
        for code, rgb in CJJ61.items():
            assert colour(match_output(by_class, code)) == rgb
    fallback = {layer["source-layer"]: colour(layer["paint"]["line-color"][3]) for layer in coloured}
    assert fallback["water_pipes"] == CJJ61["JS"] and fallback["gas_pipes"] == CJJ61["RQ"]
    assert fallback["drainage_pipes"] == CJJ61["PS"] and fallback["heat_pipes"] == CJJ61["RL"]
    assert fallback["power_pipes"] == CJJ61["DL"] and fallback["telecom_pipes"] == CJJ61["TX"]


@pytest.mark.skipif(not VALIDATOR.exists(), reason="gl-style-validate not installed: run `make install` (npm)")
def test_style_files_and_served_styles_pass_the_style_spec_validator(twin, tmp_path):
    ingest_raster(twin, write_orthophoto(tmp_path / "ortho.tif"), "aerial", role="orthophoto")
    client = client_for(twin)
    paths = [STYLES_DIR / f"{name}.json" for name in NAMES]
    for name in NAMES:
        served = tmp_path / f"served_{name}.json"
        served.write_text(client.get(f"/styles/{name}.json").text)
        paths.append(served)
    node = shutil.which("node")
    assert node, "node is needed for gl-style-validate"
    result = subprocess.run([node, str(VALIDATOR), *map(str, paths)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr
    broken = tmp_path / "broken.json"
    broken.write_text(
        json.dumps({"version": 8, "sources": {}, "layers": [{"id": "x", "type": "line", "source": "nope"}]})
    )
    result = subprocess.run([node, str(VALIDATOR), str(broken)], capture_output=True, text=True, timeout=60)
    assert "nope" in result.stdout  # the validator does catch errors


def test_served_styles_point_at_this_server(twin, tmp_path):
    ingest_raster(twin, write_orthophoto(tmp_path / "ortho.tif"), "aerial_2024", role="orthophoto")
    client = client_for(twin)
    basemap = client.get("/styles/basemap.json")
    assert basemap.status_code == 200 and basemap.headers["content-type"] == "application/json"
    assert source_urls(basemap.json()) == [f"{BASE}/tiles/basemap/tilejson.json"]
    ortho = client.get("/styles/orthophoto.json").json()
    assert source_urls(ortho) == [f"{BASE}/raster/aerial_2024/WebMercatorQuad/tilejson.json?tilesize=512&minzoom=10"]
    assert [layer["id"] for layer in ortho["layers"]] == ["orthophoto"]
    # and the URL it names is served
    tilejson = client.get(ortho["sources"]["orthophoto"]["url"].removeprefix(BASE))
    assert tilejson.status_code == 200 and tilejson.json()["tiles"][0].startswith(f"{BASE}/raster/aerial_2024/tiles/")
    listed = client.get("/styles").json()["styles"]
    assert {s["id"]: s["href"] for s in listed}["pipes"] == f"{BASE}/styles/pipes.json"


def test_sources_the_twin_cannot_serve_are_left_out(twin):
    """The fixture twin has no orthophoto, and of the 1:500 layers only the buildings."""
    twin.write_features(
        Layer(id="buildings_500", kind="vector", title="Survey buildings", scale_band="1:500"),
        [building(0)],
    )
    client = client_for(twin)
    ortho = client.get("/styles/orthophoto.json").json()
    assert ortho["sources"] == {} and ortho["layers"] == []
    band = client.get("/styles/basemap_500.json").json()
    assert source_urls(band) == [f"{BASE}/tiles/buildings_500/tilejson.json"]
    assert {layer.get("source") for layer in band["layers"]} == {None, "buildings_500"}
    assert any(layer["type"] == "fill" for layer in band["layers"])


def test_unknown_styles_are_404_problems(twin, tmp_path):
    client = client_for(twin)
    for name in ("nothing", "..%2Fpyproject", "pipe_field_mapping"):
        response = client.get(f"/styles/{name}.json")
        assert response.status_code == 404, name
        assert response.headers["content-type"] == "application/problem+json"
    (tmp_path / "mapping.json").write_text(json.dumps({"layers": {"A": "buildings"}}))
    with pytest.raises(Exception, match="no style"):
        load_style("mapping", tmp_path)
