"""The writer lock on S3: its heartbeat outlives a failed request, as a long ingest must keep its lock."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import threading
import time
import types

import pytest
from zarr.storage import MemoryStore

from cardcube.compare_and_swap import delete_if_unchanged, read_tagged, replace_bytes
from cardcube.errors import CommitConflictError, CubeLockedError, LockLostError, StoreError
from cardcube.storage import delete_key, open_store, read_json, write_json
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
    # its lease: 6 s, a refresh failing and the next in time, with seconds to spare on a busy machine (with 0.5 s
    # beats, the beat after the failure came after the lease at times, under a load of 5 on 2 cores)
    with writer_lock(store, "s2", heartbeat=2.0) as me:
        s3_proxy.fail_next(1, status=500, code="InternalError", methods=["GET"], path_contains=key)  # reads first
        _wait_for(lambda: s3_proxy.snapshot().faults > 0, "a refresh of the lock failed")
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


def test_a_writer_on_an_object_store_writes_for_three_heartbeats_without_a_refresh_and_its_lock_says_so(s3_bucket,
                                                                                                       tmp_path):
    """A writer whose refreshes failed wrote on for half of ``stale_after`` (5 minutes), while the next writer on
    its host took its lock SETTLE seconds after one heartbeat interval once it was killed: an upload sent in those
    minutes landed in what that writer committed. On an object store its lease is now three heartbeats, and its lock
    records it; in a folder, where a dead writer's writes land with it, it stays half of ``stale_after``."""
    s3 = open_store(s3_bucket.url_for("cube"), storage_options=s3_bucket.storage_options())
    with writer_lock(s3, "s2", stale_after=600) as fence:
        held = commit.LockInfo.from_dict(read_json(s3, layout.lock_key("s2")))
        assert fence.lease.limit == held.lease == 90 and held.writes_until() == held.heartbeat + 90
        assert held.settled(in_flight=True) == held.heartbeat + 90 + commit.SETTLE
    folder = open_store(tmp_path / "cube")
    with writer_lock(folder, "s2", stale_after=600) as fence:
        held = commit.LockInfo.from_dict(read_json(folder, layout.lock_key("s2")))
        assert fence.lease.limit == held.lease == 300 and held.settled(in_flight=False) == 0


def test_the_lock_error_says_when_a_dead_writers_uploads_have_settled_and_only_of_a_dead_writer():
    """On an object store the error of a run refused by another's lock said "taken for dead in N s" of every lock:
    of a live writer's too, and of another host's, which are not; and of a lock whose writes were left running
    (``settles``) one heartbeat too early, so a run waiting as told was refused again."""
    now = time.time()
    live = commit.LockInfo("a" * 32, commit.socket.gethostname(), commit.os.getpid(), now, now, 600.0, "ingest",
                           pid_namespace=commit.pid_namespace(), lease=90.0)
    said = commit._taken_for_dead(live, 600.0, in_flight=True)
    assert "taken for dead in" not in said and "600 s after its last heartbeat" in said
    dead = dataclasses.replace(live, pid=2**22 + 1)  # no process (above the kernel's pid_max)
    assert commit._is_stale(dead, 600.0, in_flight=False) and not commit._is_stale(dead, 600.0, in_flight=True)
    assert _seconds_left(commit._taken_for_dead(dead, 600.0, in_flight=True)) == pytest.approx(90 + commit.SETTLE,
                                                                                                abs=2)
    stopped = dataclasses.replace(dead, settles=now + 30)  # its stopped writes settle before its lease's uploads
    said = commit._taken_for_dead(stopped, 600.0, in_flight=True)
    assert "may land for" in said and _seconds_left(said.replace("may land for", "taken for dead in")) == \
        pytest.approx(90 + commit.SETTLE, abs=2)


def _seconds_left(said: str) -> float:
    """N of "taken for dead in N s"."""
    return float(said.split("taken for dead in ")[1].split(" s")[0])


