"""The statistics phase of extraction work units, old and new code side by side: ``python -m benchmarks.kernel``.

Builds (or reuses, ``--work DIR``) a synthetic Sentinel-2 territory ingested with the default layout, takes
the largest work units of :func:`cube.extract.extract` (``--units``) and each one's longest run of dates, reads
the run's bands into memory once, then times what a unit's worker counts as *statistics* (the pixels grouped by
parcel, here for each run where a unit does it once; the cloud mask, every band's statistics, the Arrow table)
and *write* (the table as Parquet bytes, without the store's write).
Each repeat times the package's code and the code before this benchmark's changes (kept below, only here), in
turn, on the same data, in one thread, by thread CPU time (this shared machine's wall times vary by 15 %
and more with its other users' load); medians of ``--repeats`` and their ratio are reported, and both
paths' tables must be equal.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numba
import numpy as np
import pyarrow as pa

from cube import kernels, parcel_stats
from cube.kernels import (
    COARSE,
    _expand,
    _percentile,
    _power_sum,
    _radix_pass,
    _radix_sort16,
    _ranks,
    _select,
    _walk,
)
from cube.stats import STATS, stat_list

OLD_TIMESERIES_PARQUET: dict[str, Any] = {
    "compression": "zstd", "compression_level": 1, "use_dictionary": ["parcel_id", "band", "platform", "orbit_state"],
    "write_statistics": ["parcel_id", "time", "band"], "coerce_timestamps": "us",
}
S2_BANDS = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")


@kernels.compiled
def _radix_sort_f32(vals, c, keys, tmp, counts):
    """Sort the float32 values ``vals[:c]`` (no NaN) by four 8-bit counting passes over their bits, mapped
    to unsigned keys that order as the floats do (negatives inverted, positives above them): about four
    times as fast as quickselect for the few hundred values of a parcel, whose comparisons mispredict. The old code's
    (:func:`cube.kernels._f32_order_stats` took its place), kept here only."""
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


@dataclass
class UnitRun:
    """One work unit's run of dates, read: what its statistics phase starts from."""

    job: Any
    unit: Any
    pos: np.ndarray
    selected: np.ndarray
    index: dict[str, np.ndarray]
    coords: dict[str, Any]
    attrs: dict[str, Any]
    dates: slice
    values: dict[str, np.ndarray]  # every stored variable over the run, (time, pixels)


def territory(work: Path, size_km: float) -> tuple[Path, Path]:
    """The cube and parcel file of a synthetic territory in ``work``, generated and ingested if missing."""
    from cardcube.synth import SynthConfig, generate
    from ingest.job import ingest

    cube, parcels = work / "cube", work / "source" / "parcels.parquet"
    if not (cube / "s2").exists():
        region = generate(work / "source", SynthConfig.demo(size_m=size_km * 1000, s1=False, workers=1))
        ingest(region.items, cube, collection="s2", progress=False, catalog=False)
        parcels = Path(region.parcels)
    return cube, parcels


def prepared_units(cube: Path, parcels: Path, layers: Path) -> tuple[Any, list[tuple[Any, np.ndarray, np.ndarray,
                                                                                       float]]]:
    """The extraction job of the territory's S2 bands and every work unit, largest first, as
    :func:`cube.extract.extract` makes them (the label layers kept in ``layers``), each with its window's positions
    among the unit's labels, its selected pixels and the label layer's resolution: what
    :meth:`cube.extract_job.ExtractJob._readers` takes."""
    import pandas as pd

    from cardcube.storage import open_store
    from cube.extract_job import ExtractJob
    from cube.indices import stored_bands
    from cube.ledger import read_version
    from cube.membership import DEFAULT_BUFFER
    from cube.parcel_layer import ParcelLayer, parcel_layer
    from cube.parcels import as_parcels, read_parcels
    from cube.stats import STATS
    from cube.timeseries import assign_tiles, resolve_mask
    from cube.work_units import WorkUnit, home_block_units, time_blocks, with_neighbours, work_unit_size

    store = open_store(cube, read_only=True)
    layer_store = open_store(layers)
    version = read_version(store, "s2")
    ps = as_parcels(read_parcels(parcels), errors="collect")
    mask = resolve_mask("default", list(version.spec.band_names), "s2")
    names = tuple(stored_bands(list(S2_BANDS), version.spec.band_names, scl=True))
    block, time_block = work_unit_size(version.spec, len(names), block=None, time_block=None)
    job = ExtractJob(store, layer_store, layer_store, "s2", version, names, S2_BANDS, tuple(STATS), tuple(mask),
                     True, None)
    tiles_of = assign_tiles(version, ps)
    units = []
    for tile in sorted(version.tiles):
        mine = [pid for pid, tiles in zip(ps.ids, tiles_of, strict=True) if tiles == (tile,)]
        if mine:
            layer = parcel_layer(layer_store, tile, ps.select(mine), buffer=DEFAULT_BUFFER, progress=False)
            times, edges = time_blocks(store, "s2", tile, names[0], version, None, time_block)
            units += home_block_units(layer, block=block, times=times, done=set(), time_edges=edges)[0]
    prepared = []
    for unit in with_neighbours(sorted(units, key=WorkUnit.cost, reverse=True), job.chunk_side):
        layer = ParcelLayer(layer_store, unit.layer, unit.tile, pd.DataFrame())
        lab = layer.labels(unit.rows, unit.cols).ravel()
        pos = np.minimum(np.searchsorted(unit.labels, lab), unit.labels.size - 1)
        prepared.append((unit, pos, np.flatnonzero(unit.labels[pos] == lab), layer.geobox.resolution.x))
    return job, prepared


