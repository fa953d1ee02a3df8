"""Running independent tasks on dask: local threads by default, or a dask-distributed cluster.

One small function so that ingest and extraction schedule work the same way and show the same
progress bar. ``scheduler`` is ``None``/``"threads"``, ``"processes"``, ``"sync"``, a scheduler address
(``tcp://host:8786``) or a ``distributed.Client``.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import dask
from dask.callbacks import Callback
from dask.utils import parse_timedelta
from tqdm.auto import tqdm

from cardcube.errors import ClusterError, InvalidRequestError, TasksStillRunningError
from cardcube.io_loop import close_store_clients

T = TypeVar("T")
log = logging.getLogger(__name__)
LOCAL_SCHEDULERS = (None, "threads", "processes", "sync", "synchronous", "single-threaded")
STOP_GRACE = 25.0  # seconds a stopped run waits for its running tasks (within Kubernetes' default 30 s grace)
WORKER_CHECK_S = 10.0  # how often a run on a cluster asks whether it still has a worker


def run_tasks(func: Callable[..., T], args: Sequence[tuple[Any, ...]], *, scheduler: Any = None,
              desc: str = "", progress: bool = True, unit: str = "task",
              tally: Callable[[T], Mapping[str, int]] | None = None, stop_grace: float | None = None) -> list[T]:
    """``[func(*a) for a in args]`` on dask, in order, with a progress bar; the first error is raised.
    Tasks start in the order given (put the longest first to balance the workers).

    ``tally`` turns a task's result into counts (e.g. parcels and chunks done) that the bar sums up.

    A run stopped early (Ctrl-C, SIGTERM, a lost scheduler) starts no more tasks, but the running ones cannot be
    stopped: dask's threads and a cluster's workers carry them on. With ``stop_grace`` (seconds) it waits that long
    for them to end before it lets the error through, and raises :class:`TasksStillRunningError` if some may still
    run: a writer must not let go of its lock while its writes go on (:func:`ingest.commit.writer_lock`).
    """
    if not args:
        return []
    bar = tqdm(total=len(args), desc=desc, unit=unit, disable=not progress)
    totals: Counter[str] = Counter()

    def done(result: T) -> None:
        bar.update()
        if tally is not None:
            totals.update(tally(result))
            bar.set_postfix(totals, refresh=False)

    with bar:
        with _connected(scheduler) as client:
            if client is not None:
                return _run_on_cluster(client, func, args, desc=desc, done=done, stop_grace=stop_grace)
        # dask's local schedulers start independent tasks in reverse key order: name them so that they
        # start in the order given (tests/test_parallel.py checks it).
        # Each task is its call bound to its arguments (functools.partial), so dask never walks them for
        # collections: a shard write's dates and checked scenes, or a job holding a cube's ledger, took
        # milliseconds per task to walk (3 s of the demo's S2 ingest)
        local = "threads" if scheduler in (None, "threads") else scheduler
        running = _Running() if local == "threads" else None
        calls = [partial(running.call, func, *a) if running else partial(func, *a) for a in args]
        n = len(args)
        name = desc or "task"
        tasks = [dask.delayed(c, pure=False, traverse=False)(dask_key_name=f"{name}-{n - i:08d}")
                 for i, c in enumerate(calls)]
        try:
            start = {"initializer": worker_process_start} if local == "processes" else {}
            with _Progress({t.key for t in tasks}, done):
                return list(dask.compute(*tasks, scheduler=local, **start))
        except BaseException as exc:
            if running is not None:
                running.stop()
                if stop_grace is not None:
                    _await_end(lambda _: running.count, stop_grace, "this process's threads", desc, exc)
            elif (stop_grace is not None and local == "processes" and isinstance(exc, KeyboardInterrupt)
                  and isinstance(exc.__context__, KeyboardInterrupt)):
                # a process pool waits for its tasks when it shuts down, unless interrupted again meanwhile ("sync":
                # an interrupted write goes on in zarr's I/O loop, which writer_lock waits for)
                raise TasksStillRunningError(-1, stop_grace, "dask's worker processes", _why(exc)) from exc
            raise


def worker_process_start() -> None:
    """Set up a worker process of dask's ``processes`` scheduler: it dies with the process that started it
    (:func:`_die_with_parent`), and at its exit the object store clients its tasks opened are closed while zarr's
    event loop still runs (:func:`cardcube.io_loop.close_store_clients`); left to the garbage collector, each
    printed aiohttp's "Unclosed client session" on stderr."""
    import zarr.core.sync  # noqa: F401  (registers its exit hook, which stops the loop, first: it runs after ours)

    _die_with_parent()
    atexit.register(close_store_clients)


