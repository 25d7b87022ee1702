"""`indexer runs` and `indexer errors`, and the one meaning of "errors" in the run summary,
`stats` and `errors`: the installed command on real files, SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from datetime import datetime
from pathlib import Path

import pytest

from tests.helpers import query, run_cli

# tests/data files and what they are (tests/data/MANIFEST.tsv)
TRUNCATED = ("broken/pydicom/MR_truncated.dcm", "broken/pydicom/rtplan_truncated.dcm")
NAMED_LIKE_DICOM = "broken/pylibjpeg-data/raw_jpeg_named_as_dicom.dcm"
GOOD = ("pydicom/MR_small_bigendian.dcm", "pydicom/rtplan.dcm", "fo-dicom/GH538-jpeg1.dcm")


@pytest.fixture
def tree(sample_dir: Path, tmp_path: Path) -> Path:
    """Three good files, two truncated ones, a JPEG named .dcm, a README and a symlink loop."""
    root = tmp_path / "archive"
    for relpath in (*GOOD, *TRUNCATED, NAMED_LIKE_DICOM):
        (root / relpath).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(sample_dir / relpath, root / relpath)
    (root / "notes.txt").write_text("not DICOM, and not named like it\n")
    os.symlink("..", root / "pydicom" / "loop")  # the crawl meets the tree again: a problem
    return root


def _cli(*args: str) -> str:
    ran = run_cli(list(args))
    assert ran.returncode == 0, ran.stderr
    return ran.stdout


def _index(tree: Path, db: str, *args: str) -> dict[str, object]:
    ran = run_cli(["index", str(tree), "--db", db, "-w", "1", "-f", "json", *args])
    assert ran.returncode == 0, ran.stderr
    summary: dict[str, object] = json.loads(ran.stdout)
    summary["stderr"] = ran.stderr
    return summary


def test_one_definition_of_errors(db_url: str, tree: Path) -> None:
    summary = _index(tree, db_url)
    # The run: 2 truncated (indexed with problems) + 1 not indexed = 3 errors; notes.txt is
    # not DICOM and no error; the symlink loop is a crawl problem, no error.
    assert (summary["indexed_with_problems"], summary["not_indexed"], summary["errors"]) == (
        2,
        1,
        3,
    )
    assert (summary["not_dicom"], summary["crawl_problems"]) == (1, 1)
    assert "indexer errors" in str(summary["stderr"]) and "SELECT" not in str(summary["stderr"])
    assert "completed: 7/7 files (100.0%)" in str(summary["stderr"])
    assert ", 3 errors," in str(summary["stderr"])  # the log's final line says the same
    stats = json.loads(_cli("stats", "--db", db_url, "-f", "json"))
    assert stats["errors"] == 3 and stats["errors_by_reason"] == {"not_dicom": 1, "truncated": 2}
    assert stats["crawl_problems"] == 1
    groups = json.loads(_cli("errors", "--db", db_url, "-f", "json"))
    assert sum(g["files"] for g in groups if g["kind"] == "file") == 3
    runs = json.loads(_cli("runs", "--db", db_url, "-f", "json"))
    assert runs[0]["errors"] == 3 and runs[0]["not_dicom"] == 1


def test_errors_grouped_by_reason(
    db_url: str, tree: Path, sample_manifest: list[dict[str, str]]
) -> None:
    _index(tree, db_url)
    groups = json.loads(_cli("errors", "--db", db_url, "-f", "json"))
    assert [(g["reason"], g["kind"], g["files"]) for g in groups] == [
        ("truncated", "file", 2),
        ("not_dicom", "file", 1),
        ("symlink_loop", "crawl", 1),
    ]
    assert groups[0]["examples"] == sorted(str(tree / p) for p in TRUNCATED)
    assert groups[1]["examples"] == [str(tree / NAMED_LIKE_DICOM)]
    assert json.loads(_cli("errors", "--db", db_url, "-f", "json", "--examples", "1"))[0][
        "examples"
    ] == [str(tree / TRUNCATED[0])]
    # Every path of one reason, as the SQL answer gives them.
    listed = _cli("errors", "--db", db_url, "--reason", "truncated", "-f", "paths")
    partial = sorted(p for (p,) in query(db_url, "SELECT path FROM files WHERE status = 'partial'"))
    assert listed.splitlines() == partial and listed.endswith("\n")
    rows = list(
        csv.DictReader(io.StringIO(_cli("errors", "--db", db_url, "-r", "truncated", "-f", "csv")))
    )
    assert [r["path"] for r in rows] == partial and {r["stage"] for r in rows} == {"walk"}
    assert all("byte" in r["message"] for r in rows)  # offsets and tags, no value
    table = _cli("errors", "--db", db_url)
    assert table.splitlines()[0].split() == ["reason", "kind", "files", "examples"]
    # No patient value in any form of the report.
    patient_ids = {r["patient_id"] for r in sample_manifest if r["relpath"] in (*GOOD, *TRUNCATED)}
    shown = table + _cli("errors", "--db", db_url, "-f", "csv") + listed
    assert not any(p in shown for p in patient_ids - {""})


def test_errors_of_an_unknown_reason(db_url: str, tree: Path) -> None:
    _index(tree, db_url)
    ran = run_cli(["errors", "--db", db_url, "--reason", "nosuch"])
    assert ran.returncode == 0 and ran.stdout == "no match\n"
    assert ran.stderr.count("\n") == 1 and "not_dicom, symlink_loop, truncated" in ran.stderr
    ran = run_cli(["errors", "--db", db_url, "--reason", "nosuch", "-f", "csv"])
    assert ran.stdout == "path,stage,message\n"  # the header, for pandas


def test_errors_of_a_clean_index(db_url: str, tree: Path) -> None:
    shutil.rmtree(tree / "broken")
    (tree / "pydicom" / "loop").unlink()
    summary = _index(tree, db_url)
    assert summary["errors"] == 0 and "indexer errors" not in str(summary["stderr"])
    assert _cli("errors", "--db", db_url) == "no errors\n"
    assert json.loads(_cli("errors", "--db", db_url, "-f", "json")) == []
    assert _cli("errors", "--db", db_url, "-f", "paths") == ""


def test_missing_files_leave_the_error_counts(db_url: str, tree: Path) -> None:
    _index(tree, db_url)
    (tree / TRUNCATED[0]).unlink()
    again = _index(tree, db_url)
    assert again["missing"] == 1
    stats = json.loads(_cli("stats", "--db", db_url, "-f", "json"))
    assert stats["errors"] == 2 and stats["errors_by_reason"]["truncated"] == 1
    listed = _cli("errors", "--db", db_url, "-r", "truncated", "-f", "paths").splitlines()
    assert listed == [str(tree / TRUNCATED[1])]


def test_runs_history_newest_first(db_url: str, tree: Path) -> None:
    first = _index(tree, db_url)
    again = _index(tree, db_url)
    assert again["unchanged"] == 7 and again["files_per_s"] is None  # no rate when none was read
    runs = json.loads(_cli("runs", "--db", db_url, "-f", "json"))
    assert [r["run"] for r in runs] == [again["run"], first["run"]]
    newest, oldest = runs
    assert {r["outcome"] for r in runs} == {"completed"} and newest["roots"] == [str(tree)]
    assert (oldest["files_seen"], oldest["files_indexed"], oldest["errors"]) == (7, 5, 3)
    # The re-run read nothing: its errors are the files it read (none); stats still has 3.
    assert (newest["files_unchanged"], newest["errors"]) == (7, 0)
    assert json.loads(_cli("stats", "--db", db_url, "-f", "json"))["errors"] == 3
    for r in runs:
        started = datetime.fromisoformat(r["started_at"])
        assert started.utcoffset() is not None  # UTC, said so
        assert datetime.fromisoformat(r["finished_at"]) >= started and r["duration_s"] >= 0
    assert len(json.loads(_cli("runs", "--db", db_url, "-f", "json", "--limit", "1"))) == 1
    assert len(json.loads(_cli("runs", "--db", db_url, "-f", "json", "--limit", "0"))) == 2
    rows = list(csv.DictReader(io.StringIO(_cli("runs", "--db", db_url, "-f", "csv"))))
    assert [int(r["run"]) for r in rows] == [again["run"], first["run"]]
    assert rows[0]["roots"] == str(tree)
    table = _cli("runs", "--db", db_url).splitlines()
    assert table[0].split()[:5] == ["run", "started_at", "finished_at", "duration_s", "outcome"]
    assert str(tree) in table[2]


def test_runs_of_an_index_without_runs(db_url: str) -> None:
    _cli("db", "upgrade", "--db", db_url)
    assert _cli("runs", "--db", db_url) == "no runs\n"
    header = _cli("runs", "--db", db_url, "-f", "csv")
    assert header.startswith("run,started_at,finished_at,duration_s,outcome,roots,")
    assert json.loads(_cli("runs", "--db", db_url, "-f", "json")) == []
