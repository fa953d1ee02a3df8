"""read_window against zarr-python on the same arrays: equal values for every window, clear errors for a
damaged shard, zarr's own read for layouts it does not handle."""

from __future__ import annotations

import itertools
import os
import pickle

import numcodecs
import numpy as np
import pytest
import zarr
from zarr.codecs import BloscCodec, Crc32cCodec, ZstdCodec

from cardcube.counting_store import CountingStore
from cardcube.errors import CorruptShardError
from cardcube.storage import open_store, read_bytes, write_bytes
from cube.shard_reader import read_window
from cube.shared_chunks import SHARED_CHUNK_BYTES, ChunkSharing, SharedChunks

SHAPE, SHARDS, CHUNKS = (20, 70, 90), (8, 32, 32), (4, 16, 16)


def _blosc(dtype: str) -> BloscCodec:
    return BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle", typesize=np.dtype(dtype).itemsize)


def _array(store, name: str, dtype: str, fill, compressors=None) -> tuple[zarr.Array, np.ndarray]:
    """A sharded array as ingest writes it (each chunk blosc, then its crc32c), with edge shards, empty chunks and
    one shard never written."""
    rng = np.random.default_rng(1)
    codec = compressors or (_blosc(dtype), Crc32cCodec())
    arr = zarr.create_array(store, name=name, shape=SHAPE, dtype=dtype, chunks=CHUNKS, shards=SHARDS,
                            compressors=codec, fill_value=fill, zarr_format=3)
    data = np.full(SHAPE, fill, dtype=dtype)
    data[:, 5:60, 3:80] = rng.integers(1, 5000, (SHAPE[0], 55, 77)).astype(dtype)
    data[:8, :16, :16] = fill  # an empty chunk inside a written shard
    data[8:16, 32:64, 64:90] = fill  # a whole shard of fill: zarr does not write it
    arr[...] = data
    return arr, data


WINDOWS = [
    (slice(0, 20), slice(0, 70), slice(0, 90)),  # everything, edge shards included
    (slice(3, 11), slice(5, 41), slice(17, 66)),  # across shard and chunk edges
    (slice(19, 20), slice(69, 70), slice(89, 90)),  # one corner pixel
    (slice(8, 16), slice(32, 64), slice(64, 90)),  # the shard never written
    (slice(4, 4), slice(0, 10), slice(0, 10)),  # empty
]


def _reopened(tmp_path, path: str, *, through_store: bool) -> zarr.Array:
    """The array on a plain folder (read with pread) or behind a store wrapper (read through the store)."""
    store = open_store(tmp_path, read_only=True)
    return zarr.open_array(CountingStore(store) if through_store else store, path=path, mode="r")


@pytest.mark.parametrize("through_store", [False, True], ids=["folder", "store"])
@pytest.mark.parametrize("dtype, fill", [("uint16", 0), ("uint8", 0), ("float32", np.nan)])
@pytest.mark.parametrize("checksum", [True, False], ids=["chunk-crc32c", "blosc-alone"])  # without: before 2026-12-07
def test_same_values_as_zarr(tmp_path, dtype: str, fill, through_store: bool, checksum: bool) -> None:
    _, data = _array(open_store(tmp_path), "band", dtype, fill, compressors=None if checksum else _blosc(dtype))
    arr = _reopened(tmp_path, "band", through_store=through_store)
    assert not (tmp_path / "band" / "c" / "1" / "1" / "2").exists()  # really never written
    for window in WINDOWS:
        got = read_window(arr, window)
        assert got.dtype == data.dtype
        np.testing.assert_array_equal(got, arr[window])
        np.testing.assert_array_equal(got, data[window])


@pytest.mark.parametrize("through_store", [False, True], ids=["folder", "store"])
def test_reads_into_a_reused_buffer(tmp_path, through_store: bool) -> None:
    """A buffer read into again holds the new window only: fill where no chunk is stored, never stale values."""
    _, data = _array(open_store(tmp_path), "band", "uint16", 0)
    _array(open_store(tmp_path), "zstd", "uint16", 0, compressors=ZstdCodec(level=1))
    buf = np.empty((8, 32, 26), dtype="uint16")
    for path in ("band", "zstd"):  # the cube's layout, and one zarr reads
        arr = _reopened(tmp_path, path, through_store=through_store)
        written = (slice(0, 8), slice(32, 64), slice(38, 64))
        assert read_window(arr, written, out=buf) is buf
        np.testing.assert_array_equal(buf, data[written])
        assert buf.any()
        read_window(arr, (slice(8, 16), slice(32, 64), slice(64, 90)), out=buf)  # the shard never written
        assert not buf.any()
        with pytest.raises(ValueError, match="window needs uint16"):
            read_window(arr, written, out=np.empty((8, 32, 25), dtype="uint16"))


