from __future__ import annotations

import socket
import time

import numpy as np
import pytest
import zarr
from botocore.exceptions import ClientError

from cardcube.storage import list_keys, open_store, read_bytes, write_bytes
from cardcube.testing import fixtures
from cardcube.testing.fixtures import S3Bucket
from cardcube.testing.s3server import S3Server, s3fs_options, start_s3_server

s3_server, s3_bucket = fixtures.s3_server, fixtures.s3_bucket  # until tests/conftest.py loads the plugin

pytestmark = [pytest.mark.s3, pytest.mark.timeout(60)]


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def test_a_server_that_cannot_import_moto_says_so(tmp_path) -> None:
    """Without moto's server installed (cardcube's bench extra lacked it), every S3 benchmark ended in "moto S3 server
    exited with code 1 before listening", the child's ImportError gone with its stderr."""
    import os
    import tomllib
    from pathlib import Path

    (tmp_path / "moto").mkdir()
    (tmp_path / "moto" / "__init__.py").write_text("raise ModuleNotFoundError('No module named moto', name='moto')")
    path = os.pathsep.join([str(tmp_path), *filter(None, [os.environ.get("PYTHONPATH")])])
    with pytest.raises(RuntimeError, match=r"No module named moto; install moto\[server\]"):
        start_s3_server(env={"PYTHONPATH": path})
    extras = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    assert any(d.startswith("moto[server]") for d in extras["bench"])  # the benchmarks' S3 tiers run on it


def test_server_starts_answers_and_stop_frees_the_port() -> None:
    server = start_s3_server(buckets=["alpha", "beta"])
    try:
        assert server.endpoint_url == f"http://127.0.0.1:{server.port}"
        assert _answers(server.port)
        names = {b["Name"] for b in server.client().list_buckets()["Buckets"]}
        assert names == {"alpha", "beta"}
    finally:
        server.stop()
    assert server.process.returncode is not None
    assert not _answers(server.port)
    with socket.socket() as sock:  # the port is free again: for a new server (SO_REUSEADDR, as servers bind)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a closed connection's TIME_WAIT is no holder
        sock.bind(("127.0.0.1", server.port))


def test_context_manager_stops_the_server() -> None:
    with start_s3_server() as server:
        assert server.is_alive()
    assert not server.is_alive()


def test_server_stops_itself_after_its_lifetime() -> None:
    server = start_s3_server(max_lifetime_s=1.0)
    try:
        server.process.wait(timeout=15)
    finally:
        server.stop()
    assert not _answers(server.port)


def test_url_and_storage_options_shape(s3_server: S3Server) -> None:
    assert s3_server.url("bkt") == "s3://bkt"
    assert s3_server.url("bkt", "/a/b/") == "s3://bkt/a/b"
    opts = s3_server.storage_options()
    assert opts["client_kwargs"] == {"endpoint_url": s3_server.endpoint_url, "region_name": "us-east-1"}
    assert opts["key"] and opts["secret"]
    assert "config_kwargs" not in opts  # open_store's retry defaults apply
    tight = s3fs_options("http://127.0.0.1:1", attempts=2, skip_instance_cache=True)
    assert tight["config_kwargs"] == {"retries": {"total_max_attempts": 2, "mode": "standard"}}
    assert tight["skip_instance_cache"] is True and tight["use_listings_cache"] is False


_seen_buckets: list[str] = []


@pytest.mark.parametrize("run", [1, 2])
def test_each_test_gets_a_fresh_empty_bucket(s3_bucket: S3Bucket, run: int) -> None:
    client = s3_bucket.server.client()
    assert client.list_objects_v2(Bucket=s3_bucket.name).get("KeyCount", 0) == 0
    for earlier in _seen_buckets:  # the previous test's bucket was deleted with its objects
        with pytest.raises(ClientError):
            client.head_bucket(Bucket=earlier)
    client.put_object(Bucket=s3_bucket.name, Key="marker", Body=b"x")
    _seen_buckets.append(s3_bucket.name)


def test_zarr_array_round_trips_through_open_store(s3_bucket: S3Bucket) -> None:
    url = s3_bucket.url_for("cubes/t1")
    store = open_store(url, storage_options=s3_bucket.storage_options())
    data = np.arange(6 * 8, dtype="int16").reshape(6, 8)
    arr = zarr.create_array(store, name="b04", shape=data.shape, chunks=(3, 4), dtype=data.dtype, fill_value=-1)
    arr[:] = data

    reread = zarr.open_array(open_store(url, storage_options=s3_bucket.storage_options(), read_only=True), path="b04")
    np.testing.assert_array_equal(reread[:], data)
    keys = {o["Key"] for o in s3_bucket.server.client().list_objects_v2(Bucket=s3_bucket.name)["Contents"]}
    assert "cubes/t1/b04/zarr.json" in keys
    assert {f"cubes/t1/b04/c/{i}/{j}" for i in range(2) for j in range(2)} <= keys


def test_keys_written_by_another_client_after_a_listing_are_visible(s3_bucket: S3Bucket) -> None:
    # s3fs's listings cache would hide "late" from this store; the test options turn it off.
    store = open_store(s3_bucket.url_for("c"), storage_options=s3_bucket.storage_options())
    write_bytes(store, "early", b"1")
    assert list_keys(store, "") == ["early"]
    s3_bucket.server.client().put_object(Bucket=s3_bucket.name, Key="c/late", Body=b"2")
    assert read_bytes(store, "late") == b"2"
    assert list_keys(store, "") == ["early", "late"]


def test_reset_forgets_everything() -> None:
    with start_s3_server(buckets=["gone"]) as server:
        server.reset()
        assert server.client().list_buckets()["Buckets"] == []


def test_start_fails_fast_on_a_dead_child(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.executable", "/bin/false")
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="exited"):
        start_s3_server(timeout_s=10)
    assert time.monotonic() - started < 5
