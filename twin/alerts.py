"""Early warning (预警): threshold rules on sensor readings, raised/cleared alerts kept durably.

Sensors are the features of the twin's `sensor` layers (feature id = sensor id; properties
`type`, `quantity`, `unit`, optionally `threshold` and `alert_when`). Readings arrive in
batches (`AlertBook.record`): the batch is checked, each applicable rule is evaluated on the
readings newer than the last one it saw for that sensor, and the readings and the alert changes
are written together (the alert file's write lock is held across the store's own transaction,
so a batch that fails leaves neither readings nor alerts behind).

Rules are data: `analysis/data/alert_rules.json` (a twin may replace them with its own
`DATA/alert_rules.json`). Each rule applies to sensors of some `type` and `quantity`:

- `above` / `below`: a level test with hysteresis. Raised at the first reading strictly over
  (under) the `raise` level; cleared at the first reading at or under (over) the `clear` level,
  which lies on the safe side, so a value wobbling around the limit does not flap. Road ponding
  is raised over 0.15 m (GB 50014: 15 cm of water in one traffic lane) and cleared at 0.10 m.
- `drop`: a sudden fall. The baseline is the median of the sensor's readings of the last
  `window_minutes` before a reading; the rule is raised when the reading lies more than
  `raise_drop` (or `raise_drop_percent`) under it, and cleared once readings are back within
  `clear_within` of that baseline. A pressure-drop alert names the pipe of `network` nearest the
  sensor (ties: the larger diameter, then the smaller pipe id), so that the burst analysis of
  that pipe is one request away.

Alerts and their changes live in `DATA/alerts.sqlite` (one row per alert, one numbered event
per change, so that any number of server processes can stream the changes in order).
"""

from __future__ import annotations

import copy
import json
import math
import sqlite3
import statistics
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

from twin import crs as crs_mod
from twin.analysis.store_network import find_network
from twin.model import (
    BBox,
    Conflict,
    InvalidInput,
    LayerKind,
    NotFound,
    Observation,
    TimeFilter,
    now_utc,
    parse_instant,
    utc,
)
from twin.store import Store

RULES_FILE = Path(__file__).parent / "analysis" / "data" / "alert_rules.json"
USER_RULES_FILE = "alert_rules.json"  # in the data directory, replaces the packaged rules
ALERTS_FILE = "alerts.sqlite"
MAX_BATCH = 10_000
FUTURE_SKEW = timedelta(minutes=10)  # a reading further in the future than this is refused
NON_NEGATIVE = frozenset({"water_level", "rainfall"})
TESTS = ("above", "below", "drop")

UNITS: dict[str, tuple[str, float]] = {
    "m": ("length", 1.0),
    "cm": ("length", 0.01),
    "mm": ("length", 0.001),
    "Pa": ("pressure", 1.0),
    "kPa": ("pressure", 1e3),
    "MPa": ("pressure", 1e6),
    "bar": ("pressure", 1e5),
    "mH2O": ("pressure", 9806.65),
    "m3/s": ("flow", 1.0),
    "m3/h": ("flow", 1 / 3600),
    "L/s": ("flow", 1e-3),
}
"""Units a reading or a rule level may use, as (dimension, factor to the SI unit)."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
  id TEXT PRIMARY KEY, rule TEXT NOT NULL, kind TEXT NOT NULL, sensor_id TEXT NOT NULL,
  state TEXT NOT NULL, raised_at TEXT NOT NULL, cleared_at TEXT, body TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS alerts_sensor ON alerts (sensor_id, rule, state);
CREATE INDEX IF NOT EXISTS alerts_raised ON alerts (raised_at);
CREATE TABLE IF NOT EXISTS alert_events (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, alert_id TEXT NOT NULL, change TEXT NOT NULL, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rule_cursor (
  rule TEXT NOT NULL, sensor_id TEXT NOT NULL, last_time TEXT NOT NULL, PRIMARY KEY (rule, sensor_id));
CREATE TABLE IF NOT EXISTS latest_reading (
  sensor_id TEXT PRIMARY KEY, time TEXT NOT NULL, value REAL NOT NULL, quantity TEXT NOT NULL, unit TEXT NOT NULL)
"""


