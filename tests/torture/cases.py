"""The bad-input cases: what each file is, and what the user must get for it.

Each case is built from scratch (build.py) or cut from a real corpus file. What a
case expects comes from how it was made: a truncation's element count is pydicom's
count of the file cut at the start of the element that was cut (pydicom reads that
prefix as a complete file), fragment counts come from our own walk of the item
headers, nesting depths and element counts of built files from their construction.
"""

from __future__ import annotations

import os
import random
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filereader import data_element_generator
from pydicom.uid import ExplicitVRLittleEndian

from .build import (
    IDENTITY_ELEMENTS,
    IMPLICIT_LE,
    ITEM_END,
    SEQUENCE_END,
    UNDEFINED,
    dicom_file,
    el,
    encapsulated_pixel_data,
    identity,
    implicit_el,
    item,
    meta,
    open_item,
    open_sq,
    uid_for,
)

NOT_READ = frozenset({"not_dicom", "error"})  # statuses of files that could not be read at all


@dataclass(frozen=True)
class Case:
    """One bad file and what the index must say about it.

    status: allowed files.status values. reasons: allowed errors.reason values of the
    file's error row (severity error); None means the file must have no such row.
    count/depth/fragments: exact element_count, max_depth, fragments when not None.
    """

    name: str  # file name below bad/
    data: bytes | Callable[[Path], None]
    status: frozenset[str]
    reasons: frozenset[str] | None
    count: int | None = None
    depth: int | None = None
    fragments: int | None = None
    what: str = ""
    count_between: tuple[int, int] | None = (
        None  # inclusive bounds when the exact count is not fixed
    )

    def write(self, folder: Path) -> Path:
        path = folder / self.name
        if callable(self.data):
            self.data(path)
        else:
            path.write_bytes(self.data)
        return path


def _s(*values: str) -> frozenset[str]:
    return frozenset(values)


# -- truncations of a real file ---------------------------------------------------------------

TRUNCATED_SOURCE = (
    "highdicom/sm_image_jpegls.dcm"  # preamble, meta, nested SQs, 25 JPEG-LS fragments
)


@dataclass
class Layout:
    """Where things are in an explicit VR little endian file with a meta header (pydicom's reading)."""

    data: bytes
    meta_end: int
    elements: list[tuple[int, int, int, str]] = field(default_factory=list)  # start, end, tag, VR
    fragments: list[tuple[int, int]] = field(
        default_factory=list
    )  # start, end of each fragment item (BOT excluded)


def layout(data: bytes) -> Layout:
    meta_end = 144 + struct.unpack_from("<I", data, 140)[0]
    out = Layout(data, meta_end)
    fp = BytesIO(data)
    fp.seek(meta_end)
    start = meta_end
    for elem in data_element_generator(fp, False, True):
        end = fp.tell()
        out.elements.append((start, end, int(elem.tag), str(elem.VR)))
        start = end
    pixel = next(e for e in out.elements if e[2] == 0x7FE00010)
    pos = pixel[0] + 12
    first = True
    while pos + 8 <= pixel[1]:
        group, element, length = struct.unpack_from("<HHI", data, pos)
        if (group, element) != (0xFFFE, 0xE000):
            break
        if not first:
            out.fragments.append((pos, pos + 8 + length))
        first = False
        pos += 8 + length
    return out


def pydicom_count(data: bytes) -> int:
    """element_count of a complete file by pydicom (MANIFEST rules: items and top-level 0002 not counted)."""
    ds = pydicom.dcmread(BytesIO(data), force=True)

    def walk(dataset: Dataset, depth: int) -> int:
        n = 0
        for elem in dataset:
            if depth == 0 and elem.tag.group == 0x0002:
                continue
            n += 1
            if elem.VR == "SQ":
                n += sum(walk(i, depth + 1) for i in elem.value)
        return n

    return walk(ds, 0)


