"""The writer benchmark: how many files/s the write path absorbs, and how runs scale with writers.

In one run, over one synthetic archive of N small real files (make_archive.py):

1. per-stage CPU per file in this process: read + walk (reader.read_file), rows, COPY text and
   tag counts (the rest of worker.process_chunk);
2. the writer ceiling: the files are read once beforehand, then their finished outcomes are
   fed to the writer path as fast as it takes them: the single SQLite writer (batches of
   500), one PostgreSQL writer as today (batches of 500, counters upserted), and N chunk
   writers (`--writers N`: N forked processes, one transaction per chunk of 64 files,
   counters appended to the delta tables, then one merge). For each: files/s, the client's
   and the server backends' CPU per file, and for N writers the share of the writers'
   sampled time spent waiting on a heavyweight lock (pg_stat_activity every 5 ms);
3. real `indexer index` runs into fresh databases: SQLite and PostgreSQL with the single
   writer (--workers 2), and PostgreSQL with --writers 1, 2, 4, best of --repeat;
4. projected files/s at 8, 16 and 64 cores from the measured CPU costs, and the same model
   at 2 cores beside the real 2-writer run.

The machine may be shared: the load average is printed next to every figure. A report, not
a test: exits 0 whatever the figures.

Run ``python benchmarks/bench_writers.py [--files 4000] [--repeat 2] [--pg-url URL]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))  # sibling scripts, not a package

from bench_index import DEFAULT_PG_URL, PgServer, choose_archive_dir  # noqa: E402
from make_archive import build_archive  # noqa: E402

BATCH = 500  # files per transaction of the single writer (run.py's default)
CHUNK = 64  # files per chunk of a chunk writer (run.WRITER_CHUNK)
SAMPLE_S = 0.005
CLK_TCK = os.sysconf("SC_CLK_TCK")
PROJECTED_CORES = (2, 8, 16, 64)

_RUN_PY = """
import json, resource, sys, time
from indexer.run import index_paths
started = time.perf_counter()
r = index_paths([sys.argv[1]], sys.argv[2], workers=int(sys.argv[3]), writers=int(sys.argv[4]))
wall = time.perf_counter() - started
me = resource.getrusage(resource.RUSAGE_SELF)
kids = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"wall": wall, "files": r.indexed + r.partial + r.failed + r.skipped,
    "main_cpu": me.ru_utime + me.ru_stime, "workers_cpu": kids.ru_utime + kids.ru_stime}))
"""


def load() -> str:
    return "load " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def proc_cpu(pid: int) -> float | None:
    """CPU seconds of process `pid` (user + system), None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


class ServerSampler(threading.Thread):
    """Samples the server backends of one database: their wait events and CPU time."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        import psycopg
        from sqlalchemy.engine import make_url

        parsed = make_url(url)
        self.conn = psycopg.connect(
            host=parsed.host, port=parsed.port, user=parsed.username, dbname=parsed.database
        )
        self.conn.autocommit = True
        self.stop = threading.Event()
        self.waits: Counter[str] = Counter()  # wait event of active backends, per sample
        self.active = 0  # (sample, active backend) pairs
        self.cpu: dict[int, tuple[float, float]] = {}  # pid -> (first, last) CPU seen

    def run(self) -> None:
        query = (
            "SELECT pid, state, wait_event_type, wait_event FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND backend_type = 'client backend'"
        )
        while not self.stop.is_set():
            for pid, state, kind, event in self.conn.execute(query).fetchall():
                cpu = proc_cpu(pid)
                if cpu is not None:
                    first = self.cpu.get(pid, (cpu, cpu))[0]
                    self.cpu[pid] = (first, cpu)
                if state == "active":
                    self.active += 1
                    if kind == "Lock":
                        self.waits[f"Lock:{event}"] += 1
                    elif kind:
                        self.waits[f"{kind}:{event}"] += 1
            time.sleep(SAMPLE_S)

    def finish(self) -> dict[str, Any]:
        self.stop.set()
        self.join()
        self.conn.close()
        locks = sum(n for k, n in self.waits.items() if k.startswith("Lock:"))
        return {
            "server_cpu": sum(last - first for first, last in self.cpu.values()),
            "active_samples": self.active,
            "lock_wait_share": locks / self.active if self.active else 0.0,
            "waits": dict(self.waits.most_common(6)),
        }


# --------------------------------------------------------------------------- stages


def tasks_of(archive: Path, sink: Any, run_key: str) -> list[list[Any]]:
    from indexer.crawler import iter_files
    from indexer.records import DEFAULT_VALUE_LIMIT

    found = sorted(iter_files([str(archive)]), key=lambda f: f.path)
    tasks = [(f.path, f.size, f.mtime_ns, DEFAULT_VALUE_LIMIT, sink, run_key) for f in found]
    return [tasks[i : i + CHUNK] for i in range(0, len(tasks), CHUNK)]


def stage_costs(archive: Path) -> dict[str, float]:
    """CPU per file of the worker's stages, in this process."""
    from indexer.backends.copy_rows import CopySpec
    from indexer.reader import read_file
    from indexer.worker import process_chunk

    chunks = tasks_of(archive, CopySpec(), "stages")
    files = sum(len(c) for c in chunks)
    started = time.process_time()
    for chunk in chunks:
        for task in chunk:
            with contextlib.suppress(Exception):  # a bad file costs what it costs
                read_file(task[0])
    read_walk = (time.process_time() - started) / files
    started = time.process_time()
    for chunk in chunks:
        process_chunk(chunk)
    worker = (time.process_time() - started) / files
    return {
        "files": files,
        "read_walk_ms": read_walk * 1e3,
        "rows_counts_copy_ms": (worker - read_walk) * 1e3,
        "worker_ms": worker * 1e3,
    }


