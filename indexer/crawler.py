"""Walk folder trees and yield every regular file as a candidate for the reader.

Whether a file is DICOM is decided later, by content: many archives have no
``.dcm`` suffix. The crawler only lists and stats; it never opens a file, so a
FIFO or a device can never block it. Anything it cannot or must not yield is
reported through ``on_skip`` and the walk goes on.

The crawl stays where it was sent: roots that overlap are crawled once, symlinks
that lead outside the roots are not followed unless asked, and special file
systems (``/proc``, ``/sys``, ``/dev``, ...) are never entered.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from operator import attrgetter

__all__ = ["SKIPPED_BY_DESIGN", "SPECIAL_FS_TYPES", "FoundFile", "Skipped", "iter_files"]


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
    ``"permission_denied"``, ``"vanished"``, ``"os_error"``, ``"not_found"``,
    ``"outside_roots"`` (a symlink leading out of the roots, not followed) and
    ``"special_fs"`` (a folder or file on proc, sysfs, devtmpfs, ...).
    ``detail`` is short human text such as ``"FIFO"`` or
    ``"[Errno 13] Permission denied"``; it never holds a file name.
    """

    path: str
    reason: str
    detail: str


SkipHandler = Callable[[Skipped], None]

# Reasons for what the crawler leaves out on purpose (warnings, not errors, in the index).
SKIPPED_BY_DESIGN = frozenset({"not_regular", "outside_roots", "special_fs"})

# Kernel and virtual file systems: their "files" are live views (other processes'
# folders through /proc/N/cwd, reads that block such as /proc/kmsg, sizes of 0
# or terabytes), never archives. Entered neither from a root nor through a link.
SPECIAL_FS_TYPES = frozenset(
    {
        "proc",
        "sysfs",
        "devtmpfs",
        "devpts",
        "devfs",
        "cgroup",
        "cgroup2",
        "securityfs",
        "debugfs",
        "tracefs",
        "pstore",
        "bpf",
        "configfs",
        "fusectl",
        "mqueue",
        "hugetlbfs",
        "binfmt_misc",
        "efivarfs",
        "selinuxfs",
        "rpc_pipefs",
        "nsfs",
        "fdescfs",
        "procfs",
        "linprocfs",
        "linsysfs",
    }
)
# Where the mount table cannot be read (not Linux, /proc not mounted).
_SPECIAL_PATHS = frozenset({"/proc", "/sys", "/dev"})
_MOUNTINFO = "/proc/self/mountinfo"

_by_name = attrgetter("name")


