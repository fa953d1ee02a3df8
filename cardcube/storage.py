"""Where a cube lives: a URL (local folder or ``s3://``) or a zarr store, resolved in one place.

cardcube has no storage class of its own: everything goes through a zarr ``Store`` (``LocalStore``
for folders, ``FsspecStore`` over s3fs for object storage). The few extra verbs the commit protocol
needs (read/write/list small objects, create-only writes) are thin functions over that interface.

Beside it: :mod:`cardcube.source_files` (a file outside a cube, a parcel file in a bucket, read with the same
options), :mod:`cardcube.compare_and_swap` (writes only if an object is still the version read),
:mod:`cardcube.store_errors` (a store's failures as cardcube's errors), :mod:`cardcube.endpoint_check` (an S3
endpoint told unusable at once), :mod:`cardcube.counting_store` (requests counted) and :mod:`cardcube.io_loop`
(zarr's I/O loop at a command's end).
"""

from __future__ import annotations

import asyncio
import copy
import errno
import functools
import json
import os
import re
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError
from zarr.abc.store import ByteRequest, Store, SuffixByteRequest
from zarr.core.buffer import Buffer, default_buffer_prototype
from zarr.core.sync import sync
from zarr.storage import FsspecStore, LocalStore, WrapperStore

from cardcube.counting_store import CountingStore
from cardcube.endpoint_check import CONNECT_TIMEOUT_S, check_endpoint, endpoint_of
from cardcube.errors import (
    CardcubeError,
    CommitConflictError,
    CorruptDocumentError,
    InvalidRequestError,
    StoreError,
)
from cardcube.store_errors import CONDITION_FAILED, FAILURES, failure, http_answer, no_bucket, s3_error

StoreLike = str | os.PathLike | Store
TIMEOUT_ATTEMPTS = 2  # tries of a request to a store opened with a ``timeout``: one retry, for a dropped connection

