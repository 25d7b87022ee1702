"""Read-only questions to the index: `indexer stats`, `tags`, `find` and `sql`.

Every function takes an open Connection, reads the database only (never the DICOM
files), runs the same on SQLite and PostgreSQL, and returns plain dicts and lists
that the CLI prints as a table, JSON or CSV. Keys are stable (README "Reports").

Speed: `stats` and `find` read the hierarchy tables (one row per file at most);
`tags` reads the summary tables that indexer.summaries keeps at write time, and
goes to the elements table only for one tag at a time (by the path_id index).

Privacy: patient values (see is_patient_key) are left out of `tags` unless the
caller asks for them; `stats` holds none; `find` returns the Patient IDs of what
it matched, because that is the question it answers.
"""

from __future__ import annotations

import fnmatch
import heapq
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

from sqlalchemy import ARRAY, Connection, and_, any_, case, func, literal, or_, select
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.sql.elements import ColumnElement

from . import summaries
from .db import first_line
from .dictionary import private_vr, public_keyword, public_vr, uid_name, uid_names
from .errors import IndexerError, ReportError
from .tagkeys import group_id, hash64
from .tagkeys import parse as parse_tag_key
from .records import ITEM, META
from .schema import (
    elements,
    errors,
    files,
    instance_groups,
    instances,
    path_keys,
    patients,
    series,
    studies,
    tag_keys,
    usage_groups,
)
from .schema import tag_usage as usage_table
from .schema import tag_values as values_table


class QueryError(IndexerError):
    """`indexer sql` refused or failed to run a query."""


# -- stats ------------------------------------------------------------------------------------

BREAKDOWNS = ("modality", "sop-class", "transfer-syntax", "manufacturer", "study-year")


def collect_stats(conn: Connection, by: str | None = None) -> dict[str, Any]:
    """Counts of the whole index and its breakdowns (see BREAKDOWNS). No patient values.

    Keys: patients, studies, series, instances, files, files_by_status, bytes (size of
    the files read as DICOM), elements (data elements at every depth, file meta and
    items not counted), elements_per_instance {min, median, max}, errors,
    errors_by_reason, warnings, duplicate_sop_instance_uids, instances_with_duplicate_uid,
    instances_outside_hierarchy, missing_files, then by_modality, by_sop_class,
    by_transfer_syntax, by_manufacturer and by_study_year (lists of dicts, see
    collect_breakdown). With `by` (one of BREAKDOWNS) only that breakdown is computed
    and returned, under its key.

    A handful of scans of the hierarchy tables (one row per file at most), none of the
    elements: well under a second for 200,000 instances.
    """
    if by is not None:
        if by not in BREAKDOWNS:
            raise ReportError(f"unknown breakdown {by!r}; choose one of: {', '.join(BREAKDOWNS)}")
        return {_breakdown_key(by): collect_breakdown(conn, by)}
    data: dict[str, Any] = {}

    def count(table: Any) -> int:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())

    data["patients"], data["studies"], data["series"] = count(patients), count(studies), count(series)
    groups = _instance_groups(conn)
    data["instances"] = sum(g.instances for g in groups)
    by_status: dict[str, int] = defaultdict(int)
    dicom_bytes = 0
    syntaxes: dict[str | None, list[int]] = defaultdict(lambda: [0, 0])
    for status, syntax, n, size in conn.execute(
        select(files.c.status, files.c.transfer_syntax, func.count(), func.coalesce(func.sum(files.c.size), 0))
        .group_by(files.c.status, files.c.transfer_syntax)
    ):
        by_status[status] += int(n)
        if status in ("indexed", "partial"):
            dicom_bytes += int(size)
            syntaxes[syntax][0] += int(n)
            syntaxes[syntax][1] += int(size)
    data["files"] = sum(by_status.values())
    data["files_by_status"] = dict(sorted(by_status.items()))
    data["bytes"] = dicom_bytes
    data["elements"] = sum(g.elements for g in groups)
    data["elements_per_instance"] = _min_median_max(conn)
    errors_by_reason: dict[str, int] = {}
    warnings = 0
    for severity, reason, n in conn.execute(
        select(errors.c.severity, errors.c.reason, func.count()).group_by(errors.c.severity, errors.c.reason)
    ):
        if severity == "error":
            errors_by_reason[reason] = int(n)
        else:
            warnings += int(n)
    data["errors"] = sum(errors_by_reason.values())
    data["errors_by_reason"] = dict(sorted(errors_by_reason.items()))
    data["warnings"] = warnings
    dup = (select(func.count().label("n"))
           .where(instances.c.sop_instance_uid.is_not(None), instances.c.sop_instance_uid != "")
           .group_by(instances.c.sop_instance_uid).having(func.count() > 1).subquery())
    dup_uids, dup_instances = conn.execute(select(func.count(), func.coalesce(func.sum(dup.c.n), 0))).one()
    data["duplicate_sop_instance_uids"] = int(dup_uids)
    data["instances_with_duplicate_uid"] = int(dup_instances)
    data["instances_outside_hierarchy"] = sum(g.instances for g in groups if not g.in_hierarchy)
    data["missing_files"] = by_status.get("missing", 0)
    data["by_modality"] = _by_modality(conn, groups)
    data["by_sop_class"] = _by_sop_class(groups)
    data["by_transfer_syntax"] = _sorted_breakdown([
        {"transfer_syntax_uid": uid, "name": uid_name(uid), "instances": n, "bytes": b}
        for uid, (n, b) in syntaxes.items()])
    data["by_manufacturer"] = _by_manufacturer(conn, groups)
    data["by_study_year"] = _by_study_year(conn, groups)
    return data


