"""A writer frozen long enough to have its lock broken (SIGSTOP: a stopped process, a suspended machine)
wakes up to find it so and stops before its next write or delete: what the writer that took over
committed meanwhile stays exactly as it was."""

from __future__ import annotations

import pickle
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import xarray as xr

from cardcube.cli import main
from cardcube.errors import CubeLockedError, LockLostError, TasksStillRunningError
from cardcube.spec import ChunkLayout
from cardcube.storage import open_store, read_json, write_json
from cube import layout
from cube.dataset import open_cube
from cube.ledger import committed_versions
from ingest import job
from ingest.arrays import ensure_tile
from ingest.commit import pid_alive, pid_namespace, writer_lock
from ingest.job import ingest
from tests.ingest.checks import assert_matches_sources
from tests.ingest.crashing import CHUNKS, ingest_command, run_ingest_here, stopped_at
from tests.ingest.namespaces import can_unshare_pids, in_another_pid_namespace
from tests.ingest.scene_edits import items_of, write_items

COLLECTION = "s1"
# Each writer's own lease lapses after half of its stale_after without a refresh: on a loaded 2-core machine (the
# suite runs a test file on each of its 3 workers) a 1 s stale_after let the taking-over writer's own lease lapse
# mid-ingest.
HOLDER_STALE_AFTER = 6.0  # the frozen writer's --stale-after: nobody breaks its lock sooner
BREAK_AFTER = 4.0  # the taking-over writer's: shorter, so it waits for the holder's


@pytest.fixture(scope="module")
def batches(tiny_region):
    """The first scenes, and two different batches of later ones: both land at the same new time indices."""
    features = items_of(tiny_region.items, "sentinel-1-card-bs")
    rest = features[9:]
    half = len(rest) // 2
    assert half > 0
    return (write_items(tiny_region.items, features[:9], "fence-first.json"),
            write_items(tiny_region.items, rest[:half], "fence-a.json"),
            write_items(tiny_region.items, rest[half:], "fence-b.json"))


@pytest.fixture(scope="module")
def started(batches, tmp_path_factory) -> Path:
    """The first batch ingested (version 1), once: each test goes on from a copy of it (:func:`_started_cube`)."""
    root = tmp_path_factory.mktemp("fence-started") / "cube"
    ingest(batches[0], root, collection=COLLECTION, chunks=ChunkLayout.parse(CHUNKS), progress=False)
    return root


def _started_cube(started: Path, tmp_path: Path) -> str:
    """A copy of the cube at version 1, for a test to change."""
    return str(shutil.copytree(started, tmp_path / "cube"))


def _stopped(command: list[str], step: str) -> subprocess.Popen:
    """Start ``command`` (a writer holding the lock) and return once it has stopped itself (SIGSTOP) at ``step``."""
    return stopped_at([*command, "--stale-after", str(HOLDER_STALE_AFTER)], step)


def _frozen(command: list[str], step: str) -> subprocess.Popen:
    """:func:`_stopped`, once its lock can be taken for dead."""
    proc = _stopped(command, step)
    time.sleep(HOLDER_STALE_AFTER + 1)  # its heartbeat, not refreshed while it is stopped, becomes stale
    return proc


def _woken(proc: subprocess.Popen) -> tuple[int, str]:
    proc.send_signal(signal.SIGCONT)
    _, err = proc.communicate(timeout=300)
    return proc.returncode, err


def _taken_over(cube: str, items: Path) -> xr.Dataset:
    """Another ingest breaks the frozen writer's lock and commits; the cube as it then reads."""
    result = ingest(items, cube, collection=COLLECTION, chunks=None, progress=False, stale_after=BREAK_AFTER)
    assert result.version == 2 and result.added
    return _read(cube)


def _read(cube: str) -> xr.Dataset:
    """The whole cube as stored, read at once (chunks="window": one Zarr call per array, not a dask task per chunk)."""
    return open_cube(cube, COLLECTION, decode=False, chunks="window").compute()


