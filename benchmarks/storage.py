"""Where benchmark data lives, and how each measured repetition reaches it cold and counted.

Tiers: ``folder`` (a local directory), ``s3`` (moto's S3 server over HTTP on loopback, through a
counting proxy that adds nothing) and ``s3-<N>ms`` (the same proxy adding N ms per request and a
per-response bandwidth cap), so object-store behaviour is reproduced on one machine.

Request counts are never estimated: on S3 they are the proxy's own counts of what crossed the wire
(GET, HEAD, LIST, PUT and body bytes, GDAL's requests included); on a folder they are the zarr store's
counts (:class:`cardcube.counting_store.CountingStore`) for Zarr layouts, and the kernel's read-syscall and
byte counters of this process (``psutil``) for GDAL reading COGs. A Zarr read on a folder is timed on the
plain ``LocalStore`` a user's path opens (cardcube reads it with ``pread``; any wrapper, a counting one
included, takes zarr's slower generic path) and counted in a second, untimed cold pass through a counting
store (:meth:`Access.counted_twin`); writes are counted as they run.

Cold reads: every repetition gets a new s3fs filesystem and client (no instance, listing or connection reuse),
made from one botocore session of the process (its service model and configuration read once, as GDAL's are:
a session of its own cost each repetition's read of a parcel season 285 ms of CPU and 570 ms of its median 1,050,
which the COG readers never paid), GDAL runs with ``VSI_CACHE=FALSE`` and ``CPL_VSIL_CURL_NON_CACHED``
on the bucket, and on a folder the layout's files are evicted from the OS page cache (``posix_fadvise(DONTNEED)``)
before each repetition.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from zarr.abc.store import Store
from zarr.core.sync import sync
from zarr.storage import FsspecStore, LocalStore

from cardcube.counting_store import CountingStore, RequestCounts
from cardcube.storage import open_store
from cardcube.testing import S3Proxy, S3Server, start_s3_proxy, start_s3_server
from cardcube.testing.s3server import ACCESS_KEY, REGION, SECRET_KEY

BUCKET = "cardcube-bench"
KINDS = ("GET", "HEAD", "LIST", "PUT")

# What a competent user sets for COGs on object storage (and what odc-stac's cloud defaults set).
GDAL_COG_OPTIONS: dict[str, str] = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",  # no sidecar-file probing
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif",
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",  # one request for adjacent tiles
    "VSI_CACHE": "FALSE",  # cold reads: no block cache between repetitions
}


@dataclass(frozen=True)
class Tier:
    """A storage tier: ``folder``, ``s3`` or ``s3-<latency>ms`` (with ``bandwidth_mbps`` per response)."""

    name: str
    latency_ms: float = 0.0
    bandwidth_mbps: float | None = None

    @classmethod
    def parse(cls, name: str, *, bandwidth_mbps: float | None = None) -> Tier:
        if name in ("folder", "s3"):
            return cls(name)
        m = re.fullmatch(r"s3-(\d+(?:\.\d+)?)ms", name)
        if not m:
            raise ValueError(f"unknown storage tier {name!r}: use folder, s3 or s3-<N>ms")
        return cls(name, float(m.group(1)), bandwidth_mbps)

    @classmethod
    def of_latency(cls, ms: float, *, bandwidth_mbps: float | None) -> Tier:
        return cls(f"s3-{ms:g}ms", ms, bandwidth_mbps)

    @property
    def is_s3(self) -> bool:
        return self.name != "folder"

    def describe(self) -> str:
        if not self.is_s3:
            return "local folder"
        if not self.latency_ms:
            return "S3 (moto on loopback, no added latency)"
        cap = f", {self.bandwidth_mbps:g} MB/s per response" if self.bandwidth_mbps else ""
        return f"S3 + {self.latency_ms:g} ms per request{cap}"


class BenchStorage:
    """The run's S3 server, its bucket and the counting proxy in front of it (``with`` to stop them)."""

    def __init__(self) -> None:
        from aiobotocore.session import AioSession

        self.server: S3Server = start_s3_server(max_lifetime_s=4 * 3600)
        self.server.create_bucket(BUCKET)
        self.proxy: S3Proxy = start_s3_proxy(self.server.endpoint_url)
        self.session = AioSession()  # every repetition's s3fs client is made from it (see the module docstring)

    def __enter__(self) -> BenchStorage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.proxy.stop()
        self.server.stop()

    def upload(self, local: Path, prefix: str, *, threads: int = 16) -> str:
        """Copy a folder into the bucket straight to the server (not through the proxy), many objects at
        once; its ``s3://`` URL."""
        client = self.server.client()
        files = [p for p in local.rglob("*") if p.is_file()]

        def put(path: Path) -> None:
            client.put_object(Bucket=BUCKET, Key=f"{prefix}/{path.relative_to(local).as_posix()}",
                              Body=path.read_bytes())

        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(put, files))
        return f"s3://{BUCKET}/{prefix}"

    def use(self, tier: Tier) -> None:
        """Make the proxy behave as ``tier`` for the next requests."""
        bps = tier.bandwidth_mbps * 1e6 if tier.bandwidth_mbps else None
        self.proxy.configure(latency_s=tier.latency_ms / 1000.0, bandwidth_bps=bps)

    def storage_options(self) -> dict[str, Any]:
        """s3fs options through the proxy, for a new filesystem instance and client (no data, listing or connection
        from before), from the process's botocore session (its models read once, as GDAL's drivers are loaded once)."""
        return self.proxy.storage_options(skip_instance_cache=True, session=self.session)

    def aws_session(self) -> dict[str, Any]:
        """Arguments of rasterio's ``AWSSession`` pointing GDAL's /vsis3/ at the proxy."""
        return {"aws_access_key_id": ACCESS_KEY, "aws_secret_access_key": SECRET_KEY, "region_name": REGION,
                "endpoint_url": self.proxy.endpoint_url.removeprefix("http://")}


