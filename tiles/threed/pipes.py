"""A pipe network layer's 3D Tiles: pipes as tubes and boxes, wells as shafts, fittings as symbols.

Each pipe_network layer builds what it holds. A pipe layer (lines, role `pipes`) becomes tubes
along its 3D centreline: `twin.analysis.pipe_solids` gives every pipe's class, outer size and
outer-bottom elevation at both ends (inverts, surveyed elevations or depths below the nodes'
ground or the DEM, per CJJ 61), the centre runs half the outer height above that; circular
sections are n-gons (more sides for large pipes), `shape: box` ones width × height boxes. A
node layer (points, role `nodes`) draws manholes, inlets, outfalls and chambers as shafts from
the invert (or the pipe level) up to the ground, and valves, hydrants, meters, regulators and
stations as small symbols at the pipe level or on the ground; plain junctions and service
points draw nothing. The pipe level at a node comes from its depth and the largest pipe of the
network's pipe layer that ends there.

Colours are the CJJ 61 class colours of the 2D pipe style (`styles/pipes.json`, the
`twin:class-colours` table), by class code, else by the network family's main code. Positions
are east-north-up metres around the layer's centre, heights made ellipsoidal with the store's
vertical datum; the root tile's transform places that frame. Volumes are `region`s; tiles and
levels of detail come from `tiles.threed.pipes_lod`. Each tile carries the features' metadata
(id, class, size, material, year, cover...), and the id is the feature id of
`GET /features/{layer}/{id}`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import shapely

from tiles.threed.bim import store_datum
from tiles.threed.gltf import TileMesh, encode_glb
from tiles.threed.metadata import FLOAT64, INT32, Column, PropertyTable
from tiles.threed.pipes_lod import FeatureStats, PipeTile, build_tree
from tiles.threed.pipes_mesh import Sweeps, circle_sides, polygon_error, sweep_mesh, triangle_count
from tiles.threed.tileset import Tile, region_volume, tileset_document, write_tileset
from twin.analysis.dem_sample import Dem
from twin.analysis.pipe_solids import (  # _finite, _number: the same reading of numbers as the solids
    FAMILY_CODES,
    _finite,
    _number,
    is_pipe_layer,
    node_grounds,
    pipe_family,
    solids_from_features,
)
from twin.crs import CRS84, enu_to_ecef_matrix, geodetic_to_enu, transform_points
from twin.model import Feature, InvalidInput, Layer, LayerKind
from twin.store import Store

STYLE = Path(__file__).resolve().parents[2] / "styles" / "pipes.json"
OTHER_COLOUR = (128, 128, 128)
DEFAULT_COVER = 1.0  # metres of cover when a pipe or node has no elevation, depth or invert
DEFAULT_SIZE = 0.1  # metres: a pipe recorded without a size is drawn this thick
METRES_PER_DEGREE = 111_320.0
LEAF_TRIANGLES = 40_000
LEAF_FEATURES = 4_000
PIPE_CLASS = "pipe"
NODE_CLASS = "pipe_node"
PIPE_COLUMNS = (
    Column("id", description="Feature id in the twin: GET /features/{layer}/{id}"),
    Column("class", description="CJJ 61 class code, e.g. JS, YS, RQ"),
    Column("family", description="Network family: water, drainage, gas, heat, power, telecom..."),
    Column("kind", description="Pipe kind as recorded (main, distribution, sewer...)"),
    Column("material"),
    Column("shape", description="circular or box"),
    Column("size", description="DN or width×height label"),
    Column("diameter", FLOAT64, "Nominal diameter, mm"),
    Column("width", FLOAT64, "Box width, mm"),
    Column("height", FLOAT64, "Box height, mm"),
    Column("year", INT32, "Year laid"),
    Column("cover_start", FLOAT64, "Ground to outer crown at the start, m"),
    Column("cover_end", FLOAT64, "Ground to outer crown at the end, m"),
    Column("elevation_from", description="invert, elevation, depth, geometry or assumed"),
)
NODE_COLUMNS = (
    Column("id", description="Feature id in the twin: GET /features/{layer}/{id}"),
    Column("class", description="CJJ 61 class code of the network"),
    Column("family", description="Network family"),
    Column("type", description="Node type as recorded (manhole, valve, hydrant...)"),
    Column("feature", description="Surveyed feature name"),
    Column("drawn_as", description="shaft or symbol"),
    Column("ground_elev", FLOAT64, "Ground elevation, m"),
    Column("depth", FLOAT64, "Depth as recorded, m"),
    Column("invert_elev", FLOAT64, "Invert elevation, m"),
)
SHAFT_TYPES = {"manhole": (0.6, 0.6, False), "well": (0.6, 0.6, False), "chamber": (0.8, 0.8, True)}
SHAFT_TYPES |= {"valve_chamber": (0.8, 0.8, True), "inlet": (0.35, 0.25, True), "gully": (0.35, 0.25, True)}
SHAFT_TYPES |= {"outfall": (0.6, 0.6, True)}
"""Node type -> (half width, half height across the shaft in m, box section) for shafts to the ground."""
SYMBOLS = {
    "valve": ("pipe", 0.25, 0.25, True),
    "meter": ("pipe", 0.2, 0.2, True),
    "hydrant": ("post", 0.1, 0.8, False),
    "regulator": ("ground", 0.4, 1.2, True),
    "station": ("ground", 2.0, 3.0, True),
    "plant": ("ground", 2.0, 3.0, True),
    "tank": ("ground", 2.0, 3.0, True),
    "pump": ("ground", 1.0, 2.0, True),
}
"""Node type -> (placement, half size, height or half size, box): `pipe` centred on the pipe,
`post` from the pipe up to that height above ground, `ground` a cabinet of that height."""


@lru_cache(maxsize=1)
def class_colours() -> dict[str, tuple[int, int, int]]:
    """CJJ 61 class code -> sRGB, from the 2D pipe style's `twin:class-colours` (one source of truth)."""
    table = json.loads(STYLE.read_text(encoding="utf-8"))["metadata"]["twin:class-colours"]
    out = {}
    for code, text in table.items():
        numbers = [int(v) for v in re.findall(r"\d+", text)[:3]]
        out[code.upper()] = (numbers[0], numbers[1], numbers[2])
    return out


