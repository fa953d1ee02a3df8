"""``open_cube()``: a lazy, dask-backed xarray Dataset over the committed cube tiles.

The Dataset is assembled from the ledger version being read (latest, or ``as_of``): each band's
time-first ("cold") array sliced to the committed length, joined with the live hot-buffer slots, sorted
by time. Dask chunks are the Zarr inner chunks, so computing a small region reads exactly the chunks
that intersect it. Bands stored at 20 m are repeated 2x2 onto the 10 m grid when the Dataset is at
10 m (nearest neighbour, exact: no values are invented); at 20 m, 10 m bands are 2x2 means.
"""

from __future__ import annotations

import itertools
import logging
import math
import numbers
import os
import warnings
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache, partial
from typing import Any

import dask
import dask.array as da
import numpy as np
import odc.geo.xr  # noqa: F401  (registers the .odc accessor: ds.odc.geobox, .odc.reproject)
import pandas as pd
import rioxarray  # noqa: F401  (registers the .rio accessor)
import shapely
import xarray as xr
import zarr
from dask.base import tokenize
from odc.geo.geobox import GeoBox
from odc.geo.geom import Geometry
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry
from zarr.abc.store import Store

from cardcube.errors import (
    AreaOutsideCubeError,
    CorruptDocumentError,
    DateNotFoundError,
    InvalidRequestError,
    NoAcquisitionWarning,
    VersionNotFoundError,
)
from cardcube.grid import TILE_SIZE_M, TileGrid, tile_ids
from cardcube.query import TimeSelection, in_crs, in_time_range, in_time_selection, parse_time_selection, query_geometry
from cardcube.spec import BandSpec, CubeSpec
from cardcube.storage import StoreLike, open_store, store_endpoint, store_url
from catalog.route import ItemCache, select_tiles, tile_refs
from cube import layout
from cube.indices import bands_for, check_bands
from cube.ledger import (
    Acquisition,
    CubeVersion,
    TileState,
    acquisition_columns,
    data_footprint,
    held_share,
    read_version,
    scene_area,
)
from cube.manifest import AbsentShards, confirm_absent
from cube.mosaic import mosaic
from cube.pass_dates import PASS_GAP, first_times
from cube.shard_reader import read_window
from cube.shared_chunks import ChunkSharing
from cube.stats import unpack
from cube.tile_arrays import ArrayCache, ArrayKey, open_arrays, sized_view

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TileWindow:
    """The part of one tile a query needs: pixel rows/cols at the Dataset's resolution."""

    tile: str
    geobox: GeoBox  # the window's grid

    @property
    def shape(self) -> tuple[int, int]:
        return self.geobox.shape


READ_THREADS = 16  # dask threads for an interactive read: requests in flight, not cores (little to decode)


@cache
def _read_pool(pid: int) -> ThreadPoolExecutor:
    """The threads of the process's interactive reads, shared. Given only a number of threads, dask's threaded
    scheduler keeps a pool of them for each thread that computes, for as long as that thread lives: the REST
    service, answering from 40 threads, held 40 pools, 500 idle threads after a load test. One per process
    (``pid``): a forked child inherits the pool without its threads, and would wait on it for ever."""
    return ThreadPoolExecutor(READ_THREADS, thread_name_prefix="cardcube-read")


def compute_reads(*collections: Any) -> tuple[Any, ...]:
    """``dask.compute`` for the small reads of an interactive query (a parcel's season, a chip). With dask's
    default local scheduler, on ``READ_THREADS`` threads shared by every such read of the process, so that on S3
    the window's chunks are fetched at once rather than a core's worth per round trip; a scheduler the user
    configured is used as it is. The reads' tasks never compute in turn, so sharing the threads cannot deadlock."""
    if dask.config.get("scheduler", None) is None:
        return dask.compute(*collections, scheduler="threads", pool=_read_pool(os.getpid()))
    return dask.compute(*collections)


