"""The pipe-network analysis API on ingested networks, checked against independent computations.

- Segments of EPANET networks (Net3, ky10, Net6 with WNTR valve layers made here) equal WNTR's
  `valve_segments` partition.
- Bursts on the demo district's water network are checked with networkx on the same layers:
  with the answer's valves (and the normally closed ones) taken out, the shut-in area is what the
  burst pipe still reaches, and the lost-supply nodes are those that no longer reach a source.
- The CCWI17 toy network's hand-worked answers hold through the store and the HTTP layer.
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from functools import cache
from pathlib import Path

import geopandas as gpd
import networkx as nx
import numpy as np
import pandas as pd
import pytest
import shapely
from fastapi.testclient import TestClient

from ingestion.basemap import ingest_basemap
from ingestion.network_ingest import ingest_network
from ingestion.pipes import ingest_pipes
from tests.conftest import shared_file
from twin import crs as crs_mod
from twin.analysis import burst_isolation, isolation
from twin.analysis.service import AnalysisContext
from twin.api.app import create_app
from twin.model import parse_instant
from twin.store import init_store, open_store

wntr = pytest.importorskip("wntr")

EPANET = "pipes/epanet_wntr"
CCWI17 = "pipes/wntr_segment_reference/CCWI17-HermanMahmoud.inp"
DEMO_FROM = parse_instant("2021-06-01T00:00:00Z")
# One valve per pipe of the CCWI17 toy network (see tests/test_burst.py for the worked answers).
FULL_LAYER = {
    "V0": ("p1", "n1"),
    "V1": ("p2", "n2"),
    "V2": ("p3", "n2"),
    "V3": ("p4", "n4"),
    "V4": ("p5", "n5"),
    "V5": ("p6", "n5"),
    "V6": ("p7", "n6"),
    "V7": ("p8", "n1"),
}
SMALL_LAYER = {"w0": ("p1", "n1"), "w1": ("p3", "n2"), "w2": ("p7", "n5"), "w3": ("p7", "n6"), "w4": ("p8", "n6")}


@cache
def load_wntr(relative: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return wntr.network.WaterNetworkModel(str(shared_file(relative)))


def write_layer(path: Path, layer: dict[str, tuple[str, str]]) -> Path:
    pd.DataFrame([(k, a, b) for k, (a, b) in layer.items()], columns=["valve_id", "link", "node"]).to_csv(
        path, index=False
    )
    return path


# ----------------------------------------------------------------------------- EPANET networks


EPANET_CASES = {"net3": ("Net3.inp", 30), "ky10": ("ky10.inp", 40), "net6": ("Net6.inp", 40)}


@pytest.fixture(scope="module")
def epanet_twin(tmp_path_factory):
    """Net3, ky10 and Net6 with random WNTR valve layers, each as its own network."""
    root = tmp_path_factory.mktemp("epanet")
    layers = {}
    with init_store(root / "twin", "EPSG:4549") as store:
        for k, (name, (file, count)) in enumerate(EPANET_CASES.items()):
            wn = load_wntr(f"{EPANET}/{file}")
            layer = wntr.network.generate_valve_layer(wn, "random", count, seed=123)
            layer.to_csv(root / f"{name}.csv")
            layers[name] = layer
            origin = f"{385000 + 3000 * k},3547000,1"
            ingest_network(
                store,
                "epanet",
                shared_file(f"{EPANET}/{file}"),
                network=name,
                valves=root / f"{name}.csv",
                origin=origin,
            )
    store = open_store(root / "twin")
    with TestClient(create_app(store)) as client:
        yield client, layers
    store.close()


def same_partition(left: list, right: list) -> bool:
    pairs = set(zip(left, right, strict=True))
    return len(pairs) == len(set(left)) == len(set(right))


@pytest.mark.parametrize("name", list(EPANET_CASES))
def test_segments_equal_wntr_partition(epanet_twin, name):
    client, layers = epanet_twin
    answer = client.get("/analysis/segments", params={"network": name, "members": "true"}).json()
    ours = {}
    for segment in answer["segments"]:
        ours.update({("node", n): segment["id"] for n in segment["node_ids"]})
        ours.update({("link", p): segment["id"] for p in segment["pipe_ids"]})
    wn = load_wntr(f"{EPANET}/{EPANET_CASES[name][0]}")
    node_labels, link_labels, _ = wntr.metrics.topographic.valve_segments(wn.to_graph(), layers[name].copy())
    theirs = {("node", k): v for k, v in node_labels.items()} | {("link", k): v for k, v in link_labels.items()}
    assert set(ours) == set(theirs)
    keys = sorted(theirs)
    assert same_partition([ours[k] for k in keys], [theirs[k] for k in keys])
    assert answer["segment_count"] == len(set(theirs.values())) > 10
    assert len(answer["valve_criticality"]) == len(layers[name])


# ----------------------------------------------------------------------------- CCWI17 toy network


@pytest.fixture(scope="module")
def toy_twin(tmp_path_factory):
    """CCWI17 with WNTR's small layer from 2020, then one valve per pipe from 2022."""
    root = tmp_path_factory.mktemp("toy")
    with init_store(root / "twin", "EPSG:4549") as store:
        for layer, when in ((SMALL_LAYER, "2020-01-01T00:00:00Z"), (FULL_LAYER, "2022-01-01T00:00:00Z")):
            ingest_network(
                store,
                "epanet",
                shared_file(CCWI17),
                network="toy",
                valves=write_layer(root / f"{len(layer)}.csv", layer),
                origin="386000,3546000,0.1",
                valid_from=parse_instant(when),
            )
    store = open_store(root / "twin")
    with TestClient(create_app(store)) as client:
        yield client
    store.close()


