"""Time-series plots of parcel statistics, as an inspector reads them: one panel per parcel."""

from __future__ import annotations

import os
from collections.abc import Mapping

import pandas as pd
from matplotlib.figure import Figure

from cardcube.errors import InvalidRequestError


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


def _span(values: pd.Series, usual: tuple[float, float]) -> tuple[float, float]:
    """Axis limits: the ``usual`` range (the same on every panel, so panels compare), widened to every value
    with a margin of 5 % of it: a value beyond it (water's NDVI, VV above -5 dB) is drawn, not cut off."""
    lo, hi = usual
    margin = 0.05 * (hi - lo)
    finite = values[pd.notna(values)]
    if not len(finite):
        return usual
    return min(lo, finite.min() - margin), max(hi, finite.max() + margin)


def plot_timeseries(optical: pd.DataFrame, path: str | os.PathLike, *, radar: pd.DataFrame | None = None,
                    band: str = "NDVI", radar_band: str = "VH", titles: Mapping | None = None,
                    min_valid: float = 0.5) -> None:
    """One panel per parcel: the median of ``band`` over clear dates (dates with fewer than
    ``min_valid`` of the parcel's pixels valid are drawn hollow), and S1 ``radar_band`` means per orbit
    direction on a second axis (bands in any case)."""
    band = _band_of(optical, band, "median", "optical")
    if radar is not None:
        radar_band = _band_of(radar, radar_band, "mean", "radar")
    parcels = list(dict.fromkeys(optical.parcel_id))
    # a Figure of its own, not pyplot's: drawing a file needs no backend, and choosing one (matplotlib.use("Agg") on
    # import) took a notebook's inline plots away for the rest of its session
    fig = Figure(figsize=(9, 2.6 * len(parcels)))
    axes = fig.subplots(len(parcels), 1, sharex=True, squeeze=False)
    for ax, pid in zip(axes[:, 0], parcels, strict=True):
        rows = optical[(optical.parcel_id == pid) & (optical.band == band)]
        valid = rows["count"] / (rows["count"] + rows["masked"]).clip(lower=1)
        clear = rows[valid >= min_valid]
        ax.plot(clear.time, clear["median"], "o-", color="tab:green", label=f"{band} median, clear")
        cloudy = rows[(valid < min_valid) & (rows["count"] > 0)]
        ax.plot(cloudy.time, cloudy["median"], "o", mfc="none", color="tab:green", alpha=0.5, label="mostly masked")
        ax.set_ylim(*_span(rows["median"], (-0.2, 1.0)))
        ax.set_ylabel(band)
        ax.set_title((titles or {}).get(pid, str(pid)), fontsize=10, loc="left")
        if radar is not None:
            twin = ax.twinx()
            mine = radar[(radar.parcel_id == pid) & (radar.band == radar_band)]
            for direction, colour in (("ascending", "tab:blue"), ("descending", "tab:purple")):
                r = mine[mine.orbit_state == direction]
                twin.plot(r.time, r["mean"], ".-", color=colour, alpha=0.6, lw=0.8,
                          label=f"S1 {radar_band} {direction}")
            twin.set_ylabel(f"{radar_band} (dB)")
            twin.set_ylim(*_span(mine["mean"], (-30.0, -5.0)))
        ax.grid(alpha=0.3)
    handles = [h for ax in fig.axes for h in ax.get_legend_handles_labels()[0]]
    labels = [lab for ax in fig.axes for lab in ax.get_legend_handles_labels()[1]]
    unique = dict(zip(labels, handles, strict=True))
    fig.legend(unique.values(), unique.keys(), loc="lower center", ncol=4, fontsize=8)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(path, dpi=110)
