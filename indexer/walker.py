"""Walk the bytes of a DICOM stream and produce a record for every data element, at every depth.

The walker parses the byte stream itself instead of converting a pydicom
``Dataset``: it needs the stored length, the offset, the VR as written, fragment
sizes read from item headers, and values rendered as text, all of which a raw walk
gives at a fraction of the cost of pydicom's value conversion. pydicom still
supplies what it is best at: the public and private data dictionaries and the
Specific Character Set codecs.

It is a pure function of bytes: ``reader.py`` opens (or maps) the file, finds the
meta group's end and the transfer syntax, inflates a deflated data set, and hands
the walker a buffer, a start and a `Syntax`. Pixel bytes are never copied: only
element headers are read, and fragments of encapsulated Pixel Data are stepped
over by their item headers.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from math import isfinite
from typing import TYPE_CHECKING, NamedTuple, NoReturn

from .charsets import DEFAULT, decode, encodings_for
from .dictionary import _public as _public_descriptions
from .dictionary import describe_private, describe_public, public_groups, tag_text
from .errors import Reason
from .records import (
    BINARY,
    CUT,
    ENCAPSULATED,
    ITEM,
    META,
    PRIVATE,
    UNDEFINED,
    UNDEFINED_LENGTH,
    VR_FROM_DICTIONARY,
    ElementRecord,
)

if TYPE_CHECKING:
    from mmap import mmap

    Buffer = bytes | mmap

MAX_NESTING = 400  # sequence levels; deeper is reported as a problem, not a crash
MAX_WARNINGS = 100  # warnings kept per file; the rest are counted, so one odd file cannot flood

IMPLICIT_LITTLE = "1.2.840.10008.1.2"
EXPLICIT_LITTLE = "1.2.840.10008.1.2.1"
EXPLICIT_BIG = "1.2.840.10008.1.2.2"

_LONG_VRS = frozenset(b"OB OD OF OL OV OW SQ SV UC UN UR UT UV".split())
_SHORT_VRS = frozenset(b"AE AS AT CS DA DS DT FL FD IS LO LT PN SH SL SS ST TM UI UL US".split())
_VR_TEXT = {vr: vr.decode() for vr in _LONG_VRS | _SHORT_VRS}
_LONG_VR_TEXT = frozenset(vr.decode() for vr in _LONG_VRS)
VRS = frozenset(_VR_TEXT)  # the two VR letters an explicit VR element header can hold

_ITEM = 0xE000
_ITEM_END = 0xE00D
_SEQUENCE_END = 0xE0DD
_ITEM_TAG = 0xFFFEE000
_tuple_new = tuple.__new__


class Syntax:
    """Byte order and VR encoding of a stretch of the stream."""

    __slots__ = ("explicit", "head", "little", "name", "order", "tag", "u32")

    def __init__(self, name: str, explicit: bool, little: bool) -> None:
        self.name = name
        self.explicit = explicit
        self.little = little
        self.order = "<" if little else ">"
        self.tag = struct.Struct(self.order + "HH").unpack_from
        # An element header in one call: group, element, VR bytes and 2-byte length (explicit
        # VR), or group, element, no VR bytes (b"") and 4-byte length (implicit VR).
        self.head = struct.Struct(self.order + ("HH2sH" if explicit else "HH0sI")).unpack_from
        self.u32 = struct.Struct(self.order + "I").unpack_from


EXPLICIT_LE = Syntax(EXPLICIT_LITTLE, True, True)
IMPLICIT_LE = Syntax(IMPLICIT_LITTLE, False, True)
EXPLICIT_BE = Syntax(EXPLICIT_BIG, True, False)

_structs: dict[str, struct.Struct] = {}
_tag_texts: dict[int, str] = {}


class Stop(Exception):
    """Reading cannot go on: the stream ends early or holds something that is not an element."""

    def __init__(self, offset: int, message: str, reason: Reason) -> None:
        super().__init__(message)
        self.offset = offset
        self.message = message
        self.reason = reason


class Walked(NamedTuple):
    """What one walk over one stream found."""

    records: list[ElementRecord]
    end: int  # where the walk stopped
    warnings: list[str]
    max_depth: int
    fragment_sequences: int
    fragments: int
    problem: str | None = None  # set when the walk stopped before the end (see `Stop`)
    problem_offset: int | None = None
    problem_reason: Reason | None = None
    dropped_warnings: int = 0  # warnings beyond MAX_WARNINGS, counted and not kept


def walk_meta_group(buf: Buffer, start: int, value_limit: int) -> Walked:
    """Walk the File Meta Information group (0002) from `start`; it ends where group 0002 ends.

    Raises `Stop` when the group itself is broken.
    """
    walk = _Walk(buf, value_limit)
    end = walk.dataset(start, walk.size, _Level("", 0, EXPLICIT_LE, DEFAULT), meta_only=True)
    return walk.walked(end)


def walk_data_set(buf: Buffer, start: int, syntax: Syntax, value_limit: int) -> Walked:
    """Walk the data set from `start` to the end of `buf`, encoded as `syntax`.

    A walk that cannot go on stops there: the result keeps the records read so far and
    says why in `problem` (never raises for what the bytes hold).
    """
    walk = _Walk(buf, value_limit)
    try:
        end = walk.dataset(start, walk.size, _Level("", 0, syntax, DEFAULT))
    except Stop as stop:
        return walk.walked(stop.offset, stop.message, stop.offset, stop.reason)
    except (struct.error, IndexError) as err:  # a length that points into nothing we caught
        return walk.walked(start, f"unreadable structure: {err}", None, Reason.INVALID)
    return walk.walked(end)


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


class _Level:
    """What the elements of one data set (the top level, or one item) share."""

    __slots__ = ("creators", "depth", "encodings", "prefix", "syntax")

    def __init__(self, prefix: str, depth: int, syntax: Syntax, encodings: tuple[str, ...]) -> None:
        self.prefix = prefix  # path of the item, "" at the top level
        self.depth = depth
        self.syntax = syntax
        self.encodings = encodings  # from (0008,0005) of this data set or the enclosing one
        self.creators: dict[int, str] = {}  # private creators by group << 8 | block


class _Named(NamedTuple):
    """Where an element is and what it is called: for the records of sequences and fragments."""

    path: str
    tag: int
    keyword: str
    name: str
    creator: str | None
    offset: int


# A rendered value: text, number (a single numeric value), value multiplicity, flag bits.
_Rendered = tuple[str | None, float | None, int, int]
_Renderer = Callable[["_Walk", int, int, str, _Level], _Rendered]


class _Walk:
    """State of one walk over one stream: records so far and the figures the MANIFEST checks."""

    def __init__(self, buf: Buffer, value_limit: int) -> None:
        self.buf = buf
        self.size = len(buf)
        self.limit = value_limit
        self.cap = value_limit * 4  # bytes decoded at most: enough for value_limit UTF-8 characters
        self.records: list[ElementRecord] = []
        self.append = self.records.append
        self.max_depth = 0
        self.fragment_sequences = 0
        self.fragments = 0
        self.pixel_representation = 0
        self.warnings: list[str] = []
        self.dropped_warnings = 0

    def walked(
        self,
        end: int,
        problem: str | None = None,
        offset: int | None = None,
        reason: Reason | None = None,
    ) -> Walked:
        return Walked(
            self.records,
            end,
            self.warnings,
            self.max_depth,
            self.fragment_sequences,
            self.fragments,
            problem,
            offset,
            reason,
            self.dropped_warnings,
        )

    def warn(self, message: str) -> None:
        if len(self.warnings) < MAX_WARNINGS:
            self.warnings.append(message)
        else:
            self.dropped_warnings += 1

    # -- data sets and items -------------------------------------------------------------

    def dataset(  # noqa: C901 - the per-element loop, one function on purpose (see below)
        self,
        pos: int,
        end: int,
        level: _Level,
        until_item_end: bool = False,
        meta_only: bool = False,
    ) -> int:
        """Walk elements from `pos` up to `end`, an Item Delimitation Item (`until_item_end`) or
        the end of group 0002 (`meta_only`); return where it stopped."""
        # The hottest loop of the project, kept in one function: a method call per element and
        # module globals instead of the locals below make the whole walk several percent slower.
        # What is rare (4-byte lengths, sequences, fragments, truncation) and the rendering of
        # values (the table `_RENDERERS`) are calls.
        buf = self.buf
        size = self.size
        head = level.syntax.head
        append = self.append
        prefix = level.prefix
        depth = level.depth
        creators = level.creators  # filled by `note`
        vr_text = _VR_TEXT
        long_vrs = _LONG_VR_TEXT
        public = _public_descriptions
        tag_texts = _tag_texts
        renderers = _RENDERERS
        undefined = UNDEFINED
        last = 1  # tag of the previous element: a tag lower than it is looked at closely
        while pos < end:
            if meta_only and pos + 2 <= size and buf[pos : pos + 2] != b"\x02\x00":
                return pos  # the meta group ends here, whatever follows
            if pos + 8 > size:
                return self.tail(pos, level, until_item_end)
            group, number, vr_bytes, length = head(buf, pos)
            if group == 0xFFFE:
                if number == _ITEM_END and until_item_end:
                    return pos + 8
                pos = self.delimiter(pos, number)
                continue
            tag = group << 16 | number
            if tag < last and self.out_of_order(pos, end, tag, vr_bytes, length, level):
                return size  # zero padding to the end of the file
            last = tag
            vpos = pos + 8
            flags = 0
            vr = None
            if vr_bytes:  # explicit VR
                vr = vr_text.get(vr_bytes)
                if vr is None or vr in long_vrs:
                    length, vpos, flags = self.long_or_invalid(pos, end, tag, vr, length, level)
            if group & 1:
                # A private creator (gggg,0010-00FF) itself is registered by `note` once read.
                creator = creators.get(tag >> 8) if number >= 0x1000 else None
                dict_vr, keyword, name = describe_private(tag, creator)
                flags |= PRIVATE
            else:
                creator = None
                dict_vr, keyword, name = public.get(tag) or describe_public(tag)
                if group == 2 and depth == 0:
                    flags |= META
            if vr is None:
                vr = dict_vr if len(dict_vr) == 2 else self.resolve_vr(dict_vr, length)
            elif vr == "UN" and dict_vr != "UN" and length != undefined:
                # A known element stored as UN (e.g. after an anonymiser): read it as its real
                # VR, as DCMTK (+uc) and pydicom do; an SQ is then implicit VR LE (CP-246).
                vr = dict_vr if len(dict_vr) == 2 else _resolve_vr(dict_vr, length, 0)
                flags |= VR_FROM_DICTIONARY
            path = prefix + (tag_texts.get(tag) or _tag_path(tag))
            if length == undefined or vpos + length > end or vr == "SQ":
                named = _Named(path, tag, keyword, name, creator, pos)
                if vr == "SQ" or (vr == "UN" and length == undefined):
                    pos = self.sequence(vpos, end, named, vr, length, flags, level)
                else:
                    pos = self.not_a_sequence(vpos, end, named, vr, length, flags, level)
                continue
            vend = vpos + length
            value, value_number, vm, more_flags = renderers[vr](self, vpos, vend, vr, level)
            # (0008,0005) Specific Character Set, (0028,0103) Pixel Representation, creators
            if tag == 0x00080005 or tag == 0x00280103 or (group & 1 and number <= 0xFF):
                creator = self.note(tag, number, vr, value, value_number, creator, level)
            # fmt: off
            append(_tuple_new(ElementRecord, (
                path, depth, tag, vr, vm, length, value, value_number, flags | more_flags,
                keyword, name, creator, pos, None, None)))
            # fmt: on
            pos = vend
        return self.ended(pos, end, until_item_end)

    def ended(self, pos: int, end: int, until_item_end: bool) -> int:
        """Check where the elements of a data set ended; return that position."""
        if until_item_end:
            if end < self.size:
                message = "item of undefined length has no Item Delimitation Item before the end"
                raise Stop(pos, f"{message} of its sequence (byte {end})", Reason.INVALID)
            message = f"file ends at byte {pos} inside an item of undefined length"
            raise Stop(pos, message, Reason.TRUNCATED)
        if pos > end:
            # An undefined-length sequence or fragment list inside a defined-length item ran on.
            message = f"an element runs past the end of its item (byte {end})"
            raise Stop(end, message, Reason.INVALID)
        return pos

    def tail(self, pos: int, level: _Level, until_item_end: bool) -> int:
        """Fewer than 8 bytes are left where an element header should be."""
        if level.depth == 0 and not until_item_end and self.zero_padding(pos):
            return self.size
        raise Stop(pos, f"file ends inside an element header at byte {pos}", Reason.TRUNCATED)

    def zero_padding(self, pos: int) -> bool:
        """True, and one warning, when only zero bytes follow `pos`: padding to a block size
        written by some devices after the last element, not elements."""
        buf = self.buf
        size = self.size
        zeros = bytes(min(size - pos, 1 << 20))
        for start in range(pos, size, len(zeros)):  # in slices: the padding can be gigabytes
            chunk = buf[start : min(start + len(zeros), size)]
            if chunk != zeros[: len(chunk)]:
                return False
        self.warn(f"trailing padding: {size - pos} zero bytes after the last element, ignored")
        return True

    # -- headers that are not element headers ---------------------------------------------
    # A length or a wrong length earlier in the file makes the walk land inside a value: its
    # bytes then read as tag, VR and length. Such a header is recognised by what real headers
    # never combine (a tag no dictionary or private block accounts for, out of order, an
    # invalid VR, a length past the end) and ends the walk with one problem that quotes none
    # of those bytes. A header with only one oddity is read, like DCMTK does.

    def plausible(self, tag: int, level: _Level) -> bool:
        """Whether `tag` can be the tag of a real element of the data set `level`: a public tag
        of the dictionary (text bytes read as a tag can fall in a known group: "  " is 2020),
        or a private one of a block whose creator this data set holds."""
        group = tag >> 16
        number = tag & 0xFFFF
        if not group & 1:
            if number == 0:
                return group in public_groups()
            return (_public_descriptions.get(tag) or describe_public(tag))[2] != "Unknown Tag"
        if group <= 7 or group == 0xFFFF:  # odd groups that PS3.5 7.8.1 does not allow
            return False
        if number >= 0x1000:
            return tag >> 8 in level.creators
        return number == 0 or 0x10 <= number <= 0xFF

    def garbage(self, pos: int, why: str) -> NoReturn:
        message = f"{why} at byte {pos}: not an element header, the data set ends there"
        raise Stop(pos, message, Reason.INVALID)

    def out_of_order(
        self, pos: int, end: int, tag: int, vr_bytes: bytes, length: int, level: _Level
    ) -> bool:
        """A tag lower than the one before it: zero padding (True: the data set ends), a real
        element out of order (False: read it), or garbage (raises `Stop`)."""
        if not tag and not length and vr_bytes.count(0) == len(vr_bytes):
            if level.depth == 0 and self.records and self.zero_padding(pos):
                return True
            self.garbage(pos, "zero bytes")
        if vr_bytes and vr_bytes not in _VR_TEXT:
            self.garbage(pos, "invalid VR")
        if vr_bytes and _VR_TEXT[vr_bytes] in _LONG_VR_TEXT:
            if pos + 12 > self.size:
                raise Stop(
                    pos, f"file ends inside an element header at byte {pos}", Reason.TRUNCATED
                )
            length = level.syntax.u32(self.buf, pos + 8)[0]
            pos_value = pos + 12
        else:
            pos_value = pos + 8
        if length != UNDEFINED and pos_value + length > end:
            self.garbage(pos, "element out of order with a length past the end of its data set")
        if not self.plausible(tag, level):
            self.garbage(pos, "unknown tag out of order")
        return False

    def delimiter(self, pos: int, number: int) -> int:
        """An item tag (FFFE,xxxx) where a data element was expected."""
        if number == _ITEM_END:
            self.warn(f"stray Item Delimitation Item at byte {pos} skipped")
            return pos + 8
        raise Stop(
            pos,
            f"unexpected {_delimiter_text(number)} at byte {pos} where a data element was expected",
            Reason.INVALID,
        )

    def resolve_vr(self, vr: str, length: int) -> str:
        """`_resolve_vr` with the Pixel Representation read so far."""
        return _resolve_vr(vr, length, self.pixel_representation)

    def long_or_invalid(
        self, pos: int, end: int, tag: int, vr: str | None, length: int, level: _Level
    ) -> tuple[int, int, int]:
        """Length, value position and flags of an explicit VR header: a 4-byte length, or no VR."""
        if vr is not None:
            if pos + 12 > self.size:
                raise Stop(
                    pos, f"file ends inside an element header at byte {pos}", Reason.TRUNCATED
                )
            return level.syntax.u32(self.buf, pos + 8)[0], pos + 12, 0
        # Not a VR. Read a real element (a known tag, a value that fits) like DCMTK: assume a
        # 2-byte length and take the VR from the dictionary. Anything else is garbage.
        if pos + 8 + length > end or not self.plausible(tag, level):
            self.garbage(pos, "invalid VR")
        self.warn(f"invalid VR of {tag_text(tag)} at byte {pos}: VR taken from the dictionary")
        return length, pos + 8, VR_FROM_DICTIONARY

    def note(
        self,
        tag: int,
        number: int,
        vr: str,
        value: str | None,
        value_number: float | None,
        creator: str | None,
        level: _Level,
    ) -> str | None:
        """Keep what later elements depend on; return the private creator of the record."""
        if tag == 0x00080005:  # Specific Character Set
            if vr in _TEXT_VRS:
                level.encodings, problems = encodings_for(value or "")
                for problem in problems:
                    self.warn(problem)
        elif tag == 0x00280103:  # Pixel Representation
            if value_number is not None and vr in ("US", "IS", "DS"):
                self.pixel_representation = int(value_number)
        elif number >= 0x10 and value is not None and vr in _TEXT_VRS:
            creator = value.strip()
            level.creators[tag >> 16 << 8 | number] = creator  # the key `dataset` looks up
        return creator

    # Sequences recurse: `dataset` calls `sequence`, which calls `dataset` for each item. Only
    # these two frames per level, so that MAX_NESTING levels stay within Python's recursion
    # limit; the other steps are calls that return before the recursion goes on.

    def sequence_plan(
        self, vpos: int, end: int, named: _Named, vr: str, length: int, flags: int, level: _Level
    ) -> tuple[Syntax, int, int | None]:
        """Syntax of the items, flags, and the bytes there are when the file cuts it off."""
        if length == UNDEFINED:
            flags |= UNDEFINED_LENGTH
            if vr == "SQ":
                return level.syntax, flags, None
            # An unknown element (UN) of undefined length is a sequence (CP-246).
            return IMPLICIT_LE, flags | (VR_FROM_DICTIONARY if level.syntax.explicit else 0), None
        # A UN or invalid VR read as SQ holds implicit VR little endian items (CP-246).
        inner = IMPLICIT_LE if flags & VR_FROM_DICTIONARY else level.syntax
        vend = vpos + length
        if vend > end and not self.plausible(named.tag, level):
            self.garbage(named.offset, "element length past the end of its data set")
        if vend > self.size:  # keep the items that are there; the walk stops where they end
            return inner, flags | CUT, self.size - vpos
        if vend > end:
            self.overrun(named, end)
        return inner, flags, None

    def not_a_sequence(
        self, vpos: int, end: int, named: _Named, vr: str, length: int, flags: int, level: _Level
    ) -> int:
        """Encapsulated fragments, or a value that runs past its item or the file."""
        if length == UNDEFINED:
            return self.encapsulated(vpos, named, vr, flags | UNDEFINED_LENGTH, level)
        if not self.plausible(named.tag, level):
            self.garbage(named.offset, "element length past the end of its data set")
        if vpos + length <= self.size:
            self.overrun(named, end)
        # The element, with as much of its value as there is: text and whole numbers as far as
        # they go, flagged cut; no number, since the value is not all there.
        path, tag, keyword, name, creator, pos = named
        value, _number, vm, more_flags = _RENDERERS[vr](self, vpos, self.size, vr, level)
        if more_flags & BINARY and length:
            vm = 1  # one value, cut (Pixel Data of a truncated file)
        # fmt: off
        self.records.append(_tuple_new(ElementRecord, (
            path, level.depth, tag, vr, vm, length, value, None, flags | CUT | more_flags,
            keyword, name, creator, pos, None, None)))
        # fmt: on
        raise self.cut_off(named, length)

    def overrun(self, named: _Named, end: int) -> NoReturn:
        message = f"{tag_text(named.tag)} at byte {named.offset} runs past the end of its item"
        raise Stop(named.offset, f"{message} (byte {end})", Reason.INVALID)

    def cut_off(self, named: _Named, length: int) -> Stop:
        pos = named.offset
        message = f"{tag_text(named.tag)} at byte {pos} declares {length} bytes"
        return Stop(pos, f"{message} but the file ends at byte {self.size}", Reason.TRUNCATED)

    def sequence(
        self, pos: int, end: int, named: _Named, vr: str, length: int, flags: int, level: _Level
    ) -> int:
        """Record an SQ element and walk its items; return the position after the sequence."""
        syntax, flags, available = self.sequence_plan(pos, end, named, vr, length, flags, level)
        self.open_sequence(named, length, flags, level)
        path = named.path
        buf = self.buf
        size = self.size
        undefined = length == UNDEFINED
        after = pos + length  # where a defined-length sequence ends, whatever its items say
        end = size if undefined else pos + (length if available is None else available)
        read_tag = syntax.tag
        u32 = syntax.u32
        index = 0
        while pos < end:
            if pos + 8 > size:
                raise Stop(pos, f"file ends inside sequence {path} at byte {pos}", Reason.TRUNCATED)
            group, number = read_tag(buf, pos)
            if group != 0xFFFE or number != _ITEM:
                if group == 0xFFFE and number == _SEQUENCE_END:
                    if available is not None:
                        raise self.cut_off(named, length)
                    return pos + 8 if undefined else after
                pos = self.not_an_item(pos, path, group, number)
                continue
            item_length = u32(buf, pos + 4)[0]
            inner = self.open_item(pos, end, f"{path}[{index}]", item_length, level, syntax)
            index += 1
            if item_length == UNDEFINED:
                pos = self.dataset(pos + 8, end, inner, until_item_end=True)
                continue
            item_end = pos + 8 + item_length
            # A truncated item: keep what it still holds; the walk stops where it ends.
            self.dataset(pos + 8, min(item_end, size), inner)
            if item_end > size:
                message = f"item {inner.prefix[:-1]} at byte {pos} declares {item_length} bytes"
                raise Stop(pos, f"{message} but the file ends at byte {size}", Reason.TRUNCATED)
            pos = item_end
        if undefined:
            message = f"file ends inside sequence {path} (no Sequence Delimitation Item)"
            raise Stop(pos, message, Reason.TRUNCATED)
        if available is not None:
            raise self.cut_off(named, length)
        return after

    def open_sequence(self, named: _Named, length: int, flags: int, level: _Level) -> None:
        """Record an SQ element, unless it is nested too deep."""
        path, tag, keyword, name, creator, offset = named
        depth = level.depth
        if depth + 1 > MAX_NESTING:
            message = f"sequences nested deeper than {MAX_NESTING} levels at byte {offset}"
            raise Stop(offset, message, Reason.INVALID)
        # fmt: off
        self.records.append(_tuple_new(ElementRecord, (
            path, depth, tag, "SQ", 1, length, None, None, flags, keyword, name, creator, offset,
            None, None)))
        # fmt: on
        self.max_depth = max(self.max_depth, depth + 1)

    def not_an_item(self, pos: int, path: str, group: int, number: int) -> int:
        """Neither an item nor the end of the sequence: skip a stray Item Delimitation Item."""
        if group != 0xFFFE:
            message = f"expected an item of {path} at byte {pos}, found no item tag"
            raise Stop(pos, message, Reason.INVALID)
        if number == _ITEM_END:
            self.warn(f"stray Item Delimitation Item in {path} at byte {pos} skipped")
            return pos + 8
        raise Stop(
            pos, f"unexpected {_delimiter_text(number)} in {path} at byte {pos}", Reason.INVALID
        )

    def open_item(
        self, pos: int, end: int, path: str, length: int, level: _Level, syntax: Syntax
    ) -> _Level:
        """Record the item whose header is at `pos`; return the data set it holds."""
        depth = level.depth + 1
        flags = ITEM | (UNDEFINED_LENGTH if length == UNDEFINED else 0)
        # fmt: off
        self.records.append(_tuple_new(ElementRecord, (
            path, depth, _ITEM_TAG, "", 0, length, None, None, flags, "Item", "Item", None, pos,
            None, None)))
        # fmt: on
        if length != UNDEFINED and end < pos + 8 + length <= self.size:
            message = f"item {path} at byte {pos} runs past the end of its sequence"
            raise Stop(pos, message, Reason.INVALID)
        return _Level(path + ".", depth, syntax, level.encodings)

    def encapsulated(self, pos: int, named: _Named, vr: str, flags: int, level: _Level) -> int:
        """Record an encapsulated value from its item headers: fragment sizes and offset table."""
        path, tag, keyword, name, creator, offset = named
        sizes: list[int] = []
        pos, offset_table, stop = self.fragments_of(pos, path, level.syntax, sizes)
        flags |= BINARY | ENCAPSULATED
        # fmt: off
        self.records.append(_tuple_new(ElementRecord, (
            path, level.depth, tag, vr, 1, UNDEFINED, None, None, flags, keyword, name, creator,
            offset, tuple(sizes), offset_table or ())))
        # fmt: on
        self.fragment_sequences += 1
        self.fragments += len(sizes)
        if stop is not None:
            raise stop
        return pos

    def fragments_of(
        self, pos: int, path: str, syntax: Syntax, sizes: list[int]
    ) -> tuple[int, tuple[int, ...] | None, Stop | None]:
        """Step over the fragment items from `pos`, appending their sizes to `sizes`: the position
        after the Sequence Delimitation Item, the Basic Offset Table, and why it stopped early."""
        buf = self.buf
        size = self.size
        read_tag = syntax.tag
        u32 = syntax.u32
        offset_table: tuple[int, ...] | None = None
        while True:
            if pos + 8 > size:
                return (
                    pos,
                    offset_table,
                    Stop(
                        pos,
                        f"file ends inside the fragments of {path} at byte {pos} "
                        "(no Sequence Delimitation Item)",
                        Reason.TRUNCATED,
                    ),
                )
            group, number = read_tag(buf, pos)
            item_length = u32(buf, pos + 4)[0]
            if group == 0xFFFE and number == _SEQUENCE_END:
                return pos + 8, offset_table, None
            if group != 0xFFFE or number != _ITEM or item_length == UNDEFINED:
                return (
                    pos,
                    offset_table,
                    Stop(
                        pos,
                        f"expected a fragment item of {path} at byte {pos}, found no item tag",
                        Reason.INVALID,
                    ),
                )
            if pos + 8 + item_length > size:
                return (
                    pos,
                    offset_table,
                    Stop(
                        pos,
                        f"fragment of {path} at byte {pos} declares {item_length} bytes "
                        f"but the file ends at byte {size}",
                        Reason.TRUNCATED,
                    ),
                )
            if offset_table is None:
                count = item_length // 4
                offset_table = (
                    struct.unpack_from(f"{syntax.order}{count}I", buf, pos + 8) if count else ()
                )
            else:
                sizes.append(item_length)
            pos += 8 + item_length

    # -- values ---------------------------------------------------------------------------

    def long_text(self, vpos: int, vend: int, vr: str, level: _Level) -> _Rendered:
        """A text value longer than `cap` bytes: decode `cap` bytes, count the values in all."""
        raw = self.buf[vpos : vpos + self.cap]
        codes = vr in _CODE_VRS
        value = _clean(raw.decode("latin_1") if codes else decode(raw, level.encodings, vr == "PN"))
        if vr not in _SINGLE_VRS and " " in value:
            value = _each_value(value, vr)
        number = None
        if vr in _DECIMAL_VRS and value and "\\" not in value:
            number = _decimal(value)
        if value and vr not in _SINGLE_VRS:
            full = self.buf[vpos:vend]
            if codes:
                vm = full.count(b"\\") + 1
            else:  # 0x5C can be the 2nd byte of a multi-byte character: decode first
                vm = decode(full, level.encodings, vr == "PN").count("\\") + 1
        else:
            vm = 1 if value else 0
        return value[: self.limit], number, vm, CUT


def _tag_path(tag: int) -> str:
    text = _tag_texts[tag] = tag_text(tag)
    return text


def _delimiter_text(number: int) -> str:
    """An (FFFE,xxxx) tag as messages show it: only the item tags named, never other bytes."""
    if number in (_ITEM, _ITEM_END, _SEQUENCE_END):
        return tag_text(0xFFFE0000 | number)
    return "(FFFE,xxxx) tag"


def _clean(text: str) -> str:
    """Drop trailing padding; a NUL is never valid inside text and databases refuse it."""
    text = text.rstrip(" \x00")
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


# Padding of each value that PS3.5 6.2 says carries no meaning: both ends for these VRs
# (DS and IS: `_decimals`), trailing spaces for the other multi-valued text VRs.
_PADDING_BOTH_ENDS = {
    **dict.fromkeys(("AE", "AS", "CS", "DA", "DT", "TM", "UR"), " "),
    "UI": " \x00",
}


def _each_value(value: str, vr: str) -> str:
    """Strip the padding of each value of a multi-valued text `value`."""
    both = _PADDING_BOTH_ENDS.get(vr)
    if both is not None:
        return "\\".join([v.strip(both) for v in value.split("\\")])
    if vr in _DECIMAL_VRS:
        return "\\".join([v.strip() for v in value.split("\\")])
    return "\\".join([v.rstrip(" ") for v in value.split("\\")])


def _decimal(text: str) -> float | None:
    try:
        number = float(text)
    except ValueError:
        return None
    return number if isfinite(number) else None


# -- renderers, one per kind of VR (the table `_RENDERERS` below) ----------------------------
# Each drops trailing padding and turns NULs (never valid inside text, refused by databases)
# into U+FFFD inline rather than through a shared helper: they run once per element.


def _codes(walk: _Walk, vpos: int, vend: int, vr: str, level: _Level) -> _Rendered:
    """AE AS CS DA DT TM UI: 7-bit text, multi-valued; spaces around each value carry no
    meaning (PS3.5 6.2), nor does a UID's trailing NUL."""
    if vend - vpos > walk.cap:
        return walk.long_text(vpos, vend, vr, level)
    value = walk.buf[vpos:vend].decode("latin_1").rstrip(" \x00")
    if " " in value or "\x00" in value:  # rare: one test of each on the common path
        value = _each_value(value, vr)
        if "\x00" in value:
            value = value.replace("\x00", "\ufffd")
    vm = value.count("\\") + 1 if value else 0
    if len(value) > walk.limit:
        return value[: walk.limit], None, vm, CUT
    return value, None, vm, 0