def class_colour(code: str, family: str) -> tuple[int, int, int, int]:
    """A class code's colour, else its family's main class colour, else grey (opaque)."""
    colours = class_colours()
    rgb = colours.get(str(code).upper()[:2])
    if rgb is None:
        main = FAMILY_CODES.get(family, ("",))[0]
        rgb = colours.get(main, OTHER_COLOUR)
    return (*rgb, 255)


@dataclass
class NetworkParts:
    """What a layer draws, in project coordinates with orthometric heights, plus one row per feature."""

    sweeps: Sweeps
    rows: list[dict[str, Any]]
    columns: tuple[Column, ...]
    class_id: str
    kinds: dict[str, int] = field(default_factory=dict)
    skipped: int = 0  # features that draw nothing: junctions, no line geometry, no elevation or ground


# ----- pipes --------------------------------------------------------------------------------
def pipe_parts(store: Store, layer: Layer, features: list[Feature], dem: Dem | None) -> NetworkParts:
    """Tubes and boxes along each pipe's 3D centreline (pipe_solids elevations, linear along the pipe)."""
    solids = solids_from_features(features, layer, node_grounds(store, layer, None, None), dem, store.crs)
    n = len(solids)
    bottom = solids.bottom.copy()
    source = solids.source.copy()
    width = np.where(solids.width > 0, solids.width, DEFAULT_SIZE)
    height = np.where(solids.height > 0, solids.height, DEFAULT_SIZE)
    assumed = ~np.isfinite(bottom).all(axis=1)
    bottom[assumed] = solids.ground[assumed] - DEFAULT_COVER - height[assumed, None]
    source[assumed] = "assumed"
    usable = np.isfinite(bottom).all(axis=1)
    keep = np.flatnonzero(usable)
    coords, owner = shapely.get_coordinates(solids.geometry[keep], return_index=True)
    if not len(coords):
        raise InvalidInput(f"layer {layer.id!r} has no pipe with a line geometry and a known elevation")
    owner = keep[owner]
    step = np.r_[0.0, np.linalg.norm(np.diff(coords, axis=0), axis=1)]
    first = np.r_[True, owner[1:] != owner[:-1]]
    step[first] = 0.0
    along = np.cumsum(step)
    along -= along[np.flatnonzero(first)][np.cumsum(first) - 1]
    total = np.zeros(n)
    np.maximum.at(total, owner, along)
    fraction = np.divide(along, total[owner], out=np.zeros_like(along), where=total[owner] > 0)
    centre = bottom[owner, 0] + fraction * (bottom[owner, 1] - bottom[owner, 0]) + height[owner] / 2.0
    points = np.column_stack([coords, centre])
    segment = np.flatnonzero(~first[1:] & (step[1:] > 0))  # from point i to i + 1 of the same pipe
    pipe = owner[segment]
    drawn, local = np.unique(pipe, return_inverse=True)
    colours = np.array([class_colour(c, f) for c, f in zip(solids.code, solids.family, strict=True)], dtype=np.uint8)
    sweeps = Sweeps.make(
        points[segment],
        points[segment + 1],
        width[pipe] / 2.0,
        height[pipe] / 2.0,
        solids.box[pipe],
        local,
        colours[pipe],
    )
    cover = solids.ground - (bottom + height[:, None])
    rows = []
    for i in drawn.tolist():
        props = solids.properties[i]
        rows.append(
            {
                "id": solids.ids[i],
                "class": solids.code[i] or None,
                "family": solids.family[i],
                "kind": props.get("kind"),
                "material": props.get("material"),
                "shape": "box" if solids.box[i] else "circular",
                "size": solids.size_label(i),
                "diameter": _finite(solids.diameter_mm[i]),
                "width": _finite(solids.width_mm[i]),
                "height": _finite(solids.height_mm[i]),
                "year": next((props[k] for k in ("year", "install_year", "built") if props.get(k) is not None), None),
                "cover_start": _finite(cover[i, 0]),
                "cover_end": _finite(cover[i, 1]),
                "elevation_from": source[i],
            }
        )
    kinds = {"tube": int((~solids.box[drawn]).sum()), "box": int(solids.box[drawn].sum())}
    skipped = len(features) - len(drawn)
    return NetworkParts(sweeps, rows, PIPE_COLUMNS, PIPE_CLASS, kinds, skipped)


