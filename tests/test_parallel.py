"""run_tasks: results in order, tasks started in the order given (longest-first balancing relies on it)."""

from __future__ import annotations

import collections
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

import dask
import pytest

from cardcube.errors import ClusterError, InvalidRequestError, StoreError, TasksStillRunningError
from cardcube.parallel import _await_end, check_workers_see, run_tasks


def test_tasks_start_in_the_order_given_and_results_come_back_in_order() -> None:
    started: list[int] = []
    lock = threading.Lock()

    def task(i: int) -> int:
        with lock:
            started.append(i)
        time.sleep(0.005)
        return i * i

    assert run_tasks(task, [(i,) for i in range(30)], progress=False) == [i * i for i in range(30)]
    # Two workers may swap neighbours; nothing starts before a task given well ahead of it.
    assert all(abs(pos - i) <= 2 for pos, i in enumerate(started)), started


def test_the_first_error_is_raised() -> None:
    def task(i: int) -> int:
        if i == 3:
            raise ValueError("bad unit 3")
        return i

    with pytest.raises(ValueError, match="bad unit 3"):
        run_tasks(task, [(i,) for i in range(6)], progress=False, scheduler="sync")


def test_an_unknown_scheduler_is_a_clear_error() -> None:
    with pytest.raises(InvalidRequestError, match="unknown scheduler 'bogus'"):
        run_tasks(abs, [(1,)], progress=False, scheduler="bogus")


def test_a_scheduler_address_of_an_unknown_scheme_is_a_clear_error() -> None:
    with pytest.raises(InvalidRequestError, match=r"tpc://127.0.0.1:8786: unknown address scheme 'tpc' \(known"):
        run_tasks(abs, [(1,)], progress=False, scheduler="tpc://127.0.0.1:8786")
    # nor is dask left set to a cluster it never reached (every later compute failed: "no Client active")
    assert dask.config.get("scheduler", None) is None


def test_a_scheduler_address_where_nothing_listens_fails_at_once() -> None:
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(InvalidRequestError, match="connection refused \\(is a dask scheduler running there\\? "
                                                  "`dask scheduler` starts one"):
        run_tasks(abs, [(1,)], progress=False, scheduler=f"tcp://127.0.0.1:{port}")


def test_a_scheduler_address_where_another_service_answers_is_named_so() -> None:
    """The dashboard's port (8787) or any HTTP server: distributed read its answer as a message of exabytes (a
    MemoryError), or waited for a handshake forever when it said nothing."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        accepted: list[socket.socket] = []

        def answer_http() -> None:
            with contextlib.suppress(OSError):
                while True:
                    conn, _ = server.accept()
                    accepted.append(conn)
                    conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

        threading.Thread(target=answer_http, daemon=True).start()
        try:
            with pytest.raises(InvalidRequestError, match=rf"tcp://127.0.0.1:{port} does not answer as a dask "
                                                          rf"scheduler .*not its dashboard's \(8787\)"):
                run_tasks(abs, [(1,)], progress=False, scheduler=f"tcp://127.0.0.1:{port}")
        finally:
            for conn in accepted:
                conn.close()


class _Stop(Exception):
    """The driver stopped while tasks ran (as Ctrl-C or SIGTERM would, raised where the results come back)."""


def _held_task(folder: Path, i: int) -> int:
    """Task 0 returns once task 1 has started; task 1 runs until ``folder/go`` exists, then marks its end. Each
    waits two minutes at most (a failure, not a hang: a thread of the test's own process outlives any timeout)."""
    if i == 0:
        _wait_for(folder / "started-1")
        return 0
    (folder / "started-1").touch()
    _wait_for(folder / "go")
    (folder / "ended-1").touch()
    return i


def _wait_for(path: Path, limit: float = 120.0) -> None:
    deadline = time.monotonic() + limit  # only so a broken run ends; nothing about time is asserted
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path.name} did not appear")
        time.sleep(0.01)


def _stop(result: int) -> dict:
    raise _Stop


@contextlib.contextmanager
def _scheduler(kind: str):
    if kind == "threads":  # two threads, whatever the runner's cores: task 0 waits for task 1 to start
        with dask.config.set(num_workers=2):
            yield "threads"
        return
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None,
                                  silence_logs=50) as cluster, distributed.Client(cluster) as client:
        yield client


