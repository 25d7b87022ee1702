"""QIDO-RS (PS3.18 10.6) over the index: the query parameters turned into `find` filters, and
the matches turned into DICOM JSON with the attributes the standard requires per level.

Matching is `find`'s (reports/find.py): single values, UID lists, ``*``/``?`` wildcards,
date and time ranges, sequence paths with dots, private tags by creator, numeric ranges
and comparisons (``Rows>=512`` arrives as the key ``Rows>`` and the value ``512``).
Return attributes come from one instance of each match (its element rows), counts and
ModalitiesInStudy from the hierarchy, as `find` totals them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from pydicom.datadict import dictionary_VR
from sqlalchemy import Connection, and_, func, or_, select

from ..errors import ReportError, UnknownTagError
from ..rows import disk_path
from ..schema import files, instances, paths, series, studies
from ..tagkeys import parse as parse_tag_key
from .dicom_json import JsonDataset, datasets_of_rows, element_rows
from .filters import Filter
from .find import find_page
from .wado import IndexedFile, complete_cut_values

DEFAULT_LIMIT = 1000  # a search without `limit` returns at most this many matches
MAX_LIMIT = 10000

# The attributes PS3.18 Table 10.6.3-3/4/5 requires in the response, per level.
REQUIRED: dict[str, tuple[int, ...]] = {
    "studies": (
        0x00080020,
        0x00080030,
        0x00080050,
        0x00080056,
        0x00080061,
        0x00080090,
        0x00080201,
        0x00081190,
        0x00100010,
        0x00100020,
        0x00100030,
        0x00100040,
        0x0020000D,
        0x00200010,
        0x00201206,
        0x00201208,
    ),  # fmt: skip
    "series": (
        0x00080060,
        0x00080201,
        0x0008103E,
        0x00081190,
        0x0020000E,
        0x00200011,
        0x00201209,
        0x00400244,
        0x00400245,
        0x00400275,
    ),  # fmt: skip
    "instances": (
        0x00080016,
        0x00080018,
        0x00080056,
        0x00080201,
        0x00081190,
        0x00200013,
        0x00280008,
        0x00280010,
        0x00280011,
        0x00280100,
    ),  # fmt: skip
}
_PARENTS = {"studies": ("studies",), "series": ("studies", "series")}
_PARENTS["instances"] = ("studies", "series", "instances")
# Attributes the server writes itself: from the hierarchy, not from one file.
_COMPUTED = frozenset((0x00080056, 0x00080061, 0x00081190, 0x00201206, 0x00201208, 0x00201209))
_OPTIONS = frozenset(("includefield", "limit", "offset", "fuzzymatching"))
_TRUE = ("true", "1", "yes")
# Items of an includefield list: commas inside a tag such as (0029,"CREATOR",08) stay in it.
_LIST_ITEM = re.compile(r"(?:\([^)]*\)|[^,(])+")
_BARE_COMPARISON = re.compile(r"([^<>]+)([<>])(.+)\Z")


@dataclass
class QidoQuery:
    """A QIDO-RS request's parameters: filters, extra return attributes and paging."""

    filters: list[Filter] = field(default_factory=list)
    include: list[str] = field(default_factory=list)  # tag keys (tagkeys.parse)
    include_all: bool = False
    limit: int = DEFAULT_LIMIT
    offset: int = 0
    fuzzy: bool = False  # accepted; person names already match regardless of case


def parse_query(params: Iterable[tuple[str, str]]) -> QidoQuery:
    """The QidoQuery of decoded query parameters. ReportError for a bad one (the 400 line)."""
    query = QidoQuery()
    for raw_key, value in params:
        key = raw_key.strip()
        if key in _OPTIONS:
            _option(query, key, value)
        elif key[-1:] in ("<", ">", "!"):
            query.filters.append(Filter(key[:-1].strip(), key[-1] + "=", value))  # "Rows>=512"
        elif not value and (bare := _BARE_COMPARISON.match(key)):
            query.filters.append(Filter(bare[1].strip(), bare[2], bare[3]))  # "Rows>512"
        elif not value:
            query.include.append(_tag_key(key))  # "PatientName=": return it, match anything
        else:
            query.filters.append(Filter(key, "=", value))
    return query


