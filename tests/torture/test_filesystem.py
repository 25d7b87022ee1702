"""File-system oddities: permissions, symlink loops, FIFOs and sockets, odd names, long paths,
files that vanish or change while the run is on.

The runs are separate processes bounded in time (a FIFO that blocks a reader is a hang,
and a hang fails the test). As root, permission bits do not stop anyone, so there the
indexer runs without the capabilities that override them (support.run_bounded).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import Dump, diff_dumps, dump_index, query

from indexer.run import index_paths

from .support import copy_good, good_content_diff, index_cli, relative_dump, run_bounded

pytestmark = [pytest.mark.corpus]

NON_UTF8_FILE = b"bad_\xff\xfe_name.dcm"
NON_UTF8_DIR = b"dir_\xe9t\xe9"
NON_UTF8_FIFO = b"fifo_\xff.dcm"
LONG_PART = "d" * 200  # one folder name; PATH_MAX is 4096 on Linux


def _escaped(raw: bytes) -> str:
    """How the index stores a name that is not UTF-8: its bytes as backslash escapes."""
    return raw.decode("utf-8", "backslashreplace")


def _deep_folder(base: Path, total: int) -> bytes:
    """Create folders below `base` until the path is about `total` bytes long; returns it (may exceed PATH_MAX)."""
    path = os.fsencode(base)
    fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY)
    try:
        while len(path) + len(LONG_PART) + 1 < total:
            os.mkdir(LONG_PART, dir_fd=fd)
            new = os.open(LONG_PART, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = new
            path += b"/" + LONG_PART.encode()
        return path
    finally:
        os.close(fd)


def _write_at(folder: bytes, name: str, data: bytes) -> None:
    """Write a file in a folder whose path may be too long for open()."""
    fd = os.open(b"/", os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in folder.strip(b"/").split(b"/"):
            new = os.open(part, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = new
        out = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644, dir_fd=fd)
        os.write(out, data)
        os.close(out)
    finally:
        os.close(fd)


@pytest.fixture
def odd_tree(corpus_dir: Path) -> Iterator[tuple[Path, dict[str, object]]]:
    """A tree with every kind of oddity, and good files."""
    base = Path(tempfile.mkdtemp(prefix="torture-fs-"))
    root = base / "tree"
    copy_good(corpus_dir, root / "good")
    sample = (corpus_dir / "pydicom/rtplan.dcm").read_bytes()
    odd = root / "odd"
    odd.mkdir()
    # unreadable file and folder
    (odd / "unreadable.dcm").write_bytes(sample)
    os.chmod(odd / "unreadable.dcm", 0)
    (odd / "locked").mkdir()
    (odd / "locked" / "inside.dcm").write_bytes(sample)
    os.chmod(odd / "locked", 0)
    # symlink loops and a dangling link
    (odd / "loop").mkdir()
    os.symlink("..", odd / "loop" / "up")
    os.symlink("self.dcm", odd / "self.dcm")
    os.symlink("nowhere.dcm", odd / "dangling.dcm")
    # a FIFO and a socket (reading either would block or fail)
    os.mkfifo(odd / "fifo.dcm")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(odd / "socket.dcm"))
    # names that are not UTF-8 (crawl problems under such names: test_non_utf8_names_of_crawl_problems)
    raw_odd = os.fsencode(odd)
    with open(raw_odd + b"/" + NON_UTF8_FILE, "wb") as fh:
        fh.write(sample)
    os.mkdir(raw_odd + b"/" + NON_UTF8_DIR)
    with open(raw_odd + b"/" + NON_UTF8_DIR + b"/x.dcm", "wb") as fh:
        fh.write(sample)
    # very long paths: one file just below PATH_MAX, one folder beyond it
    long_ok = _deep_folder(odd, 3900)
    _write_at(long_ok, "deep.dcm", sample)
    too_long = _deep_folder(Path(os.fsdecode(long_ok)), 4400)
    _write_at(too_long, "deeper.dcm", sample)

    info: dict[str, object] = {"long_ok": long_ok, "too_long": too_long, "raw_odd": raw_odd}
    try:
        yield root, info
    finally:
        sock.close()
        os.chmod(odd / "locked", 0o755)
        shutil.rmtree(os.fsencode(base), ignore_errors=True)


@pytest.mark.slow
def test_odd_tree_does_not_block_and_every_oddity_is_recorded(
    kind: str, db: str, odd_tree: tuple[Path, dict[str, object]], good_reference: Dump
) -> None:
    root, info = odd_tree
    url = db
    ran = index_cli([root], url, "-f", "json", timeout=120, obey_permissions=True)
    assert ran.returncode == 0, ran.describe()
    assert "Traceback" not in ran.stderr

    odd = root / "odd"
    files: dict[str, str] = dict(query(url, "SELECT path, status FROM files"))  # type: ignore[arg-type]
    errors: dict[str, set[tuple[str, str]]] = {}
    for path, stage, reason in query(url, "SELECT path, stage, reason FROM errors"):
        errors.setdefault(path, set()).add((stage, reason))
    wrong = []

    def expect_error(path: str, stage: str, reasons: set[str], what: str) -> None:
        found = {r for s, r in errors.get(path, set()) if s == stage}
        if not found & reasons:
            wrong.append(
                f"{what}: expected a {stage} error with reason in {sorted(reasons)} for {path!r}, "
                f"got {errors.get(path)}"
            )

    expect_error(str(odd / "unreadable.dcm"), "read", {"unreadable"}, "unreadable file")
    if files.get(str(odd / "unreadable.dcm")) != "error":
        wrong.append(f"unreadable file: status {files.get(str(odd / 'unreadable.dcm'))}")
    expect_error(str(odd / "locked"), "crawl", {"permission_denied"}, "unreadable folder")
    expect_error(str(odd / "loop" / "up"), "crawl", {"symlink_loop"}, "symlink loop to a parent")
    expect_error(str(odd / "self.dcm"), "crawl", {"symlink_loop"}, "symlink to itself")
    expect_error(
        str(odd / "dangling.dcm"),
        "crawl",
        {"os_error", "not_found", "vanished"},
        "dangling symlink",
    )
    expect_error(str(odd / "fifo.dcm"), "crawl", {"not_regular"}, "FIFO")
    expect_error(str(odd / "socket.dcm"), "crawl", {"not_regular"}, "socket")
    raw_odd: bytes = info["raw_odd"]  # type: ignore[assignment]
    non_utf8 = _escaped(raw_odd + b"/" + NON_UTF8_FILE)
    if files.get(non_utf8) != "indexed":
        wrong.append(
            f"non-UTF-8 file name: expected {non_utf8!r} indexed, got {files.get(non_utf8)}; "
            f"paths: {[p for p in files if 'bad_' in p]}"
        )
    non_utf8_inside = _escaped(raw_odd + b"/" + NON_UTF8_DIR + b"/x.dcm")
    if files.get(non_utf8_inside) != "indexed":
        wrong.append(f"file in a non-UTF-8 folder: {files.get(non_utf8_inside)}")
    long_ok = os.fsdecode(info["long_ok"]) + "/deep.dcm"  # type: ignore[arg-type]
    if files.get(long_ok) != "indexed":
        wrong.append(f"file with a {len(long_ok)}-byte path: {files.get(long_ok)}")
    too_long = os.fsdecode(info["too_long"])  # type: ignore[arg-type]
    recorded = [
        p
        for p in errors
        if p.startswith(too_long[:4000]) or too_long.startswith(p) and len(p) > 4000
    ]
    if not recorded and not any(len(p) > 4096 for p in files):
        wrong.append("nothing recorded about the folder beyond PATH_MAX")
    assert not wrong, "\n".join(wrong)

    summary = json.loads(ran.stdout)
    assert summary["crawl_problems"] >= 7, summary
    # The good files next to all this: exactly a clean run's content.
    assert good_content_diff(good_reference, relative_dump(url, root)) == ""


def test_non_utf8_names_of_crawl_problems(
    kind: str, db: str, tmp_path: Path, corpus_dir: Path
) -> None:
    """A FIFO and an unreadable folder whose names are not UTF-8: recorded (escaped), and the run goes on."""
    raw = os.fsencode(tmp_path / "tree")
    os.mkdir(raw)
    os.mkfifo(raw + b"/" + NON_UTF8_FIFO)
    os.mkdir(raw + b"/locked_\xff")
    os.chmod(raw + b"/locked_\xff", 0)
    copy_good(corpus_dir, tmp_path / "tree" / "good", ["pydicom/rtplan.dcm"])
    try:
        ran = index_cli([tmp_path / "tree"], db, "-q", timeout=60, obey_permissions=True)
    finally:
        os.chmod(raw + b"/locked_\xff", 0o755)
    assert ran.returncode == 0, ran.describe()
    errors = {p: r for p, r in query(db, "SELECT path, reason FROM errors")}
    assert errors.get(_escaped(raw + b"/" + NON_UTF8_FIFO)) == "not_regular", errors
    assert errors.get(_escaped(raw + b"/locked_\xff")) == "permission_denied", errors
    assert dict(query(db, "SELECT path, status FROM files")) == {
        str(tmp_path / "tree/good/pydicom/rtplan.dcm"): "indexed"
    }


# -- files that vanish or change during the run ------------------------------------------------

CHANGE_PY = r"""
import json, os, sys
from indexer.run import index_paths
root, url, plan = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
state = {"done": False}

