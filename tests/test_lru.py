"""The bounded mapping behind the readers' caches."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from cardcube.lru import LRUDict


def test_the_least_recently_used_entries_go_first():
    cache = LRUDict(3)
    for k in "abc":
        cache[k] = k.upper()
    assert cache["a"] == "A"  # a is now the most recent
    cache["d"] = "D"
    assert list(cache) == ["c", "a", "d"] and "b" not in cache and cache.get("b") is None
    del cache["c"]
    assert len(cache) == 2


def test_threads_sharing_it_keep_it_bounded_and_consistent():
    cache = LRUDict(64)

    def work(t: int) -> None:
        for i in range(2000):
            cache[(t, i % 100)] = i
            cache.get((t, (i * 7) % 100))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(work, range(8)))
    assert len(cache) == 64 and len(list(cache)) == 64


def test_a_pickled_copy_keeps_its_entries_and_gets_its_own_lock():
    """A dask worker process gets the readers' caches with the tasks: a lock cannot be pickled."""
    import pickle

    cache = LRUDict(2)
    cache["a"], cache["b"] = 1, 2
    copy = pickle.loads(pickle.dumps(cache))
    copy["c"] = 3
    assert list(copy) == ["b", "c"] and list(cache) == ["a", "b"]


def _write_until(cache: LRUDict, writing, stop) -> None:
    j = 0
    writing.set()
    while not stop.is_set():
        cache[("new", j)] = j
        j += 1


def test_clear_forgets_every_entry_while_other_threads_write():
    """MutableMapping.clear() popped one key at a time and gave up at the first KeyError, which a thread's insert
    raised by evicting the key just picked: entries of a replaced cube survived ArrayCache.clear()."""
    import sys
    import threading

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # interleave the threads often
    try:
        for _ in range(10):
            cache = LRUDict(2000)
            for i in range(2000):
                cache[("old", i)] = i
            stop, writing = threading.Event(), threading.Event()
            writer = threading.Thread(target=_write_until, args=(cache, writing, stop))
            writer.start()
            writing.wait()
            cache.clear()
            stop.set()
            writer.join()
            assert not [k for k in list(cache) if k[0] == "old"]
    finally:
        sys.setswitchinterval(interval)
