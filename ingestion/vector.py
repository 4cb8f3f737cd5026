"""Vector files (GeoPackage, Shapefile, GeoJSON, FlatGeobuf, ...) read through pyogrio/GDAL.

A reader only turns a source into `FeatureInput`s in the project CRS and describes the layer;
writing (and its atomicity) is the store's job. Every problem with the file is an `InvalidInput`
naming the file, so the CLI and the API can report it in one line.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyogrio
from pyogrio.errors import DataLayerError, DataSourceError, FieldError, GeometryError
from pyproj import CRS

from twin import crs as crs_mod
from twin.model import FeatureInput, InvalidInput, NotFound

ID_FIELDS = ("id", "fid", "bid", "feature_id", "pipe_id", "node_id", "sensor_id")
AREA_MARGIN_DEGREES = 1.0


@dataclass
class VectorSource:
    """One layer of a vector file, read and reprojected, ready for `Store.write_features`."""

    path: Path
    source_layer: str
    source_crs: str
    geometry_type: str | None
    schema: dict[str, str]
    features: list[FeatureInput]


def list_layers(path: Path) -> list[str]:
    """Layer names of a vector file, or InvalidInput if GDAL cannot read it as geodata."""
    path = Path(path)
    if not path.exists():
        raise NotFound(f"{path}: no such file or directory")
    try:
        layers = pyogrio.list_layers(path)
    except (DataSourceError, DataLayerError, OSError) as exc:
        raise InvalidInput(f"{path}: not a readable vector data file ({_first_line(exc)})") from exc
    names = [str(row[0]) for row in layers]
    if not names:
        raise InvalidInput(f"{path}: the file holds no vector layers")
    return names


def read_vector(
    path: Path,
    project_crs: str,
    *,
    source_layer: str | None = None,
    source_crs: str | None = None,
    id_field: str | None = None,
) -> VectorSource:
    """Read one layer and reproject it into the project CRS (vectorised, via twin.crs)."""
    path = Path(path)
    names = list_layers(path)
    if source_layer is None:
        if len(names) > 1:
            raise InvalidInput(f"{path} has several layers ({', '.join(names)}): name one")
        source_layer = names[0]
    elif source_layer not in names:
        raise InvalidInput(f"{path} has no layer {source_layer!r}; it has {', '.join(names)}")
    try:
        frame = pyogrio.read_dataframe(path, layer=source_layer, fid_as_index=True)
    except (DataSourceError, DataLayerError, FieldError, GeometryError, OSError, ValueError) as exc:
        raise InvalidInput(f"{path}: cannot read layer {source_layer!r} ({_first_line(exc)})") from exc
    if "geometry" not in frame:
        raise InvalidInput(f"{path}: layer {source_layer!r} has no geometry")
    file_crs = _declared_crs(frame.crs, source_crs, path)
    geoms = frame.geometry.to_numpy()
    _check_extent(geoms, file_crs, project_crs, path)
    projected = crs_mod.transform_geometries(geoms, file_crs, project_crs)
    fids = _feature_ids(frame, id_field, path)
    attributes = frame.drop(columns="geometry")
    names = [str(name) for name in attributes.columns]
    columns = [_json_values(attributes[name]) for name in attributes.columns]
    rows = zip(*columns, strict=True) if columns else ([] for _ in fids)
    features = [
        FeatureInput(fid, geom, dict(zip(names, row, strict=True)))
        for fid, geom, row in zip(fids, projected, rows, strict=True)
    ]
    schema = {str(name): str(dtype) for name, dtype in frame.drop(columns="geometry").dtypes.items()}
    return VectorSource(path, source_layer, file_crs, geometry_type(projected), schema, features)


def geometry_type(geoms: np.ndarray) -> str | None:
    """'Polygon', 'LineString Z', ... when every geometry has the same type, else None (mixed)."""
    import shapely

    present = geoms[shapely.is_geometry(geoms)]
    types = set(shapely.get_type_id(present).tolist())
    if len(types) != 1:
        return None
    name = present[0].geom_type
    return f"{name} Z" if shapely.has_z(present).any() else name


def _declared_crs(frame_crs: Any, given: str | None, path: Path) -> str:
    """The user's --crs wins (a file may carry a wrong one); no CRS at all is an error."""
    if given:
        return crs_mod.crs_code(crs_mod.parse_crs(given))
    if frame_crs is None:
        raise InvalidInput(f"{path} has no CRS: give one with --crs EPSG:xxxx")
    return crs_mod.crs_code(CRS.from_user_input(frame_crs))


