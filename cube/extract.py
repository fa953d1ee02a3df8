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

import logging
import re
import time as timer
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from odc.geo.geom import Geometry
from zarr.abc.store import Store

from cardcube.errors import (
    CardcubeError,
    InvalidRequestError,
    ParcelsWithoutStatisticsWarning,
    StoreError,
    TasksStillRunningError,
)
from cardcube.grid import TileGrid
from cardcube.parallel import STOP_GRACE, check_scheduler, check_workers_see, run_tasks
from cardcube.query import parse_time_selection, time_text
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
)
from cube import layout
from cube.dataset import check_acquisitions, lacks_passes, passes_lacking
from cube.extract_job import PHASES, ExtractJob
from cube.extraction_files import (
    MANIFEST,
    MOSAIC,
    STATUS,
    drop_replaced,
    generation_of,
    held_before_repair,
    is_partial,
    mosaic_batch,
    new_run,
    read_before_repair,
    run_keys,
    run_of,
    statistics_keys,
    superseded,
    version_tag,
    write_status,
    written_as,
)
from cube.extraction_manifest import check_manifest, check_still_of, finish_manifest, refuse_other_parameters
from cube.extraction_reader import holds_extraction, read_manifest, read_status, read_timeseries
from cube.indices import check_bands, stored_bands, units_of
from cube.ledger import CubeVersion, read_version
from cube.membership import DEFAULT_BUFFER, PIXEL_RULE, check_buffer
from cube.parcel_layer import ParcelLayer, parcel_layer, parcels_digest
from cube.parcels import ParcelSet, as_parcels, read_parcels, too_small
from cube.pixels import EARLIER_TIME_COLUMNS, TIME_COLUMNS
from cube.stats import STATS, stat_list
from cube.timeseries import TILE_RULE, ParcelStatus, assign_tiles, outside_reasons, read_notes, resolve_mask
from cube.work_units import (
    AcrossBatch,
    WorkUnit,
    batches_across_tiles,
    home_block_units,
    time_blocks,
    with_neighbours,
    work_unit_size,
)

log = logging.getLogger(__name__)

STATUSES = ("ok", "too_small", "outside", "invalid", "failed")
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


def _in_order(seconds: Mapping[str, float]) -> dict[str, float]:
    """``seconds`` by phase in the order of :data:`PHASES`, whatever order the tasks ended in."""
    return {phase: seconds[phase] for phase in PHASES if phase in seconds}


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
    block, time_block = work_unit_size(spec, len(names), block=block, time_block=time_block)
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
    job = ExtractJob(store, out_store, layer_store, collection, version, names, tuple(bands), tuple(stats),
                     None if mask is None else tuple(mask), histogram, time, dates, buffer, all_touched, run,
                     generation_of(there),  # and the time columns as its first run: one schema in its files
                     tuple(there.get("time_columns", EARLIER_TIME_COLUMNS)))

    status = {pid: ParcelStatus(pid, "invalid", 0, reason) for pid, reason in ps.rejected}
    notes = read_notes(version, ps, tiles_of, time)
    notes.update({pid: "; ".join(filter(None, (notes.get(pid), note))) for pid, note in kept.items()})
    units: list[WorkUnit] = []
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
        times, edges = ([], ()) if selection == frozenset() else time_blocks(store, collection, tile, names[0],
                                                                             version, selection, time_block)
        tile_units, resumed = home_block_units(layer, block=block, times=times, done=done, suffix=suffix,
                                               time_edges=edges, run=run, generation=job.generation)
        units += tile_units
        units_resumed += resumed
    outside = ps.select([p for p, tiles in zip(ps.ids, tiles_of, strict=True) if not tiles])
    status.update({pid: ParcelStatus(pid, "outside", 0, reason)
                   for pid, reason in outside_reasons(version, outside, collection).items()})
    across = [p for p, tiles in zip(ps.ids, tiles_of, strict=True) if len(tiles) > 1]
    # an update reads these parcels' whole season again: a date can be new in one of their tiles only
    again = bool(new and any(new.values()))
    batches, kept_batches = batches_across_tiles(job, ps.select(across), tiles_of, ps, status, done, again=again)
    units_resumed += len(kept_batches)
    # longest first: the workers finish together
    tasks: list[WorkUnit | AcrossBatch] = sorted([*units, *batches], key=lambda t: t.cost(), reverse=True)
    tasks = with_neighbours(tasks, job.chunk_side)  # units that start close by share the chunks they both read
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

