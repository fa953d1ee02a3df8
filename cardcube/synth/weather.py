"""Daily weather of a Dutch polder: temperatures, rain, growing degree days and soil wetness.

Pure functions of a random generator and a date range. Temperatures follow the climatological annual
cycle of De Bilt plus a persistent (AR(1)) anomaly; rain follows a two-state Markov chain with gamma
amounts. Growing degree days drive the crop phenology and rain drives the soil wetness that the radar
and the optical soil brightness respond to, so signals and weather stay consistent.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

GDD_BASES = (0, 5, 10)  # degC; winter cereals and grass use 0, most spring crops 5, maize 10


def weather_table(rng: np.random.Generator, start: dt.date, end: dt.date) -> pd.DataFrame:
    """Daily weather from ``start`` to ``end`` inclusive.

    Columns: ``date``, ``tmin``, ``tmean``, ``tmax`` (degC), ``precipitation_mm``, ``gdd_base0``,
    ``gdd_base5``, ``gdd_base10`` (degree days of that day), ``soil_wetness`` (0 dry .. 1 saturated).
    """
    dates = pd.date_range(start, end, freq="D")
    n = len(dates)
    doy = dates.day_of_year.to_numpy()
    clim = 10.4 + 7.6 * np.sin(2 * np.pi * (doy - 111) / 365.25)  # min ~ 20 Jan, max ~ 21 Jul
    anomaly = np.empty(n)
    anomaly[0] = rng.normal(0, 2.0)
    shocks = rng.normal(0, 1.4, n)
    for i in range(1, n):
        anomaly[i] = 0.75 * anomaly[i - 1] + shocks[i]

    wet = np.empty(n, dtype=bool)
    wet[0] = rng.random() < 0.5
    u = rng.random(n)
    for i in range(1, n):
        wet[i] = u[i] < (0.62 if wet[i - 1] else 0.38)
    amount = rng.gamma(0.75, 4.5, n)
    rain = np.where(wet, np.maximum(amount, 0.1), 0.0)
    summer = np.clip(np.sin(2 * np.pi * (doy - 111) / 365.25), 0, None)
    rain = rain * (1 + 0.5 * summer * (rng.random(n) < 0.15) * 3)  # occasional summer downpours

    tmean = clim + anomaly - 0.6 * wet
    dtr = np.where(wet, 5.0, 9.0) + 2.5 * summer + rng.normal(0, 1.0, n)  # diurnal range
    dtr = np.clip(dtr, 2.0, 16.0)
    tmin, tmax = tmean - dtr / 2, tmean + dtr / 2

    table = pd.DataFrame({
        "date": dates.date,
        "tmin": np.round(tmin, 1),
        "tmean": np.round(tmean, 1),
        "tmax": np.round(tmax, 1),
        "precipitation_mm": np.round(rain, 1),
    })
    for base in GDD_BASES:
        table[f"gdd_base{base}"] = growing_degree_days(table["tmean"].to_numpy(), base)
    table["soil_wetness"] = np.round(soil_wetness(table["precipitation_mm"].to_numpy(), tmean), 3)
    return table


def growing_degree_days(tmean: np.ndarray, base: float) -> np.ndarray:
    """Degree days per day above ``base`` (the simple average method)."""
    return np.round(np.maximum(np.asarray(tmean, dtype=float) - base, 0.0), 1)


def soil_wetness(rain_mm: np.ndarray, tmean: np.ndarray) -> np.ndarray:
    """Topsoil wetness 0..1 from an antecedent precipitation index that dries faster when warm."""
    api = np.empty(len(rain_mm))
    level = 10.0
    for i, (p, t) in enumerate(zip(rain_mm, tmean, strict=True)):
        decay = 0.93 - 0.006 * max(t, 0.0)
        level = level * decay + p
        api[i] = level
    return 1.0 - np.exp(-api / 12.0)
