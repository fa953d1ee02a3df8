"""A zarr store wrapper that counts the requests and bytes a store sees, by verb: the write amplification of an
ingest, and the chunk reads a query makes (tests and benchmarks count them)."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import AsyncIterator, Iterable

from zarr.abc.store import ByteRequest, Store
from zarr.core.buffer import Buffer, BufferPrototype
from zarr.storage import WrapperStore


class RequestCounts:
    """Requests and bytes seen by a :class:`CountingStore` (shared by its read-only/read-write copies)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: Counter[str] = Counter()
        self.bytes_read = 0
        self.bytes_written = 0
        self.keys_read: list[str] = []

    def reset(self) -> None:
        with self.lock:
            self.requests.clear()
            self.bytes_read = self.bytes_written = 0
            self.keys_read.clear()

    def add(self, verb: str, *, n: int = 1, read: int = 0, written: int = 0, keys: Iterable[str] = ()) -> None:
        with self.lock:
            self.requests[verb] += n
            self.bytes_read += read
            self.bytes_written += written
            self.keys_read.extend(keys)


class CountingStore(WrapperStore[Store]):
    """A zarr store wrapper that counts requests and bytes, by verb.

    Used to measure write amplification during ingest, and by tests and benchmarks to count the
    chunk reads a query makes (a count, not a timing). Copies zarr makes of it (``with_read_only``)
    share the same :class:`RequestCounts`.
    """

    def __init__(self, store: Store, counts: RequestCounts | None = None) -> None:
        super().__init__(store)
        self.counts = counts if counts is not None else RequestCounts()

    def __getstate__(self) -> dict:
        return {"_store": self._store}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["_store"])

    def _with_store(self, store: Store) -> CountingStore:
        return type(self)(store, self.counts)

    @property
    def requests(self) -> Counter[str]:
        return self.counts.requests

    @property
    def bytes_read(self) -> int:
        return self.counts.bytes_read

    @property
    def bytes_written(self) -> int:
        return self.counts.bytes_written

    @property
    def keys_read(self) -> list[str]:
        return self.counts.keys_read

    def reset(self) -> None:
        self.counts.reset()

    async def get(self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None) -> Buffer | None:
        buf = await self._store.get(key, prototype, byte_range)
        self.counts.add("get", read=0 if buf is None else len(buf), keys=(key,))
        return buf

    async def get_partial_values(self, prototype: BufferPrototype,
                                 key_ranges: Iterable[tuple[str, ByteRequest | None]]) -> list[Buffer | None]:
        key_ranges = list(key_ranges)
        out = await self._store.get_partial_values(prototype, key_ranges)
        self.counts.add("get", n=len(key_ranges), read=sum(len(b) for b in out if b is not None),
                        keys=(k for k, _ in key_ranges))
        return out

    async def set(self, key: str, value: Buffer) -> None:
        await self._store.set(key, value)
        self.counts.add("set", written=len(value))

    async def set_if_not_exists(self, key: str, value: Buffer) -> None:
        await self._store.set_if_not_exists(key, value)
        self.counts.add("set", written=len(value))

    async def exists(self, key: str) -> bool:
        self.counts.add("exists")
        return await self._store.exists(key)

    def list_prefix(self, prefix: str) -> AsyncIterator[str]:
        self.counts.add("list")
        return self._store.list_prefix(prefix)

    def list_dir(self, prefix: str) -> AsyncIterator[str]:
        self.counts.add("list")
        return self._store.list_dir(prefix)
