"""Alembic environment: used by the installed package (indexer.db.upgrade) and by `alembic` in a checkout."""

from __future__ import annotations

from alembic import context
from sqlalchemy import engine_from_config, pool

from indexer.schema import metadata

config = context.config
target_metadata = metadata


def _run(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=True,  # SQLite can only alter tables by copying them
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    from indexer.db import resolve_url

    section = config.get_section(config.config_ini_section) or {}
    section["sqlalchemy.url"] = resolve_url(section.get("sqlalchemy.url") or None)
    engine = engine_from_config(section, prefix="sqlalchemy.", poolclass=pool.NullPool)
    with engine.connect() as conn:
        _run(conn)
