"""Built tilesets on disk, one folder per (layer, set of feature versions), and the twin's root tileset.

A layer's tileset depends only on which feature versions it draws, so the folder is named by a
digest of those (fid, version) pairs: the current tileset and one for a past `datetime` share a
folder when nothing changed in between, an edit makes a new one, and a folder once written
never changes (safe to cache forever, safe to serve from several processes or a CDN). Builds go
to a temporary folder and are renamed into place.

Builders per layer kind live in `BUILDERS`; the pipe, building and mesh layers add theirs there.
A layer kind may hold 2D and 3D layers alike (most vector layers stay 2D): `RULES` lists
(predicate, builder) pairs tried first, in order, on the layer itself; buildings use one (a
vector layer whose metadata has an `extrude` object, see `tiles.threed.buildings`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from time import monotonic
from typing import Any

import numpy as np

from tiles.threed import bim, buildings, citymodel, external, pipes, points
from tiles.threed import mesh as mesh_tiles
from tiles.threed.tileset import Tile, region_volume, tileset_document
from tiles.threed.validate import volume_points
from twin.crs import ECEF, transform_points
from twin.model import Feature, InvalidInput, Layer, LayerKind, NotFound, Scenario, TimeFilter
from twin.store import Store

FORMAT = "3dtiles-1"  # bump when the output of a builder changes, so old folders are not reused
SUMMARY = "summary.json"
Builder = Callable[[Store, Layer, list[Feature], Path], dict[str, Any]]
BUILDERS: dict[LayerKind, Builder] = {LayerKind.bim: bim.build}
RULES: list[tuple[Callable[[Layer], bool], Builder]] = [(buildings.is_extruded, buildings.build)]
BUILDERS[LayerKind.mesh] = mesh_tiles.build  # reality meshes: built at ingest, unpacked here
BUILDERS[LayerKind.pointcloud] = points.build  # LAS/LAZ: octree of POINTS glbs
BUILDERS[LayerKind.tileset] = external.build  # registered 3D Tiles, served as delivered
BUILDERS[LayerKind.citymodel] = citymodel.build  # CityJSON / CityGML buildings, tiled like BIM
BUILDERS[LayerKind.pipe_network] = pipes.build  # each pipe or node layer: tubes, shafts, symbols
_locks: dict[str, threading.Lock] = {}
_recent: dict[tuple, tuple[float, Built]] = {}
NOW_TTL = 60.0  # seconds a "now" answer is reused
MEMO_SIZE = 1024
_locks_guard = threading.Lock()


@dataclass(frozen=True)
class Built:
    """A built tileset: its folder (tileset.json, tiles/), digest and summary."""

    layer: str
    key: str
    folder: Path
    summary: dict[str, Any]


def tiles_root(store: Store) -> Path:
    return Path(store.data_dir) / "tiles" / "3d"


def builder_for(layer: Layer) -> Builder | None:
    """The first rule that matches the layer, else its kind's builder; None for a 2D layer."""
    return next((builder for matches, builder in RULES if matches(layer)), BUILDERS.get(layer.kind))


def is_3d(layer: Layer) -> bool:
    return builder_for(layer) is not None


def build_key(layer: Layer, versions: list[tuple[str, int]], depends: tuple[tuple[str, int], ...] = ()) -> str:
    """Digest of what a build depends on: the layer's settings (metadata), its features' (id,
    version) and the versions of the other layers it reads."""
    settings = json.dumps([layer.metadata, depends], sort_keys=True, default=str)
    digest = hashlib.sha256(f"{FORMAT}\0{layer.id}\0{layer.kind.value}\0{settings}".encode())
    for fid, version in sorted(versions):
        digest.update(f"\0{fid}\0{version}".encode())
    return digest.hexdigest()[:24]


def dependencies(layer: Layer, layers: dict[str, Layer]) -> tuple[tuple[str, int], ...]:
    """(id, version) of the other layers a build reads: the terrain everything stands on and a
    pipe layer's nodes (ground levels, depths); an edit to any of them makes a new build."""
    wanted = {other.id for other in layers.values() if other.kind == LayerKind.terrain}
    nodes = layer.metadata.get("nodes_layer")
    if isinstance(nodes, str) and nodes in layers:
        wanted.add(nodes)
    wanted.discard(layer.id)
    return tuple(sorted((name, layers[name].version) for name in wanted))


