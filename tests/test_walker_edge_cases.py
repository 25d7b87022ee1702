"""indexer.walker on hand-built files: each case is written with pydicom (or byte by byte
where pydicom cannot write it) and the expected records are derived from what was built,
never from the walker."""

from __future__ import annotations

import gzip
import io
import random
import struct
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydicom.datadict import get_private_entry
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, generate_fragments, parse_basic_offsets
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
)

from indexer.errors import DicomReadError, NotDicomError
from indexer.reader import read_file
from indexer.records import (
    BINARY,
    CUT,
    DEFAULT_VALUE_LIMIT,
    ENCAPSULATED,
    ITEM,
    META,
    PRIVATE,
    UNDEFINED,
    UNDEFINED_LENGTH,
    VR_FROM_DICTIONARY,
    ElementRecord,
    FileRecord,
)

SYNTAXES = {
    "explicit-le": ExplicitVRLittleEndian,
    "implicit-le": ImplicitVRLittleEndian,
    "explicit-be": ExplicitVRBigEndian,
    "deflated": DeflatedExplicitVRLittleEndian,
}

# -- building files ------------------------------------------------------------------------------


def new_dataset() -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    return ds


def save(ds: Dataset, path: Path, syntax: str = ExplicitVRLittleEndian) -> Path:
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.save_as(path, enforce_file_format=True)
    return path


def data_set_bytes(ds: Dataset, *, implicit: bool = False, little: bool = True) -> bytes:
    """The data set alone: no preamble, no meta header."""
    fp = DicomBytesIO()
    fp.is_little_endian = little
    fp.is_implicit_VR = implicit
    write_dataset(fp, ds)
    return fp.getvalue()


def walk_built(
    ds: Dataset, prefix: str = "", depth: int = 0
) -> Iterator[tuple[str, int, DataElement | None]]:
    """(path, depth, element) of what was built, items as (path, depth, None), in file order."""
    for elem in ds:
        path = f"{prefix}({elem.tag.group:04X},{elem.tag.element:04X})"
        yield path, depth, elem
        if elem.VR == "SQ":
            for index, item in enumerate(elem.value):
                yield f"{path}[{index}]", depth + 1, None
                yield from walk_built(item, f"{path}[{index}].", depth + 1)


def built_figures(ds: Dataset) -> tuple[int, int]:
    """(element count, max sequence depth) of what was built."""
    count = depth = 0
    for _path, level, elem in walk_built(ds):
        if elem is not None:
            count += 1
            if elem.VR == "SQ":
                depth = max(depth, level + 1)
    return count, depth


def body(record: FileRecord) -> list[ElementRecord]:
    """Records of the data set (meta header left out)."""
    return [r for r in record.elements if not r.flags & META]


def by_path(record: FileRecord) -> dict[str, ElementRecord]:
    found = {r.path: r for r in body(record)}
    assert len(found) == len(body(record)), "a path recorded twice"
    return found


def assert_matches_built(record: FileRecord, ds: Dataset) -> None:
    """Paths, depths, order and figures of the records equal those of the built data set."""
    expected = [(p, d) for p, d, _e in walk_built(ds)]
    assert [(r.path, r.depth) for r in body(record)] == expected
    count, depth = built_figures(ds)
    assert (record.element_count, record.max_depth) == (count, depth)
    assert record.problem is None, record.problem


def explicit_le(tag: int, vr: bytes, value: bytes, length: int | None = None) -> bytes:
    size = len(value) if length is None else length
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF) + vr
    if vr in (b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN", b"UC", b"UR", b"OD", b"OL", b"OV"):
        return head + struct.pack("<HI", 0, size) + value
    return head + struct.pack("<H", size) + value


def explicit_be(tag: int, vr: bytes, value: bytes, length: int | None = None) -> bytes:
    size = len(value) if length is None else length
    head = struct.pack(">HH", tag >> 16, tag & 0xFFFF) + vr
    if vr in (b"OB", b"OW", b"SQ", b"UT", b"UN"):
        return head + struct.pack(">HI", 0, size) + value
    return head + struct.pack(">H", size) + value


def implicit_le(tag: int, value: bytes, length: int | None = None) -> bytes:
    size = len(value) if length is None else length
    return struct.pack("<HHI", tag >> 16, tag & 0xFFFF, size) + value


def item_le(content: bytes, undefined: bool = False) -> bytes:
    if undefined:
        return (
            struct.pack("<HHI", 0xFFFE, 0xE000, UNDEFINED)
            + content
            + struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
        )
    return struct.pack("<HHI", 0xFFFE, 0xE000, len(content)) + content


SEQUENCE_END_LE = struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)


def meta_header(syntax: str) -> bytes:
    """A 128-byte preamble, "DICM" and a minimal meta group (explicit VR little endian)."""
    uid = syntax.encode() + (b"\0" if len(syntax) % 2 else b"")
    elements = explicit_le(0x00020001, b"OB", b"\0\1") + explicit_le(0x00020010, b"UI", uid)
    return (
        b"\0" * 128
        + b"DICM"
        + explicit_le(0x00020000, b"UL", struct.pack("<I", len(elements)))
        + elements
    )


# -- nesting, empty sequences and items, defined and undefined lengths -------------------------------


def nested_dataset(undefined: bool) -> Dataset:
    """SR-like content tree, 3 sequence levels, an empty sequence and an empty item."""
    code = Dataset()
    code.CodeValue = "121071"
    code.CodingSchemeDesignator = "DCM"
    code.CodeMeaning = "Finding"
    inner = Dataset()
    inner.ConceptNameCodeSequence = Sequence([code])
    text = Dataset()
    text.TextValue = "level two"
    container = Dataset()
    container.ValueType = "CONTAINER"
    container.ContentSequence = Sequence([inner, text])
    ds = new_dataset()
    ds.PatientName = "Doe^John"
    ds.ContentSequence = Sequence([container, Dataset()])  # the second item is empty
    ds.ReferencedStudySequence = Sequence([])  # empty sequence
    if undefined:
        for seq_owner, keyword in (
            (ds, "ContentSequence"),
            (container, "ContentSequence"),
            (inner, "ConceptNameCodeSequence"),
            (ds, "ReferencedStudySequence"),
        ):
            seq_owner[keyword].is_undefined_length = True
        for item in (container, inner, text, code, ds.ContentSequence[1]):
            item.is_undefined_length_sequence_item = True
    return ds


