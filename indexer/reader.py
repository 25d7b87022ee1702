"""Read one DICOM file from disk and hand its bytes to the walker.

What needs the file rather than its bytes is here: opening it without blocking,
reading a small file in one call or memory-mapping a large one (only the pages
that hold element headers are then touched), the 128-byte preamble and "DICM",
the File Meta Information group, the choice of the data set's transfer syntax,
and inflating a deflated data set. ``walker.py`` turns the bytes into records.
"""

from __future__ import annotations

import mmap
import os
import stat
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import DicomReadError, NotDicomError, Reason
from .records import DEFAULT_VALUE_LIMIT, ITEM, META, UNDEFINED, FileRecord
from .walker import (
    EXPLICIT_BE,
    EXPLICIT_BIG,
    EXPLICIT_LE,
    IMPLICIT_LE,
    IMPLICIT_LITTLE,
    MAX_WARNINGS,
    VRS,
    Stop,
    Syntax,
    Walked,
    walk_data_set,
    walk_meta_group,
)

if TYPE_CHECKING:
    from .walker import Buffer

MAP_THRESHOLD = 64 * 1024  # smaller files are read with one read() call, larger ones mapped

DEFLATED = "1.2.840.10008.1.2.1.99"


@dataclass(slots=True)
class LoadedFile:
    """A file's bytes as :func:`read_file` would load them, read ahead (see prefetch.py).

    ``held`` is the number of bytes held in memory (0 for a mapped file, whose pages
    stay in the page cache). Close it if it is never passed to :func:`read_file`.
    """

    path: str
    buf: Buffer | None
    mapped: mmap.mmap | None
    error: DicomReadError | None
    held: int

    def close(self) -> None:
        if self.mapped is not None:
            self.mapped.close()
            self.mapped = None
        self.buf = None


def load_file(path: str | os.PathLike[str]) -> LoadedFile:
    """Open and load `path` as read_file does (read when small, mapped when large), now.

    A mapped file has its first page touched, since the reader reads it first;
    nothing else of it is read. Never raises for a file that cannot be read: the
    error is kept and raised by read_file.
    """
    name = os.fsdecode(path)
    try:
        buf, mapped = _load(name)
    except DicomReadError as err:
        return LoadedFile(name, None, None, err, 0)
    if mapped is not None:
        if len(mapped):
            mapped[0]  # the page with the preamble and the meta header, read now
        return LoadedFile(name, buf, mapped, None, 0)
    return LoadedFile(name, buf, None, None, len(buf))


def read_file(
    path: str | os.PathLike[str],
    *,
    value_limit: int = DEFAULT_VALUE_LIMIT,
    loaded: LoadedFile | None = None,
) -> FileRecord:
    """Read one file and return a record for each of its elements, items included.

    Parameters
    ----------
    path:
        The file. Its name does not matter: DICOM is recognised by content.
    value_limit:
        Characters of value text kept per element; longer values are cut and flagged ``CUT``.
    loaded:
        The file's bytes from :func:`load_file` (read ahead); closed by this call.

    Returns
    -------
    FileRecord
        The elements in file order (meta group first, flagged ``META``) with the reference
        walker's figures. When reading stopped early (truncated file, invalid structure),
        ``problem`` says why and where, ``problem_reason`` is ``TRUNCATED`` or ``INVALID``,
        and the elements read before that point are kept.

    Raises
    ------
    NotDicomError
        The file is empty, or neither a DICOM file nor a bare DICOM data set.
    DicomReadError
        The file cannot be opened or read, or its meta header is broken.
    """
    name = os.fsdecode(path)
    if loaded is None:
        buf, mapped = _load(name)
    elif loaded.error is not None:
        raise loaded.error
    else:
        buf = loaded.buf if loaded.buf is not None else b""
        mapped = loaded.mapped
        loaded.buf = loaded.mapped = None
    try:
        return _read_buffer(name, buf, value_limit)
    finally:
        if mapped is not None:
            mapped.close()


