"""SQLite's worker side: scratch files that carry element rows to the single writer.
No SQLAlchemy here.

Binding values into SQLite statements, row by row, is the largest cost of an
index run, and a single writer process cannot do it for hundreds of thousands of
rows a second on top of everything else. So each worker binds its rows into a
scratch SQLite file of its own (no sync, rows only appended), and the writer moves
a file's rows into the index with one ``INSERT ... SELECT`` inside SQLite, without
turning them back into Python objects. The index still has exactly one writer.

A worker starts a new scratch file every ROTATE_ROWS rows; the writer deletes a
scratch file once a newer one of the same worker has shown up and every row of
the old one is committed to the index.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass

SCRATCH_COLUMNS = ("ordinal", "path_id", "vr", "vm", "length", "value", "number", "flags")
ROTATE_ROWS = 1_000_000
_ROWS_PER_STATEMENT = 100  # one statement step per hundred rows instead of one per row


class ScratchRows(tuple[str, int, int]):
    """Where one file's rows are: (scratch file, first rowid, last rowid)."""

    __slots__ = ()


class ScratchWriter:
    """Appends rows to this process's scratch file (used in the worker processes)."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.path = ""
        self._conn: sqlite3.Connection | None = None
        self._serial = 0
        self._next_rowid = 1
        width = len(SCRATCH_COLUMNS)
        row = "(" + ", ".join("?" * width) + ")"
        self._insert_many = "INSERT INTO rows VALUES " + ", ".join([row] * _ROWS_PER_STATEMENT)
        self._row = row
        self._width = width

    def _rotate(self) -> None:
        if self._conn is not None:
            self.commit()
            self._conn.close()
        self._serial += 1
        self.path = os.path.join(self.directory, f"scratch-{os.getpid()}-{self._serial:06d}.db")
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)  # holds patient data
        os.close(fd)
        self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")  # the writer reads while this process appends
        self._conn.execute("PRAGMA synchronous=OFF")  # a scratch file never outlives the run
        self._conn.execute(f"CREATE TABLE rows ({', '.join(SCRATCH_COLUMNS)})")
        self._next_rowid = 1

    def add(self, flat: list[object], count: int) -> ScratchRows:
        """Append `count` rows given as one flat list of values; return where they are.

        The rows are seen by the writer after `commit`."""
        if not count:
            return ScratchRows(("", 1, 0))
        if self._conn is None or self._next_rowid > ROTATE_ROWS:
            self._rotate()
        assert self._conn is not None
        step = self._width * _ROWS_PER_STATEMENT
        whole = len(flat) - len(flat) % step
        conn = self._conn
        if not conn.in_transaction:
            conn.execute("BEGIN")
        if whole:
            conn.executemany(self._insert_many, [flat[i : i + step] for i in range(0, whole, step)])
        tail = (len(flat) - whole) // self._width
        if tail:
            conn.execute("INSERT INTO rows VALUES " + ", ".join([self._row] * tail), flat[whole:])
        # Rows are only ever appended to a fresh rowid table, so their rowids are consecutive.
        first = self._next_rowid
        self._next_rowid += count
        return ScratchRows((self.path, first, first + count - 1))

    def commit(self) -> None:
        """Make the rows added so far visible to the writer (once per chunk of files: a commit
        per file would cost more than its rows)."""
        if self._conn is not None and self._conn.in_transaction:
            self._conn.execute("COMMIT")

    def close(self) -> None:
        self.commit()
        if self._conn is not None:
            self._conn.close()
            self._conn = None


_writers: dict[str, ScratchWriter] = {}


def writer_for(directory: str) -> ScratchWriter:
    """This process's scratch writer for a run's scratch directory."""
    found = _writers.get(directory)
    if found is None:
        for old in _writers.values():  # a previous run in the same process
            old.close()
        _writers.clear()
        found = _writers[directory] = ScratchWriter(directory)
    return found


@dataclass(frozen=True)
class ScratchSpec:
    """A run's scratch folder, as the workers receive it."""

    directory: str

    def open(self) -> ScratchWriter:
        return writer_for(self.directory)
