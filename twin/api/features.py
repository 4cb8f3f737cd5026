"""OGC API Features (Part 1 core, Part 2 crs): collections and their items, as GeoJSON.

Each layer of the store is a collection. Items are the feature versions valid at `datetime`
(default: now); the version's times and number are in the properties as `twin:valid_from`,
`twin:valid_to` and `twin:version`.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response

from twin.api import links as ln
from twin.api.catalog import collection_document, store_bbox
from twin.api.geojson import (
    GEOJSON_MEDIA_TYPE,
    collection_text,
    encode_features,
    encode_geometries,
    feature_text,
    geojson_response,
    rfc3339,
)
from twin.api.html import document_response, html_page
from twin.api.params import (
    BBoxDep,
    FiltersDep,
    JsonFirst,
    LayerDep,
    OutputCrsDep,
    OutputFormat,
    PagingDep,
    StoreDep,
    TimeDep,
    supported_crs,
)
from twin.api.problems import problem_responses
from twin.api.security import RestrictedLayerGuard, visible_layers
from twin.model import Layer, now_utc
from twin.store import QueryResult

router = APIRouter(tags=["OGC API Features"], dependencies=[RestrictedLayerGuard])

FEATURES_CONTENT = {200: {"content": {GEOJSON_MEDIA_TYPE: {}, ln.HTML: {}}, "description": "GeoJSON or HTML"}}


def _collection_link(request: Request, layer: Layer) -> dict[str, Any]:
    return ln.link(ln.url_for(request, "collection", collection_id=layer.id), "collection", ln.JSON, layer.title)


@router.get(
    "/collections",
    name="collections",
    summary="The layers of the twin as OGC API collections",
    responses=problem_responses(400),
)
def collections(request: Request, store: StoreDep, fmt: JsonFirst) -> Response:
    supported = supported_crs(store)
    document = {
        "links": ln.self_links(request, fmt),
        "collections": [
            collection_document(request, layer, store.crs, supported)
            for layer in visible_layers(request, store.list_layers())
        ],
        "crs": [choice.uri for choice in supported],
    }
    return document_response(document, fmt, "Collections")


@router.get(
    "/collections/{collection_id}",
    name="collection",
    summary="One layer as an OGC API collection",
    responses=problem_responses(400, 404),
)
def collection(request: Request, store: StoreDep, layer: LayerDep, fmt: JsonFirst) -> Response:
    document = collection_document(request, layer, store.crs, supported_crs(store))
    return document_response(document, fmt, layer.title)


@router.get(
    "/collections/{collection_id}/items",
    name="items",
    summary="Features valid at `datetime`, in `bbox`, filtered by property, a page at a time",
    description=(
        "Any query parameter other than the standard ones is an equality filter on a property "
        "(`?use=school`); when the layer declares a schema it must name one of its properties, "
        "otherwise the request is refused with 400."
    ),
    response_class=Response,
    responses={**FEATURES_CONTENT, **problem_responses(400, 404)},
)
def items(
    request: Request,
    store: StoreDep,
    layer: LayerDep,
    bbox: BBoxDep,
    time: TimeDep,
    page: PagingDep,
    crs: OutputCrsDep,
    filters: FiltersDep,
    fmt: JsonFirst,
) -> Response:
    region = store_bbox(bbox, layer, store.crs) if bbox is not None else None
    if bbox is not None and region is None:
        result = QueryResult([], 0)  # the box does not touch the layer
    else:
        result = store.query(
            layer.id, bbox=region, time=time, filters=filters, limit=page.limit, offset=page.offset, count=True
        )
    returned, matched = len(result.features), result.number_matched or 0
    members = {
        "numberMatched": matched,
        "numberReturned": returned,
        "timeStamp": rfc3339(now_utc()),
        "links": [
            *ln.page_links(request, fmt, GEOJSON_MEDIA_TYPE, page.offset, page.limit, returned, matched),
            _collection_link(request, layer),
        ],
    }
    text = collection_text(members, encode_features(result.features, store.crs, crs))
    if fmt == OutputFormat.html:
        return html_page(f"{layer.title}: features", json.loads(text))
    return geojson_response(text, crs)


@router.get(
    "/collections/{collection_id}/items/{feature_id}",
    name="item",
    summary="One feature, in the version valid at `datetime` (default: now)",
    response_class=Response,
    responses={**FEATURES_CONTENT, **problem_responses(400, 404)},
)
def item(
    request: Request,
    store: StoreDep,
    layer: LayerDep,
    feature_id: Annotated[str, Path(description="Feature id")],
    time: TimeDep,
    crs: OutputCrsDep,
    fmt: JsonFirst,
) -> Response:
    feature = store.get_feature(layer.id, feature_id, time)
    [geometry] = encode_geometries([feature.geometry], store.crs, crs)
    links = [*ln.self_links(request, fmt, GEOJSON_MEDIA_TYPE), _collection_link(request, layer)]
    text = feature_text(feature, geometry, links)
    if fmt == OutputFormat.html:
        return html_page(f"{layer.title}: {feature.fid}", json.loads(text))
    return geojson_response(text, crs)
