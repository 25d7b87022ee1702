"""Re-pointing an index at its archives: forget a folder, or move one without re-reading it.

`forget_root` deletes every file under a path from the index (the path may be gone from
disk). `relocate_root` rewrites the stored paths under OLD to NEW, after checking that
NEW holds the same files (a sample of them, by size and mtime), so that an archive moved
or re-mounted elsewhere is not read again. Paths are compared as the index stores them
(rows.stored_path) and by whole path components (catalog.under_root).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import Connection, bindparam, delete, func, select, update
from sqlalchemy.exc import SQLAlchemyError

from ..db import chunks, describe_url, first_line, open_index, resolve_url
from ..errors import DatabaseError, IndexerError
from ..rows import disk_path
from ..schema import errors, files
from .catalog import delete_files, stored_root, under_root
from .contents import with_contents

SAMPLE_FILES = 32  # files of NEW compared with the index before a relocation


@dataclass(slots=True)
class ForgetReport:
    """What `forget_root` removed (or would remove, with `dry_run`)."""

    database: str
    root: str
    files: int = 0  # file rows removed, with their contents
    instances: int = 0  # of which DICOM instances
    missing: int = 0  # of which were already marked missing
    errors: int = 0  # error rows removed
    dry_run: bool = False


@dataclass(slots=True)
class RelocateReport:
    """What `relocate_root` rewrote (or would rewrite, with `dry_run`)."""

    database: str
    old: str
    new: str
    files: int = 0  # stored paths rewritten
    missing: int = 0  # of which marked missing (moved along, still missing)
    errors: int = 0  # error rows whose path was rewritten
    sampled: int = 0  # files of NEW compared by size and mtime, all equal
    dry_run: bool = False


def forget_root(
    path: str | os.PathLike[str], db: str | None = None, *, dry_run: bool = False
) -> ForgetReport:
    """Remove every file under `path` (a folder or a file, which may be gone from disk) from
    the index `db`, with its instance, elements and errors; patients, studies and series
    left empty go too, and the summaries stay exact.

    Returns a ForgetReport (files 0 when nothing was indexed there). Nothing is written
    with `dry_run`. Raises DatabaseError when the index cannot be opened or written.
    """
    root = stored_root(os.fspath(path))
    report = ForgetReport(describe_url(resolve_url(db)), root, dry_run=dry_run)
    with _writing(db, report.database) as conn:
        rows = [
            (r[0], r[1])
            for r in conn.execute(
                select(files.c.id, files.c.status).where(under_root(conn, files.c.path, root))
            )
        ]
        report.files = len(rows)
        report.missing = sum(1 for _, status in rows if status == "missing")
        report.instances = len(with_contents(conn, [file_id for file_id, _ in rows]))
        below = under_root(conn, errors.c.path, root)
        report.errors = int(conn.execute(select(func.count()).where(below)).scalar_one())
        if not dry_run:
            conn.execute(delete(errors).where(below))
            present = [file_id for file_id, status in rows if status != "missing"]
            delete_files(conn, rows, recount=_most_of_the_index(conn, present))
    return report


def relocate_root(
    old: str | os.PathLike[str],
    new: str | os.PathLike[str],
    db: str | None = None,
    *,
    dry_run: bool = False,
    sample: int = SAMPLE_FILES,
) -> RelocateReport:
    """Rewrite the stored paths of files under `old` to the same paths under `new`, without
    reading the files again; their rows, summaries and run history are kept.

    Refused (IndexerError, nothing written) when `new` does not exist, when one folder is
    inside the other, when nothing is indexed under `old`, when a path under `new` is
    indexed already and would collide, or when a sample of up to `sample` files at `new`
    differ from the index in size or mtime (or are absent). Returns a RelocateReport;
    nothing is written with `dry_run`. Raises DatabaseError when the index cannot be
    opened or written.
    """
    old_os = os.path.abspath(os.fspath(old)).rstrip("/") or "/"
    new_os = os.path.abspath(os.fspath(new)).rstrip("/") or "/"
    old_root, new_root = stored_root(old_os), stored_root(new_os)
    report = RelocateReport(describe_url(resolve_url(db)), old_root, new_root, dry_run=dry_run)
    if not os.path.exists(new_os):
        raise IndexerError(f"{new_root}: no such file or folder; move the files there first")
    if _inside(old_root, new_root) or _inside(new_root, old_root):
        raise IndexerError(
            f"{old_root} and {new_root}: one is inside the other; relocate to a separate folder"
        )
    with _writing(db, report.database) as conn:
        moved = [
            (r[0], r[1], r[2], r[3], r[4])
            for r in conn.execute(
                select(files.c.id, files.c.path, files.c.status, files.c.size, files.c.mtime_ns)
                .where(under_root(conn, files.c.path, old_root))
                .order_by(files.c.path)
            )
        ]
        if not moved:
            raise IndexerError(f"nothing is indexed under {old_root}; check the path")
        renamed = {file_id: new_root + path[len(old_root) :] for file_id, path, *_ in moved}
        taken = _indexed_among(conn, sorted(renamed.values()))
        if taken:
            raise IndexerError(
                f"{taken} of the {len(moved)} files would take paths already indexed under "
                f"{new_root}; `indexer forget {new_root}` first if that copy is obsolete"
            )
        report.files = len(moved)
        report.missing = sum(1 for m in moved if m[2] == "missing")
        report.sampled = _check_sample(
            [(disk_path(renamed[m[0]]), m[3], m[4]) for m in moved if m[2] != "missing"],
            sample,
        )
        old_errors: list[str] = [
            r[0]
            for r in conn.execute(
                select(errors.c.path).where(under_root(conn, errors.c.path, old_root))
            )
        ]
        report.errors = len(old_errors)
        if dry_run:
            return report
        for chunk in chunks(sorted(renamed.items()), 1000):
            conn.execute(
                update(files)
                .where(files.c.id == bindparam("file_id"))
                .values(path=bindparam("new")),
                [{"file_id": file_id, "new": path} for file_id, path in chunk],
            )
        for paths in chunks(sorted(set(old_errors)), 1000):
            conn.execute(
                update(errors)
                .where(errors.c.path == bindparam("old"))
                .values(path=bindparam("new")),
                [{"old": path, "new": new_root + path[len(old_root) :]} for path in paths],
            )
    return report


@contextmanager
def _writing(db: str | None, database: str) -> Iterator[Connection]:
    """One transaction on an existing index (never creates one: a mistyped --db must not
    leave an empty index behind)."""
    open_index(db, create=False).dispose()  # raises DatabaseError when there is no index
    engine = open_index(db, migrate=False)
    try:
        with engine.begin() as conn:
            yield conn
    except SQLAlchemyError as err:
        raise DatabaseError(f"database error on {database}: {first_line(err)}") from None
    finally:
        engine.dispose()


def _most_of_the_index(conn: Connection, present: list[int]) -> bool:
    """Whether `present` (files not missing) hold more instances than the rest of the index:
    recounting the rest is then cheaper than taking them out one by one."""
    leaving = len(with_contents(conn, present))
    total = conn.exec_driver_sql(
        "SELECT count(*) FROM instances i JOIN files f ON f.id = i.file_id "
        "WHERE f.status <> 'missing'"
    ).scalar_one()
    return leaving > int(total) - leaving


def _inside(root: str, other: str) -> bool:
    """`other` is `root` or lies below it (whole components)."""
    return other == root or other.startswith(root if root.endswith("/") else root + "/")


def _indexed_among(conn: Connection, paths: list[str]) -> int:
    """How many of `paths` (stored paths) the files table holds."""
    taken = 0
    for chunk in chunks(paths, 500):
        taken += int(conn.execute(select(func.count()).where(files.c.path.in_(chunk))).scalar_one())
    return taken


def _check_sample(candidates: list[tuple[str, int, int]], size: int) -> int:
    """Compare up to `size` of (OS path, size, mtime_ns), spread over the list, with the disk;
    returns how many were compared. Raises IndexerError when one differs or is absent."""
    if not candidates or size <= 0:
        return 0
    step = max(1, len(candidates) // size)
    picked = candidates[::step][:size]
    differ = absent = 0
    for path, want_size, want_mtime in picked:
        try:
            st = os.stat(path)
        except OSError:
            absent += 1
            continue
        if st.st_size != want_size or st.st_mtime_ns != want_mtime:
            differ += 1
    if differ or absent:
        # Counts only: file names can carry patient names.
        raise IndexerError(
            f"of {len(picked)} sampled files, {absent} are not at the new place and {differ} "
            "differ in size or modification time; copy with times kept (cp -p, rsync -a), "
            "or index the new place instead"
        )
    return len(picked)
