"""Durable jobs: states, progress, results, cancellation, and jobs that outlive their server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.api_fixtures import make_twin
from twin.api.app import create_app
from twin.auth import KeyStore
from twin.jobs import INTERRUPTED, JobCancelled, JobKind, JobRunner, JobState, JobStore
from twin.model import Conflict, InvalidInput
from twin.store import open_store

WAIT_S = 60  # a bound on waiting for a state, not a performance claim


def wait_for(condition, what: str):
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def wait_state(jobs: JobStore, job_id: str, *states: JobState):
    return wait_for(lambda: (job := jobs.get(job_id)).state in states and job, f"job {job_id} to be {states}")


# ----- job kinds used by the tests (also run in a subprocess, see serve_until_killed) ------------
def run_sum(params, progress, cancelled, store):
    total = 0
    for i, value in enumerate(params["values"]):
        total += value
        progress((i + 1) / len(params["values"]), f"added {i + 1}")
    return {"sum": total, "layers": len(store.list_layers())}


def run_until_cancelled(params, progress, cancelled, store):
    """Reports progress until asked to stop (the way long analyses behave)."""
    step = 0
    while True:
        step += 1
        progress(min(step / 1e6, 0.5), f"step {step}")
        time.sleep(0.01)


def run_bad_input(params, progress, cancelled, store):
    raise InvalidInput("the rainfall series is empty")


def run_crash(params, progress, cancelled, store):
    raise ZeroDivisionError("bug")


def run_resumable(params, progress, cancelled, store):
    """Waits for a file, so that a test decides when an attempt may finish."""
    marker = Path(params["release"])
    while not marker.exists():
        if cancelled():
            raise JobCancelled()
        time.sleep(0.01)
    return {"done": True}


KINDS = {
    "sum": JobKind("sum", run_sum),
    "endless": JobKind("endless", run_until_cancelled),
    "bad": JobKind("bad", run_bad_input),
    "crash": JobKind("crash", run_crash),
    "resumable": JobKind("resumable", run_resumable, resumable=True),
}


@pytest.fixture
def store(tmp_path):
    twin = make_twin(tmp_path / "data")
    yield twin
    twin.close()


@pytest.fixture
def runner(store):
    running = JobRunner(store, workers=2, kinds=KINDS)
    yield running
    running.close()


def test_a_job_runs_to_its_result_with_progress(runner):
    job = runner.submit("sum", {"values": [1, 2, 3, 4]}, owner="k1")
    assert job.state == JobState.queued and job.progress == 0
    done = wait_state(runner.jobs, job.id, JobState.succeeded)
    assert done.result == {"sum": 10, "layers": 2}
    assert done.progress == 1.0 and done.message == "done" and done.owner == "k1" and done.attempts == 1
    assert done.started is not None and done.finished >= done.started >= done.created


def test_failures_are_recorded_with_their_reason(runner):
    bad = runner.submit("bad", {})
    crash = runner.submit("crash", {})
    assert wait_state(runner.jobs, bad.id, JobState.failed).message == "the rainfall series is empty"
    crashed = wait_state(runner.jobs, crash.id, JobState.failed)
    assert "internal error" in crashed.message and "ZeroDivisionError" in crashed.message
    with pytest.raises(InvalidInput):
        runner.submit("no-such-kind", {})
    with pytest.raises(InvalidInput):
        runner.submit("sum", {"values": float("nan")})  # not JSON


def test_cancel_a_running_and_a_queued_job(store):
    runner = JobRunner(store, workers=1, kinds=KINDS)
    try:
        running = runner.submit("endless", {})
        queued = runner.submit("sum", {"values": [1]})
        wait_state(runner.jobs, running.id, JobState.running)
        assert runner.cancel(queued.id).state == JobState.cancelled  # never started
        asked = runner.cancel(running.id)
        assert asked.cancel_requested
        stopped = wait_state(runner.jobs, running.id, JobState.cancelled)
        assert stopped.message == "cancelled" and stopped.progress < 1
        assert runner.jobs.get(queued.id).attempts == 0
        with pytest.raises(Conflict):
            runner.cancel(running.id)
    finally:
        runner.close()


def test_a_cancel_sent_to_another_worker_reaches_the_job(store):
    """Two workers share the job table: a cancel recorded by one stops a job the other runs."""
    worker_a = JobRunner(store, kinds=KINDS)
    worker_b = JobRunner(store, kinds=KINDS)
    try:
        job = worker_a.submit("endless", {})
        wait_state(worker_a.jobs, job.id, JobState.running)
        worker_b.cancel(job.id)
        wait_state(worker_a.jobs, job.id, JobState.cancelled)
    finally:
        worker_a.close()
        worker_b.close()


def test_a_live_runners_jobs_are_not_taken_over(store):
    first = JobRunner(store, kinds=KINDS)
    try:
        job = first.submit("endless", {})
        wait_state(first.jobs, job.id, JobState.running)
        second = JobRunner(store, kinds=KINDS)  # a second worker process starting meanwhile
        assert second.recover() == []
        assert second.jobs.get(job.id).state == JobState.running
        second.close()
        first.cancel(job.id)
        wait_state(first.jobs, job.id, JobState.cancelled)
    finally:
        first.close()


def test_shutdown_fails_or_requeues_running_jobs(store, tmp_path):
    release = tmp_path / "release"
    runner = JobRunner(store, kinds=KINDS)
    endless = runner.submit("endless", {})
    resumable = runner.submit("resumable", {"release": str(release)})
    wait_state(runner.jobs, endless.id, JobState.running)
    wait_state(runner.jobs, resumable.id, JobState.running)
    runner.close()
    jobs = JobStore(store.data_dir)
    assert jobs.get(endless.id).state == JobState.failed and jobs.get(endless.id).message == INTERRUPTED
    assert jobs.get(resumable.id).state == JobState.queued
    release.touch()
    restarted = JobRunner(store, kinds=KINDS)
    try:
        done = wait_state(restarted.jobs, resumable.id, JobState.succeeded)
        assert done.result == {"done": True} and done.attempts == 2
    finally:
        restarted.close()


# ----- a server killed with SIGKILL ---------------------------------------------------------------------
SERVE = """
import sys, time
from tests import test_jobs
from twin.api.app import create_app
from twin.jobs import JOB_KINDS
from twin.store import open_store
JOB_KINDS.update(test_jobs.KINDS)
app = create_app(open_store(sys.argv[1]))
runner = app.state.jobs
endless = runner.submit("endless", {})
resumable = runner.submit("resumable", {"release": sys.argv[2]})
queued = [runner.submit("sum", {"values": [i]}) for i in range(3)]  # waiting behind the two
while runner.jobs.get(endless.id).state != "running" or runner.jobs.get(resumable.id).state != "running":
    time.sleep(0.01)
