"""Geometry work on parcels of unknown origin (a POST to the REST service), done where it can be stopped.

GEOS's overlays and buffers cost little for a field's outline, but grow with the square of its vertices where its
edges cross or fold back within the buffer distance: an outline of 3,000 vertices crossing itself at random took
50 s and 2.3 GB to repair; a valid star of 1,000 narrow spikes 15 s and 2.4 GB to shrink by 100 m, a square with
a 1 km edge of 10,000 teeth 1 m high 19 s and 1 GB by 5 m, one of 100,000 teeth more memory than the machine had.
A thread cannot be stopped, so the REST service makes a posted parcel's polygon (its repair, a collection's union:
:func:`polygonal_in_child`) and tries its buffer (:func:`check_bufferable`) in a child process with a time and
memory limit, and refuses the parcels that exceed them.

The child comes from multiprocessing's fork server (a fork of a process that has imported shapely and the modules
of the server's main script, not of the server with its threads): 25-70 ms a POST
(``benchmarks/buffer_trial.py``). It runs the main script again (Python 3.11's fork server does not preload
"__main__"), which is quick when its imports are done, as they are for ``cardcube serve`` and ``uvicorn``; a
script that does more at its top (an app made there, rather than by uvicorn's ``--factory``) does it in every
child. That start is no part of the time limit, which counts from the child's word that it runs; a child that
does not start (within :data:`START_SECONDS`) or fails is no refusal: the work is then done here, unbounded.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import resource
import sys
from collections.abc import Callable, Hashable, Sequence
from multiprocessing.connection import Connection
from types import ModuleType
from typing import Any

import geopandas as gpd
import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

from cardcube.errors import ParcelError, RequestTooLargeError
from cube.parcels import polygonal

TRIED_FROM = 500  # vertices of a POST's parcels: below, the worst buffer (a star of 250 spikes shrunk by 100 m)
# takes 0.7 s and 180 MB, the worst repair 0.2 s, and a child (25 ms) would cost a POST of a field more than they
LIMIT_SECONDS = 5.0  # a buffer of 1,000 fields of 400 vertices each takes 0.2 s
LIMIT_MEMORY = 512 * 2**20  # bytes the work may allocate beyond what the child starts with
START_SECONDS = 60.0  # for the child to start (and run the server's main script): beyond, the work is done here

log = logging.getLogger(__name__)

__all__ = ["LIMIT_MEMORY", "LIMIT_SECONDS", "TRIED_FROM", "check_bufferable", "polygonal_in_child"]

Outcome = tuple[str, Any]  # ("ok", the result) or ("refused", why) from the child
Refusal = tuple[str, int]  # why the child's work was stopped, and the index of the parcel it was working on (-1)


def check_bufferable(ids: Sequence[Hashable], geometries: Sequence[BaseGeometry], crs: object, distance: float, *,
                     seconds: float = LIMIT_SECONDS, memory: int = LIMIT_MEMORY) -> None:
    """:class:`RequestTooLargeError` unless the parcels (``geometries`` in ``crs``) are buffered by ``distance``
    metres within ``seconds`` and ``memory`` bytes, in their UTM zone; tried in a child process, killed at the
    limit. A buffer of 0 is no work, and parcels of fewer than :data:`TRIED_FROM` vertices in all are not tried."""
    if not distance or shapely.get_num_coordinates(np.asarray(geometries, dtype=object)).sum() < TRIED_FROM:
        return
    lonlat = gpd.GeoSeries(list(geometries), crs=crs).to_crs(4326)
    west, south, east, north = lonlat.total_bounds
    zone = min(max(math.floor(((west + east) / 2 + 180) / 6) + 1, 1), 60)  # estimate_utm_crs took 60 ms a request
    metric = lonlat.to_crs((32600 if south + north >= 0 else 32700) + zone)
    outcome = _in_child(_buffer, (shapely.to_wkb(metric.values), distance), seconds, memory, f"buffer of {ids[0]}")
    if outcome is not None and outcome[0] == "refused":
        raise RequestTooLargeError(
            f"the buffer of {distance:g} m of {_costly(ids, outcome[1])} (the limits: {seconds:g} s, "
            f"{memory // 2**20} MiB). An outline that folds back within the buffer (narrow spikes, dense teeth) "
            f"costs GEOS the square of its vertices; simplify it first (shapely.simplify, PostGIS "
            f"ST_SimplifyPreserveTopology), or ask with buffer=0")


def polygonal_in_child(ids: Sequence[Hashable], geometries: Sequence[BaseGeometry], repair: bool, *,
                       seconds: float = LIMIT_SECONDS, memory: int = LIMIT_MEMORY
                       ) -> list[tuple[BaseGeometry, bool] | ParcelError]:
    """:func:`cube.parcels.polygonal` of each parcel (a :class:`ParcelError` where it is none), made in a child
    process within ``seconds`` and ``memory`` bytes; :class:`RequestTooLargeError` past them. An
    :data:`cube.parcels.Overlay` for parcels of unknown origin. Parcels of fewer than :data:`TRIED_FROM` vertices
    in all are made here (the worst, an outline of 300 vertices crossing itself at random: 0.2 s, 60 MB)."""
    array = np.asarray(geometries, dtype=object)
    outcome = None if shapely.get_num_coordinates(array).sum() < TRIED_FROM else _in_child(
        _polygonals, (list(ids), shapely.to_wkb(array), repair), seconds, memory, f"polygon of {ids[0]}")
    if outcome is None:  # few vertices, or the child could not run: here
        return [_polygonal_or_error(pid, g, repair) for pid, g in zip(ids, geometries, strict=True)]
    if outcome[0] == "refused":
        raise RequestTooLargeError(
            f"making a valid polygon of {_costly(ids, outcome[1])} (the limits: {seconds:g} s, "
            f"{memory // 2**20} MiB): a repair's work grows with the square of the vertices where edges cross; "
            f"repair them first (shapely.make_valid, PostGIS ST_MakeValid, QGIS Fix Geometries)")
    return [ParcelError(pid, done) if isinstance(done, str) else (shapely.from_wkb(done[0]), done[1])
            for pid, done in zip(ids, outcome[1], strict=True)]


def _costly(ids: Sequence[Hashable], refusal: Refusal) -> str:
    """The parcel the child was working on when stopped, and what stopped it; the first ids if it is unknown."""
    why, at = refusal
    if 0 <= at < len(ids):
        return f"the parcel {ids[at]!s}{f' ({at + 1:,} of {len(ids):,} posted)' if len(ids) > 1 else ''} {why}"
    return f"the parcel(s) {', '.join(map(str, ids[:3]))}{', ...' if len(ids) > 3 else ''} {why}"


def _in_child(target: Callable[..., Any], args: tuple[Any, ...], seconds: float, memory: int, what: str
              ) -> Outcome | None:
    """``target(*args, at)`` in a child process of the fork server, under an address-space limit of ``memory``
    bytes beyond its own, stopped after ``seconds``: ("ok", what it returned) or ("refused", a :data:`Refusal`: why,
    and the parcel the target was at, by the index it keeps in ``at``); None if it did not start within
    :data:`START_SECONDS` or failed without a word of cost (the caller then does the work itself)."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__, *_main_imports()])  # once, in the fork server this process starts
    answer, sent = context.Pipe(duplex=False)
    at = context.Value("q", -1, lock=False)  # shared memory: still read when the child is killed
    child = context.Process(target=_limited, args=(target, (*args, at), memory, sent), name="cardcube-geometry-trial",
                            daemon=True)
    try:
        child.start()
    except OSError as exc:  # no process to be had (the fork server's limit): the work is done here
        log.warning("the %s could not be made in a child process (%s): made without limits", what, exc)
        answer.close()
        return None
    finally:
        sent.close()
    started = False  # the time limit counts from the child's word: its start (the main script run again) is not
    try:
        started = answer.poll(START_SECONDS) and answer.recv() == "started"
        outcome = (answer.recv() if answer.poll(seconds) else ("refused", f"did not end within {seconds:g} s")
                   ) if started else None
    except EOFError:  # the child ended without a word
        outcome = None
    finally:
        child.kill()
        child.join()
        answer.close()
    if outcome is None and started and child.exitcode is not None and child.exitcode < 0:  # the kernel's OOM killer
        outcome = ("refused", f"ended its process (signal {-child.exitcode})")
    if outcome is None or outcome[0] == "failed":
        log.warning("the %s could not be made in a child process (it did not start within %g s, or failed: %s): "
                    "made without limits", what, START_SECONDS, outcome[1] if outcome else child.exitcode)
        return None
    return ("refused", (outcome[1], at.value)) if outcome[0] == "refused" else outcome


