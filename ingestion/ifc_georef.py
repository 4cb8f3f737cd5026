"""Where an IFC model stands on the Earth: its georeferencing, found in the order DESIGN.md gives.

1. IfcMapConversion (+ IfcProjectedCRS) or IfcRigidOperation (IFC4, IFC4X3);
2. the EPset_MapConversion / EPset_ProjectedCRS property sets (the IFC2x3 convention);
3. IfcSite RefLatitude / RefLongitude / RefElevation, turned by the context's TrueNorth;
4. the position the user gives (`--at lon,lat,h`);
otherwise a clear error: a model placed by guess would land in the ocean.

A `Georeference` maps the geometry iterator's world coordinates (metres, project axes) to
longitude, latitude and height, to east-north-up metres around an anchor (the frame BIM tiles are
written in) and to the project CRS (for footprints). Heights are taken as the store's
orthometric heights. The map conversion's `Scale` is checked against the project's length unit:
files disagree on whether it includes the unit conversion (buildingSMART's own samples give
1000 for millimetres), so a scale that is not a plausible grid factor is replaced by the plain
unit conversion and the replacement is recorded in `notes`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import ifcopenshell
import ifcopenshell.util.element
import ifcopenshell.util.placement
import ifcopenshell.util.unit
import numpy as np

from twin import crs as crs_mod
from twin.model import InvalidInput

PLAUSIBLE_SCALE = (0.9, 1.1)  # grid scale factors stay within a few parts per thousand
MAP_CONVERSION_PSETS = ("epset_mapconversion",)
PROJECTED_CRS_PSETS = ("epset_projectedcrs",)


@dataclass(frozen=True)
class Georeference:
    """Local model coordinates (metres) to the Earth, by one of the methods above.

    Projected methods (`map_crs` set): E = E0 + s (cos·x − sin·y), N = N0 + s (sin·x + cos·y),
    H = H0 + s_z·z in the map CRS. Geographic methods (`map_crs` None): east-north-up metres
    around `anchor` after the same rotation.
    """

    method: str
    anchor: tuple[float, float, float]
    map_crs: str | None = None
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    rotation: tuple[float, float] = (1.0, 0.0)
    scale: float = 1.0
    vertical_scale: float = 1.0
    local_origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    wcs_inverse: tuple[float, ...] | None = None
    notes: list[str] = field(default_factory=list)

    def _local(self, xyz: np.ndarray) -> np.ndarray:
        points = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
        if self.wcs_inverse is not None:
            matrix = np.asarray(self.wcs_inverse).reshape(4, 4)
            points = points @ matrix[:3, :3].T + matrix[:3, 3]
        return points - np.asarray(self.local_origin)

    def _rotated(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        c, s = self.rotation
        x = self.scale * (c * points[:, 0] - s * points[:, 1])
        y = self.scale * (s * points[:, 0] + c * points[:, 1])
        return x, y, self.vertical_scale * points[:, 2]

    def to_map(self, xyz: np.ndarray) -> np.ndarray:
        """Map-CRS eastings, northings, heights (projected methods only)."""
        if self.map_crs is None:
            raise ValueError("a geographic georeference has no map CRS")
        dx, dy, dz = self._rotated(self._local(xyz))
        return np.column_stack([dx + self.origin[0], dy + self.origin[1], dz + self.origin[2]])

    def to_geodetic(self, xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Longitude, latitude (degrees) and orthometric height of model points."""
        if self.map_crs is not None:
            enh = self.to_map(xyz)
            lon, lat = crs_mod.transform_points(self.map_crs, crs_mod.CRS84, enh[:, 0], enh[:, 1])
            return np.asarray(lon), np.asarray(lat), enh[:, 2]
        lon, lat, h = crs_mod.enu_to_geodetic(np.column_stack(self._rotated(self._local(xyz))), self.anchor)
        return np.asarray(lon), np.asarray(lat), np.asarray(h)

    def to_enu(self, xyz: np.ndarray) -> np.ndarray:
        """East-north-up metres around `anchor` (heights as orthometric differences)."""
        if self.map_crs is None:
            return np.column_stack(self._rotated(self._local(xyz)))
        lon, lat, h = self.to_geodetic(xyz)
        return crs_mod.geodetic_to_enu(lon, lat, h, self.anchor)

    def describe(self) -> dict[str, Any]:
        """What the layer metadata records about the placement."""
        out: dict[str, Any] = {"method": self.method, "anchor": list(self.anchor)}
        if self.map_crs is not None:
            out.update(map_crs=self.map_crs, origin=list(self.origin))
        out.update(rotation=list(self.rotation), scale=self.scale, vertical_scale=self.vertical_scale)
        if self.notes:
            out["notes"] = list(self.notes)
        return out


