"""The topology report of a pipe network: what a surveyor must look at before trusting it.

Every ingest of pipes (GIS tables, EPANET, SWMM) runs it on the canonical tables (see
`ingestion.pipe_tables`): nodes with `node_id`, `type` and point geometries, pipes with
`pipe_id`, `start_id`, `end_id`, `class` and line geometries; depths and elevations when known.
Each finding names the elements and a location (project CRS), so that a GIS can zoom to it.

Checks:

- `dangles`: a pipe end at a point that no other pipe touches, where the point is no end
  feature (hydrant, service connection, outfall, source, stub, head manhole, ...), and any
  loose end within the snapping tolerance of another pipe, named in `near`: the end was
  probably meant to join it (undershoot).
- `duplicate_pipes`: pipes between the same two points whose lines coincide within the
  tolerance; `duplicate_nodes`: distinct points closer than the tolerance.
- `zero_length`: pipes shorter than the tolerance, or from a point to itself.
- `over_long`: pipes longer than `max_length` (a survey puts points along long runs).
- `disconnected_parts`: connected parts without a source or an outfall; when the network has
  neither, every part but the largest.
- `depth_rule`: ground elevation = depth + pipe elevation, at points (`depth`, `invert_elev`
  or `elev`) and at pipe ends (`start_depth` with `start_elev` or `start_invert`, same for the
  end), beyond `elevation_tolerance`.
- `inconsistent_attributes`: pipes of different classes at one point; a pipe end whose depth
  differs from its point's depth at a point that is no chamber (manholes and inlets have drops);
  a diameter change at a plain in-line point that is no reducer.
- `isolated_nodes`: points on no pipe (a valve on no pipe, for instance).
- `misplaced_ends`: a pipe whose line ends farther than the tolerance from its point.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import shapely
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

DEFAULT_TOLERANCE = 0.05
DEFAULT_MAX_LENGTH = 500.0
DEFAULT_ELEVATION_TOLERANCE = 0.05
END_TYPES = frozenset(
    {
        "hydrant",
        "service",
        "outfall",
        "inlet",
        "stub",
        "plug",
        "plant",
        "tank",
        "reservoir",
        "pump_station",
        "station",
        "source",
        "storage",
        "well",
        "manhole",
    }
)
END_FEATURES = frozenset({"预留口", "堵头", "盲板", "stub", "plug"})
"""CJJ 61 point features that end a pipe on purpose, whatever the point's type says."""
SOURCE_TYPES = frozenset({"plant", "tank", "reservoir", "pump_station", "station", "source"})
OUTFALL_TYPES = frozenset({"outfall"})
CHAMBER_TYPES = frozenset({"manhole", "inlet", "outfall", "well", "chamber", "storage", "divider"})
PLAIN_TYPES = frozenset({"junction"})
REDUCER_FEATURES = frozenset({"变径", "reducer"})
CHECKS = (
    "dangles",
    "duplicate_pipes",
    "duplicate_nodes",
    "zero_length",
    "over_long",
    "disconnected_parts",
    "depth_rule",
    "inconsistent_attributes",
    "isolated_nodes",
    "misplaced_ends",
)


@dataclass(frozen=True)
class TopologyOptions:
    """Tolerances in project-CRS metres."""

    tolerance: float = DEFAULT_TOLERANCE
    max_length: float = DEFAULT_MAX_LENGTH
    elevation_tolerance: float = DEFAULT_ELEVATION_TOLERANCE


@dataclass
class TopologyReport:
    """Findings per check; each finding is a small JSON-ready dict."""

    network: str
    nodes: int
    pipes: int
    parts: int
    options: TopologyOptions
    findings: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: {name: [] for name in CHECKS})

    @property
    def counts(self) -> dict[str, int]:
        return {name: len(items) for name, items in self.findings.items()}

    def as_dict(self, limit: int | None = None) -> dict[str, Any]:
        """The report as JSON; `limit` keeps the first findings per check (the counts stay whole)."""
        return {
            "network": self.network,
            "nodes": self.nodes,
            "pipes": self.pipes,
            "parts": self.parts,
            "tolerance": self.options.tolerance,
            "max_length": self.options.max_length,
            "elevation_tolerance": self.options.elevation_tolerance,
            "counts": self.counts,
            "findings": {name: items[:limit] for name, items in self.findings.items()},
        }


