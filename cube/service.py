"""``cardcube serve``: parcel time series and image chips over HTTP, read from the cube by chunk.

The REST service that replaces the database server in front of a PostGIS extraction: a thin shell over
:func:`cube.timeseries.parcel_timeseries` and :func:`cube.chips.chip`, so a dashboard or an inspector's
GIS gets the numbers and pictures the Python API gives, and nothing is computed here. Parcels are asked
for by id (looked up in the parcel file the service was started with) or posted as GeoJSON.

Routes (``{c}`` is a collection, ``s2`` or ``s1``)::

    GET  /                                         the collections in the cube, with version and dates
    GET  /collections/{c}                          one collection: version, bands, tiles, dates
    GET  /collections/{c}/parcels/{id}/timeseries  ?bands=B04,NDVI&stats=mean,median&time=2024-04-01/2024-09-30
                                                   &mask=default|none|0,1,3&buffer=-5&all_touched=false
                                                   &as_of=N&format=json|csv|parquet
    POST /collections/{c}/timeseries               the same for GeoJSON (geometry, Feature, FeatureCollection)
    GET  /collections/{c}/parcels/{id}/chip.png    ?date=2024-06-01 (or 2024-06-01T17:23:48Z)&bands=B04,B03,B02
                                                   &size=128&scale=4; X-Acquired: 2024-06-01T17:23:48Z (UTC)
    GET  /collections/{c}/parcels/{id}/season.png  ?time=...&bands=...: every date, cloudy ones framed

Every GET route answers HEAD too (a route of its own: FastAPI's answer only the methods they name). A query
parameter a route does not take is a 422 naming it, not ignored (:func:`_known_parameters`).

Each answer about one collection says which cube version it was read from (``version`` or
``cube_version`` in JSON, the ``X-Cube-Version`` header), so two answers can be compared. The service
keeps the versions it has read (:class:`cube.versions.VersionCache`): a pinned ``as_of`` version never
changes, and the latest is looked up again at most every ``refresh`` seconds, so on S3 a query does not pay
the ledger's listing and read each time. Answers carry an ``ETag`` of their version (of its data: a version that
only recorded rejections reads the data of the one before) and URL, and a request naming it in ``If-None-Match`` is
a 304 read from nothing while that is the same (:class:`_Revalidation`).
JSON and CSV answers are gzipped for a client that accepts it.

Errors are JSON ``{"error": <type>, "detail": <message>}`` with a status a client can act on: 404 unknown parcel,
collection, version, route, or a date or time range without an acquisition of the cube; 405 a method a route does
not answer; 409 a chip's day holding two acquisitions (Sentinel-1's dawn and dusk passes), listed with their times
and orbits so that one is asked for by its time; 413 a request too large (a POST body over ``MAX_BODY_BYTES`` too,
refused before it is read whole); 422 a parcel that cannot be measured or a bad parameter; 500 a fault of the
server or the cube (a corrupt document or shard), 502 its store failing (an error answered after every retry), 503
its store out of reach (refused or dropped connections, no answer within ``store_timeout`` seconds, Slow Down after
every retry; ``ServiceBusy``: as many requests are reading as it reads for at once, and this one waited its time),
with a ``Retry-After`` header: the service answers by itself again once the store is back. The OpenAPI document
(``/docs``) lists them with :class:`ErrorBody`.

A store on S3 is read with a bound on each request (``store_timeout``, ``cardcube serve --store-timeout``): an
outage is a 503 within seconds, not after the minute of retries a batch job is right to spend, past a reverse
proxy's own timeout (nginx's and many load balancers' 60 s). At most ``reads`` requests read the cube at once (time
series and images, :class:`_ReadSlots`); the others wait their turn up to ``read_wait`` seconds, then are a 503 Busy
with ``Retry-After``, so the memory of the answers being made is bounded, and the routes that read nothing
answer at once; at most twice ``reads`` POSTs are in the service at once, their bodies parsed, the others waiting
unread (:class:`_BodyLimit`), so the memory of the bodies is bounded too.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import difflib
import functools
import hashlib
import importlib.metadata
import io
import pathlib
import re
import threading
from collections.abc import AsyncIterator, Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Annotated, Any, TypeVar
from urllib.parse import parse_qs, quote

import anyio
import pandas as pd
from fastapi import Body, Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, BeforeValidator, TypeAdapter, ValidationError
from pydantic_core import PydanticCustomError
from pyproj import CRS
from pyproj.exceptions import CRSError
from shapely.geometry.base import BaseGeometry
from starlette.exceptions import HTTPException
from starlette.middleware.gzip import DEFAULT_EXCLUDED_CONTENT_TYPES
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from zarr.abc.store import Store

from cardcube.errors import (
    CardcubeError,
    ClientGoneError,
    CorruptDocumentError,
    CorruptShardError,
    CubeNotFoundError,
    DateNotFoundError,
    InvalidRequestError,
    ParcelError,
    ParcelNotFoundError,
    RequestTooLargeError,
    ServiceBusyError,
    VersionNotFoundError,
)
from cardcube.query import TIME_FORMAT, TIME_HELP
from cardcube.serving import (
    RETRY_AFTER,
    STORE_TIMEOUT,
    UnexpectedErrors,
    cardcube_error_response,
    error_response,
    serve_app,
)
from cardcube.spec import CUBE_SPECS
from cardcube.storage import StoreLike, open_store, store_url
from cube import layout, render
from cube.chips import (
    MAX_IMAGE_SIZE,
    MAX_SHEET_PIXELS,
    MAX_SIZE,
    check_chip,
    check_image_size,
    check_sheet,
    chip,
)
from cube.content_coding import NegotiatedGZip
from cube.dataset import check_acquisitions, date_span, pass_dates
from cube.extraction_files import PORTABLE_PARQUET
from cube.geometry_trial import check_bufferable, polygonal_in_child
from cube.ledger import CubeVersion, committed_versions, no_cube_hint
from cube.membership import DEFAULT_BUFFER, MAX_BUFFER
from cube.parcels import Overlay, ParcelSet, as_parcels, crs_member, read_parcels
from cube.stats import STATS
from cube.tile_arrays import ArrayCache
from cube.timeseries import MAX_PIXELS, check_query, parcel_timeseries
from cube.versions import REFRESH, VersionCache

MAX_SEASON_SIZE = 512  # px per panel of a season sheet (a chip alone may be up to cube.chips.MAX_SIZE)
SEASON_ADVICE = "narrow the time range or the size"  # of a season sheet too large: the route has no scale
MAX_POSTED_PARCELS = 1000  # parcels per POST: a territory is a job for ``cardcube extract``, not a request
MAX_BODY_BYTES = 32 * 2**20  # bytes of a POST body: 1,000 parcels of some 400 vertices each (JSON held ~7x in memory)
MAX_READ_BYTES = 512 * 2**20  # stored values one time series request may read (a 10 km polygon's season: 150 MB)
MAX_POSTED_DEGREES = 1.0  # a posted parcel's span in lon or lat (a field spans a thousandth of it)
MAX_ROWS = 100_000  # rows of one time series answer: 1,000 parcels x 50 dates x 2 bands (JSON: ~40 MB, 300 MB to make)
READS = 4  # requests reading the cube at once (each reads its chunks READ_THREADS at a time); the others wait
READ_WAIT = 10.0  # seconds a request waits for its turn to read before a 503 Busy
BODY_WAIT = 60.0  # seconds a request's body may take to arrive whole (32 MiB in a minute: 4.5 Mbit/s)
POSTS_PER_READ = 2  # POSTs in the service at once per turn to read: those reading, as many waiting with their bodies
UNKNOWN_NAMED = 10  # unknown query parameters a 422 names (the others counted)
DOCS_ASSETS = "/docs-assets"  # where /docs and /redoc load Swagger UI and ReDoc from (fastapi-offline's copies)
FORMATS = {"json": "application/json", "csv": "text/csv", "parquet": "application/vnd.apache.parquet"}
Format = Annotated[str, Query(pattern="^(json|csv|parquet)$", description="json, csv or parquet")]
Mask = Annotated[str, Query(pattern="^(default|none|[0-9]+(,[0-9]+)*)$",
                            description="default: SCL clouds and shadows; none; or the SCL classes to leave out, "
                                        "e.g. 0,1,2,3,7,8,9,10,11")]
Collection = Annotated[str, Path(description=f"the collection: {' or '.join(CUBE_SPECS)}")]
ParcelId = Annotated[str, Path(description="a parcel id of the service's parcel file (--parcels); may hold '/'")]
Bands = Annotated[str | None, Query(description="comma-separated bands and indices, e.g. B04,B08,NDVI (default: "
                                                "every band of the collection but SCL, whose class counts every "
                                                "row gives as scl_<class>)")]
ImageBands = Annotated[str | None, Query(description="three bands drawn as RGB (B04,B03,B02) or one band or index "
                                                     "(NDVI); default: true colour for s2, the VH/VV ratio for s1")]
Stats = Annotated[str | None, Query(description=f"comma-separated statistics: {', '.join(STATS)} (default: all of "
                                                f"these) or a percentile pNN, e.g. p90")]
Time = Annotated[str | None, Query(description=f"{TIME_HELP}; default: every date. A range without an acquisition "
                                               f"of the cube is a 404 naming the cube's dates")]
Day = Annotated[str, Query(description="one acquisition of the parcel (its timeseries lists them): its day, "
                                       "YYYY-MM-DD, or its time, YYYY-MM-DDTHH:MM:SSZ (X-Acquired answers it); a day "
                                       "of two acquisitions (Sentinel-1 at dawn and dusk) is a 409 listing their "
                                       "times and orbits. season.png draws every date of a range")]


def _no_underscores(value: Any) -> Any:
    """pydantic reads ``as_of=1_0`` as version 10, as Python's int() does: a digit grouping no URL means."""
    if isinstance(value, str) and "_" in value:
        raise PydanticCustomError("int_parsing", "Input should be a valid integer, unable to parse string as an "
                                                 "integer")
    return value


