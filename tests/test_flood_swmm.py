"""The surface model coupled to SWMM: water drains into the sewers, surcharge floods back, both books close."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.transform import from_origin

from tests.conftest import shared_file
from tests.test_cli_ingest import assert_one_line_error, state, twin
from twin.analysis.flood import FloodParams, Grid, measured, run_flood, simulate
from twin.analysis.flood.drainage import full_flow
from twin.analysis.flood.job import plan_flood, swmm_model_path
from twin.analysis.flood.surface import MassBalance
from twin.analysis.flood.swmm_coupling import SwmmCoupling, read_coordinates
from twin.crs import transform_points
from twin.model import InvalidInput, NotFound
from twin.store import init_store

DX = 2.0
X0, Y0 = 386_000.0, 3_546_000.0  # the grid's west and south edges in EPSG:4549
NY, NX = 50, 60  # 100 m × 120 m
J1, J2, OUT = (X0 + 21.0, Y0 + 51.0), (X0 + 71.0, Y0 + 51.0), (X0 + 115.0, Y0 + 51.0)
TRANSFORM = Affine(DX, 0.0, X0, 0.0, -DX, Y0 + NY * DX)


def inp(
    path: Path,
    *,
    at: dict[str, tuple[float, float]] | None = None,
    c2_diameter: float = 0.3,
    j1_inflow: float = 0.0,
    j1_depth: float = 1.0,
    routing_step: int = 1,
) -> Path:
    """A two-junction sewer (J1 → J2 → outfall O1, 50 m and 44 m of circular pipe) in metric units."""
    at = {"J1": J1, "J2": J2, "O1": OUT} if at is None else at
    inflow = f'[INFLOWS]\nJ1 FLOW "" FLOW 1.0 1.0 {j1_inflow}\n\n' if j1_inflow else ""
    coordinates = "".join(f"{node} {x:.9f} {y:.9f}\n" for node, (x, y) in at.items())
    path.write_text(
        f"""[TITLE]
two junctions

[OPTIONS]
FLOW_UNITS CMS
INFILTRATION HORTON
FLOW_ROUTING DYNWAVE
START_DATE 01/01/2020
START_TIME 00:00:00
REPORT_START_DATE 01/01/2020
REPORT_START_TIME 00:00:00
END_DATE 01/01/2020
END_TIME 00:10:00
REPORT_STEP 00:01:00
WET_STEP 00:01:00
DRY_STEP 00:05:00
ROUTING_STEP {routing_step}
ALLOW_PONDING YES

[JUNCTIONS]
;;name invert max_depth init_depth surcharge_depth ponded_area
J1 9.0 {j1_depth} 0 0 50
J2 8.8 1.2 0 0 50

[OUTFALLS]
O1 8.5 FREE NO

[CONDUITS]
C1 J1 J2 50 0.013 0 0 0 0
C2 J2 O1 44 0.013 0 0 0 0

[XSECTIONS]
C1 CIRCULAR 0.3 0 0 0 1
C2 CIRCULAR {c2_diameter} 0 0 0 1

{inflow}[COORDINATES]
{coordinates}""",
        encoding="utf-8",
    )
    return path


def cell_of(xy: tuple[float, float]) -> tuple[int, int]:
    return int((Y0 + NY * DX - xy[1]) // DX), int((xy[0] - X0) // DX)


def bowl(around: tuple[float, float], rim: float = 10.0) -> np.ndarray:
    """Ground rising 2 cm per metre away from a point, whose cell is at `rim`."""
    y, x = np.mgrid[0:NY, 0:NX]
    cx, cy = X0 + (x + 0.5) * DX, Y0 + NY * DX - (y + 0.5) * DX
    row, col = cell_of(around)
    distance = np.hypot(cx - cx[row, col], cy - cy[row, col])
    return rim + 0.02 * distance


def coupled(model: Path, z: np.ndarray, duration_s: float, h0: np.ndarray | None = None, **kw):
    """The surface over `z` run coupled to `model`; the result and SWMM's report."""
    sewer = SwmmCoupling(model, Grid(z, TRANSFORM), duration_s, interval_s=kw.pop("interval_s", 60.0))
    try:
        result = simulate(z, DX, None, duration_s=duration_s, h0=h0, boundary="closed", exchange=sewer, **kw)
    finally:
        sewer.close()
    return result, sewer.report()


