"""Sentinel-1 content: response to biomass, speckle statistics, soil and water."""

from __future__ import annotations

import numpy as np
import pandas as pd

from tests.synth.readers import interior_index, load_items, read_band


def _stack(result, parcels):
    items = [i for i in load_items(result) if i["collection"] == "sentinel-1-card-bs"]
    vv, vh = [], []
    for item in items:
        a, profile = read_band(result, item, "VV")
        vv.append(a)
        vh.append(read_band(result, item, "VH")[0])
    dates = [pd.Timestamp(i["properties"]["datetime"]).date() for i in items]
    return dates, np.array(vv), np.array(vh), interior_index(parcels, profile), items


def test_vh_rises_with_maize_biomass(tiny_region, parcels, truth):
    dates, _, vh, idx, _ = _stack(tiny_region, parcels)
    assert vh.dtype == np.float32 and not np.isnan(vh).any()
    maize = [p for p, r in enumerate(truth.itertuples()) if r.actual_crop_code == 259 and (idx == p).sum() > 20]
    assert maize
    diffs = []
    for p in maize:
        sow = truth.sowing_date.iloc[p]
        bare = [t for t, d in enumerate(dates) if (d - sow).days < 10]
        peak = [t for t, d in enumerate(dates) if (d - sow).days > 75]
        if bare and peak:
            m = idx == p
            diffs.append(np.mean([vh[t][m].mean() for t in peak]) - np.mean([vh[t][m].mean() for t in bare]))
    assert diffs and min(diffs) > 3.0  # dB


def test_speckle_statistics(tiny_region, parcels, truth):
    _, vv, vh, idx, _ = _stack(tiny_region, parcels)
    sizes = np.bincount(idx[idx >= 0])
    p = int(np.argmax(sizes))
    assert sizes[p] > 200
    m = idx == p
    for stack in (vv, vh):
        for t in (0, len(stack) // 2, len(stack) - 1):
            lin = 10 ** (stack[t][m].astype(float) / 10)
            enl = lin.mean() ** 2 / lin.var()
            assert 3.0 < enl < 6.5
            img = np.where(m, 10 ** (stack[t] / 10), np.nan)
            a, b = img[:, :-1].ravel(), img[:, 1:].ravel()
            ok = ~np.isnan(a) & ~np.isnan(b)
            assert abs(np.corrcoef(a[ok], b[ok])[0, 1]) < 0.2  # speckle is uncorrelated pixel to pixel
    assert np.nanmean(vv) > np.nanmean(vh) + 4


def test_rain_raises_bare_soil_backscatter(tiny_region, parcels, truth):
    dates, vv, _, idx, _ = _stack(tiny_region, parcels)
    weather = pd.read_parquet(tiny_region.weather).set_index("date")
    wet_all = np.array([weather.loc[d, "soil_wetness"] for d in dates])
    wet, level = [], []
    for p, r in enumerate(truth.itertuples()):
        if r.actual_crop_code not in (259, 2014, 256) or (idx == p).sum() < 20:
            continue
        bare = [t for t, d in enumerate(dates) if (d - r.sowing_date).days < 3]
        if len(bare) < 2:
            continue
        series = np.array([vv[t][idx == p].mean() for t in bare])
        wet.extend(wet_all[bare] - wet_all[bare].mean())
        level.extend(series - series.mean())
    assert len(wet) >= 6
    assert np.corrcoef(wet, level)[0, 1] > 0.5  # wetter soil, higher backscatter