@pytest.mark.parametrize("kind", ["threads", "cluster"])
def test_a_stopped_run_waits_for_its_running_tasks_to_end(kind, tmp_path, caplog):
    """A writer stopped mid-run lets go of its lock only after this returns: a task still running then (dask's
    threads and a cluster's workers carry on a started task) could land a write over the next writer's."""
    def stop_then_release(result: int) -> dict:  # the held task ends a while after the stop
        threading.Timer(1.0, (tmp_path / "go").touch).start()
        raise _Stop

    with _scheduler(kind) as scheduler:
        with pytest.raises(_Stop):
            run_tasks(partial(_held_task, tmp_path), [(0,), (1,)], scheduler=scheduler, progress=False,
                      tally=stop_then_release, stop_grace=300, desc="writing shards")
        assert (tmp_path / "ended-1").exists()
    assert "writing shards stopped: waiting up to 300 s for the 1 task(s) still running" in caplog.text


@pytest.mark.parametrize("kind", ["threads", "cluster"])
def test_a_stopped_run_whose_tasks_outlive_the_grace_says_so(kind, tmp_path):
    with _scheduler(kind) as scheduler:
        try:
            with pytest.raises(TasksStillRunningError, match=r"the run stopped \(_Stop: \); 1 of its tasks still ran "
                                                             r"on .*, and had not ended 0.3 s later$") as stopped:
                run_tasks(partial(_held_task, tmp_path), [(0,), (1,)], scheduler=scheduler, progress=False,
                          tally=_stop, stop_grace=0.3)
            assert stopped.value.running == 1 and isinstance(stopped.value.__cause__, _Stop)
            assert not (tmp_path / "ended-1").exists()
        finally:
            (tmp_path / "go").touch()


def test_without_a_grace_a_stopped_run_does_not_wait(tmp_path):
    try:
        with dask.config.set(num_workers=2), pytest.raises(_Stop):
            run_tasks(partial(_held_task, tmp_path), [(0,), (1,)], progress=False, tally=_stop)
        assert not (tmp_path / "ended-1").exists()
    finally:
        (tmp_path / "go").touch()


def test_a_task_that_kills_its_workers_is_one_clear_error(tmp_path):
    """The workers' nanny restarts a worker whose process died (out of memory); a task that killed them all was a
    traceback ending in distributed's KilledWorker, exit 1 (the status a pipeline reads as 'some data failed')."""
    distributed = pytest.importorskip("distributed")
    killed = r"^extracting: one of its tasks killed the dask worker running it, 1 time\(s\) in a row \(out of memory\?"
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}), \
            distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None,
                                     silence_logs=50) as cluster, pytest.raises(ClusterError, match=killed):
        run_tasks(os._exit, [(3,)], scheduler=cluster.scheduler_address, progress=False, desc="extracting")


def _kill_when_started(scheduler: subprocess.Popen, folder: Path) -> None:
    while not (folder / "started-1").exists():
        time.sleep(0.02)
    scheduler.kill()


@pytest.mark.parametrize("grace", [None, 3])
def test_a_lost_scheduler_is_one_clear_error_and_a_writer_keeps_its_lock(grace, tmp_path):
    """The scheduler killed mid-run: a traceback of distributed's FutureCancelledError, exit 1. Its workers may
    still be writing, and can no longer be asked: a writer (``stop_grace``) must keep its lock."""
    pytest.importorskip("distributed")
    spec = tmp_path / "scheduler.json"
    scheduler = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                                  "--port", "0", "--no-dashboard", "--scheduler-file", str(spec)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    worker = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", "--scheduler-file", str(spec),
                               "--nthreads", "1", "--no-dashboard", "--no-nanny"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=Path(__file__).parent.parent)
    try:
        while not spec.exists() or not spec.read_text():
            assert scheduler.poll() is None, "the scheduler did not start"
            time.sleep(0.1)
        address = json.loads(spec.read_text())["address"]
        threading.Thread(target=_kill_when_started, args=(scheduler, tmp_path), daemon=True).start()
        lost = r"writing shards: the dask scheduler at tcp://127.0.0.1:\d+ dropped this run's tasks " \
               r"\(scheduler-connection-lost\): was it stopped or restarted\?"
        expected = (ClusterError, lost) if grace is None else \
            (TasksStillRunningError, rf"the run stopped \({lost}.*; whether its tasks still run could not be asked: "
                                     rf".*\); its tasks on the dask workers may still run$")
        with dask.config.set({"distributed.comm.timeouts.connect": "10s"}), \
                pytest.raises(expected[0], match=expected[1]):
            run_tasks(partial(_held_task, tmp_path), [(1,)], scheduler=address, progress=False, stop_grace=grace,
                      desc="writing shards")
    finally:
        (tmp_path / "go").touch()
        for proc in (worker, scheduler):
            proc.kill()
            proc.wait()


