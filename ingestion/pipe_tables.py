"""Canonical pipe-network tables and their atomic landing in the store.

Every pipe reader (GIS tables, EPANET, SWMM) produces `PipeTables`: nodes and pipes as
GeoDataFrames in the project CRS with the canonical columns of `ingestion.pipe_schema`, an
optional valve layer in WNTR's convention (a valve on `link` next to `node`) and optional extra
layers (SWMM subcatchments). `write_network` checks them completely (ids, ends, sizes, valves)
and runs the topology report before it writes anything, so that bad input
changes nothing; then each layer is one atomic store write.

Layers written, for network `water`: `water_nodes` and `water_pipes` (kind `pipe_network`,
metadata `network`, `role`, and on the pipes `nodes_layer` and `valves_layer`), plus
`water_valves` when a valve layer is given. Properties keep every source field.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from ingestion.topology import TopologyOptions, TopologyReport, topology_report
from ingestion.vector import _first_line, _json_values, geometry_type
from twin import crs as crs_mod
from twin.model import FeatureInput, InvalidInput, Layer, LayerKind, Scenario, WriteReport, check_layer_id
from twin.store import Store, WriteMode


@dataclass
class ExtraLayer:
    """Another layer that comes with a network (SWMM subcatchments, for instance)."""

    suffix: str
    title: str
    frame: gpd.GeoDataFrame
    id_column: str


@dataclass
class PipeTables:
    """One network read from a source, in the project CRS."""

    network: str
    nodes: gpd.GeoDataFrame
    pipes: gpd.GeoDataFrame
    source: str
    source_crs: str
    source_format: str
    valves: gpd.GeoDataFrame | None = None
    extras: list[ExtraLayer] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    """Added to the pipes layer's metadata (the kept EPANET file, for instance)."""

    def layer_ids(self) -> dict[str, str]:
        ids = {"nodes": f"{self.network}_nodes", "pipes": f"{self.network}_pipes"}
        if self.valves is not None:
            ids["valves"] = f"{self.network}_valves"
        for extra in self.extras:
            ids[extra.suffix] = f"{self.network}_{extra.suffix}"
        return {role: check_layer_id(layer_id) for role, layer_id in ids.items()}


@dataclass
class NetworkIngest:
    """What an ingest wrote, and its topology report."""

    network: str
    writes: list[WriteReport]
    topology: TopologyReport
    notes: list[str]
    topology_seconds: float = 0.0

    def as_dict(self, limit: int = 20) -> dict[str, Any]:
        return {
            "network": self.network,
            "layers": [w.as_dict() for w in self.writes],
            "topology": self.topology.as_dict(limit),
            "topology_seconds": round(self.topology_seconds, 3),
            "notes": self.notes,
        }


CSV_ENCODINGS = ("utf-8-sig", "gb18030")


def read_csv_table(path: Path) -> pd.DataFrame:
    """A CSV table as text columns, UTF-8 or GB18030 (Chinese survey software writes either)."""
    for encoding in CSV_ENCODINGS:
        try:
            return pd.read_csv(path, dtype=str, encoding=encoding, skipinitialspace=True)
        except UnicodeDecodeError:
            continue
        except (pd.errors.ParserError, pd.errors.EmptyDataError, OSError) as exc:
            raise InvalidInput(f"{path}: not a readable CSV table ({_first_line(exc)})") from exc
    raise InvalidInput(f"{path}: CSV is neither UTF-8 nor GB18030 text")


def in_crs_area(x: np.ndarray, y: np.ndarray, crs: str) -> bool:
    """Do (most of) these coordinates lie in the CRS's area of use (with a degree of margin)?"""
    area = crs_mod.parse_crs(crs).area_of_use
    if area is None or not len(x):
        return True
    lon, lat = crs_mod.transform_points(crs, crs_mod.CRS84, x, y)
    if not (np.isfinite(lon).all() and np.isfinite(lat).all()):
        return False
    inside = (lon >= area.west - 1) & (lon <= area.east + 1) & (lat >= area.south - 1) & (lat <= area.north + 1)
    return bool(inside.mean() > 0.9)


