"""Prometheus metrics in a few lines: counters, gauges and histograms with labels, and the text
exposition format (version 0.0.4) that `/metrics` serves.

Any module counts what it does with the metrics defined here, e.g. a tile cache:

    from twin import metrics
    metrics.TILE_CACHE.inc(result="hit")

Values live in the process; with several API worker processes each scrape reads the worker that
answers (the `pid` in `twin_process_info` says which), as with any multi-process server without a
shared registry.
"""

from __future__ import annotations

import math
import os
import threading
from bisect import bisect_left
from collections.abc import Callable, Iterable

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
JOB_BUCKETS = (0.1, 1.0, 10.0, 60.0, 300.0, 1800.0, 7200.0)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: tuple[str, ...], values: tuple[str, ...], extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


class Metric:
    kind = "untyped"

    def __init__(self, name: str, help_text: str, labels: Iterable[str] = ()) -> None:
        self.name = name
        self.help = help_text
        self.label_names = tuple(labels)
        self._lock = threading.Lock()

    def _key(self, labels: dict[str, str]) -> tuple[str, ...]:
        """The label values in declared order (called on every request: kept to a few C calls)."""
        try:
            key = tuple(map(str, map(labels.__getitem__, self.label_names)))
        except KeyError:
            key = ()
        if len(key) != len(labels) or len(key) != len(self.label_names):
            raise ValueError(f"{self.name} takes labels {self.label_names}, got {tuple(labels)}")
        return key

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]

    def samples(self) -> list[str]:
        raise NotImplementedError


class Counter(Metric):
    """A count that only goes up (requests, cache hits)."""

    kind = "counter"

    def __init__(self, name: str, help_text: str, labels: Iterable[str] = ()) -> None:
        super().__init__(name, help_text, labels)
        self._values: dict[tuple[str, ...], float] = {}

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        return self._values.get(self._key(labels), 0.0)

    def samples(self) -> list[str]:
        with self._lock:
            items = sorted(self._values.items())
        return [f"{self.name}{_labels(self.label_names, k)} {_number(v)}" for k, v in items]


class Gauge(Metric):
    """A value read when scraped (`function` returns {label values: value}) or set directly."""

    kind = "gauge"

    def __init__(
        self,
        name: str,
        help_text: str,
        labels: Iterable[str] = (),
        function: Callable[[], dict[tuple[str, ...], float]] | None = None,
    ) -> None:
        super().__init__(name, help_text, labels)
        self._values: dict[tuple[str, ...], float] = {}
        self.function = function

    def set(self, value: float, **labels: str) -> None:
        with self._lock:
            self._values[self._key(labels)] = value

    def samples(self) -> list[str]:
        values = dict(self._values)
        if self.function is not None:
            values.update(self.function())
        return [f"{self.name}{_labels(self.label_names, k)} {_number(v)}" for k, v in sorted(values.items())]


class Histogram(Metric):
    """Observations counted into cumulative buckets, with their sum and count (latencies)."""

    kind = "histogram"

    def __init__(
        self, name: str, help_text: str, labels: Iterable[str] = (), buckets: Iterable[float] = LATENCY_BUCKETS
    ) -> None:
        super().__init__(name, help_text, labels)
        self.buckets = tuple(sorted(buckets))
        self._counts: dict[tuple[str, ...], list[int]] = {}
        self._sums: dict[tuple[str, ...], float] = {}

    def observe(self, value: float, **labels: str) -> None:
        key = self._key(labels)
        index = bisect_left(self.buckets, value)
        with self._lock:
            counts = self._counts.setdefault(key, [0] * (len(self.buckets) + 1))
            counts[index] += 1
            self._sums[key] = self._sums.get(key, 0.0) + value

    def count(self, **labels: str) -> int:
        return sum(self._counts.get(self._key(labels), []))

    def samples(self) -> list[str]:
        with self._lock:
            items = sorted((k, list(v), self._sums[k]) for k, v in self._counts.items())
        lines = []
        for key, counts, total in items:
            running = 0
            for bound, count in zip((*self.buckets, math.inf), counts, strict=True):
                running += count
                le = f'le="{_number(bound)}"'
                lines.append(f"{self.name}_bucket{_labels(self.label_names, key, le)} {running}")
            lines.append(f"{self.name}_sum{_labels(self.label_names, key)} {_number(total)}")
            lines.append(f"{self.name}_count{_labels(self.label_names, key)} {running}")
        return lines


class Registry:
    def __init__(self) -> None:
        self.metrics: dict[str, Metric] = {}

    def register(self, metric: Metric) -> Metric:
        self.metrics[metric.name] = metric
        return metric

    def render(self) -> str:
        lines: list[str] = []
        for metric in self.metrics.values():
            samples = metric.samples()
            lines += metric.header() + samples
        return "\n".join(lines) + "\n"


REGISTRY = Registry()


def counter(name: str, help_text: str, labels: Iterable[str] = ()) -> Counter:
    return REGISTRY.register(Counter(name, help_text, labels))  # type: ignore[return-value]


def histogram(name: str, help_text: str, labels: Iterable[str] = (), buckets: Iterable[float] = LATENCY_BUCKETS):
    return REGISTRY.register(Histogram(name, help_text, labels, buckets))


def gauge(name: str, help_text: str, labels: Iterable[str] = (), function=None) -> Gauge:
    return REGISTRY.register(Gauge(name, help_text, labels, function))  # type: ignore[return-value]


def _resident_bytes() -> dict[tuple[str, ...], float]:
    try:
        with open("/proc/self/statm") as statm:
            return {(): float(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")}
    except (OSError, ValueError, IndexError):
        return {}


HTTP_REQUESTS = counter("twin_http_requests_total", "HTTP requests answered", ("method", "route", "status"))
HTTP_LATENCY = histogram("twin_http_request_duration_seconds", "Time to answer an HTTP request", ("method", "route"))
TILE_CACHE = counter("twin_tile_cache_total", "Tile cache look-ups by result (hit or miss)", ("result",))
JOBS_SUBMITTED = counter("twin_jobs_submitted_total", "Jobs submitted", ("kind",))
JOBS_FINISHED = counter("twin_jobs_finished_total", "Jobs ended, by final state", ("kind", "state"))
JOB_SECONDS = histogram("twin_job_duration_seconds", "Time a job ran", ("kind",), JOB_BUCKETS)
JOBS = gauge("twin_jobs", "Jobs in the job table, by state", ("state",))
STORE_UP = gauge("twin_store_up", "1 when the store answered the scrape's ping, else 0")
PROCESS_INFO = gauge(
    "twin_process_info", "The process answering this scrape", ("pid",), lambda: {(str(os.getpid()),): 1}
)
RESIDENT_MEMORY = gauge("process_resident_memory_bytes", "Resident memory of this process", (), _resident_bytes)
