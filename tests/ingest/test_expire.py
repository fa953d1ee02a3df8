"""Expiring old versions: what goes, what must stay bit for bit, crashes, the lock, S3."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import xarray as xr

from cardcube.errors import (
    CorruptDocumentError,
    CubeLockedError,
    CubeNotFoundError,
    InvalidRequestError,
    MissingShardError,
    VersionNotFoundError,
)
from cardcube.option_types import parse_age
from cardcube.spec import ChunkLayout
from cardcube.storage import open_store
from catalog.build import parse_time
from cube import layout
from cube.dataset import open_cube
from cube.ledger import Acquisition, CubeVersion, committed_versions, read_version
from cube.verify import verify
from ingest.commit import writer_lock
from ingest.expire import expire, expired_versions
from ingest.job import ingest
from tests.in_process import run_here
from tests.ingest.checks import assert_manifests_match, assert_matches_sources, unlist_shards
from tests.ingest.crashing import run_ingest, run_ingest_here
from tests.ingest.scene_edits import items_of, write_items

CHUNKS = ChunkLayout(time=4, space=64, shard_space=256)
EVERYTHING = timedelta(0)


@pytest.fixture
def cube(appended_cube, tmp_path) -> Path:
    shutil.copytree(appended_cube, tmp_path / "cube")
    return tmp_path / "cube"


def _read(cube: Path, as_of: int | None = None) -> xr.Dataset:
    """The whole cube as stored, read at once (chunks="window": one Zarr call per array, not a dask task per chunk)."""
    return open_cube(cube, decode=False, as_of=as_of, chunks="window").compute().drop_attrs()


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _hot_on_disk(cube: Path) -> set[int]:
    """Hot-buffer dates present on disk in any band array of the tile."""
    hot = next((cube / "s2").glob("*/cube.zarr/hot"))
    return {int(p.name) for band in hot.glob("r*m/B*") for p in (band / "c").glob("*")}


def test_expiring_everything_old_keeps_the_latest_bit_for_bit_and_frees_the_hot_copies(cube, tiny_region):
    store = open_store(cube)
    head = read_version(store, "s2")
    before, size = _read(cube), _size(cube)
    older = committed_versions(store, "s2")[:-1]
    live = {s.slot for s in head.tiles[next(iter(head.tiles))].hot}
    assert len(older) == 8 and _hot_on_disk(cube) > live  # compacted dates still have their hot copy

    result = expire(cube, older_than=EVERYTHING)

    assert result.expired == tuple(older) and result.kept == (head.version,)
    assert committed_versions(store, "s2") == [head.version]
    xr.testing.assert_identical(_read(cube), before)
    assert assert_matches_sources(cube, tiny_region.items, "s2", sample=6) > 0
    assert _hot_on_disk(cube) == live  # only the dates the latest version lists in the hot buffer
    assert assert_manifests_match(cube, "s2") > 0
    manifests = {p.name for p in next((cube / "s2").glob(f"*/{layout.MANIFEST_DIR}")).glob("hot-*")}
    assert manifests == {f"hot-{slot:06d}.json" for slot in live}  # the deleted dates' went with them
    assert sum(result.deleted.values()) > 0 and _size(cube) < 0.8 * size
    with pytest.raises(VersionNotFoundError, match="has no version 1"):
        open_cube(cube, as_of=1)
    again = expire(cube, older_than=EVERYTHING)  # idempotent
    assert again.expired == () and sum(again.deleted.values()) == 0


def test_versions_superseded_recently_stay_readable_as_they_were(cube):
    versions = [read_version(open_store(cube), "s2", n) for n in committed_versions(open_store(cube), "s2")]
    keep_from = versions[-3]  # expire what its predecessor's successor (keep_from itself) superseded long enough
    created = parse_time(keep_from.created)
    as_they_were = {v.version: _read(cube, v.version) for v in versions[-3:]}

    result = expire(cube, older_than=timedelta(hours=1), now=created + timedelta(hours=1))

    assert result.kept == tuple(v.version for v in versions[-3:])
    assert result.expired == tuple(v.version for v in versions[:-3])
    for number, ds in as_they_were.items():
        xr.testing.assert_identical(_read(cube, number), ds)


def _doomed(cube: Path) -> tuple[CubeVersion, dict[int, Acquisition]]:
    """A superseded version with hot-buffer slots the latest does not list (expire deletes them), and those
    slots' acquisitions."""
    store = open_store(cube)
    head = read_version(store, "s2")
    tile = next(iter(head.tiles))
    live = {s.slot for s in head.tiles[tile].hot}
    for n in committed_versions(store, "s2")[:-1]:
        old = read_version(store, "s2", n)
        gone = {s.slot: s.acquisition for s in old.tiles[tile].hot if s.slot not in live}
        if gone:
            return old, gone
    raise AssertionError("no version has hot slots that expire deletes")


