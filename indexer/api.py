"""The library entry points the CLI calls: index_paths and read_one."""

from __future__ import annotations

import os
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing import Pool, TimeoutError
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from .crawler import Skipped, iter_files
from .db import describe_url, first_line, open_index, resolve_url
from .errors import DatabaseError, IndexerError
from .rows import Outcome, Task, process_chunk
from .walker import DEFAULT_VALUE_LIMIT
from .writer import IndexWriter

CHECK_CHUNK = 512  # paths compared with the index per query
TASK_CHUNK = 16  # files handed to a worker at once


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
    elapsed: float = 0.0
    outcome: str = "running"  # completed, interrupted, failed
    database: str = ""

    @property
    def errors(self) -> int:
        return self.failed + self.partial

    @property
    def files_per_second(self) -> float:
        done = self.indexed + self.partial + self.failed + self.skipped
        return done / self.elapsed if self.elapsed else 0.0

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
    """Crawls and filters unchanged files on a thread of its own, ahead of the workers."""

    roots: Sequence[str]
    writer: IndexWriter
    value_limit: int
    max_outstanding: int
    skipped: queue.SimpleQueue[Skipped] = field(default_factory=queue.SimpleQueue)
    unchanged: queue.SimpleQueue[list[int]] = field(default_factory=queue.SimpleQueue)
    seen: int = 0
    done: bool = False
    failure: BaseException | None = None
    stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.slots = threading.Semaphore(self.max_outstanding)
        self.postgres = self.writer.dialect == "postgresql"

    def items(self) -> Iterator[list[Task]]:
        try:
            with self.writer.engine.connect() as conn:
                batch: list[tuple[str, int, int]] = []
                for found in iter_files(self.roots, on_skip=self.skipped.put):
                    batch.append((found.path, found.size, found.mtime_ns))
                    if len(batch) >= CHECK_CHUNK:
                        yield from self._check(conn, batch)
                        batch = []
                    if self.stop.is_set():
                        return
                if batch:
                    yield from self._check(conn, batch)
        except BaseException as err:  # handed to the main thread, which owns error reporting
            self.failure = err
        finally:
            self.done = True

    def _check(
        self, conn: Any, batch: list[tuple[str, int, int]]
    ) -> Iterator[list[Task]]:
        to_read, unchanged = self.writer.split_unchanged(conn, batch)
        conn.rollback()  # end the read transaction: a long-lived reader would stall WAL checkpoints
        self.seen += len(batch)
        if unchanged:
            self.unchanged.put(unchanged)
        for start in range(0, len(to_read), TASK_CHUNK):
            chunk = [(path, size, mtime_ns, self.value_limit, self.postgres)
                     for path, size, mtime_ns in to_read[start : start + TASK_CHUNK]]
            for _ in chunk:
                while not self.slots.acquire(timeout=0.5):
                    if self.stop.is_set():
                        return
            yield chunk


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process decides what Ctrl-C does


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
    progress:
        Called with the running report after each batch and at most every few hundred files.

    Returns the run's IndexReport. Raises DatabaseError when the index cannot be
    opened or written; bad files never raise, they are recorded.
    """
    started = time.perf_counter()
    root_list = [os.path.abspath(os.fspath(r)) for r in roots]
    if not root_list:
        raise IndexerError("no paths to index")
    if workers is None:
        workers = os.cpu_count() or 1
    pool = Pool(workers, initializer=_ignore_sigint) if workers > 0 else None  # before any thread
    url = resolve_url(db)
    report = IndexReport(database=describe_url(url))
    try:
        engine = open_index(db)
        writer = IndexWriter(engine)
        report.run_id = writer.start_run(
            root_list, {"workers": workers, "value_limit": value_limit, "prune": prune})
        feed = _Feed(root_list, writer, value_limit, max_outstanding=max(64, workers * TASK_CHUNK * 4))
        if pool is not None:
            results: Any = pool.imap_unordered(process_chunk, feed.items())
        else:
            results = map(process_chunk, feed.items())
        try:
            _consume(results, pool is not None, feed, writer, report, batch_files, batch_elements,
                     progress, started)
        except KeyboardInterrupt:
            feed.stop.set()
            report.outcome = "interrupted"
            writer.finish_run("interrupted", report.counts())
            raise
        except BaseException:
            feed.stop.set()
            report.outcome = "failed"
            try:
                writer.finish_run("failed", report.counts())
            except SQLAlchemyError:
                pass
            raise
        if feed.failure is not None:
            raise feed.failure
        report.missing = writer.mark_missing(root_list, prune)
        report.outcome = "completed"
        report.elapsed = time.perf_counter() - started
        writer.finish_run("completed", report.counts())
        if progress is not None:
            progress(report)
        engine.dispose()
        return report
    except SQLAlchemyError as err:
        raise DatabaseError(f"database error on {report.database}: {first_line(err)}") from None
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()


def _consume(
    results: Any, pooled: bool, feed: _Feed, writer: IndexWriter, report: IndexReport,
    batch_files: int, batch_elements: int, progress: Callable[[IndexReport], None] | None,
    started: float,
) -> None:
    """Collect worker results in the main process and write them in batches."""
    batch: list[Outcome] = []
    batch_size = 0
    unchanged: list[int] = []
    skipped: list[Skipped] = []
    last_flush = time.monotonic()

    def flush() -> None:
        nonlocal batch, batch_size, unchanged, skipped, last_flush
        with writer.engine.begin() as conn:
            written = writer.write_batch(conn, batch, unchanged, skipped)
        report.indexed += written.indexed
        report.partial += written.partial
        report.failed += written.failed
        report.skipped += written.skipped
        report.elements += written.elements
        report.unchanged += len(unchanged)
        report.crawl_problems += len(skipped)
        report.files_seen = feed.seen
        report.elapsed = time.perf_counter() - started
        batch, batch_size, unchanged, skipped = [], 0, [], []
        last_flush = time.monotonic()
        if progress is not None:
            progress(report)

    finished = False
    while not finished:
        outcome: list[Outcome] | None = None
        try:
            outcome = results.next(timeout=0.2) if pooled else next(results)
        except TimeoutError:
            pass
        except StopIteration:
            finished = True
        for item in outcome or ():
            feed.slots.release()
            batch.append(item)
            batch_size += getattr(item, "element_rows", 0)
        while not feed.unchanged.empty():
            unchanged.extend(feed.unchanged.get())
        while not feed.skipped.empty():
            skipped.append(feed.skipped.get())
        if (len(batch) >= batch_files or batch_size >= batch_elements or len(unchanged) >= 20_000
                or finished or time.monotonic() - last_flush > 2.0):
            if batch or unchanged or skipped:
                flush()
            elif progress is not None and time.monotonic() - last_flush > 0.5:
                report.files_seen = feed.seen
                report.elapsed = time.perf_counter() - started
                progress(report)
    report.files_seen = feed.seen
