"""A loopback HTTP reverse proxy in front of an S3 server: latency, bandwidth cap, faults, counters.

Tests and benchmarks point s3fs/boto3 at :attr:`S3Proxy.endpoint_url` instead of the server's. The
proxy forwards every request unchanged — method, raw path and query, headers including ``Host`` (so
SigV4 signatures made for the proxy's address still verify upstream), and body bytes (no
decompression either way) — and on the way:

* waits ``latency_s`` before forwarding each request (a round trip to a remote object store);
* streams response bodies at most at ``bandwidth_bps`` per response (and request bodies at most at
  ``upload_bps``): a per-connection cap, as S3 has, so parallel requests add up;
* injects S3 errors instead of forwarding: :meth:`S3Proxy.fail_next` (the next ``n`` matching
  requests) or :meth:`S3Proxy.fail_randomly` (a seeded probability). The body is a proper S3
  ``<Error>`` document (``SlowDown``/503, ``InternalError``/500), so botocore and s3fs treat it as
  retryable exactly as they would treat AWS; or after forwarding them (``fail_next(answer_lost=True)``): the
  write done, its answer lost;
* refuses chosen keys of multi-object deletes as S3 does, with an error per key in an HTTP 200 answer
  (:meth:`S3Proxy.refuse_deletes`): a bucket policy or Object Lock, or a transient fault of some keys;
* holds back matching requests until told to let them go (:meth:`S3Proxy.hold`): a write that is slow to land;
* cuts answers short (:meth:`S3Proxy.cut_next`): the status and headers forwarded, ``Content-Length`` the whole
  body's, then part of the body and the connection closed (a gateway reset mid-answer, a body truncated);
* answers 404 ``NoSuchKey`` for objects that exist (:meth:`S3Proxy.hide_next`): read-after-write lag;
* leaves objects out of listings (:meth:`S3Proxy.unlist`): a listing that lags behind the writes;
* treats conditional writes (``If-None-Match``, ``If-Match``) as a store without them does
  (:meth:`S3Proxy.conditional_writes`): ignored (the header stripped) or refused (501 ``NotImplemented``);
* lists at most ``max_keys`` keys a page (:class:`ProxyConfig`), so that a listing takes several pages;
* counts requests by kind (GET, HEAD, PUT, POST, DELETE, LIST = GET on a bucket), body bytes each
  way and the most requests waiting for their answer at once, as seen on the wire (server side), in :class:`ProxyStats`.

It runs an aiohttp server on ``127.0.0.1`` in a daemon thread with its own event loop; configuration
changes take effect on the next request.
"""

from __future__ import annotations

import asyncio
import random
import re
import ssl
import threading
import time
import xml.etree.ElementTree as ET
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from xml.sax.saxutils import escape

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from cardcube.testing.s3server import s3_client, s3fs_options

__all__ = ["KINDS", "Fault", "ProxyConfig", "ProxyStats", "Requests", "S3Proxy", "start_s3_proxy"]

KINDS = ("GET", "HEAD", "PUT", "POST", "DELETE", "LIST", "OTHER")
_HOP_BY_HOP = frozenset(
    h.lower()
    for h in ("Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "TE", "Trailer",
              "Transfer-Encoding", "Upgrade", "Expect", "Content-Length")
)
# Bucket-level GETs that read a setting rather than list objects (``?versions``/``?uploads`` are lists).
_BUCKET_SETTINGS = frozenset(
    ("acl", "location", "policy", "policyStatus", "versioning", "tagging", "cors", "lifecycle", "website",
     "logging", "notification", "encryption", "replication", "requestPayment", "ownershipControls",
     "publicAccessBlock", "object-lock", "accelerate", "analytics", "inventory", "metrics", "intelligent-tiering")
)
_MESSAGES = {
    "SlowDown": "Please reduce your request rate.",
    "InternalError": "We encountered an internal error. Please try again.",
    "ServiceUnavailable": "Service is unable to handle request.",
    "NoSuchKey": "The specified key does not exist.",
    "NotImplemented": "A header you provided implies functionality that is not implemented.",
}
_CONDITIONS = ("if-none-match", "if-match")
_CHUNK = 64 * 1024
_SHUTDOWN_S = 1.0  # stop() cuts requests still in flight after this long


@dataclass(frozen=True)
class ProxyConfig:
    """What the proxy adds to each request; ``None`` bandwidths mean unlimited."""

    latency_s: float = 0.0
    bandwidth_bps: float | None = None
    upload_bps: float | None = None
    max_keys: int | None = None  # a LIST's most keys a page (S3's is 1,000), whatever the client asks


