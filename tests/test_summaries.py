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
from tests.helpers import SUMMARY_TABLES, pg_database, rebuilt_summaries


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


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_summaries_equal_a_rebuild_with_missing_files(
    request: pytest.FixtureRequest, kind: str, corpus_dir: Path, tmp_path: Path
) -> None:
    """Files gone from disk leave the summaries and come back: the incremental counts equal a
    recount from the elements (which skips missing files) at every step."""
    import shutil

    archive = tmp_path / "corpus"
    shutil.copytree(corpus_dir, archive, copy_function=shutil.copy2)

    def counted(url: str) -> dict[str, list[tuple[Any, ...]]]:
        dump = summary_dump(url)
        return {t: dump[t] for t in ("tag_usage", "tag_values", "instance_groups")}

    def check(url: str) -> None:
        index_paths([archive], url, workers=2)
        assert counted(url) == rebuilt_summaries(
            url, ("tag_usage", "tag_values", "instance_groups")
        )

    def run(url: str) -> None:
        check(url)
        full = counted(url)
        for folder in ("pydicom", "fo-dicom", "dcm_qa_nih"):
            shutil.move(archive / folder, tmp_path / folder)
        check(url)  # missing
        assert counted(url) != full
        for folder in ("pydicom", "fo-dicom", "dcm_qa_nih"):
            shutil.move(tmp_path / folder, archive / folder)
        check(url)  # back, unchanged
        assert counted(url) == full

    if kind == "sqlite":
        run(f"sqlite:///{tmp_path}/index.db")
    else:
        with pg_database(request.getfixturevalue("pg_url")) as url:
            run(url)
