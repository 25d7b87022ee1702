"""indexer.walker on real files: figures against MANIFEST.tsv (DCMTK), values and paths against pydicom.

Every row of the corpus MANIFEST and of the sample MANIFEST (tests/data) gets one test
that decides what the walker must do with that file:

* readable by DCMTK: the four figures (element_count, max_sequence_depth,
  fragment_sequences, fragments) equal DCMTK's, the file is read to its end, and the
  top-level identifiers equal the MANIFEST's. One documented exception: GH064.
* not readable by DCMTK but read by pydicom (truncated or broken): ``problem`` is set,
  never a silent complete read. One documented exception: SC_rgb_jpeg.
* neither: NotDicomError for files that are not DICOM at all, a problem or
  DicomReadError for broken structure.

The second half compares every element the walker renders with what pydicom makes of
the same file (values, VM, sequence paths, fragment sizes), at every depth.
"""

from __future__ import annotations

import csv
import io
import math
import os
import tracemalloc
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, generate_fragments, parse_basic_offsets
from pydicom.multival import MultiValue
from pydicom.uid import ExplicitVRLittleEndian, RLELossless

from indexer.errors import DicomReadError, NotDicomError
from indexer.reader import MAP_THRESHOLD, read_file
from indexer.records import (
    BINARY,
    CUT,
    DEFAULT_VALUE_LIMIT,
    ENCAPSULATED,
    ITEM,
    META,
    UNDEFINED,
    ElementRecord,
    FileRecord,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLE_DIR = REPO_ROOT / "tests" / "data"
BINARY_VRS = {"OB", "OW", "OF", "OD", "OL", "OV", "UN"}
FIGURES = ("element_count", "max_sequence_depth", "fragment_sequences", "fragments")

# -- what the corpus README documents, decided file by file ------------------------------------

# DCMTK reads these, but the walker is expected to differ from DCMTK, for the reason given.
DCMTK_EXCEPTIONS = {
    # Philips private sequences stored as explicit-VR UN with a defined length. The walker
    # converts a UN whose tag the (pydicom) private dictionary knows to its real VR, so it
    # descends into the sequences pydicom's dictionary knows and DCMTK's does not: it agrees
    # with pydicom's 611 elements / depth 3 (corpus README), not with DCMTK's 479 / 1.
    "fo-dicom/GH064.dcm": {
        "element_count": 611,
        "max_sequence_depth": 3,
        "fragment_sequences": 1,
        "fragments": 1,
    },
}
# DCMTK fails, pydicom reads without complaint: the walker must say that something is wrong.
MUST_HAVE_PROBLEM = {
    "broken/pydicom/MR_truncated.dcm": "Pixel Data cut short",
    "broken/pydicom/rtplan_truncated.dcm": "file ends inside a nested sequence",
    "broken/fo-dicom/GH179B.dcm": "truncated (and an invalid VR)",
    "broken/fo-dicom/GH1339.dcm": "last Sequence Delimitation Item of the fragments missing",
    "broken/fo-dicom/GH626.dcm": "bad private sequence",
}
# DCMTK fails, pydicom reads it (with a warning) and so does the walker: the data set itself
# is intact, only the meta header claims explicit VR for an implicit VR data set.
READ_WITH_WARNING = {
    "broken/pydicom/SC_rgb_jpeg.dcm": "implicit VR",
}
# Neither reads them: an item tag where an element must be.
PROBLEM_OR_ERROR = {
    "broken/fo-dicom/GH364.dcm": "(FFFE,E000)",
    "broken/fo-dicom/FreezePattern.dcm": "(FFFE,E000)",
}
NOT_DICOM = {
    "broken/dcm_qa/nifti_named_as_dicom.dcm": "NIfTI-1",
    "broken/pylibjpeg-data/raw_jpeg_named_as_dicom.dcm": "JPEG stream",
    "broken/pydicom/zipMR.gz": "gzip",
    "broken/pydicom/no_meta.dcm": "no meta header and a stray leading byte",
}
# pydicom reads these but misreads them (documented in the corpus README): no value/path
# comparison with pydicom.
PYDICOM_MISREADS = {
    # Pixel Padding Value has the invalid VR "  ": pydicom takes a 4-byte length and reads
    # the rest of the file as that one value (59 elements); DCMTK and the walker read 138.
    "fo-dicom/GH179A.dcm",
}


# -- the two MANIFESTs --------------------------------------------------------------------------


def _corpus_location() -> Path:
    configured = os.environ.get("INDEXER_CORPUS")
    return Path(configured) if configured else REPO_ROOT.parent / "shared" / "corpus"


def _rows(directory: Path) -> list[dict[str, str]]:
    try:
        with open(directory / "MANIFEST.tsv", newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh, delimiter="\t"))
    except OSError:
        return []


