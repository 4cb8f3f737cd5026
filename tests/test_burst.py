"""Burst isolation and supply loss, worked out by hand on the CCWI17 toy network.

The network (WNTR's test network, 1000 ft pipes of 12 in, read in metres):

    s --p1-- n1 --p2-- n2 --p3-- n3
             |         |         |
             p8        p6        p4
             |         |         |
             n6 --p7-- n5 --p5-- n4

The reservoir `s` is the only source. Two loops share p6: n1-n2-n5-n6 and n2-n3-n4-n5.
"""

from __future__ import annotations

import math
import warnings

import pandas as pd
import pytest

from tests.conftest import shared_file
from twin.analysis import PipeNetwork, burst_isolation, isolation, segment
from twin.model import InvalidInput, NotFound

wntr = pytest.importorskip("wntr")

L = 304.8  # 1000 ft
PIPE_VOLUME = math.pi * 0.3048**2 / 4 * L  # 12 in diameter

# WNTR's small segmentation test layer. Segments: {s, p1}, {p7}, {n6} and the big one,
# B = {n1..n5, p2, p3, p4, p5, p6, p8}; w1 (p3 at n2) lies inside B.
WNTR_LAYER = {"w0": ("p1", "n1"), "w1": ("p3", "n2"), "w2": ("p7", "n5"), "w3": ("p7", "n6"), "w4": ("p8", "n6")}

# One valve per pipe. Each pipe stays with the node at its unvalved end, so the segments are
# S0 {s, p1}, S1 {n1, p2}, S2 {n2, p6}, S3 {n3, p3, p4}, S4 {n4, p5}, S5 {n5, p7}, S6 {n6, p8},
# and valve Vk joins: V0 S0|S1, V1 S1|S2, V2 S2|S3, V3 S3|S4, V4 S4|S5, V5 S2|S5, V6 S5|S6, V7 S1|S6.
FULL_LAYER = {
    "V0": ("p1", "n1"),
    "V1": ("p2", "n2"),
    "V2": ("p3", "n2"),
    "V3": ("p4", "n4"),
    "V4": ("p5", "n5"),
    "V5": ("p6", "n5"),
    "V6": ("p7", "n6"),
    "V7": ("p8", "n1"),
}


def toy_wntr():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return wntr.network.WaterNetworkModel(str(shared_file("pipes/wntr_segment_reference/CCWI17-HermanMahmoud.inp")))


def toy(layer: dict[str, tuple[str, str]], **flags) -> PipeNetwork:
    return PipeNetwork.from_wntr(toy_wntr()).with_valves(
        list(layer), [link for link, _ in layer.values()], [node for _, node in layer.values()], **flags
    )


def toy_with_tank() -> PipeNetwork:
    """The toy network built from plain arrays, plus a tank t on pipe p9 to n4 (valve V8 at n4)."""
    nodes = ["s", "n1", "n2", "n3", "n4", "n5", "n6", "t"]
    pipes = {
        "p1": ("s", "n1"),
        "p2": ("n1", "n2"),
        "p3": ("n2", "n3"),
        "p4": ("n3", "n4"),
        "p5": ("n4", "n5"),
        "p6": ("n2", "n5"),
        "p7": ("n5", "n6"),
        "p8": ("n6", "n1"),
        "p9": ("t", "n4"),
    }
    network = PipeNetwork.from_arrays(
        nodes,
        list(pipes),
        [a for a, _ in pipes.values()],
        [b for _, b in pipes.values()],
        node_kind=["reservoir"] + ["junction"] * 6 + ["tank"],
        link_length=[L] * 9,
        link_diameter=[0.3048] * 9,
    )
    layer = {**FULL_LAYER, "V8": ("p9", "n4")}
    return network.with_valves(list(layer), [a for a, _ in layer.values()], [b for _, b in layer.values()])


def test_burst_in_big_segment_closes_only_the_source_side():
    # p4 lies in B. B's boundary valves: w0 (towards {s, p1}), w2 (towards {p7}) and w4 (towards
    # {n6}). Behind w2 and w4 lie {p7} and {n6}, joined by the open w3 and to nothing else: no
    # source there, so only w0 must close; w2 and w4 are optional and {p7}, {n6} lose supply.
    result = burst_isolation(toy(WNTR_LAYER), "p4")
    assert result.valves_to_close == ["w0"]
    # From the middle of p4: n5 via n4 and p5 is 1.5 L; n6 via n3, n2, n1 and p8 is 3.5 L
    # (p7 is outside the isolation area, so the shorter way through it does not count).
    assert result.optional_valves == ["w2", "w4"]
    assert result.valve_distance == pytest.approx({"w0": 2.5 * L, "w2": 1.5 * L, "w4": 3.5 * L})
    assert result.secondary_valves == [] and result.passed_valves == []
    assert sorted(result.isolated.node_ids) == ["n1", "n2", "n3", "n4", "n5"]
    assert sorted(result.isolated.link_ids) == ["p2", "p3", "p4", "p5", "p6", "p8"]
    assert result.isolated.length == pytest.approx(6 * L)
    assert result.isolated.volume == pytest.approx(6 * PIPE_VOLUME)
    assert (result.lost_supply.node_ids, result.lost_supply.link_ids) == (["n6"], ["p7"])
    assert (result.affected_nodes, result.affected_links) == (6, 7)
    assert result.sources_in_area == []


