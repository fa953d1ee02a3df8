from __future__ import annotations

import asyncio
import io
import threading
import time

import boto3
import numpy as np
import pytest
import s3fs
import zarr
from botocore.config import Config
from botocore.exceptions import ClientError, HTTPClientError

from cardcube.errors import CommitConflictError
from cardcube.storage import create_bytes, open_store, read_bytes, write_bytes
from cardcube.testing import fixtures
from cardcube.testing.fixtures import S3Bucket
from cardcube.testing.s3proxy import ProxyStats, S3Proxy, classify, start_s3_proxy
from cardcube.testing.s3server import REGION, S3Server, start_s3_server

s3_server, s3_bucket, s3_proxy = fixtures.s3_server, fixtures.s3_bucket, fixtures.s3_proxy

pytestmark = [pytest.mark.s3, pytest.mark.timeout(60)]


def _client(endpoint_url: str, *, attempts: int = 1, key: str = "testing", secret: str = "testing"):
    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=REGION,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        config=Config(retries={"total_max_attempts": attempts, "mode": "standard"}),
    )


def test_classify() -> None:
    assert classify("GET", "/bkt", ["list-type", "prefix"]) == "LIST"
    assert classify("GET", "/bkt/", []) == "LIST"
    assert classify("GET", "/bkt", ["location"]) == "GET"
    assert classify("GET", "/bkt/a/b", []) == "GET"
    assert classify("head", "/bkt/a", []) == "HEAD"
    assert classify("PATCH", "/bkt/a", []) == "OTHER"
    assert classify("HEAD", "/", []) == "OTHER"  # open_store's check that the endpoint answers: no S3 operation


def test_counts_and_bytes_match_what_was_done(s3_bucket: S3Bucket, s3_proxy: S3Proxy) -> None:
    client = _client(s3_proxy.endpoint_url)
    sizes = [100, 2_000, 30_000, 1]
    for i, size in enumerate(sizes):
        client.put_object(Bucket=s3_bucket.name, Key=f"obj/{i}", Body=bytes([i]) * size)
    after_puts = s3_proxy.snapshot()
    assert after_puts.put == len(sizes) and after_puts.total == len(sizes)
    assert after_puts.request_bytes == sum(sizes)

    s3_proxy.reset_counters()
    assert s3_proxy.snapshot() == ProxyStats()
    bodies = [client.get_object(Bucket=s3_bucket.name, Key=f"obj/{i}")["Body"].read() for i in range(len(sizes))]
    assert [len(b) for b in bodies] == sizes
    listed = client.list_objects_v2(Bucket=s3_bucket.name, Prefix="obj/")["KeyCount"]
    head = client.head_object(Bucket=s3_bucket.name, Key="obj/2")
    client.delete_object(Bucket=s3_bucket.name, Key="obj/3")

    stats = s3_proxy.snapshot()
    assert listed == len(sizes)
    assert head["ContentLength"] == sizes[2]  # HEAD's Content-Length passes through unchanged
    assert (stats.get, stats.list, stats.head, stats.delete, stats.put) == (len(sizes), 1, 1, 1, 0)
    assert stats.statuses == {200: 6, 204: 1}
    list_body = stats.response_bytes - sum(sizes)
    assert 0 < list_body < 5_000  # object bodies exactly, plus one small ListObjectsV2 XML document
    assert stats.faults == 0 and stats.request_bytes == 0


def test_snapshot_difference(s3_bucket: S3Bucket, s3_proxy: S3Proxy) -> None:
    client = _client(s3_proxy.endpoint_url)
    client.put_object(Bucket=s3_bucket.name, Key="a", Body=b"abc")
    before = s3_proxy.snapshot()
    client.get_object(Bucket=s3_bucket.name, Key="a")["Body"].read()
    delta = s3_proxy.snapshot() - before
    assert delta.requests == {"GET": 1} and delta.response_bytes == 3 and delta.request_bytes == 0



def test_peak_in_flight_counts_concurrent_requests(s3_bucket: S3Bucket, s3_proxy: S3Proxy) -> None:
    from concurrent.futures import ThreadPoolExecutor

    client = _client(s3_proxy.endpoint_url)
    client.put_object(Bucket=s3_bucket.name, Key="k", Body=b"x")
    s3_proxy.configure(latency_s=0.2)
    s3_proxy.reset_counters()
    for _ in range(3):  # one after another
        client.get_object(Bucket=s3_bucket.name, Key="k")["Body"].read()
    assert s3_proxy.snapshot().peak_in_flight == 1
    s3_proxy.reset_counters()
    barrier = threading.Barrier(4)

    def get(_: int) -> bytes:
        barrier.wait()  # all four start together, each held 0.2 s by the proxy
        return client.get_object(Bucket=s3_bucket.name, Key="k")["Body"].read()

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(get, range(4))) == [b"x"] * 4
    stats = s3_proxy.snapshot()
    assert stats.get == 4 and 2 <= stats.peak_in_flight <= 4

