"""`find` on PatientID and AccessionNumber: the study rows narrow the files whose own element
rows are read (reports/find.py NARROWING_COLUMNS), and the answer stays each file's own value.

The tree holds two real files of one study (PatientID DEV, no AccessionNumber) and edited
copies that a study row alone would answer wrongly: one with an empty PatientID in that study
(no conflict: the row says DEV, the file says nothing), one with another PatientID in it (the
conflict bit is set), one adding an AccessionNumber to it (the row takes it; the originals have
none), one multi-valued PatientID in a study of its own, and one outside the hierarchy.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from helpers import DB_KINDS, edited_copy, fresh_database, query, server_for
from typer.testing import CliRunner

from indexer.cli import app
from indexer.reports.find import _narrowing

DATA = Path(__file__).parent / "data" / "dcm_qa_nih" / "20180918GE" / "mr_0004"
FIRST = DATA / "axial_epi_fmri_interleaved_i_to_s-00001.dcm"
SECOND = DATA / "axial_epi_fmri_interleaved_i_to_s-00002.dcm"


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("narrowing") / "tree"
    root.mkdir()
    shutil.copy(FIRST, root / "a.dcm")
    shutil.copy(SECOND, root / "b.dcm")
    edited_copy(FIRST, root / "empty.dcm", PatientID="")
    edited_copy(SECOND, root / "other.dcm", PatientID="OTHER1")
    edited_copy(FIRST, root / "accession.dcm", AccessionNumber="ACC9")
    edited_copy(
        SECOND,
        root / "multi.dcm",
        PatientID="M1\\M2",
        StudyInstanceUID="1.2.826.0.1.3680043.99.7",
        SeriesInstanceUID="1.2.826.0.1.3680043.99.8",
    )
    edited_copy(FIRST, root / "orphan.dcm", PatientID="ORPH", StudyInstanceUID=None)
    return root


@pytest.fixture(scope="module", params=DB_KINDS)
def index_url(request: pytest.FixtureRequest, tree: Path) -> Iterator[str]:
    with fresh_database(request.param, tree.parent, server_for(request, request.param)) as url:
        result = CliRunner().invoke(app, ["index", "--db", url, "-q", str(tree)])
        assert result.exit_code == 0, result.stderr
        yield url


def _found(url: str, level: str, *filters: str) -> set[str]:
    result = CliRunner().invoke(app, ["find", level, "--db", url, "-f", "json", *filters])
    assert result.exit_code == 0, result.stderr
    rows = json.loads(result.stdout)
    if level == "instances":
        return {Path(r["path"]).name for r in rows}
    return {r["study_instance_uid"] for r in rows}


def test_a_file_without_the_value_is_not_found_by_its_study_row(index_url: str) -> None:
    assert _found(index_url, "instances", "PatientID=DEV") == {"a.dcm", "b.dcm", "accession.dcm"}
    assert _found(index_url, "instances", "PatientID=DE?") == {"a.dcm", "b.dcm", "accession.dcm"}
    assert _found(index_url, "instances", "AccessionNumber=ACC9") == {"accession.dcm"}
    assert _found(index_url, "instances", "AccessionNumber=ACC*") == {"accession.dcm"}


def test_a_conflicting_value_is_found_on_its_own_rows(index_url: str) -> None:
    assert _found(index_url, "instances", "PatientID=OTHER1") == {"other.dcm"}
    study = pydicom.dcmread(FIRST, stop_before_pixels=True).StudyInstanceUID
    assert _found(index_url, "studies", "PatientID=OTHER1") == {study}
    assert _found(index_url, "studies", "PatientID=DEV") == {study}
    assert _found(index_url, "instances", "PatientID=DEV\\OTHER1") == {
        "a.dcm",
        "b.dcm",
        "accession.dcm",
        "other.dcm",
    }


def test_multi_valued_and_orphan_files_are_found(index_url: str) -> None:
    assert _found(index_url, "instances", "PatientID=M1") == {"multi.dcm"}
    assert _found(index_url, "instances", "PatientID=M2") == {"multi.dcm"}
    assert _found(index_url, "instances", "PatientID=ORPH") == {"orphan.dcm"}
    assert _found(index_url, "studies", "PatientID=M*") == {"1.2.826.0.1.3680043.99.7"}


def test_every_patient_id_gives_what_the_element_rows_give(index_url: str) -> None:
    # The answer with the narrowing equals the element rows' own answer, value by value.
    rows = query(
        index_url,
        "SELECT file_path, value FROM element_details WHERE tag = '(0010,0020)' AND depth = 0",
    )
    by_value: dict[str, set[str]] = {}
    for path, value in rows:
        for part in (value or "").split("\\"):
            if part:
                by_value.setdefault(part, set()).add(Path(path).name)
    assert len(by_value) == 5
    for value, names in by_value.items():
        assert _found(index_url, "instances", f"PatientID={value}") == names, value


def test_filters_that_could_match_an_empty_value_are_not_narrowed() -> None:
    # The study row says nothing of a file with an empty value: such filters read all rows.
    assert _narrowing(None, "PatientID", "*", "PatientID") is None  # type: ignore[arg-type]
    assert _narrowing(None, "PatientID", "DEV\\*", "PatientID") is None  # type: ignore[arg-type]
    assert _narrowing(None, "PatientID", "", "PatientID") is None  # type: ignore[arg-type]
