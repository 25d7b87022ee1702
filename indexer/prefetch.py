"""Read the next files of a chunk ahead, in threads, while the current one is walked.

On a network file system each open and read waits a round trip; a worker that reads
one file at a time spends most of its time waiting. Here a few threads load the next
files (reader.load_file: exactly what the reader would read, never pixel bytes of a
mapped file) and the walk takes them in order. Bounded: at most `files` loads ahead,
and no new one starts while `max_bytes` are held and not yet taken.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

from .reader import MAP_THRESHOLD, LoadedFile, load_file

__all__ = ["PREFETCH_BYTES", "PREFETCH_FILES", "iter_loaded"]

PREFETCH_FILES = 8  # loads in flight or waiting per worker process (and its threads)
PREFETCH_BYTES = 8 * 1024 * 1024  # bytes read ahead and not yet walked, per worker process

_pool: ThreadPoolExecutor | None = None
_pool_pid = 0
_pool_lock = threading.Lock()


def _threads() -> ThreadPoolExecutor:
    """This process's loading threads (a forked child makes its own: threads do not fork)."""
    global _pool, _pool_pid
    with _pool_lock:
        if _pool is None or _pool_pid != os.getpid():
            _pool = ThreadPoolExecutor(PREFETCH_FILES, thread_name_prefix="prefetch")
            _pool_pid = os.getpid()
        return _pool


def iter_loaded(
    files: Sequence[tuple[str, int]],
    *,
    ahead: int = PREFETCH_FILES,
    max_bytes: int = PREFETCH_BYTES,
) -> Iterator[LoadedFile]:
    """Yield a LoadedFile for each (path, size) of `files`, in order, loading ahead.

    `size` is the crawler's: a load is counted at that size (at most MAP_THRESHOLD,
    above which files are mapped, not read) until its file is taken. At most `ahead`
    loads are started and not yet taken, and none is started while `max_bytes` are
    counted, except the next one the caller needs. The caller must use or close each
    LoadedFile it takes; those left when the caller stops early are closed here.
    """
    pool = _threads()
    pending: deque[tuple[Future[LoadedFile], int]] = deque()
    counted = 0
    following = iter(files)
    exhausted = False
    try:
        while True:
            while not exhausted and len(pending) < max(1, ahead):
                if pending and counted >= max_bytes:
                    break
                nxt = next(following, None)
                if nxt is None:
                    exhausted = True
                    break
                path, size = nxt
                cost = min(max(size, 0), MAP_THRESHOLD)
                pending.append((pool.submit(load_file, path), cost))
                counted += cost
            if not pending:
                return
            future, cost = pending.popleft()
            loaded = future.result()
            counted -= cost
            yield loaded
    finally:
        for future, _ in pending:
            future.add_done_callback(_close_result)


def _close_result(future: Future[LoadedFile]) -> None:
    if future.exception() is None:
        future.result().close()
