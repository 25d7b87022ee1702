"""`indexer stats`: counts of the whole index and its breakdowns. No patient values.

A handful of scans of the hierarchy tables and the instance_groups summary (one row per
file at most), none of the elements.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import Connection, and_, case, func, or_, select

from ..dictionary import uid_name
from ..errors import ReportError
from ..schema import (
    DIRECTORY_PROBLEM,
    conflict_names,
    files,
    instance_groups,
    instances,
    patients,
    series,
    studies,
)
from .errors import count_errors
from .missing import Absent, absent_hierarchy, present_instance

BREAKDOWNS = ("modality", "sop-class", "transfer-syntax", "manufacturer", "study-year")


def collect_stats(conn: Connection, by: str | None = None) -> dict[str, Any]:
    """Counts of the whole index and its breakdowns (see BREAKDOWNS). No patient values.

    Keys: patients, patients_without_id (synthetic patients, one per study of files
    without a Patient ID), studies, series, instances (distinct SOP instances in the
    hierarchy), duplicate_copies (further files of those SOP instances), dicomdirs,
    files, files_by_status, bytes (size of the files read as DICOM), elements (data
    elements at every depth, file meta and items not counted), elements_per_instance
    {min, median, max}, errors, errors_by_reason, crawl_problems, warnings,
    duplicate_sop_instance_uids,
    instances_with_duplicate_uid, instances_outside_hierarchy (DICOMDIRs not counted),
    conflicts {"studies.patient": n, ...: rows whose files disagree on that attribute},
    missing_files, then by_modality, by_sop_class,
    by_transfer_syntax, by_manufacturer and by_study_year (lists of dicts, see
    collect_breakdown). With `by` (one of BREAKDOWNS) only that breakdown is computed
    and returned, under its key.
    """
    if by is not None:
        if by not in BREAKDOWNS:
            raise ReportError(_unknown_breakdown(by))
        return {_breakdown_key(by): collect_breakdown(conn, by)}
    data: dict[str, Any] = {}

    def count(table: Any) -> int:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())

    data["patients"], data["studies"], data["series"] = (
        count(patients),
        count(studies),
        count(series),
    )
    # Those that only files marked missing hold are not there (reports/missing.py).
    absent = absent_hierarchy(conn)
    data["patients"] -= absent.patients
    data["studies"] -= absent.studies
    data["series"] -= absent.series
    data["patients_without_id"] = (
        count(select(patients.c.id).where(patients.c.synthetic_study_uid != "").subquery())
        - absent.patients_without_id
    )
    groups = _instance_groups(conn)
    sop = _sop_instances(conn)
    data["instances"] = sop["instances"]
    data["duplicate_copies"] = sop["in_hierarchy"] - sop["instances"]
    data["dicomdirs"] = count(
        select(instances.c.file_id)
        .where(
            instances.c.series_ref.is_(None),
            instances.c.hierarchy_problem == DIRECTORY_PROBLEM,
            present_instance(conn),
        )
        .subquery()
    )
    by_status, dicom_bytes, syntaxes = _file_counts(conn)
    data["files"] = sum(by_status.values())
    data["files_by_status"] = dict(sorted(by_status.items()))
    data["bytes"] = dicom_bytes
    data["elements"] = sum(g.elements for g in groups)
    data["elements_per_instance"] = _min_median_max(conn)
    counted = count_errors(conn)  # the one definition of an error: reports/errors.py
    data["errors"] = counted.errors
    data["errors_by_reason"] = counted.errors_by_reason
    data["crawl_problems"] = counted.crawl_problems
    data["warnings"] = counted.warnings
    data["duplicate_sop_instance_uids"] = sop["duplicate_uids"]
    data["instances_with_duplicate_uid"] = sop["with_duplicate_uid"]
    data["instances_outside_hierarchy"] = (
        sum(g.instances for g in groups if not g.in_hierarchy) - data["dicomdirs"]
    )
    data["conflicts"] = _conflicts(conn)
    data["missing_files"] = by_status.get("missing", 0)
    data["by_modality"] = _by_modality(conn, groups, absent)
    data["by_sop_class"] = _by_sop_class(groups)
    data["by_transfer_syntax"] = _sorted_breakdown(
        [
            {"transfer_syntax_uid": uid, "name": uid_name(uid), "instances": n, "bytes": b}
            for uid, (n, b) in syntaxes.items()
        ]
    )
    data["by_manufacturer"] = _by_manufacturer(conn, groups, absent)
    data["by_study_year"] = _by_study_year(conn, groups, absent)
    return data


def _unknown_breakdown(by: str) -> str:
    return f"unknown breakdown {by!r}; choose one of: {', '.join(BREAKDOWNS)}"


def _file_counts(
    conn: Connection,
) -> tuple[dict[str, int], int, dict[str | None, list[int]]]:
    """Files per status; bytes of the files read as DICOM; [instances, bytes] per syntax."""
    by_status: dict[str, int] = defaultdict(int)
    dicom_bytes = 0
    syntaxes: dict[str | None, list[int]] = defaultdict(lambda: [0, 0])
    for status, syntax, n, size in conn.execute(
        select(
            files.c.status,
            files.c.transfer_syntax,
            func.count(),
            func.coalesce(func.sum(files.c.size), 0),
        ).group_by(files.c.status, files.c.transfer_syntax)
    ):
        by_status[status] += int(n)
        if status in ("indexed", "partial"):
            dicom_bytes += int(size)
            syntaxes[syntax][0] += int(n)
            syntaxes[syntax][1] += int(size)
    return by_status, dicom_bytes, syntaxes


def _sop_instances(conn: Connection) -> dict[str, int]:
    """One pass over the instances by SOP Instance UID (its index): distinct SOP instances in
    the hierarchy (a row without a UID is one), rows in the hierarchy, UIDs held by more
    than one row, and those rows."""
    uid = instances.c.sop_instance_uid
    per_uid = (
        select(
            uid.label("uid"),
            func.count().label("n"),
            func.count(instances.c.series_ref).label("placed"),
        )
        .where(present_instance(conn))
        .group_by(uid)
        .subquery()
    )
    blank = or_(per_uid.c.uid.is_(None), per_uid.c.uid == "")
    shared = and_(~blank, per_uid.c.n > 1)

    def total(expression: Any) -> Any:
        return func.coalesce(func.sum(expression), 0)

    row = conn.execute(
        select(
            total(case((blank, per_uid.c.placed), (per_uid.c.placed > 0, 1), else_=0)),
            total(per_uid.c.placed),
            total(case((shared, 1), else_=0)),
            total(case((shared, per_uid.c.n), else_=0)),
        )
    ).one()
    names = ("instances", "in_hierarchy", "duplicate_uids", "with_duplicate_uid")
    return dict(zip(names, map(int, row), strict=True))


def _conflicts(conn: Connection) -> dict[str, int]:
    """Patients, studies and series whose files disagree, per attribute (CONFLICTS)."""
    found: dict[str, int] = {}
    for table in (patients, studies, series):
        for bits, n in conn.execute(
            select(table.c.conflicts, func.count())
            .where(table.c.conflicts != 0)
            .group_by(table.c.conflicts)
        ):
            for name in conflict_names(table.name, int(bits)):
                key = f"{table.name}.{name}"
                found[key] = found.get(key, 0) + int(n)
    return dict(sorted(found.items()))


def _breakdown_key(by: str) -> str:
    return "by_" + by.replace("-", "_")


def _instance_groups(conn: Connection) -> list[Any]:
    """The instance_groups summary: instances per modality, SOP class, manufacturer, model, year."""
    return list(conn.execute(select(instance_groups).where(instance_groups.c.instances > 0)))


def _min_median_max(conn: Connection) -> dict[str, float | int | None]:
    # From the distribution of counts (few distinct values): the same SQL on both databases.
    histogram = sorted(
        (int(c), int(n))
        for c, n in conn.execute(
            select(instances.c.element_count, func.count())
            .where(present_instance(conn))
            .group_by(instances.c.element_count)
        )
    )
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
    return {
        "min": histogram[0][0],
        "median": int(median) if median == int(median) else median,
        "max": histogram[-1][0],
    }


def _sorted_breakdown(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    first = next(iter(rows[0])) if rows else ""
    rows.sort(key=lambda r: (-r["instances"], r[first] is None, str(r[first] or "")))
    return rows


def _sum_by(groups: list[Any], *columns: str) -> dict[tuple[Any, ...], int]:
    # An empty value and an absent one are the same absence: one row, shown as (none) / null
    # (instances keep a file's empty Manufacturer as "", series rows NULL).
    totals: dict[tuple[Any, ...], int] = defaultdict(int)
    for g in groups:
        totals[tuple(getattr(g, c) or None for c in columns)] += g.instances
    return totals


def _by_modality(
    conn: Connection, groups: list[Any], absent: Absent | None = None
) -> list[dict[str, Any]]:
    absent = absent if absent is not None else absent_hierarchy(conn)
    series_of = {
        m or None: (int(s) - absent.series_by_modality[m], int(st) - absent.studies_by_modality[m])
        for m, s, st in conn.execute(
            select(
                series.c.modality, func.count(), func.count(series.c.study_ref.distinct())
            ).group_by(series.c.modality)
        )
    }
    return _sorted_breakdown(
        [
            {
                "modality": m,
                "instances": n,
                "series": series_of.get(m, (0, 0))[0],
                "studies": series_of.get(m, (0, 0))[1],
            }
            for (m,), n in _sum_by(groups, "modality").items()
        ]
    )


def _by_sop_class(groups: list[Any]) -> list[dict[str, Any]]:
    return _sorted_breakdown(
        [
            {"sop_class_uid": u, "name": uid_name(u), "instances": n}
            for (u,), n in _sum_by(groups, "sop_class_uid").items()
        ]
    )


def _by_manufacturer(
    conn: Connection, groups: list[Any], absent: Absent | None = None
) -> list[dict[str, Any]]:
    gone = (absent if absent is not None else absent_hierarchy(conn)).series_by_model
    series_of = {
        (m or None, mo or None): int(n) - gone[(m, mo)]
        for m, mo, n in conn.execute(
            select(series.c.manufacturer, series.c.model, func.count()).group_by(
                series.c.manufacturer, series.c.model
            )
        )
    }
    in_tree = [g for g in groups if g.in_hierarchy]
    return _sorted_breakdown(
        [
            {"manufacturer": m, "model": mo, "series": series_of.get((m, mo), 0), "instances": n}
            for (m, mo), n in _sum_by(in_tree, "manufacturer", "model").items()
        ]
    )


def _by_study_year(
    conn: Connection, groups: list[Any], absent: Absent | None = None
) -> list[dict[str, Any]]:
    year = case(
        (func.length(studies.c.study_date) >= 4, func.substr(studies.c.study_date, 1, 4)),
        else_=None,
    )
    gone = (absent if absent is not None else absent_hierarchy(conn)).studies_by_year
    studies_of = {
        y: int(n) - gone[y] for y, n in conn.execute(select(year, func.count()).group_by(year))
    }
    in_tree = [g for g in groups if g.in_hierarchy]
    return _sorted_breakdown(
        [
            {"year": y, "studies": studies_of.get(y, 0), "instances": n}
            for (y,), n in _sum_by(in_tree, "study_year").items()
        ]
    )


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
        q = (
            select(files.c.transfer_syntax, func.count(), func.coalesce(func.sum(files.c.size), 0))
            .where(files.c.status.in_(("indexed", "partial")))
            .group_by(files.c.transfer_syntax)
        )
        return _sorted_breakdown(
            [
                {
                    "transfer_syntax_uid": u,
                    "name": uid_name(u),
                    "instances": int(n),
                    "bytes": int(b),
                }
                for u, n, b in conn.execute(q)
            ]
        )
    if by == "manufacturer":
        return _by_manufacturer(conn, _instance_groups(conn))
    if by == "study-year":
        return _by_study_year(conn, _instance_groups(conn))
    raise ReportError(_unknown_breakdown(by))
