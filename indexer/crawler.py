"""Walk folder trees and yield every regular file as a candidate for the reader.

Whether a file is DICOM is decided later, by content: many archives have no
``.dcm`` suffix. The crawler only lists and stats; it never opens a file, so a
FIFO or a device can never block it. Anything it cannot or must not yield is
reported through ``on_skip`` and the walk goes on.

On a network file system, where every listing and stat is a round trip, a pool of
threads lists the folders the walk will reach next (bounded) while the walk goes on in
the caller's thread; the walk decides everything in the same order as without threads,
so the files, the skipped paths and their order are the same.

The crawl stays where it was sent: roots that overlap are crawled once, symlinks
that lead outside the roots are not followed unless asked, and special file
systems (``/proc``, ``/sys``, ``/dev``, ...) are never entered.
"""

from __future__ import annotations

import errno
import heapq
import os
import stat
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from operator import attrgetter

from .netfs import CRAWL_THREADS, is_network_path

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
STAT_SLICE = 64  # entries of one folder statted by one thread, when threads list ahead
Key = tuple[int, ...]  # a folder's place in the walk: its index in each ancestor's listing


def iter_files(
    roots: Iterable[str | os.PathLike[str]],
    *,
    follow_symlinks: bool = True,
    follow_outside: bool = False,
    on_skip: SkipHandler | None = None,
    threads: int | None = None,
    max_ahead: int | None = None,
) -> Iterator[FoundFile]:
    """Yield every regular file under ``roots``, depth first, in name order, each once.

    Each root may be a file (yielded as is) or a folder (walked). Entries of a
    folder are sorted by name and a subfolder is walked where it sorts, so two
    runs over the same tree give the same sequence. Memory is bounded by the
    depth of the tree and the number of folders, not the number of files
    (plus, with threads, at most ``max_ahead`` folder listings).

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
        threads: Threads that list folders ahead of the walk (scandir and a stat
            of each entry). None (the default): CRAWL_THREADS when a folder root
            is on a network file system (netfs.is_network_path), else 0 (all in
            the caller's thread). The result is the same either way.
        max_ahead: At most this many folders listed ahead and not yet walked
            (default 4 per thread): the memory bound of the threads.

    Returns:
        An iterator of :class:`FoundFile`, one per regular file. Unreadable
        files are still yielded: the reader records files it cannot open.

    Raises:
        Nothing of its own: file system errors are reported through
        ``on_skip``. An exception raised by ``on_skip`` propagates.
    """
    crawl = _Crawl(follow_symlinks, follow_outside, on_skip or _ignore)
    kept = crawl.resolve_roots(roots)
    if threads is None:
        threads = CRAWL_THREADS if any(r.is_dir and is_network_path(r.path) for r in kept) else 0
    crawl.lister = _Lister(follow_symlinks, threads, max_ahead or 4 * threads)
    try:
        for number, root in enumerate(kept):
            if root.is_dir:
                yield from crawl.walk(root.path, root.dev, root.ino, (number,))
            else:
                yield FoundFile(root.path, root.size, root.mtime_ns)
    finally:
        crawl.lister.close()  # also when the caller stops iterating early


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
        self.lister = _Lister(follow_symlinks, 0, 0)

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

    def walk(self, top: str, top_dev: int, top_ino: int, top_key: Key) -> Iterator[FoundFile]:
        # An explicit stack of per-folder iterators instead of recursion: archive
        # trees can be deeper than Python's recursion limit. Beside each, the folder's
        # st_dev (a file system is checked only where the walk crosses into another)
        # and its place in the walk (the lister's key).
        entries = self._take(top, top_key, top_dev, top_ino)
        if not entries:
            return
        stack: list[tuple[Iterator[tuple[int, _Entry | os.DirEntry[str]]], int, Key]] = [
            (enumerate(entries), top_dev, top_key)
        ]
        skip = self.skip
        visited = self.visited
        check_links = not self.follow_outside
        S_ISREG = stat.S_ISREG
        S_ISDIR = stat.S_ISDIR
        while stack:
            folder, dev, key = stack[-1]
            for number, entry in folder:
                if not isinstance(entry, _Entry):
                    entry = _stat_entry(entry, self.follow_symlinks)
                st = entry.st
                if st is None:
                    skip(_not_statted(entry))
                    continue
                link = entry.link
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
                ino_key = (st.st_dev, st.st_ino)
                if ino_key in visited:
                    skip(Skipped(entry.path, "symlink_loop", "folder already visited"))
                    continue
                visited.add(ino_key)
                sub_key = (*key, number)
                sub = self._take(entry.path, sub_key, st.st_dev, st.st_ino)
                if sub:
                    stack.append((enumerate(sub), st.st_dev, sub_key))
                    break  # walk the subfolder now, then resume this one
            else:
                stack.pop()

    def _take(self, path: str, key: Key, dev: int, ino: int) -> list[_Entry | os.DirEntry[str]]:
        listing = self.lister.take(path, key, dev, ino)
        if listing.error is not None:
            err = listing.error
            if isinstance(err, PermissionError):
                reason = "permission_denied"
            elif isinstance(err, (FileNotFoundError, NotADirectoryError)):
                reason = "vanished"  # removed or replaced since its parent was listed
            else:
                reason = "os_error"
            self.skip(Skipped(path, reason, _describe(err)))
        return listing.entries

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


