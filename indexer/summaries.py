"""Counters kept at write time for the reports (tag usage, value counts).

The writer calls `add_files` after it inserted a batch's elements and
`remove_files` before it deletes files' elements, both inside the batch's
transaction, so the counters always agree with the elements table.

What is counted:

* ``instance_groups``: instances and their elements per modality, SOP class,
  manufacturer and model, and study year (the instance's own values; `indexer stats`);

and per usage group (modality + SOP class of the instance) and tag key:

* ``tag_usage``: instances that hold the tag, element rows (occurrences), and how
  many of those rows have a value that is not counted in ``tag_values``;
* ``tag_values``: for short values (at most MAX_TRACKED_LENGTH characters) of the
  VRs in TRACKED_VRS, instances and occurrences per value. UIDs, times, decimal
  and binary values are left out: they are nearly unique per instance and would
  copy the elements table. Reports count those on demand from the elements.

A tag key is what `indexer tags` lists (see tagkeys.format_component): nested tags are
keyed by the keys of their sequences, private tags by group, private creator and
the low byte of the element, so ``(0029,1010)`` in one file and ``(0029,1110)``
in another count as one tag when both blocks belong to the same creator. The
creators of enclosing private sequences are taken from the same file, so a key
is exact even when the same path text has different creators in other files.

New files are counted where they are read: the worker that walked a file turns
its rows into a `FileCounts` (`count_rows`), and the writer adds those with
`add_counted` and the instances it inserts with `add_instances`, reading nothing
back. Files re-indexed or pruned are taken out with `remove_files`, which reads
their rows back by primary key. All of these collect deltas on the connection; the deltas of a transaction are applied once, when it
commits, in one pass in key order (usage groups, keys, path keys, usage, instance
groups, values). Two writers on PostgreSQL then take the row locks of the summary
tables in the same order and cannot deadlock, whatever mix of re-indexing
(removals) and new files each batch holds, and a rolled back transaction leaves
the counters as they were.

Instance groups use the instance's own columns (manufacturer, model and study
date as its file gave them), which never change while the instance exists: the
series and study rows may be updated by later files (each column keeps the
smallest value any file gave), so counting by them would drift.
"""

from __future__ import annotations

import itertools
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import groupby
from operator import itemgetter
from typing import Any, NamedTuple

from sqlalchemy import Connection, Engine, event

from .db import fetch_in, marks
from .errors import IndexerError
from .records import CUT, ITEM, META, pickled_by_fields
from .tagkeys import format_component, group_id, normalized_tag
from .tagkeys import hash64 as stable_id

# VRs whose values are counted in tag_values (when at most MAX_TRACKED_LENGTH characters).
TRACKED_VRS = frozenset(
    {"AE", "AS", "AT", "CS", "DA", "IS", "LO", "LT", "PN", "SH", "SL", "SS", "ST", "SV", "UC", "UL",
     "UR", "US", "UT", "UV"}
)
MAX_TRACKED_LENGTH = 64

_PENDING = "indexer.summaries.pending"  # key in Connection.info (lives with the DBAPI connection)
_CHUNK = 500  # files read back per query
_CACHE_LIMIT = 400_000  # cached path and key entries per process
_LAYOUT_LIMIT = 20_000  # cached file layouts per process


@dataclass(slots=True)
class _PathInfo:
    path: str
    parent: str | None  # path of the enclosing sequence element (with its item numbers)
    component: str
    keyword: str  # keyword, or the component when the tag has none
    tag: int
    name: str
    creator: str | None


@dataclass(slots=True)
class _Key:
    id: int
    key: str
    keywords: str
    depth: int
    info: _PathInfo
    path_id: int  # the path this key object was made for (a key has one object per path)


