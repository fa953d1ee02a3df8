"""Multipart uploads a killed writer leaves unfinished on S3 (moto's server): when s3fs makes one, and finding and
aborting them (expire's sweep of a cube: tests/ingest/test_s3.py)."""

from __future__ import annotations

import inspect
import subprocess
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from s3fs import S3FileSystem

from cardcube.spec import ChunkLayout, cube_spec
from cardcube.storage import list_keys, open_store
from cardcube.unfinished_uploads import MULTIPART_FROM, abort_uploads, unfinished_uploads


def test_s3fs_uploads_in_parts_from_the_size_cardcube_says():
    """zarr's FsspecStore.set, and so every write of cardcube but the ledger's compare-and-swap, calls s3fs's
    _pipe_file with its default part size: an object of twice that or more goes as a multipart upload."""
    chunksize = inspect.signature(S3FileSystem._pipe_file).parameters["chunksize"].default
    assert 2 * chunksize == MULTIPART_FROM
    assert "create_multipart_upload" in inspect.getsource(S3FileSystem._pipe_file)


def test_a_shard_of_the_default_layout_goes_in_one_put():
    """16 dates of 1024 x 1024 pixels of the widest band (S1's float32: 64 MiB before compression; a chunk that does
    not compress is stored whole, with a few bytes of header and checksum): one PUT. A larger --chunks may not."""
    layout = ChunkLayout()
    for collection in ("s2", "s1"):
        spec = cube_spec(collection)
        for band in spec.bands:
            shard = layout.shards(band.resolution)
            raw = int(np.prod(shard)) * np.dtype(band.dtype).itemsize
            assert raw + 2**20 < MULTIPART_FROM, (collection, band.name, shard)
    assert np.prod(ChunkLayout(time=32).shards(10)) * 4 >= MULTIPART_FROM  # S1 in 32-date shards: in parts


def test_a_writer_killed_midway_through_a_large_object_leaves_its_upload_which_is_found_and_aborted(s3_bucket):
    """A process writing an object of MULTIPART_FROM bytes through cardcube (as zarr writes a shard), killed once its
    upload has started: no object, but an upload under the prefix, which a listing of objects does not show."""
    env = s3_bucket.server.environment()
    code = ("import sys; from cardcube.storage import open_store, write_bytes; "
            f"write_bytes(open_store(sys.argv[1]), 's2/T/c/0/0/0', bytes({MULTIPART_FROM}))")
    writer = subprocess.Popen([sys.executable, "-c", code, s3_bucket.url_for("cube")], env=env)
    client, deadline = s3_bucket.server.client(), time.monotonic() + 120
    try:
        while not client.list_multipart_uploads(Bucket=s3_bucket.name).get("Uploads"):
            assert writer.poll() is None, "the writer ended before its upload was listed"
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        writer.kill()
        writer.wait()
    store = open_store(s3_bucket.url_for("cube"), storage_options=s3_bucket.storage_options())
    assert list_keys(store, "") == []
    now = datetime.now(UTC)
    assert unfinished_uploads(store, "s2/", started_before=now - timedelta(seconds=600)) == []  # too recent
    assert unfinished_uploads(store, "s1/", started_before=now + timedelta(seconds=60)) == []  # another prefix
    [left] = unfinished_uploads(store, "s2/", started_before=now + timedelta(seconds=60))
    assert left.key == "s2/T/c/0/0/0" and left.size is not None and left.size < MULTIPART_FROM
    checked = []
    assert abort_uploads(store.with_read_only(False), [left], check=lambda: checked.append(1))
    assert checked == [1] and not client.list_multipart_uploads(Bucket=s3_bucket.name).get("Uploads")
    assert abort_uploads(store.with_read_only(False), [left], check=lambda: None)  # gone already: nothing to do


def test_a_folder_has_no_uploads(tmp_path):
    assert unfinished_uploads(open_store(tmp_path), "s2/", started_before=datetime.now(UTC)) == []


def test_a_store_refusing_to_list_or_abort_uploads_is_told_apart_from_a_failing_one(s3_bucket, monkeypatch):
    """Keys of a shared bucket may lack s3:ListBucketMultipartUploads or s3:AbortMultipartUpload (403), a gateway the
    requests (501): None and False, for the caller to warn of; a store failing them otherwise is a StoreError."""
    from botocore.exceptions import ClientError
    from s3fs.errors import translate_boto_error

    from cardcube.errors import StoreError

    s3_bucket.server.start_upload(s3_bucket.name, "cube/s2/a", part=b"x" * 1000, age=3600)
    store = open_store(s3_bucket.url_for("cube"), storage_options=s3_bucket.storage_options())
    before = datetime.now(UTC)
    [upload] = unfinished_uploads(store, "s2/", started_before=before)
    call, answer = S3FileSystem._call_s3, {}

    async def refusing(self, method, *args, **kwargs):
        if method in answer:
            status, code = answer[method]
            raise translate_boto_error(ClientError({"Error": {"Code": code, "Message": code},
                                                    "ResponseMetadata": {"HTTPStatusCode": status}}, method))
        return await call(self, method, *args, **kwargs)

    monkeypatch.setattr(S3FileSystem, "_call_s3", refusing)
    writable = store.with_read_only(False)
    for status, code in [(403, "AccessDenied"), (501, "NotImplemented")]:
        answer.update(list_multipart_uploads=(status, code), abort_multipart_upload=(status, code))
        assert unfinished_uploads(store, "s2/", started_before=before) is None
        assert abort_uploads(writable, [upload], check=lambda: None) is False
    answer.clear()
    answer["list_parts"] = (403, "AccessDenied")  # listed, without their bytes
    assert unfinished_uploads(store, "s2/", started_before=before) == [replace(upload, size=None)]
    answer["list_multipart_uploads"] = (400, "InvalidArgument")
    with pytest.raises(StoreError, match="cannot list the unfinished uploads under s2/ in s3://"):
        unfinished_uploads(store, "s2/", started_before=before)
    monkeypatch.undo()
    assert abort_uploads(writable, [upload], check=lambda: None)
