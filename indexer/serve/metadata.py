"""WADO-RS metadata: DICOM JSON of a study, series or instance, rebuilt from the index."""

from __future__ import annotations

import json
import re

from starlette.requests import Request
from starlette.responses import Response

from ..reports.dicom_json import BulkURI
from ..reports.wado import IndexedFile, instance_files, metadata
from .errors import answered
from .qido import DICOM_JSON, root_url

_COMPONENT = re.compile(r"\(([0-9A-F]{4}),([0-9A-F]{4})\)(?:\[(\d+)\])?")


def instance_url(root: str, found: IndexedFile) -> str:
    return (
        f"{root}/studies/{found.study_uid}/series/{found.series_uid}"
        f"/instances/{found.sop_instance_uid}"
    )


def bulk_segments(path: str) -> str:
    """A sequence path as URL segments: (0040,0275)[0].(7FE0,0010) -> 00400275/0/7FE00010."""
    parts = []
    for group, element, item in _COMPONENT.findall(path):
        parts.append(group + element)
        if item:
            parts.append(item)
    return "/".join(parts)


@answered
def retrieve_metadata(request: Request) -> Response:
    root = root_url(request)

    def bulk_uri(found: IndexedFile) -> BulkURI:
        base = instance_url(root, found) + "/bulk/"
        return lambda path: base + bulk_segments(path)

    params = request.path_params
    with request.app.state.engine.connect() as conn:
        found = instance_files(conn, params["study"], params.get("series"), params.get("instance"))
        datasets = metadata(conn, found, bulk_uri)
    body = json.dumps(datasets, separators=(",", ":"), allow_nan=False)
    return Response(body, media_type=DICOM_JSON)
