"""SWMM `.inp` drainage models into a drainage network (a small reader of our own).

Sections read: [OPTIONS] (FLOW_UNITS decides feet or metres, LINK_OFFSETS depth or elevation),
[JUNCTIONS] [OUTFALLS] [STORAGE] [DIVIDERS] as nodes, [CONDUITS] [PUMPS] [ORIFICES] [WEIRS]
[OUTLETS] as pipes, [XSECTIONS] for their sections, [COORDINATES] and [VERTICES] for the
drawing, [SUBCATCHMENTS] and [Polygons] for a subcatchments layer. Everything else (hydrology,
controls, time series) belongs to the SWMM model, not to the twin's network, and is skipped.

Values are stored in metres whatever the file's units (US files are in feet and acres):
nodes get `invert_elev`, `depth` (SWMM's maximum depth) and `ground_elev` = invert + depth
(so the depth rule holds by construction); links get `length`, `diameter` or `width`/`height`
in mm, `start_invert`/`end_invert` (node invert plus offset, or the offset itself with
LINK_OFFSETS ELEVATION). A malformed line is refused with its line number.

Coordinates follow the same rules as EPANET files (`source_crs`, or `origin` and `scale` for a
schematic drawing); the class code defaults to PS (drainage) and may be YS, WS or HS.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from ingestion.pipe_tables import Drawing, ExtraLayer, PipeTables
from twin.model import InvalidInput, NotFound

FEET = 0.3048
ACRE_HA = 0.40468564224
US_UNITS = frozenset({"CFS", "GPM", "MGD"})
SI_UNITS = frozenset({"CMS", "LPS", "MLD"})
NODE_SECTIONS = {"JUNCTIONS": "manhole", "OUTFALLS": "outfall", "STORAGE": "storage", "DIVIDERS": "divider"}
LINK_SECTIONS = {"CONDUITS": "conduit", "PUMPS": "pump", "ORIFICES": "orifice", "WEIRS": "weir", "OUTLETS": "outlet"}
# Rectangular and box-like shapes: geom1 is the height, geom2 the width.
BOX_SHAPES = frozenset({"RECT_CLOSED", "RECT_OPEN", "RECT_TRIANGULAR", "RECT_ROUND", "MODBASKETHANDLE", "TRAPEZOIDAL"})
SECTION = re.compile(r"^\[([A-Za-z_]+)\]\s*$")


@dataclass
class _Line:
    number: int
    fields: list[str]


@dataclass
class _Sections:
    path: Path
    rows: dict[str, list[_Line]] = field(default_factory=lambda: defaultdict(list))

    def __call__(self, name: str) -> list[_Line]:
        return self.rows.get(name, [])

    def number(self, line: _Line, index: int, what: str, required: bool = True) -> float:
        if index >= len(line.fields):
            if required:
                raise InvalidInput(f"{self.path}:{line.number}: {what} is missing")
            return math.nan
        try:
            return float(line.fields[index])
        except ValueError:
            if required:
                raise InvalidInput(
                    f"{self.path}:{line.number}: {what} {line.fields[index]!r} is not a number"
                ) from None
            return math.nan


def _parse(path: Path) -> _Sections:
    if not Path(path).is_file():
        raise NotFound(f"{path}: no such file")
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        try:
            text = Path(path).read_text(encoding="gb18030")
        except UnicodeDecodeError as exc:
            raise InvalidInput(f"{path}: not a SWMM .inp text file") from exc
    sections = _Sections(Path(path))
    current = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split(";", 1)[0].strip()
        if not line:
            continue
        match = SECTION.match(line)
        if match:
            current = match.group(1).upper()
            continue
        if current is None:
            raise InvalidInput(f"{path}:{number}: text before the first [SECTION]; is this a SWMM .inp file?")
        sections.rows[current].append(_Line(number, line.split()))
    if not sections("CONDUITS") and not any(sections(s) for s in LINK_SECTIONS):
        raise InvalidInput(f"{path}: no [CONDUITS] (or other links) found; is this a SWMM .inp file?")
    return sections


def _units(sections: _Sections) -> tuple[float, float, bool]:
    """(metres per length unit, hectares per area unit, offsets are elevations)."""
    options = {line.fields[0].upper(): line.fields[1].upper() for line in sections("OPTIONS") if len(line.fields) > 1}
    flow = options.get("FLOW_UNITS", "CFS")
    if flow not in US_UNITS | SI_UNITS:
        raise InvalidInput(f"{sections.path}: unknown FLOW_UNITS {flow!r}")
    metre = FEET if flow in US_UNITS else 1.0
    return metre, ACRE_HA if flow in US_UNITS else 1.0, options.get("LINK_OFFSETS", "DEPTH") == "ELEVATION"


def _nodes(sections: _Sections, metre: float) -> pd.DataFrame:
    rows = []
    for name, kind in NODE_SECTIONS.items():
        for line in sections(name):
            invert = sections.number(line, 1, f"{name.lower()} invert elevation") * metre
            depth = sections.number(line, 2, "maximum depth", required=False) if kind != "outfall" else math.nan
            depth = depth * metre if math.isfinite(depth) and depth > 0 else math.nan
            rows.append(
                {
                    "node_id": line.fields[0],
                    "type": kind,
                    "invert_elev": round(invert, 4),
                    "depth": round(depth, 4),
                    "ground_elev": round(invert + depth, 4),
                }
            )
    if not rows:
        raise InvalidInput(f"{sections.path}: no nodes ([JUNCTIONS], [OUTFALLS], [STORAGE], [DIVIDERS])")
    return pd.DataFrame(rows)


def _sections_of(sections: _Sections, metre: float) -> dict[str, dict[str, float | str]]:
    out: dict[str, dict[str, float | str]] = {}
    for line in sections("XSECTIONS"):
        if len(line.fields) < 2:
            raise InvalidInput(f"{sections.path}:{line.number}: a cross-section needs a link and a shape")
        shape = line.fields[1].upper()
        geom1 = sections.number(line, 2, "geom1", required=False) * metre * 1000.0
        geom2 = sections.number(line, 3, "geom2", required=False) * metre * 1000.0
        barrels = sections.number(line, 6, "barrels", required=False)
        entry: dict[str, float | str] = {"shape": shape.lower(), "barrels": barrels if math.isfinite(barrels) else 1}
        if shape in BOX_SHAPES:
            entry.update(height=round(geom1, 1), width=round(geom2, 1))
        elif math.isfinite(geom1):
            entry["diameter"] = round(geom1, 1)
        out[line.fields[0]] = entry
    return out


def _links(sections: _Sections, nodes: pd.DataFrame, metre: float, elevation_offsets: bool) -> pd.DataFrame:
    invert = dict(zip(nodes["node_id"], nodes["invert_elev"], strict=True))
    shapes = _sections_of(sections, metre)
    rows = []
    for name, kind in LINK_SECTIONS.items():
        for line in sections(name):
            if len(line.fields) < 3:
                raise InvalidInput(f"{sections.path}:{line.number}: a link needs a name, a from node and a to node")
            link, start, end = line.fields[:3]
            for node in (start, end):
                if node not in invert:
                    raise InvalidInput(f"{sections.path}:{line.number}: link {link!r} names unknown node {node!r}")
            row = {"pipe_id": link, "start_id": start, "end_id": end, "kind": kind, **shapes.get(link, {})}
            if kind == "conduit":
                row["length"] = round(sections.number(line, 3, "conduit length") * metre, 3)
                row["roughness"] = sections.number(line, 4, "Manning roughness")
                offsets = [sections.number(line, i, "offset", required=False) for i in (5, 6)]
                for side, node, offset in (("start", start, offsets[0]), ("end", end, offsets[1])):
                    offset = (0.0 if not math.isfinite(offset) else offset) * metre
                    row[f"{side}_invert"] = round(offset if elevation_offsets else invert[node] + offset, 4)
            rows.append(row)
    frame = pd.DataFrame(rows)
    repeated = frame["pipe_id"][frame["pipe_id"].duplicated()]
    if len(repeated):
        raise InvalidInput(f"{sections.path}: repeated link names: {', '.join(repeated.head(5))}")
    return frame


def _coordinates(sections: _Sections, name: str) -> dict[str, list[tuple[float, float]]]:
    out: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for line in sections(name):
        out[line.fields[0]].append((sections.number(line, 1, "x coordinate"), sections.number(line, 2, "y coordinate")))
    return out


def _subcatchments(sections: _Sections, area_ha: float) -> pd.DataFrame:
    rows = []
    for line in sections("SUBCATCHMENTS"):
        rows.append(
            {
                "subcatchment_id": line.fields[0],
                "raingage": line.fields[1] if len(line.fields) > 1 else None,
                "outlet": line.fields[2] if len(line.fields) > 2 else None,
                "area_ha": round(sections.number(line, 3, "subcatchment area") * area_ha, 4),
                "imperviousness": sections.number(line, 4, "imperviousness", required=False),
                "slope": sections.number(line, 6, "slope", required=False),
            }
        )
    return pd.DataFrame(rows)


def read_swmm(
    path: Path,
    project_crs: str,
    *,
    network: str = "drainage",
    pipe_class: str = "PS",
    source_crs: str | None = None,
    origin: tuple[float, float] | None = None,
    scale: float = 1.0,
) -> PipeTables:
    """The drainage network of a SWMM file (and its subcatchments) in the project CRS."""
    sections = _parse(Path(path))
    metre, area_ha, elevation_offsets = _units(sections)
    nodes = _nodes(sections, metre)
    links = _links(sections, nodes, metre, elevation_offsets)
    at = _coordinates(sections, "COORDINATES")
    missing = [n for n in nodes["node_id"] if n not in at]
    if missing:
        raise InvalidInput(f"{path}: nodes without [COORDINATES]: {', '.join(missing[:5])}")
    vertices = _coordinates(sections, "VERTICES")
    drawn = [
        np.array([at[s][0], *vertices.get(link, []), at[e][0]])
        for link, s, e in links[["pipe_id", "start_id", "end_id"]].itertuples(index=False)
    ]
    polygons = _coordinates(sections, "POLYGONS")
    every = np.vstack([np.array([at[n][0] for n in nodes["node_id"]]), *drawn])
    drawing = Drawing.of(every, project_crs, source_crs, origin, scale, path)
    points = shapely.points(drawing.place([at[n][0] for n in nodes["node_id"]]))
    lines = np.array([shapely.linestrings(drawing.place(c)) for c in drawn], dtype=object)
    nodes["class"] = links["class"] = pipe_class.upper()
    node_frame = gpd.GeoDataFrame(nodes, geometry=drawing.geometries(points, project_crs), crs=project_crs)
    pipe_frame = gpd.GeoDataFrame(links, geometry=drawing.geometries(lines, project_crs), crs=project_crs)
    tables = PipeTables(network, node_frame, pipe_frame, str(path), drawing.crs, "swmm")
    catchments = _subcatchments(sections, area_ha)
    if len(catchments):
        shapes = [
            shapely.polygons(drawing.place(polygons[c])) if len(polygons.get(c, [])) >= 3 else None
            for c in catchments["subcatchment_id"]
        ]
        geoms = drawing.geometries(np.array(shapes, dtype=object), project_crs)
        frame = gpd.GeoDataFrame(catchments, geometry=geoms, crs=project_crs)
        tables.extras.append(ExtraLayer("subcatchments", "subcatchments", frame, "subcatchment_id"))
    return tables
