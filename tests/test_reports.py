"""indexer.reports and indexer.summaries on a real index of the corpus, SQLite and PostgreSQL.

The corpus is indexed once per database for this module: the files DCMTK reads
(``readable_by_dcmtk = yes`` in MANIFEST.tsv), so that every figure can be derived
from the manifest's columns with the rules the README of the corpus states. Broken
files, re-indexing, pruning and concurrent writers get small indexes of their own.

Summary tables are checked against what they summarise, computed independently:
plain SQL over the elements table, and pydicom reading the files.
"""

from __future__ import annotations

import os
import shutil
import statistics
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
import sqlalchemy as sa
from helpers import (
    SUMMARY_TABLES,
    pg_database,
    pydicom_nested,
    pydicom_read,
    readable_rows,
    rebuilt_summaries,
)
from helpers import query as sql_rows
from pydicom.multival import MultiValue
from sqlalchemy.pool import NullPool

from indexer import reports, summaries
from indexer.db import connect
from indexer.reports import QueryError, ReportError
from indexer.run import index_paths

pytestmark = pytest.mark.corpus

# fo-dicom/GH064 and GH179A: element counts depend on the reader (see the corpus README).
COUNT_EXCEPTIONS = {"fo-dicom/GH064.dcm", "fo-dicom/GH179A.dcm"}


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture
def other_url(request: pytest.FixtureRequest, db_url: str, tmp_path: Path) -> Iterator[str]:
    """A second fresh database of the same kind as `db_url`."""
    if db_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path}/other.db"
        return
    with pg_database(request.getfixturevalue("pg_url")) as url:
        yield url


