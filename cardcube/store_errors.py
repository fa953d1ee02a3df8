"""A store's failures as cardcube's errors: which exceptions of s3fs, botocore, aiohttp and zarr say a store
failed, which of them say it cannot be reached or answer now (:class:`StoreUnavailableError`, worth a later try),
and the one :class:`StoreError` for each, naming what was being done where. No store is touched here:
:mod:`cardcube.storage` wraps its verbs in these."""

from __future__ import annotations

import errno
import sys
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlparse

from botocore.exceptions import BotoCoreError, HTTPClientError, NoCredentialsError
from botocore.exceptions import ConnectionError as BotoConnectionError

from cardcube.errors import StoreError, StoreUnavailableError, exception_chain

# What a store raises when it fails: s3fs an OSError once its retries are exhausted, botocore its own errors
# when the endpoint cannot be reached at all, zarr's sync() a RuntimeError.
FAILURES = (OSError, RuntimeError, BotoCoreError)
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


def http_answer(exc: BaseException, doing: str, where: str) -> StoreError | None:
    """The :class:`StoreError` for a web server's answer other than what was asked (fsspec's HTTP file system raises
    aiohttp's own error for any status but a 404), naming its status; None for another error. A folder listing
    refused (403, or 404 or 405 for a folder URL) is a web server that lists no folders (nginx without autoindex, a
    bucket's website), where cardcube finds a collection's versions by listing its ledger's folder. An answer cut off
    midway (aiohttp's error, once s3fs's tries are spent) is the store not answering (:func:`failure`)."""
    if unavailable(exc):
        return failure(exc, doing, where)
    status = getattr(exc, "status", None)
    if not isinstance(status, int):
        return None
    said = f"the server answered {status} {getattr(exc, 'message', '') or ''}".rstrip()
    if doing.startswith("list") and status in (403, 404, 405):
        said += (": it lists no folders, and the cube's versions are found by listing its ledger's folder; serve the "
                 "cube with `cardcube catalog serve --cube DIR` (which lists them), or turn the server's folder "
                 "listings on (nginx: autoindex on)")
    return StoreError(f"cannot {doing} {where}: {said}")


def failure(exc: BaseException, doing: str, where: str) -> StoreError:
    """The :class:`StoreError` for a failure ``exc`` while ``doing`` something to ``where``, naming both: a
    :class:`StoreUnavailableError` when the store cannot be reached or does not answer (:func:`unavailable`)."""
    if isinstance(exc, NoCredentialsError):  # nothing to retry: say where keys are looked for
        return StoreError(f"cannot {doing} {where}: no S3 credentials found; set AWS_ACCESS_KEY_ID and "
                          f"AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), or pass key and secret in storage_options")
    if unavailable(exc):
        return StoreUnavailableError(f"cannot {doing} {where}: the store cannot be reached or does not answer "
                                     f"({type(exc).__name__}: {exc})")
    if isinstance(exc, PermissionError):  # s3fs's 403: wrong keys, or keys not allowed this (not retried)
        said = " ".join(str(part) for part in reversed(s3_error(exc)) if part)  # "403 AccessDenied"
        return StoreError(f"cannot {doing} {where}: the store refused it ({said + ': ' if said else ''}{exc}): "
                          f"the S3 keys in use (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or "
                          f"storage_options' key and secret) are wrong, or not allowed to do this there")
    return StoreError(f"cannot {doing} {where} (after retries): {type(exc).__name__}: {exc}")


# S3's answers to a conditional request whose condition did not hold: 412 (its code as AWS, MinIO and Ceph name it),
# and AWS's 409 when another conditional write of the key was under way (it says: read the object again, retry)
CONDITION_FAILED = frozenset({"PreconditionFailed", "ConditionalRequestConflict"})


def s3_error(exc: BaseException) -> tuple[str, int | None]:
    """The S3 error code and HTTP status of the answer s3fs turned into ``exc`` (its cause), or ``("", None)``: s3fs
    makes OSError(EINVAL) of a 412 and of a 400 (InvalidArgument, InvalidRequest) alike."""
    response = getattr(exc.__cause__, "response", None)
    if not isinstance(response, Mapping):
        return "", None
    return str(response.get("Error", {}).get("Code", "")), response.get("ResponseMetadata", {}).get("HTTPStatusCode")


def no_bucket(bucket: str, fs: Any = None) -> str:
    """Why S3 answered that ``bucket`` does not exist; ``fs`` (s3fs's) names an endpoint with a path, which the S3
    client puts before the bucket: the bucket's own URL given as the endpoint (``http://gateway:7480/BUCKET``)."""
    said = f"the bucket {bucket} does not exist; create it first (cardcube creates no buckets) or correct the URL"
    endpoint = getattr(fs, "endpoint_url", None) or (getattr(fs, "client_kwargs", None) or {}).get("endpoint_url")
    url = urlparse(endpoint) if isinstance(endpoint, str) else None
    if url and url.path.strip("/"):
        said += (f" (the endpoint {endpoint} has a path, {url.path.rstrip('/')}, which the S3 client puts before the "
                 f"bucket: give the gateway's root, {url.scheme}://{url.netloc}, unless the gateway is served there)")
    return said
