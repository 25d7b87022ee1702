"""The catalog of files: which crawled files are unchanged, which were seen, which are gone.

The feed asks it, on a connection of its own, before files go to the workers; the batch
writer marks unchanged files seen; the run marks the rest missing (or prunes them).

A missing file keeps its rows (so `find --include-missing` can still show it) but leaves
the summaries: its instance is taken out of them when it goes missing and put back when
the crawler finds the file again. Whatever deletes files' rows (a prune, `forget`) must
therefore not take a missing file out of the summaries a second time (`delete_files`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Engine, and_, case, delete, or_, select, update
from sqlalchemy.sql.elements import ColumnElement

from .. import summaries
from ..db import chunks, fetch_in
from ..rows import stored_path
from ..schema import errors, files
from .contents import delete_contents, with_contents

Found = tuple[str, int, int]  # path, size, mtime_ns


def stored_root(root: str) -> str:
    """A root (an OS path) as stored paths begin: absolute, no trailing slash ("/" stays)."""
    return stored_path(os.path.abspath(root).rstrip("/") or "/")


def under_root(conn: Connection, column: Any, root: str) -> ColumnElement[bool]:
    """`column` (a stored path) is the stored root `root` or lies below it, by whole path
    components: /a/b matches /a/b and /a/b/c, never /a/bc.

    A range, not LIKE: it uses the index on the path and needs no escaping of ``%`` or ``_``.
    Every path below "root/" sorts in ["root/", "root0") by code point ('0' follows '/'),
    which is SQLite's order and that of a PostgreSQL database in the C locale. A database
    made with another collation (which ignores punctuation, say) compares in "C" instead:
    right, but without the index, which is in the database's collation.
    """
    below = root if root.endswith("/") else root + "/"
    path = column if _code_point_order(conn) else column.collate("C")
    return or_(column == root, and_(path >= below, path < below[:-1] + "0"))


def _code_point_order(conn: Connection) -> bool:
    """Whether the database orders text by code point (asked once per connection)."""
    if conn.dialect.name != "postgresql":
        return True
    known = conn.info.get("code_point_order")
    if known is None:
        # Pairs that a linguistic collation (libc or ICU) orders otherwise: case before
        # letters, punctuation before digits, accented letters after z.
        known = conn.info["code_point_order"] = bool(
            conn.exec_driver_sql(
                "SELECT 'B' < 'a' AND 'a/z' < 'a0' AND 'a-b' < 'a0' AND 'z' < '\u00e9'"
            ).scalar_one()
        )
    return bool(known)


def delete_files(
    conn: Connection, rows: Sequence[tuple[int, str]], *, recount: bool = False
) -> None:
    """Delete files (id, status) with their rows; the summaries lose what they counted (a
    missing file's share was taken out when it went missing). Errors are the caller's.

    With `recount` the summaries are counted again from what remains instead, which is
    faster when most of the index goes (taking files out reads their element rows)."""
    deltas = summaries.Deltas()
    if recount:
        summaries_locked(conn)
    ids = [file_id for file_id, status in rows if status != "missing" and not recount]
    gone = [file_id for file_id, status in rows if status == "missing" or recount]
    for chunk in chunks(ids, 2000):
        delete_contents(conn, chunk, deltas)
        conn.execute(delete(files).where(files.c.id.in_(chunk)))
    for chunk in chunks(gone, 2000):
        delete_contents(conn, chunk, None)  # out of the summaries already, or recounted
        conn.execute(delete(files).where(files.c.id.in_(chunk)))
    if recount:
        summaries.rebuild(conn)
    else:
        summaries.apply(conn, deltas)


def summaries_locked(conn: Connection) -> None:
    """PostgreSQL: hold the counted summary tables against other writers until this transaction
    ends, so that a recount neither misses nor doubles what they commit meanwhile (their
    deltas wait and are added to the recount). SQLite has one writer at a time anyway."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(
            "LOCK TABLE usage_groups, tag_keys, path_keys, tag_usage, tag_values, "
            "instance_groups, tag_usage_deltas, tag_values_deltas, instance_groups_deltas "
            "IN SHARE ROW EXCLUSIVE MODE"
        )


class Catalog:
    def __init__(self, engine: Engine, run_id: int) -> None:
        self.engine = engine
        self.run_id = run_id

    def split_unchanged(self, found: Sequence[Found]) -> tuple[list[Found], list[int]]:
        """Split (path, size, mtime_ns) into files to read and ids of unchanged indexed files.

        Missing files found again come back first (`_revive`): unchanged ones are then
        unchanged, changed ones are re-read like any changed file.
        """
        known: dict[str, tuple[int, int, int, str]] = {}
        with self.engine.connect() as conn:
            # The driver's own cursor: this runs for every file of every run.
            for chunk in chunks([stored_path(f[0]) for f in found], 900):
                for path, size, mtime_ns, file_id, status in fetch_in(
                    conn, "SELECT path, size, mtime_ns, id, status FROM files WHERE path", chunk
                ):
                    known[path] = (size, mtime_ns, file_id, status)
        back = [old[2] for old in known.values() if old[3] == "missing"]
        revived = self._revive(back) if back else set()
        to_read: list[Found] = []
        unchanged: list[int] = []
        for item in found:
            old = known.get(stored_path(item[0]))
            if (
                old is not None
                and old[0] == item[1]
                and old[1] == item[2]
                and (old[3] != "missing" or old[2] in revived)
            ):
                unchanged.append(old[2])
            else:
                to_read.append(item)
        return to_read, unchanged

    def _revive(self, file_ids: list[int]) -> set[int]:
        """Give missing files that have an instance their status back and put them back in the
        summaries; returns their ids. Files without one (errors, not DICOM) are simply re-read."""
        revived: set[int] = set()
        with self.engine.begin() as conn:
            for chunk in chunks(with_contents(conn, file_ids), 900):
                # Only the rows this statement changes are counted back in: a concurrent run
                # reviving the same file cannot count it twice.
                revived.update(
                    row[0]
                    for row in conn.execute(
                        update(files)
                        .where(files.c.id.in_(chunk), files.c.status == "missing")
                        .values(
                            status=case((files.c.problem.is_(None), "indexed"), else_="partial")
                        )
                        .returning(files.c.id)
                    )
                )
            if revived:
                summaries.apply(conn, summaries.add_files(conn, sorted(revived)))
        return revived

    def mark_missing(self, roots: Sequence[str], prune: bool) -> int:
        """Mark files under `roots` that this run did not see as missing (or delete them);
        returns how many. Missing files leave the summaries (see the module docstring)."""
        if not roots:
            return 0
        with self.engine.begin() as conn:
            gone = and_(
                files.c.last_run < self.run_id,
                or_(*[under_root(conn, files.c.path, stored_root(r)) for r in roots]),
            )
            if not prune:
                marked = [
                    row[0]
                    for row in conn.execute(
                        update(files)
                        .where(gone, files.c.status != "missing")
                        .values(status="missing")
                        .returning(files.c.id)
                    )
                ]
                if marked:
                    counted = with_contents(conn, marked)
                    summaries.apply(conn, summaries.remove_files(conn, counted))
                return len(marked)
            rows = [
                (r[0], r[1]) for r in conn.execute(select(files.c.id, files.c.status).where(gone))
            ]
            for chunk in chunks([file_id for file_id, _ in rows], 2000):
                conn.execute(
                    delete(errors).where(
                        errors.c.path.in_(select(files.c.path).where(files.c.id.in_(chunk)))
                    )
                )
            delete_files(conn, rows)
            return len(rows)