def test_workers_that_do_not_see_a_local_folder_are_named(tmp_path):
    distributed = pytest.importorskip("distributed")
    lock = tmp_path / "cube" / "s2" / "_lock.json"
    lock.parent.mkdir(parents=True)
    lock.write_text("{}")
    check_workers_see("tcp://127.0.0.1:1", {"the cube's folder": None})  # an object store: no cluster is asked
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None,
                                  silence_logs=50) as cluster, distributed.Client(cluster) as client:
        check_workers_see(client, {"the cube's folder": lock})
        blind = rf"^2 of the 2 dask workers \(\w+://.*\) do not see the output folder \(--out\) {tmp_path / 'out'} \(is"
        with pytest.raises(InvalidRequestError, match=blind):
            check_workers_see(client, {"the cube's folder": lock, "the output folder (--out)": tmp_path / "out" / "m"})


class _InterruptOnPickling:
    """An argument whose pickling raises KeyboardInterrupt once a task sent before it runs: Ctrl-C while the tasks
    are being submitted."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def __reduce__(self):
        while not list(self.folder.glob("start-*")):
            time.sleep(0.01)
        raise KeyboardInterrupt


def _timed_task(folder: Path, i: int, *_: object) -> int:
    (folder / f"start-{i}").write_text(repr(time.time()))
    time.sleep(1.0)
    (folder / f"end-{i}").write_text(repr(time.time()))
    return i


def _late(folder: Path, returned: float, *, after: float = 1.5) -> list[str]:
    """The tasks that ended after ``returned`` (once all that started, or were about to, have had ``after`` seconds
    to end)."""
    time.sleep(after)
    return sorted(p.name for p in folder.glob("end-*") if float(p.read_text()) > returned)


def test_a_stop_while_the_tasks_are_being_submitted_waits_for_those_sent(tmp_path):
    """The futures were known only once all were submitted: a stop meanwhile cancelled and waited for none, and the
    lock went while the tasks already sent ran (1.4 s of an ingest of 2,000 shard writes is spent submitting)."""
    distributed = pytest.importorskip("distributed")
    args = [(i,) for i in range(3)] + [(3, _InterruptOnPickling(tmp_path))] + [(i,) for i in range(4, 8)]
    with distributed.LocalCluster(n_workers=1, threads_per_worker=3, processes=False, dashboard_address=None,
                                  silence_logs=50) as cluster, distributed.Client(cluster) as client:
        with pytest.raises(KeyboardInterrupt):
            run_tasks(partial(_timed_task, tmp_path), args, scheduler=client, progress=False, stop_grace=60)
        assert not _late(tmp_path, time.time())


def test_a_stop_right_after_the_submissions_waits_for_the_tasks_the_cancel_has_not_reached(tmp_path, monkeypatch):
    """The cancel is a message: the first question to the workers could overtake it, find nothing running yet, and
    let the lock go while the tasks the scheduler had just sent started (19 of 20 runs)."""
    distributed = pytest.importorskip("distributed")

    def interrupted(*args, **kwargs):  # Ctrl-C as the driver starts waiting for the first result
        raise KeyboardInterrupt

    monkeypatch.setattr(distributed, "as_completed", interrupted)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=True, dashboard_address=None,
                                  silence_logs=50) as cluster:
        for attempt in range(4):
            folder = tmp_path / str(attempt)
            folder.mkdir()
            with pytest.raises(KeyboardInterrupt):
                run_tasks(partial(_timed_task, folder), [(i,) for i in range(6)], scheduler=cluster.scheduler_address,
                          progress=False, stop_grace=60)
            assert not _late(folder, time.time()), attempt


def _lagging(stream: Any, loop: Any, lag: float) -> None:
    """Make a scheduler's ``stream`` to a worker deliver each message ``lag`` seconds late, in order."""
    send, pending = stream.send, collections.deque()

    def due() -> None:
        while pending and pending[0][0] <= time.monotonic():
            send(*pending.popleft()[1])

    def late(*msgs: Any) -> None:
        pending.append((time.monotonic() + lag, msgs))
        loop.call_later(lag, due)

    stream.send = late


