"""Read-only questions to the index: `indexer stats`, `tags`, `find` and `sql`.

Every function takes an open Connection, reads the database only (never the DICOM
files), runs the same on SQLite and PostgreSQL, and returns plain dicts and lists
that the CLI prints as a table, JSON or CSV. Keys are stable (README "Reports").

stats.py and find.py read the hierarchy tables (one row per file at most); tags.py
reads the summary tables that indexer.summaries keeps at write time, and the element
rows only for one tag at a time; sql.py runs one read-only statement.

Privacy: patient values (see is_patient_key) are left out of `tags` unless the
caller asks for them; `stats` holds none; `find` returns the Patient IDs of what
it matched (the CLI prints them only when named in --fields).
"""

from ..errors import ReportError, UnknownTagError
from .filters import parse_filters
from .find import LEVELS, find
from .sql import QueryError, QueryResult, QueryTimeout, run_query
from .stats import BREAKDOWNS, collect_breakdown, collect_stats
from .tags import find_tag_key, is_patient_key, key_element_rows, tag_usage, tag_values_report

__all__ = [
    "BREAKDOWNS",
    "LEVELS",
    "QueryError",
    "QueryResult",
    "QueryTimeout",
    "ReportError",
    "UnknownTagError",
    "collect_breakdown",
    "collect_stats",
    "find",
    "find_tag_key",
    "is_patient_key",
    "key_element_rows",
    "parse_filters",
    "run_query",
    "tag_usage",
    "tag_values_report",
]
