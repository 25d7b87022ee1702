"""`indexer sql`: one read-only SQL statement on the index."""

from __future__ import annotations

import contextlib
import re
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal
from time import monotonic
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from ..db import first_line
from ..errors import IndexerError

_READ_KEYWORDS = {"SELECT", "WITH", "VALUES", "EXPLAIN", "TABLE", "SHOW", "PRAGMA"}
_COMMENTS = re.compile(r"\s*(--[^\n]*(\n|$)|/\*.*?\*/)", re.DOTALL)
_DRIVER_MODULES = ("sqlite3", "psycopg", "_sqlite3")


DEFAULT_TIMEOUT = 60.0  # seconds; `indexer sql --timeout`
MAX_VALUE_BYTES = 64 * 2**20  # SQLite: no string or blob in a query larger than this
_LIMIT_LENGTH = 0  # sqlite3.SQLITE_LIMIT_LENGTH (Python 3.11+)

# SQLite: the statements `sql` runs are checked by an authorizer (sqlite3_set_authorizer) at
# prepare time, so that whatever the first keyword, only reading passes. Pragmas that take
# a table or index name and only report; any other pragma given a value sets it (a write),
# and these act even without one.
_READ_PRAGMAS_WITH_ARGUMENT = {
    "table_info", "table_xinfo", "table_list", "index_info", "index_xinfo", "index_list",
    "foreign_key_list", "foreign_key_check", "integrity_check", "quick_check",
}  # fmt: skip
_ACTING_PRAGMAS = {"wal_checkpoint", "optimize", "incremental_vacuum", "shrink_memory"}
_READ_ACTIONS = {
    sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE,
}  # fmt: skip
# Named from the action list only: sqlite3's error codes share these numbers.
_ACTION_NAMES = {
    getattr(sqlite3, f"SQLITE_{name.replace(' ', '_')}"): name
    for name in (
        "INSERT", "UPDATE", "DELETE", "ATTACH", "DETACH", "TRANSACTION", "SAVEPOINT",
        "ANALYZE", "REINDEX", "ALTER TABLE", "CREATE TABLE", "CREATE INDEX", "CREATE VIEW",
        "CREATE TRIGGER", "CREATE VTABLE", "DROP TABLE", "DROP INDEX", "DROP VIEW",
        "DROP TRIGGER", "DROP VTABLE", "CREATE TEMP TABLE", "CREATE TEMP INDEX",
        "CREATE TEMP VIEW", "CREATE TEMP TRIGGER",
    )
}  # fmt: skip
_SCHEMA = ("sqlite_master", "sqlite_schema", "sqlite_temp_master")
_WRITE_REFUSED = "only reads are allowed in `indexer sql`"


class QueryError(IndexerError):
    """`indexer sql` refused or failed to run a query."""


class QueryTimeout(QueryError):
    """The statement ran longer than its time limit and was stopped."""


@dataclass
class QueryResult:
    columns: list[str]
    rows: list[tuple[Any, ...]]

    def records(self) -> list[dict[str, Any]]:
        """The rows as dicts; a repeated column name gets a suffix (_2, _3, ...)."""
        names: list[str] = []
        seen: dict[str, int] = {}
        for name in self.columns:
            seen[name] = seen.get(name, 0) + 1
            names.append(name if seen[name] == 1 else f"{name}_{seen[name]}")
        return [dict(zip(names, row, strict=True)) for row in self.rows]


def run_query(
    conn: Connection,
    query: str,
    *,
    timeout: float | None = DEFAULT_TIMEOUT,
    warn: Callable[[str], None] | None = None,
) -> QueryResult:
    """Run one read-only SQL statement and return its columns and rows.

    The connection is made read-only first (SQLite: PRAGMA query_only and an authorizer
    that lets only reads be prepared, on top of the read-only file mode of db.connect;
    PostgreSQL: a READ ONLY transaction), and the statement goes to the driver as one
    statement, which both drivers refuse to split (SQLite's execute; a prepared statement
    on PostgreSQL). Only statements that start with SELECT, WITH, VALUES, EXPLAIN, TABLE,
    SHOW or PRAGMA are accepted. `timeout` seconds bound the statement and the fetch of
    its rows (None or 0: no limit of ours); SQLite values are capped at MAX_VALUE_BYTES.
    `warn` hears, once, that a PostgreSQL session runs as a superuser (which a READ ONLY
    transaction does not stop from reading server files). Raises QueryTimeout when the
    time limit stops the statement, QueryError for a refused or failing statement.
    """
    text = query.strip()
    keyword = _first_keyword(text)
    if keyword not in _READ_KEYWORDS:
        shown = f"{keyword} is not a read query" if keyword else "not a read query"
        raise QueryError(
            f"{shown}: {_WRITE_REFUSED} (SELECT, WITH, VALUES, EXPLAIN, read-only PRAGMA, ...)"
        )
    limit = timeout if timeout and timeout > 0 else None
    guard = _Guard(limit)
    try:
        if conn.in_transaction():
            conn.rollback()
        _begin_read_only(conn, limit, warn)
        with guard.installed(conn):
            return _execute_one(conn, text)
    except (SQLAlchemyError, DBAPIError) as err:
        raise guard.explain(err, first_line(err)) from None
    except Exception as err:  # the driver's own errors (sqlite3.Error, psycopg.Error)
        if type(err).__module__.split(".")[0] in _DRIVER_MODULES:
            raise guard.explain(err, first_line(err)) from None
        raise
    finally:
        with contextlib.suppress(SQLAlchemyError):
            conn.rollback()


