"""The FastAPI application, assembled from routers the way titiler assembles its factories.

`create_app` opens the store once (or takes the one given), mounts each API family's router
and installs the problem+json error handling and CORS. `uvicorn --factory
twin.api.app:app_from_env` serves the twin at `$TWIN_DATA` (default `./twin-data`).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from twin.api import features, landing
from twin.api.problems import install_problem_handlers
from twin.store import Store, default_data_dir, open_store

ROUTERS = (landing.router, features.router)


def cors_origins() -> list[str]:
    """Allowed origins from `TWIN_CORS_ORIGINS` (comma-separated), default any: reads are open."""
    text = os.environ.get("TWIN_CORS_ORIGINS", "*")
    return [origin.strip() for origin in text.split(",") if origin.strip()] or ["*"]


def _version() -> str:
    try:
        return version("cim-twin")
    except PackageNotFoundError:
        return "0.0.0"


def create_app(store: Store | None = None, data_dir: Path | None = None) -> FastAPI:
    """The twin's web application; a store passed in stays the caller's to close."""
    owned = store is None
    twin = store if store is not None else open_store(data_dir)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        if owned:
            twin.close()

    app = FastAPI(
        title="CIM Twin",
        version=_version(),
        description="City information model digital twin: OGC API Features, tiles and analyses.",
        lifespan=lifespan,
    )
    app.state.store = twin
    install_problem_handlers(app)  # before CORS, so CORS headers reach error responses too
    app.add_middleware(
        CORSMiddleware,
        allow_origins=cors_origins(),
        allow_methods=["*"],
        allow_headers=["*"],
        expose_headers=["Content-Crs"],
    )
    for router in ROUTERS:
        app.include_router(router)
    return app


def app_from_env() -> FastAPI:
    """For `uvicorn --factory twin.api.app:app_from_env`: the twin at `$TWIN_DATA`."""
    return create_app(data_dir=default_data_dir())
