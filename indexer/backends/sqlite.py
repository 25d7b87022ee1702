"""SQLite: element rows come in the workers' scratch files, ATTACHed to the writing
connection and moved into the index by INSERT ... SELECT, never as Python objects."""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.dialects import sqlite
from sqlalchemy.exc import SQLAlchemyError

from ..rows import ELEMENT_COLUMNS, IndexedFile, Outcome
from . import scratch
from .base import driver_error
from .sqlite_rows import SCRATCH_COLUMNS, ScratchRows, ScratchSpec

MAX_ATTACHED = 8  # scratch files attached at once (SQLite allows 10 databases besides main)


@dataclass
class ScratchFiles:
    """Which scratch files are attached, and which can go."""

    latest: dict[str, str] = field(default_factory=dict)  # worker prefix -> newest file seen
    retired: set[str] = field(default_factory=set)  # superseded by a newer file of their worker

    def seen(self, path: str) -> None:
        prefix = path.rsplit("-", 1)[0]
        newest = self.latest.get(prefix)
        if newest is None or path > newest:
            if newest is not None:
                self.retired.add(newest)
            self.latest[prefix] = path

    def deletable(self) -> list[str]:
        """Retired files: every row of theirs is committed to the index once a batch is written."""
        done = list(self.retired)
        self.retired.clear()
        return done


def remove(path: str) -> None:
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(path + suffix)


def _scratch_of(outcome: Outcome) -> str | None:
    if isinstance(outcome, IndexedFile) and outcome.element_rows:
        assert isinstance(outcome.elements, ScratchRows)
        return outcome.elements[0]
    return None


def insert_by_driver(
    conn: Connection, table: str, rows: Sequence[dict[str, Any]], tail: str = ""
) -> None:
    """INSERT `rows` (dicts with the same keys) through the SQLite driver's executemany; `tail`
    follows the VALUES clause (ON CONFLICT ...). SQLAlchemy's executemany costs more a row."""
    names = list(rows[0])
    quoted = ", ".join(f'"{name}"' for name in names)  # "rows" and "columns" are column names
    values = itemgetter(*names)
    conn.exec_driver_sql(
        f"INSERT INTO {table} ({quoted}) VALUES ({', '.join('?' * len(names))}) {tail}",
        [values(row) for row in rows],
    )