def unit_runs(cube: Path, parcels: Path, layers: Path, count: int) -> Iterator[UnitRun]:
    """The ``count`` largest work units, each with its longest run of dates, read."""
    job, prepared = prepared_units(cube, parcels, layers)
    for unit, pos, selected, resolution in prepared[:count]:
        dates = max((d for d, _ in unit.times), key=lambda d: d.stop - d.start)
        readers, index = job._readers(unit, selected, resolution)
        coords = readers[job.names[0]].coords
        values = {n: r.read(dates).reshape(dates.stop - dates.start, -1) for n, r in readers.items()}
        yield UnitRun(job, unit, pos, selected, index, coords, {n: r.attrs for n, r in readers.items()}, dates,
                      values)


# ---- the code before this benchmark's changes (commit 798bebc), kept here only to be timed beside the package's


@kernels.compiled
def _old_segment_pass(v, index, starts, sizes, weight, at, full, nodata, scale, offset, clear, qs, median, small_uint,
                   f32, power, count, mean, std, vmin, vmax, pct):
    """:func:`cube.kernels.segment_pass` as of commit 798bebc (signed positions in the gathering loop)."""
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
                if power > 0:
                    mean[t, j] = _power_sum(vals, wb, c, False, scale, offset, power) / c
                else:
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


def _old_stats_table(results: list[Any], *, per_date: dict[str, np.ndarray] | None = None) -> pa.Table:
    """:func:`cube.parcel_stats.stats_table` as of commit 798bebc (three fancy-index copies per column)."""
    if not results:
        raise ValueError("stats_table needs the statistics of at least one band")
    ids, times = np.asarray(results[0].parcel_ids), np.asarray(results[0].times)
    if any(not (np.array_equal(r.parcel_ids, ids) and np.array_equal(r.times, times)) for r in results[1:]):
        raise ValueError("stats_table needs the statistics of the same parcels and dates for every band")
    bands = np.array([r.band for r in results], dtype=object)
    by_id, by_time, by_band = (np.argsort(a, kind="stable") for a in (ids, times, bands))
    n, t, b = ids.size, times.size, bands.size
    parcel_row = np.repeat(np.arange(n), t * b)  # each row's parcel, date and band (positions in sorted order)
    time_row = np.tile(np.repeat(np.arange(t), b), n)

    def rows(arr: np.ndarray) -> np.ndarray:  # (band, parcel, time) -> one value per row, in row order
        return arr[by_band][:, by_id][:, :, by_time].transpose(1, 2, 0).reshape(-1)

    data: dict[str, Any] = {"parcel_id": parcel_stats._column(ids[by_id], parcel_row),
                            "time": parcel_stats._column(times[by_time], time_row),
                            "band": parcel_stats._column(bands[by_band], np.tile(np.arange(b), n * t))}
    names = [c for c in parcel_stats.FRAME_COLUMNS[3:] if any(c in r.values for r in results)]
    names += list(dict.fromkeys(c for r in results for c in r.values if c not in names))
    for name in names:
        fill = 0 if name in ("count", "masked") else np.nan
        data[name] = rows(np.stack([np.asarray(r.values[name]) if name in r.values else np.full((n, t), fill)
                                    for r in results]))
    for name, arr in (per_date or {}).items():
        arr = np.asarray(arr)
        data[name] = (parcel_stats._column(arr[by_time], time_row) if arr.ndim == 1 else
                      parcel_stats._column(arr[by_id][:, by_time].reshape(-1), parcel_row * t + time_row))
    return pa.table(data)


@contextmanager
def old_code(old: bool) -> Iterator[None]:
    """The package's statistics kernel replaced by the old one while ``old``."""
    new = kernels.segment_pass
    if old:
        kernels.segment_pass = _old_segment_pass
    try:
        yield
    finally:
        kernels.segment_pass = new


