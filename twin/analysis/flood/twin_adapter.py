"""Run the flood model on a twin: read its DEM, land use, drainage and roads; write the results.

The only module of the flood package that knows the store. Everything is read and computed
first; the results are written last (the max-depth COG as an asset, a raster layer pointing at
it, and a vector layer of the flooded road sections), so a cancelled run writes nothing.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.windows
import shapely

from twin.analysis.flood.drainage import PipeNetwork
from twin.analysis.flood.roads import LIMIT_M, Road
from twin.analysis.flood.run import FloodInputs, FloodParams, FloodResult, run_flood, static_ponding
from twin.analysis.flood.surface import Cancelled, Progress
from twin.model import BBox, FeatureInput, InvalidInput, Layer, LayerKind
from twin.store import Store, WriteMode

ROAD_SENSOR = "road_water_level"
SCALE_ORDER = {"1:10000": 0, "1:2000": 1, "1:500": 2, None: -1}
LINES = ("LineString", "MultiLineString")
POLYGONS = ("Polygon", "MultiPolygon")


def read_dem(
    store: Store, layer_id: str = "dem", bbox: BBox | None = None
) -> tuple[np.ndarray, Any, float | None, str]:
    """The DEM band, its transform, nodata and CRS from the layer's COG asset; with `bbox`
    (project CRS) only the whole cells that cover it."""
    with rasterio.open(dem_path(store, layer_id)) as src:
        crs = src.crs.to_string() if src.crs else store.crs
        if bbox is None:
            return src.read(1), src.transform, src.nodata, crs
        window = dem_window(src.transform, src.height, src.width, bbox)
        return src.read(1, window=window), src.window_transform(window), src.nodata, crs


def dem_path(store: Store, layer_id: str = "dem") -> Path:
    """The local path of a DEM layer's COG; NotFound for an unknown layer."""
    layer = store.get_layer(layer_id)
    raster = (layer.metadata or {}).get("raster")
    if not raster or "asset" not in raster:
        raise InvalidInput(f"layer {layer_id!r} is not a raster layer with a COG asset")
    return Path(store.assets.open_path(raster["asset"]))


def dem_window(transform: Any, height: int, width: int, bbox: BBox) -> rasterio.windows.Window:
    """The DEM cells that cover `bbox`, cut to the DEM; InvalidInput when fewer than 2 × 2 remain."""
    cols = np.floor((np.array([bbox.minx, bbox.maxx]) - transform.c) / transform.a)
    rows = np.floor((np.array([bbox.maxy, bbox.miny]) - transform.f) / transform.e)
    col0, col1 = int(max(cols[0], 0)), int(min(cols[1] + 1, width))
    row0, row1 = int(max(rows[0], 0)), int(min(rows[1] + 1, height))
    if col1 - col0 < 2 or row1 - row0 < 2:
        raise InvalidInput(f"the bbox {list(bbox.as_tuple())} does not overlap the DEM (at least 2 × 2 cells)")
    return rasterio.windows.Window(col0, row0, col1 - col0, row1 - row0)


def _layers(store: Store, kinds: tuple[LayerKind, ...], geometry: tuple[str, ...]) -> list[Layer]:
    return [lay for lay in store.list_layers() if lay.kind in kinds and (lay.geometry_type or "") in geometry]


def _landuse(store: Store, bounds: shapely.Geometry, layer_ids: list[str] | None) -> list[tuple[Any, str]]:
    """Land-use polygons, coarse scales first so that the finer maps are burnt on top."""
    layers = (
        [store.get_layer(i) for i in layer_ids]
        if layer_ids is not None
        else [lay for lay in _layers(store, (LayerKind.vector,), POLYGONS) if "landuse" in (lay.schema or {})]
    )
    layers.sort(key=lambda lay: SCALE_ORDER.get(lay.scale_band, -1))
    out = []
    for lay in layers:
        for f in store.iter_features(lay.id, bbox=_bbox(bounds)):
            if f.geometry is not None:
                out.append((f.geometry, f.properties.get("landuse") or f.properties.get("kind")))
    return out


def _water(store: Store, bounds: shapely.Geometry, layer_ids: list[str] | None) -> list[Any]:
    """Permanent water (rivers, ponds): not road flooding where a road crosses it on a bridge."""
    layers = (
        [store.get_layer(i) for i in layer_ids]
        if layer_ids is not None
        else [lay for lay in _layers(store, (LayerKind.vector,), POLYGONS) if lay.id.startswith("water")]
    )
    return [f.geometry for lay in layers for f in store.iter_features(lay.id, bbox=_bbox(bounds)) if f.geometry]


def _bbox(bounds: shapely.Geometry) -> BBox:
    return BBox(*bounds.bounds)


def pick_roads_layer(store: Store, bounds: shapely.Geometry) -> str | None:
    """The road centreline layer that covers the DEM best: the most road length inside it."""
    best, best_length = None, 0.0
    for lay in store.list_layers():
        if lay.kind != LayerKind.vector or "road" not in lay.id or (lay.geometry_type or "LineString") not in LINES:
            continue
        length = sum(
            f.geometry.intersection(bounds).length
            for f in store.iter_features(lay.id, bbox=_bbox(bounds))
            if f.geometry is not None and f.geometry.geom_type in LINES
        )
        if length > best_length:
            best, best_length = lay.id, length
    return best


