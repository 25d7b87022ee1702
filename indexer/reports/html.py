"""`indexer report --html`: one self-contained HTML page about the index, to look at.

The figures come from the other reports (collect_stats, tag_usage) and a few small
queries of the errors, duplicate and missing files; charts are inline SVG (charts.py).
The page fetches nothing (its Content-Security-Policy forbids it, and it has no script),
escapes every value read from files, and holds no patient value unless asked for: the
patient tags (tags.is_patient_key) show their counts, and their values only with
`patient_values`. It is written with mode 0600, like the index it describes.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, func, select

from ..errors import ReportError
from ..schema import errors, files, instances, tag_keys
from .charts import bar_chart, column_chart, cut, heat_map, text
from .missing import present_instance
from .stats import collect_stats
from .tags import is_patient_key, tag_usage, usage_by_modality

EXAMPLES_PER_REASON = 3  # example paths listed under each error reason
LISTED = 20  # duplicate UIDs, missing files, patient tags, private creators listed at most
HEAT_MODALITIES = 10  # columns of the heat map: the modalities with the most instances
HEAT_TAGS_PER_MODALITY = 8  # rows: the union of each modality's most used tags ...
HEAT_ROWS = 40  # ... at most this many
BARS = 15  # bars per chart; a line counts the rest

# Nothing may load: no script, image, font or frame; only the inline style sheet applies.
CSP = "default-src 'none'; style-src 'unsafe-inline'"


def collect_report(conn: Connection, *, patient_values: bool = False) -> dict[str, Any]:
    """Everything the HTML page shows, as plain data (no HTML).

    Keys: stats (collect_stats), tag_count (tag keys in the index), heat_map {modalities,
    tags, shares (per tag, per modality, 0 to 1), in_every_instance}, private_creators
    [{private_creator, tags, instances}], patient_tags [{tag, keyword, instances,
    top_values (None unless patient_values)}], errors [{severity, reason, count,
    examples [{path, message}]}], duplicates [{sop_instance_uid, paths}], missing_paths,
    patient_values.
    """
    stats = collect_stats(conn)
    usage = tag_usage(conn, top=3, patient_values=patient_values)
    patient_keys = {
        row.key
        for row in conn.execute(
            select(tag_keys.c.key, tag_keys.c.tag, tag_keys.c.private_creator, tag_keys.c.name)
        )
        if is_patient_key(row.tag, row.private_creator, row.name)
    }
    return {
        "stats": stats,
        "patient_values": patient_values,
        "tag_count": len(usage["tags"]),
        "heat_map": _heat_map(conn, stats, usage),
        "private_creators": _private_creators(usage["tags"]),
        "patient_tags": _patient_tags(usage["tags"], patient_keys, patient_values),
        "errors": _errors_by_reason(conn),
        "duplicates": _duplicates(conn),
        "missing_paths": _missing_paths(conn),
    }


def _label(tag: dict[str, Any]) -> str:
    return str(tag["keyword"] or tag["tag"])


def _heat_map(conn: Connection, stats: dict[str, Any], usage: dict[str, Any]) -> dict[str, Any]:
    """Share of each modality's instances that have a tag, for each modality's most used tags.

    Tags in every instance of the index say nothing about modalities and are left out (their
    number is given instead)."""
    total = usage["instances"]
    everywhere = {t["tag"] for t in usage["tags"] if t["instances"] == total}
    labels = {t["tag"]: _label(t) for t in usage["tags"]}
    by_modality = usage_by_modality(conn)
    modalities = [m["modality"] or "" for m in stats["by_modality"][:HEAT_MODALITIES]]
    shares: list[dict[str, float]] = []
    chosen: set[str] = set()
    for modality in modalities:
        instances, counts = by_modality.get(modality, (0, {}))
        shares.append({k: n / instances for k, n in counts.items()} if instances else {})
        ranked = sorted(
            (k for k in counts if k not in everywhere and k in labels),
            key=lambda k: (-counts[k], k),
        )
        chosen.update(ranked[:HEAT_TAGS_PER_MODALITY])
    overall = {t["tag"]: t["instances"] for t in usage["tags"]}
    keys = sorted(chosen, key=lambda k: (-overall.get(k, 0), k))[:HEAT_ROWS]
    return {
        "modalities": [m or "(none)" for m in modalities],
        "tags": [labels[k] for k in keys],
        "shares": [[row.get(k, 0.0) for row in shares] for k in keys],
        "in_every_instance": len(everywhere),
    }


def _private_creators(tags: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per private creator: its tag keys and the instances that have any of them."""
    found: dict[str, dict[str, Any]] = {}
    for t in tags:
        creator = t["private_creator"]
        if creator is None:
            continue
        entry = found.setdefault(creator, {"private_creator": creator, "tags": 0, "instances": 0})
        entry["tags"] += 1
        # The creator element is in every instance that has a tag of its block.
        entry["instances"] = max(entry["instances"], t["instances"])
    return sorted(found.values(), key=lambda e: (-e["instances"], e["private_creator"]))


