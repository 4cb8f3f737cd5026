"""The pipe-network analyses as the API and the CLI ask for them, on a twin's store.

One `AnalysisContext` per process holds the network cache and the building index, so that the
models are built once per layer version and every query after that only runs the analysis.
Inputs are checked here (point in CRS84, snapping distance, instant), so both front ends refuse
the same things with the same words.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import shapely
from shapely.geometry.base import BaseGeometry

from twin import crs as crs_mod
from twin.analysis.burst_index import AreaMembers
from twin.analysis.customers import BuildingIndex
from twin.analysis.incident import burst_answer, isolation_answer, segments_answer
from twin.analysis.stats import GROUPS, pipe_statistics
from twin.analysis.store_network import NetworkCache, NetworkModel, network_layers
from twin.model import BBox, InvalidInput, TimeFilter, now_utc
from twin.store import Store

DEFAULT_SNAP = 50.0
MAX_SNAP = 500.0


@dataclass
class AnalysisContext:
    """The caches shared by every analysis request on one store."""

    store: Store
    networks: NetworkCache = field(default_factory=NetworkCache)
    buildings: BuildingIndex = field(default_factory=BuildingIndex)

    def model(self, network: str, when: TimeFilter | None) -> NetworkModel:
        return self.networks.get(self.store, network, when)


def instant(text: str | datetime | None) -> TimeFilter | None:
    """An instant (the network as it was then); intervals make no sense for a burst."""
    if text is None or text == "":
        return None
    if isinstance(text, datetime):
        return TimeFilter.at(text)
    parsed = TimeFilter.parse(text)
    if parsed is not None and not parsed.instant:
        raise InvalidInput(f"datetime {text!r}: give one instant, not an interval")
    return parsed


def snap_point(model: NetworkModel, store: Store, lon: float, lat: float, tolerance: float) -> tuple[int, dict]:
    """The pipe nearest to a CRS84 point within `tolerance` metres."""
    if not (math.isfinite(lon) and math.isfinite(lat) and -180 <= lon <= 180 and -90 <= lat <= 90):
        raise InvalidInput(f"point [{lon}, {lat}] is not a longitude/latitude pair (CRS84)")
    if not (0 < tolerance <= MAX_SNAP):
        raise InvalidInput(f"snapping tolerance must lie in (0, {MAX_SNAP:g}] metres, got {tolerance}")
    x, y = crs_mod.transform_points(crs_mod.CRS84, store.crs, [lon], [lat])
    hit = model.nearest_pipe(float(x[0]), float(y[0]), tolerance)
    if hit is None:
        raise InvalidInput(
            f"no pipe of network {model.name!r} within {tolerance:g} m of [{lon}, {lat}]; "
            "give a point on the network or a pipe_id"
        )
    j, distance = hit
    return j, {"point": [lon, lat], "pipe": str(model.network.link_ids[j]), "distance_m": round(distance, 2)}


def burst(
    ctx: AnalysisContext,
    network: str,
    *,
    pipe_id: str | Sequence[str] | None = None,
    point: Sequence[float] | None = None,
    tolerance: float = DEFAULT_SNAP,
    failed_valves: Sequence[str] = (),
    when: str | datetime | None = None,
    simulate: bool = False,
) -> dict[str, Any]:
    """The burst answer for a pipe (or the pipe nearest a point), passing failed valves."""
    if (pipe_id is None) == (point is None):
        raise InvalidInput("give either pipe_id or point [lon, lat], not both and not neither")
    model = ctx.model(network, instant(when))
    snapped = None
    if point is not None:
        if len(point) != 2:
            raise InvalidInput("point must be [lon, lat]")
        j, snapped = snap_point(model, ctx.store, float(point[0]), float(point[1]), tolerance)
        pipes: list[str] = [str(model.network.link_ids[j])]
    else:
        pipes = [pipe_id] if isinstance(pipe_id, str) else list(pipe_id)
    result, members = model.burst_index.burst(pipes, failed_valves)
    pressure = None
    if simulate:
        from twin.analysis.pressure import pressure_impact

        pressure = pressure_impact(ctx.store, model, result)
    buildings = ctx.buildings.lookup(ctx.store, _building_ids(model, members), instant(when))
    answer = burst_answer(model, result, members, buildings, snapped=snapped, pressure=pressure)
    answer["datetime"] = when if isinstance(when, str) else None
    return answer


def _building_ids(model: NetworkModel, members: AreaMembers) -> list[str]:
    """Building ids on the affected nodes and pipes (for the building lookup)."""
    nodes = np.concatenate((members.isolated_nodes, members.lost_nodes))
    links = np.concatenate((members.isolated_links, members.lost_links))
    ids = set(model.node_text("building_id")[nodes].tolist()) | set(model.pipe_text("building_id")[links].tolist())
    ids.discard("")
    return sorted(ids)


def isolate(
    ctx: AnalysisContext, network: str, closed_valves: Sequence[str], when: str | datetime | None = None
) -> dict[str, Any]:
    """What loses supply when these valves are closed."""
    if not closed_valves:
        raise InvalidInput("closed_valves: give at least one valve id")
    model = ctx.model(network, instant(when))
    result, members = model.burst_index.isolation(list(closed_valves))
    buildings = ctx.buildings.lookup(ctx.store, _building_ids(model, members), instant(when))
    return isolation_answer(model, result, members, buildings)


def segments(
    ctx: AnalysisContext, network: str, *, members: bool = False, geometry: bool = False, when: str | None = None
) -> dict[str, Any]:
    """Valve segments and valve criticality of a network."""
    return segments_answer(ctx.model(network, instant(when)), members=members, geometry=geometry)


def pipe_layers(store: Store, names: Sequence[str]) -> list[str]:
    """Pipe layers named directly or by network name; every network's pipes when none is named."""
    networks = network_layers(store)
    if not names:
        if not networks:
            raise InvalidInput("this twin has no pipe network layers")
        return sorted(n.pipes for n in networks.values())
    out = []
    for name in names:
        if name in networks:
            out.append(networks[name].pipes)
        else:
            store.get_layer(name)  # NotFound names it
            out.append(name)
    return out


