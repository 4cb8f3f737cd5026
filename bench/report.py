"""Printing benchmark figures the same way everywhere, with the machine they ran on."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Sequence

import numpy as np


def machine() -> str:
    cpu = "unknown cpu"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            cpu = next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu}, {os.cpu_count()} cores, {memory:.0f} GiB, Python {platform.python_version()}"


def heading(title: str) -> None:
    print(f"\n== {title}", flush=True)


def line(name: str, value: str) -> None:
    print(f"  {name:<58} {value}", flush=True)


def timed(func: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    result = func()
    return time.perf_counter() - start, result


def latencies_ms(func: Callable[[object], object], inputs: Sequence[object]) -> np.ndarray:
    """Wall time of each call in milliseconds."""
    out = np.empty(len(inputs))
    for i, item in enumerate(inputs):
        start = time.perf_counter()
        func(item)
        out[i] = (time.perf_counter() - start) * 1000
    return out


def percentiles(values: np.ndarray) -> str:
    return f"p50 {np.percentile(values, 50):.2f} ms, p95 {np.percentile(values, 95):.2f} ms"