@dataclass(slots=True)
class _Layout:
    """What the rows of a file tell before their values are read: the same for every file with
    the same paths, VRs and flags in the same order (files of one series usually are)."""

    keys: list[_Key | None]  # per row; None for rows not counted (file meta, items)
    objects: list[_Key]  # distinct key objects (for tag_keys and path_keys)
    occurrences: dict[int, int]  # key id -> counted rows
    untracked: dict[int, int]  # key id -> rows whose VR or flags keep their value out of tag_values
    candidates: list[tuple[int, int]]  # (row index, key id) of rows whose value may be counted
    usage: tuple[tuple[int, int, int], ...] = ()  # (key id, occurrences, untracked) per key
    token: int = 0  # unique among the layouts of every process of a run
    sent_in: str | None = None  # the run whose definitions of these keys went out with a file


@pickled_by_fields
@dataclass(slots=True)
class FileCounts:
    """One file's share of the tag summaries (counted by the worker that read the file)."""

    group: tuple[str, str]  # modality and SOP class of the instance ("" for absent)
    layout: int  # the layout's token: files with equal tokens have equal `usage`
    usage: tuple[tuple[int, int, int], ...]  # (key id, occurrences, untracked); shared by a layout's files
    untracked: dict[int, int]  # key id -> more untracked rows: values absent or too long to count
    values: tuple[tuple[int, str], ...]  # the (key id, value) pairs of the file, each once
    repeats: dict[tuple[int, str], int]  # pair -> occurrences beyond the first (values repeated in items)
    key_rows: list[tuple[Any, ...]] = field(default_factory=list)  # tag_keys rows not yet sent in this run
    path_keys: list[tuple[int, int]] = field(default_factory=list)  # (key id, path id) not yet sent


@dataclass
class Deltas:
    """Changes to the summary tables collected during one transaction."""

    groups: dict[int, tuple[str, str]] = field(default_factory=dict)
    keys: dict[int, _Key] = field(default_factory=dict)
    path_keys: set[tuple[int, int]] = field(default_factory=set)
    usage: dict[tuple[int, int], list[int]] = field(default_factory=dict)  # instances, occurrences, untracked
    values: dict[tuple[int, str, int], list[int]] = field(default_factory=dict)  # instances, occurrences
    key_rows: dict[int, tuple[Any, ...]] = field(default_factory=dict)  # tag_keys rows sent by workers
    layout_uses: dict[tuple[int, int], list[Any]] = field(default_factory=dict)  # (token, group) -> [usage, files]
    value_counts: dict[int, tuple[Counter[Any], Counter[Any]]] = field(default_factory=dict)  # group -> instances, repeats
    instance_groups: dict[int, tuple[Any, ...]] = field(default_factory=dict)  # id -> attributes
    instance_counts: dict[int, list[int]] = field(default_factory=dict)  # id -> instances, elements
    layouts: dict[int, _Layout] = field(default_factory=dict)  # added files' layouts, by id()


_paths: dict[int, _PathInfo] = {}
_top_keys: dict[int, _Key] = {}
_nested_keys: dict[tuple[int, int], _Key] = {}
_layouts: dict[tuple[tuple[Any, ...], ...], _Layout] = {}
_group_ids: dict[tuple[str, str], int] = {}
_layout_serial = itertools.count(1)


def _clear_caches() -> None:
    _paths.clear()
    _top_keys.clear()
    _nested_keys.clear()
    _layouts.clear()


def add_files(conn: Connection, file_ids: Sequence[int]) -> None:
    """Count the elements of `file_ids` (just inserted) into the summary tables."""
    _collect(conn, file_ids, 1)


def remove_files(conn: Connection, file_ids: Sequence[int]) -> None:
    """Take the elements of `file_ids` (about to be deleted) out of the summary tables."""
    _collect(conn, file_ids, -1)


def pending(conn: Connection) -> Deltas:
    """The deltas collected on `conn` and not yet applied (created when absent)."""
    deltas = conn.info.get(_PENDING)
    if deltas is None:
        deltas = conn.info[_PENDING] = Deltas()
    return deltas  # type: ignore[no-any-return]


