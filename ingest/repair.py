"""Repair: dates a cube holds, read again from the files they were read from, where their shards were lost or damaged.

``ingest(repair=True)`` offers scenes the cube holds; each must be the bytes the ledger records (sha256 of every
band file, of every slice of a mosaicked pass). Then:

* a *hot* date (one hot-buffer slot) whose shards are lost or damaged, as ``verify --deep`` finds them, is written
  anew, into a new slot or the cold block of a compaction (:func:`ingest.plan.plan_ingest`'s ``again``); its old
  slot goes with the versions that read it (``expire``). A lost or damaged hot shard otherwise stops every
  compaction of its tile. A sound one is not written (it was, as a new slot and a version of its own); one whose
  manifest is lost, or written before manifests, cannot be checked and is written anew.
* a *cold* block is written once and read by every version since, so it is mended in place: its shards are
  checked as ``verify --deep`` checks them, and each lost or damaged one is written again, only if the values read
  again are those ingest wrote there (the crc32 the block's manifest records). Every version reading the block
  then reads what it read before the damage. Every date of the block must be offered; a sound block is not
  written. A block whose manifest is lost has nothing to check against but its dates' files: each shard is
  compared with the values read again, kept if it holds them, written again if lost or undecodable, and the
  manifest is written anew from them; a shard holding other values stops the repair (which is right, no record
  tells). A block written before manifests cannot be checked, and is not repaired.
* the coordinate and per-date arrays beside the bands (``x``, ``y``, ``time``, ``scene_id``, ...), which a plain Zarr
  reader takes the pixels' place and the dates from, found lost, damaged or other than the tile grid and the ledger
  say (as ``verify`` finds them, :mod:`cube.coordinates`), are written again from those (:func:`mend_coordinates`):
  no scene is read for them, and no version committed (the ledger is as it was).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

from zarr.abc.store import Store

from cardcube.errors import CorruptDocumentError, InvalidRequestError, VersionNotFoundError
from cardcube.storage import listed_names
from cube.coordinates import add_hot_dates, coordinate_problems
from cube.ledger import Acquisition, CubeVersion, Rejection, SceneRecord, committed_versions, read_version
from cube.manifest import ShardKey, block_dates, has_manifest, read_manifests
from cube.scene_details import lost_in
from cube.verify import ListedShard, block_problems, check_shards, listed_shards
from ingest.arrays import rewrite_coordinates
from ingest.commit import Fence
from ingest.passes import mosaic
from ingest.plan import DateSource, ShardWrite, shard_write, shard_writes
from ingest.sources import SourceScene
from ingest.validate import CheckedScene

log = logging.getLogger(__name__)

Checker = Callable[[list[SourceScene], str], Mapping[str, CheckedScene | Rejection]]  # scenes, progress text


@dataclass(frozen=True, slots=True)
class ShardRepair:
    """One lost or damaged shard of a cold block to write again: ``write`` holds its region and the block's dates
    read again; ``checksum`` is the crc32 its manifest records of the values ingest wrote there."""

    write: ShardWrite
    band: str
    checksum: int
    key: str
    problem: str


@dataclass(frozen=True, slots=True)
class Repair:
    """What a repair does: the hot dates to write anew (by scene id), the cold shards to write again, and the
    shard regions of the cold blocks whose manifest is lost, with their dates read again
    (:func:`ingest.write.rebuild_shards`)."""

    hot: dict[str, CheckedScene]
    cold: tuple[ShardRepair, ...]
    unlisted: tuple[ShardWrite, ...] = ()

    @property
    def cold_writes(self) -> tuple[ShardWrite, ...]:
        """Every write into the committed cold blocks, with the dates it reads again."""
        return (*(r.write for r in self.cold), *self.unlisted)


def plan_repair(scenes: Sequence[SourceScene], head: CubeVersion, store: Store, check: Checker, *,
                progress: bool) -> Repair:
    """The repair of what ``head`` holds of the offered ``scenes`` (see the module text); raises
    :class:`InvalidRequestError`, before anything is written, for a date that cannot be read again as it was or a
    damaged cold block whose dates are not all offered. ``check``: each scene checked, by scene id."""
    spec = head.spec
    size = spec.chunks.time
    slot_of = {h.acquisition.scene_id: (tile, h.slot) for tile, state in head.tiles.items() for h in state.hot}
    cold_of = {a.scene_id: (tile, i // size) for tile, state in head.tiles.items()
               for i, a in enumerate(state.cold[:len(state.cold) // size * size])}
    of = {p: r for r in head.scenes.values() if r.scene_id in slot_of or r.scene_id in cold_of for p in r.piece_ids}
    offered = {of[s.scene_id].scene_id for s in scenes if s.scene_id in of}
    if not offered:
        log.warning("repair: none of the offered scenes is a date of the cube, so none is read again (the scenes of a "
                    "pass split with warp need --warp)")
        return Repair({}, ())
    blocks = [(tile, False, block) for tile, block in sorted({cold_of[i] for i in offered if i in cold_of})]
    blocks += sorted((slot_of[i][0], True, slot_of[i][1]) for i in offered if i in slot_of)
    damaged, unlisted, unchecked = _damaged_shards(store, head, blocks, progress=progress)
    broken_hot = {(k.tile, k.block) for k, _, _ in damaged if k.hot} | {(t, b) for t, hot, b in unlisted if hot}
    broken_hot |= {(t, b) for t, hot, b in unchecked if hot}  # written before manifests: written anew, as ever
    needed = [i for i in sorted(offered) if i in slot_of and slot_of[i] in broken_hot]
    damaged = [d for d in damaged if not d[0].hot]
    unlisted = [(t, b) for t, hot, b in unlisted if not hot]
    found: dict[tuple[str, int], list[str]] = {}
    for k, shard, problem in damaged:
        found.setdefault((k.tile, k.block), []).append(f"{shard.key}: {problem}")
    broken = {b: f"{len(said)} lost or damaged shard(s) ({said[0]})" for b, said in found.items()}
    broken.update({b: "lost its manifest" for b in unlisted})
    for (tile, block), what in sorted(broken.items()):
        dates = [a.scene_id for a in block_dates(head.tiles[tile], False, block, size)]
        if missing := [i for i in dates if i not in offered]:
            raise InvalidRequestError(
                f"repair: cold block {block} of tile {tile} has {what}, and a shard holds all the block's "
                f"{len(dates)} dates: offer the scenes of them all ({', '.join(missing)} not offered); this run "
                "commits nothing")
        needed += [i for i in dates if i not in needed]
    read = _read_again([head.scenes[i] for i in needed], scenes, check, progress=progress)

    def sources(tile: str, block: int) -> list[DateSource]:  # the block's dates, read again
        return [DateSource(a, read[a.scene_id].windows, scene=read[a.scene_id], repaired=True)
                for a in block_dates(head.tiles[tile], False, block, size)]

    cold = []
    for k, shard, problem in damaged:
        write = shard_write(spec, k.tile, spec.band(k.band).resolution, k.row, k.col, hot=False,
                            time_start=k.block * size, dates=sources(k.tile, k.block))
        cold.append(ShardRepair(write, k.band, shard.checksum, shard.key, problem))
    rebuilt = [w for tile, block in unlisted
               for w in shard_writes(spec, tile, hot=False, time_start=block * size, dates=sources(tile, block))]
    return Repair({i: read[i] for i in needed if i in slot_of}, tuple(cold), tuple(rebuilt))


def needs_scenes(store: Store, head: CubeVersion, *, progress: bool) -> list[str]:
    """What of the time blocks ``head`` reads is lost or damaged, as ``verify`` finds it (each shard's index read),
    that only the scenes of its dates read again or a backup can mend, each with those scenes: what a repair offered
    no scene (no SOURCE) cannot do."""
    size, said = head.spec.chunks.time, []
    for block, key, problem in block_problems(store, head, progress=progress):
        if block is None:  # a band array's zarr.json: none of its shards can be read
            said.append(f"{key}: {problem} (restore it from a backup)")
            continue
        tile, hot, b = block
        dates = [a.scene_id for a in block_dates(head.tiles[tile], hot, b, size)]
        said.append(f"{key}: {problem} (the {'hot slot' if hot else 'cold block'}'s dates: "
                    f"{listed_names(dates, most=4)})")
    return said


def mend_coordinates(store: Store, head: CubeVersion, fence: Fence, *, tiles: Collection[str] | None = None,
                     older: bool = True) -> list[str]:
    """Write the coordinate and per-date arrays of ``head``'s tiles (of ``tiles`` alone, if given) found lost,
    damaged or other than the tile grid and the ledger say again (:func:`ingest.arrays.rewrite_coordinates`), the hot
    slots' from every kept version (a record that cannot be read leaves its slots unchecked), or with ``older`` False
    those ``head`` holds alone (the older records unread: a few MB each at a season's size); the keys written."""
    hot_dates: dict[str, dict[int, Acquisition]] = {}
    for n in committed_versions(store, head.spec.name) if older else ():
        if n >= head.version:
            continue
        try:  # one record at a time: only its hot slots' dates are kept
            add_hot_dates(hot_dates, read_version(store, head.spec.name, n))
        except (VersionNotFoundError, CorruptDocumentError):  # verify names a damaged one
            continue
    add_hot_dates(hot_dates, head)
    problems = coordinate_problems(store, head, hot_dates, tiles=tiles)
    return rewrite_coordinates(store, head, hot_dates, problems, check=fence.check) if problems else []


def _damaged_shards(store: Store, head: CubeVersion, blocks: Sequence[tuple[str, bool, int]], *, progress: bool
                    ) -> tuple[list[tuple[ShardKey, ListedShard, str]], list[tuple[str, bool, int]],
                               list[tuple[str, bool, int]]]:
    """Each lost or damaged shard of the time ``blocks`` (tile, hot, block: a cold block or a hot slot), as ``verify
    --deep`` finds it, with its problem; the blocks whose manifest is lost; those written before manifests, which
    cannot be checked (a cold one is not repaired: said). A sound block is said to be so."""
    manifests = read_manifests(store, head.spec.name, blocks)
    listed, unlisted, unchecked = [], [], []
    for (tile, hot, block), m in manifests.items():
        if m is not None:
            listed.append(m)
        elif has_manifest(head, tile, hot, block):
            unlisted.append((tile, hot, block))
        else:
            unchecked.append((tile, hot, block))
            if not hot:
                log.warning("repair: cold block %d of tile %s was written before cardcube kept manifests: its shards "
                            "cannot be checked, and are not repaired", block, tile)
    shards, unread = listed_shards(store, head.spec, listed)
    if unread:
        raise InvalidRequestError(f"repair: {unread[0][0]}: {unread[0][1]}; this run commits nothing")
    by_key = {s.key: s for s in shards}
    found = [(ShardKey.parse(key), by_key[key], problem)
             for key, problem in check_shards(store, shards, deep=True, progress=progress)]
    for tile, hot, block in sorted({(m.tile, m.hot, m.block) for m in listed}
                                   - {(k.tile, k.hot, k.block) for k, _, _ in found}):
        if hot:
            (date,) = block_dates(head.tiles[tile], True, block, head.spec.chunks.time)
            log.warning("repair: every shard of hot slot %d of tile %s (scene %s) is sound: its date is not written "
                        "again", block, tile, date.scene_id)
        else:
            log.warning("repair: every shard of cold block %d of tile %s is sound: its dates are not written again",
                        block, tile)
    return found, unlisted, unchecked


def _read_again(records: Sequence[SceneRecord], scenes: Sequence[SourceScene], check: Checker, *, progress: bool
                ) -> dict[str, CheckedScene]:
    """Each of ``records`` read again from the offered ``scenes``: checked, made of the slices it lists (a pass's,
    mosaicked as before), by scene id; raises unless every slice is offered and is the bytes the ledger records."""
    if not records:
        return {}
    pieces = {p for r in records for p in r.piece_ids}
    offered = list({s.scene_id: s for s in scenes if s.scene_id in pieces}.values())  # once each
    results = check(offered, "checking dates again")
    refused = [r for r in results.values() if isinstance(r, Rejection)]
    if refused:
        raise InvalidRequestError(f"repair: {refused[0].reason}; a date is read again from the files it was read "
                                  "from, as they were: this run commits nothing")
    dates = {}
    for record in records:
        slices = record.parts or (record,)
        if missing := [p.scene_id for p in slices if p.scene_id not in results]:
            raise InvalidRequestError(f"repair: the date of scene {record.scene_id} is mosaicked from the slices "
                                      f"of a pass, and {', '.join(missing)} is not offered: offer every slice; this "
                                      "run commits nothing")
        got = [results[p.scene_id] for p in slices]
        if (lost := lost_in(record)) is not None:
            raise InvalidRequestError(
                f"repair: the date of scene {record.scene_id} cannot be read again as it was: the checksums of the "
                f"band files it was read from were lost with the details object {lost} of the ledger, so the files "
                "offered now cannot be checked to be those bytes; restore that object from a backup and run the "
                "repair again, or leave the date out of the offered scenes; this run commits nothing")
        if [c.checksums for c in got] != [p.checksums for p in slices]:
            raise InvalidRequestError(f"repair: the date of scene {record.scene_id} cannot be read again as it "
                                      "was: its files offered now are not the bytes the ledger records (sha256); "
                                      "this run commits nothing")
        dates[record.scene_id] = got[0] if len(got) == 1 else mosaic(got)
    return dates
