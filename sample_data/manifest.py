"""The manifest: what was generated, where, and the facts tests and loaders rely on.

A loader iterates `layers` (vector, pipe networks, sensors: one GeoPackage layer each, with the
field that identifies a feature), then `rasters`, `ifc`, `reality_mesh` and `observations`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np

from .frame import ANCHOR_LONLAT, CRS, GEOGRAPHIC_CRS, GEOID_OFFSET, VERTICAL_DATUM, Frame, to_lonlat

FORMAT = "cim-twin-demo-district/1"


def _bbox(gdf: gpd.GeoDataFrame) -> list[float] | None:
    if len(gdf) == 0:
        return None
    return [round(float(v), 2) for v in gdf.total_bounds]


def _geometry_type(types: list[str]) -> str | None:
    """The layer's geometry type as written (mixed single/multi layers are promoted to multi)."""
    if not types:
        return None
    if len(types) == 1:
        return types[0]
    return "Multi" + types[0].removeprefix("Multi")


def layer_entry(
    layer_id: str,
    title: str,
    kind: str,
    path: str,
    layer: str,
    gdf: gpd.GeoDataFrame,
    id_field: str,
    valid_from: str,
    scale_band: str | None = None,
    scenario: str = "current",
    **extra: Any,
) -> dict:
    """One manifest entry for a GeoPackage layer."""
    types = sorted(set(gdf.geometry.geom_type.dropna()))
    entry = {
        "id": layer_id,
        "title": title,
        "kind": kind,
        "scale_band": scale_band,
        "scenario": scenario,
        "path": path,
        "layer": layer,
        "id_field": id_field,
        "valid_from": valid_from,
        "geometry_type": _geometry_type(types),
        "feature_count": int(len(gdf)),
        "bbox": _bbox(gdf),
    }
    entry.update(extra)
    return entry


def frame_info(frame: Frame) -> dict:
    """CRS, datum and extents of the district."""
    lon, lat = to_lonlat(np.array([frame.x0, frame.x1]), np.array([frame.y0, frame.y1]))
    return {
        "crs": CRS,
        "geographic_crs": GEOGRAPHIC_CRS,
        "vertical_datum": VERTICAL_DATUM,
        "geoid_offset": GEOID_OFFSET,
        "geoid_offset_note": "ellipsoidal height = 1985 height + geoid_offset (EGM96 undulation, ~1 m accuracy)",
        "axis_order": "x=easting, y=northing (use pyproj with always_xy=True)",
        "anchor_lonlat": list(ANCHOR_LONLAT),
        "size_m": frame.size,
        "bbox": list(frame.bbox),
        "bbox_lonlat": [
            round(float(lon[0]), 7),
            round(float(lat[0]), 7),
            round(float(lon[1]), 7),
            round(float(lat[1]), 7),
        ],
        "core_bbox": list(frame.core_bbox),
        "ring_bbox": list(frame.ring_bbox),
    }


def _clean(value: Any) -> Any:
    """numpy scalars and tuples to plain JSON types."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def write_manifest(path: Path, manifest: dict) -> dict:
    """Write manifest.json (sorted keys, fixed formatting) and return the cleaned dict."""
    clean = _clean(manifest)
    Path(path).write_text(json.dumps(clean, indent=2, ensure_ascii=False, sort_keys=False) + "\n", encoding="utf-8")
    return clean
