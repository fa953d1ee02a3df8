"""``extract()``: statistics of every parcel, every date and band of a territory, in one pass over the cube.

The production job of checks by monitoring. Each time-first chunk already holds a stretch of season for
its pixels, so the cube is read block by block, each block once, instead of scene by scene:

1. Each parcel goes to a tile (the rule of :func:`cube.timeseries.assign_tiles`). Per tile, the parcels
   are rasterised once into a stored label layer (:mod:`cube.parcel_layer`), which also gives each
   parcel's pixel count and pixel bounding box.
2. A parcel's *home block* is the ``block`` x ``block`` square of the tile grid holding its top-left pixel.
   A work unit is one home block: it reads the window covering its parcels (the block, stretched right and
   down by the parcels that cross its edge; read per run of ``time_block`` dates, so memory is bounded by
   the block, never by the territory or the season) and computes every parcel, date and band at once with
   the vectorised :class:`cube.pixels.ParcelPixels` -- the code ``parcel_timeseries`` uses, so the numbers
   are the same, bit for bit. Percentiles are exact because a unit holds all pixels of its parcels. A
   parcel larger than a block (distant parts of a MultiPolygon) is a unit of its own, read in shorter runs
   of dates, so no window grows past twice a block's side.
3. Each unit and date run writes one Parquet file (atomically, on a folder or S3). A re-run skips the
   files that exist, so an interrupted run resumes and rows are never duplicated; ``manifest.json`` pins
   the cube version and parameters, and a run with other ones is refused rather than mixed in.
4. As new dates arrive, ``update=True`` brings a complete extraction to the cube's new version: only the
   dates of scenes it has not read yet are extracted, into files of their own (``...-v<version>.parquet``);
   committed pixels never change, so the rows already written stay exact, but those of dates a repair has
   written anew since (``ingest --repair``: a damaged shard may have decoded, to other values), which it reads
   again like new ones, their earlier rows dropped first (:func:`cube.extraction_files.drop_replaced`). The
   manifest lists the scenes read per tile, the version whose pixels each one's rows read, and the versions
   updated from. An update that gained tiles is refused (parcels might
   move to another tile); the parcels read across tiles are read again whole. Each parcel keeps the tiles
   the extraction gave it (tiles' scenes arrive on other days: a neighbour holding a date its tile lacks for a
   while must not move it), its status naming a neighbour's dates it lacks.

A pixel of two parcels (overlapping parcels; every common border with ``all_touched`` or an outward buffer)
counts for both: the label layer lists the pixels each parcel holds beside the label the raster gives them.
A parcel that no tile holds whole (at a cube edge, across UTM zones), or whose tile lacks dates a
neighbour of its zone holds over it (tiles ingested with different histories, a scene rejected on one tile), is
read through ``parcel_timeseries`` itself, with all its own pixels, per date from a tile holding it. Every input
parcel ends up in ``parcels.parquet`` with its status. The files are in :mod:`cube.extraction_files`, the manifest
in :mod:`cube.extraction_manifest`, their readers in :mod:`cube.extraction_reader`.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import time as timer
import warnings
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import shapely
from odc.geo.geom import Geometry
from zarr.abc.store import Store

from cardcube.checkpoints import checkpoint
from cardcube.errors import (
    CardcubeError,
    InvalidRequestError,
    ParcelError,
    ParcelsWithoutStatisticsWarning,
    RequestTooLargeError,
    StoreError,
    TasksStillRunningError,
)
from cardcube.grid import TileGrid
from cardcube.parallel import STOP_GRACE, check_scheduler, check_workers_see, run_tasks
from cardcube.query import parse_time_selection, time_text
from cardcube.spec import ChunkLayout, CubeSpec
from cardcube.storage import (
    StoreLike,
    canonical_url,
    delete_key,
    list_keys,
    local_file,
    open_store,
    read_json,
    refuse_file,
    store_url,
    write_bytes,
)
from cube import layout
from cube.band_reader import BandReader
from cube.dataset import check_acquisitions, lacks_passes, passes_lacking, read_cube
from cube.extraction_files import (
    MANIFEST,
    MOSAIC,
    PORTABLE_PARQUET,
    STATUS,
    TIMESERIES,
    drop_replaced,
    generation_of,
    generation_tag,
    held_before_repair,
    is_partial,
    mosaic_batch,
    mosaic_key,
    mosaic_status,
    new_run,
    read_before_repair,
    run_keys,
    run_of,
    statistics_keys,
    statistics_name,
    superseded,
    timeseries_parquet,
    version_tag,
    write_status,
    written_as,
)
from cube.extraction_manifest import check_manifest, check_still_of, finish_manifest, refuse_other_parameters
from cube.extraction_reader import holds_extraction, read_manifest, read_status, read_timeseries
from cube.indices import bands_for, check_bands, stored_bands, units_of
from cube.ledger import CubeVersion, read_version
from cube.membership import DEFAULT_BUFFER, PIXEL_RULE, check_buffer
from cube.parcel_layer import ParcelLayer, parcel_layer, parcels_digest, parquet_bytes
from cube.parcel_stats import stats_table
from cube.parcels import ParcelSet, as_parcels, read_parcels, too_small
from cube.pixels import EARLIER_TIME_COLUMNS, TIME_COLUMNS, ParcelPixels
from cube.shared_chunks import ChunkSharing, SharedChunks
from cube.stats import STATS, stat_list
from cube.timeseries import (
    TILE_RULE,
    ParcelStatus,
    assign_tiles,
    outside_reasons,
    parcel_timeseries,
    read_notes,
    resolve_mask,
)

log = logging.getLogger(__name__)

MAX_UNIT_BYTES = 2 * 2**30  # stored values a work unit may hold (before its parcels stretch the window)
STATUSES = ("ok", "too_small", "outside", "invalid", "failed")
NEIGHBOURS_APART = 2  # units further apart in the task list decode the chunks they share each (_neighbours)
LATE_ROWS = "its rows begin with the dates of version"  # a parcel an update found inside the data (_earlier_tiles)

# the readers of what ``extract`` writes live in cube.extraction_reader, and are part of this module's API
__all__ = ["ExtractResult", "extract", "read_manifest", "read_status", "read_timeseries"]


@dataclass(frozen=True)
class ExtractResult:
    """What an extraction did: where, from which cube version, how many parcels by status, how much.

    ``units`` counts the output files this run wrote (a work unit's block x one run of dates, a batch of the
    parcels read across tiles), ``rows`` the rows in them; ``units_resumed`` counts the files it found
    written by an earlier run (interrupted, or finished: then this one writes nothing)."""

    out: str
    collection: str
    version: int
    status: Mapping[str, int]
    units: int
    units_resumed: int
    rows: int
    chunks: int
    seconds: float
    failures: Sequence[str] = field(default_factory=tuple)
    phase_seconds: Mapping[str, float] = field(default_factory=dict)  # worker time by phase, summed over units
    phase_cpu_seconds: Mapping[str, float] = field(default_factory=dict)  # of which the threads' CPU time
    new_scenes: int | None = None  # an update's scenes not extracted before (None: not an update), and those
    replaced: int = 0  # ... of them it read again, a repair having written them anew since (their rows replaced)

    @property
    def parcels(self) -> int:
        return sum(self.status.values())

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types: ``cardcube extract --json``."""
        return {"out": self.out, "collection": self.collection, "version": self.version, "status": dict(self.status),
                "units": self.units, "units_resumed": self.units_resumed, "rows": self.rows, "chunks": self.chunks,
                "seconds": self.seconds, "failures": list(self.failures), "phase_seconds": dict(self.phase_seconds),
                "phase_cpu_seconds": dict(self.phase_cpu_seconds), "new_scenes": self.new_scenes,
                "replaced": self.replaced}

    def summary(self) -> str:
        counts = ", ".join(f"{n:,} {s}" for s, n in self.status.items() if n)
        resumed = (" (no scene new since the last run: the extraction holds them all)" if self.new_scenes == 0 else
                   f" ({self.units_resumed:,} already there from an earlier run)" if self.units_resumed else "")
        if self.replaced:
            resumed += (f" ({self.replaced} date(s) read again, written anew by `cardcube ingest --repair` since: "
                        "their earlier rows replaced)")
        phases = ", ".join(f"{k} {v:.1f} s" for k, v in self.phase_seconds.items())
        return (f"{self.parcels:,} parcels ({counts}) from {self.collection} cube version {self.version}: "
                f"{self.rows:,} rows written in {self.units:,} file(s){resumed}, {self.chunks:,} chunks read, "
                f"{self.seconds:.1f} s{f' (worker time: {phases})' if phases else ''} -> {self.out}")


