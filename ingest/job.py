"""``ingest()``: the one public function that adds source scenes to a cube (see :mod:`ingest.commit`)."""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from zarr.abc.store import Store

from cardcube.checkpoints import checkpoint
from cardcube.counting_store import CountingStore
from cardcube.errors import (
    CorruptDocumentError,
    CorruptShardError,
    InvalidRequestError,
    LockLostError,
    NoDataOnTileError,
)
from cardcube.grid import TileGrid, tile_ids
from cardcube.parallel import STOP_GRACE, check_scheduler, check_workers_see, is_distributed, run_tasks
from cardcube.spec import CUBE_SPECS, ChunkLayout, CubeSpec, cube_spec
from cardcube.storage import (
    StoreLike,
    delete_key,
    list_children,
    listed_lines,
    listed_names,
    local_file,
    open_store,
    read_json,
    refuse_file,
    store_url,
    write_json,
)
from catalog import write_catalog
from catalog.build import CATALOG_ID
from catalog.keys import SOURCES_DIR
from cube import layout
from cube.coordinates import date_columns
from cube.ledger import (
    CubeVersion,
    Rejection,
    TileState,
    check_listed_through,
    committed_versions,
    enclosing_cube,
    head_or_empty,
)
from cube.manifest import (
    BlockManifest,
    ShardKey,
    block_dates,
    block_manifests,
    has_manifest,
    read_manifests,
    write_manifests,
)
from cube.scene_details import warn_lost, with_lost_details
from cube.tile_arrays import sized_view
from cube.verify import lost_newest
from ingest.arrays import clear_blocks, ensure_tile, open_array
from ingest.candidates import check_chosen, check_scenes, refiled_scenes, triage
from ingest.commit import STALE_AFTER, Fence, commit, publish, writer_lock
from ingest.passes import committed_pass_dates, mosaic_parts, mosaic_passes
from ingest.plan import IngestPlan, ShardWrite, plan_ingest
from ingest.repair import Repair, mend_coordinates, needs_scenes, plan_repair
from ingest.sources import load_scenes
from ingest.split import split_scenes, splits_items
from ingest.spool import Spool, is_remote, spool_folder
from ingest.validate import CheckedScene
from ingest.write import StoredShard, rebuild_shards, rewrite_shard, write_shard

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class IngestResult:
    """What one ingest did, with its write figures."""

    collection: str
    cube: str
    version: int | None  # the committed version, None if nothing changed
    added: tuple[str, ...]
    skipped: tuple[str, ...]
    rejected: tuple[Rejection, ...]
    compacted: int
    bytes_written: int
    bytes_new_data: int
    seconds: float
    source_bytes: int = 0
    tiles: tuple[str, ...] = field(default=())
    latest: int | None = None  # the cube's latest version after this run (committed now or before)
    converted: tuple[str, ...] = ()  # scenes added whose backscatter was converted from linear power to dB
    warped: tuple[str, ...] = ()  # scenes added resampled onto the tile grid (``warp``)
    outside: tuple[str, ...] = ()  # scenes left out, on none of the ``tiles`` asked for
    empty: tuple[str, ...] = ()  # pieces of split items left out: no valid pixel on their tile (ingest.split)
    mosaicked: tuple[str, ...] = ()  # slices added into the date of an earlier slice of their pass, products into
    # the date of another product of their acquisition holding another part of the tile (ingest.passes)
    late: tuple[str, ...] = ()  # slices added as dates of their own: their pass's date was committed before
    refiled: tuple[str, ...] = ()  # skipped scenes offered from other files than the cube read them from
    repaired: tuple[str, ...] = ()  # hot dates read again from their files and written anew (``repair``)
    mended: tuple[str, ...] = ()  # cold shards lost or damaged, written again from their dates' files (``repair``)
    details_lost: tuple[str, ...] = ()  # scenes whose details object is missing or wrong, recorded lost (scene_details)
    coordinates: tuple[str, ...] = ()  # objects of the coordinate and per-date arrays (and groups) written again

    @property
    def ok(self) -> bool:
        """True if every offered scene is in the cube (added now or before)."""
        return not self.rejected

    @property
    def write_amplification(self) -> float:
        """Bytes written to the store per compressed byte of new data (nan when nothing was new)."""
        return self.bytes_written / self.bytes_new_data if self.bytes_new_data else float("nan")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types (write amplification None when nothing was new): ``cardcube ingest --json``."""
        amplification = self.write_amplification
        return {"collection": self.collection, "cube": self.cube, "version": self.version, "latest": self.latest,
                "tiles": list(self.tiles),
                "added": list(self.added), "skipped": list(self.skipped),
                "converted": list(self.converted), "warped": list(self.warped), "outside": list(self.outside),
                "empty": list(self.empty), "mosaicked": list(self.mosaicked), "late": list(self.late),
                "refiled": list(self.refiled), "repaired": list(self.repaired),
                "mended": list(self.mended), "details_lost": list(self.details_lost),
                "coordinates": list(self.coordinates),
                "rejected": [r.to_dict() for r in self.rejected], "compacted": self.compacted,
                "bytes_written": self.bytes_written, "bytes_new_data": self.bytes_new_data,
                "source_bytes": self.source_bytes,
                "write_amplification": None if math.isnan(amplification) else amplification, "seconds": self.seconds}

    def summary(self) -> str:
        state = f"committed version {self.version}" if self.version else "nothing to commit" + (
            f" (the cube is at version {self.latest})" if self.latest else "")
        lines = [f"{self.collection} cube at {self.cube}: {state}",
                 f"  added {len(self.added)} scene(s), skipped {len(self.skipped)} already present, "
                 f"rejected {len(self.rejected)}, compacted {self.compacted} hot date(s)"]
        if self.refiled:
            lines.append(f"  of those skipped, {len(self.refiled)} offered from other files than the cube read "
                         f"them from ({listed_names(self.refiled, most=3)}): a "
                         "scene id goes in once; a corrected product under the same id goes into a new cube")
        if self.repaired:
            lines.append(f"  read {len(self.repaired)} hot date(s) again from their files, the bytes the ledger "
                         "records, and wrote them anew (--repair); their old hot slots go with the versions that "
                         "read them (cardcube expire); `cardcube extract --update` reads them again into an "
                         "extraction that read them before (its rows of them may hold the damaged values)")
        if self.mended:
            lines.append(f"  wrote {len(self.mended)} lost or damaged cold shard(s) again from their dates' files, the "
                         "bytes the ledger records, each holding the values ingest wrote there (the crc32 its block's "
                         "manifest records): every version reads them as before (--repair); this version records the "
                         "repair of their dates: `cardcube extract --update` reads them again into an extraction "
                         "that read them while damaged (then flag it anew: cardcube flag)")
        if self.coordinates:
            named = listed_names(self.coordinates, most=3)
            lines.append(f"  wrote {len(self.coordinates)} object(s) of the coordinate and per-date arrays or the "
                         "tiles' groups, found lost, damaged or other, again from the ledger and the tile grid: what a "
                         "plain Zarr reader (xarray.open_zarr, rioxarray) takes the pixels' place and the dates from "
                         f"({named})")
        if self.details_lost:
            lines.append(f"  recorded the band files and checksums of {len(self.details_lost)} scene(s) as lost (their "
                         f"details object of the ledger is missing; their pixels are as they were): "
                         f"{listed_names(self.details_lost, most=3)}")
        if self.outside:
            lines.append(f"  left out {len(self.outside)} scene(s) on none of the tiles asked for")
        if self.empty:
            lines.append(f"  left out {len(self.empty)} tile piece(s) of split items with no data on their tile")
        if self.mosaicked:
            what = ("slice piece(s) into the date of an earlier slice of their pass on the tile"
                    if cube_spec(self.collection).backscatter else "product(s) into the date of another product of "
                    "their acquisition, each holding another part of the tile (a datastrip boundary crosses it)")
            lines.append(f"  mosaicked {len(self.mosaicked)} {what}")
        if self.late:
            lines.append(f"  added {len(self.late)} slice piece(s) as dates of their own: their pass's date on the "
                         "tile was committed by an earlier run, and committed dates never change")
        if self.converted or self.warped:
            lines.append(f"  of those added, {len(self.converted)} converted from linear power to dB, "
                         f"{len(self.warped)} resampled onto the tile grid (the ledger says how, per band)")
        if self.added:
            mb = self.source_bytes / 1e6
            lines.append(f"  {len(self.added) / self.seconds * 60:.1f} scenes/min, {mb / self.seconds:.1f} MB/s of "
                         f"source, wrote {self.bytes_written / 1e6:.1f} MB, write amplification "
                         f"{self.write_amplification:.2f}x")
        # a reason starts "scene <id>: "; a season of items whose signed hrefs had expired: thousands of lines
        lines += listed_lines([f"  rejected {r.reason}" for r in self.rejected],
                              f"scene(s) rejected: `cardcube versions --cube {self.cube} "
                              f"--collection {self.collection}` names each with its reason (so does --json)")
        return "\n".join(lines)


def _resolve_spec(head: CubeVersion, collection: str, chunks: ChunkLayout | None) -> CubeSpec:
    if head.version == 0:
        spec = cube_spec(collection)
        return spec.with_chunks(chunks) if chunks else spec
    if chunks and chunks != head.spec.chunks:
        raise InvalidRequestError(
            f"the {collection} cube already uses chunks {head.spec.chunks.text()}; {chunks.text()} would need a "
            f"new cube (leave chunks, --chunks, out to add to this one)")
    return head.spec


def _counted(write: Callable[..., T], store: Store, *args: Any) -> tuple[int, T]:
    """Run one write task, ``write(store, *args)``: the bytes it stored, and what it returns. Each task counts its
    own writes, which a worker process could not add to the run's ``CountingStore``."""
    counter = CountingStore(store)
    done = write(counter, *args)
    return counter.bytes_written, done


