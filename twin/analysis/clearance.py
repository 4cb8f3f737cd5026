"""Clearance checks under GB 50289-2016: pipe pairs, and pipes and structures, too close.

- Horizontal (Table 4.1.9): pipes running alongside each other (plan angle at their closest
  points within `parallel_angle`), the plan distance between outer walls.
- Vertical (Table 4.1.14): pipes crossing in plan, the vertical gap between outer walls at the
  crossing point, from the 3D elevations of both (negative: they collide).
- Structures (Table 4.1.9, building row): plan distance from a pipe's outer wall to a building
  footprint or a BIM element's outline; where a pipe runs under one, the vertical gap to its
  bottom (basement) and whether they collide in 3D.

Candidate pairs come from one STRtree query over all pipes (`dwithin` the largest distance any
rule present can ask for); distances, angles and elevations are computed on whole arrays.
Pipes joined at a node (same network) are not pairs; nor is a service pipe and the building
it serves.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import shapely

from twin.analysis.dem_sample import Dem
from twin.analysis.gb50289 import BUILDING, HORIZONTAL, VERTICAL, ClearanceTable, pipe_classes
from twin.analysis.linework import (
    NODE_TOLERANCE,
    angle_degrees,
    directions,
    fractions,
    lonlat_points,
    meeting_points,
    value,
)
from twin.analysis.pipe_solids import PipeSolids
from twin.analysis.section import vertical_clear
from twin.analysis.svg import VIOLATION_COLOUR, Svg, colour, fit_frame, scale_bar
from twin.model import Feature, Layer

DEFAULT_PARALLEL_ANGLE = 30.0
STRUCTURE_REF_FIELDS = ("bid", "building_id", "GlobalId", "global_id")
SERVICE_KINDS = ("service", "接户", "接户管")


@dataclass(eq=False)
class Structures:
    """Buildings or BIM elements: plan outline and the elevations of their bottom and top."""

    layer: np.ndarray
    ids: np.ndarray
    footprint: np.ndarray
    bottom: np.ndarray
    top: np.ndarray
    refs: list[set[str]]

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def empty(cls) -> Structures:
        nothing = np.empty(0, dtype=object)
        return cls(nothing, nothing, nothing, np.empty(0), np.empty(0), [])

    @classmethod
    def concat(cls, parts: Sequence[Structures]) -> Structures:
        if not parts:
            return cls.empty()
        return cls(
            np.concatenate([p.layer for p in parts]),
            np.concatenate([p.ids for p in parts]),
            np.concatenate([p.footprint for p in parts]),
            np.concatenate([p.bottom for p in parts]),
            np.concatenate([p.top for p in parts]),
            [r for p in parts for r in p.refs],
        )


def _prop(feature: Feature, *names: str) -> float:
    for name in names:
        raw = feature.properties.get(name)
        if raw is None or isinstance(raw, bool):
            continue
        try:
            number = float(raw)
        except (TypeError, ValueError):
            continue
        if np.isfinite(number):
            return number
    return np.nan


def structures_from_features(features: Sequence[Feature], layer: Layer, dem: Dem | None, crs: str) -> Structures:
    """Footprints with their vertical extent.

    A 3D geometry gives its own z range (BIM). Otherwise `bottom_elev`/`top_elev` when given,
    else the ground (`ground_elev`, or the DEM at the footprint) minus `basement_depth` (or
    `foundation_depth`) for the bottom and plus `height` for the top.
    """
    geoms = np.array([f.geometry for f in features], dtype=object)
    if not len(geoms):
        return Structures.empty()
    keep = shapely.is_geometry(geoms) & ~shapely.is_empty(geoms)
    feats = [f for f, k in zip(features, keep.tolist(), strict=True) if k]
    geoms = geoms[keep]
    if not len(geoms):
        return Structures.empty()
    flat = shapely.force_2d(geoms)
    polygonal = np.isin(shapely.get_type_id(flat), (3, 6))
    footprint = np.where(polygonal, flat, shapely.convex_hull(flat))
    n = len(feats)
    zmin, zmax = np.full(n, np.nan), np.full(n, np.nan)
    has_z = shapely.has_z(geoms)
    for i in np.flatnonzero(has_z):
        z = shapely.get_coordinates(geoms[i], include_z=True)[:, 2]
        zmin[i], zmax[i] = np.nanmin(z), np.nanmax(z)
    ground = np.array([_prop(f, "ground_elev", "base_elev") for f in feats])
    if dem is not None and (~np.isfinite(ground)).any():
        missing = ~np.isfinite(ground)
        xy = shapely.get_coordinates(shapely.point_on_surface(footprint[missing]))
        ground[missing] = dem.sample(xy[:, 0], xy[:, 1], crs)
    below = np.array([_prop(f, "basement_depth", "foundation_depth") for f in feats])
    height = np.array([_prop(f, "height") for f in feats])
    bottom = np.array([_prop(f, "bottom_elev") for f in feats])
    top = np.array([_prop(f, "top_elev") for f in feats])
    bottom = np.where(np.isfinite(bottom), bottom, np.where(has_z, zmin, ground - np.nan_to_num(below, nan=0.0)))
    top = np.where(np.isfinite(top), top, np.where(has_z, zmax, ground + height))
    refs = [{f.fid, *(str(f.properties[k]) for k in STRUCTURE_REF_FIELDS if f.properties.get(k))} for f in feats]
    return Structures(
        layer=np.full(n, layer.id, dtype=object),
        ids=np.array([f.fid for f in feats], dtype=object),
        footprint=footprint,
        bottom=bottom,
        top=top,
        refs=refs,
    )


@dataclass
class ClearanceReport:
    """Violations found, what was checked, and the inputs to draw them."""

    crs: str
    table: ClearanceTable
    pipes: PipeSolids
    structures: Structures
    violations: list[dict[str, Any]] = field(default_factory=list)
    checked: dict[str, int] = field(default_factory=dict)
    area: shapely.Geometry | None = None
    parallel_angle: float = DEFAULT_PARALLEL_ANGLE

    def as_dict(self) -> dict[str, Any]:
        xyz = np.array([v["_at"] for v in self.violations], dtype=float).reshape(-1, 3)
        where = lonlat_points(self.crs, xyz[:, 0], xyz[:, 1], xyz[:, 2])
        violations = [
            {**{k: val for k, val in v.items() if k != "_at"}, "location": w}
            for v, w in zip(self.violations, where, strict=True)
        ]
        return {
            "type": "clearance",
            "standard": f"{self.table.standard} {self.table.title}",
            "crs": self.crs,
            "parallel_angle": self.parallel_angle,
            "violations": violations,
            "count": len(violations),
            "checked": self.checked,
            "conventions": {
                "measured": "clear distance between outer walls (m); negative: they overlap",
                "required": "minimum from the table cited in `rule`",
                "horizontal": "plan distance for pipes running alongside (angle <= parallel_angle)",
                "vertical": "height gap at a crossing in plan",
                "structure": "plan distance to the outline; under it, the vertical gap to its bottom",
            },
        }


def _classes(pipes: PipeSolids) -> tuple[list[tuple[str, ...]], np.ndarray]:
    """Distinct table-class tuples and each pipe's index into them (building appended last)."""
    keys = [
        pipe_classes(str(f), float(dn), p)
        for f, dn, p in zip(pipes.family, pipes.nominal_mm, pipes.properties, strict=True)
    ]
    distinct = sorted(set(keys)) + [BUILDING]
    lookup = {k: i for i, k in enumerate(distinct)}
    return distinct, np.array([lookup[k] for k in keys], dtype=np.int64)


