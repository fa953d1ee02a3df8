"""One band of one tile over a pixel window: its cold dates and live hot slots, read straight from their shards.

A query's window (:class:`TileWindow`) is read from the band's stored arrays at their native resolution: a view
per part (the cold dates, the hot slots) that reads runs of consecutive dates through
:func:`cube.shard_reader.read_window`, keeping the shard indexes it has read. :func:`band_array` makes it a dask
array on the Dataset's grid (decoded, repeated or averaged from the native resolution) for
:func:`cube.dataset.open_cube`; :class:`BandReader` reads it with no dask graph, for extraction.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import dask.array as da
import numpy as np
import zarr
from odc.geo.geobox import GeoBox
from zarr.abc.store import Store

from cardcube.errors import InvalidRequestError, VersionNotFoundError
from cardcube.grid import TILE_SIZE_M, TileGrid
from cardcube.query import TimeSelection, in_time_selection, parse_time_selection
from cardcube.spec import BandSpec
from cardcube.storage import store_url
from cube.ledger import Acquisition, CubeVersion, TileState, acquisition_columns, read_version
from cube.manifest import AbsentShards, confirm_absent
from cube.shard_reader import read_window
from cube.shared_chunks import ChunkSharing
from cube.stats import unpack
from cube.tile_arrays import ArrayCache, ArrayKey, open_arrays, sized_view


@dataclass(frozen=True, slots=True)
class TileWindow:
    """The part of one tile a query needs: pixel rows/cols at the Dataset's resolution."""

    tile: str
    geobox: GeoBox  # the window's grid

    @property
    def shape(self) -> tuple[int, int]:
        return self.geobox.shape


def time_order(state: TileState, time: tuple | frozenset) -> tuple[list[Acquisition], np.ndarray]:
    """A tile's acquisitions within ``time`` (bounds or None, or a set of exact times) in time order, and each
    one's position in the stored dates (the cold dates, then the hot slots)."""
    acqs = [*state.cold, *(h.acquisition for h in state.hot)]
    times = np.array([a.datetime64 for a in acqs], dtype="datetime64[ns]")
    order = np.argsort(times, kind="stable")
    order = order[in_time_selection(times[order], time)]
    return [acqs[i] for i in order], order


def _kinds(state: TileState, order: np.ndarray) -> tuple[tuple[bool, ...], np.ndarray]:
    """The parts of a tile (False: its cold dates, True: its hot slots) holding the dates that ``order`` picks
    out of the stored ones (cold, then hot), and ``order`` over those parts alone: a query opens and reads
    no part it has no date in (a chip of a cold date never touches the hot buffer)."""
    n_cold = len(state.cold)
    kinds = tuple(hot for hot, used in ((False, (order < n_cold).any()), (True, (order >= n_cold).any())) if used)
    if not kinds:  # no date selected: the first part that exists gives the (empty) array its shape
        kinds = (False,) if state.cold else (True,)
    return kinds, order if False in kinds else order - n_cold


def dates_and_arrays(store: Store, version: CubeVersion, tile: str, bands: Sequence[BandSpec], time: tuple,
                      cache: ArrayCache | None = None
                      ) -> tuple[list[Acquisition], tuple[bool, ...], np.ndarray, dict[ArrayKey, zarr.Array]]:
    """A tile's dates within ``time`` in time order, the parts holding them (:func:`_kinds`), each date's
    position in those parts, and the arrays of ``bands`` in those parts, opened together."""
    state = version.tiles[tile]
    acqs, order = time_order(state, time)
    kinds, order = _kinds(state, order)
    arrays = open_arrays(store, version.collection, tile, [(b.resolution, b.name, hot) for b in bands for hot in kinds],
                         cache=cache)
    return acqs, kinds, order, arrays


