"""Zonal statistics per parcel and date: one vectorised implementation for one parcel or a million.

Input is always the same flat form: ``values`` of shape ``(time, npix)`` (NaN where a pixel is masked
or nodata) and ``labels`` of shape ``(npix,)`` naming each pixel's parcel (0 .. n_labels-1; negative
labels are ignored, so a raw :func:`cube.membership.label_pixels` image can be passed flattened).
Pixels are sorted by label once; then one compiled (numba) pass per date row (:mod:`cube.kernels`)
gathers each parcel's valid values, sums them, and orders them only as far as the percentiles need (for
the cube's stored 8/16-bit integers: a histogram of the parcel's value range, or a radix sort; otherwise
quickselect): no Python loop over parcels, and no full-array temporaries.

Conventions
-----------
* ``count`` is the number of valid (non-NaN) pixels, ``masked`` the parcel's other pixels; both are
  always returned. Every other statistic is NaN where ``count`` is 0.
* ``std`` is the population standard deviation (``ddof=0``, as ``np.nanstd``): a parcel's pixels are
  the whole population of interest, not a sample of it.
* Percentiles (``p25``, ``p75``, any ``pNN``) are exact, with numpy's default linear interpolation
  between order statistics (``np.nanpercentile(..., method="linear")``); ``median`` is the mean of
  the middle pair as in ``np.nanmedian`` (the same number, also for infinities).
* Sentinel-1 backscatter (:func:`backscatter_stats`) is averaged in linear power and reported in dB:
  the mean of dB values would be a geometric mean, biased low by speckle. ``std`` is the standard
  deviation of the dB values (dB), the usual speckle/heterogeneity measure on log-scaled SAR: a std
  of linear power converted to dB is meaningless. min/max/percentiles are order statistics of the dB
  values as stored (conversion is monotonic, so min/max/odd medians are identical either way;
  interpolated percentiles interpolate in dB). The cross-ratio index ``VH_VV`` alike: its mean is the
  ratio of the parcel's mean linear VH and VV powers, in dB (:class:`cube.pixels.ParcelPixels`).
* SCL classes are counted, never averaged: :func:`class_histogram` gives counts per parcel, date and
  class; :class:`cube.parcel_stats.ClassHistogram` holds them with the dates and turns them into fractions
  or a frame. :class:`cube.parcel_stats.ParcelStats` and its table are what these numbers become.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cardcube.decibels import LN10_OVER_10, linear_to_db
from cardcube.errors import InvalidRequestError, RequestTooLargeError
from cube import kernels

STATS: tuple[str, ...] = ("count", "mean", "std", "min", "max", "p25", "median", "p75")
FRAME_COLUMNS: tuple[str, ...] = ("parcel_id", "time", "band", "count", "masked", *STATS[1:])

__all__ = [
    "FRAME_COLUMNS",
    "STATS",
    "WeightedIndex",
    "backscatter_segment_stats",
    "backscatter_stats",
    "class_histogram",
    "clear_pixels",
    "segment_stats",
    "small_uint",
    "stat_list",
    "unpack",
    "zonal_stats",
]

_PERCENTILE = re.compile(r"p(\d{1,2}(?:\.\d+)?|100)")
MAX_STATS = 32  # statistics one request asks for: a column each, on every row (the service's limit counts rows)


def _percentile_of(stat: str) -> float | None:
    if stat == "median":
        return 50.0
    m = _PERCENTILE.fullmatch(stat)
    return float(m.group(1)) if m else None


def check_stats(stats: Sequence[str], *, required: bool = True) -> None:
    """A clear error for a statistic the kernels do not compute, or for none at all if ``required``."""
    if required and not stats:
        raise InvalidRequestError(f"no statistic given; use {', '.join(STATS)} or pNN")
    bad = [s for s in stats if s not in STATS and s != "masked" and _percentile_of(s) is None]
    if bad:
        raise InvalidRequestError(f"unknown statistic(s) {', '.join(bad)}; use {', '.join(STATS)} or pNN "
                                  f"(a percentile, p0 to p100)")


def stat_list(stats: Sequence[str] | str) -> list[str]:
    """The statistics asked for, as a list or one string ``"mean, p90"``: lower case, each once, in the order
    given; a clear error for an unknown one or for none. What the CLI, the REST service and the Python API
    all parse ``stats`` with."""
    names = stats.split(",") if isinstance(stats, str) else list(stats)
    wanted = list(dict.fromkeys(str(s).strip().lower() for s in names if str(s).strip()))
    if len(wanted) > MAX_STATS:  # 10,000 percentiles in a query string made answers of gigabytes
        raise RequestTooLargeError(f"{len(wanted):,} statistics asked for (limit {MAX_STATS}, a column each): "
                                   "ask for fewer, or compute the others from the values")
    check_stats(wanted)
    spelled: dict[float, str] = {}
    for s in wanted:
        q = _percentile_of(s) if s != "median" else None
        if q is not None and spelled.setdefault(q, s) != s:
            raise InvalidRequestError(f"{spelled[q]} and {s} are one percentile: ask for it once")
    return wanted


@dataclass(frozen=True, slots=True)
class _Segments:
    """Pixels grouped by label: the sort order and each label's run length."""

    order: np.ndarray  # indices of the kept pixels, sorted by label
    sizes: np.ndarray  # pixels per label (n_labels,)

    @classmethod
    def build(cls, labels: np.ndarray, n_labels: int) -> _Segments:
        labels = np.asarray(labels)
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            raise InvalidRequestError(f"labels must be 1-d integers, got {labels.dtype} {labels.shape}")
        if labels.size and labels.max(initial=-1) >= n_labels:
            raise InvalidRequestError(f"label {labels.max()} out of range for {n_labels} parcels")
        keep = np.flatnonzero(labels >= 0)
        order = keep[np.argsort(labels[keep], kind="stable")]
        return cls(order, np.bincount(labels[order], minlength=n_labels).astype(np.int64))


