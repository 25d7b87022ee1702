"""What files marked missing take out of the reports.

A file gone from disk at the last run over its folder keeps its rows (status missing), but
it is not there: `find` leaves it out unless asked, and `stats` does not count its instance
(the summaries left it out when it went missing) nor the series, studies and patients that
only missing files hold. The usual index has no missing files, and then this reads one
index entry of files.status and nothing else.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from sqlalchemy import Connection, select

from ..schema import files, instances, series, studies
from .common import counts_per, in_ids, lookup


def missing_files(conn: Connection) -> set[int]:
    """Ids of the files marked missing that have an instance row."""
    gone = select(files.c.id).where(files.c.status == "missing")
    return {
        r[0] for r in conn.execute(select(instances.c.file_id).where(instances.c.file_id.in_(gone)))
    }


def present_counts(conn: Connection, series_ids: Iterable[int], gone: set[int]) -> dict[int, int]:
    """{series id: its instances} without the files in `gone`; series left with none are absent."""
    counts = counts_per(conn, instances.c.series_ref, sorted(set(series_ids)))
    if gone:
        found = lookup(conn, instances, instances.c.file_id, gone, instances.c.series_ref)
        for (series_ref,) in found.values():
            if series_ref in counts:
                counts[series_ref] -= 1
        counts = {sid: n for sid, n in counts.items() if n > 0}
    return counts


def absent_hierarchy(conn: Connection) -> tuple[int, int, int]:
    """(patients, studies, series) whose every instance is in a missing file."""
    gone = missing_files(conn)
    if not gone:
        return 0, 0, 0
    touched = {
        r[0]
        for r in lookup(conn, instances, instances.c.file_id, gone, instances.c.series_ref).values()
        if r[0] is not None
    }
    present = present_counts(conn, touched, gone)
    study_of = {
        sid: r[0]
        for sid, r in lookup(conn, series, series.c.id, touched, series.c.study_ref).items()
    }
    empty_series = {sid for sid in touched if sid not in present}
    series_in = _children(conn, series.c.study_ref, series.c.id, set(study_of.values()))
    empty_studies = {st for st, members in series_in.items() if members <= empty_series}
    patient_of = lookup(conn, studies, studies.c.id, empty_studies, studies.c.patient_ref)
    studies_in = _children(
        conn, studies.c.patient_ref, studies.c.id, {r[0] for r in patient_of.values()}
    )
    empty_patients = {p for p, members in studies_in.items() if members <= empty_studies}
    return len(empty_patients), len(empty_studies), len(empty_series)


def _children(
    conn: Connection, parent: object, child: object, parent_ids: set[int]
) -> dict[int, set[int]]:
    """{parent id: ids of its child rows} (series of studies, studies of patients)."""
    found: dict[int, set[int]] = defaultdict(set)
    for where in in_ids(conn, parent, parent_ids):
        for p, c in conn.execute(select(parent, child).where(where)):  # type: ignore[call-overload]
            found[p].add(c)
    return found
