"""Paths map back to exactly one file (issue 10): stored losslessly, on both databases.

Linux file names are bytes. A name that is not UTF-8 is stored with `\\xHH` for its bad
bytes, and a literal backslash that could be read as an escape is doubled, so the byte 0xFF
(`a_\\xff.dcm`) and a file literally named `a_\\xff.dcm` (`a_\\\\xff.dcm`) never
collide; `path_bytes` gives the bytes back. The folders of these tests hold real files with such names.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from helpers import INDEXER_BIN, engine_for, query
from hypothesis import given
from hypothesis import strategies as st
from torture.build import dicom_file, uid_for

from indexer import db as indexer_db
from indexer.db import open_index
from indexer.rows import disk_path, path_bytes, stored_path
from indexer.run import index_paths

# name on disk -> what the index must store for it (after the root)
NAMES = {
    b"a_\xff.dcm": "a_\\xff.dcm",  # the byte 0xFF
    b"a_\\xff.dcm": "a_\\\\xff.dcm",  # a backslash, then "xff"
    b"b\\c.dcm": "b\\c.dcm",  # a literal backslash that no one can misread: as it is
    b"d\\\xff.dcm": "d\\\\\\xff.dcm",  # a backslash, then the byte 0xFF
    b"e\\\\f.dcm": "e\\\\\\f.dcm",  # two backslashes
    b"caf\xc3\xa9.dcm": "café.dcm",  # valid UTF-8: as it is
    b"plain.dcm": "plain.dcm",
}


def _old_stored_path(path: str) -> str:
    """What the indexer stored before revision 0003 (its rows.stored_path)."""
    try:
        path.encode("utf-8")
        return path
    except UnicodeEncodeError:
        return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _write_tree(root: Path, names: list[bytes]) -> dict[bytes, str]:
    """Real files named `names` (bytes) in `root`; their bytes path -> SOP Instance UID."""
    root.mkdir(parents=True, exist_ok=True)
    out = {}
    for name in names:
        raw = os.fsencode(root) + b"/" + name
        case = f"paths-{name.hex()}"
        with open(raw, "wb") as f:
            f.write(dicom_file(case))
        out[raw] = uid_for(case + "/sop")
    return out


def _alembic(url: str, action: str, revision: str) -> None:
    engine = engine_for(url)
    try:
        with engine.begin() as conn:
            getattr(command, action)(indexer_db.alembic_config(conn), revision)
    finally:
        engine.dispose()


# -- the scheme -----------------------------------------------------------------------------

_PIECES = [b"\\", b"\\\\", b"\\x", b"x", b"ff", b"\xff", b"\x80", b"\xc3", b"\xc3\xa9", b"a", b"/"]


@given(
    st.one_of(
        st.binary(min_size=1, max_size=40),
        st.lists(st.sampled_from(_PIECES), min_size=1, max_size=12).map(b"".join),
    )
)
def test_stored_path_is_text_and_maps_back_to_the_bytes(raw: bytes) -> None:
    raw = raw.replace(b"\x00", b"")  # the one byte no path holds
    stored = stored_path(os.fsdecode(raw))
    stored.encode("utf-8")  # storable text: no surrogates
    assert path_bytes(stored) == raw  # lossless, hence no two names collide
    assert disk_path(stored) == os.fsdecode(raw)


def test_stored_paths_read_as_the_name() -> None:
    for raw, stored in NAMES.items():
        assert stored_path(os.fsdecode(b"/r/" + raw)) == "/r/" + stored


# -- an index of a folder that holds both ------------------------------------------------------


@pytest.mark.parametrize("workers", [0, 2])
def test_names_that_differ_on_disk_differ_in_the_index(
    db_url: str, tmp_path: Path, workers: int
) -> None:
    root = tmp_path / "tree"
    uids = _write_tree(root, list(NAMES))

    report = index_paths([str(root)], db_url, workers=workers)

    assert (report.outcome, report.indexed, report.failed) == ("completed", len(NAMES), 0)
    rows = query(
        db_url,
        "SELECT f.path, i.sop_instance_uid FROM files f JOIN instances i ON i.file_id = f.id",
    )
    assert sorted(path for path, _ in rows) == sorted(f"{root}/{s}" for s in NAMES.values())
    for path, uid in rows:
        raw = path_bytes(path)
        assert uids[raw] == uid  # the stored path names the file that holds this instance
        with open(disk_path(path), "rb") as f:  # and opens it
            assert f.read(132)[128:] == b"DICM"
    again = index_paths([str(root)], db_url, workers=workers)
    assert (again.outcome, again.unchanged, again.indexed) == ("completed", len(NAMES), 0)
    assert query(db_url, "SELECT count(*) FROM files") == [(len(NAMES),)]


@pytest.mark.parametrize("folder", [b"arch\\x41ive", b"arch\xffive"], ids=["backslash", "byte"])
def test_a_root_that_needs_escaping_marks_and_prunes_its_missing_files(
    db_url: str, tmp_path: Path, folder: bytes
) -> None:
    root = Path(os.fsdecode(os.fsencode(tmp_path) + b"/" + folder))
    written = _write_tree(root, [b"one.dcm", b"two.dcm"])
    index_paths([str(root)], db_url, workers=0)
    os.remove(next(iter(written)))

    report = index_paths([str(root)], db_url, workers=0)
    assert report.missing == 1
    assert query(db_url, "SELECT path FROM files WHERE status = 'missing'") == [
        (stored_path(f"{root}/one.dcm"),)
    ]
    pruned = index_paths([str(root)], db_url, workers=0, prune=True)
    assert pruned.missing == 1
    assert query(db_url, "SELECT path FROM files") == [(stored_path(f"{root}/two.dcm"),)]


# -- the migration of indexes written before ---------------------------------------------------


def test_an_old_index_is_re_escaped_and_a_re_run_adds_nothing(db_url: str, tmp_path: Path) -> None:
    """An index whose paths the old scheme wrote (made here by the migration's downgrade from
    a fresh index, and checked against the old function) upgrades to rows a re-run finds."""
    root = tmp_path / "tree"
    # No pair the old scheme confused; the second and third change texts.
    names = [b"a_\xff.dcm", b"k\\x41.dcm", b"m\\\xff.dcm", b"b\\c.dcm", b"plain.dcm"]
    _write_tree(root, names)
    index_paths([str(root)], db_url, workers=0)
    engine = engine_for(db_url)
    try:
        with engine.begin() as conn:  # an error row for every file, to see errors.path move too
            conn.execute(
                sa.text(
                    "INSERT INTO errors (run_id, path, stage, reason, message, severity, at) "
                    "SELECT (SELECT min(id) FROM runs), path, 'walk', 'warning', 'test', 'warning', 0 "
                    "FROM files"
                )
            )
    finally:
        engine.dispose()
    _alembic(db_url, "downgrade", "0002")
    old = sorted(_old_stored_path(os.fsdecode(os.fsencode(root) + b"/" + n)) for n in names)
    assert sorted(r[0] for r in query(db_url, "SELECT path FROM files")) == old
    assert sorted(r[0] for r in query(db_url, "SELECT path FROM errors")) == old

    open_index(db_url).dispose()  # upgrades to head, as any command does

    new = sorted(stored_path(os.fsdecode(os.fsencode(root) + b"/" + n)) for n in names)
    assert sorted(r[0] for r in query(db_url, "SELECT path FROM files")) == new
    assert sorted(r[0] for r in query(db_url, "SELECT path FROM errors")) == new
    again = index_paths([str(root)], db_url, workers=0)
    assert (again.unchanged, again.indexed, again.missing) == (len(names), 0, 0)
    assert query(db_url, "SELECT count(*) FROM files") == [(len(names),)]


def test_the_migration_reads_ambiguous_old_texts_as_the_old_scheme_wrote_them(
    db_url: str, tmp_path: Path
) -> None:
    on_disk = tmp_path / "lit_\\xff.dcm"  # a literal name that the old text cannot tell apart
    on_disk.write_bytes(b"")
    old_to_new = {
        "/t/a_\\xff.dcm": "/t/a_\\xff.dcm",  # a byte (0xFF alone is not UTF-8)
        "/t/b\\c.dcm": "/t/b\\c.dcm",  # no byte escape: a literal backslash, still as it is
        "/t/d_\\xc3\\xa9.dcm": "/t/d_\\\\xc3\\\\xa9.dcm",  # as bytes it is UTF-8: literal
        "/t/e\\f_\\xff": "/t/e\\f_\\xff",  # a backslash and a byte
        str(on_disk): stored_path(str(on_disk)),  # the disk holds the literal name only
        "/t/k\\x41": "/t/k\\\\x41",  # 0x41 was never escaped: literal
        "/t/k\\\\x41": "/t/k\\\\\\\\x41",  # its old text is the new text of the row above
        "/t/plain.dcm": "/t/plain.dcm",
    }
    _alembic(db_url, "upgrade", "0002")
    engine = engine_for(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO runs (id, started_at, roots, options, host, pid, outcome, "
                    "files_seen, files_indexed, files_unchanged, files_failed, files_skipped, "
                    "files_missing, elements_written) "
                    "VALUES (1, 0, '[]', '{}', 'h', 1, 'completed', 0, 0, 0, 0, 0, 0, 0)"
                )
            )
            for path in old_to_new:
                conn.execute(
                    sa.text(
                        "INSERT INTO files (path, size, mtime_ns, status, first_run, last_run) "
                        "VALUES (:p, 0, 0, 'indexed', 1, 1)"
                    ),
                    {"p": path},
                )
    finally:
        engine.dispose()
    _alembic(db_url, "upgrade", "head")
    assert sorted(r[0] for r in query(db_url, "SELECT path FROM files")) == sorted(
        old_to_new.values()
    )
    _alembic(db_url, "downgrade", "0002")
    assert sorted(r[0] for r in query(db_url, "SELECT path FROM files")) == sorted(old_to_new)


def test_a_vanished_root_is_named_as_the_index_stores_it(tmp_path: Path) -> None:
    """The refusal of a root that is gone suggests `indexer forget ROOT` with the root as the
    index stores it, so the line can be pasted back (a non-UTF-8 byte as \\xHH)."""
    root = os.path.join(os.fsencode(tmp_path), b"gone_\xff")
    result = subprocess.run(
        [INDEXER_BIN, "index", root, "--db", str(tmp_path / "i.db"), "-q"], capture_output=True
    )
    assert result.returncode == 1
    stderr = result.stderr.decode("utf-8")
    assert f"indexer forget {stored_path(os.fsdecode(root))}`" in stderr
    assert "gone_\\xff" in stderr and "Traceback" not in stderr
