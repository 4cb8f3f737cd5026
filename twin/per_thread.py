"""One resource per thread (a database connection), closed once its thread has ended.

Servers run blocking work on thread pools that retire idle threads and start new ones (AnyIO's
pool, behind FastAPI's sync endpoints, ends a thread after ten idle seconds). A store that opened
a connection per thread and kept them all until it closed would gather connections, with their
page caches and, for PostgreSQL, a server process each, for as long as it runs. Here the
resources of ended threads are closed whenever a new one is opened, so there are never many more
than live threads.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class PerThread(Generic[T]):
    """This thread's resource from `get()`, opened with `opener` on first use."""

    def __init__(self, opener: Callable[[], T], closer: Callable[[T], None]) -> None:
        self._opener = opener
        self._closer = closer
        self._local = threading.local()
        self._owned: dict[threading.Thread, T] = {}
        self._lock = threading.Lock()

    def get(self) -> T:
        item = getattr(self._local, "item", None)
        if item is None:
            self._close_ended()
            item = self._opener()
            self._local.item = item
            with self._lock:
                self._owned[threading.current_thread()] = item
        return item

    def current(self) -> T | None:
        """This thread's resource if it has one, without opening it."""
        return getattr(self._local, "item", None)

    def discard(self) -> None:
        """Close this thread's resource (it broke); the next `get()` opens a new one."""
        item = getattr(self._local, "item", None)
        self._local.item = None
        with self._lock:
            self._owned.pop(threading.current_thread(), None)
        if item is not None:
            self._close(item)

    def close_all(self) -> None:
        with self._lock:
            items = list(self._owned.values())
            self._owned.clear()
            self._local = threading.local()
        for item in items:
            self._close(item)

    def __len__(self) -> int:
        with self._lock:
            return len(self._owned)

    def _close_ended(self) -> None:
        with self._lock:
            ended = [thread for thread in self._owned if not thread.is_alive()]
            items = [self._owned.pop(thread) for thread in ended]
        for item in items:
            self._close(item)

    def _close(self, item: T) -> None:
        with contextlib.suppress(Exception):  # closing what is already broken must not fail the caller
            self._closer(item)
