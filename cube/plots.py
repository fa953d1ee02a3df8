"""Time-series plots of parcel statistics, as an inspector reads them: one panel per parcel."""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from cardcube.errors import InvalidRequestError
from cube.anomalies import MarkerRules
from cube.indices import units_of


def _band_of(frame: pd.DataFrame, band: str, statistic: str, what: str) -> str:
    """``band`` as the statistics ``frame`` spells it (any case), or a clear error: a band or statistic the frame
    lacks drew empty panels without a word."""
    held = list(dict.fromkeys(frame["band"])) if "band" in frame else []
    name = {str(b).upper(): b for b in held}.get(str(band).upper())
    if name is None:
        raise InvalidRequestError(f"the {what} statistics have no band {band}; their bands: "
                                  f"{', '.join(map(str, held)) or 'none'} (ask parcel_timeseries for it: bands=[...])")
    if statistic not in frame:
        raise InvalidRequestError(f"the {what} statistics have no {statistic} column, which the plot draws")
    return name


def _span(values: pd.Series, usual: tuple[float, float] | None) -> tuple[float, float]:
    """Axis limits: the ``usual`` range (the same on every panel, so panels compare), widened to every value
    with a margin of 5 % of it: a value beyond it (water's NDVI, VV above -5 dB) is drawn, not cut off. Without a
    usual range (a band of no known range, e.g. RVI), the values' own with that margin."""
    finite = values[pd.notna(values)]
    if usual is None:
        if not len(finite):
            return 0.0, 1.0
        usual = (float(finite.min()), float(finite.max()))
        if usual[0] == usual[1]:
            usual = (usual[0] - 0.5, usual[1] + 0.5)
    lo, hi = usual
    margin = 0.05 * (hi - lo)
    if not len(finite):
        return usual
    return min(lo, finite.min() - margin), max(hi, finite.max() + margin)


def _label(band: str, statistic: str) -> str:
    """An axis label naming the band, the statistic drawn and its units (none for reflectance and indices)."""
    units = units_of(band)
    return f"{band} {statistic}" + (f" ({units})" if units != "1" else "")


# the range of each panel's axis whatever the values (widened to hold them): parcels compare at a glance
USUAL_RANGE = {"1": (-0.2, 1.0), "dB": (-30.0, -5.0)}
PAD = pd.Timedelta(days=3)  # beyond the first and last date: a season of one date is a few days, not years


TRACK_COLOURS = {"ascending": ("tab:blue", "tab:cyan", "navy"), "descending": ("tab:purple", "tab:pink", "indigo")}
OTHER_TRACK_COLOURS = ("tab:gray", "dimgray", "black")  # a direction the rows name otherwise, or none


def _tracks(radar: pd.DataFrame, band: str) -> list[tuple[str, pd.DataFrame, str]]:
    """A line per track of ``radar`` (one parcel's rows): orbit direction and, where the rows give it, relative
    orbit, as the mowing marker compares passes (two tracks of one direction see a field at other incidence angles,
    at levels a dB or two apart: one line through both drew a drop at every pass). Each with its label and colour.
    Rows of no known direction (a source whose items say none, or spell it otherwise) are tracks too, in grey: they
    went undrawn, an empty axis where the marker measured passes."""
    keys = ["orbit_state", "relative_orbit"] if "relative_orbit" in radar else ["orbit_state"]
    state = radar["orbit_state"].fillna("").astype(str)
    out = []
    for direction in [*TRACK_COLOURS, *sorted(set(state) - set(TRACK_COLOURS))]:
        rows, colours = radar[state == direction], TRACK_COLOURS.get(direction, OTHER_TRACK_COLOURS)
        groups = list(rows.groupby(keys[1:], dropna=False)) if len(keys) > 1 else [((), rows)]
        for k, (track, r) in enumerate(groups):
            orbit = f" {int(track[0])}" if len(groups) > 1 and pd.notna(track[0]) else ""
            out.append((f"S1 {band} {direction or 'of no orbit direction'}{orbit}", r, colours[k % len(colours)]))
    return out


def broken_line(times: pd.Series, values: pd.Series, max_gap_days: float) -> tuple[np.ndarray, np.ndarray]:
    """``times`` and ``values`` (in time order) with a NaN midway between two points more than ``max_gap_days``
    apart, where matplotlib breaks the line: a straight line over weeks of clouds shows a season nobody saw. Gaps
    in whole UTC days, as the markers count them (passes of two orbits lie minutes apart in time of day)."""
    t, v = pd.DatetimeIndex(times).values, np.asarray(values, dtype=np.float64)
    cut = np.flatnonzero(np.diff(t.astype("datetime64[D]")).astype(np.int64) > max_gap_days) + 1
    return np.insert(t, cut, t[cut - 1] + (t[cut] - t[cut - 1]) / 2), np.insert(v, cut, np.nan)


