"""`index_paths` on the real corpus and on small trees: what lands in every table.

The corpus is indexed once per database (module-scoped fixture, both SQLite and
PostgreSQL) and every expectation is computed independently of the indexer:

* per-file figures (element_count, max_depth, fragment_sequences, fragments,
  transfer syntax, UIDs) come from MANIFEST.tsv, which was computed with DCMTK.
  The one documented exception is ``fo-dicom/GH064.dcm``, whose count depends on
  the private dictionary: the walker follows pydicom's dictionary there, so its
  expected count and depth are computed with pydicom by the MANIFEST's rules;
* the DICOM hierarchy is derived from the MANIFEST's UID columns with the rules
  of `expected_hierarchy` below. Issuer of Patient ID is not a MANIFEST column,
  so it is read with pydicom;
* the few files that DCMTK cannot read but the indexer reads up to a problem
  (truncated files) have no MANIFEST truth; their hierarchy keys are taken from
  their own top-level elements as stored in the index (see `_keys_from_elements`).
"""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from helpers import (
    by_path,
    copy_files,
    counted_element_rows,
    diff_dumps,
    dump_index,
    fresh_database,
    in_child_obeying_permissions,
    pydicom_counts,
    query,
    regular_files,
    run_cli,
    run_outcomes,
)
from pydicom.errors import InvalidDicomError

from indexer.records import META
from indexer.run import IndexReport, index_paths

# Non-DICOM data files of the corpus, as listed in the `broken/` table of its README.md.
NON_DICOM = {
    "broken/dcm_qa/nifti_named_as_dicom.dcm",
    "broken/pylibjpeg-data/raw_jpeg_named_as_dicom.dcm",
    "broken/pydicom/no_meta.dcm",
    "broken/pydicom/zipMR.gz",
}
# The documented MANIFEST exception: DCMTK and pydicom disagree on its private SQs.
DICTIONARY_DEPENDENT = "fo-dicom/GH064.dcm"
DICOM_SUFFIXES = (".dcm", ".dicom", ".dic", ".ima")

_KEY_TAGS = {
    "(0010,0020)": "patient_id",
    "(0010,0021)": "issuer",
    "(0020,000D)": "study_uid",
    "(0020,000E)": "series_uid",
    "(0008,0018)": "sop_instance_uid",
}


@dataclass(frozen=True)
class Keys:
    """The hierarchy keys of one file (empty string: absent or empty)."""

    patient_id: str
    issuer: str
    study_uid: str
    series_uid: str
    sop_instance_uid: str


@dataclass(frozen=True)
class CorpusIndex:
    url: str
    root: Path
    report: IndexReport
    kind: str
    server: str | None


@pytest.fixture(
    scope="module",
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
    ],
)
def corpus_index(
    request: pytest.FixtureRequest, corpus_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CorpusIndex]:
    """The full corpus indexed once (per database) straight from its read-only folder."""
    server = request.getfixturevalue("pg_url") if request.param == "postgresql" else None
    with fresh_database(request.param, tmp_path_factory.mktemp("corpus-db"), server) as url:
        report = index_paths([corpus_dir], url, workers=2)
        yield CorpusIndex(url, corpus_dir.resolve(), report, request.param, server)


def _rel(ci: CorpusIndex, path: str) -> str:
    return os.path.relpath(path, ci.root)


def _files(ci: CorpusIndex) -> dict[str, dict[str, object]]:
    cols = [
        "path",
        "status",
        "element_count",
        "max_depth",
        "fragment_sequences",
        "fragments",
        "transfer_syntax",
        "problem",
        "id",
    ]
    rows = query(ci.url, f"SELECT {', '.join(cols)} FROM files")
    return {_rel(ci, r[0]): dict(zip(cols, r, strict=False)) for r in rows}


def _errors(ci: CorpusIndex) -> dict[str, list[tuple[str, str, str, str]]]:
    out: dict[str, list[tuple[str, str, str, str]]] = defaultdict(list)
    for path, stage, reason, severity, message in query(
        ci.url, "SELECT path, stage, reason, severity, message FROM errors"
    ):
        out[_rel(ci, path)].append((stage, reason, severity, message))
    return out


def _readable(manifest: list[dict[str, str]]) -> list[dict[str, str]]:
    return [r for r in manifest if r["readable_by_dcmtk"] == "yes"]


def _named_like_dicom(relpath: str) -> bool:
    base = os.path.basename(relpath).lower()
    return base.endswith(DICOM_SUFFIXES) or base == "dicomdir" or "." not in base


