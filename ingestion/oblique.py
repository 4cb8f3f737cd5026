"""Oblique photography delivered as an OSGB tile tree (ContextCapture, Smart3D, DJI Terra).

A production folder holds `metadata.xml` (the SRS as `EPSG:xxxx`, `ENU:lat,lon` or WKT, and
`SRSOrigin`, which the vertices are relative to) and `Data/Tile_*/Tile_*.osgb`, each the root
of a PagedLOD tree whose nodes name finer files. Every file is read through OpenSceneGraph
(`ingestion.osgt`), every PagedLOD becomes a tile whose geometric error comes from its range
(the pixel size on screen, or the eye distance, at which OSG would switch to the children),
and the vertices are placed in an east-north-up frame at the origin (`twin.crs`). The tiles
are written by `tiles.threed.mesh`, stored as one asset and named by the layer's one feature.
Children named but not delivered are reported and the node is kept as a leaf.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import shapely

from ingestion.layers import check_kind, prefixed_layer_id
from ingestion.osgt import BATCH, Node, read_scenes, safe_relative
from tiles.threed.bim import store_datum
from tiles.threed.mesh import ARCHIVE_SUFFIX, TILESET_PROPERTY, MeshTile, check_texture_format, pack, write_mesh_tileset
from tiles.threed.mesh_gltf import TexturedPart
from twin.crs import (
    VerticalDatum,
    crs_code,
    parse_crs,
    projected_to_enu,
    projected_to_geodetic,
    transform_geometries,
)
from twin.model import FeatureInput, InvalidInput, Layer, LayerKind, Scenario, WriteReport
from twin.store import Store
from twin.store.base import WriteMode

MAX_SSE = 16.0  # pixels: the client's default maximum screen-space error
SCREEN_FACTOR = 935.0  # pixels per unit of size/distance: 1080-pixel-high view, 60 degree field of view
MAX_FILES = 200_000
ENU_SRS = re.compile(r"^\s*ENU\s*:\s*(-?[\d.]+)\s*,\s*(-?[\d.]+)\s*$", re.IGNORECASE)


@dataclass
class Georeference:
    """Where the mesh's coordinates are: a projected CRS or an ENU frame, plus the origin offset."""

    srs: str
    origin: tuple[float, float, float]
    enu: tuple[float, float] | None = None  # lat, lon of an ENU:lat,lon frame

    def anchor(self, datum: VerticalDatum) -> tuple[float, float, float]:
        """lon, lat, ellipsoidal height of the tileset's frame: the origin itself."""
        if self.enu is not None:
            return (self.enu[1], self.enu[0], 0.0)
        return projected_to_geodetic(self.srs, *self.origin, datum)

    def to_enu(self, positions: np.ndarray, anchor: tuple[float, float, float], datum: VerticalDatum) -> np.ndarray:
        shifted = np.asarray(positions, dtype=float) + np.asarray(self.origin, dtype=float)
        if self.enu is not None:
            return shifted
        return projected_to_enu(self.srs, shifted, anchor, datum)

    def describe(self) -> dict[str, Any]:
        return {
            "srs": self.srs if self.enu is None else f"ENU:{self.enu[0]},{self.enu[1]}",
            "origin": list(self.origin),
        }


def parse_origin(text: str | None) -> tuple[float, float, float] | None:
    """'x,y[,z]' as three numbers."""
    if text is None:
        return None
    try:
        values = [float(v) for v in text.replace(" ", "").split(",") if v != ""]
    except ValueError as exc:
        raise InvalidInput(f"origin {text!r}: expected X,Y[,Z] numbers") from exc
    if len(values) not in (2, 3) or not all(np.isfinite(values)):
        raise InvalidInput(f"origin {text!r}: expected X,Y[,Z] numbers")
    return (values[0], values[1], values[2] if len(values) == 3 else 0.0)


def _srs(text: str) -> tuple[str, tuple[float, float] | None]:
    match = ENU_SRS.match(text)
    if match:
        lat, lon = float(match.group(1)), float(match.group(2))
        if not (-90 <= lat <= 90 and -180 <= lon <= 180):
            raise InvalidInput(f"SRS {text!r}: latitude/longitude out of range")
        return text.strip(), (lat, lon)
    definition = parse_crs(text)
    if not definition.is_projected:
        raise InvalidInput(f"SRS {crs_code(definition)} is not projected; expected EPSG:xxxx, ENU:lat,lon or WKT")
    return text.strip(), None


def read_metadata(path: Path) -> Georeference:
    """`SRS` and `SRSOrigin` of a ContextCapture metadata.xml."""
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as exc:
        raise InvalidInput(f"{path.name}: not readable XML ({exc})") from exc
    srs = root.findtext("SRS")
    if not srs or not srs.strip():
        raise InvalidInput(f"{path.name}: no <SRS> element")
    origin = parse_origin(root.findtext("SRSOrigin") or "0,0,0")
    text, enu = _srs(srs)
    return Georeference(text, origin or (0.0, 0.0, 0.0), enu)


