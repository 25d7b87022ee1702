"""The one exception family the CLI turns into a one-line message and exit code 1."""

from __future__ import annotations

from enum import Enum


class Reason(str, Enum):
    """Why a file, or part of one, is not in the index: set where the problem is found.

    The values are what the `errors.reason` column and the reports show.
    """

    # Print as the plain value ("not_dicom"), as the reason strings did before the enum.
    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    NOT_DICOM = "not_dicom"  # not a DICOM file at all (text, JPEG, random bytes)
    EMPTY = "empty"  # a file of zero bytes
    UNREADABLE = "unreadable"  # the operating system refused to open or read it
    TRUNCATED = "truncated"  # the data set ends inside an element or item
    INVALID = "invalid"  # bytes that cannot be a DICOM structure where one should be
    WARNING = "warning"  # read in full, with something worth knowing (a bad charset term, ...)
    REFUSED = "refused"  # read, but the database refused to store its rows (stage `write`)


class IndexerError(Exception):
    """Base class of every error this package raises on purpose."""


class DicomReadError(IndexerError):
    """A file could not be read as DICOM. `reason` is a short machine-friendly word."""

    def __init__(self, path: str, reason: Reason, detail: str) -> None:
        self.path = path
        self.reason = reason
        self.detail = detail
        super().__init__(f"{path}: {detail}")


class NotDicomError(DicomReadError):
    """The file is not DICOM at all (text, JPEG, random bytes, empty)."""


class DatabaseError(IndexerError):
    """The index database cannot be opened, created or upgraded."""


class ReportError(IndexerError):
    """A report cannot be made as asked (unknown tag, bad filter, ...)."""


class UnknownTagError(ReportError):
    """A report names a tag that no file in the index has."""
