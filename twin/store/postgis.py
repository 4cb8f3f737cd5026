"""The PostGIS store: the same contract as the GeoPackage backend on PostgreSQL + PostGIS.

Everything lives in the schema `twin`: the twin's own tables (`twin_meta`, `twin_layers`,
`twin_observations`) and one table per layer, named by the layer id, with one row per feature
version (a real PostGIS geometry in the project SRID, GiST-indexed, so `ST_AsMVT` and other
PostGIS clients can read it directly). Layer ids cannot start with `twin_`, so the two never
clash; index and sequence names also start with `twin_` for the same reason.

The web app calls the store from a thread pool: each thread has its own connection. A
connection that broke (server restart, network cut) is replaced on the next call; a server that
stays down raises `StoreUnavailable`.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import psycopg
import shapely
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.types.json import Jsonb
from pyproj import CRS

from twin.assets import AssetStore
from twin.crs import check_project_crs
from twin.model import (
    BBox,
    Feature,
    FeatureInput,
    InvalidInput,
    Layer,
    NotFound,
    Observation,
    TimeFilter,
    WriteReport,
    check_layer_id,
    now_utc,
    utc,
)
from twin.per_thread import PerThread
from twin.store.base import (
    WHOLE_LAYER,
    FeatureArrays,
    LayerChange,
    QueryResult,
    Store,
    StoreUnavailable,
    TileQuery,
    WriteMode,
    check_property_key,
    layer_description,
    merged_bounds,
    typed_filter_value,
)
from twin.store.versioning import OpenVersion, PreparedBatch, check_closable, write_in_batches

SCHEMA = "twin"
BATCH = 10_000
ANALYZE_AFTER = 5_000  # rows inserted by one write before the planner's statistics are refreshed
CONNECT_TIMEOUT = 10
LOCK_CLASS = 0x7477696E  # "twin": first key of the per-layer advisory lock
EWKB_SRID_FLAG = 0x20000000
WKB_HEADER = struct.Struct("<BI")
EWKB_HEADER = struct.Struct("<BII")
FEATURE_COLUMNS = sql.SQL("ST_AsBinary(geom), feature_id, version, valid_from, valid_to, properties")
# jsonb goes as bytea: its binary form is a version byte (1) and the JSON text, which we have.
COPY_TYPES = ["bytea", "text", "int4", "timestamptz", "bytea", "text"]
JSONB_VERSION = b"\x01"

T = TypeVar("T")

TWIN_TABLES = """
CREATE SCHEMA IF NOT EXISTS twin;
CREATE TABLE IF NOT EXISTS twin.twin_meta (key text PRIMARY KEY, value text NOT NULL);
CREATE TABLE IF NOT EXISTS twin.twin_layers (
  id text PRIMARY KEY, description jsonb NOT NULL, version integer NOT NULL DEFAULT 0,
  feature_count bigint NOT NULL DEFAULT 0, time_start timestamptz, time_end timestamptz,
  min_x double precision, min_y double precision, max_x double precision, max_y double precision);
CREATE TABLE IF NOT EXISTS twin.twin_observations (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, sensor_id text NOT NULL,
  time timestamptz NOT NULL, quantity text NOT NULL, value double precision NOT NULL,
  unit text NOT NULL DEFAULT '');
CREATE INDEX IF NOT EXISTS twin_observations_sensor_time ON twin.twin_observations (sensor_id, time)
"""

# What each write touched, so that tile caches invalidate only that (see Store.layer_changes).
CHANGES_TABLE = """
CREATE TABLE IF NOT EXISTS twin.twin_changes (
  seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, layer text NOT NULL, version integer NOT NULL,
  min_x double precision, min_y double precision, max_x double precision, max_y double precision)
