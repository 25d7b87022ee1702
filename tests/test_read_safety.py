"""The read side is safe: `sql` has a time limit and a size cap, refuses writes with their
real cause and warns a PostgreSQL superuser; a read-only role made with the README's GRANTs
works; an index in a folder that cannot be written opens read-only; `tags` hides person
names in private and unknown tags. Everything through the CLI on real built files.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa
from helpers import DB_KINDS, engine_for, pg_database, run_cli, single_line
from sqlalchemy.engine import make_url
from torture.build import dicom_file, el

README = Path(__file__).resolve().parent.parent / "README.md"

# Values that must never be printed without --patient-values: person names in a private tag
# of a creator, in a private tag without creator, other private and unknown-tag values.
HIDDEN = {
    '(0009,"ACME PRIVATE",01)': b"PRIVZQ^PERSON",  # PN
    '(0009,"ACME PRIVATE",02)': b"ACMELOZQ",  # LO, creator unknown to pydicom
    "(0011,ABCD)": b"ODDGRPZQ^NAME",  # PN, no private creator for block AB
    "(0019,1010)": b"NOCREATORZQ",  # LO, no private creator at all
    "(0018,FFF1)": b"EVENZQ^UNKNOWN",  # a public group, a tag no dictionary knows
    '(0029,"SIEMENS CSA HEADER",09)': b"CSALOZQ",  # known creator, LO: may hold anything
}
SHOWN = {
    "Modality": "OT",
    '(0009,"ACME PRIVATE")': "ACME PRIVATE",  # the creator element itself
    '(0029,"SIEMENS CSA HEADER",08)': "IMAGE NUM 4",  # pydicom: CS
}


def _body() -> bytes:
    return (
        el(0x00090010, "LO", b"ACME PRIVATE")
        + el(0x00091001, "PN", b"PRIVZQ^PERSON")
        + el(0x00091002, "LO", b"ACMELOZQ")
        + el(0x0011ABCD, "PN", b"ODDGRPZQ^NAME")
        + el(0x0018FFF1, "LO", b"EVENZQ^UNKNOWN")
        + el(0x00191010, "LO", b"NOCREATORZQ")
        + el(0x00290010, "LO", b"SIEMENS CSA HEADER")
        + el(0x00291008, "CS", b"IMAGE NUM 4")
        + el(0x00291009, "LO", b"CSALOZQ")
    )


@pytest.fixture(scope="module", params=DB_KINDS)
def index(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """An index (by `indexer index`) of two built files with private person names."""
    tree = tmp_path_factory.mktemp("tree")
    for name in ("privacy-a", "privacy-b"):
        (tree / f"{name}.dcm").write_bytes(dicom_file(name, _body()))

    def build(url: str) -> str:
        done = run_cli(["index", str(tree), "--db", url, "-w", "1", "-q"])
        assert done.returncode == 0, done.stderr
        return url

    if request.param == "sqlite":
        yield build(f"sqlite:///{tmp_path_factory.mktemp('db')}/index.db")
        return
    with pg_database(request.getfixturevalue("pg_url")) as url:
        yield build(url)


def sql(url: str, query: str, *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    start = time.monotonic()
    done = run_cli(["sql", query, "--db", url, *args])
    return done, time.monotonic() - start


def refused(done: subprocess.CompletedProcess[str], code: int = 1) -> str:
    """The one error line of a command that ended cleanly with exit `code`."""
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    lines = [line for line in done.stderr.splitlines() if not line.startswith("warning:")]
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert "Traceback" not in done.stderr
    return lines[0]


# -- 1. time limit and size cap ----------------------------------------------------------------

ENDLESS = {
    "recursive_cte": "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) "
    "SELECT count(*) FROM r",
    "cross_join": "SELECT count(*) FROM elements a, elements b, elements c, elements d, "
    "elements e, elements f",
}


@pytest.mark.parametrize(
    "query", [*ENDLESS.values(), "SELECT pg_sleep(40)"], ids=[*ENDLESS, "pg_sleep"]
)
def test_sql_time_limit_stops_the_query(index: str, query: str) -> None:
    if "pg_sleep" in query and index.startswith("sqlite"):
        pytest.skip("pg_sleep is PostgreSQL's")
    done, seconds = sql(index, query, "--timeout", "2")
    line = refused(done, code=124)
    assert "time limit (2 s)" in line and "--timeout" in line
    assert seconds < 15, seconds  # ~2 s of query plus the start of the command


def test_sql_timeout_zero_and_default_let_a_query_finish(index: str) -> None:
    query = (
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 300000) "
        "SELECT count(*) AS n FROM r"
    )
    for args in ((), ("--timeout", "0")):
        done, _ = sql(index, query, "-f", "json", *args)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == [{"n": 300000}]


def test_sql_timeout_cannot_be_lifted_by_the_query(index: str) -> None:
    if index.startswith("sqlite"):
        pytest.skip("PostgreSQL's statement_timeout")
    for scope in ("true", "false"):
        query = f"SELECT set_config('statement_timeout', '0', {scope}), pg_sleep(8)"
        done, seconds = sql(index, query, "--timeout", "2")
        refused(done, code=124)
        assert seconds < 8


def test_sql_huge_value_ends_cleanly(index: str) -> None:
    """randomblob(1e9) took 43 s and 7.8 GB of memory to print as JSON (2 GB of output)."""
    if not index.startswith("sqlite"):
        pytest.skip("randomblob is SQLite's; PostgreSQL is bounded by the time limit only")
    for query in ("SELECT randomblob(1e9)", "SELECT length(randomblob(1e9))"):
        done, seconds = sql(index, query, "-f", "json")
        assert "larger than 64 MiB" in refused(done)
        assert seconds < 15
    done, _ = sql(index, "SELECT length(hex(randomblob(1e6))) AS n", "-f", "json")
    assert json.loads(done.stdout) == [{"n": 2_000_000}]


# -- 2. PostgreSQL: superuser warning, a role that can only read --------------------------------


def test_sql_warns_a_superuser_once(index: str) -> None:
    done, _ = sql(index, "SELECT count(*) AS n FROM files", "-f", "json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [{"n": 2}]
    warnings = [line for line in done.stderr.splitlines() if "superuser" in line]
    if index.startswith("sqlite"):
        assert done.stderr == ""
    else:
        assert len(warnings) == 1 and warnings[0].startswith("warning: "), done.stderr
        assert single_line(done.stderr)


def _readme_grants() -> list[str]:
    text = README.read_text()
    block = re.search(r"can only read the index.*?```sql\n(.*?)```", text, re.DOTALL)
    assert block, "README: no ```sql block of GRANTs after 'can only read the index'"
    return [s.strip() for s in block.group(1).split(";") if s.strip()]


@contextmanager
def reader_role(url: str) -> Iterator[str]:
    """The README's role made for real in the test database; yields a URL that logs in as it."""
    role, password = f"reader_{secrets.token_hex(4)}", secrets.token_hex(8)
    parsed = make_url(url)
    owner = parsed.username or "postgres"
    names = {"index_reader": role, "dicom_index": parsed.database or "", "index_owner": owner}
    engine = engine_for(url)
    try:
        with engine.begin() as conn:
            for statement in _readme_grants():
                statement = re.sub(
                    r"\b(index_reader|dicom_index|index_owner)\b",
                    lambda m: f'"{names[m.group(1)]}"',
                    statement,
                ).replace("'change-me'", f"'{password}'")
                conn.exec_driver_sql(statement)
        yield parsed.set(username=role, password=password).render_as_string(hide_password=False)
    finally:
        with engine.begin() as conn:
            if conn.exec_driver_sql(f"SELECT 1 FROM pg_roles WHERE rolname = '{role}'").first():
                conn.exec_driver_sql(f'DROP OWNED BY "{role}"')  # its grants, the database's too
                conn.exec_driver_sql(f'DROP ROLE "{role}"')
        engine.dispose()


