"""dicom-indexer: index DICOM archives into SQLite or PostgreSQL."""

__version__ = "0.2.0"
