"""The embedded store: one SQLite file laid out as an OGC GeoPackage, so QGIS and GDAL open it.

Each layer is a GeoPackage feature table (one row per feature version, with the temporal
columns) and its R-tree index; the twin's own tables (`twin_*`) hold layer descriptions,
project settings and observations.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from contextlib import AbstractContextManager
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from pyproj import CRS

from twin import sqlite_wal
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
    parse_instant,
    utc,
)
from twin.per_thread import PerThread
from twin.store import gpkg_geometry
from twin.store.base import (
    WHOLE_LAYER,
    FeatureArrays,
    LayerChange,
    QueryResult,
    Store,
    WriteMode,
    check_property_key,
    layer_description,
    merged_bounds,
    typed_filter_value,
)
from twin.store.versioning import OpenVersion, check_closable, write_in_batches

APPLICATION_ID = 0x47504B47  # "GPKG"
USER_VERSION = 10300
BATCH = 10_000
SCAN_CHUNK = 2_000

SCHEMA = """
CREATE TABLE IF NOT EXISTS gpkg_spatial_ref_sys (
  srs_name TEXT NOT NULL, srs_id INTEGER PRIMARY KEY, organization TEXT NOT NULL,
  organization_coordsys_id INTEGER NOT NULL, definition TEXT NOT NULL, description TEXT);
CREATE TABLE IF NOT EXISTS gpkg_contents (
  table_name TEXT NOT NULL PRIMARY KEY, data_type TEXT NOT NULL, identifier TEXT UNIQUE,
  description TEXT DEFAULT '', last_change DATETIME NOT NULL DEFAULT
  (strftime('%Y-%m-%dT%H:%M:%fZ','now')), min_x DOUBLE, min_y DOUBLE, max_x DOUBLE, max_y DOUBLE,
  srs_id INTEGER, CONSTRAINT fk_gc_r_srs_id FOREIGN KEY (srs_id) REFERENCES gpkg_spatial_ref_sys(srs_id));
CREATE TABLE IF NOT EXISTS gpkg_geometry_columns (
  table_name TEXT NOT NULL, column_name TEXT NOT NULL, geometry_type_name TEXT NOT NULL,
  srs_id INTEGER NOT NULL, z TINYINT NOT NULL, m TINYINT NOT NULL,
  CONSTRAINT pk_geom_cols PRIMARY KEY (table_name, column_name));
CREATE TABLE IF NOT EXISTS gpkg_extensions (
  table_name TEXT, column_name TEXT, extension_name TEXT NOT NULL, definition TEXT NOT NULL,
  scope TEXT NOT NULL, CONSTRAINT ge_tce UNIQUE (table_name, column_name, extension_name));
CREATE TABLE IF NOT EXISTS twin_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS twin_layers (
  id TEXT PRIMARY KEY, description TEXT NOT NULL, version INTEGER NOT NULL DEFAULT 0,
  feature_count INTEGER NOT NULL DEFAULT 0, time_start TEXT, time_end TEXT, open_ended INTEGER);
CREATE TABLE IF NOT EXISTS twin_observations (
  id INTEGER PRIMARY KEY AUTOINCREMENT, sensor_id TEXT NOT NULL, time TEXT NOT NULL,
  quantity TEXT NOT NULL, value REAL NOT NULL, unit TEXT NOT NULL DEFAULT '');
CREATE INDEX IF NOT EXISTS twin_observations_sensor_time ON twin_observations (sensor_id, time);
"""

# What each write touched, so that tile caches invalidate only that (see Store.layer_changes).
CHANGES_TABLE = """
CREATE TABLE IF NOT EXISTS twin_changes (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, layer TEXT NOT NULL, version INTEGER NOT NULL,
  min_x REAL, min_y REAL, max_x REAL, max_y REAL)