def truncation_cases(corpus: Path) -> list[Case]:
    data = (corpus / TRUNCATED_SOURCE).read_bytes()
    lay = layout(data)
    cases: list[Case] = []

    def cut(
        name: str,
        at: int,
        status: frozenset[str],
        reasons: frozenset[str] | None,
        what: str,
        **expect: object,
    ) -> None:
        cases.append(
            Case(f"cut_{name}_at_{at}.dcm", data[:at], status, reasons, what=what, **expect)
        )  # type: ignore[arg-type]

    not_dicom = _s("not_dicom")
    for at in (1, 64, 127, 128, 130):
        cut(
            "preamble", at, not_dicom, _s("not_dicom"), "cut inside the preamble or the DICM marker"
        )
    cut(
        "after_dicm",
        132,
        _s("partial", "error"),
        _s("invalid", "truncated"),
        "preamble and DICM, nothing else",
    )
    for at in (140, 150, (132 + lay.meta_end) // 2, lay.meta_end - 1):
        cut("meta", at, _s("error"), _s("invalid"), "cut inside the File Meta Information")
    cut(
        "meta_end",
        lay.meta_end,
        _s("partial", "error"),
        _s("invalid", "truncated"),
        "File Meta Information only, no data set",
    )

    plain = [e for e in lay.elements if e[3] not in ("SQ",) and e[2] != 0x7FE00010]
    sequences = [e for e in lay.elements if e[3] == "SQ" and e[1] - e[0] > 40]
    first = plain[0]
    assert first[0] == lay.meta_end
    cut(
        "first_element_header",
        first[0] + 5,
        _s("partial"),
        _s("truncated"),
        "meta complete, cut in the header of the first data set element",
        count=0,
    )
    chosen = [plain[1], plain[len(plain) // 2], plain[-1]]
    for start, end, tag, vr in chosen:
        before = pydicom_count(data[:start])
        cut(
            "boundary",
            start,
            _s("indexed"),
            None,
            f"cut between elements, before {tag:08X}",
            count=before,
        )
        cut(
            "element_header",
            start + 5,
            _s("partial"),
            _s("truncated"),
            f"cut in the header of {tag:08X} {vr}",
            count=before,
        )
        if end - start > 10:
            # the cut element itself may be kept (flagged by the problem), or not
            cut(
                "element_value",
                (start + 8 + end) // 2,
                _s("partial"),
                _s("truncated"),
                f"cut in the value of {tag:08X} {vr}",
                count_between=(before, before + 1),
            )
    # Cut just after the Series Instance UID: the study and series UIDs are there, the Study ID
    # (0020,0010) and Series Number (0020,0011) that follow them are not. The good copy of this
    # file must still give its study and series rows their full content.
    series_uid = next(e for e in lay.elements if e[2] == 0x0020000E)
    cut(
        "after_series_uid",
        series_uid[1] + 3,
        _s("partial"),
        _s("truncated"),
        "cut after the Series Instance UID, before Study ID and Series Number",
        count=pydicom_count(data[: series_uid[1]]),
    )
    for start, end, tag, _vr in (sequences[0], sequences[-1]):
        before = pydicom_count(data[:start])
        whole = pydicom_count(data[:end])
        for at in (start + 12 + 3, (start + end) // 2, end - 3):
            cut(
                "sequence",
                at,
                _s("partial"),
                _s("truncated"),
                f"cut inside sequence {tag:08X}",
                count_between=(before, whole),
            )
    pixel_start = next(e[0] for e in lay.elements if e[2] == 0x7FE00010)
    before = pydicom_count(data[:pixel_start])
    cut(
        "pixel_header",
        pixel_start + 6,
        _s("partial"),
        _s("truncated"),
        "cut in the Pixel Data header",
        count=before,
        fragments=0,
    )
    for k in (0, len(lay.fragments) // 2, len(lay.fragments) - 1):
        fstart, fend = lay.fragments[k]
        cut(
            "fragment_header",
            fstart + 4,
            _s("partial"),
            _s("truncated"),
            f"cut in the item header of fragment {k}",
            count_between=(before, before + 1),
            fragments=k,
        )
        cut(
            "fragment",
            (fstart + 8 + fend) // 2,
            _s("partial"),
            _s("truncated"),
            f"cut inside fragment {k}",
            count_between=(before, before + 1),
            fragments=k,
        )
    cut(
        "before_sequence_delimiter",
        len(data) - 8,
        _s("partial"),
        _s("truncated"),
        "all fragments, no Sequence Delimitation Item",
        count_between=(before, before + 1),
        fragments=len(lay.fragments),
    )
    cut(
        "last_byte",
        len(data) - 1,
        _s("partial"),
        _s("truncated"),
        "last byte missing",
        count_between=(before, before + 1),
        fragments=len(lay.fragments),
    )
    # The same file with no preamble: 'DICM' first, and then with no meta header at all.
    cases.append(
        Case(
            "no_preamble_real.dcm",
            data[128:],
            _s("indexed"),
            None,
            count=pydicom_count(data),
            what="a real file without its 128-byte preamble",
        )
    )
    return cases


# -- files built byte by byte -----------------------------------------------------------------


def _nest(levels: int, tags: list[int] | None = None) -> bytes:
    """`levels` sequences of undefined length, each with one item, around one LO element."""
    tags = tags or [0x0040A730] * levels
    head = b"".join(open_sq(t) + open_item() for t in tags)
    return head + el(0x00400007, "LO", b"leaf") + (ITEM_END + SEQUENCE_END) * levels


def _private_blocks(name: str, blocks: int, per_block: int) -> bytes:
    """A data set with `blocks` private blocks of `per_block` elements each (pydicom writes it)."""
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = uid_for(name + "/sop")
    ds.Modality = "OT"
    ds.PatientName = "Private^Tags"
    ds.PatientID = name
    ds.StudyInstanceUID = uid_for(name + "/study")
    ds.SeriesInstanceUID = uid_for(name + "/series")
    for b in range(blocks):
        group = 0x0009 + 2 * (b // 16)
        block = ds.private_block(group, f"TORTURE CREATOR {b}", create=True)
        for e in range(per_block):
            block.add_new(e, "LO", f"v{b}.{e}")
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    out = BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


HUGE_FRAMES = 2000
HUGE_ROWS = HUGE_COLUMNS = 512


def _write_huge_multiframe(path: Path) -> None:
    """A 1 GB multi-frame file with native Pixel Data, as a sparse file, and elements after the pixels."""
    name = "huge_multiframe"
    head = dicom_file(
        name,
        el(0x00280002, "US", struct.pack("<H", 1))
        + el(0x00280008, "IS", str(HUGE_FRAMES).encode())
        + el(0x00280010, "US", struct.pack("<H", HUGE_ROWS))
        + el(0x00280011, "US", struct.pack("<H", HUGE_COLUMNS))
        + el(0x00280100, "US", struct.pack("<H", 16)),
    ) + el(0x7FE00010, "OW", b"", length=HUGE_FRAMES * HUGE_ROWS * HUGE_COLUMNS * 2)
    tail = el(0x7FE10010, "LO", b"TORTURE AFTER PIXELS") + el(0x7FE11001, "LO", b"still indexed")
    with open(path, "wb") as fh:
        fh.write(head)
        fh.seek(HUGE_FRAMES * HUGE_ROWS * HUGE_COLUMNS * 2, os.SEEK_CUR)  # a hole: no disk used
        fh.write(tail)


# Bytes that no single-byte or multi-byte charset decodes cleanly: stray high bytes, a
# broken ISO 2022 escape, half of a multi-byte character, an ESC to a repertoire never declared.
UNDECODABLE = b"Bad\xff\xfe\x80^\x1b$B\xff\x1b(B^\xe6\x97^\x1b$)Cx\xc3"
CHARSETS = [
    "",
    "ISO_IR 100",
    "ISO_IR 192",
    "ISO_IR 144",
    "ISO_IR 13",
    "ISO_IR 166",
    "GB18030",
    "GBK",
    "ISO 2022 IR 87",
    "ISO 2022 IR 6\\ISO 2022 IR 87",
    "ISO 2022 IR 149",
    "ISO 2022 IR 58",
    "ISO_IR 6",
    "NOT A CHARSET",
    "ISO-IR 100",
]


def built_cases() -> list[Case]:
    rnd = random.Random(20240611)
    cases: list[Case] = []
    add = cases.append
    n_id = IDENTITY_ELEMENTS

    # Not DICOM at all.
    add(Case("empty.dcm", b"", _s("not_dicom"), _s("empty"), what="empty file"))
    add(
        Case(
            "random.dcm",
            rnd.randbytes(65536),
            _s("not_dicom"),
            _s("not_dicom"),
            what="64 KiB of random bytes",
        )
    )
    add(
        Case(
            "random_small.dcm",
            rnd.randbytes(7),
            _s("not_dicom"),
            _s("not_dicom"),
            what="7 random bytes",
        )
    )
    add(
        Case("zeros.dcm", bytes(4096), _s("not_dicom"), _s("not_dicom"), what="4 KiB of zero bytes")
    )
    add(
        Case(
            "text.dcm",
            b"This is a text file, not DICOM.\n" * 40,
            _s("not_dicom"),
            _s("not_dicom"),
            what="text named .dcm",
        )
    )
    add(
        Case(
            "utf16.dcm",
            "Hello DICOM \u00e9\n".encode("utf-16") * 20,
            _s("not_dicom"),
            _s("not_dicom"),
            what="UTF-16 text named .dcm",
        )
    )
    add(
        Case(
            "DICM_only.dcm",
            b"DICM",
            _s("not_dicom", "partial", "error"),
            _s("not_dicom", "invalid", "truncated"),
            what="just 'DICM'",
        )
    )
    add(
        Case(
            "blob.bin",
            rnd.randbytes(2048),
            _s("not_dicom"),
            None,
            what="random bytes with a non-DICOM name: skipped, the reason in files.problem",
        )
    )
    add(Case("notes.txt", b"not dicom\n", _s("not_dicom"), None, what="a text file: skipped"))

    # Lengths that point past the end of the file.
    add(
        Case(
            "length_past_eof_short.dcm",
            dicom_file("lpe1", el(0x00204000, "LT", b"ten bytes!", length=60000)),
            _s("partial"),
            _s("truncated"),
            count_between=(n_id, n_id + 1),
            what="16-bit length past the end",
        )
    )
    add(
        Case(
            "length_past_eof_long.dcm",
            dicom_file("lpe2", el(0x7FE00010, "OB", b"\x00" * 100, length=1_000_000)),
            _s("partial"),
            _s("truncated"),
            count_between=(n_id, n_id + 1),
            what="32-bit length past the end",
        )
    )
    add(
        Case(
            "item_past_eof.dcm",
            dicom_file(
                "lpe3",
                el(0x00400275, "SQ", b"", length=UNDEFINED)
                + item(el(0x00400007, "LO", b"x"), undefined=False)[:4]
                + struct.pack("<I", 5000)
                + el(0x00400007, "LO", b"x"),
            ),
            _s("partial"),
            _s("truncated"),
            count_between=(n_id + 1, n_id + 2),
            what="item length past the end",
        )
    )
    add(
        Case(
            "sequence_past_eof.dcm",
            dicom_file(
                "lpe4", el(0x00400275, "SQ", b"", length=100_000) + item(el(0x00400007, "LO", b"x"))
            ),
            _s("partial"),
            _s("truncated", "invalid"),
            count_between=(n_id, n_id + 2),
            what="defined-length sequence past the end",
        )
    )

    # Absurd value lengths (4 GB).
    add(
        Case(
            "length_4gb_ob.dcm",
            dicom_file("l4g1", el(0x7FE00010, "OB", b"\x00" * 16, length=0xFFFFFFFE)),
            _s("partial"),
            _s("truncated"),
            count_between=(n_id, n_id + 1),
            what="OB value length 0xFFFFFFFE",
        )
    )
    add(
        Case(
            "length_4gb_ut.dcm",
            dicom_file("l4g2", el(0x00204000, "UT", b"abc", length=0xFFFFFFF0)),
            _s("partial"),
            _s("truncated"),
            count_between=(n_id, n_id + 1),
            what="UT value length 0xFFFFFFF0",
        )
    )
    add(
        Case(
            "length_4gb_item.dcm",
            dicom_file(
                "l4g3",
                open_sq(0x00400275)
                + b"\xfe\xff\x00\xe0"
                + struct.pack("<I", 0xFFFFFFF0)
                + el(0x00400007, "LO", b"x"),
            ),
            _s("partial"),
            _s("truncated"),
            count_between=(n_id + 1, n_id + 2),
            what="item length 0xFFFFFFF0",
        )
    )
    add(
        Case(
            "length_4gb_fragment.dcm",
            dicom_file(
                "l4g4",
                el(0x7FE00010, "OB", b"", length=UNDEFINED)
                + b"\xfe\xff\x00\xe0\x00\x00\x00\x00"
                + b"\xfe\xff\x00\xe0"
                + struct.pack("<I", 0xFFFFFFF0)
                + b"\xff\xd8",
            ),
            _s("partial"),
            _s("truncated"),
            count=n_id + 1,
            fragments=0,
            what="fragment length 0xFFFFFFF0",
        )
    )
    meta_4gb = bytearray(meta(uid_for("l4g5/sop")))
    struct.pack_into("<I", meta_4gb, 132 + 12 + 8, 0xFFFFFFF0)  # (0002,0001) OB length
    add(
        Case(
            "length_4gb_meta.dcm",
            bytes(meta_4gb) + identity("l4g5"),
            _s("error"),
            _s("invalid"),
            what="meta element length 0xFFFFFFF0",
        )
    )
    add(
        Case(
            "length_4gb_implicit.dcm",
            implicit_el(0x00080016, b"1.2.840.10008.5.1.4.1.1.7\x00")
            + implicit_el(0x00100010, b"X", length=0xFFFFFFF0),
            _s("partial"),
            _s("truncated"),
            count_between=(1, 2),
            what="implicit VR, no meta, length 0xFFFFFFF0",
        )
    )

    # Undefined-length sequences and items that never close.
    add(
        Case(
            "sequence_never_closed.dcm",
            dicom_file("unc1", open_sq(0x00400275) + open_item() + el(0x00400007, "LO", b"inside")),
            _s("partial"),
            _s("truncated"),
            count=n_id + 2,
            depth=1,
            what="SQ and item of undefined length, no delimiters",
        )
    )
    add(
        Case(
            "sequence_never_closed_nested.dcm",
            dicom_file(
                "unc2",
                open_sq(0x00400275)
                + open_item()
                + open_sq(0x0040A730)
                + open_item()
                + el(0x00400007, "LO", b"inside")
                + ITEM_END,
            ),
            _s("partial"),
            _s("truncated"),
            count=n_id + 3,
            depth=2,
            what="nested, inner item closed, no sequence delimiters",
        )
    )
    add(
        Case(
            "sequence_swallows_dataset.dcm",
            dicom_file(
                "unc3",
                open_sq(0x00400275)
                + el(0x00400007, "LO", b"not an item")
                + el(0x00400009, "SH", b"x"),
            ),
            _s("partial"),
            _s("invalid", "truncated"),
            count=n_id + 1,
            what="SQ of undefined length followed by plain elements",
        )
    )
    add(
        Case(
            "fragments_never_closed.dcm",
            dicom_file("unc4", encapsulated_pixel_data([b"\xff\xd8" * 50] * 3)[:-8]),
            _s("partial"),
            _s("truncated"),
            count=n_id + 1,
            fragments=3,
            what="encapsulated Pixel Data, no Sequence Delimitation Item",
        )
    )

    # Deeply nested sequences.
    add(
        Case(
            "nested_300.dcm",
            dicom_file("deep300", _nest(300)),
            _s("indexed"),
            None,
            count=n_id + 301,
            depth=300,
            what="300 nested sequences",
        )
    )
    tags = [0x00410000 | rnd.randrange(0x1000, 0xFFFF) for _ in range(399)]
    add(
        Case(
            "nested_399_private.dcm",
            dicom_file("deep399", _nest(399, tags)),
            _s("indexed"),
            None,
            count=n_id + 400,
            depth=399,
            what="399 nested private sequences, a distinct tag at each level",
        )
    )
    add(
        Case(
            "nested_5000.dcm",
            dicom_file("deep5000", _nest(5000)),
            _s("partial"),
            _s("invalid", "truncated"),
            what="5000 nested sequences (beyond any sane depth)",
        )
    )

    # Thousands of private tags.
    private = _private_blocks("priv5000", 20, 250)
    add(
        Case(
            "private_5000.dcm",
            private,
            _s("indexed"),
            None,
            count=pydicom_count(private),
            what="20 private creators x 250 elements",
        )
    )

    # Huge multi-frame files.
    add(
        Case(
            "huge_multiframe.dcm",
            _write_huge_multiframe,
            _s("indexed"),
            None,
            count=n_id + 5 + 1 + 2,
            what=f"{HUGE_FRAMES} frames of {HUGE_ROWS}x{HUGE_COLUMNS}x16 bit (1 GiB, sparse), elements after Pixel Data",
        )
    )
    add(
        Case(
            "fragments_10000.dcm",
            dicom_file(
                "frag10k",
                el(0x00280008, "IS", b"10000")
                + encapsulated_pixel_data(
                    [b"\xff\xd8\xff\xd9"] * 10000, [i * 12 for i in range(10000)]
                ),
            ),
            _s("indexed"),
            None,
            count=n_id + 2,
            fragments=10000,
            what="10000 fragments with an offset table",
        )
    )

    # Invalid VRs.
    for raw in (b"ZZ", b"\x00\x00", b"lo", b"\xff\xff", b"  "):
        tag = raw.hex()
        add(
            Case(
                f"invalid_vr_{tag}.dcm",
                dicom_file(
                    f"vr{tag}",
                    el(0x00204000, "LT", b"comment text", raw_vr=raw)
                    + el(0x00280002, "US", struct.pack("<H", 1)),
                ),
                _s("indexed", "partial"),
                _s("invalid", "truncated"),
                count_between=(n_id, n_id + 2),
                what=f"VR bytes {raw!r}",
            )
        )
    add(
        Case(
            "invalid_vr_sequence.dcm",
            dicom_file(
                "vrsq",
                el(0x00400275, "SQ", b"", length=UNDEFINED, raw_vr=b"QS")
                + item(el(0x00400007, "LO", b"x"))
                + SEQUENCE_END,
            ),
            _s("indexed", "partial"),
            _s("invalid", "truncated"),
            count_between=(n_id, n_id + 2),
            what="an undefined-length sequence with VR 'QS'",
        )
    )

    # Undecodable characters in every charset (no NUL: see test_values_the_database_rejects).
    for i, charset in enumerate(CHARSETS):
        text = [
            (0x00081030, el(0x00081030, "LO", UNDECODABLE)),
            (0x00204000, el(0x00204000, "LT", UNDECODABLE + b"\r\n" + UNDECODABLE)),
        ]
        add(
            Case(
                f"charset_{i:02d}.dcm",
                dicom_file(
                    f"cs{i}", patient_name=UNDECODABLE, charset=charset.encode(), extra=text
                ),
                _s("indexed"),
                None,
                count=n_id + 1 + 2,
                what=f"undecodable bytes under Specific Character Set {charset!r}",
            )
        )

    # No preamble, no meta header.
    add(
        Case(
            "no_preamble.dcm",
            meta(uid_for("np1/sop"), preamble=False) + identity("np1"),
            _s("indexed"),
            None,
            count=n_id,
            what="'DICM' and meta at byte 0, no preamble",
        )
    )
    add(
        Case(
            "no_meta_explicit.dcm",
            identity("np2"),
            _s("indexed"),
            None,
            count=n_id,
            what="bare explicit VR data set",
        )
    )
    implicit = b"".join(
        implicit_el(t, v)
        for t, v in [
            (0x00080016, b"1.2.840.10008.5.1.4.1.1.7\x00"),
            (0x00080018, uid_for("np3/sop").encode().ljust(64, b"\x00")[:64]),
            (0x00100010, b"Implicit^Only "),
            (0x00100020, b"np3 "),  # a patient of its own, like every case's
            (0x0020000D, uid_for("np3/study").encode().ljust(64, b"\x00")[:64]),
        ]
    )
    add(
        Case(
            "no_meta_implicit",
            implicit,
            _s("indexed"),
            None,
            count=5,
            what="bare implicit VR data set, no file name extension",
        )
    )
    add(
        Case(
            "meta_says_implicit.dcm",
            meta(uid_for("np4/sop"), transfer_syntax=IMPLICIT_LE)
            + b"".join(
                implicit_el(t, v) for t, v in [(0x00080060, b"OT"), (0x00100010, b"Meta^Implicit ")]
            ),
            _s("indexed"),
            None,
            count=2,
            what="meta header says implicit VR",
        )
    )
    return cases


def all_cases(corpus: Path) -> list[Case]:
    cases = built_cases() + truncation_cases(corpus)
    names = [c.name for c in cases]
    assert len(names) == len(set(names)), "case names must be unique"
    return cases
