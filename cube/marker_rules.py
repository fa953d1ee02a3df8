"""The thresholds of the checks-by-monitoring markers (:mod:`cube.anomalies`, whose docstring says what each
marker does with them), refused out of range as they are made or read from an agency's JSON file."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from cardcube.errors import InvalidRequestError


@dataclass(frozen=True)
class MarkerRules:
    """Thresholds of the markers; see :mod:`cube.anomalies`. ``season`` is ``(MM-DD, MM-DD)`` of every year."""

    min_clear: float = 0.5  # share of a parcel's pixels that must be clear for its NDVI of a date to count
    step: int = 5  # days between profile grid points (Sentinel-2's revisit)
    min_points: int = 6  # grid points a parcel and a reference must share for a distance
    min_parcels: int = 5  # parcels declaring a crop for it to have a reference profile
    mismatch_ratio: float = 2.0
    outlier_z: float = 2.0  # robust z-score of the distance to the declared reference, within its crop
    bare_ndvi: float = 0.3
    mowing_drop: float = 0.08  # NDVI
    mowing_drop_db: float = 1.2  # Sentinel-1 VH backscatter, dB
    max_gap: int = 25  # days
    season: tuple[str, str] = ("05-01", "09-30")
    min_season_days: int = 60  # days of the season the dates must span for no_mowing to be judged at all
    max_interpolation_gap: int = 30  # days between clear dates a profile is interpolated across
    max_bare_gap: int = 30  # days between clear dates for bare_soil to clear a meadow (a ploughing re-sown is low
    # for about a month)

    def __post_init__(self) -> None:
        if isinstance(self.season, list):  # as JSON gives it
            object.__setattr__(self, "season", tuple(self.season))
        season = self.season
        if not (isinstance(season, tuple) and len(season) == 2 and all(_is_month_day(x) for x in season)
                and season[0] <= season[1]):
            raise InvalidRequestError(f"season {season!r} must be two MM-DD dates in order, e.g. "
                                      f"('05-01', '09-30')")
        ranges = {"min_clear": (0 < self.min_clear <= 1, "a share in (0, 1]"), "step": (self.step >= 1, ">= 1"),
                  "min_points": (self.min_points >= 1, ">= 1"), "min_parcels": (self.min_parcels >= 1, ">= 1"),
                  "mismatch_ratio": (self.mismatch_ratio > 1, "> 1"),
                  "outlier_z": (not np.isnan(self.outlier_z), "a z-score, not NaN: -inf leaves the ratio alone"),
                  "bare_ndvi": (-1 < self.bare_ndvi < 1, "an NDVI in (-1, 1)"),
                  "mowing_drop": (0 < self.mowing_drop < 2, "an NDVI drop in (0, 2)"),
                  "mowing_drop_db": (self.mowing_drop_db > 0, "> 0 dB"), "max_gap": (self.max_gap >= 1, ">= 1"),
                  "min_season_days": (self.min_season_days >= 0, ">= 0"),
                  "max_bare_gap": (self.max_bare_gap >= 1, ">= 1"),
                  "max_interpolation_gap": (self.max_interpolation_gap >= self.step,
                                            f">= step ({self.step}): shorter, hardly a profile point lies between "
                                            f"two clear dates")}
        unbounded = [name for name, field in self.__dataclass_fields__.items()
                     if field.type in ("int", "float") and np.isinf(getattr(self, name))
                     and not (name == "outlier_z" and getattr(self, name) < 0)]
        ranges.update({name: (False, "a finite number: an infinite one switches its marker off or on for "
                                     "every parcel") for name in unbounded})
        whole = [name for name, field in self.__dataclass_fields__.items()
                 if field.type == "int" and not float(getattr(self, name)).is_integer()]
        ranges.update({name: (False, "a whole number") for name in whole})  # step=5.5 moved the grid silently
        if bad := [f"{name} = {getattr(self, name)!r} (must be {what})" for name, (ok, what) in ranges.items()
                   if not ok]:  # a percent for a share (min_clear=50, bare_ndvi=30) flagged or cleared every parcel
            raise InvalidRequestError(f"marker rules out of range: {'; '.join(bad)}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MarkerRules:
        """Rules from a mapping of some of the fields (a JSON file of an agency's thresholds); the others keep
        their defaults. An unknown field is an error naming the known ones: a typo must not leave the default
        in force without a word."""
        known = set(cls.__dataclass_fields__)
        if not isinstance(d, Mapping):
            raise InvalidRequestError(f"marker rules must be an object of rule names and values, not {d!r}")
        if set(d) - known:
            raise InvalidRequestError(f"unknown marker rule(s) {sorted(set(d) - known)}; the rules are "
                                      f"{', '.join(sorted(known))}")
        values = dict(d)
        for name, value in values.items():
            default = getattr(cls, name)
            if isinstance(default, int | float) and (isinstance(value, bool) or not isinstance(value, int | float)):
                raise InvalidRequestError(f"marker rule {name} = {value!r} is no number (default {default})")
        return cls(**values)


def _is_month_day(text: Any) -> bool:
    """Whether ``text`` is a day of the year as ``MM-DD`` (29 February included): the season is compared
    as this text, so what pandas would also read as a date ("05/01", " 5-01") is not one."""
    try:
        return isinstance(text, str) and re.fullmatch(r"\d\d-\d\d", text) is not None and \
            bool(pd.Timestamp(f"2024-{text}"))
    except ValueError:
        return False
