"""Time ranges and query areas: one reading for the router, open_cube and everything on top of them."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest
import shapely
from odc.geo.geom import Geometry
from pyproj import Transformer
from shapely.geometry import Point, box, mapping

from cardcube.errors import InvalidRequestError
from cardcube.query import densified, in_crs, in_time_selection, parse_time_range, parse_time_selection, query_geometry

ns = lambda text: np.datetime64(text, "ns")  # noqa: E731


@pytest.mark.parametrize(("time", "lo", "hi"), [
    ("2024", "2024-01-01", "2025-01-01"),
    ("2024-05", "2024-05-01", "2024-06-01"),
    ("2024-05-03", "2024-05-03", "2024-05-04"),
    ("2024-05-03T10", "2024-05-03T10", "2024-05-03T11"),
    ("2024-05-03T10:50:31Z", "2024-05-03T10:50:31", "2024-05-03T10:50:32"),
    ("2024-05-03T12:50:31+02:00", "2024-05-03T10:50:31", "2024-05-03T10:50:32"),
    ("2024-05-03T08:50-0200", "2024-05-03T10:50", "2024-05-03T10:51"),
    ("2024-04/2024-06", "2024-04-01", "2024-07-01"),
    ("2024-04-01/..", "2024-04-01", None),
    ("../2024-04-30", None, "2024-05-01"),
    ((" 2024-04-01 ", None), "2024-04-01", None),
])
def test_a_period_ends_with_the_last_unit_it_writes(time, lo, hi):
    assert parse_time_range(time) == (lo and ns(lo), hi and ns(hi))


def test_instants_and_dates_as_python_objects():
    aware = datetime(2024, 5, 3, 12, 50, 31, tzinfo=timezone(timedelta(hours=2)))
    assert parse_time_range((aware, aware)) == (ns("2024-05-03T10:50:31"), ns("2024-05-03T10:50:31.000000001"))
    naive = datetime(2024, 5, 3, 10, 50, 31, tzinfo=UTC).replace(tzinfo=None)
    assert parse_time_range((None, naive))[1] == ns("2024-05-03T10:50:31.000000001")
    assert parse_time_range((date(2024, 5, 3), date(2024, 5, 3))) == (ns("2024-05-03"), ns("2024-05-04"))
    stamp = np.datetime64("2024-05-03T10:50:31.5", "ns")  # a cube's time: that nanosecond
    assert parse_time_range((stamp, stamp)) == (ns("2024-05-03T10:50:31.5"), ns("2024-05-03T10:50:31.500000001"))
    assert parse_time_range(None) == (None, None)
    assert parse_time_range(date(2024, 5, 3)) == (ns("2024-05-03"), ns("2024-05-04"))  # one date: that day
    assert parse_time_range(stamp) == parse_time_range((stamp, stamp))


def test_a_slice_is_a_pair_as_xarray_writes_it():
    """``time=slice("2024-04", "2024-06")``, as ``ds.sel`` takes it, was "not a range": the ends whole, as a pair's."""
    assert parse_time_range(slice("2024-04", "2024-06")) == parse_time_range("2024-04/2024-06")
    assert parse_time_range(slice(None, date(2024, 4, 30))) == (None, ns("2024-05-01"))
    with pytest.raises(InvalidRequestError, match="takes no step"):
        parse_time_range(slice("2024-04", "2024-06", 2))


@pytest.mark.parametrize(("text", "lo", "hi"), [
    ("2024-05", "2024-05-01", "2024-06-01"),
    ("2024-05-03", "2024-05-03", "2024-05-04"),
    ("2024-05-03T10:50:31", "2024-05-03T10:50:31", "2024-05-03T10:50:32"),
    ("2024-05-03T10:50:31.5", "2024-05-03T10:50:31.5", "2024-05-03T10:50:31.501"),
])
def test_a_datetime64_is_the_period_of_its_unit_as_its_text_is(text, lo, hi):
    """``np.datetime64("2024-05")`` (or a time series' ``.astype("datetime64[D]")``) was the instant of its
    midnight: a time series of May was empty, its warning saying May held no acquisition."""
    assert parse_time_range(np.datetime64(text)) == parse_time_range(text) == (ns(lo), ns(hi))
    assert parse_time_range((np.datetime64(text), None)) == (ns(lo), None)


