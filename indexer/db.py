"""Opening the index: URL resolution, SQLite settings, file permissions and migrations."""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import ArgumentError, OperationalError, SQLAlchemyError

from .backends import require_driver
from .errors import DatabaseError

_T = TypeVar("_T")
_log = logging.getLogger("indexer")  # the CLI prints its warnings on stderr, once each

DEFAULT_DB = "dicom-index.db"
ENV_VAR = "INDEXER_DB"
_PG_MIGRATION_LOCK = 7_301_920_441  # advisory lock key: one schema change at a time on a server


def resolve_url(db: str | None) -> str:
    """Return a SQLAlchemy URL for `db`, `$INDEXER_DB` or the default SQLite file.

    A value without ``://`` is a path to a SQLite file (``~`` is the home folder, also when
    it comes quoted from $INDEXER_DB). Other schemes than sqlite and postgresql are refused
    with DatabaseError, before any driver is looked for.
    """
    value = db or os.environ.get(ENV_VAR) or DEFAULT_DB
    if "://" not in value:
        return "sqlite:///" + os.path.abspath(os.path.expanduser(value))
    scheme = value.split("://", 1)[0].lower()
    if scheme in ("postgresql", "postgres"):
        return "postgresql+psycopg://" + value.split("://", 1)[1]
    if scheme.split("+", 1)[0] not in ("sqlite", "postgresql"):
        raise DatabaseError(
            f"unsupported database {scheme.split('+', 1)[0]!r}: the index is a SQLite file "
            "(a path) or a PostgreSQL database (postgresql://user@host/name)"
        )
    return value


def describe_url(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<invalid database URL>"


def _sqlite_path(url: str) -> str | None:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    database = parsed.database or ""
    return None if database in ("", ":memory:") else database


def _create_private_file(path: str) -> None:
    """Create the SQLite file readable by its owner only (its WAL and SHM files inherit it)."""
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return
    except OSError as err:
        raise DatabaseError(f"cannot create the index file {path}: {err.strerror or err}") from None
    os.close(fd)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout=60000")
    # Switching a new database to WAL needs it to itself for a moment; SQLite answers "locked"
    # at once, without waiting, when another process is opening it at the same instant.
    deadline = time.monotonic() + 60
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            break
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)
    # WAL + NORMAL: never corrupt; a power cut may lose the batches committed since the last
    # checkpoint, which the next run writes again.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA cache_size=-65536")  # 64 MiB
    # Checkpoint every 64 MiB of WAL instead of every 4 MiB: an index batch writes a few MiB,
    # and the hierarchy and index pages it rewrites each time are then copied back once per
    # dozen batches instead of after every one.
    cursor.execute("PRAGMA wal_autocheckpoint=16384")
    cursor.execute("PRAGMA journal_size_limit=67108864")  # the WAL file shrinks back to 64 MiB
    cursor.close()


def _read_only_mode(path: str) -> str:
    """The URI parameters that open an existing SQLite index for reading.

    A reader of a WAL-mode database needs its -shm file, and creates it when it is missing;
    in a folder that cannot be written (a read-only mount, a snapshot) that fails with
    "unable to open database file". There, a database whose -wal is empty or absent is
    whole in its main file and is opened `immutable` (no -shm needed); one with a non-empty
    -wal can only be read through an existing -shm, so it stays `mode=ro` (an error then
    says what to do).
    """
    folder = os.path.dirname(path) or "."
    if os.access(folder, os.W_OK):
        return "mode=ro"
    try:
        pending = os.path.getsize(path + "-wal") > 0
    except OSError:
        pending = False
    if pending:
        if not os.path.exists(path + "-shm"):
            raise DatabaseError(
                f"the index at {path} has changes in its -wal file, and its folder cannot be "
                "written, so SQLite cannot read them: open it where the folder is writable"
            )
        _log.warning("the folder of %s cannot be written: the index is opened read-only", path)
        return "mode=ro"
    _log.warning(
        "the folder of %s cannot be written: the index is opened read-only and immutable "
        "(changes made meanwhile by another writer are not seen)",
        path,
    )
    return "mode=ro&immutable=1"


