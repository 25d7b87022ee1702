"""Fixtures of the torture suite: the database kinds, and the clean run over the good files."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import DB_KINDS, Dump, fresh_database

from indexer.run import index_paths

from .support import DbFactory, copy_good, relative_dump


@pytest.fixture(params=DB_KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    """The database kind a test runs on (SQLite file, or a fresh PostgreSQL database)."""
    if request.param == "postgresql":
        request.getfixturevalue(
            "pg_url"
        )  # fails (not skips) when the URL is set and the server is down
    return str(request.param)


@pytest.fixture
def new_db(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> DbFactory:
    """Call it for a fresh, empty database of the test's kind (dropped when the `with` ends)."""
    server = request.getfixturevalue("pg_url") if kind == "postgresql" else None
    return lambda: fresh_database(kind, tmp_path / "db", server)


@pytest.fixture
def db(new_db: DbFactory) -> Iterator[str]:
    """One fresh database of the test's kind."""
    with new_db() as url:
        yield url


@pytest.fixture(scope="session")
def good_tree(tmp_path_factory: pytest.TempPathFactory, corpus_dir: Path) -> Path:
    """A folder `good/` of real corpus files that index cleanly (support.GOOD_FILES)."""
    root = tmp_path_factory.mktemp("good-ref")
    copy_good(corpus_dir, root / "good")
    return root


_references: dict[str, Dump] = {}


@pytest.fixture
def good_reference(
    kind: str,
    good_tree: Path,
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
) -> Dump:
    """The dump (paths relative, `good/...`) of one clean run over the good files alone."""
    if kind not in _references:
        server = request.getfixturevalue("pg_url") if kind == "postgresql" else None
        with fresh_database(kind, tmp_path_factory.mktemp("good-ref-db"), server) as url:
            report = index_paths([good_tree / "good"], url, workers=2)
            assert report.outcome == "completed" and report.errors == 0, report
            _references[kind] = relative_dump(url, good_tree)
    return _references[kind]
