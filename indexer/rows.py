"""Turn the walker's records into database rows (records -> rows, nothing else).

Runs in the worker processes (see worker.py).

Everything that can be computed without the database is done here, so the single
writer process only assigns file ids and executes the inserts.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from . import summaries
from .backends.sinks import RowSink
from .records import CUT, META, FileRecord, pickled_by_fields
from .tagkeys import path_id

# Attributes copied from the top level of the data set into the hierarchy tables.
HIERARCHY_TAGS = {
    0x00100020: "patient_id",
    0x00100021: "issuer",
    0x00100010: "patient_name",
    0x00100030: "birth_date",
    0x00100040: "sex",
    0x0020000D: "study_uid",
    0x00080020: "study_date",
    0x00080030: "study_time",
    0x00080050: "accession_number",
    0x00200010: "study_id",
    0x00081030: "study_description",
    0x00080090: "referring_physician",
    0x0020000E: "series_uid",
    0x00080060: "modality",
    0x00200011: "series_number",
    0x0008103E: "series_description",
    0x00180015: "body_part",
    0x00080070: "manufacturer",
    0x00081090: "model",
    0x00080021: "series_date",
    0x00080018: "sop_instance_uid",
    0x00080016: "sop_class_uid",
    0x00200013: "instance_number",
    0x00080023: "content_date",
    0x00280010: "rows",
    0x00280011: "columns",
    0x00280008: "frames",
}
# Attributes stored in Integer columns (instances.rows, columns, frames): 32-bit on PostgreSQL.
INTEGER_ATTRIBUTES = {
    "rows": "(0028,0010) Rows",
    "columns": "(0028,0011) Columns",
    "frames": "(0028,0008) NumberOfFrames",
}
_INT_RANGE = range(-(2**31), 2**31)
# IS attributes kept as numbers in the hierarchy (series.series_number, instances.instance_number)
# so that they sort 1, 2, 10. Only one plain integer counts (" 7 " and "+7" are 7); "1.0",
# "abc", "1\\2" or a number past 32 bits leave the column NULL without a warning: the value
# is still in the file's element rows, where `find` compares it as a number.
NUMBER_ATTRIBUTES = ("series_number", "instance_number")
_PLAIN_INTEGER = re.compile(r"[+-]?[0-9]+\Z")
MEDIA_SOP_CLASS = 0x00020002  # (0002,0002), from the file meta: tells a DICOMDIR

ELEMENT_COLUMNS = (
    "file_id",
    "ordinal",
    "path_id",
    "vr",
    "vm",
    "length",
    "value",
    "number",
    "flags",
)
# (id, path, location, tag, depth, keyword, name, private_creator)
PathRow = tuple[int, str, str, int, int, str, str, "str | None"]

_ITEM_NUMBER = re.compile(r"\[\d+\]")


@pickled_by_fields
@dataclass(slots=True)
class IndexedFile:
    """A file that was read as DICOM (completely, or up to a recorded problem)."""

    path: str
    size: int
    mtime_ns: int
    record: FileRecord  # without its elements (they are in `elements`)
    attributes: dict[str, str]
    # The elements table rows as the backend's row sink returned them (a scratch file range,
    # COPY text): only the backend that made them reads them.
    elements: object
    element_rows: int
    encapsulated_rows: list[tuple[int, int, int, str, str]]  # ordinal, count, bytes, sizes, offsets
    new_paths: list[PathRow] = field(default_factory=list)
    counts: summaries.FileCounts | None = None  # its share of the tag summaries


@pickled_by_fields
@dataclass(slots=True)
class FailedFile:
    """A file that could not be read as DICOM, with the reason."""

    path: str
    size: int
    mtime_ns: int
    status: str  # not_dicom or error
    reason: str
    message: str
    skip: bool = False  # not DICOM and not named like DICOM: in the files table only, no error
    stage: str = "read"  # where it failed: read, or write (the database refused its rows)


Outcome = IndexedFile | FailedFile


class PathIds:
    """Stable 64-bit ids for sequence paths, and which ones this process has not yet sent
    (with the tag summary keys it has sent) in run `run`."""

    def __init__(self, run: str = "") -> None:
        self._ids: dict[str, int] = {}
        self.run = run
        self.sent_keys: set[object] = set()

    def lookup(self, path: str, creator: str | None) -> tuple[int, bool]:
        """Return (id, first time seen in this process)."""
        key = path if creator is None else f"{path}|{creator}"
        found = self._ids.get(key)
        if found is not None:
            return found, False
        found = self._ids[key] = path_id(path, creator)
        return found, True


# A literal backslash is doubled only where it could be read as an escape: before another
# backslash, before a byte that is not UTF-8 (a surrogate escape here), before `x` and two hex
# digits. Everywhere else it is stored as it is.
_AMBIGUOUS_BACKSLASH = re.compile(r"\\(?=[\\\udc80-\udcff]|x[0-9a-fA-F]{2})")
_ESCAPED = re.compile(r"\\(?:\\|x([0-9a-fA-F]{2}))")


def stored_path(path: str) -> str:
    """The path as stored in the index: text that maps back to exactly one name on disk.

    `path` is an operating-system path as Python gives it (os.fsdecode: bytes that are not
    UTF-8 as surrogate escapes). Such a byte is stored as `\\xHH`; a backslash that comes
    before another backslash, such a byte or `xHH` is doubled; everything else is stored as
    it is. So the byte 0xFF gives `a_\\xff.dcm` and a file literally named `a_\\xff.dcm`
    gives `a_\\\\xff.dcm`, while `a\\b.dcm` stays `a\\b.dcm`. `path_bytes` is the inverse.
    """
    if "\\" not in path:
        try:
            path.encode("utf-8")
            return path  # nearly every path: nothing to escape
        except UnicodeEncodeError:
            pass
    escaped = _AMBIGUOUS_BACKSLASH.sub(r"\\\\", path)
    return escaped.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def path_bytes(stored: str) -> bytes:
    """The bytes on disk of a path as `stored_path` stored it."""
    if "\\" not in stored:
        return stored.encode("utf-8")
    out = bytearray()
    start = 0
    for match in _ESCAPED.finditer(stored):
        out += stored[start : match.start()].encode("utf-8")
        out += bytes((int(match[1], 16),)) if match[1] else b"\\"
        start = match.end()
    out += stored[start:].encode("utf-8")
    return bytes(out)


def disk_path(stored: str) -> str:
    """The operating-system path (for open(), os.stat()) of a path as stored in the index."""
    return os.fsdecode(path_bytes(stored))


def to_rows(record: FileRecord, mtime_ns: int, path_ids: PathIds, sink: RowSink) -> IndexedFile:
    """Flatten a walked file into rows; its element rows go to the backend's `sink`.

    `path_ids` remembers which path definitions this process has already sent.
    """
    flat: list[object] = []  # the rows one after the other, ELEMENT_COLUMNS but the file id
    encapsulated_rows: list[tuple[int, int, int, str, str]] = []
    new_paths: list[PathRow] = []
    attributes: dict[str, str] = {}
    known = path_ids._ids
    extend = flat.extend
    summary_paths = summaries.known_paths()
    for ordinal, (
        path,
        depth,
        tag,
        vr,
        vm,
        length,
        value,
        number,
        flags,
        keyword,
        name,
        creator,
        _offset,
        fragments,
        offset_table,
    ) in enumerate(record.elements):
        pid = known.get(path if creator is None else f"{path}|{creator}")
        if pid is None:
            pid, _ = path_ids.lookup(path, creator)
            new_paths.append(
                (pid, path, _ITEM_NUMBER.sub("", path), tag, depth, keyword, name, creator)
            )
        if pid not in summary_paths:
            summaries.know_path(pid, path, tag, keyword, name, creator)
        extend((ordinal, pid, vr, vm, length, value, number, flags))
        if depth == 0 and value is not None and not flags & CUT:
            # Only values read whole describe the hierarchy (a partial file's header counts).
            column = HIERARCHY_TAGS.get(tag)
            if column is not None and not flags & META:
                attributes[column] = value.strip()
            elif tag == MEDIA_SOP_CLASS:
                attributes["media_sop_class"] = value.strip()
        if fragments is not None:
            encapsulated_rows.append(
                (
                    ordinal,
                    len(fragments),
                    sum(fragments),
                    ",".join(map(str, fragments)),
                    ",".join(map(str, offset_table or ())),
                )
            )
    _check_integers(attributes, record.warnings)
    _keep_plain_numbers(attributes)
    return _indexed(
        record, mtime_ns, attributes, flat, encapsulated_rows, new_paths, path_ids, sink
    )


def _check_integers(attributes: dict[str, str], warnings: list[str]) -> None:
    """Keep the integer attributes as plain integers that fit their column; drop the rest
    with a warning that names the tag (never the value: it could be anything)."""
    for name, tag in INTEGER_ATTRIBUTES.items():
        text = attributes.get(name)
        if text is None:
            continue
        first = text.split("\\")[0].strip()
        if not first:
            del attributes[name]
            continue
        try:
            number = int(first)
        except ValueError:
            problem = "is not an integer"
        else:
            if number in _INT_RANGE:
                attributes[name] = str(number)
                continue
            problem = "does not fit a 32-bit integer"
        del attributes[name]
        warnings.append(f"{tag} {problem}: instances.{name} left empty")


def _keep_plain_numbers(attributes: dict[str, str]) -> None:
    """Series and instance numbers as plain integers, or absent (see NUMBER_ATTRIBUTES)."""
    for name in NUMBER_ATTRIBUTES:
        text = attributes.get(name)
        if text is None:
            continue
        if _PLAIN_INTEGER.match(text) and int(text) in _INT_RANGE:
            attributes[name] = str(int(text))
        else:
            del attributes[name]


def plain_number(text: str | None) -> int | None:
    """The integer a series or instance number column holds for the value `text` (None: NULL)."""
    found = {"series_number": (text or "").strip()}
    _keep_plain_numbers(found)
    return int(found["series_number"]) if "series_number" in found else None


def _indexed(
    record: FileRecord,
    mtime_ns: int,
    attributes: dict[str, str],
    flat: list[object],
    encapsulated_rows: list[tuple[int, int, int, str, str]],
    new_paths: list[PathRow],
    path_ids: PathIds,
    sink: RowSink,
) -> IndexedFile:
    """The file's outcome: its share of the tag summaries counted, its rows in the sink."""
    rows = len(record.elements)
    record.elements = []
    group = (attributes.get("modality") or "", attributes.get("sop_class_uid") or "")
    width = len(ELEMENT_COLUMNS) - 1
    columns = summaries.Columns(flat[1::width], flat[2::width], flat[5::width], flat[7::width])  # type: ignore[arg-type]
    counts = summaries.count_rows(columns, group, path_ids.run, path_ids.sent_keys)
    payload = sink.add(flat, rows)
    return IndexedFile(
        record.path,
        record.size,
        mtime_ns,
        record,
        attributes,
        payload,
        rows,
        encapsulated_rows,
        new_paths,
        counts,
    )
