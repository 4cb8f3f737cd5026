"""2D surface flow: the local-inertial scheme of Bates, Horritt and Fewtrell (2010).

Water depth h lives at cell centres of the DEM grid, unit-width discharge q on cell faces. Each
step, with η = z + h and the flow depth h_f = max(η_i, η_j) − max(z_i, z_j) at a face,

    q ← (q − g·h_f·Δt·∂η/∂x) / (1 + g·Δt·n²·|q| / h_f^{7/3})          (friction implicit)
    h ← h + rain·Δt + Δt·(Σ q_in − Σ q_out)/Δx − drainage

with Δt = α·Δx/√(g·h_max). Outflows of a cell are scaled down when they would take more water
than it holds, which keeps depths non-negative and the scheme exactly conservative, so the mass
balance (rain in − drained − outflow − stored) closes to round-off.

Two implementations of the same step: a numba sweep (the production path: blocks of rows in
parallel, each read and written once per step, loops that vectorise) and plain numpy (the
reference that tests and the benchmark compare against). Boundary faces, O(perimeter), share one
numpy implementation.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal, Protocol

# OpenMP threads that spin while waiting lose whole time slices when the machine has other work
# (a web server, other jobs): the two-thread sweep then ran at a sixth to a quarter of one
# thread's speed; with sleeping waits it stays level with one thread or ahead. Read when the
# OpenMP runtime loads, at the first parallel sweep, so it must be set before that.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numba
import numpy as np
from numba.core import types
from numba.extending import intrinsic

from twin.analysis.flood.storms import Hyetograph
from twin.model import InvalidInput

G = 9.81
THIRD = 1.0 / 3.0
RCBRT_MAGIC = 0x54A2FA8C  # float32 bit pattern guess for x^(−1/3), within 4 %
PARALLEL_MIN_CELLS = 20_000
BLOCKS_PER_THREAD = 4
MIN_BLOCK_ROWS = 32
RCBRT_STEPS = 3  # Newton steps: 4 % → 3e-3 → 2e-5 → 7e-10, far below what friction needs
SIDES = ("west", "east", "north", "south")
Backend = Literal["numba", "numpy"]
BoundarySpec = str | Callable[[float], float]
Progress = Callable[[float, str], None]


class Cancelled(Exception):
    """The caller's cancel check answered true; nothing was returned or written."""


class Exchange(Protocol):
    """Water traded with a model outside the grid (a sewer network), called at step ends.

    `every_s` is how often it is called (0: after every step). It edits the depth grid `h` in
    place and answers the volumes (m³) it took from and put onto the surface, which the mass
    balance books as `to_sewer` and `from_sewer`."""

    every_s: float

    def __call__(self, t: float, h: np.ndarray) -> tuple[float, float]: ...


@dataclass
class MassBalance:
    """Volumes in m³ over the run; `relative_error` is the residual over what came in."""

    rain_in: float = 0.0
    boundary_in: float = 0.0
    drained: float = 0.0
    outflow: float = 0.0
    initial_storage: float = 0.0
    final_storage: float = 0.0
    to_sewer: float = 0.0
    from_sewer: float = 0.0

    @property
    def error(self) -> float:
        came = self.initial_storage + self.rain_in + self.boundary_in + self.from_sewer
        return came - self.drained - self.outflow - self.to_sewer - self.final_storage

    @property
    def relative_error(self) -> float:
        scale = self.initial_storage + self.rain_in + self.boundary_in + self.from_sewer
        return abs(self.error) / scale if scale > 0 else abs(self.error)

    def as_dict(self) -> dict[str, float]:
        keys = ("rain_in", "boundary_in", "drained", "outflow", "to_sewer", "from_sewer", "initial_storage")
        keys += ("final_storage", "error")
        out = {f"{k}_m3": round(float(getattr(self, k)), 6) for k in keys}
        out["relative_error"] = float(self.relative_error)
        return out


