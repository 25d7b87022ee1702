"""Walk folder trees and yield every regular file as a candidate for the reader.

Whether a file is DICOM is decided later, by content: many archives have no
``.dcm`` suffix. The crawler only lists and stats; it never opens a file, so a
FIFO or a device can never block it. Anything it cannot or must not yield is
reported through ``on_skip`` and the walk goes on.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from operator import attrgetter

__all__ = ["FoundFile", "Skipped", "iter_files"]


@dataclass(frozen=True, slots=True)
class FoundFile:
    """A regular file found by the crawler.

    ``path`` is absolute and normalised (``os.path.abspath``). Names that are not
    valid UTF-8 are decoded with ``os.fsdecode`` (surrogateescape), so
    ``os.fsencode(path)`` gives back the bytes on disk. For a symlink to a file,
    ``path`` is the link's path and ``size``/``mtime_ns`` are the target's.
    """

    path: str
    size: int
    mtime_ns: int


@dataclass(frozen=True, slots=True)
class Skipped:
    """A path the crawler did not yield, and why.

    ``reason`` is one of ``"symlink_loop"``, ``"not_regular"``,
    ``"permission_denied"``, ``"vanished"``, ``"os_error"``, ``"not_found"``.
    ``detail`` is short human text such as ``"FIFO"`` or
    ``"[Errno 13] Permission denied"``.
    """

    path: str
    reason: str
    detail: str


SkipHandler = Callable[[Skipped], None]

_by_name = attrgetter("name")


def iter_files(
    roots: Iterable[str | os.PathLike[str]],
    *,
    follow_symlinks: bool = True,
    on_skip: SkipHandler | None = None,
) -> Iterator[FoundFile]:
    """Yield every regular file under ``roots``, depth first, in name order.

    Each root may be a file (yielded as is) or a folder (walked). Entries of a
    folder are sorted by name and a subfolder is walked where it sorts, so two
    runs over the same tree give the same sequence. Memory is bounded by the
    depth of the tree and the number of folders, not the number of files.

    Args:
        roots: Files or folders to crawl. Roots are always followed even when
            they are symlinks, since the caller named them explicitly.
        follow_symlinks: Follow symlinks found inside the tree (the default;
            archives often use them). Every real folder is still walked once
            only: a folder reached again, through a loop or a second link, is
            reported as ``"symlink_loop"``. When False, symlinks inside the tree
            are not followed and are reported as ``"not_regular"`` with detail
            ``"symlink"``.
        on_skip: Called with a :class:`Skipped` for every path that is not
            yielded: missing roots, FIFOs, sockets, devices, unreadable folders,
            dangling symlinks, paths that vanished during the walk. Without it
            such paths are skipped silently.

    Returns:
        An iterator of :class:`FoundFile`, one per regular file. Unreadable
        files are still yielded: the reader records files it cannot open.

    Raises:
        Nothing of its own: file system errors are reported through
        ``on_skip``. An exception raised by ``on_skip`` propagates.
    """
    # Shared by all roots so overlapping roots do not yield a folder twice.
    visited: set[tuple[int, int]] = set()
    for root in roots:
        path = os.path.abspath(os.fspath(root))
        try:
            st = os.stat(path)
        except OSError as err:
            if on_skip is not None:
                on_skip(_stat_error(path, err, root=True))
            continue
        mode = st.st_mode
        if stat.S_ISREG(mode):
            yield FoundFile(path, st.st_size, st.st_mtime_ns)
        elif stat.S_ISDIR(mode):
            key = (st.st_dev, st.st_ino)
            if key in visited:
                if on_skip is not None:
                    on_skip(Skipped(path, "symlink_loop", "folder already visited"))
                continue
            visited.add(key)
            yield from _walk(path, visited, follow_symlinks, on_skip)
        elif on_skip is not None:
            on_skip(Skipped(path, "not_regular", _kind(mode)))


def _walk(
    top: str,
    visited: set[tuple[int, int]],
    follow_symlinks: bool,
    on_skip: SkipHandler | None,
) -> Iterator[FoundFile]:
    # An explicit stack of per-folder iterators instead of recursion: archive
    # trees can be deeper than Python's recursion limit.
    entries = _list_dir(top, on_skip)
    if not entries:
        return
    stack: list[Iterator[os.DirEntry[str]]] = [iter(entries)]
    skip = on_skip or _ignore
    S_ISREG = stat.S_ISREG
    S_ISDIR = stat.S_ISDIR
    while stack:
        for entry in stack[-1]:
            try:
                # is_symlink() comes from d_type, no system call. stat() is the
                # one system call per file; for a non-symlink it is an lstat.
                if not follow_symlinks and entry.is_symlink():
                    skip(Skipped(entry.path, "not_regular", "symlink"))
                    continue
                st = entry.stat()
            except OSError as err:
                skip(_stat_error(entry.path, err, root=False))
                continue
            mode = st.st_mode
            if S_ISREG(mode):
                yield FoundFile(entry.path, st.st_size, st.st_mtime_ns)
            elif S_ISDIR(mode):
                key = (st.st_dev, st.st_ino)
                if key in visited:
                    skip(Skipped(entry.path, "symlink_loop", "folder already visited"))
                    continue
                visited.add(key)
                sub = _list_dir(entry.path, on_skip)
                if sub:
                    stack.append(iter(sub))
                    break  # walk the subfolder now, then resume this one
            else:
                skip(Skipped(entry.path, "not_regular", _kind(mode)))
        else:
            stack.pop()


def _ignore(_skipped: Skipped) -> None:
    pass


def _list_dir(path: str, on_skip: SkipHandler | None) -> list[os.DirEntry[str]]:
    entries: list[os.DirEntry[str]] = []
    try:
        with os.scandir(path) as it:
            # extend() keeps what was listed if reading fails midway.
            entries.extend(it)
    except OSError as err:
        if on_skip is not None:
            if isinstance(err, PermissionError):
                reason = "permission_denied"
            elif isinstance(err, (FileNotFoundError, NotADirectoryError)):
                reason = "vanished"  # removed or replaced since its parent was listed
            else:
                reason = "os_error"
            on_skip(Skipped(path, reason, _describe(err)))
    entries.sort(key=_by_name)
    return entries


def _stat_error(path: str, err: OSError, *, root: bool) -> Skipped:
    if isinstance(err, FileNotFoundError):
        # stat() follows links: a link that is still there points nowhere.
        if os.path.islink(path):
            return Skipped(path, "os_error", "dangling symlink")
        return Skipped(path, "not_found" if root else "vanished", _describe(err))
    if isinstance(err, PermissionError):
        return Skipped(path, "permission_denied", _describe(err))
    if err.errno == errno.ELOOP:
        return Skipped(path, "symlink_loop", _describe(err))
    return Skipped(path, "os_error", _describe(err))


def _describe(err: OSError) -> str:
    # Leave the file name out: Skipped.path already carries it.
    if err.errno is not None and err.strerror:
        return f"[Errno {err.errno}] {err.strerror}"
    return str(err)


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    return f"unknown file type {stat.S_IFMT(mode):#o}"
