"""pytest fixtures for S3: one moto server per session, a fresh bucket and a fresh proxy per test.

Enable with ``pytest_plugins = ["cardcube.testing.fixtures"]`` in the root ``tests/conftest.py``, or
import the fixtures into a test module (``from cardcube.testing.fixtures import s3_bucket  # noqa: F401``).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cardcube.testing.s3proxy import S3Proxy, start_s3_proxy
from cardcube.testing.s3server import S3Server, start_s3_server

__all__ = ["S3Bucket", "s3_bucket", "s3_proxy", "s3_server"]


@dataclass(frozen=True)
class S3Bucket:
    """A bucket of its own for one test on the session's server."""

    name: str
    server: S3Server

    @property
    def url(self) -> str:
        """``s3://<name>``."""
        return self.server.url(self.name)

    def url_for(self, prefix: str) -> str:
        """``s3://<name>/<prefix>``."""
        return self.server.url(self.name, prefix)

    def storage_options(self, **kwargs: Any) -> dict[str, Any]:
        """s3fs options for the server directly; see :func:`cardcube.testing.s3server.s3fs_options`."""
        return self.server.storage_options(**kwargs)

    def upload(self, folder: Path, prefix: str) -> str:
        """Every file under ``folder`` put under ``prefix`` (a cube built on a folder, copied to the bucket); returns
        the prefix's URL. The PUTs go 8 at a time (moto's server answers each in a thread of its own): a cube of
        9 versions is some 700 objects."""
        client = self.server.client()  # boto3's clients are thread-safe

        def put(path: Path) -> None:
            client.put_object(Bucket=self.name, Key=f"{prefix}/{path.relative_to(folder).as_posix()}",
                              Body=path.read_bytes())

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(put, [p for p in folder.rglob("*") if p.is_file()]))
        return self.url_for(prefix)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """A moto S3 server on 127.0.0.1, shared by the whole session."""
    with start_s3_server() as server:
        yield server


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> Iterator[S3Bucket]:
    """A new, empty bucket with a unique name, deleted after the test."""
    name = f"test-{uuid.uuid4().hex[:16]}"
    s3_server.create_bucket(name)
    yield S3Bucket(name=name, server=s3_server)
    s3_server.delete_bucket(name)


@pytest.fixture
def s3_proxy(s3_server: S3Server) -> Iterator[S3Proxy]:
    """A fresh proxy (no latency, no faults, zero counters) in front of the session's server."""
    with start_s3_proxy(s3_server.endpoint_url) as proxy:
        yield proxy
