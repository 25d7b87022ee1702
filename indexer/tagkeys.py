"""Tag keys: how an element is named in the summary tables and by users, and the one 64-bit hash.

A tag key names a tag wherever it sits: public tags as ``(gggg,eeee)``, private tags by
group, creator and the element's low byte (``(0029,"SIEMENS CSA HEADER",10)``), nested
tags by the keys of their sequences joined by dots. `format_component` writes one part
(the writer's side), `parse` turns what a user typed into a key (the reports' side);
tests/test_tagkeys.py checks that one reads what the other writes.

`hash64` is the id of every keyed row (paths, tag keys, usage groups): the same in every
process and on every writer, so rows need no id look-ups.
"""

from __future__ import annotations

import re
from hashlib import blake2b

from .dictionary import keyword_tag
from .errors import ReportError


def hash64(text: str) -> int:
    """A signed 64-bit id for `text`, the same in every process."""
    digest = blake2b(text.encode("utf-8", "surrogateescape"), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


def path_id(path: str, creator: str | None) -> int:
    """The id a sequence path gets in the `paths` table."""
    return hash64(f"{path}|{creator or ''}")


def group_id(modality: str, sop_class_uid: str) -> int:
    """The id of a usage group (modality and SOP class; "" for absent)."""
    return hash64(f"group|{modality}|{sop_class_uid}")


def format_component(tag: int, private_creator: str | None) -> str:
    """How one element appears in a tag key.

    Public tags, group lengths and private tags without a creator: ``(gggg,eeee)``;
    private tags in a creator's block: ``(gggg,"CREATOR",ee)`` (ee: the element's low
    byte); the private creator elements themselves: ``(gggg,"CREATOR")``.
    """
    group, element = tag >> 16, tag & 0xFFFF
    if group & 1 and private_creator is not None:
        if element >= 0x1000:
            return f'({group:04X},"{private_creator}",{element & 0xFF:02X})'
        if 0x0010 <= element <= 0x00FF:
            return f'({group:04X},"{private_creator}")'
    return f"({group:04X},{element:04X})"


def normalized_tag(tag: int, private_creator: str | None) -> int:
    """The `tag` column of tag_keys, the same whichever block a creator got in a file.

    Private tags are written as if their creator had block 10: elements 0xGGGG10EE, the
    creator element 0xGGGG0010. Every other tag is itself.
    """
    group, element = tag >> 16, tag & 0xFFFF
    if group & 1 and private_creator is not None:
        if element >= 0x1000:
            return (group << 16) | 0x1000 | (element & 0xFF)
        if 0x0010 <= element <= 0x00FF:
            return (group << 16) | 0x0010
    return tag


_HEX_TAG = re.compile(r"^\(?\s*([0-9A-Fa-f]{4})\s*,?\s*([0-9A-Fa-f]{4})\s*\)?$")
_PRIVATE = re.compile(r'^\(\s*([0-9A-Fa-f]{4})\s*,\s*"([^"]*)"\s*(?:,\s*([0-9A-Fa-f]{2}))?\s*\)$')
_ITEM_NUMBER = re.compile(r"\[\d*\]$")


def parse(text: str) -> str:
    """Turn what a user typed into a tag key as `format_component` writes it.

    Accepts keywords (``Modality``), tags (``(0008,0060)``, ``0008,0060``,
    ``00080060``), private tags by creator (``(0029,"SIEMENS CSA HEADER",10)``) and
    sequence paths of these joined by dots, with or without item numbers
    (``RequestAttributesSequence.RequestedProcedureID``,
    ``(0040,0275)[0].(0040,1001)``). Raises ReportError when a part is not understood.
    """
    parts = _split(text.strip())
    if not parts:
        raise ReportError("empty tag")
    return ".".join(_component(part, text) for part in parts)


def _split(text: str) -> list[str]:
    parts: list[str] = []
    i, n = 0, len(text)
    while i < n:
        start = i
        if text[i] == "(":
            quoted = False
            while i < n and (quoted or text[i] != ")"):
                if text[i] == '"':
                    quoted = not quoted
                i += 1
            i += 1  # the ")"
        while i < n and text[i] != ".":
            i += 1  # the rest of a keyword, or an item number such as [0] after a tag
        parts.append(_ITEM_NUMBER.sub("", text[start:i].strip()))
        i += 1  # the "."
    return parts


def _component(part: str, whole: str) -> str:
    found = _HEX_TAG.match(part)
    if found:
        return f"({found.group(1).upper()},{found.group(2).upper()})"
    found = _PRIVATE.match(part)
    if found:
        group = int(found.group(1), 16)
        if not group & 1:
            raise ReportError(f"{whole}: a private creator can only be given for an odd group")
        if found.group(3) is None:
            return f'({group:04X},"{found.group(2)}")'
        return f'({group:04X},"{found.group(2)}",{int(found.group(3), 16):02X})'
    tag = keyword_tag(part) if part.isidentifier() else None
    if tag is None:
        raise ReportError(f"{whole}: {part!r} is not a DICOM keyword or tag such as (0008,0060)")
    return format_component(tag, None)