def _check_extent(geoms: np.ndarray, source: str, project: str, path: Path) -> None:
    """Refuse data that cannot be where its CRS says, or far outside the project CRS's area."""
    import shapely

    present = shapely.is_geometry(geoms) & ~shapely.is_empty(geoms)
    if not present.any():
        return
    minx, miny, maxx, maxy = shapely.total_bounds(geoms[present])
    if not all(math.isfinite(v) for v in (minx, miny, maxx, maxy)):
        raise InvalidInput(f"{path}: coordinates are not finite numbers")
    source_crs = crs_mod.parse_crs(source)
    if source_crs.is_geographic and (abs(minx) > 180 or abs(maxx) > 180 or abs(miny) > 90 or abs(maxy) > 90):
        raise InvalidInput(
            f"{path}: coordinates ({minx:.0f}, {miny:.0f}) are not longitude/latitude but the CRS is "
            f"{source}: give the right one with --crs"
        )
    area = crs_mod.parse_crs(project).area_of_use
    if area is None:
        return
    lon, lat = crs_mod.transform_points(source, crs_mod.CRS84, [minx, maxx, minx, maxx], [miny, miny, maxy, maxy])
    if not (np.isfinite(lon).all() and np.isfinite(lat).all()):
        raise InvalidInput(f"{path}: coordinates do not fit {source}: give the right CRS with --crs")
    margin = AREA_MARGIN_DEGREES
    inside = (
        lon.max() >= area.west - margin
        and lon.min() <= area.east + margin
        and lat.max() >= area.south - margin
        and lat.min() <= area.north + margin
    )
    if not inside:
        raise InvalidInput(
            f"{path}: data lies at lon {lon.min():.3f}..{lon.max():.3f}, lat {lat.min():.3f}..{lat.max():.3f}, "
            f"outside the project CRS's area ({area.name}); is its CRS ({source}) right?"
        )


def _feature_ids(frame, id_field: str | None, path: Path) -> list[str]:
    """Stable ids: the named field, else a conventional id column, else the file's FIDs."""
    if id_field is not None and id_field not in frame.columns:
        raise InvalidInput(f"{path}: no field {id_field!r} for feature ids")
    field = id_field or next((name for name in ID_FIELDS if name in frame.columns), None)
    values = frame[field] if field else frame.index.to_series()
    if values.isna().any():
        raise InvalidInput(f"{path}: some features have no value in the id field {field or 'FID'!r}")
    ids = [_id_text(v) for v in values]
    if len(set(ids)) != len(ids):
        raise InvalidInput(f"{path}: the id field {field or 'FID'!r} has repeated values")
    return ids


def _id_text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _json_values(column) -> list[Any]:
    """A column as plain JSON values: numbers and text as they are, NaN as null, dates as ISO."""
    kind = column.dtype.kind
    if kind in "iub":
        return column.tolist()
    if kind == "f":
        return [v if math.isfinite(v) else None for v in column.tolist()]
    if kind == "M":
        return [None if _is_missing(v) else v.isoformat() for v in column]
    return [_json_value(v) for v in column.tolist()]


def _json_value(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, list | dict):
        return value
    return None if _is_missing(value) else str(value)


def _is_missing(value: Any) -> bool:
    try:
        import pandas as pd

        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
