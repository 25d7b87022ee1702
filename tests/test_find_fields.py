"""`indexer find` on each instance's own values, `--fields`, `--sort`, `--format paths` and
`indexer export csv`, through the CLI, on SQLite and PostgreSQL.

The tree is real files from tests/data and edited copies (pydicom): one whose
SeriesDescription differs from the rest of its series (the series row keeps the smallest
value any file gave, "Axial ..."), and one outside the hierarchy (no StudyInstanceUID).
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from helpers import DB_KINDS, edited_copy, fresh_database, query, server_for
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from typer.testing import CliRunner

from indexer.cli import app

DATA = Path(__file__).parent / "data" / "dcm_qa_nih" / "20180918GE" / "mr_0004"
FIRST = DATA / "axial_epi_fmri_interleaved_i_to_s-00001.dcm"
SECOND = DATA / "axial_epi_fmri_interleaved_i_to_s-00002.dcm"
ORIGINAL = "Axial EPI-FMRI (Interleaved I to S)"
EDITED = "Zed edited T1"  # sorts after ORIGINAL: the series row keeps ORIGINAL
ORPHAN_SERIES = "1.2.826.0.1.3680043.99.1"
REFERENCED_SERIES = "1.2.826.0.1.3680043.99.2"


def _tree(root: Path) -> Path:
    root.mkdir()
    shutil.copy(FIRST, root / "a.dcm")
    shutil.copy(SECOND, root / "b.dcm")
    referenced = Dataset()
    referenced.SeriesInstanceUID = REFERENCED_SERIES
    edited_copy(
        FIRST,
        root / "edited.dcm",
        SeriesDescription=EDITED,
        SliceThickness="10",
        AccessionNumber="ACC123",
        ReferencedSeriesSequence=DicomSequence([referenced]),
    )
    edited_copy(
        SECOND,
        root / "orphan.dcm",
        StudyInstanceUID=None,
        SeriesInstanceUID=ORPHAN_SERIES,
        SeriesDescription="Orphan T1",
        SliceThickness="2",
    )
    return root


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args), env={"INDEXER_DB": None})
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def run(url: str, *args: str) -> str:
    code, out, err = invoke(*args, "--db", url)
    assert code == 0, err
    return out


def run_json(url: str, *args: str) -> Any:
    return json.loads(run(url, *args, "--format", "json"))


def one_line_error(url: str, *args: str) -> str:
    code, _, err = invoke(*args, "--db", url)
    assert code == 1 and err.startswith("error: ") and err.count("\n") == 1, err
    return err


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _tree(tmp_path_factory.mktemp("fields") / "tree")


@pytest.fixture(scope="module", params=DB_KINDS)
def index_url(request: pytest.FixtureRequest, tree: Path) -> Iterator[str]:
    with fresh_database(request.param, tree.parent, server_for(request, request.param)) as url:
        code, _, err = invoke("index", "--db", url, "-q", str(tree))
        assert code == 0, err
        yield url


def _names(rows: list[dict[str, Any]]) -> set[str]:
    return {Path(r["path"]).name for r in rows}


def test_instances_match_their_own_values(index_url: str) -> None:
    # The series row holds ORIGINAL; the edited copy and the orphan are found by their own.
    descriptions = query(index_url, "SELECT description FROM series")
    assert {d for (d,) in descriptions} == {ORIGINAL}
    fields = ["--fields", "path"]
    assert _names(run_json(index_url, "find", "instances", "SeriesDescription=Z*", *fields)) == {
        "edited.dcm"
    }
    assert _names(
        run_json(index_url, "find", "instances", f"SeriesDescription={ORIGINAL}", *fields)
    ) == {"a.dcm", "b.dcm"}
    assert _names(run_json(index_url, "find", "instances", "SeriesDescription=*T1", *fields)) == {
        "edited.dcm",
        "orphan.dcm",
    }
    # Several values of a single-valued attribute: any of them.
    both = run_json(
        index_url, "find", "instances", f"SeriesDescription={EDITED}\\Orphan T1", *fields
    )
    assert _names(both) == {"edited.dcm", "orphan.dcm"}
    # A SeriesInstanceUID outside the hierarchy (no study) is matched on the element rows.
    orphan = run_json(index_url, "find", "instances", f"SeriesInstanceUID={ORPHAN_SERIES}", *fields)
    assert _names(orphan) == {"orphan.dcm"}
    series_uid = str(pydicom.dcmread(FIRST).SeriesInstanceUID)
    in_series = run_json(index_url, "find", "instances", f"SeriesInstanceUID={series_uid}", *fields)
    assert _names(in_series) == {"a.dcm", "b.dcm", "edited.dcm"}
    # Numbers compare as numbers.
    ten = run_json(index_url, "find", "instances", "SliceThickness>5", *fields)
    assert _names(ten) == {"edited.dcm"}
    # A study or series matches when one of its instances does.
    series = run_json(index_url, "find", "series", "SeriesDescription=Z*")
    assert [s["series_instance_uid"] for s in series] == [series_uid]
    assert series[0]["instances"] == 3
    study_uid = str(pydicom.dcmread(FIRST).StudyInstanceUID)
    studies = run_json(index_url, "find", "studies", f"SeriesDescription={EDITED}")
    assert [s["study_instance_uid"] for s in studies] == [study_uid]


def test_fields_and_their_names(index_url: str, tree: Path) -> None:
    rows = run_json(
        index_url,
        "find",
        "instances",
        "--fields",
        "PatientID,SeriesDescription,(0018,0050),ReferencedSeriesSequence.SeriesInstanceUID,path",
        "--sort",
        "path",
    )
    assert [list(r) for r in rows] == [
        [
            "patient_id",
            "series_description",
            "slice_thickness",
            "referenced_series_sequence.series_instance_uid",
            "path",
        ]
    ] * 4
    for r in rows:
        ds = pydicom.dcmread(r["path"])
        assert r["patient_id"] == ds.PatientID
        assert r["series_description"] == ds.SeriesDescription
        assert r["slice_thickness"] == float(ds.SliceThickness)  # a number in JSON
        expected = REFERENCED_SERIES if "ReferencedSeriesSequence" in ds else None
        assert r["referenced_series_sequence.series_instance_uid"] == expected
        assert Path(r["path"]).parent == tree  # the full path, as the index stores it
    same = run_json(index_url, "find", "instances", "--fields", "00180050", "--sort", "00180050")
    assert [r["slice_thickness"] for r in same] == [2, 3, 3, 10]
    # A study lists the distinct values of its instances.
    study = run_json(index_url, "find", "studies", "--fields", "SeriesDescription,instances")
    assert study == [{"series_description": f"{ORIGINAL}\\{EDITED}", "instances": 3}]


def test_sort_numbers_as_numbers(index_url: str) -> None:
    def order(*args: str) -> list[str]:
        rows = run_json(index_url, "find", "instances", "--fields", "path", *args)
        return [Path(r["path"]).name for r in rows]

    # 2, 3, 3, 10: as text "10" would come first. Ties keep find's order (path).
    assert order("--sort", "SliceThickness") == ["orphan.dcm", "a.dcm", "b.dcm", "edited.dcm"]
    assert order("--sort", "-SliceThickness")[0] == "edited.dcm"
    assert order("--sort", "SliceThickness", "--desc") == order("--sort", "-SliceThickness")
    # Absent values last, either way.
    assert order("--sort", "AccessionNumber")[0] == "edited.dcm"
    assert order("--sort", "-AccessionNumber")[0] == "edited.dcm"
    assert order("--sort", "SliceThickness", "--limit", "1") == ["orphan.dcm"]


def test_default_columns_hold_no_patient_data(index_url: str) -> None:
    for level in ("studies", "series", "instances"):
        rows = run_json(index_url, "find", level)
        assert rows and not {"patient_id", "accession_number"} & set(rows[0])
        header = run(index_url, "find", level, "-f", "csv").split("\n", 1)[0]
        assert "patient_id" not in header and "accession_number" not in header
        assert "DEV" not in run(index_url, "find", level)  # the Patient ID in the table
    asked = run_json(index_url, "find", "studies", "--fields", "PatientID,AccessionNumber")
    assert asked == [{"patient_id": "DEV", "accession_number": "ACC123"}]  # its instances
    own = run_json(index_url, "find", "instances", "AccessionNumber=ACC123", "--fields", "path")
    assert _names(own) == {"edited.dcm"}


def test_format_paths(index_url: str, tree: Path) -> None:
    out = run(index_url, "find", "instances", "SeriesDescription=*T1", "--format", "paths")
    assert sorted(out.splitlines()) == sorted(str(tree / n) for n in ("edited.dcm", "orphan.dcm"))
    everything = run(index_url, "find", "instances", "-f", "paths")
    (count,) = query(index_url, "SELECT count(*) FROM instances")[0]
    assert len(everything.splitlines()) == count == 4
    assert run(index_url, "find", "instances", "PatientID=nobody", "-f", "paths") == ""
    assert "use find instances" in one_line_error(index_url, "find", "series", "-f", "paths")


def test_errors_are_one_line(index_url: str) -> None:
    err = one_line_error(index_url, "find", "instances", "--fields", "Modalty")
    assert "did you mean Modality" in err
    one_line_error(index_url, "find", "series", "--fields", "path")  # not a series column
    one_line_error(index_url, "find", "instances", "--sort", "NoSuchKeyword")
    one_line_error(index_url, "find", "instances", "--fields", ",")
    one_line_error(index_url, "export", "csv", "/nonexistent/dir/x.csv")
    # A dictionary keyword that no file holds: an empty column, and no match with a hint.
    rows = run_json(index_url, "find", "instances", "--fields", "path,ExposureIndex")
    assert all(r["exposure_index"] is None for r in rows)
    code, out, err = invoke("find", "instances", "ExposureIndex=5", "--db", index_url)
    assert code == 0 and out.strip() == "no match" and "hint:" in err


def test_export_csv(index_url: str, tmp_path: Path) -> None:
    target = tmp_path / "cohort.csv"
    fields = "PatientID,SeriesDescription,SliceThickness,path"
    run(index_url, "export", "csv", str(target), "SliceThickness<=3", "--fields", fields)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    rows = list(csv.DictReader(io.StringIO(target.read_text())))
    assert [list(r) for r in rows[:1]] == [
        ["patient_id", "series_description", "slice_thickness", "path"]
    ]
    assert {Path(r["path"]).name for r in rows} == {"a.dcm", "b.dcm", "orphan.dcm"}
    assert {float(r["slice_thickness"]) for r in rows} == {2.0, 3.0}
    # An existing file is replaced and made private; "-" is stdout, the same text.
    target.write_text("old")
    os.chmod(target, 0o644)
    run(index_url, "export", "csv", str(target), "SliceThickness<=3", "--fields", fields)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    out = run(index_url, "export", "csv", "-", "SliceThickness<=3", "--fields", fields)
    assert out == target.read_text()
    # Nothing matched: the header alone; other levels; default fields.
    none = run(index_url, "export", "csv", "-", "PatientID=nobody", "--fields", fields)
    assert none == "patient_id,series_description,slice_thickness,path\n"
    series = run(index_url, "export", "csv", "-", "--level", "series", "--fields", "instances")
    assert series.splitlines() == ["instances", "3"]
    default = run(index_url, "export", "csv", "-")
    assert default.split("\n", 1)[0].split(",")[-1] == "path"
    try:
        import pandas
    except ImportError:
        return
    frame = pandas.read_csv(target)
    assert list(frame.columns) == list(rows[0]) and len(frame) == 3


def test_help_names_fast_keys_and_comparisons() -> None:
    code, out, _ = invoke("find", "--help")
    assert code == 0
    for words in ("Fast keys", "SOPInstanceUID", "SeriesInstanceUID", "KEY<=N", "FROM-TO"):
        assert words in out
    code, out, _ = invoke("export", "csv", "--help")
    assert code == 0 and "pandas" in out


def test_an_edited_file_is_found_by_its_new_value(db_url: str, tmp_path: Path) -> None:
    root = tmp_path / "tree"
    root.mkdir()
    shutil.copy(FIRST, root / "a.dcm")
    shutil.copy(SECOND, root / "b.dcm")
    run(db_url, "index", "-q", str(root))
    ds = pydicom.dcmread(root / "b.dcm")
    ds.SeriesDescription = "Zz re-edited"
    ds.save_as(root / "b.dcm")
    os.utime(root / "b.dcm", ns=(1, 1))  # a new mtime for sure
    run(db_url, "index", "-q", str(root))
    found = run_json(db_url, "find", "instances", "SeriesDescription=Zz*", "--fields", "path")
    assert _names(found) == {"b.dcm"}
    old = run_json(db_url, "find", "instances", f"SeriesDescription={ORIGINAL}", "--fields", "path")
    assert _names(old) == {"a.dcm"}
    # The series row still says ORIGINAL (smallest value any file gave): it would have missed it.
    assert query(db_url, "SELECT description FROM series") == [(ORIGINAL,)]


def test_a_missing_file_is_matched_only_with_include_missing(db_url: str, tmp_path: Path) -> None:
    # AccessionNumber values are all counted in the summaries, which leave missing files out:
    # the filter must still find the missing file's own value when asked to include it.
    root = _tree(tmp_path / "tree")
    run(db_url, "index", "-q", str(root))
    (root / "edited.dcm").rename(tmp_path / "away.dcm")
    run(db_url, "index", "-q", str(root))
    args = ("find", "instances", "AccessionNumber=ACC123", "--fields", "path")
    assert run_json(db_url, *args) == []
    assert _names(run_json(db_url, *args, "--include-missing")) == {"edited.dcm"}
    assert run(db_url, *args, "-f", "paths", "--include-missing").strip().endswith("edited.dcm")


def test_export_csv_never_replaces_data(index_url: str, tree: Path, tmp_path: Path) -> None:
    # A slip (the index, a DICOM file as FILE) is refused and changes nothing; text is replaced.
    index_file = tmp_path / "other.db"
    index_file.write_bytes(b"SQLite format 3\x00" + bytes(100))
    if index_url.startswith("sqlite"):
        index_file = Path(index_url.split("///", 1)[1])
    scan = tmp_path / "scan.dcm"
    shutil.copy(tree / "a.dcm", scan)
    for target in (index_file, scan):
        before = target.read_bytes()
        err = one_line_error(index_url, "export", "csv", str(target), "--fields", "path")
        assert err == f"error: {target} exists and is not a text file: not replaced\n"
        assert target.read_bytes() == before
    assert len(run_json(index_url, "find", "instances")) == 4  # the index still opens
    # A pipe is written to, never read first (reading /dev/stdout blocked for ever).
    done = subprocess.run(
        [sys.executable, "-c", "from indexer.cli import main; main()", "export", "csv"]
        + ["/dev/stdout", "--fields", "path", "--db", index_url],
        capture_output=True,
        timeout=120,
        env={**os.environ, "INDEXER_DB": ""},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().splitlines()[0] == "path"


def test_format_paths_gives_the_names_on_disk(db_url: str, tmp_path: Path) -> None:
    # xargs must open what it reads: a name that is not UTF-8 as its bytes, not the index's
    # `\\xff` text; a name with a newline would read as two paths, so it is left out, counted.
    root = tmp_path / "odd"
    root.mkdir()
    latin = root / os.fsdecode(b"caf\xe9.dcm")
    split = root / "two\nlines.dcm"
    edited_copy(FIRST, latin)
    edited_copy(FIRST, split)
    code, _, err = invoke("index", "--db", db_url, "-q", str(root))
    assert code == 0, err
    result = CliRunner().invoke(
        app, ["find", "instances", "-f", "paths", "--db", db_url], env={"INDEXER_DB": None}
    )
    assert result.exit_code == 0, result.stderr
    assert result.stdout_bytes == os.fsencode(latin) + b"\n"
    assert result.stderr == "hint: 1 path(s) hold a newline and are left out; -f json lists them\n"
    assert len(run_json(db_url, "find", "instances")) == 2


def test_tables_do_not_pass_terminal_controls(db_url: str, tmp_path: Path) -> None:
    # A value from a file is data, not terminal commands: an ANSI escape (ESC, CSI) or a
    # carriage return in a table cell would be run by the terminal that shows it.
    root = tmp_path / "ansi"
    root.mkdir()
    hostile = "T1\x1b[2J\x9b31m\rgone\ttab"
    edited_copy(FIRST, root / "a.dcm", SeriesDescription=hostile)
    code, _, err = invoke("index", "--db", db_url, "-q", str(root))
    assert code == 0, err
    table = run(db_url, "find", "instances", "--fields", "SeriesDescription,path")
    assert "T1 [2J 31m gone tab" in table
    assert not set(table) & {"\x1b", "\x9b", "\r", "\t"}
    # Machine output keeps the value whole (JSON escapes it).
    rows = run_json(db_url, "find", "instances", "--fields", "SeriesDescription")
    assert rows == [{"series_description": hostile}]


def test_a_private_creator_with_dots_names_one_field(db_url: str, tmp_path: Path) -> None:
    # Dots in a field name say "nested"; those of a creator ("... 1.0", "Inc.") are not levels.
    root = tmp_path / "private"
    root.mkdir()
    ds = pydicom.dcmread(FIRST)
    ds.private_block(0x0033, "MITRA ATTRIBUTES 1.0", create=True).add_new(0x04, "LO", "kept")
    ds.save_as(root / "a.dcm")
    code, _, err = invoke("index", "--db", db_url, "-q", str(root))
    assert code == 0, err
    key = '(0033,"MITRA ATTRIBUTES 1.0",04)'
    rows = run_json(db_url, "find", "instances", f"{key}=kept", "--fields", key)
    assert rows == [{"0033_mitra_attributes_1_0_04": "kept"}]


def test_sort_with_a_value_that_reads_as_nan(db_url: str, tmp_path: Path) -> None:
    # float("NaN") compares false with everything: one such value left the rows unsorted.
    root = tmp_path / "nan"
    root.mkdir()
    for name, description in (("a", "3"), ("bb", "NaN"), ("ccc", "1"), ("dddd", "2")):
        edited_copy(FIRST, root / f"{name}.dcm", SeriesDescription=description)
    code, _, err = invoke("index", "--db", db_url, "-q", str(root))
    assert code == 0, err
    rows = run_json(
        db_url, "find", "instances", "--fields", "SeriesDescription", "--sort", "SeriesDescription"
    )
    assert [r["series_description"] for r in rows] == ["1", "2", "3", "NaN"]
