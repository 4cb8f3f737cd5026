"""Connections of ended threads are closed: a server whose thread pool retires idle threads (as
AnyIO's does) must not gather a connection per thread it ever ran."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from twin.per_thread import PerThread


def run_in_threads(count: int, work) -> None:
    """`count` threads one after another, each doing `work` once and ending."""
    for _ in range(count):
        thread = threading.Thread(target=work)
        thread.start()
        thread.join()


def test_resources_of_ended_threads_are_closed_when_the_next_opens():
    opened, closed = [], []

    def opener() -> int:
        opened.append(len(opened))
        return opened[-1]

    pool = PerThread(opener, closed.append)
    run_in_threads(20, pool.get)
    assert len(opened) == 20 and closed == list(range(19))  # all but the last thread's
    assert len(pool) == 1
    mine = pool.get()
    assert pool.get() == mine and closed == list(range(20)) and len(pool) == 1
    pool.discard()
    assert closed[-1] == mine and pool.current() is None
    pool.close_all()
    assert len(pool) == 0


def test_a_store_keeps_no_connection_of_an_ended_thread(store):
    store.list_layers()
    before = len(store._connections)  # this thread's
    seen = []

    def query() -> None:
        store.list_layers()
        seen.append(store._connections.current())

    run_in_threads(15, query)
    assert len(seen) == 15 and len(set(map(id, seen))) == 15
    assert len(store._connections) == before + 1  # only the last ended thread's is left, until the next opens
    run_in_threads(1, query)
    assert len(store._connections) == before + 1
    for con in seen[:-1]:
        if isinstance(con, sqlite3.Connection):
            with pytest.raises(sqlite3.ProgrammingError, match="closed"):
                con.execute("SELECT 1")
        else:
            assert con.closed
