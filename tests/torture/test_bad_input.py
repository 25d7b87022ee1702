"""Bad input: every broken, truncated, hostile or merely odd file gets a clear recorded outcome.

One `indexer index` run over a tree of good corpus files and ~100 bad ones (cases.py)
must end with exit 0, give every bad file the status and reason its construction
calls for, and leave the good files' content exactly as a clean run over the good
files alone writes it.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest
from helpers import Dump, query

from indexer.errors import IndexerError
from indexer.run import index_paths

from .build import dicom_file, el, identity, meta, uid_for
from .cases import Case, all_cases
from .support import (
    GOOD_FILES,
    DbFactory,
    copy_good,
    good_content_diff,
    index_cli,
    new_database_like,
    relative_dump,
    strip_ids,
)

pytestmark = [pytest.mark.corpus]


@pytest.fixture(scope="module")
def bad_tree(tmp_path_factory: pytest.TempPathFactory, corpus_dir: Path) -> tuple[Path, list[Case]]:
    root = tmp_path_factory.mktemp("bad-input")
    copy_good(corpus_dir, root / "good")
    (root / "bad").mkdir()
    cases = all_cases(corpus_dir)
    for case in cases:
        case.write(root / "bad")
    return root, cases


def _check_case(case: Case, row: tuple | None, errors: list[tuple]) -> list[str]:  # type: ignore[type-arg]
    """What is wrong with the index's account of one case ([] when right)."""
    if row is None:
        return ["no files row"]
    _path, status, count, depth, fragments, problem = row
    out = []
    if status not in case.status:
        out.append(
            f"status {status!r}, expected one of {sorted(case.status)} (problem: {problem!r})"
        )
    failures = [e for e in errors if e[3] == "error"]
    if case.reasons is None or status == "indexed":
        if failures:
            out.append(f"unexpected error rows {failures}")
        if status == "not_dicom" and not problem:
            out.append("skipped without a reason in files.problem")
    else:
        if len(failures) != 1:
            out.append(
                f"expected one error row with reason in {sorted(case.reasons)}, got {failures}"
            )
        for _stage, reason, message, _severity in failures:
            if reason not in case.reasons:
                out.append(
                    f"reason {reason!r}, expected one of {sorted(case.reasons)} ({message!r})"
                )
            if not message.strip() or "\n" in message:
                out.append(f"message is not one clear line: {message!r}")
    if case.count is not None and count != case.count:
        out.append(f"element_count {count}, expected {case.count}")
    if case.count_between is not None and not (
        count is not None and case.count_between[0] <= count <= case.count_between[1]
    ):
        out.append(f"element_count {count}, expected within {case.count_between}")
    if case.depth is not None and depth != case.depth:
        out.append(f"max_depth {depth}, expected {case.depth}")
    if case.fragments is not None and fragments != case.fragments:
        out.append(f"fragments {fragments}, expected {case.fragments}")
    return out


@pytest.mark.slow
def test_bad_files_are_recorded_and_good_files_unaffected(
    kind: str, db: str, bad_tree: tuple[Path, list[Case]], good_reference: Dump
) -> None:
    root, cases = bad_tree
    ran = index_cli([root], db, "-f", "json", timeout=240)
    assert ran.returncode == 0, ran.describe()
    assert "Traceback" not in ran.stderr, ran.stderr

    rows = {
        r[0]: r
        for r in query(
            db, "SELECT path, status, element_count, max_depth, fragments, problem FROM files"
        )
    }
    errors: dict[str, list[tuple]] = defaultdict(list)  # type: ignore[type-arg]
    for path, stage, reason, message, severity in query(
        db, "SELECT path, stage, reason, message, severity FROM errors"
    ):
        errors[path].append((stage, reason, message, severity))
    wrong = []
    for case in cases:
        path = str(root / "bad" / case.name)
        for problem in _check_case(case, rows.get(path), errors.get(path, [])):
            wrong.append(f"{case.name} ({case.what}): {problem}")
    assert not wrong, f"{len(wrong)} problems over {len(cases)} cases:\n" + "\n".join(wrong)

    # The printed summary agrees with the index.
    summary = json.loads(ran.stdout)
    statuses = [r[1] for r in rows.values()]
    failed = sum(
        1
        for p, r in rows.items()
        if r[1] in ("error", "not_dicom") and any(e[3] == "error" for e in errors.get(p, []))
    )
    assert summary["indexed_with_problems"] == statuses.count("partial")
    assert summary["not_indexed"] == failed
    assert summary["errors"] == failed + statuses.count("partial")
    assert summary["not_dicom"] == statuses.count("not_dicom") + statuses.count("error") - failed
    assert summary["files_seen"] == len(rows) == len(cases) + len(GOOD_FILES)

    # The good files: exactly what a clean run over them alone gives.
    assert good_content_diff(good_reference, relative_dump(db, root)) == ""


# -- values a database may refuse --------------------------------------------------------------

LONG = b"9" * 300


