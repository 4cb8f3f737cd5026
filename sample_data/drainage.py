"""Separate storm (YS) and sewage (WS) gravity networks along the roads.

Each system is a forest: a shortest-path tree over the road graph towards its sinks, with
uphill flow penalised, so water runs downhill where the ground allows. Storm sewers end at
outfalls on the river bank; sewers end in a bank-side interceptor that runs east to the
treatment plant. Every road gets a sewer: a road that is not on the tree starts at its own
head manhole. Inverts are set from the leaves down: as shallow as 0.7 m cover allows, and at
least a minimum slope below the pipe upstream, so they always fall in the direction of flow.
"""

from __future__ import annotations

from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import shapely
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components, dijkstra

from .frame import CRS, rng
from .layout import Layout
from .relief import BANK_WIDTH, CHANNEL_HALF_WIDTH
from .terrain import LowSection, Terrain

SPACING = 40.0  # maximum manhole spacing
MIN_COVER = 0.7
OFFSETS = {"YS": (1.2, -1.2), "WS": (-1.2, 1.2)}
STORM_SIZES = [(120, 400), (300, 500), (600, 600), (1000, 800), (1500, 1000), (2100, 1200), (2800, 1500)]
STORM_BOXES = [(4500, (2000, 1500)), (8000, (2500, 2000)), (np.inf, (3000, 2000))]
SEWER_SIZES = [(1500, 300), (4000, 400), (8000, 500), (15000, 600), (30000, 800), (60000, 1000), (np.inf, 1200)]


@dataclass
class _Edges:
    a: np.ndarray
    b: np.ndarray
    directed: np.ndarray  # only a -> b allowed
    road: np.ndarray  # road edge index or -1
    cheap: np.ndarray  # interceptor: attractive


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
        hops = hops + hops[jump] * (jump != np.arange(n))
        jump = nxt