def prepared(archive: Path, sink: Any) -> list[list[Any]]:
    """The archive's outcomes, chunk by chunk, read and walked beforehand."""
    from indexer.worker import process_chunk

    return [process_chunk(chunk) for chunk in tasks_of(archive, sink, "ceiling")]


def _writer(url: str, backend: Any, deferred: bool) -> tuple[Any, Any]:
    from indexer.db import make_engine, open_index
    from indexer.writer import BatchWriter, start_run

    engine = open_index(url)
    run_id = start_run(engine, ["/bench"], {})
    engine.dispose()
    engine = make_engine(url)
    return engine, BatchWriter(engine, backend, run_id, deferred_summaries=deferred)


def _batches(chunks: list[list[Any]], size: int) -> list[list[Any]]:
    flat = [o for chunk in chunks for o in chunk]
    return [flat[i : i + size] for i in range(0, len(flat), size)]


def ceiling_sqlite(archive: Path, folder: Path) -> dict[str, Any]:
    from indexer.backends.sqlite import SQLiteBackend

    backend = SQLiteBackend()
    chunks = prepared(archive, backend.sink_spec())
    url = f"sqlite:///{folder}/ceiling-{time.time_ns()}.db"
    engine, writer = _writer(url, backend, False)
    files = sum(len(c) for c in chunks)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for batch in _batches(chunks, BATCH):
        writer.write(batch, (), ())
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    writer.close()
    engine.dispose()
    return {"files_per_s": files / wall, "client_ms": cpu / files * 1e3, "server_ms": 0.0}


def ceiling_pg_single(chunks: list[list[Any]], url: str) -> dict[str, Any]:
    from indexer.backends.postgresql import PostgreSQLBackend

    engine, writer = _writer(url, PostgreSQLBackend(), False)
    sampler = ServerSampler(url)
    files = sum(len(c) for c in chunks)
    writer.connection()
    sampler.start()
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for batch in _batches(chunks, BATCH):
        writer.write(batch, (), ())
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    server = sampler.finish()
    writer.close()
    engine.dispose()
    return {
        "files_per_s": files / wall,
        "client_ms": cpu / files * 1e3,
        "server_ms": server["server_cpu"] / files * 1e3,
        **server,
    }


def _chunk_writer(url: str, chunks: list[list[Any]], start: Any, results: Any, number: int) -> None:
    from indexer.backends.postgresql import PostgreSQLBackend

    engine, writer = _writer(url, PostgreSQLBackend(refresh_statistics=False), True)
    writer.connection().exec_driver_sql("SELECT 1")  # connected before the start
    writer.connection().commit()
    start.wait()
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for chunk in chunks:
        writer.write(chunk, (), ())
    results.put((number, time.perf_counter() - wall0, time.process_time() - cpu0))
    writer.close()
    engine.dispose()