def georeference(folder: Path, crs: str | None, origin: str | None) -> Georeference:
    """From metadata.xml in `folder`, else from --crs and --origin (which also override it)."""
    metadata = Path(folder) / "metadata.xml"
    found = read_metadata(metadata) if metadata.is_file() else None
    if found is None and crs is None:
        raise InvalidInput(f"{Path(folder).name}: no metadata.xml; give --crs (and --origin)")
    if crs is not None:
        text, enu = _srs(crs)
        found = Georeference(text, found.origin if found else (0.0, 0.0, 0.0), enu)
    assert found is not None
    given = parse_origin(origin)
    if given is not None:
        found.origin = given
    return found


def production_folder(folder: Path) -> Path:
    """The folder holding metadata.xml / Data: `folder` itself or its only subfolder (an unpacked .zip)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InvalidInput(f"{folder}: not a folder")
    while not (folder / "metadata.xml").is_file() and not (folder / "Data").is_dir():
        entries = [p for p in folder.iterdir() if not p.name.startswith((".", "__MACOSX"))]
        if len(entries) != 1 or not entries[0].is_dir():
            break
        folder = entries[0]
    return folder


def root_files(folder: Path) -> list[Path]:
    """`Data/Tile_X/Tile_X.osgb` (or .osgt) roots; else the .osgb/.osgt files in the folder itself."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InvalidInput(f"{folder}: not a folder")
    found: list[Path] = []
    data = folder / "Data"
    if data.is_dir():
        for tile in sorted(p for p in data.iterdir() if p.is_dir()):
            for suffix in (".osgb", ".osgt"):
                candidate = tile / f"{tile.name}{suffix}"
                if candidate.is_file():
                    found.append(candidate)
                    break
    if not found:
        found = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".osgb", ".osgt") and p.is_file())
    if not found:
        raise InvalidInput(f"{folder.name}: no OSGB tiles (expected Data/Tile_*/Tile_*.osgb)")
    return found


def node_error(node: Node) -> float:
    """The geometric error (metres) at which a client should switch to the node's children.

    In PIXEL_SIZE_ON_SCREEN mode OSG refines when the bounding sphere's diameter covers more
    than `threshold` pixels; the client refines when error x factor / distance exceeds 16 px.
    Both switch at the same distance when error = 16 x diameter / threshold. In
    DISTANCE_FROM_EYE_POINT mode the children are shown nearer than `threshold` metres.
    """
    if node.threshold is None or not node.files:
        return 0.0
    if node.range_mode == "PIXEL_SIZE_ON_SCREEN":
        return MAX_SSE * 2.0 * node.radius / max(node.threshold, 1e-6)
    return MAX_SSE * node.threshold / SCREEN_FACTOR


@dataclass
class _Reader:
    geo: Georeference
    anchor: tuple[float, float, float]
    datum: VerticalDatum
    work: Path
    quality: int
    root: Path | None = None  # the production folder (resolved): no child file may lie outside it
    missing: list[str] = field(default_factory=list)
    files: int = 0

    def parts(self, node: Node) -> list[TexturedPart]:
        out = []
        for g in node.geometries:
            positions = self.geo.to_enu(g.positions, self.anchor, self.datum)
            texture = g.texture.data if g.texture is not None else None
            mime = g.texture.mime if g.texture is not None else "image/jpeg"
            out.append(TexturedPart(positions, g.indices, g.uvs, texture, mime, g.color))
        return out

    def read(self, roots: list[Path], progress: Callable[[int], None] | None) -> list[MeshTile]:
        """The tiles of every file of the trees, read a level at a time (batched, on two workers)."""
        top: list[MeshTile] = []
        frontier: list[tuple[Path, list[MeshTile]]] = [(root, top) for root in roots]
        seen = {root.resolve() for root in roots}
        with ThreadPoolExecutor(max_workers=2) as pool:
            while frontier:
                self.files += len(frontier)
                if self.files > MAX_FILES:
                    raise InvalidInput(f"more than {MAX_FILES} OSGB files: a cycle or not a tile tree")
                paths = [path for path, _ in frontier]
                chunks = [paths[i : i + BATCH] for i in range(0, len(paths), BATCH)]
                scenes = [
                    n for chunk in pool.map(lambda c: read_scenes(c, self.work, self.quality), chunks) for n in chunk
                ]
                following: list[tuple[Path, list[MeshTile]]] = []
                for (path, into), nodes in zip(frontier, scenes, strict=True):
                    for node in nodes:
                        tile = MeshTile(self.parts(node), node_error(node), [], path.stem)
                        into.append(tile)
                        following.extend((child, tile.children) for child in self._children(path, node, seen))
                if progress is not None:
                    progress(len(frontier))
                frontier = following
        return top

    def _children(self, path: Path, node: Node, seen: set[Path]) -> list[Path]:
        """The delivered files a node names, each once; the missing ones are noted."""
        found = []
        for name in node.files:
            child = safe_relative(name, path.parent, path.name)
            if child.resolve() in seen:
                continue
            if self.root is not None and not child.resolve().is_relative_to(self.root):
                raise InvalidInput(f"{path.name}: file name {name!r} points outside the tile folder (a link)")
            if not child.is_file():
                self.missing.append(f"{path.parent.name}/{name}")
                continue
            seen.add(child.resolve())
            found.append(child)
        return found


