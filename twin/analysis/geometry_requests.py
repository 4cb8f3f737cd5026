"""Cross-section, profile and clearance requests: from what a user gives to a result.

The HTTP API and the CLI both hand over the same parts (a GeoJSON line, pipe ids or end nodes,
a bbox or polygon, layer ids, a datetime); this module checks them, loads the pipes, DEM and
structures they need from the store, and runs the analysis. Coordinates come in CRS84 by
default, or in the project CRS (x = easting first) when `crs` names it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import shapely
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import dijkstra
from shapely.geometry import shape as geojson_shape

from twin.analysis.clearance import (
    DEFAULT_PARALLEL_ANGLE,
    ClearanceReport,
    Structures,
    check_clearance,
    structures_from_features,
)
from twin.analysis.dem_sample import Dem
from twin.analysis.gb50289 import default_table
from twin.analysis.pipe_solids import find_pipe_layer, grow, load_pipe_ids, load_pipes, pipe_layers
from twin.analysis.section import CrossSection, Profile, cross_section, ground_line, profile
from twin.crs import CRS84, crs_code, parse_crs, transform_points, within_area_of_use
from twin.model import BBox, InvalidInput, NotFound, TimeFilter
from twin.store import Store

MAX_SECTION_LENGTH = 5000.0
CLEARANCE_MARGIN = 20.0  # pipes this far outside the area are loaded, so pairs at its edge are seen


def input_crs(store: Store, text: str | None) -> str:
    """CRS84 (the default) or the project CRS; anything else is refused."""
    if text is None or not text.strip():
        return CRS84
    code = crs_code(parse_crs(text))
    if code in (CRS84, store.crs):
        return code
    raise InvalidInput(f"unsupported crs {text!r}: give coordinates in CRS84 (the default) or in {store.crs}")


def instant(text: str | None) -> TimeFilter | None:
    """The moment to analyse (default now); an interval has no single network, so it is refused."""
    parsed = TimeFilter.parse(text)
    if parsed is not None and not parsed.instant:
        raise InvalidInput(f"datetime {text!r} must be one instant for an analysis, not an interval")
    return parsed


def _positions(coords: Any, what: str) -> np.ndarray:
    try:
        xy = np.array([[float(c[0]), float(c[1])] for c in coords], dtype=float)
    except (TypeError, ValueError, IndexError, KeyError) as exc:
        raise InvalidInput(f"{what}: coordinates must be [x, y] number pairs") from exc
    if not np.isfinite(xy).all():
        raise InvalidInput(f"{what}: coordinates must be finite numbers")
    return xy


def to_project(store: Store, xy: np.ndarray, crs: str, what: str) -> np.ndarray:
    """Positions in `crs` to the project CRS, refusing points outside the project's area.

    Projected coordinates sent as CRS84, or lon/lat swapped, fail here with a message that
    says so rather than giving an empty answer somewhere on the other side of the globe.
    """
    if crs == CRS84:
        lon, lat = xy[:, 0], xy[:, 1]
        if (np.abs(lon) > 180).any() or (np.abs(lat) > 90).any():
            raise InvalidInput(
                f"{what}: CRS84 longitudes lie in [-180, 180] and latitudes in [-90, 90]; "
                f"for projected coordinates set crs to {store.crs}"
            )
    else:
        lon, lat = transform_points(crs, CRS84, xy[:, 0], xy[:, 1])
    inside = within_area_of_use(store.crs, lon, lat)
    if not inside.all():
        first = xy[~inside][0].tolist()
        raise InvalidInput(
            f"{what}: position {first} ({crs}) lies outside the area of the twin's CRS {store.crs}; "
            "check the coordinate order (x = longitude or easting first) and the crs"
        )
    if crs == store.crs:
        return xy
    x, y = transform_points(crs, store.crs, xy[:, 0], xy[:, 1])
    return np.column_stack([x, y])


def _geometry(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidInput(f"{what} must be a GeoJSON object")
    if value.get("type") == "Feature":
        value = value.get("geometry")
        if not isinstance(value, dict):
            raise InvalidInput(f"{what}: the Feature has no geometry")
    return value


def line_input(store: Store, value: Any, crs: str | None = None) -> shapely.LineString:
    """A GeoJSON LineString (or a Feature holding one) as a project-CRS line."""
    geometry = _geometry(value, "line")
    if geometry.get("type") != "LineString":
        raise InvalidInput(f"line must be a GeoJSON LineString, got {geometry.get('type')!r}")
    coords = geometry.get("coordinates")
    if not isinstance(coords, list) or len(coords) < 2:
        raise InvalidInput("line must have at least two positions")
    xy = to_project(store, _positions(coords, "line"), input_crs(store, crs), "line")
    line = shapely.LineString(xy)
    if line.length <= 0:
        raise InvalidInput("line has zero length: give two distinct positions")
    if line.length > MAX_SECTION_LENGTH:
        raise InvalidInput(f"line is {line.length:.0f} m long; a cross-section takes at most {MAX_SECTION_LENGTH:g} m")
    return line


def area_input(
    store: Store, bbox: Sequence[float] | None, polygon: Any, crs: str | None = None
) -> shapely.Geometry | None:
    """A bbox [minx, miny, maxx, maxy] or a GeoJSON (Multi)Polygon as a project-CRS area."""
    if bbox is not None and polygon is not None:
        raise InvalidInput("give either bbox or polygon, not both")
    source = input_crs(store, crs)
    if bbox is not None:
        values = list(bbox)
        if len(values) != 4:
            raise InvalidInput("bbox must be four numbers [minx, miny, maxx, maxy]")
        box = BBox(*(float(v) for v in values))
        ring = _positions(
            [[box.minx, box.miny], [box.maxx, box.miny], [box.maxx, box.maxy], [box.minx, box.maxy]], "bbox"
        )
        return shapely.Polygon(to_project(store, _densify(ring), source, "bbox"))
    if polygon is None:
        return None
    geometry = _geometry(polygon, "polygon")
    if geometry.get("type") not in ("Polygon", "MultiPolygon"):
        raise InvalidInput(f"polygon must be a GeoJSON Polygon or MultiPolygon, got {geometry.get('type')!r}")
    try:
        shape = shapely.force_2d(geojson_shape(geometry))
    except (TypeError, ValueError, IndexError, AttributeError, KeyError) as exc:
        raise InvalidInput(f"polygon is not valid GeoJSON: {exc}") from exc
    if shape.is_empty:
        raise InvalidInput("polygon is empty")
    xy = shapely.get_coordinates(shape)
    projected = to_project(store, _positions(xy.tolist(), "polygon"), source, "polygon")
    shape = shapely.set_coordinates(shape, projected)
    return shape if shape.is_valid else shapely.make_valid(shape)


def _densify(ring: np.ndarray, steps: int = 8) -> np.ndarray:
    """A box's edges with points between corners, so the box keeps its shape when reprojected."""
    closed = np.vstack([ring, ring[:1]])
    t = np.linspace(0.0, 1.0, steps, endpoint=False)
    return np.vstack([a + (b - a) * t[:, None] for a, b in zip(closed[:-1], closed[1:], strict=True)])


