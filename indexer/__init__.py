"""dicom-indexer: index DICOM archives into SQLite or PostgreSQL.

The library surface::

    from indexer import index_paths, read_file, connect
    report = index_paths(["/archive"], "index.db")

Names are imported on first use, so that `import indexer` (and a worker process, which
imports indexer.worker) loads neither SQLAlchemy nor pydicom.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

if TYPE_CHECKING:
    from .db import connect, open_index, resolve_url
    from .errors import DatabaseError, DicomReadError, IndexerError, Reason, ReportError
    from .reader import read_file
    from .records import ElementRecord, FileRecord
    from .run import IndexReport, index_paths
    from .writer.roots import forget_root, relocate_root

# name -> module that defines it
_EXPORTS = {
    "index_paths": "run",
    "IndexReport": "run",
    "read_file": "reader",
    "connect": "db",
    "open_index": "db",
    "resolve_url": "db",
    "IndexerError": "errors",
    "DatabaseError": "errors",
    "DicomReadError": "errors",
    "ReportError": "errors",
    "Reason": "errors",
    "FileRecord": "records",
    "ElementRecord": "records",
    "forget_root": "writer.roots",
    "relocate_root": "writer.roots",
}

__all__ = [
    "DatabaseError",
    "DicomReadError",
    "ElementRecord",
    "FileRecord",
    "IndexReport",
    "IndexerError",
    "Reason",
    "ReportError",
    "__version__",
    "connect",
    "forget_root",
    "index_paths",
    "open_index",
    "read_file",
    "relocate_root",
    "resolve_url",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'indexer' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
