"""Quick static ponding: where a given rain depth stands once it has run off (fill–spill).

No time stepping: rain on every cell runs down the steepest-descent path (4-neighbour, like
the surface model) into a depression, a depression fills to its spill level, then overflows
into the neighbouring one, and depressions that fill past the level where they meet merge into
one pool (the fill–spill–merge idea of Barnes, Callaghan and Wickert, 2020).

The depression hierarchy comes from a priority flood (cells in rising order joined with a
union–find): every local minimum starts a leaf basin, a cell touching two basins merges them
at its height, and on an open domain edge cells touch the outside, a basin of infinite room.
Water is then poured bottom-up through that tree. Runs in O(N log N) with numba.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
from scipy import ndimage

from twin.model import InvalidInput

OUT = 0  # node 0 is the outside of an open domain
SIDES = ("west", "east", "north", "south")
INF = np.inf


@dataclass
class Ponding:
    """Water depth per cell once the rain has settled, and where the rest went (m³)."""

    depth: np.ndarray
    level: np.ndarray
    rain_m3: float
    stored_m3: float
    outflow_m3: float

    def ponds(self, dx: float, min_depth: float = 0.05) -> list[dict]:
        """Connected wet areas deeper than `min_depth` somewhere: cells, area, volume, max depth."""
        labels, count = ndimage.label(self.depth > 0.0)
        out = []
        if count == 0:
            return out
        index = np.arange(1, count + 1)
        volume = ndimage.sum(self.depth, labels, index) * dx * dx
        deepest = ndimage.maximum(self.depth, labels, index)
        cells = ndimage.sum(np.ones_like(self.depth), labels, index)
        centre = ndimage.maximum_position(self.depth, labels, index)
        for k in np.nonzero(deepest > min_depth)[0]:
            out.append(
                {
                    "cells": int(cells[k]),
                    "area_m2": float(cells[k] * dx * dx),
                    "volume_m3": float(volume[k]),
                    "max_depth_m": float(deepest[k]),
                    "deepest_cell": [int(centre[k][0]), int(centre[k][1])],
                }
            )
        return sorted(out, key=lambda p: -p["volume_m3"])


@numba.njit(cache=True)
def _find(uf: np.ndarray, a: int) -> int:  # pragma: no cover - compiled
    root = a
    while uf[root] != root:
        root = uf[root]
    while uf[a] != root:
        nxt = uf[a]
        uf[a] = root
        a = nxt
    return root


@numba.njit(cache=True)
def _hierarchy(z: np.ndarray, order: np.ndarray, open_sides: np.ndarray):  # pragma: no cover - compiled
    """Build the depression tree: per cell the leaf its rain runs to and the node it joined;
    per node its parent, two children, the leaf each child's water enters by, and its room."""
    ny, nx = z.shape
    n = ny * nx
    zf = z.ravel()
    m = 2 * n + 2
    parent = np.full(m, -1, np.int64)
    child = np.full((m, 2), -1, np.int64)
    entry = np.full((m, 2), -1, np.int64)
    cap = np.full(m, INF)
    has_out = np.zeros(m, np.bool_)
    has_out[OUT] = True
    count = np.zeros(m, np.int64)
    sumz = np.zeros(m)
    uf = np.arange(m)
    leaf = np.full(n, -1, np.int64)
    owner = np.full(n, -1, np.int64)
    nodes = 1
    nb = np.empty(4, np.int64)
    roots = np.empty(5, np.int64)
    gate = np.empty(5, np.int64)  # a neighbour cell on each root's side (-1: the outside)
    for k in range(n):
        c = order[k]
        i, j = c // nx, c % nx
        zc = zf[c]
        cnt = 0
        if i > 0:
            nb[cnt] = c - nx
            cnt += 1
        if i < ny - 1:
            nb[cnt] = c + nx
            cnt += 1
        if j > 0:
            nb[cnt] = c - 1
            cnt += 1
        if j < nx - 1:
            nb[cnt] = c + 1
            cnt += 1
        edge = (
            (j == 0 and open_sides[0])
            or (j == nx - 1 and open_sides[1])
            or (i == 0 and open_sides[2])
            or (i == ny - 1 and open_sides[3])
        )
        low = -1
        nr = 0
        for q in range(cnt + (1 if edge else 0)):
            d = nb[q] if q < cnt else -1
            if d >= 0:
                if owner[d] < 0:
                    continue
                if low < 0 or zf[d] < zf[low]:
                    low = d
                r = _find(uf, owner[d])
            else:
                r = _find(uf, OUT)
            seen = False
            for s in range(nr):
                if roots[s] == r:
                    seen = True
            if not seen:
                roots[nr] = r
                gate[nr] = d
                nr += 1
        # the rain on this cell runs to its lowest processed neighbour, or out over the edge
        if low >= 0 and (not edge or zf[low] < zc):
            leaf[c] = leaf[low]
        elif edge:
            leaf[c] = OUT
        if nr == 0:  # a local minimum starts a leaf basin
            node = nodes
            nodes += 1
            leaf[c] = node
        else:
            node = roots[0]
            for s in range(1, nr):  # the cell is a spill point: merge the basins it touches
                new = nodes
                nodes += 1
                for side in range(2):
                    a = node if side == 0 else roots[s]
                    g = gate[0] if side == 0 else gate[s]
                    parent[a] = new
                    child[new, side] = a
                    uf[a] = new
                    if not has_out[a]:
                        cap[a] = count[a] * zc - sumz[a]
                    entry[new, side] = OUT if g < 0 else leaf[g]
                    count[new] += count[a]
                    sumz[new] += sumz[a]
                    has_out[new] = has_out[new] or has_out[a]
                node = new
        owner[c] = node
        count[node] += 1
        sumz[node] += zc
    return leaf, owner, parent[:nodes], child[:nodes], entry[:nodes], cap[:nodes]


