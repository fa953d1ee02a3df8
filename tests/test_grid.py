"""The Sentinel-2 tiling grid: every tile's origin, checked against products and the MGRS definition."""

import mgrs
import numpy as np
import pyproj
import pytest

from cardcube.grid import TileGrid, tile_epsg, tiles_for_bbox

# Upper-left corners read from real Sentinel-2 L2A products of these tiles (their geotransforms).
PRODUCT_ORIGINS = {
    "31UET": (499_980, 5_800_020), "31UEU": (499_980, 5_900_040), "31UFT": (600_000, 5_800_020),
    "31UFU": (600_000, 5_900_040), "31UFV": (600_000, 6_000_000), "31UGT": (699_960, 5_800_020),
    "31UGU": (699_960, 5_900_040), "31UGV": (699_960, 6_000_000),
}


@pytest.mark.parametrize(("tile", "origin"), PRODUCT_ORIGINS.items())
def test_origins_match_the_products(tile, origin):
    grid = TileGrid.from_id(tile)
    assert (grid.epsg, grid.ulx, grid.uly) == (32631, *origin)


def test_every_point_lies_in_the_tile_of_its_mgrs_square():
    """An independent reference: the MGRS library names the 100 km square holding a point; the Sentinel-2
    tile of that name covers the square (and 9.8 km more), so it must hold the point, in its own CRS.
    (The grid has tiles where Sentinel-2 observes: land, coasts and much of the sea, not all of it.)"""
    rng = np.random.default_rng(7)
    lat, lon = rng.uniform(-79.5, 83.5, 2000), rng.uniform(-180, 180, 2000)
    to_mgrs = mgrs.MGRS()
    known = set(TileGrid.known_ids())
    checked = 0
    for y, x in zip(lat, lon, strict=True):
        square = to_mgrs.toMGRS(y, x, MGRSPrecision=0)
        if square not in known:
            continue
        grid = TileGrid.from_id(square)
        east, north = pyproj.Transformer.from_crs(4326, grid.epsg, always_xy=True).transform(x, y)
        minx, miny, maxx, maxy = grid.bounds
        assert minx <= east <= maxx and miny <= north <= maxy, (square, y, x)
        checked += 1
    assert checked > 1500  # 1,881 of the 2,000 points: the grid covers land, coasts and much of the sea


def test_the_whole_grid_is_known():
    ids = TileGrid.known_ids()
    assert len(ids) > 56_000  # ESA's grid: about 57,000 tiles
    grids = [TileGrid.from_id(t) for t in ids[::97]]
    assert all(g.ulx % 20 == 0 and g.uly % 20 == 0 for g in grids)  # the shared 20 m lattice of a zone
    assert {g.epsg // 100 for g in grids} == {326, 327}


def test_tile_ids_are_read_as_written_in_products():
    assert TileGrid.from_id("T31UFU") == TileGrid.from_id("MGRS-31UFU") == TileGrid.from_id("31ufu")
    assert tile_epsg("33HVD") == 32733 and TileGrid.from_id("33HVD").crs == "EPSG:32733"  # south of the equator
    assert tile_epsg("32NNF") == 32632


@pytest.mark.parametrize("bad", ["31UZZ", "99XXX", "31IFU"])
def test_an_unknown_tile_is_a_clear_error(bad):
    with pytest.raises(ValueError, match="not a tile of the Sentinel-2 tiling grid"):
        TileGrid.from_id(bad)


def test_a_scene_off_the_tile_its_item_names_is_told_in_the_tiles_numbers_not_a_crs_dump():
    """A scene of 31UFU labelled 31UGU (a tile id slip in an item): the error gives both boxes plainly (it gave a
    BoundingBox repr holding the CRS's whole WKT, some 1,000 characters)."""
    from affine import Affine
    from odc.geo.geobox import GeoBox

    from cardcube.errors import SceneGridError

    scene = GeoBox((100, 100), Affine(10, 0, 680_000, 0, -10, 5_845_000), "EPSG:32631")
    with pytest.raises(SceneGridError) as err:
        TileGrid.from_id("31UGU").window(scene, scene_id="S")
    message = str(err.value)
    assert "extent (680000, 5844000, 681000, 5845000) reaches outside tile 31UGU (699960, 5790240, 809760, 5900040, " \
           "EPSG:32631)" in message
    assert "PROJCS" not in message and len(message) < 250


def test_tiles_for_bbox_finds_the_overlapping_neighbours():
    ufu = TileGrid.from_id("31UFU")
    corner = (ufu.ulx + 105_000, ufu.uly - 105_000)  # in the overlap of four tiles
    found = {t.tile_id for t in tiles_for_bbox((*corner, corner[0] + 10, corner[1] + 10), 32631)}
    assert found == {"31UFU", "31UGU", "31UFT", "31UGT"}
