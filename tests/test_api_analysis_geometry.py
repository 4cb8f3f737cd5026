"""POST /analysis/cross-section, /analysis/profile and /analysis/clearance over HTTP.

The twin is the hand-built network of `tests/pipe_network_fixtures.py`; requests give
coordinates in CRS84 (as a web client does) or in the project CRS.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import shapely
from fastapi.testclient import TestClient
from shapely.geometry import LineString

from tests.pipe_network_fixtures import SECTION, X0, Y0, build, network_layers
from twin.api.app import create_app
from twin.crs import CRS84, transform_points
from twin.model import FeatureInput
from twin.store import init_store

PROBLEM = "application/problem+json"
SVG_TYPE = "image/svg+xml"


@pytest.fixture(scope="module")
def twin(tmp_path_factory: pytest.TempPathFactory):
    store = init_store(tmp_path_factory.mktemp("api") / "data", "EPSG:4549")
    build(store)
    # a gas pipe crossing sewer D1 at y = Y0 + 10 (its crown 7.7 + 0.4 = 8.1 there), bottom at 8.15
    crossing = LineString([(X0 + 3, Y0 + 10), (X0 + 7, Y0 + 10)])
    gas = {"class": "RQ", "diameter": 100, "pressure": "low", "start_elev": 8.25, "end_elev": 8.25}
    store.write_features(network_layers("gas")[1], [FeatureInput("G9", crossing, gas)])
    yield store
    store.close()


@pytest.fixture(scope="module")
def client(twin):
    with TestClient(create_app(twin), raise_server_exceptions=False) as test_client:
        yield test_client


def lonlat(line: shapely.LineString) -> list[list[float]]:
    xy = shapely.get_coordinates(line)
    lon, lat = transform_points("EPSG:4549", CRS84, xy[:, 0], xy[:, 1])
    return np.round(np.column_stack([lon, lat]), 10).tolist()


def geojson_line(line: shapely.LineString = SECTION) -> dict:
    return {"type": "LineString", "coordinates": lonlat(line)}


def shapes(svg_text: str, kind: str) -> list[ET.Element]:
    return [el for el in ET.fromstring(svg_text).iter() if el.get("class") == kind]


def test_cross_section_answers_json_with_the_cut_pipes(client):
    response = client.post("/analysis/cross-section", json={"line": geojson_line()})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert [p["id"] for p in body["pipes"]] == ["W1", "G1", "D1", "D2"]
    water = body["pipes"][0]
    assert water["station"] == pytest.approx(5.0, abs=1e-3)
    assert (water["depth"], water["cover"], water["centre_elev"]) == pytest.approx((1.3, 1.2, 8.9), abs=1e-3)
    assert water["location"]["coordinates"][2] == pytest.approx(8.9)
    assert body["gaps"][0]["horizontal"] == pytest.approx(1.85, abs=1e-3)


def test_project_crs_coordinates_give_the_same_section(client):
    projected = {"type": "LineString", "coordinates": shapely.get_coordinates(SECTION).tolist()}
    a = client.post("/analysis/cross-section", json={"line": projected, "crs": "EPSG:4549"}).json()
    b = client.post("/analysis/cross-section", json={"line": {"type": "Feature", "geometry": geojson_line()}}).json()
    assert [p["id"] for p in a["pipes"]] == [p["id"] for p in b["pipes"]]
    assert [p["station"] for p in a["pipes"]] == pytest.approx([p["station"] for p in b["pipes"]], abs=1e-3)


@pytest.mark.parametrize(("query", "headers"), [("?f=svg", {}), ("", {"Accept": SVG_TYPE})])
def test_cross_section_svg_by_parameter_or_accept_header(client, query, headers):
    response = client.post(f"/analysis/cross-section{query}", json={"line": geojson_line()}, headers=headers)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(SVG_TYPE)
    assert len(shapes(response.text, "pipe")) == 4
    assert shapes(response.text, "scale-bar")


def test_json_wins_when_the_client_prefers_it(client):
    headers = {"Accept": f"application/json, {SVG_TYPE};q=0.5"}
    response = client.post("/analysis/cross-section", json={"line": geojson_line()}, headers=headers)
    assert response.headers["content-type"] == "application/json"


def test_profile_json_and_svg(client):
    body = client.post("/analysis/profile", json={"pipes": ["S1", "S2", "S3"]}).json()
    assert [p["reversed"] for p in body["pipes"]] == [False, True, False]
    assert [c["id"] for c in body["crossings"]] == ["W2"]
    svg = client.post("/analysis/profile?f=svg", json={"pipes": ["S1", "S2", "S3"]})
    assert svg.headers["content-type"].startswith(SVG_TYPE)
    assert (len(shapes(svg.text, "pipe")), len(shapes(svg.text, "crossing"))) == (3, 1)
    by_nodes = client.post("/analysis/profile", json={"layer": "drainage_pipes", "start_node": "A", "end_node": "D"})
    assert [p["id"] for p in by_nodes.json()["pipes"]] == ["S1", "S2", "S3"]


def test_clearance_json_and_svg(client):
    corners = lonlat(shapely.LineString([(X0 - 50, Y0 - 50), (X0 + 100, Y0 + 150)]))
    bbox = [*corners[0], *corners[1]]
    body = client.post("/analysis/clearance", json={"bbox": bbox}).json()
    # G9 crosses sewer D1 0.05 m above its crown (< 0.15 m); W2 crosses S2 0.65 m above (>= 0.40 m);
    # the water and gas pipes run 1.85 m apart (>= 0.5 m)
    assert [(v["kind"], {v["a"]["id"], v["b"]["id"]}) for v in body["violations"]] == [("vertical", {"G9", "D1"})]
    violation = body["violations"][0]
    assert (violation["upper"], violation["lower"], violation["collision"]) == ("G9", "D1", False)
    assert (violation["measured"], violation["required"]) == (pytest.approx(0.05), 0.15)
    assert violation["rule"]["table"] == "4.1.14"
    assert body["checked"]["vertical_crossings"] == 2
    svg = client.post("/analysis/clearance?f=svg", json={"bbox": bbox})
    assert svg.headers["content-type"].startswith(SVG_TYPE)
    assert len(shapes(svg.text, "violation")) == 1
    assert len(shapes(svg.text, "pipe")) == 10  # W1, W2, G1, G9, D1, D2, S1-S4
    elsewhere = lonlat(shapely.LineString([(X0 + 200, Y0), (X0 + 300, Y0 + 100)]))
    assert client.post("/analysis/clearance", json={"bbox": [*elsewhere[0], *elsewhere[1]]}).json()["count"] == 0


BAD = [
    ("/analysis/cross-section", {"line": {"type": "LineString", "coordinates": [[118.8, 32.0]]}}, "two positions"),
    (
        "/analysis/cross-section",
        {"line": {"type": "LineString", "coordinates": [[386000, 3546000], [386010, 3546000]]}},
        "CRS84 longitudes",
    ),
    (
        "/analysis/cross-section",
        {"line": {"type": "LineString", "coordinates": [[2.35, 48.85], [2.36, 48.85]]}},
        "outside the area",
    ),
    (
        "/analysis/cross-section",
        {"line": {"type": "LineString", "coordinates": [[32.04, 118.8], [32.05, 118.8]]}},
        "latitudes",
    ),
    ("/analysis/cross-section", {"line": {"type": "Point", "coordinates": [118.8, 32.0]}}, "LineString"),
    ("/analysis/cross-section", {"line": {"type": "LineString", "coordinates": [["a", "b"], [1, 2]]}}, "number"),
    ("/analysis/cross-section", {"line": geojson_line(), "crs": "EPSG:3857"}, "unsupported crs"),
    ("/analysis/cross-section", {"line": geojson_line(), "layers": ["nope"]}, "unknown pipe layer"),
    ("/analysis/cross-section", {"line": geojson_line(), "datetime": "2020-01-01/2021-01-01"}, "one instant"),
    ("/analysis/cross-section", {"line": geojson_line(), "colour": "red"}, "colour"),
    ("/analysis/cross-section", {}, "line"),
    ("/analysis/cross-section", {"line": geojson_line(), "vertical_exaggeration": 0}, "vertical_exaggeration"),
    ("/analysis/profile", {"pipes": ["S1", "nope"]}, "unknown pipe id"),
    ("/analysis/profile", {"pipes": ["S1", "S3"]}, "not contiguous"),
    ("/analysis/profile", {"pipes": ["S1"], "start_node": "A", "end_node": "D"}, "not both"),
    ("/analysis/clearance", {"bbox": [1, 2, 3]}, "four numbers"),
    ("/analysis/clearance", {"bbox": [118.8, 32.05, 118.7, 32.0]}, "minimum is greater"),
    ("/analysis/clearance", {"bbox": [118.7, 32.0, 118.8, 32.05], "polygon": {"type": "Polygon"}}, "not both"),
    ("/analysis/clearance", {"polygon": {"type": "LineString", "coordinates": []}}, "Polygon"),
    ("/analysis/clearance", {"structures": ["nope"]}, "unknown structure layer"),
    ("/analysis/clearance", {"parallel_angle": 91}, "parallel_angle"),
]


@pytest.mark.parametrize(("path", "body", "says"), BAD)
def test_bad_input_is_a_400_problem(client, twin, path, body, says):
    versions = {layer.id: layer.version for layer in twin.list_layers()}
    response = client.post(path, json=body)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == PROBLEM
    problem = response.json()
    assert problem["status"] == 400 and problem["instance"] == path
    assert says in problem["detail"]
    assert {layer.id: layer.version for layer in twin.list_layers()} == versions


def test_unknown_output_format_is_a_400_problem(client):
    response = client.post("/analysis/cross-section?f=png", json={"line": geojson_line()})
    assert response.status_code == 400
    assert response.headers["content-type"] == PROBLEM


def test_openapi_documents_the_three_endpoints(client):
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/analysis/cross-section", "/analysis/profile", "/analysis/clearance"):
        content = paths[path]["post"]["responses"]["200"]["content"]
        assert set(content) == {"application/json", SVG_TYPE}


def test_an_empty_twin_answers_an_empty_section(tmp_path: Path):
    store = init_store(tmp_path / "data", "EPSG:4549")
    with TestClient(create_app(store)) as empty:
        body = empty.post("/analysis/cross-section", json={"line": geojson_line()}).json()
        svg = empty.post("/analysis/cross-section?f=svg", json={"line": geojson_line()})
    store.close()
    assert (body["pipes"], body["gaps"], body["ground"]) == ([], [], None)
    assert shapes(svg.text, "pipe") == []


def test_restricted_layers_need_a_key(tmp_path: Path):
    """Gas pipes marked restricted: left out of an anonymous section, and naming them is a 401."""
    store = init_store(tmp_path / "data", "EPSG:4549")
    build(store)
    gas = store.get_layer("gas_pipes")
    gas.metadata = {**gas.metadata, "restricted": True}
    store.put_layer(gas)
    with TestClient(create_app(store)) as anonymous:
        open_section = anonymous.post("/analysis/cross-section", json={"line": geojson_line()}).json()
        named = anonymous.post("/analysis/cross-section", json={"line": geojson_line(), "layers": ["gas_pipes"]})
        clearance = anonymous.post("/analysis/clearance", json={"layers": ["water_pipes", "gas_pipes"]})
        profile = anonymous.post("/analysis/profile", json={"pipes": ["G1"]})
    store.close()
    assert [p["id"] for p in open_section["pipes"]] == ["W1", "D1", "D2"]
    for response in (named, clearance, profile):
        assert response.status_code == 401
        assert response.headers["content-type"] == PROBLEM
        assert "restricted" in response.json()["detail"]
