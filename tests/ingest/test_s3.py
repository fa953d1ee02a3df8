"""Ingest into S3 on a real S3 server over HTTP (moto on loopback), with and without injected faults."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import zarr

from cardcube.errors import CardcubeError, CubeLockedError
from cardcube.spec import ChunkLayout, cube_spec
from cardcube.storage import delete_key, list_keys, open_store, read_json
from cube import layout
from cube.dataset import open_cube
from cube.ledger import committed_versions
from cube.verify import verify
from ingest import commit
from ingest.job import ingest
from tests.ingest.checks import assert_matches_sources
from tests.ingest.crashing import ingest_command, pool_workers, run_ingest, still_running, stopped_while_held
from tests.ingest.scene_edits import items_of, write_items

CHUNKS = ChunkLayout(time=4, space=64, shard_space=256)


@pytest.fixture(scope="module")
def first_dates(tiny_region, tmp_path_factory) -> Callable[[int], Path]:
    """The region's first ``n`` S1 scenes ingested into a folder cube, once for each ``n``: a test puts a copy of
    it in its bucket (:meth:`S3Bucket.upload`, a fraction of an ingest through moto) to go on from."""
    built: dict[int, Path] = {}

    def cube_of(n: int) -> Path:
        if n not in built:
            root = tmp_path_factory.mktemp(f"first-{n}") / "cube"
            features = items_of(tiny_region.items, "sentinel-1-card-bs")[:n]
            result = ingest(write_items(tiny_region.items, features, f"first-{n}.json"), root, collection="s1",
                            chunks=CHUNKS, progress=False)
            assert result.ok and result.version == 1, result.summary()
            built[n] = root
        return built[n]

    return cube_of


def _uploaded(s3_bucket, first_dates, n: int) -> str:
    """The URL of a cube in the bucket of the region's first ``n`` S1 scenes (version 1)."""
    url = s3_bucket.upload(first_dates(n), "cube")
    assert committed_versions(open_store(url, storage_options=s3_bucket.storage_options()), "s1") == [1]
    return url


@pytest.mark.parametrize("collection", ["s2", "s1"])
def test_pixels_on_s3_equal_the_source(tiny_region, s3_bucket, collection):
    url, opts = s3_bucket.url_for("cube"), s3_bucket.storage_options()
    # the first 9 scenes: three time blocks of the tests' chunks, the last one partly filled (the whole region is
    # ingested and every scene compared on a folder, tests/ingest/test_ingest_local.py)
    features = items_of(tiny_region.items, cube_spec(collection).source_collection)
    some = write_items(tiny_region.items, features[:9], f"s3-{collection}.json")
    result = ingest(some, url, collection=collection, chunks=CHUNKS, storage_options=opts, progress=False)
    assert result.ok and result.version == 1 and len(result.added) == 9
    assert assert_matches_sources(url, some, collection, storage_options=opts) > 0
    keys = s3_bucket.server.client().list_objects_v2(Bucket=s3_bucket.name)["Contents"]
    assert any(k["Key"].endswith(f"{collection}/_ledger/v00000001.json") for k in keys)
    assert any(k["Key"] == "cube/catalog.json" for k in keys)


def test_transient_errors_are_retried_and_the_ingest_completes(tiny_region, s3_bucket, s3_proxy):
    url = s3_bucket.url_for("cube")
    some = write_items(tiny_region.items, items_of(tiny_region.items, "sentinel-1-card-bs")[:8], "s3-faults.json")
    s3_proxy.fail_randomly(0.05, status=503, code="SlowDown", seed=3)
    # fewer tries than cardcube's 9 (standard mode, as its default) keep the test short
    result = ingest(some, url, collection="s1", chunks=CHUNKS, progress=False,
                    storage_options=s3_proxy.storage_options(attempts=6))
    stats = s3_proxy.snapshot()
    assert result.ok and stats.faults > 0
    s3_proxy.clear_faults()
    assert assert_matches_sources(url, some, "s1", storage_options=s3_bucket.storage_options()) > 0