def rebuild(conn: Connection) -> int:
    """Recount every summary table from the elements table; returns the instances counted.

    For indexes written before the summaries existed (migration 0002) and for repairs.
    Runs in the caller's transaction, one chunk of files at a time.
    """
    conn.info.pop(_PENDING, None)
    for table in ("instance_groups", "tag_values", "tag_usage", "path_keys", "tag_keys", "usage_groups"):
        conn.exec_driver_sql(f"DELETE FROM {table}")
    ids = [row[0] for row in conn.exec_driver_sql("SELECT file_id FROM instances ORDER BY file_id")]
    for start in range(0, len(ids), _CHUNK * 4):
        deltas = Deltas()
        _collect(conn, ids[start : start + _CHUNK * 4], 1, deltas)
        apply(conn, deltas)
    return len(ids)


def _collect(conn: Connection, file_ids: Sequence[int], sign: int, deltas: Deltas | None = None) -> None:
    if not file_ids:
        return
    if deltas is None:
        deltas = pending(conn)
    for found, rows in _read_files(conn, file_ids):
        for attributes in found.values():
            _count_instance(deltas, attributes, sign)
        for file_id, file_rows in groupby(rows, itemgetter(0)):
            instance = found.get(file_id)
            group = (instance[0] or "", instance[1] or "") if instance else ("", "")
            _count_file(deltas, group, list(file_rows), sign)


def element_keys(conn: Connection, file_ids: Sequence[int]) -> Iterator[tuple[int, int, int]]:
    """(file_id, ordinal, key id) of every counted element row of `file_ids`."""
    for _groups, rows in _read_files(conn, file_ids):
        for _file_id, grouped in groupby(rows, itemgetter(0)):
            file_rows = list(grouped)
            for key, row in zip(_layout(_columns(file_rows)).keys, file_rows):
                if key is not None:
                    yield row[0], row[5], key.id


# What _read_files learns about an instance: modality, SOP class, element count, has a series,
# and its own manufacturer, model and study date.
_Instance = tuple[Any, ...]


def _read_files(conn: Connection, file_ids: Sequence[int]) -> Iterator[tuple[dict[int, _Instance], list[Any]]]:
    """Per chunk of files: their instances' attributes and element rows (file order), paths cached."""
    ids = sorted(set(file_ids))
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        # The instance's own columns: they never change while it exists, so an instance is
        # counted in and out of the same group (its series and study rows may be updated).
        groups = {
            row[0]: tuple(row[1:])
            for row in fetch_in(conn, "SELECT file_id, modality, sop_class_uid, element_count, "
                              "series_ref IS NOT NULL, manufacturer, model, study_date FROM instances "
                              "WHERE file_id", chunk)
        }
        rows = fetch_in(conn, "SELECT file_id, path_id, vr, value, flags, ordinal FROM elements WHERE file_id",
                      chunk, "ORDER BY file_id, ordinal")
        _load_paths(conn, {row[1] for row in rows})
        yield groups, rows


def _load_paths(conn: Connection, needed: set[int]) -> None:
    """Make sure `_paths` holds every path id in `needed`."""
    missing = needed.difference(_paths)
    if len(_paths) + len(missing) > _CACHE_LIMIT:
        _clear_caches()
        missing = needed
    ordered = sorted(missing)
    for start in range(0, len(ordered), 2000):
        for pid, path, tag, keyword, name, creator in fetch_in(
                conn, "SELECT id, path, tag, keyword, name, private_creator FROM paths WHERE id",
                ordered[start : start + 2000]):
            know_path(pid, path, tag, keyword, name, creator)
    absent = missing.difference(_paths)
    if absent:
        raise IndexerError(f"{len(absent)} path ids of element rows are missing from the paths table "
                           f"(e.g. {min(absent)}): the index is inconsistent")


