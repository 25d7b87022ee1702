"""indexer.charsets: Specific Character Set terms to codecs, and decoding of stored values.

Expected text is built with Python's own codecs (or taken from the DICOM standard's
examples), never with the functions under test.
"""

from __future__ import annotations

import codecs
import warnings

import pytest

from indexer.charsets import DEFAULT, decode, encodings_for


def codec_names(term: str) -> list[str]:
    return [codecs.lookup(c).name for c in encodings_for(term)[0]]


@pytest.mark.parametrize(
    "term,expected",
    [
        ("", ["iso8859-1"]),  # no Specific Character Set: the default repertoire
        ("ISO_IR 6", ["iso8859-1"]),  # ASCII, read as Latin-1 so that stray 8-bit bytes survive
        ("ISO_IR 100", ["iso8859-1"]),
        ("ISO_IR 144", ["iso8859-5"]),
        ("ISO_IR 192", ["utf-8"]),
        ("GB18030", ["gb18030"]),
        ("ISO 2022 IR 13\\ISO 2022 IR 87", ["shift_jis", "iso2022_jp"]),
        ("\\ISO 2022 IR 149", ["iso8859-1", "euc_kr"]),
    ],
)
def test_encodings_for_known_terms(term: str, expected: list[str]) -> None:
    assert codec_names(term) == expected
    assert encodings_for(term)[1] == ()


@pytest.mark.parametrize(
    "term,expected",
    [
        ("ISO-IR 100", "iso8859-1"),
        ("ISO IR 144", "iso8859-5"),
        ("ISO-IR 148", "iso8859-9"),
    ],
)
def test_misspelt_terms_resolve_with_a_warning(term: str, expected: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # returned, never emitted
        found, problems = encodings_for(term)
    assert [codecs.lookup(c).name for c in found] == [expected]
    assert len(problems) == 1 and term in problems[0]


def test_unknown_term_falls_back_to_the_default_with_a_warning() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        found, problems = encodings_for("KLINGON 1")
    assert found == DEFAULT
    assert len(problems) == 1 and "KLINGON 1" in problems[0]


def test_answers_are_cached() -> None:
    assert encodings_for("ISO_IR 101") is encodings_for("ISO_IR 101")
    # The warning is given back on every call, not only the first.
    assert encodings_for("ISO-IR 101")[1] == encodings_for("ISO-IR 101")[1] != ()


def test_decode_single_byte_and_utf8() -> None:
    assert (
        decode("Müller^Jürgen".encode("latin-1"), encodings_for("ISO_IR 100")[0]) == "Müller^Jürgen"
    )
    assert decode("Иванов".encode("iso8859-5"), encodings_for("ISO_IR 144")[0]) == "Иванов"
    assert decode("王^小東".encode(), encodings_for("ISO_IR 192")[0], person_name=True) == "王^小東"
    assert decode("王^小东".encode("gb18030"), encodings_for("GB18030")[0]) == "王^小东"
    # ASCII declared, 8-bit bytes present: read as Latin-1 instead of failing.
    assert decode(b"Caf\xe9", DEFAULT) == "Café"


def test_undecodable_bytes_become_replacement_characters() -> None:
    assert decode(b"ab\xff\xfecd", encodings_for("ISO_IR 192")[0]) == "ab\ufffd\ufffdcd"


def test_iso_2022_japanese_person_name() -> None:
    # PS3.5 H.3.1: the ideographic and phonetic groups switch to JIS X 0208 and back.
    name = "Yamada^Tarou=山田^太郎=やまだ^たろう"
    raw = b"=".join(group.encode("iso2022_jp") for group in name.split("="))
    assert b"\x1b$B" in raw
    assert decode(raw, encodings_for("\\ISO 2022 IR 87")[0], person_name=True) == name


def test_iso_2022_half_width_katakana_and_kanji() -> None:
    # PS3.5 H.3.2 (IR 13 as the first repertoire): half-width katakana are single bytes.
    name = "ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎"
    katakana, kanji = name.split("=")
    raw = katakana.encode("shift_jis") + b"=" + kanji.encode("iso2022_jp")
    found = decode(raw, encodings_for("ISO 2022 IR 13\\ISO 2022 IR 87")[0], person_name=True)
    assert found == name


def test_iso_2022_korean() -> None:
    # PS3.5 I.2: Hong^Gildong=洪^吉洞=홍^길동, each Korean group after ESC $ ) C (KS X 1001 in G1).
    def ksx(text: str) -> bytes:
        return b"\x1b$)C" + text.encode("euc_kr")

    raw = b"Hong^Gildong=" + ksx("洪") + b"^" + ksx("吉洞") + b"=" + ksx("홍") + b"^" + ksx("길동")
    assert decode(raw, encodings_for("\\ISO 2022 IR 149")[0], person_name=True) == (
        "Hong^Gildong=洪^吉洞=홍^길동"
    )


def test_iso_2022_multi_valued_text() -> None:
    # Each value of a multi-valued LO starts again in the first repertoire.
    values = ["山田", "ASCII", "太郎"]
    raw = b"\\".join(v.encode("iso2022_jp") for v in values)
    assert decode(raw, encodings_for("\\ISO 2022 IR 87")[0]) == "\\".join(values)


def test_escape_byte_without_iso_2022_does_not_fail() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        found = decode(b"A\x1bB", DEFAULT)
    assert isinstance(found, str) and found.startswith("A")