def tidy(value: float) -> float:
    """12 significant digits: 0.289 instead of 0.28900000000000003 in answers, nothing lost."""
    return float(f"{value:.12g}")


def convert(value: float, unit: str, to: str) -> float:
    """`value` in `unit` expressed in `to`; InvalidInput when the two do not measure the same thing."""
    if unit == to:
        return value
    a, b = UNITS.get(unit), UNITS.get(to)
    if a is None or b is None or a[0] != b[0]:
        raise InvalidInput(f"unit {unit!r} cannot be converted to {to!r} (known units: {', '.join(UNITS)})")
    return tidy(value * a[1] / b[1])


def text_time(value: datetime | None) -> str | None:
    """RFC 3339 UTC with 'Z' and milliseconds (sorts as text, as the store keeps times)."""
    if value is None:
        return None
    return utc(value).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# ----------------------------------------------------------------------------------- sensors
@dataclass(frozen=True)
class Sensor:
    """A sensor feature with the properties the rules read."""

    id: str
    layer: str
    name: str
    type: str
    quantity: str
    unit: str
    geometry: BaseGeometry | None
    properties: dict[str, Any] = field(hash=False, compare=False)

    @property
    def threshold(self) -> float | None:
        value = self.properties.get("threshold")
        return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def sensor_layers(store: Store) -> list[str]:
    return sorted(layer.id for layer in store.list_layers() if layer.kind == LayerKind.sensor)


def _sensor(layer: str, feature: Any) -> Sensor:
    p = feature.properties
    return Sensor(
        id=feature.fid,
        layer=layer,
        name=str(p.get("name") or feature.fid),
        type=str(p.get("type") or ""),
        quantity=str(p.get("quantity") or ""),
        unit=str(p.get("unit") or ""),
        geometry=feature.geometry,
        properties=dict(p),
    )


def list_sensors(store: Store) -> list[Sensor]:
    """Every current sensor of every sensor layer, by id."""
    found = [_sensor(layer, f) for layer in sensor_layers(store) for f in store.iter_features(layer)]
    return sorted(found, key=lambda s: s.id)


def find_sensor(store: Store, sensor_id: str) -> Sensor:
    """The sensor with this id in any sensor layer; NotFound otherwise."""
    layers = sensor_layers(store)
    for layer in layers:
        try:
            return _sensor(layer, store.get_feature(layer, sensor_id))
        except NotFound:
            continue
    where = ", ".join(layers) or "none: this twin has no sensor layer"
    raise NotFound(f"no sensor {sensor_id!r} in the sensor layers ({where})")


def lonlat(store: Store, geometry: BaseGeometry | None) -> list[float] | None:
    """A point's CRS84 position (the alert carries it so a client can show it without a lookup)."""
    if geometry is None or geometry.is_empty:
        return None
    point = geometry.centroid
    x, y = crs_mod.transform_points(store.crs, crs_mod.CRS84, [point.x], [point.y])
    return [round(float(x[0]), 8), round(float(y[0]), 8)]


# ------------------------------------------------------------------------------------- rules
@dataclass(frozen=True)
class Level:
    value: float
    unit: str

    def to(self, unit: str) -> float:
        return convert(self.value, self.unit, unit)


