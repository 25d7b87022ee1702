"""Which paths are on a network file system, where every stat, open and read is a round trip.

The crawler lists folders with a pool of threads and the workers prefetch the bytes of the
next files only there: on a local disk those calls take microseconds and the threads would
only cost CPU. Decided from the mount table (``/proc/self/mountinfo``) by the longest mount
point that holds the path, so no system call touches the share to find out.
"""

from __future__ import annotations

import os
import threading

__all__ = ["CRAWL_THREADS", "NETWORK_FS_TYPES", "fs_type_of", "is_network_path"]

# NFS, SMB, cluster and user-space file systems (sshfs, s3fs, rclone, gcsfuse: fuse.*).
NETWORK_FS_TYPES = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "9p",
        "afs",
        "ceph",
        "glusterfs",
        "lustre",
        "gpfs",
        "beegfs",
        "ocfs2",
        "gfs2",
        "fuse",
        "fuseblk",
        "davfs",
        "virtiofs",
    }
)
CRAWL_THREADS = 16  # folders listed at once on a network file system

_MOUNTINFO = "/proc/self/mountinfo"
_lock = threading.Lock()
# The mount table as last read, and its parse: (mount point, type), longest first.
_table: tuple[bytes, list[tuple[str, str]]] = (b"", [])


def is_network_path(path: str | os.PathLike[str]) -> bool:
    """Whether `path` (made absolute, symlinks not resolved) is on a network file system.

    False where the mount table cannot be read (not Linux).
    """
    fs_type = fs_type_of(path)
    return fs_type in NETWORK_FS_TYPES or fs_type.startswith("fuse.")


def fs_type_of(path: str | os.PathLike[str]) -> str:
    """The type of the file system mounted where `path` lies, e.g. ``"ext4"``; "" if unknown."""
    full = os.path.abspath(os.fspath(path))
    for point, fs_type in _read_mount_points():
        if full == point or full.startswith(point.rstrip("/") + "/"):
            return fs_type
    return ""


def _read_mount_points() -> list[tuple[str, str]]:
    """The mount table, read each time (a share may be mounted at any time), parsed when new."""
    global _table
    try:
        with open(_MOUNTINFO, "rb") as fh:
            data = fh.read()
    except OSError:
        return []
    with _lock:
        if data == _table[0]:
            return _table[1]
    mounts: list[tuple[str, str]] = []
    for line in data.splitlines():
        # "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw": the mount
        # point is the fifth field (a space as \040), the type follows "-".
        fields = line.split()
        try:
            point = _unescape(fields[4])
            fs_type = fields[fields.index(b"-") + 1].decode("ascii", "replace")
        except (ValueError, IndexError):
            continue
        mounts.append((point, fs_type))
    # Longest first, so the innermost mount wins; a later mount over the same point too.
    mounts.reverse()
    mounts.sort(key=lambda m: len(m[0]), reverse=True)
    with _lock:
        _table = (data, mounts)
    return mounts


def _unescape(field: bytes) -> str:
    out = bytearray()
    i = 0
    while i < len(field):
        if field[i : i + 1] == b"\\" and field[i + 1 : i + 4].isdigit():
            out.append(int(field[i + 1 : i + 4], 8))
            i += 4
        else:
            out += field[i : i + 1]
            i += 1
    return os.fsdecode(bytes(out))
