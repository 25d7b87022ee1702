"""The DICOMweb ASGI application over an open index, and the uvicorn server that runs it.

Safe by default: the index opened read-only (backends.read_only), 127.0.0.1 unless told
otherwise, an optional bearer token, and an access log of method, path and status only:
QIDO query strings carry patient names and IDs, so they are never logged.
"""

from __future__ import annotations

import hmac
import logging
import socket
import time
from collections.abc import Callable, MutableMapping
from typing import Any

from sqlalchemy import Engine
from starlette.applications import Starlette
from starlette.routing import Route

from .errors import error_response
from .metadata import retrieve_metadata
from .qido import search_instances, search_series, search_studies
from .retrieve import retrieve_bulk, retrieve_instances

access_log = logging.getLogger("indexer.serve.access")

_STUDY = "/dicomweb/studies/{study}"
_SERIES = _STUDY + "/series/{series}"
_INSTANCE = _SERIES + "/instances/{instance}"
ROUTES = [
    Route("/dicomweb/studies", search_studies),
    Route("/dicomweb/series", search_series),
    Route("/dicomweb/instances", search_instances),
    Route(_STUDY + "/series", search_series),
    Route(_STUDY + "/instances", search_instances),
    Route(_SERIES + "/instances", search_instances),
    Route(_STUDY + "/metadata", retrieve_metadata),
    Route(_SERIES + "/metadata", retrieve_metadata),
    Route(_INSTANCE + "/metadata", retrieve_metadata),
    Route(_STUDY, retrieve_instances),
    Route(_SERIES, retrieve_instances),
    Route(_INSTANCE, retrieve_instances),
    Route(_INSTANCE + "/bulk/{path:path}", retrieve_bulk),
]

Scope = dict[str, Any]
ASGIApp = Callable[..., Any]


class Guard:
    """ASGI middleware: the bearer token check, then one access-log line per request
    (method, path without the query string, status, milliseconds)."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token.encode() if token else None

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [0]

        async def sending(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        if self.token is not None and not self._authorized(scope):
            answer = error_response(401, "a bearer token is required (Authorization header)")
            answer.headers["WWW-Authenticate"] = 'Bearer realm="dicomweb"'
            await answer(scope, receive, sending)
        else:
            await self.app(scope, receive, sending)
        ms = (time.perf_counter() - started) * 1000
        access_log.info("%s %s %d %.1f ms", scope["method"], scope["path"], status[0], ms)

    def _authorized(self, scope: Scope) -> bool:
        for name, value in scope["headers"]:
            if name == b"authorization" and value[:7].lower() == b"bearer ":
                return hmac.compare_digest(value[7:].strip(), self.token or b"")
        return False


def create_app(engine: Engine, *, token: str | None = None) -> ASGIApp:
    """The DICOMweb application (root /dicomweb) over `engine`, which should be read-only
    (backends.read_only.make_read_only). `token`: the bearer token every request must carry."""
    app = Starlette(routes=ROUTES)
    app.state.engine = engine
    return Guard(app, token)


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0: a free one, see getsockname())."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # Named TCP, so asyncio sets TCP_NODELAY on each connection it accepts (it checks the
    # protocol number): otherwise a kept-alive client waits some 40 ms per response, its
    # delayed ACK meeting Nagle's algorithm between the header and body writes.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    return sock


def root_of(sock: socket.socket) -> str:
    """The DICOMweb root URL of a bound socket."""
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/dicomweb"


def run(app: ASGIApp, sock: socket.socket) -> None:
    """Serve `app` on `sock` until SIGINT or SIGTERM (uvicorn's graceful shutdown)."""
    import uvicorn

    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    uvicorn.Server(config).run(sockets=[sock])


def serve_index(
    db: str | None, *, host: str, port: int, token: str | None, on_ready: Callable[[str], None]
) -> None:
    """Serve the index `db` read-only over DICOMweb on host:port until SIGINT or SIGTERM.

    `on_ready` hears the DICOMweb root URL once the socket listens (port 0: the port picked).
    Raises IndexerError when the index cannot be opened or the port cannot be bound.
    """
    from ..backends.read_only import make_read_only
    from ..db import open_index
    from ..errors import IndexerError

    engine = make_read_only(open_index(db, create=False))
    try:
        sock = bind(host, port)
    except OSError as err:
        raise IndexerError(f"cannot listen on {host}:{port}: {err.strerror}") from None
    on_ready(root_of(sock))
    try:
        run(create_app(engine, token=token), sock)
    finally:
        engine.dispose()
