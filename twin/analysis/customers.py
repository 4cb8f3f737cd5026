"""Who is behind a set of nodes and pipes: hydrants, service connections, buildings, critical users.

A service connection is a node of `type` service (接户点); its building is the `building_id` of
that node or of the service pipe leading to it. Buildings are looked up in the twin's building
layers (`buildings*` vector layers of the current scenario, finest scale first: the 1:500 map
names more than the 1:2000 one), by feature id. A customer is critical when its service is
flagged `critical` or its building's `use` is one of `CRITICAL_USES` (hospitals, schools ...).
"""

from __future__ import annotations

import math
import threading
import time as time_module
from dataclasses import dataclass
from typing import Any

import numpy as np

from twin.analysis.store_network import SERVICE_TYPE, NetworkModel
from twin.model import Layer, NotFound, Scenario, TimeFilter
from twin.store import Store

HYDRANT_TYPE = "hydrant"
CRITICAL_USES = frozenset(
    {"hospital", "clinic", "school", "kindergarten", "nursing_home", "医院", "学校", "幼儿园", "养老院"}
)
SCALE_ORDER = {"1:500": 0, "1:2000": 1, "1:10000": 2}


@dataclass(frozen=True)
class Building:
    id: str
    name: str | None
    use: str | None
    layer: str

    @property
    def critical(self) -> bool:
        return (self.use or "").strip().lower() in CRITICAL_USES


def building_layers(store: Store) -> list[Layer]:
    """Current building layers, finest scale first (1:10000 blocks come last)."""
    layers = [
        layer
        for layer in store.list_layers()
        if layer.id.startswith("buildings") and layer.scenario == Scenario.current and layer.kind == "vector"
    ]
    return sorted(layers, key=lambda layer: (SCALE_ORDER.get(layer.scale_band or "", 3), layer.id))


class BuildingIndex:
    """Buildings by id over the building layers, rebuilt when one of them changes.

    The building layers are looked up again (a list of every layer) at most every
    `rescan_seconds`, or at once when a known one changed; in between, a lookup only reads the
    known layers' versions.
    """

    def __init__(self, rescan_seconds: float = 30.0) -> None:
        self._lock = threading.Lock()
        self._key: tuple[Any, ...] | None = None
        self._layers: list[str] = []
        self._scanned = -math.inf
        self._table: dict[str, Building] = {}
        self.rescan_seconds = rescan_seconds

    def lookup(self, store: Store, ids: list[str], time: TimeFilter | None = None) -> dict[str, Building]:
        if not ids:
            return {}
        table = self._current(store, time)
        return {i: table[i] for i in ids if i in table}

    def _versions(self, store: Store) -> tuple[tuple[str, int], ...] | None:
        try:
            return tuple((layer_id, store.get_layer(layer_id).version) for layer_id in self._layers)
        except NotFound:
            return None

    def _current(self, store: Store, time: TimeFilter | None) -> dict[str, Building]:
        with self._lock:
            versions = self._versions(store)
            key = (id(store), time, versions)
            if key == self._key and time_module.monotonic() - self._scanned < self.rescan_seconds:
                return self._table
            layers = building_layers(store)
            self._layers = [layer.id for layer in layers]
            self._scanned = time_module.monotonic()
            key = (id(store), time, tuple((layer.id, layer.version) for layer in layers))
            if key != self._key:
                table: dict[str, Building] = {}
                for layer in reversed(layers):  # finer layers overwrite coarser ones
                    for feature in store.query(layer.id, time=time, limit=None).features:
                        props = feature.properties
                        table[feature.fid] = Building(feature.fid, props.get("name"), props.get("use"), layer.id)
                self._table, self._key = table, key
            return self._table


@dataclass
class AffectedCustomers:
    hydrants: list[int]
    services: list[int]
    building_ids: list[str]
    critical_services: list[int]
    service_building: dict[int, str]


def affected_customers(model: NetworkModel, nodes: np.ndarray, links: np.ndarray) -> AffectedCustomers:
    """Hydrants, service connections and their buildings among these nodes and pipes (positions)."""
    network = model.network
    hydrants = nodes[model.node_is(HYDRANT_TYPE)[nodes]]
    services = nodes[model.node_is(SERVICE_TYPE)[nodes]]
    is_service = model.node_is(SERVICE_TYPE)
    building: dict[int, str] = {}
    # The service pipe's building, for the service node at its end.
    pipe_building = model.pipe_text("building_id")
    with_building = links[pipe_building[links] != ""]
    for ends in (network.link_start[with_building], network.link_end[with_building]):
        at_service = is_service[ends]
        building.update(zip(ends[at_service].tolist(), pipe_building[with_building[at_service]].tolist(), strict=True))
    node_building = model.node_text("building_id")
    own = services[node_building[services] != ""]
    building.update(zip(own.tolist(), node_building[own].tolist(), strict=True))
    critical = services[model.node_flag("critical")[services]]
    return AffectedCustomers(
        hydrants=hydrants.tolist(),
        services=services.tolist(),
        building_ids=sorted(set(building.values())),
        critical_services=critical.tolist(),
        service_building={i: building[i] for i in services.tolist() if i in building},
    )