# ----- reading the file ------------------------------------------------------------------------
def find_georeference(
    model: ifcopenshell.file,
    at: tuple[float, float, float] | None = None,
    crs_override: str | None = None,
) -> Georeference:
    """The model's georeference by the first method that applies (see the module docstring)."""
    unit = ifcopenshell.util.unit.calculate_unit_scale(model)  # metres per project length unit
    wcs = _wcs_inverse(model)
    found = _coordinate_operation(model, unit, crs_override) if model.schema != "IFC2X3" else None
    if found is None:
        found = _map_conversion_psets(model, unit, crs_override)
    if found is None:
        found = _site_reference(model, unit)
    if found is None and at is not None:
        lon, lat, h = at
        _check_lonlat(lon, lat, "--at")
        found = Georeference("user position (--at)", (lon, lat, h), rotation=_true_north_rotation(model))
    if found is None:
        raise InvalidInput(
            "the IFC file has no georeferencing (no IfcMapConversion, IfcRigidOperation, EPset_MapConversion "
            "or IfcSite RefLatitude/RefLongitude): give its position with --at lon,lat,height"
        )
    if at is not None and not found.method.startswith("user"):
        found.notes.append(f"--at ignored: the file is georeferenced by {found.method}")
    if wcs is not None:
        found = Georeference(**{**found.__dict__, "wcs_inverse": wcs})
    return found


def _wcs_inverse(model: ifcopenshell.file) -> tuple[float, ...] | None:
    """Inverse of the model context's world coordinate system when it is not the identity."""
    for context in model.by_type("IfcGeometricRepresentationContext", include_subtypes=False):
        if context.ContextType == "Model" and context.WorldCoordinateSystem is not None:
            placement = context.WorldCoordinateSystem
            if placement.is_a("IfcAxis2Placement3D"):
                matrix = ifcopenshell.util.placement.get_axis2placement(placement)
                matrix[:3, 3] *= ifcopenshell.util.unit.calculate_unit_scale(model)
                if not np.allclose(matrix, np.eye(4)):
                    return tuple(np.linalg.inv(matrix).reshape(-1).tolist())
    return None


def _map_crs(name: str | None, crs_override: str | None, where: str) -> str:
    """The horizontal projected CRS named by the file (or by --crs, which wins)."""
    text = crs_override or name
    if not text:
        raise InvalidInput(f"{where} names no CRS: give the map CRS with --crs EPSG:xxxx")
    try:
        code = crs_mod.horizontal_crs(text)
    except InvalidInput as exc:
        raise InvalidInput(f"{where} names CRS {text!r}, which is unknown: give it with --crs EPSG:xxxx") from exc
    if not crs_mod.parse_crs(code).is_projected:
        raise InvalidInput(f"{where} names CRS {text!r}, which is not projected; a map conversion needs one")
    return code


def _map_unit(code: str) -> float:
    """Metres per map unit of a projected CRS."""
    return float(crs_mod.parse_crs(code).axis_info[0].unit_conversion_factor)


def _scale(scale: float | None, unit: float, map_unit: float, notes: list[str]) -> float:
    """Map units per model metre; an implausible file scale falls back to the unit conversion."""
    given = 1.0 if scale in (None, 0) else float(scale)
    metres_per_metre = given * map_unit / unit
    if PLAUSIBLE_SCALE[0] <= metres_per_metre <= PLAUSIBLE_SCALE[1]:
        return given / unit
    notes.append(
        f"map conversion Scale {given:g} does not fit the project length unit ({unit:g} m) and map unit "
        f"({map_unit:g} m): used the unit conversion instead"
    )
    return 1.0 / map_unit


