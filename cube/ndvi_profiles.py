"""NDVI profiles, the crop mismatch marker's numbers (:mod:`cube.anomalies`): each parcel's NDVI on its clear dates,
interpolated onto a grid of days; each crop's reference profile, the median of its parcels'; and each parcel's RMS
distances to its declared crop's reference and to the nearest other crop's."""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from cardcube.errors import InvalidRequestError
from cube.curve_file import CurveArray, CurveFile
from cube.marker_rules import MarkerRules
from cube.season_evidence import epoch_dates, epoch_days
from cube.statistics_checks import refuse_repeats


def ndvi_by_date(frame: pd.DataFrame, *, min_clear: float = MarkerRules.min_clear) -> pd.DataFrame:
    """Parcels x dates: NDVI of the mean B04 and B08 reflectance where at least ``min_clear`` of the
    parcel's pixels are clear, else NaN. ``frame`` is a statistics frame (``parcel_id, time, band, count,
    masked, mean``). A mean below 0 (L2A's offset leaves noise below 0 over water and shadow) is taken as 0, so the
    NDVI stays in [-1, 1] (it was -5 or -inf); NaN where both are 0."""
    check_columns(frame)
    bands = frame[frame["band"].isin(NDVI_BANDS)]
    refuse_repeats(bands, "statistics")
    check_ndvi_bands(frame["band"].unique())
    return batch_ndvi(bands, min_clear)


NDVI_BANDS = ("B04", "B08")
STATISTICS = ("parcel_id", "time", "band", "count", "masked", "mean")  # what NDVI is computed of


def check_columns(frame: pd.DataFrame) -> None:
    if missing := set(STATISTICS) - set(frame.columns):
        raise InvalidRequestError(f"the statistics frame lacks column(s) {sorted(missing)}: NDVI is taken of the B04 "
                                  f"and B08 means on dates with enough clear pixels (count, masked), as cardcube "
                                  f"timeseries and extract compute them by default (--stats with mean)")


def check_ndvi_bands(bands: Iterable[Any]) -> None:
    """Refuse statistics (of ``bands``) without both NDVI bands."""
    bands = set(bands)
    if bands & set(NDVI_BANDS) != set(NDVI_BANDS):
        raise InvalidRequestError(f"NDVI needs the Sentinel-2 B04 and B08 means; the frame has bands "
                                  f"{sorted(bands)} (Sentinel-1 statistics go to s1=, in the CLI --s1)")


def batch_ndvi(bands: pd.DataFrame, min_clear: float) -> pd.DataFrame:
    """:func:`ndvi_by_date` of the B04 and B08 rows ``bands`` (of a batch of parcels: either band may lack)."""
    wide = bands.set_index(["parcel_id", "time", "band"])[["mean", "count", "masked"]].unstack("band")
    wide = wide.reindex(columns=pd.MultiIndex.from_product([["mean", "count", "masked"], NDVI_BANDS]))
    red, nir = wide[("mean", "B04")].clip(lower=0), wide[("mean", "B08")].clip(lower=0)
    pixels = wide[("count", "B04")] + wide[("masked", "B04")]
    clear = wide[("count", "B04")] / pixels.where(pixels > 0)
    ndvi = ((nir - red) / (nir + red)).where(clear >= min_clear)
    return ndvi.unstack("time").sort_index(axis=1)


def profiles(ndvi: pd.DataFrame, grid: np.ndarray, *, max_gap: float = np.inf) -> np.ndarray:
    """(parcels, grid) each parcel's clear NDVI interpolated linearly at ``grid`` (days since the epoch);
    NaN outside its first and last clear date, strictly inside a gap of more than ``max_gap`` days between
    two clear dates (nothing is known there; whole UTC dates, :func:`~cube.season_evidence.epoch_dates`), and for a
    parcel with fewer than two clear dates."""
    days, dates = epoch_days(ndvi.columns), epoch_dates(ndvi.columns)
    out = np.full((len(ndvi), grid.size), np.nan)
    for i, row in enumerate(ndvi.to_numpy(dtype=np.float64)):
        ok = ~np.isnan(row)
        if ok.sum() >= 2:
            d, whole = days[ok], dates[ok]
            inside = (grid >= d[0]) & (grid <= d[-1])
            g = grid[inside]
            before, after = whole[np.searchsorted(d, g, side="right") - 1], whole[np.searchsorted(d, g, side="left")]
            known = after - before <= max_gap
            out[i, np.flatnonzero(inside)[known]] = np.interp(g[known], d, row[ok])
    return out


