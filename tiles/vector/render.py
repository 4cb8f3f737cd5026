"""Drawing a vector tile as a PNG: the tile's own MVT (already generalised and clipped by the MVT
path) painted with a MapLibre style's fills, lines and circles.

This is how GeoServer or SuperMap hand basemaps to a 3D globe: the server rasterises, the client
drapes images. Drawing uses Pillow at `SUPERSAMPLE`x the output size and a box-filter reduction
in premultiplied alpha, which antialiases edges and thin lines. Widths are in CSS pixels as in
MapLibre; a 256-pixel tile at zoom z shows the ground at the resolution MapLibre's (512-pixel)
zoom z-1 has, so the style is evaluated at z-1; `scale=2` draws a 512-pixel tile for HiDPI
screens, widths doubled. Labels (symbol layers) and `line-gap-width` are not drawn.
"""

from __future__ import annotations

import io
from functools import lru_cache
from typing import Any

import mapbox_vector_tile
import numpy as np
from PIL import Image, ImageDraw

from tiles.vector.mapstyle import GEOMETRY_TYPES, RGBA, Context, RenderStyle, StyleLayer

TILE_SIZE = 256
SUPERSAMPLE = 4  # drawing resolution over the output's, per axis
CANVAS = TILE_SIZE * SUPERSAMPLE
PNG_COMPRESSION = 6
DECODE_OPTIONS = {"y_coord_down": True}
Ring = list[tuple[float, float]]


def style_zoom(z: int) -> float:
    """The MapLibre zoom whose ground resolution a 256-pixel tile of zoom z has."""
    return float(z - 1)


@lru_cache(maxsize=4)
def transparent_png(size: int = TILE_SIZE) -> bytes:
    """A fully transparent tile: what an empty tile is (Cesium's imagery needs an image, and
    fails a tile answered 204)."""
    return _encode(Image.new("RGBA", (size, size), (0, 0, 0, 0)))


def _encode(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=PNG_COMPRESSION)
    return out.getvalue()


