"""Cross-sections and profiles: a hand-built network worked out by hand, then the demo district.

The hand-built network is described in `tests/pipe_network_fixtures.py` (expected values at the
cut are derived there); it runs on both store backends.
"""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
from shapely.geometry import LineString

from tests.demo_twin import shared_demo
from tests.pipe_network_fixtures import SECTION, X0, Y0, build
from twin.analysis.dem_sample import Dem
from twin.analysis.geometry_requests import node_path, run_clearance, run_cross_section, run_profile
from twin.analysis.section import cross_section_svg, profile_svg
from twin.crs import CRS84, transform_points
from twin.model import InvalidInput
from twin.store import open_store

SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture
def twin(store):
    build(store)
    return store


def test_cross_section_depths_elevations_and_gaps_by_hand(twin):
    section = run_cross_section(twin, SECTION).as_dict()
    cuts = {p["id"]: p for p in section["pipes"]}
    assert [p["id"] for p in section["pipes"]] == ["W1", "G1", "D1", "D2"]
    expected = {  # station, ground, top, centre, bottom, depth (centre), cover
        "W1": (5.0, 10.2, 9.0, 8.9, 8.8, 1.3, 1.2),
        "G1": (7.0, 10.0, 9.2, 9.15, 9.1, 0.85, 0.8),
        "D1": (10.0, 10.2, 8.2, 8.0, 7.8, 2.2, 2.0),
    }
    for pid, (station, ground, top, centre, bottom, depth, cover) in expected.items():
        got = cuts[pid]
        assert got["station"] == pytest.approx(station)
        assert got["ground_elev"] == pytest.approx(ground)
        assert (got["top_elev"], got["centre_elev"], got["bottom_elev"]) == pytest.approx((top, centre, bottom))
        assert (got["depth"], got["cover"]) == pytest.approx((depth, cover))
        assert got["angle"] == pytest.approx(90.0)
    assert cuts["D1"]["invert_elev"] == pytest.approx(7.8)
    assert cuts["W1"]["elevation_from"] == "depth" and cuts["D1"]["elevation_from"] == "invert"
    box = cuts["D2"]
    assert (box["shape"], box["size"], box["cut_width"]) == ("box", "2000×1500", pytest.approx(2.0))
    assert (box["bottom_elev"], box["top_elev"]) == pytest.approx((6.0, 7.5))
    assert box["ground_elev"] is None and box["depth"] is None  # no nodes and no DEM: unknown
    gaps = [(g["between"], g["horizontal"], g["vertical"]) for g in section["gaps"]]
    assert gaps == [
        (["W1", "G1"], pytest.approx(7.0 - 0.05 - 5.0 - 0.1), pytest.approx(9.1 - 9.0)),
        (["G1", "D1"], pytest.approx(10.0 - 0.2 - 7.0 - 0.05), pytest.approx(9.1 - 8.2)),
        (["D1", "D2"], pytest.approx(14.0 - 1.0 - 10.0 - 0.2), pytest.approx(7.8 - 7.5)),
    ]
    lon, lat = section["line"]["coordinates"][0]
    assert 118 < lon < 122 and 30 < lat < 34


def test_an_oblique_cut_is_wider(twin):
    """A line at 30 degrees to the water pipe cuts it 0.2 / sin 30 = 0.4 m wide."""
    centre = np.array([X0, Y0 + 10.0])
    heading = np.array([np.sin(np.radians(30)), np.cos(np.radians(30))])
    line = LineString([centre - 3 * heading, centre + 3 * heading])
    cuts = {p["id"]: p for p in run_cross_section(twin, line, layers=["water_pipes"]).as_dict()["pipes"]}
    assert set(cuts) == {"W1"}
    assert cuts["W1"]["angle"] == pytest.approx(30.0, abs=0.05)
    assert cuts["W1"]["cut_width"] == pytest.approx(0.4, abs=1e-3)
    assert cuts["W1"]["station"] == pytest.approx(3.0)
    assert cuts["W1"]["ground_elev"] == pytest.approx(10.3)  # three quarters of the way from N1


def test_section_drawing_has_one_shape_per_pipe(twin):
    section = run_cross_section(twin, SECTION)
    root = ET.fromstring(cross_section_svg(section))
    shapes = [el for el in root.iter() if el.get("class") == "pipe"]
    assert [el.tag for el in shapes] == [f"{SVG}ellipse"] * 3 + [f"{SVG}rect"]
    circle = shapes[0]  # the DN200 water pipe to scale: as tall as wide, 0.2 m in pixels
    frame_scale = float(circle.get("rx")) / 0.1
    assert float(circle.get("ry")) == pytest.approx(float(circle.get("rx")), rel=0.02)
    culvert = shapes[3]
    assert float(culvert.get("width")) == pytest.approx(2.0 * frame_scale, rel=0.02)
    assert float(culvert.get("height")) == pytest.approx(1.5 * frame_scale, rel=0.02)