def test_burst_closes_both_valves_of_a_fed_segment_nearest_first():
    # p4 lies in S3, bounded by V2 (at n2, 1.5 L from the middle of p4) and V3 (at n4, 0.5 L).
    # S2 and S4 still reach s through the loops, so both must close, V3 first; nobody else loses water.
    result = burst_isolation(toy(FULL_LAYER), ["p4"])
    assert result.valves_to_close == ["V3", "V2"]
    assert result.optional_valves == [] and result.secondary_valves == []
    assert (sorted(result.isolated.node_ids), sorted(result.isolated.link_ids)) == (["n3"], ["p3", "p4"])
    assert result.isolated.volume == pytest.approx(2 * PIPE_VOLUME)
    assert result.lost_supply_segments == [] and result.lost_supply.n_nodes == 0


@pytest.mark.parametrize("how", ["listed", "inoperable", "inaccessible"])
def test_failed_boundary_valve_is_passed_to_the_next_ring(how):
    # V3 cannot close: S4 {n4, p5} joins the area and S4's other valve V4 (at n5) becomes a
    # secondary valve. Both V2 (n2) and V4 (n5) are 1.5 L from the middle of p4: ties go by id.
    flags = {"listed": {}, "inoperable": {"operable": [k != "V3" for k in FULL_LAYER]}}
    flags["inaccessible"] = {"accessible": flags["inoperable"]["operable"]}
    failed = ["V3", "V6"] if how == "listed" else []  # V6, away from the area, is never reached
    result = burst_isolation(toy(FULL_LAYER, **flags[how]), "p4", failed_valves=failed)
    assert result.valves_to_close == ["V2", "V4"]
    assert result.secondary_valves == ["V4"]
    assert result.passed_valves == ["V3"]
    assert (sorted(result.isolated.node_ids), sorted(result.isolated.link_ids)) == (["n3", "n4"], ["p3", "p4", "p5"])
    assert result.lost_supply.n_nodes == 0


def test_two_bursts_share_one_area_without_secondary_valves():
    # p4 (S3) and p5 (S4): V3 between them stays open, V2 and V4 close; V4 is 0.5 L from p5's
    # middle, V2 1.5 L from p4's. Neither is secondary: both touch a burst segment.
    result = burst_isolation(toy(FULL_LAYER), ["p4", "p5"])
    assert result.valves_to_close == ["V4", "V2"]
    assert result.secondary_valves == [] and result.passed_valves == []
    assert len(result.burst_segments) == 2 and len(result.isolation_segments) == 2


def test_valves_away_from_the_only_source_are_optional():
    # p2 lies in S1, bounded by V0 (to S0, the reservoir), V1 (to S2) and V7 (to S6). With those
    # closed, S2..S6 still hang together through V2..V6 but reach no source: only V0 must close,
    # and n2..n6 lose supply whatever is done.
    result = burst_isolation(toy(FULL_LAYER), "p2")
    assert result.valves_to_close == ["V0"]
    assert result.optional_valves == ["V1", "V7"]
    assert sorted(result.lost_supply.node_ids) == ["n2", "n3", "n4", "n5", "n6"]
    assert sorted(result.lost_supply.link_ids) == ["p3", "p4", "p5", "p6", "p7", "p8"]
    assert result.lost_supply.length == pytest.approx(6 * L)


def test_second_source_makes_far_valves_required():
    # With a tank behind V8 at n4, S2 and S6 reach the tank (S2-S3-S4, S6-S5-S4): V1 and V7 must
    # close too, and nobody loses supply. All three valves are 0.5 L from the middle of p2.
    network = toy_with_tank()
    result = burst_isolation(network, "p2")
    assert result.valves_to_close == ["V0", "V1", "V7"]
    assert result.optional_valves == [] and result.lost_supply.n_nodes == 0
    # V1 fails: S2 {n2, p6} joins; its valves V2 (n2, 0.5 L) and V5 (n5, via p6: 1.5 L) are secondary.
    result = burst_isolation(network, "p2", failed_valves="V1")
    assert result.valves_to_close == ["V0", "V2", "V7", "V5"]
    assert result.secondary_valves == ["V2", "V5"]
    assert result.valve_distance["V5"] == pytest.approx(1.5 * L)
    assert sorted(result.isolated.node_ids) == ["n1", "n2"]