@numba.njit(cache=True)
def _pour(runoff, parent, child, entry, cap):  # pragma: no cover - compiled
    """Fill the tree bottom-up (children have smaller ids than parents): water stored per node
    (with its descendants) and the part standing above the level where its children meet."""
    m = len(parent)
    stored = np.zeros(m)
    above = np.zeros(m)
    spill = np.zeros(m)
    for node in range(m):
        if child[node, 0] < 0:
            w = runoff[node]
        else:
            a, b = child[node, 0], child[node, 1]
            for side in range(2):  # a full child spills over the merge cell into its sibling
                src = a if side == 0 else b
                dst = b if side == 0 else a
                room = cap[dst] - stored[dst]
                if spill[src] > 0 and room > 0:
                    put = min(spill[src], room)
                    _push(entry[node, 1 - side], put, dst, stored, above, parent, child, entry, cap)
                    spill[src] -= put
            w = spill[a] + spill[b]
            stored[node] = stored[a] + stored[b]
        take = min(w, cap[node] - stored[node])
        stored[node] += take
        if child[node, 0] >= 0:
            above[node] += take
        spill[node] = w - take
    return stored, above


@numba.njit(cache=True)
def _push(start, amount, top, stored, above, parent, child, entry, cap):  # pragma: no cover - compiled
    """Pour `amount` in at leaf `start` within the subtree of `top`: fill, spill to the sibling
    through its entry leaf, or, with both siblings full, rise above their merge."""
    x = start
    while amount > 0:
        put = min(amount, cap[x] - stored[x])
        if put > 0:
            if child[x, 0] >= 0:
                above[x] += put
            y = x
            while True:
                stored[y] += put
                if y == top:
                    break
                y = parent[y]
            amount -= put
        if amount <= 0 or x == top:
            break
        p = parent[x]
        side = 0 if child[p, 0] == x else 1
        sib = child[p, 1 - side]
        x = entry[p, 1 - side] if stored[sib] < cap[sib] else p


