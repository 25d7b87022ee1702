"""Patients, studies, series and instances of a batch's walked files."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    Connection,
    Integer,
    Table,
    and_,
    bindparam,
    case,
    delete,
    or_,
    select,
    true,
    update,
)

from .. import summaries
from ..backends.base import Backend
from ..db import chunks
from ..rows import IndexedFile
from ..schema import CONFLICTS, DIRECTORY_CLASS, DIRECTORY_PROBLEM, patients, series, studies

# (Patient ID, issuer, synthetic study): files without a Patient ID are given one patient per
# study, keyed by its StudyInstanceUID, so that unrelated patients without an ID never merge.
PatientKey = tuple[str, str, str]
_HIERARCHY_KEYS = ("patient_id", "issuer", "study_uid", "series_uid")


def _bit(table: str, name: str) -> int:
    return 1 << CONFLICTS[table].index(name)


def _rank(key: PatientKey) -> tuple[bool, str, bool, str, str]:
    """Order of preference of a study's patients: a real Patient ID first, then the smallest,
    with an issuer before none."""
    return (key[2] != "", key[0], key[1] == "", key[1], key[2])


def _disagree(a: PatientKey, b: PatientKey) -> bool:
    """Two real patient keys name different patients (a file without an issuer does not
    contradict one with an issuer)."""
    if a[2] or b[2]:
        return False
    return a[0] != b[0] or bool(a[1] and b[1] and a[1] != b[1])


class Hierarchy:
    """Upserts the hierarchy; its statements are built once per run.

    Every value a row keeps is a choice that does not depend on the order of the files
    or batches: per column the smallest non-empty value read whole; a study's patient is
    the best key its files name (_rank: a synthetic one only when none has a Patient ID);
    and a conflict bit, once set, stays set. The study and patient decisions are made
    after the study rows are upserted, so they are locked against other writers.
    """

    def __init__(self, backend: Backend, *, skip_settled: bool = False) -> None:
        self.backend = backend
        # One of several concurrent writers: rows the batch would not change are read (and
        # held against deletion) but not upserted, so writers of one series do not queue on
        # its row (ON CONFLICT DO UPDATE locks a row even when it changes nothing).
        self.skip_settled = skip_settled
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
        settled = _Settled()
        if self.skip_settled:
            settled = _read_settled(conn, patient_rows, study_rows, series_rows)
        study_rows = {u: r for u, r in study_rows.items() if u not in settled.studies}
        needed = {r["patient_key"] for r in study_rows.values()}
        patient_rows = {
            k: r for k, r in patient_rows.items() if k not in settled.patients or k in needed
        }
        patient_ids = self._upsert_patients(conn, patient_rows)
        study_ids, _ = self._upsert_keyed(
            conn, studies, "study_uid", study_rows, "patient_key", "patient_ref", patient_ids
        )
        self._settle_patients(conn, study_rows, study_ids, patient_ids)
        study_ids.update(settled.studies)
        series_rows = {u: r for u, r in series_rows.items() if u not in settled.series}
        series_ids, series_study = self._upsert_keyed(
            conn, series, "series_uid", series_rows, "study_key", "study_ref", study_ids
        )
        for uid, (series_id, study_ref) in settled.series.items():
            series_ids[uid] = series_id
            series_study[uid] = study_ref
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
                patients,
                ["patient_id", "issuer", "synthetic_study_uid"],
                ("patient_name", "birth_date", "sex"),
            ),
            [rows[k] for k in keys],
        )
        for chunk in chunks(keys, 300):
            matches = [
                and_(
                    patients.c.patient_id == p,
                    patients.c.issuer == i,
                    patients.c.synthetic_study_uid == s,
                )
                for p, i, s in chunk
            ]
            query = select(
                patients.c.id,
                patients.c.patient_id,
                patients.c.issuer,
                patients.c.synthetic_study_uid,
            )
            for row in conn.execute(query.where(or_(*matches))):
                ids[(row.patient_id, row.issuer, row.synthetic_study_uid)] = row.id
        return ids

    def _settle_patients(
        self,
        conn: Connection,
        rows: dict[str, dict[str, object]],
        study_ids: dict[str, int],
        patient_ids: dict[PatientKey, int],
    ) -> None:
        """Give each study of the batch the patient of best rank among the stored one and the
        batch's; flag two real Patient IDs; delete the patients this leaves without studies."""
        kept: set[int] = set()
        replaced: set[int] = set()
        updates = []
        bit = _bit("studies", "patient")
        for chunk in chunks(sorted(rows), 500):
            query = (
                select(
                    studies.c.id,
                    studies.c.study_uid,
                    studies.c.patient_ref,
                    patients.c.patient_id,
                    patients.c.issuer,
                    patients.c.synthetic_study_uid,
                )
                .join(patients, patients.c.id == studies.c.patient_ref)
                .where(studies.c.study_uid.in_(chunk))
            )
            for sid, uid, ref, pid, issuer, synthetic in conn.execute(query):
                stored: PatientKey = (pid, issuer, synthetic)
                ours: PatientKey = rows[uid]["patient_key"]  # type: ignore[assignment]
                if stored == ours:
                    kept.add(ref)
                    continue
                flags = bit if _disagree(stored, ours) else 0
                if _rank(ours) < _rank(stored):
                    updates.append({"sid": sid, "ref": patient_ids[ours], "bits": flags})
                    replaced.add(ref)
                    kept.add(patient_ids[ours])
                else:
                    kept.add(ref)
                    if flags:
                        updates.append({"sid": sid, "ref": ref, "bits": flags})
        if updates:
            conn.execute(
                update(studies)
                .where(studies.c.id == bindparam("sid"))
                .values(
                    patient_ref=bindparam("ref"),
                    conflicts=studies.c.conflicts.op("|")(bindparam("bits")),
                ),
                updates,
            )
        unused = sorted((replaced | set(patient_ids.values())) - kept)
        for ids in chunks(unused, 1000):
            conn.execute(
                delete(patients).where(
                    patients.c.id.in_(ids),
                    ~select(studies.c.id).where(studies.c.patient_ref == patients.c.id).exists(),
                )
            )

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
        attributes = [c for c in values[0] if c not in (key, parent_column, "conflicts")]
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
        """INSERT that, on a key conflict, keeps per column the smallest non-empty value and
        adds the bits of the CONFLICTS columns whose stored and new values differ."""
        signature = (table.name, tuple(keys), tuple(attributes))
        found = self._statements.get(signature)
        if found is not None:
            return found
        stmt = self.backend.insert(table)
        bits: Any = stmt.excluded.conflicts
        for name in CONFLICTS[table.name]:
            if name in attributes:
                old, new = table.c[name], stmt.excluded[name]
                differ = and_(old.is_not(None), _not_empty(old), new.is_not(None), old != new)
                bits = bits.op("|")(case((differ, _bit(table.name, name)), else_=0))
        # "Smallest" by code point, as _merge compares within a batch: a PostgreSQL database
        # with a linguistic collation would otherwise pick by how the files were batched.
        code_points = self.backend.name == "postgresql"

        def smaller(name: str) -> Any:
            new, old = stmt.excluded[name], table.c[name]
            if code_points and _is_text(old):
                return new.collate("C") < old.collate("C")
            return new < old

        set_: dict[str, Any] = {
            name: case(
                (
                    or_(
                        table.c[name].is_(None),
                        ~_not_empty(table.c[name]),
                        smaller(name),
                    ),
                    stmt.excluded[name],
                ),
                else_=table.c[name],
            )
            for name in attributes
        }
        set_["conflicts"] = table.c.conflicts.op("|")(bits)
        found = self._statements[signature] = stmt.on_conflict_do_update(
            index_elements=keys, set_=set_
        )
        return found


