"""Byte-reproducible GeoPackage writing.

GDAL stamps `gpkg_contents.last_change` with the current time unless OGR_CURRENT_DATE is set;
pinning it (only for the duration of our writes) makes the same seed give identical files.
Coordinates are rounded to the millimetre so that floating-point noise never reaches the files.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import shapely

from .frame import FILE_TIMESTAMP


@contextmanager
def fixed_timestamp() -> Iterator[None]:
    """Pin GDAL's notion of 'now' while writing, then restore whatever was set before."""
    before = pyogrio.get_gdal_config_option("OGR_CURRENT_DATE")
    pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": FILE_TIMESTAMP})
    try:
        yield
    finally:
        pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": before})


def round_mm(geometry: np.ndarray) -> np.ndarray:
    """Round every coordinate to 1 mm, keeping geometry types and vertex counts."""
    return shapely.transform(np.asarray(geometry), lambda c: np.round(c, 3))


def write_layers(path: Path, layers: dict[str, gpd.GeoDataFrame]) -> dict[str, int]:
    """Write several layers into one fresh GeoPackage; returns feature counts per layer."""
    path = Path(path)
    if path.exists():
        path.unlink()
    counts = {}
    with fixed_timestamp():
        for name, gdf in layers.items():
            out = gdf.copy()
            out = out.set_geometry(round_mm(out.geometry.values), crs=gdf.crs)
            pyogrio.write_dataframe(out, path, layer=name, driver="GPKG", promote_to_multi=False)
            counts[name] = len(out)
    return counts
