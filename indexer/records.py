"""Plain records that flow from the reader and walker to the writer and the CLI.

They are tuples and slotted dataclasses on purpose: workers send them to the
writer process by pickling, and an archive holds hundreds of millions of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from operator import attrgetter
from typing import Any, NamedTuple, TypeVar

from .errors import Reason

_T = TypeVar("_T")


def pickled_by_fields(cls: type[_T]) -> type[_T]:
    """Pickle instances of the dataclass `cls` as its constructor's arguments. A slotted
    dataclass is otherwise rebuilt attribute by attribute from a dict of its slots: the
    workers' results then take ~15% longer to pickle, and the writer to unpickle."""
    declared = fields(cls)  # type: ignore[arg-type]
    if len(declared) < 2 or any(not f.init or f.kw_only for f in declared):
        raise TypeError(f"{cls.__name__}: needs two or more positional init fields")
    values = attrgetter(*(f.name for f in declared))

    def __reduce__(self: Any) -> tuple[Any, tuple[Any, ...]]:
        return type(self), values(self)

    cls.__reduce__ = __reduce__  # type: ignore[method-assign]
    return cls


# Bits of ElementRecord.flags.
META = 1  # group 0002 (file meta, or a stray 0002 element in the data set): not counted
ITEM = 2  # an item (FFFE,E000) of a sequence: represented, never counted
BINARY = 4  # OB/OW/OF/OD/OL/OV/UN: value not rendered as text, length only
CUT = 8  # value cut: at the text limit, or by the end of a truncated file; `length` is as stored
PRIVATE = 16  # odd group (private tag or private creator)
ENCAPSULATED = 32  # encapsulated (fragmented) value, e.g. compressed Pixel Data
UNDEFINED_LENGTH = 64  # stored with undefined length (0xFFFFFFFF)
VR_FROM_DICTIONARY = 128  # explicit VR file: VR written as UN or invalid, taken from the dictionary

UNDEFINED = 0xFFFFFFFF
DEFAULT_VALUE_LIMIT = 1024  # characters of value text kept per element


class ElementRecord(NamedTuple):
    """One data element (or one sequence item) of a file, in file order."""

    path: str  # "(0040,0275)[0].(0040,0008)[0].(0008,0100)"; an item: "(0040,0275)[0]"
    depth: int  # 0 at the top level; elements inside the items of a top-level SQ: 1
    tag: int  # 0xGGGGEEEE; items are 0xFFFEE000
    vr: str  # two letters; "" for items
    vm: int  # values; an SQ: 1; an item: 0
    length: int  # value length as stored in the file (UNDEFINED for undefined length)
    value: str | None  # rendered text; None for SQ, items and binary VRs
    number: float | None  # the value as a number when it is a single numeric value
    flags: int  # bits above
    keyword: str  # public keyword, private dictionary keyword or ""
    name: str  # dictionary name, "Private Creator", "Private tag data", "Item", ...
    private_creator: str | None  # private creator of the block, for private tags
    offset: int  # byte offset of the element's tag in the (decompressed) stream
    fragments: tuple[int, ...] | None = None  # encapsulated: size of each fragment (BOT excluded)
    offset_table: tuple[int, ...] | None = None  # encapsulated: Basic Offset Table entries


@pickled_by_fields
@dataclass(slots=True)
class FileRecord:
    """What the walker learned about one file."""

    path: str
    size: int
    preamble: bool  # 128-byte preamble + "DICM" present
    has_meta: bool  # a File Meta Information group was present
    transfer_syntax: str | None  # (0002,0010) of the meta group, or the syntax that was detected
    explicit_vr: bool
    little_endian: bool
    deflated: bool
    elements: list[ElementRecord] = field(default_factory=list)
    element_count: int = 0  # reference walker count
    max_depth: int = 0  # 0 no sequence; a top-level SQ is 1
    fragment_sequences: int = 0
    fragments: int = 0  # fragment items, Basic Offset Table item excluded
    problem: str | None = None  # set when the file was not read to its end (truncated, invalid)
    problem_offset: int | None = None  # byte where reading stopped
    problem_reason: Reason | None = None  # set with `problem`: TRUNCATED or INVALID
    warnings: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.problem is None