"""

BASE_SRS = [
    ("Undefined cartesian SRS", -1, "NONE", -1, "undefined", "undefined cartesian coordinate reference system"),
    ("Undefined geographic SRS", 0, "NONE", 0, "undefined", "undefined geographic coordinate reference system"),
]

RTREE_TRIGGERS = """
CREATE TRIGGER "rtree_{t}_geom_insert" AFTER INSERT ON "{t}"
WHEN (new.geom NOT NULL AND NOT ST_IsEmpty(NEW.geom)) BEGIN
  INSERT OR REPLACE INTO "rtree_{t}_geom" VALUES (NEW.fid, ST_MinX(NEW.geom), ST_MaxX(NEW.geom),
    ST_MinY(NEW.geom), ST_MaxY(NEW.geom));
END;
CREATE TRIGGER "rtree_{t}_geom_update1" AFTER UPDATE OF geom ON "{t}"
WHEN OLD.fid = NEW.fid AND (NEW.geom NOTNULL AND NOT ST_IsEmpty(NEW.geom)) BEGIN
  INSERT OR REPLACE INTO "rtree_{t}_geom" VALUES (NEW.fid, ST_MinX(NEW.geom), ST_MaxX(NEW.geom),
    ST_MinY(NEW.geom), ST_MaxY(NEW.geom));
END;
CREATE TRIGGER "rtree_{t}_geom_update2" AFTER UPDATE OF geom ON "{t}"
WHEN OLD.fid = NEW.fid AND (NEW.geom ISNULL OR ST_IsEmpty(NEW.geom)) BEGIN
  DELETE FROM "rtree_{t}_geom" WHERE id = OLD.fid;
END;
CREATE TRIGGER "rtree_{t}_geom_update3" AFTER UPDATE ON "{t}"
WHEN OLD.fid != NEW.fid AND (NEW.geom NOTNULL AND NOT ST_IsEmpty(NEW.geom)) BEGIN
  DELETE FROM "rtree_{t}_geom" WHERE id = OLD.fid;
  INSERT OR REPLACE INTO "rtree_{t}_geom" VALUES (NEW.fid, ST_MinX(NEW.geom), ST_MaxX(NEW.geom),
    ST_MinY(NEW.geom), ST_MaxY(NEW.geom));
END;
CREATE TRIGGER "rtree_{t}_geom_update4" AFTER UPDATE ON "{t}"
WHEN OLD.fid != NEW.fid AND (NEW.geom ISNULL OR ST_IsEmpty(NEW.geom)) BEGIN
  DELETE FROM "rtree_{t}_geom" WHERE id IN (OLD.fid, NEW.fid);
END;
CREATE TRIGGER "rtree_{t}_geom_delete" AFTER DELETE ON "{t}" WHEN old.geom NOT NULL BEGIN
  DELETE FROM "rtree_{t}_geom" WHERE id = OLD.fid;
END;
"""


def contents_description(layer: Layer) -> str:
    """What QGIS shows for the table; the identifier stays the (unique) layer id, as titles may repeat."""
    return f"{layer.title} ({layer.kind.value})"


def geometry_column_type(geometry_type: str | None) -> tuple[str, int]:
    """GeoPackage's type name and z flag for 'Polygon', 'LineString Z' or None (any, z optional)."""
    if not geometry_type:
        return "GEOMETRY", 2
    name, _, suffix = geometry_type.partition(" ")
    return name.upper(), 1 if suffix.upper() == "Z" else 0


def format_time(value: datetime | None) -> str | None:
    """GeoPackage DATETIME text (fixed width, so text order is time order)."""
    if value is None:
        return None
    return utc(value).strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc(value).microsecond // 1000:03d}Z"


def read_time(text: str | None) -> datetime | None:
    return None if text is None else parse_instant(text)


def time_clause(time: TimeFilter | None) -> tuple[str, list[str]]:
    """SQL for 'valid at time' (default now) over valid_from / valid_to text columns."""
    if time is None:
        time = TimeFilter.at(now_utc())
    clauses, params = [], []
    if time.end is not None:
        clauses.append("valid_from <= ?")
        params.append(format_time(time.end))
    if time.start is not None:
        clauses.append("(valid_to IS NULL OR valid_to > ?)")
        params.append(format_time(time.start))
    return " AND ".join(clauses) or "1", params


