"""Counters kept at write time for the reports (tag usage, value counts).

The writer collects a transaction's changes in a `Deltas` (`add_counted`,
`add_instances` for files it inserts, `remove_files` before it deletes files'
elements) and calls `apply(conn, deltas)` inside the transaction, just before it
commits, so the counters always agree with the elements table; a rolled back
transaction simply drops its Deltas.

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

Tag keys are made in layout.py, a file's counts in counting.py (the workers).

New files are counted where they are read: the worker that walked a file turns
its rows into a `FileCounts` (`count_rows`), and the writer adds those with
`add_counted` and the instances it inserts with `add_instances`, reading nothing
back. Files re-indexed or pruned are taken out with `remove_files`, which reads
their rows back by primary key. `apply` writes the deltas once, in one pass in key
order (usage groups, keys, path keys, usage, instance groups, values). Two writers
on PostgreSQL then take the row locks of the summary tables in the same order and
cannot deadlock, whatever mix of re-indexing (removals) and new files each batch holds.

Instance groups use the instance's own columns (manufacturer, model and study
date as its file gave them), which never change while the instance exists: the
series and study rows may be updated by later files (each column keeps the
smallest value any file gave), so counting by them would drift.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import groupby
from operator import itemgetter
from typing import Any

from sqlalchemy import Connection, inspect

from ..db import fetch_in
from ..errors import IndexerError
from ..tagkeys import group_id
from ..tagkeys import hash64 as stable_id
from .counting import FileCounts, file_counts
from .layout import Columns, Key, Layout, key_row, know_path, known_paths, layout_of

_CHUNK = 500  # files read back per query
_group_ids: dict[tuple[str, str], int] = {}


@dataclass
class Deltas:
    """Changes to the summary tables collected during one transaction."""

    groups: dict[int, tuple[str, str]] = field(default_factory=dict)
    keys: dict[int, Key] = field(default_factory=dict)
    path_keys: set[tuple[int, int]] = field(default_factory=set)
    usage: dict[tuple[int, int], list[int]] = field(
        default_factory=dict
    )  # instances, occurrences, untracked
    values: dict[tuple[int, str, int], list[int]] = field(
        default_factory=dict
    )  # instances, occurrences
    key_rows: dict[int, tuple[Any, ...]] = field(
        default_factory=dict
    )  # tag_keys rows sent by workers
    layout_uses: dict[tuple[int, int], list[Any]] = field(
        default_factory=dict
    )  # (token, group) -> [usage, files]
    value_counts: dict[int, tuple[Counter[Any], Counter[Any]]] = field(
        default_factory=dict
    )  # group -> instances, repeats
    instance_groups: dict[int, tuple[Any, ...]] = field(default_factory=dict)  # id -> attributes
    instance_counts: dict[int, list[int]] = field(default_factory=dict)  # id -> instances, elements
    layouts: dict[int, Layout] = field(default_factory=dict)  # added files' layouts, by id()


def add_files(conn: Connection, file_ids: Sequence[int], deltas: Deltas | None = None) -> Deltas:
    """Count the elements of `file_ids` (already in the index) into `deltas` (a new one when
    None) and return it; nothing is written until `apply(conn, deltas)`."""
    return _collect(conn, file_ids, 1, deltas or Deltas())


def remove_files(conn: Connection, file_ids: Sequence[int], deltas: Deltas | None = None) -> Deltas:
    """Take the elements of `file_ids` (about to be deleted) out, into `deltas` (a new one when
    None), and return it; nothing is written until `apply(conn, deltas)`."""
    return _collect(conn, file_ids, -1, deltas or Deltas())


def rebuild(conn: Connection) -> int:
    """Recount every summary table from the elements table; returns the instances counted.

    For indexes written before the summaries existed (migration 0002) and for repairs.
    Files marked missing are left out, as the writer leaves them out.
    Runs in the caller's transaction, one chunk of files at a time.
    """
    # The delta tables come with migration 0006; migration 0002 rebuilds before they exist.
    present = set(inspect(conn).get_table_names())
    for table in (
        "instance_groups_deltas",
        "tag_values_deltas",
        "tag_usage_deltas",
        "instance_groups",
        "tag_values",
        "tag_usage",
        "path_keys",
        "tag_keys",
        "usage_groups",
    ):
        if table in present:
            conn.exec_driver_sql(f"DELETE FROM {table}")
    # Missing files keep their rows but are not counted (writer/catalog.py).
    ids = [
        row[0]
        for row in conn.exec_driver_sql(
            "SELECT i.file_id FROM instances i JOIN files f ON f.id = i.file_id "
            "WHERE f.status <> 'missing' ORDER BY i.file_id"
        )
    ]
    for start in range(0, len(ids), _CHUNK * 4):
        deltas = Deltas()
        _collect(conn, ids[start : start + _CHUNK * 4], 1, deltas)
        apply(conn, deltas)
    return len(ids)


def _collect(conn: Connection, file_ids: Sequence[int], sign: int, deltas: Deltas) -> Deltas:
    for found, rows in _read_files(conn, file_ids):
        for attributes in found.values():
            _count_instance(deltas, attributes, sign)
        for file_id, file_rows in groupby(rows, itemgetter(0)):
            instance = found.get(file_id)
            group = (instance[0] or "", instance[1] or "") if instance else ("", "")
            _count_file(deltas, group, list(file_rows), sign)
    return deltas


def element_keys(conn: Connection, file_ids: Sequence[int]) -> Iterator[tuple[int, int, int]]:
    """(file_id, ordinal, key id) of every counted element row of `file_ids`."""
    for _groups, rows in _read_files(conn, file_ids):
        for _file_id, grouped in groupby(rows, itemgetter(0)):
            file_rows = list(grouped)
            for key, row in zip(layout_of(_columns(file_rows)).keys, file_rows, strict=True):
                if key is not None:
                    yield row[0], row[5], key.id


# What _read_files learns about an instance: modality, SOP class, element count, has a series,
# and its own manufacturer, model and study date.
_Instance = tuple[Any, ...]


def _read_files(
    conn: Connection, file_ids: Sequence[int]
) -> Iterator[tuple[dict[int, _Instance], list[Any]]]:
    """Per chunk of files: their instances' attributes and element rows (file order)."""
    ids = sorted(set(file_ids))
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        # The instance's own columns: they never change while it exists, so an instance is
        # counted in and out of the same group (its series and study rows may be updated).
        groups = {
            row[0]: tuple(row[1:])
            for row in fetch_in(
                conn,
                "SELECT file_id, modality, sop_class_uid, element_count, "
                "series_ref IS NOT NULL, manufacturer, model, study_date FROM instances "
                "WHERE file_id",
                chunk,
            )
        }
        rows = fetch_in(
            conn,
            "SELECT file_id, path_id, vr, value, flags, ordinal FROM elements WHERE file_id",
            chunk,
            "ORDER BY file_id, ordinal",
        )
        _load_paths(conn, {row[1] for row in rows})
        yield groups, rows


