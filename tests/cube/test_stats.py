"""Zonal statistics against plain per-parcel numpy, np.bincount and exactextract."""

from __future__ import annotations

import io

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import shapely
from exactextract import exact_extract
from exactextract.raster import NumPyRasterSource

from cardcube.errors import InvalidRequestError
from cardcube.spec import S2_L2A, SCL_CLASSES
from cube.extraction_files import TIMESERIES_PARQUET
from cube.parcel_layer import parquet_bytes
from cube.parcel_stats import ClassHistogram, ParcelStats, stats_frame, stats_table
from cube.stats import (
    FRAME_COLUMNS,
    STATS,
    WeightedIndex,
    backscatter_segment_stats,
    backscatter_stats,
    class_histogram,
    clear_pixels,
    decimal_packing,
    segment_stats,
    stat_list,
    unpack,
    zonal_stats,
)

NUMPY = {
    "mean": np.nanmean,
    "std": np.nanstd,  # ddof=0
    "min": np.nanmin,
    "max": np.nanmax,
    "p25": lambda a: np.nanpercentile(a, 25, method="linear"),
    "median": np.nanmedian,
    "p75": lambda a: np.nanpercentile(a, 75, method="linear"),
    "p10": lambda a: np.nanpercentile(a, 10, method="linear"),
    "p90": lambda a: np.nanpercentile(a, 90, method="linear"),
}


@pytest.fixture
def sample() -> tuple[np.ndarray, np.ndarray, int]:
    """40 parcels of 0..60 pixels over 7 dates, 30 % NaN, some all-NaN dates, some unlabelled pixels."""
    rng = np.random.default_rng(7)
    n_labels, ntime = 40, 7
    sizes = rng.integers(0, 61, n_labels)
    sizes[[3, 11]] = 0
    sizes[5], sizes[6] = 1, 2
    labels = np.concatenate([np.repeat(np.arange(n_labels), sizes), np.full(9, -1)])
    rng.shuffle(labels)
    values = rng.gamma(2.0, 0.1, (ntime, labels.size)) - 0.05
    values[rng.random(values.shape) < 0.3] = np.nan
    values[2][np.isin(labels, [0, 1, 2])] = np.nan  # whole parcels masked on one date
    values[:, labels == 7] = np.nan  # one parcel never seen
    values[4][labels == 9] = 0.25  # ties
    return values, labels, n_labels


def reference(values: np.ndarray, labels: np.ndarray, n_labels: int, stat: str) -> np.ndarray:
    out = np.full((n_labels, values.shape[0]), np.nan)
    for i in range(n_labels):
        for t in range(values.shape[0]):
            a = values[t, labels == i]
            if stat == "count":
                out[i, t] = np.count_nonzero(~np.isnan(a))
            elif stat == "masked":
                out[i, t] = np.count_nonzero(np.isnan(a))
            elif (~np.isnan(a)).any():
                with np.errstate(invalid="ignore"):  # -inf .. inf neighbours
                    out[i, t] = NUMPY[stat](a)
    return out


@pytest.mark.parametrize("stat", ["count", "masked", *NUMPY])
def test_matches_numpy_per_parcel(sample, stat: str) -> None:
    values, labels, n = sample
    got = zonal_stats(values, labels, n, stats=(*STATS, "p10", "p90"))[stat]
    assert got.shape == (n, values.shape[0])
    np.testing.assert_allclose(got, reference(values, labels, n, stat), rtol=1e-12, atol=1e-15)


def test_empty_dates_and_parcels(sample) -> None:
    values, labels, n = sample
    out = zonal_stats(values, labels, n)
    assert set(out) == {*STATS, "masked"}
    assert (out["count"][[0, 1, 2], 2] == 0).all()
    assert (out["masked"][0, 2] == (labels == 0).sum())
    for stat in ("mean", "std", "min", "max", "p25", "median", "p75"):
        assert np.isnan(out[stat][[0, 1, 2], 2]).all()
        assert np.isnan(out[stat][[3, 7, 11]]).all()
    assert (out["count"][3] == 0).all() and (out["masked"][3] == 0).all()