def test_a_version_expired_while_being_read_is_an_error_not_fill_values(cube):
    """A reader holding a version that expire then deletes (a pinned ``as_of``, a lazy Dataset) finds its
    hot-buffer shards gone: the read raises, rather than return fill (no data) for real observations. A
    hot shard missing while the version is still committed is an area with no data, read as fill."""
    old, gone = _doomed(cube)
    lazy = open_cube(cube, decode=False, as_of=old.version)  # ledger read, arrays opened, no data read yet
    hot = lazy.time[np.isin(lazy.scene_id, [a.scene_id for a in gone.values()])]  # the dates expire will delete
    before = lazy.sel(time=hot).B04.compute()
    assert before.size and (before != 0).any()

    band = next((cube / "s2").glob("*/cube.zarr/hot/r10m/B04"))
    shard = next(p for p in (band / "c").glob("*/*/*") if int(p.parent.parent.name) in gone)
    shard.unlink()  # a shard of a date the version lists, which its block's manifest lists: lost
    with pytest.raises(MissingShardError, match="stored are missing"):
        open_cube(cube, decode=False, as_of=old.version).sel(time=hot).B04.compute()
    unlist_shards(cube, [shard])  # as for an area with no data: read as fill
    after = lazy.sel(time=hot).B04.compute()
    assert 0 < int((after != 0).sum()) < int((before != 0).sum())

    expire(cube, older_than=EVERYTHING)

    with pytest.raises(VersionNotFoundError, match=f"version {old.version} .* expired while it was being read"):
        lazy.sel(time=hot).compute()


def test_a_long_reader_checks_a_hot_shard_missing_in_its_version_once_and_still_sees_expiry(cube):
    """A reader keeping an :class:`ArrayCache` (the REST service) looks the ledger up once for a hot shard
    missing while its version stands (an area with no data: never written for that version), not on every
    read of it; shards that expire deletes afterwards are other keys, checked, and the read still raises."""
    from cardcube.counting_store import CountingStore
    from cube.tile_arrays import ArrayCache

    old, gone = _doomed(cube)
    band = next((cube / "s2").glob("*/cube.zarr/hot/r10m/B04"))
    shard = next(p for p in (band / "c").glob("*/*/*") if int(p.parent.parent.name) in gone)
    shard.unlink()
    unlist_shards(cube, [shard])  # an area with no data, never written for that version
    store, cache = CountingStore(open_store(cube, read_only=True)), ArrayCache()
    lazy = open_cube(store, decode=False, as_of=old.version, bands="B04", cache=cache)
    hot = lazy.time[np.isin(lazy.scene_id, [a.scene_id for a in gone.values()])]
    store.reset()
    first = lazy.sel(time=hot).B04.compute()
    assert store.requests["exists"] == 1 and len(cache.absent) == 1  # the ledger record, once
    store.reset()
    xr.testing.assert_identical(lazy.sel(time=hot).B04.compute(), first)
    assert store.requests["exists"] == 0 and store.requests["get"] > 0  # the chunks read again, the ledger not

    expire(cube, older_than=EVERYTHING)
    with pytest.raises(VersionNotFoundError, match=f"version {old.version} .* expired while it was being read"):
        lazy.sel(time=hot).B04.compute()