def burst(client, **body):
    response = client.post("/analysis/burst", json={"network": "toy", **body})
    assert response.status_code == 200, response.text
    return response.json()


def test_toy_burst_through_the_api(toy_twin):
    # p4 lies in {n3, p3, p4}: V3 (0.5 L from the burst) before V2 (1.5 L); nobody else loses water.
    answer = burst(toy_twin, pipe_id="p4")
    assert [(v["id"], v["order"], v["required"]) for v in answer["valves_to_close"]] == [
        ("V3", 1, True),
        ("V2", 2, True),
    ]
    assert sorted(answer["isolated"]["pipes"]["ids"]) == ["p3", "p4"]
    assert answer["lost_supply"]["nodes"]["count"] == 0
    # V3 fails: the next ring closes (V4 is secondary) and n4, p5 join the shut-in area.
    answer = burst(toy_twin, pipe_id="p4", failed_valves=["V3"])
    assert [v["id"] for v in answer["valves_to_close"]] == ["V2", "V4"]
    assert answer["secondary_valves"] == ["V4"] and [v["id"] for v in answer["passed_valves"]] == ["V3"]
    assert sorted(answer["isolated"]["nodes"]["ids"]) == ["n3", "n4"]
    # Valve points are drawn on their pipes, in CRS84.
    lon, lat = answer["valves_to_close"][0]["geometry"]["coordinates"]
    assert 118 < lon < 121 and 31 < lat < 33
    steps = [s["action"] for s in answer["emergency"]["valve_operations"]]
    assert steps == ["close", "close", "drain", "repair", "open", "open"]


def test_toy_network_as_it_was(toy_twin):
    # In 2021 only WNTR's small layer existed: p4 lay in the big segment, closed by w0 alone.
    answer = burst(toy_twin, pipe_id="p4", datetime="2021-01-01T00:00:00Z")
    assert [(v["id"], v["required"]) for v in answer["valves_to_close"]] == [("w2", False), ("w0", True), ("w4", False)]
    assert sorted(answer["lost_supply"]["nodes"]["ids"]) == ["n6"]
    segments = toy_twin.get("/analysis/segments", params={"network": "toy", "datetime": "2021-01-01T00:00:00Z"})
    assert segments.json()["segment_count"] == 4
    assert toy_twin.get("/analysis/segments", params={"network": "toy"}).json()["segment_count"] == 7