def test_a_stop_whose_question_overtakes_the_tasks_sent_to_a_worker_waits_for_them(tmp_path, monkeypatch):
    """The scheduler's messages to a worker (its tasks, their cancel) go in order on one stream, where the stopped
    run's question whether anything runs is a call of its own: on a loaded machine the question came first, the
    worker said nothing ran, and the run let go of its lock while the tasks sent to it started (2 stops in 6 under
    a load of 6 on 2 cores; the CI's ``['end-0', 'end-1']`` of the test above). Here the stream lags by 1 s."""
    distributed = pytest.importorskip("distributed")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(distributed, "as_completed", interrupted)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=True, dashboard_address=None,
                                  silence_logs=50) as cluster:
        for stream in cluster.scheduler.stream_comms.values():
            _lagging(stream, cluster.scheduler.loop, 1.0)
        with pytest.raises(KeyboardInterrupt):
            run_tasks(partial(_timed_task, tmp_path), [(i,) for i in range(6)], scheduler=cluster.scheduler_address,
                      progress=False, stop_grace=60)
        assert not _late(tmp_path, time.time(), after=3.0)  # a task the worker hears of 1 s late ends 2 s late
        assert list(tmp_path.glob("start-*")), "no task started: the test tells nothing"


def _stopped_in_a_thread(client: Any, folder: Path, tally: Any) -> tuple[threading.Thread, list[BaseException]]:
    """A run of two held tasks on ``client`` stopped by ``tally`` (grace 2 s), started in a thread; what it raises
    goes into the list."""
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            run_tasks(partial(_held_task, folder), [(0,), (1,)], scheduler=client, progress=False, tally=tally,
                      stop_grace=2)
        except BaseException as exc:  # what the run raised is the result
            outcome.append(exc)

    stopped = threading.Thread(target=run, daemon=True)
    stopped.start()
    return stopped, outcome