def _windows(version: CubeVersion, area, crs, resolution: int, tiles: Sequence[str] | str | None,
             time: tuple | frozenset = (None, None), *, order: str = "area") -> list[TileWindow]:
    """Tile windows covering the query. A tile is read alone when it holds the area's data alone: its square holds
    the area and, for every date (within ``time``) on which another tile of its UTM zone has data in the area, it
    has that pass too, with data over all of the other's there (:func:`holds_passes`). Else a mosaic of the tiles
    with data in the area, the one holding most of it first. A tile's square is no measure of its data: tiles
    ingested for part of an area, scenes dropped by a cloud filter, Sentinel-1 pieces. No area given: the area is
    where the tiles hold data (the union of their footprints), so every tile's data is in the Dataset. ``order``
    ``"given"``: a mosaic of ``tiles`` with data in the area, in their order, whatever the area; ``"first"``: the
    same, or the first alone where it holds the area's data on every pass the others have there (see
    :func:`read_cube`)."""
    names = sorted(version.tiles) if tiles is None else tile_ids(tiles)
    unknown = [t for t in names if t not in version.tiles]
    if unknown:
        raise InvalidRequestError(f"the {version.collection} cube has no tile {', '.join(unknown)}; "
                                  f"tiles: {', '.join(sorted(version.tiles))}")
    if area[0] is None and area[1] is None and names:
        area, crs = (None, _held(version, names)), None
    out: list[tuple[TileWindow, bool, BaseGeometry, float]] = []
    for name in names:
        grid = TileGrid.from_id(name)
        full = grid.geobox(resolution)
        geom = in_crs(query_geometry(*area, crs, default_crs=grid.crs), grid.crs)
        tile_poly = box(*full.boundingbox)
        if geom.is_empty or not geom.intersects(tile_poly):
            continue
        inside = tile_poly.contains(geom)
        minx, miny, maxx, maxy = geom.intersection(tile_poly).bounds
        a = full.affine
        c0, c1 = math.floor((minx - a.c) / a.a), math.ceil((maxx - a.c) / a.a)
        r0, r1 = math.floor((a.f - maxy) / -a.e), math.ceil((a.f - miny) / -a.e)
        r0, c0 = max(r0, 0), max(c0, 0)
        r1, c1 = min(max(r1, r0 + 1), full.shape[0]), min(max(c1, c0 + 1), full.shape[1])
        share = held_share(data_footprint(version, name), geom)
        out.append((TileWindow(name, full[r0:r1, c0:c1]), inside, geom, share))
    if order != "area" and (ordered := [o for o in out if o[3] > 0]):
        first = ordered[0]
        if order == "first" and first[1] and all(holds_passes(version, first[0].tile, o[0].tile, first[2], time)
                                                 for o in ordered[1:]):
            return [first[0]]  # as the mosaic would be: the others hold nothing it has not
        return [w for w, *_ in ordered]
    with_data = sorted((o for o in out if o[3] > 0), key=lambda o: -o[3])  # stable: by name among equals
    if not with_data:  # nodata only: open_cube says so
        return [w for w, *_ in out]
    whole = [o for o in with_data if o[1]]
    if not whole:
        return [w for w, *_ in with_data]
    best, crs_best = whole[0], TileGrid.from_id(whole[0][0].tile).crs
    if best[3] < 1 and (others := [o[0].tile for o in with_data if TileGrid.from_id(o[0].tile).crs != crs_best]):
        # 32ULD's square holds 31UGU's data near the zone edge: that data was left out without a word
        raise InvalidRequestError(f"the area holds data of tiles of different UTM zones ({best[0].tile}; "
                                  f"{', '.join(others)}), which make no mosaic: query each zone separately "
                                  f"(tiles='{best[0].tile}' or tiles='{others[0]}', or a bbox within one zone)")
    zone = [o for o in with_data if o is not best and TileGrid.from_id(o[0].tile).crs == crs_best]
    if all(holds_passes(version, best[0].tile, o[0].tile, best[2], time) for o in zone):
        return [best[0]]
    return [best[0], *(w for w, *_ in zone)]


def pass_key(a: Acquisition) -> tuple:
    """What the dates of one pass share on every tile: platform, relative orbit and orbit direction (their times
    differ by up to :data:`PASS_GAP`, each tile's product its own sensing time)."""
    return (a.platform, a.relative_orbit, a.orbit_state)


def holds_passes(version: CubeVersion, tile: str, other: str, area: BaseGeometry, time: tuple | frozenset) -> bool:
    """Whether ``tile`` has every date (within ``time``) on which ``other`` (of the same UTM zone) has data in
    ``area``, the same pass (platform, relative orbit, orbit direction, within :data:`PASS_GAP_S`), with data over
    all of the other's in the area: then reading ``tile`` alone misses nothing of ``other``'s."""
    return not bool(lacks_passes(passes_lacking(version, tile, other, time), np.array([area], dtype=object))[0])


