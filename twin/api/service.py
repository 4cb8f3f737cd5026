"""What a running twin needs besides its routers: settings, access control, request and time
limits, jobs, and the clean-up of what an interrupted ingest left behind."""

from __future__ import annotations

import logging

from fastapi import Depends, FastAPI

from twin.api.jobs import install_jobs
from twin.api.limits import request_limits
from twin.api.ops import TimeLimitMiddleware, document_common_answers
from twin.api.security import install_security
from twin.auth import KeyStore
from twin.config import Settings, load_settings
from twin.integrity import recover
from twin.store import Store

logger = logging.getLogger("twin.api")


def install_service(app: FastAPI, store: Store) -> Settings:
    """Call before CORS is added: the access checks and time limit then sit inside CORS, so a
    browser can read their 401/403/503 problems."""
    settings = load_settings(store.data_dir)
    try:
        recover(store)
    except Exception as exc:  # e.g. PostGIS down at start: the app still starts, /ready says 503
        logger.warning("could not check for what interrupted ingests left: %s", exc)
    install_security(app, settings, KeyStore(store.data_dir))
    app.router.dependencies.append(Depends(request_limits))
    app.add_middleware(TimeLimitMiddleware, seconds=settings.analysis_timeout_s)
    install_jobs(app, store, settings)
    document_common_answers(app)
    return settings
