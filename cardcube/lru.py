"""A bounded mapping for the caches of long-running readers (shard indexes, opened arrays, versions)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator, MutableMapping
from typing import Any


class LRUDict(MutableMapping):
    """A dict that forgets its least recently used entries beyond ``size``; safe to share between threads."""

    def __init__(self, size: int) -> None:
        self._size, self._data, self._lock = size, OrderedDict(), threading.Lock()

    def __getitem__(self, key: Any) -> Any:
        with self._lock:
            self._data.move_to_end(key)
            return self._data[key]

    def __setitem__(self, key: Any, value: Any) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self._size:
                self._data.popitem(last=False)

    def __delitem__(self, key: Any) -> None:
        with self._lock:
            del self._data[key]

    def __iter__(self) -> Iterator[Any]:
        with self._lock:
            return iter(list(self._data))

    def __len__(self) -> int:
        return len(self._data)

    def clear(self) -> None:
        """Forget every entry at once (MutableMapping's pops one key at a time, and stops early at a key another
        thread removed meanwhile)."""
        with self._lock:
            self._data.clear()

    def __getstate__(self) -> dict:  # a lock cannot be pickled: a copy (a dask worker's) gets its own
        with self._lock:
            return {"size": self._size, "data": OrderedDict(self._data)}

    def __setstate__(self, state: dict) -> None:
        self._size, self._data, self._lock = state["size"], state["data"], threading.Lock()