@pytest.mark.parametrize("dtype", ["float32", "int16"])
@pytest.mark.parametrize("stat", ["min", "max", "p10", "p25", "median", "p75"])
def test_order_statistics_of_float32_and_integer_input(sample, dtype: str, stat: str) -> None:
    """The cube's dtypes take the packed-key sort; check it with negatives, ties, infinities, -0.0."""
    values, labels, n = sample
    values = values * (1000.0 if dtype == "int16" else 1.0)
    values[1][labels == 8] = np.r_[-np.inf, np.inf, -0.0, 0.0, -1e-3][np.arange((labels == 8).sum()) % 5]
    if dtype == "int16":
        values = np.where(np.isfinite(values), values, 0)
    typed = values.astype(dtype)
    got = zonal_stats(typed, labels, n, stats=(stat,))[stat]
    ref = reference(typed.astype(np.float64), labels, n, stat)
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=0)


@pytest.mark.parametrize("case", ["normal", "far_outlier", "ties", "specials", "beyond_buckets"])
def test_float32_percentiles_of_large_parcels_are_numpy_s(case: str) -> None:
    """Sentinel-1's dB (float32) percentiles are read out of buckets of the values' bits, only the buckets holding
    the order statistics sorted: exact against numpy where one far value crowds every other into one bucket,
    with ties, both zeros and infinities, and parcels of more values than buckets."""
    rng = np.random.default_rng(11)
    sizes = rng.integers(25, 9000 if case == "beyond_buckets" else 1500, 12)
    labels = np.repeat(np.arange(sizes.size), sizes)
    rng.shuffle(labels)
    values = rng.normal(-12.0, 3.0, (3, labels.size))
    if case == "far_outlier":  # every parcel's values within 0.01 dB but one at 1e30
        values = rng.normal(-12.0, 0.01, values.shape)
        values[:, ::97] = 1e30
    elif case == "ties":
        values = np.round(values, 0)
    elif case == "specials":
        values = rng.choice([-1.0, -0.0, 0.0, 2.5], values.shape)  # numpy's lerp of two equal infinities is NaN
        values[:, ::101], values[:, 50::101] = -np.inf, np.inf
    values[rng.random(values.shape) < 0.1] = np.nan
    typed = values.astype(np.float32)
    got = zonal_stats(typed, labels, sizes.size, stats=("min", "p10", "p25", "median", "p75", "p90", "max"))
    for stat in ("min", "p10", "p25", "median", "p75", "p90", "max"):
        np.testing.assert_allclose(got[stat], reference(typed.astype(np.float64), labels, sizes.size, stat),
                                   rtol=1e-12, atol=0, err_msg=stat)


def test_subset_and_bad_stat(sample) -> None:
    values, labels, n = sample
    out = zonal_stats(values, labels, n, stats=("median",))
    assert set(out) == {"count", "masked", "median"}
    with pytest.raises(InvalidRequestError, match="unknown statistic"):
        zonal_stats(values, labels, n, stats=("mode",))
    with pytest.raises(InvalidRequestError, match="out of range"):
        zonal_stats(values, labels, 5)
    empty = zonal_stats(np.zeros((3, 0)), np.zeros(0, dtype=int), 2)
    assert empty["p75"].shape == (2, 3) and np.isnan(empty["p75"]).all()


