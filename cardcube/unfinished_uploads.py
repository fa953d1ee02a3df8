"""Multipart uploads a killed writer left unfinished on S3: found under a prefix, and aborted.

s3fs sends an object of :data:`MULTIPART_FROM` bytes or more (twice its 50 MiB part: ``S3FileSystem._pipe_file``,
which zarr's ``FsspecStore.set`` and :func:`cardcube.storage.write_bytes` call) as a multipart upload: started, sent
in parts, then completed (a failed part aborts it). A process that ends in between (``kill -9``, the OOM killer, a
node lost, a stopped run ending with the upload still going) leaves the upload and its parts in the bucket: no listing
of objects shows them, and they are billed until they are aborted. A shard of the default layout stays below that
size (16 dates of 1024 x 1024 pixels: 32 MiB of S2's uint16, 64 MiB of S1's float32, before compression); a larger
``--chunks`` layout's may not, nor an extraction's ``parcels.parquet`` of a large register.

Nothing here decides what is safe to abort: the caller gives the prefix and the age (:func:`ingest.expire.expire`:
its collection's, under the writer lock, those started longer ago than a writer's lock goes stale). The requests
are s3fs's client's, as cardcube's own deletes (:mod:`cardcube.storage`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from zarr.abc.store import Store
from zarr.core.sync import sync

from cardcube.storage import innermost_store, is_s3_store, s3_object, store_failures
from cardcube.store_errors import s3_error

MULTIPART_FROM = 2 * 50 * 2**20  # bytes from which s3fs uploads an object in parts (its _pipe_file's chunksize x 2)
_REFUSED = (403, 405, 501)  # a store that does not list or abort uploads (a look-alike), or keys not allowed to


@dataclass(frozen=True, slots=True)
class UnfinishedUpload:
    """A multipart upload started and neither completed nor aborted: the key it was to write (in its store), its
    id, when the store says it was started, and the bytes of the parts it holds (None: the store did not list
    them)."""

    key: str
    upload_id: str
    initiated: datetime
    size: int | None = None


def unfinished_uploads(store: Store, prefix: str, *, started_before: datetime) -> list[UnfinishedUpload] | None:
    """The uploads under ``prefix`` of ``store`` started before ``started_before`` (an aware time), sorted by key;
    an empty list for a store that is no S3 store; None if the store refuses to list them (a policy without
    ``s3:ListBucketMultipartUploads``, a gateway without the request)."""
    inner = innermost_store(store)
    if not is_s3_store(inner):
        return []
    with store_failures(f"list the unfinished uploads under {prefix} in", store):
        try:
            return sync(_listed(inner, prefix, started_before))
        except OSError as exc:
            if s3_error(exc)[1] in _REFUSED:
                return None
            raise


async def _listed(store: Any, prefix: str, started_before: datetime) -> list[UnfinishedUpload]:
    fs, (bucket, name) = store.fs, s3_object(store, prefix)
    root = name[: len(name) - len(prefix)]  # the store's own path in the bucket, which its keys leave out
    found, markers = [], {}
    while True:  # 1,000 a page
        page = await fs._call_s3("list_multipart_uploads", Bucket=bucket, Prefix=name, **markers)
        found += [u for u in page.get("Uploads", []) if u["Initiated"] < started_before]
        if not page.get("IsTruncated"):
            break
        markers = {"KeyMarker": page["NextKeyMarker"], "UploadIdMarker": page["NextUploadIdMarker"]}
    sizes = await asyncio.gather(*(_parts_size(fs, bucket, u["Key"], u["UploadId"]) for u in found))
    return sorted((UnfinishedUpload(u["Key"].removeprefix(root), u["UploadId"], u["Initiated"], size)
                   for u, size in zip(found, sizes, strict=True)), key=lambda u: (u.key, u.initiated))


async def _parts_size(fs: Any, bucket: str, name: str, upload_id: str) -> int | None:
    """The bytes of the parts an upload holds (None if the store does not list them)."""
    size, marker = 0, 0
    while True:
        try:
            page = await fs._call_s3("list_parts", Bucket=bucket, Key=name, UploadId=upload_id,
                                     PartNumberMarker=marker)
        except FileNotFoundError:  # completed or aborted meanwhile: it holds nothing now
            return 0
        except OSError as exc:
            if s3_error(exc)[1] in _REFUSED:
                return None
            raise
        size += sum(part["Size"] for part in page.get("Parts", []))
        if not page.get("IsTruncated"):
            return size
        marker = page["NextPartNumberMarker"]


def abort_uploads(store: Store, uploads: Sequence[UnfinishedUpload], *, check: Callable[[], None]) -> bool:
    """Abort ``uploads`` (of :func:`unfinished_uploads`), their parts deleted; ``check`` runs before each (the
    writer's fence). False if the store refuses to abort them (keys not allowed ``s3:AbortMultipartUpload``)."""
    inner = innermost_store(store)
    if uploads:
        inner._check_writable()  # as every delete of cardcube: a store opened read-only aborts nothing
    for upload in uploads:
        check()
        with store_failures(f"abort the unfinished upload of {upload.key} in", store):
            try:
                sync(_abort(inner, upload))
            except OSError as exc:
                if s3_error(exc)[1] in _REFUSED:
                    return False
                raise
    return True


async def _abort(store: Any, upload: UnfinishedUpload) -> None:
    bucket, name = s3_object(store, upload.key)
    with suppress(FileNotFoundError):  # NoSuchUpload: completed or aborted meanwhile
        await store.fs._call_s3("abort_multipart_upload", Bucket=bucket, Key=name, UploadId=upload.upload_id)