def test_a_frozen_ingest_whose_lock_was_broken_writes_nothing_when_it_wakes(batches, started, tmp_path):
    _, mine, theirs = batches
    cube = _started_cube(started, tmp_path)
    frozen = _frozen(ingest_command(mine, cube, COLLECTION), "validated")  # checked its scenes, wrote nothing
    committed = _taken_over(cube, theirs)  # the same new hot slots and blocks, other scenes
    code, err = _woken(frozen)
    assert committed_versions(open_store(cube), COLLECTION) == [1, 2]
    xr.testing.assert_identical(_read(cube), committed)
    assert code == 2, err
    assert "no longer holds the writer lock" in err and "re-run it" in err
    assert assert_matches_sources(cube, theirs, COLLECTION) > 0
    again = run_ingest_here(mine, cube, COLLECTION)  # the same command line, in this process
    assert again.returncode == 0, again.stderr  # the re-run the message asks for completes the job
    assert assert_matches_sources(cube, mine, COLLECTION) > 0


def test_a_frozen_expire_whose_lock_was_broken_deletes_nothing_when_it_wakes(batches, started, tmp_path):
    """Expire deletes hot dates no version it knows lists: once woken, those include what was committed
    while it was frozen."""
    _, mine, _ = batches
    cube = _started_cube(started, tmp_path)
    command = [sys.executable, "-m", "cardcube.cli", "expire", "--cube", cube, "--collection", COLLECTION,
               "--older-than", "0"]
    frozen = _frozen(command, "expire-records")  # it knows version 1 only, and is about to sweep
    committed = _taken_over(cube, mine)
    code, err = _woken(frozen)
    xr.testing.assert_identical(_read(cube), committed)
    assert code == 2, err
    assert "no longer holds the writer lock" in err
    assert assert_matches_sources(cube, mine, COLLECTION) > 0


def test_an_ingest_finding_an_expire_at_work_names_the_expire_not_an_ingest(batches, started, tmp_path):
    """The operator told who holds the lock looks for that process: an expire, not an ingest."""
    _, mine, _ = batches
    cube = _started_cube(started, tmp_path)
    command = [sys.executable, "-m", "cardcube.cli", "expire", "--cube", cube, "--collection", COLLECTION,
               "--older-than", "0"]
    holder = _stopped(command, "expire-records")  # holds the lock, alive (its heartbeat is not yet old)
    try:
        with pytest.raises(CubeLockedError, match=f"is being written by expire .* \\(pid {holder.pid} "):
            ingest(mine, cube, collection=COLLECTION, chunks=None, progress=False)
    finally:
        code, err = _woken(holder)
    assert code == 0, err
    assert committed_versions(open_store(cube), COLLECTION) == [1]


def test_the_fence_sees_a_lapsed_lease_or_another_owner(tmp_path):
    store = open_store(str(tmp_path / "cube"))
    key = layout.lock_key("s2")
    with writer_lock(store, "s2") as fence:
        fence.check()  # held: no error
        elsewhere = pickle.loads(pickle.dumps(fence))  # a worker process's copy reads the store only
        assert elsewhere.lease is None
        elsewhere.check()
        assert fence.lease is not None
        fence.lease.renew(time.monotonic() - 400, time.time() - 400)  # as after a freeze of 400 s
        with pytest.raises(LockLostError, match="last refreshed 400 s ago"):
            fence.check()
        elsewhere.check()  # nobody broke the lock yet: the store alone cannot tell
        write_json(store, key, {**read_json(store, key), "owner": "f" * 32, "pid": 1})  # taken over
        with pytest.raises(LockLostError, match="now held by ingest ffffffff"):
            elsewhere.check()
    assert read_json(store, key)["owner"] == "f" * 32  # the lock of the one that took over stays


