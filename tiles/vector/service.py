"""Serving tiles: resolve the tileset, answer from memory or the cache, else build and cache.

One `TileService` per process and store. It keeps a snapshot of the layers and notices writes
through `Store.change_token` (a few microseconds on the GeoPackage backend; backends without
a token are re-checked every `ttl` seconds); when layer versions moved it syncs the tile cache,
which drops only the tiles the writes touched. Tiles are kept gzip-compressed, with a strong
ETag computed from the uncompressed bytes.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import os
import threading
import time as clock
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tiles.vector import tilesets as ts
from tiles.vector.build import TileBuilder
from tiles.vector.cache import CachedTile, TileCache
from tiles.vector.tms import check_tile
from tiles.vector.zooms import band_zooms
from twin.crs import CRS84, transform_bbox
from twin.model import BBox, Layer, Scenario, TimeFilter, TwinError
from twin.store import Store

CACHE_FILE = Path("cache") / "vector_tiles.sqlite"
MEMORY_BYTES = 64 * 2**20
VERSION_TTL = 1.0  # seconds between version checks on a store without a change token
CHECK_INTERVAL = 0.25  # seconds a thread trusts its last look at the change token


@dataclass(frozen=True)
class TileResult:
    data: bytes  # gzip-compressed MVT; b'' when the tile is empty
    etag: str  # strong ETag of the uncompressed tile, quoted
    built: bool = False  # built for this request (a cache miss)

    @property
    def empty(self) -> bool:
        return not self.data


@dataclass
class Snapshot:
    """The layers as last read, and the tilesets resolved from them (filled on demand)."""

    checked: float
    layers: dict[str, Layer]
    versions: dict[str, int]
    band_zooms: dict[str, tuple[int, int]]
    hidden: frozenset[str]  # layers an anonymous request may not read
    resolved: dict[tuple[str, Scenario, bool], tuple[ts.Tileset, str]] = field(default_factory=dict)


def variant_key(time: TimeFilter | None) -> str:
    """The cache variant of a `datetime`: '' for now, else the instant or interval in UTC."""
    if time is None:
        return ""
    if time.instant and time.start is not None:
        return time.start.isoformat()

    def end(value: Any) -> str:
        return ".." if value is None else value.isoformat()

    return f"{end(time.start)}/{end(time.end)}"


def etag_of(raw: bytes) -> str:
    return '"' + hashlib.blake2b(raw, digest_size=12).hexdigest() + '"'


class LruCache:
    """Recently served tiles in memory, bounded in bytes."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.size = 0
        self.items: OrderedDict[tuple, TileResult] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: tuple) -> TileResult | None:
        with self.lock:
            item = self.items.get(key)
            if item is not None:
                self.items.move_to_end(key)
            return item

    def put(self, key: tuple, item: TileResult) -> None:
        with self.lock:
            old = self.items.pop(key, None)
            if old is not None:
                self.size -= len(old.data)
            self.items[key] = item
            self.size += len(item.data)
            while self.size > self.capacity and self.items:
                _, dropped = self.items.popitem(last=False)
                self.size -= len(dropped.data)

    def clear(self) -> None:
        with self.lock:
            self.items.clear()
            self.size = 0