def _reach(table: ClearanceTable, classes: list[tuple[str, ...]], left: np.ndarray, right: np.ndarray) -> float:
    """The largest horizontal distance the table sets between these class pairs (or 0)."""
    required, _ = table.resolve(HORIZONTAL, classes, left, right, np.full(len(left), 1e9))
    required = required[np.isfinite(required)]
    return float(required.max()) if len(required) else 0.0


def _connected(pipes: PipeSolids, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairs joined at a node: same layer sharing a node id, or line ends that coincide."""
    same_layer = pipes.layer[a] == pipes.layer[b]
    shares = np.zeros(len(a), dtype=bool)
    ends = (pipes.start_node, pipes.end_node)
    for x in ends:
        for y in ends:
            shares |= (x[a] == y[b]) & (x[a] != "")
    points = [shapely.get_point(pipes.geometry, 0), shapely.get_point(pipes.geometry, -1)]
    touching = np.zeros(len(a), dtype=bool)
    for p in points:
        for q in points:
            touching |= shapely.distance(p[a], q[b]) <= NODE_TOLERANCE
    return (same_layer & shares) | touching


def check_clearance(
    pipes: PipeSolids,
    table: ClearanceTable,
    *,
    crs: str,
    structures: Structures | None = None,
    area: shapely.Geometry | None = None,
    parallel_angle: float = DEFAULT_PARALLEL_ANGLE,
) -> ClearanceReport:
    """Every pair closer than the standard allows (violations located inside `area`, if given)."""
    structures = structures if structures is not None else Structures.empty()
    report = ClearanceReport(crs, table, pipes, structures, area=area, parallel_angle=parallel_angle)
    classes, ci = _classes(pipes)
    widest = float(pipes.width.max()) if len(pipes) else 0.0
    k = len(classes) - 1  # pipe classes; the building class is last
    reach = max(_reach(table, classes, np.repeat(np.arange(k), k), np.tile(np.arange(k), k)), 0.5)
    reach += widest + NODE_TOLERANCE
    tree = shapely.STRtree(pipes.geometry)
    a, b = tree.query(pipes.geometry, predicate="dwithin", distance=reach) if len(pipes) else (np.empty(0, int),) * 2
    keep = a < b
    a, b = a[keep], b[keep]
    joined = _connected(pipes, a, b)
    a, b = a[~joined], b[~joined]
    larger_dn = np.fmax(pipes.nominal_mm[a], pipes.nominal_mm[b])
    req_h, rule_h = table.resolve(HORIZONTAL, classes, ci[a], ci[b], larger_dn)
    req_v, rule_v = table.resolve(VERTICAL, classes, ci[a], ci[b], larger_dn)
    crossing = shapely.intersects(pipes.geometry[a], pipes.geometry[b])
    overlap = np.zeros(len(a), dtype=bool)
    if crossing.any():
        shared = shapely.intersection(pipes.geometry[a[crossing]], pipes.geometry[b[crossing]])
        overlap[crossing] = shapely.length(shared) > NODE_TOLERANCE
    vertical = crossing & ~overlap
    without_rule = np.where(vertical, rule_v < 0, rule_h < 0)
    report.checked = {
        "pipes": len(pipes),
        "pairs_near": len(a),
        "pairs_without_rule": int(without_rule.sum()),
    }
    _horizontal(report, a[~vertical], b[~vertical], req_h[~vertical], rule_h[~vertical])
    _vertical(report, a[vertical], b[vertical], req_v[vertical], rule_v[vertical])
    _structures(report, classes, ci)
    if area is not None and report.violations:
        xy = np.array([v["_at"][:2] for v in report.violations], dtype=float)
        inside = shapely.intersects_xy(area, xy[:, 0], xy[:, 1])
        report.violations = [v for v, k in zip(report.violations, inside.tolist(), strict=True) if k]
    report.violations.sort(key=lambda v: (v["measured"] - v["required"], v["a"]["id"]))
    return report


def _pipe_ref(pipes: PipeSolids, i: int) -> dict[str, Any]:
    return {
        "layer": str(pipes.layer[i]),
        "id": str(pipes.ids[i]),
        "class": str(pipes.code[i]) or None,
        "family": str(pipes.family[i]),
        "size": pipes.size_label(i),
        "material": (pipes.properties[i] or {}).get("material"),
    }


def _horizontal(report: ClearanceReport, a: np.ndarray, b: np.ndarray, req: np.ndarray, rule: np.ndarray) -> None:
    pipes = report.pipes
    ruled = rule >= 0
    a, b, req, rule = a[ruled], b[ruled], req[ruled], rule[ruled]
    ga, gb = pipes.geometry[a], pipes.geometry[b]
    gap = shapely.distance(ga, gb) - (pipes.width[a] + pipes.width[b]) / 2.0
    nearest = shapely.shortest_line(ga, gb)
    pa, pb = shapely.get_point(nearest, 0), shapely.get_point(nearest, 1)
    fa, fb = fractions(ga, pa), fractions(gb, pb)
    angle = angle_degrees(directions(ga, fa * shapely.length(ga)), directions(gb, fb * shapely.length(gb)))
    alongside = angle <= report.parallel_angle
    report.checked["horizontal_pairs"] = int(alongside.sum())
    bad = np.flatnonzero(alongside & (gap < req))
    ea, eb = pipes.at(a[bad], fa[bad]), pipes.at(b[bad], fb[bad])
    dz = vertical_clear(ea["bottom"], ea["top"], eb["bottom"], eb["top"])
    mid = shapely.get_coordinates(shapely.line_interpolate_point(nearest[bad], 0.5, normalized=True))
    for k, i in enumerate(bad.tolist()):
        plan, height = gap[i], dz[k]
        clear_3d = np.hypot(max(plan, 0.0), max(height, 0.0)) if plan > 0 or height > 0 else max(plan, height)
        report.violations.append(
            {
                "kind": "horizontal",
                "a": _pipe_ref(pipes, int(a[i])),
                "b": _pipe_ref(pipes, int(b[i])),
                "measured": value(plan),
                "required": float(req[i]),
                "angle": value(angle[i], 1),
                "vertical_clear": value(height),
                "clear_3d": value(clear_3d),
                "rule": report.table.cite(int(rule[i])),
                "_at": (mid[k, 0], mid[k, 1], float(np.nanmean([ea["centre"][k], eb["centre"][k]]))),
            }
        )


def _vertical(report: ClearanceReport, a: np.ndarray, b: np.ndarray, req: np.ndarray, rule: np.ndarray) -> None:
    pipes = report.pipes
    ruled = rule >= 0
    a, b, req, rule = a[ruled], b[ruled], req[ruled], rule[ruled]
    pair, points = meeting_points(pipes.geometry[a], pipes.geometry[b])
    fa, fb = fractions(pipes.geometry[a[pair]], points), fractions(pipes.geometry[b[pair]], points)
    ea, eb = pipes.at(a[pair], fa), pipes.at(b[pair], fb)
    gap = vertical_clear(ea["bottom"], ea["top"], eb["bottom"], eb["top"])
    known = np.isfinite(gap)
    report.checked["vertical_crossings"] = int(len(np.unique(pair[known])))
    report.checked["crossings_without_elevation"] = int(len(np.unique(pair[~known])))
    # the tightest crossing point of each pair
    order = np.lexsort((np.where(known, gap, np.inf), pair))
    first = order[np.r_[True, pair[order][1:] != pair[order][:-1]]] if len(order) else order
    first = first[known[first] & (gap[first] < req[pair[first]])]
    xy = shapely.get_coordinates(points[first]) if len(first) else np.empty((0, 2))
    ga, gb = pipes.geometry[a[pair[first]]], pipes.geometry[b[pair[first]]]
    angles = angle_degrees(
        directions(ga, fa[first] * shapely.length(ga)), directions(gb, fb[first] * shapely.length(gb))
    )
    for k, p in enumerate(first.tolist()):
        i = pair[p]
        angle = angles[k]
        upper, lower = (a[i], b[i]) if ea["centre"][p] >= eb["centre"][p] else (b[i], a[i])
        report.violations.append(
            {
                "kind": "vertical",
                "a": _pipe_ref(pipes, int(a[i])),
                "b": _pipe_ref(pipes, int(b[i])),
                "measured": value(gap[p]),
                "required": float(req[i]),
                "angle": value(angle, 1),
                "upper": str(pipes.ids[upper]),
                "lower": str(pipes.ids[lower]),
                "collision": bool(gap[p] < 0),
                "elevations": {
                    str(pipes.ids[a[i]]): {"top": value(ea["top"][p]), "bottom": value(ea["bottom"][p])},
                    str(pipes.ids[b[i]]): {"top": value(eb["top"][p]), "bottom": value(eb["bottom"][p])},
                },
                "rule": report.table.cite(int(rule[i])),
                "_at": (xy[k, 0], xy[k, 1], float((ea["centre"][p] + eb["centre"][p]) / 2.0)),
            }
        )


def _serves(pipes: PipeSolids, structures: Structures, p: np.ndarray, s: np.ndarray) -> np.ndarray:
    """A service pipe and the building it serves (named by `building_id`, or ending on it)."""
    out = np.zeros(len(p), dtype=bool)
    for k, (i, j) in enumerate(zip(p.tolist(), s.tolist(), strict=True)):
        props = pipes.properties[i] or {}
        named = props.get("building_id")
        if named is not None and str(named) in structures.refs[j]:
            out[k] = True
    kind = np.array([str((pipes.properties[i] or {}).get("kind") or "") for i in p], dtype=object)
    service = np.isin(kind, SERVICE_KINDS) & ~out
    if service.any():
        ends = [shapely.get_point(pipes.geometry[p[service]], 0), shapely.get_point(pipes.geometry[p[service]], -1)]
        outline = structures.footprint[s[service]]
        near = np.minimum(shapely.distance(ends[0], outline), shapely.distance(ends[1], outline))
        out[service] = near <= 0.5
    return out


def _structures(report: ClearanceReport, classes: list[tuple[str, ...]], ci: np.ndarray) -> None:
    pipes, structures = report.pipes, report.structures
    report.checked["structures"] = len(structures)
    if not len(structures) or not len(pipes):
        report.checked["structure_pairs"] = 0
        return
    building = len(classes) - 1
    present = np.unique(ci)
    reach = _reach(report.table, classes, present, np.full(len(present), building))
    reach += float(pipes.width.max()) / 2.0 + NODE_TOLERANCE
    tree = shapely.STRtree(structures.footprint)
    p, s = tree.query(pipes.geometry, predicate="dwithin", distance=reach)
    served = _serves(pipes, structures, p, s)
    p, s = p[~served], s[~served]
    req, rule = report.table.resolve(HORIZONTAL, classes, ci[p], np.full(len(p), building), pipes.nominal_mm[p])
    ruled = rule >= 0
    p, s, req, rule = p[ruled], s[ruled], req[ruled], rule[ruled]
    report.checked["structure_pairs"] = len(p)
    gp, fs = pipes.geometry[p], structures.footprint[s]
    inside = shapely.intersects(gp, fs)
    gap = np.where(inside, 0.0, shapely.distance(gp, fs)) - pipes.width[p] / 2.0
    bad = np.flatnonzero(gap < req)
    if not len(bad):
        return
    gp, fs = gp[bad], fs[bad]
    within = shapely.intersection(gp, fs)
    near = shapely.get_point(shapely.shortest_line(gp, fs), 0)
    spot = np.where(
        inside[bad] & ~shapely.is_empty(within),
        shapely.point_on_surface(within),
        near,
    )
    spot = np.where(shapely.is_empty(spot), near, spot)
    f = fractions(gp, spot)
    e = pipes.at(p[bad], f)
    xy = shapely.get_coordinates(spot)
    for k, i in enumerate(bad.tolist()):
        j = int(s[i])
        under = bool(inside[i])
        below = structures.bottom[j] - e["top"][k]
        collide = under and e["top"][k] > structures.bottom[j] and e["bottom"][k] < structures.top[j]
        report.violations.append(
            {
                "kind": "structure",
                "a": _pipe_ref(pipes, int(p[i])),
                "b": {"layer": str(structures.layer[j]), "id": str(structures.ids[j]), "class": "building"},
                "measured": value(gap[i]),
                "required": float(req[i]),
                "under_structure": under,
                "vertical_clear": value(below) if under else None,
                "collision": bool(collide),
                "rule": report.table.cite(int(rule[i])),
                "_at": (xy[k, 0], xy[k, 1], float(e["centre"][k])),
            }
        )


def clearance_svg(report: ClearanceReport, width: float = 1000.0) -> str:
    """A plan of the pipes and structures checked, with each violation ringed and numbered."""
    pipes, structures = report.pipes, report.structures
    geoms = np.concatenate([pipes.geometry, structures.footprint])
    if report.area is not None:
        bounds = shapely.bounds(report.area)
    elif len(geoms):
        bounds = shapely.total_bounds(geoms)
    else:
        bounds = np.array([0.0, 0.0, 1.0, 1.0])
    frame, height = fit_frame(tuple(bounds), width, 1.0, margin=(30.0, 40.0, 30.0, 60.0), max_height=1000.0)
    svg = Svg(width, height, title=f"Clearance check, {len(report.violations)} violations")
    view = shapely.box(*bounds).buffer(5.0)
    top_left = (frame.px(bounds[0]), frame.pz(bounds[3]))
    svg.clip_to("plan", *top_left, frame.px(bounds[2]) - top_left[0], frame.pz(bounds[1]) - top_left[1])
    for i in np.flatnonzero(shapely.intersects(structures.footprint, view)).tolist():
        for ring in _rings(structures.footprint[i]):
            svg.polygon(
                [(frame.px(x), frame.pz(y)) for x, y in ring],
                fill="rgb(220,220,220)",
                stroke="rgb(120,120,120)",
                stroke_width=0.6,
                cls="structure",
            )
    for i in np.flatnonzero(shapely.intersects(pipes.geometry, view)).tolist():
        xy = shapely.get_coordinates(pipes.geometry[i])
        svg.polyline(
            [(frame.px(x), frame.pz(y)) for x, y in xy],
            stroke=colour(str(pipes.family[i])),
            stroke_width=max(1.0, pipes.width[i] * frame.sx),
            cls="pipe",
            data_id=str(pipes.ids[i]),
        )
    svg.end_group()
    for n, v in enumerate(report.violations, start=1):
        x, y = frame.px(v["_at"][0]), frame.pz(v["_at"][1])
        svg.ellipse(x, y, 7, 7, fill="none", stroke=VIOLATION_COLOUR, stroke_width=2, cls="violation")
        svg.text(x + 8, y - 6, str(n), size=10, fill=VIOLATION_COLOUR)
    scale_bar(svg, frame.left, height - 40, frame.sx, (width - frame.left) / 4)
    svg.text(frame.left, 22, f"GB 50289 clearance: {len(report.violations)} violations", size=13)
    return svg.render()


def _rings(polygon: shapely.Geometry) -> list[np.ndarray]:
    return [shapely.get_coordinates(p.exterior) for p in shapely.get_parts(polygon) if hasattr(p, "exterior")]
