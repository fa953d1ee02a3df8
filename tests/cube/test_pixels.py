"""ParcelPixels statistics of indices against numpy: a backscatter ratio's mean is taken in linear power."""

from __future__ import annotations

import numpy as np
import pandas as pd

from cube.pixels import ParcelPixels


def test_the_cross_ratio_of_a_parcel_is_the_ratio_of_its_mean_powers():
    """VH_VV of a parcel: 10 log10(mean linear VH / mean linear VV) over the pixels where both are measured,
    as its VH and VV rows are averaged (the mean of the pixels' dB ratios would be biased by speckle);
    the order statistics stay those of the pixels' dB ratios."""
    rng = np.random.default_rng(4)
    times, sizes = pd.date_range("2024-05-01", periods=3, freq="6D").values, np.array([40, 25])
    labels = np.repeat([0, 1], sizes)
    vv = (-10 + 10 * np.log10(rng.gamma(4.5, 1 / 4.5, (3, sizes.sum())))).astype(np.float32)
    vh = (-17 + 10 * np.log10(rng.gamma(4.5, 1 / 4.5, (3, sizes.sum())) * np.linspace(0.3, 3, sizes.sum()))
          ).astype(np.float32)
    vh[1, :5] = np.nan  # no VH there (a swath edge): those pixels leave the ratio's numerator and denominator
    attrs = {"VV": {"units": "dB"}, "VH": {"units": "dB"}}
    px = ParcelPixels.from_labels(np.array(["a", "b"], dtype=object), labels, times, {"VV": vv, "VH": vh}, attrs, {})
    got = {s.band: s for s in px.band_stats(["VV", "VH", "VH_VV"], stats=["mean", "median"])}
    for j, cols in enumerate((slice(0, 40), slice(40, 65))):
        for t in range(3):
            h, v = vh[t, cols].astype(float), vv[t, cols].astype(float)
            both = ~np.isnan(h)
            want = 10 * np.log10(np.mean(10 ** (h[both] / 10)) / np.mean(10 ** (v[both] / 10)))
            np.testing.assert_allclose(got["VH_VV"]["mean"][j, t], want, rtol=0, atol=1e-9)
            np.testing.assert_allclose(got["VH_VV"]["median"][j, t], np.median((h - v)[both]), atol=1e-5)
            assert abs(np.mean((h - v)[both]) - want) > 1e-3  # what averaging the dB ratios gave
    np.testing.assert_allclose(got["VH_VV"]["mean"][:, [0, 2]], (got["VH"]["mean"] - got["VV"]["mean"])[:, [0, 2]],
                               atol=1e-9)  # where every pixel has both, the VH row minus the VV row
    assert got["VH_VV"].units == "dB"


def test_bands_of_both_resolutions_match_numpy_on_the_pixels():
    """The extraction's path for stored bands: uint16 reflectances with nodata and CF packing, a 10 m band read
    per pixel and a 20 m band through merged weighted entries, one SCL cloud mask at 20 m for both, parcels of
    1 to a few hundred pixels (some dates all clouded or all nodata). Reference: numpy's nan-statistics on
    each 10 m pixel's decoded value, NaN where masked."""
    rng = np.random.default_rng(21)
    ntime, side = 5, 60
    rows, cols = np.divmod(np.arange(side * side), side)
    labels = np.full(side * side, -1)
    labels[(rows < 50) & (cols < 45)] = (rows // 10 * 5 + cols // 9)[(rows < 50) & (cols < 45)]  # 25 parcels
    labels[(rows == 55) & (cols == 55)] = 25  # a parcel of one pixel
    keep = np.flatnonzero(labels >= 0)
    coarse = (rows // 2) * (side // 2) + cols // 2
    b04 = rng.integers(300, 900, (ntime, side * side)).astype(np.uint16)
    b05 = rng.integers(1000, 1400, (ntime, (side // 2) ** 2)).astype(np.uint16)
    b05[:, rng.random((side // 2) ** 2) < 0.05] = rng.integers(1, 60000)  # a few wide-ranged parcels
    b04[rng.random(b04.shape) < 0.1] = 0  # nodata
    b05[2] = 0  # a date without a value
    scl = rng.choice(np.array([4, 5, 8, 9], dtype=np.uint8), (ntime, (side // 2) ** 2), p=[0.5, 0.2, 0.2, 0.1])
    scl[3] = 9  # a date all clouded
    packed = {"scale_factor": 1e-4, "add_offset": -0.1, "nodata": 0}
    attrs = {"B04": packed, "B05": packed, "SCL": {"flag_values": list(range(12))}}
    times = pd.date_range("2024-05-01", periods=ntime, freq="5D").values
    ids = np.array([f"p{j}" for j in range(26)], dtype=object)
    px = ParcelPixels.from_labels(ids, labels[keep], times, {"B04": b04, "B05": b05, "SCL": scl}, attrs, {},
                                  index={"B04": keep, "B05": coarse[keep], "SCL": coarse[keep]})
    assert "B05" in px.merged and "B04" not in px.merged  # the 20 m band goes through weighted entries
    stats = ["count", "mean", "std", "min", "max", "p25", "median", "p75", "p10"]
    got = {s.band: s for s in px.band_stats(["B04", "B05"], stats=stats, mask=[8, 9])}
    cloudy = np.isin(scl[:, coarse], [8, 9])
    reference = {"mean": np.nanmean, "std": np.nanstd, "min": np.nanmin, "max": np.nanmax,
                 "p25": lambda a: np.nanpercentile(a, 25), "median": np.nanmedian,
                 "p75": lambda a: np.nanpercentile(a, 75), "p10": lambda a: np.nanpercentile(a, 10)}
    for band, stored in (("B04", b04), ("B05", b05[:, coarse])):
        decoded = np.where((stored == 0) | cloudy, np.nan, stored * 1e-4 - 0.1)
        for j in range(ids.size):
            pixels = decoded[:, labels == j]
            valid = (~np.isnan(pixels)).sum(axis=1)
            np.testing.assert_array_equal(got[band]["count"][j], valid)
            for stat, fn in reference.items():
                want = np.array([fn(p) if n else np.nan for p, n in zip(pixels, valid, strict=True)])
                np.testing.assert_allclose(got[band][stat][j], want, rtol=1e-12, atol=1e-15,
                                           err_msg=f"{band} {stat} parcel {j}")
