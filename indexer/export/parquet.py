"""`indexer export parquet DIR`: the index as Parquet files, for DuckDB, Spark, Trino, BigQuery.

What DIR holds after an export:

  export.json                 the manifest: export format, schema revision, time, and for each
                              table its files and row counts (element parts with the file ids
                              they cover and a fingerprint of those files)
  duckdb.sql                  views named like the index's tables over these files
  <table>/part-00000.parquet  one folder per table; `elements` split into parts of at most
                              `part_rows` rows, each cut between two files

Every table is read in one snapshot of the index (backends.snapshot), so the files agree
with each other even while `indexer index` writes. Element rows carry their sequence path and
keyword (from `paths`) and are sorted by path inside each row group, so that the values of
one tag lie together and compress (zstd). Nothing is written under a final name until it is
whole: new files go to a staging folder in DIR and are renamed into place at the end, the
manifest last.

An export into DIR that holds an earlier export of the same index rewrites only the element
parts whose files changed (re-indexed, added, forgotten or pruned, seen by the files' ids,
times and sizes) and adds parts for new files; the other tables are small and are written
anew.
"""

from __future__ import annotations

import bisect
import contextlib
import fcntl
import gc
import hashlib
import json
import os
import secrets
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import BigInteger, Boolean, Connection, Float, Integer, Table

from .. import __version__, schema
from ..backends.snapshot import placeholder, read_snapshot, stream_rows
from ..db import connect, current_revision, describe_url, resolve_url
from ..errors import IndexerError
from ..rows import ELEMENT_COLUMNS  # read in this order; path and keyword come from paths

EXPORT_FORMAT = 1  # of export.json and the files' layout
MANIFEST = "export.json"
VIEWS = "duckdb.sql"
DEFAULT_PART_ROWS = 4_000_000  # rows per element part: ~6 MB at the 1.5 bytes a row measured
ROW_GROUP_ROWS = 500_000  # rows sorted together: a larger group compresses better, costs memory
COMPRESSION_LEVEL = 6
_STAGING = ".staging-"
# The collector's gen-0 threshold while rows stream (as in run.py): its scans of the millions
# of row tuples, which hold no cycles, took half of the time of turning rows into columns.
_GC_THRESHOLD = (100_000, 50, 100)
_LOCK = ".export.lock"

# Tables written whole on every export, with the order their rows are written in: similar
# rows next to each other compress (paths under one folder, rows of one series).
TABLE_ORDER = {
    "runs": "id",
    "files": "path",
    "errors": "reason, path, id",
    "patients": "id",
    "studies": "patient_ref, id",
    "series": "study_ref, id",
    "instances": "series_ref, file_id",
    "paths": "path, id",
    "encapsulated": "file_id, ordinal",
    "usage_groups": "id",
    "tag_keys": "key",
    "path_keys": "key_id, path_id",
    "tag_usage": "key_id, group_id",
    "tag_values": "key_id, value, group_id",
    "instance_groups": "id",
}
# Rows of one path together, in file order: tag values repeat, file ids climb by small steps.
ELEMENT_SORT = ("path_id", "file_id", "ordinal")


class ExportError(IndexerError):
    """The export cannot be written as asked (folder not an export, another export running)."""


@dataclass
class ElementPart:
    """One file of the elements table: the file ids it covers (`first`..`last`, every id in
    between, with rows or not) and the fingerprint of those files when it was written."""

    file: str
    rows: int
    first: int
    last: int
    fingerprint: str

    def as_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "rows": self.rows,
            "file_ids": [self.first, self.last],
            "fingerprint": self.fingerprint,
        }


@dataclass
class ExportReport:
    """What an export wrote: `tables` maps each table to its row count."""

    directory: str
    database: str
    tables: dict[str, int] = field(default_factory=dict)
    element_rows: int = 0
    element_bytes: int = 0  # on disk, all element parts
    total_bytes: int = 0  # on disk, every Parquet file
    parts_written: int = 0
    parts_kept: int = 0
    incremental: bool = False
    seconds: float = 0.0

    @property
    def bytes_per_element_row(self) -> float | None:
        return self.element_bytes / self.element_rows if self.element_rows else None


