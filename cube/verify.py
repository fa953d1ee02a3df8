"""Checking a cube against its block manifests: is every shard its kept versions read in the store, and sound?

A lost object reads as an area with no data to a plain Zarr reader; cardcube's readers raise on it when they
come to it (:func:`cube.manifest.confirm_absent`). :func:`verify` looks at every shard the manifests of the
kept versions' time blocks list, before anyone reads them: after a restore from a backup, a migration between
buckets, a lifecycle rule changed, or on a schedule. Without ``deep`` it reads each shard's index (a small
ranged read: the object is there, its end intact); with it, every byte, decompressing every chunk and comparing
the values with the checksum ingest recorded (blosc notices a damaged stream, not always a changed byte).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import zarr
from tqdm.auto import tqdm
from zarr.abc.store import SuffixByteRequest
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from cardcube.storage import StoreLike, open_store, reading, store_url
from cube import layout
from cube.ledger import version_history
from cube.manifest import read_manifests, tile_blocks
from cube.shard_reader import check_shard, index_size
from cube.tile_arrays import open_arrays

# Shards read at once: indexes are a few KB each; a whole shard (``deep``) up to tens of MB.
IN_FLIGHT = 64
IN_FLIGHT_DEEP = 8
LOST_MANIFEST = ("manifest missing while later blocks have theirs: lost (a partial restore?); its shards cannot "
                 "be checked")


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """What :func:`verify` found: ``problems`` are (shard key, what is wrong); ``unlisted`` counts the time blocks
    without a manifest (written before manifests existed), whose shards could not be checked."""

    collection: str
    cube: str
    versions: tuple[int, ...]
    blocks: int
    unlisted: int
    shards: int
    deep: bool
    problems: tuple[tuple[str, str], ...]

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {"collection": self.collection, "cube": self.cube, "versions": list(self.versions),
                "blocks": self.blocks, "unlisted": self.unlisted, "shards": self.shards, "deep": self.deep,
                "ok": self.ok, "problems": [{"key": k, "problem": p} for k, p in self.problems]}

    def summary(self) -> str:
        how = "read whole and decompressed" if self.deep else "their indexes read"
        versions = (f"versions {self.versions[0]}-{self.versions[-1]}" if len(self.versions) > 1
                    else f"version {self.versions[0]}")
        lines = [f"{self.collection} cube at {self.cube}, {versions}: {self.shards} shard(s) of {self.blocks} time "
                 f"block(s) checked ({how}): {'sound' if self.ok else f'{len(self.problems)} damaged'}"]
        if self.unlisted:
            lines.append(f"  {self.unlisted} time block(s) have no manifest (written before cardcube kept them, "
                         "earlier than any block with one): not checked")
        lines += [f"  {key}: {problem}" for key, problem in self.problems]
        return "\n".join(lines)


def verify(cube: StoreLike, collection: str = "s2", *, deep: bool = False,
           storage_options: Mapping[str, Any] | None = None, progress: bool = True) -> VerifyResult:
    """Check every shard that the manifests of the time blocks of ``collection``'s kept versions list: present
    and its index sound, or with ``deep`` every chunk decompressed (see the module text). Reads only."""
    store = open_store(cube, storage_options=storage_options, read_only=True)
    versions = version_history(store, collection)
    spec = versions[-1].spec
    blocks = sorted({b for v in versions for tile, state in v.tiles.items()
                     for b in tile_blocks(tile, state, spec.chunks.time)})
    manifests = read_manifests(store, collection, blocks)
    listed = [m for m in manifests.values() if m is not None]
    shards: list[_Shard] = []
    for tile in sorted({m.tile for m in listed}):
        arrays = open_arrays(store, collection, tile, [(b.resolution, b.name, hot) for b in spec.bands
                                                       for hot in (False, True)])
        for m in (m for m in listed if m.tile == tile):
            for band in spec.bands:
                array = arrays[(band.resolution, band.name, m.hot)]
                prefix = array.store_path.path
                shards += [_Shard(array, f"{prefix}/{array.metadata.encode_chunk_key((m.block, r, c))}",
                                  (m.block, r, c), crc) for (r, c), crc in sorted(m.shards.get(band.name, {}).items())]
    lost = _lost_manifests(manifests, collection)
    problems = lost + _check(store, shards, deep=deep, progress=progress)
    return VerifyResult(collection, store_url(store), tuple(v.version for v in versions),
                        len(listed), len(manifests) - len(listed) - len(lost), len(shards), deep, tuple(problems))


def _lost_manifests(manifests: Mapping[tuple[str, bool, int], Any], collection: str) -> list[tuple[str, str]]:
    """(key, problem) of each block without a manifest that a block written after it has: blocks of a tile are
    written in order (cold blocks, then hot slots), and cardcube has kept manifests since some version, so only
    the blocks written before the first one kept may lack theirs (a partial restore lost the others, and said
    "sound" of their shards, unchecked)."""
    lost = []
    for tile in sorted({t for t, _, _ in manifests}):
        order = sorted((b for b in manifests if b[0] == tile), key=lambda b: (b[1], b[2]))  # cold, then hot
        last_kept = max((i for i, b in enumerate(order) if manifests[b] is not None), default=0)
        lost += [(layout.manifest_key(collection, tile, block, hot=hot), LOST_MANIFEST)
                 for _, hot, block in order[:last_kept] if manifests[(tile, hot, block)] is None]
    return lost


@dataclass(frozen=True, slots=True)
class _Shard:
    array: zarr.Array
    key: str
    coords: tuple[int, int, int]
    checksum: int


def _check(store: Any, shards: list[_Shard], *, deep: bool, progress: bool) -> list[tuple[str, str]]:
    """(key, problem) of each damaged shard of ``shards``, read ``IN_FLIGHT`` at a time through ``store``."""
    proto = default_buffer_prototype()

    async def one(s: _Shard) -> str | None:
        buf = await store.get(s.key, proto, None if deep else SuffixByteRequest(index_size(s.array)))
        data = None if buf is None else buf.to_bytes()
        return check_shard(s.array, s.key, data, coords=s.coords if deep else None, checksum=s.checksum)

    async def batch(part: list[_Shard]) -> list[str | None]:
        return await asyncio.gather(*(one(s) for s in part))

    step = IN_FLIGHT_DEEP if deep else IN_FLIGHT
    problems = []
    with tqdm(total=len(shards), desc="checking shards", unit="shard", disable=not progress) as bar, \
            reading("the cube's shards", store):
        for i in range(0, len(shards), step):
            part = shards[i:i + step]
            problems += [(s.key, p) for s, p in zip(part, sync(batch(part)), strict=True) if p is not None]
            bar.update(len(part))
    return problems
