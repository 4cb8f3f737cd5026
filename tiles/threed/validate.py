"""Checks of written 3D Tiles: tileset structure, per-feature metadata, and the Khronos glTF validator.

`check_tileset` walks a tileset (external tilesets included) from a file or over HTTP and
reports what a client would trip over: a child's volume outside its parent's, a geometric error
that grows going down, a URI that does not resolve, a missing asset version. Volumes are
compared in ECEF after every transform, by sampling the child volume's corners. Every layer's
tests reuse it, as they reuse `validate_glbs` (gltf-validator through node) and
`check_glb_features` (EXT_mesh_features / EXT_structural_metadata consistency, which the
validator does not know).
"""

from __future__ import annotations

import itertools
import json
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urljoin, urlparse

import numpy as np

from tiles.threed.gltf import accessor_array, decompress_glb, read_glb
from twin.crs import ECEF, transform_points

REPO = Path(__file__).resolve().parents[2]
VALIDATOR_SCRIPT = Path(__file__).with_name("gltf_validate.mjs")
GEODETIC_3D = "EPSG:4979"
EARTH_RADIUS = 6_371_000.0
Fetch = Callable[[str], bytes]


@dataclass
class TilesetReport:
    """What `check_tileset` found: errors (empty when valid) and what it visited."""

    errors: list[str] = field(default_factory=list)
    tiles: int = 0
    tilesets: int = 0
    contents: dict[str, bytes] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors


def read_file_url(url: str) -> bytes:
    """Fetch for file:// URLs."""
    return Path(unquote(urlparse(url).path)).read_bytes()


def as_url(location: str | Path) -> str:
    if isinstance(location, Path) or "://" not in str(location):
        return Path(location).resolve().as_uri()
    return str(location)


# ----- bounding volumes in ECEF -------------------------------------------------------------
def volume_points(volume: dict[str, Any], frame: np.ndarray) -> np.ndarray:
    """Corners (and face centres) of a volume, in ECEF."""
    if "box" in volume:
        values = np.asarray(volume["box"], dtype=float)
        centre, axes = values[:3], values[3:].reshape(3, 3)
        signs = np.array(list(itertools.product((-1.0, 0.0, 1.0), repeat=3)))
        local = centre + signs @ axes
        return (frame @ np.column_stack([local, np.ones(len(local))]).T).T[:, :3]
    if "region" in volume:
        west, south, east, north, low, high = volume["region"]
        lon = np.degrees([west, (west + east) / 2, east])
        lat = np.degrees([south, (south + north) / 2, north])
        grid = np.array(list(itertools.product(lon, lat, (low, high))))
        x, y, z = transform_points(GEODETIC_3D, ECEF, grid[:, 0], grid[:, 1], grid[:, 2])
        return np.column_stack([x, y, z])
    if "sphere" in volume:
        values = np.asarray(volume["sphere"], dtype=float)
        signs = np.vstack([np.eye(3), -np.eye(3)])
        local = values[:3] + signs * values[3]
        return (frame @ np.column_stack([local, np.ones(len(local))]).T).T[:, :3]
    raise ValueError(f"unknown bounding volume {sorted(volume)}")


