"""The walker on what real archives hold (issue 10 "The walker", issue 11 "No patient value
escapes"): zero padding after the data set, floods of warnings, garbage where an element header
should be, truncated values, padding inside multi-valued strings.

Files are real ones from tests/data, padded or cut the way writers do it, or built byte by byte
(tests/torture/build.py) where the defect is in the bytes themselves. Where rows land in the
index, the files go through `index_paths` on SQLite and PostgreSQL.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from pathlib import Path

import pydicom
import pytest
from helpers import INDEXER_BIN, query
from pydicom.uid import ImplicitVRLittleEndian
from torture.build import IMPLICIT_LE, el, implicit_el, meta, uid_for

from indexer.db import connect
from indexer.reader import read_file
from indexer.records import BINARY, CUT, META, VR_FROM_DICTIONARY, FileRecord
from indexer.reports.find import find
from indexer.run import index_paths
from indexer.walker import MAX_WARNINGS

DATA = Path(__file__).parent / "data"
GE_MR = DATA / "dcm_qa_nih/20180918GE/mr_0004/axial_epi_fmri_interleaved_i_to_s-00001.dcm"
RTPLAN = DATA / "pydicom/rtplan.dcm"  # implicit VR little endian, no Pixel Data
PADDING = 2_621_440  # 2.5 MiB: the size of the padding the issue met after Pixel Data


def body(record: FileRecord) -> list[tuple[str, str, int, str | None]]:
    """(path, vr, vm, value) of the data set's records."""
    return [(r.path, r.vr, r.vm, r.value) for r in record.elements if not r.flags & META]


def implicit_copy(source: Path, target: Path) -> Path:
    """`source` written again in implicit VR little endian by pydicom (every element kept)."""
    ds = pydicom.dcmread(source)
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    ds.save_as(target, enforce_file_format=True)
    return target


def file_rows(url: str, name: str) -> tuple[tuple[object, ...], list[tuple[object, ...]]]:
    """(status, problem) of the file called `name`, and its error rows (severity, message)."""
    (status,) = query(url, "SELECT status, problem FROM files WHERE path LIKE :p", p=f"%/{name}")
    errors = query(
        url,
        "SELECT severity, reason, message FROM errors WHERE path LIKE :p ORDER BY id",
        p=f"%/{name}",
    )
    return status, errors


def element_rows(url: str, name: str) -> list[tuple[object, ...]]:
    """(path, tag, vr, vm, length, value, number, flags) of every element row of a file."""
    return query(
        url,
        "SELECT p.path, p.tag, e.vr, e.vm, e.length, e.value, e.number, e.flags "
        "FROM elements e JOIN paths p ON p.id = e.path_id JOIN files f ON f.id = e.file_id "
        "WHERE f.path LIKE :p ORDER BY e.ordinal",
        p=f"%/{name}",
    )


# -- 1. zero padding after the data set ------------------------------------------------------------


def padded_files(folder: Path) -> dict[str, tuple[Path, int]]:
    """Real files with zeros after their last element: name -> (unpadded original, zero bytes)."""
    folder.mkdir()
    originals = folder.parent / "originals"
    originals.mkdir()
    ge_implicit = implicit_copy(GE_MR, originals / "ge_implicit.dcm")
    rtplan = shutil.copy(RTPLAN, originals / "rtplan.dcm")
    cases: dict[str, tuple[Path, int]] = {}
    for name, source, zeros in [
        # megabytes after Pixel Data, explicit and implicit VR
        ("ge_explicit_padded.dcm", GE_MR, PADDING),
        ("ge_implicit_padded.dcm", ge_implicit, PADDING),
        # padded to a block size of 4096 / 32768 bytes
        ("rtplan_block.dcm", Path(rtplan), -RTPLAN.stat().st_size % 4096),
        ("ge_block.dcm", GE_MR, -GE_MR.stat().st_size % 32768),
    ]:
        assert zeros >= 8
        (folder / name).write_bytes(source.read_bytes() + bytes(zeros))
        cases[name] = (source, zeros)
    return cases


def test_zero_padding_ends_the_data_set_with_one_note(tmp_path: Path) -> None:
    for name, (source, zeros) in padded_files(tmp_path / "padded").items():
        original = read_file(source)
        record = read_file(tmp_path / "padded" / name)
        assert record.problem is None, name
        assert body(record) == body(original), name  # no (0000,0000) element, nothing lost
        assert record.element_count == original.element_count
        note = f"trailing padding: {zeros} zero bytes after the last element, ignored"
        assert record.warnings == original.warnings + [note], name


