"""``expire()``: forget old cube versions and delete the data only they referred to.

Every append goes to the hot buffer first and is copied into a time-first block when the block fills
(see :mod:`ingest.plan`); the hot copy stays, because older versions still read it. Over a season of
daily appends the hot buffer holds a second copy of nearly every date. Expiring the versions nobody
reads any more lets that copy go.

A version expires once it has been *superseded* (a newer version was committed) for longer than
``older_than``: a reader that took it as the latest has had that long to finish. The latest version
never expires. Under the writer lock (no ingest runs meanwhile), in this order:

1. ``expire-records``  - delete the ledger records of the expired versions, oldest first. From now on
                         ``as_of`` one of them raises :class:`VersionNotFoundError`, as for a version never
                         committed; the remaining records are always the newest ones.
2. ``expire-data``     - delete, per tile, the hot-buffer dates no remaining version lists, and any data
                         a crashed ingest left beyond the latest version's extents (see
                         :mod:`ingest.commit`); then the ledger's details objects no remaining record names
                         (:mod:`cube.scene_details`: of expired versions, or of a run killed before its
                         commit). Nothing a remaining version reads is touched. Then, on S3, abort the
                         multipart uploads under the collection's prefix started more than ``stale_after``
                         ago (:mod:`cardcube.unfinished_uploads`): a writer killed midway through an upload
                         of 100 MiB or more left its parts there, unlisted and billed. A live writer of the
                         collection has none that old: the lock is held, and a lock that long without a
                         heartbeat is taken for dead.

After step 1's deletes, when the latest version names more than ``merge_over`` details objects (one per ingest that
added scenes since the last merge: an ingest and a catalog build read them all), expire merges them: it commits a
version reading the same data (its ``data_from`` the latest's, so no parcel's answer or ETag changes, and the STAC
collection still names the version whose data it reads), whose record names one details object holding every scene's
details, written before it as an ingest's is (``details`` step), and checkpoint ``expire-merged`` after. The objects
merged go with the last version naming them, once it expires in turn.

A kill between or inside the steps leaves every remaining version readable; the next run deletes what
is left over (a merged details object written without its record: no record names it). A reader holding an
expired version in memory (a lazy Dataset, the REST service's pinned
``as_of`` until its next check) finds its hot dates gone, and its read raises :class:`VersionNotFoundError`
(see :func:`cube.ledger.confirm_committed`) rather than return fill: keep ``older_than`` longer than any
read (the default is 7 days).
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

from zarr.abc.store import Store

from cardcube.checkpoints import checkpoint
from cardcube.errors import CorruptDocumentError
from cardcube.grid import is_tile_id
from cardcube.spec import CubeSpec
from cardcube.storage import StoreLike, delete_key, delete_prefix, list_children, list_keys, open_store, store_url
from cardcube.unfinished_uploads import abort_uploads, unfinished_uploads
from catalog.write import published_version, write_catalog
from cube import layout
from cube.coordinates import add_hot_dates
from cube.ledger import CubeVersion, TileState, check_listed_through, commit_time, read_version, read_versions
from cube.scene_details import details_loaded, details_named
from cube.verify import lost_newest
from ingest.arrays import stored_blocks
from ingest.commit import STALE_AFTER, Fence, commit, publish, writer_lock

log = logging.getLogger(__name__)

DEFAULT_OLDER_THAN = timedelta(days=7)
MERGE_OVER = 16  # details objects the latest version may name before expire merges them into one

__all__ = ["DEFAULT_OLDER_THAN", "ExpireResult", "expire", "expired_versions", "garbage_blocks"]


@dataclass(frozen=True, slots=True)
class ExpireResult:
    """What one :func:`expire` deleted (or, with ``dry_run``, would delete)."""

    collection: str
    cube: str
    expired: tuple[int, ...]  # version numbers whose records went
    kept: tuple[int, ...]
    deleted: Mapping[str, int]  # tile -> unreferenced time blocks (hot dates, crash leftovers) of its arrays
    dry_run: bool = False
    details: int = 0  # the ledger's details objects no kept record names (cube.scene_details)
    merged: tuple[int, int] | None = None  # the version committed merging the latest's details objects, how many
    uploads: int = 0  # S3 multipart uploads left unfinished under the collection's prefix (cardcube.unfinished_uploads)
    upload_bytes: int | None = 0  # the bytes of their parts (None: the store did not list them)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types: ``cardcube expire --json``."""
        merged = None if self.merged is None else {"version": self.merged[0], "objects": self.merged[1]}
        return {"collection": self.collection, "cube": self.cube, "expired": list(self.expired),
                "kept": list(self.kept), "deleted": dict(self.deleted), "dry_run": self.dry_run,
                "details": self.details, "merged": merged, "uploads": self.uploads, "upload_bytes": self.upload_bytes}

    def summary(self) -> str:
        verb = "would expire" if self.dry_run else "expired"
        kept = f"versions {self.kept[0]}-{self.kept[-1]}" if len(self.kept) > 1 else f"version {self.kept[0]}"
        parts = "parts not listed" if self.upload_bytes is None else f"{self.upload_bytes / 1e6:.1f} MB of parts"
        return (f"{self.collection} cube at {self.cube}: {verb} {len(self.expired)} version(s), kept {kept}; "
                f"{sum(self.deleted.values())} unreferenced time block(s) of every band "
                f"{'to delete' if self.dry_run else 'deleted'} in {len(self.deleted)} tile(s)"
                + (f", and {self.details} details object(s) of the ledger no kept version names "
                   f"{'to delete' if self.dry_run else 'deleted'}" if self.details else "")
                + (f", and {self.uploads} multipart upload(s) a killed writer left unfinished ({parts}) "
                   f"{'to abort' if self.dry_run else 'aborted'}" if self.uploads else "")
                + (f"; the {self.merged[1]} details objects the latest version names "
                   f"{'would be' if self.dry_run else 'were'} merged into one, named by version {self.merged[0]} "
                   "(the same data)" if self.merged else ""))


