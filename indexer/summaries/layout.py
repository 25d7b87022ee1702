"""Tag-key layout: which tag key each element row of a file counts under (no database code).

A tag key is what `indexer tags` lists (see tagkeys.format_component): nested tags are
keyed by the keys of their sequences, private tags by group, private creator and
the low byte of the element, so ``(0029,1010)`` in one file and ``(0029,1110)``
in another count as one tag when both blocks belong to the same creator. The
creators of enclosing private sequences are taken from the same file, so a key
is exact even when the same path text has different creators in other files.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from ..records import CUT, ITEM, META
from ..tagkeys import format_component, normalized_tag
from ..tagkeys import hash64 as stable_id

# VRs whose values are counted in tag_values (when at most MAX_TRACKED_LENGTH characters).
TRACKED_VRS = frozenset(
    {
        "AE",
        "AS",
        "AT",
        "CS",
        "DA",
        "IS",
        "LO",
        "LT",
        "PN",
        "SH",
        "SL",
        "SS",
        "ST",
        "SV",
        "UC",
        "UL",
        "UR",
        "US",
        "UT",
        "UV",
    }
)
MAX_TRACKED_LENGTH = 64
_CACHE_LIMIT = 400_000  # cached path and key entries per process
_LAYOUT_LIMIT = 20_000  # cached file layouts per process


@dataclass(slots=True)
class PathInfo:
    path: str
    parent: str | None  # path of the enclosing sequence element (with its item numbers)
    component: str
    keyword: str  # keyword, or the component when the tag has none
    tag: int
    name: str
    creator: str | None


@dataclass(slots=True)
class Key:
    id: int
    key: str
    keywords: str
    depth: int
    info: PathInfo
    path_id: int  # the path this key object was made for (a key has one object per path)


@dataclass(slots=True)
class Layout:
    """What the rows of a file tell before their values are read: the same for every file with
    the same paths, VRs and flags in the same order (files of one series usually are)."""

    keys: list[Key | None]  # per row; None for rows not counted (file meta, items)
    objects: list[Key]  # distinct key objects (for tag_keys and path_keys)
    occurrences: dict[int, int]  # key id -> counted rows
    untracked: dict[int, int]  # key id -> rows whose VR or flags keep their value out of tag_values
    candidates: list[tuple[int, int]]  # (row index, key id) of rows whose value may be counted
    usage: tuple[tuple[int, int, int], ...] = ()  # (key id, occurrences, untracked) per key
    token: int = 0  # unique among the layouts of every process of a run
    sent_in: str | None = None  # the run whose definitions of these keys went out with a file


class Columns(NamedTuple):
    """A file's element rows, column by column, in file order."""

    path_ids: Sequence[int]
    vrs: Sequence[str]
    values: Sequence[str | None]
    flags: Sequence[int]


_paths: dict[int, PathInfo] = {}
_top_keys: dict[int, Key] = {}
_nested_keys: dict[tuple[int, int], Key] = {}
_layouts: dict[tuple[tuple[Any, ...], ...], Layout] = {}
_layout_serial = itertools.count(1)


def clear_caches() -> None:
    _paths.clear()
    _top_keys.clear()
    _nested_keys.clear()
    _layouts.clear()


def know_path(pid: int, path: str, tag: int, keyword: str, name: str, creator: str | None) -> None:
    """Tell this process what path `pid` is (workers learn paths from the records they walk)."""
    dot = path.rfind(".")
    parent = path[: path.rfind("[", 0, dot)] if dot >= 0 else None
    component = format_component(tag, creator)
    _paths[pid] = PathInfo(path, parent, component, keyword or component, tag, name, creator)


def known_paths() -> dict[int, Any]:
    """The paths this process knows, by id (check membership before calling know_path)."""
    if len(_paths) > _CACHE_LIMIT:
        clear_caches()
    return _paths


def _key_for(info: PathInfo, pid: int, parent: Key | None) -> Key:
    if parent is None:
        found = _top_keys.get(pid)
        if found is None:
            found = _top_keys[pid] = Key(
                stable_id(info.component), info.component, info.keyword, 0, info, pid
            )
        return found
    cache_key = (parent.id, pid)
    found = _nested_keys.get(cache_key)
    if found is None:
        key = f"{parent.key}.{info.component}"
        found = _nested_keys[cache_key] = Key(
            stable_id(key), key, f"{parent.keywords}.{info.keyword}", parent.depth + 1, info, pid
        )
    return found


def _orphan_parent(parent_path: str) -> Key:
    """The key of a sequence that is not among the file's rows (never expected): from its text."""
    key = ".".join(part[: part.index(")") + 1] for part in parent_path.split("."))
    info = PathInfo(parent_path, None, key, key, 0, "", None)
    return Key(stable_id(key), key, key, key.count("."), info, 0)


def layout_of(rows: Columns) -> Layout:
    """The keys of a file's rows (in file order), cached for files with the same paths."""
    # Path ids, VRs and flags determine the keys (creators are in the ids) and which values count.
    signature = (tuple(rows.path_ids), tuple(rows.vrs), tuple(rows.flags))
    found = _layouts.get(signature)
    if found is not None:
        return found
    keys: list[Key | None] = []
    key_of_path: dict[str, Key] = {}
    occurrences: dict[int, int] = {}
    untracked: dict[int, int] = {}
    candidates: list[tuple[int, int]] = []
    for index, (pid, vr, flags) in enumerate(zip(rows.path_ids, rows.vrs, rows.flags, strict=True)):
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
    found = _layouts[signature] = Layout(
        keys, objects, occurrences, untracked, candidates, usage, token
    )
    return found


def key_row(key: Key) -> tuple[Any, ...]:
    return (
        key.id,
        key.key,
        key.keywords,
        normalized_tag(key.info.tag, key.info.creator),
        key.depth,
        key.info.name,
        key.info.creator,
    )
