"""An existing 3D Tiles tileset (1.0 b3dm/pnts/i3dm/cmpt or 1.1 glb, explicit or implicit) as a layer.

The folder is checked before anything is stored: the root `tileset.json` must parse, carry an
asset version and a root with a bounding volume and a geometric error; every URI the tilesets
name (contents, external tilesets, subtree and content templates, schemas, and the buffers and
images of glTF content) must be a relative path that stays inside the folder (no scheme, no
absolute path, no `..` escaping it, no symbolic link), and every explicit content must exist.
The folder's files are then stored unchanged as one content-addressed tar asset, named by the
layer's single feature (its footprint in the project CRS) so that `tiles.threed.external` can
unpack and serve them byte for byte.

A tileset in a local frame (its root volume far from the Earth's surface, like many samples)
must be placed with `at=(lon, lat, height)`; georeferenced ones are served where they are.
"""

from __future__ import annotations

import json
import re
import struct
import tarfile
import tempfile
from datetime import datetime
from itertools import product
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import numpy as np
import shapely

from ingestion.basemap import layer_id_for
from ingestion.layers import check_kind, hull_footprint
from twin import crs as crs_mod
from twin.model import FeatureInput, InvalidInput, Layer, LayerKind, NotFound, Scenario, WriteReport
from twin.store import Store, WriteMode

ROOT_NAME = "tileset.json"
TEMPLATE = re.compile(r"\{(level|x|y|z)\}")
EARTH_SURFACE = (6_350_000.0, 6_400_000.0)  # metres from the Earth's centre a georeferenced root lies in
MAX_DOCUMENTS = 10_000


