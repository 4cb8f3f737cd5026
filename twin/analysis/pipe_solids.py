"""Pipes as 3D solids: class, outer size and outer-wall elevations at both ends, from the store.

Cross-sections, profiles and clearance checks all need the same thing from a pipe layer: where
each pipe's outer wall is in 3D. Elevations vary linearly along a pipe between its two ends.

Conventions, as CJJ 61 surveys record them (and as the demo district is generated):

- `start_invert`/`end_invert`: the inside bottom of the pipe (drainage inverts).
- `start_elev`/`end_elev`: the surveyed pipe elevation: the inside bottom for drainage classes
  (PS, YS, WS, HS), the outer top (crown) for every other class.
- `start_depth`/`end_depth`: burial depth below the ground at the end node, to that same point
  (invert depth for drainage, cover to the crown otherwise). The ground is the end node's
  `ground_elev` in the network's nodes layer, else the DEM at the pipe's end.
- a 3D geometry without any of these: its z is the centreline.

The first of these a pipe carries wins. Sizes are `diameter` or `width` × `height` in mm,
inner sizes when `wall_thickness` (mm) is given; without it the nominal size is taken as the
outer size (the demo generator does the same). Values under 10 are taken as metres, since no
pipe is 10 mm wide but EPANET files give diameters in metres.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import shapely

from twin.analysis.dem_sample import Dem
from twin.model import BBox, Feature, InvalidInput, Layer, LayerKind, NotFound, TimeFilter
from twin.store import Store

FAMILY_CODES = {
    "water": ("JS", "SS"),
    "reclaimed": ("ZS",),
    "drainage": ("PS", "YS", "WS", "HS"),
    "gas": ("RQ", "MQ", "TR", "YH"),
    "heat": ("RL", "RS", "ZQ"),
    "power": ("DL", "GD", "LD", "XH", "DC"),
    "telecom": ("TX", "DX", "YD", "LT", "DS", "JK"),
    "industrial": ("GY",),
    "trench": ("ZH",),
}
"""CJJ 61 class codes (and their sub-class codes) by pipe family."""

FAMILY_OF_CODE = {code: family for family, codes in FAMILY_CODES.items() for code in codes}
NETWORK_FAMILY = {"sewage": "drainage", "storm": "drainage", "sewer": "drainage"}
ELEVATION_SOURCES = ("invert", "elevation", "depth", "geometry", "unknown")
NODE_GROUND_FIELDS = ("ground_elev", "ground", "surface_elev")


@dataclass(eq=False)
class PipeSolids:
    """Per-pipe arrays; lengths in metres, elevations in the store's height datum.

    `bottom` and `ground` are (n, 2): the outer-wall bottom and the ground at the start and end
    of the geometry (NaN where unknown). `width`/`height` are outer sizes in metres;
    `diameter_mm`, `width_mm`, `height_mm` the sizes as recorded (NaN where absent).
    """

    layer: np.ndarray
    ids: np.ndarray
    geometry: np.ndarray
    code: np.ndarray
    family: np.ndarray
    box: np.ndarray
    width: np.ndarray
    height: np.ndarray
    wall: np.ndarray
    diameter_mm: np.ndarray
    width_mm: np.ndarray
    height_mm: np.ndarray
    bottom: np.ndarray
    ground: np.ndarray
    source: np.ndarray
    start_node: np.ndarray
    end_node: np.ndarray
    properties: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def empty(cls) -> PipeSolids:
        return concat([])

    def take(self, index: np.ndarray | Sequence[int]) -> PipeSolids:
        index = np.asarray(index, dtype=np.int64)
        return PipeSolids(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    @property
    def top(self) -> np.ndarray:
        return self.bottom + self.height[:, None]

    @property
    def nominal_mm(self) -> np.ndarray:
        """The size that GB 50289's diameter classes read: DN, else the box width."""
        return np.where(np.isfinite(self.diameter_mm), self.diameter_mm, self.width_mm)

    def at(self, index: np.ndarray, fraction: np.ndarray) -> dict[str, np.ndarray]:
        """Outer bottom, top, centre, inside bottom (invert) and ground at fractions along pipes."""
        index = np.asarray(index, dtype=np.int64)
        f = np.clip(np.asarray(fraction, dtype=float), 0.0, 1.0)
        bottom = self.bottom[index, 0] + f * (self.bottom[index, 1] - self.bottom[index, 0])
        ground = self.ground[index, 0] + f * (self.ground[index, 1] - self.ground[index, 0])
        height = self.height[index]
        return {
            "bottom": bottom,
            "top": bottom + height,
            "centre": bottom + height / 2.0,
            "invert": bottom + self.wall[index],
            "ground": ground,
        }

    def size_label(self, i: int) -> str:
        if np.isfinite(self.diameter_mm[i]):
            return f"DN{self.diameter_mm[i]:g}"
        if np.isfinite(self.width_mm[i]) and np.isfinite(self.height_mm[i]):
            return f"{self.width_mm[i]:g}×{self.height_mm[i]:g}"
        return "size unknown"

    def describe(self, i: int) -> dict[str, Any]:
        """The identity and size of one pipe, as every answer names pipes."""
        props = self.properties[i]
        return {
            "layer": str(self.layer[i]),
            "id": str(self.ids[i]),
            "class": str(self.code[i]) or None,
            "family": str(self.family[i]),
            "material": props.get("material"),
            "shape": "box" if self.box[i] else "circular",
            "size": self.size_label(i),
            "diameter_mm": _finite(self.diameter_mm[i]),
            "width_mm": _finite(self.width_mm[i]),
            "height_mm": _finite(self.height_mm[i]),
            "elevation_from": str(self.source[i]),
        }


