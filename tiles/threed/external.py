"""A registered 3D Tiles tileset (`ingestion.tileset`), served as it is under its layer.

The build unpacks the stored tar unchanged into `source/` and writes a one-tile tileset.json
whose content is `source/<root>.json` as an external tileset: the original documents, subtrees
and tiles are served byte for byte from the build folder, every relative URI in them resolves
as it did in the delivered folder, and the layer joins the twin root like any other. The outer
tile's volume is the original root volume with the root transform applied (an exact oriented
box, or the same region); a tileset in a local frame gets the east-north-up transform of the
place it was registered at.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import Any

import numpy as np

from tiles.threed.bim import store_datum
from tiles.threed.tileset import Tile, tileset_document, write_tileset
from twin.crs import enu_to_ecef_matrix
from twin.model import Feature, InvalidInput, Layer
from twin.store import Store

SOURCE = "source"


def outer_volume(root: dict[str, Any]) -> dict[str, Any]:
    """The root's bounding volume in the frame above its transform (boxes stay exact under affine maps)."""
    volume = root["boundingVolume"]
    if "region" in volume:
        return {"region": list(volume["region"])}
    frame = np.asarray(root["transform"], dtype=float).reshape(4, 4).T if "transform" in root else np.eye(4)
    if "box" in volume:
        values = np.asarray(volume["box"], dtype=float)
        centre, axes = values[:3], values[3:].reshape(3, 3)
    else:
        x, y, z, r = volume["sphere"]
        centre, axes = np.array([x, y, z], dtype=float), np.eye(3) * r
    moved_centre = frame[:3, :3] @ centre + frame[:3, 3]
    moved_axes = axes @ frame[:3, :3].T  # each row (a half axis) through the linear part
    return {"box": [*moved_centre.tolist(), *moved_axes.reshape(-1).tolist()]}


def build(store: Store, layer: Layer, features: list[Feature], out: Path) -> dict[str, Any]:
    """Unpack the tileset into `out/source` and write the wrapping tileset.json; returns a summary."""
    registered = [f for f in features if f.properties.get("archive")]
    if not registered:
        raise InvalidInput(f"layer {layer.id!r} has no registered tileset at that time")
    properties = max(registered, key=lambda f: f.valid_from).properties
    with tarfile.open(store.assets.open_path(properties["archive"])) as archive:
        archive.extractall(out / SOURCE, filter="data")
    root_name = properties.get("root", "tileset.json")
    document = json.loads((out / SOURCE / root_name).read_bytes())
    error = float(document["geometricError"])
    root = Tile(outer_volume(document["root"]), error, content_uri=f"{SOURCE}/{root_name}")
    placed = properties.get("placed_at")
    if placed:
        lon, lat, height = (float(v) for v in placed)
        root.transform = enu_to_ecef_matrix(lon, lat, float(store_datum(store).to_ellipsoidal(lon, lat, height)))
    wrapper = tileset_document(root, error, extras={"layer": layer.id, "kind": layer.kind.value})
    write_tileset(out / "tileset.json", wrapper)
    return {
        "tiles": int(properties.get("contents", 0)),
        "files": int(properties.get("files", 0)),
        "bytes": int(properties.get("bytes", 0)),
        "asset_version": properties.get("asset_version"),
        "geometric_error": error,
    }