def _mend(counting: CountingStore, spec: CubeSpec, fix: Repair, fence: Fence, *, scheduler: Any, progress: bool,
          stop_grace: float) -> tuple[str, ...]:
    """Write the lost or damaged shards of cold blocks again, in place, before anything else this run writes: those
    ``fix`` found (:func:`ingest.write.rewrite_shard`), and those of the blocks whose manifest is lost, whose manifest
    is then written anew (:func:`ingest.write.rebuild_shards`). The keys written."""
    for r in fix.cold:
        log.warning("repair: %s: %s; written again from its dates' files", r.key, r.problem)
    tasks = [(_rewrite, counting._store, spec, r.write, fence, r.band, r.checksum) for r in fix.cold]
    tasks += [(_rebuild, counting._store, spec, w, fence) for w in fix.unlisted]
    results = run_tasks(_counted, tasks, scheduler=scheduler, desc="writing damaged shards again",
                        progress=progress, unit="shard", stop_grace=stop_grace)
    counting.counts.add("set", n=0, written=sum(n for n, _ in results))
    if fix.unlisted:
        fence.check()
        stored = (s for _, (_, shards) in results for s in shards)
        write_manifests(counting._store, spec.name, _manifests(spec, fix.unlisted, stored))
    return tuple(key for _, (keys, _) in results for key in keys)


