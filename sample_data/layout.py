"""Street grid, blocks and parcels of the demo district.

The grid is two families of straight streets, each line with its own spacing, slight tilt and
width, so that no two blocks are alike; some minor street segments are left out (T-junctions and
double blocks) and the river cuts the grid, with bridges only on the major streets. All geometry
comes from closed-form line intersections over numpy arrays, so a 20 km district costs the same
code path as a 2 km one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import shapely

from .frame import Frame, rng
from .names import street_names
from .relief import BANK_WIDTH, CHANNEL_HALF_WIDTH, Relief, polygon_array

ROAD_WIDTH = {"primary": 40.0, "secondary": 26.0}
BRANCH_WIDTHS = np.array([12.0, 14.0, 16.0])

# Zoning of blocks: base weight, plus weight near the centre, plus weight at the periphery.
ZONES = ("residential", "commercial", "office", "industrial", "school", "hospital", "park")
ZONE_W = np.array(
    [
        [0.56, 0.0, 0.05],  # residential
        [0.06, 0.14, 0.0],  # commercial
        [0.03, 0.10, 0.0],  # office
        [0.01, 0.0, 0.16],  # industrial
        [0.05, 0.0, 0.0],  # school
        [0.012, 0.0, 0.0],  # hospital
        [0.05, 0.0, 0.0],  # park
    ]
)
FRONTAGE = {"residential": 95.0, "commercial": 55.0, "office": 60.0, "industrial": 110.0}


@dataclass
class LineFamily:
    """Near-parallel straight streets: x = a + b (y - ref) for 'v', y = a + b (x - ref) for 'h'."""

    orient: str
    a: np.ndarray
    b: np.ndarray
    width: np.ndarray
    cls: np.ndarray
    virtual: np.ndarray
    name: np.ndarray
    street_id: np.ndarray


@dataclass
class RoadGraph:
    """Road centreline segments between junctions: the skeleton every network is laid along."""

    node_xy: np.ndarray  # (n, 2)
    u: np.ndarray
    v: np.ndarray
    road_id: np.ndarray
    street_id: np.ndarray
    name: np.ndarray
    cls: np.ndarray
    width: np.ndarray
    bridge: np.ndarray
    orient: np.ndarray

    @property
    def geometry(self) -> np.ndarray:
        return shapely.linestrings(np.stack([self.node_xy[self.u], self.node_xy[self.v]], axis=1))

    @property
    def length(self) -> np.ndarray:
        return np.hypot(*(self.node_xy[self.v] - self.node_xy[self.u]).T)

    def degree(self) -> np.ndarray:
        return np.bincount(np.concatenate([self.u, self.v]), minlength=len(self.node_xy))

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "road_id": self.road_id,
                "street_id": self.street_id,
                "name": self.name,
                "class": self.cls,
                "width": self.width,
                "bridge": self.bridge,
                "length": np.round(self.length, 2),
            }
        )


@dataclass
class Blocks:
    quad: np.ndarray  # (n, 4, 2) block quadrilateral before river clipping
    geometry: np.ndarray  # shapely polygons after clipping
    block_id: np.ndarray
    zone: np.ndarray
    clipped: np.ndarray


@dataclass
class Parcels:
    quad: np.ndarray  # (n, 4, 2): P00, P10, P11, P01
    geometry: np.ndarray
    parcel_id: np.ndarray
    block: np.ndarray  # index into Blocks
    use: np.ndarray
    name: np.ndarray


# ---------------------------------------------------------------------------------------------
# street lines


def _positions(g: np.random.Generator, start: float, length: float) -> np.ndarray:
    n = int(length / 100.0) + 4
    gaps = g.uniform(105.0, 165.0, n)
    pos = start + g.uniform(55.0, 95.0) + np.concatenate([[0.0], np.cumsum(gaps)])
    return pos[pos < start + length - 55.0]


def _line_family(
    g: np.random.Generator,
    orient: str,
    start: float,
    length: float,
    names: list[str],
    avoid: tuple[float, float] | None,
) -> LineFamily:
    pos = _positions(g, start, length)
    idx = np.arange(len(pos))
    cls = np.where(idx % 8 == 6, "primary", np.where(idx % 4 == 2, "secondary", "branch")).astype(object)
    if orient == "v" and not np.any(cls != "branch") and len(pos):
        cls[len(pos) // 2] = "primary"  # at least one bridge over the river
    width = np.where(cls == "branch", g.choice(BRANCH_WIDTHS, len(pos)), 0.0)
    width = np.where(
        cls == "primary", ROAD_WIDTH["primary"], np.where(cls == "secondary", ROAD_WIDTH["secondary"], width)
    )
    tilt_max = min(0.035, 30.0 / (length / 2.0))
    tilt = g.uniform(-tilt_max, tilt_max, len(pos))
    keep = np.ones(len(pos), bool)
    if avoid is not None:  # streets parallel to the river stay clear of its corridor
        lo = pos - np.abs(tilt) * length / 2.0 - width / 2.0
        hi = pos + np.abs(tilt) * length / 2.0 + width / 2.0
        keep = (hi < avoid[0]) | (lo > avoid[1])
    pos, cls, width, tilt = pos[keep], cls[keep], width[keep], tilt[keep]
    n = len(pos)
    a = np.concatenate([[start], pos, [start + length]])
    return LineFamily(
        orient=orient,
        a=a,
        b=np.concatenate([[0.0], tilt, [0.0]]),
        width=np.concatenate([[0.0], width, [0.0]]),
        cls=np.concatenate([["edge"], cls, ["edge"]]).astype(object),
        virtual=np.concatenate([[True], np.zeros(n, bool), [True]]),
        name=np.array([""] + names[:n] + [""], dtype=object),
        street_id=np.array([""] + [f"S{orient.upper()}{i + 1:03d}" for i in range(n)] + [""], dtype=object),
    )


def _intersect(va: np.ndarray, vb: np.ndarray, ha: np.ndarray, hb: np.ndarray, ref: tuple[float, float]) -> np.ndarray:
    """Crossing of x = va + vb (y - ry) with y = ha + hb (x - rx); arrays broadcast."""
    rx, ry = ref
    x = (va + vb * (ha - hb * rx - ry)) / (1.0 - vb * hb)
    y = ha + hb * (x - rx)
    return np.stack(np.broadcast_arrays(x, y), axis=-1)


def _shift(a: np.ndarray, b: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Move lines sideways by d metres (positive = +x for 'v' lines, +y for 'h' lines)."""
    return a + d * np.sqrt(1.0 + b * b)


