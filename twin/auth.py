"""API keys with roles, stored hashed in `keys.sqlite` in the data directory.

A key is shown once, when it is made: `twin_<id>_<secret>`. The id (public, 12 hex digits)
finds the row; only an HMAC-SHA256 of the secret under a per-key random salt is stored, so a
copy of the file (or a backup) does not give anyone access. The secret is 256 random bits, so a
fast keyed hash is enough (a slow password hash protects low-entropy secrets; these are not)
and a check costs microseconds on every request.

Keys live beside the store rather than inside it so that both backends (GeoPackage and PostGIS)
share one implementation; with PostGIS the data directory is shared by the API workers anyway
(it holds the assets).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import sqlite3
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

from twin.model import InvalidInput, Layer, NotFound
from twin.store import Store

KEYS_FILE = "keys.sqlite"
TOKEN = re.compile(r"^twin_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
NAME = re.compile(r"^[\w .@:-]{1,64}$")
SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
  id TEXT PRIMARY KEY, name TEXT NOT NULL, role TEXT NOT NULL, salt BLOB NOT NULL,
  digest BLOB NOT NULL, created TEXT NOT NULL, revoked TEXT)
"""


class Role(StrEnum):
    """What a key may do; each role includes the ones before it."""

    reader = "reader"  # read (needed when public reads are off, and for restricted layers)
    editor = "editor"  # write: ingest, observations, edits, jobs that change data
    admin = "admin"  # key management and configuration

    @property
    def rank(self) -> int:
        return list(Role).index(self)

    def allows(self, needed: Role | str) -> bool:
        return self.rank >= Role(needed).rank


@dataclass(frozen=True)
class ApiKey:
    """A key's public record (never its secret)."""

    id: str
    name: str
    role: Role
    created: datetime
    revoked: datetime | None = None

    @property
    def active(self) -> bool:
        return self.revoked is None

    def as_dict(self) -> dict:
        return {
            "id": self.id,
            "name": self.name,
            "role": self.role.value,
            "created": self.created.isoformat(),
            "revoked": None if self.revoked is None else self.revoked.isoformat(),
        }


def _digest(salt: bytes, secret: str) -> bytes:
    return hmac.new(salt, secret.encode("ascii"), hashlib.sha256).digest()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _key(row: tuple) -> ApiKey:
    key_id, name, role, created, revoked = row
    return ApiKey(
        key_id,
        name,
        Role(role),
        datetime.fromisoformat(created),
        None if revoked is None else datetime.fromisoformat(revoked),
    )


class KeyStore:
    """The keys of one twin; safe to share between threads and processes."""

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / KEYS_FILE
        self._lock = threading.Lock()
        self._con: sqlite3.Connection | None = None

    def _connection(self, create: bool) -> sqlite3.Connection | None:
        """The open connection; None when there is no key file yet and `create` is false, so that
        checking a key on a twin without keys writes nothing."""
        if self._con is None:
            if not self.path.exists():
                if not create:
                    return None
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600)  # only the owner reads hashes
                os.close(fd)
            con = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
            con.execute("PRAGMA journal_mode=WAL")
            con.execute(SCHEMA)
            self._con = con
        return self._con

    def create(self, name: str, role: Role | str) -> tuple[ApiKey, str]:
        """A new key; returns its record and the token, which is not stored and cannot be shown again."""
        if not NAME.match(name or ""):
            raise InvalidInput(f"invalid key name {name!r}: 1 to 64 letters, digits, spaces or . _ @ : -")
        try:
            role = Role(role)
        except ValueError:
            raise InvalidInput(f"invalid role {role!r}; expected one of {', '.join(Role)}") from None
        key_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        salt = secrets.token_bytes(16)
        created = _now()
        with self._lock:
            con = self._connection(create=True)
            con.execute(
                "INSERT INTO api_keys (id, name, role, salt, digest, created) VALUES (?, ?, ?, ?, ?, ?)",
                (key_id, name, role.value, salt, _digest(salt, secret), created),
            )
        return ApiKey(key_id, name, role, datetime.fromisoformat(created)), f"twin_{key_id}_{secret}"

    def list(self, include_revoked: bool = True) -> list[ApiKey]:
        with self._lock:
            con = self._connection(create=False)
            if con is None:
                return []
            sql = "SELECT id, name, role, created, revoked FROM api_keys"
            if not include_revoked:
                sql += " WHERE revoked IS NULL"
            rows = con.execute(sql + " ORDER BY created, id").fetchall()
        return [_key(row) for row in rows]

    def revoke(self, key_id: str) -> ApiKey:
        """Revoke by id (the token's middle part, as `list` shows it); takes effect at once."""
        with self._lock:
            con = self._connection(create=False)
            row = None
            if con is not None:
                con.execute("UPDATE api_keys SET revoked = ? WHERE id = ? AND revoked IS NULL", (_now(), key_id))
                row = con.execute(
                    "SELECT id, name, role, created, revoked FROM api_keys WHERE id = ?", (key_id,)
                ).fetchone()
        if row is None:
            raise NotFound(f"no API key with id {key_id!r} (see 'twin keys list')")
        return _key(row)

    def verify(self, token: str) -> ApiKey | None:
        """The active key this token belongs to, or None (unknown, malformed, revoked or wrong)."""
        match = TOKEN.match(token or "")
        if match is None:
            return None
        key_id, secret = match.groups()
        with self._lock:
            con = self._connection(create=False)
            if con is None:
                return None
            row = con.execute(
                "SELECT id, name, role, created, revoked, salt, digest FROM api_keys WHERE id = ?", (key_id,)
            ).fetchone()
        if row is None or row[4] is not None:
            return None
        if not hmac.compare_digest(_digest(row[5], secret), row[6]):
            return None
        return _key(row[:5])

    def close(self) -> None:
        with self._lock:
            if self._con is not None:
                self._con.close()
                self._con = None


def set_restricted(store: Store, layer_id: str, restricted: bool) -> Layer:
    """Mark a layer as needing a key to be read (gas, power networks), or open it again."""
    layer = store.get_layer(layer_id)
    metadata = dict(layer.metadata or {})
    if restricted:
        metadata["restricted"] = True
    else:
        metadata.pop("restricted", None)
    layer.metadata = metadata
    return store.put_layer(layer)
