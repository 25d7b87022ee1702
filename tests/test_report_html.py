"""`indexer report --html`: the page through the CLI on SQLite and PostgreSQL, and in Chromium.

The index is of the real files in tests/data (or copies of them, changed with pydicom where
a test needs a value of its own). Tests marked `browser` render the page in the Debian
`chromium` binary, headless: a screenshot that is not blank and no console message at all
(the page has no script, so any message is a blocked fetch, a CSP violation or an error).
Without chromium they are skipped, except under CI, where they fail.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import warnings
from pathlib import Path

import pydicom
import pytest
from helpers import query, readable_rows
from PIL import Image
from typer.testing import CliRunner

from indexer.cli import app
from indexer.reports import charts
from indexer.run import index_paths

# A Patient's Name in tests/data (pydicom/MR_small_bigendian.dcm) and its Patient ID.
KNOWN_PATIENT_NAME = "CompressedSamples^MR1"
KNOWN_PATIENT_ID = "4MR1"
EVIL = '<script>alert("x")</script>'


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args), env={"INDEXER_DB": None})
    return result.exit_code, result.stdout, result.stderr


def make_report(url: str, out: Path, *args: str) -> str:
    code, stdout, stderr = invoke("report", "--html", str(out), "--db", url, *args)
    assert code == 0, stderr
    assert str(out) in stdout
    return out.read_text(encoding="utf-8")


@pytest.fixture
def sample_index(db_url: str, sample_dir: Path) -> str:
    code, _, stderr = invoke("index", str(sample_dir), "--db", db_url, "-q", "-w", "2")
    assert code == 0, stderr
    return db_url


def _patient_values(url: str) -> set[str]:
    values = {
        v
        for (v,) in query(
            url,
            "SELECT patient_id FROM patients UNION SELECT patient_name FROM patients "
            "UNION SELECT birth_date FROM patients",
        )
        if v and len(v) >= 6
    }
    assert KNOWN_PATIENT_NAME in values
    return values | {KNOWN_PATIENT_ID}


def test_report_of_the_sample_files(sample_index: str, tmp_path: Path) -> None:
    page = make_report(sample_index, tmp_path / "report.html")
    assert stat.S_IMODE((tmp_path / "report.html").stat().st_mode) == 0o600
    code, out, _ = invoke("stats", "--db", sample_index, "-f", "json")
    assert code == 0
    stats = json.loads(out)
    # The figures of `stats`, in the cards and the charts.
    assert f"<b>{stats['instances']:,}</b><span>instances</span>" in page
    assert f"<b>{stats['errors']:,}</b><span>errors</span>" in page
    for row in stats["by_modality"]:
        assert f"<title>{row['modality'] or '(none)'}: {row['instances']:,}</title>" in page
    assert "<title>MR Image Storage: " in page  # SOP class names from pydicom's dictionary
    assert "GE MEDICAL SYSTEMS \u00b7 DISCOVERY MR750" in page
    for row in stats["by_study_year"]:
        assert f"<title>{row['year'] or 'none'}: {row['instances']:,}</title>" in page
    # The heat map agrees with `tags --modality`.
    code, out, _ = invoke("tags", "--db", sample_index, "--modality", "MR", "-f", "json")
    mr = {t["keyword"]: t["share"] for t in json.loads(out)["tags"]}
    in_map = re.findall(r"<title>(\w+) in MR: ([\d.]+)%</title>", page)
    assert len(in_map) >= 8 and any(float(p) < 100 for _, p in in_map)
    for keyword, percent in in_map:
        assert f"{mr.get(keyword, 0):.1%}" == f"{percent}%", keyword
    assert "GEMS_IDEN_01" in page and "SIEMENS CSA HEADER" in page  # private creators
    # Errors by reason with example paths, and the duplicate SOP Instance UIDs with theirs.
    assert "truncated" in page and "broken/pydicom/MR_truncated.dcm" in page
    duplicates = query(
        sample_index,
        "SELECT sop_instance_uid FROM instances WHERE sop_instance_uid <> '' "
        "GROUP BY sop_instance_uid HAVING COUNT(*) > 1",
    )
    assert len(duplicates) == stats["duplicate_sop_instance_uids"] > 0
    for (uid,) in duplicates:
        assert f"<code>{uid}</code>" in page
    # Self-contained: nothing to fetch, no script, and a policy that forbids both.
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    assert not re.search(r"<script|\b(src|href)=|url\(|@import", page, re.I)
    # No patient value: names, IDs and birth dates of the index are absent.
    for value in _patient_values(sample_index):
        assert value not in page, value
    assert "<i>hidden</i>" in page


def test_patient_values_only_when_asked(sample_index: str, tmp_path: Path) -> None:
    page = make_report(sample_index, tmp_path / "with.html", "--patient-values")
    assert KNOWN_PATIENT_NAME in page and KNOWN_PATIENT_ID in page
    assert "with patient values" in page
    without = make_report(sample_index, tmp_path / "without.html")
    assert KNOWN_PATIENT_NAME not in without and KNOWN_PATIENT_ID not in without


def _evil_copy(src: Path, dst: Path) -> None:
    ds = pydicom.dcmread(src)
    ds.Manufacturer = EVIL
    ds.PatientName = "<b>Bold</b>^&amp;"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # pydicom: not a valid CS, on purpose
        ds.Modality = "<i>"
    block = ds.private_block(0x0009, "<img src=x onerror=alert(1)>", create=True)
    block.add_new(0x01, "LO", "private value")
    ds.save_as(dst)


def test_values_from_files_are_escaped(db_url: str, sample_dir: Path, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    _evil_copy(sample_dir / "pydicom" / "MR_small_bigendian.dcm", tree / "a.dcm")
    # A path that is markup too: a broken file, listed under its error reason.
    (tree / '<svg onload="alert(1)">.dcm').write_bytes(b"not dicom at all" * 20)
    index_paths([str(tree)], db_url, workers=1)
    page = make_report(db_url, tmp_path / "report.html", "--patient-values")
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert "&lt;b&gt;Bold&lt;/b&gt;^&amp;amp;" in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page  # the private creator
    assert "&lt;svg onload=&quot;alert(1)&quot;&gt;.dcm" in page
    assert "<title>&lt;i&gt;: 1</title>" in page  # the modality, in a chart
    for raw in ("<script", "<b>Bold", "<img", "<svg onload", "<i>:"):
        assert raw not in page, raw


def test_missing_files_are_listed(db_url: str, sample_dir: Path, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    shutil.copytree(sample_dir / "pydicom", tree)
    index_paths([str(tree)], db_url, workers=1)
    (tree / "rtplan.dcm").unlink()
    index_paths([str(tree)], db_url, workers=1)
    page = make_report(db_url, tmp_path / "report.html")
    assert "<h2>Missing files (1)</h2>" in page
    assert f"<li><code>{tree / 'rtplan.dcm'}</code></li>" in page
    assert "<b>1</b><span>missing files</span>" in page


def test_an_empty_index(db_url: str, tmp_path: Path) -> None:
    code, _, stderr = invoke("db", "upgrade", "--db", db_url)
    assert code == 0, stderr
    page = make_report(db_url, tmp_path / "empty.html")
    assert "<b>0</b><span>instances</span>" in page
    assert page.count('<p class="empty">') >= 8  # each chart and list says it has nothing


def test_a_report_that_cannot_be_written(sample_index: str, tmp_path: Path) -> None:
    target = tmp_path / "old.html"
    target.write_text("<!DOCTYPE html><p>yesterday</p>")
    target.chmod(0o644)
    make_report(sample_index, target)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600  # an existing file is made private
    for bad in (tmp_path, tmp_path / "no" / "such" / "folder.html"):
        code, _, stderr = invoke("report", "--html", str(bad), "--db", sample_index)
        assert code == 1
        assert stderr.startswith("error: cannot write the report to ") and stderr.count("\n") == 1
    code, _, stderr = invoke("report", "--db", sample_index)
    assert code != 0 and "--html" in stderr
    # A slip that names the index, or any file that is not an HTML page, changes nothing.
    index_file = tmp_path / "index.db"
    if sample_index.startswith("sqlite"):
        index_file = Path(sample_index.split("///", 1)[1])
    else:
        index_file.write_bytes(b"SQLite format 3\x00" + bytes(100))
    before = index_file.read_bytes()
    code, _, stderr = invoke("report", "--html", str(index_file), "--db", sample_index)
    assert (
        code == 1
        and stderr == f"error: {index_file} exists and is not an HTML page: not replaced\n"
    )
    assert index_file.read_bytes() == before


@pytest.mark.corpus
def test_corpus_report_holds_no_patient_value(corpus_index: str, tmp_path: Path) -> None:
    page = make_report(corpus_index, tmp_path / "report.html")
    values = {
        v
        for (v,) in query(
            corpus_index,
            "SELECT patient_id FROM patients UNION SELECT patient_name FROM patients",
        )
        if v and len(v) >= 6
    }
    assert values
    for value in values:
        assert value not in page, value


# -- in a browser -------------------------------------------------------------------------------


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
        pytest.fail("chromium is not installed (apt-get install chromium); CI needs it")
    pytest.skip("chromium is not installed")


def render(page: Path, screenshot: Path, profile: Path) -> list[str]:
    """Render `page` in headless Chromium into `screenshot`; return its console messages."""
    args = [
        chromium(),
        "--headless",
        "--disable-gpu",
        "--no-first-run",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        "--window-size=1200,2400",
        f"--screenshot={screenshot}",
    ]
    if os.geteuid() == 0:
        args.append("--no-sandbox")  # Chromium refuses to run as root with its sandbox
    done = subprocess.run(
        [*args, page.as_uri()], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert screenshot.is_file(), done.stderr[-2000:]
    return [line for line in done.stderr.splitlines() if ":CONSOLE" in line]


def _bar_pixels(image: Image.Image) -> int:
    colour = tuple(int(charts.BAR_COLOUR[i : i + 2], 16) for i in (1, 3, 5))
    return sum(n for n, c in image.getcolors(maxcolors=1 << 24) or [] if c == colour)


@pytest.mark.browser
def test_the_report_renders_in_chromium(sample_index: str, tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    make_report(sample_index, page)
    shot = tmp_path / "report.png"
    console = render(page, shot, tmp_path / "profile")
    assert console == []
    image = Image.open(shot).convert("RGB")
    assert image.size == (1200, 2400)
    colours = image.getcolors(maxcolors=1 << 24) or []
    white = sum(n for n, c in colours if c == (255, 255, 255))
    assert white < 0.9 * image.width * image.height  # not blank
    assert len(colours) > 50  # text, bars and shades, not a flat page
    assert _bar_pixels(image) > 5000  # the bar charts are drawn


@pytest.mark.browser
def test_hostile_values_stay_text_in_chromium(sample_dir: Path, tmp_path: Path) -> None:
    """Markup in values and paths neither runs nor fetches: the console stays silent."""
    tree = tmp_path / "tree"
    tree.mkdir()
    _evil_copy(sample_dir / "pydicom" / "MR_small_bigendian.dcm", tree / "a.dcm")
    (tree / "<img src=x onerror=alert(1)>.dcm").write_bytes(b"not dicom" * 40)
    url = f"sqlite:///{tmp_path}/index.db"
    index_paths([str(tree)], url, workers=1)
    page = tmp_path / "report.html"
    make_report(url, page, "--patient-values")
    assert render(page, tmp_path / "report.png", tmp_path / "profile") == []


@pytest.mark.browser
def test_the_browser_check_sees_fetches_and_errors(tmp_path: Path) -> None:
    """The check above can fail: a page that fetches, or whose script throws, gets messages."""
    page = tmp_path / "bad.html"
    page.write_text(
        "<!DOCTYPE html><html><head>"
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'">'
        '</head><body><img src="https://example.invalid/x.png"></body></html>'
    )
    assert any(
        "Content Security Policy" in m for m in render(page, tmp_path / "a.png", tmp_path / "p")
    )
    page.write_text("<!DOCTYPE html><body>x<script>undefinedFunction()</script></body>")
    messages = render(page, tmp_path / "b.png", tmp_path / "p")
    assert any("ReferenceError" in m for m in messages)


def test_the_sample_manifest_has_the_known_patient(sample_manifest: list[dict[str, str]]) -> None:
    # The constants above name a file of tests/data: keep them true if the data changes.
    row = next(r for r in sample_manifest if r["relpath"] == "pydicom/MR_small_bigendian.dcm")
    assert row["patient_id"] == KNOWN_PATIENT_ID and row in readable_rows(sample_manifest)


# -- the charts alone -----------------------------------------------------------------------------


def test_chart_text_is_escaped_and_printable() -> None:
    assert charts.text('<a href="x">&\x00\x1b') == "&lt;a href=&quot;x&quot;&gt;&amp;\ufffd\ufffd"
    assert charts.cut("x" * 50, 10) == "x" * 9 + "\u2026"
    svg = charts.bar_chart([("<b>" + "y" * 60, 3), ("z", 0)], title="<t>")
    assert "<b>" not in svg and 'aria-label="&lt;t&gt;"' in svg
    assert f"<title>&lt;b&gt;{'y' * 60}: 3</title>" in svg  # the tooltip keeps the whole label
    assert svg.count("<rect") == 2 and 'width="0.0"' in svg  # a zero is a bar of no length
    for empty in (
        charts.bar_chart([], title="t"),
        charts.column_chart([], title="t"),
        charts.heat_map([], ["CT"], [], title="t"),
    ):
        assert empty == '<p class="empty">nothing to show</p>'


def test_heat_map_cells() -> None:
    svg = charts.heat_map(["A", "B"], ["CT", "MR"], [[1.0, 0.0], [0.004, 0.5]], title="t")
    cells = re.findall(r"<title>(\w) in (\w+): ([\d.]+)%</title><rect [^>]* fill=\"(#\w+)\"", svg)
    assert cells == [
        ("A", "CT", "100.0", "#08306b"),
        ("A", "MR", "0.0", "#f4f4f4"),
        ("B", "CT", "0.4", "#ddeaf6"),
        ("B", "MR", "50.0", "#738eb1"),
    ]
    assert "&lt;1%" in svg  # a small share is not written 0%


def test_a_report_to_a_pipe(sample_index: str) -> None:
    # `--html /dev/stdout | ...`: the check for data to protect must not read the pipe (it
    # blocked for ever, waiting for its own output).
    done = subprocess.run(
        [sys.executable, "-c", "from indexer.cli import main; main()", "report"]
        + ["--html", "/dev/stdout", "--db", sample_index],
        capture_output=True,
        timeout=120,
        env={**os.environ, "INDEXER_DB": ""},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(b"<!DOCTYPE html>") and b"</html>" in done.stdout
