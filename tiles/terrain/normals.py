"""Per-vertex normals for lighting, from the sampled heights rather than from the mesh.

Central differences over the full sample lattice (one sample of margin around the tile) give
the surface's own slope at each sample, in Earth-centred coordinates as Cesium expects; two
tiles compute the same normal for a shared edge sample because the margin samples of one are
the inner samples of the other, so lighting has no seams at tile edges.
"""

from __future__ import annotations

import numpy as np

from twin.crs import geodetic_to_ecef


def geodetic_up(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """The ellipsoid's outward unit normal at lon/lat (degrees), shape (..., 3)."""
    lam, phi = np.radians(lon), np.radians(lat)
    return np.stack([np.cos(phi) * np.cos(lam), np.cos(phi) * np.sin(lam), np.sin(phi)], axis=-1)


def lattice_normals(lon: np.ndarray, lat: np.ndarray, heights: np.ndarray) -> np.ndarray:
    """Unit normals (rows-2, cols-2, 3) at the inner samples of a lattice with a one-sample margin.

    `lon` (columns) and `lat` (rows) are the lattice axes, `heights` ellipsoidal metres. Where
    the differences vanish (at a pole) the ellipsoid normal stands in.
    """
    lons, lats = np.meshgrid(lon, lat)
    points = geodetic_to_ecef(lons, lats, heights)
    east = points[1:-1, 2:] - points[1:-1, :-2]
    north = points[2:, 1:-1] - points[:-2, 1:-1]
    normal = np.cross(east, north)
    length = np.linalg.norm(normal, axis=-1, keepdims=True)
    degenerate = length[..., 0] < 1e-9
    unit = normal / np.where(degenerate[..., None], 1.0, length)
    if degenerate.any():
        unit[degenerate] = geodetic_up(lons[1:-1, 1:-1][degenerate], lats[1:-1, 1:-1][degenerate])
    return unit


def oct_encode(normals: np.ndarray) -> np.ndarray:
    """Unit vectors (n, 3) as two bytes each, Cesium's `AttributeCompression.octEncode` (range 255)."""
    n = np.asarray(normals, dtype=np.float64).reshape(-1, 3)
    p = n[:, :2] / np.abs(n).sum(axis=1, keepdims=True)
    below = n[:, 2] < 0
    sign = np.where(p >= 0, 1.0, -1.0)
    folded = (1.0 - np.abs(p[:, ::-1])) * sign
    p[below] = folded[below]
    return np.round((np.clip(p, -1.0, 1.0) * 0.5 + 0.5) * 255.0).astype(np.uint8)
