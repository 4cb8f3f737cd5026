"""A plain HTML view of any JSON document of the API, for people browsing it (OGC `html` class).

The page lists the document's links as anchors and shows the document itself; the data pages
for people are the viewer and the map, so this stays deliberately simple.
"""

from __future__ import annotations

import json
from html import escape
from typing import Any

from fastapi.responses import HTMLResponse, JSONResponse, Response

from twin.api.params import OutputFormat

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><link rel="icon" href="data:,">
<style>body{{font-family:system-ui,sans-serif;margin:2rem;max-width:70rem}}
pre{{background:#f4f4f4;padding:1rem;overflow:auto}}li{{margin:.2rem 0}}</style></head>
<body><h1>{title}</h1>{description}<h2>Links</h2><ul>{links}</ul>{sections}
<h2>JSON</h2><pre>{document}</pre></body></html>"""


def _anchor(link: dict[str, Any]) -> str:
    label = link.get("title") or link.get("rel", "")
    return (
        f'<li><a href="{escape(link["href"])}">{escape(label)}</a> '
        f"<small>({escape(link.get('rel', ''))}, {escape(link.get('type', ''))})</small></li>"
    )


def _collections_section(document: dict[str, Any]) -> str:
    items = []
    for collection in document.get("collections", []):
        href = next((lk["href"] for lk in collection.get("links", []) if lk.get("rel") == "self"), "")
        items.append(f'<li><a href="{escape(href)}">{escape(collection.get("title", collection["id"]))}</a></li>')
    return f"<h2>Collections</h2><ul>{''.join(items)}</ul>" if items else ""


def html_page(title: str, document: dict[str, Any], status_code: int = 200) -> HTMLResponse:
    """The document as a page: description, links, collections (when any) and the JSON."""
    description = document.get("description")
    return HTMLResponse(
        PAGE.format(
            title=escape(title),
            description=f"<p>{escape(description)}</p>" if description else "",
            links="".join(_anchor(link) for link in document.get("links", [])),
            sections=_collections_section(document),
            document=escape(json.dumps(document, ensure_ascii=False, indent=2)),
        ),
        status_code=status_code,
    )


def document_response(document: dict[str, Any], fmt: OutputFormat, title: str) -> Response:
    """The document as JSON, or as a page when HTML was negotiated."""
    if fmt == OutputFormat.html:
        return html_page(title, document)
    return JSONResponse(document)
