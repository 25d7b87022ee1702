"""Re-runs of `index_paths`: unchanged files skipped, changed ones re-indexed, gone ones missing/pruned.

Most tests use one oracle: after any change to the tree and a re-run, the index
must hold exactly what a fresh index of the tree as it now is holds (compared
with the canonical dump of tests/helpers.py). Only the dictionary tables
(helpers.DICTIONARY_TABLES: sequence paths, tag keys) may keep more entries.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import (
    DB_KINDS,
    DICTIONARY_TABLES,
    clear_index,
    copy_files,
    diff_dumps,
    dump_index,
    fresh_database,
    query,
    regular_files,
    server_for,
    set_mtime_ns,
)

from indexer.db import open_index
from indexer.run import IndexReport, index_paths

# Files of the corpus used here (small, all DCMTK-readable): a 3-file GE series in two
# series of one study, a Siemens file of another study, a file without Study UID,
# a truncated file and a non-DICOM file named .dcm.
GE = "dcm_qa_nih/20180918GE"


def _select(manifest: list[dict[str, str]]) -> dict[str, str]:
    rows = {r["relpath"]: r for r in manifest}
    ge = sorted(r for r in rows if r.startswith(GE + "/") and r.endswith(".dcm"))[:3]
    other_study = next(
        r["relpath"]
        for r in manifest
        if r["readable_by_dcmtk"] == "yes"
        and r["study_uid"]
        and r["series_uid"]
        and r["study_uid"] not in {rows[g]["study_uid"] for g in ge}
        and int(r["bytes"]) < 50_000
        and r["patient_id"]
        and r["patient_id"] not in {rows[g]["patient_id"] for g in ge}
    )
    no_study = next(
        r["relpath"]
        for r in manifest
        if r["readable_by_dcmtk"] == "yes" and not r["study_uid"] and int(r["bytes"]) < 50_000
    )
    return {
        "ge1": ge[0],
        "ge2": ge[1],
        "ge3": ge[2],
        "other": other_study,
        "no_study": no_study,
        "truncated": "broken/pydicom/MR_truncated.dcm",
        "not_dicom": "broken/dcm_qa/nifti_named_as_dicom.dcm",
    }


@pytest.fixture
def tree(
    tmp_path: Path, corpus_dir: Path, corpus_manifest: list[dict[str, str]]
) -> dict[str, Path]:
    """A small copy of the corpus in tmp_path; names the role of each file."""
    roles = _select(corpus_manifest)
    root = tmp_path / "tree"
    copy_files(corpus_dir, roles.values(), root)
    out = {role: root / rel for role, rel in roles.items()}
    out["root"] = root
    return out


@pytest.fixture
def sources(corpus_dir: Path, corpus_manifest: list[dict[str, str]]) -> dict[str, Path]:
    """The corpus originals of the tree's files, by role (read only)."""
    return {role: corpus_dir / rel for role, rel in _select(corpus_manifest).items()}


