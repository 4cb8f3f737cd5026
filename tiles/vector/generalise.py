"""Generalisation per zoom: what a feature becomes in a tile, or whether it is left out.

Sizes are screen pixels of a tile drawn 512 px wide (as MapLibre draws vector tiles), so one
pixel is 8 tile units. At a zoom z, at budget level 0:
- lines and polygon edges are simplified to half a pixel;
- polygons under one square pixel and lines under one pixel long are dropped;
- below z15 points are thinned to one per pixel (the smallest feature id wins).
When a tile comes out over the size budget, it is rebuilt at the next level, which doubles
every threshold, so the tiles of a dense layer at low zoom thin out instead of growing.

The same rules run in SQL on the PostGIS backend (`PostGISStore.mvt_layer`), so both backends
keep the same features.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely
from shapely.errors import GEOSException

from tiles.vector.tms import BUFFER, EXTENT, tile_bounds, tile_size
from twin.crs import WEB_MERCATOR, transform_points
from twin.model import BBox
from twin.store.base import TileQuery

PIXEL = EXTENT / 512  # tile units per screen pixel
THIN_POINTS_BELOW = 15
POINT_TYPES = (0,)  # shapely type id of Point: only single points are thinned
DIMENSION = np.array([0, 1, 1, 2, 0, 1, 2, -1], dtype=np.int8)  # shapely type id -> dimension (-1: other)


@dataclass(frozen=True)
class Rules:
    """Thresholds in tile units for one zoom and budget level."""

    z: int
    level: int
    tolerance: float
    min_area: float
    min_length: float
    point_cell: float  # 0: points are not thinned

    @classmethod
    def at(cls, z: int, level: int = 0) -> Rules:
        factor = float(2**level)
        thin = level > 0 or z < THIN_POINTS_BELOW
        return cls(
            z=z,
            level=level,
            tolerance=0.5 * PIXEL * factor,
            min_area=(PIXEL * factor) ** 2,
            min_length=PIXEL * factor,
            point_cell=PIXEL * factor if thin else 0.0,
        )

    def query(self, x: int, y: int, bbox: BBox, time) -> TileQuery:
        """The same rules in EPSG:3857 metres, for a database that builds the tile itself."""
        unit = tile_size(self.z) / EXTENT
        return TileQuery(
            bounds=tile_bounds(self.z, x, y),
            bbox=bbox,
            extent=EXTENT,
            buffer=BUFFER,
            tolerance=self.tolerance * unit,
            min_area=self.min_area * unit * unit,
            min_length=self.min_length * unit,
            point_cell=self.point_cell * unit,
            time=time,
        )


def dimensions(geoms: np.ndarray) -> np.ndarray:
    """0 for points, 1 for lines, 2 for polygons, -1 for collections and missing geometries."""
    types = shapely.get_type_id(geoms)
    return np.where(types >= 0, DIMENSION[np.clip(types, 0, 7)], -1).astype(np.int8)


def to_tile_coordinates(geoms: np.ndarray, crs: str, z: int, x: int, y: int) -> np.ndarray:
    """Project-CRS geometries as 2D tile coordinates (y down, 0..EXTENT over the tile)."""
    minx, _, _, maxy = tile_bounds(z, x, y)
    scale = EXTENT / tile_size(z)

    def project(coords: np.ndarray) -> np.ndarray:
        mx, my = transform_points(crs, WEB_MERCATOR, coords[:, 0], coords[:, 1])
        return np.column_stack(((np.asarray(mx) - minx) * scale, (maxy - np.asarray(my)) * scale))

    return shapely.transform(geoms, project, include_z=False)


@dataclass
class Candidates:
    """Features of one tile layer in tile coordinates, with what every level's rules look at,
    computed once: dimension, whole-feature size (area or length, unclipped), point positions,
    and the geometries clipped to the buffered tile."""

    dims: np.ndarray
    sizes: np.ndarray
    points: np.ndarray  # (n, 2) position of single points, NaN for other features
    clipped: np.ndarray
    group: np.ndarray  # the MVT layer of each feature: points are thinned within their layer

    @classmethod
    def of(cls, geoms: np.ndarray, group: np.ndarray | None = None) -> Candidates:
        dims = dimensions(geoms)
        dims[shapely.is_empty(geoms)] = -1
        sizes = np.zeros(len(geoms))
        sizes[dims == 2] = shapely.area(geoms[dims == 2])
        sizes[dims == 1] = shapely.length(geoms[dims == 1])
        points = np.full((len(geoms), 2), np.nan)
        single = np.flatnonzero(np.isin(shapely.get_type_id(geoms), POINT_TYPES))
        points[single] = shapely.get_coordinates(geoms[single])
        clipped = shapely.clip_by_rect(geoms, -BUFFER, -BUFFER, EXTENT + BUFFER, EXTENT + BUFFER)
        if group is None:
            group = np.zeros(len(geoms), dtype=np.int64)
        return cls(dims, sizes, points, clipped, group)


def select(candidates: Candidates, rules: Rules) -> np.ndarray:
    """Indices of the features kept at these rules: big enough, and points thinned (features
    come in feature-id order, which decides which point of a cell stays)."""
    dims, sizes = candidates.dims, candidates.sizes
    keep = dims >= 0
    keep &= ~((dims == 2) & (sizes < rules.min_area))
    keep &= ~((dims == 1) & (sizes < rules.min_length))
    if rules.point_cell > 0:
        points = np.flatnonzero(keep & ~np.isnan(candidates.points[:, 0]))
        if len(points):
            keep[points] = False
            keep[_thin(candidates.points[points], candidates.group[points], rules.point_cell, points)] = True
    return np.flatnonzero(keep)


def _thin(xy: np.ndarray, group: np.ndarray, cell: float, index: np.ndarray) -> np.ndarray:
    """One point per grid cell and layer (cells anchored at the tile's south-west corner), the
    first in feature-id order winning."""
    cx = np.floor(xy[:, 0] / cell)
    cy = np.floor((EXTENT - xy[:, 1]) / cell)
    order = np.lexsort((index, cy, cx, group))
    cx, cy, group = cx[order], cy[order], group[order]
    first = np.r_[True, (cx[1:] != cx[:-1]) | (cy[1:] != cy[:-1]) | (group[1:] != group[:-1])]
    return index[order[first]]


def shape(clipped: np.ndarray, dims: np.ndarray, rules: Rules) -> np.ndarray:
    """Simplify features already clipped to the buffered tile, snap polygons to the integer
    grid, keep each geometry's own dimension and orient rings (exterior clockwise on screen).
    None marks a feature with nothing left."""
    clipped = clipped.copy()
    # Douglas-Peucker; polygons keep their topology, so none collapses (as ST_Simplify's preserveCollapsed)
    for dim, keep_topology in ((1, False), (2, True)):
        members = dims == dim
        if members.any():
            clipped[members] = shapely.simplify(clipped[members], rules.tolerance, preserve_topology=keep_topology)
    snapped = _snap(clipped, dims)
    types = shapely.get_type_id(snapped)
    ok = _family_mask(types, dims) & ~shapely.is_empty(snapped)
    result = np.where(ok, snapped, None)
    for i in np.flatnonzero(~ok & (dims >= 0)):
        result[i] = _own_dimension(snapped[i], int(dims[i]))
    areas = (dims == 2) & np.not_equal(result, None)
    if areas.any():
        result[areas] = shapely.orient_polygons(result[areas], exterior_cw=False)
    return result


def _family_mask(types: np.ndarray, dims: np.ndarray) -> np.ndarray:
    """Whether each geometry is a single or multi geometry of its expected dimension."""
    mask = np.zeros(len(types), dtype=bool)
    for dim, members in FAMILY_TYPES.items():
        mask |= (dims == dim) & np.isin(types, members)
    return mask


def _snap(geoms: np.ndarray, dims: np.ndarray) -> np.ndarray:
    """Round polygons to whole tile units (points and lines are rounded by the encoder, which
    also drops the repeated points rounding makes). Rounding point by point keeps nearly every
    polygon valid; the few it does not get GEOS's full precision reduction (snap rounding with
    valid output), repaired first if GEOS cannot snap them."""
    snapped = geoms.copy()
    areas = np.flatnonzero(dims == 2)
    snapped[areas] = shapely.set_precision(geoms[areas], 1.0, mode="pointwise")
    bad = areas[~shapely.is_valid(snapped[areas])]
    for i in bad:
        try:
            snapped[i] = shapely.set_precision(geoms[i], 1.0)
        except GEOSException:
            try:
                snapped[i] = shapely.set_precision(shapely.make_valid(geoms[i]), 1.0)
            except GEOSException:
                snapped[i] = shapely.GeometryCollection()
    return snapped


SINGLE_TO_MULTI = {0: shapely.multipoints, 1: shapely.multilinestrings, 2: shapely.multipolygons}
FAMILY_TYPES = {0: (0, 4), 1: (1, 5), 2: (3, 6)}


def _own_dimension(geom: shapely.Geometry, dim: int) -> shapely.Geometry | None:
    """The parts of the geometry's original dimension (clipping and snapping can add or leave
    lower-dimensional debris); None when nothing is left."""
    if geom is None or geom.is_empty or dim < 0:
        return None
    type_id = shapely.get_type_id(geom)
    if type_id in FAMILY_TYPES[dim]:
        return geom
    parts = [p for p in shapely.get_parts(geom) if shapely.get_type_id(p) in FAMILY_TYPES[dim]]
    flat = []
    for part in parts:
        flat.extend(shapely.get_parts(part))
    if not flat:
        return None
    return flat[0] if len(flat) == 1 else SINGLE_TO_MULTI[dim](flat)
