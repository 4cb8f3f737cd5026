"""Valve segments against WNTR: its stored reference labels and live runs on larger networks."""

from __future__ import annotations

import warnings
from functools import cache

import networkx as nx
import numpy as np
import pandas as pd
import pytest

from tests.conftest import shared_file
from twin.analysis import PipeNetwork, segment, valve_criticality
from twin.model import InvalidInput

wntr = pytest.importorskip("wntr")

REFERENCE = "pipes/wntr_segment_reference"


@cache
def load_wntr(relative: str):
    """A WNTR model of a shared .inp file, read once per test session (tests do not modify it)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return wntr.network.WaterNetworkModel(str(shared_file(relative)))


def reference_series(name: str) -> pd.Series:
    series = pd.read_csv(shared_file(f"{REFERENCE}/{name}"), index_col=0).iloc[:, 0]
    series.index = series.index.astype(str)
    return series


def reference_valves(name: str) -> pd.DataFrame:
    return pd.read_csv(shared_file(f"{REFERENCE}/{name}"), index_col=0, dtype="object")


def same_partition(left: np.ndarray, right: np.ndarray) -> bool:
    """Two labellings group the same elements iff their labels map one-to-one."""
    pairs = set(zip(np.asarray(left).tolist(), np.asarray(right).tolist(), strict=True))
    return len(pairs) == len(set(np.asarray(left).tolist())) == len(set(np.asarray(right).tolist()))


def assert_same_as_wntr(network: PipeNetwork, node_labels: pd.Series, link_labels: pd.Series) -> None:
    """Nodes and links share one label space: compare the joint partition, not each half."""
    seg = segment(network)
    ours = np.concatenate(
        (
            seg.node_segment[network.node_index(node_labels.index)],
            seg.link_segment[network.link_index(link_labels.index)],
        )
    )
    theirs = np.concatenate((node_labels.to_numpy(), link_labels.to_numpy()))
    assert len(ours) == network.n_nodes + network.n_links
    assert same_partition(ours, theirs)
    assert seg.n_segments == len(set(theirs.tolist()))


def test_same_partition_tells_groupings_apart():
    assert same_partition(np.array([0, 0, 1]), np.array([7, 7, 3]))
    assert not same_partition(np.array([0, 0, 1]), np.array([7, 3, 3]))
    assert not same_partition(np.array([0, 0, 0]), np.array([7, 7, 3]))


@pytest.mark.parametrize(
    ("layer", "kind", "n_segments", "largest"),
    [("valve_layer_random.csv", "random", 23, 125), ("valve_layer_stategic_1.csv", "strategic", 119, 3)],
)
def test_net3_matches_wntr_reference_labels(layer, kind, n_segments, largest):
    network = PipeNetwork.from_wntr(load_wntr("pipes/epanet_wntr/Net3.inp"), reference_valves(layer))
    assert_same_as_wntr(
        network, reference_series(f"node_segments_{kind}.csv"), reference_series(f"link_segments_{kind}.csv")
    )
    seg = segment(network)
    assert seg.n_segments == n_segments
    assert seg.segment_size.max() == largest
    assert seg.segment_nodes.sum() == network.n_nodes and seg.segment_links.sum() == network.n_links


@pytest.mark.parametrize("inp", ["ky10.inp", "Net6.inp"])
@pytest.mark.parametrize(("placement", "n"), [("random", 40), ("strategic", 1)])
def test_matches_wntr_computed_live(inp, placement, n):
    wn = load_wntr(f"pipes/epanet_wntr/{inp}")
    layer = wntr.network.generate_valve_layer(wn, placement, n, seed=123)
    node_labels, link_labels, _ = wntr.metrics.topographic.valve_segments(wn.to_graph(), layer.copy())
    assert_same_as_wntr(PipeNetwork.from_wntr(wn, layer), node_labels, link_labels)


def test_criticality_matches_wntr_reference():
    network = PipeNetwork.from_wntr(
        load_wntr("pipes/epanet_wntr/Net3.inp"), reference_valves("valve_layer_stategic_1.csv")
    )
    crit = valve_criticality(network)
    order = network.valve_index(reference_series("valve_crit_valve.csv").index)
    np.testing.assert_array_equal(crit.num_surround[order], reference_series("valve_crit_valve.csv").to_numpy())
    np.testing.assert_allclose(crit.length_increase[order], reference_series("valve_crit_length.csv"), atol=1e-12)
    np.testing.assert_allclose(crit.demand_increase[order], reference_series("valve_crit_demand.csv"), atol=1e-12)
    assert crit.num_surround.max() > 1 and crit.length_increase.max() > 0  # the reference is not all zeros


def test_criticality_matches_wntr_live():
    # Net3, as WNTR's criticality loops take seconds per hundred valves on larger networks.
    wn = load_wntr("pipes/epanet_wntr/Net3.inp")
    layer = wntr.network.generate_valve_layer(wn, "random", 60, seed=7)
    node_labels, link_labels, _ = wntr.metrics.topographic.valve_segments(wn.to_graph(), layer.copy())
    expected = wntr.metrics.valve_segment_attributes(
        layer, node_labels, link_labels, wntr.metrics.average_expected_demand(wn), wn.query_link_attribute("length")
    )
    crit = valve_criticality(PipeNetwork.from_wntr(wn, layer))
    np.testing.assert_array_equal(crit.num_surround, expected["num_surround"].to_numpy())
    np.testing.assert_allclose(crit.length_increase, expected["length_increase"].to_numpy(), atol=1e-12)
    np.testing.assert_allclose(crit.demand_increase, expected["demand_increase"].to_numpy(), atol=1e-12)
    assert len(set(crit.num_surround.tolist())) > 5  # a layer with varied answers, not all zeros


def random_multigraph(rng: np.random.Generator) -> tuple[nx.MultiDiGraph, pd.DataFrame]:
    """A small random network with parallel links, dead ends and isolated nodes, and valves."""
    n_nodes = int(rng.integers(2, 15))
    n_links = int(rng.integers(1, 25))
    graph = nx.MultiDiGraph()
    graph.add_nodes_from(f"n{i}" for i in range(n_nodes))
    for k in range(n_links):
        u, v = rng.choice(n_nodes, 2, replace=False)
        graph.add_edge(f"n{u}", f"n{v}", key=f"l{k}")
    ends = [(key, node) for u, v, key in graph.edges(keys=True) for node in (u, v)]
    picked = rng.random(len(ends)) < rng.uniform(0.1, 0.9)
    return graph, pd.DataFrame([e for e, p in zip(ends, picked, strict=True) if p], columns=["link", "node"])


def test_matches_wntr_on_random_small_networks():
    rng = np.random.default_rng(2024)
    for _ in range(200):
        graph, layer = random_multigraph(rng)
        node_labels, link_labels, _ = wntr.metrics.topographic.valve_segments(graph, layer.copy())
        edges = list(graph.edges(keys=True))
        network = PipeNetwork.from_arrays(
            list(graph.nodes), [k for _, _, k in edges], [u for u, _, _ in edges], [v for _, v, _ in edges]
        ).with_valves(range(len(layer)), layer["link"], layer["node"])
        assert_same_as_wntr(network, node_labels, link_labels)


def toy_network() -> PipeNetwork:
    """CCWI17 toy network with the valve layer of WNTR's own small segmentation test."""
    layer = pd.DataFrame(
        [["p1", "n1"], ["p3", "n2"], ["p7", "n5"], ["p7", "n6"], ["p8", "n6"]], columns=["link", "node"]
    )
    return PipeNetwork.from_wntr(load_wntr(f"{REFERENCE}/CCWI17-HermanMahmoud.inp"), layer)


