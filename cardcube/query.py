"""What a read asks for besides bands: a time range and an area, parsed one way for every entry point.

The catalog's router (:func:`catalog.find_tiles`), ``open_cube`` and everything built on it (time series,
chips, the CLI, the REST service) take ``time`` and ``bbox``/``geometry``/``crs`` in the same forms and
read them with these functions, so ``time="2024-05"`` means May 2024 wherever it is given.
"""

from __future__ import annotations

import math
import numbers
import re
from datetime import date, datetime
from typing import Any

import numpy as np
import pandas as pd
import pyproj
import shapely
from odc.geo.geom import Geometry
from shapely.geometry import MultiPolygon, box, shape
from shapely.geometry.base import BaseGeometry

from cardcube.errors import InvalidRequestError

TimeBound = str | date | datetime | np.datetime64 | None
TimeLike = str | date | np.datetime64 | tuple[TimeBound, TimeBound] | slice | None
TimeSelection = TimeLike | frozenset  # a time range, or the exact acquisition times to keep (an extraction's update)
TIME_HELP = ("time range: start/end (2024-04-01/2024-09-30, 2024-04/2024-06, 2024-04-01/..) or one period "
             "(2024-05); ends include their whole day or month")  # for the command line's --time
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"  # an acquisition time written out: UTC, to the second as the ledger has it
ZONE_MARGIN = 10.0  # degrees beyond a projected CRS's area of use where a lon/lat query is still reprojected
_OFFSET = re.compile(r"(Z|[+-]\d\d(?::?\d\d)?)$")  # Z, +02:00, +0200 or +02 (ISO 8601)
# ISO 8601 after its offset: a year, a month, a day, then hours to seconds, their fraction to the nanosecond (1)
_ISO = re.compile(r"\d{4}(?:-\d\d(?:-\d\d(?:[T ]\d\d(?::\d\d(?::\d\d(?:(\.\d{1,9})\d*)?)?)?)?)?)?")
YEARS = (1678, 2261)  # the whole years datetime64[ns] holds (1677-09-21 to 2262-04-11)
_EARLIEST, _LATEST = np.datetime64("1678-01-01", "ns"), np.datetime64("2262-01-01", "ns")


class _NotISO(InvalidRequestError):
    """A time that is no ISO 8601 date or time (a range names itself in the message)."""


def _parse_text(text: str) -> tuple[np.datetime64, np.timedelta64]:
    """An ISO 8601 date or time at the precision written (to the nanosecond), and its UTC offset. Only ISO
    forms: numpy alone would also take ``20240610`` (the year 20,240,610), ``today`` and ``NaT``. The time may
    follow the day after a space (RFC 3339, and pandas' print of a time: ``2024-05-10 05:49:54+00:00``), and its
    "T" and "Z" may be lower case (RFC 3339). A message names the text as given, not what is left of it."""
    given = text.strip()
    text, offset = given.upper(), np.timedelta64(0, "m")
    day, sep, clock = text.partition("T")
    if not sep:  # its offset was looked for after a "T" only: "2024-05-10 05:49:54Z" was no time
        day, sep, clock = text.partition(" ")
    found = _OFFSET.search(clock) if sep else None
    if found:
        clock, mark = clock[: found.start()], found[1]
        if mark != "Z":
            hours, minutes = int(mark[1:3]), int(mark[3:].lstrip(":") or 0)
            if hours > 23 or minutes > 59:  # +25:00 shifted the range by a day without a word
                raise InvalidRequestError(f"time {given!r} has the UTC offset {mark}, which is no offset: hours up "
                                          f"to 23, minutes up to 59 (e.g. +02:00, or Z for UTC)")
            offset = np.timedelta64((hours * 60 + minutes) * (1 if mark[0] == "+" else -1), "m")
        text = f"{day}T{clock}"
    written = _ISO.fullmatch(text)
    try:
        if not written:
            raise ValueError(text)
        return np.datetime64(text[: written.end(1) if written[1] else None]), offset  # beyond ns: cut
    except ValueError:
        raise _NotISO(f"time {given!r} is not an ISO 8601 date or time: use YYYY-MM-DD, YYYY-MM (a month) or an ISO "
                      f"range start/end{space_for_plus(given)}") from None