def test_segments_are_rebuilt_when_a_layer_changes(tmp_path):
    with init_store(tmp_path / "twin", "EPSG:4549") as store, TestClient(create_app(store)) as client:

        def ingest(layer):
            ingest_network(
                store,
                "epanet",
                shared_file(CCWI17),
                network="toy",
                valves=write_layer(tmp_path / "v.csv", layer),
                origin="386000,3546000",
            )

        ingest(SMALL_LAYER)
        first = client.get("/analysis/segments", params={"network": "toy"}).json()
        again = client.get("/analysis/segments", params={"network": "toy"}).json()
        assert first == again and first["segment_count"] == 4
        context = client.app.state.pipe_analysis
        assert context.networks.builds == 1  # the second request used the cached model
        ingest(FULL_LAYER)
        changed = client.get("/analysis/segments", params={"network": "toy"}).json()
        assert changed["segment_count"] == 7 and changed["versions"] != first["versions"]
        assert context.networks.builds == 2


def test_pressure_impact_from_the_epanet_file(toy_twin):
    answer = burst(toy_twin, pipe_id="p2", simulate=True)
    impact = answer["emergency"]["pressure_impact"]
    assert impact["supported"] and impact["model"] == "EPANET file" and impact["demand_model"] == "PDD"
    # Only V0 closes for p2 and everything behind V1 and V7 loses supply: no junction keeps a
    # supply to compare, so nothing is reported as dropping.
    assert impact["nodes_compared"] == 0


def test_normally_closed_valves_pass_no_water(tmp_path):
    # FULL_LAYER with V5 (n2|n5) and V6 (n5|n6) shut as zone boundaries: n5's segment {n5, p7}
    # is fed only through V4 from n4. A burst on p4 closes V3 (0.5 L) and V2 (1.5 L); behind V3,
    # {n4, p5} and {n5, p7} now reach no source: V3 is optional and they lose supply.
    valves = pd.DataFrame([(k, a, b) for k, (a, b) in FULL_LAYER.items()], columns=["valve_id", "link", "node"])
    valves["status"] = ["closed" if k in ("V5", "V6") else "open" for k in FULL_LAYER]
    valves.to_csv(tmp_path / "v.csv", index=False)
    with init_store(tmp_path / "twin", "EPSG:4549") as store, TestClient(create_app(store)) as client:
        ingest_network(store, "epanet", shared_file(CCWI17), network="toy", valves=tmp_path / "v.csv", origin="0,0")
        answer = burst(client, pipe_id="p4")
        assert [(v["id"], v["required"]) for v in answer["valves_to_close"]] == [("V3", False), ("V2", True)]
        assert sorted(answer["lost_supply"]["pipes"]["ids"]) == ["p5", "p7"]
        # A burst on p6 ({n2, p6}) finds V5 among its boundary valves, already shut.
        answer = burst(client, pipe_id="p6")
        assert answer["already_closed_valves"] == ["V5"]
        assert [(v["id"], v["required"]) for v in answer["valves_to_close"]] == [("V1", True), ("V2", False)]
        assert sorted(answer["lost_supply"]["nodes"]["ids"]) == ["n3", "n4", "n5"]


def test_burst_on_both_store_backends(store, tmp_path):
    ingest_network(
        store,
        "epanet",
        shared_file(CCWI17),
        network="toy",
        valves=write_layer(tmp_path / "v.csv", FULL_LAYER),
        origin="386000,3546000",
    )
    with TestClient(create_app(store)) as client:
        answer = burst(client, pipe_id="p2")
        assert [(v["id"], v["required"]) for v in answer["valves_to_close"]] == [
            ("V0", True),
            ("V1", False),
            ("V7", False),
        ]
        assert sorted(answer["lost_supply"]["nodes"]["ids"]) == ["n2", "n3", "n4", "n5", "n6"]


