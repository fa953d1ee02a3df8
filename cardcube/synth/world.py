"""The simulated world of one config: landscape, weather, ground truth and canopy, built once.

Every random stream is derived from ``(seed, purpose[, index])`` with ``numpy.random.SeedSequence``,
so adding a scene, changing the thread count or the order of work never changes what is drawn.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd

from cardcube.synth.clouds import smooth_field
from cardcube.synth.config import SynthConfig
from cardcube.synth.parcels import Landscape, make_landscape
from cardcube.synth.phenology import Canopy, canopy_tables
from cardcube.synth.region import Region
from cardcube.synth.truth import plan_season
from cardcube.synth.weather import weather_table

# Stream keys: one independent random stream per purpose.
LANDSCAPE, WEATHER, TRUTH, CANOPY, FIELDS, S2_STREAM, S1_STREAM = range(7)


def rng_for(seed: int, *key: int) -> np.random.Generator:
    """The random generator of ``key`` (purpose, index...) under ``seed``."""
    return np.random.default_rng(np.random.SeedSequence([seed, *key]))


@dataclass(frozen=True, slots=True, eq=False)
class World:
    """Everything the scene renderers read; built by :func:`build_world`, never modified."""

    config: SynthConfig
    region: Region
    landscape: Landscape
    weather: pd.DataFrame
    truth: pd.DataFrame
    canopy: Canopy
    labels: np.ndarray  # int32 (rows, cols) at 10 m: land-cover label per pixel
    vigour_field: np.ndarray  # float32 (rows, cols): within-field growth variation, ~N(0, 1)
    soil_field: np.ndarray  # float32 (rows, cols): within-field soil brightness variation, ~N(0, 1)


def build_world(config: SynthConfig) -> World:
    """Draw the landscape, weather, declarations, ground truth and daily canopy of ``config``."""
    seed = config.seed
    region = Region.from_config(config)
    landscape = make_landscape(rng_for(seed, LANDSCAPE), region, mean_parcel_ha=config.mean_parcel_ha)
    year = config.start.year
    weather = weather_table(rng_for(seed, WEATHER), dt.date(year - 1, 10, 1), config.end)
    parcels = landscape.parcels
    truth = plan_season(rng_for(seed, TRUTH), parcels["parcel_id"].to_numpy(), parcels["area_ha"].to_numpy(),
                        weather, season_year=year, anomaly_fraction=config.anomaly_fraction)
    canopy = canopy_tables(rng_for(seed, CANOPY), truth, weather, season_year=year)
    labels = landscape.label_raster(region)
    fields_rng = rng_for(seed, FIELDS)
    vigour = smooth_field(fields_rng, labels.shape, sigma=3.0, octaves=(1.0, 0.5))
    soil = smooth_field(fields_rng, labels.shape, sigma=6.0, octaves=(1.0, 0.6))
    return World(config, region, landscape, weather, truth, canopy, labels, vigour, soil)
