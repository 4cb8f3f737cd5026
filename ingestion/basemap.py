"""Vector basemaps (1:500 / 1:2000 / 1:10000 sheets): one file layer into one twin layer.

A polygon layer with a `height` or `floors` field is a layer of building footprints: it gets an
`extrude` entry in its metadata, so it is also served as LOD1 3D Tiles (`tiles.threed.buildings`).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import numpy as np
import shapely

from ingestion.vector import list_layers, read_vector
from twin.model import InvalidInput, Layer, LayerKind, Scenario, WriteReport, check_layer_id
from twin.store import Store, WriteMode

EXTRUDE_FIELDS = ("height", "floors")
POLYGONAL = (3, 6)  # shapely type ids of Polygon and MultiPolygon


def layer_id_for(path: Path, source_layer: str | None, layer_id: str | None) -> str:
    """The user's id, else one derived from the source layer or file name."""
    if layer_id:
        return check_layer_id(layer_id)
    stem = (source_layer or Path(path).stem).lower()
    candidate = "".join(c if c.isalnum() else "_" for c in stem).strip("_")
    if not candidate or not candidate[0].isalpha():
        candidate = f"layer_{candidate}"
    return check_layer_id(candidate[:63])


def ingest_basemap(
    store: Store,
    path: Path,
    *,
    layer_id: str | None = None,
    source_layer: str | None = None,
    source_crs: str | None = None,
    scale_band: str | None = None,
    scenario: Scenario | str = Scenario.current,
    valid_from: datetime | None = None,
    kind: LayerKind | str = LayerKind.vector,
    title: str | None = None,
    replace: bool = True,
    id_field: str | None = None,
    metadata: dict | None = None,
    progress: Callable[[int], None] | None = None,
) -> WriteReport:
    """Read a layer and write it as a new edition of the twin layer (atomic in the store).

    With `replace` (the default for map sheets) features missing from the new edition are
    closed, so the layer's history shows what was demolished.
    """
    source = read_vector(path, store.crs, source_layer=source_layer, source_crs=source_crs, id_field=id_field)
    target = layer_id_for(path, source.source_layer, layer_id)
    layer = Layer(
        id=target,
        kind=kind,
        title=title or target.replace("_", " "),
        scale_band=scale_band,
        scenario=scenario,
        source=str(Path(path).name) + (f":{source.source_layer}" if source_layer else ""),
        source_crs=source.source_crs,
        geometry_type=source.geometry_type,
        schema=source.schema,
        metadata={**footprint_metadata(kind, source.schema, source.features), **(metadata or {})},
    )
    if not source.features:
        raise InvalidInput(f"{path}: layer {source.source_layer!r} has no features")
    features = source.features
    if progress is not None:
        features = _counting(features, progress)
    mode = WriteMode.replace if replace else WriteMode.upsert
    return store.write_features(layer, features, valid_from=valid_from, mode=mode)


def footprint_metadata(kind: LayerKind | str, schema: dict[str, str], features) -> dict:
    """`{"extrude": {}}` (default settings) for vector polygons with a height or floor count, else `{}`."""
    if kind not in (LayerKind.vector, LayerKind.vector.value) or not any(name in schema for name in EXTRUDE_FIELDS):
        return {}
    types = shapely.get_type_id([f.geometry for f in features if f.geometry is not None])
    return {"extrude": {}} if len(types) and bool(np.isin(types, POLYGONAL).all()) else {}


def _counting(items, progress: Callable[[int], None], step: int = 1000):
    count = 0
    for count, item in enumerate(items, 1):
        yield item
        if count % step == 0:
            progress(step)
    progress(count % step)


__all__ = ["ingest_basemap", "layer_id_for", "list_layers"]
