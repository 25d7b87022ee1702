"""Re-pointed runs: files gone from disk (missing), `indexer forget`, `indexer relocate`.

Every test builds a real archive folder of the shipped files, indexes it on SQLite and
PostgreSQL, changes the disk for real (deletes, moves, copies, touches) and checks the
index against a fresh index of what the disk holds then: the tables (without the
dictionary tables, which may keep entries) and the summaries must be equal.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool
from typer.testing import CliRunner

from indexer.cli import app
from indexer.reports import collect_breakdown, collect_stats, find
from indexer.run import index_paths
from tests.helpers import (
    DICTIONARY_TABLES,
    diff_dumps,
    dump_index,
    pg_database,
    query,
    rebuilt_summaries,
)

COUNTED = ("tag_usage", "tag_values", "instance_groups")  # exact, never a dictionary

# Folder names that a LIKE pattern or a plain prefix would confuse: "a_b" must not match
# "axb", "ab" not "abc", "a%" not "a%z".
LAYOUT = {
    "a_b": "fo-dicom",
    "axb": "pydicom",
    "ab": "dcm_qa_nih",
    "abc": "dicomParser",
    "a%": "dcm_qa_philips",
    "a%z": "broken",
}


@pytest.fixture
def archive(tmp_path: Path, sample_dir: Path) -> Path:
    """tmp_path/archive with the shipped files under the LAYOUT folder names (times kept)."""
    root = tmp_path / "archive"
    for name, source in LAYOUT.items():
        shutil.copytree(sample_dir / source, root / name, copy_function=shutil.copy2)
    return root


def _fresh(request: pytest.FixtureRequest, db_url: str, tmp_path: Path, name: str) -> str:
    """A second empty database of the same kind as `db_url`."""
    if db_url.startswith("sqlite"):
        return f"sqlite:///{tmp_path}/{name}.db"
    server = request.getfixturevalue("pg_url")
    context = pg_database(server)
    url = context.__enter__()
    request.addfinalizer(lambda: context.__exit__(None, None, None))
    return url


def _counted(url: str) -> dict[str, list[tuple[Any, ...]]]:
    return {t: rows for t, rows in dump_index(url).items() if t in COUNTED}


# The keys of the hierarchy rows in the dump. Their other columns keep what any file gave
# (writer/hierarchy.py) and are not recounted when a file's rows go: a prune, a re-index or
# `forget` alike leave them as they were, so they are compared by key here.
_HIERARCHY_KEYS = {"patients": 2, "studies": 3, "series": 2}


def _same_index(a: str, b: str) -> None:
    """Every table equal but the dictionary tables (which a removal may leave larger)."""

    def canonical(url: str) -> dict[str, list[tuple[Any, ...]]]:
        out = {}
        for table, rows in dump_index(url).items():
            if table in DICTIONARY_TABLES:
                continue
            width = _HIERARCHY_KEYS.get(table)
            out[table] = sorted(r[:width] for r in rows) if width else rows
        return out

    da, db = canonical(a), canonical(b)
    assert da == db, diff_dumps(da, db)


def _stats(url: str) -> dict[str, Any]:
    engine = sa.create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return collect_stats(conn)
    finally:
        engine.dispose()


def _breakdown(url: str, by: str) -> list[dict[str, Any]]:
    engine = sa.create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return collect_breakdown(conn, by)
    finally:
        engine.dispose()


def _find(url: str, level: str, **options: Any) -> list[dict[str, Any]]:
    engine = sa.create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return find(conn, level, **options)
    finally:
        engine.dispose()


def _cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


# -- files gone from disk ----------------------------------------------------------------------


@pytest.mark.parametrize("gone", ["a_b", "ab/20180918GE/mr_0004"])
def test_missing_files_leave_find_stats_and_summaries_and_come_back(
    request: pytest.FixtureRequest, db_url: str, archive: Path, tmp_path: Path, gone: str
) -> None:
    """A whole folder of studies gone (a_b), or some series of studies that keep others (ab/...)."""
    marker = f"/{gone}/"
    index_paths([archive], db_url, workers=0)
    full_counts = _counted(db_url)
    full_stats = _stats(db_url)
    full_studies = _find(db_url, "studies")
    away = tmp_path / "away"
    shutil.move(archive / gone, away)  # a rename keeps the files' times
    report = index_paths([archive], db_url, workers=0)
    assert report.missing > 0

    expected = _fresh(request, db_url, tmp_path, "rest")
    index_paths([archive], expected, workers=0)
    want = _stats(expected)
    got = _stats(db_url)
    # Everything but the files and errors (the missing files' rows are kept).
    for key in set(want) - {"files", "files_by_status", "missing_files", "errors", "warnings"}:
        assert got[key] == want[key], key
        if key.startswith("by_"):
            by = key[3:].replace("_", "-")
            assert _breakdown(db_url, by) == _breakdown(expected, by), by
    assert got["missing_files"] == report.missing
    assert _counted(db_url) == _counted(expected)  # the summaries, so `tags` too
    assert rebuilt_summaries(db_url, COUNTED) == _counted(db_url)
    # `tags --tag` of a tag counted from the element rows (UIDs are not in tag_values) too.
    for url_ in (db_url, expected):
        shown = _cli("tags", "--tag", "SOPInstanceUID", "--db", url_, "-f", "json")
        assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["source"] == "elements"
    assert _cli("tags", "--tag", "SOPInstanceUID", "--db", db_url, "-f", "json").stdout == (
        shown.stdout.replace(expected, db_url)
    )
    for level in ("studies", "series", "instances"):
        assert _find(db_url, level) == _find(expected, level), level
    assert _find(db_url, "studies", include_missing=True) == full_studies
    instances = _find(db_url, "instances", include_missing=True)
    assert any(marker in r["path"] for r in instances)
    assert not any(marker in r["path"] for r in _find(db_url, "instances"))
    # An element filter (answered from the element rows) leaves them out as well.
    tag, value = query(
        db_url,
        "SELECT p.path, e.value FROM elements e JOIN paths p ON p.id = e.path_id "
        "JOIN files f ON f.id = e.file_id WHERE f.path LIKE :axb ESCAPE '!' AND p.depth = 0 "
        "AND p.tag > 524288 AND p.keyword NOT IN ('StudyInstanceUID', 'SeriesInstanceUID', "
        "'SOPInstanceUID', 'SOPClassUID', 'StudyDate', 'StudyTime', 'StudyID', 'Modality', "
        "'SeriesNumber', 'InstanceNumber', 'PatientID', 'PatientName', 'AccessionNumber', "
        "'ContentDate', 'Manufacturer') AND e.value LIKE '1%' ORDER BY p.tag LIMIT 1",
        axb="%" + marker.replace("_", "!_") + "%",
    )[0]
    with_gone = _find(db_url, "instances", filters=[(tag, value)], include_missing=True)
    assert any(marker in r["path"] for r in with_gone)
    assert all(marker not in r["path"] for r in _find(db_url, "instances", filters=[(tag, value)]))
    shown = _cli("find", "instances", "--db", db_url, "-f", "json")
    assert shown.exit_code == 0 and marker not in shown.stdout
    shown = _cli("find", "instances", "--db", db_url, "-f", "json", "--include-missing")
    assert shown.exit_code == 0 and marker in shown.stdout

    # Back unchanged: not read again, counted again.
    shutil.move(away, archive / gone)
    again = index_paths([archive], db_url, workers=0)
    assert again.indexed + again.partial == 0
    assert again.unchanged == report.files_seen + report.missing
    assert _counted(db_url) == full_counts
    assert _stats(db_url)["instances"] == full_stats["instances"]
    assert _stats(db_url)["series"] == full_stats["series"]
    assert _find(db_url, "studies") == full_studies


def test_stats_reads_what_missing_files_take_out_once(
    db_url: str, archive: Path, tmp_path: Path
) -> None:
    """What missing files take out of the hierarchy is read once per `stats` (it reads every
    missing file's instance row), not again for each breakdown."""
    index_paths([archive], db_url, workers=0)
    shutil.move(archive / "a_b", tmp_path / "away")
    index_paths([archive], db_url, workers=0)
    statements: list[str] = []
    engine = sa.create_engine(db_url, poolclass=NullPool)
    sa.event.listen(
        engine, "before_cursor_execute", lambda *args: statements.append(" ".join(args[2].split()))
    )
    try:
        with engine.connect() as conn:
            counted = collect_stats(conn)
    finally:
        engine.dispose()
    assert counted["missing_files"] > 0
    lookups = [s for s in statements if s.startswith("SELECT instances.file_id FROM instances")]
    assert len(lookups) == 1, lookups


def test_missing_file_back_changed_is_read_again_and_counted_once(
    request: pytest.FixtureRequest, db_url: str, archive: Path, tmp_path: Path
) -> None:
    index_paths([archive], db_url, workers=0)
    away = tmp_path / "away"
    shutil.move(archive / "a_b", away)
    index_paths([archive], db_url, workers=0)
    shutil.move(away, archive / "a_b")
    for f in (archive / "a_b").rglob("*.dcm"):
        os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 1_000_000_000))
    again = index_paths([archive], db_url, workers=0)
    assert again.indexed + again.partial > 0
    expected = _fresh(request, db_url, tmp_path, "full")
    index_paths([archive], expected, workers=0)
    assert _counted(db_url) == _counted(expected)
    assert _stats(db_url)["instances"] == _stats(expected)["instances"]