def _option(query: QidoQuery, key: str, value: str) -> None:
    if key == "includefield":
        for part in (p.strip() for p in _LIST_ITEM.findall(value)):
            if part == "all":
                query.include_all = True
            elif part:
                query.include.append(_tag_key(part))
    elif key == "fuzzymatching":
        query.fuzzy = value.strip().lower() in _TRUE
    else:
        number = value.strip()
        if not number.isdigit():
            raise ReportError(f"{key}={value}: give a whole number of 0 or more")
        if key == "limit":
            query.limit = min(int(number), MAX_LIMIT) or DEFAULT_LIMIT
        else:
            query.offset = int(number)


def _tag_key(text: str) -> str:
    try:
        return parse_tag_key(text)
    except ReportError as err:
        raise ReportError(f"includefield {err}") from None


@dataclass
class SearchResult:
    datasets: list[JsonDataset]
    total: int  # matches before offset and limit


def search(
    conn: Connection,
    level: str,
    query: QidoQuery,
    *,
    root: str,
    study_uid: str | None = None,
    series_uid: str | None = None,
) -> SearchResult:
    """The studies, series or instances matching `query` (inside `study_uid`/`series_uid` for
    the nested forms), as DICOM JSON. `root` is the DICOMweb base URL of RetrieveURL."""
    filters = list(query.filters)
    if study_uid is not None:
        filters.append(Filter("StudyInstanceUID", "=", study_uid))
    if series_uid is not None:
        filters.append(Filter("SeriesInstanceUID", "=", series_uid))
    try:
        matches = find_page(conn, level, filters, offset=query.offset, limit=query.limit)
    except UnknownTagError:
        return SearchResult([], 0)  # a tag no file holds: nothing matches
    page = matches.rows
    files_of = _representatives(conn, level, page)
    wanted = _wanted(level, query)
    only = () if query.include_all else (_rows_of(wanted),)
    datasets, found = _datasets(conn, files_of.values(), *only)
    out = []
    for row in page:
        file_id = files_of.get(_uid_of(level, row))
        full = datasets.get(file_id, {}) if file_id is not None else {}
        if file_id is not None and found[file_id].cut:
            complete_cut_values(found[file_id].file, full, found[file_id].cut)
        out.append(_selected(level, row, full, wanted, query.include_all, root))
    return SearchResult(out, matches.total)


@dataclass
class _Found:
    file: IndexedFile
    cut: list[str]


def _uid_of(level: str, row: dict[str, Any]) -> str:
    if level == "studies":
        return str(row["study_instance_uid"])
    if level == "series":
        return str(row["series_instance_uid"])
    return str(row["path"])


def _representatives(conn: Connection, level: str, page: list[dict[str, Any]]) -> dict[str, int]:
    """{uid (instances: stored path): the file whose elements answer for it}: the first
    present file of the study or series."""
    if not page:
        return {}
    if level == "instances":
        column, keys = files.c.path, [r["path"] for r in page]
        query = select(files.c.path, files.c.id).where(column.in_(keys))
    else:
        column = studies.c.study_uid if level == "studies" else series.c.series_uid
        keys = [_uid_of(level, r) for r in page]
        query = (
            select(column, func.min(instances.c.file_id))
            .select_from(
                instances.join(files, files.c.id == instances.c.file_id)
                .join(series, series.c.id == instances.c.series_ref)
                .join(studies, studies.c.id == series.c.study_ref)
            )
            .where(column.in_(keys), files.c.status != "missing")
            .group_by(column)
        )
    return {str(k): int(v) for k, v in conn.execute(query)}


def _rows_of(wanted: list[str]) -> Any:
    """A condition on `paths` that keeps the rows the `wanted` attributes need: those
    top-level tags, the contents of those of them that are sequences, and (when a private
    key is wanted) the top-level private rows, whose creators say which block is whose."""
    tags = {int(t, 16) for key in wanted if (t := _public_tag(key))}
    keep = [paths.c.tag.in_(sorted(tags))]
    if any('"' in key for key in wanted):
        keep.append(paths.c.private_creator.is_not(None))
    nested = [
        paths.c.path.like(f"({tag >> 16:04X},{tag & 0xFFFF:04X})[%")
        for tag in sorted(tags)
        if _vr(tag) == "SQ"
    ]
    return or_(and_(paths.c.depth == 0, or_(*keep)), *nested)


