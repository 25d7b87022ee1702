"""Counters kept at write time for the reports (tag usage, value counts).

The writer calls `add_files` after it inserted a batch's elements and
`remove_files` before it deletes files' elements, both inside the batch's
transaction, so the counters always agree with the elements table.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection


def add_files(conn: Connection, file_ids: Sequence[int]) -> None:
    """Count the elements of `file_ids` (just inserted) into the summary tables."""


def remove_files(conn: Connection, file_ids: Sequence[int]) -> None:
    """Take the elements of `file_ids` (about to be deleted) out of the summary tables."""