VersionNumber = Annotated[int, BeforeValidator(_no_underscores)]
VERSION_NUMBER = TypeAdapter(VersionNumber)  # as the routes read as_of, also where revalidation reads it
AsOf = Annotated[VersionNumber | None, Query(description="the cube version to read (default: the latest); pins the "
                                                         "data")]
Buffer = Annotated[float, Query(ge=-MAX_BUFFER, le=MAX_BUFFER, allow_inf_nan=False, description=(
    f"metres the parcel is grown (> 0) or shrunk (< 0) before its pixels are chosen, -{MAX_BUFFER:g} to "
    f"{MAX_BUFFER:g} (default {DEFAULT_BUFFER:g}: half a 10 m pixel inwards, off the field's edge)"))]
AllTouched = Annotated[bool, Query(description="every pixel the (buffered) parcel touches, not only those whose "
                                               "centre it holds (default false)")]
ChipSize = Annotated[int, Query(ge=1, description=f"pixels a side of the chip, up to {MAX_SIZE}")]
Scale = Annotated[int, Query(ge=1, le=16, description=f"each pixel drawn as scale x scale (1..16); the image up to "
                                                      f"{MAX_IMAGE_SIZE} px a side")]
PanelSize = Annotated[int, Query(ge=1, description=f"pixels a side of each date's panel, up to {MAX_SEASON_SIZE}")]
Crs = Annotated[str | None, Query(description="CRS of the posted coordinates, e.g. EPSG:32631 (default: the "
                                              "GeoJSON's crs member, else lon/lat)")]

ARRAY_CACHE = 1024  # opened arrays kept between requests, each with up to 64 of its shard indexes
Checked = TypeVar("Checked")  # what a route checks before its turn to read, and reads with

__all__ = ["ARRAY_CACHE", "FORMATS", "MAX_BODY_BYTES", "MAX_PIXELS", "MAX_POSTED_PARCELS", "MAX_READ_BYTES",
           "MAX_ROWS", "MAX_SEASON_SIZE", "MAX_SHEET_PIXELS", "REFRESH", "RETRY_AFTER", "STORE_TIMEOUT", "VersionCache",
           "allowed_origins", "make_app", "serve"]


class ErrorBody(BaseModel):
    """What every error answers: the kind (``ParcelNotFound``, ``RequestTooLarge``, ...) and why."""

    error: str
    detail: str


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text} for code, text in (
        (404, "unknown collection, parcel, version or date"),
        (408, "a POST body not whole within the service's --body-wait seconds"),
        (409, "a chip's date holds several acquisitions: the detail lists their times to choose from"),
        (413, "the request would read or draw too much"),
        (415, "a POST body compressed (Content-Encoding): send it as it is"),
        (422, "a malformed request, or a parcel that cannot be measured"), (500, "a fault of the server or the cube"),
        (502, "the cube's store answered an error after every retry"),
        (503, "the cube's store cannot be reached or does not answer, or the service is reading for as many requests "
              "as it may at once: ask again after Retry-After seconds"))}
ERROR_RESPONSES = {code: ERRORS[code] for code in (422, 500, 502, 503)}  # what every route may answer


