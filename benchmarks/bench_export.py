"""Benchmark `indexer export parquet` against its targets.

Targets (issue 13): a 200,000-instance index exported in < 60 s on this machine, and
<= 10 bytes per element row on disk (the SQLite index holds about 49).

In one run, over one index (built here from a synthetic archive of N small real files,
benchmarks/make_archive.py, or given with --db):
  * a baseline: every element row read by the driver alone (sqlite3 fetchmany, no
    conversion), the floor of any export that goes through Python;
  * the full export (`export_parquet(..., full=True)` into a fresh folder), best of --repeat;
  * the re-export of the unchanged index into the same folder (incremental), best of --repeat;
  * bytes per element row of the element parts, of the whole export and of the SQLite file;
  * the time extrapolated to 200,000 instances (linear in the rows: the export streams);
  * with --profile, the export's cProfile top functions.

Run: python benchmarks/bench_export.py --files 20000 [--repeat 3] [--profile]
     python benchmarks/bench_export.py --db /tmp/index.db   (an existing index)
     add --pg-url postgresql+psycopg://postgres@127.0.0.1:5432/bench_export to also index
     the archive into that (new, empty) PostgreSQL database and export it (with --db: an
     existing PostgreSQL index of the same archive, exported only).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))  # make_archive is a sibling script, not a package

from make_archive import build_archive  # noqa: E402

from indexer.export.parquet import export_parquet  # noqa: E402

TARGET_SECONDS_200K = 60.0
TARGET_BYTES_PER_ROW = 10.0


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} (2 cores)"


def read_floor(path: str) -> tuple[float, int]:
    """Seconds to fetch every element row through sqlite3, and the row count."""
    start = time.perf_counter()
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    cursor = conn.execute(
        "SELECT file_id, ordinal, path_id, vr, vm, length, value, number, flags "
        "FROM elements ORDER BY file_id, ordinal"
    )
    rows = 0
    while True:
        batch = cursor.fetchmany(100_000)
        if not batch:
            break
        rows += len(batch)
    conn.close()
    return time.perf_counter() - start, rows


def best_export(db: str, work: Path, repeat: int, *, full: bool) -> tuple[float, object]:
    best, report = float("inf"), None
    for i in range(repeat):
        out = work / (f"full-{i}" if full else "incremental")
        if full:
            shutil.rmtree(out, ignore_errors=True)
        start = time.perf_counter()
        report = export_parquet(db, out, full=full)
        best = min(best, time.perf_counter() - start)
    return best, report


def instances_of(db_file: str) -> int:
    conn = sqlite3.connect(f"file:{db_file}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM instances").fetchone()[0])
    finally:
        conn.close()


def build_index(files: int, work: Path, pg_url: str | None) -> tuple[str, Path]:
    archive = work / "archive"
    stats = build_archive(archive, files, min_elements=50, max_elements=150, log=False)
    print(f"archive: {files} files, mean {stats.mean_elements:.1f} elements per file")
    db_file = work / "index.db"
    indexer = [sys.executable, "-c", "from indexer.cli import main; main()"]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    for url in [str(db_file), *([pg_url] if pg_url else [])]:
        start = time.perf_counter()
        subprocess.run([*indexer, "index", str(archive), "--db", url, "-q"], env=env, check=True)
        print(f"indexed into {url.split('://')[0]} in {time.perf_counter() - start:.1f} s")
    return str(db_file), archive


def report_export(name: str, db: str, work: Path, repeat: int, profile: bool) -> float:
    full_s, full = best_export(db, work / name, repeat, full=True)
    incremental_out = work / name / "incremental"
    export_parquet(db, incremental_out)  # the first export there, then re-exports
    again_s, again = best_export(db, work / name, repeat, full=False)
    rows = full.element_rows  # type: ignore[attr-defined]
    per_row = full.bytes_per_element_row  # type: ignore[attr-defined]
    total_per_row = full.total_bytes / rows  # type: ignore[attr-defined]
    print(
        f"[{name}] full export: {full_s:.2f} s for {rows:,} element rows ({rows / full_s:,.0f} rows/s)"
    )
    print(
        f"[{name}] element parts: {per_row:.2f} bytes per element row "
        f"(target <= {TARGET_BYTES_PER_ROW:g}); whole export {total_per_row:.2f}"
    )
    print(
        f"[{name}] re-export of the unchanged index: {again_s:.2f} s "
        f"({again.parts_kept} parts kept, {again.parts_written} written)"  # type: ignore[attr-defined]
    )
    if profile:
        profiler = cProfile.Profile()
        profiler.enable()
        export_parquet(db, work / name / "profiled", full=True)
        profiler.disable()
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(12)
        print(text.getvalue())
    return full_s


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=20_000, help="archive size to build")
    parser.add_argument("--db", default=None, help="an existing SQLite index instead")
    parser.add_argument("--pg-url", default=None, help="also index into this PostgreSQL database")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument(
        "--work", type=Path, default=None, help="folder for the archive and exports"
    )
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-export-"))
    work.mkdir(parents=True, exist_ok=True)
    print(load())
    try:
        if args.db:
            db_file = args.db
        else:
            db_file, _ = build_index(args.files, work, args.pg_url)
        instances = instances_of(db_file)
        floor_s, rows = read_floor(db_file)
        sqlite_per_row = os.path.getsize(db_file) / rows
        print(
            f"index: {instances:,} instances, {rows:,} element rows, SQLite {sqlite_per_row:.1f} bytes per element row"
        )
        print(f"baseline: sqlite3 reads every element row in {floor_s:.2f} s ({load()})")
        full_s = report_export("sqlite", db_file, work, args.repeat, args.profile)
        print(f"[sqlite] export / baseline read = {full_s / floor_s:.2f}")
        scaled = full_s * 200_000 / instances
        print(
            f"[sqlite] extrapolated to 200,000 instances: {scaled:.1f} s "
            f"(target < {TARGET_SECONDS_200K:g} s: {'met' if scaled < TARGET_SECONDS_200K else 'NOT met'})"
        )
        if args.pg_url:
            pg_s = report_export("postgresql", args.pg_url, work, args.repeat, args.profile)
            print(f"[postgresql] export / SQLite export = {pg_s / full_s:.2f}")
        print(load())
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