def _is_text(column: Any) -> bool:
    return not isinstance(column.type, Integer)


def _not_empty(column: Any) -> Any:
    # "" says nothing in a text column; an integer column (series_number) has no such value.
    return column != "" if _is_text(column) else true()


@dataclass
class _Settled:
    """Stored rows that a batch's rows would leave as they are: their ids."""

    patients: dict[PatientKey, int] = field(default_factory=dict)
    studies: dict[str, int] = field(default_factory=dict)
    series: dict[str, tuple[int, int]] = field(default_factory=dict)  # uid -> id, study id


def _unchanged(stored: Any, row: dict[str, object], columns: Sequence[str], table: str) -> bool:
    """Whether the upsert of `row` (_keep_smallest) would leave the `stored` row as it is."""
    bits = int(stored.conflicts) | int(row["conflicts"])  # type: ignore[call-overload]
    for name in columns:
        new, old = row[name], getattr(stored, name)
        if new is None:
            continue
        if old is None or old == "" or new < old:
            return False
        if old != new and name in CONFLICTS[table]:
            bits |= _bit(table, name)
    return bool(bits == stored.conflicts)


def _read_settled(
    conn: Connection,
    patient_rows: dict[PatientKey, dict[str, object]],
    study_rows: dict[str, dict[str, object]],
    series_rows: dict[str, dict[str, object]],
) -> _Settled:
    """The stored series, studies and patients the batch would not change, held FOR KEY
    SHARE until the commit: other writers may still update them (no wait), but not delete
    them from under the instances about to reference them. Read bottom-up, in the order
    delete_contents removes emptied rows."""
    settled = _Settled()
    series_stored: dict[str, Any] = {}
    for chunk in chunks(sorted(series_rows), 1000):
        query = select(series).where(series.c.series_uid.in_(chunk))
        for row in conn.execute(query.with_for_update(read=True, key_share=True)):
            series_stored[row.series_uid] = row
    study_ids: dict[str, int] = {}
    patient_columns = [patients.c.id.label("p_id"), *(patients.c[c] for c in _PATIENT_KEYS)]
    patient_columns += [patients.c[c].label(f"p_{c}") for c in (*_PATIENT_COLUMNS, "conflicts")]
    for chunk in chunks(sorted(study_rows), 1000):
        query = (
            select(studies, *patient_columns)
            .join(patients, patients.c.id == studies.c.patient_ref)
            .where(studies.c.study_uid.in_(chunk))
        )
        for row in conn.execute(query.with_for_update(read=True, key_share=True)):
            study_ids[row.study_uid] = row.id
            ours = study_rows[row.study_uid]
            key: PatientKey = (row.patient_id, row.issuer, row.synthetic_study_uid)
            patient = patient_rows.get(key)
            if key != ours["patient_key"] or patient is None:
                continue
            stored_patient = _Prefixed(row, "p_")
            if _unchanged(row, ours, list(_STUDY_COLUMNS), "studies") and _unchanged(
                stored_patient, patient, list(_PATIENT_COLUMNS), "patients"
            ):
                settled.studies[row.study_uid] = row.id
                settled.patients[key] = row.p_id
    for uid, row in series_stored.items():
        ours = series_rows[uid]
        study_id = study_ids.get(str(ours["study_key"]))
        if row.study_ref == study_id and _unchanged(row, ours, list(_SERIES_COLUMNS), "series"):
            settled.series[uid] = (row.id, row.study_ref)
    return settled


