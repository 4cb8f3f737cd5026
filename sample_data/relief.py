"""The natural ground surface and the river: a smooth analytic function of (x, y).

Everything that needs a ground height (DEM, pipe nodes, mesh, IFC origin) evaluates the same
function, so heights agree between files without reading the DEM back. Road depressions are
added on top of this in `terrain`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely
from shapely.geometry import LineString, Polygon

from .frame import Frame, rng

CHANNEL_HALF_WIDTH = 20.0  # the river channel is ~40 m wide
BANK_WIDTH = 25.0  # riverside park strip on each side of the channel
CHANNEL_DEPTH = 3.0  # bed below the banks


@dataclass(frozen=True)
class River:
    """A gently meandering river flowing west to east across the district."""

    y_mid: float
    x_ref: float
    amps: tuple[float, float]
    wavelengths: tuple[float, float]
    phases: tuple[float, float]

    def centre_y(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=float) - self.x_ref
        y = np.full_like(x, self.y_mid)
        for a, w, p in zip(self.amps, self.wavelengths, self.phases, strict=True):
            y += a * np.sin(2.0 * np.pi * x / w + p)
        return y

    def slope(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=float) - self.x_ref
        s = np.zeros_like(x)
        for a, w, p in zip(self.amps, self.wavelengths, self.phases, strict=True):
            s += a * 2.0 * np.pi / w * np.cos(2.0 * np.pi * x / w + p)
        return s

    def signed_distance(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Approximate distance to the centreline, positive on the north bank."""
        return (np.asarray(y) - self.centre_y(x)) / np.sqrt(1.0 + self.slope(x) ** 2)

    def line(self, xmin: float, xmax: float, step: float = 10.0) -> LineString:
        xs = np.arange(xmin, xmax + step, step)
        return LineString(np.column_stack([xs, self.centre_y(xs)]))

    def channel(self, xmin: float, xmax: float) -> Polygon:
        return self.line(xmin, xmax).buffer(CHANNEL_HALF_WIDTH, cap_style="flat", quad_segs=4)

    def corridor(self, xmin: float, xmax: float) -> Polygon:
        """Channel plus riverside park: kept free of blocks."""
        return self.line(xmin, xmax).buffer(CHANNEL_HALF_WIDTH + BANK_WIDTH, cap_style="flat", quad_segs=4)

    def band(self, xmin: float, xmax: float, half: float) -> tuple[float, float]:
        """The y range of a strip of half-width `half` around the centreline."""
        xs = np.linspace(xmin, xmax, 2001)
        ys = self.centre_y(xs)
        return float(ys.min() - half), float(ys.max() + half)


@dataclass(frozen=True)
class Relief:
    """Gentle relief, 6–30 m: a river valley rising to low hills with rolling waves."""

    frame: Frame
    river: River
    wave_k: np.ndarray  # (n, 2) wave vectors
    wave_amp: np.ndarray
    wave_phase: np.ndarray

    def bank_level(self, x: np.ndarray) -> np.ndarray:
        """Bank height falls 1.5 m from west to east across the district (the river flows east)."""
        f = np.clip((np.asarray(x, dtype=float) - self.frame.x0) / self.frame.size, -1.0, 2.0)
        return 10.5 - 1.5 * f

    def natural(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Ground height without man-made depressions, vectorised over any array shape."""
        x = np.asarray(x, dtype=float)
        y = np.asarray(y, dtype=float)
        d = np.abs(self.river.signed_distance(x, y))
        z = self.bank_level(x)
        z = z + 16.0 * (1.0 - np.exp(-np.maximum(d - 45.0, 0.0) / 700.0))
        waves = np.zeros_like(z)
        for (kx, ky), a, p in zip(self.wave_k, self.wave_amp, self.wave_phase, strict=True):
            waves += a * np.sin(kx * (x - self.frame.x0) + ky * (y - self.frame.y0) + p)
        fade = np.clip((d - 45.0) / 200.0, 0.0, 1.0)
        z = z + waves * fade * fade * (3.0 - 2.0 * fade)
        cut = CHANNEL_DEPTH * np.clip((CHANNEL_HALF_WIDTH + 2.0 - d) / 8.0, 0.0, 1.0)
        return np.clip(z - cut, 6.0, 30.0)


def make_relief(frame: Frame) -> Relief:
    """The river crosses at about 38 % of the district's height; waves have 0.5–1.5 km lengths."""
    g = rng(frame.seed, "relief")
    river = River(
        y_mid=frame.y0 + 0.38 * frame.size,
        x_ref=frame.x0,
        amps=(float(g.uniform(45, 65)), float(g.uniform(15, 25))),
        wavelengths=(float(g.uniform(1300, 1700)), float(g.uniform(500, 650))),
        phases=(float(g.uniform(0, 2 * np.pi)), float(g.uniform(0, 2 * np.pi))),
    )
    n = 6
    lengths = g.uniform(500, 1500, n)
    angles = g.uniform(0, np.pi, n)
    k = np.column_stack([np.cos(angles), np.sin(angles)]) * (2 * np.pi / lengths)[:, None]
    return Relief(frame, river, k, g.uniform(0.4, 1.1, n), g.uniform(0, 2 * np.pi, n))


def polygon_array(coords: np.ndarray) -> np.ndarray:
    """Quadrilaterals (n, 4, 2) to shapely polygons, vectorised."""
    closed = np.concatenate([coords, coords[:, :1]], axis=1)
    return shapely.polygons(closed)
