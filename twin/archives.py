"""Uploaded archives (zipped shapefiles, .ifczip, zipped OSGB folders) checked before and while
they are unpacked.

Refused, with a clear reason: names that climb out of the target (`..`, absolute paths, drive
letters, backslashes), links, devices and other special files, duplicate names, too many members,
a member that unpacks to more than `max_ratio` times its packed size, and a total unpacked size
over `max_bytes`. The sizes in the directory are only claims, so unpacking counts the bytes it
really writes and stops at the same limits.
"""

from __future__ import annotations

import shutil
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from twin.model import InvalidInput

ARCHIVE_SUFFIXES = frozenset({".zip", ".ifczip"})
CHUNK = 1 << 20
SMALL_MEMBER = 1 << 20  # members this small are not judged by their ratio (a tiny file compresses well)


class ArchiveTooLarge(InvalidInput):
    """An archive that would unpack to more than the limits allow (413 over HTTP)."""

    status = 413


@dataclass(frozen=True)
class ArchiveLimits:
    max_bytes: int
    max_ratio: float
    max_members: int


def _safe_name(name: str) -> PurePosixPath:
    """The member's relative path, or InvalidInput when it could land outside the target."""
    if "\\" in name or "\x00" in name:
        raise InvalidInput(f"archive member {name!r}: backslashes and NUL are not allowed in names")
    path = PurePosixPath(name)
    if path.is_absolute() or (path.parts and ":" in path.parts[0]):
        raise InvalidInput(f"archive member {name!r} has an absolute path")
    if any(part == ".." for part in path.parts):
        raise InvalidInput(f"archive member {name!r} climbs out of the archive ('..')")
    parts = [part for part in path.parts if part not in ("", ".")]
    if not parts:
        raise InvalidInput(f"archive member {name!r} has no name")
    return PurePosixPath(*parts)


def _kind(info: zipfile.ZipInfo) -> str:
    """file, dir, link or special, from the Unix mode when the archive recorded one."""
    file_type = stat.S_IFMT(info.external_attr >> 16)
    if stat.S_ISLNK(file_type):
        return "link"
    if file_type and not (stat.S_ISREG(file_type) or stat.S_ISDIR(file_type)):
        return "special"
    return "dir" if info.is_dir() else "file"


def check_zip(path: Path, limits: ArchiveLimits) -> list[zipfile.ZipInfo]:
    """The archive's file members after every check on its directory; raises on the first problem."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise InvalidInput(f"{path.name}: not a readable zip archive ({exc})") from exc
    with archive:
        infos = archive.infolist()
    if len(infos) > limits.max_members:
        raise ArchiveTooLarge(f"{path.name}: {len(infos)} members; at most {limits.max_members} are accepted")
    seen: set[str] = set()
    files: list[zipfile.ZipInfo] = []
    total = 0
    for info in infos:
        name = _safe_name(info.filename)
        kind = _kind(info)
        if kind == "link":
            raise InvalidInput(f"archive member {info.filename!r} is a symbolic link; links are not accepted")
        if kind == "special":
            raise InvalidInput(f"archive member {info.filename!r} is not a regular file")
        key = str(name).lower()
        if key in seen:
            raise InvalidInput(f"archive member {info.filename!r} appears more than once")
        seen.add(key)
        if kind == "dir":
            continue
        if info.flag_bits & 0x1:
            raise InvalidInput(f"archive member {info.filename!r} is encrypted")
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > SMALL_MEMBER and ratio > limits.max_ratio:
            raise ArchiveTooLarge(
                f"archive member {info.filename!r} unpacks to {ratio:.0f} times its packed size; "
                f"at most {limits.max_ratio:.0f} is accepted (a zip bomb?)"
            )
        total += info.file_size
        if total > limits.max_bytes:
            raise ArchiveTooLarge(
                f"{path.name} unpacks to more than {limits.max_bytes // (1 << 20)} MB (TWIN_MAX_EXTRACT_MB)"
            )
        files.append(info)
    return files


def extract_zip(path: Path, target: Path, limits: ArchiveLimits) -> Path:
    """Unpack into `target` (created; must not exist) after `check_zip`, counting real bytes."""
    files = check_zip(path, limits)
    target.mkdir(parents=True)
    root = target.resolve()
    written = 0
    with zipfile.ZipFile(path) as archive:
        for info in files:
            destination = (root / _safe_name(info.filename)).resolve()
            if root not in destination.parents:
                raise InvalidInput(f"archive member {info.filename!r} would land outside the target")
            destination.parent.mkdir(parents=True, exist_ok=True)
            member_bytes = 0
            try:
                with archive.open(info) as source, open(destination, "xb") as sink:
                    while chunk := source.read(CHUNK):
                        member_bytes += len(chunk)
                        written += len(chunk)
                        if member_bytes > info.file_size or written > limits.max_bytes:
                            raise ArchiveTooLarge(
                                f"{path.name}: member {info.filename!r} unpacks to more than it claims"
                            )
                        sink.write(chunk)
            except FileExistsError as exc:
                raise InvalidInput(f"archive member {info.filename!r} appears more than once") from exc
            except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError) as exc:
                raise InvalidInput(f"{path.name}: member {info.filename!r} cannot be unpacked ({exc})") from exc
    return target


def find_datasets(folder: Path, suffixes: frozenset[str]) -> list[Path]:
    """Files under `folder` with one of the suffixes, sorted; macOS resource forks are skipped."""
    found = [
        p
        for p in folder.rglob("*")
        if p.is_file() and p.suffix.lower() in suffixes and "__MACOSX" not in p.parts and not p.name.startswith("._")
    ]
    return sorted(found)


def remove_tree(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