def _roads(store: Store, layer_id: str | None, bounds: shapely.Geometry) -> list[Road]:
    if layer_id is None:
        return []
    roads = []
    for f in store.iter_features(layer_id, bbox=_bbox(bounds)):
        if f.geometry is None or f.geometry.geom_type not in LINES:
            continue
        p = f.properties
        road_id = str(p.get("road_id") or p.get("street_id") or f.fid)
        width = p.get("width")
        roads.append(Road(road_id, f.geometry, str(p.get("name") or ""), float(width) if width else None))
    return roads


def _drainage(store: Store, bounds: shapely.Geometry, grate_m3s: float) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Inlet positions, ids and capacities from the twin's drainage network (none if absent)."""
    nets = [lay for lay in store.list_layers() if lay.kind == LayerKind.pipe_network]
    nodes = next(
        (lay for lay in nets if lay.metadata.get("network") == "drainage" and lay.metadata.get("role") == "nodes"), None
    )
    pipes = next(
        (lay for lay in nets if lay.metadata.get("network") == "drainage" and lay.metadata.get("role") == "pipes"), None
    )
    if nodes is None or pipes is None:
        return np.zeros((0, 2)), [], np.zeros(0)
    node_f = list(store.iter_features(nodes.id))
    pipe_f = list(store.iter_features(pipes.id))
    ids = [str(f.properties.get("node_id") or f.fid) for f in node_f]
    inlet = np.array([str(f.properties.get("type", "")).lower() == "inlet" for f in node_f])
    net = PipeNetwork.from_pipes(
        ids,
        inlet,
        [f.properties.get("start_id") for f in pipe_f],
        [f.properties.get("end_id") for f in pipe_f],
        diameter_m=_mm([f.properties.get("diameter") for f in pipe_f]),
        width_m=_mm([f.properties.get("width") for f in pipe_f]),
        height_m=_mm([f.properties.get("height") for f in pipe_f]),
        slope=[_slope(f.properties) for f in pipe_f],
    )
    capacity = net.inlet_capacity(grate_m3s)
    where = np.nonzero(inlet)[0]
    xy = np.array([(node_f[k].geometry.x, node_f[k].geometry.y) for k in where]).reshape(-1, 2)
    return xy, [ids[k] for k in where], capacity


def _mm(values: list[Any]) -> np.ndarray:
    return np.array([float(v) / 1000.0 if v not in (None, "") else np.nan for v in values])


def _slope(p: dict[str, Any]) -> float:
    if p.get("slope") not in (None, ""):
        return float(p["slope"])
    try:
        return (float(p["start_invert"]) - float(p["end_invert"])) / float(p["length"])
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return float("nan")


def _sensors(store: Store) -> list[tuple[str, float, float, dict[str, Any]]]:
    out = []
    for lay in store.list_layers():
        if lay.kind != LayerKind.sensor:
            continue
        for f in store.iter_features(lay.id):
            if f.geometry is not None and f.properties.get("type") == ROAD_SENSOR:
                out.append((str(f.properties.get("sensor_id") or f.fid), f.geometry.x, f.geometry.y, f.properties))
    return out


def run_on_twin(
    store: Store,
    params: FloodParams,
    *,
    dem_layer: str = "dem",
    roads_layer: str | None = None,
    landuse_layers: list[str] | None = None,
    water_layers: list[str] | None = None,
    probes: list[tuple[str, float, float]] | None = None,
    result_id: str = "flood",
    write: bool = True,
    progress: Progress | None = None,
    cancel: Callable[[], bool] | None = None,
    bbox: BBox | None = None,
    on_result: Callable[[FloodResult], None] | None = None,
) -> dict[str, Any]:
    """Run a flood on the twin's DEM (or the part of it under `bbox`) and, with `write`, store
    the max-depth raster and sections. `on_result` sees the whole result (depth frames
    included) before anything is stored, so a caller can keep more of it."""
    dem, transform, nodata, crs = read_dem(store, dem_layer, bbox)
    bounds = _footprint(dem, transform)
    roads_id = roads_layer or pick_roads_layer(store, bounds)
    own_network = params.drainage != "none" and params.swmm_model is None  # a SWMM model replaces the twin's inlets
    inlet_xy, inlet_ids, capacity = _drainage(store, bounds, params.grate_m3s) if own_network else (None, [], None)
    if params.drainage == "network" and inlet_xy is not None and len(inlet_xy) == 0:
        raise InvalidInput("the twin has no drainage inlets: use a design capacity in mm/h or no drainage")
    sensors = _sensors(store)
    inputs = FloodInputs(
        landuse=_landuse(store, bounds, landuse_layers),
        roads=_roads(store, roads_id, bounds),
        inlet_xy=inlet_xy,
        inlet_ids=inlet_ids,
        inlet_capacity_m3s=capacity,
        water=_water(store, bounds, water_layers),
        probes=[(sid, x, y) for sid, x, y, _ in sensors] + list(probes or []),
    )
    result = run_flood(dem, transform, params, inputs, nodata=nodata, crs=crs, progress=progress, cancel=cancel)
    if on_result is not None:
        on_result(result)
    summary = result.summary()
    summary["inputs"] = {
        "dem_layer": dem_layer,
        "roads_layer": roads_id,
        "landuse_features": len(inputs.landuse),
        "water_features": len(inputs.water),
    }
    _link_sensors(summary["road_sections"], sensors)
    if cancel is not None and cancel():
        raise Cancelled("flood run cancelled")
    if write:
        summary["layers"] = write_results(store, result, summary, result_id)
    return summary


