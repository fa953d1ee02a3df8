"""plot_timeseries: what it cannot draw is said, not drawn as empty panels; every value it draws is within the axis
limits of its panel."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import matplotlib.dates
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cardcube.errors import InvalidRequestError
from cube import plots
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


def test_values_beyond_the_usual_range_are_drawn_not_cut_off(tmp_path, monkeypatch) -> None:
    """A flooded parcel's NDVI (-0.45) and a VV backscatter of -2 dB lie outside the usual -0.2..1 and -30..-5 dB:
    the panel's axes reach them (they fell off the plot without a sign); a parcel within keeps the usual range."""
    times = pd.date_range("2024-05-01", periods=4, freq="5D")
    optical = pd.DataFrame({"parcel_id": ["wet"] * 4 + ["dry"] * 4, "time": list(times) * 2, "band": "NDVI",
                            "count": 50, "masked": 0, "median": [0.3, -0.45, 0.5, 0.6, 0.2, 0.4, 0.6, 0.8]})
    radar = pd.DataFrame({"parcel_id": ["wet"] * 4 + ["dry"] * 4, "time": list(times) * 2, "band": "VV",
                          "orbit_state": ["ascending", "descending"] * 4,
                          "mean": [-12.0, -2.0, -33.5, -11.0, -12.0, -10.0, -11.0, -9.0]})
    figures = _figures(monkeypatch)
    plots.plot_timeseries(optical, tmp_path / "ts.png", radar=radar, radar_band="VV")
    assert (tmp_path / "ts.png").stat().st_size > 0
    (fig,) = figures
    wet, dry, wet_radar, dry_radar = fig.axes  # the two panels, then their radar axes
    assert wet.get_ylim()[0] < -0.45 and wet_radar.get_ylim()[0] < -33.5 < -2.0 < wet_radar.get_ylim()[1]
    np.testing.assert_allclose(dry.get_ylim(), (-0.2, 1.0))
    np.testing.assert_allclose(dry_radar.get_ylim(), (-30.0, -5.0))
    assert wet_radar.get_ylabel() == "VV mean (dB)" and [line.get_label() for line in wet_radar.lines] == [
        "S1 VV ascending", "S1 VV descending"]


def test_drawing_leaves_the_notebook_backend_alone(tmp_path) -> None:
    """Importing cube.plots and drawing a file keep the backend the session chose (a notebook's inline one): the
    module chose Agg for the whole process on import, and a notebook's figures were no longer shown after it."""
    script = f"""
import matplotlib
matplotlib.use("svg")
import pandas as pd
from cube.plots import plot_timeseries
times = pd.date_range("2024-05-01", periods=3, freq="5D")
plot_timeseries(pd.DataFrame({{"parcel_id": "A", "time": times, "band": "NDVI", "count": 9, "masked": 0,
                               "median": [0.2, 0.5, 0.7]}}), {str(tmp_path / "ts.png")!r})
print(matplotlib.get_backend())
"""
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
    assert done.stdout.strip() == "svg"
    assert (tmp_path / "ts.png").stat().st_size > 0


def _figures(monkeypatch) -> list:
    """The Figures plot_timeseries draws, kept for the test to look at."""
    figures = []

    class Kept(plots.Figure):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            figures.append(self)

    monkeypatch.setattr(plots, "Figure", Kept)
    return figures


def test_one_date_or_none_clear_is_drawn_on_the_statistics_dates_with_labelled_axes(tmp_path, monkeypatch) -> None:
    """A parcel of one date had an axis of four years (2022 to 2026), and one with no clear date an axis of the hours
    of 1970-01-01 and an empty panel: the dates' axis spans the statistics' dates, says they are UTC, and a date
    without a valid pixel is a tick. The value axes name the statistic and its units: RVI was labelled dB."""
    figures = _figures(monkeypatch)
    day = pd.Timestamp("2024-05-01 10:50")
    one = pd.DataFrame({"parcel_id": "A", "time": [day], "band": "NDVI", "count": 10, "masked": 0, "median": [0.5]})
    plots.plot_timeseries(one, tmp_path / "one.png")
    times = pd.date_range("2024-06-01 10:50", periods=3, freq="5D")
    cloudy = pd.DataFrame({"parcel_id": "B", "time": times, "band": "NDVI", "count": 0, "masked": 10,
                           "median": np.nan})
    radar = pd.DataFrame({"parcel_id": "B", "time": times, "band": "RVI", "mean": [0.4, 0.5, 0.45],
                          "orbit_state": "ascending"})
    plots.plot_timeseries(cloudy, tmp_path / "cloudy.png", radar=radar, radar_band="RVI")
    (single,), (clouded, rvi) = figures[0].axes, figures[1].axes
    date = matplotlib.dates.date2num
    lo, hi = single.get_xlim()
    assert date(day - pd.Timedelta(days=10)) < lo < date(day) < hi < date(day + pd.Timedelta(days=10))
    lo, hi = clouded.get_xlim()
    assert lo < date(times[0]) and date(times[-1]) < hi < date(times[-1] + pd.Timedelta(days=10))
    assert single.get_xlabel() == clouded.get_xlabel() == "acquisition date (UTC)"
    assert single.get_ylabel() == "NDVI median"
    (ticks,) = [line for line in clouded.lines if line.get_label() == "no valid pixel"]
    assert len(ticks.get_xdata()) == 3
    assert rvi.get_ylabel() == "RVI mean" and rvi.get_ylim()[0] > 0  # a ratio of powers: no dB, nor -30


