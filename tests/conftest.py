"""Fixtures shared by the whole test suite.

Data: ``sample_dir`` is the small set of real DICOM files shipped in ``tests/data``;
``corpus_dir`` is the full corpus (``INDEXER_CORPUS``, else ``../shared/corpus``),
skipped on a user's machine when absent but a failure under CI.

Databases: ``db_url`` runs a test once on SQLite and once on PostgreSQL (the one
parametrisation, ``helpers.DB_KINDS``); ``corpus_index`` is an index of the readable
corpus files of either kind. PostgreSQL databases are made and dropped by
``helpers.pg_database`` only. The server comes from ``INDEXER_TEST_PG_URL``: unset
means skip, set with no server answering means fail, so CI cannot pass by silently
skipping.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from helpers import (
    DB_KINDS,
    Dump,
    dump_index,
    pg_database,
    pg_engine,
    readable_rows,
    replicated_corpus,
    run_cli,
)
from sqlalchemy.engine import make_url

from indexer.run import index_paths

REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLE_DIR = REPO_ROOT / "tests" / "data"
DEFAULT_CORPUS_DIR = REPO_ROOT.parent / "shared" / "corpus"


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


@pytest.fixture(scope="session")
def corpus_copies(
    tmp_path_factory: pytest.TempPathFactory,
    corpus_dir: Path,
    corpus_manifest: list[dict[str, str]],
) -> Path:
    """Three folders, each a copy of the corpus files up to 40 kB: about 200 files, quick to
    index in many chunks (the crash, writers and Dask tests; never changed by a test)."""
    root = tmp_path_factory.mktemp("corpus-copies") / "tree"
    return replicated_corpus(corpus_dir, corpus_manifest, root, copies=3, max_bytes=40_000)


@pytest.fixture(scope="session")
def corpus_copies_dump(pg_url: str, corpus_copies: Path) -> Dump:
    """The dump of `corpus_copies` indexed on PostgreSQL by one local run (one writer)."""
    with pg_database(pg_url) as url:
        ran = run_cli(["index", str(corpus_copies), "--db", url, "-w", "2", "-q"])
        assert ran.returncode == 0, ran.stderr
        return dump_index(url)


@pytest.fixture(scope="session")
def pg_url() -> str:
    url = os.environ.get("INDEXER_TEST_PG_URL")
    if not url:
        pytest.skip("INDEXER_TEST_PG_URL not set")
    engine = pg_engine(url)
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


@pytest.fixture(params=DB_KINDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """URL of a fresh, empty database: a file under tmp_path, or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/index.db"
        return
    with pg_database(request.getfixturevalue("pg_url")) as url:
        yield url


@pytest.fixture(scope="module", params=DB_KINDS)
def corpus_index(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    corpus_dir: Path,
    corpus_manifest: list[dict[str, str]],
) -> Iterator[str]:
    """An index of the DCMTK-readable corpus files, built once per test module and kind."""
    roots = [str(corpus_dir / r["relpath"]) for r in readable_rows(corpus_manifest)]
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('reports')}/index.db"
        index_paths(roots, url, workers=2)
        yield url
        return
    with pg_database(request.getfixturevalue("pg_url")) as url:
        index_paths(roots, url, workers=2)
        yield url
