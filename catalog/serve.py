"""``cardcube catalog serve``: the cube root over HTTP for STAC browsers and Zarr readers, with CORS.

A tiny Starlette app that maps each URL path to a key of the cube's zarr Store (a folder or ``s3://``),
so the catalog's relative links and the items' Zarr assets resolve under any base URL. GET and HEAD with
byte ranges (Zarr shard indexes are read by range), ``Access-Control-Allow-Origin: *`` on every answer, and
preflight OPTIONS. A folder of the cube (``.../cube.zarr/r10m/``, with or without the slash) answers with an
HTML list of its members, as a plain HTTP file server does: a Zarr group has no list of its arrays, and fsspec
(so zarr and xarray) finds them in such a page. Read-only; nothing outside the cube root is reachable, nor
the parcels' label layers an extraction keeps beside the cube (the declared parcels' ids and outlines, not the
cube's to publish) nor a writer's lock (who runs an ingest, and where).

A store on S3 is read with a bound on each request (``store_timeout``, ``--store-timeout``), and its failures are
answered as ``cardcube serve`` answers them, in JSON and with the CORS headers (a STAC browser on another origin
then reports the outage, not a CORS failure): 503 with ``Retry-After`` while it is out of reach, 502 while it
answers errors (:func:`cardcube.serving.cardcube_error_response`).
"""

from __future__ import annotations

import asyncio
import html
import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route
from zarr.abc.store import ByteRequest, OffsetByteRequest, RangeByteRequest, Store, SuffixByteRequest
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from cardcube.errors import CardcubeError, CubeNotFoundError
from cardcube.serving import STORE_TIMEOUT, UnexpectedErrors, cardcube_error_response, serve_app
from cardcube.storage import StoreLike, key_exists, open_store, reading, store_url
from catalog import keys
from cube.layout import LOCK_NAME, PARCELS_DIR, cube_root

CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, HEAD, OPTIONS",
    "Access-Control-Allow-Headers": "*",
    "Access-Control-Expose-Headers": "Content-Length, Content-Range, Accept-Ranges, Retry-After",
}
# one range: a set of several is ignored, as a server may, and so are positions past any object (Python reads
# no number of over 4,300 digits: a 500)
_RANGE = re.compile(r"bytes=(\d{0,18})-(\d{0,18})", re.IGNORECASE)
_MEDIA_TYPES = {".json": keys.JSON_MEDIA_TYPE}
MAX_KEY_BYTES = 1024  # S3's longest key; a folder's path of 4,096 bytes or more fails to be read (a 502), not found


def _media_type(key: str) -> str:
    """An item as GeoJSON (what the catalog's links to it say), any other document as JSON, the rest bytes."""
    parts = key.split("/")
    if len(parts) == 3 and key == keys.item_key(parts[0], parts[1]):
        return "application/geo+json"
    return next((t for ext, t in _MEDIA_TYPES.items() if key.endswith(ext)), "application/octet-stream")


def _byte_request(header: str | None, size: int) -> tuple[ByteRequest | None, int, int] | None:
    """``(request, first, last)`` of the bytes a Range header asks for: the whole object (request None) for none,
    or one a server ignores (RFC 9110 14.2: another unit, several ranges, an invalid range such as ``bytes=5-2``);
    None for a range the object cannot satisfy (a 416): from past its end, or its last 0 bytes."""
    whole = None, 0, size - 1
    m = None if header is None else _RANGE.fullmatch(header.strip())
    if not m or (not m[1] and not m[2]) or (m[1] and m[2] and int(m[2]) < int(m[1])):
        return whole
    if not m[1]:  # the last n bytes
        n = min(int(m[2]), size)
        return (SuffixByteRequest(n), size - n, size - 1) if n else None
    first = int(m[1])
    if first >= size:
        return None
    last = min(int(m[2]), size - 1) if m[2] else size - 1
    return (OffsetByteRequest(first) if last == size - 1 else RangeByteRequest(first, last + 1)), first, last


def _size(store: Store, key: str) -> int | None:
    """The size of file ``key``; None if there is none (an S3 prefix "exists" with size 0: no file)."""
    with reading(key, store):
        if not sync(store.exists(key)):
            return None
        size = int(sync(store.getsize(key)))
        return None if size == 0 and sync(_is_folder(store, key)) else size


def _read(store: Store, key: str, request: ByteRequest | None) -> bytes | None:
    with reading(key, store):
        buf = sync(store.get(key, prototype=default_buffer_prototype(), byte_range=request))
    return None if buf is None else buf.to_bytes()


async def _names(store: Store, prefix: str) -> list[str]:
    """The names ``store.list_dir`` gives under ``prefix``, but a file's own path (fsspec lists a file as itself)."""
    return [name async for name in store.list_dir(prefix)
            if name and "/" not in name and not _unpublished(f"{prefix}/{name}".lstrip("/"))]


async def _is_folder(store: Store, key: str) -> bool:
    """Whether ``key`` has members: on S3 a folder is a prefix, which "exists" as a file does."""
    return bool(await _names(store, key))


def _members(store: Store, prefix: str) -> list[str]:
    """The names under folder ``prefix``, sub-folders ending in ``/`` (empty: no such folder)."""
    async def listed() -> list[str]:
        names = await _names(store, prefix)
        folders = await asyncio.gather(*(_is_folder(store, f"{prefix}/{name}") for name in names))
        return sorted(f"{name}/" if folder else name for name, folder in zip(names, folders, strict=True))

    with reading(f"the list of {prefix}/", store):
        return sync(listed())