def concat(parts: Sequence[PipeSolids]) -> PipeSolids:
    """One set of solids from several layers' sets."""
    if not parts:
        empty_obj = np.empty(0, dtype=object)
        empty = np.empty(0)
        return PipeSolids(
            layer=empty_obj,
            ids=empty_obj,
            geometry=empty_obj,
            code=empty_obj,
            family=empty_obj,
            box=np.empty(0, dtype=bool),
            width=empty,
            height=empty,
            wall=empty,
            diameter_mm=empty,
            width_mm=empty,
            height_mm=empty,
            bottom=np.empty((0, 2)),
            ground=np.empty((0, 2)),
            source=empty_obj,
            start_node=empty_obj,
            end_node=empty_obj,
            properties=empty_obj,
        )
    return PipeSolids(**{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(PipeSolids)})


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def _number(value: Any) -> float:
    if value is None or isinstance(value, bool):
        return np.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return np.nan


def _column(properties: Sequence[dict[str, Any]], *names: str) -> np.ndarray:
    """A float column from the first of `names` each feature carries (NaN where none)."""
    out = np.full(len(properties), np.nan)
    for name in names:
        values = np.fromiter((_number(p.get(name)) for p in properties), dtype=float, count=len(properties))
        out = np.where(np.isnan(out), values, out)
    return out


def _text(properties: Sequence[dict[str, Any]], name: str) -> np.ndarray:
    return np.array(["" if p.get(name) is None else str(p.get(name)) for p in properties], dtype=object)


def _metres(size: np.ndarray) -> np.ndarray:
    return np.where(size < 10.0, size, size / 1000.0)


def pipe_family(code: np.ndarray, network: str | None) -> np.ndarray:
    """The family of each pipe from its CJJ 61 class code, else from the layer's network name."""
    fallback = NETWORK_FAMILY.get(network or "", network or "other")
    fallback = fallback if fallback in FAMILY_CODES else "other"
    return np.array([FAMILY_OF_CODE.get(str(c).upper()[:2], fallback) for c in code], dtype=object)


