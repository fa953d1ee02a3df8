"""The parameters of the REST service's routes (:mod:`cube.service`) as FastAPI reads and documents them in /docs,
and the 422s of a request whose parameters or body the routes cannot read: a query parameter a route does not take is
named (:func:`known_parameters`), and pydantic's errors are said in the words of the parameters' descriptions."""

from __future__ import annotations

import collections
import difflib
from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import Path, Query, Request
from fastapi.routing import APIRoute
from pydantic import BeforeValidator, TypeAdapter
from pydantic_core import PydanticCustomError
from starlette.types import Scope

from cardcube.errors import InvalidRequestError
from cardcube.query import TIME_HELP
from cardcube.spec import CUBE_SPECS
from cube.chips import MAX_IMAGE_SIZE, MAX_SIZE
from cube.membership import DEFAULT_BUFFER, MAX_BUFFER
from cube.stats import STATS

MAX_SEASON_SIZE = 512  # px per panel of a season sheet (a chip alone may be up to cube.chips.MAX_SIZE)
UNKNOWN_NAMED = 10  # unknown query parameters a 422 names (the others counted)
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


def query_parameters(request: Request) -> dict[str, str | None] | None:
    """The query parameters of the route ``request`` matched, with their descriptions in /docs (None: no route of
    ours, or a page of the docs: a link to /docs with a tracking parameter was a 422, and Swagger UI's OAuth2
    redirect page is sent its ``code`` and ``state``). The routes' own: no dependency takes any."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute) or not route.include_in_schema:
        return None
    return {p.alias: p.field_info.description for p in route.dependant.query_params}


def known_parameters(request: Request) -> None:
    """An unknown query parameter is a 422 naming it, the closest known one and the route's parameters: a
    misspelt ``band=B04`` (for ``bands``) answered every band, as if it had not been asked."""
    parameters = query_parameters(request)
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


def route_path(scope: Scope) -> str:
    """The path routes see: behind a proxy's prefix (``--root-path``), ``scope["path"]`` starts with it."""
    root, path = scope.get("root_path", ""), scope["path"]
    return path[len(root):] if root and path.startswith(root) else path


def not_geojson(why: str) -> str:
    return (f"the body is not GeoJSON ({why}): POST a geometry, Feature or FeatureCollection as JSON, with "
            f"Content-Type: application/json")


def invalid_message(error: Mapping[str, Any], described: Mapping[str, str | None]) -> str:
    """One of pydantic's errors of a request in the words of the route's documentation: what was given, why it
    is refused, and what the parameter takes (its description in /docs)."""
    where, name = error["loc"][0], error["loc"][-1]
    if where == "body":
        return not_geojson(error.get("ctx", {}).get("error") or error["msg"])
    takes = f" ({described[name]})" if described.get(name) else ""
    if error["type"] == "missing":
        return f"{name} is required{takes}"
    why = "not one of the values it takes" if error["type"] == "string_pattern_mismatch" else (
        error["msg"][:1].lower() + error["msg"][1:])
    return f"{name}={error['input']!r}: {why}{takes}"
