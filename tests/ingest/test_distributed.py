"""Ingest on a dask-distributed cluster (a LocalCluster of 2 worker processes) gives the same cube."""

from __future__ import annotations

import pytest
import xarray as xr

from cardcube.spec import ChunkLayout
from cube.dataset import open_cube
from ingest.job import ingest
from tests.conftest import TEST_CHUNKS


def test_ingest_on_a_local_cluster_equals_the_threaded_one(tiny_region, tiny_cube, tmp_path):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  silence_logs=50) as cluster, distributed.Client(cluster) as client:
        result = ingest(tiny_region.items, tmp_path / "cube", collection="s1", progress=False,
                        chunks=ChunkLayout.parse(TEST_CHUNKS), scheduler=client)
        assert result.ok and len(client.scheduler_info()["workers"]) == 2
    threaded = ingest(tiny_region.items, tmp_path / "threads", collection="s1", progress=False,
                      chunks=ChunkLayout.parse(TEST_CHUNKS))
    # the workers' writes are counted too (they once were not: a write amplification ten times too low)
    assert result.bytes_written == pytest.approx(threaded.bytes_written, rel=0.02)
    # read at once (chunks="window": one Zarr call per array, not a dask task per chunk)
    cluster_ds = open_cube(tmp_path / "cube", "s1", decode=False, chunks="window").compute()
    local_ds = open_cube(tiny_cube, "s1", decode=False, chunks="window").compute()
    xr.testing.assert_identical(cluster_ds.drop_attrs(), local_ds.drop_attrs())


def test_a_source_named_by_a_relative_path_is_found_by_workers_of_another_working_directory(tiny_region, tmp_path,
                                                                                             monkeypatch):
    """The workers (dask worker processes started elsewhere) read the scenes' files: a relative SOURCE is taken
    from the driver's working directory, not theirs (every scene was rejected as 'file not found')."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None,
                                  silence_logs=50) as cluster, distributed.Client(cluster) as client:
        monkeypatch.chdir(tiny_region.items.parent.parent)  # the driver's, after the worker started
        result = ingest(f"{tiny_region.items.parent.name}/{tiny_region.items.name}", tmp_path / "cube",
                        collection="s1", progress=False, chunks=ChunkLayout.parse(TEST_CHUNKS), scheduler=client)
    assert result.ok and not result.rejected and result.added
