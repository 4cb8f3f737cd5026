"""City models (CityJSON 1.0-2.0, CityGML 2.0/3.0) into a city model layer: buildings with their LOD geometry.

Every building-like city object (Building, BuildingPart, BuildingInstallation, ...) becomes a
feature: its id, type, attributes and chosen LOD as properties, and its surfaces at that LOD
(the highest the file has for it) as a MultiPolygon Z in the project CRS, heights kept
orthometric. The surfaces, triangulated (earcut in each polygon's plane, holes kept) and
coloured by their semantics (roofs, walls, ground), go into one mesh asset with the layout of
`ingestion.ifc` (ENU around an anchor, per-feature digests), which `tiles.threed.citymodel`
tiles like BIM.

CityJSON vertices are integers scaled and translated by `transform`; boundaries nest rings in
surfaces in shells in solids, and semantic values follow the same nesting one level up. CityGML
is read with the standard XML parser, namespace-agnostic (2.0 and 3.0 differ in namespaces and
in `lodNSolid` / `lodNMultiSurface` / boundary-surface nesting): a polygon's LOD and semantics
come from its nearest `lod…` and `…Surface` ancestors. The CRS is `--crs`, else the file's
(`metadata.referenceSystem`, or a GML `srsName`), else a clear error.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import tempfile
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import mapbox_earcut
import numpy as np
import shapely

from ingestion.basemap import layer_id_for
from ingestion.layers import check_kind
from twin import crs as crs_mod
from twin.model import FeatureInput, InvalidInput, Layer, LayerKind, NotFound, Scenario, WriteReport
from twin.store import Store, WriteMode

BUILDING_TYPES = ("Building", "BuildingPart", "BuildingInstallation", "BuildingConstructiveElement", "BuildingRoom")
SURFACE_COLORS = {
    "RoofSurface": (178, 76, 61, 255),
    "WallSurface": (226, 222, 212, 255),
    "GroundSurface": (110, 110, 110, 255),
    "ClosureSurface": (200, 200, 200, 255),
    "OuterCeilingSurface": (190, 190, 190, 255),
    "OuterFloorSurface": (150, 150, 150, 255),
    "Window": (120, 160, 200, 255),
    "Door": (140, 100, 70, 255),
}
DEFAULT_COLOR = (215, 210, 200, 255)
GML_SURFACES = ("Surface", "MultiSurface", "CompositeSurface", "OrientableSurface", "TriangulatedSurface")
EPSG_IN_TEXT = re.compile(r"EPSG(?:/\d+(?:\.\d+)?/|::?|/0/)(\d+)", re.IGNORECASE)


@dataclass
class Surface:
    rings: list[np.ndarray]  # (k, 3) source coordinates, the exterior first
    semantic: str | None = None


@dataclass
class CityObject:
    fid: str
    type: str
    attributes: dict[str, Any]
    lod: str | None = None
    surfaces: list[Surface] = field(default_factory=list)
    parent: str | None = None


def crs_from_text(text: str | None) -> str | None:
    """'EPSG:nnnn' from a CityJSON referenceSystem or a GML srsName (URN, URL or EPSG:n)."""
    if not text:
        return None
    match = EPSG_IN_TEXT.search(text)
    return f"EPSG:{match.group(1)}" if match else text


# ----- CityJSON -------------------------------------------------------------------------------------
def _surfaces(geometry: dict[str, Any], vertices: np.ndarray) -> list[Surface]:
    """A CityJSON geometry's polygons with their semantic surface types."""
    kind, boundaries = geometry.get("type"), geometry.get("boundaries") or []
    semantics = geometry.get("semantics") or {}
    kinds = [s.get("type") for s in semantics.get("surfaces", [])]
    values = semantics.get("values")
    depth = {"MultiSurface": 0, "CompositeSurface": 0, "Solid": 1, "MultiSolid": 2, "CompositeSolid": 2}.get(kind)
    if depth is None:
        return []

    def flatten(items: Any, level: int) -> list[Any]:
        if level == 0:
            return list(items or [])
        return [x for item in items or [] for x in flatten(item, level - 1)]

    polygons = flatten(boundaries, depth)
    labels = flatten(values, depth) if values is not None else [None] * len(polygons)
    out = []
    for polygon, label in zip(polygons, labels + [None] * (len(polygons) - len(labels)), strict=False):
        rings = [vertices[np.asarray(ring, dtype=np.int64)] for ring in polygon if len(ring) >= 3]
        if rings:
            semantic = kinds[label] if isinstance(label, int) and 0 <= label < len(kinds) else None
            out.append(Surface(rings, semantic))
    return out