def plot_timeseries(optical: pd.DataFrame, path: str | os.PathLike, *, radar: pd.DataFrame | None = None,
                    band: str = "NDVI", radar_band: str = "VH", titles: Mapping | None = None,
                    min_valid: float = 0.5, max_gap_days: float = MarkerRules.max_interpolation_gap) -> None:
    """One panel per parcel: the median of ``band`` over clear dates (dates with fewer than
    ``min_valid`` of the parcel's pixels valid are drawn hollow, dates with none as a grey tick at the bottom; the
    line broken between clear dates more than ``max_gap_days`` apart, across which the markers do not interpolate
    either), and
    S1 ``radar_band`` means per track (orbit direction and relative orbit) on a second axis (bands in any case);
    each axis names the statistic and its units, the dates' axis spans the statistics' dates."""
    band = _band_of(optical, band, "median", "optical")
    if radar is not None:
        radar_band = _band_of(radar, radar_band, "mean", "radar")
    parcels = list(dict.fromkeys(optical.parcel_id))
    # a Figure of its own, not pyplot's: drawing a file needs no backend, and choosing one (matplotlib.use("Agg") on
    # import) took a notebook's inline plots away for the rest of its session
    fig = Figure(figsize=(9, 2.6 * len(parcels)))
    axes = fig.subplots(len(parcels), 1, sharex=True, squeeze=False)
    for ax, pid in zip(axes[:, 0], parcels, strict=True):
        rows = optical[(optical.parcel_id == pid) & (optical.band == band)].sort_values("time")  # frames concatenated
        valid = rows["count"] / (rows["count"] + rows["masked"]).clip(lower=1)
        clear = rows[valid >= min_valid]
        ax.plot(*broken_line(clear.time, clear["median"], max_gap_days), "o-", color="tab:green",
                label=f"{band} median, clear")
        cloudy = rows[(valid < min_valid) & (rows["count"] > 0)]
        ax.plot(cloudy.time, cloudy["median"], "o", mfc="none", color="tab:green", alpha=0.5, label="mostly masked")
        # dates without a valid pixel (clouds, outside the swath): a tick at the bottom, so an empty panel is seen
        # to be one of clouded dates, not of no acquisition
        unseen = rows[rows["count"] == 0]
        ax.plot(unseen.time, [0.02] * len(unseen), "|", color="tab:gray", ms=8, transform=ax.get_xaxis_transform(),
                label="no valid pixel")
        ax.set_ylim(*_span(rows["median"], USUAL_RANGE.get(units_of(band))))
        ax.set_ylabel(_label(band, "median"))
        ax.set_title((titles or {}).get(pid, str(pid)), fontsize=10, loc="left")
        if radar is not None:
            twin = ax.twinx()
            mine = radar[(radar.parcel_id == pid) & (radar.band == radar_band)].sort_values("time")
            for label, r, colour in _tracks(mine, radar_band):
                twin.plot(r.time, r["mean"], ".-", color=colour, alpha=0.6, lw=0.8, label=label)
            twin.set_ylabel(_label(radar_band, "mean"))
            twin.set_ylim(*_span(mine["mean"], USUAL_RANGE["dB"] if radar_band in ("VV", "VH") else None))
        ax.grid(alpha=0.3)
    times = pd.concat([optical[optical.parcel_id.isin(parcels)].time,
                       *([radar[radar.parcel_id.isin(parcels)].time] if radar is not None else [])])
    if len(times):  # the dates of the statistics, whichever are drawn (none clear: matplotlib showed 1970)
        axes[0, 0].set_xlim(times.min() - PAD, times.max() + PAD)
    axes[-1, 0].set_xlabel("acquisition date (UTC)")
    handles = [h for ax in fig.axes for h in ax.get_legend_handles_labels()[0]]
    labels = [lab for ax in fig.axes for lab in ax.get_legend_handles_labels()[1]]
    unique = dict(zip(labels, handles, strict=True))
    fig.legend(unique.values(), unique.keys(), loc="lower center", ncol=5, fontsize=8)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(path, dpi=110)