def test_zero_padding_in_the_index(db_url: str, tmp_path: Path) -> None:
    """Status `indexed` (padding is not an error), one warning row, no fake element rows."""
    cases = padded_files(tmp_path / "padded")
    report = index_paths([tmp_path / "padded"], db_url, workers=0)
    assert report.indexed == len(cases) and report.partial == 0
    for name, (source, zeros) in cases.items():
        status, errors = file_rows(db_url, name)
        assert status == ("indexed", None), name
        assert errors == [
            (
                "warning",
                "warning",
                f"trailing padding: {zeros} zero bytes after the last element, ignored",
            )
        ], name
        rows = element_rows(db_url, name)
        assert not [r for r in rows if r[1] == 0], name
        assert len([r for r in rows if not int(r[7]) & META]) == len(body(read_file(source)))
    assert query(db_url, "SELECT COUNT(*) FROM paths WHERE tag = 0") == [(0,)]


def test_zero_bytes_followed_by_data_are_one_problem(tmp_path: Path) -> None:
    """Zeros, then something else: not padding; the data set ends at the zeros, one problem."""
    original = read_file(GE_MR)
    path = tmp_path / "zeros_then_data.dcm"
    path.write_bytes(GE_MR.read_bytes() + bytes(4096) + b"\x08\x00\x60\x00CS\x02\x00MR" * 8)
    record = read_file(path)
    assert body(record) == body(original)
    assert record.problem == (
        f"zero bytes at byte {GE_MR.stat().st_size}: not an element header, the data set ends there"
    )
    assert record.warnings == original.warnings


# -- 2. a bounded number of warnings per file ------------------------------------------------------


def many_odd_elements() -> tuple[bytes, int]:
    """A file with 4,096 private elements of invalid VR "  " (read like DCMTK, one warning each)
    and 1,000 stray Item Delimitation Items (one warning each): the file and its warnings."""
    creators = b"".join(el(0x00090010 + block, "LO", b"ACME %02d" % block) for block in range(16))
    odd = b"".join(
        el(0x00091000 | block << 8 | number, "SS", b"\x01\x00", raw_vr=b"  ")
        for block in range(16)
        for number in range(256)
    )
    stray = (struct.pack("<HHI", 0xFFFE, 0xE00D, 0)) * 1000
    data = (
        el(0x00080016, "UI", b"1.2.840.10008.5.1.4.1.1.7")
        + el(0x00080018, "UI", uid_for("odd/sop").encode())
        + creators
        + odd
        + stray
        + el(0x00100020, "LO", b"ODD")
    )
    return meta(uid_for("odd/sop")) + data, 4096 + 1000


def test_warnings_of_one_file_are_bounded(tmp_path: Path) -> None:
    data, warnings = many_odd_elements()
    path = tmp_path / "odd.dcm"
    path.write_bytes(data)
    record = read_file(path)
    assert record.problem is None
    assert record.element_count == 2 + 16 + 4096 + 1  # every real element is kept
    assert all(r.flags & VR_FROM_DICTIONARY for r in record.elements if r.tag >> 8 == 0x91)
    assert len(record.warnings) == MAX_WARNINGS + 1
    assert record.warnings[-1] == (
        f"{warnings - MAX_WARNINGS} more warnings not recorded (at most {MAX_WARNINGS} per file)"
    )


def test_warning_rows_of_one_file_are_bounded(db_url: str, tmp_path: Path) -> None:
    folder = tmp_path / "odd"
    folder.mkdir()
    data, warnings = many_odd_elements()
    (folder / "odd.dcm").write_bytes(data)
    index_paths([folder], db_url, workers=0)
    status, errors = file_rows(db_url, "odd.dcm")
    assert status == ("indexed", None)
    assert len(errors) == MAX_WARNINGS + 1 and {e[0] for e in errors} == {"warning"}
    assert errors[-1][2].startswith(f"{warnings - MAX_WARNINGS} more warnings")
    assert query(db_url, "SELECT COUNT(*) FROM elements") == [(2 + 16 + 4096 + 1 + 6,)]  # + meta


# -- 3 and 4. garbage where an element header should be; no value bytes in messages ----------------