def ceiling_pg_writers(chunks: list[list[Any]], url: str, writers: int) -> dict[str, Any]:
    from indexer import summaries
    from indexer.db import make_engine, open_index

    open_index(url).dispose()  # the schema, before the writers start
    context = multiprocessing.get_context("fork")
    start = context.Event()
    results = context.Queue()
    files = sum(len(c) for c in chunks)
    procs = [
        context.Process(target=_chunk_writer, args=(url, chunks[n::writers], start, results, n))
        for n in range(writers)
    ]
    for p in procs:
        p.start()
    time.sleep(1.0)  # every writer connected
    sampler = ServerSampler(url)
    sampler.start()
    wall0 = time.perf_counter()
    start.set()
    done = []
    while len(done) < writers:
        try:
            done.append(results.get(timeout=1.0))
        except queue.Empty:
            if any(p.exitcode not in (None, 0) for p in procs):
                raise RuntimeError("a chunk writer failed (its traceback is above)") from None
    for p in procs:
        p.join()
    write_wall = time.perf_counter() - wall0
    engine = make_engine(url)
    merge0 = time.perf_counter()
    with engine.begin() as conn:
        merged = summaries.merge_pending(conn)
    merge_s = time.perf_counter() - merge0
    engine.dispose()
    server = sampler.finish()
    wall = write_wall + merge_s
    return {
        "files_per_s": files / wall,
        "client_ms": sum(d[2] for d in done) / files * 1e3,
        "server_ms": server["server_cpu"] / files * 1e3,
        "merge_s": merge_s,
        "merged_keys": merged,
        **server,
    }