# -- the run as a whole ---------------------------------------------------------------------------


def test_run_completes_and_every_file_gets_a_row(corpus_index: CorpusIndex) -> None:
    on_disk = {os.path.relpath(p, corpus_index.root) for p in regular_files(corpus_index.root)}
    report = corpus_index.report
    assert report.outcome == "completed"
    assert report.files_seen == len(on_disk)
    assert report.indexed + report.partial + report.failed + report.skipped == len(on_disk)
    assert report.unchanged == 0 and report.missing == 0 and report.crawl_problems == 0
    assert set(_files(corpus_index)) == on_disk
    runs = query(
        corpus_index.url,
        "SELECT outcome, files_seen, files_indexed, elements_written, finished_at FROM runs",
    )
    assert len(runs) == 1
    outcome, seen, indexed, elements, finished = runs[0]
    assert (outcome, seen, indexed) == ("completed", len(on_disk), report.indexed + report.partial)
    assert finished is not None
    assert (
        elements
        == report.elements
        == query(corpus_index.url, "SELECT COUNT(*) FROM elements")[0][0]
    )


def test_element_figures_match_manifest(
    corpus_index: CorpusIndex, corpus_manifest: list[dict[str, str]]
) -> None:
    """element_count, max_depth, fragment_sequences and fragments of every DCMTK-readable file."""
    files = _files(corpus_index)
    expected, actual = {}, {}
    for row in _readable(corpus_manifest):
        rel = row["relpath"]
        figures = (
            int(row["element_count"]),
            int(row["max_sequence_depth"]),
            int(row["fragment_sequences"]),
            int(row["fragments"]),
        )
        if rel == DICTIONARY_DEPENDENT:
            figures = pydicom_counts(corpus_index.root / rel) + figures[2:]
        expected[rel] = ("indexed",) + figures
        f = files[rel]
        actual[rel] = (
            f["status"],
            f["element_count"],
            f["max_depth"],
            f["fragment_sequences"],
            f["fragments"],
        )
    assert actual == expected


def test_dictionary_dependent_file_differs_from_dcmtk(
    corpus_index: CorpusIndex, corpus_manifest: list[dict[str, str]]
) -> None:
    """The GH064 exception is real: pydicom's dictionary gives other figures than DCMTK's."""
    row = next(r for r in corpus_manifest if r["relpath"] == DICTIONARY_DEPENDENT)
    by_pydicom = pydicom_counts(corpus_index.root / DICTIONARY_DEPENDENT)
    assert by_pydicom != (int(row["element_count"]), int(row["max_sequence_depth"]))
    f = _files(corpus_index)[DICTIONARY_DEPENDENT]
    assert (f["element_count"], f["max_depth"]) == by_pydicom


def test_fragments_per_encapsulated_value_match_manifest(
    corpus_index: CorpusIndex, corpus_manifest: list[dict[str, str]]
) -> None:
    rows = query(
        corpus_index.url,
        "SELECT f.path, e.fragments, e.fragment_bytes, e.fragment_sizes "
        "FROM encapsulated e JOIN files f ON f.id = e.file_id",
    )
    per_file: dict[str, tuple[int, int]] = defaultdict(lambda: (0, 0))
    for path, fragments, fragment_bytes, sizes in rows:
        size_list = [int(s) for s in sizes.split(",")] if sizes else []
        assert len(size_list) == fragments and sum(size_list) == fragment_bytes, path
        count, total = per_file[_rel(corpus_index, path)]
        per_file[_rel(corpus_index, path)] = (count + 1, total + fragments)
    expected = {
        r["relpath"]: (int(r["fragment_sequences"]), int(r["fragments"]))
        for r in _readable(corpus_manifest)
        if int(r["fragment_sequences"])
    }
    actual = {
        rel: v
        for rel, v in per_file.items()
        if rel in {r["relpath"] for r in _readable(corpus_manifest)}
    }
    assert actual == expected


def test_instance_element_count_equals_counted_element_rows(corpus_index: CorpusIndex) -> None:
    """instances.element_count = elements rows that are neither META nor ITEM, for every instance."""
    counted = counted_element_rows(corpus_index.url)
    rows = query(
        corpus_index.url,
        "SELECT f.path, i.element_count, f.element_count FROM instances i "
        "JOIN files f ON f.id = i.file_id",
    )
    assert rows
    assert {p: (ic, fc) for p, ic, fc in rows} == {
        p: (counted.get(p, 0), counted.get(p, 0)) for p, _, _ in rows
    }


