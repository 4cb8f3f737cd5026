"""A BIM layer's 3D Tiles: its elements' meshes, subdivided, with levels of detail, in an ENU box.

The elements drawn are the features given (those valid at the requested time); each feature's
`mesh` property names its geometry in the layer's mesh assets (written by `ingestion.ifc`, see
the array layout there), newest asset first. Positions are east-north-up metres around the
newest asset's anchor; the tileset root's transform places that frame on the Earth with the
anchor's height made ellipsoidal by the store's vertical datum, so the building stands on the
terrain. Tiles use `box` volumes in the ENU frame and carry GlobalId, class, name and storey per
feature; the full record is `GET /features/{layer}/{fid}`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tiles.threed.gltf import TileMesh, encode_glb
from tiles.threed.metadata import Column, PropertyTable
from tiles.threed.subdivide import LodNode, build_lod_tree, concatenate
from tiles.threed.tileset import Tile, box_volume, tileset_document, write_tileset
from twin.crs import enu_to_ecef_matrix
from twin.model import Feature, InvalidInput, Layer
from twin.store import Store

ELEMENT_CLASS = "element"
COLUMNS = (
    Column("id", description="Feature id in the twin: GET /features/{layer}/{id}"),
    Column("GlobalId", description="IFC GlobalId"),
    Column("class", description="IFC class, e.g. IfcWall"),
    Column("name", description="Element name"),
    Column("storey", description="Building storey holding the element"),
)


def _frame_change(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """4x4 from the ENU frame at anchor `source` to the one at `target` (both lon, lat, h)."""
    return np.linalg.inv(enu_to_ecef_matrix(*target)) @ enu_to_ecef_matrix(*source)


def layer_mesh(store: Store, layer: Layer, features: list[Feature]) -> tuple[TileMesh, np.ndarray]:
    """The features' triangles in one ENU frame (feature id = index in `features`) and its anchor."""
    wanted = {f.properties["mesh"]: i for i, f in enumerate(features) if f.properties.get("mesh")}
    parts: list[TileMesh] = []
    anchor: np.ndarray | None = None
    for key in layer.metadata.get("bim", {}).get("meshes", []):
        if not wanted:
            break
        with np.load(store.assets.open_path(key)) as data:
            digests = data["digests"]
            hits = [i for i, digest in enumerate(digests.tolist()) if digest in wanted]
            if not hits:
                continue
            vertex_start, triangle_start = data["vertex_start"], data["triangle_start"]
            positions = data["positions"].astype(np.float64) + data["centre"]
            if anchor is None:
                anchor = data["anchor"].copy()
            else:
                change = _frame_change(data["anchor"], anchor)
                positions = positions @ change[:3, :3].T + change[:3, 3]
            colors, indices = data["colors"], data["indices"]
            for i in hits:
                v0, v1 = int(vertex_start[i]), int(vertex_start[i + 1])
                t0, t1 = int(triangle_start[i]), int(triangle_start[i + 1])
                parts.append(
                    TileMesh(
                        positions[v0:v1],
                        indices[t0:t1].astype(np.int64) - v0,
                        np.full(v1 - v0, wanted.pop(digests[i])),
                        colors[v0:v1],
                    )
                )
    if not parts or anchor is None:
        raise InvalidInput(f"layer {layer.id!r} has no element geometry at that time")
    return concatenate(parts), anchor


def feature_row(feature: Feature) -> dict[str, Any]:
    p = feature.properties
    return {
        "id": feature.fid,
        "GlobalId": p.get("GlobalId"),
        "class": p.get("class"),
        "name": p.get("name"),
        "storey": p.get("storey"),
    }


def write_tiles(
    tree: LodNode,
    rows: list[dict[str, Any]],
    out: Path,
    *,
    class_id: str,
    columns: tuple[Column, ...],
    compression: str | None,
) -> int:
    """Each node's glb under `out/tiles/`, feature ids renumbered per tile; returns bytes written."""
    written = 0
    (out / "tiles").mkdir(parents=True, exist_ok=True)
    for node in tree.walk():
        present, local = np.unique(node.mesh.feature_ids, return_inverse=True)
        mesh = TileMesh(node.mesh.positions, node.mesh.indices, local, node.mesh.colors)
        table = PropertyTable(class_id, columns, [rows[i] for i in present.tolist()])
        data = encode_glb(mesh, table, compression=compression)
        (out / "tiles" / f"{node.address}.glb").write_bytes(data)
        written += len(data)
    return written


def tile_tree(node: LodNode, pad: float = 0.0) -> Tile:
    """The tileset's tiles: REPLACE refinement, box volumes in the node frame."""
    return Tile(
        bounding_volume=box_volume(node.low - pad, node.high + pad),
        geometric_error=node.error,
        content_uri=f"tiles/{node.address}.glb",
        children=[tile_tree(child, pad) for child in node.children],
    )


def build(
    store: Store, layer: Layer, features: list[Feature], out: Path, *, compression: str | None = "meshopt"
) -> dict[str, Any]:
    """Write tileset.json and tiles/*.glb for these features into `out`; returns a summary."""
    rows = [feature_row(f) for f in features]
    return build_meshes(store, layer, features, out, rows, ELEMENT_CLASS, COLUMNS, compression)


def build_meshes(
    store: Store,
    layer: Layer,
    features: list[Feature],
    out: Path,
    rows: list[dict[str, Any]],
    class_id: str,
    columns: tuple[Column, ...],
    compression: str | None,
) -> dict[str, Any]:
    """The tileset of features whose meshes are stored assets (IFC elements, city model buildings):
    one LOD tree in an east-north-up frame at the layer's anchor, a metadata row per feature."""
    mesh, anchor = layer_mesh(store, layer, features)
    tree = build_lod_tree(mesh)
    size = write_tiles(tree, rows, out, class_id=class_id, columns=columns, compression=compression)
    datum = store_datum(store)
    lon, lat, height = (float(v) for v in anchor)
    ellipsoidal = float(datum.to_ellipsoidal(lon, lat, height))
    root = tile_tree(tree)
    root.transform = enu_to_ecef_matrix(lon, lat, ellipsoidal)
    diagonal = float(np.linalg.norm(tree.high - tree.low))
    document = tileset_document(
        root, max(2.0 * tree.error, diagonal), extras={"layer": layer.id, "kind": layer.kind.value}
    )
    write_tileset(out / "tileset.json", document)
    return {
        "tiles": sum(1 for _ in tree.walk()),
        "triangles": int(mesh.triangle_count),
        "features": len(features),
        "bytes": size,
        "anchor": [lon, lat, ellipsoidal],
        "geometric_error": document["geometricError"],
    }


def store_datum(store: Store):
    """The twin's vertical datum (geoid grid or constant offset) from the store's meta."""
    from twin.crs import VerticalDatum

    return VerticalDatum(offset=float(store.get_meta("geoid_offset") or 0.0), geoid_grid=store.get_meta("geoid_grid"))
