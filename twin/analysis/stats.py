"""Pipe statistics: length and count by class, material, diameter band, age band, owner.

Inside a region, a pipe counts once if it touches the region and with the length of its part
inside (a main crossing the boundary is not counted whole). Diameter bands use the nominal
diameter in millimetres (box sections: their width); age bands the years between `year` and the
reference date. Any other property name groups by its values as they are.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import shapely
from shapely.geometry.base import BaseGeometry

GROUPS = ("class", "material", "diameter", "age", "owner")
DIAMETER_BANDS = ((0, 100), (100, 200), (200, 300), (300, 500), (500, 1000), (1000, math.inf))
AGE_BANDS = ((0, 10), (10, 20), (20, 30), (30, 50), (50, math.inf))
UNKNOWN = "unknown"


def _band(value: float, bands: Sequence[tuple[float, float]], label: str, unit: str) -> str:
    if not math.isfinite(value):
        return UNKNOWN
    for low, high in bands:
        if low <= value < high:
            if math.isinf(high):
                return f"{label}>={low:g}{unit}"
            return f"{label}<{high:g}{unit}" if low == 0 else f"{label}{low:g}-{high:g}{unit}"
    return UNKNOWN


def _numbers(frame: pd.DataFrame, name: str) -> np.ndarray:
    if name not in frame.columns:
        return np.full(len(frame), np.nan)
    return pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=float)


def group_keys(frame: pd.DataFrame, group: str, year: int) -> list[str]:
    """The group label of every pipe for one grouping."""
    if group == "diameter":
        size = _numbers(frame, "diameter")
        size = np.where(np.isfinite(size), size, _numbers(frame, "width"))
        return [_band(v, DIAMETER_BANDS, "DN", "") for v in size.tolist()]
    if group == "age":
        built = _numbers(frame, "year")
        return [_band(year - v, AGE_BANDS, "", " years") for v in built.tolist()]
    if group not in frame.columns:
        return [UNKNOWN] * len(frame)
    return [UNKNOWN if v is None or (isinstance(v, float) and math.isnan(v)) else str(v) for v in frame[group]]


def pipe_statistics(
    frame: pd.DataFrame,
    lines: np.ndarray,
    region: BaseGeometry | None,
    group_by: Sequence[str],
    year: int,
) -> dict[str, Any]:
    """Counts and lengths (m) per group of the pipes (`frame` properties, `lines` project CRS)."""
    lines = np.asarray(lines, dtype=object)
    if region is not None and len(lines):
        inside = shapely.intersects(lines, region)
        frame, lines = frame.iloc[np.flatnonzero(inside)], lines[inside]
        length = shapely.length(shapely.intersection(lines, region))
    else:
        length = shapely.length(lines) if len(lines) else np.empty(0)
    out: dict[str, Any] = {"count": len(lines), "length_m": round(float(length.sum()), 2), "groups": {}}
    for group in group_by:
        keys = pd.Series(group_keys(frame, group, year), dtype=object)
        table = pd.DataFrame({"key": keys.to_numpy(), "length": length}).groupby("key")["length"].agg(["size", "sum"])
        table = table.sort_values("sum", ascending=False)
        out["groups"][group] = [
            {"value": str(key), "count": int(row["size"]), "length_m": round(float(row["sum"]), 2)}
            for key, row in table.iterrows()
        ]
    return out