def passes_lacking(version: CubeVersion, tile: str, other: str, time: tuple | frozenset) -> BaseGeometry:
    """Where ``other`` (of the same UTM zone as ``tile``) has data (within ``time``) on a pass ``tile`` has no
    data of there: the union of its scenes' areas (:func:`cube.ledger.scene_area`) less those of ``tile``'s scenes
    of the same pass holding every slice ``other``'s date holds (see :func:`holds_passes`); empty when ``tile``
    holds all ``other`` holds. An area holds more than the data (a window's box, a polygon's margin), so a date of
    ``tile`` lacking a slice of ``other``'s (a slice refused there) takes nothing away: where its box or margin lies
    over that slice's data, ``other``'s pixels were never read. A pass ``tile`` holds at a time beyond ``time`` is
    not lacking: read alone, its date is ``tile``'s own time (a pass across midnight, ``other``'s time within the
    range and its own the day after, was read from both at ``other``'s time, and again from ``tile`` alone in the
    range of the day after). Exact times (a frozenset) name a pass by any of its times (:func:`pass_selection`):
    ``tile`` holding it at a time not named lacks it, and the read across the tiles gives it."""
    mine: dict[tuple, list[tuple[np.datetime64, tuple[int, frozenset[str]], BaseGeometry]]] = {}
    for a in _time_order(version.tiles[tile], time if isinstance(time, frozenset) else (None, None))[0]:
        mine.setdefault(pass_key(a), []).append((a.datetime64, _slices(version, a.scene_id),
                                                 scene_area(version, tile, a.scene_id)))
    parts = []
    for a in _time_order(version.tiles[other], time)[0]:
        theirs, (n, items) = scene_area(version, other, a.scene_id), _slices(version, a.scene_id)
        same = [area for t, (held, held_items), area in mine.get(pass_key(a), [])
                if abs(t - a.datetime64) <= PASS_GAP and held >= n and items <= held_items]
        parts.append(theirs.difference(shapely.union_all(same)) if same else theirs)
    return shapely.union_all(parts) if parts else shapely.Polygon()


def _slices(version: CubeVersion, scene_id: str) -> tuple[int, frozenset[str]]:
    """How many slices of its pass a date holds (:mod:`ingest.passes`), and the split STAC items they are pieces of
    (the same on every tile; a tile's own products are named by tile, and each has its own sensing time)."""
    record = version.scenes[scene_id]
    return 1 + len(record.parts), frozenset(record.items)


def lacks_passes(lacking: BaseGeometry, areas: np.ndarray) -> np.ndarray:
    """For each of ``areas``, whether it meets ``lacking`` (:func:`passes_lacking`): over a surface for an area,
    at all for a point or a line."""
    if lacking.is_empty:
        return np.zeros(len(areas), dtype=bool)
    common = shapely.intersection(lacking, areas)
    return np.where(shapely.area(areas) > 0, shapely.area(common) > 0, ~shapely.is_empty(common))


def _held(version: CubeVersion, tiles: Sequence[str]) -> Geometry:
    """Where ``tiles`` hold data in ``version``: the union of their footprints, in the first tile's CRS (a tile
    without scenes adds nothing; none with any: an empty area, so no window)."""
    crs = TileGrid.from_id(tiles[0]).crs
    parts = [in_crs(Geometry(data_footprint(version, t), TileGrid.from_id(t).crs), crs) for t in tiles]
    return Geometry(shapely.union_all([p for p in parts if not p.is_empty]), crs)


def _route(store: Store, version: CubeVersion, *, bbox, geometry, crs, items: ItemCache | None) -> list[str] | None:
    """Tiles whose footprint meets the query, from the static STAC catalog (no database; parsed items kept in
    ``items``).

    Tiles are never removed, so the tiles of an earlier version (``as_of``) are those of the catalog that
    this version's ledger record holds. Tiles the catalog does not list yet (an ingest run without it)
    stay candidates, as every tile of a cube written without a catalog (None).
    """
    if bbox is None and geometry is None:
        return None
    # without crs, a bbox or plain geometry is in "the tile CRS" (the collection's tiles'); a Geometry keeps its own
    tile_crs = TileGrid.from_id(next(iter(sorted(version.tiles)))).crs if version.tiles else "EPSG:4326"
    try:
        refs = tile_refs(store, version.collection, cache=items)
    except FileNotFoundError:
        return None
    except CorruptDocumentError as exc:  # the catalog routes, the ledger holds the truth: every tile a candidate
        log.warning("%s; reading without it", exc)
        return None
    found = select_tiles(refs, bbox=bbox, geometry=geometry, crs=crs, default_crs=tile_crs)
    unlisted = set(version.tiles) - {r.tile for r in refs}
    return sorted({r.tile for r in found if r.tile in version.tiles} | unlisted)


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