@numba.njit(cache=True)
def _surface(zf, cells, starts, parent, child, stored, above):  # pragma: no cover - compiled
    """The free-surface level of each node holding one (a wet leaf, or water above a merge),
    then for each node the highest level over it (a pool above covers everything below)."""
    m = len(parent)
    direct_n = np.zeros(m, np.int64)
    direct_s = np.zeros(m)
    for node in range(m):
        for k in range(starts[node], starts[node + 1]):
            direct_n[node] += 1
            direct_s[node] += zf[cells[k]]
    total_n = direct_n.copy()
    total_s = direct_s.copy()
    level = np.full(m, -INF)
    for node in range(m):
        leafy = child[node, 0] < 0
        if not leafy:
            for side in range(2):
                total_n[node] += total_n[child[node, side]]
                total_s[node] += total_s[child[node, side]]
        if node == OUT or not ((leafy and stored[node] > 0) or (not leafy and above[node] > 0)):
            continue
        volume = stored[node]
        n = total_n[node] - direct_n[node]
        s = total_s[node] - direct_s[node]
        for k in range(starts[node], starts[node + 1]):
            zc = zf[cells[k]]
            if n > 0 and (volume + s) / n <= zc:
                break
            n += 1
            s += zc
        level[node] = (volume + s) / n
    for node in range(m - 1, -1, -1):
        if parent[node] >= 0 and level[parent[node]] > level[node]:
            level[node] = level[parent[node]]
    return level


def _open_sides(boundary: str | dict[str, str]) -> np.ndarray:
    spec = boundary if isinstance(boundary, dict) else dict.fromkeys(SIDES, boundary)
    if set(spec) - set(SIDES) or any(v not in ("open", "closed") for v in spec.values()):
        raise InvalidInput("ponding boundary must be 'open' or 'closed', or a dict of those by side")
    return np.array([spec.get(side, "closed") == "open" for side in SIDES])


def fill_spill(
    z: np.ndarray, dx: float, rain_mm: float | np.ndarray, *, boundary: str | dict[str, str] = "open"
) -> Ponding:
    """Settle `rain_mm` (uniform, or a grid of depths) on the bed `z` by fill–spill–merge.

    `boundary` is 'open' (water reaching the edge leaves), 'closed', or either per side
    (west, east, north, south), as in the surface model.
    """
    z = np.ascontiguousarray(z, dtype=np.float64)
    if z.ndim != 2 or z.size == 0:
        raise InvalidInput("the bed must be a non-empty 2D grid")
    if not np.all(np.isfinite(z)):
        raise InvalidInput("the bed holds non-finite heights (nodata?): fill or crop the DEM first")
    open_sides = _open_sides(boundary)
    rain = np.broadcast_to(np.asarray(rain_mm, dtype=np.float64), z.shape) / 1000.0
    if not np.all(np.isfinite(rain)) or np.any(rain < 0):
        raise InvalidInput("rain depth must be finite and not negative")
    area = dx * dx
    order = np.argsort(z.ravel(), kind="stable")
    leaf, owner, parent, child, entry, cap = _hierarchy(z, order, open_sides)
    runoff = np.bincount(leaf, weights=rain.ravel(), minlength=len(parent))  # m·cells
    stored, above = _pour(runoff, parent, child, entry, cap)
    cells = order[np.argsort(owner[order], kind="stable")]  # by node, rising within each
    starts = np.searchsorted(owner[cells], np.arange(len(parent) + 1))
    level = _surface(z.ravel(), cells, starts, parent, child, stored, above)
    water = np.maximum(level[owner] - z.ravel(), 0.0).reshape(z.shape)
    return Ponding(
        depth=water,
        level=np.where(water > 0, z + water, np.nan),
        rain_m3=float(rain.sum() * area),
        stored_m3=float(water.sum() * area),
        outflow_m3=float(stored[OUT]) * area,
    )