@pytest.mark.parametrize("syntax", list(SYNTAXES), ids=list(SYNTAXES))
@pytest.mark.parametrize("undefined", [False, True], ids=["defined", "undefined"])
def test_nested_sequences(tmp_path: Path, syntax: str, undefined: bool) -> None:
    ds = nested_dataset(undefined)
    path = save(ds, tmp_path / "nested.dcm", SYNTAXES[syntax])
    record = read_file(path)
    assert_matches_built(record, ds)
    # Counted by hand, too: 5 top level, 2 in the container, 1 + 3 under the concept name,
    # 1 text value; sequences at depths 0, 1 and 2.
    assert (record.element_count, record.max_depth) == (12, 3)
    assert record.deflated == (syntax == "deflated")
    assert record.explicit_vr == (syntax != "implicit-le")
    assert record.little_endian == (syntax != "explicit-be")
    found = by_path(record)
    deepest = found["(0040,A730)[0].(0040,A730)[0].(0040,A043)[0].(0008,0104)"]
    assert (deepest.depth, deepest.vr, deepest.vm, deepest.value, deepest.keyword) == (
        3,
        "LO",
        1,
        "Finding",
        "CodeMeaning",
    )
    assert found["(0040,A730)[0].(0040,A730)[1].(0040,A160)"].value == "level two"
    assert found["(0040,A730)[0].(0040,A040)"].value == "CONTAINER"
    empty_item = found["(0040,A730)[1]"]
    assert empty_item.flags & ITEM and empty_item.tag == 0xFFFEE000 and empty_item.depth == 1
    assert not any(p.startswith("(0040,A730)[1].") for p in found)
    empty_sequence = found["(0008,1110)"]
    assert empty_sequence.vr == "SQ" and not any(p.startswith("(0008,1110)[") for p in found)
    sequences_and_items = [r for r in body(record) if r.vr == "SQ" or r.flags & ITEM]
    assert len(sequences_and_items) == 4 + 5
    for r in sequences_and_items:
        assert r.value is None
        assert bool(r.flags & UNDEFINED_LENGTH) == undefined == (r.length == UNDEFINED)
    if not undefined:
        assert empty_sequence.length == 0 and empty_item.length == 0


def test_deep_nesting_many_levels(tmp_path: Path) -> None:
    levels = 12
    ds = new_dataset()
    current = ds
    for _ in range(levels):
        item = Dataset()
        item.PatientID = "x"
        current.ReferencedSeriesSequence = Sequence([item])
        current = item
    record = read_file(save(ds, tmp_path / "deep.dcm"))
    assert_matches_built(record, ds)
    assert record.max_depth == levels
    deepest = max((r for r in body(record) if not r.flags & ITEM), key=lambda r: r.depth)
    assert deepest.path == "(0008,1115)[0]." * levels + "(0010,0020)"


# -- private blocks ----------------------------------------------------------------------------------


def private_dataset() -> Dataset:
    ds = new_dataset()
    acme = ds.private_block(0x0029, "ACME UNKNOWN 1.0", create=True)  # (0029,0010)
    siemens = ds.private_block(0x0029, "SIEMENS CSA HEADER", create=True)  # (0029,0011)
    acme.add_new(0x01, "LO", "acme value")  # (0029,1001)
    siemens.add_new(0x08, "CS", "IMAGE NUM 4")  # (0029,1108): the dictionary's (0029,xx08)
    siemens.add_new(0x10, "OB", b"SV10\4\3\2\1")  # (0029,1110)
    ds.add_new(0x00291201, "LO", "orphan")  # block 12 has no private creator
    inner = Dataset()
    inner.PatientID = "in private sequence"
    acme.add_new(0x02, "SQ", Sequence([inner]))  # (0029,1002), unknown to every dictionary
    ds[0x00291002].is_undefined_length = True
    return ds


@pytest.mark.parametrize("syntax", ["explicit-le", "implicit-le", "explicit-be"])
def test_private_blocks(tmp_path: Path, syntax: str) -> None:
    ds = private_dataset()
    record = read_file(save(ds, tmp_path / "private.dcm", SYNTAXES[syntax]))
    assert_matches_built(record, ds)
    found = by_path(record)
    creator = found["(0029,0011)"]
    assert (creator.vr, creator.value, creator.name) == (
        "LO",
        "SIEMENS CSA HEADER",
        "Private Creator",
    )
    assert (
        creator.flags & PRIVATE and creator.private_creator == "SIEMENS CSA HEADER"
    )  # its own block

    csa_type = found["(0029,1108)"]
    dict_vr, _vm, dict_name, _retired = get_private_entry(0x00291008, "SIEMENS CSA HEADER")
    assert csa_type.private_creator == "SIEMENS CSA HEADER"
    assert (
        (csa_type.vr, csa_type.name, csa_type.keyword)
        == (dict_vr, dict_name, "")
        == ("CS", "CSA Image Header Type", "")
    )
    assert csa_type.value == "IMAGE NUM 4" and csa_type.flags & PRIVATE
    csa_info = found["(0029,1110)"]
    assert csa_info.vr == "OB" and csa_info.flags & BINARY and csa_info.length == 8
    assert csa_info.name == "CSA Image Header Info"

    acme = found["(0029,1001)"]
    assert acme.private_creator == "ACME UNKNOWN 1.0" and acme.name == "Private tag data"
    orphan = found["(0029,1201)"]
    assert orphan.private_creator is None and "no private creator" in orphan.name
    if syntax == "implicit-le":
        # Nothing tells the VR of an unknown private element: UN, length only.
        assert acme.vr == orphan.vr == "UN" and acme.value is None and acme.flags & BINARY
    else:
        assert (acme.vr, acme.value, orphan.value) == ("LO", "acme value", "orphan")
    # An unknown private sequence of undefined length is read as a sequence in every syntax.
    sequence = found["(0029,1002)"]
    assert sequence.vr == "SQ" and sequence.length == UNDEFINED
    assert found["(0029,1002)[0].(0010,0020)"].value == "in private sequence"


