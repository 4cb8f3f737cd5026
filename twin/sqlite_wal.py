"""SQLite files shared by threads and processes (the GeoPackage store, the tile cache).

WAL lets readers go on while one writer writes; writes take the lock up front (`BEGIN
IMMEDIATE`) so two writers wait for each other instead of failing half-way.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def connect(path: Path) -> sqlite3.Connection:
    """An autocommit connection in WAL mode; sqlite3.DatabaseError when the file is not SQLite."""
    con = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    try:
        con.execute("PRAGMA journal_mode=WAL")
    except sqlite3.DatabaseError:
        con.close()
        raise
    con.execute("PRAGMA synchronous=NORMAL")
    return con


@contextmanager
def immediate(con: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction: committed at the end, rolled back on any error."""
    con.execute("BEGIN IMMEDIATE")
    try:
        yield con
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")
