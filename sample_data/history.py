"""Editions of the 1:500 buildings (2015 and current) and the planned scheme (2024).

Between 2015-01-01 and 2021-06-01 about 5 % of the core's buildings were pulled down (most of
them replaced on the same site, plus the two parcels since cleared), about 5 % of today's
buildings are new, and about 5 % gained storeys. Buildings that persist keep their `bid`, so
a store can version them; the manifest lists exactly which bids changed how.
"""

from __future__ import annotations

from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from .addresses import street_addresses
from .buildings import Buildings
from .frame import CRS, Frame, rng
from .layout import Layout, parcel_frame
from .relief import polygon_array


@dataclass
class History:
    edition_2015: gpd.GeoDataFrame
    planned: gpd.GeoDataFrame
    demolished: list[str]
    new: list[str]
    changed: list[str]


def _core_mask(frame: Frame, geometry: np.ndarray) -> np.ndarray:
    return shapely.contains(shapely.box(*frame.core_bbox), shapely.centroid(geometry))


def apply_history(layout: Layout, buildings: Buildings) -> History:
    """Choose what changed since 2015 (updating the years of new buildings in place) and build
    the 2015 edition and the planned buildings."""
    frame = layout.frame
    g = rng(frame.seed, "history")
    t = buildings.table
    core = _core_mask(frame, buildings.geometry)
    current = core & ~buildings.cleared
    eligible = np.nonzero(current & ~t["use"].isin(["ancillary", "utility", "hospital"]).to_numpy())[0]
    n_cur = int(current.sum())
    n_new = max(1, int(round(0.05 * n_cur)))
    new_idx = np.sort(g.choice(eligible, n_new, replace=False))
    rest = np.setdiff1d(eligible, new_idx)
    n_chg = max(1, int(round(0.05 * n_cur)))
    chg_idx = np.sort(g.choice(rest, n_chg, replace=False))
    t.loc[new_idx, "year"] = g.integers(2015, 2022, n_new).astype("int32")

    # 2015: persistent buildings (changed ones lower), predecessors of most new ones, cleared ones
    persist = np.setdiff1d(np.nonzero(current)[0], new_idx)
    old = t.loc[persist].copy()
    old_geom = buildings.geometry[persist]
    fewer = np.minimum(g.integers(1, 4, n_chg), t.loc[chg_idx, "floors"].to_numpy() - 1)
    fewer = np.maximum(fewer, 0)
    pos = np.searchsorted(persist, chg_idx)
    f_now = old["floors"].to_numpy()[pos]
    h_now = old["height"].to_numpy()[pos]
    f_old = f_now - fewer
    h_old = np.where(fewer > 0, np.round(h_now * f_old / f_now, 1), np.round(h_now - 1.5, 1))
    old.iloc[pos, old.columns.get_loc("floors")] = f_old.astype("int32")
    old.iloc[pos, old.columns.get_loc("height")] = h_old

    replaced = new_idx[g.random(n_new) < 0.7]
    nb = len(t)
    pred_ids = [f"B{nb + k + 1:06d}" for k in range(len(replaced))]
    cen = shapely.get_coordinates(shapely.centroid(buildings.geometry[replaced]))
    coords, idx = shapely.get_coordinates(shapely.get_exterior_ring(buildings.geometry[replaced]), return_index=True)
    shrunk = cen[idx] + (coords - cen[idx]) * 0.8
    pred_geom = shapely.polygons(shapely.linearrings(shrunk, indices=idx))
    pred = pd.DataFrame(
        {
            "bid": pred_ids,
            "name": [f"{n} (old)" for n in t.loc[replaced, "name"]],
            "address": t.loc[replaced, "address"].to_numpy(),
            "use": t.loc[replaced, "use"].to_numpy(),
            "floors": g.integers(2, 7, len(replaced)).astype("int32"),
            "height": 0.0,
            "year": g.integers(1958, 1992, len(replaced)).astype("int32"),
            "parcel_id": t.loc[replaced, "parcel_id"].to_numpy(),
        }
    )
    pred["height"] = np.round(pred["floors"] * 3.0 + 1.0, 1)
    cleared = np.nonzero(core & buildings.cleared)[0]
    gone = t.loc[cleared].copy()
    cols = ["bid", "name", "address", "use", "floors", "height", "year", "parcel_id"]
    ed = pd.concat([old[cols], pred[cols], gone[cols]], ignore_index=True)
    ed_geom = np.concatenate([old_geom, pred_geom, buildings.geometry[cleared]])
    order = np.argsort(ed["bid"].to_numpy(), kind="stable")
    edition = gpd.GeoDataFrame(ed.iloc[order].reset_index(drop=True), geometry=ed_geom[order], crs=CRS)

    planned = _planned(layout, g, first_number=nb + len(replaced) + 1)
    return History(
        edition_2015=edition,
        planned=planned,
        demolished=sorted(pred_ids + list(t.loc[cleared, "bid"])),
        new=sorted(t.loc[new_idx, "bid"]),
        changed=sorted(t.loc[chg_idx, "bid"]),
    )


def _planned(layout: Layout, g: np.random.Generator, first_number: int) -> gpd.GeoDataFrame:
    """Three towers and a podium on the cleared renewal parcel."""
    p = layout.facilities["planned"]
    quad = layout.parcels.quad[p : p + 1]
    origin, eu, en, rect = parcel_frame(quad, 10.0)
    s0, s1, t0, t1 = rect[0]
    w, d = s1 - s0, t1 - t0
    tw = min(26.0, w / 3.6)
    td = min(22.0, d * 0.45)
    specs = [
        (s0, s0 + tw, t1 - td, t1, "residential", 28),
        (s0 + (w - tw) / 2, s0 + (w + tw) / 2, t1 - td, t1, "residential", 32),
        (s1 - tw, s1, t1 - td, t1, "residential", 26),
        (s0, s1, t0, t0 + min(18.0, d * 0.35), "commercial", 3),
    ]
    rects = []
    for a0, a1, b0, b1, _, _ in specs:
        pts = origin[0] + np.outer([a0, a1, a1, a0], eu[0]) + np.outer([b0, b0, b1, b1], en[0])
        rects.append(pts)
    geom = polygon_array(np.array(rects))
    floors = np.array([s[5] for s in specs], dtype="int32")
    use = [s[4] for s in specs]
    height = np.round(floors * np.where(np.array(use) == "commercial", 4.5, 3.0) + 1.5, 1)
    name = layout.parcels.name[p].split(" ", 2)[-1]
    return gpd.GeoDataFrame(
        {
            "bid": [f"B{first_number + k:06d}" for k in range(len(specs))],
            "name": [f"{name} Tower {k + 1}" for k in range(3)] + [f"{name} Podium"],
            "address": [f"{a} (planned)" for a in street_addresses(layout.roads, geom)],
            "use": use,
            "floors": floors,
            "height": height,
            "year": np.full(len(specs), 2027, dtype="int32"),
            "parcel_id": layout.parcels.parcel_id[p],
            "status": "planned",
        },
        geometry=geom,
        crs=CRS,
    )
