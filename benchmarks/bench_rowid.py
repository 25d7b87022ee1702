"""What rowid tables would cost: `indexer index` into the shipped schema (elements and the
summary tables WITHOUT ROWID) and into the same schema with those tables as rowid tables.

DuckDB's SQLite scanner cannot count a WITHOUT ROWID table (it asks for its ROWID); the
index offers views instead (migration 0005). This measures the alternative: per variant,
best of ``--repeat`` runs of ``indexer index --workers 2`` into a fresh SQLite file over one
archive (make_archive.py), files/s and database size, with the ratios rowid / shipped.

Run ``python benchmarks/bench_rowid.py --files 5000 [--repeat 3] [--archive DIR]``.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

from make_archive import build_archive  # noqa: E402

CLI = [sys.executable, "-c", "from indexer.cli import main; main()"]
WITHOUT_ROWID = ("elements", "encapsulated", "path_keys", "tag_usage", "tag_values")


def _with_rowids(db: Path) -> None:
    """Rebuild the (empty) WITHOUT ROWID tables of a new index as rowid tables."""
    conn = sqlite3.connect(db)
    try:
        for table in WITHOUT_ROWID:
            (ddl,) = conn.execute(
                "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
            ).fetchone()
            indexes = [
                sql
                for (sql,) in conn.execute(
                    "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ? "
                    "AND sql IS NOT NULL",
                    (table,),
                )
            ]
            conn.execute(f"DROP TABLE {table}")
            conn.execute(ddl.replace("WITHOUT ROWID", ""))
            for sql in indexes:
                conn.execute(sql)
        conn.commit()
    finally:
        conn.close()


def _one_run(archive: Path, folder: Path, rowid: bool) -> tuple[float, int]:
    db = folder / f"index-{'rowid' if rowid else 'shipped'}-{time.monotonic_ns()}.db"
    url = f"sqlite:///{db}"
    subprocess.run([*CLI, "db", "upgrade", "--db", url], check=True, capture_output=True)
    if rowid:
        _with_rowids(db)
    start = time.perf_counter()
    subprocess.run(
        [*CLI, "index", "--db", url, "-q", "--workers", "2", str(archive)],
        check=True,
        capture_output=True,
    )
    wall = time.perf_counter() - start
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the size of the index itself
    conn.close()
    size = db.stat().st_size
    for p in folder.glob(db.name + "*"):
        p.unlink()
    return wall, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--archive", type=Path, default=None, help="reuse this archive")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-rowid-") as tmp:
        folder = Path(tmp)
        archive = args.archive or folder / "archive"
        if args.archive is None:
            corpus = Path(
                os.environ.get("INDEXER_CORPUS", BENCH_DIR.parent.parent / "shared" / "corpus")
            )
            build_archive(archive, args.files, corpus=corpus, min_elements=50, log=False)
        files = sum(len(names) for _, _, names in os.walk(archive))
        best: dict[bool, tuple[float, int]] = {}
        for _ in range(args.repeat):
            for rowid in (False, True):  # interleaved: both see the same machine load
                wall, size = _one_run(archive, folder, rowid)
                if rowid not in best or wall < best[rowid][0]:
                    best[rowid] = (wall, size)
        print(f"{files} files, best of {args.repeat}, load average {os.getloadavg()[0]:.1f}")
        for rowid, (wall, size) in best.items():
            name = "rowid tables" if rowid else "WITHOUT ROWID (shipped)"
            print(f"  {name:24} {files / wall:8.0f} files/s  {size / 1e6:7.1f} MB")
        (w0, s0), (w1, s1) = best[False], best[True]
        print(f"  rowid / shipped: write speed {w0 / w1:.2f}x, size {s1 / s0:.2f}x")


if __name__ == "__main__":
    main()