def test_private_creator_is_scoped_to_its_item(tmp_path: Path) -> None:
    ds = new_dataset()
    item = Dataset()
    item.private_block(0x0029, "SIEMENS CSA HEADER", create=True).add_new(0x08, "CS", "IN ITEM")
    ds.ReferencedImageSequence = Sequence([item])
    ds.add_new(0x00291008, "CS", "NO CREATOR HERE")  # top level: the item's creator does not apply
    record = read_file(save(ds, tmp_path / "scoped.dcm"))
    found = by_path(record)
    assert found["(0008,1140)[0].(0029,1008)"].private_creator == "SIEMENS CSA HEADER"
    assert found["(0008,1140)[0].(0029,1008)"].name == "CSA Image Header Type"
    assert found["(0029,1008)"].private_creator is None


# -- values -----------------------------------------------------------------------------------------


def values_dataset() -> Dataset:
    ds = new_dataset()
    ds.PixelRepresentation = 1  # signed: "US or SS" elements are SS in implicit VR too
    ds.add_new(0x00280030, "DS", ["1.5", "-2", "3e2"])  # PixelSpacing, 3 values on purpose
    ds.add_new(0x00181050, "DS", "2.50")  # SpatialResolution
    ds.add_new(0x00200013, "IS", "42")  # InstanceNumber
    ds.add_new(0x00280010, "US", 512)  # Rows
    ds.add_new(0x00181310, "US", [0, 256, 256, 0])  # AcquisitionMatrix
    ds.add_new(0x00280106, "SS", -5)  # SmallestImagePixelValue
    ds.add_new(0x00189219, "SS", [])  # TagAngleSecondAxis, empty
    ds.add_new(0x00181060, "DS", "")  # empty text
    ds.add_new(0x00700262, "FL", 0.5)  # Diameter of Visibility
    ds.add_new(0x0018602C, "FD", [1.25, -0.5])  # PhysicalDeltaX, 2 values on purpose
    ds.add_new(0x00081163, "FD", 1e300)
    ds.add_new(0x00041200, "UL", 70000)  # OffsetOfTheFirstDirectoryRecordOfTheRootDirectoryEntity
    ds.add_new(0x00186020, "SL", -70000)  # ReferencePixelX0
    ds.add_new(0x00280009, "AT", [0x00181063, 0x00181065])  # FrameIncrementPointer
    ds.add_new(0x00209165, "AT", 0x00200032)  # DimensionIndexPointer
    ds.add_new(0x00080008, "CS", ["ORIGINAL", "PRIMARY"])
    ds.add_new(0x00100010, "PN", "Doe^John^^Dr")
    ds.add_new(0x00324000, "LT", "line one\\still one\r\nline two")  # LT: a backslash is text
    ds.add_new(0x00080020, "DA", "20240229")
    return ds


@pytest.mark.parametrize("syntax", ["explicit-le", "implicit-le", "explicit-be"])
def test_values(tmp_path: Path, syntax: str) -> None:
    ds = values_dataset()
    record = read_file(save(ds, tmp_path / "values.dcm", SYNTAXES[syntax]))
    assert_matches_built(record, ds)
    found = {r.tag: r for r in body(record)}

    def check(tag: int, vr: str, vm: int, value: str, number: float | None) -> None:
        r = found[tag]
        assert (r.vr, r.vm, r.value, r.number) == (vr, vm, value, number), hex(tag)
        assert not r.flags & (BINARY | CUT)

    check(0x00280030, "DS", 3, "1.5\\-2\\3e2", None)
    check(0x00181050, "DS", 1, "2.50", 2.5)
    check(0x00200013, "IS", 1, "42", 42.0)
    check(0x00280010, "US", 1, "512", 512.0)
    check(0x00181310, "US", 4, "0\\256\\256\\0", None)
    check(0x00280106, "SS", 1, "-5", -5.0)
    check(0x00181060, "DS", 0, "", None)
    check(0x00700262, "FL", 1, "0.5", 0.5)
    check(0x0018602C, "FD", 2, "1.25\\-0.5", None)
    check(0x00081163, "FD", 1, "1e+300", 1e300)
    check(0x00041200, "UL", 1, "70000", 70000.0)
    check(0x00186020, "SL", 1, "-70000", -70000.0)
    check(0x00189219, "SS", 0, "", None)
    check(0x00280009, "AT", 2, "(0018,1063)\\(0018,1065)", None)
    check(0x00209165, "AT", 1, "(0020,0032)", None)
    check(0x00080008, "CS", 2, "ORIGINAL\\PRIMARY", None)
    check(0x00100010, "PN", 1, "Doe^John^^Dr", None)
    check(0x00324000, "LT", 1, "line one\\still one\r\nline two", None)
    check(0x00080020, "DA", 1, "20240229", None)
    assert found[0x00280010].keyword == "Rows" and found[0x00280010].name == "Rows"
    assert found[0x00280010].length == 2 and found[0x00181310].length == 8


def test_empty_numbers(tmp_path: Path) -> None:
    ds = new_dataset()
    ds.add_new(0x00280106, "US", [])
    ds.add_new(0x00280009, "AT", [])
    record = read_file(save(ds, tmp_path / "empty.dcm"))
    found = {r.tag: r for r in body(record)}
    for tag in (0x00280106, 0x00280009):
        assert (found[tag].length, found[tag].vm, found[tag].value, found[tag].number) == (
            0,
            0,
            "",
            None,
        )