@pytest.mark.parametrize("through_store", [False, True], ids=["folder", "store"])
def test_missing_shards_are_reported_after_the_read(tmp_path, through_store: bool) -> None:
    """``on_missing`` hears of the shards read as fill because they do not exist, and of no other."""
    _, data = _array(open_store(tmp_path), "band", "uint16", 0)
    arr = _reopened(tmp_path, "band", through_store=through_store)
    heard: list[list[str]] = []
    window = (slice(8, 16), slice(0, 64), slice(40, 90))  # shards (1, 0, 1), (1, 0, 2), (1, 1, 1), (1, 1, 2)
    got = read_window(arr, window, on_missing=heard.append)
    np.testing.assert_array_equal(got, data[window])
    assert heard == [["band/c/1/1/2"]]
    heard.clear()
    read_window(arr, (slice(0, 8), slice(0, 32), slice(0, 64)), on_missing=heard.append)  # written, empty chunk
    assert heard == []


@pytest.mark.parametrize("through_store", [False, True], ids=["folder", "store"])
def test_a_shard_deleted_after_its_index_was_kept_is_missing_not_corrupt(tmp_path, through_store: bool) -> None:
    """A shard whose index a reader keeps (the REST service's cache) and that is then deleted (an expired
    version's hot data) is reported missing, on a folder and through a store (S3) alike, so the caller can
    tell an expired version (:func:`cube.ledger.confirm_committed`) from a damaged shard."""
    _, data = _array(open_store(tmp_path), "band", "uint16", 0)
    arr = _reopened(tmp_path, "band", through_store=through_store)
    window, indexes = (slice(0, 8), slice(0, 32), slice(32, 64)), {}
    np.testing.assert_array_equal(read_window(arr, window, indexes=indexes), data[window])
    assert "band/c/0/0/1" in indexes
    os.remove(tmp_path / "band" / "c" / "0" / "0" / "1")
    heard: list[list[str]] = []
    got = read_window(arr, window, indexes=indexes, on_missing=heard.append)
    assert heard == [["band/c/0/0/1"]] and (got == 0).all()
    assert "band/c/0/0/1" not in indexes  # not kept for a shard that is gone


def test_requests_one_index_and_one_range_per_shard(tmp_path) -> None:
    _array(open_store(tmp_path), "band", "uint16", 0)
    counting = CountingStore(open_store(tmp_path, read_only=True))
    arr = zarr.open_array(counting, path="band", mode="r")
    counting.counts.requests.clear()
    read_window(arr, (slice(0, 8), slice(0, 32), slice(0, 64)))  # two written shards, 2 x 2 x 4 chunks
    assert sum(counting.counts.requests.values()) == 4



@pytest.mark.parametrize("through_store", [False, True], ids=["folder", "store"])
def test_kept_shard_indexes_are_not_fetched_again(tmp_path, monkeypatch, through_store: bool) -> None:
    """With ``indexes`` kept by the caller, a second read of the same shards fetches only their chunks, and
    gives the same values; a shard never written is asked for again (it is not cached as absent)."""
    _, data = _array(open_store(tmp_path), "band", "uint16", 0)
    arr = _reopened(tmp_path, "band", through_store=through_store)
    preads: list[int] = []
    real_pread = os.pread
    monkeypatch.setattr(os, "pread", lambda fd, n, off: preads.append(n) or real_pread(fd, n, off))
    counting = arr.store_path.store if through_store else None
    indexes: dict = {}
    window = (slice(0, 8), slice(0, 32), slice(0, 64))  # two written shards
    requests = []
    for _ in range(2):
        preads.clear()
        if counting is not None:
            counting.counts.reset()
        np.testing.assert_array_equal(read_window(arr, window, indexes=indexes), data[window])
        requests.append(sum(counting.counts.requests.values()) if counting is not None else len(preads))
    assert requests == [4, 2]  # an index and a range per shard, then the ranges alone
    assert sorted(indexes) == ["band/c/0/0/0", "band/c/0/0/1"]
    never = (slice(8, 16), slice(32, 64), slice(64, 90))
    read_window(arr, never, indexes=indexes)
    assert "band/c/1/1/2" not in indexes

