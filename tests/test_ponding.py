"""Static ponding (fill-spill-merge) against levels worked out by hand, and the dynamic model on the same strip."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from twin.analysis.flood import Hyetograph, fill_spill, simulate
from twin.model import InvalidInput

# A strip of 1 m cells, west to east. Pits P (z 5), Q (2), R (0), S (1.5); ridges between them.
STRIP = np.array([[7.0, 5.0, 6.0, 2.0, 3.0, 0.0, 4.0, 1.5, 5.5, 8.0]])
ENDS_OPEN = {"west": "open", "east": "open"}  # a one-row grid: north and south stay closed

# 1 m of rain, every cell 1 m³, running down the steepest slope:
#   P gets cells 0,1 = 2 m³, holds 6 − 5 = 1 below its rim (cell 2, z 6): full at 6, 1 m³ spills east.
#   Q gets cells 2,3 = 2 m³, holds 3 − 2 = 1 below cell 4: full, and it meets R at 3.
#   R gets cells 4,5,6 = 3 m³, holds 3 − 0 = 3 below 3: just full.
#   S gets cells 7,8,9 = 3 m³, holds 4 − 1.5 = 2.5 below cell 6 (z 4): full at 4, 0.5 m³ spills west.
#   Q+R now hold 2 + 3 + 1 (from P) + 0.5 (from S) = 6.5 m³ over cells z 2, 0 and 3 (below 4):
#   3L − 5 = 6.5, L = 23/6 = 3.8333 m, under the rim at 4, so S stays apart at 4.
HAND_LEVELS = {1: 6.0, 3: 23 / 6, 4: 23 / 6, 5: 23 / 6, 7: 4.0}


def levels(depth: np.ndarray) -> dict[int, float]:
    return {int(j): float(STRIP[0, j] + depth[0, j]) for j in np.nonzero(depth[0] > 1e-6)[0]}


def test_strip_of_pits_settles_to_the_levels_worked_by_hand():
    pond = fill_spill(STRIP, 1.0, 1000.0, boundary="closed")
    got = levels(pond.depth)
    assert got.keys() == HAND_LEVELS.keys()
    for j, level in HAND_LEVELS.items():
        assert got[j] == pytest.approx(level, abs=1e-12)
    assert pond.stored_m3 == pytest.approx(10.0)
    assert pond.outflow_m3 == 0.0


def test_strip_with_open_ends_fills_to_the_lower_end_and_spills_out():
    # 3 m of rain = 30 m³; below the west end (z 7) cells 1..8 hold 2+1+5+4+7+3+5.5+1.5 = 29 m³,
    # so everything inside stands at 7 and 1 m³ leaves over the west edge.
    pond = fill_spill(STRIP, 1.0, 3000.0, boundary=ENDS_OPEN)
    assert pond.stored_m3 == pytest.approx(29.0)
    assert pond.outflow_m3 == pytest.approx(1.0)
    np.testing.assert_allclose((STRIP + pond.depth)[0, 1:9], 7.0)
    # with 1 m of rain nothing reaches the ends: the same levels as the closed strip
    assert levels(fill_spill(STRIP, 1.0, 1000.0, boundary=ENDS_OPEN).depth) == pytest.approx(HAND_LEVELS)


def test_the_dynamic_model_settles_to_the_same_levels():
    rain = Hyetograph(step_s=600.0, intensity_mm_h=np.array([6000.0]))  # 1 m in 10 minutes
    result = simulate(STRIP, 1.0, rain, duration_s=2400.0, manning=0.05, boundary="closed", record_every_s=600)
    got = {j: float(STRIP[0, j] + result.depth[0, j]) for j in HAND_LEVELS}
    for j, level in HAND_LEVELS.items():
        assert got[j] == pytest.approx(level, abs=0.01), (j, got)
    dry = [j for j in range(STRIP.shape[1]) if j not in HAND_LEVELS]
    assert result.depth[0, dry].max() < 0.01  # only films below the flow threshold stay on the slopes
    assert result.mass.relative_error < 1e-12


def test_volume_is_kept_and_every_pond_is_level_on_a_rough_surface():
    rng = np.random.default_rng(7)
    z = ndimage.gaussian_filter(rng.normal(size=(120, 150)), 3) * 4 + rng.uniform(0, 0.2, (120, 150))
    for boundary in ("closed", "open"):
        pond = fill_spill(z, 2.0, 40.0, boundary=boundary)
        assert pond.stored_m3 + pond.outflow_m3 == pytest.approx(pond.rain_m3, rel=1e-9)
        assert pond.depth.min() >= 0
        wet = pond.depth > 0
        labels, count = ndimage.label(wet)
        surface = z + pond.depth
        index = np.arange(1, count + 1)
        spread = ndimage.maximum(surface, labels, index) - ndimage.minimum(surface, labels, index)
        assert spread.max() < 1e-9  # still water is flat
        for axis in (0, 1):  # ...and held in: a dry neighbour of a wet cell is no lower than its water
            for a, b in ((slice(None, -1), slice(1, None)), (slice(1, None), slice(None, -1))):
                wa, wb = [tuple(s if k == axis else slice(None) for k in range(2)) for s in (a, b)]
                edge = wet[wa] & ~wet[wb]
                assert (z[wb][edge] >= surface[wa][edge] - 1e-9).all()
    assert fill_spill(z, 2.0, 40.0, boundary="closed").stored_m3 == pytest.approx(150 * 120 * 4 * 0.04)


def test_a_bowl_holds_its_volume_at_the_level_of_its_shape():
    # a cone-shaped pit: with V below level L = sum over cells (L − z); solve L independently by bisection
    y, x = np.mgrid[0:41, 0:41]
    z = np.hypot(x - 20, y - 20) * 0.1
    pond = fill_spill(z, 1.0, 30.0, boundary="closed")
    total = z.size * 0.03
    lo, hi = 0.0, 10.0
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if np.maximum(mid - z, 0).sum() < total else (lo, mid)
    assert (z + pond.depth)[20, 20] == pytest.approx(lo, abs=1e-9)


def test_ponds_are_listed_with_their_volume():
    pond = fill_spill(STRIP, 1.0, 1000.0, boundary="closed")
    ponds = pond.ponds(1.0, min_depth=0.15)
    assert sorted(round(p["volume_m3"], 6) for p in ponds) == sorted([1.0, 6.5, 2.5])


def test_bad_input():
    with pytest.raises(InvalidInput, match="nodata"):
        fill_spill(np.array([[1.0, np.nan], [2.0, 3.0]]), 1.0, 10.0)
    with pytest.raises(InvalidInput, match="rain"):
        fill_spill(STRIP, 1.0, -5.0)
    with pytest.raises(InvalidInput, match="boundary"):
        fill_spill(STRIP, 1.0, 5.0, boundary="leaky")