@dataclass(frozen=True)
class Rule:
    """One rule of the rules file (see the module docstring)."""

    id: str
    kind: str
    severity: str
    title: str
    sensor_types: tuple[str, ...]
    quantity: str
    test: str
    raise_level: Level | None = None  # None: the sensor's own `threshold`
    clear_level: Level | None = None
    clear_margin_percent: float | None = None
    window_minutes: float = 15.0
    min_baseline_readings: int = 2
    raise_drop: Level | None = None
    raise_drop_percent: float | None = None
    clear_within: Level | None = None
    network: str | None = None
    search_radius_m: float = 500.0
    source: str = ""

    def applies(self, sensor: Sensor) -> bool:
        if sensor.type not in self.sensor_types or sensor.quantity != self.quantity:
            return False
        if self.test == "drop" or self.raise_level is not None:
            return True
        # the sensor's own threshold: it must have one, meant the same way round
        return sensor.threshold is not None and sensor.properties.get("alert_when", self.test) == self.test

    def levels(self, sensor: Sensor) -> tuple[float, float]:
        """Raise and clear levels of a level test, in the sensor's unit."""
        # without a level of its own, applies() made sure the sensor has a threshold
        raised = self.raise_level.to(sensor.unit) if self.raise_level is not None else float(sensor.threshold)
        if self.clear_level is not None:
            return raised, self.clear_level.to(sensor.unit)
        margin = abs(raised) * (self.clear_margin_percent or 0.0) / 100.0
        return raised, tidy(raised - margin if self.test == "above" else raised + margin)


def _level(rule_id: str, name: str, value: Any, *, sensor_allowed: bool = False) -> Level | None:
    if value is None or (sensor_allowed and value == "sensor"):
        return None
    if not isinstance(value, dict) or not isinstance(value.get("value"), int | float) or value.get("unit") not in UNITS:
        raise InvalidInput(
            f"alert rule {rule_id!r}: {name} must be {{'value': number, 'unit': one of {', '.join(UNITS)}}}"
            + (" or 'sensor'" if sensor_allowed else "")
        )
    return Level(float(value["value"]), value["unit"])


def parse_rule(entry: dict[str, Any]) -> Rule:
    """A rule from its JSON entry, checked so that a bad rules file is refused when loaded."""
    rule_id = str(entry.get("id") or "")
    if not rule_id:
        raise InvalidInput("alert rule without an id")
    test = entry.get("test")
    if test not in TESTS:
        raise InvalidInput(f"alert rule {rule_id!r}: test must be one of {', '.join(TESTS)}, got {test!r}")
    types = entry.get("sensor_types")
    if not isinstance(types, list) or not types or not entry.get("quantity"):
        raise InvalidInput(f"alert rule {rule_id!r}: give sensor_types (a list) and quantity")
    rule = Rule(
        id=rule_id,
        kind=str(entry.get("kind") or rule_id),
        severity=str(entry.get("severity") or "warning"),
        title=str(entry.get("title") or rule_id),
        sensor_types=tuple(str(t) for t in types),
        quantity=str(entry["quantity"]),
        test=test,
        raise_level=_level(rule_id, "raise", entry.get("raise"), sensor_allowed=True),
        clear_level=_level(rule_id, "clear", entry.get("clear")),
        clear_margin_percent=entry.get("clear_margin_percent"),
        window_minutes=float(entry.get("window_minutes", 15.0)),
        min_baseline_readings=int(entry.get("min_baseline_readings", 2)),
        raise_drop=_level(rule_id, "raise_drop", entry.get("raise_drop")),
        raise_drop_percent=entry.get("raise_drop_percent"),
        clear_within=_level(rule_id, "clear_within", entry.get("clear_within")),
        network=entry.get("network"),
        search_radius_m=float(entry.get("search_radius_m", 500.0)),
        source=str(entry.get("source") or ""),
    )
    _check(rule, entry)
    return rule


def _check(rule: Rule, entry: dict[str, Any]) -> None:
    """Hysteresis must point the safe way; a drop needs a size and a way back."""
    if rule.test == "drop":
        if rule.raise_drop is None and rule.raise_drop_percent is None:
            raise InvalidInput(f"alert rule {rule.id!r}: a drop test needs raise_drop or raise_drop_percent")
        if rule.clear_within is None or rule.window_minutes <= 0:
            raise InvalidInput(f"alert rule {rule.id!r}: a drop test needs clear_within and window_minutes > 0")
        return
    if entry.get("raise") is None:
        raise InvalidInput(f"alert rule {rule.id!r}: give raise (a level or 'sensor')")
    if rule.raise_level is not None and rule.clear_level is not None:
        gap = rule.raise_level.value - rule.clear_level.to(rule.raise_level.unit)
        if (gap < 0) if rule.test == "above" else (gap > 0):
            raise InvalidInput(f"alert rule {rule.id!r}: the clear level must lie on the safe side of raise")
    elif rule.clear_level is None and not isinstance(rule.clear_margin_percent, int | float):
        raise InvalidInput(f"alert rule {rule.id!r}: give clear (a level) or clear_margin_percent")


