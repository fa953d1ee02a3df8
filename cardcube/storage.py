"""Where a cube lives: a URL (local folder or ``s3://``) or a zarr store, resolved in one place.

cardcube has no storage class of its own: everything goes through a zarr ``Store`` (``LocalStore``
for folders, ``FsspecStore`` over s3fs for object storage). The few extra verbs the commit protocol
needs (read/write/list small objects, create-only writes) are thin functions over that interface. A file
outside a cube (a parcel file in a bucket) is fetched through fsspec with the same options (:func:`local_copy`).
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import functools
import json
import logging
import os
import posixpath
import re
import socket
import ssl
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import fsspec
from botocore.exceptions import BotoCoreError, HTTPClientError, NoCredentialsError
from botocore.exceptions import ConnectionError as BotoConnectionError
from zarr.abc.store import ByteRequest, Store, SuffixByteRequest
from zarr.core import sync as zarr_sync
from zarr.core.buffer import Buffer, BufferPrototype, default_buffer_prototype
from zarr.core.sync import sync
from zarr.storage import FsspecStore, LocalStore, WrapperStore

from cardcube.errors import (
    CardcubeError,
    CommitConflictError,
    CorruptDocumentError,
    InvalidRequestError,
    StoreError,
    StoreUnavailableError,
    exception_chain,
)

StoreLike = str | os.PathLike | Store
log = logging.getLogger(__name__)
CONNECT_TIMEOUT_S = 5.0  # to reach an S3 endpoint at all
ANSWER_TIMEOUT_S = 15.0  # for it to answer a first request
TIMEOUT_ATTEMPTS = 2  # tries of a request to a store opened with a ``timeout``: one retry, for a dropped connection

# botocore's adaptive retry mode backs off on 500/503/SlowDown; s3fs adds its own retries on top.
_S3_DEFAULTS: dict[str, Any] = {
    "config_kwargs": {"retries": {"max_attempts": 8, "mode": "adaptive"}},
    "use_listings_cache": False,  # the ledger is found by listing: never answer from a stale cache
    # s3fs sends a HEAD before every whole-object GET (to split objects over 50 MB into concurrent ranges),
    # and a LIST after it for a key that is missing, unless max_concurrency is 1. Readers and writers fetch
    # small objects (ledger, lock, zarr.json) one after another: a tiny ingest sent 3,673 requests with
    # them and 2,253 without. Shards of the default layout stay below 50 MB; a larger object is still read
    # and uploaded in parts, one at a time.
    "max_concurrency": 1,
}


def s3_options_from_env() -> dict[str, Any]:
    """s3fs options from the usual environment (``AWS_ENDPOINT_URL`` for Ceph/MinIO/moto)."""
    opts: dict[str, Any] = {}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        opts["endpoint_url"] = endpoint
    return opts


_S3_SCHEMES = ("s3", "s3a", "s3n")  # Hadoop's names of S3 (s3fs answers to all): one store, one set of options
_SCHEME_LIKE = re.compile(r"^(s3|s3a|s3n|gs|gcs|az|abfs|http|https):(?!//)", re.IGNORECASE)


def object_url(location: str) -> str:
    """``location`` as cardcube reads an object (a file) at it: a path as it is; a URL with its scheme in lower
    case, Hadoop's ``s3a://`` as ``s3://`` (with cardcube's S3 options: s3fs alone kept a stale listings cache).
    A URL missing a slash (``s3:/b/x``) is an error: it would be a local folder named "s3:"."""
    if m := _SCHEME_LIKE.match(location):
        raise InvalidRequestError(f"{location} looks like a URL missing a slash: write {m[1].lower()}://..., e.g. "
                                  f"{m[1].lower()}://{location.split(':', 1)[1].lstrip('/')}")
    if "://" not in location:
        return location
    scheme, rest = location.split("://", 1)
    return f"{'s3' if scheme.lower() in _S3_SCHEMES else scheme.lower()}://{rest}"


def normalise_url(location: str) -> str:
    """``location`` of a cube or an output (a prefix) as cardcube reads it: :func:`object_url`, and an S3 prefix
    without empty or ``.`` segments (``s3://b//x`` made keys starting with "/", another cube than ``s3://b/x``;
    an object's key is left as it is, since ``b//x.tif`` and ``b/x.tif`` are two objects)."""
    location = object_url(location)
    if not location.startswith("s3://"):
        return location
    rest = location.removeprefix("s3://")
    if not rest.split("/")[0]:  # s3fs read "s3:///cube" as the bucket "cube", and "s3://" as the bucket ""
        raise InvalidRequestError(f"{location} names no bucket: write s3://BUCKET/PREFIX, e.g. "
                                  f"s3://my-bucket/{rest.strip('/') or 'cube'}")
    parts = [p for p in rest.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise InvalidRequestError(f"{location}: an S3 key has no '..' (no parent folder): write the prefix itself")
    return "s3://" + "/".join(parts) + ("/" if rest.endswith("/") and len(parts) > 1 else "")


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


def refuse_file(location: Any, what: str, *, made: bool = True) -> None:
    """:class:`InvalidRequestError` if ``location`` (a path or URL given for a folder to write, ``what``; ``made``:
    one made if missing, not one only read) is a local file: written to, it fails deep inside a write with the OS's
    "File exists"."""
    if isinstance(location, str | os.PathLike) and "://" not in os.fspath(location) and os.path.isfile(location):
        from cardcube.errors import InvalidRequestError

        raise InvalidRequestError(f"{what} {os.fspath(location)} is a file: give a folder"
                                  f"{' (made if missing)' if made else ''} or an s3:// prefix")


def open_store(
    location: StoreLike, *, storage_options: Mapping[str, Any] | None = None, read_only: bool = False,
    timeout: float | None = None,
) -> Store:
    """Resolve a path, ``file://`` or ``s3://`` URL, or an existing zarr Store, to a zarr Store.

    ``timeout`` (seconds, S3 only) bounds how long a request to an unreachable or silent store takes to fail,
    retries included, instead of the minute botocore's and s3fs's retries take by default (right for a batch
    job riding out a throttling store, too long for an interactive reader behind a proxy): connect and read
    timeouts of ``timeout`` / :data:`TIMEOUT_ATTEMPTS` and that many tries, so about ``timeout`` plus a second
    of back-off. The read timeout is the longest wait for the next bytes, not for a whole object."""
    if isinstance(location, Store):
        return location
    text = normalise_url(os.fspath(location))
    if "://" not in text or text.startswith("file://"):
        path = Path(text.removeprefix("file://")).expanduser().absolute()  # ".." is the OS's, through links
        if read_only and not path.exists():
            from cardcube.errors import CubeNotFoundError

            raise CubeNotFoundError(f"no cube at {path}: the folder does not exist")
        return LocalStore(path, read_only=read_only)
    if text.startswith("s3://"):
        opts = _s3_options(storage_options)
        if timeout is not None:
            opts = _bounded(opts, timeout)
        _check_endpoint(opts, text, timeout=timeout)
        store = FsspecStore.from_url(text, storage_options=opts, read_only=read_only)
        if timeout is not None:
            store.fs.retries = 1  # s3fs's own loop of tries around botocore's (an attribute, not an option)
        return store
    return FsspecStore.from_url(text, storage_options=dict(storage_options or {}), read_only=read_only)


def _s3_options(storage_options: Mapping[str, Any] | None) -> dict[str, Any]:
    """s3fs options: cardcube's defaults, then the environment's endpoint, then ``storage_options``. An endpoint
    given as s3fs's ``client_kwargs={"endpoint_url": ...}`` replaces the environment's (both reached botocore: it
    refused them, "multiple values for keyword argument 'endpoint_url'")."""
    given = dict(storage_options or {})
    env = s3_options_from_env()
    if "endpoint_url" in (given.get("client_kwargs") or {}):
        env.pop("endpoint_url", None)
    defaults = {k: v for k, v in _S3_DEFAULTS.items() if k != "config_kwargs" or not _retries_set(given.get("profile"))}
    return {**defaults, **env, **given}


def _retries_set(profile: str | None) -> bool:
    """Whether the user set botocore's retries where every AWS tool reads them: ``AWS_MAX_ATTEMPTS`` or
    ``AWS_RETRY_MODE``, or the profile's ``max_attempts`` or ``retry_mode`` (``~/.aws/config``). cardcube's own
    (:data:`_S3_DEFAULTS`), given to the client, won over them: a user could not give a busy store more tries."""
    if os.environ.get("AWS_MAX_ATTEMPTS") or os.environ.get("AWS_RETRY_MODE"):
        return True
    config = os.path.expanduser(os.environ.get("AWS_CONFIG_FILE") or "~/.aws/config")
    with suppress(OSError):
        changed = os.stat(config).st_mtime_ns
        return _profile_sets_retries(profile or os.environ.get("AWS_PROFILE") or os.environ.get("AWS_DEFAULT_PROFILE"),
                                     config, changed)
    return False  # no config file: no profile sets them


@functools.lru_cache(maxsize=16)
def _profile_sets_retries(profile: str | None, config: str, changed: int) -> bool:
    """Whether ``profile`` of the config file ``config`` (as of its modification time ``changed``) sets
    ``max_attempts`` or ``retry_mode``: a botocore session parses the file, some 5 ms a store opened otherwise."""
    import botocore.session

    try:
        scoped = botocore.session.Session(profile=profile).get_scoped_config()
    except BotoCoreError:  # a profile that does not exist: the client will say so
        return False
    return "max_attempts" in scoped or "retry_mode" in scoped


def check_reachable(url: str, *, storage_options: Mapping[str, Any] | None = None) -> None:
    """For an ``s3://`` URL whose endpoint is named (in ``storage_options`` or the environment: Ceph, MinIO),
    one TCP connection to it: :class:`StoreUnavailableError` at once if nothing answers there. Other URLs pass."""
    url = normalise_url(url)
    if url.startswith("s3://"):
        _check_endpoint(_s3_options(storage_options), url)


def _check_endpoint(opts: Mapping[str, Any], location: str, *, timeout: float | None = None) -> None:
    """:func:`_check_reachable` for the endpoint of s3fs options ``opts``, if they name one."""
    if endpoint := _endpoint_of(opts):
        _check_reachable(endpoint, location, answer_timeout=min(timeout or ANSWER_TIMEOUT_S, ANSWER_TIMEOUT_S),
                         verify=_tls_verify(opts) if endpoint.lower().startswith("https:") else None)


def _bounded(opts: dict[str, Any], timeout: float) -> dict[str, Any]:
    """s3fs options under which a request fails within about ``timeout`` seconds (see :func:`open_store`)."""
    if not timeout > 0:
        raise InvalidRequestError(f"a store timeout of {timeout} s: give a number of seconds above 0")
    per_try = timeout / TIMEOUT_ATTEMPTS
    config = {**opts.get("config_kwargs", {}), "connect_timeout": min(per_try, CONNECT_TIMEOUT_S),
              "read_timeout": per_try, "retries": {"total_max_attempts": TIMEOUT_ATTEMPTS, "mode": "standard"}}
    return {**opts, "config_kwargs": config}


def _tls_verify(opts: Mapping[str, Any]) -> bool | str | None:
    """How the S3 client of s3fs options ``opts`` checks an endpoint's TLS certificate, as botocore decides it:
    ``client_kwargs`` ``verify``, else the session's ``ca_bundle`` (``AWS_CA_BUNDLE``, a profile's), else
    ``REQUESTS_CA_BUNDLE``, else the bundled CAs (True); False: not checked. None: it cannot be told (a profile
    that does not exist: the client will say so)."""
    verify = opts.get("client_kwargs", {}).get("verify")
    if verify is None:
        import botocore.session

        try:
            verify = botocore.session.Session(profile=opts.get("profile")).get_config_variable("ca_bundle")
        except BotoCoreError:
            return None
    return os.environ.get("REQUESTS_CA_BUNDLE", True) if verify is None else verify


def _tls_context(verify: bool | str) -> ssl.SSLContext:
    """The TLS context the S3 client (aiobotocore) connects with, for ``verify`` as :func:`_tls_verify` gives it."""
    from botocore.httpsession import create_urllib3_context, get_cert_path

    context = create_urllib3_context()
    if verify:
        context.check_hostname = True
        context.load_verify_locations(get_cert_path(verify))
    else:
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    return context


def _check_reachable(endpoint: str, location: str, *, answer_timeout: float, verify: bool | str | None = None
                     ) -> None:
    """One TCP connection to an S3 endpoint (Ceph, MinIO), and one request on it: a wrong host or port, or a
    gateway that takes connections but does not answer within ``answer_timeout`` s, is one clear error at once,
    where botocore's retries, right for a throttling server, would spend minutes on it. So is an endpoint without
    its scheme (``minio:9000``, not a refused connection to port 80), one of the wrong scheme (``https://`` to a
    plain HTTP port failed each request's TLS handshake, ``http://`` to a TLS port had each connection closed:
    minutes of retries, then "cannot be reached"), and a certificate the client will not trust (``verify``, as
    :func:`_tls_verify` tells it: a Ceph gateway's own CA, retried as an outage)."""
    url = urlparse(endpoint)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise InvalidRequestError(f"the S3 endpoint {endpoint} of {location} is no http:// or https:// URL: write "
                                  f"it with its scheme, e.g. http://{endpoint.split('://')[-1]}")
    port = url.port or (443 if url.scheme == "https" else 80)
    sock = _connect(endpoint, location, url.hostname, port)
    try:  # a gateway that accepts connections and never answers held a batch job for as long as its retries go
        sock.settimeout(answer_timeout)  # the TLS handshake is part of the answer
        if url.scheme == "https":
            sock = _tls_handshake(sock, endpoint, location, url.hostname, port, verify, answer_timeout)
        answer = _probe(sock, url.netloc)  # any answer, or a closed connection, is an answer
    except TimeoutError:
        raise StoreUnavailableError(f"the S3 endpoint {endpoint} of {location} accepts connections but sends no "
                                    f"answer within {answer_timeout:g} s: is its gateway hung?") from None
    except CardcubeError:
        raise
    except OSError:  # reset, TLS refused: the requests will say what is wrong
        return
    finally:
        sock.close()
    if url.scheme == "http" and answer != b"HTTP/" and _speaks_tls(url.hostname, port, answer_timeout):
        raise InvalidRequestError(f"the S3 endpoint {endpoint} of {location} answers with TLS, not plain HTTP: write "
                                  f"it https://{endpoint.split('://', 1)[1]}")


def _connect(endpoint: str, location: str, host: str, port: int) -> socket.socket:
    try:
        return socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S)
    except OSError as exc:
        raise StoreUnavailableError(f"cannot reach the S3 endpoint {endpoint} of {location}: "
                                    f"{exc.strerror or exc}") from exc


def _tls_handshake(sock: socket.socket, endpoint: str, location: str, host: str, port: int,
                   verify: bool | str | None, timeout: float) -> ssl.SSLSocket:
    """``sock`` after a TLS handshake as the S3 client makes it (``verify``; None: without checking the certificate):
    :class:`StoreError` for a certificate it will not trust, :class:`InvalidRequestError` for a plain HTTP port."""
    try:
        return _tls_context(False if verify is None else verify).wrap_socket(sock, server_hostname=host)
    except ssl.SSLCertVerificationError as exc:
        sock.close()
        raise StoreError(
            f"the S3 endpoint {endpoint} of {location} has a TLS certificate the S3 client does not trust "
            f"({exc.verify_message}): give the certificate of the CA that signed it, AWS_CA_BUNDLE=/path/ca.pem "
            f"(Python: storage_options={{'client_kwargs': {{'verify': '/path/ca.pem'}}}}), or an endpoint name the "
            f"certificate is for") from None
    except ssl.SSLError:
        sock.close()
        if _speaks_http(host, port, timeout):
            raise InvalidRequestError(f"the S3 endpoint {endpoint} of {location} answers in plain HTTP, not TLS: "
                                      f"write it http://{endpoint.split('://', 1)[1]}") from None
        raise


def _probe(sock: socket.socket, host: str) -> bytes:
    """The first bytes a server answers a plain ``HEAD /`` with on ``sock`` (``b"HTTP/"`` from an HTTP server)."""
    sock.sendall(f"HEAD / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    return sock.recv(5)


def _speaks_http(host: str, port: int, timeout: float) -> bool:
    """Whether the server at ``host``:``port`` answers a plain HTTP request with HTTP."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            return _probe(sock, host) == b"HTTP/"
    except OSError:
        return False


def _speaks_tls(host: str, port: int, timeout: float) -> bool:
    """Whether the server at ``host``:``port`` completes a TLS handshake (its certificate not checked)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock, \
                _tls_context(False).wrap_socket(sock, server_hostname=host):
            return True
    except OSError:
        return False


def store_url(store: Store) -> str:
    """A human-readable location of ``store`` for messages and STAC hrefs (a local folder's absolute path: a
    LocalStore made with a relative one gave STAC hrefs the catalog then refused as outside the cube)."""
    if isinstance(store, LocalStore):
        return str(Path(store.root).absolute())
    if isinstance(store, FsspecStore):
        if "://" in store.path:  # HTTP's file system keeps the whole URL as the path (and is "http" for https too)
            return store.path
        protocol = store.fs.protocol[0] if isinstance(store.fs.protocol, tuple) else store.fs.protocol
        return f"{protocol}://{store.path}"
    inner = getattr(store, "_store", None)
    return store_url(inner) if isinstance(inner, Store) else repr(store)


def store_endpoint(store: Store) -> str | None:
    """The S3 endpoint ``store`` is read from, as its s3fs options name it (None: a folder, or the client's
    default); found through a wrapper's inner store as :func:`store_url` finds its location. One bucket path on two
    endpoints (production and staging) is two stores."""
    if isinstance(store, FsspecStore):
        return _endpoint_of(getattr(store.fs, "storage_options", None) or {})
    inner = getattr(store, "_store", None)
    return store_endpoint(inner) if isinstance(inner, Store) else None


def _endpoint_of(options: Mapping[str, Any]) -> str | None:
    """The endpoint s3fs options name, at their top or in their ``client_kwargs``."""
    return options.get("endpoint_url") or (options.get("client_kwargs") or {}).get("endpoint_url")


def store_at(store: Store, url: str) -> Store | None:
    """A read-only store of ``url`` (a location :func:`store_url` gives) on the same file system as ``store`` (its
    S3 endpoint and keys); None for a store of another kind."""
    if isinstance(store, LocalStore):
        return LocalStore(url, read_only=True)
    if isinstance(store, FsspecStore):
        return FsspecStore(store.fs, read_only=True, path=url.split("://", 1)[-1])
    inner = getattr(store, "_store", None)
    return store_at(inner, url) if isinstance(inner, Store) else None


def canonical_url(store: Store) -> str:
    """:func:`store_url`, with a local folder's links and ``..`` resolved: the same folder named two ways gives
    one string (what an extraction's manifest compares)."""
    return str(store.root.resolve()) if isinstance(store, LocalStore) else store_url(store)


# What a store raises when it fails: s3fs an OSError once its retries are exhausted, botocore its own errors
# when the endpoint cannot be reached at all, zarr's sync() a RuntimeError.
_FAILURES = (OSError, RuntimeError, BotoCoreError)
# ... and of those, what says it is not there now rather than broken: no connection (refused, reset, dropped),
# no answer in time (botocore's, aiohttp's and asyncio's timeouts are all TimeoutError or HTTPClientError), or
# a 503 Slow Down / Service Unavailable after every retry (s3fs's OSError with EBUSY).
_UNAVAILABLE = (BotoConnectionError, HTTPClientError, ConnectionError, TimeoutError)


def unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception it was raised from) says the store cannot be reached or answer now."""
    return any(isinstance(e, _UNAVAILABLE) or (isinstance(e, OSError) and e.errno == errno.EBUSY) or _cut_off(e)
               for e in exception_chain(exc))


def _cut_off(exc: BaseException) -> bool:
    """Whether ``exc`` is aiohttp's error for an answer cut off midway (a body shorter than its Content-Length, the
    connection reset or closed while it came: ``ClientPayloadError``, ``ServerDisconnectedError``), which s3fs raises
    as it is once its tries are spent: no OSError, and it escaped every command as a traceback. aiohttp is loaded
    by then (by s3fs, fsspec's HTTP): not imported for this."""
    aiohttp = sys.modules.get("aiohttp")
    return aiohttp is not None and isinstance(exc, aiohttp.ClientPayloadError | aiohttp.ClientConnectionError)


@contextmanager
def _failures(doing: str, store: Store) -> Iterator[None]:
    """A store failure while ``doing`` something to ``store`` as one :class:`StoreError` naming both."""
    try:
        yield
    except CardcubeError:
        raise
    except FileNotFoundError as exc:
        if not store_url(store).startswith("s3://"):
            raise StoreError(f"cannot {doing} {store_url(store)}: {type(exc).__name__}: {exc}") from exc
        bucket = store_url(store).removeprefix("s3://").split("/")[0]  # s3fs's NoSuchBucket (a missing key is None)
        missing = _no_bucket(bucket, getattr(store, "fs", None))
        raise StoreError(f"cannot {doing} {store_url(store)}: {missing}") from exc
    except _FAILURES as exc:
        raise _failure(exc, doing, store_url(store)) from exc
    except Exception as exc:  # an HTTP server's answer (aiohttp's ClientResponseError), an answer cut off: no OSError
        if (answered := _http_answer(exc, doing, store_url(store))) is None:
            raise
        raise answered from exc


@contextmanager
def reading(what: str, store: Store) -> Iterator[None]:
    """A failure of ``store`` while reading ``what`` through zarr or s3fs directly (arrays' metadata, shards) as
    one :class:`StoreError` naming both, as the functions below give theirs. What is no store failure passes as
    it is: cardcube's own errors (a corrupt shard), a missing object (zarr's and s3fs's FileNotFoundError, which
    the reader may expect), and zarr's or a codec's RuntimeError (a chunk that does not decode)."""
    try:
        yield
    except (CardcubeError, FileNotFoundError):
        raise
    except (OSError, BotoCoreError) as exc:
        raise _failure(exc, f"read {what} from", store_url(store)) from exc
    except Exception as exc:  # an HTTP server's answer (aiohttp's ClientResponseError), an answer cut off: no OSError
        if (answered := _http_answer(exc, f"read {what} from", store_url(store))) is None:
            raise
        raise answered from exc


def _http_answer(exc: BaseException, doing: str, where: str) -> StoreError | None:
    """The :class:`StoreError` for a web server's answer other than what was asked (fsspec's HTTP file system raises
    aiohttp's own error for any status but a 404), naming its status; None for another error. A folder listing
    refused (403, or 404 or 405 for a folder URL) is a web server that lists no folders (nginx without autoindex, a
    bucket's website), where cardcube finds a collection's versions by listing its ledger's folder. An answer cut off
    midway (aiohttp's error, once s3fs's tries are spent) is the store not answering (:func:`_failure`)."""
    if unavailable(exc):
        return _failure(exc, doing, where)
    status = getattr(exc, "status", None)
    if not isinstance(status, int):
        return None
    said = f"the server answered {status} {getattr(exc, 'message', '') or ''}".rstrip()
    if doing.startswith("list") and status in (403, 404, 405):
        said += (": it lists no folders, and the cube's versions are found by listing its ledger's folder; serve the "
                 "cube with `cardcube catalog serve --cube DIR` (which lists them), or turn the server's folder "
                 "listings on (nginx: autoindex on)")
    return StoreError(f"cannot {doing} {where}: {said}")


def _failure(exc: BaseException, doing: str, where: str) -> StoreError:
    """The :class:`StoreError` for a failure ``exc`` while ``doing`` something to ``where``, naming both: a
    :class:`StoreUnavailableError` when the store cannot be reached or does not answer (:func:`unavailable`)."""
    if isinstance(exc, NoCredentialsError):  # nothing to retry: say where keys are looked for
        return StoreError(f"cannot {doing} {where}: no S3 credentials found; set AWS_ACCESS_KEY_ID and "
                          f"AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), or pass key and secret in storage_options")
    if unavailable(exc):
        return StoreUnavailableError(f"cannot {doing} {where}: the store cannot be reached or does not answer "
                                     f"({type(exc).__name__}: {exc})")
    if isinstance(exc, PermissionError):  # s3fs's 403: wrong keys, or keys not allowed this (not retried)
        said = " ".join(str(part) for part in reversed(_s3_error(exc)) if part)  # "403 AccessDenied"
        return StoreError(f"cannot {doing} {where}: the store refused it ({said + ': ' if said else ''}{exc}): "
                          f"the S3 keys in use (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or "
                          f"storage_options' key and secret) are wrong, or not allowed to do this there")
    return StoreError(f"cannot {doing} {where} (after retries): {type(exc).__name__}: {exc}")


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


def _no_bucket(bucket: str, fs: Any = None) -> str:
    """Why S3 answered that ``bucket`` does not exist; ``fs`` (s3fs's) names an endpoint with a path, which the S3
    client puts before the bucket: the bucket's own URL given as the endpoint (``http://gateway:7480/BUCKET``)."""
    said = f"the bucket {bucket} does not exist; create it first (cardcube creates no buckets) or correct the URL"
    endpoint = getattr(fs, "endpoint_url", None) or (getattr(fs, "client_kwargs", None) or {}).get("endpoint_url")
    url = urlparse(endpoint) if isinstance(endpoint, str) else None
    if url and url.path.strip("/"):
        said += (f" (the endpoint {endpoint} has a path, {url.path.rstrip('/')}, which the S3 client puts before the "
                 f"bucket: give the gateway's root, {url.scheme}://{url.netloc}, unless the gateway is served there)")
    return said


@contextmanager
def local_copy(url: str, *, storage_options: Mapping[str, Any] | None = None,
               companions: Sequence[str] = ()) -> Iterator[Path]:
    """A temporary local copy of the object at ``url`` (``s3://``, ``http(s)://`` or another fsspec URL), deleted
    afterwards: for a reader that needs a file to seek in (GDAL's GeoPackage driver, SQLite underneath), which a
    large file then takes on disk, not in memory. ``storage_options`` are S3's, taken as :func:`open_store` takes
    them (with the endpoint and keys of the environment); a plain HTTP URL (a pre-signed one carries its
    signature) takes none. :class:`FileNotFoundError` names a missing object (and a missing bucket),
    :class:`StoreError` a store that fails. ``companions``: the suffixes of the objects beside it that make one
    file with it (a shapefile's ``.dbf``, ``.shx``, ``.prj``), copied beside the copy where there are such objects
    (one answered as missing, or forbidden as S3 answers a missing key, is left out: :func:`_absent`); a URL with a
    query (a pre-signed one signs its own object alone) has none."""
    url = object_url(url)
    if url.startswith("s3://"):
        opts = _s3_options(storage_options)
        _check_endpoint(opts, url)
    else:
        opts = {} if urlparse(url).scheme in ("http", "https") else dict(storage_options or {})
    fs, path = fsspec.core.url_to_fs(url, **opts)
    with tempfile.TemporaryDirectory(prefix="cardcube-") as folder:
        local = Path(folder) / (posixpath.basename(urlparse(url).path) or "object")  # no query: its name's suffix
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
            missing = f": {_no_bucket(bucket, fs)}" if url.startswith("s3://") and not fs.exists(bucket) else ""
            raise FileNotFoundError(f"{shown_href(url)}{missing}") from None
        except _FAILURES as exc:
            raise _failure(exc, "read", shown_href(url)) from exc
        except Exception as exc:  # an https server's 403 (a pre-signed URL expired), 500, ...: aiohttp's own error
            if unavailable(exc):  # an answer cut off midway, after s3fs's tries
                raise _failure(exc, "read", shown_href(url)) from exc
            if (refused := _refused(exc, url)) is None:
                raise
            raise refused from None
        yield local


def _absent(exc: BaseException) -> bool:
    """Whether a read failed for want of the object: a 404, or the 403 S3 answers for a missing key to a client that
    may not list the bucket (a public bucket over https, keys that may only get objects), which is no failure of
    the store where the object is optional (a shapefile's ``.cpg`` or ``.prj``)."""
    return isinstance(exc, FileNotFoundError | PermissionError) or getattr(exc, "status", None) in (403, 404)


def read_bytes(store: Store, key: str) -> bytes | None:
    """The object at ``key``, or ``None`` if absent."""
    with _failures(f"read {key} from", store):
        buf = sync(store.get(key, prototype=default_buffer_prototype()))
    return None if buf is None else buf.to_bytes()


def write_bytes(store: Store, key: str, data: bytes) -> None:
    """Write (or replace) one object; atomic on S3 and, via rename, on a local folder."""
    with _failures(f"write {key} to", store):
        sync(store.set(key, default_buffer_prototype().buffer.from_bytes(data)))


def listed_names(names: Sequence[str], *, most: int) -> str:
    """The first ``most`` of ``names`` (keys, a location's children), for a message about them all."""
    return ", ".join(names[:most]) + (" ..." if len(names) > most else "")


LISTED_LINES = 20  # lines a summary gives its items one each (thousands at a territory's size): the rest counted


def listed_lines(lines: Sequence[str], more: str, *, most: int = LISTED_LINES) -> list[str]:
    """The first ``most`` of ``lines`` (a summary's items, a line each), then, if there are more, one line counting
    them and saying ``more`` of them (``"  ... and 12 more " + more``: what they are, where each is named)."""
    return [*lines[:most], *([f"  ... and {len(lines) - most} more {more}"] if len(lines) > most else [])]


def write_many(store: Store, objects: Mapping[str, bytes]) -> None:
    """:func:`write_bytes` of each of ``objects`` (key -> bytes), all sent at once: on S3 one round trip's
    latency for them all, not one after another."""
    async def _set_all() -> None:
        proto = default_buffer_prototype()
        await asyncio.gather(*(store.set(key, proto.buffer.from_bytes(data)) for key, data in objects.items()))

    if objects:
        with _failures(f"write {listed_names(list(objects), most=2)} to", store):
            sync(_set_all())


CONDITIONAL_WRITES = ("cardcube's writer lock and commits need an S3 store that honours conditional writes, "
                      "If-None-Match: * on PUT and If-Match on PUT and DELETE (AWS S3, MinIO, Ceph RGW of 2024 or "
                      "later)")


def create_bytes(store: Store, key: str, data: bytes) -> None:
    """Create ``key`` only if it does not exist yet, atomically; else :class:`CommitConflictError`.

    A local folder uses zarr's exclusive ``os.link``; S3 uses a conditional PUT (``If-None-Match: *``).
    """
    buf = default_buffer_prototype().buffer.from_bytes(data)
    outer, store = store, _innermost(store)
    with _failures(f"create {key} in", store):
        try:
            if _is_s3(store):
                sync(store.fs._pipe_file("/".join(_s3_object(store, key)), data, mode="create"))
            elif isinstance(store, LocalStore):
                sync(store._set(key, buf, exclusive=True))
            else:  # not atomic: a check then a write; documented limitation for other stores
                if sync(store.exists(key)):
                    raise FileExistsError(key)
                sync(store.set(key, buf))
        except OSError as exc:  # a lost race is no store failure (AWS: 409 if the other create was under way)
            code, status = _s3_error(exc)
            if status in (400, 501) and not isinstance(exc, FileExistsError) and _is_s3(store):
                said = str(exc).rstrip(".")
                raise StoreError(f"cannot create {key} in {store_url(store)}: the store refused a create-only write "
                                 f"(If-None-Match: *) with {status} {code}: {said}. {CONDITIONAL_WRITES}") from exc
            if not (isinstance(exc, FileExistsError) or code in _CONDITION_FAILED):
                raise
            raise CommitConflictError(
                f"{key} already exists in {store_url(store)}: another writer got there first"
            ) from exc
    if isinstance(outer, CountingStore):
        outer.counts.add("set", written=len(data))


@dataclass(frozen=True, slots=True)
class Tagged:
    """An object's bytes as read, and the store's tag of that version of it (S3's ETag; a local file's device,
    inode and modification time): what :func:`replace_bytes` checks is still there before it replaces it."""

    data: bytes
    tag: str


def read_tagged(store: Store, key: str) -> Tagged | None:
    """The object at ``key`` with its version's tag (one GET on S3), or ``None`` if absent."""
    inner = _innermost(store)
    with _failures(f"read {key} from", store):
        if _is_s3(inner):
            try:
                tagged = sync(_get_tagged(inner.fs, *_s3_object(inner, key)))
            except FileNotFoundError:
                return None
        elif (path := local_file(inner, key)) is not None:
            try:
                with path.open("rb") as f:
                    tagged = Tagged(f.read(), _file_tag(os.fstat(f.fileno())))
            except FileNotFoundError:
                return None
        else:  # a store without tags: its bytes stand for the version
            data = read_bytes(inner, key)
            tagged = None if data is None else Tagged(data, "")
    if isinstance(store, CountingStore) and tagged is not None:
        store.counts.add("get", read=len(tagged.data), keys=[key])
    return tagged


async def _get_tagged(fs: Any, bucket: str, name: str) -> Tagged:
    """One GET of an object with its ETag, tried again as s3fs tries its reads (a body cut off midway too)."""
    from s3fs.core import _error_wrapper as s3_error_wrapper  # s3fs loads in 0.2 s: not for every command

    async def call_and_read() -> Tagged:
        answer = await fs._call_s3("get_object", Bucket=bucket, Key=name)
        try:
            return Tagged(await answer["Body"].read(), answer["ETag"])
        finally:
            answer["Body"].close()

    return await s3_error_wrapper(call_and_read, retries=fs.retries)


def _file_tag(st: os.stat_result) -> str:
    return f"{st.st_dev}:{st.st_ino}:{st.st_mtime_ns}:{st.st_size}"


def replace_bytes(store: Store, key: str, data: bytes, *, expected: Tagged) -> None:
    """Replace the object at ``key`` with ``data`` only if it is still the version ``expected`` (a compare-and-swap);
    else :class:`CommitConflictError` (it changed or went meanwhile). Two writers that read the same version and
    both replace it: one wins, the other is told, where a read, a check and a delete let the second delete what
    the first had just written.

    S3 uses a conditional PUT (``If-Match``: AWS since 2024-11, Ceph RGW, MinIO); a local folder locks the file
    (``flock``), checks it is still the one at ``key`` and unchanged, and renames the new one over it; another
    store checks the bytes then writes, not atomically (a documented limitation, as :func:`create_bytes`)."""
    inner = _innermost(store)
    with _if_unchanged(store, f"replace {key} in", key):
        if _is_s3(inner):
            bucket, name = _s3_object(inner, key)
            sync(_if_match(inner.fs, "put_object", Bucket=bucket, Key=name, Body=data, IfMatch=expected.tag))
        elif (path := local_file(inner, key)) is not None:
            _replace_file(path, data, expected)
        else:
            _check_bytes(inner, key, expected)
            write_bytes(inner, key, data)
    if isinstance(store, CountingStore):
        store.counts.add("set", written=len(data))


def delete_if_unchanged(store: Store, key: str, *, expected: Tagged) -> None:
    """Delete the object at ``key`` only if it is still the version ``expected``; :class:`CommitConflictError` if it
    changed meanwhile (nothing there: nothing to do). S3 uses a conditional DELETE (``If-Match``: AWS and Ceph RGW;
    MinIO ignores it, and deletes unconditionally); a local folder locks the file and checks it as
    :func:`replace_bytes` does; another store checks its bytes."""
    inner = _innermost(store)
    with _if_unchanged(store, f"delete {key} from", key), suppress(FileNotFoundError):
        if _is_s3(inner):
            inner._check_writable()
            bucket, name = _s3_object(inner, key)
            sync(_if_match(inner.fs, "delete_object", Bucket=bucket, Key=name, IfMatch=expected.tag))
        elif (path := local_file(inner, key)) is not None:
            with _locked_as_read(path, expected):
                path.unlink()
        else:
            _check_bytes(inner, key, expected)
            delete_key(inner, key)
    if isinstance(store, CountingStore):
        store.counts.add("delete", keys=[key])


@contextmanager
def _if_unchanged(store: Store, doing: str, key: str) -> Iterator[None]:
    """A conditional write's refusal (S3's 412 Precondition Failed, a local file found changed, a missing object) as
    :class:`CommitConflictError`; the store's other failures as :class:`StoreError` (:func:`_failures`)."""
    inner = _innermost(store)
    with _failures(doing, store):
        try:
            yield
        except FileNotFoundError as exc:
            raise CommitConflictError(f"{key} was deleted from {store_url(store)} meanwhile") from exc
        except OSError as exc:
            code, status = _s3_error(exc)
            if isinstance(exc, FileExistsError) or status == 412 or code in _CONDITION_FAILED:
                raise CommitConflictError(f"{key} in {store_url(store)} was changed by another writer meanwhile"
                                          ) from exc
            if status in (400, 501) and _is_s3(inner):  # s3fs makes a 400 the OSError(EINVAL) of a 412 too
                said = str(exc).rstrip(".")
                raise StoreError(f"cannot {doing} {store_url(store)}: the store refused a conditional request "
                                 f"(If-Match) with {status} {code}: {said}. {CONDITIONAL_WRITES}") from exc
            raise
        finally:
            if _is_s3(inner):
                inner.fs.invalidate_cache("/".join(_s3_object(inner, key)))


# S3's answers to a conditional request whose condition did not hold: 412 (its code as AWS, MinIO and Ceph name it),
# and AWS's 409 when another conditional write of the key was under way (it says: read the object again, retry)
_CONDITION_FAILED = frozenset({"PreconditionFailed", "ConditionalRequestConflict"})


def _s3_error(exc: BaseException) -> tuple[str, int | None]:
    """The S3 error code and HTTP status of the answer s3fs turned into ``exc`` (its cause), or ``("", None)``: s3fs
    makes OSError(EINVAL) of a 412 and of a 400 (InvalidArgument, InvalidRequest) alike."""
    response = getattr(exc.__cause__, "response", None)
    if not isinstance(response, Mapping):
        return "", None
    return str(response.get("Error", {}).get("Code", "")), response.get("ResponseMetadata", {}).get("HTTPStatusCode")


async def _if_match(fs: Any, method: str, **kwargs: Any) -> Any:
    """``fs._call_s3(method, **kwargs)`` with its ``IfMatch``, refused if s3fs would drop it: it sends only the
    parameters its botocore knows, and one from before S3's If-Match (2024-11) sent the request unconditionally."""
    await fs.set_session()
    s3 = await fs.get_s3(kwargs.get("Bucket"))
    if "IfMatch" not in fs._filter_kwargs(getattr(s3, method), {"IfMatch": kwargs["IfMatch"]}):
        import botocore

        raise StoreError(f"this botocore ({botocore.__version__}) does not know S3's If-Match on {method}, and the "
                         f"request would go unconditionally: upgrade botocore (and aiobotocore) to a release of "
                         f"2024-12 or later")
    return await fs._call_s3(method, **kwargs)


def _s3_object(store: FsspecStore, key: str) -> tuple[str, str]:
    """The bucket and object name of ``key`` in an S3 store."""
    bucket, _, name = f"{store.path.rstrip('/')}/{key}".partition("/")
    return bucket, name


def _check_bytes(store: Store, key: str, expected: Tagged) -> None:
    """FileExistsError unless ``key`` holds ``expected``'s bytes (a store without tags; not atomic with what
    follows)."""
    found = read_bytes(store, key)
    if found is None:
        raise FileNotFoundError(key)
    if found != expected.data:
        raise FileExistsError(key)


@contextmanager
def _locked_as_read(path: Path, expected: Tagged) -> Iterator[None]:
    """Hold the file at ``path`` locked (``flock``) while it is the one read (the same file at the path, unchanged);
    FileExistsError if it is not: a second writer waits for the first's lock, then finds the path holds another
    file, or none."""
    with path.open("rb") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        # its bytes too: a file system with coarse times may give a later file the freed inode, time and size
        if (_file_tag(os.fstat(f.fileno())) != expected.tag or _file_tag(path.stat()) != expected.tag
                or f.read() != expected.data):
            raise FileExistsError(path)
        yield


def _replace_file(path: Path, data: bytes, expected: Tagged) -> None:
    """:func:`replace_bytes` in a local folder: the file at ``path`` replaced by a rename while locked as read."""
    with _locked_as_read(path, expected):
        tmp = path.with_suffix(f".{uuid.uuid4().hex}.partial")
        try:
            tmp.write_bytes(data)
            tmp.replace(path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


def _is_s3(store: Store) -> bool:
    return isinstance(store, FsspecStore) and "s3" in (store.fs.protocol or ())


def close_store_clients() -> None:
    """Close the S3 clients of this process's cached filesystems (zarr's stores keep theirs open) on zarr's event
    loop, which they were opened on, while it runs: at exit s3fs's own finalizer comes after zarr has stopped the
    loop, and then closes the sockets only (aiohttp's "Unclosed client session" on stderr)."""
    from s3fs import S3FileSystem

    for fs in list(S3FileSystem._cache.values()):
        if (creator := getattr(fs, "_s3creator", None)) is None:
            continue
        try:
            sync(creator.__aexit__(None, None, None), timeout=5)
        except Exception as exc:  # at exit: nothing to do but say it
            log.debug("closing the S3 client of %r: %s", fs, exc)


def _innermost(store: Store) -> Store:
    while isinstance(store, WrapperStore):
        store = store._store
    return store


def pending_io(timeout: float, *, what: str = "store operations") -> int:
    """Wait up to ``timeout`` seconds for the store operations running in zarr's I/O loop to end; how many still run
    (-1: the loop does not answer). A caller interrupted (Ctrl-C, SIGTERM) while it waited for one stops waiting,
    but the operation goes on there: a writer must not let go of its lock before its writes have landed."""
    loop = zarr_sync.loop[0]
    if loop is None or not loop.is_running():
        return 0

    async def others() -> int:
        return sum(1 for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done())

    deadline = time.monotonic() + timeout
    told = False
    while True:
        try:
            left = asyncio.run_coroutine_threadsafe(others(), loop).result(max(deadline - time.monotonic(), 0.1))
        except (TimeoutError, RuntimeError):  # the loop is stuck or closing: what runs there cannot be told
            return -1
        if not left or time.monotonic() >= deadline:
            return left
        if not told:
            log.warning("waiting up to %g s for %s to end (%d)", timeout, what, left)
            told = True
        time.sleep(0.05)


def cancel_pending_io(timeout: float) -> None:
    """Cancel the store operations still running in zarr's I/O loop, and wait up to ``timeout`` seconds for them to
    end: at a command's exit, the reads that a failed one's siblings left (a gather raises at its first failure and
    leaves the others running). Left to the garbage collector once the loop has stopped, each printed a traceback after
    the command's one error line ("Exception ignored in: <coroutine ...> ... was created in a different Context");
    cancelled, each ends in its own task."""
    loop = zarr_sync.loop[0]
    if loop is None or not loop.is_running():
        return

    async def cancel_others() -> None:
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)

    with suppress(TimeoutError, RuntimeError):  # a loop stuck or closing: nothing more to do at exit
        asyncio.run_coroutine_threadsafe(cancel_others(), loop).result(timeout + 1)


def local_file(store: Store, key: str) -> Path | None:
    """The file of ``key`` when ``store`` is a local folder (a path only this machine, or a shared volume, holds);
    None for an object store."""
    inner = _innermost(store)
    return Path(inner.root) / key if isinstance(inner, LocalStore) else None


@contextmanager
def replacing(path: str | os.PathLike[str]) -> Iterator[str]:
    """A temporary name beside the local file ``path`` to write, renamed to ``path`` once written: a failure
    halfway (Ctrl-C, a full disk) leaves nothing, and the file an earlier run wrote stays whole until the new one
    is. A GDAL virtual path (``/vsimem/...``) is written as it is. A missing folder is a FileNotFoundError naming it
    and ``path``."""
    target = os.fspath(path)
    if target.startswith("/vsi"):
        yield target
        return
    folder, name = os.path.split(os.path.abspath(target))
    if not os.path.isdir(folder):  # else the error named the hidden .part file, a name the caller never gave
        raise FileNotFoundError(errno.ENOENT, f"no folder {folder} to write {name} in: make it first", target)
    part = os.path.join(folder, f".{name}.{uuid.uuid4().hex[:12]}.part")  # one of its own per writer
    try:
        yield part
        os.replace(part, target)
    finally:
        Path(part).unlink(missing_ok=True)


def key_exists(store: Store, key: str) -> bool:
    """Whether ``key`` exists (a HEAD on S3)."""
    with _failures(f"look up {key} in", store):
        return bool(sync(store.exists(key)))


def read_json(store: Store, key: str) -> Any | None:
    """The JSON document at ``key``, or ``None`` if absent; :class:`CorruptDocumentError` if it is not JSON."""
    return parse_json(store, key, read_bytes(store, key))


def read_json_many(store: Store, keys: Sequence[str]) -> list[Any | None]:
    """:func:`read_json` of each of ``keys``, all requested at once: on S3 one round trip for a catalog's items,
    not one after another."""
    return [parse_json(store, key, data) for key, data in zip(keys, _read_many(store, keys), strict=True)]


def read_bytes_many(store: Store, keys: Sequence[str]) -> list[bytes | None]:
    """:func:`read_bytes` of each of ``keys`` (None if absent), all requested at once."""
    return _read_many(store, keys)


def read_tails(store: Store, keys: Sequence[str], nbytes: int) -> list[bytes | None]:
    """The last ``nbytes`` of each of ``keys`` (the whole object if shorter; None if absent), all requested at once:
    a Parquet file's footer without its data."""
    return _read_many(store, keys, SuffixByteRequest(nbytes))


def _read_many(store: Store, keys: Sequence[str], byte_range: ByteRequest | None = None) -> list[bytes | None]:
    """``byte_range`` (all if None) of each of ``keys`` (None if absent), all requested at once."""
    async def _get_all() -> list[Buffer | None]:
        proto = default_buffer_prototype()
        return await asyncio.gather(*(store.get(key, prototype=proto, byte_range=byte_range) for key in keys))

    if not keys:
        return []
    with _failures(f"read {listed_names(keys, most=2)} from", store):
        bufs = sync(_get_all())
    return [None if buf is None else buf.to_bytes() for buf in bufs]


def in_steps(one: Callable[[Any], Awaitable[Any]], items: Sequence[Any], step: int
             ) -> Iterator[tuple[Sequence[Any], list[Any]]]:
    """``one`` awaited for each of ``items``, ``step`` of them at once and the next ``step`` after them (bounded
    requests in flight): each step's items and their results, as they come (a progress bar moves by them)."""
    async def _step(part: Sequence[Any]) -> list[Any]:
        return await asyncio.gather(*(one(item) for item in part))

    for i in range(0, len(items), step):
        part = items[i:i + step]
        yield part, sync(_step(part))


def parse_json(store: Store, key: str, data: bytes | None) -> Any | None:
    """``data`` read from ``key`` as JSON (``None`` stays ``None``); :class:`CorruptDocumentError` if it is not."""
    if data is None:
        return None
    try:
        return json.loads(data)
    except ValueError as exc:
        raise CorruptDocumentError(f"{key} in {store_url(store)} is not valid JSON ({exc})") from None


def json_bytes(obj: Any) -> bytes:
    """``obj`` as the bytes of a JSON document, as :func:`write_json` writes it."""
    return json.dumps(obj, indent=1, sort_keys=False, default=str).encode()


def write_json(store: Store, key: str, obj: Any, *, create_only: bool = False) -> None:
    (create_bytes if create_only else write_bytes)(store, key, json_bytes(obj))


def list_keys(store: Store, prefix: str) -> list[str]:
    """Keys under ``prefix`` (recursive), sorted."""

    async def _collect() -> list[str]:
        return [k async for k in store.list_prefix(prefix)]

    with _failures(f"list {prefix} in", store):
        return sorted(sync(_collect()))


def list_children(store: Store, prefix: str) -> list[str]:
    """Names directly under ``prefix`` (one delimited listing on S3), sorted."""
    return list_each(store, [prefix])[prefix]


def list_each(store: Store, prefixes: Sequence[str]) -> dict[str, list[str]]:
    """:func:`list_children` of each of ``prefixes``, listed at once: on S3 one round trip's wait for them all,
    not one after another."""

    async def _collect(prefix: str) -> tuple[str, list[str]]:
        return prefix, sorted({k.split("/", 1)[0] async for k in store.list_dir(prefix)})

    async def _all() -> dict[str, list[str]]:
        return dict(await asyncio.gather(*map(_collect, prefixes)))

    shown = ", ".join(p or "the top level" for p in prefixes[:2]) + \
        (f" and {len(prefixes) - 2} more" if len(prefixes) > 2 else "")
    with _failures(f"list {shown} in", store):
        found = sync(_all())
        if prefixes and not any(found.values()) and isinstance(store, FsspecStore) and \
                store_url(store).startswith("s3://"):
            bucket = store.path.split("/")[0]  # zarr lists a missing bucket as empty: no "0 found" of a typo
            if sync(_no_such_bucket(store.fs, bucket)):
                raise StoreError(f"cannot list {shown} in {store_url(store)}: {_no_bucket(bucket, store.fs)}")
        return found


async def _no_such_bucket(fs: Any, bucket: str) -> bool:
    """Whether S3 says ``bucket`` does not exist (404). Anything else is no answer to that: credentials allowed
    to list a prefix only are refused HEAD on the bucket (403), and s3fs's ``exists`` took that for "missing"."""
    try:
        await fs._call_s3("head_bucket", Bucket=bucket)
    except FileNotFoundError:
        return True
    except Exception:  # refused, throttled, unreachable: the listing's own errors say so
        return False
    return False


def delete_key(store: Store, key: str) -> None:
    """Delete one object (none there: nothing to do); :class:`StoreError` if the store does not."""
    _delete(store, key, prefix=False)


def delete_prefix(store: Store, prefix: str) -> None:
    """Delete every key under ``prefix`` (batched deletes on S3); :class:`StoreError` if one stays."""
    _delete(store, prefix, prefix=True)


_DELETE_TRIES = 4  # a key S3 fails with a transient error is deleted again, this many times in all
_TRANSIENT = frozenset({"InternalError", "SlowDown", "ServiceUnavailable", "RequestTimeout"})


def _delete(store: Store, key: str, *, prefix: bool) -> None:
    inner = _innermost(store)
    with _failures(f"delete {key} from", store):
        if _is_s3(inner):
            inner._check_writable()
            sync(_s3_delete(inner, key, prefix=prefix))
        else:
            sync(store.delete_dir(key) if prefix else store.delete(key))


async def _s3_delete(store: FsspecStore, key: str, *, prefix: bool) -> None:
    """Delete ``key`` (or every object under it) from an S3 store, reading the answer: S3 refuses or fails keys of
    a DeleteObjects one by one, in an HTTP 200 answer, which s3fs (and so zarr) leaves unread, so that a refused
    delete (a bucket policy, Object Lock) or a failed one (InternalError) passed for done, and a killed run's
    leftovers were read as the next run's date. Transient errors are tried again; the others raise."""
    fs, path = store.fs, f"{store.path.rstrip('/')}/{key}"
    bucket = path.split("/")[0]
    names = [p.partition("/")[2] for p in await fs._find(path)] if prefix else [path.partition("/")[2]]
    for attempt in range(_DELETE_TRIES):
        errors = []
        for start in range(0, len(names), 1000):  # S3's most keys per request
            answer = await fs._call_s3("delete_objects", Bucket=bucket, Delete={
                "Objects": [{"Key": name} for name in names[start:start + 1000]], "Quiet": True})
            errors += answer.get("Errors", [])
        names = [e["Key"] for e in errors if e.get("Code") in _TRANSIENT]
        if not names or len(names) < len(errors) or attempt == _DELETE_TRIES - 1:
            break
        await asyncio.sleep(0.1 * 4**attempt)
    fs.invalidate_cache(path)
    if errors:
        first = errors[0]
        raise StoreError(f"S3 did not delete {len(errors)} object(s) under {store_url(store)}, among them "
                         f"{first.get('Key')}: {first.get('Code')}: {first.get('Message')} (a bucket policy or "
                         f"Object Lock refusing deletes, or a fault of the store); what this command does after "
                         f"the delete was not done")


class RequestCounts:
    """Requests and bytes seen by a :class:`CountingStore` (shared by its read-only/read-write copies)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: Counter[str] = Counter()
        self.bytes_read = 0
        self.bytes_written = 0
        self.keys_read: list[str] = []

    def reset(self) -> None:
        with self.lock:
            self.requests.clear()
            self.bytes_read = self.bytes_written = 0
            self.keys_read.clear()

    def add(self, verb: str, *, n: int = 1, read: int = 0, written: int = 0, keys: Iterable[str] = ()) -> None:
        with self.lock:
            self.requests[verb] += n
            self.bytes_read += read
            self.bytes_written += written
            self.keys_read.extend(keys)


class CountingStore(WrapperStore[Store]):
    """A zarr store wrapper that counts requests and bytes, by verb.

    Used to measure write amplification during ingest, and by tests and benchmarks to count the
    chunk reads a query makes (a count, not a timing). Copies zarr makes of it (``with_read_only``)
    share the same :class:`RequestCounts`.
    """

    def __init__(self, store: Store, counts: RequestCounts | None = None) -> None:
        super().__init__(store)
        self.counts = counts if counts is not None else RequestCounts()

    def __getstate__(self) -> dict:
        return {"_store": self._store}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["_store"])

    def _with_store(self, store: Store) -> CountingStore:
        return type(self)(store, self.counts)

    @property
    def requests(self) -> Counter[str]:
        return self.counts.requests

    @property
    def bytes_read(self) -> int:
        return self.counts.bytes_read

    @property
    def bytes_written(self) -> int:
        return self.counts.bytes_written

    @property
    def keys_read(self) -> list[str]:
        return self.counts.keys_read

    def reset(self) -> None:
        self.counts.reset()

    async def get(self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None) -> Buffer | None:
        buf = await self._store.get(key, prototype, byte_range)
        self.counts.add("get", read=0 if buf is None else len(buf), keys=(key,))
        return buf

    async def get_partial_values(self, prototype: BufferPrototype,
                                 key_ranges: Iterable[tuple[str, ByteRequest | None]]) -> list[Buffer | None]:
        key_ranges = list(key_ranges)
        out = await self._store.get_partial_values(prototype, key_ranges)
        self.counts.add("get", n=len(key_ranges), read=sum(len(b) for b in out if b is not None),
                        keys=(k for k, _ in key_ranges))
        return out

    async def set(self, key: str, value: Buffer) -> None:
        await self._store.set(key, value)
        self.counts.add("set", written=len(value))

    async def set_if_not_exists(self, key: str, value: Buffer) -> None:
        await self._store.set_if_not_exists(key, value)
        self.counts.add("set", written=len(value))

    async def exists(self, key: str) -> bool:
        self.counts.add("exists")
        return await self._store.exists(key)

    def list_prefix(self, prefix: str) -> AsyncIterator[str]:
        self.counts.add("list")
        return self._store.list_prefix(prefix)

    def list_dir(self, prefix: str) -> AsyncIterator[str]:
        self.counts.add("list")
        return self._store.list_dir(prefix)
