"""DICOM JSON (PS3.18 Annex F) of indexed instances, rebuilt from their element rows alone.

The result equals pydicom's ``Dataset.to_json_dict()`` of the file read with every binary
value (OB, OD, OF, OL, OV, OW, UN, encapsulated Pixel Data) given as a BulkDataURI: the
index stores those by length only. Values the index cut at its value limit (flag CUT) are
read from the file when it is unchanged since indexing (see `read_cut_values`); the file
meta group (0002) is left out, as pydicom's data set leaves it out.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from sqlalchemy import Connection, select

from ..records import BINARY, CUT, ENCAPSULATED, ITEM, META
from ..schema import elements, paths
from .common import in_ids

# A BulkDataURI for an element, given its sequence path ("(7FE0,0010)", "(0040,0275)[0]...").
BulkURI = Callable[[str], str]
JsonDataset = dict[str, Any]

_INTEGER_VRS = frozenset(("IS", "SL", "SS", "SV", "UL", "US", "UV"))
_FLOAT_VRS = frozenset(("DS", "FD", "FL"))
_BULK_VRS = frozenset(("OB", "OD", "OF", "OL", "OV", "OW", "UN"))
_ITEM_NUMBER = re.compile(r"\[\d+\]\Z")
_AT_VALUE = re.compile(r"\(([0-9A-F]{4}),([0-9A-F]{4})\)")

ROW_COLUMNS = (
    elements.c.file_id,
    paths.c.path,
    paths.c.tag,
    paths.c.private_creator,
    elements.c.vr,
    elements.c.vm,
    elements.c.length,
    elements.c.value,
    elements.c.flags,
)


def element_rows(conn: Connection, file_ids: Iterable[int], *where: Any) -> Iterator[Any]:
    """The element and item rows of the files (ROW_COLUMNS), by file then in file order;
    `where`: further conditions (on `paths`, say), e.g. to read only some attributes."""
    for of_files in in_ids(conn, elements.c.file_id, file_ids):
        yield from conn.execute(
            select(*ROW_COLUMNS)
            .join(paths, paths.c.id == elements.c.path_id)
            .where(of_files, *where)
            .order_by(elements.c.file_id, elements.c.ordinal)
        )


def datasets_of_rows(
    rows: Iterable[Any], bulk_uri: Callable[[int], BulkURI]
) -> Iterator[tuple[int, JsonDataset, list[str]]]:
    """(file id, DICOM JSON data set, paths of the values cut at the value limit) per file of
    `rows` (as element_rows yields them). `bulk_uri(file_id)` names the binary values."""
    builder: _Builder | None = None
    for row in rows:
        if builder is None or builder.file_id != row.file_id:
            if builder is not None:
                yield builder.file_id, builder.top, builder.cut
            builder = _Builder(row.file_id, bulk_uri(row.file_id))
        builder.add(row)
    if builder is not None:
        yield builder.file_id, builder.top, builder.cut


class _Builder:
    """One file's data set, built row by row in file order: a row's parent is the item named
    by its path up to the last dot."""

    def __init__(self, file_id: int, bulk_uri: BulkURI) -> None:
        self.file_id = file_id
        self.bulk_uri = bulk_uri
        self.top: JsonDataset = {}
        self.items: dict[str, JsonDataset] = {}
        self.sequences: dict[str, list[JsonDataset]] = {}
        self.cut: list[str] = []

    def add(self, row: Any) -> None:
        if row.flags & META:
            return
        path: str = row.path
        parent_path, _, _ = path.rpartition(".")
        if row.flags & ITEM:
            sequence = self.sequences.get(_ITEM_NUMBER.sub("", path))
            if sequence is not None:
                item: JsonDataset = {}
                sequence.append(item)
                self.items[path] = item
            return
        parent = self.items.get(parent_path) if parent_path else self.top
        if parent is None:
            return  # inside an item the walk did not record (never in a sound index)
        element = self._element(row, path)
        parent[f"{int(row.tag) & 0xFFFFFFFF:08X}"] = element

    def _element(self, row: Any, path: str) -> dict[str, Any]:
        vr: str = row.vr
        if vr == "SQ":
            values: list[JsonDataset] = []
            self.sequences[path] = values
            return {"vr": vr, "Value": values}
        if row.flags & (BINARY | ENCAPSULATED) or vr in _BULK_VRS:
            if row.length == 0:
                return {"vr": vr}
            return {"vr": vr, "BulkDataURI": self.bulk_uri(path)}
        if row.flags & CUT:
            self.cut.append(path)
        value = json_value(vr, row.value)
        return {"vr": vr, "Value": value} if value is not None else {"vr": vr}


def json_value(vr: str, text: str | None) -> list[Any] | None:
    """The DICOM JSON "Value" of an element's stored text (None: an empty element)."""
    if text is None or text == "":
        return None
    if vr in ("LT", "ST", "UT", "UR"):
        return [text]  # one value; a backslash is a character of the text
    parts = text.split("\\")
    if vr == "PN":
        return [_person_name(p) for p in parts]
    if vr == "AT":
        return ["".join(m.groups()) for p in parts if (m := _AT_VALUE.match(p))]
    if vr in _INTEGER_VRS:
        return [_number(p, int) for p in parts]
    if vr in _FLOAT_VRS:
        return [_number(p, float, vr == "FL") for p in parts]
    return parts


def _person_name(text: str) -> dict[str, str]:
    groups = text.split("=")
    while len(groups) > 1 and not groups[-1]:
        groups.pop()  # empty trailing groups carry nothing (pydicom drops them too)
    names = {"Alphabetic": groups[0]}
    if len(groups) > 1:
        names["Ideographic"] = groups[1]
    if len(groups) > 2:
        names["Phonetic"] = groups[2]
    return names


def _number(text: str, kind: type, single: bool = False) -> Any:
    text = text.strip()
    if not text:
        return None
    try:
        if kind is int:
            return int(float(text)) if "." in text or "e" in text.lower() else int(text)
        number = float(text)
    except ValueError:
        return text  # not a number: kept as written, as pydicom keeps an invalid IS/DS
    if single:
        number = struct.unpack("f", struct.pack("f", number))[0]
    return number


# -- values cut at the value limit: read from the file ------------------------------------------

_COMPONENT = re.compile(r"\(([0-9A-F]{4}),([0-9A-F]{4})\)(?:\[(\d+)\])?")


def read_cut_values(path: str, dataset: JsonDataset, cut_paths: list[str]) -> int:
    """Replace the values of `cut_paths` in `dataset` by the values of the file at `path`
    (which the caller has checked is unchanged since indexing). Returns how many were read."""
    import pydicom

    source = pydicom.dcmread(path, defer_size=4096)
    done = 0
    for cut in cut_paths:
        element, target = _locate(source, dataset, cut)
        if element is None or target is None:
            continue
        fresh = element.to_json_dict(None, 0)
        if "Value" in fresh:
            target["Value"] = fresh["Value"]
            done += 1
    return done


def _locate(source: Any, dataset: JsonDataset, path: str) -> tuple[Any, Any]:
    parts = _COMPONENT.findall(path)
    node_ds: Any = source
    node_json: Any = dataset
    for i, (group, number, item) in enumerate(parts):
        tag = int(group + number, 16)
        key = f"{tag:08X}"
        if tag not in node_ds or key not in node_json:
            return None, None
        element = node_ds[tag]
        if i == len(parts) - 1:
            return element, node_json[key]
        index = int(item or 0)
        node_ds = element.value[index]
        node_json = node_json[key]["Value"][index]
    return None, None