def test_each_track_of_an_orbit_direction_is_a_line_of_its_own(tmp_path, monkeypatch) -> None:
    """Two descending tracks see a meadow 1.5 dB apart (other incidence angles): one line through both zigzagged by
    1.5 dB at every pass, drawing a cut at each. A track is a line, named by its relative orbit where a direction has
    several; one track a direction keeps the direction's name."""
    figures = _figures(monkeypatch)
    times = pd.date_range("2024-05-01 05:50", periods=8, freq="3D")
    optical = pd.DataFrame({"parcel_id": "A", "time": times, "band": "NDVI", "count": 10, "masked": 0, "median": 0.7})
    orbit = np.array([37, 139] * 4)
    radar = pd.DataFrame({"parcel_id": "A", "time": times, "band": "VH", "orbit_state": "descending",
                          "relative_orbit": orbit, "mean": np.where(orbit == 37, -20.0, -18.5)})
    plots.plot_timeseries(optical, tmp_path / "ts.png", radar=radar)
    (_, twin), = [figures[0].axes]
    lines = {line.get_label(): line for line in twin.lines}
    assert sorted(lines) == ["S1 VH descending 139", "S1 VH descending 37"]
    assert set(lines["S1 VH descending 37"].get_ydata()) == {-20.0}  # no zigzag
    plots.plot_timeseries(optical, tmp_path / "one.png", radar=radar[radar.relative_orbit == 37])
    assert [line.get_label() for line in figures[1].axes[1].lines] == ["S1 VH descending"]


def test_passes_of_no_known_orbit_direction_are_drawn(tmp_path, monkeypatch) -> None:
    """A cube of items that say no orbit direction (``orbit_state`` "") drew no radar line at all, and one of a
    direction spelt otherwise (a cube ingested before its spelling was made STAC's) lost those passes: an axis empty
    where the mowing marker measured them. Each is a track of its own, in grey."""
    figures = _figures(monkeypatch)
    times = pd.date_range("2024-05-01 05:50", periods=6, freq="6D")
    optical = pd.DataFrame({"parcel_id": "A", "time": times, "band": "NDVI", "count": 10, "masked": 0, "median": 0.7})
    radar = pd.DataFrame({"parcel_id": "A", "time": times, "band": "VH", "relative_orbit": 37,
                          "orbit_state": ["", "", "DESCENDING", "descending", None, ""], "mean": -19.0})
    plots.plot_timeseries(optical, tmp_path / "ts.png", radar=radar)
    lines = {line.get_label(): len(line.get_xdata()) for line in figures[0].axes[1].lines}
    assert lines == {"S1 VH descending": 1, "S1 VH DESCENDING": 1, "S1 VH of no orbit direction": 4}


def test_the_clear_line_breaks_where_the_markers_do_not_interpolate(tmp_path, monkeypatch) -> None:
    """The NDVI line was drawn straight across two months of clouds, a season nobody saw, where the markers refuse
    to interpolate across more than 30 days: it breaks there now, and only there."""
    times = pd.to_datetime(["2024-05-01", "2024-05-11", "2024-07-10", "2024-07-15", "2024-08-14"])
    optical = pd.DataFrame({"parcel_id": "p", "time": times, "band": "NDVI", "count": 50, "masked": 0,
                            "median": [0.3, 0.4, 0.8, 0.7, 0.6]})
    figures = _figures(monkeypatch)
    plots.plot_timeseries(optical, tmp_path / "ts.png")
    (line, *_) = figures[0].axes[0].lines
    x, y = line.get_xdata(), line.get_ydata()
    gaps = np.flatnonzero(np.isnan(y))
    assert gaps.tolist() == [2] and np.datetime64("2024-05-11") < x[2] < np.datetime64("2024-07-10")  # 60 days: cut
    np.testing.assert_array_equal(np.delete(y, gaps), optical["median"])  # 30 days (07-15 to 08-14): one line
    plots.plot_timeseries(optical.iloc[[3, 0, 4, 2, 1]], tmp_path / "ts.png")  # rows of frames concatenated
    np.testing.assert_array_equal(figures[-1].axes[0].lines[0].get_ydata(), y)  # drawn in time order all the same
    plots.plot_timeseries(optical, tmp_path / "ts.png", max_gap_days=90)
    assert not np.isnan(figures[-1].axes[0].lines[0].get_ydata()).any()


def test_the_clear_line_counts_a_gap_in_whole_days_as_the_markers_do():
    """Two passes of other orbits lie 30 days and 10 minutes apart: the markers count 30 whole UTC days and
    interpolate across (``max_interpolation_gap`` 30), and the line was broken there."""
    times = pd.Series(pd.to_datetime(["2024-07-15 10:40", "2024-08-14 10:50", "2024-09-14 10:50"]))
    x, y = plots.broken_line(times, pd.Series([0.7, 0.6, 0.5]), 30)
    assert np.isnan(y).tolist() == [False, False, True, False]  # 30 days: one line; 31 days: cut
    assert np.datetime64("2024-08-14") < x[2] < np.datetime64("2024-09-14")
