"""Gzip of the REST service's answers, as the client's ``Accept-Encoding`` asks (RFC 9110 12.5.3).

Starlette's :class:`GZipMiddleware` gzips wherever the header holds the word ``gzip``: a client refusing it
(``gzip;q=0``, ``identity, gzip;q=0``) got gzip it had said it cannot decode, and one writing it ``GZIP`` (codings
are case-insensitive) or accepting any coding (``*``) got none. And a 304 went out without the
``Vary: Accept-Encoding`` its 200 carries: a shared cache that refreshes a stored answer's headers with a 304's
(RFC 9111 4.3.4) then served the gzipped copy to clients that had not asked for gzip.
"""

from __future__ import annotations

import re

from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware.gzip import GZipMiddleware
from starlette.types import Message, Receive, Scope, Send

__all__ = ["NegotiatedGZip", "accepts_gzip"]

QVALUE = re.compile(r"[01](\.\d{0,3})?")  # a weight, 0 to 1 (RFC 9110 12.4.2)


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an ``Accept-Encoding`` header accepts gzip: ``gzip`` (or ``x-gzip``) named with a weight above 0, or
    not named and ``*`` with a weight above 0. A weight that is none (``q=high``) counts as none given (1)."""
    weights: dict[str, float] = {}
    for part in accept_encoding.split(","):
        coding, *parameters = (p.strip() for p in part.split(";"))
        if not coding:
            continue
        weight = 1.0
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "q":
                weight = float(value) if QVALUE.fullmatch(value.strip()) else weight
        weights[coding.lower()] = max(weight, weights.get(coding.lower(), weight))
    named = [weights[c] for c in ("gzip", "x-gzip") if c in weights]
    return max(named) > 0 if named else weights.get("*", 0.0) > 0


class NegotiatedGZip(GZipMiddleware):
    """:class:`GZipMiddleware` choosing by :func:`accepts_gzip`, whose 304s say ``Vary: Accept-Encoding`` (the answer
    they stand for may be gzipped; a 304 names what its 200 varies on, RFC 9110 15.4.5). Starlette's middleware is
    handed ``Accept-Encoding: gzip`` or none, as the client's header weighs it, whatever its version does with it."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"accept-encoding"]
        if accepts_gzip(", ".join(Headers(scope=scope).getlist("accept-encoding"))):  # several lines: one list
            headers.append((b"accept-encoding", b"gzip"))

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 304:
                vary = MutableHeaders(raw=list(message.get("headers", [])))
                vary.add_vary_header("Accept-Encoding")
                message["headers"] = vary.raw
            await send(message)

        await super().__call__({**scope, "headers": headers}, receive, sending)
