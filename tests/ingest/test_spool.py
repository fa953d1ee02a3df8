"""The spool (ingest/spool.py): remote band files are downloaded once, and the bytes checked are the bytes written.

The sources sit behind a real HTTP server in a child process that serves byte ranges, as GDAL reads them, and
counts the bytes it sends per file.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import xarray as xr

from cardcube.checkpoints import KILL_ENV
from cardcube.cli import main
from cardcube.errors import InvalidRequestError, LockLostError, SceneReadError, SpoolError
from cardcube.spec import ChunkLayout
from cardcube.storage import open_store, read_json, write_json
from cube import layout
from cube.dataset import open_cube
from cube.ledger import committed_versions, read_version
from ingest import job
from ingest.arrays import ensure_tile
from ingest.commit import pid_alive
from ingest.job import ingest
from ingest.spool import keep, remove_dead_spools, spool_folder
from tests.conftest import TEST_CHUNKS
from tests.ingest.checks import assert_matches_sources
from tests.ingest.crashing import ingest_command
from tests.ingest.http_source import COUNTING_SERVER, bytes_sent, http_server, served
from tests.ingest.namespaces import can_unshare_pids, in_another_pid_namespace
from tests.ingest.scene_edits import asset_path, broken_copy, items_of, truncate, write_items

CHUNKS = ChunkLayout.parse(TEST_CHUNKS)


@pytest.fixture(scope="module")
def pair(tiny_region) -> list[dict]:
    """Two Sentinel-1 scenes of the tiny region (two bands each)."""
    return items_of(tiny_region.items, "sentinel-1-card-bs")[:2]


def _sizes(items_path: Path, features: list[dict]) -> dict[str, int]:
    """Per path on the server, the size of the file it serves."""
    return {"/" + f["assets"][b]["href"].removeprefix("./"): asset_path(items_path, f, b).stat().st_size
            for f in features for b in f["assets"]}


def _ingest_served(items_path: Path, features: list[dict], base: str, cube: Path, **kwargs):
    """``features`` ingested into ``cube`` (S1) from the server at ``base``."""
    items = write_items(items_path, [served(f, base) for f in features], f"served-{cube.name}.json")
    return ingest(items, cube, collection="s1", chunks=CHUNKS, progress=False, **kwargs)


def test_each_remote_byte_is_downloaded_once_with_the_spool_and_the_cube_is_the_same_without(tiny_region, pair,
                                                                                            tmp_path):
    sizes = _sizes(tiny_region.items, pair)
    sent = {}
    for spool in (True, False):
        with http_server(COUNTING_SERVER, str(tiny_region.items.parent)) as base:
            result = _ingest_served(tiny_region.items, pair, base, tmp_path / f"spool-{spool}", spool=spool)
            sent[spool] = bytes_sent(base)
        assert result.ok and len(result.added) == 2 and result.source_bytes == sum(sizes.values())
    assert sent[True] == sizes  # every file whole, once: the checks' read, and nothing for the writes
    assert set(sent[False]) == set(sizes) and all(sent[False][p] > sizes[p] for p in sizes)  # read again
    spooled, again = (open_cube(tmp_path / f"spool-{s}", "s1", decode=False, chunks="window").compute()
                      for s in (True, False))
    xr.testing.assert_identical(spooled.drop_attrs(), again.drop_attrs())
    assert assert_matches_sources(tmp_path / "spool-True", write_items(tiny_region.items, pair, "pair.json"), "s1")
    sources = [h for r in read_version(open_store(tmp_path / "spool-True"), "s1").scenes.values()
               for h in r.sources.values()]
    assert len(sources) == 4 and all(h.startswith("http://127.0.0.1:") for h in sources)  # never the spool's


def test_a_file_replaced_at_the_source_after_its_check_does_not_go_in(tiny_region, pair, tmp_path):
    """The server swaps the two scenes' files once each was read whole (the checks' read): with the spool the
    cube holds the files checked and hashed; without it, the writes see the server's ETag changed and the run
    stops, committing nothing (the other scene's pixels went in unnoticed)."""
    swapped = tmp_path / "swapped"
    for mine, other in zip(pair, pair[::-1], strict=True):
        for band, asset in mine["assets"].items():
            (swapped / asset["href"]).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(asset_path(tiny_region.items, other, band), swapped / asset["href"])
    local = write_items(tiny_region.items, pair, "pair.json")
    with http_server(COUNTING_SERVER, str(tiny_region.items.parent), str(swapped)) as base:
        assert _ingest_served(tiny_region.items, pair, base, tmp_path / "spooled", spool=True).ok
    assert assert_matches_sources(tmp_path / "spooled", local, "s1") > 0
    with http_server(COUNTING_SERVER, str(tiny_region.items.parent), str(swapped)) as base, \
            pytest.raises(SceneReadError, match=r"band V[VH] changed since it was checked \(http://127.*commits no"):
        _ingest_served(tiny_region.items, pair, base, tmp_path / "again", spool=False)
    assert committed_versions(open_store(tmp_path / "again"), "s1") == []


def test_the_spool_holds_the_checked_files_during_the_run_and_nothing_after(tiny_region, pair, tmp_path,
                                                                            monkeypatch):
    """In a folder given (``spool=``): the files of the scenes that passed, named by their checksums, while the
    shards are written; not the rejected scene's; and nothing once the run is over."""
    spool = tmp_path / "spool"
    spool.mkdir()
    truncated = broken_copy(tiny_region.items, pair[0], "TRUNCATED", truncate,
                            props={"datetime": "2024-01-01T10:00:00Z"})
    held = []

    def ensure_and_look(*args, **kwargs):  # after the checks, before the writes
        held.extend(p.name for p in spool.rglob("*") if p.is_file())
        return ensure_tile(*args, **kwargs)

    monkeypatch.setattr(job, "ensure_tile", ensure_and_look)
    with http_server(COUNTING_SERVER, str(tiny_region.items.parent)) as base:
        result = _ingest_served(tiny_region.items, [*pair, truncated], base, tmp_path / "cube", spool=spool)
        sent = bytes_sent(base)
    assert sorted(result.added) == sorted(f["id"] for f in pair) and [r.scene_id for r in result.rejected] == [
        "TRUNCATED"]
    read = {p: n for p, n in _sizes(tiny_region.items, [*pair, truncated]).items() if p != "/broken/TRUNCATED/VH.tif"}
    assert sent == read  # once each; the truncated VV stops its scene's check, whose VH is not read
    checksums = [c for r in read_version(open_store(tmp_path / "cube"), "s1").scenes.values()
                 for c in r.checksums.values()]
    assert sorted(held) == sorted(c.removeprefix("sha256:") + ".tif" for c in checksums)
    assert list(spool.iterdir()) == []


def test_the_temporary_spool_is_removed_when_the_writes_fail(tiny_region, pair, tmp_path, monkeypatch):
    """The lock is lost after the checks (another writer took over): the writes raise, and the spool made in
    the system's temporary folder goes all the same."""
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))
    cube = tmp_path / "cube"
    held = []

    def ensure_then_lose_the_lock(*args, **kwargs):
        held.extend(p.name for p in temporary.rglob("*.tif"))
        result = ensure_tile(*args, **kwargs)
        store, key = open_store(cube), layout.lock_key("s1")
        write_json(store, key, {**read_json(store, key), "owner": "f" * 32})
        return result

    monkeypatch.setattr(job, "ensure_tile", ensure_then_lose_the_lock)
    with http_server(COUNTING_SERVER, str(tiny_region.items.parent)) as base, \
            pytest.raises(LockLostError, match="now held by ingest ffffffff"):
        _ingest_served(tiny_region.items, pair, base, cube)
    assert len(held) == 4 and list(temporary.iterdir()) == []


