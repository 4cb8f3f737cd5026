"""Levels of detail for one large textured mesh, so it streams like an OSGB tree.

Triangles are sorted into a quadtree by their centres (east and north) until a node holds at
most `leaf_triangles`; leaves carry the full geometry. An inner node carries its children's
content simplified with meshoptimizer (quadric edge collapse on vertices welded by position
and texture coordinate, borders locked so that neighbouring tiles do not crack) to about
`leaf_triangles`; its geometric error is the simplifier's measured error plus its children's,
and at least double theirs. Each part's texture is cropped to the rectangle its triangles use
(so a leaf does not carry the whole atlas) and scaled down by half per level above the leaves.
"""

from __future__ import annotations

import io

import meshoptimizer
import numpy as np
from PIL import Image

from tiles.threed.mesh import MeshTile
from tiles.threed.mesh_gltf import TexturedPart

LEAF_TRIANGLES = 20_000
MAX_DEPTH = 10
MIN_TEXTURE = 64
CROP_PAD = 2  # pixels around the used rectangle, for bilinear filtering
JPEG_QUALITY = 85


def _sub(part: TexturedPart, triangles: np.ndarray) -> TexturedPart:
    used, local = np.unique(part.indices[triangles].reshape(-1), return_inverse=True)
    return TexturedPart(
        part.positions[used],
        local.reshape(-1, 3),
        None if part.uvs is None else part.uvs[used],
        part.texture,
        part.mime,
        part.color,
    )


def _weld(part: TexturedPart) -> TexturedPart:
    keys = [np.round(part.positions / 1e-4).astype(np.int64)]
    if part.uvs is not None:
        keys.append(np.round(part.uvs.astype(np.float64) * 1e6).astype(np.int64))
    _, first, inverse = np.unique(np.concatenate(keys, axis=1), axis=0, return_index=True, return_inverse=True)
    indices = inverse.reshape(-1)[part.indices]
    keep = (indices[:, 0] != indices[:, 1]) & (indices[:, 1] != indices[:, 2]) & (indices[:, 0] != indices[:, 2])
    return TexturedPart(
        part.positions[first],
        indices[keep],
        None if part.uvs is None else part.uvs[first],
        part.texture,
        part.mime,
        part.color,
    )


def simplify_part(part: TexturedPart, ratio: float) -> tuple[TexturedPart, float]:
    """The part with about `ratio` of its triangles and the error (metres) of the reduction."""
    welded = _weld(part)
    target = max(int(welded.triangle_count * ratio), 1)
    if welded.triangle_count <= target:
        return welded, 0.0
    origin = welded.positions.min(axis=0)
    positions = np.ascontiguousarray(welded.positions - origin, dtype=np.float32)
    indices = welded.indices.reshape(-1).astype(np.uint32)
    destination = np.zeros_like(indices)
    result_error = np.zeros(1, dtype=np.float32)
    extent = float(np.linalg.norm(np.ptp(positions, axis=0))) or 1.0
    count = meshoptimizer.simplify(
        destination,
        indices,
        positions,
        target_index_count=target * 3,
        target_error=extent,
        options=meshoptimizer.SIMPLIFY_ERROR_ABSOLUTE | meshoptimizer.SIMPLIFY_LOCK_BORDER,
        result_error=result_error,
    )
    coarse = TexturedPart(
        welded.positions, destination[:count].reshape(-1, 3), welded.uvs, welded.texture, welded.mime, welded.color
    )
    return _sub(coarse, np.arange(coarse.triangle_count)), float(result_error[0])


def fit_texture(part: TexturedPart, scale: float, decoded: dict[int, Image.Image] | None = None) -> TexturedPart:
    """The part's texture cropped to the rectangle its coordinates use and resized by `scale`.

    `decoded` keeps decoded images by the identity of their bytes, so that a large atlas shared
    by many tiles is decoded once.
    """
    if part.texture is None or part.uvs is None or not part.triangle_count:
        return part
    decoded = {} if decoded is None else decoded
    image = decoded.get(id(part.texture))
    if image is None:
        image = decoded[id(part.texture)] = Image.open(io.BytesIO(part.texture))
        image.load()
    width, height = image.size
    uv = part.uvs.astype(np.float64)
    low, high = uv.min(axis=0), uv.max(axis=0)
    if low.min() < 0.0 or high.max() > 1.0:  # wrapping (repeating) texture: keep it whole
        x0, y0, x1, y1 = 0, 0, width, height
    else:
        x0 = max(int(np.floor(low[0] * width)) - CROP_PAD, 0)
        x1 = min(int(np.ceil(high[0] * width)) + CROP_PAD, width)
        y0 = max(int(np.floor((1.0 - high[1]) * height)) - CROP_PAD, 0)  # image rows count from the top
        y1 = min(int(np.ceil((1.0 - low[1]) * height)) + CROP_PAD, height)
    crop = image.crop((x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)))
    cw, ch = crop.size
    size = (max(min(cw, MIN_TEXTURE), int(cw * scale)), max(min(ch, MIN_TEXTURE), int(ch * scale)))
    if size != crop.size:
        crop = crop.resize(size, Image.Resampling.BILINEAR)
    new_uv = np.column_stack([(uv[:, 0] * width - x0) / cw, 1.0 - ((1.0 - uv[:, 1]) * height - y0) / ch])
    buffer = io.BytesIO()
    if part.mime == "image/png":
        crop.save(buffer, "PNG")
    else:
        crop.convert("RGB").save(buffer, "JPEG", quality=JPEG_QUALITY)
    return TexturedPart(part.positions, part.indices, new_uv, buffer.getvalue(), part.mime, part.color)