def _size_storm(acc: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Diameter (or 0), width and height in mm from the contributing road length."""
    diam = np.zeros(len(acc), np.int64)
    width = np.zeros(len(acc), np.int64)
    height = np.zeros(len(acc), np.int64)
    done = np.zeros(len(acc), bool)
    for limit, d in STORM_SIZES:
        m = ~done & (acc < limit)
        diam[m] = d
        done |= m
    for limit, (w, h) in STORM_BOXES:
        m = ~done & (acc < limit)
        width[m], height[m] = w, h
        done |= m
    return diam, width, height


def _size_sewer(acc: np.ndarray) -> np.ndarray:
    diam = np.zeros(len(acc), np.int64)
    done = np.zeros(len(acc), bool)
    for limit, d in SEWER_SIZES:
        m = ~done & (acc < limit)
        diam[m] = d
        done |= m
    return diam


def _system(
    cls: str, layout: Layout, terrain: Terrain, sections: list[LowSection], g: np.random.Generator
) -> dict[str, np.ndarray]:
    roads = layout.roads
    frame = layout.frame
    river = layout.relief.river
    keep = ~roads.bridge
    base = roads.node_xy + np.asarray(OFFSETS[cls])[None, :]
    nb = len(base)
    ru, rv = roads.u[keep], roads.v[keep]
    road_idx = np.nonzero(keep)[0]
    deg = np.bincount(np.concatenate([ru, rv]), minlength=nb)
    # dead ends where the river cut a street (its corridor edge is at a fixed distance)
    to_river = np.abs(river.signed_distance(roads.node_xy[:, 0], roads.node_xy[:, 1]))
    at_bank = (deg == 1) & (np.abs(to_river - (CHANNEL_HALF_WIDTH + BANK_WIDTH)) < 2.0)
    sinks_road = np.nonzero(at_bank)[0]
    side = np.sign(river.signed_distance(base[sinks_road, 0], base[sinks_road, 1]))
    # the point on the water's edge (just inside the bank) closest to each sink
    cxy = river.centre_y(base[sinks_road, 0])
    towards = np.column_stack([np.zeros(len(sinks_road)), cxy - base[sinks_road, 1]])
    towards /= np.maximum(np.hypot(*towards.T), 1e-9)[:, None]

    extra_xy: list[np.ndarray] = []
    extra_kind: list[np.ndarray] = []
    a_list = [ru, rv]
    b_list = [rv, ru]
    directed = [np.zeros(len(ru), bool), np.zeros(len(ru), bool)]
    road_of = [road_idx, road_idx]
    cheap = [np.zeros(len(ru), bool), np.zeros(len(ru), bool)]
    n_next = nb
    if cls == "YS":
        d = np.abs(river.signed_distance(base[sinks_road, 0], base[sinks_road, 1]))
        out_xy = base[sinks_road] + towards * np.maximum(d - CHANNEL_HALF_WIDTH - 1.5, 1.0)[:, None]
        out_ids = n_next + np.arange(len(sinks_road))
        n_next += len(sinks_road)
        extra_xy.append(out_xy)
        extra_kind.append(np.full(len(sinks_road), "outfall", dtype=object))
        a_list.append(sinks_road)
        b_list.append(out_ids)
        directed.append(np.ones(len(sinks_road), bool))
        road_of.append(np.full(len(sinks_road), -1))
        cheap.append(np.zeros(len(sinks_road), bool))
        targets = out_ids
    else:
        targets_l = []
        for sgn in (-1.0, 1.0):
            on = np.nonzero(side == sgn)[0]
            if len(on) == 0:
                continue
            on = on[np.argsort(base[sinks_road[on], 0])]
            ic_xy = base[sinks_road[on]] + towards[on] * 12.0
            ic = n_next + np.arange(len(on))
            n_next += len(on)
            wx = frame.x1 - 3.0
            wy = float(river.centre_y(np.array([wx]))[0]) + sgn * (CHANNEL_HALF_WIDTH + BANK_WIDTH - 12.0)
            w = n_next
            n_next += 1
            extra_xy += [ic_xy, np.array([[wx, wy]])]
            extra_kind += [np.full(len(on), "manhole", dtype=object), np.array(["outfall"], dtype=object)]
            a_list += [sinks_road[on], ic[:-1], ic[-1:]]
            b_list += [ic, ic[1:], np.array([w])]
            directed += [np.ones(len(on), bool), np.ones(len(on) - 1, bool), np.ones(1, bool)]
            road_of += [np.full(len(on), -1), np.full(len(on) - 1, -1), np.full(1, -1)]
            cheap += [np.zeros(len(on), bool), np.ones(len(on) - 1, bool), np.ones(1, bool)]
            targets_l.append(w)
        targets = np.array(targets_l, dtype=np.int64)
    node_xy = np.vstack([base, *extra_xy]) if extra_xy else base
    node_kind = np.concatenate([np.full(nb, "manhole", dtype=object), *extra_kind]) if extra_kind else np.full(nb, "manhole", dtype=object)
    ea = np.concatenate(a_list).astype(np.int64)
    eb = np.concatenate(b_list).astype(np.int64)
    e_dir = np.concatenate(directed)
    e_road = np.concatenate(road_of)
    e_cheap = np.concatenate(cheap)
    # drop the duplicated reverse copy of road edges for the geometry list, keep it for routing
    n_road = len(ru)
    z_nat = terrain.elevation(node_xy[:, 0], node_xy[:, 1])
    n_nodes = len(node_xy)

    # routing: for every allowed flow a -> b a cost; Dijkstra from the sinks on reversed edges
    length = np.hypot(*(node_xy[eb] - node_xy[ea]).T)
    rise = np.maximum(z_nat[eb] - z_nat[ea], 0.0)
    cost = np.where(e_cheap, 0.2 * length, length + 60.0 * rise) + 1e-3
    graph = coo_matrix((cost, (eb, ea)), shape=(n_nodes, n_nodes)).tocsr()
    dist, pred, _ = dijkstra(graph, directed=True, indices=targets, return_predecessors=True, min_only=True)
    unreached = ~np.isfinite(dist)
    if unreached.any():
        # parts of the road graph that cannot reach the river (should not happen): soakaway outfall
        ncomp, lab = connected_components(graph, directed=False)
        raise RuntimeError(f"{cls}: {int(unreached.sum())} drainage nodes cannot reach an outlet ({ncomp} parts)")
    down_node = np.where(pred >= 0, pred, -1)

    # one physical edge per road edge (first copy) plus the special edges
    phys = np.r_[np.arange(n_road), np.arange(2 * n_road, len(ea))]
    pa, pb = ea[phys], eb[phys]
    tree_ab = down_node[pa] == pb
    tree_ba = down_node[pb] == pa
    flow_a = np.where(tree_ab, pa, np.where(tree_ba, pb, np.where(dist[pa] >= dist[pb], pa, pb)))
    flow_b = np.where(flow_a == pa, pb, pa)
    in_tree = tree_ab | tree_ba
    plen = np.hypot(*(node_xy[flow_b] - node_xy[flow_a]).T)
    head_gap = np.where(in_tree, 0.0, np.minimum(2.0, plen * 0.1))
    run = plen - head_gap
    k = np.maximum(1, np.ceil(run / SPACING)).astype(np.int64)
    # chain nodes: head manhole for non-tree edges, k-1 intermediate manholes
    n_mid = k - 1 + (~in_tree)
    owner = np.repeat(np.arange(len(phys)), n_mid)
    j = np.arange(n_mid.sum()) - np.repeat(np.cumsum(n_mid) - n_mid, n_mid)
    # position along the edge of chain node j: head (if any) at head_gap, then the intermediate ones
    jj = j - (~in_tree[owner]).astype(np.int64) + 1  # 0 = head, 1.. = intermediates
    s = head_gap[owner] + jj * run[owner] / k[owner]
    unit = (node_xy[flow_b] - node_xy[flow_a]) / np.maximum(plen, 1e-9)[:, None]
    mid_xy = node_xy[flow_a[owner]] + unit[owner] * s[:, None]
    mid_ids = n_nodes + np.arange(len(owner))
    first_mid = np.cumsum(n_mid) - n_mid
    # pipes: chain[0] -> chain[1] -> ... -> flow_b; chain[0] is flow_a (tree) or the head manhole
    seq_start = np.where(in_tree, flow_a, mid_ids[np.minimum(first_mid, len(mid_ids) - 1)] if len(mid_ids) else flow_a)
    n_pipes_edge = k
    pe = np.repeat(np.arange(len(phys)), n_pipes_edge)
    pj = np.arange(k.sum()) - np.repeat(np.cumsum(k) - k, k)
    off = (~in_tree[pe]).astype(np.int64)
    # node ids along the chain of edge e: index 0 = seq_start, index i (1..k-1) = mid node (i - 1 + off)
    def chain_node(e: np.ndarray, i: np.ndarray) -> np.ndarray:
        mid = first_mid[e] + i - 1 + (~in_tree[e]).astype(np.int64)
        res = np.where(i == 0, seq_start[e], mid_ids[np.clip(mid, 0, max(len(mid_ids) - 1, 0))] if len(mid_ids) else seq_start[e])
        return np.where(i == k[e], flow_b[e], res)

    p_start = chain_node(pe, pj)
    p_end = chain_node(pe, pj + 1)
    del off
    all_xy = np.vstack([node_xy, mid_xy])
    all_kind = np.concatenate([node_kind, np.full(len(mid_xy), "manhole", dtype=object)])
    all_road = np.concatenate([np.full(n_nodes, -1), e_road[phys][owner]])
    p_road = e_road[phys][pe]

    # storm inlets at the kerbs every ~40 m and at the low points of the low road sections
    inlet_sec: list[str] = []
    if cls == "YS":
        road_e = np.nonzero(e_road[phys] >= 0)[0]
        rl = plen[road_e]
        ni = np.floor(rl / SPACING).astype(np.int64)
        ie = np.repeat(road_e, ni)
        ik = np.arange(ni.sum()) - np.repeat(np.cumsum(ni) - ni, ni)
        isr = (ik + 0.5) * plen[ie] / ni[np.searchsorted(road_e, ie)]
        sides = np.where(ik % 2 == 0, 1.0, -1.0)
        r = e_road[phys][ie]
        half = roads.width[r] * 0.34
        secs_xy = []
        secs_e = []
        for sec in sections:
            hit = np.nonzero(roads.road_id[e_road[phys].clip(0)] == sec.road_id)[0]
            hit = hit[e_road[phys][hit] >= 0]
            if len(hit) == 0:
                continue
            mx, my = sec.midpoint
            secs_xy.append((mx, my))
            secs_e.append(hit[0])
            inlet_sec.append(sec.id)
        se = np.array(secs_e, dtype=np.int64)
        ie = np.concatenate([ie, se, se])
        # along-edge position of the section midpoints
        sxy = np.array(secs_xy).reshape(-1, 2)
        s_sec = np.einsum("nd,nd->n", sxy - node_xy[flow_a[se]] + np.asarray(OFFSETS[cls]), unit[se]) if len(se) else np.zeros(0)
        isr = np.concatenate([isr, s_sec, s_sec])
        sides = np.concatenate([sides, np.ones(len(se)), -np.ones(len(se))])
        r = e_road[phys][ie]
        half = roads.width[r] * 0.34
        centre = node_xy[flow_a[ie]] - np.asarray(OFFSETS[cls]) + unit[ie] * isr[:, None]
        normal = np.column_stack([-unit[ie, 1], unit[ie, 0]])
        in_xy = centre + normal * (sides * half)[:, None]
        # nearest chain node on the same edge
        pos = np.clip(np.rint((isr - head_gap[ie]) / (run[ie] / k[ie])), 0, k[ie]).astype(np.int64)
        target = chain_node(ie, pos)
        in_ids = len(all_xy) + np.arange(len(ie))
        all_xy = np.vstack([all_xy, in_xy])
        all_kind = np.concatenate([all_kind, np.full(len(ie), "inlet", dtype=object)])
        all_road = np.concatenate([all_road, r])
        p_start = np.concatenate([p_start, in_ids])
        p_end = np.concatenate([p_end, target])
        p_road = np.concatenate([p_road, r])
        n_low = len(se)
        low_inlets = in_ids[len(ie) - 2 * n_low :]
    else:
        low_inlets = np.zeros(0, np.int64)

    # ---- sizes and inverts, leaves first --------------------------------------------------
    nn = len(all_xy)
    down = np.full(nn, -1, np.int64)
    down[p_start] = p_end
    pipe_of = np.full(nn, -1, np.int64)
    pipe_of[p_start] = np.arange(len(p_start))
    ground = np.round(terrain.elevation(all_xy[:, 0], all_xy[:, 1]), 3)
    plen_p = np.hypot(*(all_xy[p_end] - all_xy[p_start]).T)
    lvl = _levels(down)
    order = np.argsort(-lvl, kind="stable")
    bounds = np.r_[0, np.nonzero(np.diff(lvl[order]))[0] + 1, nn]
    is_lead = all_kind[p_start] == "inlet"
    acc = np.zeros(nn)
    for a0, a1 in zip(bounds[:-1], bounds[1:], strict=True):
        nodes = order[a0:a1]
        nodes = nodes[down[nodes] >= 0]
        contrib = acc[nodes] + np.where(is_lead[pipe_of[nodes]], 0.0, plen_p[pipe_of[nodes]])
        np.add.at(acc, down[nodes], contrib)
    acc_pipe = acc[p_start] + plen_p
    if cls == "YS":
        diam, width, height = _size_storm(acc_pipe)
    else:
        diam = _size_sewer(acc_pipe)
        width = np.zeros(len(diam), np.int64)
        height = np.zeros(len(diam), np.int64)
    diam = np.where(is_lead, 300, diam)
    width = np.where(is_lead, 0, width)
    height = np.where(is_lead, 0, height)
    rise_mm = np.where(diam > 0, diam, height)
    size_out = np.zeros(nn)
    size_out[p_start] = rise_mm / 1000.0
    incoming = np.zeros(nn)
    np.maximum.at(incoming, p_end, rise_mm / 1000.0)
    size_out = np.where(down < 0, incoming, size_out)
    cover0 = np.where(all_kind == "inlet", MIN_COVER, g.uniform(0.75, 1.2, nn))
    invert = ground - np.maximum(cover0, MIN_COVER) - size_out
    slope = _min_slope(np.where(diam > 0, diam, height))
    for a0, a1 in zip(bounds[:-1], bounds[1:], strict=True):
        nodes = order[a0:a1]
        nodes = nodes[down[nodes] >= 0]
        p = pipe_of[nodes]
        cand = invert[nodes] - slope[p] * plen_p[p] - 0.01
        np.minimum.at(invert, down[nodes], cand)
    invert = np.floor(invert * 1000.0) / 1000.0
    # rounding must not break the fall
    bad = invert[p_end] >= invert[p_start]
    if bad.any():
        raise RuntimeError(f"{cls}: inverts do not fall along {int(bad.sum())} pipes")
    return {
        "xy": all_xy,
        "kind": all_kind,
        "road": all_road,
        "ground": ground,
        "invert": invert,
        "start": p_start,
        "end": p_end,
        "p_road": p_road,
        "diameter": diam,
        "width": width,
        "height": height,
        "lead": is_lead,
        "length": plen_p,
        "low_inlets": low_inlets,
        "low_sections": np.array(inlet_sec, dtype=object),
        "acc": acc_pipe,
    }


def build_drainage(layout: Layout, terrain: Terrain, sections: list[LowSection]) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame, dict]:
    """Storm and sewage networks as one node layer and one pipe layer, with the facts."""
    g = rng(layout.frame.seed, "drainage")
    roads = layout.roads
    node_parts, pipe_parts = [], []
    info: dict = {"outfalls": {}, "low_section_inlets": {}}
    n_off = 0
    for cls in ("YS", "WS"):
        s = _system(cls, layout, terrain, sections, g)
        nn = len(s["xy"])
        ids = np.array([f"DN{n_off + i + 1:06d}" for i in range(nn)], dtype=object)
        code = [f"{cls}{i + 1:06d}" for i in range(nn)]
        feature = np.where(s["kind"] == "inlet", "雨水篦", np.where(s["kind"] == "outfall", "出水口", "检查井"))
        road_name = np.where(s["road"] >= 0, roads.name[np.clip(s["road"], 0, None)], "")
        receiving = np.where(s["kind"] == "outfall", "river" if cls == "YS" else "WWTP", None)
        node_parts.append(
            gpd.GeoDataFrame(
                {
                    "node_id": ids,
                    "class": cls,
                    "type": s["kind"],
                    "code": code,
                    "feature": feature,
                    "ground_elev": s["ground"],
                    "invert_elev": s["invert"],
                    "depth": np.round(s["ground"] - s["invert"], 3),
                    "road": road_name,
                    "receiving": receiving,
                },
                geometry=shapely.points(s["xy"]),
                crs=CRS,
            )
        )
        st, en = s["start"], s["end"]
        diam = s["diameter"]
        box = diam == 0
        year = g.integers(1985, 2022, len(st))
        material = np.where(s["lead"], "PVC-U", np.where(box, "RC box", np.where((diam <= 600) & (year >= 2008), "HDPE", "RC")))
        p_road = s["p_road"]
        pipe_parts.append(
            {
                "class": cls,
                "start": ids[st],
                "end": ids[en],
                "kind": np.where(s["lead"], "inlet_lead", np.where(s["kind"][en] == "outfall", "outfall", "sewer")),
                "shape": np.where(box, "box", "circular"),
                "diameter": np.where(box, None, diam).astype(object),
                "width": np.where(box, s["width"], None).astype(object),
                "height": np.where(box, s["height"], None).astype(object),
                "start_invert": s["invert"][st],
                "end_invert": s["invert"][en],
                "slope": np.round((s["invert"][st] - s["invert"][en]) / np.maximum(s["length"], 0.01), 5),
                "length": np.round(s["length"], 2),
                "material": material,
                "year": year.astype("int32"),
                "road": np.where(p_road >= 0, roads.name[np.clip(p_road, 0, None)], ""),
                "geometry": shapely.linestrings(np.stack([s["xy"][st], s["xy"][en]], axis=1)),
            }
        )
        outfalls = ids[s["kind"] == "outfall"]
        info["outfalls"][cls] = [str(o) for o in outfalls]
        if cls == "YS":
            for sec_id, a, b in zip(
                s["low_sections"], s["low_inlets"][: len(s["low_sections"])], s["low_inlets"][len(s["low_sections"]) :], strict=True
            ):
                info["low_section_inlets"][str(sec_id)] = [str(ids[a]), str(ids[b])]
        info[f"{cls}_max_depth"] = float(np.max(s["ground"] - s["invert"]))
        n_off += nn
    nodes = gpd.GeoDataFrame(__import__("pandas").concat(node_parts, ignore_index=True), crs=CRS)
    cols = {k: np.concatenate([np.broadcast_to(p[k], (len(p["start"]),)) for p in pipe_parts]) for k in pipe_parts[0]}
    geom = cols.pop("geometry")
    n = len(geom)
    pipes = gpd.GeoDataFrame(
        {
            "pipe_id": [f"DP{i + 1:06d}" for i in range(n)],
            "start_id": cols["start"],
            "end_id": cols["end"],
            "class": cols["class"],
            "kind": cols["kind"],
            "shape": cols["shape"],
            "diameter": _nullable_int(cols["diameter"]),
            "width": _nullable_int(cols["width"]),
            "height": _nullable_int(cols["height"]),
            "start_invert": cols["start_invert"].astype(float),
            "end_invert": cols["end_invert"].astype(float),
            "slope": cols["slope"].astype(float),
            "length": cols["length"].astype(float),
            "material": cols["material"],
            "year": cols["year"].astype("int32"),
            "road": cols["road"],
        },
        geometry=geom,
        crs=CRS,
    )
    return nodes, pipes, info


def _nullable_int(values: np.ndarray):  # noqa: ANN202 - pandas extension array
    import pandas as pd

    return pd.array([None if v is None else int(v) for v in values], dtype="Int32")
