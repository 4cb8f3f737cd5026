"""What every reader does with its target layer: name it, check it may be written, and give a
3D dataset a footprint in the project CRS (so the layer has a bbox and shows on maps)."""

from __future__ import annotations

import numpy as np
import shapely

from twin import crs as crs_mod
from twin.model import InvalidInput, LayerKind, NotFound, check_layer_id
from twin.store import Store


def prefixed_layer_id(name: str, prefix: str, layer_id: str | None) -> str:
    """The user's id, else `prefix_` + the file or folder name made safe (e.g. `bim_office`)."""
    if layer_id:
        return check_layer_id(layer_id)
    stem = "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_")
    return check_layer_id(f"{prefix}_{stem}"[:63] if stem else prefix)


def check_kind(store: Store, layer_id: str, kind: LayerKind, noun: str) -> None:
    """An existing layer of another kind is never overwritten by a reader of this one."""
    try:
        layer = store.get_layer(layer_id)
    except NotFound:
        return
    if layer.kind != kind:
        raise InvalidInput(f"layer {layer_id!r} exists and is a {layer.kind.value} layer, not a {noun} layer")


def hull_footprint(lon: np.ndarray, lat: np.ndarray, project_crs: str, what: str, pad: float) -> shapely.Geometry:
    """Convex hull of lon/lat points in the project CRS (buffered by `pad` metres when degenerate);
    points outside the project CRS's area of use are refused, naming where the data lies."""
    inside = crs_mod.within_area_of_use(project_crs, lon, lat)
    if not inside.all():
        first = np.flatnonzero(~inside)[0]
        raise InvalidInput(
            f"{what} lies at {lon[first]:.5f}, {lat[first]:.5f}, outside the area of the project CRS {project_crs}"
        )
    x, y = crs_mod.transform_points(crs_mod.CRS84, project_crs, lon, lat)
    hull = shapely.convex_hull(shapely.multipoints(np.column_stack([x, y])))
    return hull if isinstance(hull, shapely.Polygon) else hull.buffer(pad, quad_segs=2)
