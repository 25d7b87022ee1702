"""`indexer tags`: tag usage across the index and the values of one tag.

Usage and counted values come from the summary tables that indexer.summaries keeps at
write time; the element rows are read only for the values of one tag that the summaries
do not count. Patient values (see is_patient_key) are left out unless asked for.
"""

from __future__ import annotations

import fnmatch
import heapq
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, and_, func, literal, or_, select
from sqlalchemy.sql.elements import ColumnElement

from .. import summaries
from ..dictionary import private_vr, public_vr, uid_names
from ..errors import UnknownTagError
from ..records import ITEM, META
from ..schema import elements, instance_groups, instances, path_keys, tag_keys, usage_groups
from ..schema import tag_usage as usage_table
from ..schema import tag_values as values_table
from ..tagkeys import group_id, hash64
from ..tagkeys import parse as parse_tag_key
from .missing import missing_files

_PATIENT_TAGS = {0x00080050, 0x00080051}  # AccessionNumber, IssuerOfAccessionNumberSequence
# The VRs whose values cannot hold a name, an ID or a date: numbers, codes, attribute tags
# (and the binary VRs, whose values are never stored).
_IMPERSONAL_VRS = {
    "AT", "CS", "DS", "FD", "FL", "IS", "SL", "SS", "SV", "UL", "US", "UV",
    "OB", "OD", "OF", "OL", "OV", "OW", "UN", "SQ",
}  # fmt: skip


def is_patient_key(tag: int, private_creator: str | None = None, name: str = "") -> bool:
    """True when values of a tag may identify a patient or a person: hidden unless asked for.

    Public tags: the Patient (0010) and Visit (0038) groups, AccessionNumber, every person
    name (VR PN) and every tag the DICOM dictionary does not know (its VR, so what it holds,
    is unknown). Private tags (odd groups, `tag` as 0xGGGG10EE when `private_creator` is
    given): hidden unless pydicom's private dictionary knows the tag under its creator with
    an impersonal VR (numbers, codes: _IMPERSONAL_VRS) and a name that does not mention a
    patient; a private tag without a creator is always hidden. Shown: group lengths and
    the private creator elements (their value is the creator, printed anyway). The rule goes
    by the dictionaries, the only VR the summaries know: a known non-PN tag that a file
    stores with VR PN is not caught.
    """
    group, element = tag >> 16, tag & 0xFFFF
    if element == 0x0000:
        return False  # group length (UL)
    if group & 1:
        if element <= 0x00FF:
            return element < 0x0010  # a private creator element, or a reserved one
        if private_creator is None or "patient" in name.lower():
            return True
        return not _impersonal(private_vr(tag, private_creator))
    if group in (0x0010, 0x0038) or tag in _PATIENT_TAGS:
        return True
    vr = public_vr(tag)
    return vr is None or "PN" in vr


def _impersonal(vr: str | None) -> bool:
    """A dictionary VR ("US", "US or SS", ...) whose every choice is in _IMPERSONAL_VRS."""
    return vr is not None and all(v.strip() in _IMPERSONAL_VRS for v in vr.split(" or "))


@dataclass
class _Scope:
    group_ids: list[int] | None  # None: every group
    instances: int
    filters: dict[str, str] = field(default_factory=dict)


