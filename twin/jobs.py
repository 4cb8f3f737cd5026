"""Durable background jobs: a table in `jobs.sqlite` in the data directory and a thread pool.

A job kind is a function registered in `JOB_KINDS` with `job_kind(name)`:

    @job_kind("flood")
    def run_flood(params: dict, progress: Progress, cancelled: Cancelled, store: Store) -> dict:
        ...
        progress(0.5, "routing water")   # 0..1 and a message; raises JobCancelled once cancelled
        if cancelled(): ...               # for loops that do not report progress
        return {"max_depth": asset_key}   # JSON: the job's result

Every state change is written to the table before it is acted on, so a job is never lost: a
server that stops (or is killed) leaves its jobs `queued` or `running`, and the next runner that
starts on the same data directory takes them over. A queued job is run; a running one is run
again from the start if its kind is `resumable` (idempotent), otherwise marked failed with a
message saying why. Runners in other processes (several API workers) are told apart by a lock
file each holds for its whole life: a runner whose lock can be taken is gone.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from twin import metrics
from twin.model import Conflict, InvalidInput, NotFound, TwinError
from twin.store import Store

logger = logging.getLogger("twin.jobs")

JOBS_FILE = "jobs.sqlite"
JOBS_DIR = "jobs"  # runner locks and per-job work folders live under DATA/jobs/
CANCEL_POLL_S = 0.25  # how often `cancelled()` looks at the table (a cancel may come from another worker)
STALE_UPLOAD_S = 3600  # a work folder with no job this old is an upload a killed server left
PROGRESS_WRITE_S = 0.25  # progress is written at most this often (the last value always)
INTERRUPTED = (
    "interrupted: the server stopped while this job was running; nothing it was writing was kept "
    "(writes are atomic). Submit it again."
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
  id TEXT PRIMARY KEY, kind TEXT NOT NULL, state TEXT NOT NULL, progress REAL NOT NULL DEFAULT 0,
  message TEXT NOT NULL DEFAULT '', params TEXT NOT NULL, result TEXT, owner TEXT, runner TEXT,
  cancel_requested INTEGER NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0,
  created TEXT NOT NULL, updated TEXT NOT NULL, started TEXT, finished TEXT);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state);
CREATE INDEX IF NOT EXISTS jobs_created ON jobs (created)
"""

Progress = Callable[[float, str], None]
Cancelled = Callable[[], bool]
JobFunction = Callable[[dict, Progress, Cancelled, Store], dict]


class JobState(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobState.succeeded, JobState.failed, JobState.cancelled)


class JobCancelled(Exception):
    """Raised inside a job (by `progress`) once it has been asked to stop."""


@dataclass(frozen=True)
class JobKind:
    """A registered kind: the function, and whether running it again from the start is safe.

    `cleanup(job, store)` runs once the job has ended, whatever the outcome (e.g. delete its
    upload); a resumable job that is queued again keeps its files.
    """

    name: str
    run: JobFunction
    resumable: bool = False
    cleanup: Callable[[Job, Store], None] | None = None


JOB_KINDS: dict[str, JobKind] = {}


def job_kind(
    name: str, *, resumable: bool = False, cleanup: Callable[[Job, Store], None] | None = None
) -> Callable[[JobFunction], JobFunction]:
    """Register a job kind (a decorator); the latest registration of a name wins."""

    def register(function: JobFunction) -> JobFunction:
        JOB_KINDS[name] = JobKind(name, function, resumable, cleanup)
        return function

    return register


@dataclass
class Job:
    id: str
    kind: str
    state: JobState
    progress: float
    message: str
    params: dict[str, Any]
    result: dict[str, Any] | None
    owner: str | None
    created: datetime
    updated: datetime
    started: datetime | None = None
    finished: datetime | None = None
    attempts: int = 0
    cancel_requested: bool = False
    runner: str | None = field(default=None, repr=False)

    def as_dict(self) -> dict[str, Any]:
        """The job as the API shows it (params included: they hold no secrets)."""
        return {
            "id": self.id,
            "kind": self.kind,
            "state": self.state.value,
            "progress": self.progress,
            "message": self.message,
            "params": self.params,
            "result": self.result,
            "owner": self.owner,
            "created": _text(self.created),
            "updated": _text(self.updated),
            "started": _text(self.started),
            "finished": _text(self.finished),
            "attempts": self.attempts,
            "cancel_requested": self.cancel_requested,
        }


def _now() -> datetime:
    return datetime.now(UTC)


