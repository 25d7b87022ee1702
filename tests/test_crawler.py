"""Tests for indexer.crawler on a real file system (no mocks)."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import in_child_obeying_permissions

from indexer.crawler import SPECIAL_FS_TYPES, FoundFile, Skipped, _read_mount_types, iter_files


def crawl(
    *roots: str | os.PathLike[str], follow_symlinks: bool = True
) -> tuple[list[FoundFile], list[Skipped]]:
    skipped: list[Skipped] = []
    found = list(iter_files(roots, follow_symlinks=follow_symlinks, on_skip=skipped.append))
    return found, skipped


def crawl_with_timeout(root: Path, timeout: float = 10.0) -> tuple[list[FoundFile], list[Skipped]]:
    """Crawl in a daemon thread so a crawler that blocks (e.g. opening a FIFO) fails the test."""
    result: list[tuple[list[FoundFile], list[Skipped]]] = []
    thread = threading.Thread(target=lambda: result.append(crawl(root)), daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        pytest.fail(f"crawl of {root} still running after {timeout}s: it blocked")
    assert result, "crawl thread raised"
    return result[0]


def rel(found: list[FoundFile], root: Path) -> list[str]:
    return [os.path.relpath(f.path, root) for f in found]


def touch(path: Path, data: bytes = b"") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_nested_folders_in_sorted_deterministic_order(tmp_path: Path) -> None:
    names = ["b/2.dcm", "b/1", "a.dcm", "c/z/9", "c/a/8", "bb", "b0/x", "c/m"]
    for name in names:
        touch(tmp_path / name)
    (tmp_path / "empty").mkdir()

    found, skipped = crawl(tmp_path)

    # Depth first, each folder in name order, subfolders walked where they sort.
    expected = sorted(names, key=lambda p: p.split("/"))
    assert rel(found, tmp_path) == expected
    assert skipped == []
    assert rel(crawl(tmp_path)[0], tmp_path) == expected
    assert all(os.path.isabs(f.path) and f.path == os.path.abspath(f.path) for f in found)


def test_relative_root_gives_absolute_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    touch(tmp_path / "d" / "f")
    monkeypatch.chdir(tmp_path)
    found, _ = crawl("./d/../d")
    assert [f.path for f in found] == [str(tmp_path / "d" / "f")]


def test_file_as_root(tmp_path: Path) -> None:
    f = touch(tmp_path / "one.dcm", b"abc")
    found, skipped = crawl(f)
    assert found == [FoundFile(str(f), 3, f.stat().st_mtime_ns)]
    assert skipped == []


def test_several_roots_in_given_order(tmp_path: Path) -> None:
    a = touch(tmp_path / "z" / "a")
    b = touch(tmp_path / "b")
    found, _ = crawl(tmp_path / "z", b)
    assert [f.path for f in found] == [str(a), str(b)]


def test_missing_root(tmp_path: Path) -> None:
    touch(tmp_path / "real")
    missing = tmp_path / "nope"
    found, skipped = crawl(missing, tmp_path)
    assert rel(found, tmp_path) == ["real"]
    assert [(s.path, s.reason) for s in skipped] == [(str(missing), "not_found")]


def test_size_and_mtime_ns(tmp_path: Path) -> None:
    f = touch(tmp_path / "f.dcm", b"x" * 1234)
    os.utime(f, ns=(1_000_000_000_123_456_789, 1_600_000_000_987_654_321))
    (found,), _ = crawl(tmp_path)
    assert found.size == 1234
    assert found.mtime_ns == os.stat(f).st_mtime_ns
    assert found.mtime_ns % 1_000_000_000 != 0  # nanoseconds kept, not rounded to seconds


def test_symlink_loop_terminates(tmp_path: Path) -> None:
    touch(tmp_path / "top" / "sub" / "f")
    loop = tmp_path / "top" / "sub" / "loop"
    loop.symlink_to("..", target_is_directory=True)  # points at its grandparent "top"

    found, skipped = crawl_with_timeout(tmp_path / "top")

    assert rel(found, tmp_path) == ["top/sub/f"]
    assert [(s.path, s.reason) for s in skipped] == [(str(loop), "symlink_loop")]


def test_two_links_to_one_folder_walked_once(tmp_path: Path) -> None:
    touch(tmp_path / "real" / "f")
    (tmp_path / "alias").symlink_to(tmp_path / "real", target_is_directory=True)

    found, skipped = crawl(tmp_path)

    # "alias" sorts first, so the folder is walked through the link.
    assert rel(found, tmp_path) == ["alias/f"]
    assert [(s.path, s.reason) for s in skipped] == [(str(tmp_path / "real"), "symlink_loop")]


def test_symlink_to_file_is_yielded_under_link_path(tmp_path: Path) -> None:
    target = touch(tmp_path / "data" / "target.dcm", b"12345")
    link = tmp_path / "link.dcm"
    link.symlink_to(target)

    found, skipped = crawl(tmp_path)

    assert rel(found, tmp_path) == ["data/target.dcm", "link.dcm"]
    assert found[1] == FoundFile(str(link), 5, target.stat().st_mtime_ns)
    assert skipped == []


def test_dangling_symlink_recorded(tmp_path: Path) -> None:
    touch(tmp_path / "ok")
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "gone")

    found, skipped = crawl(tmp_path)

    assert rel(found, tmp_path) == ["ok"]
    assert skipped == [Skipped(str(dangling), "os_error", "dangling symlink")]


def test_dangling_symlink_as_root(tmp_path: Path) -> None:
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "gone")
    assert crawl(dangling) == ([], [Skipped(str(dangling), "os_error", "dangling symlink")])


def test_symlink_chain_loop_to_itself(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.symlink_to(b)
    b.symlink_to(a)
    found, skipped = crawl(tmp_path)
    assert found == []
    assert [(s.path, s.reason) for s in skipped] == [
        (str(a), "symlink_loop"),
        (str(b), "symlink_loop"),
    ]


def test_follow_symlinks_false(tmp_path: Path) -> None:
    touch(tmp_path / "real" / "f")
    (tmp_path / "dirlink").symlink_to(tmp_path / "real", target_is_directory=True)
    (tmp_path / "filelink").symlink_to(tmp_path / "real" / "f")
    (tmp_path / "dangling").symlink_to(tmp_path / "gone")

    found, skipped = crawl(tmp_path, follow_symlinks=False)

    assert rel(found, tmp_path) == ["real/f"]
    assert [(os.path.basename(s.path), s.reason, s.detail) for s in skipped] == [
        ("dangling", "not_regular", "symlink"),
        ("dirlink", "not_regular", "symlink"),
        ("filelink", "not_regular", "symlink"),
    ]


def test_fifo_and_socket_never_block(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    touch(tmp_path / "a.dcm")
    os.mkfifo(tmp_path / "fifo")
    # AF_UNIX paths are limited to ~108 bytes; bind a short relative name.
    monkeypatch.chdir(tmp_path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind("sock")
        found, skipped = crawl_with_timeout(tmp_path)
    finally:
        sock.close()

    assert rel(found, tmp_path) == ["a.dcm"]
    assert skipped == [
        Skipped(str(tmp_path / "fifo"), "not_regular", "FIFO"),
        Skipped(str(tmp_path / "sock"), "not_regular", "socket"),
    ]


def test_fifo_as_root_and_behind_symlink(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    (tmp_path / "link").symlink_to(fifo)
    found, skipped = crawl_with_timeout(tmp_path)
    assert found == []
    assert [(s.reason, s.detail) for s in skipped] == [("not_regular", "FIFO")] * 2


def test_device_is_not_regular() -> None:
    if not os.path.exists("/dev/null"):
        pytest.skip("no /dev/null")
    assert crawl("/dev/null") == ([], [Skipped("/dev/null", "not_regular", "device")])


def test_unreadable_folder(tmp_path: Path) -> None:
    """A folder nobody may list: permission_denied, and the walk goes on. As root too: the crawl
    runs in a child without root's power to ignore permission bits, wherever the clone sits."""
    touch(tmp_path / "a")
    locked = tmp_path / "locked"
    touch(locked / "secret")
    touch(tmp_path / "z")
    locked.chmod(0)
    try:
        (found, skipped), as_root = in_child_obeying_permissions(
            lambda: (crawl(tmp_path), crawl(locked))
        )
    finally:
        locked.chmod(0o755)

    denied = Skipped(str(locked), "permission_denied", "[Errno 13] Permission denied")
    assert rel(found, tmp_path) == ["a", "z"]
    assert skipped == [denied]
    assert as_root == ([], [denied])  # the folder named as a root