def _scope(conn: Connection, modality: str | None, sop_class: str | None) -> _Scope:
    counts: dict[tuple[str, str], int] = defaultdict(int)
    for m, s, n in conn.execute(
        select(
            instance_groups.c.modality,
            instance_groups.c.sop_class_uid,
            func.sum(instance_groups.c.instances),
        ).group_by(instance_groups.c.modality, instance_groups.c.sop_class_uid)
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
    return column.in_(scope.group_ids)  # type: ignore[no-any-return]


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
    usage = _usage_per_key(conn, scope)
    wanted = [
        (row, is_patient_key(row.tag, row.private_creator, row.name))
        for row in conn.execute(select(tag_keys))
        if row.id in usage and _tag_wanted(row, private, path)
    ]
    distinct, top_values = _value_summary(conn, scope, top)
    result = []
    for row, patient in sorted(wanted, key=lambda w: w[0].key):
        n, occurrences, untracked = usage[row.id]
        result.append(
            {
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
                "top_values": None
                if patient and not patient_values
                else top_values.get(row.id, []),
            }
        )
    return {"instances": scope.instances, "filters": scope.filters, "tags": result}


def _usage_per_key(conn: Connection, scope: _Scope) -> dict[int, tuple[int, int, int]]:
    """{key id: (instances, occurrences, untracked occurrences)} in scope."""
    return {
        kid: (int(i), int(o), int(u))
        for kid, i, o, u in conn.execute(
            select(
                usage_table.c.key_id,
                func.sum(usage_table.c.instances),
                func.sum(usage_table.c.occurrences),
                func.sum(usage_table.c.untracked),
            )
            .where(_in_scope(usage_table.c.group_id, scope))
            .group_by(usage_table.c.key_id)
        )
    }


def _tag_wanted(row: Any, private: bool, path: str | None) -> bool:
    if private and not (row.tag >> 16) & 1:
        return False
    return (
        path is None
        or fnmatch.fnmatchcase(row.key, path)
        or fnmatch.fnmatchcase(row.keywords, path)
    )


def _value_summary(
    conn: Connection, scope: _Scope, top: int
) -> tuple[dict[int, int], dict[int, list[dict[str, Any]]]]:
    """Distinct counted values per key, the `top` most common: one ordered pass over tag_values."""
    q = (
        select(
            values_table.c.key_id,
            values_table.c.value,
            func.sum(values_table.c.instances),
            func.sum(values_table.c.occurrences),
        )
        .where(_in_scope(values_table.c.group_id, scope))
        .group_by(values_table.c.key_id, values_table.c.value)
        .order_by(values_table.c.key_id, values_table.c.value)
    )  # the primary key's order: no sort
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
    tops = {
        kid: [
            {"value": r.entry[1], "instances": r.entry[0], "occurrences": r.entry[2]}
            for r in sorted(heap, reverse=True)
        ]
        for kid, heap in best.items()
    }
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
    """The tag_keys row for what the user typed (see tagkeys.parse); UnknownTagError if absent."""
    key = parse_tag_key(text)
    row = conn.execute(select(tag_keys).where(tag_keys.c.id == hash64(key))).first()
    if row is not None and row.key == key:
        return row
    hint = ""
    last = key.rsplit(".", 1)[-1]
    candidates = [
        r.key
        for r in conn.execute(
            select(tag_keys.c.key)
            .where(tag_keys.c.key.like("%" + last))
            .order_by(tag_keys.c.key)
            .limit(11)
        )
    ]
    if candidates:
        more = ", ..." if len(candidates) > 10 else ""
        hint = f"; it occurs as: {', '.join(candidates[:10])}{more}"
    raise UnknownTagError(f"no tag {key} in the index{hint}")


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
    the element rows of the tag's paths (key_element_rows). Keys: tag, keyword,
    name, private_creator, instances, share, occurrences, distinct_values, source
    ("summary" or "elements"), values_hidden, values [{value, instances, occurrences}]
    sorted by instances, descending; value is null for binary values and sequences.
    """
    key = find_tag_key(conn, tag)
    scope = _scope(conn, modality, sop_class)
    hidden = is_patient_key(key.tag, key.private_creator, key.name) and not patient_values
    n, occurrences, untracked = (
        int(v or 0)
        for v in conn.execute(
            select(
                func.sum(usage_table.c.instances),
                func.sum(usage_table.c.occurrences),
                func.sum(usage_table.c.untracked),
            ).where(usage_table.c.key_id == key.id, _in_scope(usage_table.c.group_id, scope))
        ).one()
    )
    if untracked == 0:
        source = "summary"
        values = _values_from_summary(conn, key.id, scope)
    else:
        source = "elements"
        values = _values_from_elements(conn, key.id, scope)
    values.sort(
        key=lambda v: (-v["instances"], -v["occurrences"], v["value"] is None, v["value"] or "")
    )
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


def _values_from_summary(conn: Connection, key_id: int, scope: _Scope) -> list[dict[str, Any]]:
    return [
        {"value": v, "instances": int(i), "occurrences": int(o)}
        for v, i, o in conn.execute(
            select(
                values_table.c.value,
                func.sum(values_table.c.instances),
                func.sum(values_table.c.occurrences),
            )
            .where(values_table.c.key_id == key_id, _in_scope(values_table.c.group_id, scope))
            .group_by(values_table.c.value)
        )
    ]


def key_element_rows(
    conn: Connection, key_id: int, columns: Sequence[Any], *where: Any, files: Any = None
) -> list[Any]:
    """Element rows counted under the tag key `key_id`: (file_id, *columns), no META or items.

    The rows of the key's paths, read through the path index (schema.py), or in one pass over
    the elements table when the key holds a large share of the rows (see _by_path_index);
    `files`, a condition on elements.file_id naming a few files, reads those files' rows by
    primary key instead. A path shared by several keys (the same path text under different
    private creators in different files) is resolved per file.
    """
    key_paths = select(path_keys.c.path_id).where(path_keys.c.key_id == key_id)
    path_id: Any = elements.c.path_id
    sqlite = conn.dialect.name == "sqlite"
    if files is not None and sqlite:
        path_id = path_id.op("+")(0)  # SQLite's way to keep an index off a term: the PK serves
    q = select(elements.c.file_id, elements.c.ordinal, elements.c.path_id, *columns).where(
        path_id.in_(key_paths), elements.c.flags.op("&")(META | ITEM) == 0, *where
    )
    if files is not None:
        q = q.where(files)
    elif sqlite and not _by_path_index(conn, key_id):
        q = q.with_hint(elements, "NOT INDEXED", "sqlite")
    rows = conn.execute(q).all()
    shared = {
        r[0]
        for r in conn.execute(
            select(path_keys.c.path_id).where(
                path_keys.c.path_id.in_(key_paths), path_keys.c.key_id != key_id
            )
        )
    }
    if shared:
        files_to_check = sorted({r[0] for r in rows if r[2] in shared})
        keep = {(f, o) for f, o, k in summaries.element_keys(conn, files_to_check) if k == key_id}
        rows = [r for r in rows if r[2] not in shared or (r[0], r[1]) in keep]
    return [(r[0], *r[3:]) for r in rows]


# Above this share of all element rows, a key's rows are read in one pass over the table: each
# row found through the index costs a lookup by primary key, some ten rows of a plain pass.
_INDEXED_SHARE = 0.05


def _by_path_index(conn: Connection, key_id: int) -> bool:
    """Whether SQLite reads the rows of `key_id` best through the path index. It has no
    statistics (the index runs no ANALYZE; PostgreSQL's planner has its own), so the summaries
    tell: the key's share of the counted occurrences."""
    occurrences = func.coalesce(func.sum(usage_table.c.occurrences), 0)
    key = conn.execute(select(occurrences).where(usage_table.c.key_id == key_id)).scalar_one()
    total = conn.execute(select(occurrences)).scalar_one()
    return bool(key <= _INDEXED_SHARE * total)


def _values_from_elements(conn: Connection, key_id: int, scope: _Scope) -> list[dict[str, Any]]:
    where: list[Any] = []
    if scope.group_ids is not None:
        wanted = set(scope.group_ids)
        groups = conn.execute(
            select(usage_groups.c.id, usage_groups.c.modality, usage_groups.c.sop_class_uid)
        ).all()
        pairs = [(m, s) for gid, m, s in groups if gid in wanted]
        in_scope = (
            select(instances.c.file_id).where(
                or_(
                    *[
                        and_(
                            func.coalesce(instances.c.modality, "") == m,
                            func.coalesce(instances.c.sop_class_uid, "") == s,
                        )
                        for m, s in pairs
                    ]
                )
            )
            if pairs
            else None
        )
        if in_scope is None:
            return []
        where.append(elements.c.file_id.in_(in_scope))
    counts: dict[str | None, list[Any]] = {}
    gone = missing_files(conn)  # out of the summaries too
    for file_id, value in key_element_rows(conn, key_id, [elements.c.value], *where):
        if file_id in gone:
            continue
        entry = counts.get(value)
        if entry is None:
            entry = counts[value] = [set(), 0]
        entry[0].add(file_id)
        entry[1] += 1
    return [{"value": v, "instances": len(c[0]), "occurrences": c[1]} for v, c in counts.items()]


def usage_by_modality(conn: Connection) -> dict[str, tuple[int, dict[str, int]]]:
    """{modality ("" when none): (its instances, {tag key: instances that have the tag})}.

    Two grouped reads of the summaries (no element rows), for the heat map of
    `indexer report --html`; modalities as stored (`tags --modality` ignores case).
    """
    totals: dict[str, int] = defaultdict(int)
    for modality, n in conn.execute(
        select(instance_groups.c.modality, func.sum(instance_groups.c.instances)).group_by(
            instance_groups.c.modality
        )
    ):
        totals[modality or ""] += int(n)
    found: dict[str, dict[str, int]] = defaultdict(dict)
    for modality, key, n in conn.execute(
        select(usage_groups.c.modality, tag_keys.c.key, func.sum(usage_table.c.instances))
        .join(usage_groups, usage_groups.c.id == usage_table.c.group_id)
        .join(tag_keys, tag_keys.c.id == usage_table.c.key_id)
        .group_by(usage_groups.c.modality, tag_keys.c.key)
    ):
        found[modality][key] = int(n)
    return {m: (n, found.get(m, {})) for m, n in totals.items()}