def _answers(*codes: int, ok: Mapping[int | str, dict[str, Any]] | None = None, tagged: bool = True
             ) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI responses of a route beside :data:`ERROR_RESPONSES`: its 200 (``ok``), the 304 of a conditional
    GET where its answers are ``tagged`` with an ETag (:class:`_Revalidation`), and the errors ``codes``; the
    document listed every error for every route (a 409 for ``/``), and no 304 or 408, which a generated client
    then took for an unexpected status."""
    return {**(ok or {}), **({304: NOT_MODIFIED} if tagged else {}), **{code: ERRORS[code] for code in codes}}


NOT_MODIFIED: dict[str, Any] = {"description": "the answer whose ETag If-None-Match names is the one this request "
                                               "would get (no body; ETag, Cache-Control, X-Cube-Version)"}
PNG: dict[int | str, dict[str, Any]] = {200: {"content": {"image/png": {}}, "description": "a PNG image"}}
TABLE: dict[int | str, dict[str, Any]] = {200: {"content": {media: {} for media in FORMATS.values()}, "description": (
    "a row per parcel, date and band, in the format= asked for: JSON {collection, cube_version, units, parcels, "
    "columns, rows}, CSV or Parquet (the units of each band: in the Parquet metadata, pandas attrs)")}}


def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    """A routing error (no such route, a method the route does not answer) in the body of every other error."""
    where = f"{request.method} {request.url.path}"
    if exc.status_code == 404 and (moved := _slash_moved(request)) is not None:
        return RedirectResponse(moved, status_code=307)
    if exc.status_code == 404:
        root, path = request.scope.get("root_path", ""), _route_path(request.scope)
        if root and path.startswith(f"{root}/"):  # the prefix not stripped: it was named twice, /cardcube/cardcube/...
            return error_response(404, "RouteNotFound", (
                f"no route {request.method} {path}: the service was started under the path prefix {root} "
                f"(--root-path), which the reverse proxy in front strips, and this request still holds it; ask "
                f"{path[len(root):]} of the service itself, or have the proxy strip the prefix (nginx: proxy_pass "
                f"with a URI, http://cardcube:8080/)"))
        return error_response(404, "RouteNotFound", f"no route {where}; GET {root}/ lists the collections, {root}/docs "
                                                    f"every route")  # as the client reaches them, through the proxy
    if exc.status_code == 400 and request.method == "POST":  # FastAPI could not decode the body as JSON at all
        coding = request.headers.get("content-encoding", "").strip().lower()
        if coding not in ("", "identity"):  # a gzipped body was "no UTF-8 JSON": true, but not why (RFC 9110 15.5.16)
            return error_response(415, "UnsupportedMediaType", f"a request body of Content-Encoding {coding} is not "
                                  f"read: POST the GeoJSON uncompressed (up to {MAX_BODY_BYTES // 2**20} MiB)",
                                  headers={"Accept-Encoding": "identity"})
        return error_response(422, "InvalidRequest", _not_geojson("no UTF-8 JSON, or nested too deep"))
    if exc.status_code == 405:  # the methods of every route of the path (GET and HEAD are two routes)
        allowed = ", ".join(sorted({m for route in request.app.router.routes if isinstance(route, APIRoute)
                                    and route.matches(request.scope)[0] != Match.NONE for m in route.methods}))
        return error_response(405, "MethodNotAllowed", f"{where} is not answered; use {allowed or 'another route'} "
                              f"(/docs lists the routes)", headers={"Allow": allowed})
    kind = "RequestTooLarge" if exc.status_code == 413 else HTTPStatus(exc.status_code).phrase.title().replace(
        " ", "").replace("-", "")  # 413: a body over MAX_BODY_BYTES, named as every request too large
    return error_response(exc.status_code, kind, str(exc.detail), headers=exc.headers)


def _slash_moved(request: Request) -> str | None:
    """Where a route answers the path of ``request`` with its trailing slash toggled (``/collections/s2/``): that
    path relative to the host the client asked, with the prefix (--root-path) and the query, or None. Starlette's
    redirect named the URL absolute, on the Host header the service was asked with, which behind a reverse proxy is
    the proxy's name for the service (nginx's default: the proxy_pass host, http://cardcube:8080/...)."""
    path = _route_path(request.scope)
    if path == "/":
        return None
    full = request.scope["path"]
    other = {**request.scope, "path": full.rstrip("/") if path.endswith("/") else f"{full}/"}
    if not any(route.matches(other)[0] != Match.NONE for route in request.app.router.routes):
        return None
    query = request.scope["query_string"].decode("latin-1")
    return quote(other["path"], safe="/") + (f"?{query}" if query else "")


def _too_large(size: str) -> str:
    return (f"a request body of {size} (limit {MAX_BODY_BYTES // 2**20} MiB, {MAX_POSTED_PARCELS} parcels): run "
            f"`cardcube extract` for a territory")


class _BodyLimit:
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


def _query_parameters(request: Request) -> dict[str, str | None] | None:
    """The query parameters of the route ``request`` matched, with their descriptions in /docs (None: no route of
    ours, or a page of the docs: a link to /docs with a tracking parameter was a 422, and Swagger UI's OAuth2
    redirect page is sent its ``code`` and ``state``). The routes' own: no dependency takes any."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute) or not route.include_in_schema:
        return None
    return {p.alias: p.field_info.description for p in route.dependant.query_params}


def _known_parameters(request: Request) -> None:
    """An unknown query parameter is a 422 naming it, the closest known one and the route's parameters: a
    misspelt ``band=B04`` (for ``bands``) answered every band, as if it had not been asked."""
    parameters = _query_parameters(request)
    if parameters is None:
        return
    known = sorted(parameters)
    # counted once each: a URL of 15,000 parameters took 2-4 s of CPU to count one by one, and its 422 named them all
    given = collections.Counter(name for name, _ in request.query_params.multi_items())
    if repeated := sorted(name for name in known if given[name] > 1):
        raise InvalidRequestError(f"{', '.join(repeated)} given more than once: give each parameter once, a list "
                                  f"comma-separated (bands=B04,B08); only the last would be read")
    unknown = sorted(set(given) - set(known))
    if unknown:
        hints = [f"{name!r}" + "".join(f" (did you mean {m!r}?)" for m in
                                       difflib.get_close_matches(name, known, n=1, cutoff=0.65))
                 for name in unknown[:UNKNOWN_NAMED]]
        more = f" and {len(unknown) - UNKNOWN_NAMED:,} more" if len(unknown) > UNKNOWN_NAMED else ""
        raise InvalidRequestError(f"unknown parameter{'s' * (len(unknown) > 1)} {', '.join(hints)}{more}: "
                                  f"{request.method} {request.url.path} takes {', '.join(known) or 'none'}")


def _route_path(scope: Scope) -> str:
    """The path routes see: behind a proxy's prefix (``--root-path``), ``scope["path"]`` starts with it."""
    root, path = scope.get("root_path", ""), scope["path"]
    return path[len(root):] if root and path.startswith(root) else path


