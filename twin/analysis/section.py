"""Cross-sections (横断面) and longitudinal profiles (纵断面) of buried pipes, with SVG drawings.

A cross-section cuts the pipes with a vertical plane along a line: where each pipe crosses,
at what station along the line, its size, elevations and depth there, and the clear distances
between neighbouring pipes, outer wall to outer wall. A pipe crossing the plane at an angle
is cut as an ellipse (or a stretched rectangle) `width / sin(angle)` wide, and the horizontal
gaps are measured along the section line between those cuts, as the drawing shows them.

A profile follows a run of contiguous pipes: stations, inverts, crowns and ground along it,
and the other pipes crossing it, with the vertical clear distance to the run at each crossing.

Elevations come from `PipeSolids` (linear along each pipe); the ground line from the DEM.
Everything here is plain computation: the callers load the pipes and the DEM.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely

from twin.analysis.dem_sample import Dem
from twin.analysis.linework import (
    NODE_TOLERANCE,
    angle_degrees,
    crossing_sine,
    directions,
    fractions,
    lonlat_line,
    lonlat_points,
    meeting_points,
    rounded,
    value,
)
from twin.analysis.pipe_solids import PipeSolids
from twin.analysis.svg import (
    GROUND_COLOUR,
    SOIL_FILL,
    Svg,
    axis_ticks,
    colour,
    fit_frame,
    scale_bar,
)
from twin.model import InvalidInput

MIN_SINE = 0.05  # a pipe nearly along the section is cut at most 20 times its width
GROUND_SAMPLES = 1001
MAX_RUN_PIPES = 2000


@dataclass(frozen=True)
class GroundLine:
    """Ground elevations (DEM) at stations along a line."""

    station: np.ndarray
    elevation: np.ndarray

    def as_dict(self) -> dict[str, Any]:
        return {"station": rounded(self.station, 2), "elevation": rounded(self.elevation)}


def ground_line(line: shapely.LineString, dem: Dem | None, crs: str, step: float = 0.5) -> GroundLine | None:
    """The DEM sampled every `step` metres along `line` (at most GROUND_SAMPLES points)."""
    if dem is None:
        return None
    length = line.length
    count = int(min(GROUND_SAMPLES, max(2, np.ceil(length / step) + 1)))
    station = np.linspace(0.0, length, count)
    xy = shapely.get_coordinates(shapely.line_interpolate_point(line, station))
    elevation = dem.sample(xy[:, 0], xy[:, 1], crs)
    if not np.isfinite(elevation).any():
        return None
    return GroundLine(station, elevation)


def _ground_at(ground: GroundLine | None, station: np.ndarray) -> np.ndarray:
    if ground is None:
        return np.full(len(station), np.nan)
    ok = np.isfinite(ground.elevation)
    return np.interp(station, ground.station[ok], ground.elevation[ok], left=np.nan, right=np.nan)


def vertical_clear(bottom_a: np.ndarray, top_a: np.ndarray, bottom_b: np.ndarray, top_b: np.ndarray) -> np.ndarray:
    """Vertical gap between outer walls (negative: the two overlap in height)."""
    return np.maximum(bottom_b - top_a, bottom_a - top_b)


# ----- cross-section --------------------------------------------------------------------------


@dataclass
class CrossSection:
    """The pipes a section line cuts, in station order, and the ground along the line."""

    crs: str
    line: shapely.LineString
    pipes: PipeSolids
    index: np.ndarray  # pipe per cut
    station: np.ndarray
    points: np.ndarray  # cut locations (project CRS)
    angle: np.ndarray  # degrees between pipe and section line
    half_cut: np.ndarray  # half the cut's width along the line, metres
    elevations: dict[str, np.ndarray]
    ground_at_cut: np.ndarray
    ground: GroundLine | None

    @property
    def length(self) -> float:
        return float(self.line.length)

    def gaps(self) -> tuple[np.ndarray, np.ndarray]:
        """Horizontal and vertical clear distances between each cut and the next one."""
        e = self.elevations
        left_edge = self.station - self.half_cut
        right_edge = self.station + self.half_cut
        horizontal = left_edge[1:] - right_edge[:-1]
        vertical = vertical_clear(e["bottom"][:-1], e["top"][:-1], e["bottom"][1:], e["top"][1:])
        return horizontal, vertical

    def as_dict(self) -> dict[str, Any]:
        e = self.elevations
        xy = shapely.get_coordinates(self.points) if len(self.points) else np.empty((0, 2))
        where = lonlat_points(self.crs, xy[:, 0], xy[:, 1], e["centre"])
        pipes = []
        for k, i in enumerate(self.index.tolist()):
            ground = self.ground_at_cut[k]
            pipes.append(
                {
                    **self.pipes.describe(i),
                    "station": value(self.station[k]),
                    "angle": value(self.angle[k], 1),
                    "cut_width": value(2 * self.half_cut[k]),
                    "ground_elev": value(ground),
                    "top_elev": value(e["top"][k]),
                    "centre_elev": value(e["centre"][k]),
                    "bottom_elev": value(e["bottom"][k]),
                    "invert_elev": value(e["invert"][k]),
                    "depth": value(ground - e["centre"][k]),
                    "cover": value(ground - e["top"][k]),
                    "location": where[k],
                }
            )
        horizontal, vertical = self.gaps()
        ids = self.pipes.ids[self.index]
        gaps = [
            {
                "between": [str(ids[k]), str(ids[k + 1])],
                "horizontal": value(horizontal[k]),
                "vertical": value(vertical[k]),
            }
            for k in range(len(horizontal))
        ]
        return {
            "type": "cross-section",
            "crs": self.crs,
            "line": lonlat_line(self.crs, self.line),
            "length": value(self.length, 2),
            "pipes": pipes,
            "gaps": gaps,
            "ground": None if self.ground is None else self.ground.as_dict(),
            "conventions": CONVENTIONS,
        }


CONVENTIONS = {
    "elevations": "metres in the twin's height datum; top/bottom are outer walls, invert the inside bottom",
    "depth": "ground minus centre elevation at the crossing; cover: ground minus top",
    "ground_elev": "surveyed ground (linear between the pipe's end nodes), else the DEM",
    "gaps": "outer wall to outer wall between neighbouring cuts: horizontal along the line, vertical in height; "
    "negative values overlap",
}


def cross_section(pipes: PipeSolids, line: shapely.LineString, crs: str, ground: GroundLine | None) -> CrossSection:
    """Cut `pipes` with the vertical plane through `line` (project CRS)."""
    n = len(pipes)
    which, points = meeting_points(pipes.geometry, np.full(n, line, dtype=object))
    station = shapely.line_locate_point(line, points) if len(points) else np.empty(0)
    order = np.lexsort((pipes.ids[which].astype(str), station))
    which, points, station = which[order], points[order], station[order]
    along = fractions(pipes.geometry[which], points) if len(which) else np.empty(0)
    u = directions(pipes.geometry[which], along * shapely.length(pipes.geometry[which]))
    v = directions(np.full(len(which), line, dtype=object), station)
    sine = np.maximum(crossing_sine(u, v), MIN_SINE)
    elevations = pipes.at(which, along)
    surveyed = elevations.pop("ground")
    at_dem = _ground_at(ground, station)
    return CrossSection(
        crs=crs,
        line=line,
        pipes=pipes,
        index=which,
        station=station,
        points=points,
        angle=angle_degrees(u, v),
        half_cut=pipes.width[which] / 2.0 / sine,
        elevations=elevations,
        ground_at_cut=np.where(np.isfinite(surveyed), surveyed, at_dem),
        ground=ground,
    )


# ----- profile --------------------------------------------------------------------------------


def _same_node(run: PipeSolids, i: int, end_i: int, j: int, end_j: int) -> bool:
    ids = (run.start_node, run.end_node)
    a, b = ids[end_i][i], ids[end_j][j]
    if a and b:
        return a == b
    pa = shapely.get_point(run.geometry[i], -end_i)
    pb = shapely.get_point(run.geometry[j], -end_j)
    return bool(shapely.distance(pa, pb) <= NODE_TOLERANCE)


def orient_run(run: PipeSolids) -> np.ndarray:
    """Whether each pipe of the run is drawn against its digitised direction.

    Consecutive pipes must share a node (by node id, else by end points within 5 cm); the
    first pipe is turned so that it runs towards the second. InvalidInput names the break.
    """
    n = len(run)
    if n == 0:
        raise InvalidInput("a profile needs at least one pipe")
    if n > MAX_RUN_PIPES:
        raise InvalidInput(f"a profile takes at most {MAX_RUN_PIPES} pipes, got {n}")
    keys = list(zip(run.layer.tolist(), run.ids.tolist(), strict=True))
    if len(set(keys)) != n:
        raise InvalidInput("a profile's pipe run names the same pipe twice")
    reverse = np.zeros(n, dtype=bool)
    for k in range(n - 1):
        ends_k = (1 - int(reverse[k]),) if k > 0 else (0, 1)
        joins = [(ek, ej) for ek in ends_k for ej in (0, 1) if _same_node(run, k, ek, k + 1, ej)]
        if not joins:
            raise InvalidInput(
                f"pipes {run.ids[k]!r} and {run.ids[k + 1]!r} are not contiguous: "
                "consecutive pipes of a run must share a node"
            )
        ek, ej = joins[0]
        if k == 0:
            reverse[0] = ek == 0
        reverse[k + 1] = ej == 1
    return reverse


@dataclass
class Profile:
    """A pipe run laid out by station, with the ground and the pipes that cross it."""

    crs: str
    run: PipeSolids
    reverse: np.ndarray
    start: np.ndarray  # station of each pipe's start (run direction)
    end: np.ndarray
    line: shapely.LineString
    ground: GroundLine | None
    others: PipeSolids
    cross_index: np.ndarray  # crossing pipe (into others)
    cross_run: np.ndarray  # run pipe it crosses
    cross_station: np.ndarray
    cross_points: np.ndarray
    cross_half: np.ndarray  # half the crossing pipe's cut along the run
    cross: dict[str, np.ndarray]  # crossing pipe's elevations
    run_at_cross: dict[str, np.ndarray]

    @property
    def length(self) -> float:
        return float(self.end[-1]) if len(self.end) else 0.0

    def ends(self) -> dict[str, np.ndarray]:
        """Invert, crown and ground at each pipe's start and end in run direction, (n, 2)."""
        idx = np.arange(len(self.run))
        first = self.reverse.astype(float)
        at0 = self.run.at(idx, first)
        at1 = self.run.at(idx, 1.0 - first)
        return {k: np.stack([at0[k], at1[k]], axis=1) for k in at0}

    def as_dict(self) -> dict[str, Any]:
        ends = self.ends()
        length = self.end - self.start
        fall = ends["invert"][:, 0] - ends["invert"][:, 1]
        pipes = []
        for i in range(len(self.run)):
            pipes.append(
                {
                    **self.run.describe(i),
                    "reversed": bool(self.reverse[i]),
                    "station_start": value(self.start[i]),
                    "station_end": value(self.end[i]),
                    "length": value(length[i]),
                    "invert_start": value(ends["invert"][i, 0]),
                    "invert_end": value(ends["invert"][i, 1]),
                    "crown_start": value(ends["top"][i, 0]),
                    "crown_end": value(ends["top"][i, 1]),
                    "ground_start": value(ends["ground"][i, 0]),
                    "ground_end": value(ends["ground"][i, 1]),
                    "slope": value(fall[i] / length[i] if length[i] > 0 else np.nan, 5),
                }
            )
        xy = shapely.get_coordinates(self.cross_points) if len(self.cross_points) else np.empty((0, 2))
        where = lonlat_points(self.crs, xy[:, 0], xy[:, 1], self.cross["centre"])
        clear = vertical_clear(
            self.cross["bottom"], self.cross["top"], self.run_at_cross["bottom"], self.run_at_cross["top"]
        )
        crossings = [
            {
                **self.others.describe(int(o)),
                "station": value(self.cross_station[k]),
                "run_pipe": str(self.run.ids[self.cross_run[k]]),
                "top_elev": value(self.cross["top"][k]),
                "centre_elev": value(self.cross["centre"][k]),
                "bottom_elev": value(self.cross["bottom"][k]),
                "run_top_elev": value(self.run_at_cross["top"][k]),
                "run_bottom_elev": value(self.run_at_cross["bottom"][k]),
                "vertical_clear": value(clear[k]),
                "position": "above" if self.cross["bottom"][k] >= self.run_at_cross["centre"][k] else "below",
                "location": where[k],
            }
            for k, o in enumerate(self.cross_index.tolist())
        ]
        return {
            "type": "profile",
            "crs": self.crs,
            "layer": str(self.run.layer[0]),
            "line": lonlat_line(self.crs, self.line),
            "length": value(self.length, 2),
            "pipes": pipes,
            "crossings": crossings,
            "ground": None if self.ground is None else self.ground.as_dict(),
            "conventions": {
                "invert": "inside bottom; crown: outer top; slope: invert fall per metre in run direction",
                "vertical_clear": "outer wall to outer wall at the crossing; negative values overlap",
            },
        }


