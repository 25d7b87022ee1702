"""Tag descriptions from pydicom's public and private data dictionaries, cached.

The walker asks for the same few hundred tags millions of times, so every
answer is memoised in a plain dict (cheaper than functools.lru_cache).
"""

from __future__ import annotations

from pydicom.datadict import DicomDictionary, RepeatersDictionary, mask_match, private_dictionaries

# (vr, keyword, name); vr may be a pydicom alternative such as "US or SS".
Description = tuple[str, str, str]

_public: dict[int, Description] = {}
_private: dict[tuple[int, str | None], Description] = {}


def tag_text(tag: int) -> str:
    """Return a tag written the DICOM way, e.g. ``(0008,0060)``."""
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def describe_public(tag: int) -> Description:
    """Return (VR, keyword, name) of a tag of an even group; unknown tags get VR "UN"."""
    found = _public.get(tag)
    if found is None:
        found = _public[tag] = _lookup_public(tag)
    return found


def _lookup_public(tag: int) -> Description:
    entry = DicomDictionary.get(tag)
    if entry is None:
        mask = mask_match(tag)
        if mask is not None:
            entry = RepeatersDictionary[mask]
    if entry is not None:
        vr, _vm, name, _retired, keyword = entry
        return vr, keyword, name
    if tag & 0xFFFF == 0:
        return "UL", "", "Group Length"
    return "UN", "", "Unknown Tag"


def describe_private(tag: int, creator: str | None) -> Description:
    """Return (VR, keyword, name) of a tag of an odd group, given its block's private creator."""
    key = (tag, creator)
    found = _private.get(key)
    if found is None:
        found = _private[key] = _lookup_private(tag, creator)
    return found


def _lookup_private(tag: int, creator: str | None) -> Description:
    element = tag & 0xFFFF
    if element == 0:
        return "UL", "", "Private Group Length"
    if 0x0010 <= element <= 0x00FF:
        return "LO", "", "Private Creator"
    if creator is None or element < 0x1000:
        return "UN", "", "Private tag data (no private creator)"
    table = private_dictionaries.get(creator)
    if table is not None:
        group = f"{tag >> 16:04X}"
        elem = f"{element:04X}"
        for key in (group + elem, f"{group}xx{elem[2:]}", f"{group[:2]}xxxx{elem[2:]}"):
            entry = table.get(key)
            if entry is not None:
                vr, _vm, name, _retired = entry
                return vr, "", name
    return "UN", "", "Private tag data"


def keyword_to_tag(text: str) -> int | None:
    """Parse a keyword (``Modality``), ``(0008,0060)``, ``0008,0060`` or ``00080060`` into a tag."""
    from pydicom.datadict import tag_for_keyword

    cleaned = text.strip()
    if not cleaned:
        return None  # pydicom maps "" to an entry that has no keyword
    tag = tag_for_keyword(cleaned)
    if tag is not None:
        return tag
    digits = cleaned.strip("()").replace(",", "").replace(" ", "")
    if len(digits) == 8:
        try:
            return int(digits, 16)
        except ValueError:
            return None
    return None
