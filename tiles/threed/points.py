"""A point cloud layer's 3D Tiles: an octree of glb POINTS tiles, each point stored once (ADD refinement).

Points are sorted once by their Morton code in the cloud's bounding cube. A tile (octree node)
keeps one point per cell of a 128-cell grid over its cube (the middle one of the cell's run in
Morton order) and hands the rest to its eight children, until a node holds few enough points to
keep them all. Rendering a tile without its children leaves every missing point within one cell
diagonal of a drawn one: that is the tile's geometric error, halving at each level, and zero at
the leaves. Everything is vectorised over contiguous Morton runs, so a level costs one pass.

Each tile is one glb primitive in mode POINTS: positions relative to the tile (16-bit
KHR_mesh_quantization when that step is under a millimetre, else float32), sRGB colours as
linear COLOR_0, and the ASPRS class and intensity as EXT_structural_metadata property
attributes (`_CLASSIFICATION` with the class names as an enum, `_INTENSITY`), meshopt-compressed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tiles.threed.bim import store_datum
from tiles.threed.gltf import (
    ARRAY_BUFFER,
    FLOAT,
    MESHOPT,
    QUANTIZATION,
    UNSIGNED_BYTE,
    UNSIGNED_SHORT,
    _GlbBuilder,
    srgb_to_linear,
)
from tiles.threed.tileset import Tile, box_volume, tileset_document, write_tileset
from twin.crs import enu_to_ecef_matrix, reheight_enu
from twin.model import Feature, InvalidInput, Layer
from twin.store import Store

POSITION_UNIT = 1e-4  # metres per stored step (ingestion.pointcloud)
LEVELS = 21  # Morton bits per axis
GRID_BITS = 7  # a tile samples a 128-cell grid over its cube
LEAF_POINTS = 50_000
QUANTIZE_STEP = 0.001  # metres: 16-bit positions only when their step is finer than this
POINT_CLASS = "point"
UNLIT = "KHR_materials_unlit"
ASPRS_CLASSES = {
    0: "created_never_classified",
    1: "unclassified",
    2: "ground",
    3: "low_vegetation",
    4: "medium_vegetation",
    5: "high_vegetation",
    6: "building",
    7: "low_point",
    8: "reserved_8",
    9: "water",
    10: "rail",
    11: "road_surface",
    12: "reserved_12",
    13: "wire_guard",
    14: "wire_conductor",
    15: "transmission_tower",
    16: "wire_connector",
    17: "bridge_deck",
    18: "high_noise",
}


@dataclass
class Cloud:
    """All points of a layer in one east-north-up frame (metres) around `anchor`."""

    positions: np.ndarray
    classification: np.ndarray
    intensity: np.ndarray
    colors: np.ndarray | None
    anchor: np.ndarray


@dataclass
class PointNode:
    """An octree tile: its address, tight bounds of its subtree, its own points, its error."""

    address: str
    low: np.ndarray
    high: np.ndarray
    points: np.ndarray  # indices into the cloud
    error: float
    children: list[PointNode] = field(default_factory=list)

    def walk(self):
        yield self
        for child in self.children:
            yield from child.walk()


def _spread_bits(values: np.ndarray) -> np.ndarray:
    """21-bit integers with two zero bits after every bit (for 3D Morton codes)."""
    v = values.astype(np.uint64) & np.uint64(0x1FFFFF)
    v = (v | (v << np.uint64(32))) & np.uint64(0x1F00000000FFFF)
    v = (v | (v << np.uint64(16))) & np.uint64(0x1F0000FF0000FF)
    v = (v | (v << np.uint64(8))) & np.uint64(0x100F00F00F00F00F)
    v = (v | (v << np.uint64(4))) & np.uint64(0x10C30C30C30C30C3)
    return (v | (v << np.uint64(2))) & np.uint64(0x1249249249249249)


def morton_codes(positions: np.ndarray, low: np.ndarray, size: float) -> np.ndarray:
    cells = np.clip(np.floor((positions - low) / size * (1 << LEVELS)), 0, (1 << LEVELS) - 1).astype(np.uint64)
    return (
        _spread_bits(cells[:, 0])
        | (_spread_bits(cells[:, 1]) << np.uint64(1))
        | (_spread_bits(cells[:, 2]) << np.uint64(2))
    )


def _bounds(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return points.min(axis=0), points.max(axis=0)


def build_octree(positions: np.ndarray, *, leaf_points: int = LEAF_POINTS) -> PointNode:
    """The tile tree of a cloud: sampled inner tiles, every point in exactly one tile."""
    if len(positions) == 0:
        raise ValueError("nothing to tile: the cloud has no points")
    low = positions.min(axis=0)
    size = float((positions.max(axis=0) - low).max()) * (1 + 1e-9) or 1e-3
    codes = morton_codes(positions, low, size)
    order = np.argsort(codes, kind="stable")
    sorted_codes = codes[order]

    def node(start: int, stop: int, depth: int, address: str) -> PointNode:
        cell_level = depth + GRID_BITS
        if stop - start <= leaf_points or cell_level >= LEVELS:
            mine = order[start:stop].copy()
            return PointNode(address, *_bounds(positions[mine]), mine, 0.0)
        rows = np.arange(start, stop)
        cells = sorted_codes[start:stop] >> np.uint64(3 * (LEVELS - cell_level))
        starts = np.flatnonzero(np.r_[True, cells[1:] != cells[:-1]])
        picked = (starts + np.r_[starts[1:], len(cells)]) // 2
        keep = np.zeros(len(cells), dtype=bool)
        keep[picked] = True
        own = order[rows[keep]]
        rest = rows[~keep]
        # move the kept points out of the run, so the children are contiguous runs again
        order[start : stop - len(own)] = order[rest]
        sorted_codes[start : stop - len(own)] = sorted_codes[rest]
        order[stop - len(own) : stop] = own
        end = stop - len(own)
        octant = (sorted_codes[start:end] >> np.uint64(3 * (LEVELS - depth - 1))) & np.uint64(7)
        cuts = [start, *(start + 1 + np.flatnonzero(octant[1:] != octant[:-1])).tolist(), end]
        children = [
            node(a, b, depth + 1, f"{address}_{int(octant[a - start])}")
            for a, b in zip(cuts[:-1], cuts[1:], strict=True)
            if b > a
        ]
        error = size / (1 << cell_level) * math.sqrt(3.0)
        own_low, own_high = _bounds(positions[own])
        box_low = np.min([own_low, *(c.low for c in children)], axis=0)  # the subtree's, bottom up
        box_high = np.max([own_high, *(c.high for c in children)], axis=0)
        return PointNode(address, box_low, box_high, own.copy(), error, children)

    return node(0, len(positions), 0, "0")


def _schema(codes: np.ndarray) -> dict[str, Any]:
    names = dict(ASPRS_CLASSES)
    names.update({int(c): f"class_{int(c)}" for c in codes if int(c) not in names})
    values = [{"name": name, "value": value} for value, name in sorted(names.items())]
    return {
        "id": "pointcloud",
        "enums": {"asprsClass": {"valueType": "UINT8", "values": values}},
        "classes": {
            POINT_CLASS: {
                "properties": {
                    "classification": {"type": "ENUM", "enumType": "asprsClass", "description": "ASPRS class"},
                    "intensity": {"type": "SCALAR", "componentType": "UINT16", "description": "Return intensity"},
                }
            }
        },
    }


def encode_points_glb(
    positions: np.ndarray,
    classification: np.ndarray,
    intensity: np.ndarray,
    colors: np.ndarray | None = None,
    *,
    compression: str | None = "meshopt",
) -> bytes:
    """One tile's glb: a POINTS primitive in the z-up tile frame (metres), with class and intensity."""
    if len(positions) == 0:
        raise ValueError("a tile needs at least one point")
    builder = _GlbBuilder(compression)
    gltf_positions = np.column_stack([positions[:, 0], positions[:, 2], -positions[:, 1]])  # z-up to y-up
    low, high = gltf_positions.min(axis=0), gltf_positions.max(axis=0)
    step = float((high - low).max()) / 65535.0
    count = len(positions)
    if step <= QUANTIZE_STEP:
        step = max(step, 1e-9)
        stream = np.zeros((count, 4), dtype=np.uint16)
        stream[:, :3] = np.round((gltf_positions - low) / step)
        node = {"mesh": 0, "translation": low.tolist(), "scale": [step, step, step]}
        kind, raw = UNSIGNED_SHORT, stream[:, :3]
    else:
        centre = (low + high) / 2.0
        stream = (gltf_positions - centre).astype(np.float32)
        node = {"mesh": 0, "translation": centre.tolist()}
        kind, raw = FLOAT, stream
    bounds = {"min": raw.min(axis=0).tolist(), "max": raw.max(axis=0).tolist()}
    attributes = {
        "POSITION": builder.accessor(builder.stream_view(stream, ARRAY_BUFFER), kind, "VEC3", count, **bounds)
    }
    if colors is not None:
        rgba = np.full((count, 4), 255, dtype=np.uint8)
        rgba[:, :3] = srgb_to_linear(colors)
        view = builder.stream_view(rgba, ARRAY_BUFFER)
        attributes["COLOR_0"] = builder.accessor(view, UNSIGNED_BYTE, "VEC3", count, normalized=True)
    classes = np.zeros((count, 4), dtype=np.uint8)
    classes[:, 0] = classification
    attributes["_CLASSIFICATION"] = builder.accessor(
        builder.stream_view(classes, ARRAY_BUFFER), UNSIGNED_BYTE, "SCALAR", count
    )
    intensities = np.zeros((count, 2), dtype=np.uint16)
    intensities[:, 0] = intensity
    attributes["_INTENSITY"] = builder.accessor(
        builder.stream_view(intensities, ARRAY_BUFFER), UNSIGNED_SHORT, "SCALAR", count
    )
    used = [MESHOPT] if compression == "meshopt" else []
    if kind == UNSIGNED_SHORT:
        used.append(QUANTIZATION)
    used += [UNLIT, "EXT_structural_metadata"]
    primitive = {
        "attributes": attributes,
        "mode": 0,
        "material": 0,
        "extensions": {"EXT_structural_metadata": {"propertyAttributes": [0]}},
    }
    material = {
        "name": "points",
        "pbrMetallicRoughness": {"baseColorFactor": [1.0, 1.0, 1.0, 1.0], "metallicFactor": 0.0},
        "extensions": {UNLIT: {}},
    }
    attribute_table = {
        "class": POINT_CLASS,
        "properties": {"classification": {"attribute": "_CLASSIFICATION"}, "intensity": {"attribute": "_INTENSITY"}},
    }
    gltf: dict[str, Any] = {
        "asset": {"version": "2.0", "generator": "cim-twin tiles.threed"},
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [node],
        "meshes": [{"primitives": [primitive]}],
        "materials": [material],
        "extensions": {
            "EXT_structural_metadata": {
                "schema": _schema(np.unique(classification)),
                "propertyAttributes": [attribute_table],
            }
        },
    }
    return builder.finish(gltf, used)


