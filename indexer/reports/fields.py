"""Chosen output fields of `find` and `export` (QIDO's includefield), and sorting by one.

A field is a column of the level's rows (find.COLUMNS: `path`, `instances`, ...) or any
DICOM attribute: a keyword, a tag (``(0018,0050)``, ``00180050``) or a tag key, nested ones
too (``ReferencedSeriesSequence.SeriesInstanceUID``). An attribute's value is the
instance's own element value; for a study or series, the distinct values of its instances.
Fields are named in snake_case (``SliceThickness`` -> ``slice_thickness``); a keyword always
gives the element values, also where its name is a column's (``PatientID`` -> ``patient_id``,
the instance's own, where the column ``patient_id`` is its study's patient).
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, func, select

from ..dictionary import public_keyword
from ..errors import ReportError, UnknownTagError
from ..output import machine_key
from ..schema import elements, instances, series
from ..tagkeys import parse as parse_tag_key
from .common import in_ids
from .filters import NUMERIC_VRS
from .hints import keyword_hint
from .tags import find_tag_key, is_patient_key

# The DICOM attribute of each column of find's rows that holds one: the default columns leave
# out those `tags` hides as patient data (is_patient_key), shown only when asked for by name.
_COLUMN_TAGS = {
    "patient_id": 0x00100020,
    "accession_number": 0x00080050,
    "study_date": 0x00080020,
    "study_description": 0x00081030,
    "series_description": 0x0008103E,
    "modality": 0x00080060,
}
_INTEGER_VRS = frozenset(("IS", "US", "SS", "UL", "SL", "SV", "UV"))
# Field values of at most this share of the instances are read by primary key (see find._FEW).
_FEW = 0.25
# The dots between levels of a keyword path, not those inside a quoted private creator
# ("AGFA PACS Archive Mirroring 1.0", "Mortara Instrument, Inc.").
_LEVELS = re.compile(r'\.(?=(?:[^"]*"[^"]*")*[^"]*\Z)')
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


@dataclass(frozen=True)
class Field:
    """One output field: `name` (its key), and either a `column` of find's rows or the tag
    key row `key` of an attribute (None: no file holds it, every value is absent)."""

    name: str
    column: str | None = None
    key: Any = None


def default_fields(level: str) -> list[str]:
    """The columns `find` prints when no --fields is given: COLUMNS without patient data."""
    from .find import COLUMNS

    return [c for c in COLUMNS[level] if not _is_patient_column(c)]


def _is_patient_column(column: str) -> bool:
    tag = _COLUMN_TAGS.get(column)
    return tag is not None and is_patient_key(tag)


def split_fields(text: str) -> list[str]:
    """``PatientID,(0018,0050),path`` -> its names (no split inside ``(...)`` or quotes)."""
    names: list[str] = []
    current: list[str] = []
    depth, quoted = 0, False
    for c in text:
        if c == '"':
            quoted = not quoted
        elif not quoted and c in "()":
            depth += 1 if c == "(" else -1
        elif c == "," and depth <= 0 and not quoted:
            names.append("".join(current).strip())
            current = []
            continue
        current.append(c)
    names.append("".join(current).strip())
    return [n for n in names if n]


def resolve_fields(conn: Connection, level: str, names: Iterable[str]) -> list[Field]:
    """The Fields of `names` at `level`; ReportError for a name that is neither a column of the
    level nor a DICOM attribute (with a did-you-mean for a keyword typo), or named twice."""
    from .find import COLUMNS

    names = list(names)
    if not names:
        raise ReportError(f"no field given; e.g. --fields {','.join(default_fields(level))}")
    resolved: list[Field] = []
    for name in names:
        name = name.strip()
        if name in COLUMNS[level]:
            resolved.append(Field(name, column=name))
            continue
        try:
            key = parse_tag_key(name)
        except ReportError:
            raise ReportError(
                f"field {name!r} is neither a column of {level} ({', '.join(COLUMNS[level])}) "
                f"nor a DICOM keyword or tag{keyword_hint(name)}"
            ) from None
        try:
            row = find_tag_key(conn, name)
        except UnknownTagError:
            row = None  # a valid attribute no file holds: an empty column, not an error
        resolved.append(Field(_field_name(row.keywords if row is not None else key), key=row))
    names_seen = [f.name for f in resolved]
    twice = sorted({n for n in names_seen if names_seen.count(n) > 1})
    if twice:
        raise ReportError(f"fields name the same column twice: {', '.join(twice)}")
    return resolved


def _field_name(keywords: str) -> str:
    """snake_case of a keyword path: ``ReferencedSeriesSequence.SeriesInstanceUID`` ->
    ``referenced_series_sequence.series_instance_uid``; tags without keyword as their key."""
    parts = []
    for part in _LEVELS.split(keywords):
        hexed = re.fullmatch(r"\(([0-9A-F]{4}),([0-9A-F]{4})\)", part)
        if hexed:
            part = public_keyword(int(hexed[1] + hexed[2], 16)) or part
        parts.append(_CAMEL.sub("_", part).lower() if part.isidentifier() else machine_key(part))
    return ".".join(parts)


def add_field_values(
    conn: Connection,
    level: str,
    rows: list[dict[str, Any]],
    fields: Sequence[Field],
    gone: set[int],
) -> None:
    """Set each attribute field of `rows` (find's rows, with their `_id`) to its value: the
    instance's own, or for a study or series the distinct values of its present instances
    (one value as itself, several joined by ``\\``, in order); numbers of numeric VRs as numbers."""
    wanted = [f for f in fields if f.column is None]
    if not wanted or not rows:
        return
    members = _instances_of(conn, level, [r["_id"] for r in rows], gone)
    file_ids = {file_id for ids in members.values() for file_id in ids}
    for f in wanted:
        values = {} if f.key is None else _own_values(conn, f.key.id, file_ids)
        for r in rows:
            found = [values[i] for i in members.get(r["_id"], ()) if values.get(i) is not None]
            r[f.name] = _combined(found)


def _instances_of(
    conn: Connection, level: str, ids: Sequence[int], gone: set[int]
) -> dict[int, list[int]]:
    """{row id: file ids of its present instances}."""
    if level == "instances":
        return {i: [i] for i in ids}
    parent = series.c.id if level == "series" else series.c.study_ref
    members: dict[int, list[int]] = defaultdict(list)
    for where in in_ids(conn, parent, ids):
        query = (
            select(parent, instances.c.file_id)
            .join_from(instances, series, series.c.id == instances.c.series_ref)
            .where(where)
        )
        for row_id, file_id in conn.execute(query):
            if file_id not in gone:
                members[row_id].append(file_id)
    return members


def _own_values(conn: Connection, key_id: int, file_ids: set[int]) -> dict[int, Any]:
    """{file id: its value of the key} (several element rows, in file order, joined by ``\\``)."""
    from .find import key_rows_of

    total = conn.execute(select(func.count()).select_from(instances)).scalar_one()
    within = file_ids if len(file_ids) <= _FEW * total else None
    columns = [elements.c.ordinal, elements.c.vr, elements.c.value, elements.c.number]
    found: dict[int, list[tuple[int, Any]]] = defaultdict(list)
    for file_id, ordinal, vr, value, number in key_rows_of(conn, key_id, columns, [], within):
        if file_id in file_ids and value:  # an empty value (type 2: unknown) is absent
            found[file_id].append((ordinal, _typed(vr, value, number)))
    return {
        file_id: _combined([v for _, v in sorted(values, key=lambda x: x[0])], distinct=False)
        for file_id, values in found.items()
    }


def _typed(vr: str, value: str, number: float | None) -> Any:
    """A single number of a numeric VR as a number (an int for the integer VRs), else the text."""
    if vr not in NUMERIC_VRS or number is None:
        return value
    return int(number) if vr in _INTEGER_VRS and number.is_integer() else number


def _combined(values: list[Any], distinct: bool = True) -> Any:
    if distinct:
        values = sorted(set(values), key=sort_key)
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return "\\".join(str(v) for v in values)


def sort_key(value: Any) -> tuple[int, float, str]:
    """Numbers (and text that reads as one) before other text, by value; absent values last."""
    if value is None:
        return (2, 0.0, "")
    if isinstance(value, list):
        value = "\\".join(str(v) for v in value)
    if isinstance(value, bool):
        return (1, 0.0, str(value))
    try:
        number = float(value)
    except (TypeError, ValueError):
        return (1, 0.0, str(value))
    # NaN is not ordered (every comparison is false: one such value unsorted the whole list),
    # and "Infinity" is a word in a description: both sort as text.
    return (0, number, "") if math.isfinite(number) else (1, 0.0, str(value))


def sort_rows(rows: list[dict[str, Any]], name: str, descending: bool) -> list[dict[str, Any]]:
    """`rows` ordered by the field `name` (stable: ties keep their order); absent values last
    either way."""
    present = [r for r in rows if r.get(name) is not None]
    absent = [r for r in rows if r.get(name) is None]
    present.sort(key=lambda r: sort_key(r[name]), reverse=descending)
    return present + absent
