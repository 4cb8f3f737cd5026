"""Burst and isolation queries in time proportional to their answer, on a prepared network.

`twin.analysis.burst` states the rules and computes them with whole-network arrays on every
call: clear, but tens of milliseconds at 100,000 pipes. `BurstIndex` prepares, once per network
and segmentation,

- the segment graph in CSR form: per segment, its separating valves and the segment behind each;
- every segment's nodes and links (grouped index arrays) and its sums (length, volume, demand);
- which segments have supply with every valve in its normal state, and a breadth-first forest
  from the sources over those segments, numbered so that every subtree is one index range;

and then answers a burst with a walk over the failed valves around the burst (the isolation
area), one linear walk over the segment graph from the sources (numba, no allocation but its
marks) to find who still has supply, a shortest-path search over the area's own pipes for the
crew order, and sums over the touched segments. The results are those of `burst_isolation`
and `isolation` (the tests compare them on many random bursts); the member index arrays come
along so that callers need not turn ids back into positions.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import dijkstra

from twin.analysis.burst import BurstIsolation, Impact, SupplyLoss, _require_source
from twin.analysis.network import PipeNetwork
from twin.analysis.segments import Segmentation
from twin.model import InvalidInput

SMALL_AREA = 400
"""Areas with at most this many pipes get their crew distances from a heap search in Python."""


@numba.njit(cache=True)
def _walk(
    indptr: np.ndarray,
    neighbour: np.ndarray,
    edge_valve: np.ndarray,
    passable: np.ndarray,
    blocked: np.ndarray,
    seeds: np.ndarray,
) -> np.ndarray:  # pragma: no cover - compiled
    """Segments reached from `seeds` across `passable` valves, never entering `blocked` ones."""
    n = len(indptr) - 1
    mark = np.zeros(n, dtype=np.bool_)
    stack = np.empty(n, dtype=np.int64)
    top = 0
    for s in seeds:
        if not mark[s] and not blocked[s]:
            mark[s] = True
            stack[top] = s
            top += 1
    while top > 0:
        top -= 1
        s = stack[top]
        for k in range(indptr[s], indptr[s + 1]):
            if passable[edge_valve[k]]:
                t = neighbour[k]
                if not mark[t] and not blocked[t]:
                    mark[t] = True
                    stack[top] = t
                    top += 1
    return mark


@numba.njit(cache=True)
def _forest(
    indptr: np.ndarray, neighbour: np.ndarray, edge_valve: np.ndarray, passable: np.ndarray, roots: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # pragma: no cover - compiled
    """A breadth-first forest from `roots` across `passable` valves, numbered in preorder.

    Returns (first, size, by_preorder): the subtree of segment v is
    by_preorder[first[v]:first[v] + size[v]]; first is -1 for segments no root reaches.
    """
    n = len(indptr) - 1
    parent = np.full(n, -1, dtype=np.int64)
    seen = np.zeros(n, dtype=np.bool_)
    order = np.empty(n, dtype=np.int64)
    tail = 0
    for r in roots:
        if not seen[r]:
            seen[r] = True
            order[tail] = r
            tail += 1
    head = 0
    while head < tail:
        s = order[head]
        head += 1
        for k in range(indptr[s], indptr[s + 1]):
            if passable[edge_valve[k]]:
                t = neighbour[k]
                if not seen[t]:
                    seen[t] = True
                    parent[t] = s
                    order[tail] = t
                    tail += 1
    size = np.zeros(n, dtype=np.int64)
    for i in range(tail - 1, -1, -1):
        v = order[i]
        size[v] += 1
        if parent[v] >= 0:
            size[parent[v]] += size[v]
    first = np.full(n, -1, dtype=np.int64)
    free = np.zeros(n, dtype=np.int64)
    offset = 0
    for i in range(tail):
        v = order[i]
        p = parent[v]
        if p < 0:
            first[v] = offset
            offset += size[v]
        else:
            first[v] = free[p]
            free[p] += size[v]
        free[v] = first[v] + 1
    by_preorder = np.empty(tail, dtype=np.int64)
    for i in range(tail):
        by_preorder[first[order[i]]] = order[i]
    return first, size, by_preorder


@numba.njit(cache=True)
def _resupplied(
    indptr: np.ndarray,
    neighbour: np.ndarray,
    edge_valve: np.ndarray,
    passable: np.ndarray,
    in_area: np.ndarray,
    supplied_before: np.ndarray,
    suspects: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - compiled
    """(suspect, resupplied) masks: which suspects still reach a segment that keeps its supply."""
    n = len(indptr) - 1
    suspect = np.zeros(n, dtype=np.bool_)
    for v in suspects:
        suspect[v] = True
    fed = np.zeros(n, dtype=np.bool_)
    stack = np.empty(len(suspects), dtype=np.int64)
    top = 0
    for v in suspects:
        if in_area[v]:
            continue
        for k in range(indptr[v], indptr[v + 1]):
            t = neighbour[k]
            if passable[edge_valve[k]] and not suspect[t] and not in_area[t] and supplied_before[t]:
                fed[v] = True
                stack[top] = v
                top += 1
                break
    while top > 0:
        top -= 1
        v = stack[top]
        for k in range(indptr[v], indptr[v + 1]):
            t = neighbour[k]
            if passable[edge_valve[k]] and suspect[t] and not in_area[t] and not fed[t]:
                fed[t] = True
                stack[top] = t
                top += 1
    return suspect, fed


def _grouped(labels: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """(order, cuts): the members of group g are order[cuts[g]:cuts[g + 1]]."""
    order = np.argsort(labels, kind="stable")
    cuts = np.searchsorted(labels[order], np.arange(n_groups + 1))
    return order, cuts


def _ranges(starts: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """The concatenation of range(start, start + size) for each pair, without a Python loop."""
    total = int(sizes.sum())
    if not total:
        return np.empty(0, dtype=np.int64)
    return np.repeat(starts - (np.cumsum(sizes) - sizes), sizes) + np.arange(total)


def _members(order: np.ndarray, cuts: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Sorted member indices of several groups."""
    return np.sort(order[_ranges(cuts[groups], cuts[groups + 1] - cuts[groups])])


