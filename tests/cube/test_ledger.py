"""The ledger's records as the arrays readers and writers use."""

from __future__ import annotations

import numpy as np

from cube.ledger import Acquisition, acquisition_columns


def test_acquisition_columns_type_each_field_as_the_coordinate_arrays_store_it():
    acqs = [Acquisition("2024-05-01T10:50:31Z", "S2A_1", "sentinel-2a", 8, "descending", 12.5),
            Acquisition("2024-05-03T10:40:29Z", "S2B_2", "sentinel-2b", 51, "descending")]
    columns = acquisition_columns(acqs)
    assert columns["time"].dtype == np.dtype("datetime64[ns]")
    assert columns["time"][0] == np.datetime64("2024-05-01T10:50:31", "ns")
    assert columns["relative_orbit"].dtype == np.int16 and columns["relative_orbit"].tolist() == [8, 51]
    assert columns["cloud_cover"].dtype == np.float32
    assert columns["cloud_cover"][0] == np.float32(12.5) and np.isnan(columns["cloud_cover"][1])  # unknown: NaN
    assert columns["scene_id"].tolist() == ["S2A_1", "S2B_2"]
    assert all(len(v) == 0 for v in acquisition_columns([]).values())


def test_a_missing_shard_read_on_several_threads_at_once_is_looked_up_once(tiny_cube):
    """The chunks of one missing hot shard are read by several dask threads at once: with a reader's ``absent``
    cache, they make one lookup of the version's record between them, not one each."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from cardcube.storage import CountingStore, open_store
    from cube.ledger import AbsentShards, confirm_committed, read_version

    class SlowLookups(CountingStore):
        async def exists(self, key: str) -> bool:
            await asyncio.sleep(0.2)  # an S3 HEAD's round trip: long enough for every thread to ask meanwhile
            return await super().exists(key)

    store = SlowLookups(open_store(tiny_cube, read_only=True))
    version, absent = read_version(store, "s2"), AbsentShards(16)
    store.reset()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: confirm_committed(store, version, ["hot/r10m/B04/c/0/0/0"], absent=absent), range(4)))
    assert store.requests["exists"] == 1 and list(absent) == [("s2", version.version, "hot/r10m/B04/c/0/0/0")]
