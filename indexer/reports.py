"""Read-only questions to the index: counts and breakdowns (`indexer stats`)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, func, select

from .schema import elements, errors, files, instances, patients, series, studies


def collect_stats(conn: Connection) -> dict[str, Any]:
    """Hierarchy counts, file and error counts of the index. No patient values."""

    def count(table: Any, *where: Any) -> int:
        return int(conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one())

    by_status = dict(conn.execute(select(files.c.status, func.count()).group_by(files.c.status)).all())
    errors_by_reason = dict(conn.execute(
        select(errors.c.reason, func.count()).where(errors.c.severity == "error").group_by(errors.c.reason)
    ).all())
    return {
        "patients": count(patients),
        "studies": count(studies),
        "series": count(series),
        "instances": count(instances),
        "files": sum(by_status.values()),
        "files_by_status": by_status,
        "elements": count(elements),
        "errors": sum(errors_by_reason.values()),
        "errors_by_reason": errors_by_reason,
    }