# ---------------------------------------------------------------------------------------------
# the layout


@dataclass
class Layout:
    """The district's plan: street lines, road graph, blocks and parcels (buildings come later)."""

    frame: Frame
    relief: Relief
    vlines: LineFamily
    hlines: LineFamily
    roads: RoadGraph
    blocks: Blocks
    parcels: Parcels
    facilities: dict[str, int]  # role -> parcel index (water_plant, water_tower, gas_station, ifc, planned)


def build_layout(frame: Frame, relief: Relief) -> Layout:
    """Streets, road graph, blocks and parcels, deterministic in the frame's seed."""
    g = rng(frame.seed, "layout")
    river = relief.river
    band = river.band(frame.x0, frame.x1, CHANNEL_HALF_WIDTH + BANK_WIDTH + 15.0)
    vnames, hnames = street_names(g, 400)
    vl = _line_family(g, "v", frame.x0, frame.size, vnames, None)
    hl = _line_family(g, "h", frame.y0, frame.size, hnames, band)
    corridor = river.corridor(frame.x0 - 200.0, frame.x1 + 200.0)
    nodes = _intersect(vl.a[:, None], vl.b[:, None], hl.a[None, :], hl.b[None, :], frame.center)  # (nV, nH, 2)
    hm, vm = _merges(g, vl, hl, nodes, corridor)
    roads = _road_graph(vl, hl, nodes, hm, vm, corridor)
    blocks = _blocks(g, frame, vl, hl, hm, vm, corridor)
    parcels = _parcels(g, blocks)
    facilities = _facilities(frame, relief, parcels)
    return Layout(frame, relief, vl, hl, roads, blocks, parcels, facilities)


