"""Fixtures shared by the whole test suite.

Data: ``sample_dir`` is the small set of real DICOM files shipped in ``tests/data``;
``corpus_dir`` is the full corpus (``INDEXER_CORPUS``, else ``../shared/corpus``),
skipped on a user's machine when absent but a failure under CI.

Databases: ``db_url`` runs a test once on SQLite and once on PostgreSQL. The
PostgreSQL server comes from ``INDEXER_TEST_PG_URL``: unset means skip, set with no
server answering means fail, so CI cannot pass by silently skipping.
"""

from __future__ import annotations

import csv
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLE_DIR = REPO_ROOT / "tests" / "data"
DEFAULT_CORPUS_DIR = REPO_ROOT.parent / "shared" / "corpus"
PG_CONNECT_TIMEOUT_S = 5


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def load_manifest(directory: Path) -> list[dict[str, str]]:
    """Read ``MANIFEST.tsv`` of a corpus folder: one dict per data file, keyed by column."""
    with open(directory / "MANIFEST.tsv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    return SAMPLE_DIR


@pytest.fixture(scope="session")
def sample_manifest(sample_dir: Path) -> list[dict[str, str]]:
    return load_manifest(sample_dir)


@pytest.fixture(scope="session")
def corpus_dir() -> Path:
    configured = os.environ.get("INDEXER_CORPUS")
    if configured:
        path = Path(configured)
        if not (path / "MANIFEST.tsv").is_file():
            # A path that was set on purpose but is wrong must not turn into a skip.
            pytest.fail(f"INDEXER_CORPUS={configured} has no MANIFEST.tsv; fix or unset it")
        return path
    if (DEFAULT_CORPUS_DIR / "MANIFEST.tsv").is_file():
        return DEFAULT_CORPUS_DIR
    if _in_ci():
        pytest.fail(
            f"full corpus not available under CI: set INDEXER_CORPUS ({DEFAULT_CORPUS_DIR})"
        )
    pytest.skip("full corpus not available")


@pytest.fixture(scope="session")
def corpus_manifest(corpus_dir: Path) -> list[dict[str, str]]:
    return load_manifest(corpus_dir)


def _pg_engine(url: str, isolation_level: str = "READ COMMITTED") -> sa.Engine:
    return sa.create_engine(
        url,
        poolclass=NullPool,
        isolation_level=isolation_level,
        connect_args={"connect_timeout": PG_CONNECT_TIMEOUT_S},
    )


@pytest.fixture(scope="session")
def pg_url() -> str:
    url = os.environ.get("INDEXER_TEST_PG_URL")
    if not url:
        pytest.skip("INDEXER_TEST_PG_URL not set")
    engine = _pg_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        problem = ""
    except sa.exc.OperationalError as err:
        problem = str(err.orig).strip()
    finally:
        engine.dispose()
    if problem:
        # Failing, not skipping: CI sets the URL, so a dead server must not look green.
        shown = make_url(url).render_as_string(hide_password=True)
        pytest.fail(
            f"INDEXER_TEST_PG_URL={shown} is set but the server does not answer: {problem}\n"
            "Start PostgreSQL, or unset INDEXER_TEST_PG_URL to skip the PostgreSQL tests.",
            pytrace=False,
        )
    return url


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
    ]
)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """URL of a fresh, empty database: a file under tmp_path, or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/index.db"
        return

    server_url: str = request.getfixturevalue("pg_url")
    name = f"idx_test_{secrets.token_hex(6)}"
    admin = _pg_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        # FORCE ends connections a failed test left open (pools not disposed).
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