def _key_for(info: _PathInfo, pid: int, parent: _Key | None) -> _Key:
    if parent is None:
        found = _top_keys.get(pid)
        if found is None:
            found = _top_keys[pid] = _Key(stable_id(info.component), info.component, info.keyword, 0, info, pid)
        return found
    cache_key = (parent.id, pid)
    found = _nested_keys.get(cache_key)
    if found is None:
        key = f"{parent.key}.{info.component}"
        found = _nested_keys[cache_key] = _Key(
            stable_id(key), key, f"{parent.keywords}.{info.keyword}", parent.depth + 1, info, pid)
    return found


def _orphan_parent(parent_path: str) -> _Key:
    """The key of a sequence that is not among the file's rows (never expected): from its text."""
    key = ".".join(part[: part.index(")") + 1] for part in parent_path.split("."))
    info = _PathInfo(parent_path, None, key, key, 0, "", None)
    return _Key(stable_id(key), key, key, key.count("."), info, 0)


def _count_instance(deltas: Deltas, attributes: _Instance, sign: int) -> None:
    modality, sop_class, element_count, in_hierarchy, manufacturer, model, study_date = attributes
    year = study_date[:4] if study_date and len(study_date) >= 4 else None
    key = (modality, sop_class, manufacturer, model, year, bool(in_hierarchy))
    gid = stable_id("instances|" + "|".join("\0" if v is None else str(v) for v in key))
    deltas.instance_groups[gid] = key
    counts = deltas.instance_counts.get(gid)
    if counts is None:
        counts = deltas.instance_counts[gid] = [0, 0]
    counts[0] += sign
    counts[1] += sign * int(element_count or 0)


class Columns(NamedTuple):
    """A file's element rows, column by column, in file order."""

    path_ids: Sequence[int]
    vrs: Sequence[str]
    values: Sequence[str | None]
    flags: Sequence[int]


def _columns(rows: list[Any]) -> Columns:
    """Columns of the row tuples `_read_files` gives."""
    if not rows:
        return Columns((), (), (), ())
    _file_ids, path_ids, vrs, values, flags, _ordinals = zip(*rows)
    return Columns(path_ids, vrs, values, flags)


def _layout(rows: Columns) -> _Layout:
    """The keys of a file's rows (in file order), from the cache when another file had the same paths."""
    # Path ids, VRs and flags determine the keys (creators are in the ids) and which values count.
    signature = (tuple(rows.path_ids), tuple(rows.vrs), tuple(rows.flags))
    found = _layouts.get(signature)
    if found is not None:
        return found
    keys: list[_Key | None] = []
    key_of_path: dict[str, _Key] = {}
    occurrences: dict[int, int] = {}
    untracked: dict[int, int] = {}
    candidates: list[tuple[int, int]] = []
    for index, (pid, vr, flags) in enumerate(zip(rows.path_ids, rows.vrs, rows.flags)):
        if flags & (META | ITEM):
            keys.append(None)
            continue
        info = _paths[pid]
        parent = None
        if info.parent is not None:
            parent = key_of_path.get(info.parent)
            if parent is None:
                parent = _orphan_parent(info.parent)
        key = _key_for(info, pid, parent)
        key_of_path[info.path] = key
        keys.append(key)
        occurrences[key.id] = occurrences.get(key.id, 0) + 1
        if vr in TRACKED_VRS and not flags & CUT:
            candidates.append((index, key.id))
        else:
            untracked[key.id] = untracked.get(key.id, 0) + 1
    if len(_layouts) >= _LAYOUT_LIMIT:
        _layouts.clear()
    objects = list({id(k): k for k in keys if k is not None}.values())
    usage = tuple((kid, n, untracked.get(kid, 0)) for kid, n in occurrences.items())
    token = (os.getpid() << 32) | next(_layout_serial)
    found = _layouts[signature] = _Layout(keys, objects, occurrences, untracked, candidates, usage, token)
    return found