def test_profile_orients_the_run_and_finds_the_crossing(twin):
    prof = run_profile(twin, pipes=["S1", "S2", "S3"]).as_dict()
    pipes = prof["pipes"]
    assert [p["reversed"] for p in pipes] == [False, True, False]
    assert [(p["station_start"], p["station_end"]) for p in pipes] == [(0.0, 30.0), (30.0, 60.0), (60.0, 90.0)]
    assert [(p["invert_start"], p["invert_end"]) for p in pipes] == [(9.0, 8.8), (8.8, 8.5), (8.5, 8.3)]
    assert [p["slope"] for p in pipes] == pytest.approx([0.2 / 30, 0.3 / 30, 0.2 / 30], abs=1e-5)
    assert [p["crown_start"] for p in pipes] == pytest.approx([9.4, 9.2, 8.9])
    assert [(p["ground_start"], p["ground_end"]) for p in pipes] == [(11.0, 11.0), (11.0, 10.8), (10.8, 10.6)]
    # W2 crosses S2 half-way; S4 joins at node B, which is not a crossing
    assert [(c["id"], c["run_pipe"]) for c in prof["crossings"]] == [("W2", "S2")]
    crossing = prof["crossings"][0]
    assert crossing["station"] == pytest.approx(45.0)
    assert crossing["run_top_elev"] == pytest.approx(8.65 + 0.4)
    assert crossing["vertical_clear"] == pytest.approx(9.7 - 9.05)
    assert crossing["position"] == "above"
    assert prof["length"] == pytest.approx(90.0)


def test_profile_between_nodes_takes_the_connecting_run(twin):
    assert node_path(twin, "drainage_pipes", "A", "D") == ["S1", "S2", "S3"]
    prof = run_profile(twin, layer="drainage_pipes", start_node="D", end_node="A").as_dict()
    assert [p["id"] for p in prof["pipes"]] == ["S3", "S2", "S1"]
    assert [p["invert_start"] for p in prof["pipes"]] == [8.3, 8.5, 8.8]  # climbing: against the flow


def test_profile_drawing_has_one_band_per_pipe_and_the_crossing(twin):
    root = ET.fromstring(profile_svg(run_profile(twin, pipes=["S1", "S2", "S3"])))
    assert len([el for el in root.iter() if el.get("class") == "pipe"]) == 3
    assert len([el for el in root.iter() if el.get("class") == "crossing"]) == 1


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        ({"pipes": ["S1", "S3"]}, "not contiguous"),
        ({"pipes": ["S1", "S2", "S1"]}, "same pipe twice"),
        ({"pipes": ["S1", "nope"]}, "unknown pipe id"),
        ({"pipes": ["nope"]}, "unknown pipe id"),
        ({"pipes": []}, "list of pipe ids"),
        ({"pipes": ["S1"], "layer": "water_nodes"}, "not a pipe layer"),
        ({"layer": "drainage_pipes", "start_node": "A", "end_node": "nope"}, "unknown node"),
        ({"layer": "drainage_pipes", "start_node": "A", "end_node": "DN1"}, "not connected"),
        ({"start_node": "A", "end_node": "D"}, "needs start_node, end_node and layer"),
    ],
)
def test_bad_profile_requests_are_refused(twin, request_, message):
    with pytest.raises(InvalidInput, match=message):
        run_profile(twin, **request_)


# ----- the demo district ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_demo(tmp_path_factory)


@pytest.fixture(scope="module")
def demo_store(demo: Path):
    store = open_store(demo)
    yield store
    store.close()


def across_a_road(store) -> LineString:
    """A line square across the longest ordinary 1:500 road segment, 40% along it, kerb to kerb plus 6 m."""
    roads = [f for f in store.iter_features("road_centrelines_500") if not f.properties.get("bridge")]
    road = max(roads, key=lambda f: f.geometry.length)
    line = road.geometry
    at = line.interpolate(0.4 * line.length)
    ahead = line.interpolate(0.4 * line.length + 1.0)
    direction = np.array([ahead.x - at.x, ahead.y - at.y])
    normal = np.array([-direction[1], direction[0]]) / np.hypot(*direction)
    reach = float(road.properties["width"]) / 2.0 + 6.0
    centre = np.array([at.x, at.y])
    return LineString([centre - reach * normal, centre + reach * normal])


def test_demo_section_across_a_road_cuts_water_gas_and_drainage(demo_store):
    line = across_a_road(demo_store)
    section = run_cross_section(demo_store, line)
    result = section.as_dict()
    families = {p["family"] for p in result["pipes"]}
    assert {"water", "gas", "drainage"} <= families
    assert result["ground"] is not None
    for cut in result["pipes"]:
        assert cut["cover"] > 0.3  # buried below the ground it was surveyed from
        assert 75 < cut["angle"] <= 90  # the networks run along the road
    # the DEM ground along the line agrees with the surveyed node grounds at the cuts
    dem_at_cuts = np.interp(
        [c["station"] for c in result["pipes"]], result["ground"]["station"], result["ground"]["elevation"]
    )
    surveyed = np.array([c["ground_elev"] for c in result["pipes"]])
    assert np.abs(dem_at_cuts - surveyed).max() < 0.3
    root = ET.fromstring(cross_section_svg(section))
    assert len([el for el in root.iter() if el.get("class") == "pipe"]) == len(result["pipes"])


