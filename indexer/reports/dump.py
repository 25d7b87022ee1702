"""`indexer dump`: which files an indexed SOP Instance UID names, and one tag's elements.

The dump itself reads the file (reader.read_file); this module finds the file of an
indexed instance (checking it is still the file that was indexed) and picks the elements
of one tag key out of a file's records, the way `indexer tags` names them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, select

from ..errors import ReportError
from ..records import ITEM
from ..rows import disk_path
from ..schema import files, instances
from ..tagkeys import format_component
from ..tagkeys import parse as parse_tag_key


def indexed_files(conn: Connection, sop_instance_uid: str) -> list[str]:
    """The operating-system paths of the files indexed with `sop_instance_uid` (usually one;
    duplicates are kept by the index), in path order.

    Raises ReportError when no instance has the UID, or when a file is gone or has changed
    (size or modification time) since it was indexed. Messages name paths, never the UID.
    """
    query = (
        select(files.c.path, files.c.size, files.c.mtime_ns)
        .join(instances, instances.c.file_id == files.c.id)
        .where(instances.c.sop_instance_uid == sop_instance_uid.strip())
        .order_by(files.c.path)
    )
    found = list(conn.execute(query))
    if not found:
        raise ReportError("no indexed instance has that SOPInstanceUID")
    paths = []
    for stored, size, mtime_ns in found:
        path = disk_path(stored)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise ReportError(f"{stored}: gone since it was indexed") from None
        except OSError as err:
            raise ReportError(f"{stored}: cannot be read ({err.strerror})") from None
        if (st.st_size, st.st_mtime_ns) != (size, mtime_ns):
            raise ReportError(
                f"{stored}: changed since it was indexed; run indexer index on it again"
            )
        paths.append(path)
    return paths


def tag_elements(elements: Sequence[Any], tag: str) -> list[Any]:
    """The records of `elements` (one file's, in file order) under the tag key `tag` (a
    keyword, tag or sequence path, see tagkeys.parse; item numbers are ignored), each
    followed by its items and nested elements when it is a sequence.

    Raises ReportError when `tag` is not a tag key.
    """
    wanted = parse_tag_key(tag)
    keys: dict[str, str] = {}  # element path (with item numbers) -> its tag key
    picked: list[Any] = []
    inside: str | None = None  # path of the picked sequence being copied
    for r in elements:
        if inside is not None and r.path.startswith(inside + "["):
            picked.append(r)
            continue
        inside = None
        if r.flags & ITEM:
            continue
        # Parent sequence: the path up to the item number before the last dot (layout.know_path).
        dot = r.path.rfind(".")
        component = format_component(r.tag, r.private_creator)
        key = (
            component if dot < 0 else f"{keys.get(r.path[: r.path.rfind('[', 0, dot)])}.{component}"
        )
        keys[r.path] = key
        if key == wanted:
            picked.append(r)
            inside = r.path if r.vr == "SQ" else None
    return picked
