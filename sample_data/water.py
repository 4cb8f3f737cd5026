"""Water supply network (CJJ 61 class JS): looped mains, distribution pipes, services, hydrants.

Mains (DN300–DN600) follow the primary and secondary roads, distribution pipes (DN100–DN200)
the branch roads; gate valves sit a few metres from most junctions so that valve-bounded
segments look like a utility's; every building has a service connection (DN25–DN50) ending at
a service node that names the building. A treatment plant and an elevated tank are the sources.
"""

from __future__ import annotations

from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from .buildings import Buildings
from .frame import CRS, rng
from .layout import Layout, RoadGraph
from .pressure_net import (
    Attachments,
    Laid,
    building_taps,
    end_fittings,
    lay,
    material_by_age,
    offset_graph,
    valve_flags,
)
from .terrain import Terrain

OFFSET = (3.5, 3.5)
OWNER = "Chengbei Water Supply Co."
FEATURE = {
    "junction": "三通",
    "valve": "阀门",
    "hydrant": "消火栓",
    "meter": "水表",
    "service": "接户点",
    "plant": "水厂",
    "tank": "水塔",
}


@dataclass
class Network:
    """Nodes and pipes as GeoDataFrames plus the facts the manifest reports."""

    nodes: gpd.GeoDataFrame
    pipes: gpd.GeoDataFrame
    sources: list[str]
    info: dict


def _street_pick(
    g: np.random.Generator, street: np.ndarray, choices: np.ndarray, p: np.ndarray | None = None
) -> np.ndarray:
    """One choice per street, shared by all its edges (a street's main is one size and age)."""
    uniq, inv = np.unique(street.astype(str), return_inverse=True)
    return np.asarray(choices)[g.choice(len(choices), len(uniq), p=p)][inv]


def class_diameters(
    g: np.random.Generator, roads: RoadGraph, primary: list[int], secondary: list[int], branch: list[int]
) -> np.ndarray:
    """Pipe diameter (mm) per road edge by road class; mains keep one size along a street."""
    return np.where(
        roads.cls == "primary",
        _street_pick(g, roads.street_id, np.array(primary)),
        np.where(
            roads.cls == "secondary",
            _street_pick(g, roads.street_id, np.array(secondary)),
            _street_pick(g, roads.street_id, np.array(branch), np.array([0.3, 0.4, 0.3])),
        ),
    ).astype(np.int64)


def major_nodes_mask(roads: RoadGraph, major: np.ndarray, node_count: int) -> np.ndarray:
    """Nodes touched by a main (non-branch) road edge."""
    mask = np.zeros(node_count, bool)
    mask[roads.u[major]] = True
    mask[roads.v[major]] = True
    return mask


def node_depths(
    g: np.random.Generator,
    laid: Laid,
    edge_diam: np.ndarray,
    roads_u: np.ndarray,
    roads_v: np.ndarray,
    length: np.ndarray,
) -> np.ndarray:
    """Cover depth per node: mains deeper than distribution pipes; fittings on a run take the
    depth interpolated between its end nodes; leaves are shallow."""
    n_base = laid.n_base
    big = np.zeros(n_base)
    np.maximum.at(big, roads_u, edge_diam)
    np.maximum.at(big, roads_v, edge_diam)
    depth = np.zeros(len(laid.node_xy))
    depth[:n_base] = np.where(big >= 300, g.uniform(1.3, 2.0, n_base), g.uniform(1.0, 1.5, n_base))
    on_run = (laid.node_edge >= 0) & (laid.node_kind != "service") & (np.arange(len(depth)) >= n_base)
    leaf = np.isin(laid.node_kind, ["service", "hydrant"]) & (np.arange(len(depth)) >= n_base)
    on_run &= ~leaf
    e = laid.node_edge[on_run]
    f = laid.node_s[on_run] / length[e]
    depth[on_run] = depth[roads_u[e]] * (1 - f) + depth[roads_v[e]] * f
    depth[leaf] = g.uniform(0.8, 1.1, int(leaf.sum()))
    return np.round(depth, 2)