@pytest.mark.parametrize("key", ["/_ledger/v", "/_lock.json"])
def test_a_create_only_write_whose_answer_was_lost_is_found_to_be_the_runs_own(tiny_region, s3_bucket, s3_proxy, key):
    """The answer to the ledger record's (or the lock's) create-only PUT is lost after the store made it: the client
    tries again and is refused (412) by what it wrote itself. The run said "committed by another writer meanwhile;
    nothing of this run became visible" of the version it had committed (and left the catalog behind it), or took
    its own lock for another writer's, refused to run and left that lock for others to wait on."""
    url, direct = s3_bucket.url_for("cube"), s3_bucket.storage_options()
    some = write_items(tiny_region.items, items_of(tiny_region.items, "sentinel-1-card-bs")[:4], "lost-answer.json")
    s3_proxy.fail_next(1, status=500, code="InternalError", methods=["PUT"], path_contains=key, answer_lost=True)
    result = ingest(some, url, collection="s1", chunks=CHUNKS, progress=False,
                    storage_options=s3_proxy.storage_options(attempts=3))
    assert s3_proxy.snapshot().faults == 1
    assert result.ok and result.version == 1
    store = open_store(url, storage_options=direct)
    assert committed_versions(store, "s1") == [1]
    assert read_json(store, layout.lock_key("s1")) is None  # released
    assert read_json(store, "s1/collection.json")["extent"]["temporal"]["interval"][0][0] is not None  # published
    assert assert_matches_sources(url, some, "s1", storage_options=direct) > 0


def test_persistent_errors_fail_cleanly_and_keep_the_previous_version(tiny_region, s3_bucket, s3_proxy, first_dates):
    url, direct = _uploaded(s3_bucket, first_dates, 5), s3_bucket.storage_options()
    before = open_cube(url, "s1", decode=False, storage_options=direct).compute()
    s3_proxy.fail_randomly(1.0, status=500, code="InternalError", methods=["PUT"])
    with pytest.raises((CardcubeError, OSError)):
        ingest(tiny_region.items, url, collection="s1", chunks=CHUNKS, progress=False,
               storage_options=s3_proxy.storage_options(attempts=2))
    after = open_cube(url, "s1", decode=False, storage_options=direct)
    assert after.attrs["cardcube:version"] == 1
    assert before.drop_attrs().identical(after.compute().drop_attrs())
    s3_proxy.clear_faults()  # and the lock was released: the next run goes through
    assert ingest(tiny_region.items, url, collection="s1", chunks=CHUNKS, storage_options=direct,
                  progress=False).version == 2


@pytest.mark.parametrize("step", ["written", "committed"])
def test_kill_on_s3_then_rerun_completes(tiny_region, s3_bucket, step, monkeypatch, first_dates):
    url, direct = _uploaded(s3_bucket, first_dates, 5), s3_bucket.storage_options()
    features = items_of(tiny_region.items, "sentinel-1-card-bs")
    then = write_items(tiny_region.items, features[:10], f"s3-kill-{step}.json")  # 5 more: into a second time block
    killed = run_ingest(then, url, "s1", "--stale-after", "20", kill_at=step, env=s3_bucket.server.environment())
    assert killed.returncode == -9
    expected = 2 if step == "committed" else 1
    assert open_cube(url, "s1", storage_options=direct).attrs["cardcube:version"] == expected
    monkeypatch.setattr(commit, "SETTLE", 0.5)  # its uploads have landed by then (its lock: a heartbeat a second)
    done = ingest(then, url, collection="s1", chunks=CHUNKS, storage_options=direct, progress=False, wait=60)
    assert done.ok
    assert committed_versions(open_store(url, storage_options=direct), "s1") == [1, 2]
    assert assert_matches_sources(url, then, "s1", storage_options=direct) > 0


def test_an_ingest_on_worker_processes_leaves_no_client_open(tiny_region, s3_bucket):
    """``--scheduler processes``: each worker process's S3 client is closed while zarr's event loop still runs; left
    to the garbage collector at exit, each printed aiohttp's "Unclosed client session" on stderr."""
    url = s3_bucket.url_for("cube")
    some = write_items(tiny_region.items, items_of(tiny_region.items, "sentinel-2-l2a")[:5], "s3-processes.json")
    done = run_ingest(some, url, "s2", "--scheduler", "processes", env=s3_bucket.server.environment())
    assert done.returncode == 0, done.stderr
    assert "Unclosed" not in done.stderr and done.stderr == "", done.stderr
    assert assert_matches_sources(url, some, "s2", storage_options=s3_bucket.storage_options()) > 0