def test_no_spool_is_made_for_local_files_or_a_cluster_unless_a_folder_is_given(tmp_path):
    """Local files are read where they are; a cluster's workers may not share this machine's temporary folder,
    but may share a folder given."""
    cluster = "tcp://127.0.0.1:8786"  # only named: nothing connects to it
    for spool, scheduler, remote in [(True, None, False), (True, cluster, True), (False, None, True),
                                     (tmp_path, None, False)]:
        with spool_folder(spool, scheduler=scheduler, remote=remote) as folder:
            assert folder is None, (spool, scheduler, remote)
    with spool_folder(tmp_path, scheduler=cluster, remote=True) as folder:
        assert Path(folder).parent == tmp_path and Path(folder).is_dir()
    assert not Path(folder).exists()
    with pytest.raises(InvalidRequestError, match=r"spool folder .*nowhere does not exist"), \
            spool_folder(tmp_path / "nowhere", scheduler=None, remote=True):
        pass


def test_cli_spool_and_no_spool(tiny_region, pair, tmp_path, capsys):
    spool = tmp_path / "spool"
    spool.mkdir()
    sizes = _sizes(tiny_region.items, pair)
    for i, option in enumerate([["--spool", str(spool)], ["--no-spool"]]):
        with http_server(COUNTING_SERVER, str(tiny_region.items.parent)) as base:
            items = write_items(tiny_region.items, [served(f, base) for f in pair], "cli.json")
            assert main(["ingest", str(items), "--cube", str(tmp_path / f"cube{i}"), "--collection", "s1", "--quiet",
                         "--chunks", TEST_CHUNKS, *option]) == 0
            sent = bytes_sent(base)
        assert (sent == sizes) == (option[0] == "--spool"), (option, sent, sizes)
    assert list(spool.iterdir()) == []
    capsys.readouterr()
    assert main(["ingest", str(items), "--cube", str(tmp_path / "cube"), "--collection", "s1",
                 "--spool", str(tmp_path / "nowhere")]) == 2
    assert "the spool folder" in capsys.readouterr().err