def run_line(run: PipeSolids, reverse: np.ndarray) -> shapely.LineString:
    """The run as one line in run direction."""
    geoms = np.where(reverse, shapely.reverse(run.geometry), run.geometry)
    coords = [shapely.get_coordinates(g) for g in geoms]
    joined = np.vstack([coords[0]] + [c[1:] for c in coords[1:]])
    return shapely.LineString(joined)


def profile(run: PipeSolids, others: PipeSolids, crs: str, dem: Dem | None) -> Profile:
    """The profile of `run` (contiguous pipes, in order) crossed by `others`."""
    reverse = orient_run(run)
    length = shapely.length(run.geometry)
    end = np.cumsum(length)
    start = end - length
    line = run_line(run, reverse)
    ground = ground_line(line, dem, crs)

    own = {(layer, pid) for layer, pid in zip(run.layer.tolist(), run.ids.tolist(), strict=True)}
    keep = np.array([(lay, pid) not in own for lay, pid in zip(others.layer, others.ids, strict=True)], dtype=bool)
    others = others.take(np.flatnonzero(keep))
    tree = shapely.STRtree(run.geometry)
    o, r = tree.query(others.geometry, predicate="intersects") if len(others) else (np.empty(0, int),) * 2
    pair, points = meeting_points(others.geometry[o], run.geometry[r])
    o, r = o[pair], r[pair]
    f_run = fractions(run.geometry[r], points) if len(pair) else np.empty(0)
    f_other = fractions(others.geometry[o], points) if len(pair) else np.empty(0)
    joined = _joined(others, o, f_other, run, r, f_run)
    o, r, points, f_run, f_other = o[~joined], r[~joined], points[~joined], f_run[~joined], f_other[~joined]
    along_run = np.where(reverse[r], 1.0 - f_run, f_run)
    station = start[r] + along_run * length[r]
    order = np.argsort(station, kind="stable")
    o, r, points, f_run, f_other, station = (a[order] for a in (o, r, points, f_run, f_other, station))
    u = directions(others.geometry[o], f_other * shapely.length(others.geometry[o]))
    v = directions(run.geometry[r], f_run * length[r])
    sine = np.maximum(crossing_sine(u, v), MIN_SINE)
    cross = others.at(o, f_other)
    run_at = run.at(r, f_run)
    return Profile(
        crs=crs,
        run=run,
        reverse=reverse,
        start=start,
        end=end,
        line=line,
        ground=ground,
        others=others,
        cross_index=o,
        cross_run=r,
        cross_station=station,
        cross_points=points,
        cross_half=others.width[o] / 2.0 / sine,
        cross=cross,
        run_at_cross=run_at,
    )