def real_run(archive: Path, url: str, workers: int, writers: int) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(BENCH_DIR.parent))
    sampler = ServerSampler(url) if url.startswith("postgresql") else None
    if sampler is not None:
        sampler.start()
    ran = subprocess.run(
        [sys.executable, "-c", _RUN_PY, str(archive), url, str(workers), str(writers)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    result: dict[str, Any] = json.loads(ran.stdout.strip().splitlines()[-1])
    result["files"] = max(1, result["files"])  # the start-up run reads none
    if sampler is not None:
        server = sampler.finish()
        result["server_ms"] = server["server_cpu"] / result["files"] * 1e3
        result["lock_wait_share"] = server["lock_wait_share"]
    result["files_per_s"] = result["files"] / result["wall"]
    result["main_ms"] = result["main_cpu"] / result["files"] * 1e3
    result["workers_ms"] = result["workers_cpu"] / result["files"] * 1e3
    result["load"] = load()
    return result


def best(repeat: int, run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    results = [run() for _ in range(repeat)]
    return max(results, key=lambda r: r["files_per_s"])


# --------------------------------------------------------------------------- model


def project(
    cores: int,
    worker_ms: float,
    writer_ms: float,
    server_ms: float,
    main_ms: float,
    serial_ms: float,
) -> float:
    """files/s on `cores` cores when the per-file CPU costs are spread over them (PostgreSQL
    on the same host), capped by the serial part (`serial_ms` per file in one process)."""
    spread = cores / ((worker_ms + writer_ms + server_ms + main_ms) / 1e3)
    return min(spread, 1e3 / serial_ms) if serial_ms else spread


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=4000)
    parser.add_argument("--repeat", type=int, default=2, help="real runs: best of N")
    parser.add_argument("--writers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--ceiling-writers", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL)
    parser.add_argument("--archive", type=Path, default=None, help="reuse this archive")
    parser.add_argument("--corpus", type=Path, default=os.environ.get("INDEXER_CORPUS"))
    parser.add_argument("--out", type=Path, default=None, help="every figure as JSON")
    args = parser.parse_args(argv)

    archive = args.archive
    built = archive is None
    if archive is None:
        archive = choose_archive_dir(args.files)
        build_archive(archive, args.files, "small", corpus=args.corpus, log=False, min_elements=50)
    folder = Path(tempfile.mkdtemp(prefix="bench_writers_"))
    pg = PgServer(args.pg_url)
    out: dict[str, Any] = {"files": args.files, "cpus": os.cpu_count()}
    try:
        print(f"archive {archive}: {args.files} files; {os.cpu_count()} CPUs; {load()}")
        stages = out["stages"] = stage_costs(archive)
        print(
            f"worker CPU per file: read+walk {stages['read_walk_ms']:.3f} ms, rows+counts+COPY "
            f"{stages['rows_counts_copy_ms']:.3f} ms, total {stages['worker_ms']:.3f} ms ({load()})"
        )
        ceilings = out["ceiling"] = {}
        ceilings["sqlite"] = ceiling_sqlite(archive, folder)
        from indexer.backends.copy_rows import CopySpec

        copy_chunks = prepared(archive, CopySpec())
        ceilings["pg_single"] = ceiling_pg_single(copy_chunks, pg.create("single")[1])
        for n in args.ceiling_writers:
            ceilings[f"pg_{n}_writers"] = ceiling_pg_writers(copy_chunks, pg.create(f"w{n}")[1], n)
        print("\nwriter ceiling (finished chunks fed as fast as taken):")
        base = ceilings["pg_single"]["files_per_s"]
        for name, c in ceilings.items():
            extra = ""
            if "lock_wait_share" in c:
                extra = f", lock waits {100 * c['lock_wait_share']:.1f}% of active samples"
            if "merge_s" in c:
                extra += f", merge {c['merge_s'] * 1e3:.0f} ms"
            print(
                f"  {name:14s} {c['files_per_s']:8.0f} files/s ({c['files_per_s'] / base:.2f}x "
                f"one PG writer)  client {c['client_ms']:.3f} ms/file, server "
                f"{c['server_ms']:.3f} ms/file{extra}"
            )
            if c.get("waits"):
                print(f"      waits: {c['waits']}")
        print(f"  ({load()})")

        runs = out["runs"] = {}
        runs["sqlite_single"] = best(
            args.repeat,
            lambda: real_run(archive, f"sqlite:///{folder}/r-{time.time_ns()}.db", 2, 1),
        )
        runs["pg_single"] = best(
            args.repeat, lambda: real_run(archive, pg.create(f"r{time.time_ns()}")[1], 2, 1)
        )
        for n in args.writers:
            if n > 1:
                runs[f"pg_{n}_writers"] = best(
                    args.repeat,
                    lambda n=n: real_run(archive, pg.create(f"r{time.time_ns()}")[1], n, n),
                )
        # What the main process spends before and after any file (imports, connecting,
        # migrations): taken out of its per-file cost for the projection.
        empty = folder / "empty"
        empty.mkdir()
        startup = real_run(empty, pg.create("startup")[1], 2, 1)["main_cpu"]
        out["startup_cpu_s"] = startup
        print(
            f"\nreal runs (`indexer index`, best of {args.repeat}; start-up {startup:.2f} s CPU):"
        )
        base = runs["pg_single"]["files_per_s"]
        for name, r in runs.items():
            print(
                f"  {name:14s} {r['files_per_s']:8.0f} files/s ({r['files_per_s'] / base:.2f}x PG "
                f"single)  main {r['main_ms']:.3f} ms/file, workers {r['workers_ms']:.3f}, server "
                f"{r.get('server_ms', 0):.3f}, lock waits "
                f"{100 * r.get('lock_wait_share', 0):.1f}%  [{r['load']}]"
            )

        # The model: every per-file CPU cost spread over the cores (the server on the same
        # host), capped by what one process must do in series.
        w = stages["worker_ms"]
        single = ceilings["pg_single"]
        multi_name = max((n for n in runs if n.endswith("_writers")), default="pg_single")
        multi_run = runs[multi_name]
        many = ceilings[f"pg_{max(args.ceiling_writers)}_writers"]
        files = stages["files"]
        main_single = runs["pg_single"]["main_ms"] - startup / files * 1e3
        main_multi = multi_run["main_ms"] - startup / files * 1e3
        single_serial = main_single + single["server_ms"]
        out["projection"] = {}
        print(
            "\nprojected files/s (per-file CPU spread over the cores; serial part as cap; main "
            f"process {main_single:.3f} ms/file single, {main_multi:.3f} with writers, "
            "start-up taken out):"
        )
        print(f"  {'cores':>5s} {'PG single writer':>18s} {'PG N writers':>14s}")
        for cores in PROJECTED_CORES:
            one = project(cores, w, 0.0, single["server_ms"], main_single, single_serial)
            n_writers = project(
                cores,
                w,
                many["client_ms"],
                many["server_ms"],
                main_multi,
                main_multi,
            )
            out["projection"][cores] = {"single": one, "writers": n_writers}
            print(f"  {cores:5d} {one:18.0f} {n_writers:14.0f}")
        print(
            f"  check at 2 cores: measured {runs['pg_single']['files_per_s']:.0f} (single), "
            f"{multi_run['files_per_s']:.0f} ({multi_name})  [{load()}]"
        )
    finally:
        pg.drop_all()
        shutil.rmtree(folder, ignore_errors=True)
        if built:
            shutil.rmtree(archive, ignore_errors=True)
    if args.out is not None:
        args.out.write_text(json.dumps(out, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