@dataclass(frozen=True)
class Requests:
    """The requests a fault or a hold applies to: of ``methods`` (kinds as in :data:`KINDS`; all if None) whose
    path holds ``path_contains``."""

    methods: frozenset[str] | None = None
    path_contains: str = ""

    def matches(self, kind: str, path: str) -> bool:
        return (self.methods is None or kind in self.methods) and self.path_contains in path


@dataclass(frozen=True)
class Fault:
    """An injected S3 error: HTTP ``status`` with S3 error ``code``, for the ``requests`` it applies to.
    ``answer_lost``: the request reaches the server all the same, and the error replaces its answer (a gateway's
    500, or a connection cut, after the store did the write)."""

    status: int = 503
    code: str = "SlowDown"
    requests: Requests = Requests()
    answer_lost: bool = False
    cut: float | None = None  # forwarded, and its body cut after this share of its bytes (no error status)

    def body(self, request_id: str) -> bytes:
        message = _MESSAGES.get(self.code, "Injected by cardcube.testing.s3proxy.")
        return (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{escape(self.code)}</Code><Message>{escape(message)}</Message>"
            f"<RequestId>{request_id}</RequestId><HostId>cardcube-s3proxy</HostId></Error>"
        ).encode()


@dataclass(frozen=True)
class ProxyStats:
    """Request counts by kind (injected faults included), faults, statuses and body bytes each way."""

    requests: Mapping[str, int] = field(default_factory=dict)
    statuses: Mapping[int, int] = field(default_factory=dict)
    faults: int = 0
    request_bytes: int = 0
    response_bytes: int = 0
    peak_in_flight: int = 0  # most requests waiting for their answer at once since the last reset (concurrency)

    def count(self, kind: str) -> int:
        return self.requests.get(kind.upper(), 0)

    get = property(lambda self: self.count("GET"))
    head = property(lambda self: self.count("HEAD"))
    put = property(lambda self: self.count("PUT"))
    post = property(lambda self: self.count("POST"))
    delete = property(lambda self: self.count("DELETE"))
    list = property(lambda self: self.count("LIST"))

    @property
    def total(self) -> int:
        return sum(self.requests.values())

    def __sub__(self, other: ProxyStats) -> ProxyStats:
        """The traffic between two snapshots (``after - before``)."""
        return ProxyStats(
            requests=_diff(self.requests, other.requests),
            statuses=_diff(self.statuses, other.statuses),
            faults=self.faults - other.faults,
            request_bytes=self.request_bytes - other.request_bytes,
            response_bytes=self.response_bytes - other.response_bytes,
            peak_in_flight=self.peak_in_flight,
        )


def _diff(a: Mapping, b: Mapping) -> dict:
    return {k: a.get(k, 0) - b.get(k, 0) for k in a.keys() | b.keys() if a.get(k, 0) != b.get(k, 0)}


def classify(method: str, path: str, query: Iterable[str]) -> str:
    """The counter a request goes to: its method, or LIST for a GET on a bucket (or on the service), OTHER for
    another method on the service itself (no S3 operation: ``open_store``'s check that the endpoint answers)."""
    method = method.upper()
    if method != "GET" and not path.strip("/"):
        return "OTHER"
    if method == "GET":
        _, _, key = path.lstrip("/").partition("/")
        if not key and not (set(query) & _BUCKET_SETTINGS):
            return "LIST"
    return method if method in KINDS else "OTHER"


