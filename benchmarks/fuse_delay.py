"""A read-only FUSE passthrough that adds a fixed delay to every operation: a network share on one machine.

Each metadata operation (getattr, readdir, readlink, open, access, statfs) sleeps
``--delay-ms`` before it answers, each read ``--read-delay-ms`` (default: the same), the
way every NFS/SMB round trip does. ``flush`` and ``release`` of a read-only file are not
delayed: NFS sends nothing for them. The kernel's own caches stay as libfuse sets them
(attributes and names for 1 s, no page cache kept across opens), so a stat right after
a listing is served by the kernel, and every open reads from the "server" again.

The server is multi-threaded (libfuse's loop): concurrent requests wait their delays
in parallel, as on a real share.

Run ``python benchmarks/fuse_delay.py mount DIR MOUNTPOINT --delay-ms 1`` (foreground;
Ctrl-C or SIGTERM unmounts). ``mounted(...)`` does the same from Python and always
unmounts (``fusermount3 -u``) when its block ends, by failure or Ctrl-C too.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

MOUNT_TIMEOUT_S = 20.0
STAT_KEYS = (
    "st_mode",
    "st_ino",
    "st_dev",
    "st_nlink",
    "st_uid",
    "st_gid",
    "st_size",
    "st_atime",
    "st_mtime",
    "st_ctime",
)


def _operations(source: str, delay_s: float, read_delay_s: float) -> Any:
    import mfusepy as fuse  # imported here: the module also serves `mounted()` without it

    def real(path: str) -> str:
        return os.path.join(source, path.lstrip("/"))

    def raised(err: OSError) -> fuse.FuseOSError:
        return fuse.FuseOSError(err.errno or errno.EIO)

    class DelayedPassthrough(fuse.Operations):  # type: ignore[misc]
        use_ns = True

        def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
            time.sleep(delay_s)
            try:
                st = os.lstat(real(path))
            except OSError as err:
                raise raised(err) from None
            found = {key: getattr(st, key) for key in STAT_KEYS}
            for key in ("st_atime", "st_mtime", "st_ctime"):
                found[key] = getattr(st, key + "_ns")
            return found

        def readdir(self, path: str, fh: int) -> list[str]:
            time.sleep(delay_s)
            try:
                return [".", "..", *os.listdir(real(path))]
            except OSError as err:
                raise raised(err) from None

        def readlink(self, path: str) -> str:
            time.sleep(delay_s)
            try:
                return os.readlink(real(path))
            except OSError as err:
                raise raised(err) from None

        def access(self, path: str, amode: int) -> int:
            time.sleep(delay_s)
            if not os.access(real(path), amode):
                raise fuse.FuseOSError(errno.EACCES)
            return 0

        def statfs(self, path: str) -> dict[str, int]:
            time.sleep(delay_s)
            st = os.statvfs(real(path))
            keys = ("f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail", "f_ffree")
            return {key: getattr(st, key) for key in (*keys, "f_files", "f_flag", "f_namemax")}

        def open(self, path: str, flags: int) -> int:
            time.sleep(delay_s)
            if flags & (os.O_WRONLY | os.O_RDWR):
                raise fuse.FuseOSError(errno.EROFS)
            try:
                return os.open(real(path), os.O_RDONLY | os.O_NONBLOCK)
            except OSError as err:
                raise raised(err) from None

        def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
            time.sleep(read_delay_s)
            return os.pread(fh, size, offset)

        def release(self, path: str, fh: int) -> int:
            os.close(fh)
            return 0

    return DelayedPassthrough()


def serve(source: str, mountpoint: str, delay_ms: float, read_delay_ms: float | None) -> None:
    """Mount `source` at `mountpoint` and serve it until unmounted (blocks)."""
    import mfusepy as fuse

    read_ms = delay_ms if read_delay_ms is None else read_delay_ms
    ops = _operations(os.path.abspath(source), delay_ms / 1000, read_ms / 1000)
    # Up to 64 requests served at once (libfuse 3 serves 10 by default): a share answers many.
    fuse.FUSE(ops, mountpoint, foreground=True, ro=True, fsname="fuse_delay", max_threads=64)


def unmount(mountpoint: str) -> None:
    """Unmount (lazily if busy); a mountpoint that is not mounted is left alone."""
    if not os.path.ismount(mountpoint):
        return
    tool = shutil.which("fusermount3") or shutil.which("fusermount") or "fusermount3"
    done = subprocess.run([tool, "-u", mountpoint], capture_output=True, check=False)
    if done.returncode != 0 and os.path.ismount(mountpoint):
        subprocess.run([tool, "-u", "-z", mountpoint], capture_output=True, check=False)


@contextlib.contextmanager
def mounted(
    source: str | Path,
    mountpoint: str | Path,
    *,
    delay_ms: float,
    read_delay_ms: float | None = None,
) -> Iterator[Path]:
    """Serve `source` at `mountpoint` behind the delay in a child process for the block.

    Raises RuntimeError when it did not mount within MOUNT_TIMEOUT_S (the child's error
    text included). The mount and the child are gone when the block ends, however.
    """
    mnt = os.path.abspath(mountpoint)
    os.makedirs(mnt, exist_ok=True)
    cmd = [sys.executable, os.path.abspath(__file__), "mount", os.fspath(source), mnt]
    cmd += ["--delay-ms", str(delay_ms)]
    if read_delay_ms is not None:
        cmd += ["--read-delay-ms", str(read_delay_ms)]
    child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + MOUNT_TIMEOUT_S
        while not os.path.ismount(mnt):
            if child.poll() is not None or time.monotonic() > deadline:
                err = child.stderr.read().decode(errors="replace") if child.stderr else ""
                child.kill()
                last = err.strip().splitlines()[-1:] or ["timed out"]
                raise RuntimeError(f"FUSE mount failed: {last[0]}")
            time.sleep(0.05)
        yield Path(mnt)
    finally:
        unmount(mnt)
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        if child.stderr:
            child.stderr.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    mount = sub.add_parser("mount", help="serve DIR at MOUNTPOINT until Ctrl-C or SIGTERM")
    mount.add_argument("source")
    mount.add_argument("mountpoint")
    mount.add_argument("--delay-ms", type=float, default=1.0, help="per metadata operation")
    mount.add_argument("--read-delay-ms", type=float, default=None, help="per read (default: same)")
    args = parser.parse_args(argv)

    try:
        serve(args.source, args.mountpoint, args.delay_ms, args.read_delay_ms)
    finally:
        unmount(args.mountpoint)
    return 0


if __name__ == "__main__":
    sys.exit(main())