@pytest.mark.parametrize("text", ["2024-05-03 10:50:31", "2024-05-03 10:50:31Z", "2024-05-03 10:50:31+00:00",
                                  "2024-05-03 12:50:31+02:00", " 2024-05-03 08:50:31-0200 "])
def test_a_time_after_a_space_is_read_as_after_a_t(text):
    """pandas prints a time series' time as ``2024-05-03 10:50:31+00:00``: without its offset it was taken, with
    it (``Z`` or ``+00:00``) it was no ISO 8601 time."""
    assert parse_time_range(text) == parse_time_range("2024-05-03T10:50:31Z")
    assert parse_time_range(f"{text}/..") == (ns("2024-05-03T10:50:31"), None)
    with pytest.raises(InvalidRequestError, match="write it %2B"):  # its "+" lost in a URL, as after a "T"
        parse_time_range("2024-05-03 12:50:31 02:00")


def test_a_time_selection_is_a_range_or_a_set_of_exact_times():
    times = np.array(["2024-05-03T10:50:31", "2024-05-08T10:50:29", "2024-06-02T10:50:31"], dtype="datetime64[ns]")
    assert parse_time_selection("2024-05") == parse_time_range("2024-05")
    assert in_time_selection(times, parse_time_selection("2024-05")).tolist() == [True, True, False]
    exact = parse_time_selection(frozenset({"2024-06-02T10:50:31Z", datetime(2024, 5, 3, 12, 50, 31,
                                                                            tzinfo=timezone(timedelta(hours=2)))}))
    assert exact == frozenset({ns("2024-06-02T10:50:31"), ns("2024-05-03T10:50:31")})  # in UTC, as the cube's times
    assert in_time_selection(times, exact).tolist() == [True, False, True]
    assert not in_time_selection(times, parse_time_selection(frozenset())).any()


def test_exact_times_with_a_fraction_of_a_second_name_the_cube_s_time():
    """A scene's time is kept to the second (ingest drops a STAC datetime's fraction: CDSE's 10:50:31.024Z is the
    cube's 10:50:31): the item's own datetime as an exact time named no date of the cube ("no acquisition within
    the time range"), its date missing from a Dataset or an extraction's update."""
    times = np.array(["2024-05-03T10:50:31", "2024-06-02T10:50:31"], dtype="datetime64[ns]")
    exact = parse_time_selection(frozenset({"2024-06-02T10:50:31.024Z", np.datetime64("2024-05-03T10:50:31.999")}))
    assert exact == frozenset({ns("2024-06-02T10:50:31"), ns("2024-05-03T10:50:31")})
    assert in_time_selection(times, exact).tolist() == [True, True]


@pytest.mark.parametrize("time", ["spring", "2024-13", "2024-05-02/2024-05-01", ("2024-05",), 2024, (1, 2), 3.5,
                                  ("2024-05-03T10:00", "2024-05-03T09:59"),
                                  "2024-05-02T12:00:00+25:00/2024-05-03", "2024-05-02T12:00+23:99/..",
                                  "2024-05-02T12:00-99:00"])  # offsets that shifted the range by days
def test_what_is_not_a_time_range_is_a_clear_error(time):
    with pytest.raises(InvalidRequestError, match="time"):
        parse_time_range(time)


@pytest.mark.parametrize(("time", "said"), [("", "time '' is empty"), ("  ", "time '' is empty"),
                                            (2024, "time 2024 is a number, not a date: give it as text, e.g. '2024'"),
                                            (2024.5, "time 2024.5 is a number")])
def test_an_empty_time_or_a_number_is_said_so(time, said):
    """``--time ""`` (an empty shell variable) read every date without a word; ``time=2024`` was "not a range"."""
    with pytest.raises(InvalidRequestError, match=said):
        parse_time_range(time)


