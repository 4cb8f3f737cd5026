"""GB 50289 clearance: the table file checked against the standard, and hand-built pipe pairs.

Every pair below is laid out in its own 100 m cell of a fresh twin, so the expected answer
(which pairs violate, by how much) follows from the numbers in the layout alone.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from shapely.geometry import LineString, Point, box

from twin.analysis.clearance import check_clearance
from twin.analysis.gb50289 import (
    BUILDING,
    HORIZONTAL,
    TABLE_FILE,
    VERTICAL,
    ClearanceTable,
    default_table,
    pipe_classes,
)
from twin.analysis.geometry_requests import run_clearance
from twin.analysis.pipe_solids import load_pipes, pipe_layers
from twin.model import FeatureInput, InvalidInput, Layer
from twin.store import init_store

X0, Y0 = 386_000.0, 3_546_000.0


# ----- the table --------------------------------------------------------------------------------


def required(table_name: str, a: tuple[str, ...], b: tuple[str, ...], dn: float = np.nan) -> float | None:
    rule = default_table().lookup(table_name, a, b, dn)
    return None if rule is None else rule.min


def water(dn: float) -> tuple[str, ...]:
    return pipe_classes("water", dn, {})


def gas(pressure: str) -> tuple[str, ...]:
    return pipe_classes("gas", 100, {"pressure": pressure})


DRAIN = pipe_classes("drainage", 400, {})


@pytest.mark.parametrize(
    ("table_name", "a", "b", "expected"),
    [
        # values checked against the text of GB 50289-2016 (and GB 50028-2006 for gas)
        (HORIZONTAL, BUILDING, water(150), 1.0),  # 给水 d≤200 to building
        (HORIZONTAL, BUILDING, water(300), 3.0),  # 给水 d>200 to building
        (HORIZONTAL, BUILDING, DRAIN, 2.5),  # 污水雨水 to building
        (HORIZONTAL, BUILDING, gas("low"), 0.7),  # 燃气 低压 to building foundation
        (HORIZONTAL, BUILDING, gas("中压B"), 1.0),
        (HORIZONTAL, BUILDING, gas("medium_a"), 1.5),
        (HORIZONTAL, water(150), DRAIN, 1.0),
        (HORIZONTAL, water(300), DRAIN, 1.5),
        (HORIZONTAL, water(150), gas("low"), 0.5),
        (HORIZONTAL, DRAIN, gas("low"), 1.0),
        (HORIZONTAL, DRAIN, gas("medium_b"), 1.2),
        (VERTICAL, water(150), DRAIN, 0.40),  # drainage crossing water
        (VERTICAL, gas("low"), water(600), 0.15),  # gas crossing water
        (VERTICAL, water(100), water(300), 0.15),
        (VERTICAL, DRAIN, DRAIN, 0.15),
        (VERTICAL, gas("medium"), DRAIN, 0.15),
    ],
)
def test_well_known_values(table_name, a, b, expected):
    assert required(table_name, a, b) == expected
    assert required(table_name, b, a) == expected  # a cell reads the same either way round


def test_gas_pipes_apart_by_the_larger_diameter():
    assert required(HORIZONTAL, gas("low"), gas("medium"), 300) == 0.4
    assert required(HORIZONTAL, gas("low"), gas("medium"), 315) == 0.5


def test_pairs_the_standard_leaves_open_have_no_rule():
    assert required(HORIZONTAL, water(150), water(600)) is None  # '—' in Table 4.1.9
    assert required(HORIZONTAL, DRAIN, DRAIN) is None
    assert required(HORIZONTAL, BUILDING, water(np.nan)) is None  # size unknown: d≤200 or d>200?
    assert pipe_classes("industrial", 100, {}) == ()


def test_pipe_classes_read_size_pressure_and_burial():
    assert water(200) == ("water_le200", "water")
    assert water(201) == ("water_gt200", "water")
    assert gas("次高压A")[0] == "gas_sub_high_a"
    assert pipe_classes("gas", 100, {})[0] == "gas_medium_a"  # unknown pressure: strictest of low/medium
    assert pipe_classes("gas", 100, {"pressure": "high"}) == ("gas",)
    assert pipe_classes("power", 100, {"burial": "保护管"}) == ("power_duct",)
    assert pipe_classes("telecom", 100, {}) == ("telecom_direct",)


def test_table_file_cites_both_tables_and_declares_every_class():
    data = json.loads(Path(TABLE_FILE).read_text(encoding="utf-8"))
    assert data["standard"] == "GB 50289-2016"
    assert set(data["tables"]) == {"4.1.9", "4.1.14"}
    named = {e[k] for t in data["tables"].values() for e in t["entries"] for k in ("a", "b")}
    assert named <= set(data["classes"])
    assert all(0 < e["min"] <= 15 for t in data["tables"].values() for e in t["entries"])


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"a": "building", "b": "nowhere", "min": 1.0}, "not declared"),
        ({"a": "building", "b": "drainage", "min": 0.0}, "positive"),
        ({"a": "drainage", "b": "building", "min": 2.5}, "twice"),
    ],
)
def test_a_damaged_table_is_refused(entry, message):
    data = json.loads(Path(TABLE_FILE).read_text(encoding="utf-8"))
    data["tables"]["4.1.9"]["entries"].append(entry)
    with pytest.raises(InvalidInput, match=message):
        ClearanceTable(data)


# ----- hand-built pairs ---------------------------------------------------------------------------


def cell(k: int) -> tuple[float, float]:
    """The south-west corner of the k-th 100 m cell, one row along x."""
    return X0 + 100.0 * k, Y0


def pipe_layer(layer_id: str, network: str) -> Layer:
    return Layer(id=layer_id, kind="pipe_network", metadata={"network": network, "role": "pipes"})


def flat_pipe(fid: str, line: LineString, code: str, dn: int, top: float, **extra) -> FeatureInput:
    """A level pipe whose crown is at `top` (given as elevations: crown for pressure pipes)."""
    return FeatureInput(fid, line, {"class": code, "diameter": dn, "start_elev": top, "end_elev": top, **extra})


def flat_sewer(fid: str, line: LineString, dn: int, invert: float, **extra) -> FeatureInput:
    return FeatureInput(
        fid, line, {"class": "YS", "diameter": dn, "start_invert": invert, "end_invert": invert, **extra}
    )


def along_y(x: float, y: float, length: float = 60.0) -> LineString:
    return LineString([(x, y + 20.0), (x, y + 20.0 + length)])


def along_x(x: float, y: float, length: float = 60.0) -> LineString:
    return LineString([(x + 20.0, y), (x + 20.0 + length, y)])


@pytest.fixture
def twin(tmp_path: Path):
    """Pairs that violate and pairs that comply, each in its own cell."""
    store = init_store(tmp_path / "data", "EPSG:4549")
    water_pipes, gas_pipes, sewers = [], [], []
    # cell 0: DN300 water and DN400 sewer 1.5 m apart (axes): walls 1.15 m < 1.5 m (violates)
    x, y = cell(0)
    water_pipes.append(flat_pipe("w_close", along_y(x + 30.0, y), "JS", 300, 9.0))
    sewers.append(flat_sewer("s_close", along_y(x + 31.5, y), 400, 7.0))
    # cell 1: DN150 water and DN100 low-pressure gas 1.2 m apart: walls 1.075 m >= 0.5 m (complies)
    x, y = cell(1)
    water_pipes.append(flat_pipe("w_far", along_y(x + 30.0, y), "JS", 150, 9.0))
    gas_pipes.append(flat_pipe("g_far", along_y(x + 31.2, y), "RQ", 100, 9.0, pressure="low"))
    # cell 2: DN200 water crossing a DN400 sewer 0.20 m above its crown (< 0.40, violates)
    x, y = cell(2)
    water_pipes.append(flat_pipe("w_cross", along_x(x, y + 50.0), "JS", 200, 9.0))
    sewers.append(flat_sewer("s_cross", along_y(x + 50.0, y), 400, 8.2))  # crown 8.6, water bottom 8.8
    # cell 3: DN100 gas crossing DN300 water 0.30 m above it (>= 0.15, complies)
    x, y = cell(3)
    gas_pipes.append(flat_pipe("g_cross", along_x(x, y + 50.0), "RQ", 100, 9.5, pressure="low"))
    water_pipes.append(flat_pipe("w_under", along_y(x + 50.0, y), "JS", 300, 9.1))  # gas bottom 9.4, gap 0.3
    # cell 4: a building; DN150 water 0.6 m from its wall (walls 0.525 m < 1.0 m, violates) and the
    # building's own service pipe ending on its wall (not a pair)
    x, y = cell(4)
    building = box(x + 40.0, y + 40.0, x + 60.0, y + 60.0)
    water_pipes.append(flat_pipe("w_wall", along_y(x + 39.4, y), "JS", 150, 9.0))
    water_pipes.append(
        flat_pipe(
            "w_service",
            LineString([(x + 50.0, y + 10.0), (x + 50.0, y + 40.0)]),
            "JS",
            32,
            9.0,
            kind="service",
            building_id="B1",
        )
    )
    # cell 5: two water pipes joined at a node, and a sewer joined... nothing: a run of two pipes
    x, y = cell(5)
    water_pipes.append(flat_pipe("w_run1", LineString([(x + 10, y + 50), (x + 50, y + 50)]), "JS", 300, 9.0))
    water_pipes.append(flat_pipe("w_run2", LineString([(x + 50, y + 50), (x + 90, y + 50)]), "JS", 300, 9.0))
    store.write_features(pipe_layer("water_pipes", "water"), water_pipes)
    store.write_features(pipe_layer("gas_pipes", "gas"), gas_pipes)
    store.write_features(pipe_layer("drainage_pipes", "drainage"), sewers)
    store.write_features(
        Layer(id="buildings", kind="vector"), [FeatureInput("B1", building, {"bid": "B1", "height": 18.0})]
    )
    yield store
    store.close()


def found(report) -> dict[tuple[str, frozenset[str]], dict]:
    return {(v["kind"], frozenset((v["a"]["id"], v["b"]["id"]))): v for v in report.as_dict()["violations"]}


def test_violating_pairs_are_reported_and_complying_ones_are_not(twin):
    report = run_clearance(twin, structures=["buildings"])
    got = found(report)
    assert set(got) == {
        ("horizontal", frozenset({"w_close", "s_close"})),
        ("vertical", frozenset({"w_cross", "s_cross"})),
        ("structure", frozenset({"w_wall", "B1"})),
    }
    horizontal = got[("horizontal", frozenset({"w_close", "s_close"}))]
    assert horizontal["measured"] == pytest.approx(1.5 - 0.15 - 0.2)
    assert horizontal["required"] == 1.5
    assert horizontal["angle"] == 0.0
    assert horizontal["rule"]["table"] == "4.1.9"
    assert "d>200" in horizontal["rule"]["a"] + horizontal["rule"]["b"]
    vertical = got[("vertical", frozenset({"w_cross", "s_cross"}))]
    assert vertical["measured"] == pytest.approx(0.2)
    assert (vertical["required"], vertical["upper"], vertical["lower"]) == (0.4, "w_cross", "s_cross")
    assert vertical["rule"]["table"] == "4.1.14"
    assert vertical["collision"] is False
    lon, lat, z = vertical["location"]["coordinates"]
    assert 118 < lon < 122 and 30 < lat < 34  # near Nanjing, not in the ocean
    assert z == pytest.approx((8.9 + 8.4) / 2)  # mid-way between the two centres
    wall = got[("structure", frozenset({"w_wall", "B1"}))]
    assert wall["measured"] == pytest.approx(0.6 - 0.075)
    assert wall["required"] == 1.0
    assert wall["under_structure"] is False


def test_counts_say_what_was_checked(twin):
    checked = run_clearance(twin, structures=["buildings"]).checked
    assert checked["pipes"] == 12
    assert checked["vertical_crossings"] == 2  # w_cross/s_cross, g_cross/w_under
    assert checked["horizontal_pairs"] == 2  # w_close/s_close, w_far/g_far
    assert checked["structures"] == 1


def test_an_area_limits_the_report_to_violations_inside_it(twin):
    x, y = cell(2)
    area = box(x, y, x + 100.0, y + 100.0)
    report = run_clearance(twin, area=area, structures=["buildings"])
    assert set(found(report)) == {("vertical", frozenset({"w_cross", "s_cross"}))}


def test_a_wider_parallel_angle_is_required_to_see_oblique_pairs(twin):
    """A sewer leaving 0.3 m clear of a gas pipe at 40 degrees: alongside at 45, not at 30."""
    x, y = cell(6)
    corner = Point(x + 10.0, y + 10.0)
    heading = np.radians(40.0)
    sewer = LineString([corner, (corner.x + 50 * np.cos(heading), corner.y + 50 * np.sin(heading))])
    gas_y = corner.y - 0.3 - 0.05 - 0.1  # walls 0.3 m apart below the sewer's start
    gas_line = LineString([(x + 5.0, gas_y), (x + 55.0, gas_y)])
    twin.write_features(
        pipe_layer("gas_pipes", "gas"), [flat_pipe("g_oblique", gas_line, "RQ", 100, 9.0, pressure="low")]
    )
    twin.write_features(pipe_layer("drainage_pipes", "drainage"), [flat_sewer("s_oblique", sewer, 200, 8.0)])
    pipes = load_pipes(twin, pipe_layers(twin))
    narrow = found(check_clearance(pipes, default_table(), crs=twin.crs, parallel_angle=30.0))
    wide = found(check_clearance(pipes, default_table(), crs=twin.crs, parallel_angle=45.0))
    pair = ("horizontal", frozenset({"g_oblique", "s_oblique"}))
    assert pair not in narrow
    assert wide[pair]["angle"] == pytest.approx(40.0, abs=0.1)
    assert wide[pair]["measured"] == pytest.approx(0.3)


def test_pipes_joined_at_a_node_are_not_a_pair(twin):
    report = run_clearance(twin, layers=["water_pipes"])
    assert not any("w_run1" in (v["a"]["id"], v["b"]["id"]) for v in report.as_dict()["violations"])


def test_a_pipe_under_a_basement_collides_in_3d(tmp_path: Path):
    store = init_store(tmp_path / "data", "EPSG:4549")
    x, y = cell(0)
    footprint = box(x + 40.0, y + 40.0, x + 60.0, y + 60.0)
    store.write_features(
        Layer(id="buildings", kind="vector"),
        [FeatureInput("B1", footprint, {"height": 30.0, "basement_depth": 4.0, "ground_elev": 10.0})],
    )
    # crown 8.0 (2 m cover) runs through the basement (bottom 6.0); the deep one passes 1 m below it
    store.write_features(
        pipe_layer("water_pipes", "water"),
        [
            flat_pipe("shallow", along_x(x, y + 45.0), "JS", 200, 8.0),
            flat_pipe("deep", along_x(x, y + 55.0), "JS", 200, 5.0),
        ],
    )
    got = {v["a"]["id"]: v for v in run_clearance(store, structures=["buildings"]).as_dict()["violations"]}
    store.close()
    assert got["shallow"]["under_structure"] and got["shallow"]["collision"]
    assert got["shallow"]["vertical_clear"] == pytest.approx(6.0 - 8.0)
    assert got["deep"]["under_structure"] and not got["deep"]["collision"]
    assert got["deep"]["vertical_clear"] == pytest.approx(1.0)
    assert got["deep"]["measured"] == pytest.approx(-0.1)  # in plan it lies inside the outline


def test_unknown_layers_are_refused(twin):
    with pytest.raises(InvalidInput, match="unknown pipe layer"):
        run_clearance(twin, layers=["nope"])
    with pytest.raises(InvalidInput, match="not a pipe layer"):
        run_clearance(twin, layers=["buildings"])
    with pytest.raises(InvalidInput, match="unknown structure layer"):
        run_clearance(twin, structures=["nope"])
    with pytest.raises(InvalidInput, match="parallel_angle"):
        run_clearance(twin, parallel_angle=120.0)
