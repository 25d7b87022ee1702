"""Progress of `indexer index`: the crawl counted ahead of the readers (a total, %, ETA), the bar
on a real terminal (a pty), and log lines where stderr is a pipe (cron, Slurm, systemd); on
SQLite and PostgreSQL, through the installed command."""

from __future__ import annotations

import itertools
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from indexer.cli import _progress_line
from indexer.crawl_ahead import CrawlAhead
from indexer.run import IndexReport, index_paths
from tests.helpers import on_terminal, run_cli

GOOD = ("pydicom/MR_small_bigendian.dcm", "pydicom/rtplan.dcm", "fo-dicom/GH538-jpeg1.dcm")
LOG_LINE = re.compile(
    r"^indexing: (\d+)/(\d+)(\+?) files \((?:[\d.]+%|counting)\), [\d.]+ files/s, "
    r"(\d+) errors, elapsed \d+:\d\d:\d\d(, eta \d+:\d\d:\d\d)?$"
)


@pytest.fixture
def many_files(sample_dir: Path, tmp_path: Path) -> Path:
    """300 copies of three real files (copies of one SOP instance are files all the same)."""
    tree = tmp_path / "archive"
    for i in range(100):
        folder = tree / f"SE{i:03d}"
        folder.mkdir(parents=True)
        for name in GOOD:
            shutil.copy(sample_dir / name, folder / Path(name).name)
    return tree


def test_the_crawl_runs_ahead_and_the_total_becomes_exact(db_url: str, many_files: Path) -> None:
    """Small batches: the first reports already know more files than are done."""
    reports: list[IndexReport] = []
    done = index_paths(
        [many_files],
        db_url,
        workers=1,
        batch_files=16,
        progress=lambda r: reports.append(IndexReport(**_fields(r))),
    )
    assert done.outcome == "completed" and done.files_seen == 300
    found = [r.files_found for r in reports]
    assert found == sorted(found), "the total never shrinks"
    assert any(r.crawl_complete and r.files_done < r.files_found == 300 for r in reports), [
        (r.files_done, r.files_found, r.crawl_complete) for r in reports
    ]
    assert reports[-1].crawl_complete and reports[-1].files_done == reports[-1].files_found == 300
    assert all(r.files_done <= r.files_found for r in reports)


def _fields(report: IndexReport) -> dict[str, object]:
    return {name: getattr(report, name) for name in IndexReport.__slots__}  # type: ignore[attr-defined]


def test_log_lines_when_stderr_is_a_pipe(
    db_url: str, many_files: Path, sample_dir: Path, sample_manifest: list[dict[str, str]]
) -> None:
    """No terminal: a line at each report (--log-every 0.01) and a final line; counts only."""
    broken = many_files / "broken"
    broken.mkdir()
    shutil.copy(sample_dir / "broken" / "pydicom" / "MR_truncated.dcm", broken / "cut.dcm")
    ran = run_cli(["index", str(many_files), "--db", db_url, "-w", "1", "--log-every", "0.01"])
    assert ran.returncode == 0, ran.stderr
    lines = ran.stderr.splitlines()
    progress = [LOG_LINE.match(line) for line in lines if line.startswith("indexing: ")]
    assert progress and all(progress), lines
    final = [line for line in lines if line.startswith("completed: ")]
    assert len(final) == 1, lines
    assert re.match(r"^completed: 301/301 files \(100\.0%\), [\d.]+ files/s, 1 errors, ", final[0])
    patient_ids = {r["patient_id"] for r in sample_manifest if r["relpath"] in GOOD} - {""}
    assert patient_ids and not any(p in ran.stderr for p in patient_ids)
    assert "SE0" not in ran.stderr and "cut.dcm" not in ran.stderr  # no path either
    # The run's own summary says the same number of errors, under the same name.
    assert re.search(r"^errors +1$", ran.stdout, re.M), ran.stdout


