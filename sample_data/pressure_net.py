"""Shared machinery of the pressure networks (water, gas): pipes along the roads, split by fittings.

A network starts as the road graph moved sideways by a fixed offset (so water and gas lie at
different sides of the carriageway and never coincide). Fittings are "attachments" at a
distance along a road edge: inline ones (valves, meters, regulators) split the run, tees also
start a branch to a leaf (a service connection at a building wall, a hydrant at the kerb).
Splitting is one sort plus array arithmetic, so it scales to hundreds of thousands of pipes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely

from .layout import RoadGraph


@dataclass
class Attachments:
    """Fittings to insert: on `edge` at distance `s` from its start node."""

    edge: np.ndarray
    s: np.ndarray
    kind: np.ndarray  # node type of the fitting on the run
    leaf_xy: np.ndarray  # (n, 2); NaN for inline fittings
    leaf_kind: np.ndarray  # node type of the leaf, '' for inline fittings
    leaf_ref: np.ndarray  # e.g. building id of a service connection, '' otherwise
    branch_diameter: np.ndarray  # mm, 0 for inline

    @classmethod
    def inline(cls, edge: np.ndarray, s: np.ndarray, kind: str) -> Attachments:
        n = len(edge)
        return cls(
            np.asarray(edge, dtype=np.int64),
            np.asarray(s, dtype=float),
            np.full(n, kind, dtype=object),
            np.full((n, 2), np.nan),
            np.full(n, "", dtype=object),
            np.full(n, "", dtype=object),
            np.zeros(n, dtype=np.int64),
        )

    @classmethod
    def concat(cls, parts: list[Attachments]) -> Attachments:
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in cls.__dataclass_fields__))

    def take(self, idx: np.ndarray) -> Attachments:
        return Attachments(*(getattr(self, f)[idx] for f in self.__dataclass_fields__))


@dataclass
class Laid:
    """Nodes and pipes after splitting. Base nodes come first, then fittings, then leaves."""

    node_xy: np.ndarray
    node_kind: np.ndarray
    node_edge: np.ndarray  # edge of a fitting (-1 otherwise)
    node_s: np.ndarray  # distance along that edge
    node_ref: np.ndarray  # building id of a service node
    pipe_start: np.ndarray
    pipe_end: np.ndarray
    pipe_edge: np.ndarray  # road edge of a run piece or of the tee of a branch
    pipe_s0: np.ndarray
    pipe_s1: np.ndarray
    pipe_branch: np.ndarray  # bool
    pipe_diameter_branch: np.ndarray  # branch diameter (0 for runs)
    pipe_ref: np.ndarray  # building id for service branches
    n_base: int


def offset_graph(roads: RoadGraph, offset: tuple[float, float], bbox: tuple[float, float, float, float]) -> np.ndarray:
    """Node coordinates of a network laid parallel to the road centrelines; the ends of roads
    at the district edge stay just inside it (where the DEM and the maps are)."""
    xy = roads.node_xy + np.asarray(offset, dtype=float)[None, :]
    return np.clip(xy, [bbox[0] + 0.5, bbox[1] + 0.5], [bbox[2] - 0.5, bbox[3] - 0.5])


def end_fittings(
    g: np.random.Generator, roads: RoadGraph, eligible: np.ndarray, prob: np.ndarray, dist: float, kind: str
) -> Attachments:
    """A fitting `dist` metres from each junction end (degree >= 3) of eligible edges, with a
    per-edge probability: how utilities place gate valves around crossings and tees."""
    deg = roads.degree()
    length = roads.length
    room = length > 2 * dist + 4.0
    at_u = eligible & room & (deg[roads.u] >= 3) & (g.random(len(length)) < prob)
    at_v = eligible & room & (deg[roads.v] >= 3) & (g.random(len(length)) < prob)
    eu, ev = np.nonzero(at_u)[0], np.nonzero(at_v)[0]
    return Attachments.inline(
        np.concatenate([eu, ev]), np.concatenate([np.full(len(eu), dist), length[ev] - dist]), kind
    )


def building_taps(
    roads: RoadGraph,
    base_xy: np.ndarray,
    footprints: np.ndarray,
    building_ids: np.ndarray,
    diameter: np.ndarray,
    usable_edge: np.ndarray,
    leaf_kind: str = "service",
) -> Attachments:
    """A tee on the nearest usable run for every building, branching to its nearest wall."""
    idx = np.nonzero(usable_edge)[0]
    runs = shapely.linestrings(np.stack([base_xy[roads.u[idx]], base_xy[roads.v[idx]]], axis=1))
    tree = shapely.STRtree(runs)
    centres = shapely.centroid(footprints)
    pair = tree.query_nearest(centres, all_matches=False)
    b, r = pair[0], pair[1]
    order = np.argsort(b, kind="stable")
    b, r = b[order], r[order]
    edge = idx[r]
    length = roads.length[edge]
    s = shapely.line_locate_point(runs[r], centres[b])
    margin = np.minimum(10.0, 0.3 * length)
    s = np.clip(s, margin, length - margin)
    tee = shapely.line_interpolate_point(runs[r], s)
    wall = shapely.get_coordinates(shapely.get_point(shapely.shortest_line(tee, footprints[b]), 1))
    return Attachments(
        edge=edge.astype(np.int64),
        s=s,
        kind=np.full(len(b), "junction", dtype=object),
        leaf_xy=wall,
        leaf_kind=np.full(len(b), leaf_kind, dtype=object),
        leaf_ref=np.asarray(building_ids, dtype=object)[b],
        branch_diameter=np.asarray(diameter, dtype=np.int64)[b],
    )


def lay(base_xy: np.ndarray, roads: RoadGraph, att: Attachments, gap: float = 0.5) -> Laid:
    """Insert all fittings, keep them at least `gap` apart along each run, and cut the runs."""
    n_base = len(base_xy)
    length = roads.length
    order = np.lexsort((att.s, att.edge))
    att = att.take(order)
    e = att.edge
    rank = np.arange(len(e), dtype=float)
    big = 1.0e6
    s = np.clip(att.s, gap, np.maximum(length[e] - gap, gap))
    val = np.maximum.accumulate(e * big + s - gap * rank) + gap * rank - e * big
    keep = val <= length[e] - gap
    att = att.take(np.nonzero(keep)[0])
    s = val[keep]
    e = att.edge
    n_att = len(e)
    pu, pv = base_xy[roads.u[e]], base_xy[roads.v[e]]
    att_xy = pu + (pv - pu) * (s / length[e])[:, None]
    att_ids = n_base + np.arange(n_att)

    first = np.r_[True, e[1:] != e[:-1]] if n_att else np.zeros(0, bool)
    last = np.r_[e[1:] != e[:-1], True] if n_att else np.zeros(0, bool)
    pred = np.where(first, roads.u[e], att_ids - 1)
    pred_s = np.where(first, 0.0, np.r_[0.0, s[:-1]])
    has = np.zeros(len(length), bool)
    has[e] = True
    bare = np.nonzero(~has)[0]
    le = e[last]
    run_start = np.concatenate([pred, att_ids[last], roads.u[bare]])
    run_end = np.concatenate([att_ids, roads.v[le], roads.v[bare]])
    run_edge = np.concatenate([e, le, bare])
    run_s0 = np.concatenate([pred_s, s[last], np.zeros(len(bare))])
    run_s1 = np.concatenate([s, length[le], length[bare]])

    tee = np.nonzero(att.leaf_kind != "")[0]
    leaf_ids = n_base + n_att + np.arange(len(tee))
    ro = np.lexsort((run_s0, run_edge))
    run_start, run_end, run_edge, run_s0, run_s1 = run_start[ro], run_end[ro], run_edge[ro], run_s0[ro], run_s1[ro]
    n_run = len(run_start)
    node_xy = np.vstack([base_xy, att_xy, att.leaf_xy[tee]])
    return Laid(
        node_xy=node_xy,
        node_kind=np.concatenate([np.full(n_base, "junction", dtype=object), att.kind, att.leaf_kind[tee]]),
        node_edge=np.concatenate([np.full(n_base, -1), e, e[tee]]),
        node_s=np.concatenate([np.zeros(n_base), s, s[tee]]),
        node_ref=np.concatenate([np.full(n_base + n_att, "", dtype=object), att.leaf_ref[tee]]),
        pipe_start=np.concatenate([run_start, att_ids[tee]]),
        pipe_end=np.concatenate([run_end, leaf_ids]),
        pipe_edge=np.concatenate([run_edge, e[tee]]),
        pipe_s0=np.concatenate([run_s0, s[tee]]),
        pipe_s1=np.concatenate([run_s1, s[tee]]),
        pipe_branch=np.concatenate([np.zeros(n_run, bool), np.ones(len(tee), bool)]),
        pipe_diameter_branch=np.concatenate([np.zeros(n_run, np.int64), att.branch_diameter[tee]]),
        pipe_ref=np.concatenate([np.full(n_run, "", dtype=object), att.leaf_ref[tee]]),
        n_base=n_base,
    )


def valve_flags(g: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Status, operable and accessible for n valves: ~1.5 % closed, ~5 % seized, ~3 % buried."""
    status = np.where(g.random(n) < 0.015, "closed", "open").astype(object)
    operable = g.random(n) >= 0.05
    accessible = g.random(n) >= 0.03
    return status, operable, accessible


def material_by_age(year: np.ndarray, diameter: np.ndarray, pick: np.ndarray) -> np.ndarray:
    """What a Chinese water utility laid when: grey cast iron before the mid-90s, then steel and
    ductile iron for mains, PE for small pipes after 2005."""
    mat = np.full(len(year), "DI", dtype=object)
    mat[(year < 1995) & (diameter <= 400)] = "cast iron"
    mat[(year < 1995) & (diameter > 400)] = "steel"
    mat[(year >= 1995) & (year < 2005) & (diameter >= 300) & (pick < 0.4)] = "steel"
    mat[(year >= 2005) & (diameter <= 200) & (pick < 0.5)] = "PE"
    mat[diameter <= 63] = np.where(year[diameter <= 63] >= 2000, "PE", "steel")
    return mat
