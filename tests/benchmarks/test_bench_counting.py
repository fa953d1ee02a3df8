"""How a benchmark repetition on a folder is timed and counted: a Zarr read is timed on the plain store a
user's path opens (cardcube reads it with ``pread``; a counting wrapper would send it down zarr's slower
generic path), and its requests come from a second, untimed pass through a counting store. Counts only,
never times."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from zarr.core.buffer import default_buffer_prototype
from zarr.storage import LocalStore

from benchmarks.measure import Cell, repeat
from benchmarks.storage import Access, Tier
from cardcube.counting_store import CountingStore


def _array(root) -> None:
    a = zarr.create_array(LocalStore(root), name="a", shape=(4, 64, 64), chunks=(2, 32, 32), dtype="uint16")
    a[:] = np.arange(4 * 64 * 64, dtype="uint16").reshape(4, 64, 64)


def _reader(seen: list[type]):
    def work(access: Access, rep: int) -> dict:
        store = access.store()
        seen.append(type(store))
        return {"checksum": float(zarr.open_array(store, path="a", mode="r")[:].sum())}
    return work


def test_a_folder_read_is_timed_plain_and_counted_in_a_second_pass(tmp_path) -> None:
    _array(tmp_path)
    seen: list[type] = []
    cell = Cell("read", "zarr", "folder", None)
    rep = repeat(cell, _reader(seen), lambda: Access(Tier("folder"), str(tmp_path), None, local=tmp_path,
                                                     counted=False))
    assert seen == [LocalStore, CountingStore]  # the timed pass, then the counting one
    assert rep.counts["counted_by"] == "store"
    assert rep.counts["data_gets"] == 8 and rep.counts["objects_read"] == 8  # 2 x 2 x 2 chunks, one GET each
    assert rep.counts["bytes_read"] > 0
    assert rep.result["checksum"] == float(np.arange(4 * 64 * 64, dtype="uint16").sum())


def test_a_counted_access_runs_once(tmp_path) -> None:
    _array(tmp_path)
    seen: list[type] = []
    rep = repeat(Cell("write", "zarr", "folder", None), _reader(seen),
                 lambda: Access(Tier("folder"), str(tmp_path), None, local=tmp_path))
    assert seen == [CountingStore]  # writes cannot run twice: counted as they run
    assert rep.counts["counted_by"] == "store" and rep.counts["data_gets"] == 8


@pytest.mark.s3
def test_each_s3_repetition_gets_a_new_client_from_one_botocore_session() -> None:
    """Each repetition's s3fs filesystem made a botocore session of its own, reading its service model and
    configuration again in every timed Zarr read on S3 (a parcel season's read: 498 ms of CPU against 213 with one
    session, 1,052 ms against 485), where GDAL, reading the COGs beside it, loads its drivers once a process. A new
    filesystem, client and connections still, as cold as before; the requests as counted before."""
    from zarr.core.sync import sync

    from benchmarks.storage import BUCKET, BenchStorage

    with BenchStorage() as storage:
        storage.server.client().put_object(Bucket=BUCKET, Key="one/a.json", Body=b"{}")
        stores = []
        for _ in range(2):
            access = Access(Tier("s3"), f"s3://{BUCKET}/one", storage)
            access.start()
            store = access.store()
            assert sync(store.get("a.json", default_buffer_prototype())).to_bytes() == b"{}"
            counts = access.finish()
            stores.append(store)
            access.close()
            assert counts["GET"] == 1 and counts["counted_by"] == "proxy"
        first, second = (s.fs for s in stores)
        assert first is not second and first._s3 is not second._s3  # a new filesystem and client each time
        assert first.session is second.session  # of the one session, the process's
        assert first.session is storage.session
