"""The compiled (numba) passes of the zonal statistics: no Python loop over parcels or pixels.

:func:`segment_pass` computes every statistic of every (date, parcel) in one pass over pixels grouped by
parcel; :func:`merge_repeats` merges the repeated columns of a 20 m band read at 10 m; :func:`clear_pass`
evaluates the cloud mask once for every band; :func:`count_classes` counts SCL classes. Their callers in
:mod:`cube.stats` check the inputs and own the conventions; these functions trust them.

numba caches their machine code on disk (``cache=True``), an index per kernel naming a file per signature. Two
processes saving other signatures of one kernel at once (worker processes of an extraction on a fresh install) can
leave the index naming one's file over the other's code: every later process then fails on it ("can't unbox array")
until this file changes (numba/numba#4807, #10128; 1 of 12 cold starts of 8 processes in a reproduction). So a
process's first call of a kernel with new argument types, where numba may compile and save, holds a lock file in
the cache's folder (:class:`CacheLocked`); later calls go straight to the kernel.
"""

from __future__ import annotations

import logging
import os
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numba
import numpy as np
from filelock import FileLock

log = logging.getLogger(__name__)

_UNCACHED: list[str] = []  # set once numba has found no folder to cache the kernels in


def compiled(func: Callable[..., Any]) -> Any:
    """``numba.njit(cache=True, nogil=True)`` of ``func``; without the disk cache where numba finds no folder it
    may write to (a read-only install, as a container image's, run with no writable home and no NUMBA_CACHE_DIR),
    where its decorator raises a RuntimeError on import: then compiled in every process, said once."""
    if not _UNCACHED:
        try:
            return numba.njit(cache=True, nogil=True)(func)
        except RuntimeError as exc:
            if "cannot cache" not in str(exc):
                raise
            _UNCACHED.append(str(exc))
            given = f"in NUMBA_CACHE_DIR {numba.config.CACHE_DIR}, " if numba.config.CACHE_DIR else ""
            warnings.warn(f"numba finds no folder it may write to for its cache of cardcube's compiled statistics "
                          f"(not {given}beside {os.path.dirname(__file__)} nor in the home folder): each process "
                          f"compiles them again on its first statistics (about 10 s of CPU); set NUMBA_CACHE_DIR to "
                          f"a writable folder to keep them", RuntimeWarning, stacklevel=2)
    return numba.njit(nogil=True)(func)


@compiled
def _lerp(a: float, b: float, t: float) -> float:
    """Linear interpolation as numpy's percentile does it (stable near both ends), except that equal
    neighbours give their value (numpy gives NaN for two equal infinities)."""
    if a == b:
        return a
    diff = b - a
    return b - diff * (1 - t) if t >= 0.5 else a + diff * t


@compiled
def _insertion_sort(a, lo, hi):
    """Sort ``a[lo:hi]`` in place: the fastest way for a few values (a short run of
    :func:`_select`, a bucket of :func:`_f32_order_stats`)."""
    for i in range(lo + 1, hi):
        x = a[i]
        j = i - 1
        while j >= lo and a[j] > x:
            a[j + 1] = a[j]
            j -= 1
        a[j + 1] = x


@compiled
def _select(a, lo, hi, k):
    """Reorder ``a[lo:hi]`` so that ``a[k]`` holds the value it would hold sorted, with no greater value before
    it and no smaller one after (quickselect: Hoare partition, median-of-three pivot; linear on average,
    where a full sort is n log n)."""
    hi -= 1
    while hi > lo:
        if hi - lo < 16:
            _insertion_sort(a, lo, hi + 1)
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


@compiled
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


@compiled
def _radix_sort16(buf, tmp, c, counts):
    """Sort ``buf[:c]`` (unsigned values below 2**16) by two 8-bit counting passes, ``buf`` -> ``tmp`` ->
    ``buf``: no comparisons, so about twice as fast as quickselect for the few hundred pixels of a parcel."""
    _radix_pass(buf, tmp, c, 0, counts)
    _radix_pass(tmp, buf, c, 8, counts)


BUCKETS = 4096  # most buckets of :func:`_f32_order_stats`: its count and prefix stay within a few kB