def test_long_values_are_cut(tmp_path: Path) -> None:
    ds = new_dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    text = "".join(chr(0x41 + i % 26) for i in range(3000))
    ds.add_new(0x00324000, "LT", text)  # 3000 bytes
    accented = "é" * 2500  # 5000 UTF-8 bytes: more than the bytes the walker decodes
    ds.add_new(0x00204000, "LT", accented)
    contour = [f"{i}.5" for i in range(1000)]
    ds.add_new(0x30060050, "DS", contour)  # ContourData: 1000 values, 5890 bytes
    ds.add_new(0x00281201, "OW", b"\0" * 4000)  # binary: length only, never cut
    ds.add_new(0x00181310, "US", list(range(2000)))  # AcquisitionMatrix with 2000 values
    ds.add_new(0x00209165, "AT", [0x00200032] * 300)
    record = read_file(save(ds, tmp_path / "long.dcm"))
    found = {r.tag: r for r in body(record)}

    lt = found[0x00324000]
    assert (
        lt.value == text[:DEFAULT_VALUE_LIMIT]
        and lt.length == 3000
        and lt.flags & CUT
        and lt.vm == 1
    )
    utf = found[0x00204000]
    assert utf.value == accented[:DEFAULT_VALUE_LIMIT] and utf.length == 5000 and utf.flags & CUT
    ds_values = found[0x30060050]
    joined = "\\".join(contour)
    assert ds_values.length == len(joined) + len(joined) % 2 and ds_values.flags & CUT  # padded
    assert ds_values.value == joined[:DEFAULT_VALUE_LIMIT]
    assert ds_values.vm == 1000 and ds_values.number is None
    us = found[0x00181310]
    assert us.vm == 2000 and us.length == 4000 and us.flags & CUT
    assert us.value == "\\".join(map(str, range(2000)))[:DEFAULT_VALUE_LIMIT]
    at = found[0x00209165]
    assert (
        at.vm == 300
        and at.flags & CUT
        and at.value == "\\".join(["(0020,0032)"] * 300)[:DEFAULT_VALUE_LIMIT]
    )
    ow = found[0x00281201]
    assert ow.flags & BINARY and not ow.flags & CUT and ow.value is None and ow.length == 4000

    short = read_file(tmp_path / "long.dcm", value_limit=16)
    cut = {r.tag: r for r in body(short)}
    assert cut[0x00324000].value == text[:16] and cut[0x00324000].flags & CUT
    assert cut[0x30060050].vm == 1000
    uid = next(r for r in body(short) if r.tag == 0x00080018)
    assert uid.value == "1.2.826.0.1.3680043.8.498.1"[:16] and uid.flags & CUT and uid.length == 28


def test_value_exactly_at_the_limit_is_not_cut(tmp_path: Path) -> None:
    ds = new_dataset()
    ds.add_new(0x00324000, "LT", "x" * DEFAULT_VALUE_LIMIT)
    record = read_file(save(ds, tmp_path / "limit.dcm"))
    lt = next(r for r in body(record) if r.tag == 0x00324000)
    assert lt.value == "x" * DEFAULT_VALUE_LIMIT and not lt.flags & CUT


def test_specific_character_set_inside_an_item(tmp_path: Path) -> None:
    ds = new_dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = "Müller^Jürgen"
    utf8_item = Dataset()
    utf8_item.SpecificCharacterSet = "ISO_IR 192"
    utf8_item.PatientName = "王^小東"
    inherited_item = Dataset()
    inherited_item.PatientName = "Åse^Öberg"
    ds.OtherPatientIDsSequence = Sequence([utf8_item, inherited_item])
    ds.PatientID = "ÄÖÜ"  # after the sequence: Latin-1 again
    path = save(ds, tmp_path / "charsets.dcm")
    raw = path.read_bytes()
    assert "王^小東".encode() in raw and "Müller".encode("latin-1") in raw  # as built
    record = read_file(path)
    assert_matches_built(record, ds)
    found = by_path(record)
    assert found["(0010,0010)"].value == "Müller^Jürgen"
    assert found["(0010,1002)[0].(0010,0010)"].value == "王^小東"
    assert found["(0010,1002)[1].(0010,0010)"].value == "Åse^Öberg"
    assert found["(0010,0020)"].value == "ÄÖÜ"


def test_iso_2022_japanese_person_name(tmp_path: Path) -> None:
    ds = new_dataset()
    ds.add_new(0x00080005, "CS", ["", "ISO 2022 IR 87"])
    name = "Yamada^Tarou=山田^太郎=やまだ^たろう"
    # PS3.5 H.3.1: each component group switches to JIS X 0208 and back.
    encoded = b"=".join(part.encode("iso2022_jp") for part in name.split("="))
    ds.add_new(0x00100010, "PN", encoded)
    record = read_file(save(ds, tmp_path / "jis.dcm"))
    assert next(r for r in body(record) if r.tag == 0x00100010).value == name


def test_undecodable_bytes_do_not_fail_the_file(tmp_path: Path) -> None:
    ds = new_dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.add_new(0x00100010, "PN", b"Bad\xff\xfe^Name")
    record = read_file(save(ds, tmp_path / "bad_utf8.dcm"))
    assert next(r for r in body(record) if r.tag == 0x00100010).value == "Bad\ufffd\ufffd^Name"
    assert record.problem is None


def test_misspelt_character_set_is_a_warning(tmp_path: Path) -> None:
    ds = new_dataset()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the misspelling when writing
        ds.SpecificCharacterSet = "ISO-IR 100"
        ds.PatientName = "Müller".encode("latin-1")
        path = save(ds, tmp_path / "misspelt.dcm")
    record = read_file(path)
    assert next(r for r in body(record) if r.tag == 0x00100010).value == "Müller"
    assert any("ISO-IR 100" in w for w in record.warnings)


# -- VR questions: invalid VR, UN, ambiguous dictionary VRs -------------------------------------------


def test_invalid_vr_bytes_read_like_dcmtk(tmp_path: Path) -> None:
    data = (
        explicit_le(0x00080060, b"CS", b"OT")
        + explicit_le(0x00280103, b"US", struct.pack("<H", 1))
        + explicit_le(0x00280120, b"  ", struct.pack("<h", -2))  # Pixel Padding Value, VR "  "
        + explicit_le(0x00280301, b"CS", b"NO")
    )
    path = tmp_path / "badvr.dcm"
    path.write_bytes(meta_header(ExplicitVRLittleEndian) + data)
    record = read_file(path)
    found = {r.tag: r for r in body(record)}
    padding = found[0x00280120]
    # 2-byte length assumed; "US or SS" decided by Pixel Representation 1: signed.
    assert (padding.vr, padding.value, padding.length) == ("SS", "-2", 2)
    assert padding.flags & VR_FROM_DICTIONARY
    assert found[0x00280301].value == "NO" and record.element_count == 4
    assert any("invalid VR" in w for w in record.warnings)


