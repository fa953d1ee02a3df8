"""Checking a cube against its block manifests: is every shard its kept versions read in the store, and sound?

A lost object reads as an area with no data to a plain Zarr reader; cardcube's readers raise on it when they
come to it (:func:`cube.manifest.confirm_absent`). :func:`verify` looks at every shard the manifests of the
kept versions' time blocks list, before anyone reads them: after a restore from a backup, a migration between
buckets, a lifecycle rule changed, or on a schedule. Without ``deep`` it reads each shard's index (a small
ranged read: the object is there, its end intact); with it, every byte, decompressing every chunk and comparing
the values with the checksum ingest recorded (blosc notices a damaged stream, not always a changed byte). It also
reads the ledger's details objects the kept versions name (:mod:`cube.scene_details`: the scenes' band files and
checksums, which a query never reads and an ingest does), and checks that each holds the details of every scene a
record names it for, as the record says (:func:`cube.scene_details.misassigned`). And it reads the coordinate and
per-date arrays beside the bands (``x``, ``y``, ``spatial_ref``, ``time``, ``scene_id``, ...) of every tile the latest
version holds, which a plain Zarr reader takes the pixels' place and the dates from, and compares them with what the
tile grid and the ledger say (:mod:`cube.coordinates`); ``ingest --repair`` writes those found wrong again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import zarr
from tqdm.auto import tqdm
from zarr.abc.store import SuffixByteRequest
from zarr.core.buffer import default_buffer_prototype

from cardcube.errors import CorruptDocumentError, VersionNotFoundError
from cardcube.grid import TileGrid
from cardcube.spec import BandSpec, CubeSpec
from cardcube.storage import StoreLike, in_steps, listed_lines, listed_names, open_store, reading, store_url
from catalog.write import published_version
from cube import layout
from cube.coordinates import add_hot_dates, coordinate_problems, is_coordinate_key
from cube.ledger import Acquisition, CubeVersion, commit_time, committed_versions, read_version, version_history
from cube.manifest import BlockManifest, ShardKey, block_dates, has_manifest, read_manifests, tile_blocks
from cube.scene_details import details_named, misassigned, read_details
from cube.shard_reader import check_shard, index_size, shard_key
from cube.tile_arrays import ArrayKey, array_of_document, read_documents

# Shards read at once: indexes are a few KB each; a whole shard (``deep``) up to tens of MB.
IN_FLIGHT = 64
IN_FLIGHT_DEEP = 8
LOST_MANIFEST = ("manifest missing while the block was written with one: lost (a partial restore?); its shards "
                 "cannot be checked")
LOST_DETAILS_RECORDED = "missing: the band files and checksums of the scenes it held are lost (their pixels are not)"
LOST_RECORD = ("ledger record missing between kept versions (versions are numbered without gaps, and expire deletes "
               "the oldest only): lost (deleted by hand, a partial restore?), or expired by a cardcube of before "
               "2026-12-04 under a clock running ahead (harmless: the next expire takes the versions before the "
               "gap); that version cannot be read")


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """What :func:`verify` found: ``problems`` are (shard key, what is wrong); ``unlisted`` counts the time blocks
    without a manifest (written before manifests existed), whose shards could not be checked; ``superseded`` the
    damaged shards only versions older than the latest read (a repair or a compaction gave their dates another
    copy since): offering their scenes to ``--repair`` again mends nothing, ``expire`` drops them; so too the
    details objects only older versions name, and the records older than the latest naming a sound one for scenes it
    does not hold as they say."""

    collection: str
    cube: str
    versions: tuple[int, ...]
    blocks: int
    unlisted: int
    shards: int
    deep: bool
    problems: tuple[tuple[str, str], ...]
    superseded: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {"collection": self.collection, "cube": self.cube, "versions": list(self.versions),
                "blocks": self.blocks, "unlisted": self.unlisted, "shards": self.shards, "deep": self.deep,
                "ok": self.ok, "problems": [{"key": k, "problem": p} for k, p in self.problems],
                "superseded": list(self.superseded)}

    def summary(self) -> str:
        how = "read whole and decompressed" if self.deep else "their indexes read"
        versions = (f"versions {self.versions[0]}-{self.versions[-1]}" if len(self.versions) > 1
                    else f"version {self.versions[0]}")
        lines = [f"{self.collection} cube at {self.cube}, {versions}: {self.shards} shard(s) of {self.blocks} time "
                 f"block(s) checked ({how}): {'sound' if self.ok else f'{len(self.problems)} damaged'}"]
        if self.unlisted:
            lines.append(f"  {self.unlisted} time block(s) have no manifest (written before cardcube kept them, "
                         "maybe earlier than any block with one): not checked")
        old = set(self.superseded)
        lines += listed_lines([f"  {key}: {problem}" + (" (named only by versions older than the latest, which records "
                                                          "its scenes' details as lost)" if layout.details_of_key(key)
                                                         else " (read only by versions older than the latest)"
                                                         if ShardKey.parse(key) else "")  # a record: it says so
                               * (key in old) for key, problem in self.problems],
                              "(the same command with --json names each)")
        if any(ShardKey.parse(key) and key not in old for key, _ in self.problems):
            lines.append("  restore them from a backup, or offer the scenes of their dates again with `cardcube ingest "
                         "--repair`, which reads them again from their files")
        if any(is_coordinate_key(key) for key, _ in self.problems):
            lines.append("  the coordinate and per-date arrays and the tiles' groups: `cardcube ingest --cube CUBE "
                         "--repair` writes them again from the ledger and the tile grid (no SOURCE needed: no scene "
                         "is read for them), or restore them from a backup")
        if any(layout.details_of_key(key) for key in old):  # an ingest went on without them: nothing more to run
            lines.append("  the details objects named only by older versions: `cardcube expire` drops them from the "
                         "ledger with those versions, once superseded for longer than its --older-than (7d by "
                         "default); restore them from a backup to keep those versions' audit trail")
        if any(ShardKey.parse(key) for key in old):  # a repair wrote their dates anew
            lines.append("  the latest version reads another copy of the dates of those read only by older versions: "
                         "`cardcube expire` deletes them with the versions that read them, once those have been "
                         "superseded for longer than its --older-than (7d by default)")
        return "\n".join(lines)


def verify(cube: StoreLike, collection: str = "s2", *, deep: bool = False,
           storage_options: Mapping[str, Any] | None = None, progress: bool = True) -> VerifyResult:
    """Check every shard that the manifests of the time blocks of ``collection``'s kept versions list: present
    and its index sound, or with ``deep`` every chunk decompressed (see the module text). Reads only."""
    store = open_store(layout.cube_root(cube), storage_options=storage_options, read_only=True)
    history = _read_history(store, collection)
    latest, written, problems = history.latest, history.written, list(history.problems)
    spec = latest.spec
    manifests, damaged = _manifests(store, collection, sorted(written))
    listed = [m for m in manifests.values() if m is not None]
    shards, unread = listed_shards(store, spec, listed)
    with_manifests = {m.tile for m in listed}
    unread += _open_arrays(store, collection, sorted({  # of the tiles no manifest is left of: their arrays
        (t, (b.resolution, b.name, hot)) for t, hot, _ in written if t not in with_manifests for b in spec.bands}))[1]
    lost = _lost_manifests(manifests, written, collection)
    found = check_shards(store, shards, deep=deep, progress=progress)
    problems += damaged + unread + lost + _still_read(store, collection, history.kept, found)
    problems += _misshapen_arrays(shards, latest)
    details = _details_still_named(store, collection, history)
    problems += details
    problems += [(p.key, p.problem) for p in coordinate_problems(store, latest, history.hot_dates)]
    # a record older than the latest naming an object for scenes it does not hold: the latest records them (an ingest
    # took them as lost) or holds them as it says, and expire drops the record with its version
    wrong_older = {key for key, _ in details if layout.details_of_key(key) is None} - {
        layout.ledger_key(collection, latest.version)}
    unlisted = len(manifests) - len(listed) - len(lost)
    latest_blocks, named = history.kept[-1].blocks, history.kept[-1].details  # a details object the latest names
    # no more: its scenes' details recorded lost
    problems = [(key, LOST_DETAILS_RECORDED) if (d := layout.details_of_key(key)) is not None and d not in named
                and problem.startswith("missing") else (key, problem) for key, problem in problems]
    superseded = tuple(key for key, _ in problems
                       if ((k := ShardKey.parse(key)) is not None and (k.tile, k.hot, k.block) not in latest_blocks)
                       or ((d := layout.details_of_key(key)) is not None and d not in named) or key in wrong_older)
    return VerifyResult(collection, store_url(store), tuple(k.version for k in history.kept),
                        len(listed), unlisted, len(shards), deep, tuple(problems), superseded)


def block_problems(store: Any, version: CubeVersion, *, progress: bool
                   ) -> list[tuple[tuple[str, bool, int] | None, str, str]]:
    """(block, key, problem) of what the time blocks ``version`` reads lost or damaged, as :func:`verify` finds it
    without ``deep`` (each shard's index read): a shard, a block's manifest (damaged, or lost by verify's rule,
    :func:`_lost_manifests`), and a band array whose ``zarr.json`` cannot be read (block None: every block of its
    tile in it). What only the dates' scenes read again (``ingest --repair``) or a backup can mend. Reads only."""
    collection, written = version.spec.name, {}
    _add_written(written, version, 0)
    manifests, damaged = _manifests(store, collection, sorted(written))
    of_key = {layout.manifest_key(collection, t, b, hot=h): (t, h, b) for t, h, b in written}
    lost = _lost_manifests(manifests, written, collection)
    found: list[tuple[tuple[str, bool, int] | None, str, str]] = [(of_key[k], k, p) for k, p in damaged + lost]
    shards, unread = listed_shards(store, version.spec, [m for m in manifests.values() if m is not None])
    found += [(None, k, p) for k, p in unread]
    for key, problem in check_shards(store, shards, deep=False, progress=progress):
        k = ShardKey.parse(key)
        found.append(((k.tile, k.hot, k.block) if k is not None else None, key, problem))
    return found


def _manifests(store: Any, collection: str, blocks: Sequence[tuple[str, bool, int]]
               ) -> tuple[dict[tuple[str, bool, int], BlockManifest | None], list[tuple[str, str]]]:
    """The manifest of each of ``blocks`` (None: none), and (key, problem) of each damaged one (left out)."""
    try:
        return read_manifests(store, collection, blocks), []
    except CorruptDocumentError:
        pass
    manifests, damaged = {}, []
    for b in blocks:  # one at a time, to tell which
        try:
            manifests.update(read_manifests(store, collection, [b]))
        except CorruptDocumentError as exc:
            damaged.append((layout.manifest_key(collection, b[0], b[2], hot=b[1]), f"damaged: {exc}"))
    return manifests, damaged


def _still_read(store: Any, collection: str, kept: Sequence[_Kept], found: list[tuple[str, str]]
                ) -> list[tuple[str, str]]:
    """Those of the shards ``found`` damaged that a version still kept reads: an ``expire`` running meanwhile
    (verify takes no lock) deletes the hot slots of the versions it expires, which are then no loss."""
    if not any(problem == "missing" for _, problem in found):
        return found
    still = set(committed_versions(store, collection))
    if still >= {k.version for k in kept}:
        return found
    read = set().union(*(k.blocks for k in kept if k.version in still))
    return [(key, problem) for key, problem in found
            if problem != "missing" or (k := ShardKey.parse(key)) is None or (k.tile, k.hot, k.block) in read]


def _details_still_named(store: Any, collection: str, history: _History) -> list[tuple[str, str]]:
    """(key, problem) of each details object of the ledger that the kept versions name, missing or damaged, and
    of each record naming a sound one for scenes it does not hold as the record says (:func:`_misassigned`): but
    those missing that only versions expired meanwhile named (an ``expire`` running while verify reads, as
    :func:`_still_read` says of shards, deletes them after their records), which are no loss."""
    problems = sorted(history.details_problems) + _misassigned(collection, history)
    if not any(problem.startswith("missing") for _, problem in problems):
        return problems
    still = set(committed_versions(store, collection))
    named = set().union(*(k.details for k in history.kept if k.version in still))
    return [(key, problem) for key, problem in problems
            if not problem.startswith("missing") or layout.details_of_key(key) in named]


def _misassigned(collection: str, history: _History) -> list[tuple[str, str]]:
    """(record key, problem) of each record of the kept versions naming a details object read sound for scenes it
    does not hold as the record says (:func:`cube.scene_details.misassigned`), one for each such object: its digest
    checks, so the record is wrong (edited by hand, a restore mixing backups, a bug), and an ingest or a catalog
    build asking for those scenes' details would stop on it."""
    problems = []
    for version, name, scenes in history.misassigned:
        listed = listed_names([f"{sid} ({why})" for sid, why in sorted(scenes.items())], most=5)
        older = (" (a version older than the latest: `cardcube expire` drops it once superseded for longer than "
                 "its --older-than)" if version != history.latest.version else
                 "; without one, run `cardcube ingest` (with any source, --repair too), which records their "
                 "details as lost in a version it commits, their pixels as they are")
        problems.append((layout.ledger_key(collection, version),
                         f"damaged: it names {layout.details_key(collection, name)} for the band files and "
                         f"checksums of {len(scenes)} scene(s) that object does not hold as the record says: "
                         f"{listed}; the object is sound (its bytes are those its name's digest says), the "
                         "record is wrong, and an ingest or a catalog build takes those scenes' details as lost "
                         f"(warning): restore the record from a backup{older}"))
    return problems


class _Written(NamedTuple):
    """Which versions can have written a time block: a block is written once, by the ingest that committed the first
    version reading it, no earlier than ``earliest`` (the newest of its dates' scenes ingested, and after the kept
    version before ``first``) and no later than ``first``, the first kept version reading it; ``manifested``: written
    with a manifest, as that version's record says (:func:`cube.manifest.has_manifest`)."""

    earliest: int
    first: int
    manifested: bool


def _add_written(written: dict[tuple[str, bool, int], _Written], version: CubeVersion, before: int) -> None:
    """Add the time blocks (tile, hot, block) ``version`` reads and no earlier kept version did to ``written``;
    ``before``: the kept version before it (0: none, the oldest kept), which a block it is the first to read was
    written after, when it is its predecessor; one the oldest kept version reads was written by it or an expired one,
    no earlier than its newest date's scene was ingested."""
    size = version.spec.chunks.time
    for tile, state in version.tiles.items():
        for b in tile_blocks(tile, state, size):
            if b in written:
                continue
            dates = block_dates(state, b[1], b[2], size)
            scenes = [version.scenes[a.scene_id].version for a in dates if a.scene_id in version.scenes]
            written[b] = _Written(max([before + 1, *scenes]) if before else max(scenes, default=0), version.version,
                                  has_manifest(version, *b))


def _lost_manifests(manifests: Mapping[tuple[str, bool, int], Any], written: Mapping[tuple[str, bool, int], _Written],
                    collection: str) -> list[tuple[str, str]]:
    """(key, problem) of each block without a manifest that was written with one: the ledger says so (a scene of
    the block ingested since the cube's ``manifests_since``, :func:`cube.manifest.has_manifest`), or a block written
    no later than it has one (a cube of before ``manifests_since``). A partial restore lost it; its shards went
    unchecked, and verify said "sound". The others were written before manifests: counted as unlisted."""
    first_kept = min((written[b].first for b, m in manifests.items() if m is not None), default=None)
    return [(layout.manifest_key(collection, tile, block, hot=hot), LOST_MANIFEST)
            for (tile, hot, block), m in sorted(manifests.items())
            if m is None and ((first_kept is not None and first_kept <= written[(tile, hot, block)].earliest)
                              or written[(tile, hot, block)].manifested)]


def lost_newest(store: Any, collection: str, newest: int) -> tuple[int, str] | None:
    """Whether records newer than ``newest`` (the newest ledger record) were lost, and then the version the catalog
    publishes and what is wrong: the catalog, written after each commit and never rolled back, names a newer one.
    A gap between records is seen; a lost newest one was not, and readers read the one before without a word (and
    ``expire`` or the next ingest took its data for a crashed run's leftovers)."""
    published = published_version(store, collection)
    if published is None or published <= newest:
        return None
    return published, (f"ledger record missing: the cube's STAC collection publishes version {published}, and the "
                      f"newest record is version {newest} (records are written before the catalog): lost (a partial "
                      f"restore?); readers read version {newest}, and the data of the versions after it is still in "
                      f"the store: restore the record(s) from a backup (to give them up: delete "
                      f"{collection}/collection.json and run `cardcube catalog build`)")


@dataclass(frozen=True, slots=True)
class _Kept:
    """What verify holds of a kept version once its record is read and let go (a record of 10 tiles x 490 dates is
    some 10 MB in memory; this, a few kB): its number, the time blocks it reads and the details objects it names."""

    version: int
    blocks: frozenset[tuple[str, bool, int]]
    details: frozenset[str]


@dataclass
class _History:
    """The kept versions of a collection as verify reads them, one record at a time (:func:`_read_history`): what it
    holds of each (:class:`_Kept`, oldest first), the latest whole, and what the records tell together: the time
    blocks they read (:func:`_add_written`), the dates of the hot slots (:func:`cube.coordinates.add_hot_dates`), the
    details objects they name read once each (sound ones in ``held``; (key, problem) of the others), and (version,
    object, scene -> what is wrong) of each record naming a sound one for scenes it does not hold as it says."""

    kept: list[_Kept] = field(default_factory=list)
    latest: CubeVersion | None = None
    problems: list[tuple[str, str]] = field(default_factory=list)
    written: dict[tuple[str, bool, int], _Written] = field(default_factory=dict)
    hot_dates: dict[str, dict[int, Acquisition]] = field(default_factory=dict)
    held: dict[str, dict[str, Any]] = field(default_factory=dict)
    details_problems: list[tuple[str, str]] = field(default_factory=list)
    misassigned: list[tuple[int, str, dict[str, str]]] = field(default_factory=list)

    def add(self, store: Any, version: CubeVersion) -> None:
        """Take in ``version``, the next kept one: all verify needs of its record, which can then be let go."""
        _add_written(self.written, version, self.latest.version if self.latest else 0)
        add_hot_dates(self.hot_dates, version)
        named = details_named(version)
        if unread := named - self.held.keys() - {layout.details_of_key(k) for k, _ in self.details_problems}:
            held, problems = read_details(store, version.spec.name, unread)
            self.held.update(held)
            self.details_problems += problems
        self.misassigned += [(version.version, name, scenes)
                             for name, scenes in sorted(misassigned(version, self.held).items())]
        size = version.spec.chunks.time
        self.kept.append(_Kept(version.version, frozenset(b for t, state in version.tiles.items()
                                                          for b in tile_blocks(t, state, size)), frozenset(named)))
        self.latest = version


def _read_history(store: Any, collection: str) -> _History:
    """The kept versions of ``collection`` that can be read, read one at a time (:class:`_History`), with (key,
    problem) of each record missing between them or damaged: the versions whose blocks verify cannot know."""
    numbers = committed_versions(store, collection)
    present = set(numbers)
    history = _History()
    history.problems += [(layout.ledger_key(collection, n), LOST_RECORD)
                         for n in range(numbers[0] + 1, numbers[-1]) if n not in present] if numbers else []
    if numbers and (lost := lost_newest(store, collection, numbers[-1])):
        history.problems += [(layout.ledger_key(collection, n), lost[1]) for n in range(numbers[-1] + 1, lost[0] + 1)]
    for n in numbers:
        try:
            version = read_version(store, collection, n)
        except VersionNotFoundError:  # expired meanwhile
            continue
        except CorruptDocumentError as exc:
            history.problems.append((layout.ledger_key(collection, n), f"damaged: {exc}"))
            continue
        if commit_time(version) is None:  # its data reads, but expire stops on it
            history.problems.append((layout.ledger_key(collection, n), f"damaged: it records no UTC time of its "
                                     f"commit (created: {version.created!r}), which expire needs: restore it from a "
                                     "backup"))
        history.add(store, version)
    if history.latest is None:
        version_history(store, collection)  # raises: no cube, or no version left
        raise CorruptDocumentError(f"every ledger record of the {collection} cube at {store_url(store)} is damaged: "
                                   + "; ".join(p for _, p in history.problems))
    return history


def listed_shards(store: Any, spec: CubeSpec, manifests: Sequence[BlockManifest]
                  ) -> tuple[list[ListedShard], list[tuple[str, str]]]:
    """Every shard ``manifests`` list, and (key, problem) of each array whose metadata cannot be read (none of its
    shards can be checked)."""
    shards: list[ListedShard] = []
    keys = sorted({(m.tile, (b.resolution, b.name, m.hot)) for m in manifests for b in spec.bands})
    arrays, problems = _open_arrays(store, spec.name, keys)
    for (tile, (res, name, hot)), array in sorted(arrays.items()):
        if wrong := _metadata_problem(array, spec.band(name)):
            problems.append((f"{array.store_path.path}/zarr.json", wrong))
            del arrays[(tile, (res, name, hot))]
    for m in sorted(manifests, key=lambda m: m.tile):
        for band in spec.bands:
            array = arrays.get((m.tile, (band.resolution, band.name, m.hot)))
            if array is None:
                continue
            shards += [ListedShard(array, shard_key(array, (m.block, r, c)), (m.block, r, c), crc)
                       for (r, c), crc in sorted(m.shards.get(band.name, {}).items())]
    return shards, problems


def _misshapen_arrays(shards: Sequence[ListedShard], latest: CubeVersion) -> list[tuple[str, str]]:
    """(key, problem) of each band array of ``shards`` whose ``zarr.json`` holds fewer dates than ``latest`` there
    (an ingest killed between its commit and the shapes it publishes after, or a ``zarr.json`` restored from an
    older backup), or rows and columns other than the tile grid's (edited, or restored from another cube's):
    cardcube's reads take the extents from the ledger and the grid, a plain Zarr reader from the ``zarr.json``."""
    arrays = {s.array.store_path.path: s.array for s in shards}
    out = []
    for tile, state in sorted(latest.tiles.items()):
        grid = TileGrid.from_id(tile)
        for hot in (False, True):
            length = state.length(hot)
            for band in latest.spec.bands:
                path = layout.array_path(latest.spec.name, tile, band.resolution, band.name, hot=hot)
                if (array := arrays.get(path)) is None:
                    continue
                rows_cols = grid.geobox(band.resolution).shape
                wrong = ([f"its time length is {array.shape[0]}, of the {length} date(s) the latest version holds"]
                         if array.shape[0] < length else []) + (
                    [f"its shape in y and x is {tuple(array.shape[1:])}, the tile grid's {tuple(rows_cols)}"]
                    if tuple(array.shape[1:]) != tuple(rows_cols) else [])
                if wrong:
                    out.append((f"{path}/zarr.json", (
                        f"damaged: {'; '.join(wrong)}: a plain Zarr reader (xarray.open_zarr, rioxarray) of "
                        f"{layout.resolution_group(band.resolution, hot=hot)} refuses the group (conflicting sizes) "
                        "or misses the later dates; cardcube's own reads, which take the extents from the ledger, are "
                        "unaffected; `cardcube ingest --cube CUBE --repair` (no SOURCE needed) sets it, as any "
                        "ingest does")))
    return out


def _metadata_problem(array: zarr.Array, band: BandSpec) -> str | None:
    """What is wrong with a band array's metadata that would make its sound shards decode to other values: its
    dtype, or its fill value (a chunk not stored reads as it), not the band's."""
    if array.dtype != np.dtype(band.dtype):
        return f"damaged: its dtype is {array.dtype}, the band's {band.dtype}; its shards cannot be checked"
    fill = band.fill
    stored = array.metadata.fill_value
    if not (stored == fill or (np.isnan(fill) and np.isnan(stored))):
        return f"damaged: its fill value is {stored}, the band's nodata {fill}; its shards cannot be checked"
    return None


def _open_arrays(store: Any, collection: str, keys: Sequence[tuple[str, ArrayKey]]
                 ) -> tuple[dict[tuple[str, ArrayKey], zarr.Array], list[tuple[str, str]]]:
    """The arrays ``keys`` (tile, array key) of every tile, their ``zarr.json`` read a few hundred at once
    (:func:`cube.tile_arrays.read_documents`: a few rounds at any number of tiles, not one a tile), and (key,
    problem) of each missing or damaged: its shards cannot be read, the others are checked all the same."""
    paths = [layout.array_path(collection, tile, res, name, hot=hot) for tile, (res, name, hot) in keys]
    docs = read_documents(store, [f"{p}/zarr.json" for p in paths], "the cube's band arrays")
    arrays, problems = {}, []
    for key, path, data in zip(keys, paths, docs, strict=True):
        array = array_of_document(store, path, data)
        if isinstance(array, str):
            problems.append((f"{path}/zarr.json", f"array metadata {array}; none of its shards can be read"))
        else:
            arrays[key] = array
    return arrays, problems


@dataclass(frozen=True, slots=True)
class ListedShard:
    """A shard a block manifest lists: its array, store key, place in the shard grid and crc32 of its values."""

    array: zarr.Array
    key: str
    coords: tuple[int, int, int]
    checksum: int


def check_shards(store: Any, shards: Sequence[ListedShard], *, deep: bool, progress: bool) -> list[tuple[str, str]]:
    """(key, problem) of each damaged shard of ``shards``, read ``IN_FLIGHT`` at a time through ``store``."""
    proto = default_buffer_prototype()

    async def one(s: ListedShard) -> str | None:
        buf = await store.get(s.key, proto, None if deep else SuffixByteRequest(index_size(s.array)))
        data = None if buf is None else buf.to_bytes()
        return check_shard(s.array, s.key, data, coords=s.coords if deep else None, checksum=s.checksum)

    problems = []
    with tqdm(total=len(shards), desc="checking shards", unit="shard", disable=not progress) as bar, \
            reading("the cube's shards", store):
        for part, found in in_steps(one, shards, IN_FLIGHT_DEEP if deep else IN_FLIGHT):
            problems += [(s.key, p) for s, p in zip(part, found, strict=True) if p is not None]
            bar.update(len(part))
    return problems