def test_no_tile_is_rebuilt_once_the_lock_is_lost(tiny_straddle_region, tmp_path, monkeypatch):
    """A tile the writer's head lacks is deleted and built anew: after the lock is lost, the writer that took
    over may have committed it, so the fence is checked before each tile, not once before them all."""
    cube = tmp_path / "cube"
    store = open_store(str(cube))
    built = []

    def ensure_then_lose_the_lock(*args, **kwargs):
        built.append(args[2].tile_id)
        result = ensure_tile(*args, **kwargs)
        key = layout.lock_key(COLLECTION)
        write_json(store, key, {**read_json(store, key), "owner": "f" * 32})  # another writer took over
        return result

    monkeypatch.setattr(job, "ensure_tile", ensure_then_lose_the_lock)
    with pytest.raises(LockLostError, match="now held by ingest ffffffff"):
        ingest(tiny_straddle_region.items, cube, collection=COLLECTION, chunks=ChunkLayout.parse(CHUNKS),
               progress=False)
    assert len(built) == 1  # the straddling batch has two new tiles: the second was left alone


def test_an_ingest_whose_lock_was_broken_after_its_commit_reports_the_commit(batches, started, tmp_path):
    """Its version is in the cube: the run did its job, and publishing is left to the next writer (the one
    that took over did it first thing)."""
    _, mine, theirs = batches
    cube = _started_cube(started, tmp_path)
    frozen = _frozen(ingest_command(mine, cube, COLLECTION), "committed")
    later = ingest(theirs, cube, collection=COLLECTION, chunks=None, progress=False, stale_after=BREAK_AFTER)
    frozen.send_signal(signal.SIGCONT)
    out, err = frozen.communicate(timeout=300)
    assert frozen.returncode == 0, err
    assert "committed version 2" in out and "left to the next ingest" in err
    assert later.version == 3 and committed_versions(open_store(cube), COLLECTION) == [1, 2, 3]
    assert assert_matches_sources(cube, mine, COLLECTION) > 0 and assert_matches_sources(cube, theirs, COLLECTION) > 0


@pytest.mark.parametrize("value", ["0.1", "nan", "soon"])
def test_stale_after_on_the_command_line_is_at_least_a_second(value, tmp_path, capsys):
    for command in ("ingest", "expire"):
        args = [command, *(["items.json"] if command == "ingest" else []), "--cube", str(tmp_path),
                "--stale-after", value]
        with pytest.raises(SystemExit) as stopped:
            main(args)
        assert stopped.value.code == 2
        assert "--stale-after: expected a number of seconds >= 1" in capsys.readouterr().err


@pytest.mark.parametrize("holder", [600.0, 50.0])
def test_a_lock_is_broken_only_after_the_longer_of_the_two_stale_after(holder, tmp_path):
    """A writer given a short --stale-after must not break the lock of a live writer that refreshes it less often."""
    store = open_store(str(tmp_path / "cube"))
    key = layout.lock_key("s2")
    then = time.time() - 100  # the holder, on another host, last refreshed 100 s ago
    write_json(store, key, {"owner": "e" * 32, "host": "elsewhere", "pid": 1, "started": then, "heartbeat": then,
                            "stale_after": holder})
    if holder > 100:
        with pytest.raises(CubeLockedError, match="taken for dead 600 s after"):
            writer_lock(store, "s2", stale_after=1).__enter__()
        assert read_json(store, key)["owner"] == "e" * 32
    else:
        with writer_lock(store, "s2", stale_after=1) as fence:
            assert read_json(store, key)["owner"] == fence.owner


@pytest.mark.parametrize("again", [False, True])
def test_a_writer_whose_tasks_still_run_leaves_its_lock_in_place(again, tmp_path, caplog):
    """An ingest stopped while its shard writes run on (on a cluster's workers) keeps its lock: until they end, the
    next writer must not clear and rewrite the blocks they write to. A second Ctrl-C while the run unwinds (the
    spool folder's removal) turned the error into a KeyboardInterrupt, and the lock was deleted."""
    store = open_store(str(tmp_path / "cube"))
    key = layout.lock_key("s2")
    still = TasksStillRunningError(1, 30, "the dask workers", "interrupted")
    with pytest.raises(KeyboardInterrupt if again else TasksStillRunningError) as stopped, \
            writer_lock(store, "s2", remote_workers=True) as fence:
        try:
            raise still
        finally:
            if again:
                raise KeyboardInterrupt  # its __context__ is the error
    assert stopped.value is still or stopped.value.__context__ is still
    assert read_json(store, key)["owner"] == fence.owner
    assert f"the writer lock {key} at {tmp_path / 'cube'} is left in place, as writes of this run may still land " \
           f"(its tasks)" in caplog.text
    with pytest.raises(CubeLockedError, match="Its writes ran on dask workers, which outlive it: it is taken for "
                                              "dead 600 s after its last heartbeat"):
        writer_lock(store, "s2").__enter__()