def test_the_spool_of_an_ingest_killed_by_sigkill_is_removed_by_the_next_run(tiny_region, pair, tmp_path):
    """kill -9 (the OOM killer) cleans up nothing: the next run on this host removes the dead run's spool, and
    leaves alone those of a live process and of another host (a volume the workers share)."""
    spool = tmp_path / "spool"
    spool.mkdir()
    live = spool / f"cardcube-spool-{socket.gethostname()}-{os.getpid()}-x"  # this test's process: alive
    elsewhere = spool / "cardcube-spool-otherhost-1-x"
    for kept in (live, elsewhere):
        kept.mkdir()
    cube = str(tmp_path / "cube")
    with http_server(COUNTING_SERVER, str(tiny_region.items.parent)) as base:
        items = write_items(tiny_region.items, [served(f, base) for f in pair], "killed.json")
        command = ingest_command(items, cube, "s1", "--spool", str(spool))
        killed = subprocess.run(command, env={**os.environ, KILL_ENV: "validated"}, capture_output=True, text=True,
                                timeout=300)  # checked and spooled, nothing written
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        (dead,) = set(spool.iterdir()) - {live, elsewhere}
        assert len(list(dead.glob("*.tif"))) == 4  # the two scenes' band files
        again = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "removed the spool folder" in again.stderr and str(dead) in again.stderr
    assert set(spool.iterdir()) == {live, elsewhere}
    assert assert_matches_sources(cube, write_items(tiny_region.items, pair, "killed-local.json"), "s1") > 0


HOLD_A_SPOOL = """
from ingest.commit import pid_alive
from ingest.spool import keep, remove_dead_spools, spool_folder
with spool_folder(sys.argv[1], scheduler=None, remote=True) as folder:
    print(folder, flush=True)
    sys.stdin.read()
"""


@pytest.mark.skipif(not can_unshare_pids(), reason="needs unshare -pf (a pid namespace of its own) for the run")
def test_a_live_runs_spool_in_another_pid_namespace_of_this_host_is_left_alone(tmp_path, caplog):
    """A container on the host network (the same host name, pids of its own) sharing the --spool volume: its live
    run's pid names no process here, and the next ingest here deleted its spool (that run then failed). A folder
    named by an older cardcube, without its pid namespace, is left too, and named."""
    spool = tmp_path / "spool"
    spool.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    older = spool / f"cardcube-spool-{socket.gethostname()}-{int(dead.stdout)}-x"
    older.mkdir()
    with in_another_pid_namespace(HOLD_A_SPOOL, str(spool)) as (pid, folder):
        assert Path(folder).parent == spool and f"-{pid}-" in Path(folder).name
        assert not pid_alive(pid)  # what the old rule went by
        assert remove_dead_spools(spool) == []
        assert Path(folder).is_dir()
    assert not Path(folder).exists()  # its own run removed it at its end
    assert set(spool.iterdir()) == {older}
    assert f"left the spool folder {older} alone: no process here has its pid" in caplog.text