def load_rules(data_dir: Path | None = None) -> list[Rule]:
    """The twin's own rules file when it has one, else the packaged rules."""
    path = Path(data_dir) / USER_RULES_FILE if data_dir is not None else None
    if path is None or not path.is_file():
        path = RULES_FILE
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"{path}: not a readable JSON rules file ({exc})") from exc
    rules = [parse_rule(entry) for entry in document.get("rules", [])]
    ids = [rule.id for rule in rules]
    if len(set(ids)) != len(ids):
        raise InvalidInput(f"{path}: rule ids must be unique")
    return rules


# ------------------------------------------------------------------------------------ alerts
@dataclass
class Alert:
    """One alert: raised by a reading, updated while it lasts, cleared by a later reading."""

    id: str
    rule: str
    kind: str
    severity: str
    title: str
    sensor_id: str
    sensor_name: str
    sensor_type: str
    quantity: str
    unit: str
    state: str
    raised_at: datetime
    raised_value: float
    threshold: float | None
    peak_value: float
    peak_at: datetime
    message: str
    location: list[float] | None = None
    cleared_at: datetime | None = None
    cleared_value: float | None = None
    details: dict[str, Any] = field(default_factory=dict)
    recorded: datetime | None = None  # server time of the last change

    def as_dict(self) -> dict[str, Any]:
        body = dict(self.__dict__)
        for name in ("raised_at", "peak_at", "cleared_at", "recorded"):
            body[name] = text_time(body[name])
        return body

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> Alert:
        values = dict(body)
        for name in ("raised_at", "peak_at", "cleared_at", "recorded"):
            values[name] = None if values.get(name) is None else parse_instant(values[name])
        return cls(**values)


def _worse(rule: Rule, value: float, than: float) -> bool:
    return value > than if rule.test == "above" else value < than


def _raise(rule: Rule, sensor: Sensor, reading: Observation, threshold: float | None, message: str) -> Alert:
    return Alert(
        id=f"{rule.id}-{sensor.id}-{reading.time.strftime('%Y%m%dT%H%M%S')}{reading.time.microsecond // 1000:03d}Z",
        rule=rule.id,
        kind=rule.kind,
        severity=rule.severity,
        title=rule.title,
        sensor_id=sensor.id,
        sensor_name=sensor.name,
        sensor_type=sensor.type,
        quantity=sensor.quantity,
        unit=sensor.unit,
        state="raised",
        raised_at=reading.time,
        raised_value=reading.value,
        threshold=threshold,
        peak_value=reading.value,
        peak_at=reading.time,
        message=message,
    )


def _clear(alert: Alert, reading: Observation) -> None:
    alert.state = "cleared"
    alert.cleared_at = reading.time
    alert.cleared_value = reading.value


Change = tuple[str, Alert]  # ('raised' | 'updated' | 'cleared', the alert as it was just then)
OnRaise = Callable[[Alert], None]


def _noted(changes: list[Change], change: str, alert: Alert) -> None:
    changes.append((change, copy.deepcopy(alert)))


def evaluate_level(
    rule: Rule, sensor: Sensor, readings: Sequence[Observation], active: Alert | None, on_raise: OnRaise | None = None
) -> list[Change]:
    """Changes of a level test over readings in time order (`on_raise` completes a new alert)."""
    raised_level, clear_level = rule.levels(sensor)
    changes: list[Change] = []
    for reading in readings:
        if active is None:
            if _worse(rule, reading.value, raised_level):
                word = "over" if rule.test == "above" else "under"
                message = (
                    f"{sensor.name}: {sensor.quantity} {reading.value:g} {sensor.unit} {word} "
                    f"the {raised_level:g} {sensor.unit} limit"
                )
                active = _raise(rule, sensor, reading, raised_level, message)
                active.details = {"clear_level": clear_level}
                if on_raise is not None:
                    on_raise(active)
                _noted(changes, "raised", active)
            continue
        if _worse(rule, reading.value, active.peak_value):
            active.peak_value, active.peak_at = reading.value, reading.time
            _noted(changes, "updated", active)
        if not _worse(rule, reading.value, clear_level):
            _clear(active, reading)
            _noted(changes, "cleared", active)
            active = None
    return changes