def test_sources_in_a_bucket_are_ingested_like_local_files(tiny_region, s3_bucket, s3_proxy, tmp_path, monkeypatch):
    """A provider's STAC items and COGs on S3 (relative hrefs, the endpoint and keys from the environment,
    as for a Ceph or MinIO archive): the same pixels as from the local files, each file downloaded once (the
    writes read the spool's copy; counted by a proxy in front of the server), and a clear error for a
    source that is not there."""

    from cardcube.errors import SourceNotFoundError
    from tests.ingest.scene_edits import asset_path

    features = items_of(tiny_region.items, "sentinel-2-l2a")[:4]
    local = write_items(tiny_region.items, features, "bucket-sources.json")
    files = [local] + [asset_path(local, f, b.name) for f in features for b in cube_spec("s2").bands]
    client, root = s3_bucket.server.client(), Path(local).parent
    for path in files:
        client.upload_file(str(path), s3_bucket.name, f"archive/{path.relative_to(root)}")
    for name, value in s3_bucket.server.environment(s3_proxy.endpoint_url).items():
        monkeypatch.setenv(name, value)

    before = s3_proxy.snapshot()
    result = ingest(f"s3://{s3_bucket.name}/archive/{local.name}", tmp_path / "cube", chunks=CHUNKS, progress=False)
    sent = (s3_proxy.snapshot() - before).response_bytes
    assert result.ok and len(result.added) == 4
    assert result.source_bytes == sum(p.stat().st_size for p in files[1:])
    assert sent == sum(p.stat().st_size for p in files)  # the items file and each band file, once
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_bucket.server.endpoint_url)  # the endpoint changed: read from it
    before = s3_proxy.snapshot()
    assert ingest(f"s3://{s3_bucket.name}/archive/{local.name}", tmp_path / "again", chunks=CHUNKS,
                  progress=False).added == result.added
    assert (s3_proxy.snapshot() - before).total == 0  # not through fsspec's filesystem of the former endpoint
    assert assert_matches_sources(tmp_path / "cube", local, "s2") > 0
    with pytest.raises(SourceNotFoundError, match="does not exist"):
        ingest(f"s3://{s3_bucket.name}/archive/nothing.json", tmp_path / "other", progress=False)


def test_a_static_stac_catalog_in_a_bucket_is_a_source(tiny_region, s3_bucket, tmp_path, monkeypatch):
    import pystac

    from tests.ingest.scene_edits import asset_path

    client, bucket = s3_bucket.server.client(), s3_bucket.name
    features = items_of(tiny_region.items, "sentinel-1-card-bs")[:3]
    catalog = pystac.Catalog("archive", "S1 CARD scenes")
    for feature in features:
        item = pystac.Item.from_dict(feature)
        item.clear_links()  # the synthetic items link to a STAC API that does not exist here
        for band in cube_spec("s1").bands:
            key = f"cogs/{item.id}/{band.name}.tif"
            client.upload_file(str(asset_path(tiny_region.items, feature, band.name)), bucket, key)
            item.assets[band.name].href = f"s3://{bucket}/{key}"
        catalog.add_item(item)
    catalog.normalize_and_save(str(tmp_path / "catalog"), pystac.CatalogType.SELF_CONTAINED)
    for path in (tmp_path / "catalog").rglob("*.json"):
        client.upload_file(str(path), bucket, f"stac/{path.relative_to(tmp_path / 'catalog')}")
    for name, value in s3_bucket.server.environment().items():
        monkeypatch.setenv(name, value)

    result = ingest(f"s3://{bucket}/stac/catalog.json", tmp_path / "cube", collection="s1", chunks=CHUNKS,
                    progress=False)
    assert result.ok and sorted(result.added) == sorted(f["id"] for f in features)
    assert assert_matches_sources(tmp_path / "cube", write_items(tiny_region.items, features, "catalog-s1.json"),
                                  "s1") > 0


def test_a_source_in_a_bucket_is_read_with_the_environments_endpoint_not_the_cubes(tiny_region, s3_bucket):
    """--endpoint-url is the cube's: the scenes may sit on another store (AWS, an archive's own Ceph). A source
    the environment's endpoint cannot give says so, naming the endpoint it was read from. (A command of its own:
    fsspec keeps the S3 clients of a process, made with the endpoint of their time.)"""
    import os
    import socket
    import sys

    s3_bucket.server.client().upload_file(str(tiny_region.items), s3_bucket.name, "archive/items.json")
    with socket.socket() as closed:  # a port that was free a moment ago: nothing listens there
        closed.bind(("127.0.0.1", 0))
        elsewhere = f"http://127.0.0.1:{closed.getsockname()[1]}"
    env = {**os.environ, **s3_bucket.server.environment(), "AWS_ENDPOINT_URL": elsewhere}
    run = subprocess.run([sys.executable, "-m", "cardcube.cli", "ingest", f"s3://{s3_bucket.name}/archive/items.json",
                          "--cube", s3_bucket.url_for("cube"), "--endpoint-url", s3_bucket.server.endpoint_url,
                          "--quiet"], env=env, capture_output=True, text=True)
    assert run.returncode == 2 and run.stderr.count("\n") == 1, run.stderr
    # one connection tried, where botocore's retries of the refused connection take several seconds
    assert f"cannot read the source s3://{s3_bucket.name}/archive/items.json: cannot reach the S3 endpoint " \
           f"{elsewhere}" in run.stderr
    assert run.stderr.strip().endswith(f"(an s3:// source is read with the S3 endpoint of the environment, "
                                       f"AWS_ENDPOINT_URL={elsewhere}; the cube's storage_options, --endpoint-url, "
                                       f"do not apply to it)")


