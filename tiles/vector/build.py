"""Building one tile of a tileset from the store, within the size budget.

Per MVT layer: a backend that builds tiles itself (PostGIS `ST_AsMVT`) gets the rules as a
`TileQuery`; otherwise the versions are read in bulk (`Store.feature_arrays`), projected into
tile coordinates once, generalised (`generalise.py`) and encoded (`encode.py`). A tile over
`BUDGET` bytes is rebuilt at the next generalisation level until it fits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import orjson

from tiles.vector.encode import AttributeTable, attribute_table, encode_layer
from tiles.vector.generalise import Candidates, Rules, select, shape, to_tile_coordinates
from tiles.vector.tilesets import MvtLayer, Tileset
from tiles.vector.tms import buffered_bounds, mercator_bounds
from twin.crs import WEB_MERCATOR, transform_bbox
from twin.model import BBox, Layer, TimeFilter
from twin.store import Store

BUDGET = 500 * 1024  # bytes of uncompressed MVT per tile
MAX_LEVEL = 12  # at this level every threshold is 4096x the base one: nothing small survives


@dataclass
class _Batch:
    """The candidate features of every MVT layer of a tile, projected into tile coordinates and
    measured once for all generalisation levels, so that each level costs one pass of each
    shapely operation whatever the number of layers.

    A layer's attribute table is made at the first level from the features it keeps; higher
    levels keep subsets of those (every threshold only grows), so they reuse it.
    """

    names: list[str]
    fids: np.ndarray
    candidates: Candidates  # its `group` is the index in `names`
    properties: list[str]
    tables: dict[int, tuple[AttributeTable, np.ndarray]] = field(default_factory=dict)  # group -> table, row map


@dataclass
class LayerExtents:
    """Layer extents in EPSG:3857, computed once per layer version."""

    crs: str
    known: dict[tuple[str, int], tuple[float, float, float, float] | None] = field(default_factory=dict)

    def of(self, layer: Layer) -> tuple[float, float, float, float] | None:
        key = (layer.id, layer.version)
        if key not in self.known:
            self.known[key] = None if layer.bbox is None else mercator_bounds(BBox(*layer.bbox), self.crs)
        return self.known[key]


def _intersection(a: tuple, b: tuple) -> tuple | None:
    minx, miny = max(a[0], b[0]), max(a[1], b[1])
    maxx, maxy = min(a[2], b[2]), min(a[3], b[3])
    return None if minx > maxx or miny > maxy else (minx, miny, maxx, maxy)


class TileBuilder:
    """Builds tiles of any tileset from one store; thread-safe (the store is)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.extents = LayerExtents(store.crs)

    def region(self, layers: list[Layer], z: int, x: int, y: int) -> BBox | None:
        """The part of the buffered tile where these layers have data, in the project CRS.

        Cutting the tile to the data first keeps the transform inside the project CRS's zone,
        where it is meaningful, even for a tile that spans the whole world.
        """
        tile = buffered_bounds(z, x, y)
        parts = [_intersection(tile, e) for e in (self.extents.of(la) for la in layers) if e is not None]
        parts = [p for p in parts if p is not None]
        if not parts:
            return None
        box = BBox(
            min(p[0] for p in parts), min(p[1] for p in parts), max(p[2] for p in parts), max(p[3] for p in parts)
        )
        return transform_bbox(box, WEB_MERCATOR, self.store.crs)

    def build(
        self, tileset: Tileset, layers: dict[str, Layer], z: int, x: int, y: int, time: TimeFilter | None
    ) -> bytes:
        """The tile's MVT bytes (b'' for an empty tile)."""
        groups = []
        for mvt in tileset.at_zoom(z):
            members = [layers[lid] for lid in mvt.layer_ids if lid in layers]
            region = self.region(members, z, x, y)
            if region is not None:
                groups.append((mvt, region))
        batch: _Batch | None = None
        level = 0
        while True:
            rules = Rules.at(z, level)
            built = [self.store.mvt_layer(m.name, m.layer_ids, rules.query(x, y, r, time)) for m, r in groups]
            if any(part is None for part in built):  # the backend does not build tiles: encode here
                if batch is None:
                    batch = self._fetch(groups, z, x, y, time)
                built = encode_batch(batch, rules)
            data = b"".join(built)
            if len(data) <= BUDGET or level >= MAX_LEVEL:
                return data
            # each level roughly halves what is left; skip levels when far over the budget
            level = min(MAX_LEVEL, level + max(1, int(math.log(len(data) / BUDGET, 4))))

    def _fetch(self, groups: list[tuple[MvtLayer, BBox]], z: int, x: int, y: int, time: TimeFilter | None) -> _Batch:
        fids: list[str] = []
        geoms: list[np.ndarray] = []
        properties: list[str] = []
        group: list[np.ndarray] = []
        for g, (mvt, region) in enumerate(groups):
            arrays = [self.store.feature_arrays(lid, bbox=region, time=time) for lid in mvt.layer_ids]
            layer_fids = [fid for a in arrays for fid in a.fids]
            layer_geoms = np.concatenate([np.asarray(a.geometries, dtype=object) for a in arrays])
            layer_properties = [p for a in arrays for p in a.properties]
            if len(arrays) > 1:  # merged layers: back in feature-id order
                order = np.argsort(np.asarray(layer_fids, dtype=object), kind="stable")
                layer_fids = [layer_fids[i] for i in order]
                layer_geoms = layer_geoms[order]
                layer_properties = [layer_properties[i] for i in order]
            fids += layer_fids
            geoms.append(layer_geoms)
            properties += layer_properties
            group.append(np.full(len(layer_fids), g, dtype=np.int64))
        all_geoms = np.concatenate(geoms) if geoms else np.empty(0, dtype=object)
        present = np.flatnonzero(np.not_equal(all_geoms, None))
        tile_geoms = to_tile_coordinates(all_geoms[present], self.store.crs, z, x, y)
        groups_of = np.concatenate(group)[present] if group else np.zeros(0, dtype=np.int64)
        return _Batch(
            [mvt.name for mvt, _ in groups],
            np.asarray(fids, dtype=object)[present],
            Candidates.of(tile_geoms, groups_of),
            [properties[i] for i in present],
        )


def encode_batch(batch: _Batch, rules: Rules) -> list[bytes]:
    """Generalise every layer of a tile at once and encode each (b'' for a layer left empty)."""
    candidates = batch.candidates
    keep = select(candidates, rules)
    shaped = shape(candidates.clipped[keep], candidates.dims[keep], rules)
    present = np.not_equal(shaped, None)
    alive, shaped = keep[present], shaped[present]
    groups = candidates.group[alive]
    out = []
    for g, name in enumerate(batch.names):
        mine = groups == g
        rows = alive[mine]
        if not len(rows):
            out.append(b"")
            continue
        table, row_of = batch.tables.get(g, (None, None))
        if table is None or (row_of[rows] < 0).any():
            table, row_of = _attribute_table(batch, rows)
            batch.tables[g] = (table, row_of)
        out.append(encode_layer(name, shaped[mine], table, row_of[rows]))
    return out


def _attribute_table(batch: _Batch, rows: np.ndarray) -> tuple[AttributeTable, np.ndarray]:
    """The attribute table of these features (their properties, and `fid`) and a row map into it."""
    texts = [batch.properties[i] for i in rows]
    properties = orjson.loads("[" + ",".join(texts) + "]")  # one parse for all
    row_of = np.full(len(batch.fids), -1, dtype=np.int64)
    row_of[rows] = np.arange(len(rows))
    return attribute_table(properties, fid=batch.fids[rows].tolist()), row_of
