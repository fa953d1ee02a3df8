"""A real S3 endpoint on loopback for tests and benchmarks: moto's server in a child process.

:func:`start_s3_server` launches ``python -m cardcube.testing.s3server``, which runs moto's threaded
WSGI server on ``127.0.0.1`` with an OS-chosen port and reports that port on stdout (no port race).
The child stops on its own when its parent goes away (its stdin reaches EOF) or after
``max_lifetime_s``, so a killed test run never leaves a server behind.

Clients talk plain HTTP with SigV4 signatures and dummy credentials, exactly as they would to Ceph or
MinIO; nothing is mocked in-process.
"""

from __future__ import annotations

import contextlib
import os
import queue
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ACCESS_KEY", "REGION", "SECRET_KEY", "S3Server", "s3_client", "s3fs_options", "start_s3_server"]

ACCESS_KEY = "testing"
SECRET_KEY = "testing"
REGION = "us-east-1"
_PORT_PREFIX = "CARDCUBE_S3SERVER_PORT "
_MISSING_PREFIX = "CARDCUBE_S3SERVER_MISSING "  # the child could not import moto's server: what it lacked
_STARTED_META = "cardcube-test-started"  # an upload's metadata: when S3Server.start_upload says it was started


def s3_client(endpoint_url: str) -> Any:
    """A boto3 S3 client for the test server (or a proxy in front of it) at ``endpoint_url``."""
    import boto3

    return boto3.client("s3", endpoint_url=endpoint_url, region_name=REGION, aws_access_key_id=ACCESS_KEY,
                        aws_secret_access_key=SECRET_KEY)


def s3fs_options(
    endpoint_url: str,
    *,
    attempts: int | None = None,
    retry_mode: str = "standard",
    **extra: Any,
) -> dict[str, Any]:
    """``storage_options`` for s3fs (and so for ``cardcube.storage.open_store``) against ``endpoint_url``.

    Without ``attempts`` the botocore retry config is left to ``open_store``'s defaults; with it,
    ``config_kwargs`` sets botocore's ``total_max_attempts`` (tries per request, the first included;
    botocore's own ``max_attempts`` key counts retries only) and replaces those defaults, as
    ``open_store`` merges shallowly. s3fs wraps botocore in a retry loop of its own (``fs.retries``, 5
    tries, for ``SlowDown`` and connection errors) which is an attribute, not an option: set it on
    ``store.fs`` to bound it. ``extra`` goes to ``S3FileSystem`` unchanged (e.g. ``skip_instance_cache``).

    s3fs's listings cache is off (``use_listings_cache=False``): with it on, a key another client
    created after a listing reads as missing, without any request, from every store sharing the cached
    ``S3FileSystem`` instance (fsspec reuses one instance per identical options and thread).
    """
    opts: dict[str, Any] = {
        "key": ACCESS_KEY,
        "secret": SECRET_KEY,
        "client_kwargs": {"endpoint_url": endpoint_url, "region_name": REGION},
        "use_listings_cache": False,
    }
    if attempts is not None:
        opts["config_kwargs"] = {"retries": {"total_max_attempts": attempts, "mode": retry_mode}}
    opts.update(extra)
    return opts


