"""A region across the 31UFU/31UGU edge: parcels in both tiles, parcels crossing the tile edge."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
from shapely.geometry import box

from cardcube.grid import TileGrid
from cardcube.spec import ChunkLayout
from cube.dataset import open_cube
from cube.timeseries import parcel_timeseries
from ingest.job import ingest
from tests.conftest import TEST_CHUNKS
from tests.cube.reference import reference_stats
from tests.ingest.scene_edits import items_of


@pytest.fixture(scope="module")
def straddle_cube(tiny_straddle_region, tmp_path_factory):
    root = tmp_path_factory.mktemp("straddle-cube")
    ingest(tiny_straddle_region.items, root, collection="s2", chunks=ChunkLayout.parse(TEST_CHUNKS), progress=False)
    return root


def _split(tiny_straddle_region):
    parcels = gpd.read_parquet(tiny_straddle_region.parcels)
    ufu = box(*TileGrid.from_id("31UFU").geobox(10).boundingbox)
    crossing = parcels[parcels.intersects(ufu.exterior) & (parcels.area > 5000)]
    in_both = parcels[parcels.within(ufu) & (parcels.area > 5000)]
    return parcels, crossing, in_both


def test_a_parcel_crossing_the_tile_edge_is_read_whole_from_the_other_tile(straddle_cube, tiny_straddle_region):
    _, crossing, _ = _split(tiny_straddle_region)
    assert len(crossing)
    parcel = crossing.iloc[[0]]
    frame = parcel_timeseries(straddle_cube, parcel, bands=["B08"], mask=None)
    ugu = {f["properties"]["datetime"][:19]: f["id"] for f in items_of(tiny_straddle_region.items, "sentinel-2-l2a")
           if f["properties"]["grid:code"].endswith("31UGU")}
    for row in frame.itertuples():
        ref = reference_stats(tiny_straddle_region.items, "s2", ugu[row.time.isoformat()[:19]],
                              parcel.geometry.iloc[0], "B08")
        assert row.count == ref["count"]
        if ref["count"]:
            assert row.mean == pytest.approx(ref["mean"], rel=1e-9)


def test_parcels_in_the_overlap_read_the_same_from_either_tile(straddle_cube, tiny_straddle_region):
    _, _, in_both = _split(tiny_straddle_region)
    some = in_both.iloc[:3]
    both = [open_cube(straddle_cube, tiles=[t], bbox=some.total_bounds, bands=["B04"]).compute()
            for t in ("31UFU", "31UGU")]
    np.testing.assert_array_equal(both[0]["B04"].values, both[1]["B04"].values)


def test_a_query_across_the_edge_is_a_mosaic(straddle_cube, tiny_straddle_region):
    edge = TileGrid.from_id("31UFU").geobox(10).boundingbox.right
    _, miny, _, maxy = tiny_straddle_region.bbox
    ds = open_cube(straddle_cube, bbox=(edge - 200, miny, edge + 200, maxy), bands=["B04"])
    assert set(ds.attrs["cardcube:tiles"]) == {"31UGU"}  # 31UGU holds the whole box
    west = TileGrid.from_id("31UGU").ulx - 1000  # west of 31UGU, and east of 31UFU: no tile holds it all
    mosaic = open_cube(straddle_cube, bbox=(west, miny, edge + 200, maxy), bands=["B04"])
    assert set(mosaic.attrs["cardcube:tiles"]) == {"31UFU", "31UGU"}
    assert mosaic.sizes["x"] == round((edge + 200 - west) / 10)
    inside = mosaic["B04"].sel(x=slice(edge - 200, edge + 200)).values
    np.testing.assert_array_equal(inside, ds["B04"].values)
