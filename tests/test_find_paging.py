"""find_page: a page of the matches equals the same slice of all of them, with the total, at
every offset and limit (rows are made for the first series of a page only, see
reports/find.py _first_instances), over the real files of tests/data, in many series."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import DB_KINDS, fresh_database, server_for

from indexer.db import open_index
from indexer.reports.find import find, find_page
from indexer.run import index_paths

DATA = Path(__file__).parent / "data"
FILTERS = [
    [],  # every instance
    [("ImageType", "*")],  # an element filter alone
    [("PatientName", "*")],
    [("Modality", "MR"), ("ImageType", "*")],  # a fast key and an element filter
]


@pytest.mark.parametrize("kind", DB_KINDS)
def test_every_page_is_the_slice_of_all_matches(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    with fresh_database(kind, tmp_path, server_for(request, kind)) as url:
        index_paths([str(DATA)], url, workers=0)
        engine = open_index(url)
        try:
            with engine.connect() as conn:
                for filters in FILTERS:
                    everything = find(conn, "instances", filters)
                    assert len(everything) > 3, filters
                    for limit in (1, 2, 3, 5, len(everything)):
                        for offset in range(len(everything) + 1):
                            page = find_page(conn, "instances", filters, offset=offset, limit=limit)
                            assert page.rows == everything[offset : offset + limit], (
                                filters,
                                offset,
                            )
                            assert page.total == len(everything)
                    for level in ("studies", "series"):
                        rows = find(conn, level, filters)
                        page = find_page(conn, level, filters, offset=1, limit=2)
                        assert page.rows == rows[1:3] and page.total == len(rows)
        finally:
            engine.dispose()
