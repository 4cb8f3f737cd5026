"""The tile cache: built tiles in one SQLite file of the data directory, shared by processes.

Rows are keyed by tileset key (name, scenario and composition), z/x/y and variant (the
`datetime` asked for). The cache also remembers which layer versions its rows agree with and
the last store change it has seen. When the store's layers move on, `sync` reads the store's
change log and deletes only the tiles whose buffered area meets what each write touched (at
every zoom); without a usable log, every tile of the tilesets holding that layer goes. A tile
built from versions older than the cache already knows is not stored, so a build racing an
ingest cannot put back a stale tile.
"""

from __future__ import annotations

import json
import math
import sqlite3
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from tiles.vector.tms import BUFFER, EXTENT, MAX_ZOOM, mercator_bounds, tile_range, tile_size
from twin import sqlite_wal
from twin.model import BBox
from twin.per_thread import PerThread
from twin.store import Store
from twin.store.base import LayerChange

SCHEMA = """
CREATE TABLE IF NOT EXISTS tiles (
  tileset TEXT NOT NULL, z INTEGER NOT NULL, x INTEGER NOT NULL, y INTEGER NOT NULL, variant TEXT NOT NULL,
  data BLOB NOT NULL, etag TEXT NOT NULL, PRIMARY KEY (tileset, z, x, y, variant)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tilesets (key TEXT PRIMARY KEY, name TEXT NOT NULL, layers TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS layer_versions (layer TEXT PRIMARY KEY, version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


@dataclass(frozen=True)
class CachedTile:
    data: bytes  # gzip-compressed MVT; b'' for an empty tile
    etag: str


class TileCache:
    """Thread-safe (a connection per thread) and safe across processes (SQLite WAL)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._connections = PerThread(self._connect, sqlite3.Connection.close)
        self.con.executescript(SCHEMA)

    @property
    def con(self) -> sqlite3.Connection:
        """This thread's connection."""
        return self._connections.get()

    def _connect(self) -> sqlite3.Connection:
        return sqlite_wal.connect(self.path)

    def _transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        return sqlite_wal.immediate(self.con)

    def close(self) -> None:
        self._connections.close_all()

    # ----- tiles ------------------------------------------------------------------------------
    def get(self, key: str, z: int, x: int, y: int, variant: str) -> CachedTile | None:
        row = self.con.execute(
            "SELECT data, etag FROM tiles WHERE tileset = ? AND z = ? AND x = ? AND y = ? AND variant = ?",
            (key, z, x, y, variant),
        ).fetchone()
        return None if row is None else CachedTile(row[0], row[1])

    def put(
        self,
        key: str,
        name: str,
        versions: dict[str, int],
        z: int,
        x: int,
        y: int,
        variant: str,
        tile: CachedTile,
    ) -> bool:
        """Store a tile built from `versions` of its layers, unless the cache has moved past them."""
        with self._transaction() as con:
            if self._known(con, versions) != versions:
                return False
            con.execute("INSERT OR IGNORE INTO tilesets VALUES (?, ?, ?)", (key, name, json.dumps(sorted(versions))))
            con.execute(
                "INSERT OR REPLACE INTO tiles VALUES (?, ?, ?, ?, ?, ?, ?)",
                (key, z, x, y, variant, tile.data, tile.etag),
            )
        return True

    @staticmethod
    def _known(con: sqlite3.Connection, versions: dict[str, int]) -> dict[str, int]:
        ids = json.dumps(sorted(versions))
        rows = con.execute(
            "SELECT layer, version FROM layer_versions WHERE layer IN (SELECT value FROM json_each(?))", (ids,)
        ).fetchall()
        return dict(rows)

    def count(self, key: str | None = None) -> int:
        if key is None:
            return self.con.execute("SELECT count(*) FROM tiles").fetchone()[0]
        return self.con.execute("SELECT count(*) FROM tiles WHERE tileset = ?", (key,)).fetchone()[0]

    # ----- invalidation -----------------------------------------------------------------------
    def sync(self, store: Store, versions: dict[str, int]) -> int:
        """Bring the cache in step with the store's layer versions; returns tiles deleted."""
        with self._transaction() as con:
            known = dict(con.execute("SELECT layer, version FROM layer_versions").fetchall())
            seen = con.execute("SELECT value FROM state WHERE key = 'seq'").fetchone()
            changed = sorted(lid for lid in versions.keys() | known.keys() if versions.get(lid) != known.get(lid))
            if seen is None:  # a new cache, or one whose history is unknown: start clean
                deleted = con.execute("DELETE FROM tiles").rowcount
                log = store.layer_changes(0) or []
            else:
                deleted = 0
                log = store.layer_changes(seen[0]) if changed else []
                by_layer: dict[str, list[LayerChange]] = {}
                for change in log or []:
                    by_layer.setdefault(change.layer, []).append(change)
                for layer_id in changed:
                    deleted += self._invalidate(
                        con, store.crs, layer_id, known.get(layer_id), versions.get(layer_id),
                        None if log is None else by_layer.get(layer_id, []),
                    )  # fmt: skip
            con.execute("DELETE FROM layer_versions")
            con.executemany("INSERT INTO layer_versions VALUES (?, ?)", sorted(versions.items()))
            last = max((c.seq for c in log or []), default=seen[0] if seen else 0)
            con.execute("INSERT OR REPLACE INTO state VALUES ('seq', ?)", (last,))
        return deleted

    def _invalidate(
        self,
        con: sqlite3.Connection,
        crs: str,
        layer_id: str,
        old: int | None,
        new: int | None,
        changes: list[LayerChange] | None,
    ) -> int:
        keys = [
            key
            for key, layers in con.execute("SELECT key, layers FROM tilesets").fetchall()
            if layer_id in json.loads(layers)
        ]
        if not keys or old is None:
            return 0  # no cached tileset holds this layer yet
        boxes = _touched(old, new, changes)
        marks = ",".join("?" * len(keys))
        if boxes is None:
            return con.execute(f"DELETE FROM tiles WHERE tileset IN ({marks})", keys).rowcount
        deleted = 0
        for box in boxes:
            bounds = mercator_bounds(BBox(*box), crs)
            for z in range(MAX_ZOOM + 1):
                margin = tile_size(z) * BUFFER / EXTENT
                grown = (bounds[0] - margin, bounds[1] - margin, bounds[2] + margin, bounds[3] + margin)
                xmin, ymin, xmax, ymax = tile_range(grown, z)
                deleted += con.execute(
                    f"DELETE FROM tiles WHERE tileset IN ({marks}) AND z = ? AND x BETWEEN ? AND ? "
                    "AND y BETWEEN ? AND ?",
                    [*keys, z, xmin, xmax, ymin, ymax],
                ).rowcount
        return deleted


def _touched(old: int, new: int | None, changes: list[LayerChange] | None) -> list[tuple] | None:
    """The boxes the writes from version `old` to `new` touched, or None when that is not known
    (no log, a gap in it, a deleted layer): then the whole layer counts as changed."""
    if changes is None or new is None or new < old:
        return None
    versions = {c.version for c in changes}
    if not set(range(old + 1, new + 1)) <= versions:
        return None
    boxes = []
    for change in changes:
        if change.bbox is None:
            continue  # the write changed nothing
        if not all(math.isfinite(v) for v in change.bbox):
            return None
        boxes.append(change.bbox)
    return boxes
