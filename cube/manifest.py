"""Block manifests: which shards each time block of a tile stores, so a lost shard is told from an area with no data.

Zarr stores no shard whose values are all the fill value, so a shard absent from the store reads as nodata:
rightly where no scene had data (outside a swath, beyond the area ingested), wrongly where an object was lost
(deleted by hand or by a bucket's lifecycle rule, a half-restored backup). The ingest that writes a time block
(a cold block of ``time`` dates, or one hot-buffer slot) also writes, before it commits, the block's manifest:
per band, the shards (row, column in the shard grid) it stored, each with a crc32 of its values. A block is
written once, by one ingest, so its manifest never changes once committed (a crashed run's leftovers are
cleared by the next run that writes the block, before anything reads it). A reader that finds a shard
missing looks the block's manifest up (:func:`missing_shards`), and :func:`cube.verify.verify` checks a whole
cube against its manifests. Blocks written before manifests existed have none: their missing shards read as
nodata, as they always did. A block holding a scene ingested at or after the cube's ``manifests_since`` version
was written with one: a missing shard there without its manifest is lost data too, not nodata (a store answering
404 for a moment must not make a parcel look outside the swath).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from zarr.abc.store import Store

from cardcube.errors import CorruptDocumentError, MissingShardError
from cardcube.lru import LRUDict
from cardcube.storage import listed_names, read_json_many, store_url, write_json
from cube import layout
from cube.ledger import Acquisition, CubeVersion, TileState, confirm_committed

FORMAT = "cardcube-manifest/1"
_UNKNOWN = object()  # a block whose manifest was not looked up yet (None: it has none)


@dataclass(frozen=True, slots=True)
class BlockManifest:
    """The shards one time block of one tile stores, per band: ``(row, col)`` in the band's shard grid, with the
    crc32 of the values written there (:func:`cube.shard_reader.values_checksum`)."""

    tile: str
    hot: bool
    block: int
    shards: Mapping[str, Mapping[tuple[int, int], int]] = field(default_factory=dict)

    def stores(self, band: str, row: int, col: int) -> bool:
        return (row, col) in self.shards.get(band, {})

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "tile": self.tile, "hot": self.hot, "block": self.block,
                "shards": {band: [[r, c, crc] for (r, c), crc in sorted(cells.items())]
                           for band, cells in sorted(self.shards.items())}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BlockManifest:
        if d.get("format") != FORMAT:
            raise CorruptDocumentError(f"not a {FORMAT} document (format: {d.get('format')!r})")
        return cls(d["tile"], d["hot"], d["block"],
                   {band: {(r, c): crc for r, c, crc in cells} for band, cells in d["shards"].items()})


@dataclass(frozen=True, slots=True)
class ShardKey:
    """A band shard's place in the cube, parsed from its store key (``.../<band>/c/<t>/<row>/<col>``)."""

    tile: str
    hot: bool
    band: str
    block: int
    row: int
    col: int

    @classmethod
    def parse(cls, key: str) -> ShardKey | None:
        """The shard a store key names, or None for a key of no band shard of the cube's layout."""
        head, sep, coords = key.rpartition("/c/")
        parts, cells = head.split("/"), coords.split("/")
        if not sep or len(cells) != 3 or not all(c.isdigit() for c in cells) or layout.ZARR_NAME not in parts:
            return None
        at = parts.index(layout.ZARR_NAME)
        if at < 1:
            return None
        hot = parts[at + 1:at + 2] == ["hot"]
        block, row, col = (int(c) for c in cells)
        return cls(parts[at - 1], hot, parts[-1], block, row, col)


def block_manifests(stored: Iterable[tuple[str, bool, int, str, int, int, int]],
                    blocks: Iterable[tuple[str, bool, int]], bands: Sequence[str]) -> list[BlockManifest]:
    """The manifests of the ``blocks`` (tile, hot, block) an ingest wrote, every band listed (none stored:
    empty), from the shards it ``stored`` (tile, hot, block, band, row, col, crc32)."""
    cells: dict[tuple[str, bool, int], dict[str, dict[tuple[int, int], int]]] = {
        b: {band: {} for band in bands} for b in sorted(set(blocks))}
    for tile, hot, block, band, row, col, crc in stored:
        cells[(tile, hot, block)][band][(row, col)] = crc
    return [BlockManifest(t, h, b, per) for (t, h, b), per in cells.items()]


