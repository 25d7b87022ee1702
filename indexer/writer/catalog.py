"""The catalog of files: which crawled files are unchanged, which were seen, which are gone.

The feed asks it, on a connection of its own, before files go to the workers; the batch
writer marks unchanged files seen; the run marks the rest missing (or prunes them).
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Engine, and_, delete, or_, select, update

from .. import summaries
from ..db import chunks, fetch_in
from ..rows import stored_path
from ..schema import errors, files
from .contents import delete_contents

Found = tuple[str, int, int]  # path, size, mtime_ns


class Catalog:
    def __init__(self, engine: Engine, run_id: int) -> None:
        self.engine = engine
        self.run_id = run_id

    def split_unchanged(self, found: Sequence[Found]) -> tuple[list[Found], list[int]]:
        """Split (path, size, mtime_ns) into files to read and ids of unchanged indexed files."""
        known: dict[str, tuple[int, int, int, str]] = {}
        with self.engine.connect() as conn:
            # The driver's own cursor: this runs for every file of every run.
            for chunk in chunks([stored_path(f[0]) for f in found], 900):
                for path, size, mtime_ns, file_id, status in fetch_in(
                    conn, "SELECT path, size, mtime_ns, id, status FROM files WHERE path", chunk
                ):
                    known[path] = (size, mtime_ns, file_id, status)
        to_read: list[Found] = []
        unchanged: list[int] = []
        for item in found:
            old = known.get(stored_path(item[0]))
            if old is not None and old[0] == item[1] and old[1] == item[2] and old[3] != "missing":
                unchanged.append(old[2])
            else:
                to_read.append(item)
        return to_read, unchanged

    def mark_missing(self, roots: Sequence[str], prune: bool) -> int:
        """Mark files under `roots` that this run did not see as missing (or delete them)."""
        conditions = []
        for root in roots:
            root = stored_path(root.rstrip("/") or "/")  # compared with stored paths
            below = root if root.endswith("/") else root + "/"
            # A range, not LIKE: it uses the index on path and needs no escaping.
            conditions.append(
                or_(
                    files.c.path == root,
                    and_(files.c.path >= below, files.c.path < below[:-1] + "0"),
                )
            )
        if not conditions:
            return 0
        gone = and_(files.c.last_run < self.run_id, or_(*conditions))
        with self.engine.begin() as conn:
            if not prune:
                result = conn.execute(
                    update(files).where(gone, files.c.status != "missing").values(status="missing")
                )
                return result.rowcount or 0
            ids = [row[0] for row in conn.execute(select(files.c.id).where(gone))]
            deltas = summaries.Deltas()
            for chunk in chunks(ids, 2000):
                delete_contents(conn, chunk, deltas)
                conn.execute(
                    delete(errors).where(
                        errors.c.path.in_(select(files.c.path).where(files.c.id.in_(chunk)))
                    )
                )
                conn.execute(delete(files).where(files.c.id.in_(chunk)))
            summaries.apply(conn, deltas)
            return len(ids)
