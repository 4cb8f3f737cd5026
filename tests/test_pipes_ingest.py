"""Pipe ingestion: CJJ 61 GIS tables (with a field mapping), EPANET (with a WNTR valve layer), SWMM.

Each reader lands its network as `{network}_nodes` / `{network}_pipes` layers that the analyses
read back; bad input is one line on stderr, exit 2, and the twin (and its assets) unchanged.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pytest
from shapely.geometry import LineString, Point

from ingestion.network_ingest import ingest_network
from ingestion.pipes import ingest_pipes
from tests.conftest import shared_file
from tests.test_cli_ingest import assert_one_line_error, state, twin
from twin.analysis.store_network import find_network, load_model
from twin.model import InvalidInput, NotFound
from twin.store import init_store, open_store

X0, Y0 = 386_000.0, 3_546_000.0
EPANET = "pipes/epanet_wntr"
SWMM = "pipes/swmm_swmmio"


def props(store, layer: str) -> dict[str, dict]:
    return {f.fid: f.properties for f in store.query(layer, limit=None).features}


# ----------------------------------------------------------------------------- CJJ 61 tables


def write_cjj61_csv(folder: Path) -> None:
    """Points and lines of three networks, CJJ 61 field names, class codes in the point ids."""
    folder.mkdir(exist_ok=True)
    pd.DataFrame(
        {
            "物探点号": ["JS1", "JS2", "JS3", "JS4", "RQ1", "RQ2", "YS1", "YS2"],
            "特征": ["水厂", "三通", "直线点", "预留口", "调压站", "预留口", "", ""],
            "附属物": ["", "", "阀门", "", "", "", "检查井", "出水口"],
            "X": [X0, X0 + 50, X0 + 100, X0 + 150, X0, X0 + 80, X0, X0 + 60],
            "Y": [Y0, Y0, Y0, Y0, Y0 + 5, Y0 + 5, Y0 + 10, Y0 + 10],
            "地面高程": [10.0] * 8,
            "埋深": [1.2, 1.2, 1.2, 1.2, 1.0, 1.0, 2.0, 2.5],
            "开关状态": ["", "", "常闭", "", "", "", "", ""],
        }
    ).to_csv(folder / "points.csv", index=False)
    pd.DataFrame(
        {
            "起点点号": ["JS1", "JS2", "JS3", "RQ1", "YS1"],
            "终点点号": ["JS2", "JS3", "JS4", "RQ2", "YS2"],
            "管径": ["DN300", "Φ200", "200", "De110", "1000×800"],
            "材质": ["球墨铸铁", "球墨铸铁", "PE", "PE", "钢筋混凝土"],
            "埋设年代": ["2005年", "2005-06", "2018", "2010", "1998"],
            "权属单位": ["自来水公司", "自来水公司", "自来水公司", "燃气公司", "排水公司"],
            "起点埋深": [1.2, 1.2, 1.2, 1.0, 2.0],
            "终点埋深": [1.2, 1.2, 1.2, 1.0, 2.5],
        }
    ).to_csv(folder / "lines.csv", index=False)


def test_cjj61_tables_land_as_one_network_per_class(store, tmp_path):
    write_cjj61_csv(tmp_path / "survey")
    written = ingest_pipes(store, tmp_path / "survey")
    assert [w.network for w in written] == ["drainage", "gas", "water"]
    layers = {layer.id: layer for layer in store.list_layers()}
    pipes = layers["water_pipes"]
    assert pipes.metadata["network"] == "water" and pipes.metadata["nodes_layer"] == "water_nodes"
    assert pipes.metadata["role"] == "pipes" and layers["water_nodes"].metadata["role"] == "nodes"
    water = props(store, "water_pipes")
    assert {k: (v["diameter"], v["year"], v["class"]) for k, v in water.items()} == {
        "JS1-JS2": (300.0, 2005, "JS"),
        "JS2-JS3": (200.0, 2005, "JS"),
        "JS3-JS4": (200.0, 2018, "JS"),
    }
    assert water["JS1-JS2"]["length"] == pytest.approx(50.0)
    nodes = props(store, "water_nodes")
    assert (nodes["JS1"]["type"], nodes["JS3"]["type"], nodes["JS3"]["status"]) == ("plant", "valve", "closed")
    assert props(store, "gas_nodes")["RQ1"]["type"] == "station"
    box = props(store, "drainage_pipes")["YS1-YS2"]
    assert (box["width"], box["height"], box["owner"]) == (1000.0, 800.0, "排水公司")
    assert props(store, "drainage_nodes")["YS2"]["type"] == "outfall"
    # Points went with their pipes' networks only.
    assert set(nodes) == {"JS1", "JS2", "JS3", "JS4"}
    # The analysis model reads it back: JS3 is a normally closed valve point on JS2-JS3.
    model = load_model(store, find_network(store, "water"))
    assert model.network.valves.ids.tolist() == ["JS3"] and model.network.valves.closed.tolist() == [True]


def write_custom_schema(path: Path) -> None:
    points = gpd.GeoDataFrame(
        {"PNO": ["A", "B", "C"], "KIND": ["plant", "junction", "hydrant"], "GRD": [9.0, 9.5, 9.8]},
        geometry=[Point(X0, Y0), Point(X0 + 40, Y0), Point(X0 + 40, Y0 + 30)],
        crs="EPSG:4549",
    )
    lines = gpd.GeoDataFrame(
        {"SNO": ["A", "B"], "ENO": ["B", "C"], "DIA_MM": [150, 100], "CODE": ["JS", "JS"]},
        geometry=[LineString([(X0, Y0), (X0 + 40, Y0)]), LineString([(X0 + 40, Y0), (X0 + 40, Y0 + 30)])],
        crs="EPSG:4549",
    )
    points.to_file(path, layer="gx_point", driver="GPKG")
    lines.to_file(path, layer="gx_line", driver="GPKG")


def test_field_mapping_file_reads_another_schema(tmp_path):
    write_custom_schema(tmp_path / "city.gpkg")
    mapping = tmp_path / "mapping.json"
    mapping.write_text(
        json.dumps(
            {
                "points": {"node_id": ["PNO"], "type": ["KIND"], "ground_elev": ["GRD"]},
                "lines": {"start_id": ["SNO"], "end_id": ["ENO"], "diameter": ["DIA_MM"], "class": ["CODE"]},
            }
        )
    )
    with init_store(tmp_path / "twin", "EPSG:4549") as store:
        with pytest.raises(InvalidInput, match="point id field"):
            ingest_pipes(store, tmp_path / "city.gpkg")  # the default mapping does not know PNO
        assert store.list_layers() == []
        [written] = ingest_pipes(store, tmp_path / "city.gpkg", mapping_path=mapping)
        assert written.network == "water"
        assert props(store, "water_pipes")["B-C"]["diameter"] == 100
        assert props(store, "water_nodes")["C"]["type"] == "hydrant"
        assert written.topology.counts["dangles"] == 0  # C is a hydrant: an end on purpose


def test_lines_without_point_ids_are_snapped_within_the_tolerance(tmp_path):
    # Three lines whose ends miss each other by 2 cm; no point table at all.
    lines = gpd.GeoDataFrame(
        {"id": ["L1", "L2", "L3"], "class": ["JS"] * 3},
        geometry=[
            LineString([(X0, Y0), (X0 + 50, Y0)]),
            LineString([(X0 + 50.02, Y0), (X0 + 100, Y0)]),
            LineString([(X0 + 100, Y0 + 0.02), (X0 + 100, Y0 + 50)]),
        ],
        crs="EPSG:4549",
    )
    lines.to_file(tmp_path / "lines.geojson", driver="GeoJSON")
    for tolerance, parts in ((0.05, 1), (0.01, 3)):
        with init_store(tmp_path / f"twin{tolerance}", "EPSG:4549") as store:
            result = ingest_network(store, "pipes", tmp_path / "lines.geojson", tolerance=tolerance)
            [network] = result.networks
            assert network.topology.parts == parts
            assert len(props(store, "water_nodes")) == 4 if parts == 1 else 6


# ----------------------------------------------------------------------------- EPANET and SWMM


@pytest.fixture(scope="module")
def net3_valves(tmp_path_factory) -> tuple[Path, object, pd.DataFrame]:
    wntr = pytest.importorskip("wntr")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wn = wntr.network.WaterNetworkModel(str(shared_file(f"{EPANET}/Net3.inp")))
    layer = wntr.network.generate_valve_layer(wn, "random", 30, seed=5)
    path = tmp_path_factory.mktemp("valves") / "net3_valves.csv"
    layer.to_csv(path)
    return path, wn, layer


def test_epanet_file_and_valve_layer(tmp_path, net3_valves):
    path, wn, layer = net3_valves
    with init_store(tmp_path / "twin", "EPSG:4549") as store:
        result = ingest_network(
            store, "epanet", shared_file(f"{EPANET}/Net3.inp"), network="net3", valves=path, origin="385000,3547000,10"
        )
        assert [w.layer for w in result.networks[0].writes] == ["net3_nodes", "net3_valves", "net3_pipes"]
        nodes, pipes = props(store, "net3_nodes"), props(store, "net3_pipes")
        assert set(nodes) == set(wn.node_name_list) and set(pipes) == set(wn.link_name_list)
        assert nodes["River"]["type"] == "reservoir" and nodes["1"]["type"] == "tank"
        pipe = wn.get_link("101")
        assert pipes["101"]["length"] == pytest.approx(pipe.length)
        assert pipes["101"]["diameter"] == pytest.approx(pipe.diameter * 1000)
        assert pipes["335"]["kind"] == "pump"
        valves = props(store, "net3_valves")
        assert {(v["link"], v["node"]) for v in valves.values()} == set(zip(layer["link"], layer["node"], strict=True))
        # The file is kept for simulations; the valve points lie on their pipes, near their node.
        metadata = store.get_layer("net3_pipes").metadata
        assert (
            store.assets.open_path(metadata["epanet_asset"]).read_bytes()
            == shared_file(f"{EPANET}/Net3.inp").read_bytes()
        )
        first = store.get_feature("net3_valves", next(iter(valves)))
        line = store.get_feature("net3_pipes", first.properties["link"]).geometry
        assert line.distance(first.geometry) < 1e-6
        # The schematic drawing was placed with its lower-left corner at the origin given.
        minx = min(f.geometry.bounds[0] for f in store.query("net3_nodes", limit=None).features)
        assert minx == pytest.approx(385000.0)


def test_swmm_example_worked_by_hand(tmp_path):
    # Example1.inp: 13 junctions and one outfall, 13 circular conduits, 8 subcatchments, US units.
    # Junction 9: invert 1000 ft, max depth 3 ft. Conduit 1 (9 -> 10): 400 ft, 1.5 ft across.
    with init_store(tmp_path / "twin", "EPSG:4549") as store:
        result = ingest_network(store, "swmm", shared_file(f"{SWMM}/Example1.inp"), origin="385000,3547000")
        assert [w.layer for w in result.networks[0].writes] == [
            "drainage_nodes",
            "drainage_pipes",
            "drainage_subcatchments",
        ]
        nodes, pipes = props(store, "drainage_nodes"), props(store, "drainage_pipes")
        assert len(nodes) == 14 and len(pipes) == 13 and len(props(store, "drainage_subcatchments")) == 8
        assert nodes["18"]["type"] == "outfall"
        assert nodes["9"]["invert_elev"] == pytest.approx(1000 * 0.3048)
        assert nodes["9"]["ground_elev"] == pytest.approx(1003 * 0.3048)
        assert pipes["1"]["length"] == pytest.approx(400 * 0.3048)
        assert pipes["1"]["diameter"] == pytest.approx(1.5 * 304.8)
        # Conduit 6 (10 -> 21) has an outlet offset of 1 ft: end invert = 990 + 1 ft.
        assert pipes["6"]["end_invert"] == pytest.approx(991 * 0.3048)
        assert result.networks[0].topology.counts["depth_rule"] == 0
        catchment = store.get_feature("drainage_subcatchments", "1")
        assert catchment.properties["area_ha"] == pytest.approx(10 * 0.40468564224, abs=1e-4)
        assert catchment.geometry.geom_type == "Polygon"


# ----------------------------------------------------------------------------- bad input


def test_bad_pipe_tables_are_refused(tmp_path):
    write_cjj61_csv(tmp_path / "survey")
    lines = pd.read_csv(tmp_path / "survey" / "lines.csv")
    with init_store(tmp_path / "twin", "EPSG:4549") as store:
        lines.assign(起点点号=lines["起点点号"].replace("JS1", "JS9")).to_csv(
            tmp_path / "survey" / "lines.csv", index=False
        )
        with pytest.raises(InvalidInput, match="JS9"):
            ingest_pipes(store, tmp_path / "survey")
        codes = lines.assign(
            起点点号=lines["起点点号"].str.replace("YS", "QQ"), 终点点号=lines["终点点号"].str.replace("YS", "QQ")
        )
        points = pd.read_csv(tmp_path / "survey" / "points.csv")
        points.assign(物探点号=points["物探点号"].str.replace("YS", "QQ")).to_csv(
            tmp_path / "survey" / "points.csv", index=False
        )
        codes.to_csv(tmp_path / "survey" / "lines.csv", index=False)
        with pytest.raises(InvalidInput, match="--class"):
            ingest_pipes(store, tmp_path / "survey")
        with pytest.raises(NotFound):
            ingest_pipes(store, tmp_path / "nowhere")
        # A valve point that no pipe reaches.
        write_cjj61_csv(tmp_path / "survey")
        points = pd.read_csv(tmp_path / "survey" / "points.csv")
        stray = pd.DataFrame({"物探点号": ["JS9"], "附属物": ["阀门"], "X": [X0 + 500], "Y": [Y0 + 500]})
        pd.concat([points, stray]).to_csv(tmp_path / "survey" / "points.csv", index=False)
        with pytest.raises(InvalidInput, match="valve point.*on no pipe: JS9"):
            ingest_pipes(store, tmp_path / "survey")
        assert store.list_layers() == []


def test_bad_network_files_exit_2_and_change_nothing(tmp_path, net3_valves):
    data = tmp_path / "twin"
    write_cjj61_csv(tmp_path / "survey")
    with init_store(data, "EPSG:4549") as store:
        ingest_pipes(store, tmp_path / "survey")
    before = state(data)
    with open_store(data) as store:
        assets = store.assets.keys()
    # An EPANET file with a pipe that names a node the file lacks.
    text = shared_file(f"{EPANET}/Net3.inp").read_text()
    broken = tmp_path / "broken.inp"
    broken.write_text(text.replace("[PIPES]\n", "[PIPES]\n 9999 nowhere 10 100 12 100 0 Open\n", 1))
    assert_one_line_error(
        twin("ingest", "epanet", str(broken), "--origin", "385000,3547000", "--data", str(data)), "broken.inp"
    )
    # A valve layer with a valve on a pipe that does not touch its node.
    path, _, layer = net3_valves
    bad_valves = tmp_path / "bad_valves.csv"
    layer.assign(node=["10"] + layer["node"].tolist()[1:]).to_csv(bad_valves)
    result = twin(
        "ingest", "epanet", str(shared_file(f"{EPANET}/Net3.inp")), "--valves", str(bad_valves),
        "--origin", "385000,3547000", "--data", str(data),
    )  # fmt: skip
    assert_one_line_error(result, "does not touch node '10'")
    # A SWMM file whose conduit names an unknown node, and one with a number that is not one.
    example = shared_file(f"{SWMM}/Example1.inp").read_text()
    unknown = tmp_path / "unknown.inp"
    unknown.write_text(
        example.replace("1                9                10 ", "1                9                99 ", 1)
    )
    assert_one_line_error(twin("ingest", "swmm", str(unknown), "--origin", "0,0", "--data", str(data)), "'99'")
    assert state(data) == before
    with open_store(data) as store:
        assert store.assets.keys() == assets


def test_swmm_conduit_to_unknown_node_names_its_line(tmp_path):
    from ingestion.swmm import read_swmm

    text = shared_file(f"{SWMM}/Example1.inp").read_text()
    path = tmp_path / "bad.inp"
    path.write_text(text.replace("1                9                10 ", "1                9                99 ", 1))
    line = next(i for i, row in enumerate(path.read_text().splitlines(), 1) if row.startswith("1                9   "))
    with pytest.raises(InvalidInput, match=rf"bad.inp:{line}: link '1' names unknown node '99'"):
        read_swmm(path, "EPSG:4549", origin=(0.0, 0.0))
    path.write_text(text.replace("1                9                10               400", "1 9 10 four", 1))
    with pytest.raises(InvalidInput, match=rf"bad.inp:{line}: conduit length 'four' is not a number"):
        read_swmm(path, "EPSG:4549", origin=(0.0, 0.0))
    path.write_text("this is not a model\n")
    with pytest.raises(InvalidInput, match="before the first \\[SECTION\\]"):
        read_swmm(path, "EPSG:4549", origin=(0.0, 0.0))