def test_ranges_skip_unneeded_chunks(tmp_path) -> None:
    """A window over half of a shard whose chunks lie between other chunks of the shard: with no gap
    allowed, exactly the index and those chunks' bytes are read (in several ranges); with a large gap, one
    range spans them. Same values either way."""
    _, data = _array(open_store(tmp_path), "band", "uint16", 0)
    counting = CountingStore(open_store(tmp_path, read_only=True))
    arr = zarr.open_array(counting, path="band", mode="r")
    tail = 16 * 8 + 4  # shard (0, 0, 0): 2 x 2 x 2 chunks, (offset, length) each, and a crc32c
    index = np.frombuffer(read_bytes(open_store(tmp_path), "band/c/0/0/0")[-tail:-4], "<u8").reshape(2, 2, 2, 2)
    offsets, lengths = index.reshape(-1, 2).T.astype(np.int64)
    coords = np.indices((2, 2, 2)).reshape(3, -1)  # each chunk's place in the shard, in the index's order
    for axis in range(3):  # a half of the shard whose chunks are not stored one after the other
        need, skip = (coords[axis] == 1) & (lengths > 0), (coords[axis] == 0) & (lengths > 0)
        if ((offsets[skip] > offsets[need].min()) & (offsets[skip] < offsets[need].max())).any():
            break
    else:
        pytest.fail("no half of the shard has its chunks apart")
    window = tuple(slice(s // 2, s) if a == axis else slice(0, s) for a, s in enumerate(SHARDS))
    needed = int(lengths[need].sum())
    counting.reset()
    np.testing.assert_array_equal(read_window(arr, window, gap=0), data[window])
    assert counting.bytes_read == tail + needed and counting.requests["get"] > 2
    counting.reset()
    np.testing.assert_array_equal(read_window(arr, window, gap=10**9), data[window])
    assert counting.bytes_read > tail + needed and counting.requests["get"] == 2


@pytest.mark.parametrize("through_store", [False, True], ids=["folder", "store"])
def test_damaged_shard_is_an_error(tmp_path, through_store: bool) -> None:
    store = open_store(tmp_path)
    _array(store, "band", "uint16", 0)
    arr = _reopened(tmp_path, "band", through_store=through_store)
    window = (slice(0, 4), slice(0, 16), slice(0, 32))
    key = "band/c/0/0/0"
    good = read_bytes(store, key)
    blob = bytearray(good)
    blob[-10] ^= 0xFF  # inside the index, before its checksum
    write_bytes(store, key, bytes(blob))
    with pytest.raises(CorruptShardError, match="checksum"):
        read_window(arr, window)
    n = 2 * 2 * 2
    index = np.frombuffer(good[-(16 * n + 4):-4], "<u8").copy().reshape(n, 2)
    index[index[:, 0] != 2**64 - 1, 0] += len(good)  # every stored chunk now past the end of the shard
    raw = index.astype("<u8").tobytes()
    write_bytes(store, key, good[:-(16 * n + 4)] + bytes(numcodecs.CRC32C().encode(raw)))
    with pytest.raises(CorruptShardError, match="past the end"):
        read_window(arr, window)
    blob = bytearray(good)  # the index sound, a chunk's bytes not: blosc's RuntimeError, a raw traceback
    index = np.frombuffer(good[-(16 * n + 4):-4], "<u8").reshape(n, 2)
    offset, length = next((o, ln) for o, ln in index if o != 2**64 - 1)
    blob[int(offset):int(offset + length)] = bytes(int(length))
    write_bytes(store, key, bytes(blob))
    with pytest.raises(CorruptShardError, match=r"band/c/0/0/0: its chunk \(\d+, \d+, \d+\) does not decode"):
        read_window(arr, window)


def _silently_damaged(chunk: bytes, codec: numcodecs.Blosc) -> bytes:
    """``chunk`` (blosc's bytes) with one byte changed so that blosc still decodes it, into other values."""
    good = codec.decode(chunk)
    for at in range(len(chunk) - 1, 16, -1):  # from the end of its zstd stream: literals, not the block headers
        blob = bytearray(chunk)
        blob[at] ^= 0x10
        try:
            if codec.decode(bytes(blob)) != good:
                return bytes(blob)
        except RuntimeError:
            continue
    raise AssertionError("no byte of the chunk decodes into other values when changed")


@pytest.mark.parametrize("through_store", [False, True], ids=["folder", "store"])
def test_a_chunk_damaged_into_other_values_fails_its_checksum(tmp_path, through_store: bool) -> None:
    """Blosc decodes many a damaged chunk into other values without an error (a byte changed in its zstd stream:
    a disk's or a copy's fault), which a read served as numbers, as in an array of blosc alone (ingest's before
    2026-12-07). Each chunk ingest writes ends with its crc32c: the read fails, naming the shard, zarr's as ours."""
    store = open_store(tmp_path)
    window = (slice(0, 4), slice(0, 16), slice(16, 32))  # the second chunk of the first shard
    key_chunk = (0, 0, 1)
    n = 2 * 2 * 2
    for name, codecs in (("before", _blosc("uint16")), ("band", None)):
        _, data = _array(store, name, "uint16", 0, compressors=codecs)
        key = f"{name}/c/0/0/0"
        good = read_bytes(store, key)
        index = np.frombuffer(good[-(16 * n + 4):-4], "<u8").reshape(2, 2, 2, 2)
        offset, length = (int(v) for v in index[key_chunk])
        chunk = good[offset:offset + length]
        blosc = numcodecs.Blosc(cname="zstd", clevel=3, shuffle=numcodecs.Blosc.BITSHUFFLE)
        payload = chunk if codecs is not None else chunk[:-4]  # the crc32c after blosc's bytes
        damaged = _silently_damaged(payload, blosc) + chunk[len(payload):]
        write_bytes(store, key, good[:offset] + damaged + good[offset + length:])
        arr = _reopened(tmp_path, name, through_store=through_store)
        if codecs is not None:  # blosc alone: other values, no error
            got = read_window(arr, window)
            assert not np.array_equal(got, data[window]) and np.array_equal(arr[window], got)
            continue
        with pytest.raises(CorruptShardError, match=r"band/c/0/0/0: its chunk \(0, 0, 1\) does not decode \(.*chec"):
            read_window(arr, window)
        with pytest.raises(ValueError, match="checksum do not match"):  # zarr's own read
            arr[window]
        np.testing.assert_array_equal(read_window(arr, (slice(0, 4), slice(0, 16), slice(0, 16))),
                                      data[:4, :16, :16])  # the shard's other chunks read as before


def test_other_layouts_are_read_by_zarr(tmp_path) -> None:
    arr, data = _array(open_store(tmp_path), "zstd", "uint16", 0, compressors=ZstdCodec(level=1))
    window = (slice(2, 13), slice(10, 50), slice(0, 70))
    np.testing.assert_array_equal(read_window(arr, window), data[window])


class _SlowStore(CountingStore):
    """A folder answering each read after 50 ms, as object storage does: reads started at once overlap."""

    async def get(self, key, prototype, byte_range=None):
        import asyncio

        await asyncio.sleep(0.05)
        return await super().get(key, prototype, byte_range)


def test_reads_at_once_fetch_a_shared_shard_index_once(tmp_path) -> None:
    """Dask reads a lazy Dataset chunk by chunk from several threads: those of one shard wait for the index
    fetch in flight instead of each fetching it. A damaged index fails every waiting read, and leaves
    nothing behind in ``indexes``."""
    from concurrent.futures import ThreadPoolExecutor

    store = open_store(tmp_path)
    _, data = _array(store, "band", "uint16", 0)
    slow = _SlowStore(open_store(tmp_path, read_only=True))
    arr = zarr.open_array(slow, path="band", mode="r")
    windows = [(slice(t, t + 4), slice(y, y + 16), slice(x, x + 16))  # the 8 chunks of shard 0/0/1
               for t in (0, 4) for y in (0, 16) for x in (32, 48)]
    indexes: dict = {}
    slow.counts.reset()
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda w: read_window(arr, w, indexes=indexes), windows))
    for window, values in zip(windows, got, strict=True):
        np.testing.assert_array_equal(values, data[window])
    assert slow.requests["get"] == 1 + len(windows)  # one index, then each read's chunk
    assert list(indexes) == ["band/c/0/0/1"] and isinstance(indexes["band/c/0/0/1"], np.ndarray)

    blob = bytearray(read_bytes(store, "band/c/0/0/0"))
    blob[-10] ^= 0xFF
    write_bytes(store, "band/c/0/0/0", bytes(blob))
    damaged = [(slice(0, 4), slice(y, y + 16), slice(x, x + 16)) for y in (0, 16) for x in (0, 16)]
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(read_window, arr, w, indexes=indexes) for w in damaged]
    for future in futures:
        with pytest.raises(CorruptShardError, match="checksum"):
            future.result()
    assert "band/c/0/0/0" not in indexes