# ----- nodes --------------------------------------------------------------------------------
def _pipe_size_at_nodes(store: Store, layer: Layer) -> dict[str, float]:
    """Largest outer size (m) of the pipes ending at each node, from the pipe layers naming this one."""
    sizes: dict[str, float] = {}
    for other in store.list_layers():
        if not is_pipe_layer(other) or (other.metadata or {}).get("nodes_layer") != layer.id:
            continue
        pipes = list(store.iter_features(other.id))
        if not pipes:
            continue
        solids = solids_from_features(pipes, other, {}, None, store.crs)
        outer = np.maximum(solids.width, solids.height)
        for ends in (solids.start_node, solids.end_node):
            for node, size in zip(ends.tolist(), outer.tolist(), strict=True):
                if node and size > sizes.get(node, 0.0):
                    sizes[node] = size
    return sizes


def _node_type(props: dict[str, Any]) -> str:
    return str(props.get("type") or "").strip().lower().replace(" ", "_")


def node_parts(store: Store, layer: Layer, features: list[Feature], dem: Dem | None) -> NetworkParts:
    """Shafts from the invert or pipe level to the ground, and symbols at the pipe level or on the ground."""
    points = [f for f in features if f.geometry is not None and f.geometry.geom_type == "Point"]
    drawable = [f for f in points if _node_type(f.properties) in SHAFT_TYPES or _node_type(f.properties) in SYMBOLS]
    if not drawable:
        raise InvalidInput(f"layer {layer.id!r} has no shaft or symbol to draw (only junctions or unknown types)")
    xy = shapely.get_coordinates(np.array([f.geometry for f in drawable], dtype=object))
    props = [f.properties for f in drawable]
    ground = np.array([_number(p.get("ground_elev", p.get("ground"))) for p in props])
    if dem is not None and not np.isfinite(ground).all():
        missing = ~np.isfinite(ground)
        ground[missing] = dem.sample(xy[missing, 0], xy[missing, 1], store.crs)
    depth = np.array([_number(p.get("depth")) for p in props])
    invert = np.array([_number(p.get("invert_elev", p.get("invert"))) for p in props])
    sizes = _pipe_size_at_nodes(store, layer)
    size = np.array(
        [sizes.get(str(p.get("node_id")), sizes.get(f.fid, DEFAULT_SIZE)) for f, p in zip(drawable, props, strict=True)]
    )
    codes = np.array([str(p.get("class") or "") for p in props], dtype=object)
    family = pipe_family(codes, (layer.metadata or {}).get("network"))
    drainage = family == "drainage"
    # pipe centre: invert + r; depth is to the invert for drainage, to the crown otherwise (CJJ 61)
    centre = np.where(drainage, ground - depth + size / 2.0, ground - depth - size / 2.0)
    centre = np.where(np.isfinite(invert), invert + size / 2.0, centre)
    centre = np.where(np.isfinite(centre), centre, ground - DEFAULT_COVER - size / 2.0)
    parts: list[Sweeps] = []
    rows: list[dict[str, Any]] = []
    kinds = {"shaft": 0, "symbol": 0}
    skipped = len(features) - len(drawable)
    for i, props_i in enumerate(props):
        if not (np.isfinite(ground[i]) and np.isfinite(centre[i])):
            skipped += 1
            continue
        kind = _node_type(props_i)
        x, y = xy[i]
        colour = class_colour(codes[i], family[i])
        if kind in SHAFT_TYPES:
            half_w, half_h, box = SHAFT_TYPES[kind]
            low = invert[i] if np.isfinite(invert[i]) else centre[i] - size[i] / 2.0
            low, high = min(low, ground[i] - 0.1), ground[i]
            drawn_as = "shaft"
        else:
            place, half_w, extent, box = SYMBOLS[kind]
            half_h = half_w
            if place == "pipe":
                low, high = centre[i] - extent, centre[i] + extent
            elif place == "post":
                low, high = centre[i], ground[i] + extent
            else:
                low, high = ground[i], ground[i] + extent
            drawn_as = "symbol"
        kinds[drawn_as] += 1
        parts.append(Sweeps.make([x, y, low], [x, y, high], half_w, half_h, box, len(rows), colour))
        rows.append(
            {
                "id": drawable[i].fid,
                "class": codes[i] or FAMILY_CODES.get(family[i], ("",))[0] or None,
                "family": family[i],
                "type": props_i.get("type"),
                "feature": props_i.get("feature"),
                "drawn_as": drawn_as,
                "ground_elev": _finite(ground[i]),
                "depth": _finite(depth[i]),
                "invert_elev": _finite(invert[i]),
            }
        )
    if not parts:
        raise InvalidInput(f"layer {layer.id!r} has no node with a known ground elevation")
    return NetworkParts(Sweeps.concat(parts), rows, NODE_COLUMNS, NODE_CLASS, kinds, skipped)


