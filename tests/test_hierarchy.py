"""Patients, studies, series and instances (indexer/writer/hierarchy.py), and what `stats`
counts of them, on SQLite and PostgreSQL, through index_paths and the CLI.

Files are real: shipped ones (tests/data) and files built byte by byte (tests/torture/build.py),
so that each expected figure follows from how the file was made.
"""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa
from helpers import clear_index, dump_index, engine_for, pg_database, query, run_cli
from torture.build import el, identity, meta, uid_for

from indexer import connect, reports
from indexer import db as indexer_db
from indexer.run import index_paths
from indexer.schema import CONFLICTS

STUDY = uid_for("hierarchy/study")
SERIES = uid_for("hierarchy/series")


def _write(
    folder: Path,
    name: str,
    *,
    patient_id: bytes = b"P1",
    modality: bytes = b"OT",
    study: str = STUDY,
    series: str = SERIES,
    sop: str | None = None,
    extra: tuple[tuple[int, bytes], ...] = (),
) -> Path:
    """A complete small file of study `study`, series `series` (both overridable)."""
    sop = sop or uid_for(f"hierarchy/{name}/sop")
    body = identity(
        name,
        patient_id=patient_id,
        modality=modality,
        extra=(
            (0x00080018, el(0x00080018, "UI", sop.encode())),
            (0x0020000D, el(0x0020000D, "UI", study.encode())),
            (0x0020000E, el(0x0020000E, "UI", series.encode())),
            *extra,
        ),
    )
    path = folder / name
    path.write_bytes(meta(sop) + body)
    return path


def _stats(url: str) -> dict[str, object]:
    with connect(url) as conn:
        return reports.collect_stats(conn)


# -- stats: distinct SOP instances, copies, DICOMDIRs -------------------------------------------


def test_stats_count_distinct_sop_instances_copies_and_dicomdirs(
    db_url: str, tmp_path: Path, sample_dir: Path
) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    one = _write(tree, "one.dcm")
    _write(tree, "two.dcm")
    shutil.copy(one, tree / "one_copy.dcm")  # the same SOP instance, a second file
    shutil.copy(one, tree / "one_copy2.dcm")
    shutil.copy(sample_dir / "fo-dicom" / "DICOMDIR", tree / "DICOMDIR")
    index_paths([tree], db_url, workers=0)

    stats = _stats(db_url)
    assert stats["files"] == 5
    assert stats["instances"] == 2  # one.dcm's SOP instance once, two.dcm's
    assert stats["duplicate_copies"] == 2
    assert stats["dicomdirs"] == 1
    assert stats["instances_outside_hierarchy"] == 0  # the DICOMDIR is not an instance
    assert stats["duplicate_sop_instance_uids"] == 1
    assert stats["instances_with_duplicate_uid"] == 3
    (problem,) = query(
        db_url,
        "SELECT i.hierarchy_problem FROM instances i JOIN files f ON f.id = i.file_id "
        "WHERE f.path LIKE :p",
        p="%DICOMDIR",
    )
    assert problem[0].startswith("DICOMDIR")

    # Every output format carries the new counts.
    as_json = json.loads(run_cli(["stats", "--db", db_url, "-f", "json"]).stdout)
    assert (as_json["instances"], as_json["duplicate_copies"], as_json["dicomdirs"]) == (2, 2, 1)
    csv_lines = run_cli(["stats", "--db", db_url, "-f", "csv"]).stdout.splitlines()
    assert {"instances,2", "duplicate_copies,2", "dicomdirs,1"} <= set(csv_lines)
    table = run_cli(["stats", "--db", db_url]).stdout
    assert any(line.split() == ["dicomdirs", "1"] for line in table.splitlines())


# -- files without a Patient ID -----------------------------------------------------------------


