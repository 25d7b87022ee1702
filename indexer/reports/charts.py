"""Small inline SVG charts for the HTML report: bars, columns and a heat map.

No library and no script: each function returns one `<svg>` element as text, to be put in
an HTML page as it is. Every label and tooltip goes through `text`, because labels are
values read from DICOM files (a Manufacturer may hold `<script>`).
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence

BAR_COLOUR = "#4c78a8"
_FONT = 'font-family="system-ui, sans-serif" font-size="12"'
_CHAR_WIDTH = 8  # px of a 12 px character, near enough to size the label column
_LABEL_CHARS = 40  # longer labels are cut (the tooltip keeps them whole)
_ROW = 22
# C0 controls (but tab and newline) and lone surrogates: not text a page should carry.
_UNPRINTABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f\ud800-\udfff]")


def text(value: object) -> str:
    """`value` as HTML text: escaped (quotes too, so it fits in an attribute), controls replaced."""
    return html.escape(_UNPRINTABLE.sub("\ufffd", str(value)), quote=True)


def cut(label: str, limit: int = _LABEL_CHARS) -> str:
    """`label` cut to `limit` characters with an ellipsis (not escaped)."""
    return label if len(label) <= limit else label[: limit - 1] + "\u2026"


def bar_chart(items: Sequence[tuple[str, int]], *, title: str, width: int = 720) -> str:
    """Horizontal bars, one per (label, value), in the order given; the value is written at
    the end of each bar and label and value are the bar's tooltip."""
    if not items:
        return '<p class="empty">nothing to show</p>'
    label_width = min(max(len(label) for label, _ in items), _LABEL_CHARS) * _CHAR_WIDTH + 12
    number_width = max(len(f"{value:,}") for _, value in items) * _CHAR_WIDTH + 12
    plot = max(width - label_width - number_width, 80)
    top = max((value for _, value in items), default=0) or 1
    height = len(items) * _ROW + 8
    parts = [_open(width, height, title)]
    for row, (label, value) in enumerate(items):
        y = 4 + row * _ROW
        length = round(plot * value / top, 1)
        end = round(label_width + length + 5, 1)
        parts.append(
            f"<g><title>{text(label)}: {value:,}</title>"
            f'<text x="{label_width - 8}" y="{y + 15}" text-anchor="end">{text(cut(label))}</text>'
            f'<rect x="{label_width}" y="{y + 3}" width="{length}" height="{_ROW - 6}" '
            f'fill="{BAR_COLOUR}" rx="2"/>'
            f'<text x="{end}" y="{y + 15}">{value:,}</text></g>'
        )
    parts.append("</svg>")
    return "".join(parts)


def column_chart(
    items: Sequence[tuple[str, int]], *, title: str, width: int = 900, height: int = 220
) -> str:
    """Vertical columns, one per (label, value) in the order given (years, oldest first), in at
    most `width` pixels."""
    if not items:
        return '<p class="empty">nothing to show</p>'
    column = max(min(48, (width - 20) // len(items)), 6)
    width = len(items) * column + 20
    plot = height - 50
    top = max(value for _, value in items) or 1
    parts = [_open(width, height, title)]
    every = -(-40 // column)  # a label every few columns when crowded (40 px a label)
    for i, (label, value) in enumerate(items):
        x = 10 + i * column
        length = round(plot * value / top, 1)
        y = round(20 + plot - length, 1)
        parts.append(
            f"<g><title>{text(label)}: {value:,}</title>"
            f'<rect x="{x + 2}" y="{y}" width="{column - 4}" height="{length}" '
            f'fill="{BAR_COLOUR}" rx="2"/>'
        )
        if column >= 30:
            parts.append(
                f'<text x="{x + column / 2}" y="{round(y - 4, 1)}" '
                f'text-anchor="middle">{value:,}</text>'
            )
        if i % every == 0:
            parts.append(
                f'<text x="{x + column / 2}" y="{height - 14}" '
                f'text-anchor="middle">{text(cut(label, 10))}</text>'
            )
        parts.append("</g>")
    parts.append("</svg>")
    return "".join(parts)


def heat_map(
    rows: Sequence[str],
    columns: Sequence[str],
    shares: Sequence[Sequence[float]],
    *,
    title: str,
) -> str:
    """A grid of `rows` x `columns`, cell (r, c) shaded and labelled by shares[r][c] (0 to 1)."""
    if not rows or not columns:
        return '<p class="empty">nothing to show</p>'
    cell_w, cell_h = 64, 20
    label_width = min(max(len(r) for r in rows), _LABEL_CHARS + 10) * _CHAR_WIDTH + 12
    head = 28
    width = label_width + len(columns) * cell_w + 4
    height = head + len(rows) * cell_h + 4
    parts = [_open(width, height, title)]
    for c, name in enumerate(columns):
        x = label_width + c * cell_w + cell_w / 2
        parts.append(
            f"<g><title>{text(name)}</title>"
            f'<text x="{x}" y="{head - 10}" text-anchor="middle" font-weight="600">'
            f"{text(cut(name, 9))}</text></g>"
        )
    for r, name in enumerate(rows):
        y = head + r * cell_h
        parts.append(
            f"<g><title>{text(name)}</title>"
            f'<text x="{label_width - 8}" y="{y + 14}" text-anchor="end">'
            f"{text(cut(name, _LABEL_CHARS + 10))}</text></g>"
        )
        for c, share in enumerate(shares[r]):
            x = label_width + c * cell_w
            ink = "#fff" if share > 0.55 else "#222"
            parts.append(
                f"<g><title>{text(name)} in {text(columns[c])}: {share:.1%}</title>"
                f'<rect x="{x + 1}" y="{y + 1}" width="{cell_w - 2}" height="{cell_h - 2}" '
                f'fill="{_shade(share)}"/>'
                f'<text x="{x + cell_w / 2}" y="{y + 14}" text-anchor="middle" fill="{ink}">'
                f"{_percent(share)}</text></g>"
            )
    parts.append("</svg>")
    return "".join(parts)


def _open(width: int, height: int, title: str) -> str:
    return (
        f'<svg width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{text(title)}" {_FONT}>'
    )


def _percent(share: float) -> str:
    if share <= 0:
        return ""
    if share < 0.01:
        return "&lt;1%"
    return f"{share:.0%}"


def _shade(share: float) -> str:
    """White (0) to dark blue (1), through the light blues."""
    if share <= 0:
        return "#f4f4f4"
    low, high = (222, 235, 247), (8, 48, 107)
    r, g, b = (round(a + (z - a) * min(share, 1.0)) for a, z in zip(low, high, strict=True))
    return f"#{r:02x}{g:02x}{b:02x}"
