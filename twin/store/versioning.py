"""Which rows a batch write inserts and closes: the versioning rule both backends share.

An edit closes the open version and opens the next; an identical feature is left alone; with
`replace` the open features missing from the batch are closed (a new edition of a map sheet).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import shapely

from twin.model import FeatureInput, InvalidInput
from twin.store.base import WriteReport, chunks, properties_json


@dataclass
class OpenVersion:
    row_id: Any
    version: int
    digest: str
    valid_from: datetime


@dataclass
class PreparedBatch:
    """A batch in storage form: ISO WKB, canonical JSON and a digest per feature."""

    fids: list[str]
    wkb: list[bytes | None]
    bounds: np.ndarray  # (n, 4) minx, miny, maxx, maxy; NaN where empty or missing
    properties: list[str]
    digests: list[str]


@dataclass
class WritePlan:
    inserts: list[tuple[int, int]] = field(default_factory=list)  # (batch index, new version)
    closes: list[Any] = field(default_factory=list)  # row ids whose valid_to is set
    updated: int = 0
    unchanged: int = 0


def prepare_batch(features: Sequence[FeatureInput]) -> PreparedBatch:
    """Encode geometries with shapely in one vectorised call and digest each feature."""
    fids = [str(f.fid) for f in features]
    if len(set(fids)) != len(fids):
        seen: set[str] = set()
        dup = next(fid for fid in fids if fid in seen or seen.add(fid))
        raise InvalidInput(f"feature id {dup!r} appears more than once in one write")
    if any(not fid for fid in fids):
        raise InvalidInput("every feature needs a non-empty id")
    geoms = np.array([f.geometry for f in features], dtype=object)
    invalid = [i for i, g in enumerate(geoms) if g is not None and not isinstance(g, shapely.Geometry)]
    if invalid:
        raise InvalidInput(f"feature {fids[invalid[0]]!r} has a geometry that is not a shapely geometry")
    wkb_array = shapely.to_wkb(geoms, flavor="iso", byte_order=1, include_srid=False)
    bounds = shapely.bounds(geoms)
    if np.isinf(bounds).any():
        raise InvalidInput("a geometry has non-finite coordinates")
    props = [properties_json(f.properties) for f in features]
    wkb = [None if w is None else bytes(w) for w in wkb_array]
    digests = [hashlib.sha1((w or b"") + b"\x00" + p.encode()).hexdigest() for w, p in zip(wkb, props, strict=True)]
    return PreparedBatch(fids, wkb, bounds, props, digests)


def plan_write(
    batch: PreparedBatch,
    open_versions: dict[str, OpenVersion],
    last_versions: dict[str, int],
    valid_from: datetime,
) -> WritePlan:
    """Decide per feature: unchanged, new, or a new version closing the open one."""
    plan = WritePlan()
    for index, (fid, digest) in enumerate(zip(batch.fids, batch.digests, strict=True)):
        current = open_versions.get(fid)
        if current is None:
            plan.inserts.append((index, last_versions.get(fid, 0) + 1))
            continue
        if current.digest == digest:
            plan.unchanged += 1
            continue
        if valid_from <= current.valid_from:
            raise InvalidInput(
                f"feature {fid!r}: the new version's valid_from {valid_from.isoformat()} is not after "
                f"the open version's {current.valid_from.isoformat()}"
            )
        plan.closes.append(current.row_id)
        plan.inserts.append((index, current.version + 1))
        plan.updated += 1
    return plan


def missing_from(given: set[str], open_versions: dict[str, OpenVersion]) -> list[OpenVersion]:
    """Open versions a `replace` write closes because the new edition no longer has them."""
    return [v for fid, v in open_versions.items() if fid not in given]


def check_closable(versions: Sequence[OpenVersion], at: datetime) -> None:
    """A version can only be closed after it opened; otherwise history would run backwards."""
    for version in versions:
        if at <= version.valid_from:
            raise InvalidInput(
                f"cannot close a version at {at.isoformat()}: it opened at {version.valid_from.isoformat()}"
            )


@dataclass
class WriteTally:
    """What a batched write did, for the backend's layer summary and change log."""

    opened: int = 0
    closed: int = 0
    inserted_bounds: list[np.ndarray] = field(default_factory=list)
    closed_bounds: list[Any] = field(default_factory=list)


def write_in_batches(
    features: Iterable[FeatureInput],
    valid_from: datetime,
    report: WriteReport,
    *,
    batch_size: int,
    lookup: Callable[[list[str]], tuple[dict[str, OpenVersion], dict[str, int]]],
    close: Callable[[list[Any]], Any],
    insert: Callable[[PreparedBatch, list[tuple[int, int]]], None],
    everything_open: dict[str, OpenVersion] | None = None,
) -> WriteTally:
    """The write loop both backends run, so their versioning stays the same by construction.

    `lookup` gives the open and last versions of a batch's ids, `close` ends rows and returns
    their bounds, `insert` stores new versions. With `everything_open` (a `replace` write) the
    open features the batches did not mention are closed too.
    """
    tally = WriteTally()
    seen: set[str] = set()
    for chunk in chunks(features, batch_size):
        batch = prepare_batch(chunk)
        repeated = seen.intersection(batch.fids)
        if repeated:
            raise InvalidInput(f"feature id {sorted(repeated)[0]!r} appears more than once in one write")
        seen.update(batch.fids)
        open_versions, last_versions = lookup(batch.fids)
        plan = plan_write(batch, open_versions, last_versions, valid_from)
        tally.closed_bounds.append(close(plan.closes))
        insert(batch, plan.inserts)
        tally.inserted_bounds.append(batch.bounds[[i for i, _ in plan.inserts]])
        tally.opened += len(plan.inserts)
        tally.closed += len(plan.closes)
        report.inserted += len(plan.inserts) - plan.updated
        report.updated += plan.updated
        report.unchanged += plan.unchanged
    if everything_open is not None:
        gone = missing_from(seen, everything_open)
        check_closable(gone, valid_from)
        tally.closed_bounds.append(close([v.row_id for v in gone]))
        report.closed = len(gone)
        tally.closed += len(gone)
    return tally
