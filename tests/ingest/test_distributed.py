"""Ingest on a dask-distributed cluster (a LocalCluster of worker processes): the same cube, and a stop that waits
for the workers' writes."""

from __future__ import annotations

import contextlib
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import xarray as xr

from cardcube.errors import CubeLockedError, InvalidRequestError
from cardcube.spec import ChunkLayout
from cardcube.storage import delete_key, open_store, read_json
from cube import layout
from cube.dataset import open_cube
from cube.ledger import committed_versions
from cube.verify import verify
from ingest.job import ingest
from tests.conftest import TEST_CHUNKS
from tests.ingest.checks import assert_matches_sources
from tests.ingest.crashing import ingest_command, stopped_while_held
from tests.ingest.http_source import COUNTING_SERVER, bytes_sent, http_server, served
from tests.ingest.scene_edits import items_of, write_items

CHUNKS = ChunkLayout.parse(TEST_CHUNKS)


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


def _stopped_on_a_cluster(items, url: str, proxy, scheduler: str, grace: str) -> subprocess.Popen:
    """``cardcube ingest`` on the cluster through ``proxy``, SIGTERMed once the proxy holds back a shard upload: a
    write that a worker started and that is slow to land (a busy gateway)."""
    proxy.hold(["PUT"], path_contains="/c/")
    return stopped_while_held(ingest_command(items, url, "s1", "--endpoint-url", proxy.endpoint_url,
                                             "--scheduler", scheduler, "--stop-grace", grace), proxy)


def test_an_ingest_stopped_on_a_cluster_lets_go_of_its_lock_only_once_its_writes_have_landed(
        tiny_region, s3_bucket, s3_proxy, monkeypatch):
    """A SIGTERMed ingest whose workers were still writing let go of its lock at once; the next ingest (other scenes)
    committed, then the late upload landed over its shards: committed pixels changed after the fact, without a word
    (found with a proxy holding back uploads). The driver now waits for its writes, or leaves the lock in place."""
    distributed = pytest.importorskip("distributed")
    url, direct = s3_bucket.url_for("cube"), s3_bucket.storage_options()
    lock = layout.lock_key("s1")
    store = open_store(url, storage_options=direct)
    features = items_of(tiny_region.items, "sentinel-1-card-bs")
    ingest(write_items(tiny_region.items, features[:4], "held-first.json"), url, collection="s1", chunks=CHUNKS,
           storage_options=direct, progress=False)
    for name, value in s3_bucket.server.environment().items():  # the keys, for the workers and the driver alike
        monkeypatch.setenv(name, value)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=True, dashboard_address=None,
                                  silence_logs=50) as cluster:
        # 1. the writes end within the grace: the lock goes only after they have landed
        proc = _stopped_on_a_cluster(write_items(tiny_region.items, features[:12], "held-second.json"), url, s3_proxy,
                                     cluster.scheduler_address, "300")
        for line in proc.stderr:  # the driver waits for the upload the proxy holds back, holding the lock
            if "writing shards stopped: waiting up to 300 s for the" in line:
                break
        else:
            pytest.fail(f"the stopped ingest did not wait for its writes (exit {proc.wait()})")
        assert read_json(store, lock) is not None
        s3_proxy.release()
        assert proc.wait(timeout=300) == 128 + signal.SIGTERM, proc.stderr.read()
        assert read_json(store, lock) is None and committed_versions(store, "s1") == [1]

        # 2. they outlive the grace: the lock stays (its driver's process has ended: it is not taken for dead then)
        proc = _stopped_on_a_cluster(write_items(tiny_region.items, features[:12], "held-third.json"), url, s3_proxy,
                                     cluster.scheduler_address, "0.5")
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 128 + signal.SIGTERM, err  # terminated, with what it could not wait for:
        assert re.search(r"the run stopped \(interrupted: Ctrl-C or SIGTERM\); \d of its tasks still ran on the dask "
                         r"workers, and had not ended 0.5 s later", err), err
        assert "is left in place, as writes of this run may still land" in err
        assert read_json(store, lock)["remote_workers"] is True
        other = write_items(tiny_region.items, features[:4] + features[14:20], "held-other.json")
        with pytest.raises(CubeLockedError, match="Its writes ran on dask workers"):
            ingest(other, url, collection="s1", chunks=CHUNKS, storage_options=direct, progress=False)
        s3_proxy.release()
        with distributed.Client(cluster) as client:  # the held task ends; then the operator deletes the lock
            while sum(client.run(lambda dask_worker: len(dask_worker.state.executing)).values()):
                time.sleep(0.1)
    delete_key(store, lock)
    done = ingest(other, url, collection="s1", chunks=CHUNKS, storage_options=direct, progress=False)
    assert done.ok and done.version == 2
    assert assert_matches_sources(url, other, "s1", storage_options=direct) > 0
    assert verify(url, "s1", deep=True, storage_options=direct, progress=False).ok


def _can_unshare_mounts() -> bool:
    try:
        return subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode == 0
    except FileNotFoundError:
        return False


