"""`indexer dump` (and the app's --help/--version) through typer's CliRunner and as a real process.

Exit codes read in indexer/cli.py: 0 for a file read to its end, 1 (one line on stderr,
no traceback) for a file that cannot be read as DICOM, 2 when the file was read only in
part (truncated or damaged: the elements read are printed and the problem is on stderr).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pydicom
import pytest
from helpers import pg_database, run_cli, server_for
from pydicom.dataset import Dataset
from typer.testing import CliRunner

from indexer import __version__
from indexer.cli import app
from indexer.reader import read_file
from indexer.records import ITEM, META, UNDEFINED

INDEXER_BIN = Path(sys.executable).with_name("indexer")
LINE = re.compile(r"^ *(\([0-9A-F]{4},[0-9A-F]{4}\) [A-Z]{2} |Item #\d+ \(FFFE,E000\) )")

# Sample files read by DCMTK and pydicom: one per kind (implicit VR, big endian, deflated,
# encapsulated, nested SR, ISO 2022 text).
SAMPLES = [
    "pydicom/rtplan.dcm",
    "pydicom/MR_small_bigendian.dcm",
    "dicomParser/encapsulated/multi-frame/CT0012.fragmented_no_bot_jpeg_baseline.51.dcm",
    "pydicom/charset_files/chrH32.dcm",
    "fo-dicom/test_SR.dcm",  # TextValue line breaks are escaped: still one line per element
    "dicomParser/deflate/report_dfl",
]


@pytest.fixture()
def runner() -> CliRunner:
    return CliRunner()


def manifest_row(manifest: list[dict[str, str]], relpath: str) -> dict[str, str]:
    return next(r for r in manifest if r["relpath"] == relpath)


def pydicom_counts(path: Path) -> tuple[int, int, int]:
    """(elements, items, meta elements) of a file, counted with pydicom."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path)

    def count(data: Dataset) -> tuple[int, int]:
        elements = items = 0
        for elem in data:
            elements += 1
            if elem.VR == "SQ":
                for item in elem.value:
                    items += 1
                    inner = count(item)
                    elements += inner[0]
                    items += inner[1]
        return elements, items

    elements, items = count(ds)
    return elements, items, len(ds.file_meta)


