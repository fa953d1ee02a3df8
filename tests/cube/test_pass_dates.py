"""cube.pass_dates: one pass over several tiles as one date, at its earliest time."""

from __future__ import annotations

import numpy as np

from cube.pass_dates import first_times


def test_a_pass_over_two_tiles_is_its_earliest_time_on_each_in_each_tile_s_own_unit():
    """Each part keeps its own unit (xarray keeps the microseconds of a cube's time coordinate; the ledger's are
    nanoseconds): the loop over integer nanoseconds that made a catalog search by time 5x faster returned
    nanoseconds for every part, changing the dtype of a mosaic's times."""
    west = np.array(["2024-05-01T10:30:21", "2024-05-11T10:30:20"], dtype="datetime64[us]")
    east = np.array(["2024-05-01T10:30:27.5", "2024-05-21T10:30:27"], dtype="datetime64[ns]")
    got = first_times([west, east], [["S2A", "S2A"], ["S2A", "S2A"]])
    assert [g.dtype for g in got] == [np.dtype("datetime64[us]"), np.dtype("datetime64[ns]")]
    np.testing.assert_array_equal(got[0], west)  # the earliest of each pass already
    np.testing.assert_array_equal(got[1], np.array([west[0], east[1]], dtype="datetime64[ns]"))  # 6.5 s later: joined
    other = first_times([west, east], [["S2A", "S2A"], ["S2B", "S2A"]])  # another platform's date is its own
    np.testing.assert_array_equal(other[1], east)