def _text(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _time(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text.replace("Z", "+00:00"))


COLUMNS = (
    "id, kind, state, progress, message, params, result, owner, created, updated, started, finished, "
    "attempts, cancel_requested, runner"
)


def _job(row: tuple) -> Job:
    (job_id, kind, state, progress, message, params, result, owner, created, updated, started, finished,
     attempts, cancel, runner) = row  # fmt: skip
    return Job(
        job_id,
        kind,
        JobState(state),
        progress,
        message,
        json.loads(params),
        None if result is None else json.loads(result),
        owner,
        _time(created),
        _time(updated),
        _time(started),
        _time(finished),
        attempts,
        bool(cancel),
        runner,
    )


def new_job_id() -> str:
    return uuid.uuid4().hex


def work_folder(data_dir: Path, job_id: str) -> Path:
    """A folder for a job's files (an upload, unpacked archives), for its kind's cleanup to delete."""
    return Path(data_dir) / JOBS_DIR / "work" / job_id


class JobStore:
    """The jobs table; every method is one short transaction, safe across threads and processes."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / JOBS_FILE
        self._lock = threading.Lock()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._con = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        self._con.execute("PRAGMA journal_mode=WAL")
        self._con.execute("PRAGMA synchronous=NORMAL")
        for statement in SCHEMA.split(";"):
            self._con.execute(statement)

    def _execute(self, sql: str, params: tuple | list = ()) -> sqlite3.Cursor:
        with self._lock:
            return self._con.execute(sql, params)

    def create(
        self, kind: str, params: dict[str, Any], *, owner: str | None, runner: str | None, job_id: str | None = None
    ) -> Job:
        now = _text(_now())
        job_id = job_id or new_job_id()
        try:
            text = json.dumps(params, ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"job parameters are not JSON: {exc}") from exc
        self._execute(
            "INSERT INTO jobs (id, kind, state, params, owner, runner, created, updated, message) "
            "VALUES (?, ?, 'queued', ?, ?, ?, ?, ?, 'waiting for a worker')",
            (job_id, kind, text, owner, runner, now, now),
        )
        return self.get(job_id)

    def get(self, job_id: str) -> Job:
        rows = self._execute(f"SELECT {COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchall()
        if not rows:
            raise NotFound(f"job {job_id!r} not found")
        return _job(rows[0])

    def list(
        self, *, state: JobState | None = None, kind: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[Job]:
        """Newest first."""
        sql = f"SELECT {COLUMNS} FROM jobs WHERE 1"
        params: list[Any] = []
        if state is not None:
            sql += " AND state = ?"
            params.append(JobState(state).value)
        if kind is not None:
            sql += " AND kind = ?"
            params.append(kind)
        sql += " ORDER BY created DESC, id LIMIT ? OFFSET ?"
        return [_job(row) for row in self._execute(sql, [*params, int(limit), int(offset)]).fetchall()]

    def counts(self) -> dict[str, int]:
        rows = self._execute("SELECT state, count(*) FROM jobs GROUP BY state").fetchall()
        return {state.value: 0 for state in JobState} | dict(rows)

    def claim(self, job_id: str, runner: str) -> bool:
        """queued → running for this runner; False when someone else took it or it was cancelled."""
        now = _text(_now())
        cursor = self._execute(
            "UPDATE jobs SET state = 'running', runner = ?, started = ?, updated = ?, attempts = attempts + 1, "
            "message = 'started' WHERE id = ? AND state = 'queued' AND cancel_requested = 0",
            (runner, now, now, job_id),
        )
        return cursor.rowcount == 1

    def report(self, job_id: str, runner: str, progress: float, message: str) -> None:
        self._execute(
            "UPDATE jobs SET progress = ?, message = ?, updated = ? WHERE id = ? AND runner = ? AND state = 'running'",
            (max(0.0, min(1.0, float(progress))), message[:1000], _text(_now()), job_id, runner),
        )

    def finish(
        self, job_id: str, runner: str, state: JobState, message: str, result: dict[str, Any] | None = None
    ) -> bool:
        """running → a final state, only for the runner that holds the job (a job that another
        runner already declared interrupted stays as it was)."""
        now = _text(_now())
        text = None if result is None else json.dumps(result, ensure_ascii=False, default=str)
        progress_sql = "1.0" if state == JobState.succeeded else "progress"
        cursor = self._execute(
            f"UPDATE jobs SET state = ?, message = ?, result = ?, progress = {progress_sql}, updated = ?, "
            "finished = ? WHERE id = ? AND runner = ? AND state = 'running'",
            (state.value, message[:4000], text, now, now, job_id, runner),
        )
        return cursor.rowcount == 1

    def request_cancel(self, job_id: str) -> Job:
        """Ask a job to stop: a queued one is cancelled now, a running one at its next check."""
        job = self.get(job_id)
        if job.state.finished:
            raise Conflict(f"job {job_id} has already {job.state.value}; nothing to cancel")
        now = _text(_now())
        self._execute(
            "UPDATE jobs SET state = 'cancelled', cancel_requested = 1, message = 'cancelled before it started', "
            "updated = ?, finished = ? WHERE id = ? AND state = 'queued'",
            (now, now, job_id),
        )
        self._execute(
            "UPDATE jobs SET cancel_requested = 1, message = 'cancelling', updated = ? "
            "WHERE id = ? AND state = 'running'",
            (now, job_id),
        )
        return self.get(job_id)

    def cancel_requested(self, job_id: str) -> bool:
        row = self._execute("SELECT cancel_requested FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return bool(row and row[0])

    def unfinished(self) -> list[Job]:
        rows = self._execute(f"SELECT {COLUMNS} FROM jobs WHERE state IN ('queued', 'running') ORDER BY created")
        return [_job(row) for row in rows.fetchall()]

    def adopt(self, job: Job, runner: str, *, requeue: bool, message: str) -> bool:
        """Take over a job whose runner is gone: back to queued for this runner, or failed."""
        now = _text(_now())
        if requeue:
            sql = "UPDATE jobs SET state = 'queued', runner = ?, message = ?, updated = ? "
            params: tuple = (runner, message, now)
        else:
            sql = "UPDATE jobs SET state = 'failed', runner = ?, message = ?, updated = ?, finished = ? "
            params = (runner, message, now, now)
        cursor = self._execute(
            sql + "WHERE id = ? AND state = ? AND runner IS ?", (*params, job.id, job.state.value, job.runner)
        )
        return cursor.rowcount == 1

    def close(self) -> None:
        with self._lock:
            self._con.close()


class RunnerLock:
    """A lock file held for a runner's life; the kernel lets it go when the process dies."""

    def __init__(self, folder: Path, runner: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"{runner}.lock"
        self._fd: int | None = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    @staticmethod
    def alive(folder: Path, runner: str | None) -> bool:
        """Whether the runner's process still holds its lock."""
        if runner is None:
            return False
        path = folder / f"{runner}.lock"
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        path.unlink(missing_ok=True)  # a dead runner's file: nobody will take it again
        return False

    def release(self) -> None:
        if self._fd is not None:
            self.path.unlink(missing_ok=True)
            os.close(self._fd)
            self._fd = None


class JobRunner:
    """Runs the jobs of one data directory in a thread pool; one per app (per worker process)."""

    def __init__(
        self,
        store: Store,
        jobs: JobStore | None = None,
        *,
        workers: int = 2,
        kinds: dict[str, JobKind] | None = None,
    ) -> None:
        self.store = store
        self.jobs = jobs if jobs is not None else JobStore(store.data_dir)
        self.kinds = JOB_KINDS if kinds is None else kinds
        self.id = uuid.uuid4().hex[:16]
        self.folder = self.jobs.data_dir / JOBS_DIR
        self._lock = RunnerLock(self.folder / "runners", self.id)
        self._executor = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="twin-job")
        self._cancel_events: dict[str, threading.Event] = {}
        self._stopping = threading.Event()
        self._guard = threading.Lock()
        self.recover()

    # ----- submitting --------------------------------------------------------------------------
    def submit(self, kind: str, params: dict[str, Any], *, owner: str | None = None, job_id: str | None = None) -> Job:
        """Record a job as queued, then hand it to the pool; returns it at once. `job_id` (from
        `new_job_id`) lets a caller prepare the job's work folder before submitting."""
        if kind not in self.kinds:
            raise InvalidInput(f"unknown job kind {kind!r}; known: {', '.join(sorted(self.kinds)) or 'none'}")
        if self._stopping.is_set():
            raise TwinError("the server is shutting down; submit the job again in a moment")
        job = self.jobs.create(kind, params, owner=owner, runner=self.id, job_id=job_id)
        metrics.JOBS_SUBMITTED.inc(kind=kind)
        self._executor.submit(self._run, job.id)
        return job

    def cancel(self, job_id: str) -> Job:
        job = self.jobs.request_cancel(job_id)
        with self._guard:
            event = self._cancel_events.get(job_id)
        if event is not None:
            event.set()
        if job.state == JobState.cancelled:
            self._cleanup(job)
        return job

    # ----- running -----------------------------------------------------------------------------
    def _run(self, job_id: str) -> None:
        if not self.jobs.claim(job_id, self.id):
            return
        job = self.jobs.get(job_id)
        kind = self.kinds.get(job.kind)
        event = threading.Event()
        with self._guard:
            self._cancel_events[job_id] = event
        last_poll = [0.0]
        last_write = [0.0]

        def cancelled() -> bool:
            if event.is_set() or self._stopping.is_set():
                return True
            now = time.monotonic()
            if now - last_poll[0] >= CANCEL_POLL_S:
                last_poll[0] = now
                if self.jobs.cancel_requested(job_id):
                    event.set()
            return event.is_set()

        def progress(fraction: float, message: str = "") -> None:
            if cancelled():
                raise JobCancelled()
            now = time.monotonic()
            if now - last_write[0] >= PROGRESS_WRITE_S or fraction >= 1:
                last_write[0] = now
                self.jobs.report(job_id, self.id, fraction, message)

        started = time.monotonic()
        state, message, result = JobState.failed, "", None
        try:
            if kind is None:
                raise InvalidInput(f"job kind {job.kind!r} is not known to this server")
            result = kind.run(job.params, progress, cancelled, self.store)
            if not isinstance(result, dict):
                raise TypeError(f"job kind {job.kind!r} returned {type(result).__name__}, not a dict")
            state, message = JobState.succeeded, "done"
        except JobCancelled:
            state, message = self._stopped_state(kind)
        except TwinError as exc:
            state, message = JobState.failed, str(exc)
        except Exception as exc:
            logger.exception("job %s (%s) failed", job_id, job.kind)
            state, message = JobState.failed, f"internal error ({type(exc).__name__}); see the server log"
        finally:
            with self._guard:
                self._cancel_events.pop(job_id, None)
        if state == JobState.queued:  # the server is stopping and the job can run again later
            self.jobs.adopt(self.jobs.get(job_id), self.id, requeue=True, message="waiting: the server restarted")
        else:
            self.jobs.finish(job_id, self.id, state, message, result)
            if state != JobState.succeeded:
                logger.warning("job %s (%s) %s: %s", job_id, job.kind, state.value, message)
        metrics.JOBS_FINISHED.inc(kind=job.kind, state=state.value)
        metrics.JOB_SECONDS.observe(time.monotonic() - started, kind=job.kind)
        if state != JobState.queued:
            self._cleanup(self.jobs.get(job_id))

    def _stopped_state(self, kind: JobKind | None) -> tuple[JobState, str]:
        if not self._stopping.is_set():
            return JobState.cancelled, "cancelled"
        if kind is not None and kind.resumable:
            return JobState.queued, "waiting: the server restarted"
        return JobState.failed, INTERRUPTED

    def _cleanup(self, job: Job) -> None:
        kind = self.kinds.get(job.kind)
        try:
            if kind is not None and kind.cleanup is not None:
                kind.cleanup(job, self.store)
        except Exception:
            logger.exception("cleanup of job %s failed", job.id)

    # ----- restarts ----------------------------------------------------------------------------
    def recover(self) -> list[Job]:
        """Take over the unfinished jobs of runners that are gone; returns the jobs touched."""
        touched = []
        runners = self.folder / "runners"
        for job in self.jobs.unfinished():
            if job.runner == self.id or RunnerLock.alive(runners, job.runner):
                continue
            kind = self.kinds.get(job.kind)
            if job.state == JobState.queued:
                requeue, message = True, "waiting: taken over after a restart"
            elif kind is not None and kind.resumable:
                requeue, message = True, "resumed: the server stopped while it ran; running it again"
            else:
                requeue, message = False, INTERRUPTED
            if not self.jobs.adopt(job, self.id, requeue=requeue, message=message):
                continue  # another runner took it first
            touched.append(self.jobs.get(job.id))
            if requeue:
                self._executor.submit(self._run, job.id)
            else:
                logger.warning("job %s (%s) marked failed: %s", job.id, job.kind, message)
                self._cleanup(self.jobs.get(job.id))
        self._prune_work_folders()
        return touched

    def _prune_work_folders(self) -> None:
        """Delete work folders of jobs that ended (or of uploads a killed server never queued),
        leaving recent ones: another worker may be receiving an upload into one right now."""
        root = self.folder / "work"
        if not root.is_dir():
            return
        active = {job.id for job in self.jobs.unfinished()}
        for folder in root.iterdir():
            if folder.name in active:
                continue
            try:
                age = time.time() - folder.stat().st_mtime
                if self._known_finished(folder.name) or age > STALE_UPLOAD_S:
                    shutil.rmtree(folder, ignore_errors=True)
            except FileNotFoundError:
                continue

    def _known_finished(self, job_id: str) -> bool:
        try:
            return self.jobs.get(job_id).state.finished
        except NotFound:
            return False

    def close(self, wait: bool = True) -> None:
        """Stop: running jobs are asked to stop (resumable ones are queued again, others fail with
        a message), queued ones stay queued for the next runner; then the lock is released."""
        self._stopping.set()
        self._executor.shutdown(wait=wait, cancel_futures=True)
        self._lock.release()
