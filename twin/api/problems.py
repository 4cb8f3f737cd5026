"""Errors as RFC 9457 problem details (`application/problem+json`), in one place for every router.

Handlers turn the twin's own errors (`TwinError.status`), FastAPI's parameter validation and
`HTTPException` into a problem body whose `detail` says what was wrong. Anything unexpected
becomes a 500 problem that names no internals; the traceback goes to the log only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from twin.model import TwinError
from twin.store.base import StoreUnavailable

PROBLEM_MEDIA_TYPE = "application/problem+json"
logger = logging.getLogger("twin.api")


class Problem(BaseModel):
    """The RFC 9457 members every error response of the twin carries (for the OpenAPI document)."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    instance: str


def problem_response(
    status: int,
    detail: str,
    *,
    instance: str,
    headers: dict[str, str] | None = None,
    **extensions: Any,
) -> JSONResponse:
    """A problem+json response; `title` is the status phrase as `about:blank` asks (RFC 9457 4.2.1)."""
    body = Problem(title=HTTPStatus(status).phrase, status=status, detail=detail, instance=instance)
    return JSONResponse(
        {**body.model_dump(), **extensions},
        status_code=status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=headers,
    )


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route, so the OpenAPI document shows its problem+json answers."""
    schema = Problem.model_json_schema()
    return {
        status: {"description": HTTPStatus(status).phrase, "content": {PROBLEM_MEDIA_TYPE: {"schema": schema}}}
        for status in statuses
    }


def _twin_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, TwinError)
    return problem_response(exc.status, str(exc), instance=request.url.path)


def _store_unavailable(request: Request, exc: Exception) -> JSONResponse:
    """The store's server is down or unreachable: 503, and the next request tries again."""
    logger.warning("store unavailable on %s: %s", request.url.path, exc)
    detail = "the store cannot be reached right now; try again shortly"
    return problem_response(503, detail, instance=request.url.path, headers={"Retry-After": "5"})


def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    """400 naming each bad parameter; OGC API Features answers invalid parameters with 400."""
    assert isinstance(exc, RequestValidationError)
    errors = [_parameter_error(error) for error in exc.errors()]
    detail = "; ".join(e["detail"] for e in errors) or "invalid request"
    return problem_response(400, detail, instance=request.url.path, errors=errors)


def _parameter_error(error: dict[str, Any]) -> dict[str, Any]:
    location: Sequence[Any] = error.get("loc", ())
    where = str(location[0]) if location else "request"
    name = ".".join(str(part) for part in location[1:]) or where
    text = f"invalid {where} parameter {name!r}: {error.get('msg', 'invalid value')}"
    given = error.get("input")
    if isinstance(given, str | int | float) and error.get("type") != "missing":
        text += f" (got {given!r})"
    return {"detail": text, "parameter": name, "in": where}


def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    if exc.status_code == 404 and detail == HTTPStatus.NOT_FOUND.phrase:
        detail = f"no resource at {request.url.path}"
    return problem_response(exc.status_code, detail, instance=request.url.path, headers=exc.headers)


class UnexpectedErrorMiddleware:
    """Catch what no handler knows, inside CORS, so a browser still reads the 500 problem.

    Starlette's own catch-all sits outside every middleware, which would strip the CORS headers
    and make a server bug look like a CORS error in the browser console.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_tracking(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_tracking)
        except Exception:
            if started:
                raise
            logger.exception("unexpected error on %s %s", scope.get("method"), scope.get("path"))
            response = problem_response(
                500, "the server failed to answer this request; the error was logged", instance=scope.get("path", "")
            )
            await response(scope, receive, send)


def _openapi_without_422(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """FastAPI documents validation errors as 422; this API answers them with 400 problems."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            for operations in schema.get("paths", {}).values():
                for operation in operations.values():
                    responses = operation.get("responses", {})
                    if responses.pop("422", None) is not None:
                        responses.setdefault("400", problem_responses(400)[400])
            schemas = schema.get("components", {}).get("schemas", {})
            for name in ("HTTPValidationError", "ValidationError"):
                schemas.pop(name, None)
            app.openapi_schema = schema
        return app.openapi_schema

    return openapi


def install_problem_handlers(app: FastAPI) -> None:
    """Register the handlers; call before adding CORS so that CORS wraps the catch-all."""
    app.add_exception_handler(TwinError, _twin_error)
    app.add_exception_handler(StoreUnavailable, _store_unavailable)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_middleware(UnexpectedErrorMiddleware)
    app.openapi = _openapi_without_422(app)  # type: ignore[method-assign]
