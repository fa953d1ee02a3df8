"""kill -9 at every named step of the commit and at random moments: the cube stays readable, and
re-running the same command completes it. Two ingests at once: one waits or fails clearly.

A run killed or signalled is a process of its own; a run the test only needs done (a re-run, a run refused its
lock) is the same command line run in the test's process (:func:`tests.ingest.crashing.run_ingest_here`)."""

from __future__ import annotations

import random
import shutil
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
import xarray as xr
import zarr

from cardcube.spec import ChunkLayout
from cardcube.storage import open_store
from catalog import catalog_is_current
from cube import layout
from cube.dataset import open_cube
from cube.ledger import committed_versions, read_version
from ingest.commit import STEPS, writer_lock
from ingest.expire import expire
from ingest.job import ingest
from tests.ingest.checks import assert_manifests_match, assert_matches_sources
from tests.ingest.crashing import (
    ingest_command,
    kill_after,
    pool_workers,
    run_ingest,
    run_ingest_here,
    still_running,
    stopped_at,
)
from tests.ingest.scene_edits import items_of, write_items

CHUNKS = ChunkLayout.parse("time=4,space=64,shard_space=256")
COLLECTION = "s1"


@pytest.fixture(scope="module")
def batches(tiny_region):
    """The region's first 9 S1 scenes, and those 9 with the next 6: the second run skips the 9 and adds the 6 (not
    all 22 others: most tests run it two or three times, killed and again)."""
    features = items_of(tiny_region.items, "sentinel-1-card-bs")
    first = write_items(tiny_region.items, features[:9], "crash-first.json")
    return first, write_items(tiny_region.items, features[:15], "crash-then.json")


@pytest.fixture(scope="module")
def started(batches, tmp_path_factory):
    """The first batch ingested (version 1): each test that goes on from there changes a copy of it."""
    root = tmp_path_factory.mktemp("started") / "cube"
    ingest(batches[0], root, collection=COLLECTION, chunks=CHUNKS, progress=False)
    return root


@pytest.fixture(scope="module")
def reference(batches, started, tmp_path_factory):
    """The cube after the first batch (version 1) and after everything (version 2), ingested cleanly."""
    _, everything = batches
    root = _started_cube(started, tmp_path_factory.mktemp("reference") / "cube")
    v1 = _read(root)
    ingest(everything, root, collection=COLLECTION, chunks=CHUNKS, progress=False)
    v2 = _read(root)
    return v1, v2


def _read(cube) -> xr.Dataset:
    """The whole cube as stored, read at once (chunks="window": one Zarr call per array, not a dask task per chunk)."""
    return open_cube(cube, COLLECTION, decode=False, chunks="window").compute()


def _state(cube, reference) -> int:
    """Which committed state the cube shows; it must be exactly version 1 or exactly version 2."""
    ds = _read(cube)
    version = ds.attrs["cardcube:version"]
    assert version in (1, 2)
    xr.testing.assert_identical(ds.drop_attrs(), reference[version - 1].drop_attrs())
    return version


def _started_cube(started, path) -> str:
    """A copy of the cube at version 1 (the first batch ingested), to go on from."""
    return str(shutil.copytree(started, path))


@pytest.mark.parametrize("step", [s for s in STEPS if s != "unlocked"])
def test_kill_at_each_step_then_rerun_completes(batches, started, reference, tmp_path, step):
    cube = _started_cube(started, tmp_path / "cube")
    killed = run_ingest(batches[1], cube, COLLECTION, kill_at=step)
    assert killed.returncode == -9, killed.stderr
    assert _state(cube, reference) == (2 if step in ("committed", "published") else 1)
    done = run_ingest_here(batches[1], cube, COLLECTION)
    assert done.returncode == 0, done.stderr
    assert _state(cube, reference) == 2
    assert committed_versions(open_store(cube), COLLECTION) == [1, 2]  # no half version, none twice
    assert assert_manifests_match(Path(cube), COLLECTION) > 0  # rewritten by the re-run, where the kill left any
    store = open_store(cube)
    assert catalog_is_current(store, read_version(store, COLLECTION))


