"""Mapbox Vector Tile 2.1 encoding: geometries already in tile coordinates become one MVT layer.

Nothing here loops over features in Python: coordinates come from shapely's vectorised
accessors and compiled loops (`kernels.py`) write the command streams and feature messages;
properties are factorised column by column into the layer's key and value tables. Input
geometries must already be snapped to the integer grid, valid and oriented (see
`generalise.py`); repeated points and ring closures are dropped here, as the spec asks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely

from tiles.vector import kernels
from tiles.vector.tms import EXTENT

POINT, LINESTRING, POLYGON = kernels.POINT, kernels.LINESTRING, kernels.POLYGON
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MVT_TYPE = np.zeros(8, dtype=np.int64)  # shapely type id -> MVT geometry type (0: none)
MVT_TYPE[[0, 4]] = POINT
MVT_TYPE[[1, 5]] = LINESTRING
MVT_TYPE[[3, 6]] = POLYGON
LAYER_VERSION = b"\x78\x02"  # field 15 (version) = 2


# ----- varints ---------------------------------------------------------------------------------
def varint(value: int) -> bytes:
    """One unsigned protobuf varint."""
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


# ----- geometry command streams -----------------------------------------------------------------
def _sequences(geoms: np.ndarray, family: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Coordinates of point sets, line parts or rings, with sequence -> group -> geometry maps."""
    if family == POINT:
        coords, coord_seq = shapely.get_coordinates(geoms, return_index=True)
        return coords, coord_seq, np.arange(len(geoms)), np.arange(len(geoms))
    if family == LINESTRING:
        parts, part_geom = shapely.get_parts(geoms, return_index=True)
        coords, coord_seq = shapely.get_coordinates(parts, return_index=True)
        return coords, coord_seq, np.arange(len(parts)), part_geom
    polygons, polygon_geom = shapely.get_parts(geoms, return_index=True)
    rings, ring_polygon = shapely.get_rings(polygons, return_index=True)
    coords, coord_seq = shapely.get_coordinates(rings, return_index=True)
    return coords, coord_seq, ring_polygon, polygon_geom


