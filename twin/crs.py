"""Every coordinate transform of the twin, and nothing else does one.

The project CRS is projected and metric (e.g. EPSG:4549, CGCS2000 / 3-degree Gauss-Kruger CM
120E). EPSG defines CGCS2000 systems northing-first, so transformers are always built with
`always_xy=True`: x is easting or longitude everywhere in the code. CGCS2000 and WGS 84 differ by
centimetres, so CRS84 and EPSG:4326 stand in for CGCS2000 geographic without a datum shift.

Heights in the store are orthometric (1985 national height datum); Cesium wants ellipsoidal
heights. `VerticalDatum` converts with a PROJ geoid grid when one is configured and present,
and otherwise with a constant offset configured per project.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import shapely
from pyproj import CRS, Transformer
from pyproj.exceptions import CRSError

from twin.model import BBox, InvalidInput

CRS84 = "OGC:CRS84"
CRS84_URI = "http://www.opengis.net/def/crs/OGC/1.3/CRS84"
WEB_MERCATOR = "EPSG:3857"
ECEF = "EPSG:4978"
CGCS2000_GEOGRAPHIC = "EPSG:4490"
GK_ZONE_CODES = range(4513, 4534)  # 3-degree zones, zone number prefixed to the easting
GK_CM_CODES = range(4534, 4555)  # 3-degree zones by central meridian (75E .. 135E)


@lru_cache(maxsize=256)
def parse_crs(text: str) -> CRS:
    """A CRS from 'EPSG:4549', an OGC URI, 'CRS84' or WKT; InvalidInput when unknown."""
    value = text.strip()
    if value.upper() in ("CRS84", "OGC:CRS84", CRS84_URI.upper()):
        return CRS.from_user_input(CRS84)
    if value.startswith("http://www.opengis.net/def/crs/EPSG/"):
        value = "EPSG:" + value.rstrip("/").rsplit("/", 1)[-1]
    try:
        return CRS.from_user_input(value)
    except CRSError as exc:
        raise InvalidInput(f"unknown CRS {text!r}") from exc


def crs_code(crs: CRS | str) -> str:
    """'EPSG:nnnn' (or 'OGC:CRS84') for a CRS, for messages and metadata."""
    definition = parse_crs(crs) if isinstance(crs, str) else crs
    authority = definition.to_authority(min_confidence=90)
    return f"{authority[0]}:{authority[1]}" if authority else definition.to_string()


def crs_uri(crs: str) -> str:
    """The OGC URI of a CRS, as OGC API Features names it in `Content-Crs`."""
    code = crs_code(crs)
    if code == CRS84:
        return CRS84_URI
    authority, number = code.split(":", 1)
    return f"http://www.opengis.net/def/crs/{authority}/0/{number}"


WGS84_CODES = ("OGC:CRS84", "EPSG:4326")


def _is_cgcs2000(definition: CRS) -> bool:
    geodetic = definition.geodetic_crs
    return geodetic is not None and geodetic.datum is not None and "China 2000" in geodetic.datum.name


def _stand_in(one: CRS, other: CRS) -> CRS:
    """WGS 84 lon/lat facing a CGCS2000 system becomes CGCS2000 lon/lat (identity to a few cm).

    Besides following the design's rule, this spares PROJ a search for datum operations that
    costs about half a second per transformer.
    """
    if crs_code(one) in WGS84_CODES and _is_cgcs2000(other):
        return CRS.from_user_input(CGCS2000_GEOGRAPHIC)
    return one


@lru_cache(maxsize=256)
def transformer(source: str, target: str) -> Transformer:
    """A cached transformer with x = easting/longitude on both sides."""
    src, dst = parse_crs(source), parse_crs(target)
    return Transformer.from_crs(_stand_in(src, dst), _stand_in(dst, src), always_xy=True)


def transform_points(source: str, target: str, x, y, z=None):
    """Arrays of coordinates from one CRS to another (x first)."""
    t = transformer(source, target)
    if z is None:
        return t.transform(np.asarray(x, dtype=float), np.asarray(y, dtype=float))
    return t.transform(np.asarray(x, dtype=float), np.asarray(y, dtype=float), np.asarray(z, dtype=float))


def transform_geometries(geometries, source: str, target: str):
    """Shapely geometries (array or list) reprojected in one vectorised pass; z is kept as is."""
    geoms = np.asarray(geometries, dtype=object)
    if source == target or parse_crs(source) == parse_crs(target):
        return geoms
    t = transformer(source, target)

    def reproject(coords: np.ndarray) -> np.ndarray:
        x, y = t.transform(coords[:, 0], coords[:, 1])
        out = coords.copy()
        out[:, 0], out[:, 1] = x, y
        return out

    result = geoms.copy()
    three_d = shapely.has_z(geoms)
    for mask, include_z in ((three_d, True), (~three_d, False)):
        if mask.any():
            result[mask] = shapely.transform(geoms[mask], reproject, include_z=include_z)
    present = shapely.is_geometry(result) & ~shapely.is_empty(result)
    if present.any() and not np.isfinite(shapely.bounds(result[present])).all():
        raise InvalidInput(f"coordinates fall outside the area of {crs_code(target)} when reprojected")
    return result


def transform_bbox(bbox: BBox, source: str, target: str) -> BBox:
    """A box's extent in another CRS, densified so that curved edges are covered."""
    if parse_crs(source) == parse_crs(target):
        return bbox
    bbox = _clip_to_area_of_use(bbox, source, target)
    bounds = transformer(source, target).transform_bounds(*bbox.as_tuple(), densify_pts=21)
    if not np.isfinite(bounds).all():
        raise InvalidInput(f"bbox {bbox.as_tuple()} cannot be expressed in {crs_code(target)}")
    return BBox(*bounds)


