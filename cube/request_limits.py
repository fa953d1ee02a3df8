"""Bounds on what the REST service (:mod:`cube.service`) holds at once, so that many clients at once cannot take
all the memory: a POST body's size and the time it takes to arrive, the POSTs in the service (:class:`BodyLimit`),
and the requests reading the cube (:class:`ReadSlots`); a request over a bound is a 413 or 408, or waits its turn
and then is a 503 Busy with ``Retry-After``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import anyio
from fastapi import Request
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cardcube.errors import ClientGoneError, InvalidRequestError, ServiceBusyError
from cardcube.serving import cardcube_error_response, error_response

MAX_POSTED_PARCELS = 1000  # parcels per POST: a territory is a job for ``cardcube extract``, not a request
MAX_BODY_BYTES = 32 * 2**20  # bytes of a POST body: 1,000 parcels of some 400 vertices each (JSON held ~7x in memory)
READS = 4  # requests reading the cube at once (each reads its chunks READ_THREADS at a time); the others wait
READ_WAIT = 10.0  # seconds a request waits for its turn to read before a 503 Busy
BODY_WAIT = 60.0  # seconds a request's body may take to arrive whole (32 MiB in a minute: 4.5 Mbit/s)
POSTS_PER_READ = 2  # POSTs in the service at once per turn to read: those reading, as many waiting with their bodies


def _too_large(size: str) -> str:
    return (f"a request body of {size} (limit {MAX_BODY_BYTES // 2**20} MiB, {MAX_POSTED_PARCELS} parcels): run "
            f"`cardcube extract` for a territory")


class BodyLimit:
    """A POST body over :data:`MAX_BODY_BYTES` is a 413, said by its Content-Length before it is read, or once
    that much of a body without one has arrived: the whole body was read and parsed first, whatever its size (a
    322 MB FeatureCollection of 40 parcels took 2.3 GB of memory for a minute). One not whole ``wait`` seconds
    after its first part was asked for is a 408: a client that stopped sending (or a Content-Length larger than
    what it sends) held its connection and what it had sent, up to 32 MiB, for ever (uvicorn bounds no body's
    reading). At most ``posts`` POSTs are in the service at once (their bodies parsed, some 230 MB each at the
    limit); the others wait, their bodies unread, up to ``post_wait`` seconds, then are a :class:`ServiceBusyError`
    (503, Retry-After): the read turns bounded only the answers, and 8 POSTs of 30 MiB held 2.4 GB at once, so many
    clients at once could take all the memory."""

    def __init__(self, app: ASGIApp, wait: float = BODY_WAIT, posts: int = POSTS_PER_READ * READS,
                 post_wait: float = READ_WAIT) -> None:
        self.app = app
        self.wait = wait
        self.posts, self.post_wait, self._posts = posts, post_wait, asyncio.Semaphore(posts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > MAX_BODY_BYTES:
            refusal = error_response(413, "RequestTooLarge", _too_large(f"{int(length) / 2**20:.0f} MiB"))
            return await refusal(scope, receive, send)
        if scope["method"] != "POST":
            return await self._read(scope, receive, send)
        try:
            async with asyncio.timeout(self.post_wait):  # a free place is taken at once, with a wait of 0 too
                await self._posts.acquire()
        except TimeoutError:
            busy = ServiceBusyError(f"the service holds {self.posts} posted requests, as many as it keeps at once "
                                    f"(twice --reads), and this one waited {self.post_wait:g} s before its body was "
                                    f"read: ask again later")
            return await cardcube_error_response(busy, where=f"POST {scope['path']}")(scope, receive, send)
        try:
            await self._read(scope, receive, send)
        finally:
            self._posts.release()

    async def _read(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The request answered, its body read within the limits of size and time."""
        received, deadline, whole = 0, None, False

        async def receiving() -> Message:
            nonlocal received, deadline, whole
            if whole:  # the body is in: what follows is the wait for a disconnect, for as long as the answer takes
                return await receive()
            deadline = deadline if deadline is not None else anyio.current_time() + self.wait
            with anyio.move_on_after(max(deadline - anyio.current_time(), 0)) as waited:
                message = await receive()
            if waited.cancelled_caught:
                raise HTTPException(408, f"the request body was not whole within {self.wait:g} s (it had "
                                         f"{received:,} bytes): send it at once, and no Content-Length beyond it")
            whole = message["type"] != "http.request" or not message.get("more_body", False)
            received += len(message.get("body", b""))
            if received > MAX_BODY_BYTES:
                raise HTTPException(413, _too_large(f"over {MAX_BODY_BYTES // 2**20} MiB"))
            return message

        await self.app(scope, receiving, send)


class ReadSlots:
    """A dependency of the routes that read the cube: at most ``size`` of their requests read at once; the others
    wait their turn on the event loop (holding none of the threads the routes run in) up to ``wait`` seconds, then
    are a :class:`ServiceBusyError` (503, Retry-After); one whose client has gone meanwhile reads nothing. Each
    request was bounded, not their number: 20 POSTs of 41,000 rows held 2.3 GB at once, and requests whose clients
    had given up on a slow store kept every thread, so that the routes reading nothing did not answer either."""

    def __init__(self, size: int, wait: float) -> None:
        if size < 1:
            raise InvalidRequestError(f"reads={size}: at least one request must be able to read the cube")
        self.size, self.wait, self._free = size, wait, asyncio.Semaphore(size)

    @contextlib.asynccontextmanager
    async def turn(self, request: Request) -> AsyncIterator[None]:
        """The request's turn to read, for the ``async with`` block."""
        free = self._free
        try:
            async with asyncio.timeout(self.wait):  # a free turn is taken at once, with a wait of 0 too
                await free.acquire()
        except TimeoutError:
            raise ServiceBusyError(f"the service is reading the cube for {self.size} other requests, as many as it "
                                   f"reads for at once, and this one waited {self.wait:g} s for its turn: ask again "
                                   f"later") from None
        try:
            if await request.is_disconnected():
                raise ClientGoneError("the client closed the connection while its request waited its turn")
            yield
        finally:
            free.release()