def test_toy_network_segments_worked_by_hand():
    # p1 is valved at n1, so it stays with the reservoir s: {s, p1}. p7 is valved at both ends: {p7}.
    # Both links of n6 (p7, p8) are valved at n6: {n6}. Everything else is reachable without
    # crossing a valve: n1..n5 with p2, p3 (valved at n2 but still joined to n3), p4, p5, p6 and p8
    # (valved at n6, so it stays with n1): 5 nodes + 6 links = 11 elements.
    network = toy_network()
    seg = segment(network)
    groups = {
        frozenset(network.node_ids[seg.node_segment == s].tolist() + network.link_ids[seg.link_segment == s].tolist())
        for s in range(seg.n_segments)
    }
    assert groups == {
        frozenset({"s", "p1"}),
        frozenset({"p7"}),
        frozenset({"n6"}),
        frozenset({"n1", "n2", "n3", "n4", "n5", "p2", "p3", "p4", "p5", "p6", "p8"}),
    }
    # Valve 1 (p3 at n2) has the big segment on both sides: it separates nothing.
    np.testing.assert_array_equal(seg.separating, [True, False, True, True, True])
    big = seg.node_segment[network.node_index("n1")[0]]
    assert seg.valve_link_segment[0] == seg.node_segment[network.node_index("s")[0]]
    assert seg.valve_node_segment[0] == big
    assert seg.segment_length[big] == pytest.approx(6 * 304.8)  # 1000 ft pipes, read in metres


