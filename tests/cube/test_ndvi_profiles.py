"""NDVI profiles on a grid of days and the crops' reference profiles, against numpy: not drawn across weeks of
clouds, gaps counted in whole days."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from cube.ndvi_profiles import profiles, reference_profiles


def test_profiles_and_references_against_numpy():
    ndvi = pd.DataFrame([[np.nan, 0.2, np.nan, 0.6, 0.4, np.nan], [0.1] + [np.nan] * 5],
                        columns=pd.date_range("2024-05-01", periods=6, freq="10D"))
    days = (ndvi.columns - pd.Timestamp("1970-01-01")).days.to_numpy(float)
    grid = np.arange(days[0], days[-1] + 1, 5.0)
    curves = profiles(ndvi, grid)
    inside = (grid >= days[1]) & (grid <= days[4])
    np.testing.assert_allclose(curves[0, inside], np.interp(grid[inside], days[[1, 3, 4]], [0.2, 0.6, 0.4]))
    assert np.isnan(curves[0, ~inside]).all() and np.isnan(curves[1]).all()  # one clear date: no profile
    rng = np.random.default_rng(1)
    many = rng.random((12, 7))
    many[rng.random(many.shape) < 0.3] = np.nan
    codes = np.array(["a"] * 5 + ["b"] * 4 + ["c"] * 3)
    refs = reference_profiles(many, codes, min_parcels=4)
    assert sorted(refs) == ["a", "b"]  # c has too few parcels for a reference
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        np.testing.assert_allclose(refs["a"], np.nanmedian(many[:5], axis=0), equal_nan=True)
        np.testing.assert_allclose(refs["b"], np.nanmedian(many[5:9], axis=0), equal_nan=True)


def test_profiles_are_not_drawn_across_weeks_of_clouds():
    """Grid points inside a gap of more than max_gap days between clear dates are undefined (NaN), those
    at or between clear dates closer together are interpolated as before (numpy reference)."""
    ndvi = pd.DataFrame([[0.2, 0.3, np.nan, np.nan, np.nan, np.nan, 0.4, 0.5]],
                        columns=pd.date_range("2024-05-01", periods=8, freq="10D"))
    days = (ndvi.columns - pd.Timestamp("1970-01-01")).days.to_numpy(float)
    grid = np.arange(days[0], days[-1] + 1, 5.0)
    curves = profiles(ndvi, grid, max_gap=30)
    ok = ~np.isnan(ndvi.to_numpy()[0])
    want = np.interp(grid, days[ok], ndvi.to_numpy()[0][ok])
    gap = (grid > days[1]) & (grid < days[6])  # 50 days without a clear date
    np.testing.assert_allclose(curves[0, ~gap], want[~gap])
    assert np.isnan(curves[0, gap]).all()
    np.testing.assert_allclose(profiles(ndvi, grid)[0], want)  # no limit: the straight line


def test_profiles_count_the_gap_between_clear_dates_in_whole_days():
    """Two orbits pass minutes apart: clear dates 30 days apart measured 30.007 days, over a max_gap of 30, and the
    profile between them was dropped, as the season's gaps were before they were counted in whole days."""
    ndvi = pd.DataFrame([[0.2, 0.6, 0.4]], columns=pd.DatetimeIndex(["2024-05-01 10:56", "2024-05-31 11:06",
                                                                     "2024-06-10 10:56"]))
    days = (ndvi.columns - pd.Timestamp("1970-01-01")).total_seconds().to_numpy() / 86400
    grid = np.arange(days[0], days[-1], 5.0)
    curves = profiles(ndvi, grid, max_gap=30)
    np.testing.assert_allclose(curves[0], np.interp(grid, days, ndvi.to_numpy()[0]))
    assert np.isnan(profiles(ndvi, grid, max_gap=29)[0, 1:6]).all()  # a longer gap than allowed still is one