def _main_imports() -> list[str]:
    """The modules the server's main script took its names from (``cardcube.cli`` for the ``cardcube`` command,
    ``uvicorn.main`` for ``uvicorn``): a child of the fork server runs the script again (Python 3.11's fork server
    does not preload "__main__"), and finds them imported rather than import them anew, 0.3 s a POST."""
    main = sys.modules.get("__main__")
    names = {value.__name__ if isinstance(value, ModuleType) else getattr(value, "__module__", None)
             for value in vars(main).values()} if main is not None else set()
    return sorted(n for n in names if isinstance(n, str) and n != "__main__" and n in sys.modules)


def _limited(target: Callable[..., Any], args: tuple[Any, ...], memory: int, sent: Connection) -> None:
    """In the child: say "started", limit the address space to ``memory`` bytes beyond the child's own, and send
    ("ok", ``target(*args)``), ("refused", why) if it ran out of memory, or ("failed", why) for another error."""
    sent.send("started")
    try:
        with open("/proc/self/statm") as f:  # Linux: pages of address space now
            size = int(f.read().split()[0]) * resource.getpagesize()
        resource.setrlimit(resource.RLIMIT_AS, (size + memory, resource.getrlimit(resource.RLIMIT_AS)[1]))
    except (OSError, ValueError):  # no /proc (macOS), or a lower hard limit: the time limit alone
        pass
    try:
        sent.send(("ok", target(*args)))
    except (MemoryError, shapely.errors.GEOSException) as exc:
        if isinstance(exc, MemoryError) or "bad_alloc" in str(exc):  # GEOS's std::bad_alloc
            sent.send(("refused", f"took more memory than it may ({type(exc).__name__}: {str(exc)[:80]})"))
        else:  # no question of cost: done again where it is needed, it says what it is there
            sent.send(("failed", f"{type(exc).__name__}: {str(exc)[:200]}"))


def _buffer(wkb: np.ndarray, distance: float, at: Any) -> None:
    """Each parcel buffered, one at a time, its index in ``at`` (a shared ``multiprocessing.Value``)."""
    for at.value, geom in enumerate(shapely.from_wkb(wkb)):
        shapely.buffer(geom, distance)


def _polygonals(ids: list[Hashable], wkb: np.ndarray, repair: bool, at: Any) -> list[tuple[bytes, bool] | str]:
    """:func:`cube.parcels.polygonal` of each, as WKB and whether repaired, or the reason it is no polygon; the
    index of the parcel at work in ``at``."""
    out = []
    for at.value, (pid, geom) in enumerate(zip(ids, shapely.from_wkb(wkb), strict=True)):
        done = _polygonal_or_error(pid, geom, repair)
        out.append(done.reason if isinstance(done, ParcelError) else (shapely.to_wkb(done[0]), done[1]))
    return out


def _polygonal_or_error(pid: Hashable, geom: BaseGeometry, repair: bool) -> tuple[BaseGeometry, bool] | ParcelError:
    try:
        return polygonal(pid, geom, repair=repair)
    except ParcelError as exc:
        return exc
