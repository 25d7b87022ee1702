"""A Dask cluster as the executor (`indexer index --scheduler tcp://HOST:8786`).

The run's process crawls and submits chunks; Dask workers read, walk and write them with
the chunk writer of `chunks.py` (PostgreSQL only), so the dashboard shows the run's tasks.
A worker that dies has its chunk re-run elsewhere by the scheduler (chunks are idempotent);
a chunk that kills every worker it lands on ends the run with one line. Needs the extra
`dicom-indexer[dask]` (distributed) on the client and the workers, and the archive mounted
at the same path on every worker.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from ..errors import IndexerError
from ..worker import Task

INSTALL_DASK = "pip install 'dicom-indexer[dask]'"
CONNECT_TIMEOUT_S = 30


class DaskChunks(concurrent.futures.Executor):
    """Submits chunks to a Dask cluster; its futures are concurrent.futures ones, as the
    local pool's, and a cluster failure becomes one IndexerError line."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self._executor = client.get_executor(pure=False)
        self.address = str(client.scheduler.address)

    def threads(self) -> int:
        """Worker threads of the cluster now (at least 1)."""
        return max(1, int(sum(self.client.nthreads().values())))

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        inner = self._executor.submit(fn, *args, **kwargs)
        outer: concurrent.futures.Future[Any] = concurrent.futures.Future()
        inner.add_done_callback(lambda done: _settle(outer, done, self.address))
        return outer

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._executor.shutdown(wait=False)


def _settle(outer: concurrent.futures.Future[Any], done: Any, address: str) -> None:
    if done.cancelled():
        outer.cancel()
        return
    err = done.exception()
    if err is None:
        outer.set_result(done.result())
    elif isinstance(err, IndexerError):  # the chunk writer's own line (a database error)
        outer.set_exception(err)
    elif type(err).__name__ in ("KilledWorker", "CommClosedError", "FutureCancelledError"):
        outer.set_exception(
            IndexerError(
                f"the Dask cluster at {address} lost a chunk ({type(err).__name__}: its "
                "workers died); what was written is kept: run the same command again"
            )
        )
    else:
        outer.set_exception(err)


@contextmanager
def dask_chunks(address: str) -> Iterator[DaskChunks]:
    """A client of the Dask scheduler at `address` (tcp://HOST:8786), closed on the way out."""
    try:
        from distributed import Client
    except ImportError:
        raise IndexerError(f"Dask support is not installed: {INSTALL_DASK}") from None
    try:
        client = Client(address, timeout=CONNECT_TIMEOUT_S, set_as_default=False)  # type: ignore[no-untyped-call]
    except (OSError, TimeoutError) as err:
        raise IndexerError(
            f"cannot reach the Dask scheduler at {address}: {type(err).__name__}"
        ) from None
    try:
        yield DaskChunks(client)
    finally:
        from .chunks import close_all_writers

        with contextlib.suppress(Exception):  # a worker gone meanwhile holds nothing
            client.run(close_all_writers)
        client.close(timeout=5)  # type: ignore[no-untyped-call]


def submit_chunk(url: str, run_id: int) -> Callable[[Any, list[Task]], Any]:
    """What the run's pipeline calls per chunk: the chunk writer, on a Dask worker."""
    from .chunks import write_chunk

    return lambda executor, tasks: executor.submit(write_chunk, tasks, url, run_id)