def export_parquet(
    db: str | None,
    directory: str | os.PathLike[str],
    *,
    full: bool = False,
    part_rows: int = DEFAULT_PART_ROWS,
    progress: Callable[[int], None] | None = None,
) -> ExportReport:
    """Write the index `db` (see db.resolve_url) as Parquet files into `directory`.

    `directory` is created (mode 0700) when absent; it must be empty or hold an earlier
    export. An earlier export of the same index is brought up to date by rewriting only the
    element parts whose files changed, unless `full`. `part_rows` bounds the rows of each
    element part. `progress` hears the number of element rows read, batch by batch.
    Files are mode 0600. Returns an ExportReport; raises ExportError when the folder cannot
    take the export, DatabaseError when the index cannot be opened.
    """
    if part_rows < 1:
        raise ExportError("the rows per element part must be at least 1")
    try:
        import pyarrow
    except ImportError:
        raise ExportError(
            "Parquet support is not installed: pip install 'dicom-indexer[parquet]'"
        ) from None
    started = time.monotonic()
    target = Path(directory).expanduser().absolute()
    database = describe_url(resolve_url(db))
    try:
        return _export_into(db, target, database, full, part_rows, progress, started)
    except OSError as err:  # a folder that cannot be written, a full disk
        where = err.filename or target
        raise ExportError(f"cannot write the export at {where}: {err.strerror or err}") from None
    except pyarrow.ArrowInvalid:  # its message may quote the value
        raise ExportError(
            "a value in the index does not fit its Parquet column (say, an integer beyond "
            "32 bits in an INTEGER column); nothing was written under a final name"
        ) from None


def _export_into(
    db: str | None,
    target: Path,
    database: str,
    full: bool,
    part_rows: int,
    progress: Callable[[int], None] | None,
    started: float,
) -> ExportReport:
    _prepare_folder(target)
    with _locked(target):
        _remove_stale_staging(target)
        existing = _read_manifest(target)
        reusable = not full and _reusable(existing, database)
        previous = existing if reusable else None
        # Every export names its files anew (a generation number, part numbers not on disk),
        # so the export in place stays whole until the manifest that lists the new one.
        generation = int((existing or {}).get("generation", 0)) + 1
        taken = {f"elements/{p.name}" for p in (target / "elements").glob("*.parquet")}
        staging = target / f"{_STAGING}{secrets.token_hex(4)}"
        _make_private_dir(staging)
        try:
            report = ExportReport(str(target), database, incremental=previous is not None)
            threshold = gc.get_threshold()
            gc.set_threshold(*_GC_THRESHOLD)
            try:
                with connect(db) as conn, read_snapshot(conn):
                    revision = current_revision(conn)
                    files_written = _export_tables(conn, staging, report, generation)
                    parts = _export_elements(
                        conn, staging, previous, taken, part_rows, report, progress
                    )
            finally:
                gc.set_threshold(*threshold)
            report.seconds = time.monotonic() - started
            _commit(target, staging, files_written, parts, generation, revision, report)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return report


# -- the folder ---------------------------------------------------------------------------------


def _prepare_folder(target: Path) -> None:
    if target.exists() and not target.is_dir():
        raise ExportError(f"{target} is not a folder")
    if not target.exists():
        try:
            target.mkdir(mode=0o700, parents=True)
        except OSError as err:
            raise ExportError(f"cannot create {target}: {err.strerror or err}") from None
        return
    names = {p.name for p in target.iterdir()} - {_LOCK}
    if names and MANIFEST not in names and not all(n.startswith(_STAGING) for n in names):
        raise ExportError(
            f"{target} is not empty and holds no export ({MANIFEST}): "
            "export into a new or empty folder"
        )


def _make_private_dir(path: Path) -> None:
    path.mkdir(mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)