@compiled
def _f32_order_stats(vals, c, qs, median, scale, offset, pct, t, j, keys, ktmp, bstart, bfill, needed, counts, bits1):
    """The percentiles ``qs`` of the float32 values ``vals[:c]`` (no NaN) into ``pct[:, t, j]``, exact, without
    sorting them all: their bits, mapped to unsigned keys that order as the floats do (negatives inverted,
    positives above them), are counted into at most :data:`BUCKETS` buckets of equal key width between the least
    and the greatest key; only the buckets holding an order statistic a percentile reads are scattered to their
    sorted places and sorted there. Four light passes over the values where a radix sort of them makes eight.
    ``bits1``: a scratch uint32 pair, viewed as float32 to turn a key back into its value."""
    bits = vals.view(np.uint32)
    sign = np.uint32(0x80000000)
    lo_k, hi_k = np.uint32(0xFFFFFFFF), np.uint32(0)
    for i in range(c):
        x = bits[i]
        k = ~x if x & sign else x | sign
        keys[i] = k
        lo_k = min(lo_k, k)
        hi_k = max(hi_k, k)
    limit = 16
    while limit < c and limit < BUCKETS:  # about one value a bucket
        limit <<= 1
    span = np.int64(hi_k - lo_k)
    shift = 0
    while (span >> shift) >= limit:
        shift += 1
    nb = (span >> shift) + 1
    bstart[:nb + 1] = 0
    for i in range(c):
        bstart[((np.int64(keys[i]) - lo_k) >> shift) + 1] += 1
    for b in range(nb):  # bstart[b]: bucket b's first place among the values sorted
        bstart[b + 1] += bstart[b]
    needed[:nb] = False
    for q in range(qs.size):  # the buckets of the order statistics each percentile reads
        pos, lo, hi = _ranks(c, qs[q], median[q])
        needed[np.searchsorted(bstart[:nb + 1], lo, side="right") - 1] = True
        needed[np.searchsorted(bstart[:nb + 1], hi, side="right") - 1] = True
    bfill[:nb] = bstart[:nb]
    for i in range(c):
        b = (np.int64(keys[i]) - lo_k) >> shift
        if needed[b]:
            ktmp[bfill[b]] = keys[i]
            bfill[b] += 1
    for b in range(nb):
        if not needed[b]:
            continue
        first, n = bstart[b], bstart[b + 1] - bstart[b]
        if n <= 32:
            _insertion_sort(ktmp, first, first + n)
        else:  # values crowded into one bucket by a far outlier: radix-sorted, keys -> scratch -> keys, twice
            seg = ktmp[first:first + n]
            for radix in (0, 16):
                _radix_pass(seg, keys, n, radix, counts)
                _radix_pass(keys, seg, n, radix + 8, counts)
    shown = bits1.view(np.float32)
    for q in range(qs.size):
        pos, lo, hi = _ranks(c, qs[q], median[q])
        for slot, r in ((0, lo), (1, hi)):
            k = ktmp[r]
            bits1[slot] = k ^ sign if k & sign else ~k
        pct[q, t, j] = _percentile(shown[0] * scale + offset, shown[1] * scale + offset, pos, lo, median[q])


COARSE = 4  # log2 of the fine bins per coarse bin of the percentile histogram


@compiled
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


@compiled
def _percentile(a, b, pos, lo, median):
    """The percentile at ``pos`` from the order statistics ``a`` (at ``floor(pos)``) and ``b`` (the next)."""
    return (a + b) / 2 if median else _lerp(a, b, pos - lo)


@compiled
def _ranks(c, q, median):
    """Position of percentile ``q`` among ``c`` sorted values, its order statistic and the next one needed
    (the median averages the middle pair, which is one value, ceil = floor, for odd counts)."""
    pos = (c - 1) * (q / 100.0)
    lo = int(np.floor(pos))
    hi = int(np.ceil(pos)) if median else min(lo + 1, c - 1)
    return pos, lo, hi


@compiled
def _expand(buf, wb, c, out):
    """``buf[:c]`` with each value repeated ``wb[i]`` times into ``out``; returns the count written."""
    n = 0
    for i in range(c):
        for _ in range(wb[i]):
            out[n] = buf[i]
            n += 1
    return n


@compiled
def _power_sum(vals, wb, c, weighted, scale, offset, power):
    """The sum of ``exp(x_phys * power)`` over ``vals[:c]`` (each counted ``wb[i]`` times if ``weighted``),
    ``x_phys = x * scale + offset``: linear power from dB with ``power = ln(10) / 10``."""
    total = 0.0
    for i in range(c):
        p = np.exp((np.float64(vals[i]) * scale + offset) * power)
        total += wb[i] * p if weighted else p
    return total