class _Cors(CORSMiddleware):
    """Starlette's CORS, with a refused preflight answered as every other error, in JSON (its own is text)."""

    def preflight_response(self, request_headers: Any) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code != 400:
            return response
        kept = {k: v for k, v in response.headers.items() if k not in ("content-length", "content-type")}
        return error_response(400, "CorsRefused", f"{response.body.decode()}: this service answers "
                              f"{', '.join(self.allow_methods)}, to the origins it was started with (cardcube serve "
                              f"--allow-origin)", headers=kept)


# what a read of a version that is no more raises (beside errors of no cardcube kind: an old shard index)
_GONE = (VersionNotFoundError, CorruptShardError, CorruptDocumentError)
COMMITTED = "x-cardcube-committed"  # what of the version an answer read its ETag names (not sent): _tag_basis
# an answer pinned by as_of: a committed version never changes, but the cube may be built again at the same place
PINNED = "public, max-age=3600"


def _names_version(path: str) -> bool:
    """Whether the answer of route ``path`` names the version it read: a collection's description does (its number
    and commit time); an answer about parcels (a time series, a chip) names it too, but holds the same data read
    from a version that only recorded rejections as from the one before."""
    return re.fullmatch(r"/collections/[^/]+/?", path) is not None


def _tag_basis(version: CubeVersion, names_version: bool) -> str:
    """What of ``version`` the ETag of an answer read from it names: its number and commit time (a cube built again
    at the same place has the same numbers) where the answer names it, else those of the version whose data it
    reads (:attr:`cube.ledger.CubeVersion.data_tag`)."""
    number, committed = (version.version, version.created) if names_version else version.data_tag
    return f"{number}|{committed}"


def _untagged(send: Send) -> Send:
    """``send`` for an answer that gets no ETag (a POST's): the version basis its route names for the tag
    (:data:`COMMITTED`) is left out, as from every answer, not sent to the client as a header of its own."""

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [(k, v) for k, v in message.get("headers", []) if k != COMMITTED.encode()]
        await send(message)

    return sending