@dataclass(slots=True)
class _Entry:
    """One name of a listed folder, with its stat (or the error that stat raised).

    ``st`` and ``error`` are both None for a symlink that is not followed.
    """

    path: str
    link: bool
    st: os.stat_result | None
    error: OSError | None


@dataclass(slots=True)
class _Listing:
    # Sorted by name; what was listed before an error too. Listed in the walk's own
    # thread, the entries are not statted yet (os.DirEntry): the walk stats each when it
    # gets there, so what changed meanwhile is seen as it always was.
    entries: list[_Entry | os.DirEntry[str]]
    error: OSError | None


def _list_folder(
    path: str, follow_symlinks: bool, *, stat_now: bool, stat_pool: ThreadPoolExecutor | None = None
) -> _Listing:
    """List `path` sorted by name; stat each entry now or, unless `stat_now`, later.

    With `stat_pool`, the entries of a large folder are statted by its threads in slices.
    """
    raw: list[os.DirEntry[str]] = []
    error: OSError | None = None
    try:
        with os.scandir(path) as it:
            # extend() keeps what was listed if reading fails midway.
            raw.extend(it)
    except OSError as err:
        error = err
    raw.sort(key=_by_name)
    if not stat_now:
        return _Listing(list(raw), error)
    statted: list[_Entry | os.DirEntry[str]] = []
    if stat_pool is None or len(raw) <= STAT_SLICE:
        statted.extend(_stat_entry(e, follow_symlinks) for e in raw)
    else:
        # A flat folder of thousands of files: one round trip per stat, so in parallel too.
        slices = [raw[n : n + STAT_SLICE] for n in range(0, len(raw), STAT_SLICE)]
        for done in stat_pool.map(
            lambda part: [_stat_entry(e, follow_symlinks) for e in part], slices
        ):
            statted.extend(done)
    return _Listing(statted, error)


def _stat_entry(entry: os.DirEntry[str], follow_symlinks: bool) -> _Entry:
    link = False
    try:
        # is_symlink() comes from d_type, no system call. stat() is the one system
        # call per entry; for a non-symlink it is an lstat.
        link = entry.is_symlink()
        if link and not follow_symlinks:
            return _Entry(entry.path, True, None, None)
        return _Entry(entry.path, link, entry.stat(), None)
    except OSError as err:
        return _Entry(entry.path, link, None, err)


class _Slot:
    __slots__ = ("done", "key", "listing")

    def __init__(self, key: Key) -> None:
        self.key = key
        self.listing: _Listing | None = None
        self.done = False


