"""The one exception family the CLI turns into a one-line message and exit code 1."""

from __future__ import annotations


class IndexerError(Exception):
    """Base class of every error this package raises on purpose."""


class DicomReadError(IndexerError):
    """A file could not be read as DICOM. `reason` is a short machine-friendly word."""

    def __init__(self, path: str, reason: str, detail: str) -> None:
        self.path = path
        self.reason = reason  # e.g. "not_dicom", "empty", "unreadable", "invalid"
        self.detail = detail
        super().__init__(f"{path}: {detail}")


class NotDicomError(DicomReadError):
    """The file is not DICOM at all (text, JPEG, random bytes, empty)."""


class DatabaseError(IndexerError):
    """The index database cannot be opened, created or upgraded."""


class ReportError(IndexerError):
    """A report cannot be made as asked (unknown tag, bad filter, ...)."""
