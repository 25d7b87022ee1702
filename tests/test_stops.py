"""Every way a run ends is clean: SIGINT, SIGTERM, SIGKILL of the main process, and (on
PostgreSQL) the run's connections terminated, each sent for real to a real `indexer index`
mid-run, on SQLite and PostgreSQL.

Each stop is checked for its exit code, the time to exit, processes of the run's group left
(scanned in /proc), scratch bytes left in the run's TMPDIR, the run row's outcome and counts,
and the stderr line; a re-run then completes to an index equal to a clean run's. The trial
itself is benchmarks/stop_trials.py's (that script repeats it 20 times per case for the proof).
"""

from __future__ import annotations

import os
import random
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import (
    DB_KINDS,
    diff_dumps,
    dump_index,
    fresh_database,
    query,
    reset_database,
    server_for,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
from stop_trials import INDEXER, Result, run_trial  # noqa: E402

# About 5 s to index on a quiet machine: the first commit (500 files) lands in the first third,
# so a stop sent then (plus up to 0.5 s) finds the run mid-way, not ending.
ARCHIVE_FILES = 2000
STOP_BOUND_S = 10.0  # "within a few seconds", with room for a loaded machine
TRIES = 3  # a run that ended before its stop is tried again
# The signal each case sends: a stop that lands after the run let go of its handlers ends the
# process by that signal's default action.
SIGNAL_OF = {"sigint-group": signal.SIGINT, "double-sigint": signal.SIGINT}
SIGNAL_OF |= {"sigterm": signal.SIGTERM, "sigkill-main": signal.SIGKILL}


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory, corpus_dir: Path) -> Path:
    out = tmp_path_factory.mktemp("stops") / "archive"
    subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmarks/make_archive.py"), str(out)]
        + ["--files", str(ARCHIVE_FILES), "--corpus", str(corpus_dir)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return out


def _index(url: str, archive: Path, tmpdir: Path) -> subprocess.CompletedProcess[str]:
    tmpdir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, TMPDIR=str(tmpdir), PYTHONPATH=str(REPO_ROOT))
    env.pop("INDEXER_DB", None)
    return subprocess.run(
        [*INDEXER, "index", str(archive), "--db", url, "-w", "2", "-q"],
        env=env,
        cwd=tmpdir,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="module", params=DB_KINDS)
def clean(
    request: pytest.FixtureRequest, archive: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str | None, dict[str, list[tuple[object, ...]]]]]:
    """(kind, server, dump of an uninterrupted run of the archive)."""
    kind, server = request.param, server_for(request, request.param)
    folder = tmp_path_factory.mktemp("stops-clean")
    with fresh_database(kind, folder, server) as url:
        ran = _index(url, archive, folder / "tmp")
        assert ran.returncode == 0, ran.stderr
        yield kind, server, dump_index(url)


def _trial(
    case: str, url: str, archive: Path, tmp_path: Path, server: str | None, **kwargs: object
) -> Result:
    for attempt in range(TRIES):
        result = run_trial(
            case,
            "",
            url,
            archive,
            tmp_path / f"tmp{attempt}",
            server=server,
            code=REPO_ROOT,
            rng=random.Random(attempt),
            **kwargs,  # type: ignore[arg-type]
        )
        # A stop that lands as the run completes has nothing left to stop (the run row says
        # completed): again, like a run that ended first. Its exit code is 0, the stop's, or the
        # signal's own (it came after the run had let go of its handlers, in interpreter exit).
        if not result.ended_before_stop and result.outcome != "completed":
            return result
        late = [-SIGNAL_OF[case]] if case in SIGNAL_OF else []
        assert result.exit_code in [0, 128 + signal.SIGINT, 128 + signal.SIGTERM, *late], result
        reset_database(url)  # it completed: again, on an empty index
    pytest.fail(f"{case}: every run ended before its stop")


# The archive builder gives the series of one study different source files, whose study-level
# attributes (Study ID, ...) differ: which file's values the study row keeps depends on the
# order files arrive in, which a stop and re-run change. Those rows are compared by count.
_ORDER_DEPENDENT = ("patients", "studies", "series")


def _same_as_clean(reference: dict[str, list[tuple[object, ...]]], url: str) -> None:
    actual = dump_index(url)
    for name in _ORDER_DEPENDENT:
        assert len(actual.pop(name, [])) == len(reference.get(name, [])), name
    assert (
        diff_dumps({k: v for k, v in reference.items() if k not in _ORDER_DEPENDENT}, actual) == ""
    )


def _counts_kept(url: str) -> None:
    """The stopped run's row counts what it committed."""
    (indexed, elements) = query(
        url, "SELECT files_indexed, elements_written FROM runs ORDER BY id LIMIT 1"
    )[0]
    (in_files,) = query(url, "SELECT COUNT(*) FROM files WHERE status IN ('indexed', 'partial')")[0]
    assert 0 < indexed <= in_files, (indexed, in_files)
    assert elements > 0


STOPS = [("sigint-group", 130), ("double-sigint", 130), ("sigterm", 143)]