def _joined(a: PipeSolids, ia: np.ndarray, fa: np.ndarray, b: PipeSolids, ib: np.ndarray, fb: np.ndarray) -> np.ndarray:
    """Pairs that meet at a shared node (a branch joining the run), not a crossing."""
    same_layer = a.layer[ia] == b.layer[ib]
    a_nodes = np.stack([a.start_node[ia], a.end_node[ia]], axis=1)
    b_nodes = np.stack([b.start_node[ib], b.end_node[ib]], axis=1)
    shares = np.zeros(len(ia), dtype=bool)
    for x in range(2):
        for y in range(2):
            shares |= (a_nodes[:, x] == b_nodes[:, y]) & (a_nodes[:, x] != "")
    at_end_a = np.minimum(fa, 1.0 - fa) * shapely.length(a.geometry[ia]) <= NODE_TOLERANCE
    at_end_b = np.minimum(fb, 1.0 - fb) * shapely.length(b.geometry[ib]) <= NODE_TOLERANCE
    return (same_layer & shares) | (at_end_a & at_end_b)


# ----- drawings -------------------------------------------------------------------------------


def _extent(stations: list[np.ndarray], levels: list[np.ndarray]) -> tuple[float, float, float, float]:
    s = np.concatenate([np.asarray(x, dtype=float).ravel() for x in stations])
    z = np.concatenate([np.asarray(x, dtype=float).ravel() for x in levels])
    s, z = s[np.isfinite(s)], z[np.isfinite(z)]
    if not len(z):
        z = np.array([0.0, 1.0])
    zmin, zmax = float(z.min()), float(z.max())
    pad = max(0.3, 0.08 * (zmax - zmin))
    return float(s.min()), zmin - pad, float(s.max()), zmax + pad