def reference_profiles(curves: np.ndarray, declared: np.ndarray, *, min_parcels: int = MarkerRules.min_parcels
                       ) -> dict[Any, np.ndarray]:
    """Per declared crop with at least ``min_parcels`` parcels that have a profile (a parcel with no clear date has
    none: a crop of six parcels, five cloudy all season, got one parcel's curve as its reference): the median of
    their ``curves`` at each grid point (NaN where none of them is defined)."""
    rows = _reference_rows(declared, ~np.isnan(curves).all(axis=1), min_parcels)
    return {code: _median(curves[mine]) for code, mine in rows.items()}


def _reference_rows(declared: np.ndarray, profiled: np.ndarray, min_parcels: int) -> dict[Any, np.ndarray]:
    """Per crop of ``declared`` (in order of appearance) with at least ``min_parcels`` ``profiled`` parcels: their
    rows."""
    rows = {code: np.flatnonzero((declared == code) & profiled) for code in pd.unique(declared)}
    return {code: mine for code, mine in rows.items() if len(mine) >= min_parcels}


def _median(curves: np.ndarray) -> np.ndarray:
    """The median of ``curves`` (parcels x grid points) at each point; each point's is its own, so the grid may be
    taken a few points at a time."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # grid points no parcel covers stay NaN
        return np.nanmedian(curves, axis=0)


COLUMN_FLOATS = 1 << 20  # numbers of the profiles read at a time for the references (8 MB)


def file_references(curves: CurveFile | CurveArray, declared: np.ndarray, profiled: np.ndarray, min_parcels: int
                     ) -> dict[Any, np.ndarray]:
    """:func:`reference_profiles` of the profiles in ``curves``, a few grid points at a time: the medians are exact,
    over every parcel of a crop, and memory holds a few columns of them."""
    rows = _reference_rows(declared, profiled, min_parcels)
    refs = {code: np.empty(curves.columns) for code in rows}
    step = max(1, COLUMN_FLOATS // max(curves.rows, 1))
    for start in range(0, curves.columns, step):
        block = curves.read_columns(start, min(start + step, curves.columns))
        for code, mine in rows.items():
            refs[code][start:start + step] = _median(block[mine])
    return refs


def _rms(curves: np.ndarray, ref: np.ndarray, min_points: int) -> np.ndarray:
    diff = curves - ref[None, :]
    n = np.sum(~np.isnan(diff), axis=1)
    with np.errstate(invalid="ignore"):
        rms = np.sqrt(np.nansum(diff**2, axis=1) / n)
    return np.where(n >= min_points, rms, np.nan)


def _distances(curves: np.ndarray, codes: np.ndarray, refs: Mapping[Any, np.ndarray], *, min_points: int
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per parcel (``curves``, declaring ``codes``): the RMS distance to its declared crop's reference profile,
    the distance to the nearest other crop's, and that crop (NaN, None where there is none to compare with)."""
    crops = list(refs)
    dist = np.stack([_rms(curves, refs[c], min_points) for c in crops], axis=1) if crops else \
        np.full((len(curves), 0), np.nan)
    own = np.full(len(curves), np.nan)
    other = np.full(len(curves), np.nan)
    nearest = np.full(len(curves), None, dtype=object)
    for i, code in enumerate(codes):
        others = [k for k, c in enumerate(crops) if c != code and not np.isnan(dist[i, k])]
        if code in refs:
            own[i] = dist[i, crops.index(code)]
        if others:
            k = min(others, key=lambda k: dist[i, k])
            other[i], nearest[i] = dist[i, k], crops[k]
    return own, other, nearest


def second_pass(curves: CurveFile | CurveArray, codes: np.ndarray, refs: Mapping[Any, np.ndarray], rules: MarkerRules
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_distances` of the profiles in ``curves`` to the references, a block of parcels at a time."""
    own, other = np.full(curves.rows, np.nan), np.full(curves.rows, np.nan)
    nearest = np.full(curves.rows, None, dtype=object)
    step = max(1, COLUMN_FLOATS // max(curves.columns, 1))
    for start in range(0, curves.rows, step):
        stop = min(start + step, curves.rows)
        own[start:stop], other[start:stop], nearest[start:stop] = _distances(
            curves.read_rows(start, stop), codes[start:stop], refs, min_points=rules.min_points)
    return own, other, nearest
