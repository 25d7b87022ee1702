"""The path index on the element rows (writer/path_index.py, migration 0007): a first run drops
it and builds it once at its end, a stop during the build cancels it (the next completed run
builds it), and a search on any attribute gives the same answer with it and without it.

Real SQLite files and a real PostgreSQL server; the stop is a real SIGTERM to a real run.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from fnmatch import fnmatchcase
from pathlib import Path

import pydicom
import pytest
import sqlalchemy as sa
from helpers import (
    DB_KINDS,
    INDEXER_BIN,
    edited_copy,
    engine_for,
    fresh_database,
    query,
    server_for,
)

from indexer.backends import for_url
from indexer.db import open_index
from indexer.reports.find import find
from indexer.run import RunStopped
from indexer.writer import path_index

DATA = Path(__file__).parent / "data"
FIRST = DATA / "pydicom" / "JPEG2000.dcm"
SECOND = DATA / "pydicom" / "MR_small_bigendian.dcm"
# Fake element rows that make the build last a few seconds (the stop must catch it running).
MANY_ROWS = 3_000_000


@pytest.fixture(params=DB_KINDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with fresh_database(request.param, tmp_path, server_for(request, request.param)) as found:
        yield found


def _index_json(root: Path, url: str, *args: str) -> dict[str, object]:
    proc = subprocess.run(
        [str(INDEXER_BIN), "index", str(root), "--db", url, "-w", "0", "-q", "-f", "json", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def _present(url: str) -> bool:
    engine = engine_for(url)
    try:
        return path_index.present(engine)
    finally:
        engine.dispose()


def test_a_first_run_builds_the_index_at_its_end_and_later_runs_keep_it(
    url: str, tmp_path: Path
) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "a.dcm").write_bytes(FIRST.read_bytes())
    first = _index_json(tree, url)
    assert first["indexed"] == 1 and isinstance(first["path_index_s"], float)
    assert _present(url)
    (tree / "b.dcm").write_bytes(SECOND.read_bytes())
    second = _index_json(tree, url)  # rows already stored: the index is kept up to date
    assert second["indexed"] == 1 and second["path_index_s"] is None
    assert _present(url)
    # The index answers: every element row of the new file is found through it.
    (count,) = query(
        url,
        "SELECT COUNT(*) FROM elements WHERE path_id IN (SELECT path_id FROM elements e "
        "JOIN files f ON f.id = e.file_id WHERE f.path LIKE '%b.dcm')",
    )[0]
    assert count > 0


def _fill_elements(url: str, rows: int) -> None:
    """`rows` made-up element rows (file ids with no file), and no path index."""
    engine = open_index(url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP INDEX {path_index.NAME}"))
            if conn.dialect.name == "sqlite":
                source = (
                    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c "
                    f"WHERE x < {rows}) SELECT x FROM c"
                )
            else:
                source = f"SELECT x FROM generate_series(1, {rows}) AS x"
            conn.execute(
                sa.text(
                    "INSERT INTO elements (file_id, ordinal, path_id, vr, vm, length, value, "
                    "flags) SELECT 1000000 + x / 500, x % 500, ((x % 1009) * 7919) % 100003, 'CS', 1, "
                    f"2, 'AB', 0 FROM ({source}) AS s"
                )
            )
    finally:
        engine.dispose()


def test_a_stop_cancels_the_build_and_the_next_run_builds_it(url: str, tmp_path: Path) -> None:
    _fill_elements(url, MANY_ROWS)
    engine = engine_for(url)
    calls = [0]

    def stop_check() -> None:
        calls[0] += 1
        if calls[0] >= 3:  # the statement has been running a little while
            raise RunStopped(signal.SIGTERM)

    try:
        started = time.monotonic()
        with pytest.raises(RunStopped):
            path_index.build_if_missing(engine, for_url(url), stop_check)
        stopped_after = time.monotonic() - started
        assert not path_index.present(engine)  # cancelled and rolled back, not completed
    finally:
        engine.dispose()
    assert stopped_after < 5, stopped_after
    empty = tmp_path / "empty"
    empty.mkdir()
    again = _index_json(empty, url)
    assert isinstance(again["path_index_s"], float) and _present(url)


def test_sigterm_during_the_build_ends_the_run_as_interrupted(url: str, tmp_path: Path) -> None:
    _fill_elements(url, MANY_ROWS)
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "a.dcm").write_bytes(FIRST.read_bytes())
    proc = subprocess.Popen(
        [str(INDEXER_BIN), "index", str(tree), "--db", url, "-w", "0", "--log-every", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if line.startswith("building the path index"):
                break
        else:
            pytest.fail("the run never said it builds the path index")
        time.sleep(0.3)  # into the statement
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
        took = time.monotonic() - signalled
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert code == 128 + signal.SIGTERM
    assert took < 5, took
    assert not _present(url)
    assert query(url, "SELECT outcome FROM runs ORDER BY id DESC LIMIT 1") == [("interrupted",)]
    again = _index_json(tree, url)  # the file was written before the stop: only the build
    assert again["unchanged"] == 1 and isinstance(again["path_index_s"], float)
    assert _present(url)


# -- the same answers with and without the index ----------------------------------------------

KELVIN = "\u212a"  # KELVIN SIGN: Python's lower() makes it an ASCII "k", SQL's lower() may not


@pytest.fixture(scope="module")
def names_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("names") / "tree"
    for folder in ("pydicom", "dcm_qa_nih"):
        for path in sorted((DATA / folder).rglob("*.dcm"))[:12]:
            target = root / folder / path.relative_to(DATA / folder)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    ct = (
        DATA
        / "dcm_qa_nih"
        / "20180918GE"
        / "mr_0004"
        / "axial_epi_fmri_interleaved_i_to_s-00001.dcm"
    )
    utf8 = "ISO_IR 192"
    edited_copy(
        ct, root / "kelvin.dcm", SpecificCharacterSet=utf8, PatientName=f"{KELVIN}ELVIN^SIGN"
    )
    edited_copy(ct, root / "umlaut.dcm", SpecificCharacterSet=utf8, PatientName="MÜLLER^Jürgen")
    return root


def _names(root: Path) -> dict[str, str]:
    """{file name: PatientName as pydicom reads it}, the oracle of the name searches."""
    found = {}
    for path in root.rglob("*.dcm"):
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        if "PatientName" in ds:
            found[str(path)] = str(ds.PatientName)
    return found


NAME_QUERIES = [
    "kelvin^sign",  # an ASCII query, a non-ASCII value that folds to it
    "müller^jürgen",  # a non-ASCII query: no pre-filter in SQL
    "*^JÜRGEN",
    "compressed*",
    "*i?n*",
    "*",
]
QUERIES = [
    *(f"PatientName={q}" for q in NAME_QUERIES),
    "ImageType=ORIGINAL",  # multi-valued: matches one of its values
    "ImageType=*PRIMARY*",
    "(0008,1140).(0008,1150)=1.2.840.10008.5.1.4.1.1.4",  # nested
]


@pytest.mark.parametrize("kind", DB_KINDS)
def test_searches_answer_alike_with_and_without_the_index(
    kind: str, names_tree: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    with fresh_database(kind, tmp_path, server_for(request, kind)) as url:
        _index_json(names_tree, url)
        engine = open_index(url)
        try:
            with engine.connect() as conn:
                indexed = {q: _paths(find(conn, "instances", [q.split("=", 1)])) for q in QUERIES}
            with engine.begin() as conn:
                conn.execute(sa.text(f"DROP INDEX {path_index.NAME}"))
            with engine.connect() as conn:
                scanned = {q: _paths(find(conn, "instances", [q.split("=", 1)])) for q in QUERIES}
        finally:
            engine.dispose()
    assert indexed == scanned
    names = _names(names_tree)
    for q in NAME_QUERIES:  # names match without regard to case (Python's lower())
        expected = {p for p, n in names.items() if n and fnmatchcase(n.lower(), q.lower())}
        assert indexed[f"PatientName={q}"] == expected, q
    assert indexed["PatientName=kelvin^sign"] == {str(names_tree / "kelvin.dcm")}
    assert indexed["PatientName=*^JÜRGEN"] == {str(names_tree / "umlaut.dcm")}
    for q in QUERIES:
        assert indexed[q], q  # each finds something, so "alike" is not "both empty"


def _paths(rows: list[dict[str, object]]) -> set[str]:
    return {str(r["path"]) for r in rows}


def _sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'index.db'}"
    _fill_elements(url, 1000)
    return url


def test_sqlite_a_build_by_another_run_meanwhile_is_no_failure(tmp_path: Path) -> None:
    """Two runs end at once: the other one's build is under way (its transaction open) when
    this one finds the index missing; this one waits for it and does not fail."""
    url = _sqlite_url(tmp_path)
    other = sqlite3.connect(tmp_path / "index.db", isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    other.execute(f"CREATE INDEX {path_index.NAME} ON elements (path_id)")
    threading.Timer(1.0, other.commit).start()
    engine = engine_for(url)
    try:
        path_index.build_if_missing(engine, for_url(url), lambda: None)
        assert path_index.present(engine)
    finally:
        engine.dispose()
        other.close()


def test_sqlite_a_stop_while_another_process_writes_takes_at_once(tmp_path: Path) -> None:
    """The build waits for SQLite's write lock; a stop meanwhile must not wait out the busy
    timeout (60 s)."""
    url = _sqlite_url(tmp_path)
    other = sqlite3.connect(tmp_path / "index.db", isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    engine = engine_for(url)
    calls = [0]

    def stop_check() -> None:
        calls[0] += 1
        if calls[0] >= 3:
            raise RunStopped(signal.SIGTERM)

    try:
        started = time.monotonic()
        with pytest.raises(RunStopped):
            path_index.build_if_missing(engine, for_url(url), stop_check)
        assert time.monotonic() - started < 5
        other.rollback()
        assert not path_index.present(engine)
    finally:
        engine.dispose()
        other.close()