def solids_from_features(
    features: Sequence[Feature],
    layer: Layer,
    node_ground: dict[str, float],
    dem: Dem | None,
    crs: str,
) -> PipeSolids:
    """The solids of one layer's pipe features (lines only; others are left out)."""
    geoms = np.array([f.geometry for f in features], dtype=object)
    if len(geoms):
        geoms = np.where(shapely.get_type_id(geoms) == 5, shapely.line_merge(geoms), geoms)
        keep = (shapely.get_type_id(geoms) == 1) & ~shapely.is_empty(geoms)
    else:
        keep = np.zeros(0, dtype=bool)
    feats = [f for f, k in zip(features, keep.tolist(), strict=True) if k]
    geoms = geoms[keep]
    props = [f.properties for f in feats]
    n = len(feats)
    code = _text(props, "class")
    family = pipe_family(code, (layer.metadata or {}).get("network"))

    diameter = _column(props, "diameter")
    width_mm, height_mm = _column(props, "width"), _column(props, "height")
    shape = _text(props, "shape")
    box = np.isfinite(width_mm) & np.isfinite(height_mm) & (~np.isfinite(diameter) | (shape == "box"))
    diameter = np.where(box, np.nan, diameter)
    width_mm, height_mm = np.where(box, width_mm, np.nan), np.where(box, height_mm, np.nan)
    wall = np.nan_to_num(_metres(_column(props, "wall_thickness")), nan=0.0)
    inner_w = np.nan_to_num(np.where(box, _metres(width_mm), _metres(diameter)), nan=0.0)
    inner_h = np.nan_to_num(np.where(box, _metres(height_mm), _metres(diameter)), nan=0.0)
    width, height = inner_w + 2 * wall, inner_h + 2 * wall

    start_node, end_node = _text(props, "start_id"), _text(props, "end_id")
    ends = np.stack([shapely.get_point(geoms, 0), shapely.get_point(geoms, -1)], axis=1) if n else np.empty((0, 2))
    ground = np.stack(
        [
            np.array([node_ground.get(s, np.nan) for s in start_node], dtype=float),
            np.array([node_ground.get(e, np.nan) for e in end_node], dtype=float),
        ],
        axis=1,
    ).reshape(n, 2)
    missing = ~np.isfinite(ground)
    if dem is not None and missing.any():
        xy = shapely.get_coordinates(ends[missing])
        ground[missing] = dem.sample(xy[:, 0], xy[:, 1], crs)

    drainage = (family == "drainage")[:, None]
    to_bottom_from_ref = np.where(drainage, -wall[:, None], -height[:, None])  # reference point -> outer bottom
    candidates = {
        "invert": np.stack([_column(props, "start_invert"), _column(props, "end_invert")], axis=1) - wall[:, None],
        "elevation": np.stack([_column(props, "start_elev"), _column(props, "end_elev")], axis=1) + to_bottom_from_ref,
        "depth": ground
        - np.stack([_column(props, "start_depth"), _column(props, "end_depth")], axis=1)
        + to_bottom_from_ref,
        "geometry": _end_z(ends) - height[:, None] / 2.0,
    }
    bottom = np.full((n, 2), np.nan)
    source = np.full(n, "unknown", dtype=object)
    for name, values in candidates.items():
        usable = ~np.isfinite(bottom).all(axis=1) & np.isfinite(values).all(axis=1)
        bottom[usable] = values[usable]
        source[usable] = name
    return PipeSolids(
        layer=np.full(n, layer.id, dtype=object),
        ids=np.array([f.fid for f in feats], dtype=object),
        geometry=shapely.force_2d(geoms) if n else geoms,
        code=code,
        family=family,
        box=box,
        width=width,
        height=height,
        wall=wall,
        diameter_mm=diameter,
        width_mm=width_mm,
        height_mm=height_mm,
        bottom=bottom,
        ground=ground,
        source=source,
        start_node=start_node,
        end_node=end_node,
        properties=_objects(props),
    )


def _objects(values: Sequence[Any]) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def _end_z(ends: np.ndarray) -> np.ndarray:
    if not len(ends):
        return np.empty((0, 2))
    flat = ends.ravel()
    z = np.full(len(flat), np.nan)
    has = shapely.has_z(flat)
    if has.any():
        z[has] = shapely.get_coordinates(flat[has], include_z=True)[:, 2]
    return z.reshape(-1, 2)


# ----- store access -------------------------------------------------------------------------


def is_pipe_layer(layer: Layer) -> bool:
    """Pipe layers are pipe-network layers of lines (the `pipes` role, not nodes or valves)."""
    if layer.kind != LayerKind.pipe_network:
        return False
    role = (layer.metadata or {}).get("role")
    if role is not None:
        return role == "pipes"
    return (layer.geometry_type or "").endswith("LineString")