def run_cross_section(
    store: Store,
    line: shapely.LineString,
    *,
    layers: Sequence[str] | None = None,
    time: TimeFilter | None = None,
    dem_layer: str | None = None,
) -> CrossSection:
    """The pipes of `layers` (default: every pipe layer) cut by `line` (project CRS)."""
    chosen = pipe_layers(store, layers)
    dem = Dem.from_store(store, dem_layer)
    box = BBox(*line.bounds)
    pipes = load_pipes(store, chosen, bbox=grow(box, 1.0), time=time, dem=dem)
    near = shapely.intersects(pipes.geometry, line)
    return cross_section(pipes.take(np.flatnonzero(near)), line, store.crs, ground_line(line, dem, store.crs))


def node_path(store: Store, layer_id: str, start: str, end: str, time: TimeFilter | None = None) -> list[str]:
    """The pipes of the shortest run (by length) between two nodes of a pipe layer."""
    features = [
        f
        for f in store.query(layer_id, time=time, limit=None).features
        if f.properties.get("start_id") and f.properties.get("end_id") and f.geometry is not None
    ]
    if not features:
        raise InvalidInput(f"layer {layer_id!r} does not name its pipes' end nodes (start_id, end_id): give pipe ids")
    start_ids = [str(f.properties["start_id"]) for f in features]
    end_ids = [str(f.properties["end_id"]) for f in features]
    names, index = np.unique(np.array(start_ids + end_ids, dtype=object).astype(str), return_inverse=True)
    lookup = {name: i for i, name in enumerate(names.tolist())}
    for node in (start, end):
        if node not in lookup:
            raise InvalidInput(f"unknown node {node!r}: no pipe of layer {layer_id!r} starts or ends there")
    n = len(features)
    u, v = index[:n], index[n:]
    length = shapely.length(np.array([f.geometry for f in features], dtype=object))
    order = np.lexsort((length, np.minimum(u, v), np.maximum(u, v)))  # shortest pipe of parallel ones first
    key = np.minimum(u, v)[order] * len(names) + np.maximum(u, v)[order]
    first = order[np.r_[True, key[1:] != key[:-1]]]
    graph = coo_matrix(
        (np.r_[length[first], length[first]] + 1e-9, (np.r_[u[first], v[first]], np.r_[v[first], u[first]])),
        shape=(len(names), len(names)),
    ).tocsr()
    source, target = lookup[start], lookup[end]
    if source == target:
        raise InvalidInput("start_node and end_node are the same node")
    _, predecessors = dijkstra(graph, directed=False, indices=source, return_predecessors=True)
    if predecessors[target] < 0:
        raise InvalidInput(f"nodes {start!r} and {end!r} are not connected in layer {layer_id!r}")
    pipe_of = {(int(u[i]), int(v[i])): i for i in first.tolist()} | {(int(v[i]), int(u[i])): i for i in first.tolist()}
    path, node = [], target
    while node != source:
        previous = int(predecessors[node])
        path.append(features[pipe_of[(previous, node)]].fid)
        node = previous
    return path[::-1]


