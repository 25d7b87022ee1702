"""Every dictionary look-up: tag descriptions, keywords, VRs and UID names, from pydicom's tables.

Two kinds of caller:
* the walker asks for the same few hundred tags millions of times (`describe_public`,
  `describe_private`): every answer is memoised in a plain dict (cheaper than
  functools.lru_cache);
* the reports need a few look-ups per command (`uid_name`, `public_vr`, `private_vr`,
  `keyword_tag`), and importing pydicom takes longer than `indexer stats` on a large
  index: those read pydicom's data modules on their own (from its bytecode cache),
  or through pydicom when that fails.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from typing import Any

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
    from pydicom._dicom_dict import DicomDictionary, RepeatersDictionary
    from pydicom.datadict import mask_match

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


_groups: list[frozenset[int]] = []


def public_groups() -> frozenset[int]:
    """The even groups the public dictionary defines, repeating groups (50xx, 60xx) expanded:
    the walker's test of whether a tag it read can be a real one."""
    if not _groups:
        from pydicom._dicom_dict import DicomDictionary, RepeatersDictionary

        groups = {tag >> 16 for tag in DicomDictionary if not tag >> 16 & 1}
        for mask in RepeatersDictionary:
            high = mask[:2]
            low = mask[2:4]
            if low == "xx":
                groups.update(int(high, 16) << 8 | n for n in range(0, 0x100, 2))
            else:
                groups.add(int(high + low, 16))
        _groups.append(frozenset(groups))
    return _groups[0]


def _lookup_private(tag: int, creator: str | None) -> Description:
    from pydicom._private_dict import private_dictionaries

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


# -- pydicom's data tables, without importing pydicom ------------------------------------------

_modules: dict[str, Any] = {}


def _pydicom_data(name: str) -> Any:
    """pydicom's data module `name` (_uid_dict, _dicom_dict or _private_dict)."""
    module = _modules.get(name)
    if module is None:
        try:
            spec = importlib.util.find_spec("pydicom")  # finds the package without importing it
            folder = next(iter(spec.submodule_search_locations or [])) if spec else ""
            module_spec = importlib.util.spec_from_file_location(
                f"_indexer_pydicom{name}", os.path.join(folder, f"{name}.py")
            )
            if module_spec is None or module_spec.loader is None:
                raise ImportError(name)
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
        except (ImportError, OSError, StopIteration, SyntaxError):
            module = importlib.import_module(f"pydicom.{name}")
        _modules[name] = module
    return module


def _uid_table() -> dict[str, tuple[str, str]]:
    """uid -> (name, keyword)."""
    table = _modules.get("uids")
    if table is None:
        entries = _pydicom_data("_uid_dict").UID_dictionary
        table = _modules["uids"] = {
            uid: (str(e[0]), str(e[4]) if len(e) > 4 else "") for uid, e in entries.items()
        }
    return table


def _public_tables() -> tuple[dict[int, tuple[str, str]], dict[str, int]]:
    """(tag -> (VR, keyword), keyword -> tag) of the public dictionary."""
    tables = _modules.get("public")
    if tables is None:
        entries = _pydicom_data("_dicom_dict").DicomDictionary
        by_tag = {tag: (str(e[0]), str(e[4])) for tag, e in entries.items()}
        tables = _modules["public"] = (by_tag, {kw: tag for tag, (_, kw) in by_tag.items() if kw})
    return tables


def public_vr(tag: int) -> str | None:
    """The VR of a public tag in the DICOM dictionary, None when it is not there."""
    entry = _public_tables()[0].get(tag)
    return entry[0] if entry else None


def public_keyword(tag: int) -> str | None:
    """The keyword of a public tag, None when the dictionary has none."""
    entry = _public_tables()[0].get(tag)
    return entry[1] if entry else None


def keyword_tag(keyword: str) -> int | None:
    """The tag of a public keyword (``Modality`` -> 0x00080060), None when unknown."""
    return _public_tables()[1].get(keyword)


def public_vm(tag: int) -> str | None:
    """The VM of a public tag in the DICOM dictionary ("1", "1-n", ...), None when unknown."""
    entry = _pydicom_data("_dicom_dict").DicomDictionary.get(tag)
    return str(entry[1]) if entry else None


def private_vr(tag: int, creator: str) -> str | None:
    """The VR of a private tag (block written as 10) in pydicom's private dictionary."""
    entries = _pydicom_data("_private_dict").private_dictionaries.get(creator)
    if not entries:
        return None
    entry = entries.get(f"{tag >> 16:04X}xx{tag & 0xFF:02X}") or entries.get(f"{tag:08X}")
    return str(entry[0]) if entry else None


def uid_names(uid: str) -> tuple[str, str] | None:
    """(name, keyword) of a registered UID, None when pydicom does not know it."""
    return _uid_table().get(uid)


def uid_name(uid: str | None) -> str | None:
    """The registered name of a UID ("CT Image Storage"), None when pydicom does not know it."""
    if not uid:
        return None
    entry = _uid_table().get(uid)
    return entry[0] if entry else None
