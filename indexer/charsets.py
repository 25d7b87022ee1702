"""Decoding of text values with the file's Specific Character Set (0008,0005).

The common cases (no Specific Character Set, or one single-byte or UTF-8
repertoire) decode with one ``bytes.decode`` call. Values that use ISO 2022
code extensions (escape sequences: Japanese, Korean, Chinese) go through
pydicom's ``decode_bytes``, which switches repertoires at each escape.
"""

from __future__ import annotations

import warnings

from pydicom.charset import convert_encodings, decode_bytes

DEFAULT = ("latin_1",)  # ISO_IR 6 is ASCII; latin-1 decodes stray 8-bit bytes instead of failing
_ESC = 0x1B
_TEXT_DELIMITERS = {0x0D, 0x0A, 0x09, 0x0C, 0x5C}  # CR LF TAB FF and the value separator
_PN_DELIMITERS = {0x5E, 0x3D, 0x5C}  # ^ = and the value separator

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
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        return decode_bytes(
            raw, list(encodings), _PN_DELIMITERS if person_name else _TEXT_DELIMITERS
        )