def test_known_sequence_stored_as_un(tmp_path: Path) -> None:
    item = implicit_le(0x00081150, b"1.2.3\0") + implicit_le(0x00081155, b"1.2.3.4\0")
    sequence_value = item_le(item)
    data = (
        explicit_le(0x00080060, b"CS", b"OT")
        + explicit_le(0x00081140, b"UN", sequence_value)  # ReferencedImageSequence as UN
        + explicit_le(0x00091001, b"UN", b"\1\2\3\4")  # unknown private, UN: stays binary
        + explicit_le(0x00100010, b"PN", b"A^B ")
    )
    path = tmp_path / "un.dcm"
    path.write_bytes(meta_header(ExplicitVRLittleEndian) + data)
    record = read_file(path)
    found = by_path(record)
    sequence = found["(0008,1140)"]
    assert sequence.vr == "SQ" and sequence.flags & VR_FROM_DICTIONARY
    assert found["(0008,1140)[0].(0008,1155)"].value == "1.2.3.4"
    assert found["(0009,1001)"].vr == "UN" and found["(0009,1001)"].flags & BINARY
    assert found["(0010,0010)"].value == "A^B"
    assert (record.element_count, record.max_depth) == (6, 1)


@pytest.mark.parametrize("big_endian", [False, True], ids=["little", "big"])
def test_undefined_length_un_is_a_sequence_of_implicit_items(
    tmp_path: Path, big_endian: bool
) -> None:
    """CP-246: an UN of undefined length is a sequence whose items are implicit VR little endian,
    whatever the transfer syntax (fo-dicom GH177 in big endian)."""
    element = explicit_be if big_endian else explicit_le
    inner = implicit_le(0x00100010, b"In^Side ") + implicit_le(0x00100020, b"ID01")
    un_value = item_le(inner, undefined=True) + item_le(b"") + SEQUENCE_END_LE
    data = (
        element(0x00090010, b"LO", b"ACME")
        + element(0x00091001, b"UN", un_value, length=UNDEFINED)
        + element(0x00100020, b"LO", b"AFTER ")
    )
    syntax = ExplicitVRBigEndian if big_endian else ExplicitVRLittleEndian
    path = tmp_path / "un_sequence.dcm"
    path.write_bytes(meta_header(syntax) + data)
    record = read_file(path)
    assert record.problem is None
    assert [(r.path, r.depth) for r in body(record)] == [
        ("(0009,0010)", 0),
        ("(0009,1001)", 0),
        ("(0009,1001)[0]", 1),
        ("(0009,1001)[0].(0010,0010)", 1),
        ("(0009,1001)[0].(0010,0020)", 1),
        ("(0009,1001)[1]", 1),
        ("(0010,0020)", 0),
    ]
    found = by_path(record)
    assert found["(0009,1001)"].vr == "SQ" and found["(0009,1001)"].private_creator == "ACME"
    assert found["(0009,1001)[0].(0010,0010)"].value == "In^Side"
    assert found["(0009,1001)[0].(0010,0010)"].vr == "PN"
    assert found["(0010,0020)"].value == "AFTER"
    assert (record.element_count, record.max_depth) == (5, 1)


@pytest.mark.parametrize("pixel_representation,vr,value", [(0, "US", "65531"), (1, "SS", "-5")])
def test_implicit_vr_us_or_ss_follows_pixel_representation(
    tmp_path: Path, pixel_representation: int, vr: str, value: str
) -> None:
    ds = new_dataset()
    ds.PixelRepresentation = pixel_representation
    ds.add_new(0x00280106, "SS", -5)  # SmallestImagePixelValue: "US or SS" in the dictionary
    ds.add_new(0x00280107, "SS", -5)
    record = read_file(save(ds, tmp_path / "us_or_ss.dcm", ImplicitVRLittleEndian))
    found = {r.tag: r for r in body(record)}
    assert (found[0x00280106].vr, found[0x00280106].value) == (vr, value)
    assert (found[0x00280107].vr, found[0x00280107].value) == (vr, value)


# -- Pixel Data: native, encapsulated, and what follows it -------------------------------------------


def pixel_dataset(pixel_data: bytes, *, after: bool = True) -> Dataset:
    ds = new_dataset()
    ds.Rows, ds.Columns, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 10, 10, 8, 8, 7
    ds.SamplesPerPixel, ds.PixelRepresentation = 1, 0
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = pixel_data
    ds["PixelData"].VR = "OB"
    if after:
        ds.private_block(0x7FE1, "ACME AFTER PIXELS", create=True).add_new(0x01, "LO", "after")
        signature = Dataset()
        signature.MACIDNumber = 1
        ds.DigitalSignaturesSequence = Sequence([signature])  # (FFFA,FFFA)
        ds.DataSetTrailingPadding = b"\0" * 6  # (FFFC,FFFC)
    return ds


AFTER_PIXELS = [
    "(7FE1,0010)",
    "(7FE1,1001)",
    "(FFFA,FFFA)",
    "(FFFA,FFFA)[0]",
    "(FFFA,FFFA)[0].(0400,0005)",
    "(FFFC,FFFC)",
]


@pytest.mark.parametrize("syntax", ["explicit-le", "implicit-le", "explicit-be", "deflated"])
def test_native_pixel_data_and_elements_after_it(tmp_path: Path, syntax: str) -> None:
    pixels = bytes(range(100))
    ds = pixel_dataset(pixels)
    record = read_file(save(ds, tmp_path / "native.dcm", SYNTAXES[syntax]))
    assert_matches_built(record, ds)
    paths = [r.path for r in body(record)]
    assert paths[paths.index("(7FE0,0010)") + 1 :] == AFTER_PIXELS
    pixel = by_path(record)["(7FE0,0010)"]
    assert pixel.length == 100 and pixel.value is None and pixel.flags & BINARY
    assert not pixel.flags & ENCAPSULATED and pixel.fragments is None
    # Implicit VR: the dictionary's "OB or OW" is OW for native Pixel Data (PS3.5 A.1).
    assert pixel.vr == ("OW" if syntax == "implicit-le" else "OB")
    after = by_path(record)["(7FE1,1001)"]
    if syntax == "implicit-le":
        assert after.vr == "UN" and after.value is None  # unknown private creator: no VR known
    else:
        assert after.value == "after"
    assert record.fragment_sequences == record.fragments == 0


