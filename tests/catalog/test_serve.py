"""``cardcube catalog serve``: the catalog and the Zarr data over HTTP, browsable, with CORS."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from urllib.parse import urljoin

import httpx
import numpy as np
import pytest
import zarr
from zarr.storage import FsspecStore

from cardcube.testing.served import ServedCommand
from catalog.serve import _safe_key
from tests.catalog.conftest import WINDOWS


@pytest.fixture(scope="module")
def served(base_cube):
    server = ServedCommand(["catalog", "serve", "--cube", base_cube], ready="/catalog.json")
    yield server
    server.close()


@pytest.fixture
def client(served):
    return served.http


def link(doc: dict, rel: str) -> str:
    return next(li["href"] for li in doc["links"] if li["rel"] == rel)


def test_ranges_head_and_cors(client, base_cube):
    key = "s2/31UFU/cube.zarr/zarr.json"
    whole = (base_cube / key).read_bytes()
    r = client.get(f"/{key}")
    assert r.status_code == 200 and r.content == whole and r.headers["access-control-allow-origin"] == "*"
    assert r.headers["content-type"].startswith("application/json")
    item = client.get("/s2/31UFU/s2-31UFU.json")  # as the catalog's links to it say
    assert item.status_code == 200 and item.headers["content-type"].startswith("application/geo+json")
    post = client.post(f"/{key}", content=b"{}")  # read-only: a 405 a page of another origin can read too
    assert post.status_code == 405 and post.headers["access-control-allow-origin"] == "*" and "GET" in \
        post.headers["allow"]
    r = client.get(f"/{key}", headers={"Range": "bytes=10-19"})
    assert r.status_code == 206 and r.content == whole[10:20]
    assert r.headers["content-range"] == f"bytes 10-19/{len(whole)}"
    assert client.get(f"/{key}", headers={"Range": "bytes=-5"}).content == whole[-5:]
    assert client.get(f"/{key}", headers={"Range": "bytes=7-"}).content == whole[7:]
    assert client.get(f"/{key}", headers={"Range": f"bytes={len(whole)}-"}).status_code == 416
    head = client.head(f"/{key}")
    assert head.status_code == 200 and int(head.headers["content-length"]) == len(whole) and not head.content
    pre = client.options(f"/{key}", headers={"Origin": "https://radiantearth.github.io",
                                             "Access-Control-Request-Method": "GET"})
    assert pre.status_code == 204 and pre.headers["access-control-allow-origin"] == "*"


RANGES = [  # (Range header, status, the object's bytes answered)
    ("bytes=2-4", 206, slice(2, 5)),
    ("BYTES=2-4", 206, slice(2, 5)),  # a range unit is case-insensitive
    ("bytes=5-999999", 206, slice(5, None)),  # the object's last byte, at the most
    ("bytes=0-1,5-9", 200, slice(None)),  # a set of ranges: ignored, as a server may (one body, not multipart)
    ("bytes=5-2", 200, slice(None)),  # invalid ranges: ignored (RFC 9110 14.1.1, 14.2)
    ("bytes=", 200, slice(None)),
    ("bytes=-", 200, slice(None)),
    ("items=0-1", 200, slice(None)),  # a unit the server does not know: ignored
    ("bytes=0-" + "9" * 5000, 200, slice(None)),  # a position past any object: ignored (was a 500)
    ("bytes=999999-", 416, None),  # valid, but past the object's end
    ("bytes=-0", 416, None),  # the last 0 bytes: none
]


@pytest.mark.parametrize(("header", "status", "part"), RANGES, ids=[header[:20] for header, _, _ in RANGES])
def test_only_a_range_past_the_end_is_refused_one_the_server_cannot_use_is_ignored(client, base_cube, header,
                                                                                  status, part):
    """A Range header a server does not take (several ranges, another unit, a malformed one) is ignored: the whole
    object, as HTTP says (RFC 9110 14.2), not a 416, which says the object has no such bytes."""
    key = "s2/31UFU/cube.zarr/zarr.json"
    whole = (base_cube / key).read_bytes()
    r = client.get(f"/{key}", headers={"Range": header})
    assert r.status_code == status and r.headers["access-control-allow-origin"] == "*", r.text
    if status == 416:
        assert r.headers["content-range"] == f"bytes */{len(whole)}"
    else:
        assert r.content == whole[part] and ("content-range" in r.headers) == (status == 206)


def test_not_found_and_no_escape(client):
    assert client.get("/nothing.json").status_code == 404
    assert client.get("/s2/../../etc/passwd").status_code == 404
    assert client.get("/%2e%2e/etc/passwd").status_code == 404
    # clients normalise "..", so check the guard itself too
    assert [_safe_key(k) for k in ("../etc/passwd", "s2/../../x", "/etc/passwd", "a//b", "s2/./x")] == [None] * 5
    assert _safe_key("s2/31UFU/cube.zarr/zarr.json") == "s2/31UFU/cube.zarr/zarr.json"
    assert _safe_key("s2/\x00/x") is None and _safe_key("s2/" + "x" * 300) is None
    assert [client.get(p).status_code for p in ("/%00", "/s2/%00/x", "/s2/" + "x" * 5000)] == [404] * 3  # were 500s
    r = client.get("/", follow_redirects=False)
    assert r.status_code in (302, 307) and r.headers["location"] == "catalog.json"  # under a proxy's prefix too


def test_a_path_longer_than_any_file_name_is_not_found(client):
    """A path of short enough parts, but longer than a file's path can be (PATH_MAX, 4,096 bytes), was a 502 'cannot
    read' of the store, as if it failed, with the path in it: no key is that long (1,024 bytes at the most on S3)."""
    r = client.get("/" + "/".join(["x" * 250] * 20))
    assert r.status_code == 404 and r.headers["access-control-allow-origin"] == "*"
    assert client.get("/" + "/".join(["x" * 250] * 20) + "/").status_code == 404  # as a folder