def _patient_tags(
    tags: list[dict[str, Any]], patient_keys: set[str], patient_values: bool
) -> list[dict[str, Any]]:
    ranked = sorted(
        (t for t in tags if t["tag"] in patient_keys),
        key=lambda t: (t["private_creator"] is not None, -t["instances"], t["tag"]),
    )  # public tags first: their names say what they hold
    return [
        {
            "tag": t["tag"],
            "keyword": t["keyword"],
            "instances": t["instances"],
            "top_values": t["top_values"] if patient_values else None,
        }
        for t in ranked[:LISTED]
    ]


def _errors_by_reason(conn: Connection) -> list[dict[str, Any]]:
    """Errors, then warnings, per reason (most first), each with a few example paths."""
    counts = conn.execute(
        select(errors.c.severity, errors.c.reason, func.count()).group_by(
            errors.c.severity, errors.c.reason
        )
    ).all()
    result = []
    for severity, reason, n in sorted(counts, key=lambda r: (r[0] != "error", -r[2], r[1])):
        examples = conn.execute(
            select(errors.c.path, func.min(errors.c.message))
            .where(errors.c.severity == severity, errors.c.reason == reason)
            .group_by(errors.c.path)
            .order_by(errors.c.path)
            .limit(EXAMPLES_PER_REASON)
        ).all()
        result.append(
            {
                "severity": severity,
                "reason": reason,
                "count": int(n),
                "examples": [{"path": p, "message": m} for p, m in examples],
            }
        )
    return result


def _duplicates(conn: Connection) -> list[dict[str, Any]]:
    """SOP Instance UIDs held by more than one present file (most copies first), with paths."""
    uid = instances.c.sop_instance_uid
    shared = conn.execute(
        select(uid, func.count())
        .where(uid.is_not(None), uid != "", present_instance(conn))
        .group_by(uid)
        .having(func.count() > 1)
        .order_by(func.count().desc(), uid)
        .limit(LISTED)
    ).all()
    paths: dict[str, list[str]] = defaultdict(list)
    if shared:
        for u, path in conn.execute(
            select(uid, files.c.path)
            .join(files, files.c.id == instances.c.file_id)
            .where(uid.in_([u for u, _ in shared]), present_instance(conn))
            .order_by(files.c.path)
        ):
            paths[u].append(path)
    return [{"sop_instance_uid": u, "paths": paths[u]} for u, _ in shared]


def _missing_paths(conn: Connection) -> list[str]:
    return list(
        conn.execute(
            select(files.c.path)
            .where(files.c.status == "missing")
            .order_by(files.c.path)
            .limit(LISTED)
        ).scalars()
    )


# -- the page -------------------------------------------------------------------------------

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px auto; max-width: 1100px; color: #222;
  padding: 0 16px; }