def _public_tag(key: str) -> str | None:
    if len(key) == 8:
        return key
    found = _PUBLIC_KEY.match(key)
    return found.group(1) + found.group(2) if found else None


def _datasets(
    conn: Connection, file_ids: Iterable[int], *where: Any
) -> tuple[dict[int, JsonDataset], dict[int, _Found]]:
    ids = sorted(set(file_ids))
    if not ids:
        return {}, {}
    stored = {
        r[0]: r
        for r in conn.execute(
            select(files.c.id, files.c.path, files.c.size, files.c.mtime_ns).where(
                files.c.id.in_(ids)
            )
        )
    }
    datasets: dict[int, JsonDataset] = {}
    found: dict[int, _Found] = {}
    no_uri: Callable[[int], Callable[[str], str]] = lambda _fid: lambda _path: ""  # noqa: E731
    for file_id, dataset, cut in datasets_of_rows(element_rows(conn, ids, *where), no_uri):
        _, path, size, mtime_ns = stored[file_id]
        datasets[file_id] = dataset
        found[file_id] = _Found(
            IndexedFile(file_id, disk_path(path), int(size), int(mtime_ns), "", "", ""), cut
        )
    return datasets, found


def _wanted(level: str, query: QidoQuery) -> list[str]:
    """Tag keys to return: the required ones of the level and its parents, includefield and
    the matching keys (top-level: a nested key returns its top-level sequence)."""
    keys = [f"{tag:08X}" for parent in _PARENTS[level] for tag in REQUIRED[parent]]
    for key in query.include + [_safe_key(f.key) for f in query.filters]:
        if key:
            keys.append(key.split(".", 1)[0])
    return keys


def _safe_key(text: str) -> str:
    try:
        return parse_tag_key(text)
    except ReportError:
        return ""


_PUBLIC_KEY = re.compile(r"\(([0-9A-F]{4}),([0-9A-F]{4})\)\Z")
_PRIVATE_KEY = re.compile(r'\(([0-9A-F]{4}),"(.*)",([0-9A-F]{2})\)\Z')


def _json_tag(key: str, dataset: JsonDataset) -> str | None:
    """The DICOM JSON key (GGGGEEEE) of a tag key in `dataset`: a private tag by its creator,
    wherever that creator's block is in this file."""
    if len(key) == 8:
        return key
    found = _PUBLIC_KEY.match(key)
    if found:
        return found.group(1) + found.group(2)
    found = _PRIVATE_KEY.match(key)
    if found is None:
        return None
    group, creator, low = found.groups()
    for block in range(0x10, 0x100):
        element = dataset.get(f"{group}00{block:02X}")
        if element is not None and element.get("Value") == [creator]:
            return f"{group}{block:02X}{low}"
    return None


def _selected(
    level: str,
    row: dict[str, Any],
    full: JsonDataset,
    wanted: list[str],
    include_all: bool,
    root: str,
) -> JsonDataset:
    out: JsonDataset = dict(full) if include_all else {}
    for key in wanted:
        tag = _json_tag(key, full)
        if tag is None or tag in out:
            continue
        if tag in full:
            out[tag] = full[tag]
        elif int(tag, 16) not in _COMPUTED:
            out[tag] = {"vr": _vr(int(tag, 16))}
    out.update(_computed(level, row, root))
    return dict(sorted(out.items()))


def _vr(tag: int) -> str:
    try:
        return str(dictionary_VR(tag)).split(" or ")[0]
    except KeyError:
        return "UN"


def _computed(level: str, row: dict[str, Any], root: str) -> JsonDataset:
    study = row.get("study_instance_uid")
    url = f"{root}/studies/{study}"
    out: JsonDataset = {"00080056": {"vr": "CS", "Value": ["ONLINE"]}}
    if level == "studies":
        out["00201206"] = {"vr": "IS", "Value": [row["series"]]}
        out["00201208"] = {"vr": "IS", "Value": [row["instances"]]}
        modalities = row["modalities"]
        out["00080061"] = {"vr": "CS", "Value": modalities} if modalities else {"vr": "CS"}
    elif level == "series":
        url += f"/series/{row['series_instance_uid']}"
        out["00201209"] = {"vr": "IS", "Value": [row["instances"]]}
    else:
        url += f"/series/{row['series_instance_uid']}/instances/{row['sop_instance_uid']}"
    out["00081190"] = {"vr": "UR", "Value": [url]}
    return out
