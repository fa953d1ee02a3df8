"""zarr's I/O event loop at a command's end: the store operations still running there waited for (a writer's
before it lets go of its lock) or cancelled (a failed command's leftovers), and the S3 clients closed on the loop
they were opened on before zarr stops it."""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import suppress

from zarr.core import sync as zarr_sync
from zarr.core.sync import sync

log = logging.getLogger(__name__)


def close_store_clients() -> None:
    """Close the S3 clients of this process's cached filesystems (zarr's stores keep theirs open) on zarr's event
    loop, which they were opened on, while it runs: at exit s3fs's own finalizer comes after zarr has stopped the
    loop, and then closes the sockets only (aiohttp's "Unclosed client session" on stderr)."""
    from s3fs import S3FileSystem

    for fs in list(S3FileSystem._cache.values()):
        if (creator := getattr(fs, "_s3creator", None)) is None:
            continue
        try:
            sync(creator.__aexit__(None, None, None), timeout=5)
        except Exception as exc:  # at exit: nothing to do but say it
            log.debug("closing the S3 client of %r: %s", fs, exc)


def pending_io(timeout: float, *, what: str = "store operations") -> int:
    """Wait up to ``timeout`` seconds for the store operations running in zarr's I/O loop to end; how many still run
    (-1: the loop does not answer). A caller interrupted (Ctrl-C, SIGTERM) while it waited for one stops waiting,
    but the operation goes on there: a writer must not let go of its lock before its writes have landed."""
    loop = zarr_sync.loop[0]
    if loop is None or not loop.is_running():
        return 0

    async def others() -> int:
        return sum(1 for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done())

    deadline = time.monotonic() + timeout
    told = False
    while True:
        try:
            left = asyncio.run_coroutine_threadsafe(others(), loop).result(max(deadline - time.monotonic(), 0.1))
        except (TimeoutError, RuntimeError):  # the loop is stuck or closing: what runs there cannot be told
            return -1
        if not left or time.monotonic() >= deadline:
            return left
        if not told:
            log.warning("waiting up to %g s for %s to end (%d)", timeout, what, left)
            told = True
        time.sleep(0.05)


def cancel_pending_io(timeout: float) -> None:
    """Cancel the store operations still running in zarr's I/O loop, and wait up to ``timeout`` seconds for them to
    end: at a command's exit, the reads that a failed one's siblings left (a gather raises at its first failure and
    leaves the others running). Left to the garbage collector once the loop has stopped, each printed a traceback after
    the command's one error line ("Exception ignored in: <coroutine ...> ... was created in a different Context");
    cancelled, each ends in its own task."""
    loop = zarr_sync.loop[0]
    if loop is None or not loop.is_running():
        return

    async def cancel_others() -> None:
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)

    with suppress(TimeoutError, RuntimeError):  # a loop stuck or closing: nothing more to do at exit
        asyncio.run_coroutine_threadsafe(cancel_others(), loop).result(timeout + 1)
