"""The runs table: a run starts, and ends completed, interrupted or failed."""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Sequence

from sqlalchemy import Connection, Engine, insert, select, update

from ..backends.scratch import pid_alive
from ..schema import runs

_ZERO_COUNTS = (
    "files_seen",
    "files_indexed",
    "files_unchanged",
    "files_failed",
    "files_skipped",
    "files_missing",
    "elements_written",
)


def start_run(engine: Engine, roots: Sequence[str], options: dict[str, object]) -> int:
    """Record a new run (and close runs of this host whose process is gone); return its id."""
    host = socket.gethostname()
    with engine.begin() as conn:
        stale = conn.execute(
            select(runs.c.id, runs.c.pid).where(runs.c.outcome == "running", runs.c.host == host)
        ).all()
        dead = [run_id for run_id, pid in stale if not pid_alive(pid)]
        if dead:
            conn.execute(update(runs).where(runs.c.id.in_(dead)).values(outcome="interrupted"))
        row: dict[str, object] = {
            "started_at": time.time(),
            "roots": json.dumps(list(roots)),
            "options": json.dumps(options, sort_keys=True),
            "host": host,
            "pid": os.getpid(),
            "outcome": "running",
            **dict.fromkeys(_ZERO_COUNTS, 0),
        }
        return int(conn.execute(insert(runs).returning(runs.c.id), row).scalar_one())


def finish_run(engine: Engine, run_id: int, outcome: str, counts: dict[str, int]) -> None:
    with engine.begin() as conn:
        conn.execute(
            update(runs)
            .where(runs.c.id == run_id)
            .values(outcome=outcome, finished_at=time.time(), **counts)
        )


def record_counts(conn: Connection, run_id: int, counts: dict[str, int]) -> None:
    """The run's counts so far, after each batch: a run killed later keeps what it committed."""
    with conn.begin():
        conn.execute(update(runs).where(runs.c.id == run_id).values(**counts))