def _scene_on_s3(region, bucket, name: str) -> tuple[dict, Path]:
    """The region's first S2 scene with its band files uploaded to ``bucket`` and its hrefs ``s3://`` URLs, and an
    ItemCollection ``name`` of it alone."""
    from tests.ingest.scene_edits import asset_path

    feature = items_of(region.items, "sentinel-2-l2a")[0]
    client = bucket.server.client()
    for band in cube_spec("s2").bands:
        key = f"cogs/{feature['id']}/{band.name}.tif"
        client.upload_file(str(asset_path(region.items, feature, band.name)), bucket.name, key)
        feature["assets"][band.name]["href"] = f"s3://{bucket.name}/{key}"
    return feature, write_items(region.items, [feature], name)


def test_band_files_behind_an_endpoint_that_does_not_answer_stop_the_run_and_commit_nothing(tiny_region, s3_bucket,
                                                                                             tmp_path, monkeypatch):
    """The sources' S3 endpoint down (or workers without AWS_ENDPOINT_URL): every scene was rejected for
    "EndpointConnectionError", and a version of those rejections, or of the scenes read before, was committed
    (exit 1), the operator told to fix scenes that were fine. The run stops now, and commits nothing."""
    import socket

    from cardcube.errors import StoreUnavailableError

    feature, items = _scene_on_s3(tiny_region, s3_bucket, "s3-assets.json")
    with socket.socket() as closed:  # a port that was free a moment ago: nothing listens there
        closed.bind(("127.0.0.1", 0))
        down = f"http://127.0.0.1:{closed.getsockname()[1]}"
    for name, value in {**s3_bucket.server.environment(), "AWS_ENDPOINT_URL": down}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(StoreUnavailableError, match=rf"cannot read s3://{s3_bucket.name}/cogs/.* is not answering, "
                                                    r"which is no fault of the scene: nothing of this run is "):
        ingest(items, tmp_path / "cube", chunks=CHUNKS, progress=False)
    assert committed_versions(open_store(tmp_path / "cube"), "s2") == []
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_bucket.server.endpoint_url)  # it answers again: the run goes in
    assert ingest(items, tmp_path / "cube", chunks=CHUNKS, progress=False).added == (feature["id"],)


@pytest.mark.parametrize("spool", [True, False])
def test_band_files_read_without_s3_credentials_stop_the_run_and_commit_nothing(tiny_region, s3_bucket, tmp_path,
                                                                               monkeypatch, spool):
    """No S3 keys where the band files are read (an environment without them, dask workers started without them,
    as docs/extract-on-kubernetes.md warns): every scene was rejected for "unexpected error: Unable to locate
    credentials" and a version of those rejections committed (exit 1), which `cardcube versions` then listed as
    scenes to fix. It is no fault of the scenes: the run stops, saying which keys to set, and commits nothing.
    Without the spool (``--no-spool``, and a ``--scheduler``'s workers) the file's HEAD, before its read, met it."""
    import fsspec

    from cardcube.errors import StoreError

    feature, items = _scene_on_s3(tiny_region, s3_bucket, "s3-assets-no-keys.json")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))  # nor a profile on this machine
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # nor an instance's role
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_bucket.server.endpoint_url)
    fsspec.get_filesystem_class("s3").clear_instance_cache()  # an earlier test's client kept its keys
    with pytest.raises(StoreError, match=rf"cannot read s3://{s3_bucket.name}/cogs/.*: no S3 credentials found "
                                         r".*set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY .* which is no fault of "
                                         r"the scene: nothing of this run is committed"):
        ingest(items, tmp_path / "cube", chunks=CHUNKS, progress=False, spool=spool)
    assert committed_versions(open_store(tmp_path / "cube"), "s2") == []  # no version of rejections
    for name, value in s3_bucket.server.environment().items():  # the keys given: the run goes in
        monkeypatch.setenv(name, value)
    fsspec.get_filesystem_class("s3").clear_instance_cache()
    assert ingest(items, tmp_path / "cube", chunks=CHUNKS, progress=False, spool=spool).added == (feature["id"],)