def test_zarr_through_proxy_counts_chunk_reads(s3_bucket: S3Bucket, s3_proxy: S3Proxy) -> None:
    url = s3_bucket.url_for("cube")
    opts = s3_proxy.storage_options()
    data = np.arange(8 * 8, dtype="uint16").reshape(8, 8)
    arr = zarr.create_array(open_store(url, storage_options=opts), name="b", shape=(8, 8), chunks=(4, 4),
                            dtype="uint16", compressors=None)
    arr[:] = data
    assert s3_proxy.snapshot().put == 1 + 1 + 4  # group and array metadata, four chunks

    reader = zarr.open_array(open_store(url, storage_options=opts, read_only=True), path="b")
    s3_proxy.reset_counters()
    np.testing.assert_array_equal(reader[:4, :4], data[:4, :4])
    stats = s3_proxy.snapshot()
    assert stats.get == 1 and stats.response_bytes == 4 * 4 * 2  # one uncompressed chunk


def test_latency_is_added_to_a_request(s3_bucket: S3Bucket, s3_proxy: S3Proxy) -> None:
    client = _client(s3_proxy.endpoint_url)
    client.put_object(Bucket=s3_bucket.name, Key="k", Body=b"x")
    s3_proxy.configure(latency_s=0.05)
    started = time.monotonic()
    client.head_object(Bucket=s3_bucket.name, Key="k")
    assert time.monotonic() - started >= 0.05


def test_bandwidth_caps_response_bodies(s3_bucket: S3Bucket, s3_proxy: S3Proxy) -> None:
    client = _client(s3_proxy.endpoint_url)
    body = bytes(200_000)
    client.put_object(Bucket=s3_bucket.name, Key="big", Body=body)
    s3_proxy.configure(bandwidth_bps=1_000_000)
    started = time.monotonic()
    assert client.get_object(Bucket=s3_bucket.name, Key="big")["Body"].read() == body
    assert time.monotonic() - started >= 0.2  # 200 kB at 1 MB/s


def test_signed_requests_verify_through_the_proxy() -> None:
    # A server that checks SigV4 signatures once three setup actions are done: the proxy must keep
    # the Host header (and path, query, body) exactly as the client signed them.
    with start_s3_server(env={"INITIAL_NO_AUTH_ACTION_COUNT": "3"}) as server:
        iam = boto3.client("iam", endpoint_url=server.endpoint_url, region_name=REGION,
                           aws_access_key_id="x", aws_secret_access_key="x")
        iam.create_user(UserName="cube")
        iam.put_user_policy(UserName="cube", PolicyName="s3", PolicyDocument=(
            '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}'))
        access = iam.create_access_key(UserName="cube")["AccessKey"]
        key, secret = access["AccessKeyId"], access["SecretAccessKey"]
        with start_s3_proxy(server.endpoint_url) as proxy:
            client = _client(proxy.endpoint_url, key=key, secret=secret)
            client.create_bucket(Bucket="signed")
            client.put_object(Bucket="signed", Key="a b/ü+x", Body=b"payload")
            fs = s3fs.S3FileSystem(**proxy.storage_options(key=key, secret=secret, skip_instance_cache=True))
            assert fs.cat("signed/a b/ü+x") == b"payload"
            fs.pipe("signed/from-s3fs", b"z" * 10_000)
            assert sorted(fs.ls("signed")) == ["signed/a b", "signed/from-s3fs"]
            with pytest.raises(ClientError, match="SignatureDoesNotMatch"):
                _client(proxy.endpoint_url, key=key, secret="wrong").get_object(Bucket="signed", Key="from-s3fs")
            assert proxy.snapshot().statuses.get(403) == 1


def test_injected_error_is_an_s3_error_document(s3_bucket: S3Bucket, s3_proxy: S3Proxy) -> None:
    client = _client(s3_proxy.endpoint_url)
    s3_proxy.fail_next(1, status=500, code="InternalError")
    with pytest.raises(ClientError) as info:
        client.list_objects_v2(Bucket=s3_bucket.name)
    err = info.value.response
    assert err["Error"]["Code"] == "InternalError"
    assert err["ResponseMetadata"]["HTTPStatusCode"] == 500
    assert client.list_objects_v2(Bucket=s3_bucket.name)["KeyCount"] == 0  # only one was injected