def _file_counts(group: tuple[str, str], rows: Columns) -> tuple[FileCounts, _Layout]:
    """The counts of one file's rows."""
    layout = _layout(rows)
    untracked: dict[int, int] = {}
    values: dict[tuple[int, str], int] = {}
    repeats: dict[tuple[int, str], int] = {}
    row_values = rows.values
    for index, kid in layout.candidates:
        value = row_values[index]
        if value is not None and len(value) <= MAX_TRACKED_LENGTH:
            pair = (kid, value)
            if pair in values:
                repeats[pair] = repeats.get(pair, 0) + 1
            else:
                values[pair] = 1
        else:
            untracked[kid] = untracked.get(kid, 0) + 1
    return FileCounts(group, layout.token, layout.usage, untracked, tuple(values), repeats), layout


def _count_file(deltas: Deltas, group: tuple[str, str], rows: list[Any], sign: int) -> None:
    counts, layout = _file_counts(group, _columns(rows))
    if sign > 0:
        deltas.layouts[id(layout)] = layout  # its keys and path keys go to tag_keys and path_keys
    _merge(deltas, counts, sign)


def _merge(deltas: Deltas, counts: FileCounts, sign: int) -> None:
    gid = _group_of(deltas, counts.group)
    usage = deltas.usage
    _add_usage(usage, gid, counts.usage, sign)
    for kid, untracked in counts.untracked.items():
        usage[(kid, gid)][2] += sign * untracked
    all_values = deltas.values
    for kid, value in counts.values:
        triple = (kid, value, gid)
        found = all_values.get(triple)
        if found is None:
            found = all_values[triple] = [0, 0]
        found[0] += sign
        found[1] += sign * (1 + counts.repeats.get((kid, value), 0))
    _add_definitions(deltas, counts)


def _group_of(deltas: Deltas, group: tuple[str, str]) -> int:
    gid = _group_ids.get(group)
    if gid is None:
        gid = _group_ids[group] = group_id(*group)
    deltas.groups[gid] = group
    return gid


def _add_usage(usage: dict[tuple[int, int], list[int]], gid: int,
               file_usage: tuple[tuple[int, int, int], ...], files: int) -> None:
    """Add `files` files (negative: take them out) of one layout to the usage counters of `gid`."""
    for kid, occurrences, untracked in file_usage:
        total = usage.get((kid, gid))
        if total is None:
            total = usage[(kid, gid)] = [0, 0, 0]
        total[0] += files
        total[1] += files * occurrences
        total[2] += files * untracked


def _add_definitions(deltas: Deltas, counts: FileCounts) -> None:
    if counts.key_rows:
        for row in counts.key_rows:
            deltas.key_rows[row[0]] = row
    if counts.path_keys:
        deltas.path_keys.update(counts.path_keys)


# -- counting in the worker processes --------------------------------------------------------------


def know_path(pid: int, path: str, tag: int, keyword: str, name: str, creator: str | None) -> None:
    """Tell this process what path `pid` is (workers learn paths from the records they walk)."""
    dot = path.rfind(".")
    parent = path[: path.rfind("[", 0, dot)] if dot >= 0 else None
    component = format_component(tag, creator)
    _paths[pid] = _PathInfo(path, parent, component, keyword or component, tag, name, creator)


def known_paths() -> dict[int, Any]:
    """The paths this process knows, by id (check membership before calling know_path)."""
    if len(_paths) > _CACHE_LIMIT:
        _clear_caches()
    return _paths


def count_rows(rows: Columns, group: tuple[str, str], run: str, sent: set[Any]) -> FileCounts:
    """A walked file's counts (every path of its rows known through know_path). The definitions of its keys go with the first file of this worker
    that uses them in run `run`; `sent` remembers which ones went."""
    counts, layout = _file_counts(group, rows)
    if layout.sent_in != run:
        layout.sent_in = run
        for key in layout.objects:
            if key.id not in sent:
                sent.add(key.id)
                counts.key_rows.append(_key_row(key))
            pair = (key.id, key.path_id)
            if pair not in sent:
                sent.add(pair)
                counts.path_keys.append(pair)
    return counts


# -- the writer's side ---------------------------------------------------------------------------