def test_prune_after_missing_counts_missing_files_out_once(
    request: pytest.FixtureRequest, db_url: str, archive: Path, tmp_path: Path
) -> None:
    index_paths([archive], db_url, workers=0)
    shutil.rmtree(archive / "ab")
    index_paths([archive], db_url, workers=0)  # marked missing: out of the summaries
    pruned = index_paths([archive], db_url, workers=0, prune=True)
    assert pruned.missing > 0
    expected = _fresh(request, db_url, tmp_path, "rest")
    index_paths([archive], expected, workers=0)
    _same_index(db_url, expected)


# -- forget -------------------------------------------------------------------------------------


def test_forget_a_vanished_folder_by_whole_components(
    request: pytest.FixtureRequest, db_url: str, archive: Path, tmp_path: Path
) -> None:
    index_paths([archive], db_url, workers=0)
    shutil.rmtree(archive / "a_b")  # gone from disk: `index --prune` on it is refused
    shutil.rmtree(archive / "a%")
    index_paths([archive / "axb"], db_url, workers=0)  # unrelated run in between
    refused = _cli("index", str(archive / "a_b"), "--db", db_url, "--prune", "-w", "0")
    assert refused.exit_code == 1 and "indexer forget" in refused.output
    before = dump_index(db_url)
    dry = _cli("forget", str(archive / "a_b"), "--db", db_url, "--dry-run", "-f", "json")
    assert dry.exit_code == 0, dry.output
    preview = json.loads(dry.stdout)
    assert preview["files_to_forget"] > 0 and preview["dry_run"] is True
    assert dump_index(db_url) == before
    for name in ("a_b", "a%"):
        result = _cli("forget", str(archive / name), "--db", db_url, "-f", "json")
        assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["files_forgotten"] > 0
    # Nothing left to forget: said on stderr, exit 0 (forgetting is idempotent).
    again = _cli("forget", str(archive / "a_b"), "--db", db_url)
    assert again.exit_code == 0 and "nothing is indexed under" in again.output

    expected = _fresh(request, db_url, tmp_path, "rest")
    index_paths([archive], expected, workers=0)
    _same_index(db_url, expected)  # axb, a%z and the others untouched, counts exact
    assert rebuilt_summaries(db_url, COUNTED) == _counted(db_url)