def test_a_worker_that_does_not_answer_bounds_the_wait_by_the_grace(tmp_path):
    """A frozen worker (a paused container, a suspended VM) held the stopped run's question forever (400 s and
    counting with a grace of 2 s): the pod was killed instead of exiting with its message."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=True, dashboard_address=None,
                                  silence_logs=50) as cluster, distributed.Client(cluster) as client:
        pid = next(iter(client.run(os.getpid).values()))

        def freeze_then_stop(result: int) -> dict:
            os.kill(pid, signal.SIGSTOP)
            raise _Stop

        stopped, outcome = _stopped_in_a_thread(client, tmp_path, freeze_then_stop)
        stopped.join(120)  # only so a hang ends the test; nothing about time is asserted
        os.kill(pid, signal.SIGCONT)
        (tmp_path / "go").touch()
        assert not stopped.is_alive(), "the stopped run still waits for the frozen worker"
        assert isinstance(outcome[0], TasksStillRunningError) and outcome[0].running == -1
        assert "whether its tasks still run could not be asked: TimeoutError" in str(outcome[0])


def _task_on(folder: Path, i: int) -> int:
    """Each task writes where it runs; task 0 then runs on until ``folder/go`` exists (the run stopped and said so),
    task 1 returns once ``folder/dropped`` does (task 0's worker cut off): the stop comes after the partition, with
    task 0 still running, however loaded the machine (they slept 6 s and 2 s)."""
    import distributed

    (folder / f"worker-{i}").write_text(distributed.get_worker().address)
    _wait_for(folder / ("go" if i == 0 else "dropped"))
    return i


def _address_in(folder: Path, pattern: str) -> str:
    """The worker address a task wrote to a file of ``folder`` matching ``pattern``, once written: the file exists
    before its text does, and a drop of '' left task 0 waiting for ever (the test hung 600 s on a loaded machine)."""
    while not (written := [text for p in folder.glob(pattern) if (text := p.read_text())]):
        time.sleep(0.02)
    return written[0]


async def _drop(address: str, dask_scheduler=None) -> None:
    await dask_scheduler.remove_worker(address, stimulus_id="a network partition", close=False)


def test_a_worker_the_scheduler_dropped_may_still_run_tasks(tmp_path):
    """A worker cut off from the scheduler (a partition; here removed with close=False) runs its task on, unseen:
    the stopped run counted 0 and let the lock go 2 s before that task ended."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  silence_logs=50) as cluster, distributed.Client(cluster) as client:
        def partition() -> None:
            client.run_on_scheduler(_drop, _address_in(tmp_path, "worker-0"))
            (tmp_path / "dropped").touch()

        threading.Thread(target=partition, daemon=True).start()
        try:
            with pytest.raises(TasksStillRunningError, match=r"could not be asked: RuntimeError: the dask worker \S+ "
                                                             r"left the cluster during the run"):
                run_tasks(partial(_task_on, tmp_path), [(0,), (1,)], scheduler=client, progress=False, tally=_stop,
                          stop_grace=3)
        finally:
            (tmp_path / "go").touch()


def _task_off(folder: Path, i: int) -> int:
    """Task 0 returns once ``folder/dropped`` exists; the others return at once on the first worker (its address in
    ``folder/first``), and elsewhere record where they run, then run on until ``folder/go`` exists."""
    import distributed

    if i == 0:
        while not (folder / "dropped").exists():
            time.sleep(0.02)
        return 0
    address = distributed.get_worker().address
    if address != (folder / "first").read_text():
        (folder / f"on-{i}").write_text(address)
        while not (folder / "go").exists():
            time.sleep(0.02)
    return i


def test_a_worker_that_joined_during_the_run_and_was_dropped_may_still_run_tasks(tmp_path):
    """Only the workers present at the start were compared with those at the stop: a worker that joined during the
    run (an adaptive cluster scaling up) and was cut off from the scheduler ran its task on, unseen, and the
    stopped run counted 0."""
    distributed = pytest.importorskip("distributed")
    # one task per thread sent ahead (the rest queued at the scheduler): the worker that joins gets one
    with dask.config.set({"distributed.scheduler.worker-saturation": 1.0}), \
            distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None,
                                     silence_logs=50) as cluster, distributed.Client(cluster) as client:
        (tmp_path / "first").write_text(next(iter(client.scheduler_info()["workers"])))

        def join_then_partition() -> None:
            time.sleep(0.5)
            cluster.scale(2)
            client.run_on_scheduler(_drop, _address_in(tmp_path, "on-*"))
            (tmp_path / "dropped").touch()

        threading.Thread(target=join_then_partition, daemon=True).start()
        try:
            with pytest.raises(TasksStillRunningError, match=r"could not be asked: RuntimeError: the dask worker "
                                                             r"\S+ left the cluster during the run"):
                run_tasks(partial(_task_off, tmp_path), [(i,) for i in range(6)], scheduler=client, progress=False,
                          tally=_stop, stop_grace=3)
        finally:
            (tmp_path / "go").touch()


def test_a_task_error_on_one_thread_is_that_error_and_the_lock_goes(tmp_path):
    """A plain write error raised from another (``StoreError(...) from exc``) under ``--scheduler sync`` was taken
    for tasks that may still run, and the lock kept for 600 s."""
    def fails(i: int) -> int:
        try:
            raise OSError(28, "No space left on device")
        except OSError as exc:
            raise StoreError(f"cannot write shard {i}: {exc}") from exc

    for scheduler in ("sync", "threads", "processes"):
        with pytest.raises(StoreError, match="cannot write shard"):
            run_tasks(fails, [(0,)], scheduler=scheduler, progress=False, stop_grace=5)


