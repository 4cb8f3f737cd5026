"""Request parameters as FastAPI dependencies, each parsed and checked once.

Endpoints receive model objects (`Layer`, `BBox`, `TimeFilter`, `CrsChoice`, `Paging`) and a bad
value becomes a 400 problem that names the parameter, instead of every endpoint re-parsing text.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from typing import Annotated

from fastapi import Depends, Path, Query, Request

from twin.crs import CRS84, crs_code, crs_uri, parse_crs
from twin.model import BBox, InvalidInput, Layer, TimeFilter
from twin.store import Store
from twin.store.base import check_property_key

DEFAULT_LIMIT = 100
MAX_LIMIT = 10_000


def get_store(request: Request) -> Store:
    """The store opened by `create_app`, shared by every request."""
    return request.app.state.store


StoreDep = Annotated[Store, Depends(get_store)]


def get_layer(
    store: StoreDep,
    collection_id: Annotated[str, Path(description="Layer id, as listed by /collections")],
) -> Layer:
    """The collection named in the path; NotFound (404) when the twin has no such layer."""
    return store.get_layer(collection_id)


LayerDep = Annotated[Layer, Depends(get_layer)]


# ----- coordinate reference systems --------------------------------------------------------
@dataclass(frozen=True)
class CrsChoice:
    """A CRS the API answers in, with what encoding needs to know about it.

    `swap_xy`: OGC API Features Part 2 puts coordinates in the CRS's own axis order, so for a
    northing-first CRS such as EPSG:4549 positions are (northing, easting); QGIS reads them so.
    `decimals`: geographic coordinates are rounded to 1e-8 degrees (about a millimetre).
    """

    code: str
    uri: str
    swap_xy: bool
    decimals: int | None


@lru_cache(maxsize=64)
def crs_choice(text: str) -> CrsChoice:
    """Cached: looking up a CRS's authority code costs more than answering a small page."""
    definition = parse_crs(text)
    first_axis = definition.axis_info[0].direction.lower() if definition.axis_info else "east"
    return CrsChoice(
        code=crs_code(definition),
        uri=crs_uri(text),
        swap_xy=first_axis in ("north", "south"),
        decimals=8 if definition.is_geographic else None,
    )


def supported_crs(store: Store) -> list[CrsChoice]:
    """CRS84 (the default) and the project CRS (the storage CRS, no reprojection)."""
    return [crs_choice(CRS84), crs_choice(store.crs)]


def choose_crs(text: str | None, parameter: str, store: Store) -> CrsChoice:
    """The supported CRS that `text` names (URI or 'EPSG:nnnn'); 400 listing them otherwise."""
    supported = supported_crs(store)
    if text is None or not text.strip():
        return supported[0]
    try:
        code = crs_code(parse_crs(text))
    except InvalidInput:
        code = None
    for choice in supported:
        if choice.code == code:
            return choice
    names = ", ".join(choice.uri for choice in supported)
    raise InvalidInput(f"unsupported {parameter} {text!r}: this collection is served in {names}")


def output_crs(
    store: StoreDep,
    crs: Annotated[
        str | None,
        Query(description="Output CRS URI: CRS84 (default) or the project CRS, in that CRS's axis order"),
    ] = None,
) -> CrsChoice:
    return choose_crs(crs, "crs", store)


OutputCrsDep = Annotated[CrsChoice, Depends(output_crs)]


# ----- bbox, datetime, paging ---------------------------------------------------------------
@dataclass(frozen=True)
class BBoxFilter:
    """A requested box, x (easting/longitude) first whatever the axis order it came in."""

    bbox: BBox
    crs: CrsChoice


def bbox_filter(
    store: StoreDep,
    bbox: Annotated[
        str | None,
        Query(description="minx,miny,maxx,maxy (or 6 numbers with heights) in bbox-crs, lon/lat for CRS84"),
    ] = None,
    bbox_crs: Annotated[
        str | None,
        Query(alias="bbox-crs", description="CRS of bbox: CRS84 (default) or the project CRS, in its axis order"),
    ] = None,
) -> BBoxFilter | None:
    crs = choose_crs(bbox_crs, "bbox-crs", store)
    parsed = BBox.parse(bbox)
    if parsed is None:
        return None
    if crs.swap_xy:
        parsed = BBox(parsed.miny, parsed.minx, parsed.maxy, parsed.maxx)
    inside_globe = max(abs(parsed.minx), abs(parsed.maxx)) <= 180 and max(abs(parsed.miny), abs(parsed.maxy)) <= 90
    if crs.code == CRS84 and not inside_globe:
        raise InvalidInput(f"invalid bbox {bbox!r}: CRS84 longitudes lie in [-180, 180] and latitudes in [-90, 90]")
    return BBoxFilter(parsed, crs)