class _Revalidation:
    """Conditional GETs of ``/collections/...``: an answer carries an ``ETag`` of the version it was read at (of its
    data: :func:`_tag_basis`), its URL and what else makes it (``served``: the parcels; the code), weak as it names
    the answer
    gzipped or not (a strong one names the bytes), and ``Cache-Control``: an hour when pinned by ``as_of``,
    else ``no-cache`` (a browser asks again, with ``If-None-Match``). A request whose ``If-None-Match`` names
    the answer the version it would read gives is a 304, read from nothing: a dashboard re-polling a parcel
    costs a version lookup until an ingest commits."""

    def __init__(self, app: ASGIApp, served: _ServedCube, identity: str) -> None:
        self.app, self.served, self.identity = app, served, identity

    def etag(self, basis: str, scope: Scope) -> str:
        """Of the version read, what :func:`_tag_basis` names; the request's URL and :func:`_identity`."""
        key = f"{self.identity}|{basis}|{_route_path(scope)}?{scope['query_string'].decode('latin-1')}"
        return f'W/"{hashlib.sha256(key.encode()).hexdigest()[:20]}"'  # weak: the same, gzipped or not

    async def _current(self, scope: Scope, as_of: str | None) -> CubeVersion | None:
        """The version the request would read now, if it can be told without an error (else its route says)."""
        try:
            collection = _route_path(scope).split("/")[2]
            number = None if as_of is None else VERSION_NUMBER.validate_python(as_of)  # "1.0" is 1, as routes read it
            return await anyio.to_thread.run_sync(self.served.version, collection, number)
        except (CardcubeError, ValidationError, IndexError):
            return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if scope["method"] not in ("GET", "HEAD") or not _route_path(scope).startswith("/collections/"):
            return await self.app(scope, receive, _untagged(send))  # a POST's answer: no ETag
        as_of = parse_qs(scope["query_string"].decode("latin-1")).get("as_of", [None])[-1]
        # a parcel's answer also depends on its geometry in the parcel file, which a restart may amend: revalidated
        cache = PINNED if as_of is not None and "/parcels/" not in _route_path(scope) else "no-cache"
        wanted = dict(scope["headers"]).get(b"if-none-match", b"").decode("latin-1")
        if wanted and (current := await self._current(scope, as_of)) is not None:
            version = current.version
            tag = self.etag(_tag_basis(current, _names_version(_route_path(scope))), scope)
            # weak comparison (RFC 9110 13.1.2): the opaque tags alike, with W/ or without
            # ("*" matches nothing here: whether the answer would be a 200 or an error is told only by reading it)
            if tag.removeprefix("W/") in (t.strip().removeprefix("W/") for t in wanted.split(",")):
                return await Response(status_code=304, headers={"ETag": tag, "Cache-Control": cache,
                                                                "X-Cube-Version": str(version)})(scope, receive, send)

        async def tagging(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = dict(message.get("headers", []))
                message["headers"] = [(k, v) for k, v in message.get("headers", []) if k != COMMITTED.encode()]
                if message["status"] == 200 and (basis := headers.get(COMMITTED.encode())):
                    tag = self.etag(basis.decode(), scope)
                    message["headers"] += [(b"etag", tag.encode()), (b"cache-control", cache.encode())]
            await send(message)

        await self.app(scope, receive, tagging)


def _collection_info(version: CubeVersion) -> dict[str, Any]:
    """What ``/`` and ``/collections/{c}`` say of a collection: ``dates`` counts a pass over two tiles once."""
    return {"collection": version.collection, "version": version.version, "created": version.created,
            "bands": list(version.spec.band_names), "tiles": sorted(version.tiles), "dates": len(pass_dates(version)),
            "time_range": list(version.time_range) if version.time_range else None}


def _attachment(name: str) -> str:
    """A download's Content-Disposition (RFC 6266): an ASCII ``filename`` for every browser and, for a name
    beyond ASCII (a parcel id ``Žatec-7``), its UTF-8 form in ``filename*``; HTTP headers are Latin-1 bytes."""
    plain = re.sub(r"[^\w.-]", "_", name, flags=re.ASCII)
    header = f'attachment; filename="{plain}"'
    if plain != name:
        header += "; filename*=UTF-8''" + quote(re.sub(r"[/\\]", "_", name), safe="")
    return header


def _timeseries_response(frame: pd.DataFrame, fmt: str) -> Response:
    """The frame of :func:`parcel_timeseries` in ``fmt``; JSON carries the version and the parcels' status."""
    headers = {}
    if fmt != "json":  # a download a browser saves under a name saying what it holds
        ids = frame["parcel_id"].unique()
        # a posted id may be as long as the body: a header of 100 kB, which a reverse proxy answers with a 502
        subject = str(ids[0])[:100] if len(ids) == 1 else f"{len(ids)}-parcels"
        headers["Content-Disposition"] = _attachment(f"{subject}_{frame.attrs['collection']}"
                                                     f"_v{frame.attrs['cube_version']}.{fmt}")
    if fmt == "csv":
        return Response(frame.to_csv(index=False, date_format=TIME_FORMAT), media_type=FORMATS[fmt], headers=headers)
    if fmt == "parquet":
        buf = io.BytesIO()
        frame.to_parquet(buf, index=False, **PORTABLE_PARQUET)  # as the CLI writes it: Spark reads its times
        return Response(buf.getvalue(), media_type=FORMATS[fmt], headers=headers)
    body = {"collection": frame.attrs["collection"], "cube_version": frame.attrs["cube_version"],
            "units": frame.attrs["units"], "parcels": frame.attrs["parcel_status"], "columns": list(frame.columns),
            "rows": _records(frame)}
    return JSONResponse(body, headers=headers)


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as JSON-ready dicts: Python numbers (floats written in full, so a client reads the very numbers
    of the Python API), ISO 8601 times in UTC with "Z" (as ``/collections`` writes them), null for NaN."""
    out = frame.copy()
    out.attrs.clear()  # pandas deep-copies them at every step (the parcels' statuses: most of the time taken)
    for name in out.columns[[pd.api.types.is_datetime64_any_dtype(t) for t in out.dtypes]]:
        out[name] = out[name].dt.strftime(TIME_FORMAT)
    return out.astype(object).where(out.notna(), None).to_dict("records")


class _ReadSlots:
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


@dataclass(frozen=True, slots=True)
class _ServedCube:
    """What the routes read from: the cube's store, the registry parcel ids in URLs are looked up in (None: ids
    are refused), what is kept between requests (versions; opened arrays, None for none), and the turns to read."""

    store: Store
    registry: ParcelSet | None
    versions: VersionCache
    arrays: ArrayCache | None
    reads: _ReadSlots
    overlays: threading.BoundedSemaphore  # posted parcels made polygons in child processes at once (as many as reads)

    def version(self, collection: str, as_of: int | None) -> CubeVersion:
        """The version a request reads: ``as_of`` or the latest, of a known collection."""
        if collection not in CUBE_SPECS:
            raise CubeNotFoundError(f"unknown collection {collection!r}; collections: {', '.join(CUBE_SPECS)}")
        return self.versions.get(collection, as_of)

    def overlay(self, ids: Sequence[Hashable], geometries: Sequence[BaseGeometry], repair: bool
                ) -> list[tuple[BaseGeometry, bool] | ParcelError]:
        """Posted parcels made polygons (:data:`cube.parcels.Overlay`) in a child process with limits, as many at
        once as requests read: this is done before a request's turn to read, and each child may take 512 MiB."""
        with self.overlays:
            return polygonal_in_child(ids, geometries, repair)

    def parcel(self, parcel_id: str) -> ParcelSet:
        """The parcel of the registry with id ``parcel_id``."""
        if self.registry is None:
            raise ParcelNotFoundError(f"parcel {parcel_id!r}: the service was started without a parcel file "
                                      f"(cardcube serve --parcels FILE); POST the geometry instead")
        return self.registry.select([parcel_id])

    async def in_turn(self, request: Request, check: Callable[[], Checked], read: Callable[[Checked], Response]
                      ) -> Response:
        """``read`` of what ``check`` gives, in threads, once the request has its turn to read the cube; ``check``
        runs before, without a turn: a request's own fault (an unknown parcel or band, a date of no acquisition)
        is answered at once, not after waiting behind the requests that read, as a 503 when they took long."""
        checked = await anyio.to_thread.run_sync(check)
        async with self.reads.turn(request):
            return await anyio.to_thread.run_sync(read, checked)

    def answer(self, collection: str, as_of: int | None, read: Callable[[CubeVersion], Response], *,
               names_version: bool = False) -> Response:
        """``read`` of the version a request reads, its response tagged with the version (for the ETag: of the version
        itself if the answer ``names_version``, else of its data, :func:`_tag_basis`). The
        latest failing to read as a version that is no more (expired by an ingest then ``cardcube expire``, or
        its cube replaced, within ``refresh`` seconds: a missing object, an array or shard index of the old
        cube) is looked up again and, if it changed, read once more: the client asked for the latest."""
        version = self.version(collection, as_of)
        try:
            response = read(version)
        except Exception as exc:
            if as_of is not None or (isinstance(exc, CardcubeError) and not isinstance(exc, _GONE)):
                raise
            self.versions.forget(collection)
            latest = self.version(collection, None)
            if (latest.version, latest.created) == (version.version, version.created):
                raise
            version, response = latest, read(latest)
        response.headers.update({"X-Cube-Version": str(version.version), COMMITTED: _tag_basis(version, names_version)})
        return response

    def check_timeseries(self, collection: str, *, bands: str | None, stats: str | None, time: str | None,
                         mask: str, as_of: int | None) -> None:
        """The time series query's faults, found before its turn to read (:meth:`timeseries` checks them as it
        reads): unknown bands, statistics or version, a mask the bands lack, a time range of no acquisition."""
        version = self.version(collection, as_of)
        check_query(version, bands=bands, stats=STATS if stats is None else stats, mask=mask)
        check_acquisitions(version, time)

    def timeseries(self, collection: str, where: Any, *, bands: str | None, stats: str | None, time: str | None,
                   mask: str, buffer: float, all_touched: bool, as_of: int | None, fmt: str) -> Response:
        """The answer of both time series routes: :func:`parcel_timeseries` of ``where`` in ``fmt``."""

        def read(version: CubeVersion) -> Response:
            check_acquisitions(version, time)  # a 404 naming the cube's dates, not an empty answer
            frame = parcel_timeseries(self.store, where, collection=collection, bands=bands,
                                      stats=STATS if stats is None else stats, time=time, mask=mask, buffer=buffer,
                                      all_touched=all_touched, as_of=version, cache=self.arrays,
                                      max_bytes=MAX_READ_BYTES, max_rows=MAX_ROWS, max_pixels=MAX_PIXELS)
            if frame.empty:  # the cube has dates in ``time``, but not on the parcels' tiles
                raise DateNotFoundError(f"no {collection} acquisition of the parcel(s) in "
                                        f"{f'time={time}' if time else 'the cube'}: {date_span(version)}, none of "
                                        f"them on the parcels' tile(s); give another time range")
            return _timeseries_response(frame, fmt)

        return self.answer(collection, as_of, read)


