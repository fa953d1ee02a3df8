"""Store locations as messages and documents name them."""

from __future__ import annotations

import functools
import http.server
import threading

import pytest

from cardcube.errors import CubeNotFoundError
from cardcube.storage import open_store, store_url


def test_an_http_location_is_named_as_given(tmp_path):
    """fsspec's HTTP file system keeps the whole URL as the path: messages named "http://https://host/cube"."""
    from cube.dataset import open_cube

    assert store_url(open_store("https://example.org/cubes/nl", read_only=True)) == "https://example.org/cubes/nl"
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/nothing"
        with pytest.raises(CubeNotFoundError, match=f"no 's2' cube at {url}: no committed version$"):
            open_cube(url)
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(("given", "read"), [
    ("S3://bucket/cube", "s3://bucket/cube"), ("s3a://bucket/cube", "s3://bucket/cube"),
    ("s3://bucket//x/./cube", "s3://bucket/x/cube"), ("s3://bucket/", "s3://bucket"), ("/data/cube", "/data/cube"),
    ("https://host/a//b", "https://host/a//b")])
def test_urls_are_read_one_way(given, read):
    from cardcube.storage import normalise_url

    assert normalise_url(given) == read


def test_an_object_key_is_read_as_it_is():
    from cardcube.storage import object_url

    assert object_url("S3A://bucket/src//B04.tif") == "s3://bucket/src//B04.tif"  # another object than src/B04.tif


@pytest.mark.parametrize("given", ["s3:/bucket/cube", "s3:bucket/cube", "S3:/bucket", "s3://bucket/a/../b",
                                   "https:/host/cube"])
def test_a_url_that_would_be_a_local_folder_or_climb_out_is_refused(given):
    from cardcube.errors import InvalidRequestError
    from cardcube.storage import normalise_url

    with pytest.raises(InvalidRequestError, match=r"missing a slash|no '\.\.'"):
        normalise_url(given)


@pytest.mark.parametrize("given", ["s3://", "s3:///cube", "S3:///", "s3a:///bucket/cube"])
def test_an_s3_url_without_its_bucket_is_refused(given):
    """``s3:///cube`` read the bucket "cube" (a cube written where nobody meant it, if that bucket exists), ``s3://``
    the bucket "" ("the bucket  does not exist")."""
    from cardcube.errors import InvalidRequestError
    from cardcube.storage import normalise_url

    with pytest.raises(InvalidRequestError, match=r"names no bucket: write s3://BUCKET/PREFIX, e\.g\. s3://my-bucket/"):
        normalise_url(given)


def test_gdal_opens_an_s3_key_with_url_syntax_literally():
    from cardcube.source_files import gdal_path

    assert gdal_path("s3://src/batch#1/B04.tif") == "/vsis3/src/batch#1/B04.tif"  # rasterio ended the key at '#'
    assert gdal_path("s3a://src/a//B04.tif") == "s3://src/a//B04.tif"  # rasterio's AWS session; the key as it is
    assert gdal_path("/tmp/spool/B04.tif") == "/tmp/spool/B04.tif"
    assert gdal_path("https://host/B04.tif?sig=1") == "https://host/B04.tif?sig=1"


def test_a_store_names_its_s3_endpoint_given_or_from_the_environment(s3_bucket, monkeypatch, tmp_path):
    """One bucket path on two endpoints is two stores (a Dataset's dask names hold the endpoint): the endpoint of
    the options given, of AWS_ENDPOINT_URL, through a wrapper; none for a folder."""
    from cardcube.counting_store import CountingStore
    from cardcube.storage import store_endpoint

    endpoint = s3_bucket.server.endpoint_url
    given = open_store(s3_bucket.url_for("cube"), storage_options=s3_bucket.server.storage_options())
    assert store_endpoint(given) == store_endpoint(CountingStore(given)) == endpoint
    for name, value in s3_bucket.server.environment().items():
        monkeypatch.setenv(name, value)
    assert store_endpoint(open_store(s3_bucket.url_for("cube"))) == endpoint
    assert store_endpoint(open_store(tmp_path)) is None


