"""The tasks of an extraction (:func:`cube.extract.extract`), planned before any is run: a tile's work units, the
batches of parcels read across tiles, the size of a unit, and the order the tasks run in.

A parcel's *home block* is the ``block`` x ``block`` square of the tile grid holding its top-left pixel; a work unit
(:class:`WorkUnit`) is one home block, its window stretched by the parcels crossing its edge, with the runs of dates
(along the stored time chunks: :func:`time_blocks`) whose file is not written yet (:func:`home_block_units`). A parcel
larger than a block is a unit of its own, read in shorter runs of dates. The parcels read across tiles go in batches
by tiles and squares of :data:`ACROSS_BATCH_M` (:class:`AcrossBatch`, :func:`batches_across_tiles`). Units that start
close by in the task list share the chunks they both read (:func:`with_neighbours`).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import shapely
from zarr.abc.store import Store

from cardcube.errors import InvalidRequestError, RequestTooLargeError
from cardcube.grid import TileGrid
from cardcube.spec import CubeSpec
from cube.dataset import read_cube
from cube.extraction_files import (
    MOSAIC,
    TIMESERIES,
    generation_tag,
    mosaic_batch,
    mosaic_key,
    mosaic_status,
    statistics_name,
)
from cube.ledger import CubeVersion
from cube.parcel_layer import ParcelLayer
from cube.parcels import ParcelSet
from cube.timeseries import ParcelStatus

if TYPE_CHECKING:
    from cube.extract_job import ExtractJob


MAX_UNIT_BYTES = 2 * 2**30  # stored values a work unit may hold (before its parcels stretch the window)
NEIGHBOURS_APART = 2  # units further apart in the task list decode the chunks they share each (with_neighbours)


def time_blocks(store: Store, collection: str, tile: str, name: str, version: CubeVersion, time: Any,
                size: int) -> tuple[list[slice], tuple[int, ...]]:
    """Runs of at most ``size`` dates of ``tile`` along the stored time chunks: whole chunks while they fit, a
    chunk longer than ``size`` cut in pieces (each decodes the chunk again: time spent for memory saved),
    and a short tail (the few dates of the hot buffer) read with the last run if the two hold at most
    :func:`_longest_run` dates, as each run has a fixed cost. Also the edges of the stored chunks among the dates
    (a cold block's 16, the hot buffer's one each), for :func:`time_chunks` to count the chunks a run reads."""
    ds = read_cube(store, version, tiles=[tile], bands=[name], time=time, decode=False)
    sizes = ds[name].chunks[0]
    edges = tuple(int(e) for e in np.cumsum((0, *sizes)))
    runs, start, stop = [], 0, 0
    for n in sizes:
        if stop > start and stop + n - start > size:
            runs.append(slice(start, stop))
            start = stop
        if n > size:
            runs += [slice(a, min(a + size, stop + n)) for a in range(stop, stop + n, size)]
            start = stop + n
        stop += n
    if stop > start:
        runs.append(slice(start, stop))
    if len(runs) > 1 and runs[-1].stop - runs[-2].start <= _longest_run(size):
        runs[-2:] = [slice(runs[-2].start, runs[-1].stop)]
    return runs, edges


def time_chunks(edges: Sequence[int], dates: slice) -> int:
    """How many stored time chunks (``edges`` of :func:`time_blocks`) the ``dates`` of a run lie in."""
    e = np.asarray(edges)
    return int(np.searchsorted(e, dates.stop, "left") - np.searchsorted(e, dates.start, "right") + 1)


def _longest_run(size: int) -> int:
    """The most dates a run of :func:`time_blocks` holds for runs of ``size``."""
    return size + size // 2


@dataclass(frozen=True)
class WorkUnit:
    """One home block of one tile: its parcels (labels and ids), the window that holds them, date runs."""

    tile: str
    layer: str  # key prefix of the tile's parcel layer
    rows: slice
    cols: slice
    labels: np.ndarray  # sorted label ids of the home parcels
    ids: np.ndarray
    times: tuple[tuple[slice, str], ...]  # (dates, output key) still to do
    time_edges: tuple[int, ...] = ()  # the stored time chunks among the tile's dates (:func:`time_blocks`)
    neighbours: tuple[tuple[slice, slice], ...] = ()  # other units' windows that may read its chunks (with_neighbours)

    def cost(self) -> int:
        """Pixel-dates to read: what the unit's run time is proportional to."""
        dates = sum(t.stop - t.start for t, _ in self.times)
        return (self.rows.stop - self.rows.start) * (self.cols.stop - self.cols.start) * dates


@dataclass(frozen=True)
class AcrossBatch:
    """Parcels read across tiles (:func:`batches_across_tiles`), through ``parcel_timeseries``, into one file:
    ``key``."""

    key: str
    parcels: ParcelSet
    tiles: Mapping[Any, str]  # the tiles the extraction gives each parcel, joined by "+" (its status says them)
    pixel_dates: int = 0  # the 10 m pixels of its parcels' bounding boxes in each tile read, times its dates

    def cost(self) -> int:
        """As :meth:`WorkUnit.cost`."""
        return self.pixel_dates