def add_counted(conn: Connection, counted: Sequence[FileCounts]) -> None:
    """Add the counts of files just inserted (made by count_rows in the workers)."""
    # The hot loop of the writer's share of the summaries: files of one layout add to the
    # usage counters once per transaction (expanded in apply), values go through Counter's
    # C loop; only what is unusual (untracked values, repeated ones) is added one by one.
    deltas = pending(conn)
    uses = deltas.layout_uses
    for counts in counted:
        gid = _group_of(deltas, counts.group)
        use = uses.get((counts.layout, gid))
        if use is None:
            uses[(counts.layout, gid)] = [counts.usage, 1]
        else:
            use[1] += 1
        for kid, untracked in counts.untracked.items():
            total = deltas.usage.get((kid, gid))
            if total is None:
                total = deltas.usage[(kid, gid)] = [0, 0, 0]
            total[2] += untracked
        found = deltas.value_counts.get(gid)
        if found is None:
            found = deltas.value_counts[gid] = (Counter(), Counter())
        found[0].update(counts.values)
        if counts.repeats:
            found[1].update(counts.repeats)
        _add_definitions(deltas, counts)


def _expand(deltas: Deltas) -> None:
    """Fold the per-layout and per-value tallies of add_counted into the usage and value deltas."""
    usage = deltas.usage
    for (_token, gid), (file_usage, files) in deltas.layout_uses.items():
        _add_usage(usage, gid, file_usage, files)
    deltas.layout_uses.clear()
    values = deltas.values
    for gid, (instances, repeats) in deltas.value_counts.items():
        for (kid, value), n in instances.items():
            triple = (kid, value, gid)
            found = values.get(triple)
            if found is None:
                found = values[triple] = [0, 0]
            found[0] += n
            found[1] += n + repeats.get((kid, value), 0)
    deltas.value_counts.clear()


def add_instances(conn: Connection, attributes: Sequence[_Instance]) -> None:
    """Count instances just inserted into instance_groups (attributes as `_read_files` gives)."""
    deltas = pending(conn)
    for instance in attributes:
        _count_instance(deltas, instance, 1)


def _key_row(key: _Key) -> tuple[Any, ...]:
    return (key.id, key.key, key.keywords, normalized_tag(key.info.tag, key.info.creator), key.depth,
            key.info.name, key.info.creator)


def apply(conn: Connection, deltas: Deltas) -> None:
    """Write `deltas` into the summary tables, every table in key order."""
    _expand(deltas)
    for layout in deltas.layouts.values():
        for key in layout.objects:
            deltas.keys.setdefault(key.id, key)
            deltas.path_keys.add((key.id, key.path_id))
    deltas.layouts.clear()
    for kid, key in deltas.keys.items():
        deltas.key_rows.setdefault(kid, _key_row(key))
    if deltas.groups:
        _upsert(conn, "usage_groups", ("id", "modality", "sop_class_uid"), 1, (),
                [(gid, m, s) for gid, (m, s) in sorted(deltas.groups.items())])
    if deltas.key_rows:
        _upsert(conn, "tag_keys", ("id", "key", "keywords", "tag", "depth", "name", "private_creator"),
                1, (), [row for _, row in sorted(deltas.key_rows.items())])
    if deltas.path_keys:
        _upsert(conn, "path_keys", ("key_id", "path_id"), 2, (), sorted(deltas.path_keys))
    usage_rows: list[tuple[Any, ...]] = [(k, g, *c) for (k, g), c in sorted(deltas.usage.items()) if any(c)]
    if usage_rows:
        _upsert(conn, "tag_usage", ("key_id", "group_id", "instances", "occurrences", "untracked"), 2,
                ("instances", "occurrences", "untracked"), usage_rows)
        _delete_emptied(conn, "tag_usage", ("key_id", "group_id"), [r[:2] for r in usage_rows if r[2] < 0])
    instance_rows: list[tuple[Any, ...]] = [
        (gid, *deltas.instance_groups[gid], *c) for gid, c in sorted(deltas.instance_counts.items()) if any(c)]
    if instance_rows:
        _upsert(conn, "instance_groups", ("id", "modality", "sop_class_uid", "manufacturer", "model",
                                          "study_year", "in_hierarchy", "instances", "elements"), 1,
                ("instances", "elements"), instance_rows)
        _delete_emptied(conn, "instance_groups", ("id",), [r[:1] for r in instance_rows if r[7] < 0])
    value_rows: list[tuple[Any, ...]] = [(k, v, g, *c) for (k, v, g), c in sorted(deltas.values.items()) if any(c)]
    if value_rows:
        _upsert(conn, "tag_values", ("key_id", "value", "group_id", "instances", "occurrences"), 3,
                ("instances", "occurrences"), value_rows)
        _delete_emptied(conn, "tag_values", ("key_id", "value", "group_id"),
                        [r[:3] for r in value_rows if r[3] < 0])