def geometry_commands(geoms: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every feature's packed geometry in one byte buffer: (buffer, start, length, MVT type) per
    feature; length 0 when nothing of the feature is left."""
    n = len(geoms)
    types = MVT_TYPE[shapely.get_type_id(geoms)] if n else np.zeros(0, dtype=np.int64)
    starts = np.zeros(n, dtype=np.int64)
    lengths = np.zeros(n, dtype=np.int64)
    buffers: list[np.ndarray] = []
    base = 0
    for family in (POINT, LINESTRING, POLYGON):
        members = np.flatnonzero(types == family)
        if not len(members):
            continue
        coords, coord_seq, seq_group, group_geom = _sequences(geoms[members], family)
        family_starts = np.zeros(n, dtype=np.int64)
        family_lengths = np.zeros(n, dtype=np.int64)
        buffer = kernels.encode_geometry(
            coords, coord_seq, seq_group, members[group_geom], family, n, family_starts, family_lengths
        )
        starts[members] = family_starts[members] + base
        lengths[members] = family_lengths[members]
        buffers.append(buffer)
        base += len(buffer)
    buffer = np.concatenate(buffers) if buffers else np.empty(0, dtype=np.uint8)
    return buffer, starts, lengths, types


# ----- attributes -------------------------------------------------------------------------------
class ValueTable:
    """A layer's value table: each distinct value once, indexed in order of first use.

    Strings, numbers and booleans get separate dictionaries, so that 1, 1.0 and True stay apart
    where MVT keeps them apart; None maps to -1 (no tag). Integral floats are written as
    integers and integers beyond int64 as doubles, as PostGIS's ST_AsMVT does with jsonb numbers.
    """

    def __init__(self) -> None:
        self.by_kind: dict[str, dict[Any, int]] = {kind: {None: -1} for kind in "snb"}
        self.count = 0

    def _add(self, kind: str, values: Sequence[Any]) -> dict[Any, int]:
        table = self.by_kind[kind]
        new = [v for v in values if v not in table]
        table.update(zip(new, range(self.count, self.count + len(new)), strict=True))
        self.count += len(new)
        return table

    def indices(self, column: Sequence[Any], distinct: dict[Any, None]) -> list[int] | None:
        """Value indices of a column (-1 where null), given its distinct values in order of first
        appearance; None when the column mixes kinds."""
        kinds = set(map(type, distinct))
        kinds.discard(type(None))
        if not kinds:
            return [-1] * len(column)
        if kinds == {str}:
            kind = "s"
        elif kinds <= {int, float}:
            kind = "n"
        elif kinds == {bool}:
            kind = "b"
        else:
            return None
        return list(map(self._add(kind, distinct).__getitem__, column))

    def index(self, value: Any) -> int:
        """One value's index (-1 for what MVT cannot hold: null, lists, objects)."""
        if isinstance(value, bool):
            kind = "b"
        elif isinstance(value, int | float):
            kind = "n"
        elif isinstance(value, str):
            kind = "s"
        else:
            return -1
        return self._add(kind, [value])[value]

    def fields(self) -> tuple[np.ndarray, np.ndarray]:
        """Every value as a Layer field (a Value message) in one buffer, and where each starts."""
        codes = np.zeros(self.count, dtype=np.uint8)
        ints = np.zeros(self.count, dtype=np.int64)
        doubles = np.zeros(self.count, dtype=np.float64)
        strings, string_at = self._entries("s")
        order = np.argsort(string_at)
        codes[string_at] = kernels.VALUE_STRING
        encoded = [strings[i].encode() for i in order]
        booleans, boolean_at = self._entries("b")
        codes[boolean_at] = kernels.VALUE_BOOL
        ints[boolean_at] = np.array(booleans, dtype=bool)
        numbers, number_at = self._entries("n")
        if len(numbers):
            as_float = np.array(numbers, dtype=np.float64)
            is_float = np.fromiter((v.__class__ is float for v in numbers), dtype=bool, count=len(numbers))
            in_range = (as_float >= INT64_MIN) & (as_float < INT64_MAX)
            whole = in_range & (~is_float | (as_float == np.floor(as_float)))
            exact = np.zeros(len(numbers), dtype=np.int64)
            exact[whole & ~is_float] = [v for v, w in zip(numbers, whole & ~is_float, strict=True) if w]
            exact[whole & is_float] = as_float[whole & is_float]
            codes[number_at] = np.where(whole, kernels.VALUE_INT, kernels.VALUE_DOUBLE)
            ints[number_at] = exact
            doubles[number_at] = as_float
        text = np.frombuffer(b"".join(encoded), dtype=np.uint8)
        lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
        return kernels.encode_values(codes, ints, doubles, text, lengths)

    def _entries(self, kind: str) -> tuple[list[Any], np.ndarray]:
        table = self.by_kind[kind]
        values = [v for v in table if v is not None]
        return values, np.fromiter((table[v] for v in values), dtype=np.int64, count=len(values))


@dataclass
class AttributeTable:
    """Keys, values and every feature's tags, made once per tile layer and reused at each
    generalisation level: a level keeps a subset of the features and only the keys and values
    they use (`subset`). Keys and values are stored as ready-made layer fields."""

    key_fields: list[bytes]  # field 3 of the Layer message, one per key
    value_fields: np.ndarray  # field 4 of the Layer message of every value, one after the other
    value_offsets: np.ndarray  # value i is value_fields[value_offsets[i]:value_offsets[i + 1]]
    tags: np.ndarray  # (n, 2) key and value indices of every feature's tags, feature after feature
    starts: np.ndarray  # feature i's tags are tags[starts[i]:starts[i + 1]]

    def subset(self, rows: np.ndarray) -> tuple[bytes, np.ndarray, np.ndarray]:
        """The layer's key and value fields for these features, their tags renumbered (flat), and
        the number of tag integers of each."""
        counts = self.starts[rows + 1] - self.starts[rows]
        pairs = self.tags[_ranges(self.starts[rows], counts)]
        used_keys, key_ids = np.unique(pairs[:, 0], return_inverse=True)
        used_values, value_ids = np.unique(pairs[:, 1], return_inverse=True)
        starts = self.value_offsets[used_values]
        values = self.value_fields[_ranges(starts, self.value_offsets[used_values + 1] - starts)]
        fields = b"".join([self.key_fields[i] for i in used_keys]) + values.tobytes()
        flat = np.column_stack((key_ids, value_ids)).ravel() if len(pairs) else np.zeros(0, np.int64)
        return fields, flat.astype(np.int64), counts * 2


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Indices start..start+length-1 of every range, one after the other."""
    ends = np.cumsum(lengths)
    return np.arange(int(ends[-1]) if len(ends) else 0) + np.repeat(starts - (ends - lengths), lengths)


def _field(tag: bytes, payload: bytes) -> bytes:
    return tag + varint(len(payload)) + payload


def _distinct(column: Sequence[Any]) -> dict[Any, None] | None:
    """A column's distinct values in order of first appearance; None when some are lists or
    objects (unhashable: MVT cannot hold them, and they are left out value by value)."""
    try:
        return dict.fromkeys(column)
    except TypeError:
        return None


def attribute_table(properties: Sequence[dict[str, Any]], fid: Sequence[str] | None = None) -> AttributeTable:
    """Factorise properties into keys, values and tags; `fid`, when given, is one more column
    (it replaces a property of that name).

    Features with the same keys in the same order (the store's canonical JSON makes that the
    rule) are factorised together, column by column; few-valued columns go first so that their
    values, used by many features, get the one-byte indices.
    """
    keys: dict[str, int] = {}
    values = ValueTable()
    groups: dict[tuple[str, ...], list[int]] = {}
    for i, props in enumerate(properties):
        groups.setdefault(tuple(props), []).append(i)
    n = len(properties)
    rows = np.zeros(n, dtype=np.int64)  # tag pairs per feature
    pieces: list[tuple[np.ndarray, np.ndarray]] = []  # (feature indices, their tag pairs)
    for names, members in groups.items():
        columns = list(zip(*(properties[i].values() for i in members), strict=True)) if names else []
        if fid is not None:
            kept = [j for j, name in enumerate(names) if name != "fid"]
            names = (*(names[j] for j in kept), "fid")
            columns = [columns[j] for j in kept] + [[fid[i] for i in members]]
        key_index = np.array([keys.setdefault(k, len(keys)) for k in names], dtype=np.int64)
        index = np.empty((len(members), len(names)), dtype=np.int64)
        distinct = [_distinct(column) for column in columns]
        for j in sorted(range(len(columns)), key=lambda j: len(distinct[j]) if distinct[j] is not None else n):
            found = values.indices(columns[j], distinct[j]) if distinct[j] is not None else None
            index[:, j] = found if found is not None else [values.index(v) for v in columns[j]]
        present = index >= 0
        rows[members] = present.sum(axis=1)
        pairs = np.stack([np.broadcast_to(key_index, index.shape), index], axis=2)[present]
        pieces.append((np.asarray(members), pairs))
    tags = np.zeros((int(rows.sum()), 2), dtype=np.int64)
    starts = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(rows, out=starts[1:])
    for members, pairs in pieces:
        tags[_ranges(starts[members], rows[members])] = pairs
    key_fields = [_field(b"\x1a", key.encode()) for key in keys]
    value_fields, value_offsets = values.fields()
    return AttributeTable(key_fields, value_fields, value_offsets, tags, starts)


# ----- layer ------------------------------------------------------------------------------------
def encode_layer(
    name: str, geoms: np.ndarray, table: AttributeTable, rows: np.ndarray | None = None, extent: int = EXTENT
) -> bytes:
    """A Tile message holding one layer (b'' when no feature has geometry left).

    `rows` says which row of `table` holds each geometry's attributes (default: the same index).
    Tiles are concatenations of such messages, so a tile of several layers is their join.
    """
    geom_buffer, geom_starts, geom_lengths, types = geometry_commands(np.asarray(geoms, dtype=object))
    alive = np.flatnonzero(geom_lengths > 0)
    if not len(alive):
        return b""
    rows = alive if rows is None else np.asarray(rows, dtype=np.int64)[alive]
    fields, flat, counts = table.subset(rows)
    features = kernels.encode_features(
        flat, counts, geom_buffer, geom_starts[alive], geom_lengths[alive], types[alive].astype(np.uint8)
    )
    name_bytes = name.encode()
    layer = b"".join((LAYER_VERSION, b"\x0a", varint(len(name_bytes)), name_bytes, features.tobytes(), fields))
    layer += b"\x28" + varint(extent)
    return b"\x1a" + varint(len(layer)) + layer
