"""The local-inertial surface model against analytic references, its numpy twin, and bad input."""

from __future__ import annotations

import numpy as np
import pytest
from affine import Affine

from twin.analysis.flood import Cancelled, FloodParams, Hyetograph, Inlets, prepare, run_flood, simulate, surface
from twin.analysis.flood.drainage import PipeNetwork, full_flow
from twin.analysis.flood.storms import chicago, city_formula
from twin.model import InvalidInput

BACKENDS = ["numba", "numpy"]


def bumpy(shape: tuple[int, int], seed: int = 3, relief: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]]
    return relief * (0.5 * np.sin(x / 4.0) * np.cos(y / 5.0) + rng.uniform(0, 0.5, shape))


@pytest.mark.parametrize("backend", BACKENDS)
def test_lake_at_rest_stays_at_rest_over_an_uneven_bed(backend):
    z = bumpy((40, 50))
    z[10:14, 20:26] = 3.0  # an island standing out of the lake
    h0 = np.maximum(1.2 - z, 0.0)
    result = simulate(z, 2.0, None, duration_s=900.0, h0=h0, boundary="closed", backend=backend, manning=0.03)
    assert np.abs(result.depth - h0).max() < 1e-9
    assert np.abs(result.max_depth - h0).max() < 1e-9
    assert result.steps > 100
    assert result.mass.outflow == 0.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_closed_basin_conserves_volume(backend):
    z = bumpy((30, 40), relief=2.0)
    h0 = np.zeros_like(z)
    h0[5:12, 5:15] = 1.5  # a column of water released at once, sloshing over wet and dry ground
    rain = Hyetograph(step_s=300.0, intensity_mm_h=np.array([60.0, 240.0, 30.0]))
    result = simulate(z, 3.0, rain, duration_s=1800.0, h0=h0, boundary="closed", backend=backend, manning=0.02)
    volume_in = h0.sum() * 9.0 + rain.depth_mm / 1000.0 * z.size * 9.0
    assert result.depth.sum() * 9.0 == pytest.approx(volume_in, rel=1e-6)
    assert result.mass.relative_error < 1e-6
    assert result.depth.min() >= 0.0


@pytest.mark.parametrize("blocks", [1, 5, 37], ids=["one block", "five blocks", "one row per block"])
def test_numba_and_numpy_take_the_same_steps(blocks, monkeypatch):
    """The numba sweep splits the rows into blocks that work out their halos separately: the
    answer must not depend on the split."""
    monkeypatch.setattr(surface, "_row_blocks", lambda rows, threads: np.linspace(0, rows, blocks + 1).astype(np.int64))
    z = bumpy((37, 53), seed=11, relief=3.0)
    rain = chicago(city_formula("nanjing"), 5, 30, 5)
    inlets = Inlets(rows=np.array([5, 20, 30]), cols=np.array([7, 40, 10]), capacity_m3s=np.array([0.01, 0.02, 0.5]))
    n = np.where(np.arange(53) < 26, 0.02, 0.06)[None, :] * np.ones((37, 1))
    runs = [
        simulate(z, 2.0, rain, inlets=inlets, manning=n, backend=b, boundary="open", drain_rate_mm_h=5.0)
        for b in BACKENDS
    ]
    assert runs[0].steps == runs[1].steps
    np.testing.assert_allclose(runs[0].depth, runs[1].depth, atol=1e-12)
    np.testing.assert_allclose(runs[0].max_depth, runs[1].max_depth, atol=1e-12)
    np.testing.assert_allclose(runs[0].time_above_s, runs[1].time_above_s, atol=1e-9)
    assert runs[0].mass.as_dict() == pytest.approx(runs[1].mass.as_dict(), rel=1e-9, abs=1e-9)


def hunter(n: float, u: float, x: np.ndarray, t: float) -> np.ndarray:
    """Hunter et al. (2005): h = [−7/3·n²·u²·(x − u·t)]^(3/7) behind the front x = u·t."""
    return np.maximum(-7.0 / 3.0 * n * n * u * u * (x - u * t), 0.0) ** (3.0 / 7.0)


