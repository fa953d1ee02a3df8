"""Block manifests: a lost shard is an error where it is read and in `cardcube verify`; an area without data is not."""

from __future__ import annotations

import json
import pickle
import shutil
import subprocess
import sys
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cardcube.cli import main
from cardcube.errors import MissingShardError, VersionNotFoundError
from cardcube.storage import LISTED_LINES, open_store
from catalog.write import write_catalog
from cube import layout
from cube.band_reader import _Window
from cube.dataset import open_cube
from cube.extract import extract
from cube.ledger import read_version
from cube.manifest import BlockManifest, ShardKey, read_manifests
from cube.timeseries import parcel_timeseries
from cube.verify import verify
from ingest.commit import commit
from ingest.expire import expire
from tests.ingest.checks import assert_manifests_match, unlist_shards


@pytest.fixture
def cube(tiny_cube, tmp_path) -> Path:
    return Path(shutil.copytree(tiny_cube, tmp_path / "cube"))


def _shards(cube: Path, band: str, block: int, *, hot: bool = False) -> list[Path]:
    """The shard files of ``band``'s time block (hot slot) ``block`` in the tiny cube's tile."""
    tile = next((cube / "s2").glob("*/cube.zarr")).parent.name
    array = cube / layout.array_path("s2", tile, 10, band, hot=hot)
    return sorted((array / "c" / str(block)).glob("*/*"))


@pytest.mark.parametrize("collection", ["s2", "s1"])
def test_every_block_lists_exactly_the_shards_stored(tiny_cube, collection):
    assert assert_manifests_match(tiny_cube, collection) > 0


def test_a_manifest_round_trips_and_shard_keys_parse():
    m = BlockManifest("31UFU", True, 14, {"B04": {(5, 8): 2**32 - 1, (5, 7): 0}, "SCL": {}})
    assert BlockManifest.from_dict(json.loads(json.dumps(m.to_dict()))) == m
    assert m.stores("B04", 5, 7) and not m.stores("B04", 6, 7) and not m.stores("SCL", 5, 7)
    assert ShardKey.parse("s2/31UFU/cube.zarr/hot/r10m/B04/c/14/5/8") == ShardKey("31UFU", True, "B04", 14, 5, 8)
    assert ShardKey.parse("s2/31UFU/cube.zarr/r20m/B11/c/2/5/8") == ShardKey("31UFU", False, "B11", 2, 5, 8)
    assert ShardKey.parse("s2/31UFU/cube.zarr/r10m/time/c/0") is None  # a coordinate's chunk, no band shard


def test_a_lost_shard_is_an_error_where_it_is_read_not_an_area_without_data(cube, parcels, tmp_path):
    lost = _shards(cube, "B04", 0)
    before = open_cube(cube, decode=False).B04.isel(time=0).compute()
    assert lost and int((before != 0).sum()) > 0
    for shard in lost:
        shard.unlink()  # an object deleted behind cardcube's back

    with pytest.raises(MissingShardError, match=r"stored are missing .*r10m/B04/c/0/.*cardcube verify"):
        open_cube(cube, decode=False).B04.isel(time=0).compute()
    with pytest.raises(MissingShardError):
        parcel_timeseries(cube, parcels.iloc[:5], bands=["B04"])
    with pytest.raises(MissingShardError):
        extract(parcels, cube, tmp_path / "out", bands=["B04"], progress=False)
    assert int((open_cube(cube, decode=False).B08.isel(time=0).compute() != 0).sum()) > 0  # other bands read on

    unlist_shards(cube, lost)  # what a block holds where its scenes had no data: no shard, read as nodata
    after = open_cube(cube, decode=False).B04.isel(time=0).compute()
    assert int((after != 0).sum()) == 0