def outside(volume: dict[str, Any], frame: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Distance (metres, approximately) by which each ECEF point lies outside the volume."""
    if "box" in volume:
        values = np.asarray(volume["box"], dtype=float)
        centre, axes = values[:3], values[3:].reshape(3, 3)
        local = (np.linalg.inv(frame) @ np.column_stack([points, np.ones(len(points))]).T).T[:, :3] - centre
        lengths = np.linalg.norm(axes, axis=1)
        safe = np.where(lengths > 0, lengths, 1.0)
        units = axes / safe[:, None]
        along = local @ units.T
        return np.clip(np.abs(along) - lengths, 0.0, None).max(axis=1)
    if "sphere" in volume:
        values = np.asarray(volume["sphere"], dtype=float)
        local = (np.linalg.inv(frame) @ np.column_stack([points, np.ones(len(points))]).T).T[:, :3]
        return np.clip(np.linalg.norm(local - values[:3], axis=1) - values[3], 0.0, None)
    west, south, east, north, low, high = volume["region"]
    lon, lat, h = transform_points(ECEF, GEODETIC_3D, points[:, 0], points[:, 1], points[:, 2])
    lon, lat = np.radians(lon), np.radians(lat)
    metres_lon = EARTH_RADIUS * np.cos(lat)
    gaps = np.column_stack(
        [
            np.clip(west - lon, 0, None) * metres_lon,
            np.clip(lon - east, 0, None) * metres_lon,
            np.clip(south - lat, 0, None) * EARTH_RADIUS,
            np.clip(lat - north, 0, None) * EARTH_RADIUS,
            np.clip(low - h, 0, None),
            np.clip(h - high, 0, None),
        ]
    )
    return gaps.max(axis=1)


def _tolerance(points: np.ndarray, absolute: float) -> float:
    size = float(np.linalg.norm(points.max(axis=0) - points.min(axis=0))) if len(points) else 0.0
    return absolute + 1e-4 * size


# ----- the tileset walk ---------------------------------------------------------------------
def check_tileset(
    location: str | Path,
    fetch: Fetch | None = None,
    *,
    tolerance: float = 0.05,
    keep_contents: bool = True,
) -> TilesetReport:
    """Walk a tileset and its external tilesets; `fetch` reads http(s) URLs (files are read directly)."""
    report = TilesetReport()
    _check_document(as_url(location), fetch, np.eye(4), None, None, report, tolerance, keep_contents, depth=0)
    return report


def _read(url: str, fetch: Fetch | None) -> bytes:
    if url.startswith("file:"):
        return read_file_url(url)
    if fetch is None:
        raise ValueError(f"no fetch function for {url}")
    return fetch(url)


def _check_document(
    url: str,
    fetch: Fetch | None,
    frame: np.ndarray,
    parent_volume: tuple[dict[str, Any], np.ndarray] | None,
    parent_error: float | None,
    report: TilesetReport,
    tolerance: float,
    keep: bool,
    depth: int,
) -> None:
    if depth > 8:
        report.errors.append(f"{url}: external tilesets nested more than 8 deep (a cycle?)")
        return
    try:
        document = json.loads(_read(url, fetch))
    except Exception as exc:  # a URI that does not resolve is what the check reports
        report.errors.append(f"{url}: cannot read tileset ({exc})")
        return
    report.tilesets += 1
    version = document.get("asset", {}).get("version")
    if version not in ("1.0", "1.1"):
        report.errors.append(f"{url}: asset.version is {version!r}, expected '1.0' or '1.1'")
    error = document.get("geometricError")
    root = document.get("root")
    if not isinstance(error, int | float) or error < 0 or root is None:
        report.errors.append(f"{url}: needs a non-negative geometricError and a root")
        return
    if parent_error is not None and error > parent_error + 1e-9:
        report.errors.append(f"{url}: geometricError {error} exceeds the referencing tile's {parent_error}")
    if root.get("geometricError", 0) > error + 1e-9:
        report.errors.append(f"{url}: root geometricError {root.get('geometricError')} exceeds the tileset's {error}")
    _check_tile(url, "root", root, fetch, frame, parent_volume, error, report, tolerance, keep, depth)


def _check_tile(
    url: str,
    path: str,
    tile: dict[str, Any],
    fetch: Fetch | None,
    frame: np.ndarray,
    parent_volume: tuple[dict[str, Any], np.ndarray] | None,
    parent_error: float,
    report: TilesetReport,
    tolerance: float,
    keep: bool,
    depth: int,
) -> None:
    report.tiles += 1
    where = f"{url} {path}"
    if "transform" in tile:
        frame = frame @ np.asarray(tile["transform"], dtype=float).reshape(4, 4).T
    volume = tile.get("boundingVolume")
    error = tile.get("geometricError")
    if volume is None or not isinstance(error, int | float) or error < 0:
        report.errors.append(f"{where}: needs a boundingVolume and a non-negative geometricError")
        return
    if error > parent_error + 1e-9:
        report.errors.append(f"{where}: geometricError {error} exceeds its parent's {parent_error}")
    try:
        points = volume_points(volume, frame)
    except ValueError as exc:
        report.errors.append(f"{where}: {exc}")
        return
    if parent_volume is not None:
        gap = outside(*parent_volume, points).max()
        if gap > _tolerance(points, tolerance):
            report.errors.append(f"{where}: bounding volume reaches {gap:.3f} m outside its parent's")
    content = tile.get("content")
    contents = tile.get("contents") or ([content] if content else [])
    for item in contents:
        if "boundingVolume" in item:
            inner = volume_points(item["boundingVolume"], frame)
            gap = outside(volume, frame, inner).max()
            if gap > _tolerance(inner, tolerance):
                report.errors.append(f"{where}: content volume reaches {gap:.3f} m outside the tile's")
        if "implicitTiling" in tile:
            _check_implicit(url, where, tile, item["uri"], report)
            continue
        target = urljoin(url, item["uri"])
        if urlparse(target).path.endswith(".json"):
            _check_document(target, fetch, frame, (volume, frame), error, report, tolerance, keep, depth + 1)
            continue
        try:
            data = _read(target, fetch)
        except Exception as exc:
            report.errors.append(f"{where}: content {item['uri']} does not resolve ({exc})")
            continue
        if keep:
            report.contents[target] = data
    for index, child in enumerate(tile.get("children", [])):
        _check_tile(url, f"{path}/{index}", child, fetch, frame, (volume, frame), error, report, tolerance, keep, depth)


def _check_implicit(url: str, where: str, tile: dict[str, Any], content_template: str, report: TilesetReport) -> None:
    """Implicit tiling: the root subtree must exist and the content template must match files."""
    implicit = tile["implicitTiling"]
    zero = {"level": "0", "x": "0", "y": "0", "z": "0"}
    subtree = re.sub(r"\{(level|x|y|z)\}", lambda m: zero[m.group(1)], implicit["subtrees"]["uri"])
    base = urlparse(urljoin(url, subtree))
    if base.scheme == "file" and not Path(unquote(base.path)).is_file():
        report.errors.append(f"{where}: root subtree {subtree} does not resolve")
    if base.scheme == "file":
        pattern = re.sub(r"\{(level|x|y|z)\}", "*", content_template)
        folder = Path(unquote(urlparse(urljoin(url, ".")).path))
        if not list(folder.glob(pattern)):
            report.errors.append(f"{where}: no content file matches {content_template}")


# ----- glb checks ---------------------------------------------------------------------------
def check_glb_features(data: bytes) -> list[str]:
    """EXT_mesh_features / EXT_structural_metadata consistency: ids in range, tables well formed."""
    errors: list[str] = []
    gltf, binary = read_glb(decompress_glb(data))
    tables = gltf.get("extensions", {}).get("EXT_structural_metadata", {}).get("propertyTables", [])
    views = gltf.get("bufferViews", [])
    for t, table in enumerate(tables):
        for name, column in table["properties"].items():
            for key in ("values", "stringOffsets"):
                if key in column and not 0 <= column[key] < len(views):
                    errors.append(f"property table {t} column {name}: {key} view {column[key]} missing")
            if "stringOffsets" in column:
                view = views[column["stringOffsets"]]
                start = view.get("byteOffset", 0)
                offsets = np.frombuffer(binary[start : start + view["byteLength"]], dtype=np.uint32)
                values_length = views[column["values"]]["byteLength"]
                if len(offsets) != table["count"] + 1 or np.any(np.diff(offsets.astype(np.int64)) < 0):
                    errors.append(f"property table {t} column {name}: string offsets malformed")
                elif offsets[-1] != values_length:
                    errors.append(f"property table {t} column {name}: last offset {offsets[-1]} != {values_length}")
    for m, mesh in enumerate(gltf.get("meshes", [])):
        for p, primitive in enumerate(mesh["primitives"]):
            sets = primitive.get("extensions", {}).get("EXT_mesh_features", {}).get("featureIds", [])
            if not sets:
                errors.append(f"mesh {m} primitive {p}: no EXT_mesh_features feature ids")
            for feature_set in sets:
                attribute = primitive["attributes"].get(f"_FEATURE_ID_{feature_set.get('attribute', 0)}")
                if attribute is None:
                    errors.append(f"mesh {m} primitive {p}: feature id attribute missing")
                    continue
                ids = accessor_array(gltf, binary, attribute)
                if ids.size and ids.max() >= feature_set["featureCount"]:
                    errors.append(f"mesh {m} primitive {p}: feature id {ids.max()} >= featureCount")
                table = feature_set.get("propertyTable")
                if table is not None and (
                    table >= len(tables) or tables[table]["count"] != feature_set["featureCount"]
                ):
                    errors.append(f"mesh {m} primitive {p}: featureCount does not match its property table")
    return errors


def validator_available() -> bool:
    return shutil.which("node") is not None and (REPO / "node_modules" / "gltf-validator").is_dir()


def validate_glbs(items: Iterable[bytes | Path]) -> list[dict[str, Any]]:
    """Khronos glTF-Validator reports (`issues` objects: numErrors, messages...) for glb bytes or files."""
    if not validator_available():
        raise RuntimeError("gltf-validator is not installed: run `npm install` (make install) in the repository")
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for i, item in enumerate(items):
            if isinstance(item, Path):
                files.append(str(item))
            else:
                path = Path(tmp) / f"content{i}.glb"
                path.write_bytes(item)
                files.append(str(path))
        if not files:
            return []
        result = subprocess.run(
            ["node", str(VALIDATOR_SCRIPT), str(REPO / "node_modules" / "gltf-validator"), *files],
            capture_output=True,
            text=True,
            check=True,
            timeout=600,
        )
        reports = json.loads(result.stdout)
        return [reports[f] for f in files]