def test_the_service_answers_404_for_a_pinned_version_expired_under_it(cube, tiny_region):
    """The REST service keeps a pinned version for ``--refresh`` seconds (here an hour) and its shard indexes:
    once expire has deleted the version's hot data, a request for it is a 404, not a season of no data."""
    from cardcube.testing.served import ServedCommand

    old, gone = _doomed(cube)
    pid = gpd.read_parquet(tiny_region.parcels).parcel_id.iloc[20]
    server = ServedCommand(["serve", "--cube", cube, "--parcels", tiny_region.parcels, "--refresh", "3600"])
    try:
        url, params = f"/collections/s2/parcels/{pid}/timeseries", {"bands": "B04", "as_of": old.version}
        first = server.http.get(url, params=params)
        read = {pd.Timestamp(r["time"]) for r in first.json()["rows"]}
        assert first.status_code == 200 and read >= {pd.Timestamp(a.time) for a in gone.values()}
        expire(cube, older_than=EVERYTHING)
        again = server.http.get(url, params=params)
        assert again.status_code == 404 and again.json()["error"] == "VersionNotFound"
        assert "expired while it was being read" in again.json()["detail"]
    finally:
        server.close()


def test_dry_run_deletes_nothing_and_takes_no_lock(cube):
    """A dry run wrote the writer lock: an ingest starting meanwhile failed, "being written by expire"."""
    files = sorted(p for p in cube.rglob("*") if p.is_file())
    with writer_lock(open_store(cube), "s2"):  # an ingest running: the dry run reports all the same
        result = expire(cube, older_than=EVERYTHING, dry_run=True)
        assert result.expired and sum(result.deleted.values()) > 0
    assert sorted(p for p in cube.rglob("*") if p.is_file()) == files


def test_a_record_without_a_readable_time_stops_expire_before_anything_goes(cube):
    record = cube / layout.ledger_key("s2", 2)
    files = sorted(p for p in cube.rglob("*") if p.is_file())
    for created in ("yesterday", "2026-05-01T10:00:00"):  # no time; a time of no zone (which clock?)
        record.write_text(json.dumps({**json.loads(record.read_text()), "created": created}))
        with pytest.raises(CorruptDocumentError, match=rf"v00000002.json in .* records no UTC time of its commit "
                                                       rf"\(created: '{created}'\): nothing expired"):
            expire(cube, older_than=EVERYTHING)
        # verify, which checks the records, called it sound (exit 0) while expire stopped on it
        checked = verify(cube, progress=False)
        assert not checked.ok and (layout.ledger_key("s2", 2), f"damaged: it records no UTC time of its commit "
                                   f"(created: '{created}'), which expire needs: restore it from a backup"
                                   ) in checked.problems
    assert sorted(p for p in cube.rglob("*") if p.is_file()) == files


