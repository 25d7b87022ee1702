"""Reading the whole index as one snapshot, in batches: what an export needs of the database.

An export reads many tables one after the other while `indexer index` may be writing; a
read transaction makes every table come from the same moment (SQLite: one read
transaction on the WAL; PostgreSQL: REPEATABLE READ). Large tables are streamed in
batches of rows (PostgreSQL: a server-side cursor, or the driver would fetch all of it).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection

from ..errors import DatabaseError

_cursor_names = itertools.count()
_DRIVER_MODULES = ("sqlite3", "psycopg", "_sqlite3")


@contextmanager
def read_snapshot(conn: Connection) -> Iterator[None]:
    """Run the block in one read-only transaction that sees one state of the index."""
    if conn.in_transaction():
        conn.rollback()
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
    else:
        # pysqlite opens no transaction for SELECTs by itself: each would see its own state.
        conn.exec_driver_sql("BEGIN")
        # SQLite fixes a read transaction's snapshot at its first read.
        conn.exec_driver_sql("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
    try:
        yield
    finally:
        conn.rollback()


def placeholder(conn: Connection) -> str:
    """The driver's parameter mark (`?` for sqlite3, `%s` for psycopg)."""
    return "%s" if conn.dialect.paramstyle in ("format", "pyformat") else "?"


def stream_rows(
    conn: Connection, query: str, params: Sequence[Any] = (), batch: int = 100_000
) -> Iterator[list[tuple[Any, ...]]]:
    """The rows of `query` in lists of at most `batch`, by the driver's own cursor (inside the
    snapshot's transaction); at most one batch is held in memory."""
    raw: Any = conn.connection.driver_connection
    if conn.dialect.name == "postgresql":
        cursor = raw.cursor(name=f"indexer_export_{next(_cursor_names)}")
        cursor.itersize = batch
    else:
        cursor = raw.cursor()
    try:
        cursor.execute(query, tuple(params))
        while True:
            rows = cursor.fetchmany(batch)
            if not rows:
                return
            yield rows
    except Exception as err:  # the driver's own (its cursor is used without SQLAlchemy)
        if type(err).__module__.split(".")[0] not in _DRIVER_MODULES:
            raise
        message = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise DatabaseError(f"cannot read the index: {message}") from None
    finally:
        cursor.close()
