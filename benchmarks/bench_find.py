"""Time `find` questions on an existing index, with this checkout and optionally a baseline one.

Run ``python benchmarks/bench_find.py INDEX_DB [--baseline OTHER_CHECKOUT] [--rounds 3]``
(INDEX_DB e.g. built by make_archive.py + ``indexer index``). Each question is asked through
the library (``indexer.reports.find``) `--repeat` times in one process per checkout and round,
rounds alternating between the checkouts; the best time is printed, with the ratio to the
baseline measured in the same run, and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

QUESTIONS = [
    ("instances", ["SeriesDescription=*EPI*"]),  # was a series column, now element rows
    ("series", ["SeriesDescription=*EPI*"]),
    ("instances", ["BodyPartExamined=BRAIN"]),
    ("studies", ["PatientID=*1*"]),
    ("instances", ["SliceThickness<=3"]),  # element rows before and after
    ("instances", ["Modality=MR", "SeriesDescription=*EPI*"]),
    ("studies", ["StudyDate=19000101-20301231"]),
    ("instances", ["SeriesInstanceUID=1.2.3", "EchoTime>=10"]),  # few files: by primary key
]


def _measure(db: str, repeat: int) -> list[tuple[int, float]]:
    from indexer.db import connect
    from indexer.reports import find, parse_filters

    results = []
    with connect(db) as conn:
        for level, filters in QUESTIONS:
            best, rows = float("inf"), []
            for _ in range(repeat):
                start = time.perf_counter()
                rows = find(conn, level, parse_filters(filters))
                best = min(best, time.perf_counter() - start)
            results.append((len(rows), best))
    return results


def _run(checkout: Path, db: str, repeat: int) -> list[tuple[int, float]]:
    env = dict(os.environ, PYTHONPATH=str(checkout))
    done = subprocess.run(
        [sys.executable, __file__, db, "--repeat", str(repeat), "--child"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return [tuple(r) for r in json.loads(done.stdout)]  # type: ignore[misc]


def _best(kept: list[tuple[int, float]], new: list[tuple[int, float]]) -> list[tuple[int, float]]:
    if not kept:
        return new
    return [(n, min(t, u)) for (n, t), (_, u) in zip(kept, new, strict=True)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("db")
    parser.add_argument("--baseline", type=Path, help="another checkout to compare with")
    parser.add_argument("--repeat", type=int, default=3, help="times per round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_measure(args.db, args.repeat)))
        return 0
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    here = Path(__file__).resolve().parent.parent
    ours: list[tuple[int, float]] = []
    base: list[tuple[int, float]] | None = [] if args.baseline else None
    # Rounds alternate between the checkouts, so that a change in the machine's load
    # does not favour one; the best of every round is kept.
    for _ in range(args.rounds):
        ours = _best(ours, _run(here, args.db, args.repeat))
        if base is not None:
            base = _best(base, _run(args.baseline, args.db, args.repeat))
    for i, (level, filters) in enumerate(QUESTIONS):
        line = f"{level:9} {' '.join(filters):42} {ours[i][0]:6} rows {ours[i][1] * 1000:8.1f} ms"
        if base is not None:
            line += f"   baseline {base[i][0]:6} rows {base[i][1] * 1000:8.1f} ms"
            line += f"   ratio {ours[i][1] / base[i][1]:6.2f}"
        print(line)
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