@pytest.fixture(scope="module", params=DB_KINDS)
def databases(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    """Two indexes (the one under test, and the fresh-index reference) per database kind and module."""
    server = server_for(request, request.param)
    folder = tmp_path_factory.mktemp("incremental-db")
    with (
        fresh_database(request.param, folder, server) as url,
        fresh_database(request.param, folder, server) as ref,
    ):
        for made in (url, ref):
            open_index(made).dispose()
        yield url, ref


@pytest.fixture
def index_url(databases: tuple[str, str]) -> str:
    """An empty index at the current schema, SQLite and PostgreSQL (emptied, not re-created, per
    test: creating the schema is test_db's and test_migrations' subject, and it is slow)."""
    clear_index(databases[0])
    return databases[0]


@pytest.fixture
def reference(databases: tuple[str, str]) -> str:
    """A second empty index of the same kind, for the fresh-index oracle."""
    clear_index(databases[1])
    return databases[1]


def index(root: Path, url: str, **kwargs: object) -> IndexReport:
    report = index_paths([root], url, workers=2, **kwargs)  # type: ignore[arg-type]
    assert report.outcome == "completed"
    return report


def assert_equals_fresh_index(root: Path, url: str, reference: str) -> None:
    """The index at `url` holds what a fresh index of `root` holds (paths: at least that)."""
    index(root, reference)
    got, want = dump_index(url), dump_index(reference)
    for table in DICTIONARY_TABLES & set(want):
        extra = set(want.pop(table)) - set(got.pop(table))
        assert not extra, f"{table}: {len(extra)} entries of a fresh index missing"
    assert diff_dumps(got, want) == ""


def replace_content(path: Path, source: Path) -> None:
    """Give `path` the bytes of `source` and a new mtime (as a copy over it would)."""
    old = path.stat().st_mtime_ns
    shutil.copyfile(source, path)
    set_mtime_ns(path, old + 5_000_000_000)


def test_rerun_skips_unchanged_files_before_parsing(index_url: str, tree: dict[str, Path]) -> None:
    """A re-run reads nothing and changes nothing; same path, size and mtime is not even opened."""
    first = index(tree["root"], index_url)
    before = dump_index(index_url)
    again = index(tree["root"], index_url)
    assert diff_dumps(before, dump_index(index_url)) == ""
    assert (
        again.unchanged == again.files_seen == first.files_seen == len(regular_files(tree["root"]))
    )
    assert (again.indexed, again.partial, again.failed, again.skipped, again.elements) == (
        0,
        0,
        0,
        0,
        0,
    )

    # Garbage of the same size with the same mtime: not read again, so the index keeps the old content.
    victim = tree["ge1"]
    st = victim.stat()
    victim.write_bytes(b"\0" * st.st_size)
    set_mtime_ns(victim, st.st_mtime_ns)
    report = index(tree["root"], index_url)
    assert report.unchanged == report.files_seen and report.indexed == 0
    assert diff_dumps(before, dump_index(index_url)) == ""


def test_touched_file_is_reread_with_the_same_result(index_url: str, tree: dict[str, Path]) -> None:
    index(tree["root"], index_url)
    before = dump_index(index_url)
    victim = tree["ge3"]
    set_mtime_ns(victim, victim.stat().st_mtime_ns + 1_000_000_000)
    report = index(tree["root"], index_url)
    assert report.indexed == 1 and report.unchanged == report.files_seen - 1
    after = dump_index(index_url)
    # Only the mtime of that one file row differs.
    assert [r for r in before["files"] if r[0] != str(victim)] == [
        r for r in after["files"] if r[0] != str(victim)
    ]
    assert [r[2] for r in after["files"] if r[0] == str(victim)] == [victim.stat().st_mtime_ns]
    before.pop("files")
    after.pop("files")
    assert diff_dumps(before, after) == ""


def test_changed_files_are_reindexed_in_place(
    index_url: str, reference: str, tree: dict[str, Path], sources: dict[str, Path]
) -> None:
    """Changed files are read again; what they held before (elements, instance, errors, hierarchy
    rows left empty) is gone, and the index equals a fresh index of the tree as it now is."""
    index(tree["root"], index_url)
    # New content and mtime: a copy of a GE file, so the only file of its patient and study is gone.
    replace_content(tree["other"], sources["ge2"])
    # Same mtime, other size.
    mtime = tree["ge1"].stat().st_mtime_ns
    shutil.copyfile(sources["no_study"], tree["ge1"])
    assert tree["ge1"].stat().st_size != sources["ge1"].stat().st_size
    set_mtime_ns(tree["ge1"], mtime)
    # DICOM replaced by a non-DICOM file named .dcm.
    replace_content(tree["ge3"], sources["not_dicom"])
    # A truncated file replaced by a good one: its error rows must go.
    assert (
        query(index_url, "SELECT COUNT(*) FROM errors WHERE path = :p", p=str(tree["truncated"]))[
            0
        ][0]
        >= 1
    )
    replace_content(tree["truncated"], sources["ge3"])

    report = index(tree["root"], index_url)
    assert report.unchanged == report.files_seen - 4
    assert (report.indexed, report.partial, report.failed, report.skipped) == (3, 0, 1, 0)
    assert query(index_url, "SELECT status FROM files WHERE path = :p", p=str(tree["ge3"])) == [
        ("not_dicom",)
    ]
    assert query(
        index_url, "SELECT COUNT(*) FROM errors WHERE path = :p", p=str(tree["truncated"])
    ) == [(0,)]
    assert_equals_fresh_index(tree["root"], index_url, reference)


def test_deleted_files_marked_missing_then_pruned(
    index_url: str, reference: str, tree: dict[str, Path]
) -> None:
    index(tree["root"], index_url)
    gone, back = (
        tree["other"],
        tree["ge2"],
    )  # `other` is the only file of its patient, study and series
    keep = dump_index(index_url)
    saved, mtime = back.read_bytes(), back.stat().st_mtime_ns
    gone.unlink()
    back.unlink()
    report = index(tree["root"], index_url)
    assert report.missing == 2
    status: dict[str, str] = {p: s for p, s in query(index_url, "SELECT path, status FROM files")}
    assert {p for p, s in status.items() if s == "missing"} == {str(gone), str(back)}
    # Marking only: the files' content stays until --prune; the counted summaries leave
    # them out (they are not there), which tests/test_roots.py checks.
    marked = dump_index(index_url)
    counted = {"files", "tag_usage", "tag_values", "instance_groups"}
    assert (
        diff_dumps(
            {k: v for k, v in keep.items() if k not in counted},
            {k: v for k, v in marked.items() if k not in counted},
        )
        == ""
    )
    # A second run neither re-reads nor re-counts them.
    assert index(tree["root"], index_url).missing == 0
    # One comes back exactly as it was: indexed again, without being read.
    back.write_bytes(saved)
    set_mtime_ns(back, mtime)
    report = index(tree["root"], index_url)
    assert (report.indexed, report.missing) == (0, 0)
    assert query(index_url, "SELECT status FROM files WHERE path = :p", p=str(back)) == [
        ("indexed",)
    ]
    # --prune removes the other with all it held.
    pruned = index(tree["root"], index_url, prune=True)
    assert pruned.missing == 1
    assert query(index_url, "SELECT COUNT(*) FROM files WHERE path = :p", p=str(gone)) == [(0,)]
    assert_equals_fresh_index(tree["root"], index_url, reference)


def test_prune_removes_files_and_folders_never_marked(
    index_url: str, reference: str, tree: dict[str, Path]
) -> None:
    index(tree["root"], index_url)
    shutil.rmtree(tree["root"] / GE)  # three files of one study
    for role in ("no_study", "truncated", "not_dicom"):
        tree[role].unlink()
    report = index(tree["root"], index_url, prune=True)
    assert report.missing == 6
    assert_equals_fresh_index(tree["root"], index_url, reference)


def test_other_roots_are_left_alone(
    index_url: str, tmp_path: Path, corpus_dir: Path, corpus_manifest: list[dict[str, str]]
) -> None:
    """Indexing /x/a marks nothing under /x/ab or /x/a-b missing, though their paths share a prefix."""
    roles = _select(corpus_manifest)
    a, ab, a_b = tmp_path / "a", tmp_path / "ab", tmp_path / "a-b"
    copy_files(corpus_dir, [roles["ge1"]], a)
    copy_files(corpus_dir, [roles["ge2"]], ab)
    copy_files(corpus_dir, [roles["ge3"]], a_b)
    index_paths([a, ab, a_b], index_url, workers=2)
    for p in regular_files(ab) + regular_files(a_b):
        p.unlink()
    report = index(a, index_url, prune=True)
    assert report.missing == 0
    assert query(index_url, "SELECT COUNT(*) FROM files WHERE status = 'indexed'") == [(3,)]
    # Pruning a root that lost its files removes exactly those.
    assert index(ab, index_url, prune=True).missing == 1
    left = {
        os.path.relpath(p, tmp_path).split(os.sep)[0]
        for (p,) in query(index_url, "SELECT path FROM files")
    }
    assert left == {"a", "a-b"}


def test_single_file_root(index_url: str, tree: dict[str, Path]) -> None:
    """A file given as root: indexed, and a later run of the folder does not re-read it."""
    report = index(tree["ge1"], index_url)
    assert (report.files_seen, report.indexed) == (1, 1)
    again = index(tree["root"], index_url)
    assert again.unchanged == 1
    assert again.indexed + again.partial + again.failed + again.skipped == again.files_seen - 1
