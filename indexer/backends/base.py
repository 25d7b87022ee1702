"""What differs by database kind, as one Protocol the writer and the run ask."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from sqlalchemy import Connection
from sqlalchemy.exc import StatementError

from ..rows import IndexedFile, Outcome
from .sinks import SinkSpec


class Backend(Protocol):
    """One index run's database-specific parts (state such as attached files lives here)."""

    name: str
    # Several processes may write chunks side by side (`--writers N`); SQLite allows one.
    concurrent_writers: bool

    def sink_spec(self) -> SinkSpec:
        """What a worker needs to build element rows for this database (picklable)."""

    def insert(self, table: Any) -> Any:
        """The dialect's INSERT construct (with on_conflict_do_update/nothing)."""

    def groups(self, outcomes: Sequence[Outcome]) -> list[list[Outcome]]:
        """Split a batch into groups that are each written in one transaction."""

    def before_group(self, conn: Connection, group: Sequence[Outcome]) -> None:
        """Make the element rows of `group` readable on `conn` (outside a transaction)."""

    def upsert_files(self, conn: Connection, rows: list[dict[str, object]]) -> dict[str, int]:
        """Insert or update the files rows; return {path: id}."""

    def insert_instances(self, conn: Connection, rows: list[dict[str, object]]) -> None: ...

    def insert_elements(
        self, conn: Connection, walked: Sequence[IndexedFile], file_ids: dict[str, int]
    ) -> None:
        """Move the element rows the workers built into the index, with their file ids."""

    def refused(self, err: BaseException) -> str | None:
        """The database's complaint when `err` refuses the rows for their data (a constraint,
        a value out of range, text it cannot store), without any value; None for anything
        else (a lost connection, a full disk, a bug), which must stop the run."""

    def after_batch(self, conn: Connection) -> None:
        """Clean up after a written batch (scratch files, statistics)."""

    def close(self, conn: Connection | None) -> None:
        """Release what the run held (attached files, temporary folders)."""

    def cancel(self, dbapi_connection: Any) -> None:
        """Cancel the statement `dbapi_connection` runs in another thread (a long index build)."""


def driver_error(err: BaseException) -> BaseException:
    """The driver's exception under SQLAlchemy's wrapper (raw COPY and driver calls raise
    the driver's own)."""
    if isinstance(err, StatementError) and err.orig is not None:
        return err.orig
    return err


def complaint(message: str) -> str:
    """The first line of a database message, cut before a colon: PostgreSQL puts the value it
    refused after one ("invalid input syntax for type integer: ...")."""
    return message.strip().split("\n", 1)[0].split(": ", 1)[0].strip()