# Parameters are taken at collection time; the tests themselves ask for the `corpus_dir`
# fixture, which skips (or fails under CI) when the corpus is absent.
CORPUS_ROWS = _rows(_corpus_location())
CORPUS_IDS = [r["relpath"] for r in CORPUS_ROWS] or ["corpus-missing"]
SAMPLE_ROWS = _rows(SAMPLE_DIR)
SAMPLE_IDS = [r["relpath"] for r in SAMPLE_ROWS]


def _row(manifest: list[dict[str, str]], relpath: str) -> dict[str, str]:
    for row in manifest:
        if row["relpath"] == relpath:
            return row
    raise AssertionError(f"{relpath} not in MANIFEST.tsv")


def _readable_by_both(rows: list[dict[str, str]]) -> list[str]:
    return [
        r["relpath"]
        for r in rows
        if r["readable_by_dcmtk"] == "yes"
        and r["readable_by_pydicom"] == "yes"
        and r["relpath"] not in PYDICOM_MISREADS
    ] + sorted(p for p in READ_WITH_WARNING if any(r["relpath"] == p for r in rows))


# -- pydicom's view of a file -------------------------------------------------------------------


def pydicom_read(path: Path) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path)


def pydicom_walk(
    ds: Dataset, prefix: str = "", depth: int = 0
) -> Iterator[tuple[str, int, DataElement | None]]:
    """(path, depth, element) for every element and (path, depth, None) for every item."""
    for elem in ds:
        if depth == 0 and elem.tag.group == 2:
            continue  # group 0002 in the data set: flagged META by the walker, not counted
        path = f"{prefix}({elem.tag.group:04X},{elem.tag.element:04X})"
        yield path, depth, elem
        if elem.VR == "SQ":
            for index, item in enumerate(elem.value):
                yield f"{path}[{index}]", depth + 1, None
                yield from pydicom_walk(item, f"{path}[{index}].", depth + 1)


