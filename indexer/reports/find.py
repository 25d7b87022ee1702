"""`indexer find`: the C-FIND / QIDO question over the index.

Each instance is matched on its own values. Filters on the fast keys become conditions on
the instance rows (OWN_COLUMNS) and the hierarchy UIDs (KEY_COLUMNS); any other filter tests
element rows, of the files the conditions left when they are few. The rows to print are then
looked up by primary keys and parent indexes only; fields.py adds chosen fields and sorts.
`find` returns the Patient IDs of what it matched, because that is the question it answers
(the CLI prints them only when asked for).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, LargeBinary, and_, cast, func, literal, or_, select, union
from sqlalchemy.sql.elements import ColumnElement

from ..dictionary import keyword_tag, private_vr, public_keyword, public_vm, public_vr
from ..errors import ReportError, UnknownTagError
from ..records import CUT
from ..schema import (
    CONFLICTS,
    elements,
    files,
    instances,
    patients,
    series,
    studies,
    tag_usage,
    tag_values,
)
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

# The keys of the rows find() returns per level (also the CSV header when nothing matched).
COLUMNS: dict[str, tuple[str, ...]] = {
    "studies": (
        "study_instance_uid", "patient_id", "study_date", "accession_number",
        "study_description", "modalities", "series", "instances",
    ),
    "series": (
        "series_instance_uid", "study_instance_uid", "patient_id", "modality",
        "series_number", "series_description", "instances",
    ),
    "instances": (
        "sop_instance_uid", "sop_class_uid", "series_instance_uid", "study_instance_uid",
        "patient_id", "modality", "instance_number", "path",
    ),
}  # fmt: skip

# Fast keys: columns of the instance rows that hold the instance's own top-level value, as
# its element row does (read whole, padding stripped). The series, study and patient rows
# keep the smallest value any file ever gave, so they would miss an edited file or one
# outside the hierarchy: every other attribute is matched on the element rows.
OWN_COLUMNS: dict[str, tuple[Any, str]] = {
    "SOPInstanceUID": (instances.c.sop_instance_uid, "uid"),
    "SOPClassUID": (instances.c.sop_class_uid, "uid"),
    "Modality": (instances.c.modality, "text"),
    "ModalitiesInStudy": (instances.c.modality, "text"),  # QIDO: a study holding that modality
    "ContentDate": (instances.c.content_date, "range"),
    "StudyDate": (instances.c.study_date, "range"),
    "Manufacturer": (instances.c.manufacturer, "text"),
    "ManufacturerModelName": (instances.c.model, "text"),
}
# The UIDs that place an instance in the hierarchy: the series row of an instance is the one of
# its own SeriesInstanceUID, and its series' study that of its own StudyInstanceUID unless the
# writer flagged a hierarchy problem. Instances for which that does not hold (the second
# column) are matched on their element rows. Studies and series are matched by their own UID.
KEY_COLUMNS: dict[str, tuple[Any, ColumnElement[bool]]] = {
    "StudyInstanceUID": (studies.c.study_uid, instances.c.hierarchy_problem.is_not(None)),
    "SeriesInstanceUID": (series.c.series_uid, instances.c.series_ref.is_(None)),
}
# Element-row keys whose study-level column narrows the files to read. Where the study's
# conflict bit for it (schema.CONFLICTS) is clear, every file of the study that holds a
# non-empty value holds the row's value: two different ones set the bit. So the instances of
# studies whose row matches, or whose bit is set, or that are outside the hierarchy or
# flagged, include every instance whose own value matches a filter that cannot match an
# empty value; their element rows then decide (read by primary key when they are few).
NARROWING_COLUMNS: dict[str, tuple[Any, str]] = {
    "PatientID": (patients.c.patient_id, "patient"),
    "AccessionNumber": (studies.c.accession_number, "accession_number"),
}
_RANGE_VRS = RANGE_VRS
# Element filters on at most this share of the instances read those files' rows by primary key
# instead of all the rows of the tag (through the path index, or the whole table).
_FEW = 0.25
# Element filters matched at most this many instances: their hierarchy rows are read by id.
_HITS_BY_ID = 20_000
# Several UIDs or values given: the SQL pre-filter on the element rows is left out above this.
_PREFILTER_VALUES = 20

Row = dict[str, Any]


@dataclass
class Page:
    """The rows of one page of matches, and how many matches there are in all."""

    rows: list[Row]
    total: int


def find(
    conn: Connection,
    level: str,
    filters: Sequence[Filter | tuple[str, str] | tuple[str, str, str]] = (),
    *,
    limit: int | None = None,
    include_missing: bool = False,
    hint: Callable[[str], None] | None = None,
    fields: Sequence[str] | None = None,
    sort: str | None = None,
    descending: bool = False,
) -> list[Row]:
    """The C-FIND / QIDO question over the index: studies, series or instances matching `filters`.

    `filters` (Filter, or (attribute, value) pairs meaning ``=``), all of which must match:
    a keyword, a tag or a sequence path (see tagkeys.parse) and a value with ``*``/``?``
    wildcards, a range ``FROM-TO`` for dates and times (either end may be left out), or a
    list of UIDs separated by ``\\`` or ``,``. Numeric VRs (DS IS US SS UL SL FL FD SV UV)
    compare as numbers: ``=`` (one number or several separated by ``\\``), ``!=``, ``<``,
    ``<=``, ``>``, ``>=`` and ``FROM-TO``; dates and times take ``>=`` and ``<=`` as open
    ranges; any other comparison raises ReportError. Each instance is matched on its own
    values: the instance columns of OWN_COLUMNS and the UIDs of KEY_COLUMNS (indexed, fast),
    any other tag on its element rows, at the given place in sequences; a multi-valued
    element matches when one of its values does. A study or series matches when one of its
    instances does (its own StudyInstanceUID / SeriesInstanceUID: the study's or series').

    Returns one dict per study (study_instance_uid, patient_id, study_date, accession_number,
    study_description, modalities, series, instances), series (series_instance_uid,
    study_instance_uid, patient_id, modality, series_number, series_description,
    instances) or instance (sop_instance_uid, sop_class_uid, series_instance_uid,
    study_instance_uid, patient_id, modality, instance_number, path): COLUMNS[level].
    Counts are the totals of the study or series, as QIDO returns them. With `fields`
    (names of COLUMNS[level], keywords, tags or tag keys, see fields.resolve_fields) each
    dict has exactly those keys instead. `sort` orders by one such field (numbers as
    numbers, absent values last; `descending` reverses), before `limit` keeps the first N.

    Files marked missing (gone from disk at the last run over their folder) are left
    out, and out of the counts; `include_missing` keeps them. `hint` is called with one line
    for each filter that cannot match as typed (a DA with dashes, a reversed range, a comma
    list of codes, an unknown Modality or SOP class), before the query runs.
    """
    return find_page(
        conn,
        level,
        filters,
        limit=limit,
        include_missing=include_missing,
        hint=hint,
        fields=fields,
        sort=sort,
        descending=descending,
    ).rows


def find_page(
    conn: Connection,
    level: str,
    filters: Sequence[Filter | tuple[str, str] | tuple[str, str, str]] = (),
    *,
    offset: int = 0,
    limit: int | None = None,
    include_missing: bool = False,
    hint: Callable[[str], None] | None = None,
    fields: Sequence[str] | None = None,
    sort: str | None = None,
    descending: bool = False,
) -> Page:
    """find()'s rows from `offset` on (at most `limit` of them, None: all), and the number of
    matches in all (QIDO's paging). Rows are made for the page only where the order allows."""
    from .fields import add_field_values, resolve_fields, sort_rows

    if level not in LEVELS:
        raise ReportError(f"unknown level {level!r}; choose one of: {', '.join(LEVELS)}")
    plan = _plan(conn, level, as_filters(filters))
    chosen = resolve_fields(conn, level, fields) if fields is not None else None
    order = resolve_fields(conn, level, [sort])[0] if sort is not None else None
    if hint is not None:
        for line in plan.hints:
            hint(line)
    gone = set() if include_missing else missing_files(conn)
    # Studies or series matched on instance columns alone, none missing: one row per series.
    plan.per_series = level != "instances" and not plan.element_filters and not gone
    plan.summaries_apply = not include_missing  # the summaries leave missing files out
    found = [] if plan.impossible else _matching_instances(conn, plan)
    hits = [r for r in found if r[0] not in gone]
    total = len(hits) if level == "instances" else None
    if limit and order is None and level == "instances":
        hits = _first_instances(conn, hits, offset + limit)
    rows = _ROWS[level](conn, hits, gone)
    wanted = [*(chosen or []), *([order] if order is not None else [])]
    add_field_values(conn, level, rows, wanted, gone)
    if order is not None:
        rows = sort_rows(rows, order.name, descending)
    if total is None:
        total = len(rows)
    rows = rows[offset : offset + limit] if limit else rows[offset:]
    keys = [f.name for f in chosen] if chosen is not None else list(COLUMNS[level])
    return Page([{k: r.get(k) for k in keys} for r in rows], total)


def _first_instances(conn: Connection, hits: Sequence[Any], count: int) -> list[Any]:
    """The hits of the first series (in the order of _instance_rows: study UID, series UID)
    that hold the first `count` instances: rows are then made for those alone, not for every
    match of a broad search asked for ten."""
    if len(hits) <= count:
        return list(hits)
    series_of = lookup(
        conn, series, series.c.id, {h[1] for h in hits if h[1] is not None}, series.c.series_uid
    )
    studies_of = lookup(
        conn, studies, studies.c.id, {h[2] for h in hits if h[2] is not None}, studies.c.study_uid
    )

    def place(hit: Any) -> tuple[str, str]:
        # Outside the hierarchy (no series): no UIDs, first, as _instance_rows sorts them.
        return (
            studies_of[hit[2]][0] if hit[2] is not None else "",
            series_of[hit[1]][0] if hit[1] is not None else "",
        )

    groups: dict[tuple[str, str], list[Any]] = defaultdict(list)
    for hit in hits:
        groups[place(hit)].append(hit)
    kept: list[Any] = []
    for key in sorted(groups):
        if len(kept) >= count:
            break
        kept += groups[key]
    return kept


# -- filters -> conditions ----------------------------------------------------------------------


@dataclass
class _Checked:
    """A filter on a hierarchy UID: `condition` on the hierarchy rows decides for the instances
    where `untrusted` is false, the element rows of `key` (a tag_keys row) for the others."""

    filter: Filter
    condition: ColumnElement[bool]
    untrusted: ColumnElement[bool]
    key: Any
    vr: str | None


@dataclass
class _Plan:
    """What the filters ask of the tables, and which tables the hit query must join."""

    conditions: list[ColumnElement[bool]] = field(default_factory=list)
    checked: list[_Checked] = field(default_factory=list)
    element_filters: list[tuple[Filter, Any, str | None]] = field(default_factory=list)
    hierarchy: bool = False  # the series and studies rows are needed
    on_instances: bool = False  # a condition or the answer needs the instance rows
    hints: list[str] = field(default_factory=list)  # why a filter cannot match as typed
    impossible: bool = False  # a filter names an attribute no file holds
    per_series: bool = False  # the hits need no file ids: distinct series suffice
    summaries_apply: bool = False  # tag_values holds every value of the files asked about


def _plan(conn: Connection, level: str, filters: Sequence[Filter]) -> _Plan:
    plan = _Plan(hierarchy=level != "instances", on_instances=level == "instances")
    for f in filters:
        key = f.key
        keyword = _top_level_keyword(key)
        tag = keyword_tag(keyword) if keyword.isidentifier() else None
        vr = public_vr(tag) if tag is not None else None
        numeric = is_numeric_test(f, vr)
        typed_hints = _hints(conn, f, keyword, vr)
        plan.hints.extend(typed_hints)
        if keyword in OWN_COLUMNS and not numeric:
            column, kind = OWN_COLUMNS[keyword]
            value = date_range(f, vr)
            plan.conditions.append(_match_column(conn, column, kind, value, key))
            plan.on_instances = True
        elif keyword in KEY_COLUMNS:
            column, untrusted = KEY_COLUMNS[keyword]
            condition = _match_column(conn, column, "uid", date_range(f, vr), key)
            if level == "instances":
                plan.checked.append(_Checked(f, condition, untrusted, _known_key(conn, key), vr))
            else:
                plan.conditions.append(condition)
        else:
            # Any other tag, and numbers compared as numbers (the element rows' `number`).
            row = _known_key(conn, key) if tag is not None else _filter_key(conn, key)
            if row is None:  # a dictionary keyword no file holds: checked, then no match
                number_test(f, vr or "") if numeric else date_range(f, vr)
                if not typed_hints:
                    plan.hints.append(f"{key}: no file in the index holds {keyword}")
                plan.impossible = True
                continue
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
            if keyword in NARROWING_COLUMNS and not is_numeric_test(f, vr):
                narrowing = _narrowing(conn, keyword, f.value, key)
                if narrowing is not None:
                    plan.conditions.append(narrowing)
    return plan


def _narrowing(conn: Connection, keyword: str, value: str, key: str) -> Any:
    """The superset of NARROWING_COLUMNS as a condition on the hit query's rows, None when the
    filter could match an empty value (the study row says nothing of those files)."""
    wanted = [v.strip() for v in value.split("\\")] if "\\" in value else [value.strip()]
    if any(not w.replace("*", "") for w in wanted):
        return None
    column, name = NARROWING_COLUMNS[keyword]
    bit = 1 << CONFLICTS["studies"].index(name)
    suspect = or_(
        _match_column(conn, column, "text", value, key),
        column.like("%\\\\%", escape="\\"),  # a multi-valued one: matched on its parts
        studies.c.conflicts.op("&")(bit) != 0,
    )
    rows: Any = studies  # the patients rows are joined for PatientID only
    if column.table is patients:
        rows = studies.join(patients, patients.c.id == studies.c.patient_ref)
    study_ids = select(studies.c.id).select_from(rows).where(suspect)
    # A union of three indexed lookups: an OR across the joined tables would read every
    # instance row.
    file_ids = union(
        select(instances.c.file_id).where(instances.c.series_ref.is_(None)),
        select(instances.c.file_id).where(instances.c.hierarchy_problem.is_not(None)),
        select(instances.c.file_id)
        .join(series, series.c.id == instances.c.series_ref)
        .where(series.c.study_ref.in_(study_ids)),
    )
    return instances.c.file_id.in_(file_ids)


def _known_key(conn: Connection, key: str) -> Any:
    """The tag_keys row of `key`, None when no file holds it (then no element row can match)."""
    try:
        return find_tag_key(conn, key)
    except UnknownTagError:
        return None


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


def _vm_of(row: Any) -> str | None:
    return None if row.private_creator else public_vm(int(row.tag))


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
        return column.in_(_uids(value))  # type: ignore[no-any-return]
    if kind == "range" and "-" in value:
        return _match_range(column, value, key)
    if _wildcard(value):
        return _case_sensitive_like(conn, column, value)
    if "\\" in value and kind == "text":
        # Several values of a single-valued attribute (Modality=CT\MR): any of them.
        return column.in_([v.strip() for v in value.split("\\") if v.strip()])  # type: ignore[no-any-return]
    return column == value  # type: ignore[no-any-return]


def _uids(value: str) -> list[str]:
    return [u.strip() for u in re.split(r"[\\,]", value) if u.strip()]


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


def _matching_instances(conn: Connection, plan: _Plan) -> list[Any]:
    """(file_id or None, series id, study id) of every instance (or series) that matches.

    The conditions on indexed columns run first; element filters then read only the rows of
    the files those left when they are few (by primary key), else all the rows of their tags."""
    if plan.element_filters and not plan.conditions and not plan.checked:
        # Element filters alone: their (few) matches first, then the hierarchy of those only.
        matched = _element_matches(conn, plan.element_filters, None, plan.summaries_apply)
        if len(matched) <= _HITS_BY_ID:
            return [
                hit
                for chunk in in_ids(conn, instances.c.file_id, matched)
                for hit in conn.execute(_hits_query(plan, [chunk]))
            ]
        every = conn.execute(_hits_query(plan, [])).all()
        return [h for h in every if h[0] in matched]
    trusted = [and_(~c.untrusted, c.condition) for c in plan.checked]
    hits: list[Any] = list(conn.execute(_hits_query(plan, [*plan.conditions, *trusted])).all())
    if plan.checked:
        hits += _checked_on_elements(conn, plan)
    if plan.element_filters:
        narrowed = bool(plan.conditions or plan.checked)
        matched = _element_matches(
            conn,
            plan.element_filters,
            {h[0] for h in hits} if narrowed else None,
            plan.summaries_apply,
        )
        hits = [h for h in hits if h[0] in matched]
    return hits


def _checked_on_elements(conn: Connection, plan: _Plan) -> list[Any]:
    """The hits among instances whose hierarchy rows cannot answer a UID filter (outside the
    hierarchy, or flagged): those filters are tested on their element rows."""
    flags = [c.untrusted for c in plan.checked]
    conditions = [*plan.conditions, or_(*flags)]
    conditions += [or_(c.untrusted, c.condition) for c in plan.checked]
    query = _hits_query(plan, conditions).add_columns(*flags)
    rows = conn.execute(query).all()
    kept = {r[0] for r in rows}
    for i, check in enumerate(plan.checked):
        to_test = {r[0] for r in rows if r[3 + i]}
        if to_test:
            passed = (
                set()
                if check.key is None
                else _element_hits(conn, check.filter, check.key, check.vr, to_test)
            )
            kept -= to_test - passed
    return [tuple(r[:3]) for r in rows if r[0] in kept]


def _element_matches(
    conn: Connection,
    filters: Sequence[tuple[Filter, Any, str | None]],
    candidates: set[int] | None,
    summaries_apply: bool = False,
) -> set[int]:
    """The file ids (of `candidates`, None: of any file) whose elements match every filter.
    Stops at the first filter that leaves none."""
    matched = candidates
    total: int | None = None
    for f, row, vr in filters:
        within = None
        if matched is not None:
            if total is None:
                total = conn.execute(select(func.count()).select_from(instances)).scalar_one()
            within = matched if len(matched) <= _FEW * total else None
        if summaries_apply and _no_counted_value_matches(conn, f, row, vr):
            return set()
        hits = _element_hits(conn, f, row, vr, within)
        matched = hits if matched is None else matched & hits
        if not matched:
            return set()
    return matched if matched is not None else set()


def _no_counted_value_matches(conn: Connection, f: Filter, row: Any, vr: str | None) -> bool:
    """True when the summaries count every value of the key and none matches `f`: then no
    element row can, and the pass over the elements table is saved (a typo, an absent ID)."""
    if is_numeric_test(f, vr):
        return False
    untracked = conn.execute(
        select(func.sum(tag_usage.c.untracked)).where(tag_usage.c.key_id == row.id)
    ).scalar()
    if untracked is None or untracked > 0:
        return False
    test, _ = _value_matcher(date_range(f, vr), vr, _vm_of(row))
    counted = select(tag_values.c.value).where(tag_values.c.key_id == row.id).distinct()
    return not any(test(value) for (value,) in conn.execute(counted))


def key_rows_of(
    conn: Connection, key_id: int, columns: Sequence[Any], where: Sequence[Any], within: Any
) -> list[Any]:
    """key_element_rows, of the files `within` only (by primary key) unless it is None."""
    if within is None:
        return key_element_rows(conn, key_id, columns, *where)
    rows: list[Any] = []
    for chunk in in_ids(conn, elements.c.file_id, within):
        rows += key_element_rows(conn, key_id, columns, *where, files=chunk)
    return rows


def _element_hits(
    conn: Connection, f: Filter, row: Any, vr: str | None, within: set[int] | None = None
) -> set[int]:
    if is_numeric_test(f, vr):
        return _number_hits(conn, f, row, vr or "", within)
    value = date_range(f, vr)
    test, wanted = _value_matcher(value, vr, _vm_of(row))
    prefilter = _prefilter(conn, wanted, fold=vr == "PN")
    where = [] if prefilter is None else [prefilter]
    rows = key_rows_of(conn, row.id, [elements.c.value], where, within)
    return {f for f, v in rows if v is not None and test(v)}


def _prefilter(conn: Connection, wanted: list[str] | None, fold: bool) -> Any:
    """A cheap superset of the matches in SQL (the Python test decides on each value): the
    values that hold one of `wanted` as a LIKE pattern (``*``/``?`` as ``%``/``_``), None
    when there is none to give. Person names (`fold`) match without regard to case, so only
    ASCII `wanted` values are given, and every value with a non-ASCII character is kept:
    there Python's lower() and the database's may differ."""
    if wanted is None or len(wanted) > _PREFILTER_VALUES:
        return None
    if fold and not all(v.isascii() for v in wanted):
        return None
    column = elements.c.value
    kept = [_like(conn, column, f"%{_like_pattern(v)}%", fold) for v in wanted]
    if fold:
        kept.append(_non_ascii(conn, column))
    return or_(*kept)


def _like(conn: Connection, column: Any, pattern: str, fold: bool) -> Any:
    """Dialect decision: LIKE, without regard to ASCII case when `fold`. SQLite's LIKE ignores
    ASCII case always (a superset either way); PostgreSQL's respects it, ILIKE does not."""
    if fold and conn.dialect.name == "postgresql":
        return column.ilike(pattern, escape="\\")
    return column.like(pattern, escape="\\")


def _non_ascii(conn: Connection, column: Any) -> Any:
    """Dialect decision: the text holds a character beyond ASCII (more bytes than characters)."""
    if conn.dialect.name == "postgresql":
        return func.octet_length(column) != func.char_length(column)
    return func.length(cast(column, LargeBinary)) != func.length(column)


def _number_hits(
    conn: Connection, f: Filter, row: Any, vr: str, within: set[int] | None
) -> set[int]:
    """Files whose element under `row` matches a numeric filter: single values by the `number`
    column the walker fills; multi-valued, cut or unparsable ones (number NULL) by their text,
    where any value matching is a match (for != : no value equals)."""
    test = number_test(f, vr)
    where = or_(number_condition(elements.c.number, test), elements.c.number.is_(None))
    columns = [elements.c.number, elements.c.value, elements.c.flags]
    rows = key_rows_of(conn, row.id, columns, [where], within)
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


def _value_matcher(
    value: str, vr: str | None, vm: str | None
) -> tuple[Callable[[str], bool], list[str] | None]:
    """A function telling whether a stored value (text, possibly multi-valued) matches `value`,
    and the values it looks for (``*``/``?`` wildcards kept, person names in lower case; for
    a pre-filter in SQL), None for a range.

    Person names match without regard to case, as most archives do for C-FIND. UIDs are a
    list separated by ``\\`` or ``,``; several values of a single-valued attribute
    (``SeriesDescription=T1\\T2``) match any of them."""
    if vr in _RANGE_VRS and "-" in value and vr != "DT":
        low, _, high = (v.strip() for v in value.partition("-"))

        def in_range(text: str) -> bool:
            return any(
                part and (not low or part >= low) and (not high or part[: len(high)] <= high)
                for part in text.split("\\")
            )

        return in_range, None
    fold = vr == "PN"
    if fold:
        value = value.lower()
    if vr == "UI":
        wanted = _uids(value)
    elif "\\" in value and vm == "1":
        wanted = [v.strip() for v in value.split("\\") if v.strip()]
    else:
        wanted = [value]

    def parts(text: str) -> list[str]:
        return (text.lower() if fold else text).split("\\")

    if any(_wildcard(v) for v in wanted):
        patterns = [
            re.compile(
                "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in v) + r"\Z",
                re.DOTALL,
            )
            for v in wanted
        ]
        return lambda text: any(p.match(part) for part in parts(text) for p in patterns), wanted
    one_of = set(wanted)
    matcher = lambda text: (  # noqa: E731
        (text.lower() if fold else text) in one_of or any(part in one_of for part in parts(text))
    )
    return matcher, wanted


# -- the hit query ------------------------------------------------------------------------------


def _hits_query(plan: _Plan, conditions: Sequence[ColumnElement[bool]]) -> Any:
    """(file_id or NULL, series id, study id) of every match of the hierarchy conditions."""
    file_id = instances.c.file_id if plan.on_instances and not plan.per_series else literal(None)
    query = select(file_id, series.c.id, studies.c.id).select_from(_join_tree(plan))
    return query.where(*conditions).distinct() if plan.per_series else query.where(*conditions)


def _join_tree(plan: _Plan) -> Any:
    if not plan.hierarchy:
        return instances.outerjoin(series, series.c.id == instances.c.series_ref).outerjoin(
            studies, studies.c.id == series.c.study_ref
        )
    # Inner joins let both databases start from the most selective table. Studies or series
    # asked by their own UIDs only leave out the instance rows, many times more: every series
    # row has instances (empty ones are deleted).
    if plan.on_instances:
        return instances.join(series, series.c.id == instances.c.series_ref).join(
            studies, studies.c.id == series.c.study_ref
        )
    return series.join(studies, studies.c.id == series.c.study_ref)


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
                "_id": file_id,
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
                "_id": sid,
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
                "_id": study_id,
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