def test_source_inside_the_area_is_reported():
    # p1 lies in S0 with the reservoir itself: no valve separates the burst from s. V0 is optional
    # (nothing behind it has another source) and every junction loses supply.
    result = burst_isolation(toy(FULL_LAYER), "p1")
    assert result.sources_in_area == ["s"]
    assert result.valves_to_close == [] and result.optional_valves == ["V0"]
    assert sorted(result.lost_supply.node_ids) == ["n1", "n2", "n3", "n4", "n5", "n6"]


def test_isolation_finds_what_loses_supply():
    network = toy(FULL_LAYER)
    seg = segment(network)
    # Closing V1 and V5 leaves S2 fed through V2, S3, V3, S4, V4, S5, V6, S6, V7, S1, V0.
    assert isolation(network, ["V1", "V5"], seg).lost_supply.n_nodes == 0
    # Closing V2 as well shuts S2 {n2, p6} in.
    loss = isolation(network, ["V1", "V2", "V5"], seg)
    assert (loss.lost_supply.node_ids, loss.lost_supply.link_ids) == (["n2"], ["p6"])
    assert loss.closed_valves == ["V1", "V2", "V5"]
    # Closing the reservoir's valve cuts off every junction.
    assert sorted(isolation(network, "V0", seg).lost_supply.node_ids) == ["n1", "n2", "n3", "n4", "n5", "n6"]


def branched() -> PipeNetwork:
    """r feeds a; a-b twice (100 m and 30 m); b-c-d; an island x-y without a source.

    v1 on ra at a and v2 on cd at d give the segments {r, ra}, {a, ab1, ab2, b, bc, c, cd},
    {d} and the island {x, xy, y}. Only bc has a diameter.
    """
    return PipeNetwork.from_arrays(
        ["r", "a", "b", "c", "d", "x", "y"],
        ["ra", "ab1", "ab2", "bc", "cd", "xy"],
        ["r", "a", "a", "b", "c", "x"],
        ["a", "b", "b", "c", "d", "y"],
        node_kind=["reservoir"] + ["junction"] * 6,
        link_length=[10.0, 100.0, 30.0, 50.0, 20.0, 5.0],
        link_diameter=[math.nan, math.nan, math.nan, 0.2, math.nan, math.nan],
    ).with_valves(["v1", "v2"], ["ra", "cd"], ["a", "d"])


def test_parts_that_never_had_water_do_not_lose_it():
    network = branched()
    loss = isolation(network, ["v1"])
    assert sorted(loss.lost_supply.node_ids) == ["a", "b", "c", "d"]
    assert len(loss.unsupplied_before) == 1  # the island
    # Only bc has both a length and a diameter.
    assert loss.lost_supply.volume == pytest.approx(math.pi * 0.2**2 / 4 * 50.0)
    assert loss.lost_supply.links_without_volume == 3  # ab1, ab2, cd
    # A burst on bc: v1 (source side) must close, v2 (behind it only d) is optional; d loses
    # supply, the island does not count. From the middle of bc, v1 at a is 25 + 30 m (the
    # shorter of the parallel pipes), v2 at d is 25 + 20 m.
    result = burst_isolation(network, "bc")
    assert (result.valves_to_close, result.optional_valves) == (["v1"], ["v2"])
    assert result.valve_distance == pytest.approx({"v1": 55.0, "v2": 45.0})
    assert result.lost_supply.node_ids == ["d"]


def test_bad_input_is_refused_clearly():
    network = toy(FULL_LAYER)
    with pytest.raises(NotFound, match="unknown link id 'p99'"):
        burst_isolation(network, ["p4", "p99"])
    with pytest.raises(NotFound, match="unknown valve id 'V9'"):
        burst_isolation(network, "p4", failed_valves=["V9"])
    with pytest.raises(NotFound, match="unknown valve id 'V9'"):
        isolation(network, ["V9"])
    with pytest.raises(InvalidInput, match="no burst link"):
        burst_isolation(network, [])
    with pytest.raises(InvalidInput, match="does not touch node 'n1'"):
        toy({"bad": ("p4", "n1")})
    with pytest.raises(InvalidInput, match="another network"):
        burst_isolation(network, "p4", segmentation=segment(branched()))


def test_network_without_source_is_refused():
    network = PipeNetwork.from_arrays(["a", "b"], ["ab"], ["a"], ["b"]).with_valves(["v"], ["ab"], ["a"])
    with pytest.raises(InvalidInput, match="no source node"):
        burst_isolation(network, "ab")
    with pytest.raises(InvalidInput, match="no source node"):
        isolation(network, ["v"])


def test_wntr_valve_layer_frame_is_accepted():
    # The valve layer as WNTR hands it (index = valve number, columns link and node).
    layer = pd.DataFrame([["p4", "n4"], ["p3", "n2"]], columns=["link", "node"])
    network = PipeNetwork.from_wntr(toy_wntr(), layer)
    assert network.valves.ids.tolist() == ["0", "1"]
    assert burst_isolation(network, "p4").valves_to_close == ["0", "1"]