@pytest.fixture
def plain_http(tmp_path):
    """``tmp_path`` served by Python's own ``http.server``, which answers every request with the whole file: it
    ignores the Range header (as some web servers and proxies do)."""
    import functools
    import http.server
    import threading

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_a_server_ignoring_byte_ranges_is_named_not_taken_for_a_damaged_shard(tmp_path, plain_http) -> None:
    """A cube copied to a web server that answers a byte range with the whole file: the shard's whole bytes were
    read as its index ("shard index fails its checksum") or its chunks ("index points past the end of the shard"),
    a sound cube called damaged. The server is named, and what to serve the cube with."""
    from cardcube.errors import StoreError

    _array(open_store(tmp_path), "band", "uint16", 0)
    arr = zarr.open_array(open_store(plain_http, read_only=True), path="band", mode="r")
    window = (slice(0, 4), slice(0, 16), slice(0, 32))
    advice = rf"^{plain_http} ignores HTTP byte ranges: .* of band/c/0/0/0, .* `cardcube catalog serve"
    with pytest.raises(StoreError, match=advice):
        read_window(arr, window)
    indexes: dict = {}  # the index known (kept by an open Dataset): the chunks' range answered whole
    read_window(_reopened(tmp_path, "band", through_store=False), window, indexes=indexes)
    with pytest.raises(StoreError, match=advice):
        read_window(arr, window, indexes=indexes)


