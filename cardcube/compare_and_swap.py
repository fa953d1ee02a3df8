"""Writes that hold only if an object is still the version read: an object read with its version's tag
(:class:`Tagged`), then replaced or deleted only if it is unchanged (a compare-and-swap), so that of two writers
that read the same version one wins and the other is told. The commit protocol's ledger and writer lock rest on
them (:mod:`ingest.commit`); a create-only write is :func:`cardcube.storage.create_bytes`."""

from __future__ import annotations

import fcntl
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zarr.abc.store import Store
from zarr.core.sync import sync

from cardcube.counting_store import CountingStore
from cardcube.errors import CommitConflictError, StoreError
from cardcube.storage import (
    delete_key,
    innermost_store,
    is_s3_store,
    local_file,
    read_bytes,
    refused_condition,
    s3_object,
    store_failures,
    store_url,
    write_bytes,
)
from cardcube.store_errors import CONDITION_FAILED, s3_error


@dataclass(frozen=True, slots=True)
class Tagged:
    """An object's bytes as read, and the store's tag of that version of it (S3's ETag; a local file's device,
    inode and modification time): what :func:`replace_bytes` checks is still there before it replaces it."""

    data: bytes
    tag: str


def read_tagged(store: Store, key: str) -> Tagged | None:
    """The object at ``key`` with its version's tag (one GET on S3), or ``None`` if absent."""
    inner = innermost_store(store)
    with store_failures(f"read {key} from", store):
        if is_s3_store(inner):
            try:
                tagged = sync(_get_tagged(inner.fs, *s3_object(inner, key)))
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
    store checks the bytes then writes, not atomically (a documented limitation, as
    :func:`cardcube.storage.create_bytes`)."""
    inner = innermost_store(store)
    with _if_unchanged(store, f"replace {key} in", key):
        if is_s3_store(inner):
            bucket, name = s3_object(inner, key)
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
    inner = innermost_store(store)
    with _if_unchanged(store, f"delete {key} from", key), suppress(FileNotFoundError):
        if is_s3_store(inner):
            inner._check_writable()
            bucket, name = s3_object(inner, key)
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
    :class:`CommitConflictError`; the store's other failures as :class:`StoreError` (:func:`store_failures`)."""
    inner = innermost_store(store)
    with store_failures(doing, store):
        try:
            yield
        except FileNotFoundError as exc:
            raise CommitConflictError(f"{key} was deleted from {store_url(store)} meanwhile") from exc
        except OSError as exc:
            code, status = s3_error(exc)
            if isinstance(exc, FileExistsError) or status == 412 or code in CONDITION_FAILED:
                raise CommitConflictError(f"{key} in {store_url(store)} was changed by another writer meanwhile"
                                          ) from exc
            if status in (400, 501) and is_s3_store(inner):  # s3fs makes a 400 the OSError(EINVAL) of a 412 too
                raise refused_condition(exc, doing, store, "a conditional request (If-Match)") from exc
            raise
        finally:
            if is_s3_store(inner):
                inner.fs.invalidate_cache("/".join(s3_object(inner, key)))


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