def _rotation(abscissa: float | None, ordinate: float | None) -> tuple[float, float]:
    a = 1.0 if abscissa is None else float(abscissa)
    b = 0.0 if ordinate is None else float(ordinate)
    length = math.hypot(a, b)
    return (1.0, 0.0) if length == 0 else (a / length, b / length)


def _projected(
    method: str,
    code: str,
    origin: tuple[float, float, float],
    rotation: tuple[float, float],
    scale: float,
    vertical_scale: float,
    notes: list[str],
) -> Georeference:
    lon, lat = crs_mod.transform_points(code, crs_mod.CRS84, [origin[0]], [origin[1]])
    if not np.isfinite([lon[0], lat[0]]).all():
        raise InvalidInput(f"{method}: origin {origin[:2]} cannot be placed in {code}")
    _check_lonlat(float(lon[0]), float(lat[0]), method)
    if not crs_mod.within_area_of_use(code, lon, lat, margin=1.0)[0]:
        notes.append(f"origin lies outside the area of use of {code}")
    anchor = (float(lon[0]), float(lat[0]), float(origin[2]))
    return Georeference(method, anchor, code, origin, rotation, scale, vertical_scale, notes=notes)


def _coordinate_operation(model: ifcopenshell.file, unit: float, crs_override: str | None) -> Georeference | None:
    operations = [op for op in model.by_type("IfcCoordinateOperation") if op.is_a() != "IfcCoordinateOperation"]
    if not operations:
        return None
    op = sorted(operations, key=lambda o: _is_model_context(o.SourceCRS), reverse=True)[0]
    target = op.TargetCRS
    notes: list[str] = []
    if op.is_a("IfcMapConversion"):
        code = _map_crs(getattr(target, "Name", None), crs_override, op.is_a())
        scale = _scale(op.Scale, unit, _map_unit(code), notes)
        factors = [getattr(op, name, None) or 1.0 for name in ("FactorX", "FactorY", "FactorZ")]
        origin = (float(op.Eastings), float(op.Northings), float(op.OrthogonalHeight or 0.0))
        return _projected(
            op.is_a(),
            code,
            origin,
            _rotation(op.XAxisAbscissa, op.XAxisOrdinate),
            scale * factors[0],
            scale * _map_unit(code) * factors[2],
            notes,
        )
    if op.is_a("IfcRigidOperation"):
        first, second = _measure(op.FirstCoordinate), _measure(op.SecondCoordinate)
        height = float(op.Height or 0.0)
        if target is not None and target.is_a("IfcProjectedCRS"):
            code = _map_crs(target.Name, crs_override, "IfcRigidOperation")
            return _projected(
                "IfcRigidOperation", code, (first, second, height), (1.0, 0.0), 1.0 / _map_unit(code), 1.0, notes
            )
        angle = _angle_unit(target)
        lon, lat = first * angle, second * angle
        _check_lonlat(lon, lat, "IfcRigidOperation")
        return Georeference("IfcRigidOperation (geographic)", (lon, lat, height), notes=notes)
    return None


def _is_model_context(context: Any) -> bool:
    return context is not None and context.is_a("IfcGeometricRepresentationContext") and context.ContextType == "Model"


def _measure(value: Any) -> float:
    return float(value.wrappedValue if hasattr(value, "wrappedValue") else value)


def _angle_unit(target: Any) -> float:
    """Degrees per unit of a geographic CRS's angles (IFC4X3 IfcGeographicCRS.AngleUnit); degrees by default."""
    unit = getattr(target, "AngleUnit", None) if target is not None else None
    if unit is None:
        return 1.0
    if unit.is_a("IfcSIUnit"):
        return math.degrees(1.0) * ifcopenshell.util.unit.get_prefix_multiplier(unit.Prefix)
    if unit.is_a("IfcConversionBasedUnit"):
        factor = unit.ConversionFactor.ValueComponent.wrappedValue  # in radians
        return math.degrees(float(factor))
    return 1.0


