"""``ParcelPixels``: the stored pixels of a set of parcels over a run of dates, and their statistics.

Both read paths end here: :func:`cube.timeseries.parcel_timeseries` gathers a few parcels' windows,
:func:`cube.extract.extract` a block of a tile through its parcel-label layer; each builds a
``ParcelPixels`` and calls :meth:`ParcelPixels.frame`. So one parcel gets the same numbers from either,
bit for bit, as long as its pixels arrive in the same (row-major) order.

Values stay as stored (integers) until :meth:`frame` decodes them in float64: exact statistics, and half
the bytes moved compared with decoding to float32 first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from cardcube.spec import SCL_CLASSES
from cube.indices import INDICES, add_indices, bands_for
from cube.stats import STATS, ParcelStats, backscatter_stats, class_histogram, stats_frame, zonal_stats

TIME_COLUMNS = ("platform", "relative_orbit", "orbit_state")

__all__ = ["TIME_COLUMNS", "ParcelPixels", "physical"]


def physical(values: np.ndarray, attrs: Mapping[str, Any]) -> np.ndarray:
    """Stored integers to float64 physical values (NaN for nodata); classification layers stay codes."""
    if "flag_values" in attrs or "scale_factor" not in attrs:
        return values
    out = values.astype("float64") * attrs["scale_factor"] + attrs["add_offset"]
    out[values == attrs["nodata"]] = np.nan
    return out


@dataclass(frozen=True, eq=False)
class ParcelPixels:
    """Stored values of every parcel pixel: ``values[name]`` is (time, npix), ``labels`` (npix,) indexes
    ``ids``; ``attrs[name]`` are the variable's attributes (CF packing, units, flags); ``time_meta`` the
    per-date acquisition columns carried into the frame."""

    ids: np.ndarray
    labels: np.ndarray
    times: np.ndarray
    values: Mapping[str, np.ndarray]
    attrs: Mapping[str, Mapping[str, Any]]
    time_meta: Mapping[str, np.ndarray]

    @classmethod
    def from_dataset(cls, ds: xr.Dataset, names: Sequence[str], ids: np.ndarray, labels: np.ndarray,
                     selected: np.ndarray | None = None) -> ParcelPixels:
        """The pixels of a computed (numpy-backed) window: ``labels`` per selected pixel of the flattened
        ``(y, x)`` grid, ``selected`` the flat indices of those pixels (default: all). Pixels are stored
        grouped by parcel, so every statistic of every band finds them in order."""
        if selected is None:
            selected = np.arange(ds.sizes["y"] * ds.sizes["x"])
        order = np.argsort(labels, kind="stable")  # grouped by parcel once, row-major within each parcel
        labels, selected = labels[order], selected[order]
        values = {name: ds[name].values.reshape(ds.sizes["time"], -1)[:, selected] for name in names}
        return cls(ids, labels, ds["time"].values, values, {n: dict(ds[n].attrs) for n in names},
                   {c: ds[c].values for c in TIME_COLUMNS if c in ds.coords})

    def frame(self, bands: Sequence[str], *, stats: Sequence[str] = STATS, mask: Sequence[int] | None = None,
              histogram: bool = True) -> pd.DataFrame:
        """Per parcel, date and band (indices included): ``count, masked, mean, ...`` as in
        :func:`cube.stats.stats_frame`, plus ``scl_<code>`` class counts when SCL is among the values
        (``histogram``) and the acquisition columns. ``mask``: SCL classes treated as missing."""
        return self.annotate(self.band_stats(bands, stats=stats, mask=mask), histogram=histogram)

    def band_stats(self, bands: Sequence[str], *, stats: Sequence[str] = STATS,
                   mask: Sequence[int] | None = None) -> pd.DataFrame:
        """The statistics rows of :meth:`frame`, without the per-date columns."""
        n = len(self.ids)
        stored = [b for b in self.values if b != "SCL" or "SCL" in bands]
        derived = [b for b in bands if b in INDICES]
        needed = set(bands_for(derived)) | {b for b in bands if b in stored}
        pixels = {name: physical(self.values[name], self.attrs[name]) for name in stored if name in needed}
        has_scl = "SCL" in self.values
        cloudy = np.isin(self.values["SCL"], list(mask)) if mask is not None and has_scl else None
        if derived:  # indices per pixel, from the same pixels
            pix_ds = xr.Dataset({name: (("time", "p"), pixels[name]) for name in bands_for(derived)})
            for name, arr in add_indices(pix_ds, derived)[derived].items():
                pixels[name] = arr.values
        results = []
        for band in bands:
            values = pixels.pop(band).astype("float64")
            if cloudy is not None:
                values[cloudy] = np.nan
            units = self.attrs[band].get("units", "1") if band in self.attrs else "1"
            func = backscatter_stats if units == "dB" else zonal_stats
            results.append(ParcelStats(band, self.ids, self.times, func(values, self.labels, n, stats=stats), units))
        return stats_frame(results)

    def annotate(self, frame: pd.DataFrame, *, histogram: bool = True) -> pd.DataFrame:
        """``frame`` (rows per parcel, date, band) with the SCL class counts of each parcel and date
        (``histogram``, when SCL is among the values) and the acquisition columns of each date."""
        if histogram and "SCL" in self.values:
            n = len(self.ids)
            hist = class_histogram(self.values["SCL"], self.labels, n, class_codes=list(SCL_CLASSES))
            cols = {f"scl_{code}": hist[:, :, k].reshape(-1) for k, code in enumerate(SCL_CLASSES)}
            scl = pd.DataFrame({"parcel_id": np.repeat(self.ids, len(self.times)),
                                "time": np.tile(self.times, n), **cols})
            frame = frame.merge(scl, on=["parcel_id", "time"], how="left")
        meta = pd.DataFrame({"time": self.times, **self.time_meta})
        return frame.merge(meta, on="time", how="left")