def render_png(mvt: bytes, style: RenderStyle, z: int, scale: int = 1) -> bytes:
    """The tile drawn as a PNG of 256 x `scale` pixels; the transparent tile when nothing of the
    tile is drawn."""
    size = TILE_SIZE * scale
    if not mvt:
        return transparent_png(size)
    layers = mapbox_vector_tile.decode(mvt, default_options=DECODE_OPTIONS)
    painter = Painter(size, max(1, CANVAS // size), scale, style.background)
    zoom = style_zoom(z)
    drawn = 0
    for layer in style.layers:
        source = layers.get(layer.source_layer)
        if source is None or not layer.visible_at(zoom):
            continue
        drawn += painter.draw_layer(layer, source["features"], zoom, source.get("extent", 4096))
    if not drawn:
        return transparent_png(size)
    return _encode(painter.finish())


class Painter:
    """One tile's canvas at supersampled resolution; style layers are drawn onto it in order."""

    def __init__(self, size: int, supersample: int, scale: int, background: RGBA | None) -> None:
        self.size = size
        self.ss = supersample
        self.px = supersample * scale  # canvas pixels per CSS pixel
        side = size * supersample
        self.canvas = Image.new("RGBA", (side, side), background or (0, 0, 0, 0))

    def finish(self) -> Image.Image:
        if self.ss == 1:
            return self.canvas
        premultiplied = self.canvas.convert("RGBa").reduce(self.ss)
        return premultiplied.convert("RGBA")

    def draw_layer(self, layer: StyleLayer, features: list[dict[str, Any]], zoom: float, extent: int) -> int:
        """Draw the features a style layer accepts; returns how many were drawn."""
        k = self.canvas.width / extent
        ops: list[tuple[RGBA, Any]] = []
        for feature in features:
            geometry = feature["geometry"]
            kind = GEOMETRY_TYPES.get(geometry["type"])
            if kind is None:
                continue
            ctx = Context(zoom, feature["properties"], kind)
            if not layer.accepts(ctx):
                continue
            ops.extend(self._feature_ops(layer, geometry, kind, ctx, k))
        if not ops:
            return 0
        opaque = all(colour[3] == 255 for colour, _ in ops)
        target = self.canvas if opaque else Image.new("RGBA", self.canvas.size, (0, 0, 0, 0))
        draw = ImageDraw.Draw(target)
        for colour, op in ops:
            op(draw, target, colour)
        if not opaque:
            self.canvas.alpha_composite(target)
        return len(ops)

    # ----- geometry to drawing operations ----------------------------------------------------------
    def _feature_ops(self, layer: StyleLayer, geometry: dict, kind: str, ctx: Context, k: float) -> list:
        polygons = _polygons(geometry, k) if kind == "Polygon" else []
        if layer.type == "fill":
            if kind != "Polygon":
                return []
            ops = []
            fill = layer.colour("fill-color", "fill-opacity", ctx)
            if fill is not None:
                ops += [(fill, _fill_op(rings)) for rings in polygons]
            outline = layer.colour("fill-outline-color", "fill-opacity", ctx)
            if outline is not None:
                width = max(1, round(self.ss))  # one device pixel
                ops += [(outline, _line_op(ring, width, False)) for rings in polygons for ring in rings]
            return ops
        if layer.type == "line":
            colour = layer.colour("line-color", "line-opacity", ctx)
            if colour is None or kind == "Point":
                return []
            width_px = float(layer.paint_value("line-width", ctx) or 0) * self.px
            if width_px <= 0:
                return []
            lines = [ring for rings in polygons for ring in rings] if kind == "Polygon" else _lines(geometry, k)
            dashes = layer.paint_value("line-dasharray", ctx)
            if isinstance(dashes, list) and len(dashes) >= 2 and sum(dashes) > 0:
                lines = [piece for line in lines for piece in dash(line, [d * width_px for d in dashes])]
            round_cap = layer.layout.get("line-cap") == "round"
            return [(colour, _line_op(line, max(1, round(width_px)), round_cap)) for line in lines]
        if layer.type == "circle" and kind == "Point":
            radius = float(layer.paint_value("circle-radius", ctx) or 0) * self.px
            stroke = float(layer.paint_value("circle-stroke-width", ctx) or 0) * self.px
            fill = layer.colour("circle-color", "circle-opacity", ctx)
            ring = layer.colour("circle-stroke-color", "circle-opacity", ctx) if stroke > 0 else None
            points = _points(geometry, k)
            ops = []
            if ring is not None:
                ops += [(ring, _disc_op(p, radius + stroke / 2)) for p in points]
            if fill is not None and radius > 0:
                ops += [(fill, _disc_op(p, radius - (stroke / 2 if ring is not None else 0))) for p in points]
            return ops
        return []


def _scaled(coords: list, k: float) -> Ring:
    return [(x * k, y * k) for x, y in coords]


def _polygons(geometry: dict, k: float) -> list[list[Ring]]:
    parts = [geometry["coordinates"]] if geometry["type"] == "Polygon" else geometry["coordinates"]
    return [[_scaled(ring, k) for ring in polygon if len(ring) >= 3] for polygon in parts if polygon]


def _lines(geometry: dict, k: float) -> list[Ring]:
    parts = [geometry["coordinates"]] if geometry["type"] == "LineString" else geometry["coordinates"]
    return [_scaled(line, k) for line in parts if len(line) >= 2]


def _points(geometry: dict, k: float) -> list[tuple[float, float]]:
    parts = [geometry["coordinates"]] if geometry["type"] == "Point" else geometry["coordinates"]
    return [(x * k, y * k) for x, y in parts]


def _fill_op(rings: list[Ring]):
    exterior, holes = rings[0], rings[1:]

    def op(draw: ImageDraw.ImageDraw, target: Image.Image, colour: RGBA) -> None:
        if not holes:
            draw.polygon(exterior, fill=colour)
            return
        # holes cut through this polygon only: draw it through a mask of its own
        xs, ys = [p[0] for p in exterior], [p[1] for p in exterior]
        left, top = max(0, int(min(xs))), max(0, int(min(ys)))
        right, bottom = min(target.width, int(max(xs)) + 2), min(target.height, int(max(ys)) + 2)
        if right <= left or bottom <= top:
            return
        mask = Image.new("L", (right - left, bottom - top), 0)
        pen = ImageDraw.Draw(mask)
        pen.polygon([(x - left, y - top) for x, y in exterior], fill=255)
        for hole in holes:
            pen.polygon([(x - left, y - top) for x, y in hole], fill=0)
        target.paste(Image.new("RGBA", mask.size, colour), (left, top), mask)

    return op


def _line_op(line: Ring, width: int, round_cap: bool):
    def op(draw: ImageDraw.ImageDraw, target: Image.Image, colour: RGBA) -> None:
        draw.line(line, fill=colour, width=width, joint="curve" if width > 2 else None)
        if round_cap and width > 2:
            r = width / 2
            for x, y in (line[0], line[-1]):
                draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)

    return op


def _disc_op(centre: tuple[float, float], radius: float):
    def op(draw: ImageDraw.ImageDraw, target: Image.Image, colour: RGBA) -> None:
        x, y = centre
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=colour)

    return op


def dash(line: Ring, pattern: list[float]) -> list[Ring]:
    """The drawn pieces of a line under a dash pattern (on, off, on, ... lengths in pixels)."""
    points = np.asarray(line, dtype=float)
    steps = np.hypot(*np.diff(points, axis=0).T)
    along = np.concatenate(([0.0], np.cumsum(steps)))
    total = along[-1]
    period = float(sum(pattern))
    if total <= 0 or period <= 0:
        return [line]
    starts = np.cumsum([0.0, *pattern[:-1]])
    pieces = []
    for offset in np.arange(0.0, total, period):
        for i in range(0, len(pattern), 2):
            a, b = offset + starts[i], min(offset + starts[i] + pattern[i], total)
            if a >= total:
                break
            inside = (along > a) & (along < b)
            at = np.concatenate(([a], along[inside], [b]))
            xs = np.interp(at, along, points[:, 0])
            ys = np.interp(at, along, points[:, 1])
            pieces.append(list(zip(xs.tolist(), ys.tolist(), strict=True)))
    return pieces
