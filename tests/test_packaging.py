"""The wheel must carry what an installed (non-editable) indexer needs at run time.

Above all the alembic migrations: they live in the top-level ``migrations/`` folder of
the source tree and are shipped as ``indexer/_migrations/`` (see pyproject.toml).
"""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent

# Build from a clean copy: setuptools reuses build/ in the source tree, where a stale
# file (say, a deleted migration) would end up in the wheel, and the test should not
# leave build/ or *.egg-info behind in the work tree either.
_TOP_LEVEL_NOT_COPIED = {".git", ".ci", ".venv", "venv", "build", "dist", "tests", "benchmarks"}
_NOT_COPIED_ANYWHERE = shutil.ignore_patterns("*.egg-info", "__pycache__", ".*_cache", "*.db")


def _ignore(directory: str, names: list[str]) -> set[str]:
    ignored = set(_NOT_COPIED_ANYWHERE(directory, names))
    if Path(directory) == REPO_ROOT:
        ignored |= _TOP_LEVEL_NOT_COPIED & set(names)
    return ignored


@dataclass(frozen=True)
class BuiltWheel:
    names: list[str]
    entry_points: str


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> BuiltWheel:
    work = tmp_path_factory.mktemp("packaging")
    src = work / "src"
    shutil.copytree(REPO_ROOT, src, ignore=_ignore)
    out = work / "wheels"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(src)],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"pip wheel failed:\n{proc.stdout}\n{proc.stderr}"
    wheels = list(out.glob("dicom_indexer-*.whl"))
    assert len(wheels) == 1, wheels
    with zipfile.ZipFile(wheels[0]) as zf:
        names = zf.namelist()
        entry_points = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        assert entry_points, "no entry_points.txt in the wheel"
        return BuiltWheel(names, zf.read(entry_points[0]).decode("utf-8"))


def test_wheel_ships_migration_environment(wheel: BuiltWheel) -> None:
    assert "indexer/_migrations/env.py" in wheel.names
    assert "indexer/_migrations/script.py.mako" in wheel.names


def test_wheel_ships_migration_versions(wheel: BuiltWheel) -> None:
    pattern = re.compile(r"indexer/_migrations/versions/[^/]+\.py")
    versions = [n for n in wheel.names if pattern.fullmatch(n)]
    assert versions, "no migration scripts under indexer/_migrations/versions/"


def test_wheel_ships_py_typed(wheel: BuiltWheel) -> None:
    assert "indexer/py.typed" in wheel.names


def test_wheel_ships_the_export_package(wheel: BuiltWheel) -> None:
    assert "indexer/export/parquet.py" in wheel.names
    assert "indexer/backends/snapshot.py" in wheel.names


def test_wheel_declares_console_script(wheel: BuiltWheel) -> None:
    parser = configparser.ConfigParser()
    parser.read_string(wheel.entry_points)
    assert parser.get("console_scripts", "indexer", fallback=None) == "indexer.cli:main"