def test_the_expiry_rule():
    t0 = datetime(2026, 5, 1, tzinfo=UTC)
    created = [(1, t0), (2, t0 + timedelta(days=1)), (3, t0 + timedelta(days=10)), (4, t0 + timedelta(days=11))]
    at = t0 + timedelta(days=12)
    assert expired_versions(created, now=at, older_than=timedelta(days=7)) == [1]  # 2 superseded only 2 days ago
    assert expired_versions(created, now=at, older_than=timedelta(days=1)) == [1, 2, 3]
    assert expired_versions(created, now=at, older_than=timedelta(days=30)) == []
    assert expired_versions(created[:1], now=at, older_than=EVERYTHING) == []  # the latest never expires
    skewed = [(1, t0), (2, t0 + timedelta(days=40)), (3, t0 + timedelta(days=1)), (4, t0 + timedelta(days=2))]
    assert expired_versions(skewed, now=at, older_than=timedelta(days=1)) == []  # 2 committed by a clock ahead:
    assert expired_versions(skewed, now=t0 + timedelta(days=50), older_than=timedelta(days=1)) == [1, 2, 3]  # no gap
    assert parse_age("7d") == timedelta(days=7) and parse_age("12h") == timedelta(hours=12)
    assert parse_age("0") == EVERYTHING and parse_age("90s") == timedelta(seconds=90)
    for bad in ("soon", "-1d", "", "nan", "inf"):
        with pytest.raises(InvalidRequestError, match="age"):
            parse_age(bad)
    for bad in ("nan", "inf", "-1"):  # "nan" was "has no unit; write nand for days"
        with pytest.raises(InvalidRequestError, match="an age must be a finite number of days, hours, minutes"):
            parse_age(bad)
    with pytest.raises(InvalidRequestError, match="the age '7' has no unit; write 7d for days, or 7h, 7m, 7s"):
        parse_age("7")  # meant as a week, it would expire every version older than 7 seconds
    with pytest.raises(InvalidRequestError, match="longer than any cube"):
        parse_age("1e9d")
    assert expired_versions(created, now=at, older_than=parse_age("999999d")) == []  # older than year 1: none


def _expire_command(cube: Path, *extra: str, kill_at: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "CARDCUBE_KILL_AT"}
    if kill_at:
        env["CARDCUBE_KILL_AT"] = kill_at
    return subprocess.run([sys.executable, "-m", "cardcube.cli", "expire", "--cube", str(cube), *extra],
                          env=env, capture_output=True, text=True, timeout=120)


def _expire_here(cube: Path, *extra: str) -> subprocess.CompletedProcess:
    """:func:`_expire_command`'s command line run in this process: for a run not killed."""
    return run_here(["expire", "--cube", str(cube), *extra])


def test_a_killed_expire_loses_nothing_and_the_rerun_finishes(cube, appended_cube):
    before = _read(cube)
    killed = _expire_command(cube, "--older-than", "0", kill_at="expire-records")  # records gone, data not yet
    assert killed.returncode == -9, killed.stderr
    xr.testing.assert_identical(_read(cube), before)
    done = _expire_here(cube, "--older-than", "0", "--json")  # the lock of the killed run is broken (dead pid)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["expired"] == [] and sum(report["deleted"].values()) > 0  # the records went in the killed run
    xr.testing.assert_identical(_read(cube), before)
    assert _hot_on_disk(cube) == {s.slot for t in read_version(open_store(cube), "s2").tiles.values() for s in t.hot}
    bad = _expire_here(cube, "--older-than", "a week")
    assert bad.returncode == 2 and "cannot read 'a week' as an age" in bad.stderr


