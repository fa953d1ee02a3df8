"""The pure models: weather, phenology curves, clouds, schedules, speckle quantisation."""

from __future__ import annotations

import datetime as dt
import itertools

import numpy as np
import pytest

from cardcube.synth.acquisitions import s1_schedule, s2_schedule
from cardcube.synth.clouds import cloud_layers, smooth_field
from cardcube.synth.phenology import arable_cover, grass_cover
from cardcube.synth.s1 import quantize
from cardcube.synth.weather import growing_degree_days, soil_wetness, weather_table


def test_weather_is_deterministic_and_seasonal():
    a = weather_table(np.random.default_rng(1), dt.date(2023, 10, 1), dt.date(2024, 10, 31))
    b = weather_table(np.random.default_rng(1), dt.date(2023, 10, 1), dt.date(2024, 10, 31))
    assert a.equals(b)
    assert growing_degree_days(np.array([-3.0, 4.0, 12.5]), 5).tolist() == [0.0, 0.0, 7.5]


def test_soil_wetness_rises_after_rain():
    rain = np.zeros(30)
    rain[10] = 25.0
    wet = soil_wetness(rain, np.full(30, 15.0))
    assert wet[10] > wet[9] + 0.2 and wet[20] < wet[10] and wet.max() <= 1


def test_arable_cover_shape():
    gdd = np.concatenate([np.full(10, np.nan), np.linspace(0, 1500, 100)])
    after = np.arange(110) - 100  # harvested at day 100
    green, dry, biomass = arable_cover(gdd, after, code=259, vigour=1.0)
    assert green[:10].max() < 0.1  # before sowing: bare
    assert green[35:55].min() > 0.85  # canopy closed
    assert green[95] < 0.5  # senescent before harvest
    assert green[100:].max() < 0.05 and biomass[100:].max() < 0.05  # harvested
    assert np.all(green + dry <= 1 + 1e-9)


def test_grass_cover_drops_at_cuts_and_regrows():
    gdd0 = np.cumsum(np.full(200, 12.0))
    green, _, biomass = grass_cover(gdd0, [100, 150], jan1=0, vigour=1.0)
    assert green[99] - green[100] > 0.4
    assert biomass[99] > biomass[100]
    assert green[140] > 0.85  # regrown within about three weeks
    unmown, dry, _ = grass_cover(gdd0, [], jan1=0, vigour=1.0, mown=False)
    assert dry[-1] > 0.2 and unmown[-1] < green[-1]


def test_smooth_field_statistics():
    f = smooth_field(np.random.default_rng(0), (300, 200), sigma=6.0)
    assert f.shape == (300, 200)
    assert abs(f.mean()) < 0.3 and 0.7 < f.std() < 1.3
    assert np.corrcoef(f[:, :-1].ravel(), f[:, 1:].ravel())[0, 1] > 0.95  # smooth


@pytest.mark.parametrize("cover", [0.0, 0.3, 0.9])
def test_cloud_cover_matches_request(cover):
    layers = cloud_layers(np.random.default_rng(5), (400, 400), cover=cover)
    frac = (layers.cloud > 0).mean()
    assert abs(frac - cover) < 0.25
    assert layers.cloud.max() <= 1 and layers.shadow.max() <= 1
    if cover == 0.3:
        assert (layers.shadow > 0.3).mean() > 0.02
        assert ((layers.shadow > 0.3) & (layers.cloud > 0.3)).sum() == 0


def test_schedules():
    s2 = s2_schedule(dt.date(2024, 3, 1), dt.date(2024, 10, 31))
    assert 45 <= len(s2) <= 50
    assert {a.relative_orbit for a in s2} == {51, 8} and {a.platform for a in s2} == {"S2A", "S2B"}
    assert all((b.date - a.date).days == 5 for a, b in itertools.pairwise(s2))
    s1 = s1_schedule(dt.date(2024, 3, 1), dt.date(2024, 10, 31))
    assert {a.orbit_state for a in s1} == {"ascending", "descending"}
    assert len(s1) >= 80 and len({a.product_id("31UFU") for a in s1}) == len(s1)
    assert s2[0].product_id("31UFU").startswith("S2A_MSIL2A_20240302T105031_N0510_R051_T31UFU_20240302T")


def test_quantize_keeps_precision():
    x = np.random.default_rng(0).uniform(-30, 5, 1000).astype(np.float32)
    q = quantize(x)
    assert np.abs(q - x).max() < 0.02
    assert (q.view(np.uint32) & 0xFFF).max() == 0
