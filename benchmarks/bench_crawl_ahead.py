"""What counting the crawl ahead of the readers costs: `indexer index` of two source trees.

Runs `indexer index ARCHIVE -w 2 -q` into a fresh SQLite file (the first run), then again over
the unchanged archive (the re-run: crawl and unchanged check only, where the crawl thread
matters most), with the code of `--before` and of `--after` alternately (PYTHONPATH), `--repeat`
times each; prints the best wall time of each and the ratios after/before, with the load.

Run ``python benchmarks/bench_crawl_ahead.py ARCHIVE --before /work/main --after . --repeat 3``
(an archive from make_archive.py).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLI = [sys.executable, "-c", "from indexer.cli import main; main()"]


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _timed(tree: Path, archive: Path, db: Path) -> tuple[float, float]:
    """Wall seconds, and CPU seconds of the process tree (less disturbed by a busy machine)."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    env.pop("INDEXER_DB", None)
    started, cpu = time.perf_counter(), _cpu()
    subprocess.run(
        [*CLI, "index", str(archive), "--db", str(db), "-w", "2", "-q"], env=env, check=True
    )
    return time.perf_counter() - started, _cpu() - cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("archive", type=Path)
    parser.add_argument("--before", type=Path, required=True, help="source tree of the baseline")
    parser.add_argument("--after", type=Path, required=True, help="source tree measured")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    files = sum(len(names) for _, _, names in os.walk(args.archive))
    best: dict[tuple[str, str, str], float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-crawl-ahead-") as scratch:
        for trial in range(args.repeat):
            for name, tree in (("before", args.before), ("after", args.after)):
                db = Path(scratch) / f"{name}-{trial}.db"
                for run in ("first run", "re-run"):
                    measured = _timed(tree.resolve(), args.archive, db)
                    for kind, seconds in zip(("wall", "cpu"), measured, strict=True):
                        key = (name, run, kind)
                        best[key] = min(best.get(key, seconds), seconds)
                db.unlink()
    print(f"archive: {files} files; best of {args.repeat}; load {os.getloadavg()}")
    for run in ("first run", "re-run"):
        for kind in ("wall", "cpu"):
            before, after = best[("before", run, kind)], best[("after", run, kind)]
            rates = (
                f"{files / before:.0f} -> {files / after:.0f} files/s, " if kind == "wall" else ""
            )
            print(
                f"{run}, {kind} time: before {before:.2f} s, after {after:.2f} s "
                f"({rates}after/before {after / before:.3f})"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