def front_run(n: float, u: float, t: float, length: float, dx: float) -> tuple[np.ndarray, np.ndarray, object]:
    """A flat frictional plane, dry at first, fed at x = 0 by the analytic depth (ghost cell at −Δx/2)."""
    cells = int(length / dx)
    result = simulate(
        np.zeros((1, cells)),
        dx,
        None,
        duration_s=t,
        manning=n,
        boundary={"west": lambda time: float(hunter(n, u, np.array(-dx / 2), time))},
        record_every_s=t,
    )
    x = (np.arange(cells) + 0.5) * dx
    return x, result.depth[0], result


def test_moving_front_matches_hunter_2005():
    n, u, t = 0.03, 0.25, 3600.0
    x, h, result = front_run(n, u, t, 1500.0, 5.0)
    exact = hunter(n, u, x, t)
    body = x < 0.9 * u * t
    assert np.abs(h[body] - exact[body]).max() / exact[0] < 0.01
    assert (np.abs(h[body] - exact[body]) / exact[body]).max() < 0.03
    front = x[np.nonzero(h > 0.01 * exact[0])[0].max()]
    assert front == pytest.approx(u * t, rel=0.02)
    volume = (7.0 / 3.0 * n * n * u * u) ** (3.0 / 7.0) * (u * t) ** (10.0 / 7.0) / (10.0 / 7.0)
    assert h.sum() * 5.0 == pytest.approx(volume, rel=0.01)
    assert result.mass.boundary_in == pytest.approx(h.sum() * 5.0 * 5.0, rel=1e-9)


def test_moving_front_in_the_bates_2010_setting():
    # n = 0.01, u = 1 m/s: the Froude number reaches 0.5 near the front, where dropping the
    # convective term (which the analytic wave balances against local acceleration) steepens
    # the profile; the body of the wave still matches within a few percent
    n, u, t = 0.01, 1.0, 3600.0
    x, h, _ = front_run(n, u, t, 5000.0, 10.0)
    exact = hunter(n, u, x, t)
    body = x < 0.5 * u * t
    assert (np.abs(h[body] - exact[body]) / exact[body]).max() < 0.03
    front = x[np.nonzero(h > 0.01)[0].max()]
    assert front == pytest.approx(u * t, rel=0.1)


def test_inlets_take_no_more_than_their_capacity():
    z = np.zeros((10, 10))
    rain = Hyetograph(step_s=600.0, intensity_mm_h=np.array([360.0]))  # 60 mm in 10 min = 600 m³ on 1 ha
    inlet = Inlets(rows=np.array([5]), cols=np.array([5]), capacity_m3s=np.array([0.2]))
    h0 = np.full(z.shape, 0.3)  # standing water: the inlet always has more than it can take
    result = simulate(z, 10.0, rain, duration_s=1200.0, h0=h0, inlets=inlet, boundary="closed")
    assert result.mass.drained == pytest.approx(0.2 * 1200.0, rel=1e-9)
    assert result.mass.relative_error < 1e-12
    both = simulate(z, 10.0, rain, duration_s=1200.0, h0=h0, inlets=inlet, boundary="closed", drain_rate_mm_h=18.0)
    assert both.mass.drained == pytest.approx(0.2 * 1200.0 + 18e-3 / 3600 * 1e4 * 1200.0, rel=1e-9)
    dry = simulate(z, 10.0, rain, duration_s=1200.0, inlets=inlet, boundary="closed")
    assert 0 < dry.mass.drained < 0.2 * 1200.0  # on a dry plane it takes only what reaches it


def test_open_boundary_mass_balance_with_every_term():
    z = bumpy((50, 60), relief=2.0) + np.linspace(3, 0, 60)[None, :]
    rain = chicago(city_formula("nanjing"), 3, 60, 5)
    inlets = Inlets(rows=np.array([10, 25, 40]), cols=np.array([30, 50, 58]), capacity_m3s=np.array([0.05] * 3))
    result = simulate(z, 4.0, rain, duration_s=4800.0, inlets=inlets, boundary="open", manning=0.04)
    m = result.mass
    assert m.rain_in > 0 and m.drained > 0 and m.outflow > 0 and m.final_storage > 0
    assert m.relative_error < 1e-9