def _merges(
    g: np.random.Generator, vl: LineFamily, hl: LineFamily, nodes: np.ndarray, corridor: shapely.Polygon
) -> tuple[np.ndarray, np.ndarray]:
    """Which minor segments are left out, merging two cells into one block.

    hm[i, j]: cells (i, j) and (i+1, j) merge (the segment of v line i+1 between h lines j, j+1
    goes); vm[i, j]: cells (i, j) and (i, j+1) merge (the segment of h line j+1 between v lines
    i, i+1 goes). Every cell takes part in at most one merge, so the road graph stays connected.
    """
    nv, nh = len(vl.a), len(hl.a)
    ci, cj = np.meshgrid(np.arange(nv - 1), np.arange(nh - 1), indexing="ij")
    cell_quads = np.stack([nodes[:-1, :-1], nodes[1:, :-1], nodes[1:, 1:], nodes[:-1, 1:]], axis=2)
    river_cell = shapely.intersects(polygon_array(cell_quads.reshape(-1, 4, 2)), corridor).reshape(nv - 1, nh - 1)
    interior = (ci > 0) & (ci < nv - 2) & (cj > 0) & (cj < nh - 2) & ~river_cell
    hm = interior[:-1] & interior[1:] & ((ci[:-1] + cj[:-1]) % 2 == 0)
    hm &= (vl.cls[1:-1] == "branch")[:, None]
    hm &= g.random(hm.shape) < 0.2
    in_h = np.zeros_like(interior)
    in_h[:-1] |= hm
    in_h[1:] |= hm
    vm = interior[:, :-1] & interior[:, 1:] & ~in_h[:, :-1] & ~in_h[:, 1:] & ((cj[:, :-1] % 2) == (ci[:, :-1] % 2))
    vm &= (hl.cls[1:-1] == "branch")[None, :]
    vm &= g.random(vm.shape) < 0.15
    return hm, vm


def _road_graph(
    vl: LineFamily, hl: LineFamily, nodes: np.ndarray, hm: np.ndarray, vm: np.ndarray, corridor: shapely.Polygon
) -> RoadGraph:
    """Segments between crossings; the river cuts minor streets and is bridged by major ones."""
    nv, nh = len(vl.a), len(hl.a)
    node_index = np.arange(nv * nh).reshape(nv, nh)
    vseg_keep = np.ones((nv, nh - 1), bool)  # segment of v line i between h j and j+1
    vseg_keep[[0, -1], :] = False
    vseg_keep[1:-1] &= ~hm
    hseg_keep = np.ones((nv - 1, nh), bool)  # segment of h line j between v i and i+1
    hseg_keep[:, [0, -1]] = False
    hseg_keep[:, 1:-1] &= ~vm
    vi, vj = np.nonzero(vseg_keep)
    hi, hj = np.nonzero(hseg_keep)
    seg = {
        "u": np.concatenate([node_index[vi, vj], node_index[hi, hj]]),
        "v": np.concatenate([node_index[vi, vj + 1], node_index[hi + 1, hj]]),
        "line": np.concatenate([vi, hj]),
        "orient": np.concatenate([np.full(len(vi), "v"), np.full(len(hi), "h")]).astype(object),
        "cls": np.concatenate([vl.cls[vi], hl.cls[hj]]),
        "width": np.concatenate([vl.width[vi], hl.width[hj]]),
        "name": np.concatenate([vl.name[vi], hl.name[hj]]),
        "street_id": np.concatenate([vl.street_id[vi], hl.street_id[hj]]),
    }
    seg["bridge"] = np.zeros(len(seg["u"]), bool)
    node_xy = nodes.reshape(-1, 2).copy()

    geom = shapely.linestrings(np.stack([node_xy[seg["u"]], node_xy[seg["v"]]], axis=1))
    extra_xy: list[np.ndarray] = []
    rows: list[tuple[int, int, int, bool]] = []  # (u, v, segment it replaces, bridge)
    drop = np.zeros(len(seg["u"]), bool)
    for s in np.nonzero(shapely.intersects(geom, corridor))[0]:
        outside = shapely.get_parts(shapely.difference(geom[s], corridor))
        if len(outside) < 2:
            continue  # only touches the corridor: keep as it is
        drop[s] = True
        pu, pv = node_xy[seg["u"][s]], node_xy[seg["v"][s]]
        direction = (pv - pu) / np.hypot(*(pv - pu))
        outside = sorted(outside, key=lambda p: float(np.dot(np.asarray(p.coords)[0] - pu, direction)))
        first, last = np.asarray(outside[0].coords), np.asarray(outside[-1].coords)
        cut_a = first[-1] if np.allclose(first[0], pu) else first[0]
        cut_b = last[0] if np.allclose(last[-1], pv) else last[-1]
        na = len(node_xy) + len(extra_xy)
        extra_xy += [cut_a, cut_b]
        rows += [(int(seg["u"][s]), na, int(s), False), (na + 1, int(seg["v"][s]), int(s), False)]
        if seg["cls"][s] != "branch":
            rows.append((na, na + 1, int(s), True))
    if rows:
        node_xy = np.vstack([node_xy, np.array(extra_xy)])
        t = np.array([r[2] for r in rows])
        for key in seg:
            seg[key] = np.concatenate([seg[key][~drop], seg[key][t]])
        n_keep = int((~drop).sum())
        seg["u"][n_keep:] = [r[0] for r in rows]
        seg["v"][n_keep:] = [r[1] for r in rows]
        seg["bridge"][n_keep:] = [r[3] for r in rows]

    # order segments along their street, compact node numbering, stable ids
    mid = (node_xy[seg["u"]] + node_xy[seg["v"]]) / 2.0
    along = np.where(seg["orient"] == "v", mid[:, 1], mid[:, 0])
    order = np.lexsort((along, seg["line"], seg["orient"] == "h"))
    used, inverse = np.unique(np.concatenate([seg["u"][order], seg["v"][order]]), return_inverse=True)
    n = len(order)
    return RoadGraph(
        node_xy=node_xy[used],
        u=inverse[:n],
        v=inverse[n:],
        road_id=np.array([f"R{i + 1:05d}" for i in range(n)], dtype=object),
        street_id=seg["street_id"][order],
        name=seg["name"][order],
        cls=seg["cls"][order],
        width=seg["width"][order],
        bridge=seg["bridge"][order],
        orient=seg["orient"][order],
    )


