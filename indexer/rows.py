"""Turn the walker's records into database rows. Runs in the worker processes.

Everything that can be computed without the database is done here, so the single
writer process only assigns file ids and executes the inserts.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from hashlib import blake2b

from .errors import DicomReadError
from .records import ENCAPSULATED, FileRecord
from .walker import DEFAULT_VALUE_LIMIT, read_file

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

# (ordinal, path_id, vr, vm, length, value, number, flags): the elements table without file_id.
ElementRow = tuple[int, int, str, int, int, "str | None", "float | None", int]
# (id, path, location, tag, depth, keyword, name, private_creator)
PathRow = tuple[int, str, str, int, int, str, str, "str | None"]

_ITEM_NUMBER = re.compile(r"\[\d+\]")


@dataclass(slots=True)
class IndexedFile:
    """A file that was read as DICOM (completely, or up to a recorded problem)."""

    path: str
    size: int
    mtime_ns: int
    record: FileRecord  # without its elements (they are in element_rows)
    attributes: dict[str, str]
    element_rows: list[ElementRow]
    encapsulated_rows: list[tuple[int, int, int, str, str]]  # ordinal, count, bytes, sizes, offsets
    new_paths: list[PathRow] = field(default_factory=list)


@dataclass(slots=True)
class FailedFile:
    """A file that could not be read as DICOM, with the reason."""

    path: str
    size: int
    mtime_ns: int
    status: str  # not_dicom or error
    reason: str
    message: str


Outcome = IndexedFile | FailedFile


class PathIds:
    """Stable 64-bit ids for sequence paths, and which ones this process has not yet sent."""

    def __init__(self) -> None:
        self._ids: dict[tuple[str, str | None], int] = {}

    def lookup(self, path: str, creator: str | None) -> tuple[int, bool]:
        """Return (id, first time seen in this process)."""
        key = (path, creator)
        found = self._ids.get(key)
        if found is not None:
            return found, False
        found = self._ids[key] = path_id(path, creator)
        return found, True


def path_id(path: str, creator: str | None) -> int:
    """The id a path gets in the `paths` table (a hash, the same in every process and writer)."""
    digest = blake2b(f"{path}|{creator or ''}".encode("utf-8", "surrogateescape"), digest_size=8)
    return int.from_bytes(digest.digest(), "little", signed=True)


def to_rows(record: FileRecord, mtime_ns: int, path_ids: PathIds) -> IndexedFile:
    """Flatten a walked file into rows; `path_ids` remembers which path definitions were sent."""
    element_rows: list[ElementRow] = []
    encapsulated_rows: list[tuple[int, int, int, str, str]] = []
    new_paths: list[PathRow] = []
    attributes: dict[str, str] = {}
    lookup = path_ids.lookup
    append = element_rows.append
    for ordinal, r in enumerate(record.elements):
        pid, new = lookup(r.path, r.private_creator)
        if new:
            new_paths.append((pid, r.path, _ITEM_NUMBER.sub("", r.path), r.tag, r.depth, r.keyword,
                              r.name, r.private_creator))
        append((ordinal, pid, r.vr, r.vm, r.length, r.value, r.number, r.flags))
        if r.depth == 0 and r.value is not None:
            column = HIERARCHY_TAGS.get(r.tag)
            if column is not None and not r.flags & 1:
                attributes[column] = r.value.strip()
        if r.flags & ENCAPSULATED and r.fragments is not None:
            encapsulated_rows.append((
                ordinal, len(r.fragments), sum(r.fragments),
                ",".join(map(str, r.fragments)), ",".join(map(str, r.offset_table or ())),
            ))
    record.elements = []
    return IndexedFile(record.path, record.size, mtime_ns, record, attributes, element_rows,
                       encapsulated_rows, new_paths)


_path_ids = PathIds()  # per worker process


def process_file(path: str, size: int, mtime_ns: int, value_limit: int = DEFAULT_VALUE_LIMIT) -> Outcome:
    """Read, walk and flatten one file; never raises for a bad file."""
    try:
        record = read_file(path, value_limit=value_limit)
    except DicomReadError as err:
        status = "not_dicom" if err.reason in ("not_dicom", "empty") else "error"
        return FailedFile(path, size, mtime_ns, status, err.reason, err.detail)
    except (OSError, ValueError, MemoryError, RecursionError) as err:
        # Nothing the walker knows to expect, but one bad file must not end an overnight run.
        return FailedFile(path, size, mtime_ns, "error", "walker_failure", f"{type(err).__name__}: {err}")
    return to_rows(record, mtime_ns, _path_ids)


def process_chunk(items: list[tuple[str, int, int, int]]) -> list[Outcome]:
    """Pool entry point: a few (path, size, mtime_ns, value_limit) at once, to spread IPC costs."""
    return [process_file(path, size, mtime_ns, value_limit) for path, size, mtime_ns, value_limit in items]


def looks_like_dicom_name(path: str) -> bool:
    """True for names that promise DICOM (so a non-DICOM file there is an error, not a skip)."""
    base = os.path.basename(path).lower()
    return base.endswith((".dcm", ".dicom", ".dic", ".ima")) or base == "dicomdir" or "." not in base