class _Prefixed:
    """The columns of `row` named with `prefix`, as attributes without it."""

    def __init__(self, row: Any, prefix: str) -> None:
        self._row = row
        self._prefix = prefix

    def __getattr__(self, name: str) -> Any:
        return getattr(self._row, self._prefix + name)


_PATIENT_KEYS = ("patient_id", "issuer", "synthetic_study_uid")
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
    # An empty value says nothing: NULL, so that any file's non-empty value is preferred.
    picked: dict[str, object] = {
        column: attributes.get(name) or None for column, name in columns.items()
    }
    if "series_number" in picked:
        picked["series_number"] = _int(attributes.get("series_number"))  # an integer column
    return picked


def _collect(
    walked: Sequence[IndexedFile],
) -> tuple[
    dict[PatientKey, dict[str, object]], dict[str, dict[str, object]], dict[str, dict[str, object]]
]:
    """The patient, study and series rows the files describe.

    Several files describe one patient, study or series, and may disagree (a series
    number, a name spelt two ways). Each column keeps the smallest non-empty value any
    file gave, so the index does not depend on the order in which files were written;
    disagreements on CONFLICTS columns set their bits. A partial file counts: its
    attributes are those of elements read whole (rows.py leaves out cut values).
    """
    patient_rows: dict[PatientKey, dict[str, object]] = {}
    study_rows: dict[str, dict[str, object]] = {}
    series_rows: dict[str, dict[str, object]] = {}
    study_patients: dict[str, set[PatientKey]] = {}
    for o in walked:
        a = o.attributes
        study_uid = a.get("study_uid")
        if not study_uid:
            continue
        patient_id, issuer = a.get("patient_id", ""), a.get("issuer", "")
        key = (patient_id, issuer, "" if patient_id else study_uid)
        study_patients.setdefault(study_uid, set()).add(key)
        patient = {
            "patient_id": key[0],
            "issuer": key[1],
            "synthetic_study_uid": key[2],
            **_pick(a, _PATIENT_COLUMNS),
            "conflicts": 0,
        }
        _merge(patient_rows, key, patient, "patients")
        study = {"study_uid": study_uid, **_pick(a, _STUDY_COLUMNS), "conflicts": 0}
        _merge(study_rows, study_uid, study, "studies")
        series_uid = a.get("series_uid")
        if series_uid:
            one = {
                "series_uid": series_uid,
                "study_key": study_uid,
                **_pick(a, _SERIES_COLUMNS),
                "conflicts": 0,
            }
            _merge(series_rows, series_uid, one, "series")
    for study_uid, keys in study_patients.items():
        row = study_rows[study_uid]
        row["patient_key"] = min(keys, key=_rank)
        if any(_disagree(a, b) for a, b in itertools.combinations(sorted(keys), 2)):
            row["conflicts"] = int(row["conflicts"]) | _bit("studies", "patient")  # type: ignore[call-overload]
    return patient_rows, study_rows, series_rows