# Column types, for the arrays PostgreSQL receives.
_PG_TYPES = {
    "id": "bigint", "key_id": "bigint", "group_id": "bigint", "path_id": "bigint", "tag": "bigint",
    "instances": "bigint", "occurrences": "bigint", "untracked": "bigint", "elements": "bigint",
    "depth": "integer", "in_hierarchy": "boolean",
}


def _upsert(conn: Connection, table: str, columns: Sequence[str], key_columns: int,
            added: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
    """INSERT ... ON CONFLICT in the order of `rows`: add the `added` columns, else ignore.

    SQLite: one statement per row (executemany, in process). PostgreSQL: one statement
    for all rows, as arrays unnested in their order, instead of a round trip per row.
    """
    conflict = ", ".join(columns[:key_columns])
    if added:
        action = "DO UPDATE SET " + ", ".join(f"{c} = {table}.{c} + excluded.{c}" for c in added)
    else:
        action = "DO NOTHING"
    names = ", ".join(columns)
    if conn.dialect.name == "postgresql":
        arrays = ", ".join(f"%s::{_PG_TYPES.get(c, 'text')}[]" for c in columns)
        sql = (f"INSERT INTO {table} ({names}) SELECT {names} FROM unnest({arrays}) WITH ORDINALITY "
               f"AS u({names}, n) ORDER BY n ON CONFLICT ({conflict}) {action}")
        conn.exec_driver_sql(sql, tuple(list(column) for column in zip(*rows)))
        return
    sql = f"INSERT INTO {table} ({names}) VALUES ({marks(conn, len(columns))}) ON CONFLICT ({conflict}) {action}"
    conn.exec_driver_sql(sql, rows)  # type: ignore[arg-type]


def _delete_emptied(conn: Connection, table: str, columns: Sequence[str], keys: list[tuple[Any, ...]]) -> None:
    """Delete the rows of `keys` (just decremented) whose instance count reached zero."""
    if not keys:
        return
    if conn.dialect.name == "postgresql":
        arrays = ", ".join(f"%s::{_PG_TYPES.get(c, 'text')}[]" for c in columns)
        names = ", ".join(columns)
        conn.exec_driver_sql(f"DELETE FROM {table} WHERE ({names}) IN (SELECT * FROM unnest({arrays})) "
                             "AND instances <= 0", tuple(list(column) for column in zip(*keys)))
        return
    where = " AND ".join(f"{c} = {m}" for c, m in zip(columns, marks(conn, len(columns)).split(", ")))
    conn.exec_driver_sql(f"DELETE FROM {table} WHERE {where} AND instances <= 0", keys)  # type: ignore[arg-type]


@event.listens_for(Engine, "commit")
def _apply_on_commit(conn: Connection) -> None:
    # Runs inside the committing transaction, before the database commits it.
    deltas = conn.info.pop(_PENDING, None)
    if deltas is not None:
        apply(conn, deltas)


@event.listens_for(Engine, "rollback")
def _drop_on_rollback(conn: Connection) -> None:
    conn.info.pop(_PENDING, None)