def _clip_to_area_of_use(bbox: BBox, source: str, target: str) -> BBox:
    """A lon/lat box wider than the target's area (say the whole world) is cut to that area,
    so a projection valid only in a 3-degree strip does not fold the box onto itself."""
    area = parse_crs(target).area_of_use
    if not parse_crs(source).is_geographic or area is None:
        return bbox
    minx, miny = max(bbox.minx, area.west), max(bbox.miny, area.south)
    maxx, maxy = min(bbox.maxx, area.east), min(bbox.maxy, area.north)
    if minx > maxx or miny > maxy:  # no overlap: keep an empty box at the area's corner
        return BBox(area.west, area.south, area.west, area.south)
    return BBox(minx, miny, maxx, maxy)


def within_area_of_use(crs: str, lon, lat, margin: float = 0.5) -> np.ndarray:
    """Whether lon/lat points lie in the CRS's area of use (widened by `margin` degrees).

    A projection stays finite far outside its zone, so coordinates given in the wrong CRS (or
    in a lon/lat order swap) are caught here rather than by a non-finite result.
    """
    lon, lat = np.asarray(lon, dtype=float), np.asarray(lat, dtype=float)
    area = parse_crs(crs).area_of_use
    if area is None:
        return np.isfinite(lon) & np.isfinite(lat)
    inside_lon = (lon >= area.west - margin) & (lon <= area.east + margin)
    return inside_lon & (lat >= area.south - margin) & (lat <= area.north + margin)


def gauss_kruger_code(longitude: float, by_zone_number: bool = False) -> str:
    """The CGCS2000 3-degree Gauss-Kruger EPSG code whose zone contains `longitude`."""
    zone = int(round(longitude / 3.0))  # zone n has central meridian 3n degrees
    if not 25 <= zone <= 45:
        raise InvalidInput(f"longitude {longitude} is outside China's 3-degree Gauss-Kruger zones (75E-135E)")
    first = GK_ZONE_CODES.start if by_zone_number else GK_CM_CODES.start
    return f"EPSG:{first + zone - 25}"


def check_project_crs(text: str) -> str:
    """The project CRS must be projected and metric, so lengths and areas are in metres."""
    definition = parse_crs(text)
    if not definition.is_projected:
        raise InvalidInput(f"project CRS {text!r} must be a projected CRS in metres (e.g. EPSG:4549)")
    unit = definition.axis_info[0].unit_name
    if unit not in ("metre", "meter"):
        raise InvalidInput(f"project CRS {text!r} has axis unit {unit!r}; a metric CRS is required")
    return crs_code(definition)


@dataclass(frozen=True)
class VerticalDatum:
    """Orthometric (1985 datum) to ellipsoidal heights: a geoid grid, else a constant offset.

    `offset` is the geoid undulation N in metres (ellipsoidal = orthometric + N) used when no
    grid is given or the grid file is missing; around Nanjing N is about 3 m.
    """

    offset: float = 0.0
    geoid_grid: str | None = None

    def grid_available(self) -> bool:
        return bool(self.geoid_grid) and Path(self.geoid_grid).is_file()

    def to_ellipsoidal(self, lon, lat, height):
        """Ellipsoidal heights (CGCS2000 ≈ WGS 84) for orthometric heights at lon/lat."""
        h = np.asarray(height, dtype=float)
        if self.grid_available():
            pipeline = f"+proj=vgridshift +grids={self.geoid_grid} +multiplier=1"
            t = Transformer.from_pipeline(pipeline)
            _, _, z = t.transform(np.asarray(lon, float), np.asarray(lat, float), h)
            return np.asarray(z)
        return h + self.offset

    def to_orthometric(self, lon, lat, height):
        h = np.asarray(height, dtype=float)
        if self.grid_available():
            pipeline = f"+proj=vgridshift +grids={self.geoid_grid} +multiplier=-1"
            t = Transformer.from_pipeline(pipeline)
            _, _, z = t.transform(np.asarray(lon, float), np.asarray(lat, float), h)
            return np.asarray(z)
        return h - self.offset


