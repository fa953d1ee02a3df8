"""Zonal statistics per parcel and date: one vectorised implementation for one parcel or a million.

Input is always the same flat form: ``values`` of shape ``(time, npix)`` (NaN where a pixel is masked
or nodata) and ``labels`` of shape ``(npix,)`` naming each pixel's parcel (0 .. n_labels-1; negative
labels are ignored, so a raw :func:`cube.membership.label_pixels` image can be passed flattened).
Pixels are sorted by label once; then one compiled (numba) pass per date row gathers each parcel's valid
values, sums them, and orders them only as far as the percentiles need (for the cube's stored 8/16-bit
integers: a histogram of the parcel's value range, or a radix sort; otherwise quickselect): no Python
loop over parcels, and no full-array temporaries.

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
  interpolated percentiles interpolate in dB).
* SCL classes are counted, never averaged: :func:`class_histogram` gives counts per parcel, date and
  class; :class:`ClassHistogram` holds them with the dates and turns them into fractions or a frame.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np
import pandas as pd
import pyarrow as pa

from cardcube.errors import InvalidRequestError
from cardcube.spec import DEFAULT_SCL_MASK

STATS: tuple[str, ...] = ("count", "mean", "std", "min", "max", "p25", "median", "p75")
FRAME_COLUMNS: tuple[str, ...] = ("parcel_id", "time", "band", "count", "masked", *STATS[1:])

__all__ = [
    "FRAME_COLUMNS",
    "STATS",
    "ClassHistogram",
    "ParcelStats",
    "WeightedIndex",
    "backscatter_segment_stats",
    "backscatter_stats",
    "class_histogram",
    "clear_pixels",
    "db_to_linear",
    "linear_to_db",
    "segment_stats",
    "small_uint",
    "stats_frame",
    "stats_table",
    "unpack",
    "zonal_stats",
]

_PERCENTILE = re.compile(r"p(\d{1,2}(?:\.\d+)?|100)")


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
        raise InvalidRequestError(f"unknown statistic(s) {bad}; use {', '.join(STATS)} or pNN")


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


@numba.njit(cache=True, nogil=True)
def _lerp(a: float, b: float, t: float) -> float:
    """Linear interpolation as numpy's percentile does it (stable near both ends), except that equal
    neighbours give their value (numpy gives NaN for two equal infinities)."""
    if a == b:
        return a
    diff = b - a
    return b - diff * (1 - t) if t >= 0.5 else a + diff * t


@numba.njit(cache=True, nogil=True)
def _select(a, lo, hi, k):
    """Reorder ``a[lo:hi]`` so that ``a[k]`` holds the value it would hold sorted, with no greater value before
    it and no smaller one after (quickselect: Hoare partition, median-of-three pivot; linear on average,
    where a full sort is n log n)."""
    hi -= 1
    while hi > lo:
        if hi - lo < 16:  # insertion sort on a short run
            for i in range(lo + 1, hi + 1):
                x = a[i]
                j = i - 1
                while j >= lo and a[j] > x:
                    a[j + 1] = a[j]
                    j -= 1
                a[j + 1] = x
            return
        mid = (lo + hi) >> 1
        if a[mid] < a[lo]:
            a[mid], a[lo] = a[lo], a[mid]
        if a[hi] < a[lo]:
            a[hi], a[lo] = a[lo], a[hi]
        if a[hi] < a[mid]:
            a[hi], a[mid] = a[mid], a[hi]
        pivot = a[mid]
        i, j = lo, hi
        while i <= j:
            while a[i] < pivot:
                i += 1
            while a[j] > pivot:
                j -= 1
            if i <= j:
                a[i], a[j] = a[j], a[i]
                i += 1
                j -= 1
        if k <= j:
            hi = j
        elif k >= i:
            lo = i
        else:
            return


@numba.njit(cache=True, nogil=True)
def _radix_pass(src, dst, c, shift, counts):
    """One stable counting pass of an LSD radix sort: ``src[:c]`` into ``dst`` by the 8 bits at ``shift``."""
    counts[:] = 0
    for i in range(c):
        counts[(np.int64(src[i]) >> shift) & 255] += 1  # int64: types for any buf (used for uint only)
    total = 0
    for b in range(256):
        n = counts[b]
        counts[b] = total
        total += n
    for i in range(c):
        d = (np.int64(src[i]) >> shift) & 255
        dst[counts[d]] = src[i]
        counts[d] += 1


@numba.njit(cache=True, nogil=True)
def _radix_sort16(buf, tmp, c, counts):
    """Sort ``buf[:c]`` (unsigned values below 2**16) by two 8-bit counting passes, ``buf`` -> ``tmp`` ->
    ``buf``: no comparisons, so about twice as fast as quickselect for the few hundred pixels of a parcel."""
    _radix_pass(buf, tmp, c, 0, counts)
    _radix_pass(tmp, buf, c, 8, counts)


@numba.njit(cache=True, nogil=True)
def _radix_sort_f32(vals, c, keys, tmp, counts):
    """Sort the float32 values ``vals[:c]`` (no NaN) by four 8-bit counting passes over their bits, mapped
    to unsigned keys that order as the floats do (negatives inverted, positives above them): about four
    times as fast as quickselect for the few hundred values of a parcel, whose comparisons mispredict."""
    bits = vals.view(np.uint32)
    sign = np.uint32(0x80000000)
    for i in range(c):
        x = bits[i]
        keys[i] = ~x if x & sign else x | sign
    for shift in (0, 16):  # keys -> tmp -> keys, twice
        _radix_pass(keys, tmp, c, shift, counts)
        _radix_pass(tmp, keys, c, shift + 8, counts)
    for i in range(c):
        k = keys[i]
        bits[i] = k ^ sign if k & sign else ~k


COARSE = 4  # log2 of the fine bins per coarse bin of the percentile histogram


@numba.njit(cache=True, nogil=True)
def _walk(hist, coarse, cb, below, rank):
    """The histogram bin holding order statistic ``rank``. ``coarse`` counts the values of each run of
    ``2**COARSE`` bins; ``cb`` is the coarse bin reached so far and ``below`` the count before it (kept
    between calls: successive ranks cost only the distance between them, and may step back, as the
    upper neighbour of one percentile may lie past the next one). The walk steps over coarse bins, then
    over at most ``2**COARSE`` fine ones: about ``width / 16`` steps rather than ``width``."""
    while below > rank:
        cb -= 1
        below -= coarse[cb]
    while below + coarse[cb] <= rank:
        below += coarse[cb]
        cb += 1
    b, acc = cb << COARSE, below
    while acc + hist[b] <= rank:
        acc += hist[b]
        b += 1
    return cb, below, b


@numba.njit(cache=True, nogil=True)
def _percentile(a, b, pos, lo, median):
    """The percentile at ``pos`` from the order statistics ``a`` (at ``floor(pos)``) and ``b`` (the next)."""
    return (a + b) / 2 if median else _lerp(a, b, pos - lo)


@numba.njit(cache=True, nogil=True)
def _ranks(c, q, median):
    """Position of percentile ``q`` among ``c`` sorted values, its order statistic and the next one needed
    (the median averages the middle pair, which is one value, ceil = floor, for odd counts)."""
    pos = (c - 1) * (q / 100.0)
    lo = int(np.floor(pos))
    hi = int(np.ceil(pos)) if median else min(lo + 1, c - 1)
    return pos, lo, hi


@numba.njit(cache=True, nogil=True)
def _expand(buf, wb, c, out):
    """``buf[:c]`` with each value repeated ``wb[i]`` times into ``out``; returns the count written."""
    n = 0
    for i in range(c):
        for _ in range(wb[i]):
            out[n] = buf[i]
            n += 1
    return n


@numba.njit(cache=True, nogil=True)
def _segment_stats(v, index, starts, sizes, weight, at, full, nodata, scale, offset, clear, qs, median, small_uint,
                   f32, count, mean, std, vmin, vmax, pct):
    """Every statistic of every (date row, label run) in one pass. A run's valid values (``v[t, index[k]]``
    that are not NaN, not ``nodata`` and, if ``clear`` is not empty, ``clear[t, k]``) are gathered in their
    stored type; ``qs`` are the percentiles, increasing.
    Only the results are mapped to physical values ``x * scale + offset`` (``scale > 0``, so order is kept).

    With ``weight`` (not empty), entry ``k`` stands for ``weight[k]`` pixels of equal value and mask (a 20 m
    pixel under several 10 m pixels of a parcel), its mask is ``clear[t, at[k]]``, and ``full`` is the
    largest weight sum of a run: the statistics are those of the repeated values, with fewer values read.

    ``small_uint`` (unsigned 8/16-bit values, as the cube stores its bands): sums, squares, min and max in
    exact integer arithmetic, and the percentiles' order statistics counted out of a histogram filled while
    gathering, when the run's value range is narrow (most parcels on most dates: a homogeneous field), else
    radix-sorted. Otherwise (floats, wide integers): two float passes (mean, squared deviations) and
    quickselect, or for ``f32`` (float32 values, as Sentinel-1 dB are stored) runs of more than 24 values a
    radix sort of their bits. Weighted runs are expanded (repeated) before a sort or a float pass."""
    weighted = weight.size > 0
    buf = np.empty(sizes.max() if sizes.size else 0, dtype=v.dtype)
    wb = np.empty(buf.size if weighted else 0, dtype=np.int64)
    ebuf = np.empty(full if weighted else 0, dtype=v.dtype)
    tmp = np.empty(max(full, buf.size), dtype=v.dtype)
    counts = np.empty(256, dtype=np.int64)
    keys = np.empty(tmp.size if f32 else 0, dtype=np.uint32)
    ktmp = np.empty_like(keys)
    hist = np.zeros(65536 if small_uint else 0, dtype=np.int64)
    coarse = np.zeros(hist.size >> COARSE, dtype=np.int64)
    use_clear = clear.shape[0] > 0
    ranked = small_uint and qs.size > 0  # fill the histogram of stored values while gathering
    for t in range(v.shape[0]):
        for j in range(starts.size):
            c = 0
            n = 0
            for k in range(starts[j], starts[j] + sizes[j]):
                if use_clear and not clear[t, at[k] if weighted else k]:
                    continue
                x = v[t, index[k]]
                if x == x and x != nodata:  # not NaN, not nodata
                    buf[c] = x
                    if weighted:
                        wb[c] = weight[k]
                        n += weight[k]
                    if ranked:  # the percentile histogram, filled in the same pass
                        xi = np.int64(x)
                        w = weight[k] if weighted else 1
                        hist[xi] += w
                        coarse[xi >> COARSE] += w
                    c += 1
            if not weighted:
                n = c
            count[t, j] = n
            if c == 0:
                continue
            vals = buf
            if small_uint:
                s, lo_i, hi_i = np.int64(0), np.int64(buf[0]), np.int64(buf[0])
                for i in range(c):
                    x = np.int64(buf[i])
                    s += wb[i] * x if weighted else x
                    lo_i = min(lo_i, x)
                    hi_i = max(hi_i, x)
                width = hi_i - lo_i
                if n * width <= 3_000_000_000:  # n * sum(d**2) - sum(d)**2 fits in int64: exact
                    sd, sd2 = np.int64(0), np.int64(0)
                    for i in range(c):
                        d = np.int64(buf[i]) - lo_i
                        w = wb[i] if weighted else 1
                        sd += w * d
                        sd2 += w * d * d
                    var = (n * sd2 - sd * sd) / (float(n) * n)
                else:
                    m = s / n
                    var = 0.0
                    for i in range(c):
                        d = buf[i] - m
                        var += (wb[i] if weighted else 1) * d * d
                    var /= n
                mean[t, j] = s / n * scale + offset
                std[t, j] = np.sqrt(var) * scale
                vmin[t, j] = lo_i * scale + offset
                vmax[t, j] = hi_i * scale + offset
                if qs.size == 0:
                    continue
                narrow = width < 8 * c + 4096  # walking the histogram costs about width / 16 + 16 steps per rank
                if narrow:
                    cb, below = lo_i >> COARSE, 0
                    for q in range(qs.size):
                        pos, lo, hi = _ranks(n, qs[q], median[q])
                        cb, below, b = _walk(hist, coarse, cb, below, lo)
                        a = b * scale + offset
                        if hi > lo:
                            cb, below, b = _walk(hist, coarse, cb, below, hi)
                        pct[q, t, j] = _percentile(a, b * scale + offset, pos, lo, median[q])
                for i in range(c):  # empty the histogram for the next run
                    xi = np.int64(buf[i])
                    hist[xi] = 0
                    coarse[xi >> COARSE] = 0
                if narrow:
                    continue
                if weighted:
                    c = _expand(buf, wb, c, ebuf)
                    vals = ebuf
                if c > 24:
                    _radix_sort16(vals, tmp, c, counts)
                    for q in range(qs.size):
                        pos, lo, hi = _ranks(c, qs[q], median[q])
                        pct[q, t, j] = _percentile(vals[lo] * scale + offset, vals[hi] * scale + offset, pos, lo,
                                                   median[q])
                    continue
            else:
                if weighted:
                    c = _expand(buf, wb, c, ebuf)
                    vals = ebuf
                total = 0.0
                lo_v, hi_v = vals[0], vals[0]
                for i in range(c):
                    x = vals[i]
                    total += x
                    lo_v = min(lo_v, x)
                    hi_v = max(hi_v, x)
                m = total / c
                acc = 0.0
                for i in range(c):
                    d = vals[i] - m
                    acc += d * d
                mean[t, j] = m * scale + offset
                std[t, j] = np.sqrt(acc / c) * scale
                vmin[t, j] = lo_v * scale + offset
                vmax[t, j] = hi_v * scale + offset
                if f32 and c > 24 and qs.size:
                    _radix_sort_f32(vals, c, keys, ktmp, counts)
                    for q in range(qs.size):
                        pos, lo, hi = _ranks(c, qs[q], median[q])
                        pct[q, t, j] = _percentile(vals[lo] * scale + offset, vals[hi] * scale + offset, pos, lo,
                                                   median[q])
                    continue
            done = 0  # vals[:done] is in its sorted place
            for q in range(qs.size):
                pos, lo, hi = _ranks(c, qs[q], median[q])
                if lo >= done:
                    _select(vals, done, c, lo)
                    done = lo + 1
                nxt = vals[lo]
                if hi > lo:  # the next order statistic: the smallest value after lo
                    nxt = vals[lo + 1]
                    for i in range(lo + 2, c):
                        nxt = min(nxt, vals[i])
                pct[q, t, j] = _percentile(vals[lo] * scale + offset, nxt * scale + offset, pos, lo, median[q])


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
) -> dict[str, np.ndarray]:
    """:func:`zonal_stats` of pixels already grouped by label, read in place from stored arrays.

    Label ``j`` owns the next ``sizes[j]`` entries of ``index``; its value at date ``t`` is
    ``values[t, index[k]]`` (``values`` as stored: integers or floats, any width). NaN, ``nodata`` and,
    given ``clear`` (time, ``index.size``), pixels where ``clear[t, k]`` is False (:func:`clear_pixels`: a
    cloud mask, computed once for every band) are not valid. Statistics are of the physical values
    ``x * scale + offset``: stored integers are never copied or decoded per pixel, which is what makes a
    territory-wide extraction cheap, and a 20 m band is read at 10 m through its ``index`` with no repeat.

    ``weight`` and ``at`` (from :class:`WeightedIndex`): entry ``k`` stands for ``weight[k]`` pixels and is
    masked by ``clear[t, at[k]]`` (``clear`` then has one column per pixel). The statistics are those of
    the pixels, bit for bit for stored unsigned 8/16-bit values (exact integer sums), from fewer reads.
    """
    check_stats(stats, required=False)  # backscatter asks for its mean apart
    values = np.asarray(values)
    if not (np.issubdtype(values.dtype, np.integer) or np.issubdtype(values.dtype, np.floating)):
        values = values.astype(np.float64)
    if values.ndim != 2:
        raise InvalidRequestError(f"values must be (time, pixels), got shape {values.shape}")
    if not scale > 0:
        raise InvalidRequestError(f"scale must be positive, got {scale}")
    sizes = np.asarray(sizes, dtype=np.int64)
    index = np.asarray(index, dtype=np.int64)
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
    shape = (values.shape[0], sizes.size)
    count = np.zeros(shape, dtype=np.int64)
    mean, std, vmin, vmax = (np.full(shape, np.nan) for _ in range(4))
    pct = np.full((len(wanted), *shape), np.nan)
    _segment_stats(values, index, starts, sizes, weight, at, int(pixels.max(initial=0)) if weight.size else 0,
                   float(nodata), float(scale), float(offset), clear,
                   np.array([q for _, q in wanted], dtype=np.float64),
                   np.array([s == "median" for s, _ in wanted], dtype=np.bool_),
                   small_uint(values.dtype), values.dtype == np.float32, count, mean, std, vmin, vmax, pct)
    out = {"count": count.T, "masked": (pixels[None, :] - count).T}
    out.update({name: arr.T for name, arr in (("mean", mean), ("std", std), ("min", vmin), ("max", vmax))
                if name in stats})
    out.update({name: pct[i].T for i, (name, _) in enumerate(wanted)})
    return out


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
    weight = np.asarray(weight, dtype=np.int64)
    if weight.shape != index.shape or (weight.size and weight.min() < 1):
        raise InvalidRequestError(f"weight must be positive counts, one per index entry ({index.size}), got "
                                  f"{weight.shape}")
    cum = np.concatenate([[0], np.cumsum(weight)])
    pixels = cum[starts + sizes] - cum[starts]
    if clear is None:
        return pixels, weight, empty
    at = np.asarray(at if at is not None else [], dtype=np.int64)
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
        n = _merge(index, sizes, key, seen, *out, out_sizes)
        if n < 0 or n > 0.8 * index.size:
            return None
        return cls(out[0][:n], out[1][:n], out[2][:n], out_sizes)


@numba.njit(cache=True, nogil=True)
def _merge(index, sizes, key, seen, out_index, out_weight, out_at, out_sizes):
    """:meth:`WeightedIndex.merge`: ``seen[col]`` is the entry of ``col`` if it is in the current run (an entry
    of an earlier run is below the run's first entry). -1 if two merged pixels differ in ``key``."""
    e = 0
    k = 0
    for j in range(sizes.size):
        first = e
        for _ in range(sizes[j]):
            col = index[k]
            p = seen[col]
            if p >= first:
                if key[out_at[p]] != key[k]:
                    return -1
                out_weight[p] += 1
            else:
                seen[col] = e
                out_index[e] = col
                out_weight[e] = 1
                out_at[e] = k
                e += 1
            k += 1
        out_sizes[j] = e - first
    return e


@numba.njit(cache=True, nogil=True)
def _clear_pixels(classes, class_index, masked, out):
    for t in range(classes.shape[0]):
        for k in range(class_index.size):
            code = classes[t, class_index[k]]
            out[t, k] = not (0 <= code < masked.size and masked[code])


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
    _clear_pixels(classes, class_index, masked, out)
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


def unpack(values: np.ndarray, *, nodata: float = np.nan, scale: float = 1.0, offset: float = 0.0) -> np.ndarray:
    """Stored values as float64 physical ones, ``x * scale + offset``, NaN where ``x`` is ``nodata``."""
    out = np.array(values, dtype=np.float64)
    if (scale, offset) != (1.0, 0.0):
        out = out * scale + offset
    if nodata == nodata:  # a nodata value (NaN needs no replacing)
        out[np.asarray(values) == nodata] = np.nan
    return out


def db_to_linear(db: np.ndarray) -> np.ndarray:
    """Backscatter in dB to linear power: ``10 ** (dB / 10)``, computed as ``exp(dB ln(10) / 10)`` (equal to
    a few units in the last place, four times as fast: an S1 extraction converts every pixel); NaN stays NaN."""
    return np.exp(np.asarray(db, dtype=np.float64) * (np.log(10.0) / 10.0))


def linear_to_db(power: np.ndarray) -> np.ndarray:
    """Linear power to dB: ``10 log10(power)``; 0 gives -inf, negative values NaN."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return 10.0 * np.log10(np.asarray(power, dtype=np.float64))


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
    out = segment_stats(values, index, sizes, stats=[s for s in stats if s != "mean"], nodata=nodata, scale=scale,
                        offset=offset, clear=clear)
    if "mean" in stats:
        db = unpack(values, nodata=nodata, scale=scale, offset=offset)
        mean = segment_stats(db_to_linear(db), index, sizes, stats=("mean",), clear=clear)["mean"]
        out["mean"] = linear_to_db(mean)
    return out


@numba.njit(cache=True, nogil=True)
def _class_counts(classes, labels, lo, slot, out):
    """``out[label, t, slot[code - lo]] += 1`` for every labelled pixel and date with a counted code."""
    for t in range(classes.shape[0]):
        for k in range(labels.size):
            j = labels[k]
            if j < 0:
                continue
            code = classes[t, k] - lo
            if 0 <= code < slot.size and slot[code] >= 0:
                out[j, t, slot[code]] += 1


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
        _class_counts(classes, labels, lo, slot, out)
    return out


@dataclass(frozen=True, eq=False)
class ParcelStats:
    """Statistics of one band for a set of parcels and dates; arrays are (n_parcels, time)."""

    band: str
    parcel_ids: np.ndarray
    times: np.ndarray
    values: Mapping[str, np.ndarray]
    units: str = ""

    def __post_init__(self) -> None:
        shape = (len(self.parcel_ids), len(self.times))
        for name, arr in self.values.items():
            if np.shape(arr) != shape:
                raise InvalidRequestError(f"{self.band} {name} has shape {np.shape(arr)}, expected {shape}")

    def __getitem__(self, stat: str) -> np.ndarray:
        return self.values[stat]

    @property
    def stats(self) -> tuple[str, ...]:
        return tuple(self.values)

    def to_frame(self, *, valid_only: bool = False) -> pd.DataFrame:
        """Tidy frame, one row per parcel and date: ``parcel_id, time, band, count, masked, <stats>``.

        Columns follow :data:`FRAME_COLUMNS` order (extra percentiles at the end). ``valid_only``
        drops rows without a valid pixel.
        """
        return stats_frame([self], valid_only=valid_only)


def stats_frame(results: Sequence[ParcelStats], *, valid_only: bool = False,
                per_date: Mapping[str, np.ndarray] | None = None) -> pd.DataFrame:
    """The frame users get: :func:`stats_table` as pandas; ``valid_only`` drops rows without a valid pixel."""
    if not results:
        return pd.DataFrame(columns=list(FRAME_COLUMNS))
    frame = stats_table(results, per_date=per_date).to_pandas()
    if valid_only:
        frame = frame[frame["count"] > 0].reset_index(drop=True)
    return frame


def _column(values: np.ndarray, rows: np.ndarray) -> pa.Array:
    """``values[rows]`` as an Arrow column; strings and other objects are taken by Arrow, so a territory's
    millions of rows never become Python objects."""
    if values.dtype == object:
        return pa.array(values).take(pa.array(rows))
    return pa.array(values[rows])


def stats_table(results: Sequence[ParcelStats], *, per_date: Mapping[str, np.ndarray] | None = None) -> pa.Table:
    """Several bands' :class:`ParcelStats` of the same parcels and dates as one Arrow table, one row per
    parcel, date and band, sorted by parcel, time and band. ``per_date`` adds columns that do not depend
    on the band (SCL class counts, acquisition metadata): arrays of shape (n_parcels, time) or (time,).

    Built by index arithmetic on the stacked arrays, never by sorting or merging rows: this is the
    output path of a territory-wide extraction.
    """
    if not results:
        raise InvalidRequestError("stats_table needs the statistics of at least one band")
    ids, times = np.asarray(results[0].parcel_ids), np.asarray(results[0].times)
    if any(not (np.array_equal(r.parcel_ids, ids) and np.array_equal(r.times, times)) for r in results[1:]):
        raise InvalidRequestError("stats_table needs the statistics of the same parcels and dates for every band")
    bands = np.array([r.band for r in results], dtype=object)
    by_id, by_time, by_band = (np.argsort(a, kind="stable") for a in (ids, times, bands))
    n, t, b = ids.size, times.size, bands.size
    parcel_row = np.repeat(np.arange(n), t * b)  # each row's parcel, date and band (positions in sorted order)
    time_row = np.tile(np.repeat(np.arange(t), b), n)

    def rows(arr: np.ndarray) -> np.ndarray:  # (band, parcel, time) -> one value per row, in row order
        return arr[by_band][:, by_id][:, :, by_time].transpose(1, 2, 0).reshape(-1)

    data: dict[str, Any] = {"parcel_id": _column(ids[by_id], parcel_row),
                            "time": _column(times[by_time], time_row),
                            "band": _column(bands[by_band], np.tile(np.arange(b), n * t))}
    names = [c for c in FRAME_COLUMNS[3:] if any(c in r.values for r in results)]
    names += list(dict.fromkeys(c for r in results for c in r.values if c not in names))
    for name in names:
        fill = 0 if name in ("count", "masked") else np.nan
        data[name] = rows(np.stack([np.asarray(r.values[name]) if name in r.values else np.full((n, t), fill)
                                    for r in results]))
    for name, arr in (per_date or {}).items():
        arr = np.asarray(arr)
        data[name] = (_column(arr[by_time], time_row) if arr.ndim == 1 else
                      _column(arr[by_id][:, by_time].reshape(-1), parcel_row * t + time_row))
    return pa.table(data)


@dataclass(frozen=True, eq=False)
class ClassHistogram:
    """Class counts (e.g. SCL) per parcel and date: ``counts`` is (n_parcels, time, n_classes).

    Kept apart from the band statistics because it is per date, not per band: its frame joins the
    band frame on ``(parcel_id, time)``.
    """

    parcel_ids: np.ndarray
    times: np.ndarray
    class_codes: tuple[int, ...]
    counts: np.ndarray
    prefix: str = "scl"

    def __post_init__(self) -> None:
        shape = (len(self.parcel_ids), len(self.times), len(self.class_codes))
        if np.shape(self.counts) != shape:
            raise InvalidRequestError(f"class counts have shape {np.shape(self.counts)}, expected {shape}")

    def fraction(self, codes: Iterable[int] = DEFAULT_SCL_MASK) -> np.ndarray:
        """Share of counted pixels in ``codes`` per parcel and date (n_parcels, time); NaN if none.

        With the default SCL mask this is the cloud/unusable fraction that marks cloudy dates.
        """
        sel = np.isin(np.asarray(self.class_codes), list(codes))
        total = self.counts.sum(axis=2)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(total > 0, self.counts[:, :, sel].sum(axis=2) / total, np.nan)

    def to_frame(self) -> pd.DataFrame:
        """One row per parcel and date: ``parcel_id, time, <prefix>_<code>...`` pixel counts."""
        n, t, _ = self.counts.shape
        data: dict[str, object] = {
            "parcel_id": np.repeat(np.asarray(self.parcel_ids), t),
            "time": np.tile(np.asarray(self.times), n),
        }
        for i, code in enumerate(self.class_codes):
            data[f"{self.prefix}_{code}"] = self.counts[:, :, i].reshape(-1)
        return pd.DataFrame(data)