def iter_files(
    roots: Iterable[str | os.PathLike[str]],
    *,
    follow_symlinks: bool = True,
    follow_outside: bool = False,
    on_skip: SkipHandler | None = None,
) -> Iterator[FoundFile]:
    """Yield every regular file under ``roots``, depth first, in name order, each once.

    Each root may be a file (yielded as is) or a folder (walked). Entries of a
    folder are sorted by name and a subfolder is walked where it sorts, so two
    runs over the same tree give the same sequence. Memory is bounded by the
    depth of the tree and the number of folders, not the number of files.

    Roots that overlap are crawled once: a root named twice, or whose real path
    (symlinks resolved) is inside a folder root, is dropped without a report,
    since the other root's walk reaches its files.

    Args:
        roots: Files or folders to crawl. Roots are always followed even when
            they are symlinks, since the caller named them explicitly.
        follow_symlinks: Follow symlinks found inside the tree (the default;
            archives often use them). Every real folder is still walked once
            only: a folder reached again, through a loop or a second link, is
            reported as ``"symlink_loop"``. When False, symlinks inside the tree
            are not followed and are reported as ``"not_regular"`` with detail
            ``"symlink"``.
        follow_outside: Also follow symlinks whose target (to a folder or to a
            file) is outside every root. By default they are reported as
            ``"outside_roots"``. Special file systems are never entered, either
            way (``"special_fs"``).
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
    crawl = _Crawl(follow_symlinks, follow_outside, on_skip or _ignore)
    for root in crawl.resolve_roots(roots):
        if root.is_dir:
            yield from crawl.walk(root.path, root.dev)
        else:
            yield FoundFile(root.path, root.size, root.mtime_ns)


@dataclass(slots=True)
class _Root:
    path: str  # absolute, as named
    real: str  # symlinks resolved
    is_dir: bool
    dev: int
    ino: int
    size: int
    mtime_ns: int


class _Crawl:
    def __init__(self, follow_symlinks: bool, follow_outside: bool, skip: SkipHandler) -> None:
        self.follow_symlinks = follow_symlinks
        self.follow_outside = follow_outside
        self.skip = skip
        # Every real folder is walked once, whatever the roots and links that lead to it.
        self.visited: set[tuple[int, int]] = set()
        self.folder_reals: set[str] = set()  # real paths of the folder roots
        self.file_reals: set[str] = set()  # real paths of the file roots
        self.special: dict[int, bool] = {}  # st_dev -> on a special file system
        self.mount_types: dict[int, str] | None = None

    def resolve_roots(self, roots: Iterable[str | os.PathLike[str]]) -> list[_Root]:
        """Stat the roots, report those that cannot be crawled, drop those that overlap."""
        candidates: list[_Root] = []
        for root in roots:
            path = os.path.abspath(os.fspath(root))
            try:
                st = os.stat(path)
                real = os.path.realpath(path)
            except OSError as err:
                self.skip(_stat_error(path, err, root=True))
                continue
            mode = st.st_mode
            is_dir = stat.S_ISDIR(mode)
            if not is_dir and not stat.S_ISREG(mode):
                self.skip(Skipped(path, "not_regular", _kind(mode)))
            elif self._is_special(st.st_dev, real):
                self.skip(Skipped(path, "special_fs", self._special_detail(st.st_dev)))
            else:
                candidates.append(
                    _Root(path, real, is_dir, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
                )
        self.folder_reals = {r.real for r in candidates if r.is_dir}
        kept: list[_Root] = []
        seen: set[str] = set()
        for r in candidates:
            # Named twice (maybe through different links), or inside another folder root.
            if r.real in seen or _has_ancestor_in(r.real, self.folder_reals, strict=True):
                continue
            seen.add(r.real)
            kept.append(r)
        self.folder_reals = {r.real for r in kept if r.is_dir}
        self.file_reals = {r.real for r in kept if not r.is_dir}
        # A link from one root into another is not followed: that root is walked under
        # its own path.
        self.visited.update((r.dev, r.ino) for r in kept if r.is_dir)
        return kept

    def walk(self, top: str, top_dev: int) -> Iterator[FoundFile]:
        # An explicit stack of per-folder iterators instead of recursion: archive
        # trees can be deeper than Python's recursion limit. Beside each, the folder's
        # st_dev: a file system is checked only where the walk crosses into another.
        entries = self._list_dir(top)
        if not entries:
            return
        stack: list[tuple[Iterator[os.DirEntry[str]], int]] = [(iter(entries), top_dev)]
        skip = self.skip
        visited = self.visited
        follow_symlinks = self.follow_symlinks
        check_links = not self.follow_outside
        S_ISREG = stat.S_ISREG
        S_ISDIR = stat.S_ISDIR
        while stack:
            folder, dev = stack[-1]
            for entry in folder:
                try:
                    # is_symlink() comes from d_type, no system call. stat() is the
                    # one system call per file; for a non-symlink it is an lstat.
                    link = entry.is_symlink()
                    if link and not follow_symlinks:
                        skip(Skipped(entry.path, "not_regular", "symlink"))
                        continue
                    st = entry.stat()
                except OSError as err:
                    skip(_stat_error(entry.path, err, root=False))
                    continue
                mode = st.st_mode
                is_reg = S_ISREG(mode)
                is_dir = not is_reg and S_ISDIR(mode)
                if not (is_reg or is_dir):
                    skip(Skipped(entry.path, "not_regular", _kind(mode)))
                    continue
                if link and check_links and not self._inside_roots(entry.path, is_dir):
                    what = "folder" if is_dir else "file"
                    skip(
                        Skipped(
                            entry.path, "outside_roots", f"symlink to a {what} outside the roots"
                        )
                    )
                    continue
                if st.st_dev != dev and self._is_special(st.st_dev, entry.path):
                    skip(Skipped(entry.path, "special_fs", self._special_detail(st.st_dev)))
                    continue
                if is_reg:
                    yield FoundFile(entry.path, st.st_size, st.st_mtime_ns)
                    continue
                key = (st.st_dev, st.st_ino)
                if key in visited:
                    skip(Skipped(entry.path, "symlink_loop", "folder already visited"))
                    continue
                visited.add(key)
                sub = self._list_dir(entry.path)
                if sub:
                    stack.append((iter(sub), st.st_dev))
                    break  # walk the subfolder now, then resume this one
            else:
                stack.pop()

    def _inside_roots(self, path: str, is_dir: bool) -> bool:
        """Whether the target of the link `path` is a root or inside a folder root."""
        try:
            real = os.path.realpath(path)
        except OSError:  # a target that changed under us: do not follow it
            return False
        if not is_dir and real in self.file_reals:
            return True
        return _has_ancestor_in(real, self.folder_reals, strict=False)

    def _is_special(self, dev: int, path: str) -> bool:
        special = self.special.get(dev)
        if special is None:
            fs_type = self._fs_type(dev)
            if fs_type:
                special = fs_type in SPECIAL_FS_TYPES
            else:
                # Not in the mount table (unreadable, or a btrfs subvolume's own st_dev).
                try:
                    special = os.path.realpath(path) in _SPECIAL_PATHS
                except OSError:
                    special = False
            self.special[dev] = special
        return special

    def _special_detail(self, dev: int) -> str:
        return f"{self._fs_type(dev) or 'special'} file system"

    def _fs_type(self, dev: int) -> str:
        if self.mount_types is None or dev not in self.mount_types:
            self.mount_types = _read_mount_types()  # again: something may have been mounted
        return self.mount_types.get(dev, "")

    def _list_dir(self, path: str) -> list[os.DirEntry[str]]:
        entries: list[os.DirEntry[str]] = []
        try:
            with os.scandir(path) as it:
                # extend() keeps what was listed if reading fails midway.
                entries.extend(it)
        except OSError as err:
            if isinstance(err, PermissionError):
                reason = "permission_denied"
            elif isinstance(err, (FileNotFoundError, NotADirectoryError)):
                reason = "vanished"  # removed or replaced since its parent was listed
            else:
                reason = "os_error"
            self.skip(Skipped(path, reason, _describe(err)))
        entries.sort(key=_by_name)
        return entries


def _has_ancestor_in(path: str, folders: set[str], *, strict: bool) -> bool:
    """Whether `path` (or, unless `strict`, `path` itself) is inside one of `folders`."""
    if not folders:
        return False
    if not strict and path in folders:
        return True
    while True:
        parent = os.path.dirname(path)
        if parent == path:
            return False
        if parent in folders:
            return True
        path = parent


def _read_mount_types() -> dict[int, str]:
    """st_dev -> file system type, from the mount table; empty where there is none."""
    types: dict[int, str] = {}
    try:
        with open(_MOUNTINFO, "rb") as fh:
            data = fh.read()
    except OSError:
        return types
    for line in data.splitlines():
        # "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw": the
        # optional fields end at "-", then the type.
        fields = line.split()
        try:
            major, minor = fields[2].split(b":")
            fs_type = fields[fields.index(b"-") + 1]
            types[os.makedev(int(major), int(minor))] = fs_type.decode("ascii", "replace")
        except (ValueError, IndexError):
            continue
    return types


def _ignore(_skipped: Skipped) -> None:
    pass


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
