"""`indexer export csv`: a flat table of chosen fields, one row per instance (or study, series).

The rows are find()'s with the chosen fields (fields.py); the file loads into pandas with
``pd.read_csv(FILE)``: a header line always, several values joined by ``\\``, absent values
empty. The file holds patient data as soon as a field does: it is created mode 0600.
"""

from __future__ import annotations

import codecs
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Connection

from ..errors import ReportError
from ..output import render_csv
from .fields import default_fields
from .filters import Filter
from .find import find


def export_table(
    conn: Connection,
    *,
    level: str = "instances",
    filters: Sequence[Filter | tuple[str, str] | tuple[str, str, str]] = (),
    fields: Sequence[str] | None = None,
    sort: str | None = None,
    descending: bool = False,
    include_missing: bool = False,
    hint: Callable[[str], None] | None = None,
) -> str:
    """The CSV text of find(conn, level, filters) with `fields` (default: fields.default_fields),
    header included. Raises ReportError as find() does."""
    rows = find(
        conn,
        level,
        filters,
        fields=list(fields) if fields else default_fields(level),
        sort=sort,
        descending=descending,
        include_missing=include_missing,
        hint=hint,
    )
    columns = list(rows[0]) if rows else _names(conn, level, fields)
    return render_csv(columns, [[_cell(v) for v in r.values()] for r in rows])


def _names(conn: Connection, level: str, fields: Sequence[str] | None) -> list[str]:
    from .fields import resolve_fields

    return [f.name for f in resolve_fields(conn, level, fields or default_fields(level))]


def _cell(value: Any) -> Any:
    if isinstance(value, list):
        return "\\".join(str(v) for v in value)  # the DICOM way of writing several values
    return value


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path`, readable by its owner only (mode 0600, also when it existed).
    An existing file is replaced only when it is text, so that a slip (`export csv index.db`,
    `export csv scan.dcm`) cannot destroy data. ReportError, naming the path, when it cannot
    be written or is not a text file."""
    _refuse_to_replace_data(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8", newline="", closefd=False) as out:
                out.write(text)
        finally:
            os.close(fd)
    except OSError as err:
        raise ReportError(f"cannot write {path}: {err.strerror or err}") from None


_TEXT_HEAD = 4096  # bytes read of an existing file to tell text (a CSV) from data


def _refuse_to_replace_data(path: Path) -> None:
    if not path.is_file():
        return  # nothing to protect (a FIFO or /dev/stdout is written to, never read)
    try:
        with open(path, "rb") as fh:
            head = fh.read(_TEXT_HEAD)
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        return  # nothing to protect, or the write says why it cannot
    except OSError as err:
        raise ReportError(f"cannot write {path}: {err.strerror or err}") from None
    try:  # incremental: a character cut at the end of the head is not an error
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
        is_text = b"\0" not in head
    except UnicodeDecodeError:
        is_text = False
    if not is_text:  # an SQLite index, a DICOM file, Parquet: all hold NUL or non-UTF-8 bytes
        raise ReportError(f"{path} exists and is not a text file: not replaced")