def test_without_the_spool_a_band_file_replaced_in_its_bucket_after_its_check_stops_the_run(
        tiny_region, s3_bucket, tmp_path, monkeypatch):
    """``spool=False``: the writes read the sources in the bucket again, by windows. A band file replaced by
    another scene's between the checks and the writes stops the run, which commits nothing (it went in under the
    checked file's sha256). Put back, it goes in, with its own pixels: GDAL kept the replaced file's bytes from
    the first run in this process, and the second wrote them."""
    from cardcube.errors import SceneReadError
    from tests.ingest.scene_edits import asset_path

    first, other = items_of(tiny_region.items, "sentinel-2-l2a")[:2]
    local = write_items(tiny_region.items, [first], "first.json")
    same, replaced = asset_path(tiny_region.items, first, "B04"), asset_path(tiny_region.items, other, "B04")
    client, key = s3_bucket.server.client(), f"cogs/{first['id']}/B04.tif"
    for band in cube_spec("s2").bands:
        name = f"cogs/{first['id']}/{band.name}.tif"
        client.upload_file(str(asset_path(tiny_region.items, first, band.name)), s3_bucket.name, name)
        first["assets"][band.name]["href"] = f"s3://{s3_bucket.name}/{name}"
    items = write_items(tiny_region.items, [first], "s3-assets.json")
    for name, value in s3_bucket.server.environment().items():
        monkeypatch.setenv(name, value)

    def put_at_validated(path):
        def at(step):
            if step == "validated":
                client.upload_file(str(path), s3_bucket.name, key)
        return at

    monkeypatch.setattr("ingest.job.checkpoint", put_at_validated(replaced))
    with pytest.raises(SceneReadError, match=rf"band B04 changed since it was checked \(s3://{s3_bucket.name}/"):
        ingest(items, tmp_path / "cube", chunks=CHUNKS, progress=False, spool=False)
    assert committed_versions(open_store(tmp_path / "cube"), "s2") == []
    client.upload_file(str(same), s3_bucket.name, key)
    monkeypatch.setattr("ingest.job.checkpoint", put_at_validated(same))
    assert ingest(items, tmp_path / "cube", chunks=CHUNKS, progress=False, spool=False).added == (first["id"],)
    assert assert_matches_sources(tmp_path / "cube", local, "s2") > 0


def test_a_new_tile_is_stored_with_one_request_per_object(s3_bucket, s3_proxy, tmp_path):
    """A new tile's groups and arrays are made in memory and stored at once: one PUT per object, the same
    objects as on a local folder, and no look-up of each array and its parents (860 requests for an S2 tile)."""
    from cardcube.grid import TileGrid
    from ingest.arrays import ensure_tile

    tile, spec = TileGrid.from_id("31UFU"), cube_spec("s2")
    folder = tmp_path / "cube"
    ensure_tile(open_store(folder), spec, tile, committed=False)
    objects = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    url = s3_bucket.url_for("cube")
    before = s3_proxy.snapshot()
    group = ensure_tile(open_store(url, storage_options=s3_proxy.storage_options()), spec, tile, committed=False)
    sent = s3_proxy.snapshot() - before
    keys = s3_bucket.server.client().list_objects_v2(Bucket=s3_bucket.name)["Contents"]
    assert sorted(k["Key"].removeprefix("cube/") for k in keys) == objects
    assert sent.put == len(objects)
    assert sent.get + sent.head <= 12  # the tile group and its parents looked up (before: 751 GETs and HEADs)
    assert group.attrs["cardcube"]["tile"] == "31UFU"
    assert zarr.open_array(open_store(url, storage_options=s3_bucket.storage_options()),
                           path="s2/31UFU/cube.zarr/r10m/x")[:2].tolist() == [600005.0, 600015.0]


def _cube_of_four_dates(tiny_region, s3_bucket, first_dates) -> tuple[str, dict, Any, list]:
    """An S1 cube of the region's first 4 scenes in the bucket: its URL, storage options, store, and the scenes."""
    url, direct = _uploaded(s3_bucket, first_dates, 4), s3_bucket.storage_options()
    return url, direct, open_store(url, storage_options=direct), items_of(tiny_region.items, "sentinel-1-card-bs")


