"""`cardcube verify` checks the coordinate and per-date arrays a plain Zarr reader sees, and `ingest --repair` writes
them again.

cardcube's reads take the grid and the dates from the ledger; ``xarray.open_zarr(..., group="r10m")`` and rioxarray
take them from the arrays beside the bands (``x``, ``y``, ``spatial_ref``, ``time``, ``scene_id``, ...). One of them
lost (a partial restore, a lifecycle rule, a migration) cost those readers the georeferencing or the dates, and
verify said "sound". The references here are independent of the writer: odc-geo's pixel centres of the tile grid,
the ledger's times and scene ids."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr

from cardcube.cli import main
from cardcube.grid import TileGrid
from cardcube.storage import open_store
from cube import layout
from cube.dataset import open_cube
from cube.ledger import committed_versions, read_version
from cube.verify import verify
from ingest.job import ingest

TILE = "31UFU"


@pytest.fixture
def history(appended_cube, tmp_path) -> Path:
    """A copy of the cube of 9 versions (dates in cold blocks and hot slots, some slots compacted)."""
    return Path(shutil.copytree(appended_cube, tmp_path / "history"))


def zarr_group(cube: Path | str, group: str) -> str:
    return f"{cube}/{layout.tile_zarr_path('s2', TILE)}/{group}"


def every_read(cube: Path | str, **kwargs) -> dict[int, np.ndarray]:
    """Each kept version's B04 and SCL, as cardcube reads them."""
    store = open_store(cube, read_only=True, **kwargs)
    return {v: open_cube(cube, as_of=v, bands=["B04", "SCL"], decode=False, **kwargs).to_array().values
            for v in committed_versions(store, "s2")}


def hot_slot_scenes(cube: Path) -> dict[int, str]:
    """Each hot slot's scene id, as the kept versions' records say."""
    store = open_store(cube, read_only=True)
    return {h.slot: h.acquisition.scene_id for v in committed_versions(store, "s2")
            for h in read_version(store, "s2", v).tiles[TILE].hot}


def test_a_lost_x_other_y_and_a_lost_hot_per_date_chunk_are_reported_and_repair_writes_them_again(
        history, tiny_region, capsys):
    before, objects = every_read(history), sorted(p for p in (history / "s2").rglob("*") if p.is_file())
    sound = {p: p.read_bytes() for p in objects}
    assert verify(history, progress=False).ok
    x = history / layout.array_path("s2", TILE, 10, "x") / "c" / "0"
    x.unlink()
    y = zarr.open_array(history / layout.array_path("s2", TILE, 10, "y"), mode="r+")
    y[:] = y[:] + 10.0  # moved 10 m: a cube of another grid restored over this one's
    scene_id = history / layout.array_path("s2", TILE, 20, "scene_id", hot=True) / "c" / "0"
    scene_id.unlink()

    result = verify(history, progress=False)
    assert not result.ok
    found = dict(result.problems)
    rel = {p: p.relative_to(history).as_posix() for p in (x, scene_id)}
    y_key = f"{layout.array_path('s2', TILE, 10, 'y')}/c/0"
    assert set(found) == {rel[x], y_key, rel[scene_id]}
    assert found[rel[x]].startswith("missing: a plain Zarr reader (xarray.open_zarr, rioxarray) of r10m loses the "
                                    "pixels' eastings")
    assert found[y_key].startswith("holds other values than the ledger and the tile grid say")
    assert "of hot/r20m loses each date's scene_id" in found[rel[scene_id]]
    assert not result.superseded
    assert main(["verify", "--cube", str(history), "--quiet"]) == 1
    out = capsys.readouterr().out
    assert "3 damaged" in out and rel[x] in out
    assert "`cardcube ingest --cube CUBE --repair` writes them again from the ledger" in out

    versions = committed_versions(open_store(history), "s2")
    assert main(["ingest", str(tiny_region.items), "--cube", str(history), "--repair", "--quiet", "--json"]) == 0
    done = json.loads(capsys.readouterr().out)
    assert sorted(done["coordinates"]) == sorted([rel[x], y_key, rel[scene_id]]) and done["version"] is None
    assert committed_versions(open_store(history), "s2") == versions  # no version: the ledger is as it was

    assert verify(history, progress=False).ok
    assert {p: p.read_bytes() for p in objects} == sound  # every object as ingest wrote it, no other written
    assert sorted(p for p in (history / "s2").rglob("*") if p.is_file()) == objects
    after = every_read(history)
    assert after.keys() == before.keys() and all(np.array_equal(after[v], before[v]) for v in before)
    grid = TileGrid.from_id(TILE).geobox(10)
    plain = xr.open_zarr(zarr_group(history, "r10m"), consolidated=False)
    np.testing.assert_allclose(plain.x.values, grid.coordinates["x"].values, rtol=0, atol=1e-6)
    np.testing.assert_allclose(plain.y.values, grid.coordinates["y"].values, rtol=0, atol=1e-6)
    hot = xr.open_zarr(zarr_group(history, "hot/r20m"), consolidated=False)
    slots = hot_slot_scenes(history)
    assert slots and all(str(hot.scene_id.values[s]) == sid for s, sid in slots.items())