@pytest.mark.parametrize(
    "has_bot", [True, False], ids=["with-offset-table", "without-offset-table"]
)
@pytest.mark.parametrize("per_frame", [1, 3])
def test_encapsulated_pixel_data(tmp_path: Path, has_bot: bool, per_frame: int) -> None:
    frames = [b"\1" * 100, b"\2" * 301, b"\3" * 64]  # 301: padded to an even fragment
    encapsulated = encapsulate(frames, fragments_per_frame=per_frame, has_bot=has_bot)
    ds = pixel_dataset(encapsulated)
    ds.NumberOfFrames = 3
    record = read_file(save(ds, tmp_path / "encapsulated.dcm", RLELossless))
    assert_matches_built(record, ds)
    stream = io.BytesIO(encapsulated)
    offsets = parse_basic_offsets(stream)
    sizes = [len(f) for f in generate_fragments(stream)]
    pixel = by_path(record)["(7FE0,0010)"]
    assert pixel.flags & ENCAPSULATED and pixel.flags & BINARY and pixel.flags & UNDEFINED_LENGTH
    assert (pixel.vr, pixel.vm, pixel.length, pixel.value) == ("OB", 1, UNDEFINED, None)
    assert list(pixel.fragments or ()) == sizes
    assert list(pixel.offset_table or ()) == offsets
    assert len(sizes) == 3 * per_frame and sum(sizes) >= 465
    if per_frame == 1:
        assert sizes == [100, 302, 64]  # as built, odd length padded
        assert offsets == ([0, 108, 418] if has_bot else [])
    assert (record.fragment_sequences, record.fragments) == (1, 3 * per_frame)
    paths = [r.path for r in body(record)]
    assert paths[paths.index("(7FE0,0010)") + 1 :] == AFTER_PIXELS


def test_encapsulated_pixel_data_in_implicit_vr_is_ob(tmp_path: Path) -> None:
    # Not conformant (encapsulation needs explicit VR) but written by some devices.
    data = (
        implicit_le(0x00080060, b"OT")
        + implicit_le(0x7FE00010, item_le(b"") + item_le(b"\xff\xd8\xff\xd9"), length=UNDEFINED)
        + SEQUENCE_END_LE
    )
    path = tmp_path / "implicit_encapsulated.dcm"
    path.write_bytes(meta_header(ImplicitVRLittleEndian) + data)
    record = read_file(path)
    pixel = by_path(record)["(7FE0,0010)"]
    assert pixel.vr == "OB" and pixel.fragments == (4,) and pixel.offset_table == ()
    assert record.problem is None


def test_encapsulated_pixel_data_inside_an_item(tmp_path: Path) -> None:
    icon = pixel_dataset(encapsulate([b"\7" * 20, b"\x08" * 30]), after=False)
    ds = new_dataset()
    ds.IconImageSequence = Sequence([icon])
    ds["IconImageSequence"].value[0]["PixelData"].is_undefined_length = True
    ds.PixelData = encapsulate([b"\1" * 10])
    ds["PixelData"].VR = "OB"
    record = read_file(save(ds, tmp_path / "icon.dcm", RLELossless))
    found = by_path(record)
    assert found["(0088,0200)[0].(7FE0,0010)"].fragments == (20, 30)
    assert found["(0088,0200)[0].(7FE0,0010)"].depth == 1
    assert found["(7FE0,0010)"].fragments == (10,)
    assert (record.fragment_sequences, record.fragments) == (2, 3)


# -- files without preamble or meta header -----------------------------------------------------------


@pytest.mark.parametrize(
    "implicit,little",
    [(True, True), (False, True), (False, False)],
    ids=["implicit-le", "explicit-le", "explicit-be"],
)
def test_data_set_without_preamble_or_meta(tmp_path: Path, implicit: bool, little: bool) -> None:
    ds = nested_dataset(undefined=False)
    ds.Modality = "OT"
    path = tmp_path / "bare.dcm"
    path.write_bytes(data_set_bytes(ds, implicit=implicit, little=little))
    record = read_file(path)
    assert not record.preamble and not record.has_meta and record.transfer_syntax is None
    assert (record.explicit_vr, record.little_endian) == (not implicit, little)
    assert_matches_built(record, ds)
    assert not any(r.flags & META for r in record.elements)
    assert by_path(record)["(0008,0060)"].value == "OT"


def test_dicm_without_preamble(tmp_path: Path) -> None:
    ds = new_dataset()
    ds.Modality = "OT"
    full = save(ds, tmp_path / "full.dcm").read_bytes()
    path = tmp_path / "dicm.dcm"
    path.write_bytes(full[128:])  # "DICM" at byte 0, then the meta group
    record = read_file(path)
    assert not record.preamble and record.has_meta
    assert record.transfer_syntax == ExplicitVRLittleEndian
    assert_matches_built(record, ds)


def test_bare_data_set_starting_with_a_command_group(tmp_path: Path) -> None:
    command = Dataset()
    command.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    command.CommandField = 0x0001  # C-STORE-RQ
    command.MessageID = 7
    command.Priority = 0
    command.CommandDataSetType = 0x0000
    command.AffectedSOPInstanceUID = "1.2.3.4"
    group = data_set_bytes(command, implicit=True)
    ds = new_dataset()
    ds.Modality = "OT"
    data = (
        implicit_le(0x00000000, struct.pack("<I", len(group)))
        + group
        + data_set_bytes(ds, implicit=True)
    )
    path = tmp_path / "command.dcm"
    path.write_bytes(data)
    record = read_file(path)
    assert not record.has_meta and not record.explicit_vr and record.problem is None
    # Group 0000 is counted like any other group, its group length included.
    assert record.element_count == 1 + len(command) + len(ds)
    found = {r.tag: r for r in body(record)}
    assert found[0x00000000].value == str(len(group))
    assert found[0x00000100].value == "1" and found[0x00000100].keyword == "CommandField"
    assert found[0x00080060].value == "OT"


