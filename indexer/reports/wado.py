"""What WADO-RS asks of the index: the files of a study, series or instance, whether each is
still the file that was indexed, and their DICOM JSON metadata (see dicom_json)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, select

from ..errors import IndexerError, ReportError
from ..rows import disk_path
from ..schema import files, instances, series, studies
from .dicom_json import BulkURI, JsonDataset, datasets_of_rows, element_rows, read_cut_values


class NotFoundError(IndexerError):
    """No indexed instance answers the study, series or instance UID asked for."""


class ChangedFileError(IndexerError):
    """A file changed (size or modification time) or vanished since it was indexed."""


@dataclass(frozen=True)
class IndexedFile:
    file_id: int
    path: str  # on disk (rows.disk_path of the stored text)
    size: int
    mtime_ns: int
    study_uid: str
    series_uid: str
    sop_instance_uid: str

    def unchanged(self) -> bool:
        """Whether the file on disk is the one indexed: same size and modification time."""
        try:
            st = os.stat(self.path)
        except OSError:
            return False
        return st.st_size == self.size and st.st_mtime_ns == self.mtime_ns


def instance_files(
    conn: Connection,
    study_uid: str,
    series_uid: str | None = None,
    sop_instance_uid: str | None = None,
) -> list[IndexedFile]:
    """The indexed files of a study (or one of its series, or one instance), files marked
    missing left out, in (series, instance number, path) order. NotFoundError when none."""
    query = (
        select(
            files.c.id,
            files.c.path,
            files.c.size,
            files.c.mtime_ns,
            studies.c.study_uid,
            series.c.series_uid,
            instances.c.sop_instance_uid,
            instances.c.instance_number,
        )
        .select_from(
            instances.join(files, files.c.id == instances.c.file_id)
            .join(series, series.c.id == instances.c.series_ref)
            .join(studies, studies.c.id == series.c.study_ref)
        )
        .where(studies.c.study_uid == study_uid, files.c.status != "missing")
    )
    if series_uid is not None:
        query = query.where(series.c.series_uid == series_uid)
    if sop_instance_uid is not None:
        query = query.where(instances.c.sop_instance_uid == sop_instance_uid)
    rows = sorted(conn.execute(query), key=lambda r: (r[5], _number(r[7]), r[1]))
    if not rows:
        raise NotFoundError("no such " + _level(series_uid, sop_instance_uid) + " in the index")
    return [
        IndexedFile(r[0], disk_path(r[1]), int(r[2]), int(r[3]), r[4], r[5], r[6] or "")
        for r in rows
    ]


def unchanged_files(found: list[IndexedFile]) -> list[IndexedFile]:
    """`found`, or ChangedFileError naming how many changed (a changed file is never served)."""
    changed = [f for f in found if not f.unchanged()]
    if changed:
        raise ChangedFileError(
            f"{len(changed)} of {len(found)} files changed or vanished since they were "
            "indexed; run `indexer index` on their folder again"
        )
    return found


def metadata(
    conn: Connection, found: list[IndexedFile], bulk_uri: Callable[[IndexedFile], BulkURI]
) -> list[JsonDataset]:
    """The DICOM JSON of each file in `found`, rebuilt from the index. A value the index cut
    at its value limit is read from the file when that is unchanged, else left cut."""
    by_id = {f.file_id: f for f in found}
    out: dict[int, JsonDataset] = {}
    rows = element_rows(conn, by_id)
    for file_id, dataset, cut in datasets_of_rows(rows, lambda fid: bulk_uri(by_id[fid])):
        if cut:
            complete_cut_values(by_id[file_id], dataset, cut)
        out[file_id] = dataset
    return [out.get(f.file_id, {}) for f in found]


def complete_cut_values(found: IndexedFile, dataset: JsonDataset, cut: list[str]) -> None:
    """Values cut at the value limit, read whole from the file if it is unchanged."""
    if found.unchanged():
        try:
            read_cut_values(found.path, dataset, cut)
        except Exception:  # noqa: BLE001 - a file pydicom cannot read keeps the cut values
            return


def _level(series_uid: str | None, sop_instance_uid: str | None) -> str:
    if sop_instance_uid is not None:
        return "instance"
    return "series" if series_uid is not None else "study"


def _number(text: Any) -> tuple[int, float, str]:
    try:
        return (0, float(text or ""), "")
    except ValueError:
        return (1, 0.0, str(text or ""))


def read_bulk_value(found: IndexedFile, segments: list[str]) -> bytes:
    """The bytes of one binary element of an unchanged file, named by its sequence path as
    URL segments (``00400275/0/7FE00010``). ReportError for a path that names no binary
    value, ChangedFileError when the file changed."""
    import pydicom

    unchanged_files([found])
    node: Any = pydicom.dcmread(found.path)
    value: Any = None
    try:
        for i, part in enumerate(segments):
            if i % 2:
                node, value = value[int(part)], None
            else:
                element = node[int(part, 16)]
                value = element.value
    except (KeyError, IndexError, ValueError):
        raise ReportError("bulk data path names no element of this instance") from None
    if not isinstance(value, bytes):
        raise ReportError("bulk data path names no binary element of this instance")
    return value
