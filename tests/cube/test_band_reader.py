"""BandReader (extraction's dask-free reads) against open_cube on the same cube: a late scene in the hot
buffer, runs of dates across the cold/hot boundary, 10 m and 20 m bands, a time filter."""

from __future__ import annotations

import numpy as np
import pytest

from cardcube.grid import TileGrid
from cardcube.spec import ChunkLayout
from cardcube.storage import open_store
from catalog import find_tiles
from cube.band_reader import BandReader
from cube.dataset import open_cube
from cube.ledger import read_version
from ingest.job import ingest
from tests.ingest.scene_edits import items_of, write_items

CHUNKS = ChunkLayout(time=4, space=64, shard_space=256)


@pytest.fixture(scope="module")
def late_cube(tiny_region, tmp_path_factory):
    """The tiny region's S2 scenes with the third date held back and ingested last: it lands in the hot
    buffer although it is older than the cold dates, so the Dataset's time order is not the stored one."""
    root = tmp_path_factory.mktemp("late-cube")
    features = items_of(tiny_region.items, "sentinel-2-l2a")
    late = features[2]
    ingest(write_items(tiny_region.items, [f for f in features if f is not late], "early.json"), root, chunks=CHUNKS,
           progress=False)
    ingest(write_items(tiny_region.items, [late], "late.json"), root, chunks=CHUNKS, progress=False)
    return root


@pytest.mark.parametrize("band", ["B04", "B11", "SCL"])
@pytest.mark.parametrize("time", [None, ("2024-05-01", "2024-08-31")])
def test_same_values_and_dates_as_open_cube(late_cube, tiny_region, band: str, time) -> None:
    store = open_store(late_cube, read_only=True)
    version = read_version(store, "s2")
    spec = version.spec.band(band)
    tile = sorted(version.tiles)[0]
    state = version.tiles[tile]
    assert state.hot and state.hot[0].acquisition.datetime64 < state.cold[-1].datetime64  # really out of order
    ds = open_cube(late_cube, "s2", tiles=[tile], bands=[band], decode=False, resolution=spec.resolution,
                   bbox=tiny_region.bbox, time=time)
    grid, a = TileGrid.from_id(tile), ds.rio.transform()
    r0, c0 = round((grid.uly - a.f) / spec.resolution), round((a.c - grid.ulx) / spec.resolution)
    rows, cols = slice(r0, r0 + ds.sizes["y"]), slice(c0, c0 + ds.sizes["x"])
    reader = BandReader.open(store, version, tile, {band: (rows, cols)}, time=time)[band]
    expected = ds[band].values
    assert reader.shape == expected.shape
    np.testing.assert_array_equal(reader.coords["time"], ds["time"].values)
    n = expected.shape[0]
    for dates in (slice(0, n), slice(1, min(n, 7)), slice(n - 1, n), slice(n // 2, n)):
        np.testing.assert_array_equal(reader.read(dates), expected[dates], err_msg=str(dates))
    assert reader.attrs == {k: v for k, v in ds[band].attrs.items() if k in reader.attrs}


def test_bands_opened_together_read_as_each_alone(late_cube) -> None:
    """One open for a unit's bands (10 m, 20 m, SCL): one time order for all, values as each band alone."""
    store = open_store(late_cube, read_only=True)
    version = read_version(store, "s2")
    tile = sorted(version.tiles)[0]
    windows = {"B04": (slice(40, 104), slice(30, 90)), "B11": (slice(20, 52), slice(15, 45)),
               "SCL": (slice(20, 52), slice(15, 45))}
    together = BandReader.open(store, version, tile, windows, time=("2024-05-01", "2024-08-31"))
    assert list(together) == list(windows)
    for name, window in windows.items():
        alone = BandReader.open(store, version, tile, {name: window}, time=("2024-05-01", "2024-08-31"))[name]
        rows, cols = window
        assert together[name].shape == alone.shape
        assert together[name].shape[1:] == (rows.stop - rows.start, cols.stop - cols.start)
        np.testing.assert_array_equal(together[name].read(slice(0, alone.shape[0])), alone.read(slice(None)))
        np.testing.assert_array_equal(together[name].coords["time"], alone.coords["time"])


@pytest.mark.parametrize(("time", "lo", "hi"), [
    ("2024-05", "2024-05-01", "2024-06-01"),  # a month: May, not "from May on"
    ("2024-05/2024-06", "2024-05-01", "2024-07-01"),
    ("../2024-05-20", None, "2024-05-21"),  # an end date includes its day
    (("2024-06-10", None), "2024-06-10", None),
])
def test_a_time_range_selects_the_same_dates_everywhere(late_cube, time, lo, hi) -> None:
    """open_cube, the band reader and the catalog router read a time range one way (the router's way)."""
    store = open_store(late_cube, read_only=True)
    version = read_version(store, "s2")
    tile = sorted(version.tiles)[0]
    everything = open_cube(late_cube, "s2", bands=["SCL"]).time.values
    keep = np.ones(everything.size, bool)
    if lo is not None:
        keep &= everything >= np.datetime64(lo)
    if hi is not None:
        keep &= everything < np.datetime64(hi)
    assert 0 < keep.sum() < everything.size  # the range cuts the season
    ds = open_cube(late_cube, "s2", bands=["SCL"], time=time)
    np.testing.assert_array_equal(ds.time.values, everything[keep])
    reader = BandReader.open(store, version, tile, {"SCL": (slice(0, 8), slice(0, 8))}, time=time)["SCL"]
    np.testing.assert_array_equal(reader.coords["time"], everything[keep])
    assert [r.tile for r in find_tiles(late_cube, "s2", time=time)] == [tile]
