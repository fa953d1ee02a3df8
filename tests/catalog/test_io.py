"""StoreStacIO: the catalog through a zarr Store, the same on a folder, in memory and on S3."""

from __future__ import annotations

import pystac
import pytest
from zarr.storage import LocalStore, MemoryStore

from cardcube.counting_store import CountingStore
from cardcube.storage import open_store, read_bytes
from cardcube.testing import fixtures
from catalog import keys
from catalog.io import StoreStacIO, store_base
from catalog.route import find_tiles
from catalog.validate import walk_documents
from catalog.write import catalog_is_current, write_catalog
from tests.catalog.conftest import hand_version

s3_server, s3_bucket = fixtures.s3_server, fixtures.s3_bucket


def test_hrefs_and_keys(tmp_path):
    io = StoreStacIO(CountingStore(LocalStore(tmp_path)))
    assert io.base == str(tmp_path) == store_base(io.store)
    assert io.key(io.href("s2/collection.json")) == "s2/collection.json"
    assert io.key(f"file://{tmp_path}/catalog.json") == "catalog.json"
    assert io.key("s2/31UFU/../collection.json") == "s2/collection.json"
    for outside in ("/etc/passwd", "https://example.org/catalog.json", "../x.json", f"{tmp_path}/../x.json"):
        with pytest.raises(ValueError, match="outside"):
            io.key(outside)


def test_unchanged_write_is_skipped():
    store = CountingStore(MemoryStore())
    io = StoreStacIO(store)
    io.write_text(io.href("a.json"), "{}\n")
    io.write_text(io.href("a.json"), "{}\n")
    assert store.requests["set"] == 1 and read_bytes(store, "a.json") == b"{}\n"
    with pytest.raises(FileNotFoundError):
        io.read_text(io.href("missing.json"))


@pytest.mark.s3
def test_catalog_on_s3(s3_bucket):
    store = open_store(s3_bucket.url_for("cube"), storage_options=s3_bucket.storage_options())
    version = hand_version(tiles={"31UFU": ["2024-04-01T10:50:31Z"], "31UGU": ["2024-04-02T10:50:31Z"]})
    write_catalog(store, version)
    assert catalog_is_current(store, version)
    io = StoreStacIO(store)
    assert io.base.startswith("s3://")
    assert sorted(k for k, _ in walk_documents(store)) == sorted([
        keys.ROOT_KEY, "s2/collection.json", "sources/sentinel-2-l2a/collection.json",
        "s2/31UFU/s2-31UFU.json", "s2/31UGU/s2-31UGU.json"])
    root = pystac.Catalog.from_file(io.href(keys.ROOT_KEY), stac_io=io)
    item = next(iter(root.get_items(recursive=True)))
    assert item.assets["data"].get_absolute_href() == f"{io.base}/s2/31UFU/cube.zarr"
    assert [r.tile for r in find_tiles(store, "s2", bbox=(705_000, 5_850_000, 705_100, 5_850_100),
                                       crs="EPSG:32631")] == ["31UFU", "31UGU"]


@pytest.mark.s3
def test_finding_tiles_in_a_bucket_that_does_not_exist_says_so(s3_bucket):
    """It said the catalog was missing and to run 'cardcube catalog build', which then said the bucket does not
    exist."""
    from cardcube.errors import StoreError

    store = open_store(f"s3://{s3_bucket.name}-missing/cube", storage_options=s3_bucket.storage_options())
    with pytest.raises(StoreError, match=rf"the bucket {s3_bucket.name}-missing does not exist"):
        find_tiles(store, "s2")


def test_a_store_made_with_a_relative_path_writes_its_catalog(tmp_path, monkeypatch):
    """ingest() into LocalStore("relstore") committed the version, then raised "catalog href ... is outside the
    cube at relstore", leaving the cube without a catalog (and broke the benchmarks' relative --work)."""
    monkeypatch.chdir(tmp_path)
    store = LocalStore("relstore", read_only=False)
    assert StoreStacIO(store).base == str(tmp_path / "relstore")
    version = hand_version(tiles={"31UFU": ["2024-05-01T10:50:31Z"]})
    write_catalog(store, version)
    assert catalog_is_current(store, version) and find_tiles(store, "s2")
    items = pystac.Catalog.from_file(str(tmp_path / "relstore" / keys.ROOT_KEY)).get_items(recursive=True)
    assert [item.properties["cardcube:tile"] for item in items] == ["31UFU"]