def test_faults_only_hit_the_given_methods(s3_bucket: S3Bucket, s3_proxy: S3Proxy) -> None:
    client = _client(s3_proxy.endpoint_url)
    s3_proxy.fail_next(1, methods=["PUT"])
    assert client.list_objects_v2(Bucket=s3_bucket.name)["KeyCount"] == 0
    with pytest.raises(ClientError, match="SlowDown"):
        client.put_object(Bucket=s3_bucket.name, Key="k", Body=b"1")
    client.put_object(Bucket=s3_bucket.name, Key="k", Body=b"1")
    stats = s3_proxy.snapshot()
    assert (stats.list, stats.put, stats.faults) == (1, 2, 1)
    with pytest.raises(ValueError, match="unknown request kinds"):
        s3_proxy.fail_next(1, methods=["FETCH"])


def test_random_faults_are_reproducible_with_a_seed(s3_bucket: S3Bucket, s3_proxy: S3Proxy) -> None:
    client = _client(s3_proxy.endpoint_url)
    client.put_object(Bucket=s3_bucket.name, Key="k", Body=b"1")

    def pattern() -> list[bool]:
        s3_proxy.fail_randomly(0.5, methods=["HEAD"], seed=7)
        outcome = []
        for _ in range(16):
            try:
                client.head_object(Bucket=s3_bucket.name, Key="k")
                outcome.append(True)
            except ClientError:
                outcome.append(False)
        return outcome

    first, second = pattern(), pattern()
    assert first == second and 0 < first.count(False) < 16
    s3_proxy.clear_faults()
    client.head_object(Bucket=s3_bucket.name, Key="k")


@pytest.mark.parametrize(("status", "code"), [(503, "SlowDown"), (500, "InternalError")])
def test_open_store_write_survives_transient_errors(
    s3_bucket: S3Bucket, s3_proxy: S3Proxy, status: int, code: str
) -> None:
    store = open_store(s3_bucket.url_for("cube"), storage_options=s3_proxy.storage_options())
    s3_proxy.reset_counters()  # open_store's check that the endpoint answers
    s3_proxy.fail_next(2, status=status, code=code)
    write_bytes(store, "ledger.json", b"{}")  # open_store's botocore retries absorb both errors
    stats = s3_proxy.snapshot()
    assert (stats.put, stats.faults) == (3, 2)
    assert stats.statuses == {status: 2, 200: 1}
    assert read_bytes(store, "ledger.json") == b"{}"


def test_open_store_fails_cleanly_when_every_request_fails(s3_bucket: S3Bucket, s3_proxy: S3Proxy) -> None:
    opts = s3_proxy.storage_options(attempts=2, skip_instance_cache=True)
    store = open_store(s3_bucket.url_for("cube"), storage_options=opts)
    store.fs.retries = 2  # s3fs's own retry loop around botocore's (5 by default)
    s3_proxy.fail_randomly(1.0)
    started = time.monotonic()
    with pytest.raises(OSError):
        write_bytes(store, "chunk", b"x" * 100)
    assert time.monotonic() - started < 30
    stats = s3_proxy.snapshot()
    assert stats.put == stats.faults == 4  # 2 s3fs attempts x 2 botocore attempts, then give up
    s3_proxy.clear_faults()
    assert s3_bucket.server.client().list_objects_v2(Bucket=s3_bucket.name).get("KeyCount", 0) == 0


def test_create_bytes_conflicts_through_the_proxy(s3_bucket: S3Bucket, s3_proxy: S3Proxy) -> None:
    store = open_store(s3_bucket.url_for("cube"), storage_options=s3_proxy.storage_options())
    create_bytes(store, "commits/0001.json", b"first")
    with pytest.raises(CommitConflictError, match=r"commits/0001\.json"):
        create_bytes(store, "commits/0001.json", b"second")
    assert read_bytes(store, "commits/0001.json") == b"first"
    assert s3_proxy.snapshot().statuses.get(412) == 1


def test_proxy_stops_and_refuses_connections(s3_server: S3Server) -> None:
    proxy = start_s3_proxy(s3_server.endpoint_url, latency_s=0.0)
    url = proxy.endpoint_url
    assert _client(url).list_buckets()["Buckets"] is not None
    proxy.stop()
    proxy.stop()  # idempotent
    with pytest.raises(RuntimeError, match="not running"):
        _ = proxy.endpoint_url
    with pytest.raises(Exception, match="Could not connect"):
        _client(url).list_buckets()