def test_s3a_and_a_missing_bucket_over_a_real_s3_server(s3_bucket, monkeypatch):
    from cardcube.errors import StoreError
    from cardcube.storage import list_children, list_each, write_bytes

    for name, value in s3_bucket.server.environment().items():
        monkeypatch.setenv(name, value)
    store = open_store(s3_bucket.url_for("cube").replace("s3://", "s3a://"))
    assert store_url(store) == s3_bucket.url_for("cube") and not store.fs.dircache.use_listings_cache  # s3 options
    write_bytes(store, "a/zarr.json", b"{}")
    assert list_children(store, "a") == ["zarr.json"] and list_children(store, "nothing") == []
    write_bytes(store, "a/c/3/0", b"x")
    write_bytes(store, "a/c/1/0", b"x")
    assert list_each(store, ["a/", "a/c/", "nothing/"]) == {"a/": ["c", "zarr.json"], "a/c/": ["1", "3"],
                                                            "nothing/": []}  # listed at once, each its own
    with pytest.raises(StoreError, match="the bucket no-such-bucket-here does not exist"):  # was an empty list
        list_children(open_store("s3://no-such-bucket-here/cube"), "_parcels")
    with pytest.raises(StoreError, match=r"list a/, b/ and 1 more in .* no-such-bucket-here does not exist"):
        list_each(open_store("s3://no-such-bucket-here/cube"), ["a/", "b/", "c/"])
    with pytest.raises(StoreError, match=r"cannot list the top level in s3://no-such-bucket-here/ex: the bucket"):
        list_children(open_store("s3://no-such-bucket-here/ex"), "")  # it said "cannot list  in" (an output's root)


def test_an_endpoint_that_accepts_connections_and_never_answers_is_named(monkeypatch):
    """A hung gateway held a batch command for as long as botocore's and s3fs's retries go (tens of minutes)."""
    import socket

    import cardcube.endpoint_check
    from cardcube.errors import StoreUnavailableError

    listener = socket.create_server(("127.0.0.1", 0))
    monkeypatch.setattr(cardcube.endpoint_check, "ANSWER_TIMEOUT_S", 0.5)
    endpoint = f"http://127.0.0.1:{listener.getsockname()[1]}"
    try:
        with pytest.raises(StoreUnavailableError, match="accepts connections but sends no answer within"):
            open_store("s3://bucket/cube", storage_options={"endpoint_url": endpoint})
    finally:
        listener.close()


def test_credentials_that_may_only_list_a_prefix_see_an_empty_listing_not_a_missing_bucket(s3_bucket, s3_proxy):
    """HEAD on the bucket is refused (403) to keys allowed to list a prefix only: that is no missing bucket (s3fs's
    exists() said it was, and an extraction into a new prefix failed)."""
    from cardcube.storage import list_children

    store = open_store(s3_bucket.url_for("cube"), storage_options=s3_proxy.storage_options())
    s3_proxy.fail_next(4, status=403, code="AccessDenied", methods=["HEAD", "GET"])  # not LIST
    assert list_children(store, "_parcels") == []