def _stale_lock(owner: str) -> dict:
    """The lock of a writer on another host whose last heartbeat is long past: taken for dead by anyone."""
    long_ago = time.time() - 10 * commit.STALE_AFTER
    return dataclasses.asdict(commit.LockInfo(owner, "elsewhere", 1, long_ago, long_ago))


@pytest.fixture(params=["folder", "s3", "memory"])
def lock_store(request, tmp_path):
    if request.param == "folder":
        return open_store(str(tmp_path / "cube"))
    if request.param == "memory":  # a store without tags or conditional writes: its bytes are compared
        return MemoryStore()
    bucket = request.getfixturevalue("s3_bucket")
    return open_store(bucket.url_for("cube"), storage_options=bucket.storage_options())


def test_of_two_writers_that_find_the_same_stale_lock_one_takes_it_and_the_other_is_refused(lock_store, monkeypatch):
    """Writer B judges the lock stale; before it acts, writer A (which judged it stale too) takes it. B must not
    take it from A: until 2026-12-05 B deleted whatever lock was there by then, A's, and both wrote."""
    key = layout.lock_key("s2")
    write_json(lock_store, key, _stale_lock("dead" * 8))
    holders: list = []
    stack = contextlib.ExitStack()

    def at_the_break(real):
        def act(*args, **kwargs):
            if not holders:  # B's turn: A, one step ahead, takes the lock first (its own break goes through)
                holders.append(None)
                holders[0] = stack.enter_context(writer_lock(lock_store, "s2"))
            return real(*args, **kwargs)
        return act

    # the break as it is done: a conditional replace now, a delete (then a create) before 2026-12-05
    for name in ("replace_bytes", "delete_key"):
        if hasattr(commit, name):
            monkeypatch.setattr(commit, name, at_the_break(getattr(commit, name)))
    with stack:
        with pytest.raises(CubeLockedError, match="is being written by ingest"), writer_lock(lock_store, "s2"):
            pass
        assert holders, "writer B never acted on the stale lock"
        assert read_json(lock_store, key)["owner"] == holders[0].owner  # A's lock, as long as A holds it
    assert read_json(lock_store, key) is None  # A let go at the end


def test_replacing_an_object_replaces_only_the_version_read(lock_store):
    key = "c/_lock.json"
    write_json(lock_store, key, {"v": 1})
    read = read_tagged(lock_store, key)
    assert read is not None and json.loads(read.data) == {"v": 1}
    replace_bytes(lock_store, key, b'{"v": 2}', expected=read)
    with pytest.raises(CommitConflictError, match="changed by another writer"):  # a second writer that read v1
        replace_bytes(lock_store, key, b'{"v": 3}', expected=read)
    assert read_json(lock_store, key) == {"v": 2}
    with pytest.raises(CommitConflictError, match="changed by another writer"):  # nor delete it
        delete_if_unchanged(lock_store, key, expected=read)
    assert read_json(lock_store, key) == {"v": 2}
    delete_if_unchanged(lock_store, key, expected=read_tagged(lock_store, key))
    assert read_json(lock_store, key) is None
    delete_if_unchanged(lock_store, key, expected=read)  # gone already: nothing to do
    with pytest.raises(CommitConflictError, match="deleted"):
        replace_bytes(lock_store, key, b'{"v": 4}', expected=read)
    assert read_tagged(lock_store, key) is None and read_json(lock_store, key) is None


def test_a_stale_lock_taken_over_though_the_answer_was_lost_is_found_to_be_the_writers_own(s3_bucket, s3_proxy,
                                                                                          monkeypatch):
    """The conditional PUT that takes a stale lock over lands, but its answer is lost: the client tries it again and
    is refused (412) by the lock it wrote itself; the writer must find the lock its own, not another's."""
    url, key = s3_bucket.url_for("cube"), layout.lock_key("s2")
    store = open_store(url, storage_options=s3_proxy.storage_options(attempts=3))
    write_json(store, key, _stale_lock("dead" * 8))
    real = commit.replace_bytes

    def answer_lost(*args, **kwargs):
        s3_proxy.fail_next(1, status=500, code="InternalError", methods=["PUT"], path_contains=key, answer_lost=True)
        return real(*args, **kwargs)

    monkeypatch.setattr(commit, "replace_bytes", answer_lost)
    with writer_lock(store, "s2") as me:
        assert s3_proxy.snapshot().faults == 1
        assert read_json(store, key)["owner"] == me.owner
    assert read_json(store, key) is None