# ----------------------------------------------------------------------------- the demo district


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The demo district's networks (through the pipe reader) and buildings, loaded into a twin."""
    from sample_data.district import generate

    root = tmp_path_factory.mktemp("demo")
    manifest = generate(root / "sources", parts={"basemap", "networks"})
    with init_store(root / "twin", manifest["crs"]) as store:
        for name in ("water", "gas", "drainage"):
            ingest_pipes(store, root / "sources" / f"{name}_network.gpkg", valid_from=DEMO_FROM)
        for scale in ("500", "2000"):
            ingest_basemap(
                store,
                root / "sources" / f"basemap_{scale}.gpkg",
                layer_id=f"buildings_{scale}",
                source_layer="buildings",
                scale_band=f"1:{scale}",
                valid_from=DEMO_FROM,
            )
    store = open_store(root / "twin")
    with TestClient(create_app(store)) as client:
        yield client, store, manifest
    store.close()


@cache
def demo_graph(store) -> tuple[nx.MultiGraph, dict[str, dict]]:
    graph = nx.MultiGraph()
    nodes = {f.fid: f.properties for f in store.query("water_nodes", limit=None).features}
    graph.add_nodes_from(nodes)
    for f in store.query("water_pipes", limit=None).features:
        graph.add_edge(f.properties["start_id"], f.properties["end_id"], key=f.fid)
    return graph, nodes


def check_with_networkx(store, answer: dict, burst_pipe: str, failed: set[str]) -> None:
    """The burst answer against a networkx computation on the same layers."""
    graph, nodes = demo_graph(store)
    sources = {n for n, p in nodes.items() if p.get("type") in ("plant", "tank")}
    shut = {n for n, p in nodes.items() if p.get("type") == "valve" and p.get("status") == "closed"}
    closing = {v["id"] for v in answer["valves_to_close"]}
    for valve in closing:
        props = nodes[valve]
        assert props["type"] == "valve" and valve not in failed and valve not in shut
        assert props.get("operable", 1) != 0 and props.get("accessible", 1) != 0
    before = graph.subgraph(set(graph) - shut)
    supplied_before = set().union(*(nx.node_connected_component(before, s) for s in sources if s in before))
    after = graph.subgraph(set(graph) - shut - closing)
    start, end = next((u, v) for u, v, k in graph.edges(keys=True) if k == burst_pipe)
    area = set().union(*(nx.node_connected_component(after, n) for n in (start, end) if n in after))
    supplied_after = set().union(
        *(nx.node_connected_component(after, s) for s in sources if s in after and s not in area)
    )
    lost = (set(after) - area - supplied_after) & supplied_before
    # Valve points sit between two pipes: the model keeps a closed one with one of its sides.
    ignore = closing | shut
    assert set(answer["isolated"]["nodes"]["ids"]) - ignore == area - ignore
    assert set(answer["lost_supply"]["nodes"]["ids"]) - ignore == lost - ignore
    # A burst pipe may run between two valves that both close: its ends count as the area's.
    touched = area | {start, end}
    for valve in answer["valves_to_close"]:
        sides = set(graph.neighbors(valve["id"]))
        assert valve["id"] in touched or sides & touched, valve["id"]  # every valve closed touches the area
        outside = sides - touched
        assert valve["required"] == bool(outside & supplied_after), valve["id"]


def demo_pipes(store, count: int) -> list[str]:
    """Distribution and main pipes spread over the district (a fixed sample)."""
    pipes = [
        f.fid
        for f in store.query("water_pipes", limit=None).features
        if f.properties["kind"] in ("main", "distribution")
    ]
    return [pipes[i] for i in np.linspace(0, len(pipes) - 1, count).astype(int)]


