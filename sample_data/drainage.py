"""Separate storm (YS) and sewage (WS) gravity networks along the roads.

Each system is a forest: a shortest-path tree over the road graph towards its outlets, with
uphill flow penalised, so water runs downhill where the ground allows. Storm sewers end at
outfalls on the river bank; sewers end in a bank-side interceptor that runs east to the
treatment plant. Every road gets a sewer: a road that is not on the tree starts at its own head
manhole. Inverts are set from the leaves down: as shallow as 0.7 m of cover allows and at least
a minimum slope below the pipe upstream, so they always fall in the direction of flow.
"""

from __future__ import annotations

from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import dijkstra

from .frame import CRS, rng
from .layout import Layout
from .pressure_net import offset_graph
from .relief import BANK_WIDTH, CHANNEL_HALF_WIDTH
from .terrain import LowSection, Terrain

SPACING = 40.0  # maximum manhole spacing
MIN_COVER = 0.7
OFFSETS = {"YS": (1.2, -1.2), "WS": (-1.2, 1.2)}
# (contributing road length in m below which, size in mm)
STORM_SIZES = [(120, 400), (300, 500), (600, 600), (1000, 800), (1500, 1000), (2100, 1200), (2800, 1500)]
STORM_BOXES = [(4500, (2000, 1500)), (8000, (2500, 2000)), (np.inf, (3000, 2000))]
SEWER_SIZES = [(1500, 300), (4000, 400), (8000, 500), (15000, 600), (30000, 800), (60000, 1000), (np.inf, 1200)]
INTERCEPTOR_SETBACK = 12.0  # interceptor runs this far from the corridor edge, inside the bank park


@dataclass
class _Routing:
    """Allowed flows a -> b: every road edge both ways (listed first), then one-way special edges."""

    xy: np.ndarray
    kind: np.ndarray
    a: np.ndarray
    b: np.ndarray
    road: np.ndarray  # road edge index, -1 for special edges
    cheap: np.ndarray  # interceptor edges attract the flow
    n_road: int
    targets: np.ndarray


@dataclass
class _Chains:
    """Each physical edge cut into pipes of at most SPACING metres, with its manholes."""

    flow_a: np.ndarray
    flow_b: np.ndarray
    unit: np.ndarray
    head_gap: np.ndarray
    run: np.ndarray
    k: np.ndarray
    in_tree: np.ndarray
    first_mid: np.ndarray
    mid_ids: np.ndarray
    mid_xy: np.ndarray
    mid_edge: np.ndarray

    def node(self, e: np.ndarray, i: np.ndarray) -> np.ndarray:
        """Node number of position i (0..k) along the chain of physical edge e."""
        start = np.where(
            self.in_tree[e], self.flow_a[e], self.mid_ids[np.minimum(self.first_mid[e], len(self.mid_ids) - 1)]
        )
        mid = self.mid_ids[np.clip(self.first_mid[e] + i - 1 + (~self.in_tree[e]), 0, len(self.mid_ids) - 1)]
        return np.where(i == 0, start, np.where(i == self.k[e], self.flow_b[e], mid))


def _min_slope(size: np.ndarray) -> np.ndarray:
    return np.where(size <= 400, 0.003, np.where(size <= 600, 0.002, np.where(size <= 1000, 0.0012, 0.0008)))


def _levels(down: np.ndarray) -> np.ndarray:
    """Hops from each node to its outlet, by pointer doubling."""
    n = len(down)
    jump = np.where(down >= 0, down, np.arange(n))
    hops = (down >= 0).astype(np.int64)
    while True:
        nxt = jump[jump]
        if np.array_equal(nxt, jump):
            return hops
        hops = hops + hops[jump]
        jump = nxt


