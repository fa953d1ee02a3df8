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
parameter a route does not take is a 422 naming it, not ignored (:func:`~cube.route_parameters.known_parameters`).

Each answer about one collection says which cube version it was read from (``version`` or
``cube_version`` in JSON, the ``X-Cube-Version`` header), so two answers can be compared. The service
keeps the versions it has read (:class:`cube.versions.VersionCache`): a pinned ``as_of`` version never
changes, and the latest is looked up again at most every ``refresh`` seconds, so on S3 a query does not pay
the ledger's listing and read each time. Answers carry an ``ETag`` of their version (of its data: a version that
only recorded rejections reads the data of the one before) and URL, and a request naming it in ``If-None-Match`` is
a 304 read from nothing while that is the same (:class:`~cube.revalidation.Revalidation`).
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
(``/docs``) lists them with :class:`~cube.http_errors.ErrorBody`.

A store on S3 is read with a bound on each request (``store_timeout``, ``cardcube serve --store-timeout``): an
outage is a 503 within seconds, not after the minute of retries a batch job is right to spend, past a reverse
proxy's own timeout (nginx's and many load balancers' 60 s). At most ``reads`` requests read the cube at once (time
series and images, :class:`~cube.request_limits.ReadSlots`); the others wait their turn up to ``read_wait``
seconds, then are a 503 Busy with ``Retry-After``, so the memory of the answers being made is bounded, and the routes
that read nothing answer at once; at most twice ``reads`` POSTs are in the service at once, their bodies parsed, the
others waiting unread (:class:`~cube.request_limits.BodyLimit`), so the memory of the bodies is bounded too.
"""

from __future__ import annotations

import functools
import io
import re
import threading
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar
from urllib.parse import quote

import anyio
import pandas as pd
from fastapi import Body, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from fastapi_offline import FastAPIOffline
from pyproj import CRS
from pyproj.exceptions import CRSError
from shapely.geometry.base import BaseGeometry
from starlette.middleware.gzip import DEFAULT_EXCLUDED_CONTENT_TYPES
from zarr.abc.store import Store

from cardcube.errors import (
    CardcubeError,
    CorruptDocumentError,
    CorruptShardError,
    CubeNotFoundError,
    DateNotFoundError,
    InvalidRequestError,
    ParcelError,
    ParcelNotFoundError,
    RequestTooLargeError,
    VersionNotFoundError,
)
from cardcube.query import TIME_FORMAT
from cardcube.serving import RETRY_AFTER, STORE_TIMEOUT, UnexpectedErrors, serve_app
from cardcube.spec import CUBE_SPECS
from cardcube.storage import StoreLike, open_store, store_url
from cube import layout, render
from cube.chips import MAX_SHEET_PIXELS, check_chip, check_image_size, check_sheet, chip
from cube.content_coding import NegotiatedGZip
from cube.dataset import check_acquisitions, date_span, pass_dates
from cube.extraction_files import PORTABLE_PARQUET
from cube.geometry_trial import check_bufferable, polygonal_in_child
from cube.http_errors import ERROR_RESPONSES, JsonCors, add_error_handlers, route_answers
from cube.ledger import CubeVersion, committed_versions, no_cube_hint
from cube.membership import DEFAULT_BUFFER
from cube.parcels import Overlay, ParcelSet, as_parcels, crs_member, read_parcels
from cube.request_limits import (
    BODY_WAIT,
    MAX_BODY_BYTES,
    MAX_POSTED_PARCELS,
    POSTS_PER_READ,
    READ_WAIT,
    READS,
    BodyLimit,
    ReadSlots,
)
from cube.revalidation import COMMITTED, Revalidation, answer_identity, tag_basis
from cube.route_parameters import (
    MAX_SEASON_SIZE,
    AllTouched,
    AsOf,
    Bands,
    Buffer,
    ChipSize,
    Collection,
    Crs,
    Day,
    Format,
    ImageBands,
    Mask,
    PanelSize,
    ParcelId,
    Scale,
    Stats,
    Time,
    known_parameters,
)
from cube.stats import STATS
from cube.tile_arrays import ArrayCache
from cube.timeseries import MAX_PIXELS, check_query, parcel_timeseries
from cube.versions import REFRESH, VersionCache

SEASON_ADVICE = "narrow the time range or the size"  # of a season sheet too large: the route has no scale
MAX_READ_BYTES = 512 * 2**20  # stored values one time series request may read (a 10 km polygon's season: 150 MB)
MAX_POSTED_DEGREES = 1.0  # a posted parcel's span in lon or lat (a field spans a thousandth of it)
MAX_ROWS = 100_000  # rows of one time series answer: 1,000 parcels x 50 dates x 2 bands (JSON: ~40 MB, 300 MB to make)
DOCS_ASSETS = "/docs-assets"  # where /docs and /redoc load Swagger UI and ReDoc from (fastapi-offline's copies)
FORMATS = {"json": "application/json", "csv": "text/csv", "parquet": "application/vnd.apache.parquet"}
ARRAY_CACHE = 1024  # opened arrays kept between requests, each with up to 64 of its shard indexes
Checked = TypeVar("Checked")  # what a route checks before its turn to read, and reads with

__all__ = ["ARRAY_CACHE", "FORMATS", "MAX_BODY_BYTES", "MAX_PIXELS", "MAX_POSTED_PARCELS", "MAX_READ_BYTES",
           "MAX_ROWS", "MAX_SEASON_SIZE", "MAX_SHEET_PIXELS", "REFRESH", "RETRY_AFTER", "STORE_TIMEOUT", "VersionCache",
           "allowed_origins", "make_app", "serve"]


PNG: dict[int | str, dict[str, Any]] = {200: {"content": {"image/png": {}}, "description": "a PNG image"}}
TABLE: dict[int | str, dict[str, Any]] = {200: {"content": {media: {} for media in FORMATS.values()}, "description": (
    "a row per parcel, date and band, in the format= asked for: JSON {collection, cube_version, units, parcels, "
    "columns, rows}, CSV or Parquet (the units of each band: in the Parquet metadata, pandas attrs)")}}


# what a read of a version that is no more raises (beside errors of no cardcube kind: an old shard index)
_GONE = (VersionNotFoundError, CorruptShardError, CorruptDocumentError)


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


@dataclass(frozen=True, slots=True)
class ServedCube:
    """What the routes read from: the cube's store, the registry parcel ids in URLs are looked up in (None: ids
    are refused), what is kept between requests (versions; opened arrays, None for none), and the turns to read."""

    store: Store
    registry: ParcelSet | None
    versions: VersionCache
    arrays: ArrayCache | None
    reads: ReadSlots
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
        itself if the answer ``names_version``, else of its data, :func:`~cube.revalidation.tag_basis`). The
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
        response.headers.update({"X-Cube-Version": str(version.version), COMMITTED: tag_basis(version, names_version)})
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


def _add_collection_routes(app: FastAPI, served: ServedCube) -> None:
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

    @app.get("/collections/{collection}", responses=route_answers(404))
    @app.head("/collections/{collection}", responses=route_answers(404))
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


def _add_timeseries_routes(app: FastAPI, served: ServedCube) -> None:
    """The time series of a parcel by id (GET) or of posted GeoJSON (POST)."""

    @app.get("/collections/{collection}/parcels/{parcel_id:path}/timeseries",
             responses=route_answers(404, 413, ok=TABLE))
    @app.head("/collections/{collection}/parcels/{parcel_id:path}/timeseries",
              responses=route_answers(404, 413, ok=TABLE))
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

    @app.post("/collections/{collection}/timeseries",
              responses=route_answers(404, 408, 413, 415, ok=TABLE, tagged=False))
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


def _add_image_routes(app: FastAPI, served: ServedCube) -> None:
    """A parcel's chip of one acquisition and its season sheet, as PNG (GET and HEAD)."""

    @app.get("/collections/{collection}/parcels/{parcel_id:path}/chip.png", response_class=Response,
             responses=route_answers(404, 409, 413, ok=PNG))
    @app.head("/collections/{collection}/parcels/{parcel_id:path}/chip.png", response_class=Response,
              responses=route_answers(404, 409, 413, ok=PNG))
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
             responses=route_answers(404, 413, ok=PNG))
    @app.head("/collections/{collection}/parcels/{parcel_id:path}/season.png", response_class=Response,
              responses=route_answers(404, 413, ok=PNG))
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
    cube at once, the others waiting their turn up to ``read_wait`` seconds
    (:class:`~cube.request_limits.ReadSlots`), and twice as many POSTs in the service at once, the others waiting as
    long before their body is read (:class:`~cube.request_limits.BodyLimit`); ``body_wait``: seconds a POST body may
    take to arrive whole, then a 408 (:class:`~cube.request_limits.BodyLimit`)."""
    cors = allowed_origins(origins)
    slots = ReadSlots(reads, read_wait)
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
    served = ServedCube(store, registry, versions, arrays, slots, threading.BoundedSemaphore(reads))
    # the docs pages load Swagger UI and ReDoc from the package, not a CDN: an agency's network may reach no CDN
    app = FastAPIOffline(title="cardcube", summary="Parcel time series and image chips from a Sentinel datacube",
                         responses=ERROR_RESPONSES, dependencies=[Depends(known_parameters)],
                         static_url=DOCS_ASSETS, redirect_slashes=False)  # redirected by _slash_moved
    app.add_middleware(UnexpectedErrors)  # within CORS: a bug's 500 is readable from another origin too
    app.add_middleware(BodyLimit, wait=body_wait, posts=POSTS_PER_READ * reads, post_wait=read_wait)
    app.add_middleware(Revalidation, served=served, identity=answer_identity(registry))
    # JSON and CSV to a client that accepts it (not PNG or Parquet, compressed already): a season of the demo, all
    # bands, 214 -> 17 kB in JSON, 84 -> 14 kB in CSV; as its Accept-Encoding weighs gzip (gzip;q=0 refuses it)
    app.add_middleware(NegotiatedGZip, minimum_size=1024, compresslevel=6,
                       exclude_content_types=(*DEFAULT_EXCLUDED_CONTENT_TYPES, FORMATS["parquet"]))
    # read-only answers of public satellite data: by default any origin may read them (a dashboard, a STAC browser)
    app.add_middleware(JsonCors, allow_origins=cors, allow_methods=["GET", "HEAD", "POST"],
                       allow_headers=["*"],
                       expose_headers=["X-Cube-Version", "X-Acquired", "X-Dates", "Retry-After", "ETag",
                                       "Content-Disposition"])
    add_error_handlers(app)
    _add_collection_routes(app, served)
    _add_timeseries_routes(app, served)
    _add_image_routes(app, served)
    return app


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