def test_toy_network_criticality_worked_by_hand():
    # Valve 0 separates {s, p1} (2 elements, 1 pipe) from the big segment (11 elements, 6 pipes):
    # merging grows the larger side by 2/11 elements and 1/6 of its length. Valves touching
    # either side: 0, 1 and 2 and 4 (valves 2 and 4 touch the big segment by their links'
    # or nodes' sides): 3 others. Valve 1 separates nothing: all zero.
    crit = valve_criticality(toy_network())
    assert crit.size_increase[0] == pytest.approx(2 / 11)
    assert crit.length_increase[0] == pytest.approx(1 / 6)
    assert crit.num_surround[0] == 3
    assert (crit.num_surround[1], crit.size_increase[1], crit.length_increase[1]) == (0, 0.0, 0.0)
    # Valve 3 separates {p7} from {n6}: 1 element each, doubling the larger; valves touching
    # {p7} or {n6}: 2, 3 and 4, so 2 others. {n6} has no pipe, so the length grows by 0 / 1000 ft.
    assert crit.size_increase[3] == pytest.approx(1.0)
    assert crit.num_surround[3] == 2
    assert crit.length_increase[3] == pytest.approx(0.0)


def test_no_valves_gives_connected_parts():
    network = PipeNetwork.from_arrays(["a", "b", "c", "d"], ["x", "y"], ["a", "c"], ["b", "d"])
    seg = segment(network)
    assert seg.n_segments == 2
    assert seg.node_segment[0] == seg.node_segment[1] == seg.link_segment[0] != seg.link_segment[1]


def test_parallel_links_and_duplicate_valves():
    # Two pipes between a and b; x valved at a, y valved at a twice (two valves, one place).
    network = PipeNetwork.from_arrays(["a", "b"], ["x", "y"], ["a", "a"], ["b", "b"]).with_valves(
        ["v1", "v2", "v3"], ["x", "y", "y"], ["a", "a", "a"]
    )
    seg = segment(network)
    assert seg.n_segments == 2
    assert seg.node_segment[1] == seg.link_segment[0] == seg.link_segment[1] != seg.node_segment[0]


def test_valve_not_touching_its_node_is_refused():
    base = PipeNetwork.from_arrays(["a", "b", "c"], ["x", "y"], ["a", "b"], ["b", "c"])
    with pytest.raises(InvalidInput, match="does not touch node 'c'"):
        base.with_valves(["v1"], ["x"], ["c"])


@pytest.mark.parametrize(
    ("nodes", "links", "start", "end", "message"),
    [
        (["a", "a"], ["x"], ["a"], ["a"], "duplicate node ids"),
        (["a", "b"], ["x", "x"], ["a", "a"], ["b", "b"], "duplicate link ids"),
        (["a", "b"], ["x"], ["a"], ["z"], "unknown link end node id 'z'"),
    ],
)
def test_bad_network_is_refused(nodes, links, start, end, message):
    with pytest.raises(InvalidInput, match=message):
        PipeNetwork.from_arrays(nodes, links, start, end)


def test_bad_valve_layer_is_refused():
    base = PipeNetwork.from_arrays(["a", "b"], ["x"], ["a"], ["b"])
    with pytest.raises(InvalidInput, match="unknown valve link id 'nope'"):
        base.with_valves(["v1"], ["nope"], ["a"])
    with pytest.raises(InvalidInput, match="duplicate valve ids"):
        base.with_valves(["v1", "v1"], ["x", "x"], ["a", "b"])
    with pytest.raises(InvalidInput, match="unknown node kind"):
        PipeNetwork.from_arrays(["a", "b"], ["x"], ["a"], ["b"], node_kind=["junction", "well"])
    with pytest.raises(InvalidInput, match="must not be negative"):
        PipeNetwork.from_arrays(["a", "b"], ["x"], ["a"], ["b"], link_length=[-1.0])