def _stored_chunks(data: np.ndarray, fill, windows: list[tuple[slice, ...]]) -> int:
    """The chunks (of CHUNKS) any of ``windows`` touches that hold a value other than ``fill`` (zarr stores no
    other), counted once: what reading them all needs to decode."""
    cells = set()
    for window in windows:
        ranges = [range(s.start // c, -(-s.stop // c)) for s, c in zip(window, CHUNKS, strict=True)]
        cells.update(itertools.product(*ranges))
    return sum(bool((data[tuple(slice(i * c, (i + 1) * c) for i, c in zip(cell, CHUNKS, strict=True))] != fill).any())
               for cell in cells)


@pytest.mark.parametrize("limit", [SHARED_CHUNK_BYTES, 0], ids=["shared", "over the limit"])
def test_chunks_two_windows_share_are_decoded_once(tmp_path, monkeypatch, limit: int) -> None:
    """Overlapping windows of one job (extraction's neighbouring work units) decode each chunk once: the first reader
    keeps it for the other, which takes it (the last reader drops it); past the memory limit each decodes its own."""
    _, data = _array(open_store(tmp_path), "band", "uint16", 0)
    arr = _reopened(tmp_path, "band", through_store=False)
    decoded = []

    class CountingBlosc(numcodecs.Blosc):
        def decode(self, buf, out=None):
            decoded.append(len(buf))
            return super().decode(buf, out)

    monkeypatch.setattr(numcodecs, "Blosc", CountingBlosc)
    a, b = (slice(0, 20), slice(5, 41), slice(17, 66)), (slice(2, 20), slice(30, 60), slice(40, 80))
    shared = SharedChunks(limit)
    for window, other in ((a, b), (b, a)):
        sharing = ChunkSharing(shared, [other[1:]])
        np.testing.assert_array_equal(read_window(arr, window, sharing=sharing), data[window])
    separately = _stored_chunks(data, 0, [a]) + _stored_chunks(data, 0, [b])
    assert len(decoded) == (_stored_chunks(data, 0, [a, b]) if limit else separately)
    assert len(decoded) < separately or not limit
    assert shared.nbytes == 0  # the second window was the last reader of every chunk kept


def test_shared_chunks_count_their_readers_and_start_empty_in_another_process() -> None:
    shared = SharedChunks()
    values = np.arange(6, dtype=np.uint16)
    shared.put("s/0", (0, 1), values, readers=3)
    assert shared.nbytes == values.nbytes
    assert shared.take("s/0", (0, 1)) is values
    shared.put("s/0", (0, 1), values.copy(), readers=3)  # decoded meanwhile by another thread: a read counted
    assert shared.take("s/0", (0, 1)) is None and shared.nbytes == 0
    shared.put("s/0", (0, 2), values, readers=1)  # no other reader: not kept
    assert shared.take("s/0", (0, 2)) is None
    shared.put("s/0", (0, 2), values, readers=2)
    copy = pickle.loads(pickle.dumps(shared))
    assert copy.limit == shared.limit and copy.nbytes == 0 and copy.take("s/0", (0, 2)) is None
    sharing = ChunkSharing(shared, [(slice(0, 10), slice(0, 10)), (slice(10, 20), slice(0, 10))])
    assert [sharing.readers(r, (5, 9)) for r in ((0, 5), (8, 12), (10, 16), (20, 30))] == [2, 3, 2, 1]