@dataclass
class AreaMembers:
    """Positions of the shut-in and lost-supply nodes and links (sorted)."""

    isolated_nodes: np.ndarray
    isolated_links: np.ndarray
    lost_nodes: np.ndarray
    lost_links: np.ndarray


class BurstIndex:
    """A network prepared for burst and isolation queries (see the module docstring)."""

    def __init__(self, network: PipeNetwork, segmentation: Segmentation) -> None:
        self.network, self.seg = network, segmentation
        seg, valves = segmentation, network.valves
        n = seg.n_segments
        separating = np.flatnonzero(seg.separating)
        a, b = seg.valve_link_segment[separating], seg.valve_node_segment[separating]
        tail = np.concatenate((a, b))
        order = np.argsort(tail, kind="stable")
        self.indptr = np.searchsorted(tail[order], np.arange(n + 1)).astype(np.int64)
        self.neighbour = np.concatenate((b, a))[order].astype(np.int64)
        self.edge_valve = np.concatenate((separating, separating))[order].astype(np.int64)
        self.shut = valves.closed.copy()
        self.open = ~self.shut
        self.broken = (~valves.operable | ~valves.accessible) & self.open
        self.node_order, self.node_cuts = _grouped(seg.node_segment, n)
        self.link_order, self.link_cuts = _grouped(seg.link_segment, n)
        length = network.link_length
        self.seg_length = np.bincount(seg.link_segment, weights=np.nan_to_num(length), minlength=n)
        volume = network.link_volume()
        known = np.isfinite(volume)
        self.seg_volume = np.bincount(seg.link_segment, weights=np.where(known, volume, 0.0), minlength=n)
        self.seg_unknown_volume = np.bincount(seg.link_segment, weights=(~known).astype(float), minlength=n)
        self.seg_demand = np.bincount(seg.node_segment, weights=network.node_demand, minlength=n)
        self.weight = np.nan_to_num(length) if np.isfinite(length).any() else np.ones(network.n_links)
        self.source_nodes = np.flatnonzero(network.is_source)
        self.source_segments = np.unique(seg.node_segment[self.source_nodes]).astype(np.int64)
        self.nowhere = np.zeros(n, dtype=bool)
        self.supplied_before = self._supplied(self.open, self.nowhere)
        # Who feeds whom in normal operation: a shut-in area can only cut off the subtrees
        # hanging below it in this forest, so a burst looks at those and not at the network.
        self.first, self.size, self.by_preorder = _forest(
            self.indptr, self.neighbour, self.edge_valve, self.open, self.source_segments
        )

    def _cut_off(self, area: np.ndarray, in_area: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(suspect, fed): segments below the area in the supply forest, and those still fed.

        A segment outside every subtree of the area keeps its path to a source; one inside
        keeps its supply only if it still reaches, around the area, a segment that does.
        """
        reached = area[self.first[area] >= 0]
        starts, sizes = self.first[reached], self.size[reached]
        order = np.argsort(starts, kind="stable")
        starts, sizes = starts[order], sizes[order]
        ends = starts + sizes
        # Subtrees nest or are disjoint: keep those not inside an earlier one.
        covered = np.concatenate(([-1], np.maximum.accumulate(ends)[:-1])) if len(ends) else ends
        outer = starts >= covered
        suspects = self.by_preorder[_ranges(starts[outer], sizes[outer])]
        return _resupplied(
            self.indptr, self.neighbour, self.edge_valve, self.open, in_area, self.supplied_before, suspects
        )

    def _require_source(self) -> None:
        if not len(self.source_nodes):
            _require_source(self.network)  # raises, with the reference's words

    def _supplied(self, passable: np.ndarray, blocked: np.ndarray) -> np.ndarray:
        return _walk(self.indptr, self.neighbour, self.edge_valve, passable, blocked, self.source_segments)

    def _impact(self, segments: np.ndarray) -> tuple[Impact, np.ndarray, np.ndarray]:
        network = self.network
        nodes = _members(self.node_order, self.node_cuts, segments)
        links = _members(self.link_order, self.link_cuts, segments)
        impact = Impact(
            node_ids=network.node_ids[nodes].tolist(),
            link_ids=network.link_ids[links].tolist(),
            length=float(self.seg_length[segments].sum()),
            volume=float(self.seg_volume[segments].sum()),
            links_without_volume=int(round(self.seg_unknown_volume[segments].sum())),
            demand=float(self.seg_demand[segments].sum()),
        )
        return impact, nodes, links

    def _valve_ids(self, valves: np.ndarray) -> list[str]:
        return sorted(self.network.valves.ids[valves].tolist())

    def _distances(self, area_links: np.ndarray, burst_links: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(nodes, distance): path lengths from the middle of the nearest burst link along the area's links.

        Small areas (the usual case) are searched with a heap in Python, which beats building a
        sparse matrix by a millisecond or two; large ones with scipy's Dijkstra.
        """
        if len(area_links) <= SMALL_AREA:
            return self._distances_small(area_links, burst_links)
        network = self.network
        starts, ends = network.link_start[area_links], network.link_end[area_links]
        nodes, local = np.unique(np.concatenate((starts, ends)), return_inverse=True)
        k, m = len(nodes), len(area_links)
        virtual = k
        burst_ends = np.searchsorted(
            nodes, np.concatenate((network.link_start[burst_links], network.link_end[burst_links]))
        )
        rows = np.concatenate((local[:m], np.full(len(burst_ends), virtual)))
        cols = np.concatenate((local[m:], burst_ends))
        half = self.weight[burst_links] / 2.0
        weights = np.concatenate((self.weight[area_links], half, half))
        low, high = np.minimum(rows, cols), np.maximum(rows, cols)
        order = np.lexsort((weights, high, low))
        first = np.ones(len(order), dtype=bool)
        first[1:] = (low[order][1:] != low[order][:-1]) | (high[order][1:] != high[order][:-1])
        keep = order[first]
        graph = coo_matrix((weights[keep], (low[keep], high[keep])), shape=(k + 1, k + 1)).tocsr()
        return nodes, dijkstra(graph, directed=False, indices=virtual)[:k]

    def _distances_small(self, area_links: np.ndarray, burst_links: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        network, weight = self.network, self.weight
        adjacency: dict[int, list[tuple[float, int]]] = {}
        for j, u, v in zip(
            area_links.tolist(),
            network.link_start[area_links].tolist(),
            network.link_end[area_links].tolist(),
            strict=True,
        ):
            adjacency.setdefault(u, []).append((weight[j], v))
            adjacency.setdefault(v, []).append((weight[j], u))
        best: dict[int, float] = {}
        heap = [
            (weight[j] / 2.0, end)
            for j in burst_links.tolist()
            for end in (int(network.link_start[j]), int(network.link_end[j]))
        ]
        heapq.heapify(heap)
        while heap:
            d, u = heapq.heappop(heap)
            if u in best:
                continue
            best[u] = d
            for w, v in adjacency.get(u, ()):
                if v not in best:
                    heapq.heappush(heap, (d + w, v))
        nodes = np.array(sorted(adjacency), dtype=np.int64)
        return nodes, np.array([best.get(u, np.inf) for u in nodes.tolist()], dtype=float)

    def burst(
        self, burst_links: str | Iterable[Any], failed_valves: str | Iterable[Any] = ()
    ) -> tuple[BurstIsolation, AreaMembers]:
        """As `burst_isolation(network, burst_links, failed_valves)`, with the members' positions."""
        network, seg = self.network, self.seg
        self._require_source()
        links = np.unique(network.link_index(burst_links))
        if not len(links):
            raise InvalidInput("no burst link given")
        failed = self.broken.copy()
        failed[network.valve_index(failed_valves)] = True
        failed &= self.open
        burst_segments = np.unique(seg.link_segment[links]).astype(np.int64)
        in_area = _walk(self.indptr, self.neighbour, self.edge_valve, failed, self.nowhere, burst_segments)
        area = np.flatnonzero(in_area)
        # The area's edges, with the segment each one leaves from.
        counts = np.diff(self.indptr)[area]
        edges = _ranges(self.indptr[area], counts)
        inner_of_edge = np.repeat(area, counts)
        valve_of_edge = self.edge_valve[edges]
        outer_of_edge = self.neighbour[edges]
        leaving = ~in_area[outer_of_edge]
        boundary_edges = leaving & ~failed[valve_of_edge]
        boundary = valve_of_edge[boundary_edges]
        inner, outer = inner_of_edge[boundary_edges], outer_of_edge[boundary_edges]
        passed = np.unique(valve_of_edge[failed[valve_of_edge] & ~leaving])
        suspect, fed = self._cut_off(area, in_area)
        working = self.open[boundary]
        required = working & self.supplied_before[outer] & (~suspect[outer] | fed[outer])
        secondary = working & ~np.isin(inner, burst_segments)
        lost_segments = np.flatnonzero(suspect & ~in_area & ~fed)
        isolated, iso_nodes, iso_links = self._impact(area)
        lost_impact, lost_nodes, lost_links = self._impact(lost_segments)
        nodes, distance = self._distances(iso_links, links)
        # A valve node on no area pipe (a node-only segment passed into) is out of reach: inf.
        valve_nodes = network.valves.node[boundary]
        at = np.minimum(np.searchsorted(nodes, valve_nodes), max(len(nodes) - 1, 0))
        reached = (nodes[at] == valve_nodes) if len(nodes) else np.zeros(len(valve_nodes), dtype=bool)
        valve_distance = np.where(reached, distance[at] if len(nodes) else np.inf, np.inf)
        ids = network.valves.ids

        def crew(mask: np.ndarray) -> list[str]:
            chosen = np.flatnonzero(mask)
            return [
                str(ids[boundary[i]])
                for i in sorted(chosen.tolist(), key=lambda i: (valve_distance[i], str(ids[boundary[i]])))
            ]

        result = BurstIsolation(
            burst_links=network.link_ids[links].tolist(),
            burst_segments=burst_segments.tolist(),
            isolation_segments=area.tolist(),
            valves_to_close=crew(required),
            optional_valves=crew(working & ~required),
            secondary_valves=self._valve_ids(np.unique(boundary[secondary])),
            passed_valves=self._valve_ids(passed),
            valve_distance={
                str(ids[v]): float(d) for v, d in zip(boundary.tolist(), valve_distance.tolist(), strict=True)
            },
            lost_supply_segments=lost_segments.tolist(),
            sources_in_area=network.node_ids[self.source_nodes[in_area[seg.node_segment[self.source_nodes]]]].tolist(),
            isolated=isolated,
            lost_supply=lost_impact,
            already_closed=self._valve_ids(np.unique(boundary[~working])),
        )
        return result, AreaMembers(iso_nodes, iso_links, lost_nodes, lost_links)

    def isolation(self, closed_valves: str | Iterable[Any]) -> tuple[SupplyLoss, AreaMembers]:
        """As `isolation(network, closed_valves)`, with the members' positions."""
        network = self.network
        self._require_source()
        closed = network.valve_index(closed_valves)
        passable = self.open.copy()
        passable[closed] = False
        lost = ~self._supplied(passable, self.nowhere) & self.supplied_before
        segments = np.flatnonzero(lost)
        impact, nodes, links = self._impact(segments)
        empty = np.empty(0, dtype=np.int64)
        result = SupplyLoss(
            closed_valves=self._valve_ids(np.unique(closed)),
            lost_supply_segments=segments.tolist(),
            lost_supply=impact,
            unsupplied_before=np.flatnonzero(~self.supplied_before).tolist(),
        )
        return result, AreaMembers(empty, empty, nodes, links)
