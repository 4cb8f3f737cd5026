"""GeoTIFFs (orthophotos, DEMs) into Cloud-Optimised GeoTIFF assets with rio-cogeo.

The raster's footprint is stored as the layer's one feature, so a new survey of the same area
closes the old footprint's version and the layer keeps its history like any other.
"""

from __future__ import annotations

import tempfile
from datetime import datetime
from pathlib import Path

import rasterio
from rasterio.errors import RasterioIOError
from rio_cogeo.cogeo import cog_translate, cog_validate
from rio_cogeo.profiles import cog_profiles
from shapely.geometry import box

from twin import crs as crs_mod
from twin.model import FeatureInput, InvalidInput, Layer, LayerKind, NotFound, Scenario, WriteReport
from twin.store import Store, WriteMode

COVERAGE_FID = "coverage"


def describe(path: Path, source_crs: str | None) -> dict:
    """What the raster is: CRS, size, bands, nodata; refuses files GDAL cannot read."""
    if not Path(path).exists():
        raise NotFound(f"{path}: no such file")
    try:
        with rasterio.open(path) as src:
            file_crs = src.crs.to_string() if src.crs else None
            info = {
                "width": src.width,
                "height": src.height,
                "count": src.count,
                "dtype": src.dtypes[0],
                "nodata": src.nodata,
                "bounds": list(src.bounds),
                "resolution": list(src.res),
            }
    except RasterioIOError as exc:
        raise InvalidInput(f"{path}: not a readable raster ({str(exc).splitlines()[0]})") from exc
    chosen = source_crs or file_crs
    if not chosen:
        raise InvalidInput(f"{path} has no CRS: give one with --crs EPSG:xxxx")
    info["crs"] = crs_mod.crs_code(crs_mod.parse_crs(chosen))
    return info


def ingest_raster(
    store: Store,
    path: Path,
    layer_id: str,
    *,
    kind: LayerKind | str = LayerKind.raster,
    title: str | None = None,
    source_crs: str | None = None,
    scenario: Scenario | str = Scenario.current,
    valid_from: datetime | None = None,
    role: str | None = None,
) -> WriteReport:
    """Convert to a COG (deflate, internal overviews), keep it as an asset, record the layer."""
    info = describe(path, source_crs)
    store.data_dir.mkdir(parents=True, exist_ok=True)  # a PostGIS twin may not have made it yet
    with tempfile.TemporaryDirectory(dir=store.data_dir) as tmp:
        cog = Path(tmp) / "cog.tif"
        profile = cog_profiles.get("deflate")
        try:
            with rasterio.open(path) as src:
                cog_translate(
                    src,
                    str(cog),
                    profile,
                    quiet=True,
                    config={"GDAL_NUM_THREADS": "ALL_CPUS"},
                    nodata=info["nodata"],
                    in_memory=False,
                    forward_band_tags=True,
                )
        except Exception as exc:  # rio-cogeo raises bare GDAL errors for damaged data
            raise InvalidInput(f"{path}: cannot convert to a COG ({str(exc).splitlines()[0]})") from exc
        valid, errors, _ = cog_validate(str(cog), quiet=True)
        if not valid:
            raise InvalidInput(f"{path}: the COG written is not valid: {errors}")
        key = store.assets.put_file(cog, ".tif")
    if source_crs:
        info["crs_override"] = True
    footprint = crs_mod.transform_geometries([box(*info["bounds"])], info["crs"], store.crs)[0]
    layer = Layer(
        id=layer_id,
        kind=kind,
        title=title or layer_id.replace("_", " "),
        scenario=scenario,
        source=Path(path).name,
        source_crs=info["crs"],
        geometry_type="Polygon",
        metadata={"raster": {**info, "asset": key, "role": role or kind}},
    )
    feature = FeatureInput(
        COVERAGE_FID, footprint, {"asset": key, **{k: info[k] for k in ("width", "height", "count")}}
    )
    return store.write_features(layer, [feature], valid_from=valid_from, mode=WriteMode.replace)