def test_segment_stats_reads_stored_integers_in_place() -> None:
    """The extraction path: uint16 values with nodata and CF packing, a 20 m band read through a pixel
    index (no repeat), an SCL-style cloud mask at its own resolution, parcels of up to 3,000 pixels with
    heavy ties (quickselect's partitioning). Reference: numpy on the decoded, gathered, masked pixels."""
    rng = np.random.default_rng(5)
    ntime, side = 6, 120  # a 120 x 120 px 10 m window; the band and the mask at 20 m (60 x 60)
    stored = rng.integers(900, 1100, (ntime, 60 * 60)).astype(np.uint16)  # ~200 distinct values: ties
    stored[rng.random(stored.shape) < 0.1] = 0  # nodata
    scl = rng.integers(0, 12, (ntime, 60 * 60)).astype(np.uint8)
    rows, cols = np.divmod(np.arange(side * side), side)
    native = (rows // 2) * 60 + cols // 2
    labels = np.minimum(rows // 40 * 3 + cols // 50, 7)  # 8 parcels, 1,600 to 3,200 px
    order = np.argsort(labels, kind="stable")
    sizes = np.bincount(labels)
    cloudy = np.isin(scl, [3, 8, 9])
    clear = clear_pixels(scl, native[order], [3, 8, 9])
    got = segment_stats(stored, native[order], sizes, stats=(*STATS, "p10", "p90"), nodata=0, scale=1e-4,
                        offset=-0.1, clear=clear)
    decoded = np.where(stored == 0, np.nan, stored * 1e-4 - 0.1)[:, native]
    decoded[cloudy[:, native]] = np.nan
    for stat in ("count", "masked", *NUMPY):
        np.testing.assert_allclose(got[stat], reference(decoded, labels, sizes.size, stat), rtol=1e-12, atol=1e-15,
                                   err_msg=stat)
    with pytest.raises(InvalidRequestError, match="does not fit"):
        segment_stats(stored, native[order][:-1], sizes)
    with pytest.raises(InvalidRequestError, match="scale must be positive"):
        segment_stats(stored, native[order], sizes, scale=-1.0)



def test_statistics_of_stored_integers_are_the_decimals_they_stand_for() -> None:
    """Sentinel-2's reflectance is its stored integer divided by 10,000 (less 0.1 from baseline 04.00): its
    statistics are those decimals, as printed in every CSV and JSON answer, not the stored integer times 1e-4
    (``788 * 1e-4`` is 0.07880000000000001: a third of the integers to 10,000 printed so, and more with the
    offset). Each integer a parcel of one pixel; a pair's median and p25 too; a scale without a whole inverse
    and Sentinel-1's dB (mean of linear power) are left as they were."""
    k = np.arange(1, 10_001, dtype=np.uint16)
    for offset, shift in ((0.0, 0), (-0.1, -1000)):
        got = segment_stats(k[None, :], np.arange(k.size), np.ones(k.size, dtype=np.int64), nodata=0, scale=1e-4,
                            offset=offset, stats=("mean", "min", "max", "median"))
        for stat in ("mean", "min", "max", "median"):
            np.testing.assert_array_equal(got[stat][:, 0], (k.astype(np.int64) + shift) / 10_000, err_msg=stat)
    pair = segment_stats(np.array([[788, 841]], dtype=np.uint16), np.arange(2), np.array([2]), nodata=0,
                         scale=1e-4, stats=("median", "p25", "std"))
    assert (pair["median"][0, 0], pair["p25"][0, 0], pair["std"][0, 0]) == (0.08145, 0.080125, 0.00265)
    assert decimal_packing(1e-4, -0.1) == (10_000, -1000) and decimal_packing(0.01, -50.0) == (100, -5000)
    assert decimal_packing(1.0, 0.0) is None and decimal_packing(3e-4, 0.0) is None
    assert decimal_packing(1e-4, -0.10005) is None  # an offset of no whole number of the step


def test_segment_stats_of_a_strided_index_and_mask_positions() -> None:
    """The kernel reads ``index`` and ``at`` as unsigned views of their buffers: a strided (non-contiguous)
    index, weight or ``at`` gives the numbers of its contiguous copy."""
    rng = np.random.default_rng(11)
    stored = rng.integers(1, 3000, (5, 400)).astype(np.uint16)
    stored[rng.random(stored.shape) < 0.1] = 0
    sizes = np.array([10, 0, 18, 12])
    index = np.stack([rng.integers(0, 400, 40), np.zeros(40, dtype=np.int64)], axis=1)  # column 0: strided
    weight = np.stack([rng.integers(1, 4, 40), np.ones(40, dtype=np.int64)], axis=1)
    at = np.stack([np.cumsum(weight[:, 0]) - weight[:, 0], np.zeros(40, dtype=np.int64)], axis=1)
    for extra in ({}, {"weight": weight[:, 0], "at": at[:, 0]}):
        clear = rng.random((5, weight[:, 0].sum() if extra else 40)) < 0.8
        args = dict(stats=(*STATS, "p10"), nodata=0, scale=1e-4, clear=clear)
        got = segment_stats(stored, index[:, 0], sizes, **extra, **args)
        want = segment_stats(stored, index[:, 0].copy(), sizes, **{k: a.copy() for k, a in extra.items()}, **args)
        for stat, arr in want.items():
            np.testing.assert_array_equal(got[stat], arr, err_msg=stat)


# (dtype, value range, parcel sizes): each sends its parcels down one path of the unsigned 8/16-bit kernel
UNSIGNED_CASES = {
    "histogram": ("uint16", (4000, 4400), [1, 2, 3, 300, 701]),  # narrow range: counted out of a histogram
    "radix": ("uint16", (1, 65535), [25, 26, 300, 999]),  # range wider than 2 n + 512: radix sort
    "quickselect": ("uint16", (1, 65535), [1, 2, 5, 24]),  # wide and at most 24 values: quickselect
    "float moments": ("uint16", (1, 65535), [100_000]),  # n x range past int64's exact squares
    "uint8": ("uint8", (1, 255), [1, 7, 64, 400]),
    "radix, then histogram": ("uint16", (4000, 4400), [400, 300, 5]),  # the first parcel's range made wide below
}


@pytest.mark.parametrize("case", UNSIGNED_CASES)
def test_unsigned_paths_match_numpy(case: str) -> None:
    """Stored unsigned integers take exact integer moments, and order statistics by histogram, radix sort or
    quickselect depending on each parcel's value range and size: every path against numpy on the same
    decoded pixels, with nodata, ties and even and odd counts."""
    dtype, (lo, hi), sizes = UNSIGNED_CASES[case]
    rng = np.random.default_rng(len(case))
    sizes = np.array(sizes)
    stored = rng.integers(lo, hi, (3, sizes.sum()), endpoint=True).astype(dtype)
    if case == "float moments":  # the two ends of the range: the largest sum of squares there is
        stored = np.where(stored % 2, lo, hi).astype(dtype)
    index = rng.permutation(sizes.sum())
    if case == "radix, then histogram":  # half the first parcel's pixels far off: its histogram must be emptied
        stored[:, index[: sizes[0]: 2]] = 65535  # for the next parcels' values, which its other half shares
    stored[0, rng.random(sizes.sum()) < 0.2] = 0  # nodata
    stored[1, : sizes[0]] = lo  # one parcel all one value
    got = segment_stats(stored, index, sizes, stats=(*STATS, "p10", "p90"), nodata=0, scale=1e-4, offset=-0.1)
    decoded = np.where(stored == 0, np.nan, stored * 1e-4 - 0.1)[:, index]
    labels = np.repeat(np.arange(sizes.size), sizes)
    for stat in ("count", "masked", *NUMPY):
        np.testing.assert_allclose(got[stat], reference(decoded, labels, sizes.size, stat), rtol=1e-12, atol=1e-15,
                                   err_msg=stat)



def _repeated(rng: np.random.Generator, sizes: list[int], ncols: int) -> tuple[np.ndarray, np.ndarray]:
    """A per-pixel index in which each parcel reads ``sizes[j]`` distinct columns, each 1 to 4 times in a
    shuffled order (a 20 m band under 10 m pixels, but also odd repeats); and the pixel count per parcel."""
    cols = rng.permutation(ncols)
    index, pixels, start = [], [], 0
    for n in sizes:
        run = np.repeat(cols[start:start + n], rng.integers(1, 5, n))
        index.append(rng.permutation(run))
        pixels.append(run.size)
        start += n
    return np.concatenate(index).astype(np.int64), np.array(pixels)


def test_weighted_index_merges_each_parcels_repeats() -> None:
    rng = np.random.default_rng(11)
    index, pixels = _repeated(rng, [1, 5, 0, 40, 300], 600)
    key = index // 3  # a coarser mask grid: merged pixels share their mask class
    merged = WeightedIndex.merge(index, pixels, key=key)
    assert merged is not None and merged.sizes.tolist() == [1, 5, 0, 40, 300]
    np.testing.assert_array_equal(index[merged.at], merged.index)  # each entry's mask pixel reads its column
    runs = np.repeat(np.arange(pixels.size), pixels)
    for j, (start, n) in enumerate(zip(np.cumsum(merged.sizes) - merged.sizes, merged.sizes, strict=True)):
        cols, counts = np.unique(index[runs == j], return_counts=True)
        order = np.argsort(merged.index[start:start + n])
        np.testing.assert_array_equal(merged.index[start:start + n][order], cols)
        np.testing.assert_array_equal(merged.weight[start:start + n][order], counts)
        assert (runs[merged.at[start:start + n]] == j).all()
    # Merging is refused where a merged pixel would mix mask classes, or where it saves little.
    assert WeightedIndex.merge(index, pixels, key=np.arange(index.size)) is None
    assert WeightedIndex.merge(np.arange(100), np.array([60, 40])) is None


@pytest.mark.parametrize("case", UNSIGNED_CASES)
def test_weighted_statistics_are_those_of_the_pixels_bit_for_bit(case: str) -> None:
    """A parcel's repeated columns merged into weighted entries give exactly the numbers of reading every
    pixel, on each path of the unsigned kernel (the sizes are distinct columns here), with nodata and a
    cloud mask; floats, which are expanded, give the same numbers to rounding."""
    dtype, (lo, hi), sizes = UNSIGNED_CASES[case]
    rng = np.random.default_rng(len(case) + 1)
    ncols = sum(sizes) + 10
    index, pixels = _repeated(rng, sizes, ncols)
    stored = rng.integers(lo, hi, (3, ncols), endpoint=True).astype(dtype)
    if case == "float moments":
        stored = np.where(stored % 2, lo, hi).astype(dtype)
    if case == "radix, then histogram":
        stored[:, index[: pixels[0]: 2]] = 65535
    stored[0, rng.random(ncols) < 0.2] = 0  # nodata
    scl = rng.integers(0, 12, (3, ncols)).astype(np.uint8)  # the mask at the band's resolution
    clear = clear_pixels(scl, index, [3, 8, 9])
    merged = WeightedIndex.merge(index, pixels, key=index)
    assert merged is not None
    stats = (*STATS, "p10", "p90")
    every = segment_stats(stored, index, pixels, stats=stats, nodata=0, scale=1e-4, offset=-0.1, clear=clear)
    weighted = segment_stats(stored, merged.index, merged.sizes, stats=stats, nodata=0, scale=1e-4, offset=-0.1,
                             clear=clear, weight=merged.weight, at=merged.at)
    for stat in ("count", "masked", *stats[1:]):
        if case == "float moments" and stat == "std":  # past int64's exact squares: float sums, other order
            np.testing.assert_allclose(weighted[stat], every[stat], rtol=1e-12)
        else:
            np.testing.assert_array_equal(weighted[stat], every[stat], err_msg=stat)
    floats = stored.astype(np.float64)
    got = segment_stats(floats, merged.index, merged.sizes, stats=stats, nodata=0, weight=merged.weight)
    ref = segment_stats(floats, index, pixels, stats=stats, nodata=0)
    for stat in ("count", "masked", *stats[1:]):
        np.testing.assert_allclose(got[stat], ref[stat], rtol=1e-12, err_msg=stat)


def test_weighted_statistics_refuse_inconsistent_weights() -> None:
    stored = np.ones((2, 4), dtype=np.uint16)
    index, sizes = np.array([0, 1, 2, 3]), np.array([2, 2])
    with pytest.raises(InvalidRequestError, match="weight must be positive"):
        segment_stats(stored, index, sizes, weight=np.array([1, 0, 1, 1]))
    with pytest.raises(InvalidRequestError, match="at must give"):
        segment_stats(stored, index, sizes, weight=np.array([1, 2, 1, 1]), clear=np.ones((2, 5), dtype=bool))
    with pytest.raises(InvalidRequestError, match="only meaningful with weight"):
        segment_stats(stored, index, sizes, at=index)
    got = segment_stats(stored, index, sizes, weight=np.array([1, 2, 1, 1]), at=np.array([0, 1, 3, 4]),
                        clear=np.array([[True] * 5, [False, True, True, True, False]]))
    np.testing.assert_array_equal(got["count"], [[3, 2], [2, 1]])
    np.testing.assert_array_equal(got["masked"], [[0, 1], [0, 1]])

def test_class_histogram_matches_bincount() -> None:
    rng = np.random.default_rng(3)
    ntime, npix, n = 5, 400, 9
    labels = rng.integers(-1, n, npix)
    classes = rng.integers(0, 13, (ntime, npix)).astype(np.uint8)  # 12 is no SCL code: not counted
    codes = tuple(SCL_CLASSES)
    hist = class_histogram(classes, labels, n, class_codes=codes)
    assert hist.shape == (n, ntime, len(codes))
    for i in range(n):
        for t in range(ntime):
            ref = np.bincount(classes[t, labels == i], minlength=13)[: len(codes)]
            np.testing.assert_array_equal(hist[i, t], ref)
    # A subset of codes, in another order.
    sub = class_histogram(classes, labels, n, class_codes=(9, 4))
    np.testing.assert_array_equal(sub, hist[:, :, [9, 4]])


def test_backscatter_mean_in_linear_power() -> None:
    rng = np.random.default_rng(11)
    labels = np.repeat(np.arange(3), [5, 8, 1])
    db = rng.normal(-14, 3, (4, labels.size))
    db[1, :3] = np.nan
    out = backscatter_stats(db, labels, 3)
    for i in range(3):
        for t in range(4):
            a = db[t, labels == i]
            a = a[~np.isnan(a)]
            assert out["mean"][i, t] == pytest.approx(10 * np.log10(np.mean(10 ** (a / 10))), rel=1e-12)
            assert out["std"][i, t] == pytest.approx(np.std(a), abs=1e-12)  # std of the dB values
            assert out["median"][i, t] == pytest.approx(np.median(a), rel=1e-12)
    # The linear-power mean is above the mean of dB values (Jensen) unless the pixels are equal.
    assert (out["mean"][:2] > zonal_stats(db, labels, 3)["mean"][:2]).all()


def test_backscatter_read_in_place_from_float32_or_packed_integers() -> None:
    """The cube's S1 path: dB stored as float32 (NaN nodata) or packed in uint16 (scale, offset, nodata 0),
    read through a pixel index with a cloud-free mask, gives the numbers of the decoded float64 pixels."""
    rng = np.random.default_rng(12)
    sizes = np.array([30, 4, 60])
    db = np.round(rng.normal(-14, 3, (3, sizes.sum() + 7)), 2)
    db[0, rng.random(db.shape[1]) < 0.2] = np.nan
    index = rng.permutation(db.shape[1])[: sizes.sum()]
    clear = rng.random((3, sizes.sum())) > 0.1
    decoded = db[:, index].copy()
    decoded[~clear] = np.nan
    want = backscatter_stats(decoded, np.repeat(np.arange(3), sizes), 3, stats=(*STATS, "p10"))
    packed = np.where(np.isnan(db), 0, np.round((db + 50) / 0.01)).astype(np.uint16)
    for values, packing in ((db.astype(np.float32), {}), (packed, {"nodata": 0, "scale": 0.01, "offset": -50.0})):
        got = backscatter_segment_stats(values, index, sizes, stats=(*STATS, "p10"), clear=clear, **packing)
        for stat in ("count", "masked", "mean", "std", "min", "median", "p10"):
            np.testing.assert_allclose(got[stat], want[stat], rtol=1e-6, atol=1e-9, err_msg=stat)


def test_mean_count_std_match_exactextract_on_whole_pixel_parcels() -> None:
    """exactextract weighs pixels by coverage; parcels made of whole pixels make both rules agree."""
    rng = np.random.default_rng(5)
    h, w, res, x0, y0 = 20, 24, 10.0, 600_000.0, 5_800_020.0
    img = rng.uniform(0, 0.5, (h, w))
    img[rng.random((h, w)) < 0.2] = np.nan
    polys = []
    for _ in range(6):  # unions of random pixel blocks, as in a cadastre drawn on the grid
        r, c = rng.integers(0, h - 6), rng.integers(0, w - 6)
        blocks = [shapely.box(x0 + (c + dc) * res, y0 - (r + dr + 1) * res, x0 + (c + dc + 1) * res,
                              y0 - (r + dr) * res) for dr in range(rng.integers(2, 6)) for dc in range(3)]
        polys.append(shapely.union_all(blocks))
    gdf = gpd.GeoDataFrame({"parcel_id": range(6)}, geometry=polys, crs="EPSG:32631")
    src = NumPyRasterSource(np.ma.masked_invalid(img), x0, y0 - h * res, x0 + w * res, y0)
    ee = exact_extract(src, gdf, ["count", "mean", "stdev", "min", "max"], output="pandas")
    # Pixel-centre membership of each polygon, independent of cube.membership.
    xs = x0 + (np.arange(w) + 0.5) * res
    ys = y0 - (np.arange(h) + 0.5) * res
    cx, cy = np.meshgrid(xs, ys)
    for i, poly in enumerate(polys):
        inside = shapely.contains_xy(poly, cx, cy).ravel()
        out = zonal_stats(img.reshape(1, -1)[:, inside], np.zeros(inside.sum(), dtype=int), 1)
        assert out["count"][0, 0] == pytest.approx(ee["count"][i])
        assert out["mean"][0, 0] == pytest.approx(ee["mean"][i], rel=1e-9)
        assert out["std"][0, 0] == pytest.approx(ee["stdev"][i], rel=1e-6)
        assert out["min"][0, 0] == pytest.approx(ee["min"][i], rel=1e-6)
        assert out["max"][0, 0] == pytest.approx(ee["max"][i], rel=1e-6)


def test_tidy_frames(sample) -> None:
    values, labels, n = sample
    ids = np.array([f"NL-{i:03d}" for i in range(n)])
    times = pd.date_range("2024-04-01", periods=values.shape[0], freq="5D").to_numpy()
    b04 = ParcelStats("B04", ids, times, zonal_stats(values, labels, n))
    b08 = ParcelStats("B08", ids, times, zonal_stats(values * 2, labels, n))
    frame = stats_frame([b08, b04])
    assert tuple(frame.columns) == FRAME_COLUMNS
    assert len(frame) == 2 * n * values.shape[0]
    row = frame[(frame.parcel_id == "NL-012") & (frame.band == "B08")].iloc[3]
    assert row["time"] == times[3]
    assert row["mean"] == pytest.approx(b08["mean"][12, 3], nan_ok=True)
    valid = b04.to_frame(valid_only=True)
    assert (valid["count"] > 0).all() and len(valid) == (b04["count"] > 0).sum()
    with pytest.raises(InvalidRequestError, match="shape"):
        ParcelStats("B04", ids[:3], times, zonal_stats(values, labels, n))

    hist = ClassHistogram(ids[:2], times[:1], (4, 8, 9), np.array([[[6, 3, 1]], [[0, 0, 0]]]))
    np.testing.assert_allclose(hist.fraction(), [[0.4], [np.nan]])
    np.testing.assert_allclose(hist.fraction((4,)), [[0.6], [np.nan]])
    hf = hist.to_frame()
    assert list(hf.columns) == ["parcel_id", "time", "scl_4", "scl_8", "scl_9"]
    assert hf.loc[0, "scl_8"] == 3


def test_a_table_of_encoded_text_is_written_and_read_back_as_the_plain_one(sample) -> None:
    """Extraction's units build their tables with the text as Arrow dictionaries (a Parquet writer stores them
    as they are, not hashing every row's text): a unit's file reads back as the plain table, text as text (not
    pandas categoricals), in pyarrow and pandas alike; text with a gap (None) stays plain."""
    values, labels, n = sample
    ids = np.array([f"NL-{i:03d}" for i in range(n)], dtype=object)[::-1]  # not in order: the table sorts them
    times = pd.date_range("2024-04-01", periods=values.shape[0], freq="5D", unit="us").to_numpy()
    results = [ParcelStats(band, ids, times, zonal_stats(values * k, labels, n))
               for band, k in (("B08", 2), ("B04", 1))]
    per_date = {"platform": np.array(["S2A", "S2B", "S2A", "S2A", "S2B", "S2B", "S2A"], dtype=object),
                "scene_id": np.array(["a", None, "c", "d", "e", "f", "g"], dtype=object),
                "relative_orbit": np.arange(7, dtype=np.int16), "scl_4": np.arange(n * 7).reshape(n, 7)}
    plain = stats_table(results, per_date=per_date)
    encoded = stats_table(results, per_date=per_date, encoded=True)
    assert pa.types.is_dictionary(encoded.schema.field("parcel_id").type)
    assert pa.types.is_dictionary(encoded.schema.field("platform").type)
    assert not pa.types.is_dictionary(encoded.schema.field("scene_id").type)
    data = parquet_bytes(encoded, **TIMESERIES_PARQUET)
    back = pq.read_table(io.BytesIO(data))
    assert back.schema.equals(plain.schema)
    pd.testing.assert_frame_equal(back.to_pandas(), plain.to_pandas())
    pd.testing.assert_frame_equal(pd.read_parquet(io.BytesIO(data)), plain.to_pandas())


def test_stat_list_is_one_parser_for_the_cli_the_service_and_python() -> None:
    assert stat_list("Mean, p90,,mean") == stat_list(["mean", " P90 "]) == ["mean", "p90"]
    assert stat_list(STATS) == list(STATS) and stat_list("median,p50") == ["median", "p50"]  # a name, not a spelling
    for bad, message in (("", "no statistic given"), ([], "no statistic given"), ("mean,p101", r"\) p101; use"),
                         ("average,p200", r"\) average, p200; use"), ("p5,p05", "p5 and p05 are one percentile"),
                         ("p90, P90.0", "p90 and p90.0 are one percentile")):  # were two equal columns
        with pytest.raises(InvalidRequestError, match=message):
            stat_list(bad)
    from cardcube.errors import RequestTooLargeError
    from cube.stats import MAX_STATS

    many = [f"p{q / 100:g}" for q in range(1, MAX_STATS + 2)]  # a column each, on every row of an answer
    assert stat_list(many[:MAX_STATS]) == many[:MAX_STATS]
    with pytest.raises(RequestTooLargeError, match=rf"{MAX_STATS + 1} statistics asked for \(limit {MAX_STATS}"):
        stat_list(",".join(many))


def test_a_kernels_first_call_of_new_argument_types_waits_for_another_process_saving_to_its_cache():
    """A process's first call of a kernel with new argument types, where numba may compile and save a signature,
    holds the lock file of the kernel's cache folder (another process saving one at once could leave numba's index
    naming its file over this one's code); later calls of those types take no lock. A read-only array is another
    type to numba: its first call takes the lock too. The mask is the one numpy makes."""
    import threading
    from pathlib import Path

    from filelock import FileLock

    from cube import kernels

    fresh = kernels.CacheLocked(kernels.clear_pass.kernel)  # no call of it made yet in this process
    classes, index = np.array([[1, 8, 3], [8, 8, 0]], dtype=np.uint8), np.arange(3)
    masked, out = np.arange(9) == 8, np.empty((2, 3), dtype=np.bool_)
    called = threading.Event()

    def call() -> None:
        fresh(classes, index, masked, out)
        called.set()

    another = FileLock(Path(kernels.clear_pass._cache._cache_path) / kernels.LOCK_NAME)  # as another process holds it
    with another:
        threading.Thread(target=call, daemon=True).start()
        assert not called.wait(3)  # it waits for the lock, whatever the time: not called while it is held
    assert called.wait(120)
    assert out.tolist() == (~np.isin(classes, [8])).tolist()
    called.clear()
    with another:  # the same types again: no lock taken, called while another holds it
        threading.Thread(target=call, daemon=True).start()
        assert called.wait(120)
    called.clear()
    classes = classes.copy()
    classes.setflags(write=False)  # as a chunk decoded from a buffer: another signature of numba's, the same dtype
    with another:
        threading.Thread(target=call, daemon=True).start()
        assert not called.wait(3)  # a new signature: it waits for the lock
    assert called.wait(120)
    assert out.tolist() == (~np.isin(classes, [8])).tolist()


def test_unpacked_values_are_the_packing_applied_in_their_dtype_and_nan_at_nodata():
    """``unpack`` to float32 (a Dataset's decoding: one array, in place) against the packing written out: stored *
    scale + offset in float32, NaN where the stored value is nodata; Sentinel-1's float32 dB given back as they are;
    float64 (the statistics') as ever."""
    rng = np.random.default_rng(0)
    stored = rng.integers(0, 10000, (3, 50, 40), dtype="uint16")
    stored[0, :5] = 0
    b04 = S2_L2A.band("B04")
    packing = {"nodata": b04.nodata, "scale": b04.scale, "offset": b04.offset}
    want = np.where(stored == 0, np.nan, stored.astype("float32") * np.float32(1e-4) + np.float32(-0.1))
    got = unpack(stored, **packing, dtype=np.float32)
    assert got.dtype == np.float32 and np.isnan(got[0, :5]).all()
    np.testing.assert_array_equal(got, want.astype("float32"))
    assert stored[0, 0, 0] == 0  # the stored block is left as it was
    db = rng.normal(-12, 3, (2, 8, 8)).astype("float32")
    db[0, 0] = np.nan
    assert unpack(db, dtype=np.float32) is db
    wide = unpack(stored, **packing)
    assert wide.dtype == np.float64
    np.testing.assert_array_equal(wide, np.where(stored == 0, np.nan, stored * 1e-4 - 0.1))