def test_parcel_layers_and_the_writer_lock_are_not_published(base_cube, tmp_path, request):
    """An extraction keeps its label layers (the declared parcels' ids and outlines) beside the cube, and an
    ingest its lock (who writes, from where): neither is the catalog's to publish, listed or fetched."""
    cube = Path(shutil.copytree(base_cube, tmp_path / "cube"))
    for key in ("_parcels/31UFU/0123456789abcdef/index.parquet", "s2/_lock.json"):
        (cube / key).parent.mkdir(parents=True, exist_ok=True)
        (cube / key).write_bytes(b"secret")
    server = ServedCommand(["catalog", "serve", "--cube", cube], ready="/catalog.json")
    request.addfinalizer(server.close)
    client = server.http
    for path in ("/_parcels/31UFU/0123456789abcdef/index.parquet", "/_parcels/", "/_parcels", "/_parcels/31UFU/",
                 "/s2/_lock.json"):
        r = client.get(path)
        assert r.status_code == 404 and b"secret" not in r.content, path
    listing = client.get("/s2/")
    assert listing.status_code == 200 and "31UFU/" in listing.text and "_lock" not in listing.text
    assert client.get("/s2/collection.json").status_code == 200


def test_a_document_replaced_while_it_is_served_is_answered_whole(cube, monkeypatch):
    """Every ingest replaces the catalog's documents and the arrays' zarr.json. One replaced by a longer or shorter one
    between the server's look at its size and its read went out with the old size as its Content-Length: the client
    got a broken connection (httpx: 'peer closed connection without sending complete message body'). The length
    is the bytes read, as the ingest's rename makes them one document or the other, never a mix."""
    import threading

    import uvicorn

    from cardcube.serving import listen
    from catalog import serve

    path = cube / "s2" / "collection.json"
    longer = path.read_bytes().replace(b'"links"', b'"cardcube:note": "' + b"x" * 5000 + b'", "links"')
    read = serve._read

    def replaced_meanwhile(store, key, request):  # an ingest publishing now: its rename between size and read
        path.write_bytes(longer)
        return read(store, key, request)

    monkeypatch.setattr(serve, "_read", replaced_meanwhile)
    sock = listen("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(serve.make_app(cube), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{sock.getsockname()[1]}/", timeout=30) as client:
            while not server.started:
                thread.join(0.01)
            r = client.get("/s2/collection.json")
            assert r.status_code == 200 and r.content == longer
    finally:
        server.should_exit = True
        thread.join()


def test_a_root_without_a_catalog_is_refused_at_start(tmp_path):
    with pytest.raises(AssertionError, match=f"no STAC catalog at .*{tmp_path.name}: catalog.json is missing"):
        ServedCommand(["catalog", "serve", "--cube", tmp_path], ready="/catalog.json", timeout=30)


