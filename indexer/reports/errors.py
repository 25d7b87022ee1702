"""`indexer errors`: what went wrong, grouped by reason, and the one definition of an error.

An **error** is a file that could not be indexed whole: it failed (unreadable, refused by the
database, or not DICOM although its name promises DICOM) or it was read only up to a problem
(status `partial`). Each such file counts once, by the `errors` row of severity `error` its
last read left. Files marked missing are not counted (they are out of every report). Not
DICOM files with other names are never errors (status `not_dicom`, no row); paths the crawl
could not list or follow are **crawl problems**, counted apart; warnings are warnings.

The run summary, the progress bar and its log lines count the same files among those a run
read (IndexReport.errors); `stats` and this report count those the index holds now.

Paths and messages are printed, never element values: messages name byte offsets and tags.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, distinct, func, or_, select

from ..schema import errors, files

CRAWL = "crawl"  # the stage of crawl problems
EXAMPLES = 3  # example paths per reason


def _not_missing() -> ColumnElement[bool]:
    # Not "in the files present": a file whose own row the database could not store (a
    # path too long for an index) has an error row and no files row, and is an error.
    return errors.c.path.not_in(select(files.c.path).where(files.c.status == "missing"))


def _file_error() -> ColumnElement[bool]:
    """An error row that counts as an error: a file's, not the crawl's, and not missing."""
    return and_(errors.c.severity == "error", errors.c.stage != CRAWL, _not_missing())


def _crawl_problem() -> ColumnElement[bool]:
    return and_(errors.c.severity == "error", errors.c.stage == CRAWL)


@dataclass
class ErrorCounts:
    errors: int = 0  # files (see the module docstring)
    errors_by_reason: dict[str, int] = field(default_factory=dict)
    crawl_problems: int = 0  # paths
    warnings: int = 0  # rows


def count_errors(conn: Connection) -> ErrorCounts:
    """The error counts `stats` prints: errors and errors_by_reason (files), crawl_problems
    (paths) and warnings (rows); files marked missing are left out."""
    counts = ErrorCounts()
    counts.errors = int(
        conn.execute(select(func.count(distinct(errors.c.path))).where(_file_error())).scalar_one()
    )
    by_reason = conn.execute(
        select(errors.c.reason, func.count(distinct(errors.c.path)))
        .where(_file_error())
        .group_by(errors.c.reason)
    )
    counts.errors_by_reason = {reason: int(n) for reason, n in sorted(by_reason)}
    counts.crawl_problems = int(
        conn.execute(
            select(func.count(distinct(errors.c.path))).where(_crawl_problem())
        ).scalar_one()
    )
    counts.warnings = int(
        conn.execute(
            select(func.count()).where(errors.c.severity == "warning", _not_missing())
        ).scalar_one()
    )
    return counts


def errors_by_reason(conn: Connection, examples: int = EXAMPLES) -> list[dict[str, Any]]:
    """One row per reason, most files first: `reason`, `kind` (`file` for errors, `crawl` for
    crawl problems), `files` (paths), `examples` (the first `examples` paths, sorted)."""
    rows: list[dict[str, Any]] = []
    for kind, condition in (("file", _file_error()), ("crawl", _crawl_problem())):
        groups = conn.execute(
            select(errors.c.reason, func.count(distinct(errors.c.path)))
            .where(condition)
            .group_by(errors.c.reason)
        ).all()
        for reason, n in groups:
            paths = conn.execute(
                select(errors.c.path)
                .where(condition, errors.c.reason == reason)
                .group_by(errors.c.path)
                .order_by(errors.c.path)
                .limit(examples)
            ).scalars()
            rows.append({"reason": reason, "kind": kind, "files": int(n), "examples": list(paths)})
    rows.sort(key=lambda r: (r["kind"] != "file", -r["files"], r["reason"]))
    return rows


def errors_of_reason(conn: Connection, reason: str) -> list[dict[str, Any]]:
    """Every path with an error (or crawl problem) of `reason`, sorted: `path`, `stage`,
    `message` (which names no element value)."""
    condition = and_(or_(_file_error(), _crawl_problem()), errors.c.reason == reason)
    found = conn.execute(
        select(errors.c.path, errors.c.stage, errors.c.message)
        .where(condition)
        .order_by(errors.c.path, errors.c.stage, errors.c.id)
    )
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for path, stage, message in found:
        if path not in seen:  # one line per path
            seen.add(path)
            rows.append({"path": path, "stage": stage, "message": message})
    return rows


def error_reasons(conn: Connection) -> list[str]:
    """The reasons of the errors and crawl problems the index holds, sorted."""
    condition = or_(_file_error(), _crawl_problem())
    return list(
        conn.execute(
            select(errors.c.reason)
            .where(condition)
            .group_by(errors.c.reason)
            .order_by(errors.c.reason)
        ).scalars()
    )
