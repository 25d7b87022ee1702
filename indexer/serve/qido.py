"""QIDO-RS requests: /studies, /series, /instances and their nested forms."""

from __future__ import annotations

import json

from starlette.requests import Request
from starlette.responses import Response

from ..reports.qido import parse_query, search
from .errors import answered

DICOM_JSON = "application/dicom+json"


def root_url(request: Request) -> str:
    """The DICOMweb root as this client reached it (RetrieveURL and BulkDataURI start so):
    the Host it named, with the port it connected to when that Host names none (some
    clients, dicomweb-client among them, send the host name alone)."""
    host, port = request.url.hostname or "127.0.0.1", request.url.port
    server = request.scope.get("server")
    if port is None and server:
        port = server[1]
    shown = f"[{host}]" if ":" in host else host
    return (
        f"{request.url.scheme}://{shown}:{port}/dicomweb"
        if port
        else f"{request.url.scheme}://{shown}/dicomweb"
    )


def _searcher(level: str):  # type: ignore[no-untyped-def]
    @answered
    def handle(request: Request) -> Response:
        query = parse_query(request.query_params.multi_items())
        with request.app.state.engine.connect() as conn:
            result = search(
                conn,
                level,
                query,
                root=root_url(request),
                study_uid=request.path_params.get("study"),
                series_uid=request.path_params.get("series"),
            )
        headers = {}
        if result.total > query.offset + len(result.datasets):
            more = result.total - query.offset - len(result.datasets)
            headers["Warning"] = f'299 indexer "{more} more matches: ask again with offset"'
        body = json.dumps(result.datasets, separators=(",", ":"), allow_nan=False)
        return Response(body, media_type=DICOM_JSON, headers=headers)

    handle.__name__ = f"search_{level}"
    return handle


search_studies = _searcher("studies")
search_series = _searcher("series")
search_instances = _searcher("instances")