def _add_error_handlers(app: FastAPI) -> None:
    """Every error answered as :class:`ErrorBody`, with the status of :func:`cardcube.serving.cardcube_error_response`
    (a bug: 500, logged)."""

    @app.exception_handler(CardcubeError)
    async def cardcube_error(request: Request, exc: CardcubeError) -> JSONResponse:
        return cardcube_error_response(exc, where=f"{request.method} {request.url.path}")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return _http_error(request, exc)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        described = _query_parameters(request) or {}
        return error_response(422, "InvalidRequest", "; ".join(_invalid(e, described) for e in exc.errors()))


def _not_geojson(why: str) -> str:
    return (f"the body is not GeoJSON ({why}): POST a geometry, Feature or FeatureCollection as JSON, with "
            f"Content-Type: application/json")


def _invalid(error: Mapping[str, Any], described: Mapping[str, str | None]) -> str:
    """One of pydantic's errors of a request in the words of the route's documentation: what was given, why it
    is refused, and what the parameter takes (its description in /docs)."""
    where, name = error["loc"][0], error["loc"][-1]
    if where == "body":
        return _not_geojson(error.get("ctx", {}).get("error") or error["msg"])
    takes = f" ({described[name]})" if described.get(name) else ""
    if error["type"] == "missing":
        return f"{name} is required{takes}"
    why = "not one of the values it takes" if error["type"] == "string_pattern_mismatch" else (
        error["msg"][:1].lower() + error["msg"][1:])
    return f"{name}={error['input']!r}: {why}{takes}"


def _add_collection_routes(app: FastAPI, served: _ServedCube) -> None:
    """``GET /`` and ``GET /collections/{c}``: what the cube holds."""

    @app.get("/")
    @app.head("/")
    def index() -> dict[str, Any]:
        found = []
        for collection in CUBE_SPECS:  # through the cache: no listing of the ledger within ``refresh``
            try:
                found.append(_collection_info(served.versions.get(collection)))
            except CubeNotFoundError:
                continue
        return {"cube": store_url(served.store),
                "parcels": len(served.registry) if served.registry is not None else None, "collections": found}

    @app.get("/collections/{collection}", responses=_answers(404))
    @app.head("/collections/{collection}", responses=_answers(404))
    def collection_info(collection: Collection, as_of: AsOf = None) -> JSONResponse:
        return served.answer(collection, as_of, lambda version: JSONResponse(_collection_info(version)),
                             names_version=True)


def _posted_parcels(geojson: dict[str, Any], crs: str | None, overlay: Overlay) -> ParcelSet:
    """The parcels of a posted GeoJSON in ``crs`` (None: its crs member's, else lon/lat), made polygons by ``overlay``
    where they need one; too many, or a geometry that is no parcel, is refused with how to ask instead."""
    crs = crs if crs is not None else crs_member(geojson) or "EPSG:4326"  # a member QGIS wrote was not read: a 422
    try:
        src_crs = CRS.from_user_input(crs)
    except CRSError:
        raise InvalidRequestError(f"unknown crs {crs!r}; give e.g. EPSG:4326 or EPSG:32631{_space_for_plus(crs)}"
                                  ) from None
    earth = src_crs.ellipsoid is not None and 6.3e6 < src_crs.ellipsoid.semi_major_metre < 6.4e6
    if not (src_crs.is_geographic or src_crs.is_projected) or not earth:  # geocentric, vertical, the Moon's
        raise InvalidRequestError(f"crs {crs!r} is not a horizontal CRS of the Earth ({src_crs.name}); give e.g. "
                                  f"EPSG:4326 or EPSG:32631")
    features = geojson.get("features")
    if isinstance(features, list) and len(features) > MAX_POSTED_PARCELS:
        raise RequestTooLargeError(f"{len(features)} parcels in one request (limit {MAX_POSTED_PARCELS}); "
                                   f"run `cardcube extract` for a territory")
    try:
        posted = as_parcels(geojson, src_crs=src_crs, overlay=overlay)
    except ParcelError as exc:
        if type(exc) is not ParcelError:
            raise
        raise ParcelError(exc.parcel_id, f"{exc.reason}; a time series is measured over a parcel's outline: "
                          f"POST a valid Polygon or MultiPolygon (or Features of them). For the parcel at a "
                          f"location, GET .../parcels/{{id}}/timeseries or chip.png with its id (Python: "
                          f"cube.parcels.parcel_at(lon, lat, parcels) finds it)") from None
    for pid, geom in posted.to_crs("EPSG:4326"):  # a continent projected to a UTM zone is a sliver somewhere
        west, south, east, north = geom.bounds
        if max(east - west, north - south) > MAX_POSTED_DEGREES:
            raise RequestTooLargeError(f"parcel {pid} spans {east - west:.1f} x {north - south:.1f} degrees (limit "
                                       f"{MAX_POSTED_DEGREES:g}); run `cardcube extract` for a territory")
    return posted


def _space_for_plus(crs: str) -> str:
    """A hint for a compound CRS whose "+" was sent unencoded and reached the query as a space (``EPSG:32631 5709``),
    else ""."""
    if " " not in crs.strip():
        return ""
    try:
        CRS.from_user_input(crs.strip().replace(" ", "+"))
    except CRSError:
        return ""
    written = quote(crs.strip().replace(" ", "+"), safe=":")
    return f" (a '+' reaches a URL's query as a space: write it %2B, crs={written})"


