"""The cube versions a long-running reader (the REST service) answers from, without reading the ledger per query.

On S3 a lookup of the latest version lists the ledger and reads its newest record: a query should not pay it
each time, yet a new ingest's version must be seen within seconds, and a pinned version that ``cardcube expire``
removed must stop being served. A cube wiped and built again at the same place (a reprocessed archive, a
pipeline re-run from scratch) is noticed by its latest version: a lower number, the same one committed at
another time, or a higher one whose record of the number seen before was committed at another time. Everything
kept of the old one is then dropped (``on_replaced``: the reader's own caches too).
"""

from __future__ import annotations

import logging
import math
import threading
import time as timer
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from cardcube.errors import CubeLostError, CubeNotFoundError, StoreUnavailableError, VersionNotFoundError
from cardcube.lru import LRUDict
from cardcube.storage import key_exists, store_url
from cube import layout
from cube.ledger import CubeVersion, read_version

REFRESH = 5.0  # seconds between lookups of the latest version of a collection

log = logging.getLogger(__name__)


class VersionCache:
    """The cube versions a long-running reader answers from. A committed version never changes, so a pinned
    one is read once (the 32 most recent kept) and afterwards only checked, at most every ``refresh``
    seconds, to still exist (``cardcube expire`` may have removed it and its data); the latest of a
    collection is looked up again at most every ``refresh`` seconds, after which a new ingest's version
    is seen, and so is a collection not in the cube (``GET /`` listed it on every call); a collection once
    seen that has no version any more is a :class:`CubeLostError` (a 500 from the service), not an unknown
    collection. A latest version of another cube (replaced: :meth:`_is_replaced`) makes the pinned versions
    read before it stale and calls ``on_replaced`` with the collection. Safe to share between threads."""

    def __init__(self, store: Any, *, refresh: float = REFRESH, size: int = 32,
                 on_replaced: Callable[[str], None] | None = None) -> None:
        self._store, self._refresh, self._on_replaced = store, refresh, on_replaced
        self._latest: dict[str, tuple[float, CubeVersion]] = {}
        self._absent: dict[str, tuple[float, str]] = {}  # collection -> (when found absent, the error's message)
        # (collection, version) -> (last checked, version, the collection's cube generation when it was read)
        self._pinned: LRUDict = LRUDict(size)
        self._generation: dict[str, int] = {}  # of each collection: one more each time its cube was replaced
        self._lock = threading.Lock()
        self._lookups: dict[tuple[str, int | None], Future] = {}  # the lookups under way (:meth:`_once`)

    def get(self, collection: str, as_of: int | None = None) -> CubeVersion:
        """``collection``'s version ``as_of``, or its latest."""
        return self._latest_of(collection) if as_of is None else self._pinned_of(collection, as_of)

    def _latest_of(self, collection: str) -> CubeVersion:
        """The latest version, looked up at most every ``refresh`` seconds, once for the threads asking then."""
        known = self._known(collection)
        return known if known is not None else self._once((collection, None), lambda: self._look_up(collection))

    def _once(self, key: tuple[str, int | None], look_up: Callable[[], CubeVersion]) -> CubeVersion:
        """``look_up()`` run once for the threads asking for ``key`` (a collection and a pinned version, or None for
        its latest) while it runs: they take its answer, or its error (each read the ledger, all at once, when
        ``refresh`` ran out)."""
        with self._lock:
            lookup = self._lookups.get(key)
            mine = lookup is None
            if mine:
                lookup = self._lookups[key] = Future()
        if not mine:
            return lookup.result()
        try:
            version = look_up()
        except BaseException as exc:
            lookup.set_exception(exc)
            raise
        else:
            lookup.set_result(version)
            return version
        finally:
            with self._lock:
                del self._lookups[key]

    def _known(self, collection: str) -> CubeVersion | None:
        """The latest version seen within ``refresh`` seconds, None if a lookup is due; a collection found absent
        within them is a :class:`CubeNotFoundError`."""
        now = timer.monotonic()
        with self._lock:
            seen, absent = self._latest.get(collection), self._absent.get(collection)
        if seen is not None and now - seen[0] < self._refresh:
            return seen[1]
        if seen is None and absent is not None and now - absent[0] < self._refresh:
            raise CubeNotFoundError(absent[1])
        return None

    def _look_up(self, collection: str) -> CubeVersion:
        now = timer.monotonic()
        with self._lock:
            seen = self._latest.get(collection)
        try:
            version = read_version(self._store, collection)
        except CubeNotFoundError as exc:
            if seen is None:  # never served: no such collection here
                with self._lock:
                    self._absent[collection] = (now, str(exc))
                raise
            if key_exists(self._store, record := layout.ledger_key(collection, seen[1].version)):
                raise StoreUnavailableError(
                    f"the store lists no ledger record of the {collection} cube at {store_url(self._store)}, but holds "
                    f"{record}, the version served: its listings lag behind its writes (a replica behind); try again "
                    f"shortly") from None
            raise CubeLostError(f"the {collection} cube at {store_url(self._store)} had version {seen[1].version} "
                                f"and now has none: its ledger is gone from the store (a deleted folder or prefix, "
                                f"an unmounted volume?)") from None
        replaced = seen is not None and self._is_replaced(collection, seen[1], version)
        with self._lock:
            self._latest[collection] = (now, version)
            if replaced:
                self._generation[collection] = self._generation.get(collection, 0) + 1
        if replaced:
            log.warning("the %s cube at %s was replaced: its latest version was %d (committed %s) and is %d "
                        "(committed %s); what was kept of the old one is dropped", collection,
                        store_url(self._store), seen[1].version, seen[1].created, version.version, version.created)
            if self._on_replaced is not None:
                self._on_replaced(collection)
        return version

    def _is_replaced(self, collection: str, old: CubeVersion, new: CubeVersion) -> bool:
        """Whether ``new``, the latest version now, is of another cube than ``old``, the latest seen before: a
        lower number, the same one committed at another time, or a higher one whose record of ``old``'s number
        was committed at another time (a record expired since tells nothing)."""
        if new.version <= old.version:
            return new.version < old.version or new.created != old.created
        try:
            return read_version(self._store, collection, old.version).created != old.created
        except VersionNotFoundError:
            return False

    def forget(self, collection: str) -> None:
        """Look the latest version of ``collection`` up again at the next :meth:`get` (it was expired while
        being read: an ingest and ``cardcube expire`` within ``refresh`` seconds), still comparing it with the
        one seen (a cube replaced meanwhile is noticed)."""
        with self._lock:
            if collection in self._latest:
                self._latest[collection] = (-math.inf, self._latest[collection][1])

    def _pinned_of(self, collection: str, as_of: int) -> CubeVersion:
        """Version ``as_of``: as kept, while checked within ``refresh`` seconds and of the cube seen now; else
        checked (or read) once for the threads asking then."""
        seen = self._pinned.get((collection, as_of))
        if seen is not None and timer.monotonic() - seen[0] < self._refresh and seen[2] == self._generation.get(
                collection, 0):
            return seen[1]
        return self._once((collection, as_of), lambda: self._check_pinned(collection, as_of))

    def _check_pinned(self, collection: str, as_of: int) -> CubeVersion:
        now, key = timer.monotonic(), (collection, as_of)
        seen = self._pinned.get(key)
        if seen is not None and now - seen[0] >= self._refresh:  # due for a check that it was not expired
            self._latest_of(collection)  # nor replaced with the whole cube (a new generation)
            seen = (now, *seen[1:]) if key_exists(self._store, layout.ledger_key(collection, as_of)) else None
        if seen is not None and seen[2] != self._generation.get(collection, 0):  # of a cube replaced since
            seen = None
        if seen is None:
            generation = self._generation.get(collection, 0)  # taken before the read: a replacement during it shows
            seen = (now, read_version(self._store, collection, as_of), generation)  # raises if expired meanwhile
        self._pinned[key] = seen
        return seen[1]