def evaluate_drop(
    rule: Rule,
    sensor: Sensor,
    readings: Sequence[Observation],
    history: Sequence[Observation],
    active: Alert | None,
    on_raise: OnRaise | None = None,
) -> list[Change]:
    """Changes of a drop test; `history` holds the readings of the window before the first one."""
    window = timedelta(minutes=rule.window_minutes)
    raise_drop = rule.raise_drop.to(sensor.unit) if rule.raise_drop is not None else math.inf
    percent = rule.raise_drop_percent if rule.raise_drop_percent is not None else math.inf
    clear_within = rule.clear_within.to(sensor.unit)
    seen = list(history)
    changes: list[Change] = []
    start = 0
    for reading in readings:
        while start < len(seen) and seen[start].time < reading.time - window:
            start += 1
        recent = [o.value for o in seen[start:]]
        seen.append(reading)
        if active is not None:
            if reading.value < active.peak_value:
                active.peak_value, active.peak_at = reading.value, reading.time
                _noted(changes, "updated", active)
            if reading.value >= active.details["clear_level"]:
                _clear(active, reading)
                _noted(changes, "cleared", active)
                active = None
            continue
        if len(recent) < rule.min_baseline_readings:
            continue
        baseline = tidy(statistics.median(recent))
        drop = tidy(baseline - reading.value)
        drop_percent = 100.0 * drop / baseline if baseline > 0 else 0.0
        if drop > raise_drop or drop_percent > percent:
            is_pressure = UNITS.get(sensor.unit, ("", 1.0))[0] == "pressure"
            size = f"{convert(drop, sensor.unit, 'kPa'):.0f} kPa" if is_pressure else f"{drop:g} {sensor.unit}"
            message = (
                f"{sensor.name}: {sensor.quantity} fell {size} ({drop_percent:.0f} %) under its "
                f"{rule.window_minutes:g}-minute baseline {baseline:g} {sensor.unit}"
            )
            level = tidy(baseline - min(raise_drop, baseline * percent / 100.0))
            active = _raise(rule, sensor, reading, level, message)
            active.details = {
                "baseline": baseline,
                "drop": drop,
                "drop_percent": round(drop_percent, 2),
                "window_minutes": rule.window_minutes,
                "clear_level": tidy(baseline - clear_within),
            }
            if on_raise is not None:
                on_raise(active)
            _noted(changes, "raised", active)
    return changes


def nearest_pipe(store: Store, network: str, point: BaseGeometry, radius: float) -> dict[str, Any] | None:
    """The pipe of `network` nearest `point` (project CRS) within `radius` metres: the closest,
    then the larger diameter, then the smaller id. None when the network is absent or far."""
    try:
        layer = find_network(store, network).pipes
    except NotFound:
        return None
    x, y = point.x, point.y
    features = store.query(layer, bbox=BBox(x - radius, y - radius, x + radius, y + radius), limit=None).features
    features = [f for f in features if f.geometry is not None and not f.geometry.is_empty]
    if not features:
        return None
    distances = shapely.distance(np.array([f.geometry for f in features], dtype=object), point)

    def key(k: int) -> tuple[float, float, str]:
        diameter = features[k].properties.get("diameter")
        size = float(diameter) if isinstance(diameter, int | float) else 0.0
        return (round(float(distances[k]), 3), -size, features[k].fid)

    best = min(range(len(features)), key=key)
    if distances[best] > radius:
        return None
    return {
        "network": network,
        "layer": layer,
        "pipe_id": features[best].fid,
        "distance_m": round(float(distances[best]), 3),
        "diameter": features[best].properties.get("diameter"),
    }


