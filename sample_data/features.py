"""Full-detail map features (1:500 content) derived from the layout: roads, water, green, land use.

The orthophoto is painted from these and the coarser map scales are generalised from them, so
every product shows the same district.
"""

from __future__ import annotations

from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from .buildings import Buildings
from .frame import CRS
from .layout import Layout, parcel_frame
from .relief import polygon_array

LANDUSE = {
    "residential": "residential",
    "commercial": "commercial",
    "office": "business",
    "industrial": "industrial",
    "school": "education",
    "hospital": "medical",
    "park": "park",
    "utility": "utility",
    "vacant": "vacant",
    "construction": "construction",
}


@dataclass
class DetailLayers:
    """GeoDataFrames at full detail over the whole district."""

    buildings: gpd.GeoDataFrame
    roads: gpd.GeoDataFrame  # surface polygons
    carriageways: np.ndarray  # polygons (for the orthophoto)
    centrelines: gpd.GeoDataFrame
    water: gpd.GeoDataFrame
    green: gpd.GeoDataFrame
    landuse: gpd.GeoDataFrame
    parcels: gpd.GeoDataFrame


def _gdf(data: dict | pd.DataFrame, geometry: np.ndarray) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(pd.DataFrame(data).reset_index(drop=True), geometry=np.asarray(geometry), crs=CRS)


def _strip(a: np.ndarray, b: np.ndarray, half: np.ndarray, box: shapely.Polygon) -> np.ndarray:
    """Rectangles around segments a-b, half-width wide and extended by it at both ends (a square
    cap, so that crossing roads close up), cut to the district; built directly from corners."""
    d = b - a
    e = d / np.maximum(np.hypot(*d.T), 1e-9)[:, None] * half[:, None]
    n = np.column_stack([-e[:, 1], e[:, 0]])
    rect = polygon_array(np.stack([a - e - n, b + e - n, b + e + n, a - e + n], axis=1))
    edge = ~shapely.contains_properly(box, rect)
    rect[edge] = shapely.intersection(rect[edge], box)
    return rect


def build_details(layout: Layout, buildings: Buildings) -> DetailLayers:
    """All vector content of the district at 1:500 detail."""
    frame = layout.frame
    box = shapely.box(*frame.bbox)
    roads = layout.roads
    lines = roads.geometry
    table = roads.frame()
    surface = _strip(roads.node_xy[roads.u], roads.node_xy[roads.v], roads.width / 2.0, box)
    carriage = _strip(roads.node_xy[roads.u], roads.node_xy[roads.v], roads.width * 0.34, box)
    road_gdf = _gdf(table, surface)
    centre_gdf = _gdf(table, lines)

    river = layout.relief.river
    channel = shapely.intersection(river.channel(frame.x0 - 50, frame.x1 + 50), box)
    water = _gdf({"wid": ["W001"], "name": ["Qinhuai River"], "kind": ["river"]}, [channel])

    # green: riverside park (minus bridge decks), park parcels, school sports grounds
    bridges = shapely.union_all(surface[roads.bridge]) if roads.bridge.any() else shapely.Polygon()
    bank = shapely.difference(shapely.intersection(river.corridor(frame.x0 - 50, frame.x1 + 50), box), channel)
    bank = shapely.difference(bank, bridges)
    bank_parts = shapely.get_parts(bank)
    bank_parts = bank_parts[shapely.area(bank_parts) > 50.0]
    parcels = layout.parcels
    park = np.nonzero(parcels.use == "park")[0]
    school = np.nonzero(parcels.use == "school")[0]
    origin, eu, en, rect = parcel_frame(parcels.quad[school], 10.0)
    depth = rect[:, 3] - rect[:, 2]
    s0, s1, t0, t1 = rect[:, 0], rect[:, 1], rect[:, 2], rect[:, 2] + depth * 0.38
    pts = origin[:, None, :] + np.stack([s0, s1, s1, s0], 1)[:, :, None] * eu[:, None, :]
    pts = pts + np.stack([t0, t0, t1, t1], 1)[:, :, None] * en[:, None, :]
    fields = polygon_array(pts)
    ok = (rect[:, 1] - rect[:, 0] > 20) & (depth > 30)
    green_geom = np.concatenate([bank_parts, parcels.geometry[park], fields[ok]])
    kinds = ["riverside_park"] * len(bank_parts) + ["park"] * len(park) + ["sports_ground"] * int(ok.sum())
    names = (
        [f"Qinhuai Riverside Park {i + 1}" for i in range(len(bank_parts))]
        + [f"{parcels.name[i][5:]} Park" for i in park]
        + ["Sports ground"] * int(ok.sum())
    )
    green = _gdf({"gid": [f"G{i + 1:05d}" for i in range(len(kinds))], "kind": kinds, "name": names}, green_geom)

    parcel_gdf = _gdf(
        {
            "parcel_id": parcels.parcel_id,
            "name": parcels.name,
            "use": parcels.use,
            "block_id": layout.blocks.block_id[parcels.block],
            "area": np.round(shapely.area(parcels.geometry), 1),
        },
        parcels.geometry,
    )
    landuse = _gdf(
        {
            "lid": [f"L{i + 1:06d}" for i in range(len(parcels.use))],
            "landuse": [LANDUSE[u] for u in parcels.use],
            "parcel_id": parcels.parcel_id,
        },
        parcels.geometry,
    )
    table, geom = buildings.current()
    bld = _gdf(table.drop(columns=["parcel"]), geom)
    return DetailLayers(bld, road_gdf, carriage, centre_gdf, water, green, landuse, parcel_gdf)