def test_a_dataset_sent_to_a_worker_finds_a_lost_shard_without_carrying_the_ledger_record(cube):
    """A cluster of processes is sent each window of a Dataset on its own: each carried the whole ledger record
    (for the check of a shard found missing), megabytes on a long ledger. A window's copy holds less than the
    record alone, and still tells a lost shard from an area without data, reading the record where it must."""
    version = read_version(open_store(cube, read_only=True), "s2")
    ds = open_cube(cube, decode=False, bands=["B04"])
    graph = dict(ds.B04.data.__dask_graph__())
    windows = [w for w in (getattr(v, "value", v) for v in graph.values()) if isinstance(w, _Window)]
    assert windows and all(len(pickle.dumps(w)) < len(pickle.dumps(version)) for w in windows)
    copy = pickle.loads(pickle.dumps(ds))
    for shard in _shards(cube, "B04", 0):
        shard.unlink()
    with pytest.raises(MissingShardError, match=r"stored are missing .*r10m/B04/c/0/"):
        copy.B04.isel(time=0).compute(scheduler="threads")
    record = cube / layout.ledger_key("s2", version.version)  # the cube made anew at its place since it was opened
    doc = json.loads(record.read_text())
    record.write_text(json.dumps({**doc, "created": "2030-01-01T00:00:00+00:00"}))
    with pytest.raises(VersionNotFoundError, match="the cube was made anew since it was opened"):
        pickle.loads(pickle.dumps(ds)).B04.isel(time=0).compute(scheduler="threads")


def _written_before_manifests(cube: Path) -> None:
    """``cube`` as cardcube wrote it before block manifests: no manifest, and no ledger record saying since when."""
    shutil.rmtree(next((cube / "s2").glob("*/_manifest")))
    for record in (cube / "s2" / "_ledger").glob("v*.json"):
        doc = json.loads(record.read_text())
        assert doc.pop("manifests_since") == 1
        record.write_text(json.dumps(doc))


def test_a_cube_written_before_manifests_reads_a_missing_shard_as_no_data(cube):
    _written_before_manifests(cube)
    for shard in _shards(cube, "B04", 1):
        shard.unlink()
    ds = open_cube(cube, decode=False).B04
    assert int((ds.isel(time=slice(4, 8)).compute() != 0).sum()) == 0
    assert int((ds.isel(time=slice(0, 4)).compute() != 0).sum()) > 0
    result = verify(cube, progress=False)
    assert result.ok and result.shards == 0 and result.blocks == 0 and result.unlisted > 0


def test_a_lost_manifest_is_found_when_a_block_of_the_same_ingest_has_its_own(cube):
    """A partial restore lost the manifest of a block and a shard of it: verify said "sound" (the block taken
    for one written before manifests) and the read gave nodata. A block written by the ingest that wrote one
    with a manifest (here, the cube's only one) must have had its own: verify reports it lost."""
    manifests = sorted((cube / "s2").glob("*/_manifest/*.json"))
    first = next(p for p in manifests if p.name.startswith("cold-"))
    assert len(manifests) > 1  # later blocks (hot slots, or cold) keep theirs
    first.unlink()
    result = verify(cube, progress=False)
    assert not result.ok and result.unlisted == 0
    assert [(k, p.split(":")[0]) for k, p in result.problems] == [
        (first.relative_to(cube).as_posix(), "manifest missing while the block was written with one")]


def test_a_shard_and_its_manifest_missing_for_a_moment_are_lost_data_not_an_area_without_data(cube, parcels):
    """A store answering 404 for a moment (a lagging replica, a gateway routed to the wrong zone): the shard and its
    block's manifest both missing, the block was taken for one written before manifests, and the parcels read
    as having no pixel with data, an answer a client then kept. The ledger says since which version the cube's
    ingests write manifests: such a block must have one. The store right again, the same reader reads it (the
    missing manifest was not kept)."""
    from cube.tile_arrays import ArrayCache

    some = parcels.iloc[:5]
    cache = ArrayCache(16)
    want = parcel_timeseries(cube, some, bands=["B04"], cache=cache)
    shards = _shards(cube, "B04", 0)
    manifest = cube / layout.manifest_key("s2", ShardKey.parse(shards[0].relative_to(cube).as_posix()).tile, 0)
    away = cube.parent / "away"
    away.mkdir()
    gone = [*shards, manifest]
    for i, path in enumerate(gone):
        path.rename(away / str(i))
    with pytest.raises(MissingShardError, match="stored are missing"):
        parcel_timeseries(cube, some, bands=["B04"], cache=cache)
    for i, path in enumerate(gone):
        (away / str(i)).rename(path)
    got = parcel_timeseries(cube, some, bands=["B04"], cache=cache)
    pd.testing.assert_frame_equal(got, want)


