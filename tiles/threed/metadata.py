"""Per-feature properties as an EXT_structural_metadata property table (one schema class per table).

A tile's features are rows 0..n-1; the glb's `_FEATURE_ID_0` attribute points into those rows,
so a client that picks a triangle reads the feature's GlobalId, class or pipe diameter without a
request. Each column is one binary buffer view (strings: UTF-8 bytes plus UINT32 offsets,
booleans: a bitstream), aligned to 8 bytes as the extension asks. A string column empty in
every row of a tile is left out of that tile's table (its schema property is optional).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from twin.model import InvalidInput

STRING = "STRING"
FLOAT64 = "FLOAT64"
INT32 = "INT32"
BOOLEAN = "BOOLEAN"
TYPES = (STRING, FLOAT64, INT32, BOOLEAN)
IDENTIFIER = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
INT32_NO_DATA = -2147483648
FLOAT64_NO_DATA = -1.0e38


@dataclass(frozen=True)
class Column:
    """One property of the class: its id (a glTF identifier), type and description."""

    name: str
    type: str = STRING
    description: str = ""

    def __post_init__(self) -> None:
        if not IDENTIFIER.match(self.name):
            raise InvalidInput(f"metadata property name {self.name!r} is not an identifier")
        if self.type not in TYPES:
            raise InvalidInput(f"metadata property type {self.type!r}; expected one of {TYPES}")


@dataclass
class PropertyTable:
    """Rows of properties (one dict per feature, in feature-id order) under one class."""

    class_id: str
    columns: Sequence[Column]
    rows: list[dict[str, Any]] = field(default_factory=list)
    name: str = ""

    @property
    def count(self) -> int:
        return len(self.rows)

    def schema(self) -> dict[str, Any]:
        """The schema object of EXT_structural_metadata (embedded in the glb)."""
        properties: dict[str, Any] = {}
        for column in self.columns:
            spec: dict[str, Any] = {"description": column.description} if column.description else {}
            if column.type == STRING:
                spec["type"] = "STRING"
            elif column.type == BOOLEAN:
                spec["type"] = "BOOLEAN"
            else:
                spec.update(type="SCALAR", componentType=column.type)
                spec["noData"] = INT32_NO_DATA if column.type == INT32 else FLOAT64_NO_DATA
            properties[column.name] = spec
        return {"id": f"{self.class_id}_schema", "classes": {self.class_id: {"properties": properties}}}

    def encode(self, add_view: Callable[[bytes], int]) -> dict[str, Any]:
        """The property table object; `add_view` stores bytes as an aligned buffer view, returns its index."""
        table: dict[str, Any] = {"class": self.class_id, "count": self.count, "properties": {}}
        if self.name:
            table["name"] = self.name
        for column in self.columns:
            values = [row.get(column.name) for row in self.rows]
            if column.type == STRING and all(v is None or v == "" for v in values):
                continue  # nothing to store, and a zero-length buffer view is invalid glTF
            table["properties"][column.name] = _encode_column(column, values, add_view)
        return table


def _encode_column(column: Column, values: list[Any], add_view: Callable[[bytes], int]) -> dict[str, Any]:
    if column.type == STRING:
        encoded = [b"" if v is None else str(v).encode("utf-8") for v in values]
        offsets = np.zeros(len(encoded) + 1, dtype=np.uint32)
        offsets[1:] = np.cumsum([len(b) for b in encoded], dtype=np.uint64)
        return {
            "values": add_view(b"".join(encoded)),
            "stringOffsets": add_view(offsets.tobytes()),
            "stringOffsetType": "UINT32",
        }
    if column.type == BOOLEAN:
        bits = np.packbits(np.array([bool(v) for v in values], dtype=np.uint8), bitorder="little")
        return {"values": add_view(bits.tobytes())}
    if column.type == INT32:
        array = np.array([_as_int(v) for v in values], dtype=np.int32)
    else:
        array = np.array([_as_float(v) for v in values], dtype=np.float64)
    return {"values": add_view(array.tobytes())}


def _as_int(value: Any) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        return INT32_NO_DATA
    return number if -(2**31) < number < 2**31 else INT32_NO_DATA


def _as_float(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return FLOAT64_NO_DATA
    return number if math.isfinite(number) else FLOAT64_NO_DATA


def decode_table(gltf: dict[str, Any], view_bytes: Callable[[int], bytes]) -> list[dict[str, Any]]:
    """Rows back from a glb's first property table (for tests and for re-serving existing tiles)."""
    extension = gltf["extensions"]["EXT_structural_metadata"]
    table = extension["propertyTables"][0]
    spec = extension["schema"]["classes"][table["class"]]["properties"]
    rows: list[dict[str, Any]] = [{} for _ in range(table["count"])]
    for name, column in table["properties"].items():
        kind = spec[name]["type"]
        raw = view_bytes(column["values"])
        if kind == "STRING":
            offsets = np.frombuffer(view_bytes(column["stringOffsets"]), dtype=np.uint32)
            values: list[Any] = [raw[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(table["count"])]
        elif kind == "BOOLEAN":
            bits = np.unpackbits(np.frombuffer(raw, dtype=np.uint8), bitorder="little")
            values = [bool(b) for b in bits[: table["count"]]]
        else:
            dtype = {"INT32": np.int32, "FLOAT64": np.float64, "FLOAT32": np.float32}[spec[name]["componentType"]]
            no_data = spec[name].get("noData")
            values = [None if v == no_data else v.item() for v in np.frombuffer(raw, dtype=dtype)[: table["count"]]]
        for row, value in zip(rows, values, strict=True):
            row[name] = value
    return rows
