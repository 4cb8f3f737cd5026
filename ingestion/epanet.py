"""EPANET `.inp` files into a water network (read by WNTR, in SI units).

Junctions, reservoirs and tanks become nodes (`type`, `elevation`, `demand` in m³/s, `head` of
reservoirs); pipes, pumps and valves become pipes (`kind`, `length` m, `diameter` mm,
`roughness`, `status`), drawn through their vertices. The file itself is kept as an asset
(`epanet_asset` in the pipes layer's metadata) so that a burst can be simulated on it.

EPANET files rarely carry isolation valves: `valves` reads a valve layer as WNTR's
`generate_valve_layer` returns it, saved as CSV (an index column, then `link` and `node`: a valve
on `link` next to `node`), with optional `status`, `operable`, `accessible` columns. Each valve
is drawn a tenth of the way along its link from its node.

EPANET coordinates are often schematic. `origin` places the drawing: its lower-left corner goes
to (x, y) in the project CRS, and `scale` multiplies its units into metres. Without it the
coordinates must be in `source_crs` (default: the project CRS) and inside its area.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from ingestion import pipe_schema as schema
from ingestion.pipe_tables import Drawing, PipeTables, read_csv_table
from ingestion.vector import _first_line
from twin.model import InvalidInput, NotFound
from twin.store import Store

VALVE_OFFSET = 0.1


def _load(path: Path) -> Any:
    import wntr

    if not Path(path).is_file():
        raise NotFound(f"{path}: no such file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return wntr.network.WaterNetworkModel(str(path))
    except Exception as exc:  # WNTR raises many kinds on a bad file; all mean "not a readable .inp"
        raise InvalidInput(f"{path}: not a readable EPANET .inp file ({_first_line(exc)})") from exc


def read_epanet(
    path: Path,
    project_crs: str,
    *,
    network: str = "water",
    source_crs: str | None = None,
    origin: tuple[float, float] | None = None,
    scale: float = 1.0,
    valves: Path | None = None,
) -> PipeTables:
    """The network of an EPANET file (and an optional valve layer) in the project CRS."""
    wn = _load(path)
    names = wn.node_name_list
    if not names or not wn.link_name_list:
        raise InvalidInput(f"{path}: the file holds no nodes or no links")
    coords = np.array([wn.get_node(n).coordinates or (np.nan, np.nan) for n in names], dtype=float)
    if np.isnan(coords).any():
        missing = [n for n, c in zip(names, coords, strict=True) if np.isnan(c).any()]
        raise InvalidInput(f"{path}: nodes without coordinates: {', '.join(missing[:5])}")
    link_coords = _link_coordinates(wn, dict(zip(names, coords.tolist(), strict=True)))
    every = np.vstack([coords, *[c for c in link_coords if len(c)]])
    drawing = Drawing.of(every, project_crs, source_crs, origin, scale, path)
    points = drawing.geometries(shapely.points(drawing.place(coords)), project_crs)
    lines = drawing.geometries([shapely.linestrings(drawing.place(c)) for c in link_coords], project_crs)
    nodes = gpd.GeoDataFrame(_node_table(wn, names), geometry=points, crs=project_crs)
    pipes = gpd.GeoDataFrame(_link_table(wn), geometry=lines, crs=project_crs)
    tables = PipeTables(network, nodes, pipes, str(path), drawing.crs, "epanet")
    if valves is not None:
        tables.valves = _valve_layer(valves, pipes)
    return tables


def _link_coordinates(wn: Any, at: dict[str, list[float]]) -> list[np.ndarray]:
    out = []
    for name in wn.link_name_list:
        link = wn.get_link(name)
        vertices = list(getattr(link, "vertices", []) or [])
        out.append(np.array([at[link.start_node_name], *vertices, at[link.end_node_name]], dtype=float))
    return out


def _node_table(wn: Any, names: list[str]) -> pd.DataFrame:
    import wntr

    demand = wntr.metrics.average_expected_demand(wn).reindex(names).fillna(0.0)
    rows = []
    for name in names:
        node = wn.get_node(name)
        kind = node.node_type.lower()
        row: dict[str, Any] = {"node_id": name, "type": kind, "class": "JS"}
        if kind == "junction":
            row["elevation"] = node.elevation
            row["demand"] = float(demand[name])
        elif kind == "tank":
            row["elevation"] = node.elevation
            row["head"] = node.elevation + node.init_level
        else:
            row["head"] = node.base_head
        rows.append(row)
    return pd.DataFrame(rows)


def _link_table(wn: Any) -> pd.DataFrame:
    rows = []
    for name in wn.link_name_list:
        link = wn.get_link(name)
        kind = link.link_type.lower()
        row: dict[str, Any] = {
            "pipe_id": name,
            "start_id": link.start_node_name,
            "end_id": link.end_node_name,
            "class": "JS",
            "kind": kind if kind != "valve" else f"valve {link.valve_type}",
            "status": str(link.initial_status).lower(),
        }
        if kind == "pipe":
            row.update(length=link.length, diameter=round(link.diameter * 1000.0, 3), roughness=link.roughness)
        elif kind == "valve":
            row["diameter"] = round(link.diameter * 1000.0, 3)
        rows.append(row)
    return pd.DataFrame(rows)


def _valve_layer(path: Path, pipes: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """A WNTR valve layer saved as CSV, placed along its links."""
    if not Path(path).is_file():
        raise NotFound(f"{path}: no such valve file")
    frame = read_csv_table(Path(path))
    frame.columns = [str(c).strip() for c in frame.columns]
    if not {"link", "node"} <= set(frame.columns):
        raise InvalidInput(f"{path}: a valve layer has columns link and node (WNTR's generate_valve_layer)")
    first = frame.columns[0]
    id_column = next((c for c in ("valve_id", "valve", "id") if c in frame.columns), None)
    if id_column is None and first not in ("link", "node"):
        id_column = first  # the DataFrame index written by to_csv
    ids = frame[id_column] if id_column else pd.Series(range(len(frame)))
    valves = pd.DataFrame({"valve_id": ids.astype(str).str.strip().to_numpy()})
    valves["link"] = frame["link"].astype(str).str.strip().to_numpy()
    valves["node"] = frame["node"].astype(str).str.strip().to_numpy()
    for column in ("status", "operable", "accessible"):
        if column in frame.columns:
            valves[column] = frame[column].to_numpy()
    schema.flags(valves, ("operable", "accessible"))
    schema.statuses(valves)
    if valves["valve_id"].duplicated().any():
        raise InvalidInput(f"{path}: repeated valve ids")
    by_id = pipes.set_index("pipe_id")
    known = valves["link"].isin(by_id.index)
    if not known.all():
        raise InvalidInput(f"{path}: valves on unknown pipes: {', '.join(valves.loc[~known, 'link'].head(5))}")
    lines = by_id.geometry.reindex(valves["link"]).to_numpy()
    at_start = by_id["start_id"].reindex(valves["link"]).to_numpy() == valves["node"].to_numpy()
    fraction = np.where(at_start, VALVE_OFFSET, 1.0 - VALVE_OFFSET)
    points = shapely.line_interpolate_point(lines, fraction, normalized=True)
    return gpd.GeoDataFrame(valves, geometry=points, crs=pipes.crs)


def keep_file(store: Store, tables: PipeTables, path: Path) -> None:
    """Keep the .inp as an asset and name it in the pipes layer's metadata (for simulations)."""
    tables.metadata["epanet_asset"] = store.assets.put_file(Path(path), ".inp")