def test_a_missing_shard_of_a_cube_written_before_manifests_is_no_data_until_ingests_write_them(cube):
    """The first ingest after an upgrade says in its record that its blocks have manifests (the older ones keep
    reading as before)."""
    from cube.manifest import has_manifest

    _written_before_manifests(cube)
    version = read_version(open_store(cube, read_only=True), "s2")
    assert version.manifests_since == 0 and not has_manifest(version, "31UFU", False, 0)
    assert version.next(tiles=version.tiles, scenes=version.scenes, added=(), rejected=()).manifests_since == (
        version.version + 1)


def _first_read_by(cube: Path) -> dict[int, list[tuple[str, bool, int]]]:
    """The time blocks (tile, hot, block) each version of ``cube``'s S2 history read first: those it wrote."""
    from cube.ledger import committed_versions
    from cube.manifest import tile_blocks

    store, seen, by = open_store(cube, read_only=True), set(), {}
    for n in committed_versions(store, "s2"):
        v = read_version(store, "s2", n)
        by[n] = [b for t, state in v.tiles.items() for b in tile_blocks(t, state, v.spec.chunks.time) if b not in seen]
        seen.update(by[n])
    return by


@pytest.fixture
def history(appended_cube, tmp_path) -> Path:
    return Path(shutil.copytree(appended_cube, tmp_path / "history"))


def test_the_newest_blocks_lost_manifest_is_found(history):
    """The newest block's manifest and a shard of it lost: verify said "sound" (only blocks older than one with a
    manifest were judged) and the read gave nodata. A block written after one with a manifest must have its own;
    blocks written before any (a cube begun by a cardcube without manifests) are counted, not reported."""
    by = _first_read_by(history)
    newest = by[max(by)][-1]
    key = layout.manifest_key("s2", newest[0], newest[2], hot=newest[1])
    (history / key).unlink()
    result = verify(history, progress=False)
    assert [(k, p.split(":")[0]) for k, p in result.problems] == [
        (key, "manifest missing while the block was written with one")]



def test_blocks_written_before_any_with_a_manifest_are_counted_not_reported(history):
    """A cube begun by a cardcube without manifests: its first version's blocks (a cold block and hot slots, the
    hot ones numbered below later cold blocks) have none. They were taken for lost (ordered cold, then hot)."""
    by = _first_read_by(history)
    assert {hot for _, hot, _ in by[1]} == {False, True} and all(by[n] for n in sorted(by)[1:3])
    for tile, hot, block in by[1]:
        (history / layout.manifest_key("s2", tile, block, hot=hot)).unlink()
    for record in (history / "s2" / "_ledger").glob("v*.json"):  # and the ledger says so: since version 2
        record.write_text(json.dumps({**json.loads(record.read_text()), "manifests_since": 2}))
    result = verify(history, progress=False)
    assert result.ok and result.unlisted == len(by[1]) and result.shards > 0
    later = history / layout.manifest_key("s2", by[3][0][0], by[3][0][2], hot=by[3][0][1])
    kept = later.read_bytes()
    later.unlink()  # written after version 2's blocks, which have theirs: lost
    assert [k for k, _ in verify(history, progress=False).problems] == [later.relative_to(history).as_posix()]
    later.write_bytes(kept)

    expire(history, older_than=timedelta(0))  # version 9 alone: its blocks' dates tell when they were written
    result = verify(history, progress=False)
    assert result.ok and result.versions == (9,) and 0 < result.unlisted <= len(by[1])
    newest = history / layout.manifest_key("s2", by[9][-1][0], by[9][-1][2], hot=by[9][-1][1])
    newest.unlink()
    assert [k for k, _ in verify(history, progress=False).problems] == [newest.relative_to(history).as_posix()]