def _lod_key(lod: Any) -> float:
    try:
        return float(lod)
    except (TypeError, ValueError):
        return -1.0


def read_cityjson(document: dict[str, Any], name: str) -> tuple[list[CityObject], str | None]:
    if document.get("type") != "CityJSON":
        raise InvalidInput(f"{name}: not a CityJSON file (type is {document.get('type')!r})")
    try:
        vertices = np.asarray(document.get("vertices", []), dtype=np.float64).reshape(-1, 3)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"{name}: the vertex list is not x, y, z triples") from exc
    transform = document.get("transform")
    if transform:
        vertices = vertices * np.asarray(transform["scale"], dtype=float) + np.asarray(transform["translate"], float)
    objects = []
    for fid, item in (document.get("CityObjects") or {}).items():
        if item.get("type") not in BUILDING_TYPES:
            continue
        geometries = [g for g in item.get("geometry") or [] if g.get("boundaries")]
        lod = max((g.get("lod") for g in geometries), key=_lod_key, default=None)
        chosen = [g for g in geometries if g.get("lod") == lod]
        try:
            surfaces = [s for g in chosen for s in _surfaces(g, vertices)]
        except (IndexError, TypeError, ValueError) as exc:
            raise InvalidInput(f"{name}: city object {fid} has boundaries that do not index the vertices") from exc
        parents = item.get("parents") or []
        objects.append(
            CityObject(
                str(fid),
                item["type"],
                dict(item.get("attributes") or {}),
                None if lod is None else str(lod),
                surfaces,
                parents[0] if parents else None,
            )
        )
    reference = (document.get("metadata") or {}).get("referenceSystem")
    return objects, crs_from_text(reference)


# ----- CityGML ----------------------------------------------------------------------------------------
def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _gml_id(element: ElementTree.Element) -> str | None:
    return next((v for k, v in element.attrib.items() if _local(k) == "id"), None)


def _coordinates(ring: ElementTree.Element) -> np.ndarray:
    pos_list = [e for e in ring.iter() if _local(e.tag) == "posList"]
    if pos_list:
        values = [float(v) for v in (pos_list[0].text or "").split()]
        dimension = int(pos_list[0].get("srsDimension") or 3)
    else:
        values = [float(v) for e in ring.iter() if _local(e.tag) == "pos" for v in (e.text or "").split()]
        dimension = 3
    if dimension != 3 or len(values) % 3:
        raise ValueError("CityGML rings need 3D coordinates")
    return np.asarray(values, dtype=np.float64).reshape(-1, 3)


def _collect(
    element: ElementTree.Element,
    lod: str | None,
    semantic: str | None,
    out: dict[str, list[Surface]],
    seen: set[str],
) -> None:
    """Polygons under a building (not under its parts), grouped by LOD, with semantics."""
    for child in element:
        name = _local(child.tag)
        if name in BUILDING_TYPES:
            continue  # a part is its own feature
        match = re.match(r"lod(\d)", name)
        child_lod = match.group(1) if match else lod
        thematic = name.endswith("Surface") and name not in GML_SURFACES
        child_semantic = name if thematic or name in ("Window", "Door") else semantic
        if name in ("Polygon", "Triangle"):
            ident = _gml_id(child)
            if ident is not None and ident in seen:
                continue  # the same polygon given twice (a solid and its boundary surfaces)
            if ident is not None:
                seen.add(ident)
            rings = []
            for boundary in child:
                if _local(boundary.tag) in ("exterior", "interior"):
                    coordinates = _coordinates(boundary)
                    if len(coordinates) >= 3:
                        rings.append(coordinates)
            if rings and child_lod is not None:
                out.setdefault(child_lod, []).append(Surface(rings, child_semantic))
            continue
        _collect(child, child_lod, child_semantic, out, seen)


