"""Buildings from basemap footprints as LOD1 3D Tiles: each footprint extruded from the ground to its height.

Which layers: a vector layer is drawn by this builder when its metadata holds an `extrude`
object (`is_extruded`, registered in `tiles.threed.build`). `twin ingest basemap` adds one to
every polygon layer whose schema has a `height` or `floors` field; a manifest entry may give it
explicitly. Its settings (all optional):

- `storey_height` (metres, default 3): a feature's height is its `height` attribute when that
  is a positive number, else `floors` x storey height; a footprint with neither is left out
  (counted as `skipped` in the build summary).
- `height_field`, `floors_field`: the attribute names (default `height`, `floors`).
- `skip_within`: `[xmin, ymin, xmax, ymax]` in the project CRS: footprints whose
  representative point lies inside are left out because a more detailed layer draws that area.
  The demo's 1:2000 band skips the 1:500 core and its 1:10000 band the 1:2000 district, so the
  twin root shows, per area, the most detailed footprints there are (core 1:500, rest of the
  district 1:2000, villages of the countryside ring 1:10000) and nothing twice.
- `max_tile_bytes` (default 500 KB) and `max_tile_features` (default 4000): a tile's budget; the
  spatial subdivision splits until a leaf fits both.

Placement: the base of a building is the lowest DEM height under its footprint's corners
(bilinear, `twin.analysis.dem_sample`; 0 outside the DEM, where the terrain is 0 too), its roof
is base + height, both orthometric; the store's vertical datum makes them ellipsoidal, so the
building stands on the terrain. Vertices are in an east-north-up frame at the layer's centre
(the root transform); every tile's `region` comes from the geodetic coordinates of the
vertices it draws and its children's regions. Tiles and levels of detail: see
`tiles.threed.buildings_lod` (quadtree over whole buildings, inner tiles with the largest
buildings as rectangles, geometric error from what that leaves out or moves). Per feature the
glb carries id (the twin's fid: `GET /features/{layer}/{id}`), name, use, floors, height, base
and year.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import shapely

from tiles.threed.bim import store_datum
from tiles.threed.buildings_lod import Footprints, build_tree
from tiles.threed.buildings_mesh import extrude, polygon_parts, prism_normals
from tiles.threed.gltf import TileMesh, encode_glb
from tiles.threed.metadata import FLOAT64, INT32, Column, PropertyTable
from tiles.threed.subdivide import LodNode
from tiles.threed.tileset import Tile, region_volume, tileset_document, write_tileset
from twin.analysis.dem_sample import Dem
from twin.crs import CRS84, enu_to_ecef_matrix, enu_to_geodetic, geodetic_to_ecef, transform_points
from twin.model import Feature, InvalidInput, Layer, LayerKind
from twin.store import Store

EXTRUDE = "extrude"
BUILDING_CLASS = "building"
BYTES_PER_TRIANGLE = 20  # measured on the 20 km city's meshopt-compressed tiles, metadata included
COLUMNS = (
    Column("id", description="Feature id in the twin: GET /features/{layer}/{id}"),
    Column("name", description="Building name"),
    Column("use", description="Building use"),
    Column("floors", INT32, "Number of storeys above ground"),
    Column("height", FLOAT64, "Height above the base (m)"),
    Column("base", FLOAT64, "Ground height under the building (m, 1985 national height datum)"),
    Column("year", INT32, "Year of construction"),
)
USE_COLORS = {  # sRGB, light tones so shading reads
    "residential": (236, 226, 206, 255),
    "commercial": (240, 196, 170, 255),
    "office": (190, 208, 232, 255),
    "industrial": (206, 200, 214, 255),
    "school": (246, 222, 150, 255),
    "hospital": (238, 188, 196, 255),
    "utility": (196, 214, 196, 255),
}
OTHER_COLOR = (222, 222, 222, 255)
REGION_PAD = 0.05  # metres above and below the vertices (chords of long edges sag below them)


@dataclass(frozen=True)
class ExtrudeSettings:
    """How a layer's footprints become buildings (the layer's `extrude` metadata)."""

    storey_height: float = 3.0
    height_field: str = "height"
    floors_field: str = "floors"
    skip_within: tuple[float, float, float, float] | None = None
    max_tile_bytes: int = 512_000
    max_tile_features: int = 4000

    @classmethod
    def of(cls, layer: Layer) -> ExtrudeSettings:
        """The layer's settings; InvalidInput when they are not numbers and names."""
        spec = (layer.metadata or {}).get(EXTRUDE)
        if not isinstance(spec, dict):
            raise InvalidInput(f"layer {layer.id!r} has no {EXTRUDE!r} settings")
        unknown = set(spec) - set(cls.__dataclass_fields__)
        if unknown:
            raise InvalidInput(f"layer {layer.id!r}: unknown {EXTRUDE} setting(s) {', '.join(sorted(unknown))}")
        try:
            settings = cls(**{**spec, "skip_within": _box(spec.get("skip_within"))})
            valid = settings.storey_height > 0 and settings.max_tile_bytes > 0 and settings.max_tile_features > 0
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"layer {layer.id!r}: bad {EXTRUDE} settings ({exc})") from None
        if not valid:
            raise InvalidInput(f"layer {layer.id!r}: {EXTRUDE} sizes must be positive")
        return settings