def test_ponded_water_drains_into_swmm_and_leaves_at_the_outfall(tmp_path):
    z = bowl(J1)
    h0 = np.maximum(10.15 - z, 0.0)  # a pond 15 cm deep over J1's grate, 7.5 m across
    ponded = h0.sum() * DX * DX
    result, swmm = coupled(inp(tmp_path / "two.inp"), z, 1800.0, h0)
    mass = result.mass
    assert mass.relative_error < 1e-12
    assert mass.to_sewer > 0.97 * ponded and mass.from_sewer == 0.0
    assert result.depth.sum() * DX * DX == pytest.approx(ponded - mass.to_sewer, rel=1e-9)
    assert swmm["to_sewer_m3"] == pytest.approx(mass.to_sewer, abs=1e-5)
    assert [n["node_id"] for n in swmm["nodes"]] == ["J1"] and swmm["coupled_nodes"] == 2
    assert swmm["other_nodes_uncoupled"] == 1  # the outfall
    # SWMM's own books: what the grid gave is its external inflow, and it leaves at the outfall
    error = abs(swmm["swmm_continuity_error_pct"]) / 100.0
    routing = swmm["swmm_routing"]
    assert abs(routing["external_inflow_m3"] - mass.to_sewer) <= error * mass.to_sewer + 1e-4
    assert routing["flooding_m3"] == 0.0
    assert routing["outflow_m3"] == pytest.approx(routing["external_inflow_m3"], rel=error + 0.02)


def test_inlet_takes_no_more_than_its_grate_equation(tmp_path):
    """A 40 cm deep pond held at J1 by a steep bowl: the first minute's inflow is HEC-22's orifice flow."""
    z = bowl(J1)
    h0 = np.maximum(10.4 - z, 0.0)
    result, swmm = coupled(inp(tmp_path / "two.inp"), z, 2.0, h0)  # one short step: the pond is still 40 cm
    assert result.steps >= 1
    orifice = 0.67 * 0.12 * 0.5 * np.sqrt(2 * 9.81 * 0.4)
    assert result.mass.to_sewer == pytest.approx(orifice * result.simulated_s, rel=0.05)


def test_surcharge_floods_back_onto_the_node_cell(tmp_path):
    """0.05 m³/s into J1 (rim 10.5 m) and a 10 cm pipe out of J2 (rim 10 m): J2 surcharges, and its
    flooding stands on its cell."""
    z = np.full((NY, NX), 10.0)
    model = inp(tmp_path / "choked.inp", c2_diameter=0.1, j1_inflow=0.05, j1_depth=1.5)
    result, swmm = coupled(model, z, 1200.0, interval_s=30.0)
    mass = result.mass
    assert mass.from_sewer > 10.0
    assert mass.relative_error < 1e-12
    assert result.depth.sum() * DX * DX == pytest.approx(mass.from_sewer - mass.to_sewer, rel=1e-9)
    assert swmm["surcharge_nodes"][0]["node_id"] == "J2"
    assert np.unravel_index(np.argmax(result.max_depth), z.shape) == cell_of(J2)
    # every m³ SWMM lost to flooding is on the grid or on its way there (SWMM's node statistics,
    # which the coupling reads, and its system totals average over a step differently: 0.1 %)
    returned = swmm["from_sewer_m3"] + swmm["flooding_not_yet_returned_m3"]
    assert returned == pytest.approx(swmm["swmm_routing"]["flooding_m3"], rel=1e-3)
    # the choke passes about its full-bore flow (more under pressure), the rest floods
    capacity = float(full_flow(np.array([0.1]), np.array([0.0]), np.array([0.0]), np.array([0.3 / 44]))[0])
    peak = swmm["surcharge_nodes"][0]["peak_flooding_m3s"]
    assert 0.05 - 4 * capacity < peak < 0.05
    assert swmm["surcharge_nodes"][0]["peak_surcharge_m"] >= 0.0