def test_a_refresh_does_not_overwrite_the_lock_of_a_writer_that_took_it_over_after_it_was_read(lock_store,
                                                                                                monkeypatch):
    """The heartbeat reads the lock, finds it its own, and is about to write the refresh when another writer takes
    the lock over (it took this one for dead). The refresh must not land over the new holder's lock: until
    2026-12-05 it did, and both wrote."""
    key = layout.lock_key("s2")
    other = _stale_lock("b" * 32) | {"heartbeat": time.time()}  # the writer that took over: alive
    refreshed = threading.Event()

    def at_the_refresh(real):
        def write(*args, **kwargs):
            if threading.current_thread() is threading.main_thread() or refreshed.is_set():
                return real(*args, **kwargs)
            write_json(lock_store, key, other)  # the takeover, between the heartbeat's read and its write
            try:
                return real(*args, **kwargs)
            finally:
                refreshed.set()
        return write

    for name in ("replace_bytes", "write_json"):  # the refresh as it is written: a conditional replace now
        if hasattr(commit, name):
            monkeypatch.setattr(commit, name, at_the_refresh(getattr(commit, name)))
    # beats of 1 s, a lease of 3 s on S3: a beat late on a loaded machine does not find the lease lapsed first
    with pytest.raises(LockLostError), writer_lock(lock_store, "s2", heartbeat=1.0) as fence:
        _wait_for(refreshed.is_set, "the heartbeat refreshed the lock")
        assert read_json(lock_store, key)["owner"] == other["owner"]
        fence.check()
    assert read_json(lock_store, key)["owner"] == other["owner"]  # not deleted by the writer that lost it


def test_letting_go_of_a_lock_taken_over_after_it_was_read_leaves_the_new_holders(lock_store, monkeypatch):
    """The writer ends, reads its lock (its own) and is about to delete it when another writer takes the lock over
    (it took this one for dead). The delete must not take the new holder's lock: until 2026-12-05 it did."""
    key = layout.lock_key("s2")
    other = _stale_lock("c" * 32) | {"heartbeat": time.time()}
    taken = []

    def at_the_release(real):
        def delete(*args, **kwargs):
            if not taken:
                taken.append(True)
                write_json(lock_store, key, other)  # the takeover, between the release's read and its delete
            return real(*args, **kwargs)
        return delete

    for name in ("delete_if_unchanged", "delete_key"):  # the release as it is done: a conditional delete now
        if hasattr(commit, name):
            monkeypatch.setattr(commit, name, at_the_release(getattr(commit, name)))
    with writer_lock(lock_store, "s2"):
        pass
    assert taken, "the writer never let go of its lock"
    assert read_json(lock_store, key)["owner"] == other["owner"]


def _arm_before(monkeypatch, s3_proxy, key: str, *, status: int, code: str, times: int = 1) -> list:
    """Answer the next conditional replace of the lock (the stale lock's takeover) with ``status``/``code``, armed
    right before each of the first ``times`` calls (the create-only PUT before it must reach the store); the calls."""
    real, calls = commit.replace_bytes, []

    def armed(*args, **kwargs):
        calls.append(None)
        assert len(calls) < 20, "the takeover is tried again and again (a busy loop)"
        if len(calls) <= times:
            s3_proxy.fail_next(1, status=status, code=code, methods=["PUT"], path_contains=key)
        return real(*args, **kwargs)

    monkeypatch.setattr(commit, "replace_bytes", armed)
    return calls


