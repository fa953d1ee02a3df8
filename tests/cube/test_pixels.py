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
