"""The worker's side of a backend: where a file's element rows are put. No SQLAlchemy here.

A backend hands the workers a picklable SinkSpec; a worker opens it once per run and
adds each walked file's flat rows to the sink, which returns the file's payload (what the
writer's backend later inserts).
"""

from __future__ import annotations

from typing import Protocol


class RowSink(Protocol):
    def add(self, flat: list[object], count: int) -> object:
        """Take `count` rows (ELEMENT_COLUMNS but the file id, one after the other)."""

    def commit(self) -> None:
        """Make what was added visible to the writer (once per chunk of files)."""


class SinkSpec(Protocol):
    def open(self) -> RowSink:
        """This process's sink for the run."""