def _mended_dates(head: CubeVersion, keys: Sequence[str]) -> list[str]:
    """The scene ids of the cold blocks that shards ``keys`` (written by :func:`_mend`) belong to."""
    blocks = {(k.tile, k.block) for k in map(ShardKey.parse, keys) if k is not None}
    size = head.spec.chunks.time
    return sorted({a.scene_id for tile, block in blocks for a in block_dates(head.tiles[tile], False, block, size)})


def _rewrite(store: Store, spec: CubeSpec, task: ShardWrite, fence: Fence, band: str, checksum: int
             ) -> tuple[list[str], list[StoredShard]]:
    """A repair write of :func:`_mend`: the keys written, and the shards of a manifest written anew (none)."""
    return [rewrite_shard(store, spec, task, band, checksum, fence)], []


def _rebuild(store: Store, spec: CubeSpec, task: ShardWrite, fence: Fence) -> tuple[list[str], list[StoredShard]]:
    """A repair write of :func:`_mend` in a block whose manifest is lost: the keys written, and the block's shards."""
    stored, written = rebuild_shards(store, spec, task, fence)
    return written, stored


def _needs_scenes(left: Sequence[str], coordinates: Sequence[str]) -> str:
    """What to say of a repair offered no scene that finds ``left`` (:func:`ingest.repair.needs_scenes`), having
    written ``coordinates`` again."""
    done = (f"the coordinate and per-date arrays, which need no scene, were written again ({len(coordinates)} "
            "object(s)), nothing else" if coordinates else "nothing was written")
    return (f"repair without a SOURCE: {len(left)} lost or damaged object(s) the latest version reads need the scenes "
            f"of their dates, read again from their files: {'; '.join(left[:3])}{' ...' if len(left) > 3 else ''}; "
            "offer those scenes (`cardcube ingest SOURCE --cube CUBE --repair`, Python: ingest(source, cube, "
            f"repair=True)) or restore the objects from a backup (`cardcube verify` lists each); {done}, and no "
            "version is committed")