def _draw_ground(svg: Svg, frame: Any, ground: GroundLine | None, bottom_px: float) -> None:
    if ground is None:
        return
    ok = np.isfinite(ground.elevation)
    pts = [(frame.px(s), frame.pz(z)) for s, z in zip(ground.station[ok], ground.elevation[ok], strict=True)]
    if len(pts) < 2:
        return
    svg.polygon([*pts, (pts[-1][0], bottom_px), (pts[0][0], bottom_px)], fill=SOIL_FILL, stroke="none")
    svg.polyline(pts, stroke=GROUND_COLOUR, stroke_width=2, cls="ground")


def _elevation_axis(svg: Svg, frame: Any, zmin: float, zmax: float, x_px: float) -> None:
    for tick in axis_ticks(zmin, zmax):
        y = frame.pz(tick)
        svg.line(x_px - 4, y, x_px, y, stroke="black", stroke_width=0.8)
        svg.text(x_px - 6, y + 4, f"{tick:g}", size=10, text_anchor="end")
    svg.line(x_px, frame.pz(zmax), x_px, frame.pz(zmin), stroke="black", stroke_width=0.8)
    svg.text(x_px - 50, frame.pz(zmax) - 8, "elevation (m)", size=10)


def _station_axis(svg: Svg, frame: Any, length: float, z_bottom: float) -> None:
    y = frame.pz(z_bottom)
    for tick in axis_ticks(0.0, length, 8):
        x = frame.px(tick)
        svg.line(x, y, x, y + 4, stroke="black")
        svg.text(x, y + 15, f"{tick:g}", size=9, text_anchor="middle")
    svg.text(frame.px(length), y + 28, "station (m)", size=9, text_anchor="end")


