"""The alembic migrations shipped with the package agree with the models, on both databases.

Migrations are applied the way the installed indexer applies them (indexer.db,
which finds the scripts inside the package), and once the way a developer does
in a checkout (the `alembic` command with alembic.ini).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from helpers import engine_for, query, table_names, view_names

from indexer import db as indexer_db
from indexer.rows import plain_number
from indexer.schema import VIEWS, metadata

REPO_ROOT = Path(__file__).resolve().parent.parent


def _alembic(url: str, action: str, revision: str) -> None:
    engine = engine_for(url)
    try:
        with engine.begin() as conn:
            getattr(command, action)(indexer_db.alembic_config(conn), revision)
    finally:
        engine.dispose()


def _differences(url: str) -> list[Any]:
    engine = engine_for(url)
    try:
        with engine.connect() as conn:
            return list(compare_metadata(MigrationContext.configure(conn), metadata))
    finally:
        engine.dispose()


def _current(url: str) -> str | None:
    engine = engine_for(url)
    try:
        with engine.connect() as conn:
            return indexer_db.current_revision(conn)
    finally:
        engine.dispose()


def _revisions() -> list[str]:
    """Revision ids from the first to head."""
    script = ScriptDirectory.from_config(indexer_db.alembic_config())
    return [r.revision for r in reversed(list(script.walk_revisions()))]


def test_history_is_linear_with_one_head() -> None:
    script = ScriptDirectory.from_config(indexer_db.alembic_config())
    assert script.get_heads() == [indexer_db.head_revision()]
    for rev in script.walk_revisions():
        assert not isinstance(rev.down_revision, (tuple, list)), f"merge revision {rev.revision}"
    assert _revisions()[-1] == indexer_db.head_revision()


def test_migrations_ship_inside_the_package_layout() -> None:
    """The folder indexer.db migrates from has the environment and the versions."""
    folder = Path(indexer_db._migrations_dir())
    assert (folder / "env.py").is_file()
    assert list((folder / "versions").glob("*.py"))


def test_first_open_builds_the_models_schema(db_url: str) -> None:
    """What the first indexer command on a new database does (open_index) gives the models' schema."""
    indexer_db.open_index(db_url).dispose()
    assert _current(db_url) == indexer_db.head_revision()
    assert _differences(db_url) == []
    assert table_names(db_url) == set(metadata.tables) | {"alembic_version"}
    assert view_names(db_url) == set(VIEWS)


def test_every_revision_steps_up_and_down(db_url: str) -> None:
    """Stairway: each revision upgrades, downgrades to its parent and upgrades again; at the
    end, the schema is the models' schema."""
    previous: str = "base"
    for revision in _revisions():
        _alembic(db_url, "upgrade", revision)
        assert _current(db_url) == revision
        _alembic(db_url, "downgrade", previous)
        assert _current(db_url) == (None if previous == "base" else previous)
        if previous == "base":
            assert table_names(db_url) <= {
                "alembic_version"
            }  # the first revision drops all it made
        _alembic(db_url, "upgrade", revision)
        previous = revision
    assert _differences(db_url) == []


def test_names_follow_the_naming_convention(db_url: str) -> None:
    """Indexes, unique and foreign key constraints have the convention's names on both databases."""
    indexer_db.open_index(db_url).dispose()
    engine = engine_for(db_url)
    try:
        with engine.connect() as conn:
            insp = sa.inspect(conn)
            for table in metadata.sorted_tables:
                want_ix = {ix.name for ix in table.indexes}
                want_uq = {c.name for c in table.constraints if isinstance(c, sa.UniqueConstraint)}
                want_fk = {c.name for c in table.foreign_key_constraints}
                # PostgreSQL also lists the index behind each unique constraint
                got_ix = {
                    ix["name"]
                    for ix in insp.get_indexes(table.name)
                    if "duplicates_constraint" not in ix
                }
                got_uq = {uq["name"] for uq in insp.get_unique_constraints(table.name)}
                got_fk = {fk["name"] for fk in insp.get_foreign_keys(table.name)}
                assert (got_ix, got_uq, got_fk) == (want_ix, want_uq, want_fk), table.name
                if conn.dialect.name == "postgresql":
                    assert insp.get_pk_constraint(table.name)["name"] == f"pk_{table.name}"
    finally:
        engine.dispose()