class S3Proxy:
    """A running (or startable) proxy to ``upstream_url``; see the module docstring.

    Use :func:`start_s3_proxy`, or ``with S3Proxy(url) as proxy:``.
    """

    def __init__(self, upstream_url: str, *, config: ProxyConfig | None = None,
                 tls: ssl.SSLContext | None = None) -> None:
        self.upstream_url = upstream_url.rstrip("/")
        self._config = config or ProxyConfig()
        self._tls = tls  # serve HTTPS with it (cardcube.testing.tls), an endpoint behind TLS
        self._lock = threading.Lock()
        self._pending: deque[Fault] = deque()
        self._random: tuple[float, Fault, random.Random] | None = None
        self._requests: Counter[str] = Counter()
        self._statuses: Counter[int] = Counter()
        self._faults = self._request_bytes = self._response_bytes = 0
        self._in_flight = self._peak_in_flight = 0
        self._seq = 0
        self._hold: tuple[Requests, asyncio.Event] | None = None
        self._refusal: tuple[str, str, int | None] | None = None  # refuse_deletes: key part, code, times left
        self._conditions = "honoured"  # conditional_writes
        self._unlisted: tuple[str, int] | None = None  # unlist: key part, listings left
        self.refused: list[str] = []  # the keys of deletes refused so far
        self._held = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.port = 0
        self._listen_port = 0

    # --- lifecycle -------------------------------------------------------------------------------
    @property
    def endpoint_url(self) -> str:
        if not self.port:
            raise RuntimeError("the proxy is not running: call start() first")
        return f"{'https' if self._tls else 'http'}://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 10.0, *, port: int = 0) -> S3Proxy:
        """Listen on loopback ``port`` (0: a free one), serving from a daemon thread; returns ``self``. A proxy
        stopped and started again on its old port is a store that went away and came back, at its address."""
        if self._thread is not None:
            raise RuntimeError("the proxy is already started")
        self._listen_port = port
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        errors: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, args=(ready, errors), daemon=True, name="s3proxy")
        self._thread.start()
        if not ready.wait(timeout_s):
            raise TimeoutError(f"the S3 proxy did not start within {timeout_s} s")
        if errors:
            raise RuntimeError("the S3 proxy failed to start") from errors[0]
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop serving, close connections and join the thread (idempotent)."""
        if self._thread is None or self._loop is None:
            return
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout_s)
        self._thread = None
        self.port = 0

    def __enter__(self) -> S3Proxy:
        return self if self._thread is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self, ready: threading.Event, errors: list[BaseException]) -> None:
        loop = self._loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._startup())
        except BaseException as exc:  # reported to start()
            errors.append(exc)
            ready.set()
            loop.close()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self._shutdown())
            _cancel_remaining(loop)
            loop.close()

    async def _startup(self) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, force_close=False),
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=120),
        )
        app = web.Application(client_max_size=6 * 2**30)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(
            app, auto_decompress=False, access_log=None, handle_signals=False, shutdown_timeout=_SHUTDOWN_S
        )
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self._listen_port, ssl_context=self._tls).start()
        self.port = self._runner.addresses[0][1]

    async def _shutdown(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    # --- configuration ---------------------------------------------------------------------------
    @property
    def config(self) -> ProxyConfig:
        return self._config

    def configure(self, **changes: Any) -> ProxyConfig:
        """Change ``latency_s``, ``bandwidth_bps`` or ``upload_bps`` for the next requests."""
        with self._lock:
            self._config = replace(self._config, **changes)
            return self._config

    def storage_options(self, **kwargs: Any) -> dict[str, Any]:
        """s3fs options that send traffic through this proxy; see :func:`~.s3server.s3fs_options`."""
        return s3fs_options(self.endpoint_url, **kwargs)

    # --- faults ----------------------------------------------------------------------------------
    def fail_next(
        self, n: int = 1, *, status: int = 503, code: str = "SlowDown", methods: Iterable[str] | None = None,
        path_contains: str = "", answer_lost: bool = False,
    ) -> None:
        """Answer the next ``n`` requests of ``methods`` (kinds as in :data:`KINDS`; all if None) whose path holds
        ``path_contains`` with an error; ``answer_lost``: after forwarding them (:class:`Fault`)."""
        fault = Fault(status, code, Requests(_kinds(methods), path_contains), answer_lost)
        with self._lock:
            self._pending.extend([fault] * n)

    def fail_randomly(
        self,
        probability: float,
        *,
        status: int = 503,
        code: str = "SlowDown",
        methods: Iterable[str] | None = None,
        seed: int = 0,
        path_contains: str = "",
    ) -> None:
        """Answer each request of ``methods`` (whose path holds ``path_contains``) with an error with ``probability``
        (seeded, reproducible)."""
        with self._lock:
            self._random = (probability, Fault(status, code, Requests(_kinds(methods), path_contains)),
                            random.Random(seed))

    def refuse_deletes(self, key_contains: str, *, code: str = "AccessDenied", times: int | None = None) -> None:
        """Refuse to delete the keys holding ``key_contains`` in multi-object deletes (DeleteObjects, which s3fs
        sends for every delete) as S3 does: HTTP 200, with an ``<Error>`` of ``code`` per refused key; the first
        ``times`` keys (all if None). The other keys of each request are deleted upstream. ``AccessDenied``: a bucket
        policy or Object Lock; ``InternalError``, ``SlowDown``: faults a client is to try again."""
        with self._lock:
            self._refusal = (key_contains, code, times)

    def cut_next(self, n: int = 1, *, keep: float = 0.5, methods: Iterable[str] | None = ("GET",),
                 path_contains: str = "") -> None:
        """Forward the next ``n`` matching requests, then send their answer's status and headers (its whole
        ``Content-Length``) and only the first ``keep`` share of its body, and close the connection."""
        fault = Fault(200, "", Requests(_kinds(methods), path_contains), cut=keep)
        with self._lock:
            self._pending.extend([fault] * n)

    def hide_next(self, n: int = 1, *, methods: Iterable[str] | None = ("GET", "HEAD"), path_contains: str = ""
                  ) -> None:
        """Answer the next ``n`` matching requests 404 ``NoSuchKey``, whether their object exists or not (a store
        whose reads lag behind its writes)."""
        self.fail_next(n, status=404, code="NoSuchKey", methods=methods, path_contains=path_contains)

    def unlist(self, key_contains: str, *, times: int = 1) -> None:
        """Leave the objects whose key holds ``key_contains`` out of the next ``times`` listings (LIST answers) that
        hold any: a store whose listings lag behind its writes (eventual consistency, a multi-site replica)."""
        with self._lock:
            self._unlisted = (key_contains, times)

    def _unlisting(self, body: bytes) -> bytes:
        """A listing's ``body`` with :meth:`unlist`'s objects left out."""
        with self._lock:
            if self._unlisted is None:
                return body
            part, left = self._unlisted
            entries = re.compile(rb"<Contents>(?:(?!</Contents>).)*?<Key>[^<]*" + re.escape(escape(part).encode())
                                 + rb"[^<]*</Key>.*?</Contents>", re.DOTALL)
            kept, n = entries.subn(b"", body)
            if n:
                self._unlisted = (part, left - 1) if left > 1 else None
            return kept

    def conditional_writes(self, mode: str) -> None:
        """How conditional requests (``If-None-Match``, ``If-Match``) are treated: ``"honoured"`` (forwarded),
        ``"ignored"`` (forwarded without the header: an older Ceph RGW, many S3 look-alikes) or ``"refused"``
        (501 ``NotImplemented``)."""
        if mode not in ("honoured", "ignored", "refused"):
            raise ValueError(f"conditional writes are honoured, ignored or refused, not {mode!r}")
        with self._lock:
            self._conditions = mode

    def clear_faults(self) -> None:
        with self._lock:
            self._pending.clear()
            self._random = None
            self._refusal = None
            self._conditions = "honoured"
            self._unlisted = None

    def _refused(self, keys: list[str]) -> tuple[list[str], str]:
        """Which of a delete's ``keys`` :meth:`refuse_deletes` refuses, and with what code."""
        with self._lock:
            if self._refusal is None:
                return [], ""
            part, code, left = self._refusal
            refused = [k for k in keys if part in k][:left]
            if left is not None:
                self._refusal = (part, code, left - len(refused))
            self.refused.extend(refused)
            return refused, code

    def _take_fault(self, kind: str, path: str) -> Fault | None:
        for i, fault in enumerate(self._pending):
            if fault.requests.matches(kind, path):
                del self._pending[i]
                return fault
        if self._random is not None:
            probability, fault, rng = self._random
            if fault.requests.matches(kind, path) and rng.random() < probability:
                return fault
        return None

    # --- holding requests back --------------------------------------------------------------------
    def hold(self, methods: Iterable[str] | None = None, *, path_contains: str = "") -> None:
        """Hold back the requests of ``methods`` (all if None) whose path contains ``path_contains`` from now on,
        before they reach the server, until :meth:`release`: uploads stuck behind a busy gateway."""
        with self._lock:
            self._hold = (Requests(_kinds(methods), path_contains), asyncio.Event())
            self._held = 0

    def release(self) -> None:
        """Let the held requests through, and hold no more."""
        with self._lock:
            hold, self._hold = self._hold, None
        if hold is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(hold[1].set)

    @property
    def held(self) -> int:
        """How many requests the latest :meth:`hold` has held back (released or not)."""
        with self._lock:
            return self._held

    @property
    def in_flight(self) -> int:
        """How many requests have arrived whose answer has not begun to leave (held ones among them): 0 once the
        released ones have reached the server and been answered, their clients alive or not."""
        with self._lock:
            return self._in_flight

    def _gate(self, kind: str, path: str) -> asyncio.Event | None:
        with self._lock:
            if self._hold is None or not self._hold[0].matches(kind, path):
                return None
            self._held += 1
            return self._hold[1]

    # --- counters --------------------------------------------------------------------------------
    def snapshot(self) -> ProxyStats:
        with self._lock:
            return ProxyStats(
                requests=dict(self._requests),
                statuses=dict(self._statuses),
                faults=self._faults,
                request_bytes=self._request_bytes,
                response_bytes=self._response_bytes,
                peak_in_flight=self._peak_in_flight,
            )

    def reset_counters(self) -> None:
        with self._lock:
            self._requests.clear()
            self._statuses.clear()
            self._faults = self._request_bytes = self._response_bytes = 0
            self._peak_in_flight = self._in_flight  # requests already waiting for their answer

    def _count_response(self, status: int | None, nbytes: int) -> None:
        with self._lock:
            if status is not None:
                self._statuses[status] += 1
            self._response_bytes += nbytes

    # --- the request path ------------------------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        # A request is in flight from its arrival until its answer starts to leave (after the latency and
        # the upstream's headers): a client holding its answer never sees its request still counted.
        with self._lock:
            self._in_flight += 1
            self._peak_in_flight = max(self._peak_in_flight, self._in_flight)
        answered = False

        def answer() -> None:
            nonlocal answered
            if not answered:
                answered = True
                with self._lock:
                    self._in_flight -= 1

        try:
            return await self._serve(request, answer)
        finally:
            answer()

    async def _serve(self, request: web.Request, answer: Callable[[], None]) -> web.StreamResponse:
        started = time.monotonic()
        body = await request.read()
        kind = classify(request.method, request.path, request.query.keys())
        with self._lock:
            config = self._config
            self._requests[kind] += 1
            self._request_bytes += len(body)
            self._seq += 1
            seq = self._seq
            fault = self._take_fault(kind, request.path)
            conditional = any(h in request.headers for h in _CONDITIONS) and self._conditions != "honoured"
            if conditional and self._conditions == "refused" and fault is None:
                fault = Fault(501, "NotImplemented")
            if fault is not None:
                self._faults += 1
        await _throttle(len(body), config.upload_bps, started)
        if config.latency_s > 0:
            await asyncio.sleep(config.latency_s)
        if (gate := self._gate(kind, request.path)) is not None:
            await gate.wait()
        if fault is not None and fault.cut is None:
            if fault.answer_lost:
                await self._forward(request, body, config, lambda: None, lost=True)
            answer()
            return await self._reply_fault(request, fault, f"cardcube-proxy-{seq}")
        if kind == "POST" and "delete" in request.query and self._refusal is not None:
            return await self._delete_refusing(request, body, answer)
        return await self._forward(request, body, config, answer, cut=None if fault is None else fault.cut,
                                   unconditional=conditional)

    async def _delete_refusing(self, request: web.Request, body: bytes, answer: Callable[[], None]
                               ) -> web.StreamResponse:
        """A DeleteObjects under :meth:`refuse_deletes`: its other keys deleted upstream by a request of the proxy's
        own (the client's is signed for its body), an error per refused key."""
        bucket = request.path.strip("/").split("/")[0]
        keys = [e.text or "" for e in ET.fromstring(body).iter() if e.tag.rpartition("}")[2] == "Key"]
        refused, code = self._refused(keys)
        if others := [{"Key": k} for k in keys if k not in refused]:
            await asyncio.to_thread(s3_client(self.upstream_url).delete_objects, Bucket=bucket,
                                    Delete={"Objects": others, "Quiet": True})
        errors = "".join(f"<Error><Key>{escape(k)}</Key><Code>{escape(code)}</Code><Message>"
                         f"{escape(_MESSAGES.get(code, 'Refused by cardcube.testing.s3proxy.'))}</Message></Error>"
                         for k in refused)
        payload = ('<?xml version="1.0" encoding="UTF-8"?>\n<DeleteResult xmlns="http://s3.amazonaws.com/doc/'
                   f'2006-03-01/">{errors}</DeleteResult>').encode()
        self._count_response(200, len(payload))
        answer()
        return web.Response(status=200, body=payload, content_type="application/xml")

    async def _reply_fault(self, request: web.Request, fault: Fault, request_id: str) -> web.StreamResponse:
        payload = b"" if request.method == "HEAD" else fault.body(request_id)
        headers = {"Content-Type": "application/xml", "x-amz-request-id": request_id}
        self._count_response(fault.status, len(payload))
        if request.method == "HEAD":
            return web.Response(status=fault.status, headers=headers)
        return web.Response(status=fault.status, body=payload, headers=headers)

    async def _forward(self, request: web.Request, body: bytes, config: ProxyConfig,
                       answer: Callable[[], None], *, lost: bool = False, cut: float | None = None,
                       unconditional: bool = False) -> web.StreamResponse:
        headers = CIMultiDict((k, v) for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP
                              and not (unconditional and k.lower() in _CONDITIONS))
        url = URL(self.upstream_url + _paged(request, config.max_keys), encoded=True)
        async with self._session.request(
            request.method,
            url,
            headers=headers,
            data=body if body or request.method in ("PUT", "POST") else None,
            allow_redirects=False,
            skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent", "Content-Type"),
        ) as upstream:
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for k, v in upstream.headers.items():
                if k.lower() not in _HOP_BY_HOP:
                    response.headers.add(k, v)
            if upstream.content_length is not None:
                response.content_length = upstream.content_length
            if lost:  # done upstream; the caller answers with its fault
                await upstream.read()
                return response
            # Counters move before the bytes do, so a client that has its answer sees them counted.
            self._count_response(upstream.status, 0)
            answer()
            if request.transport is None or request.transport.is_closing():  # the client left (a held request):
                return response  # forwarded all the same, as a gateway may complete a PUT its client gave up on
            if self._unlisted is not None and classify(request.method, request.path, request.query.keys()) == "LIST":
                data = self._unlisting(await upstream.read())
                response.content_length = len(data)
                await response.prepare(request)
                self._count_response(None, len(data))
                await response.write(data)
                await response.write_eof()
                return response
            await response.prepare(request)
            sent = 0
            started = time.monotonic()
            if cut is not None:  # part of the body, then the connection closed: the client sees it cut short
                data = await upstream.read()
                await response.write(data[:int(len(data) * cut)])
                self._count_response(None, int(len(data) * cut))
                request.transport.close()
                return response
            if request.method != "HEAD":
                async for chunk in upstream.content.iter_chunked(_chunk_size(config.bandwidth_bps)):
                    sent += len(chunk)
                    await _throttle(sent, config.bandwidth_bps, started)  # the last byte leaves on time
                    self._count_response(None, len(chunk))
                    await response.write(chunk)
            await response.write_eof()
        return response


