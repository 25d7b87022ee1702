"""Many writers on PostgreSQL (`indexer index --writers N`): the workers write their own chunks.

N writers must give the index one writer gives (every table, the summary tables included, and
no delta left unmerged), on the real server, through the command; a SIGKILL mid-run and a
re-run must give it too. SQLite, which allows one writer, refuses the option in one line.
"""

from __future__ import annotations

import random
import subprocess
import time
from pathlib import Path

import pytest
from helpers import (
    DICTIONARY_TABLES,
    INDEXER_BIN,
    SUMMARY_TABLES,
    diff_dumps,
    dump_index,
    files_written,
    kill_index,
    pg_database,
    query,
    rebuilt_summaries,
    run_cli,
    run_outcomes,
    single_line,
    start_index,
)

DELTA_TABLES = ("tag_usage_deltas", "tag_values_deltas", "instance_groups_deltas")
KILL_TRIALS = 3


def _index_cli(url: str, tree: Path, writers: int) -> subprocess.CompletedProcess[str]:
    return run_cli(["index", str(tree), "--db", url, "--writers", str(writers), "-q"])


def _pending_deltas(url: str) -> int:
    return sum(int(query(url, f"SELECT COUNT(*) FROM {t}")[0][0]) for t in DELTA_TABLES)


def _exact_summaries(url: str) -> None:
    """The summary tables hold what a recount from the element rows gives."""
    rebuilt = rebuilt_summaries(url, SUMMARY_TABLES)
    for table in SUMMARY_TABLES:
        assert sorted(query(url, f"SELECT * FROM {table}")) == rebuilt[table], table


@pytest.mark.parametrize("option", [["--writers", "2"], ["--scheduler", "tcp://127.0.0.1:1"]])
def test_writers_refused_on_sqlite(tmp_path: Path, sample_dir: Path, option: list[str]) -> None:
    ran = run_cli(["index", str(sample_dir), "--db", str(tmp_path / "i.db"), *option])
    assert ran.returncode == 1
    assert single_line(ran.stderr) and "allows one writer" in ran.stderr, ran.stderr
    assert option[0] in ran.stderr and "Traceback" not in ran.stderr
    assert not (tmp_path / "i.db").exists()  # refused before anything is written


@pytest.mark.postgres
@pytest.mark.parametrize("writers", [2, 4])
def test_many_writers_give_the_single_writer_index(
    pg_url: str,
    corpus_copies: Path,
    corpus_copies_dump: dict[str, list[tuple[object, ...]]],
    writers: int,
) -> None:
    with pg_database(pg_url) as url:
        ran = _index_cli(url, corpus_copies, writers)
        assert ran.returncode == 0, ran.stderr
        assert _pending_deltas(url) == 0  # merged before the run completed
        assert diff_dumps(corpus_copies_dump, dump_index(url)) == ""
        _exact_summaries(url)
        # Unchanged: nothing read or written again.
        again = run_cli(
            ["index", str(corpus_copies), "--db", url, "--writers", str(writers), "-f", "json"]
        )
        assert again.returncode == 0, again.stderr
        assert '"unchanged": ' + str(len(corpus_copies_dump["files"])) in again.stdout, again.stdout
        assert diff_dumps(corpus_copies_dump, dump_index(url)) == ""


@pytest.mark.postgres
def test_writers_rewrite_changed_files_exactly(
    pg_url: str, corpus_copies: Path, tmp_path: Path
) -> None:
    """Re-indexing files (their old rows and counts out, new ones in) by several writers."""
    copy = tmp_path / "tree"
    subprocess.run(["cp", "-a", str(corpus_copies), str(copy)], check=True)
    with pg_database(pg_url) as url:
        assert _index_cli(url, copy, 3).returncode == 0
        for path in sorted(p for p in copy.rglob("*") if p.is_file())[::3]:
            path.touch()  # a new mtime: read and written again
        for path in sorted((copy / "copy1").rglob("*"))[:20]:
            if path.is_file():
                path.unlink()
        ran = run_cli(["index", str(copy), "--db", url, "--writers", "3", "--prune", "-q"])
        assert ran.returncode == 0, ran.stderr
        assert _pending_deltas(url) == 0
        _exact_summaries(url)
        with pg_database(pg_url) as single:
            assert run_cli(["index", str(copy), "--db", single, "-w", "1", "-q"]).returncode == 0
            clean = dump_index(single)
        rewritten = dump_index(url)
        for name in DICTIONARY_TABLES:  # a prune leaves their entries (never counted down)
            assert set(clean.pop(name)) <= set(rewritten.pop(name)), name
        assert diff_dumps(clean, rewritten) == ""


@pytest.mark.postgres
def test_sigkill_mid_run_then_rerun_gives_the_same_index(
    pg_url: str, corpus_copies: Path, corpus_copies_dump: dict[str, list[tuple[object, ...]]]
) -> None:
    command = [str(INDEXER_BIN), "index", str(corpus_copies), "--writers", "3", "-q", "--db"]
    with pg_database(pg_url) as url:
        started = time.monotonic()
        assert subprocess.run([*command, url], check=False).returncode == 0
        clean_s = time.monotonic() - started
    rng = random.Random(14)
    killed_mid_run = 0
    for trial in range(KILL_TRIALS):
        with pg_database(pg_url) as url:
            proc = start_index(url, corpus_copies, [*command, url])
            # Wait for the first chunks to commit, then kill somewhere in the rest of the run.
            deadline = time.monotonic() + 60
            while files_written(url) == 0 and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, clean_s / 3))
            ended, stderr = kill_index(proc)
            assert "Traceback" not in stderr, (trial, stderr)
            # A kill that landed as the process exited finds the run completed.
            if ended is None and run_outcomes(url)[-1] == "running":
                killed_mid_run += 1
            ran = _index_cli(url, corpus_copies, 3)
            assert ran.returncode == 0, (trial, ran.stderr)
            assert _pending_deltas(url) == 0
            assert diff_dumps(corpus_copies_dump, dump_index(url)) == "", trial
            _exact_summaries(url)
    assert killed_mid_run, "every run ended before its kill"
