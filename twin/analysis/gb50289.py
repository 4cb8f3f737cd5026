"""GB 50289-2016 clear distances as data: the table file, its classes and vectorised lookups.

The values live in `data/gb50289.json` (Table 4.1.9, horizontal; Table 4.1.14, vertical), one
entry per cell with the standard's own class names, so the file can be checked against the
printed standard line by line. This module only reads it: which class a pipe belongs to, and
the rule (if any) for a pair of classes.

A pipe's classes are a tuple, most specific first (a DN150 water pipe is `water_le200`, then
`water`): a pair takes the entries of the first class combination the table has a cell for.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from twin.model import InvalidInput

TABLE_FILE = Path(__file__).parent / "data" / "gb50289.json"
HORIZONTAL = "4.1.9"
VERTICAL = "4.1.14"
BUILDING = ("building",)

GAS_PRESSURE = {
    "low": "gas_low",
    "低压": "gas_low",
    "medium_b": "gas_medium_b",
    "中压b": "gas_medium_b",
    "medium_a": "gas_medium_a",
    "中压a": "gas_medium_a",
    "medium": "gas_medium_a",
    "中压": "gas_medium_a",
    "sub_high_b": "gas_sub_high_b",
    "次高压b": "gas_sub_high_b",
    "sub_high_a": "gas_sub_high_a",
    "次高压a": "gas_sub_high_a",
    "sub_high": "gas_sub_high_a",
    "次高压": "gas_sub_high_a",
}
"""Pressure words to table classes; a class without A/B is read as the stricter A."""

DEFAULT_GAS = "gas_medium_a"
DIRECT_BURIAL = ("直埋", "direct", "buried", "direct_buried")


@dataclass(frozen=True)
class Rule:
    """One cell of a table: the minimum clear distance between classes `a` and `b`."""

    table: str
    a: str
    b: str
    min: float
    note: str | None = None
    larger_dn_max: float | None = None
    larger_dn_over: float | None = None

    def applies(self, larger_dn: float) -> bool:
        if self.larger_dn_max is not None and not larger_dn <= self.larger_dn_max:
            return False
        return self.larger_dn_over is None or larger_dn > self.larger_dn_over


class ClearanceTable:
    """The standard's tables, checked when read (every class named is declared, values positive)."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.standard: str = data["standard"]
        self.title: str = data["title"]
        self.classes: dict[str, str] = dict(data["classes"])
        self.rules: list[Rule] = []
        self.table_titles: dict[str, str] = {}
        self._cells: dict[str, dict[frozenset[str], list[int]]] = {}
        for table, content in data["tables"].items():
            self.table_titles[table] = content["title"]
            cells = self._cells.setdefault(table, {})
            for entry in content["entries"]:
                rule = Rule(table=table, **entry)
                for name in (rule.a, rule.b):
                    if name not in self.classes:
                        raise InvalidInput(f"GB 50289 table {table}: class {name!r} is not declared")
                if not rule.min > 0:
                    raise InvalidInput(f"GB 50289 table {table}: {rule.a}/{rule.b} needs a positive distance")
                cell = cells.setdefault(frozenset((rule.a, rule.b)), [])
                if any(self.rules[i].larger_dn_max is None and self.rules[i].larger_dn_over is None for i in cell):
                    raise InvalidInput(f"GB 50289 table {table}: {rule.a}/{rule.b} is given twice")
                cell.append(len(self.rules))
                self.rules.append(rule)

    @classmethod
    def read(cls, path: Path = TABLE_FILE) -> ClearanceTable:
        return cls(json.loads(Path(path).read_text(encoding="utf-8")))

    def rule_indices(self, table: str, keys_a: Sequence[str], keys_b: Sequence[str]) -> list[int]:
        """The entries of the most specific class combination with a cell in `table`."""
        cells = self._cells[table]
        for a in keys_a:
            for b in keys_b:
                found = cells.get(frozenset((a, b)))
                if found:
                    return found
        return []

    def lookup(
        self, table: str, keys_a: Sequence[str], keys_b: Sequence[str], larger_dn: float = np.nan
    ) -> Rule | None:
        """The rule for one pair, or None where the standard sets no distance."""
        for i in self.rule_indices(table, keys_a, keys_b):
            if self.rules[i].applies(larger_dn):
                return self.rules[i]
        return None

    def resolve(
        self,
        table: str,
        classes: Sequence[tuple[str, ...]],
        class_a: np.ndarray,
        class_b: np.ndarray,
        larger_dn: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Required distance and rule index per pair (NaN and -1 where no rule applies).

        `classes` lists the distinct class tuples; `class_a`/`class_b` index into it. The work
        is per distinct combination, so it costs a few dictionary look-ups whatever the pairs.
        """
        n = len(class_a)
        required = np.full(n, np.nan)
        rule = np.full(n, -1, dtype=np.int64)
        if not n:
            return required, rule
        k = len(classes)
        combo = np.asarray(class_a, dtype=np.int64) * k + np.asarray(class_b, dtype=np.int64)
        uniq, inverse = np.unique(combo, return_inverse=True)
        for u, code in enumerate(uniq.tolist()):
            indices = self.rule_indices(table, classes[code // k], classes[code % k])
            if not indices:
                continue
            members = np.flatnonzero(inverse == u)
            for i in indices:
                r = self.rules[i]
                fits = np.ones(len(members), dtype=bool)
                if r.larger_dn_max is not None:
                    fits &= larger_dn[members] <= r.larger_dn_max
                if r.larger_dn_over is not None:
                    fits &= larger_dn[members] > r.larger_dn_over
                chosen = members[fits & (rule[members] < 0)]
                required[chosen] = r.min
                rule[chosen] = i
        return required, rule

    def cite(self, index: int) -> dict[str, Any]:
        """How a violation names its rule: standard, table, the two classes and the value."""
        r = self.rules[index]
        cited = {
            "standard": self.standard,
            "table": r.table,
            "a": self.classes[r.a],
            "b": self.classes[r.b],
            "min": r.min,
        }
        if r.note:
            cited["note"] = r.note
        return cited


@lru_cache(maxsize=1)
def default_table() -> ClearanceTable:
    """The table shipped with the twin, read once."""
    return ClearanceTable.read()


def pipe_classes(family: str, nominal_mm: float, properties: dict[str, Any] | None) -> tuple[str, ...]:
    """A pipe's table classes, most specific first; empty for classes the standard omits.

    Water splits at d = 200 mm (unknown size: only the size-free cells apply). A gas pipe
    without a pressure class is read as medium pressure A, the strictest of the low and medium
    classes; power and telecom lines are direct-buried unless `burial` says otherwise.
    """
    props = properties or {}
    if family == "water":
        if not np.isfinite(nominal_mm):
            return ("water",)
        return ("water_le200" if nominal_mm <= 200 else "water_gt200", "water")
    if family in ("drainage", "reclaimed", "trench"):
        return (family,)
    if family == "gas":
        word = str(props.get("pressure") or "").strip().lower().replace("-", "_").replace(" ", "_")
        if word in ("high", "高压"):  # high-pressure gas is GB 50028's, not in these tables
            return ("gas",)
        return (GAS_PRESSURE.get(word, DEFAULT_GAS), "gas")
    if family == "heat":
        return ("heat_direct", "heat")
    if family in ("power", "telecom"):
        burial = str(props.get("burial") or "直埋").strip().lower()
        return (f"{family}_direct" if burial in DIRECT_BURIAL else f"{family}_duct",)
    return ()