def _property_set(model: ifcopenshell.file, names: tuple[str, ...]) -> dict[str, Any] | None:
    """A property set by case-insensitive name on the project or the site (files put it on either)."""
    for product in [*model.by_type("IfcProject"), *model.by_type("IfcSite")]:
        for name, values in ifcopenshell.util.element.get_psets(product).items():
            if name.lower() in names:
                return values
    return None


def _map_conversion_psets(model: ifcopenshell.file, unit: float, crs_override: str | None) -> Georeference | None:
    conversion = _property_set(model, MAP_CONVERSION_PSETS)
    if not conversion or "Eastings" not in conversion or "Northings" not in conversion:
        return None
    projected = _property_set(model, PROJECTED_CRS_PSETS) or {}
    code = _map_crs(projected.get("Name"), crs_override, "EPset_ProjectedCRS")
    notes: list[str] = []
    scale = _scale(conversion.get("Scale"), unit, _map_unit(code), notes)
    origin = (
        float(conversion["Eastings"]),
        float(conversion["Northings"]),
        float(conversion.get("OrthogonalHeight") or 0.0),
    )
    rotation = _rotation(conversion.get("XAxisAbscissa"), conversion.get("XAxisOrdinate"))
    return _projected("EPset_MapConversion", code, origin, rotation, scale, scale * _map_unit(code), notes)


def _compound_degrees(value: Any) -> float | None:
    if not value:
        return None
    parts = list(value) + [0] * (4 - len(value))
    degrees, minutes, seconds, micro = (float(p) for p in parts[:4])
    return degrees + minutes / 60.0 + seconds / 3600.0 + micro / 3.6e9


def _site_reference(model: ifcopenshell.file, unit: float) -> Georeference | None:
    for site in model.by_type("IfcSite"):
        lat, lon = _compound_degrees(site.RefLatitude), _compound_degrees(site.RefLongitude)
        if lat is None or lon is None or (lat == 0 and lon == 0):
            continue
        _check_lonlat(lon, lat, "IfcSite RefLatitude/RefLongitude")
        origin = (0.0, 0.0, 0.0)
        if site.ObjectPlacement is not None:
            matrix = ifcopenshell.util.placement.get_local_placement(site.ObjectPlacement)
            origin = tuple(float(v) * unit for v in matrix[:3, 3])
        height = float(site.RefElevation or 0.0) * unit
        return Georeference(
            "IfcSite reference point",
            (lon, lat, height),
            rotation=_true_north_rotation(model),
            local_origin=origin,
            notes=["placed by IfcSite's reference latitude/longitude (accuracy depends on the file)"],
        )
    return None


def _true_north_rotation(model: ifcopenshell.file) -> tuple[float, float]:
    """(cos, sin) of the rotation that turns the model's TrueNorth direction onto north."""
    for context in model.by_type("IfcGeometricRepresentationContext", include_subtypes=False):
        north = context.TrueNorth
        if context.ContextType == "Model" and north is not None:
            x, y = (float(v) for v in north.DirectionRatios[:2])
            angle = math.atan2(x, y)
            return (math.cos(angle), math.sin(angle))
    return (1.0, 0.0)


def _check_lonlat(lon: float, lat: float, where: str) -> None:
    if not (-180.0 <= lon <= 180.0 and -90.0 <= lat <= 90.0) or not math.isfinite(lon + lat):
        raise InvalidInput(f"{where}: position lon={lon}, lat={lat} is not on the Earth")


def parse_position(text: str | None) -> tuple[float, float, float] | None:
    """`--at lon,lat[,h]` as numbers; InvalidInput when malformed."""
    if text is None or not text.strip():
        return None
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError as exc:
        raise InvalidInput(f"invalid --at {text!r}: expected lon,lat,height in degrees and metres") from exc
    if len(values) not in (2, 3):
        raise InvalidInput(f"invalid --at {text!r}: expected lon,lat,height in degrees and metres")
    lon, lat, h = values[0], values[1], values[2] if len(values) == 3 else 0.0
    _check_lonlat(lon, lat, "--at")
    return (lon, lat, h)
