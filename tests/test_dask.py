"""A Dask cluster as the executor (`indexer index --scheduler tcp://HOST:8786`), for real.

The test starts `dask scheduler` and two `dask worker` processes on 127.0.0.1 and indexes
into the real PostgreSQL server: the index equals a local run's (every table, the summaries
included). A worker killed with SIGKILL mid-run: the run completes (its chunk re-run on the
other worker) or stops with one clear line, and a re-run completes; nothing is duplicated.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import (
    INDEXER_BIN,
    diff_dumps,
    dump_index,
    files_written,
    pg_database,
    query,
    run_cli,
    single_line,
)

pytest.importorskip("distributed")

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

REPO_ROOT = Path(__file__).resolve().parent.parent
DASK_BIN = Path(sys.executable).with_name("dask")
START_S = 60.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(REPO_ROOT))  # the workers import this indexer


def _start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(
            [str(DASK_BIN), *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=_env(),
            start_new_session=True,
        )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


class Cluster:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.address = f"tcp://127.0.0.1:{_free_port()}"
        port = self.address.rsplit(":", 1)[1]
        self.scheduler = _start(
            ["scheduler", "--host", "127.0.0.1", "--port", port, "--no-dashboard"],
            folder / "scheduler.log",
        )
        self.workers = [self.add_worker(n) for n in range(2)]
        self.wait_for(2)

    def add_worker(self, number: int) -> subprocess.Popen[bytes]:
        return _start(
            ["worker", self.address, "--nthreads", "1", "--no-dashboard", "--no-nanny"]
            + ["--host", "127.0.0.1", "--name", f"w{number}-{time.monotonic_ns()}"],
            self.folder / f"worker{number}.log",
        )

    def wait_for(self, workers: int) -> None:
        from distributed import Client

        deadline = time.monotonic() + START_S
        with Client(self.address, timeout=START_S, set_as_default=False) as client:
            while len(client.scheduler_info()["workers"]) < workers:
                assert time.monotonic() < deadline, "the Dask workers did not register"
                time.sleep(0.2)

    def close(self) -> None:
        for proc in [*self.workers, self.scheduler]:
            _stop(proc)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    started = Cluster(tmp_path_factory.mktemp("dask"))
    try:
        yield started
    finally:
        started.close()


def _on_dask(url: str, tree: Path, cluster: Cluster) -> list[str]:
    return ["index", str(tree), "--db", url, "--scheduler", cluster.address, "-q"]


def test_dask_run_equals_a_local_run(
    pg_url: str,
    corpus_copies: Path,
    cluster: Cluster,
    corpus_copies_dump: dict[str, list[tuple[object, ...]]],
) -> None:
    with pg_database(pg_url) as url:
        ran = run_cli(_on_dask(url, corpus_copies, cluster), timeout=300)
        assert ran.returncode == 0, ran.stderr
        assert diff_dumps(corpus_copies_dump, dump_index(url)) == ""
        assert query(url, "SELECT COUNT(*) FROM tag_usage_deltas") == [(0,)]
        # The workers let go of their sessions once the run ended.
        sessions = query(
            url,
            "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()",
        )
        assert sessions == [(0,)]


def test_a_worker_killed_mid_run_then_a_rerun_completes(
    pg_url: str,
    corpus_copies: Path,
    cluster: Cluster,
    corpus_copies_dump: dict[str, list[tuple[object, ...]]],
) -> None:
    with pg_database(pg_url) as url:
        proc = subprocess.Popen(
            [str(INDEXER_BIN), *_on_dask(url, corpus_copies, cluster)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 120
        while files_written(url) == 0 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        victim = cluster.workers[0]
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait(timeout=30)
        _, stderr = proc.communicate(timeout=300)
        # Completed (the lost chunk re-run on the other worker), or one clear line.
        assert proc.returncode in (0, 1), stderr
        assert "Traceback" not in stderr
        if proc.returncode == 1:
            assert single_line(stderr) and "run the same command again" in stderr, stderr
        cluster.workers[0] = cluster.add_worker(2)
        cluster.wait_for(2)
        again = run_cli(_on_dask(url, corpus_copies, cluster), timeout=300)
        assert again.returncode == 0, again.stderr
        assert diff_dumps(corpus_copies_dump, dump_index(url)) == ""
