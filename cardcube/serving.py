"""Running an ASGI app (the REST service, the catalog server) with uvicorn, for the ``serve`` commands.

The address is bound before anything is announced, so a port in use or a bad host is one clear error and
the "serving on" line is printed only once requests can be answered.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

from cardcube.errors import ServeError


def serve_app(app: Any, *, host: str, port: int, announce: Callable[[str], None] | None = None,
              root_path: str = "") -> None:
    """Serve ``app`` on ``host:port`` until interrupted; ``announce`` gets its base URL once it listens.
    ``root_path`` is the path prefix a reverse proxy serves it under (``/cardcube``), for the links it writes."""
    import uvicorn

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.create_server((host, port), family=family)
    except (OSError, OverflowError) as exc:
        raise ServeError(f"cannot listen on {host}:{port}: {getattr(exc, 'strerror', None) or exc}") from None
    with sock:
        if announce is not None:
            shown = f"[{host}]" if family == socket.AF_INET6 else host
            announce(f"http://{shown}:{sock.getsockname()[1]}/")
        uvicorn.Server(uvicorn.Config(app, log_level="warning", root_path=root_path.rstrip("/"))).run(sockets=[sock])
