"""Worker-side counting: a walked file's share of the tag summaries (no database code).

New files are counted where they are read: the worker that walked a file turns its
rows into a `FileCounts` (`count_rows`) and the writer adds it to its transaction's
deltas without reading anything back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..records import pickled_by_fields
from .layout import MAX_TRACKED_LENGTH, Columns, Layout, key_row, layout_of


@pickled_by_fields
@dataclass(slots=True)
class FileCounts:
    """One file's share of the tag summaries (counted by the worker that read the file)."""

    group: tuple[str, str]  # modality and SOP class of the instance ("" for absent)
    layout: int  # the layout's token: files with equal tokens have equal `usage`
    usage: tuple[
        tuple[int, int, int], ...
    ]  # (key id, occurrences, untracked); shared by a layout's files
    untracked: dict[int, int]  # key id -> more untracked rows: values absent or too long to count
    values: tuple[tuple[int, str], ...]  # the (key id, value) pairs of the file, each once
    repeats: dict[
        tuple[int, str], int
    ]  # pair -> occurrences beyond the first (values repeated in items)
    key_rows: list[tuple[Any, ...]] = field(
        default_factory=list
    )  # tag_keys rows not yet sent in this run
    path_keys: list[tuple[int, int]] = field(default_factory=list)  # (key id, path id) not yet sent


def file_counts(group: tuple[str, str], rows: Columns) -> tuple[FileCounts, Layout]:
    """The counts of one file's rows."""
    layout = layout_of(rows)
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


def count_rows(rows: Columns, group: tuple[str, str], run: str, sent: set[Any]) -> FileCounts:
    """A walked file's counts (every path of its rows known through know_path).

    The definitions of its keys go with the first file of this worker that uses them in run
    `run`; `sent` remembers which ones went.
    """
    counts, layout = file_counts(group, rows)
    if layout.sent_in != run:
        layout.sent_in = run
        for key in layout.objects:
            if key.id not in sent:
                sent.add(key.id)
                counts.key_rows.append(key_row(key))
            pair = (key.id, key.path_id)
            if pair not in sent:
                sent.add(pair)
                counts.path_keys.append(pair)
    return counts
