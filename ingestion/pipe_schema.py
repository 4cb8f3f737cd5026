"""The canonical pipe schema and the field mapping that leads a surveyed table to it.

A CJJ 61 survey delivers a point table and a line table whose field names vary by city and
software (物探点号 / WTDH / point_id ...). `styles/pipe_field_mapping.json` lists, for each
canonical field, the source names it is read from; a user's mapping file replaces entries key
by key. Values are normalised here: sizes ("DN300", "Φ300", "1000×800") become `diameter` or
`width`/`height` in millimetres, years become integers, flags become booleans, CJJ 61 class
codes choose the network, and point features (阀门, 消火栓, 检查井 ...) choose the node type.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from twin.model import InvalidInput

DEFAULT_MAPPING = Path(__file__).resolve().parents[1] / "styles" / "pipe_field_mapping.json"
SECTIONS = ("points", "lines", "classes", "node_types")
SIZE_PATTERN = re.compile(r"^\D*?(\d+(?:\.\d+)?)\s*(?:[x×X*]\s*(\d+(?:\.\d+)?))?\s*(mm|m)?\s*$")
TRUE_WORDS = frozenset({"1", "true", "yes", "y", "t", "是", "可", "open"})
FALSE_WORDS = frozenset({"0", "false", "no", "n", "f", "否", "不可", "closed"})
STATUS_WORDS = {"open": "open", "开": "open", "常开": "open", "closed": "closed", "关": "closed", "常闭": "closed"}


@dataclass(frozen=True)
class FieldMapping:
    """Source names per canonical field, the class table and the feature → node type table."""

    points: dict[str, list[str]]
    lines: dict[str, list[str]]
    classes: dict[str, dict[str, str]]
    node_types: dict[str, str]

    def class_prefixes(self, ids: pd.Series) -> pd.Series:
        """The class code each point or pipe id starts with (JS0012 → JS), None if not a known one."""
        codes = ids.astype(str).str.strip().str.extract(r"^([A-Za-z]{2})", expand=False).str.upper()
        return codes.where(codes.isin(list(self.classes)), None)

    def networks_of(self, codes: pd.Series) -> pd.Series:
        """The network of each class code, None where unknown."""
        table = {code: entry["network"] for code, entry in self.classes.items()}
        return codes.map(lambda c: table.get(str(c).strip().upper()) if c is not None and c == c else None)


@cache
def _read_json(path: str) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InvalidInput(f"{path}: no such field-mapping file") from None
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"{path}: not a readable JSON field-mapping file ({exc})") from exc
    if not isinstance(data, dict) or not set(data) & set(SECTIONS):
        raise InvalidInput(f"{path}: a field-mapping file is a JSON object with some of {', '.join(SECTIONS)}")
    return data


def load_mapping(path: Path | None = None) -> FieldMapping:
    """The default mapping, with the sections of the user's file replacing its entries."""
    base = _read_json(str(DEFAULT_MAPPING))
    extra = _read_json(str(path)) if path is not None else {}
    merged: dict[str, Any] = {}
    for section in SECTIONS:
        value = {**base.get(section, {}), **extra.get(section, {})}
        if section in ("points", "lines"):
            for key, names in value.items():
                if isinstance(names, str):
                    value[key] = [names]
                elif not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                    raise InvalidInput(f"field mapping {section}.{key}: expected a list of field names")
        merged[section] = value
    return FieldMapping(**merged)


def rename_columns(frame: pd.DataFrame, aliases: dict[str, list[str]]) -> pd.DataFrame:
    """Source columns renamed to canonical names; unmapped columns are kept as they are."""
    by_lower: dict[str, str] = {}
    for column in frame.columns:
        by_lower.setdefault(str(column).strip().lower(), column)
    renames: dict[Any, str] = {}
    taken: set[Any] = set()
    for canonical, names in aliases.items():
        for name in names:
            column = by_lower.get(name.strip().lower())
            if column is not None and column not in taken and column != "geometry":
                renames[column] = canonical
                taken.add(column)
                break
    kept = [c for c in frame.columns if c not in taken and c in set(renames.values())]
    frame = frame.drop(columns=kept)  # a source column named like a canonical one that lost
    return frame.rename(columns=renames)


