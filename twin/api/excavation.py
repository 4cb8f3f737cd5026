"""`GET /analysis/excavation`: a clipping polygon that cuts a window into the reality mesh and terrain.

Planners look at pipes below the ground by cutting a hole into what covers them. For a bbox or
a polygon (CRS84 unless `crs=` says otherwise) the answer carries what CesiumJS needs and no
more: the ring in CRS84, the same ring as ECEF positions on the ground (a flat array for
`new Cesium.ClippingPolygon({positions: Cesium.Cartesian3.unpackArray(positions)})`), the
ground elevation range inside the window sampled from the DEM (1985 datum and ellipsoidal), and
the bottom of the pit `depth` metres below the lowest ground, so the viewer can draw its walls.
"""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
import shapely
from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from tiles.threed.bim import store_datum
from twin.analysis.dem_sample import Dem
from twin.analysis.service import parse_polygon, region_of
from twin.api.params import StoreDep
from twin.api.problems import problem_responses
from twin.crs import CRS84, parse_crs, to_ecef, transform_points, within_area_of_use
from twin.model import BBox, InvalidInput

router = APIRouter(tags=["Analysis"])
MAX_AREA_M2 = 1_000_000.0  # a window, not a district: 1 km²
MIN_AREA_M2 = 0.25
SAMPLES = 48  # DEM samples a side inside the window


def window_region(store, bbox: str | None, polygon: str | None, crs: str | None) -> shapely.Polygon:
    """The window in the project CRS from a bbox or polygon; InvalidInput when unusable."""
    source = crs or CRS84
    parse_crs(source)
    box = BBox.parse(bbox)
    shape = parse_polygon(polygon)
    if box is None and shape is None:
        raise InvalidInput("give the window as bbox=minx,miny,maxx,maxy or polygon= (WKT or GeoJSON)")
    probe = shapely.box(*box.as_tuple()) if box is not None else shape
    if probe is not None and not probe.is_empty and parse_crs(source).is_geographic:
        lon, lat = np.asarray(
            probe.exterior.coords if probe.geom_type == "Polygon" else probe.envelope.exterior.coords
        ).T
        if not within_area_of_use(store.crs, lon, lat, margin=0.0).all():
            raise InvalidInput(f"the window lies outside the twin's area ({store.crs}); bbox is lon,lat in CRS84")
    region = region_of(store, box, shape, source)
    if region.geom_type != "Polygon":
        raise InvalidInput("the window must be one polygon")
    if not MIN_AREA_M2 <= region.area <= MAX_AREA_M2:
        raise InvalidInput(
            f"the window covers {region.area:.1f} m²; it must cover between {MIN_AREA_M2} and {MAX_AREA_M2:.0f} m²"
        )
    return shapely.orient_polygons(region)  # exterior counter-clockwise


def ground_range(store, region: shapely.Polygon, dem_layer: str | None) -> tuple[dict[str, Any] | None, np.ndarray]:
    """Min, max and mean ground inside the window, and the ground under each ring vertex."""
    ring = np.asarray(region.exterior.coords)[:-1]
    dem = Dem.from_store(store, dem_layer)
    if dem is None:
        return None, np.zeros(len(ring))
    minx, miny, maxx, maxy = region.bounds
    gx, gy = np.meshgrid(np.linspace(minx, maxx, SAMPLES), np.linspace(miny, maxy, SAMPLES))
    inside = shapely.contains_xy(region, gx.ravel(), gy.ravel())
    x = np.concatenate([gx.ravel()[inside], ring[:, 0]])
    y = np.concatenate([gy.ravel()[inside], ring[:, 1]])
    heights = dem.sample(x, y, store.crs)
    found = heights[np.isfinite(heights)]
    if not len(found):
        return None, np.zeros(len(ring))
    at_ring = heights[-len(ring) :]
    at_ring = np.where(np.isfinite(at_ring), at_ring, float(found.min()))
    summary = {"min": float(found.min()), "max": float(found.max()), "mean": float(found.mean()), "samples": len(found)}
    return {**summary, "dem": dem.layer}, at_ring


@router.get(
    "/analysis/excavation",
    name="excavation_window",
    summary="Clipping polygon (CRS84 ring + ECEF positions) and ground range for cutting a window into the mesh",
    responses=problem_responses(400, 404),
)
def excavation_window(
    store: StoreDep,
    bbox: Annotated[str | None, Query(description="minx,miny,maxx,maxy (lon/lat unless crs=)")] = None,
    polygon: Annotated[str | None, Query(description="The window as WKT or GeoJSON (lon/lat unless crs=)")] = None,
    crs: Annotated[str | None, Query(description="CRS of bbox/polygon, e.g. the project CRS; default CRS84")] = None,
    depth: Annotated[float, Query(gt=0, le=100, description="Depth of the pit below the lowest ground, metres")] = 3.0,
    dem: Annotated[str | None, Query(description="DEM layer [default: the twin's]")] = None,
) -> JSONResponse:
    region = window_region(store, bbox, polygon, crs)
    ground, at_ring = ground_range(store, region, dem)
    ring = np.asarray(region.exterior.coords)[:-1]
    lon, lat = transform_points(store.crs, CRS84, ring[:, 0], ring[:, 1])
    datum = store_datum(store)
    x, y, z = to_ecef(store.crs, ring[:, 0], ring[:, 1], at_ring, datum)
    body: dict[str, Any] = {
        "ring": [[round(float(a), 9), round(float(b), 9)] for a, b in zip([*lon, lon[0]], [*lat, lat[0]], strict=True)],
        "positions": [round(float(v), 4) for v in np.column_stack([x, y, z]).ravel()],
        "area_m2": round(float(region.area), 2),
        "depth": depth,
        "ground": ground,
    }
    if ground is not None:
        centre = region.centroid
        c_lon, c_lat = transform_points(store.crs, CRS84, [centre.x], [centre.y])
        bottom = ground["min"] - depth
        body["bottom"] = bottom
        body["bottom_ellipsoidal"] = float(datum.to_ellipsoidal(c_lon, c_lat, [bottom])[0])
        body["top_ellipsoidal"] = float(datum.to_ellipsoidal(c_lon, c_lat, [ground["max"]])[0])
    return JSONResponse(body)
