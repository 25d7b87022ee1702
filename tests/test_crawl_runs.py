"""Whole runs over trees that test the crawl: overlapping roots, links out of the roots,
special file systems, and every odd thing a file system holds. Real folders, real databases.

tests/test_crawler.py checks the crawler alone; these check what lands in the index.
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
from pathlib import Path

import pytest
from helpers import in_child_obeying_permissions, obey_permission_bits, query, run_cli

from indexer.run import index_paths

DEPTH = 1200
SAMPLES = ["pydicom/rtplan.dcm", "pydicom/JPEG2000.dcm", "pydicom/MR_small_bigendian.dcm"]


def _tree(sample_dir: Path, root: Path) -> list[Path]:
    """root/a/<3 files>, root/a/sub/<1 file>."""
    placed = []
    for i, name in enumerate(SAMPLES):
        dst = root / "a" / ("sub" if i == 2 else "") / Path(name).name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(sample_dir / name, dst)
        placed.append(dst)
    return placed


def _paths(url: str) -> list[str]:
    return sorted(p for (p,) in query(url, "SELECT path FROM files"))


def _errors(url: str, base: Path) -> list[tuple[str, str, str, str]]:
    rows = query(url, "SELECT path, stage, reason, severity FROM errors")
    return sorted((os.path.relpath(p, base), st, r, sev) for p, st, r, sev in rows)


@pytest.mark.parametrize(
    "roots",
    [
        ["a", "a/sub/MR_small_bigendian.dcm"],  # the issue's `indexer index DIR DIR/file.dcm`
        ["a/rtplan.dcm", "a/rtplan.dcm"],  # one file twice
        ["a/sub", "a"],  # a folder and its parent
        ["a", "alias"],  # a folder and a link to it
    ],
)
def test_overlapping_roots_index_each_file_once(
    db_url: str, tmp_path: Path, sample_dir: Path, roots: list[str]
) -> None:
    placed = _tree(sample_dir, tmp_path)
    (tmp_path / "alias").symlink_to(tmp_path / "a", target_is_directory=True)

    report = index_paths([tmp_path / r for r in roots], db_url, workers=2)

    if all(r.endswith(".dcm") for r in roots):
        expected = sorted({str(tmp_path / r) for r in roots})
    else:
        expected = sorted(str(p) for p in placed)
    assert report.outcome == "completed"
    assert (report.files_seen, report.indexed, report.crawl_problems) == (
        len(expected),
        len(expected),
        0,
    )
    assert _paths(db_url) == expected
    assert query(db_url, "SELECT COUNT(*) FROM instances") == [(len(expected),)]
    assert query(db_url, "SELECT COUNT(*) FROM errors") == [(0,)]
    # A re-run over the same roots finds every file unchanged.
    again = index_paths([tmp_path / r for r in roots], db_url, workers=2)
    assert (again.unchanged, again.indexed, again.missing) == (len(expected), 0, 0)


def test_overlapping_roots_on_the_command_line(
    db_url: str, tmp_path: Path, sample_dir: Path
) -> None:
    _tree(sample_dir, tmp_path)
    ran = run_cli(
        ["index", "a", "a/sub/MR_small_bigendian.dcm", "a/sub", "--db", db_url, "-f", "json"],
        cwd=tmp_path,
    )
    assert ran.returncode == 0, ran.stderr
    assert '"indexed": 3' in ran.stdout
    assert len(_paths(db_url)) == 3


def _outside(sample_dir: Path, tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "root"
    (root / "own").mkdir(parents=True)
    shutil.copyfile(sample_dir / SAMPLES[0], root / "own" / "in.dcm")
    outside = tmp_path / "elsewhere"
    (outside / "x").mkdir(parents=True)
    shutil.copyfile(sample_dir / SAMPLES[1], outside / "x" / "out.dcm")
    shutil.copyfile(sample_dir / SAMPLES[2], outside / "single.dcm")
    (root / "to_folder").symlink_to(outside / "x", target_is_directory=True)
    (root / "to_file.dcm").symlink_to(outside / "single.dcm")
    (root / "to_own.dcm").symlink_to(root / "own" / "in.dcm")  # inside: indexed as before
    return root, outside


def test_links_out_of_the_roots_are_recorded_not_followed(
    db_url: str, tmp_path: Path, sample_dir: Path
) -> None:
    root, _ = _outside(sample_dir, tmp_path)

    report = index_paths([root], db_url, workers=2)

    assert report.outcome == "completed"
    assert _paths(db_url) == [str(root / "own" / "in.dcm"), str(root / "to_own.dcm")]
    assert _errors(db_url, root) == [
        ("to_file.dcm", "crawl", "outside_roots", "warning"),
        ("to_folder", "crawl", "outside_roots", "warning"),
    ]
    assert report.crawl_problems == 2


def test_follow_links_follows_them(db_url: str, tmp_path: Path, sample_dir: Path) -> None:
    root, outside = _outside(sample_dir, tmp_path)
    (outside / "x" / "back").symlink_to(root, target_is_directory=True)  # a loop through the link

    ran = run_cli(["index", str(root), "--db", db_url, "--follow-links", "-q"])

    assert ran.returncode == 0, ran.stderr
    assert _paths(db_url) == sorted(
        str(root / p) for p in ("own/in.dcm", "to_own.dcm", "to_file.dcm", "to_folder/out.dcm")
    )
    assert _errors(db_url, root) == [("to_folder/back", "crawl", "symlink_loop", "error")]
    # Without the option again: what only the links reached is missing now.
    report = index_paths([root], db_url, workers=0)
    assert report.missing == 2


@pytest.mark.parametrize("target", ["/proc", "/sys", "/dev", "/proc/self"])
def test_links_into_special_file_systems_never_entered(
    db_url: str, tmp_path: Path, sample_dir: Path, target: str
) -> None:
    """The issue: a link to /proc made a run crawl 430,592 entries (other processes' folders
    through /proc/N/cwd and /proc/N/root). Even with --follow-links nothing there is entered."""
    if not os.path.isdir(target):
        pytest.skip(f"no {target}")
    root = tmp_path / "root"
    root.mkdir()
    shutil.copyfile(sample_dir / SAMPLES[0], root / "in.dcm")
    (root / "link").symlink_to(target, target_is_directory=True)

    ran = run_cli(["index", str(root), "--db", db_url, "--follow-links", "-f", "json"], timeout=60)

    assert ran.returncode == 0, ran.stderr
    assert "Traceback" not in ran.stderr
    assert _paths(db_url) == [str(root / "in.dcm")]
    assert _errors(db_url, root) == [("link", "crawl", "special_fs", "warning")]
    index_paths([root], db_url, workers=0)  # and without the option: outside the roots
    assert _errors(db_url, root) == [("link", "crawl", "outside_roots", "warning")]


def test_special_file_system_as_root_is_refused_per_path(db_url: str, tmp_path: Path) -> None:
    if not os.path.isdir("/proc/self"):
        pytest.skip("no /proc")
    ran = run_cli(["index", "/proc/self", "/sys/kernel", "--db", db_url, "-f", "json"], timeout=60)
    assert ran.returncode == 0, ran.stderr
    assert '"files_seen": 0' in ran.stdout
    assert sorted(query(db_url, "SELECT path, reason FROM errors")) == [
        ("/proc/self", "special_fs"),
        ("/sys/kernel", "special_fs"),
    ]


def _odd_tree(sample_dir: Path, tmp_path: Path) -> tuple[Path, socket.socket]:
    """Every kind of thing a crawl meets, beside one good file."""
    root = tmp_path / "odd"
    root.mkdir()
    shutil.copyfile(sample_dir / SAMPLES[0], root / "good.dcm")
    os.mkfifo(root / "fifo.dcm")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(root / "sock.dcm"))
    if os.geteuid() == 0:
        os.mknod(root / "chardev.dcm", 0o600 | stat.S_IFCHR, os.makedev(1, 3))  # like /dev/null
    else:
        (root / "chardev.dcm").symlink_to("/dev/null")
    (root / "loop").mkdir()
    (root / "loop" / "up").symlink_to("..", target_is_directory=True)
    (root / "self.dcm").symlink_to("self.dcm")
    (root / "dangling.dcm").symlink_to("nowhere.dcm")
    raw = os.fsencode(root)
    os.mkdir(raw + b"/caf\xe9")
    with open(raw + b"/caf\xe9/n\xff.dcm", "wb") as fh:
        fh.write((sample_dir / SAMPLES[1]).read_bytes())
    (root / "locked").mkdir()
    shutil.copyfile(sample_dir / SAMPLES[2], root / "locked" / "hidden.dcm")
    os.chmod(root / "locked", 0)
    # Deeper than Python's recursion limit, below PATH_MAX; made (and removed) one level at a
    # time, since os.makedirs and shutil.rmtree recurse.
    deep = str(root / "deep")
    os.mkdir(deep)
    for _ in range(DEPTH):
        deep += "/d"
        os.mkdir(deep)
    shutil.copyfile(sample_dir / SAMPLES[2], deep + "/bottom.dcm")
    return root, sock


def _remove_deep(root: Path) -> None:
    deep = str(root / "deep") + "/d" * DEPTH
    os.unlink(deep + "/bottom.dcm")
    while deep != str(root):
        os.rmdir(deep)
        deep = os.path.dirname(deep)


def test_odd_tree_ends_cleanly(db_url: str, tmp_path: Path, sample_dir: Path) -> None:
    """FIFO, socket, device, loops, dangling link, non-UTF-8 names, an unreadable folder, a deep
    tree: the run completes, exit 0, no traceback, each oddity one errors row."""
    root, sock = _odd_tree(sample_dir, tmp_path)
    try:
        # As root, without root's power to ignore permission bits (helpers.obey_permission_bits).
        ran = in_child_obeying_permissions(
            lambda: run_cli(["index", str(root), "--db", db_url, "-f", "json"], timeout=120)
        )
    finally:
        sock.close()
        os.chmod(root / "locked", 0o755)
        _remove_deep(root)
    assert ran.returncode == 0, ran.stderr
    assert "Traceback" not in ran.stderr
    assert len(_paths(db_url)) == 3  # good.dcm, the non-UTF-8 one, the deep one
    got = [(p, reason) for p, _, reason, _ in _errors(db_url, root)]
    assert got == [
        ("chardev.dcm", "not_regular"),
        ("dangling.dcm", "os_error"),
        ("fifo.dcm", "not_regular"),
        ("locked", "permission_denied"),
        ("loop/up", "symlink_loop"),
        ("self.dcm", "symlink_loop"),
        ("sock.dcm", "not_regular"),
    ]


def test_obey_permission_bits_binds_root(tmp_path: Path) -> None:
    """The helper the unreadable-folder tests rely on: a mode-000 folder cannot be listed."""
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0)
    try:

        def probe() -> str:
            obey_permission_bits()
            try:
                os.listdir(locked)
            except PermissionError:
                return "denied"
            return "listed"

        assert in_child_obeying_permissions(probe) == "denied"
    finally:
        locked.chmod(0o755)