def test_a_per_date_array_without_its_metadata_or_with_other_attributes_is_reported_and_made_anew(
        history, tiny_region, capsys):
    """``time``'s ``zarr.json`` lost: xarray reads no dates; ``spatial_ref``'s CRS edited: rioxarray another CRS.
    An ingest stopped on the lost one with zarr's "ArrayNotFoundError" (publishing the shapes opens every array),
    --repair too; it names it and says to run --repair, which makes it anew."""
    time_meta = history / layout.array_path("s2", TILE, 10, "time") / "zarr.json"
    time_meta.unlink()
    ref = zarr.open_array(history / layout.array_path("s2", TILE, 20, "spatial_ref"), mode="r+")
    ref.attrs["crs_wkt"] = "EPSG:4326"
    found = dict(verify(history, progress=False).problems)
    ref_key = f"{layout.array_path('s2', TILE, 20, 'spatial_ref')}/zarr.json"
    assert set(found) == {time_meta.relative_to(history).as_posix(), ref_key}
    assert found[time_meta.relative_to(history).as_posix()] == (
        "missing: the array's metadata; a plain Zarr reader (xarray.open_zarr, rioxarray) sees no time array, and "
        "loses the dates (the time coordinate)")
    assert found[ref_key] == ("damaged: its attributes are not those ingest writes: crs_wkt 'EPSG:4326' where ingest "
                              "writes the WKT of EPSG:32631; a plain Zarr reader loses the CRS and GeoTransform "
                              "rioxarray and odc-geo read")

    assert main(["ingest", str(tiny_region.items), "--cube", str(history), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert (f"{time_meta.relative_to(history).as_posix()} of a committed tile is missing: a plain Zarr reader cannot "
            "open the array; `cardcube ingest --cube CUBE --repair` writes it again from the ledger (no SOURCE "
            "needed)") in err
    result = ingest(tiny_region.items, history, repair=True, progress=False)
    assert result.version is None and set(result.coordinates) >= set(found)
    assert verify(history, progress=False).ok
    store = open_store(history, read_only=True)
    cold = read_version(store, "s2").tiles[TILE].cold
    plain = xr.open_zarr(zarr_group(history, "r10m"), consolidated=False)
    assert list(plain.time.values) == [a.datetime64 for a in cold]  # decoded as dates: its units are back
    assert [str(s) for s in plain.scene_id.values] == [a.scene_id for a in cold]
    assert xr.open_zarr(zarr_group(history, "r20m"), consolidated=False).spatial_ref.attrs["crs_wkt"].startswith(
        'PROJCRS["WGS 84 / UTM zone 31N"')


def test_a_per_date_chunk_that_does_not_decode_is_reported_and_written_anew(history, tiny_region):
    chunk = history / layout.array_path("s2", TILE, 10, "cloud_cover", hot=True) / "c" / "0"
    chunk.write_bytes(b"not a zstd stream")
    ((key, problem),) = verify(history, progress=False).problems
    assert key == chunk.relative_to(history).as_posix() and problem.startswith("damaged: it does not decode")
    assert ingest(tiny_region.items, history, repair=True, progress=False).coordinates == (key,)
    assert verify(history, progress=False).ok
    store = open_store(history, read_only=True)
    cover = {h.slot: h.acquisition.cloud_cover for v in committed_versions(store, "s2")
             for h in read_version(store, "s2", v).tiles[TILE].hot}
    stored = zarr.open_array(chunk.parent.parent, mode="r")[:]
    assert all(np.isclose(stored[s], c) for s, c in cover.items())


@pytest.fixture
def latest_alone(appended_cube, tmp_path) -> Path:
    """A copy of ``appended_cube`` expired to its latest version (dates in cold blocks and hot slots): what moto's
    S3 is asked for in each verify and read is that version's objects, not the 9 versions' 700."""
    from datetime import timedelta

    from ingest.expire import expire

    cube = Path(shutil.copytree(appended_cube, tmp_path / "latest"))
    expire(cube, older_than=timedelta(0), merge_over=None)
    return cube


def test_on_s3_lost_and_other_coordinates_are_reported_and_repair_writes_them_again_with_or_without_source(
        latest_alone, tiny_region, s3_bucket):
    """The same on an object store (moto's S3 over HTTP): one round of reads, the repair's writes; then, on the cube
    repaired, a repair without SOURCE writes a lost coordinate array again, and names a lost shard, which needs the
    scenes. (One cube uploaded for both: moto's requests cost more than the rest of the test.)"""
    from cardcube.errors import InvalidRequestError

    url, opts = s3_bucket.upload(latest_alone, "cube"), s3_bucket.storage_options()
    client = s3_bucket.server.client()
    before = every_read(latest_alone)  # the folder the bucket holds a copy of: its reads, without moto's requests
    assert len(before) == 1 and hot_slot_scenes(latest_alone)
    assert verify(url, storage_options=opts, progress=False).ok
    x_key = f"{layout.array_path('s2', TILE, 20, 'x')}/c/0"
    platform_key = f"{layout.array_path('s2', TILE, 10, 'platform', hot=True)}/c/0"
    client.delete_object(Bucket=s3_bucket.name, Key=f"cube/{x_key}")
    client.delete_object(Bucket=s3_bucket.name, Key=f"cube/{platform_key}")
    y = zarr.open_array(zarr.storage.FsspecStore.from_url(f"{url}/{layout.array_path('s2', TILE, 10, 'y', hot=True)}",
                                                          storage_options=opts), mode="r+")
    y[:5] = 0.0
    y_key = f"{layout.array_path('s2', TILE, 10, 'y', hot=True)}/c/0"
    result = verify(url, storage_options=opts, progress=False)
    assert {k for k, _ in result.problems} == {x_key, platform_key, y_key}
    assert dict(result.problems)[x_key].startswith("missing:")

    done = ingest(tiny_region.items, url, repair=True, storage_options=opts, progress=False)
    assert sorted(done.coordinates) == sorted([x_key, platform_key, y_key]) and done.version is None
    assert verify(url, storage_options=opts, progress=False).ok
    after = every_read(url, storage_options=opts)
    assert after.keys() == before.keys() and all(np.array_equal(after[v], before[v]) for v in before)

    # without SOURCE (the scenes archived)
    client.delete_object(Bucket=s3_bucket.name, Key=f"cube/{x_key}")
    done = ingest(None, url, repair=True, storage_options=opts, progress=False)
    assert done.coordinates == (x_key,) and done.version is None
    assert verify(url, storage_options=opts, progress=False).ok
    shard = next(p for p in sorted((latest_alone / layout.array_path("s2", TILE, 10, "B08") / "c" / "0").rglob("*"))
                 if p.is_file()).relative_to(latest_alone).as_posix()
    client.delete_object(Bucket=s3_bucket.name, Key=f"cube/{shard}")
    client.delete_object(Bucket=s3_bucket.name, Key=f"cube/{x_key}")
    with pytest.raises(InvalidRequestError, match=f"{shard}: missing"):
        ingest(None, url, repair=True, storage_options=opts, progress=False)
    assert [k for k, _ in verify(url, storage_options=opts, progress=False).problems] == [shard]


def test_another_text_of_the_same_crs_is_sound_and_another_crs_is_not(history):
    """Another PROJ writes another WKT of the tile's CRS: not damage. Another CRS is."""
    import pyproj

    ref = zarr.open_array(history / layout.array_path("s2", TILE, 10, "spatial_ref", hot=True), mode="r+")
    ref.attrs["crs_wkt"] = pyproj.CRS.from_epsg(32631).to_wkt("WKT1_GDAL")
    ref.attrs["GeoTransform"] = " ".join(f"{float(v):.3f}" for v in ref.attrs["GeoTransform"].split())
    assert verify(history, progress=False).ok
    ref.attrs["crs_wkt"] = pyproj.CRS.from_epsg(32632).to_wkt("WKT1_GDAL")
    [(key, problem)] = verify(history, progress=False).problems
    assert key == f"{layout.array_path('s2', TILE, 10, 'spatial_ref', hot=True)}/zarr.json"
    assert problem.startswith("damaged: its attributes are not those ingest writes: crs_wkt the WKT of EPSG:32632 "
                              "where ingest writes the WKT of EPSG:32631;")


def test_a_repair_without_source_writes_the_coordinate_arrays_again(history, capsys):
    """The scenes archived: `cardcube ingest --cube CUBE --repair` without SOURCE was an argparse error ("the
    following arguments are required: source"), though the coordinate arrays need no scene. It writes them again."""
    x_key = f"{layout.array_path('s2', TILE, 10, 'x')}/c/0"
    time_meta = f"{layout.array_path('s2', TILE, 20, 'time', hot=True)}/zarr.json"
    (history / x_key).unlink()
    (history / time_meta).unlink()
    assert {k for k, _ in verify(history, progress=False).problems} == {x_key, time_meta}
    versions = committed_versions(open_store(history), "s2")

    assert main(["ingest", "--cube", str(history), "--repair", "--quiet", "--json"]) == 0
    done = json.loads(capsys.readouterr().out)
    assert {x_key, time_meta} <= set(done["coordinates"]) and done["version"] is None
    assert committed_versions(open_store(history), "s2") == versions
    assert verify(history, progress=False).ok
    grid = TileGrid.from_id(TILE).geobox(10)
    plain = xr.open_zarr(zarr_group(history, "r10m"), consolidated=False)
    np.testing.assert_allclose(plain.x.values, grid.coordinates["x"].values, rtol=0, atol=1e-6)


def _shorten(cube: Path, array: str, length: int) -> str:
    """Set the time length the ``zarr.json`` of ``array`` (a path in the cube) says to ``length``: as an ingest killed
    between its commit and the shapes it publishes after leaves it, or a ``zarr.json`` restored from an older backup.
    Its key."""
    key = f"{array}/zarr.json"
    meta = json.loads((cube / key).read_text())
    meta["shape"][0] = length
    (cube / key).write_text(json.dumps(meta))
    return key


def test_an_array_holding_fewer_dates_than_the_ledger_is_reported_and_repair_sets_its_length(history, capsys):
    """A band's or a per-date array's ``zarr.json`` with fewer dates than the latest version holds: a plain Zarr
    reader refuses the group ("conflicting sizes"), and verify said "sound" (cardcube's reads take the extents from
    the ledger). It names each, and `ingest --repair` without SOURCE sets their lengths."""
    state = read_version(open_store(history, read_only=True), "s2").tiles[TILE]
    assert len(state.cold) > 4 and state.hot_slots_used > 1
    before = every_read(history)
    band = _shorten(history, layout.array_path("s2", TILE, 10, "B04"), len(state.cold) - 4)
    dates = _shorten(history, layout.array_path("s2", TILE, 20, "time", hot=True), state.hot_slots_used - 1)
    with pytest.raises(ValueError, match="conflicting sizes for dimension 'time'"):
        xr.open_zarr(zarr_group(history, "r10m"), consolidated=False)
    problems = dict(verify(history, progress=False).problems)
    assert set(problems) == {band, dates}
    assert problems[band].startswith(f"damaged: its time length is {len(state.cold) - 4}, of the {len(state.cold)} "
                                     "date(s) the latest version holds: a plain Zarr reader")
    assert problems[dates].startswith(f"damaged: its length is {state.hot_slots_used - 1}, of the "
                                      f"{state.hot_slots_used} date(s) the latest version holds")
    after = every_read(history)
    assert after.keys() == before.keys()  # cardcube's reads: as before
    assert all(np.array_equal(a, before[v], equal_nan=True) for v, a in after.items())

    assert main(["ingest", "--cube", str(history), "--repair", "--quiet"]) == 0
    assert verify(history, progress=False).ok
    plain = xr.open_zarr(zarr_group(history, "r10m"), consolidated=False)
    assert plain.sizes["time"] == len(state.cold)
    ours = open_cube(history, bands=["B04"], decode=False, tiles=[TILE], chunks="window")
    held = [i for i, s in enumerate(ours.scene_id.values) if s in {a.scene_id for a in state.cold}]
    assert len(held) == len(state.cold)
    got = ours.B04.isel(time=held)
    row, col = np.searchsorted(-plain.y.values, -got.y.values[0]), np.searchsorted(plain.x.values, got.x.values[0])
    # the region's window of the whole tile's array (all of it is 4 GB of fill values at 10 m)
    window = zarr.open_array(f"{zarr_group(history, 'r10m')}/B04", mode="r")[
        :, row:row + got.sizes["y"], col:col + got.sizes["x"]]
    order = np.argsort([a.time for a in state.cold], kind="stable")
    np.testing.assert_array_equal(window[order], got.values)


def test_a_band_array_of_other_rows_and_columns_than_the_grid_is_reported_and_repair_sets_them(history):
    """A band's ``zarr.json`` giving other rows or columns than the tile grid (edited, restored from another cube): a
    plain Zarr reader refuses the group, and verify said "sound"; it names it, and `ingest --repair` sets them."""
    key = f"{layout.array_path('s2', TILE, 20, 'SCL', hot=True)}/zarr.json"
    meta = json.loads((history / key).read_text())
    rows = meta["shape"][1]
    meta["shape"][1] = rows // 2
    (history / key).write_text(json.dumps(meta))
    before = every_read(history)
    with pytest.raises(ValueError, match="conflicting sizes for dimension 'y'"):
        xr.open_zarr(zarr_group(history, "hot/r20m"), consolidated=False)
    problems = dict(verify(history, progress=False).problems)
    assert set(problems) == {key}
    assert problems[key].startswith(f"damaged: its shape in y and x is ({rows // 2}, {rows}), the tile grid's "
                                    f"({rows}, {rows}): a plain Zarr reader")

    assert main(["ingest", "--cube", str(history), "--repair", "--quiet"]) == 0
    assert verify(history, progress=False).ok
    assert xr.open_zarr(zarr_group(history, "hot/r20m"), consolidated=False).SCL.shape[1:] == (rows, rows)
    assert all(np.array_equal(a, before[v], equal_nan=True) for v, a in every_read(history).items())


def test_a_repair_without_source_names_what_needs_the_scenes_and_writes_what_needs_none(history, capsys):
    """A lost cold shard and a lost hot shard need their dates' scenes: named, with those scenes (exit 2, no
    version); the coordinate chunk lost beside them, which needs none, is written again all the same."""
    store = open_store(history, read_only=True)
    latest = read_version(store, "s2")
    cold = latest.tiles[TILE].cold[:4]  # block 0 of the tests' time=4
    slot = latest.tiles[TILE].hot[0]
    cold_key, hot_key = (next(p for p in sorted((history / folder).rglob("*")) if p.is_file()).relative_to(
        history).as_posix() for folder in (f"{layout.array_path('s2', TILE, 10, 'B04')}/c/0",
                                           f"{layout.array_path('s2', TILE, 20, 'SCL', hot=True)}/c/{slot.slot}"))
    y_key = f"{layout.array_path('s2', TILE, 20, 'y')}/c/0"
    for key in (cold_key, hot_key, y_key):
        (history / key).unlink()
    versions = committed_versions(store, "s2")

    assert main(["ingest", "--cube", str(history), "--repair", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "repair without a SOURCE: 2 lost or damaged object(s) the latest version reads need the scenes" in err
    assert f"{cold_key}: missing (the cold block's dates: {', '.join(a.scene_id for a in cold)})" in err
    assert f"{hot_key}: missing (the hot slot's dates: {slot.acquisition.scene_id})" in err
    assert "`cardcube ingest SOURCE --cube CUBE --repair`" in err
    assert "the coordinate and per-date arrays, which need no scene, were written again (1 object(s))" in err
    assert committed_versions(store, "s2") == versions
    assert {k for k, _ in verify(history, progress=False).problems} == {cold_key, hot_key}


def test_ingest_without_source_is_refused_unless_a_repair_of_a_cube(history, tmp_path):
    from cardcube.errors import InvalidRequestError

    with pytest.raises(InvalidRequestError, match=r"ingest needs a source of scenes \(SOURCE\): only a repair"):
        ingest(None, history, progress=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InvalidRequestError, match=r"no s2 cube at .* to repair"):
        ingest(None, empty, repair=True, progress=False)
    assert not any(empty.iterdir())


def test_an_ingest_of_new_dates_writes_the_damaged_coordinate_arrays_of_its_tiles_again(tiny_region, tmp_path):
    """A plain ingest committed its new dates on top of a lost per-date chunk and a lost ``x`` of their tile, which
    stayed lost (a plain reader of the tile without its eastings and the hot dates' scene ids, under a new version);
    an undecodable per-date chunk stopped the run with the codec's "Zstd decompression error", a lost tile group's
    ``zarr.json`` with zarr's GroupNotFoundError. They are written again first, from the ledger and the tile grid."""
    from cardcube.spec import ChunkLayout
    from tests.conftest import TEST_CHUNKS
    from tests.ingest.scene_edits import items_of, write_items

    features = items_of(tiny_region.items, "sentinel-2-l2a")
    cube = tmp_path / "cube"
    first = write_items(tiny_region.items, features[:6], "coordinates-first.json")
    ingest(first, cube, chunks=ChunkLayout.parse(TEST_CHUNKS), progress=False)
    x_key = f"{layout.array_path('s2', TILE, 10, 'x')}/c/0"
    hot_id = f"{layout.array_path('s2', TILE, 20, 'scene_id', hot=True)}/c/0"
    cover = f"{layout.array_path('s2', TILE, 10, 'cloud_cover')}/c/0"
    (cube / x_key).unlink()
    (cube / hot_id).unlink()
    (cube / cover).write_bytes(b"not a zstd stream")
    tile_group, r20m = (f"{layout.tile_zarr_path('s2', TILE)}/{g}zarr.json" for g in ("", "r20m/"))
    (cube / tile_group).unlink()  # the ingest stopped on zarr's GroupNotFoundError opening the tile
    (cube / r20m).write_text("{}")
    lost = {x_key, hot_id, cover, tile_group, r20m}
    assert {k for k, _ in verify(cube, progress=False).problems} == lost

    then = write_items(tiny_region.items, features[6:8], "coordinates-then.json")
    result = ingest(then, cube, progress=False)
    assert result.version == 2 and set(result.coordinates) == lost
    assert verify(cube, progress=False).ok
    state = read_version(open_store(cube, read_only=True), "s2").tiles[TILE]
    plain = xr.open_zarr(zarr_group(cube, "r10m"), consolidated=False)
    np.testing.assert_allclose(plain.x.values, TileGrid.from_id(TILE).geobox(10).coordinates["x"].values, rtol=0,
                               atol=1e-6)
    np.testing.assert_allclose(plain.cloud_cover.values, [a.cloud_cover for a in state.cold], rtol=1e-6)
    hot = xr.open_zarr(zarr_group(cube, "hot/r20m"), consolidated=False)
    assert all(str(hot.scene_id.values[h.slot]) == h.acquisition.scene_id for h in state.hot)


def test_the_groups_own_metadata_lost_or_other_is_reported_and_repair_writes_it_again(history, capsys):
    """A group's ``zarr.json`` lost (the tile's, the hot buffer's, a resolution group's): xarray.open_zarr(...,
    group="r10m") fails, and verify said "sound". Each is named; a repair without SOURCE writes it as ingest did."""
    keys = [f"{layout.tile_zarr_path('s2', TILE)}/{g}zarr.json" for g in ("", "hot/", "r10m/", "hot/r20m/")]
    sound = {k: (history / k).read_bytes() for k in keys}
    for k in keys[:3]:
        (history / k).unlink()
    doc = json.loads(sound[keys[3]])
    doc["attributes"]["spatial:transform"][2] += 10.0  # another grid's origin
    (history / keys[3]).write_text(json.dumps(doc))
    with pytest.raises(zarr.errors.GroupNotFoundError):
        xr.open_zarr(zarr_group(history, "r10m"), consolidated=False)
    found = dict(verify(history, progress=False).problems)
    assert set(found) == set(keys)
    assert found[keys[2]].startswith('missing: the group\'s metadata; a plain Zarr reader (xarray.open_zarr(..., '
                                     'group="r10m"), rioxarray) cannot open it')
    assert found[keys[3]].startswith("damaged: its attributes are not those ingest writes")
    assert main(["verify", "--cube", str(history), "--quiet"]) == 1
    assert "`cardcube ingest --cube CUBE --repair` writes them again" in capsys.readouterr().out

    done = ingest(None, history, repair=True, progress=False)
    assert sorted(done.coordinates) == sorted(keys) and done.version is None
    assert {k: (history / k).read_bytes() for k in keys} == sound
    assert verify(history, progress=False).ok
    plain = xr.open_zarr(zarr_group(history, "r10m"), consolidated=False)
    assert plain.attrs["spatial:shape"] == list(TileGrid.from_id(TILE).geobox(10).shape)


def test_a_resolution_group_registers_the_zarr_conventions_of_its_grid_attributes_and_one_written_before_is_sound(
        history):
    """The groups' proj:code and spatial:* attributes are those of the Zarr `proj:` and `spatial` conventions, which
    a reader of them takes only when registered in `zarr_conventions`, with the `spatial:dimensions` the spatial one
    requires (they had neither). A group written before, without them, stays sound to verify."""
    spatial_uuid, proj_uuid = "689b58e2-cf7b-45e0-9fff-9cfc0883d6b4", "f17cb550-5864-4468-aeb7-f3180cfb622f"
    for name in ("r10m", "r20m", "hot/r10m", "hot/r20m"):
        group = zarr.open_group(zarr_group(history, name), mode="r")
        attrs = group.attrs.asdict()
        assert {c["uuid"]: c["name"] for c in attrs["zarr_conventions"]} == {proj_uuid: "proj:",
                                                                             spatial_uuid: "spatial"}
        bands = [a for _, a in group.arrays() if a.ndim == 3]
        assert bands and all(list(a.metadata.dimension_names[1:]) == attrs["spatial:dimensions"] for a in bands)
        x, y = group["x"][:], group["y"][:]  # pixel centres: the transform's origin is half a pixel beyond
        res = float(x[1] - x[0])
        assert attrs["spatial:transform"] == [res, 0.0, x[0] - res / 2, 0.0, -res, y[0] + res / 2]
        assert attrs["spatial:shape"] == [len(y), len(x)] == list(bands[0].shape[1:])

    key = f"{layout.tile_zarr_path('s2', TILE)}/r10m/zarr.json"
    doc = json.loads((history / key).read_bytes())
    for name in ("zarr_conventions", "spatial:dimensions"):
        del doc["attributes"][name]
    (history / key).write_text(json.dumps(doc))
    assert verify(history, progress=False).ok
    doc["attributes"]["spatial:dimensions"] = ["x", "y"]  # half of them, and wrong: not what ingest writes
    (history / key).write_text(json.dumps(doc))
    problem = dict(verify(history, progress=False).problems)[key]
    assert problem.startswith("damaged: its attributes are not those ingest writes (nor an earlier cardcube's): "
                              "zarr_conventions missing ([{'schema_url': ")
    assert "...), spatial:dimensions ['x', 'y'] where ingest writes ['y', 'x']: the group's metadata" in problem


# the per-date arrays' attributes as cardcube wrote them before 2026-12-07, and as it writes them now: written out here,
# not taken from cube.coordinates, so a change there that forgets the cubes already written fails this test
LONG_NAMES = {"scene_id": "source scene identifier", "platform": "satellite platform",
              "relative_orbit": "relative orbit number", "orbit_state": "orbit direction",
              "cloud_cover": "scene cloud cover (percent)"}
CLOUD_COVER_BEFORE = {"long_name": "scene cloud cover (percent)"}


def _set_attributes(cube: Path, array_path: str, attributes: dict) -> str:
    """Give the array at ``array_path`` of ``cube`` the ``attributes`` in its ``zarr.json`` (as another cardcube wrote
    them, or a hand edit); its key."""
    key = f"{array_path}/zarr.json"
    doc = json.loads((cube / key).read_bytes())
    doc["attributes"] = attributes
    (cube / key).write_text(json.dumps(doc, indent=2))
    return key


def test_cloud_cover_has_cf_units_and_one_written_before_without_them_is_sound_and_left_as_it_is(history):
    """``cloud_cover`` says its CF units (UDUNITS' ``percent``, which cf-xarray and pint read too); verify compared
    the per-date arrays' attributes with the writer's alone, so a cube written before them would read as damaged and
    ``--repair`` would rewrite every tile's. An earlier cardcube's attributes are sound, and left as they are.
    ``relative_orbit`` keeps -1 for unknown and no ``_FillValue``: xarray reads it as the int16 it is."""
    for group in ("r10m", "r20m", "hot/r10m", "hot/r20m"):
        plain = xr.open_zarr(zarr_group(history, group), consolidated=False)
        assert {n: plain[n].attrs for n in LONG_NAMES} == {
            n: {"long_name": text} | ({"units": "percent"} if n == "cloud_cover" else {})
            for n, text in LONG_NAMES.items()}
        assert plain.relative_orbit.dtype == np.int16 and plain.cloud_cover.dtype == np.float32

    older = [_set_attributes(history, layout.array_path("s2", TILE, res, "cloud_cover", hot=hot), CLOUD_COVER_BEFORE)
             for res, hot in ((10, False), (20, True))]
    written = {key: (history / key).read_bytes() for key in older}
    assert verify(history, progress=False).ok
    done = ingest(None, history, repair=True, progress=False)
    assert done.version is None and not done.coordinates
    assert {key: (history / key).read_bytes() for key in older} == written  # not damage: not written again
    assert "units" not in xr.open_zarr(zarr_group(history, "r10m"), consolidated=False).cloud_cover.attrs


def test_per_date_attributes_of_no_cardcube_are_reported_with_what_differs_and_repair_writes_the_current(history):
    """An earlier cardcube's attributes are sound for the array it gave them to alone; others (a hand edit, another
    tool's) are named with what differs from the writer's, and ``--repair`` writes the writer's."""
    keys = [_set_attributes(history, layout.array_path("s2", TILE, 10, "cloud_cover"),
                            CLOUD_COVER_BEFORE | {"units": "%"}),
            _set_attributes(history, layout.array_path("s2", TILE, 20, "scene_id"), CLOUD_COVER_BEFORE),
            _set_attributes(history, layout.array_path("s2", TILE, 10, "relative_orbit", hot=True),
                            {"long_name": "relative orbit number", "_FillValue": -1})]
    found = dict(verify(history, progress=False).problems)
    assert found == {
        keys[0]: "damaged: its attributes are not those ingest writes (nor an earlier cardcube's): units '%' where "
                 "ingest writes 'percent'; a plain Zarr reader loses each date's cloud_cover",
        keys[1]: "damaged: its attributes are not those ingest writes: long_name 'scene cloud cover (percent)' where "
                 "ingest writes 'source scene identifier'; a plain Zarr reader loses each date's scene_id",
        keys[2]: "damaged: its attributes are not those ingest writes: _FillValue -1 not written by ingest; a plain "
                 "Zarr reader loses each date's relative_orbit"}

    done = ingest(None, history, repair=True, progress=False)
    assert set(keys) <= set(done.coordinates) and done.version is None
    assert verify(history, progress=False).ok
    assert zarr.open_array(history / layout.array_path("s2", TILE, 10, "cloud_cover"), mode="r").attrs.asdict() == {
        "long_name": "scene cloud cover (percent)", "units": "percent"}
    hot = xr.open_zarr(zarr_group(history, "hot/r10m"), consolidated=False)
    assert hot.relative_orbit.dtype == np.int16
