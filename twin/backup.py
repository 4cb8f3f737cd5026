"""`twin backup` and `twin restore` for the embedded store.

A backup is a folder: consistent copies of the SQLite files (the GeoPackage, the API keys and the
jobs) made with SQLite's online backup API, so a server may keep writing meanwhile; the assets
(content-addressed, written before the transaction that refers to them commits, never changed,
so every asset the copied store refers to is there); the config file if any; and `backup.json`
with each file's SHA-256 and the layer versions, checked again before a restore.

A restore refuses to replace an existing twin unless forced, and refuses while a server is
running on the data directory (its job runner holds a lock there). A PostGIS store is backed up
with the database's own tools (`pg_dump`) plus a copy of the assets folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from twin.auth import KEYS_FILE
from twin.config import CONFIG_FILE
from twin.jobs import JOBS_DIR, JOBS_FILE, RunnerLock
from twin.model import Conflict, InvalidInput, NotFound

STORE_FILE = "twin.gpkg"
DATABASES = (STORE_FILE, KEYS_FILE, JOBS_FILE)
MANIFEST = "backup.json"
FORMAT = 1
CHUNK = 1 << 20


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _copy_database(source: Path, target: Path) -> None:
    """A consistent copy, as one self-contained file (rollback journal, no WAL beside it)."""
    with sqlite3.connect(source, timeout=60) as src, sqlite3.connect(target) as dst:
        src.backup(dst, pages=4096)
        dst.execute("PRAGMA journal_mode=DELETE")
    src.close()
    dst.close()


def _layers(database: Path) -> dict[str, int]:
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as con:
        rows = con.execute("SELECT id, version FROM twin_layers ORDER BY id").fetchall()
        crs = con.execute("SELECT value FROM twin_meta WHERE key = 'crs'").fetchone()
    con.close()
    return {"crs": crs[0] if crs else None, "layers": dict(rows)}  # type: ignore[return-value]


def _asset_files(root: Path) -> list[Path]:
    return sorted(p for p in root.glob("??/*") if p.is_file()) if root.is_dir() else []


def _check_embedded(data_dir: Path) -> Path:
    url = os.environ.get("TWIN_STORE", "")
    if url.startswith(("postgresql://", "postgres://")):
        raise InvalidInput("twin backup/restore handle the embedded store; back up PostGIS with pg_dump")
    database = data_dir / STORE_FILE
    if not database.is_file():
        raise NotFound(f"no twin at {data_dir} (no {STORE_FILE})")
    return database


def backup(data_dir: Path, out: Path) -> dict[str, Any]:
    """Copy the twin at `data_dir` into the new folder `out`; returns the manifest."""
    data_dir, out = Path(data_dir), Path(out)
    _check_embedded(data_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InvalidInput(f"{out} already exists and is not an empty folder")
    partial = out.parent / f".{out.name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        files: dict[str, str] = {}
        for name in DATABASES:
            if (data_dir / name).is_file():
                _copy_database(data_dir / name, partial / name)
                files[name] = _sha256(partial / name)
        if (data_dir / CONFIG_FILE).is_file():
            shutil.copy2(data_dir / CONFIG_FILE, partial / CONFIG_FILE)
            files[CONFIG_FILE] = _sha256(partial / CONFIG_FILE)
        assets = _asset_files(data_dir / "assets")
        for asset in assets:
            target = partial / "assets" / asset.parent.name / asset.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(asset, target)
        manifest = {
            "format": FORMAT,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "source": str(data_dir.resolve()),
            **_layers(partial / STORE_FILE),
            "files": files,
            "assets": len(assets),
        }
        (partial / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False), encoding="utf-8")
        if out.exists():
            out.rmdir()
        partial.rename(out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return manifest


def read_manifest(source: Path) -> dict[str, Any]:
    """The backup's manifest after checking every file against its recorded SHA-256."""
    path = Path(source) / MANIFEST
    if not path.is_file():
        raise InvalidInput(f"{source} is not a twin backup (no {MANIFEST})")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{path} is damaged: {exc}") from exc
    if manifest.get("format") != FORMAT or STORE_FILE not in manifest.get("files", {}):
        raise InvalidInput(f"{source}: unknown backup format {manifest.get('format')!r}")
    for name, digest in manifest["files"].items():
        if name not in (*DATABASES, CONFIG_FILE):
            raise InvalidInput(f"{source}: unexpected file {name!r} in the manifest")
        if not (Path(source) / name).is_file() or _sha256(Path(source) / name) != digest:
            raise InvalidInput(f"{source}: {name} is missing or damaged (checksum differs)")
    if len(_asset_files(Path(source) / "assets")) != manifest.get("assets"):
        raise InvalidInput(f"{source}: the assets folder does not hold the {manifest.get('assets')} assets recorded")
    return manifest


def _server_running(data_dir: Path) -> bool:
    runners = data_dir / JOBS_DIR / "runners"
    if not runners.is_dir():
        return False
    return any(RunnerLock.alive(runners, lock.stem) for lock in runners.glob("*.lock"))


def restore(source: Path, data_dir: Path, *, force: bool = False) -> dict[str, Any]:
    """Put the backup at `source` in place as the twin at `data_dir`; returns its manifest."""
    source, data_dir = Path(source), Path(data_dir)
    manifest = read_manifest(source)
    if (data_dir / STORE_FILE).exists():
        _check_embedded(data_dir)
        if not force:
            raise Conflict(f"{data_dir} already holds a twin; pass --force to replace it with the backup")
        if _server_running(data_dir):
            raise Conflict(f"a server is running on {data_dir}; stop it before restoring")
    data_dir.mkdir(parents=True, exist_ok=True)
    for name in manifest["files"]:
        staged = data_dir / f".restore-{name}"
        shutil.copy2(source / name, staged)
        if name in DATABASES:
            for stale in (f"{name}-wal", f"{name}-shm", f"{name}-journal"):
                (data_dir / stale).unlink(missing_ok=True)
        if name == CONFIG_FILE and (data_dir / name).exists():
            staged.unlink()  # the deployment's own config stays
            continue
        os.replace(staged, data_dir / name)
    for name in DATABASES:  # files the backup did not have (no keys yet) must not survive from before
        if name not in manifest["files"]:
            for suffix in ("", "-wal", "-shm"):
                (data_dir / f"{name}{suffix}").unlink(missing_ok=True)
    for asset in _asset_files(source / "assets"):
        target = data_dir / "assets" / asset.parent.name / asset.name
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            staged = target.with_name(f".incoming-restore-{asset.name}")
            shutil.copy2(asset, staged)
            os.replace(staged, target)
    return manifest
