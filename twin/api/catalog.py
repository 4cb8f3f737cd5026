"""Layers as OGC API collections, and requested boxes as boxes in the project CRS.

Pure functions of a `Layer` and the project CRS: the routers in `features.py` only call them.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request

from twin.api.geojson import GEOJSON_MEDIA_TYPE, rfc3339
from twin.api.links import HTML, link, url_for
from twin.api.params import BBoxFilter, CrsChoice
from twin.crs import CRS84, CRS84_URI, crs_uri, transform_bbox
from twin.model import BBox, Layer

GREGORIAN = "http://www.opengis.net/def/uom/ISO-8601/0/Gregorian"


def layer_bbox(layer: Layer) -> BBox | None:
    """The layer's extent in the project CRS (every version, past ones included), if any."""
    return BBox(*layer.bbox) if layer.bbox is not None else None


def extent_crs84(layer: Layer, project_crs: str) -> BBox | None:
    """The layer's extent in CRS84, densified so that curved edges are covered."""
    bbox = layer_bbox(layer)
    return transform_bbox(bbox, project_crs, CRS84) if bbox is not None else None


def describe(layer: Layer) -> str:
    """The layer's own description, else one made of what the catalog knows."""
    text = layer.metadata.get("description")
    if isinstance(text, str) and text:
        return text
    parts = [f"{layer.kind.value} layer", layer.scenario.value]
    if layer.scale_band:
        parts.append(f"scale {layer.scale_band}")
    return ", ".join(parts)


def collection_document(request: Request, layer: Layer, project_crs: str, supported: list[CrsChoice]) -> dict[str, Any]:
    """The OGC collection of one layer, with the twin's own fields beside the standard ones."""
    collection_id = layer.id
    items = url_for(request, "items", collection_id=collection_id)
    extent: dict[str, Any] = {}
    bbox = extent_crs84(layer, project_crs)
    if bbox is not None:
        extent["spatial"] = {"bbox": [list(bbox.as_tuple())], "crs": CRS84_URI}
    if layer.time_extent is not None:
        start, end = layer.time_extent
        extent["temporal"] = {"interval": [[rfc3339(start), rfc3339(end)]], "trs": GREGORIAN}
    document: dict[str, Any] = {
        "id": collection_id,
        "title": layer.title,
        "description": describe(layer),
        "itemType": "feature",
        "kind": layer.kind.value,
        "scale_band": layer.scale_band,
        "scenario": layer.scenario.value,
        "layer_version": layer.version,
        "feature_count": layer.feature_count,
        "crs": [choice.uri for choice in supported],
        "storageCrs": crs_uri(project_crs),
        "links": [
            link(url_for(request, "collection", collection_id=collection_id), "self", "application/json"),
            link(items, "items", GEOJSON_MEDIA_TYPE, f"{layer.title} (GeoJSON)"),
            link(f"{items}?f=html", "items", HTML, f"{layer.title} (HTML)"),
        ],
    }
    if extent:
        document["extent"] = extent
    return document


def store_bbox(request_bbox: BBoxFilter, layer: Layer, project_crs: str) -> BBox | None:
    """The requested box in the project CRS; None when it cannot touch the layer.

    A CRS84 box is first clipped to the layer's extent: transverse Mercator (the project CRS)
    is meaningless far from its zone, so a world-wide box from a zoomed-out client would come
    back from a plain transform as a box that misses half the data.
    """
    if request_bbox.crs.code != CRS84:
        return request_bbox.bbox
    extent = extent_crs84(layer, project_crs)
    if extent is None:
        return None
    asked = request_bbox.bbox
    minx, miny = max(asked.minx, extent.minx), max(asked.miny, extent.miny)
    maxx, maxy = min(asked.maxx, extent.maxx), min(asked.maxy, extent.maxy)
    if minx > maxx or miny > maxy:
        return None
    return transform_bbox(BBox(minx, miny, maxx, maxy), CRS84, project_crs)