# ------------------------------------------------------------------------------- the readings
def in_unit(reading: Observation, unit: str) -> Observation | None:
    """A stored reading in `unit` (a blank unit is taken as meant); None when it cannot be converted."""
    try:
        value = convert(reading.value, reading.unit or unit, unit)
    except InvalidInput:
        return None
    return Observation(reading.sensor_id, reading.time, reading.quantity, value, unit)


def parse_readings(sensor: Sensor, items: Sequence[dict[str, Any]], now: datetime | None = None) -> list[Observation]:
    """A batch of readings for `sensor`, checked entry by entry, in the sensor's unit, time order.

    Each entry is {time, value, quantity?, unit?}: quantity defaults to the sensor's and must be
    it; unit defaults to the sensor's and is converted to it. Times are RFC 3339, at most
    `FUTURE_SKEW` ahead of the server's clock and distinct within the batch.
    """
    if not items:
        raise InvalidInput("the batch holds no readings")
    if len(items) > MAX_BATCH:
        raise InvalidInput(f"the batch holds {len(items)} readings; send at most {MAX_BATCH} per request")
    latest_allowed = (now or now_utc()) + FUTURE_SKEW
    readings: list[Observation] = []
    for k, item in enumerate(items):
        where = f"observations[{k}]"
        quantity = item.get("quantity") or sensor.quantity
        if quantity != sensor.quantity:
            raise InvalidInput(f"{where}: sensor {sensor.id} measures {sensor.quantity!r}, not {quantity!r}")
        value = item.get("value")
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise InvalidInput(f"{where}: value must be a finite number, got {value!r}")
        unit = item.get("unit") or sensor.unit
        try:
            value = convert(float(value), unit, sensor.unit)
        except InvalidInput as exc:
            raise InvalidInput(f"{where}: {exc}") from exc
        if quantity in NON_NEGATIVE and value < 0:
            raise InvalidInput(f"{where}: {quantity} cannot be negative, got {value!r}")
        time_text = item.get("time")
        if not isinstance(time_text, str):
            raise InvalidInput(f"{where}: time must be an RFC 3339 text, e.g. 2025-07-15T08:30:00Z")
        try:
            when = parse_instant(time_text)
        except InvalidInput as exc:
            raise InvalidInput(f"{where}: {exc}") from exc
        if when > latest_allowed:
            raise InvalidInput(f"{where}: time {time_text} lies in the future")
        readings.append(Observation(sensor.id, when, sensor.quantity, value, sensor.unit))
    readings.sort(key=lambda o: o.time)
    for a, b in zip(readings, readings[1:], strict=False):
        if a.time == b.time:
            raise InvalidInput(f"the batch has two readings at {text_time(a.time)}")
    return readings


# --------------------------------------------------------------------------------- the book
@dataclass
class RecordReport:
    """What a batch did: readings stored, readings too old to evaluate, alerts raised and cleared."""

    sensor_id: str
    stored: int
    evaluated: int
    late: int
    events: list[dict[str, Any]]  # each alert as it was when raised or cleared, with `change`

    def as_dict(self) -> dict[str, Any]:
        return {
            "sensor_id": self.sensor_id,
            "stored": self.stored,
            "evaluated": self.evaluated,
            "late": self.late,
            "alerts": self.events,
        }


