"""The schema as other tools see it: integer series and instance numbers, the views
(element_details, instance_details, tag_usage_details), and DuckDB's SQLite scanner.

Through the CLI on SQLite and PostgreSQL; DuckDB with the real duckdb package and its
sqlite_scanner extension from PyPI (no network needed).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from helpers import DB_KINDS, engine_for, fresh_database, query, run_cli, server_for
from sqlalchemy.engine import make_url
from torture.build import dicom_file, el, uid_for

from indexer.rows import plain_number
from indexer.schema import VIEWS

# name: (InstanceNumber as stored, the column's value); each file is its own series, whose
# SeriesNumber is the same text.
NUMBERS = {
    "n1": (b"1", 1),
    "n2": (b"2", 2),
    "n10": (b"10", 10),
    "n11": (b"11", 11),
    "padded": (b" 7 ", 7),
    "signed": (b"+3", 3),
    "negative": (b"-4", -4),
    "zeros": (b"007", 7),
    "zero": (b"0", 0),
    "decimal": (b"1.0", None),
    "text": (b"abc", None),
    "multi": (b"1\\2", None),
    "huge": (b"99999999999", None),
}
_TAG = re.compile(r"\([0-9A-F]{4},[0-9A-F]{4}\)\Z")


def _build(tree: Path) -> None:
    for name, (text, _) in NUMBERS.items():
        extra = [
            (0x00200011, el(0x00200011, "IS", text)),
            (0x00200013, el(0x00200013, "IS", text)),
        ]
        if name.startswith("n"):  # an empty Manufacturer; the other files have none
            extra.append((0x00080070, el(0x00080070, "LO", b"")))
        (tree / f"{name}.dcm").write_bytes(dicom_file(name, modality=b"ZZ", extra=extra))


@pytest.fixture(scope="module", params=DB_KINDS)
def index_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, sample_dir: Path
) -> Iterator[str]:
    tree = tmp_path_factory.mktemp("numbers")
    _build(tree)

    server = server_for(request, request.param)
    with fresh_database(request.param, tmp_path_factory.mktemp("db"), server) as url:
        done = run_cli(["index", "--db", url, "-q", str(tree), str(sample_dir)])
        assert done.returncode == 0, done.stderr
        yield url


def _sql(url: str, statement: str) -> list[dict[str, object]]:
    done = run_cli(["sql", "--db", url, "-f", "json", statement])
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def _uids(names: list[str], suffix: str) -> list[str]:
    return [uid_for(n + suffix) for n in names]


def test_numbers_are_integers_or_null(index_url: str) -> None:
    rows = _sql(
        index_url,
        "SELECT sop_instance_uid, instance_number FROM instances WHERE modality = 'ZZ'",
    )
    got = {r["sop_instance_uid"]: r["instance_number"] for r in rows}
    assert got == {uid_for(n + "/sop"): number for n, (_, number) in NUMBERS.items()}
    series_rows = _sql(index_url, "SELECT series_uid, series_number FROM series")
    numbers = {r["series_uid"]: r["series_number"] for r in series_rows}
    for name, (_, number) in NUMBERS.items():
        assert numbers[uid_for(name + "/series")] == number, name


def test_numbers_sort_as_numbers(index_url: str) -> None:
    rows = _sql(
        index_url,
        "SELECT instance_number FROM instances WHERE instance_number IS NOT NULL "
        "AND modality = 'ZZ' ORDER BY instance_number",
    )
    assert [r["instance_number"] for r in rows] == [-4, 0, 1, 2, 3, 7, 7, 10, 11]


def test_the_text_stays_in_the_elements(index_url: str) -> None:
    # A value the column leaves NULL is still the file's value, and `find` compares it.
    rows = _sql(
        index_url,
        "SELECT value FROM element_details WHERE tag = '(0020,0013)' AND file_path LIKE '%decimal%'",
    )
    assert rows == [{"value": "1.0"}]
    done = run_cli(["find", "instances", "--db", index_url, "-f", "json", "InstanceNumber>=0.5"])
    assert done.returncode == 0, done.stderr
    found = {r["sop_instance_uid"] for r in json.loads(done.stdout)}
    assert uid_for("decimal/sop") in found and uid_for("negative/sop") not in found


def test_find_equal_and_sorted_by_number(index_url: str) -> None:
    done = run_cli(["find", "series", "--db", index_url, "-f", "json", "SeriesNumber=7"])
    assert done.returncode == 0, done.stderr
    assert {r["series_instance_uid"] for r in json.loads(done.stdout)} == set(
        _uids(["padded", "zeros"], "/series")
    )
    # A wildcard matches each file's own text (find matches element values): "1.0" and the
    # multi-valued "1\\2" match too, though their series_number column is NULL.
    done = run_cli(["find", "series", "--db", index_url, "-f", "json", "SeriesNumber=1*"])
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    built = set(_uids(list(NUMBERS), "/series"))  # the index holds tests/data's series too
    assert {r["series_instance_uid"] for r in found} & built == set(
        _uids(["n1", "n10", "n11", "decimal", "multi"], "/series")
    )
    numbers = [r["series_number"] for r in found if r["series_instance_uid"] in built]
    assert sorted(n for n in numbers if n is not None) == [1, 10, 11]


def test_plain_number_rule() -> None:
    # The rule the writer and migration 0005 share (tests/test_migrations.py checks the latter).
    for text, (_, number) in NUMBERS.items():
        assert plain_number(NUMBERS[text][0].decode()) == number, text
    assert plain_number("2147483647") == 2147483647
    assert plain_number("2147483648") is None
    assert plain_number("") is None
    assert plain_number("\u0663") is None  # an Arabic-Indic digit is not a DICOM IS


VIEW_COLUMNS = {
    "element_details": "file_id ordinal file_path path location tag keyword name private_creator "
    "depth vr vm length value number flags",
    "instance_details": "file_id path file_status patient_ref patient_id issuer patient_name "
    "birth_date sex study_ref study_uid study_id accession_number study_date study_time "
    "study_description series_ref series_uid series_number series_description body_part "
    "series_date sop_instance_uid sop_class_uid modality instance_number content_date rows "
    "columns frames manufacturer model element_count hierarchy_problem",
    "tag_usage_details": "key_id group_id key keywords tag depth name private_creator modality "
    "sop_class_uid instances occurrences untracked",
}


def test_views_have_the_same_columns_on_both_databases(index_url: str) -> None:
    # The README lists these columns; PostgreSQL and SQLite must agree with it.
    engine = engine_for(index_url)
    try:
        with engine.connect() as conn:
            inspector = sa.inspect(conn)
            assert set(inspector.get_view_names()) == set(VIEWS)
            for view, names in VIEW_COLUMNS.items():
                assert [c["name"] for c in inspector.get_columns(view)] == names.split(), view
    finally:
        engine.dispose()


def test_element_details(index_url: str) -> None:
    counts = _sql(
        index_url,
        "SELECT (SELECT count(*) FROM elements) AS elements, "
        "(SELECT count(*) FROM element_details) AS details",
    )[0]
    assert counts["elements"] == counts["details"] > 0
    rows = _sql(
        index_url,
        "SELECT file_path, path, tag, keyword, name, vr, value FROM element_details "
        "WHERE keyword = 'Modality' AND depth = 0",
    )
    assert rows and {r["tag"] for r in rows} == {"(0008,0060)"}
    assert {r["vr"] for r in rows} == {"CS"} and all(r["path"] == "(0008,0060)" for r in rows)
    assert "ZZ" in {r["value"] for r in rows}
    nested = _sql(index_url, "SELECT path, tag FROM element_details WHERE depth > 0 LIMIT 50")
    assert nested and all(_TAG.match(str(r["tag"])) for r in nested)
    assert all(str(r["path"]).endswith(str(r["tag"])) or "[" in str(r["path"]) for r in nested)


def test_instance_details(index_url: str) -> None:
    assert _sql(index_url, "SELECT count(*) AS n FROM instance_details") == _sql(
        index_url, "SELECT count(*) AS n FROM instances"
    )
    row = _sql(
        index_url,
        "SELECT * FROM instance_details WHERE sop_instance_uid = '" + uid_for("padded/sop") + "'",
    )[0]
    assert row["study_uid"] == uid_for("padded/study")
    assert row["series_uid"] == uid_for("padded/series")
    assert row["patient_id"] == "padded"
    assert (row["series_number"], row["instance_number"]) == (7, 7)
    assert str(row["path"]).endswith("padded.dcm") and row["file_status"] == "indexed"
    # Instances outside the hierarchy are there too, with empty study columns.
    orphans = _sql(
        index_url,
        "SELECT count(*) AS n FROM instance_details WHERE series_ref IS NULL AND study_uid IS NULL",
    )
    assert orphans == _sql(
        index_url, "SELECT count(*) AS n FROM instances WHERE series_ref IS NULL"
    )


def test_tag_usage_details(index_url: str) -> None:
    assert _sql(index_url, "SELECT count(*) AS n FROM tag_usage_details") == _sql(
        index_url, "SELECT count(*) AS n FROM tag_usage"
    )
    rows = _sql(
        index_url,
        "SELECT tag, keywords, modality, instances FROM tag_usage_details "
        "WHERE keywords = 'InstanceNumber' AND modality = 'ZZ'",
    )
    assert rows == [
        {"tag": "(0020,0013)", "keywords": "InstanceNumber", "modality": "ZZ", "instances": 13}
    ]
    private = _sql(
        index_url,
        "SELECT tag FROM tag_usage_details WHERE private_creator IS NOT NULL LIMIT 20",
    )
    assert private and all(_TAG.match(str(r["tag"])) for r in private)


def test_absent_manufacturer_has_one_spelling(index_url: str) -> None:
    # Empty (the n* files) and absent (the others) Manufacturer: one row, null / "(none)".
    done = run_cli(["stats", "--db", index_url, "--by", "manufacturer", "-f", "json"])
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    absent = [r for r in rows if not r["manufacturer"] and not r["model"]]
    assert [r["manufacturer"] for r in absent] == [None]
    assert absent[0]["instances"] >= len(NUMBERS) and absent[0]["series"] >= len(NUMBERS)
    done = run_cli(["stats", "--db", index_url, "--by", "manufacturer"])
    lines = done.stdout.splitlines()[2:]
    assert lines and not any(line.startswith(" ") for line in lines), done.stdout
    assert sum(line.startswith("(none)   ") for line in lines) == 1


# -- DuckDB ---------------------------------------------------------------------------------------


def _duckdb_with_sqlite() -> object:
    """A DuckDB connection with the sqlite_scanner extension loaded from its PyPI package."""
    duckdb = pytest.importorskip("duckdb")
    extension = pytest.importorskip("duckdb_extension_sqlite_scanner")
    found = list(
        Path(extension.__file__).parent.glob("extensions/*/sqlite_scanner.duckdb_extension")
    )
    conn = duckdb.connect()
    conn.execute("SET autoinstall_known_extensions = false")
    try:
        conn.execute(f"LOAD '{found[0]}'" if found else "LOAD sqlite_scanner")
    except (duckdb.Error, IndexError) as err:
        pytest.skip(f"DuckDB {duckdb.__version__} cannot load its sqlite_scanner extension: {err}")
    return conn


def test_duckdb_reads_the_views(index_url: str) -> None:
    if not index_url.startswith("sqlite"):
        pytest.skip("DuckDB attaches the SQLite file")
    conn = _duckdb_with_sqlite()
    path = make_url(index_url).database
    conn.execute(f"ATTACH '{path}' AS ix (TYPE sqlite, READ_ONLY)")  # type: ignore[attr-defined]
    for view in VIEWS:
        (count,) = conn.execute(f"SELECT count(*) FROM ix.{view}").fetchone()  # type: ignore[attr-defined]
        table = {"element_details": "elements", "instance_details": "instances"}.get(
            view, "tag_usage"
        )
        assert count == query(index_url, f"SELECT count(*) FROM {table}")[0][0] > 0, view
    question = (
        "SELECT tag, count(*) FROM {}element_details WHERE keyword = 'InstanceNumber' "
        "AND depth = 0 GROUP BY tag"
    )
    rows = conn.execute(question.format("ix.")).fetchall()  # type: ignore[attr-defined]
    assert rows == query(index_url, question.format("")) and rows[0][0] == "(0020,0013)"
