"""glb content for reality meshes: textured triangles, unlit, meshopt-compressed.

A reality-mesh tile is a few parts, each with its own texture (a photo atlas) or a plain
colour. Positions are in the tile's z-up local frame (metres), written y-up and quantized to
16 bits like the other layers' tiles (`tiles.threed.gltf`), texture coordinates as floats
(OpenGL convention in, glTF's top-left origin out), images embedded as JPEG or PNG. Materials
use `KHR_materials_unlit`: the texture is the photographed light, so the viewer must not shade
it again.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from tiles.threed.gltf import (
    ARRAY_BUFFER,
    ELEMENT_ARRAY_BUFFER,
    FLOAT,
    MESHOPT,
    QUANTIZATION,
    QUANTIZE_STEPS,
    UNSIGNED_INT,
    UNSIGNED_SHORT,
    _GlbBuilder,
)

UNLIT = "KHR_materials_unlit"
WEBP = "EXT_texture_webp"
TEXTURE_FORMATS = ("jpeg", "webp")
WEBP_QUALITY = 80
LINEAR, LINEAR_MIPMAP_LINEAR, CLAMP_TO_EDGE, REPEAT = 9729, 9987, 33071, 10497


@dataclass
class TexturedPart:
    """Triangles sharing one texture (or colour); `uvs` with (0, 0) at the image's bottom left."""

    positions: np.ndarray
    indices: np.ndarray
    uvs: np.ndarray | None = None
    texture: bytes | None = None
    mime: str = "image/jpeg"
    color: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)

    def __post_init__(self) -> None:
        self.positions = np.asarray(self.positions, dtype=np.float64).reshape(-1, 3)
        self.indices = np.asarray(self.indices, dtype=np.int64).reshape(-1, 3)
        if self.uvs is not None:
            self.uvs = np.asarray(self.uvs, dtype=np.float32).reshape(-1, 2)
            if len(self.uvs) != len(self.positions):
                raise ValueError("one texture coordinate per vertex is required")
        if (self.uvs is None) != (self.texture is None):
            self.uvs, self.texture = None, None

    @property
    def triangle_count(self) -> int:
        return len(self.indices)


def bounds(parts: list[TexturedPart]) -> tuple[np.ndarray, np.ndarray]:
    """Low and high corners of the parts' vertices."""
    points = np.concatenate([p.positions for p in parts])
    return points.min(axis=0), points.max(axis=0)


def _material(builder: _GlbBuilder, gltf: dict[str, Any], part: TexturedPart) -> int:
    pbr: dict[str, Any] = {"metallicFactor": 0.0, "roughnessFactor": 1.0}
    if part.texture is not None:
        view = builder.plain_view(part.texture)
        gltf["images"].append({"bufferView": view, "mimeType": part.mime})
        source = len(gltf["images"]) - 1
        if part.mime == "image/webp":
            gltf["textures"].append({"sampler": 0, "extensions": {WEBP: {"source": source}}})
        else:
            gltf["textures"].append({"source": source, "sampler": 0})
        pbr["baseColorTexture"] = {"index": len(gltf["textures"]) - 1}
    else:
        pbr["baseColorFactor"] = [float(min(max(c, 0.0), 1.0)) for c in part.color]
    material = {"pbrMetallicRoughness": pbr, "doubleSided": True, "extensions": {UNLIT: {}}}
    if part.texture is None and part.color[3] < 1.0:
        material["alphaMode"] = "BLEND"
    gltf["materials"].append(material)
    return len(gltf["materials"]) - 1


def as_webp(part: TexturedPart) -> TexturedPart:
    """The part with its texture re-encoded as WebP (smaller than JPEG at the same look)."""
    if part.texture is None or part.mime == "image/webp":
        return part
    buffer = io.BytesIO()
    Image.open(io.BytesIO(part.texture)).save(buffer, "WEBP", quality=WEBP_QUALITY)
    return TexturedPart(part.positions, part.indices, part.uvs, buffer.getvalue(), "image/webp", part.color)


def encode_textured_glb(
    parts: list[TexturedPart], *, compression: str | None = "meshopt", texture_format: str = "jpeg"
) -> bytes:
    """The glb of one reality-mesh tile (one node, one mesh, a primitive per part).

    `texture_format` "webp" re-encodes the textures as WebP (`EXT_texture_webp`, required).
    """
    if texture_format not in TEXTURE_FORMATS:
        raise ValueError(f"texture format {texture_format!r}; expected one of {TEXTURE_FORMATS}")
    parts = [p for p in parts if p.triangle_count]
    if texture_format == "webp":
        parts = [as_webp(p) for p in parts]
    if not parts:
        raise ValueError("a tile needs at least one triangle")
    builder = _GlbBuilder(compression)
    low, high = bounds(parts)
    gltf_low = np.array([low[0], low[2], -high[1]])
    gltf_high = np.array([high[0], high[2], -low[1]])
    scale = max(float((gltf_high - gltf_low).max()) / QUANTIZE_STEPS, 1e-9)
    gltf: dict[str, Any] = {"images": [], "textures": [], "materials": []}
    primitives = []
    for part in parts:
        used, local = np.unique(part.indices.reshape(-1), return_inverse=True)
        positions = part.positions[used]
        yup = np.column_stack([positions[:, 0], positions[:, 2], -positions[:, 1]])
        attributes = {"POSITION": builder.quantized_positions(yup, gltf_low, scale)}
        if part.uvs is not None:
            uv = part.uvs[used].astype(np.float32).copy()
            uv[:, 1] = 1.0 - uv[:, 1]
            attributes["TEXCOORD_0"] = builder.accessor(builder.stream_view(uv, ARRAY_BUFFER), FLOAT, "VEC2", len(used))
        small = len(used) <= 65535
        index_array = local.reshape(-1, 3).astype(np.uint16 if small else np.uint32)
        indices = builder.accessor(
            builder.stream_view(index_array, ELEMENT_ARRAY_BUFFER),
            UNSIGNED_SHORT if small else UNSIGNED_INT,
            "SCALAR",
            index_array.size,
        )
        primitives.append(
            {"attributes": attributes, "indices": indices, "material": _material(builder, gltf, part), "mode": 4}
        )
    used_ext = [MESHOPT] if compression == "meshopt" else []
    used_ext += [QUANTIZATION, UNLIT]
    if any(p.mime == "image/webp" and p.texture is not None for p in parts):
        used_ext.append(WEBP)
    document: dict[str, Any] = {
        "asset": {"version": "2.0", "generator": "cim-twin tiles.threed"},
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"mesh": 0, "translation": gltf_low.tolist(), "scale": [scale, scale, scale]}],
        "meshes": [{"primitives": primitives}],
        "materials": gltf["materials"],
    }
    if gltf["images"]:
        document["samplers"] = [
            {"magFilter": LINEAR, "minFilter": LINEAR_MIPMAP_LINEAR, "wrapS": REPEAT, "wrapT": REPEAT}
        ]
        document["images"] = gltf["images"]
        document["textures"] = gltf["textures"]
    return builder.finish(document, used_ext, required=(WEBP,))