def test_files_without_patient_id_keep_their_studies_apart(db_url: str, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    for n in range(3):  # three unrelated studies, none with a Patient ID
        _write(
            tree,
            f"anon{n}.dcm",
            patient_id=b"",
            study=uid_for(f"anon{n}/study"),
            series=uid_for(f"anon{n}/series"),
        )
    # A study whose files name P1 and one that names none: the study belongs to P1.
    _write(tree, "mixed_a.dcm", patient_id=b"")
    _write(tree, "mixed_b.dcm", patient_id=b"P1")
    index_paths([tree], db_url, workers=0)

    rows = query(
        db_url,
        "SELECT s.study_uid, p.patient_id, p.synthetic_study_uid FROM studies s "
        "JOIN patients p ON p.id = s.patient_ref ORDER BY s.study_uid",
    )
    assert len(rows) == 4
    by_study = {r[0]: (r[1], r[2]) for r in rows}
    assert by_study[STUDY] == ("P1", "")
    for n in range(3):
        study = uid_for(f"anon{n}/study")
        assert by_study[study] == ("", study)  # keyed, and flagged, by its own study
    stats = _stats(db_url)
    assert stats["patients"] == 4  # P1 and one synthetic patient per anonymous study
    assert stats["patients_without_id"] == 3
    assert query(db_url, "SELECT count(*) FROM patients")[0][0] == 4  # no orphan left


# -- a partial file ----------------------------------------------------------------------------


def test_file_cut_in_pixel_data_describes_its_series_study_and_patient(
    db_url: str, sample_dir: Path
) -> None:
    # Cut short in Pixel Data: 8192 bytes declared, fewer in the file (dcmdump says so).
    index_paths([sample_dir / "broken" / "pydicom" / "MR_truncated.dcm"], db_url, workers=0)
    assert query(db_url, "SELECT status FROM files")[0][0] == "partial"
    assert query(db_url, "SELECT modality, manufacturer FROM series") == [("MR", "TOSHIBA_MEC")]
    assert query(db_url, "SELECT study_date FROM studies") == [("20040826",)]
    assert query(db_url, "SELECT patient_name IS NOT NULL FROM patients")[0][0] in (True, 1)


def test_cut_value_does_not_describe_the_hierarchy(db_url: str, tmp_path: Path) -> None:
    # The file ends inside its Study ID (after the UIDs): the cut text is not the study's.
    study_id = el(0x00200010, "SH", b"STUDY-ID-1234")
    path = _write(tmp_path, "cut.dcm", extra=((0x00200010, study_id),))
    data = path.read_bytes()
    path.write_bytes(data[: data.index(study_id) + len(study_id) - 5])
    index_paths([path], db_url, workers=0)
    assert query(db_url, "SELECT status FROM files")[0][0] == "partial"
    assert query(db_url, "SELECT study_id FROM studies") == [(None,)]
    assert query(db_url, "SELECT modality FROM series") == [("OT",)]  # read whole


# -- files that disagree ------------------------------------------------------------------------


def _disagreeing(folder: Path) -> list[Path]:
    """Files of one study and series that disagree: empty first, patients and modalities."""
    folder.mkdir()
    date = 0x00080020
    return [
        # read first in path order: empty modality and study date
        _write(folder, "a.dcm", modality=b"", extra=((date, el(date, "DA", b"")),)),
        _write(folder, "b.dcm", modality=b"MR", extra=((date, el(date, "DA", b"20200101")),)),
        _write(folder, "c.dcm", modality=b"CT", patient_id=b"P2"),
        _write(folder, "d.dcm", modality=b"MR", patient_id=b""),
        # P1 with its issuer: the same patient as b.dcm's P1 (no issuer), not a conflict
        _write(folder, "f.dcm", extra=((0x00100021, el(0x00100021, "LO", b"ISSUER")),)),
        _write(
            folder,
            "e.dcm",
            patient_id=b"P3",
            study=uid_for("other/study"),
            series=uid_for("other/series"),
        ),
    ]


_HIERARCHY = ("patients", "studies", "series")


def test_disagreeing_files_give_the_same_rows_in_any_order(db_url: str, tmp_path: Path) -> None:
    files = _disagreeing(tmp_path / "tree")
    index_paths([tmp_path / "tree"], db_url, workers=0)
    expected = dump_index(db_url, tables=_HIERARCHY)

    (study,) = query(
        db_url,
        "SELECT p.patient_id, p.issuer, s.study_date, s.conflicts FROM studies s "
        "JOIN patients p ON p.id = s.patient_ref WHERE s.study_uid = :u",
        u=STUDY,
    )
    assert study == ("P1", "ISSUER", "20200101", 1 << CONFLICTS["studies"].index("patient"))
    assert query(
        db_url, "SELECT modality, conflicts FROM series WHERE series_uid = :u", u=SERIES
    ) == [("CT", 1 << CONFLICTS["series"].index("modality"))]
    # P2 named only the conflicting study: no patient row without a study is left.
    assert sorted(r[0] for r in query(db_url, "SELECT patient_id FROM patients")) == ["P1", "P3"]
    assert _stats(db_url)["conflicts"] == {"series.modality": 1, "studies.patient": 1}

    orders = [list(reversed(files)), [files[2], files[0], files[4], files[3], files[5], files[1]]]
    orders += [list(p) for p in itertools.islice(itertools.permutations(files), 7, 60, 17)]
    for order in orders:
        clear_index(db_url)
        for path in order:  # one run (and batch) per file
            index_paths([path], db_url, workers=0)
        assert dump_index(db_url, tables=_HIERARCHY) == expected, [p.name for p in order]
    clear_index(db_url)
    index_paths([tmp_path / "tree"], db_url, workers=0, batch_files=2)
    assert dump_index(db_url, tables=_HIERARCHY) == expected
    index_paths([tmp_path / "tree"], db_url, workers=0)  # a re-run changes nothing
    assert dump_index(db_url, tables=_HIERARCHY) == expected


def test_rows_do_not_depend_on_batching_under_a_linguistic_collation(
    db_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """ "Smallest" is by code point everywhere ("B" before "a"), as within a batch: on a
    PostgreSQL database whose collation is ICU en-US ("a" before "B") the series took "B"
    from one run and "a" from one run per file (before the fix)."""
    tree = tmp_path / "tree"
    tree.mkdir()
    files = [
        _write(tree, f"f{n}", extra=((0x0008103E, el(0x0008103E, "LO", text)),))
        for n, text in enumerate((b"B", b"a"))
    ]

    def descriptions(url: str) -> list[tuple[object, ...]]:
        index_paths([tree], url, workers=0)
        together = query(url, "SELECT description FROM series")
        clear_index(url)
        for path in files:  # one run (and batch) per file
            index_paths([path], url, workers=0)
        return [*together, *query(url, "SELECT description FROM series")]

    if db_url.startswith("sqlite"):
        assert descriptions(db_url) == [("B",), ("B",)]
        return
    icu = "TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.utf8'"
    with pg_database(request.getfixturevalue("pg_url"), options=icu) as url:
        assert query(url, "SELECT 'a' < 'B'") == [(True,)]
        assert descriptions(url) == [("B",), ("B",)]


# -- integer columns ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "frames", [b"2147483648", b"123456789012", b"99999999999999999999", b"-2147483649"]
)
def test_integer_that_does_not_fit_is_left_empty_with_a_warning(
    db_url: str, tmp_path: Path, frames: bytes
) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    frames_el = el(0x00280008, "IS", frames)
    rows_el = el(0x00280010, "US", (512).to_bytes(2, "little"))
    _write(tree, "big.dcm", extra=((0x00280008, frames_el), (0x00280010, rows_el)))
    good_frames = ((0x00280008, el(0x00280008, "IS", b"2147483647")),)
    _write(tree, "good.dcm", sop=uid_for("good"), extra=good_frames)
    report = index_paths([tree], db_url, workers=0)
    assert report.indexed == 2
    got = query(
        db_url,
        "SELECT f.path, f.status, i.frames, i.rows FROM files f "
        "JOIN instances i ON i.file_id = f.id ORDER BY f.path",
    )
    assert [(Path(p).name, s, fr, r) for p, s, fr, r in got] == [
        ("big.dcm", "indexed", None, 512),
        ("good.dcm", "indexed", 2147483647, None),
    ]
    warnings = query(db_url, "SELECT path, stage, reason, message FROM errors")
    assert len(warnings) == 1
    path, stage, reason, message = warnings[0]
    assert (Path(path).name, stage, reason) == ("big.dcm", "walk", "warning")
    assert "(0028,0008)" in message and "NumberOfFrames" in message
    assert frames.decode().lstrip("-") not in message  # never the value


# -- migration ----------------------------------------------------------------------------------


def test_migration_splits_the_patient_of_files_without_patient_id(db_url: str) -> None:
    """An index written before 0003 kept one "" patient for every study without a Patient ID."""
    engine = engine_for(db_url)
    try:
        indexer_db.upgrade(engine, "0002")
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO patients (patient_id, issuer, patient_name) VALUES "
                    "('', '', 'Mixed^Up'), ('P1', '', 'Known^One')"
                )
            )
            for uid, patient in (("1.2.1", ""), ("1.2.2", ""), ("1.2.3", "P1")):
                conn.execute(
                    sa.text(
                        "INSERT INTO studies (study_uid, patient_ref) "
                        "SELECT :u, id FROM patients WHERE patient_id = :p"
                    ),
                    {"u": uid, "p": patient},
                )
        indexer_db.upgrade(engine)
    finally:
        engine.dispose()
    rows = query(
        db_url,
        "SELECT s.study_uid, p.patient_id, p.synthetic_study_uid, p.patient_name, p.conflicts "
        "FROM studies s JOIN patients p ON p.id = s.patient_ref ORDER BY s.study_uid",
    )
    assert rows == [
        ("1.2.1", "", "1.2.1", None, 0),
        ("1.2.2", "", "1.2.2", None, 0),
        ("1.2.3", "P1", "", "Known^One", 0),
    ]
    assert query(db_url, "SELECT count(*) FROM patients")[0][0] == 3
    assert _stats(db_url)["patients_without_id"] == 2
