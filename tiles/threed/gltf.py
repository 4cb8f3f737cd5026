"""glb content for 3D Tiles 1.1: one mesh with per-feature ids and metadata, compressed with meshopt.

What a tile holds is a `TileMesh` in a z-up local frame in metres (east-north-up for BIM); the
writer turns it into glTF's y-up frame, quantizes positions to 16 bits and normals to 8 bits
(KHR_mesh_quantization, one uniform dequantization scale on the node so that normals stay
right), splits opaque and translucent triangles into two primitives (two draw calls per tile),
tags every vertex with its feature id (EXT_mesh_features) and embeds the feature properties
(EXT_structural_metadata). With `compression="meshopt"` (the default) every vertex stream and
the index buffer are encoded with the meshopt codec (EXT_meshopt_compression, codec version 0,
with a data-less fallback buffer as the extension allows).

`read_glb` and `decompress_glb` read such files back (tests, and re-serving existing tiles).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

import meshoptimizer
import numpy as np

from tiles.threed.metadata import PropertyTable

GLB_MAGIC = 0x46546C67
JSON_CHUNK = 0x4E4F534A
BIN_CHUNK = 0x004E4942
ARRAY_BUFFER, ELEMENT_ARRAY_BUFFER = 34962, 34963
BYTE, UNSIGNED_BYTE, UNSIGNED_SHORT, UNSIGNED_INT, FLOAT = 5120, 5121, 5123, 5125, 5126
COMPONENT_SIZE = {BYTE: 1, UNSIGNED_BYTE: 1, UNSIGNED_SHORT: 2, UNSIGNED_INT: 4, FLOAT: 4}
TYPE_SIZE = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4}
MESHOPT = "EXT_meshopt_compression"
QUANTIZATION = "KHR_mesh_quantization"
QUANTIZE_STEPS = 65535
DEFAULT_COLOR = (200, 200, 200, 255)
COMPRESSIONS = ("meshopt", None)


@dataclass
class TileMesh:
    """Triangles of one tile in a z-up local frame (metres) with a feature id per vertex.

    `colors` are sRGB with alpha (uint8, one row per vertex); `normals` may be left out and are
    then computed per face (the vertices of a face are not shared with other faces).
    """

    positions: np.ndarray
    indices: np.ndarray
    feature_ids: np.ndarray
    colors: np.ndarray | None = None
    normals: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.positions = np.asarray(self.positions, dtype=np.float64).reshape(-1, 3)
        self.indices = np.asarray(self.indices, dtype=np.uint32).reshape(-1, 3)
        self.feature_ids = np.asarray(self.feature_ids, dtype=np.uint32).reshape(-1)
        if len(self.feature_ids) != len(self.positions):
            raise ValueError("one feature id per vertex is required")
        if self.colors is not None:
            self.colors = np.asarray(self.colors, dtype=np.uint8).reshape(-1, 4)
        if self.normals is not None:
            self.normals = np.asarray(self.normals, dtype=np.float32).reshape(-1, 3)

    @property
    def triangle_count(self) -> int:
        return len(self.indices)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return self.positions.min(axis=0), self.positions.max(axis=0)


def face_normals(positions: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Unit normal of each triangle (zero for degenerate ones)."""
    a, b, c = (positions[indices[:, k]] for k in range(3))
    n = np.cross(b - a, c - a)
    length = np.linalg.norm(n, axis=1, keepdims=True)
    return np.divide(n, length, out=np.zeros_like(n), where=length > 0)


