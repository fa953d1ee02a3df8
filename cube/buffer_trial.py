"""A buffer of parcels of unknown origin, tried first where it can be stopped.

GEOS's buffer of a valid polygon costs little for a field's outline, but grows with the square of its vertices
where the outline folds back within the buffer distance: a star of 1,000 narrow spikes shrunk by 100 m took 15 s
and 2.4 GB, a square with a 1 km edge of 10,000 teeth 1 m high shrunk by 5 m 19 s and 1 GB, one of 100,000 teeth
more memory than the machine had. A thread cannot be stopped, so the REST service tries a posted parcel's buffer
in a child process with a time and memory limit before it reads, and refuses the parcels whose buffer exceeds
them (:func:`check_bufferable`). The child comes from multiprocessing's fork server (a fork of a process that has
imported shapely and the modules of the server's main script, not of the server with its threads): 25-70 ms a POST
(``benchmarks/buffer_trial.py``). It runs the main script again (Python 3.11's fork server does not preload
"__main__"), which is quick when its imports are done, as they are for ``cardcube serve`` and ``uvicorn``; a
script that does more at its top (an app made there, rather than by uvicorn's ``--factory``) does it in every
child. That start is no part of the time limit, which counts from the child's word that it runs.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import resource
import sys
from collections.abc import Sequence
from multiprocessing.connection import Connection
from types import ModuleType

import geopandas as gpd
import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

from cardcube.errors import RequestTooLargeError

TRIED_FROM = 500  # vertices of a POST's parcels: below, the worst buffer (a star of 250 spikes shrunk by 100 m)
# takes 0.7 s and 180 MB, and a trial (25 ms) would cost a POST of a field or a few more than their buffer
BUFFER_SECONDS = 5.0  # a buffer of 1,000 fields of 400 vertices each takes 0.2 s
BUFFER_MEMORY = 512 * 2**20  # bytes the trial may allocate beyond what the child starts with
START_SECONDS = 60.0  # for the child to start (and import the server's main module): beyond, the trial is not made

log = logging.getLogger(__name__)

__all__ = ["BUFFER_MEMORY", "BUFFER_SECONDS", "TRIED_FROM", "check_bufferable"]


def check_bufferable(ids: Sequence[object], geometries: Sequence[BaseGeometry], crs: object, distance: float, *,
                     seconds: float = BUFFER_SECONDS, memory: int = BUFFER_MEMORY) -> None:
    """:class:`RequestTooLargeError` unless the parcels (``geometries`` in ``crs``) are buffered by ``distance``
    metres within ``seconds`` and ``memory`` bytes, in their UTM zone; tried in a child process, killed at the
    limit. A buffer of 0 is no work, and parcels of fewer than :data:`TRIED_FROM` vertices in all are not tried."""
    if not distance or shapely.get_num_coordinates(np.asarray(geometries, dtype=object)).sum() < TRIED_FROM:
        return
    lonlat = gpd.GeoSeries(list(geometries), crs=crs).to_crs(4326)
    west, south, east, north = lonlat.total_bounds
    zone = min(max(math.floor(((west + east) / 2 + 180) / 6) + 1, 1), 60)  # estimate_utm_crs took 60 ms a request
    metric = lonlat.to_crs((32600 if south + north >= 0 else 32700) + zone)
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__, *_main_imports()])  # once, in the fork server this process starts
    answer, sent = context.Pipe(duplex=False)
    child = context.Process(target=_buffer, args=(shapely.to_wkb(metric.values), distance, memory, sent),
                            name="cardcube-buffer-trial", daemon=True)
    child.start()
    sent.close()
    started = False  # the time limit counts from the child's word: its start (a main module imported) is not the trial
    try:
        started = answer.poll(START_SECONDS) and answer.recv() == "started"
        outcome = (answer.recv() if answer.poll(seconds) else f"did not end within {seconds:g} s") if started else None
    except EOFError:  # the child ended without a word
        outcome = None
    finally:
        child.kill()
        child.join()
        answer.close()
    if outcome is None and started and child.exitcode is not None and child.exitcode < 0:  # the kernel's OOM killer
        outcome = f"ended its process (signal {-child.exitcode})"
    elif outcome is None:  # it failed to start: no word on the parcels, whose buffer is then done unbounded
        log.warning("the buffer's trial of the parcel(s) %s could not run (its process did not start within %g s, or "
                    "exited with %s): done without", ", ".join(map(str, ids[:3])), START_SECONDS, child.exitcode)
        return
    if outcome != "ok":
        raise RequestTooLargeError(
            f"the buffer of {distance:g} m of the parcel(s) {', '.join(map(str, ids[:3]))}"
            f"{', ...' if len(ids) > 3 else ''} {outcome} (the limits: {seconds:g} s, {memory // 2**20} MiB). An "
            f"outline that folds back within the buffer (narrow spikes, dense teeth) costs GEOS the square of its "
            f"vertices; "
            f"simplify it first (shapely.simplify, PostGIS ST_SimplifyPreserveTopology), or ask with buffer=0")


def _main_imports() -> list[str]:
    """The modules the server's main script took its names from (``cardcube.cli`` for the ``cardcube`` command,
    ``uvicorn.main`` for ``uvicorn``): a child of the fork server runs the script again (Python 3.11's fork server
    does not preload "__main__"), and finds them imported rather than import them anew, 0.3 s a POST."""
    main = sys.modules.get("__main__")
    names = {value.__name__ if isinstance(value, ModuleType) else getattr(value, "__module__", None)
             for value in vars(main).values()} if main is not None else set()
    return sorted(n for n in names if isinstance(n, str) and n != "__main__" and n in sys.modules)


def _buffer(wkb: np.ndarray, distance: float, memory: int, sent: Connection) -> None:
    """In the child: buffer the parcels under an address-space limit of ``memory`` bytes beyond the child's own,
    and say "started", then "ok" or what stopped it."""
    sent.send("started")
    try:
        with open("/proc/self/statm") as f:  # Linux: pages of address space now
            size = int(f.read().split()[0]) * resource.getpagesize()
        resource.setrlimit(resource.RLIMIT_AS, (size + memory, resource.getrlimit(resource.RLIMIT_AS)[1]))
    except (OSError, ValueError):  # no /proc (macOS), or a lower hard limit: the time limit alone
        pass
    try:
        shapely.buffer(shapely.from_wkb(wkb), distance)
        sent.send("ok")
    except (MemoryError, shapely.errors.GEOSException) as exc:
        if isinstance(exc, MemoryError) or "bad_alloc" in str(exc):  # GEOS's std::bad_alloc
            sent.send(f"took more memory than it may ({type(exc).__name__}: {str(exc)[:80]})")
        else:  # no question of cost: the buffer where the parcels are read says what it is
            sent.send("ok")
