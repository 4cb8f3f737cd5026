"""OGC API Features over a real GeoPackage twin: landing, collections, items, errors, health."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi.testclient import TestClient
from pyproj import Transformer

from tests.api_fixtures import (
    EDITED,
    N_BUILDINGS,
    PROJECT_CRS,
    SCHOOLS,
    X0,
    Y0,
    make_client,
    make_twin,
)
from twin.api.app import app_from_env, create_app
from twin.api.params import ITEMS_PARAMETERS
from twin.model import NotFound
from twin.store import Store

CRS84_URI = "http://www.opengis.net/def/crs/OGC/1.3/CRS84"
PROJECT_URI = "http://www.opengis.net/def/crs/EPSG/0/4549"
PROBLEM = "application/problem+json"
ALL_BUILDINGS = {f"b{i}" for i in range(N_BUILDINGS)}
TO_LONLAT = Transformer.from_crs(PROJECT_CRS, "OGC:CRS84", always_xy=True)


@pytest.fixture(scope="module")
def twin(tmp_path_factory: pytest.TempPathFactory) -> Store:
    store = make_twin(tmp_path_factory.mktemp("twin") / "data")
    yield store
    store.close()


@pytest.fixture(scope="module")
def client(twin: Store) -> TestClient:
    with make_client(twin) as client:  # one event loop, so worker threads (and their PROJ state) last
        yield client


def lonlat_bbox(minx: float, miny: float, maxx: float, maxy: float) -> str:
    """A CRS84 bbox around a project-CRS box, computed with pyproj alone."""
    lon, lat = TO_LONLAT.transform([minx, maxx, minx, maxx], [miny, miny, maxy, maxy])
    return f"{min(lon)},{min(lat)},{max(lon)},{max(lat)}"


def fids(body: dict) -> list[str]:
    return [feature["id"] for feature in body["features"]]


def rels(body: dict) -> dict[str, str]:
    return {link["rel"]: link["href"] for link in body["links"]}


def positions(geometry: dict) -> list[list[float]]:
    """Every position of a GeoJSON geometry, flattened."""
    coords = geometry["coordinates"]
    while isinstance(coords[0][0], list):
        coords = [p for part in coords for p in part]
    return coords if isinstance(coords[0], list) else [coords]


def assert_problem(response, status: int, *words: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert set(body) >= {"type", "title", "status", "detail", "instance"}
    assert body["status"] == status
    assert body["instance"] == urlsplit(str(response.request.url)).path
    for word in words:
        assert word in body["detail"], body["detail"]
    return body


# ----- landing, conformance, health, OpenAPI ----------------------------------------------------
@pytest.mark.parametrize("query, headers", [("?f=json", {}), ("", {"Accept": "application/json"})])
def test_landing_json_links_to_every_part(client: TestClient, query: str, headers: dict) -> None:
    response = client.get(f"/{query}", headers=headers)
    assert response.headers["content-type"].startswith("application/json")
    links = response.json()["links"]
    by_rel = {link["rel"]: link["href"] for link in links}
    assert by_rel["service-desc"].endswith("/openapi.json")
    assert by_rel["service-doc"].endswith("/docs")
    assert by_rel["conformance"].endswith("/conformance")
    assert by_rel["data"].endswith("/collections")
    assert "self" in by_rel
    hrefs = {link["href"] for link in links}
    assert {"http://testserver/viewer/", "http://testserver/map/"} <= hrefs
    assert client.get(by_rel["service-desc"]).json()["openapi"].startswith("3.")


def test_landing_is_html_for_browsers_and_by_default(client: TestClient) -> None:
    for headers in ({}, {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}):
        response = client.get("/", headers=headers)
        assert response.headers["content-type"].startswith("text/html")
        assert 'href="http://testserver/collections"' in response.text
        assert 'href="http://testserver/viewer/"' in response.text


def test_conformance_declares_features_core_geojson_oas30_html_and_crs(client: TestClient) -> None:
    classes = set(client.get("/conformance").json()["conformsTo"])
    part1 = "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/"
    assert {part1 + name for name in ("core", "geojson", "oas30", "html")} <= classes
    assert "http://www.opengis.net/spec/ogcapi-features-2/1.0/conf/crs" in classes


def test_health_reports_the_store(client: TestClient) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "store": "ok"}


def test_health_is_503_problem_when_the_store_is_gone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = make_twin(tmp_path / "data")
    monkeypatch.setattr(store, "ping", lambda: (_ for _ in ()).throw(OSError("disk /secret/path vanished")))
    body = assert_problem(make_client(store).get("/health"), 503, "store")
    assert "secret" not in str(body)
    store.close()


def test_openapi_documents_items_parameters_and_problems(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    items = spec["paths"]["/collections/{collection_id}/items"]["get"]
    query = {p["name"] for p in items["parameters"] if p["in"] == "query"}
    assert query == ITEMS_PARAMETERS  # the parameters that are not taken as property filters
    assert PROBLEM in items["responses"]["400"]["content"]
    assert '"422"' not in str(spec).replace("'", '"')


# ----- collections -------------------------------------------------------------------------------
def test_collections_describe_layers_with_crs84_extent(client: TestClient, twin: Store) -> None:
    body = client.get("/collections").json()
    assert [c["id"] for c in body["collections"]] == ["buildings", "pipes"]
    buildings = body["collections"][0]
    stored = twin.get_layer("buildings")
    assert (buildings["kind"], buildings["scale_band"], buildings["scenario"]) == ("vector", "1:500", "current")
    assert buildings["layer_version"] == stored.version
    assert buildings["feature_count"] == N_BUILDINGS
    assert buildings["title"] == "Buildings 1:500"
    expected = TO_LONLAT.transform_bounds(X0, Y0, X0 + 20 * (N_BUILDINGS - 1) + 10, Y0 + 10, densify_pts=21)
    [bbox] = buildings["extent"]["spatial"]["bbox"]
    assert bbox == pytest.approx(list(expected), abs=1e-7)
    assert bbox[0] == pytest.approx(118.79, abs=0.02) and bbox[1] == pytest.approx(32.03, abs=0.02)
    assert buildings["extent"]["spatial"]["crs"] == CRS84_URI
    assert buildings["extent"]["temporal"]["interval"] == [["2015-01-01T00:00:00Z", None]]
    assert buildings["crs"] == [CRS84_URI, PROJECT_URI]
    assert buildings["storageCrs"] == PROJECT_URI
    items = [link["href"] for link in buildings["links"] if link["rel"] == "items"]
    assert "http://testserver/collections/buildings/items" in items
    assert body["collections"][1]["kind"] == "pipe_network"


def test_collection_by_id_and_unknown_collection(client: TestClient) -> None:
    assert client.get("/collections/pipes").json()["feature_count"] == 4
    assert_problem(client.get("/collections/nope"), 404, "nope")


def test_collections_as_html(client: TestClient) -> None:
    response = client.get("/collections?f=html")
    assert response.headers["content-type"].startswith("text/html")
    assert "Buildings 1:500" in response.text and "Water pipes" in response.text


# ----- items: space, time, paging, CRS, filters ------------------------------------------------
@pytest.mark.parametrize(
    "bbox, bbox_crs, expected",
    [
        (lonlat_bbox(X0 - 5, Y0 - 5, X0 + 55, Y0 + 15), None, {"b0", "b1", "b2"}),
        (lonlat_bbox(X0 + 195, Y0 - 5, X0 + 500, Y0 + 15), CRS84_URI, {"b10", "b11"}),
        (f"{Y0 - 5},{X0 - 5},{Y0 + 15},{X0 + 55}", PROJECT_URI, {"b0", "b1", "b2"}),  # northing first
        (f"{Y0 - 5},{X0 + 215},-50,{Y0 + 15},{X0 + 300},50", "EPSG:4549", {"b11"}),  # with heights
        ("-180,-90,180,90", None, ALL_BUILDINGS),  # a zoomed-out client asks for the world
        ("0,0,1,1", None, set()),
    ],
)
def test_items_in_bbox(client: TestClient, bbox: str, bbox_crs: str | None, expected: set[str]) -> None:
    params = {"bbox": bbox} | ({"bbox-crs": bbox_crs} if bbox_crs else {})
    response = client.get("/collections/buildings/items", params=params)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(fids(body)) == expected
    assert body["numberMatched"] == body["numberReturned"] == len(expected)


def test_items_geojson_with_versions_and_crs84_default(client: TestClient) -> None:
    response = client.get("/collections/buildings/items")
    assert response.headers["content-type"].startswith("application/geo+json")
    assert response.headers["content-crs"] == f"<{CRS84_URI}>"
    body = response.json()
    assert body["type"] == "FeatureCollection" and body["timeStamp"].endswith("Z")
    feature = next(f for f in body["features"] if f["id"] == "b0")
    assert feature["properties"] == {
        "floors": 3,
        "use": "school",
        "name": "0号楼",
        "twin:valid_from": "2015-01-01T00:00:00Z",
        "twin:valid_to": None,
        "twin:version": 1,
    }
    lon, lat = TO_LONLAT.transform([X0, X0 + 10, X0 + 10, X0], [Y0, Y0, Y0 + 10, Y0 + 10])
    corners = positions(feature["geometry"])
    expected = sorted(zip(lon, lat, strict=True))
    assert [pytest.approx(c, abs=6e-9) for c in expected] == sorted(set(map(tuple, corners)))
    assert all(round(value, 8) == value for corner in corners for value in corner)


def test_items_at_a_past_instant_and_now_differ(client: TestClient) -> None:
    past = client.get("/collections/buildings/items", params={"datetime": "2018-03-01T00:00:00Z", "floors": 4})
    assert fids(past.json()) == []
    then = client.get("/collections/buildings/items", params={"datetime": "2018-03-01", "limit": 1000}).json()
    now = client.get("/collections/buildings/items", params={"limit": 1000}).json()
    old = next(f for f in then["features"] if f["id"] == EDITED)["properties"]
    new = next(f for f in now["features"] if f["id"] == EDITED)["properties"]
    assert (old["floors"], old["twin:version"], old["twin:valid_to"]) == (3, 1, "2021-06-01T00:00:00Z")
    assert (new["floors"], new["twin:version"], new["twin:valid_to"]) == (4, 2, None)
    assert client.get("/collections/buildings/items", params={"datetime": "2010-01-01"}).json()["features"] == []


def test_datetime_intervals_return_every_version_valid_in_them(client: TestClient) -> None:
    everything = client.get("/collections/buildings/items", params={"datetime": "../.."}).json()
    assert sorted(fids(everything)).count(EDITED) == 2
    assert everything["numberMatched"] == N_BUILDINGS + 1
    before = client.get("/collections/buildings/items", params={"datetime": "../2016-01-01T00:00:00Z"}).json()
    assert {f["properties"]["twin:version"] for f in before["features"]} == {1}


@pytest.mark.parametrize(
    "params, expected",
    [
        ({"limit": 5}, ALL_BUILDINGS),
        ({"limit": 2, "use": "residential", "crs": "EPSG:4549"}, ALL_BUILDINGS - SCHOOLS),
    ],
)
def test_following_next_links_gives_every_feature_once(client: TestClient, params: dict, expected: set) -> None:
    seen: list[str] = []
    url, pages = "/collections/buildings/items", 0
    query: dict | None = params
    while url:
        response = client.get(url, params=query)
        body = response.json()
        assert body["numberMatched"] == len(expected)
        seen += fids(body)
        pages += 1
        if "crs" in params:  # every parameter travels along the next links
            assert response.headers["content-crs"] == f"<{PROJECT_URI}>"
            assert all(f["properties"]["use"] == "residential" for f in body["features"])
        if pages > 1:
            assert parse_qs(urlsplit(rels(body)["prev"]).query)["limit"] == [str(params["limit"])]
        url, query = rels(body).get("next"), None
    assert sorted(seen) == sorted(expected)
    assert pages == -(-len(expected) // params["limit"])


def test_project_crs_output_is_in_its_own_axis_order(client: TestClient) -> None:
    for crs in ("EPSG:4549", PROJECT_URI):
        response = client.get("/collections/buildings/items/b1", params={"crs": crs})
        assert response.headers["content-crs"] == f"<{PROJECT_URI}>"
        corners = positions(response.json()["geometry"])
        # EPSG:4549 is northing-first, so positions are (northing, easting) as Part 2 requires.
        assert sorted({tuple(c) for c in corners}) == [
            (Y0, X0 + 20),
            (Y0, X0 + 30),
            (Y0 + 10, X0 + 20),
            (Y0 + 10, X0 + 30),
        ]


def test_z_is_kept(client: TestClient) -> None:
    body = client.get("/collections/pipes/items/p1").json()
    assert [c[2] for c in positions(body["geometry"])] == [6.25, 6.125]
    projected = client.get("/collections/pipes/items/p1", params={"crs": "EPSG:4549"}).json()
    assert positions(projected["geometry"])[0] == [Y0 + 500, X0 + 30, 6.25]


def test_property_filters(client: TestClient) -> None:
    schools = client.get("/collections/buildings/items", params={"use": "school"}).json()
    assert set(fids(schools)) == SCHOOLS
    taller = client.get("/collections/buildings/items", params={"floors": "4"}).json()
    assert fids(taller) == [EDITED]
    # A layer without a declared schema takes any plain key as a property name.
    plastic = client.get("/collections/pipes/items", params={"material": "PE"}).json()
    assert set(fids(plastic)) == {"p1", "p3"}


def test_item_by_id_now_and_then(client: TestClient) -> None:
    response = client.get(f"/collections/buildings/items/{EDITED}")
    assert response.headers["content-type"].startswith("application/geo+json")
    body = response.json()
    assert (body["id"], body["properties"]["floors"]) == (EDITED, 4)
    assert rels(body)["collection"] == "http://testserver/collections/buildings"
    then = client.get(f"/collections/buildings/items/{EDITED}", params={"datetime": "2016-05-05T10:00:00+08:00"})
    assert then.json()["properties"]["floors"] == 3
    assert_problem(client.get("/collections/buildings/items/b99"), 404, "b99")
    assert_problem(client.get("/collections/buildings/items/b1", params={"datetime": "2000-01-01"}), 404, "b1")


def test_items_as_html_for_browsers(client: TestClient) -> None:
    response = client.get("/collections/buildings/items", headers={"Accept": "text/html"})
    assert response.headers["content-type"].startswith("text/html")
    assert "0号楼" in response.text


# ----- bad input ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "path, params, status, words",
    [
        ("/collections/buildings/items", {"bbox": "118.8,32.1,118.7,32.0"}, 400, ["bbox", "greater than"]),
        ("/collections/buildings/items", {"bbox": "a,b,c,d"}, 400, ["bbox", "four numbers"]),
        ("/collections/buildings/items", {"bbox": "1,2,3"}, 400, ["bbox"]),
        ("/collections/buildings/items", {"bbox": "118,31,119,95"}, 400, ["bbox", "latitudes"]),
        ("/collections/buildings/items", {"datetime": "yesterday"}, 400, ["datetime", "yesterday"]),
        ("/collections/buildings/items", {"datetime": "2021-01-01/2015-01-01"}, 400, ["start is after end"]),
        ("/collections/buildings/items", {"limit": "0"}, 400, ["'limit'", "greater than or equal to 1"]),
        ("/collections/buildings/items", {"limit": "-3"}, 400, ["'limit'"]),
        ("/collections/buildings/items", {"limit": "10001"}, 400, ["'limit'", "10000"]),
        ("/collections/buildings/items", {"limit": "many"}, 400, ["'limit'", "integer", "many"]),
        ("/collections/buildings/items", {"offset": "-1"}, 400, ["'offset'"]),
        ("/collections/buildings/items", {"crs": "EPSG:3857"}, 400, ["crs", CRS84_URI, PROJECT_URI]),
        ("/collections/buildings/items/b1", {"crs": "not-a-crs"}, 400, ["crs", CRS84_URI]),
        ("/collections/buildings/items", {"bbox": "1,1,2,2", "bbox-crs": "EPSG:3857"}, 400, ["bbox-crs"]),
        ("/collections/buildings/items", {"f": "xml"}, 400, ["'f'"]),
        ("/collections/buildings/items", {"colour": "red"}, 400, ["'colour'", "floors", "use"]),
        ("/collections/buildings/items", [("use", "a"), ("use", "b")], 400, ["'use'", "more than once"]),
        ("/collections/pipes/items", {"ma terial": "PE"}, 400, ["'ma terial'"]),
        ("/collections/nope/items", {}, 404, ["'nope'"]),
        ("/collections/buildings/items/nope", {}, 404, ["'nope'"]),
        ("/no/such/path", {}, 404, ["/no/such/path"]),
    ],
)
def test_bad_input_is_a_problem(client: TestClient, path: str, params, status: int, words: list[str]) -> None:
    assert_problem(client.get(path, params=params), status, *words)


def test_unexpected_errors_are_500_problems_without_internals(twin: Store) -> None:
    app = create_app(twin)

    def broken() -> None:
        raise RuntimeError("password=hunter2 in /srv/secret")

    app.add_api_route("/broken", broken)
    client = TestClient(app, raise_server_exceptions=False)
    response = client.get("/broken", headers={"Origin": "https://planner.example"})
    body = assert_problem(response, 500)
    assert "hunter2" not in response.text and "secret" not in str(body)
    assert response.headers["access-control-allow-origin"] == "*"


# ----- CORS and start-up -------------------------------------------------------------------------
def test_cors_is_open_by_default_and_exposes_content_crs(client: TestClient) -> None:
    response = client.get("/collections/buildings/items?limit=1", headers={"Origin": "https://a.example"})
    assert response.headers["access-control-allow-origin"] == "*"
    assert "content-crs" in response.headers["access-control-expose-headers"].lower()


def test_cors_origins_from_env(twin: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWIN_CORS_ORIGINS", "https://a.example, https://b.example")
    client = TestClient(create_app(twin))
    allowed = client.get("/health", headers={"Origin": "https://b.example"})
    assert allowed.headers["access-control-allow-origin"] == "https://b.example"
    refused = client.get("/health", headers={"Origin": "https://c.example"})
    assert "access-control-allow-origin" not in refused.headers


def test_app_from_env_serves_the_twin_at_twin_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_twin(tmp_path / "data").close()
    monkeypatch.setenv("TWIN_DATA", str(tmp_path / "data"))
    monkeypatch.delenv("TWIN_STORE", raising=False)
    with TestClient(app_from_env()) as client:
        assert [c["id"] for c in client.get("/collections").json()["collections"]] == ["buildings", "pipes"]


def test_create_app_fails_fast_without_a_twin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TWIN_STORE", raising=False)
    with pytest.raises(NotFound, match="twin init"):
        create_app(data_dir=tmp_path / "empty")


def test_crs84_coordinates_are_printed_short() -> None:
    """GEOS prints 118.78813727 as 118.78813726999999; the API prints the rounded value."""
    from shapely.geometry import Point

    from twin.api.geojson import encode_geometries
    from twin.api.params import crs_choice
    from twin.crs import CRS84

    (text,) = encode_geometries([Point(118.78813727, 32.04750028)], CRS84, crs_choice(CRS84))
    assert json.loads(text)["coordinates"] == [118.78813727, 32.04750028]
    assert "118.78813727," in text