def with_flat_normals(mesh: TileMesh) -> TileMesh:
    """Each triangle gets its own face normal; vertices shared by coplanar faces are merged again.

    BIM and extruded geometry is made of flat faces with sharp edges: averaged normals would
    make boxes look like pillows.
    """
    corners = mesh.indices.reshape(-1)
    normals = np.repeat(face_normals(mesh.positions, mesh.indices), 3, axis=0)
    quantized = np.round(normals * 127).astype(np.int8)
    key = np.concatenate(
        [corners.reshape(-1, 1).astype(np.int64), quantized.astype(np.int64)],
        axis=1,
    )
    unique, first, inverse = np.unique(key, axis=0, return_index=True, return_inverse=True)
    source = corners[first]
    return TileMesh(
        positions=mesh.positions[source],
        indices=inverse.reshape(-1, 3).astype(np.uint32),
        feature_ids=mesh.feature_ids[source],
        colors=None if mesh.colors is None else mesh.colors[source],
        normals=normals[first],
    )


def srgb_to_linear(values: np.ndarray) -> np.ndarray:
    """glTF vertex colours are linear; IFC styles and class colours are sRGB."""
    c = values.astype(np.float64) / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    return np.round(linear * 255.0).astype(np.uint8)


class _GlbBuilder:
    """Collects buffer views and accessors; compressed views go to a data-less fallback buffer."""

    def __init__(self, compression: str | None) -> None:
        if compression not in COMPRESSIONS:
            raise ValueError(f"compression {compression!r}; expected one of {COMPRESSIONS}")
        self.compression = compression
        self.binary = bytearray()
        self.fallback_length = 0
        self.views: list[dict[str, Any]] = []
        self.accessors: list[dict[str, Any]] = []

    def _append(self, data: bytes, align: int = 8) -> int:
        self.binary.extend(b"\0" * (-len(self.binary) % align))
        offset = len(self.binary)
        self.binary.extend(data)
        return offset

    def plain_view(self, data: bytes, target: int | None = None, stride: int | None = None) -> int:
        view: dict[str, Any] = {"buffer": 0, "byteOffset": self._append(data), "byteLength": len(data)}
        if target is not None:
            view["target"] = target
        if stride is not None:
            view["byteStride"] = stride
        self.views.append(view)
        return len(self.views) - 1

    def stream_view(self, array: np.ndarray, target: int) -> int:
        """A vertex stream (rows of 4-byte multiples) or a triangle index buffer."""
        array = np.ascontiguousarray(array)
        stride = None if target == ELEMENT_ARRAY_BUFFER else array.itemsize * array.shape[1]
        if self.compression is None:
            return self.plain_view(array.tobytes(), target, stride)
        if target == ELEMENT_ARRAY_BUFFER:
            encoded = meshoptimizer.encode_index_buffer(array.astype(np.uint32).reshape(-1), vertex_count=None)
            mode, element_size, count = "TRIANGLES", array.itemsize, array.size
        else:
            encoded = meshoptimizer.encode_vertex_buffer(array, len(array), stride)
            mode, element_size, count = "ATTRIBUTES", stride, len(array)
        self.fallback_length += -self.fallback_length % 8
        view: dict[str, Any] = {
            "buffer": 1,
            "byteOffset": self.fallback_length,
            "byteLength": array.nbytes,
            "target": target,
            "extensions": {
                MESHOPT: {
                    "buffer": 0,
                    "byteOffset": self._append(encoded, 4),
                    "byteLength": len(encoded),
                    "byteStride": element_size,
                    "count": count,
                    "mode": mode,
                }
            },
        }
        if stride is not None:
            view["byteStride"] = stride
        self.fallback_length += array.nbytes
        self.views.append(view)
        return len(self.views) - 1

    def accessor(self, view: int, component: int, kind: str, count: int, **extra: Any) -> int:
        self.accessors.append({"bufferView": view, "componentType": component, "count": count, "type": kind, **extra})
        return len(self.accessors) - 1

    def quantized_positions(self, yup: np.ndarray, origin: np.ndarray, scale: float) -> int:
        """POSITION accessor of y-up positions as unsigned shorts (KHR_mesh_quantization), padded to
        4-byte rows; the node's matrix maps them back with `origin` and `scale`."""
        quantized = np.zeros((len(yup), 4), dtype=np.uint16)
        quantized[:, :3] = np.clip(np.round((yup - origin) / scale), 0, QUANTIZE_STEPS)
        return self.accessor(
            self.stream_view(quantized, ARRAY_BUFFER),
            UNSIGNED_SHORT,
            "VEC3",
            len(yup),
            min=quantized[:, :3].min(axis=0).tolist(),
            max=quantized[:, :3].max(axis=0).tolist(),
        )

    def finish(self, gltf: dict[str, Any], used: list[str], required: tuple[str, ...] = ()) -> bytes:
        """The glb: accessors, views and buffers (with the meshopt fallback buffer) added to `gltf`;
        of the extensions `used`, compression, quantization and `required` ones are required."""
        gltf["accessors"] = self.accessors
        gltf["bufferViews"] = self.views
        buffers: list[dict[str, Any]] = [{"byteLength": len(self.binary)}]
        if self.fallback_length:
            buffers.append({"byteLength": self.fallback_length, "extensions": {MESHOPT: {"fallback": True}}})
        gltf["buffers"] = buffers
        gltf["extensionsUsed"] = used
        gltf["extensionsRequired"] = [e for e in used if e in (MESHOPT, QUANTIZATION, *required)]
        return pack_glb(gltf, bytes(self.binary))