# botocore's standard retry mode backs off each request on 500/503/SlowDown; s3fs adds its own retries on top. Its
# adaptive mode also limits the whole client's send rate after a throttling error, recovering slowly: an ingest, many
# requests at once through one client, took 3x as long at 2 % and 10 % SlowDown and succeeded no more often
# (benchmarks/results/2026-12-07/retry-modes). Given as tries counting the first, the form botocore keeps: it
# rewrites a ``max_attempts`` (retries only) as those in the dict it is given, in place (s3_options gives a copy).
_S3_DEFAULTS: dict[str, Any] = {
    "config_kwargs": {"retries": {"total_max_attempts": 9, "mode": "standard"}},
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


def refuse_file(location: Any, what: str, *, made: bool = True) -> None:
    """:class:`InvalidRequestError` if ``location`` (a path or URL given for a folder to write, ``what``; ``made``:
    one made if missing, not one only read) is a local file: written to, it fails deep inside a write with the OS's
    "File exists"."""
    if isinstance(location, str | os.PathLike) and "://" not in os.fspath(location) and os.path.isfile(location):
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
        opts = s3_options(storage_options)
        if timeout is not None:
            opts = _bounded(opts, timeout)
        check_endpoint(opts, text, timeout=timeout)
        store = FsspecStore.from_url(text, storage_options=opts, read_only=read_only)
        if timeout is not None:
            store.fs.retries = 1  # s3fs's own loop of tries around botocore's (an attribute, not an option)
        return store
    return FsspecStore.from_url(text, storage_options=dict(storage_options or {}), read_only=read_only)


def s3_options(storage_options: Mapping[str, Any] | None) -> dict[str, Any]:
    """s3fs options: cardcube's defaults, then the environment's endpoint, then ``storage_options``. An endpoint
    given as s3fs's ``client_kwargs={"endpoint_url": ...}`` replaces the environment's (both reached botocore: it
    refused them, "multiple values for keyword argument 'endpoint_url'")."""
    given = dict(storage_options or {})
    env = s3_options_from_env()
    if "endpoint_url" in (given.get("client_kwargs") or {}):
        env.pop("endpoint_url", None)
    defaults = {k: copy.deepcopy(v) for k, v in _S3_DEFAULTS.items()  # a copy: botocore edits its config in place
                if k != "config_kwargs" or not _retries_set(given.get("profile"))}
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
        check_endpoint(s3_options(storage_options), url)


def _bounded(opts: dict[str, Any], timeout: float) -> dict[str, Any]:
    """s3fs options under which a request fails within about ``timeout`` seconds (see :func:`open_store`)."""
    if not timeout > 0:
        raise InvalidRequestError(f"a store timeout of {timeout} s: give a number of seconds above 0")
    per_try = timeout / TIMEOUT_ATTEMPTS
    config = {**opts.get("config_kwargs", {}), "connect_timeout": min(per_try, CONNECT_TIMEOUT_S),
              "read_timeout": per_try, "retries": {"total_max_attempts": TIMEOUT_ATTEMPTS, "mode": "standard"}}
    return {**opts, "config_kwargs": config}


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
        return endpoint_of(getattr(store.fs, "storage_options", None) or {})
    inner = getattr(store, "_store", None)
    return store_endpoint(inner) if isinstance(inner, Store) else None


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


@contextmanager
def store_failures(doing: str, store: Store) -> Iterator[None]:
    """A store failure while ``doing`` something to ``store`` as one :class:`StoreError` naming both."""
    try:
        yield
    except CardcubeError:
        raise
    except FileNotFoundError as exc:
        if not store_url(store).startswith("s3://"):
            raise StoreError(f"cannot {doing} {store_url(store)}: {type(exc).__name__}: {exc}") from exc
        bucket = store_url(store).removeprefix("s3://").split("/")[0]  # s3fs's NoSuchBucket (a missing key is None)
        missing = no_bucket(bucket, getattr(store, "fs", None))
        raise StoreError(f"cannot {doing} {store_url(store)}: {missing}") from exc
    except FAILURES as exc:
        raise failure(exc, doing, store_url(store)) from exc
    except Exception as exc:  # an HTTP server's answer (aiohttp's ClientResponseError), an answer cut off: no OSError
        if (answered := http_answer(exc, doing, store_url(store))) is None:
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
        raise failure(exc, f"read {what} from", store_url(store)) from exc
    except Exception as exc:  # an HTTP server's answer (aiohttp's ClientResponseError), an answer cut off: no OSError
        if (answered := http_answer(exc, f"read {what} from", store_url(store))) is None:
            raise
        raise answered from exc


def read_bytes(store: Store, key: str) -> bytes | None:
    """The object at ``key``, or ``None`` if absent."""
    with store_failures(f"read {key} from", store):
        buf = sync(store.get(key, prototype=default_buffer_prototype()))
    return None if buf is None else buf.to_bytes()


def write_bytes(store: Store, key: str, data: bytes) -> None:
    """Write (or replace) one object; atomic on S3 and, via rename, on a local folder."""
    with store_failures(f"write {key} to", store):
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
        with store_failures(f"write {listed_names(list(objects), most=2)} to", store):
            sync(_set_all())


CONDITIONAL_WRITES = ("cardcube's writer lock and commits need an S3 store that honours conditional writes, "
                      "If-None-Match: * on PUT and If-Match on PUT and DELETE (AWS S3, MinIO, Ceph RGW of 2024 or "
                      "later)")


def refused_condition(exc: BaseException, doing: str, store: Store, request: str) -> StoreError:
    """The error of a store that answered a conditional ``request`` (S3's If-None-Match or If-Match) with 400 or 501:
    it does not take the condition cardcube's commits rest on (:data:`CONDITIONAL_WRITES`)."""
    code, status = s3_error(exc)
    return StoreError(f"cannot {doing} {store_url(store)}: the store refused {request} with {status} {code}: "
                      f"{str(exc).rstrip('.')}. {CONDITIONAL_WRITES}")


def create_bytes(store: Store, key: str, data: bytes) -> None:
    """Create ``key`` only if it does not exist yet, atomically; else :class:`CommitConflictError`.

    A local folder uses zarr's exclusive ``os.link``; S3 uses a conditional PUT (``If-None-Match: *``).
    """
    buf = default_buffer_prototype().buffer.from_bytes(data)
    outer, store = store, innermost_store(store)
    with store_failures(f"create {key} in", store):
        try:
            if is_s3_store(store):
                sync(store.fs._pipe_file("/".join(s3_object(store, key)), data, mode="create"))
            elif isinstance(store, LocalStore):
                sync(store._set(key, buf, exclusive=True))
            else:  # not atomic: a check then a write; documented limitation for other stores
                if sync(store.exists(key)):
                    raise FileExistsError(key)
                sync(store.set(key, buf))
        except OSError as exc:  # a lost race is no store failure (AWS: 409 if the other create was under way)
            code, status = s3_error(exc)
            if status in (400, 501) and not isinstance(exc, FileExistsError) and is_s3_store(store):
                raise refused_condition(exc, f"create {key} in", store, "a create-only write (If-None-Match: *)"
                                        ) from exc
            if not (isinstance(exc, FileExistsError) or code in CONDITION_FAILED):
                raise
            raise CommitConflictError(
                f"{key} already exists in {store_url(store)}: another writer got there first"
            ) from exc
    if isinstance(outer, CountingStore):
        outer.counts.add("set", written=len(data))


def s3_object(store: FsspecStore, key: str) -> tuple[str, str]:
    """The bucket and object name of ``key`` in an S3 store."""
    bucket, _, name = f"{store.path.rstrip('/')}/{key}".partition("/")
    return bucket, name


def is_s3_store(store: Store) -> bool:
    """Whether ``store`` is an S3 store (s3fs's), whose conditional requests and deletes cardcube makes itself."""
    return isinstance(store, FsspecStore) and "s3" in (store.fs.protocol or ())


def innermost_store(store: Store) -> Store:
    """The store under every wrapper of ``store`` (a :class:`CountingStore`'s), or ``store`` itself."""
    while isinstance(store, WrapperStore):
        store = store._store
    return store


def local_file(store: Store, key: str) -> Path | None:
    """The file of ``key`` when ``store`` is a local folder (a path only this machine, or a shared volume, holds);
    None for an object store."""
    inner = innermost_store(store)
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
    with store_failures(f"look up {key} in", store):
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
    with store_failures(f"read {listed_names(keys, most=2)} from", store):
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
    """Write ``obj`` as JSON at ``key``; ``create_only``: only if the key does not exist yet (:func:`create_bytes`)."""
    (create_bytes if create_only else write_bytes)(store, key, json_bytes(obj))


def list_keys(store: Store, prefix: str) -> list[str]:
    """Keys under ``prefix`` (recursive), sorted."""

    async def _collect() -> list[str]:
        return [k async for k in store.list_prefix(prefix)]

    with store_failures(f"list {prefix} in", store):
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
    with store_failures(f"list {shown} in", store):
        found = sync(_all())
        if prefixes and not any(found.values()) and isinstance(store, FsspecStore) and \
                store_url(store).startswith("s3://"):
            bucket = store.path.split("/")[0]  # zarr lists a missing bucket as empty: no "0 found" of a typo
            if sync(_no_such_bucket(store.fs, bucket)):
                raise StoreError(f"cannot list {shown} in {store_url(store)}: {no_bucket(bucket, store.fs)}")
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
    inner = innermost_store(store)
    with store_failures(f"delete {key} from", store):
        if is_s3_store(inner):
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