def home_block_units(layer: ParcelLayer, *, block: int, times: list[slice], done: set[str], suffix: str = "",
                     time_edges: tuple[int, ...] = (), run: str = "", generation: int = 0
                     ) -> tuple[list[WorkUnit], int]:
    """The home blocks of a tile's labelled parcels, with the date runs whose file is not written yet (``done``:
    the names of those written, as :func:`cube.extraction_files.written_as` gives them; ``suffix``: after the run's
    start in the file name, to tell an update's files from the first run's; ``run``: the extraction's run, last in
    it; ``generation``: the run's, in the names of the files to write, :func:`cube.extraction_files.generation_tag`).

    A parcel wider or taller than a block (a MultiPolygon with distant parts, a huge pasture) would stretch
    its home block's window without limit: it is a unit of its own, its window its own bounding box, read
    in runs of fewer dates so that the unit holds no more values than a block's (:func:`_shorter_runs`)."""
    ok = layer.index[layer.index.pixels > 0]
    wide = (ok.row1 - ok.row0 > block) | (ok.col1 - ok.col0 > block)
    narrow = ok[~wide]
    groups = [(f"r{br * block:05d}c{bc * block:05d}", group, times)
              for (br, bc), group in narrow.groupby([narrow.row0 // block, narrow.col0 // block], sort=True)]
    # named by its id, not its label (its row in the parcel file): resumed with the parcels re-sorted and the layer
    # built anew, it was written again under its new label. An earlier cardcube's name (by label) is found too
    groups += [(f"r{p.row0:05d}c{p.col0:05d}p{_id_hash(p.parcel_id)}", ok.loc[[i]],
                _shorter_runs(times, block * block, (p.row1 - p.row0) * (p.col1 - p.col0)),
                f"r{p.row0:05d}c{p.col0:05d}l{p.label}")
               for i, p in ok[wide].iterrows()]
    units, resumed = [], 0
    for name, group, runs, *before in groups:
        rows = slice(int(group.row0.min()), int(group.row1.max()))
        cols = slice(int(group.col0.min()), int(group.col1.max()))
        keys = [(t, f"{TIMESERIES}/tile={layer.tile}/{{}}t{t.start:04d}{suffix}") for t in runs]
        todo = tuple((t, statistics_name(k.format(name) + generation_tag(generation), run)) for t, k in keys
                     if not {statistics_name(k.format(n), run) for n in (name, *before)} & done)
        resumed += len(keys) - len(todo)
        if todo:
            units.append(WorkUnit(layer.tile, layer.prefix, rows, cols, group.label.to_numpy(np.int64),
                                  group.parcel_id.to_numpy(object), todo, time_edges))
    return units, resumed


def with_neighbours(tasks: list[WorkUnit | AcrossBatch], side: int) -> list[WorkUnit | AcrossBatch]:
    """``tasks`` in their order, each unit with the windows of the units of its tile that may read a chunk it reads
    too (nearer to it than ``side`` 10 m pixels, the widest chunk, :attr:`ExtractJob.chunk_side`, along both axes) and
    start at most :data:`NEIGHBOURS_APART` tasks before or after it. Its reads keep the chunks those read as well
    for them, decoded once (:mod:`cube.shared_chunks`); a neighbour further down the list decodes its own, as a
    chunk kept for it would wait long, holding memory (20 km territory, every neighbour: 332 MiB kept at once, and
    single-threaded reads no faster, 2026-12-06)."""
    at = [i for i, t in enumerate(tasks) if isinstance(t, WorkUnit)]
    if len(at) < 2:
        return tasks
    units = [tasks[i] for i in at]
    r0, r1, c0, c1 = np.array([(u.rows.start, u.rows.stop, u.cols.start, u.cols.stop) for u in units]).T
    tile, pos = np.array([u.tile for u in units]), np.array(at)
    near = ((r0[:, None] - side < r1[None, :]) & (r0[None, :] - side < r1[:, None])
            & (c0[:, None] - side < c1[None, :]) & (c0[None, :] - side < c1[:, None])
            & (tile[:, None] == tile[None, :]) & (np.abs(pos[:, None] - pos[None, :]) <= NEIGHBOURS_APART))
    np.fill_diagonal(near, False)
    out = list(tasks)
    for i, u, row in zip(at, units, near, strict=True):
        out[i] = replace(u, neighbours=tuple((units[j].rows, units[j].cols) for j in np.flatnonzero(row)))
    return out


def _id_hash(parcel_id: Any) -> str:
    """A short name of a parcel id for a file name (ids are of one type in a run: text, or whole numbers)."""
    return hashlib.sha256(str(parcel_id).encode()).hexdigest()[:12]


def _shorter_runs(times: list[slice], block_pixels: int, window_pixels: int) -> list[slice]:
    """``times`` cut into runs of as many dates as keep ``window_pixels`` within what a block's run holds."""
    step = max(1, max((t.stop - t.start for t in times), default=1) * block_pixels // window_pixels)
    return [slice(a, min(a + step, t.stop)) for t in times for a in range(t.start, t.stop, step)]


def work_unit_size(spec: CubeSpec, n_bands: int, *, block: int | None, time_block: int | None) -> tuple[int, int]:
    """The side (10 m pixels) and the date run of a work unit, by default the cube's shard side and time chunk; a
    clear error for an empty one, or one that would hold more than :data:`MAX_UNIT_BYTES` of ``n_bands``."""
    block = spec.chunks.shard_space if block is None else block
    time_block = spec.chunks.time if time_block is None else time_block
    if block < 1:  # the Python name and the option, as both reach here
        raise InvalidRequestError(f"block (--block) must be a positive number of pixels, not {block}")
    if time_block < 1:
        raise InvalidRequestError(f"time_block (--time-block) must be a positive number of dates, not {time_block}")
    unit_bytes = block * block * _longest_run(time_block) * n_bands * 2
    if unit_bytes > MAX_UNIT_BYTES:
        raise RequestTooLargeError(
            f"a work unit of {block} x {block} px x {_longest_run(time_block)} dates x {n_bands} bands would hold "
            f"{unit_bytes / 2**30:.1f} GiB of stored values (limit {MAX_UNIT_BYTES / 2**30:.0f} GiB per task); "
            f"use a smaller block or time_block")
    return block, time_block


ACROSS_BATCH_M = 2560.0  # side of the squares in which the parcels read through parcel_timeseries are batched


def batches_across_tiles(job: ExtractJob, sub: ParcelSet, tiles_of: list[tuple[str, ...]], ps: ParcelSet,
                         status: dict[Any, ParcelStatus], done: set[str], *, again: bool
                         ) -> tuple[list[AcrossBatch], list[str]]:
    """The batches of the parcels read from several tiles (no tile holds them whole, or a tile holding them lacks
    dates another has over them) still to read, and the files of those found read. They are read by
    ``parcel_timeseries`` in batches by tiles and squares of :data:`ACROSS_BATCH_M` (a strip along a tile's edge
    is no window to read whole, nor its rows a frame to hold), a file each, whose metadata keeps their status; a
    batch with a file in ``done`` (the files there, the latest of each batch) is not read again, its parcels'
    statuses going to ``status``, unless ``again`` (an update) and the file is of an earlier version (an interrupted
    update resumed reads only the batches it had not written), or the file holds other parcels than the batch (an
    update of no new date within ``time`` whose parcels' tiles changed, and so the batches numbered: the batch's
    file by its number repeated some parcels' rows and lost others'). An update writes files of its own
    (:func:`mosaic_key`); :func:`cube.extract.extract` deletes every other file of a batch once it has run."""
    tiles = {pid: "+".join(t) for pid, t in zip(ps.ids, tiles_of, strict=True)}
    todo, kept = [], []
    version = job.version.version if again else None  # an update reads them again, but not its own files twice
    there = {named[0]: k for k in done if k.startswith(MOSAIC) and (named := mosaic_batch(k)) is not None}
    for i, (batch, pixels) in enumerate(_batches(sub, tiles)):
        key = there.get(i)
        if key is not None and (earlier := mosaic_status(job.out, key, version)) is not None and \
                {s["parcel_id"] for s in earlier} == set(batch.ids):
            status.update({s["parcel_id"]: replace(ParcelStatus(**s), tile=tiles[s["parcel_id"]])  # how each fared
                           for s in earlier})
            kept.append(key)
            continue
        named = {pid: tiles[pid] for pid in batch.ids}
        dates = max(len(job.version.tiles[t].acquisitions) for tile in set(named.values()) for t in tile.split("+"))
        todo.append(AcrossBatch(mosaic_key(i, job.run, job.version.version, job.generation), batch, named,
                                pixels * dates))
    return todo, kept


def _batches(ps: ParcelSet, tiles: Mapping[Any, str]) -> list[tuple[ParcelSet, int]]:
    """``ps`` by the tiles they are read from and the square of :data:`ACROSS_BATCH_M` holding their centroid (in
    the first tile's CRS), each with the 10 m pixels of its parcels' bounding boxes in all the tiles it reads."""
    groups: dict[tuple[str, int, int], list[Any]] = {}
    pixels: Counter[Any] = Counter()
    for tile in sorted(set(tiles[p] for p in ps.ids)):
        sub = ps.select([p for p in ps.ids if tiles[p] == tile])
        crs = TileGrid.from_id(tile.split("+")[0]).crs if tile else sub.crs
        metric = np.asarray(sub.to_crs(crs).geometries, dtype=object)
        cells = np.floor(shapely.get_coordinates(shapely.centroid(metric)) / ACROSS_BATCH_M).astype(np.int64)
        x0, y0, x1, y1 = shapely.bounds(metric).T
        area = np.ceil((x1 - x0) / 10 + 1) * np.ceil((y1 - y0) / 10 + 1) * len(tile.split("+"))
        for pid, (cx, cy), n in zip(sub.ids, cells, area, strict=True):
            groups.setdefault((tile, int(cx), int(cy)), []).append(pid)
            pixels[tile, int(cx), int(cy)] += int(n)
    return [(ps.select(ids), pixels[group]) for group, ids in sorted(groups.items())]