@pytest.mark.slow
@pytest.mark.parametrize("case, code", STOPS, ids=[c for c, _ in STOPS])
def test_signal_stops_the_run_cleanly(
    clean: tuple[str, str | None, dict[str, list[tuple[object, ...]]]],
    archive: Path,
    tmp_path: Path,
    case: str,
    code: int,
) -> None:
    kind, server, reference = clean
    with fresh_database(kind, tmp_path, server) as url:
        r = _trial(case, url, archive, tmp_path, server, next_run=False)
        assert r.exit_code == code, r
        assert r.seconds < STOP_BOUND_S, r
        assert r.left == 0, r
        assert r.scratch_bytes == 0, r
        assert r.outcome == "interrupted", r
        assert r.stderr.count("\n") == 0 and r.stderr.startswith("interrupted"), r
        _counts_kept(url)
        if case == "sigterm":  # the index completes from what a stopped run kept
            ran = _index(url, archive, tmp_path / "rerun")
            assert ran.returncode == 0, ran.stderr
            _same_as_clean(reference, url)


@pytest.mark.slow
def test_sigkill_of_main_process_workers_exit_and_next_run_cleans(
    clean: tuple[str, str | None, dict[str, list[tuple[object, ...]]]],
    archive: Path,
    tmp_path: Path,
) -> None:
    kind, server, _ = clean
    with fresh_database(kind, tmp_path, server) as url:
        for attempt in range(TRIES):
            r = _trial("sigkill-main", url, archive, tmp_path / f"try{attempt}", server)
            # SQLite: the kill must leave scratch for the next run to remove; a kill that
            # lands while no scratch file holds rows proves nothing, so it is tried again.
            if kind != "sqlite" or r.scratch_bytes > 0:
                break
            reset_database(url)
        assert r.left == 0, f"workers outlived their parent by {5} s: {r}"
        if kind == "sqlite":
            assert r.scratch_bytes > 0, r  # nothing can run in a SIGKILLed process
        assert r.after_next_run == 0, r  # ... but the next run removes it
        assert query(url, "SELECT outcome FROM runs ORDER BY id")[0] == ("interrupted",)
        _counts_kept(url)


@pytest.mark.slow
@pytest.mark.postgres
def test_postgresql_connections_terminated_twice(
    clean: tuple[str, str | None, dict[str, list[tuple[object, ...]]]],
    archive: Path,
    tmp_path: Path,
) -> None:
    kind, server, reference = clean
    if kind != "postgresql":
        pytest.skip("PostgreSQL only")
    with fresh_database(kind, tmp_path, server) as url:
        r = _trial("pg-terminate", url, archive, tmp_path, server, next_run=False)
        assert r.exit_code == 1, r
        assert r.seconds < STOP_BOUND_S + 1, r  # the second terminate comes 1 s after the first
        assert r.left == 0, r
        assert r.stderr.startswith("error: ") and "\n" not in r.stderr, r
        assert "Traceback" not in r.stderr
        ran = _index(url, archive, tmp_path / "rerun")
        assert ran.returncode == 0, ran.stderr
        _same_as_clean(reference, url)


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_scratch_of_dead_runs_removed_live_kept(tmp_path: Path, sample_dir: Path) -> None:
    """Scratch folders are 0700 in TMPDIR; the next run removes those whose owner is dead."""
    import socket

    host = socket.gethostname()
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    dead = tmpdir / f"indexer-scratch-{_dead_pid()}@{host}.abc"
    live = tmpdir / f"indexer-scratch-{os.getpid()}@{host}.def"
    other_host = tmpdir / f"indexer-scratch-{_dead_pid()}@not-{host}.ghi"
    legacy_dead = tmpdir / "indexer-scratch-x1y2z3"  # before the owner was in the name
    for folder in (dead, live, other_host, legacy_dead):
        folder.mkdir(mode=0o700)
    (dead / "scratch-1-000001.db").write_bytes(b"PATIENT^NAME")
    (legacy_dead / f"scratch-{_dead_pid()}-000001.db").write_bytes(b"PATIENT^NAME")
    (live / f"scratch-{os.getpid()}-000001.db").write_bytes(b"x")

    from indexer.backends import scratch

    os.environ["TMPDIR"] = str(tmpdir)
    try:
        import tempfile

        tempfile.tempdir = None  # gettempdir() reads TMPDIR again
        made = Path(scratch.new_folder())
    finally:
        del os.environ["TMPDIR"]
        tempfile.tempdir = None
    assert made.parent == tmpdir and made.name.startswith(f"indexer-scratch-{os.getpid()}@")
    assert stat.S_IMODE(made.stat().st_mode) == 0o700
    left = {p.name for p in tmpdir.iterdir()}
    assert left == {live.name, other_host.name, made.name}, left

    from indexer.backends.sqlite_rows import ScratchWriter

    writer = ScratchWriter(str(made))
    writer.add([1, 1, "PN", 1, 4, "ZQ^X", None, 0], 1)
    writer.commit()
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in made.iterdir()}
    writer.close()
    assert modes and set(modes.values()) == {0o600}, modes  # the -wal file as well
