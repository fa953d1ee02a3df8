"""Interactive reads over S3 (moto's server through the counting proxy): what a season and a chip cost in
requests, and that the requests wait on each other as little as possible."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dask
import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import xarray as xr

from cardcube.counting_store import CountingStore
from cardcube.errors import InvalidRequestError, StoreUnavailableError
from cardcube.spec import ChunkLayout
from cardcube.storage import open_store
from cube import layout
from cube.chips import chip
from cube.dataset import READ_THREADS, open_cube
from cube.ledger import read_version
from cube.timeseries import parcel_timeseries
from tests.conftest import TEST_CHUNKS
from tests.cube.reference import season_chunks

pytestmark = pytest.mark.s3


@pytest.fixture(scope="module")
def bucket(tiny_cube, s3_server) -> str:
    """The folder cube copied as it is into a bucket of its own: ``s3://<bucket>/cube``."""
    name = f"reads-{uuid.uuid4().hex[:12]}"
    s3_server.create_bucket(name)
    client = s3_server.client()
    files = [os.path.join(d, f) for d, _, fs in os.walk(tiny_cube) for f in fs]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda p: client.upload_file(p, name, f"cube/{os.path.relpath(p, tiny_cube)}"), files))
    yield f"s3://{name}/cube"
    s3_server.delete_bucket(name)


@pytest.fixture(scope="module")
def parcel(tiny_region) -> gpd.GeoDataFrame:
    parcels = gpd.read_parquet(tiny_region.parcels).sort_values("area_ha")
    return parcels.iloc[[-1]]  # the largest: its season spans several chunks


def test_a_season_costs_one_listing_one_ledger_read_and_two_gets_per_chunk_all_in_flight(
        tiny_cube, bucket, parcel, s3_proxy):
    s3_proxy.configure(latency_s=0.1)  # a remote store: requests that overlap do so for 0.1 s
    on_s3 = parcel_timeseries(bucket, parcel, bands=["B04"], mask=None, histogram=False,
                              storage_options=s3_proxy.storage_options())
    stats = s3_proxy.snapshot()
    # independent count: the 64 px chunks that the parcel's buffered bounds touch, per time block
    rows, cols, blocks = season_chunks(parcel.geometry.iloc[0], ChunkLayout.parse(TEST_CHUNKS), 19)
    chunks = len(rows) * len(cols)
    assert stats.head == 0  # no HEAD before whole-object GETs
    assert stats.list == 1  # the ledger's versions
    # the ledger record once, zarr.json of B04's cold and hot arrays, then per chunk its shard index and bytes
    assert stats.get == 1 + 2 + 2 * chunks * blocks
    # the chunks are fetched together (dask tasks of READ_THREADS threads), not a core's worth at a time
    tasks = chunks * blocks
    assert tasks >= 8 and stats.peak_in_flight >= min(tasks, READ_THREADS) // 2, stats
    pd.testing.assert_frame_equal(on_s3, parcel_timeseries(tiny_cube, parcel, bands=["B04"], mask=None,
                                                           histogram=False))




def test_an_open_dataset_reads_each_shard_index_once(tiny_cube, bucket, parcel, s3_proxy):
    """Parcel after parcel from one open Dataset (an inspector's session): the ledger and the arrays'
    metadata are read when it opens, each shard's index on its first read, and then only chunks."""
    ds = open_cube(bucket, bbox=parcel.total_bounds, crs=parcel.crs, bands=["B04"], decode=False,
                   storage_options=s3_proxy.storage_options())
    gets = []
    for _ in range(2):
        s3_proxy.reset_counters()
        frame = parcel_timeseries(ds, parcel, bands=["B04"], mask=None, histogram=False)
        gets.append(s3_proxy.snapshot().get)
    assert gets[0] == 2 * gets[1] and gets[1] > 0  # index + chunk per shard, then the chunk alone
    pd.testing.assert_frame_equal(frame, parcel_timeseries(tiny_cube, parcel, bands=["B04"], mask=None,
                                                           histogram=False))