def change(report):
    # At the first commit: the crawl has listed (and stat'ed) the files named in the plan,
    # and the workers have not read them yet (at most 128 files are in flight).
    if state["done"]:
        return
    state["done"] = True
    for action, rel in plan:
        path = os.path.join(root, rel)
        if action == "delete":
            os.remove(path)
        elif action == "truncate":
            with open(path, "r+b") as fh:
                fh.truncate(os.path.getsize(path) // 2)
        elif action == "grow":
            with open(path, "ab") as fh:
                fh.write(b"\x00garbage after the data set" * 10)
        elif action == "to_folder":
            os.remove(path)
            os.mkdir(path)
        elif action == "to_fifo":
            os.remove(path)
            os.mkfifo(path)
        elif action == "rename":
            os.rename(path, path + ".renamed")
        elif action == "replace":
            with open(path + ".tmp", "wb") as fh:
                fh.write(open(os.path.join(root, plan_source), "rb").read())
            os.replace(path + ".tmp", path)
    print("changed", flush=True)

plan_source = sys.argv[4]
# Few chunks in flight (the default keeps ~1,000 files queued for the workers), so that the
# files of the plan are still unread at the first commit.
import indexer.run
indexer.run.PENDING_PER_WORKER = 4
report = index_paths([root], url, workers=2, batch_files=16, progress=change)
print(json.dumps({"outcome": report.outcome, **report.counts()}))
"""

FILLER = [
    "pydicom/nested_priv_SQ.dcm",
    "pydicom/priv_SQ.dcm",
    "fo-dicom/GH223.dcm",
    "pydicom/rtplan.dcm",
]
# 384 small files, all listed by the crawl's first look (512 paths) before anything is read; at
# the first commit at most ~144 are read or being read, so files from number 200 on are not yet.
COPIES = 96


@pytest.fixture
def busy_tree(tmp_path: Path, corpus_dir: Path) -> Path:
    root = tmp_path / "busy"
    for i in range(COPIES):
        for j, rel in enumerate(FILLER):
            target = root / f"f{i:03d}" / f"{j}_{Path(rel).name}"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(corpus_dir / rel, target)
    return root


PLAN = [
    ("delete", "f060/0_nested_priv_SQ.dcm"),
    ("truncate", "f065/3_rtplan.dcm"),
    ("grow", "f070/3_rtplan.dcm"),
    ("to_folder", "f075/1_priv_SQ.dcm"),
    ("rename", "f080/2_GH223.dcm"),
    ("replace", "f085/0_nested_priv_SQ.dcm"),
]
FIFO_TARGET = "f090/3_rtplan.dcm"


@pytest.mark.slow
def test_files_vanish_or_change_during_the_run(
    kind: str, new_db: object, busy_tree: Path, tmp_path: Path
) -> None:
    """Deleted, cut, grown, replaced, renamed, turned into a folder or a FIFO after the crawl saw them.

    The run must end (a FIFO opened for reading blocks: that would be a hang) with each
    changed file recorded as read, or with a reason, or not at all; a re-run with
    --prune over the now quiet tree must give exactly a clean run's content.
    """
    import sys

    with new_db() as url, new_db() as clean_url:  # type: ignore[operator]
        ran = run_bounded(
            [
                sys.executable,
                "-c",
                CHANGE_PY,
                str(busy_tree),
                url,
                json.dumps(PLAN),
                "f000/3_rtplan.dcm",
            ],
            timeout=90,
        )
        assert ran.returncode == 0, ran.describe()
        assert "changed" in ran.stdout, (
            "the changes were not made during the run: " + ran.describe()
        )
        files: dict[str, str] = dict(query(url, "SELECT path, status FROM files"))  # type: ignore[arg-type]
        reasons = {
            p: r for p, r in query(url, "SELECT path, reason FROM errors WHERE severity = 'error'")
        }
        wrong = []
        for action, rel in PLAN:
            path = str(busy_tree / rel)
            status = files.get(path)
            if status in ("error", "not_dicom", "partial") and path not in reasons:
                wrong.append(f"{action} {rel}: status {status} without a reason")
            if status is None and action not in ("delete", "rename", "to_folder", "to_fifo"):
                wrong.append(f"{action} {rel}: no files row")
        assert not wrong, "\n".join(wrong)
        # The window was hit: the crawl listed the deleted file, its read found it gone.
        assert files.get(str(busy_tree / PLAN[0][1])) == "error", (
            "the changes came too late to test anything"
        )

        rerun = index_cli([busy_tree], url, "--prune", "-q", timeout=120)
        assert rerun.returncode == 0, rerun.describe()
        index_paths([busy_tree], clean_url, workers=2)
        assert diff_dumps(dump_index(clean_url), dump_index(url)) == ""


@pytest.mark.slow
@pytest.mark.parametrize(
    "kind", ["sqlite"], indirect=True
)  # the reader's business: one database is enough
def test_file_replaced_by_a_fifo_during_the_run_does_not_hang(
    kind: str, db: str, busy_tree: Path
) -> None:
    """The crawl saw a regular file; when the worker opens it, it is a FIFO with no writer.

    open() of a FIFO for reading blocks until a writer comes: the reader must not wait
    (O_NONBLOCK, then fstat: not a regular file) but record the file and go on.
    """
    import sys

    rel = FIFO_TARGET
    ran = run_bounded(
        [
            sys.executable,
            "-c",
            CHANGE_PY,
            str(busy_tree),
            db,
            json.dumps([("to_fifo", rel)]),
            "f000/3_rtplan.dcm",
        ],
        timeout=45,
    )
    assert ran.returncode == 0, ran.describe()
    assert "changed" in ran.stdout, ran.describe()
    statuses: dict[str, str] = dict(query(db, "SELECT path, status FROM files"))  # type: ignore[arg-type]
    status = statuses.get(str(busy_tree / rel))
    assert status == "error", f"status {status}: the crawl saw the FIFO, the test came too late"
    assert query(db, "SELECT reason FROM errors WHERE path = :p", p=str(busy_tree / rel)) == [
        ("unreadable",)
    ]
