"""The pipeline of one `indexer index` run: crawl -> unchanged check -> workers -> batches.

Data moves one way: the feed crawls the roots and asks the catalog of files which are
unchanged; the workers turn the rest into rows; the batch writer writes their results.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import gc
import multiprocessing
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from . import backends
from .backends.base import Backend
from .backends.sinks import SinkSpec
from .crawl_ahead import CrawlAhead
from .crawler import FoundFile, Skipped, iter_files
from .db import describe_url, first_line, open_index, resolve_url
from .errors import DatabaseError, IndexerError
from .netfs import is_network_path
from .records import DEFAULT_VALUE_LIMIT
from .rows import Outcome, stored_path
from .worker import Task, init_process, process_chunk
from .writer import BatchWriter, Catalog, finish_run, path_index, start_run
from .writer.batch import BatchReport
from .writer.runs import record_counts

CHECK_CHUNK = 512  # paths compared with the index per query
TASK_CHUNK = 16  # files handed to a worker at once
NETWORK_TASK_CHUNK = 64  # on a network share: a worker waits for the first file of each chunk
# Files per chunk when the workers write (--writers): one transaction each, so its fixed cost
# (hierarchy look-ups, summary statements, the commit) is spread over more files.
WRITER_CHUNK = 64
# Task chunks queued per worker: more than a batch in flight, so the workers go on while the
# writer writes.
PENDING_PER_WORKER = 32
UNCHANGED_FLUSH = 20_000  # unchanged files marked seen in one go at most
FLUSH_SECONDS = 2.0  # a batch is written at least this often
POOL_START_S = 120.0  # the workers answer their first task within this, or the run fails
POOL_EXIT_S = 5.0  # a worker or the pool thread not ended this long after a stop is left


@dataclass(slots=True)
class IndexReport:
    """What one `index_paths` run did."""

    run_id: int = 0
    files_seen: int = 0  # regular files found under the roots
    indexed: int = 0  # read completely
    partial: int = 0  # read up to a recorded problem (truncated, invalid structure)
    failed: int = 0  # named like DICOM or DICOM-looking but unreadable: in `errors`
    skipped: int = 0  # not DICOM (README, images, ...)
    unchanged: int = 0  # same path, size and mtime as in the index: not read again
    missing: int = 0  # in the index but gone from the roots (marked, or pruned)
    crawl_problems: int = 0  # symlink loops, FIFOs, unreadable folders
    elements: int = 0  # element and item rows written
    files_found: int = 0  # regular files the crawl found so far, ahead of the readers
    crawl_complete: bool = False  # the crawl is over: files_found is the run's total
    elapsed: float = 0.0
    outcome: str = "running"  # completed, interrupted, failed
    database: str = ""
    finishing: str = ""  # what the run does after the last batch, for the progress display
    path_index_seconds: float | None = None  # the path index was built at the end, in so long

    @property
    def errors(self) -> int:
        """Files that could not be indexed whole: failed, or read up to a problem (README,
        "Errors"). Not-DICOM files and crawl problems are counted apart, never as errors."""
        return self.failed + self.partial

    @property
    def files_read(self) -> int:
        return self.indexed + self.partial + self.failed + self.skipped

    @property
    def files_done(self) -> int:
        """Files found and dealt with: read, or found unchanged."""
        return self.files_read + self.unchanged

    @property
    def files_per_second(self) -> float:
        """Files read per second (0.0 when none was read: an unchanged re-run has no rate)."""
        return self.files_read / self.elapsed if self.elapsed else 0.0

    def counts(self) -> dict[str, int]:
        return {
            "files_seen": self.files_seen,
            "files_indexed": self.indexed + self.partial,
            "files_unchanged": self.unchanged,
            "files_failed": self.failed + self.partial,
            "files_skipped": self.skipped,
            "files_missing": self.missing,
            "elements_written": self.elements,
        }


@dataclass
class _Feed:
    """Crawls the roots and yields chunks of files to read, leaving out unchanged ones.

    Runs in the main process between writes.
    """

    roots: Sequence[str]
    catalog: Catalog
    value_limit: int
    sink: SinkSpec  # where the workers put element rows
    run_key: str  # unique per run, even across databases and processes
    stop_check: Callable[[], None]  # raises RunStopped once SIGINT or SIGTERM came
    follow_links: bool = False  # follow symlinks that lead outside the roots
    chunk_files: int = TASK_CHUNK
    skipped: list[Skipped] = field(default_factory=list)
    unchanged: list[int] = field(default_factory=list)
    seen: int = 0
    crawl: CrawlAhead[FoundFile, Skipped] | None = None  # counts the files ahead of the reads

    def chunks(self) -> Iterator[list[Task]]:
        self.crawl = CrawlAhead(
            lambda on_skip: iter_files(
                self.roots, follow_outside=self.follow_links, on_skip=on_skip
            ),
            on_idle=self.stop_check,
        )
        yield from self._chunks(self.crawl)  # _Pipeline.run closes the crawl, however it ends

    def _chunks(self, crawled: Iterable[FoundFile | Skipped]) -> Iterator[list[Task]]:
        batch: list[tuple[str, int, int]] = []
        for found in crawled:
            if isinstance(found, Skipped):
                self.skipped.append(found)
                continue
            batch.append((found.path, found.size, found.mtime_ns))
            if len(batch) >= CHECK_CHUNK:
                self.stop_check()  # a re-run of unchanged files crawls long between yields
                yield from self._check(batch)
                batch = []
        if batch:
            yield from self._check(batch)

    def _check(self, batch: list[tuple[str, int, int]]) -> Iterator[list[Task]]:
        to_read, unchanged = self.catalog.split_unchanged(batch)
        self.seen += len(batch)
        self.unchanged.extend(unchanged)
        step = self.chunk_files
        if step == TASK_CHUNK and to_read and is_network_path(to_read[0][0]):
            step = NETWORK_TASK_CHUNK
        for start in range(0, len(to_read), step):
            yield [
                (path, size, mtime_ns, self.value_limit, self.sink, self.run_key)
                for path, size, mtime_ns in to_read[start : start + step]
            ]


def _check_workers(executor: Executor) -> None:
    """Raise BrokenProcessPool when a worker process has died.

    The executor notices a dead worker by itself, except when the worker died while it was
    sending a result: the executor's thread then waits forever for the rest of that message
    (CPython's ProcessPoolExecutor). Killing the other workers and closing this process's
    end of the result pipe ends that wait, so the executor can shut down.
    """
    processes = list((getattr(executor, "_processes", None) or {}).values())
    if not any(p.exitcode is not None for p in processes):
        return
    _kill_workers(executor)
    result_writer = getattr(getattr(executor, "_result_queue", None), "_writer", None)
    if result_writer is not None:
        result_writer.close()
    raise BrokenProcessPool("a worker process died")


def _kill_workers(executor: Executor) -> None:
    """SIGKILL every worker process of `executor` still running."""
    for process in list((getattr(executor, "_processes", None) or {}).values()):
        if process.exitcode is None:
            process.kill()


def _stop_pool(executor: ProcessPoolExecutor, *, kill: bool) -> None:
    """End the pool within seconds, whatever state its workers and its thread are in.

    `kill`: SIGKILL the workers at once (the run is failing or stopped: nothing they hold is
    needed); otherwise they are asked to exit, and killed when they do not. Never
    `shutdown(wait=True)`: its thread can wait for ever on a worker that died mid-message.
    """
    processes = list((getattr(executor, "_processes", None) or {}).values())
    if not kill:
        executor.shutdown(wait=False, cancel_futures=True)
        deadline = time.monotonic() + POOL_EXIT_S
        for process in processes:
            process.join(max(0.0, deadline - time.monotonic()))
    for process in processes:
        if process.exitcode is None:
            process.kill()
    for process in processes:
        process.join(POOL_EXIT_S)
    if all(p.exitcode is not None for p in processes):
        # Every worker is gone: closing this end of the result pipe turns the pool thread's
        # wait for the rest of a half-sent result into an end of file.
        result_writer = getattr(getattr(executor, "_result_queue", None), "_writer", None)
        if result_writer is not None:
            result_writer.close()
    executor.shutdown(wait=False, cancel_futures=True)
    thread = getattr(executor, "_executor_manager_thread", None)
    if isinstance(thread, threading.Thread):
        thread.join(POOL_EXIT_S)


class RunStopped(KeyboardInterrupt):
    """The run was stopped by SIGINT or SIGTERM (`signum`), where it could stop cleanly."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class _StopSignals:
    """While a run is on, SIGINT and SIGTERM only note that the run must stop; the run stops
    at its next check (between batches, in the pool's wait, in the crawl), within a second.

    Python's own SIGINT handler raises KeyboardInterrupt at whatever the main thread is doing:
    inside the database driver's protocol (psycopg then loses its connection), inside an open
    SQLite transaction (finish_run then waits on its lock) or inside the pool's bookkeeping.
    Installed only in the main thread (Python's rule), and not over a signal set to be ignored
    (nohup, background jobs). Workers fork with this handler and replace it first thing.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}  # what signal.getsignal gave

    def __enter__(self) -> _StopSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                previous = signal.getsignal(signum)
                if previous == signal.SIG_IGN:
                    continue
                self._previous[signum] = signal.SIG_DFL if previous is None else previous
                signal.signal(signum, self._note)
        return self

    def _note(self, signum: int, frame: object) -> None:
        if self.signum is None:  # a second Ctrl-C while the run stops changes nothing
            self.signum = signum

    def check(self) -> None:
        if self.signum is not None:
            raise RunStopped(self.signum)

    def __exit__(self, exc_type: object, *exc: object) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()
        if exc_type is None and self.signum is not None:
            # The stop came as the run was completing (its row then says completed): the
            # caller still learns of it, so the command exits as stopped, not by the signal.
            raise RunStopped(self.signum)


# The cyclic garbage collector's default gen-0 threshold (700 live allocations) makes it scan
# the walker's and writer's many short-lived tuples every few rows; an index run makes no
# cycles worth collecting that often.
_GC_THRESHOLD = (100_000, 20, 20)  # older generations still collected now and then


def _init_worker(parent_pid: int) -> None:
    init_process(parent_pid)
    gc.set_threshold(*_GC_THRESHOLD)


@dataclass
class _Options:
    workers: int
    batch_files: int
    batch_elements: int
    value_limit: int
    prune: bool
    progress: Callable[[IndexReport], None] | None
    follow_links: bool = False
    writers: int = 1  # > 1: the workers write their own chunks (executors/chunks.py)
    scheduler: str | None = None  # a Dask scheduler's address (executors/dask.py)


def index_paths(
    roots: Iterable[str | os.PathLike[str]],
    db: str | None = None,
    *,
    workers: int | None = None,
    batch_files: int = 500,
    batch_elements: int = 100_000,
    value_limit: int = DEFAULT_VALUE_LIMIT,
    prune: bool = False,
    progress: Callable[[IndexReport], None] | None = None,
    follow_links: bool = False,
    writers: int = 1,
    scheduler: str | None = None,
) -> IndexReport:
    """Index every DICOM file under `roots` into the index `db` (see db.resolve_url).

    Files whose path, size and mtime are unchanged since the last run are not read
    again; changed files are re-indexed; files gone from the roots are marked missing
    (deleted with `prune`). Each batch of files is one transaction, so an interrupted
    run leaves a consistent index that the next run completes.

    Parameters
    ----------
    workers:
        Processes that read and walk files; default: the number of CPUs. 0 reads in
        this process (for debugging).
    follow_links:
        Also follow symlinks that lead outside the roots (by default they are recorded
        as skipped, reason outside_roots). Special file systems (/proc, /sys, /dev) are
        never entered, and every folder is walked once.
    progress:
        Called with the running report after each batch, and at least every second.
    writers:
        More than 1 (PostgreSQL only): that many worker processes each read, walk and write
        their own chunks, one transaction per chunk (in place of `workers`); the summary
        counters are merged by this process. SQLite allows one writer: refused.
    scheduler:
        The address of a Dask scheduler (tcp://HOST:8786, PostgreSQL only): its workers read,
        walk and write the chunks this process crawls (see executors/dask.py).

    Returns the run's IndexReport. Raises DatabaseError when the index cannot be
    opened or written, IndexerError when a worker process dies; bad files never
    raise, they are recorded. Called in the main thread, SIGINT and SIGTERM stop the run
    cleanly: it is recorded as interrupted and RunStopped (a KeyboardInterrupt) is raised.
    """
    if writers < 1:
        raise IndexerError("--writers must be at least 1")
    options = _Options(
        writers if writers > 1 else (os.cpu_count() or 1) if workers is None else workers,
        batch_files,
        batch_elements,
        value_limit,
        prune,
        progress,
        follow_links,
        writers,
        scheduler,
    )
    threshold = gc.get_threshold()
    gc.set_threshold(*_GC_THRESHOLD)
    try:
        with _StopSignals() as stops:
            return _index(_roots(roots), db, options, stops.check)
    finally:
        gc.set_threshold(*threshold)


def _roots(roots: Iterable[str | os.PathLike[str]]) -> list[str]:
    root_list = [os.path.abspath(os.fspath(r)) for r in roots]
    if not root_list:
        raise IndexerError("no paths to index")
    for root in root_list:
        # Refused before anything is written: a mistyped path or an unmounted share would
        # otherwise have every file indexed under it marked missing (or pruned).
        if not os.path.lexists(root):
            shown = stored_path(root)  # as the index stores and prints it (non-UTF-8 bytes)
            raise IndexerError(
                f"{shown}: no such file or folder (gone for good? `indexer forget {shown}`)"
            )
    return root_list


def _index(
    roots: list[str], db: str | None, options: _Options, stop_check: Callable[[], None]
) -> IndexReport:
    started = time.perf_counter()
    url = resolve_url(db)
    backend = backends.for_url(url)
    if (options.writers > 1 or options.scheduler) and not backend.concurrent_writers:
        asked = "--scheduler" if options.scheduler else f"--writers {options.writers}"
        raise IndexerError(
            f"{asked}: {backend.name} allows one writer; use a PostgreSQL index, or leave "
            f"{asked.split()[0]} out"
        )
    report = IndexReport(database=describe_url(url))
    executor = None
    writer = None
    try:
        if options.workers > 0 and not options.scheduler:
            # Fork the workers first, before this process opens database connections or
            # starts threads.
            executor = _start_pool(options.workers)
        engine = open_index(db)
        report.run_id = start_run(
            engine,
            roots,
            {
                "workers": options.workers,
                "writers": options.writers,
                "prune": options.prune,
                "value_limit": options.value_limit,
            },
        )
        path_index.drop_for_first_run(engine)  # built once at the end (writer/path_index.py)
        writer = BatchWriter(engine, backend, report.run_id)
        catalog = Catalog(engine, report.run_id)
        feed = _Feed(
            roots,
            catalog,
            options.value_limit,
            backend.sink_spec(),
            uuid.uuid4().hex,
            stop_check,
            options.follow_links,
            WRITER_CHUNK if options.writers > 1 or options.scheduler else TASK_CHUNK,
        )
        try:
            stop_check()
            pipeline = _Pipeline(executor, feed, writer, report, options, started)
            if options.writers > 1:
                pipeline.submit = _chunk_writers(url, report.run_id)
            if options.scheduler:
                _run_on_dask(pipeline, options.scheduler, url, report.run_id)
            else:
                pipeline.run()
            stop_check()  # a stop during the last batch is recorded, not completed over
            _build_path_index(engine, backend, report, options, stop_check)
        except BaseException as err:
            pool, executor, done, writer = executor, None, writer, None
            _fail(pool, done, engine, report, err)
            raise
        if executor is not None:  # workers must let go of their scratch files first
            pool, executor = executor, None
            _stop_pool(pool, kill=False)
        done, writer = writer, None
        _close(done)
        _complete(engine, catalog, roots, report, options, started)
        return report
    except SQLAlchemyError as err:
        raise DatabaseError(f"database error on {report.database}: {first_line(err)}") from None
    finally:
        if executor is not None:
            _stop_pool(executor, kill=True)
        if writer is not None:
            _close(writer)
        backend.close(None)  # the scratch folder goes on every way out


def _build_path_index(
    engine: Engine,
    backend: Backend,
    report: IndexReport,
    options: _Options,
    stop_check: Callable[[], None],
) -> None:
    def starting() -> None:
        report.finishing = "building the path index"
        if options.progress is not None:
            options.progress(report)

    report.path_index_seconds = path_index.build_if_missing(engine, backend, stop_check, starting)
    report.finishing = ""


_Submit = Callable[[Executor, list[Task]], Future[Any]]


def _chunk_writers(url: str, run_id: int) -> _Submit:
    """The workers write their chunks themselves (see executors/chunks.py)."""
    from .executors.chunks import write_chunk

    return lambda executor, tasks: executor.submit(write_chunk, tasks, url, run_id)


def _run_on_dask(pipeline: _Pipeline, scheduler: str, url: str, run_id: int) -> None:
    """The pipeline with a Dask cluster's workers as the chunk writers."""
    from .executors.dask import dask_chunks, submit_chunk

    with dask_chunks(scheduler) as cluster:
        pipeline.executor = cluster
        pipeline.options.workers = cluster.threads()  # chunks kept in flight per thread
        pipeline.submit = submit_chunk(url, run_id)
        pipeline.run()


def _read_chunk(executor: Executor, tasks: list[Task]) -> Future[Any]:
    return executor.submit(process_chunk, tasks)


def _start_pool(workers: int) -> ProcessPoolExecutor:
    executor = ProcessPoolExecutor(
        workers,
        initializer=_init_worker,
        initargs=(os.getpid(),),
        mp_context=multiprocessing.get_context("fork"),
    )
    try:
        executor.submit(int).result(timeout=POOL_START_S)  # forks all the workers now
    except (BrokenProcessPool, concurrent.futures.TimeoutError):
        _stop_pool(executor, kill=True)
        raise IndexerError("the worker processes did not start; try --workers 0") from None
    return executor


def _close(writer: BatchWriter) -> None:
    """Release the writer's connection and scratch files, even when the connection is broken."""
    try:
        writer.close()
    except SQLAlchemyError:
        writer.backend.close(None)


def _fail(
    executor: ProcessPoolExecutor | None,
    writer: BatchWriter,
    engine: Engine,
    report: IndexReport,
    err: BaseException,
) -> None:
    """Record the run as interrupted or failed; a dead worker becomes an IndexerError."""
    if executor is not None:
        _stop_pool(executor, kill=True)  # nothing they hold is needed now; never wait on them
    # Before finish_run: a transaction the writer left open would make it wait on SQLite's lock.
    _close(writer)
    report.outcome = "interrupted" if isinstance(err, KeyboardInterrupt) else "failed"
    try:
        finish_run(engine, report.run_id, report.outcome, report.counts())
    except SQLAlchemyError:
        # The connections of the pool may be what failed (a server restart, a terminated
        # backend): once more on a new one; if the database itself is gone, the run row stays
        # "running" and the next run marks it interrupted.
        engine.dispose()
        with contextlib.suppress(SQLAlchemyError):
            finish_run(engine, report.run_id, report.outcome, report.counts())
    if isinstance(err, BrokenProcessPool):
        raise IndexerError(
            "a worker process died (killed, or out of memory); what was "
            "written is kept: run the same command again to finish"
        ) from None


def _complete(
    engine: Engine,
    catalog: Catalog,
    roots: list[str],
    report: IndexReport,
    options: _Options,
    started: float,
) -> None:
    report.missing = catalog.mark_missing(roots, options.prune)
    report.outcome = "completed"
    report.elapsed = time.perf_counter() - started
    finish_run(engine, report.run_id, "completed", report.counts())
    if options.progress is not None:
        options.progress(report)
    engine.dispose()


class _Pipeline:
    """Keeps the workers busy with chunks from the feed, and writes their results in batches."""

    def __init__(
        self,
        executor: Executor | None,
        feed: _Feed,
        writer: BatchWriter,
        report: IndexReport,
        options: _Options,
        started: float,
    ) -> None:
        self.executor = executor
        self.feed = feed
        self.writer = writer
        self.report = report
        self.options = options
        self.started = started
        self.batch: list[Outcome] = []
        self.batch_rows = 0
        self.last_flush = time.monotonic()
        self.submit: _Submit = _read_chunk  # a chunk's future: its outcomes, or what a worker wrote
        self.written = BatchReport()  # chunks the workers wrote and committed themselves

    def run(self) -> None:
        try:
            if self.executor is None:
                for chunk in self.feed.chunks():
                    self.feed.stop_check()
                    self._take(process_chunk(chunk))
                    self._flush_when_due()
            else:
                self._run_pool(self.executor)
        finally:
            if self.feed.crawl is not None:  # ends the crawl thread when the run fails
                self.feed.crawl.close()
        self._flush()

    def _run_pool(self, executor: Executor) -> None:
        chunks = self.feed.chunks()
        pending: dict[Future[Any], int] = {}  # future -> submission number
        submitted = 0
        exhausted = False
        while True:
            self.feed.stop_check()
            while not exhausted and len(pending) < self.options.workers * PENDING_PER_WORKER:
                tasks = next(chunks, None)
                if tasks is None:
                    exhausted = True
                else:
                    pending[self.submit(executor, tasks)] = submitted
                    submitted += 1
            if not pending:
                return
            done, _ = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            # In submission order: each worker's results then come in the order it wrote its
            # scratch rows, which the backend relies on to delete finished scratch files.
            for future in sorted(done, key=pending.__getitem__):
                del pending[future]
                self._take(future.result())  # BrokenProcessPool here when a worker died
            if not done:
                _check_workers(executor)
            self._flush_when_due()

    def _take(self, outcomes: list[Outcome] | BatchReport) -> None:
        if isinstance(outcomes, BatchReport):  # written by the worker: counted at the flush
            self.written.add(outcomes)
            return
        for outcome in outcomes:
            self.batch.append(outcome)
            self.batch_rows += getattr(outcome, "element_rows", 0)
        if (
            len(self.batch) >= self.options.batch_files
            or self.batch_rows >= self.options.batch_elements
        ):
            self._flush()

    def _flush_when_due(self) -> None:
        if (
            len(self.feed.unchanged) >= UNCHANGED_FLUSH
            or time.monotonic() - self.last_flush > FLUSH_SECONDS
        ):
            self._flush()

    def _flush(self) -> None:
        feed, report = self.feed, self.report
        written = self.writer.write(self.batch, feed.unchanged, feed.skipped)
        written.add(self.written)
        self.written = BatchReport()
        if self.writer.backend.concurrent_writers:
            # Folds in what chunk writers (this run's, or a killed run's) left in the deltas.
            self.writer.merge_summaries()
        report.indexed += written.indexed
        report.partial += written.partial
        report.failed += written.failed
        report.skipped += written.skipped
        report.elements += written.elements
        report.unchanged += len(feed.unchanged)
        report.crawl_problems += len(feed.skipped)
        report.files_seen = feed.seen
        if feed.crawl is not None:
            report.crawl_complete = feed.crawl.complete  # read first: then found is final
            report.files_found = max(feed.crawl.found, feed.seen)
        report.elapsed = time.perf_counter() - self.started
        self.batch, self.batch_rows = [], 0
        feed.unchanged.clear()
        feed.skipped.clear()
        self.last_flush = time.monotonic()
        # What committed is counted in the run row, so a killed run still says what it did.
        record_counts(self.writer.connection(), report.run_id, report.counts())
        if self.options.progress is not None:
            self.options.progress(report)
