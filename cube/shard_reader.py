"""Reading a window of one of the cube's sharded Zarr v3 arrays, decoded in the calling thread.

zarr-python runs every read of a process through one asyncio event loop that also drives decoding, so
reading costs several times what the bytes and the decompression do, and two threads reading at once
wait for each other (measured: ``benchmarks/results/2026-11-25/extraction.md``, raw vs zarr). The cube's
band arrays have one known layout, written by ingest: ``sharding_indexed`` over ``bytes`` + ``blosc`` (+ ``crc32c``
of each chunk, in arrays created since 2026-12-07), with a ``bytes`` + ``crc32c`` index at the end of each shard.
For those, :func:`read_window` fetches every shard's index, then the chunks it needs in as few byte ranges as skip
no more than ``GAP`` unneeded bytes (usually one per shard; all requests of a window at once, through the array's
own store, so S3 and the request counters see them; a plain local folder is read with ``pread`` in the calling
thread), and decodes the chunks with numcodecs in the caller's thread (blosc releases the GIL) straight into the
output.
Arrays with any other layout are read by zarr, so the function is always correct, only faster for ours.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import os
import zlib
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numcodecs
import numpy as np
import zarr
from zarr.abc.store import RangeByteRequest, Store, SuffixByteRequest
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync
from zarr.storage import LocalStore

from cardcube.errors import CorruptShardError, InvalidRequestError, StoreError
from cardcube.storage import reading, store_url
from cube.shared_chunks import ChunkSharing

__all__ = ["CorruptShardError", "read_window"]

_MISSING = 2**64 - 1  # offset and length of an empty chunk in a shard index
# Unneeded bytes worth reading to save a request: about one compressed chunk of the cube. A request costs
# tens of milliseconds on object storage, the time to stream a megabyte or more, but a window at a shard's
# edge skips whole rows of chunks, which one range from the first to the last needed chunk would read.
GAP = 256 * 1024
# Each chunk's bytes end with their crc32c: blosc decodes many damaged chunks into wrong values without an error.
_CHUNK_CRC = numcodecs.CRC32C()
_SHUFFLE = {"noshuffle": numcodecs.Blosc.NOSHUFFLE, "shuffle": numcodecs.Blosc.SHUFFLE,
            "bitshuffle": numcodecs.Blosc.BITSHUFFLE}


@dataclass(frozen=True)
class _ShardLayout:
    """What reading a shard needs: shard and chunk shapes, the decompressor, the fill value, whether each chunk
    ends with its crc32c."""

    shard: tuple[int, ...]
    chunk: tuple[int, ...]
    codec: numcodecs.Blosc
    dtype: np.dtype
    fill: Any
    checksum: bool = False

    @property
    def per_shard(self) -> tuple[int, ...]:
        return tuple(s // c for s, c in zip(self.shard, self.chunk, strict=True))

    @property
    def index_bytes(self) -> int:
        """Size of a shard's index at its end: (offset, length) as two uint64 per chunk, then a crc32c."""
        return 16 * math.prod(self.per_shard) + 4

    @classmethod
    def of(cls, array: zarr.Array) -> _ShardLayout | None:
        """The layout of ``array``, or None if it is not the cube's sharded layout."""
        meta = array.metadata.to_dict()
        codecs = meta.get("codecs", [])
        if len(codecs) != 1 or codecs[0].get("name") != "sharding_indexed":
            return None
        conf = codecs[0]["configuration"]
        inner = [c["name"] for c in conf["codecs"]]
        index = [c["name"] for c in conf["index_codecs"]]
        little = all(c.get("configuration", {}).get("endian", "little") == "little"
                     for c in conf["codecs"] + conf["index_codecs"] if c["name"] == "bytes")
        if inner not in (["bytes", "blosc"], ["bytes", "blosc", "crc32c"]) or index != ["bytes", "crc32c"] \
                or conf.get("index_location") != "end" or not little or meta["chunk_key_encoding"]["name"] != "default":
            return None
        blosc = conf["codecs"][1]["configuration"]
        codec = numcodecs.Blosc(cname=blosc["cname"], clevel=blosc["clevel"], shuffle=_SHUFFLE[blosc["shuffle"]],
                                blocksize=blosc.get("blocksize", 0))
        shard = tuple(meta["chunk_grid"]["configuration"]["chunk_shape"])
        chunk = tuple(conf["chunk_shape"])
        if any(s % c for s, c in zip(shard, chunk, strict=True)):
            return None
        return cls(shard, chunk, codec, np.dtype(array.dtype), array.fill_value, checksum=inner[-1] == "crc32c")