def network_parts(store: Store, layer: Layer, features: list[Feature]) -> NetworkParts:
    """The layer's solids: pipes for a pipe layer, shafts and symbols for a node layer."""
    if layer.kind != LayerKind.pipe_network:
        raise InvalidInput(f"layer {layer.id!r} is not a pipe network layer")
    dem = Dem.from_store(store)
    if is_pipe_layer(layer):
        return pipe_parts(store, layer, features, dem)
    return node_parts(store, layer, features, dem)


# ----- placement, levels of detail, output --------------------------------------------------
def placed(store: Store, sweeps: Sweeps) -> tuple[Sweeps, np.ndarray, np.ndarray]:
    """The sweeps in ENU metres around the layer's centre, that anchor (lon, lat, h) and geodetic ends."""
    datum = store_datum(store)
    ends = np.concatenate([sweeps.a, sweeps.b])
    lon, lat = transform_points(store.crs, CRS84, ends[:, 0], ends[:, 1])
    lon, lat = np.asarray(lon, dtype=float), np.asarray(lat, dtype=float)
    h = np.asarray(datum.to_ellipsoidal(lon, lat, ends[:, 2]), dtype=float)
    anchor = np.array([(lon.min() + lon.max()) / 2, (lat.min() + lat.max()) / 2, float(np.median(h))])
    enu = geodetic_to_enu(lon, lat, h, tuple(anchor))
    n = len(sweeps)
    moved = replace(sweeps, a=enu[:n], b=enu[n:])
    return moved, anchor, np.column_stack([lon, lat, h]).reshape(2, n, 3)


