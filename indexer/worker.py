"""What a worker process does with a chunk of files: read, walk, flatten into rows.

Imports no SQLAlchemy and no backend connection code: the rows go to the sink the
run's backend described (backends.sinks).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from typing import TYPE_CHECKING

from .backends.sinks import SinkSpec
from .errors import DicomReadError, Reason
from .netfs import is_network_path
from .records import DEFAULT_VALUE_LIMIT
from .rows import FailedFile, Outcome, PathIds, stored_path, to_rows

if TYPE_CHECKING:
    from .reader import LoadedFile

# path, size, mtime_ns, value_limit, sink spec, run_key
Task = tuple[str, int, int, int, SinkSpec, str]

_path_ids: dict[str, PathIds] = {}  # per worker process: path definitions sent in this run


def _path_ids_for(run_key: str) -> PathIds:
    found = _path_ids.get(run_key)
    if found is None:
        _path_ids.clear()  # a new run (perhaps into another database): send every path again
        found = _path_ids[run_key] = PathIds(run_key)
    return found


PARENT_CHECK_S = 1.0  # how often a worker without PR_SET_PDEATHSIG checks that its parent lives
_PR_SET_PDEATHSIG = 1


def init_process(parent_pid: int) -> None:
    """Set up a pool worker: the parent decides what Ctrl-C and SIGTERM do to a run, and a
    worker whose parent is gone (SIGKILL, out of memory) exits by itself at once."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the parent's handler, inherited by fork
    if not _die_with_parent():
        threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()
    if os.getppid() != parent_pid:  # the parent died before the kernel was told to watch it
        os._exit(1)


def _die_with_parent() -> bool:
    """Linux: have the kernel SIGKILL this process when its parent ends."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def _watch_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(PARENT_CHECK_S)
    os._exit(1)  # a worker holds nothing that outlives its run: scratch goes with the next run


def looks_like_dicom_name(path: str) -> bool:
    """True for names that promise DICOM (so a non-DICOM file there is an error, not a skip)."""
    base = os.path.basename(path).lower()
    return (
        base.endswith((".dcm", ".dicom", ".dic", ".ima")) or base == "dicomdir" or "." not in base
    )


def _failed(path: str, size: int, mtime_ns: int, err: DicomReadError) -> FailedFile:
    not_dicom = err.reason in (Reason.NOT_DICOM, Reason.EMPTY)
    reason = err.reason.value if isinstance(err.reason, Reason) else str(err.reason)
    return FailedFile(
        path,
        size,
        mtime_ns,
        "not_dicom" if not_dicom else "error",
        reason,
        err.detail,
        skip=not_dicom and not looks_like_dicom_name(path),
    )


def process_file(
    path: str,
    size: int,
    mtime_ns: int,
    value_limit: int = DEFAULT_VALUE_LIMIT,
    sink: SinkSpec | None = None,
    run_key: str = "",
    *,
    loaded: LoadedFile | None = None,
) -> Outcome:
    """Read, walk and flatten one file; never raises for a bad file.

    Element rows go to this process's sink of `sink` (COPY text when None). `run_key`
    names the run: the definitions of new sequence paths are sent once per run.
    `loaded` is the file's bytes when they were read ahead (prefetch.iter_loaded).
    """
    # Imported here, not at the top: the walker brings in pydicom, which a re-run over an
    # unchanged archive (nothing to read) never needs, nor does the writer process.
    from .reader import read_file

    stored = stored_path(path)
    try:
        record = read_file(path, value_limit=value_limit, loaded=loaded)
    except DicomReadError as err:
        return _failed(stored, size, mtime_ns, err)
    except (OSError, ValueError, MemoryError, RecursionError) as err:
        # Nothing the walker knows to expect, but one bad file must not end an overnight run.
        # Only an OSError's text is shown: a ValueError's (a codec's, say) can quote file bytes.
        detail = f": {err.strerror or err}" if isinstance(err, OSError) else ""
        return FailedFile(
            stored, size, mtime_ns, "error", "walker_failure", f"{type(err).__name__}{detail}"
        )
    record.path = stored
    if sink is None:
        from .backends.copy_rows import CopySpec

        sink = CopySpec()
    return to_rows(record, mtime_ns, _path_ids_for(run_key), sink.open())


def process_chunk(tasks: list[Task], *, prefetch: bool | None = None) -> list[Outcome]:
    """Pool entry point: a few files at once, to spread the cost of inter-process messages.

    With `prefetch` (None: when the chunk's first file is on a network file system) the
    next files are read ahead in threads while each is walked; the outcomes are the same.
    Their element rows are committed to the sink before the outcomes go back."""
    if prefetch is None:
        prefetch = bool(tasks) and is_network_path(tasks[0][0])
    if prefetch:
        from .prefetch import iter_loaded

        loads = iter_loaded([(task[0], task[1]) for task in tasks])
        outcomes = [
            process_file(*task, loaded=loaded) for task, loaded in zip(tasks, loads, strict=True)
        ]
    else:
        outcomes = [process_file(*task) for task in tasks]
    if tasks:
        tasks[0][4].open().commit()
    return outcomes
