"""A small SVG writer for the analysis drawings: shapes, text, a metric frame and scale bars.

Cross-sections, profiles and clearance plans are drawn to scale in metres; `Frame` maps metres
to pixels (with a vertical exaggeration where asked) and `scale_bar` says how long a bar is.
Pipes are coloured by CJJ 61 class colour.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from xml.sax.saxutils import escape, quoteattr

SVG_MEDIA_TYPE = "image/svg+xml"

FAMILY_COLOURS = {
    "water": "rgb(0,255,255)",  # 给水 cyan
    "reclaimed": "rgb(0,160,160)",
    "drainage": "rgb(76,57,38)",  # 排水 brown
    "gas": "rgb(255,0,255)",  # 燃气 magenta
    "heat": "rgb(255,128,0)",  # 热力 orange
    "power": "rgb(255,0,0)",  # 电力 red
    "telecom": "rgb(0,255,0)",  # 通信 green
    "industrial": "rgb(0,0,0)",
    "trench": "rgb(128,128,128)",
    "other": "rgb(128,128,128)",
}
GROUND_COLOUR = "rgb(120,90,50)"
SOIL_FILL = "rgb(240,228,205)"
VIOLATION_COLOUR = "rgb(220,0,0)"


def colour(family: str) -> str:
    return FAMILY_COLOURS.get(family, FAMILY_COLOURS["other"])


def _fmt(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".")


@dataclass
class Svg:
    """An SVG document built element by element; `render` gives the text."""

    width: float
    height: float
    title: str = ""
    elements: list[str] = field(default_factory=list)

    def add(self, tag: str, text: str | None = None, **attrs: object) -> None:
        parts = []
        for key, val in attrs.items():
            if val is None:
                continue
            name = "class" if key == "cls" else key.replace("_", "-")
            shown = _fmt(val) if isinstance(val, float) else str(val)
            parts.append(f"{name}={quoteattr(shown)}")
        head = f"<{tag} {' '.join(parts)}".rstrip()
        self.elements.append(f"{head}/>" if text is None else f"{head}>{escape(text)}</{tag}>")

    def line(self, x1: float, y1: float, x2: float, y2: float, **attrs: object) -> None:
        self.add("line", x1=float(x1), y1=float(y1), x2=float(x2), y2=float(y2), **attrs)

    def polyline(self, points: list[tuple[float, float]], **attrs: object) -> None:
        self.add("polyline", points=" ".join(f"{_fmt(x)},{_fmt(y)}" for x, y in points), fill="none", **attrs)

    def polygon(self, points: list[tuple[float, float]], **attrs: object) -> None:
        self.add("polygon", points=" ".join(f"{_fmt(x)},{_fmt(y)}" for x, y in points), **attrs)

    def ellipse(self, cx: float, cy: float, rx: float, ry: float, **attrs: object) -> None:
        self.add("ellipse", cx=float(cx), cy=float(cy), rx=float(max(rx, 0.5)), ry=float(max(ry, 0.5)), **attrs)

    def rect(self, x: float, y: float, w: float, h: float, **attrs: object) -> None:
        self.add("rect", x=float(x), y=float(y), width=float(max(w, 1.0)), height=float(max(h, 1.0)), **attrs)

    def text(self, x: float, y: float, content: str, size: float = 11.0, **attrs: object) -> None:
        self.add("text", content, x=float(x), y=float(y), font_size=float(size), font_family="sans-serif", **attrs)

    def clip_to(self, name: str, x: float, y: float, w: float, h: float) -> None:
        """Start a group clipped to a rectangle; `end_group` closes it."""
        box = f'<rect x="{_fmt(x)}" y="{_fmt(y)}" width="{_fmt(w)}" height="{_fmt(h)}"/>'
        self.elements.append(f'<defs><clipPath id="{name}">{box}</clipPath></defs>')
        self.elements.append(f'<g clip-path="url(#{name})">')

    def end_group(self) -> None:
        self.elements.append("</g>")

    def render(self) -> str:
        head = (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{_fmt(self.width)}" height="{_fmt(self.height)}" '
            f'viewBox="0 0 {_fmt(self.width)} {_fmt(self.height)}">'
        )
        title = f"<title>{escape(self.title)}</title>" if self.title else ""
        background = f'<rect x="0" y="0" width="{_fmt(self.width)}" height="{_fmt(self.height)}" fill="white"/>'
        return "\n".join([head, title, background, *self.elements, "</svg>"]) + "\n"


@dataclass(frozen=True)
class Frame:
    """Metres to pixels: x to the right from `x0`, z (or northing) upwards from `z0`."""

    x0: float
    z0: float
    left: float
    bottom: float
    sx: float
    sz: float

    def px(self, x: float) -> float:
        return self.left + (x - self.x0) * self.sx

    def pz(self, z: float) -> float:
        return self.bottom - (z - self.z0) * self.sz


def fit_frame(
    extent: tuple[float, float, float, float],
    width: float,
    exaggeration: float = 1.0,
    margin: tuple[float, float, float, float] = (70.0, 40.0, 30.0, 70.0),
    max_height: float = 900.0,
) -> tuple[Frame, float]:
    """A frame showing `extent` (xmin, zmin, xmax, zmax) across `width` px; returns it and the
    canvas height. Heights are `exaggeration` times the horizontal scale unless that would be
    taller than `max_height`, in which case the whole drawing is scaled down to fit."""
    xmin, zmin, xmax, zmax = extent
    left, top, right, bottom = margin
    sx = (width - left - right) / max(xmax - xmin, 1e-6)
    sz = sx * exaggeration
    plot_height = (zmax - zmin) * sz
    if plot_height > max_height - top - bottom:
        shrink = (max_height - top - bottom) / plot_height
        sx, sz = sx * shrink, sz * shrink
        plot_height = (zmax - zmin) * sz
    height = top + plot_height + bottom
    return Frame(xmin, zmin, left, top + plot_height, sx, sz), height


def nice_length(limit: float) -> float:
    """The largest 1, 2 or 5 × 10^k not above `limit`."""
    if limit <= 0:
        return 0.0
    power = 10.0 ** math.floor(math.log10(limit))
    return max(step * power for step in (1.0, 2.0, 5.0) if step * power <= limit)


def scale_bar(svg: Svg, x: float, y: float, pixels_per_metre: float, max_pixels: float, vertical: bool = False) -> None:
    """A black-and-white bar with its length in metres, horizontal or vertical."""
    metres = nice_length(max_pixels / pixels_per_metre)
    if metres <= 0:
        return
    size = metres * pixels_per_metre
    label = f"{_fmt(metres)} m"
    if vertical:
        svg.rect(x, y - size, 6, size, fill="black", cls="scale-bar")
        svg.rect(x, y - size, 6, size / 2, fill="white", stroke="black", stroke_width=0.5)
        svg.text(x + 10, y - size / 2 + 4, label + " (vertical)", size=10)
        return
    svg.rect(x, y, size, 6, fill="black", cls="scale-bar")
    svg.rect(x, y, size / 2, 6, fill="white", stroke="black", stroke_width=0.5)
    svg.text(x, y + 18, "0", size=10)
    svg.text(x + size - 10, y + 18, label, size=10)


def axis_ticks(low: float, high: float, count: int = 6) -> list[float]:
    """Round tick values covering [low, high]."""
    if not high > low:
        return [low]
    step = nice_length((high - low) / max(count - 1, 1) * 1.999)
    if step <= 0:
        return [low]
    first = math.ceil(low / step) * step
    return [first + i * step for i in range(int((high - first) / step) + 1)]