def _grid_chunks(start: int, stop: int, size: int) -> tuple[int, ...]:
    """Lengths of the pieces of ``start:stop`` cut at multiples of ``size`` (the Zarr chunk edges)."""
    edges = [start, *range((start // size + 1) * size, stop, size), stop]
    return tuple(b - a for a, b in itertools.pairwise(edges) if b > a)


def _kinds(state: TileState, order: np.ndarray) -> tuple[tuple[bool, ...], np.ndarray]:
    """The parts of a tile (False: its cold dates, True: its hot slots) holding the dates that ``order`` picks
    out of the stored ones (cold, then hot), and ``order`` over those parts alone: a query opens and reads
    no part it has no date in (a chip of a cold date never touches the hot buffer)."""
    n_cold = len(state.cold)
    kinds = tuple(hot for hot, used in ((False, (order < n_cold).any()), (True, (order >= n_cold).any())) if used)
    if not kinds:  # no date selected: the first part that exists gives the (empty) array its shape
        kinds = (False,) if state.cold else (True,)
    return kinds, order if False in kinds else order - n_cold


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
        acqs, kinds, order, arrays = _dates_and_arrays(store, version, tile, bands, parse_time_selection(time))
        coords = acquisition_columns(acqs)
        absent = AbsentShards(1024)  # the bands' missing shards, looked up once for all
        sharing = sharing or {}
        return {b.name: cls(tuple(_parts(store, version, tile, b, *windows[b.name], kinds, arrays, absent,
                                         sharing=sharing.get(b.name))), order, coords, _band_attrs(b, decode=False))
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


def _band_array(store: Store, version: CubeVersion, window: TileWindow, band: BandSpec, kinds: tuple[bool, ...],
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


def _acquisition_coords(acqs: Sequence[Acquisition]) -> dict[str, Any]:
    return {name: ("time", values) for name, values in acquisition_columns(acqs).items()}


def _band_attrs(band: BandSpec, *, decode: bool) -> dict[str, Any]:
    attrs: dict[str, Any] = {"long_name": band.long_name, "units": band.units, "native_resolution": band.resolution}
    if band.is_flag:
        attrs.update(flag_values=list(band.flag_values), flag_meanings=" ".join(band.flag_meanings), nodata=band.nodata)
    elif not decode:  # CF packing: xarray's decode_cf and a netCDF or Zarr copy read back NaN for nodata, not -0.1
        attrs.update(scale_factor=band.scale, add_offset=band.offset, nodata=band.nodata, _FillValue=band.nodata)
    return attrs


def _time_order(state: TileState, time: tuple | frozenset) -> tuple[list[Acquisition], np.ndarray]:
    """A tile's acquisitions within ``time`` (bounds or None, or a set of exact times) in time order, and each
    one's position in the stored dates (the cold dates, then the hot slots)."""
    acqs = [*state.cold, *(h.acquisition for h in state.hot)]
    times = np.array([a.datetime64 for a in acqs], dtype="datetime64[ns]")
    order = np.argsort(times, kind="stable")
    order = order[in_time_selection(times[order], time)]
    return [acqs[i] for i in order], order


def pass_selection(version: CubeVersion, tiles: Sequence[str], time: tuple | frozenset) -> tuple | frozenset:
    """``time`` (of :func:`parse_time_selection`) for ``tiles`` read together: a pass is selected on each of them, at
    that tile's own time, where the date :func:`cube.mosaic.pass_times` makes of it (its earliest time, as the
    mosaic and a time series give it) lies within a range, or where one of its times is one of a set of exact
    times (:func:`first_times` groups them: no other date of a tile holding two of one pass, a pass chained over
    tiles whole). A pass's tiles carry their own sensing times, seconds apart: a time series' time of a mosaic date
    selected that date on one tile alone, and the other tile's pixels of it came out as masked; and a pass whose
    tiles' times lie across a range's start (one before midnight, the other after) was read as a date before that
    start, in the ranges on both sides of it (and unlike a Dataset of the mosaic narrowed by the range). ``time``
    itself where it selects every pass whole already."""
    if (isinstance(time, tuple) and time == (None, None)) or len(tiles) < 2:
        return time
    acqs = [version.tiles[tile].acquisitions for tile in tiles]
    times = [np.array([a.datetime64 for a in tile], dtype="datetime64[ns]") for tile in acqs]
    joined = first_times(times, [[pass_key(a) for a in tile] for tile in acqs])  # each date's mosaic date
    picked = [in_time_selection(t, time) for t in times]
    named = picked if isinstance(time, frozenset) else [in_time_selection(j, time) for j in joined]
    asked = {first for j, p in zip(joined, named, strict=True) for first in j[p].tolist()}
    kept = {t for ts, j in zip(times, joined, strict=True) for t, first in zip(ts.tolist(), j.tolist(), strict=True)
            if first in asked}
    held = {t for ts, p in zip(times, picked, strict=True) for t in ts[p].tolist()}
    return time if kept == held else frozenset(np.datetime64(t, "ns") for t in kept)


def dated_elsewhere(version: CubeVersion, tiles: Sequence[str], time: TimeSelection) -> str:
    """Why a read of ``tiles`` together (a mosaic) has no date of acquisitions they hold within the range ``time``:
    each is of a pass whose date, its earliest time on them (:func:`pass_selection`), lies outside the range; as a
    sentence naming them and those dates ("" where there are none, where the read has a date within the range, its
    parcels' rows: nothing is missing then, the pass is a date of the range beside it; or ``time`` is exact
    times)."""
    selection = parse_time_selection(time)
    if len(tiles) < 2 or isinstance(selection, frozenset):
        return ""
    acqs = [version.tiles[tile].acquisitions for tile in tiles]
    joined = first_times([np.array([a.datetime64 for a in tile], dtype="datetime64[ns]") for tile in acqs],
                     [[pass_key(a) for a in tile] for tile in acqs])
    if any(in_time_range(dates, selection).any() for dates in joined):  # a month's range: each parcel a note
        return ""
    outside = sorted({(a.time, f"{pd.Timestamp(first):%Y-%m-%dT%H:%M:%SZ}")
                      for tile, dates in zip(acqs, joined, strict=True) for a, first in zip(tile, dates, strict=True)
                      if in_time_range(np.array([a.datetime64]), selection)[0]
                      and not in_time_range(np.array([first]), selection)[0]})
    if not outside:
        return ""
    listed = "; ".join(f"{t}, of the pass dated {first}" for t, first in outside)
    return (f"tile(s) {'+'.join(tiles)}, read together, hold acquisitions within the time range {time} of passes "
            f"dated outside it (a pass's date is its earliest time on them), which give no date: {listed}; ask for "
            f"the pass's date")


def tile_dates(state: TileState, time: TimeSelection = None) -> list[Acquisition]:
    """The acquisitions of a tile (at one version) that ``time`` selects, in time order."""
    return _time_order(state, parse_time_selection(time))[0]


def as_read(ds: xr.Dataset, *, as_of: int | CubeVersion | None, time: TimeSelection) -> tuple[xr.Dataset, str]:
    """A Dataset of :func:`open_cube` passed in place of a cube location (``parcel_timeseries``, ``chip``): the
    dates ``time`` selects, as :func:`open_cube` selects them from the cube, and the message for a ``time``
    selecting none of them ("" otherwise). An ``as_of`` other than the version the Dataset was read at is an
    error: it would be ignored without a word."""
    wanted = as_of.version if isinstance(as_of, CubeVersion) else as_of
    held = ds.attrs.get("cardcube:version")
    if isinstance(as_of, CubeVersion):  # the same number of another cube or collection is no other version of the same
        read = (ds.attrs.get("cardcube:collection"), ds.attrs.get("cardcube:cube"))
        given = (as_of.collection, as_of.cube or read[1])
        if None not in read and given != read:
            raise InvalidRequestError(f"the Dataset was read from the {read[0]} cube at {read[1]}, and as_of is a "
                                      f"version of the {given[0]} cube at {given[1]}: pass a version of the "
                                      "Dataset's cube, or none")
    if wanted is not None and held is not None and wanted != held:
        raise InvalidRequestError(f"the Dataset was read at version {held} of the cube, not {wanted}: open it with "
                                  f"open_cube(..., as_of={wanted}), or pass the cube's location")
    if time is None:
        return ds, ""
    times = ds["time"].values
    keep = in_time_selection(times, parse_time_selection(time))
    if keep.any():
        return ds.isel(time=np.flatnonzero(keep)), ""
    dates = pd.DatetimeIndex(times)
    return ds.isel(time=[]), f"no date of the Dataset falls within the time range {time}" + (
        f"; its dates run from {dates.min():%Y-%m-%d} to {dates.max():%Y-%m-%d}" if len(dates) else "")


def date_span(version: CubeVersion) -> str:
    """The dates ``version`` holds, for a message: "version 3 of the s2 cube holds dates from ... to ..."."""
    name = f"version {version.version} of the {version.collection} cube"
    if version.time_range is None:
        return f"{name} holds no acquisition"
    first, last = (t[:10] for t in version.time_range)
    return f"{name} holds dates from {first} to {last}"


def check_acquisitions(version: CubeVersion, time: TimeSelection) -> None:
    """:class:`DateNotFoundError` naming the cube's dates when no acquisition of ``version`` falls within
    ``time``: an empty answer would look like missing data."""
    if not any(tile_dates(state, time) for state in version.tiles.values()):
        within = "" if time is None else f" within the time range {time}"  # none at all: "range None" said nothing
        raise DateNotFoundError(f"no acquisition{within}: {date_span(version)}")


def _dates_and_arrays(store: Store, version: CubeVersion, tile: str, bands: Sequence[BandSpec], time: tuple,
                      cache: ArrayCache | None = None
                      ) -> tuple[list[Acquisition], tuple[bool, ...], np.ndarray, dict[ArrayKey, zarr.Array]]:
    """A tile's dates within ``time`` in time order, the parts holding them (:func:`_kinds`), each date's
    position in those parts, and the arrays of ``bands`` in those parts, opened together."""
    state = version.tiles[tile]
    acqs, order = _time_order(state, time)
    kinds, order = _kinds(state, order)
    arrays = open_arrays(store, version.collection, tile, [(b.resolution, b.name, hot) for b in bands for hot in kinds],
                         cache=cache)
    return acqs, kinds, order, arrays


def _tile_dataset(store: Store, version: CubeVersion, window: TileWindow, bands: Sequence[BandSpec],
                  resolution: int, time: tuple, *, decode: bool, token: str, whole: bool,
                  cache: ArrayCache | None) -> xr.Dataset:
    sorted_acqs, kinds, order, arrays = _dates_and_arrays(store, version, window.tile, bands, time, cache)
    absent = AbsentShards(1024) if cache is None else cache.absent  # this query's lookups, or a reader's
    data_vars = {
        b.name: (("time", "y", "x"), _band_array(store, version, window, b, kinds, order, arrays, resolution,
                                                 decode=decode, token=token, whole=whole, absent=absent, cache=cache),
                 _band_attrs(b, decode=decode))
        for b in bands
    }
    ds = xr.Dataset(data_vars, coords=_acquisition_coords(sorted_acqs))
    ds = ds.assign_coords(y=window.geobox.coordinates["y"].values, x=window.geobox.coordinates["x"].values)
    ds["y"].attrs.update(units="metre", standard_name="projection_y_coordinate")
    ds["x"].attrs.update(units="metre", standard_name="projection_x_coordinate")
    ds = ds.rio.write_crs(window.geobox.crs.to_wkt()).rio.write_transform(window.geobox.affine)
    return ds.assign_coords(tile=("time", np.full(len(order), window.tile, dtype=object)))


def _bounds_text(footprint: BaseGeometry, tile_crs: Any, crs: Any) -> str:
    """The bounds of a tile's data in its CRS, and in ``crs`` (the query's) where that is another: an area asked
    for in lon/lat is compared with the data in lon/lat, not only in the tile's metres."""
    text = f"({', '.join(f'{v:.0f}' for v in footprint.bounds)}) in {tile_crs}"
    data = Geometry(footprint, tile_crs)
    if crs is None or data.crs == crs:
        return text
    theirs = data.to_crs(crs).boundingbox
    digits = 5 if theirs.crs.geographic else 0
    return f"{text}, ({', '.join(f'{v:.{digits}f}' for v in theirs)}) in {crs}"


def open_cube(
    cube: StoreLike,
    collection: str = "s2",
    *,
    bbox: tuple[float, float, float, float] | None = None,
    geometry: BaseGeometry | Mapping | None = None,
    crs: Any = None,
    time: TimeSelection = None,
    bands: Sequence[str] | str | None = None,
    as_of: int | CubeVersion | None = None,
    resolution: int | None = None,
    decode: bool = True,
    tiles: Sequence[str] | str | None = None,
    chunks: str = "storage",
    storage_options: Mapping[str, Any] | None = None,
    cache: ArrayCache | None = None,
    item_cache: ItemCache | None = None,
) -> xr.Dataset:
    """A lazy Dataset of the ``collection`` cube at ``cube`` (a folder, ``s3://`` URL, zarr Store, or the
    cube's ``catalog.json``); the tiles a query needs are found through the STAC catalog.

    ``bbox``/``geometry`` (in ``crs``, default the tile CRS; use ``crs="EPSG:4326"`` for lon/lat; a GeoDataFrame
    of parcels as ``geometry`` is the union of its polygons, in its own CRS, a ``crs`` naming another refused;
    neither: every tile's data, the union of their footprints) and
    ``time`` (``(start, end)``, ``"start/end"`` or a frozenset of acquisition times) restrict what is read;
    ``bands`` (stored bands, in any case: ``b04``; a list or ``"B04,B08"``) default to all.
    ``as_of`` reads the cube as committed by that version (a number, or the ``CubeVersion`` a caller has
    read already, which saves reading the ledger again). ``decode`` turns stored integers into
    physical values (float32, NaN for nodata); the SCL layer stays integer codes. ``tiles`` (ids, or one string
    ``"31UFU,31UGU"``) reads those tiles only, in place of routing through the catalog: an area reaching beyond
    them is cut to them (the Dataset is then narrower than the area asked for). The Dataset's attrs
    record the collection, the version read and the cube location. ``chunks="storage"`` gives one dask
    chunk per Zarr chunk (for lazy work on large areas); ``"window"`` one per band and time chunk over the
    whole query area, read by one Zarr call that fetches its chunks concurrently (far fewer dask tasks,
    for windows that fit in memory). ``cache``: arrays and shard indexes kept across queries by a
    long-running reader (:class:`cube.tile_arrays.ArrayCache`), so a query fetches chunks only; ``item_cache``:
    the catalog's tile items kept by a caller that routes query after query (:class:`catalog.route.ItemCache`), so
    routing reads the collection document only.
    """
    store = open_store(layout.cube_root(cube), storage_options=storage_options, read_only=True)
    version = read_version(store, collection, as_of)
    ds = read_cube(store, version, bbox=bbox, geometry=geometry, crs=crs, time=time, bands=bands,
                   resolution=resolution, decode=decode, tiles=tiles, chunks=chunks, cache=cache, item_cache=item_cache)
    if not ds.sizes["time"]:
        warnings.warn(_no_dates(version, ds.attrs["cardcube:tiles"].split(","), time), NoAcquisitionWarning,
                      stacklevel=2)
    return ds


def read_cube(
    store: Store,
    version: CubeVersion,
    *,
    bbox: tuple[float, float, float, float] | None = None,
    geometry: BaseGeometry | Mapping | None = None,
    crs: Any = None,
    time: TimeSelection = None,
    bands: Sequence[str] | str | None = None,
    resolution: int | None = None,
    decode: bool = True,
    tiles: Sequence[str] | str | None = None,
    chunks: str = "storage",
    cache: ArrayCache | None = None,
    item_cache: ItemCache | None = None,
    order: str = "area",
) -> xr.Dataset:
    """:func:`open_cube` of the ``store`` and ``version`` a reader holds already, without its warning of a Dataset of
    no dates: the readers built on it (time series, chips, extraction) say that their own way. ``order``: of the
    ``tiles`` given, ``"area"`` reads those the area chooses (the one holding most of it first, or it alone);
    ``"given"`` a mosaic of them in their order (a pixel the first has data at is the first's), each with data in
    the area, so that a parcel's pixels are those of the tiles :func:`cube.timeseries.assign_tiles` gives it,
    whatever parcels are read with it; ``"first"`` the same, but the first alone where it holds the area's data on
    every pass the others have there (the pixels of the mosaic, from one tile's reads)."""
    if chunks not in ("storage", "window"):
        raise InvalidRequestError(f"chunks must be 'storage' or 'window', not {chunks!r}")
    collection = version.collection
    spec: CubeSpec = version.spec
    names = list(spec.band_names) if bands is None else _stored(bands, spec)
    band_specs = [spec.band(n) for n in names]
    res = resolution or min(b.resolution for b in band_specs)
    if not isinstance(res, numbers.Real) or isinstance(res, bool):  # "10" was "10 m is not one of [10, 20]"
        raise InvalidRequestError(f"resolution {res!r} is no number of metres: give one of the cube's "
                                  f"{list(spec.resolutions)}, e.g. resolution={spec.resolutions[0]}")
    if res not in spec.resolutions:
        raise InvalidRequestError(f"resolution {res} m is not one of the cube's {list(spec.resolutions)}")
    res = int(res)  # 10.0 (a float the caller computed) was a TypeError deep in the window's slicing
    if tiles is None:
        tiles = _route(store, version, bbox=bbox, geometry=geometry, crs=crs, items=item_cache)
    elif not tile_ids(tiles):  # "" or []: was "the area ? does not intersect any tile", as if routed to none
        raise InvalidRequestError(f"no tile given (tiles={tiles!r}); the {collection} cube's tiles: "
                                  f"{', '.join(sorted(version.tiles))} (tiles=None routes the area through the "
                                  f"catalog)")
    if order not in ("area", "given", "first"):
        raise InvalidRequestError(f"order must be 'area', 'given' or 'first', not {order!r}")
    windows = _windows(version, (bbox, geometry), crs, res, tiles, parse_time_selection(time), order=order)
    if not windows:
        # the area's bounds in any form it came (a GeoJSON dict, a GeoDataFrame: they were "the area ?", no hint)
        asked = query_geometry(bbox, geometry, crs, default_crs=None)
        bounds = tuple(bbox) if bbox is not None else asked.geom.bounds if asked and not asked.geom.is_empty else None
        area = "(" + ", ".join(str(float(v)) for v in bounds) + ")" if bounds else "?"  # no np.float64(...)
        said = crs or (asked.crs if asked is not None and asked.crs is not None else None)
        minx, miny, maxx, maxy = map(float, bounds or (np.nan,) * 4)
        lonlat = said is None and -180 <= minx <= maxx <= 180 and -90 <= miny <= maxy <= 90  # metres of a tile are not
        raise AreaOutsideCubeError(f"the area {area} (in {said or 'the tile CRS'}) does not intersect any tile of the "
                                   f"{collection} cube (tiles: {', '.join(sorted(version.tiles))})"
                                   + ("; lon/lat? say so with crs='EPSG:4326'" if lonlat else ""))
    footprints = {w.tile: data_footprint(version, w.tile) for w in windows}
    if not any(footprints[w.tile].intersects(box(*w.geobox.boundingbox)) for w in windows):
        held = "; ".join(f"tile {t} has data over {_bounds_text(f, TileGrid.from_id(t).crs, crs)}"
                         for t, f in footprints.items() if not f.is_empty)
        raise AreaOutsideCubeError(f"the area holds no data of the {collection} cube: it lies within tile(s) "
                                   f"{', '.join(footprints)}, beside the scenes ingested ({held or 'none'}); a "
                                   f"Dataset of it would be nodata only")
    token = _dask_token(store, version)
    selection = pass_selection(version, [w.tile for w in windows], parse_time_selection(time))
    parts = [_tile_dataset(store, version, w, band_specs, res, selection, decode=decode, token=token,
                           whole=chunks == "window", cache=cache)
             for w in windows]
    ds = parts[0] if len(parts) == 1 else mosaic(parts, band_specs, whole=chunks == "window")
    for b in band_specs if decode else ():
        if not b.is_flag:  # NaN is the decoded nodata: rioxarray's nodata, and the fill of a netCDF or Zarr copy
            ds[b.name].encoding["_FillValue"] = np.float32(np.nan)
    ds.attrs.update({"cardcube:collection": collection, "cardcube:version": version.version,
                     "cardcube:cube": store_url(store), "cardcube:tiles": ",".join(w.tile for w in windows),
                     "title": spec.title})
    return ds


def _dask_token(store: Store, version: CubeVersion) -> str:
    """What names a Dataset's dask arrays: the same for the same data alone, as dask computes a key once and takes
    two graphs' arrays of one name for one array. The cube's location and version number named alike one bucket's
    path on two S3 endpoints (production and staging) and a cube made anew at the same place: the arrays of one
    Dataset were read for the other's (a persisted Dataset's pixels for a new one's, in a graph of both). The
    endpoint and the commit time of the version's data (:attr:`CubeVersion.data_tag`) tell them apart."""
    return tokenize(store_url(store), store_endpoint(store), version.data_tag)[:16]


def _no_dates(version: CubeVersion, tiles: Sequence[str], time: TimeSelection) -> str:
    """Why a Dataset of ``tiles`` has no date: none of the cube within ``time``, or none of these tiles (the
    cube's other tiles have some): a Dataset of no date would otherwise look like a cube without data."""
    within = "" if time is None else f" within the time range {time}"
    if elsewhere := dated_elsewhere(version, tiles, time):
        return f"{elsewhere}; the Dataset has no dates"
    if any(tile_dates(state, time) for state in version.tiles.values()):
        return f"no acquisition of tile(s) {', '.join(tiles)}{within}, though other tiles of the cube have some " \
               f"({date_span(version)}): the Dataset has no dates"
    return f"no acquisition{within}: {date_span(version)}; the Dataset has no dates"


def _stored(bands: Sequence[str] | str, spec: CubeSpec) -> list[str]:
    """The stored bands ``bands`` name, in any case (``b04`` is B04), as :func:`cube.indices.check_bands` reads
    them; an index is refused with how to add it, as the Dataset holds stored bands only."""
    names = check_bands(bands, spec.band_names)
    if derived := [b for b in names if b not in spec.band_names]:
        raise InvalidRequestError(f"{', '.join(derived)}: an index, not a stored band; open its bands "
                                  f"({', '.join(bands_for(derived))}) and add it with "
                                  f"ds.cardcube.indices({', '.join(map(repr, derived))})")
    return names


def pass_dates(version: CubeVersion) -> np.ndarray:
    """The distinct dates of ``version`` over all its tiles, a pass over several tiles once
    (:func:`cube.mosaic.pass_times`): what a user counts as the cube's acquisitions."""
    states = [version.tiles[t] for t in sorted(version.tiles)]
    times = [np.array([a.datetime64 for a in s.acquisitions], dtype="datetime64[ns]") for s in states]
    keys = [[pass_key(a) for a in s.acquisitions] for s in states]
    return np.unique(np.concatenate([np.empty(0, "datetime64[ns]"), *first_times(times, keys)]))
