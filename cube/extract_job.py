"""What a worker of an extraction does with a task (:class:`ExtractJob`): a work unit's window read per run of dates
at each band's native resolution, the statistics of its every parcel, date and band computed at once
(:class:`cube.pixels.ParcelPixels`) and written, a file per run; or a batch of parcels read across tiles through
``parcel_timeseries``, into one file whose metadata keeps their status. The seconds each phase takes are counted
(:data:`PHASES`).
"""

from __future__ import annotations

import math
import time as timer
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from zarr.abc.store import Store

from cardcube.checkpoints import checkpoint
from cardcube.errors import CardcubeError, ParcelError
from cardcube.spec import ChunkLayout
from cardcube.storage import write_bytes
from cube.band_reader import BandReader
from cube.extraction_files import PORTABLE_PARQUET, timeseries_parquet
from cube.indices import bands_for
from cube.ledger import CubeVersion
from cube.membership import DEFAULT_BUFFER
from cube.parcel_layer import ParcelLayer, parquet_bytes
from cube.parcel_stats import stats_table
from cube.pixels import TIME_COLUMNS, ParcelPixels
from cube.shared_chunks import ChunkSharing, SharedChunks
from cube.timeseries import ParcelStatus, parcel_timeseries
from cube.work_units import AcrossBatch, WorkUnit, time_chunks