def _die_with_parent() -> None:
    """Have Linux kill this process (SIGKILL) when its parent ends, however it ends: a driver killed outright (``kill
    -9``, the OOM killer) leaves no one to stop its pool's processes, which wrote on after the next run had taken
    the writer lock for dead and written the same shards (until 2026-12-05). Elsewhere, nothing."""
    import ctypes
    import multiprocessing
    import signal

    parent = multiprocessing.parent_process()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux
        return
    if parent is not None and os.getppid() != parent.pid:  # it ended before the line above
        os._exit(1)


def _run_on_cluster(client: Any, func: Callable[..., T], args: Sequence[tuple[Any, ...]], *, desc: str,
                    done: Callable[[T], None], stop_grace: float | None) -> list[T]:
    """:func:`run_tasks` on a dask-distributed ``client``."""
    from distributed import as_completed

    # keys chosen before anything is submitted: a stop during the submissions still knows every task sent
    token = uuid.uuid4().hex[:12]
    keys = [f"{(desc or 'task').replace(' ', '-')}-{token}-{i:08d}" for i in range(len(args))]
    futures: list = []
    since, workers = client.run_on_scheduler(_cluster_now)
    if not workers:  # the tasks wait for one to join, without a word: an ingest or extraction that seems to hang
        log.warning("the dask cluster at %s has no worker yet: %s waits for one to join", client.scheduler.address,
                    desc or "the run")
    try:
        for key, a in zip(keys, args, strict=True):
            futures.append(client.submit(func, *a, key=key, pure=False))
        with _watching_workers(client, desc, alone=not workers):
            for future in as_completed(futures, loop=client.loop):
                if future.status == "finished":
                    done(future.result())
        return client.gather(futures)
    except BaseException as exc:
        with contextlib.suppress(BaseException):  # the scheduler may be gone: then nothing starts anyway
            client.cancel(futures)
        failure = _cluster_failure(exc, client, desc)
        if stop_grace is not None:
            try:  # bounded by the grace too, and the wait after it by its own
                heard = _after_all_sent(client, token, stop_grace)
            except KeyboardInterrupt as again:  # a second Ctrl-C or SIGTERM already: as in _await_end
                raise TasksStillRunningError(-1, stop_grace, "the dask workers",
                                             f"{_why(failure or exc)}, and again while waiting for them") from again
            # without them, a 0 is believed only once the cancel (a message, not a call) has likely reached the workers
            _await_end(partial(_running_on_cluster, client, set(keys), set(workers), since, heard), stop_grace,
                       "the dask workers", desc, failure or exc, settle=0.0 if heard else CANCEL_SETTLE)
        if failure is not None:
            raise failure from exc
        raise


