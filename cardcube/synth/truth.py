"""What really grows on each parcel: declared crops, planted anomalies and the field calendar.

:func:`plan_season` draws the declaration (crop shares like a Dutch BRP), then the ground truth that a
check by monitoring should recover: the actual crop, sowing/harvest dates from growing degree days,
mowing dates of grassland (on dry days, every few weeks of growth) and a few percent of anomalies:

- ``wrong_crop``: an arable parcel declared as one crop carries another;
- ``not_mown``: declared grassland that is never mown (no agricultural activity);
- ``ploughed_grassland``: declared permanent grassland ploughed in spring and sown with maize.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from cardcube.synth.crops import ARABLE_CODES, CROPS, GRASSLAND_CODES, crop

LAST_MOWING = (10, 15)  # month, day: no cuts after mid October
MIN_ANOMALY_AREA_HA = 0.5  # anomalies go on parcels large enough to be checked


def _md(year: int, text: str) -> dt.date:
    """``"MM-DD"`` in ``year``; a leading ``-`` means the year before (autumn sowing)."""
    if text.startswith("-"):
        year, text = year - 1, text[1:]
    month, day = map(int, text.split("-"))
    return dt.date(year, month, day)


def _uniform_date(rng: np.random.Generator, lo: dt.date, hi: dt.date) -> dt.date:
    return lo + dt.timedelta(days=int(rng.integers(0, (hi - lo).days + 1)))


class _Calendar:
    """Day index arithmetic over the weather table (cumulative GDD per base, rain)."""

    def __init__(self, weather: pd.DataFrame) -> None:
        self.dates = pd.to_datetime(weather["date"]).dt.date.to_numpy()
        self.first = self.dates[0]
        self.rain = weather["precipitation_mm"].to_numpy()
        self.cum = {b: np.cumsum(weather[f"gdd_base{b}"].to_numpy()) for b in (0, 5, 10)}

    def index(self, day: dt.date) -> int:
        return (day - self.first).days

    def date(self, i: int) -> dt.date | None:
        return self.dates[i] if 0 <= i < len(self.dates) else None

    def after_gdd(self, start: int, gdd: float, base: int) -> int:
        """First day index at which ``gdd`` degree days have accumulated since ``start``."""
        cum = self.cum[base]
        return int(np.searchsorted(cum, cum[start] + gdd))

    def dry_day(self, i: int, *, max_shift: int = 6) -> int:
        """``i`` or the next day with less than 1 mm of rain (farmers mow in dry weather)."""
        for j in range(i, min(i + max_shift, len(self.rain))):
            if self.rain[j] < 1.0:
                return j
        return i


def plan_season(
    rng: np.random.Generator, parcel_ids: np.ndarray, area_ha: np.ndarray, weather: pd.DataFrame, *,
    season_year: int, anomaly_fraction: float,
) -> pd.DataFrame:
    """Declared crop and ground truth for each parcel (one row per parcel, in the given order)."""
    cal = _Calendar(weather)
    n = len(parcel_ids)
    codes = np.array([c.code for c in CROPS])
    shares = np.array([c.share for c in CROPS])
    declared = rng.choice(codes, size=n, p=shares / shares.sum())

    kinds = np.array([""] * n, dtype=object)
    eligible = np.flatnonzero(area_ha >= MIN_ANOMALY_AREA_HA)
    n_anom = min(len(eligible), round(anomaly_fraction * n))
    if anomaly_fraction > 0 and n_anom == 0 and len(eligible):
        n_anom = 1
    chosen = rng.choice(eligible, size=n_anom, replace=False) if n_anom else np.array([], dtype=int)
    for i in np.sort(chosen):
        if declared[i] in GRASSLAND_CODES:
            kinds[i] = "ploughed_grassland" if (declared[i] == 265 and rng.random() < 0.5) else "not_mown"
        else:
            kinds[i] = "wrong_crop"

    rows = []
    for i in range(n):
        rows.append(_parcel_truth(rng, cal, int(declared[i]), kinds[i], season_year))
    truth = pd.DataFrame(rows)
    truth.insert(0, "parcel_id", parcel_ids)
    truth.insert(1, "declared_crop_code", declared.astype("int32"))
    return truth


def _parcel_truth(rng: np.random.Generator, cal: _Calendar, declared: int, kind: str, year: int) -> dict:
    actual = declared
    if kind == "wrong_crop":
        others = [c for c in (*ARABLE_CODES, 265) if c != declared]
        actual = int(rng.choice(others))
    row: dict = {"actual_crop_code": actual, "is_anomaly": bool(kind), "anomaly_kind": kind or None,
                 "sowing_date": None, "harvest_date": None, "ploughing_date": None, "mowing_dates": []}
    c = crop(actual)
    if kind == "ploughed_grassland":
        plough = _uniform_date(rng, dt.date(year, 4, 10), dt.date(year, 5, 5))
        row["ploughing_date"] = plough
        row["actual_crop_code"] = actual = 259
        c = crop(actual)
        sow = plough + dt.timedelta(days=int(rng.integers(7, 21)))
        row.update(_arable_dates(rng, cal, c, sow, year))
    elif c.kind == "grass":
        if kind != "not_mown":
            row["mowing_dates"] = _mowing_dates(rng, cal, year)
    elif c.kind == "arable":
        lo, hi = (_md(year, s) for s in c.sowing_window)
        row.update(_arable_dates(rng, cal, c, _uniform_date(rng, lo, hi), year))
    row["actual_crop_name"] = c.name
    return row


def _arable_dates(rng: np.random.Generator, cal: _Calendar, c, sow: dt.date, year: int) -> dict:
    s = max(cal.index(sow), 0)
    if s >= len(cal.dates):  # sown after the simulated season
        return {"sowing_date": sow, "harvest_date": None}
    if c.harvest_gdd is not None:
        h = cal.after_gdd(s, c.harvest_gdd * rng.normal(1.0, 0.03), c.gdd_base) + int(rng.integers(0, 6))
    else:
        lo, hi = (_md(year, t) for t in c.harvest_window)
        h = cal.index(_uniform_date(rng, lo, hi))
    harvest = cal.date(cal.dry_day(h)) if h < len(cal.dates) else None
    return {"sowing_date": sow, "harvest_date": harvest}


def _mowing_dates(rng: np.random.Generator, cal: _Calendar, year: int) -> list[dt.date]:
    jan1 = max(cal.index(dt.date(year, 1, 1)), 0)
    last = cal.index(dt.date(year, *LAST_MOWING))
    grazed = rng.random() < 0.25
    max_cuts = int(rng.integers(1, 3)) if grazed else 6
    cuts: list[dt.date] = []
    i = cal.dry_day(cal.after_gdd(jan1, rng.normal(760, 60), 0))
    while i <= last and i < len(cal.dates) and len(cuts) < max_cuts:
        cuts.append(cal.dates[i])
        i = cal.dry_day(cal.after_gdd(i, rng.normal(620, 70), 0))
    return cuts