class AlertBook:
    """The twin's alerts in `DATA/alerts.sqlite`; safe to use from several threads and processes."""

    def __init__(self, data_dir: Path, rules: list[Rule] | None = None) -> None:
        self.path = Path(data_dir) / ALERTS_FILE
        self.rules = rules if rules is not None else load_rules(data_dir)
        with self._connect() as con:
            con.execute("PRAGMA journal_mode=WAL")
            con.executescript(SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        con = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            yield con
        finally:
            con.close()

    # ----- writing
    def record(self, store: Store, sensor: Sensor, readings: Sequence[Observation]) -> RecordReport:
        """Store a checked batch and evaluate the rules on it, all or nothing.

        A reading at a time the sensor already has is a Conflict (a resent batch is refused,
        not stored twice). Readings not newer than the last one a rule saw are stored but not
        evaluated by it (`late`).
        """
        readings = sorted(readings, key=lambda o: o.time)
        with self._connect() as con:
            con.execute("BEGIN IMMEDIATE")  # one batch at a time: rule cursors stay consistent
            try:
                self._refuse_repeats(store, sensor, readings)
                changes: list[Change] = []
                evaluated = late = 0
                for rule in self.rules:
                    if not rule.applies(sensor):
                        continue
                    fresh = self._fresh(con, rule, sensor, readings)
                    late = max(late, len(readings) - len(fresh))
                    evaluated = max(evaluated, len(fresh))
                    if fresh:
                        changes += self._evaluate(con, store, rule, sensor, fresh)
                events = self._write(con, changes)
                store.add_observations(readings)
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        return RecordReport(sensor.id, len(readings), evaluated, late, events)

    def _refuse_repeats(self, store: Store, sensor: Sensor, readings: Sequence[Observation]) -> None:
        span = TimeFilter(readings[0].time, readings[-1].time)
        stored = {o.time for o in store.query_observations(sensor.id, time=span, quantity=sensor.quantity)}
        repeated = [o.time for o in readings if o.time in stored]
        if repeated:
            raise Conflict(
                f"sensor {sensor.id} already has {len(repeated)} of these readings "
                f"(first at {text_time(repeated[0])}); nothing was stored"
            )

    def _fresh(
        self, con: sqlite3.Connection, rule: Rule, sensor: Sensor, readings: Sequence[Observation]
    ) -> list[Observation]:
        row = con.execute(
            "SELECT last_time FROM rule_cursor WHERE rule = ? AND sensor_id = ?", (rule.id, sensor.id)
        ).fetchone()
        fresh = list(readings) if row is None else [o for o in readings if o.time > parse_instant(row[0])]
        if fresh:
            con.execute(
                "INSERT INTO rule_cursor (rule, sensor_id, last_time) VALUES (?, ?, ?) "
                "ON CONFLICT (rule, sensor_id) DO UPDATE SET last_time = excluded.last_time",
                (rule.id, sensor.id, text_time(fresh[-1].time)),
            )
        return fresh

    def _evaluate(
        self, con: sqlite3.Connection, store: Store, rule: Rule, sensor: Sensor, fresh: list[Observation]
    ) -> list[Change]:
        row = con.execute(
            "SELECT body FROM alerts WHERE rule = ? AND sensor_id = ? AND state = 'raised'", (rule.id, sensor.id)
        ).fetchone()
        active = Alert.from_dict(json.loads(row[0])) if row else None

        def complete(alert: Alert) -> None:
            alert.location = lonlat(store, sensor.geometry)
            if rule.network and sensor.geometry is not None:
                pipe = nearest_pipe(store, rule.network, sensor.geometry.centroid, rule.search_radius_m)
                alert.details["nearest_pipe"] = pipe
                if pipe is not None:
                    alert.message += f"; nearest {rule.network} pipe {pipe['pipe_id']}"

        if rule.test != "drop":
            return evaluate_level(rule, sensor, fresh, active, complete)
        first = fresh[0].time
        window = TimeFilter(first - timedelta(minutes=rule.window_minutes), first)
        stored = store.query_observations(sensor.id, time=window, quantity=sensor.quantity)
        history = [o for o in (in_unit(o, sensor.unit) for o in stored if o.time < first) if o is not None]
        return evaluate_drop(rule, sensor, fresh, history, active, complete)

    def _write(self, con: sqlite3.Connection, changes: list[Change]) -> list[dict[str, Any]]:
        """Each alert's last state, and an event per raise and clear; returns those events."""
        recorded = text_time(now_utc())
        final: dict[str, Alert] = {}
        events = []
        for change, alert in changes:
            final[alert.id] = alert
            if change != "updated":
                events.append({"change": change, **alert.as_dict(), "recorded": recorded})
        for alert in final.values():
            alert.recorded = parse_instant(recorded)
            con.execute(
                "INSERT INTO alerts (id, rule, kind, sensor_id, state, raised_at, cleared_at, body) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET state = excluded.state, "
                "cleared_at = excluded.cleared_at, body = excluded.body",
                (
                    alert.id,
                    alert.rule,
                    alert.kind,
                    alert.sensor_id,
                    alert.state,
                    text_time(alert.raised_at),
                    text_time(alert.cleared_at),
                    json.dumps(alert.as_dict(), ensure_ascii=False, allow_nan=False),
                ),
            )
        for event in events:
            con.execute(
                "INSERT INTO alert_events (alert_id, change, body) VALUES (?, ?, ?)",
                (event["id"], event["change"], json.dumps(event, ensure_ascii=False, allow_nan=False)),
            )
        return events

    # ----- reading
    def alerts(
        self,
        *,
        state: str | None = None,
        sensor_id: str | None = None,
        kind: str | None = None,
        since: datetime | None = None,
        limit: int = 100,
    ) -> list[Alert]:
        """Alerts, newest raised first, filtered by state ('raised'/'cleared'), sensor, kind, time."""
        sql, params = "SELECT body FROM alerts WHERE 1 = 1", []
        for column, value in (("state", state), ("sensor_id", sensor_id), ("kind", kind)):
            if value is not None:
                sql += f" AND {column} = ?"
                params.append(value)
        if since is not None:
            sql += " AND (raised_at >= ? OR cleared_at IS NULL OR cleared_at >= ?)"
            params += [text_time(since)] * 2
        sql += " ORDER BY raised_at DESC, id LIMIT ?"
        params.append(int(limit))
        with self._connect() as con:
            return [Alert.from_dict(json.loads(body)) for (body,) in con.execute(sql, params)]

    def get(self, alert_id: str) -> Alert:
        with self._connect() as con:
            row = con.execute("SELECT body FROM alerts WHERE id = ?", (alert_id,)).fetchone()
        if row is None:
            raise NotFound(f"no alert {alert_id!r}")
        return Alert.from_dict(json.loads(row[0]))

    def active_by_sensor(self) -> dict[str, list[Alert]]:
        out: dict[str, list[Alert]] = {}
        for alert in self.alerts(state="raised", limit=1_000_000):
            out.setdefault(alert.sensor_id, []).append(alert)
        return out

    def last_seq(self) -> int:
        with self._connect() as con:
            return int(con.execute("SELECT COALESCE(MAX(seq), 0) FROM alert_events").fetchone()[0])

    def events_after(self, seq: int, limit: int = 100) -> list[tuple[int, str, dict[str, Any]]]:
        """Alert changes numbered after `seq`, oldest first: (seq, 'raised'|'cleared', alert then)."""
        with self._connect() as con:
            rows = con.execute(
                "SELECT seq, change, body FROM alert_events WHERE seq > ? ORDER BY seq LIMIT ?", (int(seq), int(limit))
            ).fetchall()
        return [(seq, change, json.loads(body)) for seq, change, body in rows]

    def latest(self, store: Store, sensors: Sequence[Sensor]) -> dict[str, Observation | None]:
        """Each sensor's newest reading; remembered, so later calls read only what is newer."""
        with self._connect() as con:
            rows = con.execute("SELECT sensor_id, time, value, quantity, unit FROM latest_reading").fetchall()
        known = {sid: Observation(sid, parse_instant(t), q, v, u) for sid, t, v, q, u in rows}
        found: dict[str, Observation | None] = {}
        changed = []
        for sensor in sensors:
            before = known.get(sensor.id)
            newer = store.query_observations(
                sensor.id, time=TimeFilter(before.time, None) if before else None, quantity=sensor.quantity or None
            )
            found[sensor.id] = newer[-1] if newer else before
            if newer and (before is None or (newer[-1].time, newer[-1].value) != (before.time, before.value)):
                changed.append(newer[-1])
        if changed:
            with self._connect() as con:
                con.executemany(
                    "INSERT OR REPLACE INTO latest_reading (sensor_id, time, value, quantity, unit) VALUES (?,?,?,?,?)",
                    [(o.sensor_id, text_time(o.time), o.value, o.quantity, o.unit) for o in changed],
                )
        return found