def test_a_cluster_without_workers_is_said_to_be_waited_for(caplog, monkeypatch):
    """An ingest pointed at a scheduler whose workers had not started (or crashed) sat at 0 % without a word. Said
    once, and not again as a worker lost during the run (the watch of :func:`run_tasks` knows there was none)."""
    distributed = pytest.importorskip("distributed")
    from cardcube import parallel

    monkeypatch.setattr(parallel, "WORKER_CHECK_S", 0.1)
    with distributed.LocalCluster(n_workers=0, processes=False, dashboard_address=None, silence_logs=50) as cluster, \
            distributed.Client(cluster) as client:
        def join_once_said() -> None:  # a worker joins once the run has said it waits for one (a Timer of 1 s
            deadline = time.monotonic() + 30  # raced a driver slow to start it); the run then completes; the
            while "has no worker yet" not in caplog.text and time.monotonic() < deadline:  # deadline: a code that
                time.sleep(0.02)  # never says it fails the assertion below rather than waits for ever
            time.sleep(1.0)  # the watch looks meanwhile, every 0.1 s
            cluster.scale(1)

        threading.Thread(target=join_once_said, daemon=True).start()
        assert run_tasks(abs, [(-3,)], scheduler=client, progress=False, desc="writing shards") == [3]
    assert "has no worker yet: writing shards waits for one to join" in caplog.text
    assert "no worker any more" not in caplog.text  # watched ten times before the worker joined


def _sleep_then(i: int) -> int:
    time.sleep(1.0)
    return i


def test_a_cluster_that_loses_every_worker_during_the_run_says_so(caplog, monkeypatch):
    """The only worker killed (the OOM killer, a node drained): the run waited for one to join without a word."""
    distributed = pytest.importorskip("distributed")
    from cardcube import parallel

    monkeypatch.setattr(parallel, "WORKER_CHECK_S", 0.1)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None,
                                  silence_logs=50) as cluster, distributed.Client(cluster) as client:

        def lose_then_add() -> None:
            while not cluster.scheduler.tasks:  # the run's tasks sent: it has seen its worker (0.3 s raced its start)
                time.sleep(0.02)
            cluster.scale(0)
            deadline = time.monotonic() + 30  # only so the run ends without the warning (the old code)
            while "no worker any more" not in caplog.text and time.monotonic() < deadline:
                time.sleep(0.05)
            cluster.scale(1)

        threading.Thread(target=lose_then_add, daemon=True).start()
        assert run_tasks(_sleep_then, [(1,), (2,), (3,)], scheduler=client, progress=False,
                         desc="writing shards") == [1, 2, 3]
    assert f"the dask cluster at {cluster.scheduler_address} has no worker any more: writing shards waits for " \
           "one to join" in caplog.text
    assert "a dask worker joined: writing shards goes on" in caplog.text


def test_a_second_interrupt_while_the_stop_sends_its_no_ops_says_the_tasks_may_still_run(tmp_path, monkeypatch):
    """A second Ctrl-C while the stopped run sends each worker its no-op (a call to the scheduler first, which a
    loaded or frozen scheduler answers late) escaped as a bare KeyboardInterrupt: without TasksStillRunningError in its
    chain, the writer lock was deleted while the run's tasks ran on the workers."""
    distributed = pytest.importorskip("distributed")
    from cardcube import parallel

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(distributed, "as_completed", interrupted)
    monkeypatch.setattr(parallel, "_after_all_sent", interrupted)  # the second Ctrl-C, while it waits for an answer
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None,
                                  silence_logs=50) as cluster:
        with pytest.raises(BaseException) as raised:
            run_tasks(partial(_timed_task, tmp_path), [(i,) for i in range(2)], scheduler=cluster.scheduler_address,
                      progress=False, stop_grace=60)
        assert TasksStillRunningError.in_chain(raised.value), repr(raised.value)
        assert "and again while waiting" in str(next(e for e in _chain(raised.value)
                                                     if isinstance(e, TasksStillRunningError)))


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    while exc is not None and exc not in seen:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen


