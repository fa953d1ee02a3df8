"""Conditional GETs of the REST service (:mod:`cube.service`): each answer's ``ETag`` names the cube version it was
read at, its URL and what else makes it (the parcel file, the code: :func:`code_digest`), so that a request naming
it in ``If-None-Match`` is a 304 read from nothing while that is the same (:class:`Revalidation`)."""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import pathlib
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

import anyio
from fastapi.responses import Response
from pydantic import ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cardcube.errors import CardcubeError
from cube.ledger import CubeVersion
from cube.parcels import ParcelSet
from cube.route_parameters import VERSION_NUMBER, route_path

if TYPE_CHECKING:
    from cube.service import ServedCube

COMMITTED = "x-cardcube-committed"  # what of the version an answer read its ETag names (not sent): tag_basis
# an answer pinned by as_of: a committed version never changes, but the cube may be built again at the same place
PINNED = "public, max-age=3600"


def _names_version(path: str) -> bool:
    """Whether the answer of route ``path`` names the version it read: a collection's description does (its number
    and commit time); an answer about parcels (a time series, a chip) names it too, but holds the same data read
    from a version that only recorded rejections as from the one before."""
    return re.fullmatch(r"/collections/[^/]+/?", path) is not None


def tag_basis(version: CubeVersion, names_version: bool) -> str:
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


class Revalidation:
    """Conditional GETs of ``/collections/...``: an answer carries an ``ETag`` of the version it was read at (of its
    data: :func:`tag_basis`), its URL and what else makes it (``served``: the parcels; the code), weak as it names
    the answer
    gzipped or not (a strong one names the bytes), and ``Cache-Control``: an hour when pinned by ``as_of``,
    else ``no-cache`` (a browser asks again, with ``If-None-Match``). A request whose ``If-None-Match`` names
    the answer the version it would read gives is a 304, read from nothing: a dashboard re-polling a parcel
    costs a version lookup until an ingest commits."""

    def __init__(self, app: ASGIApp, served: ServedCube, identity: str) -> None:
        self.app, self.served, self.identity = app, served, identity

    def etag(self, basis: str, scope: Scope) -> str:
        """Of the version read, what :func:`tag_basis` names; the request's URL and :func:`answer_identity`."""
        key = f"{self.identity}|{basis}|{route_path(scope)}?{scope['query_string'].decode('latin-1')}"
        return f'W/"{hashlib.sha256(key.encode()).hexdigest()[:20]}"'  # weak: the same, gzipped or not

    async def _current(self, scope: Scope, as_of: str | None) -> CubeVersion | None:
        """The version the request would read now, if it can be told without an error (else its route says)."""
        try:
            collection = route_path(scope).split("/")[2]
            number = None if as_of is None else VERSION_NUMBER.validate_python(as_of)  # "1.0" is 1, as routes read it
            return await anyio.to_thread.run_sync(self.served.version, collection, number)
        except (CardcubeError, ValidationError, IndexError):
            return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if scope["method"] not in ("GET", "HEAD") or not route_path(scope).startswith("/collections/"):
            return await self.app(scope, receive, _untagged(send))  # a POST's answer: no ETag
        as_of = parse_qs(scope["query_string"].decode("latin-1")).get("as_of", [None])[-1]
        # a parcel's answer also depends on its geometry in the parcel file, which a restart may amend: revalidated
        cache = PINNED if as_of is not None and "/parcels/" not in route_path(scope) else "no-cache"
        wanted = dict(scope["headers"]).get(b"if-none-match", b"").decode("latin-1")
        if wanted and (current := await self._current(scope, as_of)) is not None:
            version = current.version
            tag = self.etag(tag_basis(current, _names_version(route_path(scope))), scope)
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


def answer_identity(registry: ParcelSet | None) -> str:
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
