"""The cube versions a long-running reader (the REST service) answers from, without reading the ledger per query.

On S3 a lookup of the latest version lists the ledger and reads its newest record: a query should not pay it
each time, yet a new ingest's version must be seen within seconds, and a pinned version that ``cardcube expire``
removed must stop being served.
"""

from __future__ import annotations

import threading
import time as timer
from typing import Any

from cardcube.errors import CubeLostError, CubeNotFoundError
from cardcube.lru import LRUDict
from cardcube.storage import key_exists, store_url
from cube import layout
from cube.ledger import CubeVersion, read_version

REFRESH = 5.0  # seconds between lookups of the latest version of a collection


class VersionCache:
    """The cube versions a long-running reader answers from. A committed version never changes, so a pinned
    one is read once (the 32 most recent kept) and afterwards only checked, at most every ``refresh``
    seconds, to still exist (``cardcube expire`` may have removed it and its data); the latest of a
    collection is looked up again at most every ``refresh`` seconds, after which a new ingest's version
    is seen; a collection once seen that has no version any more is a :class:`CubeLostError` (a 500 from the
    service), not an unknown collection. Safe to share between threads."""

    def __init__(self, store: Any, *, refresh: float = REFRESH, size: int = 32) -> None:
        self._store, self._refresh = store, refresh
        self._latest: dict[str, tuple[float, CubeVersion]] = {}
        self._pinned: LRUDict = LRUDict(size)  # (collection, version) -> (last checked, version)
        self._lock = threading.Lock()

    def get(self, collection: str, as_of: int | None = None) -> CubeVersion:
        """``collection``'s version ``as_of``, or its latest."""
        return self._latest_of(collection) if as_of is None else self._pinned_of(collection, as_of)

    def _latest_of(self, collection: str) -> CubeVersion:
        now = timer.monotonic()
        with self._lock:
            seen = self._latest.get(collection)
        if seen is not None and now - seen[0] < self._refresh:
            return seen[1]
        try:
            version = read_version(self._store, collection)
        except CubeNotFoundError:
            if seen is None:  # never served: no such collection here
                raise
            raise CubeLostError(f"the {collection} cube at {store_url(self._store)} had version {seen[1].version} "
                                f"and now has none: its ledger is gone from the store (a deleted folder or prefix, "
                                f"an unmounted volume?)") from None
        with self._lock:
            self._latest[collection] = (now, version)
        return version

    def _pinned_of(self, collection: str, as_of: int) -> CubeVersion:
        now, key = timer.monotonic(), (collection, as_of)
        seen = self._pinned.get(key)
        if seen is not None and now - seen[0] >= self._refresh:  # due for a check that it was not expired
            seen = (now, seen[1]) if key_exists(self._store, layout.ledger_key(collection, as_of)) else None
        if seen is None:
            seen = (now, read_version(self._store, collection, as_of))  # raises for a version expired meanwhile
        self._pinned[key] = seen
        return seen[1]