def _decimals(walk: _Walk, vpos: int, vend: int, vr: str, level: _Level) -> _Rendered:
    """IS DS: numbers as text; leading and trailing spaces carry no meaning (PS3.5 6.2)."""
    if vend - vpos > walk.cap:
        return walk.long_text(vpos, vend, vr, level)
    value = walk.buf[vpos:vend].decode("latin_1").rstrip(" \x00")
    if not value:
        return value, None, 0, 0
    if "\x00" in value:
        value = value.replace("\x00", "\ufffd")
    vm = value.count("\\") + 1
    if " " in value:
        value = _each_value(value, vr)
    number = _decimal(value) if vm == 1 else None
    if len(value) > walk.limit:
        return value[: walk.limit], number, vm, CUT
    return value, number, vm, 0


def _uri(walk: _Walk, vpos: int, vend: int, vr: str, level: _Level) -> _Rendered:
    """UR: 7-bit text, one value."""
    if vend - vpos > walk.cap:
        return walk.long_text(vpos, vend, vr, level)
    value = _clean(walk.buf[vpos:vend].decode("latin_1"))
    if len(value) > walk.limit:
        return value[: walk.limit], None, 1, CUT
    return value, None, 1 if value else 0, 0


def _multi_valued_text(person_names: bool) -> _Renderer:
    """SH LO UC (person_names False) and PN (True: its own delimiters): text in the Specific
    Character Set, multi-valued. One renderer per kind, so the hot path tests no flag."""

    def render(walk: _Walk, vpos: int, vend: int, vr: str, level: _Level) -> _Rendered:
        if vend - vpos > walk.cap:
            return walk.long_text(vpos, vend, vr, level)
        value = decode(walk.buf[vpos:vend], level.encodings, person_names).rstrip(" \x00")
        if " \\" in value:  # trailing spaces of each value carry no meaning (PS3.5 6.2)
            value = _each_value(value, vr)
        if "\x00" in value:
            value = value.replace("\x00", "\ufffd")
        vm = value.count("\\") + 1 if value else 0
        if len(value) > walk.limit:
            return value[: walk.limit], None, vm, CUT
        return value, None, vm, 0

    return render


