"""A compact pipe-network model for the analyses: ids, integer topology arrays and valves.

Everything is a numpy array indexed by position, so that the analyses stay vectorised and the
same model can be fed by EPANET files (`from_wntr`), by GIS pipe layers (`from_arrays`) or by
the store, without this package importing any of them.

Valves follow WNTR's valve-layer convention: a valve sits on a link next to one of its end
nodes ("valve on `link` protecting `node`"), so closing it cuts that link from that node.
Units are whatever the caller uses (metres and m³/s from `from_wntr`); the analyses only add
and multiply them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from twin.model import InvalidInput, NotFound

if TYPE_CHECKING:
    import pandas as pd
    import wntr

NODE_KINDS = ("junction", "reservoir", "tank", "plant", "pump_station")
"""Node kinds; every kind but `junction` feeds the network (for gas and heat: plants/stations)."""

SOURCE_KINDS = frozenset(NODE_KINDS[1:])


def _ids(values: Iterable[Any], what: str) -> np.ndarray:
    """Ids as an object array of str: GIS layers may hand integers, URLs always hand strings."""
    array = np.asarray(list(values) if not isinstance(values, np.ndarray) else values)
    if array.ndim != 1:
        raise InvalidInput(f"{what} ids must be a flat sequence")
    return array.astype(str).astype(object)


def _lookup(ids: np.ndarray, what: str) -> dict[str, int]:
    table = dict(zip(ids.tolist(), range(len(ids)), strict=True))
    if len(table) != len(ids):
        values, counts = np.unique(ids.astype(str), return_counts=True)
        raise InvalidInput(f"duplicate {what} ids: {', '.join(values[counts > 1][:5])}")
    return table


def _as_list(ids: str | Iterable[Any]) -> list[str]:
    return [ids] if isinstance(ids, str) else [str(i) for i in ids]


def _find(table: dict[str, int], ids: str | Iterable[Any], what: str, error: type[Exception]) -> np.ndarray:
    keys = _as_list(ids)
    try:
        return np.fromiter((table[k] for k in keys), dtype=np.int64, count=len(keys))
    except KeyError as exc:
        raise error(f"unknown {what} id {exc.args[0]!r}") from None


def _floats(values: Any, size: int, what: str, default: float = np.nan) -> np.ndarray:
    if values is None:
        return np.full(size, default)
    array = np.asarray(values, dtype=float)
    if array.shape != (size,):
        raise InvalidInput(f"{what}: expected {size} values, got shape {array.shape}")
    if np.any(array < 0):
        raise InvalidInput(f"{what} must not be negative")
    return array


def _flags(values: Any, size: int, what: str) -> np.ndarray:
    if values is None:
        return np.ones(size, dtype=bool)
    array = np.asarray(values, dtype=bool)
    if array.shape != (size,):
        raise InvalidInput(f"{what}: expected {size} values, got shape {array.shape}")
    return array


@dataclass(eq=False)
class Valves:
    """The valve layer: valve `i` sits on link `link[i]` next to node `node[i]` (indices).

    `closed` marks valves that are shut in normal operation (zone boundaries): they bound
    segments like any valve, but no water passes them and a burst never needs them closed.
    """

    ids: np.ndarray
    link: np.ndarray
    node: np.ndarray
    operable: np.ndarray | None = None
    accessible: np.ndarray | None = None
    closed: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.ids = _ids(self.ids, "valve")
        size = len(self.ids)
        self.link = np.asarray(self.link, dtype=np.int64).reshape(-1)
        self.node = np.asarray(self.node, dtype=np.int64).reshape(-1)
        if self.link.shape != (size,) or self.node.shape != (size,):
            raise InvalidInput("valves: ids, link and node must have the same length")
        self.operable = _flags(self.operable, size, "valve operable flags")
        self.accessible = _flags(self.accessible, size, "valve accessible flags")
        self.closed = (
            np.zeros(size, dtype=bool) if self.closed is None else _flags(self.closed, size, "valve closed flags")
        )

    @classmethod
    def empty(cls) -> Valves:
        return cls(np.empty(0, dtype=object), np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(eq=False)
class PipeNetwork:
    """Nodes, links between them (integer index arrays) and the valve layer.

    Optional per-element data: `link_length`, `link_diameter` (NaN where unknown) and
    `node_demand` (used by valve criticality). `node_kind` holds names from `NODE_KINDS`.
    """

    node_ids: np.ndarray
    link_ids: np.ndarray
    link_start: np.ndarray
    link_end: np.ndarray
    node_kind: np.ndarray | None = None
    link_length: np.ndarray | None = None
    link_diameter: np.ndarray | None = None
    node_demand: np.ndarray | None = None
    valves: Valves = field(default_factory=Valves.empty)
    _node_table: dict[str, int] = field(init=False, repr=False)
    _link_table: dict[str, int] = field(init=False, repr=False)
    _valve_table: dict[str, int] = field(init=False, repr=False)
    valve_incidence: np.ndarray = field(init=False, repr=False)
    """Per valve, the link end it cuts: 2 * link + (0 at the start node, 1 at the end node)."""

    def __post_init__(self) -> None:
        self.node_ids = _ids(self.node_ids, "node")
        self.link_ids = _ids(self.link_ids, "link")
        n_nodes, n_links = len(self.node_ids), len(self.link_ids)
        self.link_start = np.asarray(self.link_start, dtype=np.int64).reshape(-1)
        self.link_end = np.asarray(self.link_end, dtype=np.int64).reshape(-1)
        if self.link_start.shape != (n_links,) or self.link_end.shape != (n_links,):
            raise InvalidInput("link_start and link_end must have one entry per link")
        for ends in (self.link_start, self.link_end):
            if n_links and (ends.min() < 0 or ends.max() >= n_nodes):
                raise InvalidInput("a link end refers to a node index out of range")
        kinds = np.full(n_nodes, "junction", dtype=object) if self.node_kind is None else self.node_kind
        self.node_kind = np.asarray(kinds, dtype=object).reshape(-1)
        if self.node_kind.shape != (n_nodes,):
            raise InvalidInput(f"node_kind: expected {n_nodes} values")
        unknown = set(self.node_kind.tolist()) - set(NODE_KINDS)
        if unknown:
            raise InvalidInput(f"unknown node kind(s) {sorted(map(str, unknown))}; expected one of {NODE_KINDS}")
        self.link_length = _floats(self.link_length, n_links, "link_length")
        self.link_diameter = _floats(self.link_diameter, n_links, "link_diameter")
        self.node_demand = _floats(self.node_demand, n_nodes, "node_demand", default=0.0)
        self._node_table = _lookup(self.node_ids, "node")
        self._link_table = _lookup(self.link_ids, "link")
        self._valve_table = _lookup(self.valves.ids, "valve")
        self.valve_incidence = self._valve_incidence()

    def _valve_incidence(self) -> np.ndarray:
        valves = self.valves
        if not len(valves):
            return np.empty(0, dtype=np.int64)
        if valves.link.min() < 0 or valves.link.max() >= self.n_links:
            raise InvalidInput("a valve refers to a link index out of range")
        at_start = self.link_start[valves.link] == valves.node
        at_end = self.link_end[valves.link] == valves.node
        stray = ~(at_start | at_end)
        if stray.any():
            i = int(np.flatnonzero(stray)[0])
            node = self.node_ids[valves.node[i]] if 0 <= valves.node[i] < self.n_nodes else valves.node[i]
            raise InvalidInput(
                f"valve {valves.ids[i]!r} is on link {self.link_ids[valves.link[i]]!r}, which does not touch "
                f"node {node!r} ({int(stray.sum())} such valve(s)); a valve must sit next to one of its link's ends"
            )
        return 2 * valves.link + (~at_start).astype(np.int64)

    # ----------------------------------------------------------------- constructors

    @classmethod
    def from_arrays(
        cls,
        node_ids: Sequence[Any],
        link_ids: Sequence[Any],
        link_start: Sequence[Any],
        link_end: Sequence[Any],
        *,
        node_kind: Sequence[str] | None = None,
        link_length: Sequence[float] | None = None,
        link_diameter: Sequence[float] | None = None,
        node_demand: Sequence[float] | None = None,
    ) -> PipeNetwork:
        """A network from GIS-like columns: links name their end nodes by id, not by index."""
        nodes = _ids(node_ids, "node")
        table = _lookup(nodes, "node")
        start = _find(table, _ids(link_start, "link start node"), "link start node", InvalidInput)
        end = _find(table, _ids(link_end, "link end node"), "link end node", InvalidInput)
        return cls(nodes, link_ids, start, end, node_kind, link_length, link_diameter, node_demand)

    @classmethod
    def from_wntr(cls, wn: wntr.network.WaterNetworkModel, valve_layer: pd.DataFrame | None = None) -> PipeNetwork:
        """An EPANET network as read by WNTR (SI units), with an optional WNTR valve layer.

        Reservoirs and tanks are sources. Pumps and valves keep an unknown (NaN) length, as
        WNTR's `query_link_attribute('length')` leaves them out; demand is WNTR's average
        expected demand.
        """
        import wntr

        node_names = wn.node_name_list
        kinds = {"Junction": "junction", "Reservoir": "reservoir", "Tank": "tank"}
        node_kind = [kinds[wn.get_node(n).node_type] for n in node_names]
        link_names = wn.link_name_list
        links = [wn.get_link(name) for name in link_names]
        length = [link.length if link.link_type == "Pipe" else np.nan for link in links]
        diameter = [getattr(link, "diameter", np.nan) for link in links]
        demand = wntr.metrics.average_expected_demand(wn).reindex(node_names).fillna(0.0).to_numpy()
        network = cls.from_arrays(
            node_names,
            link_names,
            [link.start_node_name for link in links],
            [link.end_node_name for link in links],
            node_kind=node_kind,
            link_length=length,
            link_diameter=diameter,
            node_demand=demand,
        )
        if valve_layer is None:
            return network
        return network.with_valves(valve_layer.index, valve_layer["link"], valve_layer["node"])

    def with_valves(
        self,
        ids: Sequence[Any],
        links: Sequence[Any],
        nodes: Sequence[Any],
        *,
        operable: Sequence[bool] | None = None,
        accessible: Sequence[bool] | None = None,
        closed: Sequence[bool] | None = None,
    ) -> PipeNetwork:
        """The same network with this valve layer (links and nodes given by id)."""
        valves = Valves(
            ids,
            _find(self._link_table, links, "valve link", InvalidInput),
            _find(self._node_table, nodes, "valve node", InvalidInput),
            operable,
            accessible,
            closed,
        )
        return replace(self, valves=valves)

    # ----------------------------------------------------------------- lookups

    @property
    def n_nodes(self) -> int:
        return len(self.node_ids)

    @property
    def n_links(self) -> int:
        return len(self.link_ids)

    @property
    def is_source(self) -> np.ndarray:
        """Nodes that feed the network (reservoirs, tanks, plants, pump stations)."""
        return np.isin(self.node_kind, list(SOURCE_KINDS))

    def node_index(self, ids: str | Iterable[Any]) -> np.ndarray:
        return _find(self._node_table, ids, "node", NotFound)

    def link_index(self, ids: str | Iterable[Any]) -> np.ndarray:
        return _find(self._link_table, ids, "link", NotFound)

    def valve_index(self, ids: str | Iterable[Any]) -> np.ndarray:
        return _find(self._valve_table, ids, "valve", NotFound)

    def link_volume(self) -> np.ndarray:
        """π·d²/4·L per link; NaN where the length or the diameter is unknown."""
        return np.pi * self.link_diameter**2 / 4.0 * self.link_length
