"""The database kind of an index, decided once: `for_url` picks the backend.

Everything that differs between SQLite and PostgreSQL (how element rows travel from
the workers and are inserted, upserts that return ids, statistics) is a method of the
backend object. The worker-side halves (`sqlite_rows`, `copy_rows`) import no
SQLAlchemy, so this package's own import stays light too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import DatabaseError

if TYPE_CHECKING:
    from .base import Backend

INSTALL_POSTGRESQL = "pip install 'dicom-indexer[postgresql]'"


def is_postgresql(url: str) -> bool:
    return url.split(":", 1)[0].split("+", 1)[0] in ("postgresql", "postgres")


def require_driver(url: str) -> None:
    """Raise DatabaseError, saying what to install, for a PostgreSQL URL without psycopg."""
    if not is_postgresql(url):
        return
    try:
        import psycopg  # noqa: F401
    except ImportError:
        raise DatabaseError(f"PostgreSQL support is not installed: {INSTALL_POSTGRESQL}") from None


def for_url(url: str, *, chunk_writer: bool = False) -> Backend:
    """The backend of the (resolved) database URL `url`: a new one for each index run.

    `chunk_writer`: for one of several processes writing chunks side by side, which leave
    the planner's statistics to the run's main process (concurrent ANALYZEs queue up)."""
    if is_postgresql(url):
        require_driver(url)
        from .postgresql import PostgreSQLBackend

        return PostgreSQLBackend(refresh_statistics=not chunk_writer)
    from .sqlite import SQLiteBackend

    return SQLiteBackend()
