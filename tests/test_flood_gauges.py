"""Rain from the twin's rain gauges as the flood model's hyetograph."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from twin.analysis.flood.gauges import gauge_rain
from twin.model import InvalidInput, Observation

T0 = datetime(2024, 7, 15, 20, 0, tzinfo=UTC)
STEP = timedelta(minutes=5)


def log(store, depths_mm, *, sensor="RG9", unit="mm", skip=()) -> list[Observation]:
    readings = [
        Observation(sensor, T0 + k * STEP, "rainfall", float(v), unit) for k, v in enumerate(depths_mm) if k not in skip
    ]
    store.add_observations(readings)
    return readings


def test_a_tipping_bucket_log_becomes_its_storm(store):
    depths = [0.0, 0.0, 1.5, 4.0, 7.5, 2.0, 0.0, 0.5, 0.0, 0.0]
    log(store, depths)
    rain = gauge_rain(store, "RG9")
    storm = rain.hyetograph
    assert storm.step_s == 300.0
    assert storm.depth_mm == pytest.approx(sum(depths))
    # cut to the rain: from the first wet interval (ending 20:10) to the last (ending 20:35)
    np.testing.assert_allclose(storm.intensity_mm_h, np.array([1.5, 4.0, 7.5, 2.0, 0.0, 0.5]) * 12.0)
    assert rain.start == T0 + 2 * STEP - STEP
    assert (rain.readings, rain.missing) == (6, 0)


def test_a_window_keeps_its_dry_readings_and_counts_missing_ones(store):
    depths = [0.0, 2.0, 3.0, 1.0, 0.0, 0.0]
    log(store, depths, skip={3})  # the logger missed 20:15
    rain = gauge_rain(store, "RG9", start=T0, end=T0 + 5 * STEP)
    assert rain.hyetograph.depth_mm == pytest.approx(5.0)
    assert len(rain.hyetograph.intensity_mm_h) == 6
    assert rain.missing == 1 and rain.readings == 5
    assert rain.hyetograph.depth_between_m(0.0, 3 * 300.0) == pytest.approx(0.005)  # 2 + 3 mm by 20:10


def test_intensity_readings_are_taken_as_they_are(store):
    log(store, [0.0, 30.0, 60.0, 0.0], unit="mm/h")
    storm = gauge_rain(store, "RG9").hyetograph
    np.testing.assert_allclose(storm.intensity_mm_h, [30.0, 60.0])
    assert storm.depth_mm == pytest.approx(7.5)


@pytest.mark.parametrize(
    "case, message",
    [
        ("unknown gauge", "fewer than two"),
        ("mixed units", "all in mm"),
        ("irregular clock", "regular clock"),
        ("all dry", "no rain"),
        ("start after end", "before the end"),
    ],
)
def test_bad_gauge_logs_are_refused(store, case, message):
    if case == "mixed units":
        log(store, [1.0, 2.0])
        store.add_observations([Observation("RG9", T0 + 2 * STEP, "rainfall", 3.0, "mm/h")])
    elif case == "irregular clock":
        store.add_observations(
            [Observation("RG9", T0 + timedelta(minutes=m), "rainfall", 1.0, "mm") for m in (0, 5, 12, 15)]
        )
    elif case == "all dry":
        log(store, [0.0, 0.0, 0.0])
    else:
        log(store, [1.0, 2.0])
    with pytest.raises(InvalidInput, match=message):
        if case == "unknown gauge":
            gauge_rain(store, "RG404")
        elif case == "start after end":
            gauge_rain(store, "RG9", start=T0 + STEP, end=T0)
        else:
            gauge_rain(store, "RG9")
