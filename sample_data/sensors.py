"""Sensors and one day of readings (2024-07-15, every 5 minutes, UTC).

Water-level gauges sit in every low road section, pressure loggers on water mains, two rain
gauges and two flow meters at the water sources. The day has a summer storm (05:30–09:00Z)
whose ponding rises above the 0.15 m alert level at every low road sensor, and a main burst
at 10:20Z that drops the pressure at one logger far below its 0.20 MPa alert level until the
valves are shut and the main is restored.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import geopandas as gpd
import numpy as np
import shapely

from .frame import CRS, OBSERVATION_DAY, Frame, rng
from .terrain import LowSection
from .water import Network

STEP = timedelta(minutes=5)
RAIN_START, RAIN_END = "05:30", "09:00"
BURST_START, VALVES_SHUT, RESTORED = "10:20", "12:05", "13:30"
PONDING_THRESHOLD = 0.15
PRESSURE_THRESHOLD = 0.20


@dataclass
class SensorData:
    sensors: gpd.GeoDataFrame
    csv: str
    events: dict


def _times() -> list[datetime]:
    day = datetime.fromisoformat(OBSERVATION_DAY).replace(tzinfo=UTC)
    return [day + k * STEP for k in range(288)]


def _iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _minute(hhmm: str) -> int:
    h, m = hhmm.split(":")
    return int(h) * 60 + int(m)


def _hyetograph(minutes: np.ndarray, total_mm: float) -> np.ndarray:
    """Chicago-style storm between RAIN_START and RAIN_END, peak at 40 % of the duration."""
    t0, t1 = _minute(RAIN_START), _minute(RAIN_END)
    dur = t1 - t0
    peak = t0 + 0.4 * dur
    b, n = 12.0, 0.75
    inside = (minutes >= t0) & (minutes < t1)
    tt = np.where(minutes < peak, (peak - minutes) / 0.4, (minutes - peak) / 0.6)
    intensity = np.where(inside, 1.0 / (tt + b) ** n, 0.0)
    return intensity / intensity.sum() * total_mm


def build_sensors(frame: Frame, sections: list[LowSection], water: Network) -> SensorData:
    """Sensor points and the observation CSV text."""
    g = rng(frame.seed, "sensors")
    times = _times()
    minutes = np.arange(len(times)) * 5
    rows: list[tuple[str, np.ndarray, str, str, int]] = []  # sensor, values, quantity, unit, decimals
    recs = []

    # rain gauges, north and south of the river
    cx, cy = frame.center
    rain_total = np.array([78.0, 71.0])
    for k, (gx, gy) in enumerate(
        [(cx - 0.2 * frame.size, cy + 0.3 * frame.size), (cx + 0.25 * frame.size, cy - 0.35 * frame.size)]
    ):
        sid = f"RG{k + 1:03d}"
        rain = _hyetograph(minutes, rain_total[k]) * g.uniform(0.95, 1.05, len(minutes))
        rows.append((sid, np.round(rain, 1), "rainfall", "mm", 1))
        recs.append((sid, f"Rain gauge {k + 1}", "rain_gauge", "rainfall", "mm", 10.0, "above", None, None, (gx, gy)))
    rain = _hyetograph(minutes, float(rain_total.mean()))

    # road water level at each low section: a linear reservoir fed by the storm
    inflow = rain.copy()
    level = np.zeros(len(minutes))
    for i in range(1, len(minutes)):
        level[i] = level[i - 1] * 0.86 + inflow[i] * 0.012
    level /= level.max()
    peak_levels = {}
    for sec in sections:
        sid = f"WL{sec.id[3:]}"
        peak = round(min(0.9 * sec.depth, 0.16 + 0.45 * sec.depth), 3)
        val = np.clip(level * peak + g.normal(0.0, 0.002, len(minutes)), 0.0, None)
        val[level < 0.01] = 0.0
        rows.append((sid, np.round(val, 3), "water_level", "m", 3))
        recs.append(
            (
                sid,
                f"Ponding gauge {sec.road_name}",
                "road_water_level",
                "water_level",
                "m",
                PONDING_THRESHOLD,
                "above",
                sec.road_id,
                sec.id,
                sec.midpoint,
            )
        )
        peak_levels[sid] = float(np.round(val, 3).max())

    # pressure loggers on mains junctions spread over the district
    n = water.nodes
    pipes = water.pipes
    mains_nodes = set(pipes.loc[pipes["kind"] == "main", "start_id"]) | set(
        pipes.loc[pipes["kind"] == "main", "end_id"]
    )
    cand = n[(n["type"] == "junction") & n["node_id"].isin(mains_nodes)]
    cxy = shapely.get_coordinates(cand.geometry.values)
    k_side = max(2, int(round(frame.size / 700.0)))
    targets = [
        (frame.x0 + (i + 0.5) * frame.size / k_side, frame.y0 + (j + 0.5) * frame.size / k_side)
        for j in range(k_side)
        for i in range(k_side)
    ]
    chosen: list[int] = []
    for tx, ty in targets:
        d = np.hypot(cxy[:, 0] - tx, cxy[:, 1] - ty)
        d[chosen] = np.inf
        chosen.append(int(np.argmin(d)))
    diurnal = 0.018 * np.cos(2 * np.pi * (minutes / 60.0 - 3.0) / 24.0) - 0.012 * np.exp(
        -(((minutes / 60.0) - 11.0) ** 2) / 2.0
    )
    ground = cand["ground_elev"].to_numpy()[chosen]
    burst_k = int(np.argmin(np.hypot(cxy[chosen, 0] - cx, cxy[chosen, 1] - cy)))
    t_b, t_v, t_r = _minute(BURST_START), _minute(VALVES_SHUT), _minute(RESTORED)
    burst_shape = np.where(
        (minutes >= t_b) & (minutes < t_v),
        1.0 - np.exp(-(minutes - t_b) / 8.0),
        np.where((minutes >= t_v) & (minutes < t_r), np.exp(-(minutes - t_v) / 25.0), 0.0),
    )
    pressure_ids = []
    for k, row in enumerate(chosen):
        sid = f"PP{k + 1:03d}"
        base = 0.34 - 0.003 * (ground[k] - ground.min())
        drop = 0.21 if k == burst_k else 0.025 * g.uniform(0.5, 1.0)
        val = base + diurnal - drop * burst_shape + g.normal(0.0, 0.002, len(minutes))
        rows.append((sid, np.round(val, 3), "pressure", "MPa", 3))
        node = cand.iloc[row]
        recs.append(
            (
                sid,
                f"Pressure logger {k + 1}",
                "pipe_pressure",
                "pressure",
                "MPa",
                PRESSURE_THRESHOLD,
                "below",
                node["node_id"],
                None,
                tuple(cxy[row]),
            )
        )
        pressure_ids.append((sid, node["node_id"], float(np.round(val, 3).min())))

    # flow at the two sources: demand pattern plus the burst's extra draw
    demand = (
        1.0 + 0.25 * np.sin(2 * np.pi * (minutes / 60.0 - 0.5) / 24.0) + 0.1 * np.sin(4 * np.pi * minutes / 60.0 / 24.0)
    )
    scale = (frame.size / 2000.0) ** 2
    for k, (src, share) in enumerate(zip(water.sources, (0.75, 0.25), strict=True)):
        sid = f"FM{k + 1:03d}"
        base = 2400.0 * scale * share
        val = base * demand + base * 0.3 * burst_shape + g.normal(0.0, base * 0.01, len(minutes))
        rows.append((sid, np.round(val, 1), "flow", "m3/h", 1))
        node = n[n["node_id"] == src].iloc[0]
        xy = shapely.get_coordinates(node.geometry)[0]
        recs.append(
            (sid, f"Flow meter {k + 1}", "flow", "flow", "m3/h", round(base * 1.6, 1), "above", src, None, tuple(xy))
        )

    sensors = gpd.GeoDataFrame(
        {
            "sensor_id": [r[0] for r in recs],
            "name": [r[1] for r in recs],
            "type": [r[2] for r in recs],
            "quantity": [r[3] for r in recs],
            "unit": [r[4] for r in recs],
            "threshold": [float(r[5]) for r in recs],
            "alert_when": [r[6] for r in recs],
            "network_ref": [r[7] for r in recs],
            "low_section_id": [r[8] for r in recs],
        },
        geometry=shapely.points(np.array([r[9] for r in recs], dtype=float)),
        crs=CRS,
    )
    stamps = [_iso(t) for t in times]
    buf = io.StringIO()
    buf.write("sensor_id,time,quantity,value,unit\n")
    for sid, vals, qty, unit, dec in sorted(rows, key=lambda r: r[0]):
        fmt = f"{{:.{dec}f}}"
        buf.write("".join(f"{sid},{ts},{qty},{fmt.format(v)},{unit}\n" for ts, v in zip(stamps, vals, strict=True)))
    burst_sid, burst_node, burst_min = pressure_ids[burst_k]
    day = OBSERVATION_DAY
    events = {
        "rain": {
            "start": f"{day}T{RAIN_START}:00Z",
            "end": f"{day}T{RAIN_END}:00Z",
            "total_mm": {f"RG{k + 1:03d}": float(v) for k, v in enumerate(rain_total)},
            "ponding_threshold_m": PONDING_THRESHOLD,
            "peak_levels_m": peak_levels,
        },
        "pressure_drop": {
            "sensor_id": burst_sid,
            "node_id": burst_node,
            "start": f"{day}T{BURST_START}:00Z",
            "valves_shut": f"{day}T{VALVES_SHUT}:00Z",
            "restored": f"{day}T{RESTORED}:00Z",
            "threshold_mpa": PRESSURE_THRESHOLD,
            "min_value_mpa": burst_min,
        },
    }
    return SensorData(sensors, buf.getvalue(), events)