def expired_versions(created: Sequence[tuple[int, datetime]], *, now: datetime, older_than: timedelta
                     ) -> list[int]:
    """The versions (of ``(version, created)`` pairs, ascending) superseded for longer than ``older_than``
    at ``now``: those whose successor was committed before ``now - older_than``, up to the first one still read,
    so the records kept are always the newest ones. Never the latest."""
    try:
        cutoff = now - older_than
    except OverflowError:  # before year 1: nothing is that old
        return []
    expired = []
    for (v, _), (_, successor) in pairwise(created):
        if successor > cutoff:  # the oldest only: a record committed under a clock running ahead leaves no gap
            break
        expired.append(v)
    return expired


def garbage_blocks(head: TileState, live_hot: Collection[int], present: Mapping[bool, Iterable[int]], *,
                   time_block: int) -> dict[bool, list[int]]:
    """The time blocks of a tile's arrays that no kept version reads, among those ``present`` in the store
    (by ``hot``: False for the time-first arrays, True for the hot buffer, whose blocks are single dates).

    Hot dates are garbage unless some kept version lists them (``live_hot``: the tile's slots they list);
    time-first blocks only beyond the head's extent (leftovers of a crashed ingest: committed blocks never go)."""
    cold_blocks = len(head.cold) // time_block
    return {False: sorted(b for b in present.get(False, ()) if b >= cold_blocks),
            True: sorted(s for s in present.get(True, ()) if s not in live_hot)}


def _sweep_tile(store: Store, spec: CubeSpec, head: TileState, live_hot: Collection[int], *, dry_run: bool,
                fence: Fence | None) -> int:
    """Delete a tile's unreferenced time blocks in every band array; how many distinct blocks went."""
    gone: set[tuple[bool, int]] = set()
    stored = stored_blocks(store, spec, head.tile)
    for resolution in spec.resolutions:
        for band in spec.bands_at(resolution):
            present = {hot: stored[(resolution, band.name, hot)] for hot in (False, True)}
            for hot, blocks in garbage_blocks(head, live_hot, present, time_block=spec.chunks.time).items():
                path = layout.array_path(spec.name, head.tile, resolution, band.name, hot=hot)
                for block in blocks:
                    if not dry_run:
                        fence.check()  # a new holder of the lock may have committed data past ``head``
                        delete_prefix(store, f"{path}/c/{block}")
                    gone.add((hot, block))
    # after its data: a manifest names what a block holds. Also those of blocks whose data is gone already (a run
    # killed between the two: its re-run found no data there, and left them for good)
    checkpoint("expire-shards")
    listed = _manifest_blocks(store, spec.name, head.tile)
    orphans = {(hot, b) for hot, blocks in garbage_blocks(head, live_hot, listed, time_block=spec.chunks.time).items()
               for b in blocks}
    for hot, block in sorted(gone | orphans) if not dry_run else ():
        fence.check()
        delete_key(store, layout.manifest_key(spec.name, head.tile, block, hot=hot))
    return len(gone)