@contextlib.contextmanager
def _watching_workers(client: Any, desc: str, *, alone: bool) -> Iterator[None]:
    """Say when the cluster has lost every worker during the run (dask waits for one to join, without a word: a run
    that seems to hang; a worker killed by the OOM killer, a node drained), and when one is back. ``alone``: it had
    none at the start (said then)."""
    stop = threading.Event()

    def watch(alone: bool) -> None:
        while not stop.wait(WORKER_CHECK_S):
            try:
                workers = client.run_on_scheduler(_cluster_now)[1]
            except Exception:  # the scheduler gone: the run's own wait fails and says so
                continue
            if not workers and not alone:
                log.warning("the dask cluster at %s has no worker any more: %s waits for one to join (its tasks "
                            "are run again there; the scheduler's distributed.scheduler.no-workers-timeout fails "
                            "them instead)", client.scheduler.address, desc or "the run")
            elif workers and alone:
                log.warning("a dask worker joined: %s goes on", desc or "the run")
            alone = not workers

    watcher = threading.Thread(target=watch, args=(alone,), name="cardcube-worker-watch", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        stop.set()


def _after_all_sent(client: Any, token: str, timeout: float) -> list:
    """A no-op task for each worker now, sent after everything the scheduler has sent it (the stopped run's tasks,
    their cancel): the scheduler's messages to a worker arrive in order, and a question (``Client.run``) can
    overtake them, so a worker asked before a task sent to it had reached it said nothing ran, and the run let go
    of its lock while that task started (2 stops in 6 on 2 cores under a load of 6). Once it holds its no-op, a
    worker has heard of all of them. None sent ([]) if the scheduler does not take them, or does not say its workers
    within ``timeout`` seconds (a frozen scheduler held the stopped run here forever)."""
    try:
        workers = client.sync(client._run_on_scheduler, _cluster_now, callback_timeout=max(timeout, 0.1))[1]
        return [client.submit(_heard, key=f"heard-{token}-{i}", workers=[w], allow_other_workers=False, pure=False,
                              priority=2**30) for i, w in enumerate(workers)]
    except Exception:  # the scheduler is gone or does not answer: the question after it says so
        return []


def _heard() -> None:
    """On a worker: nothing (:func:`_after_all_sent`)."""


def _running_on_cluster(client: Any, keys: set[str], workers: set[str], since: float, heard: Sequence[Any],
                        timeout: float) -> int:
    """How many of ``keys`` the scheduler still holds or a worker still runs or is about to run (cancelled ones
    included), asked within ``timeout`` seconds; an error if that cannot be told: a worker of the run (``workers``
    at the start, ``since`` on the scheduler's clock, and those that joined since) has left the cluster (its threads
    may run on, unseen), one does not answer, or the scheduler, or none runs but a worker has not yet received its
    no-op of ``heard`` (:func:`_after_all_sent`: its "none" may predate tasks sent to it). A worker holding its no-op
    has handled all the scheduler sent it before (in order): it need not have run it, which waits for a free thread
    (all may run other work: another client's, or none on a worker paused for memory)."""

    async def ask() -> int:
        held, present, joined = await client._run_on_scheduler(_held_by_scheduler, keys, since)
        if gone := (workers | set(joined)) - set(present):
            raise RuntimeError(f"the dask worker {sorted(gone)[0]} left the cluster during the run: what it runs "
                               f"cannot be asked")
        answers = await client._run(_running_here, keys, {f.key for f in heard}, on_error="return")
        if bad := [w for w, a in answers.items() if not isinstance(a, tuple)]:
            raise RuntimeError(f"the dask worker {bad[0]} could not say what it runs: {answers[bad[0]]}")
        running = held + sum(n for n, _ in answers.values())
        received = set().union(*(got for _, got in answers.values()))
        if not running and (unheard := sum(f.status != "finished" and f.key not in received for f in heard)):
            raise RuntimeError(f"{unheard} dask worker(s) had not yet heard of all the scheduler sent them (the "
                               f"run's tasks and their cancel)")
        return running

    try:
        return client.sync(ask, callback_timeout=max(timeout, 0.1))
    except TimeoutError:
        raise TimeoutError(f"no answer within {max(timeout, 0.1):.1f} s") from None


def _cluster_now(dask_scheduler: Any = None) -> tuple[float, list[str]]:
    """On the scheduler (``Client.run_on_scheduler``): its clock, and its workers now."""
    return time.time(), list(dask_scheduler.workers)


def _held_by_scheduler(keys: set[str], since: float, dask_scheduler: Any = None) -> tuple[int, list[str], list[str]]:
    """On the scheduler: how many of ``keys`` it has not released yet, its workers now, and the workers that joined
    at or after ``since`` (from its event log: a worker that joined during the run and left again is no longer
    among its workers)."""
    joined = [event["worker"] for at, event in dask_scheduler.get_events("all")
              if at >= since and isinstance(event, dict) and event.get("action") == "add-worker"]
    return sum(k in dask_scheduler.tasks for k in keys), list(dask_scheduler.workers), joined


def _running_here(keys: set[str], heard: set[str], dask_worker: Any = None) -> tuple[int, list[str]]:
    """On a worker (``Client.run``): how many of ``keys`` it runs (cancelled ones too: a thread cannot be stopped)
    or holds to run, and which of ``heard`` (:func:`_after_all_sent`) it holds, in any state."""
    tasks = dask_worker.state.tasks
    return (sum(1 for k in keys if (ts := tasks.get(k)) is not None and ts.state not in _SETTLED),
            [k for k in heard if k in tasks])


_SETTLED = frozenset({"memory", "error", "released", "forgotten"})  # a worker's task states that run nothing
CANCEL_SETTLE = 0.5  # seconds after a cancel before "nothing runs" is believed


class _NotStarted(Exception):
    """A task of a stopped run, left out (nobody reads its result)."""


class _Running:
    """How many tasks of one run on dask's local threads are running, so that a stopped run can wait for them (a
    thread cannot be stopped); once stopped, those not started yet do not start."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count = 0
        self._stopped = False

    def call(self, func: Callable[..., T], *args: Any) -> T:
        with self._lock:
            if self._stopped:
                raise _NotStarted("the run was stopped before this task started")
            self.count += 1
        try:
            return func(*args)
        finally:
            with self._lock:
                self.count -= 1

    def stop(self) -> None:
        with self._lock:
            self._stopped = True


def _cluster_failure(exc: BaseException, client: Any, desc: str) -> ClusterError | None:
    """What a failure of the cluster itself (not of a task's own work) means, in one line; None for any other."""
    from concurrent.futures import CancelledError

    from botocore.exceptions import NoCredentialsError
    from distributed.scheduler import KilledWorker

    if isinstance(exc, KilledWorker):
        return ClusterError(
            f"{desc or 'a task'}: one of its tasks killed the dask worker running it, {exc.allowed_failures + 1} "
            f"time(s) in a row (out of memory? see the workers' logs, the last was {exc.last_worker.address}): give "
            f"the workers more memory, or the tasks less work")
    if isinstance(exc, NoCredentialsError) or isinstance(exc.__cause__, NoCredentialsError):  # raised on a worker
        return ClusterError(
            f"{desc or 'a task'}: a dask worker found no credentials for S3 ({exc.__cause__ or exc}), where this "
            f"machine has them: start the workers with the store's keys too (AWS_ACCESS_KEY_ID and "
            f"AWS_SECRET_ACCESS_KEY, and AWS_ENDPOINT_URL for Ceph or MinIO, in their environment)")
    if isinstance(exc, CancelledError):  # FutureCancelledError: "scheduler-connection-lost", a restart
        reason = getattr(exc, "reason", None) or "cancelled"
        return ClusterError(f"{desc or 'the run'}: the dask scheduler at {client.scheduler.address} dropped this "
                            f"run's tasks ({reason}): was it stopped or restarted? Re-run once the cluster is back")
    return None


def _await_end(running: Callable[[float], int], grace: float, where: str, desc: str, exc: BaseException, *,
               settle: float = 0.0) -> None:
    """Wait up to ``grace`` seconds for the tasks of a run stopped by ``exc`` to end (``running(seconds)``: how many
    run, asked within that many seconds; a 0 is believed from ``settle`` seconds on); raise
    :class:`TasksStillRunningError` (from ``exc``) if some still run, or if that cannot be told (the scheduler is
    gone, a worker does not answer, a second interrupt)."""
    started = time.monotonic()
    deadline = started + max(grace, settle)  # a 0 before the cancel has reached the workers means nothing
    told = False
    failed: Exception | None = None
    known = 0  # what the last answer said runs: the last ask, at the deadline, has little time to be answered
    try:
        while True:
            try:
                left, failed = running(deadline - time.monotonic()), None
                known = left
            except Exception as exc_asking:  # the scheduler is gone, a worker does not answer: ask again
                left, failed = -1, exc_asking
            if not left and time.monotonic() >= started + settle:
                return
            if left > 0 and not told:
                log.warning("%s stopped: waiting up to %g s for the %d task(s) still running on %s",
                            desc or "the run", grace, left, where)
                told = True
            if time.monotonic() >= deadline:
                break
            time.sleep(0.2)
    except KeyboardInterrupt as again:  # a second Ctrl-C or SIGTERM: stop waiting, and say so
        raise TasksStillRunningError(-1, grace, where, f"{_why(exc)}, and again while waiting for them") from again
    if failed is not None and not known:
        raise TasksStillRunningError(-1, grace, where, f"{_why(exc)}; whether its tasks still run could not be "
                                                       f"asked: {type(failed).__name__}: {failed}") from exc
    raise TasksStillRunningError(known, grace, where, _why(exc)) from exc


def _why(exc: BaseException) -> str:
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted: Ctrl-C or SIGTERM"
    return str(exc) if isinstance(exc, ClusterError) else f"{type(exc).__name__}: {exc}"


class _Progress(Callback):
    """Reports each finished task of ``keys`` to ``done`` (dask's local schedulers call back on the driver)."""

    def __init__(self, keys: set, done: Callable[[Any], None]) -> None:
        super().__init__()
        self._keys, self._done = keys, done

    def _posttask(self, key, result, dsk, state, worker_id) -> None:
        if key in self._keys:
            self._done(result)


def is_distributed(scheduler: Any) -> bool:
    """Whether ``scheduler`` names a dask-distributed cluster (a Client or an address), whose workers may run on
    other machines, rather than one of dask's schedulers on this machine."""
    return scheduler not in LOCAL_SCHEDULERS


def check_scheduler(scheduler: Any) -> None:
    """A clear error, before any work starts (nothing written yet), for a scheduler no run can use: a misspelt name,
    or an address where no dask scheduler answers (connected to once here)."""
    with _connected(scheduler):
        pass


def _check_name(scheduler: Any) -> None:
    if not is_distributed(scheduler) or (isinstance(scheduler, str) and ":" in scheduler):
        return
    from distributed import Client

    if not isinstance(scheduler, Client):
        raise InvalidRequestError(f"unknown scheduler {scheduler!r}: use threads, processes, sync, a tcp:// address "
                                  f"or a Client")


def check_workers_see(scheduler: Any, files: Mapping[str, str | os.PathLike | None]) -> None:
    """On a cluster, an :class:`InvalidRequestError` unless every worker sees each local file of ``files`` (what
    it is, e.g. "the cube's folder": a file this process has just written there; None: in an object store). Workers
    on other machines read and write a local folder on their own disks: an ingest failed there with zarr's
    ArrayNotFoundError, an extraction's rows were lost."""
    paths = {what: str(path) for what, path in files.items() if path is not None}
    if not paths or not is_distributed(scheduler):
        return
    with _connected(scheduler) as client:
        seen = client.run(_exist, list(paths.values()), on_error="return")
    for i, (what, path) in enumerate(paths.items()):
        blind = sorted(w for w, found in seen.items() if not (isinstance(found, list) and found[i]))
        if blind:
            raise InvalidRequestError(
                f"{len(blind)} of the {len(seen)} dask workers ({', '.join(blind[:3])}) do not see {what} "
                f"{Path(path).parent} (is it on this machine's disk only?): with a cluster, give one every worker "
                f"reaches, s3://... or a volume mounted at the same path on each machine")


def _exist(paths: list[str]) -> list[bool]:
    return [os.path.exists(p) for p in paths]


@contextlib.contextmanager
def _connected(scheduler: Any) -> Iterator[Any]:
    """The dask-distributed Client of ``scheduler`` (None for a local scheduler); one connected here, to an address,
    is closed after the block (quietly: a client whose scheduler was lost logs its reconnection's traceback)."""
    client = _client(scheduler)
    try:
        yield client
    finally:
        if client is not None and client is not scheduler:
            quiet = logging.getLogger("distributed.client")
            disabled, quiet.disabled = quiet.disabled, True
            try:
                client.close()
            finally:
                quiet.disabled = disabled


def _client(scheduler: Any):
    _check_name(scheduler)
    if not is_distributed(scheduler):
        return None
    if not isinstance(scheduler, str):  # a Client
        return scheduler
    from distributed import Client

    _probe(scheduler)  # tcp://host:port, or host:port
    try:
        return Client(scheduler, set_as_default=False)  # nothing global: a failed start left dask set to it
    except OSError as exc:
        raise InvalidRequestError(f"cannot reach the dask scheduler at {scheduler}: {exc}") from None
    except ValueError as exc:  # a misspelt scheme (tpc://): distributed names the ones it knows
        raise InvalidRequestError(f"cannot use the dask scheduler address {scheduler}: {exc}") from None


def _probe(address: str) -> None:
    """Fail at once, not after distributed's 30 s of retries, when nothing listens at a ``tcp://`` (or bare
    ``host:port``) scheduler address, and within the connect timeout when what listens there does not answer as a
    dask scheduler (a dashboard's port, another service): the Client would wait for its handshake forever, or
    read an HTTP answer as a message of exabytes. Other schemes, and a host that does not answer, are left to
    the Client."""
    scheme, _, rest = address.rpartition("://")
    host, _, port = rest.rpartition(":")
    if scheme not in ("", "tcp") or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=2).close()
    except ConnectionRefusedError:
        raise InvalidRequestError(f"cannot reach the dask scheduler at {address}: connection refused (is "
                                  f"a dask scheduler running there? `dask scheduler` starts one)") from None
    except OSError:  # a timeout or an unknown name: the Client says more, in its own time
        return
    timeout = parse_timedelta(dask.config.get("distributed.comm.timeouts.connect"))

    async def handshake() -> None:
        from distributed.comm import connect

        comm = await asyncio.wait_for(connect(address, timeout=timeout), timeout)
        await comm.close()

    try:  # on a thread of its own: the caller may be running an event loop (a notebook)
        with ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, handshake()).result()
    except Exception as exc:  # whatever a non-dask server makes distributed raise (an HTTP answer: MemoryError)
        why = f"{type(exc).__name__}: {exc}" if isinstance(exc, OSError) and str(exc) else type(exc).__name__
        raise InvalidRequestError(f"{address} does not answer as a dask scheduler ({why}): is it the scheduler's "
                                  f"port (8786 by default), not its dashboard's (8787) or another service's?") from None
