"""The part of a MapLibre style that a tile renderer needs: which style layers draw which MVT
layer, and their paint evaluated per feature.

Covers what `styles/*.json` use and the common rest of the expression language: `get`, `has`,
`!has`, `zoom`, `geometry-type`, `match`, `case`, `coalesce`, `interpolate` (linear and
exponential, numbers and colours), `step`, arithmetic, comparisons, `all`/`any`/`!`, `literal`,
`to-number`/`to-string`, legacy filters (`["==", "class", "x"]`, `in`, `has`, `$type`) and legacy
`{"stops": ...}` functions. Symbol (text) layers are left out: raster tiles draw no labels.
Results are memoised per style property and per the values of the feature properties it reads.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

RGBA = tuple[int, int, int, int]
DRAWN_TYPES = ("fill", "line", "circle")
TILESET_URL = re.compile(r"^/tiles/([^/]+)/")
GEOMETRY_TYPES = {
    "Point": "Point",
    "MultiPoint": "Point",
    "LineString": "LineString",
    "MultiLineString": "LineString",
    "Polygon": "Polygon",
    "MultiPolygon": "Polygon",
}
NAMED = {"black": (0, 0, 0), "white": (255, 255, 255), "transparent": (0, 0, 0), "red": (255, 0, 0)}
NUMBER = r"\s*([-+]?[\d.]+%?)\s*"
FUNCTIONAL = re.compile(rf"^(rgba?|hsla?)\({NUMBER},{NUMBER},{NUMBER}(?:,{NUMBER})?\)$")
PAINT_DEFAULTS: dict[str, Any] = {
    "fill-color": "#000000",
    "fill-opacity": 1.0,
    "fill-outline-color": None,
    "line-color": "#000000",
    "line-width": 1.0,
    "line-opacity": 1.0,
    "line-gap-width": 0.0,
    "circle-color": "#000000",
    "circle-radius": 5.0,
    "circle-opacity": 1.0,
    "circle-stroke-color": "#000000",
    "circle-stroke-width": 0.0,
}


# ----- colours -------------------------------------------------------------------------------------
def parse_colour(value: Any) -> RGBA | None:
    """A CSS colour as (r, g, b, a) bytes; None for what is not a colour."""
    if not isinstance(value, str):
        return None
    text = value.strip().lower()
    if text.startswith("#"):
        digits = text[1:]
        if len(digits) in (3, 4):
            digits = "".join(c * 2 for c in digits)
        if len(digits) == 6:
            digits += "ff"
        if len(digits) != 8 or not re.fullmatch(r"[0-9a-f]{8}", digits):
            return None
        return tuple(int(digits[i : i + 2], 16) for i in range(0, 8, 2))  # type: ignore[return-value]
    if text in NAMED:
        return (*NAMED[text], 0 if text == "transparent" else 255)
    match = FUNCTIONAL.match(text.replace(" ", ""))
    if match is None:
        return None
    kind, *parts = match.groups()
    alpha = 1.0 if parts[3] is None else _channel(parts[3], 1.0)
    if kind.startswith("hsl"):
        r, g, b = _hsl(float(parts[0]), _channel(parts[1], 1.0), _channel(parts[2], 1.0))
    else:
        r, g, b = (_channel(p, 255.0) for p in parts[:3])
    return (round(r), round(g), round(b), round(255 * min(max(alpha, 0.0), 1.0)))


def _channel(text: str, scale: float) -> float:
    return float(text[:-1]) / 100 * scale if text.endswith("%") else float(text)


def _hsl(h: float, s: float, lightness: float) -> tuple[float, float, float]:
    def f(n: float) -> float:
        k = (n + h / 30) % 12
        a = s * min(lightness, 1 - lightness)
        return 255 * (lightness - a * max(-1, min(k - 3, 9 - k, 1)))

    return f(0), f(8), f(4)


# ----- expressions ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Context:
    zoom: float
    properties: dict[str, Any]
    geometry_type: str  # Point, LineString or Polygon


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def _interpolate(kind: list, x: float, stops: list[tuple[float, Any]]) -> Any:
    if x <= stops[0][0]:
        return stops[0][1]
    if x >= stops[-1][0]:
        return stops[-1][1]
    for (x0, y0), (x1, y1) in zip(stops, stops[1:], strict=False):
        if x0 <= x <= x1:
            base = float(kind[1]) if kind and kind[0] == "exponential" else 1.0
            span = x1 - x0
            t = (x - x0) / span if base == 1.0 else (base ** (x - x0) - 1) / (base**span - 1)
            c0, c1 = parse_colour(y0), parse_colour(y1)
            if c0 is not None and c1 is not None:
                mixed = (round(a + t * (b - a)) for a, b in zip(c0, c1, strict=True))
                return "#" + "".join(f"{v:02x}" for v in mixed)
            return _number(y0) + t * (_number(y1) - _number(y0))
    return stops[-1][1]


def _legacy_function(value: dict[str, Any], ctx: Context) -> Any:
    """A `{"stops": [...], "base": b, "property": p}` function of zoom or of a property."""
    stops = [(float(s[0]), s[1]) for s in value.get("stops", [])]
    if not stops:
        return value.get("default")
    x = _number(ctx.properties.get(value["property"])) if "property" in value else ctx.zoom
    if value.get("type") == "interval":
        found = stops[0][1]
        for at, out in stops:
            if x >= at:
                found = out
        return found
    base = value.get("base", 1)
    return _interpolate(["exponential", base] if base != 1 else ["linear"], x, stops)


def _legacy_filter(expr: list, ctx: Context) -> bool | None:
    """Legacy filter syntax (`["==", "key", value]`), or None when `expr` is an expression."""
    op = expr[0]
    if op in ("all", "any", "none") and all(isinstance(e, list) for e in expr[1:]):
        results = [evaluate_filter(e, ctx) for e in expr[1:]]
        return all(results) if op == "all" else any(results) if op == "any" else not any(results)
    if len(expr) < 2 or not isinstance(expr[1], str):
        return None
    key = expr[1]
    value = ctx.geometry_type if key == "$type" else ctx.properties.get(key)
    if op in ("has", "!has") and len(expr) == 2:
        return (key in ctx.properties) == (op == "has")
    if op in ("in", "!in"):
        return (value in expr[2:]) == (op == "in")
    if op in ("==", "!=") and len(expr) == 3 and not isinstance(expr[2], list):
        return (value == expr[2]) == (op == "==")
    if op in ("<", "<=", ">", ">=") and len(expr) == 3 and not isinstance(expr[2], list):
        return _compare(op, value, expr[2])
    return None


def _compare(op: str, a: Any, b: Any) -> bool:
    try:
        return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]
    except TypeError:
        return False


def evaluate(expr: Any, ctx: Context) -> Any:
    """The value of a style expression (or a constant) for one feature at one zoom."""
    if isinstance(expr, dict):
        return _legacy_function(expr, ctx)
    if not isinstance(expr, list) or not expr or not isinstance(expr[0], str):
        return expr
    op, args = expr[0], expr[1:]
    if op == "literal":
        return args[0]
    if op == "get":
        return ctx.properties.get(evaluate(args[0], ctx))
    if op == "has":
        return evaluate(args[0], ctx) in ctx.properties
    if op == "!has":
        return evaluate(args[0], ctx) not in ctx.properties
    if op == "zoom":
        return ctx.zoom
    if op == "geometry-type":
        return ctx.geometry_type
    if op == "match":
        value = evaluate(args[0], ctx)
        for label, out in zip(args[1:-1:2], args[2:-1:2], strict=True):
            if value == label or (isinstance(label, list) and value in label):
                return evaluate(out, ctx)
        return evaluate(args[-1], ctx)
    if op == "case":
        for condition, out in zip(args[:-1:2], args[1:-1:2], strict=True):
            if evaluate(condition, ctx):
                return evaluate(out, ctx)
        return evaluate(args[-1], ctx)
    if op == "coalesce":
        return next((v for v in (evaluate(a, ctx) for a in args) if v is not None), None)
    if op == "interpolate":
        x = _number(evaluate(args[1], ctx))
        stops = [(float(at), evaluate(out, ctx)) for at, out in zip(args[2::2], args[3::2], strict=True)]
        return _interpolate(args[0], x, stops)
    if op == "step":
        x = _number(evaluate(args[0], ctx))
        found = evaluate(args[1], ctx)
        for at, out in zip(args[2::2], args[3::2], strict=True):
            if x >= float(at):
                found = evaluate(out, ctx)
        return found
    if op in ("+", "*"):
        values = [_number(evaluate(a, ctx)) for a in args]
        return sum(values) if op == "+" else math.prod(values)
    if op in ("-", "/", "%", "^"):
        a = _number(evaluate(args[0], ctx))
        if len(args) == 1:
            return -a if op == "-" else a
        b = _number(evaluate(args[1], ctx))
        if op in ("/", "%") and b == 0:
            return 0.0
        return {"-": a - b, "/": a / b if b else 0.0, "%": math.fmod(a, b) if b else 0.0, "^": a**b}[op]
    if op in ("min", "max"):
        values = [_number(evaluate(a, ctx)) for a in args]
        return min(values) if op == "min" else max(values)
    if op in ("to-number", "number"):
        return _number(evaluate(args[0], ctx))
    if op in ("to-string", "string"):
        value = evaluate(args[0], ctx)
        return "" if value is None else str(value)
    if op in ("to-color", "rgb", "rgba"):
        if op == "to-color":
            return evaluate(args[0], ctx)
        channels = [_number(evaluate(a, ctx)) for a in args]
        alpha = channels[3] if len(channels) > 3 else 1.0
        return f"rgba({channels[0]:g},{channels[1]:g},{channels[2]:g},{alpha:g})"
    return _boolean(op, args, expr, ctx)


def _boolean(op: str, args: list, expr: list, ctx: Context) -> Any:
    legacy = _legacy_filter(expr, ctx) if op in ("==", "!=", "<", "<=", ">", ">=", "in", "!in", "has") else None
    if legacy is not None:
        return legacy
    if op in ("==", "!="):
        return (evaluate(args[0], ctx) == evaluate(args[1], ctx)) == (op == "==")
    if op in ("<", "<=", ">", ">="):
        return _compare(op, evaluate(args[0], ctx), evaluate(args[1], ctx))
    if op == "all":
        return all(evaluate(a, ctx) for a in args)
    if op == "any":
        return any(evaluate(a, ctx) for a in args)
    if op == "!":
        return not evaluate(args[0], ctx)
    if op == "in":
        haystack = evaluate(args[1], ctx)
        return haystack is not None and evaluate(args[0], ctx) in haystack
    return None  # not understood: treated as no value


def evaluate_filter(expr: Any, ctx: Context) -> bool:
    if expr is None:
        return True
    if isinstance(expr, list) and expr and isinstance(expr[0], str):
        legacy = _legacy_filter(expr, ctx)
        if legacy is not None:
            return legacy
    return bool(evaluate(expr, ctx))


def referenced_keys(expr: Any) -> tuple[str, ...] | None:
    """The feature properties an expression reads; None when it reads them by computed keys."""
    keys: set[str] = set()

    def walk(node: Any) -> bool:
        if isinstance(node, dict):
            if "property" in node:
                keys.add(node["property"])
            return True
        if not isinstance(node, list) or not node:
            return True
        head = node[0]
        if head in ("get", "has", "!has") and len(node) == 2:
            if not isinstance(node[1], str):
                return False
            keys.add(node[1])
            return True
        if head == "properties":
            return False
        legacy = head in ("==", "!=", "<", "<=", ">", ">=", "in", "!in") and len(node) >= 2
        if legacy and isinstance(node[1], str) and node[1] != "$type":
            keys.add(node[1])  # a legacy filter names its property second (["==", "class", "x"])
        return all(walk(child) for child in node[1:])

    return tuple(sorted(keys)) if walk(expr) else None


# ----- style layers --------------------------------------------------------------------------------
@dataclass
class Property:
    """One paint or layout property or filter of a style layer, memoised by what it reads."""

    expr: Any
    keys: tuple[str, ...] | None = None
    memo: dict[tuple, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.keys = referenced_keys(self.expr)
        self.constant = not isinstance(self.expr, list | dict)

    def value(self, ctx: Context, as_filter: bool = False) -> Any:
        if self.constant and not as_filter:
            return self.expr
        if self.keys is None:
            return evaluate_filter(self.expr, ctx) if as_filter else evaluate(self.expr, ctx)
        key = (ctx.zoom, ctx.geometry_type, *(ctx.properties.get(k, _ABSENT) for k in self.keys))
        try:
            return self.memo[key]
        except KeyError:
            pass
        except TypeError:  # unhashable property values
            return evaluate_filter(self.expr, ctx) if as_filter else evaluate(self.expr, ctx)
        found = evaluate_filter(self.expr, ctx) if as_filter else evaluate(self.expr, ctx)
        if len(self.memo) < 65536:
            self.memo[key] = found
        return found


_ABSENT = object()


@dataclass
class StyleLayer:
    """A fill, line or circle layer of a style, drawing one MVT layer."""

    id: str
    type: str
    source_layer: str
    minzoom: float
    maxzoom: float
    filter: Property
    paint: dict[str, Property]
    layout: dict[str, Any]

    def visible_at(self, zoom: float) -> bool:
        return self.minzoom <= zoom < self.maxzoom and self.layout.get("visibility", "visible") != "none"

    def accepts(self, ctx: Context) -> bool:
        return bool(self.filter.value(ctx, as_filter=True))

    def paint_value(self, name: str, ctx: Context) -> Any:
        prop = self.paint.get(name)
        return PAINT_DEFAULTS.get(name) if prop is None else prop.value(ctx)

    def colour(self, name: str, opacity_name: str, ctx: Context) -> RGBA | None:
        """A paint colour with its opacity applied; None when missing or fully transparent."""
        colour = parse_colour(self.paint_value(name, ctx))
        if colour is None:
            return None
        opacity = min(max(_number(self.paint_value(opacity_name, ctx)), 0.0), 1.0)
        alpha = round(colour[3] * opacity)
        return None if alpha == 0 else (*colour[:3], alpha)


@dataclass
class RenderStyle:
    """What a renderer draws: the background colour and the style layers in drawing order."""

    name: str
    background: RGBA | None
    layers: list[StyleLayer]
    digest: str  # of the rules drawn: PNG tiles are cached per digest

    @classmethod
    def of(cls, name: str, background: RGBA | None, entries: list[dict[str, Any]]) -> RenderStyle:
        text = json.dumps([background, entries], sort_keys=True, separators=(",", ":"))
        digest = hashlib.blake2b(text.encode(), digest_size=6).hexdigest()
        return cls(name, background, [_style_layer(e) for e in entries], digest)

    def source_layers(self) -> set[str]:
        return {layer.source_layer for layer in self.layers}


def _style_layer(entry: dict[str, Any]) -> StyleLayer:
    return StyleLayer(
        id=entry["id"],
        type=entry["type"],
        source_layer=entry.get("source-layer", ""),
        minzoom=float(entry.get("minzoom", 0)),
        maxzoom=float(entry.get("maxzoom", 99)),
        filter=Property(entry.get("filter")),
        paint={name: Property(value) for name, value in (entry.get("paint") or {}).items()},
        layout=dict(entry.get("layout") or {}),
    )


def _background(style: dict[str, Any]) -> RGBA | None:
    for entry in style.get("layers", []):
        if entry.get("type") == "background" and (entry.get("layout") or {}).get("visibility") != "none":
            paint = entry.get("paint") or {}
            colour = parse_colour(paint.get("background-color", "#000000"))
            opacity = paint.get("background-opacity", 1)
            if colour is not None and isinstance(opacity, int | float):
                return (*colour[:3], round(colour[3] * min(max(opacity, 0), 1)))
    return None


def _sources_of(style: dict[str, Any], tileset: str) -> set[str]:
    """Names of the style's vector sources served by `/tiles/{tileset}/...`."""
    found = set()
    for name, source in (style.get("sources") or {}).items():
        urls = [source.get("url", "")] + list(source.get("tiles", []))
        if any((m := TILESET_URL.match(url or "")) and m.group(1) == tileset for url in urls):
            found.add(name)
    return found


