"""Ingest into a local folder: exact pixels, batches, idempotency, versions, plain-Zarr readability."""

from __future__ import annotations

import datetime as dt
import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from zarr.storage import LocalStore

from cardcube.cli import main
from cardcube.spec import ChunkLayout, cube_spec
from cardcube.storage import open_store
from cube.dataset import open_cube
from cube.ledger import committed_versions, read_version
from ingest.job import ingest
from tests.conftest import TEST_CHUNKS
from tests.ingest.checks import assert_matches_sources
from tests.ingest.scene_edits import asset_path, items_of, write_items

# small, so a tiny region spans blocks and shards; the layout of the session's tiny cube, which is the tiny region
# ingested whole (S2, then S1) as these tests would ingest it: they read that cube, or a copy to change
CHUNKS = ChunkLayout.parse(TEST_CHUNKS)


@pytest.mark.parametrize("collection", ["s2", "s1"])
def test_every_pixel_equals_the_source(tiny_ingest, tiny_region, collection):
    cube, results = tiny_ingest
    result = results[collection]
    assert result.ok and result.version == 1 and result.added
    assert assert_matches_sources(cube, tiny_region.items, collection) > 0
    assert 1.0 <= result.write_amplification <= 1.5  # the initial load writes each date once


@pytest.mark.parametrize("collection", ["s2", "s1"])
def test_the_ledger_says_which_file_each_band_came_from(tiny_cube, tiny_region, collection):
    """An inspector's audit trail: per scene, the source collection, each band's file and its checksum."""
    version = read_version(open_store(tiny_cube), collection)
    source = version.spec.source_collection
    features = {f["id"]: f for f in items_of(tiny_region.items, source)}
    assert set(version.scenes) == set(features)
    for record in version.scenes.values():
        feature = features[record.scene_id]
        assert record.collection == feature["collection"] == source
        assert set(record.sources) == set(record.checksums) == set(version.spec.band_names)
        for band, href in record.sources.items():
            assert Path(href) == asset_path(tiny_region.items, feature, band)
            assert record.checksums[band] == "sha256:" + hashlib.sha256(Path(href).read_bytes()).hexdigest()


def test_batches_give_the_same_cube_as_one_ingest(tiny_region, tiny_cube, tmp_path):
    features = items_of(tiny_region.items, "sentinel-2-l2a")
    batches = [features[:5], features[5:6], features[6:13], features[13:]]
    for i, batch in enumerate(batches):
        part = write_items(tiny_region.items, batch, f"batch-{i}.json")
        assert ingest(part, tmp_path / "batched", chunks=CHUNKS, progress=False).version == i + 1
    # read at once (chunks="window": one Zarr call per array, not a dask task per chunk)
    batched = open_cube(tmp_path / "batched", decode=False, bbox=tiny_region.bbox, chunks="window").compute()
    once = open_cube(tiny_cube, decode=False, bbox=tiny_region.bbox, chunks="window").compute()  # one ingest
    xr.testing.assert_identical(batched.drop_attrs(), once.drop_attrs())
    a, b = (read_version(open_store(p), "s2").tiles for p in (tmp_path / "batched", tiny_cube))
    assert [t.cold for t in a.values()] == [t.cold for t in b.values()]


def test_writes_read_no_shard_but_the_hot_dates_they_compact(tiny_region, tmp_path, monkeypatch):
    """Every band write covers whole shards: zarr's sharding codec would read each one first to merge into it (a 404
    per shard on object storage; a failure on a damaged one)."""
    read: list[str] = []
    get = LocalStore.get

    async def spy(self, key, prototype, byte_range=None):
        if key.partition("/c/")[0].rpartition("/")[2] in cube_spec("s2").band_names:  # a band's shard
            read.append(key)
        return await get(self, key, prototype, byte_range)

    monkeypatch.setattr(LocalStore, "get", spy)
    features = items_of(tiny_region.items, "sentinel-2-l2a")
    first = ingest(write_items(tiny_region.items, features[:6], "writes-first.json"), tmp_path / "cube", chunks=CHUNKS,
                   progress=False)
    assert first.version == 1 and read == []  # a cold block and two hot slots written, nothing read
    second = ingest(write_items(tiny_region.items, features[6:9], "writes-second.json"), tmp_path / "cube",
                    progress=False)
    assert second.compacted == 2 and read and all("/hot/" in key for key in read), read  # the two slots moved


