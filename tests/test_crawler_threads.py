"""The crawler with threads listing ahead: the same files and skips, in the same order, bounded."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import in_child_obeying_permissions

from indexer import crawler
from indexer.crawler import FoundFile, Skipped, iter_files
from indexer.netfs import fs_type_of, is_network_path


def touch(path: Path | bytes, data: bytes = b"x") -> None:
    with open(path, "wb") as fh:
        fh.write(data)


def build_tree(root: Path) -> None:
    """Several levels of folders with files, every kind of skip, non-UTF-8 names, loops."""
    for p in range(4):
        for s in range(3):
            series = root / f"patient{p}" / f"study{s}"
            for n in range(2):
                (series / f"series{n}").mkdir(parents=True)
                for i in range(5):
                    touch(series / f"series{n}" / f"{i:03d}.dcm", b"y" * (i + 1))
    touch(root / "top.dcm")
    os.symlink(root, root / "patient1" / "loop")  # a loop back to the root
    os.symlink(root / "patient2", root / "patient0" / "again")  # a second way in
    os.symlink(root / "nowhere", root / "patient3" / "dangling")
    os.symlink("/", root / "patient3" / "outside")  # out of the roots: not followed
    os.mkfifo(root / "patient2" / "fifo")
    raw = os.fsencode(root / "patient1") + b"/caf\xe9"
    os.mkdir(raw)
    touch(raw + b"/\xff\xfe.dcm")
    (root / "locked").mkdir()
    touch(root / "locked" / "hidden.dcm")
    flat = root / "patient0" / "flat"  # more entries than one thread stats (STAT_SLICE)
    flat.mkdir()
    for i in range(3 * crawler.STAT_SLICE + 5):
        touch(flat / f"{i:04d}.dcm")
    os.symlink(flat / "0001.dcm", flat / "0002.link")
    os.mkfifo(flat / "0100.fifo")


def crawl(
    roots: list[Path], threads: int, max_ahead: int | None = None, follow_symlinks: bool = True
) -> tuple[list[FoundFile], list[Skipped]]:
    skipped: list[Skipped] = []
    found = list(
        iter_files(
            roots,
            threads=threads,
            max_ahead=max_ahead,
            follow_symlinks=follow_symlinks,
            on_skip=skipped.append,
        )
    )
    return found, skipped


@pytest.fixture
def made(monkeypatch: pytest.MonkeyPatch) -> list[crawler._Lister]:
    """Every lister the crawler makes, to read its figures afterwards (its code unchanged)."""
    listers: list[crawler._Lister] = []

    class Recorded(crawler._Lister):
        def __init__(self, *args: object) -> None:
            super().__init__(*args)  # type: ignore[arg-type]
            listers.append(self)

    monkeypatch.setattr(crawler, "_Lister", Recorded)
    return listers


@pytest.mark.parametrize("threads,max_ahead", [(1, 1), (4, 2), (16, None)])
def test_threads_give_the_serial_result(
    tmp_path: Path, threads: int, max_ahead: int | None, made: list[crawler._Lister]
) -> None:
    build_tree(tmp_path)
    locked = tmp_path / "locked"
    locked.chmod(0)
    try:
        serial, threaded = in_child_obeying_permissions(
            lambda: (crawl([tmp_path], 0), crawl([tmp_path], threads, max_ahead))
        )
    finally:
        locked.chmod(0o755)
    assert threaded == serial
    found, skipped = serial
    # Every series file, top.dcm, the non-UTF-8 one, the flat folder's files and link.
    assert len(found) == 4 * 3 * 2 * 5 + 2 + 3 * crawler.STAT_SLICE + 5 + 1
    assert any(os.fsencode(f.path).endswith(b"/caf\xe9/\xff\xfe.dcm") for f in found)
    reasons = {s.reason for s in skipped}
    assert {"symlink_loop", "os_error", "outside_roots", "not_regular"} <= reasons
    assert "permission_denied" in reasons  # the locked folder, in a child that obeys bits


def test_threads_list_ahead_within_the_bound(tmp_path: Path, made: list[crawler._Lister]) -> None:
    build_tree(tmp_path)
    for extra in range(30):  # a wide level, so that many folders are wanted at once
        (tmp_path / "wide" / f"f{extra:02d}").mkdir(parents=True)
        touch(tmp_path / "wide" / f"f{extra:02d}" / "a.dcm")
    serial = crawl([tmp_path], 0)
    assert crawl([tmp_path], 8, max_ahead=3) == serial
    threaded = made[-1]
    assert len(threaded.threads) == 8
    assert 1 <= threaded.peak_held <= 3
    assert threaded.taken_ahead > 0  # the walk used listings the threads made
    assert not threaded.held  # nothing left held once the crawl ends
    assert all(not t.is_alive() for t in _joined(threaded))


def _joined(lister: crawler._Lister) -> list[object]:
    for thread in lister.threads:
        thread.join(5)
    return list(lister.threads)


def test_several_roots_and_no_follow(tmp_path: Path, made: list[crawler._Lister]) -> None:
    build_tree(tmp_path)
    roots = [tmp_path / "patient2", tmp_path / "patient0", tmp_path / "top.dcm", tmp_path]
    assert crawl(roots, 4, 2) == crawl(roots, 0)
    no_links = crawl([tmp_path], 0, follow_symlinks=False)
    assert crawl([tmp_path], 4, 2, follow_symlinks=False) == no_links
    assert any(s.detail == "symlink" for s in no_links[1])


def test_stopping_early_ends_the_threads(tmp_path: Path, made: list[crawler._Lister]) -> None:
    build_tree(tmp_path)
    files = iter_files([tmp_path], threads=4, max_ahead=2)
    first = next(files)
    assert first.path.startswith(str(tmp_path))
    files.close()  # the caller stopped (a run interrupted)
    assert made[-1].closed
    assert all(not t.is_alive() for t in _joined(made[-1]))


def test_local_disk_uses_no_threads(tmp_path: Path, made: list[crawler._Lister]) -> None:
    touch(tmp_path / "a.dcm")
    assert not is_network_path(tmp_path)
    assert fs_type_of(tmp_path)  # the mount table was read
    assert [f.path for f in iter_files([tmp_path])] == [str(tmp_path / "a.dcm")]
    assert made[-1].threads == []