JSON_TYPES = {bool: ("true", "false"), int: ("integer", "real"), float: ("integer", "real"), str: ("text",)}


def property_clause(filters: dict[str, str] | None) -> tuple[str, list[Any]]:
    """JSON equality as PostGIS's jsonb has it: 5 matches 5.0, but true never matches 1."""
    clauses, params = [], []
    for key, value in (filters or {}).items():
        path = f'$."{check_property_key(key)}"'
        typed = typed_filter_value(value)
        kinds = JSON_TYPES[type(typed)]
        clauses.append(
            f"json_type(properties, '{path}') IN ({', '.join('?' * len(kinds))}) "
            f"AND json_extract(properties, '{path}') = ?"
        )
        params += [*kinds, typed]
    return " AND ".join(clauses) or "1", params


class GeoPackageStore(Store):
    """The default backend: no server, one file, safe for several threads and processes."""

    def __init__(self, data_dir: Path, crs: str | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / "twin.gpkg"
        self.assets = AssetStore(self.data_dir / "assets")
        self._connections = PerThread(self._connect, sqlite3.Connection.close)
        if crs is None and not self.path.exists():
            raise NotFound(f"no twin at {self.data_dir}: run 'twin init {self.data_dir} --crs EPSG:xxxx' first")
        self._check_file()
        if crs is not None:
            self._initialise(crs)
        stored = self.get_meta("crs")
        if stored is None:
            raise InvalidInput(f"{self.path} is a GeoPackage but not a twin store (no project CRS)")
        self.crs = stored
        self.srs_id = int(self.get_meta("srs_id") or 0)

    # ----- connections ----------------------------------------------------------------
    def _check_file(self) -> None:
        if not self.path.exists():
            return
        with open(self.path, "rb") as handle:
            head = handle.read(16)
        if head and head != b"SQLite format 3\x00":
            raise InvalidInput(f"{self.path} is not a GeoPackage (not an SQLite file)")

    @property
    def con(self) -> sqlite3.Connection:
        """This thread's connection."""
        return self._connections.get()

    def _connect(self) -> sqlite3.Connection:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            con = sqlite_wal.connect(self.path)
        except sqlite3.DatabaseError as exc:
            raise InvalidInput(f"{self.path} is not a valid GeoPackage: {exc}") from exc
        for name, func in gpkg_geometry.SQL_FUNCTIONS.items():
            con.create_function(name, 1, func, deterministic=True)
        return con

    def _transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        return sqlite_wal.immediate(self.con)

    def _initialise(self, crs: str) -> None:
        code = check_project_crs(crs)
        if not code.startswith("EPSG:"):
            raise InvalidInput(f"project CRS {crs!r} must be an EPSG code")
        definition = CRS.from_user_input(code)
        srs_id = int(code.split(":")[1])
        with self._transaction() as con:
            existing = con.execute("SELECT name FROM sqlite_master WHERE name = 'twin_meta'").fetchone()
            if existing and con.execute("SELECT value FROM twin_meta WHERE key='crs'").fetchone():
                raise InvalidInput(f"{self.path} already holds a twin")
            con.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            con.execute(f"PRAGMA user_version = {USER_VERSION}")
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    con.execute(statement)
            srs_rows = BASE_SRS + [
                ("WGS 84 geodetic", 4326, "EPSG", 4326, CRS.from_epsg(4326).to_wkt("WKT1_GDAL"), "longitude/latitude"),
                (definition.name, srs_id, "EPSG", srs_id, definition.to_wkt("WKT1_GDAL"), "project CRS"),
            ]
            con.executemany("INSERT OR IGNORE INTO gpkg_spatial_ref_sys VALUES (?,?,?,?,?,?)", srs_rows)
            con.executemany(
                "INSERT INTO twin_meta VALUES (?, ?)",
                [("crs", f"EPSG:{srs_id}"), ("srs_id", str(srs_id)), ("created", format_time(now_utc()))],
            )
        # GDAL reads application_id from the file header, not through the WAL
        self.con.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    # ----- project ------------------------------------------------------------------------
    def get_meta(self, key: str, default: str | None = None) -> str | None:
        try:
            row = self.con.execute("SELECT value FROM twin_meta WHERE key = ?", (key,)).fetchone()
        except sqlite3.DatabaseError as exc:
            if "no such table" in str(exc):
                return default
            raise InvalidInput(f"{self.path} is not a valid GeoPackage: {exc}") from exc
        return default if row is None else row[0]

    def set_meta(self, key: str, value: str) -> None:
        with self._transaction() as con:
            con.execute("INSERT OR REPLACE INTO twin_meta VALUES (?, ?)", (key, value))

    def ping(self) -> None:
        self.con.execute("SELECT count(*) FROM twin_meta").fetchone()

    def close(self) -> None:
        self._connections.close_all()

    # ----- layers -------------------------------------------------------------------------
    def _layer_from_row(self, row: tuple) -> Layer:
        layer_id, description, version, count, t_start, t_end, open_ended = row
        data = json.loads(description)
        layer = Layer(**data)
        layer.version = version
        layer.feature_count = count
        if t_start is not None:
            layer.time_extent = (read_time(t_start), None if open_ended else read_time(t_end))
        bounds = self.con.execute(
            "SELECT min_x, min_y, max_x, max_y FROM gpkg_contents WHERE table_name = ?", (layer_id,)
        ).fetchone()
        if bounds and bounds[0] is not None:
            layer.bbox = tuple(bounds)
        return layer

    def list_layers(self) -> list[Layer]:
        rows = self.con.execute("SELECT * FROM twin_layers ORDER BY id").fetchall()
        return [self._layer_from_row(row) for row in rows]

    def get_layer(self, layer_id: str) -> Layer:
        row = self.con.execute("SELECT * FROM twin_layers WHERE id = ?", (layer_id,)).fetchone()
        if row is None:
            raise NotFound(f"layer {layer_id!r} not found")
        return self._layer_from_row(row)

    def put_layer(self, layer: Layer) -> Layer:
        with self._transaction() as con:
            self._put_layer(con, layer)
        return self.get_layer(layer.id)

    def _put_layer(self, con: sqlite3.Connection, layer: Layer) -> None:
        table = check_layer_id(layer.id)
        exists = con.execute("SELECT 1 FROM twin_layers WHERE id = ?", (table,)).fetchone()
        if exists:
            con.execute("UPDATE twin_layers SET description = ? WHERE id = ?", (layer_description(layer), table))
            con.execute(
                "UPDATE gpkg_contents SET description = ? WHERE table_name = ?", (contents_description(layer), table)
            )
            return
        con.execute(
            f'CREATE TABLE "{table}" (fid INTEGER PRIMARY KEY AUTOINCREMENT, geom GEOMETRY, '
            "feature_id TEXT NOT NULL, version INTEGER NOT NULL, valid_from DATETIME NOT NULL, "
            "valid_to DATETIME, properties TEXT NOT NULL, twin_digest TEXT NOT NULL)"
        )
        con.execute(f'CREATE UNIQUE INDEX "twin_fv_{table}" ON "{table}" (feature_id, version)')
        con.execute(f'CREATE INDEX "twin_open_{table}" ON "{table}" (valid_to, feature_id)')
        con.execute(f'CREATE VIRTUAL TABLE "rtree_{table}_geom" USING rtree(id, minx, maxx, miny, maxy)')
        for statement in RTREE_TRIGGERS.format(t=table).split("END;"):
            if statement.strip():
                con.execute(statement + "END;")
        con.execute(
            "INSERT INTO gpkg_contents (table_name, data_type, identifier, description, srs_id) "
            "VALUES (?, 'features', ?, ?, ?)",
            (table, table, contents_description(layer), self.srs_id),
        )
        geometry_name, z_flag = geometry_column_type(layer.geometry_type)
        con.execute(
            "INSERT INTO gpkg_geometry_columns VALUES (?, 'geom', ?, ?, ?, 0)",
            (table, geometry_name, self.srs_id, z_flag),
        )
        con.execute(
            "INSERT INTO gpkg_extensions VALUES (?, 'geom', 'gpkg_rtree_index', "
            "'http://www.geopackage.org/spec120/#extension_rtree', 'write-only')",
            (table,),
        )
        con.execute("INSERT INTO twin_layers (id, description) VALUES (?, ?)", (table, layer_description(layer)))

    def delete_layer(self, layer_id: str) -> None:
        self.get_layer(layer_id)
        with self._transaction() as con:
            con.execute(f'DROP TABLE "{layer_id}"')
            con.execute(f'DROP TABLE "rtree_{layer_id}_geom"')
            for table in ("gpkg_contents", "gpkg_geometry_columns", "gpkg_extensions"):
                con.execute(f"DELETE FROM {table} WHERE table_name = ?", (layer_id,))
            con.execute("DELETE FROM twin_layers WHERE id = ?", (layer_id,))
            self._log_change(con, layer_id, 0, WHOLE_LAYER)

    def _refresh_layer_summary(self, con: sqlite3.Connection, table: str) -> int:
        """Keep bbox, time extent and count in step with the rows, and bump the version."""
        minx, maxx, miny, maxy = con.execute(
            f'SELECT min(minx), max(maxx), min(miny), max(maxy) FROM "rtree_{table}_geom"'
        ).fetchone()
        t_start, t_end, open_count = con.execute(
            f'SELECT min(valid_from), max(valid_to), sum(valid_to IS NULL) FROM "{table}"'
        ).fetchone()
        con.execute(
            "UPDATE gpkg_contents SET min_x=?, min_y=?, max_x=?, max_y=?, "
            "last_change=strftime('%Y-%m-%dT%H:%M:%fZ','now') WHERE table_name=?",
            (minx, miny, maxx, maxy, table),
        )
        con.execute(
            "UPDATE twin_layers SET version = version + 1, feature_count = ?, time_start = ?, "
            "time_end = ?, open_ended = ? WHERE id = ?",
            (open_count or 0, t_start, t_end, 1 if open_count else 0, table),
        )
        return con.execute("SELECT version FROM twin_layers WHERE id = ?", (table,)).fetchone()[0]

    # ----- features -----------------------------------------------------------------------
    def _open_versions(self, con: sqlite3.Connection, table: str) -> dict[str, OpenVersion]:
        rows = con.execute(
            f'SELECT fid, feature_id, version, twin_digest, valid_from FROM "{table}" WHERE valid_to IS NULL'
        )
        return {fid: OpenVersion(row, version, digest, read_time(vf)) for row, fid, version, digest, vf in rows}

    def _last_versions(self, con: sqlite3.Connection, table: str) -> dict[str, int]:
        rows = con.execute(f'SELECT feature_id, max(version) FROM "{table}" GROUP BY feature_id')
        return dict(rows)

    def write_features(
        self,
        layer: Layer,
        features: Iterable[FeatureInput],
        *,
        valid_from: datetime | None = None,
        mode: WriteMode = WriteMode.upsert,
    ) -> WriteReport:
        start = utc(valid_from) if valid_from is not None else now_utc()
        start_text = format_time(start)
        table = layer.id
        report = WriteReport(layer=table)
        with self._transaction() as con:
            self._put_layer(con, layer)
            open_versions = self._open_versions(con, table)
            last_versions = self._last_versions(con, table)

            def close(row_ids: list[Any]) -> Any:
                con.executemany(f'UPDATE "{table}" SET valid_to = ? WHERE fid = ?', [(start_text, r) for r in row_ids])
                return self._rows_extent(con, table, row_ids)

            tally = write_in_batches(
                features,
                start,
                report,
                batch_size=BATCH,
                lookup=lambda _fids: (open_versions, last_versions),
                close=close,
                insert=lambda batch, inserts: self._insert_versions(con, table, batch, inserts, start_text),
                everything_open=open_versions if mode == WriteMode.replace else None,
            )
            report.layer_version = self._refresh_layer_summary(con, table)
            touched = merged_bounds(*tally.inserted_bounds, *tally.closed_bounds)
            report.changed_bbox = self._log_change(con, table, report.layer_version, touched)
        return report

    def _insert_versions(
        self, con: sqlite3.Connection, table: str, batch, inserts: list[tuple[int, int]], start_text: str
    ) -> None:
        """Insert rows with their R-tree entries in bulk.

        The GeoPackage insert trigger (kept for other writers such as QGIS) calls a Python
        function per row; inside this transaction it is dropped, the R-tree is filled from the
        bounds already computed, and the trigger is put back before commit.
        """
        if not inserts:
            return
        first = con.execute(f'SELECT coalesce(max(fid), 0) + 1 FROM "{table}"').fetchone()[0]
        rows, entries = [], []
        for offset, (i, version) in enumerate(inserts):
            bounds = tuple(batch.bounds[i])
            rows.append(
                (
                    first + offset,
                    gpkg_geometry.encode(batch.wkb[i], bounds, self.srs_id),
                    batch.fids[i],
                    version,
                    start_text,
                    batch.properties[i],
                    batch.digests[i],
                )
            )
            if bounds[0] == bounds[0]:  # not NaN: a non-empty geometry
                entries.append((first + offset, bounds[0], bounds[2], bounds[1], bounds[3]))
        insert_trigger = RTREE_TRIGGERS.format(t=table).split("END;")[0] + "END;"
        con.execute(f'DROP TRIGGER "rtree_{table}_geom_insert"')
        con.executemany(
            f'INSERT INTO "{table}" (fid, geom, feature_id, version, valid_from, properties, twin_digest) '
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        con.executemany(f'INSERT INTO "rtree_{table}_geom" VALUES (?, ?, ?, ?, ?)', entries)
        con.execute(insert_trigger)

    def close_features(self, layer_id: str, fids: Iterable[str], at: datetime | None = None) -> int:
        self.get_layer(layer_id)
        end = utc(at) if at is not None else now_utc()
        wanted = set(fids)
        with self._transaction() as con:
            open_versions = self._open_versions(con, layer_id)
            missing = wanted - open_versions.keys()
            if missing:
                raise NotFound(f"no open version of feature {sorted(missing)[0]!r} in layer {layer_id!r}")
            closing = [open_versions[fid] for fid in wanted]
            check_closable(closing, end)
            con.executemany(
                f'UPDATE "{layer_id}" SET valid_to = ? WHERE fid = ?', [(format_time(end), v.row_id) for v in closing]
            )
            version = self._refresh_layer_summary(con, layer_id)
            self._log_change(con, layer_id, version, self._rows_extent(con, layer_id, [v.row_id for v in closing]))
        return len(closing)

    def _rows_to_features(self, layer_id: str, rows: list[tuple]) -> list[Feature]:
        geoms = gpkg_geometry.decode_many([row[0] for row in rows])
        return [
            Feature(layer_id, fid, version, read_time(vf), read_time(vt), geom, json.loads(props))
            for geom, (_, fid, version, vf, vt, props) in zip(geoms, rows, strict=True)
        ]

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
        where_time, params = time_clause(time)
        where_props, prop_params = property_clause(filters)
        sql = (
            f'SELECT geom, feature_id, version, valid_from, valid_to, properties FROM "{layer_id}" '
            f"WHERE {where_time} AND {where_props}"
        )
        params = params + prop_params
        if bbox is None:
            if count:
                matched = self.con.execute(
                    f'SELECT count(*) FROM "{layer_id}" WHERE {where_time} AND {where_props}', params
                ).fetchone()[0]
            page_sql = sql + f" ORDER BY fid LIMIT {-1 if limit is None else int(limit)} OFFSET {int(offset)}"
            rows = self.con.execute(page_sql, params).fetchall()
            return QueryResult(self._rows_to_features(layer_id, rows), matched if count else None)
        sql += (
            f' AND fid IN (SELECT id FROM "rtree_{layer_id}_geom" '
            "WHERE minx <= ? AND maxx >= ? AND miny <= ? AND maxy >= ?) ORDER BY fid"
        )
        params += [bbox.maxx, bbox.minx, bbox.maxy, bbox.miny]
        return self._exact_bbox_page(layer_id, sql, params, bbox, limit, offset, count)

    def feature_versions(self, layer_id: str, time: TimeFilter | None = None) -> list[tuple[str, int]]:
        self.get_layer(layer_id)
        where_time, params = time_clause(time)
        rows = self.con.execute(f'SELECT feature_id, version FROM "{layer_id}" WHERE {where_time}', params)
        return [(fid, int(version)) for fid, version in rows]

    def _exact_bbox_page(
        self, layer_id: str, sql: str, params: list, bbox: BBox, limit: int | None, offset: int, count: bool
    ) -> QueryResult:
        """The R-tree gives envelope candidates; shapely keeps those that really intersect."""
        box = shapely.box(*bbox.as_tuple())
        cursor = self.con.execute(sql, params)
        page: list[Feature] = []
        matched = 0
        while rows := cursor.fetchmany(SCAN_CHUNK):
            features = self._rows_to_features(layer_id, rows)
            hits = shapely.intersects(np.array([f.geometry for f in features], dtype=object), box)
            for feature, hit in zip(features, hits, strict=True):
                if not hit:
                    continue
                if matched >= offset and (limit is None or len(page) < limit):
                    page.append(feature)
                matched += 1
            if not count and limit is not None and len(page) >= limit:
                break
        return QueryResult(page, matched if count else None)

    def get_feature(self, layer_id: str, fid: str, time: TimeFilter | None = None) -> Feature:
        self.get_layer(layer_id)
        where_time, params = time_clause(time)
        rows = self.con.execute(
            f'SELECT geom, feature_id, version, valid_from, valid_to, properties FROM "{layer_id}" '
            f"WHERE feature_id = ? AND {where_time} ORDER BY version DESC LIMIT 1",
            [fid, *params],
        ).fetchall()
        if not rows:
            raise NotFound(f"feature {fid!r} not found in layer {layer_id!r} at that time")
        return self._rows_to_features(layer_id, rows)[0]

    def history(self, layer_id: str, fid: str) -> list[Feature]:
        self.get_layer(layer_id)
        rows = self.con.execute(
            f'SELECT geom, feature_id, version, valid_from, valid_to, properties FROM "{layer_id}" '
            "WHERE feature_id = ? ORDER BY version",
            (fid,),
        ).fetchall()
        if not rows:
            raise NotFound(f"feature {fid!r} not found in layer {layer_id!r}")
        return self._rows_to_features(layer_id, rows)

    # ----- change log and bulk readers (vector tiles) ---------------------------------------
    @staticmethod
    def _rows_extent(con: sqlite3.Connection, table: str, row_ids: list) -> tuple | None:
        """The box around some rows, from the R-tree (closed rows keep their entries)."""
        if not row_ids:
            return None
        extent = con.execute(
            f'SELECT min(minx), min(miny), max(maxx), max(maxy) FROM "rtree_{table}_geom" '
            "WHERE id IN (SELECT value FROM json_each(?))",
            (json.dumps([int(r) for r in row_ids]),),
        ).fetchone()
        return None if extent[0] is None else tuple(extent)

    @staticmethod
    def _log_change(con: sqlite3.Connection, table: str, version: int, bbox: tuple | None) -> tuple | None:
        """Record what a write touched (created on first use, so older twins gain the table)."""
        con.execute(CHANGES_TABLE)
        con.execute(
            "INSERT INTO twin_changes (layer, version, min_x, min_y, max_x, max_y) VALUES (?, ?, ?, ?, ?, ?)",
            (table, version, *(bbox or (None,) * 4)),
        )
        return bbox

    def layer_changes(self, since: int) -> list[LayerChange] | None:
        try:
            rows = self.con.execute(
                "SELECT seq, layer, version, min_x, min_y, max_x, max_y FROM twin_changes WHERE seq > ? ORDER BY seq",
                (since,),
            ).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []
            raise
        return [
            LayerChange(seq, layer, version, None if b[0] is None else tuple(b)) for seq, layer, version, *b in rows
        ]

    def layer_versions(self) -> dict[str, int]:
        return dict(self.con.execute("SELECT id, version FROM twin_layers").fetchall())

    def change_token(self) -> tuple[int, int]:
        """SQLite's data_version moves when another connection commits; total_changes when this
        thread's connection writes. Reading both costs microseconds."""
        con = self.con
        return (con.execute("PRAGMA data_version").fetchone()[0], con.total_changes)

    def feature_arrays(self, layer_id: str, *, bbox: BBox, time: TimeFilter | None = None) -> FeatureArrays:
        """Straight from the R-tree and the rows: blobs decoded in one vectorised call, no JSON parsing."""
        where_time, params = time_clause(time)
        rows = self.con.execute(
            f'SELECT feature_id, geom, properties FROM "{check_layer_id(layer_id)}" WHERE fid IN '
            f'(SELECT id FROM "rtree_{layer_id}_geom" WHERE minx <= ? AND maxx >= ? AND miny <= ? AND maxy >= ?) '
            f"AND {where_time} ORDER BY feature_id",
            [bbox.maxx, bbox.minx, bbox.maxy, bbox.miny, *params],
        ).fetchall()
        if not rows:
            return FeatureArrays([], np.empty(0, dtype=object), [])
        fids, blobs, properties = zip(*rows, strict=True)
        # this store writes little-endian headers with an XY envelope (flags 3, WKB at byte 40)
        wkbs = [
            b[40:] if b is not None and b[3] == 3 else None if b is None else b[gpkg_geometry.wkb_offset(b) :]
            for b in blobs
        ]
        return FeatureArrays(list(fids), shapely.from_wkb(wkbs), list(properties))

    # ----- observations -------------------------------------------------------------------
    def add_observations(self, observations: Iterable[Observation]) -> int:
        rows = [(o.sensor_id, format_time(o.time), o.quantity, float(o.value), o.unit) for o in observations]
        with self._transaction() as con:
            con.executemany(
                "INSERT INTO twin_observations (sensor_id, time, quantity, value, unit) VALUES (?,?,?,?,?)", rows
            )
        return len(rows)

    def query_observations(
        self,
        sensor_id: str,
        *,
        time: TimeFilter | None = None,
        quantity: str | None = None,
        limit: int | None = None,
    ) -> list[Observation]:
        sql = "SELECT sensor_id, time, quantity, value, unit FROM twin_observations WHERE sensor_id = ?"
        params: list[Any] = [sensor_id]
        if time is not None and time.start is not None:
            sql += " AND time >= ?"
            params.append(format_time(time.start))
        if time is not None and time.end is not None:
            sql += " AND time <= ?"
            params.append(format_time(time.end))
        if quantity is not None:
            sql += " AND quantity = ?"
            params.append(quantity)
        sql += " ORDER BY time, id"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [Observation(s, read_time(t), q, v, u) for s, t, q, v, u in self.con.execute(sql, params).fetchall()]
