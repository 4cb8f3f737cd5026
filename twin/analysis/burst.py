"""Burst isolation and supply loss on the valve segments of a pipe network.

Rules, in the order they are applied:

1. The burst segments are the segments of the burst links.
2. Valves that are inoperable, inaccessible or listed as failed cannot be closed: the segment
   behind such a valve joins the isolation area and the valves around it are looked at in turn
   (secondary valves). The isolation area is therefore the set of segments connected to the
   burst segments through failed valves.
3. Boundary valves are the working valves with one side in the isolation area. Closing all of
   them isolates the area.
4. Sources decide: after closing every boundary valve, a segment outside the area loses supply
   when no open path (through open valves) leads it to a source node. A boundary valve must
   close only when the segment behind it still reaches a source; a boundary valve whose far
   side has no source anyway is *optional*: closing it does not save anyone's supply, it only
   keeps the dead side from draining into the burst.
5. Valves shut in normal operation (`Valves.closed`, zone boundaries) pass no water: they are
   never passed, never need closing (they are listed as `already_closed` when they bound the
   area) and count as closed when deciding who has supply, before the burst and after it.
6. Crew order: the valves to close are sorted by their distance from the burst along the pipes
   of the isolation area (from the middle of the nearest burst link to the valve's node, using
   link lengths; links of unknown length count as 0, and when no length is known at all each
   link counts as 1), ties by valve id.

The analysis is topological: pumps, check valves and links closed in a hydraulic model are
treated as open connections, as in WNTR's segmentation.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components, dijkstra

from twin.analysis.network import PipeNetwork
from twin.analysis.segments import Segmentation, segment
from twin.model import InvalidInput


@dataclass
class Impact:
    """Nodes and links of a set of segments, with what it means to empty them."""

    node_ids: list[str]
    link_ids: list[str]
    length: float
    """Total length of the links whose length is known."""
    volume: float
    """Water to drain: sum of π·d²/4·L over the links whose length and diameter are known."""
    links_without_volume: int
    """Links left out of `volume` for want of a length or a diameter."""
    demand: float

    @property
    def n_nodes(self) -> int:
        return len(self.node_ids)

    @property
    def n_links(self) -> int:
        return len(self.link_ids)


@dataclass
class BurstIsolation:
    """What to do about a burst, and what it costs.

    `valves_to_close` are the boundary valves that must close, in crew order;
    `optional_valves` are boundary valves whose far side has no source anyway;
    `secondary_valves` are the boundary valves (required or optional) that are only needed
    because a failed valve was passed; `passed_valves` are those failed valves.
    `isolated` is the isolation area bounded by all boundary valves; `lost_supply` the segments
    outside it that lose supply although none of their valves is closed.
    """

    burst_links: list[str]
    burst_segments: list[int]
    isolation_segments: list[int]
    valves_to_close: list[str]
    optional_valves: list[str]
    secondary_valves: list[str]
    passed_valves: list[str]
    valve_distance: dict[str, float]
    """Per boundary valve, its path length from the burst (the crew-order key)."""
    lost_supply_segments: list[int]
    sources_in_area: list[str]
    """Source nodes inside the isolation area: no valve separates them from the burst."""
    isolated: Impact
    lost_supply: Impact
    already_closed: list[str] = field(default_factory=list)
    """Boundary valves shut in normal operation: nothing to do, but the crew should know."""

    @property
    def affected_nodes(self) -> int:
        return self.isolated.n_nodes + self.lost_supply.n_nodes

    @property
    def affected_links(self) -> int:
        return self.isolated.n_links + self.lost_supply.n_links


@dataclass
class SupplyLoss:
    """What closing a set of valves cuts off from every source."""

    closed_valves: list[str]
    lost_supply_segments: list[int]
    lost_supply: Impact
    unsupplied_before: list[int] = field(default_factory=list)
    """Segments that reached no source even with every valve open (not counted as lost)."""


def _segments_of(network: PipeNetwork, segmentation: Segmentation | None) -> Segmentation:
    if segmentation is None:
        return segment(network)
    if len(segmentation.node_segment) != network.n_nodes or len(segmentation.link_segment) != network.n_links:
        raise InvalidInput("the segmentation given belongs to another network (sizes differ)")
    return segmentation


def _require_source(network: PipeNetwork) -> np.ndarray:
    sources = network.is_source
    if not sources.any():
        raise InvalidInput(
            "the network has no source node (reservoir, tank, plant or pump station): "
            "without one, no segment can be said to have or lose supply"
        )
    return sources


def _component_mask(n: int, a: np.ndarray, b: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """Vertices connected to any seed through the edges (a[i], b[i])."""
    graph = coo_matrix((np.ones(len(a), dtype=np.int8), (a, b)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    return np.isin(labels, labels[seeds])


def _supplied(seg: Segmentation, open_valves: np.ndarray) -> np.ndarray:
    """Per segment: does an open path (through `open_valves`) lead to a segment with a source?"""
    sources = np.flatnonzero(seg.segment_sources > 0)
    keep = open_valves & seg.separating
    return _component_mask(seg.n_segments, seg.valve_link_segment[keep], seg.valve_node_segment[keep], sources)


def _impact(network: PipeNetwork, seg: Segmentation, segments: np.ndarray) -> Impact:
    nodes = segments[seg.node_segment]
    links = segments[seg.link_segment]
    volume = network.link_volume()[links]
    known = np.isfinite(volume)
    return Impact(
        node_ids=network.node_ids[nodes].tolist(),
        link_ids=network.link_ids[links].tolist(),
        length=float(np.nansum(network.link_length[links])),
        volume=float(volume[known].sum()),
        links_without_volume=int((~known).sum()),
        demand=float(network.node_demand[nodes].sum()),
    )


def _mask(size: int, indices: np.ndarray) -> np.ndarray:
    mask = np.zeros(size, dtype=bool)
    mask[indices] = True
    return mask


def _distances(network: PipeNetwork, area_links: np.ndarray, burst_links: np.ndarray) -> np.ndarray:
    """Per node, the path length from the middle of the nearest burst link along `area_links`."""
    length = network.link_length
    weight = np.nan_to_num(length) if np.isfinite(length).any() else np.ones(network.n_links)
    virtual = network.n_nodes
    links = np.flatnonzero(area_links)
    rows = np.concatenate((network.link_start[links], np.full(2 * len(burst_links), virtual)))
    cols = np.concatenate((network.link_end[links], network.link_start[burst_links], network.link_end[burst_links]))
    half = weight[burst_links] / 2.0
    weights = np.concatenate((weight[links], half, half))
    # Parallel links: keep the shortest (a sparse matrix would add their weights up).
    low, high = np.minimum(rows, cols), np.maximum(rows, cols)
    order = np.lexsort((weights, high, low))
    first = np.ones(len(order), dtype=bool)
    first[1:] = (low[order][1:] != low[order][:-1]) | (high[order][1:] != high[order][:-1])
    keep = order[first]
    # A sparse graph keeps explicit zeros as edges, so zero-length links still connect.
    graph = coo_matrix((weights[keep], (low[keep], high[keep])), shape=(virtual + 1, virtual + 1)).tocsr()
    return dijkstra(graph, directed=False, indices=virtual)[:virtual]


def _crew_order(network: PipeNetwork, valves: np.ndarray, distance: np.ndarray) -> list[str]:
    ids = network.valves.ids
    return [str(ids[v]) for v in sorted(valves.tolist(), key=lambda v: (distance[v], str(ids[v])))]


def _valve_ids(network: PipeNetwork, mask: np.ndarray) -> list[str]:
    return sorted(network.valves.ids[mask].tolist())


def burst_isolation(
    network: PipeNetwork,
    burst_links: str | Iterable[Any],
    failed_valves: str | Iterable[Any] = (),
    segmentation: Segmentation | None = None,
) -> BurstIsolation:
    """Valves to close for a burst on `burst_links`, passing failed valves, and who loses water.

    `segmentation` is the network's cached `segment(network)`; it is computed when not given.
    """
    seg = _segments_of(network, segmentation)
    sources = _require_source(network)
    links = np.unique(network.link_index(burst_links))
    if not len(links):
        raise InvalidInput("no burst link given")
    valves = network.valves
    shut = valves.closed
    failed = (~valves.operable | ~valves.accessible | _mask(len(valves), network.valve_index(failed_valves))) & ~shut
    a, b = seg.valve_link_segment, seg.valve_node_segment
    burst_segments = np.unique(seg.link_segment[links])

    passable = failed & seg.separating
    area = _component_mask(seg.n_segments, a[passable], b[passable], burst_segments)
    in_a, in_b = area[a], area[b]
    boundary = ~failed & (in_a != in_b)
    inner = np.where(in_a, a, b)
    outer = np.where(in_a, b, a)
    secondary = boundary & ~shut & ~np.isin(inner, burst_segments)

    supplied_after = _supplied(seg, ~boundary & ~shut)
    supplied_before = _supplied(seg, ~shut)
    required = boundary & ~shut & supplied_after[outer]
    lost = ~area & ~supplied_after & supplied_before

    distance_to_node = _distances(network, area[seg.link_segment], links)
    valve_distance = distance_to_node[valves.node]
    return BurstIsolation(
        burst_links=network.link_ids[links].tolist(),
        burst_segments=burst_segments.tolist(),
        isolation_segments=np.flatnonzero(area).tolist(),
        valves_to_close=_crew_order(network, np.flatnonzero(required), valve_distance),
        optional_valves=_crew_order(network, np.flatnonzero(boundary & ~shut & ~required), valve_distance),
        secondary_valves=_valve_ids(network, secondary),
        passed_valves=_valve_ids(network, passable & in_a & in_b),
        valve_distance={str(valves.ids[v]): float(valve_distance[v]) for v in np.flatnonzero(boundary)},
        lost_supply_segments=np.flatnonzero(lost).tolist(),
        sources_in_area=network.node_ids[sources & area[seg.node_segment]].tolist(),
        isolated=_impact(network, seg, area),
        lost_supply=_impact(network, seg, lost),
        already_closed=_valve_ids(network, boundary & shut),
    )


def isolation(
    network: PipeNetwork,
    closed_valves: str | Iterable[Any],
    segmentation: Segmentation | None = None,
) -> SupplyLoss:
    """The segments that no longer reach any source once `closed_valves` are closed."""
    seg = _segments_of(network, segmentation)
    _require_source(network)
    closed = _mask(len(network.valves), network.valve_index(closed_valves))
    shut = network.valves.closed
    supplied_before = _supplied(seg, ~shut)
    lost = ~_supplied(seg, ~closed & ~shut) & supplied_before
    return SupplyLoss(
        closed_valves=_valve_ids(network, closed),
        lost_supply_segments=np.flatnonzero(lost).tolist(),
        lost_supply=_impact(network, seg, lost),
        unsupplied_before=np.flatnonzero(~supplied_before).tolist(),
    )