def _column(frame: pd.DataFrame, *names: str) -> np.ndarray:
    """The first of `names` present as floats (NaN where missing), else all NaN."""
    for name in names:
        if name in frame.columns:
            return pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=float)
    return np.full(len(frame), np.nan)


def _text(frame: pd.DataFrame, name: str) -> np.ndarray:
    if name not in frame.columns:
        return np.full(len(frame), "", dtype=object)
    return frame[name].fillna("").astype(str).to_numpy(dtype=object)


def _xy(point: Any) -> list[float] | None:
    if point is None or shapely.is_empty(point):
        return None
    return [round(float(point.x), 3), round(float(point.y), 3)]


class _Network:
    """Index arrays shared by the checks."""

    def __init__(self, nodes: pd.DataFrame, pipes: pd.DataFrame) -> None:
        self.nodes, self.pipes = nodes, pipes
        self.node_ids = nodes["node_id"].astype(str).to_numpy(dtype=object)
        self.pipe_ids = pipes["pipe_id"].astype(str).to_numpy(dtype=object)
        table = pd.Index(self.node_ids)
        self.start = table.get_indexer(pipes["start_id"].astype(str))
        self.end = table.get_indexer(pipes["end_id"].astype(str))
        if (self.start < 0).any() or (self.end < 0).any():
            raise ValueError("every pipe end must name a node of the table")
        self.node_type = _text(nodes, "type")
        self.points = nodes.geometry.to_numpy()
        self.lines = pipes.geometry.to_numpy()
        n = len(self.node_ids)
        self.degree = np.bincount(np.concatenate((self.start, self.end)), minlength=n)
        # Incidences: one row per pipe end.
        self.end_node = np.concatenate((self.start, self.end))
        self.end_pipe = np.concatenate((np.arange(len(self.pipe_ids)),) * 2)
        self.end_is_start = np.repeat([True, False], len(self.pipe_ids))

    def length(self) -> np.ndarray:
        """The stated `length` where given (EPANET and SWMM drawings are schematic), else the line's."""
        stated = _column(self.pipes, "length")
        return np.where(np.isfinite(stated), stated, shapely.length(self.lines))

    def node(self, i: int, **extra: Any) -> dict[str, Any]:
        return {"node": str(self.node_ids[i]), "type": str(self.node_type[i]), "at": _xy(self.points[i]), **extra}

    def pipe(self, j: int, **extra: Any) -> dict[str, Any]:
        line = self.lines[j]
        at = (
            None
            if line is None or shapely.is_empty(line)
            else _xy(shapely.line_interpolate_point(line, 0.5, normalized=True))
        )
        return {"pipe": str(self.pipe_ids[j]), "at": at, **extra}


def topology_report(
    nodes: pd.DataFrame, pipes: pd.DataFrame, network: str = "", options: TopologyOptions | None = None
) -> TopologyReport:
    """Run every check on a network's canonical tables (GeoDataFrames, project CRS)."""
    options = options or TopologyOptions()
    net = _Network(nodes, pipes)
    n_parts, labels = _parts(net)
    report = TopologyReport(network, len(net.node_ids), len(net.pipe_ids), n_parts, options)
    found = report.findings
    found["dangles"] = _dangles(net, options)
    found["duplicate_pipes"] = _duplicate_pipes(net, options)
    found["duplicate_nodes"] = _duplicate_nodes(net, options)
    found["zero_length"] = _zero_length(net, options)
    length = net.length()
    found["over_long"] = [
        net.pipe(int(j), length=round(float(length[j]), 3)) for j in np.flatnonzero(length > options.max_length)
    ]
    found["disconnected_parts"] = _disconnected(net, n_parts, labels)
    found["depth_rule"] = _depth_rule(net, options)
    found["inconsistent_attributes"] = _inconsistent(net, options)
    found["isolated_nodes"] = [net.node(int(i)) for i in np.flatnonzero(net.degree == 0)]
    found["misplaced_ends"] = _misplaced(net, options)
    return report