@dataclass
class Inlets:
    """Drainage inlets: the cells (row, col) where water leaves the surface, each up to a capacity."""

    rows: np.ndarray
    cols: np.ndarray
    capacity_m3s: np.ndarray
    ids: list[str] = field(default_factory=list)

    def merged(self, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """Flat cell indices (unique) and the summed capacity of the inlets in each."""
        rows, cols = np.asarray(self.rows, np.int64), np.asarray(self.cols, np.int64)
        cap = np.asarray(self.capacity_m3s, np.float64)
        if not (rows.shape == cols.shape == cap.shape):
            raise InvalidInput("inlet rows, cols and capacities must have the same length")
        inside = (rows >= 0) & (rows < shape[0]) & (cols >= 0) & (cols < shape[1])
        if np.any(cap < 0) or not np.all(np.isfinite(cap)):
            raise InvalidInput("inlet capacities must be finite and not negative")
        flat = rows[inside] * shape[1] + cols[inside]
        cells, where = np.unique(flat, return_inverse=True)
        return cells, np.bincount(where, weights=cap[inside], minlength=len(cells))


@dataclass
class SurfaceResult:
    """What a run leaves: depth grids, the mass balance, and point series."""

    depth: np.ndarray
    max_depth: np.ndarray
    time_above_s: np.ndarray
    threshold_m: np.ndarray
    mass: MassBalance
    simulated_s: float
    steps: int
    wall_s: float
    backend: str
    probe_times_s: np.ndarray
    probe_depths: np.ndarray
    frames: list[tuple[float, np.ndarray]] = field(default_factory=list)

    @property
    def cell_updates(self) -> int:
        return self.steps * self.depth.size

    def summary(self) -> dict:
        return {
            "backend": self.backend,
            "simulated_s": round(self.simulated_s, 3),
            "steps": self.steps,
            "cells": int(self.depth.size),
            "wall_s": round(self.wall_s, 3),
            "cell_updates_per_s": round(self.cell_updates / self.wall_s) if self.wall_s > 0 else None,
            "max_depth_m": round(float(self.max_depth.max()), 4),
            "mass_balance": self.mass.as_dict(),
        }


# ----- numba kernels ------------------------------------------------------------------------


@intrinsic
def _f32_bits(typingctx, x):  # pragma: no cover - compiled
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.int32))

    return types.int32(types.float32), codegen


@intrinsic
def _bits_f32(typingctx, x):  # pragma: no cover - compiled
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.float32))

    return types.float32(types.int32), codegen