def test_unreadable_file_is_still_yielded(tmp_path: Path) -> None:
    f = touch(tmp_path / "f", b"abc")
    f.chmod(0)
    found, skipped = crawl(tmp_path)
    assert [x.path for x in found] == [str(f)]
    assert skipped == []


def _crawl_and_delete(root: Path, victim: Path) -> tuple[list[FoundFile], list[Skipped]]:
    """Delete `victim` after the first file is yielded, i.e. after its folder was listed."""
    skipped: list[Skipped] = []
    found: list[FoundFile] = []
    gen: Iterator[FoundFile] = iter_files([root], on_skip=skipped.append)
    found.append(next(gen))
    if victim.is_dir():
        for child in sorted(victim.rglob("*"), reverse=True):
            child.unlink() if child.is_file() else child.rmdir()
        victim.rmdir()
    else:
        victim.unlink()
    found.extend(gen)
    return found, skipped


def test_file_vanishing_during_crawl(tmp_path: Path) -> None:
    touch(tmp_path / "a")
    touch(tmp_path / "b")
    touch(tmp_path / "c")
    found, skipped = _crawl_and_delete(tmp_path, tmp_path / "b")
    assert rel(found, tmp_path) == ["a", "c"]
    assert [(s.path, s.reason) for s in skipped] == [(str(tmp_path / "b"), "vanished")]


