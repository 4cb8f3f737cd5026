"""The store contract: one interface that the GeoPackage and PostGIS backends both fulfil.

Everything above the store (readers, tile builders, analyses, the API) talks to this interface
only, and `tests/test_store_contract.py` runs the same suite against each backend.
"""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from twin.assets import AssetStore
from twin.model import (
    BBox,
    Feature,
    FeatureInput,
    InvalidInput,
    Layer,
    Observation,
    TimeFilter,
    WriteReport,
)

T = TypeVar("T")
PROPERTY_KEY_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")
LAYER_DESCRIPTION_FIELDS = (
    "id",
    "kind",
    "title",
    "scale_band",
    "scenario",
    "source",
    "source_crs",
    "geometry_type",
    "schema",
    "metadata",
)


class StoreUnavailable(ConnectionError):
    """The store's server cannot be reached: a service outage (503), not the user's mistake."""


class WriteMode(StrEnum):
    """How a batch of features relates to what the layer already holds."""

    upsert = "upsert"  # touch only the features given
    replace = "replace"  # a new edition: features not given are closed (valid_to = valid_from)


@dataclass
class QueryResult:
    features: list[Feature]
    number_matched: int | None


@dataclass
class FeatureArrays:
    """Feature versions as arrays (ids, shapely geometries, properties as stored JSON text), for
    readers that process many at once, such as the vector tile builder."""

    fids: list[str]
    geometries: Any  # numpy array of shapely geometries (None where a feature has none)
    properties: list[str]


@dataclass(frozen=True)
class TileQuery:
    """One MVT layer's worth of a tile, for a backend that builds tiles itself (PostGIS ST_AsMVT).

    `bounds` is the tile in EPSG:3857 and `bbox` the same area (with the buffer) in the project
    CRS for the index. Thresholds are EPSG:3857 metres: simplify to `tolerance`, drop polygons
    under `min_area` and lines under `min_length`, keep one point per `point_cell` grid cell
    (smallest feature id first; 0 keeps all).
    """

    bounds: tuple[float, float, float, float]
    bbox: BBox
    extent: int
    buffer: int
    tolerance: float
    min_area: float
    min_length: float
    point_cell: float
    time: TimeFilter | None = None


WHOLE_LAYER = (-math.inf, -math.inf, math.inf, math.inf)  # the box a change log gives a deleted layer


@dataclass(frozen=True)
class LayerChange:
    """One recorded write: the layer, the version it produced, and the project-CRS box of what it
    touched (None: nothing; `WHOLE_LAYER`: everything, e.g. when the layer was deleted). `seq`
    orders changes store-wide."""

    seq: int
    layer: str
    version: int
    bbox: tuple[float, float, float, float] | None


BOOLEAN_WORDS = ("true", "false")


def typed_filter_value(text: str) -> Any:
    """A query-string value compared as the JSON value a user means: 5 matches 5 and 5.0."""
    if text in BOOLEAN_WORDS:
        return text == "true"
    try:
        number = float(text)
    except ValueError:
        return text
    if math.isfinite(number):
        return int(number) if number.is_integer() else number
    return text


def check_property_key(key: str) -> str:
    """Property names reach SQL inside JSON paths, so only plain names are accepted."""
    if not key or set(key) - PROPERTY_KEY_CHARS:
        raise InvalidInput(f"invalid property name {key!r} in filter")
    return key


def layer_description(layer: Layer) -> str:
    """The layer's own fields as JSON; bbox, counts and times are the store's to compute."""
    return json.dumps({k: getattr(layer, k) for k in LAYER_DESCRIPTION_FIELDS}, ensure_ascii=False, default=str)


def chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Batches of `size` from any iterable, so a write never holds a whole file's features twice."""
    chunk: list[T] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def properties_json(properties: dict[str, Any]) -> str:
    """Canonical JSON so that equal properties compare equal as text across versions."""
    try:
        return json.dumps(properties, sort_keys=True, ensure_ascii=False, allow_nan=False, default=str)
    except ValueError as exc:
        raise InvalidInput(f"feature properties are not valid JSON values: {exc}") from exc


def merged_bounds(*boxes: Any) -> tuple[float, float, float, float] | None:
    """One (minx, miny, maxx, maxy) around boxes given as 4-sequences or (n, 4) arrays; NaN and
    None are skipped; None when nothing is left."""
    import numpy as np

    rows = [np.asarray(b, dtype=float).reshape(-1, 4) for b in boxes if b is not None]
    if not rows:
        return None
    stacked = np.concatenate(rows)
    stacked = stacked[~np.isnan(stacked).any(axis=1)]
    if not len(stacked):
        return None
    low, high = stacked[:, :2].min(axis=0), stacked[:, 2:].max(axis=0)
    return (float(low[0]), float(low[1]), float(high[0]), float(high[1]))


