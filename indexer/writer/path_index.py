"""The path index on the element rows (schema: ix_elements_path_id), dropped for a first run and
built once at its end.

A search on any attribute reads the rows of that attribute's paths through this index. Kept
up to date row by row it would slow a large first run (each batch touches thousands of its
pages, one per path); one sorted build at the end is much faster. So a run into an empty
elements table drops it, and every completed run builds it when it is missing: a run stopped
or killed before that leaves it missing (searches then read the whole table, slower, the same
answers), and the next run to complete builds it. The build watches for SIGINT/SIGTERM and
cancels its statement, so a stop still takes effect within a second.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, Engine, inspect, select, text

from ..backends.base import Backend
from ..db import ddl_lock
from ..schema import elements

NAME = "ix_elements_path_id"
# IF NOT EXISTS: another run may have built it since this one looked.
_CREATE = f"CREATE INDEX IF NOT EXISTS {NAME} ON elements (path_id)"
_POLL_S = 0.1  # how often the build looks for a stop


def present(engine: Engine) -> bool:
    with engine.connect() as conn:
        return _present(conn)


def _present(conn: Connection) -> bool:
    return any(ix["name"] == NAME for ix in inspect(conn).get_indexes("elements"))


def drop_for_first_run(engine: Engine) -> bool:
    """Drop the index when no element row is stored yet (it is built at the run's end)."""
    with engine.begin() as conn:
        ddl_lock(conn)
        if not _present(conn):
            return False
        if conn.execute(select(elements.c.file_id).limit(1)).first() is not None:
            return False
        # IF EXISTS: on SQLite the check above and this statement are not one transaction
        # (the driver runs DDL outside one), and another run may have dropped it meanwhile.
        conn.execute(text(f"DROP INDEX IF EXISTS {NAME}"))
        return True


def build_if_missing(
    engine: Engine,
    backend: Backend,
    stop_check: Callable[[], None],
    starting: Callable[[], None] | None = None,
) -> float | None:
    """Build the index if it is missing; its seconds, or None when it was there.

    The statement runs in a thread while this one calls `stop_check` (which raises on a stop):
    the statement is then cancelled, its transaction rolls back, and the stop is raised."""
    if present(engine):
        return None
    if starting is not None:
        starting()
    started = time.perf_counter()
    outcome: list[BaseException | None] = []
    stopping = threading.Event()
    with engine.connect() as conn:
        dbapi_connection = conn.connection.dbapi_connection

        def build() -> None:
            try:
                if conn.dialect.name == "sqlite":
                    _build_sqlite(dbapi_connection, stopping)
                else:
                    with conn.begin():
                        ddl_lock(conn)
                        conn.execute(text(_CREATE))
                outcome.append(None)
            except BaseException as err:  # handed to the caller's thread
                outcome.append(err)

        builder = threading.Thread(target=build, name="path-index", daemon=True)
        builder.start()
        try:
            while builder.is_alive():
                stop_check()
                builder.join(_POLL_S)
        except BaseException:
            stopping.set()
            while builder.is_alive():  # again until it takes: a cancel before the statement
                backend.cancel(dbapi_connection)  # starts is lost
                builder.join(_POLL_S)
            raise
    if outcome and outcome[0] is not None:
        raise outcome[0]
    return time.perf_counter() - started


def _build_sqlite(raw: Any, stopping: threading.Event) -> None:
    """SQLite: take the write lock first (BEGIN IMMEDIATE), in short waits that look for a
    stop, then build the index if it is still missing, in that one transaction. The driver
    runs DDL outside any transaction, and its busy wait (60 s) heeds no interrupt: another
    run building the index at the same moment would make this one fail ("already exists",
    or "locked" after a minute), and a stop would wait out the minute."""
    (previous,) = raw.execute("PRAGMA busy_timeout").fetchone()
    raw.execute(f"PRAGMA busy_timeout={round(_POLL_S * 1000)}")
    try:
        while True:
            try:
                raw.execute("BEGIN IMMEDIATE")
                break
            except sqlite3.OperationalError as err:
                if "locked" not in str(err) and "busy" not in str(err):
                    raise
                if stopping.is_set():
                    return  # the caller raises the stop
        try:
            raw.execute(_CREATE)
            raw.commit()
        except BaseException:
            raw.rollback()
            raise
    finally:
        with contextlib.suppress(sqlite3.Error):  # an interrupt meant for the build: stopping
            raw.execute(f"PRAGMA busy_timeout={int(previous)}")