# A patient name whose every 2- and 4-byte window is recognisable in a message.
NAME = b"XWVU^KJH^ZQSECRET^NAMEZQ"
PATIENT_ID = b"ZQPIDXQWV"


# Two spaces read as a group are 2020, a group the dictionary knows: the tag must still be
# recognised as text (a short name length lands the walk on them).
SPACED_NAME = b"AB  CDEFGH^ZQNAME"


def name_file(syntax: str, where: str, error: int) -> bytes:
    """A file whose Patient's Name declares `error` bytes more (or fewer) than it holds, at the
    top level or inside an item; real elements follow it. `error` -15: SPACED_NAME, 2 bytes."""
    explicit = syntax == "explicit"
    patient_name = SPACED_NAME if error == -15 else NAME

    def element(tag: int, vr: str, value: bytes, length: int | None = None) -> bytes:
        if explicit:
            return el(tag, vr, value, length=length)
        return implicit_el(tag, value, length=length)

    name = element(0x00100010, "PN", patient_name, length=len(patient_name) + error)
    after = element(0x00100020, "LO", PATIENT_ID + b" ") + element(0x00100030, "DA", b"19700101")
    if where == "item":
        content = element(0x00080100, "SH", b"CODE01") + name + after
        item = struct.pack("<HHI", 0xFFFE, 0xE000, len(content)) + content
        people = element(0x00081120, "SQ", b"", length=len(item)) + item
        patient = people
    else:
        patient = name + after
    data = (
        element(0x00080016, "UI", b"1.2.840.10008.5.1.4.1.1.7")
        + element(0x00080018, "UI", uid_for(f"name/{syntax}/{where}/{error}").encode())
        + element(0x00080060, "CS", b"OT")
        + patient
        + element(0x0020000D, "UI", b"1.2.3.4")
    )
    header = meta(
        uid_for(f"name/{syntax}/{where}/{error}"),
        **({} if explicit else {"transfer_syntax": IMPLICIT_LE}),
    )
    return header + data


NAME_CASES = [
    (syntax, where, error)
    for syntax in ("explicit", "implicit")
    for where in ("top", "item")
    for error in (-16, -15, -9, 6)
]


def name_case_id(case: tuple[str, str, int]) -> str:
    return f"{case[0]}-{case[1]}-{case[2]:+d}"


def leaks_of(value: bytes) -> set[str]:
    """Every way a message could show a piece of `value`: 4-character text windows, and the hex
    and decimal of every 2- and 4-byte window in either byte order."""
    out = {value[i : i + 4].decode("latin-1") for i in range(len(value) - 3)}
    for size, code in ((2, "H"), (4, "I")):
        for i in range(len(value) - size + 1):
            window = value[i : i + size]
            for order in "<>":
                number = struct.unpack(order + code, window)[0]
                out |= {str(number), f"{number:0{size * 2}X}", f"{number:0{size * 2}x}"}
    out |= {repr(value[i : i + 2]) for i in range(len(value) - 1)}  # b'^K' as VRs were quoted
    return out


@pytest.mark.parametrize("case", NAME_CASES, ids=name_case_id)
def test_garbage_header_stops_the_walk_with_one_problem(
    tmp_path: Path, case: tuple[str, str, int]
) -> None:
    path = tmp_path / "name.dcm"
    path.write_bytes(name_file(*case))
    record = read_file(path)
    assert record.problem is not None and record.problem_reason == "invalid"
    assert "not an element header" in record.problem
    # Bogus tags never become elements: every tag read is one the file was built with.
    built = {0x00080016, 0x00080018, 0x00080060, 0x00081120, 0x00080100, 0x00100010, 0x00100020}
    built |= {0x00100030, 0x0020000D, 0xFFFEE000}
    tags = {r.tag for r in record.elements if not r.flags & META}
    assert tags <= built, sorted(hex(t) for t in tags - built)
    assert {0x00080016, 0x00080018, 0x00080060} <= tags
    assert not [w for w in record.warnings if "invalid VR" in w]  # one problem, no cascade
    texts = [record.problem, *record.warnings]
    assert [
        (leak, t)
        for t in texts
        for leak in leaks_of(NAME) | leaks_of(SPACED_NAME) | leaks_of(PATIENT_ID)
        if leak in t
    ] == []