def test_a_delete_s3_refuses_or_fails_key_by_key_raises_and_a_transient_failure_is_tried_again(s3_bucket, s3_proxy):
    """S3 answers a DeleteObjects with HTTP 200 and an error per key it refuses (a bucket policy, Object Lock) or
    fails (InternalError); s3fs, and so zarr, left those unread, and every delete of cardcube passed for done (an
    expire went on to delete the data of a version whose record stayed; a killed run's leftovers were read as the
    next run's date)."""
    from cardcube.errors import StoreError
    from cardcube.storage import delete_key, delete_prefix, list_keys, write_bytes

    store = open_store(s3_bucket.url_for("cube"), storage_options=s3_proxy.storage_options())
    for key in ("p/a", "p/b/1", "p/c", "q"):
        write_bytes(store, key, b"x")
    s3_proxy.refuse_deletes("p/b/")
    with pytest.raises(StoreError, match=r"S3 did not delete 1 object\(s\) under s3://.*, among them "
                                         r"cube/p/b/1: AccessDenied"):
        delete_prefix(store, "p")
    assert list_keys(store, "") == ["p/b/1", "q"]  # the others went
    s3_proxy.refuse_deletes("q", code="AccessDenied")
    with pytest.raises(StoreError, match="cube/q: AccessDenied"):
        delete_key(store, "q")
    s3_proxy.refuse_deletes("cube/", code="InternalError", times=2)  # failed twice, deleted the third time
    delete_prefix(store, "p")
    delete_key(store, "q")
    assert list_keys(store, "") == [] and s3_proxy.refused == ["cube/p/b/1", "cube/q", *["cube/p/b/1"] * 2]
    delete_key(store, "nothing-there")  # as on a folder: nothing to do


@pytest.mark.parametrize("where", ["folder", "s3"])
def test_the_tails_of_objects_are_their_last_bytes_or_all_of_a_short_one(where, s3_bucket, tmp_path):
    """``read_tails`` (a Parquet file's footer without its data): the last bytes of each object, the whole of one
    shorter than asked, None for one that is absent, on a folder and on a real S3 server alike."""
    from cardcube.storage import read_tails, write_bytes

    store = open_store(tmp_path / "cube" if where == "folder" else s3_bucket.url_for("tails"),
                       storage_options=None if where == "folder" else s3_bucket.storage_options())
    write_bytes(store, "a/long.bin", bytes(range(256)) * 40)
    write_bytes(store, "a/short.bin", b"PAR1")
    assert read_tails(store, ["a/long.bin", "a/short.bin", "a/none.bin"], 100) == [
        (bytes(range(256)) * 40)[-100:], b"PAR1", None]
    assert read_tails(store, [], 100) == []


def test_an_endpoint_given_in_client_kwargs_wins_over_the_environments(s3_bucket, monkeypatch):
    """s3fs's ``client_kwargs={"endpoint_url": ...}`` (as the tests' and many users' options name it) beside an
    ``AWS_ENDPOINT_URL`` of another store (the cube's Ceph, the output elsewhere) failed with aiobotocore's
    "got multiple values for keyword argument 'endpoint_url'" at the first request: the given one is used."""
    from cardcube.storage import read_bytes, write_bytes

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # another store, which does not answer here
    options = s3_bucket.storage_options()
    assert options["client_kwargs"]["endpoint_url"] == s3_bucket.server.endpoint_url
    store = open_store(s3_bucket.url_for("given"), storage_options=options)
    write_bytes(store, "a/zarr.json", b"{}")
    assert read_bytes(open_store(s3_bucket.url_for("given"), storage_options=options, read_only=True),
                      "a/zarr.json") == b"{}"


def test_a_missing_bucket_behind_an_endpoint_with_a_path_names_the_path(s3_bucket):
    """The bucket's own URL given as the endpoint (``http://gateway:7480/BUCKET``, as a browser or console shows it):
    the S3 client puts the path before the bucket, and the error said only that the bucket, which exists, does not."""
    from cardcube.errors import StoreError
    from cardcube.storage import list_children

    endpoint = f"{s3_bucket.server.endpoint_url}/{s3_bucket.name}"
    store = open_store(s3_bucket.url_for("cube"), storage_options=s3_bucket.storage_options() | {
        "client_kwargs": {"endpoint_url": endpoint}})
    with pytest.raises(StoreError, match=rf"the endpoint {endpoint} has a path, /{s3_bucket.name}, which the S3 "
                                         rf"client puts before the bucket: give the gateway's root, "
                                         rf"{s3_bucket.server.endpoint_url}"):
        list_children(store, "_parcels")


