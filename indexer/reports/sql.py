"""`indexer sql`: one read-only SQL statement on the index."""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from ..db import first_line
from ..errors import IndexerError

_READ_KEYWORDS = {"SELECT", "WITH", "VALUES", "EXPLAIN", "TABLE", "SHOW", "PRAGMA"}
_COMMENTS = re.compile(r"\s*(--[^\n]*(\n|$)|/\*.*?\*/)", re.DOTALL)
_DRIVER_MODULES = ("sqlite3", "psycopg", "_sqlite3")


class QueryError(IndexerError):
    """`indexer sql` refused or failed to run a query."""


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


def run_query(conn: Connection, query: str) -> QueryResult:
    """Run one read-only SQL statement and return its columns and rows.

    The connection is made read-only first (SQLite: PRAGMA query_only, on top of the
    read-only file mode of db.connect; PostgreSQL: a READ ONLY transaction), and the
    statement goes to the driver as one statement, which both drivers refuse to split
    (SQLite's execute; a prepared statement on PostgreSQL). Only statements that start
    with SELECT, WITH, VALUES, EXPLAIN, TABLE, SHOW or PRAGMA are accepted. Raises
    QueryError for a refused or failing statement.
    """
    text = query.strip()
    if _first_keyword(text) not in _READ_KEYWORDS:
        raise QueryError(
            "only read queries are allowed (SELECT, WITH, VALUES, EXPLAIN, PRAGMA, ...)"
        )
    try:
        if conn.in_transaction():
            conn.rollback()
        _begin_read_only(conn)
        return _execute_one(conn, text)
    except (SQLAlchemyError, DBAPIError) as err:
        raise QueryError(first_line(err)) from None
    except Exception as err:  # the driver's own errors (sqlite3.Error, psycopg.Error)
        if type(err).__module__.split(".")[0] in _DRIVER_MODULES:
            raise QueryError(first_line(err)) from None
        raise
    finally:
        with contextlib.suppress(SQLAlchemyError):
            conn.rollback()


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


def _begin_read_only(conn: Connection) -> None:
    """Dialect decision: how a connection is made read-only for one statement."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(
            "SET TRANSACTION READ ONLY"
        )  # must be the transaction's first statement
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
