"""Pressure impact of an isolation, by a WNTR pressure-driven (PDD) steady-state simulation.

Two networks can be simulated:

- a network ingested from an EPANET file: the file was kept as an asset (`epanet_asset` in the
  pipes layer's metadata) and is simulated as it is;
- a water network built from GIS layers (the demo's), when its sources carry a `head`
  (metres, 1985 datum): junction elevations are ground elevation minus depth, each service
  connection draws `SERVICE_DEMAND`, pipe roughness is a Hazen-Williams C by material, and
  sources are fixed-head reservoirs. A sketch for comparing before and after, not a
  calibrated model.

Gas and heat networks, and water networks without heads, are not simulated: the answer says
why. The isolation is applied by closing every pipe of the isolation area and setting the
demand of every isolated or lost-supply node to zero; pressures before and after are compared
at the nodes that keep their supply.
"""

from __future__ import annotations

import math
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from twin.analysis.burst import BurstIsolation
from twin.analysis.store_network import SOURCE_NODE_KINDS, NetworkModel
from twin.store import Store

SERVICE_DEMAND = 0.0002
"""m³/s per service connection (0.2 L/s) for networks without stored demands."""
REQUIRED_PRESSURE = 20.0
"""Metres of head at which a PDD node gets its full demand (0 m: none)."""
HAZEN_WILLIAMS = {"PE": 140.0, "PVC": 140.0, "DI": 130.0, "steel": 120.0, "cast iron": 100.0}
DEFAULT_C = 120.0
DROP_REPORTED = 1.0
TOP = 20


def _unsupported(reason: str) -> dict[str, Any]:
    return {"supported": False, "reason": reason}


def hydraulic_model(store: Store, model: NetworkModel) -> tuple[Any, str] | str:
    """(WNTR model, how it was made), or the reason there is none."""
    import wntr

    key = model.metadata.get("epanet_asset")
    if key:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return wntr.network.WaterNetworkModel(str(store.assets.open_path(key))), "EPANET file"
    if model.metadata.get("network") not in (None, "water") and "JS" not in set(model.pipes.get("class", [])):
        return "pressure simulation covers water networks only"
    nodes = model.nodes
    types = model.node_type
    sources = np.flatnonzero(np.isin(types, list(SOURCE_NODE_KINDS)))
    heads = _column(nodes, "head")
    if not len(sources) or not np.isfinite(heads[sources]).any():
        return "the network's sources carry no head: no hydraulic model can be built from its layers"
    return _from_layers(model, heads), "built from the layers"


def _column(frame: Any, name: str) -> np.ndarray:
    import pandas as pd

    if name not in frame.columns:
        return np.full(len(frame), np.nan)
    return pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=float)


def _from_layers(model: NetworkModel, heads: np.ndarray) -> Any:
    import wntr

    network, nodes, pipes = model.network, model.nodes, model.pipes
    wn = wntr.network.WaterNetworkModel()
    ground, depth = _column(nodes, "ground_elev"), _column(nodes, "depth")
    elevation = np.nan_to_num(ground - np.nan_to_num(depth))
    types = model.node_type
    demand = network.node_demand * (SERVICE_DEMAND if model.demand_unit != "m3/s" else 1.0)
    for i, name in enumerate(network.node_ids.tolist()):
        x, y = (model.node_points[i].x, model.node_points[i].y) if model.node_points[i] is not None else (0.0, 0.0)
        if types[i] in SOURCE_NODE_KINDS and math.isfinite(heads[i]):
            wn.add_reservoir(name, base_head=float(heads[i]), coordinates=(x, y))
        else:
            wn.add_junction(name, base_demand=float(demand[i]), elevation=float(elevation[i]), coordinates=(x, y))
    materials = pipes["material"].astype(str).tolist() if "material" in pipes.columns else [""] * network.n_links
    for j, name in enumerate(network.link_ids.tolist()):
        diameter = network.link_diameter[j]
        wn.add_pipe(
            name,
            str(network.node_ids[network.link_start[j]]),
            str(network.node_ids[network.link_end[j]]),
            length=max(float(np.nan_to_num(network.link_length[j])), 0.1),
            diameter=float(diameter) if math.isfinite(diameter) and diameter > 0 else 0.1,
            roughness=HAZEN_WILLIAMS.get(materials[j], DEFAULT_C),
        )
    valves = network.valves
    for v in np.flatnonzero(valves.closed):
        wn.get_link(str(network.link_ids[valves.link[v]])).initial_status = wntr.network.LinkStatus.Closed
    return wn


def _pressures(wn: Any) -> Any:
    import wntr

    wn.options.time.duration = 0
    wn.options.hydraulic.demand_model = "PDD"
    wn.options.hydraulic.required_pressure = REQUIRED_PRESSURE
    wn.options.hydraulic.minimum_pressure = 0.0
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = wntr.sim.EpanetSimulator(wn).run_sim(file_prefix=str(Path(tmp) / "run"))
    return results.node["pressure"].iloc[0]


def pressure_impact(store: Store, model: NetworkModel, result: BurstIsolation) -> dict[str, Any]:
    """Pressures before and after the isolation at the nodes that keep their supply."""
    import wntr

    made = hydraulic_model(store, model)
    if isinstance(made, str):
        return _unsupported(made)
    wn, how = made
    before = _pressures(wn)
    seg = model.segmentation
    area = np.zeros(seg.n_segments, dtype=bool)
    area[result.isolation_segments] = True
    cut = area.copy()
    cut[result.lost_supply_segments] = True
    network = model.network
    for name in network.link_ids[area[seg.link_segment]].tolist():
        if name in wn.link_name_list:
            wn.get_link(name).initial_status = wntr.network.LinkStatus.Closed
    for name in network.node_ids[cut[seg.node_segment]].tolist():
        if name in wn.junction_name_list:
            for entry in wn.get_node(name).demand_timeseries_list:
                entry.base_value = 0.0
    after = _pressures(wn)
    kept = [n for n in network.node_ids[~cut[seg.node_segment]].tolist() if n in wn.junction_name_list]
    drop = (before[kept] - after[kept]).sort_values(ascending=False)
    top = [
        {
            "node": n,
            "before_m": round(float(before[n]), 2),
            "after_m": round(float(after[n]), 2),
            "drop_m": round(float(d), 2),
        }
        for n, d in drop.head(TOP).items()
        if d > 0.005
    ]
    return {
        "supported": True,
        "model": how,
        "demand_model": "PDD",
        "required_pressure_m": REQUIRED_PRESSURE,
        "nodes_compared": len(kept),
        "max_drop_m": round(float(drop.max()), 2) if len(drop) else 0.0,
        f"nodes_dropping_over_{DROP_REPORTED:g}_m": int((drop > DROP_REPORTED).sum()),
        "lowest_pressure_after_m": round(float(after[kept].min()), 2) if kept else None,
        "below_required_after": int((after[kept] < REQUIRED_PRESSURE).sum()),
        "below_required_before": int((before[kept] < REQUIRED_PRESSURE).sum()),
        "largest_drops": top,
    }
