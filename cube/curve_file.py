"""A parcels x grid-points table of float64 on local disk, column by column: what one pass over a territory's parcels
keeps for the next (their NDVI profiles), read back a block of parcels or whole columns at a time.

A crop's reference profile is the median of its parcels' profiles at each grid point; a median is exact only over
all of them. Kept in memory, the profiles of 300,000 parcels take some 100 MB; on disk, memory holds a few columns
(8 bytes a parcel each) or a batch's rows. Plain reads and writes, not a memory map: mapped pages would count in
the process's resident memory as they are touched.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

import numpy as np

from cardcube.scratch import scratch_folder

__all__ = ["CurveArray", "CurveFile", "curve_table"]

ITEM = np.dtype(np.float64).itemsize


class CurveFile:
    """``rows`` x ``columns`` float64 at ``path`` (created, NaN until written), stored column after column."""

    def __init__(self, path: Path, rows: int, columns: int) -> None:
        self.rows, self.columns = rows, columns
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        nan = np.full(rows, np.nan).tobytes()
        for j in range(columns):
            os.pwrite(self.fd, nan, j * rows * ITEM)

    def write(self, start: int, block: np.ndarray) -> None:
        """Rows ``start`` .. ``start + len(block)`` (``block``: those rows x every column)."""
        for j in range(self.columns):
            os.pwrite(self.fd, np.ascontiguousarray(block[:, j], dtype=np.float64).tobytes(),
                      (j * self.rows + start) * ITEM)

    def reorder(self, place: np.ndarray) -> None:
        """Move row ``i`` to row ``place[i]`` (``place``: a permutation of the rows), a column at a time: the rows
        written in one order (batches of parcels as the statistics show them) are read back in another (by id)."""
        for j in range(self.columns):
            column = np.empty(self.rows)
            column[place] = self._read(j * self.rows, self.rows)
            os.pwrite(self.fd, column.tobytes(), j * self.rows * ITEM)

    def read_rows(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start`` .. ``stop`` x every column, C-ordered as a table built in memory would be."""
        out = np.empty((stop - start, self.columns))
        for j in range(self.columns):
            out[:, j] = self._read(j * self.rows + start, stop - start)
        return out

    def read_columns(self, start: int, stop: int) -> np.ndarray:
        """Every row x columns ``start`` .. ``stop``."""
        return np.ascontiguousarray(self._read(start * self.rows, (stop - start) * self.rows)
                                    .reshape(stop - start, self.rows).T)

    def _read(self, offset: int, count: int) -> np.ndarray:
        data = os.pread(self.fd, count * ITEM, offset * ITEM)
        if len(data) != count * ITEM:
            raise OSError(f"short read of the profiles' temporary file: {len(data)} of {count * ITEM} bytes")
        return np.frombuffer(data, dtype=np.float64)

    def close(self) -> None:
        os.close(self.fd)

    def __enter__(self) -> CurveFile:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()


class CurveArray:
    """The table of :class:`CurveFile`, in memory: for statistics already held in memory (a frame far larger than
    their profiles), which need no temporary folder. The same reads give the same arrays, to the bit."""

    def __init__(self, rows: int, columns: int) -> None:
        self.rows, self.columns = rows, columns
        self.table = np.full((rows, columns), np.nan)

    def write(self, start: int, block: np.ndarray) -> None:
        self.table[start:start + len(block)] = block

    def reorder(self, place: np.ndarray) -> None:
        table = np.empty_like(self.table)
        table[place] = self.table
        self.table = table

    def read_rows(self, start: int, stop: int) -> np.ndarray:
        return self.table[start:stop].copy()

    def read_columns(self, start: int, stop: int) -> np.ndarray:
        return np.ascontiguousarray(self.table[:, start:stop])


@contextmanager
def curve_table(rows: int, columns: int, *, on_disk: bool) -> Iterator[CurveFile | CurveArray]:
    """A ``rows`` x ``columns`` table of profiles: a :class:`CurveFile` in a temporary folder (``TMPDIR``) removed
    afterwards, or without ``on_disk`` a :class:`CurveArray`."""
    if not on_disk:
        yield CurveArray(rows, columns)
        return
    with scratch_folder("flag") as folder, CurveFile(folder / "profiles", rows, columns) as curves:
        yield curves