def _bars(svg: Svg, frame: Any, width: float, height: float, exaggeration: float) -> None:
    """The horizontal scale bar, and a vertical one when heights are exaggerated."""
    span = (width - frame.left) / 4
    scale_bar(svg, frame.left, height - 30, frame.sx, span)
    if exaggeration != 1.0:
        scale_bar(svg, frame.left + span + 60, height - 12, frame.sz, 50, vertical=True)


def _pipe_shape(svg: Svg, pipes: PipeSolids, i: int, cx: float, cy: float, rx: float, ry: float, **attrs: Any) -> None:
    fill = colour(str(pipes.family[i]))
    title = f"{pipes.ids[i]} {pipes.code[i]} {pipes.size_label(i)}"
    if pipes.box[i]:
        svg.rect(cx - rx, cy - ry, 2 * rx, 2 * ry, fill=fill, stroke="black", stroke_width=0.8, data_id=title, **attrs)
    else:
        svg.ellipse(cx, cy, rx, ry, fill=fill, stroke="black", stroke_width=0.8, data_id=title, **attrs)


def cross_section_svg(section: CrossSection, width: float = 1000.0, exaggeration: float = 1.0) -> str:
    """The section to scale: ground line, one shape per cut pipe, labels and scale bars."""
    e = section.elevations
    ground = section.ground
    extent = _extent(
        [np.array([0.0, section.length])],
        [e["bottom"], e["top"], section.ground_at_cut] + ([ground.elevation] if ground else []),
    )
    frame, height = fit_frame(extent, width, exaggeration, margin=(70.0, 40.0, 30.0, 110.0))
    svg = Svg(width, height, title=f"Cross-section, {section.length:.1f} m")
    _draw_ground(svg, frame, ground, frame.pz(extent[1]))
    for k, i in enumerate(section.index.tolist()):
        if not np.isfinite(e["centre"][k]):
            continue
        cx, cy = frame.px(section.station[k]), frame.pz(e["centre"][k])
        rx = section.half_cut[k] * frame.sx
        ry = section.pipes.height[i] / 2.0 * frame.sz
        _pipe_shape(svg, section.pipes, i, cx, cy, rx, ry, cls="pipe")
        lift = ry + 5 + 24 * (k % 2)  # alternate heights, so neighbouring labels do not overlap
        label = f"{section.pipes.code[i]} {section.pipes.size_label(i)}"
        svg.text(cx, cy - lift - 11, label, size=10, text_anchor="middle", cls="label")
        svg.text(cx, cy - lift, f"{e['centre'][k]:.2f}", size=9, text_anchor="middle")
    horizontal, _ = section.gaps()
    for k, gap in enumerate(horizontal.tolist()):
        x = frame.px((section.station[k] + section.station[k + 1]) / 2.0)
        svg.text(x, frame.pz(extent[1]) - 6, f"{gap:.2f}", size=9, text_anchor="middle", fill="rgb(90,90,90)")
    _elevation_axis(svg, frame, extent[1], extent[3], frame.px(extent[0]) - 8)
    _station_axis(svg, frame, section.length, extent[1])
    _bars(svg, frame, width, height, exaggeration)
    svg.text(frame.left, 22, f"Cross-section {section.length:.1f} m, {len(section.index)} pipes", size=13)
    return svg.render()