def summary_dump(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the summary tables, sorted (ids are content hashes, so comparable)."""
    engine = sa.create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return {
                t: sorted(tuple(r) for r in conn.execute(sa.text(f"SELECT * FROM {t}")))
                for t in SUMMARY_TABLES
            }
    finally:
        engine.dispose()


# -- stats --------------------------------------------------------------------------------------


def test_stats_match_the_manifest(corpus_index: str, corpus_manifest: list[dict[str, str]]) -> None:
    rows = readable_rows(corpus_manifest)
    with connect(corpus_index) as conn:
        stats = reports.collect_stats(conn)
        counts_in_index = dict(
            conn.execute(
                sa.text(
                    "SELECT f.path, i.element_count FROM instances i JOIN files f ON f.id = i.file_id"
                )
            ).all()
        )

    with_study = [r for r in rows if r["study_uid"]]
    placed = [r for r in with_study if r["series_uid"]]
    dicomdirs = [r for r in rows if r["relpath"].endswith("DICOMDIR")]
    # Distinct SOP instances in the hierarchy; further files of one are copies.
    distinct = len({r["sop_instance_uid"] for r in placed if r["sop_instance_uid"]})
    distinct += len([r for r in placed if not r["sop_instance_uid"]])
    assert stats["instances"] == distinct
    assert stats["duplicate_copies"] == len(placed) - distinct
    assert stats["dicomdirs"] == len(dicomdirs) == 1
    assert stats["studies"] == len({r["study_uid"] for r in with_study})
    assert stats["series"] == len({r["series_uid"] for r in with_study if r["series_uid"]})
    # Studies without a Patient ID each have their own (synthetic) patient.
    anonymous = {r["study_uid"] for r in with_study if not r["patient_id"]}
    assert stats["patients_without_id"] == len(anonymous)
    assert stats["patients"] == len({r["patient_id"] for r in with_study if r["patient_id"]}) + len(
        anonymous
    )
    assert stats["files"] == len(rows)
    assert stats["files_by_status"] == {"indexed": len(rows)}
    assert stats["bytes"] == sum(int(r["bytes"]) for r in rows)
    assert stats["instances_outside_hierarchy"] == len(rows) - len(placed) - len(dicomdirs)
    assert stats["errors"] == 0 and stats["missing_files"] == 0

    # Elements: DCMTK's counts, except the two files whose count depends on the reader.
    expected_counts = []
    for r in rows:
        if r["relpath"] in COUNT_EXCEPTIONS:
            expected_counts.append(
                next(n for p, n in counts_in_index.items() if p.endswith(r["relpath"]))
            )
        else:
            expected_counts.append(int(r["element_count"]))
    assert stats["elements"] == sum(expected_counts)
    median = statistics.median(expected_counts)
    assert stats["elements_per_instance"] == {
        "min": min(expected_counts),
        "median": int(median) if median == int(median) else median,
        "max": max(expected_counts),
    }

    uid_counts = Counter(r["sop_instance_uid"] for r in rows if r["sop_instance_uid"])
    duplicated = {u: n for u, n in uid_counts.items() if n > 1}
    assert (
        stats["duplicate_sop_instance_uids"] == len(duplicated) == 3
    )  # the corpus README's 3 groups
    assert stats["instances_with_duplicate_uid"] == sum(duplicated.values())


def test_stats_breakdowns_match_the_manifest(
    corpus_index: str, corpus_manifest: list[dict[str, str]]
) -> None:
    rows = readable_rows(corpus_manifest)
    with connect(corpus_index) as conn:
        by_modality = reports.collect_breakdown(conn, "modality")
        by_class = reports.collect_breakdown(conn, "sop-class")
        by_syntax = reports.collect_breakdown(conn, "transfer-syntax")
        by_maker = reports.collect_breakdown(conn, "manufacturer")
        by_year = reports.collect_breakdown(conn, "study-year")
        with pytest.raises(ReportError):
            reports.collect_breakdown(conn, "colour")

    assert {r["modality"]: r["instances"] for r in by_modality} == Counter(
        r["modality"] or None for r in rows
    )
    series_rows = [r for r in rows if r["study_uid"] and r["series_uid"]]
    mr_series = {r["series_uid"] for r in series_rows if r["modality"] == "MR"}
    assert {r["modality"]: r["series"] for r in by_modality}["MR"] <= len(
        mr_series
    )  # series' own modality
    assert [r["instances"] for r in by_modality] == sorted(
        (r["instances"] for r in by_modality), reverse=True
    )

    assert {r["sop_class_uid"]: r["instances"] for r in by_class} == Counter(
        r["sop_class_uid"] or None for r in rows
    )
    names = {r["sop_class_uid"]: r["name"] for r in by_class}
    assert names["1.2.840.10008.5.1.4.1.1.2"] == "CT Image Storage"
    assert names["1.2.840.10008.5.1.4.1.1.4"] == "MR Image Storage"

    # The manifest names the syntax of the meta header only; files without one (empty cell)
    # get the syntax the indexer detected, so each syntax has at least the manifest's count.
    index_counts = {r["transfer_syntax_uid"]: r["instances"] for r in by_syntax}
    manifest_counts = Counter(r["transfer_syntax_uid"] for r in rows if r["transfer_syntax_uid"])
    for uid, n in manifest_counts.items():
        assert index_counts.get(uid, 0) >= n, uid
    extra = sum(index_counts.values()) - sum(manifest_counts.values())
    assert extra == len([r for r in rows if not r["transfer_syntax_uid"]])
    assert sum(r["bytes"] for r in by_syntax) == sum(int(r["bytes"]) for r in rows)
    syntax_names = {r["transfer_syntax_uid"]: r["name"] for r in by_syntax}
    assert syntax_names["1.2.840.10008.1.2.1"] == "Explicit VR Little Endian"
    assert syntax_names["1.2.840.10008.1.2.5"] == "RLE Lossless"

    in_hierarchy = len([r for r in rows if r["study_uid"] and r["series_uid"]])
    assert sum(r["instances"] for r in by_maker) == in_hierarchy
    assert sum(r["instances"] for r in by_year) == in_hierarchy
    assert sum(r["studies"] for r in by_year) == len(
        {r["study_uid"] for r in rows if r["study_uid"] and r["series_uid"]}
    )
    assert all(r["year"] is None or (len(r["year"]) == 4 and r["year"].isdigit()) for r in by_year)


def test_stats_on_an_empty_index(db_url: str) -> None:
    from indexer.db import open_index

    open_index(db_url).dispose()
    with connect(db_url) as conn:
        stats = reports.collect_stats(conn)
    assert stats["instances"] == 0
    assert stats["elements_per_instance"] == {"min": None, "median": None, "max": None}
    assert stats["by_modality"] == []


def test_stats_count_errors_and_missing_files(
    db_url: str, corpus_dir: Path, corpus_manifest: list[dict[str, str]], tmp_path: Path
) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(corpus_dir / "broken", broken)
    index_paths([broken], db_url, workers=0)
    # Files DCMTK cannot read and whose name promises DICOM are errors, except
    # broken/pydicom/SC_rgb_jpeg.dcm, which is read with a warning (the corpus README:
    # the meta header says explicit VR, the data set is implicit; readers switch).
    unreadable = [
        r["relpath"]
        for r in corpus_manifest
        if r["relpath"].startswith("broken/") and r["readable_by_dcmtk"] == "no"
    ]
    named_like_dicom = [p for p in unreadable if p.endswith(".dcm") or "." not in Path(p).name]
    expected_errors = [p for p in named_like_dicom if p != "broken/pydicom/SC_rgb_jpeg.dcm"]
    with connect(db_url) as conn:
        stats = reports.collect_stats(conn)
    assert stats["errors"] == len(expected_errors)
    assert sum(stats["errors_by_reason"].values()) == stats["errors"]
    assert stats["warnings"] >= 1
    assert stats["missing_files"] == 0

    gone = sorted(broken.rglob("*.dcm"))[:2]
    for path in gone:
        path.unlink()
    index_paths([broken], db_url, workers=0)
    with connect(db_url) as conn:
        stats = reports.collect_stats(conn)
    assert stats["missing_files"] == len(gone)
    assert stats["files_by_status"]["missing"] == len(gone)


# -- tags ---------------------------------------------------------------------------------------

# Manifest columns and the top-level tag each one reports.
MANIFEST_TAGS = {
    "modality": "(0008,0060)",
    "sop_class_uid": "(0008,0016)",
    "sop_instance_uid": "(0008,0018)",
    "study_uid": "(0020,000D)",
    "series_uid": "(0020,000E)",
}


def test_tag_usage_counts_instances_that_have_a_tag(
    corpus_index: str, corpus_manifest: list[dict[str, str]]
) -> None:
    rows = readable_rows(corpus_manifest)
    with connect(corpus_index) as conn:
        usage = reports.tag_usage(conn)
        empty = {}
        for tag in MANIFEST_TAGS.values():
            values = reports.tag_values_report(conn, tag)["values"]
            empty[tag] = sum(v["instances"] for v in values if v["value"] == "")
    assert usage["instances"] == len(rows)
    by_tag = {t["tag"]: t for t in usage["tags"]}
    for column, tag in MANIFEST_TAGS.items():
        # An empty manifest cell is an absent element or an empty one (fo-dicom/multiframe.dcm
        # has an empty StudyInstanceUID): the instances that have it, less the empty ones.
        expected = len([r for r in rows if r[column]])
        assert by_tag[tag]["instances"] - empty[tag] == expected, tag
        assert by_tag[tag]["share"] == round(by_tag[tag]["instances"] / len(rows), 6)
    modality = by_tag["(0008,0060)"]
    assert modality["keyword"] == "Modality"
    assert modality["distinct_values_complete"] is True
    assert modality["distinct_values"] == len({r["modality"] for r in rows if r["modality"]})
    top = Counter(r["modality"] for r in rows if r["modality"]).most_common(1)[0]
    assert modality["top_values"][0] == {
        "value": top[0],
        "instances": top[1],
        "occurrences": top[1],
    }
    # UIDs are not counted in the summary: no distinct count, no values.
    assert by_tag["(0008,0018)"]["distinct_values"] is None
    assert by_tag["(0008,0018)"]["top_values"] == []
    # Patient values stay hidden unless asked for.
    assert (
        by_tag["(0010,0020)"]["values_hidden"] is True
        and by_tag["(0010,0020)"]["top_values"] is None
    )


def test_tag_usage_equals_a_group_by_over_the_elements(corpus_index: str) -> None:
    """Every top-level public tag: the summary's instance and occurrence counts, recomputed in SQL."""
    expected = {
        (f"({tag >> 16:04X},{tag & 0xFFFF:04X})", n, o)
        for tag, n, o in sql_rows(
            corpus_index,
            """
            SELECT p.tag, COUNT(DISTINCT e.file_id), COUNT(*)
            FROM elements e JOIN paths p ON p.id = e.path_id
            WHERE p.depth = 0 AND (e.flags & 3) = 0 AND p.private_creator IS NULL
              AND (p.tag / 65536) % 2 = 0
            GROUP BY p.tag""",
        )
    }
    with connect(corpus_index) as conn:
        usage = reports.tag_usage(conn)
    got = {
        (t["tag"], t["instances"], t["occurrences"])
        for t in usage["tags"]
        if t["depth"] == 0 and t["private_creator"] is None and not int(t["tag"][1:5], 16) & 1
    }
    assert got == expected
    # And the total of all occurrences is the number of counted element rows.
    total = sql_rows(corpus_index, "SELECT COUNT(*) FROM elements WHERE (flags & 3) = 0")[0][0]
    assert sum(t["occurrences"] for t in usage["tags"]) == total


def _pydicom_private_usage(paths: list[Path], group: int, creator: str, low: int) -> int:
    found = 0
    for path in paths:
        ds = pydicom_read(path)
        if ds is None:
            continue
        for block in range(0x10, 0x100):
            tag = (group << 16) | block
            if (
                tag in ds
                and str(ds[tag].value).strip() == creator
                and ((group << 16) | (block << 8) | low) in ds
            ):
                found += 1
                break
    return found


def test_private_tags_are_counted_by_creator_across_blocks(
    corpus_index: str, corpus_dir: Path, corpus_manifest: list[dict[str, str]]
) -> None:
    """(0029,xx10) of "SIEMENS CSA HEADER" is one tag whichever block the creator got."""
    siemens = [corpus_dir / r["relpath"] for r in readable_rows(corpus_manifest)]
    expected = _pydicom_private_usage(siemens, 0x0029, "SIEMENS CSA HEADER", 0x10)
    assert expected > 0
    with connect(corpus_index) as conn:
        usage = reports.tag_usage(conn, private=True, path='(0029,"SIEMENS CSA HEADER",*')
        drill = reports.tag_values_report(conn, '(0029,"SIEMENS CSA HEADER",10)')
    by_tag = {t["tag"]: t for t in usage["tags"]}
    assert by_tag['(0029,"SIEMENS CSA HEADER",10)']["instances"] == expected
    assert by_tag['(0029,"SIEMENS CSA HEADER",10)']["name"] == "CSA Image Header Info"
    assert all(int(t["tag"][1:5], 16) & 1 for t in usage["tags"])
    assert drill["instances"] == expected and drill["source"] == "elements"
    assert drill["values"] == [
        {"value": None, "instances": expected, "occurrences": expected}
    ]  # binary


def test_tag_usage_filters_by_modality_and_sop_class(
    corpus_index: str, corpus_manifest: list[dict[str, str]]
) -> None:
    rows = readable_rows(corpus_manifest)
    mr = [r for r in rows if r["modality"] == "MR"]
    ct_class = [r for r in rows if r["sop_class_uid"] == "1.2.840.10008.5.1.4.1.1.2"]
    with connect(corpus_index) as conn:
        by_modality = reports.tag_usage(conn, modality="mr")
        by_class = reports.tag_usage(conn, sop_class="CT Image Storage")
        by_uid = reports.tag_usage(conn, sop_class="1.2.840.10008.5.1.4.1.1.2")
        drill = reports.tag_values_report(conn, "Modality", modality="MR")
    assert by_modality["instances"] == len(mr)
    modality = {t["tag"]: t for t in by_modality["tags"]}["(0008,0060)"]
    assert modality["share"] == 1.0 and modality["top_values"][0]["value"] == "MR"
    assert by_class["instances"] == by_uid["instances"] == len(ct_class)
    assert {t["tag"]: t["instances"] for t in by_class["tags"]}["(0008,0016)"] == len(ct_class)
    assert drill["values"] == [{"value": "MR", "instances": len(mr), "occurrences": len(mr)}]


def test_drill_down_into_one_tag(corpus_index: str, corpus_manifest: list[dict[str, str]]) -> None:
    rows = readable_rows(corpus_manifest)
    with connect(corpus_index) as conn:
        modality = reports.tag_values_report(conn, "Modality")
        same = reports.tag_values_report(conn, "(0008,0060)")
        uids = reports.tag_values_report(conn, "SOPInstanceUID")
        hidden = reports.tag_values_report(conn, "PatientID")
        shown = reports.tag_values_report(conn, "0010,0020", patient_values=True)
        with pytest.raises(ReportError, match="not a DICOM keyword"):
            reports.tag_values_report(conn, "NoSuchKeyword")
        with pytest.raises(ReportError, match="no tag"):
            reports.tag_values_report(conn, "(0009,9999)")
    expected = Counter(r["modality"] for r in rows if r["modality"])
    assert modality["source"] == "summary"
    assert {v["value"]: v["instances"] for v in modality["values"]} == expected
    assert modality == same
    assert uids["source"] == "elements"  # UIDs are counted on demand
    assert {v["value"]: v["instances"] for v in uids["values"]} == Counter(
        r["sop_instance_uid"] for r in rows if r["sop_instance_uid"]
    )
    assert hidden["values_hidden"] is True and hidden["values"] is None
    assert hidden["distinct_values"] == shown["distinct_values"]
    with_patient = Counter(r["patient_id"] for r in rows if r["patient_id"])
    assert {v["value"]: v["instances"] for v in shown["values"] if v["value"]} == with_patient


def test_nested_tags_are_keyed_by_their_sequence(
    corpus_index: str, corpus_dir: Path, corpus_manifest: list[dict[str, str]]
) -> None:
    files = [corpus_dir / r["relpath"] for r in readable_rows(corpus_manifest)]
    holders: Counter[str] = Counter()
    values: Counter[str] = Counter()
    for path in files:
        found = pydicom_nested(path, "ReferencedImageSequence", "ReferencedSOPClassUID")
        if found:
            holders[str(path)] += 1
            values.update(found)
    assert holders
    with connect(corpus_index) as conn:
        usage = reports.tag_usage(conn, path="ReferencedImageSequence.*")
        drill = reports.tag_values_report(conn, "ReferencedImageSequence.ReferencedSOPClassUID")
        same = reports.tag_values_report(conn, "(0008,1140)[0].(0008,1150)")
    by_tag = {t["tag"]: t for t in usage["tags"]}
    entry = by_tag["(0008,1140).(0008,1150)"]
    assert entry["keyword"] == "ReferencedImageSequence.ReferencedSOPClassUID"
    assert entry["instances"] == len(holders)
    assert entry["occurrences"] == sum(values.values())
    assert {v["value"]: v["occurrences"] for v in drill["values"]} == values
    assert drill == same


# -- find ---------------------------------------------------------------------------------------


def test_find_by_patient_and_uids(
    corpus_index: str, corpus_dir: Path, corpus_manifest: list[dict[str, str]]
) -> None:
    rows = [r for r in readable_rows(corpus_manifest) if r["study_uid"] and r["series_uid"]]
    study = Counter(r["study_uid"] for r in rows).most_common(1)[0][0]
    in_study = [r for r in rows if r["study_uid"] == study]
    patient = in_study[0]["patient_id"]
    series_uid = in_study[0]["series_uid"]
    with connect(corpus_index) as conn:
        studies = reports.find(conn, "studies", [("PatientID", patient)])
        series = reports.find(conn, "series", [("StudyInstanceUID", study)])
        found = reports.find(conn, "instances", [("SeriesInstanceUID", series_uid)])
        by_tag = reports.find(conn, "instances", [("(0020,000E)", series_uid)])
    assert {s["study_instance_uid"] for s in studies} == {
        r["study_uid"] for r in rows if r["patient_id"] == patient
    }
    assert all(s["patient_id"] == patient for s in studies)
    this = next(s for s in studies if s["study_instance_uid"] == study)
    assert this["instances"] == len(in_study)
    assert this["series"] == len({r["series_uid"] for r in in_study})
    assert {s["series_instance_uid"]: s["instances"] for s in series} == Counter(
        r["series_uid"] for r in in_study
    )
    expected = [r for r in rows if r["series_uid"] == series_uid]
    assert sorted(i["sop_instance_uid"] for i in found) == sorted(
        r["sop_instance_uid"] for r in expected
    )
    assert sorted(os.path.relpath(i["path"], corpus_dir) for i in found) == sorted(
        r["relpath"] for r in expected
    )
    assert found == by_tag


def test_find_with_wildcards_modality_and_limit(
    corpus_index: str, corpus_manifest: list[dict[str, str]]
) -> None:
    rows = readable_rows(corpus_manifest)
    ids = sorted(
        {r["patient_id"] for r in rows if r["patient_id"] and r["study_uid"] and r["series_uid"]}
    )
    prefix = Counter(p[:2] for p in ids).most_common(1)[0][0]
    with connect(corpus_index) as conn:
        wild = reports.find(conn, "studies", [("PatientID", prefix + "*")])
        one_char = reports.find(conn, "studies", [("PatientID", "?" + ids[0][1:])])
        ct = reports.find(conn, "instances", [("Modality", "CT")])
        ct_series = reports.find(conn, "series", [("Modality", "CT")])
        limited = reports.find(conn, "instances", [("Modality", "CT")], limit=2)
        nothing = reports.find(conn, "studies", [("PatientID", "no-such-patient")])
        with pytest.raises(ReportError):
            reports.find(conn, "patients", [])
    assert {s["patient_id"] for s in wild} == {p for p in ids if p.startswith(prefix)}
    assert ids[0] in {s["patient_id"] for s in one_char}
    assert len(ct) == len([r for r in rows if r["modality"] == "CT"])
    assert {s["series_instance_uid"] for s in ct_series} == {
        r["series_uid"]
        for r in rows
        if r["modality"] == "CT" and r["series_uid"] and r["study_uid"]
    }
    assert limited == ct[:2]
    assert nothing == []


def _study_dates(corpus_dir: Path, rows: list[dict[str, str]]) -> dict[str, str]:
    """Study UID -> StudyDate read by pydicom (studies of files pydicom cannot read are left out)."""
    dates: dict[str, str] = {}
    for r in rows:
        if not (r["study_uid"] and r["series_uid"]):
            continue
        ds = pydicom_read(corpus_dir / r["relpath"], "StudyDate")
        if ds is not None:
            dates.setdefault(r["study_uid"], str(ds.get("StudyDate", "") or ""))
    return dates


def test_find_by_study_date_range(
    corpus_index: str, corpus_dir: Path, corpus_manifest: list[dict[str, str]]
) -> None:
    dates = _study_dates(corpus_dir, readable_rows(corpus_manifest))
    with connect(corpus_index) as conn:
        in_2018 = reports.find(conn, "studies", [("StudyDate", "20180101-20181231")])
        since = reports.find(conn, "studies", [("StudyDate", "2019-")])
        until = reports.find(conn, "studies", [("StudyDate", "-2004")])
        exact = reports.find(conn, "studies", [("StudyDate", "20180918")])

    def known(found: list[dict[str, Any]]) -> set[str]:
        return {s["study_instance_uid"] for s in found} & dates.keys()

    assert known(in_2018) == {u for u, d in dates.items() if d.startswith("2018")}
    assert known(since) == {u for u, d in dates.items() if d and d >= "2019"}
    assert known(until) == {u for u, d in dates.items() if d and d[:4] <= "2004"}
    assert known(exact) == {u for u, d in dates.items() if d == "20180918"}
    assert in_2018 and since and until and exact


def test_find_by_a_tag_inside_a_sequence(
    corpus_index: str, corpus_dir: Path, corpus_manifest: list[dict[str, str]]
) -> None:
    mr_class = "1.2.840.10008.5.1.4.1.1.4"
    expected = set()
    for r in readable_rows(corpus_manifest):
        found = pydicom_nested(
            corpus_dir / r["relpath"], "ReferencedImageSequence", "ReferencedSOPClassUID"
        )
        if found and mr_class in found:
            expected.add(r["relpath"])
    assert expected
    with connect(corpus_index) as conn:
        found = reports.find(
            conn, "instances", [("ReferencedImageSequence.ReferencedSOPClassUID", mr_class)]
        )
        wild = reports.find(
            conn, "instances", [("ReferencedImageSequence.ReferencedSOPClassUID", "*.4")]
        )
        with pytest.raises(ReportError, match="nothing can match"):
            reports.find(conn, "instances", [("(0009,9999)", "x")])
    relpaths = {os.path.relpath(i["path"], corpus_dir) for i in found}
    assert relpaths == expected
    assert {os.path.relpath(i["path"], corpus_dir) for i in wild} >= expected


def test_find_matches_one_value_of_a_multi_valued_element(
    corpus_index: str, corpus_dir: Path, corpus_manifest: list[dict[str, str]]
) -> None:
    expected = set()
    unread = set()
    for r in readable_rows(corpus_manifest):
        ds = pydicom_read(corpus_dir / r["relpath"], "ImageType")
        if ds is None:
            unread.add(r["relpath"])
            continue
        value = ds.get("ImageType", None)
        values = list(value) if isinstance(value, MultiValue) else [value]
        if "MOSAIC" in [str(v) for v in values]:
            expected.add(r["relpath"])
    assert expected
    with connect(corpus_index) as conn:
        found = reports.find(conn, "instances", [("ImageType", "MOSAIC")])
    assert {os.path.relpath(i["path"], corpus_dir) for i in found} - unread == expected


# -- sql ----------------------------------------------------------------------------------------


def _counts(url: str) -> tuple[int, int]:
    rows = sql_rows(url, "SELECT (SELECT COUNT(*) FROM files), (SELECT COUNT(*) FROM elements)")
    return rows[0][0], rows[0][1]


def test_run_query_reads(corpus_index: str, corpus_manifest: list[dict[str, str]]) -> None:
    with connect(corpus_index) as conn:
        result = reports.run_query(
            conn, "SELECT modality, COUNT(*) AS n FROM instances GROUP BY modality"
        )
        twice = reports.run_query(conn, "-- a comment\nSELECT 1 AS a, 2 AS a;")
    assert result.columns == ["modality", "n"]
    assert dict(result.rows) == Counter(
        r["modality"] or None for r in readable_rows(corpus_manifest)
    )
    assert twice.records() == [{"a": 1, "a_2": 2}]


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE files SET size = 0",
        "DELETE FROM elements",
        "SELECT 1; DROP TABLE files",
        "SELECT 1; DELETE FROM files",
        "WITH gone AS (SELECT 1) DELETE FROM files",
        "DROP TABLE files",
        "CREATE TABLE x (a int)",
        "INSERT INTO runs (id) VALUES (99)",
    ],
)
def test_run_query_cannot_write(corpus_index: str, statement: str) -> None:
    before = _counts(corpus_index)
    with connect(corpus_index) as conn, pytest.raises(QueryError):
        reports.run_query(conn, statement)
    assert _counts(corpus_index) == before
    assert sql_rows(corpus_index, "SELECT MIN(size) FROM files")[0][0] > 0


