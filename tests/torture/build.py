"""Byte-level builders for DICOM files the way broken writers make them.

pydicom writes valid files only; the torture cases need lengths that lie,
sequences that never close and VRs that do not exist, so these helpers put the
bytes together themselves (explicit VR little endian unless said otherwise).
Every figure a test expects from such a file follows from how it was built here,
not from the indexer.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable
from typing import Any

EXPLICIT_LE = "1.2.840.10008.1.2.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"

LONG_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}
UNDEFINED = 0xFFFFFFFF


def uid_for(name: str) -> str:
    """A deterministic, valid UID (2.25.<decimal>) for a case name."""
    return "2.25." + str(int.from_bytes(hashlib.sha256(name.encode()).digest()[:15], "big"))


def _tag(tag: int) -> bytes:
    return struct.pack("<HH", tag >> 16, tag & 0xFFFF)


def pad(value: bytes, vr: str) -> bytes:
    if len(value) % 2 == 0:
        return value
    return value + (b"\x00" if vr in ("UI", "OB", "UN") else b" ")


def el(
    tag: int, vr: str, value: bytes = b"", *, length: int | None = None, raw_vr: bytes | None = None
) -> bytes:
    """One explicit VR little endian element; `length` overrides the stored length (to lie)."""
    value = pad(value, vr)
    stored = len(value) if length is None else length
    vr_bytes = raw_vr if raw_vr is not None else vr.encode()
    if vr in LONG_VRS:
        return _tag(tag) + vr_bytes + b"\x00\x00" + struct.pack("<I", stored) + value
    return _tag(tag) + vr_bytes + struct.pack("<H", stored) + value


def implicit_el(tag: int, value: bytes, *, length: int | None = None) -> bytes:
    stored = len(value) if length is None else length
    return _tag(tag) + struct.pack("<I", stored) + value


def item(content: bytes, *, undefined: bool = True) -> bytes:
    if undefined:
        return (
            _tag(0xFFFEE000)
            + struct.pack("<I", UNDEFINED)
            + content
            + _tag(0xFFFEE00D)
            + b"\x00" * 4
        )
    return _tag(0xFFFEE000) + struct.pack("<I", len(content)) + content


def sq(tag: int, items: Iterable[bytes], *, undefined: bool = True) -> bytes:
    body = b"".join(items)
    if undefined:
        return el(tag, "SQ", b"", length=UNDEFINED) + body + _tag(0xFFFEE0DD) + b"\x00" * 4
    return el(tag, "SQ", b"", length=len(body)) + body


def open_sq(tag: int) -> bytes:
    """The header of a sequence of undefined length (its items and delimiter follow separately)."""
    return el(tag, "SQ", b"", length=UNDEFINED)


def open_item() -> bytes:
    return _tag(0xFFFEE000) + struct.pack("<I", UNDEFINED)


ITEM_END = _tag(0xFFFEE00D) + b"\x00" * 4
SEQUENCE_END = _tag(0xFFFEE0DD) + b"\x00" * 4


def encapsulated_pixel_data(fragments: Iterable[bytes], offsets: Iterable[int] = ()) -> bytes:
    table = b"".join(struct.pack("<I", o) for o in offsets)
    out = (
        el(0x7FE00010, "OB", b"", length=UNDEFINED)
        + _tag(0xFFFEE000)
        + struct.pack("<I", len(table))
        + table
    )
    for fragment in fragments:
        fragment = pad(fragment, "OB")
        out += _tag(0xFFFEE000) + struct.pack("<I", len(fragment)) + fragment
    return out + SEQUENCE_END


def meta(
    sop_instance: str,
    *,
    transfer_syntax: str = EXPLICIT_LE,
    sop_class: str = SECONDARY_CAPTURE,
    preamble: bool = True,
) -> bytes:
    """Preamble, 'DICM' and a File Meta Information group with its group length."""
    body = (
        el(0x00020001, "OB", b"\x00\x01")
        + el(0x00020002, "UI", sop_class.encode())
        + el(0x00020003, "UI", sop_instance.encode())
        + el(0x00020010, "UI", transfer_syntax.encode())
        + el(0x00020012, "UI", b"1.2.3.4.5.6.7")
    )
    group = el(0x00020000, "UL", struct.pack("<I", len(body))) + body
    return (b"\x00" * 128 if preamble else b"") + b"DICM" + group


def identity(
    name: str,
    *,
    patient_name: bytes = b"Torture^Case",
    patient_id: bytes | None = None,
    charset: bytes | None = None,
    modality: bytes = b"OT",
    extra: Iterable[tuple[int, bytes]] = (),
) -> bytes:
    """The identifying top-level elements of a case's data set, plus `extra`, in tag order.

    UIDs derive from `name`, so every case is its own patient, study, series and instance.
    Elements: [Specific Character Set], SOP Class, SOP Instance, Modality, Patient's Name,
    Patient ID, Study UID, Series UID, Instance Number. `extra` holds (tag, encoded element).
    """
    parts = {
        0x00080016: el(0x00080016, "UI", SECONDARY_CAPTURE.encode()),
        0x00080018: el(0x00080018, "UI", uid_for(name + "/sop").encode()),
        0x00080060: el(0x00080060, "CS", modality),
        0x00100010: el(0x00100010, "PN", patient_name),
        0x00100020: el(
            0x00100020, "LO", patient_id if patient_id is not None else name.encode()[:64]
        ),
        0x0020000D: el(0x0020000D, "UI", uid_for(name + "/study").encode()),
        0x0020000E: el(0x0020000E, "UI", uid_for(name + "/series").encode()),
        0x00200013: el(0x00200013, "IS", b"1"),
    }
    if charset is not None:
        parts[0x00080005] = el(0x00080005, "CS", charset)
    parts.update(extra)
    return b"".join(parts[tag] for tag in sorted(parts))


IDENTITY_ELEMENTS = 8  # elements of identity() without a charset


def dicom_file(name: str, body: bytes = b"", **identity_args: Any) -> bytes:
    """A complete file: meta header, the identity elements, then `body` (elements after 0020,0013)."""
    return meta(uid_for(name + "/sop")) + identity(name, **identity_args) + body
