"""Gas network (CJJ 61 class RQ): medium-pressure mains fed by a regulator station, low-pressure
pipes behind district regulators, services to buildings.

It runs on the other side of the carriageway from the water pipes. Every branch road that
meets a medium-pressure road starts with a regulator, so the low-pressure system only connects
to the medium-pressure system through regulators, as it must.
"""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from .buildings import Buildings
from .frame import CRS, rng
from .layout import Layout
from .pressure_net import Attachments, building_taps, end_fittings, lay, offset_graph, valve_flags
from .terrain import Terrain
from .water import Network, _street_pick, class_diameters, major_nodes_mask, node_depths

OFFSET = (-3.5, -3.5)
OWNER = "Jinling Gas Co."
FEATURE = {"junction": "三通", "valve": "阀门", "regulator": "调压箱", "service": "接户点", "station": "调压站"}


def build_gas(layout: Layout, terrain: Terrain, buildings: Buildings) -> Network:
    """The gas distribution network of the district."""
    g = rng(layout.frame.seed, "gas")
    roads = layout.roads
    xy = offset_graph(roads, OFFSET, layout.frame.bbox)
    length = roads.length
    major = roads.cls != "branch"
    ne = len(length)
    diam = class_diameters(g, roads, [315, 250], [250, 200], [160, 110, 90])
    year = _street_pick(g, roads.street_id, np.arange(1988, 2022))
    node_major = major_nodes_mask(roads, major, len(xy))

    valves = end_fittings(g, roads, major, np.full(ne, 0.85), 5.0, "valve")
    # regulators 7 m into each branch road from a medium-pressure junction
    reg_u = np.nonzero(~major & node_major[roads.u] & (length > 20.0))[0]
    reg_v = np.nonzero(~major & node_major[roads.v] & (length > 20.0))[0]
    regs = Attachments.inline(
        np.concatenate([reg_u, reg_v]), np.concatenate([np.full(len(reg_u), 7.0), length[reg_v] - 7.0]), "regulator"
    )
    lp_valves = end_fittings(
        g, roads, ~major & ~node_major[roads.u] & ~node_major[roads.v], np.full(ne, 0.35), 4.0, "valve"
    )
    table, fp = buildings.current()
    use = table["use"].to_numpy()
    served = ~np.isin(use, ["ancillary", "utility"])
    sdiam = np.where(np.isin(use, ["hospital", "commercial", "industrial"]), 50, 32)
    services = building_taps(
        roads, xy, fp[served], table["bid"].to_numpy()[served], sdiam[served], ~roads.bridge & (length > 12.0)
    )
    laid = lay(xy, roads, Attachments.concat([valves, regs, lp_valves, services]))

    st_xy = shapely.get_coordinates(shapely.centroid(layout.parcels.geometry[layout.facilities["gas_station"]]))[0]
    cand = np.nonzero(node_major & (roads.degree() >= 3))[0]
    st_to = cand[np.argmin(np.hypot(*(xy[cand] - st_xy).T))]
    n0 = len(laid.node_xy)
    node_xy = np.vstack([laid.node_xy, st_xy])
    node_kind = np.concatenate([laid.node_kind, ["station"]])
    nn = len(node_xy)
    ground = np.round(terrain.elevation(node_xy[:, 0], node_xy[:, 1]), 2)
    depth = np.concatenate([node_depths(g, laid, np.where(major, 300, 100), roads.u, roads.v, length), [1.5]])
    depth = np.round(np.clip(depth - 0.2, 0.8, 2.0), 2)

    # pressure: medium on major roads and between a medium junction and its regulator
    e = laid.pipe_edge
    branch = laid.pipe_branch
    reg_pos_u = np.full(ne, -1.0)
    reg_pos_v = np.full(ne, np.inf)
    is_reg = laid.node_kind == "regulator"
    re, rs = laid.node_edge[is_reg], laid.node_s[is_reg]
    near_u = rs < length[re] / 2.0
    reg_pos_u[re[near_u]] = rs[near_u]
    reg_pos_v[re[~near_u]] = rs[~near_u]
    medium = major[e] | (laid.pipe_s1 <= reg_pos_u[e] + 1e-6) | (laid.pipe_s0 >= reg_pos_v[e] - 1e-6)
    medium &= ~branch | major[e]
    start = np.concatenate([laid.pipe_start, [n0]])
    end = np.concatenate([laid.pipe_end, [st_to]])
    p_diam = np.concatenate([np.where(branch, laid.pipe_diameter_branch, diam[e]), [400]])
    p_year = np.concatenate([np.where(branch, np.maximum(year[e], 2000), year[e]), [2003]])
    pressure = np.concatenate([np.where(medium, "medium", "low"), ["medium"]]).astype(object)
    material = np.where(p_year < 1995, "cast iron", np.where(p_diam >= 250, "steel", "PE")).astype(object)
    material[(pressure == "medium") & (p_year < 2005)] = "steel"
    kind = np.concatenate([np.where(branch, "service", np.where(major[e], "main", "distribution")), ["feeder"]]).astype(
        object
    )
    ref = np.concatenate([laid.pipe_ref, [""]])
    crit_bids = set(table["bid"][np.isin(use, ["hospital", "school"])])
    critical = np.array([r in crit_bids for r in ref])

    node_ids = np.array([f"GN{i + 1:06d}" for i in range(nn)], dtype=object)
    deg_n = np.bincount(np.concatenate([start, end]), minlength=nn)
    feature = np.array([FEATURE[k] for k in node_kind], dtype=object)
    junction = node_kind == "junction"
    feature[junction & (deg_n == 4)] = "四通"
    feature[junction & (deg_n == 2)] = "直线点"
    feature[junction & (deg_n == 1)] = "预留口"
    is_valve = node_kind == "valve"
    status, operable, accessible = valve_flags(g, int(is_valve.sum()))
    v_status = np.full(nn, None, dtype=object)
    v_oper = pd.array([None] * nn, dtype="boolean")
    v_acc = pd.array([None] * nn, dtype="boolean")
    v_status[is_valve] = status
    v_oper[is_valve] = operable
    v_acc[is_valve] = accessible
    node_bid = np.where(node_kind == "service", np.concatenate([laid.node_ref, [""]]), None)
    nodes = gpd.GeoDataFrame(
        {
            "node_id": node_ids,
            "type": node_kind,
            "code": [f"RQ{i + 1:06d}" for i in range(nn)],
            "feature": feature,
            "ground_elev": ground,
            "depth": depth,
            "status": v_status,
            "operable": v_oper,
            "accessible": v_acc,
            "building_id": node_bid,
        },
        geometry=shapely.points(node_xy),
        crs=CRS,
    )
    geom = shapely.linestrings(np.stack([node_xy[start], node_xy[end]], axis=1))
    pipes = gpd.GeoDataFrame(
        {
            "pipe_id": [f"GP{i + 1:06d}" for i in range(len(start))],
            "start_id": node_ids[start],
            "end_id": node_ids[end],
            "class": "RQ",
            "kind": kind,
            "pressure": pressure,
            "diameter": p_diam.astype("int32"),
            "material": material,
            "year": p_year.astype("int32"),
            "start_depth": depth[start],
            "end_depth": depth[end],
            "length": np.round(shapely.length(geom), 2),
            "owner": OWNER,
            "road": np.concatenate([roads.name[e], [""]]),
            "road_id": np.concatenate([roads.road_id[e], [""]]),
            "building_id": np.where(ref != "", ref, None),
            "critical": critical,
        },
        geometry=geom,
        crs=CRS,
    )
    source = str(node_ids[n0])
    info = {"sources": [{"node_id": source, "type": "station", "name": "Dongjiao Gas Regulator Station"}]}
    return Network(nodes, pipes, [source], info)