def test_a_scheduler_the_user_configured_is_used_as_it_is(tiny_cube, bucket, parcel, s3_proxy):
    """With dask's synchronous scheduler configured, the chunks are read one after another: only the
    arrays' metadata (B04 cold and hot) may be fetched two at a time."""
    s3_proxy.configure(latency_s=0.05)
    with dask.config.set(scheduler="synchronous"):
        parcel_timeseries(bucket, parcel, bands=["B04"], mask=None, histogram=False,
                          storage_options=s3_proxy.storage_options())
    stats = s3_proxy.snapshot()
    assert stats.get > 10 and stats.peak_in_flight <= 2, stats

def test_a_dataset_read_waiting_on_s3_still_pickles_for_a_dask_worker(tiny_cube, bucket, s3_proxy):
    """A cluster of worker processes sends a Dataset's window from worker to worker, while a read of it may be
    waiting on S3: the shard index it fetched sat among the window's indexes as an asyncio future, which cannot
    be pickled ("Could not serialize object of type _Window"; the LocalCluster's compute then hung). A copy
    starts without them and reads the same pixels."""
    import pickle

    ds = open_cube(bucket, bands=["B04"], time="2024-06", decode=False, storage_options=s3_proxy.storage_options())
    s3_proxy.hold(["GET"], path_contains="/B04/c/")  # the shards' indexes and chunks wait
    with ThreadPoolExecutor(1) as pool:
        reading = pool.submit(lambda: ds.B04.compute(scheduler="threads"))
        try:
            deadline = time.monotonic() + 30
            while not s3_proxy.held and time.monotonic() < deadline:
                time.sleep(0.01)
            assert s3_proxy.held, "no read reached the store"
            copy = pickle.loads(pickle.dumps(ds))  # as a worker sends it, mid-read
        finally:
            s3_proxy.release()  # before the pool waits for the read
        first = reading.result(timeout=60)
    expected = open_cube(tiny_cube, bands=["B04"], time="2024-06", decode=False).B04.values
    np.testing.assert_array_equal(first.values, expected)
    np.testing.assert_array_equal(copy.B04.compute(scheduler="threads").values, expected)


def test_a_chip_of_a_cold_date_never_opens_the_hot_buffer(tiny_cube, bucket, parcel, s3_proxy):
    folder = CountingStore(open_store(tiny_cube, read_only=True))
    version = read_version(folder, "s2")
    first = version.tiles[sorted(version.tiles)[0]].cold[0].time[:10]
    folder.reset()
    local = chip(folder, parcel, time=f"{first}/{first}", size=48)
    s3_proxy.reset_counters()
    on_s3 = chip(bucket, parcel, time=f"{first}/{first}", size=48, storage_options=s3_proxy.storage_options())
    stats = s3_proxy.snapshot()
    metadata = [k for k in folder.keys_read if k.endswith("zarr.json")]
    assert len(metadata) == 4 and not any("/" + layout.resolution_group(10, hot=True) in k for k in metadata)
    assert not any(layout.resolution_group(20, hot=True) in k for k in folder.keys_read)
    assert (stats.head, stats.list) == (0, 1)
    assert stats.get == folder.requests["get"]  # S3 fetches exactly the byte ranges the folder reads
    xr.testing.assert_equal(on_s3.data, local.data)  # the same pixels (attrs name each store)


def test_a_version_already_read_is_not_read_again(tiny_cube):
    store = CountingStore(open_store(tiny_cube, read_only=True))
    version = read_version(store, "s2")
    store.reset()
    assert read_version(store, "s2", version) is version and store.requests == {}
    with pytest.raises(InvalidRequestError, match="not of s1"):
        read_version(store, "s1", version)


def test_an_array_cache_leaves_the_next_queries_only_chunks_to_fetch(tiny_cube, tiny_region):
    """What the REST service keeps between requests: a second season and a chip of the same tile read no
    ``zarr.json`` and no shard index again, and give the numbers and pixels of uncached reads."""
    from cube.tile_arrays import ArrayCache

    parcels = gpd.read_parquet(tiny_region.parcels).sort_values("area_ha")
    first, second = parcels.parcel_id.iloc[-2], parcels.parcel_id.iloc[-3]
    store = CountingStore(open_store(tiny_cube, read_only=True))
    version, cache = read_version(store, "s2"), ArrayCache()
    series = lambda pid, **kw: parcel_timeseries(store, [pid], registry=parcels, bands=["B04", "B03", "B02"],  # noqa: E731
                                                 as_of=version, **kw)
    store.reset()
    series(first, cache=cache)
    cold, metadata = store.requests["get"], sum(k.endswith("zarr.json") for k in store.keys_read)
    store.reset()
    series(first, cache=cache)
    assert metadata and len(cache.indexes)
    assert store.requests["get"] <= cold - metadata - len(cache.indexes)  # chunks; each index once at most
    cached = series(second, cache=cache)
    pd.testing.assert_frame_equal(cached, series(second), check_exact=True)
    day = pd.Timestamp(cached.time.iloc[0]).strftime("%Y-%m-%d")
    store.reset()
    picture = chip(store, second, registry=parcels, time=f"{day}/{day}", size=32, as_of=version, cache=cache)
    assert store.requests["get"] > 0 and not [k for k in store.keys_read if k.endswith("zarr.json")]
    xr.testing.assert_equal(picture.data, chip(tiny_cube, second, registry=parcels, time=f"{day}/{day}",
                                                size=32).data)


