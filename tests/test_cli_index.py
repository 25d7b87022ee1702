"""`indexer index` through typer's CliRunner: output, exit codes, --db / INDEXER_DB, file mode.

Runs index the small sample shipped in tests/data (a few real DICOM files, some
broken) and then open the database to check the printed figures against it.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import time
from pathlib import Path

import pytest
import typer.main
from helpers import query, regular_files, single_line
from typer.testing import CliRunner

from indexer.cli import app


def invoke(*args: str, env: dict[str, str | None] | None = None) -> tuple[int, str, str]:
    merged: dict[str, str | None] = {"INDEXER_DB": None}
    merged.update(env or {})
    result = CliRunner().invoke(app, list(args), env=merged)
    exc = result.exception
    uncaught = (
        ""
        if exc is None or isinstance(exc, SystemExit)
        else (f"Traceback (most recent call last):\n{type(exc).__name__}: {exc}\n")
    )  # what the process would print
    return result.exit_code, result.stdout, result.stderr + uncaught


def _status_counts(url: str) -> dict[str, int]:
    return {s: int(n) for s, n in query(url, "SELECT status, COUNT(*) FROM files GROUP BY status")}


def _table(out: str) -> dict[str, str]:
    """The summary table as {label: value}: label and value are separated by 2+ spaces."""
    rows = {}
    for line in out.splitlines():
        parts = [p for p in line.strip().split("  ") if p.strip()]
        if len(parts) >= 2:
            rows[parts[0].strip()] = parts[-1].strip()
    return rows


def test_summary_table(sample_dir: Path, tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'index.db'}"
    code, out, err = invoke("index", str(sample_dir), "--db", db_url, "-w", "2")
    assert code == 0, err
    assert "Traceback" not in err
    table = _table(out)
    counts = _status_counts(db_url)
    assert int(table["files seen"]) == len(regular_files(sample_dir)) == sum(counts.values())
    assert int(table["indexed"]) == counts.get("indexed", 0) > 0
    assert int(table["indexed with problems"]) == counts.get("partial", 0) > 0
    assert int(table["elements written"]) == query(db_url, "SELECT COUNT(*) FROM elements")[0][0]
    # Broken files do not make the run fail; the user is told where to look.
    assert "errors" in err


def test_json_summary(db_url: str, sample_dir: Path) -> None:
    """Both databases; the database named by INDEXER_DB (a URL here)."""
    code, out, err = invoke(
        "index", str(sample_dir), "-w", "2", "--format", "json", env={"INDEXER_DB": db_url}
    )
    assert code == 0, err
    data = json.loads(out)
    counts = _status_counts(db_url)
    assert data["files_seen"] == sum(counts.values())
    assert data["indexed"] == counts.get("indexed", 0)
    assert data["indexed_with_problems"] == counts.get("partial", 0)
    assert data["not_indexed"] + data["not_dicom"] == counts.get("not_dicom", 0) + counts.get(
        "error", 0
    )
    # One definition of errors: files not indexed whole (README "Errors").
    assert data["errors"] == data["not_indexed"] + data["indexed_with_problems"] > 0
    assert data["unchanged"] == 0 and data["missing"] == 0
    assert data["run"] == query(db_url, "SELECT MAX(id) FROM runs")[0][0]
    # Re-run: everything unchanged.
    code, out, err = invoke("index", str(sample_dir), "--db", db_url, "-w", "2", "-f", "json")
    again = json.loads(out)
    assert code == 0 and again["unchanged"] == again["files_seen"] == data["files_seen"]
    assert again["indexed"] == again["elements_written"] == 0


def test_quiet_prints_nothing(sample_dir: Path, tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'index.db'}"
    code, out, _err = invoke("index", str(sample_dir), "--db", db_url, "-w", "2", "--quiet")
    assert (code, out) == (0, "")
    assert sum(_status_counts(db_url).values()) == len(regular_files(sample_dir))


def test_prune_via_cli(sample_dir: Path, tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'index.db'}"
    tree = tmp_path / "tree"
    shutil.copytree(sample_dir, tree)
    assert invoke("index", str(tree), "--db", db_url, "-w", "2", "-q")[0] == 0
    regular_files(tree)[0].unlink()
    code, out, err = invoke("index", str(tree), "--db", db_url, "-w", "2", "-f", "json")
    assert code == 0 and json.loads(out)["missing"] == 1, err
    assert _status_counts(db_url)["missing"] == 1
    code, out, err = invoke("index", str(tree), "--db", db_url, "-w", "2", "-f", "json", "--prune")
    assert code == 0 and json.loads(out)["missing"] == 1, err
    assert json.loads(out)["pruned"] is True
    assert "missing" not in _status_counts(db_url)


def test_bad_database_url_is_one_line_exit_1(sample_dir: Path) -> None:
    code, out, err = invoke("index", str(sample_dir), "--db", "nosuchdialect://x/y", "-w", "2")
    assert code == 1 and single_line(err) and err.startswith("error:") and "Traceback" not in err
    assert out == ""


def test_unreachable_postgresql_is_one_line_exit_1(sample_dir: Path) -> None:
    started = time.monotonic()
    code, _out, err = invoke(
        "index",
        str(sample_dir),
        "--db",
        "postgresql+psycopg://postgres:hush@127.0.0.1:1/x",
        "-w",
        "2",
    )
    assert code == 1 and single_line(err) and err.startswith("error:") and "Traceback" not in err
    assert "hush" not in err  # never print the password
    assert time.monotonic() - started < 30


def test_bad_option_value_fails_without_traceback(sample_dir: Path, tmp_path: Path) -> None:
    code, _out, err = invoke(
        "index", str(sample_dir), "--db", str(tmp_path / "i.db"), "--workers", "-1"
    )
    assert code != 0 and "Traceback" not in err and "--workers" in err
    assert not (tmp_path / "i.db").exists()


def test_indexer_db_environment_variable(sample_dir: Path, tmp_path: Path) -> None:
    from_env = tmp_path / "env.db"
    code, out, err = invoke(
        "index", str(sample_dir), "-w", "2", "-q", env={"INDEXER_DB": str(from_env)}
    )
    assert code == 0, err
    assert from_env.exists()
    for args in (["stats"], ["db", "current"], ["db", "upgrade"]):
        code, out, err = invoke(*args, env={"INDEXER_DB": str(from_env)})
        assert code == 0, (args, err)
        assert str(from_env) in out or args == ["stats"], (args, out)
    # --db wins over the variable.
    given = tmp_path / "given.db"
    code, out, err = invoke(
        "index",
        str(sample_dir),
        "--db",
        str(given),
        "-w",
        "2",
        "-q",
        env={"INDEXER_DB": str(tmp_path / "unused.db")},
    )
    assert code == 0 and given.exists() and not (tmp_path / "unused.db").exists()


def test_default_database_in_the_current_folder(
    sample_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, _out, err = invoke("index", str(sample_dir), "-w", "2", "-q")
    assert code == 0, err
    default = tmp_path / "dicom-index.db"
    assert default.exists()
    assert stat.S_IMODE(default.stat().st_mode) == 0o600


def test_database_file_mode_0600_whatever_the_umask(sample_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "index.db"
    old = os.umask(0)
    try:
        code, _out, err = invoke("index", str(sample_dir), "--db", str(path), "-w", "2", "-q")
    finally:
        os.umask(old)
    assert code == 0, err
    leftovers = [p for p in tmp_path.iterdir() if p.name.startswith("index.db")]
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in leftovers} == {
        p.name: 0o600 for p in leftovers
    }


def test_every_database_command_takes_db_and_indexer_db() -> None:
    """The same --db option, with INDEXER_DB as its variable, on every command that opens the index."""
    group = typer.main.get_command(app)
    found = {}

    def walk(command: object, name: str) -> None:
        subcommands = getattr(command, "commands", None)
        if subcommands:
            for sub_name, sub in subcommands.items():
                walk(sub, f"{name} {sub_name}".strip())
            return
        params = {p.name: p for p in getattr(command, "params", [])}
        found[name] = params.get("db")

    walk(group, "")
    needs_db = {name for name in found if name != "dump"}  # dump reads one file, no index
    assert needs_db >= {"index", "stats", "db upgrade", "db current"}
    for name in needs_db:
        option = found[name]
        assert option is not None, f"`indexer {name}` has no --db"
        assert "--db" in option.opts and option.envvar == "INDEXER_DB", name


def test_missing_root_is_refused_before_anything_is_marked(
    tmp_path: Path, sample_dir: Path
) -> None:
    """A root that is not there (a typo, an unmounted share) must not mark its files missing."""
    db_url = f"sqlite:///{tmp_path / 'index.db'}"
    tree = tmp_path / "tree"
    shutil.copytree(sample_dir / "pydicom", tree)
    code, _out, err = invoke("index", str(tree), "--db", db_url, "-w", "2", "-q")
    assert code == 0, err
    indexed = query(db_url, "SELECT COUNT(*) FROM files WHERE status != 'missing'")[0][0]
    shutil.rmtree(tree)
    code, _out, err = invoke("index", str(tree), "--db", db_url, "-w", "2", "--prune")
    assert code == 1 and str(tree) in err and "Traceback" not in err
    assert query(db_url, "SELECT COUNT(*) FROM files WHERE status != 'missing'")[0][0] == indexed


def test_postgresql_url_without_psycopg_says_what_to_install(tmp_path: Path) -> None:
    import subprocess
    import sys

    # psycopg is installed here: a None entry in sys.modules makes its import fail as if not.
    code = (
        "import sys; sys.modules['psycopg'] = None\n"
        "from indexer.cli import main\n"
        "sys.argv = ['indexer', 'index', sys.argv[1], '--db', "
        "'postgresql://postgres@127.0.0.1:1/none']\n"
        "main()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    assert done.returncode == 1, done
    assert "pip install 'dicom-indexer[postgresql]'" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
