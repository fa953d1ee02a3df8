"""Daily canopy state per parcel: green cover, standing dry matter and biomass (pure numpy).

The state is precomputed once per season as ``(day, label)`` tables, so rendering a scene is a table
look-up per pixel. Arable crops follow double-logistic curves in growing degree days since sowing and
drop to stubble or bare soil at harvest; grassland regrows after every cut with a GDD time constant.
Sensors read these tables: optical reflectance mixes leaf, dry-matter and soil spectra by the cover
fractions, radar backscatter responds to biomass and soil wetness.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd

from cardcube.synth.crops import crop

# Labels of non-parcel land cover in the label raster; parcel i has label N_BACKGROUND + i.
VERGE, ROAD, WATER, BUILT = 0, 1, 2, 3
N_BACKGROUND = 4

GRASS_WINTER_COVER = 0.62
GRASS_CUT_COVER = 0.30
GRASS_REGROWTH_GDD = 150.0


@dataclass(frozen=True, slots=True, eq=False)
class Canopy:
    """Per day (rows, aligned with ``dates``) and label (columns): cover fractions and biomass."""

    dates: np.ndarray  # datetime.date, one per day
    green: np.ndarray  # float32 (days, labels), 0..1
    dry: np.ndarray  # float32 (days, labels), 0..1, green + dry <= 1
    biomass: np.ndarray  # float32 (days, labels), 0..1 relative to peak silage maize
    roughness: np.ndarray  # float32 (days, labels), dB of extra soil roughness seen by the radar
    soil_wetness: np.ndarray  # float32 (days,), 0..1

    def day(self, date: dt.date) -> int:
        """Row index of ``date``."""
        i = (date - self.dates[0]).days
        if not 0 <= i < len(self.dates):
            raise ValueError(f"date {date} is outside the simulated season {self.dates[0]}..{self.dates[-1]}")
        return i


def logistic(x: np.ndarray) -> np.ndarray:
    """The logistic curve, clipped so that ``exp`` never overflows."""
    return 1.0 / (1.0 + np.exp(-np.clip(x, -40, 40)))


def arable_cover(
    gdd: np.ndarray, days_after_harvest: np.ndarray, *, code: int, vigour: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Green, dry and biomass of an arable crop, given GDD since sowing (NaN before sowing).

    ``days_after_harvest`` is negative before harvest. Stubble of cereals lingers a few weeks.
    """
    c = crop(code)
    g = np.nan_to_num(gdd, nan=-1e6)
    grown = logistic((g - c.green_mid) / c.green_width)
    senesced = logistic((g - c.senesce_mid) / c.senesce_width)
    green = c.green_max * vigour * grown * (1 - senesced)
    dry = c.dry_max * c.green_max * grown * senesced
    biomass = c.biomass_max * vigour * logistic((g - c.biomass_mid) / (1.3 * c.green_width))
    sown = g > -1e5
    weeds = np.where(sown, 0.0, 0.04)  # a few weeds on bare land before sowing
    green = np.where(sown, green, weeds)
    harvested = days_after_harvest >= 0
    stubble = (0.3 if c.dry_max >= 0.7 else 0.05) * np.exp(-np.maximum(days_after_harvest, 0) / 20.0)
    green = np.where(harvested, 0.02, green)
    dry = np.where(harvested, stubble, dry)
    biomass = np.where(harvested, 0.03, np.where(sown, biomass, 0.0))
    return green, dry, biomass