"""
DDL_LOCK = 0  # second key of the advisory lock taken to create shared tables

# One MVT layer by ST_AsMVT, with the rules of tiles/vector/generalise.py: drop polygons and
# lines under the size thresholds, thin single points to one per grid cell (smallest id first),
# clip to the buffered tile, simplify, then snap and encode.
MVT_LAYER = """
WITH src AS ({sources}),
kept AS (
  SELECT g, fid, props FROM src
  WHERE (ST_Dimension(g) = 2 AND ST_Area(g) >= %(min_area)s)
     OR (ST_Dimension(g) = 1 AND ST_Length(g) >= %(min_length)s)
     OR (ST_Dimension(g) = 0 AND (%(cell)s = 0 OR GeometryType(g) <> 'POINT'))
  UNION ALL
  (SELECT DISTINCT ON (cx, cy) g, fid, props FROM (
    SELECT g, fid, props, floor((ST_X(g) - %(minx)s) / %(cell)s) AS cx, floor((ST_Y(g) - %(miny)s) / %(cell)s) AS cy
    FROM src WHERE %(cell)s > 0 AND GeometryType(g) = 'POINT') p
  ORDER BY cx, cy, fid COLLATE "C")
),
tiled AS (
  SELECT ST_AsMVTGeom(
      ST_Simplify(ST_ClipByBox2D(g, ST_MakeEnvelope(%(bminx)s, %(bminy)s, %(bmaxx)s, %(bmaxy)s, 3857)),
                  %(tolerance)s, true),
      ST_MakeEnvelope(%(minx)s, %(miny)s, %(maxx)s, %(maxy)s, 3857), %(extent)s, %(buffer)s, true) AS geom,
    fid, props
  FROM kept ORDER BY fid COLLATE "C"
)
SELECT ST_AsMVT(tiled, %(name)s, %(extent)s, 'geom') FROM tiled WHERE geom IS NOT NULL
"""
MVT_SOURCE = """
SELECT ST_Force2D(ST_Transform(geom, 3857)) AS g, feature_id AS fid, properties - 'fid' AS props FROM {table}
WHERE geom && ST_MakeEnvelope(%(xmin)s, %(ymin)s, %(xmax)s, %(ymax)s, {srid})
  AND NOT ST_IsEmpty(geom) AND GeometryType(geom) <> 'GEOMETRYCOLLECTION' AND {time}
"""

LAYER_TABLE = """
CREATE TABLE {table} (
  fid bigint GENERATED ALWAYS AS IDENTITY (SEQUENCE NAME twin.{seq}) CONSTRAINT {pk} PRIMARY KEY,
  geom geometry CONSTRAINT enforce_srid_geom CHECK (ST_SRID(geom) = {srid}),
  feature_id text NOT NULL, version integer NOT NULL, valid_from timestamptz NOT NULL,
  valid_to timestamptz, properties jsonb NOT NULL, twin_digest text NOT NULL)
"""

# Built after the first load of a new layer: a bulk build is twice as fast as row-by-row upkeep.
LAYER_INDEXES = """
CREATE UNIQUE INDEX {feature_version} ON {table} (feature_id, version);
CREATE INDEX {open} ON {table} (feature_id) WHERE valid_to IS NULL;
CREATE INDEX {gist} ON {table} USING gist (geom)
"""

LAYER_SUMMARY = """
UPDATE twin.twin_layers SET version = version + 1,
  feature_count = feature_count + %(opened)s - %(closed)s,
  time_start = CASE WHEN %(opened)s > 0 THEN LEAST(time_start, %(at)s) ELSE time_start END,
  time_end = CASE WHEN %(closed)s > 0 THEN GREATEST(time_end, %(at)s) ELSE time_end END,
  min_x = LEAST(min_x, %(minx)s), min_y = LEAST(min_y, %(miny)s),
  max_x = GREATEST(max_x, %(maxx)s), max_y = GREATEST(max_y, %(maxy)s)
