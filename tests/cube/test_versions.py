"""The versions a long-running reader answers from (:class:`cube.versions.VersionCache`): a pinned one read once, the
latest looked up again every ``refresh``, a cube expired, lost or built again at the same place noticed."""

from __future__ import annotations

import pytest

from cube.ledger import committed_versions, read_version


def test_version_cache_reads_a_pinned_version_once_and_the_latest_every_refresh(tiny_cube, tmp_path):
    """A committed version is read once; the latest is looked up again only after ``refresh`` seconds, and
    then a newly committed version is seen (here a copy of the ledger record as the next version)."""
    import json
    import shutil

    from cardcube.counting_store import CountingStore
    from cardcube.errors import CubeNotFoundError
    from cardcube.storage import open_store
    from cube import layout
    from cube.versions import VersionCache

    root = tmp_path / "cube"
    shutil.copytree(tiny_cube / "s2" / "_ledger", root / "s2" / "_ledger")
    store = CountingStore(open_store(root, read_only=True))
    first = committed_versions(store, "s2")[-1]
    ledger_reads = lambda: sum(k.startswith("s2/_ledger/v") for k in store.counts.keys_read)  # noqa: E731
    cached, fresh = VersionCache(store, refresh=3600), VersionCache(store, refresh=0)
    assert cached.get("s2").version == fresh.get("s2").version == first
    before = ledger_reads()
    assert cached.get("s2").version == first and cached.get("s2", first).version == first
    assert cached.get("s2", first) is cached.get("s2", first)
    assert ledger_reads() == before + 1  # the pinned read; the latest came from the cache
    record = json.loads((root / layout.ledger_key("s2", first)).read_text())
    (root / layout.ledger_key("s2", first + 1)).write_text(json.dumps({**record, "version": first + 1}))
    assert cached.get("s2").version == first  # within refresh: the version it had
    assert fresh.get("s2").version == first + 1  # refresh 0: the new commit at once
    for cache in (cached, fresh):  # a collection the cube lacks: `GET /` listed its ledger on every call
        with pytest.raises(CubeNotFoundError):
            cache.get("s1")
    store.counts.requests.clear()
    with pytest.raises(CubeNotFoundError, match="s1"):
        cached.get("s1")
    assert not store.requests  # within refresh, said from memory
    with pytest.raises(CubeNotFoundError, match="s1"):
        fresh.get("s1")
    assert store.requests["list"] > 0  # refresh 0: looked up again
    (root / "s1" / "_ledger").mkdir(parents=True)
    shutil.copy(root / layout.ledger_key("s2", first), root / layout.ledger_key("s1", first))
    assert fresh.get("s1").version == first  # ingested since: found at the next lookup


def _ledger_of(cube, root):
    """``root`` holding only the S2 ledger of ``cube`` (what a VersionCache reads), replacing what it held."""
    import shutil

    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(cube / "s2" / "_ledger", root / "s2" / "_ledger")