@contextlib.contextmanager
def _locked(target: Path) -> Iterator[None]:
    """One export at a time into a folder (a second would delete the first one's files)."""
    fd = os.open(target / _LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ExportError(f"another export is writing into {target}") from None
        yield
    finally:
        os.close(fd)


def _remove_stale_staging(target: Path) -> None:
    """Staging folders of killed exports (they may hold patient data); the lock says that no
    export is running."""
    for stale in target.glob(f"{_STAGING}*"):
        shutil.rmtree(stale, ignore_errors=True)


def _read_manifest(target: Path) -> dict[str, Any] | None:
    try:
        manifest = json.loads((target / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def _reusable(manifest: dict[str, Any] | None, database: str) -> bool:
    """Whether the export of `manifest` is one of `database` this code can bring up to date."""
    return (
        manifest is not None
        and manifest.get("export_format") == EXPORT_FORMAT
        and manifest.get("database") == database
        and manifest.get("schema_revision") == schema_revision_expected()
        and isinstance(manifest.get("element_parts"), list)
    )


def schema_revision_expected() -> str:
    from ..db import head_revision

    return head_revision()


def _private_file(path: Path) -> str:
    """Create `path` empty with mode 0600; the Parquet writer then writes into it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.close(fd)
    return str(path)


# -- the small tables -----------------------------------------------------------------------------


def _arrow_type(column: Any) -> Any:
    import pyarrow as pa

    kind = column.type
    if isinstance(kind, BigInteger):
        return pa.int64()
    if isinstance(kind, Integer):
        return pa.int32()
    if isinstance(kind, Float):
        return pa.float64()
    if isinstance(kind, Boolean):
        return pa.bool_()
    return pa.string()


def _arrow_schema(table: Table) -> Any:
    import pyarrow as pa

    return pa.schema(
        [pa.field(c.name, _arrow_type(c), nullable=bool(c.nullable)) for c in table.columns]
    )


def _writer(path: Path, arrow_schema: Any) -> Any:
    import pyarrow.parquet as pq

    return pq.ParquetWriter(
        _private_file(path),
        arrow_schema,
        compression="zstd",
        compression_level=COMPRESSION_LEVEL,
        write_statistics=True,
    )


def _columns_of(rows: Sequence[tuple[Any, ...]], arrow_schema: Any) -> list[Any]:
    import pyarrow as pa

    columns: list[Sequence[Any]] = list(zip(*rows, strict=True)) if rows else []
    arrays = []
    for values, column in zip(columns, arrow_schema, strict=True):
        if column.type == pa.bool_():  # SQLite stores booleans as 0 and 1
            values = [None if v is None else bool(v) for v in values]
        arrays.append(pa.array(values, type=column.type))
    return arrays


def _export_tables(
    conn: Connection, staging: Path, report: ExportReport, generation: int
) -> list[str]:
    """Write every table but `elements` whole; return the files written (relative names)."""
    import pyarrow as pa

    written = []
    for name, order in TABLE_ORDER.items():
        table = schema.metadata.tables[name]
        arrow_schema = _arrow_schema(table)
        relative = f"{name}/part-{generation:05d}.parquet"
        _make_private_dir(staging / name)
        quoted = ", ".join(f'"{c.name}"' for c in table.columns)
        writer = _writer(staging / relative, arrow_schema)
        count = 0
        try:
            query = f"SELECT {quoted} FROM {name} ORDER BY {order}"
            for rows in stream_rows(conn, query):
                batch = pa.record_batch(_columns_of(rows, arrow_schema), schema=arrow_schema)
                writer.write_batch(batch)
                count += len(rows)
            if count == 0:
                writer.write_table(arrow_schema.empty_table())
        finally:
            writer.close()
        report.tables[name] = count
        written.append(relative)
    return written


# -- elements -----------------------------------------------------------------------------------


def _element_schema() -> Any:
    import pyarrow as pa

    return pa.schema(
        [
            pa.field("file_id", pa.int32(), nullable=False),
            pa.field("ordinal", pa.int32(), nullable=False),
            pa.field("path_id", pa.int64(), nullable=False),
            # from paths, "(0040,0275)[0].(0008,0100)" and its keyword: dictionary-encoded
            pa.field("path", pa.dictionary(pa.int32(), pa.string())),
            pa.field("keyword", pa.dictionary(pa.int32(), pa.string())),
            pa.field("vr", pa.string(), nullable=False),
            pa.field("vm", pa.int32(), nullable=False),
            pa.field("length", pa.int64(), nullable=False),
            pa.field("value", pa.string()),
            pa.field("number", pa.float64()),
            pa.field("flags", pa.int32(), nullable=False),
        ]
    )


@dataclass
class _Paths:
    """The paths table as Arrow arrays, to give each element row its path text and keyword."""

    ids: Any
    path: Any
    keyword: Any


def _load_paths(conn: Connection) -> _Paths:
    import pyarrow as pa

    ids: list[int] = []
    texts: list[str] = []
    keywords: list[str] = []
    for rows in stream_rows(conn, "SELECT id, path, keyword FROM paths"):
        for row in rows:
            ids.append(row[0])
            texts.append(row[1])
            keywords.append(row[2])
    return _Paths(pa.array(ids, pa.int64()), pa.array(texts), pa.array(keywords))


def _file_fingerprints(conn: Connection) -> tuple[list[int], list[str]]:
    """Each file's id and what changes when its element rows may have (sorted by id)."""
    ids: list[int] = []
    marks: list[str] = []
    query = "SELECT id, indexed_at, size, mtime_ns FROM files ORDER BY id"
    for rows in stream_rows(conn, query):
        for file_id, indexed_at, size, mtime_ns in rows:
            ids.append(file_id)
            marks.append(f"{file_id}:{indexed_at!r}:{size}:{mtime_ns}")
    return ids, marks


def _fingerprint(ids: list[int], marks: list[str], first: int, last: int) -> str:
    start = bisect.bisect_left(ids, first)
    end = bisect.bisect_right(ids, last)
    digest = hashlib.sha256("\n".join(marks[start:end]).encode())
    return digest.hexdigest()[:32]


def _write_sorted(writer: Any, group: Any) -> None:
    writer.write_table(
        group.sort_by([(name, "ascending") for name in ELEMENT_SORT]),
        row_group_size=group.num_rows,
    )


class _PartWriter:
    """Writes element rows (in file order) into parts of at most about `part_rows` rows, each
    row group sorted by path; a part ends only between two files."""

    def __init__(
        self,
        staging: Path,
        paths: _Paths,
        part_rows: int,
        next_number: Callable[[], int],
        fingerprint: Callable[[int, int], str],
    ) -> None:
        import pyarrow as pa

        self.staging = staging
        self.paths = paths
        self.part_rows = part_rows
        self.group_rows = min(ROW_GROUP_ROWS, part_rows)
        self.next_number = next_number
        self.fingerprint = fingerprint
        self.arrow_schema = _element_schema()
        # the rows as read (ELEMENT_COLUMNS), before path and keyword join them
        self.row_type = pa.struct([self.arrow_schema.field(name) for name in ELEMENT_COLUMNS])
        self.parts: list[ElementPart] = []
        self._pending: list[Any] = []
        self._pending_rows = 0
        self._writer: Any = None
        self._file = ""
        self._rows = 0
        self._first = 0  # the first file id of the part being written
        self._last_file = 0  # the last file id written
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="parquet")
        self._writing: Future[None] | None = None

    def range(
        self, first: int, last: int | None, batches: Iterator[list[tuple[Any, ...]]]
    ) -> list[ElementPart]:
        """Write the rows of files `first`..`last` (None: to the end) and return their parts:
        together they cover every id of the range, the last part up to `last` (or to the last
        file written); none when the open range has no rows, one empty part when a closed
        one has none."""
        done = len(self.parts)
        self._first = first
        self._last_file = first - 1
        for rows in batches:
            self._pending.append(self._batch(rows))
            self._pending_rows += len(rows)
            if self._pending_rows >= self.group_rows:
                self._flush(final=False)
        self._flush(final=True)
        if self._writer is None and last is not None and len(self.parts) == done:
            self._open_part()  # a closed range keeps its place, with no rows
            self._write_empty()
        if self._writer is not None:
            self._close_part(self._last_file if last is None else last)
        return self.parts[done:]

    def _batch(self, rows: list[tuple[Any, ...]]) -> Any:
        """The rows as columns: pyarrow reads the tuples as one struct array, 2.5 times
        faster than transposing them in Python (zip) and converting column by column."""
        import pyarrow as pa
        import pyarrow.compute as pc

        file_id, ordinal, path_id, vr, vm, length, value, number, flags = pa.array(
            rows, type=self.row_type
        ).flatten()
        where = pc.index_in(path_id, value_set=self.paths.ids)  # no copy of the texts
        return pa.record_batch(
            [
                file_id,
                ordinal,
                path_id,
                pa.DictionaryArray.from_arrays(where, self.paths.path),
                pa.DictionaryArray.from_arrays(where, self.paths.keyword),
                vr,
                vm,
                length,
                value,
                number,
                flags,
            ],
            schema=self.arrow_schema,
        )

    def _flush(self, final: bool) -> None:
        """Write the pending rows as sorted row groups of about `group_rows`, each ending
        between two files (a file longer than that is a group of its own); unless `final`,
        rows that do not fill a group stay pending. A full part is closed."""
        import pyarrow as pa

        if not self._pending:
            return
        table = pa.Table.from_batches(self._pending, schema=self.arrow_schema).combine_chunks()
        file_ids = table.column("file_id").to_numpy()
        start = 0
        while start < table.num_rows:
            end = self._group_end(file_ids, start, final)
            if end is None:
                break
            self._write_group(table.slice(start, end - start))
            start = end
            if start < table.num_rows and self._rows >= self.part_rows:
                self._close_part(int(file_ids[start]) - 1)
        rest = table.slice(start)
        self._pending = rest.to_batches()
        self._pending_rows = rest.num_rows

    def _group_end(self, file_ids: Any, start: int, final: bool) -> int | None:
        """Where the row group from `start` ends: at the first file that begins at or after
        `group_rows` rows, or at the end when `final`; None: wait for more rows."""
        import numpy as np

        size = len(file_ids)
        limit = start + self.group_rows
        if limit >= size:
            return size if final else None
        # the first row of a file at or after the limit (rows of one file are consecutive)
        boundary = limit
        if file_ids[limit] == file_ids[limit - 1]:
            later = np.flatnonzero(file_ids[limit:] != file_ids[limit])
            if not len(later):
                return size if final else None
            boundary = limit + int(later[0])
        return boundary

    def _write_group(self, group: Any) -> None:
        """Sort and write the group in the writing thread, while this one reads on (pyarrow
        sorts and compresses without the GIL); one group at a time, so memory stays bound."""
        if self._writer is None:
            self._open_part()
        self._wait()
        self._writing = self._thread.submit(_write_sorted, self._writer, group)
        self._rows += group.num_rows
        self._last_file = int(group.column("file_id")[-1].as_py())

    def _wait(self) -> None:
        if self._writing is not None:
            writing, self._writing = self._writing, None
            writing.result()

    def close(self) -> None:
        """Finish the last write and stop the writing thread (also after an error)."""
        try:
            self._wait()
        finally:
            self._thread.shutdown(wait=True)
            if self._writer is not None:
                self._writer.close()

    def _write_empty(self) -> None:
        self._writer.write_table(self.arrow_schema.empty_table())

    def _open_part(self) -> None:
        self._file = f"elements/part-{self.next_number():05d}.parquet"
        self._writer = _writer(self.staging / self._file, self.arrow_schema)
        self._rows = 0

    def _close_part(self, last: int) -> None:
        self._wait()
        self._writer.close()
        self._writer = None
        fingerprint = self.fingerprint(self._first, last)
        self.parts.append(ElementPart(self._file, self._rows, self._first, last, fingerprint))
        self._first = last + 1


def _export_elements(
    conn: Connection,
    staging: Path,
    previous: dict[str, Any] | None,
    taken: set[str],
    part_rows: int,
    report: ExportReport,
    progress: Callable[[int], None] | None,
) -> list[ElementPart]:
    """Write the element parts that changed since `previous` (all of them without one);
    return every part of the new export, kept ones included, in file id order."""
    _make_private_dir(staging / "elements")
    ids, marks = _file_fingerprints(conn)
    old = [_part_of(p) for p in (previous or {}).get("element_parts", [])]
    numbers = (n for n in range(10**8) if f"elements/part-{n:05d}.parquet" not in taken)
    writer = _PartWriter(
        staging,
        _load_paths(conn),
        part_rows,
        lambda: next(numbers),
        lambda first, last: _fingerprint(ids, marks, first, last),
    )
    try:
        return _write_element_parts(conn, writer, old, report, progress or (lambda n: None))
    finally:
        writer.close()


def _counted(
    batches: Iterator[list[tuple[Any, ...]]], progress: Callable[[int], None]
) -> Iterator[list[tuple[Any, ...]]]:
    for rows in batches:
        progress(len(rows))
        yield rows


def _write_element_parts(
    conn: Connection,
    writer: _PartWriter,
    old: list[ElementPart],
    report: ExportReport,
    progress: Callable[[int], None],
) -> list[ElementPart]:
    mark = placeholder(conn)
    base = f"SELECT {', '.join(ELEMENT_COLUMNS)} FROM elements"
    target = Path(report.directory)
    parts: list[ElementPart] = []
    for part in old:
        unchanged = part.fingerprint == writer.fingerprint(part.first, part.last)
        if unchanged and (target / part.file).is_file():
            parts.append(part)
            report.parts_kept += 1
            continue
        query = f"{base} WHERE file_id BETWEEN {mark} AND {mark} ORDER BY file_id, ordinal"
        rows = stream_rows(conn, query, (part.first, part.last))
        parts.extend(writer.range(part.first, part.last, _counted(rows, progress)))
    first_new = old[-1].last + 1 if old else -(2**31)
    query = f"{base} WHERE file_id >= {mark} ORDER BY file_id, ordinal"
    rows = stream_rows(conn, query, (first_new,))
    parts.extend(writer.range(first_new, None, _counted(rows, progress)))
    if not parts:  # an index without element rows: the view still needs a file
        parts.extend(writer.range(first_new, first_new - 1, iter(())))
    report.parts_written = len(writer.parts)
    return parts


def _part_of(entry: dict[str, Any]) -> ElementPart:
    first, last = entry["file_ids"]
    return ElementPart(entry["file"], entry["rows"], first, last, entry["fingerprint"])


# -- commit -------------------------------------------------------------------------------------


def _commit(
    target: Path,
    staging: Path,
    tables: list[str],
    parts: list[ElementPart],
    generation: int,
    revision: str | None,
    report: ExportReport,
) -> None:
    """Move the new files into place (beside the earlier export's, under other names), then
    write the views and the manifest (each by a rename), then remove every Parquet file
    of the table folders that the new manifest does not list."""
    for relative in [*tables, *(p.file for p in parts)]:
        source = staging / relative
        if source.exists():
            _make_private_dir((target / relative).parent)
            os.replace(source, target / relative)
    report.element_rows = sum(p.rows for p in parts)
    report.element_bytes = sum((target / p.file).stat().st_size for p in parts)
    report.total_bytes = report.element_bytes + sum((target / t).stat().st_size for t in tables)
    listed = {name: [relative] for name, relative in zip(TABLE_ORDER, tables, strict=True)}
    listed["elements"] = [p.file for p in parts]
    manifest = {
        "export_format": EXPORT_FORMAT,
        "indexer_version": __version__,
        "schema_revision": revision,
        "database": report.database,
        "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(report.seconds, 3),
        "incremental": report.incremental,
        "generation": generation,
        "tables": {
            name: {
                "rows": report.tables.get(name, report.element_rows),
                "files": files,
            }
            for name, files in listed.items()
        },
        "element_parts": [p.as_json() for p in parts],
        "element_bytes": report.element_bytes,
        "total_bytes": report.total_bytes,
    }
    report.tables["elements"] = report.element_rows
    _write_text(target / VIEWS, duckdb_views(listed), staging)
    _write_text(target / MANIFEST, json.dumps(manifest, indent=2) + "\n", staging)
    keep = {f for files in listed.values() for f in files}
    for name in listed:
        for path in (target / name).glob("*.parquet"):
            if f"{name}/{path.name}" not in keep:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(path)


def _write_text(path: Path, text: str, staging: Path) -> None:
    temporary = staging / path.name
    with open(_private_file(temporary), "w", encoding="utf-8") as out:
        out.write(text)
    os.replace(temporary, path)


def duckdb_views(listed: dict[str, list[str]]) -> str:
    """duckdb.sql: one view per table over its files (paths relative to the export folder)."""
    lines = [
        "-- Views over a dicom-indexer Parquet export, named like the index's tables.",
        "-- Run from the export folder: duckdb -init duckdb.sql  (or .read duckdb.sql)",
        "-- The two settings make the queries of examples/ mean what they mean on the index:",
        "-- `/` of two integers divides as integers, and NULLs sort as SQLite sorts them.",
        "SET integer_division = true;",
        "SET default_null_order = 'nulls_first_on_asc_last_on_desc';",
    ]
    for name, files in listed.items():
        quoted = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
        lines.append(f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM read_parquet([{quoted}]);")
    for name, query in DETAIL_VIEWS.items():
        lines.append(f"CREATE OR REPLACE VIEW {name} AS{query};")
    return "\n".join(lines) + "\n"


def _tag_text(column: str) -> str:
    return f"printf('(%04X,%04X)', {column} >> 16, {column} & 65535)"


# The index's views (schema.VIEWS, created by migration 0005, which keeps its own frozen copy),
# in DuckDB's SQL over the exported tables: the same columns, so queries written against the
# views (examples/) run on the export too.
DETAIL_VIEWS = {
    "element_details": f"""
SELECT e.file_id, e.ordinal, f.path AS file_path, p.path, p.location,
       {_tag_text("p.tag")} AS tag, p.keyword, p.name, p.private_creator, p.depth,
       e.vr, e.vm, e.length, e.value, e.number, e.flags
FROM elements e
JOIN files f ON f.id = e.file_id
LEFT JOIN paths p ON p.id = e.path_id""",
    "instance_details": """
SELECT i.file_id, f.path, f.status AS file_status,
       st.patient_ref, pa.patient_id, pa.issuer, pa.patient_name, pa.birth_date, pa.sex,
       se.study_ref, st.study_uid, st.study_id, st.accession_number, st.study_date,
       st.study_time, st.description AS study_description,
       i.series_ref, se.series_uid, se.series_number, se.description AS series_description,
       se.body_part, se.series_date,
       i.sop_instance_uid, i.sop_class_uid, i.modality, i.instance_number, i.content_date,
       i.rows, i.columns, i.frames, i.manufacturer, i.model, i.element_count,
       i.hierarchy_problem
FROM instances i
JOIN files f ON f.id = i.file_id
LEFT JOIN series se ON se.id = i.series_ref
LEFT JOIN studies st ON st.id = se.study_ref
LEFT JOIN patients pa ON pa.id = st.patient_ref""",
    "tag_usage_details": f"""
SELECT u.key_id, u.group_id, k.key, k.keywords, {_tag_text("k.tag")} AS tag,
       k.depth, k.name, k.private_creator, g.modality, g.sop_class_uid,
       u.instances, u.occurrences, u.untracked
FROM tag_usage u
JOIN tag_keys k ON k.id = u.key_id
JOIN usage_groups g ON g.id = u.group_id""",
}
