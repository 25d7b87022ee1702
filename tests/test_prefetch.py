"""Reading ahead in threads (indexer.prefetch) gives the same records, within its bounds."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from indexer import prefetch
from indexer.backends.copy_rows import CopySpec
from indexer.crawler import iter_files
from indexer.errors import DicomReadError
from indexer.reader import MAP_THRESHOLD, LoadedFile, load_file, read_file
from indexer.records import DEFAULT_VALUE_LIMIT, FileRecord
from indexer.worker import Task, process_chunk

DATA = Path(__file__).parent / "data"


def tasks_for(root: Path, run_key: str) -> list[Task]:
    return [
        (f.path, f.size, f.mtime_ns, DEFAULT_VALUE_LIMIT, CopySpec(), run_key)
        for f in iter_files([root])
    ]


def test_prefetched_chunks_give_the_same_outcomes() -> None:
    # Every file of tests/data: DICOM small and mapped (> MAP_THRESHOLD), broken, not DICOM.
    plain = tasks_for(DATA, "plain")
    ahead = tasks_for(DATA, "ahead")
    assert any(t[1] > MAP_THRESHOLD for t in plain)
    expected = process_chunk(plain, prefetch=False)
    assert process_chunk(ahead, prefetch=True) == expected
    assert {type(o).__name__ for o in expected} == {"IndexedFile", "FailedFile"}


def _read_or_error(path: str, loaded: LoadedFile | None = None) -> object:
    try:
        return read_file(path, loaded=loaded)
    except DicomReadError as err:
        return (type(err).__name__, str(err))


def test_loaded_file_gives_the_same_record() -> None:
    read = 0
    for found in iter_files([DATA]):
        loaded = load_file(found.path)
        expected = _read_or_error(found.path)
        if loaded.error is None:
            assert loaded.held == (found.size if found.size <= MAP_THRESHOLD else 0)
            read += isinstance(expected, FileRecord)
        assert _read_or_error(found.path, loaded) == expected
        assert loaded.buf is None and loaded.mapped is None  # taken over and closed
    assert read > 10


def test_unreadable_and_vanished_files_fail_as_without_prefetch(tmp_path: Path) -> None:
    (tmp_path / "a.dcm").write_bytes(b"\0" * 200)
    os.mkfifo(tmp_path / "b.dcm")
    tasks = [
        (str(tmp_path / name), 200, 0, DEFAULT_VALUE_LIMIT, CopySpec(), "k")
        for name in ("a.dcm", "b.dcm", "gone.dcm")
    ]
    expected = process_chunk(tasks, prefetch=False)
    assert process_chunk(tasks, prefetch=True) == expected
    assert [getattr(o, "reason", None) for o in expected] == [
        "not_dicom",
        "unreadable",
        "unreadable",
    ]


@pytest.mark.parametrize("ahead,max_bytes", [(1, 10**9), (4, 10**9), (8, 3 * 4096)])
def test_loads_ahead_stay_within_count_and_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ahead: int, max_bytes: int
) -> None:
    files = []
    for n in range(40):
        path = tmp_path / f"{n:02d}.dcm"
        path.write_bytes(bytes([n]) * 4096)
        files.append((str(path), 4096))
    lock = threading.Lock()
    started: list[str] = []
    taken: list[str] = []
    worst = {"files": 0, "bytes": 0}

    def counted_load(path: str) -> LoadedFile:  # the real load, counted
        with lock:
            started.append(path)
            held = len(started) - len(taken)
            worst["files"] = max(worst["files"], held)
            worst["bytes"] = max(worst["bytes"], held * 4096)
        return load_file(path)

    monkeypatch.setattr(prefetch, "load_file", counted_load)
    for (path, _), loaded in zip(
        files, prefetch.iter_loaded(files, ahead=ahead, max_bytes=max_bytes), strict=True
    ):
        with lock:
            taken.append(path)
        assert loaded.path == path and loaded.buf == bytes([int(Path(path).stem)]) * 4096
        loaded.close()
    assert started == taken == [p for p, _ in files]  # in order, each once
    assert worst["files"] <= ahead
    assert worst["bytes"] <= max(max_bytes, 4096) + 4096  # the one the caller waits for
    assert worst["files"] >= min(ahead, max_bytes // 4096)  # it did read ahead


def test_stopping_early_closes_what_was_read_ahead(tmp_path: Path) -> None:
    big = tmp_path / "big.dcm"
    big.write_bytes(b"\0" * (MAP_THRESHOLD * 2))
    files = [(str(big), MAP_THRESHOLD * 2)] * 6
    loads = prefetch.iter_loaded(files, ahead=4)
    first = next(loads)
    assert first.mapped is not None and first.held == 0  # mapped, not read
    first.close()
    loads.close()  # the rest are closed as their loads finish
