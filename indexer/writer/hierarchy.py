"""Patients, studies, series and instances of a batch's walked files."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Table, and_, case, or_, select

from .. import summaries
from ..backends.base import Backend
from ..db import chunks
from ..rows import IndexedFile
from ..schema import patients, series, studies

PatientKey = tuple[str, str]
_HIERARCHY_KEYS = ("patient_id", "issuer", "study_uid", "series_uid")


class Hierarchy:
    """Upserts the hierarchy; its statements are built once per run."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._statements: dict[tuple[Any, ...], Any] = {}

    def write(
        self,
        conn: Connection,
        walked: Sequence[IndexedFile],
        file_ids: dict[str, int],
        deltas: summaries.Deltas,
    ) -> None:
        """Upsert patients, studies and series, then insert one instance per walked file."""
        patient_rows, study_rows, series_rows = _collect(walked)
        patient_ids = self._upsert_patients(conn, patient_rows)
        study_ids, _ = self._upsert_keyed(
            conn, studies, "study_uid", study_rows, "patient_key", "patient_ref", patient_ids
        )
        series_ids, series_study = self._upsert_keyed(
            conn, series, "series_uid", series_rows, "study_key", "study_ref", study_ids
        )
        rows = [
            _instance_row(o, file_ids[o.path], series_ids, series_study, study_ids) for o in walked
        ]
        if rows:
            self.backend.insert_instances(conn, rows)
            summaries.add_instances(
                deltas,
                [
                    (
                        r["modality"],
                        r["sop_class_uid"],
                        r["element_count"],
                        r["series_ref"] is not None,
                        r["manufacturer"],
                        r["model"],
                        r["study_date"],
                    )
                    for r in rows
                ],
            )

    def _upsert_patients(
        self,
        conn: Connection,
        rows: dict[PatientKey, dict[str, object]],
    ) -> dict[PatientKey, int]:
        ids: dict[PatientKey, int] = {}
        if not rows:
            return ids
        keys = sorted(rows)
        conn.execute(
            self._keep_smallest(
                patients, ["patient_id", "issuer"], ("patient_name", "birth_date", "sex")
            ),
            [rows[k] for k in keys],
        )
        for chunk in chunks(keys, 500):
            matches = [and_(patients.c.patient_id == p, patients.c.issuer == i) for p, i in chunk]
            query = select(patients.c.id, patients.c.patient_id, patients.c.issuer)
            for row in conn.execute(query.where(or_(*matches))):
                ids[(row.patient_id, row.issuer)] = row.id
        return ids

    def _upsert_keyed(
        self,
        conn: Connection,
        table: Table,
        key: str,
        rows: dict[str, dict[str, object]],
        parent_key: str,
        parent_column: str,
        parent_ids: dict[Any, int],
    ) -> tuple[dict[str, int], dict[str, int]]:
        """Upsert studies or series; return {uid: id} and {uid: parent id as stored}."""
        if not rows:
            return {}, {}
        values = []
        for uid in sorted(rows):
            row = dict(rows[uid])
            row[parent_column] = parent_ids[row.pop(parent_key)]
            values.append(row)
        attributes = [c for c in values[0] if c not in (key, parent_column)]
        conn.execute(self._keep_smallest(table, [key], attributes), values)
        ids: dict[str, int] = {}
        parents: dict[str, int] = {}
        column = table.c[key]
        for chunk in chunks(sorted(rows), 1000):
            query = select(table.c.id, column, table.c[parent_column]).where(column.in_(chunk))
            for found in conn.execute(query):
                ids[found[1]] = found[0]
                parents[found[1]] = found[2]
        return ids, parents

    def _keep_smallest(self, table: Table, keys: list[str], attributes: Sequence[str]) -> Any:
        """INSERT that, on a key conflict, keeps per column the smallest non-null value."""
        signature = (table.name, tuple(keys), tuple(attributes))
        found = self._statements.get(signature)
        if found is not None:
            return found
        stmt = self.backend.insert(table)
        found = self._statements[signature] = stmt.on_conflict_do_update(
            index_elements=keys,
            set_={
                name: case(
                    (
                        or_(table.c[name].is_(None), stmt.excluded[name] < table.c[name]),
                        stmt.excluded[name],
                    ),
                    else_=table.c[name],
                )
                for name in attributes
            },
        )
        return found