_text = _multi_valued_text(False)
_person_name = _multi_valued_text(True)


def _long_text(walk: _Walk, vpos: int, vend: int, vr: str, level: _Level) -> _Rendered:
    """ST LT UT: text in the Specific Character Set, one value."""
    if vend - vpos > walk.cap:
        return walk.long_text(vpos, vend, vr, level)
    value = _clean(decode(walk.buf[vpos:vend], level.encodings, False))
    if len(value) > walk.limit:
        return value[: walk.limit], None, 1, CUT
    return value, None, 1 if value else 0, 0


def _binary_numbers(walk: _Walk, vpos: int, vend: int, vr: str, level: _Level) -> _Rendered:
    """US SS UL SL FL FD SV UV: binary numbers."""
    count = (vend - vpos) // _NUMBER_SIZE[vr]
    shown = min(count, walk.limit // 2 + 1)
    key = f"{level.syntax.order}{shown}{_NUMBER_FORMAT[vr]}"
    unpack = _structs.get(key)
    if unpack is None:
        unpack = _structs[key] = struct.Struct(key)
    values = unpack.unpack_from(walk.buf, vpos)
    text = "\\".join(map(str, values))
    cut = shown < count or len(text) > walk.limit
    number = None
    if count == 1:
        number = float(values[0])
        if not isfinite(number):
            number = None
    return (text[: walk.limit] if cut else text), number, count, CUT if cut else 0


def _attribute_tags(walk: _Walk, vpos: int, vend: int, vr: str, level: _Level) -> _Rendered:
    """AT: tags, shown as (gggg,eeee)."""
    count = (vend - vpos) // 4
    shown = min(count, walk.limit // 12 + 1)
    words = struct.unpack_from(f"{level.syntax.order}{shown * 2}H", walk.buf, vpos)
    text = "\\".join(f"({words[i]:04X},{words[i + 1]:04X})" for i in range(0, shown * 2, 2))
    cut = shown < count or len(text) > walk.limit
    return (text[: walk.limit] if cut else text), None, count, CUT if cut else 0


def _binary(walk: _Walk, vpos: int, vend: int, vr: str, level: _Level) -> _Rendered:
    """OB OD OF OL OV OW UN: the length only."""
    return None, None, 1 if vend > vpos else 0, BINARY


_CODE_VRS = frozenset(("AE", "AS", "CS", "DA", "DS", "DT", "IS", "TM", "UI", "UR"))
_DECIMAL_VRS = frozenset(("IS", "DS"))
_SINGLE_VRS = frozenset(("ST", "LT", "UT", "UR"))
_TEXT_VRS = _CODE_VRS | {"SH", "LO", "UC", "ST", "LT", "UT", "PN"}  # rendered as text
_NUMBER_FORMAT = {
    "US": "H",
    "SS": "h",
    "UL": "I",
    "SL": "i",
    "FL": "f",
    "FD": "d",
    "SV": "q",
    "UV": "Q",
}
_NUMBER_SIZE = {"US": 2, "SS": 2, "UL": 4, "SL": 4, "FL": 4, "FD": 8, "SV": 8, "UV": 8}

# How each VR is rendered: one table, one place. SQ is walked, never rendered.
_RENDERERS: dict[str, _Renderer] = {
    **dict.fromkeys(("AE", "AS", "CS", "DA", "DT", "TM", "UI"), _codes),
    **dict.fromkeys(("IS", "DS"), _decimals),
    "UR": _uri,
    **dict.fromkeys(("SH", "LO", "UC"), _text),
    "PN": _person_name,
    **dict.fromkeys(("ST", "LT", "UT"), _long_text),
    **dict.fromkeys(_NUMBER_FORMAT, _binary_numbers),
    "AT": _attribute_tags,
    **dict.fromkeys(("OB", "OD", "OF", "OL", "OV", "OW", "UN"), _binary),
}