def _add_timeseries_routes(app: FastAPI, served: _ServedCube) -> None:
    """The time series of a parcel by id (GET) or of posted GeoJSON (POST)."""

    @app.get("/collections/{collection}/parcels/{parcel_id:path}/timeseries", responses=_answers(404, 413, ok=TABLE))
    @app.head("/collections/{collection}/parcels/{parcel_id:path}/timeseries", responses=_answers(404, 413, ok=TABLE))
    async def parcel_series(request: Request, collection: Collection, parcel_id: ParcelId, bands: Bands = None,
                            stats: Stats = None, time: Time = None, mask: Mask = "default",
                            buffer: Buffer = DEFAULT_BUFFER, all_touched: AllTouched = False, as_of: AsOf = None,
                            format: Format = "json") -> Response:
        def check() -> ParcelSet:
            served.check_timeseries(collection, bands=bands, stats=stats, time=time, mask=mask, as_of=as_of)
            return served.parcel(parcel_id)

        return await served.in_turn(request, check, lambda parcel: served.timeseries(
            collection, parcel, bands=bands, stats=stats, time=time, mask=mask, buffer=buffer,
            all_touched=all_touched, as_of=as_of, fmt=format))

    @app.post("/collections/{collection}/timeseries", responses=_answers(404, 408, 413, 415, ok=TABLE, tagged=False))
    async def posted_series(request: Request, collection: Collection, geojson: Annotated[dict[str, Any], Body()],
                            bands: Bands = None, stats: Stats = None, time: Time = None, mask: Mask = "default",
                            buffer: Buffer = DEFAULT_BUFFER, all_touched: AllTouched = False, as_of: AsOf = None,
                            crs: Crs = None, format: Format = "json") -> Response:
        def check() -> ParcelSet:
            served.check_timeseries(collection, bands=bands, stats=stats, time=time, mask=mask, as_of=as_of)
            return _posted_parcels(geojson, crs, served.overlay)

        def read(parcels: ParcelSet) -> Response:  # the buffer's cost tried in its turn: at most `reads` at once
            check_bufferable(parcels.ids, parcels.geometries, parcels.crs, buffer)
            return served.timeseries(collection, parcels, bands=bands, stats=stats, time=time, mask=mask,
                                     buffer=buffer, all_touched=all_touched, as_of=as_of, fmt=format)

        return await served.in_turn(request, check, read)


def _add_image_routes(app: FastAPI, served: _ServedCube) -> None:
    """A parcel's chip of one acquisition and its season sheet, as PNG (GET and HEAD)."""

    @app.get("/collections/{collection}/parcels/{parcel_id:path}/chip.png", response_class=Response,
             responses=_answers(404, 409, 413, ok=PNG))
    @app.head("/collections/{collection}/parcels/{parcel_id:path}/chip.png", response_class=Response,
              responses=_answers(404, 409, 413, ok=PNG))
    async def chip_png(request: Request, collection: Collection, parcel_id: ParcelId, date: Day,
                       bands: ImageBands = None, size: ChipSize = 128, scale: Scale = 4, as_of: AsOf = None
                       ) -> Response:
        def check() -> ParcelSet:
            check_image_size(size, scale)
            check_chip(served.version(collection, as_of), date=date, bands=bands)
            return served.parcel(parcel_id)

        def read(parcel: ParcelSet, version: CubeVersion) -> Response:
            result = chip(served.store, parcel, collection=collection, size=size, date=date, bands=bands,
                          as_of=version, cache=served.arrays)  # one acquisition
            return Response(render.png_bytes(result.image(0, scale=scale), result.png_text(0)), media_type="image/png",
                            headers={"X-Acquired": pd.Timestamp(result.times[0]).strftime(TIME_FORMAT)})

        return await served.in_turn(request, check, lambda parcel: served.answer(
            collection, as_of, functools.partial(read, parcel)))

    @app.get("/collections/{collection}/parcels/{parcel_id:path}/season.png", response_class=Response,
             responses=_answers(404, 413, ok=PNG))
    @app.head("/collections/{collection}/parcels/{parcel_id:path}/season.png", response_class=Response,
              responses=_answers(404, 413, ok=PNG))
    async def season_png(request: Request, collection: Collection, parcel_id: ParcelId, time: Time = None,
                         bands: ImageBands = None, size: PanelSize = 64, as_of: AsOf = None) -> Response:
        def check() -> ParcelSet:
            if size > MAX_SEASON_SIZE:
                raise RequestTooLargeError(f"season panels of {size} px (limit {MAX_SEASON_SIZE}): one panel per "
                                           f"date")
            version = served.version(collection, as_of)
            check_chip(version, time=time, bands=bands)
            check_sheet(version, time, size, advice=SEASON_ADVICE)  # a refused sheet read and drew every date
            return served.parcel(parcel_id)

        def read(parcel: ParcelSet, version: CubeVersion) -> Response:
            check_sheet(version, time, size, advice=SEASON_ADVICE)  # the version read may be a newer one
            result = chip(served.store, parcel, collection=collection, size=size, time=time,
                          bands=bands, as_of=version, cache=served.arrays)  # 404 for no date
            sheet = result.contact_sheet(advice=SEASON_ADVICE)  # checks the parcel's own dates before drawing
            return Response(sheet.to_png(), media_type="image/png",
                            headers={"X-Dates": str(len(result.times))})

        return await served.in_turn(request, check, lambda parcel: served.answer(
            collection, as_of, functools.partial(read, parcel)))


def allowed_origins(origins: Sequence[str]) -> list[str]:
    """The web origins whose pages may read the answers (CORS), checked: ``*`` for any, ``none`` for none
    (a browser page then reads only from the service's own origin), else ``scheme://host[:port]`` each, as
    browsers send them: with a path or a trailing slash no request would ever match."""
    if list(origins) in (["*"], ["none"]):
        return [] if origins[0] == "none" else ["*"]
    for origin in origins:
        if origin in ("*", "none"):
            raise InvalidRequestError(f"allowed origins {', '.join(origins)}: {origin!r} goes alone")
        if not re.fullmatch(r"https?://[^/\s]+", origin):
            raise InvalidRequestError(f"allowed origin {origin!r} is not an origin: give scheme://host[:port], "
                                      f"without a path or a trailing slash (e.g. https://dashboard.example.org)")
    return list(origins)


