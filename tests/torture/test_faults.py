"""Faults: SIGKILL of the main process or of a worker, the database connection killed, SQLite locked.

Every trial ends with a re-run that completes, and the FULL canonical content of the index
(tests/helpers.py dump_index: every table, ids and timestamps replaced by natural keys)
must then equal a clean run's. Kill moments are random; the seed of each trial is in
the failure message so a failing trial can be replayed (TORTURE_SEED=...).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from helpers import (
    INDEXER_BIN,
    Dump,
    children,
    diff_dumps,
    dump_index,
    fresh_database,
    kill_index,
    query,
    reset_database,
    run_outcomes,
    start_index,
)

from indexer.run import index_paths

from .support import copy_good, kill_group, run_bounded

pytestmark = [pytest.mark.corpus]

COPIES = 2  # the good files, twice over: 42 files
MAIN_KILLS = 5  # trials per database kind
WORKER_KILLS = 5  # trials per database kind
KILL_ATTEMPTS = 8  # per trial: a run that ends before its kill is run again, the moment halved
END_TIMEOUT_S = 60.0  # a run that has not ended this long after a worker was killed hangs


def _seed() -> int:
    return int(os.environ.get("TORTURE_SEED") or random.SystemRandom().randrange(2**32))


@pytest.fixture(scope="module")
def fault_tree(tmp_path_factory: pytest.TempPathFactory, corpus_dir: Path) -> Path:
    root = tmp_path_factory.mktemp("faults") / "tree"
    for i in range(COPIES):
        copy_good(corpus_dir, root / f"copy{i}")
    return root


@dataclass(frozen=True)
class Reference:
    kind: str
    server: str | None
    dump: Dump
    seconds: float  # how long one uninterrupted `indexer index` took: kill moments scale with it


_references: dict[str, tuple[Dump, float]] = {}


@pytest.fixture
def reference(
    kind: str,
    fault_tree: Path,
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
) -> Reference:
    """The fault tree indexed by one clean `indexer index` run (once per database kind)."""
    server = request.getfixturevalue("pg_url") if kind == "postgresql" else None
    if kind not in _references:
        with fresh_database(kind, tmp_path_factory.mktemp("faults-ref"), server) as url:
            started = time.monotonic()
            ran = run_bounded(
                [str(INDEXER_BIN), "index", str(fault_tree), "--db", url, "-w", "2", "-q"]
            )
            seconds = time.monotonic() - started
            assert ran.returncode == 0, ran.describe()
            _references[kind] = (dump_index(url), seconds)
    dump, seconds = _references[kind]
    return Reference(kind, server, dump, seconds)


def _connections(server_url: str, database: str | None) -> int:
    rows = query(
        server_url, "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = :db", db=database
    )
    return int(rows[0][0])


def _finish(url: str, tree: Path, note: str) -> None:
    """The user's re-run: it must complete."""
    report = index_paths([tree], url, workers=2)
    assert report.outcome == "completed", note


def _clear_message(stderr: str) -> bool:
    lines = [line for line in stderr.splitlines() if line.strip()]
    return len(lines) == 1 and "Traceback" not in stderr and lines[0].startswith("error: ")


@pytest.mark.slow
def test_sigkill_main_process_then_rerun(
    reference: Reference, fault_tree: Path, tmp_path: Path
) -> None:
    """The main process killed at a random moment of its run (imports, schema, crawl, batches,
    last commit): the re-run completes and the index equals a clean run's."""
    rng = random.Random(seed := _seed())
    for trial in range(MAIN_KILLS):
        note = f"trial {trial} seed {seed}"
        with fresh_database(reference.kind, tmp_path / f"t{trial}", reference.server) as url:
            # A moment within the clean run's duration; a run that ended before its kill
            # (durations vary) is run again on an empty database, the moment halved.
            for attempt in range(KILL_ATTEMPTS):
                delay = rng.uniform(0.0, reference.seconds) * 0.5**attempt
                proc = start_index(url, fault_tree)
                time.sleep(delay)
                ended, stderr = kill_index(proc)
                if ended is None:
                    break
                assert ended == 0, f"{note}: the run failed by itself: {stderr}"
                reset_database(url)
            else:
                pytest.fail(f"{note}: every run ended before its kill")
            note += f" killed {delay:.3f} s after start (attempt {attempt})"
            _finish(url, fault_tree, note)
            assert diff_dumps(reference.dump, dump_index(url)) == "", note
            outcomes = run_outcomes(url)
            # a killed run is marked interrupted by the next one; a kill can also land after the
            # run recorded its completion, while the process was closing down
            assert outcomes[-1] == "completed" and set(outcomes[:-1]) <= {
                "interrupted",
                "completed",
            }, (note, outcomes)


