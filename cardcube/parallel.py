"""Running independent tasks on dask: local threads by default, or a dask-distributed cluster.

One small function so that ingest and extraction schedule work the same way and show the same
progress bar. ``scheduler`` is ``None``/``"threads"``, ``"processes"``, ``"sync"``, a scheduler address
(``tcp://host:8786``) or a ``distributed.Client``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import dask
from tqdm.auto import tqdm

T = TypeVar("T")


def run_tasks(func: Callable[..., T], args: Sequence[tuple[Any, ...]], *, scheduler: Any = None,
              desc: str = "", progress: bool = True, unit: str = "task") -> list[T]:
    """``[func(*a) for a in args]`` on dask, in order, with a progress bar; the first error is raised."""
    if not args:
        return []
    client = _client(scheduler)
    if client is not None:
        from distributed import as_completed

        futures = [client.submit(func, *a, pure=False) for a in args]
        with tqdm(total=len(futures), desc=desc, unit=unit, disable=not progress) as bar:
            for _ in as_completed(futures):
                bar.update()
        return client.gather(futures)
    tasks = [dask.delayed(func, pure=False)(*a) for a in args]
    local = "threads" if scheduler in (None, "threads") else scheduler
    if progress:
        from tqdm.dask import TqdmCallback

        with TqdmCallback(desc=desc, unit=unit):
            return list(dask.compute(*tasks, scheduler=local))
    return list(dask.compute(*tasks, scheduler=local))


def _client(scheduler: Any):
    if scheduler is None or scheduler in ("threads", "processes", "sync", "synchronous", "single-threaded"):
        return None
    from distributed import Client

    if isinstance(scheduler, Client):
        return scheduler
    if isinstance(scheduler, str):
        return Client(scheduler)
    raise ValueError(f"unknown scheduler {scheduler!r}: use threads, processes, sync, an address or a Client")
