"""The summary tables (tag usage, tag values, instance groups), kept at write time.

layout.py    tag keys of a file's rows (pure)
counting.py  a walked file's counts, made in the worker processes (no database code)
deltas.py    the Deltas of one transaction, and `apply(conn, deltas)` that writes them

Importing this package loads no database code: the names of deltas.py are imported on
first use, so a worker that only counts never imports SQLAlchemy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .counting import FileCounts, count_rows
from .layout import MAX_TRACKED_LENGTH, TRACKED_VRS, Columns, know_path, known_paths

if TYPE_CHECKING:
    from .deltas import (
        Deltas,
        add_counted,
        add_files,
        add_instances,
        apply,
        element_keys,
        merge_pending,
        rebuild,
        remove_files,
    )

__all__ = [
    "MAX_TRACKED_LENGTH",
    "TRACKED_VRS",
    "Columns",
    "Deltas",
    "FileCounts",
    "add_counted",
    "add_files",
    "add_instances",
    "apply",
    "count_rows",
    "element_keys",
    "know_path",
    "known_paths",
    "merge_pending",
    "rebuild",
    "remove_files",
]
_DELTAS_NAMES = frozenset(
    {
        "Deltas",
        "add_counted",
        "add_files",
        "add_instances",
        "apply",
        "element_keys",
        "merge_pending",
        "rebuild",
        "remove_files",
    }
)


def __getattr__(name: str) -> Any:
    if name in _DELTAS_NAMES:
        from . import deltas

        value = globals()[name] = getattr(deltas, name)  # later look-ups skip this hook
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
