"""Multipart uploads a killed writer leaves unfinished on S3 (moto's server): when s3fs makes one, and finding and
aborting them (expire's sweep of a cube: tests/ingest/test_s3.py)."""

from __future__ import annotations

import inspect
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import numpy as np
from s3fs import S3FileSystem

from cardcube.spec import ChunkLayout, cube_spec
from cardcube.storage import list_keys, open_store
from cardcube.unfinished_uploads import MULTIPART_FROM, abort_uploads, unfinished_uploads


def test_s3fs_uploads_in_parts_from_the_size_cardcube_says():
    """zarr's FsspecStore.set, and so every write of cardcube but the ledger's compare-and-swap, calls s3fs's
    _pipe_file with its default part size: an object of twice that or more goes as a multipart upload."""
    chunksize = inspect.signature(S3FileSystem._pipe_file).parameters["chunksize"].default
    assert MULTIPART_FROM == 2 * chunksize
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
