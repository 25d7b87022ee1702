"""`indexer find`: the C-FIND / QIDO question over the index.

Filters are parsed into conditions on the hierarchy tables and tests of element rows;
one query over the smallest join tree that answers them gives the matching ids; the
rows to print are then looked up by primary keys and parent indexes only. `find`
returns the Patient IDs of what it matched, because that is the question it answers.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Text, and_, cast, func, literal, or_, select
from sqlalchemy.sql.elements import ColumnElement

from ..dictionary import keyword_tag, private_vr, public_keyword, public_vr
from ..errors import ReportError, UnknownTagError
from ..records import CUT
from ..schema import elements, files, instances, patients, series, studies
from ..tagkeys import parse as parse_tag_key
from .common import in_ids, lookup
from .filters import (
    RANGE_VRS,
    Filter,
    as_filters,
    date_range,
    is_numeric_test,
    number_condition,
    number_test,
    values_matcher,
)
from .hints import keyword_hint, modality_hint, number_range_hint, sop_class_hint, value_hints
from .missing import missing_files, present_counts
from .tags import find_tag_key, key_element_rows

LEVELS = ("studies", "series", "instances")

# Attributes answered from the hierarchy tables; anything else is looked up in the elements.
_COLUMNS: dict[str, tuple[Any, str]] = {
    "PatientID": (patients.c.patient_id, "text"),
    "IssuerOfPatientID": (patients.c.issuer, "text"),
    "PatientName": (patients.c.patient_name, "name"),
    "PatientBirthDate": (patients.c.birth_date, "range"),
    "PatientSex": (patients.c.sex, "text"),
    "StudyInstanceUID": (studies.c.study_uid, "uid"),
    "StudyDate": (studies.c.study_date, "range"),
    "StudyTime": (studies.c.study_time, "range"),
    "AccessionNumber": (studies.c.accession_number, "text"),
    "StudyID": (studies.c.study_id, "text"),
    "StudyDescription": (studies.c.description, "text"),
    "ReferringPhysicianName": (studies.c.referring_physician, "name"),
    "ModalitiesInStudy": (series.c.modality, "text"),
    "SeriesInstanceUID": (series.c.series_uid, "uid"),
    "SeriesNumber": (series.c.series_number, "number"),
    "SeriesDescription": (series.c.description, "text"),
    "BodyPartExamined": (series.c.body_part, "text"),
    "Manufacturer": (series.c.manufacturer, "text"),
    "ManufacturerModelName": (series.c.model, "text"),
    "SeriesDate": (series.c.series_date, "range"),
    "SOPInstanceUID": (instances.c.sop_instance_uid, "uid"),
    "SOPClassUID": (instances.c.sop_class_uid, "uid"),
    "InstanceNumber": (instances.c.instance_number, "number"),
    "ContentDate": (instances.c.content_date, "range"),
}
_RANGE_VRS = RANGE_VRS
# An IS value written as the hierarchy column stores it: `=` on it can use the indexed column.
_PLAIN_INTEGER = re.compile(r"(0|-?[1-9][0-9]*)\Z")
# Hierarchy attributes of the instance rows: matched without the series and studies rows.
_INSTANCE_ATTRIBUTES = ("SOPInstanceUID", "SOPClassUID", "InstanceNumber", "ContentDate")

Row = dict[str, Any]


def find(
    conn: Connection,
    level: str,
    filters: Sequence[Filter | tuple[str, str] | tuple[str, str, str]] = (),
    *,
    limit: int | None = None,
    include_missing: bool = False,
    hint: Callable[[str], None] | None = None,
) -> list[Row]:
    """The C-FIND / QIDO question over the index: studies, series or instances matching `filters`.

    `filters` (Filter, or (attribute, value) pairs meaning ``=``), all of which must match:
    a keyword, a tag or a sequence path (see tagkeys.parse) and a value with ``*``/``?``
    wildcards, a range ``FROM-TO`` for dates and times (either end may be left out), or a
    list of UIDs separated by ``\\`` or ``,``. Numeric VRs (DS IS US SS UL SL FL FD SV UV)
    compare as numbers: ``=`` (one number or several separated by ``\\``), ``!=``, ``<``,
    ``<=``, ``>``, ``>=`` and ``FROM-TO``; dates and times take ``>=`` and ``<=`` as open
    ranges; any other comparison raises ReportError. Hierarchy attributes (PatientID, StudyDate,
    Modality, AccessionNumber, ...) are matched on the hierarchy tables; any other tag
    on the element rows, at the given place in sequences; a multi-valued element
    matches when one of its values does. A study or series matches when one of its
    instances does.

    Returns one dict per study (study_instance_uid, patient_id, study_date, accession_number,
    study_description, modalities, series, instances), series (series_instance_uid,
    study_instance_uid, patient_id, modality, series_number, series_description,
    instances) or instance (sop_instance_uid, sop_class_uid, series_instance_uid,
    study_instance_uid, patient_id, modality, instance_number, path). Counts are the
    totals of the study or series, as QIDO returns them.

    Files marked missing (gone from disk at the last run over their folder) are left
    out, and out of the counts; `include_missing` keeps them. `hint` is called with one line
    for each filter that cannot match as typed (a DA with dashes, a reversed range, a comma
    list of codes, an unknown Modality or SOP class), before the query runs.
    """
    if level not in LEVELS:
        raise ReportError(f"unknown level {level!r}; choose one of: {', '.join(LEVELS)}")
    plan = _plan(conn, level, as_filters(filters))
    if hint is not None:
        for line in plan.hints:
            hint(line)
    matched = _element_matches(conn, plan.element_filters)
    if matched is not None and not matched:
        return []
    gone = set() if include_missing else missing_files(conn)
    hits = [
        r
        for r in conn.execute(_hits_query(plan))
        if (matched is None or r[0] in matched) and r[0] not in gone
    ]
    rows = _ROWS[level](conn, hits, gone)
    return rows[:limit] if limit else rows


# -- filters -> conditions ----------------------------------------------------------------------


@dataclass
class _Plan:
    """What the filters ask of the tables, and which tables the hit query must join."""

    conditions: list[ColumnElement[bool]] = field(default_factory=list)
    element_filters: list[tuple[Filter, Any, str | None]] = field(default_factory=list)
    hierarchy: bool = False  # the series and studies rows are needed
    on_instances: bool = False  # a condition or the answer needs the instance rows
    on_patients: bool = False  # a condition is on the patient rows
    hints: list[str] = field(default_factory=list)  # why a filter cannot match as typed


def _plan(conn: Connection, level: str, filters: Sequence[Filter]) -> _Plan:
    plan = _Plan(hierarchy=level != "instances", on_instances=level == "instances")
    for f in filters:
        key = f.key
        keyword = _top_level_keyword(key)
        tag = keyword_tag(keyword) if keyword.isidentifier() else None
        vr = public_vr(tag) if tag is not None else None
        numeric = is_numeric_test(f, vr)
        if numeric and f.op == "=" and _PLAIN_INTEGER.match(f.value.strip()):
            # SeriesNumber=3: the integer column holds the files' plain integers (rows.py).
            numeric = keyword not in _COLUMNS
        plan.hints.extend(_hints(conn, f, keyword, vr))
        if keyword == "Modality":
            column = instances.c.modality if level == "instances" else series.c.modality
            value = date_range(f, vr)
            plan.conditions.append(_match_column(conn, column, "text", value, key))
        elif keyword in _COLUMNS and not numeric:
            column, kind = _COLUMNS[keyword]
            value = date_range(f, vr)
            plan.hierarchy = plan.hierarchy or keyword not in _INSTANCE_ATTRIBUTES
            plan.on_instances = plan.on_instances or column.table is instances
            plan.on_patients = plan.on_patients or column.table is patients
            plan.conditions.append(_match_column(conn, column, kind, value, key))
        else:
            # Any other tag, and numbers compared as numbers (the element rows' `number`).
            row = _filter_key(conn, key)
            vr = _vr_of(row)
            if not is_numeric_test(f, vr):
                date_range(f, vr)  # refuses a comparison on text before any query runs
                if tag is None:
                    plan.hints.extend(value_hints(f, keyword, vr))
            else:
                test = number_test(f, vr or "")  # refuses a value that is not a number
                plan.hints.extend(number_range_hint(f, test.low, test.high))
            plan.element_filters.append((f, row, vr))
            plan.on_instances = True
    return plan


def _hints(conn: Connection, f: Filter, keyword: str, vr: str | None) -> list[str]:
    """Hints on a filter whose attribute the dictionary knows (see hints.py)."""
    if vr is None:
        return []
    if keyword in ("Modality", "ModalitiesInStudy"):
        held = lambda values: _held(conn, series.c.modality, values)  # noqa: E731
        return value_hints(f, keyword, vr) or modality_hint(f, held)
    if keyword == "SOPClassUID":
        return sop_class_hint(f, lambda uids: _held(conn, instances.c.sop_class_uid, uids))
    if is_numeric_test(f, vr):
        return []  # checked with the test itself
    return value_hints(f, keyword, vr)


def _held(conn: Connection, column: Any, values: list[str]) -> set[str]:
    """Which of `values` some row holds in `column`."""
    return {v for (v,) in conn.execute(select(column).where(column.in_(values)).distinct())}


def _vr_of(row: Any) -> str | None:
    """The dictionary VR of a tag_keys row (private tags: as their creator's dictionary has it)."""
    if row.private_creator:
        return private_vr(int(row.tag), row.private_creator)
    return public_vr(int(row.tag))


def _top_level_keyword(key: str) -> str:
    """The keyword of a top-level public tag however it was written, else `key` itself."""
    key = key.strip()
    if key.isidentifier():
        return key
    try:
        parsed = parse_tag_key(key)
    except ReportError:
        return key
    if "." in parsed or '"' in parsed:
        return key
    return public_keyword(int(parsed[1:5] + parsed[6:10], 16)) or key


def _wildcard(value: str) -> bool:
    return "*" in value or "?" in value


def _like_pattern(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


def _match_column(
    conn: Connection, column: Any, kind: str, value: str, key: str
) -> ColumnElement[bool]:
    if kind == "uid":
        uids = [u.strip() for u in re.split(r"[\\,]", value) if u.strip()]
        return column.in_(uids)  # type: ignore[no-any-return]
    if kind == "range" and "-" in value:
        return _match_range(column, value, key)
    if kind == "number":
        # An integer column: `=N` compares numbers, a wildcard the decimal text.
        if _wildcard(value):
            return _case_sensitive_like(conn, cast(column, Text), value)
        return column == int(value)  # type: ignore[no-any-return]
    if kind == "name":
        # Person names match without regard to case, as most archives do for C-FIND.
        return func.lower(column).like(_like_pattern(value.lower()), escape="\\")
    if _wildcard(value):
        return _case_sensitive_like(conn, column, value)
    if "\\" in value and kind == "text":
        # Several values of a single-valued attribute (Modality=CT\MR): any of them.
        return column.in_([v.strip() for v in value.split("\\") if v.strip()])  # type: ignore[no-any-return]
    return column == value  # type: ignore[no-any-return]


def _match_range(column: Any, value: str, key: str) -> ColumnElement[bool]:
    low, _, high = value.partition("-")
    conditions = []
    if low.strip():
        conditions.append(column >= low.strip())
    high = high.strip()
    if high.isdigit() and high.strip("9"):
        # As many characters as the end has: 2024 ends with the year, 1200 with 12:00:59.
        # Written `< the next number` so both databases can use an index on the column.
        conditions.append(column < str(int(high) + 1).zfill(len(high)))
    elif high:
        conditions.append(func.substr(column, 1, len(high)) <= high)
    if not conditions:
        raise ReportError(f"{key}={value}: give a start, an end or both, e.g. 20240101-20241231")
    return and_(column.is_not(None), column != "", *conditions)


def _case_sensitive_like(conn: Connection, column: Any, value: str) -> ColumnElement[bool]:
    """Dialect decision: a ``*``/``?`` pattern that respects case. SQLite's LIKE ignores case;
    its GLOB does not, like PostgreSQL's LIKE."""
    if conn.dialect.name == "sqlite":
        return column.op("GLOB")(re.sub(r"([\[\]])", r"[\1]", value))  # type: ignore[no-any-return]
    return column.like(_like_pattern(value), escape="\\")  # type: ignore[no-any-return]


# -- element filters -> matching files ----------------------------------------------------------


def _element_matches(
    conn: Connection, filters: Sequence[tuple[Filter, Any, str | None]]
) -> set[int] | None:
    """The file ids whose elements match every filter (None: no element filter). Stops at the
    first filter that leaves none."""
    matched: set[int] | None = None
    for f, row, vr in filters:
        hits = _element_hits(conn, f, row, vr)
        matched = hits if matched is None else matched & hits
        if not matched:
            return set()
    return matched


def _element_hits(conn: Connection, f: Filter, row: Any, vr: str | None) -> set[int]:
    if is_numeric_test(f, vr):
        return _number_hits(conn, f, row, vr or "")
    value = date_range(f, vr)
    test = _value_matcher(value, vr)
    where = []
    if not _wildcard(value) and not (vr in _RANGE_VRS and "-" in value):
        # A cheap pre-filter in SQL; the test below decides on each value of the element.
        where.append(
            or_(
                elements.c.value == value,
                elements.c.value.like(f"%{_like_pattern(value)}%", escape="\\"),
            )
        )
    rows = key_element_rows(conn, row.id, [elements.c.value], *where)
    return {f for f, v in rows if v is not None and test(v)}


def _number_hits(conn: Connection, f: Filter, row: Any, vr: str) -> set[int]:
    """Files whose element under `row` matches a numeric filter: single values by the `number`
    column the walker fills; multi-valued, cut or unparsable ones (number NULL) by their text,
    where any value matching is a match (for != : no value equals)."""
    test = number_test(f, vr)
    where = or_(number_condition(elements.c.number, test), elements.c.number.is_(None))
    rows = key_element_rows(
        conn, row.id, [elements.c.number, elements.c.value, elements.c.flags], where
    )
    by_text = values_matcher(test)
    return {
        file_id
        for file_id, number, value, flags in rows
        if number is not None or by_text(value, bool(flags & CUT))
    }


def _filter_key(conn: Connection, key: str) -> Any:
    try:
        return find_tag_key(conn, key)
    except UnknownTagError as err:
        raise UnknownTagError(f"filter {key}: {err}; nothing can match") from None
    except ReportError as err:
        raise ReportError(f"{err}{keyword_hint(key)}") from None


def _value_matcher(value: str, vr: str | None) -> Callable[[str], bool]:
    """A function telling whether a stored value (text, possibly multi-valued) matches `value`."""
    if vr in _RANGE_VRS and "-" in value and vr != "DT":
        low, _, high = (v.strip() for v in value.partition("-"))

        def in_range(text: str) -> bool:
            return any(
                part and (not low or part >= low) and (not high or part[: len(high)] <= high)
                for part in text.split("\\")
            )

        return in_range
    if _wildcard(value):
        pattern = re.compile(
            "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in value) + r"\Z",
            re.DOTALL,
        )
        return lambda text: any(pattern.match(part) for part in text.split("\\"))
    return lambda text: text == value or value in text.split("\\")


# -- the hit query ------------------------------------------------------------------------------


def _hits_query(plan: _Plan) -> Any:
    """(file_id or NULL, series id, study id) of every match of the hierarchy conditions."""
    file_id = instances.c.file_id if plan.on_instances else literal(None)
    return (
        select(file_id, series.c.id, studies.c.id)
        .select_from(_join_tree(plan))
        .where(*plan.conditions)
    )


def _join_tree(plan: _Plan) -> Any:
    if not plan.hierarchy:
        return (
            instances.outerjoin(series, series.c.id == instances.c.series_ref)
            .outerjoin(studies, studies.c.id == series.c.study_ref)
            .outerjoin(patients, patients.c.id == studies.c.patient_ref)
        )
    # Inner joins let both databases start from the most selective table (e.g. study_date).
    # Studies or series asked by their own (or their patient's) attributes leave out the
    # instance rows, many times more: every series row has instances (empty ones are deleted).
    tree = series.join(studies, studies.c.id == series.c.study_ref)
    if plan.on_instances:
        tree = instances.join(series, series.c.id == instances.c.series_ref).join(
            studies, studies.c.id == series.c.study_ref
        )
    if plan.on_patients:
        tree = tree.join(patients, patients.c.id == studies.c.patient_ref)
    return tree


# -- hits -> result rows ------------------------------------------------------------------------
# By primary keys and the parent indexes only: plans that stay fast on both databases however
# many studies matched.


def _patient_ids(
    conn: Connection, studies_of: dict[Any, tuple[Any, ...]]
) -> dict[Any, tuple[Any, ...]]:
    """{patient row id: (PatientID,)} for `studies_of` ({id: (uid, patient_ref, ...)})."""
    return lookup(
        conn, patients, patients.c.id, {r[1] for r in studies_of.values()}, patients.c.patient_id
    )


def _instance_rows(conn: Connection, hits: Sequence[Any], gone: set[int]) -> list[Row]:
    file_ids = sorted(r[0] for r in hits)
    found = lookup(
        conn,
        instances,
        instances.c.file_id,
        file_ids,
        instances.c.sop_instance_uid,
        instances.c.sop_class_uid,
        instances.c.series_ref,
        instances.c.modality,
        instances.c.instance_number,
    )
    paths_of = lookup(conn, files, files.c.id, file_ids, files.c.path)
    series_of = lookup(
        conn,
        series,
        series.c.id,
        {r[2] for r in found.values() if r[2] is not None},
        series.c.series_uid,
        series.c.study_ref,
    )
    studies_of = lookup(
        conn,
        studies,
        studies.c.id,
        {r[1] for r in series_of.values()},
        studies.c.study_uid,
        studies.c.patient_ref,
    )
    patients_of = _patient_ids(conn, studies_of)
    rows = []
    for file_id in file_ids:
        uid, sop_class, series_ref, modality, number = found[file_id]
        series_uid, study_ref = series_of.get(series_ref, (None, None))
        study_uid, patient_ref = studies_of.get(study_ref, (None, None))
        rows.append(
            {
                "sop_instance_uid": uid,
                "sop_class_uid": sop_class,
                "series_instance_uid": series_uid,
                "study_instance_uid": study_uid,
                "patient_id": patients_of.get(patient_ref, (None,))[0],
                "modality": modality,
                "instance_number": number,
                "path": paths_of[file_id][0],
            }
        )
    rows.sort(
        key=lambda r: (
            r["study_instance_uid"] or "",
            r["series_instance_uid"] or "",
            _number(r["instance_number"]),
            r["path"],
        )
    )
    return rows


def _series_rows(conn: Connection, hits: Sequence[Any], gone: set[int]) -> list[Row]:
    series_ids = sorted({r[1] for r in hits if r[1] is not None})
    counts = present_counts(conn, series_ids, gone)
    series_ids = [sid for sid in series_ids if sid in counts]
    series_of = lookup(
        conn,
        series,
        series.c.id,
        series_ids,
        series.c.series_uid,
        series.c.study_ref,
        series.c.modality,
        series.c.series_number,
        series.c.description,
    )
    studies_of = lookup(
        conn,
        studies,
        studies.c.id,
        {r[1] for r in series_of.values()},
        studies.c.study_uid,
        studies.c.patient_ref,
    )
    patients_of = _patient_ids(conn, studies_of)
    rows = []
    for sid in series_ids:
        uid, study_ref, modality, number, description = series_of[sid]
        study_uid, patient_ref = studies_of[study_ref]
        rows.append(
            {
                "series_instance_uid": uid,
                "study_instance_uid": study_uid,
                "patient_id": patients_of[patient_ref][0],
                "modality": modality,
                "series_number": number,
                "series_description": description,
                "instances": counts.get(sid, 0),
            }
        )
    rows.sort(
        key=lambda r: (
            r["study_instance_uid"],
            _number(r["series_number"]),
            r["series_instance_uid"],
        )
    )
    return rows


def _study_rows(conn: Connection, hits: Sequence[Any], gone: set[int]) -> list[Row]:
    study_ids = sorted({r[2] for r in hits if r[2] is not None})
    series_in = _series_of_studies(conn, study_ids)
    counts = present_counts(
        conn, [sid for members in series_in.values() for sid, _ in members], gone
    )
    if gone:
        series_in = {
            study: kept
            for study, members in series_in.items()
            if (kept := [m for m in members if m[0] in counts])
        }
        study_ids = [study for study in study_ids if study in series_in]
    studies_of = lookup(
        conn,
        studies,
        studies.c.id,
        study_ids,
        studies.c.study_uid,
        studies.c.patient_ref,
        studies.c.study_date,
        studies.c.accession_number,
        studies.c.description,
    )
    patients_of = _patient_ids(conn, studies_of)
    rows = []
    for study_id in study_ids:
        uid, patient_ref, study_date, accession, description = studies_of[study_id]
        members = series_in.get(study_id, [])
        rows.append(
            {
                "study_instance_uid": uid,
                "patient_id": patients_of[patient_ref][0],
                "study_date": study_date,
                "accession_number": accession,
                "study_description": description,
                "modalities": sorted({m for _, m in members if m}),
                "series": len(members),
                "instances": sum(counts.get(sid, 0) for sid, _ in members),
            }
        )
    rows.sort(key=lambda r: (r["study_date"] or "", r["study_instance_uid"]))
    return rows


def _series_of_studies(
    conn: Connection, study_ids: Sequence[int]
) -> dict[int, list[tuple[int, str | None]]]:
    """{study id: [(series id, modality), ...]}."""
    series_in: dict[int, list[tuple[int, str | None]]] = defaultdict(list)
    for where in in_ids(conn, series.c.study_ref, study_ids):
        for sid, study_ref, modality in conn.execute(
            select(series.c.id, series.c.study_ref, series.c.modality).where(where)
        ):
            series_in[study_ref].append((sid, modality))
    return series_in


_ROWS: dict[str, Callable[[Connection, Sequence[Any], set[int]], list[Row]]] = {
    "instances": _instance_rows,
    "series": _series_rows,
    "studies": _study_rows,
}


def _number(number: int | None) -> tuple[int, int]:
    # Series and instance numbers are integers or NULL (rows.py): NULL sorts last.
    return (0, number) if number is not None else (1, 0)
