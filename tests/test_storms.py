"""Design storms: the GB 50014 formula, the Chicago hyetograph against its integral, rain series."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.integrate import quad

from twin.analysis.flood import storms
from twin.analysis.flood.storms import StormFormula, chicago, city_formula, design_storm, measured
from twin.model import InvalidInput, NotFound

NANJING = StormFormula(A1=64.173, C=0.837, b=32.9, n=1.011, name="nanjing")


def keifer_chu(formula: StormFormula, p: float, duration: float, r: float, t: float) -> float:
    """Instantaneous intensity (mm/min) of the Chicago storm, written out from Keifer and Chu (1957)."""
    a = formula.A1 * (1 + formula.C * math.log10(p))
    b, n = formula.b, formula.n
    tp = r * duration
    if t < tp:
        tb = (tp - t) / r
        return a * ((1 - n) * tb + b) / (tb + b) ** (n + 1)
    ta = (t - tp) / (1 - r)
    return a * ((1 - n) * ta + b) / (ta + b) ** (n + 1)


def test_gb50014_formula_by_hand():
    # q = 167·A1(1 + C lgP)/(t + b)^n for Nanjing, P = 3 a, t = 120 min, worked out step by step
    numerator = 167 * 64.173 * (1 + 0.837 * math.log10(3))
    q = numerator / (120 + 32.9) ** 1.011
    assert NANJING.q_l_s_ha(120, 3) == pytest.approx(q, rel=1e-12)
    assert NANJING.intensity_mm_min(120, 3) == pytest.approx(q / 167, rel=1e-12)
    assert 90 < q < 96  # about 93 L/(s·ha): the published 2-hour, 3-year figure's order
    assert NANJING.depth_mm(120, 3) == pytest.approx(q / 167 * 120, rel=1e-12)


@pytest.mark.parametrize("r", [0.0, 0.25, 0.4, 0.7, 1.0])
@pytest.mark.parametrize(("duration", "step"), [(120, 5), (60, 1), (180, 10)])
def test_chicago_total_equals_the_formula_integral(r, duration, step):
    storm = chicago(NANJING, 3, duration, step, r)
    assert len(storm.intensity_mm_h) == duration // step
    assert storm.depth_mm == pytest.approx(NANJING.depth_mm(duration, 3), rel=1e-12)


def test_chicago_steps_are_the_integral_of_the_instantaneous_intensity():
    duration, step, r = 120.0, 5.0, 0.4
    storm = chicago(NANJING, 3, duration, step, r)
    for k, value in enumerate(storm.intensity_mm_h):
        t0, t1 = k * step, (k + 1) * step
        points = [r * duration] if t0 < r * duration < t1 else None
        depth, _ = quad(lambda t: keifer_chu(NANJING, 3, duration, r, t), t0, t1, points=points, limit=200)
        assert value * step / 60.0 == pytest.approx(depth, rel=1e-8, abs=1e-10)
    peak_step = int(np.argmax(storm.intensity_mm_h))
    assert peak_step * step <= r * duration <= (peak_step + 1) * step


def test_any_window_around_the_peak_holds_the_formula_depth():
    # the Chicago storm's defining property: the window of length t around the peak gives i(t)·t
    duration, r = 120.0, 0.4
    for window in (10.0, 30.0, 60.0):
        t0 = r * duration - r * window
        held = np.diff(storms.chicago_cumulative_mm(NANJING, 5, duration, r, np.array([t0, t0 + window])))[0]
        assert held == pytest.approx(NANJING.depth_mm(window, 5), rel=1e-12)


def test_city_table_loads_and_says_where_each_value_comes_from():
    table = json.loads(storms.DATA_FILE.read_text(encoding="utf-8"))
    assert {"nanjing", "suqian", "yantai"} <= set(table["cities"])
    for key, formula in storms.cities().items():
        assert formula.source and formula.status in ("published", "uncertain"), key
        assert 5 < formula.intensity_mm_min(60, 2) * 60 < 150, key  # an hour's 2-year rain in mm
    assert pytest.approx(10716.7 / 167, rel=1e-4) == city_formula("Nanjing").A1
    assert storms.cities()["suqian"].status == "uncertain"


def test_design_storm_with_a_users_own_formula():
    own = StormFormula(A1=10.0, C=0.8, b=10.0, n=0.7)
    storm = design_storm(own, 2, 60, 5, 0.5)
    assert storm.depth_mm == pytest.approx(own.depth_mm(60, 2))


def test_bad_storms_are_refused():
    with pytest.raises(InvalidInput, match="duration"):
        chicago(NANJING, 3, -120, 5)
    with pytest.raises(InvalidInput, match="duration"):
        design_storm("nanjing", 3, 0)
    with pytest.raises(InvalidInput, match="whole number"):
        chicago(NANJING, 3, 120, 7)
    with pytest.raises(InvalidInput, match="peak ratio"):
        chicago(NANJING, 3, 120, 5, 1.5)
    with pytest.raises(InvalidInput, match="return period"):
        chicago(NANJING, -1, 120, 5)
    with pytest.raises(InvalidInput):
        StormFormula(A1=-1, C=0.5, b=10, n=0.7)
    with pytest.raises(NotFound, match="nanjing"):
        city_formula("atlantis")


def test_measured_series_in_intensity_or_depth_per_interval():
    by_rate = measured([0, 300, 600], [12.0, 24.0, 0.0])
    by_depth = measured([0, 300, 600], [1.0, 2.0, 0.0], unit="mm")
    np.testing.assert_allclose(by_rate.intensity_mm_h, by_depth.intensity_mm_h)
    assert by_rate.depth_mm == pytest.approx(3.0)
    late = measured([600, 900], [12.0, 12.0])  # starts 10 minutes in: dry before
    assert late.intensity_mm_h.tolist() == [0.0, 0.0, 12.0, 12.0]
    assert late.depth_between_m(0, 600) == 0.0
    assert late.depth_between_m(600, 750) == pytest.approx(0.0005)
    with pytest.raises(InvalidInput, match="equally spaced"):
        measured([0, 300, 700], [1, 2, 3])
    with pytest.raises(InvalidInput, match="negative"):
        measured([0, 300], [1, -2])
    with pytest.raises(InvalidInput, match="unit"):
        measured([0, 300], [1, 2], unit="inch")