def _sizes(cls: str, acc: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Diameter (0 for box culverts), width and height in mm from the contributing road length."""
    diam = np.zeros(len(acc), np.int64)
    width = np.zeros(len(acc), np.int64)
    height = np.zeros(len(acc), np.int64)
    done = np.zeros(len(acc), bool)
    for limit, d in STORM_SIZES if cls == "YS" else SEWER_SIZES:
        m = ~done & (acc < limit)
        diam[m] = d
        done |= m
    for limit, (w, h) in STORM_BOXES if cls == "YS" else []:
        m = ~done & (acc < limit)
        width[m], height[m] = w, h
        done |= m
    return diam, width, height


def _routing(cls: str, layout: Layout) -> _Routing:
    """The system's nodes and allowed flows: roads without bridges, plus outfalls or interceptors."""
    roads, frame, river = layout.roads, layout.frame, layout.relief.river
    keep = ~roads.bridge
    base = offset_graph(roads, OFFSETS[cls], frame.bbox)
    nb = len(base)
    ru, rv = roads.u[keep], roads.v[keep]
    road_idx = np.nonzero(keep)[0]
    deg = np.bincount(np.concatenate([ru, rv]), minlength=nb)
    # dead ends where the river cut a street (the corridor edge is at a fixed distance)
    to_river = np.abs(river.signed_distance(roads.node_xy[:, 0], roads.node_xy[:, 1]))
    sinks = np.nonzero((deg == 1) & (np.abs(to_river - (CHANNEL_HALF_WIDTH + BANK_WIDTH)) < 2.0))[0]
    channel = river.channel(frame.x0 - 200.0, frame.x1 + 200.0).boundary
    edge = shapely.get_coordinates(shapely.get_point(shapely.shortest_line(shapely.points(base[sinks]), channel), 1))
    towards = edge - base[sinks]
    towards /= np.maximum(np.hypot(*towards.T), 1e-9)[:, None]

    xy, kind = [base], [np.full(nb, "manhole", dtype=object)]
    a, b = [ru, rv], [rv, ru]
    road, cheap = [road_idx, road_idx], [np.zeros(len(ru), bool), np.zeros(len(ru), bool)]
    n = nb

    def add(node_xy: np.ndarray, node_kind: str) -> np.ndarray:
        nonlocal n
        xy.append(node_xy)
        kind.append(np.full(len(node_xy), node_kind, dtype=object))
        n += len(node_xy)
        return np.arange(n - len(node_xy), n)

    def link(frm: np.ndarray, to: np.ndarray, attract: bool) -> None:
        a.append(np.asarray(frm))
        b.append(np.asarray(to))
        road.append(np.full(len(frm), -1))
        cheap.append(np.full(len(frm), attract))

    if cls == "YS":  # outfalls on the channel edge, 1 m back towards the street
        outfalls = add(edge - towards, "outfall")
        link(sinks, outfalls, False)
        targets = outfalls
    else:  # an interceptor along each bank, flowing east to the treatment plant
        side = np.sign(river.signed_distance(base[sinks, 0], base[sinks, 1]))
        ends = []
        for sgn in (-1.0, 1.0):
            on = np.nonzero(side == sgn)[0]
            if len(on) == 0:
                continue
            on = on[np.argsort(base[sinks[on], 0])]
            chain = add(base[sinks[on]] + towards[on] * INTERCEPTOR_SETBACK, "manhole")
            wx = frame.x1 - 3.0
            wy = float(river.centre_y(np.array([wx]))[0]) + sgn * (
                CHANNEL_HALF_WIDTH + BANK_WIDTH - INTERCEPTOR_SETBACK
            )
            plant = add(np.array([[wx, wy]]), "outfall")
            link(sinks[on], chain, False)
            link(chain[:-1], chain[1:], True)
            link(chain[-1:], plant, True)
            ends.append(plant[0])
        targets = np.array(ends, dtype=np.int64)
    return _Routing(
        xy=np.vstack(xy),
        kind=np.concatenate(kind),
        a=np.concatenate(a).astype(np.int64),
        b=np.concatenate(b).astype(np.int64),
        road=np.concatenate(road),
        cheap=np.concatenate(cheap),
        n_road=len(ru),
        targets=targets,
    )


def _route(cls: str, r: _Routing, terrain: Terrain) -> tuple[np.ndarray, np.ndarray]:
    """Next node downstream and cost to the outlet, by Dijkstra from the outlets on reversed flows."""
    z = terrain.elevation(r.xy[:, 0], r.xy[:, 1])
    length = np.hypot(*(r.xy[r.b] - r.xy[r.a]).T)
    rise = np.maximum(z[r.b] - z[r.a], 0.0)
    cost = np.where(r.cheap, 0.2 * length, length + 60.0 * rise) + 1e-3
    n = len(r.xy)
    graph = coo_matrix((cost, (r.b, r.a)), shape=(n, n)).tocsr()
    dist, pred, _ = dijkstra(graph, directed=True, indices=r.targets, return_predecessors=True, min_only=True)
    if not np.isfinite(dist).all():
        raise RuntimeError(f"{cls}: {int((~np.isfinite(dist)).sum())} drainage nodes cannot reach an outlet")
    return np.where(pred >= 0, pred, -1), dist


def _chains(r: _Routing, down: np.ndarray, dist: np.ndarray) -> tuple[_Chains, np.ndarray]:
    """Cut every physical edge into a chain of pipes in its flow direction."""
    phys = np.r_[np.arange(r.n_road), np.arange(2 * r.n_road, len(r.a))]
    pa, pb = r.a[phys], r.b[phys]
    tree_ab = down[pa] == pb
    tree_ba = down[pb] == pa
    in_tree = tree_ab | tree_ba
    # off the tree, a sewer runs towards the end nearer the outlet from a head manhole of its own
    flow_a = np.where(tree_ab, pa, np.where(tree_ba, pb, np.where(dist[pa] >= dist[pb], pa, pb)))
    flow_b = np.where(flow_a == pa, pb, pa)
    plen = np.hypot(*(r.xy[flow_b] - r.xy[flow_a]).T)
    head_gap = np.where(in_tree, 0.0, np.minimum(2.0, plen * 0.1))
    run = plen - head_gap
    k = np.maximum(1, np.ceil(run / SPACING)).astype(np.int64)
    n_mid = k - 1 + (~in_tree)
    owner = np.repeat(np.arange(len(phys)), n_mid)
    j = np.arange(n_mid.sum()) - np.repeat(np.cumsum(n_mid) - n_mid, n_mid)
    pos = j + in_tree[owner]  # 0 = head manhole, 1.. = intermediate manholes
    unit = (r.xy[flow_b] - r.xy[flow_a]) / np.maximum(plen, 1e-9)[:, None]
    s = head_gap[owner] + pos * run[owner] / k[owner]
    chains = _Chains(
        flow_a=flow_a,
        flow_b=flow_b,
        unit=unit,
        head_gap=head_gap,
        run=run,
        k=k,
        in_tree=in_tree,
        first_mid=np.cumsum(n_mid) - n_mid,
        mid_ids=len(r.xy) + np.arange(len(owner)),
        mid_xy=r.xy[flow_a[owner]] + unit[owner] * s[:, None],
        mid_edge=owner,
    )
    return chains, r.road[phys]


def _inlets(
    cls: str, c: _Chains, base: np.ndarray, edge_road: np.ndarray, layout: Layout, sections: list[LowSection]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Storm inlets at alternate kerbs every ~40 m and a pair at the low point of each low road
    section: (inlet xy, physical edge, manhole each drains to, section ids of the pairs)."""
    roads = layout.roads
    road_e = np.nonzero(edge_road >= 0)[0]
    length = c.run[road_e] + c.head_gap[road_e]
    ni = np.floor(length / SPACING).astype(np.int64)
    ie = np.repeat(road_e, ni)
    ik = np.arange(ni.sum()) - np.repeat(np.cumsum(ni) - ni, ni)
    s = (ik + 0.5) * np.repeat(length / np.maximum(ni, 1), ni)
    sides = np.where(ik % 2 == 0, 1.0, -1.0)
    sec_ids, sec_e, sec_xy = [], [], []
    for sec in sections:
        hit = road_e[roads.road_id[edge_road[road_e]] == sec.road_id]
        if len(hit):
            sec_ids.append(sec.id)
            sec_e.append(hit[0])
            sec_xy.append(sec.midpoint)
    se = np.array(sec_e, dtype=np.int64)
    centreline_start = base[c.flow_a] - np.asarray(OFFSETS[cls])  # back from the sewer to the road axis
    sxy = np.array(sec_xy, dtype=float).reshape(-1, 2)
    s_sec = ((sxy - centreline_start[se]) * c.unit[se]).sum(axis=1)
    ie = np.concatenate([ie, se, se])
    s = np.concatenate([s, s_sec, s_sec])
    sides = np.concatenate([sides, np.ones(len(se)), -np.ones(len(se))])
    half = roads.width[edge_road[ie]] * 0.34  # kerb of the carriageway
    normal = np.column_stack([-c.unit[ie, 1], c.unit[ie, 0]])
    xy = centreline_start[ie] + c.unit[ie] * s[:, None] + normal * (sides * half)[:, None]
    pos = np.clip(np.rint((s - c.head_gap[ie]) / (c.run[ie] / c.k[ie])), 0, c.k[ie]).astype(np.int64)
    return xy, ie, c.node(ie, pos), sec_ids


def _system(cls: str, layout: Layout, terrain: Terrain, sections: list[LowSection], g: np.random.Generator) -> dict:
    r = _routing(cls, layout)
    down_node, dist = _route(cls, r, terrain)
    c, edge_road = _chains(r, down_node, dist)
    pe = np.repeat(np.arange(len(c.k)), c.k)
    pj = np.arange(c.k.sum()) - np.repeat(np.cumsum(c.k) - c.k, c.k)
    start, end = c.node(pe, pj), c.node(pe, pj + 1)
    xy = np.vstack([r.xy, c.mid_xy])
    kind = np.concatenate([r.kind, np.full(len(c.mid_xy), "manhole", dtype=object)])
    node_road = np.concatenate([np.full(len(r.xy), -1), edge_road[c.mid_edge]])
    pipe_road = edge_road[pe]
    low_pairs: dict[str, list[int]] = {}
    if cls == "YS":
        in_xy, ie, target, sec_ids = _inlets(cls, c, r.xy, edge_road, layout, sections)
        in_ids = len(xy) + np.arange(len(in_xy))
        xy = np.vstack([xy, in_xy])
        kind = np.concatenate([kind, np.full(len(in_xy), "inlet", dtype=object)])
        node_road = np.concatenate([node_road, edge_road[ie]])
        start, end = np.concatenate([start, in_ids]), np.concatenate([end, target])
        pipe_road = np.concatenate([pipe_road, edge_road[ie]])
        n_low = len(sec_ids)
        pairs = in_ids[len(in_ids) - 2 * n_low :]
        low_pairs = {sid: [int(pairs[i]), int(pairs[n_low + i])] for i, sid in enumerate(sec_ids)}

    # sizes from the road length drained, then inverts, both from the leaves down
    nn = len(xy)
    down = np.full(nn, -1, np.int64)
    down[start] = end
    pipe_of = np.full(nn, -1, np.int64)
    pipe_of[start] = np.arange(len(start))
    ground = np.round(terrain.elevation(xy[:, 0], xy[:, 1]), 3)
    length = np.hypot(*(xy[end] - xy[start]).T)
    lead = kind[start] == "inlet"
    lvl = _levels(down)
    order = np.argsort(-lvl, kind="stable")
    bounds = np.r_[0, np.nonzero(np.diff(lvl[order]))[0] + 1, nn]
    levels = [order[a0:a1][down[order[a0:a1]] >= 0] for a0, a1 in zip(bounds[:-1], bounds[1:], strict=True)]
    acc = np.zeros(nn)
    for nodes in levels:
        p = pipe_of[nodes]
        np.add.at(acc, down[nodes], acc[nodes] + np.where(lead[p], 0.0, length[p]))
    diam, width, height = _sizes(cls, acc[start] + length)
    diam = np.where(lead, 300, diam)
    width, height = np.where(lead, 0, width), np.where(lead, 0, height)
    rise = np.where(diam > 0, diam, height) / 1000.0
    size_out = np.zeros(nn)
    size_out[start] = rise
    incoming = np.zeros(nn)
    np.maximum.at(incoming, end, rise)
    size_out = np.where(down < 0, incoming, size_out)
    cover = np.where(kind == "inlet", MIN_COVER, g.uniform(0.75, 1.2, nn))
    invert = ground - cover - size_out
    slope = _min_slope(np.where(diam > 0, diam, height))
    for nodes in levels:
        p = pipe_of[nodes]
        np.minimum.at(invert, down[nodes], invert[nodes] - slope[p] * length[p] - 0.01)
    invert = np.floor(invert * 1000.0) / 1000.0
    if (invert[end] >= invert[start]).any():
        raise RuntimeError(f"{cls}: inverts do not fall along every pipe")
    return {
        "xy": xy,
        "kind": kind,
        "node_road": node_road,
        "ground": ground,
        "invert": invert,
        "start": start,
        "end": end,
        "pipe_road": pipe_road,
        "diameter": diam,
        "width": width,
        "height": height,
        "lead": lead,
        "length": length,
        "low_pairs": low_pairs,
    }


def _nullable_int(values: np.ndarray, valid: np.ndarray) -> pd.arrays.IntegerArray:
    return pd.arrays.IntegerArray(np.where(valid, values, 0).astype("int32"), ~valid)


def build_drainage(
    layout: Layout, terrain: Terrain, sections: list[LowSection]
) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame, dict]:
    """Storm and sewage networks as one node layer and one pipe layer, plus the facts."""
    g = rng(layout.frame.seed, "drainage")
    names = layout.roads.name
    node_parts, pipe_parts = [], []
    info: dict = {"outfalls": {}, "low_section_inlets": {}}
    n_nodes = n_pipes = 0
    for cls in ("YS", "WS"):
        s = _system(cls, layout, terrain, sections, g)
        nn, npipe = len(s["xy"]), len(s["start"])
        ids = np.array([f"DN{n_nodes + i + 1:06d}" for i in range(nn)], dtype=object)
        kind = s["kind"]
        node_parts.append(
            gpd.GeoDataFrame(
                {
                    "node_id": ids,
                    "class": cls,
                    "type": kind,
                    "code": [f"{cls}{i + 1:06d}" for i in range(nn)],
                    "feature": np.where(kind == "inlet", "雨水篦", np.where(kind == "outfall", "出水口", "检查井")),
                    "ground_elev": s["ground"],
                    "invert_elev": s["invert"],
                    "depth": np.round(s["ground"] - s["invert"], 3),
                    "road": np.where(s["node_road"] >= 0, names[np.maximum(s["node_road"], 0)], ""),
                    "receiving": np.where(kind == "outfall", "river" if cls == "YS" else "WWTP", None),
                },
                geometry=shapely.points(s["xy"]),
                crs=CRS,
            )
        )
        st, en, diam = s["start"], s["end"], s["diameter"]
        box = diam == 0
        year = g.integers(1985, 2022, npipe)
        small_new = (diam <= 600) & (year >= 2008)
        pipe_parts.append(
            gpd.GeoDataFrame(
                {
                    "pipe_id": [f"DP{n_pipes + i + 1:06d}" for i in range(npipe)],
                    "start_id": ids[st],
                    "end_id": ids[en],
                    "class": cls,
                    "kind": np.where(s["lead"], "inlet_lead", np.where(kind[en] == "outfall", "outfall", "sewer")),
                    "shape": np.where(box, "box", "circular"),
                    "diameter": _nullable_int(diam, ~box),
                    "width": _nullable_int(s["width"], box),
                    "height": _nullable_int(s["height"], box),
                    "start_invert": s["invert"][st],
                    "end_invert": s["invert"][en],
                    "slope": np.round((s["invert"][st] - s["invert"][en]) / np.maximum(s["length"], 0.01), 5),
                    "length": np.round(s["length"], 2),
                    "material": np.where(
                        s["lead"], "PVC-U", np.where(box, "RC box", np.where(small_new, "HDPE", "RC"))
                    ),
                    "year": year.astype("int32"),
                    "road": np.where(s["pipe_road"] >= 0, names[np.maximum(s["pipe_road"], 0)], ""),
                },
                geometry=shapely.linestrings(np.stack([s["xy"][st], s["xy"][en]], axis=1)),
                crs=CRS,
            )
        )
        info["outfalls"][cls] = [str(o) for o in ids[kind == "outfall"]]
        info["low_section_inlets"].update({sid: [str(ids[i]) for i in pair] for sid, pair in s["low_pairs"].items()})
        n_nodes += nn
        n_pipes += npipe
    nodes = gpd.GeoDataFrame(pd.concat(node_parts, ignore_index=True), crs=CRS)
    pipes = gpd.GeoDataFrame(pd.concat(pipe_parts, ignore_index=True), crs=CRS)
    return nodes, pipes, info