def _load(path: str) -> tuple[Buffer, mmap.mmap | None]:
    """Return the file's bytes (read, or mapped when large) and the map to close."""
    try:
        # Non-blocking open and a type check: a path that became a FIFO or a device after the
        # crawl saw it must not block or be read for ever.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
        st = os.fstat(fd)  # one call: on a network share each may be a round trip
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise DicomReadError(path, Reason.UNREADABLE, "not a regular file")
        with os.fdopen(fd, "rb") as fh:
            size = st.st_size
            if size > MAP_THRESHOLD:
                mapped = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
                mapped.madvise(mmap.MADV_RANDOM)
                return mapped, mapped
            return fh.read(), None
    except IsADirectoryError as err:
        raise DicomReadError(path, Reason.UNREADABLE, "is a directory") from err
    except OSError as err:
        raise DicomReadError(
            path, Reason.UNREADABLE, f"cannot read: {err.strerror or err}"
        ) from err


def _read_buffer(name: str, buf: Buffer, value_limit: int) -> FileRecord:
    size = len(buf)
    if size == 0:
        raise NotDicomError(name, Reason.EMPTY, "empty file")
    preamble = size >= 132 and buf[128:132] == b"DICM"
    start = 132 if preamble else 4 if buf[:4] == b"DICM" else 0
    meta = Walked([], start, [], 0, 0, 0)  # no meta group
    if preamble or start == 4 or buf[:2] == b"\x02\x00":
        meta = _meta_group(name, buf, start, value_limit)
    pos = meta.end
    has_meta = pos > start
    if not has_meta and not preamble and _plausible_start(buf, pos, size) is None:
        raise NotDicomError(
            name,
            Reason.NOT_DICOM,
            "not DICOM: no 'DICM' marker at byte 128 and no data set at byte 0",
        )
    transfer_syntax = _transfer_syntax(meta)
    deflated = transfer_syntax == DEFLATED
    if deflated:
        buf, pos = _inflate(name, buf, pos), 0
    warnings = list(meta.warnings)
    syntax = _data_set_syntax(buf, pos, transfer_syntax, has_meta, warnings)
    if pos >= len(buf):
        data = Walked(
            [], pos, [], 0, 0, 0, "no data set after the File Meta Information", pos, Reason.INVALID
        )
    else:
        data = walk_data_set(buf, pos, syntax, value_limit)
    records = meta.records + data.records
    count = 0
    for record in records:
        if not record.flags & (META | ITEM):
            count += 1
    if start == 0 and not has_meta and count == 0 and data.problem is not None:
        raise NotDicomError(name, Reason.NOT_DICOM, f"not DICOM: {data.problem}")
    return FileRecord(
        path=name,
        size=size,
        preamble=preamble,
        has_meta=has_meta,
        transfer_syntax=transfer_syntax,
        explicit_vr=syntax.explicit,
        little_endian=syntax.little,
        deflated=deflated,
        elements=records,
        element_count=count,
        max_depth=max(meta.max_depth, data.max_depth),
        fragment_sequences=meta.fragment_sequences + data.fragment_sequences,
        fragments=meta.fragments + data.fragments,
        problem=data.problem,
        problem_offset=data.problem_offset,
        problem_reason=data.problem_reason,
        warnings=_bounded(warnings + data.warnings, meta.dropped_warnings + data.dropped_warnings),
    )


def _bounded(warnings: list[str], dropped: int) -> list[str]:
    """At most MAX_WARNINGS warnings, then one that counts the rest: one odd file must not
    write thousands of rows."""
    dropped += max(0, len(warnings) - MAX_WARNINGS)
    if not dropped:
        return warnings
    kept = warnings[:MAX_WARNINGS]
    kept.append(f"{dropped} more warnings not recorded (at most {MAX_WARNINGS} per file)")
    return kept