def layer_id_for(path: Path, layer_id: str | None) -> str:
    return prefixed_layer_id(Path(path).name, "mesh", layer_id)


def store_mesh_layer(
    store: Store,
    folder: Path,
    summary: dict[str, Any],
    geo: Georeference,
    *,
    layer_id: str,
    source: str,
    title: str | None,
    scenario: Scenario | str,
    valid_from: datetime | None,
    info: dict[str, Any],
) -> WriteReport:
    """Pack the built tileset as an asset and write the layer's one feature (atomic in the store)."""
    check_kind(store, layer_id, LayerKind.mesh, "mesh")
    archive = pack(folder, folder.parent / f"mesh{ARCHIVE_SUFFIX}")
    key = store.assets.put_file(archive, ARCHIVE_SUFFIX)
    footprint = _footprint(summary, geo, store.crs)
    layer = Layer(
        id=layer_id,
        kind=LayerKind.mesh,
        title=title or layer_id.replace("_", " "),
        scenario=scenario,
        source=source,
        source_crs=geo.srs if geo.enu is None else None,
        geometry_type="Polygon",
        schema={"tileset": "text"},
        metadata={"mesh": {**info, "georeference": geo.describe(), "tileset": key}},
    )
    properties = {TILESET_PROPERTY: key, "summary": summary, "source": source}
    return store.write_features(
        layer, [FeatureInput("mesh", footprint, properties)], valid_from=valid_from, mode=WriteMode.replace
    )


def _footprint(summary: dict[str, Any], geo: Georeference, project_crs: str):
    """The mesh's ENU box as a polygon in the project CRS (so the layer has a bbox and shows on maps)."""
    from twin.crs import CRS84, enu_to_geodetic

    low, high = summary["low"], summary["high"]
    corners = np.array([[low[0], low[1], 0.0], [high[0], low[1], 0.0], [high[0], high[1], 0.0], [low[0], high[1], 0.0]])
    lon, lat, _ = enu_to_geodetic(corners, tuple(summary["anchor"]))
    polygon = shapely.Polygon(np.column_stack([lon, lat]))
    return transform_geometries([polygon], CRS84, project_crs)[0]


def ingest_oblique(
    store: Store,
    folder: Path,
    *,
    layer_id: str | None = None,
    crs: str | None = None,
    origin: str | None = None,
    scenario: Scenario | str = Scenario.current,
    valid_from: datetime | None = None,
    title: str | None = None,
    compression: str | None = "meshopt",
    texture_format: str = "jpeg",
    quality: int = 85,
    progress: Callable[[int], None] | None = None,
) -> tuple[WriteReport, dict[str, Any]]:
    """Read an OSGB production folder into a mesh layer (atomic: nothing is written on error)."""
    check_texture_format(texture_format)
    folder = production_folder(folder)
    roots = root_files(folder)
    geo = georeference(folder, crs, origin)
    target = layer_id_for(folder, layer_id)
    datum = store_datum(store)
    anchor = geo.anchor(datum)
    Path(store.data_dir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=store.data_dir) as tmp:
        work = Path(tmp)
        reader = _Reader(geo, anchor, datum, work, quality, root=folder.resolve())
        trees = reader.read(roots, progress)
        out = work / "tileset"
        summary = write_mesh_tileset(
            trees,
            anchor,
            out,
            compression=compression,
            texture_format=texture_format,
            extras={"layer": target, "kind": LayerKind.mesh.value},
        )
        summary.update(files=reader.files, missing=sorted(reader.missing))
        info = {"format": "osgb", "root_tiles": len(roots), "files": reader.files, "missing": sorted(reader.missing)}
        report = store_mesh_layer(
            store,
            out,
            summary,
            geo,
            layer_id=target,
            source=folder.name,
            title=title,
            scenario=scenario,
            valid_from=valid_from,
            info=info,
        )
        shutil.rmtree(out, ignore_errors=True)
    return report, summary