def _frame_change(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    return np.linalg.inv(enu_to_ecef_matrix(*target)) @ enu_to_ecef_matrix(*source)


def layer_cloud(store: Store, features: list[Feature]) -> Cloud:
    """The points of every feature (file) valid now, in the first one's frame."""
    parts: list[dict[str, np.ndarray]] = []
    anchor: np.ndarray | None = None
    for feature in sorted(features, key=lambda f: f.fid):
        key = feature.properties.get("points")
        if not key:
            continue
        with np.load(store.assets.open_path(key)) as data:
            arrays = {name: data[name] for name in data.files}
        positions = arrays["positions"].astype(np.float64) * POSITION_UNIT
        if anchor is None:
            anchor = arrays["anchor"]
        else:
            change = _frame_change(arrays["anchor"], anchor)
            positions = positions @ change[:3, :3].T + change[:3, 3]
        arrays["positions"] = positions
        parts.append(arrays)
    if not parts or anchor is None:
        raise InvalidInput("the layer has no points at that time")
    colored = all("colors" in p for p in parts)
    return Cloud(
        positions=np.concatenate([p["positions"] for p in parts]),
        classification=np.concatenate([p["classification"] for p in parts]),
        intensity=np.concatenate([p["intensity"] for p in parts]),
        colors=np.concatenate([p["colors"] for p in parts]) if colored else None,
        anchor=anchor,
    )


def _tile(node: PointNode) -> Tile:
    return Tile(
        bounding_volume=box_volume(node.low, node.high),
        geometric_error=node.error,
        content_uri=f"tiles/{node.address}.glb" if len(node.points) else None,
        children=[_tile(child) for child in node.children],
    )


def build(
    store: Store, layer: Layer, features: list[Feature], out: Path, *, compression: str | None = "meshopt"
) -> dict[str, Any]:
    """Write tileset.json and tiles/*.glb of the layer's points into `out`; returns a summary."""
    cloud = layer_cloud(store, features)
    anchor = tuple(float(v) for v in cloud.anchor)
    cloud.positions, (lon, lat, ellipsoidal) = reheight_enu(cloud.positions, anchor, store_datum(store))
    tree = build_octree(cloud.positions)
    (out / "tiles").mkdir(parents=True, exist_ok=True)
    written = 0
    for node in tree.walk():
        if not len(node.points):
            continue
        chosen = node.points
        data = encode_points_glb(
            cloud.positions[chosen],
            cloud.classification[chosen],
            cloud.intensity[chosen],
            None if cloud.colors is None else cloud.colors[chosen],
            compression=compression,
        )
        (out / "tiles" / f"{node.address}.glb").write_bytes(data)
        written += len(data)
    root = _tile(tree)
    root.refine = "ADD"
    root.transform = enu_to_ecef_matrix(lon, lat, ellipsoidal)
    diagonal = float(np.linalg.norm(tree.high - tree.low))
    document = tileset_document(
        root, max(2.0 * tree.error, diagonal, 1.0), extras={"layer": layer.id, "kind": layer.kind.value}
    )
    write_tileset(out / "tileset.json", document)
    return {
        "tiles": sum(1 for _ in tree.walk()),
        "points": int(len(cloud.positions)),
        "bytes": written,
        "anchor": [lon, lat, ellipsoidal],
        "geometric_error": document["geometricError"],
    }