def run_profile(
    store: Store,
    *,
    pipes: Sequence[str] | None = None,
    layer: str | None = None,
    start_node: str | None = None,
    end_node: str | None = None,
    crossing_layers: Sequence[str] | None = None,
    time: TimeFilter | None = None,
    dem_layer: str | None = None,
) -> Profile:
    """The profile along pipe ids (in order), or along the shortest run between two nodes."""
    by_nodes = start_node is not None or end_node is not None
    if pipes and by_nodes:
        raise InvalidInput("give either pipes or start_node and end_node, not both")
    if by_nodes:
        if not (start_node and end_node and layer):
            raise InvalidInput("a run between nodes needs start_node, end_node and layer")
        the_layer = pipe_layers(store, [layer])[0]
        ids = node_path(store, the_layer.id, str(start_node), str(end_node), time)
    else:
        if not pipes:
            raise InvalidInput("give the pipe run as a list of pipe ids (pipes), or start_node and end_node")
        ids = [str(p) for p in pipes]
        the_layer = pipe_layers(store, [layer])[0] if layer else find_pipe_layer(store, ids[0], time)
    dem = Dem.from_store(store, dem_layer)
    run = load_pipe_ids(store, the_layer, ids, time=time, dem=dem)
    box = grow(BBox(*shapely.total_bounds(run.geometry)), 1.0)
    others = load_pipes(store, pipe_layers(store, crossing_layers), bbox=box, time=time, dem=dem)
    return profile(run, others, store.crs, dem)


def load_structures(
    store: Store, layer_ids: Sequence[str], bbox: BBox | None, time: TimeFilter | None, dem: Dem | None
) -> Structures:
    """Buildings or BIM elements of these layers (footprints with heights)."""
    parts = []
    for layer_id in layer_ids:
        try:
            layer = store.get_layer(layer_id)
        except NotFound:
            raise InvalidInput(f"unknown structure layer {layer_id!r}") from None
        features = store.query(layer.id, bbox=bbox, time=time, limit=None).features
        parts.append(structures_from_features(features, layer, dem, store.crs))
    return Structures.concat(parts)


def run_clearance(
    store: Store,
    *,
    area: shapely.Geometry | None = None,
    layers: Sequence[str] | None = None,
    structures: Sequence[str] = (),
    time: TimeFilter | None = None,
    parallel_angle: float = DEFAULT_PARALLEL_ANGLE,
    dem_layer: str | None = None,
) -> ClearanceReport:
    """GB 50289 violations among the pipes of `layers` in `area` (default: everywhere)."""
    if not 0.0 <= parallel_angle <= 90.0:
        raise InvalidInput(f"parallel_angle must lie between 0 and 90 degrees, got {parallel_angle}")
    chosen = pipe_layers(store, layers)
    dem = Dem.from_store(store, dem_layer)
    box = None if area is None else grow(BBox(*area.bounds), CLEARANCE_MARGIN)
    pipes = load_pipes(store, chosen, bbox=box, time=time, dem=dem)
    found = load_structures(store, structures, box, time, dem)
    return check_clearance(
        pipes, default_table(), crs=store.crs, structures=found, area=area, parallel_angle=parallel_angle
    )
