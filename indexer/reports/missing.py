"""What files marked missing take out of the reports.

A file gone from disk at the last run over its folder keeps its rows (status missing), but
it is not there: `find` leaves it out unless asked, and `stats` does not count its instance
(the summaries left it out when it went missing) nor the series, studies and patients that
only missing files hold. The usual index has no missing files, and then this reads one
index entry of files.status and nothing else.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, select, true
from sqlalchemy.sql.elements import ColumnElement

from ..schema import files, instances, patients, series, studies
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


@dataclass
class Absent:
    """The hierarchy rows that only missing files hold, as `stats` counts them."""

    patients: int = 0
    patients_without_id: int = 0  # of `patients`: synthetic ones (schema.patients)
    studies: int = 0
    series: int = 0
    series_by_modality: Counter[str | None] = field(default_factory=Counter)
    # (study, modality) pairs gone: the study has no present series of that modality left
    studies_by_modality: Counter[str | None] = field(default_factory=Counter)
    series_by_model: Counter[tuple[str | None, str | None]] = field(default_factory=Counter)
    studies_by_year: Counter[str | None] = field(default_factory=Counter)


def present_instance(conn: Connection) -> ColumnElement[bool]:
    """A condition on instance rows: the instance's file is not marked missing (no condition
    at all when no file is, so that queries answered from an index alone stay so)."""
    missing = select(files.c.id).where(files.c.status == "missing")
    if conn.execute(missing.limit(1)).first() is None:
        return true()
    return ~instances.c.file_id.in_(missing)


def absent_hierarchy(conn: Connection) -> Absent:
    """The series, studies and patients whose every instance is in a missing file."""
    absent = Absent()
    gone = missing_files(conn)
    if not gone:
        return absent
    touched = {
        r[0]
        for r in lookup(conn, instances, instances.c.file_id, gone, instances.c.series_ref).values()
        if r[0] is not None
    }
    present = present_counts(conn, touched, gone)
    empty_series = {sid for sid in touched if sid not in present}
    study_of = lookup(conn, series, series.c.id, touched, series.c.study_ref)
    series_in: dict[int, list[tuple[int, Any, Any, Any]]] = defaultdict(list)
    for where in in_ids(conn, series.c.study_ref, {r[0] for r in study_of.values()}):
        for sid, study, modality, manufacturer, model in conn.execute(
            select(
                series.c.id,
                series.c.study_ref,
                series.c.modality,
                series.c.manufacturer,
                series.c.model,
            ).where(where)
        ):
            series_in[study].append((sid, modality, manufacturer, model))
    empty_studies = set()
    for study, rows in series_in.items():
        kept = {m for sid, m, _, _ in rows if sid not in empty_series}
        for sid, modality, manufacturer, model in rows:
            if sid in empty_series:
                absent.series_by_modality[modality] += 1
                absent.series_by_model[(manufacturer, model)] += 1
        absent.studies_by_modality.update(
            {m for sid, m, _, _ in rows if sid in empty_series} - kept
        )
        if all(sid in empty_series for sid, *_ in rows):
            empty_studies.add(study)
    of_studies = lookup(
        conn, studies, studies.c.id, empty_studies, studies.c.patient_ref, studies.c.study_date
    )
    for _patient, date in of_studies.values():
        absent.studies_by_year[date[:4] if date and len(date) >= 4 else None] += 1
    studies_in = _children(
        conn, studies.c.patient_ref, studies.c.id, {r[0] for r in of_studies.values()}
    )
    gone_patients = {p for p, kids in studies_in.items() if kids <= empty_studies}
    absent.patients = len(gone_patients)
    absent.patients_without_id = sum(
        1
        for (synthetic,) in lookup(
            conn, patients, patients.c.id, gone_patients, patients.c.synthetic_study_uid
        ).values()
        if synthetic
    )
    absent.studies = len(empty_studies)
    absent.series = len(empty_series)
    return absent


def _children(
    conn: Connection, parent: object, child: object, parent_ids: set[int]
) -> dict[int, set[int]]:
    """{parent id: ids of its child rows} (series of studies, studies of patients)."""
    found: dict[int, set[int]] = defaultdict(set)
    for where in in_ids(conn, parent, parent_ids):
        for p, c in conn.execute(select(parent, child).where(where)):  # type: ignore[call-overload]
            found[p].add(c)
    return found