def test_a_store_that_refuses_if_match_is_a_clear_error_not_a_conflict_tried_forever(s3_bucket, s3_proxy,
                                                                                     monkeypatch):
    """A store that does not take If-Match answers 400 (InvalidArgument, InvalidRequest) or 501: s3fs makes a 400 the
    OSError(EINVAL) it makes of a 412 too. Taken for "changed meanwhile", the takeover of a stale lock was tried again
    at once, forever (three requests a turn, no wait, no deadline), and a refresh failed without a word."""
    url, key = s3_bucket.url_for("cube"), layout.lock_key("s2")
    store = open_store(url, storage_options=s3_proxy.storage_options(attempts=1))
    write_json(store, key, _stale_lock("dead" * 8))
    calls = _arm_before(monkeypatch, s3_proxy, key, status=400, code="InvalidArgument", times=100)
    with pytest.raises(StoreError, match="If-Match"), writer_lock(store, "s2"):
        pass
    assert len(calls) == 1
    assert read_json(store, key)["owner"] == "dead" * 8


def test_a_conditional_write_that_meets_a_concurrent_one_is_a_conflict(s3_bucket, s3_proxy, monkeypatch):
    """AWS answers a conditional write that meets another one on the same key with 409 ConditionalRequestConflict
    (fetch the object again and retry, it says). It was a StoreError: of two writers taking a stale lock over at once,
    the one told so failed, where it is to read the lock again (and take it, wait, or be told who holds it)."""
    url, key = s3_bucket.url_for("cube"), layout.lock_key("s2")
    store = open_store(url, storage_options=s3_proxy.storage_options(attempts=1))
    write_json(store, key, _stale_lock("dead" * 8))
    calls = _arm_before(monkeypatch, s3_proxy, key, status=409, code="ConditionalRequestConflict")
    with writer_lock(store, "s2") as me:
        assert read_json(store, key)["owner"] == me.owner
    assert len(calls) == 2


def test_a_client_that_would_drop_if_match_is_refused_not_written_unconditionally(lock_store, monkeypatch):
    """s3fs sends only the parameters its botocore knows: with a botocore from before S3's If-Match (2024-11; the
    project asks for >= 1.35), the header was dropped without a word and every replace and delete went through, the
    takeover and the refresh over another writer's lock too."""
    from s3fs.utils import ParamKwargsHelper

    real = ParamKwargsHelper._get_valid_keys
    monkeypatch.setattr(ParamKwargsHelper, "_get_valid_keys", lambda self, name: real(self, name) - {"IfMatch"})
    key = "c/_lock.json"
    write_json(lock_store, key, {"v": 1})
    read = read_tagged(lock_store, key)
    write_json(lock_store, key, {"v": 2})  # another writer's
    with pytest.raises((CommitConflictError, StoreError)):
        replace_bytes(lock_store, key, b'{"v": 3}', expected=read)
    with pytest.raises((CommitConflictError, StoreError)):
        delete_if_unchanged(lock_store, key, expected=read)
    assert read_json(lock_store, key) == {"v": 2}


@pytest.mark.parametrize(("doc", "says"), [
    ('{"owner": "x", "host": "h", "pid": 1, "heartbeat": 1}', "(no started)"),  # a TypeError traceback, exit 1
    ("[]", "(not a JSON object)"),  # an AttributeError traceback
    ('{"owner": "x", "host": "h", "pid": 1, "started": 1, "heartbeat": "now"}', "must be numbers"),  # TypeError
    ("{garbage", "is not valid JSON"),  # said, but not what to do
])
def test_a_lock_that_no_cardcube_wrote_is_a_clear_error_saying_what_to_do(tmp_path, doc, says):
    """A lock object edited by hand, cut short or of a foreign tool: a writer finding it (ingest, expire) stopped
    with a traceback, or named it damaged without a way out; it says what it is and what to do, and leaves it."""
    from cardcube.errors import CorruptDocumentError

    store = open_store(str(tmp_path / "cube"))
    write_json(store, "s2/zarr.json", {})
    (tmp_path / "cube" / layout.lock_key("s2")).write_text(doc)
    with pytest.raises(CorruptDocumentError, match=r"s2/_lock\.json in .* is no writer lock of cardcube") as err, \
            writer_lock(store, "s2"):
        pass
    assert says in str(err.value) and str(err.value).endswith(
        "if no ingest or expire runs on this cube, delete it and run the command again")
    assert (tmp_path / "cube" / layout.lock_key("s2")).read_text() == doc