async def _throttle(nbytes: int, bps: float | None, started: float) -> None:
    """Sleep until ``nbytes`` since ``started`` is no faster than ``bps``."""
    if bps and nbytes:
        delay = started + nbytes / bps - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)


def _cancel_remaining(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel the tasks still on ``loop`` after its shutdown and let them end, as :func:`asyncio.run` does: a
    request's handler or a connection's task left pending was destroyed with the loop ("Task was destroyed but it is
    pending!" at the end of a test session)."""
    pending = asyncio.all_tasks(loop)
    for task in pending:
        task.cancel()
    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    loop.run_until_complete(loop.shutdown_asyncgens())


def _paged(request: web.Request, max_keys: int | None) -> str:
    """The raw path and query to forward: a listing's ``max-keys`` at most ``max_keys``."""
    if max_keys is None or classify(request.method, request.path, request.query.keys()) != "LIST":
        return request.raw_path
    asked = int(request.query.get("max-keys", 1000))
    return str(request.rel_url.update_query({"max-keys": str(min(asked, max_keys))}))


def _chunk_size(bps: float | None) -> int:
    return _CHUNK if not bps else max(1024, min(_CHUNK, int(bps / 50)))  # ~20 ms slices when capped


def _kinds(methods: Iterable[str] | None) -> frozenset[str] | None:
    if methods is None:
        return None
    kinds = frozenset(m.upper() for m in ([methods] if isinstance(methods, str) else methods))
    if unknown := kinds - set(KINDS):
        raise ValueError(f"unknown request kinds {sorted(unknown)}; expected some of {KINDS}")
    return kinds


def start_s3_proxy(upstream_url: str, *, tls: ssl.SSLContext | None = None, **config: Any) -> S3Proxy:
    """Start a proxy to ``upstream_url`` with ``ProxyConfig`` fields as keyword arguments; ``tls``: serve HTTPS."""
    return S3Proxy(upstream_url, config=ProxyConfig(**config), tls=tls).start()
