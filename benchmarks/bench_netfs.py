"""The network file system benchmark: `indexer index` behind a share's latency, before and after.

Builds (or reuses) an archive of N small real files (make_archive.py), mounts it behind
fuse_delay.py (``--delay-ms`` per metadata operation and per read, 1 ms by default) and
indexes it into a fresh SQLite file, each run a subprocess, the four configurations in turn
(round robin, so that they see the same load), best of ``--repeat``:

* ``today``: the code of commit ``--baseline`` (ee5d4f1: serial crawl, one file read at
  a time per worker), unpacked with ``git archive`` into a temporary folder;
* ``new``: this tree's code on the same mount;
* ``local``: this tree's code on the archive on local disk, and ``today_local`` the
  baseline's there too (local disk must not get slower).

It prints files/s and the ratios against the targets of issue 14 (new >= 5x today behind
the latency, new >= half of local), with the load average. The mount is always removed
(``fusermount3 -u``), on failure and Ctrl-C too. A report, not a test: it exits 0 whatever
the figures, 1 only when a step could not run.

Run ``python benchmarks/bench_netfs.py --files 5000 [--archive DIR] [--delay-ms 1]
[--repeat 3] [--workers 2] [--baseline ee5d4f1]``.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))  # sibling scripts, not a package

from fuse_delay import mounted  # noqa: E402
from make_archive import build_archive  # noqa: E402

VS_TODAY = 5.0  # new >= 5x today's rate behind the latency
VS_LOCAL = 0.5  # new >= half the local-disk rate


def index_once(code: Path, archive: Path, workers: int, scratch: Path) -> float:
    """Seconds for one `indexer index` of `archive` with the code in `code`, fresh database."""
    db = scratch / f"run-{time.monotonic_ns()}.sqlite"
    run = "import indexer, os, sys; print(os.path.dirname(os.path.dirname(indexer.__file__)));"
    run += " sys.stdout.flush(); from indexer.cli import main; main()"
    cmd = [sys.executable, "-c", run, "index", str(archive)]
    cmd += ["--workers", str(workers), "--quiet", "--db", str(db)]
    env = dict(os.environ, PYTHONPATH=str(code))
    started = time.perf_counter()
    # cwd: with `python -c` the current folder comes first on sys.path, before PYTHONPATH.
    done = subprocess.run(cmd, env=env, cwd=scratch, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"indexer index failed ({code}): {done.stderr.strip()[-500:]}")
    if not done.stdout.startswith(str(code)):  # the code imported is the one meant
        raise SystemExit(f"{code}: ran the indexer of {done.stdout.strip()}")
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    return elapsed


def unpack_commit(commit: str, into: Path) -> Path:
    """The tree of `commit` as plain files (no worktree, no checkout of the main repo)."""
    archive = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "archive", "--format=tar", commit],
        capture_output=True,
        check=True,
    ).stdout
    into.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--archive", type=Path, help="reuse this archive (built when missing)")
    parser.add_argument("--delay-ms", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--baseline", default="ee5d4f1", help="commit of today's code")
    parser.add_argument(
        "--corpus", type=Path, default=os.environ.get("INDEXER_CORPUS"), help="source files"
    )
    parser.add_argument("--skip-today", action="store_true", help="only new and local")
    args = parser.parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the share is unmounted either way.
    signal.signal(signal.SIGTERM, signal.default_int_handler)

    with tempfile.TemporaryDirectory(prefix="bench_netfs-") as tmp:
        scratch = Path(tmp)
        archive = args.archive or scratch / "archive"
        if not archive.exists() or not any(archive.iterdir()):
            build_archive(archive, args.files, corpus=args.corpus, log=False)
        files = sum(len(names) for _, _, names in os.walk(archive))
        today_code = None if args.skip_today else unpack_commit(args.baseline, scratch / "today")
        print(
            f"{files} files, {args.delay_ms} ms per operation, {args.workers} workers, "
            f"best of {args.repeat}; load before: {os.getloadavg()[0]:.2f}"
        )
        codes = {"local": REPO_ROOT, "new": REPO_ROOT}
        if today_code is not None:
            codes.update(today_local=today_code, today=today_code)
        seconds: dict[str, float] = {}
        with mounted(archive, scratch / "mnt", delay_ms=args.delay_ms) as mnt:
            roots = {"local": archive, "today_local": archive, "new": mnt, "today": mnt}
            # Round robin, so that every configuration sees the same changes of the load.
            for _ in range(args.repeat):
                for label, code in codes.items():
                    took = index_once(code, roots[label], args.workers, scratch)
                    seconds[label] = min(seconds.get(label, took), took)
        rates = {label: files / took for label, took in seconds.items()}
        names = {
            "today": f"today's code, {args.delay_ms:g} ms share",
            "new": f"new code, {args.delay_ms:g} ms share",
            "local": "new code, local disk",
            "today_local": "today's code, local disk",
        }
        print(f"{'run':<34}{'files/s':>10}")
        for label in ("today", "new", "local", "today_local"):
            if label in rates:
                print(f"{names[label]:<34}{rates[label]:>10.0f}")
        if "today" in rates:
            ratio = rates["new"] / rates["today"]
            verdict = "PASS" if ratio >= VS_TODAY else "MISS"
            print(f"share: new / today = {ratio:.2f}x (target >= {VS_TODAY}x): {verdict}")
        ratio = rates["new"] / rates["local"]
        verdict = "PASS" if ratio >= VS_LOCAL else "MISS"
        print(f"new: share / local disk = {ratio:.2f} (target >= {VS_LOCAL}): {verdict}")
        if "today_local" in rates:
            ratio = rates["local"] / rates["today_local"]
            print(f"local disk: new / today = {ratio:.2f} (no regression: about 1 or more)")
        print(f"load after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