def test_alembic_command_in_a_checkout_uses_the_same_migrations(tmp_path: Path) -> None:
    """`alembic upgrade head` with alembic.ini and INDEXER_DB gives the same schema (the wiring
    of alembic.ini and env.py; SQLite only, the schema itself is checked on both above)."""
    db_url = f"sqlite:///{tmp_path / 'index.db'}"
    alembic_bin = Path(sys.executable).with_name("alembic")
    args = [str(alembic_bin)] if alembic_bin.exists() else [sys.executable, "-m", "alembic"]
    env = dict(os.environ, INDEXER_DB=db_url)
    proc = subprocess.run(
        [*args, "-c", str(REPO_ROOT / "alembic.ini"), "upgrade", "head"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert _current(db_url) == indexer_db.head_revision()
    assert _differences(db_url) == []


def test_concurrent_first_commands_create_the_schema_once(db_url: str) -> None:
    """Several indexer commands starting on a new database at once: all succeed, one schema."""
    indexer = Path(sys.executable).with_name("indexer")
    env = {k: v for k, v in os.environ.items() if k != "INDEXER_DB"}
    procs = [
        subprocess.Popen(
            [str(indexer), "db", "upgrade", "--db", db_url],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = [(p.wait(timeout=120), p.communicate()[1]) for p in procs]
    assert [code for code, _ in results] == [0] * len(procs), results
    assert _current(db_url) == indexer_db.head_revision()
    assert _differences(db_url) == []


# Stored InstanceNumber / SeriesNumber texts of a 0004 index and what 0005 makes of them: the
# writer's rule (rows.plain_number).
_NUMBER_TEXTS = ["1", "2", "10", " 7 ", "+3", "-4", "007", "0", "1.0", "abc", "1\\2", "", None,
                 "99999999999", "2147483647", "2147483648", "-2147483648", "1e3", "+", "3 4"]  # fmt: skip


def test_upgrade_from_0004_turns_numbers_into_integers(db_url: str) -> None:
    """An index written by 0004 (numbers as text) upgrades: plain integers keep their number,
    anything else is NULL, as the writer now stores them; the views are there."""
    _alembic(db_url, "upgrade", "0004_hierarchy")
    engine = engine_for(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                sa.text("INSERT INTO patients (id, patient_id, issuer) VALUES (1, 'p', '')")
            )
            conn.execute(
                sa.text("INSERT INTO studies (id, study_uid, patient_ref) VALUES (1, 's', 1)")
            )
            for i, text in enumerate(_NUMBER_TEXTS, start=1):
                conn.execute(
                    sa.text(
                        "INSERT INTO series (id, series_uid, study_ref, series_number) "
                        "VALUES (:i, :uid, 1, :text)"
                    ),
                    {"i": i, "uid": f"se{i}", "text": text},
                )
                conn.execute(
                    sa.text(
                        "INSERT INTO files (id, path, size, mtime_ns, status, first_run, "
                        "last_run) VALUES (:i, :path, 1, 1, 'indexed', 1, 1)"
                    ),
                    {"i": i, "path": f"/f{i}"},
                )
                conn.execute(
                    sa.text(
                        "INSERT INTO instances (file_id, series_ref, instance_number, "
                        "element_count) VALUES (:i, :i, :text, 0)"
                    ),
                    {"i": i, "text": text},
                )
    finally:
        engine.dispose()
    _alembic(db_url, "upgrade", "head")
    assert _differences(db_url) == []
    expected = [plain_number(t) for t in _NUMBER_TEXTS]
    got = query(db_url, "SELECT series_number FROM series ORDER BY id")
    assert [r[0] for r in got] == expected
    got = query(db_url, "SELECT instance_number FROM instances ORDER BY file_id")
    assert [r[0] for r in got] == expected
    got = query(db_url, "SELECT series_number, instance_number, path FROM instance_details")
    assert sorted(got, key=lambda r: int(r[2][2:])) == [
        (n, n, f"/f{i}") for i, n in enumerate(expected, start=1)
    ]
    # ...and back: the numbers as text again, the views gone.
    _alembic(db_url, "downgrade", "0004_hierarchy")
    got = query(db_url, "SELECT instance_number FROM instances ORDER BY file_id")
    assert [r[0] for r in got] == [None if n is None else str(n) for n in expected]
    assert view_names(db_url) == set()
    _alembic(db_url, "upgrade", "head")
    assert view_names(db_url) == set(VIEWS)