class SQLiteBackend:
    name = "sqlite"
    concurrent_writers = False

    def __init__(self) -> None:
        self._directory = ""
        self._scratch = ScratchFiles()
        self._attached: dict[str, str] = {}  # scratch file -> schema alias on the connection
        self._aliases = 0

    def sink_spec(self) -> ScratchSpec:
        if not self._directory:
            self._directory = scratch.new_folder()
        return ScratchSpec(self._directory)

    def insert(self, table: Any) -> Any:
        return sqlite.insert(table)

    def groups(self, outcomes: Sequence[Outcome]) -> list[list[Outcome]]:
        """A transaction reads from at most MAX_ATTACHED scratch files (SQLite's limit on
        attached databases), so a batch from many workers may take several."""
        groups: list[list[Outcome]] = []
        group_of: dict[str, int] = {}  # scratch file -> group index
        for o in outcomes:
            path = _scratch_of(o)
            if path is None:
                index = 0
            elif path in group_of:
                index = group_of[path]
            else:
                self._scratch.seen(path)
                index = next(
                    (
                        i
                        for i in range(len(groups))
                        if sum(1 for v in group_of.values() if v == i) < MAX_ATTACHED
                    ),
                    len(groups),
                )
                group_of[path] = index
            while len(groups) <= index:
                groups.append([])
            groups[index].append(o)
        return groups

    def before_group(self, conn: Connection, group: Sequence[Outcome]) -> None:
        needed = {p for p in map(_scratch_of, group) if p is not None}
        for path in sorted(needed - self._attached.keys()):
            if len(self._attached) >= MAX_ATTACHED:
                for old in [p for p in self._attached if p not in needed]:
                    conn.exec_driver_sql(f"DETACH DATABASE {self._attached.pop(old)}")
                    if len(self._attached) < MAX_ATTACHED:
                        break
            self._aliases += 1
            alias = f"scratch{self._aliases}"
            conn.exec_driver_sql(f"ATTACH DATABASE ? AS {alias}", (path,))
            self._attached[path] = alias
        conn.commit()

    def upsert_files(self, conn: Connection, rows: list[dict[str, object]]) -> dict[str, int]:
        """The upsert as plain SQL: SQLAlchemy's RETURNING path costs a statement per row on
        SQLite; the driver's executemany and one query for the ids cost far less."""
        columns = list(rows[0])
        updates = [
            f"{c} = excluded.{c}" for c in columns if c not in ("path", "first_run", "last_run")
        ]
        updates.append("last_run = max(last_run, excluded.last_run)")  # never lowered
        insert_by_driver(
            conn, "files", rows, f"ON CONFLICT (path) DO UPDATE SET {', '.join(updates)}"
        )
        ids: dict[str, int] = {}
        paths = [row["path"] for row in rows]
        for start in range(0, len(paths), 900):
            chunk = tuple(paths[start : start + 900])
            found = conn.exec_driver_sql(
                f"SELECT path, id FROM files WHERE path IN ({', '.join('?' * len(chunk))})", chunk
            )
            ids.update((row[0], row[1]) for row in found)
        return ids

    def insert_instances(self, conn: Connection, rows: list[dict[str, object]]) -> None:
        insert_by_driver(conn, "instances", rows)

    def insert_elements(
        self, conn: Connection, walked: Sequence[IndexedFile], file_ids: dict[str, int]
    ) -> None:
        by_file: dict[str, list[tuple[int, int, int]]] = {}
        for o in walked:
            if o.element_rows:
                assert isinstance(o.elements, ScratchRows)
                path, first, last = o.elements
                by_file.setdefault(path, []).append((file_ids[o.path], first, last))
        columns = ", ".join(ELEMENT_COLUMNS)
        selected = ", ".join(SCRATCH_COLUMNS)
        for path, ranges in by_file.items():
            conn.exec_driver_sql(
                f"INSERT INTO elements ({columns}) SELECT ?, {selected} "
                f"FROM {self._attached[path]}.rows WHERE rowid BETWEEN ? AND ?",
                ranges,
            )

    def refused(self, err: BaseException) -> str | None:
        """Constraint and trigger failures, values too big for SQLite, integers beyond 64 bits
        (the driver's OverflowError). SQLite's messages name columns and constraints, never
        the value, so the whole first line is kept (its colon precedes the constraint)."""
        found = driver_error(err)
        if isinstance(found, (OverflowError, sqlite3.IntegrityError, sqlite3.DataError)) or (
            isinstance(found, sqlite3.Error) and "too big" in str(found)
        ):
            return str(found).strip().split("\n", 1)[0] or type(found).__name__
        return None

    def after_batch(self, conn: Connection) -> None:
        """Delete scratch files that a newer one replaced and whose rows are all in the index."""
        for path in self._scratch.deletable():
            alias = self._attached.pop(path, None)
            if alias is not None:
                conn.exec_driver_sql(f"DETACH DATABASE {alias}")
            remove(path)
        conn.commit()

    def cancel(self, dbapi_connection: Any) -> None:
        dbapi_connection.interrupt()  # the statement fails with "interrupted" and rolls back

    def close(self, conn: Connection | None) -> None:
        """Detach the scratch files and remove the run's scratch folder, whatever state the
        connection is in (a run that failed or was stopped still removes its patient data)."""
        try:
            if conn is not None:
                for alias in self._attached.values():
                    with contextlib.suppress(SQLAlchemyError):
                        conn.exec_driver_sql(f"DETACH DATABASE {alias}")
        finally:
            self._attached.clear()
            if self._directory:
                shutil.rmtree(self._directory, ignore_errors=True)
                self._directory = ""
