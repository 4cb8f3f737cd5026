"""The quantized-mesh-1.0 tile format that CesiumJS's `CesiumTerrainProvider` reads.

Layout (little-endian): an 88-byte header (tile centre in ECEF, minimum and maximum height,
bounding sphere, horizon occlusion point in ellipsoid-scaled ECEF); vertex count and the u, v
and height arrays (0..32767, zig-zag delta coded); triangle count and high-water-mark coded
indices (16-bit up to 65536 vertices, else 32-bit, 4-byte aligned); the west, south, east and
north edge vertex lists; then extensions, here `octvertexnormals` (id 1: two bytes per vertex).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from twin.crs import geodetic_to_ecef

from .normals import oct_encode

QUANTIZED_MAX = 32767
WGS84_RADII = np.array([6378137.0, 6378137.0, 6356752.3142451793])
OCT_VERTEX_NORMALS = 1
HEADER = struct.Struct("<3d2f4d3d")
# A tile too wide for any point to hide it behind the horizon (a hemisphere at zoom 0) gets its
# occlusion point this far out along its direction: in practice never occluded.
MAX_OCCLUSION_MAGNITUDE = 1e4


@dataclass(frozen=True)
class TerrainMesh:
    """A tile's mesh: quantized u/v (0 west/south .. 32767 east/north), ellipsoidal heights,
    the vertices' lon/lat, counter-clockwise triangles, and optional unit normals (ECEF)."""

    u: np.ndarray
    v: np.ndarray
    lon: np.ndarray
    lat: np.ndarray
    height: np.ndarray
    triangles: np.ndarray
    normals: np.ndarray | None = None


def zigzag_delta(values: np.ndarray) -> np.ndarray:
    """Differences to the previous value, zig-zag mapped to unsigned 16-bit."""
    d = np.diff(np.asarray(values, dtype=np.int32), prepend=0)
    return ((d << 1) ^ (d >> 31)).astype(np.uint16)


def high_water_mark(indices: np.ndarray) -> np.ndarray:
    """Index coding of webgl-loader: each index as (highest seen so far + 1) - index.

    Requires vertices numbered in order of first use, which `first_use_order` provides.
    """
    flat = np.asarray(indices, dtype=np.int64).ravel()
    highest = np.concatenate([[0], np.maximum.accumulate(flat)[:-1] + 1]) if flat.size else flat
    return highest - flat


def first_use_order(triangles: np.ndarray, count: int) -> np.ndarray:
    """A permutation of the vertices in the order the triangle list first uses them."""
    flat = np.asarray(triangles).ravel()
    first = np.full(count, flat.size, dtype=np.int64)
    np.minimum.at(first, flat, np.arange(flat.size))
    return np.argsort(first, kind="stable")


def bounding_sphere(points: np.ndarray) -> tuple[np.ndarray, float]:
    """The smaller of the spheres around the box centre and around the centroid."""
    best: tuple[np.ndarray, float] | None = None
    for centre in ((points.min(axis=0) + points.max(axis=0)) / 2, points.mean(axis=0)):
        radius = float(np.linalg.norm(points - centre, axis=1).max())
        if best is None or radius < best[1]:
            best = (centre, radius)
    assert best is not None
    return best


def horizon_occlusion_point(points: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """Cesium's `EllipsoidalOccluder.computeHorizonCullingPointFromVertices`, vectorised: the point
    along `direction` (ellipsoid-scaled space) that is below the horizon only when every vertex is."""
    scaled_direction = direction / WGS84_RADII
    scaled_direction /= np.linalg.norm(scaled_direction)
    scaled = points / WGS84_RADII
    magnitude = np.linalg.norm(scaled, axis=1)
    unit = scaled / magnitude[:, None]
    magnitude = np.maximum(magnitude, 1.0)  # points under the ellipsoid count as on it
    cos_alpha = unit @ scaled_direction
    sin_alpha = np.linalg.norm(np.cross(unit, scaled_direction), axis=1)
    cos_beta = 1.0 / magnitude
    sin_beta = np.sqrt(magnitude**2 - 1.0) * cos_beta
    denominator = cos_alpha * cos_beta - sin_alpha * sin_beta
    if (denominator <= 1.0 / MAX_OCCLUSION_MAGNITUDE).any():
        return scaled_direction * MAX_OCCLUSION_MAGNITUDE
    return scaled_direction * float((1.0 / denominator).max())


def encode_tile(mesh: TerrainMesh, normals: bool = False) -> bytes:
    """The tile as quantized-mesh-1.0 bytes (not yet compressed); `normals` adds the extension."""
    order = first_use_order(mesh.triangles, mesh.u.size)
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    u, v = mesh.u[order].astype(np.int64), mesh.v[order].astype(np.int64)
    height = mesh.height[order]
    triangles = rank[mesh.triangles]
    points = geodetic_to_ecef(mesh.lon[order], mesh.lat[order], height)

    low, high = float(height.min()), float(height.max())
    span = high - low
    quantized_height = np.zeros(height.size, np.int64) if span <= 0 else np.round((height - low) / span * QUANTIZED_MAX)
    centre, radius = bounding_sphere(points)
    occlusion = horizon_occlusion_point(points, centre)
    parts = [
        HEADER.pack(*centre, low, high, *centre, radius, *occlusion),
        struct.pack("<I", u.size),
        zigzag_delta(u).tobytes(),
        zigzag_delta(v).tobytes(),
        zigzag_delta(quantized_height.astype(np.int64)).tobytes(),
    ]
    wide = u.size > 65536
    index_type = np.uint32 if wide else np.uint16
    size = sum(len(p) for p in parts)
    if wide and size % 4:
        parts.append(b"\0" * (4 - size % 4))
    parts += [struct.pack("<I", len(triangles)), high_water_mark(triangles).astype(index_type).tobytes()]
    for on_edge, along in ((u == 0, v), (v == 0, u), (u == QUANTIZED_MAX, v), (v == QUANTIZED_MAX, u)):
        edge = np.flatnonzero(on_edge)
        edge = edge[np.argsort(along[edge], kind="stable")]
        parts += [struct.pack("<I", edge.size), edge.astype(index_type).tobytes()]
    if normals and mesh.normals is not None:
        encoded = oct_encode(mesh.normals[order]).tobytes()
        parts += [struct.pack("<BI", OCT_VERTEX_NORMALS, len(encoded)), encoded]
    return b"".join(parts)
