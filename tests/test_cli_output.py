"""Output that pipes, and the CLI as a new user meets it: the installed command, real files,
a real SQLite file and a real PostgreSQL server."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from tests.helpers import on_terminal, query, run_cli

LONG = "a-folder-name-long-enough-that-every-path-under-it-passes-sixty-characters"


@pytest.fixture
def long_tree(sample_dir: Path, tmp_path: Path) -> Path:
    """Two real DICOM files under a path far longer than 60 characters."""
    tree = tmp_path / LONG / "SE001"
    tree.mkdir(parents=True)
    for name in ("MR_small_bigendian.dcm", "rtplan.dcm"):
        shutil.copy(sample_dir / "pydicom" / name, tree / name)
    return tree


def _index(tree: Path, db: str, *args: str) -> subprocess.CompletedProcess[str]:
    proc = run_cli(["index", str(tree), "--db", db, "-w", "0", *args])
    assert proc.returncode == 0, proc.stderr
    return proc


def _on_terminal(args: list[str], columns: int) -> str:
    """What the command prints with stdout on a terminal `columns` wide (a real pty)."""
    code, shown, stderr = on_terminal(args, columns=columns)
    assert code == 0, stderr
    return shown.replace("\r\n", "\n")


# -- 1. tables are cut on a terminal only, to its width ----------------------------------------


def test_table_to_a_pipe_is_never_cut(long_tree: Path, tmp_path: Path) -> None:
    db = str(tmp_path / "index.db")
    _index(long_tree, db, "-q")
    for args in (["find", "instances"], ["sql", "SELECT path FROM files"]):
        proc = run_cli([*args, "--db", db])
        assert proc.returncode == 0, proc.stderr
        assert "…" not in proc.stdout
        for f in long_tree.iterdir():
            assert str(f) in proc.stdout  # the whole path, for a file or `grep`


def test_table_on_a_terminal_fits_its_width(long_tree: Path, tmp_path: Path) -> None:
    db = str(tmp_path / "index.db")
    _index(long_tree, db, "-q")
    for columns in (80, 120):
        out = _on_terminal(["find", "instances", "--db", db], columns)
        lines = out.rstrip("\n").split("\n")
        assert len(lines) == 4, out  # heading, rule, two instances: no wrapped blocks
        assert all(len(line) <= columns for line in lines), out
        assert "…" in out  # the long cells were cut, not the line wrapped
    wide = _on_terminal(["sql", "SELECT path FROM files", "--db", db], 400)
    assert "…" not in wide and str(next(long_tree.iterdir())) in wide


# -- 2. one vocabulary for machine output --------------------------------------------------------


def test_index_json_keys_are_snake_case_and_quiet_json_prints_it(
    db_url: str, long_tree: Path
) -> None:
    proc = _index(long_tree, db_url, "-q", "-f", "json")
    assert proc.stderr == ""  # -q: no progress
    data = json.loads(proc.stdout)
    assert set(data) == {
        "database",
        "run",
        "files_seen",
        "indexed",
        "indexed_with_problems",
        "not_indexed",
        "unchanged",
        "errors",
        "not_dicom",
        "missing",
        "pruned",
        "crawl_problems",
        "elements_written",
        "elapsed_s",
        "files_per_s",
        "path_index_s",
    }  # fmt: skip; the README lists them
    assert all(re.fullmatch(r"[a-z_]+", k) for k in data)
    assert data["indexed"] == 2 and data["pruned"] is False and data["files_per_s"] > 0
    assert data["elements_written"] == query(db_url, "SELECT COUNT(*) FROM elements")[0][0]
    # -q alone still prints nothing; the table keeps its human labels.
    assert _index(long_tree, db_url, "-q").stdout == ""
    table = _index(long_tree, db_url).stdout
    assert "files seen" in table and "files_seen" not in table


def test_unchanged_rerun_has_no_zero_rate(tmp_path: Path, long_tree: Path) -> None:
    db = str(tmp_path / "index.db")
    _index(long_tree, db, "-q")
    again = json.loads(_index(long_tree, db, "-f", "json").stdout)
    assert again["unchanged"] == 2 and again["files_per_s"] is None
    table = _index(long_tree, db).stdout
    assert "files/s" not in table and "unchanged" in table


def test_summary_csv_and_json_share_keys(tmp_path: Path, long_tree: Path) -> None:
    """forget (a summary printed by the same helper): snake_case keys, booleans true/false."""
    db = str(tmp_path / "index.db")
    _index(long_tree, db, "-q")
    proc = run_cli(["forget", str(long_tree), "--db", db, "--dry-run", "-f", "csv"])
    assert proc.returncode == 0, proc.stderr
    rows = dict(csv.reader(io.StringIO(proc.stdout)))
    assert rows["files_to_forget"] == "2" and rows["dry_run"] == "true"
    data = json.loads(
        run_cli(["forget", str(long_tree), "--db", db, "--dry-run", "-f", "json"]).stdout
    )
    assert set(data) == set(rows) - {"key"} and data["dry_run"] is True


def test_csv_with_no_match_has_its_header(db_url: str, long_tree: Path) -> None:
    _index(long_tree, db_url, "-q")
    for level in ("studies", "series", "instances"):
        hit = run_cli(["find", level, "--db", db_url, "-f", "csv"])
        none = run_cli(["find", level, "PatientID=NOBODY*", "--db", db_url, "-f", "csv"])
        assert hit.returncode == none.returncode == 0, hit.stderr + none.stderr
        # The same header as when something matched, and pandas reads it as an empty frame.
        assert none.stdout == hit.stdout.split("\n", 1)[0] + "\n"
        reader = csv.DictReader(io.StringIO(none.stdout))
        assert list(reader) == [] and reader.fieldnames == next(csv.reader(io.StringIO(hit.stdout)))
        try:
            import pandas
        except ImportError:
            continue
        frame = pandas.read_csv(io.StringIO(none.stdout))
        assert frame.empty and list(frame.columns) == reader.fieldnames


# -- 3. help ---------------------------------------------------------------------------------------

COMMANDS = [
    [], ["db"], ["index"], ["stats"], ["tags"], ["find"], ["sql"], ["dump"], ["forget"],
    ["relocate"], ["db", "upgrade"], ["db", "current"],
]  # fmt: skip


def test_no_arguments_print_help() -> None:
    for args in ([], ["db"]):
        proc = run_cli(args)
        assert proc.returncode == 0 and proc.stdout.startswith("Usage: indexer"), proc
        assert "Commands:" in proc.stdout and proc.stderr == ""
    assert "upgrade" in run_cli(["db"]).stdout


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a) or "indexer")
def test_help_is_clean(args: list[str]) -> None:
    """-h everywhere; metavars as a user writes them; no word broken across lines (80 columns,
    the width when stdout is not a terminal)."""
    short = run_cli([*args, "-h"], env={"COLUMNS": "80"})
    assert short.returncode == 0, short.stderr
    assert short.stdout == run_cli([*args, "--help"], env={"COLUMNS": "80"}).stdout
    text = short.stdout
    # typer's metavars (<list[Path]>, <int range>, {paths}); find's help may write KEY<N
    assert not re.search(r"<[a-z][A-Za-z_ \[\]]*>|\{|\}|list\[|int range|float range", text), text
    assert not re.search(r"\w-\n", text), text  # a hyphenated word split over two lines
    words = re.findall(r"[A-Za-z]{2,}", text.replace("\n", " "))
    assert all(len(w) < 40 for w in words), text  # a long word cut mid-way shows as two


def test_usage_lines() -> None:
    assert "Usage: indexer index [OPTIONS] PATH..." in run_cli(["index", "-h"]).stdout
    assert "Usage: indexer find [OPTIONS] LEVEL [FILTER]..." in run_cli(["find", "-h"]).stdout
    assert "-w, --workers N " in run_cli(["index", "-h"]).stdout


# -- 4. small ones ---------------------------------------------------------------------------------


def test_unwritable_db_folder_is_one_line(long_tree: Path, tmp_path: Path) -> None:
    """The folder of the index cannot be made (its parent is a file): one line, no traceback."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    for args in (["index", str(long_tree)], ["stats"], ["db", "upgrade"], ["db", "current"]):
        proc = run_cli([*args, "--db", str(blocker / "dir" / "x.db")])
        assert proc.returncode == 1, proc
        assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
        assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_tilde_in_indexer_db_is_the_home_folder(long_tree: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    proc = run_cli(
        ["index", str(long_tree), "-w", "0", "-q"],
        env={"INDEXER_DB": "~/x.db", "HOME": str(home)},
        cwd=work,
    )
    assert proc.returncode == 0, proc.stderr
    assert (home / "x.db").is_file() and not (work / "~").exists()


def test_unsupported_database_names_the_supported_ones(long_tree: Path) -> None:
    for args in (["index", str(long_tree)], ["stats"], ["db", "current"], ["db", "upgrade"]):
        proc = run_cli([*args, "--db", "mysql://user@localhost/archive"])
        assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
        assert "MySQLdb" not in proc.stderr
        assert "SQLite" in proc.stderr and "PostgreSQL" in proc.stderr


@pytest.mark.postgres
def test_missing_postgresql_database_suggests_createdb(pg_url: str, long_tree: Path) -> None:
    url = make_url(pg_url).set(database="idx_test_never_created").render_as_string(False)
    for args in (["index", str(long_tree)], ["stats"], ["find", "studies"]):
        proc = run_cli([*args, "--db", url])
        assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
        assert proc.stderr.rstrip().endswith("createdb idx_test_never_created"), proc.stderr