def test_garbage_in_the_index_and_on_stderr_quotes_no_value(db_url: str, tmp_path: Path) -> None:
    """Every error row, file problem and line on stderr of `index` and `dump`: no piece of the
    name or the patient ID, in text, hex or decimal."""
    folder = tmp_path / "names"
    folder.mkdir()
    for case in NAME_CASES:
        (folder / f"{name_case_id(case)}.dcm").write_bytes(name_file(*case))
    env = {**os.environ, "INDEXER_DB": db_url}
    index = subprocess.run(
        [str(INDEXER_BIN), "index", str(folder), "-w", "1"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert index.returncode == 0, index.stderr
    stderr = [index.stderr]
    for case in NAME_CASES[:4]:
        dump = subprocess.run(
            [str(INDEXER_BIN), "dump", str(folder / f"{name_case_id(case)}.dcm")],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        stderr.append(dump.stderr)
    rows = query(db_url, "SELECT status, problem FROM files")
    assert {r[0] for r in rows} == {"partial"} and len(rows) == len(NAME_CASES)
    messages = [r[0] for r in query(db_url, "SELECT message FROM errors")]
    assert len(messages) == len(NAME_CASES)  # one problem per file, no warning rows
    texts = messages + [str(r[1]) for r in rows] + stderr
    leaks = leaks_of(NAME) | leaks_of(SPACED_NAME) | leaks_of(PATIENT_ID)
    assert [(leak, t) for t in texts for leak in leaks if leak in t] == []
    # Nothing bogus in the index: the only tags are those the files were built with.
    tags = {int(t) for (t,) in query(db_url, "SELECT DISTINCT tag FROM paths")}
    assert all(t >> 16 in (0x0002, 0x0008, 0x0010, 0x0020, 0xFFFE) for t in tags), tags


def test_a_known_element_with_an_invalid_vr_is_still_read(tmp_path: Path) -> None:
    """The DCMTK reading of a real element with a broken VR (corpus fo-dicom/GH179A) stays: the
    tag is known and the value fits. The warning names the tag, not the VR bytes."""
    data = (
        el(0x00080016, "UI", b"1.2.840.10008.5.1.4.1.1.7")
        + el(0x00080018, "UI", uid_for("badvr/sop").encode())
        + el(0x00100010, "PN", NAME)
        + el(0x00100020, "LO", PATIENT_ID + b" ", raw_vr=b"^K")
        + el(0x00100030, "DA", b"19700101")
    )
    path = tmp_path / "badvr.dcm"
    path.write_bytes(meta(uid_for("badvr/sop")) + data)
    record = read_file(path)
    assert record.problem is None and record.element_count == 5
    found = {r.tag: r for r in record.elements}
    assert (found[0x00100020].vr, found[0x00100020].value) == ("LO", PATIENT_ID.decode())
    offset = found[0x00100020].offset
    assert record.warnings == [
        f"invalid VR of (0010,0020) at byte {offset}: VR taken from the dictionary"
    ]


# -- 5. a truncated element keeps its partial value ------------------------------------------------


TRUNCATED_DS = "(300A,00B0)[0].(300A,0111)[0].(300A,012C)"


def test_truncated_element_keeps_its_partial_value(db_url: str, tmp_path: Path) -> None:
    folder = tmp_path / "broken"
    folder.mkdir()
    for name in ("rtplan_truncated.dcm", "MR_truncated.dcm"):
        shutil.copy(DATA / "broken/pydicom" / name, folder / name)
    index_paths([folder], db_url, workers=0)
    rows = {r[0]: r for r in element_rows(db_url, "rtplan_truncated.dcm")}
    _path, _tag, vr, vm, length, value, number, flags = rows[TRUNCATED_DS]
    # 29 of the 50 declared bytes are in the file: the text they hold, its VM, flagged cut.
    assert (vr, vm, length, value, number) == ("DS", 2, 50, "235.711172833292\\244.13543711", None)
    assert int(flags) & CUT and not int(flags) & BINARY
    status, errors = file_rows(db_url, "rtplan_truncated.dcm")
    assert status == (
        "partial",
        "(300A,012C) at byte 2092 declares 50 bytes but the file ends at byte 2129",
    )
    pixel = {r[0]: r for r in element_rows(db_url, "MR_truncated.dcm")}["(7FE0,0010)"]
    assert pixel[2:7] == ("OW", 1, 8192, None, None)
    assert int(pixel[7]) & CUT and int(pixel[7]) & BINARY


def test_truncated_numbers_keep_their_whole_values(tmp_path: Path) -> None:
    """Binary numbers cut by the end of the file: the values that are whole, VM of those."""
    data = (
        el(0x00080016, "UI", b"1.2.840.10008.5.1.4.1.1.7")
        + el(0x00080018, "UI", uid_for("cutnum/sop").encode())
        + el(0x00181310, "US", struct.pack("<4H", 256, 0, 0, 256))  # Acquisition Matrix
    )
    path = tmp_path / "cutnum.dcm"
    path.write_bytes((meta(uid_for("cutnum/sop")) + data)[:-3])  # 2 whole values and 1 byte
    record = read_file(path)
    matrix = record.elements[-1]
    assert (matrix.vm, matrix.value, matrix.number, matrix.length) == (2, "256\\0", None, 8)
    assert matrix.flags & CUT and record.problem is not None


# -- 6. padding inside multi-valued strings --------------------------------------------------------

PADDED_VALUES = [
    # (tag, VR, as written, as stored)
    (0x00080008, "CS", b"DERIVED \\SECONDARY \\ AXIAL", "DERIVED\\SECONDARY\\AXIAL"),
    (0x00080054, "AE", b" PACS1 \\ PACS2  ", "PACS1\\PACS2"),
    (0x00081070, "PN", b"DOE^JANE \\ROE^JOHN ", "DOE^JANE\\ROE^JOHN"),
    (0x00181020, "LO", b"V1.0  \\ V2.1 ", "V1.0\\ V2.1"),  # leading spaces of LO kept
    (0x00181200, "DA", b"20200101 \\20210202", "20200101\\20210202"),
    (0x00181201, "TM", b"120000 \\ 130000", "120000\\130000"),
    (0x00201041, "DS", b" 1.5 ", "1.5"),
    (0x00280030, "DS", b" 0.5 \\0.25 ", "0.5\\0.25"),
    (
        0x00204000,
        "LT",
        b"  two leading spaces kept \\ one text ",
        "  two leading spaces kept \\ one text",
    ),
    (0x0040A124, "UI", b"1.2.3\x00\\1.2.4\x00", "1.2.3\\1.2.4"),
]


def padded_values_file() -> bytes:
    sop = uid_for("padded-values/sop")
    data = [
        (0x00080016, el(0x00080016, "UI", b"1.2.840.10008.5.1.4.1.1.7")),
        (0x00080018, el(0x00080018, "UI", sop.encode())),
        (0x00080060, el(0x00080060, "CS", b"OT")),
        (0x00100020, el(0x00100020, "LO", b"PADDED")),
        (0x0020000D, el(0x0020000D, "UI", uid_for("padded-values/study").encode())),
        (0x0020000E, el(0x0020000E, "UI", uid_for("padded-values/series").encode())),
    ]
    data += [(tag, el(tag, vr, written)) for tag, vr, written, _ in PADDED_VALUES]
    return meta(sop) + b"".join(e for _, e in sorted(data))


def test_padding_of_each_value_is_stripped(tmp_path: Path) -> None:
    path = tmp_path / "padded_values.dcm"
    path.write_bytes(padded_values_file())
    found = {r.tag: r for r in read_file(path).elements}
    for tag, vr, _written, stored in PADDED_VALUES:
        record = found[tag]
        assert (record.vr, record.value) == (vr, stored), hex(tag)
        assert record.vm == (1 if vr == "LT" else stored.count("\\") + 1), hex(tag)
    assert found[0x00201041].number == 1.5 and found[0x00280030].number is None


def test_find_matches_a_padded_value(db_url: str, tmp_path: Path) -> None:
    folder = tmp_path / "padded"
    folder.mkdir()
    (folder / "padded_values.dcm").write_bytes(padded_values_file())
    index_paths([folder], db_url, workers=0)
    with connect(db_url) as conn:
        for filters in ([("ImageType", "DERIVED")], [("OperatorsName", "DOE^JANE")]):
            found = find(conn, "instances", filters)
            assert [r["sop_instance_uid"] for r in found] == [uid_for("padded-values/sop")]
    values = {r[0]: r[5] for r in element_rows(db_url, "padded_values.dcm")}
    assert values["(0008,0008)"] == "DERIVED\\SECONDARY\\AXIAL"
    assert values["(0040,A124)"] == "1.2.3\\1.2.4"