def _load_paths(conn: Connection, needed: set[int]) -> None:
    """Make sure this process knows every path id in `needed` (see layout.know_path)."""
    paths = known_paths()  # clears the caches when they grew too large
    missing = needed.difference(paths)
    ordered = sorted(missing)
    for start in range(0, len(ordered), 2000):
        for pid, path, tag, keyword, name, creator in fetch_in(
            conn,
            "SELECT id, path, tag, keyword, name, private_creator FROM paths WHERE id",
            ordered[start : start + 2000],
        ):
            know_path(pid, path, tag, keyword, name, creator)
    absent = missing.difference(paths)
    if absent:
        raise IndexerError(
            f"{len(absent)} path ids of element rows are missing from the paths table "
            f"(e.g. {min(absent)}): the index is inconsistent"
        )


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


def _columns(rows: list[Any]) -> Columns:
    """Columns of the row tuples `_read_files` gives."""
    if not rows:
        return Columns((), (), (), ())
    _file_ids, path_ids, vrs, values, flags, _ordinals = zip(*rows, strict=True)
    return Columns(path_ids, vrs, values, flags)


def _count_file(deltas: Deltas, group: tuple[str, str], rows: list[Any], sign: int) -> None:
    counts, layout = file_counts(group, _columns(rows))
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


