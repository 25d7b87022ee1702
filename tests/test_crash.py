"""Crash safety: `kill -9` at any moment, then a re-run, ends with the content of a clean run.

A tree of a few hundred files (small corpus files replicated into several
folders, broken ones included) is indexed once without interruption: that dump
is the reference. Each trial indexes the same tree into a fresh database in a
separate process, kills it with SIGKILL at a random moment, checks that what it
left is consistent file by file, runs the indexer again to completion and
compares the FULL canonical dump (tests/helpers.py: every table, ids and
timestamps replaced by natural keys) with the reference. The random delays are
printed with any failure, so a failing trial can be replayed.

The indexer runs as a child process (`python -c` calling index_paths, so the
batch size can be made small enough to give many commit points in a short run,
or the `indexer` command itself): a SIGKILL must hit a real process, and its
pool workers die with it (the process group is killed after the main process).
"""

from __future__ import annotations

import random
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import (
    INDEXER_BIN,
    diff_dumps,
    dump_index,
    files_written,
    fresh_database,
    kill_index,
    query,
    regular_files,
    reset_database,
    run_outcomes,
    start_index,
    table_names,
)

from indexer.records import ITEM, META

_INDEX_PY = """
import sys
from indexer.run import index_paths
roots = sys.argv[3:]
report = index_paths(roots, sys.argv[1], workers=2, batch_files=int(sys.argv[2]))
print(report.outcome)
"""


@dataclass(frozen=True)
class Reference:
    kind: str
    server: str | None
    dump: dict[str, list[tuple[object, ...]]]
    files: int
    seconds: float  # how long the clean run took


@pytest.fixture(
    scope="module",
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
    ],
)
def reference(
    request: pytest.FixtureRequest, corpus_copies: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Reference]:
    """The tree indexed by one uninterrupted `indexer index` run."""
    server = request.getfixturevalue("pg_url") if request.param == "postgresql" else None
    with fresh_database(request.param, tmp_path_factory.mktemp("crash-ref"), server) as url:
        started = time.monotonic()
        proc = subprocess.run(
            [str(INDEXER_BIN), "index", str(corpus_copies), "--db", url, "-w", "2", "-q"],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        seconds = time.monotonic() - started
        assert proc.returncode == 0, proc.stderr
        yield Reference(
            request.param, server, dump_index(url), len(regular_files(corpus_copies)), seconds
        )


def _start(url: str, tree: Path, batch_files: int | None) -> subprocess.Popen[str]:
    if batch_files is None:
        return start_index(url, tree)
    return start_index(
        url, tree, [sys.executable, "-c", _INDEX_PY, url, str(batch_files), str(tree)]
    )


def _wait(proc: subprocess.Popen[str], condition: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while proc.poll() is None and not condition() and time.monotonic() < deadline:
        time.sleep(0.03)


def _assert_consistent(url: str, note: str) -> None:
    """What a killed run left: every file row that says it was read has all of its rows."""
    if "files" not in table_names(url):
        return  # killed before the schema was there
    rows = query(
        url,
        f"""
        SELECT f.path, f.status, f.element_count, i.element_count,
               (SELECT COUNT(*) FROM elements e WHERE e.file_id = f.id AND (e.flags & {META | ITEM}) = 0)
        FROM files f LEFT JOIN instances i ON i.file_id = f.id WHERE f.status IN ('indexed', 'partial')""",
    )
    bad = [r for r in rows if not (r[2] == r[3] == r[4])]
    assert bad == [], f"{note}: files half written: {bad[:5]}"
    orphans = query(
        url,
        "SELECT COUNT(*) FROM elements e LEFT JOIN files f ON f.id = e.file_id WHERE f.id IS NULL",
    )
    assert orphans == [(0,)], note


def _rerun(url: str, tree: Path, note: str) -> None:
    proc = subprocess.run(
        [str(INDEXER_BIN), "index", str(tree), "--db", url, "-w", "2", "-q"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, f"{note}: re-run failed: {proc.stderr}"


@dataclass(frozen=True)
class Trial:
    name: str
    batch_files: int | None  # None: the `indexer` command with its own batching
    kills: int  # kills before the final run


TRIALS = [
    # `indexer index` killed at a random moment of its run: imports, schema creation, crawl, any batch.
    Trial("any-moment", None, 1),
    # Small batches (many commit points), killed a random instant after some commit; the
    # completing run killed again right after its first commit; then a run to the end.
    Trial("twice", 20, 2),
]


@pytest.mark.slow
@pytest.mark.parametrize("trial", TRIALS, ids=[t.name for t in TRIALS])
def test_sigkill_then_rerun_equals_clean_run(
    reference: Reference, corpus_copies: Path, tmp_path: Path, trial: Trial
) -> None:
    rng = random.Random()
    seed = rng.randrange(2**32)
    rng.seed(seed)
    note = f"trial {trial.name} seed {seed}"
    with fresh_database(reference.kind, tmp_path, reference.server) as url:
        killed = attempt = 0
        while killed < trial.kills:
            # A run that got to its end before its kill is tried again, sooner.
            assert attempt < 6, f"{note}: could not kill the run before it ended"
            scale = 0.5**attempt
            attempt += 1
            proc = _start(url, corpus_copies, trial.batch_files)
            if trial.name == "any-moment":
                delay = rng.uniform(0.0, reference.seconds) * scale
                note += f" delay {delay:.3f}s"
                time.sleep(delay)
            else:
                before = files_written(url)
                delay = rng.uniform(0.0, 0.5) * scale if not killed else 0.0
                note += f" {delay:.3f}s after the first commit past {before} files"
                _wait(proc, lambda before=before: files_written(url) > before)  # type: ignore[misc]
                time.sleep(delay)
            ended, stderr = kill_index(proc)
            assert ended in (None, 0), f"{note}: the run failed by itself: {stderr}"
            if ended is None and run_outcomes(url)[-1:] != ["completed"]:
                killed += 1  # killed before its run was complete
                _assert_consistent(url, note)
                continue
            if killed:
                note += " (the completing run ended before its kill)"
                break  # the index is complete: nothing left to interrupt
            note += " (the run was complete before the kill: again, on an empty database)"
            reset_database(url)
        _rerun(url, corpus_copies, note)
        assert diff_dumps(reference.dump, dump_index(url)) == "", note
        outcomes = run_outcomes(url)
        assert outcomes[-1] == "completed" and set(outcomes) <= {"interrupted", "completed"}, (
            note,
            outcomes,
        )
        assert outcomes.count("interrupted") == killed or trial.name == "any-moment", (
            note,
            outcomes,
        )