def test_stray_group_0002_in_the_data_set(tmp_path: Path) -> None:
    ds = new_dataset()
    item = Dataset()
    item.add_new(0x00020013, "SH", "IN ITEM")  # inside an item: an ordinary element
    ds.ReferencedStudySequence = Sequence([item])
    full = save(ds, tmp_path / "full.dcm").read_bytes()
    path = tmp_path / "stray.dcm"
    path.write_bytes(full + explicit_le(0x00020016, b"AE", b"STRAYAE "))
    record = read_file(path)
    stray = record.elements[-1]
    assert stray.tag == 0x00020016 and stray.depth == 0 and stray.flags & META
    assert stray.value == "STRAYAE"
    nested = by_path(record)["(0008,1110)[0].(0002,0013)"]
    assert not nested.flags & META
    assert record.element_count == 4  # SOP Class, SOP Instance, the sequence, its element


# -- truncated and damaged files -----------------------------------------------------------------------


def truncation_dataset() -> Dataset:
    ds = new_dataset()
    ds.PatientName = "Doe^Jane"
    ds.add_new(0x00324000, "LT", "MIDVALUE" + "v" * 200)  # StudyComments
    item = Dataset()
    item.add_new(0x00081150, "UI", "1.2.840.10008.5.1.4.1.1.7")
    item.add_new(0x00081155, "UI", "1.2.3.4.5.6.7.8.9.10.11.12.13.14.15.16.17.18.19")
    ds.ReferencedImageSequence = Sequence([item, item])
    ds.Rows, ds.Columns, ds.BitsAllocated = 4, 4, 8
    ds.PixelData = encapsulate([b"FRAGMENT" * 20, b"SECONDFR" * 20])
    ds["PixelData"].VR = "OB"
    ds.private_block(0x7FE1, "ACME", create=True).add_new(0x01, "LT", "LASTVALUE" + "w" * 40)
    return ds


def read_or_error(path: Path) -> FileRecord | DicomReadError:
    try:
        return read_file(path)
    except DicomReadError as err:  # any other exception fails the test
        return err


@pytest.mark.parametrize(
    "where,marker,shift",
    [
        ("meta group", b"DICM", 30),
        ("element value", b"MIDVALUE", 50),
        ("sequence", b"1.2.3.4.5.6.7", 5),
        ("fragment", b"SECONDFR", 24),
        ("last element", b"LASTVALUE", 3),
    ],
)
def test_truncated_file(tmp_path: Path, where: str, marker: bytes, shift: int) -> None:
    full = save(truncation_dataset(), tmp_path / "full.dcm", RLELossless).read_bytes()
    cut = full.index(marker) + shift
    path = tmp_path / "cut.dcm"
    path.write_bytes(full[:cut])
    result = read_or_error(path)
    if isinstance(result, DicomReadError):
        assert where == "meta group" and str(path) in str(result)
        return
    assert result.problem is not None and result.problem_offset is not None
    if where == "meta group":  # cut between two meta elements
        assert result.element_count == 0
        return
    assert f"byte {result.problem_offset}" in result.problem
    assert result.problem_offset < cut
    assert all(r.offset < cut for r in result.elements)
    complete = read_file(tmp_path / "full.dcm")
    # Everything that starts before the damaged element is kept, and the damaged element
    # itself when its header is whole (flagged CUT).
    kept = [r.path for r in result.elements]
    assert kept == [r.path for r in complete.elements][: len(kept)]
    assert all(r.flags & CUT for r in result.elements if r.offset == result.problem_offset)
    if where == "last element":
        assert kept == [r.path for r in complete.elements]
        assert result.elements[-1].flags & CUT
        assert result.element_count == complete.element_count  # the cut last element included
    if where == "fragment":
        assert "fragment" in result.problem and result.fragments == 1


def test_truncated_at_every_offset(tmp_path: Path) -> None:
    """No cut makes the walker raise anything but DicomReadError, or read silently past damage."""
    ds = truncation_dataset()
    ds.PixelData = encapsulate([b"\1" * 8, b"\2" * 8])
    full = save(ds, tmp_path / "full.dcm", RLELossless).read_bytes()
    complete = read_file(tmp_path / "full.dcm")
    assert complete.fragments == 2
    # A cut exactly between two top-level elements leaves a shorter but valid data set.
    first_data = next(r.offset for r in complete.elements if not r.flags & META)
    boundaries = {r.offset for r in complete.elements if r.depth == 0 and r.offset > first_data}
    path = tmp_path / "cut.dcm"
    for cut in range(len(full)):
        path.write_bytes(full[:cut])
        result = read_or_error(path)
        if isinstance(result, DicomReadError):
            # Only a damaged preamble or meta header is fatal (a partial element header right
            # after the meta group cannot be told from a partial meta element).
            assert cut < first_data + 8, cut
            continue
        if result.problem is None:
            assert cut in boundaries, cut
        else:
            assert result.problem_offset is not None and result.problem_offset <= cut


def test_value_length_past_the_end_of_the_file(tmp_path: Path) -> None:
    ds = new_dataset()
    ds.add_new(0x00324000, "UT", "comment")
    ds.Modality = "OT"
    full = bytearray(save(ds, tmp_path / "full.dcm").read_bytes())
    at = full.index(b"\x32\x00\x00\x40UT")
    full[at + 8 : at + 12] = struct.pack("<I", 0x7FFFFFF0)
    path = tmp_path / "long_length.dcm"
    path.write_bytes(bytes(full))
    record = read_file(path)
    assert record.problem == (
        f"(0032,4000) at byte {at} declares {0x7FFFFFF0} bytes "
        f"but the file ends at byte {len(full)}"
    )
    assert record.problem_offset == at
    # The element whose length points past the end is recorded (cut, length as stored, the
    # value as far as the file goes); the walk stops there.
    assert [r.tag for r in body(record)] == [0x00080016, 0x00080018, 0x00080060, 0x00324000]
    cut = body(record)[-1]
    assert cut.flags & CUT and cut.length == 0x7FFFFFF0
    assert (cut.value, cut.vm, cut.number, cut.flags & BINARY) == ("comment", 1, None, 0)