def _add_usage(
    usage: dict[tuple[int, int], list[int]],
    gid: int,
    file_usage: tuple[tuple[int, int, int], ...],
    files: int,
) -> None:
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


def add_counted(deltas: Deltas, counted: Sequence[FileCounts]) -> None:
    """Add to `deltas` the counts of files just inserted (made by count_rows in the workers)."""
    # The hot loop of the writer's share of the summaries: files of one layout add to the
    # usage counters once per transaction (expanded in apply), values go through Counter's
    # C loop; only what is unusual (untracked values, repeated ones) is added one by one.
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


def add_instances(deltas: Deltas, attributes: Sequence[_Instance]) -> None:
    """Add to `deltas` instances just inserted (attributes as `_read_files` gives)."""
    for instance in attributes:
        _count_instance(deltas, instance, 1)


def apply(conn: Connection, deltas: Deltas, *, deferred: bool = False) -> None:
    """Write `deltas` into the summary tables, every table in key order.

    Call it inside the transaction that collected them, just before it commits. `deferred`
    (one of several concurrent writers): the counters are appended to the delta tables, which
    no other writer waits on, for `merge_pending` to add up; definitions are written as usual.
    """
    _expand(deltas)
    for layout in deltas.layouts.values():
        for key in layout.objects:
            deltas.keys.setdefault(key.id, key)
            deltas.path_keys.add((key.id, key.path_id))
    deltas.layouts.clear()
    for kid, key in deltas.keys.items():
        deltas.key_rows.setdefault(kid, key_row(key))
    sql = summary_sql(conn)
    if deltas.groups:
        sql.upsert(
            conn,
            "usage_groups",
            ("id", "modality", "sop_class_uid"),
            1,
            (),
            [(gid, m, s) for gid, (m, s) in sorted(deltas.groups.items())],
        )
    if deltas.key_rows:
        sql.upsert(
            conn,
            "tag_keys",
            ("id", "key", "keywords", "tag", "depth", "name", "private_creator"),
            1,
            (),
            [row for _, row in sorted(deltas.key_rows.items())],
        )
    if deltas.path_keys:
        sql.upsert(conn, "path_keys", ("key_id", "path_id"), 2, (), sorted(deltas.path_keys))
    _apply_counters(conn, sql, deltas, deferred)


_INSTANCE_GROUP_COLUMNS = (
    "id",
    "modality",
    "sop_class_uid",
    "manufacturer",
    "model",
    "study_year",
    "in_hierarchy",
    "instances",
    "elements",
)


def _apply_counters(conn: Connection, sql: _SummarySql, deltas: Deltas, deferred: bool) -> None:
    """tag_usage, instance_groups, tag_values: add the counters, drop rows that reached zero;
    `deferred`: append them to the delta tables instead."""
    usage_rows = [(k, g, *c) for (k, g), c in sorted(deltas.usage.items()) if any(c)]
    _add_counters(
        conn,
        sql,
        "tag_usage",
        ("key_id", "group_id", "instances", "occurrences", "untracked"),
        2,
        2,
        usage_rows,
        deferred,
    )
    instance_rows = [
        (gid, *deltas.instance_groups[gid], *c)
        for gid, c in sorted(deltas.instance_counts.items())
        if any(c)
    ]
    _add_counters(
        conn, sql, "instance_groups", _INSTANCE_GROUP_COLUMNS, 1, 7, instance_rows, deferred
    )
    value_rows = [(k, v, g, *c) for (k, v, g), c in sorted(deltas.values.items()) if any(c)]
    _add_counters(
        conn,
        sql,
        "tag_values",
        ("key_id", "value", "group_id", "instances", "occurrences"),
        3,
        3,
        value_rows,
        deferred,
    )


