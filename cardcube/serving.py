"""Running an ASGI app (the REST service, the catalog server) with uvicorn, for the ``serve`` commands.

The address is bound before anything is announced, so a port in use or a bad host is one clear error and
the "serving on" line is printed only once requests can be answered.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

from cardcube.errors import ServeError


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
              root_path: str = "") -> None:
    """Serve ``app`` on ``host:port`` until interrupted; ``announce`` gets its base URL once it listens.
    ``root_path`` is the path prefix a reverse proxy serves it under (``/cardcube``), for the links it writes."""
    import uvicorn

    with listen(host, port) as sock:
        if announce is not None:
            shown = f"[{host}]" if sock.family == socket.AF_INET6 else host
            announce(f"http://{shown}:{sock.getsockname()[1]}/")
        uvicorn.Server(uvicorn.Config(app, log_level="warning", root_path=root_path.rstrip("/"))).run(sockets=[sock])