def test_demo_bursts_match_networkx(demo):
    client, store, _ = demo
    secondary_seen = lost_seen = 0
    for pipe in demo_pipes(store, 16):
        answer = client.post("/analysis/burst", json={"network": "water", "pipe_id": pipe}).json()
        assert answer["burst"]["pipes"] == [pipe]
        check_with_networkx(store, answer, pipe, set())
        secondary_seen += bool(answer["secondary_valves"])
        lost_seen += answer["lost_supply"]["nodes"]["count"] > 0
        # A required valve that fails is passed, and the answer still isolates the burst.
        required = [v["id"] for v in answer["valves_to_close"] if v["required"]]
        if required:
            failed = client.post(
                "/analysis/burst", json={"network": "water", "pipe_id": pipe, "failed_valves": required[:1]}
            ).json()
            assert required[0] in [v["id"] for v in failed["passed_valves"]]
            assert required[0] not in [v["id"] for v in failed["valves_to_close"]]
            check_with_networkx(store, failed, pipe, set(required[:1]))
    # The demo's inoperable and inaccessible valves make some answers pass valves on their own.
    assert secondary_seen > 0


def test_demo_burst_names_buildings_and_critical_customers(demo):
    client, store, manifest = demo
    critical = set(manifest["networks"]["water"]["critical_buildings"])
    services = {
        f.properties["building_id"]: f.fid
        for f in store.query("water_pipes", limit=None).features
        if f.properties.get("building_id") in critical
    }
    building, pipe = sorted(services.items())[0]
    answer = client.post("/analysis/burst", json={"network": "water", "pipe_id": pipe}).json()
    names = {
        f.fid: f.properties
        for layer in ("buildings_2000", "buildings_500")
        for f in store.query(layer, limit=None).features
    }
    entry = next(b for b in answer["critical_customers"] if b["id"] == building)
    assert entry["name"] == names[building]["name"] and entry["use"] in ("hospital", "school")
    assert all(b["name"] == names[b["id"]]["name"] for b in answer["buildings"])
    assert answer["emergency"]["notify"][0]["critical"] is True  # critical customers are told first
    assert answer["service_connections"]["count"] >= 1
    # The outage area covers the shut-in pipes.
    area = shapely.geometry.shape(answer["outage_area"])
    pipes = [
        shapely.geometry.shape(f["geometry"])
        for f in answer["features"]["features"]
        if f["properties"]["role"] == "isolated_pipe"
    ]
    assert area.buffer(1e-6).contains(shapely.union_all(pipes))


def test_demo_burst_at_a_point(demo):
    client, store, _ = demo
    pipe = demo_pipes(store, 3)[1]
    line = store.get_feature("water_pipes", pipe).geometry
    middle = line.interpolate(0.5, normalized=True)
    lon, lat = crs_mod.transform_points(store.crs, crs_mod.CRS84, [middle.x + 0.5], [middle.y])
    answer = client.post("/analysis/burst", json={"network": "water", "point": [float(lon[0]), float(lat[0])]}).json()
    assert answer["burst"]["pipes"] == [pipe]
    assert answer["burst"]["snapped"]["distance_m"] == pytest.approx(
        line.distance(shapely.Point(middle.x + 0.5, middle.y)), abs=0.05
    )
    far_lon, far_lat = crs_mod.transform_points(store.crs, crs_mod.CRS84, [middle.x], [middle.y + 100_000])
    response = client.post(
        "/analysis/burst", json={"network": "water", "point": [float(far_lon[0]), float(far_lat[0])]}
    )
    assert response.status_code == 400 and "no pipe" in response.json()["detail"]


def test_gas_network_the_same_way(demo):
    client, store, _ = demo
    pipe = next(f.fid for f in store.query("gas_pipes", limit=None).features if f.properties["kind"] == "distribution")
    answer = client.post("/analysis/burst", json={"network": "gas", "pipe_id": pipe, "simulate": True}).json()
    assert answer["network"] == "gas" and answer["valves_to_close"]
    assert answer["emergency"]["pressure_impact"]["supported"] is False


def test_demo_pressure_impact_from_a_model_built_from_the_layers(demo):
    client, store, _ = demo
    pipe = demo_pipes(store, 5)[2]
    answer = client.post("/analysis/burst", json={"network": "water", "pipe_id": pipe, "simulate": True}).json()
    impact = answer["emergency"]["pressure_impact"]
    assert impact["supported"] and impact["model"] == "built from the layers"
    # Every node that keeps its supply is compared, except the two sources (fixed heads).
    cut = answer["isolated"]["nodes"]["count"] + answer["lost_supply"]["nodes"]["count"]
    assert impact["nodes_compared"] == sum(1 for _ in store.query("water_nodes", limit=None).features) - cut - 2