class Idle:
    """An exchange that never trades: the surface must run exactly as without one."""

    every_s = 0.0

    def __call__(self, t: float, h: np.ndarray) -> tuple[float, float]:
        return 0.0, 0.0


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_no_trade_is_bit_identical(backend):
    z = bowl(J1) + np.random.default_rng(5).uniform(0, 0.2, (NY, NX))
    rain = measured([0.0, 300.0], [80.0, 20.0])
    runs = [
        simulate(z, DX, rain, duration_s=900.0, boundary="open", backend=backend, exchange=exchange)
        for exchange in (None, Idle())
    ]
    assert runs[0].steps == runs[1].steps
    assert np.array_equal(runs[0].depth, runs[1].depth)
    assert np.array_equal(runs[0].max_depth, runs[1].max_depth)
    assert runs[0].mass.as_dict() == runs[1].mass.as_dict()
    assert runs[0].mass.to_sewer == runs[0].mass.from_sewer == 0.0


def test_mass_balance_books_the_exchange():
    mass = MassBalance(rain_in=10.0, initial_storage=2.0, to_sewer=4.0, from_sewer=1.0, final_storage=9.0)
    assert mass.error == 0.0
    assert mass.as_dict()["to_sewer_m3"] == 4.0 and mass.as_dict()["from_sewer_m3"] == 1.0


def test_run_flood_places_nodes_given_in_another_crs(tmp_path):
    """Coordinates in lon/lat (CRS84) over a DEM in EPSG:4549; the outfall's node off the DEM is reported."""
    lon, lat = transform_points("EPSG:4549", "OGC:CRS84", [J1[0], J2[0], X0 - 500.0], [J1[1], J2[1], J1[1]])
    at = {"J1": (lon[0], lat[0]), "J2": (lon[1], lat[1]), "O1": (lon[2], lat[2])}
    at_far = dict(at, J2=(lon[2], lat[2]))
    model = inp(tmp_path / "lonlat.inp", at=at_far)
    storm = measured([0.0, 600.0], [60.0, 0.0])
    params = FloodParams(storm=storm, after_storm_s=600.0, swmm_model=model, swmm_crs="OGC:CRS84")
    result = run_flood(bowl(J1), TRANSFORM, params, crs="EPSG:4549")
    summary = result.summary()
    assert summary["drainage"] == {"mode": "swmm", "inlets": 1}
    swmm = summary["swmm"]
    assert swmm["outside_grid"] == ["J2"] and swmm["coupled_nodes"] == 1
    assert swmm["nodes"][0]["x"] == pytest.approx(J1[0], abs=1e-3)
    assert any("outside the grid" in note for note in summary["notes"])
    assert swmm["to_sewer_m3"] > 0
    assert summary["model"]["mass_balance"]["to_sewer_m3"] == pytest.approx(swmm["to_sewer_m3"], abs=1e-5)
    assert summary["model"]["mass_balance"]["relative_error"] < 1e-12