def test_a_lost_or_damaged_ledger_record_is_reported_and_named_when_asked_for(history):
    """A ledger record lost between kept versions: verify said "sound", and asking for it said "never committed"
    (versions have no gaps). A damaged one (a field missing) raised a KeyError."""
    (history / layout.ledger_key("s2", 4)).unlink()
    record = history / layout.ledger_key("s2", 6)
    record.write_text(json.dumps({k: v for k, v in json.loads(record.read_text()).items() if k != "tiles"}))
    result = verify(history, progress=False)
    assert [(k, p.split(":")[0]) for k, p in result.problems] == [
        (layout.ledger_key("s2", 4), "ledger record missing between kept versions (versions are numbered without "
                                     "gaps, and expire deletes the oldest only)"),
        (layout.ledger_key("s2", 6), "damaged")]
    assert "KeyError: 'tiles'" in result.problems[1][1] and result.shards > 0 and result.versions[-1] == 9
    from cardcube.errors import CorruptDocumentError, VersionNotFoundError

    with pytest.raises(VersionNotFoundError, match="has no version 4: its ledger record is missing between kept "
                                                   "versions: lost"):
        open_cube(history, as_of=4)
    with pytest.raises(CorruptDocumentError, match=r"v00000006.json in .* is damaged \(KeyError: 'tiles'\)"):
        open_cube(history, as_of=6)


def test_a_lost_manifest_is_found_from_the_ledger_when_no_block_has_one_left(history):
    """The ledger says since which version blocks have manifests: verify judged a missing one only against blocks
    that still had theirs, so a manifest lost with its shard after an expire (the oldest kept block), or a tile's
    manifests lost together, or the whole tile, were "sound" while every read of them failed."""
    expire(history, older_than=timedelta(0))
    tile = next((history / "s2").glob("*/_manifest")).parent
    oldest = tile / "_manifest" / "cold-000000.json"
    oldest.unlink()
    assert [k for k, _ in verify(history, progress=False).problems] == [oldest.relative_to(history).as_posix()]
    shutil.rmtree(tile / "_manifest")
    lost = verify(history, progress=False)
    assert len(lost.problems) == len(_first_read_by(history)[9]) and lost.unlisted == 0
    assert all(p.startswith("manifest missing while the block was written with one") for _, p in lost.problems)
    shutil.rmtree(tile)  # every array, shard and manifest of the tile
    gone = verify(history, progress=False)
    assert any(k.endswith("/B04/zarr.json") and "none of its shards can be read" in p for k, p in gone.problems)
    assert not gone.ok


def test_a_damaged_manifest_is_listed_and_the_other_blocks_checked(history):
    """It stopped verify with one error line: nothing else was checked."""
    key = next((history / "s2").glob("*/_manifest/cold-000000.json"))
    key.write_text(key.read_text()[:40])
    result = verify(history, progress=False)
    assert [k for k, _ in result.problems] == [key.relative_to(history).as_posix()]
    assert result.problems[0][1].startswith("damaged:") and result.shards > 0 and result.unlisted == 0


def test_an_array_whose_fill_value_changed_is_blamed_not_its_shards(cube):
    """A bit flipped in a zarr.json's fill value: verify --deep blamed each sound shard of the array."""
    meta = next((cube / "s2").glob("*/cube.zarr/r10m/B04/zarr.json"))
    meta.write_text(meta.read_text().replace('"fill_value": 0', '"fill_value": 1'))
    result = verify(cube, deep=True, progress=False)
    assert result.problems == ((meta.relative_to(cube).as_posix(), "damaged: its fill value is 1, the band's nodata "
                                "0; its shards cannot be checked"),)


def test_a_lost_newest_ledger_record_is_found_and_its_data_kept(history, tiny_region, capsys):
    """The newest record lost (a partial restore): readers read the one before without a word, verify said
    "sound", and the next expire or ingest took that version's blocks for a crashed run's leftovers."""
    from cardcube.cli import main
    from cardcube.errors import CorruptDocumentError
    from ingest.job import ingest

    (history / layout.ledger_key("s2", 9)).unlink()
    before = sorted(p for p in (history / "s2").rglob("*") if p.is_file() and "_lock" not in p.name)
    result = verify(history, progress=False)
    assert [k for k, _ in result.problems] == [layout.ledger_key("s2", 9)]
    assert "publishes version 9, and the newest record is version 8" in result.problems[0][1]
    with pytest.raises(CorruptDocumentError, match=r"newest record is version 8.*nothing expired"):
        expire(history, older_than=timedelta(days=7))
    with pytest.raises(CorruptDocumentError, match=r"newest record is version 8.*this ingest commits nothing"):
        ingest(tiny_region.items, history, progress=False)
    assert sorted(p for p in (history / "s2").rglob("*") if p.is_file() and "_lock" not in p.name) == before
    (history / "s2" / "collection.json").unlink()  # the loss accepted: the catalog rebuilt from the records
    assert main(["catalog", "build", "--cube", str(history)]) == 0
    capsys.readouterr()
    assert verify(history, progress=False).ok and expire(history, older_than=timedelta(days=7)).deleted


