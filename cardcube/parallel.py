"""Running independent tasks on dask: local threads by default, or a dask-distributed cluster.

One small function so that ingest and extraction schedule work the same way and show the same
progress bar. ``scheduler`` is ``None``/``"threads"``, ``"processes"``, ``"sync"``, a scheduler address
(``tcp://host:8786``) or a ``distributed.Client``.
"""

from __future__ import annotations

import asyncio
import socket
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

import dask
from dask.callbacks import Callback
from dask.utils import parse_timedelta
from tqdm.auto import tqdm

from cardcube.errors import InvalidRequestError

T = TypeVar("T")
LOCAL_SCHEDULERS = (None, "threads", "processes", "sync", "synchronous", "single-threaded")


def run_tasks(func: Callable[..., T], args: Sequence[tuple[Any, ...]], *, scheduler: Any = None,
              desc: str = "", progress: bool = True, unit: str = "task",
              tally: Callable[[T], Mapping[str, int]] | None = None) -> list[T]:
    """``[func(*a) for a in args]`` on dask, in order, with a progress bar; the first error is raised.
    Tasks start in the order given (put the longest first to balance the workers).

    ``tally`` turns a task's result into counts (e.g. parcels and chunks done) that the bar sums up.
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
        client = _client(scheduler)
        if client is not None:
            from distributed import as_completed

            try:
                futures = [client.submit(func, *a, pure=False) for a in args]
                for future in as_completed(futures):
                    if future.status == "finished":
                        done(future.result())
                return client.gather(futures)
            finally:
                if client is not scheduler:  # connected here, to an address: not the caller's to keep
                    client.close()
        # dask's local schedulers start independent tasks in reverse key order: name them so that they
        # start in the order given (tests/test_parallel.py checks it).
        # Each task is its call bound to its arguments (functools.partial), so dask never walks them for
        # collections: a shard write's dates and checked scenes, or a job holding a cube's ledger, took
        # milliseconds per task to walk (3 s of the demo's S2 ingest)
        n = len(args)
        name = desc or "task"
        tasks = [dask.delayed(partial(func, *a), pure=False, traverse=False)(dask_key_name=f"{name}-{n - i:08d}")
                 for i, a in enumerate(args)]
        local = "threads" if scheduler in (None, "threads") else scheduler
        with _Progress({t.key for t in tasks}, done):
            return list(dask.compute(*tasks, scheduler=local))


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
    """A clear error for a scheduler no run can use (a misspelling), before any work starts; an address is
    reached only when the work runs."""
    if not is_distributed(scheduler) or (isinstance(scheduler, str) and ":" in scheduler):
        return
    from distributed import Client

    if not isinstance(scheduler, Client):
        raise InvalidRequestError(f"unknown scheduler {scheduler!r}: use threads, processes, sync, a tcp:// address "
                                  f"or a Client")


def _client(scheduler: Any):
    check_scheduler(scheduler)
    if not is_distributed(scheduler):
        return None
    if not isinstance(scheduler, str):  # a Client
        return scheduler
    from distributed import Client

    _probe(scheduler)  # tcp://host:port, or host:port
    try:
        return Client(scheduler)
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
                                  f"dask-scheduler running there?)") from None
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