def pipe_layers(store: Store, layer_ids: Iterable[str] | None = None) -> list[Layer]:
    """The layers named (each must be a pipe layer), or every pipe layer of the twin."""
    if layer_ids is None:
        return [layer for layer in store.list_layers() if is_pipe_layer(layer)]
    layers = []
    for layer_id in layer_ids:
        try:
            layer = store.get_layer(layer_id)
        except NotFound:
            raise InvalidInput(f"unknown pipe layer {layer_id!r}") from None
        if not is_pipe_layer(layer):
            raise InvalidInput(f"layer {layer_id!r} is not a pipe layer (kind pipe_network with role 'pipes')")
        layers.append(layer)
    return layers


def node_grounds(store: Store, layer: Layer, bbox: BBox | None, time: TimeFilter | None) -> dict[str, float]:
    """Ground elevation of the network's nodes (by feature id and by `node_id`)."""
    nodes_layer = (layer.metadata or {}).get("nodes_layer")
    if not nodes_layer:
        return {}
    try:
        features = store.query(nodes_layer, bbox=bbox, time=time, limit=None).features
    except NotFound:
        return {}
    ground: dict[str, float] = {}
    for feature in features:
        value = next(
            (v for v in (_number(feature.properties.get(k)) for k in NODE_GROUND_FIELDS) if np.isfinite(v)), None
        )
        if value is None:
            continue
        ground[feature.fid] = value
        node_id = feature.properties.get("node_id")
        if node_id is not None:
            ground[str(node_id)] = value
    return ground


def grow(bbox: BBox, margin: float) -> BBox:
    return BBox(bbox.minx - margin, bbox.miny - margin, bbox.maxx + margin, bbox.maxy + margin)


def load_pipes(
    store: Store,
    layers: Sequence[Layer],
    *,
    bbox: BBox | None = None,
    time: TimeFilter | None = None,
    dem: Dem | None = None,
) -> PipeSolids:
    """Every pipe of these layers touching `bbox` (project CRS), valid at `time`."""
    parts = []
    for layer in layers:
        features = store.query(layer.id, bbox=bbox, time=time, limit=None).features
        if features:
            nodes = node_grounds(store, layer, None if bbox is None else extent(features, 1.0), time)
            parts.append(solids_from_features(features, layer, nodes, dem, store.crs))
    return concat(parts)


def extent(features: Sequence[Feature], margin: float) -> BBox:
    """The features' bounding box, widened by `margin`, to fetch their end nodes."""
    bounds = shapely.bounds(np.array([f.geometry for f in features], dtype=object))
    return grow(BBox(*np.nanmin(bounds[:, :2], axis=0), *np.nanmax(bounds[:, 2:], axis=0)), margin)


def find_pipe_layer(store: Store, pipe_id: str, time: TimeFilter | None = None) -> Layer:
    """The pipe layer holding `pipe_id`, for requests that name pipes without their layer."""
    for layer in pipe_layers(store):
        try:
            store.get_feature(layer.id, pipe_id, time)
        except NotFound:
            continue
        return layer
    raise InvalidInput(f"unknown pipe id {pipe_id!r}: no pipe layer holds it")


def load_pipe_ids(
    store: Store, layer: Layer, ids: Sequence[str], *, time: TimeFilter | None = None, dem: Dem | None = None
) -> PipeSolids:
    """The pipes named, in the order given; InvalidInput naming the ids the layer lacks."""
    features, unknown = [], []
    for pipe_id in ids:
        try:
            features.append(store.get_feature(layer.id, str(pipe_id), time))
        except NotFound:
            unknown.append(str(pipe_id))
    if unknown:
        shown = ", ".join(repr(u) for u in unknown[:10])
        raise InvalidInput(f"unknown pipe id(s) in layer {layer.id!r}: {shown}")
    nodes = node_grounds(store, layer, extent(features, 1.0), time)
    solids = solids_from_features(features, layer, nodes, dem, store.crs)
    if len(solids) != len(features):
        lines = set(solids.ids.tolist())
        odd = [f.fid for f in features if f.fid not in lines]
        raise InvalidInput(f"pipe(s) {', '.join(map(repr, odd[:10]))} have no line geometry")
    return solids
