"""Where the demo district is, how big, and the fixed dates and random streams everything uses.

The district is anchored on a real place (Nanjing's old town, lon 118.78, lat 32.04) so that
viewers, geoid offsets and the IFC landing-point check behave as they would for a real city.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from twin.crs import transform_points

CRS = "EPSG:4549"
GEOGRAPHIC_CRS = "EPSG:4490"
VERTICAL_DATUM = "1985 National Height Datum"
ANCHOR_LONLAT = (118.78, 32.04)
# Ellipsoidal height ~= 1985 height + GEOID_OFFSET near the anchor: the EGM96 undulation at the
# district centre, bilinear from PROJ's egm96_15.gtx (an approximation of the CGCS2000 quasi-geoid,
# good to about a metre; a viewer needs no better).
GEOID_OFFSET = 0.95

# Fixed instants: nothing in the generated files may depend on the wall clock.
VALID_2015 = "2015-01-01T00:00:00Z"
VALID_CURRENT = "2021-06-01T00:00:00Z"
VALID_PLANNED = "2024-03-01T00:00:00Z"
FILE_TIMESTAMP = "2024-06-01T00:00:00Z"
OBSERVATION_DAY = "2024-07-15"


def to_projected(lon: np.ndarray | float, lat: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """CGCS2000 lon/lat to project metres (x = easting, y = northing)."""
    x, y = transform_points(GEOGRAPHIC_CRS, CRS, lon, lat)
    return np.asarray(x), np.asarray(y)


def to_lonlat(x: np.ndarray | float, y: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """Project metres to CGCS2000 lon/lat (for IfcSite and the manifest's lon/lat bbox)."""
    lon, lat = transform_points(CRS, GEOGRAPHIC_CRS, x, y)
    return np.asarray(lon), np.asarray(lat)


def anchor_corner() -> tuple[float, float]:
    """South-west corner: the projected anchor point rounded to whole hundreds of metres."""
    x, y = to_projected(*ANCHOR_LONLAT)
    return float(round(float(x) / 100.0) * 100.0), float(round(float(y) / 100.0) * 100.0)


def rng(seed: int, stream: str) -> np.random.Generator:
    """One independent random stream per component, so that skipping a part or adding a new
    component never changes what the others generate."""
    return np.random.default_rng([int(seed), zlib.crc32(stream.encode("utf-8"))])


@dataclass(frozen=True)
class Frame:
    """The district square and the derived extents of the three map scales."""

    x0: float
    y0: float
    size: float
    seed: int

    @property
    def x1(self) -> float:
        return self.x0 + self.size

    @property
    def y1(self) -> float:
        return self.y0 + self.size

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        return (self.x0, self.y0, self.x1, self.y1)

    @property
    def center(self) -> tuple[float, float]:
        return (self.x0 + self.size / 2.0, self.y0 + self.size / 2.0)

    @property
    def core_bbox(self) -> tuple[float, float, float, float]:
        """The 1:500 urban core: the central half of the district (1 km square by default)."""
        half = max(100.0, round(self.size / 4.0 / 100.0) * 100.0)
        cx, cy = self.center
        return (cx - half, cy - half, cx + half, cy + half)

    @property
    def ring_bbox(self) -> tuple[float, float, float, float]:
        """The 1:10000 extent: the district plus a ring of countryside as wide as the district."""
        return (self.x0 - self.size, self.y0 - self.size, self.x1 + self.size, self.y1 + self.size)


def make_frame(size_km: float = 2.0, seed: int = 20240601) -> Frame:
    """The district frame; the size is rounded to whole hundreds of metres (at least 500 m)."""
    size = max(500.0, round(float(size_km) * 10.0) * 100.0)
    x0, y0 = anchor_corner()
    return Frame(x0=x0, y0=y0, size=size, seed=int(seed))
