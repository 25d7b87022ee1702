"""`indexer export parquet` (indexer/export/parquet.py) on SQLite and PostgreSQL.

Real files from tests/data (and the corpus, marked) are indexed, exported through the CLI,
and the Parquet files are read back with pyarrow and DuckDB: every table's rows equal the
index's, every query of examples/ gives the same rows on the index and on the export's
DuckDB views, an export into the same folder rewrites only the element parts whose files
changed, and a killed export leaves no half-written file under a final name.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from helpers import engine_for, query, single_line
from typer.testing import CliRunner

from indexer import schema
from indexer.backends.snapshot import read_snapshot
from indexer.db import HEAD_REVISION
from indexer.export.parquet import MANIFEST, TABLE_ORDER
from indexer.run import index_paths

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((REPO_ROOT / "examples").glob("*.sql"))
ELEMENT_KEYS = ("file_id", "ordinal", "path_id", "vr", "vm", "length", "value", "number", "flags")


def export(url: str, directory: Path, *args: str) -> dict[str, Any]:
    from indexer.cli import app

    result = CliRunner().invoke(
        app, ["export", "parquet", str(directory), "--db", url, "-q", "-f", "json", *args]
    )
    assert result.exit_code == 0, result.output
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def duck(directory: Path) -> duckdb.DuckDBPyConnection:
    """DuckDB with the export's views, its relative file names resolved in the export folder."""
    con = duckdb.connect()
    con.execute(f"SET file_search_path = '{directory}'")
    con.execute((directory / "duckdb.sql").read_text())
    return con


