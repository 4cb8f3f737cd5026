"""A city model layer's 3D Tiles (CityJSON / CityGML buildings), tiled as BIM is.

`ingestion.citymodel` stores the buildings' triangles in the mesh layout of `ingestion.ifc`, so
the BIM pipeline does the work (`tiles.threed.bim`: selection by digest, adaptive octree,
simplified inner tiles, meshopt glbs in an ENU box); only the per-feature metadata differs: id,
city object type, LOD and the common building attributes.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from tiles.threed import bim
from tiles.threed.metadata import FLOAT64, STRING, Column
from twin.model import Feature, Layer
from twin.store import Store

BUILDING_CLASS = "building"
COLUMNS = (
    Column("id", description="Feature id in the twin (the city object id): GET /features/{layer}/{id}"),
    Column("type", description="City object type, e.g. Building or BuildingPart"),
    Column("lod", description="Level of detail drawn"),
    Column("parent", description="Parent city object (a part's building)"),
    Column("measuredHeight", FLOAT64, "Measured height, metres"),
    Column("function", description="Building function"),
    Column("yearOfConstruction", description="Year of construction"),
)


def feature_row(feature: Feature) -> dict[str, Any]:
    p = feature.properties
    row: dict[str, Any] = {"id": feature.fid}
    for column in COLUMNS[1:]:
        value = p.get(column.name)
        row[column.name] = value if value is None or column.type != STRING else str(value)
    return row


def columns_for(rows: list[dict[str, Any]]) -> tuple[Column, ...]:
    """Numbers always; text only when every building has it, so no tile gets an empty text column."""
    return tuple(c for c in COLUMNS if c.type != STRING or all(row.get(c.name) for row in rows))


def build(
    store: Store, layer: Layer, features: list[Feature], out: Path, *, compression: str | None = "meshopt"
) -> dict[str, Any]:
    """Write tileset.json and tiles/*.glb of the buildings valid at the requested time into `out`."""
    as_bim = dataclasses.replace(
        layer, metadata={"bim": {"meshes": layer.metadata.get("citymodel", {}).get("meshes", [])}}
    )
    rows = [feature_row(f) for f in features]
    return bim.build_meshes(store, as_bim, features, out, rows, BUILDING_CLASS, columns_for(rows), compression)
