"""Dialect decision: every transaction of an engine made read-only (the DICOMweb server's).

SQLite indexes are opened with ``mode=ro`` by db.open_index(create=False) already; each
connection also gets ``PRAGMA query_only``. PostgreSQL sessions get
``SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY``, so every transaction they begin
refuses writes, whatever statement a bug might send.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, event


def make_read_only(engine: Engine) -> Engine:
    """`engine`, with every new connection set to refuse writes (see the module docstring)."""
    statement = (
        "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY"
        if engine.dialect.name == "postgresql"
        else "PRAGMA query_only = ON"
    )

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(statement)
        cursor.close()
        if engine.dialect.name == "postgresql":
            dbapi_connection.commit()  # psycopg began a transaction for the SET

    event.listen(engine, "connect", on_connect)
    engine.dispose()  # connections opened before (the schema check) had no such setting
    return engine
