"""Generate the demo district: every input file the twin ingests, plus a manifest.

`generate(out_dir)` is the one public entry point; `python -m sample_data OUT` calls it. The
same seed gives byte-identical vector, CSV and JSON files, and each part (basemap, dem, ortho,
networks, ifc, mesh, sensors) comes out the same whether or not the others are generated.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path

import shapely

from .basemap import SCALE_BANDS, band_500, band_2000, band_10000
from .buildings import build_buildings
from .countryside import build_countryside
from .drainage import build_drainage
from .features import build_details
from .frame import CRS, VALID_2015, VALID_CURRENT, VALID_PLANNED, make_frame
from .gas import build_gas
from .gpkg import write_layers
from .history import apply_history
from .layout import build_layout
from .manifest import FORMAT, frame_info, layer_entry, write_manifest
from .relief import make_relief
from .terrain import Terrain, pick_low_sections, write_dem
from .water import build_water

PARTS = ("basemap", "dem", "ortho", "networks", "ifc", "mesh", "sensors")

ID_FIELDS = {
    "buildings": "bid",
    "roads": "road_id",
    "road_centrelines": "road_id",
    "water": "wid",
    "green": "gid",
    "landuse": "lid",
    "parcels": "parcel_id",
}
TITLES = {
    "buildings": "Buildings",
    "roads": "Roads",
    "road_centrelines": "Road centrelines",
    "water": "Water",
    "green": "Green space",
    "landuse": "Land use",
    "parcels": "Parcels",
}


def parse_parts(parts: Iterable[str] | str | None) -> set[str]:
    """Validate a parts selection; None means everything."""
    if parts is None:
        return set(PARTS)
    if isinstance(parts, str):
        parts = [p for p in parts.split(",") if p.strip()]
    chosen = {p.strip() for p in parts}
    unknown = chosen - set(PARTS)
    if unknown:
        raise ValueError(f"unknown part(s) {', '.join(sorted(unknown))}; choose from {', '.join(PARTS)}")
    return chosen


def generate(
    out_dir: Path,
    size_km: float = 2.0,
    seed: int = 20240601,
    parts: set[str] | None = None,
    timings: dict[str, float] | None = None,
) -> dict:
    """Write the district's files into out_dir and return the manifest (also manifest.json).

    `parts` limits the work to some of: basemap, dem, ortho, networks, ifc, mesh, sensors.
    If `timings` is given it receives the seconds spent per step (never written to files).
    """
    chosen = parse_parts(parts)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    clock = timings if timings is not None else {}
    t = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal t
        now = time.perf_counter()
        clock[name] = round(now - t, 3)
        t = now

    frame = make_frame(size_km, seed)
    relief = make_relief(frame)
    layout = build_layout(frame, relief)
    sections = pick_low_sections(layout, relief)
    terrain = Terrain(relief, sections)
    buildings = build_buildings(layout)
    history = apply_history(layout, buildings)  # always: it sets the years of new buildings
    details = build_details(layout, buildings)
    lap("layout")

    manifest: dict = {
        "format": FORMAT,
        "name": "CIM Twin demo district",
        "generator": {
            "module": "sample_data",
            "seed": int(seed),
            "size_km": frame.size / 1000.0,
            "parts": [p for p in PARTS if p in chosen],
        },
        **frame_info(frame),
        "layers": [],
        "rasters": [],
    }
    layers: list[dict] = manifest["layers"]

    if "basemap" in chosen:
        bands = {
            "500": band_500(frame, details),
            "2000": band_2000(layout, details),
            "10000": band_10000(frame, layout, details, build_countryside(frame, relief, layout)),
        }
        for band, content in bands.items():
            path = f"basemap_{band}.gpkg"
            write_layers(out / path, content)
            for name, gdf in content.items():
                id_field = "street_id" if name == "roads" and band != "500" else ID_FIELDS[name]
                extra = {}
                if name == "buildings" and band == "500":
                    extra["editions"] = [
                        {
                            "path": "buildings_500_2015.gpkg",
                            "layer": "buildings",
                            "valid_from": VALID_2015,
                            "valid_to": VALID_CURRENT,
                        },
                        {"path": path, "layer": "buildings", "valid_from": VALID_CURRENT, "valid_to": None},
                    ]
                if name == "buildings" and band != "500":
                    # 3D: each band draws only where no more detailed band has buildings
                    extra["extrude"] = {"skip_within": list(frame.core_bbox if band == "2000" else frame.bbox)}
                layers.append(
                    layer_entry(
                        f"{name}_{band}",
                        f"{TITLES[name]} {SCALE_BANDS[band]}",
                        "vector",
                        path,
                        name,
                        gdf,
                        id_field,
                        VALID_CURRENT,
                        scale_band=SCALE_BANDS[band],
                        **extra,
                    )
                )
        write_layers(out / "buildings_500_2015.gpkg", {"buildings": history.edition_2015})
        write_layers(out / "buildings_planned.gpkg", {"buildings": history.planned})
        layers.append(
            layer_entry(
                "buildings_planned",
                "Planned buildings (Xiguan renewal)",
                "vector",
                "buildings_planned.gpkg",
                "buildings",
                history.planned,
                "bid",
                VALID_PLANNED,
                scale_band="1:500",
                scenario="planned",
            )
        )
        manifest["history"] = {
            "layer": "buildings_500",
            "editions": [
                {
                    "path": "buildings_500_2015.gpkg",
                    "layer": "buildings",
                    "valid_from": VALID_2015,
                    "feature_count": len(history.edition_2015),
                },
                {
                    "path": "basemap_500.gpkg",
                    "layer": "buildings",
                    "valid_from": VALID_CURRENT,
                    "feature_count": len(bands["500"]["buildings"]),
                },
            ],
            "demolished": history.demolished,
            "new": history.new,
            "changed": history.changed,
            "changed_fields": ["floors", "height"],
        }
        lap("basemap")

    p_plan = layout.facilities["planned"]
    manifest["parcels"] = {
        "planned": {
            "parcel_id": str(layout.parcels.parcel_id[p_plan]),
            "name": str(layout.parcels.name[p_plan]),
            "geometry": shapely.to_wkt(layout.parcels.geometry[p_plan], rounding_precision=3),
            "planned_bids": list(history.planned["bid"]),
            "scenario_valid_from": VALID_PLANNED,
        }
    }
    manifest["low_road_sections"] = [
        {
            "id": s.id,
            "road_id": s.road_id,
            "road_name": s.road_name,
            "geometry": shapely.to_wkt(s.line(), rounding_precision=3),
            "area": shapely.to_wkt(s.area(), rounding_precision=3),
            "length": round(s.length, 2),
            "depth": s.depth,
            "half_width": s.half_width,
            "lowest_point": [round(c, 3) for c in s.midpoint],
            "lowest_ground_elev": round(float(terrain.elevation(*[float(c) for c in s.midpoint])), 3),
            "grade_at_ends": [round(s.z0, 3), round(s.z1, 3)],
        }
        for s in sections
    ]

    if "dem" in chosen:
        info = write_dem(out / "dem.tif", frame, terrain)
        manifest["rasters"].append(
            {
                "id": "dem",
                "title": "Digital elevation model (2 m)",
                "kind": "terrain",
                "role": "dem",
                "path": "dem.tif",
                "crs": CRS,
                "units": "metre",
                "vertical_datum": "1985 National Height Datum",
                "nodata": -9999.0,
                "bbox": list(frame.bbox),
                **info,
            }
        )
        lap("dem")

    painter = None
    if "ortho" in chosen or "mesh" in chosen:
        from .ortho import OrthoPainter, write_ortho

        painter = OrthoPainter(details, seed)
        if "ortho" in chosen:
            info = write_ortho(out / "ortho.tif", frame, painter)
            manifest["rasters"].append(
                {
                    "id": "ortho",
                    "title": "Orthophoto (1 m)",
                    "kind": "raster",
                    "role": "orthophoto",
                    "path": "ortho.tif",
                    "crs": CRS,
                    "bbox": list(frame.bbox),
                    **info,
                }
            )
        lap("ortho")

    water = None
    if "networks" in chosen or "sensors" in chosen:
        water = build_water(layout, terrain, buildings)
        lap("water")
    if "networks" in chosen:
        assert water is not None
        gas = build_gas(layout, terrain, buildings)
        lap("gas")
        d_nodes, d_pipes, d_info = build_drainage(layout, terrain, sections)
        lap("drainage")
        nets = {
            "water": ("water_network.gpkg", "Water supply", water.nodes, water.pipes),
            "gas": ("gas_network.gpkg", "Gas", gas.nodes, gas.pipes),
            "drainage": ("drainage_network.gpkg", "Drainage (storm and sewage)", d_nodes, d_pipes),
        }
        for net, (path, title, nodes, pipes) in nets.items():
            write_layers(out / path, {f"{net}_nodes": nodes, f"{net}_pipes": pipes})
            layers.append(
                layer_entry(
                    f"{net}_nodes",
                    f"{title} nodes",
                    "pipe_network",
                    path,
                    f"{net}_nodes",
                    nodes,
                    "node_id",
                    VALID_CURRENT,
                    network=net,
                    role="nodes",
                )
            )
            layers.append(
                layer_entry(
                    f"{net}_pipes",
                    f"{title} pipes",
                    "pipe_network",
                    path,
                    f"{net}_pipes",
                    pipes,
                    "pipe_id",
                    VALID_CURRENT,
                    network=net,
                    role="pipes",
                    nodes_layer=f"{net}_nodes",
                )
            )
        manifest["networks"] = {
            "water": {
                "class": "JS",
                **water.info,
                "pipe_count": len(water.pipes),
                "node_count": len(water.nodes),
                "valve_count": int((water.nodes["type"] == "valve").sum()),
            },
            "gas": {
                "class": "RQ",
                **gas.info,
                "pipe_count": len(gas.pipes),
                "node_count": len(gas.nodes),
                "valve_count": int((gas.nodes["type"] == "valve").sum()),
            },
            "drainage": {
                "classes": ["YS", "WS"],
                "outfalls": d_info["outfalls"],
                "low_section_inlets": d_info["low_section_inlets"],
                "pipe_count": len(d_pipes),
                "node_count": len(d_nodes),
            },
        }
        lap("networks_write")

    if "ifc" in chosen:
        from .ifc_building import footprint_world, write_ifc

        params = write_ifc(out / "building.ifc", layout, terrain, seed)
        p = params.pop("parcel_index")
        manifest["ifc"] = {
            "id": "bim_community_centre",
            "title": "Qinhuai Community Centre (BIM)",
            "kind": "bim",
            "path": "building.ifc",
            "schema": "IFC4",
            "scenario": "current",
            "valid_from": VALID_CURRENT,
            "parcel_id": params["parcel_id"],
            "map_conversion": {
                k: params[k]
                for k in ("eastings", "northings", "orthogonal_height", "x_axis_abscissa", "x_axis_ordinate", "scale")
            },
            "footprint": shapely.to_wkt(footprint_world(params), rounding_precision=3),
            "storeys": 3,
        }
        manifest["parcels"]["ifc"] = {
            "parcel_id": params["parcel_id"],
            "name": params["parcel_name"],
            "geometry": shapely.to_wkt(layout.parcels.geometry[p], rounding_precision=3),
            "expected_map_conversion_origin": [params["eastings"], params["northings"], params["orthogonal_height"]],
        }
        lap("ifc")

    if "mesh" in chosen:
        from .reality_mesh import write_mesh

        assert painter is not None
        info = write_mesh(out / "reality_mesh", details, terrain, painter, frame.center, seed)
        manifest["reality_mesh"] = {
            "id": "reality_mesh",
            "title": "Oblique photography mesh (synthetic)",
            "kind": "mesh",
            "path": "reality_mesh",
            "metadata": "reality_mesh/metadata.xml",
            "format": "obj",
            "srs": CRS,
            **info,
        }
        from .oblique import write_osgb_tree  # the same mesh as ContextCapture's OSGB tree

        osgb = write_osgb_tree(out / "reality_mesh", out / "reality_mesh_osgb", info["tiles"])
        manifest["reality_mesh"]["osgb"] = osgb
        lap("mesh")

    if "sensors" in chosen:
        from .sensors import build_sensors

        assert water is not None
        data = build_sensors(frame, sections, water)
        write_layers(out / "sensors.gpkg", {"sensors": data.sensors})
        (out / "observations.csv").write_text(data.csv, encoding="utf-8", newline="\n")
        layers.append(
            layer_entry(
                "sensors", "Sensors", "sensor", "sensors.gpkg", "sensors", data.sensors, "sensor_id", VALID_CURRENT
            )
        )
        manifest["observations"] = {
            "path": "observations.csv",
            "sensors_layer": "sensors",
            "columns": ["sensor_id", "time", "quantity", "value", "unit"],
            "start": data.csv.split("\n")[1].split(",")[1],
            "end": "2024-07-15T23:55:00Z",
            "interval_seconds": 300,
            "rows": data.csv.count("\n") - 1,
        }
        manifest["events"] = data.events
        lap("sensors")

    manifest = write_manifest(out / "manifest.json", manifest)
    lap("manifest")
    return manifest
