"""PostgreSQL's worker side: element rows as COPY text. No SQLAlchemy here.

Each line starts with FILE_ID_PLACEHOLDER where the file id goes (only the database gives
file ids; NUL cannot occur in COPY text otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass

FILE_ID_PLACEHOLDER = "\x00"

# PostgreSQL text cannot hold NUL: an embedded NUL (never valid in a DICOM text value)
# becomes U+FFFD.
_COPY_ESCAPES = str.maketrans(
    {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\x00": "\ufffd"}
)
_WIDTH = 8  # ELEMENT_COLUMNS but the file id


def copy_text(flat: list[object]) -> str:
    """COPY text of the flat rows. Only the value column can hold text that needs escaping;
    ordinal, path id, VR, VM, length and flags are never null."""
    null = "\\N"
    escapes = _COPY_ESCAPES
    lines: list[str] = []
    append = lines.append
    for i in range(0, len(flat), _WIDTH):
        ordinal, pid, vr, vm, length, value, number, flags = flat[i : i + _WIDTH]
        text = null if value is None else str(value).translate(escapes)
        append(
            f"\x00\t{ordinal}\t{pid}\t{vr}\t{vm}\t{length}\t{text}\t"
            f"{null if number is None else number}\t{flags}\n"
        )
    return "".join(lines)


class CopySink:
    def add(self, flat: list[object], count: int) -> str:
        return copy_text(flat)

    def commit(self) -> None:
        pass


@dataclass(frozen=True)
class CopySpec:
    def open(self) -> CopySink:
        return CopySink()