def _attributes(element: ElementTree.Element) -> dict[str, Any]:
    """Simple-valued children (measuredHeight, function, ...) and generic attributes."""
    attributes: dict[str, Any] = {}
    for child in element:
        name = _local(child.tag)
        if name.endswith("Attribute") and child.get("name"):
            value = next((c.text for c in child if _local(c.tag) == "value"), None)
            attributes[child.get("name")] = _number(value)
        elif len(child) == 0 and child.text and child.text.strip() and name not in ("name", "description"):
            attributes[name] = _number(child.text.strip())
        elif name in ("name", "description") and child.text:
            attributes[name] = child.text.strip()
    return attributes


def _number(text: str | None) -> Any:
    try:
        value = float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return text
    return int(value) if value.is_integer() and "." not in str(text) else value


def read_citygml(path: Path) -> tuple[list[CityObject], str | None]:
    try:
        tree = ElementTree.parse(path)
    except (ElementTree.ParseError, OSError) as exc:
        raise InvalidInput(f"{path.name}: not a readable CityGML file ({exc})") from exc
    root = tree.getroot()
    if _local(root.tag) != "CityModel":
        raise InvalidInput(f"{path.name}: not a CityGML file (the root element is {_local(root.tag)})")
    srs = next((e.get("srsName") for e in root.iter() if e.get("srsName")), None)
    objects: list[CityObject] = []

    def visit(element: ElementTree.Element, parent: str | None) -> None:
        for child in element:
            name = _local(child.tag)
            if name in BUILDING_TYPES:
                fid = _gml_id(child) or f"{name}_{len(objects)}"
                by_lod: dict[str, list[Surface]] = {}
                try:
                    _collect(child, None, None, by_lod, set())
                except ValueError as exc:
                    raise InvalidInput(f"{path.name}: building {fid}: {exc}") from exc
                lod = max(by_lod, key=float, default=None)
                objects.append(CityObject(fid, name, _attributes(child), lod, by_lod.get(lod, []), parent))
                visit(child, fid)
            else:
                visit(child, parent)

    visit(root, None)
    return objects, crs_from_text(srs)


# ----- triangles and the mesh asset -------------------------------------------------------------------
def triangulate(rings: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """A planar polygon with holes as triangles: (vertices (n, 3), indices (t, 3))."""
    rings = [r[:-1] if len(r) > 3 and np.allclose(r[0], r[-1]) else r for r in rings]
    points = np.concatenate(rings)
    shifted = np.roll(rings[0], -1, axis=0)
    normal = np.array(
        [
            np.sum((rings[0][:, 1] - shifted[:, 1]) * (rings[0][:, 2] + shifted[:, 2])),
            np.sum((rings[0][:, 2] - shifted[:, 2]) * (rings[0][:, 0] + shifted[:, 0])),
            np.sum((rings[0][:, 0] - shifted[:, 0]) * (rings[0][:, 1] + shifted[:, 1])),
        ]
    )  # Newell's method
    drop = int(np.argmax(np.abs(normal)))
    plane = np.delete(points - points.mean(axis=0), drop, axis=1)
    ends = np.cumsum([len(r) for r in rings]).astype(np.uint32)
    indices = np.asarray(mapbox_earcut.triangulate_float64(plane, ends), dtype=np.int64).reshape(-1, 3)
    return points, indices


@dataclass
class _Mesh:
    positions: list[np.ndarray] = field(default_factory=list)
    colors: list[np.ndarray] = field(default_factory=list)
    indices: list[np.ndarray] = field(default_factory=list)
    counts: list[tuple[int, int]] = field(default_factory=list)
    digests: list[str] = field(default_factory=list)
    vertices: int = 0


def _object_mesh(obj: CityObject) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All of an object's surfaces as triangles in source coordinates, coloured by semantics."""
    points, triangles, colors = [], [], []
    offset = 0
    for surface in obj.surfaces:
        if not np.isfinite(np.concatenate(surface.rings)).all():
            continue
        vertices, indices = triangulate(surface.rings)
        if not len(indices):
            continue
        points.append(vertices)
        triangles.append(indices + offset)
        colors.append(np.tile(SURFACE_COLORS.get(surface.semantic or "", DEFAULT_COLOR), (len(vertices), 1)))
        offset += len(vertices)
    if not points:
        return np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64), np.zeros((0, 4), dtype=np.uint8)
    return np.concatenate(points), np.concatenate(triangles), np.concatenate(colors).astype(np.uint8)


