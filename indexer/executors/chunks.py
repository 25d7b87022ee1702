"""A worker that writes its own chunks (PostgreSQL `--writers N`).

Each chunk of files is read, walked and written in one transaction on the worker's own
connection, so the write rate grows with the workers. The chunk is idempotent: files are
upserted by path and their old rows replaced, so a chunk done again (its worker died before
it reported) writes the same rows. The summary counters go to the delta tables, which no
writer waits on; the run's main process merges them (summaries.merge_pending).
"""

from __future__ import annotations

import contextlib
import threading
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


class _Current(threading.local):
    # Per thread (a Dask worker may run several tasks at once): the run it last wrote for.
    writers: list[_ProcessWriter]

    def __init__(self) -> None:
        self.writers = []


_current = _Current()
_every: list[_ProcessWriter] = []  # of every thread, for close_all_writers
_every_lock = threading.Lock()


def _writer_for(url: str, run_id: int) -> BatchWriter:
    found = _current.writers
    if found and (found[0].url, found[0].run_id) == (url, run_id):
        return found[0].writer
    close_writer()
    engine = make_engine(url)  # the run's main process has opened and migrated the index
    backend = backends.for_url(url, chunk_writer=True)
    writer = BatchWriter(engine, backend, run_id, deferred_summaries=True)
    made = _ProcessWriter(url, run_id, engine, writer)
    found.append(made)
    with _every_lock:
        _every.append(made)
    return writer


def close_writer() -> None:
    """Release this thread's connection (a new run, or a failed one)."""
    while _current.writers:
        done = _current.writers.pop()
        with _every_lock:
            if done in _every:
                _every.remove(done)
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


def close_all_writers() -> None:
    """Close the connections of every thread of this process (a Dask worker, once the run
    that used them ended: the database is not kept busy by idle sessions)."""
    with _every_lock:
        done, _every[:] = list(_every), []
    for made in done:  # their threads run no task now: the run has ended
        with contextlib.suppress(SQLAlchemyError):
            made.writer.close()
        made.engine.dispose()