def grass_cover(
    gdd0: np.ndarray, cuts: list[int], *, jan1: int, vigour: float, mown: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Green, dry and biomass of grassland from cumulative base-0 GDD and the day indices of cuts."""
    n = len(gdd0)
    gmax = 0.93 * vigour
    spring = gdd0 - gdd0[max(jan1, 0)]
    green = GRASS_WINTER_COVER + (gmax - GRASS_WINTER_COVER) * logistic((spring - 350.0) / 110.0)
    dry = np.zeros(n)
    if not mown:  # rank grass: flowers, lodges and browns from early summer
        ageing = logistic((spring - 1500.0) / 220.0)
        green = green * (1 - 0.4 * ageing)
        dry = 0.35 * ageing
    for k, c in enumerate(cuts):
        end = cuts[k + 1] if k + 1 < len(cuts) else n
        since = gdd0[c:end] - gdd0[c]
        green[c:end] = GRASS_CUT_COVER + (gmax - GRASS_CUT_COVER) * (1 - np.exp(-since / GRASS_REGROWTH_GDD))
        dry[c:min(c + 3, end)] = 0.35  # swaths drying on the field before they are collected
    biomass = (0.10 + 0.27 * np.clip((green - 0.25) / (0.93 - 0.25), 0, 1)) * (1.4 if not mown else 1.0)
    return green, dry, biomass


def canopy_tables(rng: np.random.Generator, truth: pd.DataFrame, weather: pd.DataFrame, *,
                  season_year: int) -> Canopy:
    """The season's :class:`Canopy` for the background labels and every parcel of ``truth``."""
    dates = pd.to_datetime(weather["date"]).dt.date.to_numpy()
    n_days, n = len(dates), len(truth)
    first = dates[0]
    cum = {b: np.cumsum(weather[f"gdd_base{b}"].to_numpy()) for b in (0, 5, 10)}
    jan1 = (dt.date(season_year, 1, 1) - first).days
    day_index = np.arange(n_days)

    def index(day) -> int | None:
        return None if day is None or pd.isna(day) else (day - first).days

    shape = (n_days, N_BACKGROUND + n)
    green, dry, biomass, rough = (np.zeros(shape, np.float32) for _ in range(4))
    verge_cuts = [index(dt.date(season_year, 6, 20)), index(dt.date(season_year, 9, 10))]
    g, d, b = grass_cover(cum[0], [c for c in verge_cuts if 0 <= c < n_days], jan1=jan1, vigour=0.9)
    green[:, VERGE], dry[:, VERGE], biomass[:, VERGE] = g, d, b
    green[:, BUILT] = 0.2  # gardens and trees around farmyards
    biomass[:, BUILT] = 0.1

    vigour = np.clip(rng.normal(0.96, 0.04, n), 0.8, 1.0)
    for i, row in enumerate(truth.itertuples(index=False)):
        col = N_BACKGROUND + i
        c = crop(row.actual_crop_code)
        plough = index(row.ploughing_date)
        if c.kind == "grass" or plough is not None:
            cuts = [index(m) for m in row.mowing_dates]
            g, d, b = grass_cover(cum[0], cuts, jan1=jan1, vigour=vigour[i], mown=row.anomaly_kind != "not_mown")
        if c.kind == "arable":
            sow = index(row.sowing_date)
            harvest = index(row.harvest_date)
            gdd = cum[c.gdd_base] - cum[c.gdd_base][min(sow, n_days - 1)]
            gdd = np.where(day_index >= sow, gdd, np.nan)
            after = day_index - (harvest if harvest is not None else n_days + 1)
            ga, da, ba = arable_cover(gdd, after, code=c.code, vigour=vigour[i])
            if plough is not None:  # grassland until ploughed, then the arable crop
                keep = day_index < plough
                ga, da, ba = np.where(keep, g, ga), np.where(keep, d, da), np.where(keep, b, ba)
            g, d, b = ga, da, ba
            tilled = (day_index >= (plough if plough is not None else sow - 20)) & (day_index < sow + 10)
            rough[:, col] = c.soil_roughness + 1.5 * tilled
        elif c.kind == "fallow":
            spring = cum[5] - cum[5][max(jan1, 0)]
            g = c.green_max * vigour[i] * logistic((spring - c.green_mid) / c.green_width)
            d = c.dry_max * logistic((spring - 1400.0) / 150.0) * np.ones(n_days)
            g = g * (1 - 0.5 * d)
            b = c.biomass_max * g / c.green_max
        green[:, col], dry[:, col], biomass[:, col] = g, d, b
    dry = np.minimum(dry, 1.0 - green)
    return Canopy(dates, green, dry, biomass, rough, weather["soil_wetness"].to_numpy(np.float32))