WHERE id = %(id)s RETURNING version
"""


def ewkb(wkb: bytes | None, srid: int) -> bytes | None:
    """ISO WKB (little-endian, as `prepare_batch` makes it) with an SRID, as PostGIS reads it.

    EWKB is WKB with a flag in the type word and the SRID after it; PostGIS accepts the ISO
    Z/M type codes inside it, so nothing else changes.
    """
    if wkb is None:
        return None
    order, kind = WKB_HEADER.unpack_from(wkb)
    if order != 1:
        raise ValueError("expected little-endian WKB")
    return EWKB_HEADER.pack(1, kind | EWKB_SRID_FLAG, srid) + wkb[WKB_HEADER.size :]


def _as_is(text: str) -> str:
    """Properties are already canonical JSON text; the jsonb dumper must not encode them again."""
    return text


def layer_table(layer_id: str) -> sql.Identifier:
    return sql.Identifier(SCHEMA, check_layer_id(layer_id))


def _aux_name(layer_id: str, kind: str) -> sql.Identifier:
    """Index and sequence names: prefixed `twin_` (no layer id can take it) and short enough."""
    tag = hashlib.sha1(layer_id.encode()).hexdigest()[:16]
    return sql.Identifier(f"twin_{kind}_{tag}")


def time_condition(time: TimeFilter | None) -> tuple[list[sql.Composable], list[Any]]:
    """'Valid at time' (default now): valid_from <= end and (open or valid_to > start)."""
    if time is None:
        time = TimeFilter.at(now_utc())
    clauses: list[sql.Composable] = []
    params: list[Any] = []
    if time.end is not None:
        clauses.append(sql.SQL("valid_from <= %s"))
        params.append(time.end)
    if time.start is not None:
        clauses.append(sql.SQL("(valid_to IS NULL OR valid_to > %s)"))
        params.append(time.start)
    return clauses, params


def property_condition(filters: dict[str, str] | None) -> tuple[list[sql.Composable], list[Any]]:
    """Equality of JSON values, so that 5 matches 5 and 5.0 but not "5"."""
    clauses: list[sql.Composable] = []
    params: list[Any] = []
    for key, value in (filters or {}).items():
        check_property_key(key)
        clauses.append(sql.SQL("properties -> %s::text = %s::jsonb"))
        params += [key, Jsonb(typed_filter_value(value))]
    return clauses, params


class PostGISStore(Store):
    """The server backend: several API workers share one database; GiST indexes, MVT in SQL."""

    def __init__(self, url: str, data_dir: Path, crs: str | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.assets = AssetStore(self.data_dir / "assets")
        try:
            params = conninfo_to_dict(url)
        except psycopg.ProgrammingError as exc:
            raise InvalidInput(f"invalid PostgreSQL URL: {str(exc).strip()}") from exc
        self.location = f"database {params.get('dbname', '?')!r} on {params.get('host', 'localhost')}"
        params.setdefault("connect_timeout", CONNECT_TIMEOUT)
        params.setdefault("application_name", "cim-twin")
        self._conninfo = make_conninfo(**params)
        self._connections = PerThread(self._connect, psycopg.Connection.close)
        try:
            if crs is not None:
                self._initialise(crs)
            stored = self._read(self._stored_crs)
            if stored is None:
                raise NotFound(f"no twin in {self.location}: run 'twin init --crs EPSG:xxxx' with this store first")
            self.crs = stored
            self.srid = int(self.get_meta("srs_id") or 0)
        except BaseException:
            self.close()
            raise

    # ----- connections ----------------------------------------------------------------
    def _connection(self) -> psycopg.Connection:
        """This thread's connection, opened on first use or after the old one broke."""
        con = self._connections.current()
        if con is not None and not con.closed and not con.broken:
            return con
        if con is not None:
            self._connections.discard()
        return self._connections.get()

    def _connect(self) -> psycopg.Connection:
        try:
            con = psycopg.connect(self._conninfo, autocommit=True)
            # Times then come back in UTC with datetime.UTC, as the model wants, at no cost per row.
            con.execute("SET TimeZone TO 'UTC'")
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(f"PostGIS store ({self.location}) is unreachable: {exc}".strip()) from exc
        return con

    def _discard(self, con: psycopg.Connection) -> None:
        if self._connections.current() is con:
            self._connections.discard()
        else:
            con.close()

    def _lost(self, con: psycopg.Connection) -> bool:
        """Whether an OperationalError left the connection dead (then it is dropped), as opposed to
        a cancelled statement or a lock timeout on a healthy one."""
        if con.closed or con.broken:
            self._discard(con)
            return True
        return False

    def _read(self, work: Callable[[psycopg.Connection], T]) -> T:
        """Run a read; if the connection turns out broken (server restarted), retry once."""
        for attempt in (0, 1):
            con = self._connection()
            try:
                return work(con)
            except psycopg.OperationalError as exc:
                if not self._lost(con):
                    raise
                if attempt:
                    raise StoreUnavailable(
                        f"lost the connection to the PostGIS store ({self.location}): {exc}"
                    ) from exc
        raise AssertionError("unreachable")

    def _begin(self) -> psycopg.Connection:
        """BEGIN on this thread's connection; a broken one is replaced once (nothing was sent)."""
        for attempt in (0, 1):
            con = self._connection()
            try:
                con.execute("BEGIN")
                return con
            except psycopg.OperationalError as exc:
                if not self._lost(con):
                    raise
                if attempt:
                    raise StoreUnavailable(
                        f"lost the connection to the PostGIS store ({self.location}): {exc}"
                    ) from exc
        raise AssertionError("unreachable")

    @contextmanager
    def _transaction(self) -> Iterator[psycopg.Connection]:
        """One transaction: all of it commits or none of it does."""
        con = self._begin()
        try:
            yield con
        except psycopg.OperationalError as exc:
            if not self._lost(con):
                self._rollback(con)
                raise
            raise StoreUnavailable(
                f"lost the connection to the PostGIS store ({self.location}); nothing was written: {exc}"
            ) from exc
        except BaseException:
            self._rollback(con)
            raise
        try:
            con.execute("COMMIT")
        except psycopg.OperationalError as exc:
            if not self._lost(con):
                raise
            raise StoreUnavailable(
                f"lost the connection to the PostGIS store ({self.location}) while committing; "
                f"the write may or may not have been saved: {exc}"
            ) from exc

    def _rollback(self, con: psycopg.Connection) -> None:
        """Undo a failed transaction; a connection that broke meanwhile has lost it anyway."""
        try:
            con.execute("ROLLBACK")
        except psycopg.OperationalError:
            self._lost(con)

    def _fetchall(self, query: sql.Composable | str, params: Sequence[Any] | dict = ()) -> list[tuple]:
        return self._read(lambda con: con.execute(query, params).fetchall())

    # ----- project ------------------------------------------------------------------------
    def _initialise(self, crs: str) -> None:
        code = check_project_crs(crs)
        if not code.startswith("EPSG:"):
            raise InvalidInput(f"project CRS {crs!r} must be an EPSG code")
        srid = int(code.split(":", 1)[1])
        with self._transaction() as con:
            if not con.execute("SELECT 1 FROM pg_extension WHERE extname = 'postgis'").fetchone():
                try:
                    with con.transaction():
                        con.execute("CREATE EXTENSION postgis")
                except psycopg.Error as exc:
                    raise InvalidInput(f"PostGIS is not installed in {self.location}: {exc}") from exc
            if self._stored_crs(con) is not None:
                raise InvalidInput(f"{self.location} already holds a twin")
            con.execute(TWIN_TABLES)
            con.execute(CHANGES_TABLE)
            self._register_srid(con, srid)
            con.cursor().executemany(
                "INSERT INTO twin.twin_meta VALUES (%s, %s)",
                [
                    ("crs", code),
                    ("srs_id", str(srid)),
                    ("created", now_utc().isoformat(timespec="milliseconds").replace("+00:00", "Z")),
                ],
            )

    @staticmethod
    def _register_srid(con: psycopg.Connection, srid: int) -> None:
        """PostGIS ships most EPSG codes; add the project's from PROJ if it is missing."""
        if con.execute("SELECT 1 FROM spatial_ref_sys WHERE srid = %s", (srid,)).fetchone():
            return
        definition = CRS.from_epsg(srid)
        con.execute(
            "INSERT INTO spatial_ref_sys (srid, auth_name, auth_srid, srtext, proj4text) "
            "VALUES (%s, 'EPSG', %s, %s, %s)",
            (srid, srid, definition.to_wkt("WKT1_GDAL"), definition.to_proj4()),
        )

    @staticmethod
    def _stored_crs(con: psycopg.Connection) -> str | None:
        if con.execute("SELECT to_regclass('twin.twin_meta')").fetchone()[0] is None:
            return None
        row = con.execute("SELECT value FROM twin.twin_meta WHERE key = 'crs'").fetchone()
        return None if row is None else row[0]

    def get_meta(self, key: str, default: str | None = None) -> str | None:
        try:
            rows = self._fetchall("SELECT value FROM twin.twin_meta WHERE key = %s", (key,))
        except psycopg.errors.UndefinedTable:
            return default
        return rows[0][0] if rows else default

    def set_meta(self, key: str, value: str) -> None:
        with self._transaction() as con:
            con.execute(
                "INSERT INTO twin.twin_meta VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                (key, value),
            )

    def ping(self) -> None:
        self._fetchall("SELECT count(*) FROM twin.twin_meta")

    def close(self) -> None:
        self._connections.close_all()

    # ----- layers -------------------------------------------------------------------------
    @staticmethod
    def _layer_from_row(row: tuple) -> Layer:
        description, version, count, t_start, t_end, *bounds = row
        layer = Layer(**description)
        layer.version = version
        layer.feature_count = count
        if t_start is not None:
            layer.time_extent = (t_start, None if count else t_end)
        if bounds[0] is not None:
            layer.bbox = tuple(bounds)
        return layer

    _LAYER_COLUMNS = "description, version, feature_count, time_start, time_end, min_x, min_y, max_x, max_y"

    def list_layers(self) -> list[Layer]:
        rows = self._fetchall(f'SELECT {self._LAYER_COLUMNS} FROM twin.twin_layers ORDER BY id COLLATE "C"')
        return [self._layer_from_row(row) for row in rows]

    def get_layer(self, layer_id: str) -> Layer:
        rows = self._fetchall(f"SELECT {self._LAYER_COLUMNS} FROM twin.twin_layers WHERE id = %s", (layer_id,))
        if not rows:
            raise NotFound(f"layer {layer_id!r} not found")
        return self._layer_from_row(rows[0])

    def put_layer(self, layer: Layer) -> Layer:
        with self._transaction() as con:
            self._lock_layer(con, layer.id)
            self._put_layer(con, layer)
        return self.get_layer(layer.id)

    @staticmethod
    def _lock_layer(con: psycopg.Connection, layer_id: str) -> None:
        """Writers of one layer take turns (as SQLite's single writer does), so versions never race."""
        con.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (LOCK_CLASS, layer_id))

    def _put_layer(self, con: psycopg.Connection, layer: Layer, *, indexes: bool = True) -> bool:
        """Create the layer's table (with its indexes unless `indexes` is false) or update its
        description; returns whether the table is new."""
        table = layer_table(layer.id)
        description = Jsonb(layer_description(layer), dumps=_as_is)
        comment = sql.SQL("COMMENT ON TABLE {} IS {}").format(table, sql.Literal(layer.title))
        if con.execute("SELECT 1 FROM twin.twin_layers WHERE id = %s", (layer.id,)).fetchone():
            con.execute("UPDATE twin.twin_layers SET description = %s WHERE id = %s", (description, layer.id))
            con.execute(comment)
            return False
        names = {kind: _aux_name(layer.id, kind) for kind in ("seq", "pk")}
        con.execute(sql.SQL(LAYER_TABLE).format(table=table, srid=sql.Literal(self.srid), **names))
        con.execute(comment)
        con.execute("INSERT INTO twin.twin_layers (id, description) VALUES (%s, %s)", (layer.id, description))
        if indexes:
            self._create_indexes(con, layer.id)
        return True

    @staticmethod
    def _create_indexes(con: psycopg.Connection, layer_id: str) -> None:
        names = {kind: _aux_name(layer_id, kind) for kind in ("feature_version", "open", "gist")}
        con.execute(sql.SQL(LAYER_INDEXES).format(table=layer_table(layer_id), **names))

    def delete_layer(self, layer_id: str) -> None:
        self.get_layer(layer_id)
        with self._transaction() as con:
            self._lock_layer(con, layer_id)
            con.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(layer_table(layer_id)))
            con.execute("DELETE FROM twin.twin_layers WHERE id = %s", (layer_id,))
            self._log_change(con, layer_id, 0, WHOLE_LAYER)

    @staticmethod
    def _record_change(
        con: psycopg.Connection,
        layer_id: str,
        at: datetime,
        opened: int,
        closed: int,
        bounds: np.ndarray | None = None,
    ) -> int:
        """Bump the layer version and keep count, time extent and bbox in step with the rows.

        Rows are only ever added and closed, never deleted or reopened, so the summary follows
        from what this write did: no scan of the table.
        """
        minx = miny = maxx = maxy = None
        if bounds is not None:
            finite = bounds[~np.isnan(bounds[:, 0])]
            if len(finite):
                minx, miny = (float(v) for v in finite[:, :2].min(axis=0))
                maxx, maxy = (float(v) for v in finite[:, 2:].max(axis=0))
        values = {"opened": opened, "closed": closed, "at": at, "id": layer_id}
        values |= {"minx": minx, "miny": miny, "maxx": maxx, "maxy": maxy}
        return con.execute(LAYER_SUMMARY, values).fetchone()[0]

    # ----- features -----------------------------------------------------------------------
    @staticmethod
    def _open_versions(con: psycopg.Connection, layer_id: str, fids: list[str] | None = None) -> dict[str, OpenVersion]:
        """Open versions of the layer (only of `fids` when given)."""
        query = sql.SQL("SELECT fid, feature_id, version, twin_digest, valid_from FROM {} WHERE valid_to IS NULL")
        query = query.format(layer_table(layer_id))
        params: list[Any] = []
        if fids is not None:
            query += sql.SQL(" AND feature_id = ANY(%s)")
            params.append(fids)
        rows = con.execute(query, params).fetchall()
        return {fid: OpenVersion(row, version, digest, vf) for row, fid, version, digest, vf in rows}

    @staticmethod
    def _latest_versions(
        con: psycopg.Connection, layer_id: str, fids: list[str]
    ) -> tuple[dict[str, OpenVersion], dict[str, int]]:
        """Open and last versions of `fids` in one query: an open version is always the last one."""
        query = sql.SQL(
            "SELECT DISTINCT ON (feature_id) fid, feature_id, version, twin_digest, valid_from, valid_to IS NULL "
            "FROM {} WHERE feature_id = ANY(%s) ORDER BY feature_id, version DESC"
        ).format(layer_table(layer_id))
        open_versions: dict[str, OpenVersion] = {}
        last_versions: dict[str, int] = {}
        for row, fid, version, digest, valid_from, is_open in con.execute(query, (fids,)).fetchall():
            last_versions[fid] = version
            if is_open:
                open_versions[fid] = OpenVersion(row, version, digest, valid_from)
        return open_versions, last_versions

    def _lookup(
        self,
        con: psycopg.Connection,
        layer_id: str,
        fids: list[str],
        was_empty: bool,
        everything_open: dict[str, OpenVersion] | None,
    ) -> tuple[dict[str, OpenVersion], dict[str, int]]:
        """Open and last versions of a chunk's features, asking the database only what it must."""
        if was_empty:  # ids within one write are distinct: nothing to find
            return {}, {}
        if everything_open is None:
            return self._latest_versions(con, layer_id, fids)
        unknown = [fid for fid in fids if fid not in everything_open]
        return everything_open, (self._latest_versions(con, layer_id, unknown)[1] if unknown else {})

    @staticmethod
    def _close_rows(con: psycopg.Connection, layer_id: str, row_ids: list[Any], at: datetime) -> None:
        if row_ids:
            query = sql.SQL("UPDATE {} SET valid_to = %s WHERE fid = ANY(%s)").format(layer_table(layer_id))
            con.execute(query, (at, row_ids))

    def _insert_rows(
        self, con: psycopg.Connection, layer_id: str, batch: PreparedBatch, inserts: list[tuple[int, int]], at: datetime
    ) -> None:
        """COPY the new versions in binary: EWKB geometry, the canonical JSON as jsonb."""
        copy_sql = sql.SQL(
            "COPY {} (geom, feature_id, version, valid_from, properties, twin_digest) FROM STDIN (FORMAT BINARY)"
        ).format(layer_table(layer_id))
        with con.cursor().copy(copy_sql) as copy:
            copy.set_types(COPY_TYPES)
            for i, version in inserts:
                geometry = ewkb(batch.wkb[i], self.srid)
                properties = JSONB_VERSION + batch.properties[i].encode()
                copy.write_row((geometry, batch.fids[i], version, at, properties, batch.digests[i]))

    def write_features(
        self,
        layer: Layer,
        features: Iterable[FeatureInput],
        *,
        valid_from: datetime | None = None,
        mode: WriteMode = WriteMode.upsert,
    ) -> WriteReport:
        replace = WriteMode(mode) == WriteMode.replace
        table = layer.id
        report = WriteReport(layer=table)
        with self._transaction() as con:
            self._lock_layer(con, table)
            # "Now" is read after waiting for the lock, so it follows the write we waited for.
            start = utc(valid_from) if valid_from is not None else now_utc()
            new_table = self._put_layer(con, layer, indexes=False)
            was_empty = (
                new_table
                or not con.execute(sql.SQL("SELECT EXISTS (SELECT FROM {})").format(layer_table(table))).fetchone()[0]
            )
            everything_open = self._open_versions(con, table) if replace else None

            def close(row_ids: list[Any]) -> Any:
                self._close_rows(con, table, row_ids, start)
                return self._rows_extent(con, table, row_ids)

            tally = write_in_batches(
                features,
                start,
                report,
                batch_size=BATCH,
                lookup=lambda fids: self._lookup(con, table, fids, was_empty, everything_open),
                close=close,
                insert=lambda batch, inserts: self._insert_rows(con, table, batch, inserts, start),
                everything_open=everything_open,
            )
            bounds = np.concatenate(tally.inserted_bounds) if tally.inserted_bounds else None
            report.layer_version = self._record_change(con, table, start, tally.opened, tally.closed, bounds)
            report.changed_bbox = self._log_change(
                con, table, report.layer_version, merged_bounds(bounds, *tally.closed_bounds)
            )
            if new_table:
                self._create_indexes(con, table)
            if tally.opened >= ANALYZE_AFTER:
                con.execute(sql.SQL("ANALYZE {}").format(layer_table(table)))
        return report

    def close_features(self, layer_id: str, fids: Iterable[str], at: datetime | None = None) -> int:
        self.get_layer(layer_id)
        wanted = set(fids)
        with self._transaction() as con:
            self._lock_layer(con, layer_id)
            end = utc(at) if at is not None else now_utc()
            open_versions = self._open_versions(con, layer_id, sorted(wanted))
            missing = wanted - open_versions.keys()
            if missing:
                raise NotFound(f"no open version of feature {sorted(missing)[0]!r} in layer {layer_id!r}")
            closing = [open_versions[fid] for fid in wanted]
            check_closable(closing, end)
            self._close_rows(con, layer_id, [v.row_id for v in closing], end)
            version = self._record_change(con, layer_id, end, 0, len(closing))
            self._log_change(con, layer_id, version, self._rows_extent(con, layer_id, [v.row_id for v in closing]))
        return len(closing)

    @staticmethod
    def _rows_to_features(layer_id: str, rows: list[tuple]) -> list[Feature]:
        geoms = shapely.from_wkb([row[0] for row in rows]) if rows else []
        return [
            Feature(layer_id, fid, version, vf, vt, geom, props)
            for geom, (_, fid, version, vf, vt, props) in zip(geoms, rows, strict=True)
        ]

    @staticmethod
    def _select(layer_id: str, conditions: list[sql.Composable], tail: sql.Composable) -> sql.Composed:
        where = sql.SQL(" AND ").join(conditions) if conditions else sql.SQL("true")
        return sql.SQL("SELECT {} FROM {} WHERE {} ").format(FEATURE_COLUMNS, layer_table(layer_id), where) + tail

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
        self.get_layer(layer_id)
        conditions, params = time_condition(time)
        prop_conditions, prop_params = property_condition(filters)
        conditions += prop_conditions
        params += prop_params
        if bbox is not None:
            envelope = sql.SQL("ST_MakeEnvelope(%s, %s, %s, %s, {})").format(sql.Literal(self.srid))
            conditions.append(sql.SQL("geom && {0} AND ST_Intersects(geom, {0})").format(envelope))
            params += [*bbox.as_tuple(), *bbox.as_tuple()]
        page = sql.SQL("ORDER BY fid")
        page_params = list(params)
        if limit is not None:
            page += sql.SQL(" LIMIT %s")
            page_params.append(int(limit))
        if offset:
            page += sql.SQL(" OFFSET %s")
            page_params.append(int(offset))
        where = sql.SQL(" AND ").join(conditions) if conditions else sql.SQL("true")
        counting = sql.SQL("SELECT count(*) FROM {} WHERE {}").format(layer_table(layer_id), where)

        def run(con: psycopg.Connection) -> QueryResult:
            rows = con.execute(self._select(layer_id, conditions, page), page_params).fetchall()
            matched = con.execute(counting, params).fetchone()[0] if count else None
            return QueryResult(self._rows_to_features(layer_id, rows), matched)

        return self._read(run)

    def get_feature(self, layer_id: str, fid: str, time: TimeFilter | None = None) -> Feature:
        self.get_layer(layer_id)
        conditions, params = time_condition(time)
        conditions.insert(0, sql.SQL("feature_id = %s"))
        query = self._select(layer_id, conditions, sql.SQL("ORDER BY version DESC LIMIT 1"))
        rows = self._fetchall(query, [fid, *params])
        if not rows:
            raise NotFound(f"feature {fid!r} not found in layer {layer_id!r} at that time")
        return self._rows_to_features(layer_id, rows)[0]

    def feature_versions(self, layer_id: str, time: TimeFilter | None = None) -> list[tuple[str, int]]:
        self.get_layer(layer_id)
        conditions, params = time_condition(time)
        where = sql.SQL(" AND ").join(conditions) if conditions else sql.SQL("true")
        query = sql.SQL("SELECT feature_id, version FROM {} WHERE {}").format(layer_table(layer_id), where)
        return [(fid, int(version)) for fid, version in self._fetchall(query, params)]

    def history(self, layer_id: str, fid: str) -> list[Feature]:
        self.get_layer(layer_id)
        query = self._select(layer_id, [sql.SQL("feature_id = %s")], sql.SQL("ORDER BY version"))
        rows = self._fetchall(query, [fid])
        if not rows:
            raise NotFound(f"feature {fid!r} not found in layer {layer_id!r}")
        return self._rows_to_features(layer_id, rows)

    # ----- change log and bulk readers (vector tiles) ---------------------------------------
    @staticmethod
    def _rows_extent(con: psycopg.Connection, layer_id: str, row_ids: list) -> tuple | None:
        if not row_ids:
            return None
        query = sql.SQL(
            "SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM (SELECT ST_Extent(geom) AS e FROM {} "
            "WHERE fid = ANY(%s)) s"
        ).format(layer_table(layer_id))
        extent = con.execute(query, (list(row_ids),)).fetchone()
        return None if extent[0] is None else tuple(extent)

    def _log_change(self, con: psycopg.Connection, layer_id: str, version: int, bbox: tuple | None) -> tuple | None:
        """Record what a write touched; twins made before the log existed gain its table here."""
        if not getattr(self, "_changes_ready", False):
            if con.execute("SELECT to_regclass('twin.twin_changes')").fetchone()[0] is None:
                con.execute("SELECT pg_advisory_xact_lock(%s, %s)", (LOCK_CLASS, DDL_LOCK))
                con.execute(CHANGES_TABLE)
            self._changes_ready = True
        con.execute(
            "INSERT INTO twin.twin_changes (layer, version, min_x, min_y, max_x, max_y) "
            "VALUES (%s, %s, %s, %s, %s, %s)",
            (layer_id, version, *(bbox or (None,) * 4)),
        )
        return bbox

    def layer_changes(self, since: int) -> list[LayerChange] | None:
        try:
            rows = self._fetchall(
                "SELECT seq, layer, version, min_x, min_y, max_x, max_y FROM twin.twin_changes "
                "WHERE seq > %s ORDER BY seq",
                (since,),
            )
        except psycopg.errors.UndefinedTable:
            return []
        return [
            LayerChange(seq, layer, version, None if b[0] is None else tuple(b)) for seq, layer, version, *b in rows
        ]

    def layer_versions(self) -> dict[str, int]:
        return dict(self._fetchall("SELECT id, version FROM twin.twin_layers"))

    def feature_arrays(self, layer_id: str, *, bbox: BBox, time: TimeFilter | None = None) -> FeatureArrays:
        conditions, params = time_condition(time)
        envelope = sql.SQL("geom && ST_MakeEnvelope(%s, %s, %s, %s, {})").format(sql.Literal(self.srid))
        where = sql.SQL(" AND ").join([envelope, *conditions])
        query = sql.SQL(
            'SELECT feature_id, ST_AsBinary(geom), properties::text FROM {} WHERE {} ORDER BY feature_id COLLATE "C"'
        ).format(layer_table(layer_id), where)
        rows = self._fetchall(query, [*bbox.as_tuple(), *params])
        fids = [row[0] for row in rows]
        geoms = shapely.from_wkb([row[1] for row in rows]) if rows else np.empty(0, dtype=object)
        return FeatureArrays(fids, geoms, [row[2] for row in rows])

    def mvt_layer(self, name: str, layer_ids: Iterable[str], query: TileQuery) -> bytes | None:
        """ST_AsMVT over the layers' versions valid at `query.time`; b'' when no feature is left."""
        time = query.time if query.time is not None else TimeFilter.at(now_utc())
        clauses = ["true"]
        if time.end is not None:
            clauses.append("valid_from <= %(t_end)s")
        if time.start is not None:
            clauses.append("(valid_to IS NULL OR valid_to > %(t_start)s)")
        sources = [
            MVT_SOURCE.format(
                table=layer_table(layer_id).as_string(None), srid=int(self.srid), time=" AND ".join(clauses)
            )
            for layer_id in layer_ids
        ]
        minx, miny, maxx, maxy = query.bounds
        margin = (maxx - minx) * query.buffer / query.extent
        params = {
            "t_end": time.end, "t_start": time.start,
            "xmin": query.bbox.minx, "ymin": query.bbox.miny, "xmax": query.bbox.maxx, "ymax": query.bbox.maxy,
            "minx": minx, "miny": miny, "maxx": maxx, "maxy": maxy,
            "bminx": minx - margin, "bminy": miny - margin, "bmaxx": maxx + margin, "bmaxy": maxy + margin,
            "extent": query.extent, "buffer": query.buffer, "tolerance": query.tolerance,
            "min_area": query.min_area, "min_length": query.min_length, "cell": query.point_cell, "name": name,
        }  # fmt: skip
        rows = self._fetchall(MVT_LAYER.format(sources=" UNION ALL ".join(sources)), params)
        return bytes(rows[0][0]) if rows and rows[0][0] is not None else b""

    # ----- observations -------------------------------------------------------------------
    def add_observations(self, observations: Iterable[Observation]) -> int:
        rows = [(o.sensor_id, utc(o.time), o.quantity, float(o.value), o.unit) for o in observations]
        with (
            self._transaction() as con,
            con.cursor().copy(
                "COPY twin.twin_observations (sensor_id, time, quantity, value, unit) FROM STDIN (FORMAT BINARY)"
            ) as copy,
        ):
            copy.set_types(["text", "timestamptz", "text", "float8", "text"])
            for row in rows:
                copy.write_row(row)
        return len(rows)

    def query_observations(
        self,
        sensor_id: str,
        *,
        time: TimeFilter | None = None,
        quantity: str | None = None,
        limit: int | None = None,
    ) -> list[Observation]:
        query = "SELECT sensor_id, time, quantity, value, unit FROM twin.twin_observations WHERE sensor_id = %s"
        params: list[Any] = [sensor_id]
        if time is not None and time.start is not None:
            query += " AND time >= %s"
            params.append(time.start)
        if time is not None and time.end is not None:
            query += " AND time <= %s"
            params.append(time.end)
        if quantity is not None:
            query += " AND quantity = %s"
            params.append(quantity)
        query += " ORDER BY time, id"
        if limit is not None:
            query += " LIMIT %s"
            params.append(int(limit))
        return [Observation(s, t, q, v, u) for s, t, q, v, u in self._fetchall(query, params)]
