"""The basemap at three scales, each band really generalised from the one below.

1:500 (urban core): every building and road surface as surveyed. 1:2000 (district): footprints
simplified and small buildings dropped, roads as merged street centrelines with short dead-end
stubs dropped, land use per block. 1:10000 (district and countryside ring): built-up blocks
instead of buildings, main roads only, land use dissolved by class.
"""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from .countryside import Countryside
from .features import LANDUSE, DetailLayers
from .frame import CRS, Frame
from .layout import Layout

SCALE_BANDS = {"500": "1:500", "2000": "1:2000", "10000": "1:10000"}


def _gdf(data: dict, geometry: np.ndarray) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(pd.DataFrame(data), geometry=np.asarray(geometry), crs=CRS)


def _clip(gdf: gpd.GeoDataFrame, box: shapely.Polygon) -> gpd.GeoDataFrame:
    """Features cut to the box (area and line layers of the core map)."""
    hit = shapely.intersects(gdf.geometry.values, box)
    out = gdf[hit].copy()
    out = out.set_geometry(shapely.intersection(out.geometry.values, box), crs=gdf.crs)
    return out[~out.geometry.is_empty].reset_index(drop=True)


def _polygons_only(gdf: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """Keep the polygonal parts of clipped features (one feature each, so ids stay unique)."""
    parts, idx = shapely.get_parts(gdf.geometry.values, return_index=True)
    poly = shapely.get_type_id(parts) == 3
    parts, idx = parts[poly], idx[poly]
    keep = np.unique(idx)
    merged = shapely.multipolygons(parts, indices=np.searchsorted(keep, idx))
    single = np.bincount(idx, minlength=len(gdf))[keep] == 1
    first = np.r_[0, np.cumsum(np.bincount(idx)[keep])[:-1]]
    geom = np.where(single, parts[first], merged)
    out = gdf.iloc[keep].copy()
    return out.set_geometry(geom, crs=gdf.crs).reset_index(drop=True)


def band_500(frame: Frame, details: DetailLayers) -> dict[str, gpd.GeoDataFrame]:
    """1:500: the urban core as surveyed; buildings and parcels whole, other layers cut."""
    box = shapely.box(*frame.core_bbox)
    b = details.buildings
    inside = shapely.contains(box, shapely.centroid(b.geometry.values))
    p = details.parcels
    pin = shapely.contains(box, shapely.centroid(p.geometry.values))
    return {
        "buildings": b[inside].reset_index(drop=True),
        "roads": _polygons_only(_clip(details.roads, box)),
        "road_centrelines": _clip(details.centrelines, box),
        "water": _polygons_only(_clip(details.water, box)),
        "green": _polygons_only(_clip(details.green, box)),
        "landuse": _polygons_only(_clip(details.landuse, box)),
        "parcels": p[pin].reset_index(drop=True),
    }


def merged_streets(details: DetailLayers, classes: tuple[str, ...], min_stub: float) -> gpd.GeoDataFrame:
    """One line per street (segments merged); dead-end pieces shorter than min_stub dropped."""
    c = details.centrelines
    c = c[c["class"].isin(classes)]
    geom = c.geometry.values
    coords = shapely.get_coordinates(geom)
    key = np.round(coords, 2)
    _, inv, cnt = np.unique(key, axis=0, return_inverse=True, return_counts=True)
    ends = cnt[inv.ravel()].reshape(-1, 2)
    dead = (ends == 1).any(axis=1)
    keep = ~(dead & (c["length"].to_numpy() < min_stub) & (c["class"].to_numpy() == "branch"))
    c = c[keep].sort_values("street_id", kind="stable")
    codes, streets = pd.factorize(c["street_id"], sort=True)
    lines = shapely.line_merge(shapely.multilinestrings(c.geometry.values, indices=codes))
    first = c.groupby("street_id", sort=True).first()
    return _gdf(
        {
            "street_id": streets.to_numpy(),
            "name": first["name"].to_numpy(),
            "class": first["class"].to_numpy(),
            "width": first["width"].to_numpy(),
            "length": np.round(shapely.length(lines), 1),
        },
        lines,
    )


def band_2000(layout: Layout, details: DetailLayers) -> dict[str, gpd.GeoDataFrame]:
    """1:2000: the whole district, generalised."""
    b = details.buildings
    geom = b.geometry.values
    area = shapely.area(geom)
    big = (area >= 40.0) & (b["use"].to_numpy() != "ancillary")
    simple = shapely.simplify(geom[big], 1.5)
    rect = shapely.oriented_envelope(simple)
    nearly_rect = shapely.area(simple) / shapely.area(rect) > 0.8
    simple = np.where(nearly_rect, rect, simple)
    bld = b[big].copy().set_geometry(simple, crs=CRS).reset_index(drop=True)
    # land use per block: the use covering most of the block
    p = details.parcels
    blocks = layout.blocks
    a = pd.DataFrame({"block": p["block_id"], "landuse": [LANDUSE[u] for u in p["use"]], "area": p["area"]})
    dom = a.sort_values(["block", "area"], ascending=[True, False]).groupby("block", sort=True).first()
    bidx = pd.Series(np.arange(len(blocks.block_id)), index=blocks.block_id)
    lu_geom = shapely.simplify(blocks.geometry[bidx[dom.index].to_numpy()], 1.0)
    landuse = _gdf({"lid": dom.index.to_numpy(), "landuse": dom["landuse"].to_numpy()}, lu_geom)
    green = details.green
    green = green[shapely.area(green.geometry.values) >= 2000.0].copy()
    green = green.set_geometry(shapely.simplify(green.geometry.values, 2.0), crs=CRS).reset_index(drop=True)
    water = details.water.copy()
    water = water.set_geometry(shapely.simplify(water.geometry.values, 1.0), crs=CRS)
    return {
        "buildings": bld,
        "roads": merged_streets(details, ("primary", "secondary", "branch"), 80.0),
        "water": water,
        "green": green,
        "landuse": landuse,
    }


def band_10000(
    frame: Frame, layout: Layout, details: DetailLayers, country: Countryside
) -> dict[str, gpd.GeoDataFrame]:
    """1:10000: the district as built-up blocks and main roads, inside a ring of countryside."""
    b = details.buildings
    blocks = layout.blocks
    p = details.parcels
    pid_block = pd.Series(p["block_id"].to_numpy(), index=p["parcel_id"].to_numpy())
    t = pd.DataFrame(
        {
            "block": pid_block.reindex(b["parcel_id"]).to_numpy(),
            "use": b["use"].to_numpy(),
            "floors": b["floors"].to_numpy(),
            "height": b["height"].to_numpy(),
            "year": b["year"].to_numpy(),
            "fp": shapely.area(b.geometry.values),
        }
    )
    t = t[t["use"] != "ancillary"]
    t["hfp"] = t["height"] * t["fp"]
    grp = t.groupby("block", sort=True)
    agg = pd.DataFrame(
        {
            "n_buildings": grp.size(),
            "floors": grp["floors"].median().round().astype("int32"),
            "height": (grp["hfp"].sum() / grp["fp"].sum()).round(1),
            "year": grp["year"].median().round().astype("int32"),
            "footprint": grp["fp"].sum(),
        }
    )
    use_area = (
        t.groupby(["block", "use"], sort=True)["fp"]
        .sum()
        .reset_index()
        .sort_values(["block", "fp"], ascending=[True, False])
    )
    agg["use"] = use_area.groupby("block", sort=True).first()["use"]
    bidx = pd.Series(np.arange(len(blocks.block_id)), index=blocks.block_id)
    bgeom = shapely.simplify(shapely.buffer(blocks.geometry[bidx[agg.index].to_numpy()], -3.0, join_style="mitre"), 3.0)
    agg["coverage"] = (agg["footprint"] / shapely.area(blocks.geometry[bidx[agg.index].to_numpy()])).round(2)
    town = _gdf(
        {
            "bid": agg.index.to_numpy(),
            "name": [f"Block {k[1:]}" for k in agg.index],
            "use": agg["use"].to_numpy(),
            "floors": agg["floors"].to_numpy(),
            "height": agg["height"].to_numpy(),
            "year": agg["year"].to_numpy(),
            "n_buildings": agg["n_buildings"].to_numpy().astype("int32"),
            "coverage": agg["coverage"].to_numpy(),
        },
        bgeom,
    )
    nv = len(country.villages)
    villages = _gdf(
        {
            "bid": [f"V{i + 1:05d}" for i in range(nv)],
            "name": country.village_name,
            "use": "residential",
            "floors": country.village_floors.astype("int32"),
            "height": np.round(country.village_floors * 3.2, 1),
            "year": np.full(nv, 1995, dtype="int32"),
            "n_buildings": np.full(nv, -1, dtype="int32"),
            "coverage": np.full(nv, 0.35),
        },
        shapely.simplify(country.villages, 5.0),
    )
    buildings = pd.concat([town, villages], ignore_index=True)

    streets = merged_streets(details, ("primary", "secondary"), 0.0)
    streets = streets.set_geometry(shapely.simplify(streets.geometry.values, 5.0), crs=CRS)
    country_roads = _gdf(
        {
            "street_id": [f"C{i + 1:03d}" for i in range(len(country.roads))],
            "name": country.road_name,
            "class": country.road_cls,
            "width": np.where(
                country.road_cls == "expressway", 32.0, np.where(country.road_cls == "primary", 24.0, 14.0)
            ),
            "length": np.round(shapely.length(country.roads), 1),
        },
        country.roads,
    )
    roads = pd.concat([streets, country_roads], ignore_index=True)

    # land use: town blocks dissolved by class, then the countryside parcels
    lu_town = pd.DataFrame({"landuse": [LANDUSE.get(u, u) for u in p["use"]], "block": p["block_id"]})
    dom = (
        lu_town.groupby(["block", "landuse"], sort=True)
        .size()
        .reset_index()
        .sort_values(["block", 0], ascending=[True, False])
    )
    dom = dom.groupby("block", sort=True).first()
    codes, classes = pd.factorize(dom["landuse"], sort=True)
    by_class = np.argsort(codes, kind="stable")
    block_geom = blocks.geometry[bidx[dom.index].to_numpy()][by_class]
    merged = shapely.buffer(
        shapely.buffer(shapely.multipolygons(block_geom, indices=codes[by_class]), 12.0, join_style="mitre"),
        -12.0,
        join_style="mitre",
    )
    merged = shapely.simplify(merged, 4.0)
    lu = _gdf({"landuse": classes.to_numpy()}, merged).explode(index_parts=False).reset_index(drop=True)
    lu = pd.concat(
        [lu, _gdf({"landuse": country.landuse}, shapely.simplify(country.landuse_geom, 4.0))], ignore_index=True
    )
    lu.insert(0, "lid", [f"L{i + 1:06d}" for i in range(len(lu))])

    green_town = details.green[shapely.area(details.green.geometry.values) >= 10000.0][
        ["gid", "kind", "name", "geometry"]
    ]
    woods = country.landuse == "forest"
    green = pd.concat(
        [
            green_town.set_geometry(shapely.simplify(green_town.geometry.values, 4.0), crs=CRS),
            _gdf(
                {"gid": [f"F{i + 1:05d}" for i in range(int(woods.sum()))], "kind": "forest", "name": ""},
                shapely.simplify(country.landuse_geom[woods], 4.0),
            ),
        ],
        ignore_index=True,
    )
    water = _gdf(
        {"wid": ["W001"], "name": ["Qinhuai River"], "kind": ["river"]}, [shapely.simplify(country.river, 3.0)]
    )
    ponds = country.landuse == "pond"
    pond_geom = shapely.buffer(country.landuse_geom[ponds], -15.0)
    pond_ok = ~shapely.is_empty(pond_geom)
    water = pd.concat(
        [
            water,
            _gdf(
                {"wid": [f"W{i + 2:03d}" for i in range(int(pond_ok.sum()))], "name": "", "kind": "pond"},
                pond_geom[pond_ok],
            ),
        ],
        ignore_index=True,
    )
    return {
        "buildings": gpd.GeoDataFrame(buildings, crs=CRS),
        "roads": gpd.GeoDataFrame(roads, crs=CRS),
        "water": gpd.GeoDataFrame(water, crs=CRS),
        "green": gpd.GeoDataFrame(green, crs=CRS),
        "landuse": gpd.GeoDataFrame(lu, crs=CRS),
    }