def _rejected_value_cases() -> dict[str, bytes]:
    def file(name: str, **extra_elements: bytes) -> bytes:
        return dicom_file(name, extra=[(int(t, 16), v) for t, v in extra_elements.items()])

    return {
        # NUL inside a value (never valid DICOM text, but real files have them)
        "nul_in_patient_name": dicom_file("nul1", patient_name=b"Nul\x00Inside^Name"),
        "nul_in_patient_id": dicom_file("nul2", patient_id=b"ID\x00123"),
        "nul_in_body_part": file("nul3", **{"00180015": el(0x00180015, "CS", b"HEAD\x00NECK")}),
        "nul_in_private_value": file(
            "nul4",
            **{
                "00290010": el(0x00290010, "LO", b"CREATOR"),
                "00291001": el(0x00291001, "LO", b"a\x00b"),
            },
        ),
        # values longer than DICOM allows, in the columns the hierarchy tables keep
        "long_patient_id": dicom_file("long1", patient_id=b"P" * 300),
        "long_modality": dicom_file("long2", modality=b"M" * 80),
        "long_study_date": file("long3", **{"00080020": el(0x00080020, "DA", b"2" * 80)}),
        "long_series_number": file("long4", **{"00200011": el(0x00200011, "IS", b"1" * 80)}),
        "long_accession": file("long5", **{"00080050": el(0x00080050, "SH", b"A" * 300)}),
        "long_study_uid": file("long6", **{"0020000D": el(0x0020000D, "UI", b"1." + LONG)}),
        "long_sop_instance_uid": file("long7", **{"00080018": el(0x00080018, "UI", b"1." + LONG)}),
        "long_transfer_syntax": meta(
            uid_for("long8/sop"), transfer_syntax="1.2.840.10008.1.2.1." + "7" * 100
        )
        + identity("long8"),
        "long_private_creator": file(
            "long9",
            **{
                "00290010": el(0x00290010, "LO", b"C" * 300),
                "00291001": el(0x00291001, "LO", b"x"),
            },
        ),
    }


REJECTED = _rejected_value_cases()


@pytest.mark.parametrize("case", sorted(REJECTED))
def test_values_the_database_rejects(
    kind: str, db: str, tmp_path: Path, corpus_dir: Path, case: str
) -> None:
    """A value PostgreSQL refuses (NUL, longer than a column) must not end the run or lose other files.

    The file is recorded (indexed, or with a reason), and the good file next to it is indexed.
    """
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / f"{case}.dcm").write_bytes(REJECTED[case])
    copy_good(corpus_dir, tmp_path / "good", ["pydicom/rtplan.dcm"])
    try:  # in this process (no pool): quick, and a bad file must never raise here either
        index_paths([tmp_path / "bad", tmp_path / "good"], db, workers=0)
    except IndexerError as err:
        pytest.fail(f"the run failed on one bad file: {err}")
    rows: dict[str, str] = dict(query(db, "SELECT path, status FROM files"))  # type: ignore[arg-type]
    assert rows.get(str(tmp_path / "good" / "pydicom/rtplan.dcm")) == "indexed", rows
    status = rows.get(str(tmp_path / "bad" / f"{case}.dcm"))
    assert status in ("indexed", "partial", "error"), rows
    if status != "indexed":
        assert query(
            db, "SELECT reason FROM errors WHERE path = :p", p=str(tmp_path / "bad" / f"{case}.dcm")
        )


@pytest.mark.parametrize(
    "partial_first", [True, False], ids=["partial-written-first", "good-written-first"]
)
@pytest.mark.parametrize("cut", ["after_series_uid", "inside_study_id"])
def test_partial_copy_does_not_change_the_good_files_hierarchy(
    kind: str, db: str, tmp_path: Path, corpus_dir: Path, partial_first: bool, cut: str
) -> None:
    """A truncated copy of a file next to the file itself.

    Cut after its Series Instance UID, the copy has the study and series UIDs but not the
    Study ID and Series Number that follow them; cut inside the Study ID, it has the first
    half of that value. Whichever of the two is written first, the study and series rows
    must be what the good file alone gives: a partial file must not decide their content.
    """
    source = corpus_dir / "highdicom/sm_image_jpegls.dcm"
    data = source.read_bytes()
    from .cases import layout  # the element boundaries as pydicom reads them

    elements = layout(data).elements
    if cut == "after_series_uid":
        at = next(e[1] for e in elements if e[2] == 0x0020000E) + 3
    else:
        start, end = next((e[0], e[1]) for e in elements if e[2] == 0x00200010)
        at = (start + 8 + end) // 2
    first, second = ("a", "b") if partial_first else ("b", "a")
    (tmp_path / first).mkdir()
    (tmp_path / second).mkdir()
    (tmp_path / first / "cut.dcm").write_bytes(data[:at])
    (tmp_path / second / "good.dcm").write_bytes(data)
    # One process, one batch: the writer takes the batch in path order, so `first` is written first.
    index_paths([tmp_path / "a", tmp_path / "b"], db, workers=0)
    assert query(db, "SELECT status FROM files ORDER BY path") == (
        [("partial",), ("indexed",)] if partial_first else [("indexed",), ("partial",)]
    )
    with new_database_like(kind, db, tmp_path) as clean:
        index_paths([tmp_path / second / "good.dcm"], clean, workers=0)
        for table in ("patients", "studies", "series"):
            assert strip_ids(query(db, f"SELECT * FROM {table}")) == strip_ids(
                query(clean, f"SELECT * FROM {table}")
            ), table


def test_hierarchy_does_not_depend_on_write_order(
    kind: str, new_db: DbFactory, tmp_path: Path
) -> None:
    """Two sound files that share a patient key (both without Patient ID) but not the patient's name.

    Whichever is written first, the index must end the same: a clean run's content cannot
    depend on which worker finished first (runs with several workers write in varying order).
    """
    first = dicom_file("order-a", patient_id=b"", patient_name=b"Alpha^Ann")
    second = dicom_file("order-b", patient_id=b"", patient_name=b"Beta^Bob")
    results = []
    for names in (("1.dcm", "2.dcm"), ("2.dcm", "1.dcm")):
        folder = tmp_path / "-".join(names)
        folder.mkdir()
        (folder / names[0]).write_bytes(first)
        (folder / names[1]).write_bytes(second)
        with new_db() as url:
            index_paths([folder], url, workers=0)  # one batch, written in path order
            results.append(strip_ids(query(url, "SELECT * FROM patients")))
    assert results[0] == results[1], "the patients row depends on which file was written first"
