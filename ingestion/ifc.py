"""IFC models (IFC2X3, IFC4, IFC4X3_ADD2, plain or .ifczip) into a BIM layer: features plus a mesh asset.

Every IfcElement becomes a feature, also those no spatial container holds: its GlobalId as the
feature id; class, name, storey, type and property sets as properties; its footprint (convex
hull) in the project CRS as geometry, with its lowest and highest orthometric heights. The
tessellated geometry, produced by ifcopenshell's multi-core geometry iterator, goes through a
spool on disk element by element, so memory stays bounded by the largest batch, not the model,
and ends as one content-addressed `.npz` asset:

    positions  float32 (V, 3)  east-north-up metres around `anchor`, minus `centre`
    colors     uint8   (V, 4)  sRGB + alpha from the IFC surface styles
    indices    uint32  (T, 3)  into positions
    vertex_start, triangle_start  int64 (E + 1)  element e owns rows [start[e], start[e + 1])
    digests    str     (E,)    the `mesh` property of element e's feature
    anchor     float64 (3,)    lon, lat, orthometric height of the frame origin
    centre     float64 (3,)    offset subtracted from the positions

The tile builder (`tiles.threed.bim`) selects elements by digest, so re-ingesting an unchanged
element keeps its feature version, and a past version's geometry stays in its older asset.
Bad files (pre-release schemas, broken STEP, no georeferencing) raise InvalidInput before
anything is written.
"""

from __future__ import annotations

import hashlib
import math
import multiprocessing
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import ifcopenshell
import ifcopenshell.geom
import ifcopenshell.util.element
import numpy as np
import shapely

from ingestion.ifc_georef import Georeference, find_georeference
from ingestion.layers import prefixed_layer_id
from twin import crs as crs_mod
from twin.model import FeatureInput, InvalidInput, Layer, LayerKind, NotFound, Scenario, WriteReport
from twin.store import Store, WriteMode

SUPPORTED_SCHEMAS = ("IFC2X3", "IFC4", "IFC4X3_ADD2")
NOT_ELEMENTS = ("IfcFeatureElementSubtraction", "IfcVirtualElement")  # openings are voids, not objects
BATCH_VERTICES = 200_000
DEFAULT_RGBA = (200, 200, 200, 255)
MIN_FOOTPRINT = 0.01  # metres: a line-like element still gets an area


def open_model(path: Path) -> ifcopenshell.file:
    """The parsed model; InvalidInput for a missing, pre-release-schema or broken file."""
    path = Path(path)
    if not path.is_file():
        raise NotFound(f"{path}: no such file")
    try:
        model = ifcopenshell.open(str(path))
    except ifcopenshell.SchemaError as exc:
        raise InvalidInput(
            f"{path.name}: unsupported IFC schema ({exc}); supported: {', '.join(SUPPORTED_SCHEMAS)} "
            "(pre-release IFC4X3 RC files must be upgraded to IFC4X3_ADD2)"
        ) from exc
    except (ifcopenshell.Error, zipfile.BadZipFile, OSError, RuntimeError, ValueError) as exc:
        raise InvalidInput(
            f"{path.name}: not a readable IFC file ({str(exc).splitlines()[0] if str(exc) else exc})"
        ) from exc
    identifier = getattr(model, "schema_identifier", model.schema)
    if identifier not in SUPPORTED_SCHEMAS:
        raise InvalidInput(
            f"{path.name}: unsupported IFC schema {identifier}; supported: {', '.join(SUPPORTED_SCHEMAS)}"
        )
    return model


# ----- element records ---------------------------------------------------------------------------
def elements(model: ifcopenshell.file) -> list[ifcopenshell.entity_instance]:
    """Every physical element, whether or not the spatial tree contains it."""
    return [e for e in model.by_type("IfcElement") if not any(e.is_a(kind) for kind in NOT_ELEMENTS)]


