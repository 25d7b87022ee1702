"""The worker side of an index run imports no SQLAlchemy (nor a backend's connection code)."""

from __future__ import annotations

import subprocess
import sys

import pytest

_LOADED = (
    "import sys, {module}; print(sorted(m for m in ('sqlalchemy', 'psycopg') if m in sys.modules))"
)


def _loaded_after(module: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", _LOADED.format(module=module)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout.strip()


@pytest.mark.parametrize(
    "module",
    [
        "indexer",
        "indexer.backends.sinks",
        "indexer.backends.sqlite_rows",
        "indexer.backends.copy_rows",
    ],
)
def test_worker_side_of_backends_imports_no_sqlalchemy(module: str) -> None:
    assert _loaded_after(module) == "[]"


def test_worker_imports_no_sqlalchemy() -> None:
    assert _loaded_after("indexer.worker") == "[]"