@pytest.mark.postgres
def test_readme_read_only_role(tmp_path: Path, pg_url: str) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "a.dcm").write_bytes(dicom_file("role-a", _body()))
    with pg_database(pg_url) as url:
        assert run_cli(["index", str(tree), "--db", url, "-q", "-w", "1"]).returncode == 0
        with reader_role(url) as reader:
            done, _ = sql(reader, "SELECT count(*) AS n FROM files", "-f", "json")
            assert done.returncode == 0 and done.stderr == "", done.stderr
            assert json.loads(done.stdout) == [{"n": 1}]
            for command in (["stats"], ["tags"], ["find", "studies"]):
                done = run_cli([*command, "--db", reader])
                assert done.returncode == 0 and done.stderr == "", (command, done.stderr)
            owner = engine_for(url)
            with owner.connect() as other:  # a superuser's session the reader must not end
                pid = other.exec_driver_sql("SELECT pg_backend_pid()").scalar()
                for query in (
                    "SELECT pg_read_file('/etc/passwd')",
                    "SELECT lo_import('/etc/hostname')",
                    "SELECT pg_reload_conf()",
                    f"SELECT pg_terminate_backend({pid})",
                ):
                    line = refused(sql(reader, query)[0])
                    assert re.search("permission denied|must be a superuser|read-only", line), (
                        query,
                        line,
                    )
                assert other.exec_driver_sql("SELECT 1").scalar() == 1
            # A write outside `indexer sql`, on a connection of the role's own: refused too.
            engine = engine_for(reader)
            try:
                with (
                    pytest.raises(sa.exc.ProgrammingError, match="permission denied"),
                    engine.begin() as conn,
                ):
                    conn.exec_driver_sql("DELETE FROM files")
                # ALTER DEFAULT PRIVILEGES: a table the owner makes later (a migration) is readable.
                with owner.begin() as conn:
                    conn.exec_driver_sql("CREATE TABLE later_table (x integer)")
                owner.dispose()
                with engine.connect() as conn:
                    assert conn.exec_driver_sql("SELECT count(*) FROM later_table").scalar() == 0
            finally:
                engine.dispose()
                owner.dispose()