def profile_svg(prof: Profile, width: float = 1200.0, exaggeration: float = 10.0) -> str:
    """The profile with vertical exaggeration: ground, crown and invert lines, crossings."""
    ends = prof.ends()
    ground = prof.ground
    stations = np.stack([prof.start, prof.end], axis=1)
    extent = _extent(
        [stations],
        [ends["invert"], ends["top"], ends["ground"], prof.cross["bottom"], prof.cross["top"]]
        + ([ground.elevation] if ground else []),
    )
    frame, height = fit_frame(extent, width, exaggeration, margin=(70.0, 40.0, 30.0, 110.0))
    svg = Svg(width, height, title=f"Profile, {prof.length:.1f} m")
    _draw_ground(svg, frame, ground, frame.pz(extent[1]))
    for i in range(len(prof.run)):
        xs = (frame.px(prof.start[i]), frame.px(prof.end[i]))
        fill = colour(str(prof.run.family[i]))
        top = [frame.pz(z) for z in ends["top"][i]]
        bottom = [frame.pz(z) for z in ends["bottom"][i]]
        if np.isfinite(top).all() and np.isfinite(bottom).all():
            svg.polygon(
                [(xs[0], top[0]), (xs[1], top[1]), (xs[1], bottom[1]), (xs[0], bottom[0])],
                fill=fill,
                stroke="black",
                stroke_width=0.6,
                cls="pipe",
                data_id=str(prof.run.ids[i]),
            )
            svg.line(xs[0], frame.pz(ends["invert"][i][0]), xs[1], frame.pz(ends["invert"][i][1]), stroke="black")
        for x in xs:  # manholes / nodes from ground to invert
            svg.line(x, frame.pz(extent[3]) + 4, x, frame.pz(extent[1]), stroke="rgb(160,160,160)", stroke_width=0.5)
        svg.text((xs[0] + xs[1]) / 2, frame.pz(extent[1]) - 6, prof.run.size_label(i), size=9, text_anchor="middle")
    row_ends: list[float] = []
    for k, o in enumerate(prof.cross_index.tolist()):
        if not np.isfinite(prof.cross["centre"][k]):
            continue
        cx, cy = frame.px(prof.cross_station[k]), frame.pz(prof.cross["centre"][k])
        rx = prof.cross_half[k] * frame.sx
        ry = prof.others.height[o] / 2.0 * frame.sz
        _pipe_shape(svg, prof.others, o, cx, cy, rx, ry, cls="crossing")
        # labels in rows along the top, each with a leader to its pipe; close ones go a row down
        row = next(r for r in range(len(row_ends) + 1) if r == len(row_ends) or row_ends[r] < cx - 60)
        row_ends[row : row + 1] = [cx]
        label_y = frame.pz(extent[3]) + 10 + 11 * row
        svg.line(cx, label_y + 2, cx, cy - ry, stroke="rgb(150,150,150)", stroke_width=0.5)
        label = f"{prof.others.code[o]} {prof.others.size_label(o)}"
        svg.text(cx, label_y, label, size=9, text_anchor="middle", cls="label")
    _elevation_axis(svg, frame, extent[1], extent[3], frame.px(extent[0]) - 8)
    _station_axis(svg, frame, prof.length, extent[1])
    _bars(svg, frame, width, height, exaggeration)
    title = f"Profile {prof.length:.1f} m, {len(prof.run)} pipes, {len(prof.cross_index)} crossings"
    svg.text(frame.left, 22, f"{title} (vertical ×{exaggeration:g})", size=13)
    return svg.render()