def render_style(tileset: str, styles: dict[str, dict[str, Any]], mvt_layers: Iterable[str] = ()) -> RenderStyle:
    """The drawing rules of a tileset, taken from the styles given (name -> MapLibre style).

    A style with a source on this tileset gives its layers and background (the first such style
    by name); otherwise the fill, line and circle layers of any style whose `source-layer` is one
    of `mvt_layers` (e.g. one pipe network's layers out of the pipes style), on no background.
    A tileset no style draws gets plain grey fills, lines and circles.
    """
    for name in sorted(styles):
        style = styles[name]
        sources = _sources_of(style, tileset)
        if sources:
            chosen = [e for e in style.get("layers", []) if e.get("source") in sources and e.get("type") in DRAWN_TYPES]
            return RenderStyle.of(name, _background(style), chosen)
    wanted = set(mvt_layers)
    picked = [
        (name, e)
        for name in sorted(styles)
        for e in styles[name].get("layers", [])
        if e.get("type") in DRAWN_TYPES and e.get("source-layer") in wanted
    ]
    if picked:
        return RenderStyle.of("+".join(sorted({name for name, _ in picked})), None, [e for _, e in picked])
    defaults = [_default_layer(kind, name) for name in sorted(wanted) for kind in DRAWN_TYPES]
    return RenderStyle.of("default", None, defaults)


def _default_layer(kind: str, source_layer: str) -> dict[str, Any]:
    geometry = {"fill": "Polygon", "line": "LineString", "circle": "Point"}[kind]
    paint = {
        "fill": {"fill-color": "#9e9e9e", "fill-opacity": 0.5, "fill-outline-color": "#616161"},
        "line": {"line-color": "#616161", "line-width": 1.5},
        "circle": {"circle-color": "#616161", "circle-radius": 3},
    }[kind]
    return {
        "id": f"{source_layer}-{kind}",
        "type": kind,
        "source-layer": source_layer,
        "filter": ["==", ["geometry-type"], geometry],
        "paint": paint,
    }