def make_engine(url: str, *, read_only: bool = False) -> Engine:
    """Create an engine for the index. SQLite files are created mode 0600 and opened in WAL mode.

    Raises DatabaseError for a malformed URL or an unknown driver.
    """
    require_driver(url)
    try:
        sqlite_file = _sqlite_path(url)
        if sqlite_file is not None:
            if read_only:
                if not os.path.exists(sqlite_file):
                    raise DatabaseError(f"no index at {sqlite_file}; run `indexer index` first")
                uri = f"file:{quote(sqlite_file)}?{_read_only_mode(sqlite_file)}"
                engine = create_engine(
                    url,
                    creator=lambda: sqlite3.connect(
                        uri, uri=True, timeout=60, check_same_thread=False
                    ),
                )  # the path quoted for SQLite itself: `?` or `#` in a folder name stays a name;
                # any thread may use a pooled connection (the server's), one at a time
            else:
                _create_private_file(sqlite_file)
                engine = create_engine(url, connect_args={"timeout": 60})
                event.listen(engine, "connect", _sqlite_pragmas)
            return engine
        return create_engine(url, pool_pre_ping=True)
    except (ArgumentError, ImportError) as err:
        raise DatabaseError(f"cannot use database URL {describe_url(url)}: {err}") from None


def _migrations_dir() -> str:
    installed = Path(__file__).resolve().parent / "_migrations"  # where the wheel puts them
    if (installed / "env.py").is_file():
        return str(installed)
    # A source checkout or an editable install: the folder beside the package.
    return str(Path(__file__).resolve().parent.parent / "migrations")


def alembic_config(connection: Connection | None = None) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", _migrations_dir())
    config.attributes["connection"] = connection
    return config


# The newest migration. Read commands compare the database with it on every start, and
# loading alembic's script directory for that would cost a second; tests/test_db.py checks
# that it names the head of migrations/versions.
HEAD_REVISION = "0007_search_indexes"


def head_revision() -> str:
    return HEAD_REVISION


def known_revisions() -> set[str]:
    from alembic.script import ScriptDirectory

    return {
        script.revision for script in ScriptDirectory.from_config(alembic_config()).walk_revisions()
    }


def current_revision(connection: Connection) -> str | None:
    """The schema revision stamped in the database, or None (read directly: importing alembic
    would cost more than the query)."""
    if not inspect(connection).has_table("alembic_version"):
        return None
    versions = [
        row[0] for row in connection.exec_driver_sql("SELECT version_num FROM alembic_version")
    ]
    return versions[0] if len(versions) == 1 else None


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply migrations up to `revision` in one transaction, one migrator at a time.

    On SQLite the DDL runs inside an explicit BEGIN IMMEDIATE (the driver would otherwise
    commit each CREATE TABLE on its own), so a run killed while creating the schema
    leaves an empty database, not half a schema.
    """
    from alembic import command

    if engine.dialect.name == "sqlite":
        engine = create_engine(engine.url, connect_args={"isolation_level": None, "timeout": 60})
        event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
    try:
        with engine.begin() as connection:
            ddl_lock(connection)
            command.upgrade(alembic_config(connection), revision)
    finally:
        if engine.dialect.name == "sqlite":
            engine.dispose()


def ddl_lock(connection: Connection) -> None:
    """Serialise schema changes (migrations, the path index) across processes until the
    transaction ends: a PostgreSQL advisory lock. SQLite's write lock does it by itself."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})