@dataclass(frozen=True)
class ExtractJob:
    """Everything a unit needs, picklable for dask-distributed workers."""

    store: Store
    out: Store
    layer_store: Store
    collection: str
    version: CubeVersion
    names: tuple[str, ...]
    bands: tuple[str, ...]
    stats: tuple[str, ...]
    mask: tuple[int, ...] | None
    histogram: bool
    time: Any
    dates: Mapping[str, frozenset] | None = None  # an update: per tile, the acquisition times to add
    buffer: float = DEFAULT_BUFFER  # for the parcels read across tiles (a tile's label layer holds its own)
    all_touched: bool = False
    run: str = ""  # the run the manifest names, which names the files (cube.extraction_files)
    generation: int = 0  # ... and its generation (one more each time it was resumed after a repair)
    time_columns: tuple[str, ...] = TIME_COLUMNS  # the per-date acquisition columns of its rows (its manifest's)
    shared: SharedChunks = field(default_factory=SharedChunks)  # chunks decoded for a unit that neighbours read too

    @property
    def layout(self) -> ChunkLayout:
        return self.version.spec.chunks

    @property
    def resolutions(self) -> tuple[int, ...]:
        """The native resolution of each of ``names``."""
        return tuple(self.version.spec.band(n).resolution for n in self.names)

    @cached_property
    def groups(self) -> list[tuple[list[str], list[str]]]:
        """The requested bands in groups that share stored inputs (an index with its bands), each with
        the stored bands it needs: a unit holds one group at a time, which bounds its memory."""
        groups: list[tuple[list[str], set[str]]] = []
        for band in self.bands:
            wanted, inputs = [band], set(bands_for([band])) - {"SCL"}
            for group in [g for g in groups if g[1] & inputs]:
                groups.remove(group)
                wanted, inputs = group[0] + wanted, group[1] | inputs
            groups.append((wanted, inputs))
        return [(wanted, [n for n in self.names if n in inputs]) for wanted, inputs in groups]

    @cached_property
    def parquet(self) -> dict[str, Any]:
        """The Parquet options of the units' files (:func:`cube.extraction_files.timeseries_parquet`)."""
        return timeseries_parquet(self.version.spec, self.bands, self.stats)

    def chunks_touched(self, rows: slice, cols: slice, time_chunks: int) -> int:
        """Stored chunks a window of the 10 m grid touches over ``time_chunks`` stored time chunks, all
        variables."""
        total = 0
        for res in self.resolutions:
            _, cy, cx = self.layout.chunks(res)
            k = res // 10
            ny = (math.ceil(rows.stop / k) - 1) // cy - rows.start // k // cy + 1
            nx = (math.ceil(cols.stop / k) - 1) // cx - cols.start // k // cx + 1
            total += time_chunks * ny * nx
        return total

    def _readers(self, unit: WorkUnit, selected: np.ndarray, base: float) -> tuple[dict[str, BandReader],
                                                                                   dict[str, np.ndarray]]:
        """A reader of the unit's window of each variable at its native resolution, and the column of each
        selected 10 m window pixel in what it reads: a 20 m band is read at 20 m and indexed, never repeated."""
        w = unit.cols.stop - unit.cols.start
        r, c = unit.rows.start + selected // w, unit.cols.start + selected % w
        windows, index, sharing = {}, {}, {}
        for name, res in zip(self.names, self.resolutions, strict=True):
            k = round(res / base)
            rows, cols = _native(unit.rows, k), _native(unit.cols, k)
            windows[name] = rows, cols
            index[name] = (r // k - rows.start) * (cols.stop - cols.start) + (c // k - cols.start)
            sharing[name] = ChunkSharing(self.shared, tuple((_native(a, k), _native(b, k)) for a, b in unit.neighbours))
        time = self.time if self.dates is None else self.dates[unit.tile]
        return BandReader.open(self.store, self.version, unit.tile, windows, time=time, sharing=sharing), index

    @property
    def chunk_side(self) -> int:
        """The widest ground a chunk of any of ``names`` covers, in 10 m pixels
        (:func:`cube.work_units.with_neighbours`)."""
        return max(self.layout.chunks(res)[1] * res // self.layout.base_resolution for res in self.resolutions)

    def __call__(self, unit: WorkUnit | AcrossBatch) -> dict[str, Any]:
        """A work unit's statistics, or a batch's of parcels read across tiles, written to ``out``."""
        return self._across(unit) if isinstance(unit, AcrossBatch) else self._unit(unit)

    def _unit(self, unit: WorkUnit) -> dict[str, Any]:
        layer = ParcelLayer(self.layer_store, unit.layer, unit.tile, pd.DataFrame())
        lab = layer.labels(unit.rows, unit.cols).ravel()
        window = lab.size
        lost_at, lost_lab = layer.lost(unit.rows, unit.cols)  # a pixel of two parcels: the second one's entry
        if lost_lab.size:
            lab = np.concatenate([lab, lost_lab])
        pos = np.minimum(np.searchsorted(unit.labels, lab), unit.labels.size - 1)
        selected = np.flatnonzero(unit.labels[pos] == lab)
        at = selected  # each entry's window position: its own in the label window, a lost pixel's from the layer
        if lost_lab.size:  # each parcel's pixels in row-major order, as parcel_timeseries sums them
            at = np.where(selected < window, selected, lost_at[np.maximum(selected - window, 0)])
            order = np.argsort(at, kind="stable")
            at, selected = at[order], selected[order]
        readers, index = self._readers(unit, at, layer.geobox.resolution.x)
        coords = readers[self.names[0]].coords
        attrs = {name: reader.attrs for name, reader in readers.items()}
        rows = chunks = 0
        spent = _Phases()
        with spent("statistics"):  # the unit's pixels grouped by parcel once, for every run of dates
            template = ParcelPixels.from_labels(unit.ids, pos[selected], coords["time"][:0], {}, attrs, {},
                                                index=index)
        longest = max(d.stop - d.start for d, _ in unit.times)
        buffers: dict[tuple[Any, ...], np.ndarray] = {}

        def read(name: str, dates: slice, slot: Any) -> np.ndarray:
            """``name`` over ``dates`` as (time, pixels), read into the unit's buffer ``slot``, which every
            group and run of dates reuses: a fresh array of tens of MB per read would cost page faults."""
            reader = readers[name]
            key = (slot, reader.shape[1:], reader.dtype)
            if key not in buffers:
                buffers[key] = np.empty((longest, *reader.shape[1:]), dtype=reader.dtype)
            with spent("read"):
                data = reader.read(dates, out=buffers[key][: dates.stop - dates.start])
            return data.reshape(data.shape[0], -1)

        for dates, key in unit.times:
            chunks += self.chunks_touched(unit.rows, unit.cols, time_chunks(unit.time_edges, dates))
            scl = {"SCL": read("SCL", dates, "SCL")} if "SCL" in readers else {}
            meta = {c: coords[c][dates] for c in self.time_columns if c in coords}
            with spent("statistics"):
                pixels = replace(template, times=coords["time"][dates], values=scl, time_meta=meta)
                clear = pixels.clear(self.mask)  # the cloud mask, once for every band
            results = []
            for wanted, inputs in self.groups:  # one group of bands in memory at a time
                group = replace(pixels, values={**{n: read(n, dates, i) for i, n in enumerate(inputs)}, **scl})
                with spent("statistics"):
                    results += group.band_stats(wanted, stats=self.stats, clear=clear)
            with spent("statistics"):
                table = stats_table(results, per_date=pixels.per_date(histogram=self.histogram), encoded=True)
                table = table.append_column("cube_version", pa.array(np.full(table.num_rows, self.version.version,
                                                                             np.int64)))
            with spent("write"):
                write_bytes(self.out, key, parquet_bytes(table, **self.parquet))
            checkpoint("extract-unit-written")
            rows += table.num_rows
        return {"parcels": int(unit.ids.size), "chunks": chunks, "rows": rows, "files": [k for _, k in unit.times],
                "seconds": dict(spent), "cpu_seconds": dict(spent.cpu)}

    def _across(self, batch: AcrossBatch) -> dict[str, Any]:
        """A batch of parcels read across tiles, into its file, whose metadata keeps their status; a failure (the
        store out of reach, ...) is theirs, its message in ``failure``: the other parcels go on."""
        spent, rows, files, failure = _Phases(), 0, [], None
        try:
            with spent("across tiles"):
                frame = parcel_timeseries(self.store, batch.parcels, collection=self.collection, bands=list(self.bands),
                                          stats=self.stats, mask=self.mask, buffer=self.buffer,
                                          all_touched=self.all_touched, time=self.time, as_of=self.version,
                                          histogram=self.histogram)
        except CardcubeError as exc:  # an update's earlier file of the batch goes too, by the driver (extract)
            if isinstance(exc, ParcelError) and exc.status:  # none has a pixel, or data: each one's status
                statuses = list(exc.status)  # and no file: a re-run reads them again
            else:
                failure = str(exc)
                statuses = [ParcelStatus(pid, "failed", 0, failure) for pid in batch.parcels.ids]
        else:
            statuses = [ParcelStatus(**s) for s in frame.attrs["parcel_status"]]
            frame = frame.drop(columns=[c for c in TIME_COLUMNS if c in frame and c not in self.time_columns])
            with spent("write"):  # pandas keeps ``frame.attrs`` in the file
                write_bytes(self.out, batch.key, parquet_bytes(frame, **PORTABLE_PARQUET))
            checkpoint("extract-unit-written")
            rows, files = len(frame), [batch.key]
        # the tiles the extraction gave them (an update keeps them: see _earlier_tiles), not those read now
        return {"parcels": len(batch.parcels), "chunks": 0, "rows": rows, "files": files, "seconds": dict(spent),
                "cpu_seconds": dict(spent.cpu), "failure": failure,
                "status": [replace(s, tile=batch.tiles[s.parcel_id]) for s in statuses]}


PHASES = ("read", "statistics", "write", "across tiles")  # of a unit (read, statistics, write) or a batch


class _Phases(Counter):
    """Seconds a work unit spends in each phase (read, statistics, write): where extraction time goes. ``cpu``:
    the thread's CPU seconds in each, without the waits (for the store, for the GIL, for a core). Blosc decodes
    in the calling thread but in the main one (``--scheduler sync``), where its own threads do it, unseen here."""

    def __init__(self) -> None:
        super().__init__()
        self.cpu: Counter[str] = Counter()

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        start, cpu = timer.perf_counter(), timer.thread_time()
        try:
            yield
        finally:
            self[phase] += timer.perf_counter() - start
            self.cpu[phase] += timer.thread_time() - cpu


def _native(pixels: slice, k: int) -> slice:
    """A span of 10 m pixels on a grid ``k`` times coarser: the native pixels holding it."""
    return slice(pixels.start // k, -(-pixels.stop // k))
