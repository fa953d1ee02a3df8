"""``ParcelPixels``: the stored pixels of a set of parcels over a run of dates, and their statistics.

Both read paths end here: :func:`cube.timeseries.parcel_timeseries` gathers a few parcels' windows,
:func:`cube.extract.extract` a block of a tile through its parcel-label layer; each builds a
``ParcelPixels`` and calls :meth:`ParcelPixels.frame`. So one parcel gets the same numbers from either,
bit for bit, as long as its pixels arrive in the same (row-major) order.

Values stay as stored (integers, at their native resolution) and are read in place through a per-band
pixel index: no per-pixel copy, decoding or 20 m -> 10 m repeat. Where the index reads a stored pixel more
than once for one parcel (a 20 m band under 10 m pixels), the repeats are merged into one weighted entry
(:class:`cube.stats.WeightedIndex`), which gives the same numbers from about a quarter of the reads.
Statistics are taken on the physical values (see :func:`cube.stats.segment_stats`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from cardcube.decibels import db_to_linear, linear_to_db
from cardcube.spec import SCL_CLASSES
from cube.indices import DB_RATIOS, INDICES, add_indices, bands_for
from cube.parcel_stats import ParcelStats, stats_frame
from cube.stats import (
    STATS,
    WeightedIndex,
    backscatter_segment_stats,
    class_histogram,
    clear_pixels,
    segment_stats,
    small_uint,
    unpack,
)

# the per-date acquisition columns of every row: ``scene_id`` the date's scene in the cube's ledger (a date of
# several products, a Sentinel-1 pass's slices or a datastrip's parts, is named by its first; of a parcel read
# across tiles, each tile's, ``+``-joined), so that an auditor can tie a row to its source product
TIME_COLUMNS = ("platform", "relative_orbit", "orbit_state", "scene_id")
# those of an extraction made before rows named their scene (its manifest has no ``time_columns``): its updates
# write them still, so that every file of one extraction has one schema
EARLIER_TIME_COLUMNS = ("platform", "relative_orbit", "orbit_state")

__all__ = ["EARLIER_TIME_COLUMNS", "TIME_COLUMNS", "ParcelPixels", "packing", "physical"]


def packing(attrs: Mapping[str, Any]) -> tuple[float, float, float]:
    """``(nodata, scale, offset)`` of a variable: stored ``x`` means ``x * scale + offset`` unless it is
    ``nodata``; classification layers and decoded floats are ``(NaN, 1, 0)``."""
    if "flag_values" in attrs or "scale_factor" not in attrs:
        return np.nan, 1.0, 0.0
    return float(attrs["nodata"]), float(attrs["scale_factor"]), float(attrs["add_offset"])


def physical(values: np.ndarray, attrs: Mapping[str, Any]) -> np.ndarray:
    """Stored integers to float64 physical values (NaN for nodata); classification layers stay codes."""
    if "flag_values" in attrs or "scale_factor" not in attrs:
        return values
    nodata, scale, offset = packing(attrs)
    return unpack(values, nodata=nodata, scale=scale, offset=offset)


@dataclass(frozen=True, eq=False)
class ParcelPixels:
    """Stored values of every parcel pixel, grouped by parcel: the first ``sizes[0]`` pixels belong to
    ``ids[0]``, and so on. ``values[name]`` is (time, n) as stored and ``index[name]`` (npix,) the column
    of each pixel in it; ``attrs[name]`` are the variable's attributes (CF packing, units, flags);
    ``time_meta`` the per-date acquisition columns carried into the frame; ``merged[name]`` the index of
    ``name`` with each parcel's repeated columns merged, where that saves reads."""

    ids: np.ndarray
    sizes: np.ndarray
    times: np.ndarray
    values: Mapping[str, np.ndarray]
    index: Mapping[str, np.ndarray]
    attrs: Mapping[str, Mapping[str, Any]]
    time_meta: Mapping[str, np.ndarray]
    merged: Mapping[str, WeightedIndex] = field(default_factory=dict)

    @classmethod
    def from_labels(cls, ids: np.ndarray, labels: np.ndarray, times: np.ndarray, values: Mapping[str, np.ndarray],
                    attrs: Mapping[str, Mapping[str, Any]], time_meta: Mapping[str, np.ndarray],
                    index: Mapping[str, np.ndarray] | None = None) -> ParcelPixels:
        """Pixels with a label (0 .. len(ids)-1) each, in row-major order; ``index[name]`` maps them to the
        columns of ``values[name]`` (default: the values are already one column per pixel). With ``index``,
        ``values`` may hold only some of its variables: ``dataclasses.replace`` swaps in others later."""
        labels = np.asarray(labels, dtype=np.int64)
        order = np.argsort(labels, kind="stable")  # grouped by parcel once, row-major within each parcel
        every = np.arange(labels.size)
        sizes = np.bincount(labels, minlength=len(ids))
        grouped = {name: np.asarray(index[name] if index else every, dtype=np.int64)[order]
                   for name in (index if index else values)}
        merged = {} if not index else {  # without an index every pixel has a column of its own: nothing repeats
            name: m for name in grouped if name != "SCL"
            if (m := WeightedIndex.merge(grouped[name], sizes, key=grouped.get("SCL"))) is not None}
        return cls(np.asarray(ids), sizes, np.asarray(times), values, grouped, attrs, time_meta, merged)

    def _gathered(self, name: str) -> np.ndarray:
        """(time, npix) physical values of ``name``, one column per pixel."""
        return physical(self.values[name][:, self.index[name]], self.attrs[name])

    def _labels(self) -> np.ndarray:
        return np.repeat(np.arange(self.sizes.size), self.sizes)

    def frame(self, bands: Sequence[str], *, stats: Sequence[str] = STATS, mask: Sequence[int] | None = None,
              histogram: bool = True) -> pd.DataFrame:
        """Per parcel, date and band (indices included): ``count, masked, mean, ...`` as in
        :func:`cube.parcel_stats.stats_frame`, plus ``scl_<code>`` class counts when SCL is among the values
        (``histogram``) and the acquisition columns. ``mask``: SCL classes treated as missing."""
        return stats_frame(self.band_stats(bands, stats=stats, mask=mask), per_date=self.per_date(histogram=histogram))

    def clear(self, mask: Sequence[int] | None) -> np.ndarray | None:
        """(time, npix) booleans, False where a pixel's SCL class is in ``mask``; None without a mask or SCL."""
        if mask is None or "SCL" not in self.values:
            return None
        return clear_pixels(self.values["SCL"], self.index["SCL"], list(mask))

    def band_stats(self, bands: Sequence[str], *, stats: Sequence[str] = STATS, mask: Sequence[int] | None = None,
                   clear: np.ndarray | None = None) -> list[ParcelStats]:
        """The statistics of each of ``bands`` (stored bands and indices). ``clear`` is :meth:`clear` of
        ``mask`` computed beforehand, when several calls share the same dates (extraction's band groups)."""
        if clear is None:
            clear = self.clear(mask)
        derived = [b for b in bands if b in INDICES]
        pixels: dict[str, np.ndarray] = {}
        if derived:  # indices per pixel, from the same pixels
            pix_ds = xr.Dataset({name: (("time", "p"), self._gathered(name)) for name in bands_for(derived)})
            pixels = {name: arr.values for name, arr in add_indices(pix_ds, derived)[derived].items()}
        results = []
        for band in bands:
            units = self.attrs[band].get("units", "1") if band in self.attrs else "1"
            if units == "dB":  # the mean in linear power
                nodata, scale, offset = packing(self.attrs[band])
                out = backscatter_segment_stats(self.values[band], self.index[band], self.sizes, stats=stats,
                                                nodata=nodata, scale=scale, offset=offset, clear=clear)
            elif band in DB_RATIOS:
                out, units = self._ratio_stats(band, pixels.pop(band), stats=stats, clear=clear), "dB"
            elif band in pixels:
                out = segment_stats(pixels.pop(band), np.arange(self.sizes.sum()), self.sizes, stats=stats, clear=clear)
            else:
                values, nodata, scale, offset = self.values[band], *packing(self.attrs[band])
                merged = self.merged.get(band)
                if merged is not None and small_uint(values.dtype):
                    out = segment_stats(values, merged.index, merged.sizes, stats=stats, nodata=nodata, scale=scale,
                                        offset=offset, clear=clear, weight=merged.weight, at=merged.at)
                else:
                    out = segment_stats(values, self.index[band], self.sizes, stats=stats, nodata=nodata,
                                        scale=scale, offset=offset, clear=clear)
            results.append(ParcelStats(band, self.ids, self.times, out, units))
        return results

    def _ratio_stats(self, band: str, ratio_db: np.ndarray, *, stats: Sequence[str], clear: np.ndarray | None
                     ) -> dict[str, np.ndarray]:
        """Statistics of a backscatter ratio index (:data:`cube.indices.DB_RATIOS`) given per pixel in dB: the
        order statistics and ``std`` of the pixels' dB ratios, and the mean as the ratio of the parcel's mean
        linear powers over the pixels where both are measured (in dB, as the bands' own means are taken)."""
        every = np.arange(self.sizes.sum())
        out = segment_stats(ratio_db, every, self.sizes, stats=[s for s in stats if s != "mean"], clear=clear)
        if "mean" in stats:
            both = ~np.isnan(ratio_db)
            num, den = (segment_stats(np.where(both, db_to_linear(self._gathered(b)), np.nan), every, self.sizes,
                                      stats=("mean",), clear=clear)["mean"] for b in INDICES[band][0])
            with np.errstate(divide="ignore", invalid="ignore"):
                out["mean"] = linear_to_db(num / den)
        return out

    def per_date(self, *, histogram: bool = True) -> dict[str, np.ndarray]:
        """The columns of :meth:`frame` that do not depend on the band: SCL class counts per parcel and
        date (``histogram``, when SCL is among the values) and the acquisition columns per date."""
        out: dict[str, np.ndarray] = {}
        if histogram and "SCL" in self.values:
            scl = self.values["SCL"][:, self.index["SCL"]]
            hist = class_histogram(scl, self._labels(), self.sizes.size, class_codes=list(SCL_CLASSES))
            out.update({f"scl_{code}": hist[:, :, k] for k, code in enumerate(SCL_CLASSES)})
        return {**out, **self.time_meta}
