"""Reading an extraction (:func:`cube.extract.extract`): its statistics rows, its status table and its manifest.

The readers refuse an unfinished extraction unless asked to read what is there, and read only the files of its run
(:func:`cube.extraction_files.extraction_keys`). :func:`read_timeseries`, :func:`read_status` and
:func:`read_manifest` are :mod:`cube.extract`'s too.
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import geopandas as gpd
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from zarr.abc.store import Store

from cardcube.errors import CubeNotFoundError, InvalidRequestError, StoreError
from cardcube.storage import StoreLike, open_store, read_bytes, read_json, store_url
from cube.extraction_files import MANIFEST, STATUS, extraction_keys, tile_of
from cube.extraction_manifest import stored_manifest
from cube.indices import band_list
from cube.stats import FRAME_COLUMNS


def _extraction_store(out: StoreLike, storage_options: Mapping[str, Any] | None) -> Any:
    """The store of the extraction at ``out``, read only; a missing folder is named as no extraction (not as no
    cube, which :func:`open_store` says)."""
    try:
        return open_store(out, storage_options=storage_options, read_only=True)
    except CubeNotFoundError:
        raise InvalidRequestError(f"no extraction at {out}: the folder does not exist (give the --out folder of "
                                  f"cardcube extract)") from None


def holds_extraction(out: StoreLike, storage_options: Mapping[str, Any] | None = None) -> bool:
    """Whether ``out`` holds an extraction (finished or not), found without creating anything."""
    try:
        return read_json(_extraction_store(out, storage_options), MANIFEST) is not None
    except InvalidRequestError:  # no such folder
        return False


def _finished(store: Any, *, allow_incomplete: bool) -> dict[str, Any]:
    """The manifest of the extraction at ``store``; a clear error if it holds none, or an unfinished one (its
    files hold only some parcels) and ``allow_incomplete`` is not set."""
    manifest = stored_manifest(store)
    if manifest is None:
        raise InvalidRequestError(f"no extraction at {store_url(store)}: it has no {MANIFEST} (give the --out folder "
                                  f"of cardcube extract)")
    if not manifest.get("complete") and not allow_incomplete:
        raise InvalidRequestError(f"the extraction at {store_url(store)} is unfinished: its files hold only some "
                                  f"parcels and dates. Resume it with the same cardcube extract command (or pass "
                                  f"allow_incomplete=True to read what is there)")
    return manifest


def read_timeseries(out: StoreLike, *, bands: Sequence[str] | None = None, columns: Sequence[str] | None = None,
                    storage_options: Mapping[str, Any] | None = None, allow_incomplete: bool = False) -> pd.DataFrame:
    """Every statistics row of the extraction at ``out`` (only ``bands``, in any case, and ``columns``, if
    given: one it does not hold is an error), sorted by parcel, time and band, with the ``tile`` it was read
    from (the partition key, as pyarrow's hive partitioning gives it). An unfinished extraction is refused
    unless ``allow_incomplete``.

    Reads all files into memory: for a territory, select the bands and columns you need, read them file by file
    (:func:`timeseries_files`), or query the Parquet dataset with pyarrow, DuckDB or dask instead
    (``<out>/timeseries/*/*-<run>.parquet``, the manifest's ``run``, partitioned by ``tile=``: a stopped run's late
    files may lie beside them).
    """
    parts = list(timeseries_files(out, bands=bands, columns=columns, storage_options=storage_options,
                                  allow_incomplete=allow_incomplete))
    frame = pd.concat(parts, ignore_index=True)
    return frame.sort_values(["parcel_id", "time", "band"], kind="stable", ignore_index=True)


def timeseries_files(out: StoreLike, *, bands: Sequence[str] | None = None, columns: Sequence[str] | None = None,
                     storage_options: Mapping[str, Any] | None = None, allow_incomplete: bool = False
                     ) -> Iterator[pd.DataFrame]:
    """The rows of :func:`read_timeseries`, a frame per statistics file (a work unit's block and run of dates, or a
    square of parcels read across tiles), unsorted: memory holds one file's rows at a time. The arguments are
    checked, and the manifest read, before the first frame is yielded; an extraction without a row yields one
    empty frame of the columns asked for."""
    store = _extraction_store(out, storage_options)
    manifest = _finished(store, allow_incomplete=allow_incomplete)
    keys = extraction_keys(store, manifest)
    where = f"the extraction at {store_url(store)}"
    if bands is not None:
        extracted = {b.upper(): b for b in manifest["bands"]}
        bands = [extracted.get(b.upper(), b) for b in band_list(bands)]
        if missing := [b for b in bands if b not in manifest["bands"]]:
            raise InvalidRequestError(f"{where} holds no band {', '.join(missing)}; its bands: "
                                      f"{', '.join(manifest['bands'])}")
    if not keys:  # no parcel measured: no row, but the columns asked for (a frame of none was no frame to select from)
        return iter([pd.DataFrame(columns=[*dict.fromkeys(["parcel_id", "time", "band",
                                                            *(columns or FRAME_COLUMNS[3:]), "tile"])])])
    files = (io.BytesIO(_listed(store, k)) for k in keys)
    wanted = None
    if columns is not None:
        wanted = [c for c in dict.fromkeys(["parcel_id", "time", "band", *columns]) if c != "tile"]  # the folder's
        first = next(files)
        names = pq.read_schema(first).names
        if missing := [c for c in wanted if c not in names]:
            raise InvalidRequestError(f"{where} has no column {', '.join(missing)}; its columns: {', '.join(names)}")
        files = itertools.chain([first], files)  # the first file read once, for its schema and its rows
    return (_read_file(f, wanted, bands).assign(tile=tile_of(k))
            for k, f in zip(keys, files, strict=True))


def _listed(store: Store, key: str) -> bytes:
    """Statistics file ``key``, listed when a read of the extraction began; a clear error if it is gone since: a
    file-by-file read takes minutes over a territory (cardcube flag), while which a run into the extraction (an
    update writing a file anew, deleting the earlier one) may delete it."""
    data = read_bytes(store, key)
    if data is None:
        raise StoreError(f"{store_url(store)}/{key}, a file of the extraction when its read began, is gone since: a "
                         f"run into the extraction (an update) deleted it; read it again once that run has ended")
    return data


FILE_BATCH = 1 << 15  # rows of a statistics file decoded at a time


def _read_file(data: io.BytesIO, columns: Sequence[str] | None, bands: Sequence[str] | None) -> pd.DataFrame:
    """The rows of ``bands`` (None: all) of the statistics file ``data``, ``columns`` of them (None: all), decoded
    ``FILE_BATCH`` rows at a time: a file holds every band of a block's parcels, and decoding it whole before keeping
    two bands of ten took twice the memory."""
    source = pq.ParquetFile(data, buffer_size=1 << 20, pre_buffer=False)
    wanted = None if bands is None else pa.array(bands)
    parts = [part if wanted is None else part.filter(pc.is_in(part.column("band"), value_set=wanted))
             for part in source.iter_batches(batch_size=FILE_BATCH, columns=columns, use_threads=False)]
    if not parts:  # a file of no row
        return source.schema_arrow.empty_table().select(columns or source.schema_arrow.names).to_pandas()
    return pa.Table.from_batches(parts).to_pandas()


def read_manifest(out: StoreLike, *, storage_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The manifest of the finished extraction at ``out``: the cube and version it read, its parameters, the scenes
    read per tile."""
    return _finished(_extraction_store(out, storage_options), allow_incomplete=False)


def read_status(out: StoreLike, *, storage_options: Mapping[str, Any] | None = None,
                columns: Sequence[str] | None = None) -> gpd.GeoDataFrame | pd.DataFrame:
    """The status table of the extraction at ``out``: every input parcel with status, reason, tile, pixels (only
    ``columns``, if given: without ``geometry``, a plain DataFrame, a fraction of the outlines' memory)."""
    store = _extraction_store(out, storage_options)
    _finished(store, allow_incomplete=True)
    data = read_bytes(store, STATUS)
    if data is None:
        raise InvalidRequestError(f"no extraction status at {store_url(store)}/{STATUS}: the run has not finished")
    if columns is not None and "geometry" not in columns:
        return pd.read_parquet(io.BytesIO(data), columns=list(columns))
    return gpd.read_parquet(io.BytesIO(data), columns=None if columns is None else list(columns))