def test_element_running_past_its_item(tmp_path: Path) -> None:
    item = explicit_le(0x00081150, b"UI", b"1.2\0") + explicit_le(
        0x00081155, b"UI", b"1.2.3.4\0", length=40
    )
    data = explicit_le(0x00081140, b"SQ", item_le(item)) + explicit_le(
        0x00100010, b"PN", b"A^B " * 10
    )
    path = tmp_path / "overrun.dcm"
    path.write_bytes(meta_header(ExplicitVRLittleEndian) + data)
    record = read_file(path)
    assert record.problem is not None and "past the end of its item" in record.problem


def test_undefined_length_item_ends_with_its_sequence(tmp_path: Path) -> None:
    # An item of undefined length whose delimiter is missing must not swallow the elements
    # that follow its sequence (fo-dicom GH626 read 13 000 junk elements that way).
    item = struct.pack("<HHI", 0xFFFE, 0xE000, UNDEFINED) + explicit_le(0x00081150, b"UI", b"1.2\0")
    data = (
        explicit_le(0x00081140, b"SQ", item)
        + explicit_le(0x00100010, b"PN", b"A^B ")
        + struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
    )
    path = tmp_path / "no_item_end.dcm"
    path.write_bytes(meta_header(ExplicitVRLittleEndian) + data)
    record = read_file(path)
    assert record.problem is not None and "Item Delimitation" in record.problem
    assert not any(r.tag == 0x00100010 for r in record.elements)


def test_undefined_sequence_running_past_its_item(tmp_path: Path) -> None:
    inner_sequence = explicit_le(0x00081199, b"SQ", b"", length=UNDEFINED) + item_le(b"")
    # The outer item's declared length ends inside the inner sequence; its delimiter is after.
    outer_item = struct.pack("<HHI", 0xFFFE, 0xE000, len(inner_sequence)) + inner_sequence
    data = explicit_le(
        0x00081140, b"SQ", outer_item + SEQUENCE_END_LE, length=len(outer_item) + 8
    ) + explicit_le(0x00100010, b"PN", b"A^B ")
    path = tmp_path / "inner_overrun.dcm"
    path.write_bytes(meta_header(ExplicitVRLittleEndian) + data)
    record = read_file(path)
    assert record.problem is not None and "past the end of its item" in record.problem


def test_item_tag_where_an_element_belongs(tmp_path: Path) -> None:
    data = (
        explicit_le(0x00080060, b"CS", b"OT")
        + item_le(b"")
        + explicit_le(0x00100010, b"PN", b"A^B ")
    )
    path = tmp_path / "stray_item.dcm"
    path.write_bytes(meta_header(ExplicitVRLittleEndian) + data)
    record = read_file(path)
    assert record.problem is not None and "(FFFE,E000)" in record.problem
    assert [r.tag for r in body(record)] == [0x00080060]


@pytest.mark.parametrize(
    "tail,problem",
    [(b"\0\0\0", False), (b"\x08\x00\x20", True)],
    ids=["zero-padding", "cut-header"],
)
def test_bytes_after_the_last_element(tmp_path: Path, tail: bytes, problem: bool) -> None:
    ds = new_dataset()
    full = save(ds, tmp_path / "full.dcm").read_bytes()
    path = tmp_path / "tail.dcm"
    path.write_bytes(full + tail)
    record = read_file(path)
    assert record.element_count == 2
    if problem:
        assert record.problem == f"file ends inside an element header at byte {len(full)}"
    else:
        assert record.problem is None
        assert record.warnings == ["trailing padding: 3 zero bytes after the last element, ignored"]


def test_meta_header_without_data_set(tmp_path: Path) -> None:
    path = tmp_path / "meta_only.dcm"
    path.write_bytes(meta_header(ExplicitVRLittleEndian))
    record = read_file(path)
    assert record.has_meta and record.element_count == 0
    assert record.problem is not None and "no data set" in record.problem


def test_deflated_stream_that_does_not_inflate(tmp_path: Path) -> None:
    path = tmp_path / "bad_deflate.dcm"
    path.write_bytes(meta_header(DeflatedExplicitVRLittleEndian) + b"\xff" * 64)
    with pytest.raises(DicomReadError) as caught:
        read_file(path)
    assert caught.value.reason == "invalid" and str(path) in str(caught.value)


# -- not DICOM ----------------------------------------------------------------------------------------


def _dicom_bytes(tmp_path: Path) -> bytes:
    return save(new_dataset(), tmp_path / "any.dcm").read_bytes()


NOT_DICOM: dict[str, Callable[[Path], bytes]] = {
    "empty": lambda tmp: b"",
    "text": lambda tmp: b"patient list\nDoe^John,12345\n" * 20,
    "random": lambda tmp: random.Random(20240229).randbytes(4096),
    "zeros": lambda tmp: b"\0" * 4096,
    "short-zeros": lambda tmp: b"\0" * 100,
    "jpeg": lambda tmp: b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\0" * 500,
    "png": lambda tmp: b"\x89PNG\r\n\x1a\n" + b"\0" * 500,
    "gzip": lambda tmp: gzip.compress(_dicom_bytes(tmp)),
    "one-stray-byte": lambda tmp: b"\x01" + _dicom_bytes(tmp)[132:],
    "truncated-preamble": lambda tmp: _dicom_bytes(tmp)[:100],
}


@pytest.mark.parametrize("kind", list(NOT_DICOM))
def test_not_dicom(tmp_path: Path, kind: str) -> None:
    path = tmp_path / f"{kind}.dcm"
    path.write_bytes(NOT_DICOM[kind](tmp_path))
    with pytest.raises(NotDicomError) as caught:
        read_file(path)
    err = caught.value
    assert isinstance(err, DicomReadError)
    assert err.path == str(path) and str(path) in str(err)
    assert err.reason == ("empty" if kind == "empty" else "not_dicom")
    assert "\n" not in str(err)


def test_unreadable_paths(tmp_path: Path) -> None:
    with pytest.raises(DicomReadError) as caught:
        read_file(tmp_path)
    assert caught.value.reason == "unreadable" and not isinstance(caught.value, NotDicomError)
    with pytest.raises(DicomReadError) as caught:
        read_file(tmp_path / "missing.dcm")
    assert caught.value.reason == "unreadable"