def test_uploads_a_killed_ingest_sent_that_land_late_cannot_overwrite_the_next_ingests_dates(tiny_region, s3_bucket,
                                                                                            s3_proxy, monkeypatch,
                                                                                            first_dates):
    """A SIGKILLed ingest records nothing, but uploads it had sent go on behind a gateway and land later. The next
    ingest on the host took its lock at once (its pid gone), wrote the same hot slots and committed, and the late
    uploads then replaced a committed date's pixels with another date's. The lock of a dead writer on an object store
    is now taken for dead :data:`SETTLE` seconds after it can last have written, not at once."""
    url, direct, _, features = _cube_of_four_dates(tiny_region, s3_bucket, first_dates)
    killed = write_items(tiny_region.items, features[:6], "killed.json")  # 2 new dates, into the first hot slots
    then = write_items(tiny_region.items, [*features[:4], features[6]], "then.json")  # another date, into the first
    s3_proxy.hold(["PUT"], path_contains="/c/")
    proc = stopped_while_held(ingest_command(killed, url, "s1", "--endpoint-url", s3_proxy.endpoint_url,
                                             "--stale-after", "20"), s3_proxy, env=s3_bucket.server.environment(),
                              sig=signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    with pytest.raises(CubeLockedError, match=r"Its process has ended, but uploads it sent may still land .* "
                                              r"taken for dead in \d+ s"):
        ingest(then, url, collection="s1", chunks=CHUNKS, storage_options=direct, progress=False)
    s3_proxy.release()  # the gateway lets them through: they land
    deadline = time.monotonic() + 300  # only so a broken run ends; nothing about time is asserted
    while s3_proxy.in_flight:
        assert time.monotonic() < deadline, "the held uploads never landed"
        time.sleep(0.05)
    monkeypatch.setattr(commit, "SETTLE", 0.5)  # as if the minute had passed
    done = ingest(then, url, collection="s1", chunks=CHUNKS, storage_options=direct, progress=False, wait=60)
    assert done.ok and done.version == 2
    assert assert_matches_sources(url, then, "s1", storage_options=direct) > 0
    assert verify(url, "s1", deep=True, storage_options=direct, progress=False).ok


def test_an_ingest_interrupted_while_its_upload_is_held_lets_go_of_the_lock_once_it_has_landed(tiny_region, s3_bucket,
                                                                                                 s3_proxy, first_dates):
    """Ctrl-C stops the wait for a write, not the write: it goes on in zarr's I/O loop. With a single thread
    (``--scheduler sync``) the lock was deleted while the upload was still held, to land after it."""
    url, _, store, features = _cube_of_four_dates(tiny_region, s3_bucket, first_dates)
    lock = layout.lock_key("s1")
    s3_proxy.hold(["PUT"], path_contains="/c/")
    seen: dict[str, object] = {}

    def interrupt_then_release() -> None:
        while not s3_proxy.held:
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(1.0)  # the interrupted run unwinds meanwhile, up to its lock
        seen["lock"] = read_json(store, lock)
        seen["keys"] = set(list_keys(store, "s1/"))
        s3_proxy.release()

    helper = threading.Thread(target=interrupt_then_release, daemon=True)
    # Ctrl-C as in a terminal: a shell without job control starts a background job (`make test &`) with SIGINT
    # ignored, which Python then keeps ignoring: the SIGINT was lost and the ingest ran to its end
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        helper.start()
        with pytest.raises(KeyboardInterrupt):
            ingest(write_items(tiny_region.items, features[:12], "held-sync.json"), url, collection="s1",
                   chunks=CHUNKS, storage_options=s3_proxy.storage_options(), progress=False, scheduler="sync")
    finally:
        signal.signal(signal.SIGINT, previous)
    helper.join()
    assert seen["lock"] is not None  # kept while the upload was held
    assert read_json(store, lock) is None  # and let go of once it had landed
    assert set(list_keys(store, "s1/")) - seen["keys"]  # the held upload, landed before the lock went
    assert committed_versions(store, "s1") == [1]


@pytest.mark.parametrize("scheduler", ["threads", "processes"])
def test_an_ingest_stopped_with_writes_outliving_its_grace_ends_then_with_one_error(tiny_region, s3_bucket, s3_proxy,
                                                                                   scheduler, first_dates):
    """A SIGTERMed ingest whose writes outlived ``--stop-grace`` said so, then lingered until the store let them
    end (for ever, for an upload that never does), its pending writes failing at Python's exit with tracebacks and
    asyncio's "Task was destroyed but it is pending!". It now ends with its grace, as a kill would end it; the
    worker processes of ``--scheduler processes`` with it (they ran on, queued tasks too, once it had ended), and
    its lock says for how long an upload it sent may still land (the next run here took it at once)."""
    url, direct, store, features = _cube_of_four_dates(tiny_region, s3_bucket, first_dates)
    lock = layout.lock_key("s1")
    items = write_items(tiny_region.items, features[:12], "grace-second.json")
    s3_proxy.hold(["PUT"], path_contains="/c/")
    try:
        proc = stopped_while_held(ingest_command(items, url, "s1", "--endpoint-url", s3_proxy.endpoint_url,
                                                 "--stop-grace", "0.5", "--scheduler", scheduler), s3_proxy,
                                  env=s3_bucket.server.environment())
        workers = pool_workers(proc.pid)
        if scheduler == "processes":  # a process pool cannot be asked: it waits for its tasks unless stopped again
            time.sleep(2)
            proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)  # while the upload is held: it lingered until its release
        assert not still_running(workers), "worker processes outlived the run"  # the held upload holds none
        assert proc.returncode == 128 + signal.SIGTERM, err
        # nothing but what the stop has to say (and, of a killed pool, multiprocessing's resource tracker cleaning up
        # its semaphores: "leaked semaphore objects to clean up at shutdown", a warning it gives on its own)
        lines = [line for line in err.splitlines() if "resource_tracker" not in line]
        assert len(lines) == 3 - (scheduler == "processes"), err
        assert scheduler == "processes" or lines[0].startswith("writing shards stopped: waiting up to 0.5 s for")
        assert "is left in place, as writes of this run may still land" in lines[-2]
        assert lines[-1].startswith("cardcube ingest: error: the run stopped (interrupted: Ctrl-C or SIGTERM")
        assert read_json(store, lock)["settles"] > time.time()
        with pytest.raises(CardcubeError, match=r"stopped leaving writes running, which may land for \d+ s more"):
            ingest(items, url, collection="s1", chunks=CHUNKS, storage_options=direct, progress=False)
    finally:
        s3_proxy.release()
    delete_key(store, lock)  # as the operator may, once its writes have landed
    done = ingest(items, url, collection="s1", chunks=CHUNKS, storage_options=direct, progress=False)
    assert done.ok and done.version == 2
    assert assert_matches_sources(url, items, "s1", storage_options=direct) > 0
    assert verify(url, "s1", deep=True, storage_options=direct, progress=False).ok


