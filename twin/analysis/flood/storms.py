"""Design storms: the GB 50014 storm-intensity formula, the Chicago hyetograph, measured series.

GB 50014 gives the mean intensity over a duration t (minutes) for a return period P (years) as
q = 167·A1·(1 + C·lgP)/(t + b)^n in L/(s·ha), i.e. i = A1·(1 + C·lgP)/(t + b)^n in mm/min.
The Chicago storm (Keifer and Chu, 1957) spreads that over time so that every window of length
t centred on the peak holds exactly the formula's depth for t; its step depths here are exact
differences of the cumulative depth, so the hyetograph's total equals the formula's integral.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache, cached_property
from pathlib import Path

import numpy as np

from twin.model import InvalidInput, NotFound

DATA_FILE = Path(__file__).with_name("data") / "storm_parameters.json"
LS_HA_PER_MM_MIN = 167.0  # 1 mm/min over a hectare is 166.7 L/s; GB 50014 rounds it to 167


@dataclass(frozen=True)
class StormFormula:
    """One city's GB 50014 parameters: A1 in mm/min, C, b in minutes, n."""

    A1: float
    C: float
    b: float
    n: float
    name: str = "custom"
    source: str = ""
    status: str = "user"

    def __post_init__(self) -> None:
        for key in ("A1", "C", "b", "n"):
            value = getattr(self, key)
            if not isinstance(value, int | float) or not math.isfinite(value):
                raise InvalidInput(f"storm formula parameter {key} must be a finite number, got {value!r}")
        if self.A1 <= 0 or self.b < 0 or not 0 < self.n < 2:
            raise InvalidInput("storm formula needs A1 > 0, b >= 0 and 0 < n < 2")

    def scale(self, return_period: float) -> float:
        """A1·(1 + C·lgP): the numerator in mm/min·min^n."""
        if not return_period > 0:
            raise InvalidInput(f"return period must be positive (years), got {return_period}")
        value = self.A1 * (1.0 + self.C * math.log10(return_period))
        if value <= 0:
            raise InvalidInput(f"return period {return_period} years gives no rain with this formula")
        return value

    def intensity_mm_min(self, duration_min: float, return_period: float) -> float:
        """Mean intensity over `duration_min` minutes."""
        return self.scale(return_period) / (_positive(duration_min, "duration") + self.b) ** self.n

    def q_l_s_ha(self, duration_min: float, return_period: float) -> float:
        """The formula as GB 50014 writes it, in L/(s·ha)."""
        return LS_HA_PER_MM_MIN * self.intensity_mm_min(duration_min, return_period)

    def depth_mm(self, duration_min: float, return_period: float) -> float:
        """Rain depth of the design storm of this duration."""
        return self.intensity_mm_min(duration_min, return_period) * duration_min


@dataclass(frozen=True)
class Hyetograph:
    """Rain intensity as a step function: `intensity_mm_h[k]` from k·step_s to (k+1)·step_s."""

    step_s: float
    intensity_mm_h: np.ndarray
    label: str = ""

    def __post_init__(self) -> None:
        values = np.asarray(self.intensity_mm_h, dtype=float)
        if values.ndim != 1 or len(values) == 0:
            raise InvalidInput("a rainfall series needs at least one value")
        if not np.all(np.isfinite(values)) or np.any(values < 0):
            raise InvalidInput("rain intensities must be finite and not negative")
        _positive(self.step_s, "rainfall time step")
        object.__setattr__(self, "intensity_mm_h", values)

    @property
    def duration_s(self) -> float:
        return self.step_s * len(self.intensity_mm_h)

    @property
    def depth_mm(self) -> float:
        return float(self.intensity_mm_h.sum() * self.step_s / 3600.0)

    @property
    def peak_mm_h(self) -> float:
        return float(self.intensity_mm_h.max())

    @cached_property
    def cumulative_m(self) -> np.ndarray:
        """Cumulative depth in metres at each step boundary (len + 1 values)."""
        return np.concatenate([[0.0], np.cumsum(self.intensity_mm_h * self.step_s / 3.6e6)])

    def depth_between_m(self, t0: float, t1: float) -> float:
        """Rain depth (m) that falls between t0 and t1 seconds: exact for the step function."""
        return _cumulative_at(self.cumulative_m, self.step_s, t1) - _cumulative_at(self.cumulative_m, self.step_s, t0)

    def as_dict(self) -> dict:
        return {
            "label": self.label,
            "step_s": self.step_s,
            "duration_s": self.duration_s,
            "depth_mm": round(self.depth_mm, 3),
            "peak_mm_h": round(self.peak_mm_h, 3),
            "intensity_mm_h": [round(float(v), 4) for v in self.intensity_mm_h],
        }


def _cumulative_at(cumulative: np.ndarray, step: float, t: float) -> float:
    position = min(max(t / step, 0.0), len(cumulative) - 1.0)
    k = min(int(position), len(cumulative) - 2)
    return float(cumulative[k] + (cumulative[k + 1] - cumulative[k]) * (position - k))


def _positive(value: float, what: str) -> float:
    if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise InvalidInput(f"{what} must be a positive number, got {value!r}")
    return float(value)


