"""Turn the walker's records into database rows. Runs in the worker processes.

Everything that can be computed without the database is done here, so the single
writer process only assigns file ids and executes the inserts.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from . import summaries
from .errors import DicomReadError
from .records import DEFAULT_VALUE_LIMIT, META, FileRecord, pickled_by_fields
from .tagkeys import path_id
from .scratch import ScratchRows, ScratchWriter, writer_for

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

ELEMENT_COLUMNS = ("file_id", "ordinal", "path_id", "vr", "vm", "length", "value", "number", "flags")
# Where a file's element rows travel to the writer. SQLite: rows in this worker's scratch file
# (scratch.py). PostgreSQL: COPY text, each line starting with a NUL where the file id goes
# (only the database gives file ids; NUL cannot occur in COPY text otherwise).
ElementPayload = ScratchRows | str
FILE_ID_PLACEHOLDER = "\x00"
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
    # The elements table rows, ready for the writer's bulk insert but for the file id, which
    # only the database can give: FILE_ID_PLACEHOLDER stands in for it (see ElementPayload).
    elements: ElementPayload
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


def stored_path(path: str) -> str:
    """The path as stored in the index: file names that are not UTF-8 keep their bytes as
    backslash escapes (databases accept only valid text)."""
    try:
        path.encode("utf-8")
        return path
    except UnicodeEncodeError:
        return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


# PostgreSQL text cannot hold NUL: an embedded NUL (never valid in a DICOM text value) becomes U+FFFD.
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\x00": "\ufffd"})


def _copy_rows(flat: list[object], width: int) -> str:
    """COPY text of the flat rows (ELEMENT_COLUMNS but the file id, which FILE_ID_PLACEHOLDER
    stands for). Only the value column can hold text that needs escaping; ordinal, path id,
    VR, VM, length and flags are never null."""
    null = "\\N"
    escapes = _COPY_ESCAPES
    lines: list[str] = []
    append = lines.append
    for i in range(0, len(flat), width):
        ordinal, pid, vr, vm, length, value, number, flags = flat[i : i + width]
        text = null if value is None else value.translate(escapes)  # type: ignore[attr-defined]
        append(f"\x00\t{ordinal}\t{pid}\t{vr}\t{vm}\t{length}\t{text}\t"
               f"{null if number is None else number}\t{flags}\n")
    return "".join(lines)


def to_rows(record: FileRecord, mtime_ns: int, path_ids: PathIds, scratch: ScratchWriter | None) -> IndexedFile:
    """Flatten a walked file into rows: into `scratch` (SQLite), or COPY text when it is None.

    `path_ids` remembers which path definitions this process has already sent.
    """
    flat: list[object] = []  # the rows one after the other, ELEMENT_COLUMNS but the file id
    encapsulated_rows: list[tuple[int, int, int, str, str]] = []
    new_paths: list[PathRow] = []
    attributes: dict[str, str] = {}
    known = path_ids._ids
    extend = flat.extend
    summary_paths = summaries.known_paths()
    for ordinal, (path, depth, tag, vr, vm, length, value, number, flags, keyword, name, creator, _offset,
                  fragments, offset_table) in enumerate(record.elements):
        pid = known.get(path if creator is None else f"{path}|{creator}")
        if pid is None:
            pid, _ = path_ids.lookup(path, creator)
            new_paths.append((pid, path, _ITEM_NUMBER.sub("", path), tag, depth, keyword, name, creator))
        if pid not in summary_paths:
            summaries.know_path(pid, path, tag, keyword, name, creator)
        extend((ordinal, pid, vr, vm, length, value, number, flags))
        if depth == 0 and value is not None:
            column = HIERARCHY_TAGS.get(tag)
            if column is not None and not flags & META:
                attributes[column] = value.strip()
        if fragments is not None:
            encapsulated_rows.append((
                ordinal, len(fragments), sum(fragments),
                ",".join(map(str, fragments)), ",".join(map(str, offset_table or ())),
            ))
    rows = len(record.elements)
    record.elements = []
    group = (attributes.get("modality") or "", attributes.get("sop_class_uid") or "")
    width = len(ELEMENT_COLUMNS) - 1
    columns = summaries.Columns(flat[1::width], flat[2::width], flat[5::width], flat[7::width])  # type: ignore[arg-type]
    counts = summaries.count_rows(columns,
                                  group, path_ids.run, path_ids.sent_keys)
    payload: ElementPayload
    if scratch is None:
        payload = _copy_rows(flat, width)
    else:
        payload = scratch.add(flat, rows) if rows else ScratchRows(("", 1, 0))
    return IndexedFile(record.path, record.size, mtime_ns, record, attributes, payload, rows,
                       encapsulated_rows, new_paths, counts)


_path_ids: dict[str, PathIds] = {}  # per worker process: path definitions sent in this run


def _path_ids_for(run_key: str) -> PathIds:
    found = _path_ids.get(run_key)
    if found is None:
        _path_ids.clear()  # a new run (perhaps into another database): send every path again
        found = _path_ids[run_key] = PathIds(run_key)
    return found


def process_file(
    path: str, size: int, mtime_ns: int, value_limit: int = DEFAULT_VALUE_LIMIT,
    scratch_dir: str | None = None, run_key: str = "",
) -> Outcome:
    """Read, walk and flatten one file; never raises for a bad file.

    Element rows go to this process's scratch file in `scratch_dir` (SQLite index) or,
    when it is None, into COPY text (PostgreSQL index). `run_key` names the run: the
    definitions of new sequence paths are sent once per run.
    """
    # Imported here, not at the top: the walker brings in pydicom, which a re-run over an
    # unchanged archive (nothing to read) never needs, nor does the writer process.
    from .reader import read_file

    stored = stored_path(path)
    try:
        record = read_file(path, value_limit=value_limit)
    except DicomReadError as err:
        status = "not_dicom" if err.reason in ("not_dicom", "empty") else "error"
        return FailedFile(stored, size, mtime_ns, status, err.reason, err.detail)
    except (OSError, ValueError, MemoryError, RecursionError) as err:
        # Nothing the walker knows to expect, but one bad file must not end an overnight run.
        return FailedFile(stored, size, mtime_ns, "error", "walker_failure", f"{type(err).__name__}: {err}")
    record.path = stored
    return to_rows(record, mtime_ns, _path_ids_for(run_key), writer_for(scratch_dir) if scratch_dir else None)


Task = tuple[str, int, int, int, "str | None", str]  # path, size, mtime_ns, value_limit, scratch_dir, run_key


def process_chunk(tasks: list[Task]) -> list[Outcome]:
    """Pool entry point: a few files at once, to spread the cost of inter-process messages.

    Their element rows are committed to the scratch file before the outcomes go back."""
    outcomes = [process_file(*task) for task in tasks]
    if tasks and tasks[0][4]:
        writer_for(tasks[0][4]).commit()
    return outcomes


def looks_like_dicom_name(path: str) -> bool:
    """True for names that promise DICOM (so a non-DICOM file there is an error, not a skip)."""
    base = os.path.basename(path).lower()
    return base.endswith((".dcm", ".dicom", ".dic", ".ima")) or base == "dicomdir" or "." not in base