def test_serve_subprocess_is_browsable(served, base_cube):
    base = served.base
    root_resp = httpx.get(base + "catalog.json", headers={"Origin": "http://example.org"})
    assert root_resp.status_code == 200 and root_resp.headers["access-control-allow-origin"] == "*"
    root = root_resp.json()
    coll_url = urljoin(base + "catalog.json", next(
        li["href"] for li in root["links"] if li["rel"] == "child" and li["href"].startswith("./s2/")))
    coll = httpx.get(coll_url).json()
    assert coll["type"] == "Collection" and coll["id"] == "sentinel-2-l2a-cube"
    item_url = urljoin(coll_url, link(coll, "item"))
    item = httpx.get(item_url).json()
    assert item["type"] == "Feature" and urljoin(item_url, link(item, "root")) == base + "catalog.json"
    zarr_url = urljoin(item_url, item["assets"]["data"]["href"])
    meta = httpx.get(zarr_url + "/zarr.json")
    assert meta.status_code == 200 and meta.json()["node_type"] == "group"
    assert meta.headers["access-control-allow-origin"] == "*"
    # a Zarr reader gets the same pixels over HTTP as from the folder (three dates: all in the hot buffer)
    tile = item["properties"]["cardcube:tile"]
    remote = zarr.open_array(FsspecStore.from_url(zarr_url + "/hot/r10m/B04", read_only=True), mode="r")
    local = zarr.open_array(str(base_cube / "s2" / tile / "cube.zarr" / "hot" / "r10m" / "B04"), mode="r")
    assert remote.shape[0] == 3
    a = item["properties"]["proj:transform"]
    row, col = round((a[5] - WINDOWS[tile][1]) / a[0]), round((WINDOWS[tile][0] - a[2]) / a[0])
    window = (slice(0, 3), slice(row, row + 40), slice(col, col + 40))
    assert remote.shape == local.shape and np.array_equal(remote[window], local[window])
    assert (remote[window] > 0).all()  # the scenes' pixels, not fill values


def test_xarray_opens_an_item_zarr_group_over_http(served, base_cube):
    """A Zarr reader opening an item's group over HTTP finds its arrays: a folder of the cube answers with a
    listing of its members (as a plain HTTP file server does), which fsspec reads; no listing, no arrays."""
    import xarray as xr

    url = served.base + "s2/31UFU/cube.zarr/hot/r10m"
    remote = xr.open_zarr(url, consolidated=False)
    local = xr.open_zarr(base_cube / "s2" / "31UFU" / "cube.zarr" / "hot" / "r10m", consolidated=False)
    assert {"B02", "B03", "B04", "B08"} <= set(remote.data_vars) and set(remote.data_vars) == set(local.data_vars)
    window = {"time": slice(0, 3), "y": slice(5004, 5044), "x": slice(10_000, 10_040)}  # the scenes' pixels
    assert remote.B04.isel(window).equals(local.B04.isel(window)) and int(remote.B04.isel(window).count()) == 4800
    listing = served.http.get("/s2/31UFU/cube.zarr/")
    assert listing.status_code == 200 and listing.headers["content-type"].startswith("text/html")
    assert {f'href="{n}"' for n in ("hot/", "r10m/", "zarr.json")} <= set(  # relative: behind a proxy's prefix too
        re.findall(r'href="[^"]*"', listing.text))
    head = served.http.head("/s2/31UFU/cube.zarr/")
    assert head.status_code == 200 and head.headers["content-length"] == str(len(listing.content))
    assert served.http.get("/s2/31UFU/cube.zarr/nothing/").status_code == 404