def test_a_spool_that_cannot_take_a_file_stops_the_run_and_rejects_no_scene(tiny_region, pair, tmp_path):
    """A full spool disk (here: ``cardcube ingest`` in a child process whose files may not grow beyond 32 kB,
    fewer than a band file's bytes) is no fault of the scenes: one error line, nothing committed nor rejected."""
    spool = tmp_path / "spool"
    spool.mkdir()

    def small_files() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG), not the process
        resource.setrlimit(resource.RLIMIT_FSIZE, (32_000, 32_000))

    with http_server(COUNTING_SERVER, str(tiny_region.items.parent)) as base:
        items = write_items(tiny_region.items, [served(f, base) for f in pair], "full.json")
        run = subprocess.run(ingest_command(items, str(tmp_path / "cube"), "s1", "--spool", str(spool)),
                             capture_output=True, text=True, timeout=300, preexec_fn=small_files)
    assert run.returncode == 2 and "cannot keep a checked file in the spool folder" in run.stderr, run.stderr
    assert "give a folder with room for the run's band files" in run.stderr
    assert run.stderr.count("\n") == 1 and list(spool.iterdir()) == []
    assert committed_versions(open_store(tmp_path / "cube"), "s1") == []


def test_a_spool_folder_gone_or_not_seen_is_named_so_not_as_one_without_room(tmp_path):
    """A dask worker that does not see the spool folder (or a folder deleted under a run) failed with ENOENT, and
    was told to give a folder with room for the run's band files."""
    gone = tmp_path / "gone"
    said = (rf"in the spool folder {gone} \(\[Errno 2\] No such file or directory: .*\): the folder is gone, or not "
            rf"seen on {socket.gethostname()} \(a dask worker on another machine, or in a container without its "
            r"volume\?\): give a folder every worker of the run sees")
    with pytest.raises(SpoolError, match=said) as failed:
        keep(str(gone), "https://example.com/VV.tif", b"tiff", "sha256:" + "0" * 64)
    assert "room" not in str(failed.value)


def test_a_spooled_copy_gone_before_the_writes_is_named_as_the_spools(tiny_region, pair, tmp_path, monkeypatch):
    """A spooled copy deleted after the checks (a cleaner of the temporary folder): the run stops naming that
    copy and the file it stands for, not the source as if the source had failed, and commits nothing."""
    spool = tmp_path / "spool"
    spool.mkdir()

    def ensure_then_clean(*args, **kwargs):
        for copy in spool.rglob("*.tif"):
            copy.unlink()
        return ensure_tile(*args, **kwargs)

    monkeypatch.setattr(job, "ensure_tile", ensure_then_clean)
    with http_server(COUNTING_SERVER, str(tiny_region.items.parent)) as base, \
            pytest.raises(SceneReadError, match=rf"could not be read again from its checked copy {spool}/\S+\.tif in "
                                                rf"the spool \(of {base}/\S+\) to write it \(this run commits "
                                                r"nothing\)"):
        _ingest_served(tiny_region.items, pair, base, tmp_path / "cube", spool=spool)
    assert committed_versions(open_store(tmp_path / "cube"), "s1") == []


def test_a_failed_runs_spool_goes_while_its_other_threads_still_write(tmp_path):
    """When a run fails, its other threads may still be finishing a file in the spool: the folder's removal found
    it not empty, and that OSError hid the run's own error (the test above, now and then). It is tried again
    until the writers are done, and never raises."""
    import threading
    import time

    from ingest.spool import _remove

    folder = tmp_path / "spool"
    folder.mkdir()
    until, written, writing = time.monotonic() + 0.3, [], threading.Event()

    def late_writer() -> None:
        while time.monotonic() < until:
            try:
                (folder / f"{len(written)}.part").write_bytes(b"x" * 1000)
            except FileNotFoundError:  # the folder is gone: as a real writer's keep() fails then
                break
            written.append(1)
            writing.set()
        writing.set()

    writer = threading.Thread(target=late_writer)
    writer.start()
    writing.wait(10)  # the removal starts while files are being written (on a loaded machine too)
    _remove(str(folder))
    writer.join()
    assert written and not folder.exists()
