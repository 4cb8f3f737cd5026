"""Burst and isolation answers: the analysis results, told in the elements' own ids and places.

`burst_answer` and `isolation_answer` turn a `BurstIsolation` / `SupplyLoss` on a
`NetworkModel` into plain dicts for JSON. Geometries stay shapely objects in the project CRS
(the API and the CLI encode them as GeoJSON in CRS84 in one pass); lengths are metres, volumes
cubic metres.

The emergency-repair block (抢险) lists what a crew does, in order: close the valves (nearest
to the burst first, required ones and then the optional ones at the same walk), drain the
shut-in pipes, repair, reopen in reverse order; and whom to notify (critical customers first).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import shapely

from twin.analysis.burst import BurstIsolation, SupplyLoss
from twin.analysis.burst_index import AreaMembers
from twin.analysis.customers import AffectedCustomers, Building, affected_customers
from twin.analysis.outage import outage_area
from twin.analysis.store_network import NetworkModel


def segment_id(label: int) -> str:
    return f"S{int(label)}"


def _round(value: float, digits: int = 3) -> float:
    return round(float(value), digits)


def _distance(value: float) -> float | None:
    """Metres along the pipes; None for a valve the area's pipes do not reach (JSON has no inf)."""
    return round(value, 2) if math.isfinite(value) else None


def _pipes(model: NetworkModel, links: np.ndarray) -> dict[str, Any]:
    network = model.network
    volume = model.link_volume[links]
    known = np.isfinite(volume)
    return {
        "count": len(links),
        "length_m": _round(np.nansum(network.link_length[links]), 2),
        "volume_m3": _round(volume[known].sum(), 3),
        "pipes_without_volume": int((~known).sum()),
        "ids": network.link_ids[links].tolist(),
    }


def _nodes(model: NetworkModel, nodes: np.ndarray) -> dict[str, Any]:
    return {"count": len(nodes), "ids": model.network.node_ids[nodes].tolist()}


def _valve(model: NetworkModel, v: int, **extra: Any) -> dict[str, Any]:
    network = model.network
    valves = network.valves
    return {
        "id": str(valves.ids[v]),
        "pipe": str(network.link_ids[valves.link[v]]),
        "node": str(network.node_ids[valves.node[v]]),
        **extra,
        "geometry": model.valve_points[v] if v < len(model.valve_points) else None,
    }


def _valve_positions(model: NetworkModel, ids: list[str]) -> dict[str, int]:
    return dict(zip(ids, model.network.valve_index(ids).tolist(), strict=True))


def _customers(model: NetworkModel, found: AffectedCustomers, buildings: dict[str, Building]) -> dict[str, Any]:
    network = model.network
    by_building: dict[str, list[int]] = {}
    for node, building in found.service_building.items():
        by_building.setdefault(building, []).append(node)
    critical_services = set(found.critical_services)
    listed = []
    critical = []
    for building_id in found.building_ids:
        known = buildings.get(building_id)
        services = sorted(by_building.get(building_id, []))
        entry = {
            "id": building_id,
            "name": known.name if known else None,
            "use": known.use if known else None,
            "layer": known.layer if known else None,
            "service_connections": network.node_ids[services].tolist(),
            "critical": bool(critical_services.intersection(services) or (known is not None and known.critical)),
        }
        listed.append(entry)
        if entry["critical"]:
            critical.append(entry)
    return {
        "hydrants": [{"id": str(network.node_ids[i]), "geometry": model.node_points[i]} for i in found.hydrants],
        "service_connections": {"count": len(found.services), "ids": network.node_ids[found.services].tolist()},
        "buildings": listed,
        "critical_customers": critical,
    }


def _feature(geometry: Any, fid: str, **properties: Any) -> dict[str, Any]:
    return {"type": "Feature", "id": fid, "geometry": geometry, "properties": properties}


def _pipe_features(model: NetworkModel, links: np.ndarray, role: str) -> list[dict[str, Any]]:
    ids = model.network.link_ids
    return [_feature(model.pipe_lines[j], str(ids[j]), role=role) for j in links.tolist()]


