"""The server's settings: environment variables over an optional TOML file over defaults.

One place for every knob an operator turns, so that the README can list them all and each
module reads a typed value instead of parsing the environment itself. The file is
`$TWIN_CONFIG` when set, else `twin.toml` in the data directory when it exists; keys are the
field names below (a `[twin]` table or the top level). Environment variables win over the file.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from twin.model import InvalidInput

CONFIG_FILE = "twin.toml"
TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})


@dataclass(frozen=True)
class Settings:
    """Every setting, with its environment variable in the field's metadata."""

    data: Path = field(default=Path("./twin-data"), metadata={"env": "TWIN_DATA", "doc": "data directory"})
    store: str | None = field(default=None, metadata={"env": "TWIN_STORE", "doc": "PostGIS URL (default: GeoPackage)"})
    public_read: bool = field(default=True, metadata={"env": "TWIN_PUBLIC_READ", "doc": "reads without a key"})
    cors_origins: tuple[str, ...] = field(
        default=("*",), metadata={"env": "TWIN_CORS_ORIGINS", "doc": "allowed browser origins, comma-separated"}
    )
    max_upload_mb: float = field(default=2048, metadata={"env": "TWIN_MAX_UPLOAD_MB", "doc": "largest upload"})
    max_extract_mb: float = field(
        default=8192, metadata={"env": "TWIN_MAX_EXTRACT_MB", "doc": "largest unpacked size of an uploaded archive"}
    )
    max_compression_ratio: float = field(
        default=200, metadata={"env": "TWIN_MAX_COMPRESSION_RATIO", "doc": "largest unpacked/packed ratio of a member"}
    )
    max_archive_members: int = field(
        default=100_000, metadata={"env": "TWIN_MAX_ARCHIVE_MEMBERS", "doc": "most files in an uploaded archive"}
    )
    max_items: int = field(default=10_000, metadata={"env": "TWIN_MAX_ITEMS", "doc": "largest `limit` of a page"})
    max_bbox_km2: float = field(
        default=2_500, metadata={"env": "TWIN_MAX_BBOX_KM2", "doc": "largest area an analysis region may cover"}
    )
    min_zoom: int = field(default=0, metadata={"env": "TWIN_MIN_ZOOM", "doc": "smallest tile zoom served"})
    max_zoom: int = field(default=22, metadata={"env": "TWIN_MAX_ZOOM", "doc": "largest tile zoom served"})
    max_flood_cells: int = field(
        default=4_000_000, metadata={"env": "TWIN_MAX_FLOOD_CELLS", "doc": "largest flood model grid (cells)"}
    )
    analysis_timeout_s: float = field(
        default=120, metadata={"env": "TWIN_ANALYSIS_TIMEOUT_S", "doc": "longest synchronous analysis answer"}
    )
    job_workers: int = field(default=2, metadata={"env": "TWIN_JOB_WORKERS", "doc": "threads running jobs"})
    log_level: str = field(default="INFO", metadata={"env": "TWIN_LOG_LEVEL", "doc": "DEBUG, INFO, WARNING, ERROR"})
    log_format: str = field(default="json", metadata={"env": "TWIN_LOG_FORMAT", "doc": "json or text"})

    def describe(self) -> dict[str, Any]:
        """The settings as JSON values, with the store URL's password hidden (for /admin/config)."""
        values: dict[str, Any] = {}
        for item in fields(self):
            value = getattr(self, item.name)
            if isinstance(value, Path):
                value = str(value)
            elif isinstance(value, tuple):
                value = list(value)
            values[item.name] = value
        if values["store"]:
            values["store"] = _hide_password(values["store"])
        return values


def _hide_password(url: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _convert(name: str, kind: Any, value: Any, origin: str) -> Any:
    """A file or environment value as the field's type; InvalidInput naming where it came from."""
    try:
        if kind in ("bool", bool):
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in TRUE_WORDS:
                return True
            if text in FALSE_WORDS:
                return False
            raise ValueError("expected true or false")
        if kind in ("int", int):
            if isinstance(value, bool):
                raise ValueError("expected an integer")
            return int(str(value).strip())
        if kind in ("float", float):
            if isinstance(value, bool):
                raise ValueError("expected a number")
            number = float(str(value).strip())
            if number != number or number <= 0:
                raise ValueError("expected a positive number")
            return number
        if kind in ("Path", Path):
            return Path(str(value))
        if kind in ("tuple[str, ...]",):
            items = value if isinstance(value, list) else str(value).split(",")
            return tuple(str(v).strip() for v in items if str(v).strip()) or ("*",)
        if kind in ("str | None",):
            return str(value) or None
        return str(value)
    except ValueError as exc:
        raise InvalidInput(f"invalid setting {name} = {value!r} in {origin}: {exc}") from exc


def config_file(data_dir: Path | None = None) -> Path | None:
    """`$TWIN_CONFIG`, else `twin.toml` in the data directory, else None."""
    explicit = os.environ.get("TWIN_CONFIG")
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise InvalidInput(f"TWIN_CONFIG names {path}, which is not a file")
        return path
    directory = data_dir if data_dir is not None else Path(os.environ.get("TWIN_DATA", "./twin-data"))
    candidate = Path(directory) / CONFIG_FILE
    return candidate if candidate.is_file() else None


def _read_file(path: Path) -> dict[str, Any]:
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{path} is not valid TOML: {exc}") from exc
    table = document.get("twin", document)
    if not isinstance(table, dict):
        raise InvalidInput(f"{path}: [twin] must be a table")
    known = {item.name for item in fields(Settings)}
    unknown = sorted(set(table) - known)
    if unknown:
        raise InvalidInput(f"{path}: unknown setting {unknown[0]!r}; known: {', '.join(sorted(known))}")
    return table


def load_settings(data_dir: Path | None = None, environ: dict[str, str] | None = None) -> Settings:
    """Defaults, then the config file, then environment variables; `data_dir` wins over both."""
    env = os.environ if environ is None else environ
    path = config_file(data_dir)
    from_file = _read_file(path) if path is not None else {}
    values: dict[str, Any] = {}
    for item in fields(Settings):
        if item.name in from_file:
            values[item.name] = _convert(item.name, item.type, from_file[item.name], str(path))
        variable = item.metadata["env"]
        if env.get(variable, "") != "":
            values[item.name] = _convert(item.name, item.type, env[variable], f"${variable}")
    if data_dir is not None:
        values["data"] = Path(data_dir)
    settings = Settings(**values)
    if not 0 <= settings.min_zoom <= settings.max_zoom <= 30:
        raise InvalidInput(
            f"invalid zoom range {settings.min_zoom}..{settings.max_zoom}: expected 0 <= min <= max <= 30"
        )
    if settings.log_format not in ("json", "text"):
        raise InvalidInput(f"invalid setting log_format = {settings.log_format!r}: expected json or text")
    return settings


def settings_table() -> list[tuple[str, str, str, str]]:
    """(key, environment variable, default, meaning) for every setting: the README's table."""
    rows = []
    for item in fields(Settings):
        default = item.default
        shown = ",".join(default) if isinstance(default, tuple) else ("" if default is None else str(default))
        rows.append((item.name, item.metadata["env"], shown, item.metadata["doc"]))
    return rows