def test_forget_of_most_of_the_index_recounts_exactly(
    request: pytest.FixtureRequest, db_url: str, archive: Path, tmp_path: Path, sample_dir: Path
) -> None:
    """Forgetting more instances than stay recounts the summaries from what stays."""
    kept = tmp_path / "kept"
    shutil.copytree(sample_dir / "pydicom", kept, copy_function=shutil.copy2)
    index_paths([archive, kept], db_url, workers=0)
    shutil.rmtree(archive / "ab")
    index_paths([archive], db_url, workers=0)  # some missing files among the forgotten
    result = _cli("forget", str(archive), "--db", db_url, "-f", "json")
    assert result.exit_code == 0, result.output
    expected = _fresh(request, db_url, tmp_path, "kept")
    index_paths([kept], expected, workers=0)
    _same_index(db_url, expected)
    assert dump_index(db_url)["tag_keys"] == dump_index(expected)["tag_keys"]  # recounted


def test_forget_of_missing_files_keeps_summaries_exact(
    request: pytest.FixtureRequest, db_url: str, archive: Path, tmp_path: Path
) -> None:
    index_paths([archive], db_url, workers=0)
    shutil.rmtree(archive / "abc")
    index_paths([archive], db_url, workers=0)  # abc's files are missing now
    result = _cli("forget", str(archive / "abc"), "--db", db_url, "-f", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["already_missing"] > 0
    expected = _fresh(request, db_url, tmp_path, "rest")
    index_paths([archive], expected, workers=0)
    _same_index(db_url, expected)


@pytest.mark.postgres
def test_forget_on_a_database_with_a_linguistic_collation(pg_url: str, tmp_path: Path) -> None:
    """ICU (and libc locales) sort "%" and "+" between "/" and "0": the range of paths below
    "x/" must then be compared in "C", or "x%y" and "x+y" would count as inside "x"."""
    root = tmp_path / "archive"
    for name in ("x", "x%y", "x+y"):
        (root / name).mkdir(parents=True)
        shutil.copy2(Path(__file__).parent / "data" / "pydicom" / "rtplan.dcm", root / name)
    icu = "TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.utf8'"
    with pg_database(pg_url, options=icu) as url:
        assert query(url, "SELECT '/x%y' < '/x0' AND '/x%y' > '/x/'") == [(True,)]
        index_paths([root / "x", root / "x%y", root / "x+y"], url, workers=0)
        result = _cli("forget", str(root / "x"), "--db", url, "-f", "json")
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["files_forgotten"] == 1
        paths = sorted(r[0] for r in query(url, "SELECT path FROM files"))
        assert paths == [str(root / n / "rtplan.dcm") for n in ("x%y", "x+y")]


# -- relocate -----------------------------------------------------------------------------------


def test_relocate_a_moved_archive_without_reading_it(
    request: pytest.FixtureRequest, db_url: str, archive: Path, tmp_path: Path
) -> None:
    index_paths([archive], db_url, workers=0)
    moved = tmp_path / "new place" / "archive"
    moved.parent.mkdir()
    os.rename(archive, moved)
    before = dump_index(db_url)
    dry = _cli("relocate", str(archive), str(moved), "--db", db_url, "--dry-run", "-f", "json")
    assert dry.exit_code == 0, dry.output
    assert dump_index(db_url) == before and json.loads(dry.stdout)["files_sampled"] > 0
    result = _cli("relocate", str(archive), str(moved), "--db", db_url, "-f", "json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["files_moved"] == len(query(db_url, "SELECT id FROM files"))
    again = index_paths([moved], db_url, workers=0)
    assert again.indexed + again.partial + again.failed + again.skipped == 0
    assert again.missing == 0
    expected = _fresh(request, db_url, tmp_path, "moved")
    index_paths([moved], expected, workers=0)
    _same_index(db_url, expected)  # no doubled instance, errors moved along


def test_relocate_moves_one_folder_not_its_look_alikes(db_url: str, archive: Path) -> None:
    index_paths([archive], db_url, workers=0)
    os.rename(archive / "a_b", archive.parent / "elsewhere")
    result = _cli(
        "relocate", str(archive / "a_b"), str(archive.parent / "elsewhere"), "--db", db_url
    )
    assert result.exit_code == 0, result.output
    paths = [r[0] for r in query(db_url, "SELECT path FROM files")]
    assert not any(p.startswith(str(archive / "a_b") + "/") for p in paths)
    for name in ("axb", "ab", "abc", "a%", "a%z"):
        assert any(p.startswith(str(archive / name) + "/") for p in paths), name
    assert any(p.startswith(str(archive.parent / "elsewhere") + "/") for p in paths)


def test_relocate_refuses_what_would_break_the_index(
    db_url: str, archive: Path, tmp_path: Path
) -> None:
    index_paths([archive], db_url, workers=0)
    before = dump_index(db_url)

    def refused(*args: str) -> str:
        result = _cli("relocate", *args, "--db", db_url)
        assert result.exit_code == 1, result.output
        assert result.output.startswith("error: ") and "Traceback" not in result.output
        assert dump_index(db_url) == before
        return result.output

    assert "no such file or folder" in refused(str(archive), str(tmp_path / "nowhere"))
    assert "inside the other" in refused(str(archive), str(archive / "ab"))
    assert "nothing is indexed under" in refused(str(tmp_path / "other"), str(archive))
    # A copy that did not keep the files' times is not the same archive.
    copy = tmp_path / "copy"
    shutil.copytree(archive, copy, copy_function=shutil.copyfile)
    assert "differ in size or modification time" in refused(str(archive), str(copy))
    # Paths under NEW that are indexed already would collide.
    shutil.rmtree(copy)
    shutil.copytree(archive, copy, copy_function=shutil.copy2)
    index_paths([copy / "ab"], db_url, workers=0)
    before = dump_index(db_url)
    assert "already indexed" in refused(str(archive), str(copy))


def test_relocate_samples_names_the_index_escapes(db_url: str, tmp_path: Path) -> None:
    """Files whose names are not UTF-8 or hold a backslash are sampled too: a copy that did
    not keep their times is refused, not taken unchecked as the same archive."""
    source = next((Path(__file__).parent / "data").rglob("*.dcm")).read_bytes()
    old = tmp_path / "old"
    old.mkdir()
    for name in (b"a_\xff.dcm", b"a_\\xff.dcm"):
        Path(os.fsdecode(os.fsencode(old) + b"/" + name)).write_bytes(source)
    index_paths([old], db_url, workers=0)
    before = dump_index(db_url)
    for copy, same in ((shutil.copyfile, False), (shutil.copy2, True)):
        new = tmp_path / "new"
        shutil.copytree(old, new, copy_function=copy)
        result = _cli("relocate", str(old), str(new), "--db", db_url, "--dry-run", "-f", "json")
        if same:
            assert result.exit_code == 0, result.output
            assert json.loads(result.stdout)["files_sampled"] == 2
        else:
            assert result.exit_code == 1, result.output
            assert "differ in size or modification time" in result.output
        assert dump_index(db_url) == before
        shutil.rmtree(new)


def test_forget_and_relocate_help_and_missing_index(tmp_path: Path) -> None:
    for command in ("forget", "relocate"):
        result = _cli(command, "--help")
        assert result.exit_code == 0 and "Example" in result.output and "--dry-run" in result.output
    result = _cli("forget", str(tmp_path), "--db", str(tmp_path / "none.db"))
    assert result.exit_code == 1 and "no index" in result.output
    assert not (tmp_path / "none.db").exists()
