"""Plan geometry of lines shared by sections, profiles and clearance checks, array-first.

Where two lines meet, how far along each the meeting lies, which way a line runs there, and
how the answers name points in CRS84.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import shapely

from twin.crs import CRS84, transform_points

NODE_TOLERANCE = 0.05
"""Line ends closer than this (metres) are the same node."""


def meeting_points(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Points where a[k] meets b[k], with k for each; a shared stretch counts by its middle."""
    if not len(a):
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=object)
    parts, index = shapely.get_parts(shapely.intersection(a, b), return_index=True)
    kind = shapely.get_type_id(parts)
    lines = kind == 1
    if lines.any():
        parts[lines] = shapely.line_interpolate_point(parts[lines], 0.5, normalized=True)
    other = (kind != 0) & ~lines
    if other.any():
        parts[other] = shapely.centroid(parts[other])
    return index.astype(np.int64), parts


def directions(lines: np.ndarray, distance: np.ndarray, step: float = 0.05) -> np.ndarray:
    """Unit vectors (n, 2) along each line at `distance` metres from its start."""
    length = shapely.length(lines)
    d0 = np.clip(distance - step, 0.0, length)
    d1 = np.clip(distance + step, 0.0, length)
    p0 = shapely.get_coordinates(shapely.line_interpolate_point(lines, d0))
    p1 = shapely.get_coordinates(shapely.line_interpolate_point(lines, d1))
    v = p1 - p0
    norm = np.hypot(v[:, 0], v[:, 1])
    return v / np.where(norm > 0, norm, 1.0)[:, None]


def crossing_sine(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """|sin| of the plan angle between direction vectors (1 = square, 0 = parallel)."""
    return np.abs(u[:, 0] * v[:, 1] - u[:, 1] * v[:, 0])


def angle_degrees(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """The acute plan angle between directions, 0..90 degrees."""
    return np.degrees(np.arcsin(np.clip(crossing_sine(u, v), 0.0, 1.0)))


def fractions(lines: np.ndarray, points: np.ndarray) -> np.ndarray:
    """How far along each line (0..1 of its length) its point lies."""
    return shapely.line_locate_point(lines, points, normalized=True)


def lonlat_points(crs: str, x: np.ndarray, y: np.ndarray, z: np.ndarray | None = None) -> list[dict[str, Any]]:
    """GeoJSON points in CRS84 (1e-8 degrees, z in metres to the millimetre when given)."""
    x = np.asarray(x, dtype=float)
    if not len(x):
        return []
    lon, lat = transform_points(crs, CRS84, x, np.asarray(y, dtype=float))
    lon, lat = np.round(lon, 8).tolist(), np.round(lat, 8).tolist()
    if z is None:
        return [{"type": "Point", "coordinates": [a, b]} for a, b in zip(lon, lat, strict=True)]
    heights = [None if not np.isfinite(h) else round(float(h), 3) for h in np.asarray(z, dtype=float)]
    return [
        {"type": "Point", "coordinates": [a, b] if h is None else [a, b, h]}
        for a, b, h in zip(lon, lat, heights, strict=True)
    ]


def lonlat_line(crs: str, line: shapely.LineString) -> dict[str, Any]:
    """A project-CRS line as a GeoJSON LineString in CRS84."""
    xy = shapely.get_coordinates(line)
    lon, lat = transform_points(crs, CRS84, xy[:, 0], xy[:, 1])
    coords = np.round(np.column_stack([lon, lat]), 8).tolist()
    return {"type": "LineString", "coordinates": coords}


def rounded(values: np.ndarray, decimals: int = 3) -> list[float | None]:
    """JSON numbers: rounded, with NaN as null."""
    return [None if not np.isfinite(v) else round(float(v), decimals) for v in np.asarray(values, dtype=float)]


def value(number: float, decimals: int = 3) -> float | None:
    return None if not np.isfinite(number) else round(float(number), decimals)