def _said_mended(coordinates: Sequence[str]) -> None:
    """Warn of the objects of the coordinate and per-date arrays an ingest of new dates found wrong and wrote again
    (:func:`ingest.repair.mend_coordinates`) before it wrote its dates beside them."""
    if coordinates:
        log.warning("the coordinate and per-date arrays of the tiles this ingest writes: %d object(s) lost, damaged or "
                    "other than the ledger and the tile grid say, written again from them before the new dates "
                    "(%s)", len(coordinates), listed_names(coordinates, most=3))


def _compacted_manifests(store: Store, plan: IngestPlan) -> dict[tuple[str, int], BlockManifest | None]:
    """The manifests of the hot slots ``plan`` moves into cold blocks, by (tile, slot), which their shards are
    checked against (:func:`ingest.write.write_shard`); raises if a slot written with one lost it, since what it
    held can then be checked no more (None: a slot written before manifests)."""
    slots = sorted({(w.tile, True, d.hot_slot) for w in plan.writes for d in w.dates if d.hot_slot is not None})
    found = read_manifests(store, plan.head.spec.name, slots)
    lost = [layout.manifest_key(plan.head.spec.name, t, s, hot=True) for (t, _, s), m in found.items()
            if m is None and has_manifest(plan.head, t, True, s)]
    if lost:
        raise CorruptShardError(
            f"the manifest of {len(lost)} hot-buffer slot(s) this ingest was to move into cold blocks is missing "
            f"({', '.join(lost)}): their shards can be checked no more, and this run commits nothing. Restore it "
            "from a backup, or offer their scenes again with --repair (Python: repair=True), and run it again "
            "(`cardcube verify` lists what else is lost)")
    return {(t, s): m for (t, _, s), m in found.items()}


def _manifests(spec: CubeSpec, writes: Sequence[ShardWrite], stored: Iterable[StoredShard]) -> list[BlockManifest]:
    """The manifests of every time block (cold block, hot slot) that ``writes`` wrote (:mod:`cube.manifest`)."""
    blocks = {(w.tile, w.hot, b) for w in writes for b in w.blocks(spec.chunks.time)}
    return block_manifests(stored, blocks, spec.band_names)


def _write_coords(store: Store, spec: CubeSpec, old: TileState, new: TileState, fence: Fence) -> None:
    """Write the time and acquisition coordinates of the new cold dates and hot slots."""
    new_slots = sorted((h for h in new.hot if h.slot >= old.hot_slots_used), key=lambda h: h.slot)
    parts = [(False, len(old.cold), list(new.cold[len(old.cold):])),
             (True, old.hot_slots_used, [h.acquisition for h in new_slots])]
    for hot, start, acqs in parts:
        if not acqs:
            continue
        stop = start + len(acqs)
        values = date_columns(acqs)
        fence.check()
        for res in spec.resolutions:
            for name, vals in values.items():
                arr = open_array(store, spec, new.tile, res, name, hot=hot, mode="r+")
                sized_view(arr, stop)[start:stop] = vals


def _cube_catalog(store: Store) -> bool:
    """Whether the root ``catalog.json`` is a cube's (:func:`catalog.build.build_catalog`'s id), not the user's."""
    try:
        doc = read_json(store, layout.ROOT_KEY)
    except CorruptDocumentError:
        return False
    return isinstance(doc, dict) and doc.get("id") == CATALOG_ID


