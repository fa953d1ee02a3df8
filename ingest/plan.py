"""The ingest planner: from the current state and checked scenes to write tasks and the next state.

Pure: no store, no files. Layout rule (why appends stay cheap):

* Time-first ("cold") arrays only ever receive whole time blocks of ``chunks.time`` dates, each block
  written once into new shards. Nothing already committed is rewritten.
* Dates that do not fill a block wait in the *hot buffer*: arrays with one date per chunk, where each
  new date occupies a fresh slot (slots are never reused).
* Whenever the hot dates plus the new ones fill a block, the oldest ``chunks.time`` of them are
  compacted into the next cold block.

So every date is written at most twice (hot, then cold): the initial load writes once (~1x) and a
season of one-date appends about twice (~2x) - against ``(T + 1) / 2`` for rewriting a growing time
chunk on every append. Because the rule is deterministic, ingesting in batches yields the same cube
as ingesting everything at once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from cardcube.grid import TILE_SIZE_M
from cardcube.source_files import shown_href
from cardcube.spec import CubeSpec
from cube.ledger import (
    Acquisition,
    CubeVersion,
    HotSlot,
    Rejection,
    ScenePart,
    SceneRecord,
    TileState,
    footprint_record,
)
from ingest.passes import within_pass_gap
from ingest.validate import CheckedScene, Window


@dataclass(frozen=True, slots=True)
class DateSource:
    """Where the pixels of one date come from: a checked source scene, or a committed hot slot."""

    acquisition: Acquisition
    windows: dict[int, Window]
    scene: CheckedScene | None = None
    hot_slot: int | None = None
    repaired: bool = False  # a date the cube holds, read again from its files (``scene``) by a repair

    @property
    def is_new(self) -> bool:
        return self.scene is not None and not self.repaired


@dataclass(frozen=True, slots=True)
class ShardWrite:
    """Write ``dates`` into one shard-aligned region of a tile's arrays at one resolution."""

    tile: str
    resolution: int
    hot: bool
    time_start: int
    dates: tuple[DateSource, ...]
    rows: tuple[int, int]
    cols: tuple[int, int]

    @property
    def new_fraction(self) -> float:
        return sum(d.is_new for d in self.dates) / len(self.dates)

    def blocks(self, time_block: int) -> range:
        """The time blocks the write fills: its cold block of ``time_block`` dates, or one hot slot per date (a hot
        slot is a shard of its own)."""
        if self.hot:
            return range(self.time_start, self.time_start + len(self.dates))
        return range(self.time_start // time_block, self.time_start // time_block + 1)


@dataclass(frozen=True, slots=True)
class IngestPlan:
    """What one ingest will do. ``new`` is None when there is nothing to commit."""

    head: CubeVersion
    new: CubeVersion | None
    writes: tuple[ShardWrite, ...]
    skipped: tuple[str, ...]
    compacted: int  # hot dates moved into cold blocks


def acquisition_of(checked: CheckedScene) -> Acquisition:
    s = checked.scene
    return Acquisition(time=s.time, scene_id=s.scene_id, platform=s.platform, relative_orbit=s.relative_orbit,
                       orbit_state=s.orbit_state, cloud_cover=s.cloud_cover)


def shard_writes(spec: CubeSpec, tile: str, *, hot: bool, time_start: int,
                 dates: list[DateSource]) -> list[ShardWrite]:
    """One write per shard (at each resolution) that any of ``dates`` has pixels in."""
    out = []
    for res in spec.resolutions:
        side = spec.chunks.shards(res, hot=hot)[1]
        touched: set[tuple[int, int]] = set()
        for d in dates:
            r, c, h, w = d.windows[res]
            touched.update((i, j) for i in range(r // side, (r + h - 1) // side + 1)
                           for j in range(c // side, (c + w - 1) // side + 1))
        out += [shard_write(spec, tile, res, i, j, hot=hot, time_start=time_start, dates=dates)
                for i, j in sorted(touched)]
    return out


def shard_write(spec: CubeSpec, tile: str, resolution: int, row: int, col: int, *, hot: bool, time_start: int,
                dates: Sequence[DateSource]) -> ShardWrite:
    """The write of ``dates`` into the shard at ``row``, ``col`` of the shard grid at ``resolution`` (the tile's
    edge shards are cut at its edge)."""
    side, n = spec.chunks.shards(resolution, hot=hot)[1], round(TILE_SIZE_M / resolution)
    return ShardWrite(tile, resolution, hot, time_start, tuple(dates), (row * side, min((row + 1) * side, n)),
                      (col * side, min((col + 1) * side, n)))


def _sources(checked: CheckedScene) -> dict[str, str]:
    """The file read for each band of ``checked``, as the ledger keeps it: a signed URL without its signature (a
    credential, which ``catalog serve`` would publish with the ledger; the checksums name the bytes read)."""
    return {band: shown_href(href) for band, href in checked.scene.assets.items() if band in checked.checksums}


def plan_ingest(head: CubeVersion, checked: list[CheckedScene], *, rejected: list[Rejection] = (),
                skipped: list[str] = (), again: Mapping[str, CheckedScene] | None = None,
                mended: Sequence[str] = (), record_lost: bool = False) -> IngestPlan:
    """Plan adding ``checked`` scenes to ``head``: the write tasks and the next version's state. ``again``: hot
    dates of ``head`` read again from their files, by scene id, written anew (a new slot, or a cold block);
    ``mended``: cold dates whose block a repair wrote into, in place (already written): the version records them,
    so that what was read of them before (an extraction, a cached answer) can tell. ``record_lost``: ``head`` holds
    scenes whose details object is missing, or holds them not as the record says
    (:func:`cube.scene_details.with_lost_details`): a version is committed even with nothing new, recording them
    as lost, so that the head names that object for them no more."""
    again = again or {}
    spec = head.spec
    block = spec.chunks.time
    tiles = dict(head.tiles)
    scenes = dict(head.scenes)
    writes: list[ShardWrite] = []
    compacted = 0
    version = head.version + 1
    for tile in sorted({c.scene.tile for c in [*checked, *again.values()]}):
        state = tiles.get(tile, TileState(tile))
        pending = []
        for h in state.hot:
            sid = h.acquisition.scene_id
            if sid in again:  # written anew by this version
                pending.append(DateSource(h.acquisition, again[sid].windows, scene=again[sid], repaired=True))
                scenes[sid] = replace(scenes[sid], version=version)
            else:
                pending.append(DateSource(h.acquisition, scenes[sid].windows, hot_slot=h.slot))
        for c in (c for c in checked if c.scene.tile == tile):
            pending.append(DateSource(acquisition_of(c), c.windows, scene=c))
            parts = tuple(ScenePart(p.scene_id, p.scene.item_id, p.scene.time, p.checksums, _sources(p),
                                    dict(p.converted), dict(p.warped)) for p in c.parts)
            scenes[c.scene_id] = SceneRecord(c.scene_id, tile, c.scene.time, version, c.checksums, c.windows,
                                             c.scene.collection, _sources(c), c.scene.processing_baseline,
                                             converted=dict(c.converted), warped=dict(c.warped),
                                             item=c.scene.item_id, parts=parts,
                                             footprint=None if c.footprint is None else footprint_record(c.footprint))
        pending.sort(key=lambda d: (d.acquisition.time, d.acquisition.scene_id))
        cold = list(state.cold)
        while len(pending) >= block:
            dates, pending = pending[:block], pending[block:]
            writes += shard_writes(spec, tile, hot=False, time_start=len(cold), dates=dates)
            cold += [d.acquisition for d in dates]
            compacted += sum(not d.is_new for d in dates)
        hot, used = [], state.hot_slots_used
        for d in pending:
            if d.hot_slot is None:
                writes += shard_writes(spec, tile, hot=True, time_start=used, dates=[d])
                hot.append(HotSlot(used, d.acquisition))
                used += 1
            else:
                hot.append(HotSlot(d.hot_slot, d.acquisition))
        tiles[tile] = TileState(tile, tuple(cold), tuple(hot), used)
    for sid in mended:
        scenes[sid] = replace(scenes[sid], version=version)
    added = tuple(c.scene_id for c in checked)
    outstanding = outstanding_rejections(head, scenes, rejected)
    if not added and not again and not mended and not record_lost and set(outstanding) == set(head.rejected):
        return IngestPlan(head, None, (), tuple(skipped), 0)  # nothing new, not even a rejection: no version
    new = head.next(tiles=tiles, scenes=scenes, added=added, rejected=outstanding,
                    repaired=tuple(sorted({*again, *mended})))
    return IngestPlan(head, new, tuple(writes), tuple(skipped), compacted)


def outstanding_rejections(head: CubeVersion, scenes: dict[str, SceneRecord], rejected: list[Rejection]
                           ) -> tuple[Rejection, ...]:
    """What the next version records as rejected: each scene rejected by this run or an earlier one and not
    in ``scenes`` (the cube's), once, with its latest reason, by scene id. Carried from version to version,
    a rejection outlives the expiry of the version that made it, so an operator whose daily run offers only
    new scenes can still find the ones to fix and offer again. An item of no tile split into pieces
    (:mod:`ingest.split`) is in once a piece is: its rejection without ``warp`` is then settled, and each piece
    left out keeps a rejection of its own; so is a slice mosaicked into its pass's date (:mod:`ingest.passes`).
    So is a product of an acquisition the cube holds from another product (:func:`_acquisition_held`): nothing is
    left to fix, and a committed date never changes (offered again, it is refused as a duplicate)."""
    gone = {i for r in scenes.values() for i in (*r.piece_ids, *r.items)}
    latest = {r.scene_id: r for r in [*head.rejected, *rejected] if r.scene_id not in gone}  # the last one wins
    held = _acquisition_held(scenes, per_tile=not head.spec.backscatter)
    return tuple(latest[scene_id] for scene_id in sorted(latest) if not held(latest[scene_id]))


def _acquisition_held(scenes: Mapping[str, SceneRecord], *, per_tile: bool) -> Callable[[Rejection], bool]:
    """Whether the acquisition a rejection names (its ``tile`` and ``time``; none in records older than them) is a
    date of ``scenes``: in a cube of per-tile products (Sentinel-2), a product of the tile within one pass
    (:func:`ingest.passes.within_pass_gap`, as :meth:`ingest.passes.Product.same_acquisition` tells two products of
    an acquisition apart); in one of backscatter slices, each holding its part of the tile, a slice of the same
    time only."""
    times: dict[str, list[str]] = {}
    for r in scenes.values():
        times.setdefault(r.tile, []).extend({r.time, *(p.time for p in r.parts)})

    def held(rejection: Rejection) -> bool:
        if not rejection.tile or not rejection.time:
            return False
        on_tile = times.get(rejection.tile, ())
        if per_tile:
            return any(within_pass_gap(t, rejection.time) for t in on_tile)
        return rejection.time in on_tile

    return held
