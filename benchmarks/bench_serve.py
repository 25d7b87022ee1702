"""Load on `indexer serve`: concurrent DICOMweb clients over loopback, p50/p99 per query kind.

    python benchmarks/bench_serve.py --db INDEX [--clients 20] [--seconds 60] [--kinds K,...]

Build the index first, e.g. ``python benchmarks/make_archive.py /tmp/a --files 20000
--min-elements 50`` then ``indexer index /tmp/a --db /tmp/a.db``. The script starts the real
server (``indexer serve --port 0``) on 127.0.0.1, samples UIDs, Patient IDs and study dates
from the index, and runs CLIENTS threads (one requests.Session each) for SECONDS, each
request of a random kind:

* ``study_by_patient``: /studies?PatientID=ID (a hierarchy key)
* ``study_by_date``: /studies?StudyDate=FROM-TO (one month) & limit=100
* ``series_of_study``: /studies/UID/series
* ``any_tag``: /instances?KEY=VALUE&limit=10 on a tag outside the hierarchy tables (answered
  from the element rows): the 20 most used values that at most 2% of the instances hold
* ``any_tag_deep``: the same on nested and private tags (``Sequence.Keyword`` and
  ``(GGGG,"CREATOR",EE)`` keys, their most used values: broad searches asked for ten)
* ``instance_metadata``: .../instances/UID/metadata
* ``retrieve_instance``: .../instances/UID (multipart/related application/dicom)

Prints, per kind: requests, failures (any status but 200, any exception), p50, p99 and max
in ms; and the load average before and after. The client threads share the machine with the
server, so the figures include their own CPU time.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import requests
from sqlalchemy import func, select

from indexer.db import connect
from indexer.reports.find import KEY_COLUMNS, OWN_COLUMNS  # fast keys; any other reads elements
from indexer.schema import instances, patients, series, studies, tag_keys, tag_values

REPO = Path(__file__).resolve().parent.parent


def sample(db: str, n: int = 500) -> dict[str, list[tuple[str, ...]]]:
    with connect(db) as conn:
        rng = random.Random(1)
        rows = conn.execute(
            select(studies.c.study_uid, series.c.series_uid, instances.c.sop_instance_uid)
            .select_from(
                instances.join(series, series.c.id == instances.c.series_ref).join(
                    studies, studies.c.id == series.c.study_ref
                )
            )
            .order_by(instances.c.file_id)
            .limit(20000)
        ).all()
        picked = rng.sample(rows, min(n, len(rows)))
        pids = [
            r[0]
            for r in conn.execute(
                select(patients.c.patient_id).where(patients.c.patient_id != "").limit(5000)
            )
        ]
        dates = sorted(
            {
                r[0][:6]
                for r in conn.execute(
                    select(studies.c.study_date)
                    .where(studies.c.study_date.is_not(None))
                    .limit(5000)
                )
                if r[0]
            }
        )
        total = conn.execute(select(func.count()).select_from(instances)).scalar() or 1
        # Selective any-tag questions (a value held by at most 2% of the instances), as a
        # user asks them: a broad one returns thousands of matches whatever the server does.
        counted = func.sum(tag_values.c.instances)
        keys = conn.execute(
            select(tag_keys.c.keywords, tag_values.c.value, counted)
            .join(tag_values, tag_values.c.key_id == tag_keys.c.id)
            .where(tag_keys.c.depth == 0, tag_keys.c.private_creator.is_(None))
            .group_by(tag_keys.c.keywords, tag_values.c.value)
            .having(counted <= total // 50)
            .order_by(counted.desc())
            .limit(500)
        ).all()
        # Nested and private keys, by their most used values.
        deep = conn.execute(
            select(tag_keys.c.keywords, tag_values.c.value, counted)
            .join(tag_values, tag_values.c.key_id == tag_keys.c.id)
            .where((tag_keys.c.depth > 0) | tag_keys.c.private_creator.is_not(None))
            .group_by(tag_keys.c.keywords, tag_values.c.value)
            .order_by(counted.desc())
            .limit(200)
        ).all()
    any_tag_deep = [
        (k, v)
        for k, v, _ in deep
        if k and v and not any(c in v for c in "\\*?") and "[" not in k and ("." in k or '"' in k)
    ]
    any_tag = [
        (k, v)
        for k, v, _ in keys
        if k
        and k.isidentifier()
        and k not in OWN_COLUMNS
        and k not in KEY_COLUMNS
        and k != "Modality"
        and v
        and "\\" not in v
        and "*" not in v
        and "?" not in v
    ]
    return {
        "instances": [tuple(r) for r in picked],
        "patients": [(p,) for p in rng.sample(pids, min(n, len(pids)))],
        "months": [(d,) for d in dates if len(d) == 6],
        "any_tag": any_tag[:20],
        "any_tag_deep": any_tag_deep[:20],
    }


def request_of(
    kind: str, root: str, s: dict[str, list[tuple[str, ...]]], rng: random.Random
) -> tuple[str, dict[str, str]]:
    study, ser, sop = rng.choice(s["instances"])
    if kind == "study_by_patient":
        return f"{root}/studies", {"PatientID": rng.choice(s["patients"])[0]}
    if kind == "study_by_date":
        (month,) = rng.choice(s["months"])
        return f"{root}/studies", {"StudyDate": f"{month}01-{month}31", "limit": "100"}
    if kind == "series_of_study":
        return f"{root}/studies/{study}/series", {}
    if kind == "any_tag":
        key, value = rng.choice(s["any_tag"])
        return f"{root}/instances", {key: value, "limit": "10"}
    if kind == "any_tag_deep":
        key, value = rng.choice(s["any_tag_deep"])
        return f"{root}/instances", {key: value, "limit": "10"}
    if kind == "instance_metadata":
        return f"{root}/studies/{study}/series/{ser}/instances/{sop}/metadata", {}
    return f"{root}/studies/{study}/series/{ser}/instances/{sop}", {}


KINDS = (
    "study_by_patient",
    "study_by_date",
    "series_of_study",
    "any_tag",
    "any_tag_deep",
    "instance_metadata",
    "retrieve_instance",
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument(
        "--kinds", default=",".join(KINDS), help=f"comma-separated, of: {', '.join(KINDS)}"
    )
    args = parser.parse_args()
    kinds = [k for k in args.kinds.split(",") if k in KINDS]
    s = sample(args.db)
    if not s["any_tag"]:
        s["any_tag"] = [("ImageType", "ORIGINAL")]
    print(f"any_tag keys: {', '.join(k for k, _ in s['any_tag'])}")
    if not s["any_tag_deep"]:
        kinds = [k for k in kinds if k != "any_tag_deep"]
    print(f"any_tag_deep keys: {', '.join(sorted({k for k, _ in s['any_tag_deep']}))}")
    server = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from indexer.cli import main; main()",
            "serve",
            "--db",
            args.db,
            "--port",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert server.stdout is not None
    root = server.stdout.readline().split()[2]
    latencies: dict[str, list[float]] = defaultdict(list)
    failures: dict[str, int] = defaultdict(int)
    lock = threading.Lock()
    deadline = time.monotonic() + args.seconds

    def client(seed: int) -> None:
        rng = random.Random(seed)
        session = requests.Session()
        while time.monotonic() < deadline:
            kind = rng.choice(kinds)
            url, params = request_of(kind, root, s, rng)
            started = time.perf_counter()
            try:
                answer = session.get(url, params=params, timeout=120)
                ok = answer.status_code == 200 and len(answer.content) > 0
            except requests.RequestException:
                ok = False
            elapsed = (time.perf_counter() - started) * 1000
            with lock:
                latencies[kind].append(elapsed)
                if not ok:
                    failures[kind] += 1

    load_before = os.getloadavg()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - started
    load_after = os.getloadavg()
    server.terminate()
    server.wait(timeout=30)
    total = sum(len(v) for v in latencies.values())
    print(
        f"{args.clients} clients, {wall:.0f} s, {total} requests ({total / wall:.1f}/s), failed: {sum(failures.values())}"
    )
    print(f"load average before {load_before[0]:.1f}, after {load_after[0]:.1f} (1 min)")
    print(f"{'kind':20} {'requests':>8} {'failed':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for kind in KINDS:
        values = sorted(latencies[kind])
        if not values:
            continue
        p99 = values[min(len(values) - 1, int(len(values) * 0.99))]
        print(
            f"{kind:20} {len(values):8d} {failures[kind]:6d} {statistics.median(values):8.1f} {p99:8.1f} {values[-1]:8.1f}"
        )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