class _Window:
    """An array-like view ``array[times, rows, cols]`` so dask builds tasks for the window's chunks only. It
    keeps the shard indexes it has read: the version it reads never changes, so reading the same Dataset
    again (one parcel after another) fetches only chunks."""

    def __init__(self, array, times: np.ndarray, rows: slice, cols: slice, *, hot: bool,
                 indexes: MutableMapping[str, np.ndarray] | None = None,
                 on_missing: Callable[[list[str]], None] | None = None, sharing: ChunkSharing | None = None) -> None:
        self.array, self.times, self.rows, self.cols, self.hot = array, times, rows, cols, hot
        self.on_missing, self.sharing = on_missing, sharing
        self.shape = (len(times), rows.stop - rows.start, cols.stop - cols.start)
        self.dtype = array.dtype
        self.ndim = 3
        self.indexes = {} if indexes is None else indexes

    def __getstate__(self) -> dict[str, Any]:
        """A copy (a dask worker's: a cluster of processes sends the window from worker to worker) starts without
        the shard indexes: a read waiting on S3 keeps the index it fetches among them as an asyncio future, which
        cannot be pickled ("Could not serialize object of type _Window", and the computation hung), and another
        thread's read may add to them while they are pickled. The copy reads the indexes it needs again."""
        return {**vars(self), "indexes": {}}

    def __getitem__(self, key: tuple[slice, slice, slice]) -> np.ndarray:
        return self.read(*key)

    def read(self, t: slice | np.ndarray, r: slice = slice(None), c: slice = slice(None), *,
             out: np.ndarray | None = None) -> np.ndarray:
        """``self[t, r, c]``, into ``out`` if given: each run of consecutive dates is one shard-reader call."""
        times = self.times[t]
        (r0, r1, _), (c0, c1, _) = r.indices(self.shape[1]), c.indices(self.shape[2])
        rows = slice(self.rows.start + r0, self.rows.start + r1)
        cols = slice(self.cols.start + c0, self.cols.start + c1)
        if out is None:
            out = np.empty((times.size, r1 - r0, c1 - c0), dtype=self.dtype)
        cuts = [0, *(np.flatnonzero(np.diff(times) != 1) + 1), times.size]
        for a, b in itertools.pairwise(cuts):
            if b > a:
                read_window(self.array, (slice(int(times[a]), int(times[a]) + b - a), rows, cols), out=out[a:b],
                            indexes=self.indexes, on_missing=self.on_missing, sharing=self.sharing)
        return out


class _ConfirmAbsent:
    """A window's ``on_missing``: :func:`cube.manifest.confirm_absent` of the version it reads. A copy (a dask
    worker's: a cluster of processes is sent each window of a Dataset on its own) holds the version's number and
    commit time, not its ledger record, which every window carried (12 of its 15 kB on the tiny cube; a record of
    10 tiles x 490 dates is some 10 MB, sent again with each band's windows); the copy reads the record where a
    shard is found missing, which is rare, and refuses another cube's made anew at the same place."""

    def __init__(self, store: Store, version: CubeVersion, absent: AbsentShards) -> None:
        self.store, self.version, self.absent = store, version, absent
        self.collection, self.number, self.created = version.collection, version.version, version.created

    def __getstate__(self) -> dict[str, Any]:
        return {**vars(self), "version": None}

    def __call__(self, missing: list[str]) -> None:
        if self.version is None:
            version = read_version(self.store, self.collection, self.number)
            if version.created != self.created:
                raise VersionNotFoundError(
                    f"version {self.number} of the {self.collection} cube at {store_url(self.store)} was committed at "
                    f"{version.created}, not at {self.created} as the one this Dataset reads: the cube was made anew "
                    f"since it was opened; open it again")
            self.version = version
        confirm_absent(self.store, self.version, missing, absent=self.absent)


def _parts(store: Store, version: CubeVersion, tile: str, band: BandSpec, rows: slice, cols: slice,
           kinds: tuple[bool, ...], arrays: Mapping[ArrayKey, zarr.Array], absent: AbsentShards,
           cache: ArrayCache | None = None, sharing: ChunkSharing | None = None) -> list[_Window]:
    """The cold dates and/or the live hot slots (``kinds``) of one band over a pixel window, from ``arrays``
    opened beforehand (:func:`cube.tile_arrays.open_arrays`); shard indexes are kept in ``cache``, decoded chunks
    shared with other windows through ``sharing`` (:mod:`cube.shared_chunks`). A shard found
    missing is checked, once per shard in ``absent`` (a query's, or a reader's ``cache.absent``), against its block's
    manifest (lost data) and, in the hot buffer, the ledger (the version expired meanwhile):
    :func:`cube.manifest.confirm_absent`."""
    state = version.tiles[tile]
    parts = []
    for hot in kinds:
        length = state.length(hot)
        arr = sized_view(arrays[(band.resolution, band.name, hot)], length)
        times = np.array([h.slot for h in state.hot] if hot else range(length), dtype=np.int64)
        parts.append(_Window(arr, times, rows, cols, hot=hot, indexes=None if cache is None else cache.indexes,
                             on_missing=_ConfirmAbsent(store, version, absent), sharing=sharing))
    return parts


