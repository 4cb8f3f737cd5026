"""Compiled loops of the MVT encoder: geometry command streams and feature messages.

Both walk arrays once and write protobuf varints straight into a byte buffer, which is what a
tile of a few features and a tile of thousands both need: no per-call overhead that grows with
the number of numpy operations, and no Python loop over coordinates.
"""

from __future__ import annotations

import numba
import numpy as np

POINT, LINESTRING, POLYGON = 1, 2, 3
MOVE_TO, LINE_TO, CLOSE_PATH = 1, 2, 7


@numba.njit(cache=True, inline="always")
def _put(buffer: np.ndarray, pos: int, value: int) -> int:
    """Write one unsigned varint at `pos`; returns the position after it."""
    while value >= 0x80:
        buffer[pos] = (value & 0x7F) | 0x80
        value >>= 7
        pos += 1
    buffer[pos] = value
    return pos + 1


@numba.njit(cache=True, inline="always")
def _size(value: int) -> int:
    size = 1
    while value >= 0x80:
        value >>= 7
        size += 1
    return size


@numba.njit(cache=True, inline="always")
def _zigzag(value: int) -> int:
    return (value << 1) ^ (value >> 63)


@numba.njit(cache=True)
def encode_geometry(
    coords: np.ndarray,
    coord_seq: np.ndarray,
    seq_group: np.ndarray,
    group_feature: np.ndarray,
    kind: int,
    n_features: int,
    starts: np.ndarray,
    lengths: np.ndarray,
) -> np.ndarray:
    """Packed geometry commands of every feature of one kind, in one buffer.

    Sequences (a multipoint's points, a line part, a polygon ring) come in order with their
    coordinates; `seq_group` maps a sequence to its group (the polygon of a ring; the sequence
    itself otherwise) and `group_feature` a group to its feature. Rings lose their closing point,
    repeated points are dropped, lines need 2 points and rings 3, and a polygon whose exterior
    collapsed is dropped with its holes. Fills `starts`/`lengths` (bytes) of each feature.
    """
    n = coords.shape[0]
    buffer = np.empty(n * 10 + (seq_group.shape[0] + 1) * 16, dtype=np.uint8)
    kept_x = np.empty(n, dtype=np.int64)
    kept_y = np.empty(n, dtype=np.int64)
    pos = 0
    feature = -1
    cx = 0
    cy = 0
    dead_group = -1
    last_group = -1
    i = 0
    while i < n:
        seq = coord_seq[i]
        j = i
        while j < n and coord_seq[j] == seq:
            j += 1
        group = seq_group[seq]
        first_of_group = group != last_group
        last_group = group
        end = j - 1 if kind == POLYGON else j  # a ring's closing point is not written
        k = 0
        for c in range(i, end):
            x = np.int64(np.round(coords[c, 0]))
            y = np.int64(np.round(coords[c, 1]))
            if kind != POINT and k > 0 and x == kept_x[k - 1] and y == kept_y[k - 1]:
                continue
            kept_x[k] = x
            kept_y[k] = y
            k += 1
        if kind == POLYGON and k > 1 and kept_x[k - 1] == kept_x[0] and kept_y[k - 1] == kept_y[0]:
            k -= 1
        i = j
        minimum = 1 if kind == POINT else (2 if kind == LINESTRING else 3)
        if k < minimum:
            if kind == POLYGON and first_of_group:
                dead_group = group
            continue
        if kind == POLYGON and group == dead_group:
            continue
        f = group_feature[group]
        if f != feature:
            feature = f
            starts[f] = pos
            cx = 0
            cy = 0
        if kind == POINT:
            pos = _put(buffer, pos, (k << 3) | MOVE_TO)
            for c in range(k):
                pos = _put(buffer, pos, _zigzag(kept_x[c] - cx))
                pos = _put(buffer, pos, _zigzag(kept_y[c] - cy))
                cx = kept_x[c]
                cy = kept_y[c]
        else:
            pos = _put(buffer, pos, (1 << 3) | MOVE_TO)
            pos = _put(buffer, pos, _zigzag(kept_x[0] - cx))
            pos = _put(buffer, pos, _zigzag(kept_y[0] - cy))
            cx = kept_x[0]
            cy = kept_y[0]
            pos = _put(buffer, pos, ((k - 1) << 3) | LINE_TO)
            for c in range(1, k):
                pos = _put(buffer, pos, _zigzag(kept_x[c] - cx))
                pos = _put(buffer, pos, _zigzag(kept_y[c] - cy))
                cx = kept_x[c]
                cy = kept_y[c]
            if kind == POLYGON:
                pos = _put(buffer, pos, (1 << 3) | CLOSE_PATH)
        lengths[f] = pos - starts[f]
    return buffer[:pos]