def _centres(parts: list[TexturedPart]) -> list[np.ndarray]:
    return [p.positions[p.indices].mean(axis=1)[:, :2] for p in parts]


def _split(
    parts: list[TexturedPart], depth: int, leaf_triangles: int, name: str, images: dict[int, Image.Image]
) -> tuple[MeshTile, list[TexturedPart]]:
    """The tile of these parts and its content before texture fitting (what its parent simplifies)."""
    total = sum(p.triangle_count for p in parts)
    if total <= leaf_triangles or depth >= MAX_DEPTH:
        return MeshTile([fit_texture(p, 1.0, images) for p in parts], 0.0, [], name), parts
    centres = _centres(parts)
    every = np.concatenate(centres)
    low, high = every.min(axis=0), every.max(axis=0)
    mid = (low + high) / 2.0
    split_x, split_y = (high - low) >= 0.5 * (high - low).max()
    children: list[tuple[MeshTile, list[TexturedPart]]] = []
    for qx in (0, 1) if split_x else (0,):
        for qy in (0, 1) if split_y else (0,):
            quadrant = []
            for part, c in zip(parts, centres, strict=True):
                inside = np.ones(len(c), dtype=bool)
                if split_x:
                    inside &= (c[:, 0] >= mid[0]) if qx else (c[:, 0] < mid[0])
                if split_y:
                    inside &= (c[:, 1] >= mid[1]) if qy else (c[:, 1] < mid[1])
                if inside.any():
                    quadrant.append(_sub(part, np.flatnonzero(inside)))
            if quadrant:
                children.append(_split(quadrant, depth + 1, leaf_triangles, f"{name}{qx + 2 * qy}", images))
    if len(children) == 1:  # all centres coincide: nothing to split
        return children[0]
    content = _merge_by_texture([p for _, coarse in children for p in coarse])
    ratio = leaf_triangles / max(sum(p.triangle_count for p in content), 1)
    simplified, errors = [], []
    for part in content:
        coarse, error = simplify_part(part, ratio)
        simplified.append(coarse)
        errors.append(error)
    tiles = [tile for tile, _ in children]
    child_error = max(tile.error for tile in tiles)
    error = max(max(errors, default=0.0) + child_error, 2.0 * child_error, 1e-3)
    scale = 0.5 ** (1 + max(_height(tile) for tile in tiles))
    simplified = [p for p in simplified if p.triangle_count]
    return MeshTile([fit_texture(p, scale, images) for p in simplified], error, tiles, name), simplified


def _merge_by_texture(parts: list[TexturedPart]) -> list[TexturedPart]:
    """Pieces cut from one source part (the same texture bytes and colour) joined again."""
    groups: dict[tuple, list[TexturedPart]] = {}
    for part in parts:
        groups.setdefault((id(part.texture), part.color, part.uvs is None), []).append(part)
    merged = []
    for group in groups.values():
        offsets = np.cumsum([0] + [len(p.positions) for p in group[:-1]])
        merged.append(
            TexturedPart(
                np.concatenate([p.positions for p in group]),
                np.concatenate([p.indices + o for p, o in zip(group, offsets, strict=True)]),
                None if group[0].uvs is None else np.concatenate([p.uvs for p in group]),
                group[0].texture,
                group[0].mime,
                group[0].color,
            )
        )
    return merged


def _height(tile: MeshTile) -> int:
    return 0 if not tile.children else 1 + max(_height(c) for c in tile.children)


def build_mesh_tree(parts: list[TexturedPart], leaf_triangles: int = LEAF_TRIANGLES) -> MeshTile:
    """The level-of-detail tree of a mesh given as textured parts in ENU metres."""
    parts = [p for p in parts if p.triangle_count]
    if not parts:
        from twin.model import InvalidInput

        raise InvalidInput("the mesh has no triangles")
    return _split(parts, 0, leaf_triangles, "t", {})[0]
