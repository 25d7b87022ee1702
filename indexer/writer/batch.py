"""One batch of walked files, unchanged marks and crawl skips, written atomically.

Every group of a batch is one transaction: a file's row, its instance, elements,
fragments and errors land together or not at all, so a kill at any moment leaves an
index that the next run completes. Rows are written in path order and all keys are
upserts, so several writers can share one PostgreSQL database without duplicates or
deadlocks. The tag summaries of the batch are written in the same transaction.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, delete, insert, update

from .. import summaries
from ..backends.base import Backend
from ..crawler import SKIPPED_BY_DESIGN, Skipped
from ..db import chunks
from ..errors import Reason
from ..rows import FailedFile, IndexedFile, Outcome, stored_path
from ..schema import encapsulated, errors, files, paths
from .contents import delete_contents, with_contents
from .hierarchy import Hierarchy

_PATH_COLUMNS = ("id", "path", "location", "tag", "depth", "keyword", "name", "private_creator")
_FRAGMENT_COLUMNS = (
    "file_id",
    "ordinal",
    "fragments",
    "fragment_bytes",
    "fragment_sizes",
    "offset_table",
)
_EMPTY_FILE_COLUMNS = (
    "preamble",
    "has_meta",
    "transfer_syntax",
    "explicit_vr",
    "little_endian",
    "deflated",
    "element_count",
    "max_depth",
    "fragment_sequences",
    "fragments",
    "problem",
)


@dataclass(slots=True)
class BatchReport:
    indexed: int = 0  # read completely
    partial: int = 0  # read up to a recorded problem
    failed: int = 0  # not readable as DICOM, recorded in errors
    skipped: int = 0  # not DICOM and not named like DICOM: recorded in files only
    elements: int = 0

    def add(self, other: BatchReport) -> None:
        self.indexed += other.indexed
        self.partial += other.partial
        self.failed += other.failed
        self.skipped += other.skipped
        self.elements += other.elements


class BatchWriter:
    """Writes one run's batches on the run's one writing connection."""

    def __init__(
        self, engine: Engine, backend: Backend, run_id: int, *, deferred_summaries: bool = False
    ) -> None:
        self.engine = engine
        self.backend = backend
        self.run_id = run_id
        # One of several concurrent writers: counters go to the delta tables (summaries.apply).
        self.deferred_summaries = deferred_summaries
        self._hierarchy = Hierarchy(backend, skip_settled=deferred_summaries)
        self._conn: Connection | None = None

    def connection(self) -> Connection:
        if self._conn is None:
            self._conn = self.engine.connect()
        return self._conn

    def merge_summaries(self) -> None:
        """Fold the delta tables of concurrent writers into the summaries, in a transaction
        of its own (summaries.merge_pending)."""
        conn = self.connection()
        with conn.begin():
            summaries.merge_pending(conn)

    def close(self) -> None:
        """Let the backend release what it holds, and release the connection."""
        conn = self._conn
        if conn is not None:
            conn.rollback()
        self.backend.close(conn)
        if conn is not None:
            conn.close()
            self._conn = None

    def write(
        self, outcomes: Sequence[Outcome], unchanged_ids: Sequence[int], skipped: Sequence[Skipped]
    ) -> BatchReport:
        """Write walked files, unchanged marks and crawl skips.

        A group that the database refuses for its data is split until the refusing files
        are found; they are recorded as errors of stage `write` and the rest lands."""
        conn = self.connection()
        report = BatchReport()
        if self.deferred_summaries:
            self._commit_new_paths(conn, outcomes)
        for number, group in enumerate(self.backend.groups(outcomes) or [[]]):
            self.backend.before_group(conn, group)
            marks = (unchanged_ids, skipped) if number == 0 else ((), ())
            try:
                self._write_group(conn, group, report, *marks)
            except Exception as err:
                complaint = self.backend.refused(err)
                if complaint is None:
                    raise
                if number == 0:
                    self._write_marks(conn, report, *marks)
                if group:
                    self._split(conn, group, report, complaint)
        self.backend.after_batch(conn)
        return report

    def _commit_new_paths(self, conn: Connection, outcomes: Sequence[Outcome]) -> None:
        """Concurrent writers: commit the chunk's new sequence paths first, in a transaction of
        their own. Every worker sends each path once per run, so at the start of a run the
        writers insert the same paths at once, and each would wait for the others' whole
        chunk transactions to end. A path nobody uses is harmless (paths is a dictionary);
        one the database refuses is left to the chunk's transaction, which records it."""
        rows = {row[0]: row for o in outcomes if isinstance(o, IndexedFile) for row in o.new_paths}
        if not rows:
            return
        try:
            with conn.begin():
                conn.execute(
                    self.backend.insert(paths).on_conflict_do_nothing(index_elements=["id"]),
                    [dict(zip(_PATH_COLUMNS, row, strict=True)) for row in sorted(rows.values())],
                )
        except Exception as err:
            if self.backend.refused(err) is None:
                raise

    def _write_marks(
        self,
        conn: Connection,
        report: BatchReport,
        unchanged_ids: Sequence[int],
        skipped: Sequence[Skipped],
    ) -> None:
        """The unchanged marks and crawl skips of a refused group; a skip the database
        refuses (a path longer than PostgreSQL can index) is left out, one at a time."""
        try:
            self._write_group(conn, [], report, unchanged_ids, skipped)
            return
        except Exception as err:
            if self.backend.refused(err) is None:
                raise
        self._write_group(conn, [], report, unchanged_ids)
        for skip in skipped:
            try:
                self._write_group(conn, [], report, (), [skip])
            except Exception as err:
                if self.backend.refused(err) is None:
                    raise

    def _write_group(
        self,
        conn: Connection,
        group: Sequence[Outcome],
        report: BatchReport,
        unchanged_ids: Sequence[int] = (),
        skipped: Sequence[Skipped] = (),
    ) -> None:
        """One transaction; `report` counts its files only once it has committed."""
        written = BatchReport()
        with conn.begin():
            self._mark_seen(conn, unchanged_ids)
            self._record_skips(conn, skipped, time.time())
            if group:
                deltas = summaries.Deltas()  # the summaries' share of this transaction
                self._write_files(conn, group, written, deltas)
                summaries.add_counted(
                    deltas,
                    [
                        o.counts
                        for o in group
                        if isinstance(o, IndexedFile) and o.counts is not None
                    ],
                )
                # Lands with the transaction or not at all.
                summaries.apply(conn, deltas, deferred=self.deferred_summaries)
        report.add(written)

    def _split(
        self, conn: Connection, group: Sequence[Outcome], report: BatchReport, complaint: str
    ) -> None:
        """Write `group`, which the database refused with `complaint`, in halves until the
        refusing files are alone; each of those is recorded as refused."""
        if len(group) == 1:
            self._record_refusal(conn, group[0], report, complaint)
            return
        middle = len(group) // 2
        for half in (group[:middle], group[middle:]):
            try:
                self._write_group(conn, half, report)
            except Exception as err:
                found = self.backend.refused(err)
                if found is None:
                    raise
                self._split(conn, half, report, found)

    def _record_refusal(
        self, conn: Connection, outcome: Outcome, report: BatchReport, complaint: str
    ) -> None:
        """Record `outcome` as a file the database refused: status error with its size and
        mtime (an unchanged re-run skips it, as it skips an unreadable file), one error row,
        no contents. Its sequence paths and tag-key definitions still land: this worker sent
        them once, and later files of the worker use them."""
        refused = FailedFile(
            outcome.path,
            outcome.size,
            outcome.mtime_ns,
            "error",
            Reason.REFUSED.value,
            f"the database refused the file's rows: {complaint}",
            stage="write",
        )
        # Its definitions may be what is refused; its own row too (a path longer than
        # PostgreSQL can index, an mtime beyond 64 bits): then only its error row, or nothing,
        # lands; it is counted failed and read again next run.
        kept = (outcome,) if isinstance(outcome, IndexedFile) else ()
        attempts: list[tuple[FailedFile | None, bool, Outcome | None]] = [
            *((refused, True, o) for o in kept),
            (refused, True, None),
            *((refused, False, o) for o in kept),
            (refused, False, None),
            *((None, False, o) for o in kept),
        ]
        for failed, file_row, definitions_of in attempts:
            try:
                written = self._write_refused(conn, failed, file_row, definitions_of)
            except Exception as err:
                if self.backend.refused(err) is None:
                    raise
                continue
            report.add(written)
            if file_row:
                return
            break
        report.failed += 1

    def _write_refused(
        self,
        conn: Connection,
        refused: FailedFile | None,
        file_row: bool,
        definitions_of: Outcome | None,
    ) -> BatchReport:
        """One transaction: the refused file's row and error (its old contents removed), or
        its error row alone (without `file_row`), with the definitions `definitions_of`."""
        written = BatchReport()
        with conn.begin():
            deltas = summaries.Deltas()
            if refused is not None and file_row:
                self._write_files(conn, [refused], written, deltas)
            elif refused is not None:
                conn.execute(delete(errors).where(errors.c.path == refused.path))
                conn.execute(
                    insert(errors),
                    [
                        self._error(
                            refused.path,
                            refused.stage,
                            refused.reason,
                            refused.message,
                            "error",
                            time.time(),
                        )
                    ],
                )
            if isinstance(definitions_of, IndexedFile):
                self._write_definitions(conn, definitions_of, deltas)
            # What its old contents counted goes.
            summaries.apply(conn, deltas, deferred=self.deferred_summaries)
        return written

    def _write_definitions(
        self, conn: Connection, outcome: IndexedFile, deltas: summaries.Deltas
    ) -> None:
        if outcome.new_paths:
            conn.execute(
                self.backend.insert(paths).on_conflict_do_nothing(index_elements=["id"]),
                [dict(zip(_PATH_COLUMNS, row, strict=True)) for row in sorted(outcome.new_paths)],
            )
        counts = outcome.counts
        if counts is not None:
            deltas.key_rows.update((row[0], row) for row in counts.key_rows)
            deltas.path_keys.update(counts.path_keys)

    def _mark_seen(self, conn: Connection, file_ids: Sequence[int]) -> None:
        for chunk in chunks(file_ids, 2000):
            # Never lower last_run: a concurrent, newer run may have seen the file already.
            conn.execute(
                update(files)
                .where(files.c.id.in_(chunk), files.c.last_run < self.run_id)
                .values(last_run=self.run_id)
            )

    def _record_skips(self, conn: Connection, skipped: Sequence[Skipped], now: float) -> None:
        if not skipped:
            return
        conn.execute(
            delete(errors).where(
                errors.c.path.in_([stored_path(s.path) for s in skipped]), errors.c.stage == "crawl"
            )
        )
        conn.execute(
            insert(errors),
            [
                self._error(
                    stored_path(s.path),
                    "crawl",
                    s.reason,
                    s.detail,
                    "warning" if s.reason in SKIPPED_BY_DESIGN else "error",
                    now,
                )
                for s in skipped
            ],
        )

    def _write_files(
        self,
        conn: Connection,
        outcomes: Sequence[Outcome],
        report: BatchReport,
        deltas: summaries.Deltas,
    ) -> None:
        now = time.time()
        ordered = sorted(outcomes, key=lambda o: o.path)  # one lock order for every writer
        file_ids = self.backend.upsert_files(conn, [self._file_row(o, now) for o in ordered])
        # Only files that have an instance row have contents to replace (asked after the
        # upsert, which holds the files' rows: another writer cannot add contents meanwhile).
        # Deleting by every id of the batch would cost a scan per batch once the planner's
        # statistics of a large elements table are stale.
        delete_contents(conn, with_contents(conn, list(file_ids.values())), deltas)
        conn.execute(delete(errors).where(errors.c.path.in_([o.path for o in ordered])))
        walked = [o for o in ordered if isinstance(o, IndexedFile)]
        new_paths = {row[0]: row for o in walked for row in o.new_paths}
        if new_paths:
            conn.execute(
                self.backend.insert(paths).on_conflict_do_nothing(index_elements=["id"]),
                [dict(zip(_PATH_COLUMNS, row, strict=True)) for row in sorted(new_paths.values())],
            )
        error_rows = [row for o in ordered for row in self._outcome_errors(o, report, now)]
        self.backend.insert_elements(conn, walked, file_ids)
        fragment_rows = [(file_ids[o.path],) + row for o in walked for row in o.encapsulated_rows]
        if fragment_rows:
            conn.execute(
                insert(encapsulated),
                [dict(zip(_FRAGMENT_COLUMNS, row, strict=True)) for row in fragment_rows],
            )
        if error_rows:
            conn.execute(insert(errors), error_rows)
        # The hierarchy last: its patient, study and series rows are shared by concurrent
        # writers, which then hold them only from here to the commit, not during the COPY.
        self._hierarchy.write(conn, walked, file_ids, deltas)

    def _file_row(self, o: Outcome, now: float) -> dict[str, object]:
        row: dict[str, object] = {
            "path": o.path,
            "size": o.size,
            "mtime_ns": o.mtime_ns,
            "first_run": self.run_id,
            "last_run": self.run_id,
            "indexed_at": now,
            **dict.fromkeys(_EMPTY_FILE_COLUMNS),
        }
        if isinstance(o, FailedFile):
            row.update(status=o.status, problem=o.message)
            return row
        r = o.record
        row.update(
            status="indexed" if r.problem is None else "partial",
            preamble=r.preamble,
            has_meta=r.has_meta,
            transfer_syntax=r.transfer_syntax,
            explicit_vr=r.explicit_vr,
            little_endian=r.little_endian,
            deflated=r.deflated,
            element_count=r.element_count,
            max_depth=r.max_depth,
            fragment_sequences=r.fragment_sequences,
            fragments=r.fragments,
            problem=r.problem,
        )
        return row

    def _outcome_errors(
        self, outcome: Outcome, report: BatchReport, now: float
    ) -> list[dict[str, object]]:
        """Count `outcome` in `report`; return its error rows."""
        if isinstance(outcome, FailedFile):
            if outcome.skip:
                report.skipped += 1
                return []
            report.failed += 1
            return [
                self._error(
                    outcome.path, outcome.stage, outcome.reason, outcome.message, "error", now
                )
            ]
        record = outcome.record
        rows = []
        if record.problem is not None:
            report.partial += 1
            rows.append(
                self._error(
                    outcome.path,
                    "walk",
                    (record.problem_reason or Reason.INVALID).value,
                    record.problem,
                    "error",
                    now,
                )
            )
        else:
            report.indexed += 1
        rows.extend(
            self._error(outcome.path, "walk", Reason.WARNING.value, warning, "warning", now)
            for warning in record.warnings
        )
        report.elements += outcome.element_rows
        return rows

    def _error(
        self, path: str, stage: str, reason: str, message: str, severity: str, now: float
    ) -> dict[str, object]:
        return {
            "run_id": self.run_id,
            "path": path,
            "stage": stage,
            "reason": reason,
            "message": message,
            "severity": severity,
            "at": now,
        }
