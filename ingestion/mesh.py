"""One textured mesh (OBJ + MTL + images, glTF/glb, PLY) as a streamable reality-mesh layer.

The file is read with trimesh (scene graph transforms applied), each geometry kept as a part
with its texture (or colour). Positions are in the SRS of a `metadata.xml` beside the file
(ContextCapture's, as for OSGB trees) or of `--crs`, relative to `SRSOrigin` / `--origin`;
OBJ and PLY are taken z-up (as photogrammetry exports them), glTF y-up (as its spec says).
`tiles.threed.mesh_lod` splits and simplifies the mesh into levels of detail; the tree is
written and stored like an OSGB tree's (`ingestion.oblique.store_mesh_layer`).
"""

from __future__ import annotations

import io
import re
import shutil
import tempfile
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from ingestion.oblique import georeference, layer_id_for, store_mesh_layer
from ingestion.osgt import safe_relative
from tiles.threed.bim import store_datum
from tiles.threed.mesh import check_texture_format, write_mesh_tileset
from tiles.threed.mesh_gltf import TexturedPart
from tiles.threed.mesh_lod import LEAF_TRIANGLES, build_mesh_tree
from twin.model import InvalidInput, Scenario, WriteReport

FORMATS = (".obj", ".glb", ".gltf", ".ply")
MTL_MAP = re.compile(r"^\s*map_Kd\s+(?:-\S+\s+\S+\s+)*(.+?)\s*$", re.MULTILINE)


def check_obj_textures(path: Path) -> None:
    """Every image an OBJ's material libraries name exists inside the folder (trimesh would drop it silently)."""
    text = path.read_text(encoding="utf-8", errors="replace")
    for library in re.findall(r"^\s*mtllib\s+(.+?)\s*$", text, re.MULTILINE):
        mtl = safe_relative(library, path.parent, path.name)
        if not mtl.is_file():
            raise InvalidInput(f"{path.name}: material library {library} is missing")
        for image in MTL_MAP.findall(mtl.read_text(encoding="utf-8", errors="replace")):
            if not safe_relative(image, mtl.parent, mtl.name).is_file():
                raise InvalidInput(f"{path.name}: texture {image} is missing")


def _texture(visual: Any) -> tuple[bytes | None, str]:
    material = getattr(visual, "material", None)
    image = getattr(material, "image", None)
    if image is None:
        image = getattr(material, "baseColorTexture", None)
    if image is None:
        return None, "image/jpeg"
    buffer = io.BytesIO()
    if image.mode in ("RGBA", "LA") and np.asarray(image)[..., -1].min() < 255:
        image.save(buffer, "PNG")
        return buffer.getvalue(), "image/png"
    image.convert("RGB").save(buffer, "JPEG", quality=88)
    return buffer.getvalue(), "image/jpeg"


def _color(visual: Any) -> tuple[float, float, float, float]:
    material = getattr(visual, "material", None)
    for name in ("baseColorFactor", "diffuse", "main_color"):
        value = getattr(material, name, None)
        if value is not None:
            rgba = np.asarray(value, dtype=float).reshape(-1)
            if rgba.max() > 1.0:
                rgba = rgba / 255.0
            return tuple(float(v) for v in (list(rgba[:4]) + [1.0] * (4 - len(rgba[:4]))))
    colors = getattr(visual, "face_colors", None)
    if colors is not None and len(colors):
        return tuple(float(v) / 255.0 for v in np.asarray(colors).mean(axis=0)[:4])
    return (0.8, 0.8, 0.8, 1.0)


def read_parts(path: Path) -> list[TexturedPart]:
    """The mesh's parts in its own coordinates (z-up metres)."""
    import trimesh

    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise InvalidInput(f"{path.name}: unsupported mesh format; expected one of {', '.join(FORMATS)}")
    if not path.is_file():
        raise InvalidInput(f"{path}: no such file")
    if suffix == ".obj":
        check_obj_textures(path)
    try:
        scene = trimesh.load(path, force="scene", process=False)
    except Exception as exc:  # trimesh raises many kinds for a broken file
        raise InvalidInput(f"{path.name}: not a readable mesh ({exc})") from exc
    y_up = suffix in (".glb", ".gltf")
    parts = []
    for node in scene.graph.nodes_geometry:
        transform, name = scene.graph[node]
        geometry = scene.geometry[name]
        if not hasattr(geometry, "faces") or not len(geometry.faces):
            continue
        vertices = np.asarray(geometry.vertices, dtype=float) @ transform[:3, :3].T + transform[:3, 3]
        if y_up:
            vertices = np.column_stack([vertices[:, 0], -vertices[:, 2], vertices[:, 1]])
        visual = geometry.visual
        uvs = getattr(visual, "uv", None)
        texture, mime = _texture(visual) if uvs is not None and len(uvs) == len(vertices) else (None, "image/jpeg")
        parts.append(
            TexturedPart(vertices, np.asarray(geometry.faces), uvs if texture else None, texture, mime, _color(visual))
        )
    if not parts:
        raise InvalidInput(f"{path.name}: the file has no triangles")
    return parts


def ingest_mesh(
    store,
    path: Path,
    *,
    layer_id: str | None = None,
    crs: str | None = None,
    origin: str | None = None,
    scenario: Scenario | str = Scenario.current,
    valid_from: datetime | None = None,
    title: str | None = None,
    compression: str | None = "meshopt",
    texture_format: str = "jpeg",
    leaf_triangles: int = LEAF_TRIANGLES,
    progress: Callable[[int], None] | None = None,
) -> tuple[WriteReport, dict[str, Any]]:
    """Read, place, split and simplify a textured mesh into a mesh layer (atomic)."""
    check_texture_format(texture_format)
    path = Path(path)
    geo = georeference(path.parent, crs, origin)
    target = layer_id_for(path.with_suffix(""), layer_id)
    parts = read_parts(path)
    datum = store_datum(store)
    anchor = geo.anchor(datum)
    placed = [
        TexturedPart(geo.to_enu(p.positions, anchor, datum), p.indices, p.uvs, p.texture, p.mime, p.color)
        for p in parts
    ]
    tree = build_mesh_tree(placed, leaf_triangles)
    if progress is not None:
        progress(1)
    Path(store.data_dir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=store.data_dir) as tmp:
        out = Path(tmp) / "tileset"
        summary = write_mesh_tileset(
            [tree],
            anchor,
            out,
            compression=compression,
            texture_format=texture_format,
            extras={"layer": target, "kind": "mesh"},
        )
        summary["source_triangles"] = int(sum(p.triangle_count for p in parts))
        info = {"format": path.suffix.lower().lstrip("."), "parts": len(parts)}
        report = store_mesh_layer(
            store,
            out,
            summary,
            geo,
            layer_id=target,
            source=path.name,
            title=title,
            scenario=scenario,
            valid_from=valid_from,
            info=info,
        )
        shutil.rmtree(out, ignore_errors=True)
    return report, summary