@contextlib.contextmanager
def _worker_not_seeing(folder: Path, client) -> Iterator[None]:
    """A dask worker of ``client``'s cluster for which ``folder`` is another one (a tmpfs over it, in a mount
    namespace of its own): a worker on another machine, where the path is no shared folder."""
    start = f'mount -t tmpfs tmpfs "{folder}" && exec "$0" -m distributed.cli.dask_worker "$1" --nthreads 1 ' \
            '--no-nanny --no-dashboard'
    worker = subprocess.Popen(["unshare", "-m", "sh", "-c", start, sys.executable, client.scheduler.address],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client.wait_for_workers(1, timeout=120)
        yield
    finally:
        worker.terminate()
        worker.wait()


@pytest.mark.skipif(not _can_unshare_mounts(), reason="needs unshare -m (a private mount namespace) for a worker")
def test_an_ingest_into_a_folder_its_workers_do_not_see_stops_before_writing(tiny_region, tmp_path):
    """A worker on another machine (here: in a mount namespace of its own, a tmpfs over the cube's folder) wrote a
    local cube to its own disk: the ingest failed on the workers with zarr's ArrayNotFoundError, a traceback."""
    distributed = pytest.importorskip("distributed")
    private = tmp_path / "private"
    private.mkdir()
    features = items_of(tiny_region.items, "sentinel-1-card-bs")
    items = write_items(tiny_region.items, features[:3], "private.json")
    with distributed.LocalCluster(n_workers=0, processes=True, host="127.0.0.1", dashboard_address=None,
                                  silence_logs=50) as cluster, distributed.Client(cluster) as client:
        blind = rf"1 of the 1 dask workers \(tcp://.*\) do not see the cube's folder {private / 'cube' / 's1'} \(is it"
        with _worker_not_seeing(private, client), pytest.raises(InvalidRequestError, match=blind):
            ingest(items, private / "cube", collection="s1", chunks=CHUNKS, progress=False,
                   scheduler=cluster.scheduler_address)
    assert not (private / "cube" / layout.lock_key("s1")).exists()  # let go of, and nothing committed
    assert committed_versions(open_store(private / "cube"), "s1") == []


@pytest.mark.skipif(not _can_unshare_mounts(), reason="needs unshare -m (a private mount namespace) for a worker")
def test_an_ingest_whose_workers_do_not_see_its_spool_folder_stops_before_any_download(tiny_region, tmp_path):
    """A worker that sees the cube's folder but not --spool DIR (here: a tmpfs over it in its mount namespace)
    downloaded the files for the checks, then failed to keep them, telling to give a folder with room."""
    distributed = pytest.importorskip("distributed")
    spool = tmp_path / "spool"
    spool.mkdir()
    features = items_of(tiny_region.items, "sentinel-1-card-bs")[:2]
    with http_server(COUNTING_SERVER, str(tiny_region.items.parent)) as base, \
            distributed.LocalCluster(n_workers=0, processes=True, host="127.0.0.1", dashboard_address=None,
                                     silence_logs=50) as cluster, distributed.Client(cluster) as client:
        items = write_items(tiny_region.items, [served(f, base) for f in features], "blind-spool.json")
        blind = rf"1 of the 1 dask workers \(tcp://.*\) do not see the spool folder {spool} \(is it"
        with _worker_not_seeing(spool, client):
            with pytest.raises(InvalidRequestError, match=blind):
                ingest(items, tmp_path / "cube", collection="s1", chunks=CHUNKS, progress=False,
                       scheduler=cluster.scheduler_address, spool=spool)
            assert bytes_sent(base) == {}  # nothing downloaded
    assert list(spool.iterdir()) == []  # the run's folder removed
    assert read_json(open_store(tmp_path / "cube"), layout.lock_key("s1")) is None
    assert committed_versions(open_store(tmp_path / "cube"), "s1") == []


def test_a_wrong_scheduler_address_fails_before_anything_is_made(tiny_region, tmp_path):
    """It made the cube's folder (and extract its manifest.json) before the scheduler was reached."""
    from cube.extract import extract

    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        nowhere = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    with pytest.raises(InvalidRequestError, match=f"cannot reach the dask scheduler at {nowhere}: connection refused"):
        ingest(tiny_region.items, tmp_path / "cube", collection="s1", progress=False, scheduler=nowhere)
    assert not (tmp_path / "cube").exists()
    with pytest.raises(InvalidRequestError, match=f"cannot reach the dask scheduler at {nowhere}"):
        extract(tiny_region.parcels, tmp_path / "cube", tmp_path / "out", progress=False, scheduler=nowhere)
    assert not (tmp_path / "out").exists()


def test_workers_without_the_stores_keys_are_named(tiny_region, s3_bucket, monkeypatch):
    """The driver had the S3 keys in its environment and the workers not (a Helm chart without them): the run
    ended in "NoCredentialsError: Unable to locate credentials", which its operator's shell had."""
    import os

    distributed = pytest.importorskip("distributed")
    from cardcube.errors import ClusterError

    for name, value in s3_bucket.server.environment().items():
        monkeypatch.setenv(name, value)
    bare = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    items = write_items(tiny_region.items, items_of(tiny_region.items, "sentinel-1-card-bs")[:1], "keyless.json")
    with distributed.LocalCluster(n_workers=0, processes=True, host="127.0.0.1", dashboard_address=None,
                                  silence_logs=50) as cluster, distributed.Client(cluster) as client:
        worker = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", cluster.scheduler_address,
                                   "--nthreads", "1", "--no-nanny", "--no-dashboard"], env=bare,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            client.wait_for_workers(1, timeout=120)
            with pytest.raises(ClusterError, match=r"a dask worker found no credentials for S3 \(.*\), where this "
                                                   r"machine has them: start the workers with the store's keys"):
                ingest(items, s3_bucket.url_for("cube"), collection="s1", chunks=CHUNKS, progress=False,
                       scheduler=cluster.scheduler_address)
        finally:
            worker.terminate()
            worker.wait()
    assert committed_versions(open_store(s3_bucket.url_for("cube")), "s1") == []