def stats(
    ctx: AnalysisContext,
    layers: Sequence[str] = (),
    *,
    region: BaseGeometry | None = None,
    group_by: Sequence[str] = GROUPS,
    when: str | None = None,
) -> dict[str, Any]:
    """Pipe lengths and counts by group inside a region (project CRS), per layer and in total."""
    time = instant(when)
    year = (time.start if time is not None and time.start else now_utc()).year
    group_by = list(group_by) or list(GROUPS)
    frames, lines, per_layer = [], [], {}
    for layer_id in pipe_layers(ctx.store, layers):
        bbox = BBox(*region.bounds) if region is not None else None
        features = ctx.store.query(layer_id, bbox=bbox, time=time, limit=None).features
        frame = pd.DataFrame.from_records([f.properties for f in features], index=range(len(features)))
        geoms = np.array([f.geometry for f in features], dtype=object)
        per_layer[layer_id] = pipe_statistics(frame, geoms, region, group_by, year)
        frames.append(frame)
        lines.append(geoms)
    total = pipe_statistics(
        pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(),
        np.concatenate(lines) if lines else np.empty(0, dtype=object),
        region,
        group_by,
        year,
    )
    return {"group_by": group_by, "reference_year": year, "total": total, "layers": per_layer}


def parse_polygon(text: str | None) -> BaseGeometry | None:
    """A region given as WKT or GeoJSON text (None when empty)."""
    if text is None or not text.strip():
        return None
    try:
        return shapely.from_geojson(text) if text.lstrip().startswith("{") else shapely.from_wkt(text)
    except shapely.errors.GEOSException as exc:
        raise InvalidInput(f"polygon: not WKT or GeoJSON ({exc})") from exc


def region_of(store: Store, bbox: BBox | None, polygon: BaseGeometry | None, source_crs: str) -> BaseGeometry | None:
    """The query region in the project CRS from a bbox or a polygon given in `source_crs`."""
    if bbox is not None and polygon is not None:
        raise InvalidInput("give bbox or polygon, not both")
    shape = shapely.box(*bbox.as_tuple()) if bbox is not None else polygon
    if shape is None:
        return None
    if shape.geom_type not in ("Polygon", "MultiPolygon") or shape.is_empty:
        raise InvalidInput(f"the region must be a polygon, got {shape.geom_type}")
    if not shape.is_valid:
        raise InvalidInput("the region polygon is not valid (self-intersecting?)")
    [projected] = crs_mod.transform_geometries([shape], source_crs, store.crs)
    return projected