def _lock(key: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(key, threading.Lock())


def ensure_built(store: Store, layer_id: str, time: TimeFilter | None = None) -> Built:
    """The layer's tileset for `time` (default now), built on first use; NotFound when nothing is valid then.

    Which build answers is remembered per layer version and time (for a minute when the time is
    "now"), so serving a tileset does not query every feature on each request.
    """
    layers = {layer.id: layer for layer in store.list_layers()}
    layer = layers[layer_id] if layer_id in layers else store.get_layer(layer_id)  # NotFound, with its message
    if not is_3d(layer):
        raise NotFound(f"layer {layer_id!r} is a {layer.kind.value} layer; it has no 3D Tiles")
    depends = dependencies(layer, layers)
    memo = (str(store.data_dir), layer_id, layer.version, depends, time)
    known = _recent.get(memo)
    if known is not None and (time is not None or monotonic() - known[0] < NOW_TTL) and known[1].folder.is_dir():
        return known[1]
    built = _ensure(store, layer, time, depends)
    if len(_recent) > MEMO_SIZE:  # many distinct times asked: start over rather than grow
        _recent.clear()
    _recent[memo] = (monotonic(), built)
    return built


def _ensure(store: Store, layer: Layer, time: TimeFilter | None, depends: tuple[tuple[str, int], ...]) -> Built:
    layer_id = layer.id
    versions = store.feature_versions(layer_id, time)  # ids and versions only: no geometry read
    if not versions:
        raise NotFound(f"layer {layer_id!r} has no features at the requested time")
    key = build_key(layer, versions, depends)
    folder = tiles_root(store) / layer_id / key
    if not (folder / SUMMARY).is_file():
        features = list(store.iter_features(layer_id, time=time))
        key = build_key(layer, [(f.fid, f.version) for f in features], depends)  # an edit may have come between
        folder = tiles_root(store) / layer_id / key
        with _lock(key):
            if not (folder / SUMMARY).is_file():
                _build_into(store, layer, features, folder)
    return Built(layer_id, key, folder, json.loads((folder / SUMMARY).read_text()))


def _build_into(store: Store, layer: Layer, features: list[Feature], folder: Path) -> None:
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".build-"))
    try:
        summary = builder_for(layer)(store, layer, features, tmp)
        document = json.loads((tmp / "tileset.json").read_text())
        summary["region"] = tileset_region(document)
        summary["layer_version"] = layer.version
        (tmp / SUMMARY).write_text(json.dumps(summary))
        try:
            os.replace(tmp, folder)
        except OSError:  # another process built the same folder first
            if not (folder / SUMMARY).is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def tileset_region(document: dict[str, Any]) -> list[float]:
    """The root volume as [west, south, east, north, min h, max h] in degrees and metres."""
    root = document["root"]
    frame = np.asarray(root["transform"], dtype=float).reshape(4, 4).T if "transform" in root else np.eye(4)
    points = volume_points(root["boundingVolume"], frame)
    lon, lat, h = transform_points(ECEF, "EPSG:4979", points[:, 0], points[:, 1], points[:, 2])
    return [float(lon.min()), float(lat.min()), float(lon.max()), float(lat.max()), float(h.min()), float(h.max())]


def scenario_layers(store: Store, scenario: Scenario) -> list[Layer]:
    """3D layers of a scenario: the current ones, plus the planned ones for `planned`."""
    wanted = {Scenario.current} if scenario == Scenario.current else {Scenario.current, Scenario.planned}
    return [layer for layer in store.list_layers() if is_3d(layer) and layer.scenario in wanted]


def twin_root(store: Store, scenario: Scenario, time: TimeFilter | None, query: str) -> dict[str, Any]:
    """The root tileset over every 3D layer of the scenario valid at `time` (external tilesets)."""
    children: list[Tile] = []
    for layer in scenario_layers(store, scenario):
        try:
            built = ensure_built(store, layer.id, time)
        except (NotFound, InvalidInput):
            continue  # nothing of this layer stands at that time
        west, south, east, north, low, high = built.summary["region"]
        uri = f"../{layer.id}/tileset.json" + (f"?{query}" if query else "")
        children.append(
            Tile(
                region_volume(west, south, east, north, low, high),
                float(built.summary["geometric_error"]),
                content_uri=uri,
                extras={"layer": layer.id, "kind": layer.kind.value, "scenario": layer.scenario.value},
            )
        )
    if not children:
        raise NotFound(f"the twin has no 3D layer in scenario {scenario.value!r} at the requested time")
    regions = np.array([c.bounding_volume["region"] for c in children])
    union = [*regions[:, :2].min(axis=0), *regions[:, 2:4].max(axis=0), regions[:, 4].min(), regions[:, 5].max()]
    error = max(c.geometric_error for c in children)
    root = Tile({"region": [float(v) for v in union]}, error * 2.0, children=children, refine="ADD")
    return tileset_document(root, error * 4.0, extras={"scenario": scenario.value})
