"""Statistics rows grouped into batches of whole parcels, so that a territory's are worked through in bounded memory.

An extraction's files each hold some dates of many parcels (a work unit's block and run of dates); a marker needs
every date of a parcel at once. A batch is up to ``size`` declared parcels in the order the rows first show them
(:class:`ParcelBatches`), not in id order: a register's ids follow no spatial order, so batches of consecutive ids
each had rows in nearly every block's files, and a file was cut into a piece for nearly every batch (200 files x
100 batches: 20,000 pieces, 11 s to read back); a block's parcels are first seen together, so a file's rows fall
in a few batches. :func:`spill` reads the rows part by part and writes each part's rows, grouped by batch, to a
local temporary folder (an Arrow IPC file per part, a record batch per batch of parcels in it);
:class:`SpilledBatches` reads back one batch's rows at a time. Memory then holds one part, or one batch, never the
territory. A frame already in memory is grouped without copying it to disk (:class:`FrameBatches`). Rows of
parcels not declared are left out, and so are, where the batches are only followed (``place=False``: the
Sentinel-1 rows), those of parcels the first rows did not show.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

__all__ = ["FrameBatches", "ParcelBatches", "SpilledBatches", "spill"]


class ParcelBatches:
    """Which batch of ``size`` each of the declared parcels ``ids`` is in: parcels are placed in the order rows
    first show them (:meth:`numbers` with ``place``), a batch being ``size`` consecutive places. Rows of other
    statistics of the same parcels (Sentinel-1 beside Sentinel-2) follow the same batches (``place=False``)."""

    def __init__(self, ids: pd.Index, size: int) -> None:
        self.ids, self.size = ids, size
        self.place = np.full(len(ids), -1, dtype=np.int64)  # each id's place, -1 until rows show it
        self.placed = 0

    def __len__(self) -> int:
        """How many batches the parcels placed so far make."""
        return math.ceil(self.placed / self.size)

    def numbers(self, parcel_ids: pd.Series, *, place: bool = True) -> np.ndarray:
        """The batch of each row's parcel; -1 for a parcel not declared (or, without ``place``, not yet placed).
        With ``place``, the declared parcels not yet placed are placed, in the order of their first rows."""
        at = self.ids.get_indexer(parcel_ids)
        if place:
            new = pd.unique(at[at >= 0])  # in order of first appearance
            new = new[self.place[new] < 0]
            self.place[new] = np.arange(self.placed, self.placed + new.size)
            self.placed += new.size
        places = np.where(at >= 0, self.place[at], -1)
        return np.where(places >= 0, places // self.size, -1)


class FrameBatches:
    """The rows of ``frame`` (a ``parcel_id`` column) of each of the ``batches``, from memory; ``place``: as
    :meth:`ParcelBatches.numbers`."""

    def __init__(self, frame: pd.DataFrame, batches: ParcelBatches, *, place: bool = True) -> None:
        self.frame = frame
        batch = batches.numbers(frame["parcel_id"], place=place)
        self.count = len(batches)
        self.order = np.argsort(batch, kind="stable")
        self.bounds = np.searchsorted(batch[self.order], np.arange(self.count + 1), side="left")

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, k: int) -> pd.DataFrame:
        return self.frame.iloc[self.order[self.bounds[k]:self.bounds[k + 1]]]


class SpilledBatches:
    """The rows of each batch as :func:`spill` wrote them: ``pieces[k]`` lists the files and record batches holding
    batch ``k``'s rows; ``columns`` are those of the first part read (a batch without rows is a frame of them)."""

    def __init__(self, count: int, pieces: dict[int, list[tuple[Path, int]]], columns: list[str]) -> None:
        self.count, self.pieces, self.columns = count, pieces, columns

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, k: int) -> pd.DataFrame:
        frames = []
        for path, i in self.pieces.get(k, []):
            with pa.OSFile(str(path)) as f:
                frames.append(pa.ipc.open_file(f).get_batch(i).to_pandas())
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=self.columns)


def spill(parts: Iterable[pd.DataFrame], batches: ParcelBatches, folder: Path, *, place: bool = True,
          observe: Callable[[pd.DataFrame], None] | None = None) -> SpilledBatches:
    """Group the rows of ``parts`` (frames with a ``parcel_id`` column, read one at a time) into the ``batches``
    (``place``: as :meth:`ParcelBatches.numbers`), written to ``folder``. ``observe`` sees every part whole first
    (rows of parcels not declared too), for what must be known of all rows before a batch is judged."""
    folder.mkdir(parents=True, exist_ok=True)
    pieces: dict[int, list[tuple[Path, int]]] = defaultdict(list)
    columns: list[str] | None = None
    for n, part in enumerate(parts):
        if observe is not None:
            observe(part)
        columns = list(part.columns) if columns is None else columns
        path = folder / f"part-{n:06d}.arrow"
        written = _write(part, batches.numbers(part["parcel_id"], place=place), path)
        del part  # the next part is read without this one in memory
        for k, i in written:
            pieces[k].append((path, i))
    return SpilledBatches(len(batches), dict(pieces), columns or ["parcel_id"])


def _write(part: pd.DataFrame, batch: np.ndarray, path: Path) -> list[tuple[int, int]]:
    """Write the rows of ``part`` in a batch (``batch``: each row's, -1 for none) to ``path``, a record batch per
    batch; which record batch holds each batch's rows. Nothing is written for a part without such rows."""
    kept = np.flatnonzero(batch >= 0)
    if not kept.size:
        return []
    order = kept[np.argsort(batch[kept], kind="stable")]
    table = pa.Table.from_pandas(part.iloc[order], preserve_index=False)
    numbers = batch[order]
    starts = np.flatnonzero(np.r_[True, numbers[1:] != numbers[:-1]])
    written = []
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(
            sink, table.schema, options=pa.ipc.IpcWriteOptions(compression="zstd")) as writer:
        for i, (start, end) in enumerate(zip(starts, [*starts[1:], len(numbers)], strict=True)):
            writer.write_batch(table.slice(start, end - start).combine_chunks().to_batches()[0])
            written.append((int(numbers[start]), i))
    return written