@dataclass(frozen=True)
class Drawing:
    """Where a model file's drawing goes: its own CRS, or a schematic placed at an origin.

    EPANET and SWMM coordinates are often schematic: `origin` puts the drawing's lower-left
    corner at (x, y) in the project CRS and `scale` turns its units into metres.
    """

    crs: str
    shift: np.ndarray
    scale: float

    @classmethod
    def of(
        cls,
        everything: np.ndarray,
        project_crs: str,
        source_crs: str | None,
        origin: tuple[float, float] | None,
        scale: float,
        path: Path | str,
    ) -> Drawing:
        """Check `everything` (all x, y of the file) against the choice made, and decide."""
        if origin is not None:
            if source_crs is not None:
                raise InvalidInput("give either --crs (real coordinates) or --origin (a schematic drawing), not both")
            return cls(project_crs, np.asarray(origin, dtype=float) - everything.min(axis=0) * scale, scale)
        source = source_crs or project_crs
        if not in_crs_area(everything[:, 0], everything[:, 1], source):
            x, y = everything.min(axis=0)
            raise InvalidInput(
                f"{path}: coordinates ({x:.0f}, {y:.0f}) do not lie in {source}'s area; "
                "give their CRS with --crs, or place a schematic drawing with --origin X,Y"
            )
        return cls(source, np.zeros(2), 1.0)

    def place(self, xy: Any) -> np.ndarray:
        return np.asarray(xy, dtype=float) * self.scale + self.shift

    def geometries(self, geoms: np.ndarray, project_crs: str) -> np.ndarray:
        """Geometries drawn with placed coordinates, in the project CRS."""
        return crs_mod.transform_geometries(np.asarray(geoms, dtype=object), self.crs, project_crs)


def check_tables(tables: PipeTables) -> None:
    """Refuse what cannot make a network: missing or repeated ids, unknown ends, stray valves."""
    where = tables.source
    nodes, pipes = tables.nodes, tables.pipes
    if not len(pipes):
        raise InvalidInput(f"{where}: no pipes found")
    for frame, column, what in ((nodes, "node_id", "point"), (pipes, "pipe_id", "pipe")):
        ids = frame[column]
        if ids.isna().any() or (ids.astype(str).str.strip() == "").any():
            raise InvalidInput(f"{where}: some {what}s have no id")
        repeated = ids[ids.duplicated()].astype(str).unique()
        if len(repeated):
            raise InvalidInput(f"{where}: repeated {what} ids: {', '.join(repeated[:5])}")
    known = set(nodes["node_id"].astype(str))
    for column in ("start_id", "end_id"):
        missing = sorted(set(pipes[column].astype(str)) - known)
        if missing:
            raise InvalidInput(f"{where}: pipes name points that the point table lacks: {', '.join(missing[:5])}")
    if "type" in nodes.columns:
        on_pipes = set(pipes["start_id"].astype(str)) | set(pipes["end_id"].astype(str))
        stray = sorted(set(nodes.loc[nodes["type"] == "valve", "node_id"].astype(str)) - on_pipes)
        if stray:
            raise InvalidInput(f"{where}: valve point(s) on no pipe: {', '.join(stray[:5])}")
    lines = pipes.geometry.to_numpy()
    bad = ~shapely.is_geometry(lines) | shapely.is_empty(lines)
    if bad.any():
        raise InvalidInput(f"{where}: pipe {pipes['pipe_id'].iloc[int(np.flatnonzero(bad)[0])]!r} has no line")
    for column in ("length", "diameter", "width", "height"):
        if column in pipes.columns and (pd.to_numeric(pipes[column], errors="coerce") < 0).any():
            raise InvalidInput(f"{where}: negative pipe {column}")
    if tables.valves is not None:
        check_valves(tables)