def _box(value: Any) -> tuple[float, float, float, float] | None:
    if value is None:
        return None
    box = tuple(float(v) for v in value)
    if len(box) != 4 or box[0] >= box[2] or box[1] >= box[3]:
        raise ValueError("skip_within is [xmin, ymin, xmax, ymax]")
    return box  # type: ignore[return-value]


def is_extruded(layer: Layer) -> bool:
    """The builder's rule: a vector layer whose metadata has an `extrude` object."""
    return layer.kind == LayerKind.vector and isinstance((layer.metadata or {}).get(EXTRUDE), dict)


def _number(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.nan
    return number if math.isfinite(number) and number > 0 else math.nan


def feature_heights(features: Sequence[Feature], settings: ExtrudeSettings) -> np.ndarray:
    """Height of each feature (metres): its height attribute, else floors x storey height; NaN if neither."""
    heights = np.array([_number(f.properties.get(settings.height_field)) for f in features], dtype=float)
    floors = np.array([_number(f.properties.get(settings.floors_field)) for f in features], dtype=float)
    return np.where(np.isfinite(heights), heights, floors * settings.storey_height)


def ground_heights(store: Store, geometries: np.ndarray) -> np.ndarray:
    """Lowest DEM height (orthometric) under each footprint's corners; 0 where no DEM covers it."""
    base = np.zeros(len(geometries))
    dem = Dem.from_store(store)
    if dem is None or not len(geometries):
        return base
    parts, owner = polygon_parts(geometries)
    coords, part = shapely.get_coordinates(shapely.get_exterior_ring(parts), return_index=True)
    sampled = dem.sample(coords[:, 0], coords[:, 1], store.crs)
    ok = np.isfinite(sampled)
    lowest = np.full(len(geometries), np.inf)
    np.minimum.at(lowest, owner[part[ok]], sampled[ok])
    return np.where(np.isfinite(lowest), lowest, 0.0)


@dataclass
class Extruded:
    """A layer's buildings in its ENU frame (full prisms and rectangles), and their table rows."""

    footprints: Footprints
    anchor: tuple[float, float, float]
    rows: list[dict[str, Any]]
    skipped: int


class _Placement:
    """Project-CRS points with orthometric heights to east-north-up metres around an anchor."""

    def __init__(self, store: Store) -> None:
        self.crs = store.crs
        self.datum = store_datum(store)
        self.anchor: tuple[float, float, float] | None = None

    def enu(self, positions: np.ndarray) -> np.ndarray:
        lon, lat = transform_points(self.crs, CRS84, positions[:, 0], positions[:, 1])
        ellipsoidal = self.datum.to_ellipsoidal(lon, lat, positions[:, 2])
        if self.anchor is None:  # the first call fixes the frame: the centre of what it places
            lon0, lat0 = (lon.min() + lon.max()) / 2.0, (lat.min() + lat.max()) / 2.0
            h0 = self.datum.to_ellipsoidal(lon0, lat0, np.median(positions[:, 2]))
            self.anchor = (float(lon0), float(lat0), float(h0))
        frame = enu_to_ecef_matrix(*self.anchor)
        return (geodetic_to_ecef(lon, lat, ellipsoidal) - frame[:3, 3]) @ frame[:3, :3]


def _kept(features: Sequence[Feature], heights: np.ndarray, settings: ExtrudeSettings) -> np.ndarray:
    """Indices of the features drawn: polygonal, with a height, outside `skip_within`."""
    geometries = np.array([f.geometry for f in features], dtype=object)
    polygonal = np.array([g is not None and g.geom_type in ("Polygon", "MultiPolygon") for g in geometries])
    keep = np.isfinite(heights) & polygonal
    if settings.skip_within is not None and keep.any():
        points = shapely.get_coordinates(shapely.point_on_surface(geometries[keep]))
        keep[np.flatnonzero(keep)] = ~shapely.contains_xy(shapely.box(*settings.skip_within), points)
    return np.flatnonzero(keep)


def extruded_mesh(store: Store, layer: Layer, features: Sequence[Feature], settings: ExtrudeSettings) -> Extruded:
    """Prisms of every footprint with a height (and of its oriented rectangle, for coarse tiles), in
    east-north-up metres at the layer's centre; feature ids are rows of the table."""
    heights = feature_heights(features, settings)
    kept = _kept(features, heights, settings)
    if not len(kept):
        raise InvalidInput(f"layer {layer.id!r} has no footprint with a height or floor count to extrude")
    geometries = np.array([features[i].geometry for i in kept], dtype=object)
    heights = heights[kept]
    base = ground_heights(store, geometries)
    prisms = extrude(geometries, base, base + heights)
    if not len(prisms.indices):
        raise InvalidInput(f"layer {layer.id!r}: no footprint gave any triangle")
    rectangles = shapely.oriented_envelope(geometries)
    boxes = extrude(rectangles, base, base + heights)
    placement = _Placement(store)
    uses = [str(features[i].properties.get("use") or "") for i in kept]
    palette = np.array([USE_COLORS.get(use, OTHER_COLOR) for use in uses], dtype=np.uint8)
    full = TileMesh(placement.enu(prisms.positions), prisms.indices, prisms.feature_ids, palette[prisms.feature_ids])
    coarse = TileMesh(placement.enu(boxes.positions), boxes.indices, boxes.feature_ids, palette[boxes.feature_ids])
    low, high = shapely.bounds(geometries)[:, :2], shapely.bounds(geometries)[:, 2:]
    size = np.sqrt(((high - low) ** 2).sum(axis=1) + heights**2)
    box_error = shapely.hausdorff_distance(geometries, rectangles)
    rows = [
        _row(features[i], float(h), float(b), settings) for i, h, b in zip(kept.tolist(), heights, base, strict=True)
    ]
    assert placement.anchor is not None
    return Extruded(
        Footprints(full, coarse, size, np.nan_to_num(box_error, nan=0.0)),
        placement.anchor,
        rows,
        int(len(features) - len(kept)),
    )


def _row(feature: Feature, height: float, base: float, settings: ExtrudeSettings) -> dict[str, Any]:
    p = feature.properties
    return {
        "id": feature.fid,
        "name": p.get("name"),
        "use": p.get("use"),
        "floors": p.get(settings.floors_field),
        "height": round(height, 3),
        "base": round(base, 3),
        "year": p.get("year"),
    }


def _regions(node: LodNode, anchor: tuple[float, float, float], out: dict[str, list[float]]) -> list[float]:
    """Each node's [west, south, east, north, low, high] (degrees, ellipsoidal metres): its own
    vertices' extent joined with its children's, so a parent always holds its children."""
    lon, lat, h = enu_to_geodetic(node.mesh.positions, anchor)
    box = [float(lon.min()), float(lat.min()), float(lon.max()), float(lat.max()), float(h.min()), float(h.max())]
    for child in node.children:
        inner = _regions(child, anchor, out)
        box = [min(box[0], inner[0]), min(box[1], inner[1]), max(box[2], inner[2]), max(box[3], inner[3])] + [
            min(box[4], inner[4]),
            max(box[5], inner[5]),
        ]
    out[node.address] = box
    return box


def _tile_tree(node: LodNode, regions: dict[str, list[float]]) -> Tile:
    west, south, east, north, low, high = regions[node.address]
    return Tile(
        bounding_volume=region_volume(west, south, east, north, low - REGION_PAD, high + REGION_PAD),
        geometric_error=node.error,
        content_uri=f"tiles/{node.address}.glb",
        children=[_tile_tree(child, regions) for child in node.children],
    )


def write_tiles(tree: LodNode, rows: list[dict[str, Any]], out: Path, compression: str | None) -> int:
    """Each node's glb under `out/tiles/`, feature ids renumbered per tile; returns bytes written."""
    written = 0
    (out / "tiles").mkdir(parents=True, exist_ok=True)
    for node in tree.walk():
        present, local = np.unique(node.mesh.feature_ids, return_inverse=True)
        normals = prism_normals(node.mesh.positions, node.mesh.indices)
        mesh = TileMesh(node.mesh.positions, node.mesh.indices, local, node.mesh.colors, normals)
        table = PropertyTable(BUILDING_CLASS, COLUMNS, [rows[i] for i in present.tolist()])
        data = encode_glb(mesh, table, compression=compression)
        (out / "tiles" / f"{node.address}.glb").write_bytes(data)
        written += len(data)
    return written


def build(
    store: Store, layer: Layer, features: list[Feature], out: Path, *, compression: str | None = "meshopt"
) -> dict[str, Any]:
    """Write tileset.json and tiles/*.glb of the layer's extruded footprints into `out`; returns a summary."""
    settings = ExtrudeSettings.of(layer)
    extruded = extruded_mesh(store, layer, features, settings)
    tree = build_tree(
        extruded.footprints,
        max_triangles=max(settings.max_tile_bytes // BYTES_PER_TRIANGLE, 1),
        max_features=settings.max_tile_features,
    )
    size = write_tiles(tree, extruded.rows, out, compression)
    regions: dict[str, list[float]] = {}
    _regions(tree, extruded.anchor, regions)
    root = _tile_tree(tree, regions)
    root.transform = enu_to_ecef_matrix(*extruded.anchor)
    diagonal = float(np.linalg.norm(tree.high - tree.low))
    document = tileset_document(root, max(2.0 * tree.error, diagonal), extras={"layer": layer.id, "kind": "buildings"})
    write_tileset(out / "tileset.json", document)
    return {
        "tiles": sum(1 for _ in tree.walk()),
        "triangles": int(extruded.footprints.full.triangle_count),
        "features": len(extruded.rows),
        "skipped": extruded.skipped,
        "bytes": size,
        "anchor": list(extruded.anchor),
        "geometric_error": document["geometricError"],
    }