@pytest.mark.parametrize("keep", [0.5, 0.0])
def test_an_answer_cut_off_midway_is_a_store_error_never_values(tiny_cube, tiny_region, bucket, parcel, s3_server,
                                                                s3_proxy, tmp_path, keep):
    """A gateway that cuts a shard's answer off midway (a body shorter than its Content-Length; ``keep`` 0: the
    connection closed right after the headers): after s3fs's tries, aiohttp's ClientPayloadError escaped every read
    as it was, a traceback from the command line (no OSError). It is a StoreUnavailableError naming the array now,
    the command's one error line (exit 2); and a cut that a try gets past reads what a sound store gives."""
    from tests.in_process import run_here

    expected = parcel_timeseries(tiny_cube, parcel, bands=["B04"], mask=None, histogram=False)
    s3_proxy.cut_next(2, keep=keep, path_contains="/c/")
    got = parcel_timeseries(bucket, parcel, bands=["B04"], mask=None, histogram=False,
                            storage_options=s3_proxy.storage_options())
    assert s3_proxy.snapshot().faults == 2
    pd.testing.assert_frame_equal(got, expected)
    s3_proxy.cut_next(10**6, keep=keep, path_contains="/c/")  # every shard's answer, every try
    with pytest.raises(StoreUnavailableError, match=r"^cannot read shards of s2/31UFU/cube.zarr/\S+/B04 from "
                                                    r"s3://\S+/cube: the store cannot be reached or does not answer "
                                                    r"\(ClientPayloadError: "):
        parcel_timeseries(bucket, parcel, bands=["B04"], mask=None, histogram=False,
                          storage_options=s3_proxy.storage_options())
    done = run_here(["timeseries", "--cube", bucket, "--parcels", str(tiny_region.parcels), parcel.parcel_id.iloc[0],
                     "--bands", "B04", "--out", str(tmp_path / "ts.csv")],
                    env=s3_server.environment(s3_proxy.endpoint_url))
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("cardcube timeseries: error: cannot read shards of s2/") and \
        "ClientPayloadError" in done.stderr and not (tmp_path / "ts.csv").exists()


def test_a_ledger_record_listed_but_answered_404_is_the_store_behind_not_a_version_lost(tiny_cube, bucket, parcel,
                                                                                      s3_proxy):
    """A store whose reads lag behind its listings (a replica) lists the latest record and answers 404 for it: that
    was a VersionNotFoundError, "its ledger record is missing between kept versions: lost" (a REST 404 for the
    latest data), of a version the next read found. It is a StoreUnavailableError (a 503) saying to try again."""
    from cube.ledger import committed_versions

    latest = committed_versions(open_store(bucket, storage_options=s3_proxy.storage_options()), "s2")[-1]
    s3_proxy.hide_next(1, path_contains=f"/s2/_ledger/v{latest:08d}")
    with pytest.raises(StoreUnavailableError, match=rf"^the store lists s2/_ledger/v{latest:08d}.json of the s2 cube "
                                                    rf"at {bucket} but answered 404 for it: .* try again shortly"):
        parcel_timeseries(bucket, parcel, bands=["B04"], mask=None, histogram=False,
                          storage_options=s3_proxy.storage_options())
    assert s3_proxy.snapshot().faults == 1
    pd.testing.assert_frame_equal(parcel_timeseries(bucket, parcel, bands=["B04"], mask=None, histogram=False,
                                                    storage_options=s3_proxy.storage_options()),
                                  parcel_timeseries(tiny_cube, parcel, bands=["B04"], mask=None, histogram=False))


