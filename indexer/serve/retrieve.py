"""WADO-RS retrieve: instances, series and studies as multipart/related application/dicom,
streamed from the indexed files; bulk data of one element."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from ..reports.wado import IndexedFile, instance_files, read_bulk_value, unchanged_files
from .errors import answered, log

_CHUNK = 1 << 20


def _parts(found: list[IndexedFile], boundary: str) -> Iterator[bytes]:
    head = f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode("ascii")
    for f in found:
        try:
            with open(f.path, "rb") as fh:
                st = os.fstat(fh.fileno())
                if st.st_size != f.size or st.st_mtime_ns != f.mtime_ns:
                    raise OSError("changed since the check")
                yield head
                while chunk := fh.read(_CHUNK):
                    yield chunk
                yield b"\r\n"
        except OSError:
            # Changed or gone after the check: the answer ends without its closing boundary,
            # so the client sees it incomplete; the log names no path.
            log.warning("retrieve stopped: a file changed or vanished while it was sent")
            return
    yield f"--{boundary}--\r\n".encode("ascii")


@answered
def retrieve_instances(request: Request) -> Response:
    params = request.path_params
    with request.app.state.engine.connect() as conn:
        found = instance_files(conn, params["study"], params.get("series"), params.get("instance"))
    unchanged_files(found)
    boundary = secrets.token_hex(16)
    media = f'multipart/related; type="application/dicom"; boundary={boundary}'
    return StreamingResponse(_parts(found, boundary), headers={"Content-Type": media})


@answered
def retrieve_bulk(request: Request) -> Response:
    params = request.path_params
    with request.app.state.engine.connect() as conn:
        (found,) = instance_files(conn, params["study"], params["series"], params["instance"])[:1]
    value = read_bulk_value(found, params["path"].split("/"))
    boundary = secrets.token_hex(16)
    body = (
        f"--{boundary}\r\nContent-Type: application/octet-stream\r\n\r\n".encode("ascii")
        + value
        + f"\r\n--{boundary}--\r\n".encode("ascii")
    )
    media = f'multipart/related; type="application/octet-stream"; boundary={boundary}'
    return Response(body, headers={"Content-Type": media})
