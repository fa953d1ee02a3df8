"""The statistics files of an extraction that hold rows of some dates, and those rows, found by the files' footers.

A date a repair wrote anew (``ingest --repair``) lies in one run of dates of a tile: the files of its other runs are
left unread, their Parquet footers' ``time`` statistics ruling it out (:func:`files_holding`). Used where an update
drops the rows of such dates (:func:`cube.extraction_files.drop_replaced`), and where a run resumed after a repair
finds its files holding them (:func:`cube.extraction_manifest.check_manifest`,
:func:`cube.extraction_files.held_before_repair`).
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from zarr.abc.store import Store

from cardcube.storage import read_bytes, read_tails
from cube.ledger import CubeVersion


def scene_times(version: CubeVersion, tile: str, scenes: Iterable[str]) -> pa.Array:
    """The acquisition times of ``scenes`` on ``tile``, as the statistics files store them."""
    wanted = set(scenes)
    return pa.array([a.datetime64 for a in version.tiles[tile].acquisitions if a.scene_id in wanted],
                    pa.timestamp("ns"))


FOOTER_BYTES = 1 << 16  # a statistics file's tail read for its footer (a few kB: its schema and row groups)


def _may_hold(out: Store, keys: Sequence[str], times: pa.Array) -> list[str]:
    """Those of ``keys`` (statistics files) that may hold rows of ``times``: each file's footer is read (its tail,
    all at once) and a file whose ``time`` column's range in every row group misses them all is left out, unread;
    a file whose footer tells nothing is kept. A repaired date is in one time run of a tile: its other files were
    read whole for nothing (on S3, a GET of megabytes each, one after another)."""
    wanted = times.to_numpy(zero_copy_only=False).astype("datetime64[ns]")
    kept = []
    for key, tail in zip(keys, read_tails(out, keys, FOOTER_BYTES), strict=True):
        spans = _time_spans(tail)
        if spans is None or any(((lo <= wanted) & (wanted <= hi)).any() for lo, hi in spans):
            kept.append(key)
    return kept


def _time_spans(tail: bytes | None) -> list[tuple[np.datetime64, np.datetime64]] | None:
    """The least and greatest ``time`` of each row group of the Parquet file whose last bytes are ``tail`` (naive
    UTC, as the files store it), from its footer (none for a file of no row); None where the tail does not hold the
    footer whole, or the footer keeps no such statistics."""
    if tail is None or len(tail) < 8 or tail[-4:] != b"PAR1":
        return None
    size = int.from_bytes(tail[-8:-4], "little")
    if size + 8 > len(tail):
        return None
    try:
        meta = pq.read_metadata(pa.BufferReader(tail[-(size + 8):]))
        column = meta.schema.names.index("time")
    except (pa.ArrowException, ValueError):
        return None
    if meta.num_rows == 0:  # a file written anew without any row (drop_replaced): no time, whatever its groups say
        return []
    spans = []
    for group in range(meta.num_row_groups):
        stats = meta.row_group(group).column(column).statistics
        if stats is None or not stats.has_min_max:
            return None
        spans.append((_naive(stats.min), _naive(stats.max)))
    return spans


def _naive(value: Any) -> np.datetime64:
    """A footer's time statistic as naive UTC nanoseconds."""
    t = pd.Timestamp(value)
    return np.datetime64((t.tz_convert(None) if t.tzinfo else t).to_datetime64(), "ns")


def files_holding(out: Store, keys: Sequence[str], times: pa.Array) -> Iterator[tuple[str, pa.Table, pa.Array]]:
    """Each of ``keys`` (statistics files) that holds rows of ``times``, read (those whose footers rule them out are
    not: :func:`_may_hold`), with its table and which of its rows are of ``times``."""
    for key in _may_hold(out, keys, times):
        data = read_bytes(out, key)
        if data is None:
            continue
        table = pq.read_table(io.BytesIO(data))
        kind = pa.timestamp("ns", table.schema.field("time").type.tz)  # lossless, whatever unit the file has
        holding = pc.is_in(table["time"].cast(kind), value_set=times.cast(kind))
        if pc.any(holding).as_py():
            yield key, table, holding