def test_a_shared_swmm_model_runs_coupled_over_its_extent():
    """EPA's Example 1 (US units, its own subcatchments and rain) under a DEM through its junction rims."""
    path = shared_file("pipes/swmm_swmmio/Example1b.inp")
    at = read_coordinates(path)
    xy = np.array(list(at.values()))
    west, south = xy.min(axis=0) - 200.0
    cell = 50.0
    ny, nx = (np.ceil((xy.max(axis=0) - xy.min(axis=0) + 400.0) / cell)).astype(int)[::-1]
    transform = Affine(cell, 0.0, west, 0.0, -cell, south + ny * cell)
    # a plane through the junction rims (invert + 3 ft), in metres, 10 cm above them
    rims = {"10": 998, "13": 998, "14": 993, "15": 990, "16": 988, "17": 983, "19": 1013, "20": 1008}
    rims |= {"21": 993, "22": 990, "23": 993, "24": 987, "9": 1003}
    pts = np.array([(*at[k], v * 0.3048) for k, v in rims.items()])
    coef = np.linalg.lstsq(np.column_stack([pts[:, :2], np.ones(len(pts))]), pts[:, 2], rcond=None)[0]
    y, x = np.mgrid[0:ny, 0:nx]
    z = coef[0] * (west + (x + 0.5) * cell) + coef[1] * (south + ny * cell - (y + 0.5) * cell) + coef[2] + 0.1
    storm = measured([0.0, 900.0], [50.0, 10.0])
    params = FloodParams(storm=storm, after_storm_s=1800.0, swmm_model=path, resolution_m=None)
    result = run_flood(z, transform, params)
    swmm = result.swmm
    assert swmm["coupled_nodes"] == 13 and swmm["outside_grid"] == []
    assert swmm["other_nodes_uncoupled"] == 1
    mass = result.surface.mass
    assert mass.relative_error < 1e-12
    assert mass.to_sewer > 10.0  # thin sheet flow on 50 m cells: 13 grates take little of 0.8 million m³
    # US units: what the grid gave in m³ is SWMM's external inflow converted from ft³
    error = abs(swmm["swmm_continuity_error_pct"]) / 100.0
    given = swmm["swmm_routing"]["external_inflow_m3"]
    assert abs(given - mass.to_sewer) <= (error + 0.01) * mass.to_sewer
    assert np.isfinite(swmm["swmm_continuity_error_pct"])


# ----- bad input -----------------------------------------------------------------------------------------


def test_bad_models_are_refused_before_anything_runs(tmp_path):
    z = bowl(J1)
    grid = Grid(z, TRANSFORM)
    broken = tmp_path / "broken.inp"
    broken.write_text("[JUNCTIONS]\nJ1 abc 1\n[COORDINATES]\nJ1 1 2\n", encoding="utf-8")
    with pytest.raises(InvalidInput, match="ERROR"):
        SwmmCoupling(broken, grid, 600.0)
    with pytest.raises(InvalidInput, match="ERROR 209: undefined object TS1"):  # a hydrograph with no series
        SwmmCoupling(shared_file("pipes/swmm_swmmio/Example1.inp"), grid, 600.0)
    with pytest.raises(InvalidInput, match="none of its 2 junctions lies on the grid"):
        SwmmCoupling(inp(tmp_path / "far.inp", at={"J1": (0, 0), "J2": (1, 1), "O1": (2, 2)}), grid, 600.0)
    bare = inp(tmp_path / "bare.inp", at={})
    with pytest.raises(InvalidInput, match="no \\[COORDINATES\\]"):
        SwmmCoupling(bare, grid, 600.0)
    good = inp(tmp_path / "two.inp")
    for interval in (-60.0, 0.0, float("nan")):
        with pytest.raises(InvalidInput, match="interval"):
            SwmmCoupling(good, grid, 600.0, interval_s=interval)
    with pytest.raises(InvalidInput, match="interval"):
        FloodParams(storm=measured([0.0, 60.0], [10.0, 0.0]), swmm_model=good, swmm_interval_s=-1.0)
    with pytest.raises(InvalidInput, match="no such file"):
        SwmmCoupling(tmp_path / "absent.inp", grid, 600.0)
    # after every refusal the engine is free again: a good model opens
    SwmmCoupling(good, grid, 600.0).close()