@pytest.mark.slow
def test_sigkill_worker_then_rerun(reference: Reference, fault_tree: Path, tmp_path: Path) -> None:
    """A worker killed at a random moment: the run must end (complete, or fail with one clear line)."""
    rng = random.Random(seed := _seed())
    for trial in range(WORKER_KILLS):
        note = f"trial {trial} seed {seed}"
        with fresh_database(reference.kind, tmp_path / f"t{trial}", reference.server) as url:
            for attempt in range(KILL_ATTEMPTS):
                proc = start_index(url, fault_tree)
                victim = None
                try:
                    deadline = time.monotonic() + 30
                    while (
                        len(children(proc.pid)) < 2
                        and proc.poll() is None
                        and time.monotonic() < deadline
                    ):
                        time.sleep(0.01)
                    delay = rng.uniform(0.0, reference.seconds * 0.6) * 0.5**attempt
                    time.sleep(delay)
                    workers = children(proc.pid)
                    if workers and proc.poll() is None:
                        victim = rng.choice(workers)
                        os.kill(victim, signal.SIGKILL)
                    try:
                        _out, err = proc.communicate(timeout=END_TIMEOUT_S)
                    except subprocess.TimeoutExpired:
                        pytest.fail(
                            f"HANG: {note}: the run did not end within {END_TIMEOUT_S:.0f} s of the kill"
                        )
                finally:
                    kill_index(proc)
                if victim is not None:
                    break
                assert proc.returncode == 0, f"{note}: failed without a kill: {err}"
                reset_database(url)  # it ended before a worker could be killed: again, sooner
            else:
                pytest.fail(f"{note}: every run ended before a worker could be killed")
            note += f" worker {victim} killed {delay:.3f} s after the workers started (attempt {attempt})"
            if proc.returncode != 0:
                assert proc.returncode == 1 and _clear_message(err), (
                    f"{note}: exit {proc.returncode}, stderr {err!r}"
                )
                assert "worker" in err, f"{note}: the message does not say what happened: {err!r}"
            _finish(url, fault_tree, note)
            assert diff_dumps(reference.dump, dump_index(url)) == "", note


# -- the database goes away ------------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.parametrize("kind", ["postgresql"], indirect=True)
def test_postgresql_connections_killed_mid_run(
    reference: Reference, fault_tree: Path, pg_url: str, tmp_path: Path
) -> None:
    """pg_terminate_backend on the indexer's connections while it writes: a clear error or a retry.

    A run that ended before any of its connections was killed is run again, into a fresh
    database and killed sooner (as the SIGKILL trials do): a faster machine or indexer ends
    some runs within the random delay."""
    for attempt in range(3):
        if _kill_connections_trial(
            reference, fault_tree, pg_url, tmp_path, attempt, last=attempt == 2
        ):
            return


def _kill_connections_trial(
    reference: Reference, fault_tree: Path, pg_url: str, tmp_path: Path, attempt: int, last: bool
) -> bool:
    """One trial; False when the run ended before a connection could be killed (and not `last`)."""
    with fresh_database("postgresql", tmp_path, pg_url) as url:
        name = sa.engine.make_url(url).database
        proc = start_index(url, fault_tree)
        try:
            deadline = time.monotonic() + 60
            while (
                not _connections(pg_url, name)
                and proc.poll() is None
                and time.monotonic() < deadline
            ):
                time.sleep(0.02)
            assert proc.poll() is None, "the run ended before its connections could be killed"
            # From the indexer's first connection on, the server "goes away" for a while: every
            # connection to the index is killed, again and again, for two seconds (the run opens
            # the index, creates the schema, crawls, reads and writes meanwhile).
            seed = _seed()
            delay = reference.seconds * 0.4 / (attempt + 1)
            time.sleep(random.Random(seed).uniform(0.0, delay))  # opening, schema, or writing
            killed = 0
            until = time.monotonic() + 2.0
            while time.monotonic() < until and proc.poll() is None:
                killed += len(
                    query(
                        pg_url,
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = :db AND pid <> pg_backend_pid()",
                        db=name,
                    )
                )
                time.sleep(0.1)
            if not killed and not last:
                return False
            assert killed, "no connection of the indexer to kill"
            try:
                _out, err = proc.communicate(timeout=END_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                pytest.fail("HANG: the run did not end after its database connections were killed")
        finally:
            kill_group(proc)
            if proc.poll() is None:
                proc.kill()
            proc.communicate()
        # The next run completes, and the index is a clean run's.
        _finish(url, fault_tree, "re-run after the connections were killed")
        assert diff_dumps(reference.dump, dump_index(url)) == ""
        if proc.returncode != 0:
            assert proc.returncode == 1 and _clear_message(err), (
                f"seed {seed}: exit {proc.returncode}, stderr {err!r}"
            )
            # what happened, in the user's words: not the database library's internals
            assert sa.engine.make_url(url).render_as_string(hide_password=True) in err, err
            jargon = [
                w
                for w in ("sqlalche.me", "Background on this error", "rollback()", "Pipeline")
                if w in err
            ]
            assert not jargon, (
                f"seed {seed}: the message speaks the library's language ({jargon}): {err!r}"
            )
    return True


LOCK_PY = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("COMMIT")
"""


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite"], indirect=True)
def test_sqlite_locked_by_another_process(
    reference: Reference, fault_tree: Path, tmp_path: Path
) -> None:
    """Another process holds an exclusive lock for a few seconds: the run waits, then completes."""
    hold = 4.0
    with fresh_database("sqlite", tmp_path, None) as url:
        ran = run_bounded([str(INDEXER_BIN), "db", "upgrade", "--db", url], timeout=60)
        assert ran.returncode == 0, ran.describe()
        path = sa.engine.make_url(url).database
        locker = subprocess.Popen(
            [sys.executable, "-c", LOCK_PY, str(path), str(hold)], stdout=subprocess.PIPE, text=True
        )
        try:
            assert locker.stdout is not None and locker.stdout.readline().strip() == "locked"
            started = time.monotonic()
            ran = run_bounded(
                [str(INDEXER_BIN), "index", str(fault_tree), "--db", url, "-w", "2", "-q"],
                timeout=120,
            )
            waited = time.monotonic() - started
        finally:
            locker.wait(timeout=60)
        assert ran.returncode == 0, ran.describe()
        assert locker.returncode == 0
        assert waited >= hold * 0.8, f"the run did not wait for the lock ({waited:.1f} s)"
        assert diff_dumps(reference.dump, dump_index(url)) == ""