def _parts(net: _Network) -> tuple[int, np.ndarray]:
    n = len(net.node_ids)
    graph = coo_matrix((np.ones(len(net.start), dtype=np.int8), (net.start, net.end)), shape=(n, n))
    return connected_components(graph, directed=False)


def _dangles(net: _Network, options: TopologyOptions) -> list[dict[str, Any]]:
    """Loose ends that are no end feature, and any loose end touching another pipe (undershoot)."""
    loose = np.flatnonzero(net.degree == 1)
    if not len(loose):
        return []
    single = net.degree[net.end_node] == 1
    own = dict(zip(net.end_node[single].tolist(), net.end_pipe[single].tolist(), strict=True))
    tree = shapely.STRtree(net.lines)
    hits = tree.query(net.points[loose], predicate="dwithin", distance=max(options.tolerance, 1e-9))
    near: dict[int, str] = {}
    for k, j in zip(hits[0].tolist(), hits[1].tolist(), strict=True):
        node = int(loose[k])
        if j != own[node] and node not in near:
            near[node] = str(net.pipe_ids[j])
    meant = np.isin(net.node_type, list(END_TYPES)) | np.isin(_text(net.nodes, "feature"), list(END_FEATURES))
    found = [i for i in loose.tolist() if not meant[i] or i in near]
    return [net.node(i, pipe=str(net.pipe_ids[own[i]]), near=near.get(i)) for i in found]


def _duplicate_pipes(net: _Network, options: TopologyOptions) -> list[dict[str, Any]]:
    low, high = np.minimum(net.start, net.end), np.maximum(net.start, net.end)
    key = pd.Series(low.astype(np.int64) * len(net.node_ids) + high)
    repeated = key[key.duplicated(keep=False)]
    out = []
    for _, group in repeated.groupby(repeated):
        members = group.index.to_numpy()
        first = members[0]
        same = [
            j for j in members[1:] if shapely.hausdorff_distance(net.lines[first], net.lines[j]) <= options.tolerance
        ]
        if same:
            out.append(net.pipe(int(first), duplicates=[str(net.pipe_ids[j]) for j in same]))
    return out


def _duplicate_nodes(net: _Network, options: TopologyOptions) -> list[dict[str, Any]]:
    tree = shapely.STRtree(net.points)
    a, b = tree.query(net.points, predicate="dwithin", distance=max(options.tolerance, 1e-9))
    keep = a < b
    return [net.node(int(i), duplicate=str(net.node_ids[j])) for i, j in zip(a[keep], b[keep], strict=True)]


def _zero_length(net: _Network, options: TopologyOptions) -> list[dict[str, Any]]:
    length = net.length()
    bad = (length < options.tolerance) | (net.start == net.end)
    return [net.pipe(int(j), length=round(float(length[j]), 3)) for j in np.flatnonzero(bad)]


def _disconnected(net: _Network, n_parts: int, labels: np.ndarray) -> list[dict[str, Any]]:
    if n_parts <= 1:
        return []
    anchors = np.isin(net.node_type, list(SOURCE_TYPES | OUTFALL_TYPES))
    nodes_per_part = np.bincount(labels, minlength=n_parts)
    pipes_per_part = np.bincount(labels[net.start], minlength=n_parts)
    isolated = nodes_per_part == 1
    isolated &= pipes_per_part == 0  # points on no pipe are reported as isolated nodes
    if anchors.any():
        anchored = np.zeros(n_parts, dtype=bool)
        anchored[labels[anchors]] = True
        loose = np.flatnonzero(~anchored & ~isolated)
    else:
        largest = int(np.argmax(nodes_per_part))
        loose = np.array([p for p in range(n_parts) if p != largest and not isolated[p]], dtype=np.int64)
    out = []
    for part in loose:
        members = np.flatnonzero(labels == part)
        first = int(members[0])
        out.append(
            net.node(
                first,
                nodes=int(nodes_per_part[part]),
                pipes=int(pipes_per_part[part]),
                node_ids=[str(v) for v in net.node_ids[members[:20]]],
            )
        )
    return out