def space_for_plus(text: str) -> str:
    """A hint for a time whose UTC offset lost its "+" to URL decoding ("12:50:32 02:00"), else ""."""
    if re.search(r"\d \d\d(:?\d\d)?$", str(text).strip()):
        return " (a UTC offset's '+' reaches a URL's query as a space: write it %2B, or give the time in UTC with Z)"
    return ""


def _year(value: datetime | np.datetime64) -> int:
    """The year of an instant, read before numpy makes it nanoseconds (which would wrap beyond 2262)."""
    if isinstance(value, datetime):
        return value.year
    return int(value.astype("datetime64[Y]").astype("int64")) + 1970


def _beyond(year: int, value: Any, *, end: bool) -> np.datetime64 | None:
    """The bound of a year datetime64[ns] cannot hold (None: it can). No cube holds a date there, so a start
    before 1678 or an end after 2261 (``../9999-12-31``) is the range left open that way; the other way round the
    range holds no time a cube can, an error."""
    if YEARS[0] <= year <= YEARS[1]:
        return None
    if (year > YEARS[1]) != end:
        raise InvalidRequestError(f"time {value!r}: a cube's times lie within the years {YEARS[0]}-{YEARS[1]}")
    return _LATEST if end else _EARLIEST


def _bound(value: TimeBound, *, end: bool) -> np.datetime64 | None:
    """A start bound, or an exclusive end bound just after the whole period written: ``2024-05`` ends with
    May, ``2024-05-03`` with that day, a datetime with itself; a datetime64 is the period of its unit, as its text
    is (``np.datetime64("2024-05")`` is May, a ``datetime64[ns]`` one nanosecond)."""
    if value is None or (isinstance(value, str) and value.strip() in ("", "..")):
        return None
    if value is pd.NaT or (isinstance(value, np.datetime64) and np.isnat(value)):  # a start of NaT left it open
        raise InvalidRequestError(f"time {value!r} is not a date or time (NaT: a time pandas could not read?)")
    if isinstance(value, date) and not isinstance(value, datetime):
        value = value.isoformat()  # a day: the whole of it, as written
    if isinstance(value, str):
        parsed, offset = _parse_text(value)  # used only once its year is one nanoseconds hold
        if (beyond := _beyond(int(value.strip()[:4]), value, end=end)) is not None:
            return beyond
        return ((parsed + 1 if end else parsed) - offset).astype("datetime64[ns]")
    if not isinstance(value, datetime | np.datetime64):
        raise InvalidRequestError(f"time {value!r} is not a date, a time or an ISO 8601 string")
    if (beyond := _beyond(_year(value), value, end=end)) is not None:
        return beyond
    if isinstance(value, datetime):  # through pandas: numpy cut a pandas Timestamp to the microsecond
        stamp = pd.Timestamp(value)
        value = (stamp.tz_convert(None) if stamp.tzinfo is not None else stamp).as_unit("ns").to_datetime64()
    # + 1 is one of its own unit: a day's or a month's datetime64 (``.astype("datetime64[D]")``) was its midnight
    return (value + 1 if end else value).astype("datetime64[ns]")