def _primitive(
    builder: _GlbBuilder,
    mesh: TileMesh,
    triangles: np.ndarray,
    origin,
    scale,
    material: int,
    features,
    with_table: bool,
):
    """One primitive with the vertices its triangles use, renumbered from zero."""
    used, local = np.unique(mesh.indices[triangles].reshape(-1), return_inverse=True)
    indices = local.reshape(-1, 3).astype(np.uint32)
    positions = mesh.positions[used]
    if len(used) > 1:  # vertex-cache order then fetch order: better locality, better compression
        reordered = np.empty_like(indices.reshape(-1))
        meshoptimizer.optimize_vertex_cache(reordered, indices.reshape(-1), len(reordered), len(used))
        remap = np.empty(len(used), dtype=np.uint32)
        meshoptimizer.optimize_vertex_fetch_remap(remap, reordered, len(reordered), len(used))
        order = np.empty(len(used), dtype=np.int64)
        order[remap] = np.arange(len(used))
        used = used[order]
        positions = positions[order]
        indices = remap[reordered].reshape(-1, 3)
    gltf_positions = np.column_stack([positions[:, 0], positions[:, 2], -positions[:, 1]])  # z-up to y-up
    attributes = {"POSITION": builder.quantized_positions(gltf_positions, origin, scale)}
    normals = mesh.normals[used]
    packed = np.zeros((len(used), 4), dtype=np.int8)
    packed[:, :3] = np.round(np.column_stack([normals[:, 0], normals[:, 2], -normals[:, 1]]) * 127)
    attributes["NORMAL"] = builder.accessor(
        builder.stream_view(packed, ARRAY_BUFFER), BYTE, "VEC3", len(used), normalized=True
    )
    if mesh.colors is not None:
        colors = mesh.colors[used].copy()
        colors[:, :3] = srgb_to_linear(colors[:, :3])
        attributes["COLOR_0"] = builder.accessor(
            builder.stream_view(colors, ARRAY_BUFFER), UNSIGNED_BYTE, "VEC4", len(used), normalized=True
        )
    ids = mesh.feature_ids[used].astype(np.float32).reshape(-1, 1)
    attributes["_FEATURE_ID_0"] = builder.accessor(builder.stream_view(ids, ARRAY_BUFFER), FLOAT, "SCALAR", len(used))
    small = len(used) <= 65535
    index_array = indices.astype(np.uint16 if small else np.uint32)
    index_accessor = builder.accessor(
        builder.stream_view(index_array, ELEMENT_ARRAY_BUFFER),
        UNSIGNED_SHORT if small else UNSIGNED_INT,
        "SCALAR",
        index_array.size,
    )
    feature_set: dict[str, Any] = {"featureCount": int(features), "attribute": 0}
    if with_table:
        feature_set["propertyTable"] = 0
    return {
        "attributes": attributes,
        "indices": index_accessor,
        "material": material,
        "mode": 4,
        "extensions": {"EXT_mesh_features": {"featureIds": [feature_set]}},
    }


