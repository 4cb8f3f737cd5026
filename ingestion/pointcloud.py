"""Point clouds (LAS 1.2-1.4, LAZ, COPC) into a point cloud layer: one feature per file plus a points asset.

The CRS comes from `--crs` when given, else from the file's WKT or GeoTIFF VLRs (laspy parses
both; WKT wins when both are present), else the ingest stops with a clear error. Heights are
taken as orthometric in the CRS's height unit (US feet stay feet until converted here), as the
store keeps them; the tile builder makes them ellipsoidal with the twin's vertical datum.
Points are read chunk by chunk and stored as one content-addressed `.npz` asset:

    positions       int32  (N, 3)  east-north-up tenths of a millimetre around `anchor`
    colors          uint8  (N, 3)  sRGB (only when the point format has RGB)
    classification  uint8  (N,)    ASPRS class codes
    intensity       uint16 (N,)
    anchor          float64 (3,)   lon, lat, orthometric height of the frame origin

The feature carries the footprint (convex hull in the project CRS), the point count, the class
histogram and the asset key; a file that cannot be read, has no usable CRS or lands outside the
project CRS's area raises InvalidInput before anything is written.
"""

from __future__ import annotations

import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

import laspy
import numpy as np
from scipy.spatial import ConvexHull, QhullError

from ingestion.basemap import layer_id_for
from ingestion.layers import check_kind, hull_footprint
from twin import crs as crs_mod
from twin.model import FeatureInput, InvalidInput, Layer, LayerKind, NotFound, Scenario, WriteReport
from twin.store import Store, WriteMode

POSITION_UNIT = 1e-4  # metres per stored position step
CHUNK_POINTS = 1_000_000
HULL_SAMPLE = 1_000
SUFFIXES = (".las", ".laz")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def open_cloud(path: Path) -> laspy.LasReader:
    """A reader on the file; InvalidInput when it is missing or not LAS/LAZ."""
    path = Path(path)
    if not path.is_file():
        raise NotFound(f"{path}: no such file")
    try:
        reader = laspy.open(path)
    except Exception as exc:  # laspy and lazrs raise many kinds for broken headers
        raise InvalidInput(f"{path.name}: not a readable LAS/LAZ file ({_first_line(exc)})") from exc
    if reader.header.point_count == 0:
        reader.close()
        raise InvalidInput(f"{path.name}: the point cloud has no points")
    return reader


def source_crs(header: laspy.LasHeader, name: str, override: str | None) -> str:
    """`--crs`, else the file's WKT or GeoTIFF CRS (as text), else InvalidInput."""
    if override:
        return crs_mod.crs_code(crs_mod.parse_crs(override))
    try:
        parsed = header.parse_crs()
    except Exception as exc:  # a malformed GeoTIFF key directory or WKT string
        raise InvalidInput(
            f"{name}: the file's CRS records cannot be read ({_first_line(exc)}); give one with --crs"
        ) from exc
    if parsed is None:
        raise InvalidInput(f"{name}: the point cloud has no CRS (no WKT or GeoTIFF VLR); give one with --crs")
    ident = parsed.to_json_dict().get("id")
    return f"{ident['authority']}:{ident['code']}" if ident else parsed.to_wkt()


def _anchor(header: laspy.LasHeader, crs: str, name: str) -> tuple[float, float, float]:
    """lon, lat, orthometric height (metres) of the header's box centre."""
    centre = (np.asarray(header.mins) + np.asarray(header.maxs)) / 2.0
    horizontal, unit = crs_mod.split_crs(crs)
    lon, lat = crs_mod.transform_points(horizontal, crs_mod.CRS84, [centre[0]], [centre[1]])
    if not (np.isfinite(lon).all() and np.isfinite(lat).all()):
        raise InvalidInput(f"{name}: the header's extent cannot be placed in {crs_mod.crs_label(crs)}")
    return float(lon[0]), float(lat[0]), float(centre[2] * unit)