def parse_time_range(time: TimeLike) -> tuple[np.datetime64 | None, np.datetime64 | None]:
    """``[lo, hi)`` in UTC from ``"2024-05"`` (a period: that month), ``"2024-04-01/2024-05-31"``,
    ``"2024-04-01/.."``, a ``(start, end)`` pair (or ``slice(start, end)``, as xarray's ``sel`` takes) of strings,
    dates, datetimes or datetime64 (None or ``..``: open), or one date, datetime or datetime64 (that day, that
    instant, the period of its unit). Ends are inclusive of the period they write. An empty range is an error, not
    an empty result."""
    if time is None:
        return None, None
    if isinstance(time, date | np.datetime64):  # one date or instant: that period
        time = (time, time)
    if isinstance(time, slice):  # xarray's sel(time=slice("2024-04", "2024-06")): both ends whole, as a pair's
        if time.step is not None:
            raise InvalidRequestError(f"time {time!r}: a time slice takes no step (start and end only)")
        time = (time.start, time.stop)
    if isinstance(time, numbers.Number) and not isinstance(time, bool):  # numpy's too
        raise InvalidRequestError(f"time {time!r} is a number, not a date: give it as text, e.g. '{time}' (a year), "
                                  "'2024-05' or '2024-05-01/2024-06-30'")
    if isinstance(time, set | frozenset):  # unpacked as a pair, a set of two dates was a range in either order
        raise InvalidRequestError(f"time {time!r} is a set, which has no order: give a range as (start, end) or "
                                  f"'start/end'" + ("" if isinstance(time, frozenset) else
                                                    "; exact acquisition times as a frozenset (open_cube, "
                                                    "parcel_timeseries)"))
    if isinstance(time, str) and not time.strip():  # an empty shell variable: every date, as if none were given
        raise InvalidRequestError("time '' is empty: give a date, a month or a range start/end (none: every date)")
    if isinstance(time, str):
        start, sep, end = time.partition("/")
        if not sep:
            end = start
    else:
        try:
            start, end = time
        except (TypeError, ValueError):
            raise InvalidRequestError(f"time {time!r} is not a range: give 'start/end' or (start, end)") from None
    bounds = []
    for value, is_end in ((start, False), (end, True)):
        try:
            bounds.append(_bound(value, end=is_end))
        except _NotISO as exc:  # a subclass only here: the message names a range, not one bound
            if not isinstance(time, str) or not sep:
                raise InvalidRequestError(str(exc)) from None
            raise InvalidRequestError(f"time {time!r} is not an ISO 8601 range ({value!r} is no date): use "
                                      f"YYYY-MM-DD, YYYY-MM (a month) or an ISO range start/end"
                                      f"{space_for_plus(value)}") from None
    lo, hi = bounds
    if lo is not None and hi is not None and lo >= hi:
        raise InvalidRequestError(f"empty time range {time!r}: it ends before it starts")
    return lo, hi


def time_text(time: TimeSelection) -> str | None:
    """``time`` as ``--time`` writes it (``start/end``, ``..`` for an open end) where that text selects the same
    range: a pair (a tuple, a list or an array of two) or a slice given in Python is then recorded (an extraction's
    manifest) as the same run as its text; anything else as its own text."""
    if time is None:
        return None
    if isinstance(time, slice | tuple | list | np.ndarray):  # a list's was its repr: its --time text another run
        ends = (time.start, time.stop) if isinstance(time, slice) else list(time)
        if len(ends) == 2:
            text = "/".join(".." if e is None else str(e) for e in ends)
            try:
                if parse_time_range(text) == parse_time_range(time):
                    return text
            except InvalidRequestError:
                pass
    return str(time)


def in_time_range(times: np.ndarray, span: tuple[np.datetime64 | None, np.datetime64 | None]) -> np.ndarray:
    """Which of ``times`` (datetime64) lie in ``span``, ``[lo, hi)`` as :func:`parse_time_range` gives it."""
    lo, hi = span
    keep = np.ones(len(times), bool)
    if lo is not None:
        keep &= times >= lo
    if hi is not None:
        keep &= times < hi
    return keep


def parse_time_selection(time: TimeSelection) -> tuple[np.datetime64 | None, np.datetime64 | None] | frozenset:
    """``[lo, hi)`` bounds of a time range (:func:`parse_time_range`), or a frozenset of exact times as
    datetime64[ns] in UTC."""
    if isinstance(time, frozenset):  # each read as a range's start is, its offset converted
        return frozenset(_exact(t) for t in time)
    return parse_time_range(time)


def _exact(value: TimeBound) -> np.datetime64:
    """One exact time of a frozenset: the instant it writes, in UTC (a day: its midnight), to the second, as ingest
    keeps a scene's time (a STAC item's datetime of 10:50:31.024Z is the cube's 10:50:31)."""
    if value is None or (isinstance(value, str) and value.strip() in ("", "..")):
        raise InvalidRequestError(f"time {value!r} in a set of exact times is no time")
    return _bound(value, end=False).astype("datetime64[s]").astype("datetime64[ns]")


def in_time_selection(times: np.ndarray, selection: tuple | frozenset) -> np.ndarray:
    """Which of ``times`` (datetime64[ns]) ``selection`` (of :func:`parse_time_selection`) keeps: within its
    bounds, or one of its exact times."""
    if isinstance(selection, frozenset):
        return np.isin(times, np.array(sorted(selection), dtype="datetime64[ns]"))
    return in_time_range(times, selection)


