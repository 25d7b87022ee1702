"""`indexer find` with numbers: numeric VRs compare as numbers, through the CLI, on both databases.

Files are built byte by byte (torture.build) with the values the issue names: a DS stored as
``1.250000`` and ``1.0``, multi-valued DS, a US and an FL.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import DB_KINDS, fresh_database, run_cli, server_for
from torture.build import dicom_file, el, uid_for

CASES = {
    # name: (modality, SliceThickness, PixelSpacing, Rows, B1rms or None)
    "thin": (b"CT", b"1.250000", b"0.5\\0.5", 512, 0.1),
    "one": (b"CT", b"1.0 ", b"0.7\\1.5", 256, None),
    "thick": (b"MR", b"5", b"2\\2", 64, None),
}


def _series(name: str) -> str:
    return uid_for(name + "/series")


@pytest.fixture(scope="module", params=DB_KINDS)
def index_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    tree = tmp_path_factory.mktemp("numbers")
    for name, (modality, thickness, spacing, rows, b1rms) in CASES.items():
        extra = [
            (0x00180050, el(0x00180050, "DS", thickness)),
            (0x00280030, el(0x00280030, "DS", spacing)),
            (0x00280010, el(0x00280010, "US", struct.pack("<H", rows))),
        ]
        if b1rms is not None:
            extra.append((0x00181320, el(0x00181320, "FL", struct.pack("<f", b1rms))))
        (tree / f"{name}.dcm").write_bytes(dicom_file(name, modality=modality, extra=extra))

    server = server_for(request, request.param)
    with fresh_database(request.param, tmp_path_factory.mktemp("db"), server) as url:
        done = run_cli(["index", "--db", url, "-q", str(tree)])
        assert done.returncode == 0, done.stderr
        yield url


def _found(url: str, *filters: str, level: str = "series") -> set[str]:
    done = run_cli(["find", level, "--db", url, "-f", "json", *filters])
    assert done.returncode == 0, done.stderr
    return {r["series_instance_uid"] for r in json.loads(done.stdout or "[]")}


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        (["Modality=CT", "SliceThickness<=1.5"], {"thin", "one"}),  # the cohort
        (["SliceThickness=0-1.5"], {"thin", "one"}),
        (["SliceThickness=1.25"], {"thin"}),  # stored 1.250000
        (["SliceThickness=1"], {"one"}),  # stored 1.0
        (["SliceThickness>1"], {"thin", "thick"}),
        (["SliceThickness>=5"], {"thick"}),
        (["SliceThickness<1.25"], {"one"}),
        (["SliceThickness!=5"], {"thin", "one"}),
        (["SliceThickness=1.25\\5"], {"thin", "thick"}),
        (["SliceThickness=2-"], {"thick"}),
        (["SliceThickness=-1.0"], set()),  # a negative number, not an open range
        (["SliceThickness=5-1"], set()),  # reversed: nothing
        # Multi-valued: one value matching is a match; != means no value equals.
        (["PixelSpacing=1.5"], {"one"}),
        (["PixelSpacing>1"], {"one", "thick"}),
        (["PixelSpacing!=2"], {"thin", "one"}),
        (["Rows>=256"], {"thin", "one"}),  # US, binary
        (["(0028,0010)<100"], {"thick"}),  # by tag
        (["B1rms=0.1"], {"thin"}),  # FL: a 4-byte float, stored as 0.10000000149...
        (["B1rms<=0.1"], {"thin"}),
    ],
)
def test_numeric_comparisons(index_url: str, filters: list[str], expected: set[str]) -> None:
    assert _found(index_url, *filters) == {_series(n) for n in expected}


def test_numbers_at_every_level(index_url: str) -> None:
    assert _found(index_url, "SliceThickness<=1.5", level="instances") == {
        _series("thin"),
        _series("one"),
    }
    done = run_cli(["find", "studies", "--db", index_url, "-f", "json", "SliceThickness>2"])
    assert done.returncode == 0, done.stderr
    assert [r["study_instance_uid"] for r in json.loads(done.stdout)] == [uid_for("thick/study")]


def test_instance_number_compares_as_a_number(index_url: str) -> None:
    # Hierarchy keys with a numeric VR: `=` stays on the indexed column, comparisons are numbers.
    assert _found(index_url, "InstanceNumber=1") == {_series(n) for n in CASES}
    assert _found(index_url, "InstanceNumber>=1", "InstanceNumber<2") == {_series(n) for n in CASES}
    assert _found(index_url, "InstanceNumber>1") == set()


@pytest.mark.parametrize(
    ("argument", "says"),
    [
        ("PatientName<A", "PatientName is PN, not a number"),
        ("Modality>=CT", "Modality is CS, not a number"),
        ("StudyDate<2020", "a DA takes =, >=, <= or a range"),
        ("SliceThickness=abc", "SliceThickness is a number (DS)"),
        ("SliceThickness<=", "SliceThickness is a number (DS)"),
        ("<=1", "is not KEY=VALUE"),
        ("PatientBirthDate=-", "give a start, an end or both"),
        ("StudyDate=-", "give a start, an end or both"),
    ],
)
def test_refused_comparisons(index_url: str, argument: str, says: str) -> None:
    done = run_cli(["find", "series", "--db", index_url, argument])
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.startswith("error: ") and says in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_refusals_do_not_repeat_the_value(index_url: str) -> None:
    # A filter value may be patient data (a name typed without its key, a weight): errors,
    # which end up in cron mails and logs, name the key and the comparison only.
    for argument in ("DOE^JOHN", "PatientWeight=W8DOE", "PatientWeight>=DOE"):
        done = run_cli(["find", "series", "--db", index_url, argument])
        assert done.returncode == 1 and done.stderr.startswith("error: "), done.stderr
        assert "DOE" not in done.stderr, done.stderr


def test_dates_keep_their_ranges(tmp_path: Path) -> None:
    # >= and <= on a date are ranges open at one end; the files' StudyDate is absent: none match,
    # and the filter is accepted.
    url = f"sqlite:///{tmp_path / 'x.db'}"
    (tmp_path / "a.dcm").write_bytes(dicom_file("a"))
    assert run_cli(["index", "--db", url, "-q", str(tmp_path / "a.dcm")]).returncode == 0
    for argument in ("StudyDate>=20200101", "StudyDate<=2020"):
        done = run_cli(["find", "studies", "--db", url, argument])
        assert done.returncode == 0 and done.stdout.strip() == "no match", done.stderr


# -- hints: inputs that cannot match say why, on stderr, one line each; results unchanged ---------


@pytest.mark.parametrize(
    ("argument", "says"),
    [
        ("StudyDate=2024-01-01", "a DA is written YYYYMMDD"),
        ("StudyDate=20241231-20240101", "the range is reversed"),
        ("StudyDate=2024", "a year or month is a range"),
        ("StudyTime=12:00", "a TM is written HHMMSS"),
        ("SliceThickness=5-1", "the range is reversed"),
        ("Modality=CT,MR", "separate several values with \\"),
        ("Modality=CAT", "not Modality defined terms (PS3.3 C.7.3.1.1.1"),
        ("SOPClassUID=1.2.3.4", "not registered SOP classes"),
    ],
)
def test_hints(index_url: str, argument: str, says: str) -> None:
    done = run_cli(["find", "series", "--db", index_url, argument])
    assert done.returncode == 0
    assert done.stdout.strip() == "no match"
    assert done.stderr.startswith("hint: ") and says in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "argument",
    ["Modality=CT", "Modality=SR", "SOPClassUID=1.2.840.10008.5.1.4.1.1.7", "StudyDate=20240131"],
)
def test_no_hint_for_sound_filters(index_url: str, argument: str) -> None:
    done = run_cli(["find", "series", "--db", index_url, argument])
    assert done.returncode == 0 and done.stderr == "", done.stderr


def test_values_the_index_holds_get_no_hint(tmp_path: Path) -> None:
    # A modality that is no defined term, but that the files carry: no hint, and it matches.
    url = f"sqlite:///{tmp_path / 'x.db'}"
    (tmp_path / "a.dcm").write_bytes(dicom_file("a", modality=b"SCAN"))
    assert run_cli(["index", "--db", url, "-q", str(tmp_path / "a.dcm")]).returncode == 0
    done = run_cli(["find", "series", "--db", url, "-f", "json", "Modality=SCAN"])
    assert done.stderr == ""
    assert [r["series_instance_uid"] for r in json.loads(done.stdout)] == [_series("a")]
    done = run_cli(["find", "series", "--db", url, "Modality=SCAM"])
    assert done.stderr.startswith("hint: Modality:")


def test_several_modalities_separated_by_backslash(index_url: str) -> None:
    assert _found(index_url, "Modality=CT\\MR") == {_series(n) for n in CASES}
    assert _found(index_url, "Modality=CT\\XA") == {_series("thin"), _series("one")}


def test_keyword_typo(index_url: str) -> None:
    done = run_cli(["find", "series", "--db", index_url, "Modalty=CT"])
    assert done.returncode == 1
    assert "did you mean Modality?" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
