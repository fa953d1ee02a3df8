"""``extract()``: statistics of every parcel, every date and band of a territory, in one pass over the cube.

The production job of checks by monitoring. Each time-first chunk already holds a stretch of season for
its pixels, so the cube is read block by block, each block once, instead of scene by scene:

1. Each parcel goes to one tile (the rule of :func:`cube.timeseries.assign_tiles`). Per tile, the parcels
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
   committed pixels never change, so the rows already written stay exact. The manifest lists the scenes
   read per tile and the versions updated from. An update that gained tiles is refused (parcels might
   move to another tile); the few parcels read across tiles are read again whole.

The rare parcel that no tile holds whole (only across UTM zones or at a cube edge), and parcels that overlap
another one (the label layer gives a shared pixel to one parcel only), are read through
``parcel_timeseries`` itself, each with all its own pixels. Every input parcel ends up in
``parcels.parquet`` with its status.

Output::

    <out>/manifest.json                                   cube, collection, version, parameters, scenes read
    <out>/timeseries/tile=<tile>/r<row>c<col>t<t>.parquet  parcel_id, time, band, count, masked, mean, ...
    <out>/timeseries/tile=<tile>/r<row>c<col>t<t>-v<version>.parquet   the same, dates an update added
    <out>/timeseries/tile=mosaic/part.parquet             parcels read across tiles
    <out>/parcels.parquet                                 GeoParquet: every parcel, status, reason, pixels
"""

from __future__ import annotations

import io
import itertools
import json
import math
import os
import time as timer
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from zarr.abc.store import Store

from cardcube import __version__
from cardcube.checkpoints import checkpoint
from cardcube.errors import CardcubeError, CubeNotFoundError, InvalidRequestError, RequestTooLargeError, StoreError
from cardcube.grid import TileGrid
from cardcube.parallel import run_tasks
from cardcube.query import parse_time_range
from cardcube.spec import ChunkLayout
from cardcube.storage import (
    StoreLike,
    canonical_url,
    list_children,
    list_keys,
    open_store,
    read_bytes,
    read_json,
    store_url,
    write_bytes,
    write_json,
)
from cube.dataset import BandReader, check_acquisitions, open_cube, tile_dates
from cube.indices import band_list, bands_for, check_bands, stored_bands
from cube.ledger import CubeVersion, committed_versions, read_version
from cube.membership import DEFAULT_BUFFER
from cube.parcel_layer import ParcelLayer, parcel_layer, parcels_digest, parquet_bytes
from cube.parcel_stats import stats_table
from cube.parcels import ParcelSet, as_parcels, read_parcels, too_small
from cube.pixels import TIME_COLUMNS, ParcelPixels
from cube.stats import STATS, stat_list
from cube.timeseries import (
    ParcelStatus,
    assign_tiles,
    outside_shares,
    parcel_timeseries,
    partly_outside,
    resolve_mask,
)

MANIFEST = "manifest.json"
STATUS = "parcels.parquet"
TIMESERIES = "timeseries"
MOSAIC = f"{TIMESERIES}/tile=mosaic/part.parquet"  # the parcels read one by one (across tiles, overlapping)
MAX_UNIT_BYTES = 2 * 2**30  # stored values a work unit may hold (before its parcels stretch the window)
STATUSES = ("ok", "too_small", "outside", "invalid", "failed")

__all__ = ["ExtractResult", "extract", "read_status", "read_timeseries"]


@dataclass(frozen=True)
class ExtractResult:
    """What an extraction did: where, from which cube version, how many parcels by status, how much.

    ``units`` counts the output files this run wrote (a work unit's block x one run of dates, and the file of
    the parcels read one by one), ``rows`` the rows in them; ``units_resumed`` counts the files it found
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

    @property
    def parcels(self) -> int:
        return sum(self.status.values())

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types: ``cardcube extract --json``."""
        return {"out": self.out, "collection": self.collection, "version": self.version, "status": dict(self.status),
                "units": self.units, "units_resumed": self.units_resumed, "rows": self.rows, "chunks": self.chunks,
                "seconds": self.seconds, "failures": list(self.failures), "phase_seconds": dict(self.phase_seconds)}

    def summary(self) -> str:
        counts = ", ".join(f"{n} {s}" for s, n in self.status.items() if n)
        resumed = f" ({self.units_resumed} already there from an earlier run)" if self.units_resumed else ""
        phases = ", ".join(f"{k} {v:.1f} s" for k, v in self.phase_seconds.items())
        return (f"{self.parcels} parcels ({counts}) from {self.collection} cube version {self.version}: "
                f"{self.rows} rows written in {self.units} file(s){resumed}, {self.chunks} chunks read, "
                f"{self.seconds:.1f} s{f' (worker time: {phases})' if phases else ''} -> {self.out}")


