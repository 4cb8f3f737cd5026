"""Content-addressed asset files (glb, COG, textures) in the data directory.

Assets are named by the SHA-256 of their bytes, so the same file stored twice is kept once and
a half-written file never takes a real name (written to a temporary name, then renamed).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from twin.model import InvalidInput, NotFound

CHUNK = 1 << 20


class AssetStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        """Where the asset `key` (its hex digest plus an optional suffix) lives."""
        digest = key.split(".", 1)[0]
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest) or "/" in key:
            raise InvalidInput(f"invalid asset key {key!r}")
        return self.root / digest[:2] / key

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def open_path(self, key: str) -> Path:
        path = self.path(key)
        if not path.is_file():
            raise NotFound(f"asset {key} not found")
        return path

    def put_file(self, source: Path, suffix: str = "") -> str:
        """Copy a file in; returns its key."""
        self.root.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        fd, tmp_name = tempfile.mkstemp(dir=self.root, prefix=".incoming-")
        try:
            with open(source, "rb") as src, os.fdopen(fd, "wb") as dst:
                while chunk := src.read(CHUNK):
                    digest.update(chunk)
                    dst.write(chunk)
                dst.flush()
                os.fsync(dst.fileno())
            return self._adopt(Path(tmp_name), digest.hexdigest() + suffix)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise

    def put_bytes(self, data: bytes, suffix: str = "") -> str:
        self.root.mkdir(parents=True, exist_ok=True)
        key = hashlib.sha256(data).hexdigest() + suffix
        if self.exists(key):
            return key
        fd, tmp_name = tempfile.mkstemp(dir=self.root, prefix=".incoming-")
        with os.fdopen(fd, "wb") as dst:
            dst.write(data)
            dst.flush()
            os.fsync(dst.fileno())
        return self._adopt(Path(tmp_name), key)

    def _adopt(self, tmp: Path, key: str) -> str:
        target = self.path(key)
        if target.exists():
            tmp.unlink()
            return key
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, target)
        return key

    def keys(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.glob("??/*") if p.is_file())

    def remove_unreferenced(self, referenced: set[str]) -> list[str]:
        """Delete assets nothing refers to (left by a failed ingest); returns their keys."""
        removed = [key for key in self.keys() if key not in referenced]
        for key in removed:
            self.path(key).unlink()
        for stale in self.root.glob(".incoming-*"):
            stale.unlink()
        return removed

    def copy_out(self, key: str, target: Path) -> None:
        shutil.copyfile(self.open_path(key), target)
