"""Operations: readiness, Prometheus metrics, request ids with structured access logs, and a time
limit on synchronous analyses.

`/health` (in the landing router) says the process is alive; `/ready` says it can serve: the
store answers. Load balancers route to ready workers, so during a PostGIS outage `/ready` is 503
and every request that needs the store is a 503 problem until the server is back, with no
restart of the app (the store reconnects on the next request).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from twin import metrics
from twin.api.params import StoreDep
from twin.api.problems import problem_response, problem_responses
from twin.logging import request_id

router = APIRouter(tags=["Service"])
access_log = logging.getLogger("twin.access")
logger = logging.getLogger("twin.api")

REQUEST_ID_HEADER = "X-Request-ID"
CLIENT_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")  # a caller's own id is kept when it is this plain
PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"
TIMED_PREFIXES = ("/analysis/",)


@router.get(
    "/ready",
    name="ready",
    summary="Readiness: 200 when the store answers, 503 otherwise",
    responses=problem_responses(503),
)
def ready(request: Request, store: StoreDep) -> Response:
    try:
        store.ping()
    except Exception as exc:
        logger.warning("not ready: the store does not answer (%s)", exc)
        return problem_response(
            503, "the store cannot be reached", instance=request.url.path, headers={"Retry-After": "5"}
        )
    return JSONResponse({"status": "ready", "store": "ok"})


@router.get(
    "/metrics",
    name="metrics",
    summary="Prometheus metrics: requests, latencies, tile cache, jobs, memory",
    response_class=Response,
    responses={200: {"content": {PROMETHEUS_TEXT: {"schema": {"type": "string"}}}, "description": "Metrics"}},
)
def metrics_text(request: Request, store: StoreDep) -> Response:
    runner = getattr(request.app.state, "jobs", None)
    if runner is not None:
        for state, count in runner.jobs.counts().items():
            metrics.JOBS.set(count, state=state)
    try:
        store.ping()
        metrics.STORE_UP.set(1)
    except Exception:
        metrics.STORE_UP.set(0)
    return Response(metrics.REGISTRY.render(), media_type=PROMETHEUS_TEXT)


def route_label(scope: Scope) -> str:
    """The route's path template (bounded label values), never the raw path."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if path:
        return path
    root = scope.get("root_path") or ""
    return f"{root}/*" if root else "unmatched"


class ObservabilityMiddleware:
    """Outermost: give every request an id, count and time it, and log one JSON line for it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"x-request-id"), "")
        rid = given if CLIENT_ID.match(given) else uuid.uuid4().hex
        token = request_id.set(rid)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message).append(REQUEST_ID_HEADER, rid)
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = route_label(scope)
            metrics.HTTP_REQUESTS.inc(method=scope["method"], route=route, status=str(status))
            metrics.HTTP_LATENCY.observe(elapsed, method=scope["method"], route=route)
            access_log.info(
                "%s %s %s",
                scope["method"],
                scope["path"],
                status,
                extra={
                    "method": scope["method"],
                    "path": scope["path"],
                    "route": route,
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 2),
                    "client": (scope.get("client") or ("", 0))[0],
                },
            )
            request_id.reset(token)


class TimeLimitMiddleware:
    """Answer 503 when an analysis has not started its answer within the time limit.

    The work itself runs in a thread that cannot be interrupted; it finishes in the background
    and its answer is dropped, but the client (and the proxy in front) is not kept waiting.
    """

    def __init__(self, app: ASGIApp, seconds: float, prefixes: tuple[str, ...] = TIMED_PREFIXES) -> None:
        self.app = app
        self.seconds = seconds
        self.prefixes = prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefixes):
            await self.app(scope, receive, send)
            return
        started = asyncio.Event()
        abandoned = False

        async def guarded_send(message: Message) -> None:
            if abandoned:
                return
            if message["type"] == "http.response.start":
                started.set()
            await send(message)

        task = asyncio.ensure_future(self.app(scope, receive, guarded_send))
        waiter = asyncio.ensure_future(started.wait())
        done, _ = await asyncio.wait({task, waiter}, timeout=self.seconds, return_when=asyncio.FIRST_COMPLETED)
        if not done:
            abandoned = True
            waiter.cancel()
            task.add_done_callback(_log_abandoned)
            response = problem_response(
                503,
                f"the analysis did not finish within {self.seconds:g} s (TWIN_ANALYSIS_TIMEOUT_S); "
                "try a smaller area or fewer layers",
                instance=scope["path"],
                headers={"Retry-After": "30"},
            )
            await response(scope, receive, send)
            return
        waiter.cancel()
        await task


def _log_abandoned(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.warning("an analysis that ran past its time limit failed: %s", task.exception())


def install_operations(app: FastAPI) -> None:
    """Add the request id / metrics / access log layer; call after every other middleware, so it
    is the outermost and logs the final status of every answer (CORS preflights included)."""
    app.add_middleware(ObservabilityMiddleware)


COMMON_PROBLEMS = (400, 401, 403, 404, 503)  # any route may answer these (limits, keys, ids, outages)


def document_common_answers(app: FastAPI) -> None:
    """Complete the OpenAPI document with what every operation may answer: the problem statuses
    above, and HTML where the `f` parameter offers it (content negotiation)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None and app.openapi_schema.get("x-twin-complete"):
            return app.openapi_schema
        schema = build()
        problems = problem_responses(*COMMON_PROBLEMS)
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                if not isinstance(operation, dict) or "responses" not in operation:
                    continue
                responses = operation["responses"]
                for status in COMMON_PROBLEMS:
                    if str(status) not in responses and status not in responses:
                        responses[str(status)] = problems[status]
                if any(_offers_html(p) for p in operation.get("parameters", [])):
                    ok = responses.get("200", {}).setdefault("content", {})
                    ok.setdefault("text/html", {"schema": {"type": "string"}})
        schema["x-twin-complete"] = True
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _offers_html(parameter: dict[str, Any]) -> bool:
    """An `f` query parameter whose allowed values include html (analyses offer json/svg only)."""
    if parameter.get("name") != "f" or parameter.get("in") != "query":
        return False
    return "html" in json.dumps(parameter.get("schema", {}))