def test_query_geometry_forms():
    assert query_geometry(None, None, None, default_crs="EPSG:4326") is None
    a = query_geometry((1, 2, 3, 4), None, None, default_crs="EPSG:32631")
    assert a.crs == "EPSG:32631" and a.geom.equals(box(1, 2, 3, 4))
    b = query_geometry(None, mapping(box(1, 2, 3, 4)), "EPSG:4326", default_crs="EPSG:32631")
    assert b.crs == "EPSG:4326" and b.geom.equals(box(1, 2, 3, 4))
    own = Geometry(Point(5, 6), "EPSG:3035")
    assert query_geometry(None, own, None, default_crs="EPSG:4326").crs == "EPSG:3035"
    assert query_geometry(None, own, "EPSG:3035", default_crs="EPSG:4326").crs == "EPSG:3035"
    with pytest.raises(InvalidRequestError, match="names another"):  # its metres are no zone 31's
        query_geometry(None, own, "EPSG:32631", default_crs="EPSG:4326")
    with pytest.raises(InvalidRequestError, match="either"):
        query_geometry((1, 2, 3, 4), Point(1, 2), None, default_crs="EPSG:4326")
    with pytest.raises(InvalidRequestError, match="unknown CRS"):
        query_geometry((1, 2, 3, 4), None, "EPSG:99999", default_crs="EPSG:4326")
    for bad in [(1, 4, 3, 2), (1, 2, 3), (float("nan"), 2, 3, 4)]:
        with pytest.raises(InvalidRequestError, match="bbox"):
            query_geometry(bad, None, None, default_crs="EPSG:4326")
    with pytest.raises(InvalidRequestError, match=r"^bbox '5.67,52.71,5.68,52.72' is text: give four numbers"):
        query_geometry("5.67,52.71,5.68,52.72", None, "EPSG:4326", default_crs="EPSG:4326")  # its characters were named
    # minx > maxx: across the antimeridian in lon/lat (as STAC writes it), refused in metres
    across = query_geometry((170, 2, -170, 4), None, None, default_crs="EPSG:4326")
    assert across.geom.equals(box(170, 2, 180, 4).union(box(-180, 2, -170, 4))) and across.geom.area == 40
    with pytest.raises(InvalidRequestError, match=r"is not \(minx, miny, maxx, maxy\)"):
        query_geometry((3, 2, 1, 4), None, None, default_crs="EPSG:32631")
    for flat in [(5.67, 52.71, 5.67, 52.71), (5.67, 52.71, 5.68, 52.71)]:  # found no tile, and said nothing else
        with pytest.raises(InvalidRequestError, match=r"has no area \(minx = maxx or miny = maxy\)"):
            query_geometry(flat, None, None, default_crs="EPSG:4326")
    # a GeoDataFrame's total_bounds (numpy floats) said "bbox (np.float64(5.67), np.float64(52.71), ...)"
    for bad, said in [((5.67, 52.71, 5.67, 52.71), "has no area"), ((5.68, 52.72, 5.67, 52.71), "is not")]:
        with pytest.raises(InvalidRequestError, match=rf"^bbox \(5.6\d, 52.7\d, 5.6\d, 52.7\d\) {said}"):
            query_geometry(np.array(bad), None, None, default_crs="EPSG:32631")


def test_a_parcel_frame_is_an_area_in_its_own_crs():
    """A GeoDataFrame or GeoSeries as geometry= (a scientist's parcels) failed in shapely, "Unknown geometry type:
    'featurecollection'"; it is the union of its geometries, in its own CRS unless crs= says another."""
    import geopandas as gpd

    shapes = [box(5.0, 52.0, 5.1, 52.1), box(5.2, 52.0, 5.3, 52.2)]
    fields = gpd.GeoDataFrame({"parcel_id": ["a", "b"]}, geometry=shapes, crs="EPSG:4326")
    for given, default in ((fields, "EPSG:32631"), (fields.geometry, "EPSG:32631"),
                           (fields.__geo_interface__, "EPSG:4326")):  # GeoJSON: lon/lat as given
        area = query_geometry(None, given, None, default_crs=default)
        assert area.crs == "EPSG:4326" and area.geom.equals(shapely.union_all(shapes))
    utm = fields.to_crs("EPSG:32631")
    assert query_geometry(None, utm, None, default_crs="EPSG:4326").crs == "EPSG:32631"
    assert query_geometry(None, utm.geometry, 32631, default_crs="EPSG:4326").crs == "EPSG:32631"  # its own, said
    assert query_geometry(None, gpd.GeoSeries(list(utm.geometry)), 3035, default_crs=None).crs == 3035  # none: crs=


