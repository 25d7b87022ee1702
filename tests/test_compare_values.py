"""benchmarks/compare_values.py: the corpus-wide comparison with pydicom and DCMTK runs and
keeps values out of its output unless asked."""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path
from types import ModuleType

import pytest

# CI installs DCMTK (.ci/run) and must not pass by skipping: there a missing dcmdump fails.
pytestmark = pytest.mark.skipif(
    shutil.which("dcmdump") is None and not os.environ.get("CI"), reason="needs DCMTK's dcmdump"
)


def _module() -> ModuleType:
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "compare_values.py"
    spec = importlib.util.spec_from_file_location("compare_values", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_parse_dcmdump_paths_values_and_quoting() -> None:
    dump = (
        "# Dicom-Data-Set\n"
        "(0008,0005) CS [ISO_IR 192]                             #  10, 1 SpecificCharacterSet\n"
        "(0010,0010) PN [Wang^&#231;&#142;&#139;&amp;]           #   8, 1 PatientName\n"
        "(0019,1029) FD 0\\70.5\\142.25 # 280,35 Unknown Tag & Data\n"
        "(0032,1064) SQ (Sequence with explicit length #=2)      # 128, 1 RequestedProcedureCodeSequence\n"
        "  (fffe,e000) na (Item with explicit length #=1)          # 120, 1 Item\n"
        "    (0008,0100) SH [A\\B]                                   #   4, 2 CodeValue\n"
        "  (fffe,e00d) na (ItemDelimitationItem)   #   0, 0 ItemDelimitationItem\n"
        "  (fffe,e000) na (Item with explicit length #=1)          # 120, 1 Item\n"
        "    (0020,9165) AT (0020,9056)                              #   4, 1 DimensionIndexPointer\n"
        "(fffe,e0dd) na (SequenceDelimitationItem)               #   0, 0 SequenceDelimitationItem\n"
        "(7fe0,0010) OB (PixelSequence #=2)                      # u/l, 1 PixelData\n"
        "  (fffe,e000) pi (no value available)                     #   0, 1 Item\n"
        "(fffe,fffc) OB (no value available)   #   0, 1 DataSetTrailingPadding\n"
    )
    found = _module().parse_dcmdump(dump, utf8=True)
    assert found["(0010,0010)"].text == "Wang^王&"
    assert found["(0019,1029)"].text == "0\\70.5\\142.25" and found["(0019,1029)"].vm == 35
    assert found["(0032,1064)[0].(0008,0100)"].text == "A\\B"
    assert found["(0032,1064)[1].(0020,9165)"].text == "(0020,9056)"
    assert "(0032,1064)[1]" in found and "(7FE0,0010)[0]" not in found
    assert found["(7FE0,0010)"].length == 0xFFFFFFFF
    assert found["(FFFE,FFFC)"].text == ""


def test_run_counts_and_keeps_values_out(
    sample_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copy(sample_dir / "pydicom/charset_files/chrX1.dcm", tmp_path / "chrX1.dcm")
    (tmp_path / "not-dicom.txt").write_text("hello")
    module = _module()
    assert module.main([str(tmp_path), "--jobs", "1"]) == 0
    out = capsys.readouterr().out
    assert "compared: 1, not DICOM for the indexer: 1" in out
    assert "pydicom: elements compared" in out and "dcmtk: elements compared" in out
    # +U8 rewrites (0008,0005): one difference class, shown by location only.
    assert "(0008,0005) rewritten or added by +U8" in out and "chrX1.dcm (0008,0005)" in out
    assert "value:" not in out and "ISO_IR 192" not in out and "XiaoDong" not in out
    assert module.main([str(tmp_path), "--jobs", "1", "--values"]) == 0
    out = capsys.readouterr().out
    assert "indexer value:" in out and "XiaoDong" in out  # chrX1: Wang^XiaoDong, PN class


def test_index_rows_compare_like_the_walker(
    db_url: str, sample_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # --index builds the index and reads the values back from the database: the figures must
    # be those of read_file (no value changed on its way through either database).
    archive = tmp_path / "archive"
    archive.mkdir()
    for relpath in ("pydicom/charset_files/chrX1.dcm", "pydicom/charset_files/chrH32.dcm"):
        shutil.copy(sample_dir / relpath, archive / Path(relpath).name)
    module = _module()
    assert module.main([str(archive), "--jobs", "1"]) == 0
    walked = capsys.readouterr().out
    assert module.main([str(archive), "--jobs", "1", "--index", db_url]) == 0
    stored = capsys.readouterr().out
    assert "2 files indexed" in stored
    figures = [line for line in walked.splitlines() if "compared" in line]
    assert figures and figures == [line for line in stored.splitlines() if "compared" in line]
