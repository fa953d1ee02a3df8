"""The season's evidence of the grassland markers: Sentinel-1 backscatter compared within one track."""

from __future__ import annotations

import numpy as np
import pandas as pd

from cube.marker_rules import MarkerRules


def test_a_pass_without_a_relative_orbit_is_a_track_of_its_own():
    """Tracks are grouped by orbit_state and relative_orbit (by column: a territory's frame has millions of
    rows); a row without a relative orbit is a track of its own, not dropped."""
    from cube.season_evidence import RadarRows

    rng = np.random.default_rng(3)
    dates = pd.date_range("2024-03-01", "2024-10-31", freq="3D")
    k = np.tile(np.arange(dates.size) % 4, 50)
    s1 = pd.DataFrame({"parcel_id": np.repeat([f"p{i}" for i in range(50)], dates.size), "time": np.tile(dates, 50),
                       "band": "VH", "count": 60, "masked": 0, "mean": rng.normal(-15, 1, k.size),
                       "orbit_state": np.where(k < 2, "descending", "ascending"),
                       "relative_orbit": np.array([37.0, 139.0, 88.0, np.nan])[k]})
    radar = RadarRows(MarkerRules())
    radar.observe(s1)
    radar.check()
    evidence = radar.evidence(s1)
    np.testing.assert_array_equal(evidence["longest_vh_gap"], 12)  # four tracks, NaN's one of them