def test_folder_vanishing_during_crawl(tmp_path: Path) -> None:
    touch(tmp_path / "a")
    touch(tmp_path / "d" / "e" / "f")
    touch(tmp_path / "z")
    found, skipped = _crawl_and_delete(tmp_path, tmp_path / "d")
    assert rel(found, tmp_path) == ["a", "z"]
    assert [(s.path, s.reason) for s in skipped] == [(str(tmp_path / "d"), "vanished")]


def test_non_utf8_file_name(tmp_path: Path) -> None:
    raw = os.fsencode(tmp_path) + b"/caf\xe9.dcm"
    fd = os.open(raw, os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        os.write(fd, b"DICM")
    finally:
        os.close(fd)

    (found,), skipped = crawl(tmp_path)

    assert skipped == []
    assert os.fsencode(found.path) == raw
    assert found.size == 4
    with open(os.fsencode(found.path), "rb") as fh:
        assert fh.read() == b"DICM"


def test_long_path(tmp_path: Path) -> None:
    deep = tmp_path
    for i in range(8):
        deep = deep / (f"{i}_" + "d" * 48)
    f = touch(deep / ("f" * 200 + ".dcm"), b"xy")
    assert len(str(f)) > 255 + len(str(tmp_path))

    found, skipped = crawl(tmp_path)

    assert [x.path for x in found] == [str(f)]
    assert found[0].size == 2
    assert skipped == []


def test_deep_tree_beyond_recursion_limit(tmp_path: Path) -> None:
    # 1500 levels of 1-character names: deeper than the default recursion limit,
    # yet well under PATH_MAX. Built and removed one level at a time, because
    # pathlib's mkdir(parents=True) and (before 3.12) shutil.rmtree recurse.
    levels = [str(tmp_path) + "/d" * n for n in range(1, 1501)]
    f = levels[-1] + "/f"
    try:
        for level in levels:
            os.mkdir(level)
        open(f, "wb").close()
        found, skipped = crawl(tmp_path)
    finally:
        if os.path.exists(f):
            os.unlink(f)
        for level in reversed(levels):
            if os.path.isdir(level):
                os.rmdir(level)
    assert [x.path for x in found] == [f]
    assert skipped == []


def test_is_a_lazy_generator(tmp_path: Path) -> None:
    gen = iter_files([tmp_path / "missing"], on_skip=lambda s: pytest.fail("ran eagerly"))
    assert isinstance(gen, Iterator)  # nothing ran yet: on_skip would have failed


def _check_against_manifest(directory: Path, manifest: list[dict[str, str]]) -> None:
    expected = {row["relpath"]: int(row["bytes"]) for row in manifest}
    found, skipped = crawl(directory)
    paths = rel(found, directory)
    assert len(paths) == len(set(paths))
    assert set(paths) == set(expected) | {"README.md", "MANIFEST.tsv", "LICENSES.md"}
    assert {p: f.size for p, f in zip(paths, found, strict=False) if p in expected} == expected
    assert skipped == []


def test_sample_data(sample_dir: Path, sample_manifest: list[dict[str, str]]) -> None:
    _check_against_manifest(sample_dir, sample_manifest)


@pytest.mark.corpus
def test_real_corpus(corpus_dir: Path, corpus_manifest: list[dict[str, str]]) -> None:
    _check_against_manifest(corpus_dir, corpus_manifest)


# -- overlapping roots: each file once ---------------------------------------------------------


@pytest.mark.parametrize(
    "names",
    [
        ["d", "d/sub/f2"],  # a folder and a file inside it
        ["d/sub/f2", "d"],  # the same, file first
        ["d/sub/f2", "d/sub/f2"],  # one file twice
        ["d", "d"],  # one folder twice
        ["d/sub", "d"],  # a folder and its parent
        ["d", "d/sub", "d/./sub/../sub"],  # spelt differently
        ["alias", "d"],  # a symlink to a root, and the root
        ["d", "alias/sub/f2"],  # a file root reached through a link, inside a folder root
    ],
)
def test_overlapping_roots_yield_each_file_once(tmp_path: Path, names: list[str]) -> None:
    touch(tmp_path / "d" / "f1")
    touch(tmp_path / "d" / "sub" / "f2")
    (tmp_path / "alias").symlink_to(tmp_path / "d", target_is_directory=True)

    found, skipped = crawl(*(tmp_path / name for name in names))

    real = [os.path.relpath(os.path.realpath(f.path), tmp_path) for f in found]
    expected = ["d/sub/f2"] if all(n.endswith("f2") for n in names) else ["d/f1", "d/sub/f2"]
    assert sorted(real) == expected
    assert skipped == []  # an overlap is not a problem of the file system


def test_overlapping_roots_keep_the_outer_root_where_it_was_named(tmp_path: Path) -> None:
    touch(tmp_path / "a" / "x")
    touch(tmp_path / "d" / "sub" / "f")
    found, _ = crawl(tmp_path / "d" / "sub", tmp_path / "a", tmp_path / "d")
    assert rel(found, tmp_path) == ["a/x", "d/sub/f"]


def test_link_into_another_root_is_walked_once_under_that_root(tmp_path: Path) -> None:
    touch(tmp_path / "r1" / "f")
    touch(tmp_path / "r2" / "g")
    (tmp_path / "r1" / "to_r2").symlink_to(tmp_path / "r2", target_is_directory=True)
    found, skipped = crawl(tmp_path / "r1", tmp_path / "r2")
    assert rel(found, tmp_path) == ["r1/f", "r2/g"]
    assert [(s.path, s.reason) for s in skipped] == [(str(tmp_path / "r1/to_r2"), "symlink_loop")]


def test_link_inside_a_root_nested_in_a_link_root(tmp_path: Path) -> None:
    """Roots are compared by real path: a root named through a link still holds its files."""
    touch(tmp_path / "store" / "sub" / "f")
    (tmp_path / "view").mkdir()
    (tmp_path / "view" / "s").symlink_to(tmp_path / "store", target_is_directory=True)
    found, skipped = crawl(tmp_path / "view", tmp_path / "view" / "s" / "sub")
    # "view/s" leads outside the real path of "view"; the second root is its own.
    assert rel(found, tmp_path) == ["view/s/sub/f"]
    assert [(s.path, s.reason) for s in skipped] == [(str(tmp_path / "view/s"), "outside_roots")]


# -- the crawl stays where it was sent ---------------------------------------------------------


def _outside_tree(tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    touch(root / "in.dcm")
    touch(outside / "deep" / "out.dcm", b"xyz")
    (root / "to_folder").symlink_to(outside, target_is_directory=True)
    (root / "to_file.dcm").symlink_to(outside / "deep" / "out.dcm")
    (root / "inner").symlink_to(root / "in.dcm")  # inside the root: followed as before
    return root, outside


def test_links_outside_the_roots_are_not_followed(tmp_path: Path) -> None:
    root, _ = _outside_tree(tmp_path)
    found, skipped = crawl(root)
    assert rel(found, root) == ["in.dcm", "inner"]
    assert skipped == [
        Skipped(str(root / "to_file.dcm"), "outside_roots", "symlink to a file outside the roots"),
        Skipped(str(root / "to_folder"), "outside_roots", "symlink to a folder outside the roots"),
    ]


def test_links_outside_the_roots_are_followed_when_asked(tmp_path: Path) -> None:
    root, _ = _outside_tree(tmp_path)
    (tmp_path / "outside" / "back").symlink_to(root, target_is_directory=True)  # a loop
    skipped: list[Skipped] = []
    found = list(iter_files([root], follow_outside=True, on_skip=skipped.append))
    assert rel(found, root) == ["in.dcm", "inner", "to_file.dcm", "to_folder/deep/out.dcm"]
    assert [(os.path.relpath(s.path, root), s.reason) for s in skipped] == [
        ("to_folder/back", "symlink_loop")
    ]


def test_link_to_a_second_root_is_inside(tmp_path: Path) -> None:
    root, outside = _outside_tree(tmp_path)
    found, skipped = crawl(root, outside)
    assert rel(found, tmp_path) == [
        "root/in.dcm",
        "root/inner",
        "root/to_file.dcm",
        "outside/deep/out.dcm",
    ]
    assert [(s.path, s.reason) for s in skipped] == [(str(root / "to_folder"), "symlink_loop")]


def test_mount_table_names_proc() -> None:
    if not os.path.exists("/proc/self/mountinfo"):
        pytest.skip("no /proc/self/mountinfo")
    types = _read_mount_types()
    assert types[os.stat("/proc").st_dev] == "proc"


@pytest.mark.parametrize("target", ["/proc", "/sys", "/dev", "/proc/1", "/sys/kernel"])
@pytest.mark.parametrize("follow", [False, True])
def test_special_file_systems_are_never_entered(tmp_path: Path, target: str, follow: bool) -> None:
    if not os.path.isdir(target):
        pytest.skip(f"no {target}")
    touch(tmp_path / "f")
    (tmp_path / "link").symlink_to(target, target_is_directory=True)
    found, skipped = crawl_with_timeout_follow(tmp_path, follow)
    assert rel(found, tmp_path) == ["f"]
    reason = "special_fs" if follow else "outside_roots"
    assert [(s.path, s.reason) for s in skipped] == [(str(tmp_path / "link"), reason)]
    if follow:
        assert skipped[0].detail.removesuffix(" file system") in SPECIAL_FS_TYPES


def crawl_with_timeout_follow(
    root: Path, follow: bool, timeout: float = 20.0
) -> tuple[list[FoundFile], list[Skipped]]:
    result: list[tuple[list[FoundFile], list[Skipped]]] = []

    def run() -> None:
        skipped: list[Skipped] = []
        found = list(iter_files([root], follow_outside=follow, on_skip=skipped.append))
        result.append((found, skipped))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        pytest.fail(f"crawl of {root} still running after {timeout}s")
    assert result, "crawl thread raised"
    return result[0]


@pytest.mark.parametrize("root", ["/proc", "/sys", "/proc/self/status", "/sys/kernel"])
def test_special_file_system_as_root(root: str) -> None:
    if not os.path.exists(root):
        pytest.skip(f"no {root}")
    found, skipped = crawl(root)
    assert found == []
    assert [(s.path, s.reason) for s in skipped] == [(root, "special_fs")]


def test_link_to_proc_self_followed_stays_out_of_proc(tmp_path: Path) -> None:
    """The issue's case: through /proc/N a crawl reached other processes' folders (cwd, root)."""
    touch(tmp_path / "f")
    (tmp_path / "me").symlink_to("/proc/self", target_is_directory=True)
    found, skipped = crawl_with_timeout_follow(tmp_path, True)
    assert rel(found, tmp_path) == ["f"]
    assert [(s.path, s.reason) for s in skipped] == [(str(tmp_path / "me"), "special_fs")]


def test_device_file_and_fifo_behind_links_outside(tmp_path: Path) -> None:
    (tmp_path / "null").symlink_to("/dev/null")
    fifo_dir = tmp_path.parent / (tmp_path.name + "-fifo")
    fifo_dir.mkdir()
    os.mkfifo(fifo_dir / "p")
    (tmp_path / "pipe").symlink_to(fifo_dir / "p")
    found, skipped = crawl_with_timeout(tmp_path)
    assert found == []
    assert [(os.path.basename(s.path), s.reason) for s in skipped] == [
        ("null", "not_regular"),
        ("pipe", "not_regular"),
    ]
