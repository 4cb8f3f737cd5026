"""The service's front door: OGC API landing page, conformance declaration and health check."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from twin.api import links as ln
from twin.api.html import document_response
from twin.api.params import HtmlFirst, JsonFirst, StoreDep
from twin.api.problems import problem_response, problem_responses

router = APIRouter(tags=["Service"])
logger = logging.getLogger("twin.api")

FEATURES_1 = "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf"
FEATURES_2 = "http://www.opengis.net/spec/ogcapi-features-2/1.0/conf"
CONFORMANCE = [
    f"{FEATURES_1}/core",
    f"{FEATURES_1}/geojson",
    f"{FEATURES_1}/oas30",
    f"{FEATURES_1}/html",
    f"{FEATURES_2}/crs",
]
TITLE = "CIM Twin"
OPENAPI = "application/vnd.oai.openapi+json;version=3.0"


@router.get("/", name="landing", summary="OGC API landing page (HTML for browsers, JSON with f=json)")
def landing(request: Request, store: StoreDep, fmt: HtmlFirst) -> Response:
    title = store.get_meta("title") or TITLE
    document = {
        "title": title,
        "description": f"City information model digital twin (project CRS {store.crs}): OGC API Features, "
        "3D Tiles, vector tiles and analyses.",
        "links": [
            *ln.self_links(request, fmt),
            ln.link(ln.app_url(request, request.app.openapi_url), "service-desc", OPENAPI, "OpenAPI definition"),
            ln.link(ln.app_url(request, request.app.docs_url), "service-doc", ln.HTML, "API documentation"),
            ln.link(ln.url_for(request, "conformance"), "conformance", ln.JSON, "Conformance classes"),
            ln.link(ln.url_for(request, "collections"), "data", ln.JSON, "Collections"),
            ln.link(ln.app_url(request, "/viewer/"), "alternate", ln.HTML, "3D viewer (CesiumJS)"),
            ln.link(ln.app_url(request, "/map/"), "alternate", ln.HTML, "2D map (MapLibre)"),
        ],
    }
    return document_response(document, fmt, title)


@router.get("/conformance", name="conformance", summary="OGC API conformance classes this server implements")
def conformance(request: Request, fmt: JsonFirst) -> Response:
    document = {"conformsTo": CONFORMANCE, "links": ln.self_links(request, fmt)}
    return document_response(document, fmt, "Conformance")


@router.get(
    "/health",
    name="health",
    summary="Liveness and store reachability",
    responses=problem_responses(503),
)
def health(request: Request, store: StoreDep) -> Response:
    try:
        store.ping()
    except Exception:
        logger.exception("store ping failed")
        return problem_response(503, "the store cannot be reached", instance=request.url.path, store="unreachable")
    return JSONResponse({"status": "ok", "store": "ok"})