def test_a_ledger_the_listing_leaves_out_for_a_moment_is_the_store_behind_not_a_cube_lost(bucket, s3_proxy):
    """A store whose listing of the ledger lags behind (a replica) listed no record for a moment: the REST service's
    versions said "the s2 cube ... had version 1 and now has none: its ledger is gone from the store" (a 500
    CubeLost, which an operator reads as data gone). The record served is still there: a StoreUnavailableError (a
    503, try again); once the listing has caught up, the version is served."""
    from cube.versions import VersionCache

    versions = VersionCache(open_store(bucket, storage_options=s3_proxy.storage_options(), read_only=True),
                            refresh=3600)
    served = versions.get("s2").version
    versions.forget("s2")
    s3_proxy.unlist("/s2/_ledger/v", times=100)
    with pytest.raises(StoreUnavailableError, match=rf"^the store lists no ledger record of the s2 cube at {bucket}, "
                                                    rf"but holds s2/_ledger/v{served:08d}.json, the version served: "
                                                    r"its listings lag"):
        versions.get("s2")
    s3_proxy.clear_faults()
    versions.forget("s2")
    assert versions.get("s2").version == served


def test_the_rest_service_serves_a_cube_on_s3(tiny_cube, tiny_region, bucket, s3_server):
    """``cardcube serve --cube s3://... --parcels s3://...`` (endpoint and keys from the environment, as for Ceph or
    MinIO) answers with the numbers and chips of the same cube and parcels in a folder."""
    from PIL import Image

    from cardcube.testing.served import ServedCommand

    parcels = gpd.read_parquet(tiny_region.parcels)
    pid = parcels.sort_values("area_ha").parcel_id.iloc[-2]
    s3_server.client().upload_file(str(tiny_region.parcels), bucket.split("/")[2], "lpis/parcels.parquet")
    server = ServedCommand(["serve", "--cube", bucket, "--parcels", bucket.replace("/cube", "/lpis/parcels.parquet")],
                           env=s3_server.environment())
    try:
        r = server.http.get(f"/collections/s2/parcels/{pid}/timeseries", params={"bands": "B04,NDVI",
                                                                                 "format": "parquet"})
        assert r.status_code == 200, r.text
        want = parcel_timeseries(tiny_cube, [pid], registry=parcels, bands=["B04", "NDVI"])
        got = pd.read_parquet(io.BytesIO(r.content))  # times in microseconds, as Spark reads them: same instants
        pd.testing.assert_frame_equal(got.astype({"time": want.time.dtype}), want, check_exact=True)
        day = pd.Timestamp(want.time.iloc[0]).strftime("%Y-%m-%d")
        png = server.http.get(f"/collections/s2/parcels/{pid}/chip.png", params={"date": day, "size": 32})
        expected = chip(tiny_cube, [pid], registry=parcels, size=32, time=f"{day}/{day}").image(0, scale=4)
        assert (np.asarray(Image.open(io.BytesIO(png.content)).convert("RGBA")) == expected).all()
    finally:
        server.close()