def _hierarchy_problem(
    a: dict[str, str], series_study: dict[str, int], study_ids: dict[str, int]
) -> str | None:
    problem = None
    if _is_directory(a):
        problem = DIRECTORY_PROBLEM
    elif not a.get("study_uid"):
        problem = "no StudyInstanceUID"
    elif not a.get("series_uid"):
        problem = "no SeriesInstanceUID"
    elif series_study.get(a["series_uid"]) != study_ids.get(a["study_uid"]):
        problem = "series listed under another study"
    if not a.get("sop_instance_uid") and problem is None:
        problem = "no SOPInstanceUID"
    return problem


def _is_directory(a: dict[str, str]) -> bool:
    # A DICOMDIR's data set has no SOP Class UID: its File Meta names the directory class.
    return a.get("media_sop_class") == DIRECTORY_CLASS and not a.get("sop_class_uid")


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
        "instance_number": _int(a.get("instance_number")),
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


def _merge(rows: dict[Any, dict[str, Any]], key: Any, row: dict[str, Any], table: str) -> None:
    """Add `row` under `key`, keeping per column the smallest non-null value, and setting
    the conflict bit of a CONFLICTS column that two non-null values disagree on."""
    old = rows.get(key)
    if old is None:
        rows[key] = row
        return
    watched = CONFLICTS[table]
    for name, value in row.items():
        current = old[name]
        if value is None or name == "conflicts":
            continue
        if current is None or value < current:
            old[name] = value
        if current is not None and value != current and name in watched:
            old["conflicts"] |= _bit(table, name)


def _int(text: str | None) -> int | None:
    # rows.py has checked the value: a plain integer that fits the column, or absent.
    return int(text) if text else None