def test_demo_dem_samples_match_rasterio(demo_store):
    """Bilinear samples lie between the values of the cells around them (rasterio's own read)."""
    dem = Dem.from_store(demo_store)
    assert dem is not None
    line = across_a_road(demo_store)
    xy = shapely.get_coordinates(shapely.line_interpolate_point(line, np.linspace(0, line.length, 25)))
    ours = dem.sample(xy[:, 0], xy[:, 1], demo_store.crs)
    with rasterio.open(dem.path) as src:
        offsets = [(dx, dy) for dx in (-1, 0, 1) for dy in (-1, 0, 1)]
        res = src.res[0]
        around = np.array(
            [[v[0] for v in src.sample([(x + dx * res, y + dy * res) for dx, dy in offsets])] for x, y in xy]
        )
    assert np.all(ours >= around.min(axis=1) - 1e-4) and np.all(ours <= around.max(axis=1) + 1e-4)
    nearest = around[:, 4]
    assert np.abs(ours - nearest).max() < 0.25


def drainage_run(store, length: int = 6) -> list[str]:
    """Pipe ids from a head sewer downstream, following end node to start node."""
    pipes = [f for f in store.iter_features("drainage_pipes") if f.properties.get("kind") == "sewer"]
    downstream = {f.properties["start_id"]: f for f in pipes}
    fed = {f.properties["end_id"] for f in pipes}
    for head in sorted((f for f in pipes if f.properties["start_id"] not in fed), key=lambda f: f.fid):
        run = [head]
        while run[-1].properties["end_id"] in downstream and len(run) < length:
            run.append(downstream[run[-1].properties["end_id"]])
        if len(run) == length:
            return [f.fid for f in run]
    raise AssertionError("no drainage run that long in the demo")


def test_demo_profile_along_a_drainage_run_falls(demo_store):
    ids = drainage_run(demo_store)
    result = run_profile(demo_store, pipes=ids).as_dict()
    pipes = result["pipes"]
    assert [p["id"] for p in pipes] == ids and not any(p["reversed"] for p in pipes)
    for p in pipes:
        assert p["invert_end"] < p["invert_start"]
        assert p["slope"] > 0
        assert p["ground_start"] - p["crown_start"] > 0.5
    for up, down in zip(pipes, pipes[1:], strict=False):
        assert down["invert_start"] <= up["invert_end"]
        assert down["station_start"] == pytest.approx(up["station_end"])
    assert result["ground"] is not None
    for crossing in result["crossings"]:
        assert crossing["layer"] != "drainage_pipes" or crossing["id"] not in ids
    first, last = demo_store.get_feature("drainage_pipes", ids[0]), demo_store.get_feature("drainage_pipes", ids[-1])
    path = node_path(demo_store, "drainage_pipes", first.properties["start_id"], last.properties["end_id"])
    assert path == ids  # a gravity tree has one way between two of its nodes


def test_demo_clearance_reports_only_what_breaks_the_table(demo_store):
    bbox = demo_store.get_layer("road_centrelines_500").bbox
    cx, cy = (bbox[0] + bbox[2]) / 2, (bbox[1] + bbox[3]) / 2
    area = shapely.box(cx - 150, cy - 150, cx + 150, cy + 150)
    report = run_clearance(demo_store, area=area, structures=["buildings_500"])
    result = report.as_dict()
    assert result["checked"]["pipes"] > 100 and result["checked"]["vertical_crossings"] > 0
    assert result["count"] == len(result["violations"]) > 0
    located = np.array([v["location"]["coordinates"][:2] for v in result["violations"]])
    x, y = transform_points(CRS84, demo_store.crs, located[:, 0], located[:, 1])
    assert shapely.contains_xy(area.buffer(0.01), x, y).all()
    for v in result["violations"]:
        assert v["measured"] < v["required"]
        assert v["rule"]["table"] == ("4.1.14" if v["kind"] == "vertical" else "4.1.9")
    everywhere = run_clearance(demo_store, structures=["buildings_500"]).as_dict()["count"]
    assert everywhere > result["count"]


def test_demo_cli_section_writes_json_and_svg(demo: Path, demo_store, tmp_path: Path):
    line = across_a_road(demo_store)
    xy = shapely.get_coordinates(line)
    lon, lat = transform_points(demo_store.crs, CRS84, xy[:, 0], xy[:, 1])
    drawing = tmp_path / "section.svg"
    cli = [sys.executable, "-c", "from twin.cli import main; main()", "analyze", "section"]
    positions = [f"{a:.9f},{b:.9f}" for a, b in zip(lon, lat, strict=True)]
    done = subprocess.run(
        [*cli, *positions, "--data", str(demo), "--svg", str(drawing)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert {"water", "gas", "drainage"} <= {p["family"] for p in answer["pipes"]}
    assert len([el for el in ET.parse(drawing).getroot().iter() if el.get("class") == "pipe"]) == len(answer["pipes"])
    bad = subprocess.run([*cli, positions[0], "--data", str(demo)], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == ["error: line must have at least two positions"]
    assert bad.stdout == ""