def test_a_listing_behind_the_writes_stops_the_writers_before_they_touch_a_committed_version(tiny_region, s3_bucket,
                                                                                             s3_proxy, first_dates):
    """A store whose listings lag behind its writes (a replica, a multi-site gateway) listed no ledger record of a
    cube of one version: the next ingest took it for a new cube, cleared and wrote over its shards (version 1 then
    read "shards ... missing from the store: the cube has lost data"), and failed at its commit, saying "nothing of
    this run became visible". Ingest and expire stop before writing or deleting anything now, saying the listing is
    behind; once it has caught up, they run as on a sound store."""
    from cardcube.errors import StoreUnavailableError
    from ingest.expire import expire

    url, direct = _uploaded(s3_bucket, first_dates, 5), s3_bucket.storage_options()
    before = open_cube(url, "s1", decode=False, storage_options=direct).compute()
    more = write_items(tiny_region.items, items_of(tiny_region.items, "sentinel-1-card-bs")[5:7], "behind.json")
    s3_proxy.unlist("/_ledger/v00000001", times=100)
    with pytest.raises(StoreUnavailableError, match=r"^the store holds s1/_ledger/v00000001.json of the s1 cube at "
                                                    r"\S+, but its listing of the ledger held no version: its listings "
                                                    r"lag behind its writes .*nothing was written: try again shortly$"):
        ingest(more, url, collection="s1", chunks=CHUNKS, progress=False, storage_options=s3_proxy.storage_options())
    after = open_cube(url, "s1", decode=False, storage_options=direct)
    assert after.attrs["cardcube:version"] == 1 and before.drop_attrs().identical(after.compute().drop_attrs())
    assert verify(url, "s1", deep=True, storage_options=direct).ok
    s3_proxy.clear_faults()
    assert ingest(more, url, collection="s1", chunks=CHUNKS, progress=False,
                  storage_options=s3_proxy.storage_options()).version == 2
    s3_proxy.unlist("/_ledger/v00000002", times=100)
    with pytest.raises(StoreUnavailableError, match="its listing of the ledger ended at version 1: its listings lag"):
        expire(url, "s1", older_than=timedelta(0), storage_options=s3_proxy.storage_options())
    assert committed_versions(open_store(url, storage_options=direct), "s1") == [1, 2]