class _Guard:
    """SQLite: the time limit (a progress handler), the value size cap and the authorizer
    of one statement, and what they refused; PostgreSQL: the timeout's error told apart."""

    def __init__(self, limit: float | None) -> None:
        self.limit = limit
        self.deadline = 0.0
        self.timed_out = False
        self.refused: str | None = None

    @contextlib.contextmanager
    def installed(self, conn: Connection) -> Any:
        if conn.dialect.name != "sqlite":
            yield
            return
        raw = conn.connection.driver_connection
        assert isinstance(raw, sqlite3.Connection)
        setlimit = getattr(raw, "setlimit", None)  # Python 3.11+; 3.10 keeps SQLite's 1e9 bytes
        length = setlimit(_LIMIT_LENGTH, MAX_VALUE_BYTES) if setlimit else None
        raw.set_authorizer(self._authorize)
        if self.limit is not None:
            self.deadline = monotonic() + self.limit
            raw.set_progress_handler(self._progress, 10_000)  # ~1 ms of work between checks
        try:
            yield
        finally:
            raw.set_progress_handler(None, 0)
            raw.set_authorizer(None)
            if setlimit:
                setlimit(_LIMIT_LENGTH, length)

    def _progress(self) -> int:
        if monotonic() > self.deadline:
            self.timed_out = True
            return 1  # SQLite stops the statement: "interrupted"
        return 0

    def _authorize(
        self, action: int, arg1: str | None, arg2: str | None, _db: str | None, _by: str | None
    ) -> int:
        if action in _READ_ACTIONS or (action == sqlite3.SQLITE_UPDATE and arg1 in _SCHEMA):
            return sqlite3.SQLITE_OK  # pragma_table_info() & co. read the schema "for update"
        if action == sqlite3.SQLITE_PRAGMA:
            name = (arg1 or "").lower()
            reads = arg2 is None and name not in _ACTING_PRAGMAS
            if reads or name in _READ_PRAGMAS_WITH_ARGUMENT:
                return sqlite3.SQLITE_OK
            how = "with a value sets it" if arg2 is not None else "acts on the database"
            self.refused = f"PRAGMA {name} {how}, a write: {_WRITE_REFUSED}"
        elif self.refused is None:
            what = _ACTION_NAMES.get(action, f"action {action}")
            self.refused = f"{what} is a write or a change of the connection: {_WRITE_REFUSED}"
        return sqlite3.SQLITE_DENY

    def explain(self, err: Exception, line: str) -> QueryError:
        """The error to report for `err`: the real cause where a guard of ours fired."""
        if self.refused is not None:
            return QueryError(self.refused)
        code = getattr(getattr(err, "orig", err), "sqlstate", None)
        # SQLite: our progress handler stopped it; PostgreSQL: 57014 is also a cancel request.
        if self.limit is not None and (
            self.timed_out or (code == "57014" and "statement timeout" in line)
        ):
            return QueryTimeout(
                f"the query ran longer than its time limit ({self.limit:g} s) and was "
                "stopped; give more with --timeout SECONDS (0: no limit)"
            )
        if "string or blob too big" in line:
            return QueryError(
                f"a value of the query is larger than {MAX_VALUE_BYTES // 2**20} MiB, "
                "the most `indexer sql` handles"
            )
        return QueryError(line)


def _first_keyword(text: str) -> str:
    """The statement's first word, upper case, after leading comments and parentheses."""
    head = text
    while True:
        found = _COMMENTS.match(head)
        if not found or not found.group(0).strip():
            break
        head = head[found.end() :]
    first = re.match(r"[\s(]*([A-Za-z]+)", head)
    return first.group(1).upper() if first else ""


def _begin_read_only(
    conn: Connection, limit: float | None, warn: Callable[[str], None] | None
) -> None:
    """Dialect decision: how a connection is made read-only and time-bound for one statement."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(
            "SET TRANSACTION READ ONLY"
        )  # must be the transaction's first statement
        if limit is not None:
            conn.exec_driver_sql(f"SET LOCAL statement_timeout = {max(1, round(limit * 1000))}")
        if (
            warn is not None
            and conn.exec_driver_sql(
                "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
            ).scalar()
        ):
            warn(
                "`indexer sql` runs as a superuser role, which can read server files and stop "
                "other sessions even in a read-only transaction: use a role that can only read "
                "the index (README, `indexer sql`)"
            )
    elif conn.dialect.name == "sqlite":
        conn.exec_driver_sql("PRAGMA query_only = ON")


def _execute_one(conn: Connection, text: str) -> QueryResult:
    """Dialect decision: hand `text` to the driver so that it runs one statement only."""
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        if conn.dialect.name == "postgresql":
            cursor.execute(text, prepare=True)  # extended protocol: one statement only
        else:
            cursor.execute(text)
        if not cursor.description:
            return QueryResult([], [])
        columns = [d[0] for d in cursor.description]
        return QueryResult(columns, [tuple(_plain(v) for v in row) for row in cursor.fetchall()])
    finally:
        cursor.close()


def _plain(value: Any) -> Any:
    """Values JSON can carry: numbers stay numbers, bytes become hex, dates ISO text."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    return value
