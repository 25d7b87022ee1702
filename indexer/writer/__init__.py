"""Writing an index run: its batches (batch.py), its runs row (runs.py), and the catalog of
files that says what is unchanged, seen or missing (catalog.py), and the path index on the
element rows that a first run builds at its end (path_index.py)."""

from .batch import BatchReport, BatchWriter
from .catalog import Catalog
from .runs import finish_run, start_run

__all__ = ["BatchReport", "BatchWriter", "Catalog", "finish_run", "start_run"]
