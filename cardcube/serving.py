"""What the HTTP commands (``serve``, the REST service; ``catalog serve``) share: running their ASGI app with
uvicorn, the bound on their store's requests, and their errors in JSON with a status a client can act on.

The address is bound before anything is announced, so a port in use or a bad host is one clear error and
the "serving on" line is printed only once requests can be answered.
"""

from __future__ import annotations

import logging
import socket
import sys
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from cardcube.errors import (
    AmbiguousDateError,
    CardcubeError,
    ClientGoneError,
    CorruptDocumentError,
    CorruptShardError,
    CubeNotFoundError,
    ParcelError,
    RequestTooLargeError,
    ServeError,
    ServiceBusyError,
    StoreError,
    StoreUnavailableError,
)

if TYPE_CHECKING:  # starlette is imported when an app is made, not by every command's parser
    from starlette.responses import JSONResponse
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

STORE_TIMEOUT = 5.0  # seconds an S3 request may take to fail, retries included (cardcube.storage.open_store)
RETRY_AFTER = 10  # seconds a client is told to wait (Retry-After) when the store is out of reach, or the service busy

# The first match gives the status: a store out of reach (a StoreError, so first); unknown parcel, version, date
# (LookupError) or cube; a request too large or a day of several acquisitions, to be told which (ValueErrors too,
# so first); a parcel that cannot be measured or a bad parameter (ValueError); a service too busy to read, a client
# gone before its request's turn (499, nginx's "client closed request": in the logs only). Headers go with a status.
_STATUS = ((CorruptDocumentError, 500), (CorruptShardError, 500), (StoreUnavailableError, 503), (StoreError, 502),
           (ServiceBusyError, 503), (ClientGoneError, 499),
           (RequestTooLargeError, 413), (AmbiguousDateError, 409), (LookupError, 404), (CubeNotFoundError, 404),
           (ValueError, 422))
_HEADERS = {503: {"Retry-After": str(RETRY_AFTER)}}


def listen(host: str, port: int) -> socket.socket:
    """A TCP socket listening on ``host:port`` (0: a free port), or :class:`ServeError` saying why not. It names
    its protocol (TCP), as the sockets asyncio makes itself do, so that asyncio turns Nagle's algorithm off on each
    connection: ``socket.create_server``'s says none (0), and every answer on a kept-alive connection, written
    as headers then body, waited some 40 ms for the client's delayed acknowledgement."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.create_server((host, port), family=family)
    except (OSError, OverflowError) as exc:
        raise ServeError(f"cannot listen on {host}:{port}: {getattr(exc, 'strerror', None) or exc}") from None
    return socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP, fileno=sock.detach())


def serve_app(app: Any, *, host: str, port: int, announce: Callable[[str], None] | None = None,
              root_path: str = "", access_log: bool = False) -> None:
    """Serve ``app`` on ``host:port`` until interrupted; ``announce`` gets its base URL once it listens.
    ``root_path`` is the path prefix a reverse proxy serves it under (``/cardcube``), for the links it writes.
    ``access_log``: a line per request on stderr, beside the errors (uvicorn's: the client's address, the
    X-Forwarded-For of a proxy that ``FORWARDED_ALLOW_IPS`` trusts, the request and the status)."""
    import uvicorn

    with listen(host, port) as sock:
        if announce is not None:
            shown = f"[{host}]" if sock.family == socket.AF_INET6 else host
            announce(f"http://{shown}:{sock.getsockname()[1]}/")
        config = uvicorn.Config(app, log_level="warning", root_path=root_path.rstrip("/"), access_log=access_log)
        if access_log:  # uvicorn's access lines are INFO, on stdout: the server's log is stderr's
            access = logging.getLogger("uvicorn.access")
            access.setLevel(logging.INFO)
            for handler in access.handlers:
                if isinstance(handler, logging.StreamHandler):
                    handler.setStream(sys.stderr)
        uvicorn.Server(config).run(sockets=[sock])


def error_response(status: int, kind: str, detail: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    """An error as every HTTP command answers it: ``{"error": <kind>, "detail": <why>}``, the detail
    :func:`shortened`."""
    from starlette.responses import JSONResponse

    return JSONResponse({"error": kind, "detail": shortened(detail)}, status_code=status, headers=headers)


MAX_DETAIL = 2000  # characters of an error's detail: its start (what was wrong) and end (what to do) beyond it


def shortened(detail: str) -> str:
    """``detail`` whole, or its start and end around a note of what was left out: the details name what was asked,
    and a URL of 100 KB (a parameter, a parcel id, a CRS) came back whole in its 422 or 404."""
    if len(detail) <= MAX_DETAIL:
        return detail
    head, tail = MAX_DETAIL * 3 // 4, MAX_DETAIL // 5
    return f"{detail[:head]} ... ({len(detail) - head - tail:,} characters left out) ... {detail[-tail:]}"


def cardcube_error_response(exc: CardcubeError, headers: Mapping[str, str] | None = None, *, where: str = ""
                            ) -> JSONResponse:
    """``exc`` answered with the status of :data:`_STATUS` (and its headers: a 503's ``Retry-After``) and
    ``headers``; a 5xx (a fault of the cube or its store, a service too busy) is logged too, with ``where`` (the
    request: ``GET /path``), for the operator, whose log held nothing of the 500s and 503s its clients got."""
    status = next((code for kind, code in _STATUS if isinstance(exc, kind)), 500)
    if status >= 500:
        logging.getLogger(__name__).warning("%s: %d %s: %s", where or "a request", status, error_kind(exc), exc)
    return error_response(status, error_kind(exc), str(exc), headers={**_HEADERS.get(status, {}), **(headers or {})})


def error_kind(exc: BaseException) -> str:
    """The ``error`` of a body (and of a command's ``--json`` error): the class name without ``Error``; a plain
    :class:`ParcelError` (a posted geometry that is no polygon, or beyond repair) is ``InvalidParcel``."""
    return "InvalidParcel" if type(exc) is ParcelError else type(exc).__name__.removesuffix("Error")


class UnexpectedErrors:
    """A bug's 500 (still JSON, with ``headers``, and logged), answered within the app's middleware: Starlette's
    handler of ``Exception`` runs outside every middleware and raises the exception on, so its 500 had no CORS
    header (a front end on another origin could not read it) and uvicorn, seeing the exception, dropped the
    connection."""

    def __init__(self, app: ASGIApp, headers: Mapping[str, str] | None = None) -> None:
        self.app, self.headers = app, headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def sending(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception as exc:
            if scope["type"] != "http" or started:  # nothing else can be answered
                raise
            logging.getLogger(__name__).exception("%s %s failed", scope["method"], scope["path"])
            await error_response(500, "Internal", f"{type(exc).__name__}: {exc}", self.headers)(scope, receive, send)