def test_every_element_path_is_defined(corpus_index: CorpusIndex) -> None:
    dangling = query(
        corpus_index.url,
        "SELECT COUNT(*) FROM elements e LEFT JOIN paths p ON p.id = e.path_id WHERE p.id IS NULL",
    )
    orphans = query(
        corpus_index.url,
        "SELECT COUNT(*) FROM elements e LEFT JOIN files f ON f.id = e.file_id WHERE f.id IS NULL",
    )
    assert dangling == [(0,)] and orphans == [(0,)]


def test_transfer_syntax_matches_manifest(
    corpus_index: CorpusIndex, corpus_manifest: list[dict[str, str]]
) -> None:
    files = _files(corpus_index)
    expected = {
        r["relpath"]: r["transfer_syntax_uid"]
        for r in _readable(corpus_manifest)
        if r["transfer_syntax_uid"]
    }
    assert {rel: files[rel]["transfer_syntax"] for rel in expected} == expected


# -- hierarchy -------------------------------------------------------------------------------------


def _keys_from_elements(ci: CorpusIndex) -> dict[str, Keys]:
    """Top-level key elements of every file as stored in the elements table."""
    tags = ", ".join(f"'{t}'" for t in _KEY_TAGS)
    rows = query(
        ci.url,
        "SELECT f.path, p.path, e.value FROM elements e JOIN files f ON f.id = e.file_id "
        f"JOIN paths p ON p.id = e.path_id WHERE p.depth = 0 AND p.path IN ({tags}) "
        f"AND (e.flags & {META}) = 0",
    )
    values: dict[str, dict[str, str]] = defaultdict(dict)
    for path, tag, value in rows:
        values[_rel(ci, path)][_KEY_TAGS[tag]] = (value or "").strip()
    return {rel: Keys(**{k: v.get(k, "") for k in _KEY_TAGS.values()}) for rel, v in values.items()}