def burst_answer(
    model: NetworkModel,
    result: BurstIsolation,
    members: AreaMembers,
    buildings: dict[str, Building],
    *,
    snapped: dict[str, Any] | None = None,
    pressure: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The burst answer (see the module docstring), geometries as shapely objects."""
    network = model.network
    iso_link_idx, lost_link_idx = members.isolated_links, members.lost_links
    found = affected_customers(
        model,
        np.concatenate((members.isolated_nodes, members.lost_nodes)),
        np.concatenate((iso_link_idx, lost_link_idx)),
    )
    customers = _customers(model, found, buildings)
    valve_index = _valve_positions(model, result.valves_to_close + result.optional_valves + result.passed_valves)
    secondary = set(result.secondary_valves)
    walk = sorted(
        [(v, True) for v in result.valves_to_close] + [(v, False) for v in result.optional_valves],
        key=lambda item: (result.valve_distance[item[0]], item[0]),
    )
    crew = [
        _valve(
            model,
            valve_index[v],
            order=k,
            required=required,
            secondary=v in secondary,
            distance_m=_distance(result.valve_distance[v]),
        )
        for k, (v, required) in enumerate(walk, 1)
    ]
    passed = [
        _valve(model, valve_index[v], reasons=_failure_reasons(model, valve_index[v])) for v in result.passed_valves
    ]
    burst_idx = network.link_index(result.burst_links)
    isolated = {"pipes": _pipes(model, iso_link_idx), "nodes": _nodes(model, members.isolated_nodes)}
    lost = {"pipes": _pipes(model, lost_link_idx), "nodes": _nodes(model, members.lost_nodes)}
    area = outage_area(model.pipe_lines[np.concatenate((iso_link_idx, lost_link_idx))])
    features = (
        _pipe_features(model, burst_idx, "burst_pipe")
        + _pipe_features(model, iso_link_idx, "isolated_pipe")
        + _pipe_features(model, lost_link_idx, "lost_supply_pipe")
        + [
            _feature(
                v["geometry"], v["id"], role="valve_to_close" if v["required"] else "optional_valve", order=v["order"]
            )
            for v in crew
        ]
        + [_feature(v["geometry"], v["id"], role="passed_valve") for v in passed]
    )
    return {
        "network": model.name,
        "burst": {
            "pipes": result.burst_links,
            "segments": [segment_id(s) for s in result.burst_segments],
            **({"snapped": snapped} if snapped else {}),
        },
        "valves_to_close": crew,
        "secondary_valves": result.secondary_valves,
        "passed_valves": passed,
        "already_closed_valves": result.already_closed,
        "sources_in_area": result.sources_in_area,
        "isolation_segments": [segment_id(s) for s in result.isolation_segments],
        "isolated": isolated,
        "lost_supply_segments": [segment_id(s) for s in result.lost_supply_segments],
        "lost_supply": lost,
        **customers,
        "outage_area": area,
        "emergency": _emergency(crew, isolated, result, customers, pressure),
        "demand_unit": model.demand_unit,
        "demand": {"isolated": _round(result.isolated.demand, 6), "lost_supply": _round(result.lost_supply.demand, 6)},
        "warnings": model.warnings,
        "features": {"type": "FeatureCollection", "features": features},
    }


def _failure_reasons(model: NetworkModel, v: int) -> list[str]:
    valves = model.network.valves
    reasons = [
        r for r, bad in (("inoperable", not valves.operable[v]), ("inaccessible", not valves.accessible[v])) if bad
    ]
    return reasons or ["reported failed"]


def _emergency(
    crew: list[dict[str, Any]],
    isolated: dict[str, Any],
    result: BurstIsolation,
    customers: dict[str, Any],
    pressure: dict[str, Any] | None,
) -> dict[str, Any]:
    steps: list[dict[str, Any]] = []
    for valve in crew:
        note = "required" if valve["required"] else "optional: nothing behind it still has supply"
        steps.append({"action": "close", "valve": valve["id"], "required": valve["required"], "note": note})
    steps.append({"action": "drain", "pipes": isolated["pipes"]["count"], "volume_m3": isolated["pipes"]["volume_m3"]})
    steps.append({"action": "repair", "pipes": result.burst_links})
    steps += [{"action": "open", "valve": valve["id"]} for valve in reversed(crew)]
    steps = [{"step": number, **step} for number, step in enumerate(steps, 1)]
    notify = [
        {"building": b["id"], "name": b["name"], "use": b["use"], "critical": b["critical"]}
        for b in sorted(customers["buildings"], key=lambda b: (not b["critical"], b["id"]))
    ]
    return {
        "valve_operations": steps,
        "notify": notify,
        "notify_count": {"buildings": len(notify), "critical": len(customers["critical_customers"])},
        "pressure_impact": pressure,
    }


def isolation_answer(
    model: NetworkModel, result: SupplyLoss, members: AreaMembers, buildings: dict[str, Building]
) -> dict[str, Any]:
    """What loses supply when `result.closed_valves` are closed."""
    lost_link_idx = members.lost_links
    found = affected_customers(model, members.lost_nodes, lost_link_idx)
    customers = _customers(model, found, buildings)
    valve_index = _valve_positions(model, result.closed_valves)
    closed = [_valve(model, valve_index[v]) for v in result.closed_valves]
    features = _pipe_features(model, lost_link_idx, "lost_supply_pipe") + [
        _feature(v["geometry"], v["id"], role="closed_valve") for v in closed
    ]
    return {
        "network": model.name,
        "closed_valves": closed,
        "lost_supply_segments": [segment_id(s) for s in result.lost_supply_segments],
        "lost_supply": {"pipes": _pipes(model, lost_link_idx), "nodes": _nodes(model, members.lost_nodes)},
        "unsupplied_before": [segment_id(s) for s in result.unsupplied_before],
        **customers,
        "outage_area": outage_area(model.pipe_lines[lost_link_idx]),
        "demand_unit": model.demand_unit,
        "demand": _round(result.lost_supply.demand, 6),
        "warnings": model.warnings,
        "features": {"type": "FeatureCollection", "features": features},
    }


def segments_answer(model: NetworkModel, members: bool = False, geometry: bool = False) -> dict[str, Any]:
    """Every segment with its counts, length, demand and bounding valves; every valve's criticality."""
    network, seg = model.network, model.segmentation
    valves = network.valves
    crit = model.criticality
    a, b = seg.valve_link_segment, seg.valve_node_segment
    bounding: list[list[str]] = [[] for _ in range(seg.n_segments)]
    for v in np.flatnonzero(seg.separating).tolist():
        bounding[a[v]].append(str(valves.ids[v]))
        bounding[b[v]].append(str(valves.ids[v]))
    node_order = np.argsort(seg.node_segment, kind="stable")
    link_order = np.argsort(seg.link_segment, kind="stable")
    node_cuts = np.searchsorted(seg.node_segment[node_order], np.arange(seg.n_segments + 1))
    link_cuts = np.searchsorted(seg.link_segment[link_order], np.arange(seg.n_segments + 1))
    lines = None
    if geometry:
        lines = np.full(seg.n_segments, None, dtype=object)
        shapely.multilinestrings(model.pipe_lines[link_order], indices=seg.link_segment[link_order], out=lines)
    segments = []
    for s in range(seg.n_segments):
        entry: dict[str, Any] = {
            "id": segment_id(s),
            "nodes": int(seg.segment_nodes[s]),
            "pipes": int(seg.segment_links[s]),
            "length_m": _round(seg.segment_length[s], 2),
            "demand": _round(seg.segment_demand[s], 6),
            "sources": int(seg.segment_sources[s]),
            "valves": sorted(set(bounding[s])),
        }
        if members:
            entry["node_ids"] = network.node_ids[node_order[node_cuts[s] : node_cuts[s + 1]]].tolist()
            entry["pipe_ids"] = network.link_ids[link_order[link_cuts[s] : link_cuts[s + 1]]].tolist()
        if lines is not None:
            entry["geometry"] = lines[s]
        segments.append(entry)
    criticality = [
        {
            "id": str(valves.ids[v]),
            "pipe": str(network.link_ids[valves.link[v]]),
            "node": str(network.node_ids[valves.node[v]]),
            "segments": [segment_id(a[v]), segment_id(b[v])] if a[v] != b[v] else [segment_id(a[v])],
            "closed": bool(valves.closed[v]),
            "num_surround": int(crit.num_surround[v]),
            "size_increase": _round(crit.size_increase[v], 6),
            "length_increase": _round(crit.length_increase[v], 6),
            "demand_increase": _round(crit.demand_increase[v], 6),
        }
        for v in range(len(valves))
    ]
    largest = int(np.argmax(seg.segment_size)) if seg.n_segments else None
    return {
        "network": model.name,
        "nodes": network.n_nodes,
        "pipes": network.n_links,
        "valves": len(valves),
        "segment_count": seg.n_segments,
        "largest_segment": segment_id(largest) if largest is not None else None,
        "demand_unit": model.demand_unit,
        "versions": dict(zip(model.layers.ids, model.versions, strict=True)) if model.layers else {},
        "warnings": model.warnings,
        "segments": segments,
        "valve_criticality": criticality,
    }
