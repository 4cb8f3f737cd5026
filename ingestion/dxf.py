"""DXF topographic maps (the usual delivery of Chinese 1:500 surveys) into basemap layers.

Layer names are feature codes (JMD buildings, DLSS roads, SXSS water, GCD spot heights, ...);
a mapping file (`styles/dxf_mapping.json` by default) sends each DXF layer to a feature class,
and each class becomes the twin layer `<class>_<scale>` (`buildings_500`), so the basemap
composite shows it in its band's zoom range. Curves (arcs, bulges, circles, splines) are
flattened to 1 cm; closed outlines of polygon classes become polygons; texts and block
references become points carrying their text or block name.

A drawing is one map sheet: its features are keyed `<sheet>/<DXF handle>`, a new edition of the
same sheet closes the features of that sheet it no longer has and leaves other sheets alone.
Everything is read and checked before anything is written.
"""

from __future__ import annotations

import fnmatch
import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import shapely

from ingestion.vector import _check_extent, geometry_type
from twin.crs import crs_code, parse_crs, transform_geometries
from twin.model import (
    SCALE_BANDS,
    FeatureInput,
    InvalidInput,
    Layer,
    LayerKind,
    NotFound,
    Scenario,
    WriteReport,
    check_layer_id,
    now_utc,
)
from twin.store import Store, WriteMode

DEFAULT_MAPPING = Path(__file__).resolve().parents[1] / "styles" / "dxf_mapping.json"
BAND_SUFFIX = {"1:500": "500", "1:2000": "2000", "1:10000": "10000"}
FLATTEN_DISTANCE = 0.01  # metres: far below what a 1:500 survey resolves
CURVES = frozenset({"LWPOLYLINE", "POLYLINE", "LINE", "ARC", "CIRCLE", "ELLIPSE", "SPLINE"})
MARKERS = frozenset({"POINT", "INSERT", "TEXT", "MTEXT"})
GEOMETRY_KINDS = ("point", "line", "polygon", "any")