def _meta_group(name: str, buf: Buffer, start: int, value_limit: int) -> Walked:
    """The File Meta Information group from `start`, up to where it ends."""
    try:
        meta = walk_meta_group(buf, start, value_limit)
    except Stop as stop:
        raise DicomReadError(
            name, Reason.INVALID, f"broken File Meta Information: {stop.message}"
        ) from None
    records = meta.records
    first = records[0] if records else None
    if first is not None and first.tag == 0x00020000 and first.number is not None:
        header_end = first.offset + 8 + first.length + int(first.number)
        if header_end < meta.end and any(r.offset == header_end for r in records):
            # A second group 0002 follows the meta header (fo-dicom GH1376): the group
            # length says where the header ends; the rest are stray data set elements.
            del records[next(i for i, r in enumerate(records) if r.offset == header_end) :]
            return meta._replace(end=header_end)
    return meta


def _transfer_syntax(meta: Walked) -> str | None:
    """(0002,0010) Transfer Syntax UID of the meta group (the last one, if repeated)."""
    transfer_syntax = None
    for record in meta.records:
        if record.tag == 0x00020010 and record.value:
            transfer_syntax = record.value.strip()
    return transfer_syntax


def _inflate(name: str, buf: Buffer, pos: int) -> bytes:
    try:
        return zlib.decompress(buf[pos:], -15)
    except zlib.error as err:
        raise DicomReadError(
            name, Reason.INVALID, f"deflated data set cannot be inflated: {err}"
        ) from None


def _data_set_syntax(
    buf: Buffer, pos: int, transfer_syntax: str | None, has_meta: bool, warnings: list[str]
) -> Syntax:
    """How the data set at `pos` is encoded: as the meta header says, or as its bytes show."""
    size = len(buf)
    if transfer_syntax is not None:
        syntax = _syntax_for(transfer_syntax)
    else:
        syntax = _plausible_start(buf, pos, size) or EXPLICIT_LE
        if has_meta and pos + 8 <= size:
            # The meta header forgot to say: explicit VR shows as two VR letters after the tag.
            syntax = EXPLICIT_LE if buf[pos + 4 : pos + 6] in VRS else IMPLICIT_LE
        if has_meta and pos < size and syntax is not EXPLICIT_LE:
            warnings.append(
                f"no Transfer Syntax UID in the meta header; data set read as {syntax.name}"
            )
    # A data set whose encoding disagrees with its meta header (explicit VR declared, implicit
    # written).
    if pos + 8 <= size and syntax.explicit and buf[pos + 4 : pos + 6] not in VRS:
        guess = _plausible_start(buf, pos, size)
        if guess is not None and not guess.explicit:
            warnings.append(
                "meta header declares explicit VR but the data set is implicit VR; "
                "read as implicit VR"
            )
            syntax = guess
    return syntax


def _plausible_start(buf: Buffer, pos: int, size: int) -> Syntax | None:
    """Guess the encoding of a data set that starts at `pos` without a meta header to say it.

    Only data sets that begin with a command, meta or identifying group element are accepted,
    which is what DCMTK and old ACR-NEMA writers produce; anything else is not DICOM.
    """
    if size - pos < 8:
        return None
    for syntax in (EXPLICIT_LE, IMPLICIT_LE, EXPLICIT_BE):
        group, element = syntax.tag(buf, pos)
        if group not in (0x0000, 0x0002, 0x0008):
            continue
        if syntax.explicit:
            if buf[pos + 4 : pos + 6] in VRS:
                return syntax
        else:
            length = syntax.u32(buf, pos + 4)[0]
            if element == 0 and length != 4:
                continue  # a group length is a 4-byte UL; this also turns away zero-filled files
            if length != UNDEFINED and pos + 8 + length <= size:
                return syntax
    return None


def _syntax_for(uid: str) -> Syntax:
    if uid == IMPLICIT_LITTLE:
        return IMPLICIT_LE
    if uid == EXPLICIT_BIG:
        return EXPLICIT_BE
    return EXPLICIT_LE