def to_ecef(project_crs: str, x, y, orthometric_height, datum: VerticalDatum):
    """Earth-centred coordinates (EPSG:4978) for project-CRS points, via ellipsoidal heights."""
    lon, lat = transform_points(project_crs, CRS84, x, y)
    h = datum.to_ellipsoidal(lon, lat, orthometric_height)
    return transform_points("EPSG:4979", ECEF, lon, lat, h)


def enu_to_ecef_matrix(lon: float, lat: float, height: float) -> np.ndarray:
    """The 4x4 column-major-ready matrix from a local east-north-up frame to ECEF (3D Tiles)."""
    x, y, z = transform_points("EPSG:4979", ECEF, [lon], [lat], [height])
    lam, phi = np.radians(lon), np.radians(lat)
    east = np.array([-np.sin(lam), np.cos(lam), 0.0])
    north = np.array([-np.sin(phi) * np.cos(lam), -np.sin(phi) * np.sin(lam), np.cos(phi)])
    up = np.array([np.cos(phi) * np.cos(lam), np.cos(phi) * np.sin(lam), np.sin(phi)])
    matrix = np.eye(4)
    matrix[:3, 0], matrix[:3, 1], matrix[:3, 2] = east, north, up
    matrix[:3, 3] = [x[0], y[0], z[0]]
    return matrix


GEODETIC_3D = "EPSG:4979"


def horizontal_crs(text: str) -> str:
    """The horizontal part of a compound CRS (e.g. EPSG:9897 -> EPSG:2169); other CRSs as they are."""
    definition = parse_crs(text)
    if definition.is_compound:
        return crs_code(definition.sub_crs_list[0])
    return crs_code(definition)


def geodetic_to_enu(lon, lat, height, origin: tuple[float, float, float]) -> np.ndarray:
    """Points (degrees, metres above the ellipsoid) as east-north-up metres around `origin` (lon, lat, h)."""
    x, y, z = transform_points(GEODETIC_3D, ECEF, lon, lat, height)
    frame = enu_to_ecef_matrix(*origin)
    offsets = np.column_stack([x, y, z]) - frame[:3, 3]
    return offsets @ frame[:3, :3]


def enu_to_geodetic(enu, origin: tuple[float, float, float]):
    """East-north-up metres around `origin` back to lon, lat (degrees) and ellipsoidal height."""
    frame = enu_to_ecef_matrix(*origin)
    points = np.asarray(enu, dtype=float).reshape(-1, 3) @ frame[:3, :3].T + frame[:3, 3]
    return transform_points(ECEF, GEODETIC_3D, points[:, 0], points[:, 1], points[:, 2])


WGS84_A = 6378137.0
WGS84_E2 = 6.69437999014e-3  # first eccentricity squared


def geodetic_to_ecef(lon, lat, height) -> np.ndarray:
    """EPSG:4979 to EPSG:4978 in closed form, (n, 3): same numbers as PROJ, without its per-point
    cost, for arrays of tens of thousands of points (terrain tiles)."""
    lam, phi = np.radians(np.asarray(lon, dtype=float)), np.radians(np.asarray(lat, dtype=float))
    h = np.asarray(height, dtype=float)
    sin_phi, cos_phi = np.sin(phi), np.cos(phi)
    n = WGS84_A / np.sqrt(1.0 - WGS84_E2 * sin_phi**2)
    return np.stack(
        [(n + h) * cos_phi * np.cos(lam), (n + h) * cos_phi * np.sin(lam), (n * (1.0 - WGS84_E2) + h) * sin_phi],
        axis=-1,
    )


def projected_to_enu(
    source: str, points, origin: tuple[float, float, float], datum: VerticalDatum | None = None
) -> np.ndarray:
    """Points of a projected CRS (x, y, orthometric z) as east-north-up metres around `origin`
    (lon, lat, ellipsoidal height): how a reality mesh delivered in Gauss-Kruger metres is placed."""
    if not parse_crs(source).is_projected:
        raise InvalidInput(f"{crs_code(source)} is not a projected CRS; reality meshes need metres")
    xyz = np.asarray(points, dtype=float).reshape(-1, 3)
    lon, lat = transform_points(source, CRS84, xyz[:, 0], xyz[:, 1])
    if not (np.isfinite(lon).all() and np.isfinite(lat).all()):
        raise InvalidInput(f"coordinates fall outside the area of {crs_code(source)}")
    height = (datum or VerticalDatum()).to_ellipsoidal(lon, lat, xyz[:, 2])
    return geodetic_to_enu(lon, lat, height, origin)