def read_window(array: zarr.Array, window: tuple[slice, ...], *, gap: int = GAP,
                out: np.ndarray | None = None, indexes: MutableMapping[str, np.ndarray] | None = None,
                on_missing: Callable[[list[str]], None] | None = None, sharing: ChunkSharing | None = None
                ) -> np.ndarray:
    """``array[window]`` (``window``: one ``start:stop`` slice per axis, step 1, within the shape). The chunks
    a shard holds for the window are fetched in byte ranges that skip more than ``gap`` unneeded bytes.

    ``out``: an array of the window's shape and the array's dtype to read into, so that a caller reading
    window after window reuses its memory (a fresh array of tens of MB costs page faults on every read).
    ``indexes``: shard indexes read before, by key, and filled with the ones this read fetches. A committed
    shard never changes, so a caller reading one version again and again (an open Dataset) keeps them and
    saves a request, on S3 a round trip, per shard and read; reads sharing ``indexes`` at once through a
    store also share the fetch of an index not known yet.
    ``on_missing``: called, after the read, with the keys of the window's shards that do not exist (read as
    fill), so a caller for whom that can mean deleted data rather than an empty area can check which.
    ``sharing``: the chunks this window shares with other windows of a job (rows and cols its two last axes), each
    decoded once for them all (:mod:`cube.shared_chunks`)."""
    bounds = [(s.start or 0, n if s.stop is None else s.stop) for s, n in zip(window, array.shape, strict=True)]
    shape = tuple(b - a for a, b in bounds)
    if out is not None and (out.shape != shape or out.dtype != array.dtype):
        raise InvalidRequestError(f"out is {out.dtype} {out.shape}, the window needs {array.dtype} {shape}")
    layout = _ShardLayout.of(array)
    if layout is None:
        if out is None:
            return array[window]
        out[...] = array[window]
        return out
    if out is None:
        out = np.empty(shape, dtype=layout.dtype)
    if out.size == 0:
        return out
    shards = list(itertools.product(*(range(a // s, math.ceil(b / s)) for (a, b), s in
                                      zip(bounds, layout.shard, strict=True))))
    store, prefix = array.store_path.store, array.store_path.path
    keys = ["/".join(filter(None, [prefix, array.metadata.encode_chunk_key(coords)])) for coords in shards]
    needed = [_needed(layout, coords, bounds) for coords in shards]
    indexes = {} if indexes is None else indexes
    with reading(f"shards of {prefix}", store):
        if type(store) is LocalStore:  # not a wrapper (counting, caching): those see every request
            blobs = _read_folder(store.root, keys, needed, layout, gap, indexes)
        else:
            blobs = sync(_fetch(store, keys, needed, layout, gap, indexes))
    if sum(len(found or ()) for found in blobs) < sum(map(len, needed)):
        out.fill(layout.fill)  # where no chunk is stored (else the chunks cover the window)
    for key, coords, found in zip(keys, shards, blobs, strict=True):
        for chunk_coords, data in found or ():
            try:
                values = _decoded(layout, key, coords, chunk_coords, data, sharing)
                _copy(out, layout, coords, chunk_coords, values, bounds)
            except (RuntimeError, ValueError) as exc:  # blosc: "error during blosc decompression: -1"; a wrong size
                raise CorruptShardError(f"{key}: its chunk {chunk_coords} does not decode ({exc}): the shard is "
                                        "damaged; `cardcube verify --deep` lists every damaged shard") from None
    missing = [key for key, found in zip(keys, blobs, strict=True) if found is None]
    if missing and on_missing is not None:
        on_missing(missing)
    return out


def _needed(layout: _ShardLayout, shard: tuple[int, ...], bounds: list[tuple[int, int]]) -> list[tuple[int, ...]]:
    """The chunks of ``shard`` (coordinates within it) that intersect the window."""
    ranges = []
    for s, c, n, (a, b) in zip(shard, layout.chunk, layout.per_shard, bounds, strict=True):
        origin = s * n * c
        ranges.append(range(max(0, (a - origin) // c), min(n, math.ceil((b - origin) / c))))
    return list(itertools.product(*ranges))


_Chunk = tuple[tuple[int, ...], int, int]  # a chunk's coordinates in its shard, byte offset, byte length
_Found = list[tuple[tuple[int, ...], memoryview]] | None  # a shard's needed chunks' coordinates, bytes; None: no shard


def _plan(index: np.ndarray | None, chunks: list[tuple[int, ...]], layout: _ShardLayout) -> list[_Chunk]:
    """The stored ones of ``chunks`` with their byte ranges, from the shard's index (None: the shard was
    never written, all fill)."""
    if index is None:
        return []
    index = index.reshape(*layout.per_shard, 2)
    return [(c, int(index[c][0]), int(index[c][1])) for c in chunks if index[c][0] != _MISSING]


def _known(indexes: MutableMapping[str, np.ndarray], key: str, tail: bytes | None, layout: _ShardLayout
           ) -> np.ndarray | None:
    """The index of shard ``key`` from its ``tail`` (None: no shard), kept in ``indexes``."""
    if tail is not None:
        indexes[key] = _index(key, tail, math.prod(layout.per_shard))
    return indexes.get(key)


def _span(run: list[_Chunk]) -> tuple[int, int]:
    """The byte range one request reads for ``run`` (chunks sorted by offset)."""
    return run[0][1], max(o + k for _, o, k in run)


def _cut(key: str, run: list[_Chunk], blob: bytes) -> list[tuple[tuple[int, ...], memoryview]]:
    """The chunks of ``run`` out of the bytes read for it: views, not copies of hundreds of MB."""
    lo, hi = _span(run)
    if len(blob) != hi - lo:
        raise CorruptShardError(f"{key}: index points past the end of the shard ({hi} > {lo + len(blob)})")
    view = memoryview(blob)
    return [(c, view[o - lo:o - lo + k]) for c, o, k in run]


async def _indexes(store: Store, keys: list[str], layout: _ShardLayout, indexes: MutableMapping[str, Any]
                   ) -> dict[str, np.ndarray | None]:
    """The index of each shard of ``keys`` (None: no shard): from ``indexes``, else fetched, all at once. A
    fetch in flight sits in ``indexes`` as a future, so reads running at once on the event loop (a dask
    thread per chunk of one shard) wait for it instead of fetching the same index again."""
    loop = asyncio.get_running_loop()
    known = {k: indexes.get(k) for k in dict.fromkeys(keys)}
    mine = {k: loop.create_future() for k, v in known.items() if v is None}
    indexes.update(mine)

    def fail(key: str, exc: BaseException) -> None:
        indexes.pop(key, None)
        mine[key].set_exception(exc)
        mine[key].exception()  # retrieved: the readers that wait for it raise it themselves

    try:
        tails = await asyncio.gather(*(store.get(k, default_buffer_prototype(), SuffixByteRequest(layout.index_bytes))
                                       for k in mine))
    except BaseException as exc:
        for key in mine:
            fail(key, exc)
        raise
    failed = None
    for key, tail in zip(mine, tails, strict=True):
        try:
            _check_ranged(store, key, layout.index_bytes, tail)
            index = None if tail is None else _index(key, tail.to_bytes(), math.prod(layout.per_shard))
        except (CorruptShardError, StoreError) as exc:
            fail(key, exc)
            failed = failed or exc
            continue
        if index is None:
            indexes.pop(key, None)  # no shard (yet): not remembered
        else:
            indexes[key] = index
        mine[key].set_result(index)
    if failed is not None:
        raise failed
    return {k: await v if isinstance(v, asyncio.Future) else v for k, v in {**known, **mine}.items()}


async def _fetch(store: Store, keys: list[str], needed: list[list[tuple[int, ...]]], layout: _ShardLayout,
                 gap: int, indexes: MutableMapping[str, np.ndarray]) -> list[_Found]:
    """Per shard, the needed chunks' compressed bytes (None: no such shard): every index not in ``indexes``
    at once, then every byte range at once."""
    proto = default_buffer_prototype()
    index_of = await _indexes(store, keys, layout, indexes)
    runs = [(i, run) for i, (key, chunks) in enumerate(zip(keys, needed, strict=True))
            for run in _runs(_plan(index_of[key], chunks, layout), gap)]

    async def ranged(key: str, run: list[_Chunk]) -> _Found:
        lo, hi = _span(run)
        buf = await store.get(key, proto, RangeByteRequest(lo, hi))
        _check_ranged(store, key, hi - lo, buf)
        return None if buf is None else _cut(key, run, buf.to_bytes())

    found = await asyncio.gather(*(ranged(keys[i], run) for i, run in runs))
    out: list[_Found] = [[] if index_of[k] is not None else None for k in keys]
    for (i, _), chunks in zip(runs, found, strict=True):
        if chunks is None:  # deleted since its index was read or kept (an expired version's): no shard
            out[i] = None
            indexes.pop(keys[i], None)
        elif out[i] is not None:
            out[i] += chunks
    return out


def _check_ranged(store: Store, key: str, asked: int, got: Any) -> None:
    """Raise if the answer ``got`` to a request for ``asked`` bytes of ``key`` holds more: a web server that ignores
    byte ranges (Python's ``http.server``, some proxies) answers with the whole object, whose bytes would otherwise
    be read as the shard's index or chunks, and a sound shard called damaged."""
    if got is not None and len(got) > asked:
        raise StoreError(f"{store_url(store)} ignores HTTP byte ranges: asked for {asked} bytes of {key}, it sent "
                         f"the whole object ({len(got)} bytes), and a Zarr shard is read by its ranges. Serve the cube "
                         "with `cardcube catalog serve --cube DIR` or a web server that takes ranges (nginx, Apache, "
                         "an S3 bucket)")


def _read_folder(root: Path, keys: list[str], needed: list[list[tuple[int, ...]]], layout: _ShardLayout,
                 gap: int, indexes: MutableMapping[str, np.ndarray]) -> list[_Found]:
    """:func:`_fetch` for a local folder, with ``pread`` in the calling thread: zarr's ``LocalStore`` sends
    every read through its event loop to a thread pool, which on page-cached files costs more than the read
    itself (extraction's worker time in reads: 1.8 s that way, 1.05 s this way)."""
    size = layout.index_bytes
    out = []
    for key, chunks in zip(keys, needed, strict=True):
        try:
            fd = os.open(root / key, os.O_RDONLY)
        except FileNotFoundError:
            out.append(None)
            indexes.pop(key, None)  # an index kept of a shard deleted since (an expired version's)
            continue
        try:
            known = isinstance(indexes.get(key), np.ndarray)
            tail = None if known else os.pread(fd, size, max(0, os.fstat(fd).st_size - size))
            found = []
            for run in _runs(_plan(_known(indexes, key, tail, layout), chunks, layout), gap):
                lo, hi = _span(run)
                found += _cut(key, run, os.pread(fd, hi - lo, lo))
            out.append(found)
        finally:
            os.close(fd)
    return out


def _runs(plan: list[_Chunk], gap: int) -> list[list[_Chunk]]:
    """The chunks of one shard, ``(coords, offset, length)``, in runs read by one request each: a run goes
    on across a gap of at most ``gap`` unneeded bytes."""
    runs: list[list[_Chunk]] = []
    end = 0
    for chunk in sorted(plan, key=lambda c: c[1]):
        _, offset, length = chunk
        if runs and offset - end <= gap:
            runs[-1].append(chunk)
            end = max(end, offset + length)
        else:
            runs.append([chunk])
            end = offset + length
    return runs


def _index(key: str, tail: bytes, n: int) -> np.ndarray:
    """The (offset, length) pairs of a shard index, after checking its crc32c."""
    try:
        raw = numcodecs.CRC32C().decode(tail)
    except RuntimeError as exc:
        raise CorruptShardError(f"{key}: shard index fails its checksum ({exc})") from None
    return np.frombuffer(raw, dtype="<u8").reshape(n, 2)


def _place(out: np.ndarray, layout: _ShardLayout, shard: tuple[int, ...], chunk: tuple[int, ...],
           data: bytes | memoryview, bounds: list[tuple[int, int]]) -> None:
    """Decode one chunk and copy the part of it inside the window into ``out``."""
    _copy(out, layout, shard, chunk, _decode(layout, data), bounds)


def _decode(layout: _ShardLayout, data: bytes | memoryview) -> np.ndarray:
    """One chunk's values, decoded (after checking its crc32c, where it has one: a RuntimeError if it fails)."""
    if layout.checksum:
        data = _CHUNK_CRC.decode(data)
    return np.frombuffer(layout.codec.decode(data), dtype=layout.dtype.newbyteorder("<")).reshape(layout.chunk)


def _decoded(layout: _ShardLayout, key: str, shard: tuple[int, ...], chunk: tuple[int, ...],
             data: bytes | memoryview, sharing: ChunkSharing | None) -> np.ndarray:
    """One chunk's values: decoded, or handed over by ``sharing`` (decoded for another window of the job that reads
    it too), and then kept for the windows still to read it."""
    if sharing is None or len(chunk) < 2:
        return _decode(layout, data)
    origin = [(s * n + c) * k for s, c, k, n in zip(shard, chunk, layout.chunk, layout.per_shard, strict=True)]
    (y0, x0), (ky, kx) = origin[-2:], layout.chunk[-2:]
    readers = sharing.readers((y0, y0 + ky), (x0, x0 + kx))
    if readers == 1:
        return _decode(layout, data)
    values = sharing.chunks.take(key, chunk)
    if values is None:
        values = _decode(layout, data)
        sharing.chunks.put(key, chunk, values, readers)
    return values


def _copy(out: np.ndarray, layout: _ShardLayout, shard: tuple[int, ...], chunk: tuple[int, ...], values: np.ndarray,
          bounds: list[tuple[int, int]]) -> None:
    """Copy the part of a decoded chunk inside the window into ``out``."""
    src, dst = [], []
    for s, c, k, n, (a, b) in zip(shard, chunk, layout.chunk, layout.per_shard, bounds, strict=True):
        origin = (s * n + c) * k
        lo, hi = max(a, origin), min(b, origin + k)
        src.append(slice(lo - origin, hi - origin))
        dst.append(slice(lo - a, hi - a))
    out[tuple(dst)] = values[tuple(src)]


def index_size(array: zarr.Array) -> int:
    """Bytes of a shard's index at its end (:func:`check_shard` of the index alone), for the cube's layout."""
    return _layout_of(array).index_bytes


def shard_key(array: zarr.Array, coords: tuple[int, ...]) -> str:
    """The store key of ``array``'s shard at ``coords`` in its shard grid."""
    return f"{array.store_path.path}/{array.metadata.encode_chunk_key(coords)}"


VALUES_DIFFER = "its values differ from those ingest wrote (crc32 of the decoded values)"  # of a shard that decodes


def check_shard(array: zarr.Array, key: str, data: bytes | None, *, coords: tuple[int, ...] | None = None,
                checksum: int | None = None) -> str | None:
    """What is wrong with shard ``key`` of ``array`` given its bytes, or None when it is sound. ``data`` is None
    for a missing object; else its index (:func:`index_size` bytes at its end) must pass its crc32c. With
    ``coords`` (the shard's place in the shard grid) ``data`` is the whole shard: its index must point within
    it, every chunk decode to a chunk's size, and, with ``checksum``, the values decoded (the shard's region of
    the array, fill where no chunk is stored) have that crc32 (:func:`values_checksum`)."""
    layout = _layout_of(array)
    if data is None:
        return "missing"
    if len(data) < layout.index_bytes:
        return f"{len(data)} bytes, shorter than its index ({layout.index_bytes} bytes)"
    try:
        index = _index(key, data[-layout.index_bytes:], math.prod(layout.per_shard))
    except CorruptShardError as exc:
        return str(exc).removeprefix(f"{key}: ")
    if coords is None:
        return None
    end = len(data) - layout.index_bytes
    bounds = [(s * k, min((s + 1) * k, n)) for s, k, n in zip(coords, layout.shard, array.shape, strict=True)]
    bounds[0] = (coords[0] * layout.shard[0], (coords[0] + 1) * layout.shard[0])  # the block, whatever is published
    values = np.full([b - a for a, b in bounds], layout.fill, dtype=layout.dtype)
    for chunk, (offset, length) in zip(itertools.product(*map(range, layout.per_shard)), index, strict=True):
        if offset == _MISSING:
            continue
        if offset + length > end:
            return f"its index points past the chunks' end ({offset + length} > {end}): truncated"
        try:
            _place(values, layout, coords, chunk, data[offset:offset + length], bounds)
        except (RuntimeError, ValueError) as exc:  # blosc: "error during blosc decompression: -1"; a wrong size
            return f"the chunk at byte {offset} does not decode ({exc})"
    if checksum is not None and values_checksum(values) != checksum:
        return VALUES_DIFFER
    return None


def values_checksum(values: np.ndarray) -> int:
    """crc32 of an array's values (little-endian, C order): what ingest records of each shard it writes."""
    return zlib.crc32(np.ascontiguousarray(values, dtype=values.dtype.newbyteorder("<")).data)


def _layout_of(array: zarr.Array) -> _ShardLayout:
    layout = _ShardLayout.of(array)
    if layout is None:
        raise InvalidRequestError(f"{array.store_path.path} is not in the cube's shard layout "
                                  "(sharding_indexed over bytes + blosc [+ crc32c], a crc32c index at the end)")
    return layout