def read_points(path: Path, override: str | None = None) -> dict[str, Any]:
    """The file's points in the ENU frame of its centre, with colours, classes and intensity."""
    path = Path(path)
    with open_cloud(path) as reader:
        header = reader.header
        crs = source_crs(header, path.name, override)
        anchor = _anchor(header, crs, path.name)
        flat = crs_mod.VerticalDatum()  # orthometric kept: the frame's heights are the file's
        has_color = {"red", "green", "blue"} <= set(header.point_format.dimension_names)
        parts: dict[str, list[np.ndarray]] = {"positions": [], "colors": [], "classification": [], "intensity": []}
        lon_lat: list[np.ndarray] = []
        try:
            for chunk in reader.chunk_iterator(CHUNK_POINTS):
                x, y, z = np.asarray(chunk.x), np.asarray(chunk.y), np.asarray(chunk.z)
                enu, lon, lat = crs_mod.source_to_enu(crs, x, y, z, anchor, flat)
                inside = crs_mod.within_area_of_use(crs_mod.split_crs(crs)[0], lon, lat)
                inside &= (np.abs(lon) <= 180.0) & (np.abs(lat) <= 90.0)
                if not inside.all():
                    bad = int(np.flatnonzero(~inside)[0])
                    raise InvalidInput(
                        f"{path.name}: point ({x[bad]}, {y[bad]}) lies outside the area of "
                        f"{crs_mod.crs_label(crs)}; is the CRS right? (give the right one with --crs)"
                    )
                steps = np.round(enu / POSITION_UNIT)
                if np.abs(steps).max() >= 2**31:
                    raise InvalidInput(f"{path.name}: the point cloud is wider than 200 km; split it")
                parts["positions"].append(steps.astype(np.int32))
                parts["classification"].append(np.asarray(chunk.classification, dtype=np.uint8))
                parts["intensity"].append(np.asarray(chunk.intensity, dtype=np.uint16))
                if has_color:
                    parts["colors"].append(np.column_stack([chunk.red, chunk.green, chunk.blue]))
                lon_lat.append(_hull_points(np.column_stack([lon, lat])))
        except InvalidInput:
            raise
        except Exception as exc:  # truncated data, a LAZ chunk that does not decompress
            raise InvalidInput(f"{path.name}: the point records cannot be read ({_first_line(exc)})") from exc
    arrays = {key: np.concatenate(value) for key, value in parts.items() if value}
    if "colors" in arrays:
        rgb = arrays["colors"]
        arrays["colors"] = (rgb >> 8 if rgb.max() > 255 else rgb).astype(np.uint8)  # 16-bit or 8-bit values
    return {
        **arrays,
        "anchor": np.asarray(anchor, dtype=np.float64),
        "crs": crs,
        "lon_lat": np.concatenate(lon_lat),
        "version": str(header.version),
        "point_format": int(header.point_format.id),
    }


def _hull_points(points: np.ndarray) -> np.ndarray:
    """The chunk's convex hull corners (the footprint of all chunks is the hull of these)."""
    try:
        return points[ConvexHull(points).vertices]
    except (QhullError, ValueError):  # collinear or too few points: a sample of them
        return points[:: max(1, len(points) // HULL_SAMPLE)]


def ingest_pointcloud(
    store: Store,
    path: Path,
    *,
    layer_id: str | None = None,
    source_crs: str | None = None,
    scenario: Scenario | str = Scenario.current,
    valid_from: datetime | None = None,
    title: str | None = None,
) -> WriteReport:
    """Read a LAS/LAZ/COPC file and store it as a new edition of a point cloud layer (atomic)."""
    path = Path(path)
    if path.suffix.lower() not in SUFFIXES:
        raise InvalidInput(f"{path.name}: a point cloud must be a .las or .laz file (COPC is .copc.laz)")
    target = layer_id_for(path, None, layer_id)
    check_kind(store, target, LayerKind.pointcloud, "point cloud")
    cloud = read_points(path, source_crs)
    footprint = hull_footprint(*cloud["lon_lat"].T, store.crs, f"{path.name}: the point cloud", 0.05)
    Path(store.data_dir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=store.data_dir) as tmp:
        asset = Path(tmp) / "points.npz"
        stored = {k: cloud[k] for k in ("positions", "colors", "classification", "intensity", "anchor") if k in cloud}
        np.savez(asset, **stored)
        key = store.assets.put_file(asset, ".npz")
    codes, counts = np.unique(cloud["classification"], return_counts=True)
    heights = cloud["positions"][:, 2] * POSITION_UNIT + cloud["anchor"][2]
    properties = {
        "points": key,
        "point_count": int(len(cloud["positions"])),
        "source": path.name,
        "source_crs": cloud["crs"],
        "las_version": cloud["version"],
        "point_format": cloud["point_format"],
        "has_color": "colors" in cloud,
        "classes": {str(c): int(n) for c, n in zip(codes.tolist(), counts.tolist(), strict=True)},
        "z_min": round(float(heights.min()), 3),
        "z_max": round(float(heights.max()), 3),
    }
    layer = Layer(
        id=target,
        kind=LayerKind.pointcloud,
        title=title or target.replace("_", " "),
        scenario=scenario,
        source=path.name,
        source_crs=crs_mod.crs_label(cloud["crs"]),
        geometry_type="Polygon",
        schema={"point_count": "integer", "source": "text"},
        metadata={"pointcloud": {"points": key, "point_count": properties["point_count"]}},
    )
    feature = FeatureInput(target, footprint, properties)
    return store.write_features(layer, [feature], valid_from=valid_from, mode=WriteMode.replace)