def _blocks(
    g: np.random.Generator,
    frame: Frame,
    vl: LineFamily,
    hl: LineFamily,
    hm: np.ndarray,
    vm: np.ndarray,
    corridor: shapely.Polygon,
) -> Blocks:
    """One block per cell or merged pair of cells, inset by half the street widths, cut by the
    river corridor, and zoned: more commerce near the centre, industry at the edge."""
    nv, nh = len(vl.a), len(hl.a)
    ref = frame.center
    owner = np.arange((nv - 1) * (nh - 1)).reshape(nv - 1, nh - 1)
    right = np.tile(np.arange(1, nv)[:, None], (1, nh - 1))
    top = np.tile(np.arange(1, nh)[None, :], (nv - 1, 1))
    hi, hj = np.nonzero(hm)
    owner[hi + 1, hj] = -1
    right[hi, hj] = hi + 2
    vi, vj = np.nonzero(vm)
    owner[vi, vj + 1] = -1
    top[vi, vj] = vj + 2
    bi, bj = np.nonzero(owner >= 0)
    br, bt = right[bi, bj], top[bi, bj]
    left_a = _shift(vl.a[bi], vl.b[bi], vl.width[bi] / 2.0)
    right_a = _shift(vl.a[br], vl.b[br], -vl.width[br] / 2.0)
    bot_a = _shift(hl.a[bj], hl.b[bj], hl.width[bj] / 2.0)
    top_a = _shift(hl.a[bt], hl.b[bt], -hl.width[bt] / 2.0)
    quad = np.stack(
        [
            _intersect(left_a, vl.b[bi], bot_a, hl.b[bj], ref),
            _intersect(right_a, vl.b[br], bot_a, hl.b[bj], ref),
            _intersect(right_a, vl.b[br], top_a, hl.b[bt], ref),
            _intersect(left_a, vl.b[bi], top_a, hl.b[bt], ref),
        ],
        axis=1,
    )
    bpoly = polygon_array(quad)
    clipped = shapely.intersects(bpoly, corridor)
    bpoly[clipped] = shapely.difference(bpoly[clipped], corridor)
    parts, part_of = shapely.get_parts(bpoly, return_index=True)
    ok = shapely.area(parts) > 1500.0
    parts, part_of = parts[ok], part_of[ok]
    nb = len(parts)
    cxy = shapely.get_coordinates(shapely.centroid(parts))
    r = np.clip(np.hypot(cxy[:, 0] - ref[0], cxy[:, 1] - ref[1]) / (frame.size / 2.0), 0.0, 1.0)[:, None]
    w = ZONE_W[:, 0][None, :] + ZONE_W[:, 1][None, :] * (1.0 - r) ** 2 + ZONE_W[:, 2][None, :] * r**2
    cum = np.cumsum(w / w.sum(axis=1, keepdims=True), axis=1)
    zone = np.array(ZONES, dtype=object)[np.minimum((cum < g.random(nb)[:, None]).sum(axis=1), len(ZONES) - 1)]
    zone[clipped[part_of] & (zone == "industrial")] = "park"
    return Blocks(
        quad=quad[part_of],
        geometry=parts,
        block_id=np.array([f"K{i + 1:05d}" for i in range(nb)], dtype=object),
        zone=zone,
        clipped=clipped[part_of],
    )