def _materials(colored: bool) -> list[dict[str, Any]]:
    base = [1.0, 1.0, 1.0, 1.0] if colored else [c / 255.0 for c in DEFAULT_COLOR]
    pbr = {"baseColorFactor": base, "metallicFactor": 0.0, "roughnessFactor": 1.0}
    return [
        {"name": "opaque", "pbrMetallicRoughness": pbr, "doubleSided": True},
        {"name": "translucent", "pbrMetallicRoughness": pbr, "doubleSided": True, "alphaMode": "BLEND"},
    ]


def encode_glb(mesh: TileMesh, table: PropertyTable | None = None, *, compression: str | None = "meshopt") -> bytes:
    """The glb bytes of one tile; feature ids index the rows of `table`."""
    if mesh.triangle_count == 0:
        raise ValueError("a tile needs at least one triangle")
    if mesh.normals is None:
        mesh = with_flat_normals(mesh)
    builder = _GlbBuilder(compression)
    low, high = mesh.bounds()
    gltf_low = np.array([low[0], low[2], -high[1]])
    gltf_high = np.array([high[0], high[2], -low[1]])
    scale = max(float((gltf_high - gltf_low).max()) / QUANTIZE_STEPS, 1e-9)
    features = table.count if table is not None else int(mesh.feature_ids.max()) + 1
    alpha = mesh.colors[mesh.indices[:, 0], 3] if mesh.colors is not None else np.full(mesh.triangle_count, 255)
    primitives = []
    for material, triangles in enumerate((np.flatnonzero(alpha == 255), np.flatnonzero(alpha < 255))):
        if len(triangles):
            primitives.append(
                _primitive(builder, mesh, triangles, gltf_low, scale, material, features, bool(table and table.count))
            )
    used = [MESHOPT] if compression == "meshopt" else []
    used += [QUANTIZATION, "EXT_mesh_features"]
    gltf: dict[str, Any] = {
        "asset": {"version": "2.0", "generator": "cim-twin tiles.threed"},
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"mesh": 0, "translation": gltf_low.tolist(), "scale": [scale, scale, scale]}],
        "meshes": [{"primitives": primitives}],
        "materials": _materials(mesh.colors is not None),
    }
    if table is not None and table.count:
        gltf["extensions"] = {
            "EXT_structural_metadata": {"schema": table.schema(), "propertyTables": [table.encode(builder.plain_view)]}
        }
        used.append("EXT_structural_metadata")
    return builder.finish(gltf, used)


def pack_glb(gltf: dict[str, Any], binary: bytes) -> bytes:
    """A GLB container: 12-byte header, JSON chunk (space-padded), BIN chunk (zero-padded)."""
    text = json.dumps(gltf, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 4)
    binary = binary + b"\0" * (-len(binary) % 4)
    chunks = struct.pack("<II", len(text), JSON_CHUNK) + text
    if binary:
        chunks += struct.pack("<II", len(binary), BIN_CHUNK) + binary
    return struct.pack("<III", GLB_MAGIC, 2, 12 + len(chunks)) + chunks


def read_glb(data: bytes) -> tuple[dict[str, Any], bytes]:
    """The JSON and BIN chunk of a glb."""
    magic, version, length = struct.unpack_from("<III", data, 0)
    if magic != GLB_MAGIC or version != 2:
        raise ValueError("not a glTF 2.0 binary")
    json_length, _ = struct.unpack_from("<II", data, 12)
    gltf = json.loads(data[20 : 20 + json_length])
    offset = 20 + json_length
    binary = b""
    if offset < length:
        bin_length, _ = struct.unpack_from("<II", data, offset)
        binary = data[offset + 8 : offset + 8 + bin_length]
    return gltf, binary