# ----- the twin: CLI and job ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """A twin whose DEM is the bowl around J1, and the two-junction model inside its data folder."""
    root = tmp_path_factory.mktemp("swmm-twin")
    dem = root / "dem.tif"
    profile = {"driver": "GTiff", "width": NX, "height": NY, "count": 1, "dtype": "float32", "crs": "EPSG:4549"}
    with rasterio.open(dem, "w", transform=from_origin(X0, Y0 + NY * DX, DX, DX), **profile) as dst:
        dst.write(bowl(J1, rim=9.95).astype("float32"), 1)
    from ingestion.raster import ingest_raster

    directory = root / "twin"
    with init_store(directory, "EPSG:4549") as store:
        ingest_raster(store, dem, "dem")
    (directory / "models").mkdir()
    inp(directory / "models" / "two.inp")
    return directory


def analyze(data: Path, *args: str):
    return twin(
        "analyze", "flood", "--duration", "10", "--step", "5", "--after", "10",
        "--data", str(data), *args,
    )  # fmt: skip


def test_cli_runs_coupled_and_stores_the_results(data):
    result = analyze(data, "--swmm", str(data / "models" / "two.inp"), "--swmm-interval", "30", "--result-id", "c")
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["drainage"] == {"mode": "swmm", "inlets": 2}
    assert answer["swmm"]["to_sewer_m3"] > 0 and answer["swmm"]["interval_s"] == 30.0
    assert answer["model"]["mass_balance"]["relative_error"] < 1e-9
    assert answer["layers"]["max_depth"] == "c_max_depth"


def test_cli_bad_models_are_one_line_errors_that_write_nothing(data, tmp_path):
    before = state(data)
    broken = tmp_path / "broken.inp"
    broken.write_text("[JUNCTIONS]\nJ1 abc 1\n", encoding="utf-8")
    far = inp(tmp_path / "far.inp", at={"J1": (0, 0), "J2": (1, 1), "O1": (2, 2)})
    good = str(data / "models" / "two.inp")
    assert_one_line_error(analyze(data, "--swmm", str(broken)), "ERROR")
    assert_one_line_error(analyze(data, "--swmm", str(far)), "lies on the grid")
    assert_one_line_error(analyze(data, "--swmm", good, "--swmm-interval", "-5"), "interval")
    assert_one_line_error(analyze(data, "--swmm", good, "--swmm-crs", "EPSG:999999"), "unknown CRS")
    assert state(data) == before


def test_job_names_the_model_by_asset_or_data_path_only(data, tmp_path):
    from twin.store import open_store

    request = {"storm": {"duration_min": 10, "step_min": 5}, "swmm_model": "models/two.inp", "swmm_interval_s": 20}
    with open_store(data) as store:
        plan = plan_flood(store, request, 10**6)
        assert plan.params().swmm_model == (data / "models" / "two.inp").resolve()
        assert plan.params().swmm_interval_s == 20.0 and plan.params().swmm_crs == "EPSG:4549"
        key = store.assets.put_file(data / "models" / "two.inp", ".inp")
        assert swmm_model_path(store, key) == store.assets.open_path(key)
        with pytest.raises(NotFound):
            swmm_model_path(store, "0" * 64 + ".inp")
        outside = inp(tmp_path / "outside.inp")
        (data / "models" / "link.inp").symlink_to(outside)
        for ref in (str(outside), "../" * 12 + str(outside), "models/link.inp", "twin.gpkg", "models"):
            with pytest.raises(InvalidInput):
                swmm_model_path(store, ref)
        for bad in (
            {"swmm_model": "models/two.inp", "drainage": "none"},
            {"swmm_model": "models/two.inp", "swmm_interval_s": -1},
            {"swmm_crs": "EPSG:4326"},
        ):
            with pytest.raises(InvalidInput):
                plan_flood(store, {"storm": {"duration_min": 10}, **bad}, 10**6)