def pydicom_elements(path: Path) -> list[tuple[str, int, DataElement | None]]:
    """pydicom_walk of a file, values converted with pydicom's warnings about them silenced."""
    ds = pydicom_read(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        found = list(pydicom_walk(ds))
        for _path, _depth, elem in found:
            if elem is not None:
                _ = elem.value, elem.VM  # convert now, under catch_warnings
    return found


def pydicom_figures(path: Path) -> dict[str, int]:
    """The four MANIFEST figures computed with pydicom alone (fragments from item headers)."""
    count = depth = sequences = fragments = 0
    for _path, level, elem in pydicom_elements(path):
        if elem is None:
            continue
        count += 1
        if elem.VR == "SQ":
            depth = max(depth, level + 1)
        elif elem.is_undefined_length and elem.VR in BINARY_VRS:
            sequences += 1
            stream = io.BytesIO(elem.value)
            parse_basic_offsets(stream)
            fragments += sum(1 for _ in generate_fragments(stream))
    return {
        "element_count": count,
        "max_sequence_depth": depth,
        "fragment_sequences": sequences,
        "fragments": fragments,
    }


def values_of(elem: DataElement) -> list[Any]:
    value = elem.value
    if isinstance(value, (MultiValue, list, tuple)):
        return list(value)
    if value is None or value == "" or value == b"":
        return []
    return [value]


def figures(record: FileRecord) -> dict[str, int]:
    return {
        "element_count": record.element_count,
        "max_sequence_depth": record.max_depth,
        "fragment_sequences": record.fragment_sequences,
        "fragments": record.fragments,
    }


def expected_figures(row: dict[str, str]) -> dict[str, int]:
    return {name: int(row[name]) for name in FIGURES}


def is_counted(record: ElementRecord) -> bool:
    """True when the reference walker (fo-dicom's DicomDatasetWalker) counts this record."""
    return not record.flags & (META | ITEM)


def counted_records(record: FileRecord) -> list[ElementRecord]:
    return [r for r in record.elements if is_counted(r)]


# -- the four figures, file by file -------------------------------------------------------------


def check_file(root: Path, row: dict[str, str]) -> None:
    """Assert what the walker must do with one MANIFEST row (see the module docstring)."""
    relpath = row["relpath"]
    path = root / relpath
    if relpath in NOT_DICOM:
        with pytest.raises(NotDicomError) as caught:
            read_file(path)
        err = caught.value
        assert isinstance(err, DicomReadError)
        assert err.path == str(path) and str(path) in str(err)
        assert err.reason == "not_dicom" and err.detail
        return
    if relpath in PROBLEM_OR_ERROR:
        try:
            record = read_file(path)
        except DicomReadError as err:
            assert str(path) in str(err)
        else:
            assert record.problem is not None and PROBLEM_OR_ERROR[relpath] in record.problem
            assert not record.complete
        return
    record = read_file(path)
    assert record.path == str(path)
    assert record.size == path.stat().st_size
    # The walker's own figures are consistent with its records.
    assert record.element_count == len(counted_records(record))
    assert record.fragment_sequences == sum(1 for r in record.elements if r.flags & ENCAPSULATED)
    assert record.fragments == sum(len(r.fragments or ()) for r in record.elements)

    if row["readable_by_dcmtk"] == "yes":
        assert record.problem is None, record.problem
        assert record.complete
        wanted = DCMTK_EXCEPTIONS.get(relpath, expected_figures(row))
        assert figures(record) == wanted
        assert record.transfer_syntax == (row["transfer_syntax_uid"] or None)
        assert record.has_meta == bool(row["transfer_syntax_uid"]) or relpath in (
            "pydicom/meta_missing_tsyntax.dcm",
        )  # a meta header without (0002,0010)
        check_identifiers(record, row)
        return
    if relpath in READ_WITH_WARNING:
        assert record.problem is None
        assert any(READ_WITH_WARNING[relpath] in w for w in record.warnings), record.warnings
        assert figures(record) == pydicom_figures(path)
        return
    assert relpath in MUST_HAVE_PROBLEM, f"{relpath}: undecided; add it to one of the tables above"
    assert record.problem is not None, "pydicom reads it silently; the walker must not"
    assert not record.complete
    assert record.problem_offset is not None and 0 <= record.problem_offset <= record.size
    assert f"byte {record.problem_offset}" in record.problem
    # What was read before the problem is kept; nothing is recorded past the stop, and an
    # element cut by the end of the file is recorded there with the CUT flag.
    assert record.element_count > 0
    assert all(r.offset <= record.problem_offset for r in record.elements)
    assert all(r.flags & CUT for r in record.elements if r.offset == record.problem_offset)


def check_identifiers(record: FileRecord, row: dict[str, str]) -> None:
    """Top-level identifiers (DCMTK's, from the MANIFEST) equal the walker's values."""
    columns = {
        "sop_class_uid": 0x00080016,
        "modality": 0x00080060,
        "patient_id": 0x00100020,
        "study_uid": 0x0020000D,
        "series_uid": 0x0020000E,
        "sop_instance_uid": 0x00080018,
    }
    top = {}
    for r in record.elements:
        if r.depth == 0 and not r.flags & META:
            top.setdefault(r.tag, r.value)
    for column, tag in columns.items():
        if row[column]:
            assert top.get(tag) == row[column], column
        else:
            assert not top.get(tag), column


@pytest.mark.corpus
@pytest.mark.parametrize("relpath", CORPUS_IDS)
def test_corpus_file(relpath: str, corpus_dir: Path, corpus_manifest: list[dict[str, str]]) -> None:
    check_file(corpus_dir, _row(corpus_manifest, relpath))


@pytest.mark.parametrize("relpath", SAMPLE_IDS)
def test_sample_file(relpath: str, sample_dir: Path, sample_manifest: list[dict[str, str]]) -> None:
    check_file(sample_dir, _row(sample_manifest, relpath))


def test_sample_manifest_covers_every_kind(sample_manifest: list[dict[str, str]]) -> None:
    # The always-run tests above must see each kind of file, not only the easy ones.
    kinds = {relpath: row for row in sample_manifest for relpath in [row["relpath"]]}
    assert len(kinds) >= 20
    assert any(p in MUST_HAVE_PROBLEM for p in kinds)
    assert any(p in NOT_DICOM for p in kinds)
    assert any(
        r["readable_by_dcmtk"] == "yes" and r["readable_by_pydicom"] == "no" for r in kinds.values()
    )  # no meta header
    assert any(int(r["fragments"] or 0) > 1 for r in kinds.values())


@pytest.mark.corpus
def test_corpus_decisions_cover_every_unreadable_file(
    corpus_manifest: list[dict[str, str]],
) -> None:
    decided = (
        MUST_HAVE_PROBLEM.keys()
        | READ_WITH_WARNING.keys()
        | PROBLEM_OR_ERROR.keys()
        | NOT_DICOM.keys()
    )
    undecided = {r["relpath"] for r in corpus_manifest if r["readable_by_dcmtk"] != "yes"} - decided
    assert not undecided
    assert decided <= {r["relpath"] for r in corpus_manifest}
    assert set(DCMTK_EXCEPTIONS) <= {r["relpath"] for r in corpus_manifest}


@pytest.mark.corpus
def test_gh064_agrees_with_pydicom_not_dcmtk(
    corpus_dir: Path, corpus_manifest: list[dict[str, str]]
) -> None:
    path = corpus_dir / "fo-dicom/GH064.dcm"
    record = read_file(path)
    row = _row(corpus_manifest, "fo-dicom/GH064.dcm")
    # Dictionary-dependent (corpus README): DCMTK's dictionary knows fewer Philips private SQs.
    assert int(row["element_count"]) == 479 and int(row["max_sequence_depth"]) == 1
    assert figures(record) == pydicom_figures(path) == DCMTK_EXCEPTIONS["fo-dicom/GH064.dcm"]
    converted = [r for r in record.elements if r.vr == "SQ" and r.private_creator]
    assert any(r.flags & 128 for r in converted)  # VR_FROM_DICTIONARY: stored as UN


@pytest.mark.corpus
def test_gh179a_invalid_vr_read_like_dcmtk(corpus_dir: Path) -> None:
    record = read_file(corpus_dir / "fo-dicom/GH179A.dcm")
    assert record.element_count == 138 and record.max_depth == 2  # DCMTK's figures
    padding = [r for r in record.elements if r.tag == 0x00280120]
    assert len(padding) == 1 and padding[0].length == 2 and padding[0].flags & 128
    assert any("invalid VR" in w and "(0028,0120)" in w for w in record.warnings)


@pytest.mark.corpus
def test_gh1376_second_meta_group_in_data_set(
    corpus_dir: Path, corpus_manifest: list[dict[str, str]]
) -> None:
    record = read_file(corpus_dir / "fo-dicom/GH1376.dcm")
    row = _row(corpus_manifest, "fo-dicom/GH1376.dcm")
    # The real meta header's syntax, not that of the stray 0002 group pydicom reports.
    assert record.transfer_syntax == row["transfer_syntax_uid"] == "1.2.840.10008.1.2.4.70"
    # The meta header ends where its group length (0002,0000) says; the second 0002 group
    # that follows is part of the data set: 8 stray elements (corpus README), not counted.
    group_length = record.elements[0]
    assert group_length.tag == 0x00020000 and group_length.offset == 132
    header_end = 132 + 12 + int(group_length.value or "")
    stray = [r for r in record.elements if r.flags & META and r.offset >= header_end]
    assert len(stray) == 8
    assert all(r.depth == 0 and r.tag >> 16 == 2 for r in stray)
    assert record.element_count == int(row["element_count"])


@pytest.mark.corpus
def test_gh177_big_endian_undefined_length_un_sequence(
    corpus_dir: Path, corpus_manifest: list[dict[str, str]]
) -> None:
    relpath = "fo-dicom/GH177_D_CLUNIE_CT1_IVRLE_BigEndian_undefined_length.dcm"
    row = _row(corpus_manifest, relpath)
    assert row["readable_by_dcmtk"] == "yes" and row["readable_by_pydicom"] == "no"
    record = read_file(corpus_dir / relpath)
    assert not record.little_endian and record.explicit_vr
    assert record.problem is None
    assert figures(record) == expected_figures(row)  # DCMTK's
    # The UN sequence of undefined length is read as a sequence (CP-246) with its items.
    un_sequences = [r for r in record.elements if r.vr == "SQ" and r.length == UNDEFINED]
    assert un_sequences
    assert any(
        r.flags & ITEM and r.path.startswith(un_sequences[0].path + "[") for r in record.elements
    )


@pytest.mark.corpus
def test_files_without_meta_header(corpus_dir: Path, corpus_manifest: list[dict[str, str]]) -> None:
    rows = [
        r
        for r in corpus_manifest
        if r["readable_by_dcmtk"] == "yes"
        and r["readable_by_pydicom"] == "no"
        and not r["transfer_syntax_uid"]
        and r["relpath"].startswith("broken/")
    ]
    assert len(rows) == 4  # rtstruct, ExplVR_LitEndNoMeta, CR-MONO1-10-chest, GH340
    for row in rows:
        record = read_file(corpus_dir / row["relpath"])
        assert not record.preamble and not record.has_meta and record.transfer_syntax is None
        assert record.problem is None
        assert figures(record) == expected_figures(row)
        assert not any(r.flags & META for r in record.elements)


@pytest.mark.corpus
@pytest.mark.parametrize("relpath", sorted(MUST_HAVE_PROBLEM))
def test_broken_files_keep_what_pydicom_also_reads(relpath: str, corpus_dir: Path) -> None:
    """Before the problem, the walker's elements are elements pydicom finds at the same paths."""
    path = corpus_dir / relpath
    record = read_file(path)
    assert record.problem is not None
    ours = [r for r in record.elements if not r.flags & META]
    theirs = {p: e for p, _d, e in pydicom_elements(path)}
    if relpath == "broken/fo-dicom/GH1339.dcm":
        assert theirs == {}  # pydicom returns an empty data set; the walker keeps 202 elements
        assert record.element_count > 100
        return
    if relpath == "broken/fo-dicom/GH179B.dcm":
        # pydicom swallows the rest of the file into (0028,0120) (see GH179A): compare up to it.
        ours = [r for r in ours if r.offset < next(r.offset for r in ours if r.tag == 0x00280120)]
    missing = [r.path for r in ours if r.path not in theirs]
    assert not missing
    assert len(ours) >= 10


# -- values, VM and paths against pydicom ---------------------------------------------------------


INTEGER_VRS = {"US", "SS", "UL", "SL", "SV", "UV"}
NUMERIC_VRS = INTEGER_VRS | {"FL", "FD", "DS", "IS"}


def canonical(vr: str, text: str) -> str:
    """One value as text, with the differences between pydicom and the walker taken out."""
    if vr in INTEGER_VRS:
        return str(int(text))
    if vr in ("FL", "FD"):
        return repr(float(text))
    if vr == "AT":
        return f"{int(text[1:5] + text[6:10], 16):08X}" if text.startswith("(") else text
    if vr in ("DS", "IS"):
        # Leading and trailing spaces of DS/IS are not significant (PS3.5 6.2) and pydicom
        # drops them; the walker keeps the value as stored and drops trailing padding only.
        return text.strip(" ")
    if vr == "PN":
        # pydicom's str(PersonName) drops empty trailing component groups ("A^B=" -> "A^B");
        # the walker keeps the name as stored.
        return text.rstrip("=")
    return text


def pydicom_text(vr: str, value: Any) -> str:
    """pydicom's value as the walker would write it."""
    if vr in ("DS", "IS"):
        original = getattr(value, "original_string", None)
        return original if isinstance(original, str) else str(value)
    if vr in ("FL", "FD"):
        return repr(float(value))
    if vr == "AT":
        return f"{int(value):08X}"
    # pydicom 3 leaves GB 2312's escape sequence in the text; it is no part of the value.
    return str(value).replace("\x1b$)A", "")


def as_float(value: Any) -> float:
    try:
        return float(value)
    except ValueError:
        return math.nan  # an invalid DS/IS such as "1A": no number


def compare_element(record: ElementRecord, elem: DataElement, relpath: str) -> None:
    """Assert that one walker record renders the element the way pydicom reads it."""
    where = f"{relpath} {record.path}"
    vr = elem.VR
    if vr == "SQ":
        assert record.vr == "SQ" and record.value is None, where
        return
    if vr in BINARY_VRS or record.flags & BINARY:
        assert record.flags & BINARY, where
        assert record.value is None and record.number is None, where
        assert record.vr == vr or len(vr) != 2, where  # pydicom may keep "OB or OW" undecided
        if record.length != UNDEFINED:
            assert record.length == len(elem.value or b""), where
        return
    assert record.vr == vr or len(vr) != 2, where  # pydicom may keep "US or SS" undecided
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        values = values_of(elem)
        vm = elem.VM
    ours = record.value
    assert ours is not None, where
    assert record.vm == vm, where
    theirs = [pydicom_text(vr, v) for v in values]
    if record.flags & CUT:
        # Cut at the limit: what is kept is the start of the whole value.
        assert len(ours) <= DEFAULT_VALUE_LIMIT, where
        assert (
            len("\\".join(theirs)) > DEFAULT_VALUE_LIMIT or record.length > 4 * DEFAULT_VALUE_LIMIT
        )
        assert "\\".join(theirs).replace(" ", "").startswith(ours.replace(" ", "")), where
        return
    if vr in ("LT", "ST", "UT", "UR"):
        parts = [ours] if ours else []  # single-valued: a backslash is text
    else:
        parts = ours.split("\\") if ours else []
    assert [canonical(vr, p) for p in parts] == [canonical(vr, t) for t in theirs], where
    if len(values) == 1 and vr in NUMERIC_VRS and math.isfinite(as_float(values[0])):
        assert record.number is not None and math.isclose(record.number, float(values[0])), where
    elif vr not in NUMERIC_VRS or len(values) != 1:
        assert record.number is None, where


def compare_with_pydicom(root: Path, relpath: str) -> None:
    path = root / relpath
    record = read_file(path)
    theirs = {p: (d, e) for p, d, e in pydicom_elements(path)}
    ours = [r for r in record.elements if not r.flags & META]
    paths = [r.path for r in ours]
    assert len(paths) == len(set(paths)), "a path recorded twice"
    assert set(paths) == set(theirs)
    for r in ours:
        depth, elem = theirs[r.path]
        assert r.depth == depth, r.path
        if elem is None:
            assert r.flags & ITEM and r.tag == 0xFFFEE000 and r.vr == "" and r.vm == 0
            continue
        assert r.tag == int(elem.tag)
        compare_element(r, elem, relpath)
        if elem.VR == "SQ":
            items = [x for x in ours if x.flags & ITEM and x.path.rsplit("[", 1)[0] == r.path]
            assert len(items) == len(elem.value), r.path
    # File order: pydicom keeps each data set sorted by tag, and so must the file be.
    for parent in {p.rsplit(".", 1)[0] if "." in p else "" for p in paths}:
        siblings = [
            r.tag
            for r in ours
            if not r.flags & ITEM and (r.path.rsplit(".", 1)[0] if "." in r.path else "") == parent
        ]
        assert siblings == sorted(siblings) or relpath == "fo-dicom/GH1376.dcm", parent


@pytest.mark.corpus
@pytest.mark.parametrize("relpath", _readable_by_both(CORPUS_ROWS) or ["corpus-missing"])
def test_corpus_values_and_paths_agree_with_pydicom(relpath: str, corpus_dir: Path) -> None:
    compare_with_pydicom(corpus_dir, relpath)


@pytest.mark.parametrize("relpath", _readable_by_both(SAMPLE_ROWS))
def test_sample_values_and_paths_agree_with_pydicom(relpath: str, sample_dir: Path) -> None:
    compare_with_pydicom(sample_dir, relpath)


@pytest.mark.parametrize("relpath", ["fo-dicom/test_SR.dcm", "dicomParser/deflate/report_dfl"])
def test_sr_paths_at_depth(relpath: str, sample_dir: Path) -> None:
    record = read_file(sample_dir / relpath)
    ours = {r.path for r in record.elements if r.depth >= 1 and not r.flags & ITEM}
    theirs = {p for p, d, e in pydicom_elements(sample_dir / relpath) if d >= 1 and e}
    assert ours == theirs
    assert max(r.depth for r in record.elements) >= 3
    # A path names its parents: every prefix "(....)[i]" is an item record of the file.
    items = {r.path for r in record.elements if r.flags & ITEM}
    for path in ours:
        segments = path.split(".")
        for end in range(1, len(segments)):
            assert ".".join(segments[:end]) in items


def test_deflated_sr_reads_inflated_stream(sample_dir: Path) -> None:
    record = read_file(sample_dir / "dicomParser/deflate/report_dfl")
    assert record.deflated and record.transfer_syntax == "1.2.840.10008.1.2.1.99"
    assert record.size == (sample_dir / "dicomParser/deflate/report_dfl").stat().st_size


# -- fragments against pydicom.encaps ---------------------------------------------------------------


def check_fragments(root: Path, relpath: str) -> None:
    path = root / relpath
    record = read_file(path)
    theirs = {p: e for p, _d, e in pydicom_elements(path) if e is not None}
    encapsulated = [r for r in record.elements if r.flags & ENCAPSULATED]
    assert encapsulated
    for r in encapsulated:
        elem = theirs[r.path]
        assert elem.is_undefined_length
        stream = io.BytesIO(elem.value)
        offsets = parse_basic_offsets(stream)
        sizes = [len(f) for f in generate_fragments(stream)]
        assert list(r.offset_table or ()) == offsets
        assert list(r.fragments or ()) == sizes
        assert r.length == UNDEFINED and r.vm == 1 and r.value is None
        assert r.flags & BINARY and r.vr == elem.VR  # OB, or OW where the file says so


@pytest.mark.corpus
@pytest.mark.parametrize(
    "relpath",
    [
        r["relpath"]
        for r in CORPUS_ROWS
        if r["fragment_sequences"] not in ("", "0")
        and r["readable_by_pydicom"] == "yes"
        and r["readable_by_dcmtk"] == "yes"
    ]
    or ["corpus-missing"],
)
def test_corpus_fragments_agree_with_pydicom(relpath: str, corpus_dir: Path) -> None:
    check_fragments(corpus_dir, relpath)


@pytest.mark.parametrize(
    "relpath",
    [
        "fo-dicom/GH538-jpeg1.dcm",
        "dicomParser/encapsulated/multi-frame/CT0012.fragmented_no_bot_jpeg_baseline.51.dcm",
        "pydicom/JPEG2000.dcm",
        "pydicom/JPEG2000-embedded-sequence-delimiter.dcm",
    ],
)
def test_sample_fragments_agree_with_pydicom(relpath: str, sample_dir: Path) -> None:
    check_fragments(sample_dir, relpath)


@pytest.mark.corpus
def test_nested_encapsulated_icons(corpus_dir: Path) -> None:
    record = read_file(corpus_dir / "fo-dicom/GH133.dcm")
    encapsulated = [r for r in record.elements if r.flags & ENCAPSULATED]
    assert record.fragment_sequences == len(encapsulated) == 3
    assert sum(1 for r in encapsulated if r.depth > 0) == 2  # corpus README: two in items


# -- character sets --------------------------------------------------------------------------------


TEXT_VRS = {"PN", "LO", "SH", "ST", "LT", "UT", "UC"}


@pytest.mark.corpus
@pytest.mark.parametrize(
    "relpath",
    [
        r["relpath"]
        for r in CORPUS_ROWS
        if ("charset_files/" in r["relpath"] or "/charset/" in r["relpath"])
        and r["readable_by_pydicom"] == "yes"
    ]
    or ["corpus-missing"],
)
def test_charset_files_decode_like_pydicom(relpath: str, corpus_dir: Path) -> None:
    path = corpus_dir / relpath
    record = read_file(path)
    theirs = {p: e for p, _d, e in pydicom_elements(path) if e is not None}
    checked = 0
    for r in record.elements:
        elem = theirs.get(r.path)
        if elem is None or r.vr not in TEXT_VRS:
            continue
        compare_element(r, elem, relpath)
        assert "\ufffd" not in (r.value or "")
        checked += 1
    assert checked >= 1


@pytest.mark.parametrize(
    "relpath", ["pydicom/charset_files/chrH32.dcm", "pydicom/charset_files/chrX1.dcm"]
)
def test_sample_charset_files(relpath: str, sample_dir: Path) -> None:
    path = sample_dir / relpath
    record = read_file(path)
    ds = pydicom_read(path)
    names = [r for r in record.elements if r.vr == "PN"]
    assert names
    for r in names:
        elem = ds[r.tag]
        assert r.value is not None and r.value.rstrip("=") == str(elem.value).rstrip("=")
    patient = next(r for r in names if r.tag == 0x00100010)
    assert any(ord(c) >= 0x3000 for c in patient.value or "")  # really decoded: CJK, kana


# -- pixel bytes are never loaded --------------------------------------------------------------------


PIXEL_MB = 20


def _big_file(path: Path, encapsulated: bool) -> int:
    """Write a ~20 MB file with Pixel Data and elements after it; return the Pixel Data length."""
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = "1.2.3.4.5.6"
    ds.PatientID = "BIG"
    ds.Rows, ds.Columns, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 1000, 1000, 8, 8, 7
    ds.SamplesPerPixel, ds.PixelRepresentation = 1, 0
    ds.PhotometricInterpretation = "MONOCHROME2"
    frame = bytes(range(256)) * 4000  # 1 024 000 bytes, even
    if encapsulated:
        frames = [frame] * PIXEL_MB
        ds.NumberOfFrames = PIXEL_MB
        ds.PixelData = encapsulate(frames, fragments_per_frame=2, has_bot=True)
        ds["PixelData"].VR = "OB"
        syntax = RLELossless
    else:
        ds.PixelData = frame * PIXEL_MB
        ds["PixelData"].VR = "OB"
        syntax = ExplicitVRLittleEndian
    block = ds.private_block(0x7FE1, "ACME AFTER PIXELS", create=True)
    block.add_new(0x01, "LO", "after pixel data")
    ds.add_new(0xFFFCFFFC, "OB", b"\0" * 16)  # Data Set Trailing Padding
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.save_as(path, enforce_file_format=True)
    return len(ds.PixelData)


@pytest.mark.parametrize("encapsulated", [False, True], ids=["native", "encapsulated"])
def test_pixel_data_is_not_loaded(tmp_path: Path, encapsulated: bool) -> None:
    path = tmp_path / "big.dcm"
    pixel_length = _big_file(path, encapsulated)
    assert path.stat().st_size > MAP_THRESHOLD and pixel_length > PIXEL_MB * 1_000_000
    tracemalloc.start()
    try:
        record = read_file(path)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Far below the Pixel Data: the file is mapped, fragments are stepped over by item headers.
    assert peak < 1_000_000, peak
    assert record.problem is None
    pixel = [r for r in record.elements if r.tag == 0x7FE00010]
    assert len(pixel) == 1 and pixel[0].value is None and pixel[0].flags & BINARY
    if encapsulated:
        assert pixel[0].flags & ENCAPSULATED and pixel[0].length == UNDEFINED
        assert len(pixel[0].fragments or ()) == 2 * PIXEL_MB == record.fragments
        assert len(pixel[0].offset_table or ()) == PIXEL_MB
        assert sum(pixel[0].fragments or ()) == PIXEL_MB * 1_024_000
    else:
        assert pixel[0].length == pixel_length
    after = [r for r in record.elements if r.offset > pixel[0].offset]
    assert [(r.tag, r.value) for r in after] == [
        (0x7FE10010, "ACME AFTER PIXELS"),
        (0x7FE11001, "after pixel data"),
        (0xFFFCFFFC, None),
    ]
    assert after[1].private_creator == "ACME AFTER PIXELS"