@pytest.mark.parametrize("relpath", SAMPLES)
def test_dump_prints_one_line_per_element(
    runner: CliRunner, sample_dir: Path, sample_manifest: list[dict[str, str]], relpath: str
) -> None:
    path = sample_dir / relpath
    result = runner.invoke(app, ["dump", str(path)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.rstrip("\n").split("\n")
    expected = int(manifest_row(sample_manifest, relpath)["element_count"])
    assert lines[-1] == f"{expected} elements"
    elements, items, _meta = pydicom_counts(path)
    assert elements == expected
    body = lines[:-1]
    assert len(body) == expected + items
    for line in body:
        assert LINE.match(line), line
    # The lines follow the records, in file order.
    records = [r for r in read_file(path).elements if not r.flags & META]
    shown = [
        line.strip().split(" ")[0] if not line.strip().startswith("Item") else "item"
        for line in body
    ]
    assert shown == [
        "item" if r.flags & ITEM else f"({r.tag >> 16:04X},{r.tag & 0xFFFF:04X})" for r in records
    ]
    assert "(0002," not in result.stdout


@pytest.mark.parametrize("relpath", ["pydicom/rtplan.dcm", "pydicom/MR_small_bigendian.dcm"])
def test_dump_meta_adds_group_0002(runner: CliRunner, sample_dir: Path, relpath: str) -> None:
    path = sample_dir / relpath
    plain = runner.invoke(app, ["dump", str(path)])
    with_meta = runner.invoke(app, ["dump", "--meta", str(path)])
    assert plain.exit_code == with_meta.exit_code == 0
    _elements, _items, meta = pydicom_counts(path)
    extra = with_meta.stdout.split("\n")[:meta]
    assert all(line.startswith("(0002,") for line in extra)
    assert with_meta.stdout.split("\n")[meta:] == plain.stdout.split("\n")
    assert with_meta.stdout.count("(0002,") == meta
    assert "(0002,0010) UI TransferSyntaxUID" in with_meta.stdout


def record_json(r: Any) -> dict[str, Any]:
    return {
        "path": r.path,
        "depth": r.depth,
        "tag": f"{r.tag:08X}",
        "vr": r.vr,
        "vm": r.vm,
        "length": None if r.length == UNDEFINED else r.length,
        "value": r.value,
        "number": r.number,
        "flags": r.flags,
        "offset": r.offset,
        "private_creator": r.private_creator,
        "keyword": r.keyword,
        "name": r.name,
    }


@pytest.mark.parametrize(
    "relpath",
    [
        "pydicom/rtplan.dcm",
        "fo-dicom/test_SR.dcm",
        "dicomParser/deflate/report_dfl",
        "dicomParser/encapsulated/multi-frame/CT0012.fragmented_no_bot_jpeg_baseline.51.dcm",
        "pydicom/nested_priv_SQ.dcm",
        "broken/pydicom/rtstruct.dcm",
    ],
)
@pytest.mark.parametrize("meta", [False, True], ids=["no-meta", "meta"])
def test_dump_json(
    runner: CliRunner,
    sample_dir: Path,
    sample_manifest: list[dict[str, str]],
    relpath: str,
    meta: bool,
) -> None:
    path = sample_dir / relpath
    result = runner.invoke(
        app, ["dump", "--format", "json", str(path)] + (["--meta"] if meta else [])
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    row = manifest_row(sample_manifest, relpath)
    for key in ("element_count", "max_sequence_depth", "fragment_sequences", "fragments"):
        assert data[key] == int(row[key]), key
    assert data["problem"] is None and data["path"] == str(path)
    assert data["transfer_syntax"] == (row["transfer_syntax_uid"] or None)
    elements = data["elements"]
    counted = [e for e in elements if not e["meta"] and not e["item"]]
    assert len(counted) == int(row["element_count"])
    records = [r for r in read_file(path).elements if meta or not r.flags & META]
    assert [{k: e[k] for k in record_json(r)} for e, r in zip(elements, records, strict=True)] == [
        record_json(r) for r in records
    ]
    assert any(e["meta"] for e in elements) == (meta and bool(row["transfer_syntax_uid"]))
    for e, r in zip(elements, records, strict=True):
        if r.fragments is not None:
            assert e["fragments"] == list(r.fragments) and e["offset_table"] == list(
                r.offset_table or ()
            )


def test_dump_value_limit(runner: CliRunner, sample_dir: Path) -> None:
    path = sample_dir / "pydicom/rtplan.dcm"
    result = runner.invoke(app, ["dump", "--value-limit", "16", str(path)])
    assert result.exit_code == 0
    model = str(pydicom.dcmread(path).ManufacturerModelName)
    assert len(model) > 16
    line = next(x for x in result.stdout.split("\n") if x.startswith("(0008,1090)"))
    assert line.endswith(f"[{model[:16]}] (cut)")


@pytest.mark.parametrize(
    "relpath", ["broken/pylibjpeg-data/raw_jpeg_named_as_dicom.dcm", "README.md"]
)
def test_dump_not_dicom(runner: CliRunner, sample_dir: Path, relpath: str) -> None:
    path = sample_dir / relpath
    result = runner.invoke(app, ["dump", str(path)])
    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.rstrip("\n").split("\n")
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: not DICOM")
    assert "Traceback" not in result.output


def test_dump_empty_and_missing_files(runner: CliRunner, tmp_path: Path) -> None:
    empty = tmp_path / "empty.dcm"
    empty.write_bytes(b"")
    result = runner.invoke(app, ["dump", str(empty)])
    assert result.exit_code == 1 and result.stderr == f"error: {empty}: empty file\n"
    missing = tmp_path / "missing.dcm"
    result = runner.invoke(app, ["dump", str(missing)])
    assert result.exit_code == 1 and result.stderr.startswith(f"error: {missing}: ")
    assert result.stderr.count("\n") == 1


@pytest.mark.parametrize("output", ["text", "json"])
def test_dump_truncated_file(runner: CliRunner, sample_dir: Path, output: str) -> None:
    path = sample_dir / "broken/pydicom/MR_truncated.dcm"
    record = read_file(path)
    assert record.problem is not None
    result = runner.invoke(app, ["dump", "--format", output, str(path)])
    # Exit code 2: read in part. What was read is printed; the problem is reported.
    assert result.exit_code == 2
    if output == "json":
        data = json.loads(result.stdout)
        assert data["problem"] == record.problem and data["problem_offset"] == record.problem_offset
        assert data["element_count"] == record.element_count > 0
    else:
        assert f"problem: {record.problem}\n" in result.stderr
        assert result.stdout.rstrip("\n").split("\n")[-1] == f"{record.element_count} elements"
        # The Pixel Data cut short by the end of the file is shown, marked as cut.
        assert "(7FE0,0010)" in result.stdout
    assert "Traceback" not in result.output


def test_help_and_version(runner: CliRunner) -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("index", "stats", "dump", "db"):
        assert re.search(rf"^\s+{command}\s", result.stdout, re.MULTILINE), command
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout == f"indexer {__version__}\n"
    result = runner.invoke(app, ["dump", "--help"])
    assert result.exit_code == 0 and "--meta" in result.stdout and "--format" in result.stdout


def test_installed_command(sample_dir: Path, sample_manifest: list[dict[str, str]]) -> None:
    assert INDEXER_BIN.is_file(), f"console script missing next to {sys.executable}"
    done = subprocess.run(
        [str(INDEXER_BIN), "--version"], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0 and done.stdout == f"indexer {__version__}\n"
    bad = sample_dir / "broken/pylibjpeg-data/raw_jpeg_named_as_dicom.dcm"
    done = subprocess.run(
        [str(INDEXER_BIN), "dump", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: ")
    good = sample_dir / "pydicom/rtplan.dcm"
    done = subprocess.run(
        [str(INDEXER_BIN), "dump", str(good)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    count = manifest_row(sample_manifest, "pydicom/rtplan.dcm")["element_count"]
    assert done.returncode == 0 and done.stdout.endswith(f"\n{count} elements\n")


# -- several files, --tag, --uid ------------------------------------------------------------------

RTPLAN = "pydicom/rtplan.dcm"
BIG_ENDIAN = "pydicom/MR_small_bigendian.dcm"


def test_dump_several_files(
    runner: CliRunner, sample_dir: Path, sample_manifest: list[dict[str, str]]
) -> None:
    paths = [sample_dir / RTPLAN, sample_dir / BIG_ENDIAN]
    result = runner.invoke(app, ["dump", *map(str, paths)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    headers = [i for i, line in enumerate(lines) if line.startswith("# ")]
    assert [lines[i] for i in headers] == [f"# {p}" for p in paths]
    counts = [manifest_row(sample_manifest, r)["element_count"] for r in (RTPLAN, BIG_ENDIAN)]
    assert lines[headers[1] - 1] == f"{counts[0]} elements" and lines[-1] == f"{counts[1]} elements"
    result = runner.invoke(app, ["dump", "-f", "json", *map(str, paths)])
    data = json.loads(result.stdout)
    assert [d["path"] for d in data] == [str(p) for p in paths]
    assert [str(d["element_count"]) for d in data] == counts


def test_dump_several_files_goes_on_after_a_bad_one(runner: CliRunner, sample_dir: Path) -> None:
    bad = sample_dir / "README.md"
    result = runner.invoke(app, ["dump", str(bad), str(sample_dir / RTPLAN)])
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: {bad}: not DICOM") and result.stderr.count("\n") == 1
    assert result.stdout.startswith(f"# {sample_dir / RTPLAN}\n")


@pytest.mark.parametrize(
    ("tag", "first"),
    [
        ("PatientName", "(0010,0010) PN PatientName "),
        ("(0010,0010)", "(0010,0010) PN PatientName "),
        ("00100010", "(0010,0010) PN PatientName "),
        ("BeamSequence.ControlPointSequence.NominalBeamEnergy", "        (300A,0114) DS "),
        ("(300A,00B0)[0].(300A,0111)[0].(300A,0114)", "        (300A,0114) DS "),
    ],
)
def test_dump_tag(runner: CliRunner, sample_dir: Path, tag: str, first: str) -> None:
    path = sample_dir / RTPLAN
    result = runner.invoke(app, ["dump", "--tag", tag, str(path)])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(first) and "elements" not in result.stdout
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path)
    if tag.startswith("Patient") or tag.startswith("0010") or tag.startswith("(0010"):
        assert result.stdout.count("\n") == 1 and f"[{ds.PatientName}]" in result.stdout
    else:
        energies = [
            cp.NominalBeamEnergy
            for beam in ds.BeamSequence
            for cp in beam.ControlPointSequence
            if "NominalBeamEnergy" in cp
        ]
        assert result.stdout.count("\n") == len(energies) > 0


def test_dump_tag_of_a_sequence_has_its_items(runner: CliRunner, sample_dir: Path) -> None:
    path = sample_dir / RTPLAN
    result = runner.invoke(app, ["dump", "--tag", "DoseReferenceSequence", str(path)])
    assert result.exit_code == 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path)
    items = ds.DoseReferenceSequence
    lines = result.stdout.splitlines()
    assert lines[0].startswith("(300A,0010) SQ DoseReferenceSequence")
    assert sum(line.lstrip().startswith("Item #") for line in lines) == len(items)
    assert len(lines) == 1 + len(items) + sum(len(item) for item in items)
    json_result = runner.invoke(app, ["dump", "-f", "json", "--tag", "(300A,0010)", str(path)])
    assert len(json.loads(json_result.stdout)["elements"]) == len(lines)


def test_dump_tag_absent_or_not_a_tag(runner: CliRunner, sample_dir: Path) -> None:
    path = str(sample_dir / RTPLAN)
    result = runner.invoke(app, ["dump", "--tag", "PixelData", path])
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr == "error: no element PixelData in the file\n"
    result = runner.invoke(app, ["dump", "--tag", "PatientNmae", path])
    assert result.exit_code == 1 and result.stderr.count("\n") == 1
    assert "not a DICOM keyword" in result.stderr
    result = runner.invoke(app, ["dump"])
    assert result.exit_code == 1 and result.stderr.startswith("error: give a FILE")


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_dump_uid_reads_the_indexed_file(
    request: pytest.FixtureRequest, tmp_path: Path, sample_dir: Path, kind: str
) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    copy = tree / "plan.dcm"
    copy.write_bytes((sample_dir / RTPLAN).read_bytes())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        uid = str(pydicom.dcmread(copy).SOPInstanceUID)

    def check(url: str) -> None:
        assert run_cli(["index", "--db", url, "-q", str(tree)]).returncode == 0
        done = run_cli(["dump", "--uid", uid, "--db", url])
        assert done.returncode == 0, done.stderr
        assert done.stdout == run_cli(["dump", str(copy)]).stdout
        done = run_cli(["dump", "--uid", uid, "--db", url, "--tag", "SOPInstanceUID"])
        assert done.stdout.endswith(f"[{uid}]\n") and done.stdout.count("\n") == 1
        for wrong, says in (("1.2.3.4", "no indexed instance has that SOPInstanceUID"),):
            done = run_cli(["dump", "--uid", wrong, "--db", url])
            assert (done.returncode, done.stdout) == (1, "") and done.stderr == f"error: {says}\n"
        with open(copy, "ab") as fh:
            fh.write(b"\0\0")  # grown since it was indexed
        done = run_cli(["dump", "--uid", uid, "--db", url])
        assert (done.returncode, done.stdout) == (1, "")
        assert (
            done.stderr
            == f"error: {copy}: changed since it was indexed; run indexer index on it again\n"
        )
        copy.unlink()
        done = run_cli(["dump", "--uid", uid, "--db", url])
        assert (done.returncode, done.stdout) == (1, "")
        assert done.stderr == f"error: {copy}: gone since it was indexed\n"
        assert uid not in done.stderr

    server = server_for(request, kind)
    if server is None:
        check(f"sqlite:///{tmp_path / 'index.db'}")
    else:
        with pg_database(server) as url:
            check(url)


# -- help as people read it ------------------------------------------------------------------------

HELP_COMMANDS = [["index"], ["stats"], ["tags"], ["find"], ["sql"], ["dump"], ["forget"]]


@pytest.mark.parametrize("columns", ["40", "80", "200"])
@pytest.mark.parametrize("args", HELP_COMMANDS, ids=lambda a: a[0])
def test_help_keeps_words_whole_and_ranges_readable(args: list[str], columns: str) -> None:
    done = run_cli([*args, "--help"], env={"COLUMNS": columns})
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert not re.search(r"x[<>]=?-?\d|\d<=?x", text), text  # click's x>=16
    arguments = text.partition("Arguments:\n")[2].partition("\n\n")[0]
    assert all(not re.match(r"  [a-z]", line) for line in arguments.splitlines()), arguments
    if args == ["find"]:
        assert "RequestAttributesSequence.RequestedProcedureID=77." in text.split()
    if args == ["index"]:
        assert "[default: 1024; 16 or more]" in " ".join(text.split())