def test_an_expire_killed_between_a_blocks_shards_and_its_manifest_leaves_no_manifest_behind(cube):
    """The re-run found no shards of the blocks, so it left their manifests for good."""
    killed = _expire_command(cube, "--older-than", "0", kill_at="expire-shards")
    assert killed.returncode == -9, killed.stderr
    assert _expire_here(cube, "--older-than", "0").returncode == 0
    head = read_version(open_store(cube), "s2")
    for tile, state in head.tiles.items():
        kept = {f"hot-{s.slot:06d}.json" for s in state.hot} | {f"cold-{b:06d}.json"
                                                                for b in range(len(state.cold) // 4)}
        assert {p.name for p in (cube / "s2" / tile / "_manifest").iterdir()} == kept
    assert verify(cube, progress=False).ok


@pytest.fixture(scope="module")
def six_dates(tiny_region, tmp_path_factory) -> tuple[Path, Path, Path]:
    """The region's first 6 S2 scenes ingested once (version 1), an ItemCollection of the next 3 (not all 13 others:
    a test ingests them twice, killed and again), and one of all 9: a test that goes on from there ingests the 3
    into a copy of it (:func:`_six_dates_cube`)."""
    features = items_of(tiny_region.items, "sentinel-2-l2a")
    root = tmp_path_factory.mktemp("six-dates") / "cube"
    ingest(write_items(tiny_region.items, features[:6], "six-first.json"), root, chunks=CHUNKS, progress=False)
    return (root, write_items(tiny_region.items, features[6:9], "six-rest.json"),
            write_items(tiny_region.items, features[:9], "six-all.json"))


def _six_dates_cube(six_dates: tuple[Path, Path, Path], tmp_path: Path) -> Path:
    """A copy of :func:`six_dates`' cube, to change."""
    return shutil.copytree(six_dates[0], tmp_path / "cube")


def test_leftovers_of_a_crashed_ingest_are_deleted_and_the_rerun_still_completes(six_dates, tmp_path):
    _, rest, everything = six_dates
    cube = str(_six_dates_cube(six_dates, tmp_path))
    before = _read(Path(cube))
    assert run_ingest(rest, cube, "s2", kill_at="written").returncode == -9  # data written, never committed
    grown = _size(Path(cube))
    result = expire(cube, older_than=EVERYTHING)
    assert result.expired == () and sum(result.deleted.values()) > 0 and _size(Path(cube)) < grown
    xr.testing.assert_identical(_read(Path(cube)), before)
    assert run_ingest_here(rest, cube, "s2").returncode == 0
    assert assert_matches_sources(cube, everything, "s2") > 0  # each of the 9 dates


def test_a_new_tile_a_killed_ingest_left_is_deleted(tiny_straddle_region, tmp_path):
    """The first ingest of a tile, killed after writing its data: no version holds the tile, so the sweep of the
    committed tiles never visited it and its data stayed (1.6 MB in the helper's case). A dry run names it."""
    import pystac

    from cardcube.spec import S2_L2A
    from ingest.sources import scene_from_item

    features = items_of(tiny_straddle_region.items, "sentinel-2-l2a")
    tile_of = {f["id"]: scene_from_item(pystac.Item.from_dict(f), S2_L2A).tile for f in features}
    fu, gu = ([f for f in features if tile_of[f["id"]] == t][:2] for t in ("31UFU", "31UGU"))
    cube = tmp_path / "cube"
    ingest(write_items(tiny_straddle_region.items, fu, "fu.json"), cube, chunks=CHUNKS, progress=False)
    before = _read(cube)
    killed = run_ingest(write_items(tiny_straddle_region.items, gu, "gu.json"), str(cube), "s2", kill_at="written")
    assert killed.returncode == -9 and (cube / "s2" / "31UGU").is_dir()
    assert expire(cube, older_than=EVERYTHING, dry_run=True).deleted.get("31UGU", 0) > 0
    assert (cube / "s2" / "31UGU").is_dir()
    result = expire(cube, older_than=EVERYTHING)
    assert result.deleted["31UGU"] > 0 and not (cube / "s2" / "31UGU").exists()
    xr.testing.assert_identical(_read(cube), before)


def test_expire_waits_for_a_running_ingest_and_refuses_a_folder_without_a_cube(cube, tmp_path):
    with writer_lock(open_store(cube), "s2"), pytest.raises(CubeLockedError, match="being written"):
        expire(cube, older_than=EVERYTHING)
    assert len(committed_versions(open_store(cube), "s2")) == 9  # nothing happened
    with pytest.raises(CubeNotFoundError, match=r"holds no 's1' collection .*; it holds s2$"):
        expire(cube, "s1")
    with pytest.raises(CubeNotFoundError, match="the folder does not exist"):  # as every other command says it
        expire(tmp_path / "nothing")
    assert not (cube / "s1").exists() and not (tmp_path / "nothing").exists()


def test_expire_on_s3(appended_cube, s3_bucket):
    import s3fs

    opts = s3_bucket.storage_options()
    s3fs.S3FileSystem(**opts).put(str(appended_cube) + "/", f"{s3_bucket.name}/cube/", recursive=True)
    url = s3_bucket.url_for("cube")
    # a 10 m and a 20 m band read back; every band's hot keys are checked below
    read = lambda: open_cube(url, bands=["B04", "B11"], decode=False, storage_options=opts,  # noqa: E731
                             chunks="window").compute().drop_attrs()
    before = read()
    result = expire(url, older_than=EVERYTHING, storage_options=opts)
    assert len(result.expired) == 8 and sum(result.deleted.values()) > 0
    xr.testing.assert_identical(read(), before)
    keys = [k["Key"] for k in s3_bucket.server.client().list_objects_v2(Bucket=s3_bucket.name,
                                                                         Prefix="cube/s2/")["Contents"]]
    hot = {int(k.split("/c/")[1].split("/")[0]) for k in keys if "/hot/" in k and "/B" in k and "/c/" in k}
    head = read_version(open_store(url, storage_options=opts), "s2")
    assert hot == {s.slot for t in head.tiles.values() for s in t.hot}
    assert [k for k in keys if layout.version_of_key(k) is not None] == [f"cube/{layout.ledger_key('s2', 9)}"]


def test_expire_on_s3_stops_at_a_record_s3_refuses_to_delete_and_every_version_stays_readable(appended_cube,
                                                                                               s3_bucket, s3_proxy):
    """S3 refusing a ledger record's delete (a bucket policy, Object Lock) in its HTTP 200 answer: expire said
    "expired 1 version(s)", and deleted the hot slots the version still listed reads. It stops now, having
    deleted no data; a transient failure of the delete is tried again."""
    import s3fs

    from cardcube.errors import StoreError

    s3fs.S3FileSystem(**s3_bucket.storage_options()).put(str(appended_cube) + "/", f"{s3_bucket.name}/cube/",
                                                          recursive=True)
    url, opts, direct = s3_bucket.url_for("cube"), s3_proxy.storage_options(), s3_bucket.storage_options()
    # read straight from the server: the proxy is there for expire's deletes (each request through it, one more hop)
    read = lambda v: open_cube(url, bands=["B04"], decode=False, storage_options=direct, as_of=v,  # noqa: E731
                               chunks="window").compute().drop_attrs()
    versions = committed_versions(open_store(url, storage_options=opts), "s2")
    before = {v: read(v) for v in versions}
    s3_proxy.refuse_deletes("/_ledger/")
    with pytest.raises(StoreError, match=r"S3 did not delete 1 object\(s\) .* among them cube/s2/_ledger/v0*1\.json: "
                                         r"AccessDenied"):
        expire(url, older_than=EVERYTHING, storage_options=opts)
    assert committed_versions(open_store(url, storage_options=opts), "s2") == versions
    for v in versions:
        xr.testing.assert_identical(read(v), before[v])
    s3_proxy.refuse_deletes("/_ledger/", code="SlowDown", times=1)
    assert len(expire(url, older_than=EVERYTHING, storage_options=opts).expired) == len(versions) - 1
    xr.testing.assert_identical(read(None), before[versions[-1]])


def test_asking_for_an_expired_or_future_version_says_which_versions_there_are(cube):
    latest = committed_versions(open_store(cube), "s2")[-1]
    expire(cube, older_than=EVERYTHING)
    with pytest.raises(VersionNotFoundError, match=rf"has no version 1: it was expired \(cardcube expire\); "
                                                   rf"version {latest} is the only one kept"):
        open_cube(cube, as_of=1)
    with pytest.raises(VersionNotFoundError, match=rf"has no version {latest + 5}: the latest is {latest}"):
        open_cube(cube, as_of=latest + 5)


def test_a_rerun_of_an_expire_killed_before_it_rewrote_the_catalog_rewrites_it(cube, monkeypatch):
    """The catalog named a version the first run had expired (killed between the records and the catalog): the
    re-run expired nothing more and left the catalog naming a version gone, its dates stale, until an ingest."""
    import ingest.expire as expiring
    from catalog.write import published_version, write_catalog

    store = open_store(cube)
    (cube / "s2" / "collection.json").unlink()  # as if 4 to 9 were ingested without the catalog
    write_catalog(store, read_version(store, "s2", 3), force=True)
    assert published_version(store, "s2") == 3

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(expiring, "write_catalog", killed)
    with pytest.raises(KeyboardInterrupt):
        expire(cube, older_than=EVERYTHING)
    assert committed_versions(store, "s2") == [9] and published_version(store, "s2") == 3
    monkeypatch.undo()
    assert expire(cube, older_than=EVERYTHING).expired == ()
    assert published_version(store, "s2") == 9


def test_expire_publishes_the_head_an_ingest_killed_after_its_commit_left_unpublished(cube):
    """An ingest killed between its commit and its publish leaves the catalog a version behind; a scheduled expire
    (which takes the writer lock as ingest does) left it so, naming the previous version, until the next ingest."""
    from catalog.write import published_version, write_catalog

    store = open_store(cube)
    head = read_version(store, "s2")
    (cube / "s2" / "collection.json").unlink()  # as the catalog was before the last ingest's publish
    write_catalog(store, read_version(store, "s2", head.version - 1), force=True)
    assert published_version(store, "s2") == head.version - 1
    assert expire(cube, older_than=timedelta(days=365)).expired == ()  # nothing old enough: only the catalog
    assert published_version(store, "s2") == head.version
    # a cube without a catalog (ingest(catalog=False)) gets its arrays' shapes published, and no catalog
    from ingest.arrays import open_array

    for name in ("catalog.json", "s2/collection.json"):
        (cube / name).unlink()
    tile = sorted(head.tiles)[0]
    b04 = open_array(store, head.spec, tile, 10, "B04", hot=False, mode="r+")
    length = b04.shape[0]
    b04.resize((length - 1, *b04.shape[1:]))  # as the arrays' shapes are before a commit is published
    expire(cube, older_than=timedelta(days=365))
    assert open_array(store, head.spec, tile, 10, "B04", hot=False, mode="r").shape[0] == length
    assert published_version(store, "s2") is None and not (cube / "catalog.json").exists()



def test_the_details_object_of_an_ingest_killed_before_its_commit_is_deleted_and_the_others_kept(six_dates,
                                                                                                  tmp_path):
    """The band files and checksums of the scenes a version records first are written before its record
    (:mod:`cube.scene_details`): a run killed between the two leaves an object no version names, which expire deletes
    (a dry run counts it), keeping every one a kept version names; the re-run writes its own and completes."""
    rest = six_dates[1]
    cube = _six_dates_cube(six_dates, tmp_path)
    ledger = cube / "s2" / "_ledger"
    named = sorted(p.name for p in ledger.glob("scenes-*.json"))
    assert len(named) == 1
    assert run_ingest(rest, str(cube), "s2", kill_at="details").returncode == -9
    orphan = sorted({p.name for p in ledger.glob("scenes-*.json")} - set(named))
    assert len(orphan) == 1 and committed_versions(open_store(cube), "s2") == [1]
    planned = expire(cube, older_than=EVERYTHING, dry_run=True)
    assert planned.details == 1 and "1 details object(s) of the ledger no kept version names to delete" in (
        planned.summary())
    result = expire(cube, older_than=EVERYTHING)
    assert result.details == 1 and "1 details object(s) of the ledger no kept version names deleted" in (
        result.summary())
    assert sorted(p.name for p in ledger.glob("scenes-*.json")) == named
    assert run_ingest_here(rest, str(cube), "s2").returncode == 0
    head = read_version(open_store(cube), "s2")
    assert all(r.checksums and r.sources for r in head.scenes.values())
    assert expire(cube, older_than=EVERYTHING).details == 0 and verify(cube, progress=False).ok
    assert len(list(ledger.glob("scenes-*.json"))) == 2  # version 2's scenes, and those version 1 recorded first