h1 { font-size: 24px; margin-bottom: 4px; } h2 { font-size: 18px; margin-top: 32px;
  border-bottom: 1px solid #ddd; padding-bottom: 4px; }
.meta { color: #666; font-size: 13px; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); gap: 10px; }
.card { background: #f3f6fa; border-radius: 6px; padding: 10px 12px; }
.card b { display: block; font-size: 22px; } .card span { color: #555; font-size: 13px; }
.card.bad { background: #fbeaea; }
table { border-collapse: collapse; font-size: 13px; margin: 8px 0; }
td, th { border-bottom: 1px solid #eee; padding: 3px 8px; text-align: left; vertical-align: top; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
code { font-size: 12px; word-break: break-all; }
.example { margin-bottom: 4px; }
.empty, .note { color: #666; font-size: 13px; }
.grid2 { display: grid; grid-template-columns: repeat(auto-fit, minmax(520px, 1fr));
  column-gap: 24px; }
"""


def render_report(data: dict[str, Any], *, database: str = "") -> str:
    """The HTML page of `collect_report`'s data; every value from the index is escaped."""
    stats = data["stats"]
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    values_note = (
        "with patient values (--patient-values)" if data["patient_values"] else "no patient values"
    )
    body = [
        "<h1>DICOM index report</h1>",
        f'<p class="meta">{text(database)} &middot; {when} &middot; {values_note}</p>',
        _cards(stats),
        _section_breakdowns(stats),
        _section_heat_map(data["heat_map"], data["tag_count"]),
        _section_private_creators(data["private_creators"]),
        _section_patient_tags(data["patient_tags"], data["patient_values"]),
        _section_errors(stats, data["errors"]),
        _section_duplicates(stats, data["duplicates"]),
        _section_missing(stats, data["missing_paths"]),
    ]
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<title>DICOM index report</title>"
        f"<style>{_STYLE}</style></head>\n<body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def _cards(stats: dict[str, Any]) -> str:
    figures = [
        ("patients", stats["patients"], False),
        ("studies", stats["studies"], False),
        ("series", stats["series"], False),
        ("instances", stats["instances"], False),
        ("files", stats["files"], False),
        ("size", _size(stats["bytes"]), False),
        ("elements", stats["elements"], False),
        ("errors", stats["errors"], stats["errors"] > 0),
        ("warnings", stats["warnings"], False),
        ("duplicate UIDs", stats["duplicate_sop_instance_uids"], False),
        ("missing files", stats["missing_files"], stats["missing_files"] > 0),
    ]
    cards = "".join(
        f'<div class="card{" bad" if bad else ""}"><b>{_number(v)}</b>'
        f"<span>{text(label)}</span></div>"
        for label, v, bad in figures
    )
    return f'<div class="cards">{cards}</div>'


def _number(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else text(value)


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _bars(items: Iterable[tuple[str, int]], title: str, width: int = 720) -> str:
    """A bar chart of the first BARS items, and a line that counts the rest."""
    rows = list(items)
    chart = bar_chart(rows[:BARS], title=title, width=width)
    if len(rows) <= BARS:
        return chart
    rest = sum(n for _, n in rows[BARS:])
    return chart + f'<p class="note">and {len(rows) - BARS:,} more, with {rest:,} in all</p>'


def _section_breakdowns(stats: dict[str, Any]) -> str:
    by_status = [(s, n) for s, n in sorted(stats["files_by_status"].items(), key=lambda i: -i[1])]
    modality = [(m["modality"] or "(none)", m["instances"]) for m in stats["by_modality"]]
    sop = [
        (s["name"] or s["sop_class_uid"] or "(none)", s["instances"]) for s in stats["by_sop_class"]
    ]
    maker = [
        (f"{m['manufacturer'] or '(none)'} \u00b7 {m['model'] or '(none)'}", m["instances"])
        for m in stats["by_manufacturer"]
    ]
    syntax = [
        (t["name"] or t["transfer_syntax_uid"] or "(none)", t["instances"])
        for t in stats["by_transfer_syntax"]
    ]
    years = sorted(stats["by_study_year"], key=lambda y: (y["year"] is None, y["year"] or ""))
    half = 520  # two charts side by side on a wide page
    parts = [
        ("Files by status", _bars(by_status, "files by status", half)),
        ("Instances by modality", _bars(modality, "instances by modality", half)),
        ("Instances by SOP class", _bars(sop, "instances by SOP class", half)),
        ("Instances by manufacturer and model", _bars(maker, "instances by model", half)),
        ("Instances by transfer syntax", _bars(syntax, "instances by transfer syntax", half)),
        (
            "Instances by study year",
            column_chart(
                [(y["year"] or "none", y["instances"]) for y in years],
                title="instances by study year",
                width=half,
            ),
        ),
    ]
    cells = "\n".join(
        f"<section><h2>{text(title)}</h2>\n{chart}</section>" for title, chart in parts
    )
    return f'<div class="grid2">{cells}</div>'


def _section_heat_map(heat: dict[str, Any], tag_count: int) -> str:
    everywhere = heat["in_every_instance"]
    note = (
        f"<p class=\"note\">Share of each modality's instances that have the tag: each modality's "
        f"{HEAT_TAGS_PER_MODALITY} most used tags of the {tag_count:,} tag keys in the index"
        + (f"; the {everywhere:,} tags found in every instance are left out" if everywhere else "")
        + ".</p>"
    )
    chart = heat_map(heat["tags"], heat["modalities"], heat["shares"], title="tags per modality")
    return f"<h2>Most used tags per modality</h2>\n{note}\n{chart}"


def _section_private_creators(creators: list[dict[str, Any]]) -> str:
    if not creators:
        return '<h2>Private creators</h2>\n<p class="empty">no private tags</p>'
    chart = _bars(
        ((c["private_creator"], c["instances"]) for c in creators), "instances per private creator"
    )
    table = _table(
        ("private creator", "tag keys", "instances"),
        (
            (f"<code>{text(c['private_creator'])}</code>", c["tags"], c["instances"])
            for c in creators[:LISTED]
        ),
    )
    more = _more(len(creators), "private creators")
    return f"<h2>Private creators ({len(creators):,})</h2>\n{chart}\n{table}{more}"


def _section_patient_tags(tags: list[dict[str, Any]], patient_values: bool) -> str:
    head = "<h2>Patient tags</h2>\n"
    if not tags:
        return head + '<p class="empty">no tag that may identify a patient</p>'
    note = (
        '<p class="note">Tags that may identify a patient or a person, and how many instances '
        "hold them. "
        + (
            "Their most common values are shown (--patient-values).</p>"
            if patient_values
            else "Their values are hidden; <code>--patient-values</code> shows them.</p>"
        )
    )
    rows = []
    for t in tags:
        if t["top_values"] is None:
            values = "<i>hidden</i>"
        else:
            values = ", ".join(
                f"<code>{text(cut(str(v['value']), 60))}</code> ({v['instances']:,})"
                for v in t["top_values"]
            )
        rows.append(
            (f"<code>{text(t['tag'])}</code>", text(t["keyword"] or ""), t["instances"], values)
        )
    return head + note + _table(("tag", "keyword", "instances", "common values"), rows)


def _section_errors(stats: dict[str, Any], reasons: list[dict[str, Any]]) -> str:
    head = (
        f"<h2>Errors and warnings ({stats['errors']:,} errors, "
        f"{stats['warnings']:,} warnings)</h2>\n"
    )
    if not reasons:
        return head + '<p class="empty">none</p>'
    chart = _bars(
        ((f"{r['severity']}: {r['reason']}", r["count"]) for r in reasons),
        "errors and warnings by reason",
    )
    rows = []
    for r in reasons:
        examples = "".join(
            f'<div class="example"><code>{text(e["path"])}</code> &mdash; '
            f"{text(cut(e['message'], 160))}</div>"
            for e in r["examples"]
        )
        rows.append((text(r["severity"]), text(r["reason"]), r["count"], examples))
    return head + chart + "\n" + _table(("severity", "reason", "rows", "examples"), rows)


def _section_duplicates(stats: dict[str, Any], duplicates: list[dict[str, Any]]) -> str:
    n = stats["duplicate_sop_instance_uids"]
    head = (
        f"<h2>Duplicates ({n:,} SOP Instance UIDs in "
        f"{stats['instances_with_duplicate_uid']:,} files)</h2>\n"
    )
    if not duplicates:
        return head + '<p class="empty">no SOP Instance UID is held by more than one file</p>'
    table = _table(
        ("SOP Instance UID", "files", "paths"),
        (
            (
                f"<code>{text(d['sop_instance_uid'])}</code>",
                len(d["paths"]),
                "<br>".join(f"<code>{text(p)}</code>" for p in d["paths"]),
            )
            for d in duplicates
        ),
    )
    return head + table + _more(n, "UIDs")


def _section_missing(stats: dict[str, Any], paths: list[str]) -> str:
    n = stats["missing_files"]
    head = f"<h2>Missing files ({n:,})</h2>\n"
    if not paths:
        return (
            head
            + '<p class="empty">every indexed file was found by the last run over its folder</p>'
        )
    items = "".join(f"<li><code>{text(p)}</code></li>" for p in paths)
    return (
        head + '<p class="note">Files the last run over their folder did not find; they are left '
        f"out of the counts above.</p><ul>{items}</ul>{_more(n, 'missing files')}"
    )


def _table(headers: Sequence[str], rows: Iterable[Sequence[str | int]]) -> str:
    """An HTML table of cells already escaped; a column whose cells are counts (ints) is
    right-aligned, its numbers with thousands separators."""
    body = []
    counts: set[int] = set()
    for row in rows:
        counts.update(i for i, cell in enumerate(row) if isinstance(cell, int))
        body.append(
            "<tr>"
            + "".join(
                f'<td class="n">{cell:,}</td>' if isinstance(cell, int) else f"<td>{cell}</td>"
                for cell in row
            )
            + "</tr>"
        )
    head = "".join(
        f'<th class="n">{h}</th>' if i in counts else f"<th>{h}</th>" for i, h in enumerate(headers)
    )
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _more(total: int, what: str) -> str:
    if total <= LISTED:
        return ""
    return f'<p class="note">the first {LISTED} of {total:,} {text(what)}</p>'


def write_html_report(
    conn: Connection,
    path: str | os.PathLike[str],
    *,
    patient_values: bool = False,
    database: str = "",
) -> dict[str, Any]:
    """Write the report of the index on `conn` to `path` (mode 0600).

    An existing file is replaced only when it is empty or an HTML page, so that a slip
    (`--html index.db`, `--html scan.dcm`) cannot destroy data. `database` names the index
    in the page (a URL without password). Returns {path, bytes, patient_values}. Raises
    ReportError when the file cannot be written or is not an HTML page.
    """
    target = Path(path)
    _refuse_to_replace_data(target)
    page = render_report(collect_report(conn, patient_values=patient_values), database=database)
    data = page.encode("utf-8")
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)  # an existing file keeps its mode through O_CREAT
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
    except OSError as err:
        raise ReportError(f"cannot write the report to {target}: {err.strerror}") from err
    return {"path": str(target), "bytes": len(data), "patient_values": patient_values}


def _refuse_to_replace_data(target: Path) -> None:
    if not target.is_file():
        return  # nothing to protect; a FIFO or /dev/stdout is written to, never read (it blocks)
    try:
        with open(target, "rb") as fh:
            head = fh.read(64).lstrip().lower()
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        return  # nothing to protect, or the write says why it cannot
    except OSError as err:
        raise ReportError(f"cannot write the report to {target}: {err.strerror}") from err
    if head and not head.startswith((b"<!doctype html", b"<html")):
        raise ReportError(f"{target} exists and is not an HTML page: not replaced")
