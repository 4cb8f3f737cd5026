"""Pipe networks built from a twin's layers, with their segments, cached per layer version.

A network is named by its pipes layer's metadata (`network`, `role: pipes`, `nodes_layer`,
optionally `valves_layer`), as the readers in `ingestion/` and the demo district write them.

Valves come in two shapes, both turned into the valve layer of `PipeNetwork` (a valve on a
link next to a node):

- a point of `type` valve in the nodes layer that sits between pipes (CJJ 61 surveys, the
  demo): the valve is placed on its first pipe (by pipe id) next to the valve point, so closing
  it cuts that pipe from the point and the point stays with the other pipe;
- a valves layer with `link` and `node` properties (EPANET files with a WNTR-style valve layer).

Both carry `status` (open/closed; closed valves bound supply zones), `operable` and
`accessible` (missing means yes). Nodes whose `type` is plant, tank, reservoir, pump station or
station (gas) feed the network. Node demand is the `demand` property where one is stored
(EPANET, m³/s), else one unit per service connection (`demand_unit` says which).

The model of a network is built once per (layer versions, instant) and kept in a
`NetworkCache`; each request only compares the layers' versions, so a burst query never rebuilds
it, and an ingest that changes a layer makes the next request rebuild.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import shapely

from twin.analysis.burst_index import BurstIndex
from twin.analysis.network import PipeNetwork
from twin.analysis.segments import Segmentation, ValveCriticality, segment, valve_criticality
from twin.model import InvalidInput, NotFound, TimeFilter
from twin.store import Store

SOURCE_NODE_KINDS = {
    "plant": "plant",
    "tank": "tank",
    "reservoir": "reservoir",
    "pump_station": "pump_station",
    "station": "plant",
    "source": "plant",
}
"""Node `type`s that feed a network, and the `PipeNetwork` node kind each one stands for."""

VALVE_TYPE = "valve"
SERVICE_TYPE = "service"
CACHE_SIZE = 8


@dataclass(frozen=True)
class NetworkLayers:
    """The layers of one network in the store."""

    name: str
    pipes: str
    nodes: str | None = None
    valves: str | None = None

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(i for i in (self.pipes, self.nodes, self.valves) if i)


def _numbers(frame: pd.DataFrame, name: str, default: float = math.nan) -> np.ndarray:
    if name not in frame.columns:
        return np.full(len(frame), default)
    return pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=float)


def _flag_column(frame: pd.DataFrame, name: str, default: bool) -> np.ndarray:
    """Yes/no flags stored as booleans, 0/1 or text; missing means `default`."""
    if name not in frame.columns:
        return np.full(len(frame), default)
    out = np.full(len(frame), default)
    for i, value in enumerate(frame[name].tolist()):
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        if isinstance(value, str):
            out[i] = value.strip().lower() in ("1", "true", "yes", "y", "t", "open")
        else:
            out[i] = bool(value)
    return out


def _texts(frame: pd.DataFrame, name: str, default: str = "") -> np.ndarray:
    if name not in frame.columns:
        return np.full(len(frame), default, dtype=object)
    return frame[name].where(frame[name].notna(), default).astype(str).to_numpy(dtype=object)


@dataclass(eq=False)
class NetworkModel:
    """A network ready for the analyses: the topology, what each element is, and where.

    Row `i` of `nodes` (properties) is node `i` of `network`; row `j` of `pipes` is link `j`.
    Geometries are in the project CRS.
    """

    name: str
    network: PipeNetwork
    nodes: pd.DataFrame
    pipes: pd.DataFrame
    node_points: np.ndarray
    pipe_lines: np.ndarray
    valve_points: np.ndarray
    demand_unit: str
    warnings: list[str] = field(default_factory=list)
    layers: NetworkLayers | None = None
    versions: tuple[int, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)
    segmentation: Segmentation = field(init=False)
    _criticality: ValveCriticality | None = field(default=None, init=False, repr=False)
    _tree: shapely.STRtree | None = field(default=None, init=False, repr=False)
    _columns: dict[str, np.ndarray] = field(default_factory=dict, init=False, repr=False)
    _burst_index: BurstIndex | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.segmentation = segment(self.network)

    @property
    def criticality(self) -> ValveCriticality:
        if self._criticality is None:
            self._criticality = valve_criticality(self.network, self.segmentation)
        return self._criticality

    @property
    def node_type(self) -> np.ndarray:
        return self._column("node_type", lambda: _texts(self.nodes, "type", "junction"))

    @property
    def link_volume(self) -> np.ndarray:
        """π·d²/4·L per pipe (NaN where unknown), computed once."""
        return self._column("link_volume", self.network.link_volume)

    def node_is(self, kind: str) -> np.ndarray:
        """Per node: is its `type` this one (computed once per type)."""
        return self._column(f"is:{kind}", lambda: self.node_type == kind)

    @property
    def burst_index(self) -> BurstIndex:
        """The prepared burst and isolation queries (built on first use)."""
        if self._burst_index is None:
            self._burst_index = BurstIndex(self.network, self.segmentation)
        return self._burst_index

    def node_text(self, name: str) -> np.ndarray:
        """A node property as text per node ('' where missing), computed once."""
        return self._column(f"node:{name}", lambda: _texts(self.nodes, name))

    def pipe_text(self, name: str) -> np.ndarray:
        """A pipe property as text per pipe ('' where missing), computed once."""
        return self._column(f"pipe:{name}", lambda: _texts(self.pipes, name))

    def node_flag(self, name: str) -> np.ndarray:
        """A yes/no node property per node (missing: no), computed once."""
        return self._column(f"flag:{name}", lambda: _flag_column(self.nodes, name, False))

    def _column(self, key: str, make: Any) -> np.ndarray:
        value = self._columns.get(key)
        if value is None:
            value = self._columns[key] = make()
        return value

    def nearest_pipe(self, x: float, y: float, max_distance: float) -> tuple[int, float] | None:
        """The pipe nearest to (x, y) in the project CRS within `max_distance`, and its distance."""
        if self._tree is None:
            self._tree = shapely.STRtree(self.pipe_lines)
        point = shapely.Point(x, y)
        found, distances = self._tree.query_nearest(
            point, max_distance=max_distance, return_distance=True, all_matches=True
        )
        if not len(found):
            return None
        # Equal distances (a point on a shared end): the lowest pipe id, so the answer is stable.
        pick = min(found.tolist(), key=lambda j: str(self.network.link_ids[j]))
        return int(pick), float(distances.min())


def _derived_nodes(pipes: pd.DataFrame, lines: np.ndarray) -> tuple[pd.DataFrame, np.ndarray]:
    """Junctions at the pipe ends, for a network stored without a nodes layer."""
    ends = pd.DataFrame(
        {
            "node_id": np.concatenate((_texts(pipes, "start_id"), _texts(pipes, "end_id"))),
            "geometry": np.concatenate((shapely.get_point(lines, 0), shapely.get_point(lines, -1))),
        }
    ).drop_duplicates("node_id")
    return ends[["node_id"]].assign(type="junction").reset_index(drop=True), ends["geometry"].to_numpy()


def build_model(
    name: str,
    nodes: pd.DataFrame | None,
    node_points: np.ndarray | None,
    pipes: pd.DataFrame,
    pipe_lines: np.ndarray,
    valves: pd.DataFrame | None = None,
    valve_points: np.ndarray | None = None,
) -> NetworkModel:
    """A `NetworkModel` from property tables (with `node_id`, `pipe_id`, `valve_id` columns)."""
    warnings: list[str] = []
    if not len(pipes):
        raise InvalidInput(f"network {name!r} has no pipes")
    if nodes is None or not len(nodes):
        nodes, node_points = _derived_nodes(pipes, pipe_lines)
    node_ids = _texts(nodes, "node_id")
    types = _texts(nodes, "type", "junction")
    kinds = np.array([SOURCE_NODE_KINDS.get(t, "junction") for t in types.tolist()], dtype=object)
    length = _numbers(pipes, "length")
    geometric = shapely.length(pipe_lines)
    length = np.where(np.isfinite(length) & (length >= 0), length, geometric)
    diameter = _numbers(pipes, "diameter") / 1000.0
    box = np.sqrt(4.0 * _numbers(pipes, "width") * _numbers(pipes, "height") / np.pi) / 1000.0
    diameter = np.where(np.isfinite(diameter) & (diameter > 0), diameter, box)
    diameter = np.where(diameter >= 0, diameter, np.nan)
    demand = _numbers(nodes, "demand")
    if np.isfinite(demand).any():
        demand_unit = "m3/s"
        demand = np.nan_to_num(np.abs(demand))
    else:
        demand_unit = "service connections"
        demand = (types == SERVICE_TYPE).astype(float)
    network = PipeNetwork.from_arrays(
        node_ids,
        _texts(pipes, "pipe_id"),
        _texts(pipes, "start_id"),
        _texts(pipes, "end_id"),
        node_kind=kinds,
        link_length=length,
        link_diameter=diameter,
        node_demand=demand,
    )
    ids, links, at, flags, points = _valve_layer(network, nodes, node_points, types, valves, valve_points, warnings)
    if len(ids):
        network = network.with_valves(ids, links, at, **flags)
    return NetworkModel(
        name=name,
        network=network,
        nodes=nodes.reset_index(drop=True),
        pipes=pipes.reset_index(drop=True),
        node_points=np.asarray(node_points, dtype=object),
        pipe_lines=np.asarray(pipe_lines, dtype=object),
        valve_points=points,
        demand_unit=demand_unit,
        warnings=warnings,
    )


def _valve_layer(
    network: PipeNetwork,
    nodes: pd.DataFrame,
    node_points: np.ndarray,
    types: np.ndarray,
    valves: pd.DataFrame | None,
    valve_points: np.ndarray | None,
    warnings: list[str],
) -> tuple[list[str], list[str], list[str], dict[str, np.ndarray], np.ndarray]:
    """(ids, links, nodes, flags, points) of the valve points and of the valve layer together."""
    ids: list[str] = []
    links: list[str] = []
    at: list[str] = []
    tables: list[pd.DataFrame] = []
    points: list[Any] = []
    valve_nodes = np.flatnonzero(types == VALVE_TYPE)
    if len(valve_nodes):
        # First pipe (by id) at each valve point.
        ends = pd.DataFrame(
            {
                "node": np.concatenate((network.link_start, network.link_end)),
                "pipe": np.concatenate((network.link_ids, network.link_ids)),
            }
        )
        ends = ends[np.isin(ends["node"].to_numpy(), valve_nodes)].sort_values(["node", "pipe"])
        first = ends.drop_duplicates("node").set_index("node")["pipe"]
        lonely = [str(network.node_ids[i]) for i in valve_nodes if i not in first.index]
        if lonely:
            warnings.append(f"{len(lonely)} valve point(s) on no pipe left out: {', '.join(lonely[:5])}")
        placed = np.array([i for i in valve_nodes if i in first.index], dtype=np.int64)
        ids += network.node_ids[placed].tolist()
        links += first.loc[placed].astype(str).tolist()
        at += network.node_ids[placed].tolist()
        tables.append(nodes.iloc[placed])
        points += list(np.asarray(node_points, dtype=object)[placed])
    if valves is not None and len(valves):
        ids += _texts(valves, "valve_id").tolist()
        links += _texts(valves, "link").tolist()
        at += _texts(valves, "node").tolist()
        tables.append(valves)
        points += list(valve_points if valve_points is not None else [None] * len(valves))
    if not ids:
        return [], [], [], {}, np.empty(0, dtype=object)
    table = pd.concat(tables, ignore_index=True) if len(tables) > 1 else tables[0].reset_index(drop=True)
    flags = {
        "operable": _flag_column(table, "operable", True),
        "accessible": _flag_column(table, "accessible", True),
        "closed": _texts(table, "status").astype(str) == "closed",
    }
    return ids, links, at, flags, np.asarray(points, dtype=object)


# ----------------------------------------------------------------------------- the store side


def network_layers(store: Store) -> dict[str, NetworkLayers]:
    """Every network of the twin by name (its pipes layer's `network`, else the layer id)."""
    layers = store.list_layers()
    by_id = {layer.id: layer for layer in layers}
    found: dict[str, NetworkLayers] = {}
    for layer in layers:
        meta = layer.metadata or {}
        if meta.get("role") != "pipes":
            continue
        name = str(meta.get("network") or layer.id)
        nodes = meta.get("nodes_layer")
        valves = meta.get("valves_layer")
        found[name if name not in found else layer.id] = NetworkLayers(
            name,
            layer.id,
            nodes if nodes in by_id else None,
            valves if valves in by_id else None,
        )
    return found


def find_network(store: Store, name: str) -> NetworkLayers:
    """The network called `name` (or whose pipes layer is `name`); NotFound lists the others."""
    networks = network_layers(store)
    if name in networks:
        return networks[name]
    for layers in networks.values():
        if layers.pipes == name:
            return layers
    known = ", ".join(sorted(networks)) or "none"
    raise NotFound(f"no pipe network {name!r} in this twin; networks: {known}")


def _read(store: Store, layer_id: str, time: TimeFilter | None, id_column: str) -> tuple[pd.DataFrame, np.ndarray]:
    """Properties and geometries of a layer; the feature id is the element id."""
    features = store.query(layer_id, time=time, limit=None).features
    frame = pd.DataFrame.from_records([f.properties for f in features], index=range(len(features)))
    frame[id_column] = [f.fid for f in features]
    return frame, np.array([f.geometry for f in features], dtype=object)


def load_model(store: Store, layers: NetworkLayers, time: TimeFilter | None = None) -> NetworkModel:
    """Read a network's layers (as valid at `time`, default now) and build its model."""
    versions = tuple(store.get_layer(i).version for i in layers.ids)
    pipes, lines = _read(store, layers.pipes, time, "pipe_id")
    nodes = points = valves = valve_points = None
    if layers.nodes:
        nodes, points = _read(store, layers.nodes, time, "node_id")
    if layers.valves:
        valves, valve_points = _read(store, layers.valves, time, "valve_id")
    model = build_model(layers.name, nodes, points, pipes, lines, valves, valve_points)
    model.layers, model.versions = layers, versions
    model.metadata = dict(store.get_layer(layers.pipes).metadata or {})
    return model


class NetworkCache:
    """Built network models per (network, instant), checked against the layers' versions.

    A lookup costs one `get_layer` per layer of the network; a model whose layers changed is
    rebuilt (and the layer set found again, in case a valve layer was added).
    """

    def __init__(self, size: int = CACHE_SIZE) -> None:
        self._models: OrderedDict[tuple[int, str, Any], NetworkModel] = OrderedDict()
        self._lock = threading.Lock()
        self._building: dict[tuple[int, str, Any], threading.Lock] = {}
        self.size = size
        self.builds = 0

    def get(self, store: Store, name: str, time: TimeFilter | None = None) -> NetworkModel:
        key = (id(store), name, time)
        model = self._fresh(store, key)
        if model is not None:
            return model
        with self._lock:
            build_lock = self._building.setdefault(key, threading.Lock())
        with build_lock:  # one build per key at a time; others wait for it
            model = self._fresh(store, key)
            if model is None:
                model = load_model(store, find_network(store, name), time)
                self.builds += 1
                with self._lock:
                    self._models[key] = model
                    self._models.move_to_end(key)
                    while len(self._models) > self.size:
                        self._models.popitem(last=False)
        return model

    def _fresh(self, store: Store, key: tuple[int, str, Any]) -> NetworkModel | None:
        with self._lock:
            model = self._models.get(key)
        if model is None or model.layers is None:
            return None
        try:
            versions = tuple(store.get_layer(i).version for i in model.layers.ids)
        except NotFound:
            return None
        return model if versions == model.versions else None
