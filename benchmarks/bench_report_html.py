"""Time `indexer report --html` on an index of a synthetic archive (5,000 files by default).

The archive is built by make_archive.py from real corpus files, indexed once per database,
then the report is made `--repeat` times (the fastest run counts) against the baseline of
the same run: `collect_stats`, the `indexer stats` query the report starts with. Both are
timed in this process (no interpreter start); the whole command, as a subprocess, is timed
too. The load average is printed with the figures.

Run ``python benchmarks/bench_report_html.py [--files N] [--repeat N] [--pg-url URL]
[--archive DIR] [--corpus DIR] [--keep]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import sqlalchemy as sa  # noqa: E402
from make_archive import build_archive  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402
from sqlalchemy.pool import NullPool  # noqa: E402

from indexer.db import connect  # noqa: E402
from indexer.reports import collect_stats  # noqa: E402
from indexer.reports.html import write_html_report  # noqa: E402
from indexer.run import index_paths  # noqa: E402

CLI = [sys.executable, "-c", "from indexer.cli import main; main()"]


def admin(url: str, statement: str) -> None:
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with engine.connect() as conn:
        conn.execute(sa.text(statement))
    engine.dispose()


def best_of(repeat: int, work: Callable[[], Any]) -> tuple[float, list[float]]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times), times


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min), {os.cpu_count()} CPUs"


def measure(url: str, out: Path, repeat: int) -> dict[str, float]:
    with connect(url) as conn:
        stats_s, stats_all = best_of(repeat, lambda: collect_stats(conn))
        report_s, report_all = best_of(repeat, lambda: write_html_report(conn, out))
    cli_s, cli_all = best_of(
        repeat,
        lambda: subprocess.run(
            [*CLI, "report", "--html", str(out), "--db", url], check=True, capture_output=True
        ),
    )
    print(f"  stats (baseline)   best {stats_s:.3f} s   runs {fmt(stats_all)}")
    print(f"  report, in process best {report_s:.3f} s   runs {fmt(report_all)}")
    print(f"  report, command    best {cli_s:.3f} s   runs {fmt(cli_all)}")
    print(f"  report / stats     {report_s / stats_s:.1f}x   page {out.stat().st_size:,} bytes")
    return {"stats_s": stats_s, "report_s": report_s, "command_s": cli_s}


def fmt(times: list[float]) -> str:
    return " ".join(f"{t:.3f}" for t in times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--archive", type=Path, help="build the archive here (kept), or reuse it")
    parser.add_argument(
        "--pg-url", help="also on PostgreSQL: a fresh database is made (and dropped) on this server"
    )
    parser.add_argument(
        "--corpus",
        type=Path,
        default=Path(os.environ["INDEXER_CORPUS"]) if os.environ.get("INDEXER_CORPUS") else None,
        help="the corpus the archive is made from (default: $INDEXER_CORPUS, ../shared/corpus)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the archive and the index")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="bench-report-"))
    pg_name = ""
    archive = args.archive or work / "archive"
    try:
        if not archive.is_dir() or not any(archive.iterdir()):
            archive.mkdir(parents=True, exist_ok=True)
            build_archive(archive, args.files, corpus=args.corpus, log=False)
        files = sum(len(names) for _, _, names in os.walk(archive))
        print(f"archive {archive}: {files:,} files; {load()}")
        urls = [f"sqlite:///{work}/index.db"]
        if args.pg_url:
            pg_name = f"bench_report_{os.getpid()}"
            admin(args.pg_url, f"CREATE DATABASE {pg_name}")
            urls.append(str(make_url(args.pg_url).set(database=pg_name)))
        for url in urls:
            start = time.perf_counter()
            index_paths([str(archive)], url, workers=2)
            kind = url.split(":", 1)[0]
            print(f"{kind}: indexed in {time.perf_counter() - start:.1f} s; {load()}")
            measure(url, work / "report.html", args.repeat)
            print(f"  {load()}")
    finally:
        if pg_name:
            admin(args.pg_url, f"DROP DATABASE IF EXISTS {pg_name} WITH (FORCE)")
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