def _json_value(value: Any) -> Any:
    """Property values as JSON: numbers stay numbers, references become their text."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items() if k != "id"}
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value]
    if isinstance(value, ifcopenshell.entity_instance):
        return getattr(value, "Name", None) or value.is_a()
    return str(value)


def _storey(element: ifcopenshell.entity_instance) -> tuple[str | None, str | None]:
    """The storey (and building) holding an element, through assemblies and nesting."""
    current = element
    for _ in range(16):
        container = ifcopenshell.util.element.get_container(current)
        if container is None:
            parent = ifcopenshell.util.element.get_aggregate(current) or ifcopenshell.util.element.get_nest(current)
            if parent is None:
                return None, None
            current = parent
            continue
        storey = container if container.is_a("IfcBuildingStorey") else None
        building = None
        node = container
        for _ in range(16):
            if node is None:
                break
            if node.is_a("IfcBuildingStorey") and storey is None:
                storey = node
            if node.is_a("IfcBuilding"):
                building = node
                break
            node = ifcopenshell.util.element.get_aggregate(node)
        return (storey.Name if storey is not None else None), (building.Name if building is not None else None)
    return None, None


def element_properties(element: ifcopenshell.entity_instance) -> dict[str, Any]:
    """What a planner sees on picking an element: identity, place in the building, property sets."""
    storey, building = _storey(element)
    element_type = ifcopenshell.util.element.get_type(element)
    return {
        "GlobalId": element.GlobalId,
        "class": element.is_a(),
        "name": element.Name,
        "description": element.Description,
        "object_type": getattr(element, "ObjectType", None),
        "tag": getattr(element, "Tag", None),
        "predefined_type": _json_value(getattr(element, "PredefinedType", None)),
        "type_name": element_type.Name if element_type is not None else None,
        "storey": storey,
        "building": building,
        "psets": _json_value(ifcopenshell.util.element.get_psets(element)),
    }


# ----- geometry ----------------------------------------------------------------------------------
@dataclass
class ElementMesh:
    """One element's triangles in world metres, a colour per vertex."""

    element_id: int
    vertices: np.ndarray
    triangles: np.ndarray
    colors: np.ndarray


def _material_rgba(material: Any) -> tuple[int, int, int, int]:
    try:
        r, g, b = material.diffuse.components
    except (AttributeError, TypeError, ValueError):
        return DEFAULT_RGBA
    transparency = material.transparency if material.transparency == material.transparency else 0.0
    alpha = 1.0 - min(max(float(transparency), 0.0), 0.95)
    return tuple(int(round(min(max(c, 0.0), 1.0) * 255)) for c in (r, g, b, alpha))  # type: ignore[return-value]