def query_geometry(bbox: Any, geometry: Any, crs: Any, *, default_crs: Any) -> Geometry | None:
    """The area a read asks for: ``bbox`` ``(minx, miny, maxx, maxy)`` or ``geometry`` (shapely, a GeoJSON
    mapping, anything with ``__geo_interface__``, a FeatureCollection or a GeoDataFrame/GeoSeries (the union of
    their geometries), or an ``odc.geo`` Geometry; a GeoDataFrame or Geometry is in its own CRS, and a ``crs``
    naming another is refused: its coordinates were read as that CRS's, another place), in ``crs`` or else
    ``default_crs``. None: no area given."""
    if bbox is not None and geometry is not None:
        raise InvalidRequestError("give either a bbox or a geometry, not both")
    if crs is not None:
        try:
            pyproj.CRS.from_user_input(crs)
        except pyproj.exceptions.CRSError:
            raise InvalidRequestError(f"unknown CRS {crs!r}; give e.g. EPSG:4326 or EPSG:32631") from None
    if isinstance(bbox, str | bytes):  # was "bbox (5, ., 6, 7, ,, ...) is not (minx, ...)", its characters
        raise InvalidRequestError(f"bbox {bbox!r} is text: give four numbers (minx, miny, maxx, maxy), e.g. "
                                  f"bbox=(5.67, 52.71, 5.68, 52.72) with crs='EPSG:4326'")
    if bbox is not None:
        # in plain numbers: a GeoDataFrame's total_bounds was said as (np.float64(5.67), ...)
        said = "(" + ", ".join(map(str, (v.item() if isinstance(v, np.generic) else v for v in bbox))) + ")"
        if (len(bbox) != 4 or not all(map(math.isfinite, bbox)) or bbox[1] > bbox[3]
                or (bbox[0] > bbox[2] and not pyproj.CRS.from_user_input(crs or default_crs).is_geographic)):
            raise InvalidRequestError(f"bbox {said} is not (minx, miny, maxx, maxy)")
        if bbox[0] == bbox[2] or bbox[1] == bbox[3]:  # its box is empty once reprojected: no tile, not a word why
            raise InvalidRequestError(f"bbox {said} has no area (minx = maxx or miny = maxy): give a box "
                                      f"around the place, e.g. a few metres around a point")
        minx, miny, maxx, maxy = bbox
        if minx > maxx:  # across the antimeridian, as STAC and GeoJSON write it: its two sides
            return Geometry(MultiPolygon([box(minx, miny, 180, maxy), box(-180, miny, maxx, maxy)]), crs or default_crs)
        return Geometry(box(*bbox), crs or default_crs)
    if geometry is None:
        return None
    if isinstance(geometry, Geometry):
        _check_own_crs(geometry.crs, crs, "an odc.geo Geometry")
        return geometry if crs is None or geometry.crs is not None else Geometry(geometry.geom, crs)
    if hasattr(geometry, "union_all") and hasattr(geometry, "crs"):  # a GeoDataFrame or GeoSeries: in its own CRS
        _check_own_crs(geometry.crs, crs, f"a {type(geometry).__name__}")
        return Geometry(geometry.union_all(), geometry.crs or crs or default_crs)
    if not isinstance(geometry, BaseGeometry):
        geometry = _shape(getattr(geometry, "__geo_interface__", geometry))
    return Geometry(geometry, crs or default_crs)


def _shape(geojson: Any) -> BaseGeometry:
    """The shapely geometry of a GeoJSON geometry, Feature or FeatureCollection (the union of its features); a
    Feature without geometry is empty. Anything else is the caller's error, said as one (until 2026-12-07 an
    AttributeError, KeyError or TypeError of shapely's, e.g. for a Feature whose geometry is null)."""
    try:
        if isinstance(geojson, dict) and geojson.get("type") == "FeatureCollection":  # shape() reads no collection
            features = geojson.get("features") or []
            return shapely.union_all([shape(f["geometry"]) for f in features if f.get("geometry")])
        if isinstance(geojson, dict) and geojson.get("type") == "Feature" and geojson.get("geometry") is None:
            return shapely.GeometryCollection()  # empty: "the geometry is empty", where that is an error
        return shape(geojson)
    except (ValueError, TypeError, AttributeError, IndexError, KeyError, OverflowError,
            shapely.errors.ShapelyError) as exc:
        raise InvalidRequestError(f"geometry {str(geojson)[:200]} is no GeoJSON geometry, Feature or "
                                  f"FeatureCollection ({type(exc).__name__}: {exc}): give one, a shapely geometry or "
                                  "a bbox") from None
    except RecursionError:  # coordinates nested hundreds of levels deep
        raise InvalidRequestError("the geometry's coordinates are nested too deep: give a GeoJSON geometry") from None