def segment_stats(
    values: np.ndarray,
    index: np.ndarray,
    sizes: np.ndarray,
    *,
    stats: Sequence[str] = STATS,
    nodata: float = np.nan,
    scale: float = 1.0,
    offset: float = 0.0,
    clear: np.ndarray | None = None,
    weight: np.ndarray | None = None,
    at: np.ndarray | None = None,
    mean_of_power: bool = False,
) -> dict[str, np.ndarray]:
    """:func:`zonal_stats` of pixels already grouped by label, read in place from stored arrays.

    Label ``j`` owns the next ``sizes[j]`` entries of ``index``; its value at date ``t`` is
    ``values[t, index[k]]`` (``values`` as stored: integers or floats, any width). NaN, ``nodata`` and,
    given ``clear`` (time, ``index.size``), pixels where ``clear[t, k]`` is False (:func:`clear_pixels`: a
    cloud mask, computed once for every band) are not valid. Statistics are of the physical values
    ``x * scale + offset``: stored integers are never copied or decoded per pixel, which is what makes a
    territory-wide extraction cheap, and a 20 m band is read at 10 m through its ``index`` with no repeat. A scale
    of a whole inverse (Sentinel-2's 1e-4) is applied to the results as a division (:func:`decimal_packing`).

    ``weight`` and ``at`` (from :class:`WeightedIndex`): entry ``k`` stands for ``weight[k]`` pixels and is
    masked by ``clear[t, at[k]]`` (``clear`` then has one column per pixel). The statistics are those of
    the pixels, bit for bit for stored unsigned 8/16-bit values (exact integer sums), from fewer reads.

    ``mean_of_power``: the physical values are dB, and ``mean`` is that of their linear power
    (:func:`cardcube.decibels.db_to_linear`, in linear power), computed in the same pass; the other
    statistics are of the dB.
    """
    check_stats(stats, required=False)  # a backscatter ratio asks for its mean apart (cube.pixels)
    values = np.asarray(values)
    if not (np.issubdtype(values.dtype, np.integer) or np.issubdtype(values.dtype, np.floating)):
        values = values.astype(np.float64)
    if values.ndim != 2:
        raise InvalidRequestError(f"values must be (time, pixels), got shape {values.shape}")
    if not scale > 0:
        raise InvalidRequestError(f"scale must be positive, got {scale}")
    sizes = np.asarray(sizes, dtype=np.int64)
    index = np.ascontiguousarray(index, dtype=np.int64)  # viewed as unsigned by the kernel
    if index.size != sizes.sum() or (index.size and not 0 <= index.min() <= index.max() < values.shape[1]):
        raise InvalidRequestError(f"index ({index.size} pixels) does not fit sizes ({sizes.sum()}) and values "
                                  f"{values.shape}")
    starts = np.cumsum(sizes) - sizes
    pixels, weight, at = _weights(index, starts, sizes, weight, at, clear)
    if clear is None:
        clear = np.zeros((0, 0), dtype=np.bool_)
    elif clear.shape != (values.shape[0], pixels.sum()) or clear.dtype != np.bool_:
        raise InvalidRequestError(f"clear must be booleans of shape {(values.shape[0], pixels.sum())}, got "
                                  f"{clear.dtype} {clear.shape}")
    wanted = sorted(((s, q) for s in stats if (q := _percentile_of(s)) is not None), key=lambda sq: sq[1])
    decimal = None if mean_of_power else decimal_packing(scale, offset)
    if decimal is not None:  # the statistics of the stored integers, then each divided once (below)
        scale, offset = 1.0, 0.0
    shape = (values.shape[0], sizes.size)
    count = np.zeros(shape, dtype=np.int64)
    mean, std, vmin, vmax = (np.full(shape, np.nan) for _ in range(4))
    pct = np.full((len(wanted), *shape), np.nan)
    kernels.segment_pass(values, index, starts, sizes, weight, at, int(pixels.max(initial=0)) if weight.size else 0,
                   float(nodata), float(scale), float(offset), clear,
                   np.array([q for _, q in wanted], dtype=np.float64),
                   np.array([s == "median" for s, _ in wanted], dtype=np.bool_),
                   small_uint(values.dtype), values.dtype == np.float32, LN10_OVER_10 if mean_of_power else 0.0,
                   count, mean, std, vmin, vmax, pct)
    if decimal is not None:
        divisor, shift = decimal
        for located in (mean, vmin, vmax, pct):
            np.divide(located + shift, divisor, out=located)
        np.divide(std, divisor, out=std)
    out = {"count": count.T, "masked": (pixels[None, :] - count).T}
    out.update({name: arr.T for name, arr in (("mean", mean), ("std", std), ("min", vmin), ("max", vmax))
                if name in stats})
    out.update({name: pct[i].T for i, (name, _) in enumerate(wanted)})
    return out