def numbers(frame: pd.DataFrame, columns: tuple[str, ...]) -> None:
    """Numeric columns in place; text such as '1.20m' keeps its number, the rest becomes NaN."""
    for name in columns:
        if name in frame.columns and frame[name].dtype.kind not in "iuf":
            text = frame[name].astype(str).str.extract(r"(-?\d+(?:\.\d+)?)", expand=False)
            frame[name] = pd.to_numeric(text, errors="coerce")


def parse_size(value: Any) -> tuple[float, float, float]:
    """(diameter, width, height) in mm from 'DN300', 'Φ300', '300', '1000×800' (NaN where none).

    Values below 10 with no unit are taken as metres (EPANET and SWMM sizes, box culverts in m).
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return (math.nan, math.nan, math.nan)
    match = SIZE_PATTERN.match(str(value).strip())
    if not match:
        return (math.nan, math.nan, math.nan)
    first, second, unit = match.groups()
    scale = (
        1000.0
        if unit == "m" or (unit is None and float(first) < 10 and (second is None or float(second) < 10))
        else 1.0
    )
    if second is None:
        return (float(first) * scale, math.nan, math.nan)
    return (math.nan, float(first) * scale, float(second) * scale)


def sizes(frame: pd.DataFrame) -> None:
    """Fill `diameter`, `width`, `height` (mm) from a `size` column, keeping given values."""
    numbers(frame, ("diameter", "width", "height"))
    if "size" not in frame.columns:
        return
    parsed = np.array([parse_size(v) for v in frame["size"].tolist()], dtype=float).reshape(-1, 3)
    for k, name in enumerate(("diameter", "width", "height")):
        given = frame[name].to_numpy(dtype=float) if name in frame.columns else np.full(len(frame), np.nan)
        frame[name] = np.where(np.isnan(given), parsed[:, k], given)


def years(frame: pd.DataFrame) -> None:
    """`year` as an integer year (from 2005, '2005-06', '2005年')."""
    if "year" not in frame.columns:
        return
    text = frame["year"].astype(str).str.extract(r"((?:18|19|20)\d\d)", expand=False)
    frame["year"] = pd.to_numeric(text, errors="coerce").astype("Int64")


def flag(value: Any) -> bool | None:
    """A yes/no field as a boolean; None when missing or unreadable."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | float | np.integer | np.floating):
        return bool(value)
    text = str(value).strip().lower()
    return True if text in TRUE_WORDS else False if text in FALSE_WORDS else None


def flags(frame: pd.DataFrame, columns: tuple[str, ...]) -> None:
    for name in columns:
        if name in frame.columns:
            frame[name] = pd.array([flag(v) for v in frame[name].tolist()], dtype="boolean")


def statuses(frame: pd.DataFrame) -> None:
    """Valve `status` as 'open'/'closed' (开/关, 常开/常闭)."""
    if "status" in frame.columns:
        frame["status"] = [
            STATUS_WORDS.get(str(v).strip().lower()) if isinstance(v, str) else None for v in frame["status"].tolist()
        ]


def node_types(frame: pd.DataFrame, mapping: FieldMapping) -> None:
    """`type` from the appurtenance, else the feature, when the table has no type of its own."""
    table = mapping.node_types

    def from_text(value: Any) -> str | None:
        if not isinstance(value, str) or not value.strip():
            return None
        text = value.strip()
        return table.get(text) or table.get(text.lower())

    given = frame["type"].tolist() if "type" in frame.columns else [None] * len(frame)
    appurtenance = frame["appurtenance"].tolist() if "appurtenance" in frame.columns else [None] * len(frame)
    feature = frame["feature"].tolist() if "feature" in frame.columns else [None] * len(frame)
    frame["type"] = [
        (from_text(t) or (t.strip() if isinstance(t, str) and t.strip() else None))
        or from_text(a)
        or from_text(f)
        or "junction"
        for t, a, f in zip(given, appurtenance, feature, strict=True)
    ]
