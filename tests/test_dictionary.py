"""indexer.dictionary: tag text, public and private descriptions, keyword parsing.

Expected descriptions come straight from pydicom's data dictionaries.
"""

from __future__ import annotations

import pytest
from pydicom.datadict import (
    dictionary_description,
    dictionary_keyword,
    dictionary_VR,
    get_private_entry,
)

from indexer.dictionary import describe_private, describe_public, keyword_to_tag, tag_text


def test_tag_text() -> None:
    assert tag_text(0x00080060) == "(0008,0060)"
    assert tag_text(0x7FE00010) == "(7FE0,0010)"
    assert tag_text(0xFFFEE000) == "(FFFE,E000)"
    assert tag_text(0) == "(0000,0000)"


@pytest.mark.parametrize(
    "tag", [0x00080060, 0x00100010, 0x7FE00010, 0x00280106, 0x00020010, 0x00000100, 0xFFFAFFFA]
)
def test_describe_public(tag: int) -> None:
    assert describe_public(tag) == (
        dictionary_VR(tag),
        dictionary_keyword(tag),
        dictionary_description(tag),
    )


def test_describe_public_examples() -> None:
    assert describe_public(0x00080060) == ("CS", "Modality", "Modality")
    assert describe_public(0x00280106)[0] == "US or SS"  # left to the walker to decide


@pytest.mark.parametrize(
    "tag,keyword",
    [(0x60003000, "OverlayData"), (0x60020010, "OverlayRows"), (0x601E0011, "OverlayColumns")],
)
def test_describe_public_repeating_groups(tag: int, keyword: str) -> None:
    vr, found, name = describe_public(tag)
    assert found == keyword and vr == dictionary_VR(tag) and name == dictionary_description(tag)


def test_describe_public_unknown_and_group_length() -> None:
    assert describe_public(0x0008FFF0) == ("UN", "", "Unknown Tag")
    assert describe_public(0x00180000) == ("UL", "", "Group Length")  # not in the dictionary
    assert describe_public(0x00020000)[1] == "FileMetaInformationGroupLength"


def test_describe_private_with_known_creator() -> None:
    creator = "SIEMENS CSA HEADER"
    vr, _vm, name, _retired = get_private_entry(0x00291008, creator)
    assert (
        describe_private(0x00291008, creator)
        == (vr, "", name)
        == ("CS", "", "CSA Image Header Type")
    )
    # The dictionary is keyed by the element within the block: block 11 reads the same way.
    assert describe_private(0x00291108, creator) == (vr, "", name)
    assert describe_private(0x00291010, creator)[0] == "OB"


def test_describe_private_group_wildcards() -> None:
    # "60xxxx10": any group 60xx (odd), element xx10.
    vr, _vm, name, _retired = get_private_entry(0x60011010, "PAPYRUS 3.0")
    assert (
        describe_private(0x60011010, "PAPYRUS 3.0") == (vr, "", name) == ("US", "", "Overlay Rows")
    )


def test_describe_private_without_or_with_unknown_creator() -> None:
    assert describe_private(0x00291008, None) == ("UN", "", "Private tag data (no private creator)")
    assert describe_private(0x00291008, "ACME NOT IN ANY DICTIONARY") == (
        "UN",
        "",
        "Private tag data",
    )
    assert describe_private(0x00291099, "SIEMENS CSA HEADER") == ("UN", "", "Private tag data")


def test_describe_private_reserved_elements() -> None:
    assert describe_private(0x00290000, None) == ("UL", "", "Private Group Length")
    assert describe_private(0x00290010, None) == ("LO", "", "Private Creator")
    assert describe_private(0x002900FF, "ANY") == ("LO", "", "Private Creator")
    # Elements 0001-000F and 0100-0FFF belong to no block.
    assert describe_private(0x00290005, "SIEMENS CSA HEADER")[2].endswith("(no private creator)")
    assert describe_private(0x00290100, "SIEMENS CSA HEADER")[2].endswith("(no private creator)")


@pytest.mark.parametrize(
    "text",
    ["Modality", " Modality ", "(0008,0060)", "0008,0060", "00080060", "(0008, 0060)", "0008 0060"],
)
def test_keyword_to_tag_forms(text: str) -> None:
    assert keyword_to_tag(text) == 0x00080060


def test_keyword_to_tag_hex_case_and_private() -> None:
    assert keyword_to_tag("7fe00010") == keyword_to_tag("(7FE0,0010)") == 0x7FE00010
    assert keyword_to_tag("PixelData") == 0x7FE00010
    assert keyword_to_tag("(0029,1010)") == 0x00291010


@pytest.mark.parametrize(
    "text", ["", "NotAKeyword", "modality", "ZZZZZZZZ", "0008006", "(0008,00601)", "0x00080060"]
)
def test_keyword_to_tag_rejects(text: str) -> None:
    assert keyword_to_tag(text) is None