def decimal_packing(scale: float, offset: float) -> tuple[int, int] | None:
    """``(divisor, shift)`` with ``x * scale + offset == (x + shift) / divisor`` for a ``scale`` whose inverse is a
    whole number (Sentinel-2's 1e-4: 10,000) and an ``offset`` a whole number of it (-0.1: -1,000); else None. A
    statistic of stored integers divided once is the decimal it is: ``788 / 10000`` is 0.0788 where
    ``788 * 1e-4`` is 0.07880000000000001 (1e-4 has no exact binary form), which every CSV and JSON answer
    printed. Scale 1 (stored as meant) is left as it is."""
    divisor = round(1 / scale) if scale < 1 else 0
    if divisor < 2 or abs(divisor * scale - 1) > 1e-12:
        return None
    shift = round(offset * divisor)
    if abs(offset * divisor - shift) > 1e-9 * max(1, abs(shift)):
        return None
    return divisor, shift


def small_uint(dtype: np.dtype) -> bool:
    """Unsigned 8/16-bit values (as the cube stores its bands): the kernel sums them exactly, so a
    :class:`WeightedIndex` gives the numbers of reading every pixel, bit for bit."""
    return dtype.kind == "u" and dtype.itemsize <= 2


def _weights(index: np.ndarray, starts: np.ndarray, sizes: np.ndarray, weight: np.ndarray | None,
             at: np.ndarray | None, clear: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixels per label run, and ``weight`` and ``at`` checked (empty when not weighted)."""
    empty = np.zeros(0, dtype=np.int64)
    if weight is None:
        if at is not None:
            raise InvalidRequestError("at (mask positions) is only meaningful with weight")
        return sizes, empty, empty
    weight = np.ascontiguousarray(weight, dtype=np.int64)  # as index and at: a strided one compiled the kernel again
    if weight.shape != index.shape or (weight.size and weight.min() < 1):
        raise InvalidRequestError(f"weight must be positive counts, one per index entry ({index.size}), got "
                                  f"{weight.shape}")
    cum = np.concatenate([[0], np.cumsum(weight)])
    pixels = cum[starts + sizes] - cum[starts]
    if clear is None:
        return pixels, weight, empty
    at = np.ascontiguousarray(at if at is not None else [], dtype=np.int64)
    if at.shape != index.shape or (at.size and not 0 <= at.min() <= at.max() < pixels.sum()):
        raise InvalidRequestError(f"with clear and weight, at must give each index entry's pixel (0 .. "
                                  f"{pixels.sum() - 1}), got {at.shape}")
    return pixels, weight, at


@dataclass(frozen=True, eq=False)
class WeightedIndex:
    """A per-pixel index with the repeats inside each label run merged: each stored pixel once, with
    ``weight`` (how many of the run's pixels read it) and ``at`` (the position of one of them, for the mask).
    A 20 m band read under a parcel's 10 m pixels has about a quarter as many values to gather."""

    index: np.ndarray
    weight: np.ndarray
    at: np.ndarray
    sizes: np.ndarray  # entries per label run

    @classmethod
    def merge(cls, index: np.ndarray, sizes: np.ndarray, *, key: np.ndarray | None = None) -> WeightedIndex | None:
        """Merge the repeated columns of ``index`` within each run of ``sizes``. Merged pixels must agree on
        ``key`` too (the index of the mask's classes: then one mask value holds for them all); None if they
        do not, or if merging saves less than a fifth of the entries."""
        index, sizes = np.asarray(index, dtype=np.int64), np.asarray(sizes, dtype=np.int64)
        key = np.asarray(index if key is None else key, dtype=np.int64)
        if key.shape != index.shape:
            raise InvalidRequestError(f"key {key.shape} must have one entry per index entry {index.shape}")
        out = [np.empty(index.size, dtype=np.int64) for _ in range(3)]
        out_sizes = np.empty(sizes.size, dtype=np.int64)
        seen = np.full(int(index.max(initial=-1)) + 1, -1, dtype=np.int64)
        n = kernels.merge_repeats(index, sizes, key, seen, *out, out_sizes)
        if n < 0 or n > 0.8 * index.size:
            return None
        return cls(out[0][:n], out[1][:n], out[2][:n], out_sizes)


def clear_pixels(classes: np.ndarray, class_index: np.ndarray, masked_classes: Sequence[int]) -> np.ndarray:
    """(time, ``class_index.size``) booleans: False where pixel ``k``'s class ``classes[t, class_index[k]]``
    (e.g. SCL at its own resolution, ``classes`` an integer (time, n) array) is one of ``masked_classes``."""
    classes, class_index = np.asarray(classes), np.asarray(class_index, dtype=np.int64)
    if classes.ndim != 2 or not np.issubdtype(classes.dtype, np.integer) or \
            (class_index.size and not 0 <= class_index.min() <= class_index.max() < classes.shape[1]):
        raise InvalidRequestError(f"classes {classes.dtype} {classes.shape} must be integer (time, n) with every "
                                  f"class_index below n")
    if any(int(c) < 0 for c in masked_classes):
        raise InvalidRequestError(f"masked class codes must be non-negative, got {list(masked_classes)}")
    masked = np.zeros(max(masked_classes, default=-1) + 1, dtype=np.bool_)
    masked[list(masked_classes)] = True
    out = np.empty((classes.shape[0], class_index.size), dtype=np.bool_)
    kernels.clear_pass(classes, class_index, masked, out)
    return out


def zonal_stats(
    values: np.ndarray,
    labels: np.ndarray,
    n_labels: int,
    *,
    stats: Sequence[str] = STATS,
) -> dict[str, np.ndarray]:
    """Statistics of ``values`` (time, npix; NaN = masked) per label and date, each (n_labels, time).

    ``stats`` is any subset of :data:`STATS` plus percentiles spelled ``pNN`` (``p10``, ``p90``).
    ``count`` and ``masked`` are always included. See the module docstring for the conventions.
    """
    values, segs = _labelled(values, labels, n_labels, stats)
    return segment_stats(values, segs.order, segs.sizes, stats=stats)


def _labelled(values: np.ndarray, labels: np.ndarray, n_labels: int, stats: Sequence[str]
              ) -> tuple[np.ndarray, _Segments]:
    """The label-based functions' input checked: (time, npix) values and their pixels grouped by label."""
    check_stats(stats)
    values = np.asarray(values)
    if values.ndim != 2 or values.shape[1] != np.shape(labels)[0]:
        raise InvalidRequestError(f"values {values.shape} must be (time, npix), npix = {np.shape(labels)}")
    return values, _Segments.build(labels, n_labels)


def unpack(values: np.ndarray, *, nodata: float = np.nan, scale: float = 1.0, offset: float = 0.0,
           dtype: type[np.floating] = np.float64) -> np.ndarray:
    """Stored values as physical ones of ``dtype`` (float64 for statistics; float32, as a Dataset holds them),
    ``x * scale + offset`` computed in ``dtype``, NaN where ``x`` is ``nodata``. Made in one array, in place (a
    chain of expressions held four at once); values of ``dtype`` needing neither are given back as they are."""
    values = np.asarray(values)
    if values.dtype == dtype and (scale, offset) == (1.0, 0.0) and nodata != nodata:
        return values
    out = values.astype(dtype)
    if scale != 1.0:
        out *= dtype(scale)
    if offset != 0.0:
        out += dtype(offset)
    if nodata == nodata:  # a nodata value (NaN needs no replacing)
        out[values == nodata] = np.nan
    return out


def backscatter_stats(
    values_db: np.ndarray,
    labels: np.ndarray,
    n_labels: int,
    *,
    stats: Sequence[str] = STATS,
) -> dict[str, np.ndarray]:
    """:func:`zonal_stats` of Sentinel-1 backscatter given in dB, with the mean taken in linear power.

    Every result is in dB; ``std`` is the standard deviation of the dB values (see module docstring).
    """
    values_db, segs = _labelled(values_db, labels, n_labels, stats)
    return backscatter_segment_stats(values_db, segs.order, segs.sizes, stats=stats)


def backscatter_segment_stats(
    values: np.ndarray,
    index: np.ndarray,
    sizes: np.ndarray,
    *,
    stats: Sequence[str] = STATS,
    nodata: float = np.nan,
    scale: float = 1.0,
    offset: float = 0.0,
    clear: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """:func:`segment_stats` of backscatter stored in dB (``x * scale + offset``): the order statistics and
    ``std`` of the dB values, read in place, and the mean taken in linear power, reported in dB."""
    out = segment_stats(values, index, sizes, stats=stats, nodata=nodata, scale=scale, offset=offset, clear=clear,
                        mean_of_power="mean" in stats)  # no exp per value for a mean nobody asked for
    if "mean" in out:
        out["mean"] = linear_to_db(out["mean"])
    return out


def class_histogram(
    classes: np.ndarray,
    labels: np.ndarray,
    n_labels: int,
    *,
    class_codes: Sequence[int],
) -> np.ndarray:
    """Pixel counts per label, date and class: int32 array (n_labels, time, len(class_codes)).

    ``classes`` is an integer class image flattened to (time, npix) (e.g. SCL); pixels whose code is
    not in ``class_codes`` and pixels with a negative label are not counted.
    """
    classes = np.asarray(classes)
    labels = np.asarray(labels, dtype=np.int64)
    if classes.ndim != 2 or classes.shape[1] != labels.shape[0]:
        raise InvalidRequestError(f"classes {classes.shape} must be (time, npix) with npix = {labels.shape}")
    if labels.max(initial=-1) >= n_labels:
        raise InvalidRequestError(f"label {labels.max()} out of range for {n_labels} parcels")
    codes = np.asarray(class_codes, dtype=np.int64)
    out = np.zeros((n_labels, classes.shape[0], codes.size), dtype=np.int32)
    if classes.size and codes.size:
        lo = int(codes.min())
        slot = np.full(int(codes.max()) - lo + 1, -1, dtype=np.int64)
        slot[codes - lo] = np.arange(codes.size)
        kernels.count_classes(classes, labels, lo, slot, out)
    return out