def tile_blocks(tile: str, state: TileState, time_block: int) -> list[tuple[str, bool, int]]:
    """The time blocks (tile, hot, block) that ``state`` of ``tile`` reads: its whole cold blocks of
    ``time_block`` dates, and its live hot slots."""
    return [(tile, False, b) for b in range(len(state.cold) // time_block)] + [(tile, True, h.slot) for h in state.hot]


def block_dates(state: TileState, hot: bool, block: int, time_block: int) -> list[Acquisition]:
    """The acquisitions of a time block of a tile (a cold block of ``time_block`` dates, or a hot slot)."""
    if hot:
        return [h.acquisition for h in state.hot if h.slot == block]
    return state.cold[block * time_block:(block + 1) * time_block]


def has_manifest(version: CubeVersion, tile: str, hot: bool, block: int) -> bool:
    """Whether the block of ``version`` was written with a manifest: it holds a scene ingested at or after the
    version since which the cube's ingests write them (a block is written no earlier than its scenes)."""
    state = version.tiles.get(tile)
    if not version.manifests_since or state is None:
        return False
    dates = block_dates(state, hot, block, version.spec.chunks.time)
    return any(version.scenes[a.scene_id].version >= version.manifests_since for a in dates
               if a.scene_id in version.scenes)


def write_manifests(store: Store, collection: str, manifests: Iterable[BlockManifest]) -> None:
    for m in manifests:
        write_json(store, layout.manifest_key(collection, m.tile, m.block, hot=m.hot), m.to_dict())


def read_manifests(store: Store, collection: str, blocks: Sequence[tuple[str, bool, int]]
                   ) -> dict[tuple[str, bool, int], BlockManifest | None]:
    """The manifest of each of ``blocks`` (tile, hot, block), None for a block without one, all fetched at once."""
    docs = read_json_many(store, [layout.manifest_key(collection, t, b, hot=h) for t, h, b in blocks])
    return {b: None if doc is None else BlockManifest.from_dict(doc) for b, doc in zip(blocks, docs, strict=True)}


def missing_shards(store: Store, version: CubeVersion, keys: Sequence[str], *,
                   known: MutableMapping[tuple[str, bool, int], BlockManifest | None] | None = None) -> list[str]:
    """Those of ``keys`` (shards a read of ``version`` found absent) that their block's manifest says were stored,
    or whose block was written with a manifest that is missing (:func:`has_manifest`): lost data. ``known``:
    manifests read before, by (tile, hot, block), and filled with those read now (a block is written once, and its
    manifest never changes; None for a block written without one; a manifest found missing that the block was
    written with is looked up again next time: the store may have answered 404 for a moment)."""
    known = {} if known is None else known
    parsed = {key: ShardKey.parse(key) for key in keys}
    # this call's manifests, taken from ``known`` at once: a bounded one may forget them meanwhile
    blocks = {b: known.get(b, _UNKNOWN) for b in {(k.tile, k.hot, k.block) for k in parsed.values() if k is not None}}
    found = read_manifests(store, version.collection, sorted(b for b, m in blocks.items() if m is _UNKNOWN))
    blocks.update(found)
    known.update({b: m for b, m in found.items() if m is not None or not has_manifest(version, *b)})
    lost = []
    for key, k in parsed.items():
        if k is None:
            continue
        m = blocks[(k.tile, k.hot, k.block)]
        if m.stores(k.band, k.row, k.col) if m is not None else has_manifest(version, k.tile, k.hot, k.block):
            lost.append(key)
    return lost


class AbsentShards:
    """Shards a reader found missing and confirmed areas with no data (:func:`confirm_absent`), by (collection,
    version, key): never written for that version, so finding one missing again needs no lookup; and the block
    manifests it read for that, by (collection, tile, hot, block). Its lock makes the threads that find one shard
    missing at once (its chunks, read in parallel) look it up once."""

    def __init__(self, size: int, *, manifests: int = 256) -> None:
        """Keep up to ``size`` shards and ``manifests`` manifests per collection (a tile's: up to ~100 KB each)."""
        self.keys: MutableMapping[tuple[str, int, str], bool] = LRUDict(size)
        self.manifests: MutableMapping[str, MutableMapping[tuple[str, bool, int], BlockManifest | None]] = {}
        self.lock = threading.Lock()
        self._manifests = manifests

    def __getstate__(self) -> dict:  # a Dataset's tasks carry it to dask workers: each copy gets its own lock
        return {k: v for k, v in vars(self).items() if k != "lock"}

    def __setstate__(self, state: dict) -> None:
        vars(self).update(state, lock=threading.Lock())

    def manifests_of(self, collection: str) -> MutableMapping[tuple[str, bool, int], BlockManifest | None]:
        return self.manifests.setdefault(collection, LRUDict(self._manifests))

    def __len__(self) -> int:
        return len(self.keys)

    def __iter__(self) -> Iterator[tuple[str, int, str]]:
        return iter(self.keys)


def confirm_absent(store: Store, version: CubeVersion, missing: Sequence[str], *, absent: AbsentShards) -> None:
    """Raise unless the shards a read of ``version`` found ``missing`` are areas with no data, read as fill
    rightly: :class:`VersionNotFoundError` if the version was expired while being read (expire deletes its hot
    slots; :func:`cube.ledger.confirm_committed`), :class:`MissingShardError` if their block's manifest lists
    them (lost objects). ``absent``: the shards confirmed so before (by this query, or a long-running reader), not
    looked up again, and the manifests read for them."""
    with absent.lock:
        new = [m for m in missing if (version.collection, version.version, m) not in absent.keys]
        if new:
            _confirm_absent(store, version, new, absent.manifests_of(version.collection))
            absent.keys.update({(version.collection, version.version, m): True for m in new})


def _confirm_absent(store: Store, version: CubeVersion, missing: Sequence[str],
                    known: MutableMapping[tuple[str, bool, int], BlockManifest | None]) -> None:
    hot = [key for key in missing if (k := ShardKey.parse(key)) is not None and k.hot]
    if hot:
        confirm_committed(store, version, hot)
    lost = missing_shards(store, version, missing, known=known)
    if lost:
        raise MissingShardError(
            f"{len(lost)} shard(s) of the {version.collection} cube at {store_url(store)} that its ingest stored "
            f"are missing from the store ({listed_names(lost, most=3)}): the cube has lost "
            "data (objects deleted outside cardcube, a partial restore); restore them from a backup or offer their "
            "dates' scenes again with `cardcube ingest --repair`, and check the whole cube with `cardcube verify`")