@numba.njit(inline="always")
def _rcbrt(x: float) -> float:  # pragma: no cover - compiled
    """x^(−1/3) for x > 0 by a float32 bit-level guess and Newton steps with no division,
    so the face loop vectorises (libm's cbrt would cost most of the step)."""
    y = np.float64(_bits_f32(np.int32(RCBRT_MAGIC) - _f32_bits(np.float32(x)) // np.int32(3)))
    for _ in range(RCBRT_STEPS):
        y = y * (4.0 - x * y * y * y) * THIRD
    return y


@numba.njit(inline="always")
def _face(zl, hl, zr, hr, q0, n2, gdt_dx, gdt, h_min):  # pragma: no cover - compiled
    el = zl + hl
    er = zr + hr
    hf = max(el, er) - max(zl, zr)
    hs = hf if hf > h_min else 1.0
    y = _rcbrt(hs)
    y2 = y * y
    q = (q0 - gdt_dx * hf * (er - el)) / (1.0 + gdt * n2 * abs(q0) * (y2 * y2 * y2 * y))
    return q if hf > h_min else 0.0


@numba.njit(inline="always")
def _qx_row(z, h, qx, n2, qx_edges, i, out, gdt_dx, gdt, h_min):  # pragma: no cover - compiled
    """New discharge on the west–east faces of row i (the two edge faces come from the boundaries)."""
    nx = h.shape[1]
    out[0] = qx_edges[i, 0]
    out[nx] = qx_edges[i, nx]
    for j in range(1, nx):
        out[j] = _face(
            z[i, j - 1], h[i, j - 1], z[i, j], h[i, j], qx[i, j], 0.5 * (n2[i, j - 1] + n2[i, j]), gdt_dx, gdt, h_min
        )


@numba.njit(inline="always")
def _qy_face_row(z, h, qy, n2, qy_edges, k, out, gdt_dx, gdt, h_min):  # pragma: no cover - compiled
    """New discharge on the faces between rows k − 1 and k (k = 0 and k = ny are boundaries)."""
    ny, nx = h.shape
    if k == 0 or k == ny:
        for j in range(nx):
            out[j] = qy_edges[k, j]
        return
    for j in range(nx):
        out[j] = _face(
            z[k - 1, j], h[k - 1, j], z[k, j], h[k, j], qy[k, j], 0.5 * (n2[k - 1, j] + n2[k, j]), gdt_dx, gdt, h_min
        )


@numba.njit(inline="always")
def _factor_row(h, i, qx_row, qy_north, qy_south, out, c, rain):  # pragma: no cover - compiled
    """The share of its planned outflow each cell of row i can give without going below zero."""
    for j in range(h.shape[1]):
        planned = (max(qx_row[j + 1], 0.0) - min(qx_row[j], 0.0) + max(qy_south[j], 0.0) - min(qy_north[j], 0.0)) * c
        avail = h[i, j] + rain
        out[j] = 1.0 if planned <= avail else avail / planned


@numba.njit(parallel=True, cache=True, error_model="numpy")  # no ZeroDivisionError branch: loops vectorise
def _halos_nb(z, h, qx, qy, n2, qx_edges, qy_edges, starts, halo_qy, halo_factor, dx, dt, h_min, c, rain):
    """For each block of rows, what it needs from its neighbours' rows: the discharge on its first
    and last face row and the outflow factor of the rows just outside. Worked out from the old
    state before any block writes, so the blocks of the main pass never read each other's rows."""  # pragma: no cover
    ny, nx = h.shape
    gdt = G * dt
    gdt_dx = gdt / dx
    for k in numba.prange(len(starts) - 1):
        a, b = starts[k], starts[k + 1]
        qx_row = np.empty(nx + 1)
        qy_other = np.empty(nx)
        _qy_face_row(z, h, qy, n2, qy_edges, a, halo_qy[k, 0], gdt_dx, gdt, h_min)
        _qy_face_row(z, h, qy, n2, qy_edges, b, halo_qy[k, 1], gdt_dx, gdt, h_min)
        if a > 0:
            _qx_row(z, h, qx, n2, qx_edges, a - 1, qx_row, gdt_dx, gdt, h_min)
            _qy_face_row(z, h, qy, n2, qy_edges, a - 1, qy_other, gdt_dx, gdt, h_min)
            _factor_row(h, a - 1, qx_row, qy_other, halo_qy[k, 0], halo_factor[k, 0], c, rain)
        else:
            halo_factor[k, 0, :] = 1.0  # inflow over the grid's edge is not limited
        if b < ny:
            _qx_row(z, h, qx, n2, qx_edges, b, qx_row, gdt_dx, gdt, h_min)
            _qy_face_row(z, h, qy, n2, qy_edges, b + 1, qy_other, gdt_dx, gdt, h_min)
            _factor_row(h, b, qx_row, halo_qy[k, 1], qy_other, halo_factor[k, 1], c, rain)
        else:
            halo_factor[k, 1, :] = 1.0


@numba.njit(inline="always")
def _update_row(
    h, qx, qy, i, fx, fn, fs, above_f, here_f, below_f, padded, limited, spent, c, rain, sink, dt,
    threshold, max_depth, time_above,
):  # fmt: skip  # pragma: no cover - compiled
    """Scale each face's discharge by the factor of the cell it leaves, then update row i's depths.
    Branch-free selects and no reductions, so both loops vectorise."""
    ny, nx = h.shape
    padded[1 : nx + 1] = here_f
    for j in range(nx + 1):
        q = fx[j]
        q *= padded[j] if q > 0.0 else padded[j + 1]
        limited[j] = q
        qx[i, j] = q
    for j in range(nx):
        f = here_f[j]
        n = fn[j]
        n *= above_f[j] if n > 0.0 else f
        s = fs[j]
        s *= f if s > 0.0 else below_f[j]
        qy[i, j] = n
        hn = max(h[i, j] + rain + (limited[j] - limited[j + 1] + n - s) * c, 0.0)
        d = min(hn, sink)
        spent[j] = d
        hn -= d
        h[i, j] = hn
        max_depth[i, j] = max(max_depth[i, j], hn)
        time_above[i, j] += dt if hn > threshold[i, j] else 0.0
    if i == ny - 1:
        for j in range(nx):
            s = fs[j]
            qy[ny, j] = s * (here_f[j] if s > 0.0 else 1.0)


@numba.njit(parallel=True, cache=True, error_model="numpy")  # no ZeroDivisionError branch: loops vectorise
def _step_nb(
    z, h, qx, qy, n2, qx_edges, qy_edges, starts, halo_qy, halo_factor, dx, dt, h_min, c, rain, sink,
    threshold, max_depth, time_above, rowmax, rowdrained,
):  # fmt: skip  # pragma: no cover - compiled
    """One whole step (fluxes, outflow limits, depth update) in a single sweep per block of rows.

    Each block rolls through its rows keeping only the face rows and factor rows around the
    current one, so the grid is read and written once per step instead of three times."""
    ny, nx = h.shape
    gdt = G * dt
    gdt_dx = gdt / dx
    for k in numba.prange(len(starts) - 1):
        a, b = starts[k], starts[k + 1]
        qx_rows = np.empty((2, nx + 1))  # row r at r % 2
        qy_rows = np.empty((3, nx))  # face r at r % 3
        factors = np.empty((3, nx))  # row r at r % 3
        padded = np.ones(nx + 2)  # the current row's factors between ghost cells that give freely
        limited = np.empty(nx + 1)
        spent = np.empty(nx)
        qy_rows[a % 3, :] = halo_qy[k, 0]
        factors[(a + 2) % 3, :] = halo_factor[k, 0]
        _qx_row(z, h, qx, n2, qx_edges, a, qx_rows[a % 2], gdt_dx, gdt, h_min)
        if a + 1 < b:
            _qy_face_row(z, h, qy, n2, qy_edges, a + 1, qy_rows[(a + 1) % 3], gdt_dx, gdt, h_min)
        else:
            qy_rows[(a + 1) % 3, :] = halo_qy[k, 1]
        _factor_row(h, a, qx_rows[a % 2], qy_rows[a % 3], qy_rows[(a + 1) % 3], factors[a % 3], c, rain)
        for i in range(a, b):
            below = (i + 1) % 3
            if i + 1 < b:
                _qx_row(z, h, qx, n2, qx_edges, i + 1, qx_rows[(i + 1) % 2], gdt_dx, gdt, h_min)
                if i + 2 < b:
                    _qy_face_row(z, h, qy, n2, qy_edges, i + 2, qy_rows[(i + 2) % 3], gdt_dx, gdt, h_min)
                else:
                    qy_rows[(i + 2) % 3, :] = halo_qy[k, 1]
                _factor_row(
                    h, i + 1, qx_rows[(i + 1) % 2], qy_rows[(i + 1) % 3], qy_rows[(i + 2) % 3], factors[below], c, rain
                )
            else:
                factors[below, :] = halo_factor[k, 1]
            fx = qx_rows[i % 2]
            fn = qy_rows[i % 3]
            fs = qy_rows[(i + 1) % 3]
            above_f = factors[(i + 2) % 3]
            here_f = factors[i % 3]
            below_f = factors[below]
            _update_row(
                h, qx, qy, i, fx, fn, fs, above_f, here_f, below_f, padded, limited, spent, c, rain, sink, dt,
                threshold, max_depth, time_above,
            )  # fmt: skip
            top = 0.0
            for j in range(nx):
                top = max(top, h[i, j])
            rowmax[i] = top
            drained = 0.0
            if sink > 0.0:
                for j in range(nx):
                    drained += spent[j]
            rowdrained[i] = drained


@numba.njit(cache=True)
def _inlets_nb(hflat, cells, capacity_depth_rate, dt):  # pragma: no cover - compiled
    total = 0.0
    for k in range(len(cells)):
        c = cells[k]
        d = min(hflat[c], capacity_depth_rate[k] * dt)
        hflat[c] -= d
        total += d
    return total


# ----- numpy reference ----------------------------------------------------------------------


def rcbrt_np(x: np.ndarray) -> np.ndarray:
    """x^(−1/3) exactly as the numba kernel computes it (same guess, same Newton steps)."""
    bits = np.asarray(x, dtype=np.float32).view(np.int32)
    y = (np.int32(RCBRT_MAGIC) - bits // np.int32(3)).view(np.float32).astype(np.float64)
    for _ in range(RCBRT_STEPS):
        y = y * (4.0 - x * y * y * y) * THIRD
    return y


def friction_np(hs: np.ndarray) -> np.ndarray:
    """hs^(−7/3), the depth factor of Manning friction."""
    y = rcbrt_np(hs)
    y2 = y * y
    return y2 * y2 * y2 * y


def face_np(zl, hl, zr, hr, q0, n2, dx: float, dt: float, h_min: float) -> np.ndarray:
    """The momentum update on faces, vectorised (the reference for the numba kernel)."""
    gdt = G * dt
    gdt_dx = gdt / dx
    el = zl + hl
    er = zr + hr
    hf = np.maximum(el, er) - np.maximum(zl, zr)
    wet = hf > h_min
    hs = np.where(wet, hf, 1.0)
    q = (q0 - gdt_dx * hf * (er - el)) / (1.0 + gdt * n2 * np.abs(q0) * friction_np(hs))
    return np.where(wet, q, 0.0)


def _fluxes_np(z, h, qx, qy, qx_new, qy_new, n2, dx, dt, h_min) -> None:
    qx_new[:, 1:-1] = face_np(
        z[:, :-1], h[:, :-1], z[:, 1:], h[:, 1:], qx[:, 1:-1], 0.5 * (n2[:, :-1] + n2[:, 1:]), dx, dt, h_min
    )
    qy_new[1:-1, :] = face_np(
        z[:-1, :], h[:-1, :], z[1:, :], h[1:, :], qy[1:-1, :], 0.5 * (n2[:-1, :] + n2[1:, :]), dx, dt, h_min
    )


def _limit_np(h, qx_new, qy_new, factor, c, rain) -> None:
    out = (
        np.maximum(qx_new[:, 1:], 0.0)
        - np.minimum(qx_new[:, :-1], 0.0)
        + np.maximum(qy_new[1:, :], 0.0)
        - np.minimum(qy_new[:-1, :], 0.0)
    ) * c
    avail = h + rain
    np.divide(avail, out, out=factor, where=out > avail)
    factor[out <= avail] = 1.0


def _update_np(h, qx_new, qy_new, qx, qy, factor, c, rain, sink, dt, threshold, max_depth, time_above) -> float:
    pad_x = np.pad(factor, ((0, 0), (1, 1)), constant_values=1.0)
    pad_y = np.pad(factor, ((1, 1), (0, 0)), constant_values=1.0)
    qx[:] = qx_new * np.where(qx_new > 0.0, pad_x[:, :-1], pad_x[:, 1:])
    qy[:] = qy_new * np.where(qy_new > 0.0, pad_y[:-1, :], pad_y[1:, :])
    hn = h + rain + (qx[:, :-1] - qx[:, 1:] + qy[:-1, :] - qy[1:, :]) * c
    np.maximum(hn, 0.0, out=hn)
    drained = 0.0
    if sink > 0.0:
        d = np.minimum(hn, sink)
        hn -= d
        drained = float(d.sum())
    h[:] = hn
    np.maximum(max_depth, hn, out=max_depth)
    time_above[hn > threshold] += dt
    return drained


# ----- boundaries (shared) ------------------------------------------------------------------


def _line(side: str, arr: np.ndarray, k: int) -> np.ndarray:
    """Row or column `k` counted inwards from a side (0 = the edge itself)."""
    if side == "west":
        return arr[:, k]
    if side == "east":
        return arr[:, -1 - k]
    if side == "north":
        return arr[k, :]
    return arr[-1 - k, :]


def _edge(side: str, arr: np.ndarray) -> np.ndarray:
    return _line(side, arr, 0)


def _inner(side: str, arr: np.ndarray) -> np.ndarray:
    return _line(side, arr, 1)


def _face_view(side: str, qx: np.ndarray, qy: np.ndarray) -> np.ndarray:
    return _line(side, qx if side in ("west", "east") else qy, 0)


OUTWARD = {"west": -1.0, "east": 1.0, "north": -1.0, "south": 1.0}


@dataclass
class _Side:
    """Views on one side's edge cells and faces, made once per run (the arrays change in place)."""

    name: str
    mode: BoundarySpec
    sign: float
    z: np.ndarray
    h: np.ndarray
    n2: np.ndarray
    q: np.ndarray
    q_new: np.ndarray
    slope: np.ndarray


class _Boundaries:
    def __init__(self, modes: dict[str, BoundarySpec], min_slope: float) -> None:
        self.modes = modes
        self.min_slope = min_slope
        self.sides: list[_Side] = []

    def bind(self, z, h, qx, qy, qx_new, qy_new, n2, dx) -> None:
        """Closed faces stay at zero and need no work; the others get their views."""
        self.sides = []
        for side, mode in self.modes.items():
            if mode == "closed":
                continue
            across = 1 if side in ("west", "east") else 0
            ze = _edge(side, z)
            inner = (_inner(side, z) - ze) / dx if z.shape[across] > 1 else np.zeros(ze.shape)
            self.sides.append(
                _Side(
                    side, mode, OUTWARD[side], ze, _edge(side, h), _edge(side, n2),
                    _face_view(side, qx, qy), _face_view(side, qx_new, qy_new), np.maximum(inner, self.min_slope),
                )
            )  # fmt: skip
        self._flows = [(s.q, s.sign) for s in self.sides]

    def fluxes(self, t: float, dx: float, dt: float, h_min: float) -> None:
        for s in self.sides:
            if s.mode == "open":  # free outflow at normal depth on the local bed slope
                qo = np.maximum(s.sign * s.q, 0.0)
                wet = s.h > h_min
                hs = np.where(wet, s.h, 1.0)
                q = (qo + G * s.h * dt * s.slope) / (1.0 + G * dt * s.n2 * qo * friction_np(hs))
                s.q_new[:] = s.sign * np.where(wet, np.maximum(q, 0.0), 0.0)
            else:  # a ghost cell outside holding the given depth on the edge cell's bed
                hb = np.full(s.z.shape, max(float(s.mode(t)), 0.0))
                if s.sign < 0:
                    s.q_new[:] = face_np(s.z, hb, s.z, s.h, s.q, s.n2, dx, dt, h_min)
                else:
                    s.q_new[:] = face_np(s.z, s.h, s.z, hb, s.q, s.n2, dx, dt, h_min)

    def net_out(self) -> tuple[float, float]:
        """Outflow and inflow rates through the open sides per unit Δx (m²/s summed)."""
        out = into = 0.0
        for q, sign in self._flows:
            flows = sign * q
            out += float(flows[flows > 0].sum())
            into -= float(flows[flows < 0].sum())
        return out, into


def _boundaries(boundary: BoundarySpec | dict[str, BoundarySpec], min_slope: float) -> _Boundaries:
    spec = boundary if isinstance(boundary, dict) else dict.fromkeys(SIDES, boundary)
    unknown = set(spec) - set(SIDES)
    if unknown:
        raise InvalidInput(f"unknown boundary side(s) {sorted(unknown)}; sides are {', '.join(SIDES)}")
    modes = {side: spec.get(side, "closed") for side in SIDES}
    for side, mode in modes.items():
        if not callable(mode) and mode not in ("open", "closed"):
            raise InvalidInput(f"boundary {side!r} must be 'open', 'closed' or a depth function of time")
    return _Boundaries(modes, min_slope)


# ----- the run ------------------------------------------------------------------------------


@contextmanager
def _threads(count: int) -> Iterator[None]:
    previous = numba.get_num_threads()
    numba.set_num_threads(count)
    try:
        yield
    finally:
        numba.set_num_threads(previous)


def _row_blocks(rows: int, threads: int) -> np.ndarray:
    """Row ranges the step sweeps in parallel: a few per thread so an uneven wet area still
    spreads over the threads, yet long enough that the halo rows each block recomputes are few."""
    blocks = 1 if threads <= 1 else min(rows, threads * BLOCKS_PER_THREAD, max(rows // MIN_BLOCK_ROWS, threads))
    return np.linspace(0, rows, blocks + 1).round().astype(np.int64)


def _grid(values: float | np.ndarray, shape: tuple[int, int], what: str) -> np.ndarray:
    array = np.broadcast_to(np.asarray(values, dtype=np.float64), shape)
    if not np.all(np.isfinite(array)) or np.any(array < 0):
        raise InvalidInput(f"{what} must be finite and not negative")
    return np.ascontiguousarray(array)


def simulate(
    z: np.ndarray,
    dx: float,
    rain: Hyetograph | None,
    *,
    duration_s: float | None = None,
    manning: float | np.ndarray = 0.035,
    inlets: Inlets | None = None,
    drain_rate_mm_h: float = 0.0,
    boundary: BoundarySpec | dict[str, BoundarySpec] = "open",
    h0: np.ndarray | None = None,
    alpha: float = 0.7,
    dt_max: float = 10.0,
    h_min: float = 1e-3,
    min_slope: float = 1e-3,
    threshold_m: float | np.ndarray = 0.15,
    probes: Sequence[tuple[int, int]] = (),
    record_every_s: float = 60.0,
    frame_every_s: float | None = None,
    backend: Backend = "numba",
    progress: Progress | None = None,
    cancel: Callable[[], bool] | None = None,
    exchange: Exchange | None = None,
) -> SurfaceResult:
    """Run the surface model on bed `z` (rows north to south, square cells of `dx` metres).

    `rain` falls on every cell; `inlets` take water up to their capacity and `drain_rate_mm_h`
    takes up to that rate from every cell (a design drainage capacity where inlets are unknown).
    `boundary` is 'open' (free outflow), 'closed', or per side a depth function h(t) for a
    ghost cell outside. `probes` are (row, col) cells whose depth is recorded every
    `record_every_s`; `frame_every_s` keeps whole depth grids (float32) for animation.
    `exchange` trades water with a sewer model at step ends (see `Exchange`).
    """
    z = np.ascontiguousarray(z, dtype=np.float64)
    if z.ndim != 2 or min(z.shape) < 1:
        raise InvalidInput("the bed must be a 2D grid")
    if not np.all(np.isfinite(z)):
        raise InvalidInput("the bed holds non-finite heights (nodata?): fill or crop the DEM first")
    if not dx > 0:
        raise InvalidInput(f"cell size must be positive, got {dx}")
    if duration_s is None:
        if rain is None:
            raise InvalidInput("give a duration when there is no rain")
        duration_s = rain.duration_s
    if not duration_s > 0:
        raise InvalidInput(f"simulation duration must be positive, got {duration_s} s")
    if backend not in ("numba", "numpy"):
        raise InvalidInput(f"unknown backend {backend!r}; use 'numba' or 'numpy'")
    if not 0 < alpha <= 1:
        raise InvalidInput("alpha (the time-step factor) must be in (0, 1]")
    shape = z.shape
    ny, nx = shape
    area = dx * dx
    n2 = _grid(manning, shape, "Manning n") ** 2
    threshold = _grid(threshold_m, shape, "depth threshold")
    h = np.zeros(shape) if h0 is None else _grid(h0, shape, "initial depth").copy()
    edges = _boundaries(boundary, min_slope)
    if inlets is not None:
        inlet_cells, inlet_cap = inlets.merged(shape)
    else:
        inlet_cells, inlet_cap = np.zeros(0, np.int64), np.zeros(0)
    inlet_rate = inlet_cap / area  # m/s of depth each inlet cell can lose
    sink_rate = max(float(drain_rate_mm_h), 0.0) / 3.6e6
    probe_rc = np.asarray(probes, dtype=np.int64).reshape(-1, 2)
    if len(probe_rc) and (np.any(probe_rc < 0) or np.any(probe_rc >= np.array(shape))):
        raise InvalidInput("a probe lies outside the grid")

    qx, qy = np.zeros((ny, nx + 1)), np.zeros((ny + 1, nx))
    qx_new, qy_new = np.zeros_like(qx), np.zeros_like(qy)
    factor = np.ones(shape)
    max_depth = h.copy()
    time_above = np.zeros(shape)
    rowmax, rowdrained = np.zeros(ny), np.zeros(ny)
    mass = MassBalance(initial_storage=float(h.sum()) * area)
    hflat = h.reshape(-1)
    edges.bind(z, h, qx, qy, qx_new, qy_new, n2, dx)
    numba_path = backend == "numba"

    times: list[float] = [0.0]
    series: list[np.ndarray] = [h.reshape(-1)[probe_rc[:, 0] * nx + probe_rc[:, 1]].copy()]
    frames: list[tuple[float, np.ndarray]] = [(0.0, h.astype(np.float32))] if frame_every_s else []
    next_record = record_every_s
    next_frame = frame_every_s or np.inf
    next_report = 0.0
    next_exchange = 0.0 if exchange is None else max(float(exchange.every_s), 0.0)
    h_top = float(h.max())
    t = 0.0
    steps = 0
    start = time.perf_counter()
    last_check = start
    threads = 1 if h.size < PARALLEL_MIN_CELLS else numba.get_num_threads()  # hand-offs cost more than they save
    starts = _row_blocks(ny, threads)
    halo_qy = np.zeros((len(starts) - 1, 2, nx))
    halo_factor = np.ones((len(starts) - 1, 2, nx))
    with _threads(threads):
        while t < duration_s - 1e-9:
            dt = dt_max if h_top <= 1e-9 else min(dt_max, alpha * dx / np.sqrt(G * h_top))
            dt = min(dt, duration_s - t)  # records fall on step ends: cutting steps short to hit them
            # would break the staggered (leapfrog) timing of q and h and pump energy into seiches
            rain_depth = rain.depth_between_m(t, t + dt) if rain is not None else 0.0
            if len(inlet_cells):
                mass.drained += _inlets_nb(hflat, inlet_cells, inlet_rate, dt) * area
            c = dt / dx
            if not numba_path:
                _fluxes_np(z, h, qx, qy, qx_new, qy_new, n2, dx, dt, h_min)
            edges.fluxes(t, dx, dt, h_min)
            if numba_path:
                args = (z, h, qx, qy, n2, qx_new, qy_new, starts, halo_qy, halo_factor, dx, dt, h_min, c, rain_depth)
                _halos_nb(*args)
                _step_nb(*args, sink_rate * dt, threshold, max_depth, time_above, rowmax, rowdrained)
                drained = float(rowdrained.sum())
                h_top = float(rowmax.max())
            else:
                _limit_np(h, qx_new, qy_new, factor, c, rain_depth)
                drained = _update_np(
                    h, qx_new, qy_new, qx, qy, factor, c, rain_depth, sink_rate * dt, dt, threshold,
                    max_depth, time_above,
                )  # fmt: skip
                h_top = float(h.max())
            out_rate, in_rate = edges.net_out()
            mass.rain_in += rain_depth * h.size * area
            mass.drained += drained * area
            mass.outflow += out_rate * dt * dx
            mass.boundary_in += in_rate * dt * dx
            t += dt
            steps += 1
            if exchange is not None and t >= next_exchange - 1e-9:
                removed, added = exchange(t, h)
                mass.to_sewer += removed
                mass.from_sewer += added
                if added > 0.0:  # new water: the next step's CFL limit and the maxima must see it
                    h_top = float(h.max())
                    np.maximum(max_depth, h, out=max_depth)
                next_exchange = t + max(float(exchange.every_s), 0.0)
            if t >= next_record or t >= duration_s - 1e-9:
                times.append(t)
                series.append(hflat[probe_rc[:, 0] * nx + probe_rc[:, 1]].copy())
                next_record += record_every_s * max(1.0, np.ceil((t - next_record) / record_every_s))
            if t >= next_frame:
                frames.append((t, h.astype(np.float32)))
                next_frame += frame_every_s * max(1.0, np.ceil((t - next_frame) / frame_every_s))
            now = time.perf_counter()
            if now - last_check > 0.2:
                last_check = now
                if cancel is not None and cancel():
                    raise Cancelled("flood run cancelled")
                if progress is not None and t >= next_report:
                    progress(t / duration_s, f"simulated {t / 60:.1f} of {duration_s / 60:.1f} min")
                    next_report = t + duration_s / 100
    mass.final_storage = float(h.sum()) * area
    if progress is not None:
        progress(1.0, "surface model done")
    return SurfaceResult(
        depth=h,
        max_depth=max_depth,
        time_above_s=time_above,
        threshold_m=threshold,
        mass=mass,
        simulated_s=t,
        steps=steps,
        wall_s=time.perf_counter() - start,
        backend=backend,
        probe_times_s=np.asarray(times),
        probe_depths=np.array(series).T.reshape(len(probe_rc), len(times)),
        frames=frames,
    )