def _time_blocks(store: Store, collection: str, tile: str, name: str, version: CubeVersion, time: Any,
                 size: int) -> tuple[list[slice], tuple[int, ...]]:
    """Runs of at most ``size`` dates of ``tile`` along the stored time chunks: whole chunks while they fit, a
    chunk longer than ``size`` cut in pieces (each decodes the chunk again: time spent for memory saved),
    and a short tail (the few dates of the hot buffer) read with the last run if the two hold at most
    :func:`_longest_run` dates, as each run has a fixed cost. Also the edges of the stored chunks among the dates
    (a cold block's 16, the hot buffer's one each), for :func:`_time_chunks` to count the chunks a run reads."""
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


def _time_chunks(edges: Sequence[int], dates: slice) -> int:
    """How many stored time chunks (``edges`` of :func:`_time_blocks`) the ``dates`` of a run lie in."""
    e = np.asarray(edges)
    return int(np.searchsorted(e, dates.stop, "left") - np.searchsorted(e, dates.start, "right") + 1)


def _longest_run(size: int) -> int:
    """The most dates a run of :func:`_time_blocks` holds for runs of ``size``."""
    return size + size // 2


@dataclass(frozen=True)
class _Unit:
    """One home block of one tile: its parcels (labels and ids), the window that holds them, date runs."""

    tile: str
    layer: str  # key prefix of the tile's parcel layer
    rows: slice
    cols: slice
    labels: np.ndarray  # sorted label ids of the home parcels
    ids: np.ndarray
    times: tuple[tuple[slice, str], ...]  # (dates, output key) still to do
    time_edges: tuple[int, ...] = ()  # the stored time chunks among the tile's dates (:func:`_time_blocks`)
    neighbours: tuple[tuple[slice, slice], ...] = ()  # windows of other units that may read its chunks (_neighbours)

    def cost(self) -> int:
        """Pixel-dates to read: what the unit's run time is proportional to."""
        dates = sum(t.stop - t.start for t, _ in self.times)
        return (self.rows.stop - self.rows.start) * (self.cols.stop - self.cols.start) * dates


@dataclass(frozen=True)
class _Batch:
    """Parcels read across tiles (:func:`_across_tiles`), through ``parcel_timeseries``, into one file: ``key``."""

    key: str
    parcels: ParcelSet
    tiles: Mapping[Any, str]  # the tiles the extraction gives each parcel, joined by "+" (its status says them)
    pixel_dates: int = 0  # the 10 m pixels of its parcels' bounding boxes in each tile read, times its dates

    def cost(self) -> int:
        """As :meth:`_Unit.cost`."""
        return self.pixel_dates