def _check_own_crs(own: Any, crs: Any, what: str) -> None:
    """A clear error for a ``crs`` other than the CRS ``own`` a geometry (``what``) carries: taking its coordinates
    as ``crs``'s put the area at another place (parcels in EPSG:32632 read as EPSG:32631: 6 degrees west, the data
    of other fields where the cube has tiles there)."""
    if own is None or crs is None:
        return
    mine = pyproj.CRS.from_user_input(own)
    if not mine.equals(crs, ignore_axis_order=True):  # OGC:CRS84 is EPSG:4326 to shapely
        raise InvalidRequestError(f"the geometry ({what}) is in {mine.to_string()}, and crs={crs!r} names another: "
                                  f"crs= says what the area's coordinates are in, not what to read it into (a read is "
                                  f"on the tiles' grid); leave crs out, or reproject the geometry first "
                                  f"(.to_crs({crs!r}))")


def check_lonlat(bounds: tuple[float, float, float, float], crs: Any, *, what: str, advice: str) -> None:
    """A clear error for ``what`` (coordinates of bounds ``bounds``, in the geographic ``crs``) that are no
    lon/lat: metres read as degrees would route to no tile without a word. ``advice``: how to name the CRS."""
    minx, miny, maxx, maxy = bounds
    if not all(map(math.isfinite, bounds)) or minx < -180 or maxx > 180 or miny < -90 or maxy > 90:  # NaN passed
        shown = ", ".join(f"{v:.1f}" if abs(v) < 1e9 else f"{v:.3g}" for v in bounds)  # not 300 digits of 1e300
        raise InvalidRequestError(f"{what} ({shown}) are not lon/lat in {crs}: {advice}")


def in_crs(area: Geometry, crs: Any) -> BaseGeometry:
    """``area`` as a shapely geometry in ``crs``, its edges densified first: a straight edge in one CRS is a
    curve in another, and reprojecting only the corners would cut it short. An area in lon/lat is first cut
    to where ``crs`` is meant for (a UTM zone's 6 degrees, and :data:`ZONE_MARGIN` around them), so a query
    of the whole world finds every tile instead of reprojecting into nonsense; so is one in another projected CRS
    that reaches beyond there (a web map's view of the world in Web Mercator), taken to lon/lat first."""
    if area.crs == crs:
        return area.geom
    use = pyproj.CRS.from_user_input(crs).area_of_use
    if use is not None:  # with a margin: MGRS tiles reach past their zone's edges
        west, south, east, north = use.bounds
        near = box(west - ZONE_MARGIN, max(south - ZONE_MARGIN, -90), east + ZONE_MARGIN, min(north + ZONE_MARGIN, 90))
        # and 360 degrees away: zone 1's tiles reach west over the antimeridian, to longitudes written 179 E
        near = shapely.union_all([shapely.affinity.translate(near, xoff=dx) for dx in (-360, 0, 360)])
        if not area.crs.geographic:
            # reprojected whole from one projected CRS into another, the parts of an area far from the other's zone
            # fold over or go to infinity (a Web Mercator box of the world was an invalid polygon in UTM, and found
            # no tile): one that reaches beyond there is cut in lon/lat
            dense = densified(area)
            lonlat = dense.to_crs("EPSG:4326")
            if not lonlat.geom.is_valid or near.contains(lonlat.geom):
                return dense.to_crs(crs).geom
            area = lonlat
        area = Geometry(area.geom.intersection(near), area.crs)
        if area.geom.is_empty:
            return area.geom
    return densified(area).to_crs(crs).geom


def densified(area: Geometry, parts: int = 32) -> Geometry:
    """``area`` with a vertex at least every ``1 / parts`` of its extent along each edge, so that reprojected its
    straight edges follow their curves. shapely's ``segmentize``: odc-geo's ``segmented`` (0.5) left alone an edge
    whose ends lie near the CRS's origin (it compares their x, not their distance), so a Web Mercator query's edge
    on the Greenwich meridian was reprojected as a straight line: 7 km off from lat 44 to 63, 500 km pole to pole."""
    if area.geom.geom_type in ("Point", "MultiPoint"):
        return area
    minx, miny, maxx, maxy = area.boundingbox
    step = max(maxx - minx, maxy - miny) / parts
    return Geometry(shapely.segmentize(area.geom, step), area.crs) if step > 0 else area
