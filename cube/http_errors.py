"""How the REST service (:mod:`cube.service`) answers an error: every one as :class:`ErrorBody` JSON, listed per
route in the OpenAPI document (:func:`route_answers`); routing errors (no such route, a method a route does not
answer, a path whose trailing slash is toggled, a body that is no JSON) and a refused CORS preflight in the same
body as the library's errors, whose statuses :func:`cardcube.serving.cardcube_error_response` maps."""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.routing import Match

from cardcube.errors import CardcubeError
from cardcube.serving import cardcube_error_response, error_response
from cube.request_limits import MAX_BODY_BYTES
from cube.route_parameters import invalid_message, not_geojson, query_parameters, route_path


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


def route_answers(*codes: int, ok: Mapping[int | str, dict[str, Any]] | None = None, tagged: bool = True
             ) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI responses of a route beside :data:`ERROR_RESPONSES`: its 200 (``ok``), the 304 of a conditional
    GET where its answers are ``tagged`` with an ETag (:class:`~cube.revalidation.Revalidation`), and the errors
    ``codes``; the document listed every error for every route (a 409 for ``/``), and no 304 or 408, which a
    generated client then took for an unexpected status."""
    return {**(ok or {}), **({304: NOT_MODIFIED} if tagged else {}), **{code: ERRORS[code] for code in codes}}


NOT_MODIFIED: dict[str, Any] = {"description": "the answer whose ETag If-None-Match names is the one this request "
                                               "would get (no body; ETag, Cache-Control, X-Cube-Version)"}


def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    """A routing error (no such route, a method the route does not answer) in the body of every other error."""
    where = f"{request.method} {request.url.path}"
    if exc.status_code == 404 and (moved := _slash_moved(request)) is not None:
        return RedirectResponse(moved, status_code=307)
    if exc.status_code == 404:
        root, path = request.scope.get("root_path", ""), route_path(request.scope)
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
        return error_response(422, "InvalidRequest", not_geojson("no UTF-8 JSON, or nested too deep"))
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
    path = route_path(request.scope)
    if path == "/":
        return None
    full = request.scope["path"]
    other = {**request.scope, "path": full.rstrip("/") if path.endswith("/") else f"{full}/"}
    if not any(route.matches(other)[0] != Match.NONE for route in request.app.router.routes):
        return None
    query = request.scope["query_string"].decode("latin-1")
    return quote(other["path"], safe="/") + (f"?{query}" if query else "")


class JsonCors(CORSMiddleware):
    """Starlette's CORS, with a refused preflight answered as every other error, in JSON (its own is text)."""

    def preflight_response(self, request_headers: Any) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code != 400:
            return response
        kept = {k: v for k, v in response.headers.items() if k not in ("content-length", "content-type")}
        return error_response(400, "CorsRefused", f"{response.body.decode()}: this service answers "
                              f"{', '.join(self.allow_methods)}, to the origins it was started with (cardcube serve "
                              f"--allow-origin)", headers=kept)



def add_error_handlers(app: FastAPI) -> None:
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
        described = query_parameters(request) or {}
        return error_response(422, "InvalidRequest", "; ".join(invalid_message(e, described) for e in exc.errors()))
