"""The single writer: runs, incremental checks and batched, atomic writes of walked files.

Every batch is one transaction: a file's row, its instance, elements, fragments
and errors land together or not at all, so a kill at any moment leaves an index
that the next run completes. Rows are written in path order and all keys are
upserts, so several writers can share one PostgreSQL database without
duplicates or deadlocks.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Table,
    and_,
    case,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from . import scratch, summaries
from .crawler import Skipped
from .db import fetch_in
from .rows import (
    ELEMENT_COLUMNS,
    FILE_ID_PLACEHOLDER,
    FailedFile,
    IndexedFile,
    Outcome,
    looks_like_dicom_name,
    stored_path,
)
from .schema import (
    elements,
    encapsulated,
    errors,
    files,
    instances,
    paths,
    patients,
    runs,
    series,
    studies,
)

MAX_ATTACHED = 8  # scratch files attached at once (SQLite allows 10 databases besides main)


@dataclass(slots=True)
class BatchReport:
    indexed: int = 0  # read completely
    partial: int = 0  # read up to a recorded problem
    failed: int = 0  # not readable as DICOM, recorded in errors
    skipped: int = 0  # not DICOM and not named like DICOM: recorded in files only
    elements: int = 0


def _chunks(items: Sequence[object], size: int) -> Iterable[Sequence[object]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class IndexWriter:
    """Writes one run's results into the index behind `engine`."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self._insert = postgresql.insert if self.dialect == "postgresql" else sqlite.insert
        self.run_id = 0
        self._conn: Connection | None = None  # the run's one writing connection
        self._scratch = scratch.ScratchFiles()
        self._attached: dict[str, str] = {}  # scratch file -> schema alias on self._conn
        self._aliases = 0
        self._batches = 0
        self._statements: dict[tuple[Any, ...], Any] = {}  # upserts built once per run

    def connection(self) -> Connection:
        if self._conn is None:
            self._conn = self.engine.connect()
        return self._conn

    def close(self) -> None:
        """Detach and delete the run's scratch files, and release the connection."""
        if self._conn is not None:
            self._conn.rollback()
            for path, alias in list(self._attached.items()):
                self._conn.exec_driver_sql(f"DETACH DATABASE {alias}")
                scratch.remove(path)
            self._attached.clear()
            self._conn.close()
            self._conn = None

    # -- runs -------------------------------------------------------------------------------

    def start_run(self, roots: Sequence[str], options: dict[str, object]) -> int:
        """Record a new run (and close runs of this host whose process is gone)."""
        host = socket.gethostname()
        with self.engine.begin() as conn:
            stale = conn.execute(
                select(runs.c.id, runs.c.pid).where(runs.c.outcome == "running", runs.c.host == host)
            ).all()
            dead = [run_id for run_id, pid in stale if not _pid_alive(pid)]
            if dead:
                conn.execute(update(runs).where(runs.c.id.in_(dead)).values(outcome="interrupted"))
            self.run_id = conn.execute(
                insert(runs).returning(runs.c.id),
                {
                    "started_at": time.time(),
                    "roots": json.dumps(list(roots)),
                    "options": json.dumps(options, sort_keys=True),
                    "host": host,
                    "pid": os.getpid(),
                    "outcome": "running",
                    "files_seen": 0,
                    "files_indexed": 0,
                    "files_unchanged": 0,
                    "files_failed": 0,
                    "files_skipped": 0,
                    "files_missing": 0,
                    "elements_written": 0,
                },
            ).scalar_one()
        return self.run_id

    def finish_run(self, outcome: str, counts: dict[str, int]) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(runs)
                .where(runs.c.id == self.run_id)
                .values(outcome=outcome, finished_at=time.time(), **counts)
            )

    # -- incremental --------------------------------------------------------------------------

    def split_unchanged(
        self, conn: Connection, found: Sequence[tuple[str, int, int]]
    ) -> tuple[list[tuple[str, int, int]], list[int]]:
        """Split (path, size, mtime_ns) into files to read and ids of unchanged indexed files."""
        known: dict[str, tuple[int, int, int, str]] = {}
        # The driver's own cursor: this runs for every file of every run, unchanged or not.
        for chunk in _chunks([stored_path(f[0]) for f in found], 900):
            for path, size, mtime_ns, file_id, status in fetch_in(
                    conn, "SELECT path, size, mtime_ns, id, status FROM files WHERE path", chunk):
                known[path] = (size, mtime_ns, file_id, status)
        to_read: list[tuple[str, int, int]] = []
        unchanged: list[int] = []
        for item in found:
            old = known.get(stored_path(item[0]))
            if old is not None and old[0] == item[1] and old[1] == item[2] and old[3] != "missing":
                unchanged.append(old[2])
            else:
                to_read.append(item)
        return to_read, unchanged

    def mark_seen(self, conn: Connection, file_ids: Sequence[int]) -> None:
        for chunk in _chunks(file_ids, 2000):
            # Never lower last_run: a concurrent, newer run may have seen the file already.
            conn.execute(update(files).where(files.c.id.in_(chunk), files.c.last_run < self.run_id)
                         .values(last_run=self.run_id))

    def mark_missing(self, roots: Sequence[str], prune: bool) -> int:
        """Mark files under `roots` that this run did not see as missing (or delete them)."""
        conditions = []
        for root in roots:
            root = root.rstrip("/") or "/"
            below = root if root.endswith("/") else root + "/"
            # A range, not LIKE: it uses the index on path and needs no escaping.
            conditions.append(
                or_(files.c.path == root, and_(files.c.path >= below, files.c.path < below[:-1] + "0"))
            )
        if not conditions:
            return 0
        gone = and_(files.c.last_run < self.run_id, or_(*conditions))
        with self.engine.begin() as conn:
            if prune:
                ids = [row[0] for row in conn.execute(select(files.c.id).where(gone))]
                deltas = summaries.Deltas()
                for chunk in _chunks(ids, 2000):
                    self._delete_contents(conn, list(chunk), deltas)  # type: ignore[arg-type]
                    conn.execute(delete(errors).where(errors.c.path.in_(
                        select(files.c.path).where(files.c.id.in_(chunk)))))
                    conn.execute(delete(files).where(files.c.id.in_(chunk)))
                summaries.apply(conn, deltas)
                return len(ids)
            result = conn.execute(update(files).where(gone, files.c.status != "missing").values(status="missing"))
            return result.rowcount or 0

    # -- batches ------------------------------------------------------------------------------

    def write_batch(
        self, outcomes: Sequence[Outcome], unchanged_ids: Sequence[int], skipped: Sequence[Skipped],
    ) -> BatchReport:
        """Write walked files, unchanged marks and crawl skips: each group of files one transaction.

        On SQLite a transaction reads from at most MAX_ATTACHED scratch files (SQLite's
        limit on attached databases), so a batch from many workers may take several.
        """
        conn = self.connection()
        report = BatchReport()
        groups = self._scratch_groups(outcomes) if self.dialect == "sqlite" else [list(outcomes)]
        for number, group in enumerate(groups or [[]]):
            if self.dialect == "sqlite":
                self._attach({o.elements[0] for o in group
                              if isinstance(o, IndexedFile) and o.element_rows})  # type: ignore[index]
            with conn.begin():
                deltas = summaries.Deltas()
                if number == 0:
                    now = time.time()
                    if unchanged_ids:
                        self.mark_seen(conn, unchanged_ids)
                    if skipped:
                        self._record_skips(conn, skipped, now)
                if group:
                    self._write_files(conn, group, report, deltas)
                summaries.apply(conn, deltas)
        if self.dialect == "sqlite":
            self._release_scratch()
        self._batches += 1
        if self.dialect == "postgresql" and self._batches in _ANALYZE_AFTER:
            # Tables that grew from empty within one run: give the planner their real sizes
            # (autovacuum may not have come by yet), or it picks scans where an index serves.
            with conn.begin():
                conn.exec_driver_sql("ANALYZE files, elements, instances, series, studies, patients, errors")
        return report

    def _with_contents(self, conn: Connection, file_ids: list[int]) -> list[int]:
        """The ids among `file_ids` of files that have an instance row (and so element rows)."""
        found: list[int] = []
        for chunk in _chunks(sorted(file_ids), 900):
            found.extend(row[0] for row in fetch_in(conn, "SELECT file_id FROM instances WHERE file_id", chunk))
        return sorted(found)

    def _scratch_groups(self, outcomes: Sequence[Outcome]) -> list[list[Outcome]]:
        groups: list[list[Outcome]] = []
        files_of: dict[str, int] = {}  # scratch file -> group index
        for o in outcomes:
            path = o.elements[0] if isinstance(o, IndexedFile) and o.element_rows else None  # type: ignore[index]
            if path is not None:
                self._scratch.seen(path)
            if path is None:
                index = 0
            elif path in files_of:
                index = files_of[path]
            else:
                index = next((i for i, g in enumerate(groups)
                              if sum(1 for v in files_of.values() if v == i) < MAX_ATTACHED), len(groups))
                files_of[path] = index
            while len(groups) <= index:
                groups.append([])
            groups[index].append(o)
        return groups

    def _attach(self, paths_needed: set[str]) -> None:
        conn = self.connection()
        for path in sorted(paths_needed - self._attached.keys()):
            if len(self._attached) >= MAX_ATTACHED:
                for old in [p for p in self._attached if p not in paths_needed]:
                    conn.exec_driver_sql(f"DETACH DATABASE {self._attached.pop(old)}")
                    if len(self._attached) < MAX_ATTACHED:
                        break
            self._aliases += 1
            alias = f"scratch{self._aliases}"
            conn.exec_driver_sql(f"ATTACH DATABASE ? AS {alias}", (path,))
            self._attached[path] = alias
        conn.commit()

    def _release_scratch(self) -> None:
        """Delete scratch files that a newer one replaced and whose rows are all in the index."""
        conn = self.connection()
        for path in self._scratch.deletable(set()):
            alias = self._attached.pop(path, None)
            if alias is not None:
                conn.exec_driver_sql(f"DETACH DATABASE {alias}")
            scratch.remove(path)
        conn.commit()

    def _write_files(self, conn: Connection, outcomes: Sequence[Outcome], report: BatchReport,
                     deltas: summaries.Deltas) -> None:
        now = time.time()
        ordered = sorted(outcomes, key=lambda o: o.path)  # one lock order for every writer
        file_ids = self._upsert_files(conn, ordered, now)
        # Only files that have an instance row have contents to replace (asked after the
        # upsert, which holds the files' rows: another writer cannot add contents meanwhile).
        # Deleting by every id of the batch would cost a scan per batch once the planner's
        # statistics of a large elements table are stale.
        self._delete_contents(conn, self._with_contents(conn, list(file_ids.values())), deltas)
        conn.execute(delete(errors).where(errors.c.path.in_([o.path for o in ordered])))

        walked = [o for o in ordered if isinstance(o, IndexedFile)]
        new_paths = {row[0]: row for o in walked for row in o.new_paths}
        if new_paths:
            conn.execute(
                self._insert(paths).on_conflict_do_nothing(index_elements=["id"]),
                [dict(zip(("id", "path", "location", "tag", "depth", "keyword", "name",
                           "private_creator"), row)) for row in sorted(new_paths.values())],
            )
        self._write_hierarchy(conn, walked, file_ids, deltas)

        fragment_rows: list[tuple[object, ...]] = []
        error_rows: list[dict[str, object]] = []
        for outcome in ordered:
            if isinstance(outcome, FailedFile):
                if outcome.status == "not_dicom" and not looks_like_dicom_name(outcome.path):
                    report.skipped += 1
                    continue
                report.failed += 1
                error_rows.append(_error(self.run_id, outcome.path, "read", outcome.reason,
                                         outcome.message, "error", now))
                continue
            record = outcome.record
            if record.problem is not None:
                report.partial += 1
                reason = "truncated" if "ends" in record.problem or "declares" in record.problem else "invalid"
                error_rows.append(_error(self.run_id, outcome.path, "walk", reason, record.problem,
                                         "error", now))
            else:
                report.indexed += 1
            for warning in record.warnings:
                error_rows.append(_error(self.run_id, outcome.path, "walk", "warning", warning,
                                         "warning", now))
            report.elements += outcome.element_rows
            fragment_rows.extend((file_ids[outcome.path],) + row for row in outcome.encapsulated_rows)
        self._insert_elements(conn, walked, file_ids)
        if fragment_rows:
            conn.execute(insert(encapsulated), [
                dict(zip(("file_id", "ordinal", "fragments", "fragment_bytes", "fragment_sizes",
                          "offset_table"), row)) for row in fragment_rows])
        if error_rows:
            conn.execute(insert(errors), error_rows)
        summaries.add_counted(deltas, [o.counts for o in walked if o.counts is not None])

    def _insert_elements(self, conn: Connection, walked: Sequence[IndexedFile], file_ids: dict[str, int]) -> None:
        """Move the element rows the workers prepared into the index, with their file ids:
        COPY text on PostgreSQL; INSERT ... SELECT from the attached scratch files on SQLite."""
        if self.dialect == "postgresql":
            cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
            with cursor.copy(f"COPY elements ({', '.join(ELEMENT_COLUMNS)}) FROM STDIN") as copy:
                for o in walked:
                    if o.elements:
                        copy.write(o.elements.replace(FILE_ID_PLACEHOLDER, str(file_ids[o.path])))  # type: ignore[union-attr]
            return
        by_file: dict[str, list[tuple[int, int, int]]] = {}
        for o in walked:
            if o.element_rows:
                path, first, last = o.elements  # type: ignore[misc,str-unpack]
                by_file.setdefault(path, []).append((file_ids[o.path], first, last))  # type: ignore[arg-type]
        columns = ", ".join(ELEMENT_COLUMNS)
        selected = ", ".join(scratch.SCRATCH_COLUMNS)
        for path, ranges in by_file.items():
            alias = self._attached[path]
            conn.exec_driver_sql(
                f"INSERT INTO elements ({columns}) SELECT ?, {selected} FROM {alias}.rows "
                "WHERE rowid BETWEEN ? AND ?", ranges)  # type: ignore[arg-type]

    def _upsert_files(self, conn: Connection, ordered: Sequence[Outcome], now: float) -> dict[str, int]:
        rows = []
        for o in ordered:
            row: dict[str, object] = {
                "path": o.path, "size": o.size, "mtime_ns": o.mtime_ns,
                "first_run": self.run_id, "last_run": self.run_id, "indexed_at": now,
                "preamble": None, "has_meta": None, "transfer_syntax": None, "explicit_vr": None,
                "little_endian": None, "deflated": None, "element_count": None, "max_depth": None,
                "fragment_sequences": None, "fragments": None, "problem": None,
            }
            if isinstance(o, IndexedFile):
                r = o.record
                row.update(
                    status="indexed" if r.problem is None else "partial",
                    preamble=r.preamble, has_meta=r.has_meta, transfer_syntax=r.transfer_syntax,
                    explicit_vr=r.explicit_vr, little_endian=r.little_endian, deflated=r.deflated,
                    element_count=r.element_count, max_depth=r.max_depth,
                    fragment_sequences=r.fragment_sequences, fragments=r.fragments, problem=r.problem,
                )
            else:
                row.update(status=o.status, problem=o.message)
            rows.append(row)
        if self.dialect == "sqlite":
            return self._upsert_files_sqlite(conn, rows)
        stmt = self._insert(files)
        changing: dict[str, Any] = {c: stmt.excluded[c] for c in rows[0] if c not in ("path", "first_run")}
        changing["last_run"] = case((files.c.last_run > stmt.excluded.last_run, files.c.last_run),
                                    else_=stmt.excluded.last_run)
        stmt = stmt.on_conflict_do_update(index_elements=["path"], set_=changing)
        result = conn.execute(stmt.returning(files.c.id, files.c.path, sort_by_parameter_order=True), rows)
        return {row.path: row.id for row in result}

    def _upsert_files_sqlite(self, conn: Connection, rows: list[dict[str, object]]) -> dict[str, int]:
        """The same upsert as plain SQL: SQLAlchemy's RETURNING path costs a statement per row on
        SQLite; the driver's executemany and one query for the ids cost a tenth of that."""
        columns = list(rows[0])
        updates = [f"{c} = excluded.{c}" for c in columns if c not in ("path", "first_run", "last_run")]
        updates.append("last_run = max(last_run, excluded.last_run)")  # never lowered
        _insert_by_driver(conn, "files", rows, f"ON CONFLICT (path) DO UPDATE SET {', '.join(updates)}")
        ids: dict[str, int] = {}
        paths = [row["path"] for row in rows]
        for chunk in _chunks(paths, 900):
            found = conn.exec_driver_sql(
                f"SELECT path, id FROM files WHERE path IN ({', '.join('?' * len(chunk))})", tuple(chunk))
            ids.update(found.fetchall())  # type: ignore[arg-type]
        return ids

    def _delete_contents(self, conn: Connection, file_ids: list[int], deltas: summaries.Deltas) -> None:
        """Remove what a file held before (a re-index), and hierarchy rows left empty by that."""
        if not file_ids:
            return
        for chunk in _chunks(file_ids, 2000):
            old_series = {
                row[0] for row in conn.execute(
                    select(instances.c.series_ref).where(instances.c.file_id.in_(chunk),
                                                         instances.c.series_ref.is_not(None)))
            }
            summaries.remove_files(conn, chunk, deltas)  # type: ignore[arg-type]
            conn.execute(delete(elements).where(elements.c.file_id.in_(chunk)))
            conn.execute(delete(encapsulated).where(encapsulated.c.file_id.in_(chunk)))
            conn.execute(delete(instances).where(instances.c.file_id.in_(chunk)))
            if old_series:
                self._delete_empty_hierarchy(conn, sorted(old_series))

    def _delete_empty_hierarchy(self, conn: Connection, series_ids: list[int]) -> None:
        study_ids = sorted({r[0] for r in conn.execute(select(series.c.study_ref).where(series.c.id.in_(series_ids)))})
        conn.execute(delete(series).where(
            series.c.id.in_(series_ids),
            ~select(instances.c.file_id).where(instances.c.series_ref == series.c.id).exists()))
        patient_ids = sorted({r[0] for r in conn.execute(select(studies.c.patient_ref).where(studies.c.id.in_(study_ids)))})
        conn.execute(delete(studies).where(
            studies.c.id.in_(study_ids),
            ~select(series.c.id).where(series.c.study_ref == studies.c.id).exists()))
        conn.execute(delete(patients).where(
            patients.c.id.in_(patient_ids),
            ~select(studies.c.id).where(studies.c.patient_ref == patients.c.id).exists()))

    def _write_hierarchy(self, conn: Connection, walked: Sequence[IndexedFile], file_ids: dict[str, int],
                         deltas: summaries.Deltas) -> None:
        """Upsert patients, studies and series, then insert one instance per walked file."""
        # Several files describe one patient, study or series, and may disagree (a series
        # number, a name spelt two ways). Each column keeps the smallest value any file gave,
        # so the index does not depend on the order in which files were written.
        patient_rows: dict[tuple[str, str], dict[str, object]] = {}
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
                a = {k: a[k] for k in ("patient_id", "issuer", "study_uid", "series_uid") if k in a}
            _merge(patient_rows, key, {
                "patient_id": key[0], "issuer": key[1], "patient_name": a.get("patient_name"),
                "birth_date": a.get("birth_date"), "sex": a.get("sex")})
            _merge(study_rows, study_uid, {
                "study_uid": study_uid, "patient_key": key, "study_date": a.get("study_date"),
                "study_time": a.get("study_time"), "accession_number": a.get("accession_number"),
                "study_id": a.get("study_id"), "description": a.get("study_description"),
                "referring_physician": a.get("referring_physician")})
            series_uid = a.get("series_uid")
            if series_uid:
                _merge(series_rows, series_uid, {
                    "series_uid": series_uid, "study_key": study_uid, "modality": a.get("modality"),
                    "series_number": a.get("series_number"), "description": a.get("series_description"),
                    "body_part": a.get("body_part"), "manufacturer": a.get("manufacturer"),
                    "model": a.get("model"), "series_date": a.get("series_date")})

        patient_ids: dict[tuple[str, str], int] = {}
        if patient_rows:
            keys = sorted(patient_rows)
            conn.execute(self._keep_smallest(patients, ["patient_id", "issuer"], ("patient_name", "birth_date", "sex")),
                         [patient_rows[k] for k in keys])
            for chunk in _chunks(keys, 500):
                for row in conn.execute(select(patients.c.id, patients.c.patient_id, patients.c.issuer).where(
                        or_(*[and_(patients.c.patient_id == p, patients.c.issuer == i) for p, i in chunk]))):  # type: ignore[misc,has-type]
                    patient_ids[(row.patient_id, row.issuer)] = row.id
        study_ids, _ = self._upsert_keyed(conn, studies, "study_uid", study_rows, "patient_key", "patient_ref",
                                          patient_ids)
        series_ids, series_study = self._upsert_keyed(conn, series, "series_uid", series_rows, "study_key",
                                                      "study_ref", study_ids)

        instance_rows = []
        for o in walked:
            a = o.attributes
            problem = None
            series_ref = None
            if not a.get("study_uid"):
                problem = "no StudyInstanceUID"
            elif not a.get("series_uid"):
                problem = "no SeriesInstanceUID"
            else:
                series_ref = series_ids.get(a["series_uid"])
                if series_study.get(a["series_uid"]) != study_ids.get(a["study_uid"]):
                    problem = "series listed under another study"
            if not a.get("sop_instance_uid") and problem is None:
                problem = "no SOPInstanceUID"
            instance_rows.append({
                "file_id": file_ids[o.path], "series_ref": series_ref,
                "sop_instance_uid": a.get("sop_instance_uid"), "sop_class_uid": a.get("sop_class_uid"),
                "modality": a.get("modality"), "instance_number": a.get("instance_number"),
                "content_date": a.get("content_date"), "rows": _int(a.get("rows")),
                "columns": _int(a.get("columns")), "frames": _int(a.get("frames")),
                "manufacturer": a.get("manufacturer"), "model": a.get("model"), "study_date": a.get("study_date"),
                "element_count": o.record.element_count, "hierarchy_problem": problem,
            })
        if instance_rows:
            if self.dialect == "sqlite":  # SQLAlchemy's executemany costs 8 µs a row more
                _insert_by_driver(conn, "instances", instance_rows)
            else:
                conn.execute(insert(instances), instance_rows)
            summaries.add_instances(deltas, [
                (r["modality"], r["sop_class_uid"], r["element_count"], r["series_ref"] is not None,
                 r["manufacturer"], r["model"], r["study_date"]) for r in instance_rows])

    def _upsert_keyed(self, conn: Connection, table: Table, key: str, rows: dict[str, dict[str, object]],
                      parent_key: str, parent_column: str, parent_ids: dict[Any, int],
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
        for chunk in _chunks(sorted(rows), 1000):
            for found in conn.execute(select(table.c.id, column, table.c[parent_column]).where(column.in_(chunk))):
                ids[found[1]] = found[0]
                parents[found[1]] = found[2]
        return ids, parents

    def _keep_smallest(self, table: Table, keys: list[str], attributes: Sequence[str]) -> Any:
        """INSERT that, on a key conflict, keeps per column the smallest non-null value."""
        # Built once per run: constructing it (and its cache key) cost milliseconds per batch.
        signature = (table.name, tuple(keys), tuple(attributes))
        found = self._statements.get(signature)
        if found is not None:
            return found
        stmt = self._insert(table)
        found = self._statements[signature] = stmt.on_conflict_do_update(index_elements=keys, set_={
            name: case((or_(table.c[name].is_(None), stmt.excluded[name] < table.c[name]), stmt.excluded[name]),
                       else_=table.c[name])
            for name in attributes
        })
        return found

    def _record_skips(self, conn: Connection, skipped: Sequence[Skipped], now: float) -> None:
        conn.execute(delete(errors).where(errors.c.path.in_([stored_path(s.path) for s in skipped]), errors.c.stage == "crawl"))
        conn.execute(insert(errors), [
            _error(self.run_id, stored_path(s.path), "crawl", s.reason, s.detail, "error" if s.reason != "not_regular" else "warning", now)
            for s in skipped
        ])

# Batch numbers of a run after which PostgreSQL's statistics are refreshed (the tables grow
# tenfold between two of them when the index started empty).
_ANALYZE_AFTER = frozenset({2, 20, 200, 2000})


def _insert_by_driver(conn: Connection, table: str, rows: Sequence[dict[str, Any]], tail: str = "") -> None:
    """INSERT `rows` (dicts with the same keys) through the SQLite driver's executemany; `tail`
    follows the VALUES clause (ON CONFLICT ...)."""
    names = list(rows[0])
    quoted = ", ".join(f'"{name}"' for name in names)  # "rows" and "columns" are column names
    values = itemgetter(*names)
    conn.exec_driver_sql(f"INSERT INTO {table} ({quoted}) VALUES ({', '.join('?' * len(names))}) {tail}",
                         [values(row) for row in rows])  # type: ignore[arg-type]


def _merge(rows: dict[Any, dict[str, object]], key: Any, row: dict[str, object]) -> None:
    """Add `row` under `key`, keeping per column the smallest non-null value."""
    old = rows.get(key)
    if old is None:
        rows[key] = row
        return
    for name, value in row.items():
        current = old[name]
        if value is not None and (current is None or value < current):  # type: ignore[operator]
            old[name] = value


def _error(run_id: int, path: str, stage: str, reason: str, message: str, severity: str, now: float) -> dict[str, object]:
    return {"run_id": run_id, "path": path, "stage": stage, "reason": reason, "message": message,
            "severity": severity, "at": now}


def _int(text: str | None) -> int | None:
    if not text:
        return None
    try:
        return int(text.split("\\")[0].strip())
    except ValueError:
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def count_rows(conn: Connection, table: object) -> int:
    return int(conn.execute(select(func.count()).select_from(table)).scalar_one())  # type: ignore[arg-type]