class TileService:
    """Vector tiles of one store: thread-safe, shared by the requests of a process."""

    def __init__(
        self,
        store: Store,
        cache_path: Path | None = None,
        ttl: float = VERSION_TTL,
        restricted: Callable[[Layer], bool] | None = None,
        check_interval: float | None = None,
    ) -> None:
        """`restricted` says which layers anonymous requests may not read: they are left out of
        the composites those requests get (the API answers 401 for the layer's own tileset).
        `check_interval` (default `TWIN_TILE_CHECK_INTERVAL` or 0.25 s) is how long a thread
        answers from its snapshot before looking at the change token again: a write shows in
        tiles at most that much later (tiles are cached by clients for longer anyway)."""
        self.store = store
        self.restricted = restricted
        self.builder = TileBuilder(store)
        self.cache = TileCache(cache_path or Path(store.data_dir) / CACHE_FILE)
        self.memory = LruCache(int(os.environ.get("TWIN_TILE_MEMORY_BYTES", MEMORY_BYTES)))
        self.ttl = ttl
        if check_interval is None:
            check_interval = float(os.environ.get("TWIN_TILE_CHECK_INTERVAL", CHECK_INTERVAL))
        self.check_interval = check_interval
        self._lock = threading.Lock()
        self._seen = threading.local()  # the last change token each thread saw
        self._snapshot: Snapshot | None = None

    def close(self) -> None:
        self.cache.close()

    # ----- layers and tilesets ----------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        """The current layers; re-read (and the cache synced) only when the store changed.

        A change token belongs to the calling thread's connection, so each thread remembers the
        last token it saw; a backend without tokens is re-read every `ttl` seconds.
        """
        snap = self._snapshot
        now = clock.monotonic()
        seen = self._seen
        if snap is not None and now - getattr(seen, "at", -math.inf) < self.check_interval:
            return snap
        token = self.store.change_token()
        if snap is not None:
            if token is None and now - snap.checked < self.ttl:
                return snap
            if token is not None and getattr(seen, "token", None) == token:
                seen.at = now
                return snap
        with self._lock:
            snap = self._refresh(self._snapshot)
        seen.token, seen.at = token, now
        return snap

    def _refresh(self, old: Snapshot | None) -> Snapshot:
        versions = self.store.layer_versions()
        layers = {layer.id: layer for layer in self.store.list_layers()}
        zooms = band_zooms(self.store)
        if old is not None and (versions, layers, zooms) == (old.versions, old.layers, old.band_zooms):
            old.checked = clock.monotonic()
            return old
        if old is None or versions != old.versions:
            self.cache.sync(self.store, versions)
        self.memory.clear()
        hidden = frozenset(lid for lid, la in layers.items() if self.restricted is not None and self.restricted(la))
        self._snapshot = Snapshot(clock.monotonic(), layers, versions, zooms, hidden)
        return self._snapshot

    def tileset(
        self, name: str, scenario: Scenario = Scenario.current, anonymous: bool = False
    ) -> tuple[ts.Tileset, str]:
        """The tileset and its cache key (name, scenario, composition); NotFound if unknown."""
        snap = self.snapshot()
        return self._resolve(snap, name, scenario, anonymous)

    @staticmethod
    def _resolve(snap: Snapshot, name: str, scenario: Scenario, anonymous: bool) -> tuple[ts.Tileset, str]:
        found = snap.resolved.get((name, scenario, anonymous))
        if found is None:
            visible = [la for la in snap.layers.values() if not (anonymous and la.id in snap.hidden)]
            tileset = ts.resolve(name, visible, scenario, snap.band_zooms)
            composition = json.dumps(
                [(m.name, m.layer_ids, m.minzoom, m.maxzoom) for m in tileset.layers], separators=(",", ":")
            )
            digest = hashlib.blake2b(composition.encode(), digest_size=6).hexdigest()
            scenario_part = scenario.value if name in ts.COMPOSITES else "-"
            found = (tileset, f"{name}/{scenario_part}/{digest}")
            snap.resolved[(name, scenario, anonymous)] = found
        return found

    # ----- tiles ------------------------------------------------------------------------------
    def cached(
        self,
        name: str,
        z: int,
        x: int,
        y: int,
        time: TimeFilter | None = None,
        scenario: Scenario = Scenario.current,
        anonymous: bool = False,
    ) -> TileResult | None:
        """A tile from memory or the cache, without building; None when it must be built (or the
        request is bad, or for a layer anonymous requests may not read: `tile` then says why)."""
        snap = self.snapshot()
        if anonymous and name in snap.hidden:
            return None
        try:
            tileset, key = self._resolve(snap, name, scenario, anonymous)
        except TwinError:
            return None
        if not (tileset.minzoom <= z <= tileset.maxzoom and 0 <= x < (1 << z) and 0 <= y < (1 << z)):
            return None
        return self._lookup(key, z, x, y, variant_key(time))

    def _lookup(self, key: str, z: int, x: int, y: int, variant: str) -> TileResult | None:
        memory_key = (key, z, x, y, variant)
        result = self.memory.get(memory_key)
        if result is None:
            stored = self.cache.get(key, z, x, y, variant)
            if stored is None:
                return None
            result = TileResult(stored.data, stored.etag)
            self.memory.put(memory_key, result)
        return result

    def tile(
        self,
        name: str,
        z: int,
        x: int,
        y: int,
        time: TimeFilter | None = None,
        scenario: Scenario = Scenario.current,
        anonymous: bool = False,
    ) -> TileResult:
        """The tile, built and cached on first request. InvalidInput/NotFound for bad requests."""
        snap = self.snapshot()
        tileset, key = self._resolve(snap, name, scenario, anonymous)
        check_tile(z, x, y, tileset.minzoom, tileset.maxzoom)
        variant = variant_key(time)
        result = self._lookup(key, z, x, y, variant)
        if result is not None:
            return result
        raw = self.builder.build(tileset, snap.layers, z, x, y, time)
        result = TileResult(gzip.compress(raw, compresslevel=6, mtime=0) if raw else b"", etag_of(raw))
        versions = {lid: snap.versions[lid] for lid in tileset.layer_ids if lid in snap.versions}
        if self.cache.put(key, name, versions, z, x, y, variant, CachedTile(result.data, result.etag)):
            self.memory.put((key, z, x, y, variant), result)
        return replace(result, built=True)

    # ----- description (TileJSON, OGC tileset metadata) ---------------------------------------
    def describe(self, name: str, scenario: Scenario = Scenario.current, anonymous: bool = False) -> dict[str, Any]:
        """Bounds (CRS84), zoom range and MVT layers of a tileset."""
        snap = self.snapshot()
        tileset, _ = self._resolve(snap, name, scenario, anonymous)
        boxes = [snap.layers[lid].bbox for lid in tileset.layer_ids if snap.layers[lid].bbox is not None]
        bounds = None
        if boxes:
            union = BBox(
                min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes)
            )
            bounds = list(transform_bbox(union, self.store.crs, CRS84).as_tuple())
        return {
            "tileset": tileset,
            "bounds": bounds,
            "vector_layers": [
                {"id": m.name, "fields": dict(m.fields), "minzoom": m.minzoom, "maxzoom": m.maxzoom}
                for m in tileset.layers
            ],
        }
