"""tileset.json (3D Tiles 1.1): tiles, bounding volumes and the document that holds them.

A `Tile` tree is built by a layer builder (BIM, pipes, buildings...) and written once here, so
every layer gets the same document shape: `asset.version` 1.1, a root transform for local
frames (east-north-up for BIM), `box` volumes in that frame or `region` volumes in radians for
geographic layers, and relative content URIs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

VERSION = "1.1"
MIN_HALF_AXIS = 0.01  # metres: flat things (a slab, a pipe run on the ground) still get a volume


def box_volume(low: Sequence[float], high: Sequence[float], pad: float = MIN_HALF_AXIS) -> dict[str, list[float]]:
    """An axis-aligned box in the tile's frame from its corners (half axes at least `pad`)."""
    lo, hi = np.asarray(low, dtype=float), np.asarray(high, dtype=float)
    centre = (lo + hi) / 2.0
    half = np.maximum((hi - lo) / 2.0, pad)
    return {"box": [*centre.tolist(), half[0], 0.0, 0.0, 0.0, half[1], 0.0, 0.0, 0.0, half[2]]}


def region_volume(
    west: float, south: float, east: float, north: float, min_height: float, max_height: float
) -> dict[str, list[float]]:
    """A geographic region from degrees and ellipsoidal heights (3D Tiles wants radians)."""
    return {
        "region": [
            math.radians(west),
            math.radians(south),
            math.radians(east),
            math.radians(north),
            float(min_height),
            float(max_height),
        ]
    }


def column_major(matrix: np.ndarray) -> list[float]:
    """A 4x4 matrix as the 16 column-major numbers of `transform`."""
    return [float(v) for v in np.asarray(matrix, dtype=float).T.reshape(-1)]


@dataclass
class Tile:
    """One tile: its volume, geometric error (metres), optional content and children."""

    bounding_volume: dict[str, Any]
    geometric_error: float
    content_uri: str | None = None
    children: list[Tile] = field(default_factory=list)
    refine: str | None = None
    transform: np.ndarray | None = None
    content_volume: dict[str, Any] | None = None
    extras: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"boundingVolume": self.bounding_volume, "geometricError": float(self.geometric_error)}
        if self.refine:
            out["refine"] = self.refine
        if self.transform is not None:
            out["transform"] = column_major(self.transform)
        if self.content_uri is not None:
            content: dict[str, Any] = {"uri": self.content_uri}
            if self.content_volume is not None:
                content["boundingVolume"] = self.content_volume
            out["content"] = content
        if self.extras:
            out["extras"] = self.extras
        if self.children:
            out["children"] = [child.to_json() for child in self.children]
        return out

    def walk(self) -> Iterator[Tile]:
        yield self
        for child in self.children:
            yield from child.walk()


def tileset_document(
    root: Tile,
    geometric_error: float | None = None,
    *,
    extras: dict[str, Any] | None = None,
    schema: dict[str, Any] | None = None,
    metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The tileset.json object; the root refines REPLACE unless it says otherwise."""
    if root.refine is None:
        root.refine = "REPLACE"
    error = root.geometric_error * 2.0 if geometric_error is None else geometric_error
    document: dict[str, Any] = {
        "asset": {"version": VERSION, "generator": "cim-twin tiles.threed"},
        "geometricError": float(max(error, root.geometric_error)),
        "root": root.to_json(),
    }
    if schema is not None:
        document["schema"] = schema
    if metadata is not None:
        document["metadata"] = metadata
    if extras:
        document["extras"] = extras
    return document


def write_tileset(path: Path, document: dict[str, Any]) -> Path:
    """Write tileset.json (compact, UTF-8)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, separators=(",", ":"), ensure_ascii=False), encoding="utf-8")
    return path