def _depth_rule(net: _Network, options: TopologyOptions) -> list[dict[str, Any]]:
    tol = options.elevation_tolerance
    ground = _column(net.nodes, "ground_elev")
    depth = _column(net.nodes, "depth")
    elev = _column(net.nodes, "invert_elev", "elev")
    out = []
    gap = ground - (depth + elev)
    for i in np.flatnonzero(np.abs(gap) > tol):
        out.append(net.node(int(i), ground_elev=ground[i], depth=depth[i], elev=elev[i], difference=round(gap[i], 3)))
    for side, node in (("start", net.start), ("end", net.end)):
        end_depth = _column(net.pipes, f"{side}_depth")
        end_elev = _column(net.pipes, f"{side}_elev", f"{side}_invert")
        gap = ground[node] - (end_depth + end_elev)
        for j in np.flatnonzero(np.abs(gap) > tol):
            out.append(
                net.pipe(
                    int(j),
                    end=side,
                    node=str(net.node_ids[node[j]]),
                    ground_elev=ground[node[j]],
                    depth=end_depth[j],
                    elev=end_elev[j],
                    difference=round(gap[j], 3),
                )
            )
    return out


def _inconsistent(net: _Network, options: TopologyOptions) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    ends = pd.DataFrame(
        {
            "node": net.end_node,
            "pipe": net.end_pipe,
            "cls": _text(net.pipes, "class")[net.end_pipe],
            "depth": np.where(
                net.end_is_start,
                _column(net.pipes, "start_depth")[net.end_pipe],
                _column(net.pipes, "end_depth")[net.end_pipe],
            ),
            "diameter": _column(net.pipes, "diameter")[net.end_pipe],
        }
    )
    classed = ends[ends["cls"] != ""]
    mixed = classed.groupby("node")["cls"].nunique()
    for node in mixed.index[mixed.to_numpy() > 1]:
        values = sorted(set(classed.loc[classed["node"] == node, "cls"]))
        out.append(net.node(int(node), problem="classes", values=values))
    node_depth = _column(net.nodes, "depth")[ends["node"].to_numpy()]
    chamber = np.isin(net.node_type[ends["node"].to_numpy()], list(CHAMBER_TYPES))
    off = ~chamber & (np.abs(ends["depth"].to_numpy() - node_depth) > options.elevation_tolerance)
    for node, group in ends[off].groupby("node"):
        out.append(
            net.node(
                int(node),
                problem="depth",
                node_depth=float(_column(net.nodes, "depth")[node]),
                pipes={str(net.pipe_ids[p]): float(d) for p, d in zip(group["pipe"], group["depth"], strict=True)},
            )
        )
    features = _text(net.nodes, "feature")
    plain = (net.degree == 2) & np.isin(net.node_type, list(PLAIN_TYPES)) & ~np.isin(features, list(REDUCER_FEATURES))
    sizes = ends[plain[ends["node"].to_numpy()]].groupby("node")["diameter"].agg(["min", "max"])
    for node, row in sizes[sizes["min"] != sizes["max"]].iterrows():
        out.append(net.node(int(node), problem="diameter", values=[float(row["min"]), float(row["max"])]))
    return out


def _misplaced(net: _Network, options: TopologyOptions) -> list[dict[str, Any]]:
    lines = net.lines
    valid = shapely.is_geometry(lines) & ~shapely.is_empty(lines)
    out = []
    for side, node, which in (("start", net.start, 0), ("end", net.end, -1)):
        ends = np.full(len(lines), None, dtype=object)
        ends[valid] = shapely.get_point(lines[valid], which)
        gap = np.full(len(lines), np.nan)
        gap[valid] = shapely.distance(ends[valid], net.points[node[valid]])
        for j in np.flatnonzero(gap > options.tolerance):
            out.append(net.pipe(int(j), end=side, node=str(net.node_ids[node[j]]), distance=round(float(gap[j]), 3)))
    return out