def test_isolation_and_segments_on_the_demo(demo):
    client, store, _ = demo
    segments = client.get("/analysis/segments", params={"network": "water"}).json()
    assert segments["valves"] == sum(
        1 for f in store.query("water_nodes", limit=None).features if f.properties.get("type") == "valve"
    )
    assert sum(s["pipes"] for s in segments["segments"]) == segments["pipes"]
    # Closing every valve of a segment that feeds customers cuts them off, and nothing more.
    segment = next(s for s in segments["segments"] if s["sources"] == 0 and len(s["valves"]) >= 2 and s["demand"] > 0)
    answer = client.post("/analysis/isolation", json={"network": "water", "closed_valves": segment["valves"]}).json()
    assert segment["id"] in answer["lost_supply_segments"]
    graph, nodes = demo_graph(store)
    shut = {n for n, p in nodes.items() if p.get("type") == "valve" and p.get("status") == "closed"}
    sources = [n for n, p in nodes.items() if p.get("type") in ("plant", "tank")]
    before = graph.subgraph(set(graph) - shut)
    after = graph.subgraph(set(graph) - shut - set(segment["valves"]))
    fed_before = set().union(*(nx.node_connected_component(before, s) for s in sources))
    fed_after = set().union(*(nx.node_connected_component(after, s) for s in sources))
    ignore = set(segment["valves"])
    assert set(answer["lost_supply"]["nodes"]["ids"]) - ignore == (fed_before - fed_after) - ignore


def test_stats_match_a_clip_in_geopandas(demo):
    client, store, manifest = demo
    minx, miny, maxx, maxy = manifest["bbox"]
    box = shapely.box(minx, miny, (minx + maxx) / 2, (miny + maxy) / 2)
    [polygon] = crs_mod.transform_geometries([box], store.crs, crs_mod.CRS84)
    answer = client.get(
        "/analysis/stats", params={"layer": "water", "polygon": polygon.wkt, "group_by": "material,diameter,age"}
    ).json()
    features = store.query("water_pipes", limit=None).features
    frame = gpd.GeoDataFrame([f.properties for f in features], geometry=[f.geometry for f in features], crs=store.crs)
    inside = frame[frame.intersects(box)]
    clipped = inside.geometry.intersection(box).length
    assert answer["total"]["count"] == len(inside)
    assert answer["total"]["length_m"] == pytest.approx(clipped.sum(), rel=1e-6)
    by_material = clipped.groupby(inside["material"]).sum()
    got = {g["value"]: g["length_m"] for g in answer["total"]["groups"]["material"]}
    assert got == pytest.approx(by_material.round(2).to_dict(), abs=0.02)
    assert sum(g["count"] for g in answer["total"]["groups"]["age"]) == len(inside)
    # The same region as a bbox in CRS84 gives about the same (the box is not straight in lon/lat).
    lon0, lat0, lon1, lat1 = polygon.bounds
    by_bbox = client.get(
        "/analysis/stats", params={"layer": "water_pipes", "bbox": f"{lon0},{lat0},{lon1},{lat1}"}
    ).json()
    assert by_bbox["total"]["count"] >= answer["total"]["count"]