def test_the_rest_service_answers_503_while_its_store_is_out_of_reach_and_recovers(tiny_region, bucket, s3_server,
                                                                                   s3_proxy):
    """The cube's store stops answering, goes away, throttles, while ``cardcube serve`` runs: each request answers
    503 with Retry-After and names the store, within the --store-timeout budget rather than after a minute of
    retries (the client waits 30 s, half a reverse proxy's usual timeout); once the store is back the service
    answers by itself. A store that answers errors after every retry stays a 502."""
    from cardcube.testing.served import ServedCommand

    pid = gpd.read_parquet(tiny_region.parcels).parcel_id.iloc[3]
    server = ServedCommand(["serve", "--cube", bucket, "--parcels", tiny_region.parcels, "--refresh", "600",
                            "--store-timeout", "2"], env=s3_server.environment(s3_proxy.endpoint_url))

    def get(bands: str):  # the version is kept (--refresh): a band read before fails on its shards, a new one on
        return server.http.get(f"/collections/s2/parcels/{pid}/timeseries",  # opening its array
                               params={"bands": bands}, timeout=30)

    def answers(bands: str) -> None:  # as a client heeding Retry-After: on a loaded machine a read of moto can
        for _ in range(3):  # itself outlast the 2 s --store-timeout, a 503 the service rightly gives
            r = get(bands)
            if r.status_code != 503 or r.json()["error"] != "StoreUnavailable":
                break
            time.sleep(1)
        assert r.status_code == 200, r.text

    def out_of_reach(r) -> None:
        assert r.status_code == 503, r.text
        assert int(r.headers["Retry-After"]) > 0
        assert r.json()["error"] == "StoreUnavailable"
        assert f"from {bucket}: the store cannot be reached or does not answer" in r.json()["detail"]

    try:
        answers("B04")
        s3_proxy.configure(latency_s=600)  # connections taken, nothing answered: a hung store or a dead path
        out_of_reach(get("B04"))
        out_of_reach(get("B08"))
        s3_proxy.configure(latency_s=0)
        answers("B08")
        port = s3_proxy.port
        s3_proxy.stop()  # gone: connections refused
        out_of_reach(get("B03"))
        s3_proxy.start(port=port)  # back, at its address
        answers("B03")
        s3_proxy.fail_randomly(1.0, status=503, code="SlowDown")  # throttling past both tries
        out_of_reach(get("B02"))
        s3_proxy.fail_randomly(1.0, status=500, code="InternalError")  # there, but failing: no Retry-After
        r = get("B02")
        assert r.status_code == 502 and r.json()["error"] == "Store" and "Retry-After" not in r.headers, r.text
        s3_proxy.clear_faults()
        answers("B02")
        s3_proxy.cut_next(10**6, path_contains="/c/")  # every shard's answer cut off midway: a 500 with its traceback
        out_of_reach(get("B05"))
        s3_proxy.clear_faults()
        answers("B05")
    finally:
        server.close()


def test_the_rest_service_reads_for_so_many_requests_at_once_and_answers_the_others(tiny_region, bucket, s3_server,
                                                                                   s3_proxy):
    """Each request was bounded, not how many read at once: 20 POSTs held 2.3 GB, and requests whose clients had
    given up on a slow store kept every thread of the service, which then answered nothing, not even the routes
    that read nothing. Now --reads of them read at once; the others wait their turn, reading nothing, up to
    --read-wait seconds, then are a 503 with Retry-After."""
    from cardcube.testing.served import ServedCommand

    pid = gpd.read_parquet(tiny_region.parcels).parcel_id.iloc[3]
    server = ServedCommand(["serve", "--cube", bucket, "--parcels", tiny_region.parcels, "--refresh", "600",
                            "--reads", "1", "--read-wait", "2", "--store-timeout", "300"],  # a held read waits
                           env=s3_server.environment(s3_proxy.endpoint_url))

    def series(bands: str, timeout: float = 60):
        return server.http.get(f"/collections/s2/parcels/{pid}/timeseries", params={"bands": bands},
                               timeout=timeout)

    def settled() -> int:  # the shard reads held back, once none has arrived for 2 s (nothing is asserted of time)
        held = -1
        while held != s3_proxy.held:
            held = s3_proxy.held
            time.sleep(2)
        return held

    try:
        assert series("B04").status_code == 200  # the version kept (--refresh)
        s3_proxy.hold(["GET"], path_contains="/c/")  # a store slow to give the shards
        with ThreadPoolExecutor(4) as pool:
            first = pool.submit(series, "B08")  # takes the one turn, and waits on the store
            deadline = time.monotonic() + 60  # only so a broken run ends; nothing about time is asserted
            while not s3_proxy.held:
                assert not first.done(), first.result().text
                assert time.monotonic() < deadline, "the first request read no shard"
                time.sleep(0.05)
            reading = settled()
            gone = [pool.submit(series, "B8A", 0.5) for _ in range(3)]  # their clients give up
            for abandoned in gone:
                with pytest.raises(Exception, match="timed out"):
                    abandoned.result()
            # a request's own fault is answered at once, not after waiting for a turn (a 503 then)
            parcel = f"/collections/s2/parcels/{pid}"
            for path, params, status in (
                    ("/collections/s2/parcels/no-such-parcel/timeseries", {}, 404),
                    (f"{parcel}/timeseries", {"bands": "B99"}, 422),
                    (f"{parcel}/timeseries", {"time": "1990-01"}, 404),
                    (f"{parcel}/timeseries", {"buffer": "wide"}, 422),
                    (f"{parcel}/chip.png", {"date": "2024-13-45"}, 422),
                    (f"{parcel}/chip.png", {"date": "1990-01-01"}, 404),
                    (f"{parcel}/season.png", {"bands": "B99"}, 422)):
                r = server.http.get(path, params=params, timeout=60)
                assert r.status_code == status, (path, params, r.text)
            r = server.http.post("/collections/s2/timeseries", json={"type": "Point"}, timeout=60)
            assert r.status_code == 422 and r.json()["error"] == "InvalidRequest", r.text
            busy = series("B04")
            assert busy.status_code == 503 and int(busy.headers["Retry-After"]) > 0, busy.text
            assert busy.json()["error"] == "ServiceBusy" and "waited 2 s for its turn" in busy.json()["detail"]
            assert server.http.get("/collections/s2", timeout=30).status_code == 200  # reads nothing: answered
            assert settled() == reading  # the requests waiting their turn read nothing
            s3_proxy.release()
            assert first.result().status_code == 200
        assert series("B8A").status_code == 200  # the turn is free again
    finally:
        s3_proxy.release()
        server.close()