class _Lister:
    """Lists folders for the walk, ahead of it with `threads` threads.

    The threads guess which folders the walk takes next: the subfolders of every
    folder listed, nearest in walk order (depth first, in name order) first. They only
    guess plain folders on the same file system (never a symlink, so never a loop,
    a folder outside the roots or a special file system), and each real folder once.
    The walk still decides for itself, in its own order, whether to enter a folder;
    a listing it passes by is dropped. At most `max_ahead` listings are held.
    """

    def __init__(self, follow_symlinks: bool, threads: int, max_ahead: int) -> None:
        self.follow_symlinks = follow_symlinks
        self.max_ahead = max(1, max_ahead)
        self.cond = threading.Condition()
        self.wanted: list[tuple[Key, str, int, int]] = []  # heap: key, path, dev, ino
        self.held: dict[str, _Slot] = {}  # listed or being listed, not yet taken
        self.started: set[tuple[int, int]] = set()  # (dev, ino) listed once already
        self.position: Key = ()  # the walk's place: anything before it is behind
        self.closed = False
        self.peak_held = 0  # most listings held at once
        self.taken_ahead = 0  # listings the walk took from the threads
        # For the stats of large folders: the listing threads wait for them, so not theirs.
        self.stat_pool = ThreadPoolExecutor(threads, "crawl-stat") if threads else None
        self.threads = [
            threading.Thread(target=self._run, name=f"crawl-{n}", daemon=True)
            for n in range(threads)
        ]
        for thread in self.threads:
            thread.start()

    def take(self, path: str, key: Key, dev: int, ino: int) -> _Listing:
        """The listing of `path`, the folder at `key` of the walk (waits for a thread's)."""
        with self.cond:
            self.position = key
            for behind in [p for p, slot in self.held.items() if slot.key < key]:
                if self.held[behind].done:
                    del self.held[behind]  # the walk passed it by (a loop, say)
            slot = self.held.get(path)
            if slot is None:
                self.started.add((dev, ino))
            else:
                while not slot.done:
                    self.cond.wait()
                del self.held[path]
                self.taken_ahead += 1
                self.cond.notify_all()  # a place is free
        if slot is None or slot.listing is None:
            # Without threads the walk stats each entry when it gets there.
            listing = _list_folder(
                path, self.follow_symlinks, stat_now=bool(self.threads), stat_pool=self.stat_pool
            )
            self._want_children(key, dev, listing)
            return listing
        return slot.listing

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.held.clear()
            self.wanted.clear()
            self.cond.notify_all()
        if self.stat_pool is not None:
            self.stat_pool.shutdown(wait=False, cancel_futures=True)

    def _want_children(self, key: Key, dev: int, listing: _Listing) -> None:
        if not self.threads:
            return
        with self.cond:
            for number, entry in enumerate(listing.entries):
                if not isinstance(entry, _Entry):
                    continue
                st = entry.st
                if (
                    st is not None
                    and not entry.link
                    and stat.S_ISDIR(st.st_mode)
                    and st.st_dev == dev
                    and (dev, st.st_ino) not in self.started
                ):
                    heapq.heappush(self.wanted, ((*key, number), entry.path, dev, st.st_ino))
            self.cond.notify_all()

    def _next(self) -> tuple[str, Key, int] | None:
        """The next folder to list ahead (holding the lock), or None once closed."""
        while True:
            if self.closed:
                return None
            if self.wanted and len(self.held) < self.max_ahead:
                key, path, dev, ino = heapq.heappop(self.wanted)
                if key < self.position or (dev, ino) in self.started:
                    continue
                self.started.add((dev, ino))
                self.held[path] = _Slot(key)
                self.peak_held = max(self.peak_held, len(self.held))
                return path, key, dev
            self.cond.wait()

    def _run(self) -> None:
        while True:
            with self.cond:
                found = self._next()
            if found is None:
                return
            path, key, dev = found
            try:
                listing: _Listing | None = _list_folder(
                    path, self.follow_symlinks, stat_now=True, stat_pool=self.stat_pool
                )
            except Exception:  # the walk lists it itself
                listing = None
            with self.cond:
                slot = self.held.get(path)
                if slot is not None:
                    slot.listing, slot.done = listing, True
                self.cond.notify_all()
            if listing is not None and not self.closed:
                self._want_children(key, dev, listing)


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


def _not_statted(entry: _Entry) -> Skipped:
    if entry.error is not None:
        return _stat_error(entry.path, entry.error, root=False)
    return Skipped(entry.path, "not_regular", "symlink")  # links are not followed


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