def test_bad_requests_are_clear_and_change_nothing(demo):
    client, store, _ = demo
    versions = {layer.id: layer.version for layer in store.list_layers()}
    cases = [
        ({"network": "water", "pipe_id": "WP999999"}, 404, "unknown link id 'WP999999'"),
        ({"network": "nowhere", "pipe_id": "x"}, 404, "no pipe network 'nowhere'"),
        ({"network": "drainage", "pipe_id": "DP000001"}, 400, "no source node"),
        ({"network": "water", "pipe_id": "WP000001", "failed_valves": ["nope"]}, 404, "unknown valve id 'nope'"),
        ({"network": "water", "pipe_id": "WP000001", "point": [118.79, 32.04]}, 400, "either pipe_id or point"),
        ({"network": "water"}, 400, "either pipe_id or point"),
        ({"network": "water", "point": [200.0, 32.0]}, 400, "longitude/latitude"),
        ({"network": "water", "pipe_id": "WP000001", "datetime": "2020-01-01/2021-01-01"}, 400, "one instant"),
        ({"network": "water", "pipe_id": "WP000001", "colour": "red"}, 400, "colour"),
        ({"network": "water", "pipe_id": "WP000001", "datetime": "2019-01-01T00:00:00Z"}, 400, "no pipes"),
    ]
    for body, status, words in cases:
        response = client.post("/analysis/burst", json=body)
        assert response.status_code == status, (body, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
        assert words in response.json()["detail"], (body, response.json())
    response = client.post("/analysis/isolation", json={"network": "water", "closed_valves": ["WN000001x"]})
    assert response.status_code == 404
    assert client.get("/analysis/stats", params={"layer": "nope"}).status_code == 404
    assert client.get("/analysis/stats", params={"polygon": "POLYGON((0 0, 1"}).status_code == 400
    assert client.get("/analysis/segments", params={"network": "nowhere"}).status_code == 404
    assert {layer.id: layer.version for layer in store.list_layers()} == versions


def test_cli_analyze(demo):
    _, store, _ = demo
    data = str(store.data_dir)

    def twin(*args):
        return subprocess.run(
            [sys.executable, "-c", "from twin.cli import main; main()", *args, "--data", data],
            capture_output=True,
            text=True,
            timeout=300,
        )

    pipe = demo_pipes(store, 5)[2]
    result = twin("analyze", "burst", pipe)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["burst"]["pipes"] == [pipe]
    result = twin("analyze", "burst", "--point", "118.0,32.0")
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0 and "no pipe" in result.stderr


FIELDS = (
    "burst_links",
    "burst_segments",
    "isolation_segments",
    "valves_to_close",
    "optional_valves",
    "secondary_valves",
    "passed_valves",
    "lost_supply_segments",
    "sources_in_area",
    "already_closed",
)


def test_prepared_index_equals_the_reference_functions(demo):
    """The fast burst and isolation queries give the reference functions' answers, field by field."""
    _, store, _ = demo
    context = AnalysisContext(store)
    rng = np.random.default_rng(11)
    for name in ("water", "gas"):
        model = context.model(name, None)
        network, index = model.network, model.burst_index
        for _ in range(120):
            links = list(network.link_ids[rng.choice(network.n_links, rng.integers(1, 3), replace=False)])
            failed = list(network.valves.ids[rng.choice(len(network.valves), rng.integers(0, 40), replace=False)])
            expected = burst_isolation(network, links, failed, model.segmentation)
            got, members = index.burst(links, failed)
            for field in FIELDS:
                assert getattr(got, field) == getattr(expected, field), field
            assert got.valve_distance == pytest.approx(expected.valve_distance)
            for mine, theirs, nodes, pipes in (
                (got.isolated, expected.isolated, members.isolated_nodes, members.isolated_links),
                (got.lost_supply, expected.lost_supply, members.lost_nodes, members.lost_links),
            ):
                assert (mine.node_ids, mine.link_ids) == (theirs.node_ids, theirs.link_ids)
                assert network.node_ids[nodes].tolist() == theirs.node_ids
                assert network.link_ids[pipes].tolist() == theirs.link_ids
                assert (mine.length, mine.volume, mine.demand) == pytest.approx(
                    (theirs.length, theirs.volume, theirs.demand)
                )
                assert mine.links_without_volume == theirs.links_without_volume
            closed = list(network.valves.ids[rng.choice(len(network.valves), 4, replace=False)])
            expected_loss, (got_loss, _) = isolation(network, closed, model.segmentation), index.isolation(closed)
            assert got_loss.lost_supply_segments == expected_loss.lost_supply_segments
            assert got_loss.lost_supply.node_ids == expected_loss.lost_supply.node_ids
            assert got_loss.unsupplied_before == expected_loss.unsupplied_before
