"""Files outside a cube, read where they are: source scenes (GDAL, through rasterio) and parcel files (through
fsspec), with the S3 endpoint of the environment as a cube's store takes it, and their URLs shown in messages
without a signature."""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import fsspec

from cardcube.endpoint_check import check_endpoint
from cardcube.errors import StoreError
from cardcube.scratch import scratch_folder
from cardcube.storage import object_url, s3_options, s3_options_from_env
from cardcube.store_errors import FAILURES, failure, no_bucket, unavailable


def source_options(url: str) -> dict[str, Any]:
    """fsspec options to read a source file at ``url``: for ``s3://``, the environment's endpoint named
    explicitly, so that fsspec's cached filesystem of another endpoint (an earlier ``AWS_ENDPOINT_URL`` of this
    process) is never taken for it."""
    return s3_options_from_env() if object_url(url).startswith("s3://") else {}


def gdal_source_config() -> dict[str, str]:
    """GDAL's settings to read source files: ``/vsis3/`` with the endpoint in the environment, so rasterio reads
    ``s3://`` sources from Ceph or MinIO as s3fs does (GDAL does not read ``AWS_ENDPOINT_URL``); and no file read
    over the network cached from one open to the next (GDAL keeps a file's size and bytes per process
    otherwise, and a later open, a later run's, read a file replaced since as a mix of both). Settings already in
    the environment win."""
    config = {"CPL_VSIL_CURL_NON_CACHED": "/vsis3/:/vsicurl/"}  # prefixes: every s3:// and http(s):// file
    if endpoint := s3_options_from_env().get("endpoint_url"):
        url = urlparse(endpoint)
        config |= {"AWS_S3_ENDPOINT": url.netloc + url.path.rstrip("/"), "AWS_VIRTUAL_HOSTING": "FALSE",
                   "AWS_HTTPS": "YES" if url.scheme == "https" else "NO"}
    return {k: v for k, v in config.items() if k not in os.environ}


def gdal_path(href: str) -> str:
    """The name GDAL (rasterio) opens ``href`` by: an ``s3://`` URL whose key holds a ``#`` or ``?`` as the
    ``/vsis3/`` path it stands for, since rasterio parses a URL and ended the key there; anything else as it is
    (rasterio sets up the AWS session of an ``s3://`` URL, with every credential boto3 finds)."""
    url = object_url(href) if "://" in href else href
    if url.startswith("s3://") and ("#" in url or "?" in url):
        return "/vsis3/" + url.removeprefix("s3://")
    return url


def shown_href(href: str) -> str:
    """``href`` as messages show it: a signed URL's query string (its signature, a credential) left out."""
    path, signed, _ = href.partition("?")
    return path + ("?<signature hidden>" if signed else "")


def _refused(exc: BaseException, url: str) -> StoreError | None:
    """The :class:`StoreError` for an HTTP server's answer other than the object (aiohttp's ``ClientResponseError``,
    which fsspec raises for any status but a 404), naming the URL without its signature; None for another error."""
    status = getattr(exc, "status", None)
    if not isinstance(status, int):
        return None
    said = f"the server answered {status} {getattr(exc, 'message', '') or ''}".rstrip()
    if status in (401, 403):
        why = ("the URL's signature may have expired (a pre-signed URL lasts a limited time): sign it again"
               if urlparse(url).query else "it is not allowed to be read so: give a URL that may be (pre-signed)")
        said = f"{said}: {why}"
    return StoreError(f"cannot read {shown_href(url)}: {said}")


@contextmanager
def local_copy(url: str, *, storage_options: Mapping[str, Any] | None = None,
               companions: Sequence[str] = ()) -> Iterator[Path]:
    """A temporary local copy of the object at ``url`` (``s3://``, ``http(s)://`` or another fsspec URL), deleted
    afterwards: for a reader that needs a file to seek in (GDAL's GeoPackage driver, SQLite underneath), which a
    large file then takes on disk, not in memory. ``storage_options`` are S3's, taken as
    :func:`cardcube.storage.open_store` takes them (with the endpoint and keys of the environment); a plain HTTP URL
    (a pre-signed one carries its signature) takes none. :class:`FileNotFoundError` names a missing object (and a
    missing bucket), :class:`StoreError` a store that fails. ``companions``: the suffixes of the objects beside it
    that make one file with it (a shapefile's ``.dbf``, ``.shx``, ``.prj``), copied beside the copy where there are
    such objects (one answered as missing, or forbidden as S3 answers a missing key, is left out: :func:`_absent`);
    a URL with a query (a pre-signed one signs its own object alone) has none."""
    url = object_url(url)
    if url.startswith("s3://"):
        opts = s3_options(storage_options)
        check_endpoint(opts, url)
    else:
        opts = {} if urlparse(url).scheme in ("http", "https") else dict(storage_options or {})
    fs, path = fsspec.core.url_to_fs(url, **opts)
    with scratch_folder("parcels") as folder:
        local = folder / (posixpath.basename(urlparse(url).path) or "object")  # no query: its name's suffix
        try:
            fs.get_file(path, str(local))
            for suffix in companions if not urlparse(url).query else ():
                try:
                    fs.get_file(posixpath.splitext(path)[0] + suffix, str(local.with_suffix(suffix)))
                except Exception as exc:  # aiohttp's, s3fs's: none there, and the reader says which it needs
                    if not _absent(exc):
                        raise
                    local.with_suffix(suffix).unlink(missing_ok=True)
        except FileNotFoundError:
            bucket = path.split("/")[0]
            missing = f": {no_bucket(bucket, fs)}" if url.startswith("s3://") and not fs.exists(bucket) else ""
            raise FileNotFoundError(f"{shown_href(url)}{missing}") from None
        except FAILURES as exc:
            raise failure(exc, "read", shown_href(url)) from exc
        except Exception as exc:  # an https server's 403 (a pre-signed URL expired), 500, ...: aiohttp's own error
            if unavailable(exc):  # an answer cut off midway, after s3fs's tries
                raise failure(exc, "read", shown_href(url)) from exc
            if (refused := _refused(exc, url)) is None:
                raise
            raise refused from None
        yield local


def _absent(exc: BaseException) -> bool:
    """Whether a read failed for want of the object: a 404, or the 403 S3 answers for a missing key to a client that
    may not list the bucket (a public bucket over https, keys that may only get objects), which is no failure of
    the store where the object is optional (a shapefile's ``.cpg`` or ``.prj``)."""
    return isinstance(exc, FileNotFoundError | PermissionError) or getattr(exc, "status", None) in (403, 404)
