"""indexer.db: where the index is, how it is created, and what happens at an older schema.

An index "at an older schema" is made in two ways: stopped at each earlier
revision of the shipped migrations, and the way it happens to users: the
database was created by this indexer, and a newer release (one more migration)
opens it. The newer release is simulated by pointing indexer.db at a copy of the
shipped migrations with one extra revision.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from helpers import engine_for, query, single_line, table_names
from typer.testing import CliRunner, Result

from indexer import db as indexer_db
from indexer.cli import app
from indexer.errors import DatabaseError
from indexer.schema import metadata

NEXT_REVISION = "9001_test_next_release"
_NEXT_MIGRATION = '''"""a later release's migration (tests only)"""
import sqlalchemy as sa
from alembic import op

revision = "{revision}"
down_revision = "{down}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("next_release", sa.Column("id", sa.Integer(), primary_key=True))


def downgrade() -> None:
    op.drop_table("next_release")
'''


def _revision(url: str) -> str | None:
    engine = engine_for(url)
    try:
        with engine.connect() as conn:
            return indexer_db.current_revision(conn)
    finally:
        engine.dispose()


def _invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args), env={"INDEXER_DB": None})
    return result.exit_code, result.stdout, result.stderr + _uncaught(result)


def _uncaught(result: Result) -> str:
    """What the real process would print for an exception that escaped the command."""
    exc = result.exception
    if exc is None or isinstance(exc, SystemExit):
        return ""
    return f"Traceback (most recent call last):\n{type(exc).__name__}: {exc}\n"


# -- resolve_url --------------------------------------------------------------------------------


def test_resolve_url_forms(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("INDEXER_DB", raising=False)
    assert indexer_db.resolve_url(None) == f"sqlite:///{tmp_path / 'dicom-index.db'}"
    assert indexer_db.resolve_url("") == f"sqlite:///{tmp_path / 'dicom-index.db'}"
    assert indexer_db.resolve_url("sub/my.db") == f"sqlite:///{tmp_path / 'sub' / 'my.db'}"
    assert indexer_db.resolve_url("/abs/x.db") == "sqlite:////abs/x.db"
    assert indexer_db.resolve_url("sqlite:////abs/x.db") == "sqlite:////abs/x.db"
    assert indexer_db.resolve_url("postgresql://u@h/d") == "postgresql+psycopg://u@h/d"
    assert indexer_db.resolve_url("postgres://u@h:5433/d") == "postgresql+psycopg://u@h:5433/d"
    assert indexer_db.resolve_url("postgresql+psycopg://u@h/d") == "postgresql+psycopg://u@h/d"
    monkeypatch.setenv("INDEXER_DB", "from-env.db")
    assert indexer_db.resolve_url(None) == f"sqlite:///{tmp_path / 'from-env.db'}"
    assert indexer_db.resolve_url("given.db") == f"sqlite:///{tmp_path / 'given.db'}"  # --db wins


def test_describe_url_hides_the_password() -> None:
    shown = indexer_db.describe_url("postgresql+psycopg://user:s3cret@host/db")
    assert "s3cret" not in shown and "user" in shown and "host/db" in shown


# -- creating -------------------------------------------------------------------------------------


def test_open_index_creates_the_schema_at_head(db_url: str) -> None:
    assert table_names(db_url) == set()
    indexer_db.open_index(db_url).dispose()
    assert _revision(db_url) == indexer_db.head_revision()
    assert set(metadata.tables) <= table_names(db_url)
    indexer_db.open_index(db_url).dispose()  # opening again changes nothing
    assert _revision(db_url) == indexer_db.head_revision()


def test_sqlite_file_and_its_wal_and_shm_are_private(tmp_path: Path) -> None:
    path = tmp_path / "private" / "index.db"
    old = os.umask(0)  # even a permissive umask must not open the index to others
    try:
        engine = indexer_db.open_index(str(path))
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT COUNT(*) FROM files")).all()
            modes = {
                suffix: stat.S_IMODE(os.stat(f"{path}{suffix}").st_mode)
                for suffix in ("", "-wal", "-shm")
                if os.path.exists(f"{path}{suffix}")
            }
        engine.dispose()
    finally:
        os.umask(old)
    assert modes == {"": 0o600, "-wal": 0o600, "-shm": 0o600}


def test_read_commands_do_not_create_an_index(tmp_path: Path) -> None:
    path = tmp_path / "absent.db"
    with pytest.raises(DatabaseError, match="indexer index"):
        indexer_db.open_index(str(path), create=False)
    assert not path.exists()
    code, _out, err = _invoke("stats", "--db", str(path))
    assert code == 1 and single_line(err) and "Traceback" not in err
    assert not path.exists()


def test_empty_database_is_no_index(db_url: str) -> None:
    if db_url.startswith("sqlite"):
        Path(db_url.removeprefix("sqlite:///")).write_bytes(b"")  # say, a file made by `touch`
    with pytest.raises(DatabaseError, match="indexer index"):
        indexer_db.open_index(db_url, create=False)
    assert table_names(db_url) == set()
    code, _out, err = _invoke("stats", "--db", db_url)
    assert code == 1 and single_line(err) and "indexer index" in err


def test_foreign_database_is_left_alone(db_url: str) -> None:
    engine = engine_for(db_url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE someone_elses (id INTEGER PRIMARY KEY)"))
    engine.dispose()
    with pytest.raises(DatabaseError, match="no indexer schema"):
        indexer_db.open_index(db_url)
    assert table_names(db_url) == {"someone_elses"}
    code, _, err = _invoke(
        "index", str(Path(__file__).parent / "data"), "--db", db_url, "-q", "-w", "2"
    )
    assert code == 1 and single_line(err) and "Traceback" not in err
    assert table_names(db_url) == {"someone_elses"}


# -- an index at an older schema --------------------------------------------------------------------


@pytest.fixture
def next_release(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Make indexer.db migrate with the shipped migrations plus one later revision."""
    shipped = indexer_db._migrations_dir()
    head = indexer_db.head_revision()
    copy = tmp_path / "next_migrations"
    shutil.copytree(shipped, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "versions" / f"{NEXT_REVISION}.py").write_text(
        _NEXT_MIGRATION.format(revision=NEXT_REVISION, down=head)
    )
    monkeypatch.setattr(indexer_db, "_migrations_dir", lambda: str(copy))
    monkeypatch.setattr(indexer_db, "HEAD_REVISION", NEXT_REVISION)  # the release's own constant
    assert indexer_db.head_revision() == NEXT_REVISION
    yield head


def _index_at_current_head(url: str) -> None:
    indexer_db.open_index(url).dispose()


def test_read_commands_ask_for_db_upgrade(db_url: str, request: pytest.FixtureRequest) -> None:
    _index_at_current_head(db_url)
    old_head = request.getfixturevalue("next_release")
    assert _revision(db_url) == old_head
    with pytest.raises(DatabaseError, match=r"run `indexer db upgrade`"):
        indexer_db.open_index(db_url, create=False)
    code, out, err = _invoke("stats", "--db", db_url)
    assert (
        code == 1
        and single_line(err)
        and "run `indexer db upgrade`" in err
        and "Traceback" not in err
    )
    assert _revision(db_url) == old_head  # a read command never migrates
    code, out, err = _invoke("db", "current", "--db", db_url)
    assert code == 0 and old_head in out and NEXT_REVISION in out
    code, out, err = _invoke("db", "upgrade", "--db", db_url)
    assert code == 0, err
    assert _revision(db_url) == NEXT_REVISION and "next_release" in table_names(db_url)
    code, out, err = _invoke("stats", "--db", db_url)
    assert code == 0, err


def _older_revisions() -> list[str]:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(indexer_db.alembic_config())
    return [r.revision for r in script.walk_revisions() if r.revision != script.get_current_head()]


@pytest.mark.parametrize("revision", _older_revisions())
def test_real_older_revision_asks_for_db_upgrade(db_url: str, revision: str) -> None:
    """The shipped migrations themselves: an index left at an earlier revision."""
    from alembic import command

    engine = engine_for(db_url)
    with engine.begin() as conn:
        command.upgrade(indexer_db.alembic_config(conn), revision)
    engine.dispose()
    assert _revision(db_url) == revision
    code, _out, err = _invoke("stats", "--db", db_url)
    assert code == 1 and single_line(err) and "run `indexer db upgrade`" in err, err
    code, _out, err = _invoke("db", "upgrade", "--db", db_url)
    assert code == 0, err
    assert _revision(db_url) == indexer_db.head_revision()
    code, _out, err = _invoke("stats", "--db", db_url)
    assert code == 0, err


def test_index_upgrades_an_older_index_itself(
    db_url: str, request: pytest.FixtureRequest, sample_dir: Path
) -> None:
    _index_at_current_head(db_url)
    request.getfixturevalue("next_release")
    code, _out, err = _invoke("index", str(sample_dir), "--db", db_url, "-q", "-w", "2")
    assert code == 0, err
    assert _revision(db_url) == NEXT_REVISION
    assert query(db_url, "SELECT COUNT(*) FROM files")[0][0] > 0


def test_index_from_a_newer_release_is_refused_cleanly(db_url: str, sample_dir: Path) -> None:
    """An index whose schema revision this indexer does not know (made by a newer release)."""
    _index_at_current_head(db_url)
    engine = engine_for(db_url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = 'ffffffffffff'"))
    engine.dispose()
    for args in (["index", str(sample_dir), "-q", "-w", "2"], ["stats"], ["db", "upgrade"]):
        code, _out, err = _invoke(*args, "--db", db_url)
        assert code == 1 and single_line(err) and "Traceback" not in err, (args, err)
        # Upgrading cannot help: the advice must not be `indexer db upgrade`.
        assert "run `indexer db upgrade`" not in err, (args, err)
    assert _revision(db_url) == "ffffffffffff"


def test_sqlite_location_that_cannot_be_created(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    for db in (str(blocker / "sub" / "index.db"), str(tmp_path)):  # below a file; a folder
        code, _out, err = _invoke(
            "index", str(Path(__file__).parent / "data"), "--db", db, "-q", "-w", "2"
        )
        assert code == 1 and single_line(err) and "Traceback" not in err, (db, err)


def test_first_run_killed_during_schema_creation_recovers(db_url: str, sample_dir: Path) -> None:
    """Schema creation is one transaction: a kill in the middle leaves an empty database, not half a schema."""
    code = (
        "import os, signal, sys\n"
        "from alembic.operations import Operations\n"
        "from indexer import db\n"
        "real = Operations.create_table\n"
        "count = 0\n"
        "def create_table(self, *a, **k):\n"
        "    global count\n"
        "    count += 1\n"
        "    if count == 3:\n"
        "        os.kill(os.getpid(), signal.SIGKILL)  # the third table: half the schema exists\n"
        "    return real(self, *a, **k)\n"
        "Operations.create_table = create_table\n"
        "db.open_index(sys.argv[1])\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, db_url],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == -9, proc.stderr
    assert table_names(db_url) <= {"alembic_version"}
    code_, _out, err = _invoke("index", str(sample_dir), "--db", db_url, "-q", "-w", "2")
    assert code_ == 0, err
    assert _revision(db_url) == indexer_db.head_revision()