def test_kill_at_random_moments_then_rerun_completes(batches, started, reference, tmp_path):
    rng = random.Random(7)
    cube = _started_cube(started, tmp_path / "cube")
    began = time.monotonic()
    code = kill_after(batches[1], cube, COLLECTION, 300.0)  # only so a broken run ends (60 s was a time limit)
    full = time.monotonic() - began  # how long one complete run takes here
    assert code == 0
    for i in range(3):
        cube = _started_cube(started, tmp_path / f"cube{i}")
        kill_after(batches[1], cube, COLLECTION, rng.uniform(0.3, full))
        _state(cube, reference)
        assert run_ingest_here(batches[1], cube, COLLECTION).returncode == 0
        assert _state(cube, reference) == 2


def test_the_worker_processes_of_an_ingest_killed_outright_end_with_it(batches, started, reference, tmp_path):
    """``--scheduler processes``: a driver killed with SIGKILL (the OOM killer) left its pool's processes running on,
    for ever, writing their tasks' shards after the next ingest had taken its lock for dead (its pid gone) and
    written the same ones. They now end with it."""
    cube = _started_cube(started, tmp_path / "cube")
    proc = subprocess.Popen(ingest_command(batches[1], cube, COLLECTION, "--scheduler", "processes"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300  # only so a broken run ends; nothing about time is asserted
    while not (workers := pool_workers(proc.pid)):
        assert proc.poll() is None and time.monotonic() < deadline, "no worker process was seen"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    assert not still_running(workers), "worker processes outlived their driver"
    done = run_ingest_here(batches[1], cube, COLLECTION)
    assert done.returncode == 0, done.stderr
    assert _state(cube, reference) == 2


@pytest.mark.parametrize("step", ["validated", "written"])  # nothing written yet / every shard written, no commit
def test_an_ingest_terminated_by_sigterm_lets_go_of_its_lock(batches, started, reference, tmp_path, step):
    """SIGTERM (timeout, Kubernetes stopping a pod) unwinds like Ctrl-C: the lock is released, not left to block
    the cube for --stale-after seconds to the next run on another host, which cannot see the holder is gone."""
    cube = _started_cube(started, tmp_path / "cube")
    proc = stopped_at(ingest_command(batches[1], cube, COLLECTION), step)
    assert (Path(cube) / layout.lock_key(COLLECTION)).exists()
    proc.send_signal(signal.SIGTERM)  # pending while stopped, handled once it runs again
    proc.send_signal(signal.SIGCONT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "cardcube ingest: terminated" in err and "Traceback" not in err
    assert not (Path(cube) / layout.lock_key(COLLECTION)).exists()
    assert _state(cube, reference) == 1 and committed_versions(open_store(cube), COLLECTION) == [1]
    done = run_ingest_here(batches[1], cube, COLLECTION)
    assert done.returncode == 0, done.stderr
    assert _state(cube, reference) == 2


def test_second_ingest_fails_clearly_while_one_holds_the_lock(batches, started, tmp_path):
    cube = _started_cube(started, tmp_path / "cube")
    with writer_lock(open_store(cube), COLLECTION):
        waiting = subprocess.Popen(ingest_command(batches[1], cube, COLLECTION, "--wait", "120"),
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        began = time.monotonic()
        busy = run_ingest_here(batches[1], cube, COLLECTION)  # meanwhile, as the waiting one starts
        assert busy.returncode == 2
        assert "is being written by ingest" in busy.stderr and "pid" in busy.stderr
        assert "--wait SECONDS" in busy.stderr  # what the operator can do about it, in the CLI's words
        patient = run_ingest_here(batches[1], cube, COLLECTION, "--wait", "0.5")
        assert patient.returncode == 2 and "waited 0.5 s; retry when it has finished, or wait longer for it (--wait" \
            in patient.stderr, patient.stderr
        time.sleep(max(0.0, began + 3.0 - time.monotonic()))  # 3 s after its start, as ever
        assert waiting.poll() is None  # still waiting for the lock
    out, err = waiting.communicate(timeout=180)
    assert waiting.returncode == 0, err
    assert "committed version 2" in out


def test_two_ingests_started_together_lose_nothing(batches, started, reference, tmp_path):
    cube = _started_cube(started, tmp_path / "cube")
    procs = [subprocess.Popen(ingest_command(batches[1], cube, COLLECTION), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes in ([0, 0], [0, 2]), results  # the second either found nothing left to do, or the lock
    assert all("being written by" in err for code, err in results if code == 2)
    assert _state(cube, reference) == 2


def test_files_match_sources_after_crash_and_recovery(batches, started, tmp_path):
    cube = _started_cube(started, tmp_path / "cube")
    run_ingest(batches[1], cube, COLLECTION, kill_at="written")
    run_ingest_here(batches[1], cube, COLLECTION)
    assert assert_matches_sources(cube, batches[1], COLLECTION) > 0


@pytest.mark.parametrize("kill_at", ["tile-group-created", "written"])  # a tile half built / every shard written
def test_a_first_ingest_killed_before_its_commit_leaves_nothing_to_trip_on(batches, tmp_path, kill_at):
    """What a killed first ingest of a tile created (half-made arrays, or arrays of the chunk layout it was given)
    is no cube: a re-run with another layout builds the tile anew, and expiring versions later loses nothing."""
    cube = str(tmp_path / "cube")
    killed = run_ingest(batches[0], cube, COLLECTION, kill_at=kill_at)
    assert killed.returncode == -9 and not committed_versions(open_store(cube), COLLECTION)
    other = "time=8,space=128,shard_space=512"
    done = run_ingest_here(batches[0], cube, COLLECTION, "--chunks", other)
    assert done.returncode == 0, done.stderr
    store = open_store(cube)
    version = read_version(store, COLLECTION)
    assert version.spec.chunks == ChunkLayout.parse(other)
    tile = next(iter(version.tiles))
    arr = zarr.open_array(store, path=f"{COLLECTION}/{tile}/cube.zarr/r10m/VV", mode="r")
    assert arr.metadata.chunk_grid.chunk_shape == (8, 512, 512)  # the ledger's layout, not the killed run's
    run_ingest_here(batches[1], cube, COLLECTION, "--chunks", other)
    expire(cube, COLLECTION, older_than=timedelta(0))
    assert assert_matches_sources(cube, batches[1], COLLECTION) > 0
    assert assert_manifests_match(Path(cube), COLLECTION) > 0  # the blocks' in the layout of the ledger


def test_a_run_killed_after_writing_leaves_nothing_that_a_run_of_other_scenes_shows(tiny_region, tmp_path):
    """A run killed after writing its shards, then a run offering another, smaller scene: the second wrote only
    the shards its scene touched, of the same hot slot, and the killed run's other shards showed as its date
    (every band, `verify --deep` "sound"). A block a run writes is cleared of such leftovers first."""
    from tests.ingest.scene_edits import broken_copy, west_part

    features = items_of(tiny_region.items, "sentinel-2-l2a")
    part = broken_copy(tiny_region.items, features[2], "west-part", west_part(0.05))
    first, killed, later = (write_items(tiny_region.items, f, f"leftover-{name}.json")
                            for name, f in (("first", features[:1]), ("killed", features[1:2]), ("later", [part])))
    cube, clean = tmp_path / "cube", tmp_path / "clean"
    ingest(first, cube, chunks=CHUNKS, progress=False)
    shutil.copytree(cube, clean)  # the same cube, ingested once
    assert run_ingest(killed, str(cube), "s2", kill_at="written").returncode == -signal.SIGKILL
    for root in (cube, clean):
        assert ingest(later, root, chunks=CHUNKS, progress=False).version == 2
    read = lambda root: open_cube(root, decode=False, chunks="window").compute().drop_attrs()  # noqa: E731
    xr.testing.assert_identical(read(cube), read(clean))
    assert_manifests_match(cube, "s2")


def test_a_process_stopped_for_a_test_ends_with_the_test_s_process(tmp_path):
    """A test failing before it woke the writer it had stopped (SIGSTOP) left it stopped for good, holding its memory
    on a shared machine: one of a pytest run hours gone was found still there."""
    script = ("import sys; from tests.ingest.crashing import stopped_at; "
              "p = stopped_at([sys.executable, '-c', 'from cardcube.checkpoints import checkpoint; checkpoint(\"x\")'],"
              " 'x'); print(p.pid)")  # then ends without waking it, as a failed test's process does at the end
    started = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                             cwd=Path(__file__).resolve().parents[2])
    assert started.returncode == 0, started.stderr
    assert still_running([int(started.stdout)]) == []