def find_root(path: Path) -> Path:
    """The root tileset.json: the path itself, the folder's, or the one folder below that has it."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.is_dir():
        raise NotFound(f"{path}: no such folder")
    if (path / ROOT_NAME).is_file():
        return path / ROOT_NAME
    found = sorted(p for p in path.glob(f"*/{ROOT_NAME}"))
    if len(found) == 1:
        return found[0]
    raise InvalidInput(f"{path.name}: no {ROOT_NAME} at the top of the folder")


def _read_json(path: Path, name: str) -> dict[str, Any]:
    try:
        document = json.loads(path.read_bytes())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"{name}: not a readable tileset JSON ({exc})") from exc
    if not isinstance(document, dict):
        raise InvalidInput(f"{name}: a tileset must be a JSON object")
    return document


def check_document(document: dict[str, Any], name: str) -> None:
    """What any client needs: an asset version, a root with a bounding volume and an error."""
    version = (document.get("asset") or {}).get("version")
    if version not in ("0.0", "1.0", "1.1"):
        raise InvalidInput(f"{name}: asset.version is {version!r}; expected 1.0 or 1.1")
    root = document.get("root")
    if not isinstance(root, dict):
        raise InvalidInput(f"{name}: the tileset has no root tile")
    volume = root.get("boundingVolume")
    if not isinstance(volume, dict) or not {"box", "region", "sphere"} & set(volume):
        raise InvalidInput(f"{name}: the root tile has no bounding volume (box, region or sphere)")
    for key in ("box", "region", "sphere"):
        if key in volume:
            values = volume[key]
            size = {"box": 12, "region": 6, "sphere": 4}[key]
            if (
                not isinstance(values, list)
                or len(values) != size
                or not all(isinstance(v, int | float) for v in values)
            ):
                raise InvalidInput(f"{name}: the root's bounding {key} needs {size} numbers")
    if not isinstance(document.get("geometricError"), int | float) or document["geometricError"] < 0:
        raise InvalidInput(f"{name}: the tileset needs a non-negative geometricError")


def inside(folder: Path, base: Path, uri: str, name: str) -> Path:
    """The file a relative URI names, refused unless it stays inside `folder`."""
    parsed = urlparse(uri)
    if parsed.scheme or parsed.netloc:
        raise InvalidInput(f"{name}: URI {uri!r} is not a relative path inside the tileset folder")
    relative = unquote(parsed.path)
    if not relative or relative.startswith(("/", "\\")) or "\\" in relative or "\0" in relative:
        raise InvalidInput(f"{name}: URI {uri!r} is not a relative path inside the tileset folder")
    target = (base / relative).resolve()
    if target != folder and folder not in target.parents:
        raise InvalidInput(f"{name}: URI {uri!r} points outside the tileset folder")
    return target


def _gltf_json(data: bytes, suffix: str) -> dict[str, Any] | None:
    """The glTF JSON inside glb, gltf or b3dm content (None for formats without one)."""
    try:
        if suffix == ".gltf":
            return json.loads(data)
        if data[:4] == b"b3dm" and len(data) >= 28:
            lengths = struct.unpack_from("<4I", data, 12)
            data = data[28 + sum(lengths) :]
        if data[:4] == b"glTF" and len(data) >= 20:
            length = struct.unpack_from("<I", data, 12)[0]
            return json.loads(data[20 : 20 + length])
    except (ValueError, struct.error):
        return None
    return None


def _content_uris(target: Path) -> list[str]:
    """URIs a content file names itself: glTF buffers and images (not data: URIs)."""
    gltf = _gltf_json(target.read_bytes(), target.suffix.lower())
    if not isinstance(gltf, dict):
        return []
    uris = [item.get("uri") for key in ("buffers", "images") for item in gltf.get(key, []) if isinstance(item, dict)]
    return [u for u in uris if isinstance(u, str) and not u.startswith("data:")]


def walk(root_file: Path) -> dict[str, Any]:
    """Check every tileset document and URI from the root; returns what was seen."""
    folder = root_file.parent.resolve()
    pending = [root_file.resolve()]
    seen: set[Path] = set()
    contents = 0
    versions: set[str] = set()
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        seen.add(current)
        if len(seen) > MAX_DOCUMENTS:
            raise InvalidInput(f"{root_file.parent.name}: more than {MAX_DOCUMENTS} external tilesets")
        name = current.relative_to(folder).as_posix()
        document = _read_json(current, name)
        if current == root_file.resolve():
            check_document(document, name)
        versions.add(str((document.get("asset") or {}).get("version")))
        if "schemaUri" in document:
            _must_exist(inside(folder, current.parent, document["schemaUri"], name), document["schemaUri"], name)
        stack = [document.get("root") or {}]
        while stack:
            tile = stack.pop()
            if not isinstance(tile, dict):
                raise InvalidInput(f"{name}: a tile is not a JSON object")
            implicit = tile.get("implicitTiling")
            if isinstance(implicit, dict):
                subtrees = (implicit.get("subtrees") or {}).get("uri")
                if not isinstance(subtrees, str):
                    raise InvalidInput(f"{name}: implicit tiling without a subtrees URI")
                inside(folder, current.parent, TEMPLATE.sub("0", subtrees), name)
            items = list(tile.get("contents") or []) + (
                [tile["content"]] if isinstance(tile.get("content"), dict) else []
            )
            for item in items:
                uri = item.get("uri", item.get("url")) if isinstance(item, dict) else None
                if not isinstance(uri, str):
                    raise InvalidInput(f"{name}: a tile content has no uri")
                if isinstance(implicit, dict):
                    inside(folder, current.parent, TEMPLATE.sub("0", uri), name)
                    continue
                target = _must_exist(inside(folder, current.parent, uri, name), uri, name)
                contents += 1
                if target.suffix.lower() == ".json":
                    pending.append(target)
                    continue
                for inner in _content_uris(target):
                    _must_exist(inside(folder, target.parent, inner, target.name), inner, target.name)
            stack.extend(tile.get("children") or [])
    return {"documents": len(seen), "contents": contents, "versions": sorted(versions)}


def _must_exist(target: Path, uri: str, name: str) -> Path:
    if not target.is_file():
        raise InvalidInput(f"{name}: content {uri!r} is missing from the tileset folder")
    return target


def pack(folder: Path, target: Path) -> tuple[int, int]:
    """Every regular file of the folder into an uncompressed, reproducible tar; (files, bytes)."""
    files = sorted(p for p in folder.rglob("*") if not p.is_dir())
    links = [p for p in files if p.is_symlink() or not p.is_file()]
    if links:
        raise InvalidInput(f"{folder.name}: {links[0].relative_to(folder)} is a link or special file; copy real files")
    total = 0
    with tarfile.open(target, "w", format=tarfile.PAX_FORMAT) as archive:
        for path in files:
            info = archive.gettarinfo(str(path), arcname=path.relative_to(folder).as_posix())
            info.mtime, info.uid, info.gid, info.uname, info.gname, info.mode = 0, 0, 0, "", "", 0o644
            with path.open("rb") as handle:
                archive.addfile(info, handle)
            total += info.size
    return len(files), total


def root_volume_ecef(document: dict[str, Any]) -> np.ndarray:
    """Corners of the root's bounding volume in the tileset's own frame (root transform applied)."""
    root = document["root"]
    volume = root["boundingVolume"]
    if "region" in volume:
        west, south, east, north, low, high = volume["region"]
        grid = np.array(list(product(np.degrees([west, east]), np.degrees([south, north]), (low, high))))
        return np.column_stack(crs_mod.transform_points(crs_mod.GEODETIC_3D, crs_mod.ECEF, *grid.T))
    if "box" in volume:
        values = np.asarray(volume["box"], dtype=float)
        centre, axes = values[:3], values[3:].reshape(3, 3)
    else:
        x, y, z, r = volume["sphere"]
        centre, axes = np.array([x, y, z], dtype=float), np.eye(3) * r
    local = centre + np.array(list(product((-1.0, 1.0), repeat=3))) @ axes
    frame = np.asarray(root["transform"], dtype=float).reshape(4, 4).T if "transform" in root else np.eye(4)
    return (frame @ np.column_stack([local, np.ones(len(local))]).T).T[:, :3]


def georeferenced(document: dict[str, Any]) -> bool:
    """Whether the root volume lies on the Earth (regions always do)."""
    volume = document["root"]["boundingVolume"]
    if "region" in volume:
        return True
    radius = float(np.linalg.norm(root_volume_ecef(document).mean(axis=0)))
    return EARTH_SURFACE[0] <= radius <= EARTH_SURFACE[1]


def footprint(points_ecef: np.ndarray, project_crs: str, name: str) -> shapely.Geometry:
    lon, lat, _ = crs_mod.transform_points(crs_mod.ECEF, crs_mod.GEODETIC_3D, *points_ecef.T)
    return hull_footprint(lon, lat, project_crs, f"{name}: the tileset", 0.5)


def ingest_tileset(
    store: Store,
    path: Path,
    *,
    layer_id: str | None = None,
    source_crs: str | None = None,
    at: tuple[float, float, float] | None = None,
    scenario: Scenario | str = Scenario.current,
    valid_from: datetime | None = None,
    title: str | None = None,
) -> WriteReport:
    """Check a tileset folder and register it as a new edition of a `tileset` layer (atomic)."""
    root_file = find_root(Path(path))
    folder = root_file.parent
    if source_crs:
        raise InvalidInput("a 3D Tiles tileset is in ECEF (EPSG:4978); --crs does not apply (use --at to place it)")
    name = folder.name
    document = _read_json(root_file, f"{name}/{root_file.name}")
    check_document(document, f"{name}/{root_file.name}")
    seen = walk(root_file)
    on_earth = georeferenced(document)
    if not on_earth and at is None:
        raise InvalidInput(
            f"{name}: the tileset is not georeferenced (its root volume is not on the Earth's surface); "
            "place it with --at lon,lat,height"
        )
    corners = root_volume_ecef(document)
    if at is not None and not on_earth:
        frame = crs_mod.enu_to_ecef_matrix(*at)
        corners = (frame @ np.column_stack([corners, np.ones(len(corners))]).T).T[:, :3]
    geometry = footprint(corners, store.crs, name)
    target = layer_id_for(folder, None, layer_id)
    check_kind(store, target, LayerKind.tileset, "tileset")
    Path(store.data_dir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=store.data_dir) as tmp:
        archive = Path(tmp) / "tileset.tar"
        files, size = pack(folder, archive)
        key = store.assets.put_file(archive, ".tar")
    properties = {
        "archive": key,
        "root": root_file.name,
        "files": files,
        "bytes": size,
        "asset_version": str(document["asset"]["version"]),
        "geometric_error": float(document["geometricError"]),
        "placed_at": list(at) if at is not None and not on_earth else None,
        **seen,
    }
    layer = Layer(
        id=target,
        kind=LayerKind.tileset,
        title=title or target.replace("_", " "),
        scenario=scenario,
        source=name,
        source_crs=crs_mod.ECEF,
        geometry_type="Polygon",
        schema={"files": "integer", "asset_version": "text"},
        metadata={"tileset": {"archive": key, "files": files}},
    )
    feature = FeatureInput(target, geometry, properties)
    return store.write_features(layer, [feature], valid_from=valid_from, mode=WriteMode.replace)