def read_model(path: Path) -> tuple[list[CityObject], str | None]:
    """City objects and the file's CRS from a CityJSON or CityGML file."""
    path = Path(path)
    if not path.is_file():
        raise NotFound(f"{path}: no such file")
    head = path.read_bytes()[:512].lstrip()
    if head.startswith(b"{"):
        try:
            document = json.loads(path.read_bytes())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InvalidInput(f"{path.name}: not a readable CityJSON file ({exc})") from exc
        return read_cityjson(document, path.name)
    if head.startswith(b"<"):
        return read_citygml(path)
    raise InvalidInput(f"{path.name}: neither CityJSON nor CityGML")


def _to_project(obj_points: np.ndarray, source: str, project_crs: str, unit: float) -> np.ndarray:
    horizontal, _ = crs_mod.split_crs(source)
    x, y = crs_mod.transform_points(horizontal, project_crs, obj_points[:, 0], obj_points[:, 1])
    return np.column_stack([x, y, obj_points[:, 2] * unit])


def ingest_citymodel(
    store: Store,
    path: Path,
    *,
    layer_id: str | None = None,
    source_crs: str | None = None,
    scenario: Scenario | str = Scenario.current,
    valid_from: datetime | None = None,
    title: str | None = None,
) -> WriteReport:
    """Read a CityJSON/CityGML file and store its buildings as a new edition of a city model layer (atomic)."""
    path = Path(path)
    objects, file_crs = read_model(path)
    crs = source_crs or file_crs
    if not crs:
        raise InvalidInput(f"{path.name}: the city model names no CRS (metadata.referenceSystem / srsName); give --crs")
    crs = crs_mod.crs_code(crs_mod.parse_crs(crs))
    with_geometry = [o for o in objects if o.surfaces]
    if not with_geometry:
        raise InvalidInput(f"{path.name}: no building with geometry (Building, BuildingPart, ...)")
    target = layer_id_for(Path(path.name.split(".")[0]), None, layer_id)
    check_kind(store, target, LayerKind.citymodel, "city model")
    meshes = {o.fid: _object_mesh(o) for o in with_geometry}
    every = np.concatenate([m[0] for m in meshes.values() if len(m[0])])
    horizontal, unit = crs_mod.split_crs(crs)
    low, high = every.min(axis=0), every.max(axis=0)
    centre = (low + high) / 2.0
    lon, lat = crs_mod.transform_points(horizontal, crs_mod.CRS84, every[:, 0], every[:, 1])
    inside = crs_mod.within_area_of_use(horizontal, lon, lat) & np.isfinite(lon) & np.isfinite(lat)
    if not inside.all():
        raise InvalidInput(
            f"{path.name}: coordinates lie outside the area of {crs_mod.crs_label(crs)}; is the CRS right?"
        )
    if not crs_mod.within_area_of_use(store.crs, lon, lat).all():
        raise InvalidInput(
            f"{path.name}: the city model lies at {lon.mean():.5f}, {lat.mean():.5f}, "
            f"outside the area of the project CRS {store.crs}"
        )
    anchor_lon, anchor_lat = crs_mod.transform_points(horizontal, crs_mod.CRS84, [centre[0]], [centre[1]])
    anchor = (float(anchor_lon[0]), float(anchor_lat[0]), float(centre[2] * unit))
    flat = crs_mod.VerticalDatum()  # heights stay orthometric in the frame; the builder applies the datum
    mesh = _Mesh()
    features = []
    for obj in objects:
        properties: dict[str, Any] = {"type": obj.type, "lod": obj.lod, "parent": obj.parent, **_flat(obj.attributes)}
        geometry = None
        if obj.fid in meshes and len(meshes[obj.fid][1]):
            points, triangles, colors = meshes[obj.fid]
            enu, _, _ = crs_mod.source_to_enu(crs, points[:, 0], points[:, 1], points[:, 2], anchor, flat)
            digest = hashlib.sha1(obj.fid.encode())
            digest.update(np.round(enu * 1000).astype(np.int64).tobytes())
            digest.update(triangles.tobytes())
            key = digest.hexdigest()[:20]
            mesh.positions.append(enu)
            mesh.colors.append(colors)
            mesh.indices.append(triangles + mesh.vertices)
            mesh.counts.append((len(enu), len(triangles)))
            mesh.digests.append(key)
            mesh.vertices += len(enu)
            projected = [_to_project(ring, crs, store.crs, unit) for s in obj.surfaces for ring in s.rings[:1]]
            holes = [[_to_project(r, crs, store.crs, unit) for r in s.rings[1:]] for s in obj.surfaces]
            polygons = [shapely.Polygon(shell, inner) for shell, inner in zip(projected, holes, strict=True)]
            geometry = shapely.MultiPolygon([p for p in polygons if len(p.exterior.coords) >= 4])
            heights = points[:, 2] * unit
            properties.update(mesh=key, z_min=round(float(heights.min()), 3), z_max=round(float(heights.max()), 3))
        features.append(FeatureInput(obj.fid, geometry, properties))
    Path(store.data_dir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=store.data_dir) as tmp:
        asset = Path(tmp) / "mesh.npz"
        positions = np.concatenate(mesh.positions)
        middle = (positions.min(axis=0) + positions.max(axis=0)) / 2.0
        counts = np.asarray(mesh.counts, dtype=np.int64)
        np.savez(
            asset,
            positions=(positions - middle).astype(np.float32),
            colors=np.concatenate(mesh.colors),
            indices=np.concatenate(mesh.indices).astype(np.uint32),
            vertex_start=np.concatenate([[0], np.cumsum(counts[:, 0])]),
            triangle_start=np.concatenate([[0], np.cumsum(counts[:, 1])]),
            digests=np.array(mesh.digests, dtype="U20"),
            anchor=np.asarray(anchor, dtype=np.float64),
            centre=middle,
        )
        key = store.assets.put_file(asset, ".npz")
    layer = Layer(
        id=target,
        kind=LayerKind.citymodel,
        title=title or target.replace("_", " "),
        scenario=scenario,
        source=path.name,
        source_crs=crs,
        geometry_type="MultiPolygon Z",
        schema={"type": "text", "lod": "text"},
        metadata={"citymodel": {"meshes": [key, *_previous_meshes(store, target, key)], "objects": len(objects)}},
    )
    return store.write_features(layer, features, valid_from=valid_from, mode=WriteMode.replace)


def _flat(attributes: dict[str, Any]) -> dict[str, Any]:
    """Attributes as JSON values (nested ones kept as they are, non-finite numbers dropped)."""
    return {
        str(k): v
        for k, v in attributes.items()
        if not (isinstance(v, float) and not math.isfinite(v)) and str(k) not in ("mesh", "type", "lod", "parent")
    }


def _previous_meshes(store: Store, layer_id: str, key: str) -> list[str]:
    try:
        return [k for k in store.get_layer(layer_id).metadata.get("citymodel", {}).get("meshes", []) if k != key]
    except NotFound:
        return []
