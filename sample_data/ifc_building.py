"""A small IFC4 building (three storeys) georeferenced onto a named parcel of the district.

Built with ifcopenshell.api: project, site, building, storeys, walls with window and door
openings, floor slabs, a roof, property sets, and IfcMapConversion + IfcProjectedCRS
(EPSG:4549) so that a reader places it on the parcel and not in the ocean. GlobalIds and the
header timestamp are derived from the seed, so the file is reproducible too.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import ifcopenshell
import ifcopenshell.api.aggregate
import ifcopenshell.api.context
import ifcopenshell.api.feature
import ifcopenshell.api.geometry
import ifcopenshell.api.georeference
import ifcopenshell.api.project
import ifcopenshell.api.pset
import ifcopenshell.api.root
import ifcopenshell.api.spatial
import ifcopenshell.api.unit
import ifcopenshell.guid
import numpy as np
import shapely

from .frame import CRS, VALID_PLANNED, to_lonlat
from .layout import Layout, parcel_frame
from .terrain import Terrain

LENGTH = 30.0
WIDTH = 16.0
STOREY = 3.6
N_STOREYS = 3
WALL = 0.3
PLINTH = 0.3


def _dms(value: float) -> tuple[int, int, int, int]:
    """Decimal degrees to IfcCompoundPlaneAngleMeasure (deg, min, sec, millionths)."""
    sign = -1 if value < 0 else 1
    v = abs(value)
    d = int(v)
    m = int((v - d) * 60)
    s = (v - d - m / 60.0) * 3600.0
    si = int(s)
    micro = int(round((s - si) * 1e6))
    if micro == 1_000_000:
        si, micro = si + 1, 0
    return (sign * d, sign * m, sign * si, sign * micro)


def _placement(x: float, y: float, z: float, angle: float = 0.0) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    m = np.eye(4)
    m[:3, :3] = [[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]
    m[:3, 3] = [x, y, z]
    return m


def site_parameters(layout: Layout, terrain: Terrain) -> dict:
    """Where the building goes: the map-conversion origin (building corner), rotation and height."""
    p = layout.facilities["ifc"]
    origin, eu, en, rect = parcel_frame(layout.parcels.quad[p : p + 1], 8.0)
    sc = (rect[0, 0] + rect[0, 1]) / 2.0
    tc = (rect[0, 2] + rect[0, 3]) / 2.0
    corner = origin[0] + (sc - LENGTH / 2.0) * eu[0] + (tc - WIDTH / 2.0) * en[0]
    centre = origin[0] + sc * eu[0] + tc * en[0]
    ground = float(terrain.elevation(np.array([centre[0]]), np.array([centre[1]]))[0])
    corner = np.round(corner, 3)
    return {
        "parcel_index": p,
        "eastings": float(corner[0]),
        "northings": float(corner[1]),
        "orthogonal_height": round(ground + PLINTH, 3),
        "x_axis_abscissa": round(float(eu[0, 0]), 9),
        "x_axis_ordinate": round(float(eu[0, 1]), 9),
        "scale": 1.0,
        "footprint_local": [[0.0, 0.0], [LENGTH, 0.0], [LENGTH, WIDTH], [0.0, WIDTH]],
    }


def footprint_world(params: dict) -> shapely.Polygon:
    """The building outline in project coordinates (for the manifest and tests)."""
    a, b = params["x_axis_abscissa"], params["x_axis_ordinate"]
    pts = np.array(params["footprint_local"])
    x = params["eastings"] + pts[:, 0] * a - pts[:, 1] * b
    y = params["northings"] + pts[:, 0] * b + pts[:, 1] * a
    return shapely.Polygon(np.column_stack([x, y]))


def write_ifc(path: Path, layout: Layout, terrain: Terrain, seed: int) -> dict:
    """Write building.ifc; returns the site parameters (what the manifest promises)."""
    params = site_parameters(layout, terrain)
    parcel_name = str(layout.parcels.name[params["parcel_index"]])
    parcel_id = str(layout.parcels.parcel_id[params["parcel_index"]])
    model = ifcopenshell.api.project.create_file(version="IFC4")
    project = ifcopenshell.api.root.create_entity(model, ifc_class="IfcProject", name="CIM Twin demo district")
    metre = ifcopenshell.api.unit.add_si_unit(model, unit_type="LENGTHUNIT")
    area = ifcopenshell.api.unit.add_si_unit(model, unit_type="AREAUNIT")
    volume = ifcopenshell.api.unit.add_si_unit(model, unit_type="VOLUMEUNIT")
    angle = ifcopenshell.api.unit.add_si_unit(model, unit_type="PLANEANGLEUNIT")
    ifcopenshell.api.unit.assign_unit(model, units=[metre, area, volume, angle])
    ctx = ifcopenshell.api.context.add_context(model, context_type="Model")
    body = ifcopenshell.api.context.add_context(
        model, context_type="Model", context_identifier="Body", target_view="MODEL_VIEW", parent=ctx
    )
    ifcopenshell.api.georeference.add_georeferencing(model, ifc_class="IfcMapConversion", name=CRS)
    ifcopenshell.api.georeference.edit_georeferencing(
        model,
        coordinate_operation={
            "Eastings": params["eastings"],
            "Northings": params["northings"],
            "OrthogonalHeight": params["orthogonal_height"],
            "XAxisAbscissa": params["x_axis_abscissa"],
            "XAxisOrdinate": params["x_axis_ordinate"],
            "Scale": 1.0,
        },
        projected_crs={
            "Name": CRS,
            "Description": "CGCS2000 / 3-degree Gauss-Kruger CM 120E",
            "GeodeticDatum": "CGCS2000",
            "VerticalDatum": "1985 National Height Datum",
            "MapProjection": "Gauss-Kruger",
            "MapZone": "CM 120E",
            "MapUnit": metre,
        },
    )
    lon, lat = to_lonlat(params["eastings"], params["northings"])
    site = ifcopenshell.api.root.create_entity(model, ifc_class="IfcSite", name=parcel_name)
    site.RefLatitude = _dms(float(lat))
    site.RefLongitude = _dms(float(lon))
    site.RefElevation = params["orthogonal_height"]
    site.LandTitleNumber = parcel_id
    building = ifcopenshell.api.root.create_entity(model, ifc_class="IfcBuilding", name="Qinhuai Community Centre")
    ifcopenshell.api.aggregate.assign_object(model, relating_object=project, products=[site])
    ifcopenshell.api.aggregate.assign_object(model, relating_object=site, products=[building])
    for obj in (site, building):
        ifcopenshell.api.geometry.edit_object_placement(model, product=obj, matrix=np.eye(4))

    pset = ifcopenshell.api.pset.add_pset(model, product=building, name="Pset_BuildingCommon")
    ifcopenshell.api.pset.edit_pset(
        model,
        pset=pset,
        properties={"YearOfConstruction": "2024", "NumberOfStoreys": N_STOREYS, "OccupancyType": "Community centre"},
    )
    cim = ifcopenshell.api.pset.add_pset(model, product=building, name="CIM_Parcel")
    ifcopenshell.api.pset.edit_pset(
        model,
        pset=cim,
        properties={"ParcelId": parcel_id, "ParcelName": parcel_name, "District": "CIM Twin demo district"},
    )

    storeys = []
    for level in range(N_STOREYS):
        storey = ifcopenshell.api.root.create_entity(
            model, ifc_class="IfcBuildingStorey", name=("Ground Floor", "First Floor", "Second Floor")[level]
        )
        storey.Elevation = level * STOREY
        ifcopenshell.api.aggregate.assign_object(model, relating_object=building, products=[storey])
        ifcopenshell.api.geometry.edit_object_placement(model, product=storey, matrix=_placement(0, 0, level * STOREY))
        storeys.append(storey)

    def element(ifc_class: str, name: str, storey, rep, matrix: np.ndarray):  # noqa: ANN001, ANN202
        el = ifcopenshell.api.root.create_entity(model, ifc_class=ifc_class, name=name)
        ifcopenshell.api.geometry.assign_representation(model, product=el, representation=rep)
        ifcopenshell.api.geometry.edit_object_placement(model, product=el, matrix=matrix)
        ifcopenshell.api.spatial.assign_container(model, relating_structure=storey, products=[el])
        return el

    # wall runs: (start x, start y, angle, length); walls sit inside the footprint
    runs = [
        (0.0, 0.0, 0.0, LENGTH),
        (LENGTH, 0.0, np.pi / 2, WIDTH),
        (LENGTH, WIDTH, np.pi, LENGTH),
        (0.0, WIDTH, -np.pi / 2, WIDTH),
    ]
    for level, storey in enumerate(storeys):
        z = level * STOREY
        slab_rep = ifcopenshell.api.geometry.add_slab_representation(
            model, context=body, depth=0.25, polyline=[(0.0, 0.0), (LENGTH, 0.0), (LENGTH, WIDTH), (0.0, WIDTH)]
        )
        slab = element("IfcSlab", f"Floor slab {level}", storey, slab_rep, _placement(0, 0, z - 0.25))
        slab.PredefinedType = "FLOOR"
        for k, (x, y, ang, length) in enumerate(runs):
            rep = ifcopenshell.api.geometry.add_wall_representation(
                model, context=body, length=length, height=STOREY - 0.25, thickness=WALL
            )
            # a wall's body extends to its left (+y local); rotate so that it lies inside the outline
            wall = element("IfcWall", f"External wall {level}-{k + 1}", storey, rep, _placement(x, y, z, ang))
            wp = ifcopenshell.api.pset.add_pset(model, product=wall, name="Pset_WallCommon")
            ifcopenshell.api.pset.edit_pset(
                model, pset=wp, properties={"IsExternal": True, "LoadBearing": True, "FireRating": "REI 120"}
            )
            if k % 2 == 1:
                continue  # windows and doors on the long facades
            n_win = 4
            for w in range(n_win):
                along = length * (w + 0.5) / n_win
                is_door = level == 0 and k == 0 and w == 1
                ow, oh, sill = (1.8, 2.4, 0.0) if is_door else (1.6, 1.5, 0.9)
                orep = ifcopenshell.api.geometry.add_wall_representation(
                    model, context=body, length=ow, height=oh, thickness=WALL + 0.2
                )
                c, s = np.cos(ang), np.sin(ang)
                ox = x + c * (along - ow / 2) + s * 0.1
                oy = y + s * (along - ow / 2) - c * 0.1
                op = ifcopenshell.api.root.create_entity(
                    model, ifc_class="IfcOpeningElement", name=f"Opening {level}-{k + 1}-{w + 1}"
                )
                ifcopenshell.api.geometry.assign_representation(model, product=op, representation=orep)
                ifcopenshell.api.geometry.edit_object_placement(
                    model, product=op, matrix=_placement(ox, oy, z + sill, ang)
                )
                ifcopenshell.api.feature.add_feature(model, feature=op, element=wall)
                if is_door:
                    frep = ifcopenshell.api.geometry.add_door_representation(
                        model, context=body, overall_height=oh, overall_width=ow
                    )
                    fill = element(
                        "IfcDoor",
                        "Main entrance",
                        storey,
                        frep,
                        _placement(x + c * (along - ow / 2), y + s * (along - ow / 2), z, ang),
                    )
                    fill.OverallHeight, fill.OverallWidth = oh, ow
                else:
                    frep = ifcopenshell.api.geometry.add_window_representation(
                        model, context=body, overall_height=oh, overall_width=ow
                    )
                    fill = element(
                        "IfcWindow",
                        f"Window {level}-{k + 1}-{w + 1}",
                        storey,
                        frep,
                        _placement(x + c * (along - ow / 2), y + s * (along - ow / 2), z + sill, ang),
                    )
                    fill.OverallHeight, fill.OverallWidth = oh, ow
                ifcopenshell.api.feature.add_filling(model, opening=op, element=fill)
        if level == 0:
            rep = ifcopenshell.api.geometry.add_wall_representation(
                model, context=body, length=WIDTH - 2 * WALL, height=STOREY - 0.25, thickness=0.2
            )
            element("IfcWall", "Internal wall 0-1", storey, rep, _placement(LENGTH / 2, WALL, z, np.pi / 2))
    roof_rep = ifcopenshell.api.geometry.add_slab_representation(
        model,
        context=body,
        depth=0.35,
        polyline=[(-0.3, -0.3), (LENGTH + 0.3, -0.3), (LENGTH + 0.3, WIDTH + 0.3), (-0.3, WIDTH + 0.3)],
    )
    roof = element("IfcRoof", "Roof", storeys[-1], roof_rep, _placement(0, 0, N_STOREYS * STOREY - 0.25))
    roof.PredefinedType = "FLAT_ROOF"

    # reproducible identities, relationship member order (the api builds them from sets) and header
    for rel in [*model.by_type("IfcRelationship"), *model.by_type("IfcUnitAssignment")]:
        for i in range(len(rel)):
            value = rel[i]
            if isinstance(value, tuple) and value and all(isinstance(v, ifcopenshell.entity_instance) for v in value):
                rel[i] = tuple(sorted(value, key=lambda e: e.id()))
    for k, ent in enumerate(model.by_type("IfcRoot")):
        ent.GlobalId = ifcopenshell.guid.compress(uuid.uuid5(uuid.NAMESPACE_URL, f"cim-twin-demo/{seed}/{k}").hex)
    model.header.file_name.time_stamp = VALID_PLANNED.replace("Z", "")
    model.header.file_name.author = ("CIM Twin sample_data",)
    model.header.file_name.organization = ("CIM Twin",)
    model.write(str(path))
    params = dict(params)
    params["parcel_id"] = parcel_id
    params["parcel_name"] = parcel_name
    return params
