"""The parse-only ceiling: ``pydicom.dcmread(path, defer_size=256)`` and nothing else.

The index benchmark compares its throughput with ``parse_only(paths, processes)``
run on the same files and the same number of processes.

Run ``python benchmarks/parse_only.py DIR [--processes 1 2 ...] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
import warnings
from collections.abc import Sequence
from multiprocessing import Pool

import pydicom

CHUNKSIZE = 64


def _parse(path: str) -> bool:
    """Parse one file; True when pydicom read it."""
    try:
        pydicom.dcmread(path, defer_size=256)
    except Exception:  # noqa: BLE001 - the ceiling counts failures, it does not stop on them
        return False
    return True


def _quiet() -> None:
    """Pool initializer: no warning output in the workers."""
    warnings.simplefilter("ignore")


def _cpu_seconds() -> float:
    """CPU time (user + system) of this process and of its reaped children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def parse_only(paths: Sequence[str], processes: int) -> dict[str, float]:
    """Parse every path; return files, errors, seconds, files_per_s, cpu_seconds, processes.

    ``processes=1`` parses in this process (no pool); otherwise a Pool of
    ``processes`` workers runs ``imap_unordered`` with chunks of 64 paths. Pool start
    and shutdown are part of the measured time, as they are for the indexer.
    ``cpu_seconds`` (all processes) helps to judge a run on a busy machine.
    """
    cpu = _cpu_seconds()
    start = time.perf_counter()
    if processes <= 1:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ok = sum(_parse(p) for p in paths)
    else:
        pool = Pool(processes, initializer=_quiet)
        try:
            ok = sum(pool.imap_unordered(_parse, paths, chunksize=CHUNKSIZE))
        finally:
            pool.close()
            pool.join()  # reaps the workers, so that their CPU time is counted
    seconds = time.perf_counter() - start
    return {
        "files": len(paths),
        "errors": len(paths) - ok,
        "seconds": seconds,
        "files_per_s": len(paths) / seconds if seconds else 0.0,
        "cpu_seconds": _cpu_seconds() - cpu,
        "processes": max(1, processes),
    }


def list_files(root: str) -> list[str]:
    """Every file under ``root``, in sorted walk order."""
    out: list[str] = []
    for directory, dirs, files in os.walk(root):
        dirs.sort()
        out.extend(os.path.join(directory, name) for name in sorted(files))
    return out


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", help="directory tree to parse")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, os.cpu_count() or 1])
    parser.add_argument(
        "--json", action="store_true", help="print one JSON list of results, nothing else"
    )
    args = parser.parse_args(argv)
    paths = list_files(args.root)
    if args.json:
        print(json.dumps([parse_only(paths, processes) for processes in args.processes]))
        return 0
    print(f"{len(paths)} files under {args.root}")
    for processes in args.processes:
        r = parse_only(paths, processes)
        print(
            f"processes {int(r['processes']):>2}: {int(r['files'])} files "
            f"({int(r['errors'])} errors) in {r['seconds']:.2f} s = {r['files_per_s']:.0f} files/s"
            f" (CPU {r['cpu_seconds']:.2f} s)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
