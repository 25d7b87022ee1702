"""The baseline: what a careful pydicom + SQLAlchemy user would write to index an archive.

``careful`` (the default):

* a ``multiprocessing.Pool`` of 2 workers runs ``imap_unordered`` over the files with
  chunks of 16; the paths are fed through a semaphore so that results cannot pile up
  in memory when the writer falls behind;
* each worker reads a file with ``pydicom.dcmread(path, defer_size="1 KB")`` and walks
  every element recursively, sequence items and the File Meta Information included,
  recording the sequence path, tag, VR, VM and, for non-binary VRs, ``str(elem.value)``;
* the main process turns the rows into dicts and inserts them with SQLAlchemy Core,
  ``conn.execute(insert(table), rows)``, one transaction per ~5000 rows, into one table
  of a SQLite file in WAL mode (``synchronous=NORMAL``, as the indexer uses).

``naive``: the same reading, but the main process adds one ORM object per element with
``session.add`` and commits once per file (run it on a couple of thousand files only:
it is slow).

The table has no index besides its integer primary key, and nothing else is written
(no patient/study/series tables, no file bookkeeping), which favours the baseline.
Files pydicom cannot read are counted and skipped.

Run ``python benchmarks/careful_indexer.py ARCHIVE --db FILE [--naive] [--limit N]
[--workers 2] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from multiprocessing import Pool
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from sqlalchemy import Engine, create_engine, event, func, insert, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
CHUNKSIZE = 16
BATCH_ROWS = 5000
MAX_OUTSTANDING = 1024  # paths handed to the pool but not yet written

# (sequence path, tag, VR, VM, value)
Row = tuple[str, int, str, int, str | None]


class Base(DeclarativeBase):
    pass


class ElementRow(Base):
    """One element of one file."""

    __tablename__ = "elements"

    id: Mapped[int] = mapped_column(primary_key=True)
    file_path: Mapped[str]
    instance_uid: Mapped[str | None]
    path: Mapped[str]  # "(0040,0275)[0].(0008,0100)"
    tag: Mapped[int]
    vr: Mapped[str]
    vm: Mapped[int]
    value: Mapped[str | None]


# --------------------------------------------------------------------------- workers


def _walk(ds: Dataset, prefix: str, rows: list[Row]) -> None:
    for elem in ds:
        path = f"{prefix}({elem.tag.group:04X},{elem.tag.element:04X})"
        vr = str(elem.VR)
        if vr == "SQ":
            rows.append((path, int(elem.tag), vr, elem.VM, None))
            for i, item in enumerate(elem.value):
                _walk(item, f"{path}[{i}].", rows)
        elif vr in BINARY_VRS:
            rows.append((path, int(elem.tag), vr, elem.VM, None))
        else:
            rows.append((path, int(elem.tag), vr, elem.VM, str(elem.value)))


def read_one(path: str) -> tuple[str, str | None, list[Row] | None]:
    """(path, SOP Instance UID, rows) of one file; rows is None when pydicom fails."""
    try:
        ds = pydicom.dcmread(path, defer_size="1 KB")
        rows: list[Row] = []
        _walk(ds.file_meta, "", rows)
        _walk(ds, "", rows)
        uid = ds.get("SOPInstanceUID")
    except Exception:  # noqa: BLE001 - a careful user skips the files pydicom cannot read
        return path, None, None
    return path, None if uid is None else str(uid), rows


def _quiet() -> None:
    """Pool initializer: no warning output from odd values of real files."""
    warnings.simplefilter("ignore")


# --------------------------------------------------------------------------- main process


def make_engine(db: Path) -> Engine:
    """A SQLite engine in WAL mode with the table created."""
    engine = create_engine(f"sqlite:///{db}")

    def pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    event.listen(engine, "connect", pragmas)
    Base.metadata.create_all(engine)
    return engine


def list_files(root: str) -> list[str]:
    """Every file under ``root``, in sorted walk order."""
    out: list[str] = []
    for directory, dirs, files in os.walk(root):
        dirs.sort()
        out.extend(os.path.join(directory, name) for name in sorted(files))
    return out


def run(paths: Sequence[str], db: Path, workers: int = 2, naive: bool = False) -> dict[str, Any]:
    """Index ``paths`` into ``db``; return files, errors, rows, seconds and rates."""
    start = time.perf_counter()
    engine = make_engine(db)
    slots = threading.Semaphore(MAX_OUTSTANDING)
    stop = threading.Event()

    def feed() -> Iterator[str]:
        for path in paths:
            while not slots.acquire(timeout=0.5):  # released when the file's rows are handled
                if stop.is_set():  # the writer failed: let the pool shut down
                    return
            yield path

    with Pool(workers, initializer=_quiet) as pool:
        try:
            files, errors = _consume(pool, feed(), slots, engine, naive)
        finally:
            stop.set()
    seconds = time.perf_counter() - start
    with engine.connect() as conn:
        count = int(conn.execute(select(func.count()).select_from(ElementRow)).scalar_one())
    engine.dispose()
    return {
        "variant": "naive" if naive else "careful",
        "files": files,
        "errors": errors,
        "rows": count,
        "seconds": seconds,
        "files_per_s": (files + errors) / seconds if seconds else 0.0,
        "rows_per_s": count / seconds if seconds else 0.0,
        "workers": workers,
    }


def _consume(
    pool: Any, paths: Iterator[str], slots: threading.Semaphore, engine: Engine, naive: bool
) -> tuple[int, int]:
    """Write the workers' rows; return (files written, files pydicom could not read)."""
    files = errors = 0
    results = pool.imap_unordered(read_one, paths, chunksize=CHUNKSIZE)
    if naive:
        with Session(engine) as session:
            for path, uid, rows in results:
                slots.release()
                if rows is None:
                    errors += 1
                    continue
                files += 1
                for p, tag, vr, vm, value in rows:
                    session.add(
                        ElementRow(
                            file_path=path,
                            instance_uid=uid,
                            path=p,
                            tag=tag,
                            vr=vr,
                            vm=vm,
                            value=value,
                        )
                    )
                session.commit()
        return files, errors
    stmt = insert(Base.metadata.tables[ElementRow.__tablename__])
    batch: list[dict[str, Any]] = []
    for path, uid, rows in results:
        slots.release()
        if rows is None:
            errors += 1
            continue
        files += 1
        batch.extend(
            {
                "file_path": path,
                "instance_uid": uid,
                "path": p,
                "tag": tag,
                "vr": vr,
                "vm": vm,
                "value": value,
            }
            for p, tag, vr, vm, value in rows
        )
        if len(batch) >= BATCH_ROWS:
            with engine.begin() as conn:
                conn.execute(stmt, batch)
            batch = []
    if batch:
        with engine.begin() as conn:
            conn.execute(stmt, batch)
    return files, errors


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", help="directory tree to index")
    parser.add_argument("--db", type=Path, required=True, help="SQLite file (must not exist)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--naive", action="store_true", help="ORM object per row, commit per file")
    parser.add_argument("--limit", type=int, default=None, help="only the first N files")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    if args.db.exists():
        parser.error(f"{args.db} exists")
    paths = list_files(args.root)[: args.limit]
    result = run(paths, args.db, args.workers, args.naive)
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"{result['variant']}: {result['files']} files ({result['errors']} errors), "
            f"{result['rows']} rows in {result['seconds']:.2f} s = "
            f"{result['files_per_s']:.0f} files/s, {result['rows_per_s']:.0f} rows/s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