def make_app(cube: StoreLike, *, parcels: Any = None, storage_options: Mapping[str, Any] | None = None,
             id_column: str = "parcel_id", layer: str | None = None, refresh: float = REFRESH,
             array_cache: int = ARRAY_CACHE, store_timeout: float | None = STORE_TIMEOUT,
             origins: Sequence[str] = ("*",), reads: int = READS, read_wait: float = READ_WAIT,
             body_wait: float = BODY_WAIT) -> FastAPI:
    """The ASGI app serving ``cube`` (read-only); ``parcels`` (a parcel file, its ``layer`` if it holds
    several, a path or URL read with ``storage_options`` as the cube; or a GeoDataFrame) is the registry that
    parcel ids in URLs are looked up in; ``refresh``: seconds between lookups of the latest version (0: every
    request); ``array_cache``: opened arrays kept between requests, each with up to 64 of its shard indexes
    (:class:`cube.tile_arrays.ArrayCache`; 0 keeps none, so each request fetches its arrays' metadata and shard
    indexes again: what ``benchmarks.service`` compares); ``store_timeout``: seconds a request to an S3 store
    may take to fail, retries included, so an outage answers 503 at once (:func:`cardcube.storage.open_store`;
    None: the library's patient defaults); ``origins``: the web pages that may read the answers
    (:func:`allowed_origins`; default any: behind an agency's firewall, name its dashboards, as a page from
    anywhere opened in a browser inside could otherwise read the parcels' answers); ``reads``: requests reading the
    cube at once, the others waiting their turn up to ``read_wait`` seconds (:class:`_ReadSlots`), and twice as many
    POSTs in the service at once, the others waiting as long before their body is read (:class:`_BodyLimit`);
    ``body_wait``: seconds a POST body may take to arrive whole, then a 408 (:class:`_BodyLimit`)."""
    cors = allowed_origins(origins)
    slots = _ReadSlots(reads, read_wait)
    if array_cache < 0:
        raise InvalidRequestError(f"array_cache={array_cache}: give the number of arrays to keep, 0 for none")
    if not body_wait > 0:  # 0 answered a 408 to every POST whose body came in more than one read (over ~64 KiB)
        raise InvalidRequestError(f"body_wait={body_wait:g}: give the seconds a POST body may take to arrive whole, "
                                  f"more than 0")
    store = open_store(layout.cube_root(cube), storage_options=storage_options, read_only=True, timeout=store_timeout)
    held = [c for c in CUBE_SPECS if committed_versions(store, c)]
    if not held:  # a mistyped --cube fails now, not per request
        raise CubeNotFoundError(f"no cube at {store_url(store)}: no committed version of {' or '.join(CUBE_SPECS)}"
                                + no_cube_hint(store))
    arrays = ArrayCache(array_cache) if array_cache else None
    # a cube built again at the same place: its objects are other ones, and so are the arrays' shard indexes
    versions = VersionCache(store, refresh=refresh, on_replaced=lambda _: arrays is not None and arrays.clear())
    for collection in held:  # seen: should its ledger go from the store, a 500 CubeLost, not a 404 or an empty "/"
        versions.get(collection)
    registry = None if parcels is None else as_parcels(read_parcels(parcels, id_column=id_column, layer=layer,
                                                                    storage_options=storage_options),
                                                       id_column=id_column, errors="collect")  # see select
    # with the arrays kept, each query then fetches chunks, not the arrays' metadata and shard indexes
    served = _ServedCube(store, registry, versions, arrays, slots, threading.BoundedSemaphore(reads))
    # the docs pages load Swagger UI and ReDoc from the package, not a CDN: an agency's network may reach no CDN
    app = FastAPIOffline(title="cardcube", summary="Parcel time series and image chips from a Sentinel datacube",
                         responses=ERROR_RESPONSES, dependencies=[Depends(_known_parameters)],
                         static_url=DOCS_ASSETS, redirect_slashes=False)  # redirected by _slash_moved
    app.add_middleware(UnexpectedErrors)  # within CORS: a bug's 500 is readable from another origin too
    app.add_middleware(_BodyLimit, wait=body_wait, posts=POSTS_PER_READ * reads, post_wait=read_wait)
    app.add_middleware(_Revalidation, served=served, identity=_identity(registry))
    # JSON and CSV to a client that accepts it (not PNG or Parquet, compressed already): a season of the demo, all
    # bands, 214 -> 17 kB in JSON, 84 -> 14 kB in CSV; as its Accept-Encoding weighs gzip (gzip;q=0 refuses it)
    app.add_middleware(NegotiatedGZip, minimum_size=1024, compresslevel=6,
                       exclude_content_types=(*DEFAULT_EXCLUDED_CONTENT_TYPES, FORMATS["parquet"]))
    # read-only answers of public satellite data: by default any origin may read them (a dashboard, a STAC browser)
    app.add_middleware(_Cors, allow_origins=cors, allow_methods=["GET", "HEAD", "POST"],
                       allow_headers=["*"],
                       expose_headers=["X-Cube-Version", "X-Acquired", "X-Dates", "Retry-After", "ETag",
                                       "Content-Disposition"])
    _add_error_handlers(app)
    _add_collection_routes(app, served)
    _add_timeseries_routes(app, served)
    _add_image_routes(app, served)
    return app


def _identity(registry: ParcelSet | None) -> str:
    """What an answer depends on beside its version and URL: the code (:func:`code_digest`), and the parcels ids
    are looked up in."""
    from cube.parcel_layer import parcels_digest

    return f"{code_digest()}|{'' if registry is None else parcels_digest(registry)}"


@functools.cache
def code_digest() -> str:
    """A digest of what computes the answers: the files of cardcube's packages (code and data: the tile grid, the
    schemas) and the versions of the installed distributions (numpy's percentiles, zarr's codecs), so that an
    upgrade changing an answer changes its ETag: the package version is bumped per release, not per fix."""
    import cardcube
    import catalog
    import cube
    import ingest

    installed = sorted(f"{d.metadata['Name']}=={d.version}" for d in importlib.metadata.distributions())
    return files_digest([pathlib.Path(p.__file__).parent for p in (cardcube, catalog, cube, ingest)],
                        "\n".join(installed))


def files_digest(packages: Sequence[pathlib.Path], salt: str = "") -> str:
    """A digest of the names and contents of the files in the folders ``packages`` (compiled files aside), and
    ``salt``."""
    digest = hashlib.sha256(salt.encode())
    for root in packages:
        for path in sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
            digest.update(str(path.relative_to(root.parent)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def serve(cube: StoreLike, *, parcels: Any = None, host: str = "127.0.0.1", port: int = 8080,
          storage_options: Mapping[str, Any] | None = None, id_column: str = "parcel_id", layer: str | None = None,
          refresh: float = REFRESH, array_cache: int = ARRAY_CACHE, store_timeout: float | None = STORE_TIMEOUT,
          origins: Sequence[str] = ("*",), reads: int = READS, read_wait: float = READ_WAIT,
          body_wait: float = BODY_WAIT, announce: Callable[[str], None] | None = None, root_path: str = "",
          access_log: bool = False) -> None:
    """Serve ``cube`` with uvicorn until interrupted (the arguments as in :func:`make_app`); ``announce`` gets
    the base URL once the server listens (after the cube and the parcels were found). ``root_path``: the path
    prefix a reverse proxy serves it under, stripped by the proxy (``/cardcube``), so that ``/docs`` finds the
    OpenAPI document there; ``access_log``: a line per request on stderr (:func:`cardcube.serving.serve_app`)."""
    app = make_app(cube, parcels=parcels, storage_options=storage_options, id_column=id_column, layer=layer,
                   refresh=refresh, array_cache=array_cache, store_timeout=store_timeout, origins=origins,
                   reads=reads, read_wait=read_wait, body_wait=body_wait)
    serve_app(app, host=host, port=port, announce=announce, root_path=root_path, access_log=access_log)