def test_run_query_refuses_attach_and_vacuum_into(corpus_index: str, tmp_path: Path) -> None:
    if not corpus_index.startswith("sqlite"):
        pytest.skip("SQLite statements")
    target = tmp_path / "copy.db"
    with connect(corpus_index) as conn:
        for statement in (
            f"ATTACH DATABASE '{target}' AS other",
            f"VACUUM INTO '{target}'",
            "SELECT 1; ATTACH DATABASE ':memory:' AS m",
        ):
            with pytest.raises(QueryError):
                reports.run_query(conn, statement)
    assert not target.exists()


def test_run_query_connection_is_read_only_even_past_the_keyword_check(corpus_index: str) -> None:
    """The first-keyword check is a courtesy: the connection itself refuses writes."""
    before = _counts(corpus_index)
    with connect(corpus_index) as conn, pytest.raises(QueryError):
        reports.run_query(
            conn,
            "WITH x AS (DELETE FROM files RETURNING id) SELECT COUNT(*) FROM x"
            if corpus_index.startswith("postgresql")
            else "WITH x AS (SELECT 1) UPDATE files SET size = 0",
        )
    assert _counts(corpus_index) == before


# -- summaries: exact under re-index, prune, rollback and concurrent writers ------------------


def test_summaries_equal_a_rebuild_from_the_elements(corpus_index: str) -> None:
    incremental = summary_dump(corpus_index)
    engine = sa.create_engine(corpus_index, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            trans = conn.begin()
            counted = summaries.rebuild(conn)
            rebuilt = {
                t: sorted(tuple(r) for r in conn.execute(sa.text(f"SELECT * FROM {t}")))
                for t in SUMMARY_TABLES
            }
            trans.rollback()
    finally:
        engine.dispose()
    assert counted > 0
    assert rebuilt == incremental
    assert summary_dump(corpus_index) == incremental  # the rollback left them as they were


def test_instance_groups_stay_exact_when_files_of_a_series_disagree(
    db_url: str, sample_dir: Path, tmp_path: Path
) -> None:
    """Two files of one series name different manufacturers; the series row keeps the smaller
    name, which changes when the second file is written. Instances are counted by their own
    values, so adding and removing them in any order keeps the counts exact."""
    source = sample_dir / "dcm_qa_nih/20180918GE/mr_0005/axial_epi_fmri_sequential_i_to_s-00001.dcm"
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    for folder, maker, uid in ((first, "ZZ Maker", "1.2.3.4.1"), (second, "AA Maker", "1.2.3.4.2")):
        ds = pydicom.dcmread(source)
        ds.Manufacturer = maker
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid
        ds.save_as(folder / "image.dcm")

    index_paths([first], db_url, workers=0)
    index_paths([second], db_url, workers=0)  # the series row now says "AA Maker"
    assert sql_rows(db_url, "SELECT manufacturer FROM series") == [("AA Maker",)]
    assert summary_dump(db_url) == rebuilt_summaries(db_url, SUMMARY_TABLES)
    with connect(db_url) as conn:
        by_maker = {
            r["manufacturer"]: r["instances"]
            for r in reports.collect_breakdown(conn, "manufacturer")
        }
    assert by_maker == {"AA Maker": 1, "ZZ Maker": 1}

    (first / "image.dcm").unlink()
    index_paths([first], db_url, workers=0, prune=True)  # the "ZZ Maker" instance goes
    assert summary_dump(db_url) == rebuilt_summaries(db_url, SUMMARY_TABLES)
    with connect(db_url) as conn:
        by_maker = {
            r["manufacturer"]: r["instances"]
            for r in reports.collect_breakdown(conn, "manufacturer")
        }
    assert by_maker == {"AA Maker": 1}


def _tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.md", "*.tsv"))
    return dst


def test_summaries_stay_exact_under_reindex_and_prune(
    db_url: str, other_url: str, sample_dir: Path, tmp_path: Path
) -> None:
    tree = _tree(sample_dir, tmp_path / "tree")
    index_paths([tree], db_url, workers=0)
    files = sorted(p for p in tree.rglob("*") if p.is_file())
    # Change one file's content (re-index: remove then add), delete two (prune).
    changed, gone = files[0], files[1:3]
    shutil.copyfile(files[-1], changed)
    os.utime(changed, ns=(1_000_000_000, 1_000_000_000))
    for path in gone:
        path.unlink()
    index_paths([tree], db_url, workers=0, prune=True)
    after = summary_dump(db_url)

    index_paths([tree], other_url, workers=0)  # what a first index of the final tree counts
    expected = summary_dump(other_url)
    assert after["tag_usage"] == expected["tag_usage"]
    assert after["tag_values"] == expected["tag_values"]
    # Keys and path keys are a dictionary (like `paths`): they may keep entries of gone files.
    assert set(expected["tag_keys"]) <= set(after["tag_keys"])


def test_summary_deltas_are_dropped_on_rollback(
    db_url: str, sample_dir: Path, tmp_path: Path
) -> None:
    tree = _tree(sample_dir, tmp_path / "tree")
    index_paths([tree], db_url, workers=0)
    before = summary_dump(db_url)
    engine = sa.create_engine(db_url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            ids = [r[0] for r in conn.execute(sa.text("SELECT file_id FROM instances"))]
            conn.rollback()
            trans = conn.begin()
            summaries.apply(conn, summaries.remove_files(conn, ids))
            trans.rollback()  # deltas applied inside a transaction go with it
    finally:
        engine.dispose()
    assert summary_dump(db_url) == before


def test_migration_counts_an_index_written_before_the_summaries(
    db_url: str, sample_dir: Path, tmp_path: Path
) -> None:
    """Upgrading an index from revision 0001 (no summary tables) fills them from its elements."""
    from alembic import command

    from indexer import db

    index_paths([_tree(sample_dir, tmp_path / "tree")], db_url, workers=0)
    before = summary_dump(db_url)
    assert before["tag_usage"]
    engine = sa.create_engine(db_url, poolclass=NullPool)
    try:
        with engine.begin() as conn:
            command.downgrade(db.alembic_config(conn), "0001")
        with engine.connect() as conn:
            assert not {"tag_usage", "tag_values"} & set(sa.inspect(conn).get_table_names())
        db.upgrade(engine)
    finally:
        engine.dispose()
    assert summary_dump(db_url) == before
