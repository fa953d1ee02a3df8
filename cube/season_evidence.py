"""The season the grassland markers (:mod:`cube.anomalies`) judge, and their evidence of it: which dates lie in the
season (of one year), and per parcel the lowest value, the largest drop and the longest gap between its observations
there, counted in whole UTC dates; of Sentinel-1 statistics per track (:class:`RadarRows`)."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import pandas as pd

from cardcube.errors import InvalidRequestError
from cube.marker_rules import MarkerRules
from cube.statistics_checks import refuse_missing_times, refuse_repeats


def epoch_days(times: Iterable[Any]) -> np.ndarray:
    return np.asarray(pd.DatetimeIndex(times).values.astype("datetime64[s]").astype(np.int64) / 86400.0)


def epoch_dates(times: Iterable[Any]) -> np.ndarray:
    """The UTC dates of ``times`` as days since the epoch: gaps and spans of the season are counted in whole days,
    since the orbits of one satellite pass minutes apart (five 5-day revisits measured 25.004 days, over a
    ``max_gap`` of 25)."""
    return np.floor(epoch_days(times))


def season_mask(times: Iterable[Any], rules: MarkerRules) -> np.ndarray:
    """Which of ``times`` fall in the season (``MM-DD`` compared as text, every year)."""
    md = pd.DatetimeIndex(list(times)).strftime("%m-%d")
    return np.asarray((md >= rules.season[0]) & (md <= rules.season[1]))


def season_year(times: Iterable[Any], rules: MarkerRules, what: str) -> int | None:
    """The one year whose season ``times`` fall in (None: no date in the season); two years are refused, since a
    winter between them would read as a gap "in the season", and last year's ploughing as this year's."""
    times = pd.DatetimeIndex(list(times))
    years = sorted(set(times[season_mask(times, rules)].year))
    if len(years) > 1:
        raise InvalidRequestError(f"the {what} statistics have dates in the seasons of {', '.join(map(str, years))}: "
                                  f"flag one year at a time (cardcube extract or timeseries --time {years[-1]})")
    return years[0] if years else None


def season_span(times: Iterable[Any], rules: MarkerRules) -> int:
    """Days between the first and the last of ``times`` in the season."""
    times = list(times)
    inside = epoch_dates(times)[season_mask(times, rules)]
    return int(inside.max() - inside.min()) if inside.size else 0


def season_evidence(series: pd.DataFrame, rules: MarkerRules, *, span: tuple[float, float] | None = None
                     ) -> pd.DataFrame:
    """Per parcel of ``series`` (parcels x dates, NaN where not observed), over its observations in the
    season: the lowest value and its date, the largest drop between observations at most ``max_gap`` days
    apart, and the longest gap between observations, counted from the first to the last date of the season
    in the data (``span``, days since the epoch, if given: a parcel first seen late or last seen early has a
    long gap). All NaN when no date lies in the season. Days are whole UTC dates (:func:`epoch_dates`)."""
    days = epoch_dates(series.columns)
    in_season = season_mask(series.columns, rules)
    if not in_season.any():
        return pd.DataFrame({"low": np.nan, "low_date": pd.NaT, "drop": np.nan, "gap": np.nan}, index=series.index)
    first, last = span or (days[in_season].min(), days[in_season].max())
    stamps = list(pd.DatetimeIndex(series.columns))  # boxed once: indexing the index per parcel was half the time
    rows = []
    for row in series.to_numpy(dtype=np.float64):
        ok = ~np.isnan(row) & in_season
        v, d = row[ok], days[ok]
        if not v.size:
            rows.append((np.nan, pd.NaT, np.nan, last - first))
            continue
        drops = (v[:-1] - v[1:])[np.diff(d) <= rules.max_gap]
        rows.append((v.min(), stamps[np.flatnonzero(ok)[np.argmin(v)]], drops.max() if drops.size else np.nan,
                     np.diff(np.concatenate(([first], d, [last]))).max()))
    return pd.DataFrame(rows, index=series.index, columns=["low", "low_date", "drop", "gap"])


class RadarRows:
    """What the mowing marker must know of all the Sentinel-1 rows before it judges a batch of parcels: their bands
    and dates, each track's passes measured on ``min_clear`` of a parcel (the season's first and last of them,
    the tracks that saw the season) and a parcel id to name. :meth:`observe` each part of the rows, :meth:`check`,
    then :meth:`evidence` of a batch's rows is what it gives of all the rows for those parcels."""

    def __init__(self, rules: MarkerRules) -> None:
        self.rules = rules
        self.bands: set[Any] = set()
        self.times: pd.DatetimeIndex | None = None
        self.tracks: dict[tuple[Any, ...], pd.DatetimeIndex] = {}
        self.passes = 0
        self.first: Any = None

    def observe(self, part: pd.DataFrame) -> None:
        missing = {"parcel_id", "time", "band", "count", "mean"} - set(part.columns)
        if missing:
            raise InvalidRequestError(f"the Sentinel-1 frame needs VH means (parcel_id, time, band, count, mean); "
                                      f"it lacks {sorted(missing)}")
        refuse_missing_times(part, "Sentinel-1 statistics")
        if self.first is None and len(part):
            self.first = part["parcel_id"].iloc[0]
        self.bands.update(part["band"].unique())
        self.times = dates_union(self.times, part["time"])
        vh = self._measured(part)
        self.passes += len(vh)
        for key, rows in self._tracks(vh):
            self.tracks[key] = dates_union(self.tracks.get(key), rows["time"])

    def check(self) -> None:
        """Refuse statistics without VH, without a VH mean measured on ``min_clear`` of a parcel, or without such a
        pass in the season; note the season's first and last and the tracks that saw it."""
        rules = self.rules
        if "VH" not in self.bands:
            raise InvalidRequestError("the Sentinel-1 frame needs VH means (parcel_id, time, band, count, mean); "
                                      "it lacks VH")
        if not self.passes:
            raise InvalidRequestError(f"the Sentinel-1 frame has no VH mean measured on {rules.min_clear:.0%} of a "
                                      f"parcel's pixels (every count is 0 or too small)")
        times = functools.reduce(dates_union, self.tracks.values())
        inside = epoch_dates(times)[season_mask(times, rules)]
        if not inside.size:
            raise InvalidRequestError(f"no Sentinel-1 date lies in the season {rules.season[0]} .. {rules.season[1]}")
        self.span = (inside.min(), inside.max())
        self.seen = {key: times for key, times in self.tracks.items() if season_mask(times, rules).any()}

    def evidence(self, rows: pd.DataFrame) -> pd.DataFrame:
        """Per parcel of ``rows`` (all of theirs): the largest VH drop (dB) between passes of the same track
        (``orbit_state`` and ``relative_orbit``, where given: tracks see a field from other sides and angles, at
        levels that differ), and the longest gap between passes of the track that saw the season best."""
        refuse_repeats(rows[rows["band"] == "VH"], "Sentinel-1 statistics")
        seen = []
        for key, track in self._tracks(self._measured(rows)):
            if key in self.seen:  # each track's dates are all of its passes', as the season's first and last are
                wide = track.set_index(["parcel_id", "time"])["mean"].unstack("time").reindex(columns=self.seen[key])
                seen.append(season_evidence(wide, self.rules, span=self.span))
        if not seen:
            return pd.DataFrame({"largest_vh_drop": [], "longest_vh_gap": []}, dtype=np.float64)
        return pd.DataFrame({"largest_vh_drop": pd.concat([e["drop"] for e in seen], axis=1).max(axis=1),
                             "longest_vh_gap": pd.concat([e["gap"] for e in seen], axis=1).min(axis=1)})

    def _measured(self, rows: pd.DataFrame) -> pd.DataFrame:
        """The VH rows of ``rows`` measured on ``min_clear`` of the parcel: a pass over a few of its pixels (a swath
        edge) is speckle, not a level."""
        vh = rows[(rows["band"] == "VH") & (rows["count"] > 0)]
        if "masked" in vh.columns:
            vh = vh[vh["masked"].isna() | (vh["count"] >= self.rules.min_clear * (vh["count"] + vh["masked"]))]
        return vh

    @staticmethod
    def _tracks(vh: pd.DataFrame) -> Iterator[tuple[tuple[Any, ...], pd.DataFrame]]:
        """The rows of each track (orbit direction and relative orbit), keyed alike in every part: a missing key
        (None, NaN) is a track of its own."""
        keys = [c for c in ("orbit_state", "relative_orbit") if c in vh.columns]
        if not keys:
            yield ("any",), vh
            return
        for key, rows in vh.groupby(keys, dropna=False):
            yield tuple(None if pd.isna(k) else k for k in (key if isinstance(key, tuple) else (key,))), rows


def dates_union(times: pd.DatetimeIndex | None, more: Iterable[Any]) -> pd.DatetimeIndex:
    """The sorted dates of ``times`` (None: none yet) and ``more``, in the unit and zone they come in."""
    more = pd.DatetimeIndex(pd.unique(pd.Series(more))) if not isinstance(more, pd.DatetimeIndex) else more
    return more.sort_values() if times is None else times.union(more)