def test_every_command_takes_the_endpoint_as_an_option(tiny_cube, tiny_region, bucket, s3_server, tmp_path,
                                                      monkeypatch, capsys):
    """``--endpoint-url`` where the environment names no endpoint (keys only): timeseries and the catalog read the
    cube in the bucket as they read it in a folder, timeseries its parcels from a GeoPackage there too. (The
    commands run in this process: the option is parsed and passed on as in a command's own.)"""
    from cardcube.cli import main

    for name, value in s3_server.environment().items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    parcels = gpd.read_parquet(tiny_region.parcels)
    pid = parcels.parcel_id.iloc[12]
    parcels.to_file(tmp_path / "parcels.gpkg")
    s3_server.client().upload_file(str(tmp_path / "parcels.gpkg"), bucket.split("/")[2], "lpis/parcels.gpkg")
    in_bucket = {bucket: bucket.replace("/cube", "/lpis/parcels.gpkg"), str(tiny_cube): str(tiny_region.parcels)}

    def cardcube(*args: str) -> str:
        code = main(list(args))
        out, err = capsys.readouterr()
        assert code == 0, err
        return out

    endpoint = ["--endpoint-url", s3_server.endpoint_url]
    for cube, out in ((bucket, "s3.parquet"), (str(tiny_cube), "folder.parquet")):
        cardcube("timeseries", "--cube", cube, *endpoint, "--parcels", in_bucket[cube], pid, "--bands", "B04",
                 "--out", str(tmp_path / out))
    got, want = (pd.read_parquet(tmp_path / name) for name in ("s3.parquet", "folder.parquet"))
    pd.testing.assert_frame_equal(got, want)
    tiles = [cardcube("catalog", "find", "--cube", cube, *endpoint) for cube in (bucket, str(tiny_cube))]
    assert '"tile": "31UFU"' in tiles[0] and tiles[0] == tiles[1]


def test_an_interactive_read_of_a_store_that_hangs_fails_within_its_store_timeout(tiny_region, bucket, s3_server,
                                                                                   s3_proxy, tmp_path):
    """A gateway that holds the shard reads open: the command line waited minutes of the client's retries (3 min 42 s
    measured, up to 45 min for a gateway that keeps the connections), with no way to bound it as ``serve`` can;
    ``--store-timeout`` bounds timeseries and chip (nothing is asserted of time: the held reads are never answered)."""
    pid = gpd.read_parquet(tiny_region.parcels).parcel_id.iloc[3]
    env = {**os.environ, **s3_server.environment(s3_proxy.endpoint_url),
           "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    s3_proxy.hold(["GET"], path_contains="/c/")  # the shards never come
    try:
        for command, out in (("timeseries", "ts.csv"), ("chip", "chips")):
            done = subprocess.run([sys.executable, "-m", "cardcube.cli", command, "--cube", bucket, "--parcels",
                                   str(tiny_region.parcels), pid, "--store-timeout", "2", "--out", str(tmp_path / out)],
                                  env=env, capture_output=True, text=True, timeout=300)
            assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
            assert "cannot be reached or does not answer" in done.stderr and "ReadTimeoutError" in done.stderr
            assert s3_proxy.held
    finally:
        s3_proxy.release()
