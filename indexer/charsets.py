"""Decoding of text values with the file's Specific Character Set (0008,0005).

The common cases (no Specific Character Set, or one single-byte or UTF-8
repertoire) decode with one ``bytes.decode`` call. Values that use ISO 2022
code extensions (escape sequences: Japanese, Korean, Chinese) are decoded here,
not by pydicom's ``decode_bytes``: that one hands some fragments to Python codecs
that do not know the escape (GB 2312's ``ESC $ ) A``), so the escape stayed in the
text. An escape sequence only switches repertoires; it is never part of a value.
"""

from __future__ import annotations

import re
import warnings

from pydicom.charset import convert_encodings

DEFAULT = ("latin_1",)  # ISO_IR 6 is ASCII; latin-1 decodes stray 8-bit bytes instead of failing
_ESC = 0x1B
_TEXT_DELIMITERS = {0x0D, 0x0A, 0x09, 0x0C, 0x5C}  # CR LF TAB FF and the value separator
_PN_DELIMITERS = {0x5E, 0x3D, 0x5C}  # ^ = and the value separator

# The designations of PS3.3 Tables C.12-3 and C.12-4: which code element (G0 or G1) an escape
# sequence sets, and the Python codec that reads it. G0 holds the 7-bit bytes, G1 the 8-bit ones.
_G0, _G1 = 0, 1
_DESIGNATIONS: dict[bytes, tuple[int, str | None]] = {
    b"\x1b(B": (_G0, None),  # ISO-IR 6 (ASCII)
    b"\x1b(J": (_G0, None),  # ISO-IR 14, JIS X 0201 Romaji: read as ASCII (0x5C stays a delimiter)
    b"\x1b$B": (_G0, "iso2022_jp"),  # ISO-IR 87, JIS X 0208 (two 7-bit bytes a character)
    b"\x1b$(D": (_G0, "iso2022_jp_2"),  # ISO-IR 159, JIS X 0212
    b"\x1b)I": (_G1, "shift_jis"),  # ISO-IR 13, JIS X 0201 Katakana (one 8-bit byte)
    b"\x1b$)C": (_G1, "euc_kr"),  # ISO-IR 149, KS X 1001
    b"\x1b$)A": (_G1, "gb2312"),  # ISO-IR 58, GB 2312
    b"\x1b-A": (_G1, "latin_1"),  # ISO-IR 100
    b"\x1b-B": (_G1, "iso8859_2"),  # ISO-IR 101
    b"\x1b-C": (_G1, "iso8859_3"),  # ISO-IR 109
    b"\x1b-D": (_G1, "iso8859_4"),  # ISO-IR 110
    b"\x1b-F": (_G1, "iso8859_7"),  # ISO-IR 126
    b"\x1b-G": (_G1, "iso8859_6"),  # ISO-IR 127
    b"\x1b-H": (_G1, "iso8859_8"),  # ISO-IR 138
    b"\x1b-L": (_G1, "iso8859_5"),  # ISO-IR 144
    b"\x1b-M": (_G1, "iso8859_9"),  # ISO-IR 148
    b"\x1b-T": (_G1, "tis_620"),  # ISO-IR 166
    b"\x1b-b": (_G1, "iso8859_15"),  # ISO-IR 203
}
# An escape sequence (ESC, intermediate bytes, a final byte), or a run of bytes without ESC.
_TOKENS = re.compile(rb"\x1b[\x20-\x2f]+[\x30-\x7e]|\x1b|[^\x1b]+")

_cache: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}


def encodings_for(specific_character_set: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Return (Python codecs, warnings) for a raw Specific Character Set value (``ISO_IR 100``).

    Unknown or misspelt terms are resolved the way pydicom does; what it warned
    about is returned instead of printed.
    """
    found = _cache.get(specific_character_set)
    if found is None:
        terms = [t.strip() for t in specific_character_set.split("\\")]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                codecs = convert_encodings(terms)
            except (ValueError, LookupError):  # e.g. a NUL inside the term
                codecs = list(DEFAULT)
                warnings.warn(
                    f"unusable Specific Character Set {specific_character_set!r}; "
                    "read as the default repertoire",
                    stacklevel=1,
                )
        codecs = ["latin_1" if c == "iso8859" else c for c in codecs]
        found = (tuple(codecs), tuple(str(w.message) for w in caught))
        _cache[specific_character_set] = found
    return found


def decode(raw: bytes, encodings: tuple[str, ...], person_name: bool = False) -> str:
    """Decode one stored value; undecodable bytes become U+FFFD instead of failing the file."""
    if _ESC not in raw:
        try:
            return raw.decode(encodings[0])
        except UnicodeDecodeError:
            return raw.decode(encodings[0], "replace")
    return _decode_extended(raw, encodings[0], _PN_DELIMITERS if person_name else _TEXT_DELIMITERS)


def _decode_extended(raw: bytes, first: str, delimiters: set[int]) -> str:
    """Decode a value holding escape sequences (PS3.5 6.1.2.5), dropping the sequences.

    The value starts in the first repertoire (`first`, whose codec also reads its 7-bit
    bytes as ASCII) and returns to it after each delimiter (PS3.5 6.1.2.5.3). A sequence
    for a repertoire not declared is still followed: the bytes say what they are. A well
    formed sequence that designates nothing known is dropped; a lone ESC is kept as text.
    """
    g0: str | None = None  # a multi-byte 7-bit set (Japanese) in G0, else ASCII
    g1 = first
    parts: list[str] = []
    for token in _TOKENS.findall(raw):
        if token[0] == _ESC and len(token) > 1:
            element, codec = _DESIGNATIONS.get(token, (-1, None))
            if element == _G0:
                g0 = codec
            elif element == _G1 and codec is not None:
                g1 = codec
            continue
        if g0 is not None:
            # JIS X 0208/0212: Python's codec reads the two-byte characters after its own escape.
            # The standard switches back to ASCII before any delimiter, so none is looked for.
            prefix = b"\x1b$B" if g0 == "iso2022_jp" else b"\x1b$(D"
            parts.append((prefix + token).decode(g0, "replace"))
            continue
        cut = next((i for i, byte in enumerate(token) if byte in delimiters), -1)
        if cut < 0 or g1 == first:
            parts.append(token.decode(g1, "replace"))
        else:  # a delimiter: what follows it is in the first repertoire again
            parts.append(token[: cut + 1].decode(g1, "replace"))
            parts.append(token[cut + 1 :].decode(first, "replace"))
            g1 = first
    return "".join(parts)