def statistics_phase(run: UnitRun, *, old: bool = False) -> pa.Table:
    """What :meth:`cube.extract_job.ExtractJob.__call__` counts as statistics for one run of dates, as it does it
    (``old``: with the code before this benchmark's changes)."""
    from cube.extract import TIME_COLUMNS
    from cube.pixels import ParcelPixels

    job, unit, coords, dates = run.job, run.unit, run.coords, run.dates
    with old_code(old):
        template = ParcelPixels.from_labels(unit.ids, run.pos[run.selected], coords["time"][:0], {}, run.attrs, {},
                                            index=run.index)
        scl = {"SCL": run.values["SCL"]}
        meta = {c: coords[c][dates] for c in TIME_COLUMNS if c in coords}
        pixels = replace(template, times=coords["time"][dates], values=scl, time_meta=meta)
        clear = pixels.clear(job.mask)
        results = []
        for wanted, inputs in job.groups:
            group = replace(pixels, values={**{n: run.values[n] for n in inputs}, **scl})
            results += group.band_stats(wanted, stats=job.stats, clear=clear)
        table = (_old_stats_table if old else parcel_stats.stats_table)(
            results, per_date=pixels.per_date(histogram=job.histogram))
    return table.append_column("cube_version", pa.array(np.full(table.num_rows, job.version.version, np.int64)))


def write_phase(table: pa.Table, *, old: bool = False) -> bytes:
    """What the unit's worker counts as write, less the store's own write (``old``: the options before this
    benchmark's changes)."""
    from cube.extraction_files import TIMESERIES_PARQUET
    from cube.parcel_layer import parquet_bytes

    return parquet_bytes(table, **(OLD_TIMESERIES_PARQUET if old else TIMESERIES_PARQUET))


def same(a: pa.Table, b: pa.Table) -> bool:
    """Equal tables, NaN equal to NaN (Arrow's own ``equals`` says NaN differs from itself)."""
    if a.schema != b.schema:
        return False
    for x, y in zip(a.columns, b.columns, strict=True):
        if pa.types.is_floating(x.type):
            if not np.array_equal(x.to_numpy(), y.to_numpy(), equal_nan=True):
                return False
        elif not x.equals(y):
            return False
    return True


def timed(fn: Callable[[], Any]) -> float:
    """Thread CPU seconds of ``fn()``: the other users of this machine delay a run, they do not add to this."""
    start = time.thread_time()
    fn()
    return time.thread_time() - start


def side_by_side(old: Callable[[], Any], new: Callable[[], Any], repeats: int) -> tuple[float, float]:
    """Medians of ``repeats`` timings of ``old`` and ``new``, taken in turn."""
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        times[0].append(timed(old))
        times[1].append(timed(new))
    return statistics.median(times[0]), statistics.median(times[1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.kernel", description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/cardcube-kernel-bench"),
                        help="folder of the territory (generated once, reused)")
    parser.add_argument("--size", type=float, default=10.0, help="territory side in km (default 10)")
    parser.add_argument("--units", type=int, default=2, help="largest work units timed (default 2)")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--stats", default=",".join(STATS), help="statistics, comma-separated (default all eight)")
    parser.add_argument("--profile", action="store_true", help="cProfile one statistics phase of each unit instead")
    args = parser.parse_args(argv)
    numba.set_num_threads(1)
    cube, parcels = territory(args.work, args.size)
    totals = np.zeros(4)
    for run in unit_runs(cube, parcels, args.work / "layers", args.units):
        run.job = replace(run.job, stats=tuple(stat_list(args.stats)))
        print(f"unit {run.unit.tile} rows {run.unit.rows.start}:{run.unit.rows.stop} cols "
              f"{run.unit.cols.start}:{run.unit.cols.stop}: {run.unit.ids.size} parcels, {run.selected.size} px, "
              f"dates {run.dates.start}:{run.dates.stop}", flush=True)
        before, table = statistics_phase(run, old=True), statistics_phase(run)  # warm; the same numbers
        if not same(before, table):
            raise SystemExit("the old and the new statistics differ")
        if args.profile:
            import cProfile
            import pstats

            prof = cProfile.Profile()
            prof.runcall(statistics_phase, run)
            pstats.Stats(prof).sort_stats("tottime").print_stats(15)
            continue
        s_old, s_new = side_by_side(lambda r=run: statistics_phase(r, old=True), lambda r=run: statistics_phase(r),
                                    args.repeats)
        w_old, w_new = side_by_side(lambda t=table: write_phase(t, old=True), lambda t=table: write_phase(t),
                                    args.repeats)
        totals += (s_old, s_new, w_old, w_new)
        print(f"  statistics old {s_old:.4f} s new {s_new:.4f} s: new/old {s_new / s_old:.3f}; write old {w_old:.4f} "
              f"s new {w_new:.4f} s: new/old {w_new / w_old:.3f} ({table.num_rows} rows, medians of {args.repeats})",
              flush=True)
    if not args.profile:
        print(f"all units: statistics new/old {totals[1] / totals[0]:.3f}, write new/old {totals[3] / totals[2]:.3f}")


if __name__ == "__main__":
    main()