@dataclass(frozen=True)
class S3Server:
    """A running moto S3 server; ``stop()`` (or leaving the ``with`` block) ends it."""

    endpoint_url: str
    port: int
    process: subprocess.Popen = field(repr=False, compare=False)

    def storage_options(self, **kwargs: Any) -> dict[str, Any]:
        """s3fs options pointing at this server; see :func:`s3fs_options` for ``kwargs``."""
        return s3fs_options(self.endpoint_url, **kwargs)

    @staticmethod
    def url(bucket: str, prefix: str = "") -> str:
        """``s3://bucket/prefix`` (no trailing slash)."""
        prefix = prefix.strip("/")
        return f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"

    def environment(self, endpoint_url: str | None = None) -> dict[str, str]:
        """Environment variables that point a ``cardcube`` subprocess at this server (or at a proxy in front
        of it), as a user points it at Ceph or MinIO."""
        return {"AWS_ENDPOINT_URL": endpoint_url or self.endpoint_url, "AWS_ACCESS_KEY_ID": ACCESS_KEY,
                "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_DEFAULT_REGION": REGION}

    def client(self, endpoint_url: str | None = None) -> Any:
        """A boto3 S3 client for this server (or for a proxy in front of it)."""
        return s3_client(endpoint_url or self.endpoint_url)

    def create_bucket(self, name: str) -> str:
        """Create bucket ``name``; returns its ``s3://`` URL."""
        self.client().create_bucket(Bucket=name)
        return self.url(name)

    def delete_bucket(self, name: str) -> None:
        """Delete bucket ``name`` and every object in it."""
        client = self.client()
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                client.delete_objects(Bucket=name, Delete={"Objects": keys, "Quiet": True})
        client.delete_bucket(Bucket=name)

    def start_upload(self, bucket: str, key: str, *, part: bytes = b"", age: float = 0.0) -> str:
        """Start a multipart upload of ``key`` and send ``part`` as its first part (none if empty), then leave it
        unfinished, as a writer killed midway does; the server says it was started ``age`` seconds ago
        (:func:`_report_initiation_times`). Its upload id."""
        client = self.client()
        upload = client.create_multipart_upload(Bucket=bucket, Key=key,
                                                Metadata={_STARTED_META: str(time.time() - age)})["UploadId"]
        if part:
            client.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=1, Body=part)
        return upload

    def reset(self) -> None:
        """Forget every bucket and object (moto's reset API)."""
        req = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST")
        with urllib.request.urlopen(req, timeout=10):
            pass

    def is_alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the server and wait for its process (and so its port) to be released."""
        if self.process.poll() is None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()  # the child exits on EOF
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout_s)
        for stream in (self.process.stdout, self.process.stdin):
            with contextlib.suppress(OSError, AttributeError):
                stream.close()

    def __enter__(self) -> S3Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_s3_server(
    *,
    buckets: Iterable[str] = (),
    timeout_s: float = 30.0,
    max_lifetime_s: float = 3600.0,
    env: Mapping[str, str] | None = None,
) -> S3Server:
    """Start moto's S3 server on a free loopback port, wait until it answers, create ``buckets``.

    ``env`` adds environment variables for the child (e.g. moto's ``INITIAL_NO_AUTH_ACTION_COUNT``).
    """
    child_env = {**os.environ, **dict(env or {})}
    child_env.setdefault("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    child_env.setdefault("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    cmd = [sys.executable, "-m", "cardcube.testing.s3server", "--max-lifetime", str(max_lifetime_s)]
    proc = subprocess.Popen(
        cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=child_env, text=True
    )
    try:
        port = _read_port(proc, timeout_s)
        server = S3Server(endpoint_url=f"http://127.0.0.1:{port}", port=port, process=proc)
        _wait_until_answers(server.endpoint_url, proc, timeout_s)
        for name in buckets:
            server.create_bucket(name)
    except BaseException:
        proc.kill()
        proc.wait(10)
        raise
    return server


def _read_port(proc: subprocess.Popen, timeout_s: float) -> int:
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:  # stdout is read on a thread so the wait can time out
        for line in proc.stdout:
            lines.put(line)
            if line.startswith(_PORT_PREFIX):
                return

    threading.Thread(target=pump, daemon=True, name="s3server-port").start()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.1)
        except queue.Empty:
            if proc.poll() is not None:
                raise RuntimeError(f"moto S3 server exited with code {proc.returncode} before listening") from None
            continue
        if line.startswith(_PORT_PREFIX):
            return int(line.removeprefix(_PORT_PREFIX))
        if line.startswith(_MISSING_PREFIX):
            raise RuntimeError(f"moto's S3 server cannot start: {line.removeprefix(_MISSING_PREFIX).strip()}; install "
                               f"moto[server] (cardcube's test and bench extras: pip install 'cardcube[bench]', "
                               f"from a checkout pip install -e '.[test,bench]')")
    raise TimeoutError(f"moto S3 server did not report its port within {timeout_s} s")


def _wait_until_answers(endpoint_url: str, proc: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"{endpoint_url}/moto-api/", timeout=2):
                return
        except urllib.error.HTTPError:
            return  # any HTTP answer means it is serving
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"moto S3 server at {endpoint_url} does not answer") from None
            time.sleep(0.05)


def _serve(max_lifetime_s: float) -> None:
    """Child process: serve until stdin closes (parent gone or ``stop()``) or the lifetime ends."""
    try:
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
        from werkzeug.serving import make_server
    except ImportError as exc:  # its stderr goes nowhere: the parent says what is missing
        print(f"{_MISSING_PREFIX}{exc}", flush=True)
        sys.exit(1)

    class Dispatcher(DomainDispatcherApplication):
        """moto's dispatcher, remembering the backend of each host. moto finds it anew for every request,
        listing the folders of its own package (some 200 stat calls, 2 ms) under a lock that every request
        takes: a quarter of a GET's time on the server, and no two requests served at once meanwhile."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._backends: dict[str | None, Any] = {}

        def get_backend_for_host(self, host: str | None) -> Any:
            if host not in self._backends:  # called under self.lock
                self._backends[host] = super().get_backend_for_host(host)
            return self._backends[host]

    _report_initiation_times()
    # what moto.server.ThreadedMotoServer does, with the dispatcher above
    server = make_server("127.0.0.1", 0, Dispatcher(create_backend_app), True, request_handler=MotoRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True, name="moto").start()
    print(f"{_PORT_PREFIX}{server.server_address[1]}", flush=True)
    eof = threading.Event()

    def watch_stdin() -> None:
        sys.stdin.read()
        eof.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    eof.wait(max_lifetime_s)
    os._exit(0)  # state is in memory only; exiting frees the port at once (a clean shutdown polls for 0.5 s)


def _report_initiation_times() -> None:
    """Make moto's ListMultipartUploads say when each upload was started: it says 2010-11-10T20:48:33Z of every
    one, so that a test could not tell a killed writer's old upload from one a live writer has just started. An
    upload :meth:`S3Server.start_upload` started is said to be as old as it was asked to be."""
    from datetime import UTC, datetime

    from moto.s3.models import FakeMultipart
    from moto.s3.responses import S3Response

    made, listing = FakeMultipart.__init__, S3Response.list_multipart_uploads

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        made(self, *args, **kwargs)
        started = self.metadata.pop(f"x-amz-meta-{_STARTED_META}", None)
        self.started = datetime.fromtimestamp(float(started) if started else time.time(), UTC)

    def list_multipart_uploads(self: Any) -> Any:
        started = {u.id: u.started for u in self.backend.list_multipart_uploads(self.bucket_name).values()}
        serialized = self.serialized  # a response object answers one request: its own attribute is no race

        def with_times(result: Any) -> Any:
            for upload in result.result["Uploads"]:
                upload["Initiated"] = started[upload["UploadId"]]
            return serialized(result)

        self.serialized = with_times
        return listing(self)

    FakeMultipart.__init__, S3Response.list_multipart_uploads = __init__, list_multipart_uploads


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="moto S3 server on 127.0.0.1 for cardcube tests")
    parser.add_argument("--max-lifetime", type=float, default=3600.0)
    _serve(parser.parse_args().max_lifetime)
