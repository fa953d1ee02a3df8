"""The written COGs: valid, on the MGRS tile lattice, consistent across bands and resolutions."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from odc.geo.geobox import GeoBox
from rio_cogeo.cogeo import cog_validate

from cardcube.grid import TileGrid
from cardcube.spec import S1_BACKSCATTER, S2_L2A
from tests.synth.readers import load_items


def _sample(items: list[dict], collection: str, k: int = 3) -> list[dict]:
    chosen = [i for i in items if i["collection"] == collection]
    return chosen[:: max(1, len(chosen) // k)][:k]


@pytest.mark.parametrize("collection", ["sentinel-2-l2a", "sentinel-1-card-bs"])
def test_cogs_valid_and_aligned(tiny_straddle_region, collection):
    spec = S2_L2A if collection == "sentinel-2-l2a" else S1_BACKSCATTER
    items = load_items(tiny_straddle_region)
    for item in _sample(items, collection):
        tile = TileGrid.from_id(item["properties"]["grid:code"])
        grids = {}
        for band in spec.bands:
            path = tiny_straddle_region.out_dir / item["assets"][band.name]["href"]
            valid, errors, _ = cog_validate(str(path), quiet=True)
            assert valid, (path.name, errors)
            with rasterio.open(path) as ds:
                assert ds.crs.to_epsg() == tile.epsg
                assert ds.dtypes[0] == band.dtype
                assert ds.res == (band.resolution, band.resolution)
                nodata = ds.nodata
                assert (np.isnan(nodata) and np.isnan(band.nodata)) or nodata == band.nodata
                gb = GeoBox((ds.height, ds.width), ds.transform, ds.crs)
            tile.window(gb, scene_id=item["id"])  # raises unless on the tile lattice
            assert item["assets"][band.name]["proj:shape"] == [gb.height, gb.width]
            grids[band.resolution] = gb
        if 20 in grids:  # the 20 m grid is the 10 m grid coarsened by 2
            assert grids[10].zoom_out(2) == grids[20]
            assert tuple(grids[10].boundingbox) == tuple(grids[20].boundingbox)


def test_scene_names_follow_products(tiny_region):
    items = load_items(tiny_region)
    for item in items:
        tile = item["properties"]["grid:code"].removeprefix("MGRS-")
        if item["collection"] == "sentinel-2-l2a":
            assert item["id"].startswith(("S2A_MSIL2A_", "S2B_MSIL2A_")) and f"_T{tile}_" in item["id"]
            href = item["assets"]["B02"]["href"]
            assert href.startswith(f"scenes/sentinel-2-l2a/{item['id']}/T{tile}_") and href.endswith("_B02_10m.tif")
            assert item["assets"]["SCL"]["href"].endswith("_SCL_20m.tif")
            hour = int(item["properties"]["datetime"][11:13])
            assert hour == 10
        else:
            assert item["id"].endswith(f"_T{tile}") and "_IW_CARD_BS_" in item["id"]
            assert item["assets"]["VH"]["href"] == f"scenes/sentinel-1-card-bs/{item['id']}/{item['id']}_VH.tif"


def test_straddle_tiles_identical_in_overlap(tiny_straddle_region):
    items = load_items(tiny_straddle_region)
    by_date: dict[str, dict[str, dict]] = {}
    for item in items:
        by_date.setdefault(item["properties"]["datetime"], {})[item["properties"]["grid:code"]] = item
    pairs = [d for d in by_date.values() if len(d) == 2]
    assert pairs, "no acquisition has scenes in both tiles"
    compared = 0
    s2_pairs = [p for p in pairs if p["MGRS-31UFU"]["collection"] == "sentinel-2-l2a"]
    s1_pairs = [p for p in pairs if p["MGRS-31UFU"]["collection"] == "sentinel-1-card-bs"]
    assert s2_pairs and s1_pairs
    for pair in s2_pairs[:2] + s1_pairs[:2]:
        ufu, ugu = pair["MGRS-31UFU"], pair["MGRS-31UGU"]
        for band in ufu["assets"]:
            with rasterio.open(tiny_straddle_region.out_dir / ufu["assets"][band]["href"]) as a, \
                 rasterio.open(tiny_straddle_region.out_dir / ugu["assets"][band]["href"]) as b:
                # the window of tile UGU's scene that covers tile UFU's scene, on the shared lattice
                col = round((a.transform.c - b.transform.c) / a.res[0])
                row = round((b.transform.f - a.transform.f) / a.res[0])
                assert col >= 0 and row >= 0 and a.width < b.width
                va = a.read(1)
                vb = b.read(1)[row:row + a.height, col:col + a.width]
                np.testing.assert_array_equal(va, vb)
                compared += 1
    assert compared == 2 * len(s2_pairs[:2][0]["MGRS-31UFU"]["assets"]) + 4


def test_partial_swath_has_slanted_nodata_edge(tiny_region):
    items = [i for i in load_items(tiny_region) if i["collection"] == "sentinel-2-l2a"]
    partial = 0
    for item in items:
        with rasterio.open(tiny_region.out_dir / item["assets"]["B04"]["href"]) as ds:
            nod = ds.read(1) == 0
        if nod.any():
            partial += 1
            first_valid = (~nod).argmax(axis=1)  # per row: first valid column from the west
            assert first_valid[0] != first_valid[-1], "swath edge should be slanted"
            assert nod.mean() < 0.6
    assert 0 < partial < len(items)


def test_20m_bands_consistent_with_10m(tiny_region):
    items = [i for i in load_items(tiny_region) if i["collection"] == "sentinel-2-l2a"]
    for item in items[:: max(1, len(items) // 4)]:
        with rasterio.open(tiny_region.out_dir / item["assets"]["B08"]["href"]) as a, \
             rasterio.open(tiny_region.out_dir / item["assets"]["B8A"]["href"]) as b:
            nir10, nir20 = a.read(1).astype(float), b.read(1).astype(float)
        coarse = nir10.reshape(nir20.shape[0], 2, nir20.shape[1], 2).mean(axis=(1, 3))
        ok = (nir20 > 0) & (coarse > 0)
        assert np.corrcoef(coarse[ok], nir20[ok])[0, 1] > 0.95
        assert np.array_equal(nir20 == 0, nir10[::2, ::2] == 0)  # same nodata footprint