@pytest.mark.parametrize("as_of", [None, 1])
@pytest.mark.parametrize("store_fails", [False, True])
def test_version_cache_looks_up_a_version_once_for_the_threads_asking_at_once(tiny_cube, monkeypatch, store_fails,
                                                                              as_of):
    """The requests that find the latest version due (or a pinned one not read yet) each read the ledger, all at
    once: now one reads it and the others take its answer, or its error, rather than each trying again in turn (the
    service checks each request before its turn to read, the lookup included). Pinned versions until 2026-12-05."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import cube.versions
    from cardcube.errors import StoreError
    from cardcube.storage import open_store
    from cube.versions import VersionCache

    read_version, reads, started = cube.versions.read_version, [], threading.Event()
    waiting = threading.Semaphore(0)  # a release per thread waiting for the lookup under way

    class Waited(cube.versions.Future):
        def result(self, timeout=None):
            waiting.release()
            return super().result(timeout)

    def slow(store, collection, *args, **kwargs):  # a store slow to answer: it answers once the others wait
        reads.append(collection)
        started.set()
        for _ in range(7):  # bounded, so the code before (every thread reading) fails rather than hangs
            waiting.acquire(timeout=10)
        if store_fails:
            raise StoreError("the store does not answer")
        return read_version(store, collection, *args, **kwargs)

    monkeypatch.setattr(cube.versions, "read_version", slow)
    monkeypatch.setattr(cube.versions, "Future", Waited)
    versions = VersionCache(open_store(tiny_cube, read_only=True), refresh=3600)
    with ThreadPoolExecutor(8) as pool:
        first = pool.submit(versions.get, "s2", as_of)
        started.wait(60)  # the first lookup under way: the others ask while it reads
        asked = [first, *(pool.submit(versions.get, "s2", as_of) for _ in range(7))]
        got = [f.exception() if store_fails else f.result() for f in asked]
    assert reads == ["s2"]
    if store_fails:
        assert all(isinstance(e, StoreError) for e in got)
    else:
        assert len({v.version for v in got}) == 1


@pytest.mark.parametrize("first, then", [("appended", "tiny"), ("tiny", "appended")])
def test_version_cache_notices_a_cube_built_again_with_fewer_or_more_versions(appended_cube, tiny_cube, tmp_path,
                                                                              first, then):
    """A cube rebuilt at the same place up to more versions than the service last saw went unnoticed (only a
    number going back, or committed again, was), and so did any after a retry of an expired latest (forget()
    dropped the version seen, the comparison with it, and CubeLost); a pinned version read before it was
    kept. Each now gives the new cube's versions, and says it was replaced once."""
    from cardcube.storage import open_store
    from cube.versions import VersionCache

    cubes, root = {"appended": appended_cube, "tiny": tiny_cube}, tmp_path / "cube"
    _ledger_of(cubes[first], root)
    store = open_store(root, read_only=True)
    replaced = []
    versions = VersionCache(store, refresh=3600, on_replaced=replaced.append)
    old_latest, old_first = versions.get("s2"), versions.get("s2", 1)
    _ledger_of(cubes[then], root)
    versions.forget("s2")  # as the service's retry of an expired latest does
    new_latest = versions.get("s2")
    assert replaced == ["s2"] and new_latest.created != old_latest.created
    assert new_latest == read_version(store, "s2")
    assert versions.get("s2", 1).created == read_version(store, "s2", 1).created != old_first.created
    assert versions.get("s2") is new_latest and replaced == ["s2"]  # said once


def test_version_cache_says_a_cube_lost_also_after_a_retry(tiny_cube, tmp_path):
    import shutil

    from cardcube.errors import CubeLostError
    from cardcube.storage import open_store
    from cube.versions import VersionCache

    root = tmp_path / "cube"
    _ledger_of(tiny_cube, root)
    versions = VersionCache(open_store(root, read_only=True), refresh=3600)
    versions.get("s2")
    shutil.rmtree(root / "s2")
    versions.forget("s2")
    with pytest.raises(CubeLostError, match="had version"):  # was CubeNotFound: an "unknown collection"
        versions.get("s2")


def test_version_cache_stops_serving_a_pinned_version_once_it_is_expired(tiny_cube, tmp_path):
    """``cardcube expire`` deletes a version's record and the data only it read: a pinned version is
    checked again after ``refresh`` seconds, so the service answers 404 instead of reading missing data."""
    import json
    import shutil

    from cardcube.errors import VersionNotFoundError
    from cardcube.storage import open_store
    from cube import layout
    from cube.versions import VersionCache

    root = tmp_path / "cube"
    shutil.copytree(tiny_cube / "s2" / "_ledger", root / "s2" / "_ledger")
    store = open_store(root, read_only=True)
    pinned = committed_versions(store, "s2")[-1]
    checked, unchecked = VersionCache(store, refresh=0), VersionCache(store, refresh=3600)
    assert checked.get("s2", pinned).version == unchecked.get("s2", pinned).version == pinned
    record = json.loads((root / layout.ledger_key("s2", pinned)).read_text())
    (root / layout.ledger_key("s2", pinned + 1)).write_text(json.dumps({**record, "version": pinned + 1}))
    (root / layout.ledger_key("s2", pinned)).unlink()  # superseded, then expired: its record goes first
    assert unchecked.get("s2", pinned).version == pinned  # within refresh: not looked at again (a read of its
    # deleted hot data then raises, see test_a_version_expired_while_being_read_is_an_error_not_fill_values)
    with pytest.raises(VersionNotFoundError, match=f"no version {pinned}"):
        checked.get("s2", pinned)
