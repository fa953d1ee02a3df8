"""Decoded chunks that several windows of one job read: decoded once, kept until the last of them reads them.

Extraction's work units read windows that overlap by a row and a column of chunks: a unit's window is its block
stretched right and down by the parcels crossing the block's edges, a few pixels that need the whole chunks the
neighbouring unit reads too (10 km territory: 3,960 chunks decoded for 3,168 stored, 2026-12-06). A job's
:class:`SharedChunks` keeps a chunk that :func:`cube.shard_reader.read_window` decoded for one window while other
windows of the job (:class:`ChunkSharing`) still need it, and hands it to each of them instead of decoding it again;
the last one drops it. Memory is bounded by :data:`SHARED_CHUNK_BYTES`: past it, a chunk is decoded again, as
before. The chunks are the same bytes either way: only decoding is saved.

One job reads one version of a cube, whose chunks never change under it, so a chunk is named by its shard's key
and its place in the shard. Threads of one process share it; a copy sent to another process (dask ``processes``,
a cluster) starts empty, as windows in other processes cannot hand it chunks anyway.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = ["SHARED_CHUNK_BYTES", "ChunkSharing", "SharedChunks"]

SHARED_CHUNK_BYTES = 128 * 2**20  # decoded chunks a process keeps waiting for their other readers, at most


class SharedChunks:
    """Decoded chunks waiting for the other windows that read them, each with how many reads are still to come."""

    def __init__(self, limit: int = SHARED_CHUNK_BYTES) -> None:
        self.limit = limit
        self._chunks: dict[tuple[str, tuple[int, ...]], tuple[np.ndarray, int]] = {}
        self._bytes = 0
        self._lock = threading.Lock()

    def __reduce__(self) -> tuple[type, tuple[int]]:
        return type(self), (self.limit,)  # another process's copy starts empty

    @property
    def nbytes(self) -> int:
        """The bytes of the chunks kept now."""
        return self._bytes

    def take(self, key: str, chunk: tuple[int, ...]) -> np.ndarray | None:
        """The decoded ``chunk`` of shard ``key`` if a reader before kept it (this read counted), else None."""
        with self._lock:
            kept = self._chunks.get((key, chunk))
            if kept is None:
                return None
            self._count_read(key, chunk, *kept)
            return kept[0]

    def put(self, key: str, chunk: tuple[int, ...], values: np.ndarray, readers: int) -> None:
        """Keep ``values``, just decoded, for the ``readers - 1`` other reads of the chunk still to come (none kept
        past :attr:`limit`); a chunk another thread kept meanwhile counts this read instead."""
        with self._lock:
            kept = self._chunks.get((key, chunk))
            if kept is not None:
                self._count_read(key, chunk, *kept)
            elif readers > 1 and self._bytes + values.nbytes <= self.limit:
                self._chunks[key, chunk] = values, readers - 1
                self._bytes += values.nbytes

    def _count_read(self, key: str, chunk: tuple[int, ...], values: np.ndarray, left: int) -> None:
        if left > 1:
            self._chunks[key, chunk] = values, left - 1
        else:
            del self._chunks[key, chunk]
            self._bytes -= values.nbytes

    def clear(self) -> None:
        """Drop every chunk kept (a job's reads are over: some of the reads counted on may never come)."""
        with self._lock:
            self._chunks.clear()
            self._bytes = 0


@dataclass(frozen=True)
class ChunkSharing:
    """What one window's reads share: the job's :class:`SharedChunks`, and the other windows of the job that read
    the same arrays (``(rows, cols)`` on the arrays' own grid)."""

    chunks: SharedChunks
    others: Sequence[tuple[slice, slice]] = field(default_factory=tuple)

    def readers(self, rows: tuple[int, int], cols: tuple[int, int]) -> int:
        """How many windows read a chunk covering ``rows`` and ``cols`` (``start, stop``): this one and the others
        that overlap it."""
        return 1 + sum(r.start < rows[1] and rows[0] < r.stop and c.start < cols[1] and cols[0] < c.stop
                       for r, c in self.others)