def _sixteen_tiles_then_a_date_on_one() -> tuple:
    """Version 1 of a cube of 16 tiles, one date each, and version 2 adding a date to 31UFU alone."""
    from dataclasses import replace

    from tests.catalog.conftest import T0, iso

    tiles = [f"31U{column}{row}" for column in "DEFG" for row in "STUV"]
    first = hand_version(tiles={t: [iso(T0)] for t in tiles}, version=1, hot=0)
    grown = hand_version(tiles={t: [iso(T0), *(["2024-05-01T10:50:31Z"] if t == "31UFU" else [])] for t in tiles},
                         version=2, hot=0)
    return first, replace(grown, created="2024-06-02T00:00:00.000000Z",
                          scenes={**first.scenes, **{k: v for k, v in grown.scenes.items() if k not in first.scenes}})


@pytest.mark.s3
def test_a_version_reads_the_stored_items_all_at_once(s3_bucket, s3_proxy):
    """To skip an unchanged item, a version read every item stored, one GET after another: 16 round trips at 16
    tiles, hundreds (seconds) at hundreds. It asks for them all at once, then writes what changed."""
    first, second = _sixteen_tiles_then_a_date_on_one()
    store = open_store(s3_bucket.url_for("cube"), storage_options=s3_proxy.storage_options())
    write_catalog(store, first)
    s3_proxy.configure(latency_s=0.05)  # requests sent at once overlap
    s3_proxy.reset_counters()
    write_catalog(store, second)
    sent = s3_proxy.snapshot()
    assert sent.peak_in_flight >= 8, sent  # as many as the client sends at once (10 connections)
    assert sent.put == 3 and catalog_is_current(store, second)


@pytest.mark.s3
def test_a_reader_reads_again_only_the_items_a_new_version_changed(s3_bucket, s3_proxy):
    """A reader's ItemCache was keyed by the catalog's version, so after a version adding a date to one tile of 16 it
    read all 16 items again (as open_cube, catalog find and the REST service route). It reads the collection and
    that tile's item, and routes every tile to the new version."""
    from catalog.route import ItemCache, tile_refs

    first, second = _sixteen_tiles_then_a_date_on_one()
    store = open_store(s3_bucket.url_for("cube"), storage_options=s3_proxy.storage_options())
    cache = ItemCache()
    write_catalog(store, first)
    assert {r.version for r in tile_refs(store, "s2", cache=cache)} == {1}
    write_catalog(store, second)
    s3_proxy.reset_counters()
    refs = tile_refs(store, "s2", cache=cache)
    assert s3_proxy.snapshot().requests == {"GET": 2}  # the collection, then 31UFU's item
    assert {r.version for r in refs} == {2} and len(refs) == 16
    assert [r.dates for r in refs if r.tile == "31UFU"] == [2]
    assert refs == tile_refs(store, "s2")  # as a reader without a cache finds them


@pytest.mark.s3
def test_a_version_adding_a_date_to_one_tile_puts_that_items_and_the_collections(s3_bucket, s3_proxy):
    """Every item named the cube's version, so a version adding one date to one tile of a 16-tile cube PUT all 16
    items (and the two collections): 18 PUTs, hundreds at hundreds of tiles. It PUTs that tile's item and the
    collections (the root is the same), and the catalog is the one written whole from the version."""
    first, second = _sixteen_tiles_then_a_date_on_one()
    options = s3_proxy.storage_options()
    store = open_store(s3_bucket.url_for("cube"), storage_options=options)
    write_catalog(store, first)
    client = s3_bucket.server.client()

    def documents(prefix: str) -> dict[str, bytes]:
        listed = client.list_objects_v2(Bucket=s3_bucket.name, Prefix=prefix)["Contents"]
        return {o["Key"].removeprefix(prefix): client.get_object(Bucket=s3_bucket.name, Key=o["Key"])["Body"].read()
                for o in listed}

    before = documents("cube/")
    sent = s3_proxy.snapshot()
    write_catalog(store, second)
    sent = s3_proxy.snapshot() - sent
    after = documents("cube/")
    assert sorted(k for k in after if after[k] != before[k]) == [
        "s2/31UFU/s2-31UFU.json", "s2/collection.json", "sources/sentinel-2-l2a/collection.json"]
    assert sent.put == 3
    assert catalog_is_current(store, second)
    write_catalog(open_store(s3_bucket.url_for("whole"), storage_options=options), second, force=True)
    assert documents("whole/") == after