# Times in microseconds: Spark reads no Parquet TIMESTAMP(NANOS), and acquisition times are whole seconds.
PORTABLE_PARQUET: dict[str, Any] = {"coerce_timestamps": "us"}
# Dictionary-encode the repeated strings only, keep min/max statistics on the columns readers filter on
# (parcel, time, band): 3x faster to write than pandas' defaults, and smaller with zstd.
TIMESERIES_PARQUET: dict[str, Any] = {
    "compression": "zstd", "compression_level": 1, "use_dictionary": ["parcel_id", "band", "platform", "orbit_state"],
    "write_statistics": ["parcel_id", "time", "band"], **PORTABLE_PARQUET,
}


def _ids(gdf: gpd.GeoDataFrame, id_column: str) -> list[Any]:
    raw = gdf[id_column].tolist() if id_column in gdf.columns else gdf.index.tolist()
    return [i.item() if isinstance(i, np.generic) else i for i in raw]


def _time_blocks(store: Store, collection: str, tile: str, name: str, version: CubeVersion, time: Any,
                 size: int) -> list[slice]:
    """Runs of at most ``size`` dates of ``tile`` along the stored time chunks: whole chunks while they fit, a
    chunk longer than ``size`` cut in pieces (each decodes the chunk again: time spent for memory saved),
    and a short tail (the few dates of the hot buffer) read with the last run if the two hold at most
    :func:`_longest_run` dates, as each run has a fixed cost."""
    ds = open_cube(store, collection, tiles=[tile], bands=[name], as_of=version, time=time, decode=False)
    runs, start, stop = [], 0, 0
    for n in ds[name].chunks[0]:
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
    return runs


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

    def cost(self) -> int:
        """Pixel-dates to read: what the unit's run time is proportional to."""
        dates = sum(t.stop - t.start for t, _ in self.times)
        return (self.rows.stop - self.rows.start) * (self.cols.stop - self.cols.start) * dates


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

    def chunks_touched(self, rows: slice, cols: slice, ndates: int) -> int:
        """Stored chunks a window of the 10 m grid touches over ``ndates`` dates, all variables."""
        total = 0
        for res in self.resolutions:
            ct, cy, cx = self.layout.chunks(res)
            k = res // 10
            ny = (math.ceil(rows.stop / k) - 1) // cy - rows.start // k // cy + 1
            nx = (math.ceil(cols.stop / k) - 1) // cx - cols.start // k // cx + 1
            total += math.ceil(ndates / ct) * ny * nx
        return total

    def _readers(self, unit: _Unit, selected: np.ndarray, base: float) -> tuple[dict[str, BandReader],
                                                                                  dict[str, np.ndarray]]:
        """A reader of the unit's window of each variable at its native resolution, and the column of each
        selected 10 m window pixel in what it reads: a 20 m band is read at 20 m and indexed, never repeated."""
        w = unit.cols.stop - unit.cols.start
        r, c = unit.rows.start + selected // w, unit.cols.start + selected % w
        windows, index = {}, {}
        for name, res in zip(self.names, self.resolutions, strict=True):
            k = round(res / base)
            rows = slice(unit.rows.start // k, -(-unit.rows.stop // k))
            cols = slice(unit.cols.start // k, -(-unit.cols.stop // k))
            windows[name] = rows, cols
            index[name] = (r // k - rows.start) * (cols.stop - cols.start) + (c // k - cols.start)
        time = self.time if self.dates is None else self.dates[unit.tile]
        return BandReader.open(self.store, self.version, unit.tile, windows, time=time), index

    def __call__(self, unit: _Unit) -> dict[str, Any]:
        layer = ParcelLayer(self.layer_store, unit.layer, unit.tile, pd.DataFrame())
        lab = layer.labels(unit.rows, unit.cols).ravel()
        pos = np.minimum(np.searchsorted(unit.labels, lab), unit.labels.size - 1)
        selected = np.flatnonzero(unit.labels[pos] == lab)
        readers, index = self._readers(unit, selected, layer.geobox.resolution.x)
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
            chunks += self.chunks_touched(unit.rows, unit.cols, dates.stop - dates.start)
            scl = {"SCL": read("SCL", dates, "SCL")} if "SCL" in readers else {}
            meta = {c: coords[c][dates] for c in TIME_COLUMNS if c in coords}
            with spent("statistics"):
                pixels = replace(template, times=coords["time"][dates], values=scl, time_meta=meta)
                clear = pixels.clear(self.mask)  # the cloud mask, once for every band
            results = []
            for wanted, inputs in self.groups:  # one group of bands in memory at a time
                group = replace(pixels, values={**{n: read(n, dates, i) for i, n in enumerate(inputs)}, **scl})
                with spent("statistics"):
                    results += group.band_stats(wanted, stats=self.stats, clear=clear)
            with spent("statistics"):
                table = stats_table(results, per_date=pixels.per_date(self.histogram))
                table = table.append_column("cube_version", pa.array(np.full(table.num_rows, self.version.version,
                                                                             np.int64)))
            with spent("write"):
                write_bytes(self.out, key, parquet_bytes(table, **TIMESERIES_PARQUET))
            checkpoint("extract-unit-written")
            rows += table.num_rows
        return {"parcels": int(unit.ids.size), "chunks": chunks, "rows": rows, "seconds": dict(spent)}


class _Phases(Counter):
    """Seconds a work unit spends in each phase (read, statistics, write): where extraction time goes."""

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        start = timer.perf_counter()
        try:
            yield
        finally:
            self[phase] += timer.perf_counter() - start


def _units(layer: ParcelLayer, *, block: int, times: list[slice], done: set[str], suffix: str = ""
           ) -> tuple[list[_Unit], int]:
    """The home blocks of a tile's labelled parcels, with the date runs whose file is not written yet
    (``suffix``: after the run's start in the file name, to tell an update's files from the first run's).

    A parcel wider or taller than a block (a MultiPolygon with distant parts, a huge pasture) would stretch
    its home block's window without limit: it is a unit of its own, its window its own bounding box, read
    in runs of fewer dates so that the unit holds no more values than a block's (:func:`_shorter_runs`)."""
    ok = layer.index[(layer.index.pixels > 0) & ~layer.index.shared]  # overlapping parcels are read one by one
    wide = (ok.row1 - ok.row0 > block) | (ok.col1 - ok.col0 > block)
    narrow = ok[~wide]
    groups = [(f"r{br * block:05d}c{bc * block:05d}", group, times)
              for (br, bc), group in narrow.groupby([narrow.row0 // block, narrow.col0 // block], sort=True)]
    groups += [(f"r{p.row0:05d}c{p.col0:05d}l{p.label}", ok.loc[[i]],
                _shorter_runs(times, block * block, (p.row1 - p.row0) * (p.col1 - p.col0)))
               for i, p in ok[wide].iterrows()]
    units, resumed = [], 0
    for name, group, runs in groups:
        rows = slice(int(group.row0.min()), int(group.row1.max()))
        cols = slice(int(group.col0.min()), int(group.col1.max()))
        keys = [(t, f"{TIMESERIES}/tile={layer.tile}/{name}t{t.start:04d}{suffix}.parquet") for t in runs]
        todo = tuple((t, k) for t, k in keys if k not in done)
        resumed += len(keys) - len(todo)
        if todo:
            units.append(_Unit(layer.tile, layer.prefix, rows, cols, group.label.to_numpy(np.int64),
                               group.parcel_id.to_numpy(object), todo))
    return units, resumed


def _shorter_runs(times: list[slice], block_pixels: int, window_pixels: int) -> list[slice]:
    """``times`` cut into runs of as many dates as keep ``window_pixels`` within what a block's run holds."""
    step = max(1, max((t.stop - t.start for t in times), default=1) * block_pixels // window_pixels)
    return [slice(a, min(a + step, t.stop)) for t in times for a in range(t.start, t.stop, step)]


def _check_manifest(out: Store, manifest: dict[str, Any], version: CubeVersion, *, time: Any, update: bool,
                    cube: Store) -> dict[str, list[str]] | None:
    """Refuse to mix two extractions in one output: same cube and parameters, and the same version unless
    ``update``. Returns, per tile, the scenes (within ``time``) an update or its resumption adds; None for a
    whole run. ``cube`` is looked up only to say whether an unfinished run's version can still be resumed."""
    old = read_json(out, MANIFEST)
    if old is None:
        others = list_children(out, "")
        if others:  # parcels.parquet would overwrite a parcel file of the same name
            listed = ", ".join(others[:4]) + (" ..." if len(others) > 4 else "")
            raise InvalidRequestError(f"{store_url(out)} holds {listed} but no extraction ({MANIFEST}): extract into "
                                      f"a new or empty --out, so that nothing of yours is overwritten")
        write_json(out, MANIFEST, {**manifest, "complete": False})
        return None
    where = f"{store_url(out)} holds an extraction of version {old.get('version')} of {old.get('cube')}"
    mismatched = [k for k in manifest if k != "version" and old.get(k) != manifest[k]]
    if mismatched:
        raise InvalidRequestError(f"{where} with other {', '.join(mismatched)}; write to a new --out")
    if old["version"] == version.version:  # a re-run: resume what is missing (nothing after an update)
        if "update" in old:
            return old["update"]["scenes"]
        return {t: [] for t in version.tiles} if old.get("updated_from") else None
    if not old.get("complete"):
        if old["version"] not in committed_versions(cube, version.collection):
            raise InvalidRequestError(f"{where}, unfinished, and that version has been expired since (cardcube "
                                      f"expire): it cannot be resumed; write to a new --out")
        raise InvalidRequestError(f"{where}, unfinished: resume it with as_of={old['version']} (--as-of "
                                  f"{old['version']}), or write to a new --out"
                                  f"{' (an update starts from a complete extraction)' if update else ''}")
    if not update:
        raise InvalidRequestError(f"{where}; pass update=True (--update) to add the dates of version "
                                  f"{version.version} to it, or write to a new --out")
    if old["version"] > version.version:
        raise InvalidRequestError(f"{where}, newer than version {version.version}: an update only goes forward")
    if "scenes" not in old:
        raise InvalidRequestError(f"{where}, from before updates: an update starts from an extraction that lists "
                                  f"the scenes it read; write to a new --out")
    gained = sorted(set(version.tiles) - set(old["scenes"]))
    if gained:
        raise InvalidRequestError(f"{where}; the cube has gained tile(s) {', '.join(gained)} since, so parcels may "
                                  f"be read from other tiles now: extract into a new --out")
    new = {tile: [a.scene_id for a in tile_dates(state, time) if a.scene_id not in set(old["scenes"][tile])]
           for tile, state in version.tiles.items()}
    write_json(out, MANIFEST, {**old, "version": version.version, "complete": False,
                               "update": {"from": old["version"], "scenes": new}})
    return new


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
    """
    started = timer.perf_counter()
    if isinstance(out, str | os.PathLike) and "://" not in os.fspath(out) and os.path.isfile(out):
        raise InvalidRequestError(f"out (--out) {os.fspath(out)} is a file: give a folder (made if missing) or an "
                                  f"s3:// prefix for the extraction")
    frame = read_parcels(parcels, id_column=id_column, layer=layer, storage_options=storage_options)
    ps = as_parcels(frame, id_column=id_column, errors="collect")
    store = open_store(cube, storage_options=storage_options, read_only=True)
    version = read_version(store, collection, as_of)
    spec = version.spec
    bands = check_bands(bands, list(spec.band_names), statistics=True)
    stats = stat_list(stats)
    if not isinstance(time, frozenset):
        parse_time_range(time)  # a bad range fails before anything is written to ``out``
    if not update:
        check_acquisitions(version, time)
    mask = resolve_mask(mask, list(spec.band_names), collection)
    names = tuple(stored_bands(bands, spec.band_names, scl=mask is not None or histogram))
    block = spec.chunks.shard_space if block is None else block
    time_block = spec.chunks.time if time_block is None else time_block
    if block < 1:  # the Python name and the option, as both reach here
        raise InvalidRequestError(f"block (--block) must be a positive number of pixels, not {block}")
    if time_block < 1:
        raise InvalidRequestError(f"time_block (--time-block) must be a positive number of dates, not {time_block}")
    unit_bytes = block * block * _longest_run(time_block) * len(names) * 2
    if unit_bytes > MAX_UNIT_BYTES:
        raise RequestTooLargeError(
            f"a work unit of {block} x {block} px x {_longest_run(time_block)} dates x {len(names)} bands would hold "
            f"{unit_bytes / 2**30:.1f} GiB of stored values (limit {MAX_UNIT_BYTES / 2**30:.0f} GiB per task); "
            f"use a smaller block or time_block")

    out_store = open_store(out, storage_options=out_storage_options)
    new = _check_manifest(out_store, {
        "cube": canonical_url(store), "collection": collection, "version": version.version,
        "parcels": parcels_digest(ps), "bands": list(bands), "stats": sorted(stats),
        "mask": None if mask is None else list(mask), "buffer": buffer, "all_touched": all_touched,
        "time": None if time is None else str(time), "histogram": histogram, "block": block,
        "time_block": time_block,
    }, version, time=time, update=update, cube=store)
    dates = None if new is None else {
        tile: frozenset(a.datetime64 for a in version.tiles[tile].acquisitions if a.scene_id in set(new[tile]))
        for tile in version.tiles}
    suffix = "" if new is None else f"-v{version.version:08d}"  # an update's files beside the first run's
    done = set(list_keys(out_store, f"{TIMESERIES}/"))
    layer_store = (store.with_read_only(False) if layers is None else
                   open_store(layers, storage_options=out_storage_options))
    job = _Job(store, out_store, layer_store, collection, version, names, tuple(bands), tuple(stats),
               None if mask is None else tuple(mask), histogram, time, dates)

    status = {pid: ParcelStatus(pid, "invalid", 0, reason) for pid, reason in ps.rejected}
    tiles_of = assign_tiles(version, ps)
    shares = outside_shares(version, ps, tiles_of)
    units: list[_Unit] = []
    units_resumed = rows = chunks = 0
    failures: list[str] = []
    overlapping: list[Any] = []
    for tile in sorted(version.tiles):
        mine = [pid for pid, tiles in zip(ps.ids, tiles_of, strict=True) if tiles == (tile,)]
        if not mine:
            continue
        sub = ps.select(mine)
        try:
            layer = parcel_layer(layer_store, tile, sub, buffer=buffer, all_touched=all_touched, block=block,
                                 scheduler=scheduler, progress=progress)
        except PermissionError as exc:  # a read-only folder, or S3 credentials that may only read
            raise StoreError(f"cannot store the label layer of tile {tile} in {store_url(layer_store)}: {exc}. "
                             f"Keep label layers where you may write: --layers DIR or s3://... (Python: layers=)"
                             + ("; by default they are kept beside the cube" if layers is None else "")) from None
        empty = layer.index.parcel_id[layer.index.pixels == 0].tolist()
        metric = sub.select(empty).to_crs(TileGrid.from_id(tile).crs)  # their area, in m², for the reason
        status.update({pid: ParcelStatus(pid, "too_small", 0, too_small(pid, geom, buffer=buffer).reason, tile)
                       for pid, geom in zip(metric.ids, metric.geometries, strict=True)})
        status.update({pid: ParcelStatus(pid, "ok", pixels, partly_outside(shares[pid]) if pid in shares else "", tile)
                       for pid, pixels in zip(layer.index.parcel_id, layer.index.pixels, strict=True) if pixels})
        overlapping += layer.index.parcel_id[layer.index.shared].tolist()
        selection = time if dates is None else dates[tile]
        times = [] if selection == frozenset() else _time_blocks(store, collection, tile, names[0], version,
                                                                 selection, time_block)
        tile_units, resumed = _units(layer, block=block, times=times, done=done, suffix=suffix)
        units += tile_units
        units_resumed += resumed
    units.sort(key=_Unit.cost, reverse=True)  # longest first: the workers finish together
    spent: Counter[str] = Counter()
    for result in run_tasks(job, [(u,) for u in units], scheduler=scheduler, progress=progress,
                            desc="extract", unit="block", tally=lambda r: {k: r[k] for k in ("parcels", "chunks")}):
        rows += result["rows"]
        chunks += result["chunks"]
        spent.update(result["seconds"])

    for pid in (p for p, tiles in zip(ps.ids, tiles_of, strict=True) if not tiles):
        status[pid] = ParcelStatus(pid, "outside", 0, f"outside the data of every tile of the {collection} cube")
    across = [p for p, tiles in zip(ps.ids, tiles_of, strict=True) if len(tiles) > 1] + overlapping
    files = sum(len(u.times) for u in units)
    if across:
        # an update reads these few parcels' whole season again: a date can be new in one of their tiles only
        earlier = _mosaic_status(out_store) if MOSAIC in done and not (new and any(new.values())) else None
        if earlier is not None:  # an earlier run's file stands, and says how each of its parcels fared
            status.update({s["parcel_id"]: ParcelStatus(**s) for s in earlier})
            units_resumed += 1
        elif (written := _across_tiles(job, ps.select(across), tiles_of, ps, status, failures, buffer=buffer,
                                       all_touched=all_touched)) is not None:
            rows, files = rows + written, files + 1

    _write_status(out_store, frame, id_column, status, set(ps.repaired), version.version)
    counts = pd.Series([s.status for s in status.values()]).value_counts()
    result = ExtractResult(store_url(out_store), collection, version.version,
                           {s: int(counts.get(s, 0)) for s in STATUSES}, files, units_resumed,
                           rows, chunks, timer.perf_counter() - started, tuple(failures), dict(spent))
    old = read_json(out_store, MANIFEST)
    scenes = {tile: [a.scene_id for a in tile_dates(state, time)] for tile, state in sorted(version.tiles.items())}
    history = old.get("updated_from", []) + ([old["update"]["from"]] if "update" in old else [])
    write_json(out_store, MANIFEST, {**{k: v for k, v in old.items() if k != "update"}, "complete": True,
                                     "status": dict(result.status), "scenes": scenes, "updated_from": history,
                                     "software": f"cardcube {__version__}",
                                     "finished": datetime.now(UTC).isoformat(timespec="seconds")})
    return result


def _across_tiles(job: _Job, sub: ParcelSet, tiles_of: list[tuple[str, ...]], ps: ParcelSet,
                  status: dict[Any, ParcelStatus], failures: list[str], *, buffer: float,
                  all_touched: bool) -> int | None:
    """Parcels that no tile holds whole, or that overlap another one, read by ``parcel_timeseries`` into
    one file, whose metadata keeps their status: the rows written, or None if they failed."""
    tiles = {pid: "+".join(t) for pid, t in zip(ps.ids, tiles_of, strict=True)}
    try:
        frame = parcel_timeseries(job.store, sub, collection=job.collection, bands=list(job.bands),
                                  stats=job.stats, mask=job.mask, buffer=buffer, all_touched=all_touched,
                                  time=job.time, as_of=job.version, histogram=job.histogram)
    except CardcubeError as exc:
        failures.append(str(exc))
        for pid in sub.ids:
            status[pid] = ParcelStatus(pid, "failed", 0, str(exc), tiles[pid])
        return None
    for s in frame.attrs["parcel_status"]:
        status[s["parcel_id"]] = ParcelStatus(**s)
    write_bytes(job.out, MOSAIC, parquet_bytes(frame, **PORTABLE_PARQUET))  # pandas keeps ``frame.attrs`` in it
    return len(frame)


def _mosaic_status(out: Store) -> list[dict[str, Any]] | None:
    """The status of the parcels read one by one, from the metadata of an earlier run's file (read whole: a
    fraction of the cube bytes reading those parcels again would take), or None if it does not hold it."""
    data = read_bytes(out, MOSAIC)
    try:
        meta = None if data is None else pq.read_schema(io.BytesIO(data)).metadata
    except pa.ArrowInvalid:
        return None
    return json.loads((meta or {}).get(b"PANDAS_ATTRS", b"{}")).get("parcel_status")


def _write_status(out: Store, frame: gpd.GeoDataFrame, id_column: str,
                  status: Mapping[Any, ParcelStatus], repaired: set[Any], cube_version: int) -> None:
    ids = _ids(frame, id_column)
    table = gpd.GeoDataFrame({
        "parcel_id": ids,
        "status": [status[i].status for i in ids],
        "reason": [status[i].reason for i in ids],
        "tile": [status[i].tile for i in ids],
        "pixels": np.array([status[i].pixels for i in ids], dtype=np.int64),
        "repaired": [i in repaired for i in ids],
        "cube_version": np.full(len(ids), cube_version, dtype=np.int64),
    }, geometry=frame.geometry.to_numpy(), crs=frame.crs)
    write_bytes(out, STATUS, parquet_bytes(table))


def _extraction_store(out: StoreLike, storage_options: Mapping[str, Any] | None) -> Any:
    """The store of the extraction at ``out``, read only; a missing folder is named as no extraction (not as no
    cube, which :func:`open_store` says)."""
    try:
        return open_store(out, storage_options=storage_options, read_only=True)
    except CubeNotFoundError:
        raise InvalidRequestError(f"no extraction at {out}: the folder does not exist (give the --out folder of "
                                  f"cardcube extract)") from None


def _finished(store: Any, *, allow_incomplete: bool) -> dict[str, Any]:
    """The manifest of the extraction at ``store``; a clear error if it holds none, or an unfinished one (its
    files hold only some parcels) and ``allow_incomplete`` is not set."""
    manifest = read_json(store, MANIFEST)
    if manifest is None:
        raise InvalidRequestError(f"no extraction at {store_url(store)}: it has no {MANIFEST} (give the --out folder "
                                  f"of cardcube extract)")
    if not manifest.get("complete") and not allow_incomplete:
        raise InvalidRequestError(f"the extraction at {store_url(store)} is unfinished: its files hold only some "
                                  f"parcels and dates. Resume it with the same cardcube extract command (or pass "
                                  f"allow_incomplete=True to read what is there)")
    return manifest


def read_timeseries(out: StoreLike, *, bands: Sequence[str] | None = None, columns: Sequence[str] | None = None,
                    storage_options: Mapping[str, Any] | None = None, allow_incomplete: bool = False) -> pd.DataFrame:
    """Every statistics row of the extraction at ``out`` (only ``bands``, in any case, and ``columns``, if
    given: one it does not hold is an error), sorted by parcel, time and band, with the ``tile`` it was read
    from (the partition key, as pyarrow's hive partitioning gives it). An unfinished extraction is refused
    unless ``allow_incomplete``.

    Reads all files into memory: for a territory, select the bands and columns you need, or query the
    Parquet dataset with pyarrow, DuckDB or dask instead (``<out>/timeseries/``, partitioned by ``tile=``).
    """
    store = _extraction_store(out, storage_options)
    manifest = _finished(store, allow_incomplete=allow_incomplete)
    keys = list_keys(store, f"{TIMESERIES}/")
    if not keys:
        return pd.DataFrame()
    where = f"the extraction at {store_url(store)}"
    filters = None
    if bands is not None:
        extracted = {b.upper(): b for b in manifest["bands"]}
        bands = [extracted.get(b.upper(), b) for b in band_list(bands)]
        if missing := [b for b in bands if b not in manifest["bands"]]:
            raise InvalidRequestError(f"{where} holds no band {', '.join(missing)}; its bands: "
                                      f"{', '.join(manifest['bands'])}")
        filters = [("band", "in", bands)]
    files = (io.BytesIO(read_bytes(store, k)) for k in keys)
    wanted = None
    if columns is not None:
        wanted = [c for c in dict.fromkeys(["parcel_id", "time", "band", *columns]) if c != "tile"]  # the folder's
        first = next(files)
        names = pq.read_schema(first).names
        if missing := [c for c in wanted if c not in names]:
            raise InvalidRequestError(f"{where} has no column {', '.join(missing)}; its columns: {', '.join(names)}")
        files = itertools.chain([first], files)  # the first file read once, for its schema and its rows
    frames = [pd.read_parquet(f, columns=wanted, filters=filters).assign(tile=k.split("tile=")[1].split("/")[0])
              for k, f in zip(keys, files, strict=True)]
    frame = pd.concat(frames, ignore_index=True)
    return frame.sort_values(["parcel_id", "time", "band"], kind="stable", ignore_index=True)


def read_manifest(out: StoreLike, *, storage_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The manifest of the finished extraction at ``out``: the cube and version it read, its parameters, the scenes
    read per tile."""
    return _finished(_extraction_store(out, storage_options), allow_incomplete=False)


def read_status(out: StoreLike, *, storage_options: Mapping[str, Any] | None = None) -> gpd.GeoDataFrame:
    """The status table of the extraction at ``out``: every input parcel with status, reason, tile, pixels."""
    store = _extraction_store(out, storage_options)
    _finished(store, allow_incomplete=True)
    data = read_bytes(store, STATUS)
    if data is None:
        raise InvalidRequestError(f"no extraction status at {store_url(store)}/{STATUS}: the run has not finished")
    return gpd.read_parquet(io.BytesIO(data))
