"""Two `indexer index` runs at once over overlapping folders, into the same database.

Run 1 indexes A and B, run 2 indexes B and C, started together. Then the "crossing":
run 1 (the older run) spends long on a large A and reaches B while run 2, started just
after it, has finished B and is still busy with a large C; small batches and a pause
after each (a slow disk) make that happen every time.
Both must succeed, and the index must then hold exactly what one clean run over A, B
and C gives: no duplicate rows, no file lost or marked missing.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from helpers import INDEXER_BIN, diff_dumps, dump_index, query

from indexer.run import index_paths

from .support import copy_good, kill_group

pytestmark = [pytest.mark.corpus]


@pytest.fixture(scope="module")
def abc_tree(tmp_path_factory: pytest.TempPathFactory, corpus_dir: Path) -> Path:
    root = tmp_path_factory.mktemp("concurrent")
    for part in "ABC":
        copy_good(corpus_dir, root / part)
    for i in range(4):  # the large folders of the crossing case
        copy_good(corpus_dir, root / "A_large" / str(i))
        copy_good(corpus_dir, root / "C_large" / str(i))
    return root


SCENARIOS = {  # name: (folders of run 1, folders of run 2, seconds between the starts)
    "together": (("A", "B"), ("B", "C"), 0.0),
}

SLOW_PY = """
import sys, time
from indexer.run import index_paths
# Small batches, and a pause after each (a slow disk): the two runs' commits interleave.
report = index_paths(sys.argv[2:], sys.argv[1], workers=1, batch_files=8, progress=lambda r: time.sleep(0.25))
print(report.outcome)
"""


@pytest.mark.slow
def test_older_run_commits_shared_files_while_newer_run_is_busy(
    kind: str, new_db: object, abc_tree: Path
) -> None:
    """Run 1 (older) reaches B late; run 2 (newer) wrote B early and is still busy with C.

    When run 2 checks for missing files at its end, B's files were last seen by run 1, an
    older run: they must not be taken for gone.
    """
    import sys

    with new_db() as url, new_db() as clean:  # type: ignore[operator]

        def start(*parts: str) -> subprocess.Popen[str]:
            return subprocess.Popen(
                [sys.executable, "-c", SLOW_PY, url, *(str(abc_tree / p) for p in parts)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,
            )

        first = start("A_large", "B")
        time.sleep(0.5)  # run 1 has its run id (the older one) before run 2 starts
        second = start("B", "C_large")
        results = []
        for proc in (first, second):
            try:
                out, err = proc.communicate(timeout=180)
            except subprocess.TimeoutExpired:
                kill_group(first)
                kill_group(second)
                pytest.fail("HANG: a concurrent run did not end within 180 s")
            results.append((proc.returncode, out.strip(), err[-2000:]))
        assert [r[:2] for r in results] == [(0, "completed"), (0, "completed")], results
        folders = ["A_large", "B", "C_large"]
        total = sum(1 for f in folders for p in (abc_tree / f).rglob("*") if p.is_file())
        statuses = query(url, "SELECT status, COUNT(*) FROM files GROUP BY status")
        assert dict(statuses) == {"indexed": total}, statuses
        index_paths([abc_tree / f for f in folders], clean, workers=2)
        assert diff_dumps(dump_index(clean), dump_index(url)) == ""


@pytest.mark.slow
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_two_runs_over_overlapping_folders(
    kind: str, new_db: object, abc_tree: Path, scenario: str
) -> None:
    one, two, stagger = SCENARIOS[scenario]
    with new_db() as url, new_db() as clean:  # type: ignore[operator]

        def start(*parts: str) -> subprocess.Popen[str]:
            return subprocess.Popen(
                [
                    str(INDEXER_BIN),
                    "index",
                    *(str(abc_tree / p) for p in parts),
                    "--db",
                    url,
                    "-w",
                    "1",
                    "-q",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,
            )

        first = start(*one)
        time.sleep(stagger)
        second = start(*two)
        results = []
        for proc in (first, second):
            try:
                _out, err = proc.communicate(timeout=180)
            except subprocess.TimeoutExpired:
                kill_group(first)
                kill_group(second)
                pytest.fail("HANG: a concurrent run did not end within 180 s")
            results.append((proc.returncode, err))
        assert [r[0] for r in results] == [0, 0], results

        folders = sorted(set(one) | set(two))
        total = sum(1 for f in folders for p in (abc_tree / f).rglob("*") if p.is_file())
        statuses = query(url, "SELECT status, COUNT(*) FROM files GROUP BY status")
        assert dict(statuses) == {"indexed": total}, statuses
        assert query(url, "SELECT COUNT(*), COUNT(DISTINCT path) FROM files") == [(total, total)]
        index_paths([abc_tree / f for f in folders], clean, workers=2)
        assert diff_dumps(dump_index(clean), dump_index(url)) == ""