def gdal_options(tier: Tier) -> dict[str, Any]:
    """GDAL configuration for reading COGs from ``tier`` (credentials go through the session)."""
    opts: dict[str, Any] = dict(GDAL_COG_OPTIONS)
    if tier.is_s3:
        opts.update(AWS_HTTPS="NO", AWS_VIRTUAL_HOSTING="FALSE", CPL_VSIL_CURL_NON_CACHED=f"/vsis3/{BUCKET}/")
    return opts


def evict(root: Path) -> None:
    """Drop the files under ``root`` from the OS page cache, so the next read comes from the disk."""
    for dirpath, _, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


class Access:
    """How one repetition reaches one layout's data on one tier: fresh handles, counted, then closed.

    ``root`` is a local folder or an ``s3://`` URL. Call :meth:`start` just before the measured work
    and :meth:`finish` just after: it returns the request and byte counts of that work.
    """

    def __init__(self, tier: Tier, root: str, storage: BenchStorage | None, *, local: Path | None = None,
                 counted: bool = True) -> None:
        if tier.is_s3 and storage is None:
            raise ValueError(f"tier {tier.name} needs the S3 server")
        self.tier, self.root, self.storage = tier, root, storage
        self.local = local  # local files to evict from the page cache before each repetition
        self.counted = counted  # a folder store wrapped in a CountingStore (else plain: see counted_twin)
        self.plain_opened = False  # a plain folder store was handed out: its reads were not counted
        self.counts = RequestCounts()
        self._stores: list[Store] = []
        self._before: Any = None
        self._session: Any = None

    # --- handles ---------------------------------------------------------------------------------
    def store(self, root: str | None = None, *, read_only: bool = True) -> Store:
        """A new zarr store on ``root`` (default: the layout root): counted on a folder, cold on S3."""
        root = root or self.root
        if self.tier.is_s3:
            store = open_store(root, storage_options=self.storage.storage_options(), read_only=read_only)
        elif self.counted:
            store = CountingStore(LocalStore(root, read_only=read_only), self.counts)
        else:
            store = LocalStore(root, read_only=read_only)
            self.plain_opened = True
        self._stores.append(store)
        return store

    def counted_twin(self) -> Access:
        """A fresh access to the same data whose folder stores count every request: for the untimed pass
        that counts what a repetition timed on the plain store read."""
        return Access(self.tier, self.root, self.storage, local=self.local, counted=True)

    def storage_options(self) -> dict[str, Any] | None:
        return self.storage.storage_options() if self.tier.is_s3 else None

    def cog_path(self, href: str) -> str:
        """What rasterio opens for the source file ``href`` (relative to the layout root)."""
        if self.tier.is_s3:
            return f"/vsis3/{self.root.removeprefix('s3://')}/{href}"
        return os.path.join(self.root, href)

    def cog_url(self, href: str) -> str:
        """The STAC asset href of ``href`` on this tier (``s3://`` or a local path), as odc-stac reads it."""
        return f"{self.root}/{href}" if self.tier.is_s3 else os.path.join(self.root, href)

    def rio_env(self) -> Any:
        """A rasterio ``Env`` for this tier's COGs (enter it in each reading thread; one AWS session per
        repetition, as a user's loop would hold one)."""
        import rasterio
        from rasterio.session import AWSSession

        if self.tier.is_s3:
            if self._session is None:
                self._session = AWSSession(**self.storage.aws_session())
            return rasterio.Env(self._session, **gdal_options(self.tier))
        return rasterio.Env(**gdal_options(self.tier))

    # --- measuring -------------------------------------------------------------------------------
    def start(self) -> None:
        """Evict caches and zero the counters: the next work is cold and counted from here."""
        if self.local is not None:
            evict(self.local)
        self.counts.reset()
        if self.tier.is_s3:
            self.storage.use(self.tier)
            self._before = self.storage.proxy.snapshot()
        else:
            self._before = psutil.Process().io_counters()

    def finish(self) -> dict[str, Any]:
        """Counts since :meth:`start`, by request kind, with bytes each way and who counted them."""
        if self.tier.is_s3:
            d = self.storage.proxy.snapshot() - self._before
            out = {k: d.count(k) for k in KINDS}
            out.update(other=d.total - sum(out.values()), bytes_read=d.response_bytes, bytes_written=d.request_bytes,
                       counted_by="proxy")
        elif self.counts.requests:
            r = self.counts.requests
            data = [k for k in self.counts.keys_read if "/c/" in k]  # chunk or shard objects
            out = {"GET": r["get"], "HEAD": r["exists"], "LIST": r["list"], "PUT": r["set"], "other": 0,
                   "bytes_read": self.counts.bytes_read, "bytes_written": self.counts.bytes_written,
                   "counted_by": "store", "data_gets": len(data), "objects_read": len(set(data)),
                   "ledger_gets": sum("/_ledger/" in k for k in self.counts.keys_read),
                   "array_meta_gets": sum(k.endswith("zarr.json") for k in self.counts.keys_read)}
        else:
            io = psutil.Process().io_counters()
            out = {"GET": io.read_count - self._before.read_count, "HEAD": 0, "LIST": 0,
                   "PUT": io.write_count - self._before.write_count, "other": 0,
                   "bytes_read": io.read_chars - self._before.read_chars,
                   "bytes_written": io.write_chars - self._before.write_chars, "counted_by": "os"}
        out["requests"] = sum(out[k] for k in (*KINDS, "other"))
        return out

    def close(self) -> None:
        """Close the S3 sessions opened by this repetition."""
        for store in self._stores:
            fs = getattr(store, "fs", None)
            creator = getattr(fs, "_s3creator", None)
            if isinstance(store, FsspecStore) and creator is not None:
                with contextlib.suppress(Exception):  # a session that never connected, or already closed
                    sync(creator.__aexit__(None, None, None))
        self._stores.clear()


@contextmanager
def quiet_s3() -> Iterator[None]:
    """Silence aiohttp's 'Unclosed client session' noise from sessions zarr/s3fs leave to the GC."""
    import logging

    log = logging.getLogger("asyncio")
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        log.setLevel(level)