@dataclass
class Mapping:
    """DXF layer name -> feature class, from the mapping file."""

    classes: dict[str, dict[str, Any]]
    layers: dict[str, str]
    ignore: set[str]

    @classmethod
    def load(cls, path: Path | None) -> Mapping:
        source = Path(path) if path is not None else DEFAULT_MAPPING
        try:
            data = json.loads(source.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise NotFound(f"{source}: no such mapping file") from exc
        except (OSError, ValueError) as exc:
            raise InvalidInput(f"{source}: not a readable JSON mapping file ({exc})") from exc
        if not isinstance(data, dict) or not isinstance(data.get("layers"), dict):
            raise InvalidInput(f"{source}: a mapping needs a 'layers' object (DXF layer -> class)")
        classes = data.get("classes") or {}
        for name in set(data["layers"].values()):
            check_layer_id(name)
            kind = (classes.get(name) or {}).get("geometry", "any")
            if kind not in GEOMETRY_KINDS:
                raise InvalidInput(f"{source}: class {name!r} has geometry {kind!r}; use {', '.join(GEOMETRY_KINDS)}")
        layers = {str(k).upper(): str(v) for k, v in data["layers"].items()}
        return cls(classes, layers, {str(n).upper() for n in data.get("ignore", [])})

    def feature_class(self, dxf_layer: str) -> str | None:
        """The class of a DXF layer: exact name first, then the first matching pattern."""
        name = dxf_layer.upper()
        if name in self.layers:
            return self.layers[name]
        for pattern, target in self.layers.items():
            if any(c in pattern for c in "*?[") and fnmatch.fnmatchcase(name, pattern):
                return target
        return None

    def geometry(self, feature_class: str) -> str:
        return (self.classes.get(feature_class) or {}).get("geometry", "any")


@dataclass
class DxfSheet:
    """What a drawing holds, grouped by feature class, in the source CRS."""

    sheet: str
    features: dict[str, list[tuple[str, Any, dict[str, Any]]]] = field(default_factory=dict)
    skipped_layers: Counter = field(default_factory=Counter)
    skipped_entities: Counter = field(default_factory=Counter)


def read_dxf(path: Path, mapping: Mapping, sheet: str | None = None) -> DxfSheet:
    """Read a DXF file's model space into features per class (nothing is written)."""
    import ezdxf
    from ezdxf.lldxf.const import DXFError

    path = Path(path)
    if not path.is_file():
        raise NotFound(f"{path}: no such file")
    try:
        doc = ezdxf.readfile(path)
    except (DXFError, OSError, UnicodeDecodeError, ValueError, IndexError) as exc:
        raise InvalidInput(f"{path}: not a readable DXF file ({str(exc).strip() or type(exc).__name__})") from exc
    result = DxfSheet(sheet or path.stem)
    for entity in doc.modelspace():
        layer = str(entity.dxf.get("layer", "0"))
        target = mapping.feature_class(layer)
        if target is None:
            if layer.upper() not in mapping.ignore:
                result.skipped_layers[layer] += 1
            continue
        geometry = _geometry(entity, mapping.geometry(target))
        if geometry is None:
            result.skipped_entities[entity.dxftype()] += 1
            continue
        fid = f"{result.sheet}/{entity.dxf.handle}"
        result.features.setdefault(target, []).append((fid, geometry, _properties(entity, layer, result.sheet)))
    return result


def _geometry(entity: Any, kind: str) -> shapely.Geometry | None:
    dxftype = entity.dxftype()
    if dxftype in MARKERS:
        location = entity.dxf.get("insert") if dxftype != "POINT" else entity.dxf.get("location")
        if location is None:
            return None
        return (
            shapely.Point(location.x, location.y, location.z) if location.z else shapely.Point(location.x, location.y)
        )
    if dxftype not in CURVES:
        return None
    from ezdxf import path as dxf_path

    try:
        points = [(v.x, v.y, v.z) for v in dxf_path.make_path(entity).flattening(FLATTEN_DISTANCE)]
    except (TypeError, ValueError):
        return None
    if len(points) < 2:
        return None
    flat = not any(p[2] for p in points)
    coords = [(x, y) for x, y, _ in points] if flat else points
    closed = _is_closed(entity, dxftype) or (len(coords) > 3 and coords[0] == coords[-1])
    if closed and kind in ("polygon", "any") and len(coords) >= 3:
        polygon = shapely.Polygon(coords)
        if not polygon.is_valid:
            polygon = shapely.make_valid(polygon)
        if not polygon.is_empty and polygon.area > 0:
            return polygon
    if kind == "point":
        return shapely.Point(coords[0])
    return shapely.LineString(coords)


def _is_closed(entity: Any, dxftype: str) -> bool:
    if dxftype == "LWPOLYLINE":
        return bool(entity.closed)
    if dxftype == "POLYLINE":
        return bool(entity.is_closed)
    return dxftype in ("CIRCLE", "ELLIPSE") or (dxftype == "SPLINE" and bool(entity.closed))


def _properties(entity: Any, layer: str, sheet: str) -> dict[str, Any]:
    dxftype = entity.dxftype()
    props: dict[str, Any] = {"dxf_layer": layer, "entity": dxftype, "sheet": sheet, "handle": entity.dxf.handle}
    color = entity.dxf.get("color")
    if color is not None and color not in (0, 256):  # BYBLOCK / BYLAYER say nothing of their own
        props["color"] = int(color)
    elevation = _elevation(entity, dxftype)
    if elevation is not None:
        props["elevation"] = round(elevation, 3)
    if dxftype == "TEXT":
        props["text"] = entity.dxf.get("text", "")
    elif dxftype == "MTEXT":
        props["text"] = entity.plain_text()
    elif dxftype == "INSERT":
        props["block"] = entity.dxf.get("name", "")
    code = _feature_code(entity)
    if code is not None:
        props["code"] = code
    return props


def _elevation(entity: Any, dxftype: str) -> float | None:
    """A contour's or spot height's elevation: the entity's own elevation or its first z."""
    if dxftype == "LWPOLYLINE":
        value = entity.dxf.get("elevation")
        return float(value) if value else None
    if dxftype in MARKERS:
        location = entity.dxf.get("insert") if dxftype != "POINT" else entity.dxf.get("location")
        return float(location.z) if location is not None and location.z else None
    if dxftype == "POLYLINE":
        first = next(iter(entity.points()), None)
        return float(first.z) if first is not None and first.z else None
    return None


def _feature_code(entity: Any) -> str | None:
    """A feature code kept in extended data (CASS writes one under its own application name)."""
    xdata = getattr(entity, "xdata", None)
    if not xdata:
        return None
    for app in xdata.data:
        for tag in xdata.get(app):
            if tag.code in (1000, 1070, 1071) and str(tag.value).strip():
                return str(tag.value).strip()
    return None


def ingest_dxf(
    store: Store,
    path: Path,
    *,
    scale_band: str = "1:500",
    source_crs: str | None = None,
    mapping_path: Path | None = None,
    scenario: Scenario | str = Scenario.current,
    valid_from: datetime | None = None,
    sheet: str | None = None,
) -> dict[str, Any]:
    """Read, check, then write one layer per feature class; returns what was written and skipped."""
    if scale_band not in SCALE_BANDS:
        raise InvalidInput(f"invalid scale {scale_band!r}; expected one of {', '.join(SCALE_BANDS)}")
    mapping = Mapping.load(mapping_path)
    drawing = read_dxf(path, mapping, sheet)
    if not drawing.features:
        raise InvalidInput(
            f"{path}: no entity on a mapped layer (layers found: {', '.join(sorted(drawing.skipped_layers)) or 'none'})"
        )
    crs = crs_code(parse_crs(source_crs)) if source_crs else store.crs
    start = valid_from if valid_from is not None else now_utc()
    plans = []
    for feature_class, rows in sorted(drawing.features.items()):
        geoms = np.array([geom for _, geom, _ in rows], dtype=object)
        _check_extent(geoms, crs, store.crs, Path(path))
        projected = transform_geometries(geoms, crs, store.crs)
        layer_id = check_layer_id(f"{feature_class}_{BAND_SUFFIX[scale_band]}")
        layer = Layer(
            id=layer_id,
            kind=LayerKind.vector,
            title=(mapping.classes.get(feature_class) or {}).get("title", feature_class) + f" {scale_band}",
            scale_band=scale_band,
            scenario=scenario,
            source=Path(path).name,
            source_crs=crs,
            geometry_type=geometry_type(projected),
        )
        features = [FeatureInput(fid, g, props) for (fid, _, props), g in zip(rows, projected, strict=True)]
        plans.append((layer, features))
    reports = [_write_sheet(store, layer, features, drawing.sheet, start) for layer, features in plans]
    return {
        "sheet": drawing.sheet,
        "layers": [report.as_dict() for report in reports],
        "skipped_layers": dict(drawing.skipped_layers),
        "skipped_entities": dict(drawing.skipped_entities),
    }


def _write_sheet(store: Store, layer: Layer, features: list[FeatureInput], sheet: str, start: datetime) -> WriteReport:
    """Upsert this sheet's features, then close the ones of this sheet that the edition dropped."""
    existing = {known.id for known in store.list_layers()}
    report = store.write_features(layer, features, valid_from=start, mode=WriteMode.upsert)
    if layer.id in existing:
        given = {f.fid for f in features}
        old = store.query(layer.id, filters={"sheet": sheet}, limit=None).features
        gone = [f.fid for f in old if f.fid not in given]
        if gone:
            report.closed = store.close_features(layer.id, gone, at=start)
            report.layer_version = store.get_layer(layer.id).version
    return report