def _manifest_blocks(store: Store, collection: str, tile: str) -> dict[bool, list[int]]:
    """The time blocks of ``tile`` that have a manifest in the store, by ``hot``."""
    found: dict[bool, list[int]] = {False: [], True: []}
    for name in list_children(store, f"{collection}/{tile}/{layout.MANIFEST_DIR}/"):
        kind, _, number = name.removesuffix(".json").partition("-")
        if kind in ("hot", "cold") and number.isdigit():
            found[kind == "hot"].append(int(number))
    return found


def _sweep_new_tiles(store: Store, collection: str, committed: set[str], *, dry_run: bool,
                     fence: Fence | None) -> dict[str, int]:
    """Delete the folders of tiles no version holds: a new tile's data, written by an ingest killed before it
    committed (what the sweep of the committed tiles never visited). Per tile, the time blocks it had."""
    gone = {}
    for tile in list_children(store, f"{collection}/"):
        if not is_tile_id(tile) or tile in committed:
            continue
        gone[tile] = max(1, len(list_children(store, f"{collection}/{tile}/{layout.MANIFEST_DIR}/")))
        if not dry_run:
            fence.check()
            delete_prefix(store, f"{collection}/{tile}")
    return gone


def _sweep_details(store: Store, collection: str, named: Collection[str], *, dry_run: bool,
                   fence: Fence | None) -> int:
    """Delete the ledger's details objects not ``named`` by a kept version: those of expired versions only, and those
    of runs killed before their commit. How many."""
    gone = [key for key in list_keys(store, layout.ledger_prefix(collection))
            if (name := layout.details_of_key(key)) is not None and name not in named]
    for key in gone if not dry_run else ():
        fence.check()
        delete_key(store, key)
    return len(gone)


def _sweep_uploads(store: Store, collection: str, *, stale_after: float, dry_run: bool,
                   fence: Fence | None) -> tuple[int, int | None]:
    """Abort the S3 multipart uploads under ``collection``'s prefix started more than ``stale_after`` seconds ago:
    a killed writer's (a live one's are younger: its lock would be taken for dead). How many, and the bytes of their
    parts (None if the store did not list them). A store refusing to list or abort them is warned of, not failed."""
    started_before = datetime.now(UTC) - timedelta(seconds=stale_after)  # the store's clock against this host's
    uploads = unfinished_uploads(store, f"{collection}/", started_before=started_before)
    if uploads is None or not (dry_run or abort_uploads(store, uploads, check=fence.check)):
        log.warning("the store at %s refused to %s the multipart uploads left unfinished under %s/ (the keys lack "
                    "s3:%s, or the store has no such request): a writer killed midway through an upload of 100 MiB "
                    "or more leaves its parts there, billed; a bucket lifecycle rule AbortIncompleteMultipartUpload "
                    "aborts them", store_url(store), "list" if uploads is None else "abort", collection,
                    "ListBucketMultipartUploads" if uploads is None else "AbortMultipartUpload")
        return 0, 0
    sizes = [u.size for u in uploads]
    return len(uploads), None if None in sizes else sum(sizes)


def _details_to_merge(head: CubeVersion) -> dict | None:
    """Every scene's details ``head`` names (:func:`cube.scene_details.details_loaded`), what a merge writes; None,
    with a warning, if one of the objects cannot be read (verify says what to do: an ingest records a lost one's
    scenes as lost). A dry run asks too, so that it reports no merge the run would not make."""
    try:
        return details_loaded(head)
    except CorruptDocumentError as exc:
        log.warning("the details objects of the ledger the latest version names were not merged: %s", exc)
        return None


def _merge_details(store: Store, head: CubeVersion, fence: Fence) -> CubeVersion | None:
    """Commit the version after ``head`` reading the same data, whose record names one details object holding every
    scene's details, and return it; None if they cannot be read (:func:`_details_to_merge`)."""
    if (scenes := _details_to_merge(head)) is None:
        return None
    new = head.next(tiles=dict(head.tiles), scenes=scenes, added=(), rejected=head.rejected)
    commit(store, new, fence)  # its details object first, then its record: created once each, as an ingest's
    checkpoint("expire-merged")
    return read_version(store, head.collection, new.version)  # as stored: naming its details object, for the sweep


def _created(store: Store, version: CubeVersion) -> datetime:
    """When ``version`` was committed, as its ledger record says; a record without a readable UTC time is damaged
    (expire would have to guess which versions are old)."""
    if (created := commit_time(version)) is None:
        raise CorruptDocumentError(
            f"{layout.ledger_key(version.collection, version.version)} in {store_url(store)} records no UTC time of "
            f"its commit (created: {version.created!r}): nothing expired; restore the record from a backup")
    return created