def test_a_crs_other_than_the_geometry_s_own_is_refused():
    """A GeoDataFrame or odc.geo Geometry given with a ``crs`` naming another CRS had its coordinates read as that
    CRS's: parcels in EPSG:32632 with crs="EPSG:32631" (the tiles' CRS, as a grid to read onto) were an area 6
    degrees west, another place's data without a word."""
    import geopandas as gpd

    fields = gpd.GeoDataFrame(geometry=[box(680000, 5843000, 680500, 5843500)], crs="EPSG:32632")
    for given in (fields, fields.geometry, Geometry(fields.geometry.iloc[0], "EPSG:32632")):
        with pytest.raises(InvalidRequestError, match=r"the geometry \(.*\) is in EPSG:32632, and crs='EPSG:32631' "
                                                      r"names another: .*\.to_crs\('EPSG:32631'\)"):
            query_geometry(None, given, "EPSG:32631", default_crs="EPSG:4326")
    lonlat = gpd.GeoDataFrame(geometry=[box(5.67, 52.71, 5.68, 52.72)], crs="OGC:CRS84")  # x, y as EPSG:4326's
    assert query_geometry(None, lonlat, "EPSG:4326", default_crs=None).geom.equals(box(5.67, 52.71, 5.68, 52.72))


def test_in_crs_follows_the_curved_edges():
    """A lon/lat box 2 degrees wide in UTM: its edges' midpoints land where pyproj puts them, which
    reprojecting the four corners alone would miss by hundreds of metres."""
    lonlat = box(1.0, 50.0, 3.0, 51.0)
    utm = in_crs(Geometry(lonlat, "EPSG:4326"), "EPSG:32631")
    x, y = Transformer.from_crs("EPSG:4326", "EPSG:32631", always_xy=True).transform(2.0, 51.0)
    assert utm.exterior.distance(Point(x, y)) < 5
    corners = Geometry(lonlat, "EPSG:4326").to_crs("EPSG:32631").geom
    assert corners.exterior.distance(Point(x, y)) > 100
    same = Geometry(lonlat, "EPSG:4326")
    assert in_crs(same, "EPSG:4326") is same.geom
    for world in [box(-180, -90, 180, 90), box(-200, -100, 200, 100)]:  # cut to the zone (0-6 E), not garbage
        zone = in_crs(Geometry(world, "EPSG:4326"), "EPSG:32631")
        assert zone.contains(Point(x, y)) and zone.is_valid
    assert in_crs(Geometry(box(100, 10, 101, 11), "EPSG:4326"), "EPSG:32631").is_empty  # far outside the zone


def test_in_crs_follows_an_edge_on_the_crs_origin():
    """A Web Mercator box whose west edge is the Greenwich meridian (x = 0): that edge is a curve in UTM zone 32 too,
    and the box reprojected holds a point just inside it (odc-geo's densify left that edge straight, 7 km east)."""
    mercator = Geometry(box(0, 5_500_000, 2_000_000, 9_000_000), "EPSG:3857")
    lon, lat = Transformer.from_crs("EPSG:3857", "EPSG:4326", always_xy=True).transform(1_000, 7_250_000)
    x, y = Transformer.from_crs("EPSG:4326", "EPSG:32632", always_xy=True).transform(lon, lat)
    utm = in_crs(mercator, "EPSG:32632")
    assert utm.is_valid and utm.contains(Point(x, y)) and utm.exterior.distance(Point(x, y)) < 1_000


def test_in_crs_cuts_a_projected_area_beyond_the_zone_in_lonlat():
    """A Web Mercator box of the world in UTM zone 31: cut to the zone (and its margin) in lon/lat, as a lon/lat box
    of the world is, where reprojected whole it was an invalid polygon that held nothing; an area within the zone's
    reach is reprojected as it is."""
    x, y = Transformer.from_crs("EPSG:4326", "EPSG:32631", always_xy=True).transform(2.0, 51.0)
    world = in_crs(Geometry(box(-20_037_508, -20_000_000, 20_037_508, 20_000_000), "EPSG:3857"), "EPSG:32631")
    assert world.is_valid and world.contains(Point(x, y))
    near = Geometry(box(600_000, 5_800_000, 700_000, 5_900_000), "EPSG:32632")
    assert in_crs(near, "EPSG:32631").equals(densified(near).to_crs("EPSG:32631").geom)


def test_a_range_that_is_no_iso_range_is_quoted_whole():
    with pytest.raises(InvalidRequestError) as refused:
        parse_time_range("01/05/2024")  # a European date: split at the slash, it is no range either
    assert str(refused.value) == ("time '01/05/2024' is not an ISO 8601 range ('01' is no date): use YYYY-MM-DD, "
                                  "YYYY-MM (a month) or an ISO range start/end")