BBoxDep = Annotated[BBoxFilter | None, Depends(bbox_filter)]


def time_filter(
    when: Annotated[
        str | None,
        Query(
            alias="datetime",
            description="RFC 3339 instant or interval START/END with '..' for an open end; default: now",
        ),
    ] = None,
) -> TimeFilter | None:
    """None means 'now' (the store's default); '../..' means every version ever valid."""
    parsed = TimeFilter.parse(when)
    if parsed is None and when is not None and when.strip():
        return TimeFilter(None, None)
    return parsed


TimeDep = Annotated[TimeFilter | None, Depends(time_filter)]


@dataclass(frozen=True)
class Paging:
    limit: int
    offset: int


def paging(
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description=f"Features per page (1 to {MAX_LIMIT})")] = (
        DEFAULT_LIMIT
    ),
    offset: Annotated[int, Query(ge=0, description="Features to skip (follow the 'next' link instead)")] = 0,
) -> Paging:
    return Paging(limit, offset)


PagingDep = Annotated[Paging, Depends(paging)]


# ----- property filters ---------------------------------------------------------------------
ITEMS_PARAMETERS = frozenset({"bbox", "bbox-crs", "datetime", "limit", "offset", "crs", "f"})


def property_filters(request: Request, layer: LayerDep) -> dict[str, str]:
    """Every other query parameter is an equality filter on a property.

    When the layer declares a schema, a parameter must name one of its properties; otherwise any
    plain key is taken as a property name. Anything else is a 400, so that a misspelt parameter
    is reported instead of silently filtering every feature away.
    """
    filters: dict[str, str] = {}
    for key, value in request.query_params.multi_items():
        if key in ITEMS_PARAMETERS:
            continue
        if key in filters:
            raise InvalidInput(f"query parameter {key!r} is given more than once; a property filter takes one value")
        if layer.schema and key not in layer.schema:
            raise InvalidInput(
                f"unknown query parameter {key!r}: not one of {', '.join(sorted(ITEMS_PARAMETERS))} "
                f"nor a property of collection {layer.id!r} ({', '.join(sorted(layer.schema))})"
            )
        filters[check_property_key(key)] = value
    return filters


FiltersDep = Annotated[dict[str, str], Depends(property_filters)]


# ----- output format -------------------------------------------------------------------------
class OutputFormat(StrEnum):
    json = "json"
    html = "html"

    def media_type(self, json_type: str = "application/json") -> str:
        """The media type answered in this format (`json_type`: the JSON flavour of the resource)."""
        return "text/html" if self is OutputFormat.html else json_type


class FormatParam(StrEnum):
    json = "json"
    geojson = "geojson"
    html = "html"


JSON_MEDIA_TYPES = ("application/json", "application/geo+json")


def negotiate(accept: str, default: OutputFormat) -> OutputFormat:
    """HTML or JSON from an Accept header; only explicit mentions count, `*/*` gets `default`."""
    quality = {OutputFormat.html: -1.0, OutputFormat.json: -1.0}
    for item in accept.split(","):
        media, *options = (part.strip() for part in item.split(";"))
        q = 1.0
        for option in options:
            name, _, value = option.partition("=")
            if name.strip() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        kind = OutputFormat.html if media == "text/html" else OutputFormat.json if media in JSON_MEDIA_TYPES else None
        if kind is not None:
            quality[kind] = max(quality[kind], q)
    best = max(quality, key=lambda kind: (quality[kind], kind == default))
    return best if quality[best] > 0 else default


def format_dependency(default: OutputFormat) -> Callable[..., OutputFormat]:
    """A dependency choosing HTML or JSON from `f` first, then `Accept`, else `default`."""

    def output_format(
        request: Request,
        f: Annotated[FormatParam | None, Query(description="Response format: json, geojson or html")] = None,
    ) -> OutputFormat:
        if f is not None:
            return OutputFormat.html if f == FormatParam.html else OutputFormat.json
        return negotiate(request.headers.get("accept", ""), default)

    return output_format


JsonFirst = Annotated[OutputFormat, Depends(format_dependency(OutputFormat.json))]
HtmlFirst = Annotated[OutputFormat, Depends(format_dependency(OutputFormat.html))]
