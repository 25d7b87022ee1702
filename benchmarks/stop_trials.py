"""Stop an `indexer index` run mid-run, the real way, again and again; say how each run ended.

Cases: SIGINT to the main process, SIGINT to the process group (Ctrl-C), two SIGINTs to the
group 0.3 s apart, SIGTERM to the main process, SIGKILL of the main process only, and (on
PostgreSQL) the run's connections terminated twice, 1 s apart, with pg_terminate_backend.
Each trial indexes ARCHIVE into a fresh database with TMPDIR set to a folder of its own, waits
until the first batch is committed plus a random moment, stops the run, and measures: the exit
code, seconds from the stop to the main process's exit (a run still there after --timeout is
a hang: its group is killed), processes of its group still alive 5 s after the main process
ended, scratch bytes left in TMPDIR, the run row's outcome, and the scratch bytes left after
the next run (a tiny `indexer index` of an empty folder, same TMPDIR).

Run ``python benchmarks/stop_trials.py ARCHIVE --trials 20 [--db sqlite|postgresql|both]
[--cases sigint-main,...] [--code DIR] [--jsonl OUT]``, or ``--summarize OUT...`` for the
table of saved results (``--code``: the tree whose `indexer` package runs,
for a before/after comparison; ``--pg-url`` or INDEXER_TEST_PG_URL: the PostgreSQL server).
Build an archive with ``benchmarks/make_archive.py OUT --files 2000``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url

CASES = ("sigint-main", "sigint-group", "double-sigint", "sigterm", "sigkill-main", "pg-terminate")
INDEXER = [sys.executable, "-c", "from indexer.cli import main; main()"]
SETTLE_S = 5.0  # processes of the group still alive this long after the main process count


@dataclass
class Result:
    case: str
    kind: str
    exit_code: int | None  # None: a hang (killed after the timeout)
    seconds: float  # from the stop to the main process's exit
    left: int  # processes of its group alive SETTLE_S after the main process ended
    scratch_bytes: int  # in TMPDIR after the run
    outcome: str  # the run row's outcome
    after_next_run: int  # scratch bytes once the next run has started and ended
    stderr: str
    ended_before_stop: bool = False


def _engine(url: str) -> sa.Engine:
    return sa.create_engine(url, poolclass=sa.pool.NullPool)


def _scalar(url: str, sql: str) -> object:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and not Path(parsed.database or "").exists():
        return None
    engine = _engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text(sql)).scalar()
    except sa.exc.SQLAlchemyError:
        return None
    finally:
        engine.dispose()


def _group_alive(pgid: int) -> list[int]:
    """PIDs of the process group `pgid` that are not zombies (scanned in /proc)."""
    alive = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            alive.append(int(entry))
    return alive


def _bytes_under(folder: Path, prefix: str = "indexer-scratch") -> int:
    total = 0
    for item in folder.iterdir() if folder.exists() else []:
        if not item.name.startswith(prefix):
            continue
        for dirpath, _, names in os.walk(item):
            for name in names:
                with contextlib.suppress(OSError):
                    total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def _terminate_connections(url: str, server: str) -> int:
    database = make_url(url).database
    engine = _engine(server)
    try:
        with engine.connect() as conn:
            return len(
                conn.execute(
                    sa.text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = :d AND pid <> pg_backend_pid()"
                    ),
                    {"d": database},
                ).all()
            )
    finally:
        engine.dispose()


def _stop(case: str, proc: subprocess.Popen[str], url: str, server: str | None) -> None:
    if case == "sigint-main":
        os.kill(proc.pid, signal.SIGINT)
    elif case == "sigint-group":
        os.killpg(proc.pid, signal.SIGINT)
    elif case == "double-sigint":
        os.killpg(proc.pid, signal.SIGINT)
        time.sleep(0.3)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
    elif case == "sigterm":
        os.kill(proc.pid, signal.SIGTERM)
    elif case == "sigkill-main":
        os.kill(proc.pid, signal.SIGKILL)
    elif case == "pg-terminate":
        assert server is not None
        _terminate_connections(url, server)
        time.sleep(1.0)
        _terminate_connections(url, server)
    else:
        raise ValueError(case)


def _default_sigint() -> None:
    # A job started in the background by a script inherits SIGINT ignored, and the indexer
    # (like any program) leaves an ignored SIGINT ignored: Ctrl-C is what is tried here.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_trial(
    case: str,
    kind: str,
    url: str,
    archive: Path,
    tmpdir: Path,
    *,
    server: str | None = None,
    code: Path | None = None,
    timeout: float = 30.0,
    workers: int = 2,
    rng: random.Random | None = None,
    next_run: bool = True,
) -> Result:
    """One trial into the fresh database `url`; scratch goes to `tmpdir` (made if absent)."""
    rng = rng or random.Random()
    tmpdir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, TMPDIR=str(tmpdir))
    env.pop("INDEXER_DB", None)
    if code is not None:
        env["PYTHONPATH"] = str(code)
    command = [*INDEXER, "index", str(archive), "--db", url, "-w", str(workers), "-q"]
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmpdir,  # not the current folder: `python -c` puts it first on sys.path
        start_new_session=True,
        preexec_fn=_default_sigint,
    )
    try:
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            if (_scalar(url, "SELECT COUNT(*) FROM files") or 0) > 0:  # type: ignore[operator]
                break
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 0.5))
        ended_before = proc.poll() is not None
        stopped = time.monotonic()
        if not ended_before:
            _stop(case, proc, url, server)
        try:
            proc.wait(timeout=timeout)
            code_ = proc.returncode
        except subprocess.TimeoutExpired:
            code_ = None
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        seconds = time.monotonic() - stopped
        settle = time.monotonic() + SETTLE_S
        while _group_alive(proc.pid) and time.monotonic() < settle:
            time.sleep(0.1)
        left = len(_group_alive(proc.pid))
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # workers left behind hold the output pipes open
    _, stderr = proc.communicate()
    time.sleep(0.2)  # processes killed just now let go of their files
    scratch = _bytes_under(tmpdir)
    outcome = _scalar(url, "SELECT outcome FROM runs ORDER BY id DESC LIMIT 1")
    after = scratch
    if next_run:
        empty = Path(tempfile.mkdtemp(prefix="stop-trial-empty-"))
        try:
            subprocess.run(
                [*INDEXER, "index", str(empty), "--db", url, "-w", "1", "-q"],
                env=env,
                cwd=tmpdir,
                capture_output=True,
                timeout=120,
                check=False,
            )
        finally:
            shutil.rmtree(empty, ignore_errors=True)
        after = _bytes_under(tmpdir)
    return Result(
        case,
        kind,
        code_,
        round(seconds, 2),
        left,
        scratch,
        str(outcome),
        after,
        stderr.strip()[-300:],
        ended_before,
    )


def fresh_url(kind: str, folder: Path, server: str | None) -> tuple[str, Callable[[], None]]:
    """A new empty database and the function that removes it."""
    if kind == "sqlite":
        path = folder / f"index-{secrets.token_hex(4)}.db"
        return f"sqlite:///{path}", lambda: [
            p.unlink(missing_ok=True) for p in folder.glob(path.name + "*")
        ]  # type: ignore[return-value]
    assert server is not None
    name = f"stop_trial_{secrets.token_hex(5)}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return make_url(server).set(database=name).render_as_string(hide_password=False), drop


def _summary(results: list[Result]) -> str:
    lines = [
        "| db | case | trials | exit codes | s to exit (max) | processes left | scratch bytes left "
        "| scratch after next run | run outcomes |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    groups: dict[tuple[str, str], list[Result]] = {}
    for r in results:
        groups.setdefault((r.kind, r.case), []).append(r)
    for (kind, case), rs in groups.items():
        codes: dict[str, int] = {}
        outcomes: dict[str, int] = {}
        for r in rs:
            key = "hang" if r.exit_code is None else str(r.exit_code)
            if r.ended_before_stop:
                key += "(ended first)"
            codes[key] = codes.get(key, 0) + 1
            outcomes[r.outcome] = outcomes.get(r.outcome, 0) + 1
        lines.append(
            f"| {kind} | {case} | {len(rs)} | "
            + ", ".join(f"{k}x{v}" for k, v in sorted(codes.items()))
            + f" | {max(r.seconds for r in rs):.1f} | {sum(r.left for r in rs)} | "
            f"{max(r.scratch_bytes for r in rs):,} max | {max(r.after_next_run for r in rs):,} max | "
            + ", ".join(f"{k}x{v}" for k, v in sorted(outcomes.items()))
            + " |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("archive", type=Path, nargs="?")
    parser.add_argument(
        "--summarize", type=Path, nargs="+", default=None, help="print the table of JSONL results"
    )
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--db", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--code", type=Path, default=None, help="tree of the indexer to run")
    parser.add_argument("--pg-url", default=os.environ.get("INDEXER_TEST_PG_URL"))
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds before a hang")
    parser.add_argument("--jsonl", type=Path, default=None, help="append each result here")
    args = parser.parse_args(argv)
    if args.summarize:
        rows = [json.loads(line) for f in args.summarize for line in f.read_text().splitlines()]
        print(_summary([Result(**row) for row in rows]))
        return 0
    if args.archive is None:
        parser.error("ARCHIVE is needed")
    kinds = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    work = Path(tempfile.mkdtemp(prefix="stop-trials-"))
    results: list[Result] = []
    rng = random.Random(0)
    try:
        # Trials outer, cases inner: a loop cut short still has every case tried alike.
        for n in range(args.trials):
            for kind in kinds:
                for case in args.cases.split(","):
                    if case == "pg-terminate" and kind != "postgresql":
                        continue
                    url, drop = fresh_url(kind, work, args.pg_url)
                    try:
                        r = run_trial(
                            case,
                            kind,
                            url,
                            args.archive,
                            work / f"tmp-{kind}-{case}-{n}",
                            server=args.pg_url,
                            code=args.code,
                            timeout=args.timeout,
                            rng=rng,
                            # What the next run removes matters where the run could not.
                            next_run=case in ("sigkill-main", "pg-terminate"),
                        )
                    finally:
                        drop()
                    results.append(r)
                    print(json.dumps(asdict(r)), flush=True)
                    if args.jsonl:
                        with args.jsonl.open("a") as fh:
                            fh.write(json.dumps(asdict(r)) + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(_summary(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
