"""A worker that writes its own chunks (PostgreSQL `--writers N`).

Each chunk of files is read, walked and written in one transaction on the worker's own
connection, so the write rate grows with the workers. The chunk is idempotent: files are
upserted by path and their old rows replaced, so a chunk done again (its worker died before
it reported) writes the same rows. The summary counters go to the delta tables, which no
writer waits on; the run's main process merges them (summaries.merge_pending).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from .. import backends
from ..db import describe_url, first_line, make_engine
from ..errors import DatabaseError
from ..worker import Task, process_chunk
from ..writer.batch import BatchReport, BatchWriter


@dataclass
class _ProcessWriter:
    """This process's connection and writer for one run."""

    url: str
    run_id: int
    engine: Engine
    writer: BatchWriter


_current: list[_ProcessWriter] = []  # at most one: the run this process last wrote for


def _writer_for(url: str, run_id: int) -> BatchWriter:
    if _current and (_current[0].url, _current[0].run_id) == (url, run_id):
        return _current[0].writer
    close_writer()
    engine = make_engine(url)  # the run's main process has opened and migrated the index
    backend = backends.for_url(url, chunk_writer=True)
    writer = BatchWriter(engine, backend, run_id, deferred_summaries=True)
    _current.append(_ProcessWriter(url, run_id, engine, writer))
    return writer


def close_writer() -> None:
    """Release this process's connection (a new run, or the end of a Dask worker's task)."""
    while _current:
        done = _current.pop()
        with contextlib.suppress(SQLAlchemyError):  # the connection failed: dispose lets go
            done.writer.close()
        done.engine.dispose()


def write_chunk(tasks: list[Task], url: str, run_id: int) -> BatchReport:
    """Read, walk and write `tasks` into the index at `url` for run `run_id`, in one
    transaction; returns what it wrote (counted once committed).

    Raises DatabaseError (one line, no value) when the database fails; a bad file never raises.
    """
    outcomes = process_chunk(tasks)
    try:
        return _writer_for(url, run_id).write(outcomes, (), ())
    except SQLAlchemyError as err:
        close_writer()  # a later chunk starts on a new connection
        raise DatabaseError(f"database error on {describe_url(url)}: {first_line(err)}") from None