@pytest.mark.parametrize("remote_workers", [False, True])
def test_a_dead_writers_lock_on_this_host_is_broken_at_once_unless_its_writes_ran_on_a_cluster(remote_workers,
                                                                                               tmp_path):
    store = open_store(str(tmp_path / "cube"))
    key = layout.lock_key("s2")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    now = time.time()
    write_json(store, key, {"owner": "d" * 32, "host": socket.gethostname(), "pid": int(dead.stdout), "started": now,
                            "heartbeat": now, "stale_after": 600.0, "command": "ingest",
                            "remote_workers": remote_workers, "pid_namespace": pid_namespace()})
    if remote_workers:  # its process is gone, but the workers it gave writes to may still be writing
        with pytest.raises(CubeLockedError, match="is being written by ingest dddddddd"):
            writer_lock(store, "s2").__enter__()
    else:
        with writer_lock(store, "s2") as fence:
            assert read_json(store, key)["owner"] == fence.owner


def test_a_lock_of_a_cardcube_that_did_not_record_its_pid_namespace_waits_for_its_heartbeat(tmp_path):
    """Its pid, dead here, may be a live writer's in another pid namespace: it is not taken for dead at once."""
    store = open_store(str(tmp_path / "cube"))
    key = layout.lock_key("s2")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    now = time.time()
    write_json(store, key, {"owner": "d" * 32, "host": socket.gethostname(), "pid": int(dead.stdout), "started": now,
                            "heartbeat": now, "stale_after": 600.0, "command": "ingest"})
    old = (rf"its pid {int(dead.stdout)} is \(a cardcube before 2026-12-05, or a system without Linux.s /proc\): it "
           r"is taken for dead 600 s after")
    with pytest.raises(CubeLockedError, match=old):
        writer_lock(store, "s2").__enter__()
    assert read_json(store, key)["owner"] == "d" * 32


HOLD_THE_LOCK = """
from cardcube.storage import open_store
from ingest.commit import pid_alive, pid_namespace, writer_lock
with writer_lock(open_store(sys.argv[1]), "s2") as fence:
    print(fence.owner, flush=True)
    sys.stdin.read()
"""


@pytest.mark.skipif(not can_unshare_pids(), reason="needs unshare -pf (a pid namespace of its own) for the holder")
def test_a_live_writers_lock_in_another_pid_namespace_of_this_host_is_not_broken(tmp_path):
    """A container on the host network (the same host name, pids of its own) holds the lock, its heartbeat fresh:
    its pid names no process here, and the lock was broken at once; two writers then ran on one cube."""
    cube = str(tmp_path / "cube")
    store = open_store(cube)
    with in_another_pid_namespace(HOLD_THE_LOCK, cube) as (pid, owner):
        held = read_json(store, layout.lock_key("s2"))
        assert held["owner"] == owner and held["pid"] == pid and held["host"] == socket.gethostname()
        assert not pid_alive(pid)  # what the old rule went by
        with pytest.raises(CubeLockedError, match=rf"is being written by ingest {owner[:8]} \(pid {pid} on .*A writer "
                                                  r"on another host, or in another pid namespace of this one \(another "
                                                  r"container\), that died is taken for dead 600 s after"):
            writer_lock(store, "s2").__enter__()
        assert read_json(store, layout.lock_key("s2"))["owner"] == owner
    assert read_json(store, layout.lock_key("s2")) is None  # its holder let go of it