@numba.njit(cache=True)
def encode_features(
    tags: np.ndarray,
    tag_counts: np.ndarray,
    geometry: np.ndarray,
    geom_starts: np.ndarray,
    geom_lengths: np.ndarray,
    types: np.ndarray,
) -> np.ndarray:
    """Every Feature message as a layer's field 2, one after the other:
    0x12 len(body), body = 0x12 len(tags) tags 0x18 type 0x22 len(geometry) geometry."""
    m = tag_counts.shape[0]
    capacity = 0
    for f in range(m):
        capacity += 5 * tag_counts[f] + geom_lengths[f] + 32
    out = np.empty(capacity, dtype=np.uint8)
    pos = 0
    t = 0
    for f in range(m):
        tag_bytes = 0
        for q in range(t, t + tag_counts[f]):
            tag_bytes += _size(tags[q])
        glen = geom_lengths[f]
        body = 1 + _size(tag_bytes) + tag_bytes + 3 + _size(glen) + glen
        out[pos] = 0x12
        pos = _put(out, pos + 1, body)
        out[pos] = 0x12
        pos = _put(out, pos + 1, tag_bytes)
        for q in range(t, t + tag_counts[f]):
            pos = _put(out, pos, tags[q])
        t += tag_counts[f]
        out[pos] = 0x18
        out[pos + 1] = types[f]
        out[pos + 2] = 0x22
        pos = _put(out, pos + 3, glen)
        s = geom_starts[f]
        out[pos : pos + glen] = geometry[s : s + glen]
        pos += glen
    return out[:pos]


VALUE_STRING, VALUE_INT, VALUE_DOUBLE, VALUE_BOOL = 1, 2, 3, 4


@numba.njit(cache=True)
def encode_values(
    codes: np.ndarray, ints: np.ndarray, doubles: np.ndarray, text: np.ndarray, text_lengths: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Every value of a layer's value table as a Layer field 4 (a Value message), one after the
    other, and where each starts (plus the end). Strings are the UTF-8 `text`, in order."""
    n = codes.shape[0]
    out = np.empty(text.shape[0] + n * 24, dtype=np.uint8)
    offsets = np.empty(n + 1, dtype=np.int64)
    pos = 0
    t = 0
    s = 0
    for i in range(n):
        offsets[i] = pos
        out[pos] = 0x22
        code = codes[i]
        if code == VALUE_STRING:
            length = text_lengths[s]
            s += 1
            pos = _put(out, pos + 1, 1 + _size(length) + length)
            out[pos] = 0x0A
            pos = _put(out, pos + 1, length)
            out[pos : pos + length] = text[t : t + length]
            pos += length
            t += length
        elif code == VALUE_DOUBLE:
            out[pos + 1] = 9
            out[pos + 2] = 0x19
            out[pos + 3 : pos + 11] = doubles[i : i + 1].view(np.uint8)
            pos += 11
        elif code == VALUE_BOOL:
            out[pos + 1] = 2
            out[pos + 2] = 0x38
            out[pos + 3] = ints[i]
            pos += 4
        else:
            value = ints[i]
            if value >= 0:
                pos = _put(out, pos + 1, 1 + _size(value))
                out[pos] = 0x28  # uint_value
                pos = _put(out, pos + 1, value)
            else:
                encoded = _zigzag(value)
                pos = _put(out, pos + 1, 1 + _size(encoded))
                out[pos] = 0x30  # sint_value
                pos = _put(out, pos + 1, encoded)
    offsets[n] = pos
    return out[:pos], offsets