def test_sources_whose_answers_are_cut_off_midway_stop_the_run_and_commit_nothing(tiny_region, s3_bucket, s3_proxy,
                                                                                  tmp_path, monkeypatch):
    """A sources' store that cuts its answers off midway (a body short of its Content-Length, a connection reset),
    after s3fs's tries: a band file's was an "unexpected error" rejecting the scene, and a version of that rejection
    was committed (exit 1), the scene listed as one to fix; the scenes' STAC file's a traceback. The run stops now,
    saying the endpoint is not answering, and commits nothing; once it answers, the scene goes in."""
    from cardcube.errors import StoreUnavailableError

    feature, items = _scene_on_s3(tiny_region, s3_bucket, "s3-cut.json")
    s3_bucket.server.client().upload_file(str(items), s3_bucket.name, "stac/s3-cut.json")
    for name, value in s3_bucket.server.environment(s3_proxy.endpoint_url).items():
        monkeypatch.setenv(name, value)
    s3_proxy.cut_next(10**6, keep=0.3, path_contains="/cogs/")
    with pytest.raises(StoreUnavailableError, match=rf"cannot read s3://{s3_bucket.name}/cogs/.*: Response payload "
                                                    r"is not completed.* is not answering, which is no fault of the "
                                                    r"scene"):
        ingest(items, tmp_path / "cube", chunks=CHUNKS, progress=False)
    assert committed_versions(open_store(tmp_path / "cube"), "s2") == []
    s3_proxy.clear_faults()
    s3_proxy.cut_next(10**6, keep=0.3, path_contains="/stac/")
    with pytest.raises(StoreUnavailableError, match=rf"^cannot read the source s3://{s3_bucket.name}/stac/s3-cut.json: "
                                                    r"the store cannot be reached or does not answer \(ClientPayload"):
        ingest(f"s3://{s3_bucket.name}/stac/s3-cut.json", tmp_path / "cube", chunks=CHUNKS, progress=False)
    s3_proxy.clear_faults()
    assert ingest(f"s3://{s3_bucket.name}/stac/s3-cut.json", tmp_path / "cube", chunks=CHUNKS,
                  progress=False).added == (feature["id"],)


def test_an_array_document_answered_404_says_the_store_may_be_behind(tiny_region, s3_bucket, s3_proxy, first_dates):
    """An object store answering 404 for an array's zarr.json it holds (reads behind its writes, a replica): the
    ingest stopped saying the document was missing and to restore it from a backup. It says the store may be behind,
    to run again first; and the run again goes in."""
    from cardcube.errors import CorruptDocumentError

    url = _uploaded(s3_bucket, first_dates, 5)
    more = write_items(tiny_region.items, items_of(tiny_region.items, "sentinel-1-card-bs")[5:7], "meta-404.json")
    s3_proxy.hide_next(1, path_contains="/zarr.json")
    with pytest.raises(CorruptDocumentError, match=r"zarr.json of a committed tile is missing \(or the store answered "
                                                   r"404 for an object it holds, its reads behind its writes: run "
                                                   r"again shortly first\): "):
        ingest(more, url, collection="s1", chunks=CHUNKS, progress=False, storage_options=s3_proxy.storage_options())
    assert s3_proxy.snapshot().faults == 1
    assert ingest(more, url, collection="s1", chunks=CHUNKS, progress=False,
                  storage_options=s3_proxy.storage_options()).version == 2


def test_expire_aborts_the_uploads_a_killed_writer_left_under_its_collection_and_no_others(s3_bucket, first_dates):
    """A writer killed midway through a multipart upload (an object of 100 MiB or more:
    tests/test_unfinished_uploads.py) leaves its parts in the bucket, unlisted and billed. expire aborts those under
    its collection's prefix started longer ago than a lock goes stale (--stale-after), and says so; not a recent one
    (a live writer's, for all it knows), nor one of another collection or outside the cube (a shared bucket's)."""
    from tests.in_process import run_here

    url, server = _uploaded(s3_bucket, first_dates, 5), s3_bucket.server
    part = b"x" * 1_000_000
    shard = "cube/s1/31UFU/cube.zarr/r10m/VV/c/7/0/0"
    stale = server.start_upload(s3_bucket.name, shard, part=part, age=commit.STALE_AFTER + 60)
    left = {server.start_upload(s3_bucket.name, shard, part=part, age=commit.STALE_AFTER - 60),
            server.start_upload(s3_bucket.name, "cube/s2/31UFU/cube.zarr/r10m/B04/c/7/0/0", age=3600),
            server.start_upload(s3_bucket.name, "cube-other/s1/31UFU/cube.zarr/r10m/VV/c/7/0/0", age=3600),
            server.start_upload(s3_bucket.name, "other/s1/x.parquet", part=part, age=3600)}

    def uploads() -> set[str]:
        return {u["UploadId"] for u in server.client().list_multipart_uploads(Bucket=s3_bucket.name)["Uploads"]}

    said = "1 multipart upload(s) a killed writer left unfinished (1.0 MB of parts)"
    dry = run_here(["expire", "--cube", url, "--collection", "s1", "--dry-run"], env=server.environment())
    assert dry.returncode == 0 and f"{said} to abort" in dry.stdout, dry
    assert uploads() == left | {stale}
    done = run_here(["expire", "--cube", url, "--collection", "s1", "--json"], env=server.environment())
    assert done.returncode == 0, done
    assert '"uploads": 1, "upload_bytes": 1000000' in done.stdout
    assert uploads() == left
    assert run_here(["verify", "--cube", url, "--collection", "s1"], env=server.environment()).returncode == 0
    assert committed_versions(open_store(url, storage_options=s3_bucket.storage_options()), "s1") == [1]