# -- 3. writes refused with their real cause ------------------------------------------------------

SQLITE_WRITES = [
    "PRAGMA journal_mode=DELETE",
    "PRAGMA main.journal_mode = DELETE",
    "PRAGMA user_version = 7",
    "PRAGMA application_id = 7",
    "PRAGMA query_only = OFF",
    "PRAGMA foreign_keys = ON",
    "PRAGMA wal_checkpoint(TRUNCATE)",
    "PRAGMA wal_checkpoint",
    "PRAGMA optimize",
    "PRAGMA incremental_vacuum",
    "PRAGMA writable_schema = ON",
    "WITH x AS (SELECT 1) INSERT INTO runs SELECT * FROM runs",
    "WITH x AS (SELECT 1) DELETE FROM files",
    "ATTACH DATABASE '{tmp}/other.db' AS other",
    "VACUUM INTO '{tmp}/copy.db'",
    "VACUUM",
    "REINDEX",
    "ANALYZE",
    "DETACH DATABASE main",
    "BEGIN IMMEDIATE",
    "SAVEPOINT s",
]
SQLITE_READS = [
    "PRAGMA journal_mode",
    "PRAGMA user_version",
    "PRAGMA table_info(files)",
    "PRAGMA index_list('paths')",
    "PRAGMA integrity_check",
    "SELECT count(*) FROM pragma_table_info('files')",
    "EXPLAIN QUERY PLAN SELECT * FROM files",
]


@pytest.mark.parametrize("statement", SQLITE_WRITES)
def test_sql_refuses_sqlite_writes_saying_so(index: str, statement: str, tmp_path: Path) -> None:
    if not index.startswith("sqlite"):
        pytest.skip("SQLite statements")
    done, _ = sql(index, statement.format(tmp=tmp_path))
    line = refused(done)
    assert "write" in line or "not a read" in line, line
    assert "disk I/O" not in line and "not authorized" not in line
    if statement.startswith("WITH"):
        assert statement.split()[5] in line, line  # the write the authorizer refused
    assert list(tmp_path.iterdir()) == []
    path = make_url(index).database
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert raw.execute("PRAGMA user_version").fetchone() == (0,)


@pytest.mark.parametrize("statement", SQLITE_READS)
def test_sql_still_runs_sqlite_reads(index: str, statement: str) -> None:
    if not index.startswith("sqlite"):
        pytest.skip("SQLite statements")
    done, _ = sql(index, statement)
    assert done.returncode == 0 and done.stderr == "", done.stderr


@pytest.mark.parametrize(
    "statement",
    ["SET statement_timeout = 0", "SELECT nextval('runs_id_seq')"],
)
def test_sql_refuses_postgresql_writes(index: str, statement: str) -> None:
    if index.startswith("sqlite"):
        pytest.skip("PostgreSQL statements")
    line = refused(sql(index, statement)[0])
    assert "not a read" in line or "read-only transaction" in line, line


# -- 4. an index in a folder that cannot be written -----------------------------------------------


