"""A multipart/form-data request body streamed straight into a file, with a size limit.

The endpoint reads the body itself (after its dependencies checked the API key, so an anonymous
client cannot make the server store anything), writes the one file part to disk chunk by chunk
and stops with 413 as soon as the body passes the limit. Text fields are kept in memory (small).
The client's file name never becomes a path: only its suffix, when it is a plain one, is kept.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import anyio
from fastapi import HTTPException, Request
from python_multipart.multipart import MultipartParser, parse_options_header

MAX_FIELD_BYTES = 64 * 1024
MAX_FIELDS = 32
SUFFIX = re.compile(r"^\.[a-z0-9]{1,10}$")
STEM = re.compile(r"[^a-z0-9_]+")


@dataclass
class Upload:
    """What a form carried: its text fields, and the file saved as `path` (None if it had none)."""

    fields: dict[str, str] = field(default_factory=dict)
    path: Path | None = None
    filename: str = ""
    size: int = 0


def safe_suffix(filename: str) -> str:
    """The file name's last suffix, lower-cased, when it is letters and digits only; else ''."""
    suffix = Path(filename.replace("\\", "/")).suffix.lower()
    return suffix if SUFFIX.match(suffix) else ""


def safe_stem(filename: str) -> str:
    """A name made of [a-z0-9_] from the client's file name, for layer ids derived from it."""
    stem = Path(filename.replace("\\", "/")).name
    stem = stem[: -len(safe_suffix(stem))] if safe_suffix(stem) else stem
    cleaned = STEM.sub("_", stem.lower()).strip("_")[:60]
    return cleaned or "upload"


def _bad(detail: str, status: int = 400) -> HTTPException:
    return HTTPException(status, detail)


class _FormReader:
    """python-multipart callbacks that keep fields and queue file bytes for writing."""

    def __init__(self, file_field: str) -> None:
        self.file_field = file_field
        self.upload = Upload()
        self.pending: list[bytes] = []
        self._header_name = b""
        self._header_value = b""
        self._disposition = b""
        self._name: str | None = None
        self._is_file = False
        self._data = bytearray()

    def on_part_begin(self) -> None:
        self._disposition = b""
        self._name = None
        self._is_file = False
        self._data = bytearray()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        if self._header_name.lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_name = self._header_value = b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        if b"name" not in options:
            raise _bad("a form part has no name in its Content-Disposition")
        self._name = options[b"name"].decode("utf-8", "replace")
        if b"filename" in options:
            if self._name != self.file_field or self.upload.path is not None:
                raise _bad(f"only one file is accepted, in the form field {self.file_field!r}")
            self._is_file = True
            self.upload.filename = options[b"filename"].decode("utf-8", "replace")
        elif len(self.upload.fields) >= MAX_FIELDS:
            raise _bad(f"too many form fields (at most {MAX_FIELDS})")

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._is_file:
            self.pending.append(bytes(data[start:end]))
            return
        self._data += data[start:end]
        if len(self._data) > MAX_FIELD_BYTES:
            raise _bad(f"form field {self._name!r} is longer than {MAX_FIELD_BYTES} bytes")

    def on_part_end(self) -> None:
        if self._is_file:
            self.upload.path = Path("pending")  # marks that the file part was complete
        elif self._name is not None:
            if self._name == self.file_field:
                raise _bad(f"form field {self.file_field!r} must be a file")
            if self._name in self.upload.fields:
                raise _bad(f"form field {self._name!r} given twice")
            self.upload.fields[self._name] = self._data.decode("utf-8", "replace")


async def receive_form(request: Request, target_stem: Path, max_bytes: int, file_field: str = "file") -> Upload:
    """Read a multipart form, writing its file part to `target_stem` + the file's suffix.

    413 when the body is larger than `max_bytes` (checked on Content-Length first, then on every
    chunk), 415 when the body is not multipart/form-data, 400 when it is malformed. On any error
    the partial file is deleted.
    """
    content_type, options = parse_options_header(request.headers.get("content-type"))
    if content_type != b"multipart/form-data" or not options.get(b"boundary"):
        raise _bad("send the upload as multipart/form-data (with a boundary)", 415)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise _bad(
            f"the upload is {int(declared) // (1 << 20)} MB; at most {max_bytes // (1 << 20)} MB is accepted", 413
        )
    reader = _FormReader(file_field)
    callbacks = {
        name: getattr(reader, name)
        for name in (
            "on_part_begin",
            "on_part_data",
            "on_part_end",
            "on_header_field",
            "on_header_value",
            "on_header_end",
            "on_headers_finished",
        )
    }
    parser = MultipartParser(options[b"boundary"], callbacks)  # type: ignore[arg-type]
    target_stem.parent.mkdir(parents=True, exist_ok=True)
    spool = target_stem.with_name(target_stem.name + ".part")
    received = 0
    try:
        with open(spool, "wb") as sink:
            async for chunk in request.stream():
                received += len(chunk)
                if received > max_bytes:
                    raise _bad(f"the upload is larger than {max_bytes // (1 << 20)} MB (TWIN_MAX_UPLOAD_MB)", 413)
                try:
                    parser.write(chunk)
                except HTTPException:
                    raise
                except Exception as exc:  # python-multipart's parse errors
                    raise _bad(f"malformed multipart body: {exc}") from exc
                if reader.pending:
                    data, reader.pending = b"".join(reader.pending), []
                    reader.upload.size += len(data)
                    await anyio.to_thread.run_sync(sink.write, data)
            try:
                parser.finalize()
            except Exception as exc:
                raise _bad(f"malformed multipart body: {exc}") from exc
        upload = reader.upload
        if upload.path is None:
            spool.unlink(missing_ok=True)
            return upload
        upload.path = target_stem.with_name(target_stem.name + safe_suffix(upload.filename))
        spool.rename(upload.path)
        return upload
    except BaseException:
        spool.unlink(missing_ok=True)
        raise
