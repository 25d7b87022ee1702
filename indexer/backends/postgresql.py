"""PostgreSQL: element rows come as COPY text, files ids by INSERT ... RETURNING, and the
planner's statistics are refreshed while tables grow from empty."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, case, insert
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import DBAPIError

from ..rows import ELEMENT_COLUMNS, IndexedFile, Outcome
from ..schema import files, instances
from .base import complaint, driver_error
from .copy_rows import FILE_ID_PLACEHOLDER, CopySpec

# Batch numbers of a run after which PostgreSQL's statistics are refreshed (the tables grow
# tenfold between two of them when the index started empty).
_ANALYZE_AFTER = frozenset({2, 20, 200, 2000})
# SQLSTATEs of a refusal for the data: classes 21 (one batch writing a row twice), 22 (data
# exception: out of range, invalid text, NUL), 23 (constraints); a value beyond a limit
# (54000, an index row too large); a trigger's RAISE EXCEPTION (P0001).
_REFUSING_CLASSES = ("21", "22", "23")
_REFUSING_STATES = frozenset({"54000", "P0001"})


class PostgreSQLBackend:
    name = "postgresql"
    concurrent_writers = True

    def __init__(self, *, refresh_statistics: bool = True) -> None:
        self._batches = 0
        self._refresh_statistics = refresh_statistics

    def sink_spec(self) -> CopySpec:
        return CopySpec()

    def insert(self, table: Any) -> Any:
        return postgresql.insert(table)

    def groups(self, outcomes: Sequence[Outcome]) -> list[list[Outcome]]:
        return [list(outcomes)]

    def before_group(self, conn: Connection, group: Sequence[Outcome]) -> None:
        pass

    def upsert_files(self, conn: Connection, rows: list[dict[str, object]]) -> dict[str, int]:
        stmt = postgresql.insert(files)
        changing: dict[str, Any] = {
            c: stmt.excluded[c] for c in rows[0] if c not in ("path", "first_run")
        }
        changing["last_run"] = case(
            (files.c.last_run > stmt.excluded.last_run, files.c.last_run),
            else_=stmt.excluded.last_run,
        )
        stmt = stmt.on_conflict_do_update(index_elements=["path"], set_=changing)
        result = conn.execute(
            stmt.returning(files.c.id, files.c.path, sort_by_parameter_order=True), rows
        )
        return {row.path: row.id for row in result}

    def insert_instances(self, conn: Connection, rows: list[dict[str, object]]) -> None:
        conn.execute(insert(instances), rows)

    def insert_elements(
        self, conn: Connection, walked: Sequence[IndexedFile], file_ids: dict[str, int]
    ) -> None:
        import psycopg

        driver = conn.connection.driver_connection
        assert driver is not None
        cursor = driver.cursor()
        statement = f"COPY elements ({', '.join(ELEMENT_COLUMNS)}) FROM STDIN"
        try:
            with cursor.copy(statement) as copy:
                for o in walked:
                    if o.elements:
                        assert isinstance(o.elements, str)
                        copy.write(o.elements.replace(FILE_ID_PLACEHOLDER, str(file_ids[o.path])))
        except psycopg.Error as err:
            # Raised by the driver itself: wrapped as SQLAlchemy wraps every other statement's.
            raise DBAPIError(statement, None, err) from err

    def refused(self, err: BaseException) -> str | None:
        """Only the primary message: PostgreSQL's DETAIL quotes the refused row."""
        import psycopg

        found = driver_error(err)
        if not isinstance(found, psycopg.Error):
            return None
        state = found.sqlstate
        if state is None:
            # Refused by psycopg before the server saw it (NUL in text, a value it cannot adapt).
            if isinstance(found, (psycopg.DataError, psycopg.IntegrityError)):
                return complaint(str(found)) or type(found).__name__
            return None
        if state[:2] in _REFUSING_CLASSES or state in _REFUSING_STATES:
            return f"{complaint(found.diag.message_primary or '')} (SQLSTATE {state})"
        return None

    def after_batch(self, conn: Connection) -> None:
        self._batches += 1
        if self._refresh_statistics and self._batches in _ANALYZE_AFTER:
            # Tables that grew from empty within one run: give the planner their real sizes
            # (autovacuum may not have come by yet), or it picks scans where an index serves.
            with conn.begin():
                conn.exec_driver_sql(
                    "ANALYZE files, elements, instances, series, studies, patients, errors"
                )

    def cancel(self, dbapi_connection: Any) -> None:
        dbapi_connection.cancel()  # the server cancels the statement; the transaction fails

    def close(self, conn: Connection | None) -> None:
        pass
