"""GeoPackage geometry blobs: the 'GP' header with an XY envelope in front of ISO WKB.

Kept apart from the backend because the R-tree triggers need to read envelopes too.
"""

from __future__ import annotations

import struct

import shapely

HEADER = struct.Struct("<2sBBi4d")  # magic, version, flags, srs_id, minx, maxx, miny, maxy
EMPTY_HEADER = struct.Struct("<2sBBi")
ENVELOPE_BYTES = {0: 0, 1: 32, 2: 48, 3: 48, 4: 64}
FLAG_LITTLE_ENDIAN = 0x01
FLAG_ENVELOPE_XY = 0x02
FLAG_EMPTY = 0x10


def encode(wkb: bytes | None, bounds: tuple[float, float, float, float], srs_id: int) -> bytes | None:
    """A blob from ISO WKB and its bounds (minx, miny, maxx, maxy); NaN bounds mean empty."""
    if wkb is None:
        return None
    minx, miny, maxx, maxy = bounds
    if minx != minx:  # NaN: empty geometry, no envelope
        return EMPTY_HEADER.pack(b"GP", 0, FLAG_LITTLE_ENDIAN | FLAG_EMPTY, srs_id) + wkb
    flags = FLAG_LITTLE_ENDIAN | FLAG_ENVELOPE_XY
    return HEADER.pack(b"GP", 0, flags, srs_id, minx, maxx, miny, maxy) + wkb


def wkb_offset(blob: bytes) -> int:
    """Where the WKB starts after the header and its envelope."""
    if blob[:2] != b"GP":
        raise ValueError("not a GeoPackage geometry blob")
    indicator = (blob[3] >> 1) & 0x07
    return 8 + ENVELOPE_BYTES.get(indicator, 0)


def decode_many(blobs: list[bytes | None]) -> list[shapely.Geometry | None]:
    """Geometries from blobs, parsing the WKB in one vectorised shapely call."""
    wkbs = [None if b is None else bytes(b[wkb_offset(b) :]) for b in blobs]
    return list(shapely.from_wkb(wkbs)) if wkbs else []


def envelope(blob: bytes | None) -> tuple[float, float, float, float] | None:
    """(minx, maxx, miny, maxy) from the header, or from the WKB when the header has none."""
    if blob is None or blob[3] & FLAG_EMPTY:
        return None
    if (blob[3] >> 1) & 0x07:
        order = "<" if blob[3] & FLAG_LITTLE_ENDIAN else ">"
        return struct.unpack_from(order + "4d", blob, 8)
    minx, miny, maxx, maxy = shapely.bounds(shapely.from_wkb(bytes(blob[wkb_offset(blob) :])))
    return (minx, maxx, miny, maxy)


def _coordinate(index: int):
    def pick(blob: bytes | None) -> float | None:
        env = envelope(blob)
        return None if env is None else env[index]

    return pick


def is_empty(blob: bytes | None) -> int | None:
    if blob is None:
        return None
    return 1 if blob[3] & FLAG_EMPTY else 0


SQL_FUNCTIONS = {
    "ST_MinX": _coordinate(0),
    "ST_MaxX": _coordinate(1),
    "ST_MinY": _coordinate(2),
    "ST_MaxY": _coordinate(3),
    "ST_IsEmpty": is_empty,
}