@cache
def _table() -> dict:
    return json.loads(DATA_FILE.read_text(encoding="utf-8"))["cities"]


def cities() -> dict[str, StormFormula]:
    """Every city formula in the data file, by key."""
    return {key: city_formula(key) for key in _table()}


def city_formula(city: str) -> StormFormula:
    """The formula of a city named in `data/storm_parameters.json` (key, case-insensitive)."""
    entry = _table().get(city.strip().lower())
    if entry is None:
        raise NotFound(f"no storm formula for city {city!r}; known: {', '.join(sorted(_table()))}")
    return StormFormula(
        A1=entry["A1"],
        C=entry["C"],
        b=entry["b"],
        n=entry["n"],
        name=entry["name"],
        source=entry["source"],
        status=entry["status"],
    )


def chicago_cumulative_mm(
    formula: StormFormula, return_period: float, duration_min: float, peak_ratio: float, t_min: np.ndarray | float
) -> np.ndarray:
    """Cumulative depth (mm) of the Chicago storm from its start to `t_min` (array or scalar).

    With a = A1(1 + C lgP), the depth within τ minutes before the peak is a·τ/(τ/r + b)^n and
    within τ after it a·τ/(τ/(1−r) + b)^n; together they give a·T/(T + b)^n over the storm.
    """
    a = formula.scale(return_period)
    r = peak_ratio
    t_peak = r * duration_min
    t = np.clip(np.asarray(t_min, dtype=float), 0.0, duration_min)

    def before(tau: np.ndarray) -> np.ndarray:
        return 0.0 if r == 0 else a * tau / (tau / r + formula.b) ** formula.n

    def after(tau: np.ndarray) -> np.ndarray:
        return 0.0 if r == 1 else a * tau / (tau / (1.0 - r) + formula.b) ** formula.n

    head = before(np.asarray(t_peak))
    return np.where(t <= t_peak, head - before(t_peak - np.minimum(t, t_peak)), head + after(np.maximum(t - t_peak, 0)))


def chicago(
    formula: StormFormula,
    return_period: float,
    duration_min: float,
    step_min: float = 5.0,
    peak_ratio: float = 0.4,
) -> Hyetograph:
    """Chicago design storm: step intensities whose sum is the formula's depth for the duration."""
    _positive(duration_min, "storm duration (minutes)")
    _positive(step_min, "storm time step (minutes)")
    if not 0.0 <= peak_ratio <= 1.0:
        raise InvalidInput(f"peak ratio r must be between 0 and 1, got {peak_ratio}")
    steps = duration_min / step_min
    if abs(steps - round(steps)) > 1e-9 or round(steps) < 1:
        raise InvalidInput(f"storm duration {duration_min} min is not a whole number of {step_min} min steps")
    edges = np.linspace(0.0, duration_min, int(round(steps)) + 1)
    depth = np.diff(chicago_cumulative_mm(formula, return_period, duration_min, peak_ratio, edges))
    label = f"Chicago storm, P = {return_period:g} a, {duration_min:g} min, r = {peak_ratio:g}, {formula.name}"
    return Hyetograph(step_s=step_min * 60.0, intensity_mm_h=depth / step_min * 60.0, label=label)


def measured(times_s: Sequence[float], values: Sequence[float], *, unit: str = "mm/h") -> Hyetograph:
    """A measured rainfall series on a regular clock.

    `times_s` are the starts of equal intervals (seconds, increasing); `values` are intensities
    in mm/h, or with `unit="mm"` the depth that fell in each interval (a tipping-bucket log).
    """
    t = np.asarray(times_s, dtype=float)
    v = np.asarray(values, dtype=float)
    if t.ndim != 1 or t.shape != v.shape or len(t) == 0:
        raise InvalidInput("rainfall times and values must be two sequences of the same, non-zero length")
    if len(t) == 1:
        raise InvalidInput("a measured rainfall series needs at least two readings to know its interval")
    steps = np.diff(t)
    if np.any(steps <= 0) or not np.allclose(steps, steps[0], rtol=1e-6):
        raise InvalidInput("rainfall readings must be equally spaced in time and increasing")
    step = float(steps[0])
    if unit == "mm":
        v = v / step * 3600.0
    elif unit != "mm/h":
        raise InvalidInput(f"rainfall unit must be 'mm/h' or 'mm', got {unit!r}")
    if t[0] > 0:  # the series starts later than the simulation: dry until then
        lead = t[0] / step
        if abs(lead - round(lead)) > 1e-6:
            raise InvalidInput("the first rainfall reading must start at a multiple of the interval")
        v = np.concatenate([np.zeros(int(round(lead))), v])
    return Hyetograph(step_s=step, intensity_mm_h=v, label="measured rainfall")


def design_storm(
    city: str | StormFormula,
    return_period: float,
    duration_min: float,
    step_min: float = 5.0,
    peak_ratio: float = 0.4,
) -> Hyetograph:
    """The usual request: a city's (or a user's) formula, P and duration as a Chicago storm."""
    formula = city if isinstance(city, StormFormula) else city_formula(city)
    return chicago(formula, return_period, duration_min, step_min, peak_ratio)