def _footprint(dem: np.ndarray, transform: Any) -> shapely.Polygon:
    ny, nx = dem.shape
    return shapely.box(transform.c, transform.f + ny * transform.e, transform.c + nx * transform.a, transform.f)


def ponding_on_twin(
    store: Store,
    rain_mm: float,
    *,
    dem_layer: str = "dem",
    roads_layer: str | None = None,
    water_layers: list[str] | None = None,
    resolution_m: float | None = None,
    fill_nodata: bool = False,
    limit_m: float = LIMIT_M,
) -> dict[str, Any]:
    """Quick static ponding of `rain_mm` on the twin's DEM (nothing is written)."""
    dem, transform, nodata, _ = read_dem(store, dem_layer)
    bounds = _footprint(dem, transform)
    roads_id = roads_layer or pick_roads_layer(store, bounds)
    inputs = FloodInputs(roads=_roads(store, roads_id, bounds), water=_water(store, bounds, water_layers))
    answer = static_ponding(
        dem, transform, rain_mm, inputs, nodata=nodata, resolution_m=resolution_m, fill_nodata=fill_nodata,
        limit_m=limit_m,
    )  # fmt: skip
    _link_sensors(answer["road_sections"], _sensors(store))
    answer["inputs"] = {"dem_layer": dem_layer, "roads_layer": roads_id}
    return answer


def _link_sensors(sections: list[dict[str, Any]], sensors: list[tuple[str, float, float, dict[str, Any]]]) -> None:
    """Name the road water-level sensors that stand on each flooded section."""
    for section in sections:
        line = shapely.geometry.shape(section["geometry"])
        near = [
            {"sensor_id": sid, "low_section_id": props.get("low_section_id")}
            for sid, x, y, props in sensors
            if line.distance(shapely.Point(x, y)) <= 15.0
        ]
        section["sensors"] = near


def section_properties(section: dict[str, Any]) -> dict[str, Any]:
    """A section's attributes as plain values (vector tiles carry no lists): the deepest point as
    x and y, the gauges on it as a comma-separated list of ids."""
    out = {k: v for k, v in section.items() if k not in ("geometry", "id", "deepest_point", "sensors")}
    x, y = section["deepest_point"]
    gauges = ",".join(str(g["sensor_id"]) for g in section.get("sensors", []))
    return out | {"section_id": section["id"], "deepest_x": x, "deepest_y": y, "sensor_ids": gauges}


def write_results(store: Store, result: FloodResult, summary: dict[str, Any], result_id: str) -> dict[str, str]:
    """The max-depth COG as an asset and raster layer, and the road sections as a vector layer."""
    raster_id, sections_id = f"{result_id}_max_depth", f"{result_id}_road_sections"
    store.data_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=store.data_dir) as tmp:
        key = store.assets.put_file(result.write_max_depth(Path(tmp) / "max_depth.tif"), ".tif")
    grid = result.grid
    brief = {k: v for k, v in summary.items() if k not in ("road_sections", "probes")}
    raster_meta = {
        "width": grid.shape[1],
        "height": grid.shape[0],
        "count": 1,
        "dtype": "float32",
        "nodata": 0.0,
        "bounds": list(grid.bounds),
        "resolution": [grid.dx, grid.dx],
        "crs": result.crs or store.crs,
        "asset": key,
        "role": "flood_max_depth",
        "units": "m",
    }
    sections = [
        FeatureInput(s["id"], shapely.geometry.shape(s["geometry"]), section_properties(s))
        for s in summary["road_sections"]
    ]
    store.write_features(
        Layer(
            id=sections_id,
            kind=LayerKind.vector,
            title=f"Road sections flooded over {result.params.limit_m:g} m",
            source="flood model",
            geometry_type="LineString",
            metadata={"flood": brief},
        ),
        sections,
        mode=WriteMode.replace,
    )
    store.write_features(
        Layer(
            id=raster_id,
            kind=LayerKind.raster,
            title="Maximum flood depth",
            source="flood model",
            source_crs=raster_meta["crs"],
            geometry_type="Polygon",
            metadata={"raster": raster_meta, "flood": brief},
        ),
        [
            FeatureInput(
                "coverage", shapely.box(*grid.bounds), {"asset": key, "width": grid.shape[1], "height": grid.shape[0]}
            )
        ],
        mode=WriteMode.replace,
    )
    return {"max_depth": raster_id, "road_sections": sections_id, "asset": key}