class Store(ABC):
    """A twin's spatiotemporal store (project CRS, layers, feature versions, observations)."""

    data_dir: Path
    crs: str
    assets: AssetStore

    # ----- project ------------------------------------------------------------------------
    @abstractmethod
    def get_meta(self, key: str, default: str | None = None) -> str | None: ...

    @abstractmethod
    def set_meta(self, key: str, value: str) -> None: ...

    @abstractmethod
    def ping(self) -> None:
        """Raise if the store cannot be reached (for /health and /ready)."""

    @abstractmethod
    def close(self) -> None: ...

    # ----- layers -------------------------------------------------------------------------
    @abstractmethod
    def list_layers(self) -> list[Layer]: ...

    @abstractmethod
    def get_layer(self, layer_id: str) -> Layer:
        """The layer with its bbox, time extent, version and count; NotFound if absent."""

    @abstractmethod
    def put_layer(self, layer: Layer) -> Layer:
        """Create a layer or update its description (features untouched)."""

    @abstractmethod
    def delete_layer(self, layer_id: str) -> None: ...

    # ----- features -----------------------------------------------------------------------
    @abstractmethod
    def write_features(
        self,
        layer: Layer,
        features: Iterable[FeatureInput],
        *,
        valid_from: datetime | None = None,
        mode: WriteMode = WriteMode.upsert,
    ) -> WriteReport:
        """Write a batch in one transaction: all of it lands or none of it does.

        Creates the layer if it is new (or updates its description). A feature whose geometry or
        properties differ from its open version closes that version at `valid_from` and opens
        the next; an identical one is left alone; nothing is overwritten. `valid_from` defaults
        to now. Geometries are in the project CRS.
        """

    @abstractmethod
    def close_features(self, layer_id: str, fids: Iterable[str], at: datetime | None = None) -> int:
        """End the open versions of these features (demolition, removal); returns how many."""

    @abstractmethod
    def query(
        self,
        layer_id: str,
        *,
        bbox: BBox | None = None,
        time: TimeFilter | None = None,
        filters: dict[str, str] | None = None,
        limit: int | None = 100,
        offset: int = 0,
        count: bool = False,
    ) -> QueryResult:
        """Feature versions in `bbox` (project CRS) valid at `time` (default: now).

        `filters` compare properties by equality (see `typed_filter_value`). Results are in
        a stable order so that limit/offset pages do not overlap; `number_matched` is filled
        when `count` is true.
        """

    @abstractmethod
    def get_feature(self, layer_id: str, fid: str, time: TimeFilter | None = None) -> Feature:
        """The version of `fid` valid at `time` (default: now); NotFound if none."""

    @abstractmethod
    def history(self, layer_id: str, fid: str) -> list[Feature]:
        """Every version of a feature, oldest first."""

    def iter_features(
        self, layer_id: str, *, bbox: BBox | None = None, time: TimeFilter | None = None, page: int = 5000
    ) -> Iterator[Feature]:
        """All matching features, fetched page by page."""
        offset = 0
        while True:
            result = self.query(layer_id, bbox=bbox, time=time, limit=page, offset=offset)
            yield from result.features
            if len(result.features) < page:
                return
            offset += page

    def feature_versions(self, layer_id: str, time: TimeFilter | None = None) -> list[tuple[str, int]]:
        """(feature id, version) of the features valid at `time` (default now): what a derived
        product (a 3D Tiles build) depends on, without reading any geometry."""
        return [(f.fid, f.version) for f in self.iter_features(layer_id, time=time)]

    # ----- observations -------------------------------------------------------------------
    @abstractmethod
    def add_observations(self, observations: Iterable[Observation]) -> int:
        """Append sensor readings in one transaction; returns how many."""

    @abstractmethod
    def query_observations(
        self,
        sensor_id: str,
        *,
        time: TimeFilter | None = None,
        quantity: str | None = None,
        limit: int | None = None,
    ) -> list[Observation]:
        """Readings of one sensor in time order; `time` None means all."""

    # ----- readers that work in bulk (vector tiles); backends may answer faster ------------
    def feature_arrays(self, layer_id: str, *, bbox: BBox, time: TimeFilter | None = None) -> FeatureArrays:
        """Versions valid at `time` (default now) that may meet `bbox`, ordered by feature id.

        Envelope candidates are enough: callers clip. This default goes through `query`.
        """
        import numpy as np

        features = sorted(self.iter_features(layer_id, bbox=bbox, time=time), key=lambda f: f.fid)
        return FeatureArrays(
            [f.fid for f in features],
            np.array([f.geometry for f in features], dtype=object),
            [properties_json(f.properties) for f in features],
        )

    def mvt_layer(self, name: str, layer_ids: Iterable[str], query: TileQuery) -> bytes | None:
        """The MVT bytes of one tile layer built by the database, or None when this backend does not
        build tiles (the caller then encodes `feature_arrays` itself)."""
        return None

    def layer_versions(self) -> dict[str, int]:
        """Every layer's current version, for caches that must notice writes."""
        return {layer.id: layer.version for layer in self.list_layers()}

    def change_token(self) -> Any:
        """A value that changes whenever anything may have been written, and costs next to nothing
        to read; None when the backend has none (callers then re-read versions now and then)."""
        return None

    def layer_changes(self, since: int) -> list[LayerChange] | None:
        """Changes recorded after sequence number `since`, oldest first; None when this backend keeps
        no record (callers must then assume any layer whose version moved changed everywhere)."""
        return None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
