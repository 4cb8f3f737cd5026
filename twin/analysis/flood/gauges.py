"""Rain from the twin's own rain gauges: the readings a gauge logged, as a hyetograph.

A planner replaying last night's storm wants the rain that really fell, not a design storm. A
gauge reports either the depth of each interval (tipping-bucket loggers, unit mm, stamped at
the interval's end) or an intensity (mm/h). The readings are put on the gauge's own clock (the
median spacing); a missing reading counts as no rain and the answer says how many there were.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np

from twin.analysis.flood.storms import Hyetograph
from twin.model import InvalidInput, TimeFilter
from twin.store import Store

RAINFALL = "rainfall"


@dataclass(frozen=True)
class GaugeRain:
    """The hyetograph, and where it came from: its clock time at t = 0 and the readings used."""

    hyetograph: Hyetograph
    start: datetime
    readings: int
    missing: int

    def as_dict(self) -> dict:
        return {
            "start": self.start.isoformat().replace("+00:00", "Z"),
            "readings": self.readings,
            "missing_readings": self.missing,
            **self.hyetograph.as_dict(),
        }


def gauge_rain(store: Store, sensor_id: str, start: datetime | None = None, end: datetime | None = None) -> GaugeRain:
    """The rain gauge `sensor_id` logged between `start` and `end` (both optional). Without them
    the run is cut to the rain: from the first wet interval to the last."""
    if start is not None and end is not None and start >= end:
        raise InvalidInput(f"rain gauge {sensor_id}: the start must be before the end")
    window = TimeFilter(start, end) if start is not None or end is not None else None
    readings = store.query_observations(sensor_id, time=window, quantity=RAINFALL)
    if len(readings) < 2:
        window = f" between {start or '…'} and {end or '…'}" if start or end else ""
        raise InvalidInput(f"rain gauge {sensor_id!r} has fewer than two rainfall readings{window}")
    units = {r.unit for r in readings}
    if len(units) != 1 or not units <= {"mm", "mm/h"}:
        raise InvalidInput(f"rain gauge {sensor_id}: readings must all be in mm or all in mm/h, got {sorted(units)}")
    unit = units.pop()
    seconds = np.array([r.time.timestamp() for r in readings])
    values = np.array([r.value for r in readings], dtype=float)
    if not np.all(np.isfinite(values)) or np.any(values < 0):
        raise InvalidInput(f"rain gauge {sensor_id}: a reading is negative or not a number")
    step = float(np.median(np.diff(seconds)))
    slot = np.rint((seconds - seconds[0]) / step).astype(np.int64)
    if np.any(np.abs(seconds - seconds[0] - slot * step) > 0.05 * step) or np.any(np.diff(slot) <= 0):
        raise InvalidInput(f"rain gauge {sensor_id}: readings are not on a regular clock of {step:g} s")
    intensity = np.zeros(slot[-1] + 1)
    intensity[slot] = values / step * 3600.0 if unit == "mm" else values
    # a reading stamped at t covers (t − step, t] for depths and [t, t + step) for intensities
    first_time = seconds[0] - step if unit == "mm" else seconds[0]
    wet = np.nonzero(intensity > 0)[0]
    if len(wet) == 0:
        raise InvalidInput(f"rain gauge {sensor_id} logged no rain in that time")
    lo, hi = (0, len(intensity)) if start is not None or end is not None else (wet[0], wet[-1] + 1)
    clock = datetime.fromtimestamp(first_time + lo * step, tz=readings[0].time.tzinfo)
    label = f"rain gauge {sensor_id} from {clock.isoformat()}"
    return GaugeRain(
        hyetograph=Hyetograph(step_s=step, intensity_mm_h=intensity[lo:hi], label=label),
        start=clock,
        readings=int(np.count_nonzero((slot >= lo) & (slot < hi))),
        missing=int((hi - lo) - np.count_nonzero((slot >= lo) & (slot < hi))),
    )