def check_valves(tables: PipeTables) -> None:
    """Each valve of a valve layer must sit on a known pipe next to one of that pipe's ends."""
    valves, pipes = tables.valves, tables.pipes
    ends = pipes.set_index(pipes["pipe_id"].astype(str))[["start_id", "end_id"]].astype(str)
    links = valves["link"].astype(str)
    unknown = sorted(set(links) - set(ends.index))
    if unknown:
        raise InvalidInput(f"{tables.source}: valves on unknown pipes: {', '.join(unknown[:5])}")
    start, end = ends.loc[links, "start_id"].to_numpy(), ends.loc[links, "end_id"].to_numpy()
    node = valves["node"].astype(str).to_numpy()
    stray = np.flatnonzero((start != node) & (end != node))
    if len(stray):
        i = int(stray[0])
        raise InvalidInput(
            f"{tables.source}: valve {valves['valve_id'].iloc[i]!r} is on pipe {links.iloc[i]!r}, which does not touch "
            f"node {node[i]!r} ({len(stray)} such valve(s)); a valve sits on a pipe next to one of its ends"
        )


def features_of(frame: pd.DataFrame, id_column: str) -> Iterator[FeatureInput]:
    """Store features from a (Geo)DataFrame: fid from `id_column`, every column a property."""
    attributes = frame.drop(columns=[c for c in ("geometry",) if c in frame.columns])
    names = [str(n) for n in attributes.columns]
    columns = [_json_values(attributes[n]) for n in attributes.columns]
    geoms = frame.geometry.to_numpy() if "geometry" in frame.columns else [None] * len(frame)
    for fid, geom, row in zip(frame[id_column].astype(str), geoms, zip(*columns, strict=True), strict=True):
        yield FeatureInput(fid, geom, {k: v for k, v in zip(names, row, strict=True) if v is not None})


def _schema(frame: pd.DataFrame) -> dict[str, str]:
    return {str(k): str(v) for k, v in frame.drop(columns="geometry", errors="ignore").dtypes.items()}


def write_network(
    store: Store,
    tables: PipeTables,
    *,
    options: TopologyOptions | None = None,
    scenario: Scenario | str = Scenario.current,
    valid_from: datetime | None = None,
    replace: bool = True,
    title: str | None = None,
) -> NetworkIngest:
    """Check, report and write one network's layers (nothing is written if a check fails)."""
    check_tables(tables)
    started = time.perf_counter()
    report = topology_report(tables.nodes, tables.pipes, tables.network, options)
    seconds = time.perf_counter() - started
    ids = tables.layer_ids()
    base = {"network": tables.network, "source_format": tables.source_format}
    name = title or tables.network.replace("_", " ")

    def layer(role: str, kind: LayerKind, label: str, **metadata: Any) -> Layer:
        return Layer(
            id=ids[role],
            kind=kind,
            title=f"{name} {label}",
            scenario=scenario,
            source=tables.source,
            source_crs=tables.source_crs,
            metadata={**base, "role": role, **metadata},
        )

    plan: list[tuple[Layer, pd.DataFrame, str]] = [
        (layer("nodes", LayerKind.pipe_network, "nodes"), tables.nodes, "node_id")
    ]
    links = {"nodes_layer": ids["nodes"]}
    if tables.valves is not None:
        plan.append((layer("valves", LayerKind.pipe_network, "valves"), tables.valves, "valve_id"))
        links["valves_layer"] = ids["valves"]
    summary = {k: v for k, v in report.counts.items() if v}
    pipes_layer = layer("pipes", LayerKind.pipe_network, "pipes", **links, **tables.metadata, topology=summary)
    plan.append((pipes_layer, tables.pipes, "pipe_id"))
    for extra in tables.extras:
        plan.append((layer(extra.suffix, LayerKind.vector, extra.title), extra.frame, extra.id_column))
    writes = []
    mode = WriteMode.replace if replace else WriteMode.upsert
    for target, frame, id_column in plan:
        target.geometry_type = geometry_type(frame.geometry.to_numpy())
        target.schema = _schema(frame)
        writes.append(store.write_features(target, features_of(frame, id_column), valid_from=valid_from, mode=mode))
    return NetworkIngest(tables.network, writes, report, tables.notes, seconds)
