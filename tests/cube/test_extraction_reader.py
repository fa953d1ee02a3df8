"""Reading an extraction's statistics (:mod:`cube.extraction_reader`), without a cube."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from zarr.storage import MemoryStore

from cardcube.storage import read_json, write_bytes
from cube.extraction_files import MANIFEST, TIMESERIES_PARQUET, run_of, statistics_name
from cube.extraction_manifest import check_manifest, finish_manifest
from cube.parcel_layer import parquet_bytes
from tests.cube.conftest import PARAMETERS, _version


def test_a_file_gone_between_the_listing_and_its_read_file_by_file_is_said_so():
    """timeseries_files reads an extraction a file at a time (cardcube flag: minutes for a territory): a file a run
    into the extraction deletes meanwhile (an update writing it anew) was read as no bytes, pyarrow's own 'Parquet
    file size is 0 bytes' (a traceback on the command line). It is a StoreError naming the file and what to do."""
    from cardcube.errors import StoreError
    from cardcube.storage import delete_key
    from cube.extraction_reader import timeseries_files

    out, version = MemoryStore(), _version(1, ["S2A_1"])
    check_manifest(out, PARAMETERS, version, time=None, update=False, cube=out)
    run = run_of(read_json(out, MANIFEST))
    keys = [f"timeseries/tile=31UFU/{statistics_name(f'r00000c00{c}00t0000', run)}" for c in (0, 1)]
    for key in keys:
        when = pa.array([np.datetime64("2024-05-01T10:50:31", "us")], pa.timestamp("us"))
        table = pa.table({"parcel_id": ["a"], "time": when, "band": ["B04"], "mean": [0.1]})
        write_bytes(out, key, parquet_bytes(table, **TIMESERIES_PARQUET))
    finish_manifest(out, version, time=None, status={"ok": 1})
    parts = timeseries_files(out)
    assert len(next(parts)) == 1
    for key in keys:  # the second, not read yet, deleted by a run into the extraction
        delete_key(out, key)
    with pytest.raises(StoreError, match=r"r00000c00100t0000.* is gone since: a run into the extraction"):
        next(parts)