@compiled
def _int_range(buf, wb, c, weighted):
    """Sum (each value counted ``wb[i]`` times if ``weighted``), min and max of the integers ``buf[:c]``, in
    exact int64. A loop of its own for each case: the unweighted one, most runs, is vectorised."""
    s, lo, hi = np.int64(0), buf[0], buf[0]
    if weighted:
        for i in range(c):
            x = buf[i]
            s += wb[i] * np.int64(x)
            lo = min(lo, x)
            hi = max(hi, x)
    else:
        for i in range(c):
            x = buf[i]
            s += np.int64(x)
            lo = min(lo, x)
            hi = max(hi, x)
    return s, np.int64(lo), np.int64(hi)


@compiled
def _int_deviations(buf, wb, c, weighted, lo):
    """Sums of ``d`` and ``d**2``, ``d = buf[i] - lo`` (``lo`` at most every value; each counted ``wb[i]`` times
    if ``weighted``), in exact int64."""
    sd, sd2 = np.int64(0), np.int64(0)
    if weighted:
        for i in range(c):
            d = np.int64(buf[i]) - lo
            sd += wb[i] * d
            sd2 += wb[i] * d * d
    else:
        for i in range(c):
            d = np.int64(buf[i]) - lo
            sd += d
            sd2 += d * d
    return sd, sd2


@compiled
def _segment_pass(v, index, starts, sizes, weight, at, full, nodata, scale, offset, clear, qs, median, small_uint,
                   f32, power, count, mean, std, vmin, vmax, pct):
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
    quickselect, or for ``f32`` (float32 values, as Sentinel-1 dB are stored) runs of more than 24 values
    :func:`_f32_order_stats` (buckets of their bits, the few holding an order statistic sorted). Weighted runs
    are expanded (repeated) before a sort or a float pass.

    ``power`` > 0 (backscatter in dB: ``ln(10) / 10``): ``mean`` is the mean of ``exp(x_phys * power)``, the
    linear power, in the same pass; the other statistics stay those of the values themselves."""
    weighted = weight.size > 0
    buf = np.empty(sizes.max() if sizes.size else 0, dtype=v.dtype)
    wb = np.empty(buf.size if weighted else 0, dtype=np.int64)
    ebuf = np.empty(full if weighted else 0, dtype=v.dtype)
    tmp = np.empty(max(full, buf.size), dtype=v.dtype)
    counts = np.empty(256, dtype=np.int64)
    keys = np.empty(tmp.size if f32 else 0, dtype=np.uint32)
    ktmp = np.empty_like(keys)
    bstart = np.empty(BUCKETS + 1 if f32 else 0, dtype=np.int64)
    bfill = np.empty(BUCKETS if f32 else 0, dtype=np.int64)
    needed = np.empty(BUCKETS if f32 else 0, dtype=np.bool_)
    bits1 = np.empty(2, dtype=np.uint32)
    hist = np.zeros(65536 if small_uint else 0, dtype=np.int64)
    coarse = np.zeros(hist.size >> COARSE, dtype=np.int64)
    use_clear = clear.shape[0] > 0
    ranked = small_uint and qs.size > 0  # fill the histogram of stored values while gathering
    # Unsigned positions (the caller checked them): every read of the gathering loop is spared numba's test
    # and fix-up of a negative index.
    uindex, uat = index.view(np.uint64), at.view(np.uint64)
    for t in range(v.shape[0]):
        for j in range(starts.size):
            c = 0
            n = 0
            first = np.uint64(starts[j])
            for k in range(first, first + np.uint64(sizes[j])):
                if use_clear and not clear[t, uat[k] if weighted else k]:
                    continue
                x = v[t, uindex[k]]
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
                s, lo_i, hi_i = _int_range(buf, wb, c, weighted)
                width = hi_i - lo_i
                if n * width <= 3_000_000_000:  # n * sum(d**2) - sum(d)**2 fits in int64: exact
                    sd, sd2 = _int_deviations(buf, wb, c, weighted, lo_i)
                    var = (n * sd2 - sd * sd) / (float(n) * n)
                else:
                    m = s / n
                    var = 0.0
                    for i in range(c):
                        d = buf[i] - m
                        var += (wb[i] if weighted else 1) * d * d
                    var /= n
                if power > 0:
                    mean[t, j] = _power_sum(buf, wb, c, weighted, scale, offset, power) / n
                else:
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
                if width < 2 * c:  # empty the histogram for the next run: a narrow one as a range, not value by value
                    hist[lo_i:hi_i + 1] = 0
                    coarse[lo_i >> COARSE:(hi_i >> COARSE) + 1] = 0
                else:
                    for i in range(c):
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
                if power > 0:
                    mean[t, j] = _power_sum(vals, wb, c, False, scale, offset, power) / c
                else:
                    mean[t, j] = m * scale + offset
                std[t, j] = np.sqrt(acc / c) * scale
                vmin[t, j] = lo_v * scale + offset
                vmax[t, j] = hi_v * scale + offset
                if f32 and c > 24 and qs.size:
                    _f32_order_stats(vals, c, qs, median, scale, offset, pct, t, j, keys, ktmp, bstart, bfill,
                                     needed, counts, bits1)
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


@compiled
def _merge_repeats(index, sizes, key, seen, out_index, out_weight, out_at, out_sizes):
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


@compiled
def _clear_pass(classes, class_index, masked, out):
    for t in range(classes.shape[0]):
        for k in range(class_index.size):
            code = classes[t, class_index[k]]
            out[t, k] = not (0 <= code < masked.size and masked[code])


@compiled
def _count_classes(classes, labels, lo, slot, out):
    """``out[label, t, slot[code - lo]] += 1`` for every labelled pixel and date with a counted code."""
    for t in range(classes.shape[0]):
        for k in range(labels.size):
            j = labels[k]
            if j < 0:
                continue
            code = classes[t, k] - lo
            if 0 <= code < slot.size and slot[code] >= 0:
                out[j, t, slot[code]] += 1


LOCK_NAME = "cardcube-kernels.lock"  # in numba's cache folder of this module


class CacheLocked:
    """``kernel`` (a numba dispatcher), its first call in this process with each kind of arguments numba compiles a
    signature for (:func:`_numba_kind`) made holding the lock file :data:`LOCK_NAME` in its cache's folder, so
    that processes compile and save its signatures one at a time; later calls go straight to it. Other attributes
    are the dispatcher's."""

    def __init__(self, kernel: Any) -> None:
        self.kernel = kernel
        self._seen: set[tuple] = set()
        self._guard = threading.Lock()

    def __call__(self, *args: Any) -> Any:
        key = tuple(map(_numba_kind, args))
        if key in self._seen:
            return self.kernel(*args)
        with self._guard, _cache_lock(self.kernel):
            out = self.kernel(*args)
            self._seen.add(key)
        return out

    def __getattr__(self, name: str) -> Any:
        if name == "kernel":  # not yet set (a copy being made): no dispatcher to ask
            raise AttributeError(name)
        return getattr(self.kernel, name)


