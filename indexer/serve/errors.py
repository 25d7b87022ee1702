"""Library errors as DICOMweb answers: a status code and one line, never a traceback."""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import wraps

from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import Request
from starlette.responses import Response

from ..errors import IndexerError, ReportError
from ..reports.wado import ChangedFileError, NotFoundError

log = logging.getLogger("indexer.serve")

Handler = Callable[[Request], Response]


def error_response(status: int, message: str) -> Response:
    """A DICOMweb error (PS3.18 8.6.3): the status, a Warning header and the line as text."""
    line = " ".join(message.split())
    header = line.replace('"', "'").encode("ascii", "replace").decode("ascii")
    return Response(
        line + "\n",
        status_code=status,
        media_type="text/plain",
        headers={"Warning": f'299 indexer "{header}"'},
    )


def answered(handler: Handler) -> Handler:
    """`handler`, with the errors a request can cause turned into 400, 404, 409 or 503."""

    @wraps(handler)
    def run(request: Request) -> Response:
        try:
            return handler(request)
        except NotFoundError as err:
            return error_response(404, str(err))
        except ChangedFileError as err:
            return error_response(409, str(err))
        except (ReportError, ValueError) as err:
            return error_response(400, str(err))
        except IndexerError as err:
            return error_response(400, str(err))
        except SQLAlchemyError as err:
            log.error("database error: %s", type(err).__name__)
            return error_response(503, "the index cannot be read now; try again later")
        except Exception as err:  # noqa: BLE001 - the client gets a line, the log the type
            log.error("error in %s: %s", handler.__name__, type(err).__name__)
            return error_response(500, "internal error")

    return run