def feature_stats(sweeps: Sweeps, geodetic: np.ndarray, count: int) -> FeatureStats:
    """Per-feature sizes, triangle counts, coarse error and padded region, for the tile tree."""
    reach = np.hypot(sweeps.half_width, sweeps.half_height) + 0.05  # box corners reach furthest
    low = np.minimum(sweeps.a, sweeps.b) - reach[:, None]
    high = np.maximum(sweeps.a, sweeps.b) + reach[:, None]
    lon, lat, h = (geodetic[..., k] for k in range(3))
    dlat = reach / METRES_PER_DEGREE
    dlon = dlat / np.cos(np.radians(lat.max(axis=0)))
    sag = 0.001 + np.linalg.norm(sweeps.b - sweeps.a, axis=1) ** 2 / (8 * 6_371_000.0)
    region = np.column_stack(
        [
            lon.min(axis=0) - dlon,
            lat.min(axis=0) - dlat,
            lon.max(axis=0) + dlon,
            lat.max(axis=0) + dlat,
            h.min(axis=0) - reach - sag,
            h.max(axis=0) + reach + sag,
        ]
    )
    f = sweeps.feature
    full_sides = circle_sides(2 * sweeps.half_width)
    coarse_sides = circle_sides(2 * sweeps.half_width, coarse=True)
    sag_error = np.where(sweeps.box, 0.0, polygon_error(sweeps.half_width, coarse_sides))

    def per(values: np.ndarray, how) -> np.ndarray:
        out = np.full((count, *values.shape[1:]), np.inf if how is np.minimum else -np.inf)
        how.at(out, f, values)
        return out

    def total(values: np.ndarray) -> np.ndarray:
        return np.bincount(f, weights=values, minlength=count)

    f_low, f_high = per(low, np.minimum), per(high, np.maximum)
    return FeatureStats(
        centre=(f_low[:, :2] + f_high[:, :2]) / 2.0,
        thickness=per(2 * np.maximum(sweeps.half_width, sweeps.half_height), np.maximum),
        size=np.linalg.norm(f_high - f_low, axis=1),
        full_triangles=total(triangle_count(sweeps, full_sides)),
        coarse_triangles=total(triangle_count(sweeps, coarse_sides, caps=False)),
        coarse_error=per(sag_error, np.maximum),
        region=np.column_stack(
            [
                per(region[:, :2], np.minimum),
                per(region[:, 2:4], np.maximum),
                per(region[:, 4], np.minimum),
                per(region[:, 5], np.maximum),
            ]
        ),
    )


def tile_mesh(sweeps: Sweeps, tile: PipeTile) -> tuple[TileMesh, np.ndarray]:
    """A tile's triangles (feature ids renumbered from zero) and the global feature index of each id."""
    chosen = sweeps.take(np.flatnonzero(np.isin(sweeps.feature, tile.drawn)))
    sides = circle_sides(2 * chosen.half_width, coarse=tile.coarse)
    mesh = sweep_mesh(chosen, sides, caps=not tile.coarse)
    present, local = np.unique(mesh.feature_ids, return_inverse=True)
    return TileMesh(mesh.positions, mesh.indices, local, mesh.colors, mesh.normals), present


def write_tiles(
    tree: PipeTile, sweeps: Sweeps, parts: NetworkParts, out: Path, compression: str | None
) -> tuple[int, int]:
    """Every tile's glb under `out/tiles/`; returns bytes and triangles written."""
    (out / "tiles").mkdir(parents=True, exist_ok=True)
    written = triangles = 0
    for tile in tree.walk():
        mesh, present = tile_mesh(sweeps, tile)
        rows = [parts.rows[i] for i in present.tolist()]
        table = PropertyTable(parts.class_id, parts.columns, rows)
        data = encode_glb(mesh, table, compression=compression)
        (out / "tiles" / f"{tile.address}.glb").write_bytes(data)
        written += len(data)
        triangles += mesh.triangle_count
    return written, triangles


def tile_tree(tile: PipeTile) -> Tile:
    return Tile(
        bounding_volume=region_volume(*tile.region.tolist()),
        geometric_error=tile.error,
        content_uri=f"tiles/{tile.address}.glb",
        children=[tile_tree(child) for child in tile.children],
    )


def build(
    store: Store,
    layer: Layer,
    features: list[Feature],
    out: Path,
    *,
    compression: str | None = "meshopt",
    leaf_triangles: int = LEAF_TRIANGLES,
    leaf_features: int = LEAF_FEATURES,
) -> dict[str, Any]:
    """Write tileset.json and tiles/*.glb of a pipe network layer into `out`; returns a summary."""
    parts = network_parts(store, layer, features)
    sweeps, anchor, geodetic = placed(store, parts.sweeps)
    stats = feature_stats(sweeps, geodetic, len(parts.rows))
    tree = build_tree(stats, leaf_triangles=leaf_triangles, leaf_features=leaf_features)
    size, triangles = write_tiles(tree, sweeps, parts, out, compression)
    root = tile_tree(tree)
    root.transform = enu_to_ecef_matrix(*anchor.tolist())
    low = np.minimum(sweeps.a, sweeps.b).min(axis=0)
    high = np.maximum(sweeps.a, sweeps.b).max(axis=0)
    diagonal = float(np.linalg.norm(high - low))
    document = tileset_document(
        root, max(2.0 * tree.error, diagonal), extras={"layer": layer.id, "kind": layer.kind.value}
    )
    write_tileset(out / "tileset.json", document)
    return {
        "tiles": sum(1 for _ in tree.walk()),
        "triangles": triangles,
        "features": len(parts.rows),
        "skipped": parts.skipped,
        "kinds": parts.kinds,
        "bytes": size,
        "anchor": anchor.tolist(),
        "geometric_error": document["geometricError"],
    }