def decompress_glb(data: bytes) -> bytes:
    """The same glb with every meshopt-compressed view decoded into a plain buffer view."""
    gltf, binary = read_glb(data)
    if MESHOPT not in gltf.get("extensionsUsed", []):
        return data
    out = bytearray()
    views = []
    for view in gltf["bufferViews"]:
        ext = view.get("extensions", {}).get(MESHOPT)
        if ext is None:
            raw = binary[view.get("byteOffset", 0) : view.get("byteOffset", 0) + view["byteLength"]]
            new = {k: v for k, v in view.items() if k not in ("byteOffset", "buffer")}
        else:
            raw = _decode_view(ext, binary)
            new = {k: v for k, v in view.items() if k not in ("byteOffset", "buffer", "extensions")}
        out.extend(b"\0" * (-len(out) % 8))
        views.append({"buffer": 0, "byteOffset": len(out), **new})
        out.extend(raw)
    gltf["bufferViews"] = views
    gltf["buffers"] = [{"byteLength": len(out)}]
    gltf["extensionsUsed"] = [e for e in gltf["extensionsUsed"] if e != MESHOPT]
    gltf["extensionsRequired"] = [e for e in gltf.get("extensionsRequired", []) if e != MESHOPT]
    return pack_glb(gltf, bytes(out))


def _decode_view(ext: dict[str, Any], binary: bytes) -> bytes:
    source = binary[ext.get("byteOffset", 0) : ext.get("byteOffset", 0) + ext["byteLength"]]
    count, stride = ext["count"], ext["byteStride"]
    if ext["mode"] == "TRIANGLES":
        indices = meshoptimizer.decode_index_buffer(count, 4, source)
        return np.asarray(indices, dtype=np.uint32).astype(np.uint16 if stride == 2 else np.uint32).tobytes()
    decoded = meshoptimizer.decode_vertex_buffer(count, stride, source)
    return np.asarray(decoded).tobytes()


def accessor_array(gltf: dict[str, Any], binary: bytes, index: int) -> np.ndarray:
    """An accessor's values (dequantized only by `normalized`, not by node transforms)."""
    accessor = gltf["accessors"][index]
    view = gltf["bufferViews"][accessor["bufferView"]]
    dtype = {
        BYTE: np.int8,
        UNSIGNED_BYTE: np.uint8,
        UNSIGNED_SHORT: np.uint16,
        UNSIGNED_INT: np.uint32,
        FLOAT: np.float32,
    }[accessor["componentType"]]
    width = TYPE_SIZE[accessor["type"]]
    item = COMPONENT_SIZE[accessor["componentType"]]
    stride = view.get("byteStride", item * width)
    start = view.get("byteOffset", 0) + accessor.get("byteOffset", 0)
    raw = np.frombuffer(binary, dtype=np.uint8, count=stride * (accessor["count"] - 1) + item * width, offset=start)
    rows = np.lib.stride_tricks.as_strided(raw, shape=(accessor["count"], item * width), strides=(stride, 1))
    values = np.ascontiguousarray(rows).view(dtype).reshape(accessor["count"], width)
    if accessor.get("normalized"):
        values = values / float(np.iinfo(dtype).max)
    return values


def mesh_positions(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Positions of every primitive in the z-up tile frame (node transform applied) and their feature ids."""
    gltf, binary = read_glb(decompress_glb(data))
    node = gltf["nodes"][0]
    scale = np.array(node.get("scale", [1.0, 1.0, 1.0]))
    translation = np.array(node.get("translation", [0.0, 0.0, 0.0]))
    points, ids = [], []
    for primitive in gltf["meshes"][node["mesh"]]["primitives"]:
        raw = accessor_array(gltf, binary, primitive["attributes"]["POSITION"]).astype(np.float64)
        yup = raw * scale + translation
        points.append(np.column_stack([yup[:, 0], -yup[:, 2], yup[:, 1]]))
        ids.append(accessor_array(gltf, binary, primitive["attributes"]["_FEATURE_ID_0"])[:, 0].astype(np.int64))
    return np.concatenate(points), np.concatenate(ids)
