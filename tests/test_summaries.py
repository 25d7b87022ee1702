"""indexer.summaries: the worker side loads no database code; deltas are applied explicitly."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from indexer import summaries
from indexer.run import index_paths
from tests.helpers import pg_database

SUMMARY_TABLES = (
    "usage_groups",
    "tag_keys",
    "path_keys",
    "tag_usage",
    "tag_values",
    "instance_groups",
)


def _dump(url: str, queries: dict[str, str]) -> dict[str, list[tuple[Any, ...]]]:
    engine = sa.create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return {
                name: sorted(tuple(r) for r in conn.execute(sa.text(q)))
                for name, q in queries.items()
            }
    finally:
        engine.dispose()


def summary_dump(url: str) -> dict[str, list[tuple[Any, ...]]]:
    return _dump(url, {t: f"SELECT * FROM {t}" for t in SUMMARY_TABLES})


def test_counting_in_a_worker_loads_no_sqlalchemy() -> None:
    code = (
        "import sys, indexer.rows, indexer.summaries.counting, indexer.summaries.layout; "
        "print('sqlalchemy' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.postgres
def test_two_writers_applying_their_deltas_do_not_deadlock(pg_url: str, sample_dir: Path) -> None:
    """Both transactions collect a removal and an addition of overlapping files, then apply:
    the rows are locked in key order only in `apply`, so the two merely queue."""
    with pg_database(pg_url) as url:
        index_paths([sample_dir], url, workers=0)
        before = summary_dump(url)
        ids = [r[0] for r in _dump(url, {"i": "SELECT file_id FROM instances"})["i"]]
        removed, added = threading.Barrier(2, timeout=20), threading.Barrier(2, timeout=20)
        failures: list[Exception] = []
        engine = sa.create_engine(url, poolclass=NullPool)

        def recount(file_ids: list[int]) -> None:
            try:
                with engine.connect() as conn, conn.begin():
                    deltas = summaries.remove_files(conn, file_ids)
                    removed.wait()
                    summaries.add_files(conn, file_ids, deltas)
                    added.wait()
                    summaries.apply(conn, deltas)
            except (threading.BrokenBarrierError, sa.exc.DBAPIError) as err:
                failures.append(err)

        try:
            threads = [
                threading.Thread(target=recount, args=(half,)) for half in (ids[0::2], ids[1::2])
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=120)
        finally:
            engine.dispose()
        assert not failures, failures
        assert summary_dump(url) == before
