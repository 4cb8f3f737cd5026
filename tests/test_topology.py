"""The topology report on a deliberately broken small network finds exactly its defects.

The clean part (a water network, coordinates near Nanjing in EPSG:4549):

    S --P1-- J1 --P2-- J2 --P6-- H1 (hydrant)
             |         |
             P5        P3
             |         |
             J4 --P4-- J3

Defects added one each: a dangle (P7 from J2 to a plain junction D1 that nothing else
reaches), a duplicate pipe (P8 retraces P3), a zero-length pipe (P9 from J3 to itself), a
disconnected part (X1-X2, two stubs with no source) and a depth-rule violation (J3's pipe
elevation is 0.8 m too low for its ground elevation and depth).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pytest
from shapely.geometry import LineString, Point

from ingestion.topology import CHECKS, TopologyOptions, topology_report

X0, Y0 = 386_000.0, 3_546_000.0
GROUND, DEPTH = 10.0, 1.2
NODES = {
    # id: (x, y, type, feature)
    "S": (0, 0, "plant", "水厂"),
    "J1": (100, 0, "junction", "三通"),
    "J2": (200, 0, "junction", "四通"),
    "J3": (200, 100, "junction", "三通"),
    "J4": (100, 100, "junction", "弯头"),
    "H1": (200, -20, "hydrant", "消火栓"),
    "D1": (300, 40, "junction", "三通"),
    "X1": (500, 500, "junction", "预留口"),
    "X2": (600, 500, "junction", "预留口"),
}
PIPES = {
    "P1": ("S", "J1"),
    "P2": ("J1", "J2"),
    "P3": ("J2", "J3"),
    "P4": ("J3", "J4"),
    "P5": ("J4", "J1"),
    "P6": ("J2", "H1"),
    "P7": ("J2", "D1"),
    "P8": ("J2", "J3"),
    "P9": ("J3", "J3"),
    "P10": ("X1", "X2"),
}
BAD_ELEVATION = {"J3": GROUND - DEPTH - 0.8}


def broken_network() -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    nodes = gpd.GeoDataFrame(
        {
            "node_id": list(NODES),
            "type": [v[2] for v in NODES.values()],
            "feature": [v[3] for v in NODES.values()],
            "ground_elev": GROUND,
            "depth": DEPTH,
            "elev": [BAD_ELEVATION.get(n, GROUND - DEPTH) for n in NODES],
        },
        geometry=[Point(X0 + x, Y0 + y) for x, y, *_ in NODES.values()],
        crs="EPSG:4549",
    )
    where = {n: (X0 + v[0], Y0 + v[1]) for n, v in NODES.items()}
    pipes = gpd.GeoDataFrame(
        {
            "pipe_id": list(PIPES),
            "start_id": [a for a, _ in PIPES.values()],
            "end_id": [b for _, b in PIPES.values()],
            "class": "JS",
            "diameter": 200.0,
            "start_depth": DEPTH,
            "end_depth": DEPTH,
            "start_elev": GROUND - DEPTH,
            "end_elev": GROUND - DEPTH,
        },
        geometry=[LineString([where[a], where[b]]) for a, b in PIPES.values()],
        crs="EPSG:4549",
    )
    return nodes, pipes


def findings(report) -> dict[str, list[dict]]:
    return {name: items for name, items in report.findings.items() if items}


def test_broken_network_reports_exactly_its_defects():
    nodes, pipes = broken_network()
    report = topology_report(nodes, pipes, "water")
    found = findings(report)
    assert set(found) == {"dangles", "duplicate_pipes", "zero_length", "disconnected_parts", "depth_rule"}
    assert [(d["node"], d["pipe"], d["near"]) for d in found["dangles"]] == [("D1", "P7", None)]
    assert [(d["pipe"], d["duplicates"]) for d in found["duplicate_pipes"]] == [("P3", ["P8"])]
    assert [d["pipe"] for d in found["zero_length"]] == ["P9"]
    assert [sorted(d["node_ids"]) for d in found["disconnected_parts"]] == [["X1", "X2"]]
    assert [(d["node"], d["difference"]) for d in found["depth_rule"]] == [("J3", pytest.approx(0.8))]
    assert report.parts == 2
    assert report.counts == {name: len(found.get(name, [])) for name in CHECKS}


def test_clean_part_alone_reports_nothing():
    nodes, pipes = broken_network()
    nodes = nodes[~nodes["node_id"].isin(["D1", "X1", "X2"])].assign(elev=GROUND - DEPTH)
    pipes = pipes[pipes["pipe_id"].isin(["P1", "P2", "P3", "P4", "P5", "P6"])]
    report = topology_report(nodes, pipes, "water")
    assert findings(report) == {}
    assert report.parts == 1


def test_each_defect_is_caught_by_its_own_check():
    """Fixing one defect removes exactly its finding (the checks do not lean on each other)."""
    nodes, pipes = broken_network()
    full = findings(topology_report(nodes, pipes, "water"))
    fixed_depth = findings(topology_report(nodes.assign(elev=GROUND - DEPTH), pipes, "water"))
    assert set(full) - set(fixed_depth) == {"depth_rule"}
    fixed_duplicate = findings(topology_report(nodes, pipes[pipes["pipe_id"] != "P8"], "water"))
    assert set(full) - set(fixed_duplicate) == {"duplicate_pipes"}


def test_undershoot_tolerance_and_other_checks():
    nodes, pipes = broken_network()
    # Move D1 onto P3 (x = 200, between J2 and J3): now an undershoot, whatever its type.
    nodes.loc[nodes["node_id"] == "D1", "geometry"] = Point(X0 + 200.03, Y0 + 40)
    pipes.loc[pipes["pipe_id"] == "P7", "geometry"] = LineString([(X0 + 200, Y0), (X0 + 200.03, Y0 + 40)])
    strict = topology_report(nodes, pipes, "water", TopologyOptions(tolerance=0.05))
    assert [(d["node"], d["near"]) for d in strict.findings["dangles"]] == [("D1", "P3")]
    loose = topology_report(nodes, pipes, "water", TopologyOptions(tolerance=0.01))
    assert [(d["node"], d["near"]) for d in loose.findings["dangles"]] == [("D1", None)]
    # Over-long pipes, class mismatch at a shared point, a point on no pipe, a misplaced line end.
    nodes = pd.concat(
        [
            nodes,
            gpd.GeoDataFrame({"node_id": ["V9"], "type": ["valve"]}, geometry=[Point(X0, Y0 + 300)], crs=nodes.crs),
        ],
        ignore_index=True,
    )
    pipes.loc[pipes["pipe_id"] == "P6", "class"] = "RQ"
    pipes.loc[pipes["pipe_id"] == "P1", "geometry"] = LineString([(X0 + 1, Y0), (X0 + 100, Y0)])
    report = topology_report(nodes, pipes, "water", TopologyOptions(max_length=99.5))
    assert {d["pipe"] for d in report.findings["over_long"]} == {"P2", "P3", "P4", "P5", "P8", "P10"}  # 100 m each
    assert [d["node"] for d in report.findings["isolated_nodes"]] == ["V9"]
    assert [(d["node"], d["values"]) for d in report.findings["inconsistent_attributes"]] == [("J2", ["JS", "RQ"])]
    assert [(d["pipe"], d["end"]) for d in report.findings["misplaced_ends"]] == [("P1", "start")]


# ----------------------------------------------------------------------------- through the CLI


def write_delivery(folder: Path) -> None:
    """The broken network as CJJ 61 CSV tables: Chinese field names, X north / Y east."""
    folder.mkdir()
    points = pd.DataFrame(
        {
            "物探点号": [f"JS{n}" for n in NODES],
            "特征": [v[3] for v in NODES.values()],
            "附属物": ["水厂" if n == "S" else "消火栓" if n == "H1" else "" for n in NODES],
            "X": [Y0 + v[1] for v in NODES.values()],  # surveyors' X is the northing
            "Y": [X0 + v[0] for v in NODES.values()],
            "地面高程": GROUND,
            "埋深": DEPTH,
            "管顶高程": [BAD_ELEVATION.get(n, GROUND - DEPTH) for n in NODES],
        }
    )
    points.to_csv(folder / "points.csv", index=False, encoding="gb18030")
    lines = pd.DataFrame(
        {
            "起点点号": [f"JS{a}" for a, _ in PIPES.values()],
            "终点点号": [f"JS{b}" for _, b in PIPES.values()],
            "管径": "DN200",
            "材质": "球墨铸铁",
            "起点埋深": DEPTH,
            "终点埋深": DEPTH,
        }
    )
    lines.to_csv(folder / "lines.csv", index=False)


def twin(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "from twin.cli import main; main()", *args], capture_output=True, text=True, timeout=300
    )


def test_ingest_prints_the_report_of_a_broken_delivery(tmp_path):
    data = tmp_path / "twin"
    assert twin("init", str(data), "--crs", "EPSG:4549").returncode == 0
    write_delivery(tmp_path / "delivery")
    result = twin("ingest", "pipes", str(tmp_path / "delivery"), "--data", str(data))
    assert result.returncode == 0, result.stderr
    [network] = json.loads(result.stdout)["networks"]
    assert network["network"] == "water"
    assert any("X north" in note for note in network["notes"])
    found = {k: v for k, v in network["topology"]["findings"].items() if v}
    assert set(found) == {"dangles", "duplicate_pipes", "zero_length", "disconnected_parts", "depth_rule"}
    assert [d["node"] for d in found["dangles"]] == ["JSD1"]
    assert [d["duplicates"] for d in found["duplicate_pipes"]] == [["JSJ2-JSJ3#2"]]
    assert [d["pipe"] for d in found["zero_length"]] == ["JSJ3-JSJ3"]
    assert [d["node"] for d in found["depth_rule"]] == ["JSJ3"]
    # The report's location is the point in the project CRS, axes put right.
    assert found["dangles"][0]["at"] == [X0 + 300, Y0 + 40]
