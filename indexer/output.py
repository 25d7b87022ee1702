"""Rendering rows for people (aligned tables) and for scripts (JSON, CSV). No I/O of its own."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import sys
from collections.abc import Sequence
from enum import Enum
from typing import Any


class Format(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"


MIN_COLUMN = 6  # a column is never cut narrower than this


def terminal_width() -> int | None:
    """The width tables must fit: the terminal's when stdout is one, else None (never cut:
    a file or a pipe gets every character)."""
    if not sys.stdout.isatty():
        return None
    return shutil.get_terminal_size().columns


def render_table(
    columns: Sequence[str], rows: Sequence[Sequence[Any]], width: int | None = None
) -> str:
    """An aligned plain-text table; numbers right-aligned. With `width`, the widest cells are
    cut with an ellipsis until each line fits it; without, nothing is cut."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [len(c) for c in columns]
    for row in cells:
        for i, value in enumerate(row):
            widths[i] = max(widths[i], len(value))
    if width is not None:
        # Cut the cells first; the headings too only when cells alone cannot make it fit.
        widths = _fit(widths, [max(MIN_COLUMN, len(c)) for c in columns], width)
        widths = _fit(widths, [MIN_COLUMN] * len(widths), width)
        cells = [[_cut(v, w) for v, w in zip(row, widths, strict=False)] for row in cells]
        columns = [_cut(c, w) for c, w in zip(columns, widths, strict=True)]
    numeric = [
        all(
            isinstance(row[i], (int, float)) and not isinstance(row[i], bool)
            for row in rows
            if row[i] is not None
        )
        and rows != []
        for i in range(len(columns))
    ]
    lines = [
        "  ".join(
            c.ljust(w) if not n else c.rjust(w)
            for c, w, n in zip(columns, widths, numeric, strict=True)
        )
    ]
    lines.append("  ".join("-" * w for w in widths))
    for row in cells:
        lines.append(
            "  ".join(
                v.rjust(w) if n else v.ljust(w)
                for v, w, n in zip(row, widths, numeric, strict=False)
            )
        )
    return "\n".join(line.rstrip() for line in lines)


def _fit(widths: list[int], floors: list[int], width: int) -> list[int]:
    """Narrow the widest columns, one character at a time and none below its floor, until
    the line fits `width`."""
    widths = list(widths)
    excess = sum(widths) + 2 * (len(widths) - 1) - width
    while excess > 0:
        shrinkable = [i for i, w in enumerate(widths) if w > floors[i]]
        if not shrinkable:
            break  # at its floor: the terminal wraps what remains
        widest = max(shrinkable, key=lambda i: widths[i])
        widths[widest] -= 1
        excess -= 1
    return widths


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        text = f"{value:.4g}" if abs(value) < 1e6 else f"{value:.0f}"
    else:
        text = str(value)
    return _CONTROL.sub(" ", text)


# Control characters (C0, DEL, C1) of values read from files: a newline would break the
# row, and an escape sequence (ESC, CSI) would be run by the terminal that shows the table.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def render_json(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False, default=str)


def render_csv(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """CSV with its header line even when there are no rows (pandas reads that as an empty
    frame); None is an empty cell and booleans are `true`/`false`, as in the JSON."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([_csv_cell(v) for v in row] for row in rows)
    return out.getvalue()


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


_NOT_WORD = re.compile(r"[^0-9a-z]+")


def machine_key(label: str) -> str:
    """The snake_case key of a human label, for JSON and CSV: "files seen" -> files_seen,
    "not DICOM (skipped)" -> not_dicom_skipped, "files/s" -> files_per_s."""
    return _NOT_WORD.sub("_", label.lower().replace("/", " per ")).strip("_")
