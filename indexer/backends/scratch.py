"""The SQLite backend's scratch folders: where they are, whose they are, and removing those of
runs that are gone.

Scratch files hold element values (patient data), so a folder is mode 0700 and lives in the
temporary folder the user chose (TMPDIR, else the system's: tempfile.gettempdir()). Its name
carries the owning process and host, ``indexer-scratch-<pid>@<host>.<random>``, so that the
next run on the same host removes what a killed run left, and never a live run's folder.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import tempfile
import time

PREFIX = "indexer-scratch-"
_OURS = re.compile(r"indexer-scratch-(\d+)@(.+)\.[^.]+\Z")
# Folders of versions before the owner was in the name: their files are named by the worker
# PIDs (scratch-<pid>-<serial>.db); an empty one is removed once it is this old.
_LEGACY_WORKER = re.compile(r"scratch-(\d+)-\d+\.db")
_LEGACY_EMPTY_S = 3600.0


def new_folder() -> str:
    """A new scratch folder of this process (mode 0700), after removing those of dead runs."""
    base = tempfile.gettempdir()
    remove_stale(base)
    return tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}@{_host()}.", dir=base)


def remove_stale(base: str) -> list[str]:
    """Remove the scratch folders in `base` whose run is no longer alive; return their names."""
    removed: list[str] = []
    try:
        names = [n for n in os.listdir(base) if n.startswith(PREFIX)]
    except OSError:
        return removed
    for name in names:
        path = os.path.join(base, name)
        try:
            if not os.path.isdir(path) or os.path.islink(path) or _alive(name, path):
                continue
        except OSError:
            continue  # another user's folder, or gone meanwhile
        shutil.rmtree(path, ignore_errors=True)
        removed.append(name)
    return removed


def _alive(name: str, path: str) -> bool:
    if os.stat(path).st_uid != os.geteuid():
        return True  # not ours to judge
    ours = _OURS.match(name)
    if ours is not None:
        # A folder of another host (a shared temporary folder) is that host's to clean.
        return ours.group(2) != _host() or pid_alive(int(ours.group(1)))
    workers = [m.group(1) for m in map(_LEGACY_WORKER.match, os.listdir(path)) if m]
    if workers:
        return any(pid_alive(int(pid)) for pid in workers)
    return time.time() - os.stat(path).st_mtime < _LEGACY_EMPTY_S


def _host() -> str:
    return socket.gethostname().replace("/", "_")


def pid_alive(pid: int) -> bool:
    """True when a process `pid` exists on this host (possibly another one that reused it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
