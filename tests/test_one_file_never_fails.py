"""One file the database refuses never fails a batch (issue 10, "One file never fails a batch").

The refusals are real: a trigger (SQLite) or a CHECK constraint (PostgreSQL) that the test
adds to the real index refuses one file's instance row, or one element row (the SQLite
scratch-file path and the PostgreSQL COPY path), and the writer must split the batch until
it finds that file, record it with the database's reason, and land the others, with the
tag summaries of exactly the files that landed.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa
from helpers import (
    DICTIONARY_TABLES,
    diff_dumps,
    dump_index,
    engine_for,
    fresh_database,
    pg_database,
    query,
    run_cli,
)
from torture.build import dicom_file, el, uid_for

from indexer.backends.postgresql import PostgreSQLBackend
from indexer.backends.sqlite import SQLiteBackend
from indexer.db import open_index
from indexer.run import index_paths

FILES = 7
BAD = 4  # the file the database refuses
SECRET = b"REFUSE^THIS^VALUE"  # an element value of the bad file only


def _tree(root: Path, bad: int = BAD) -> list[Path]:
    root.mkdir(parents=True)
    out = []
    for n in range(FILES):
        description = SECRET if n == bad else f"series {n}".encode()
        data = dicom_file(f"refusal-{n}", extra=[(0x0008103E, el(0x0008103E, "LO", description))])
        path = root / f"f{n}.dcm"
        path.write_bytes(data)
        out.append(path)
    return out


@pytest.fixture
def tree(tmp_path: Path) -> list[Path]:
    return _tree(tmp_path / "tree")


def _refuse(url: str, table: str, column: str, value: str) -> None:
    """Make the real database refuse rows of `table` whose `column` is `value`."""
    engine = engine_for(url)
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "sqlite":
                conn.exec_driver_sql(
                    f"CREATE TRIGGER refuse_one BEFORE INSERT ON {table} "
                    f"WHEN NEW.{column} = '{value}' "
                    "BEGIN SELECT RAISE(ABORT, 'refused by the test trigger'); END"
                )
            else:
                conn.exec_driver_sql(
                    f"ALTER TABLE {table} ADD CONSTRAINT refuse_one "
                    f"CHECK ({column} IS DISTINCT FROM '{value}') NOT VALID"
                )
    finally:
        engine.dispose()


def _allow(url: str, table: str) -> None:
    engine = engine_for(url)
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "sqlite":
                conn.exec_driver_sql("DROP TRIGGER refuse_one")
            else:
                conn.exec_driver_sql(f"ALTER TABLE {table} DROP CONSTRAINT refuse_one")
    finally:
        engine.dispose()


def _bad_uid(bad: int = BAD) -> str:
    return uid_for(f"refusal-{bad}/sop")


def _content_dump(url: str) -> dict[str, list[tuple[object, ...]]]:
    """Every table but the files, errors and the dictionaries (which may hold more)."""
    dump = dump_index(url)
    for name in ("files", "errors", "alembic_version", *DICTIONARY_TABLES):
        dump.pop(name, None)
    return dump


def _reference(url: str, tree: list[Path], index: int) -> dict[str, list[tuple[object, ...]]]:
    """What a fresh index of the tree without file `index` holds (same paths)."""
    bad = tree[index]
    aside = bad.parent.parent / "aside.bin"
    bad.rename(aside)
    try:
        index_paths([str(bad.parent)], url, workers=0)
        return _content_dump(url)
    finally:
        aside.rename(bad)


@pytest.mark.parametrize(
    "where",
    [
        ("instances", "sop_instance_uid", "uid"),  # the hierarchy's INSERT
        ("elements", "value", "secret"),  # SQLite: INSERT ... SELECT from scratch; PostgreSQL: COPY
    ],
    ids=["instance-row", "element-row"],
)
# The first file a worker reads carries the definitions of its sequence paths and tag keys
# (sent once per worker and run): refusing it must not lose them for the files that follow.
@pytest.mark.parametrize("bad", [0, BAD], ids=["first-file", "middle-file"])
@pytest.mark.parametrize("workers", [0, 2])
def test_a_refused_file_is_recorded_and_the_rest_of_the_batch_lands(
    db_url: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    where: tuple[str, str, str],
    workers: int,
    bad: int,
) -> None:
    tree = _tree(tmp_path / "tree", bad)
    table, column, which = where
    value = _bad_uid(bad) if which == "uid" else SECRET.decode()
    open_index(db_url).dispose()
    _refuse(db_url, table, column, value)

    report = index_paths([str(tree[0].parent)], db_url, workers=workers)

    assert report.outcome == "completed"
    assert (report.indexed, report.failed) == (FILES - 1, 1)
    status = dict(query(db_url, "SELECT path, status FROM files"))
    assert status == {str(p): "indexed" for p in tree} | {str(tree[bad]): "error"}
    rows = query(db_url, "SELECT path, stage, reason, severity, message FROM errors")
    assert [r[:4] for r in rows] == [(str(tree[bad]), "write", "refused", "error")]
    message = rows[0][4]
    assert "refuse_one" in message or "refused by the test trigger" in message, message
    # The database's complaint, never the file's values (PostgreSQL's DETAIL quotes the row).
    for secret in (SECRET.decode(), _bad_uid(bad), "Torture", "refusal-"):
        assert secret not in message, message
    assert "\n" not in message
    problem = query(db_url, "SELECT problem, size FROM files WHERE status = 'error'")
    assert problem == [(message, tree[bad].stat().st_size)]
    assert query(db_url, "SELECT count(*) FROM instances") == [(FILES - 1,)]
    bad_id = query(db_url, "SELECT id FROM files WHERE status = 'error'")[0][0]
    assert query(db_url, f"SELECT count(*) FROM elements WHERE file_id = {bad_id}") == [(0,)]

    # The summaries and the hierarchy hold exactly the files that landed.
    server = request.getfixturevalue("pg_url") if db_url.startswith("postgresql") else None
    with fresh_database(server and "postgresql" or "sqlite", tmp_path / "ref", server) as ref:
        reference = _reference(ref, tree, bad)
    difference = diff_dumps(reference, _content_dump(db_url))
    assert not difference, difference

    # An unchanged re-run skips the refused file (status error with its size and mtime,
    # like an unreadable file): it neither loops nor fails, and its error row stays.
    again = index_paths([str(tree[0].parent)], db_url, workers=workers)
    assert (again.outcome, again.unchanged, again.failed) == ("completed", FILES, 0)
    assert query(db_url, "SELECT count(*), min(stage) FROM errors") == [(1, "write")]

    # Once the database takes it and the file changed, it lands like any other.
    _allow(db_url, table)
    stat = tree[bad].stat()
    os.utime(tree[bad], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    third = index_paths([str(tree[0].parent)], db_url, workers=workers)
    assert (third.indexed, third.failed) == (1, 0)
    assert query(db_url, "SELECT count(*) FROM errors") == [(0,)]
    assert query(db_url, "SELECT count(*) FROM instances") == [(FILES,)]


def test_every_file_refused_still_completes(db_url: str, tree: list[Path]) -> None:
    open_index(db_url).dispose()
    _refuse(db_url, "instances", "modality", "OT")  # every file of the tree
    report = index_paths([str(tree[0].parent)], db_url, workers=0)
    assert (report.outcome, report.indexed, report.failed) == ("completed", 0, FILES)
    assert query(db_url, "SELECT count(*), min(stage), max(stage) FROM errors") == [
        (FILES, "write", "write")
    ]
    assert query(db_url, "SELECT count(*) FROM elements") == [(0,)]


def test_refused_file_replaces_what_it_held_before(db_url: str, tree: list[Path]) -> None:
    """A changed file that the database now refuses leaves none of its old rows behind."""

    index_paths([str(tree[0].parent)], db_url, workers=0)
    _refuse(db_url, "elements", "value", SECRET.decode())
    stat = tree[BAD].stat()
    os.utime(tree[BAD], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    report = index_paths([str(tree[0].parent)], db_url, workers=0)
    assert (report.failed, report.unchanged) == (1, FILES - 1)
    bad_id = query(db_url, "SELECT id FROM files WHERE status = 'error'")[0][0]
    for table in ("elements", "instances"):
        assert query(db_url, f"SELECT count(*) FROM {table} WHERE file_id = {bad_id}") == [(0,)]
    assert query(db_url, "SELECT sum(instances) FROM instance_groups") == [(FILES - 1,)]


def test_the_command_reports_a_refused_file_in_one_clean_summary(
    db_url: str, tree: list[Path]
) -> None:
    """`indexer index` exits 0, names the failure in its summary, and prints no traceback,
    no driver warning (psycopg's "error ignored terminating ... pipeline aborted") and no
    value of the file."""
    open_index(db_url).dispose()
    _refuse(db_url, "instances", "sop_instance_uid", _bad_uid())
    done = run_cli(["index", str(tree[0].parent), "--db", db_url, "--workers", "2"])
    assert done.returncode == 0, done.stderr
    output = done.stdout + done.stderr
    for unwanted in ("Traceback", "error ignored", "pipeline", _bad_uid(), SECRET.decode()):
        assert unwanted not in output, output
    assert query(db_url, "SELECT count(*) FROM errors WHERE stage = 'write'") == [(1,)]


# -- what counts as a refusal for the data ----------------------------------------------------


def test_refusal_names_data_errors_of_sqlite() -> None:
    refusal = SQLiteBackend().refused
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (n INTEGER CHECK (n < 10), s TEXT UNIQUE)")
    with pytest.raises(OverflowError) as overflow:
        conn.execute("INSERT INTO t (n) VALUES (?)", (2**64,))
    assert refusal(overflow.value) is not None
    with pytest.raises(sqlite3.IntegrityError) as check:
        conn.execute("INSERT INTO t (n) VALUES (11)")
    assert refusal(check.value) == "CHECK constraint failed: n < 10"
    with pytest.raises(sqlite3.OperationalError) as missing:
        conn.execute("INSERT INTO nowhere VALUES (1)")
    assert refusal(missing.value) is None  # not the data: the run stops
    assert refusal(KeyboardInterrupt()) is None


def test_refusal_names_data_errors_of_postgresql(pg_url: str) -> None:
    refusal = PostgreSQLBackend().refused
    with pg_database(pg_url) as url:
        engine = engine_for(url)
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql("CREATE TABLE t (n integer, s text CHECK (s <> 'x'))")
                conn.commit()
                cases = {
                    "SELECT 2147483648::integer": "integer out of range (SQLSTATE 22003)",
                    "SELECT 'secret-value'::integer": "invalid input syntax for type integer"
                    " (SQLSTATE 22P02)",
                    "INSERT INTO t (s) VALUES ('x')": 'new row for relation "t" violates '
                    'check constraint "t_s_check" (SQLSTATE 23514)',
                }
                for sql, expected in cases.items():
                    with pytest.raises(sa.exc.DBAPIError) as caught:
                        conn.exec_driver_sql(sql)
                    conn.rollback()
                    assert refusal(caught.value) == expected, sql
                with pytest.raises(sa.exc.DBAPIError) as nul:
                    conn.execute(sa.text("SELECT :v"), {"v": "a\x00b"})
                conn.rollback()
                assert refusal(nul.value) is not None
                assert "a\x00b" not in (refusal(nul.value) or "")
                # Connection loss is not the data's fault.
                pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
                conn.rollback()
                with engine_for(url).connect() as other:
                    other.exec_driver_sql(f"SELECT pg_terminate_backend({pid})")
                with pytest.raises(sa.exc.DBAPIError) as lost:
                    conn.exec_driver_sql("SELECT 1")
                assert refusal(lost.value) is None
        finally:
            engine.dispose()


def test_values_beyond_the_integer_columns_never_fail_the_batch(
    db_url: str, tmp_path: Path
) -> None:
    """The issue's files: NumberOfFrames 2147483648 (beyond PostgreSQL's integer) and
    99999999999999999999 (beyond 64 bits: the SQLite driver's OverflowError). The typed
    column takes NULL for them with a warning, and the batch lands."""
    root = tmp_path / "frames"
    root.mkdir()
    frames = {"big": b"2147483648", "huge": b"99999999999999999999", "fine": b"12"}
    for name, value in frames.items():
        extra = [(0x00280008, el(0x00280008, "IS", value))]
        (root / f"{name}.dcm").write_bytes(dicom_file(f"frames-{name}", extra=extra))

    report = index_paths([str(root)], db_url, workers=0)

    assert report.outcome == "completed"
    assert report.indexed + report.failed == len(frames)
    status = dict(query(db_url, "SELECT path, status FROM files"))
    assert status[str(root / "fine.dcm")] == "indexed"
    fine = "SELECT i.frames FROM instances i JOIN files f ON f.id = i.file_id WHERE f.path = :p"
    assert query(db_url, fine, p=str(root / "fine.dcm")) == [(12,)]
    # The typed column takes NULL and a warning (writer/hierarchy's check), so the safety net
    # has nothing to catch: every file lands.
    assert set(status.values()) == {"indexed"}
    for name in ("big", "huge"):
        assert query(db_url, fine, p=str(root / f"{name}.dcm")) == [(None,)]
    rows = query(db_url, "SELECT path, stage, reason FROM errors ORDER BY path")
    assert rows == [
        (str(root / "big.dcm"), "walk", "warning"),
        (str(root / "huge.dcm"), "walk", "warning"),
    ]


def _long_folder(root: Path) -> Path:
    """A real folder under `root` (sorting first) whose path is about 2.9 KB of incompressible
    names: beyond PostgreSQL's index row size (PostgreSQL compresses before it measures)."""
    letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    state = 12345
    parts = []
    for _ in range(13):
        name = ""
        for _ in range(220):
            state = (state * 1103515245 + 12345) % 2**31
            name += letters[state % len(letters)]
        parts.append(name)
    deep = root.joinpath("0", *parts)
    deep.mkdir(parents=True)
    return deep


@pytest.mark.parametrize("workers", [0, 2])
def test_a_path_the_database_cannot_index_never_fails_the_run(
    db_url: str, tmp_path: Path, request: pytest.FixtureRequest, workers: int
) -> None:
    """A real path of ~3 KB (Linux allows 4 KB) is beyond PostgreSQL's index row size, so not
    even the refused file's own row can be stored: the file is counted failed and left out,
    the rest lands (before: every run ended with "index row size ... exceeds"). It sorts
    first, so it is also the file that carries its worker's definitions."""
    tree = _tree(tmp_path / "tree")
    server = request.getfixturevalue("pg_url") if db_url.startswith("postgresql") else None
    with fresh_database(server and "postgresql" or "sqlite", tmp_path / "ref", server) as ref:
        index_paths([str(tree[0].parent)], ref, workers=0)
        reference = _content_dump(ref)
    long_file = _long_folder(tree[0].parent) / "x.dcm"
    long_file.write_bytes(tree[0].read_bytes())
    assert len(str(long_file)) > 2900

    report = index_paths([str(tree[0].parent)], db_url, workers=workers)

    assert report.outcome == "completed"
    stored = len(query(db_url, f"SELECT id FROM files WHERE path = '{long_file}'"))
    assert (report.indexed, report.failed) == (FILES + stored, 1 - stored)
    others = query(db_url, f"SELECT path, status FROM files WHERE path <> '{long_file}'")
    assert dict(others) == {str(p): "indexed" for p in tree}
    if not stored:  # PostgreSQL: the rest exactly as a fresh index of it
        difference = diff_dumps(reference, _content_dump(db_url))
        assert not difference, difference
    again = index_paths([str(tree[0].parent)], db_url, workers=workers)
    assert (again.outcome, again.unchanged) == ("completed", FILES + stored)


def test_a_crawl_skip_the_database_cannot_index_never_fails_the_run(
    db_url: str, tmp_path: Path
) -> None:
    """A FIFO at a ~3 KB path: its skip row is refused on PostgreSQL (the index on
    errors.path); the other skips and every file still land (before: the run ended)."""
    tree = _tree(tmp_path / "tree")
    fifo = _long_folder(tree[0].parent) / "fifo"
    os.mkfifo(fifo)
    os.mkfifo(tree[0].parent / "fifo")
    report = index_paths([str(tree[0].parent)], db_url, workers=0)
    assert (report.outcome, report.indexed) == ("completed", FILES)
    skips = [r[0] for r in query(db_url, "SELECT path FROM errors WHERE stage = 'crawl'")]
    assert str(tree[0].parent / "fifo") in skips
    assert len(skips) == (1 if db_url.startswith("postgresql") else 2)
    again = index_paths([str(tree[0].parent)], db_url, workers=0)
    assert (again.outcome, again.unchanged) == ("completed", FILES)


def test_a_modification_time_beyond_64_bits_never_fails_the_run(
    db_url: str, tmp_path: Path
) -> None:
    """`touch -d 2300-01-01`: st_mtime_ns is beyond a 64-bit integer, so the file's own row is
    refused (SQLite: the driver's OverflowError, a traceback before; PostgreSQL: bigint out of
    range, exit 1 before). The file is counted failed; the others land."""
    tree = _tree(tmp_path / "tree")
    late = 10**19  # 2286-11-20, after 2**63 ns
    os.utime(tree[BAD], ns=(late, late))
    assert tree[BAD].stat().st_mtime_ns > 2**63
    done = run_cli(["index", str(tree[0].parent), "--db", db_url, "--workers", "0"])
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    status = dict(query(db_url, "SELECT path, status FROM files"))
    assert status == {str(p): "indexed" for p in tree if p != tree[BAD]}
    # Its error row says why (its own row cannot be stored), once however many runs.
    run_cli(["index", str(tree[0].parent), "--db", db_url, "--workers", "0"])
    rows = query(db_url, "SELECT path, stage, reason FROM errors")
    assert rows == [(str(tree[BAD]), "write", "refused")]
