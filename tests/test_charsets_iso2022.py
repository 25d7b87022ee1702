"""ISO 2022 code extensions: escape sequences switch repertoires and are never part of a value.

The examples of PS3.5 Annexes H (Japanese), I (Korean), J and K (Chinese) are built here as
the bytes the standard prints, with the text the standard gives for them. Every file of the
corpus whose Specific Character Set uses ISO 2022 is checked against DCMTK (`dcmdump +U8`);
where DCMTK cannot convert the set (3.6.7 with glibc's iconv has no ISO 2022 IR 87), the text
printed in the standard for those bytes is the reference.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path
from types import ModuleType

import pytest

from indexer import read_file
from indexer.charsets import decode, encodings_for
from indexer.records import META

ESC = b"\x1b"


def decoded(raw: bytes, term: str, person_name: bool = False) -> str:
    return decode(raw, encodings_for(term)[0], person_name)


# -- PS3.5 Annexes H-K -------------------------------------------------------------------------

H31 = (  # H.3.1: value 1 empty (ISO-IR 6), value 2 ISO 2022 IR 87 (JIS X 0208 in G0)
    b"Yamada^Tarou="
    + ESC + b"$B;3ED" + ESC + b"(B^" + ESC + b"$BB@O:" + ESC + b"(B="
    + ESC + b"$B$d$^$@" + ESC + b"(B^" + ESC + b"$B$?$m$&" + ESC + b"(B"
)  # fmt: skip
H32 = (  # H.3.2: ISO 2022 IR 13 first (half-width katakana in G1), back to IR 14 with ESC ( J
    b"\xd4\xcf\xc0\xde^\xc0\xdb\xb3="
    + ESC + b"$B;3ED" + ESC + b"(J^" + ESC + b"$BB@O:" + ESC + b"(J="
    + ESC + b"$B$d$^$@" + ESC + b"(J^" + ESC + b"$B$?$m$&" + ESC + b"(J"
)  # fmt: skip
I2 = (  # I.2: KS X 1001 designated to G1 before each Korean component
    b"Hong^Gildong="
    + ESC + b"$)C\xfb\xf3^" + ESC + b"$)C\xd1\xce\xd4\xd7="
    + ESC + b"$)C\xc8\xab^" + ESC + b"$)C\xb1\xe6\xb5\xbf"
)  # fmt: skip
K2 = b"Zhang^XiaoDong=" + ESC + b"$)A\xd5\xc5^" + ESC + b"$)A\xd0\xa1\xb6\xab="  # K.2
K3 = (  # K.3: a two-line LT, GB 2312 designated again after each CR LF
    ESC + b"$)A\xb5\xda\xd2\xbb\xd0\xd0\xce\xc4\xd7\xd6\xa1\xa3\r\n"
    + ESC + b"$)A\xb5\xda\xb6\xfe\xd0\xd0\xce\xc4\xd7\xd6\xa1\xa3\r\n"
)  # fmt: skip
J_NAME = b"Wang^XiaoDong=\xcd\xf5^\xd0\xa1\xb6\xab="  # J.3: GB18030, no code extensions
J_TEXT = (  # J.3's two-line LT in GB18030
    b"\xb5\xda\xd2\xbb\xd0\xd0\xce\xc4\xd7\xd6\xa1\xa3\r\n\xb5\xda\xb6\xfe\xd0\xd0\xce\xc4\xd7\xd6\xa1\xa3\r\n"
)

ANNEX_EXAMPLES = [
    ("H.3.1", H31, "\\ISO 2022 IR 87", True, "Yamada^Tarou=山田^太郎=やまだ^たろう"),
    ("H.3.2", H32, "ISO 2022 IR 13\\ISO 2022 IR 87", True, "ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎=やまだ^たろう"),
    ("I.2", I2, "\\ISO 2022 IR 149", True, "Hong^Gildong=洪^吉洞=홍^길동"),
    ("J.3 PN", J_NAME, "GB18030", True, "Wang^XiaoDong=王^小东="),
    ("J.3 LT", J_TEXT, "GB18030", False, "第一行文字。\r\n第二行文字。\r\n"),
    ("K.2", K2, "\\ISO 2022 IR 58", True, "Zhang^XiaoDong=张^小东="),
    ("K.3", K3, "\\ISO 2022 IR 58", False, "第一行文字。\r\n第二行文字。\r\n"),
]


@pytest.mark.parametrize(
    "raw,term,person_name,text", [e[1:] for e in ANNEX_EXAMPLES], ids=[e[0] for e in ANNEX_EXAMPLES]
)
def test_annex_examples(raw: bytes, term: str, person_name: bool, text: str) -> None:
    found = decoded(raw, term, person_name)
    assert found == text
    assert "\x1b" not in found


def test_gb2312_multi_valued_text() -> None:
    # Each value starts again in the first repertoire and designates GB 2312 again.
    raw = ESC + b"$)A\xd5\xc5\\ASCII\\" + ESC + b"$)A\xd0\xa1\xb6\xab"
    assert decoded(raw, "\\ISO 2022 IR 58") == "张\\ASCII\\小东"


def test_delimiter_returns_to_the_first_repertoire() -> None:
    # PS3.5 6.1.2.5.3: after "^" the G1 set is the first one again (here Latin-1), so 0xE9
    # after the delimiter is "é", not half of a Korean character.
    raw = ESC + b"$)C\xfb\xf3^Ren\xe9"
    assert decoded(raw, "ISO 2022 IR 100\\ISO 2022 IR 149", person_name=True) == "洪^René"


def test_single_byte_code_extension() -> None:
    # ISO 2022 IR 100 first, Cyrillic (ESC - L) designated to G1 for one component.
    raw = b"Buc^J\xe9r\xf4me=" + ESC + b"-L\xbb\xee\xda\xe1\xd5\xdc\xd1\xe3\xe0\xd3"
    assert decoded(raw, "ISO 2022 IR 100\\ISO 2022 IR 144", True) == "Buc^Jérôme=Люксембург"


def test_unknown_designation_is_dropped_and_a_lone_escape_kept() -> None:
    # ESC $ ) Z designates nothing DICOM knows: the sequence goes, the text stays readable.
    assert decoded(b"A" + ESC + b"$)ZB", "\\ISO 2022 IR 58") == "AB"
    # ESC followed by a final byte is no designation (and no ISO 2022 at all): kept as text.
    assert decoded(b"A" + ESC + b"B", "ISO_IR 100") == "A\x1bB"


def test_common_case_takes_the_plain_decode() -> None:
    # No ESC: one bytes.decode, same answer as Python's codec.
    raw = "Müller".encode("latin-1")
    assert decoded(raw, "ISO 2022 IR 100") == raw.decode("latin-1")


# -- every ISO 2022 file of the corpus against DCMTK ----------------------------------------------

TEXT_VRS = {"SH", "LO", "PN", "ST", "LT", "UT", "UC"}
# Raw bytes whose text DCMTK 3.6.7 cannot give (ISO 2022 IR 87): the standard's text (H.3.2).
STANDARD_TEXT = {
    H32: "ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎=やまだ^たろう",
    H32.replace(b"(J", b"(B"): "ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎=やまだ^たろう",  # the same name, IR 6 in G0
}


def _compare_values() -> ModuleType:
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "compare_values.py"
    spec = importlib.util.spec_from_file_location("compare_values", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def iso2022_files(root: Path) -> list[Path]:
    """Files whose bytes hold an ISO 2022 Specific Character Set term (like `grep -l`)."""
    found = []
    for folder, _dirs, names in os.walk(root):
        for name in names:
            path = Path(folder) / name
            if path.suffix in (".md", ".tsv"):
                continue
            if b"ISO 2022" in path.read_bytes():
                found.append(path)
    return sorted(found)


@pytest.mark.corpus
def test_every_iso2022_corpus_file_agrees_with_dcmtk(corpus_dir: Path) -> None:
    if shutil.which("dcmdump") is None:
        # CI installs DCMTK (.ci/run) and must not pass by skipping; elsewhere, skip.
        (pytest.fail if os.environ.get("CI") else pytest.skip)("needs DCMTK's dcmdump")
    compare = _compare_values()
    files = iso2022_files(corpus_dir)
    assert any(p.name == "chrGB2312.dcm" for p in files) and len(files) >= 5
    for path in files:
        record = read_file(path)
        dumped, utf8 = compare.dcmdump(path)
        assert dumped is not None, path
        checked = 0
        for r in record.elements:
            if r.vr not in TEXT_VRS or r.flags & META or r.path not in dumped:
                continue
            where = f"{path.relative_to(corpus_dir)} {r.path}"
            text = dumped[r.path].text.rstrip(" \x00")
            if not utf8:  # DCMTK could not convert: it printed the bytes as stored
                raw = text.encode("latin-1")
                if raw.isascii() and ESC not in raw:
                    expected = text
                else:
                    assert raw in STANDARD_TEXT, f"no reference text for {where}"
                    expected = STANDARD_TEXT[raw]
            else:
                expected = text
            assert (r.value or "") == expected, where
            assert "\x1b" not in (r.value or "") and "\ufffd" not in (r.value or ""), where
            checked += 1
        assert checked >= 1, path


@pytest.mark.corpus
def test_gb2312_patient_name_of_the_issue(corpus_dir: Path) -> None:
    record = read_file(corpus_dir / "fo-dicom/charset/chrGB2312.dcm")
    name = next(r for r in record.elements if r.path == "(0010,0010)")
    assert name.value == "Zhang^XiaoDong=张^小东="


def test_jis_x_0212_in_g0() -> None:
    # ISO 2022 IR 159 (ESC $ ( D): supplementary kanji, two 7-bit bytes each, then back to ASCII.
    raw = b"Yamada=" + ESC + b"$(D0!" + ESC + b"(B^Taro"
    assert decoded(raw, "\\ISO 2022 IR 87\\ISO 2022 IR 159", True) == "Yamada=丂^Taro"