def _breakdown_key(by: str) -> str:
    return "by_" + by.replace("-", "_")


def _instance_groups(conn: Connection) -> list[Any]:
    """The instance_groups summary: instances per modality, SOP class, manufacturer, model, year."""
    return list(conn.execute(select(instance_groups).where(instance_groups.c.instances > 0)))


def _min_median_max(conn: Connection) -> dict[str, float | int | None]:
    # From the distribution of counts (few distinct values): the same SQL on both databases.
    histogram = sorted((int(c), int(n)) for c, n in conn.execute(
        select(instances.c.element_count, func.count()).group_by(instances.c.element_count)))
    total = sum(n for _, n in histogram)
    if not total:
        return {"min": None, "median": None, "max": None}

    def at(position: int) -> int:
        seen = 0
        for value, n in histogram:
            seen += n
            if position < seen:
                return value
        raise AssertionError("position beyond the histogram")

    median = (at((total - 1) // 2) + at(total // 2)) / 2
    return {"min": histogram[0][0], "median": int(median) if median == int(median) else median,
            "max": histogram[-1][0]}


def _sorted_breakdown(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    first = next(iter(rows[0])) if rows else ""
    rows.sort(key=lambda r: (-r["instances"], r[first] is None, str(r[first] or "")))
    return rows


def _sum_by(groups: list[Any], *columns: str) -> dict[tuple[Any, ...], int]:
    totals: dict[tuple[Any, ...], int] = defaultdict(int)
    for g in groups:
        totals[tuple(getattr(g, c) for c in columns)] += g.instances
    return totals


def _by_modality(conn: Connection, groups: list[Any]) -> list[dict[str, Any]]:
    series_of = {m: (int(s), int(st)) for m, s, st in conn.execute(
        select(series.c.modality, func.count(), func.count(series.c.study_ref.distinct())).group_by(series.c.modality))}
    return _sorted_breakdown([
        {"modality": m, "instances": n, "series": series_of.get(m, (0, 0))[0], "studies": series_of.get(m, (0, 0))[1]}
        for (m,), n in _sum_by(groups, "modality").items()])


def _by_sop_class(groups: list[Any]) -> list[dict[str, Any]]:
    return _sorted_breakdown([{"sop_class_uid": u, "name": uid_name(u), "instances": n}
                              for (u,), n in _sum_by(groups, "sop_class_uid").items()])


def _by_manufacturer(conn: Connection, groups: list[Any]) -> list[dict[str, Any]]:
    series_of = {(m, mo): int(n) for m, mo, n in conn.execute(
        select(series.c.manufacturer, series.c.model, func.count()).group_by(series.c.manufacturer, series.c.model))}
    in_tree = [g for g in groups if g.in_hierarchy]
    return _sorted_breakdown([{"manufacturer": m, "model": mo, "series": series_of.get((m, mo), 0), "instances": n}
                              for (m, mo), n in _sum_by(in_tree, "manufacturer", "model").items()])


def _by_study_year(conn: Connection, groups: list[Any]) -> list[dict[str, Any]]:
    year = case((func.length(studies.c.study_date) >= 4, func.substr(studies.c.study_date, 1, 4)), else_=None)
    studies_of = {y: int(n) for y, n in conn.execute(select(year, func.count()).group_by(year))}
    in_tree = [g for g in groups if g.in_hierarchy]
    return _sorted_breakdown([{"year": y, "studies": studies_of.get(y, 0), "instances": n}
                              for (y,), n in _sum_by(in_tree, "study_year").items()])


def collect_breakdown(conn: Connection, by: str) -> list[dict[str, Any]]:
    """One breakdown of the instances, sorted by instances, descending; `by` is one of BREAKDOWNS.

    modality: modality, instances, series, studies (series and studies whose modality it
    is); sop-class: sop_class_uid, name, instances; transfer-syntax:
    transfer_syntax_uid, name, instances, bytes; manufacturer: manufacturer, model,
    series, instances; study-year: year, studies, instances. Missing values are null;
    names come from pydicom's UID dictionary (null when unknown). Raises ReportError
    for an unknown `by`.
    """
    if by == "modality":
        return _by_modality(conn, _instance_groups(conn))
    if by == "sop-class":
        return _by_sop_class(_instance_groups(conn))
    if by == "transfer-syntax":
        q = (select(files.c.transfer_syntax, func.count(), func.coalesce(func.sum(files.c.size), 0))
             .where(files.c.status.in_(("indexed", "partial"))).group_by(files.c.transfer_syntax))
        return _sorted_breakdown([{"transfer_syntax_uid": u, "name": uid_name(u), "instances": int(n), "bytes": int(b)}
                                  for u, n, b in conn.execute(q)])
    if by == "manufacturer":
        return _by_manufacturer(conn, _instance_groups(conn))
    if by == "study-year":
        return _by_study_year(conn, _instance_groups(conn))
    raise ReportError(f"unknown breakdown {by!r}; choose one of: {', '.join(BREAKDOWNS)}")


# -- tag keys ---------------------------------------------------------------------------------

_PATIENT_TAGS = {0x00080050, 0x00080051}  # AccessionNumber, IssuerOfAccessionNumberSequence


def is_patient_key(tag: int, private_creator: str | None = None, name: str = "") -> bool:
    """True when values of a tag identify a patient or a person: hidden unless asked for.

    Public tags: the Patient (0010) and Visit (0038) groups, AccessionNumber and every
    person name (VR PN). Private tags (`private_creator` given, `tag` as 0xGGGG10EE):
    person names in pydicom's private dictionary and tags whose name mentions a patient.
    """
    if private_creator is not None and (tag >> 16) & 1:
        return "patient" in name.lower() or private_vr(tag, private_creator) == "PN"
    group = tag >> 16
    if group in (0x0010, 0x0038) or tag in _PATIENT_TAGS:
        return True
    return public_vr(tag) == "PN"


# -- tags -------------------------------------------------------------------------------------


@dataclass
class _Scope:
    group_ids: list[int] | None  # None: every group
    instances: int
    filters: dict[str, str] = field(default_factory=dict)


def _scope(conn: Connection, modality: str | None, sop_class: str | None) -> _Scope:
    counts: dict[tuple[str, str], int] = defaultdict(int)
    for m, s, n in conn.execute(
        select(instance_groups.c.modality, instance_groups.c.sop_class_uid, func.sum(instance_groups.c.instances))
        .group_by(instance_groups.c.modality, instance_groups.c.sop_class_uid)
    ):
        counts[(m or "", s or "")] += int(n)
    if modality is None and sop_class is None:
        return _Scope(None, sum(counts.values()))
    filters: dict[str, str] = {}
    wanted = set(counts)
    if modality is not None:
        filters["modality"] = modality
        wanted = {k for k in wanted if k[0].upper() == modality.strip().upper()}
    if sop_class is not None:
        filters["sop_class"] = sop_class
        needle = sop_class.strip()

        def matches(uid: str) -> bool:
            if uid == needle:
                return True
            known = uid_names(uid)
            return known is not None and needle.lower() in (known[0].lower(), known[1].lower())

        wanted = {k for k in wanted if matches(k[1])}
    return _Scope(sorted(group_id(*k) for k in wanted), sum(counts[k] for k in wanted), filters)


def _in_scope(column: Any, scope: _Scope) -> ColumnElement[bool]:
    if scope.group_ids is None:
        return literal(True)
    return column.in_(scope.group_ids)


def tag_usage(
    conn: Connection,
    *,
    modality: str | None = None,
    sop_class: str | None = None,
    private: bool = False,
    path: str | None = None,
    top: int = 5,
    patient_values: bool = False,
) -> dict[str, Any]:
    """Tag usage across the index, from the summary tables (no element rows are read).

    Parameters filter the instances (`modality`, `sop_class`: a UID, its name or keyword)
    and the tags (`private`: private tags only; `path`: a pattern with * and ? matched
    against the tag key or its keyword form, e.g. ``(0040,0275).*`` or ``*CodeValue``).
    `top` most common values are listed per tag; values of patient tags only with
    `patient_values`.

    Returns {"instances": instances in scope, "filters": {...}, "tags": [...]}; each tag:
    tag, keyword, name, private_creator, depth, instances, share, occurrences,
    distinct_values, distinct_values_complete, values_hidden, top_values
    [{value, instances, occurrences}]. distinct_values is null when no value of the
    tag is counted (sequences, binary values, UIDs, times, decimals) and a lower bound
    when distinct_values_complete is false: `tag_values_report` counts those exactly.
    """
    scope = _scope(conn, modality, sop_class)
    usage = {
        kid: (int(i), int(o), int(u))
        for kid, i, o, u in conn.execute(
            select(usage_table.c.key_id, func.sum(usage_table.c.instances), func.sum(usage_table.c.occurrences),
                   func.sum(usage_table.c.untracked))
            .where(_in_scope(usage_table.c.group_id, scope))
            .group_by(usage_table.c.key_id)
        )
    }
    keys = {row.id: row for row in conn.execute(select(tag_keys)) if row.id in usage}
    wanted = []
    for row in keys.values():
        if private and not (row.tag >> 16) & 1:
            continue
        if path is not None and not (fnmatch.fnmatchcase(row.key, path) or fnmatch.fnmatchcase(row.keywords, path)):
            continue
        wanted.append((row, is_patient_key(row.tag, row.private_creator, row.name)))
    distinct, top_values = _value_summary(conn, scope, top)
    result = []
    for row, patient in sorted(wanted, key=lambda w: w[0].key):
        n, occurrences, untracked = usage[row.id]
        result.append({
            "tag": row.key,
            "keyword": row.keywords,
            "name": row.name,
            "private_creator": row.private_creator,
            "depth": row.depth,
            "instances": n,
            "share": round(n / scope.instances, 6) if scope.instances else None,
            "occurrences": occurrences,
            "distinct_values": None if untracked == occurrences else distinct.get(row.id, 0),
            "distinct_values_complete": untracked == 0,
            "values_hidden": patient and not patient_values,
            "top_values": None if patient and not patient_values else top_values.get(row.id, []),
        })
    return {"instances": scope.instances, "filters": scope.filters, "tags": result}


def _value_summary(conn: Connection, scope: _Scope, top: int) -> tuple[dict[int, int], dict[int, list[dict[str, Any]]]]:
    """Distinct counted values per key, and the `top` most common, in one ordered pass over tag_values."""
    q = (select(values_table.c.key_id, values_table.c.value, func.sum(values_table.c.instances),
                func.sum(values_table.c.occurrences))
         .where(_in_scope(values_table.c.group_id, scope))
         .group_by(values_table.c.key_id, values_table.c.value)
         .order_by(values_table.c.key_id, values_table.c.value))  # the primary key's order: no sort
    distinct: dict[int, int] = defaultdict(int)
    best: dict[int, list[_Ranked]] = defaultdict(list)
    for kid, value, n, o in conn.execute(q):
        distinct[kid] += 1
        if top:
            entry = (int(n), value, int(o))
            heap = best[kid]
            # Most instances first, then the smaller value: keep the `top` largest (n, -value).
            if len(heap) < top:
                heapq.heappush(heap, _Ranked(entry))
            elif _Ranked(entry) > heap[0]:
                heapq.heapreplace(heap, _Ranked(entry))
    tops = {kid: [{"value": r.entry[1], "instances": r.entry[0], "occurrences": r.entry[2]}
                  for r in sorted(heap, reverse=True)] for kid, heap in best.items()}
    return dict(distinct), tops


class _Ranked:
    """Orders (instances, value, occurrences): more instances first, then the smaller value."""

    __slots__ = ("entry",)

    def __init__(self, entry: tuple[int, str, int]) -> None:
        self.entry = entry

    def __lt__(self, other: _Ranked) -> bool:
        a, b = self.entry, other.entry
        return a[0] < b[0] or (a[0] == b[0] and a[1] > b[1])

    def __gt__(self, other: _Ranked) -> bool:
        return other < self


def find_tag_key(conn: Connection, text: str) -> Any:
    """The tag_keys row for what the user typed (see parse_tag_key). Raises ReportError if absent."""
    key = parse_tag_key(text)
    row = conn.execute(select(tag_keys).where(tag_keys.c.id == hash64(key))).first()
    if row is not None and row.key == key:
        return row
    hint = ""
    last = key.rsplit(".", 1)[-1]
    candidates = [r.key for r in conn.execute(
        select(tag_keys.c.key).where(tag_keys.c.key.like("%" + last)).order_by(tag_keys.c.key).limit(11))]
    if candidates:
        more = ", ..." if len(candidates) > 10 else ""
        hint = f"; it occurs as: {', '.join(candidates[:10])}{more}"
    raise ReportError(f"no tag {key} in the index{hint}")


def tag_values_report(
    conn: Connection,
    tag: str,
    *,
    modality: str | None = None,
    sop_class: str | None = None,
    limit: int | None = None,
    patient_values: bool = False,
) -> dict[str, Any]:
    """Every value of one tag with its counts (`indexer tags --tag`), exact.

    From tag_values when every value of the tag in scope is counted there, else from
    the element rows of the tag's paths (by the path_id index). Keys: tag, keyword,
    name, private_creator, instances, share, occurrences, distinct_values, source
    ("summary" or "elements"), values_hidden, values [{value, instances, occurrences}]
    sorted by instances, descending; value is null for binary values and sequences.
    """
    key = find_tag_key(conn, tag)
    scope = _scope(conn, modality, sop_class)
    hidden = is_patient_key(key.tag, key.private_creator, key.name) and not patient_values
    n, occurrences, untracked = (int(v or 0) for v in conn.execute(
        select(func.sum(usage_table.c.instances), func.sum(usage_table.c.occurrences), func.sum(usage_table.c.untracked))
        .where(usage_table.c.key_id == key.id, _in_scope(usage_table.c.group_id, scope))).one())
    if untracked == 0:
        source = "summary"
        values = [
            {"value": v, "instances": int(i), "occurrences": int(o)}
            for v, i, o in conn.execute(
                select(values_table.c.value, func.sum(values_table.c.instances), func.sum(values_table.c.occurrences))
                .where(values_table.c.key_id == key.id, _in_scope(values_table.c.group_id, scope))
                .group_by(values_table.c.value))
        ]
    else:
        source = "elements"
        values = _values_from_elements(conn, key.id, scope)
    values.sort(key=lambda v: (-v["instances"], -v["occurrences"], v["value"] is None, v["value"] or ""))
    return {
        "tag": key.key,
        "keyword": key.keywords,
        "name": key.name,
        "private_creator": key.private_creator,
        "filters": scope.filters,
        "instances": n,
        "share": round(n / scope.instances, 6) if scope.instances else None,
        "occurrences": occurrences,
        "distinct_values": len(values),
        "source": source,
        "values_hidden": hidden,
        "values": None if hidden else values[:limit] if limit else values,
    }


def key_element_rows(conn: Connection, key_id: int, columns: Sequence[Any], *where: Any) -> list[Any]:
    """Element rows counted under the tag key `key_id`: (file_id, *columns), META and items excluded.

    One pass over the elements table (it has no index on path_id, see schema.py), keeping
    the rows of the key's paths. A path shared by several keys (the same path text under
    different private creators in different files) is resolved per file.
    """
    key_paths = select(path_keys.c.path_id).where(path_keys.c.key_id == key_id)
    q = (select(elements.c.file_id, elements.c.ordinal, elements.c.path_id, *columns)
         .where(elements.c.path_id.in_(key_paths), elements.c.flags.op("&")(META | ITEM) == 0, *where))
    rows = conn.execute(q).all()
    shared = {r[0] for r in conn.execute(
        select(path_keys.c.path_id).where(path_keys.c.path_id.in_(key_paths), path_keys.c.key_id != key_id))}
    if shared:
        files_to_check = sorted({r[0] for r in rows if r[2] in shared})
        keep = {(f, o) for f, o, k in summaries.element_keys(conn, files_to_check) if k == key_id}
        rows = [r for r in rows if r[2] not in shared or (r[0], r[1]) in keep]
    return [(r[0], *r[3:]) for r in rows]


def _values_from_elements(conn: Connection, key_id: int, scope: _Scope) -> list[dict[str, Any]]:
    where: list[Any] = []
    if scope.group_ids is not None:
        wanted = set(scope.group_ids)
        groups = conn.execute(select(usage_groups.c.id, usage_groups.c.modality, usage_groups.c.sop_class_uid)).all()
        pairs = [(m, s) for gid, m, s in groups if gid in wanted]
        in_scope = select(instances.c.file_id).where(or_(*[
            and_(func.coalesce(instances.c.modality, "") == m, func.coalesce(instances.c.sop_class_uid, "") == s)
            for m, s in pairs])) if pairs else None
        if in_scope is None:
            return []
        where.append(elements.c.file_id.in_(in_scope))
    counts: dict[str | None, list[Any]] = {}
    for file_id, value in key_element_rows(conn, key_id, [elements.c.value], *where):
        entry = counts.get(value)
        if entry is None:
            entry = counts[value] = [set(), 0]
        entry[0].add(file_id)
        entry[1] += 1
    return [{"value": v, "instances": len(c[0]), "occurrences": c[1]} for v, c in counts.items()]


# -- find -------------------------------------------------------------------------------------

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
    "SeriesNumber": (series.c.series_number, "text"),
    "SeriesDescription": (series.c.description, "text"),
    "BodyPartExamined": (series.c.body_part, "text"),
    "Manufacturer": (series.c.manufacturer, "text"),
    "ManufacturerModelName": (series.c.model, "text"),
    "SeriesDate": (series.c.series_date, "range"),
    "SOPInstanceUID": (instances.c.sop_instance_uid, "uid"),
    "SOPClassUID": (instances.c.sop_class_uid, "uid"),
    "InstanceNumber": (instances.c.instance_number, "text"),
    "ContentDate": (instances.c.content_date, "range"),
}
_RANGE_VRS = {"DA", "TM", "DT"}


def parse_filters(items: Iterable[str]) -> list[tuple[str, str]]:
    """Split ``KEY=VALUE`` arguments. Raises ReportError for an argument without "="."""
    pairs = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ReportError(f"filter {item!r} is not KEY=VALUE, e.g. StudyDate=20240101-20241231")
        pairs.append((key.strip(), value))
    return pairs


def _wildcard(value: str) -> bool:
    return "*" in value or "?" in value


def _like_pattern(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


def _match_column(conn: Connection, column: Any, kind: str, value: str, key: str) -> ColumnElement[bool]:
    if kind == "uid":
        uids = [u.strip() for u in re.split(r"[\\,]", value) if u.strip()]
        return column.in_(uids)
    if kind == "range" and "-" in value:
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
    if kind == "name":
        # Person names match without regard to case, as most archives do for C-FIND.
        return func.lower(column).like(_like_pattern(value.lower()), escape="\\")
    if _wildcard(value):
        if conn.dialect.name == "sqlite":
            # SQLite's LIKE ignores case; GLOB does not, like PostgreSQL's LIKE.
            return column.op("GLOB")(re.sub(r"([\[\]])", r"[\1]", value))
        return column.like(_like_pattern(value), escape="\\")
    return column == value


def _value_matcher(value: str, vr: str | None) -> Any:
    """A function telling whether a stored value (text, possibly multi-valued) matches `value`."""
    if vr in _RANGE_VRS and "-" in value and vr != "DT":
        low, _, high = (v.strip() for v in value.partition("-"))

        def in_range(text: str) -> bool:
            return any(part and (not low or part >= low) and (not high or part[: len(high)] <= high)
                       for part in text.split("\\"))

        return in_range
    if _wildcard(value):
        pattern = re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in value) + r"\Z",
                             re.DOTALL)
        return lambda text: any(pattern.match(part) for part in text.split("\\"))
    return lambda text: text == value or value in text.split("\\")


def find(
    conn: Connection,
    level: str,
    filters: Sequence[tuple[str, str]] = (),
    *,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """The C-FIND / QIDO question over the index: studies, series or instances matching `filters`.

    `filters` are (attribute, value) pairs, all of which must match: a keyword, a tag or
    a sequence path (see parse_tag_key) and a value with ``*``/``?`` wildcards, a
    range ``FROM-TO`` for dates and times (either end may be left out), or a list of
    UIDs separated by ``\\`` or ``,``. Hierarchy attributes (PatientID, StudyDate,
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
    """
    if level not in LEVELS:
        raise ReportError(f"unknown level {level!r}; choose one of: {', '.join(LEVELS)}")
    conditions: list[Any] = []
    element_filters: list[tuple[str, str]] = []
    hierarchy = level != "instances"  # studies and series need the hierarchy rows
    on_instances = level == "instances"  # a condition or the answer needs the instance rows
    for key, value in filters:
        keyword = _top_level_keyword(key)
        if keyword in _COLUMNS or keyword == "Modality":
            hierarchy = hierarchy or keyword not in ("SOPInstanceUID", "SOPClassUID", "InstanceNumber",
                                                     "ContentDate", "Modality")
        if keyword == "Modality":
            column = instances.c.modality if level == "instances" else series.c.modality
            conditions.append(_match_column(conn, column, "text", value, key))
        elif keyword in _COLUMNS:
            column, kind = _COLUMNS[keyword]
            on_instances = on_instances or column.table is instances
            conditions.append(_match_column(conn, column, kind, value, key))
        else:
            element_filters.append((key, value))
            on_instances = True

    matched: set[int] | None = None
    for key, value in element_filters:
        row = _filter_key(conn, key)
        vr = public_vr(row.tag)
        test = _value_matcher(value, vr)
        where = []
        if not _wildcard(value) and not (vr in _RANGE_VRS and "-" in value):
            where.append(or_(elements.c.value == value, elements.c.value.like(f"%{_like_pattern(value)}%", escape="\\")))
        hits = {f for f, v in key_element_rows(conn, row.id, [elements.c.value], *where) if v is not None and test(v)}
        matched = hits if matched is None else matched & hits
        if not matched:
            return []

    on_patients = any(column.table is patients for column, _ in _filter_columns(filters))
    if hierarchy:
        # Inner joins let both databases start from the most selective table (e.g. study_date).
        # Studies or series asked by their own (or their patient's) attributes leave out the
        # instance rows, a hundred times more: every series row has instances (empty ones are
        # deleted).
        tree = series.join(studies, studies.c.id == series.c.study_ref)
        if on_instances:
            tree = (instances.join(series, series.c.id == instances.c.series_ref)
                    .join(studies, studies.c.id == series.c.study_ref))
        if on_patients:
            tree = tree.join(patients, patients.c.id == studies.c.patient_ref)
    else:
        tree = (instances.outerjoin(series, series.c.id == instances.c.series_ref)
                .outerjoin(studies, studies.c.id == series.c.study_ref)
                .outerjoin(patients, patients.c.id == studies.c.patient_ref))
    file_id = instances.c.file_id if on_instances else literal(None)
    hits_q = select(file_id, series.c.id, studies.c.id).select_from(tree).where(*conditions)
    hit_rows = [r for r in conn.execute(hits_q) if matched is None or r[0] in matched]
    # The rows to print, by primary keys and the parent indexes only: plans that stay fast on
    # both databases however many studies matched.
    if level == "instances":
        file_ids = sorted(r[0] for r in hit_rows)
        found = _lookup(conn, instances, instances.c.file_id, file_ids,
                        instances.c.sop_instance_uid, instances.c.sop_class_uid, instances.c.series_ref,
                        instances.c.modality, instances.c.instance_number)
        paths_of = _lookup(conn, files, files.c.id, file_ids, files.c.path)
        series_of = _lookup(conn, series, series.c.id, {r[2] for r in found.values() if r[2] is not None},
                            series.c.series_uid, series.c.study_ref)
        studies_of = _lookup(conn, studies, studies.c.id, {r[1] for r in series_of.values()},
                             studies.c.study_uid, studies.c.patient_ref)
        patients_of = _lookup(conn, patients, patients.c.id, {r[1] for r in studies_of.values()}, patients.c.patient_id)
        rows = []
        for file_id in file_ids:
            uid, sop_class, series_ref, modality, number = found[file_id]
            series_uid, study_ref = series_of.get(series_ref, (None, None))
            study_uid, patient_ref = studies_of.get(study_ref, (None, None))
            rows.append({"sop_instance_uid": uid, "sop_class_uid": sop_class, "series_instance_uid": series_uid,
                         "study_instance_uid": study_uid, "patient_id": patients_of.get(patient_ref, (None,))[0],
                         "modality": modality, "instance_number": number, "path": paths_of[file_id][0]})
        rows.sort(key=lambda r: (r["study_instance_uid"] or "", r["series_instance_uid"] or "",
                                 _number(r["instance_number"]), r["path"]))
        return rows[:limit] if limit else rows

    if level == "series":
        series_ids = sorted({r[1] for r in hit_rows if r[1] is not None})
        series_of = _lookup(conn, series, series.c.id, series_ids, series.c.series_uid, series.c.study_ref,
                            series.c.modality, series.c.series_number, series.c.description)
        counts = _counts_per(conn, instances.c.series_ref, series_ids)
        studies_of = _lookup(conn, studies, studies.c.id, {r[1] for r in series_of.values()},
                             studies.c.study_uid, studies.c.patient_ref)
        patients_of = _lookup(conn, patients, patients.c.id, {r[1] for r in studies_of.values()}, patients.c.patient_id)
        rows = []
        for sid in series_ids:
            uid, study_ref, modality, number, description = series_of[sid]
            study_uid, patient_ref = studies_of[study_ref]
            rows.append({"series_instance_uid": uid, "study_instance_uid": study_uid,
                         "patient_id": patients_of[patient_ref][0], "modality": modality, "series_number": number,
                         "series_description": description, "instances": counts.get(sid, 0)})
        rows.sort(key=lambda r: (r["study_instance_uid"], _number(r["series_number"]), r["series_instance_uid"]))
        return rows[:limit] if limit else rows

    study_ids = sorted({r[2] for r in hit_rows if r[2] is not None})
    studies_of = _lookup(conn, studies, studies.c.id, study_ids, studies.c.study_uid, studies.c.patient_ref,
                         studies.c.study_date, studies.c.accession_number, studies.c.description)
    patients_of = _lookup(conn, patients, patients.c.id, {r[1] for r in studies_of.values()}, patients.c.patient_id)
    series_in: dict[int, list[tuple[int, str | None]]] = defaultdict(list)
    for where in _in_ids(conn, series.c.study_ref, study_ids):
        for sid, study_ref, modality in conn.execute(
                select(series.c.id, series.c.study_ref, series.c.modality).where(where)):
            series_in[study_ref].append((sid, modality))
    counts = _counts_per(conn, instances.c.series_ref, [sid for members in series_in.values() for sid, _ in members])
    rows = []
    for study_id in study_ids:
        uid, patient_ref, study_date, accession, description = studies_of[study_id]
        members = series_in.get(study_id, [])
        rows.append({"study_instance_uid": uid, "patient_id": patients_of[patient_ref][0], "study_date": study_date,
                     "accession_number": accession, "study_description": description,
                     "modalities": sorted({m for _, m in members if m}), "series": len(members),
                     "instances": sum(counts.get(sid, 0) for sid, _ in members)})
    rows.sort(key=lambda r: (r["study_date"] or "", r["study_instance_uid"]))
    return rows[:limit] if limit else rows


def _lookup(conn: Connection, table: Any, key: Any, ids: Iterable[Any], *columns: Any) -> dict[Any, tuple[Any, ...]]:
    """{id: (columns...)} for the rows of `table` whose `key` is in `ids`, by chunks."""
    found: dict[Any, tuple[Any, ...]] = {}
    for where in _in_ids(conn, key, ids):
        for row in conn.execute(select(key, *columns).where(where)):
            found[row[0]] = tuple(row[1:])
    return found


def _counts_per(conn: Connection, column: Any, ids: Sequence[int]) -> dict[int, int]:
    """{id: rows whose `column` is id}, by chunks (an index on `column` answers it)."""
    counts: dict[int, int] = {}
    for where in _in_ids(conn, column, ids):
        counts.update((k, int(n)) for k, n in conn.execute(
            select(column, func.count()).where(where).group_by(column)))
    return counts


def _in_ids(conn: Connection, column: Any, ids: Iterable[int]) -> Iterable[Any]:
    """Conditions "`column` is one of `ids`" that together cover every id: on PostgreSQL one
    ``= ANY(array)`` with a single parameter (psycopg parses a statement of hundreds of
    placeholders anew for every chunk), on SQLite IN lists of 500 (its parameter limit)."""
    ordered = sorted(ids)
    if not ordered:
        return []
    if conn.dialect.name == "postgresql":
        return [column == any_(literal(ordered, ARRAY(column.type)))]
    return [column.in_(chunk) for chunk in _chunks(ordered, 500)]


def _filter_columns(filters: Sequence[tuple[str, str]]) -> list[tuple[Any, str]]:
    """The hierarchy columns that `filters` are matched on."""
    return [_COLUMNS[k] for k in (_top_level_keyword(key) for key, _ in filters) if k in _COLUMNS]


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


def _filter_key(conn: Connection, key: str) -> Any:
    try:
        return find_tag_key(conn, key)
    except ReportError as err:
        if "no tag" in str(err):
            raise ReportError(f"filter {key}: {err}; nothing can match") from None
        raise


def _number(text: str | None) -> tuple[int, float, str]:
    try:
        return (0, float(text or ""), "")
    except ValueError:
        return (1, 0.0, text or "")


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# -- sql --------------------------------------------------------------------------------------

_READ_KEYWORDS = {"SELECT", "WITH", "VALUES", "EXPLAIN", "TABLE", "SHOW", "PRAGMA"}
_COMMENTS = re.compile(r"\s*(--[^\n]*(\n|$)|/\*.*?\*/)", re.DOTALL)


@dataclass
class QueryResult:
    columns: list[str]
    rows: list[tuple[Any, ...]]

    def records(self) -> list[dict[str, Any]]:
        """The rows as dicts; a repeated column name gets a suffix (_2, _3, ...)."""
        names: list[str] = []
        seen: dict[str, int] = {}
        for name in self.columns:
            seen[name] = seen.get(name, 0) + 1
            names.append(name if seen[name] == 1 else f"{name}_{seen[name]}")
        return [dict(zip(names, row)) for row in self.rows]


def run_query(conn: Connection, query: str) -> QueryResult:
    """Run one read-only SQL statement and return its columns and rows.

    The connection is made read-only first (SQLite: PRAGMA query_only, on top of the
    read-only file mode of db.connect; PostgreSQL: a READ ONLY transaction), and the
    statement goes to the driver as one statement, which both drivers refuse to split
    (SQLite's execute; a prepared statement on PostgreSQL). Only statements that start
    with SELECT, WITH, VALUES, EXPLAIN, TABLE, SHOW or PRAGMA are accepted. Raises
    QueryError for a refused or failing statement.
    """
    text = query.strip()
    head = text
    while True:
        found = _COMMENTS.match(head)
        if not found or not found.group(0).strip():
            break
        head = head[found.end():]
    first = re.match(r"[\s(]*([A-Za-z]+)", head)
    if not first or first.group(1).upper() not in _READ_KEYWORDS:
        raise QueryError("only read queries are allowed (SELECT, WITH, VALUES, EXPLAIN, PRAGMA, ...)")
    dialect = conn.dialect.name
    try:
        if conn.in_transaction():
            conn.rollback()
        if dialect == "postgresql":
            conn.exec_driver_sql("SET TRANSACTION READ ONLY")  # must be the transaction's first statement
        elif dialect == "sqlite":
            conn.exec_driver_sql("PRAGMA query_only = ON")
        dbapi = conn.connection.driver_connection
        cursor = dbapi.cursor()  # type: ignore[union-attr]
        try:
            if dialect == "postgresql":
                cursor.execute(text, prepare=True)  # extended protocol: one statement only
            else:
                cursor.execute(text)
            columns = [d[0] for d in cursor.description or ()]
            rows = [tuple(_plain(v) for v in row) for row in cursor.fetchall()] if cursor.description else []
        finally:
            cursor.close()
    except (SQLAlchemyError, DBAPIError) as err:
        raise QueryError(first_line(err)) from None
    except Exception as err:  # the driver's own errors (sqlite3.Error, psycopg.Error)
        if type(err).__module__.split(".")[0] in ("sqlite3", "psycopg", "_sqlite3"):
            raise QueryError(first_line(err)) from None
        raise
    finally:
        try:
            conn.rollback()
        except SQLAlchemyError:
            pass
    return QueryResult(columns, rows)


def _plain(value: Any) -> Any:
    """Values JSON can carry: numbers stay numbers, bytes become hex, dates ISO text."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    return value