@pytest.mark.parametrize("text", ["20240610", "today", "now", "NaT", "2024-06-10T12:00:00123", "+2024-06"])
def test_only_iso_forms_are_times(text):
    """numpy alone reads ``20240610`` as the year 20,240,610 and takes ``today`` and ``NaT``: each answered
    "no acquisition" as if it were a date."""
    with pytest.raises(InvalidRequestError, match="not an ISO 8601"):
        parse_time_range(text)
    with pytest.raises(InvalidRequestError, match="not an ISO 8601"):
        parse_time_range(f"2024-01-01/{text}")


@pytest.mark.parametrize(("time", "lo", "hi"), [
    ("../9999-12-31", None, "2262-01-01"),  # "until further notice": open-ended, not wrapped round to 1816
    ("2024-09-01/3000-01-01", "2024-09-01", "2262-01-01"),
    ("0001-01-01/2024-04-01", "1678-01-01", "2024-04-02"),
    ((date(1, 1, 1), datetime(9999, 12, 31)), "1678-01-01", "2262-01-01"),
    ("2024-10-01T00:00:00.123456789123Z/..", "2024-10-01T00:00:00.123456789", None),  # cut to the nanosecond
])
def test_bounds_beyond_the_years_of_nanoseconds_leave_the_range_open(time, lo, hi):
    """datetime64[ns] holds the years 1678-2261 only; beyond, numpy wraps round silently (9999-12-31 became a
    date of 1816, and a range up to it "ended before it started")."""
    as_ns = [None if b is None else np.datetime64(b, "ns") for b in (lo, hi)]
    assert parse_time_range(time) == tuple(as_ns)


@pytest.mark.parametrize("time", ["9999", "1000-01-01/1200-12-31", "3000-01-01/.."])
def test_a_range_wholly_beyond_the_years_of_a_cube_is_refused(time):
    with pytest.raises(InvalidRequestError, match="within the years 1678-2261"):
        parse_time_range(time)


def test_a_time_of_no_date_names_every_form_a_period_takes():
    """The advice named days and ranges only, while a month (``--time 2024-05``) is the form the help shows first."""
    with pytest.raises(InvalidRequestError) as refused:
        parse_time_range("2024-13")
    assert str(refused.value) == ("time '2024-13' is not an ISO 8601 date or time: use YYYY-MM-DD, YYYY-MM (a month) "
                                  "or an ISO range start/end")


def test_a_python_time_range_is_recorded_as_the_text_of_the_same_range():
    """An extraction's manifest records a pair or a slice as ``--time`` writes it, open ends as ``..``; what no text
    writes (exact times, a range that is no range) stays its own text."""
    from cardcube.query import time_text

    assert time_text(None) is None and time_text("2024-05") == "2024-05"
    assert time_text(slice("2024-05", None)) == "2024-05/.." and time_text((None, "2024-06")) == "../2024-06"
    stamp = np.datetime64("2024-05-01T10:00:00.123456789")
    assert time_text((stamp, None)) == "2024-05-01T10:00:00.123456789/.."
    assert parse_time_range(time_text((stamp, None))) == parse_time_range((stamp, None))
    assert time_text(("2024-06", "2024-05")) == "('2024-06', '2024-05')"  # refused when parsed, as its own text
    assert time_text(frozenset({"2024-05-01"})) == "frozenset({'2024-05-01'})"


@pytest.mark.parametrize("time", [["2024-05-01", "2024-05-31"], np.array(["2024-05-01", "2024-05-31"], "M8[D]")])
def test_a_list_or_an_array_of_two_times_is_recorded_as_the_text_of_its_range(time):
    """A list (or an array) is a pair as a tuple is, but an extraction's manifest recorded its repr: an update with the
    same range as ``--time 2024-05-01/2024-05-31`` was refused as a run with another time."""
    from cardcube.query import time_text

    assert time_text(time) == "2024-05-01/2024-05-31"
    assert parse_time_range(time_text(time)) == parse_time_range(time)


