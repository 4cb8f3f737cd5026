"""Static files (CesiumJS, MapLibre, the pages' own scripts) sent gzip-compressed when the
client accepts it, compressed once per file version and kept in memory.

CesiumJS alone is 6 MB of JavaScript, most of what a first visit to the viewer transfers; gzip
takes it to about a quarter. Compressing on every request (a GZip middleware) would cost the
server a few hundred milliseconds per visit, so the compressed bytes are kept, keyed by the
file's path, size and modification time.
"""

from __future__ import annotations

import gzip
import hashlib
import mimetypes
from functools import lru_cache
from pathlib import Path

from fastapi import Request
from fastapi.responses import FileResponse, Response

COMPRESSIBLE = frozenset({".js", ".mjs", ".css", ".html", ".json", ".map", ".svg", ".glsl", ".txt", ".xml", ".wasm"})
MIN_BYTES = 1024  # smaller files gain less than the header costs
GZIP_LEVEL = 6


@lru_cache(maxsize=512)
def _compressed(path: str, size: int, mtime_ns: int) -> tuple[bytes, str]:
    raw = Path(path).read_bytes()
    return gzip.compress(raw, GZIP_LEVEL, mtime=0), '"' + hashlib.blake2b(raw, digest_size=12).hexdigest() + '-gz"'


def static_file(request: Request, path: Path, cache_control: str, media_type: str | None = None) -> Response:
    """`path` (checked by the caller) as a response: gzip from memory when the client takes it,
    with an ETag and 304; otherwise the file as it is."""
    media_type = media_type or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    stat = path.stat()
    accepts_gzip = "gzip" in request.headers.get("accept-encoding", "")
    if not (accepts_gzip and path.suffix in COMPRESSIBLE and stat.st_size >= MIN_BYTES):
        return FileResponse(
            path, media_type=media_type, headers={"Cache-Control": cache_control, "Vary": "Accept-Encoding"}
        )
    body, etag = _compressed(str(path), stat.st_size, stat.st_mtime_ns)
    headers = {"Cache-Control": cache_control, "ETag": etag, "Vary": "Accept-Encoding"}
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=media_type, headers=headers | {"Content-Encoding": "gzip"})
