"""The writer lock on S3: its heartbeat outlives a failed request, as a long ingest must keep its lock."""

from __future__ import annotations

import time
import types

import pytest

from cardcube.errors import LockLostError
from cardcube.storage import delete_key, open_store, read_json
from cube import layout
from ingest import commit
from ingest.commit import writer_lock


def _wait_for(condition, what: str, *, limit: float = 60.0) -> None:
    """Poll ``condition`` until it holds; a generous bound only so a broken run ends (no timing is asserted)."""
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.05)


def test_the_lock_heartbeat_goes_on_after_a_failed_refresh(s3_bucket, s3_proxy):
    url = s3_bucket.url_for("cube")
    store = open_store(url, storage_options=s3_proxy.storage_options(attempts=1))
    store.fs.retries = 1  # one try per request: the refresh fails at once
    direct = open_store(url, storage_options=s3_bucket.storage_options())
    key = layout.lock_key("s2")
    with writer_lock(store, "s2", heartbeat=0.05) as me:
        s3_proxy.fail_randomly(1.0, status=500, code="InternalError", methods=["GET"])  # the refresh reads first
        _wait_for(lambda: s3_proxy.snapshot().faults > 0, "a refresh of the lock failed")
        s3_proxy.clear_faults()
        failed_at = time.time()
        # a writer whose lock stops being refreshed is taken for dead by other hosts and its lock broken
        _wait_for(lambda: read_json(direct, key)["heartbeat"] > failed_at, "the lock refreshed after the failure")
        assert read_json(direct, key)["owner"] == me.owner
    assert read_json(direct, key) is None


def test_a_lock_taken_after_a_wait_carries_a_heartbeat_from_when_it_was_taken(tmp_path, monkeypatch):
    """A writer that waited for the lock longer than stale_after must not write one that looks stale at once
    (any other writer would break it before its first refresh)."""
    store = open_store(str(tmp_path / "cube"))
    key = layout.lock_key("s2")
    released = []

    def other_writer_finishes(seconds: float) -> None:  # the waiting writer's first pause: the holder releases
        released.append(time.time())
        delete_key(store, key)

    with writer_lock(store, "s2"):
        monkeypatch.setattr(time, "sleep", other_writer_finishes)
        with writer_lock(store, "s2", wait=60) as fence:
            assert released and read_json(store, key)["owner"] == fence.owner
            assert read_json(store, key)["heartbeat"] >= released[0]


def test_a_freeze_right_after_the_heartbeat_checked_its_lease_does_not_renew_it(tmp_path, monkeypatch):
    """The refresh that follows such a freeze writes a heartbeat from before it: the lease stays lapsed, and the
    writer stops at its next fence check instead of writing where a writer that took over may have."""
    store = open_store(str(tmp_path / "cube"))
    real, frozen_for = time, []
    clock = types.SimpleNamespace(time=lambda: real.time() + sum(frozen_for),
                                  monotonic=lambda: real.monotonic() + sum(frozen_for), sleep=real.sleep)
    checked = commit._Lease.lapsed

    def checked_then_frozen(lease) -> bool:
        lapsed = checked(lease)
        if not frozen_for:
            frozen_for.append(400.0)  # stopped for 400 s right after the check: more than stale_after / 2
        return lapsed

    with writer_lock(store, "s2", stale_after=600, heartbeat=0.05) as fence:
        first = read_json(store, layout.lock_key("s2"))["heartbeat"]
        monkeypatch.setattr(commit, "time", clock)
        monkeypatch.setattr(commit._Lease, "lapsed", checked_then_frozen)
        _wait_for(lambda: read_json(store, layout.lock_key("s2"))["heartbeat"] != first, "a refresh after the freeze")
        with pytest.raises(LockLostError, match="last refreshed 400 s ago"):
            fence.check()


def test_a_fence_check_on_s3_is_one_request(s3_bucket, s3_proxy):
    """Checked before every shard write, the fence reads the lock: one GET, with no HEAD before it (or LIST
    after it, for a missing key) on the writer's store either."""
    store = open_store(s3_bucket.url_for("cube"), storage_options=s3_proxy.storage_options())
    with writer_lock(store, "s2") as fence:
        s3_proxy.reset_counters()
        fence.check()
        assert s3_proxy.snapshot().requests == {"GET": 1}
        s3_proxy.reset_counters()
        assert read_json(store, "s2/missing.json") is None
        assert s3_proxy.snapshot().requests == {"GET": 1}
