"""`indexer stats`, `tags`, `find`, `sql` and examples/ through the CLI, on the indexed corpus.

The corpus (its DCMTK-readable files) is indexed once per database for this module;
JSON and CSV outputs are compared with figures computed from MANIFEST.tsv and, where
the manifest has no column for it, with pydicom reading the files.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from helpers import pydicom_nested, pydicom_read, readable_rows
from helpers import query as sql_rows
from typer.testing import CliRunner

from indexer.cli import app

pytestmark = pytest.mark.corpus

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = REPO_ROOT / "examples"

STATS_KEYS = {
    "patients",
    "studies",
    "series",
    "instances",
    "files",
    "files_by_status",
    "bytes",
    "elements",
    "elements_per_instance",
    "errors",
    "errors_by_reason",
    "crawl_problems",
    "warnings",
    "duplicate_sop_instance_uids",
    "instances_with_duplicate_uid",
    "instances_outside_hierarchy",
    "patients_without_id",
    "duplicate_copies",
    "dicomdirs",
    "conflicts",
    "missing_files",
    "by_modality",
    "by_sop_class",
    "by_transfer_syntax",
    "by_manufacturer",
    "by_study_year",
}
STATS_PARTS = ("instances", "duplicate_copies", "instances_outside_hierarchy", "dicomdirs")
TAG_KEYS = {
    "tag",
    "keyword",
    "name",
    "private_creator",
    "depth",
    "instances",
    "share",
    "occurrences",
    "distinct_values",
    "distinct_values_complete",
    "values_hidden",
    "top_values",
}


@pytest.fixture(scope="module")
def rows(corpus_manifest: list[dict[str, str]]) -> list[dict[str, str]]:
    return readable_rows(corpus_manifest)


def invoke(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args), input=stdin, env={"INDEXER_DB": None})
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def run_json(url: str, *args: str, stdin: str | None = None) -> Any:
    code, out, err = invoke(*args, "--db", url, "--format", "json", stdin=stdin)
    assert code == 0, err
    return json.loads(out)


def run_csv(url: str, *args: str) -> list[dict[str, str]]:
    code, out, err = invoke(*args, "--db", url, "--format", "csv")
    assert code == 0, err
    return list(csv.DictReader(io.StringIO(out)))


def run_table(url: str, *args: str) -> str:
    code, out, err = invoke(*args, "--db", url)
    assert code == 0, err
    return out


def one_line_error(code: int, err: str) -> str:
    assert code == 1
    err = re.sub(r"^warning: .*superuser.*\n", "", err)  # `sql` as PostgreSQL's superuser
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


# -- stats --------------------------------------------------------------------------------------


def test_stats_json(corpus_index: str, rows: list[dict[str, str]]) -> None:
    data = run_json(corpus_index, "stats")
    assert set(data) == STATS_KEYS
    with_study = [r for r in rows if r["study_uid"]]
    # every file read is a distinct instance, a copy, outside the hierarchy or a DICOMDIR
    assert sum(data[k] for k in STATS_PARTS) == len(rows)
    assert data["studies"] == len({r["study_uid"] for r in with_study})
    assert data["series"] == len({r["series_uid"] for r in with_study if r["series_uid"]})
    # a patient per Patient ID, and a synthetic one per study of files without one
    anonymous = {r["study_uid"] for r in with_study if not r["patient_id"]}
    named = {r["patient_id"] for r in with_study if r["patient_id"]}
    assert (data["patients"], data["patients_without_id"]) == (
        len(named) + len(anonymous),
        len(anonymous),
    )
    assert data["bytes"] == sum(int(r["bytes"]) for r in rows)
    assert {e["modality"]: e["instances"] for e in data["by_modality"]} == Counter(
        r["modality"] or None for r in rows
    )
    syntaxes = {e["transfer_syntax_uid"]: e for e in data["by_transfer_syntax"]}
    for uid, n in Counter(
        r["transfer_syntax_uid"] for r in rows if r["transfer_syntax_uid"]
    ).items():
        assert syntaxes[uid]["instances"] >= n
    assert syntaxes["1.2.840.10008.1.2.4.50"]["name"] == "JPEG Baseline (Process 1)"
    classes = {e["sop_class_uid"]: e for e in data["by_sop_class"]}
    assert classes["1.2.840.10008.5.1.4.1.1.2"]["name"] == "CT Image Storage"
    assert classes["1.2.840.10008.5.1.4.1.1.2"]["instances"] == len(
        [r for r in rows if r["sop_class_uid"] == "1.2.840.10008.5.1.4.1.1.2"]
    )


def test_stats_by_one_breakdown(corpus_index: str, rows: list[dict[str, str]]) -> None:
    whole = run_json(corpus_index, "stats")
    assert run_json(corpus_index, "stats", "--by", "modality") == whole["by_modality"]
    assert run_json(corpus_index, "stats", "--by", "study-year") == whole["by_study_year"]
    syntax = run_csv(corpus_index, "stats", "--by", "transfer-syntax")
    assert [r["transfer_syntax_uid"] for r in syntax] == [
        e["transfer_syntax_uid"] or "" for e in whole["by_transfer_syntax"]
    ]
    assert sum(int(r["instances"]) for r in syntax) == len(rows)
    table = run_table(corpus_index, "stats", "--by", "sop-class")
    assert table.splitlines()[0].split() == ["sop_class_uid", "name", "instances"]
    assert "CT Image Storage" in table
    code, _, err = invoke("stats", "--db", corpus_index, "--by", "colour")
    assert code == 2 and "colour" in err  # typer's own usage error


def test_stats_table_and_csv(corpus_index: str, rows: list[dict[str, str]]) -> None:
    table = run_table(corpus_index, "stats")
    flat = {r["key"]: r["value"] for r in run_csv(corpus_index, "stats")}
    assert sum(int(flat[k]) for k in STATS_PARTS) == len(rows)
    for key in STATS_PARTS:
        assert any(line.split() == [key, flat[key]] for line in table.splitlines()), key
    assert "by modality" in table and "by transfer syntax" in table
    assert flat["by_modality[MR].instances"] == str(len([r for r in rows if r["modality"] == "MR"]))


def _patient_values(url: str) -> set[str]:
    """Patient IDs and names in the index that are long enough not to occur by chance."""
    values = {
        v
        for (v,) in sql_rows(
            url, "SELECT patient_id FROM patients UNION SELECT patient_name FROM patients"
        )
        if v and len(v) >= 6
    }
    assert values
    return values


def test_stats_print_no_patient_values(corpus_index: str) -> None:
    outputs = [invoke("stats", "--db", corpus_index, "-f", f)[1] for f in ("table", "json", "csv")]
    for value in _patient_values(corpus_index):
        assert not any(value in out for out in outputs), value


# -- tags ---------------------------------------------------------------------------------------


def test_tags_json(corpus_index: str, rows: list[dict[str, str]]) -> None:
    data = run_json(corpus_index, "tags")
    assert data["instances"] == len(rows)
    assert all(set(t) == TAG_KEYS for t in data["tags"])
    by_tag = {t["tag"]: t for t in data["tags"]}
    modality = by_tag["(0008,0060)"]
    expected = Counter(r["modality"] for r in rows if r["modality"])
    assert modality["instances"] == sum(expected.values())  # no file has an empty Modality
    assert modality["distinct_values"] == len(expected)
    assert [v["value"] for v in modality["top_values"]][:1] == [expected.most_common(1)[0][0]]
    assert by_tag["(0008,0016)"]["instances"] == len([r for r in rows if r["sop_class_uid"]])
    # Default: five values per tag; --top changes it.
    assert max(len(t["top_values"] or []) for t in data["tags"]) == 5
    two = run_json(corpus_index, "tags", "--top", "2")
    assert max(len(t["top_values"] or []) for t in two["tags"]) == 2


def test_tags_filters(corpus_index: str, rows: list[dict[str, str]]) -> None:
    ct = run_json(corpus_index, "tags", "--modality", "CT")
    assert ct["instances"] == len([r for r in rows if r["modality"] == "CT"])
    assert ct["filters"] == {"modality": "CT"}
    sr = run_json(corpus_index, "tags", "--sop-class", "1.2.840.10008.5.1.4.1.1.88.33")
    assert sr["instances"] == len(
        [r for r in rows if r["sop_class_uid"] == "1.2.840.10008.5.1.4.1.1.88.33"]
    )
    private = run_json(corpus_index, "tags", "--private")
    assert private["tags"] and all(
        int(t["tag"][t["tag"].rfind(".(") + 2 :][:4], 16) & 1 for t in private["tags"]
    )
    nested = run_json(corpus_index, "tags", "--path", "(0008,1140).*")
    assert nested["tags"] and all(t["tag"].startswith("(0008,1140).") for t in nested["tags"])
    by_keyword = run_json(corpus_index, "tags", "--path", "ReferencedImageSequence.*")
    assert by_keyword["tags"] == nested["tags"]


def test_tags_drill_down(corpus_index: str, rows: list[dict[str, str]]) -> None:
    expected = Counter(r["modality"] for r in rows if r["modality"])
    data = run_json(corpus_index, "tags", "--tag", "Modality")
    assert {v["value"]: v["instances"] for v in data["values"]} == expected
    assert data["source"] == "summary"
    values = run_csv(corpus_index, "tags", "--tag", "(0008,0060)")
    assert {r["value"]: int(r["instances"]) for r in values} == expected
    top = run_json(corpus_index, "tags", "--tag", "Modality", "--top", "1")
    assert top["values"] == data["values"][:1]
    table = run_table(corpus_index, "tags", "--tag", "Modality")
    assert "counted from" in table and any(
        line.split()[:2] == ["MR", str(expected["MR"])] for line in table.splitlines()
    )
    uids = run_json(corpus_index, "tags", "--tag", "SOPInstanceUID")
    assert uids["source"] == "elements"
    assert uids["distinct_values"] == len(
        {r["sop_instance_uid"] for r in rows if r["sop_instance_uid"]}
    )


def test_tags_hide_patient_values_unless_asked(corpus_index: str) -> None:
    # Values that other tags hold too do not count (a Patient ID "123456" is also a serial number).
    elsewhere = {
        v
        for (v,) in sql_rows(
            corpus_index,
            """
        SELECT DISTINCT e.value FROM elements e JOIN paths p ON p.id = e.path_id
        WHERE e.vr <> 'PN' AND (p.tag / 65536) NOT IN (16, 56) AND e.value IS NOT NULL""",
        )
    }
    patient_values = _patient_values(corpus_index) - elsewhere
    assert patient_values
    listing = run_json(corpus_index, "tags", "--top", "100")["tags"]
    shown = {v["value"] for t in listing for v in t["top_values"] or []}
    as_csv = run_csv(corpus_index, "tags", "--top", "100")
    shown |= {v["value"] for r in as_csv if r["top_values"] for v in json.loads(r["top_values"])}
    assert not shown & patient_values
    for keyword in ("PatientID", "PatientName"):
        drill = run_json(corpus_index, "tags", "--tag", keyword)
        assert drill["values_hidden"] is True and drill["values"] is None
    table = run_table(corpus_index, "tags", "--path", "(0010,0020)")
    assert "(patient data: --patient-values shows it)" in table

    shown_ids = run_json(corpus_index, "tags", "--tag", "PatientID", "--patient-values")
    ids = {v for (v,) in sql_rows(corpus_index, "SELECT patient_id FROM patients") if v}
    assert ids <= {v["value"] for v in shown_ids["values"]}
    assert shown_ids["values_hidden"] is False


def test_tags_errors(corpus_index: str) -> None:
    one_line_error(*invoke("tags", "--db", corpus_index, "--tag", "NotAKeyword")[::2])
    err = one_line_error(
        *invoke("tags", "--db", corpus_index, "--tag", "ScheduledProtocolCodeSequence")[::2]
    )
    assert "it occurs as" in err  # only nested: the message names where


# -- find ---------------------------------------------------------------------------------------


def test_find_outputs(corpus_index: str, corpus_dir: Path, rows: list[dict[str, str]]) -> None:
    tree = [r for r in rows if r["study_uid"] and r["series_uid"]]
    patient = Counter(r["patient_id"] for r in tree if r["patient_id"]).most_common(1)[0][0]
    studies = run_json(
        corpus_index,
        "find",
        "studies",
        f"PatientID={patient}",
        "--fields",
        "study_instance_uid,patient_id,instances",
    )
    by_default = run_json(corpus_index, "find", "studies", f"PatientID={patient}")
    # PatientID and AccessionNumber are patient data (tags hides them): only when asked for.
    assert by_default and not {"patient_id", "accession_number"} & set(by_default[0])
    assert {s["study_instance_uid"] for s in studies} == {
        r["study_uid"] for r in tree if r["patient_id"] == patient
    }
    assert sum(s["instances"] for s in studies) == len(
        [r for r in tree if r["patient_id"] == patient]
    )
    assert all(s["patient_id"] == patient for s in studies)

    series_uid = Counter(r["series_uid"] for r in tree).most_common(1)[0][0]
    found = run_csv(corpus_index, "find", "instances", f"SeriesInstanceUID={series_uid}")
    assert sorted(os.path.relpath(r["path"], corpus_dir) for r in found) == sorted(
        r["relpath"] for r in tree if r["series_uid"] == series_uid
    )
    table = run_table(corpus_index, "find", "series", f"SeriesInstanceUID={series_uid}")
    assert series_uid in table
    assert run_table(corpus_index, "find", "studies", "PatientID=no-such-id").strip() == "no match"
    limited = run_json(corpus_index, "find", "instances", "Modality=MR", "--limit", "3")
    assert len(limited) == 3 and all(i["modality"] == "MR" for i in limited)


def test_find_by_a_nested_tag(
    corpus_index: str, corpus_dir: Path, rows: list[dict[str, str]]
) -> None:
    expected = set()
    for r in rows:
        found = pydicom_nested(
            corpus_dir / r["relpath"], "ReferencedImageSequence", "ReferencedSOPClassUID"
        )
        if found and "1.2.840.10008.5.1.4.1.1.4" in found:
            expected.add(r["relpath"])
    got = run_json(
        corpus_index, "find", "instances", "(0008,1140).(0008,1150)=1.2.840.10008.5.1.4.1.1.4"
    )
    assert {os.path.relpath(i["path"], corpus_dir) for i in got} == expected


def test_find_errors(corpus_index: str) -> None:
    one_line_error(*invoke("find", "studies", "PatientID", "--db", corpus_index)[::2])
    one_line_error(*invoke("find", "studies", "NoSuchKeyword=1", "--db", corpus_index)[::2])
    code, _, _ = invoke("find", "patients", "--db", corpus_index)
    assert code == 2


# -- sql ----------------------------------------------------------------------------------------


def _intact(url: str) -> tuple[Any, ...]:
    return sql_rows(
        url,
        "SELECT (SELECT COUNT(*) FROM files), (SELECT COUNT(*) FROM elements), "
        "(SELECT MIN(size) FROM files)",
    )[0]


def test_sql_formats(corpus_index: str, rows: list[dict[str, str]]) -> None:
    query = (
        "SELECT modality, COUNT(*) AS n FROM instances GROUP BY modality ORDER BY n DESC, modality"
    )
    data = run_json(corpus_index, "sql", query)
    assert {r["modality"]: r["n"] for r in data} == Counter(r["modality"] or None for r in rows)
    as_csv = run_csv(corpus_index, "sql", query)
    assert [(r["modality"] or None, int(r["n"])) for r in as_csv] == [
        (r["modality"], r["n"]) for r in data
    ]
    table = run_table(corpus_index, "sql", query)
    assert table.splitlines()[0].split() == ["modality", "n"]
    assert run_json(corpus_index, "sql", "-", stdin="SELECT 1 AS one") == [{"one": 1}]


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE files SET size = 0",
        "DELETE FROM files",
        "SELECT 1; DROP TABLE files",
        "SELECT 1; UPDATE files SET size = 0",
        "DROP TABLE elements",
    ],
)
def test_sql_refuses_to_write(corpus_index: str, statement: str) -> None:
    before = _intact(corpus_index)
    one_line_error(*invoke("sql", statement, "--db", corpus_index)[::2])
    assert _intact(corpus_index) == before


def test_sql_refuses_attach(corpus_index: str, tmp_path: Path) -> None:
    target = tmp_path / "attached.db"
    one_line_error(*invoke("sql", f"ATTACH DATABASE '{target}' AS x", "--db", corpus_index)[::2])
    assert not target.exists()


# -- examples/ ----------------------------------------------------------------------------------


def example(url: str, name: str) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = run_json(url, "sql", "-", stdin=(EXAMPLES / name).read_text())
    return result


def test_every_example_query_runs(corpus_index: str) -> None:
    names = sorted(p.name for p in EXAMPLES.glob("*.sql"))
    assert len(names) >= 6
    for name in names:
        assert example(corpus_index, name), name


def test_example_tag_usage_agrees_with_tags_and_the_elements(corpus_index: str) -> None:
    summary = {
        r["tag"]: (r["instances"], r["occurrences"]) for r in example(corpus_index, "tag_usage.sql")
    }
    listing = run_json(corpus_index, "tags")["tags"]
    assert summary == {t["tag"]: (t["instances"], t["occurrences"]) for t in listing}
    from_elements = {
        r["tag"]: (r["instances"], r["occurrences"])
        for r in example(corpus_index, "tag_usage_from_elements.sql")
    }
    top_public = {
        k: v
        for k, v in summary.items()
        if "." not in k and '"' not in k and not int(k[1:5], 16) & 1
    }
    assert from_elements == top_public


def test_example_modality_queries_agree_with_the_manifest(
    corpus_index: str, rows: list[dict[str, str]]
) -> None:
    expected = Counter(r["modality"] for r in rows if r["modality"])
    values = example(corpus_index, "values_of_tag.sql")
    assert {r["value"]: r["instances"] for r in values} == expected
    counts = example(corpus_index, "modality_counts.sql")
    assert {r["modality"]: r["instances"] for r in counts} == Counter(
        r["modality"] or None for r in rows
    )
    by_modality = example(corpus_index, "tag_usage_by_modality.sql")
    mr = {r["tag"]: r for r in by_modality if r["modality"] == "MR"}
    assert (
        mr["(0008,0060)"]["instances"] == expected["MR"]
        and float(mr["(0008,0060)"]["percent"]) == 100.0
    )


def test_example_private_creators_agree_with_pydicom(
    corpus_index: str, corpus_dir: Path, rows: list[dict[str, str]]
) -> None:
    holders: Counter[tuple[str, int]] = Counter()
    for r in rows:
        ds = pydicom_read(corpus_dir / r["relpath"])
        if ds is None:
            continue
        seen = set()
        for element in ds:  # top level only
            if element.tag.is_private and 0x10 <= element.tag.element <= 0xFF and element.value:
                seen.add((str(element.value).strip(), element.tag.group))
        holders.update(seen)
    creators = {
        (r["private_creator"], int(r["private_group"], 16)): r["instances"]
        for r in example(corpus_index, "private_creators.sql")
    }
    siemens = ("SIEMENS CSA HEADER", 0x0029)
    assert holders[siemens] > 0
    assert creators[siemens] == holders[siemens]
    philips = ("Philips Imaging DD 001", 0x2001)
    assert creators[philips] == holders[philips] > 0


def test_example_nested_and_files_with_tag(
    corpus_index: str, corpus_dir: Path, rows: list[dict[str, str]]
) -> None:
    nested = {r["tag"]: r for r in example(corpus_index, "sequence_tags.sql")}
    holders = [
        r
        for r in rows
        if pydicom_nested(
            corpus_dir / r["relpath"], "ReferencedImageSequence", "ReferencedSOPClassUID"
        )
    ]
    assert nested["(0008,1140).(0008,1150)"]["instances"] == len(holders)
    assert all(r["depth"] > 0 for r in nested.values())
    body_parts: dict[str, str] = {}
    unread = set()
    for r in rows:
        ds = pydicom_read(corpus_dir / r["relpath"], "BodyPartExamined")
        if ds is None:
            unread.add(r["relpath"])
        elif "BodyPartExamined" in ds:
            body_parts[r["relpath"]] = str(ds.BodyPartExamined).strip()
    found = {
        os.path.relpath(r["path"], corpus_dir): r["value"]
        for r in example(corpus_index, "files_with_tag.sql")
    }
    assert body_parts
    assert {k: v for k, v in found.items() if k not in unread} == body_parts


def test_python_example(corpus_index: str, rows: list[dict[str, str]]) -> None:
    if not corpus_index.startswith("sqlite"):
        pytest.skip("the example is the same on both databases; run it once")
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "tag_report.py"), corpus_index, "MR"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    first = result.stdout.splitlines()[0].split()
    stats = run_json(corpus_index, "stats")
    assert int(first[0]) == stats["instances"]  # distinct SOP instances
    assert sum(stats[k] for k in STATS_PARTS) == len(rows)
    assert (
        f"most common top-level tags of MR ({len([r for r in rows if r['modality'] == 'MR'])} instances)"
        in result.stdout
    )
    assert '(0029,"SIEMENS CSA HEADER")' in result.stdout
