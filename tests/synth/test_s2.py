"""Sentinel-2 content: SCL proportions, cloud effects on reflectance and the mowing signal."""

from __future__ import annotations

import datetime as dt

import numpy as np

from cardcube.spec import SCL_CLASSES


def test_scl_codes_plausible(s2_stack):
    scl = s2_stack.scl
    assert set(np.unique(scl)) <= set(SCL_CLASSES)
    valid = scl[scl != 0]
    share = {c: np.mean(valid == c) for c in SCL_CLASSES}
    assert share[4] > 0.3 and share[4] == max(share.values())  # vegetation dominates
    assert 0.05 < share[8] + share[9] < 0.6  # clouds present but not everywhere over the season
    assert share[3] > 0.002  # cloud shadows
    assert share[5] > 0.01  # bare soil and roads
    assert share[11] == 0 and share[1] == 0  # no snow, nothing saturated in summer
    per_date = [(s != 0).sum() and np.mean(np.isin(s[s != 0], (8, 9))) for s in scl]
    assert min(per_date) < 0.05 and max(per_date) > 0.5  # clear days and mostly cloudy days


def test_cloudy_pixels_bright_and_not_green(s2_stack):
    ndvi = s2_stack.ndvi
    found = 0
    for t in range(len(s2_stack.dates)):
        idx = s2_stack.parcel_index
        cloudy = (s2_stack.scl[t] == 9) & (idx >= 0)
        clear = (s2_stack.scl[t] == 4) & (idx >= 0)
        for p in np.intersect1d(np.unique(idx[cloudy]), np.unique(idx[clear])):
            a, b = cloudy & (idx == p), clear & (idx == p)
            if a.sum() < 5 or b.sum() < 5:
                continue
            clear_ndvi, cloudy_ndvi = np.median(ndvi[t][b]), np.median(ndvi[t][a])
            assert cloudy_ndvi < 0.3
            if clear_ndvi > 0.6:
                assert clear_ndvi - cloudy_ndvi > 0.4
                found += 1
            assert np.median(s2_stack.blue[t][a]) - np.median(s2_stack.blue[t][b]) > 0.15
    assert found >= 3


def _clear_median(s2_stack, t: int, p: int) -> float | None:
    pix = s2_stack.parcel_index == p
    if pix.sum() < 8:
        return None
    ok = pix & np.isin(s2_stack.scl[t], (4, 5))
    if ok.sum() < 0.9 * pix.sum():
        return None
    return float(np.median(s2_stack.ndvi[t][ok]))


def test_mowing_drops_ndvi(s2_stack, parcels, truth):
    assert (truth.parcel_id.to_numpy() == parcels.parcel_id.to_numpy()).all()
    drops = []
    for p, row in enumerate(truth.itertuples()):
        if row.actual_crop_code not in (265, 266) or row.is_anomaly:
            continue
        for mow in row.mowing_dates:
            before = [t for t, d in enumerate(s2_stack.dates) if -10 <= (d - mow).days < 0]
            after = [t for t, d in enumerate(s2_stack.dates) if 1 <= (d - mow).days <= 6]
            vb = [v for t in before if (v := _clear_median(s2_stack, t, p)) is not None]
            va = [v for t in after if (v := _clear_median(s2_stack, t, p)) is not None]
            if vb and va:
                drops.append(vb[-1] - va[0])
    assert len(drops) >= 3, "no mown parcel seen clear before and after its cut"
    assert np.median(drops) > 0.15
    assert np.mean(np.array(drops) > 0.08) > 0.8


def test_unmown_grassland_keeps_green(s2_stack, truth):
    grass = truth[(truth.actual_crop_code == 265) & (~truth.is_anomaly)]
    mown_ids = {i for i, m in zip(grass.index, grass.mowing_dates, strict=True) if len(m)}
    assert mown_ids
    early = [t for t, d in enumerate(s2_stack.dates) if d < dt.date(2024, 5, 10)]
    vals = [v for t in early for p in list(mown_ids)[:30] if (v := _clear_median(s2_stack, t, p)) is not None]
    assert vals and np.median(vals) > 0.7  # grassland in spring is dense and green


def test_ploughed_grassland_shows_bare_soil(s2_stack, truth):
    ploughed = truth[truth.anomaly_kind == "ploughed_grassland"]
    assert len(ploughed) >= 1
    seen = 0
    for p, row in ploughed.iterrows():
        assert row.declared_crop_code == 265 and row.actual_crop_code == 259
        for t, d in enumerate(s2_stack.dates):
            if 2 <= (d - row.ploughing_date).days <= 25 and (v := _clear_median(s2_stack, t, p)) is not None:
                assert v < 0.4  # bare soil where the declaration says permanent grassland
                seen += 1
    assert seen >= 1


def test_water_classified_and_dark(s2_stack):
    water = s2_stack.scl == 6
    assert water.mean() > 0.002  # the canal and ponds
    assert (s2_stack.parcel_index[np.any(water, axis=0)] >= 0).mean() < 0.02  # not inside parcels
    assert np.nanmedian(s2_stack.nir[water]) < 0.05
