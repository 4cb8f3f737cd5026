"""The FastAPI application, assembled from routers the way titiler assembles its factories.

`create_app` opens the store once (or takes the one given), mounts each API family's router
and installs the problem+json error handling and CORS. `uvicorn --factory
twin.api.app:app_from_env` serves the twin at `$TWIN_DATA` (default `./twin-data`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from twin.api import (
    admin,
    analysis,
    analysis_geometry,
    excavation,
    features,
    ingest,
    jobs,
    landing,
    ops,
    pages,
    raster,
    sensors,
    styles,
    terrain,
    threed,
    tile_images,
    viewer,
)
from twin.api import flood as flood_analysis
from twin.api import tiles as vector_tiles
from twin.api.ops import install_operations
from twin.api.problems import install_problem_handlers
from twin.api.service import install_service
from twin.store import Store, default_data_dir, open_store

logger = logging.getLogger(__name__)

ROUTERS = (landing.router, features.router, raster.router, styles.router, pages.router, analysis_geometry.router)
ROUTERS += (threed.router,)
ROUTERS += (analysis.router,)
ROUTERS += (ops.router, jobs.router, ingest.router, admin.router)
ROUTERS += (terrain.router,)
ROUTERS += (vector_tiles.router,)
ROUTERS += (tile_images.router,)
ROUTERS += (viewer.router,)
ROUTERS += (sensors.router,)
ROUTERS += (flood_analysis.router,)
ROUTERS += (excavation.router,)


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
    vector_tiles.install_tile_cache(app)  # cached tiles answered inside access control and CORS
    settings = install_service(app, twin)  # access control, time limits, jobs (inside CORS too)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=list(settings.cors_origins),
        allow_methods=["*"],
        allow_headers=["*"],
        expose_headers=["Content-Crs"],
    )
    install_operations(app)  # outermost: request ids, metrics, access log
    vector_tiles.install_tile_fast_lane(app)  # cached tiles for anonymous reads, before all of the above
    for router in ROUTERS:
        app.include_router(router)
    return app


def warm_up(store: Store) -> None:
    """Load what a viewer's first visit waits for, the terrain encoder's modules and compiled
    loops (a second and a half in a fresh process), by encoding the terrain's first tile."""
    from tiles.terrain import TerrainSource, TileId

    try:
        TerrainSource.from_store(store).tile(TileId(0, 0, 0))
    except Exception:  # a head start only: the first request explains whatever is wrong
        logger.debug("terrain warm-up failed", exc_info=True)


def app_from_env() -> FastAPI:
    """For `uvicorn --factory twin.api.app:app_from_env`: the twin at `$TWIN_DATA`, warming up
    in the background while the server starts."""
    from twin.config import load_settings
    from twin.logging import configure_logging

    settings = load_settings(default_data_dir())
    configure_logging(settings.log_level, settings.log_format)
    app = create_app(data_dir=default_data_dir())
    threading.Thread(target=warm_up, args=(app.state.store,), name="warm-up", daemon=True).start()
    return app