def test_a_scheduler_that_does_not_answer_bounds_the_stopped_runs_wait_by_the_grace(tmp_path):
    """A frozen scheduler (a paused container) held the stopped run forever in the call that lists its workers for
    their no-ops, a call without a timeout, where the question after it is bounded by the grace."""
    distributed = pytest.importorskip("distributed")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    file = tmp_path / "scheduler.json"
    scheduler = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                                  "--port", "0", "--no-dashboard", "--scheduler-file", str(file)], env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    worker = None
    try:
        deadline = time.monotonic() + 60
        while not (file.exists() and file.read_text().strip().endswith("}")):
            assert time.monotonic() < deadline, "the scheduler did not start"
            time.sleep(0.1)
        address = json.loads(file.read_text())["address"]
        worker = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", "2",
                                   "--no-dashboard"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with distributed.Client(address, timeout=60) as client:
            client.wait_for_workers(1, timeout=60)

            def freeze_then_stop(result: int) -> dict:
                os.kill(scheduler.pid, signal.SIGSTOP)
                raise _Stop

            stopped, outcome = _stopped_in_a_thread(client, tmp_path, freeze_then_stop)
            stopped.join(60)  # only so a hang ends the test
            os.kill(scheduler.pid, signal.SIGCONT)
            (tmp_path / "go").touch()
            assert not stopped.is_alive(), "the stopped run still waits for the frozen scheduler"
            assert isinstance(outcome[0], TasksStillRunningError) and outcome[0].running == -1
    finally:
        for process in (worker, scheduler):
            if process is not None:
                os.kill(process.pid, signal.SIGCONT)
                process.kill()
                process.wait()


def _busy(folder: Path) -> None:
    """Another job's task: holds its worker's thread until ``folder/go`` exists."""
    (folder / "busy").touch()
    _wait_for(folder / "go")


def test_a_stop_on_a_worker_whose_threads_run_other_work_does_not_wait_for_a_free_thread(tmp_path, monkeypatch):
    """A worker tells it has heard of all the scheduler sent it before the stopped run's no-op once it holds the no-op
    (its messages are handled in order), not once a thread has run it: on a cluster whose threads were all busy with
    other work (another client's, a worker paused for memory), nothing of the run ran, yet it said its tasks may still
    run and left the writer lock for others to take for dead."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None,
                                  silence_logs=50) as cluster, distributed.Client(cluster) as other:
        other_work = other.submit(_busy, tmp_path, pure=False)
        _wait_for(tmp_path / "busy")

        def interrupted(*args, **kwargs):
            raise KeyboardInterrupt

        monkeypatch.setattr(distributed, "as_completed", interrupted)
        try:
            with pytest.raises(KeyboardInterrupt) as raised:
                run_tasks(partial(_timed_task, tmp_path), [(i,) for i in range(2)],
                          scheduler=cluster.scheduler_address, progress=False, stop_grace=3)
            assert not TasksStillRunningError.in_chain(raised.value), str(raised.value)
            assert not list(tmp_path.glob("start-*"))
        finally:
            (tmp_path / "go").touch()
            other_work.result(timeout=60)


def test_a_stopped_run_whose_last_ask_at_the_deadline_times_out_says_what_the_answer_before_said():
    """The last ask of the workers comes at the end of the grace, with 0.1 s to be answered: on a loaded machine it
    timed out, and a run whose workers had just said "2 tasks run" ended saying whether its tasks still ran "could
    not be asked". The last answer is told; a cluster that never answered is still said so."""
    answers = iter([2, 2])

    def running(seconds: float) -> int:
        try:
            return next(answers)
        except StopIteration:
            raise TimeoutError("no answer within 0.1 s") from None

    with pytest.raises(TasksStillRunningError) as stopped:
        _await_end(running, 0.3, "the dask workers", "extract", KeyboardInterrupt())
    assert stopped.value.running == 2
    assert str(stopped.value) == ("the run stopped (interrupted: Ctrl-C or SIGTERM); 2 of its tasks still ran on the "
                                  "dask workers, and had not ended 0.3 s later")

    def unanswered(seconds: float) -> int:
        raise TimeoutError("no answer within 0.1 s")

    with pytest.raises(TasksStillRunningError, match="could not be asked: TimeoutError") as unknown:
        _await_end(unanswered, 0.3, "the dask workers", "extract", KeyboardInterrupt())
    assert unknown.value.running == -1