def plain(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Numbers compared as numbers: DuckDB's DECIMAL and SQLite's float of a ROUND agree."""
    return [tuple(float(v) if isinstance(v, Decimal) else v for v in row) for row in rows]


def same_answer(url: str, sql: str, con: duckdb.DuckDBPyConnection) -> bool:
    """The rows of `sql` on the index and on the export. In the same order on SQLite (the
    views sort NULLs as SQLite does); PostgreSQL sorts NULLs last, so there as a multiset."""
    expected, got = plain(query(url, sql)), plain(con.execute(sql).fetchall())
    if url.startswith("sqlite"):
        return got == expected
    return sorted(got, key=repr) == sorted(expected, key=repr)


def indexed_sample(url: str, sample_dir: Path, tmp_path: Path) -> Path:
    tree = tmp_path / "archive"
    shutil.copytree(sample_dir, tree)
    index_paths([str(tree)], url, workers=1)
    return tree


def element_rows(url: str) -> list[tuple[Any, ...]]:
    columns = ", ".join(f"e.{c}" for c in ELEMENT_KEYS)
    return sorted(
        query(
            url,
            f"SELECT {columns}, p.path, p.keyword FROM elements e JOIN paths p ON p.id = e.path_id",
        )
    )


def exported_elements(directory: Path) -> list[tuple[Any, ...]]:
    columns = ", ".join(ELEMENT_KEYS)
    return sorted(
        duck(directory).execute(f"SELECT {columns}, path, keyword FROM elements").fetchall()
    )


def same_rows(a: list[tuple[Any, ...]], b: list[tuple[Any, ...]]) -> bool:
    """Equal rows, floats equal to the last bit (NaN equal to NaN)."""
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        for u, v in zip(x, y, strict=True):
            if isinstance(u, float) and isinstance(v, float) and math.isnan(u) and math.isnan(v):
                continue
            if u != v:
                return False
    return True


def test_export_holds_every_table_of_the_index(
    db_url: str, sample_dir: Path, tmp_path: Path
) -> None:
    indexed_sample(db_url, sample_dir, tmp_path)
    out = tmp_path / "export"
    report = export(db_url, out)
    assert report["incremental"] is False and report["element_parts_kept"] == 0
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["schema_revision"] == HEAD_REVISION and manifest["export_format"] == 1
    con = duck(out)
    for name in TABLE_ORDER:
        table = schema.metadata.tables[name]
        columns = ", ".join(f'"{c.name}"' for c in table.columns)
        expected = sorted(
            (tuple(r) for r in query(db_url, f"SELECT {columns} FROM {name}")), key=repr
        )
        got = sorted(con.execute(f"SELECT {columns} FROM {name}").fetchall(), key=repr)
        # SQLite keeps booleans as 0 and 1; Parquet as booleans (True == 1 in Python).
        assert same_rows(expected, got), name
        assert manifest["tables"][name]["rows"] == len(expected) == report["rows"][name]
    expected_elements = element_rows(db_url)
    assert len(expected_elements) > 1000
    assert same_rows(expected_elements, exported_elements(out))
    assert (
        report["element_rows"] == len(expected_elements) == manifest["tables"]["elements"]["rows"]
    )
    element_bytes = sum((out / f).stat().st_size for f in manifest["tables"]["elements"]["files"])
    assert report["bytes_per_element_row"] == round(element_bytes / len(expected_elements), 2)
    # Patient data: files 0600, folders 0700, and nothing left of the staging folder.
    for path in out.rglob("*"):
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), path
        assert not path.name.startswith(".staging-")
    assert stat.S_IMODE(out.stat().st_mode) == 0o700


def test_every_example_query_gives_the_same_rows_on_the_export(
    db_url: str, sample_dir: Path, tmp_path: Path
) -> None:
    indexed_sample(db_url, sample_dir, tmp_path)
    out = tmp_path / "export"
    export(db_url, out)
    con = duck(out)
    assert len(EXAMPLES) >= 8
    for example in EXAMPLES:
        sql = example.read_text()
        assert query(db_url, sql) or example.name == "private_creators.sql", example.name
        assert same_answer(db_url, sql, con), example.name


@pytest.mark.corpus
def test_every_example_query_on_the_corpus_export(corpus_index: str, tmp_path: Path) -> None:
    out = tmp_path / "export"
    report = export(corpus_index, out, "--part-rows", "5000")
    assert report["element_parts_written"] > 5
    con = duck(out)
    for example in EXAMPLES:
        sql = example.read_text()
        assert query(corpus_index, sql), example.name
        assert same_answer(corpus_index, sql, con), example.name
    assert same_rows(element_rows(corpus_index), exported_elements(out))


def test_a_second_export_rewrites_only_the_changed_parts(
    db_url: str, sample_dir: Path, tmp_path: Path
) -> None:
    tree = indexed_sample(db_url, sample_dir, tmp_path)
    out = tmp_path / "export"
    first = export(db_url, out, "--part-rows", "300")
    parts = first["element_parts_written"]
    assert parts >= 4
    again = export(db_url, out, "--part-rows", "300")
    assert again["incremental"] is True
    assert (again["element_parts_written"], again["element_parts_kept"]) == (0, parts)
    # Re-index one file with a changed value, and forget a folder.
    changed = sorted(tree.rglob("*.dcm"))[0]
    os.utime(changed, ns=(time.time_ns(), time.time_ns() + 10**9))  # new time: read again
    index_paths([str(tree)], db_url, workers=1)
    from indexer.writer.roots import forget_root

    forget_root(tree / "fo-dicom", db_url)
    third = export(db_url, out, "--part-rows", "300")
    assert third["incremental"] is True
    assert 1 <= third["element_parts_written"] < parts // 2 + 2
    assert third["element_parts_kept"] >= parts // 2
    assert same_rows(element_rows(db_url), exported_elements(out))
    manifest = json.loads((out / MANIFEST).read_text())
    assert listed_files(out) == files_on_disk(out)
    ranges = [p["file_ids"] for p in manifest["element_parts"]]
    assert all(b[0] == a[1] + 1 for a, b in zip(ranges, ranges[1:], strict=False))
    full = export(db_url, tmp_path / "full")
    assert full["element_rows"] == third["element_rows"]
    assert exported_elements(tmp_path / "full") == exported_elements(out)
    # --full into the same folder: new names, and nothing of the earlier files left over.
    before = files_on_disk(out)
    again = export(db_url, out, "--full")
    assert again["incremental"] is False and again["element_parts_kept"] == 0
    assert listed_files(out) == files_on_disk(out) and not before & files_on_disk(out)
    assert exported_elements(out) == exported_elements(tmp_path / "full")


def listed_files(directory: Path) -> set[str]:
    manifest = json.loads((directory / MANIFEST).read_text())
    return {f for table in manifest["tables"].values() for f in table["files"]}


def files_on_disk(directory: Path) -> set[str]:
    return {str(p.relative_to(directory)) for p in directory.glob("*/*.parquet")}


def test_refusals_are_one_line(tmp_path: Path, sample_dir: Path) -> None:
    from indexer.cli import app

    runner = CliRunner()
    missing = runner.invoke(
        app, ["export", "parquet", str(tmp_path / "x"), "--db", str(tmp_path / "none.db")]
    )
    assert missing.exit_code == 1 and single_line(missing.output), missing.output
    assert "no index" in missing.output
    url = f"sqlite:///{tmp_path}/index.db"
    index_paths([str(sample_dir / "pydicom")], url, workers=1)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    refused = runner.invoke(app, ["export", "parquet", str(busy), "--db", url])
    assert refused.exit_code == 1 and single_line(refused.output), refused.output
    assert "holds no export" in refused.output
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    refused = runner.invoke(app, ["export", "parquet", str(a_file), "--db", url])
    assert refused.exit_code == 1 and "is not a folder" in refused.output, refused.output
    engine = engine_for(url)
    with engine.begin() as conn:  # SQLite takes what PostgreSQL's INTEGER would refuse
        conn.exec_driver_sql("UPDATE files SET element_count = 1099511627776")
    engine.dispose()
    too_big = runner.invoke(app, ["export", "parquet", str(tmp_path / "big"), "--db", url])
    assert too_big.exit_code == 1 and single_line(too_big.output), too_big.output
    assert "does not fit" in too_big.output and not list((tmp_path / "big").glob("*/*"))
    under_a_device = runner.invoke(app, ["export", "parquet", "/dev/full/export", "--db", url])
    assert under_a_device.exit_code == 1 and single_line(under_a_device.output), (
        under_a_device.output
    )
    assert sorted(p.name for p in busy.iterdir()) == ["notes.txt"]


@pytest.mark.corpus
def test_a_killed_export_leaves_the_previous_one_whole(corpus_index: str, tmp_path: Path) -> None:
    """SIGKILL while the second export writes: every file the manifest lists is whole (its
    rows as listed), no staging file is under a final name, and the next export cleans up."""
    if not corpus_index.startswith("sqlite"):
        pytest.skip("one database kind is enough for the file handling")
    out = tmp_path / "export"
    export(corpus_index, out, "--part-rows", "2000")
    command = [sys.executable, "-c", "from indexer.cli import main; main()"]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    args = [
        "export",
        "parquet",
        str(out),
        "--db",
        corpus_index,
        "--full",
        "--part-rows",
        "2000",
        "-q",
    ]
    proc = subprocess.Popen(
        [*command, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 60
    staged: list[Path] = []
    while time.monotonic() < deadline and proc.poll() is None:
        staged = list(out.glob(".staging-*/elements/*"))
        if staged:
            break
        time.sleep(0.005)
    assert staged, "the export never wrote an element part"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    manifest = json.loads((out / MANIFEST).read_text())
    for table in manifest["tables"].values():
        rows = sum(pq.ParquetFile(out / f).metadata.num_rows for f in table["files"])
        assert rows == table["rows"]
    for path in out.rglob("*.parquet"):  # under a final name, a file is whole
        if not any(part.startswith(".staging-") for part in path.relative_to(out).parts):
            assert pq.ParquetFile(path).metadata.num_rows >= 0
    report = export(corpus_index, out)
    assert not list(out.glob(".staging-*"))
    assert report["element_rows"] == manifest["tables"]["elements"]["rows"]


def test_the_snapshot_does_not_see_later_commits(
    db_url: str, sample_dir: Path, tmp_path: Path
) -> None:
    indexed_sample(db_url, sample_dir, tmp_path)
    reader, writer = engine_for(db_url), engine_for(db_url)
    try:
        with reader.connect() as conn, read_snapshot(conn):
            before = conn.exec_driver_sql("SELECT COUNT(*) FROM errors").scalar()
            with writer.begin() as w:
                w.execute(
                    sa.insert(schema.errors),
                    {
                        "run_id": 1,
                        "path": "/x",
                        "stage": "crawl",
                        "reason": "x",
                        "message": "x",
                        "severity": "warning",
                        "at": 0.0,
                    },
                )
            assert conn.exec_driver_sql("SELECT COUNT(*) FROM errors").scalar() == before
        with reader.connect() as conn:
            assert conn.exec_driver_sql("SELECT COUNT(*) FROM errors").scalar() == before + 1
    finally:
        reader.dispose()
        writer.dispose()


CONSISTENT = {
    # every instance has as many data elements as it says, and every element row its file
    "instances without their elements": """
        SELECT COUNT(*) FROM instances i
        LEFT JOIN (SELECT file_id, COUNT(*) AS n FROM elements WHERE flags & 3 = 0
                   GROUP BY file_id) e ON e.file_id = i.file_id
        WHERE COALESCE(e.n, 0) <> i.element_count""",
    "elements without their file": """
        SELECT COUNT(*) FROM (SELECT DISTINCT file_id FROM elements) e
        LEFT JOIN files f ON f.id = e.file_id WHERE f.id IS NULL""",
    # the summaries count the same instances as the instances table
    "instance groups that disagree": """
        SELECT ABS((SELECT COALESCE(SUM(instances), 0) FROM instance_groups)
                   - (SELECT COUNT(*) FROM instances))""",
}


@pytest.mark.corpus
def test_exports_taken_while_the_index_is_written_are_consistent(
    db_url: str, corpus_dir: Path, tmp_path: Path
) -> None:
    """`indexer index` commits batches of 5 files while exports run: each export reads one
    snapshot, so its tables agree with each other whatever moment it caught."""
    script = (
        "import sys; from indexer.run import index_paths; "
        "index_paths([sys.argv[1]], sys.argv[2], workers=1, batch_files=5)"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(corpus_dir), db_url], env=env, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if query(db_url, "SELECT COUNT(*) FROM instances")[0][0] > 0:
                    break
            except sa.exc.SQLAlchemyError:
                pass  # the schema is not there yet
            time.sleep(0.05)
        exports = []
        while proc.poll() is None and len(exports) < 6:
            out = tmp_path / f"export-{len(exports)}"
            exports.append((export(db_url, out, "--part-rows", "3000"), out))
    finally:
        proc.wait(timeout=300)
    assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
    assert exports, "the index run ended before an export could start"
    during = [r["rows"]["instances"] for r, _ in exports]
    final = query(db_url, "SELECT COUNT(*) FROM instances")[0][0]
    assert min(during) < final, "no export caught the index half written"
    for report, out in exports:
        con = duck(out)
        for what, sql in CONSISTENT.items():
            assert con.execute(sql).fetchone() == (0,), (what, report["rows"])