def test_reingest_is_a_noop_and_versions_can_be_read_back(tiny_region, tmp_path):
    features = items_of(tiny_region.items, "sentinel-2-l2a")
    first = write_items(tiny_region.items, features[:6], "first.json")
    ingest(first, tmp_path / "cube", chunks=CHUNKS, progress=False)
    second = ingest(tiny_region.items, tmp_path / "cube", chunks=CHUNKS, progress=False)
    assert second.version == 2 and len(second.skipped) == 6 and len(second.added) == len(features) - 6
    again = ingest(tiny_region.items, tmp_path / "cube", chunks=CHUNKS, progress=False)
    assert again.version is None and again.bytes_written == 0 and len(again.skipped) == len(features)
    assert second.latest == again.latest == 2 and "nothing to commit (the cube is at version 2)" in again.summary()
    assert again.to_dict()["latest"] == 2 and again.to_dict()["version"] is None
    assert committed_versions(open_store(tmp_path / "cube"), "s2") == [1, 2]
    v1 = open_cube(tmp_path / "cube", as_of=1, decode=False, bbox=tiny_region.bbox)
    assert list(v1["scene_id"].values) == [f["id"] for f in features[:6]]
    assert_matches_sources(tmp_path / "cube", first, "s2", as_of=1)
    assert open_cube(tmp_path / "cube").attrs["cardcube:version"] == 2


def test_other_chunks_for_an_existing_cube_are_refused(tiny_region, tiny_cube, tmp_path):
    shutil.copytree(tiny_cube, tmp_path / "cube")  # S1 ingested with CHUNKS
    with pytest.raises(ValueError, match=r"^the s1 cube already uses chunks time=(\d+),space=(\d+),shard_space=(\d+); "
                       r"time=8,space=\2,shard_space=\3 would need a new cube \(leave chunks, --chunks, out"):
        ingest(tiny_region.items, tmp_path / "cube", collection="s1", chunks=CHUNKS.with_(time=8), progress=False)


def test_plain_zarr_readers_see_committed_dates_with_crs(tiny_cube):
    version = read_version(open_store(tiny_cube), "s1")
    (tile, state), = version.tiles.items()
    ds = xr.open_zarr(tiny_cube / "s1" / tile / "cube.zarr" / "r10m", consolidated=False)
    assert ds.sizes["time"] == len(state.cold)
    assert ds.rio.crs.to_epsg() == 32631
    assert ds.rio.transform().c == 600000.0 and ds.rio.transform().a == 10.0
    assert list(ds["scene_id"].values) == [a.scene_id for a in state.cold]
    assert np.issubdtype(ds["time"].dtype, np.datetime64)


def test_cli_reports_and_exit_status(tiny_region, tmp_path, capsys):
    code = main(["ingest", str(tiny_region.items), "--cube", str(tmp_path / "cube"), "--collection", "s1",
                 "--chunks", "time=4,space=64,shard_space=256", "--quiet", "--no-catalog"])
    out = capsys.readouterr().out
    assert code == 0 and "committed version 1" in out and "write amplification" in out


def test_a_tile_south_of_the_equator(tmp_path):
    """Any tile of the Sentinel-2 grid, here one in South Africa (UTM south): ingested pixel for pixel on its
    own grid, catalogued with a footprint in the right place, and read back by parcel."""
    from cardcube.grid import TileGrid
    from cardcube.synth import SynthConfig, generate
    from catalog.build import build_tile_item
    from cube.timeseries import parcel_timeseries

    region = generate(tmp_path / "region", SynthConfig.tiny(tile="33HVD", size_m=(1_000.0, 1_000.0), s1=False,
                                                            end=dt.date(2024, 5, 31)))
    ingest(region.items, tmp_path / "cube", chunks=CHUNKS, progress=False)
    assert assert_matches_sources(tmp_path / "cube", region.items, "s2") > 0
    ds = open_cube(tmp_path / "cube")
    grid = TileGrid.from_id("33HVD")
    assert ds.rio.crs.to_epsg() == 32733 and ds.rio.transform().f <= grid.uly
    item = build_tile_item(read_version(open_store(tmp_path / "cube"), "s2"), "33HVD")
    lon, lat = np.asarray(item.geometry["coordinates"][0]).mean(axis=0)
    assert 14 < lon < 17 and -35 < lat < -32  # the Western Cape, not the northern hemisphere's mirror
    frame = parcel_timeseries(tmp_path / "cube", region.parcels, bands=["B04"])
    assert {s["status"] for s in frame.attrs["parcel_status"]} <= {"ok", "too_small"} and len(frame)
