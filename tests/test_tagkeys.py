"""Tag keys: what the writer formats, the parser reads back; the one hash is stable."""

from __future__ import annotations

import pytest

from indexer import tagkeys
from indexer.errors import ReportError


def test_parse_forms() -> None:
    assert tagkeys.parse("Modality") == "(0008,0060)"
    assert tagkeys.parse("00080060") == tagkeys.parse("0008,0060") == "(0008,0060)"
    assert tagkeys.parse('(0029,"SIEMENS CSA HEADER",10)') == '(0029,"SIEMENS CSA HEADER",10)'
    assert tagkeys.parse('(0029,"CARDIO-SMS 1.0")') == '(0029,"CARDIO-SMS 1.0")'
    assert (
        tagkeys.parse("RequestAttributesSequence[0].RequestedProcedureID")
        == "(0040,0275).(0040,1001)"
    )
    assert (
        tagkeys.parse('(2001,"Philips Imaging DD 001",5f)[1].(2005,"Philips MR Imaging DD 001",80)')
        == '(2001,"Philips Imaging DD 001",5F).(2005,"Philips MR Imaging DD 001",80)'
    )


@pytest.mark.parametrize("text", ['(0008,"ACME",10)', "", "NotAKeyword", "(0008,00600)"])
def test_parse_refuses(text: str) -> None:
    with pytest.raises(ReportError):
        tagkeys.parse(text)


@pytest.mark.parametrize(
    ("tag", "creator"),
    [
        (0x00080060, None),  # public
        (0x00280000, None),  # group length
        (0x00291010, "SIEMENS CSA HEADER"),  # private element in block 10
        (0x002911FF, "SIEMENS CSA HEADER"),  # private element in block 11
        (0x00290010, "SIEMENS CSA HEADER"),  # the creator element itself
        (0x00291010, None),  # private without a creator
        (0x7FE00010, None),
    ],
)
def test_round_trip(tag: int, creator: str | None) -> None:
    component = tagkeys.format_component(tag, creator)
    assert tagkeys.parse(component) == component
    nested = f"{tagkeys.format_component(0x00400275, None)}.{component}"
    assert tagkeys.parse(nested) == nested


def test_normalized_tag_ignores_the_block() -> None:
    assert (
        tagkeys.normalized_tag(0x002911FF, "X")
        == tagkeys.normalized_tag(0x002910FF, "X")
        == 0x002910FF
    )
    assert tagkeys.normalized_tag(0x00290011, "X") == 0x00290010
    assert tagkeys.normalized_tag(0x00080060, None) == 0x00080060


def test_hash64_is_stable_and_signed_64_bit() -> None:
    # The ids are stored: a change of the hash would orphan every existing index's rows.
    assert tagkeys.hash64("(0008,0060)") == 3871980870232918663
    assert -(2**63) <= tagkeys.hash64("x") < 2**63
    assert tagkeys.path_id("(0008,0060)", None) == tagkeys.hash64("(0008,0060)|")
    assert tagkeys.hash64("a_\udcff") != tagkeys.hash64("a_\\xff")
