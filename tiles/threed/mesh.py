"""A reality mesh's 3D Tiles: its level-of-detail tree written as glb tiles in an ENU box.

Reality meshes (OSGB tile trees, single textured meshes) are built once, at ingest: the tree
is written here (`write_mesh_tileset`), packed into one archive asset, and named by the layer's
single feature (`tileset` property). The layer builder registered for `LayerKind.mesh`
(`build`) only unpacks that archive into the build folder: a new ingest makes a new feature
version, hence a new folder, and past editions stay servable.

Tiles refine by REPLACE, use `box` volumes in the east-north-up frame of the mesh's anchor
(the root's `transform`), and their geometric errors decrease down the tree (a child's error
is kept below its parent's, as the client's screen-space test assumes).
"""

from __future__ import annotations

import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tiles.threed.mesh_gltf import TEXTURE_FORMATS, TexturedPart, bounds, encode_textured_glb
from tiles.threed.tileset import Tile, box_volume, tileset_document, write_tileset
from twin.crs import enu_to_ecef_matrix
from twin.model import Feature, InvalidInput, Layer
from twin.store import Store

TILESET_PROPERTY = "tileset"
ARCHIVE_SUFFIX = ".tar"
CHILD_ERROR_RATIO = 0.5  # a child whose error is not below its parent's gets half the parent's


@dataclass
class MeshTile:
    """A node of the level-of-detail tree: its parts (ENU metres), error (metres), children."""

    parts: list[TexturedPart]
    error: float
    children: list[MeshTile] = field(default_factory=list)
    name: str = ""

    def walk(self):
        yield self
        for child in self.children:
            yield from child.walk()


def _limit_errors(tile: MeshTile, ceiling: float | None) -> None:
    if ceiling is not None and tile.error >= ceiling:
        tile.error = ceiling * CHILD_ERROR_RATIO
    for child in tile.children:
        _limit_errors(child, tile.error if tile.error > 0 else None)


def _tiles(tile: MeshTile, address: str, out: Path, options: dict[str, Any], stats: dict[str, int]) -> Tile | None:
    """The tileset tile of `tile` (content written to out/tiles), None when it holds nothing."""
    children = [
        c for i, child in enumerate(tile.children) if (c := _tiles(child, f"{address}_{i}", out, options, stats))
    ]
    parts = [p for p in tile.parts if p.triangle_count]
    boxes = [np.asarray(c.bounding_volume["box"]) for c in children]
    lows = [b[:3] - np.abs(b[3:].reshape(3, 3)).sum(axis=0) for b in boxes]
    highs = [b[:3] + np.abs(b[3:].reshape(3, 3)).sum(axis=0) for b in boxes]
    uri = None
    if parts:
        low, high = bounds(parts)
        lows.append(low)
        highs.append(high)
        data = encode_textured_glb(parts, **options)
        uri = f"tiles/{address}.glb"
        (out / uri).write_bytes(data)
        stats["tiles"] += 1
        stats["bytes"] += len(data)
        stats["triangles"] += sum(p.triangle_count for p in parts)
    if not lows:
        return None
    error = tile.error if children else 0.0
    return Tile(
        bounding_volume=box_volume(np.min(lows, axis=0), np.max(highs, axis=0)),
        geometric_error=error,
        content_uri=uri,
        children=children,
        extras={"name": tile.name} if tile.name else None,
    )


def check_texture_format(texture_format: str) -> str:
    """`jpeg` (the default) or `webp`; InvalidInput otherwise."""
    if texture_format not in TEXTURE_FORMATS:
        raise InvalidInput(f"texture format {texture_format!r}; expected one of {', '.join(TEXTURE_FORMATS)}")
    return texture_format


def write_mesh_tileset(
    roots: list[MeshTile],
    anchor: tuple[float, float, float],
    out: Path,
    *,
    compression: str | None = "meshopt",
    texture_format: str = "jpeg",
    extras: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """tileset.json and tiles/*.glb for the trees under `roots` in `out`; returns a summary."""
    out = Path(out)
    (out / "tiles").mkdir(parents=True, exist_ok=True)
    top = MeshTile([], max((r.error for r in roots), default=0.0) * 2.0 or 1.0, list(roots))
    _limit_errors(top, None)
    stats = {"tiles": 0, "bytes": 0, "triangles": 0}
    options = {"compression": compression, "texture_format": check_texture_format(texture_format)}
    children = [t for i, r in enumerate(roots) if (t := _tiles(r, str(i), out, options, stats))]
    if not children:
        raise InvalidInput("the mesh has no triangles")
    boxes = np.array([c.bounding_volume["box"] for c in children])
    half = np.abs(boxes[:, 3:].reshape(-1, 3, 3)).sum(axis=1)
    low, high = (boxes[:, :3] - half).min(axis=0), (boxes[:, :3] + half).max(axis=0)
    diagonal = float(np.linalg.norm(high - low))
    root_error = max(max(c.geometric_error for c in children) * 2.0, diagonal / 4.0, 1.0)
    root = Tile(box_volume(low, high), root_error, children=children, refine="REPLACE")
    root.transform = enu_to_ecef_matrix(*anchor)
    document = tileset_document(root, root_error * 2.0, extras=extras)
    write_tileset(out / "tileset.json", document)
    return {
        **stats,
        "anchor": [float(v) for v in anchor],
        "geometric_error": document["geometricError"],
        "low": low.tolist(),
        "high": high.tolist(),
    }


def pack(folder: Path, archive: Path) -> Path:
    """The built folder as one uncompressed tar (glb and JPEG are compressed already)."""
    with tarfile.open(archive, "w") as tar:
        for path in sorted(Path(folder).rglob("*")):
            if path.is_file():
                tar.add(path, arcname=path.relative_to(folder).as_posix())
    return archive


def build(store: Store, layer: Layer, features: list[Feature], out: Path) -> dict[str, Any]:
    """The layer's tileset: the newest feature's archive unpacked into `out`."""
    with_tiles = [f for f in features if f.properties.get(TILESET_PROPERTY)]
    if not with_tiles:
        raise InvalidInput(f"layer {layer.id!r} has no reality-mesh tileset at that time")
    feature = max(with_tiles, key=lambda f: f.valid_from)
    with tarfile.open(store.assets.open_path(feature.properties[TILESET_PROPERTY])) as tar:
        tar.extractall(out, filter="data")
    summary = dict(feature.properties.get("summary") or {})
    summary.setdefault("geometric_error", float(feature.properties.get("geometric_error", 1.0)))
    return summary