def _add_counters(
    conn: Connection,
    sql: _SummarySql,
    table: str,
    columns: Sequence[str],
    key_columns: int,
    first_counter: int,
    rows: list[tuple[Any, ...]],
    deferred: bool = False,
) -> None:
    """Add the counter columns of `rows` (from `first_counter` on, "instances" first) to
    `table`, keyed by its first `key_columns` columns; delete rows whose instances reached
    zero. Columns between the key and the counters are attributes (instance_groups)."""
    if not rows:
        return
    if deferred:
        sql.append(conn, f"{table}_deltas", columns, rows)
        return
    sql.upsert(conn, table, columns, key_columns, columns[first_counter:], rows)
    emptied = [r[:key_columns] for r in rows if r[first_counter] < 0]
    if emptied:
        sql.delete_emptied(conn, table, columns[:key_columns], emptied)


_COUNTED_TABLES = (
    # table, columns, key columns, first counter: in the order apply writes them
    ("tag_usage", ("key_id", "group_id", "instances", "occurrences", "untracked"), 2, 2),
    ("instance_groups", _INSTANCE_GROUP_COLUMNS, 1, 7),
    ("tag_values", ("key_id", "value", "group_id", "instances", "occurrences"), 3, 3),
)


def merge_pending(conn: Connection) -> int:
    """Fold the delta tables the concurrent writers appended to into tag_usage,
    instance_groups and tag_values; returns the delta rows' keys merged.

    Call it in a transaction of its own: one merger runs at a time (an advisory lock on
    PostgreSQL), and the counted tables' rows are locked only for this short transaction,
    in key order, not by every writer's transaction.
    """
    sql = summary_sql(conn)
    sql.lock_merge(conn)
    merged = 0
    for table, columns, key_columns, first_counter in _COUNTED_TABLES:
        rows = [r for r in sql.merge(conn, table, columns, first_counter) if any(r[first_counter:])]
        merged += len(rows)
        _add_counters(conn, sql, table, columns, key_columns, first_counter, rows)
    return merged


class _SummarySql:
    """The statements `apply` runs, in SQLite's form: one executemany per table."""

    def upsert(
        self,
        conn: Connection,
        table: str,
        columns: Sequence[str],
        key_columns: int,
        added: Sequence[str],
        rows: list[tuple[Any, ...]],
    ) -> None:
        """INSERT ... ON CONFLICT in the order of `rows`: add the `added` columns, else ignore."""
        marks = ", ".join("?" * len(columns))
        sql = (
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks}) "
            f"ON CONFLICT ({', '.join(columns[:key_columns])}) {_conflict_action(table, added)}"
        )
        conn.exec_driver_sql(sql, rows)

    def delete_emptied(
        self, conn: Connection, table: str, columns: Sequence[str], keys: list[tuple[Any, ...]]
    ) -> None:
        """Delete the rows of `keys` (just decremented) whose instance count reached zero."""
        where = " AND ".join(f"{c} = ?" for c in columns)
        conn.exec_driver_sql(f"DELETE FROM {table} WHERE {where} AND instances <= 0", keys)

    def append(
        self, conn: Connection, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]]
    ) -> None:
        """Plain INSERT of `rows` (a delta table: no key, nobody waits on its rows)."""
        marks = ", ".join("?" * len(columns))
        conn.exec_driver_sql(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows)

    def lock_merge(self, conn: Connection) -> None:
        """One merger at a time (SQLite: its single writer already is)."""

    def merge(
        self, conn: Connection, table: str, columns: Sequence[str], first_counter: int
    ) -> list[tuple[Any, ...]]:
        """Move the rows of `table`_deltas into `table`, summed per key and attributes; return
        the rows merged, as (key..., instances)."""
        head, counters = columns[:first_counter], columns[first_counter:]
        rows = [
            tuple(r)
            for r in conn.exec_driver_sql(
                f"SELECT {', '.join(head)}, {', '.join(f'SUM({c})' for c in counters)} "
                f"FROM {table}_deltas GROUP BY {', '.join(head)} ORDER BY {', '.join(head)}"
            )
        ]
        conn.exec_driver_sql(f"DELETE FROM {table}_deltas")
        return rows