@contextmanager
def read_only_folder(folder: Path, how: str) -> Iterator[Path]:
    """`folder` seen through a real read-only situation (root ignores file modes): a read-only
    bind mount, or the folder made immutable (chattr +i). Skips when this machine allows
    neither."""
    if how == "mount":
        view = folder.with_name(folder.name + "-ro")
        view.mkdir(exist_ok=True)
        done = subprocess.run(
            ["mount", "--bind", "-o", "ro", str(folder), str(view)], capture_output=True, text=True
        )
        if done.returncode != 0:
            pytest.skip(f"no read-only bind mount here: {done.stderr.strip()}")
        try:
            yield view
        finally:
            subprocess.run(["umount", str(view)], check=True)
            view.rmdir()
        return
    if shutil.which("chattr") is None:
        pytest.skip("no chattr here")
    done = subprocess.run(["chattr", "+i", str(folder)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"chattr +i does not work here: {done.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


@pytest.mark.parametrize("how", ["mount", "chattr"])
def test_read_only_folder_opens_the_index_read_only(how: str, tmp_path: Path) -> None:
    tree, folder = tmp_path / "tree", tmp_path / "idx"
    tree.mkdir()
    (tree / "a.dcm").write_bytes(dicom_file("ro-a", _body()))
    db = folder / "index.db"
    assert run_cli(["index", str(tree), "--db", str(db), "-q", "-w", "1"]).returncode == 0
    assert sorted(p.name for p in folder.iterdir()) == ["index.db"]  # WAL mode, closed cleanly
    with read_only_folder(folder, how) as view:
        seen = view / "index.db"
        for args in (["stats", "-f", "json"], ["tags"], ["sql", "SELECT count(*) FROM files"]):
            done = run_cli([*args, "--db", str(seen)])
            assert done.returncode == 0, done.stderr
            assert single_line(done.stderr), done.stderr
            assert done.stderr.startswith("warning: ") and "read-only" in done.stderr
        seen_stats = run_cli(["stats", "-f", "json", "--db", str(seen)]).stdout
        assert sorted(p.name for p in view.iterdir()) == ["index.db"]
    assert seen_stats == run_cli(["stats", "-f", "json", "--db", str(db)]).stdout


def test_read_only_folder_with_a_pending_wal(tmp_path: Path) -> None:
    """Changes still in the -wal: read through an existing -shm, else a clear refusal (the
    immutable mode would silently show the data without them)."""
    tree, folder = tmp_path / "tree", tmp_path / "idx"
    tree.mkdir()
    (tree / "a.dcm").write_bytes(dicom_file("wal-a", _body()))
    db = folder / "index.db"
    assert run_cli(["index", str(tree), "--db", str(db), "-q", "-w", "1"]).returncode == 0
    frozen = tmp_path / "frozen"
    frozen.mkdir()
    writer = sqlite3.connect(db)
    try:
        writer.execute("PRAGMA wal_autocheckpoint = 0")
        writer.execute("UPDATE runs SET host = 'walhost'")
        writer.commit()
        for suffix in ("", "-wal", "-shm"):
            shutil.copy(f"{db}{suffix}", frozen / f"index.db{suffix}")
    finally:
        writer.close()
    query = "SELECT DISTINCT host FROM runs"
    with read_only_folder(frozen, "mount") as view:
        done = run_cli(["sql", query, "-f", "csv", "--db", str(view / "index.db")])
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == ["host", "walhost"]
        assert single_line(done.stderr) and "read-only" in done.stderr
    (frozen / "index.db-shm").unlink()
    with read_only_folder(frozen, "mount") as view:
        done = run_cli(["sql", query, "--db", str(view / "index.db")])
        line = refused(done)
        assert "-wal" in line and "folder cannot be written" in line, line


# -- 5. tags hides person names wherever they are -------------------------------------------------


def _no_hidden_value(text: str) -> None:
    for key, value in HIDDEN.items():
        assert value.decode() not in text, f"the value of {key} is printed"
    assert "ZQ" not in text


def test_tags_hides_private_and_unknown_values(index: str) -> None:
    for output in ("table", "json", "csv"):
        done = run_cli(["tags", "--db", index, "-f", output])
        assert done.returncode == 0, done.stderr
        _no_hidden_value(done.stdout + done.stderr)
    rows = {
        r["tag"]: r
        for r in json.loads(run_cli(["tags", "--db", index, "-f", "json"]).stdout)["tags"]
    }
    for key in HIDDEN:
        assert rows[key]["values_hidden"] is True and rows[key]["top_values"] is None, key
    for key, value in SHOWN.items():
        found = rows.get(key) or next(r for r in rows.values() if r["keyword"] == key)
        assert found["values_hidden"] is False
        assert [v["value"] for v in found["top_values"]] == [value], key
    for key in HIDDEN:
        done = run_cli(["tags", "--db", index, "--tag", key, "-f", "json"])
        assert done.returncode == 0, done.stderr
        _no_hidden_value(done.stdout)
        assert json.loads(done.stdout)["values"] is None
        shown = run_cli(["tags", "--db", index, "--tag", key, "-f", "json", "--patient-values"])
        assert [v["value"] for v in json.loads(shown.stdout)["values"]] == [HIDDEN[key].decode()]


def test_find_and_stats_print_no_private_values(index: str) -> None:
    outputs = [run_cli(["stats", "--db", index, "-f", "json"])]
    outputs += [
        run_cli(["stats", "--db", index, "--by", by])
        for by in ("modality", "sop-class", "transfer-syntax", "manufacturer", "study-year")
    ]
    outputs += [
        run_cli(["find", level, "--db", index, "-f", "json"])
        for level in ("studies", "series", "instances")
    ]
    for done in outputs:
        assert done.returncode == 0, done.stderr
        _no_hidden_value(done.stdout + done.stderr)