def test_no_log_lines_with_log_every_0_or_quiet(db_url: str, many_files: Path) -> None:
    for args in (["--log-every", "0"], ["-q", "--log-every", "0.01"]):
        ran = run_cli(["index", str(many_files), "--db", db_url, "-w", "1", *args])
        assert ran.returncode == 0 and ran.stderr == "", (args, ran.stderr)


def test_progress_bar_on_a_terminal_shows_total_and_errors(db_url: str, many_files: Path) -> None:
    """A real pty on stderr, 120 columns: tqdm's bar with N/total, %, and errors=."""
    code, raw, _ = on_terminal(
        ["index", str(many_files), "--db", db_url, "-w", "1"],
        columns=120,
        stream="stderr",
        timeout=120,
    )
    assert code == 0
    shown = raw.replace("\r", "\n")
    assert re.search(r"indexing: 100%\|.*\| 300/300 \[.*errors=0\]", shown), shown[-800:]
    assert "indexing: " in shown and not LOG_LINE.search(shown)


def test_the_log_line_while_the_crawl_is_still_counting() -> None:
    """Before the crawl ends the total is a lower bound: `N+`, no % and no ETA."""
    counting = IndexReport(indexed=1200, unchanged=300, files_found=9000, elapsed=4.0)
    line = _progress_line(counting)
    assert line == "1500/9000+ files (counting), 375.0 files/s, 0 errors, elapsed 0:00:04"
    assert LOG_LINE.match(f"indexing: {line}")
    done = IndexReport(
        indexed=1000, partial=2, failed=1, files_found=4000, crawl_complete=True, elapsed=3725.0
    )
    assert _progress_line(done) == (
        "1003/4000 files (25.1%), 0.3 files/s, 3 errors, elapsed 1:02:05, eta 3:05:30"
    )


# -- the crawl-ahead thread alone ---------------------------------------------------------------


def _crawl_of(items: list[str], skips: dict[int, str]) -> Callable[..., Iterator[str]]:
    def crawl(on_skip: Callable[[str], None]) -> Iterator[str]:
        for i, item in enumerate(items):
            if i in skips:
                on_skip(skips[i])
            yield item

    return crawl


def test_crawl_ahead_keeps_the_order_of_files_and_skips() -> None:
    ahead: CrawlAhead[str, str] = CrawlAhead(_crawl_of(["a", "b", "c"], {1: "skip"}), limit=2)
    try:
        assert list(ahead) == ["a", "skip", "b", "c"]
        assert (ahead.found, ahead.complete) == (3, True)
    finally:
        ahead.close()


def test_crawl_ahead_hands_the_crawls_error_to_the_consumer() -> None:
    def crawl(on_skip: Callable[[str], None]) -> Iterator[str]:
        yield "a"
        raise PermissionError("the crawler itself failed")

    ahead: CrawlAhead[str, str] = CrawlAhead(crawl)
    with pytest.raises(PermissionError):
        list(ahead)
    ahead.close()
    assert not ahead.complete


def test_crawl_ahead_is_bounded_and_close_ends_its_thread() -> None:
    def endless(on_skip: Callable[[str], None]) -> Iterator[str]:
        yield from (str(i) for i in itertools.count())

    before = threading.active_count()
    ahead: CrawlAhead[str, str] = CrawlAhead(endless, limit=100)
    time.sleep(0.3)
    assert ahead.found <= 101 and not ahead.complete  # the bound, plus the item being put
    ahead.close()
    assert threading.active_count() == before


def test_crawl_ahead_calls_on_idle_while_the_crawl_is_slow() -> None:
    idle: list[float] = []

    def slow(on_skip: Callable[[str], None]) -> Iterator[str]:
        time.sleep(1.2)
        yield "late"

    ahead: CrawlAhead[str, str] = CrawlAhead(slow, on_idle=lambda: idle.append(time.monotonic()))
    assert list(ahead) == ["late"]
    ahead.close()
    assert len(idle) >= 2  # the run's stop check, every half second