def open_index(db: str | None, *, create: bool = True, migrate: bool = True) -> Engine:
    """Open the index named by `db` (see resolve_url), creating or upgrading its schema.

    A new, empty database is always brought to the current schema. An existing one
    at an older schema is upgraded when `migrate` is true; otherwise DatabaseError
    tells the user to run ``indexer db upgrade``.
    """
    url = resolve_url(db)
    engine = make_engine(url, read_only=not create)
    head = head_revision()
    try:
        with engine.connect() as connection:
            # Tables first, then the version: a first command creating the schema meanwhile
            # commits both at once, so this order never sees its tables without its version.
            empty = not inspect(connection).get_table_names()
            current = current_revision(connection)
    except OperationalError as err:
        raise DatabaseError(
            f"cannot open the index at {describe_url(url)}: {first_line(err)}"
        ) from None
    except SQLAlchemyError as err:
        raise DatabaseError(
            f"cannot open the index at {describe_url(url)}: {first_line(err)}"
        ) from None
    if current == head:
        return engine
    if current is not None and current not in known_revisions():
        raise DatabaseError(
            f"the index at {describe_url(url)} has schema {current}, newer than this "
            f"indexer knows ({head}): upgrade dicom-indexer"
        )
    if current is None and not empty:
        raise DatabaseError(
            f"{describe_url(url)} holds tables but no indexer schema version; "
            "point --db at an empty database or an index"
        )
    if not create:
        if current is None:
            raise DatabaseError(f"no index at {describe_url(url)}; run `indexer index` first")
        raise DatabaseError(
            f"the index at {describe_url(url)} has an older schema ({current}); "
            "run `indexer db upgrade`"
        )
    if current is not None and not migrate:
        raise DatabaseError(
            f"the index at {describe_url(url)} has an older schema ({current}); "
            "run `indexer db upgrade`"
        )
    try:
        upgrade(engine)
    except SQLAlchemyError as err:
        raise DatabaseError(
            f"cannot create the schema in {describe_url(url)}: {first_line(err)}"
        ) from None
    return engine


@contextmanager
def connect(db: str | None, *, write: bool = False) -> Iterator[Connection]:
    """A connection to an existing index, read-only unless `write`."""
    engine = open_index(db, create=write)
    try:
        with engine.connect() as connection:
            yield connection
    finally:
        engine.dispose()


def first_line(err: Exception) -> str:
    """The first line of a database error, without SQLAlchemy's background link."""
    if (
        getattr(err, "connection_invalidated", False)
        or type(err).__name__ == "PendingRollbackError"
    ):
        return (
            "lost the connection to the database server; what was written is kept: "
            "run the same command again"
        )
    text_ = str(getattr(err, "orig", None) or err).split("(Background on this error at:")[0]
    return text_.strip().splitlines()[0] if text_.strip() else type(err).__name__


def chunks(items: Sequence[_T], size: int) -> Iterator[list[_T]]:
    """`items` in lists of at most `size`: statements over many ids stay within the
    databases' parameter limits."""
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def marks(conn: Connection, n: int) -> str:
    """`n` parameter placeholders in the driver's own style."""
    mark = "%s" if conn.dialect.paramstyle in ("format", "pyformat") else "?"
    return ", ".join([mark] * n)


def fetch_in(conn: Connection, head: str, values: Sequence[Any], tail: str = "") -> list[Any]:
    """Rows of `head` IN `values` `tail` as plain tuples, by the driver's own cursor.

    For the hot look-ups (a batch's rows read back, every crawled path compared with the
    index): SQLAlchemy's rows and statement compilation would double their cost.
    PostgreSQL gets the values as one array.
    """
    dbapi = conn.connection.dbapi_connection
    assert dbapi is not None
    cursor = dbapi.cursor()
    try:
        if conn.dialect.name == "postgresql":
            cursor.execute(f"{head} = ANY(%s) {tail}", (list(values),))
        else:
            cursor.execute(f"{head} IN ({marks(conn, len(values))}) {tail}", tuple(values))
        return list(cursor.fetchall())
    finally:
        cursor.close()