def projected_to_geodetic(
    source: str, x: float, y: float, z: float, datum: VerticalDatum | None = None
) -> tuple[float, float, float]:
    """One projected point (orthometric z) as lon, lat and ellipsoidal height."""
    if not parse_crs(source).is_projected:
        raise InvalidInput(f"{crs_code(source)} is not a projected CRS; reality meshes need metres")
    lon, lat = transform_points(source, CRS84, [x], [y])
    if not (np.isfinite(lon).all() and np.isfinite(lat).all()):
        raise InvalidInput(f"origin {x}, {y} falls outside the area of {crs_code(source)}")
    height = (datum or VerticalDatum()).to_ellipsoidal(lon, lat, [z])
    return float(lon[0]), float(lat[0]), float(np.asarray(height)[0])


def height_unit_factor(text: str) -> float:
    """Metres per height unit of a source CRS: the vertical CRS's unit in a compound CRS, else
    the horizontal unit of a projected CRS (LAS files in US feet carry heights in feet too),
    else metres."""
    definition = parse_crs(text)
    candidates = definition.sub_crs_list[1:] if definition.is_compound else [definition]
    for candidate in candidates:
        if candidate.is_geographic:
            continue
        for axis in candidate.axis_info:
            if axis.unit_conversion_factor:
                return float(axis.unit_conversion_factor)
    return 1.0


def source_to_enu(
    source: str, x, y, z, origin: tuple[float, float, float], datum: VerticalDatum
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Many points of any CRS (x, y horizontal, z orthometric in the CRS's height unit) as
    east-north-up metres around `origin` (lon, lat, ellipsoidal h), with their lon and lat.

    The ECEF step is the closed form, so millions of points (a point cloud) cost one PROJ pass.
    """
    horizontal, unit = split_crs(source)
    lon, lat = transform_points(horizontal, CRS84, x, y)
    if not (np.isfinite(lon).all() and np.isfinite(lat).all()):
        raise InvalidInput(f"coordinates fall outside the area of {crs_label(source)}")
    height = datum.to_ellipsoidal(lon, lat, np.asarray(z, dtype=float) * unit)
    frame = enu_to_ecef_matrix(*origin)
    return (geodetic_to_ecef(lon, lat, height) - frame[:3, 3]) @ frame[:3, :3], lon, lat


def _identified(definition: CRS) -> str:
    """'AUTHORITY:code' when the CRS carries its own id, else its WKT (no PROJ identify search)."""
    ident = definition.to_json_dict().get("id")
    return f"{ident['authority']}:{ident['code']}" if ident else definition.to_wkt()


@lru_cache(maxsize=64)
def split_crs(source: str) -> tuple[str, float]:
    """The horizontal CRS and the metres per height unit of a source CRS, cached (identifying a
    CRS given as WKT without an authority costs PROJ most of a second)."""
    definition = parse_crs(source)
    horizontal = definition.sub_crs_list[0] if definition.is_compound else definition
    return _identified(horizontal), height_unit_factor(source)


@lru_cache(maxsize=64)
def crs_label(source: str) -> str:
    """A short name for messages and metadata: 'EPSG:nnnn' when the CRS names its id, else its name."""
    definition = parse_crs(source)
    ident = definition.to_json_dict().get("id")
    return f"{ident['authority']}:{ident['code']}" if ident else definition.name


def reheight_enu(
    enu, origin: tuple[float, float, float], datum: VerticalDatum
) -> tuple[np.ndarray, tuple[float, float, float]]:
    """East-north-up points whose heights are orthometric (frame at the orthometric `origin`)
    again in the frame at the origin's ellipsoidal height, each point raised by its own geoid
    height along its own vertical (a shared shift would tilt wide clouds by millimetres)."""
    lon0, lat0, h0 = origin
    target = (lon0, lat0, float(datum.to_ellipsoidal(lon0, lat0, h0)))
    if not datum.grid_available() and datum.offset == 0.0:
        return np.asarray(enu, dtype=float), target
    lon, lat, h = enu_to_geodetic(enu, origin)
    frame = enu_to_ecef_matrix(*target)
    ecef = geodetic_to_ecef(lon, lat, datum.to_ellipsoidal(lon, lat, h))
    return (ecef - frame[:3, 3]) @ frame[:3, :3], target
