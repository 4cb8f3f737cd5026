"""Jobs over HTTP: list, read and cancel; and what other routers use to start one.

A router that starts work answers `202 Accepted` with the job and a `Location` header:

    @router.post("/analysis/flood", status_code=202, responses=JOB_ACCEPTED)
    def flood(request: Request, body: FloodBody, runner: RunnerDep, key: EditorDep) -> Response:
        return accepted(request, runner.submit("flood", body.model_dump(), owner=key.id))

and the client polls `GET /jobs/{id}` until `state` is `succeeded`, `failed` or `cancelled`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from twin.api import links as ln
from twin.api.problems import problem_responses
from twin.api.security import require_role
from twin.auth import ApiKey, Role
from twin.config import Settings
from twin.jobs import Job, JobRunner, JobState, JobStore
from twin.store import Store

router = APIRouter(tags=["Jobs"])


class JobDocument(BaseModel):
    """A job as the API shows it."""

    id: str
    kind: str
    state: JobState
    progress: float
    message: str
    params: dict[str, Any]
    result: dict[str, Any] | None
    owner: str | None
    created: str
    updated: str
    started: str | None
    finished: str | None
    attempts: int
    cancel_requested: bool
    links: list[dict[str, str]]


class JobList(BaseModel):
    jobs: list[JobDocument]
    counts: dict[str, int]


JOB_ACCEPTED: dict[int | str, dict[str, Any]] = {
    202: {"model": JobDocument, "description": "Accepted: the job was queued; poll its `self` link"},
    **problem_responses(400, 401, 403),
}


def job_runner(request: Request) -> JobRunner:
    return request.app.state.jobs


RunnerDep = Annotated[JobRunner, Depends(job_runner)]
EditorDep = Annotated[ApiKey, Depends(require_role(Role.editor))]


def job_document(request: Request, job: Job) -> dict[str, Any]:
    href = ln.url_for(request, "job", job_id=job.id)
    return {**job.as_dict(), "links": [ln.link(href, "self", ln.JSON, "This job")]}


def accepted(request: Request, job: Job) -> Response:
    """202 with the job and its URL in `Location`."""
    document = job_document(request, job)
    return JSONResponse(document, status_code=202, headers={"Location": document["links"][0]["href"]})


@router.get(
    "/jobs", name="jobs", summary="Jobs, newest first", response_model=JobList, responses=problem_responses(400)
)
def list_jobs(
    request: Request,
    runner: RunnerDep,
    state: Annotated[JobState | None, Query(description="Only jobs in this state")] = None,
    kind: Annotated[str | None, Query(max_length=64, description="Only jobs of this kind")] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="Jobs per page")] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000, description="Jobs to skip")] = 0,
) -> JSONResponse:
    jobs = runner.jobs.list(state=state, kind=kind, limit=limit, offset=offset)
    return JSONResponse({"jobs": [job_document(request, job) for job in jobs], "counts": runner.jobs.counts()})


JobId = Annotated[str, Path(max_length=64, description="The job id returned when it was submitted")]


@router.get(
    "/jobs/{job_id}",
    name="job",
    summary="One job: state, progress, message and result",
    response_model=JobDocument,
    responses=problem_responses(404),
)
def get_job(request: Request, runner: RunnerDep, job_id: JobId) -> JSONResponse:
    return JSONResponse(job_document(request, runner.jobs.get(job_id)))


def _cancel(request: Request, runner: JobRunner, job_id: str) -> JSONResponse:
    return JSONResponse(job_document(request, runner.cancel(job_id)), status_code=202)


CANCEL_RESPONSES: dict[int | str, dict[str, Any]] = {
    202: {"model": JobDocument, "description": "Cancelled, or asked to stop at its next check"},
    **problem_responses(401, 403, 404, 409),
}


@router.post(
    "/jobs/{job_id}/cancel",
    name="cancel_job",
    summary="Cancel a job (queued: at once; running: at its next check)",
    status_code=202,
    responses=CANCEL_RESPONSES,
)
def cancel_job(request: Request, runner: RunnerDep, _: EditorDep, job_id: JobId) -> JSONResponse:
    return _cancel(request, runner, job_id)


@router.delete(
    "/jobs/{job_id}",
    name="delete_job",
    summary="Cancel a job (the record is kept)",
    status_code=202,
    responses=CANCEL_RESPONSES,
)
def delete_job(request: Request, runner: RunnerDep, _: EditorDep, job_id: JobId) -> JSONResponse:
    return _cancel(request, runner, job_id)


def install_jobs(app: FastAPI, store: Store, settings: Settings) -> JobRunner:
    """Start the app's job runner (taking over jobs a stopped server left) and stop it with the app."""
    runner = JobRunner(store, JobStore(store.data_dir), workers=settings.job_workers)
    app.state.jobs = runner
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(application: FastAPI) -> AsyncIterator[Any]:
        async with inner(application) as state:
            try:
                yield state
            finally:  # before the store closes: running jobs stop at their next check
                await anyio.to_thread.run_sync(runner.close)

    app.router.lifespan_context = lifespan
    return runner
