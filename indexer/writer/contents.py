"""Removing what files held before: a re-index, or a prune."""

from __future__ import annotations

from sqlalchemy import Connection, delete, select

from .. import summaries
from ..db import chunks, fetch_in
from ..schema import elements, encapsulated, instances, patients, series, studies


def with_contents(conn: Connection, file_ids: list[int]) -> list[int]:
    """The ids among `file_ids` of files that have an instance row (and so element rows)."""
    found: list[int] = []
    for chunk in chunks(sorted(file_ids), 900):
        found.extend(
            row[0] for row in fetch_in(conn, "SELECT file_id FROM instances WHERE file_id", chunk)
        )
    return sorted(found)


def delete_contents(conn: Connection, file_ids: list[int], deltas: summaries.Deltas | None) -> None:
    """Remove what a file held before, and hierarchy rows left empty by that; what the
    summaries lose goes into `deltas` (None: the files are not counted in them)."""
    for chunk in chunks(file_ids, 2000):
        old_series = {
            row[0]
            for row in conn.execute(
                select(instances.c.series_ref).where(
                    instances.c.file_id.in_(chunk), instances.c.series_ref.is_not(None)
                )
            )
        }
        if deltas is not None:
            summaries.remove_files(conn, chunk, deltas)
        conn.execute(delete(elements).where(elements.c.file_id.in_(chunk)))
        conn.execute(delete(encapsulated).where(encapsulated.c.file_id.in_(chunk)))
        conn.execute(delete(instances).where(instances.c.file_id.in_(chunk)))
        if old_series:
            _delete_empty_hierarchy(conn, sorted(old_series))


def _delete_empty_hierarchy(conn: Connection, series_ids: list[int]) -> None:
    study_ids = sorted(
        {r[0] for r in conn.execute(select(series.c.study_ref).where(series.c.id.in_(series_ids)))}
    )
    conn.execute(
        delete(series).where(
            series.c.id.in_(series_ids),
            ~select(instances.c.file_id).where(instances.c.series_ref == series.c.id).exists(),
        )
    )
    patient_ids = sorted(
        {
            r[0]
            for r in conn.execute(select(studies.c.patient_ref).where(studies.c.id.in_(study_ids)))
        }
    )
    conn.execute(
        delete(studies).where(
            studies.c.id.in_(study_ids),
            ~select(series.c.id).where(series.c.study_ref == studies.c.id).exists(),
        )
    )
    conn.execute(
        delete(patients).where(
            patients.c.id.in_(patient_ids),
            ~select(studies.c.id).where(studies.c.patient_ref == patients.c.id).exists(),
        )
    )
