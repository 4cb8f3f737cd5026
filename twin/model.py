"""The twin's data model: layers, feature versions and time filters.

Plain dataclasses shared by the store backends, the readers and the web layer, so that none of
them depends on another's representation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from shapely.geometry.base import BaseGeometry


class TwinError(Exception):
    """Base of the errors a user caused (bad input); the CLI exits 2, the API answers 4xx."""

    status = 400


class NotFound(TwinError):
    status = 404


class InvalidInput(TwinError):
    status = 400


class Conflict(TwinError):
    status = 409


class LayerKind(StrEnum):
    vector = "vector"
    pipe_network = "pipe_network"
    bim = "bim"
    mesh = "mesh"
    pointcloud = "pointcloud"
    raster = "raster"
    terrain = "terrain"
    sensor = "sensor"
    citymodel = "citymodel"  # CityGML / CityJSON buildings with their LOD geometry
    tileset = "tileset"  # an existing 3D Tiles tileset registered and served as it is


class Scenario(StrEnum):
    current = "current"
    planned = "planned"


SCALE_BANDS = ("1:500", "1:2000", "1:10000")
LAYER_ID = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
RESERVED_PREFIXES = ("gpkg_", "rtree_", "sqlite_", "twin_")


def check_layer_id(layer_id: str) -> str:
    """Layer ids become table names, so only a safe identifier is accepted."""
    if not LAYER_ID.match(layer_id or ""):
        raise InvalidInput(
            f"invalid layer id {layer_id!r}: use lower-case letters, digits and '_', "
            "starting with a letter (at most 63 characters)"
        )
    if layer_id.startswith(RESERVED_PREFIXES):
        raise InvalidInput(f"invalid layer id {layer_id!r}: names starting with {RESERVED_PREFIXES} are reserved")
    return layer_id


@dataclass
class Layer:
    """A layer's description; bbox, time extent and version are kept by the store."""

    id: str
    kind: LayerKind = LayerKind.vector
    title: str = ""
    scale_band: str | None = None
    scenario: Scenario = Scenario.current
    source: str | None = None
    source_crs: str | None = None
    geometry_type: str | None = None
    schema: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    bbox: tuple[float, float, float, float] | None = None
    time_extent: tuple[datetime | None, datetime | None] | None = None
    version: int = 0
    feature_count: int = 0

    def __post_init__(self) -> None:
        check_layer_id(self.id)
        self.kind = LayerKind(self.kind)
        self.scenario = Scenario(self.scenario)
        if self.scale_band is not None and self.scale_band not in SCALE_BANDS:
            raise InvalidInput(f"invalid scale band {self.scale_band!r}; expected one of {', '.join(SCALE_BANDS)}")
        if not self.title:
            self.title = self.id


@dataclass
class FeatureInput:
    """A feature as a reader hands it to the store: the store assigns versions and times."""

    fid: str
    geometry: BaseGeometry | None
    properties: dict[str, Any]


@dataclass
class Feature:
    """One stored version of a feature."""

    layer: str
    fid: str
    version: int
    valid_from: datetime
    valid_to: datetime | None
    geometry: BaseGeometry | None
    properties: dict[str, Any]


@dataclass
class WriteReport:
    """What a write did, so a user can see that an ingest changed what they expected."""

    layer: str
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    closed: int = 0
    layer_version: int = 0
    # project-CRS box of everything the write touched (new versions and closed ones), for caches
    changed_bbox: tuple[float, float, float, float] | None = None

    def as_dict(self) -> dict[str, int | str]:
        return dict(self.__dict__)


def utc(value: datetime) -> datetime:
    """Naive datetimes are taken as UTC; the store keeps UTC to the millisecond (GeoPackage's)."""
    value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def now_utc() -> datetime:
    return utc(datetime.now(UTC))


def parse_instant(text: str) -> datetime:
    """An RFC 3339 instant or a date; a date means its midnight UTC."""
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    try:
        return utc(datetime.fromisoformat(value))
    except ValueError as exc:
        raise InvalidInput(f"invalid datetime {text!r}: expected RFC 3339, e.g. 2020-01-01T00:00:00Z") from exc


@dataclass(frozen=True)
class TimeFilter:
    """An instant or a closed/half-open interval, as OGC API Features' `datetime` parameter.

    A feature version matches an instant t when valid_from <= t < valid_to, and an interval
    [start, end] when it was valid at any moment of it.
    """

    start: datetime | None
    end: datetime | None
    instant: bool = False

    @classmethod
    def at(cls, when: datetime) -> TimeFilter:
        when = utc(when)
        return cls(when, when, instant=True)

    @classmethod
    def parse(cls, text: str | None) -> TimeFilter | None:
        if text is None or not text.strip():
            return None
        if "/" not in text:
            return cls.at(parse_instant(text))
        parts = text.split("/")
        if len(parts) != 2:
            raise InvalidInput(f"invalid datetime interval {text!r}: expected START/END")
        start, end = (None if p.strip() in ("", "..") else parse_instant(p) for p in parts)
        if start is None and end is None:
            return None
        if start is not None and end is not None and start > end:
            raise InvalidInput(f"invalid datetime interval {text!r}: start is after end")
        return cls(start, end)


@dataclass(frozen=True)
class BBox:
    """An axis-aligned box; checked once here so that backends can trust it."""

    minx: float
    miny: float
    maxx: float
    maxy: float

    def __post_init__(self) -> None:
        values = (self.minx, self.miny, self.maxx, self.maxy)
        if any(v != v or v in (float("inf"), float("-inf")) for v in values):
            raise InvalidInput("invalid bbox: values must be finite numbers")
        if self.minx > self.maxx or self.miny > self.maxy:
            raise InvalidInput(f"invalid bbox {values}: minimum is greater than maximum (expected minx,miny,maxx,maxy)")

    @classmethod
    def parse(cls, text: str | None) -> BBox | None:
        if text is None or not text.strip():
            return None
        try:
            values = [float(v) for v in text.split(",")]
        except ValueError as exc:
            raise InvalidInput(f"invalid bbox {text!r}: expected four numbers minx,miny,maxx,maxy") from exc
        if len(values) == 6:  # 3D bbox: drop the heights
            values = [values[0], values[1], values[3], values[4]]
        if len(values) != 4:
            raise InvalidInput(f"invalid bbox {text!r}: expected four numbers minx,miny,maxx,maxy")
        return cls(*values)

    def as_tuple(self) -> tuple[float, float, float, float]:
        return (self.minx, self.miny, self.maxx, self.maxy)


@dataclass
class Observation:
    """A sensor reading (the SensorThings Observation, keyed by sensor and quantity)."""

    sensor_id: str
    time: datetime
    quantity: str
    value: float
    unit: str = ""