def _refuse_others_files(store: Store, collection: str) -> None:
    """A cube no collection of which has a version yet is made in a new or empty location, or in one a run that
    died before its first commit left (the cube's ``zarr.json`` and collection folders): refused where other files
    are, as its ``catalog.json`` and ``zarr.json`` would replace files of those names (the scenes' folder given as
    the cube: its static STAC catalog was overwritten without a word)."""
    if any(committed_versions(store, other) for other in CUBE_SPECS if other != collection):
        return
    names = list_children(store, "")
    own = {"zarr.json", *CUBE_SPECS, "lost+found"}  # and a file system's own, of a volume mounted for the cube
    if layout.ROOT_KEY in names and _cube_catalog(store):  # of a cube wiped (its collections' folders removed)
        own |= {layout.ROOT_KEY, SOURCES_DIR}
    if others := [name for name in names if name not in own and not name.startswith(".")]:
        listed = listed_names(others, most=4)
        raise InvalidRequestError(f"{store_url(store)} holds {listed} but no cube: give --cube (Python: cube=) a new "
                                  "or empty folder or prefix, so that nothing of yours is overwritten (a cube "
                                  "writes its catalog.json and zarr.json there)")


def ingest(
    source: str | os.PathLike | None,
    cube: StoreLike,
    *,
    collection: str = "s2",
    chunks: ChunkLayout | None = None,
    storage_options: Mapping[str, Any] | None = None,
    scheduler: Any = None,
    progress: bool = True,
    wait: float = 0.0,
    catalog: bool = True,
    source_collection: str | None = None,
    stale_after: float = STALE_AFTER,
    linear_power: bool = False,
    warp: bool = False,
    tiles: Iterable[str] | None = None,
    spool: Spool = True,
    stop_grace: float = STOP_GRACE,
    repair: bool = False,
) -> IngestResult:
    """Add the scenes of ``source`` to the ``collection`` cube at ``cube`` as one new version.

    Idempotent (scenes already in are skipped), crash-safe (see :mod:`ingest.commit`), and parallel on
    dask (``scheduler``: threads by default, or a dask-distributed address/Client). Bad scenes are
    rejected with a reason and recorded in the ledger; the others go in. The STAC catalog beside the
    cube is brought up to date after each commit (``catalog=False`` skips it). ``source_collection`` is the
    source's id of the scenes' collection where it is not the cube's own (Earth Search's
    ``sentinel-2-c1-l2a`` for ``sentinel-2-l2a``); assets are matched to bands whatever the provider calls
    them (:mod:`ingest.assets`). ``stale_after``: seconds without a heartbeat after which another
    writer's lock is taken for dead and broken (give every writer of a cube the same value). ``stop_grace``:
    seconds a run stopped while its shard writes run (Ctrl-C, SIGTERM, an error) waits for them to end before it
    lets go of the lock; writes that run on after it keep the lock until it goes stale
    (:class:`TasksStillRunningError`), so that they cannot land over what the next writer commits.

    Two options take scenes that are otherwise rejected, each recorded per scene in the ledger
    (``SceneRecord.converted``, ``SceneRecord.warped``). ``linear_power``: backscatter whose metadata names no
    unit is linear power, stored as 10 log10 of it (an asset's unit or a provider convention, see
    :func:`ingest.values.linear_power_reason`, says so without the option). ``warp``: a scene that is correctly
    georeferenced but not on its tile's pixel grid (another CRS, origin or pixel size, or reaching beyond
    the tile) is resampled onto it (:mod:`ingest.warp`), and an item naming no MGRS tile is split into one scene
    per tile its footprint overlaps (:mod:`ingest.split`), the pieces of one pass's slices on a tile mosaicked
    into one date (:mod:`ingest.passes`); one that misses its tile, or has no valid pixel on it once resampled,
    is still rejected. ``tiles``: only scenes on these MGRS tiles go in (a split item's other
    tiles are not made; one id or several separated by commas in a string, too); the others are left out, neither
    added nor rejected (``IngestResult.outside``).

    ``spool``: where band files read over the network (``https://``, ``s3://``) are kept once checked, so that
    the writes read the bytes checked and hashed, and each is downloaded once (:mod:`ingest.spool`). True: a
    temporary folder, with a local ``scheduler`` only (with a cluster the files are read again from the source);
    a folder (a volume a cluster's workers share, a larger disk): one made in it; False: none, the writes read
    the source again. It takes the disk of the run's checked band files, compressed as in the source, and is
    removed when the run ends, whether it succeeds or fails. Local files are read where they are. A file the
    writes read where it is (local, or remote without a spool) that changed since its check (its size and time,
    or its server's ETag: :func:`ingest.validate.file_stamp`) stops the run, which commits nothing.

    ``repair``: the dates among the offered scenes the cube holds are read again from their files, which must be
    the bytes the ledger records (sha256) (:mod:`ingest.repair`): hot-buffer dates whose shards are lost or damaged
    (checked as ``verify --deep`` checks them; a sound one is left as it is) are written anew, into a new hot slot or
    the cold block a compaction makes (their old slots go with the versions that read them, :mod:`ingest.expire`);
    the lost or damaged shards of a cold block whose dates are all offered are written again in place, each only if
    it gets the values ingest wrote there (its manifest lost: those of its files, and the manifest is written anew).
    A way past a lost or damaged shard without a backup (a hot one stops every compaction of its tile). ``source``
    None (the scenes archived) with ``repair``: only what needs no scene is written (the coordinate and per-date
    arrays, the tiles' groups); the shards the latest version reads are checked as ``verify`` checks them (their
    indexes), and any lost or damaged raises :class:`InvalidRequestError` naming it and the scenes of its dates.

    Every ingest that writes into a committed tile first writes again its coordinate and per-date arrays and its
    groups' ``zarr.json`` found lost, damaged or other than the ledger and the tile grid say, of the dates the
    latest version holds (:func:`ingest.repair.mend_coordinates`, as ``repair`` does for every tile;
    ``IngestResult.coordinates``): its new dates would otherwise be written beside them, or fail on them. An array's
    ``zarr.json`` lost stops it before (publishing the shapes opens every array), naming ``--repair``.
    """
    if source is None and not repair:
        raise InvalidRequestError("ingest needs a source of scenes (SOURCE): only a repair (--repair, repair=True) "
                                  "goes without one, writing again what needs no scene")
    on_catalog = write_catalog if catalog else None
    started = time.perf_counter()
    refuse_file(cube, "the cube")  # it said "cannot read s2/_lock.json ...: File exists"
    check_scheduler(scheduler)  # a wrong address fails before the cube's folder is made
    counting = CountingStore(open_store(cube, storage_options=storage_options))
    store: Store = counting
    spec0 = cube_spec(collection)
    if not committed_versions(counting._store, collection):
        if source is None:
            raise InvalidRequestError(f"no {collection} cube at {store_url(counting._store)} to repair (no committed "
                                      "version): nothing is written")
        if inside := enclosing_cube(counting._store):
            raise InvalidRequestError(f"ingest would make a new cube at {store_url(counting._store)}{inside}")
        _refuse_others_files(counting._store, collection)
    if linear_power and not spec0.backscatter:
        raise InvalidRequestError(f"linear_power=True (--linear-power) is for backscatter: the {collection} cube has "
                                  f"no band in dB")
    options = {"linear_power": linear_power, "warp": warp}
    scenes = [] if source is None else load_scenes(source, spec0, collection=source_collection)
    if warp and splits_items(spec0):  # an item of no tile (a whole GRD footprint): one scene per tile it overlaps
        scenes = split_scenes(scenes)
    outside: list[str] = []
    if tiles is not None:  # "31UFU" or "31UFU,31UGU", not the characters of one id; an unknown id: an error
        wanted = {TileGrid.from_id(t).tile_id for t in tile_ids(tiles)}
        outside = [s.scene_id for s in scenes if s.tile and s.tile not in wanted]
        scenes = [s for s in scenes if not s.tile or s.tile in wanted]  # one of no tile is still rejected
    # the lock is transient bookkeeping, not cube content: it is not counted in bytes_written
    remote = any(is_remote(href) for s in scenes for href in s.assets.values())
    with (writer_lock(counting._store, collection, wait=wait, stale_after=stale_after,
                      remote_workers=is_distributed(scheduler), stop_grace=stop_grace) as fence,
          spool_folder(spool, scheduler=scheduler, remote=remote) as spooled):
        checkpoint("locked")
        # before any download: a worker that did not see the spool (the run's folder in --spool DIR, named by DIR)
        # failed after the checks' downloads, blaming the disk's room
        check_workers_see(scheduler, {"the cube's folder": local_file(counting._store, layout.lock_key(collection)),
                                      "the spool folder": spooled})
        head = head_or_empty(store, spec0)
        check_listed_through(counting._store, collection, head.version)
        if head.version and (lost := lost_newest(counting._store, collection, head.version)):
            raise CorruptDocumentError(f"{lost[1]}; this ingest commits nothing: it would take the lost version's "
                                       "number, and its data for a crashed run's leftovers")
        head, lost, why = with_lost_details(head)  # a details object lost without a backup stops no ingest for good
        warn_lost(lost, "this ingest records them as lost in the version it commits", why)
        spec = _resolve_spec(head, collection, chunks)
        coordinates = []
        if repair and head.version:  # before publish, which opens every array (one without its zarr.json: an error)
            coordinates = mend_coordinates(store, head, fence)
        if head.version:  # roll forward what a crashed run committed but did not publish (idempotent)
            publish(store, head, on_catalog=on_catalog, fence=fence)
        checkpoint("recovered")

        candidates, later, skipped, rejected = triage(scenes, head)
        fix = Repair({}, ())
        if repair and source is None and (left := needs_scenes(store, head, progress=progress)):
            raise InvalidRequestError(_needs_scenes(left, coordinates))
        if repair and source is not None:
            fix = plan_repair(scenes, head, store, lambda found, desc: check_scenes(
                found, spec, options, spooled, scheduler=scheduler, progress=progress, desc=desc), progress=progress)
        again = fix.hot
        # the dates of the cold blocks mended in place, kept until a version records them: a run failing or killed
        # after the mend (a compaction stopped by a damaged hot shard) left no trace, and its rerun found them sound
        pending = [i for i in read_json(store, layout.mending_key(collection)) or () if i in head.scenes]
        mending = sorted({*pending, *(d.acquisition.scene_id for w in fix.cold_writes for d in w.dates)})
        if len(mending) > len(pending):
            fence.check()
            write_json(store, layout.mending_key(collection), mending)
        mended = _mend(counting, spec, fix, fence, scheduler=scheduler, progress=progress, stop_grace=stop_grace)
        redone = {p.scene_id for c in [*again.values(), *(d.scene for w in fix.cold_writes for d in w.dates)]
                  for p in c.slices}
        skipped = [i for i in skipped if i not in redone]
        results, twins, part_of = check_chosen(candidates, later, head, spec, options, spooled, scheduler=scheduler,
                                               progress=progress)
        rejected += twins
        # an acquisition's products each holding part of the tile, a pass's slices: one date
        checked = mosaic_passes(mosaic_parts([r for r in results if isinstance(r, CheckedScene)], part_of))
        late = committed_pass_dates(head, [p.scene for c in checked for p in c.slices])
        for piece, date in late.items():
            log.warning("scene %s: a slice of the pass whose date %s on its tile was committed before; committed "
                        "dates never change, so it goes in as a date of its own", piece, date)
        # a split item's piece with no data on its tile (its nodata collar reaches the tile) is no fault of the
        # item: left out, not rejected, so a routine run offering the item again does not fail on it
        pieces = {s.scene_id for s in candidates if s.item_id}
        found = [r for r in results if isinstance(r, Rejection)]
        empty = [r.scene_id for r in found if r.kind == NoDataOnTileError.__name__ and r.scene_id in pieces]
        rejected += [r for r in found if r.scene_id not in empty]
        checkpoint("validated")

        head = head if head.version else CubeVersion.empty(spec)
        plan: IngestPlan = plan_ingest(head, checked, rejected=rejected, skipped=skipped, again=again,
                                       mended=sorted({*pending, *_mended_dates(head, mended)}), record_lost=bool(lost))
        if mending and plan.new is None:  # the blocks found sound after all: nothing to record
            fence.check()
            delete_key(store, layout.mending_key(collection))
        touched = {c.scene.tile for c in [*checked, *again.values()]}  # the tiles this run writes
        new_bytes = 0
        if plan.new is not None:
            if head.version and not repair:  # a repair mended every tile's; these are the tiles written now
                coordinates = mend_coordinates(store, head, fence, tiles=touched, older=False)
                _said_mended(coordinates)
            hot = _compacted_manifests(store, plan)
            for tile in touched:
                fence.check()  # a tile not in ``head`` is deleted and rebuilt: another writer may have committed it
                ensure_tile(store, spec, TileGrid.from_id(tile), committed=tile in head.tiles)
                blocks = {(w.hot, b) for w in plan.writes if w.tile == tile for b in w.blocks(spec.chunks.time)}
                if tile in head.tiles and clear_blocks(store, spec, tile, blocks, check=fence.check):
                    log.info("tile %s: cleared what a run that died before its commit left where this run writes", tile)
            tasks = [(write_shard, counting._store, spec, w, fence,
                      {d.hot_slot: hot[(w.tile, d.hot_slot)] for d in w.dates if d.hot_slot is not None})
                     for w in plan.writes]
            results = run_tasks(_counted, tasks,
                                scheduler=scheduler, desc="writing shards", progress=progress, unit="shard",
                                stop_grace=stop_grace)
            written = [n for n, _ in results]
            counting.counts.add("set", n=0, written=sum(written))
            # a compacted block holds old (hot) dates too: only the new dates' share is new data
            new_bytes = int(sum(n * w.new_fraction for n, w in zip(written, plan.writes, strict=True)))
            for tile, state in plan.new.tiles.items():
                if state != head.tiles.get(tile):
                    _write_coords(store, spec, head.tiles.get(tile, TileState(tile)), state, fence)
            fence.check()
            write_manifests(store, spec.name, _manifests(spec, plan.writes, (s for _, st in results for s in st)))
            checkpoint("written")
            commit(store, plan.new, fence)
            checkpoint("committed")
            try:
                if mending:  # recorded now (a lock lost first: recorded again by the next ingest)
                    fence.check()
                    delete_key(store, layout.mending_key(collection))
                publish(store, plan.new, on_catalog=on_catalog, fence=fence)
            except LockLostError as exc:  # committed all the same: the next writer publishes it first (step 2)
                log.warning("version %d is committed, but publishing it (array shapes, catalog) is left to the next "
                            "ingest: %s", plan.new.version, exc)
            checkpoint("published")
    checkpoint("unlocked")
    added = tuple(c.scene_id for c in checked)
    # each file once: the pieces of a split item were all checked on the same files, read once
    source_bytes = sum({p.scene.item_id or p.scene_id: p.source_bytes for c in checked for p in c.slices}.values())
    return IngestResult(
        collection=collection, cube=store_url(store), version=plan.new.version if plan.new else None,
        added=added, skipped=tuple(skipped), rejected=tuple(rejected), compacted=plan.compacted,
        refiled=refiled_scenes(scenes, plan.head, skipped),
        bytes_written=counting.bytes_written, bytes_new_data=new_bytes,
        seconds=time.perf_counter() - started, source_bytes=source_bytes,
        tiles=tuple(sorted(touched | {w.tile for w in fix.cold_writes})),
        latest=plan.new.version if plan.new else plan.head.version or None,
        converted=tuple(c.scene_id for c in checked if c.converted),
        warped=tuple(c.scene_id for c in checked if c.warped),
        outside=tuple(outside),
        empty=tuple(empty),
        mosaicked=tuple(p.scene_id for c in checked for p in c.parts[1:]),
        late=tuple(late),
        repaired=tuple(sorted(again)),
        mended=mended,
        details_lost=tuple(sorted(lost)) if plan.new else (),
        coordinates=tuple(coordinates),
    )
