"""Buildings inside parcels: slabs and towers for housing, podiums, towers, sheds, schools.

Each parcel use has a template (a grid of footprints of a typical size in the parcel's own
orthonormal frame); all parcels of a use are expanded at once with numpy, so the cost is a
handful of array operations whatever the district size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import shapely

from .addresses import street_addresses
from .frame import rng
from .layout import Layout, parcel_frame, running_count
from .names import compound_names
from .relief import polygon_array

# use: (footprint length, footprint depth, spacing along, spacing across, storey height)
TEMPLATES = {
    "slab": (46.0, 12.0, 54.0, 23.0, 2.9),
    "tower": (30.0, 16.0, 40.0, 36.0, 3.0),
    "commercial": (1e9, 1e9, 1e9, 1e9, 4.5),
    "office": (38.0, 28.0, 52.0, 50.0, 3.8),
    "industrial": (50.0, 28.0, 62.0, 42.0, 6.0),
    "school": (62.0, 16.0, 1e9, 1e9, 3.9),
    "hospital": (66.0, 24.0, 80.0, 1e9, 4.0),
    "utility": (36.0, 22.0, 48.0, 40.0, 6.0),
}
BUILDING_USE = {
    "slab": "residential",
    "tower": "residential",
    "commercial": "commercial",
    "office": "office",
    "industrial": "industrial",
    "school": "school",
    "hospital": "hospital",
    "utility": "utility",
}


@dataclass
class Buildings:
    """All buildings, current and cleared (the latter only existed before the present edition)."""

    table: pd.DataFrame  # bid, name, use, floors, height, year, parcel_id, parcel (index)
    geometry: np.ndarray
    cleared: np.ndarray  # bool: stood on a parcel that has since been cleared

    def current(self) -> tuple[pd.DataFrame, np.ndarray]:
        keep = ~self.cleared
        return self.table[keep].reset_index(drop=True), self.geometry[keep]


def _rects(origin: np.ndarray, eu: np.ndarray, en: np.ndarray, s0, s1, t0, t1) -> np.ndarray:
    s = np.stack([s0, s1, s1, s0], axis=1)
    t = np.stack([t0, t0, t1, t1], axis=1)
    pts = origin[:, None, :] + s[:, :, None] * eu[:, None, :] + t[:, :, None] * en[:, None, :]
    return polygon_array(pts)


def build_buildings(layout: Layout) -> Buildings:
    """Footprints with use, floors, height and year for every parcel that carries buildings."""
    g = rng(layout.frame.seed, "buildings")
    parcels = layout.parcels
    n = len(parcels.use)
    use = parcels.use.copy()
    # a parcel that is now cleared or under construction carried old housing before
    for role in ("planned", "ifc"):
        use[layout.facilities[role]] = "residential"
    kind = use.copy()
    newer = g.random(n) < 0.45
    kind[(use == "residential") & newer] = "tower"
    kind[(use == "residential") & ~newer] = "slab"
    origin, eu, en, rect = parcel_frame(parcels.quad, 8.0)
    width = rect[:, 1] - rect[:, 0]
    depth = rect[:, 3] - rect[:, 2]
    tmpl = np.array([TEMPLATES.get(k, (0.0, 0.0, 1.0, 1.0, 3.0)) for k in kind])
    has = np.isin(kind, list(TEMPLATES)) & (width > 12.0) & (depth > 10.0)
    # schools keep the front half for the sports ground
    t_lo = np.where(kind == "school", rect[:, 2] + depth * 0.45, rect[:, 2])
    depth_eff = rect[:, 3] - t_lo
    nu = np.where(has, np.maximum(1, np.floor(width / tmpl[:, 2])), 0).astype(int)
    nv = np.where(has, np.maximum(1, np.floor(depth_eff / tmpl[:, 3])), 0).astype(int)
    count = nu * nv
    p = np.repeat(np.arange(n), count)
    k = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
    a, b = k % nu[p], k // nu[p]
    cw = width[p] / nu[p]
    cd = depth_eff[p] / nv[p]
    bl = np.minimum(tmpl[p, 0], cw * 0.86)
    bd = np.minimum(tmpl[p, 1], cd * 0.72)
    slack_u = np.maximum(cw - bl, 0.0) * 0.35
    slack_v = np.maximum(cd - bd, 0.0) * 0.35
    cu = rect[p, 0] + (a + 0.5) * cw + g.uniform(-1, 1, len(p)) * slack_u
    cv = t_lo[p] + (b + 0.5) * cd + g.uniform(-1, 1, len(p)) * slack_v
    geom = _rects(origin[p], eu[p], en[p], cu - bl / 2, cu + bl / 2, cv - bd / 2, cv + bd / 2)
    bkind = kind[p]

    # L-shaped wings for schools, hospitals and a third of the shops
    wing = (bkind == "school") | (bkind == "hospital") | ((bkind == "commercial") & (g.random(len(p)) < 0.33))
    wing &= (bl > 30.0) & (bd > 10.0)
    wi = np.nonzero(wing)[0]
    room = rect[p[wi], 3] - (cv[wi] + bd[wi] / 2)
    wlen = np.minimum(room * 0.8, bd[wi] * 1.4)
    ok = wlen > 6.0
    wi, wlen = wi[ok], wlen[ok]
    ww = np.minimum(bl[wi] * 0.3, 18.0)
    left = cu[wi] - bl[wi] / 2
    wgeom = _rects(
        origin[p[wi]], eu[p[wi]], en[p[wi]], left, left + ww, cv[wi] + bd[wi] / 2 - 0.5, cv[wi] + bd[wi] / 2 + wlen
    )
    geom[wi] = shapely.normalize(shapely.union(geom[wi], wgeom, grid_size=0.01))

    # gate houses and substations: small, dropped from the 1:2000 map
    anc = has & np.isin(kind, ["slab", "tower", "commercial", "school", "industrial"]) & (g.random(n) < 0.3)
    ai = np.nonzero(anc)[0]
    s0 = rect[ai, 0] - 6.0
    t0 = rect[ai, 2] - 6.5
    ageom = _rects(
        origin[ai], eu[ai], en[ai], s0, s0 + g.uniform(4.0, 6.5, len(ai)), t0, t0 + g.uniform(3.5, 5.0, len(ai))
    )

    geom = np.concatenate([geom, ageom])
    p = np.concatenate([p, ai])
    bkind = np.concatenate([bkind, np.full(len(ai), "ancillary", dtype=object)])
    order = np.argsort(p, kind="stable")
    geom, p, bkind = geom[order], p[order], bkind[order]
    inside = shapely.within(geom, shapely.buffer(parcels.geometry, 0.01)[p])
    inside &= (bkind == "ancillary") | (shapely.area(geom) >= 60.0)  # only sheds are tiny
    geom, p, bkind = geom[inside], p[inside], bkind[inside]
    nb = len(p)

    floors = np.ones(nb, int)
    year = np.zeros(nb, int)
    m = bkind == "slab"
    floors[m] = g.integers(5, 8, m.sum())
    year[m] = g.integers(1982, 2006, m.sum())
    m = bkind == "tower"
    floors[m] = g.integers(11, 34, m.sum())
    year[m] = g.integers(2001, 2021, m.sum())
    m = bkind == "commercial"
    floors[m] = g.integers(2, 7, m.sum())
    year[m] = g.integers(1995, 2021, m.sum())
    m = bkind == "office"
    floors[m] = g.integers(8, 32, m.sum())
    year[m] = g.integers(1998, 2021, m.sum())
    m = bkind == "industrial"
    floors[m] = g.integers(1, 3, m.sum())
    year[m] = g.integers(1978, 2016, m.sum())
    m = bkind == "school"
    floors[m] = g.integers(3, 6, m.sum())
    year[m] = g.integers(1985, 2019, m.sum())
    m = bkind == "hospital"
    floors[m] = g.integers(5, 17, m.sum())
    year[m] = g.integers(1990, 2019, m.sum())
    m = bkind == "utility"
    floors[m] = g.integers(1, 3, m.sum())
    year[m] = g.integers(1988, 2012, m.sum())
    m = bkind == "ancillary"
    year[m] = g.integers(1990, 2021, m.sum())
    storey = np.array([TEMPLATES[k][4] if k in TEMPLATES else 3.2 for k in bkind])
    height = np.round(floors * storey + g.uniform(0.6, 1.8, nb), 1)

    cname = compound_names(g, np.array([BUILDING_USE.get(k, "utility") for k in kind]))
    cname[layout.facilities["water_plant"]] = "Chengbei Water Works"
    cname[layout.facilities["water_tower"]] = "Gaogang Water Tower"
    cname[layout.facilities["gas_station"]] = "Dongjiao Gas Regulator Station"
    seq = running_count(p)
    many = np.bincount(p, minlength=n)[p] > 1
    name = np.array(
        [
            (f"{cname[pi]} Bldg {s + 1}" if mm else cname[pi]) if k != "ancillary" else f"{cname[pi]} Gatehouse"
            for pi, s, mm, k in zip(p, seq, many, bkind, strict=True)
        ],
        dtype=object,
    )
    buse = np.array([BUILDING_USE.get(k, k) for k in bkind], dtype=object)
    cleared_parcels = [layout.facilities["planned"], layout.facilities["ifc"]]
    cleared = np.isin(p, cleared_parcels)
    year[cleared] = np.minimum(year[cleared], 1996)
    table = pd.DataFrame(
        {
            "bid": [f"B{i + 1:06d}" for i in range(nb)],
            "name": name,
            "address": street_addresses(layout.roads, geom),
            "use": buse,
            "floors": floors.astype("int32"),
            "height": height,
            "year": year.astype("int32"),
            "parcel_id": parcels.parcel_id[p],
            "parcel": p,
        }
    )
    return Buildings(table=table, geometry=geom, cleared=cleared)