def _listing(key: str, names: list[str]) -> str:
    """A folder's members as HTML links, relative, so that they hold behind a proxy's path prefix too (fsspec,
    finding absolute ones outside the URL it listed, saw an empty folder: a Zarr group opened with no array).
    A folder is listed at its address ending with ``/``, against which a browser resolves them."""
    title = html.escape(f"/{key}/")
    rows = "".join(f'<li><a href="{html.escape(quote(n))}">{html.escape(n)}</a></li>' for n in names)
    return (f"<!DOCTYPE html><html><head><title>{title}</title></head>"
            f"<body><h1>{title}</h1><ul>{rows}</ul></body></html>")


def _unpublished(key: str) -> bool:
    """Whether ``key`` (or a folder's member ``key``) is kept from the web: see the module's docstring."""
    parts = key.split("/")
    return parts[0] == PARCELS_DIR or parts[-1] == LOCK_NAME


def _safe_key(path: str) -> str | None:
    parts = path.split("/")
    if not path or path.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\\" in path \
            or "\x00" in path or any(len(p.encode()) > 255 for p in parts) \
            or len(path.encode()) > MAX_KEY_BYTES:  # no file has such a name: a 404
        return None
    return None if _unpublished(path) else path


def make_app(cube: StoreLike, *, storage_options: Mapping[str, Any] | None = None,
             store_timeout: float | None = STORE_TIMEOUT) -> Starlette:
    """The ASGI app serving the cube root ``cube`` (read-only, a URL read with ``storage_options``); a root without
    a catalog is refused at once, as ``cardcube serve`` refuses a root without a cube. ``store_timeout``: seconds a
    request to an S3 store may take to fail, retries included, as in :func:`cube.service.make_app`."""
    store = open_store(cube_root(cube), storage_options=storage_options, read_only=True, timeout=store_timeout)
    if not key_exists(store, keys.ROOT_KEY):
        raise CubeNotFoundError(f"no STAC catalog at {store_url(store)}: {keys.ROOT_KEY} is missing (a wrong --cube, "
                                f"or 'cardcube catalog build' writes it from the ledger)")

    async def root(request: Request) -> Response:  # relative: behind a proxy's path prefix too
        return RedirectResponse(keys.ROOT_KEY, headers=CORS_HEADERS)

    async def document(request: Request) -> Response:
        if request.method == "OPTIONS":
            return Response(status_code=204, headers=CORS_HEADERS)
        path = request.path_params["key"]
        key = _safe_key(path.removesuffix("/"))
        size = None if key is None or path.endswith("/") else await run_in_threadpool(_size, store, key)
        if size is None:
            names = [] if key is None else await run_in_threadpool(_members, store, key)
            if not names:
                return Response("not found", status_code=404, headers=CORS_HEADERS, media_type="text/plain")
            if not path.endswith("/"):  # relative, as the listing's links: behind a proxy's path prefix too
                return RedirectResponse(f"{quote(key.rsplit('/', 1)[-1])}/", headers=CORS_HEADERS)
            body = _listing(key, names).encode()
            headers = {**CORS_HEADERS, "Content-Length": str(len(body))}  # HEAD says GET's length
            return Response(b"" if request.method == "HEAD" else body, headers=headers, media_type="text/html")
        wanted = _byte_request(request.headers.get("range"), size)
        if wanted is None:
            return Response(status_code=416, headers={**CORS_HEADERS, "Content-Range": f"bytes */{size}"})
        byte_request, first, last = wanted
        headers = {**CORS_HEADERS, "Accept-Ranges": "bytes", "Content-Length": str(last - first + 1)}
        status = 200
        if byte_request is not None:
            status = 206
            headers["Content-Range"] = f"bytes {first}-{last}/{size}"
        if request.method == "HEAD":
            return Response(status_code=status, headers=headers, media_type=_media_type(key))
        body = await run_in_threadpool(_read, store, key, byte_request)
        if body is None:
            return Response("not found", status_code=404, headers=CORS_HEADERS, media_type="text/plain")
        # the bytes read: a document an ingest replaced since its size was taken went out short or long, a broken answer
        headers["Content-Length"] = str(len(body))
        if byte_request is not None and not body:  # one cut short meanwhile: none of the range is there now
            return Response(status_code=416, headers={**CORS_HEADERS, "Content-Range": f"bytes */{size}"})
        if byte_request is not None:
            headers["Content-Range"] = f"bytes {first}-{first + len(body) - 1}/{size}"
        return Response(body, status_code=status, headers=headers, media_type=_media_type(key))

    async def not_allowed(request: Request, exc: Exception) -> Response:  # with CORS, as every other answer
        return Response("method not allowed: the catalog is read-only (GET, HEAD)", status_code=405,
                        headers={**CORS_HEADERS, "Allow": "GET, HEAD, OPTIONS"}, media_type="text/plain")

    async def failed(request: Request, exc: CardcubeError) -> Response:  # the store's (``reading``): a 502 or 503
        return cardcube_error_response(exc, headers=CORS_HEADERS, where=f"{request.method} {request.url.path}")

    return Starlette(routes=[
        Route("/", root, methods=["GET", "HEAD"]),
        Route("/{key:path}", document, methods=["GET", "HEAD", "OPTIONS"]),
    ], exception_handlers={405: not_allowed, CardcubeError: failed},
        middleware=[Middleware(UnexpectedErrors, headers=CORS_HEADERS)])  # a bug's 500 a STAC browser reads too


def serve(cube: StoreLike, *, host: str = "127.0.0.1", port: int = 8000,
          storage_options: Mapping[str, Any] | None = None, store_timeout: float | None = STORE_TIMEOUT,
          announce: Callable[[str], None] | None = None) -> None:
    """Serve ``cube`` until interrupted (the arguments as in :func:`make_app`); ``announce`` gets the base URL once
    the server listens."""
    serve_app(make_app(cube, storage_options=storage_options, store_timeout=store_timeout), host=host, port=port,
              announce=announce)
