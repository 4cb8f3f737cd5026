"""OGC API links: absolute URLs built from the request, so they work behind any host or prefix."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from twin.api.params import OutputFormat

JSON = "application/json"
HTML = "text/html"


def link(href: str, rel: str, media_type: str, title: str | None = None) -> dict[str, Any]:
    """One link object as OGC API Common defines it."""
    out: dict[str, Any] = {"href": href, "rel": rel, "type": media_type}
    if title:
        out["title"] = title
    return out


def url_for(request: Request, name: str, **path: str) -> str:
    """The absolute URL of a named route."""
    return str(request.url_for(name, **path))


def app_url(request: Request, path: str) -> str:
    """The absolute URL of a path of this application (static pages, OpenAPI, docs)."""
    return str(request.base_url) + path.lstrip("/")


def with_query(request: Request, **params: str | int) -> str:
    """This request's URL with some query parameters replaced and every other one kept."""
    return str(request.url.include_query_params(**params))


def self_links(request: Request, fmt: OutputFormat, json_type: str = JSON) -> list[dict[str, Any]]:
    """`self` in the format answered and `alternate` in the other one (JSON or HTML)."""
    other = OutputFormat.json if fmt == OutputFormat.html else OutputFormat.html
    return [
        link(with_query(request, f=fmt.value), "self", fmt.media_type(json_type)),
        link(with_query(request, f=other.value), "alternate", other.media_type(json_type)),
    ]


def page_links(
    request: Request, fmt: OutputFormat, json_type: str, offset: int, limit: int, returned: int, matched: int
) -> list[dict[str, Any]]:
    """`next` while features remain after this page, `prev` when this page is not the first."""
    links = self_links(request, fmt, json_type)
    media_type = fmt.media_type(json_type)
    if offset + returned < matched:
        links.append(link(with_query(request, offset=offset + returned), "next", media_type, "next page"))
    if offset > 0:
        links.append(link(with_query(request, offset=max(0, offset - limit)), "prev", media_type, "previous page"))
    return links