def test_verify_running_while_expire_runs_reports_no_expired_slot(history, monkeypatch):
    """verify takes no lock: an expire running meanwhile deletes the hot slots of the versions it expires, which
    verify reported missing (a sound cube, exit 1)."""
    import cube.verify

    real = cube.verify.read_manifests

    def then_expire(*args, **kwargs):  # an expire run between verify's reading the ledger and the shards
        out = real(*args, **kwargs)
        assert expire(history, older_than=timedelta(0)).deleted
        return out

    monkeypatch.setattr(cube.verify, "read_manifests", then_expire)
    result = verify(history, progress=False)
    assert result.ok and result.versions[0] == 1
    monkeypatch.setattr(cube.verify, "read_manifests", real)
    next((history / "s2").glob("*/cube.zarr/r10m/B04/c/0/*/*")).unlink()  # a block version 9 reads: still found
    monkeypatch.setattr(cube.verify, "read_manifests", then_expire)
    assert [p for _, p in verify(history, progress=False).problems] == ["missing"]


def test_verify_lists_an_array_without_its_metadata_and_checks_the_others(cube):
    """An array's zarr.json lost: verify stopped with zarr's ArrayNotFoundError, the damage unlisted."""
    tile = next((cube / "s2").glob("*/cube.zarr")).parent.name
    meta = layout.array_path("s2", tile, 10, "B04") + "/zarr.json"
    (cube / meta).unlink()
    result = verify(cube, progress=False)
    assert [k for k, _ in result.problems] == [meta] and "none of its shards can be read" in result.problems[0][1]
    assert result.shards > 0 and not any("/B04/" in k for k, _ in result.problems[1:])


def test_a_read_of_an_array_without_its_metadata_names_it_and_verify(cube, parcels):
    """It was zarr's own ArrayNotFoundError, a 500 "Internal" in the service."""
    from cardcube.errors import CorruptDocumentError

    tile = next((cube / "s2").glob("*/cube.zarr")).parent.name
    meta = layout.array_path("s2", tile, 10, "B04") + "/zarr.json"
    (cube / meta).unlink()
    with pytest.raises(CorruptDocumentError, match=rf"is missing .*{layout.array_path('s2', tile, 10, 'B04')}.*verify"):
        parcel_timeseries(cube, parcels.iloc[:3], bands=["B04"])