def _element_mesh(shape: Any) -> ElementMesh | None:
    geometry = shape.geometry
    vertices = np.asarray(geometry.verts, dtype=np.float64).reshape(-1, 3)
    faces = np.asarray(geometry.faces, dtype=np.int64).reshape(-1, 3)
    if len(faces) == 0 or not np.isfinite(vertices).all():
        return None
    palette = np.array([_material_rgba(m) for m in geometry.materials] or [DEFAULT_RGBA], dtype=np.uint8)
    material_ids = np.asarray(geometry.material_ids, dtype=np.int64)
    if len(material_ids) != len(faces):
        material_ids = np.zeros(len(faces), dtype=np.int64)
    material_ids = np.where((material_ids >= 0) & (material_ids < len(palette)), material_ids, 0)
    # a vertex shared by faces of two materials is split, so each vertex has one colour
    key = faces * len(palette) + material_ids[:, None]
    unique, inverse = np.unique(key.reshape(-1), return_inverse=True)
    return ElementMesh(
        int(shape.id),
        vertices[unique // len(palette)],
        inverse.reshape(-1, 3).astype(np.uint32),
        palette[unique % len(palette)],
    )


def iterate_meshes(model: ifcopenshell.file, products: list[Any]) -> Iterator[ElementMesh]:
    """Tessellated elements, one at a time, from ifcopenshell's multi-core iterator."""
    with_shape = [p for p in products if getattr(p, "Representation", None) is not None]
    if not with_shape:
        return
    settings = ifcopenshell.geom.settings()
    settings.set("use-world-coords", True)
    settings.set("apply-default-materials", True)
    iterator = ifcopenshell.geom.iterator(settings, model, multiprocessing.cpu_count(), include=with_shape)
    if not iterator.initialize():
        return
    while True:
        mesh = _element_mesh(iterator.get())
        if mesh is not None:
            yield mesh
        if not iterator.next():
            break


# ----- the spool ---------------------------------------------------------------------------------
@dataclass
class _Spool:
    """Element geometry appended to files on disk, with per-element bookkeeping in memory."""

    folder: Path
    vertex_count: int = 0
    triangle_count: int = 0
    elements: list[tuple[int, int, int, str]] = field(default_factory=list)  # (id, vertices, triangles, digest)
    low: np.ndarray = field(default_factory=lambda: np.full(3, np.inf))
    high: np.ndarray = field(default_factory=lambda: np.full(3, -np.inf))

    def __post_init__(self) -> None:
        self.files = {name: open(self.folder / name, "wb") for name in ("positions", "colors", "indices")}  # noqa: SIM115

    def add(self, mesh: ElementMesh, enu: np.ndarray, global_id: str) -> str:
        digest = hashlib.sha1(global_id.encode())
        digest.update(np.round(enu * 1000).astype(np.int64).tobytes())
        digest.update(mesh.triangles.tobytes())
        digest.update(mesh.colors.tobytes())
        key = digest.hexdigest()[:20]
        self.files["positions"].write(enu.astype(np.float64).tobytes())
        self.files["colors"].write(mesh.colors.tobytes())
        self.files["indices"].write((mesh.triangles + self.vertex_count).astype(np.uint32).tobytes())
        self.elements.append((mesh.element_id, len(enu), len(mesh.triangles), key))
        self.vertex_count += len(enu)
        self.triangle_count += len(mesh.triangles)
        self.low = np.minimum(self.low, enu.min(axis=0))
        self.high = np.maximum(self.high, enu.max(axis=0))
        return key

    def finish(self, target: Path, anchor: tuple[float, float, float]) -> None:
        """Write the npz (documented in the module docstring), converting positions chunk by chunk."""
        for handle in self.files.values():
            handle.close()
        centre = (self.low + self.high) / 2.0
        source = np.memmap(self.folder / "positions", dtype=np.float64, mode="r", shape=(self.vertex_count, 3))
        relative = np.memmap(self.folder / "relative", dtype=np.float32, mode="w+", shape=(self.vertex_count, 3))
        for start in range(0, self.vertex_count, 1 << 20):
            relative[start : start + (1 << 20)] = source[start : start + (1 << 20)] - centre
        relative.flush()
        counts = np.array([(v, t) for _, v, t, _ in self.elements], dtype=np.int64).reshape(-1, 2)
        np.savez(
            target,
            positions=relative,
            colors=np.memmap(self.folder / "colors", dtype=np.uint8, mode="r", shape=(self.vertex_count, 4)),
            indices=np.memmap(self.folder / "indices", dtype=np.uint32, mode="r", shape=(self.triangle_count, 3)),
            vertex_start=np.concatenate([[0], np.cumsum(counts[:, 0])]),
            triangle_start=np.concatenate([[0], np.cumsum(counts[:, 1])]),
            digests=np.array([d for *_, d in self.elements], dtype="U20"),
            anchor=np.asarray(anchor, dtype=np.float64),
            centre=centre,
        )
        del source, relative


@dataclass
class _Placed:
    """Per-element results of placing a batch on the Earth."""

    digest: str
    footprint: shapely.Geometry
    z_min: float
    z_max: float


def _place_batch(
    batch: list[ElementMesh], georef: Georeference, project_crs: str, spool: _Spool, ids: dict[int, str]
) -> dict[int, _Placed]:
    """One pyproj pass for many small elements: ENU for the mesh, project CRS for the footprint."""
    xyz = np.concatenate([m.vertices for m in batch])
    lon, lat, height = georef.to_geodetic(xyz)
    if georef.map_crs is not None and crs_mod.parse_crs(georef.map_crs) == crs_mod.parse_crs(project_crs):
        plane = georef.to_map(xyz)[:, :2]
    else:
        x, y = crs_mod.transform_points(crs_mod.CRS84, project_crs, lon, lat)
        plane = np.column_stack([x, y])
    if not np.isfinite(plane).all():
        raise InvalidInput(f"the model lands outside the area of the project CRS {project_crs}")
    enu = crs_mod.geodetic_to_enu(lon, lat, height, georef.anchor)
    out: dict[int, _Placed] = {}
    start = 0
    for mesh in batch:
        end = start + len(mesh.vertices)
        digest = spool.add(mesh, enu[start:end], ids[mesh.element_id])
        hull = shapely.convex_hull(shapely.multipoints(plane[start:end]))
        if not isinstance(hull, shapely.Polygon) or hull.area < MIN_FOOTPRINT**2:
            hull = hull.buffer(MIN_FOOTPRINT, quad_segs=2)
        out[mesh.element_id] = _Placed(digest, hull, float(height[start:end].min()), float(height[start:end].max()))
        start = end
    return out


def layer_id_for(path: Path, layer_id: str | None) -> str:
    return prefixed_layer_id(Path(path).stem, "bim", layer_id)


def ingest_ifc(
    store: Store,
    path: Path,
    *,
    layer_id: str | None = None,
    source_crs: str | None = None,
    at: tuple[float, float, float] | None = None,
    scenario: Scenario | str = Scenario.current,
    valid_from: datetime | None = None,
    title: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> WriteReport:
    """Read, tessellate, place and store an IFC model as a new edition of a BIM layer (atomic)."""
    model = open_model(path)
    target = layer_id_for(path, layer_id)
    georef = find_georeference(model, at=at, crs_override=source_crs)
    products = elements(model)
    if not products:
        raise InvalidInput(f"{Path(path).name}: the model has no elements (IfcElement)")
    ids = {p.id(): p.GlobalId for p in products}
    placed: dict[int, _Placed] = {}
    Path(store.data_dir).mkdir(parents=True, exist_ok=True)  # a PostGIS twin's folder may not exist yet
    with tempfile.TemporaryDirectory(dir=store.data_dir, prefix=".ifc-") as tmp:
        spool = _Spool(Path(tmp))
        batch: list[ElementMesh] = []
        size = 0
        for mesh in iterate_meshes(model, products):
            if mesh.element_id not in ids:
                continue
            batch.append(mesh)
            size += len(mesh.vertices)
            if size >= BATCH_VERTICES:
                placed.update(_place_batch(batch, georef, store.crs, spool, ids))
                if progress is not None:
                    progress(len(placed), len(products))
                batch, size = [], 0
        if batch:
            placed.update(_place_batch(batch, georef, store.crs, spool, ids))
        if not placed:
            raise InvalidInput(f"{Path(path).name}: no element has geometry that can be tessellated")
        mesh_file = Path(tmp) / "mesh.npz"
        spool.finish(mesh_file, georef.anchor)
        features = list(_features(products, placed))
        key = store.assets.put_file(mesh_file, ".npz")
    previous = _previous_meshes(store, target)
    layer = Layer(
        id=target,
        kind=LayerKind.bim,
        title=title or target.replace("_", " "),
        scenario=scenario,
        source=Path(path).name,
        source_crs=georef.map_crs,
        geometry_type="Polygon",
        schema={"GlobalId": "text", "class": "text", "name": "text", "storey": "text"},
        metadata={
            "bim": {
                "meshes": [key, *[k for k in previous if k != key]],
                "schema": getattr(model, "schema_identifier", model.schema),
                "georeference": georef.describe(),
                "elements": len(products),
                "elements_with_geometry": len(placed),
                "triangles": spool.triangle_count,
            }
        },
    )
    return store.write_features(layer, features, valid_from=valid_from, mode=WriteMode.replace)


def _features(products: list[Any], placed: dict[int, _Placed]) -> Iterator[FeatureInput]:
    seen: set[str] = set()
    for product in products:
        properties = element_properties(product)
        fid = product.GlobalId or f"step{product.id()}"
        if fid in seen:  # duplicate GlobalIds exist in the wild; keep both elements
            fid = f"{fid}_{product.id()}"
        seen.add(fid)
        where = placed.get(product.id())
        if where is not None:
            properties.update(mesh=where.digest, z_min=round(where.z_min, 3), z_max=round(where.z_max, 3))
        yield FeatureInput(fid, where.footprint if where is not None else None, properties)


def _previous_meshes(store: Store, layer_id: str) -> list[str]:
    """Mesh assets of earlier editions, so past versions of elements can still be drawn."""
    try:
        layer = store.get_layer(layer_id)
    except NotFound:
        return []
    if layer.kind != LayerKind.bim:
        raise InvalidInput(f"layer {layer_id!r} exists and is a {layer.kind.value} layer, not a BIM layer")
    return list(layer.metadata.get("bim", {}).get("meshes", []))
