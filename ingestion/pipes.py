"""Surveyed pipe tables (CJJ 61 point and line tables) into pipe networks.

A delivery is a file or a folder of GeoPackage, Shapefile, GeoJSON or CSV tables. Every table
with point geometries (or, for CSV, easting/northing columns) is a point table; every table with
lines (or, for CSV, start/end point ids) is a line table. Their fields are read through the
field mapping (`ingestion.pipe_schema`). Each pipe's CJJ 61 class code (its `class` field, else
the prefix of its id or of its start point id, else `--class`) picks its network: JS water, PS/
YS/WS/HS drainage, RQ gas, RL heat, DL power, TX telecom. One delivery may hold several.

Points: CSV coordinates may come in the surveyors' order (X north, Y east); when the given
order falls outside the CRS's area and the swapped one inside, they are swapped (a note says
so). Lines without geometry run straight between their points. Lines without point ids get
points by snapping their ends within the tolerance to the point table, or to each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import shapely
from pyogrio.errors import DataLayerError, DataSourceError
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from ingestion import pipe_schema as schema
from ingestion.pipe_tables import NetworkIngest, PipeTables, check_tables, in_crs_area, read_csv_table, write_network
from ingestion.topology import TopologyOptions
from ingestion.vector import _declared_crs, _first_line
from twin import crs as crs_mod
from twin.model import InvalidInput, NotFound, Scenario
from twin.store import Store

TABLE_SUFFIXES = (".gpkg", ".shp", ".geojson", ".json", ".csv", ".fgb", ".gml", ".kml")
POINT_NUMBERS = ("easting", "northing", "ground_elev", "depth", "elev", "invert_elev", "demand")
LINE_NUMBERS = (
    "start_depth",
    "end_depth",
    "start_elev",
    "end_elev",
    "start_invert",
    "end_invert",
    "length",
    "pressure",
    "voltage",
    "cables",
)


@dataclass
class _Table:
    name: str
    frame: pd.DataFrame
    crs: str | None


def _tables(path: Path, only: set[str] | None) -> list[_Table]:
    path = Path(path)
    if not path.exists():
        raise NotFound(f"{path}: no such file or directory")
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in TABLE_SUFFIXES) if path.is_dir() else [path]
    tables: list[_Table] = []
    for file in files:
        if file.suffix.lower() == ".csv":
            if only is None or file.stem in only:
                tables.append(_Table(file.stem, read_csv_table(file), None))
            continue
        try:
            names = [str(row[0]) for row in pyogrio.list_layers(file)]
            for name in names:
                if only is not None and name not in only:
                    continue
                frame = pyogrio.read_dataframe(file, layer=name)
                crs = frame.crs if isinstance(frame, gpd.GeoDataFrame) else None
                tables.append(_Table(f"{file.name}:{name}", frame, crs))
        except (DataSourceError, DataLayerError, OSError, ValueError) as exc:
            raise InvalidInput(f"{file}: not a readable vector data file ({_first_line(exc)})") from exc
    if not tables:
        raise InvalidInput(f"{path}: no pipe tables found (GeoPackage, Shapefile, GeoJSON or CSV)")
    return tables


def _geometry_kind(frame: pd.DataFrame) -> str | None:
    if not isinstance(frame, gpd.GeoDataFrame) or "geometry" not in frame.columns:
        return None
    types = set(frame.geometry.dropna().geom_type)
    if types and types <= {"Point", "MultiPoint"}:
        return "points"
    if types and types <= {"LineString", "MultiLineString"}:
        return "lines"
    return None


def _split(tables: list[_Table], mapping: schema.FieldMapping) -> tuple[list[_Table], list[_Table]]:
    points, lines = [], []
    for table in tables:
        kind = _geometry_kind(table.frame)
        if kind is None:
            renamed_points = schema.rename_columns(table.frame, mapping.points)
            renamed_lines = schema.rename_columns(table.frame, mapping.lines)
            if {"start_id", "end_id"} <= set(renamed_lines.columns):
                kind = "lines"
            elif {"easting", "northing"} <= set(renamed_points.columns):
                kind = "points"
        if kind == "points":
            points.append(table)
        elif kind == "lines":
            lines.append(table)
        else:
            raise InvalidInput(
                f"{table.name}: neither a point table (point geometries or easting/northing fields) nor a "
                "line table (line geometries or start/end point ids); see the field mapping"
            )
    if not lines:
        raise InvalidInput("no line table (pipes) found in the delivery")
    return points, lines


def _source_crs(table: _Table, given: str | None, project_crs: str) -> str:
    if table.crs is None and given is None:
        return project_crs  # CSV coordinates without a CRS: the project's own
    return _declared_crs(table.crs, given, Path(table.name))


def _points(tables: list[_Table], mapping, source_crs, project_crs, notes: list[str]) -> gpd.GeoDataFrame:
    frames = []
    for table in tables:
        frame = schema.rename_columns(table.frame, mapping.points)
        crs = _source_crs(table, source_crs, project_crs)
        if _geometry_kind(table.frame) == "points":
            geoms = crs_mod.transform_geometries(frame.geometry.to_numpy(), crs, project_crs)
            frame = pd.DataFrame(frame.drop(columns="geometry"))
        else:
            schema.numbers(frame, ("easting", "northing"))
            x, y = frame["easting"].to_numpy(dtype=float), frame["northing"].to_numpy(dtype=float)
            if np.isnan(x).any() or np.isnan(y).any():
                raise InvalidInput(f"{table.name}: some points have no coordinates")
            if not in_crs_area(x, y, crs) and in_crs_area(y, x, crs):
                x, y = y, x
                notes.append(f"{table.name}: coordinates read as X north, Y east (surveying order)")
            geoms = crs_mod.transform_geometries(shapely.points(x, y), crs, project_crs)
            frame = frame.drop(columns=["easting", "northing"])
        frames.append(gpd.GeoDataFrame(frame, geometry=np.asarray(geoms), crs=project_crs))
    if not frames:
        return gpd.GeoDataFrame({"node_id": []}, geometry=[], crs=project_crs)
    points = pd.concat(frames, ignore_index=True)
    if "node_id" not in points.columns:
        raise InvalidInput("the point table has no point id field (物探点号 / node_id); see the field mapping")
    points["node_id"] = points["node_id"].map(_id_text)
    return gpd.GeoDataFrame(points, geometry="geometry", crs=project_crs)


def _id_text(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return value if value is None or (isinstance(value, float) and np.isnan(value)) else str(value).strip()


def _lines(tables: list[_Table], mapping, source_crs, project_crs) -> gpd.GeoDataFrame:
    frames = []
    for table in tables:
        frame = schema.rename_columns(table.frame, mapping.lines)
        if _geometry_kind(table.frame) == "lines":
            crs = _source_crs(table, source_crs, project_crs)
            geoms = crs_mod.transform_geometries(frame.geometry.to_numpy(), crs, project_crs)
            frame = pd.DataFrame(frame.drop(columns="geometry"))
        else:
            geoms = np.full(len(frame), None, dtype=object)
        frame = gpd.GeoDataFrame(frame, geometry=np.asarray(geoms, dtype=object), crs=project_crs)
        frames.append(frame)
    lines = gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), geometry="geometry", crs=project_crs)
    multi = lines.geometry.geom_type == "MultiLineString"
    if multi.any():
        merged = shapely.line_merge(lines.geometry[multi].to_numpy())
        if (shapely.get_type_id(merged) != 1).any():
            raise InvalidInput("a pipe's line has several disjoint parts; split it into pipes")
        lines.loc[multi, "geometry"] = merged
    for column in ("start_id", "end_id", "pipe_id"):
        if column in lines.columns:
            lines[column] = lines[column].map(_id_text)
    return lines


def _snap_ends(
    lines: gpd.GeoDataFrame, points: gpd.GeoDataFrame, tolerance: float
) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    """Points for lines that name none: the nearest point within `tolerance`, else a new one."""
    geoms = lines.geometry.to_numpy()
    if (~shapely.is_geometry(geoms)).any():
        raise InvalidInput("lines without point ids need line geometries")
    ends = np.concatenate((shapely.get_point(geoms, 0), shapely.get_point(geoms, -1)))
    ids = np.full(len(ends), None, dtype=object)
    if len(points):
        tree = shapely.STRtree(points.geometry.to_numpy())
        hits, _ = tree.query_nearest(ends, max_distance=tolerance, return_distance=True)
        ids[hits[0]] = points["node_id"].to_numpy()[hits[1]]
    free = np.flatnonzero(ids == None)  # noqa: E711 (elementwise)
    if len(free):
        # Ends within the tolerance of each other share a new point.
        tree = shapely.STRtree(ends[free])
        a, b = tree.query(ends[free], predicate="dwithin", distance=tolerance)
        _, labels = connected_components(coo_matrix((np.ones(len(a)), (a, b)), shape=(len(free), len(free))))
        ids[free] = [f"N{label + 1:06d}" for label in labels]
        new = pd.DataFrame({"node_id": ids[free], "geometry": ends[free]}).drop_duplicates("node_id")
        points = pd.concat([points, gpd.GeoDataFrame(new, geometry="geometry", crs=points.crs)], ignore_index=True)
    lines = lines.copy()
    lines["start_id"], lines["end_id"] = ids[: len(lines)], ids[len(lines) :]
    return lines, gpd.GeoDataFrame(points, geometry="geometry", crs=lines.crs)


def _straight_lines(lines: gpd.GeoDataFrame, points: gpd.GeoDataFrame) -> None:
    missing = ~shapely.is_geometry(lines.geometry.to_numpy())
    if not missing.any():
        return
    where = points.set_index("node_id").geometry
    start = where.reindex(lines.loc[missing, "start_id"]).to_numpy()
    end = where.reindex(lines.loc[missing, "end_id"]).to_numpy()
    absent = ~shapely.is_geometry(start) | ~shapely.is_geometry(end)
    if absent.any():
        row = lines.loc[missing].iloc[int(np.flatnonzero(absent)[0])]
        raise InvalidInput(f"pipe {row['start_id']} → {row['end_id']} names a point the point table lacks")
    coords = np.stack((shapely.get_coordinates(start)[:, :2], shapely.get_coordinates(end)[:, :2]), axis=1)
    lines.loc[missing, "geometry"] = shapely.linestrings(coords)


def _pipe_ids(lines: gpd.GeoDataFrame) -> None:
    """Line tables often identify a pipe by its two points: 'JS001-JS002' (with '#2' on repeats)."""
    given = lines["pipe_id"] if "pipe_id" in lines.columns else pd.Series([None] * len(lines), index=lines.index)
    made = lines["start_id"].astype(str) + "-" + lines["end_id"].astype(str)
    repeat = made.groupby(made).cumcount()
    made = made.where(repeat == 0, made + "#" + (repeat + 1).astype(str))
    lines["pipe_id"] = given.where(given.notna() & (given.astype(str) != ""), made)


def _classes(
    lines: gpd.GeoDataFrame, mapping: schema.FieldMapping, pipe_class: str | None, network: str | None
) -> pd.Series:
    """The network of every pipe, from its class code (or the one given)."""
    codes = lines["class"] if "class" in lines.columns else pd.Series([None] * len(lines), index=lines.index)
    codes = codes.where(codes.notna() & (codes.astype(str).str.strip() != ""), None)
    for column in ("pipe_id", "start_id"):
        codes = codes.where(codes.notna(), mapping.class_prefixes(lines[column]))
    if pipe_class:
        codes = codes.where(codes.notna(), pipe_class.upper())
    lines["class"] = codes.map(lambda c: str(c).strip().upper() if pd.notna(c) else None)
    if lines["class"].isna().any():
        if network:
            return pd.Series(network, index=lines.index)
        raise InvalidInput("the pipes carry no CJJ 61 class code (JS, PS, RQ, ...): give one with --class")
    networks = mapping.networks_of(lines["class"])
    unknown = sorted(set(lines.loc[networks.isna(), "class"]))
    if unknown:
        raise InvalidInput(f"unknown pipe class code(s) {unknown}; known: {', '.join(mapping.classes)}")
    if network:
        if networks.nunique() > 1:
            raise InvalidInput(
                f"the pipes belong to several networks ({', '.join(sorted(set(networks)))}); "
                "ingest without --layer to get one layer pair per network"
            )
        return pd.Series(network, index=lines.index)
    return networks


def _normalise(points: gpd.GeoDataFrame, lines: gpd.GeoDataFrame, mapping: schema.FieldMapping) -> None:
    schema.numbers(points, POINT_NUMBERS)
    schema.numbers(lines, LINE_NUMBERS)
    schema.sizes(lines)
    schema.years(lines)
    schema.flags(points, ("operable", "accessible", "critical"))
    schema.flags(lines, ("critical",))
    schema.statuses(points)
    schema.node_types(points, mapping)
    given = lines["length"].to_numpy(dtype=float) if "length" in lines.columns else np.full(len(lines), np.nan)
    lines["length"] = np.round(np.where(np.isnan(given), shapely.length(lines.geometry.to_numpy()), given), 3)


def read_pipe_tables(
    path: Path,
    project_crs: str,
    *,
    mapping_path: Path | None = None,
    source_crs: str | None = None,
    source_layers: list[str] | None = None,
    pipe_class: str | None = None,
    network: str | None = None,
    tolerance: float = 0.05,
) -> list[PipeTables]:
    """The networks of a pipe delivery, one `PipeTables` per network, in the project CRS."""
    mapping = schema.load_mapping(mapping_path)
    notes: list[str] = []
    tables = _tables(Path(path), set(source_layers) if source_layers else None)
    point_tables, line_tables = _split(tables, mapping)
    points = _points(point_tables, mapping, source_crs, project_crs, notes)
    lines = _lines(line_tables, mapping, source_crs, project_crs)
    if not {"start_id", "end_id"} <= set(lines.columns):
        lines, points = _snap_ends(lines, points, tolerance)
        notes.append(f"lines without point ids: ends snapped to points within {tolerance:g} m")
    elif not len(points):
        raise InvalidInput("the lines name their points but no point table was found")
    _straight_lines(lines, points)
    _pipe_ids(lines)
    networks = _classes(lines, mapping, pipe_class, network)
    _normalise(points, lines, mapping)
    return _per_network(points, lines, networks, mapping, str(path), source_crs or project_crs, notes)


def _per_network(points, lines, networks: pd.Series, mapping, source: str, crs: str, notes) -> list[PipeTables]:
    """Split by network; each point goes with the networks of its pipes (or its own class)."""
    names = sorted(set(networks))
    ends = pd.concat([lines["start_id"], lines["end_id"]], ignore_index=True)
    end_network = pd.concat([networks, networks], ignore_index=True)
    on_pipes = points["node_id"].isin(ends)
    own = mapping.networks_of(points["class"]) if "class" in points.columns else pd.Series(None, index=points.index)
    own = own.where(own.notna(), mapping.networks_of(mapping.class_prefixes(points["node_id"])))
    out = []
    for name in names:
        linked = points["node_id"].isin(ends[(end_network == name).to_numpy()])
        alone = ~on_pipes & ((own == name) | (own.isna() & (len(names) == 1)))
        nodes = points[(linked | alone).to_numpy()].reset_index(drop=True)
        pipes = lines[(networks == name).to_numpy()].reset_index(drop=True)
        out.append(PipeTables(name, nodes, pipes, source, crs, "gis", notes=list(notes)))
    return out


def ingest_networks(
    store: Store,
    networks: list[PipeTables],
    *,
    options: TopologyOptions | None = None,
    scenario: Scenario | str = Scenario.current,
    valid_from: datetime | None = None,
    replace: bool = True,
) -> list[NetworkIngest]:
    """Write every network of a delivery once all of them passed their checks."""
    for tables in networks:
        check_tables(tables)
    return [
        write_network(store, tables, options=options, scenario=scenario, valid_from=valid_from, replace=replace)
        for tables in networks
    ]


def ingest_pipes(
    store: Store,
    path: Path,
    *,
    network: str | None = None,
    mapping_path: Path | None = None,
    source_crs: str | None = None,
    source_layers: list[str] | None = None,
    pipe_class: str | None = None,
    options: TopologyOptions | None = None,
    scenario: Scenario | str = Scenario.current,
    valid_from: datetime | None = None,
    replace: bool = True,
) -> list[NetworkIngest]:
    """Read a pipe delivery and write its networks (each layer atomic; all checked first)."""
    options = options or TopologyOptions()
    networks = read_pipe_tables(
        path,
        store.crs,
        mapping_path=mapping_path,
        source_crs=source_crs,
        source_layers=source_layers,
        pipe_class=pipe_class,
        network=network,
        tolerance=options.tolerance,
    )
    return ingest_networks(store, networks, options=options, scenario=scenario, valid_from=valid_from, replace=replace)