@pytest.mark.parametrize("time", [{"2024-05-01", "2024-05-31"}, frozenset({"2024-05-01", "2024-05-31"})])
def test_a_set_of_two_times_is_no_range_in_either_order(time):
    """A set was unpacked as a pair in its own order, which changes from run to run (str hashes): the set of two
    days was May 1 to 31 in one run, "an empty range" in the next."""
    with pytest.raises(InvalidRequestError, match=r"is a set, which has no order: give a range as \(start, end\)"):
        parse_time_range(time)
    if isinstance(time, set):  # open_cube's and parcel_timeseries' too; a frozenset is their exact times
        with pytest.raises(InvalidRequestError, match="exact acquisition times as a frozenset"):
            parse_time_selection(time)


@pytest.mark.parametrize("time", [(pd.NaT, "2024-05"), ("2024-05", pd.NaT), pd.NaT, np.datetime64("NaT"),
                                  (np.datetime64("NaT"), None)])
def test_a_time_of_nat_is_refused(time):
    """A start of ``NaT`` (a time pandas could not read, ``pd.to_datetime(..., errors="coerce")``) was taken for a
    year before 1678: the range was open at its start, without a word."""
    with pytest.raises(InvalidRequestError, match="is not a date or time"):
        parse_time_range(time)


def test_a_numpy_number_is_said_to_be_a_number():
    with pytest.raises(InvalidRequestError, match=r"time np\.int64\(2024\) is a number, not a date: give it as "
                                                  r"text, e\.g\. '2024'"):
        parse_time_range(np.int64(2024))


@pytest.mark.parametrize("text", ["2024-05-03t10:50:31z", "2024-05-03t12:50:31+02:00", "2024-05-03T10:50:31z"])
def test_a_lower_case_t_and_z_are_read_as_rfc_3339_allows(text):
    """RFC 3339 (STAC's and the REST world's times) allows ``t`` and ``z``; they were "not an ISO 8601 time"."""
    assert parse_time_range(text) == parse_time_range("2024-05-03T10:50:31Z")
    assert parse_time_range(f"{text}/..") == (ns("2024-05-03T10:50:31"), None)


@pytest.mark.parametrize("text", ["2024-05-03T12:50:31+02", "2024-05-03T05:50:31-05", "2024-05-03 12:50:31+02"])
def test_an_offset_of_whole_hours_may_leave_out_its_minutes(text):
    """ISO 8601 writes an offset of whole hours ``+02``, as PostgreSQL prints one: it was "not an ISO 8601 time"."""
    assert parse_time_range(text) == parse_time_range("2024-05-03T10:50:31Z")
    with pytest.raises(InvalidRequestError, match=r"has the UTC offset \+25, which is no offset"):
        parse_time_range("2024-05-03T12:50:31+25")


def test_a_pandas_timestamp_keeps_its_nanoseconds():
    """numpy took a pandas Timestamp to the microsecond: its instant selected nothing of the nanosecond named."""
    stamp = pd.Timestamp("2024-05-03T10:50:31.123456789")
    assert parse_time_range(stamp) == (ns("2024-05-03T10:50:31.123456789"), ns("2024-05-03T10:50:31.123456790"))
    aware = pd.Timestamp("2024-05-03T12:50:31.123456789+02:00")
    assert parse_time_range((aware, None)) == (ns("2024-05-03T10:50:31.123456789"), None)
    assert parse_time_selection(frozenset({aware})) == frozenset({ns("2024-05-03T10:50:31")})  # the cube's second


@pytest.mark.parametrize(("time", "said"), [(frozenset({"yesterday"}), "time 'yesterday' is not an ISO 8601"),
                                            (frozenset({5}), "time 5 is not a date"),
                                            (frozenset({"2024-05-03T10:50:31Z", None}), "time None in a set")])
def test_exact_times_are_read_as_a_range_s_times_are(time, said):
    """A frozenset of exact times went to pandas: ``"yesterday"`` was pandas' DateParseError, ``5`` the instant
    of 1970 five nanoseconds in."""
    with pytest.raises(InvalidRequestError, match=said):
        parse_time_selection(time)


@pytest.mark.parametrize("text", ["2024-05-03T10:50:31Z+02:00", "2024-05-03T10:50:31 +02:00", "2024-05-03T10:50:31,5Z"])
def test_a_time_refused_is_named_as_given(text):
    """The message named what was left once the offset was cut off (``'2024-05-03T10:50:31Z'`` for the first)."""
    with pytest.raises(InvalidRequestError) as refused:
        parse_time_range(text)
    assert str(refused.value).startswith(f"time {text!r} is not an ISO 8601 date or time")