print(endless.id, resumable.id, *[q.id for q in queued], flush=True)
time.sleep(600)
"""


def test_jobs_survive_a_killed_server(tmp_path):
    data = tmp_path / "data"
    make_twin(data).close()
    release = tmp_path / "release"
    server = subprocess.Popen(
        [sys.executable, "-c", SERVE, str(data), str(release)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TWIN_JOB_WORKERS": "2"},
        cwd=Path(__file__).resolve().parents[1],
    )
    try:
        line = server.stdout.readline()
        assert line, server.stderr.read()
        endless, resumable, *queued = line.split()
    finally:
        server.send_signal(signal.SIGKILL)
        server.wait()
    jobs = JobStore(data)
    assert jobs.get(endless).state == JobState.running  # as the killed server left it
    release.touch()
    from twin.jobs import JOB_KINDS

    saved = dict(JOB_KINDS)
    JOB_KINDS.update(KINDS)
    store = open_store(data)
    try:
        client = TestClient(create_app(store))  # a new server on the same data directory
        job = client.get(f"/jobs/{endless}").json()
        assert job["state"] == "failed" and job["message"] == INTERRUPTED
        runner = client.app.state.jobs
        assert wait_state(runner.jobs, resumable, JobState.succeeded).attempts == 2
        for job_id in queued:
            assert wait_state(runner.jobs, job_id, JobState.succeeded).attempts == 1
        runner.close()
    finally:
        JOB_KINDS.clear()
        JOB_KINDS.update(saved)
        store.close()


# ----- over HTTP ------------------------------------------------------------------------------------------
def test_jobs_over_http(store):
    from twin.jobs import JOB_KINDS

    saved = dict(JOB_KINDS)
    JOB_KINDS.update(KINDS)
    try:
        editor = KeyStore(store.data_dir).create("ops", "editor")[1]
        client = TestClient(create_app(store), raise_server_exceptions=False)
        runner = client.app.state.jobs
        done = runner.submit("sum", {"values": [2, 3]})
        running = runner.submit("endless", {})
        wait_state(runner.jobs, done.id, JobState.succeeded)
        wait_state(runner.jobs, running.id, JobState.running)
        listing = client.get("/jobs").json()
        assert {done.id, running.id} <= {j["id"] for j in listing["jobs"]}
        assert listing["counts"]["succeeded"] >= 1 and listing["counts"]["running"] >= 1
        only = client.get("/jobs", params={"state": "succeeded"}).json()["jobs"]
        assert [j["id"] for j in only] == [done.id]
        one = client.get(f"/jobs/{done.id}").json()
        assert one["result"]["sum"] == 5 and one["links"][0]["href"].endswith(f"/jobs/{done.id}")
        assert client.get("/jobs/unknown").status_code == 404
        assert client.post(f"/jobs/{running.id}/cancel").status_code == 401
        cancelled = client.delete(f"/jobs/{running.id}", headers={"Authorization": f"Bearer {editor}"})
        assert cancelled.status_code == 202 and cancelled.json()["cancel_requested"]
        wait_state(runner.jobs, running.id, JobState.cancelled)
        again = client.post(f"/jobs/{running.id}/cancel", headers={"Authorization": f"Bearer {editor}"})
        assert again.status_code == 409
        runner.close()
    finally:
        JOB_KINDS.clear()
        JOB_KINDS.update(saved)


def test_progress_is_written_while_a_job_runs(runner):
    gate = threading.Event()
    seen: list[float] = []

    def stepwise(params, progress, cancelled, store):
        progress(0.25, "a quarter")
        gate.wait(WAIT_S)
        return {}

    runner.kinds = {**runner.kinds, "stepwise": JobKind("stepwise", stepwise)}
    job = runner.submit("stepwise", {})
    wait_for(lambda: runner.jobs.get(job.id).progress == 0.25, "progress 0.25")
    seen.append(runner.jobs.get(job.id).progress)
    assert runner.jobs.get(job.id).message == "a quarter"
    gate.set()
    wait_state(runner.jobs, job.id, JobState.succeeded)
    assert seen == [0.25]
