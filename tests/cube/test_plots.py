"""plot_timeseries: what it cannot draw is said, not drawn as empty panels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cardcube.errors import InvalidRequestError
from cube.plots import plot_timeseries


def _frame(bands, statistic: str) -> pd.DataFrame:
    times = pd.date_range("2024-05-01", periods=6, freq="5D")
    rows = [{"parcel_id": pid, "time": t, "band": b, "count": 10, "masked": 0, statistic: 0.1 * k,
             "orbit_state": "ascending" if k % 2 else "descending"}
            for pid in ("A", "B") for k, t in enumerate(times) for b in bands]
    return pd.DataFrame(rows)


def test_a_band_the_statistics_lack_is_a_clear_error(tmp_path):
    optical, radar = _frame(["B04", "NDVI"], "median"), _frame(["VV"], "mean").assign(mean=-12.0)
    with pytest.raises(InvalidRequestError, match=r"the optical statistics have no band NDVI; their bands: B04, B08 "
                                                  r"\(ask parcel_timeseries for it"):
        plot_timeseries(_frame(["B04", "B08"], "median"), tmp_path / "x.png")
    with pytest.raises(InvalidRequestError, match="the radar statistics have no band VH; their bands: VV"):
        plot_timeseries(optical, tmp_path / "x.png", radar=radar)
    with pytest.raises(InvalidRequestError, match="the optical statistics have no median column"):
        plot_timeseries(_frame(["NDVI"], "mean"), tmp_path / "x.png")
    with pytest.raises(InvalidRequestError, match="no band NDVI; their bands: none"):
        plot_timeseries(optical.iloc[:0], tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()
    plot_timeseries(optical, tmp_path / "ok.png", band="ndvi", radar=radar, radar_band="vv")
    image = np.asarray(Image.open(tmp_path / "ok.png").convert("RGB"))
    green = (image[..., 1] > 120) & (image[..., 0] < 80) & (image[..., 2] < 80)  # tab:green, the NDVI line
    assert green.sum() > 50