# Columns of each hierarchy table -> the attribute (rows.HIERARCHY_TAGS) that fills it.
_PATIENT_COLUMNS = {"patient_name": "patient_name", "birth_date": "birth_date", "sex": "sex"}
_STUDY_COLUMNS = {
    "study_date": "study_date",
    "study_time": "study_time",
    "accession_number": "accession_number",
    "study_id": "study_id",
    "description": "study_description",
    "referring_physician": "referring_physician",
}
_SERIES_COLUMNS = {
    "modality": "modality",
    "series_number": "series_number",
    "description": "series_description",
    "body_part": "body_part",
    "manufacturer": "manufacturer",
    "model": "model",
    "series_date": "series_date",
}


def _pick(attributes: dict[str, str], columns: dict[str, str]) -> dict[str, object]:
    return {column: attributes.get(name) for column, name in columns.items()}


def _collect(
    walked: Sequence[IndexedFile],
) -> tuple[
    dict[PatientKey, dict[str, object]], dict[str, dict[str, object]], dict[str, dict[str, object]]
]:
    """The patient, study and series rows the files describe.

    Several files describe one patient, study or series, and may disagree (a series
    number, a name spelt two ways). Each column keeps the smallest value any file gave,
    so the index does not depend on the order in which files were written.
    """
    patient_rows: dict[PatientKey, dict[str, object]] = {}
    study_rows: dict[str, dict[str, object]] = {}
    series_rows: dict[str, dict[str, object]] = {}
    for o in walked:
        a = o.attributes
        study_uid = a.get("study_uid")
        if not study_uid:
            continue
        key = (a.get("patient_id", ""), a.get("issuer", ""))
        if o.record.problem is not None:
            # A file read only in part keeps its place in the hierarchy, but its other
            # attributes may be garbage: they do not describe the patient, study or series.
            a = {k: a[k] for k in _HIERARCHY_KEYS if k in a}
        patient = {"patient_id": key[0], "issuer": key[1], **_pick(a, _PATIENT_COLUMNS)}
        _merge(patient_rows, key, patient)
        study = {"study_uid": study_uid, "patient_key": key, **_pick(a, _STUDY_COLUMNS)}
        _merge(study_rows, study_uid, study)
        series_uid = a.get("series_uid")
        if series_uid:
            one = {"series_uid": series_uid, "study_key": study_uid, **_pick(a, _SERIES_COLUMNS)}
            _merge(series_rows, series_uid, one)
    return patient_rows, study_rows, series_rows


def _hierarchy_problem(
    a: dict[str, str], series_study: dict[str, int], study_ids: dict[str, int]
) -> str | None:
    problem = None
    if not a.get("study_uid"):
        problem = "no StudyInstanceUID"
    elif not a.get("series_uid"):
        problem = "no SeriesInstanceUID"
    elif series_study.get(a["series_uid"]) != study_ids.get(a["study_uid"]):
        problem = "series listed under another study"
    if not a.get("sop_instance_uid") and problem is None:
        problem = "no SOPInstanceUID"
    return problem


def _instance_row(
    o: IndexedFile,
    file_id: int,
    series_ids: dict[str, int],
    series_study: dict[str, int],
    study_ids: dict[str, int],
) -> dict[str, object]:
    a = o.attributes
    in_series = a.get("study_uid") and a.get("series_uid")
    return {
        "file_id": file_id,
        "series_ref": series_ids.get(a["series_uid"]) if in_series else None,
        "sop_instance_uid": a.get("sop_instance_uid"),
        "sop_class_uid": a.get("sop_class_uid"),
        "modality": a.get("modality"),
        "instance_number": a.get("instance_number"),
        "content_date": a.get("content_date"),
        "rows": _int(a.get("rows")),
        "columns": _int(a.get("columns")),
        "frames": _int(a.get("frames")),
        "manufacturer": a.get("manufacturer"),
        "model": a.get("model"),
        "study_date": a.get("study_date"),
        "element_count": o.record.element_count,
        "hierarchy_problem": _hierarchy_problem(a, series_study, study_ids),
    }


def _merge(rows: dict[Any, dict[str, Any]], key: Any, row: dict[str, Any]) -> None:
    """Add `row` under `key`, keeping per column the smallest non-null value."""
    old = rows.get(key)
    if old is None:
        rows[key] = row
        return
    for name, value in row.items():
        current = old[name]
        if value is not None and (current is None or value < current):
            old[name] = value


def _int(text: str | None) -> int | None:
    if not text:
        return None
    try:
        return int(text.split("\\")[0].strip())
    except ValueError:
        return None