def _commit_times(store: Store, collection: str) -> list[tuple[int, datetime]]:
    """(version, commit time) of every committed version of ``collection``, oldest first; each record read and let go
    (:func:`_created` of it), not held: a record of 10 tiles x 490 dates is some 10 MB in memory, and a history of 50
    held at once took 0.7 GB, though the versions kept are the newest few."""
    return [(version.version, _created(store, version)) for version in read_versions(store, collection)]


def expire(
    cube: StoreLike,
    collection: str = "s2",
    *,
    older_than: timedelta = DEFAULT_OLDER_THAN,
    dry_run: bool = False,
    wait: float = 0.0,
    stale_after: float = STALE_AFTER,
    storage_options: Mapping[str, Any] | None = None,
    now: datetime | None = None,
    merge_over: int | None = MERGE_OVER,
) -> ExpireResult:
    """Expire the versions of ``collection`` superseded for longer than ``older_than`` (at ``now``, default
    the current time) and delete the data only they read (see the module text). ``dry_run`` reports
    without deleting, and without the lock (an ingest running meanwhile is not kept waiting; what it has written
    but not committed yet counts as leftovers then). Takes the writer lock, waiting up to ``wait`` seconds for a
    running ingest, and checks it is still held before each delete (``stale_after``: see :func:`ingest.job.ingest`).
    ``merge_over``: merge the details objects the latest version names when more (and more than one; None: never)."""
    # a missing folder says so; CUBE/catalog.json (a STAC browser's address) names the cube, as for every reader
    store = open_store(layout.cube_root(cube), storage_options=storage_options, read_only=True)
    read_version(store, collection)  # no cube here: a clear error, and no lock left behind
    store = store if dry_run else store.with_read_only(False)
    lock = nullcontext(None) if dry_run else writer_lock(store, collection, wait=wait, stale_after=stale_after,
                                                          command="expire")
    with lock as fence:  # a dry run deletes nothing: it keeps no ingest waiting
        created = _commit_times(store, collection)
        check_listed_through(store, collection, created[-1][0])  # a version not listed yet: its data no leftovers
        if lost := lost_newest(store, collection, created[-1][0]):  # its blocks are no leftovers
            raise CorruptDocumentError(f"{lost[1]}; nothing expired")
        expired = expired_versions(created, now=now or datetime.now(UTC), older_than=older_than)
        kept, live_hot, named, head = [], {}, set(), None
        for version in read_versions(store, collection, [v for v, _ in created if v not in expired]):
            kept.append(version.version)  # each record let go once read: what the sweeps need of it is kept
            add_hot_dates(live_hot, version)  # the slots (keys) some kept version lists, by tile
            named |= details_named(version)
            head = version
        for number in expired if not dry_run else ():
            fence.check()
            delete_key(store, layout.ledger_key(collection, number))
        merged = None
        if merge_over is not None and len(in_head := details_named(head)) > max(merge_over, 1):  # 1: merged
            if dry_run:
                merged = None if _details_to_merge(head) is None else (head.version + 1, len(in_head))
            elif (new := _merge_details(store, head, fence)) is not None:
                kept.append(new.version)
                named |= details_named(new)
                head = new
                merged = (new.version, len(in_head))
        if not dry_run:  # the head published (idempotent), as the next ingest does first: an ingest killed after its
            # commit left it unpublished; a catalog naming a version now gone (or gone by a run killed before) redone
            published = published_version(store, collection)
            force = published is not None and published not in kept
            on_catalog = None if published is None else lambda s, v: write_catalog(s, v, force=force)  # a cube's own
            publish(store, head, on_catalog=on_catalog, fence=fence)
        checkpoint("expire-records")
        deleted = {tile: _sweep_tile(store, head.spec, state, live_hot.get(tile, {}), dry_run=dry_run, fence=fence)
                   for tile, state in sorted(head.tiles.items())}
        deleted.update(_sweep_new_tiles(store, collection, set(head.tiles), dry_run=dry_run, fence=fence))
        details = _sweep_details(store, collection, named, dry_run=dry_run, fence=fence)
        uploads, upload_bytes = _sweep_uploads(store, collection, stale_after=stale_after, dry_run=dry_run,
                                               fence=fence)
        checkpoint("expire-data")
    merging = (merged[0],) if dry_run and merged else ()  # the version the run would commit, kept as its merge is
    result = ExpireResult(collection, store_url(store), tuple(expired), tuple(kept) + merging,
                          deleted, dry_run=dry_run, details=details, merged=merged, uploads=uploads,
                          upload_bytes=upload_bytes)
    log.info("%s", result.summary())
    return result