def test_multipart_upload_counts_posts_and_parts(s3_bucket: S3Bucket, s3_proxy: S3Proxy) -> None:
    from boto3.s3.transfer import TransferConfig

    body = bytes(range(256)) * (6 * 2**20 // 256)
    config = TransferConfig(multipart_threshold=5 * 2**20, multipart_chunksize=5 * 2**20, use_threads=False)
    _client(s3_proxy.endpoint_url).upload_fileobj(io.BytesIO(body), s3_bucket.name, "mpu", Config=config)
    stats = s3_proxy.snapshot()
    assert (stats.post, stats.put) == (2, 2)  # create and complete; two parts
    assert stats.request_bytes >= len(body)
    got = s3_bucket.server.client().get_object(Bucket=s3_bucket.name, Key="mpu")["Body"].read()
    assert got == body


def test_stop_is_bounded_with_a_request_in_flight(s3_bucket: S3Bucket, s3_server: S3Server) -> None:
    s3_server.client().put_object(Bucket=s3_bucket.name, Key="big", Body=bytes(1_000_000))
    proxy = start_s3_proxy(s3_server.endpoint_url, bandwidth_bps=10_000)  # 100 s for the object
    errors: list[BaseException] = []

    def slow_read() -> None:
        try:
            _client(proxy.endpoint_url).get_object(Bucket=s3_bucket.name, Key="big")["Body"].read()
        except Exception as exc:
            errors.append(exc)

    reader = threading.Thread(target=slow_read, daemon=True)
    reader.start()
    while proxy.snapshot().response_bytes == 0:
        time.sleep(0.01)
    started = time.monotonic()
    proxy.stop()
    assert time.monotonic() - started < 5
    reader.join(10)
    assert not reader.is_alive() and errors  # the client saw the cut, it did not hang


def test_stop_ends_the_tasks_left_on_its_loop(s3_server: S3Server) -> None:
    """A task still pending on the proxy's loop once it has shut down is cancelled and let end, as asyncio.run does:
    it was destroyed with the loop, pending ("Task was destroyed but it is pending!" at the end of a session)."""
    proxy = start_s3_proxy(s3_server.endpoint_url)
    left = asyncio.run_coroutine_threadsafe(asyncio.sleep(600), proxy._loop)
    proxy.stop()
    assert left.cancelled()


def test_answers_cut_off_hidden_objects_conditions_and_pages(s3_bucket: S3Bucket, s3_proxy: S3Proxy) -> None:
    client = _client(s3_proxy.endpoint_url)
    for i in range(5):
        client.put_object(Bucket=s3_bucket.name, Key=f"k{i}", Body=b"x" * 1000)
    s3_proxy.cut_next(1, keep=0.25)  # the headers say 1000 bytes, 250 come, the connection closes
    with pytest.raises(HTTPClientError, match=r"IncompleteRead\(250 bytes read, 750 more expected\)"):
        client.get_object(Bucket=s3_bucket.name, Key="k0")["Body"].read()
    assert client.get_object(Bucket=s3_bucket.name, Key="k0")["Body"].read() == b"x" * 1000
    s3_proxy.hide_next(1, path_contains="/k1")
    with pytest.raises(ClientError, match=r"\(404\) when calling the HeadObject"):  # a HEAD has no body
        client.head_object(Bucket=s3_bucket.name, Key="k1")
    client.head_object(Bucket=s3_bucket.name, Key="k1")
    s3_proxy.conditional_writes("refused")
    with pytest.raises(ClientError, match="NotImplemented"):
        client.put_object(Bucket=s3_bucket.name, Key="k2", Body=b"y", IfNoneMatch="*")
    s3_proxy.conditional_writes("ignored")
    client.put_object(Bucket=s3_bucket.name, Key="k2", Body=b"y", IfNoneMatch="*")  # replaced: no 412
    assert client.get_object(Bucket=s3_bucket.name, Key="k2")["Body"].read() == b"y"
    s3_proxy.clear_faults()
    with pytest.raises(ClientError, match="PreconditionFailed"):
        client.put_object(Bucket=s3_bucket.name, Key="k2", Body=b"z", IfNoneMatch="*")
    s3_proxy.configure(max_keys=2)
    first = client.list_objects_v2(Bucket=s3_bucket.name)
    assert first["KeyCount"] == 2 and first["IsTruncated"]
    pages = list(client.get_paginator("list_objects_v2").paginate(Bucket=s3_bucket.name))
    assert [k["Key"] for p in pages for k in p["Contents"]] == [f"k{i}" for i in range(5)] and len(pages) == 3
    s3_proxy.configure(max_keys=None)
    s3_proxy.unlist("k3")  # a listing that lags behind a write, once
    assert [k["Key"] for k in client.list_objects_v2(Bucket=s3_bucket.name)["Contents"]] == ["k0", "k1", "k2", "k4"]
    assert len(client.list_objects_v2(Bucket=s3_bucket.name)["Contents"]) == 5
