"""paths stored losslessly: a backslash doubled, a byte that is not UTF-8 as \\xHH

Revision ID: 0003_paths
Revises: 0002
Create Date: 2026-12-02 15:00:00

Before this revision a path that was not valid UTF-8 was stored with its bytes 0x80-0xFF as
`\\xHH` and every other character as it is, and a valid UTF-8 path as it is: the byte 0xFF
and a file literally named `\\xff` gave the same text. From now on a backslash that comes
before a backslash, a non-UTF-8 byte or `xHH` is doubled (see indexer/rows.py, stored_path).
The old texts of files.path and errors.path that hold a backslash are rewritten; only those
can change.

The scheme is copied here, not imported: a migration must keep doing what it did when the
code moves on.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable

import sqlalchemy as sa
from alembic import op

revision = "0003_paths"
down_revision = "0002"
branch_labels = None
depends_on = None

_OLD_BYTE = re.compile(r"\\x([89a-f][0-9a-f])")  # what the old scheme wrote for a byte
_NEW_ESCAPE = re.compile(r"\\(?:\\|x([0-9a-fA-F]{2}))")
_AMBIGUOUS_BACKSLASH = re.compile(r"\\(?=[\\\udc80-\udcff]|x[0-9a-fA-F]{2})")


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def _new_text(raw: bytes) -> str:
    """The new scheme: text of the bytes on disk."""
    escaped = _AMBIGUOUS_BACKSLASH.sub(r"\\\\", os.fsdecode(raw))
    return escaped.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _old_bytes(old: str) -> bytes:
    """The bytes on disk of a path stored by the old scheme.

    Its text is ambiguous only where it holds `\\xHH` (HH 80-FF). It was a byte when reading
    it so gives a path that is not UTF-8 (the old scheme wrote valid UTF-8 paths as they are)
    unless the disk holds the literal name and not the byte one.
    """
    literal = old.encode("utf-8")
    parts = _OLD_BYTE.split(old)  # text, byte, text, byte, ..., text
    raw = b"".join(
        bytes((int(part, 16),)) if n % 2 else part.encode("utf-8") for n, part in enumerate(parts)
    )
    if raw == literal or _is_utf8(raw):
        return literal
    if os.path.lexists(literal) and not os.path.lexists(raw):
        return literal
    return raw


def _upgraded(old: str) -> str:
    return _new_text(_old_bytes(old))


def _downgraded(new: str) -> str:
    out = bytearray()
    start = 0
    for match in _NEW_ESCAPE.finditer(new):
        out += new[start : match.start()].encode("utf-8")
        out += bytes((int(match[1], 16),)) if match[1] else b"\\"
        start = match.end()
    out += new[start:].encode("utf-8")
    return bytes(out).decode("utf-8", "backslashreplace")


def _rewrite(convert: Callable[[str], str]) -> None:
    conn = op.get_bind()
    for name, unique in (("files", True), ("errors", False)):
        table = sa.table(name, sa.column("id", sa.Integer), sa.column("path", sa.Text))
        found = conn.execute(
            sa.select(table.c.id, table.c.path).where(table.c.path.contains("\\", autoescape=True))
        )
        changed = [(row.id, new) for row in found if (new := convert(row.path)) != row.path]
        if not changed:
            continue
        update = (
            table.update()
            .where(table.c.id == sa.bindparam("row_id"))
            .values(path=sa.bindparam("new_path"))
        )
        if unique:
            # Through names no stored path has (they are absolute): a row's new path may be
            # another row's old one.
            conn.execute(update, [{"row_id": i, "new_path": f"migrating {i}"} for i, _ in changed])
        conn.execute(update, [{"row_id": i, "new_path": p} for i, p in changed])


def upgrade() -> None:
    _rewrite(_upgraded)


def downgrade() -> None:
    # Two paths that the old scheme cannot tell apart fail files' UNIQUE here, as they did then.
    _rewrite(_downgraded)