def test_manning_full_flow_by_hand_and_capacity_limited_network():
    # DN1000 at 1 ‰: A = π/4, R = D/4, Q = A·R^(2/3)·S^(1/2)/n
    expected = (np.pi / 4) * 0.25 ** (2 / 3) * 0.001**0.5 / 0.013
    assert full_flow([1.0], [np.nan], [np.nan], [0.001])[0] == pytest.approx(expected, rel=1e-12)
    box = full_flow([np.nan], [2.0], [1.0], [0.002])[0]
    assert box == pytest.approx(2.0 * (2.0 / 6.0) ** (2 / 3) * 0.002**0.5 / 0.013, rel=1e-12)
    # four inlets (20 L/s each) on a DN300 at 0.5 ‰ that carries about 34 L/s: each gets a quarter
    net = PipeNetwork.from_pipes(
        ["i1", "i2", "i3", "i4", "m1", "out"],
        [True, True, True, True, False, False],
        ["i1", "i2", "i3", "i4", "m1"],
        ["m1", "m1", "m1", "m1", "out"],
        diameter_m=[0.3, 0.3, 0.3, 0.3, 0.3],
        width_m=[np.nan] * 5,
        height_m=[np.nan] * 5,
        slope=[0.01, 0.01, 0.01, 0.01, 0.0005],
    )
    trunk = full_flow([0.3], [np.nan], [np.nan], [0.0005])[0]
    np.testing.assert_allclose(net.inlet_capacity(0.02), trunk / 4)
    assert trunk / 4 < 0.02


def test_cancel_and_progress():
    calls = []
    z = bumpy((20, 20))
    rain = Hyetograph(step_s=60.0, intensity_mm_h=np.array([100.0] * 60))
    with pytest.raises(Cancelled):
        simulate(z, 1.0, rain, backend="numpy", cancel=lambda: True, progress=lambda f, m: calls.append(f))
    done = simulate(z, 4.0, rain, duration_s=600, progress=lambda f, m: calls.append(f))
    assert calls[-1] == 1.0 and done.simulated_s == pytest.approx(600.0)


def test_dem_with_nodata_is_refused_or_filled():
    z = bumpy((30, 30)) + 10.0
    z[10:13, 10:12] = -9999.0
    transform = Affine(2.0, 0, 500000.0, 0, -2.0, 3500000.0)
    storm = Hyetograph(step_s=300.0, intensity_mm_h=np.array([50.0, 50.0]))
    with pytest.raises(InvalidInput, match=r"6 nodata cells .*fill"):
        run_flood(z, transform, FloodParams(storm=storm, drainage="none"), nodata=-9999.0)
    nan_z = np.where(z < -9000, np.nan, z)
    with pytest.raises(InvalidInput, match="nodata"):
        prepare(nan_z, transform)
    filled = run_flood(z, transform, FloodParams(storm=storm, drainage="none", fill_nodata=True), nodata=-9999.0)
    assert np.isfinite(filled.grid.z).all() and filled.grid.z.min() > 9.0
    assert filled.surface.mass.relative_error < 1e-9


def test_bad_model_input():
    z = bumpy((10, 10))
    with pytest.raises(InvalidInput, match="duration"):
        simulate(z, 1.0, None, duration_s=-5.0)
    with pytest.raises(InvalidInput, match="Manning"):
        simulate(z, 1.0, None, duration_s=5.0, manning=-0.1)
    with pytest.raises(InvalidInput, match="boundary"):
        simulate(z, 1.0, None, duration_s=5.0, boundary="leaky")
    with pytest.raises(InvalidInput, match="multiple"):
        prepare(z, Affine(2.0, 0, 0, 0, -2.0, 0), resolution=3.0)
    with pytest.raises(InvalidInput, match="north-up"):
        prepare(z, Affine(2.0, 0.1, 0, 0, -2.0, 0))
    with pytest.raises(InvalidInput, match="design capacity"):
        FloodParams(storm=Hyetograph(60.0, np.array([1.0])), drainage="design")