def _issuer_by_pydicom(path: Path) -> str | None:
    """Issuer of Patient ID read with pydicom, or None when pydicom cannot read the file."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = pydicom.dcmread(path, force=True, specific_tags=["IssuerOfPatientID"])
        except (InvalidDicomError, OSError, ValueError):
            return None
    return str(ds.get("IssuerOfPatientID") or "").strip()


@pytest.fixture(scope="module")
def truth_keys(corpus_index: CorpusIndex, corpus_manifest: list[dict[str, str]]) -> dict[str, Keys]:
    """Hierarchy keys of every file the index holds an instance for.

    From the MANIFEST (and pydicom for the issuer) where it has truth; from the
    stored elements for files it has none for (read by the indexer up to a problem).
    """
    from_elements = _keys_from_elements(corpus_index)
    out: dict[str, Keys] = {}
    for row in _readable(corpus_manifest):
        rel = row["relpath"]
        issuer = _issuer_by_pydicom(corpus_index.root / rel)
        if issuer is None:  # pydicom cannot read it (GH177 big endian): the stored element decides
            issuer = from_elements.get(rel, Keys("", "", "", "", "")).issuer
        out[rel] = Keys(
            row["patient_id"], issuer, row["study_uid"], row["series_uid"], row["sop_instance_uid"]
        )
    instance_files = {
        _rel(corpus_index, r[0])
        for r in query(
            corpus_index.url, "SELECT f.path FROM instances i JOIN files f ON f.id = i.file_id"
        )
    }
    for rel in instance_files - set(out):
        out[rel] = from_elements.get(rel, Keys("", "", "", "", ""))
    return out


@dataclass
class Hierarchy:
    patients: set[tuple[str, str, str]]
    studies: set[str]
    series: set[str]
    instances: int
    outside: set[str]  # files whose instance has no series_ref


def expected_hierarchy(keys: dict[str, Keys]) -> Hierarchy:
    """The hierarchy the rules below imply for files with these keys.

    * every file read as DICOM is one instance, duplicates of a SOP Instance UID included;
    * a patient is keyed by (Patient ID, Issuer of Patient ID, ""); files with an absent
      or empty Patient ID get a synthetic patient per study, ("", issuer, Study UID);
    * a study belongs to the smallest real patient key its files name (a synthetic one only
      when none names a Patient ID), and a patient exists only as some study's patient;
    * patients, studies and series exist only through a Study Instance UID: a file
      without one is an instance outside the hierarchy (series_ref NULL) and adds
      no patient, study or series;
    * a file with a Study but no Series Instance UID adds its patient and study,
      and its instance has no series_ref;
    * studies and series are keyed by their UIDs alone.
    """
    h = Hierarchy(set(), set(), set(), len(keys), set())
    named: dict[str, set[tuple[str, str, str]]] = {}
    for rel, k in keys.items():
        if not k.study_uid:
            h.outside.add(rel)
            continue
        key = (k.patient_id, k.issuer, "" if k.patient_id else k.study_uid)
        named.setdefault(k.study_uid, set()).add(key)
        h.studies.add(k.study_uid)
        if k.series_uid:
            h.series.add(k.series_uid)
        else:
            h.outside.add(rel)
    for patients in named.values():
        h.patients.add(min(patients, key=lambda p: (p[2] != "", p)))
    return h


def test_hierarchy_counts_from_manifest(
    corpus_index: CorpusIndex, truth_keys: dict[str, Keys]
) -> None:
    want = expected_hierarchy(truth_keys)
    url = corpus_index.url
    got = Hierarchy(
        patients={
            (a, b, c)
            for a, b, c in query(
                url, "SELECT patient_id, issuer, synthetic_study_uid FROM patients"
            )
        },
        studies={r[0] for r in query(url, "SELECT study_uid FROM studies")},
        series={r[0] for r in query(url, "SELECT series_uid FROM series")},
        instances=query(url, "SELECT COUNT(*) FROM instances")[0][0],
        outside={
            _rel(corpus_index, r[0])
            for r in query(
                url,
                "SELECT f.path FROM instances i JOIN files f ON f.id = i.file_id WHERE i.series_ref IS NULL",
            )
        },
    )
    assert got == want
    counts = {
        t: query(url, f"SELECT COUNT(*) FROM {t}")[0][0] for t in ("patients", "studies", "series")
    }
    assert counts == {
        "patients": len(want.patients),
        "studies": len(want.studies),
        "series": len(want.series),
    }


def test_instances_hang_under_their_manifest_uids(
    corpus_index: CorpusIndex, truth_keys: dict[str, Keys]
) -> None:
    """Each instance's SOP UID and its series -> study -> patient chain match the file's own keys."""
    rows = query(
        corpus_index.url,
        """
        SELECT f.path, i.sop_instance_uid, s.series_uid, st.study_uid, p.patient_id, p.issuer
        FROM instances i JOIN files f ON f.id = i.file_id
        LEFT JOIN series s ON s.id = i.series_ref LEFT JOIN studies st ON st.id = s.study_ref
        LEFT JOIN patients p ON p.id = st.patient_ref""",
    )
    got = {_rel(corpus_index, r[0]): (r[1] or "", r[2] or "", r[3] or "", r[4], r[5]) for r in rows}
    want = {}
    for rel, k in truth_keys.items():
        in_series = bool(k.study_uid and k.series_uid)
        want[rel] = (
            k.sop_instance_uid,
            k.series_uid if in_series else "",
            k.study_uid if in_series else "",
            k.patient_id if in_series else None,
            k.issuer if in_series else None,
        )
    assert got == want


def test_studies_without_series_keep_their_patient(
    corpus_index: CorpusIndex, truth_keys: dict[str, Keys]
) -> None:
    rows = query(
        corpus_index.url,
        "SELECT st.study_uid, p.patient_id, p.issuer FROM studies st "
        "JOIN patients p ON p.id = st.patient_ref",
    )
    got = {study: (pid, issuer) for study, pid, issuer in rows}
    want = {k.study_uid: (k.patient_id, k.issuer) for k in truth_keys.values() if k.study_uid}
    assert got == want


def test_messy_archive_cases_are_stored(
    corpus_index: CorpusIndex, corpus_manifest: list[dict[str, str]], truth_keys: dict[str, Keys]
) -> None:
    url = corpus_index.url
    instances = {
        _rel(corpus_index, r[0]): r[1:]
        for r in query(
            url,
            """
        SELECT f.path, i.sop_instance_uid, i.series_ref, i.hierarchy_problem, i.rows, i.modality, f.status
        FROM instances i JOIN files f ON f.id = i.file_id""",
        )
    }
    readable = _readable(corpus_manifest)

    # The same SOP Instance UID in several files: every file keeps its own instance.
    by_uid = Counter(r["sop_instance_uid"] for r in readable if r["sop_instance_uid"])
    duplicated = {uid for uid, n in by_uid.items() if n > 1}
    assert duplicated, "the corpus documents duplicate SOP Instance UIDs"
    for uid in duplicated:
        rels = sorted(r["relpath"] for r in readable if r["sop_instance_uid"] == uid)
        assert all(instances[rel][0] == uid for rel in rels), rels

    # No Study Instance UID: stored outside the hierarchy, with the reason.
    no_study = [r["relpath"] for r in readable if not r["study_uid"]]
    assert no_study
    for rel in no_study:
        assert instances[rel][1] is None and instances[rel][2], rel

    # Empty or absent Patient ID: a patient row with "" as its ID holds the studies.
    empty_pid = {k.study_uid for k in truth_keys.values() if k.study_uid and not k.patient_id}
    assert empty_pid
    rows = query(
        url,
        "SELECT st.study_uid FROM studies st JOIN patients p ON p.id = st.patient_ref "
        "WHERE p.patient_id = ''",
    )
    assert {r[0] for r in rows} == empty_pid

    # A DICOMDIR is DICOM: indexed, an instance outside the hierarchy.
    dicomdirs = [r["relpath"] for r in readable if os.path.basename(r["relpath"]) == "DICOMDIR"]
    assert dicomdirs
    for rel in dicomdirs:
        assert instances[rel][5] == "indexed" and instances[rel][1] is None and instances[rel][2]

    # Valid DICOM that is no image (SR, waveforms): indexed in the hierarchy, no rows/columns.
    non_images = [
        r["relpath"]
        for r in readable
        if r["modality"] in ("SR", "ECG") and r["series_uid"] and r["study_uid"]
    ]
    assert non_images
    for rel in non_images:
        _sop, series_ref, problem, rows_, _modality, status = instances[rel]
        assert (status, rows_, problem) == ("indexed", None, None) and series_ref is not None, rel


# -- files that are not (good) DICOM ------------------------------------------------------------


def test_documentation_files_are_not_dicom_without_errors(
    corpus_index: CorpusIndex, corpus_manifest: list[dict[str, str]]
) -> None:
    files = _files(corpus_index)
    docs = set(files) - {r["relpath"] for r in corpus_manifest}
    assert docs == {"README.md", "MANIFEST.tsv", "LICENSES.md"}
    assert {rel: files[rel]["status"] for rel in docs} == {rel: "not_dicom" for rel in docs}
    errors = _errors(corpus_index)
    assert {rel: errors.get(rel, []) for rel in docs} == {rel: [] for rel in docs}
    assert query(
        corpus_index.url,
        "SELECT COUNT(*) FROM instances i JOIN files f ON f.id = i.file_id "
        "WHERE f.status = 'not_dicom'",
    ) == [(0,)]


def test_non_dicom_files_named_like_dicom_have_error_rows(
    corpus_index: CorpusIndex, corpus_manifest: list[dict[str, str]]
) -> None:
    manifest = {r["relpath"]: r for r in corpus_manifest}
    assert all(manifest[rel]["readable_by_dcmtk"] == "no" for rel in NON_DICOM)
    files, errors = _files(corpus_index), _errors(corpus_index)
    assert {rel: files[rel]["status"] for rel in NON_DICOM} == {
        rel: "not_dicom" for rel in NON_DICOM
    }
    named = {rel for rel in NON_DICOM if _named_like_dicom(rel)}
    assert named
    got = {
        rel: [(stage, reason, severity) for stage, reason, severity, _ in errors.get(rel, [])]
        for rel in named
    }
    assert got == {rel: [("read", "not_dicom", "error")] for rel in named}


def test_broken_files_are_recorded_with_reasons(
    corpus_index: CorpusIndex, corpus_manifest: list[dict[str, str]]
) -> None:
    """Every file DCMTK rejects that is DICOM at all is in errors, with a reason and a message."""
    files, errors = _files(corpus_index), _errors(corpus_index)
    broken = [
        r["relpath"]
        for r in corpus_manifest
        if r["readable_by_dcmtk"] == "no" and r["relpath"] not in NON_DICOM
    ]
    assert len(broken) >= 5
    for rel in broken:
        rows = errors.get(rel, [])
        assert rows and all(reason and message for _, reason, _, message in rows), (rel, rows)
        status = files[rel]["status"]
        assert status in ("partial", "indexed", "error"), (rel, status)
        if status == "partial":
            # the problem that stopped the read is the error row, word for word
            assert files[rel]["problem"] and ("walk", "error", files[rel]["problem"]) in [
                (stage, severity, message) for stage, _, severity, message in rows
            ], (rel, rows)
        if status == "indexed":
            assert any(severity == "warning" for _, _, severity, _ in rows), (rel, rows)


def test_readable_files_have_no_error_severity_rows(
    corpus_index: CorpusIndex, corpus_manifest: list[dict[str, str]]
) -> None:
    errors = _errors(corpus_index)
    bad = {
        r["relpath"]: errors[r["relpath"]]
        for r in _readable(corpus_manifest)
        if any(sev == "error" for _, _, sev, _ in errors.get(r["relpath"], []))
    }
    assert bad == {}


def test_messages_never_carry_patient_values(
    corpus_index: CorpusIndex, corpus_manifest: list[dict[str, str]]
) -> None:
    # Short or all-digit IDs ("0010", "55555") also occur in tags and byte offsets: not evidence.
    ids = {
        r["patient_id"]
        for r in corpus_manifest
        if len(r["patient_id"]) >= 6
        and not (r["patient_id"].isdigit() and len(r["patient_id"]) < 9)
    }
    names = {
        r[0]
        for r in query(corpus_index.url, "SELECT patient_name FROM patients")
        if r[0] and len(r[0]) >= 4
    }
    assert len(ids) >= 10 and len(names) >= 10
    texts = [
        r[0]
        for r in query(
            corpus_index.url,
            "SELECT message FROM errors UNION ALL "
            "SELECT problem FROM files WHERE problem IS NOT NULL",
        )
    ]
    leaks = [(value, text) for text in texts for value in ids | names if value in text]
    assert leaks == []


# -- determinism ---------------------------------------------------------------------------------


def test_content_does_not_depend_on_write_order(corpus_index: CorpusIndex, tmp_path: Path) -> None:
    """The corpus met in reverse order and written in other batches: the same content.

    Parallel workers return files in varying order, and a run that was killed and
    completed writes them in other batches than a clean run: the index can only be
    the same every time (test_crash compares it with a clean run) if no stored value
    depends on which file happened to be written first. The corpus has what makes
    that visible: files of one series with different Series Numbers, one "unknown
    patient" (no Patient ID) with different names, private blocks at different
    element numbers.
    """
    with fresh_database(corpus_index.kind, tmp_path, corpus_index.server) as url:
        roots = regular_files(corpus_index.root)[::-1]  # every file a root, last first
        report = index_paths(roots, url, workers=2, batch_files=25)
        assert report.outcome == "completed"
        assert diff_dumps(dump_index(corpus_index.url), dump_index(url)) == ""


# -- re-run ------------------------------------------------------------------------------------------


def test_rerun_is_a_no_op(corpus_index: CorpusIndex) -> None:
    """Last in the module on purpose: it adds a run (the content must not change)."""
    before = dump_index(corpus_index.url)
    report = index_paths([corpus_index.root], corpus_index.url, workers=2)
    after = dump_index(corpus_index.url)
    assert diff_dumps(before, after) == ""
    assert report.outcome == "completed"
    assert report.unchanged == report.files_seen == len(before["files"])
    assert (report.indexed, report.partial, report.failed, report.skipped, report.elements) == (
        0,
        0,
        0,
        0,
        0,
    )
    assert run_outcomes(corpus_index.url) == ["completed", "completed"]
    assert query(corpus_index.url, "SELECT DISTINCT last_run FROM files") == [(report.run_id,)]
    assert query(
        corpus_index.url,
        "SELECT files_unchanged, files_indexed FROM runs WHERE id = :r",
        r=report.run_id,
    ) == [(len(before["files"]), 0)]


# -- small trees: discovery by content, crawl problems ----------------------------------------------


def _pick(manifest: list[dict[str, str]], n: int) -> list[str]:
    """`n` small DCMTK-readable files with a full hierarchy, distinct SOP Instance UIDs."""
    seen: set[str] = set()
    out = []
    for r in sorted(_readable(manifest), key=lambda r: int(r["bytes"])):
        if r["study_uid"] and r["series_uid"] and r["sop_instance_uid"] not in seen:
            seen.add(r["sop_instance_uid"])
            out.append(r["relpath"])
        if len(out) == n:
            break
    return out


def test_files_are_found_by_content_not_name(
    db_url: str, tmp_path: Path, corpus_dir: Path, corpus_manifest: list[dict[str, str]]
) -> None:
    picked = _pick(corpus_manifest, 3)
    tree = tmp_path / "tree"
    tree.mkdir()
    names = ["scan.txt", "IMAGE0001", "photo.jpg"]
    for rel, name in zip(picked, names, strict=False):
        (tree / name).write_bytes((corpus_dir / rel).read_bytes())
    (tree / "notes.dcm").write_text("not DICOM at all\n")
    (tree / "readme.txt").write_text("not DICOM either\n")
    report = index_paths([tree], db_url, workers=2)
    status = {os.path.basename(p): s for p, s in query(db_url, "SELECT path, status FROM files")}
    assert status == {
        "scan.txt": "indexed",
        "IMAGE0001": "indexed",
        "photo.jpg": "indexed",
        "notes.dcm": "not_dicom",
        "readme.txt": "not_dicom",
    }
    manifest = {r["relpath"]: r for r in corpus_manifest}
    sops = {
        os.path.basename(p): uid
        for p, uid in query(
            db_url,
            "SELECT f.path, i.sop_instance_uid FROM instances i JOIN files f ON f.id = i.file_id",
        )
    }
    assert sops == {
        name: manifest[rel]["sop_instance_uid"] for rel, name in zip(picked, names, strict=False)
    }
    errs = [
        (os.path.basename(p), reason)
        for p, reason in query(db_url, "SELECT path, reason FROM errors")
    ]
    assert errs == [("notes.dcm", "not_dicom")]
    assert (report.indexed, report.failed, report.skipped) == (3, 1, 1)


def _copy_with_uids(source: Path, target: Path, **uids: str) -> None:
    """Write a copy of a real DICOM file with some top-level UIDs replaced (pydicom)."""
    ds = pydicom.dcmread(source)
    for keyword, value in uids.items():
        setattr(ds, keyword, value)
    target.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(target)


@pytest.mark.parametrize("order", ["together", "separately"])
def test_series_claimed_by_two_studies_is_flagged(
    db_url: str, tmp_path: Path, corpus_dir: Path, corpus_manifest: list[dict[str, str]], order: str
) -> None:
    """Two files of one Series Instance UID that name different studies: both are stored, the
    series hangs under one study, and the instance that names the other study is flagged,
    whether the files arrive in one batch or in separate runs."""
    source = corpus_dir / next(
        r["relpath"]
        for r in sorted(_readable(corpus_manifest), key=lambda r: int(r["bytes"]))
        if r["readable_by_pydicom"] == "yes" and r["transfer_syntax_uid"] and r["study_uid"]
    )
    a, b = tmp_path / "a" / "a.dcm", tmp_path / "b" / "b.dcm"
    _copy_with_uids(
        source,
        a,
        StudyInstanceUID="2.25.1001",
        SeriesInstanceUID="2.25.2001",
        SOPInstanceUID="2.25.3001",
    )
    _copy_with_uids(
        source,
        b,
        StudyInstanceUID="2.25.1002",
        SeriesInstanceUID="2.25.2001",
        SOPInstanceUID="2.25.3002",
    )
    if order == "together":
        index_paths([tmp_path], db_url, workers=2)
    else:
        index_paths([a.parent], db_url, workers=2)
        index_paths([a.parent, b.parent], db_url, workers=2)
    rows = query(
        db_url,
        """
        SELECT i.sop_instance_uid, st.study_uid, i.hierarchy_problem FROM instances i
        LEFT JOIN series s ON s.id = i.series_ref LEFT JOIN studies st ON st.id = s.study_ref""",
    )
    assert len(rows) == 2
    owner = {study for _, study, _ in rows if study}
    assert len(owner) == 1, rows  # one series row, under one study
    claims = {"2.25.3001": "2.25.1001", "2.25.3002": "2.25.1002"}
    flagged = {sop for sop, _, problem in rows if problem}
    assert flagged == {sop for sop in claims if claims[sop] not in owner}, rows


def test_crawl_problems_are_recorded_and_skipped(
    db_url: str, tmp_path: Path, corpus_dir: Path, corpus_manifest: list[dict[str, str]]
) -> None:
    tree = tmp_path / "tree"
    copy_files(corpus_dir, _pick(corpus_manifest, 2), tree / "data")
    (tree / "loop").symlink_to(tree)  # a folder that contains itself
    os.mkfifo(tree / "fifo")
    (tree / "dangling").symlink_to(tree / "nowhere")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(tree / "sock"))
    try:
        report = index_paths([tree], db_url, workers=2)
    finally:
        sock.close()
    assert report.outcome == "completed" and report.indexed == 2
    got = sorted(
        (os.path.relpath(p, tree), stage, reason)
        for p, stage, reason in query(db_url, "SELECT path, stage, reason FROM errors")
    )
    assert got == [
        ("dangling", "crawl", "os_error"),
        ("fifo", "crawl", "not_regular"),
        ("loop", "crawl", "symlink_loop"),
        ("sock", "crawl", "not_regular"),
    ]
    assert report.crawl_problems == 4
    # Nothing but the two regular files became a files row.
    assert query(db_url, "SELECT COUNT(*) FROM files") == [(2,)]
    # A re-run records each problem once, not once per run.
    index_paths([tree], db_url, workers=2)
    assert query(db_url, "SELECT COUNT(*) FROM errors") == [(4,)]


def test_unreadable_folder_is_recorded(
    db_url: str, tmp_path: Path, corpus_dir: Path, corpus_manifest: list[dict[str, str]]
) -> None:
    """An unreadable folder: errors row (crawl, permission_denied), the rest is indexed.

    As root, the run happens in a forked child that gives up root's power to ignore permission
    bits but stays uid 0 (helpers.obey_permission_bits), so it runs from any folder, a 0700
    clone included.
    """
    tree = tmp_path / "tree"
    picked = _pick(corpus_manifest, 2)
    copy_files(corpus_dir, picked[:1], tree / "a")
    copy_files(corpus_dir, picked[1:], tree / "locked")
    locked = tree / "locked"
    locked.chmod(0)
    try:
        outcome = in_child_obeying_permissions(
            lambda: index_paths([tree], db_url, workers=2).outcome
        )
    finally:
        locked.chmod(0o755)
    assert outcome == "completed"
    errs = [
        (os.path.relpath(p, tree), stage, reason)
        for p, stage, reason in query(db_url, "SELECT path, stage, reason FROM errors")
    ]
    assert errs == [("locked", "crawl", "permission_denied")]
    files = [os.path.relpath(p, tree) for (p,) in query(db_url, "SELECT path FROM files")]
    assert files == [os.path.join("a", picked[0])]
    if db_url.startswith("sqlite"):
        assert stat.S_IMODE(os.stat(tmp_path / "index.db").st_mode) == 0o600


# -- the writer's caches must not leak from one run to the next --------------------------------------


_THREE_RUNS = """
import sys
from indexer.run import index_paths
tree, first, second, third = sys.argv[1:]
index_paths([tree], first, workers=0)
index_paths([tree], second, workers=0)
index_paths([tree], third, workers=2)
"""


def test_runs_into_several_databases_from_one_process(
    tmp_path: Path, corpus_dir: Path, corpus_manifest: list[dict[str, str]]
) -> None:
    """A library user indexing into several databases from one process gets complete indexes.

    In-process (workers=0) and with worker processes forked from a process that
    already ran once. In a child process: what a run leaves behind in this process
    would also leak into every later test of the session.
    """
    tree = tmp_path / "tree"
    copy_files(corpus_dir, _pick(corpus_manifest, 3), tree)
    urls = [f"sqlite:///{tmp_path / name}.db" for name in ("first", "second", "third")]
    proc = subprocess.run(
        [sys.executable, "-c", _THREE_RUNS, str(tree), *urls],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    first = dump_index(urls[0])
    for url in urls[1:]:
        assert query(
            url,
            "SELECT COUNT(*) FROM elements e LEFT JOIN paths p ON p.id = e.path_id "
            "WHERE p.id IS NULL",
        ) == [(0,)], url
        assert diff_dumps(first, dump_index(url)) == "", url


def test_index_summary_json_matches_database(
    tmp_path: Path, corpus_dir: Path, corpus_manifest: list[dict[str, str]]
) -> None:
    """The installed command, as a user runs it: the JSON summary agrees with the tables."""
    tree = tmp_path / "tree"
    copy_files(corpus_dir, _pick(corpus_manifest, 4) + sorted(NON_DICOM), tree)
    db = tmp_path / "index.db"
    proc = run_cli(["index", str(tree), "--db", str(db), "--workers", "2", "--format", "json"])
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    status = dict(Counter(s for (s,) in query(f"sqlite:///{db}", "SELECT status FROM files")))
    assert summary["files_seen"] == len(regular_files(tree))
    assert summary["indexed"] == status.get("indexed", 0) == 4
    assert summary["not_indexed"] + summary["not_dicom"] == status.get("not_dicom", 0)
    assert (
        summary["errors"]
        == summary["not_indexed"] + summary["indexed_with_problems"]
        == query(f"sqlite:///{db}", "SELECT COUNT(DISTINCT path) FROM errors")[0][0]
    )
    assert "Traceback" not in proc.stderr
    assert by_path(query(f"sqlite:///{db}", "SELECT path FROM files")).keys() == {
        str(p) for p in regular_files(tree)
    }
