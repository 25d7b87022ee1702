"""Crawl ahead of the readers, so a run knows how many files it has found (its progress total).

Listing folders and stat-ing files is much faster than reading them: a thread runs the
crawler's iterator into a bounded queue and counts what it found. The run takes the files
from the queue in the crawler's order; `found` grows until the crawl is `complete`, and is
exact from then on. The queue bounds memory (`limit` items, ~200 bytes each).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

_T = TypeVar("_T")
_S = TypeVar("_S")

DEFAULT_LIMIT = 250_000  # paths held ahead of the readers at most: ~50 MB
_POLL_S = 0.5  # how often a blocked side looks whether the other one gave up


class _End:
    """The crawl is over; `error` is what ended it, if it did not complete."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException | None) -> None:
        self.error = error


class CrawlAhead(Generic[_T, _S]):
    """Iterate over `crawl(on_skip)` from a thread of its own.

    `crawl` is called with the skip callback: what it yields and what it skips come out of
    this iterator in the order the crawler produced them (a skip as `on_skip` would have
    seen it, interleaved with the files), so the caller handles both in one thread.
    `on_idle` is called whenever the next item takes more than half a second (the caller's
    stop check). Call `close()` when done: the thread then ends within half a second.
    """

    def __init__(
        self,
        crawl: Callable[[Callable[[_S], None]], Iterator[_T]],
        *,
        limit: int = DEFAULT_LIMIT,
        on_idle: Callable[[], None] = lambda: None,
    ) -> None:
        self.found = 0  # items `crawl` yielded so far, skips not counted (the thread writes it)
        self.complete = False  # the crawl ended: `found` is final
        self._on_idle = on_idle
        self._queue: queue.Queue[object] = queue.Queue(maxsize=limit)
        self._closed = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(crawl,), name="indexer-crawl", daemon=True
        )
        self._thread.start()

    def _put(self, item: object) -> None:
        while not self._closed.is_set():
            try:
                self._queue.put(item, timeout=_POLL_S)
                return
            except queue.Full:
                continue
        raise _Closed

    def _run(self, crawl: Callable[[Callable[[_S], None]], Iterator[_T]]) -> None:
        error: BaseException | None = None
        try:
            for item in crawl(self._put):
                self.found += 1
                self._put(item)
        except _Closed:
            return
        except BaseException as err:  # handed to the consumer, which raises it
            error = err
        else:
            self.complete = True
        try:
            self._put(_End(error))
        except _Closed:
            return

    def __iter__(self) -> Iterator[_T | _S]:
        while True:
            try:
                item = self._queue.get(timeout=_POLL_S)
            except queue.Empty:
                self._on_idle()
                continue
            if isinstance(item, _End):
                if item.error is not None:
                    raise item.error
                return
            yield item  # type: ignore[misc]

    def close(self) -> None:
        """Stop the crawl (if it still runs) and wait for its thread."""
        self._closed.set()
        # A crawl stuck in a hung network mount is left behind: the thread is a daemon.
        self._thread.join(timeout=5.0)


class _Closed(BaseException):
    """Raised in the crawl thread when the consumer closed the crawl (not an Exception, so
    the crawler's own handlers around its callback cannot swallow it)."""