def build_water(layout: Layout, terrain: Terrain, buildings: Buildings) -> Network:
    """The water supply network of the district."""
    g = rng(layout.frame.seed, "water")
    roads = layout.roads
    xy = offset_graph(roads, OFFSET, layout.frame.bbox)
    length = roads.length
    major = roads.cls != "branch"
    ne = len(length)

    diam = class_diameters(g, roads, [600, 500], [400, 300], [200, 150, 100])
    year = _street_pick(g, roads.street_id, np.arange(1978, 2022))
    year = np.where(g.random(ne) < 0.2, g.integers(1985, 2023, ne), year)  # later renewals
    pick = g.random(ne)

    valves = end_fittings(g, roads, np.ones(ne, bool), np.where(major, 0.92, 0.7), 4.0, "valve")
    long_main = np.nonzero(major & (length > 220.0) & ~roads.bridge)[0]
    mid_valves = Attachments.inline(long_main, length[long_main] / 2.0 + 3.0, "valve")
    # DMA inlet meters where a distribution pipe leaves a main
    deg = roads.degree()
    node_major = major_nodes_mask(roads, major, len(xy))
    dma = np.nonzero(~major & node_major[roads.u] & (length > 40.0) & (g.random(ne) < 0.25))[0]
    meters = Attachments.inline(dma, np.full(len(dma), 9.0), "meter")
    # hydrants every ~120 m on a short lateral towards the kerb
    nh = np.where(roads.bridge, 0, np.floor(length / 120.0)).astype(int)
    he = np.repeat(np.arange(ne), nh)
    hk = np.arange(nh.sum()) - np.repeat(np.cumsum(nh) - nh, nh)
    hs = (hk + 0.5) * length[he] / nh[he] + 7.0
    d = xy[roads.v[he]] - xy[roads.u[he]]
    d = d / np.hypot(*d.T)[:, None]
    normal = np.column_stack([-d[:, 1], d[:, 0]])
    normal *= np.sign(normal @ np.asarray(OFFSET))[:, None]
    tee_xy = xy[roads.u[he]] + d * hs[:, None]
    hydrants = Attachments(
        edge=he.astype(np.int64),
        s=hs,
        kind=np.full(len(he), "junction", dtype=object),
        leaf_xy=tee_xy + normal * 1.5,
        leaf_kind=np.full(len(he), "hydrant", dtype=object),
        leaf_ref=np.full(len(he), "", dtype=object),
        branch_diameter=np.where(diam[he] >= 150, 150, 100).astype(np.int64),
    )
    table, fp = buildings.current()
    use = table["use"].to_numpy()
    sdiam = np.where(
        np.isin(use, ["hospital", "commercial", "office", "industrial"]) | (table["floors"].to_numpy() >= 10),
        50,
        np.where(use == "residential", 40, np.where(use == "utility", 25, 32)),
    )
    # gatehouses and substations (< 40 m², not on the 1:2000 map) are not customers
    served = use != "ancillary"
    services = building_taps(
        roads, xy, fp[served], table["bid"].to_numpy()[served], sdiam[served], ~roads.bridge & (length > 12.0)
    )
    laid = lay(xy, roads, Attachments.concat([valves, mid_valves, meters, hydrants, services]))

    # sources: the plant and the elevated tank, each on its own pipe to the network
    plant_xy = shapely.get_coordinates(shapely.centroid(layout.parcels.geometry[layout.facilities["water_plant"]]))[0]
    tank_xy = shapely.get_coordinates(shapely.centroid(layout.parcels.geometry[layout.facilities["water_tower"]]))[0]
    major_nodes = np.nonzero(node_major & (deg >= 3))[0]
    plant_to = major_nodes[np.argmin(np.hypot(*(xy[major_nodes] - plant_xy).T))]
    tank_to = major_nodes[np.argmin(np.hypot(*(xy[major_nodes] - tank_xy).T))]
    n0 = len(laid.node_xy)
    node_xy = np.vstack([laid.node_xy, plant_xy, tank_xy])
    node_kind = np.concatenate([laid.node_kind, ["plant", "tank"]])
    nn = len(node_xy)
    ground = np.round(terrain.elevation(node_xy[:, 0], node_xy[:, 1]), 2)
    depth = np.concatenate([node_depths(g, laid, diam, roads.u, roads.v, length), [2.0, 1.8]])

    # pipes
    p_edge = laid.pipe_edge
    branch = laid.pipe_branch
    is_service = branch & (laid.node_kind[laid.pipe_end] == "service")
    p_diam = np.where(branch, laid.pipe_diameter_branch, diam[p_edge])
    p_year = year[p_edge].copy()
    byear = pd.Series(table["year"].to_numpy(), index=table["bid"].to_numpy())
    ref = laid.pipe_ref
    p_year[is_service] = np.maximum(p_year[is_service], byear.reindex(ref[is_service]).to_numpy())
    p_kind = np.where(
        branch, np.where(is_service, "service", "hydrant"), np.where(major[p_edge], "main", "distribution")
    )
    crit_bids = set(table["bid"][np.isin(use, ["hospital", "school"])])
    critical = np.array([r in crit_bids for r in ref]) & is_service
    start = np.concatenate([laid.pipe_start, [n0, n0 + 1]])
    end = np.concatenate([laid.pipe_end, [plant_to, tank_to]])
    p_diam = np.concatenate([p_diam, [600, 400]])
    p_year = np.concatenate([p_year, [1998, 2006]])
    p_kind = np.concatenate([p_kind, ["transmission", "transmission"]])
    critical = np.concatenate([critical, [False, False]])
    p_road = np.concatenate([roads.name[p_edge], ["", ""]])
    p_road_id = np.concatenate([roads.road_id[p_edge], ["", ""]])
    ref = np.concatenate([ref, ["", ""]])
    p_pick = np.concatenate([pick[p_edge], [0.0, 0.0]])
    material = material_by_age(p_year, p_diam, p_pick)
    np_ = len(start)

    node_ids = np.array([f"WN{i + 1:06d}" for i in range(nn)], dtype=object)
    pipe_ids = np.array([f"WP{i + 1:06d}" for i in range(np_)], dtype=object)
    deg_n = np.bincount(np.concatenate([start, end]), minlength=nn)
    feature = np.array([FEATURE[k] for k in node_kind], dtype=object)
    junction = node_kind == "junction"
    feature[junction & (deg_n == 4)] = "四通"
    feature[junction & (deg_n == 2)] = "直线点"
    feature[junction & (deg_n == 1)] = "预留口"
    feature[junction & (deg_n >= 5)] = "多通"
    is_valve = node_kind == "valve"
    status, operable, accessible = valve_flags(g, int(is_valve.sum()))
    v_status = np.full(nn, None, dtype=object)
    v_oper = pd.array([None] * nn, dtype="boolean")
    v_acc = pd.array([None] * nn, dtype="boolean")
    v_status[is_valve] = status
    v_oper[is_valve] = operable
    v_acc[is_valve] = accessible
    node_bid = np.where(node_kind == "service", np.concatenate([laid.node_ref, ["", ""]]), None)
    head = np.full(nn, np.nan)
    head[n0] = ground[n0] + 45.0
    head[n0 + 1] = ground[n0 + 1] + 38.0
    crit_node = np.zeros(nn, bool)
    crit_node[end[critical]] = True
    nodes = gpd.GeoDataFrame(
        {
            "node_id": node_ids,
            "type": node_kind,
            "code": [f"JS{i + 1:06d}" for i in range(nn)],
            "feature": feature,
            "ground_elev": ground,
            "depth": depth,
            "status": v_status,
            "operable": v_oper,
            "accessible": v_acc,
            "building_id": node_bid,
            "critical": crit_node,
            "head": np.round(head, 2),
        },
        geometry=shapely.points(node_xy),
        crs=CRS,
    )
    geom = shapely.linestrings(np.stack([node_xy[start], node_xy[end]], axis=1))
    pipes = gpd.GeoDataFrame(
        {
            "pipe_id": pipe_ids,
            "start_id": node_ids[start],
            "end_id": node_ids[end],
            "class": "JS",
            "kind": p_kind,
            "diameter": p_diam.astype("int32"),
            "material": material,
            "year": p_year.astype("int32"),
            "start_depth": depth[start],
            "end_depth": depth[end],
            "length": np.round(shapely.length(geom), 2),
            "owner": OWNER,
            "road": p_road,
            "road_id": p_road_id,
            "building_id": np.where(ref != "", ref, None),
            "critical": critical,
        },
        geometry=geom,
        crs=CRS,
    )
    sources = [str(node_ids[n0]), str(node_ids[n0 + 1])]
    info = {
        "sources": [
            {"node_id": sources[0], "type": "plant", "name": "Chengbei Water Works"},
            {"node_id": sources[1], "type": "tank", "name": "Gaogang Water Tower"},
        ],
        "critical_buildings": sorted(str(b) for b in ref[critical]),
    }
    return Network(nodes, pipes, sources, info)