def test_a_cube_on_a_web_server_listing_no_folders_is_told_what_to_serve_it_with(base_cube):
    """The cube's folder published as it is by a web server that lists no folders (nginx without autoindex: a folder
    is a 403): its catalog routes (links only), but reading the cube failed with aiohttp's own ClientResponseError
    (no CardcubeError: a traceback on the command line), since the ledger's versions are found by listing its folder.
    It is a StoreError saying so, and what to serve the cube with."""
    import functools
    import http.server
    import threading

    from cardcube.errors import StoreError
    from catalog.route import find_tiles
    from cube.dataset import open_cube

    class NoListings(http.server.SimpleHTTPRequestHandler):
        def send_head(self):
            if os.path.isdir(self.translate_path(self.path)):
                self.send_error(403)
                return None
            return super().send_head()

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(NoListings, directory=base_cube))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}"
    try:
        assert [r.tile for r in find_tiles(url, "s2")] == ["31UFU", "31UGU"]
        with pytest.raises(StoreError, match=rf"^cannot list s2/_ledger/ in {url}: the server answered 403 Forbidden: "
                                             r"it lists no folders, .* `cardcube catalog serve --cube DIR`"):
            open_cube(url, "s2")
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("where", ["folder", "s3"])
def test_folder_listings_are_the_same_on_s3(where, tmp_path, request):
    """On S3 a folder is a prefix, which s3fs says "exists" (size 0) as a file does, and an object is listed as
    itself: a listing must still mark sub-folders with ``/``, answer without the slash (as fsspec asks), and
    a file is no folder."""
    from cardcube.storage import open_store, write_bytes

    env = None
    if where == "s3":
        bucket = request.getfixturevalue("s3_bucket")
        url, options, env = bucket.url_for("cube"), bucket.storage_options(), bucket.server.environment()
    else:
        url, options = str(tmp_path / "cube"), None
    store = open_store(url, storage_options=options)
    for key in ("a/zarr.json", "a/b/zarr.json", "a/b/c/0/0", "catalog.json"):
        write_bytes(store, key, b"{}")
    server = ServedCommand(["catalog", "serve", "--cube", url], ready="/catalog.json", env=env)
    request.addfinalizer(server.close)
    client = server.http
    for path in ("/a", "/a/"):  # a browser resolves each link against the address it lands on
        r = client.get(path, follow_redirects=True)
        links = [urljoin(str(r.url), h) for h in re.findall(r'href="([^"]*)"', r.text)]
        assert r.status_code == 200 and links == [f"{client.base_url}a/b/", f"{client.base_url}a/zarr.json"], \
            (path, r.text)
    moved = client.get("/a/b")  # a folder without its slash: sent to it, relatively (a proxy's prefix is kept)
    assert moved.status_code in (302, 307) and moved.headers["location"] == "b/"
    assert re.findall(r'href="([^"]*)"', client.get("/a/b/").text) == ["c/", "zarr.json"]
    assert client.get("/a/zarr.json").content == b"{}"
    assert client.get("/a/zarr.json/").status_code == 404
    assert client.get("/a/nothing/").status_code == 404


@pytest.mark.s3
def test_a_store_out_of_reach_is_a_503_and_a_failing_one_a_502_that_a_stac_browser_reads(base_cube, s3_bucket,
                                                                                        s3_proxy, request):
    """The cube's store stops answering, goes away, answers errors, while ``catalog serve`` runs: each request is
    answered within --store-timeout (not after a minute of retries), 503 with Retry-After while the store is out of
    reach, 502 while it fails, in JSON naming the store and with the CORS header (a bare 500 without it was a CORS
    failure to a STAC browser on another origin, not an outage), on a connection kept open; the store back, it
    answers by itself."""
    client = s3_bucket.server.client()
    for key in ("catalog.json", "s2/collection.json"):
        client.upload_file(str(base_cube / key), s3_bucket.name, f"cube/{key}")
    cube = s3_bucket.url_for("cube")
    server = ServedCommand(["catalog", "serve", "--cube", cube, "--store-timeout", "1"], ready="/catalog.json",
                           env=s3_bucket.server.environment(s3_proxy.endpoint_url))
    request.addfinalizer(server.close)
    origin = {"Origin": "https://radiantearth.github.io"}

    def get() -> httpx.Response:
        r = server.http.get("/s2/collection.json", headers=origin, timeout=30)
        assert r.headers["access-control-allow-origin"] == "*", r.text
        return r

    def out_of_reach(r: httpx.Response) -> None:
        assert r.status_code == 503 and int(r.headers["retry-after"]) > 0, r.text
        assert r.json()["error"] == "StoreUnavailable"
        assert f"s2/collection.json from {cube}: the store cannot be reached or does not answer" in r.json()["detail"]

    assert get().status_code == 200
    s3_proxy.configure(latency_s=600)  # connections taken, nothing answered: a hung store
    out_of_reach(get())
    s3_proxy.configure(latency_s=0)
    assert get().status_code == 200
    port = s3_proxy.port
    s3_proxy.stop()  # gone: connections refused
    out_of_reach(get())
    s3_proxy.start(port=port)
    s3_proxy.fail_randomly(1.0, status=500, code="InternalError")  # there, but failing: no Retry-After
    r = get()
    assert r.status_code == 502 and r.json()["error"] == "Store" and "retry-after" not in r.headers, r.text
    assert f"s2/collection.json from {cube}" in r.json()["detail"]
    s3_proxy.clear_faults()
    assert get().json()["id"] == "sentinel-2-l2a-cube"
    log = os.pread(server.log.fileno(), 1 << 20, 0).decode(errors="replace")
    assert "Exception in ASGI application" not in log  # answered by the app: uvicorn kept the connection
    # and logged for the operator, whose log held nothing of the outage its clients were answered
    assert log.count("GET /s2/collection.json: 503 StoreUnavailable: ") == 2, log
    assert log.count("GET /s2/collection.json: 502 Store: ") == 1, log