# The advisory lock of the one merger of the delta tables (any 64-bit constant of our own).
_PG_MERGE_LOCK = 0x1D1C0DE1
# Column types, for the arrays PostgreSQL receives.
_PG_TYPES = {
    "id": "bigint",
    "key_id": "bigint",
    "group_id": "bigint",
    "path_id": "bigint",
    "tag": "bigint",
    "instances": "bigint",
    "occurrences": "bigint",
    "untracked": "bigint",
    "elements": "bigint",
    "depth": "integer",
    "in_hierarchy": "boolean",
}


class _PostgresqlSummarySql(_SummarySql):
    """One statement per table for all rows, as arrays unnested in their order (not a round
    trip per row)."""

    def upsert(
        self,
        conn: Connection,
        table: str,
        columns: Sequence[str],
        key_columns: int,
        added: Sequence[str],
        rows: list[tuple[Any, ...]],
    ) -> None:
        names = ", ".join(columns)
        sql = (
            f"INSERT INTO {table} ({names}) SELECT {names} FROM unnest({_arrays(columns)}) "
            f"WITH ORDINALITY AS u({names}, n) ORDER BY n "
            f"ON CONFLICT ({', '.join(columns[:key_columns])}) {_conflict_action(table, added)}"
        )
        conn.exec_driver_sql(sql, tuple(list(column) for column in zip(*rows, strict=True)))

    def delete_emptied(
        self, conn: Connection, table: str, columns: Sequence[str], keys: list[tuple[Any, ...]]
    ) -> None:
        conn.exec_driver_sql(
            f"DELETE FROM {table} WHERE ({', '.join(columns)}) IN "
            f"(SELECT * FROM unnest({_arrays(columns)})) AND instances <= 0",
            tuple(list(column) for column in zip(*keys, strict=True)),
        )

    def append(
        self, conn: Connection, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]]
    ) -> None:
        names = ", ".join(columns)
        conn.exec_driver_sql(
            f"INSERT INTO {table} ({names}) SELECT * FROM unnest({_arrays(columns)})",
            tuple(list(column) for column in zip(*rows, strict=True)),
        )

    def lock_merge(self, conn: Connection) -> None:
        conn.exec_driver_sql("SELECT pg_advisory_xact_lock(%s)", (_PG_MERGE_LOCK,))

    def merge(
        self, conn: Connection, table: str, columns: Sequence[str], first_counter: int
    ) -> list[tuple[Any, ...]]:
        # DELETE ... RETURNING takes exactly the delta rows committed before this statement;
        # writers go on appending meanwhile (their rows wait for the next merge).
        head, counters = columns[:first_counter], columns[first_counter:]
        names = ", ".join(head)
        sums = ", ".join(f"SUM({c})::bigint" for c in counters)
        return [
            tuple(r)
            for r in conn.exec_driver_sql(
                f"WITH taken AS (DELETE FROM {table}_deltas RETURNING *) "
                f"SELECT {names}, {sums} FROM taken GROUP BY {names} ORDER BY {names}"
            )
        ]


def summary_sql(conn: Connection) -> _SummarySql:
    """The statements of `apply` for the database behind `conn`: the one place where the
    summaries tell SQLite from PostgreSQL."""
    return _PostgresqlSummarySql() if conn.dialect.name == "postgresql" else _SummarySql()


def _conflict_action(table: str, added: Sequence[str]) -> str:
    if not added:
        return "DO NOTHING"
    return "DO UPDATE SET " + ", ".join(f"{c} = {table}.{c} + excluded.{c}" for c in added)


def _arrays(columns: Sequence[str]) -> str:
    return ", ".join(f"%s::{_PG_TYPES.get(c, 'text')}[]" for c in columns)