@dataclass(frozen=True)
class _Job:
    """Everything a unit needs, picklable for dask-distributed workers."""

    store: Store
    out: Store
    layer_store: Store
    collection: str
    version: CubeVersion
    names: tuple[str, ...]
    bands: tuple[str, ...]
    stats: tuple[str, ...]
    mask: tuple[int, ...] | None
    histogram: bool
    time: Any
    dates: Mapping[str, frozenset] | None = None  # an update: per tile, the acquisition times to add
    buffer: float = DEFAULT_BUFFER  # for the parcels read across tiles (a tile's label layer holds its own)
    all_touched: bool = False
    run: str = ""  # the run the manifest names, which names the files (cube.extraction_files)
    generation: int = 0  # ... and its generation (one more each time it was resumed after a repair)
    time_columns: tuple[str, ...] = TIME_COLUMNS  # the per-date acquisition columns of its rows (its manifest's)
    shared: SharedChunks = field(default_factory=SharedChunks)  # chunks decoded for a unit that neighbours read too

    @property
    def layout(self) -> ChunkLayout:
        return self.version.spec.chunks

    @property
    def resolutions(self) -> tuple[int, ...]:
        """The native resolution of each of ``names``."""
        return tuple(self.version.spec.band(n).resolution for n in self.names)

    @cached_property
    def groups(self) -> list[tuple[list[str], list[str]]]:
        """The requested bands in groups that share stored inputs (an index with its bands), each with
        the stored bands it needs: a unit holds one group at a time, which bounds its memory."""
        groups: list[tuple[list[str], set[str]]] = []
        for band in self.bands:
            wanted, inputs = [band], set(bands_for([band])) - {"SCL"}
            for group in [g for g in groups if g[1] & inputs]:
                groups.remove(group)
                wanted, inputs = group[0] + wanted, group[1] | inputs
            groups.append((wanted, inputs))
        return [(wanted, [n for n in self.names if n in inputs]) for wanted, inputs in groups]

    @cached_property
    def parquet(self) -> dict[str, Any]:
        """The Parquet options of the units' files (:func:`cube.extraction_files.timeseries_parquet`)."""
        return timeseries_parquet(self.version.spec, self.bands, self.stats)

    def chunks_touched(self, rows: slice, cols: slice, time_chunks: int) -> int:
        """Stored chunks a window of the 10 m grid touches over ``time_chunks`` stored time chunks, all
        variables."""
        total = 0
        for res in self.resolutions:
            _, cy, cx = self.layout.chunks(res)
            k = res // 10
            ny = (math.ceil(rows.stop / k) - 1) // cy - rows.start // k // cy + 1
            nx = (math.ceil(cols.stop / k) - 1) // cx - cols.start // k // cx + 1
            total += time_chunks * ny * nx
        return total

    def _readers(self, unit: _Unit, selected: np.ndarray, base: float) -> tuple[dict[str, BandReader],
                                                                                  dict[str, np.ndarray]]:
        """A reader of the unit's window of each variable at its native resolution, and the column of each
        selected 10 m window pixel in what it reads: a 20 m band is read at 20 m and indexed, never repeated."""
        w = unit.cols.stop - unit.cols.start
        r, c = unit.rows.start + selected // w, unit.cols.start + selected % w
        windows, index, sharing = {}, {}, {}
        for name, res in zip(self.names, self.resolutions, strict=True):
            k = round(res / base)
            rows, cols = _native(unit.rows, k), _native(unit.cols, k)
            windows[name] = rows, cols
            index[name] = (r // k - rows.start) * (cols.stop - cols.start) + (c // k - cols.start)
            sharing[name] = ChunkSharing(self.shared, tuple((_native(a, k), _native(b, k)) for a, b in unit.neighbours))
        time = self.time if self.dates is None else self.dates[unit.tile]
        return BandReader.open(self.store, self.version, unit.tile, windows, time=time, sharing=sharing), index

    @property
    def chunk_side(self) -> int:
        """The widest ground a chunk of any of ``names`` covers, in 10 m pixels (:func:`_neighbours`)."""
        return max(self.layout.chunks(res)[1] * res // self.layout.base_resolution for res in self.resolutions)

    def __call__(self, unit: _Unit | _Batch) -> dict[str, Any]:
        """A work unit's statistics, or a batch's of parcels read across tiles, written to ``out``."""
        return self._across(unit) if isinstance(unit, _Batch) else self._unit(unit)

    def _unit(self, unit: _Unit) -> dict[str, Any]:
        layer = ParcelLayer(self.layer_store, unit.layer, unit.tile, pd.DataFrame())
        lab = layer.labels(unit.rows, unit.cols).ravel()
        window = lab.size
        lost_at, lost_lab = layer.lost(unit.rows, unit.cols)  # a pixel of two parcels: the second one's entry
        if lost_lab.size:
            lab = np.concatenate([lab, lost_lab])
        pos = np.minimum(np.searchsorted(unit.labels, lab), unit.labels.size - 1)
        selected = np.flatnonzero(unit.labels[pos] == lab)
        at = selected  # each entry's window position: its own in the label window, a lost pixel's from the layer
        if lost_lab.size:  # each parcel's pixels in row-major order, as parcel_timeseries sums them
            at = np.where(selected < window, selected, lost_at[np.maximum(selected - window, 0)])
            order = np.argsort(at, kind="stable")
            at, selected = at[order], selected[order]
        readers, index = self._readers(unit, at, layer.geobox.resolution.x)
        coords = readers[self.names[0]].coords
        attrs = {name: reader.attrs for name, reader in readers.items()}
        rows = chunks = 0
        spent = _Phases()
        with spent("statistics"):  # the unit's pixels grouped by parcel once, for every run of dates
            template = ParcelPixels.from_labels(unit.ids, pos[selected], coords["time"][:0], {}, attrs, {},
                                                index=index)
        longest = max(d.stop - d.start for d, _ in unit.times)
        buffers: dict[tuple[Any, ...], np.ndarray] = {}

        def read(name: str, dates: slice, slot: Any) -> np.ndarray:
            """``name`` over ``dates`` as (time, pixels), read into the unit's buffer ``slot``, which every
            group and run of dates reuses: a fresh array of tens of MB per read would cost page faults."""
            reader = readers[name]
            key = (slot, reader.shape[1:], reader.dtype)
            if key not in buffers:
                buffers[key] = np.empty((longest, *reader.shape[1:]), dtype=reader.dtype)
            with spent("read"):
                data = reader.read(dates, out=buffers[key][: dates.stop - dates.start])
            return data.reshape(data.shape[0], -1)

        for dates, key in unit.times:
            chunks += self.chunks_touched(unit.rows, unit.cols, _time_chunks(unit.time_edges, dates))
            scl = {"SCL": read("SCL", dates, "SCL")} if "SCL" in readers else {}
            meta = {c: coords[c][dates] for c in self.time_columns if c in coords}
            with spent("statistics"):
                pixels = replace(template, times=coords["time"][dates], values=scl, time_meta=meta)
                clear = pixels.clear(self.mask)  # the cloud mask, once for every band
            results = []
            for wanted, inputs in self.groups:  # one group of bands in memory at a time
                group = replace(pixels, values={**{n: read(n, dates, i) for i, n in enumerate(inputs)}, **scl})
                with spent("statistics"):
                    results += group.band_stats(wanted, stats=self.stats, clear=clear)
            with spent("statistics"):
                table = stats_table(results, per_date=pixels.per_date(histogram=self.histogram), encoded=True)
                table = table.append_column("cube_version", pa.array(np.full(table.num_rows, self.version.version,
                                                                             np.int64)))
            with spent("write"):
                write_bytes(self.out, key, parquet_bytes(table, **self.parquet))
            checkpoint("extract-unit-written")
            rows += table.num_rows
        return {"parcels": int(unit.ids.size), "chunks": chunks, "rows": rows, "files": [k for _, k in unit.times],
                "seconds": dict(spent), "cpu_seconds": dict(spent.cpu)}

    def _across(self, batch: _Batch) -> dict[str, Any]:
        """A batch of parcels read across tiles, into its file, whose metadata keeps their status; a failure (the
        store out of reach, ...) is theirs, its message in ``failure``: the other parcels go on."""
        spent, rows, files, failure = _Phases(), 0, [], None
        try:
            with spent("across tiles"):
                frame = parcel_timeseries(self.store, batch.parcels, collection=self.collection, bands=list(self.bands),
                                          stats=self.stats, mask=self.mask, buffer=self.buffer,
                                          all_touched=self.all_touched, time=self.time, as_of=self.version,
                                          histogram=self.histogram)
        except CardcubeError as exc:  # an update's earlier file of the batch goes too, by the driver (extract)
            if isinstance(exc, ParcelError) and exc.status:  # none has a pixel, or data: each one's status
                statuses = list(exc.status)  # and no file: a re-run reads them again
            else:
                failure = str(exc)
                statuses = [ParcelStatus(pid, "failed", 0, failure) for pid in batch.parcels.ids]
        else:
            statuses = [ParcelStatus(**s) for s in frame.attrs["parcel_status"]]
            frame = frame.drop(columns=[c for c in TIME_COLUMNS if c in frame and c not in self.time_columns])
            with spent("write"):  # pandas keeps ``frame.attrs`` in the file
                write_bytes(self.out, batch.key, parquet_bytes(frame, **PORTABLE_PARQUET))
            checkpoint("extract-unit-written")
            rows, files = len(frame), [batch.key]
        # the tiles the extraction gave them (an update keeps them: see _earlier_tiles), not those read now
        return {"parcels": len(batch.parcels), "chunks": 0, "rows": rows, "files": files, "seconds": dict(spent),
                "cpu_seconds": dict(spent.cpu), "failure": failure,
                "status": [replace(s, tile=batch.tiles[s.parcel_id]) for s in statuses]}


PHASES = ("read", "statistics", "write", "across tiles")  # of a unit (read, statistics, write) or a batch


def _in_order(seconds: Mapping[str, float]) -> dict[str, float]:
    """``seconds`` by phase in the order of :data:`PHASES`, whatever order the tasks ended in."""
    return {phase: seconds[phase] for phase in PHASES if phase in seconds}


class _Phases(Counter):
    """Seconds a work unit spends in each phase (read, statistics, write): where extraction time goes. ``cpu``:
    the thread's CPU seconds in each, without the waits (for the store, for the GIL, for a core). Blosc decodes
    in the calling thread but in the main one (``--scheduler sync``), where its own threads do it, unseen here."""

    def __init__(self) -> None:
        super().__init__()
        self.cpu: Counter[str] = Counter()

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        start, cpu = timer.perf_counter(), timer.thread_time()
        try:
            yield
        finally:
            self[phase] += timer.perf_counter() - start
            self.cpu[phase] += timer.thread_time() - cpu


def _units(layer: ParcelLayer, *, block: int, times: list[slice], done: set[str], suffix: str = "",
           time_edges: tuple[int, ...] = (), run: str = "", generation: int = 0) -> tuple[list[_Unit], int]:
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
            units.append(_Unit(layer.tile, layer.prefix, rows, cols, group.label.to_numpy(np.int64),
                               group.parcel_id.to_numpy(object), todo, time_edges))
    return units, resumed


def _neighbours(tasks: list[_Unit | _Batch], side: int) -> list[_Unit | _Batch]:
    """``tasks`` in their order, each unit with the windows of the units of its tile that may read a chunk it reads
    too (nearer to it than ``side`` 10 m pixels, the widest chunk, :attr:`_Job.chunk_side`, along both axes) and
    start at most :data:`NEIGHBOURS_APART` tasks before or after it. Its reads keep the chunks those read as well
    for them, decoded once (:mod:`cube.shared_chunks`); a neighbour further down the list decodes its own, as a
    chunk kept for it would wait long, holding memory (20 km territory, every neighbour: 332 MiB kept at once, and
    single-threaded reads no faster, 2026-12-06)."""
    at = [i for i, t in enumerate(tasks) if isinstance(t, _Unit)]
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


def _native(pixels: slice, k: int) -> slice:
    """A span of 10 m pixels on a grid ``k`` times coarser: the native pixels holding it."""
    return slice(pixels.start // k, -(-pixels.stop // k))


def _id_hash(parcel_id: Any) -> str:
    """A short name of a parcel id for a file name (ids are of one type in a run: text, or whole numbers)."""
    return hashlib.sha256(str(parcel_id).encode()).hexdigest()[:12]


def _shorter_runs(times: list[slice], block_pixels: int, window_pixels: int) -> list[slice]:
    """``times`` cut into runs of as many dates as keep ``window_pixels`` within what a block's run holds."""
    step = max(1, max((t.stop - t.start for t in times), default=1) * block_pixels // window_pixels)
    return [slice(a, min(a + step, t.stop)) for t in times for a in range(t.start, t.stop, step)]


def extract(
    parcels: Any,
    cube: StoreLike,
    out: StoreLike,
    *,
    collection: str = "s2",
    bands: Sequence[str] | None = None,
    stats: Sequence[str] = STATS,
    mask: Sequence[int] | str | None = "default",
    buffer: float = DEFAULT_BUFFER,
    all_touched: bool = False,
    time: Any = None,
    as_of: int | None = None,
    histogram: bool = True,
    block: int | None = None,
    time_block: int | None = None,
    scheduler: Any = None,
    storage_options: Mapping[str, Any] | None = None,
    out_storage_options: Mapping[str, Any] | None = None,
    id_column: str = "parcel_id",
    layer: str | None = None,
    layers: StoreLike | None = None,
    progress: bool = True,
    update: bool = False,
    stop_grace: float = STOP_GRACE,
) -> ExtractResult:
    """Statistics of every parcel, date and band, as in :func:`cube.timeseries.parcel_timeseries`,
    written to ``out`` (a folder or ``s3://`` URL) as Parquet with the cube version read.

    ``parcels`` is a parcel file (its ``layer``, if it holds several; a path, or an ``s3://`` URL read with the
    cube's ``storage_options``, or ``http(s)://``: :func:`cube.parcels.read_parcels`) or GeoDataFrame with
    ``id_column``.
    ``block`` (pixels, default the cube's shard side) and ``time_block`` (dates, default its time chunk) size
    a work unit; ``scheduler`` is ``threads`` (default), ``processes``, ``sync``, a ``tcp://`` address or a
    dask ``Client``. The label layers are kept in ``layers`` (a folder or ``s3://`` URL, opened like ``out``),
    by default beside the cube, whose store must then be writable for a new parcel set.
    Interrupted runs resume. ``update``: ``out`` holds a complete extraction of an earlier version of the
    cube; add the dates of this version that it lacks (its rows stay; see the module docstring).
    ``stop_grace``: how long a stopped run waits for its running tasks (:func:`cardcube.parallel.run_tasks`).
    """
    started = timer.perf_counter()
    for where, given in (("out (--out)", out), ("layers (--layers)", layers)):
        refuse_file(given, where)
    check_scheduler(scheduler)  # a misspelt one, or a wrong address, fails now, not once the manifest is written
    buffer = check_buffer(buffer)  # a NaN would reach the manifest and buffer no parcel
    frame = read_parcels(parcels, id_column=id_column, layer=layer, storage_options=storage_options)
    ps = as_parcels(frame, id_column=id_column, errors="collect")
    store = open_store(layout.cube_root(cube), storage_options=storage_options, read_only=True)
    version = read_version(store, collection, as_of)
    # the latest version's records say which cold dates a repair has mended since: in place, read by every version
    head = version if as_of is None else read_version(store, collection)
    spec = version.spec
    bands = check_bands(bands, list(spec.band_names), statistics=True)
    stats = stat_list(stats)
    parse_time_selection(time)  # a bad range fails before anything is written to ``out``
    tiles_of = assign_tiles(version, ps, time, reach=max(buffer, 0.0))
    mask = resolve_mask(mask, list(spec.band_names), collection)
    names = tuple(stored_bands(bands, spec.band_names, scl=mask is not None or histogram))
    block, time_block = _work_unit(spec, len(names), block=block, time_block=time_block)
    manifest = {
        "cube": canonical_url(store), "collection": collection, "version": version.version,
        "committed": version.created, "parcels": parcels_digest(ps), "bands": list(bands), "stats": sorted(stats),
        "units": {band: units_of(band) for band in bands},  # of every statistic but count and masked
        "mask": None if mask is None else list(mask), "buffer": buffer, "all_touched": all_touched,
        "time": time_text(time), "histogram": histogram, "block": block,
        "time_block": time_block, "tile_rule": TILE_RULE, "pixel_rule": PIXEL_RULE, "run": new_run(),
        "time_columns": list(TIME_COLUMNS),
    }
    kept: dict[Any, str] = {}  # notes of parcels kept on their earlier tile (_earlier_tiles)
    held = holds_extraction(out, out_storage_options)
    if not update or not held:  # an update of nothing is a whole run
        check_acquisitions(version, time)
    out_store = open_store(out, storage_options=out_storage_options)
    if held:  # an update, or a run again (resumed, or of a finished one): the tiles the parcels were read from
        # other parcels are said so, not blamed on the cube's covered area
        there = read_json(out_store, MANIFEST) or {}
        if time is not None and there.get("time") == str(time):  # a Python range's text, as recorded before
            manifest["time"] = there["time"]  # 2026-12-06 (time_text): the same run, its text kept
        refuse_other_parameters(out_store, manifest)
        resumes_update = "update" in there and there.get("version") == version.version  # with --update or not
        tiles_of, kept = _earlier_tiles(out, out_storage_options, ps, tiles_of, version, time,
                                        update=update or resumes_update)

    new = check_manifest(out_store, manifest, version, time=time, update=update, cube=store, head=head)
    there = read_json(out_store, MANIFEST)
    run = run_of(there)  # this run's, or the one it resumes or updates
    drop_replaced(out_store, there, version)  # an update's dates a repair wrote anew: their earlier rows go first
    replaced = sum(map(len, (there.get("update") or {}).get("replaced", {}).values()))
    ledger = layout.ledger_key(collection, version.version)
    check_workers_see(scheduler, {"the cube's folder": local_file(store, ledger),  # before hours of work
                                  "the output folder (--out)": local_file(out_store, MANIFEST)})
    dates = None if new is None else {
        tile: frozenset(a.datetime64 for a in version.tiles[tile].acquisitions if a.scene_id in set(new[tile]))
        for tile in version.tiles}
    suffix = "" if new is None else version_tag(version.version)  # an update's files beside the first run's
    for leftover in (k for k in list_keys(out_store, "") if is_partial(k)):  # of a run killed while writing
        delete_key(out_store, leftover)
    found = statistics_keys(out_store, there)  # but a stopped attempt's late files: a resumption after a repair
    late = held_before_repair(out_store, found, there, version)  # ... left aside those of the dates it read again
    done = {k if k.startswith(MOSAIC) else written_as(k)[0] for k in found if k not in late}  # a unit's by name
    layer_store = (store.with_read_only(False) if layers is None else
                   open_store(layers, storage_options=out_storage_options))
    job = _Job(store, out_store, layer_store, collection, version, names, tuple(bands), tuple(stats),
               None if mask is None else tuple(mask), histogram, time, dates, buffer, all_touched, run,
               generation_of(there),
               tuple(there.get("time_columns", EARLIER_TIME_COLUMNS)))  # as its first run: one schema in its files

    status = {pid: ParcelStatus(pid, "invalid", 0, reason) for pid, reason in ps.rejected}
    notes = read_notes(version, ps, tiles_of, time)
    notes.update({pid: "; ".join(filter(None, (notes.get(pid), note))) for pid, note in kept.items()})
    units: list[_Unit] = []
    units_resumed = rows = chunks = 0
    failures: list[str] = []
    for tile in sorted(version.tiles):
        mine = [pid for pid, tiles in zip(ps.ids, tiles_of, strict=True) if tiles == (tile,)]
        if not mine:
            continue
        sub = ps.select(mine)
        layer = _label_layer(layer_store, tile, sub, beside_cube=layers is None, buffer=buffer,
                             all_touched=all_touched, block=block, scheduler=scheduler, progress=progress)
        status.update(_layer_status(layer, sub, notes, buffer=buffer, all_touched=all_touched))
        selection = time if dates is None else dates[tile]
        times, edges = ([], ()) if selection == frozenset() else _time_blocks(store, collection, tile, names[0],
                                                                              version, selection, time_block)
        tile_units, resumed = _units(layer, block=block, times=times, done=done, suffix=suffix, time_edges=edges,
                                     run=run, generation=job.generation)
        units += tile_units
        units_resumed += resumed
    outside = ps.select([p for p, tiles in zip(ps.ids, tiles_of, strict=True) if not tiles])
    status.update({pid: ParcelStatus(pid, "outside", 0, reason)
                   for pid, reason in outside_reasons(version, outside, collection).items()})
    across = [p for p, tiles in zip(ps.ids, tiles_of, strict=True) if len(tiles) > 1]
    # an update reads these parcels' whole season again: a date can be new in one of their tiles only
    again = bool(new and any(new.values()))
    batches, kept_batches = _across_tiles(job, ps.select(across), tiles_of, ps, status, done, again=again)
    units_resumed += len(kept_batches)
    # longest first: the workers finish together
    tasks: list[_Unit | _Batch] = sorted([*units, *batches], key=lambda t: t.cost(), reverse=True)
    tasks = _neighbours(tasks, job.chunk_side)  # units that start close by share the chunks they both read
    spent: Counter[str] = Counter()
    cpu: Counter[str] = Counter()
    written: list[str] = []
    with warnings.catch_warnings():  # a batch's parcels without statistics are in the status table, not a warning
        warnings.simplefilter("ignore", ParcelsWithoutStatisticsWarning)  # (this process's threads: its filters)
        try:
            results = run_tasks(job, [(t,) for t in tasks], scheduler=scheduler, progress=progress, desc="extract",
                                unit="task", tally=lambda r: {k: r[k] for k in ("parcels", "chunks")},
                                stop_grace=stop_grace)
        except TasksStillRunningError:
            log.warning("files of this run (%s) may still land in %s: the same command resumes it, writing the same "
                        "rows; a run started anew there ignores them (its files are named by its own run)",
                        run, store_url(out_store))
            raise
        finally:
            job.shared.clear()  # chunks kept for reads that never came (a unit failed, or was stopped)
    for result in results:
        rows += result["rows"]
        chunks += result["chunks"]
        written += result["files"]
        spent.update(result["seconds"])
        cpu.update(result["cpu_seconds"])
        status.update({s.parcel_id: s for s in result.get("status", ())})
        failures += [result["failure"]] if result.get("failure") else []
    _check_written(out_store, written, run)
    check_still_of(out_store, version)
    # a batch's file kept or written now replaces those of earlier versions and generations: an update's (a failed
    # batch's too: no stale rows), a stopped run's landing late; never one of this version and generation, which
    # another run into ``out`` at once may have written and listed
    mosaics = set(kept_batches) | {k for k in written if k.startswith(MOSAIC)}
    files = run_keys(out_store, run)
    for other in (k for k in files if k.startswith(MOSAIC) and k not in mosaics
                  and (mosaic_batch(k) or (0, 0, 0))[1:] < (version.version, job.generation)):
        delete_key(out_store, other)
    # a unit's file under an earlier name than the one an update wrote it anew under, or a resumption after a repair
    # wrote it again under (a killed run's leftover, a stopped run's late write): never read, deleted
    units_there = [k for k in files if not k.startswith(MOSAIC)]
    for other in sorted(superseded(units_there) | read_before_repair(units_there, there)):
        delete_key(out_store, other)

    write_status(out_store, frame, id_column, status, set(ps.repaired), version.version)
    counts = pd.Series([s.status for s in status.values()]).value_counts()
    result = ExtractResult(store_url(out_store), collection, version.version,
                           {s: int(counts.get(s, 0)) for s in STATUSES}, len(written), units_resumed,
                           rows, chunks, timer.perf_counter() - started, tuple(sorted(failures)), _in_order(spent),
                           _in_order(cpu),
                           None if new is None else sum(map(len, new.values())), replaced)
    finish_manifest(out_store, version, time=time, status=result.status, mosaics=sorted(mosaics))
    return result


def _check_written(out: Store, keys: Sequence[str], run: str) -> None:
    """:class:`StoreError` unless every file the work units said they wrote is in ``out`` as this process
    sees it: workers of a cluster on other machines wrote a local ``--out`` to their own disks, and the run was
    marked complete without a row (one listing)."""
    if not keys:
        return
    missing = sorted(set(keys) - set(run_keys(out, run)))
    if missing:
        raise StoreError(f"{len(missing)} of the {len(keys)} files the work units wrote are not in "
                         f"{store_url(out)} as this machine sees it (e.g. {missing[0]}): are the workers on "
                         f"other machines, writing a local --out to their own disks? Give an --out they all reach "
                         f"(s3://...), or a folder shared with them; the run is not marked complete")


def _work_unit(spec: CubeSpec, n_bands: int, *, block: int | None, time_block: int | None) -> tuple[int, int]:
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


def _label_layer(layer_store: Store, tile: str, parcels: ParcelSet, *, beside_cube: bool, buffer: float,
                 all_touched: bool, block: int, scheduler: Any, progress: bool) -> ParcelLayer:
    """:func:`cube.parcel_layer.parcel_layer` of ``parcels`` on ``tile``, kept in ``layer_store`` (``beside_cube``:
    the default place); a store that may not be written to is named, with where else to keep the layers."""
    try:
        return parcel_layer(layer_store, tile, parcels, buffer=buffer, all_touched=all_touched, block=block,
                            scheduler=scheduler, progress=progress)
    except PermissionError as exc:  # a read-only folder, or S3 credentials that may only read
        raise StoreError(f"cannot store the label layer of tile {tile} in {store_url(layer_store)}: "
                         f"{str(exc).rstrip('.')}. "
                         f"Keep label layers where you may write: --layers DIR or s3://... (Python: layers=)"
                         + ("; by default they are kept beside the cube" if beside_cube else "")) from None


def _earlier_tiles(out: StoreLike, storage_options: Mapping[str, Any] | None, ps: ParcelSet,
                   tiles_of: Sequence[tuple[str, ...]], version: CubeVersion, time: Any, *, update: bool
                   ) -> tuple[list[tuple[str, ...]], dict[Any, str]]:
    """The tiles an update, or a run again of the same version (whose rows are there: a finished run's, by an
    earlier cardcube too), reads each parcel from: those of the extraction there, whose rows stay. A parcel
    read from one tile stays on it (the units add that tile's new dates; a neighbour that now holds dates it lacks,
    as tiles' scenes arrive on other days, would make it a parcel read across tiles, whose whole season would
    repeat the rows there are): its status then says which tiles' dates over it are not in the extraction. A
    parcel read across tiles stays so (its whole season is read again by each update). Also the notes for those
    statuses. A parcel outside the data of the earlier version that a new scene covers (a partial swath, then a
    full one; a GRD's collar, then another orbit) is read from its tiles now: read from one, its rows begin with the
    new dates, which its status says (the earlier dates hold no data over it: a whole extraction has their rows of
    count 0); read across tiles, its whole season. Refused, naming them: parcels the data of the new version no
    longer hold."""
    try:
        before = read_status(out, storage_options=storage_options,  # not the outlines: 0.5 s of 300,000 parcels
                             columns=["parcel_id", "status", "reason", "tile", "cube_version"])
    except CardcubeError:  # no status yet (an interrupted first run): check_manifest says what is there
        there = read_json(open_store(out, storage_options=storage_options), MANIFEST) or {}
        if there.get("complete") or "update" in there or "updated_from" in there:  # it had one: lost
            raise InvalidRequestError(
                f"the extraction at {out} was finished, and its status table {STATUS} is missing (deleted, or not "
                "copied with it): it says which tiles each parcel's rows were read from, without which they would "
                f"be read again from others and the rows there taken for stale ones; restore {STATUS}, or extract "
                "into a new --out") from None
        return list(tiles_of), {}
    # a run of another version than the extraction's, not an update: check_manifest refuses it (an update resumed,
    # with update=True or not, comes as one)
    if not update and not (before.cube_version == version.version).all():
        return list(tiles_of), {}
    placed = before[before.status != "invalid"]  # a dict: a Series looked up parcel by parcel took 30 µs each (9 s
    was = dict(zip(placed.parcel_id.tolist(), placed.tile.tolist(), strict=True))  # of a register of 300,000)
    late = {pid: note.group(0) for pid, reason in zip(before.parcel_id.tolist(), before.reason.fillna("").tolist(),
                                                      strict=True)
            if LATE_ROWS in reason and (note := re.search(rf"{LATE_ROWS} \d+ \([^)]*\)", reason))}  # said on
    tiles, notes, moved = list(tiles_of), {}, []
    selection, lacking = parse_time_selection(time), {}  # (tile, other) -> passes_lacking, once a pair of tiles
    for i, (pid, now) in enumerate(zip(ps.ids, tiles_of, strict=True)):
        earlier = tuple(t for t in (was.get(pid) or "").split("+") if t) if pid in was else now
        if earlier == now:
            if pid in late:
                notes[pid] = late[pid]
            continue
        if not now:
            moved.append((pid, earlier, now))
        elif not earlier:  # outside the earlier dates' data, so they hold nothing over it: its tiles are now's
            if len(now) == 1:
                notes[pid] = (f"{LATE_ROWS} {version.version} (outside the data of the earlier dates, which hold "
                              f"none over it; a whole extraction into a new --out has their rows of count 0)")
        elif len(earlier) > 1:
            tiles[i] = now if len(now) > 1 else earlier
        else:
            tiles[i], (kept,) = earlier, earlier
            crs = TileGrid.from_id(kept).crs
            area = np.array([Geometry(ps.geometries[i], ps.crs).to_crs(crs).geom], dtype=object)
            for other in (t for t in now if t != kept and TileGrid.from_id(t).crs == crs):
                if (kept, other) not in lacking:
                    lacking[kept, other] = passes_lacking(version, kept, other, selection)
            missed = [t for t in now if (kept, t) in lacking and lacks_passes(lacking[kept, t], area)[0]]
            if missed:
                notes[pid] = (f"read from {kept} as in the extraction's first run: the dates "
                              f"{', '.join(missed)} holds over it and {kept} lacks are not in it (a whole "
                              f"extraction into a new --out has them)")
    if moved:
        named = ", ".join(f"{pid} ({'+'.join(a) or 'outside'} -> {'+'.join(b) or 'outside'})"
                          for pid, a, b in moved[:3])
        raise InvalidRequestError(f"the extraction at {out} holds {len(moved)} parcel(s) read from other tiles "
                                  f"than version {version.version} gives them, e.g. {named}: the cube's data no "
                                  f"longer hold them; extract into a new --out")
    return tiles, notes


def _layer_status(layer: ParcelLayer, parcels: ParcelSet, notes: Mapping[Any, str], *, buffer: float,
                  all_touched: bool) -> dict[Any, ParcelStatus]:
    """The status of each parcel of a tile's label layer: ``too_small`` without a pixel (its area in the reason),
    else ``ok`` with its pixels (and, in the reason, ``notes``: :func:`cube.timeseries.read_notes`)."""
    empty = layer.index.parcel_id[layer.index.pixels == 0].tolist()
    metric = parcels.select(empty).to_crs(TileGrid.from_id(layer.tile).crs)  # their area, in m², for the reason
    status = {pid: ParcelStatus(pid, "too_small", 0, too_small(pid, geom, buffer=buffer,
                                                               all_touched=all_touched).reason, layer.tile)
              for pid, geom in zip(metric.ids, metric.geometries, strict=True)}
    status.update({pid: ParcelStatus(pid, "ok", pixels, notes.get(pid, ""), layer.tile)
                   for pid, pixels in zip(layer.index.parcel_id, layer.index.pixels, strict=True) if pixels})
    return status


ACROSS_BATCH_M = 2560.0  # side of the squares in which the parcels read through parcel_timeseries are batched


def _across_tiles(job: _Job, sub: ParcelSet, tiles_of: list[tuple[str, ...]], ps: ParcelSet,
                  status: dict[Any, ParcelStatus], done: set[str], *, again: bool) -> tuple[list[_Batch], list[str]]:
    """The batches of the parcels read from several tiles (no tile holds them whole, or a tile holding them lacks
    dates another has over them) still to read, and the files of those found read. They are read by
    ``parcel_timeseries`` in batches by tiles and squares of :data:`ACROSS_BATCH_M` (a strip along a tile's edge
    is no window to read whole, nor its rows a frame to hold), a file each, whose metadata keeps their status; a
    batch with a file in ``done`` (the files there, the latest of each batch) is not read again, its parcels'
    statuses going to ``status``, unless ``again`` (an update) and the file is of an earlier version (an interrupted
    update resumed reads only the batches it had not written), or the file holds other parcels than the batch (an
    update of no new date within ``time`` whose parcels' tiles changed, and so the batches numbered: the batch's
    file by its number repeated some parcels' rows and lost others'). An update writes files of its own
    (:func:`mosaic_key`); :func:`extract` deletes every other file of a batch once it has run."""
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
        todo.append(_Batch(mosaic_key(i, job.run, job.version.version, job.generation), batch, named, pixels * dates))
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