def _numba_kind(arg: Any) -> Any:
    """What numba's signature tells ``arg`` by (its ``typeof`` of an array, cheaper): an array's dtype, dimensions,
    layout (C, F or any) and whether it is read-only (a chunk decoded from a buffer is: another signature, which a
    key without it let a process compile and save holding no lock); a scalar's type (finer than numba's)."""
    if not isinstance(arg, np.ndarray):
        return type(arg)
    flags = arg.flags
    layout = "C" if flags.c_contiguous else "F" if flags.f_contiguous else "A"
    return arg.dtype.str, arg.ndim, layout, flags.writeable


@contextmanager
def _cache_lock(kernel: Any) -> Iterator[None]:
    """Holding the lock file of ``kernel``'s cache folder; without, where it cannot be made."""
    try:
        folder = kernel._cache._cache_path  # numba's: the module's __pycache__, or NUMBA_CACHE_DIR's place for it
        os.makedirs(folder, exist_ok=True)
        lock = FileLock(os.path.join(folder, LOCK_NAME))
        lock.acquire()
    except (AttributeError, OSError) as exc:
        log.debug("no lock for numba's cache of %s (%s): its first call is made without", kernel, exc)
        yield  # the folder cannot hold a lock (read-only): without
        return
    try:
        yield
    finally:
        lock.release()


segment_pass: Callable[..., Any] = CacheLocked(_segment_pass)
merge_repeats: Callable[..., Any] = CacheLocked(_merge_repeats)
clear_pass: Callable[..., Any] = CacheLocked(_clear_pass)
count_classes: Callable[..., Any] = CacheLocked(_count_classes)
