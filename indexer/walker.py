"""Read one DICOM file and produce a record for every data element, at every depth.

The walker parses the byte stream itself instead of converting a pydicom
``Dataset``: it needs the stored length, the file offset, the VR as written,
fragment sizes read from item headers, and values rendered as text, all of
which a raw walk gives at a fraction of the cost of pydicom's value conversion.
pydicom still supplies what it is best at: the public and private data
dictionaries and the Specific Character Set codecs.

Pixel bytes are never copied: files above ``MAP_THRESHOLD`` are memory-mapped
and only the pages that hold element headers are touched; fragments of
encapsulated Pixel Data are stepped over by their item headers.
"""

from __future__ import annotations

import mmap
import os
import stat
import struct
import zlib
from math import isfinite

from .charsets import DEFAULT, decode, encodings_for
from .dictionary import _public as _public_descriptions
from .dictionary import describe_private, describe_public, tag_text
from .errors import DicomReadError, NotDicomError
from .records import (
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

MAP_THRESHOLD = 64 * 1024  # smaller files are read with one read() call, larger ones mapped
MAX_NESTING = 400  # sequence levels; deeper is reported as a problem, not a crash

IMPLICIT_LITTLE = "1.2.840.10008.1.2"
EXPLICIT_LITTLE = "1.2.840.10008.1.2.1"
DEFLATED = "1.2.840.10008.1.2.1.99"
EXPLICIT_BIG = "1.2.840.10008.1.2.2"

_LONG_VRS = frozenset(b"OB OD OF OL OV OW SQ SV UC UN UR UT UV".split())
_SHORT_VRS = frozenset(b"AE AS AT CS DA DS DT FL FD IS LO LT PN SH SL SS ST TM UI UL US".split())
_VR_TEXT = {vr: vr.decode() for vr in _LONG_VRS | _SHORT_VRS}
_LONG_VR_TEXT = frozenset(vr.decode() for vr in _LONG_VRS)

# How each VR is rendered: one table, one place.
_ASCII = 1  # AE AS CS DA DS DT IS TM UI UR: 7-bit text
_TEXT = 2  # SH LO UC: text in the Specific Character Set, multi-valued
_LONGTEXT = 3  # ST LT UT: text in the Specific Character Set, single-valued
_PN = 4
_NUMBER = 5  # binary numbers
_AT = 6
_BINARY = 7  # OB OD OF OL OV OW UN: length only
_SEQUENCE = 8
_RENDERING = {
    **dict.fromkeys(("AE", "AS", "CS", "DA", "DS", "DT", "IS", "TM", "UI", "UR"), _ASCII),
    **dict.fromkeys(("SH", "LO", "UC"), _TEXT),
    **dict.fromkeys(("ST", "LT", "UT"), _LONGTEXT),
    "PN": _PN,
    **dict.fromkeys(("US", "SS", "UL", "SL", "FL", "FD", "SV", "UV"), _NUMBER),
    "AT": _AT,
    **dict.fromkeys(("OB", "OD", "OF", "OL", "OV", "OW", "UN"), _BINARY),
    "SQ": _SEQUENCE,
}
_NUMBER_FORMAT = {"US": "H", "SS": "h", "UL": "I", "SL": "i", "FL": "f", "FD": "d", "SV": "q", "UV": "Q"}
_NUMBER_SIZE = {"US": 2, "SS": 2, "UL": 4, "SL": 4, "FL": 4, "FD": 8, "SV": 8, "UV": 8}

Buffer = bytes | mmap.mmap

_ITEM = 0xE000
_ITEM_END = 0xE00D
_SEQUENCE_END = 0xE0DD
_ITEM_TAG = 0xFFFEE000
_tuple_new = tuple.__new__


class _Syntax:
    """Byte order and VR encoding of a stretch of the stream."""

    __slots__ = ("explicit", "head", "little", "name", "order", "tag", "u16", "u32")

    def __init__(self, name: str, explicit: bool, little: bool) -> None:
        self.name = name
        self.explicit = explicit
        self.little = little
        self.order = "<" if little else ">"
        self.tag = struct.Struct(self.order + "HH").unpack_from
        # An element header in one call: group, element, VR bytes, 2-byte length (explicit VR)
        # or group, element, 4-byte length (implicit VR).
        self.head = struct.Struct(self.order + ("HH2sH" if explicit else "HHI")).unpack_from
        self.u16 = struct.Struct(self.order + "H").unpack_from
        self.u32 = struct.Struct(self.order + "I").unpack_from


_EXPLICIT_LE = _Syntax(EXPLICIT_LITTLE, True, True)
_IMPLICIT_LE = _Syntax(IMPLICIT_LITTLE, False, True)
_EXPLICIT_BE = _Syntax(EXPLICIT_BIG, True, False)

_structs: dict[str, struct.Struct] = {}
_tag_texts: dict[int, str] = {}


class _Stop(Exception):
    """Reading cannot go on: the stream ends early or holds something that is not an element."""

    def __init__(self, offset: int, message: str) -> None:
        super().__init__(message)
        self.offset = offset
        self.message = message


def _resolve_vr(vr: str, length: int, pixel_representation: int) -> str:
    """Pick one VR where the dictionary allows several ("US or SS", "OB or OW", ...)."""
    if vr == "US or SS":
        return "SS" if pixel_representation == 1 else "US"
    if vr == "OB or OW":
        # Encapsulated (undefined-length) Pixel Data is always OB (PS3.5 A.4); native data of
        # an implicit VR file is OW (PS3.5 A.1).
        return "OB" if length == UNDEFINED else "OW"
    # "US or OW", "US or SS or OW": lookup tables; a single value is a descriptor-like US
    return "US" if length <= 2 else "OW"


class _Walk:
    """State of one walk over one stream: records so far and the figures the MANIFEST checks."""

    def __init__(self, buf: Buffer, value_limit: int) -> None:
        self.buf = buf
        self.size = len(buf)  # type: ignore[arg-type]
        self.limit = value_limit
        self.cap = value_limit * 4  # bytes decoded at most: enough for value_limit UTF-8 characters
        self.records: list[ElementRecord] = []
        self.max_depth = 0
        self.fragment_sequences = 0
        self.fragments = 0
        self.pixel_representation = 0
        self.warnings: list[str] = []

    # -- data sets and items -------------------------------------------------------------

    def dataset(
        self,
        pos: int,
        end: int,
        prefix: str,
        depth: int,
        syntax: _Syntax,
        encodings: tuple[str, ...],
        until_item_end: bool = False,
        meta_only: bool = False,
    ) -> int:
        """Walk elements from `pos` up to `end` (or an Item Delimitation Item); return where it stopped."""
        buf = self.buf
        size = self.size
        records = self.records
        append = records.append
        head = syntax.head
        u32 = syntax.u32
        explicit = syntax.explicit
        creators: dict[int, str] | None = None
        tag_texts = _tag_texts
        public = _public_descriptions
        vr_text = _VR_TEXT
        long_vrs = _LONG_VR_TEXT
        while pos < end:
            if meta_only and pos + 2 <= size and buf[pos : pos + 2] != b"\x02\x00":  # type: ignore[index]
                return pos  # the meta group ends here, whatever follows
            if pos + 8 > size:
                if depth == 0 and not until_item_end and not any(buf[pos:size]):
                    # Zero padding after the last element, written by some old devices.
                    self.warnings.append(f"{size - pos} trailing zero bytes after the last element ignored")
                    return size
                raise _Stop(pos, f"file ends inside an element header at byte {pos}")
            if explicit:
                group, element, vr_bytes, length = head(buf, pos)
            else:
                group, element, length = head(buf, pos)
            if group == 0xFFFE:
                if element == _ITEM_END:
                    if until_item_end:
                        return pos + 8
                    self.warnings.append(f"stray Item Delimitation Item at byte {pos} skipped")
                    pos += 8
                    continue
                raise _Stop(pos, f"unexpected {tag_text(group << 16 | element)} at byte {pos} "
                            "where a data element was expected")
            if meta_only and group != 2:
                return pos
            tag = group << 16 | element
            flags = 0
            if explicit:
                vr = vr_text.get(vr_bytes)
                if vr in long_vrs:
                    if pos + 12 > size:
                        raise _Stop(pos, f"file ends inside the header of {tag_text(tag)} at byte {pos}")
                    length = u32(buf, pos + 8)[0]
                    vpos = pos + 12
                elif vr is not None:
                    vpos = pos + 8
                else:
                    # Not a VR: like DCMTK, assume a 2-byte length and take the VR from the dictionary.
                    vpos = pos + 8
                    self.warnings.append(f"invalid VR {bytes(vr_bytes)!r} of {tag_text(tag)} at byte {pos}")
                    flags = VR_FROM_DICTIONARY
            else:
                vr = None
                vpos = pos + 8

            # Names, private creator, and the VR where the file does not say it.
            creator = None
            if group & 1:
                flags |= PRIVATE
                if 0x10 <= element <= 0xFF:
                    pass  # a private creator: registered below once its value is read
                elif element >= 0x1000 and creators is not None:
                    creator = creators.get(group << 8 | element >> 8)
                dict_vr, keyword, name = describe_private(tag, creator)
            else:
                description = public.get(tag)
                dict_vr, keyword, name = description if description is not None else describe_public(tag)
                if group == 2 and depth == 0:
                    flags |= META
            if vr is None:
                vr = dict_vr
                if len(vr) != 2:
                    vr = _resolve_vr(vr, length, self.pixel_representation)
            elif vr == "UN" and dict_vr != "UN" and length != UNDEFINED:
                # A known element stored as UN (e.g. after an anonymiser): read it as its real VR,
                # as DCMTK (+uc) and pydicom do; an SQ is then implicit VR little endian (CP-246).
                vr = dict_vr if len(dict_vr) == 2 else _resolve_vr(dict_vr, length, 0)
                flags |= VR_FROM_DICTIONARY

            path = tag_texts.get(tag)
            if path is None:
                path = tag_texts[tag] = tag_text(tag)
            if prefix:
                path = prefix + path

            if length == UNDEFINED:
                flags |= UNDEFINED_LENGTH
                if vr == "SQ" or vr == "UN" or (not explicit and dict_vr == "UN"):
                    # SQ, or an unknown element of undefined length: a sequence (CP-246 for UN).
                    inner = syntax if vr == "SQ" else _IMPLICIT_LE
                    if vr != "SQ":
                        flags |= VR_FROM_DICTIONARY if explicit else 0
                    pos = self.sequence(vpos, length, path, depth, inner, encodings, tag, flags,
                                        keyword, name, creator, pos, "SQ")
                else:
                    pos = self.encapsulated(vpos, path, depth, syntax, tag, vr, flags, keyword,
                                            name, creator, pos)
                continue
            vend = vpos + length
            if vend > size:
                stop = _Stop(pos, f"{tag_text(tag)} at byte {pos} declares {length} bytes "
                             f"but the file ends at byte {size}")
                if vr == "SQ":  # keep the items that are there; the walk stops where they end
                    inner = syntax if explicit and not flags & VR_FROM_DICTIONARY or not explicit else _IMPLICIT_LE
                    self.sequence(vpos, length, path, depth, inner, encodings, tag, flags | CUT,
                                  keyword, name, creator, pos, "SQ", available=size - vpos)
                else:  # the element, with as much of its value as there is
                    append(_tuple_new(ElementRecord, (path, depth, tag, vr, 0, length, None, None,
                                                      flags | CUT | BINARY, keyword, name, creator,
                                                      pos, None, None)))
                raise stop
            if vend > end:
                raise _Stop(pos, f"{tag_text(tag)} at byte {pos} runs past the end of its item "
                            f"(byte {end})")
            if vr == "SQ":
                inner = syntax if (explicit and not flags & VR_FROM_DICTIONARY) or not explicit else _IMPLICIT_LE
                self.sequence(vpos, length, path, depth, inner, encodings, tag, flags,
                              keyword, name, creator, pos, "SQ")
                pos = vend
                continue

            kind = _RENDERING[vr]
            number = None
            if kind == _BINARY:
                value = None
                vm = 1 if length else 0
                flags |= BINARY
            elif kind == _NUMBER:
                value, number, vm, cut = self.numbers(vpos, length, vr, syntax.order)
                if cut:
                    flags |= CUT
            elif kind == _AT:
                value, vm, cut = self.attribute_tags(vpos, length, syntax.order)
                if cut:
                    flags |= CUT
            else:
                raw = buf[vpos : vend if length <= self.cap else vpos + self.cap]
                if kind == _ASCII:
                    value = raw.decode("latin_1")
                else:
                    value = decode(raw, encodings, kind == _PN)  # type: ignore[arg-type]
                value = value.rstrip(" \x00")
                if "\x00" in value:  # never valid inside text; databases refuse it
                    value = value.replace("\x00", "\ufffd")
                if not value:
                    vm = 0
                elif kind == _LONGTEXT or vr == "UR":
                    vm = 1
                else:
                    vm = value.count("\\") + 1
                    if (vr == "IS" or vr == "DS") and " " in value:
                        # Leading and trailing spaces of numbers carry no meaning (PS3.5 6.2).
                        value = "\\".join(v.strip() for v in value.split("\\"))
                    if vm == 1 and (vr == "IS" or vr == "DS"):
                        try:
                            number = float(value)
                        except ValueError:
                            number = None
                        else:
                            if not isfinite(number):
                                number = None
                if length > self.cap:
                    if vm and kind != _LONGTEXT and vr != "UR":
                        # Only the first `cap` bytes were decoded: count the values in all of them.
                        full = buf[vpos:vend]
                        if kind == _ASCII:
                            vm = full.count(b"\\") + 1
                        else:  # 0x5C can be the 2nd byte of a multi-byte character: decode first
                            vm = decode(full, encodings, kind == _PN).count("\\") + 1
                    value = value[: self.limit]
                    flags |= CUT
                elif len(value) > self.limit:
                    value = value[: self.limit]
                    flags |= CUT
                if group & 1 and 0x10 <= element <= 0xFF:
                    if creators is None:
                        creators = {}
                    creator = value.strip()
                    creators[group << 8 | element] = creator
                elif tag == 0x00080005:
                    encodings, problems = encodings_for(value)
                    self.warnings.extend(problems)
                elif tag == 0x00280103 and number is not None:
                    self.pixel_representation = int(number)
            append(_tuple_new(ElementRecord, (path, depth, tag, vr, vm, length, value, number, flags,
                                              keyword, name, creator, pos, None, None)))
            if tag == 0x00280103 and vr == "US" and number is not None:
                self.pixel_representation = int(number)
            pos = vend
        if until_item_end:
            if end < size:
                raise _Stop(pos, f"item of undefined length has no Item Delimitation Item before "
                            f"the end of its sequence (byte {end})")
            raise _Stop(pos, f"file ends at byte {pos} inside an item of undefined length")
        if pos > end:
            # An undefined-length sequence or fragment list inside a defined-length item ran on.
            raise _Stop(end, f"an element runs past the end of its item (byte {end})")
        return pos

    def sequence(
        self,
        pos: int,
        length: int,
        path: str,
        depth: int,
        syntax: _Syntax,
        encodings: tuple[str, ...],
        tag: int,
        flags: int,
        keyword: str,
        name: str,
        creator: str | None,
        offset: int,
        vr: str,
        available: int | None = None,
    ) -> int:
        """Record an SQ element and walk its items; return the position after the sequence.

        `available` (a truncated file) bounds the walk to the bytes that exist.
        """
        if depth + 1 > MAX_NESTING:
            raise _Stop(offset, f"sequences nested deeper than {MAX_NESTING} levels at byte {offset}")
        record = _tuple_new(ElementRecord, (path, depth, tag, vr, 1, length, None, None, flags,
                                            keyword, name, creator, offset, None, None))
        self.records.append(record)
        self.max_depth = max(self.max_depth, depth + 1)
        buf = self.buf
        size = self.size
        undefined = length == UNDEFINED
        end = size if undefined else pos + (length if available is None else available)
        read_tag = syntax.tag
        u32 = syntax.u32
        index = 0
        while pos < end:
            if pos + 8 > size:
                raise _Stop(pos, f"file ends inside sequence {path} at byte {pos}")
            group, element = read_tag(buf, pos)
            item_length = u32(buf, pos + 4)[0]
            if group != 0xFFFE:
                raise _Stop(pos, f"expected an item of {path} at byte {pos}, found "
                            f"{tag_text(group << 16 | element)}")
            if element == _SEQUENCE_END:
                return pos + 8
            if element == _ITEM_END:
                self.warnings.append(f"stray Item Delimitation Item in {path} at byte {pos} skipped")
                pos += 8
                continue
            if element != _ITEM:
                raise _Stop(pos, f"unexpected {tag_text(group << 16 | element)} in {path} at byte {pos}")
            item_path = f"{path}[{index}]"
            self.records.append(_tuple_new(ElementRecord, (
                item_path, depth + 1, _ITEM_TAG, "", 0, item_length, None, None,
                ITEM | (UNDEFINED_LENGTH if item_length == UNDEFINED else 0),
                "Item", "Item", None, pos, None, None)))
            start = pos + 8
            if item_length == UNDEFINED:
                pos = self.dataset(start, end, item_path + ".", depth + 1, syntax, encodings,
                                   until_item_end=True)
            else:
                item_end = start + item_length
                if item_end > size:
                    stop = _Stop(pos, f"item {item_path} at byte {pos} declares {item_length} bytes "
                                 f"but the file ends at byte {size}")
                    # Keep what the truncated item still holds; the walk stops where it ends.
                    self.dataset(start, size, item_path + ".", depth + 1, syntax, encodings)
                    raise stop
                if item_end > end:
                    raise _Stop(pos, f"item {item_path} at byte {pos} runs past the end of its sequence")
                self.dataset(start, item_end, item_path + ".", depth + 1, syntax, encodings)
                pos = item_end
            index += 1
        if undefined:
            raise _Stop(pos, f"file ends inside sequence {path} (no Sequence Delimitation Item)")
        return pos

    def encapsulated(
        self,
        pos: int,
        path: str,
        depth: int,
        syntax: _Syntax,
        tag: int,
        vr: str,
        flags: int,
        keyword: str,
        name: str,
        creator: str | None,
        offset: int,
    ) -> int:
        """Record an encapsulated value from its item headers: fragment sizes and offset table."""
        buf = self.buf
        size = self.size
        read_tag = syntax.tag
        u32 = syntax.u32
        sizes: list[int] = []
        offset_table: tuple[int, ...] | None = None
        stop: _Stop | None = None
        while True:
            if pos + 8 > size:
                stop = _Stop(pos, f"file ends inside the fragments of {path} at byte {pos} "
                             "(no Sequence Delimitation Item)")
                break
            group, element = read_tag(buf, pos)
            item_length = u32(buf, pos + 4)[0]
            if group == 0xFFFE and element == _SEQUENCE_END:
                pos += 8
                break
            if group != 0xFFFE or element != _ITEM or item_length == UNDEFINED:
                stop = _Stop(pos, f"expected a fragment item of {path} at byte {pos}, found "
                             f"{tag_text(group << 16 | element)}")
                break
            if pos + 8 + item_length > size:
                stop = _Stop(pos, f"fragment of {path} at byte {pos} declares {item_length} bytes "
                             f"but the file ends at byte {size}")
                break
            if offset_table is None:
                count = item_length // 4
                offset_table = struct.unpack_from(f"{syntax.order}{count}I", buf, pos + 8) if count else ()
            else:
                sizes.append(item_length)
            pos += 8 + item_length
        self.records.append(_tuple_new(ElementRecord, (
            path, depth, tag, vr, 1, UNDEFINED, None, None, flags | BINARY | ENCAPSULATED,
            keyword, name, creator, offset, tuple(sizes), offset_table or ())))
        self.fragment_sequences += 1
        self.fragments += len(sizes)
        if stop is not None:
            raise stop
        return pos

    # -- values ---------------------------------------------------------------------------

    def numbers(self, pos: int, length: int, vr: str, order: str) -> tuple[str, float | None, int, bool]:
        size = _NUMBER_SIZE[vr]
        count = length // size
        shown = min(count, self.limit // 2 + 1)
        key = f"{order}{shown}{_NUMBER_FORMAT[vr]}"
        unpack = _structs.get(key)
        if unpack is None:
            unpack = _structs[key] = struct.Struct(key)
        values = unpack.unpack_from(self.buf, pos)
        text = "\\".join(map(str, values))
        cut = shown < count or len(text) > self.limit
        if cut:
            text = text[: self.limit]
        number = None
        if count == 1:
            number = float(values[0])
            if not isfinite(number):
                number = None
        return text, number, count, cut

    def attribute_tags(self, pos: int, length: int, order: str) -> tuple[str, int, bool]:
        count = length // 4
        shown = min(count, self.limit // 12 + 1)
        words = struct.unpack_from(f"{order}{shown * 2}H", self.buf, pos)
        text = "\\".join(f"({words[i]:04X},{words[i + 1]:04X})" for i in range(0, shown * 2, 2))
        cut = shown < count or len(text) > self.limit
        return (text[: self.limit] if cut else text), count, cut


def _plausible_start(buf: Buffer, pos: int, size: int) -> _Syntax | None:
    """Guess the encoding of a data set that starts at `pos` without a meta header to say it.

    Only data sets that begin with a command, meta or identifying group element are accepted,
    which is what DCMTK and old ACR-NEMA writers produce; anything else is not DICOM.
    """
    if size - pos < 8:
        return None
    for syntax in (_EXPLICIT_LE, _IMPLICIT_LE, _EXPLICIT_BE):
        group, element = syntax.tag(buf, pos)
        if group not in (0x0000, 0x0002, 0x0008):
            continue
        if syntax.explicit:
            if buf[pos + 4 : pos + 6] in _VR_TEXT:  # type: ignore[index]
                return syntax
        else:
            length = syntax.u32(buf, pos + 4)[0]
            if element == 0 and length != 4:
                continue  # a group length is a 4-byte UL; this also turns away zero-filled files
            if length != UNDEFINED and pos + 8 + length <= size:
                return syntax
    return None


def _syntax_for(uid: str) -> _Syntax:
    if uid == IMPLICIT_LITTLE:
        return _IMPLICIT_LE
    if uid == EXPLICIT_BIG:
        return _EXPLICIT_BE
    return _EXPLICIT_LE


def _load(path: str) -> tuple[Buffer, int, mmap.mmap | None]:
    """Return the file's bytes (read, or mapped when large), its size and the map to close."""
    try:
        # Non-blocking open and a type check: a path that became a FIFO or a device after the
        # crawl saw it must not block or be read for ever.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise DicomReadError(path, "unreadable", "not a regular file")
        with os.fdopen(fd, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size > MAP_THRESHOLD:
                mapped = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
                mapped.madvise(mmap.MADV_RANDOM)
                return mapped, len(mapped), mapped
            data = fh.read()
            return data, len(data), None
    except IsADirectoryError as err:
        raise DicomReadError(path, "unreadable", "is a directory") from err
    except OSError as err:
        raise DicomReadError(path, "unreadable", f"cannot read: {err.strerror or err}") from err


def read_file(path: str | os.PathLike[str], *, value_limit: int = DEFAULT_VALUE_LIMIT) -> FileRecord:
    """Read one file and return a record for each of its elements, items included.

    Parameters
    ----------
    path:
        The file. Its name does not matter: DICOM is recognised by content.
    value_limit:
        Characters of value text kept per element; longer values are cut and flagged ``CUT``.

    Returns
    -------
    FileRecord
        The elements in file order (meta group first, flagged ``META``) with the reference
        walker's figures. When reading stopped early (truncated file, invalid structure),
        ``problem`` says why and where, and the elements read before that point are kept.

    Raises
    ------
    NotDicomError
        The file is empty, or neither a DICOM file nor a bare DICOM data set.
    DicomReadError
        The file cannot be opened or read, or its meta header is broken.
    """
    name = os.fsdecode(path)
    buf, size, mapped = _load(name)
    try:
        return _walk_buffer(name, buf, size, value_limit)
    finally:
        if mapped is not None:
            mapped.close()


def _walk_buffer(name: str, buf: Buffer, size: int, value_limit: int) -> FileRecord:
    if size == 0:
        raise NotDicomError(name, "empty", "empty file")
    preamble = size >= 132 and buf[128:132] == b"DICM"  # type: ignore[index]
    if preamble:
        start = 132
    elif buf[:4] == b"DICM":  # type: ignore[index]
        start = 4
    else:
        start = 0
    walk = _Walk(buf, value_limit)
    transfer_syntax: str | None = None
    has_meta = False
    if preamble or start == 4 or buf[:2] == b"\x02\x00":  # type: ignore[index]
        try:
            pos = walk.dataset(start, size, "", 0, _EXPLICIT_LE, DEFAULT, meta_only=True)
        except _Stop as stop:
            raise DicomReadError(name, "invalid", f"broken File Meta Information: {stop.message}") from None
        has_meta = pos > start
        first = walk.records[0] if walk.records else None
        if first is not None and first.tag == 0x00020000 and first.number is not None:
            header_end = first.offset + 8 + first.length + int(first.number)
            if header_end < pos and any(r.offset == header_end for r in walk.records):
                # A second group 0002 follows the meta header (fo-dicom GH1376): the group
                # length says where the header ends; the rest are stray data set elements.
                del walk.records[next(i for i, r in enumerate(walk.records) if r.offset == header_end):]
                pos = header_end
        for record in walk.records:
            if record.tag == 0x00020010 and record.value:
                transfer_syntax = record.value.strip()
    else:
        pos = start
    if not has_meta and not preamble and _plausible_start(buf, pos, size) is None:
        raise NotDicomError(name, "not_dicom",
                            "not DICOM: no 'DICM' marker at byte 128 and no data set at byte 0")

    deflated = transfer_syntax == DEFLATED
    if deflated:
        try:
            buf = zlib.decompress(buf[pos:], -15)  # type: ignore[index]
        except zlib.error as err:
            raise DicomReadError(name, "invalid", f"deflated data set cannot be inflated: {err}") from None
        meta_records = walk.records
        walk = _Walk(buf, value_limit)
        walk.records = meta_records
        pos, size = 0, len(buf)

    if transfer_syntax is not None:
        syntax = _syntax_for(transfer_syntax)
    else:
        syntax = _plausible_start(buf, pos, size) or _EXPLICIT_LE
        if has_meta and pos + 8 <= size:
            # The meta header forgot to say: explicit VR shows as two VR letters after the tag.
            syntax = _EXPLICIT_LE if buf[pos + 4 : pos + 6] in _VR_TEXT else _IMPLICIT_LE  # type: ignore[index]
        if has_meta and pos < size and syntax is not _EXPLICIT_LE:
            walk.warnings.append(f"no Transfer Syntax UID in the meta header; data set read as {syntax.name}")
    # A data set whose encoding disagrees with its meta header (explicit VR declared, implicit written).
    if pos + 8 <= size:
        looks_explicit = buf[pos + 4 : pos + 6] in _VR_TEXT  # type: ignore[index]
        if syntax.explicit and not looks_explicit:
            guess = _plausible_start(buf, pos, size)
            if guess is not None and not guess.explicit:
                walk.warnings.append("meta header declares explicit VR but the data set is implicit VR; "
                                     "read as implicit VR")
                syntax = guess

    problem = problem_offset = None
    if pos >= size:
        problem, problem_offset = "no data set after the File Meta Information", pos
    else:
        try:
            walk.dataset(pos, size, "", 0, syntax, DEFAULT)
        except _Stop as stop:
            problem, problem_offset = stop.message, stop.offset
        except (struct.error, IndexError) as err:  # a length that points into nothing we caught
            problem, problem_offset = f"unreadable structure: {err}", None

    records = walk.records
    count = 0
    for record in records:
        if not record.flags & (META | ITEM):
            count += 1
    if start == 0 and not has_meta and count == 0 and problem is not None:
        raise NotDicomError(name, "not_dicom", f"not DICOM: {problem}")
    return FileRecord(
        path=name,
        size=size if not deflated else _file_size(name),
        preamble=preamble,
        has_meta=has_meta,
        transfer_syntax=transfer_syntax,
        explicit_vr=syntax.explicit,
        little_endian=syntax.little,
        deflated=deflated,
        elements=records,
        element_count=count,
        max_depth=walk.max_depth,
        fragment_sequences=walk.fragment_sequences,
        fragments=walk.fragments,
        problem=problem,
        problem_offset=problem_offset,
        warnings=walk.warnings,
    )


def _file_size(name: str) -> int:
    try:
        return os.stat(name).st_size
    except OSError:
        return 0
