"""What the reports share: rows looked up by many ids, in few statements on either database."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import ARRAY, Connection, any_, func, literal, select

from ..db import chunks


def lookup(
    conn: Connection, table: Any, key: Any, ids: Iterable[Any], *columns: Any
) -> dict[Any, tuple[Any, ...]]:
    """{id: (columns...)} for the rows of `table` whose `key` is in `ids`, by chunks."""
    found: dict[Any, tuple[Any, ...]] = {}
    for where in in_ids(conn, key, ids):
        for row in conn.execute(select(key, *columns).where(where)):
            found[row[0]] = tuple(row[1:])
    return found


def counts_per(conn: Connection, column: Any, ids: Sequence[int]) -> dict[int, int]:
    """{id: rows whose `column` is id}, by chunks (an index on `column` answers it)."""
    counts: dict[int, int] = {}
    for where in in_ids(conn, column, ids):
        counts.update(
            (k, int(n))
            for k, n in conn.execute(select(column, func.count()).where(where).group_by(column))
        )
    return counts


def in_ids(conn: Connection, column: Any, ids: Iterable[int]) -> list[Any]:
    """Conditions "`column` is one of `ids`" that together cover every id."""
    ordered = sorted(ids)
    if not ordered:
        return []
    if binds_arrays(conn):
        return [column == any_(literal(ordered, ARRAY(column.type)))]
    return [column.in_(chunk) for chunk in chunks(ordered, 500)]


def binds_arrays(conn: Connection) -> bool:
    """Dialect decision: ids go as one ``= ANY(array)`` parameter (PostgreSQL: psycopg would
    parse a statement of hundreds of placeholders anew for every chunk), else as IN lists of
    500 (SQLite's parameter limit)."""
    return conn.dialect.name == "postgresql"
