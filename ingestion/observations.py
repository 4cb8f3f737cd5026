"""Sensor readings from CSV (sensor_id, time, quantity, value, unit)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from twin.model import InvalidInput, NotFound, Observation, parse_instant

COLUMNS = ("sensor_id", "time", "quantity", "value", "unit")


def read_observations_csv(path: Path) -> list[Observation]:
    """All rows, checked: a bad row names its line number and nothing is written."""
    path = Path(path)
    if not path.is_file():
        raise NotFound(f"{path}: no such file")
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in COLUMNS[:4] if c not in (reader.fieldnames or [])]
        if missing:
            raise InvalidInput(f"{path}: missing columns {', '.join(missing)} (expected {', '.join(COLUMNS)})")
        rows = []
        for line, row in enumerate(reader, start=2):
            try:
                value = float(row["value"])
            except (TypeError, ValueError) as exc:
                raise InvalidInput(f"{path}:{line}: value {row['value']!r} is not a number") from exc
            if not math.isfinite(value):
                raise InvalidInput(f"{path}:{line}: value {row['value']!r} is not finite")
            if not row["sensor_id"]:
                raise InvalidInput(f"{path}:{line}: empty sensor_id")
            rows.append(
                Observation(row["sensor_id"], parse_instant(row["time"]), row["quantity"], value, row.get("unit") or "")
            )
    return rows