def test_cardcube_s_own_retries_are_botocore_s_standard_mode(monkeypatch, tmp_path):
    """Adaptive mode's client-side rate limiter made an ingest through a store answering SlowDown 3x as slow, no more
    often successful (benchmarks/results/2026-12-07/retry-modes): cardcube's own retries are standard, 9 tries."""
    from cardcube.storage import s3_options

    for name in ("AWS_MAX_ATTEMPTS", "AWS_RETRY_MODE", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    given = s3_options({})
    assert given["config_kwargs"] == {"retries": {"total_max_attempts": 9, "mode": "standard"}}
    given["config_kwargs"]["retries"].update(max_attempts=2)  # as botocore edits the config it is given, in place
    assert s3_options({})["config_kwargs"] == {"retries": {"total_max_attempts": 9, "mode": "standard"}}
    monkeypatch.setenv("AWS_RETRY_MODE", "adaptive")  # the user's choice, read by botocore
    assert "config_kwargs" not in s3_options({})


@pytest.mark.parametrize("where", ["environment", "profile"])
def test_the_users_retry_settings_are_used_not_replaced(s3_bucket, s3_proxy, monkeypatch, tmp_path, where):
    """``AWS_MAX_ATTEMPTS`` and ``AWS_RETRY_MODE``, or a profile's ``max_attempts`` and ``retry_mode``, which every AWS
    tool reads, were replaced by cardcube's own retries (9 tries a request), given to the client: a user
    could give a busy store neither more tries nor fewer. They are used as set; without them, cardcube's."""
    from cardcube.errors import StoreError
    from cardcube.storage import read_bytes, write_bytes

    for name in ("AWS_MAX_ATTEMPTS", "AWS_RETRY_MODE", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    (tmp_path / "config").write_text("[default]\nregion = us-east-1\n")
    opts = s3_proxy.storage_options(skip_instance_cache=True)
    store = open_store(s3_bucket.url_for("cube"), storage_options=opts)
    s3_proxy.fail_next(3, status=500, code="InternalError", methods=["PUT"])
    write_bytes(store, "a.json", b"{}")  # cardcube's tries outlast three failures
    assert s3_proxy.snapshot().put == 4 and read_bytes(store, "a.json") == b"{}"
    if where == "environment":
        monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
        monkeypatch.setenv("AWS_RETRY_MODE", "standard")
    else:
        (tmp_path / "config").write_text("[default]\nregion = us-east-1\nmax_attempts = 2\nretry_mode = standard\n")
    store = open_store(s3_bucket.url_for("cube"), storage_options=opts)
    s3_proxy.reset_counters()
    s3_proxy.fail_next(3, status=500, code="InternalError", methods=["PUT"])
    with pytest.raises(StoreError, match=r"cannot write b.json to s3://\S+/cube \(after retries\).*internal error"):
        write_bytes(store, "b.json", b"{}")
    assert s3_proxy.snapshot().put == 2


def test_a_file_whose_answer_is_cut_off_midway_is_a_store_error(s3_bucket, s3_proxy):
    """A parcel file in a bucket whose answer the store cuts off midway, after s3fs's tries: aiohttp's
    ClientPayloadError came out as it was, a traceback from every command given --parcels s3://..."""
    from cardcube.errors import StoreUnavailableError
    from cardcube.source_files import local_copy

    s3_bucket.server.client().put_object(Bucket=s3_bucket.name, Key="lpis/parcels.gpkg", Body=b"x" * 100_000)
    s3_proxy.cut_next(10**6, keep=0.3)
    url = f"s3://{s3_bucket.name}/lpis/parcels.gpkg"
    with pytest.raises(StoreUnavailableError, match=rf"^cannot read {url}: the store cannot be reached or does not "
                                                    r"answer \(ClientPayloadError: "), \
            local_copy(url, storage_options=s3_proxy.storage_options()):
        pass
    s3_proxy.clear_faults()
    with local_copy(url, storage_options=s3_proxy.storage_options()) as copy:
        assert copy.read_bytes() == b"x" * 100_000