def test_a_missing_shard_read_on_several_threads_at_once_is_looked_up_once(tiny_cube):
    """The chunks of one missing hot shard are read by several dask threads at once: with a reader's ``absent``
    cache, they make one lookup of the version's record and one of the manifest between them, not one each."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from cardcube.counting_store import CountingStore
    from cube.manifest import AbsentShards, confirm_absent

    class SlowLookups(CountingStore):
        async def exists(self, key: str) -> bool:
            await asyncio.sleep(0.2)  # an S3 HEAD's round trip: long enough for every thread to ask meanwhile
            return await super().exists(key)

    store = SlowLookups(open_store(tiny_cube, read_only=True))
    version, absent = read_version(store, "s2"), AbsentShards(16)
    tile = next(iter(version.tiles))
    key = f"{layout.array_path('s2', tile, 10, 'B04', hot=True)}/c/0/0/0"  # far from the region: no data there
    store.reset()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: confirm_absent(store, version, [key], absent=absent), range(4)))
    assert store.requests["exists"] == 1 and store.requests["get"] == 1
    assert list(absent) == [("s2", version.version, key)]


def test_a_query_reads_a_blocks_manifest_once_for_all_its_missing_shards(cube):
    """Shards missing where no scene had data, across several dask tasks of one query (a chunk each): the block's
    manifest is read once for all, not once a task."""
    from cardcube.counting_store import CountingStore

    gone = _shards(cube, "B04", 1)
    for shard in gone:
        shard.unlink()
    unlist_shards(cube, gone)
    store = CountingStore(open_store(cube, read_only=True))
    lazy = open_cube(store, decode=False, bands="B04")
    assert lazy.B04.data.npartitions > 2 * len(gone)  # each shard is several tasks' chunks
    store.reset()
    values = lazy.B04.isel(time=slice(4, 8)).compute()
    assert int((values != 0).sum()) == 0
    manifest_gets = [k for k in store.keys_read if f"/{layout.MANIFEST_DIR}/" in k]
    assert manifest_gets == [layout.manifest_key("s2", ShardKey.parse(gone[0].relative_to(cube).as_posix()).tile, 1)]


def test_a_cube_written_before_manifests_asks_for_a_blocks_missing_manifest_once(cube):
    """Its blocks have none: the missing manifest was asked for again for every shard found missing (a 404 round
    trip each on S3)."""
    from cardcube.counting_store import CountingStore

    _written_before_manifests(cube)
    gone = [shard for band in ("B04", "B08", "B03") for shard in _shards(cube, band, 1)]
    for shard in gone:
        shard.unlink()
    store = CountingStore(open_store(cube, read_only=True))
    lazy = open_cube(store, decode=False, bands=["B04", "B08", "B03"])
    store.reset()
    values = lazy.isel(time=slice(4, 8)).compute()
    assert len(gone) > 3 and all(int((values[b] != 0).sum()) == 0 for b in ("B04", "B08", "B03"))
    assert len([k for k in store.keys_read if f"/{layout.MANIFEST_DIR}/" in k]) == 1


def test_a_query_over_more_blocks_than_the_manifests_kept_reads_them_all(cube):
    """A block known before the call and forgotten by the call's own additions (a bounded cache) was looked up in
    what the call had fetched: KeyError, a 500 in the service."""
    from cardcube.lru import LRUDict
    from cube.manifest import missing_shards

    _written_before_manifests(cube)
    store = open_store(cube, read_only=True)
    version, known = read_version(store, "s2"), LRUDict(2)
    keys = [_shards(cube, "B04", block)[0].relative_to(cube).as_posix() for block in (0, 1, 2)]
    assert missing_shards(store, version, keys[:1], known=known) == []
    assert missing_shards(store, version, keys, known=known) == []


def _damage(cube: Path) -> dict[str, str]:
    """Lose one shard, cut another short, and flip bytes inside a chunk of a third (its index intact): the keys,
    by what a deep check says of each. (The third chunk's blosc decodes into other values; its crc32c, which ingest
    writes after each chunk since 2026-12-07, fails: before, only the values' crc32 recorded by ingest told.)"""
    lost, short, flipped = _shards(cube, "B04", 1)[0], _shards(cube, "B08", 0)[0], _shards(cube, "B03", 0)[0]
    lost.unlink()
    short.write_bytes(short.read_bytes()[:1000])
    data = bytearray(flipped.read_bytes())
    data[40:240] = bytes(200)  # inside the first chunk: blosc's header and the start of its stream
    flipped.write_bytes(bytes(data))
    return {p.relative_to(cube).as_posix(): what for p, what in
            ((lost, "missing"), (short, "checksum"), (flipped, "does not decode (Stored and computed"))}


def test_verify_finds_lost_truncated_and_corrupt_shards(cube):
    sound = verify(cube, progress=False)
    store = open_store(cube, read_only=True)
    version = read_version(store, "s2")
    tile = next(iter(version.tiles))
    blocks = [(tile, False, b) for b in range(len(version.tiles[tile].cold) // version.spec.chunks.time)]
    blocks += [(tile, True, h.slot) for h in version.tiles[tile].hot]
    listed = sum(len(c) for m in read_manifests(store, "s2", blocks).values() for c in m.shards.values())
    assert sound.ok and sound.shards == listed > 0 and sound.blocks == len(blocks) and sound.unlisted == 0

    damaged = _damage(cube)
    quick, deep = verify(cube, progress=False), verify(cube, deep=True, progress=False)

    by_key = dict(deep.problems)
    assert set(by_key) == set(damaged) and not deep.ok
    for key, what in damaged.items():
        assert what in by_key[key], (key, by_key[key])
    flipped = next(k for k, w in damaged.items() if w.startswith("does not decode"))
    assert {k for k, _ in quick.problems} == set(damaged) - {flipped}  # the index alone cannot tell that one


def test_a_chunk_blosc_decodes_into_other_values_is_a_read_error_not_numbers(cube):
    """Bytes of a chunk changed (a disk's or a copy's fault) that blosc still decodes, into other values: reads served
    them as the parcel's numbers. Every chunk ingest writes ends with its crc32c: the reads fail, naming the shard."""
    from cardcube.errors import CorruptShardError

    shard = _shards(cube, "B03", 0)[0]
    meta = json.loads((shard.parents[3] / "zarr.json").read_text())
    assert [c["name"] for c in meta["codecs"][0]["configuration"]["codecs"]] == ["bytes", "blosc", "crc32c"]
    key = _damage(cube)
    assert shard.relative_to(cube).as_posix() in key
    block = slice(0, 16)  # the tiny cube's first time block, whole
    with pytest.raises(CorruptShardError, match=f"{shard.relative_to(cube).as_posix()}: its chunk .* does not decode"):
        open_cube(cube, bands=["B03"]).B03.isel(time=block).load()
    assert open_cube(cube, bands=["B02"]).B02.isel(time=block).load().notnull().any()  # a sound band reads


def test_the_verify_command_lists_the_damage_and_exits_with_1(cube):
    command = [sys.executable, "-m", "cardcube.cli", "verify", "--cube", str(cube), "--quiet"]
    ok = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0 and ": sound" in ok.stdout, ok.stderr
    damaged = _damage(cube)
    bad = subprocess.run([*command, "--deep", "--json"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1, bad.stderr
    doc = json.loads(bad.stdout)
    assert not doc["ok"] and {p["key"] for p in doc["problems"]} == set(damaged)
    none = subprocess.run([*command[:-3], "--cube", str(cube.parent / "nothing"), "--quiet"], capture_output=True,
                          text=True, timeout=300)
    assert none.returncode == 2 and "error: no cube at" in none.stderr and "Traceback" not in none.stderr


def test_the_verify_command_names_the_first_problems_and_counts_the_others(cube, capsys):
    """A lost prefix (a lifecycle rule, a partial restore of a large cube) is thousands of missing shards: the command
    names the first ones and counts the others, which --json names each (a line each flooded the terminal)."""
    lost = sorted(p for p in (cube / "s2").rglob("c/*/*/*") if p.is_file())
    assert len(lost) > LISTED_LINES + 1
    for shard in lost:
        shard.unlink()
    assert main(["verify", "--cube", str(cube), "--quiet"]) == 1
    out = capsys.readouterr().out
    named = [line for line in out.splitlines() if line.endswith(": missing")]
    assert len(named) == LISTED_LINES and f"{len(lost)} damaged" in out
    assert f"  ... and {len(lost) - LISTED_LINES} more (the same command with --json names each)" in out
    assert "cardcube ingest --repair" in out  # the advice, said once after the list
    assert main(["verify", "--cube", str(cube), "--quiet", "--json"]) == 1
    keys = {p["key"] for p in json.loads(capsys.readouterr().out)["problems"]}
    assert keys == {shard.relative_to(cube).as_posix() for shard in lost}


def test_verify_reads_a_cube_on_s3(tiny_region, s3_bucket):
    from cardcube.spec import ChunkLayout
    from ingest.job import ingest

    url, opts = s3_bucket.url_for("cube"), s3_bucket.storage_options()
    ingest(tiny_region.items, url, collection="s1", chunks=ChunkLayout.parse("time=4,space=64,shard_space=256"),
           storage_options=opts, progress=False)
    sound = verify(url, "s1", deep=True, storage_options=opts, progress=False)
    assert sound.ok and sound.shards > 0
    client = s3_bucket.server.client()
    keys = [k["Key"] for k in client.list_objects_v2(Bucket=s3_bucket.name, Prefix="cube/s1/")["Contents"]
            if "/cube.zarr/r10m/VH/c/" in k["Key"]]
    client.delete_object(Bucket=s3_bucket.name, Key=keys[0])
    found = verify(url, "s1", storage_options=opts, progress=False)
    assert found.problems == ((keys[0].removeprefix("cube/"), "missing"),)
    with pytest.raises(MissingShardError):
        open_cube(url, "s1", decode=False, storage_options=opts).VH.compute()
    assert np.isfinite(open_cube(url, "s1", storage_options=opts).VV.compute()).any()


def test_the_service_answers_a_lost_shard_with_a_500_that_names_it(cube, tiny_region, parcels):
    from cardcube.testing.served import ServedCommand

    lost = _shards(cube, "B04", 0)
    for shard in lost:
        shard.unlink()
    server = ServedCommand(["serve", "--cube", cube, "--parcels", tiny_region.parcels])
    try:
        parcel = parcels.parcel_id.iloc[0]
        r = server.http.get(f"/collections/s2/parcels/{parcel}/timeseries", params={"bands": "B04"})
        assert r.status_code == 500, r.text
        assert "stored are missing" in r.json()["detail"] and "cardcube verify" in r.json()["detail"]
        ok = server.http.get(f"/collections/s2/parcels/{parcel}/timeseries", params={"bands": "B08"})
        assert ok.status_code == 200 and ok.json()["rows"]  # the other bands are whole
    finally:
        server.close()


def test_a_lost_or_damaged_details_object_of_the_ledger_is_reported(history):
    """The scenes' band files and checksums are kept in details objects the records name (cube.scene_details): a
    query never reads them, so one lost would go unnoticed until the next ingest needed it. Verify reads them."""
    names = sorted((history / "s2" / "_ledger").glob("scenes-*.json"))
    assert len(names) == 9 and verify(history, progress=False).ok  # each version added scenes
    names[0].unlink()
    names[-1].write_text(names[-1].read_text().replace("sha256:", "sha256:0"))
    problems = verify(history, progress=False).problems
    assert [(k, p.split(":")[0]) for k, p in problems] == [(layout.details_key("s2", names[0].name), "missing"),
                                                           (layout.details_key("s2", names[-1].name), "damaged")]


def test_verify_running_while_expire_runs_reports_no_details_object_it_deleted(history, monkeypatch):
    """verify takes no lock: an expire running meanwhile deletes the details objects only the versions it expires
    named (here the newest scenes' first details, their band files moved since), which verify reported missing: "the
    band files and checksums ... are lost (restore it from a backup)" of a sound cube, exit 1. One lost that a kept
    version names is still reported."""
    import cube.verify

    store = open_store(history).with_read_only(False)
    head = read_version(store, "s2")
    first = max(r.checksums.name for r in head.scenes.values())  # the details object of version 9's scenes
    moved = {sid: replace(r, sources={band: f"/moved/{band}.tif" for band in r.sources})
             for sid, r in head.scenes.items() if r.checksums.name == first}
    commit(store, head.next(tiles=dict(head.tiles), scenes={**head.scenes, **moved}, added=(), rejected=head.rejected))
    write_catalog(store, read_version(store, "s2"))
    assert verify(history, progress=False).ok
    real = cube.verify.read_manifests

    def then_expire(*args, **kwargs):  # an expire run between verify's reading the ledger and the details objects
        out = real(*args, **kwargs)
        assert expire(history, older_than=timedelta(0)).details == 1
        return out

    monkeypatch.setattr(cube.verify, "read_manifests", then_expire)
    lost = sorted((history / "s2" / "_ledger").glob("scenes-*.json"))[0]  # one version 10 names
    lost.unlink()
    result = verify(history, progress=False)
    assert result.versions[0] == 1 and not (history / layout.details_key("s2", first)).exists()
    assert [(k, p.split(":")[0]) for k, p in result.problems] == [(layout.details_key("s2", lost.name), "missing")]
