"""What a crashed or killed ingest can leave behind, and its removal.

The store itself is atomic (one transaction per write on both backends), but an ingest writes
files first: a COG or mesh asset is stored under its hash before the transaction that refers to
it commits, and readers unpack into temporary folders in the data directory. A kill between the
two leaves an asset nothing refers to, or a stale temporary folder.

Ingests hold `ingest_lock` (shared) while they run; `recover` takes it exclusively without
waiting, so it only cleans when no ingest is under way (in any process), and otherwise leaves
the work to the next call. It runs when the API starts, before a CLI ingest, and after a failed
ingest job.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from twin.model import LayerKind, TimeFilter
from twin.store import Store
from twin.store.base import layer_description

logger = logging.getLogger("twin.integrity")

LOCK_FILE = ".ingest.lock"
DIGEST = re.compile(r"[0-9a-f]{64}")
# Temporary folders readers make in the data directory (tempfile's default names and .ifc-*).
STALE_FOLDER = re.compile(r"^(tmp[a-z0-9_]{8}|\.ifc-[a-z0-9_]{8})$")
# Layers whose features name assets; searched first, so the big vector layers are rarely read.
ASSET_KINDS = (LayerKind.raster, LayerKind.terrain, LayerKind.bim, LayerKind.mesh, LayerKind.pointcloud)


@dataclass
class Recovery:
    assets: list[str] = field(default_factory=list)
    folders: list[str] = field(default_factory=list)
    partial_files: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.assets or self.folders or self.partial_files)


def _open_lock(data_dir: Path) -> int:
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    return os.open(Path(data_dir) / LOCK_FILE, os.O_CREAT | os.O_RDWR, 0o644)


@contextmanager
def ingest_lock(data_dir: Path) -> Iterator[None]:
    """Held (shared: ingests may run side by side) for the whole of an ingest."""
    fd = _open_lock(data_dir)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


def _referenced_in_layers(store: Store) -> set[str]:
    """Digests named in any layer's description or metadata (current editions' assets)."""
    text = "\n".join(layer_description(layer) for layer in store.list_layers())
    return set(DIGEST.findall(text))


def _referenced_in_features(store: Store, wanted: set[str]) -> set[str]:
    """Which of `wanted` any feature version of any layer names (older editions' assets)."""
    found: set[str] = set()
    layers = sorted(store.list_layers(), key=lambda layer: layer.kind not in ASSET_KINDS)
    for layer in layers:
        for feature in store.iter_features(layer.id, time=TimeFilter(None, None)):
            text = repr(feature.properties)
            found.update(digest for digest in wanted - found if digest in text)
            if found == wanted:
                return found
    return found


def orphan_assets(store: Store) -> list[str]:
    """Asset keys that neither a layer nor any feature version refers to."""
    keys = store.assets.keys()
    if not keys:
        return []
    candidates = {key.split(".", 1)[0] for key in keys} - _referenced_in_layers(store)
    if candidates:
        candidates -= _referenced_in_features(store, candidates)
    return [key for key in keys if key.split(".", 1)[0] in candidates]


def recover(store: Store) -> Recovery | None:
    """Remove what interrupted ingests left; None (nothing done) while an ingest is running."""
    fd = _open_lock(store.data_dir)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return None
        report = Recovery()
        root = store.assets.root
        if root.is_dir():
            for partial in root.glob(".incoming-*"):
                partial.unlink(missing_ok=True)
                report.partial_files.append(partial.name)
        for entry in Path(store.data_dir).iterdir():
            if entry.is_dir() and not entry.is_symlink() and STALE_FOLDER.match(entry.name):
                shutil.rmtree(entry, ignore_errors=True)
                report.folders.append(entry.name)
        for key in orphan_assets(store):
            store.assets.path(key).unlink(missing_ok=True)
            report.assets.append(key)
        if not report.empty:
            logger.warning(
                "removed what an interrupted ingest left: %d assets, %d folders, %d partial files",
                len(report.assets),
                len(report.folders),
                len(report.partial_files),
            )
        return report
    finally:
        os.close(fd)


@contextmanager
def guarded_ingest(store: Store) -> Iterator[None]:
    """For an ingest: first clear what an interrupted one left, then hold the ingest lock."""
    recover(store)
    with ingest_lock(store.data_dir):
        yield