# ---------------------------------------------------------------------------------------------
# parcels


def _split_fractions(g: np.random.Generator, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per block, counts+1 jittered boundaries in [0, 1]; returns (boundaries, offsets)."""
    offs = np.concatenate([[0], np.cumsum(counts + 1)])
    owner = np.repeat(np.arange(len(counts)), counts + 1)
    k = np.arange(offs[-1]) - offs[owner]
    n = counts[owner]
    jitter = g.uniform(-0.12, 0.12, offs[-1]) / n
    frac = (k + np.where((k == 0) | (k == n), 0.0, jitter)) / n
    return frac, offs


def _bilinear(quad: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    p00, p10, p11, p01 = quad[:, 0], quad[:, 1], quad[:, 2], quad[:, 3]
    u = u[:, None]
    v = v[:, None]
    return (1 - u) * (1 - v) * p00 + u * (1 - v) * p10 + u * v * p11 + (1 - u) * v * p01


def _parcels(g: np.random.Generator, blocks: Blocks) -> Parcels:
    q = blocks.quad
    lu = np.hypot(*(q[:, 1] - q[:, 0]).T)
    lv = np.hypot(*(q[:, 3] - q[:, 0]).T)
    long_is_u = lu >= lv
    l_long = np.where(long_is_u, lu, lv)
    l_short = np.where(long_is_u, lv, lu)
    frontage = np.array([FRONTAGE.get(z, 1e9) for z in blocks.zone])
    whole = np.isin(blocks.zone, ["school", "hospital", "park"])
    n_long = np.where(
        whole, np.maximum(1, np.round(l_long / 180.0)), np.maximum(1, np.round(l_long / frontage))
    ).astype(int)
    n_short = np.where((l_short > 120.0) & ~whole, 2, 1).astype(int)
    fl, ol = _split_fractions(g, n_long)
    fs, os_ = _split_fractions(g, n_short)
    count = n_long * n_short
    pb = np.repeat(np.arange(len(q)), count)
    k = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
    kl, ks = k // n_short[pb], k % n_short[pb]
    a0, a1 = fl[ol[pb] + kl], fl[ol[pb] + kl + 1]
    b0, b1 = fs[os_[pb] + ks], fs[os_[pb] + ks + 1]
    lu_ = long_is_u[pb]
    u0, u1 = np.where(lu_, a0, b0), np.where(lu_, a1, b1)
    v0, v1 = np.where(lu_, b0, a0), np.where(lu_, b1, a1)
    bq = q[pb]
    pquad = np.stack(
        [_bilinear(bq, u0, v0), _bilinear(bq, u1, v0), _bilinear(bq, u1, v1), _bilinear(bq, u0, v1)], axis=1
    )
    geom = polygon_array(pquad)
    clip = blocks.clipped[pb]
    geom[clip] = shapely.intersection(geom[clip], blocks.geometry[pb[clip]])
    # keep the largest part of each clipped parcel and drop slivers
    parts, idx = shapely.get_parts(geom, return_index=True)
    parts_area = shapely.area(parts)
    best = pd.Series(parts_area).groupby(idx).idxmax().to_numpy()
    geom = parts[best]
    keep_idx = np.unique(idx)
    ok = shapely.area(geom) > 600.0
    sel = keep_idx[ok]
    geom = geom[ok]
    pb, pquad, ks, kl = pb[sel], pquad[sel], ks[sel], kl[sel]

    use = blocks.zone[pb].copy()
    r = g.random(len(pb))
    use[(use == "residential") & (r < 0.08)] = "commercial"
    use[(use == "commercial") & (r > 0.85)] = "office"
    # schools and hospitals take the first parcel of their block; the rest of the block is housing
    first = np.r_[True, pb[1:] != pb[:-1]]
    special = np.isin(use, ["school", "hospital"]) & ~first
    use[special] = "residential"
    n = len(pb)
    block_code = blocks.block_id[pb]
    lot = running_count(pb)
    names = np.array([f"Plot {int(c[1:])}-{k + 1:02d}" for c, k in zip(block_code, lot, strict=True)], dtype=object)
    return Parcels(
        quad=pquad,
        geometry=geom,
        parcel_id=np.array([f"P{i + 1:06d}" for i in range(n)], dtype=object),
        block=pb,
        use=use,
        name=names,
    )


def running_count(group: np.ndarray) -> np.ndarray:
    """0, 1, 2, ... within runs of equal values of a sorted group array."""
    start = np.r_[0, np.nonzero(group[1:] != group[:-1])[0] + 1]
    lengths = np.diff(np.r_[start, len(group)])
    return np.arange(len(group)) - np.repeat(start, lengths)


def parcel_frame(quad: np.ndarray, margin: np.ndarray | float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Orthonormal frame per parcel (origin, u axis, n axis) and the usable rectangle inside it.

    Returns origin (n,2), e_u (n,2), e_n (n,2), rect (n,4) = s0, s1, t0, t1 in metres.
    """
    p00 = quad[:, 0]
    eu = quad[:, 1] - p00
    eu = eu / np.hypot(*eu.T)[:, None]
    en = np.column_stack([-eu[:, 1], eu[:, 0]])
    rel = quad - p00[:, None, :]
    s = np.einsum("nkd,nd->nk", rel, eu)
    t = np.einsum("nkd,nd->nk", rel, en)
    m = np.broadcast_to(np.asarray(margin, dtype=float), (len(quad),))
    rect = np.column_stack(
        [
            np.maximum(s[:, 0], s[:, 3]) + m,
            np.minimum(s[:, 1], s[:, 2]) - m,
            np.maximum(t[:, 0], t[:, 1]) + m,
            np.minimum(t[:, 2], t[:, 3]) - m,
        ]
    )
    return p00, eu, en, rect


def _facilities(frame: Frame, relief: Relief, parcels: Parcels) -> dict[str, int]:
    """Pick the parcels of the utilities, the BIM site and the planned scheme, deterministically."""
    c = shapely.get_coordinates(shapely.centroid(parcels.geometry))
    area = shapely.area(parcels.geometry)
    _, _, _, rect = parcel_frame(parcels.quad, 8.0)
    usable_w, usable_d = rect[:, 1] - rect[:, 0], rect[:, 3] - rect[:, 2]
    roomy = (usable_w > 50.0) & (usable_d > 36.0) & (area > 3500.0)
    ordinary = np.isin(parcels.use, ["residential", "commercial", "office", "industrial"])
    taken: set[int] = set()

    def pick(score: np.ndarray, mask: np.ndarray) -> int:
        score = np.where(mask, score, np.inf)
        score[list(taken)] = np.inf
        i = int(np.argmin(score))
        taken.add(i)
        return i

    cx, cy = frame.center
    ry = float(relief.river.centre_y(np.array([frame.x0]))[0])
    natural = relief.natural(c[:, 0], c[:, 1])
    core = frame.core_bbox
    in_core = (c[:, 0] > core[0] + 60) & (c[:, 0] < core[2] - 60) & (c[:, 1] > core[1] + 60) & (c[:, 1] < core[3] - 60)
    facilities = {
        "water_plant": pick(np.hypot(c[:, 0] - frame.x0, c[:, 1] - (ry + 0.12 * frame.size)), roomy & ordinary),
        "water_tower": pick(-natural, ordinary & (area > 2500.0)),
        "gas_station": pick(np.hypot(c[:, 0] - frame.x1, c[:, 1] - (frame.y0 + 0.15 * frame.size)), roomy & ordinary),
        "ifc": pick(
            np.hypot(c[:, 0] - (cx + 0.12 * frame.size), c[:, 1] - (cy + 0.05 * frame.size)), roomy & ordinary & in_core
        ),
        "planned": pick(
            np.hypot(c[:, 0] - (cx - 0.1 * frame.size), c[:, 1] - (cy + 0.1 * frame.size)), roomy & ordinary & in_core
        ),
    }
    for role in ("water_plant", "water_tower", "gas_station"):
        parcels.use[facilities[role]] = "utility"
    parcels.use[facilities["ifc"]] = "construction"
    parcels.use[facilities["planned"]] = "vacant"
    parcels.name[facilities["water_plant"]] = "Chengbei Water Works"
    parcels.name[facilities["water_tower"]] = "Gaogang Water Tower"
    parcels.name[facilities["gas_station"]] = "Dongjiao Gas Regulator Station"
    parcels.name[facilities["ifc"]] = "Plot " + parcels.name[facilities["ifc"]][5:] + " Qinhuai Community Centre"
    parcels.name[facilities["planned"]] = "Plot " + parcels.name[facilities["planned"]][5:] + " Xiguan Renewal Site"
    return facilities
