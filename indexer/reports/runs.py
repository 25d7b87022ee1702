"""`indexer runs`: the history of `indexer index` runs, newest first, from the runs table."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Connection, select

from ..schema import runs


def _iso(unix: float | None) -> str | None:
    if unix is None:
        return None
    return datetime.fromtimestamp(unix, timezone.utc).isoformat(timespec="seconds")


def list_runs(conn: Connection, limit: int | None = 20) -> list[dict[str, Any]]:
    """The last `limit` runs (None: all), newest first.

    Keys: `run` (its id), `started_at` and `finished_at` (ISO 8601, UTC; finished_at null
    while running or after a kill), `duration_s` (null then), `outcome` (running,
    completed, interrupted, failed), `roots` (the paths given), `files_seen`,
    `files_indexed` (read, whole or in part), `files_unchanged`, `errors` (files not
    indexed whole: the one definition, see reports/errors.py), `not_dicom`, `files_missing`,
    `elements_written`, `host`. A run row holds the counts of every batch it committed, so
    an interrupted or killed run still says what it did.
    """
    query = select(runs).order_by(runs.c.id.desc())
    if limit is not None:
        query = query.limit(limit)
    rows: list[dict[str, Any]] = []
    for r in conn.execute(query).mappings():
        finished = r["finished_at"]
        rows.append(
            {
                "run": r["id"],
                "started_at": _iso(r["started_at"]),
                "finished_at": _iso(finished),
                "duration_s": None if finished is None else round(finished - r["started_at"], 1),
                "outcome": r["outcome"],
                "roots": _roots(r["roots"]),
                "files_seen": r["files_seen"],
                "files_indexed": r["files_indexed"],
                "files_unchanged": r["files_unchanged"],
                "errors": r["files_failed"],  # failed + partial: IndexReport.counts()
                "not_dicom": r["files_skipped"],
                "files_missing": r["files_missing"],
                "elements_written": int(r["elements_written"]),
                "host": r["host"],
            }
        )
    return rows


def _roots(text: str) -> list[str]:
    try:
        roots = json.loads(text)
    except ValueError:
        return [text]
    return [str(root) for root in roots] if isinstance(roots, list) else [str(roots)]