@pytest.mark.parametrize("outcome", ["done", "failed"])
def test_a_lock_the_store_fails_to_delete_leaves_the_runs_outcome_as_it_was(s3_bucket, s3_proxy, caplog, outcome):
    """The store fails the lock's DELETE at the block's end (after its retries): an ingest that had committed its
    version ended in "error: cannot delete s2/_lock.json ..." (exit 2), and one that failed had its own error
    replaced by that one. The outcome stands now; the lock left is said, and what becomes of it."""
    url, key = s3_bucket.url_for("cube"), layout.lock_key("s2")
    store = open_store(url, storage_options=s3_proxy.storage_options(attempts=1))
    store.fs.retries = 1
    s3_proxy.fail_next(10, status=500, code="InternalError", methods=["DELETE"], path_contains=key)
    with contextlib.ExitStack() as stack:
        if outcome == "failed":
            stack.enter_context(pytest.raises(ValueError, match="the run's own error"))
        with writer_lock(store, "s2") as me:
            if outcome == "failed":
                raise ValueError("the run's own error")
    assert s3_proxy.snapshot().faults == 1
    assert read_json(store, key)["owner"] == me.owner  # left, as a killed writer's, for others to take for dead
    assert f"the writer lock {key} at {url} could not be let go of (cannot delete {key} from {url}" in caplog.text
    assert "600 s after its last heartbeat" in caplog.text


@pytest.mark.parametrize("mode", ["refused", "ignored"])
def test_a_store_without_conditional_writes_is_refused_before_anything_is_written(s3_bucket, s3_proxy, mode):
    """A store that answers If-None-Match with 501 said "OSError: [Errno 38] A header you provided implies
    functionality that is not implemented" of the lock, naming neither the header nor what to do; one that ignores
    it (an S3 look-alike, an older gateway) let a second writer take the lock as its own, and the ledger record of
    its version replace another's, without a word. Both are refused, naming If-None-Match, and leave no lock."""
    url, key = s3_bucket.url_for("cube"), layout.lock_key("s2")
    store = open_store(url, storage_options=s3_proxy.storage_options(attempts=1))
    s3_proxy.conditional_writes(mode)
    said = "refused a create-only write \\(If-None-Match: \\*\\) with 501 NotImplemented" if mode == "refused" \
        else "ignores If-None-Match: a create-only write of s2/_lock.json replaced the object there"
    with pytest.raises(StoreError, match=f"{said}.*need an S3 store that honours conditional writes"), \
            writer_lock(store, "s2"):
        pytest.fail("the block ran")
    assert read_json(store, key) is None
    s3_proxy.conditional_writes("honoured")
    s3_proxy.reset_counters()
    with writer_lock(store, "s2"):  # the check costs a PUT, refused (412) by the lock just taken
        assert s3_proxy.snapshot().statuses.get(412) == 1
    assert read_json(store, key) is None


def test_a_store_failing_the_check_of_conditional_writes_leaves_no_lock(s3_bucket, s3_proxy, monkeypatch):
    """The writer's second create of its lock (the check that the store refuses it) failed by the store, after its
    retries: the run stops with the store's error, and lets go of the lock it had taken."""
    url, key = s3_bucket.url_for("cube"), layout.lock_key("s2")
    store = open_store(url, storage_options=s3_proxy.storage_options(attempts=1))
    store.fs.retries = 1
    real, calls = commit.create_bytes, []

    def failed(*args, **kwargs):  # the check's create (the lock's own goes through storage.write_json)
        calls.append(None)
        s3_proxy.fail_next(1, status=500, code="InternalError", methods=["PUT"], path_contains=key)
        return real(*args, **kwargs)

    monkeypatch.setattr(commit, "create_bytes", failed)
    with pytest.raises(StoreError, match=f"cannot create {key} in {url}"), writer_lock(store, "s2"):
        pytest.fail("the block ran")
    assert len(calls) == 1 and s3_proxy.snapshot().faults == 1
    assert read_json(store, key) is None