def _grid_chunks(start: int, stop: int, size: int) -> tuple[int, ...]:
    """Lengths of the pieces of ``start:stop`` cut at multiples of ``size`` (the Zarr chunk edges)."""
    edges = [start, *range((start // size + 1) * size, stop, size), stop]
    return tuple(b - a for a, b in itertools.pairwise(edges) if b > a)


def _lazy(part: _Window, *, name: str, whole: bool) -> da.Array:
    """One part of a band as dask (``whole``: one dask chunk per time chunk, so one Zarr call fetches all
    chunks of a time block concurrently)."""
    ct, cy, cx = part.array.chunks
    rows, cols = part.rows, part.cols
    time_chunks = (1,) * len(part.times) if part.hot else _grid_chunks(0, len(part.times), ct)
    chunks = (time_chunks, _grid_chunks(rows.start, rows.stop, cy), _grid_chunks(cols.start, cols.stop, cx))
    if whole:  # storage chunks in time, so a run of dates still reads only its chunks
        chunks = (chunks[0], *((sum(c),) if sum(c) else () for c in chunks[1:]))
    kind = ("hot" if part.hot else "cold") + ("-whole" if whole else "")
    name = f"{name}-{kind}-{rows.start}-{rows.stop}-{cols.start}-{cols.stop}"
    return da.from_array(part, chunks=chunks, lock=False, fancy=False, name=name, asarray=False,
                         meta=np.empty((0, 0, 0), dtype=part.dtype))


def _native_window(window: TileWindow, resolution: int, native: int) -> tuple[slice, slice, int, int, int]:
    """Rows/cols of ``window`` on the ``native`` grid, and how to map them back (factor, offsets)."""
    a = window.geobox.affine
    grid = TileGrid.from_id(window.tile)
    r0 = round((grid.uly - a.f) / resolution)
    c0 = round((a.c - grid.ulx) / resolution)
    h, w = window.shape
    if native >= resolution:  # coarser storage: repeat
        k = native // resolution
        return slice(r0 // k, -(-(r0 + h) // k)), slice(c0 // k, -(-(c0 + w) // k)), k, r0 % k, c0 % k
    k = resolution // native  # finer storage: average k x k
    return slice(r0 * k, (r0 + h) * k), slice(c0 * k, (c0 + w) * k), -k, 0, 0


def band_array(store: Store, version: CubeVersion, window: TileWindow, band: BandSpec, kinds: tuple[bool, ...],
                order: np.ndarray, arrays: Mapping[ArrayKey, zarr.Array], resolution: int, *, decode: bool, token: str,
                whole: bool, absent: AbsentShards, cache: ArrayCache | None) -> da.Array:
    rows, cols, k, dr, dc = _native_window(window, resolution, band.resolution)
    n_native = round(TILE_SIZE_M / band.resolution)
    rows, cols = slice(rows.start, min(rows.stop, n_native)), slice(cols.start, min(cols.stop, n_native))
    name = f"cardcube-{token}-{window.tile}-{band.name}"
    parts = [_lazy(part, name=name, whole=whole)
             for part in _parts(store, version, window.tile, band, rows, cols, kinds, arrays, absent, cache)]
    data = da.concatenate(parts, axis=0) if len(parts) > 1 else parts[0]
    if not np.array_equal(order, np.arange(data.shape[0])):  # a time range, or dates that arrived out of order
        # each run of consecutive stored dates a slice, which keeps the stored chunks: a fancy index was rechunked
        # evenly by dask (2 dates a chunk where the cube stores 4, each stored chunk read by two tasks)
        runs = np.split(order, np.flatnonzero(np.diff(order) != 1) + 1) if order.size else []
        pieces = [data[int(r[0]):int(r[-1]) + 1] for r in runs]
        data = (pieces[0] if len(pieces) == 1 else da.concatenate(pieces, axis=0)) if pieces else data[:0]
    if decode and not band.is_flag:
        nodata = np.nan if band.nodata is None else band.nodata  # decoded in one float32 array a chunk
        data = data.map_blocks(partial(unpack, nodata=nodata, scale=band.scale, offset=band.offset, dtype=np.float32),
                               dtype=np.float32)
    if k > 1:
        h, w = window.shape
        data = da.repeat(da.repeat(data, k, axis=1), k, axis=2)[:, dr:dr + h, dc:dc + w]
    elif k < 0:
        if band.is_flag:
            raise InvalidRequestError(f"{band.name} is a classification layer; it cannot be averaged to {resolution} m")
        stored = not decode and not (isinstance(band.nodata, float) and math.isnan(band.nodata))
        if stored:  # stored integers: their nodata is no value to average in (0 made a 2x2 mean half as bright)
            data = da.where(data != band.nodata, data.astype("float32"), np.nan)
        data = da.coarsen(_mean_of_valid, data.astype("float32"), {1: -k, 2: -k}, trim_excess=True)
        if stored:
            data = da.where(da.isnan(data), np.float32(band.nodata), data)
    return data


def _mean_of_valid(values: np.ndarray, axis: tuple[int, ...] | None = None) -> np.ndarray:
    """``np.nanmean`` (the same float32 sums and division), NaN where a block holds no valid value without numpy's
    "Mean of empty slice" RuntimeWarning: every 20 m read of a 10 m band with nodata printed it from dask's threads.
    ``np.errstate`` is per thread, where ``warnings.catch_warnings`` would change every thread's filters. ``axis``
    None: over all (dask calls it so on an empty array, for the result's type)."""
    total = np.asarray(np.nansum(values, axis=axis))  # over all: a scalar, no array to divide into
    count = np.count_nonzero(~np.isnan(values), axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):  # 0 / 0: NaN, a block without data
        return np.true_divide(total, count, out=total, casting="unsafe")


def band_attrs(band: BandSpec, *, decode: bool) -> dict[str, Any]:
    attrs: dict[str, Any] = {"long_name": band.long_name, "units": band.units, "native_resolution": band.resolution}
    if band.is_flag:
        attrs.update(flag_values=list(band.flag_values), flag_meanings=" ".join(band.flag_meanings), nodata=band.nodata)
    elif not decode:  # CF packing: xarray's decode_cf and a netCDF or Zarr copy read back NaN for nodata, not -0.1
        attrs.update(scale_factor=band.scale, add_offset=band.offset, nodata=band.nodata, _FillValue=band.nodata)
    return attrs


@dataclass(frozen=True, eq=False)
class BandReader:
    """One band of one tile over a pixel window at its native resolution, read run of dates by run of dates
    in the Dataset's time order, straight through :func:`cube.shard_reader.read_window` with no dask graph:
    for a worker that owns its window and reads it whole (extraction)."""

    parts: tuple[_Window, ...]  # the cold and/or hot parts holding its dates, in that order
    order: np.ndarray  # each date of the Dataset as a position in the parts, one after the other
    coords: Mapping[str, np.ndarray]  # the Dataset's coordinates along time (time, platform, ...)
    attrs: Mapping[str, Any]  # the variable's attributes, stored values (CF packing, flags)

    @classmethod
    def open(cls, store: Store, version: CubeVersion, tile: str, windows: Mapping[str, tuple[slice, slice]], *,
             time: TimeSelection = None, sharing: Mapping[str, ChunkSharing] | None = None) -> dict[str, BandReader]:
        """A reader of each band of ``windows`` (name: rows and cols of its native grid) of ``tile``, dates
        within ``time``: one time order for all, and every array's metadata fetched at once. ``sharing``: per band,
        the decoded chunks its window shares with other readers' (:mod:`cube.shared_chunks`)."""
        bands = [version.spec.band(name) for name in windows]
        acqs, kinds, order, arrays = dates_and_arrays(store, version, tile, bands, parse_time_selection(time))
        coords = acquisition_columns(acqs)
        absent = AbsentShards(1024)  # the bands' missing shards, looked up once for all
        sharing = sharing or {}
        return {b.name: cls(tuple(_parts(store, version, tile, b, *windows[b.name], kinds, arrays, absent,
                                         sharing=sharing.get(b.name))), order, coords, band_attrs(b, decode=False))
                for b in bands}

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.order.size, *self.parts[0].shape[1:]) if self.parts else (0, 0, 0)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.parts[0].dtype) if self.parts else np.dtype(np.uint8)

    def read(self, dates: slice, *, out: np.ndarray | None = None) -> np.ndarray:
        """The stored values of the Dataset's dates ``dates``: (time, rows, cols), into ``out`` if given."""
        wanted = self.order[dates]
        if out is None:
            out = np.empty((wanted.size, *self.shape[1:]), dtype=self.dtype)
        start = 0
        for part in self.parts:
            mine = np.flatnonzero((wanted >= start) & (wanted < start + len(part.times)))
            if mine.size and mine[-1] - mine[0] + 1 == mine.size:  # consecutive (the usual case): read in place
                a, b = mine[0], mine[-1] + 1
                part.read(wanted[a:b] - start, out=out[a:b])
            elif mine.size:
                out[mine] = part.read(wanted[mine] - start)
            start += len(part.times)
        return out
