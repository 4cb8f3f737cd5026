"""Valve-bounded segments of a pipe network and how critical each valve is.

The partition is the one of WNTR's `wntr.metrics.topographic.valve_segments`: a valve on link
`l` next to node `n` cuts `l` from `n`; nodes and links still connected to each other form a
segment. So a link valved at both ends is a segment of its own, a node whose every link is
valved at that node is a segment of its own, and a link valved at one end belongs to the
segment of its other end.

Here it is computed in one pass: the element graph has one vertex per node and per link and
one edge per (link end, node) incidence that no valve cuts; its connected components
(`scipy.sparse.csgraph`) are the segments. Linear in the network size, no Python loop per
element: about a tenth of a second for 100,000 pipes where WNTR's loops take many minutes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from twin.analysis.network import PipeNetwork


@dataclass(eq=False)
class Segmentation:
    """Segment labels (0 .. n_segments-1) of every node and link, and what each valve separates.

    Labels are only meaningful within one segmentation: compare two as partitions.
    """

    node_segment: np.ndarray
    link_segment: np.ndarray
    n_segments: int
    segment_nodes: np.ndarray
    """Number of nodes per segment."""
    segment_links: np.ndarray
    """Number of links per segment."""
    segment_length: np.ndarray
    """Total known link length per segment (unknown lengths count as 0, as in WNTR)."""
    segment_demand: np.ndarray
    """Total node demand per segment."""
    segment_sources: np.ndarray
    """Number of source nodes per segment."""
    valve_link_segment: np.ndarray
    """Per valve, the segment on its link side."""
    valve_node_segment: np.ndarray
    """Per valve, the segment on its node side (equal to the link side: the valve separates nothing)."""

    @property
    def segment_size(self) -> np.ndarray:
        """Elements (nodes + links) per segment, WNTR's segment size."""
        return self.segment_nodes + self.segment_links

    @property
    def separating(self) -> np.ndarray:
        """Valves whose two sides are different segments (the others are inside one segment)."""
        return self.valve_link_segment != self.valve_node_segment


def segment(network: PipeNetwork) -> Segmentation:
    """Valve segments of `network`, equal as a partition to WNTR's `valve_segments`."""
    n_nodes, n_links = network.n_nodes, network.n_links
    cut = np.zeros(2 * n_links, dtype=bool)
    cut[network.valve_incidence] = True
    incidence_node = np.column_stack((network.link_start, network.link_end)).reshape(-1)
    incidence_link = np.repeat(np.arange(n_links, dtype=np.int64), 2) + n_nodes
    keep = ~cut
    size = n_nodes + n_links
    graph = coo_matrix(
        (np.ones(int(keep.sum()), dtype=np.int8), (incidence_node[keep], incidence_link[keep])), shape=(size, size)
    )
    n_segments, labels = connected_components(graph, directed=False)
    node_segment, link_segment = labels[:n_nodes], labels[n_nodes:]

    def per_segment(labels_of: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        return np.bincount(labels_of, weights=weights, minlength=n_segments)

    valves = network.valves
    return Segmentation(
        node_segment=node_segment,
        link_segment=link_segment,
        n_segments=int(n_segments),
        segment_nodes=per_segment(node_segment),
        segment_links=per_segment(link_segment),
        segment_length=per_segment(link_segment, np.nan_to_num(network.link_length)),
        segment_demand=per_segment(node_segment, network.node_demand),
        segment_sources=per_segment(node_segment[network.is_source]),
        valve_link_segment=link_segment[valves.link],
        valve_node_segment=node_segment[valves.node],
    )


@dataclass(eq=False)
class ValveCriticality:
    """Per valve, what its failure costs (WNTR's `valve_segment_attributes`).

    When a valve fails (cannot close), its two segments act as one. For a quantity X (elements,
    pipe length, demand), `X_increase = (X_a + X_b) / max(X_a, X_b) - 1` is the fraction by
    which the larger of the two segments grows; 0 for a valve inside one segment or when both
    sides have X = 0. `num_surround` counts the other valves touching either side's segment
    (a valve touches the segments of its link and of its node).
    """

    num_surround: np.ndarray
    size_increase: np.ndarray
    length_increase: np.ndarray
    demand_increase: np.ndarray


def _merge_increase(per_segment: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    xa, xb = per_segment[a], per_segment[b]
    larger = np.maximum(xa, xb)
    increase = np.divide(xa + xb, larger, out=np.ones_like(larger, dtype=float), where=larger != 0) - 1.0
    return np.where(a == b, 0.0, increase)


def valve_criticality(network: PipeNetwork, segmentation: Segmentation | None = None) -> ValveCriticality:
    """How much each valve's failure enlarges the area to shut (see `ValveCriticality`)."""
    seg = segmentation if segmentation is not None else segment(network)
    a, b = seg.valve_link_segment, seg.valve_node_segment
    separating = a != b
    # Valves touching each segment: each valve counts once for each distinct segment it touches.
    touching = np.bincount(a, minlength=seg.n_segments) + np.bincount(b[separating], minlength=seg.n_segments)
    # Valves touching both a and b are counted twice above: they are the valves with the same pair.
    low, high = np.minimum(a, b), np.maximum(a, b)
    pair_key = low.astype(np.int64) * seg.n_segments + high
    _, pair_of_valve, pair_count = np.unique(pair_key, return_inverse=True, return_counts=True)
    surround = touching[a] + touching[b] - pair_count[pair_of_valve] - 1
    return ValveCriticality(
        num_surround=np.where(separating, surround, 0),
        size_increase=_merge_increase(seg.segment_size.astype(float), a, b),
        length_increase=_merge_increase(seg.segment_length, a, b),
        demand_increase=_merge_increase(seg.segment_demand, a, b),
    )
