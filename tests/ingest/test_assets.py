"""Which asset of a provider's item is which cube band: Earth Search's common names, CDSE's band and resolution,
Planetary Computer's band names; the COG before its JPEG 2000 twin, the native resolution before another."""

from __future__ import annotations

import pystac
import pytest

from cardcube.spec import S1_BACKSCATTER, S2_L2A
from ingest.assets import band_of_asset, choose_assets, scaling_of
from ingest.sources import scene_from_item
from ingest.values import value_map
from tests.ingest.providers import COG, JP2, earth_search_item

ES_RED = {"type": COG, "gsd": 10, "roles": ["data", "reflectance"],
          "eo:bands": [{"name": "red", "common_name": "red", "description": "Red (band 4)"}],
          "raster:bands": [{"nodata": 0, "data_type": "uint16", "spatial_resolution": 10, "scale": 0.0001,
                            "offset": -0.1}]}


@pytest.mark.parametrize(("key", "asset", "band"), [
    # Planetary Computer and cardcube synth: the key is the band
    ("B04", {"type": COG}, "B04"), ("B8A", {}, "B8A"), ("SCL", {}, "SCL"),
    # Earth Search v1: common names; rededge1..3 are keys and eo:bands names, their common name is "rededge"
    ("red", ES_RED, "B04"), ("nir", {}, "B08"), ("nir08", {}, "B8A"), ("swir16", {}, "B11"), ("swir22", {}, "B12"),
    ("rededge2", {"eo:bands": [{"name": "rededge2", "common_name": "rededge"}]}, "B06"), ("scl", {}, "SCL"),
    ("red-jp2", {**ES_RED, "type": JP2}, "B04"), ("scl-jp2", {"type": JP2}, "SCL"),
    # CDSE: band and resolution; STAC 1.1 bands with eo:common_name
    ("B04_10m", {"type": JP2, "bands": [{"name": "B04", "eo:common_name": "red"}]}, "B04"),
    ("B04_60m", {"type": JP2}, "B04"), ("SCL_20m", {"type": JP2, "bands": [{"name": "SCL"}]}, "SCL"),
    # another key, found by its one band's name or common name
    ("band-8a", {"eo:bands": [{"name": "B8A"}]}, "B8A"), ("sr", {"bands": [{"name": "x", "eo:common_name": "red"}]},
                                                           "B04"),
    # no band of the cube
    ("visual", {"type": COG, "eo:bands": [{"name": n, "common_name": n} for n in ("red", "green", "blue")]}, None),
    ("TCI_10m", {"bands": [{"name": "B04"}, {"name": "B03"}, {"name": "B02"}]}, None),
    ("aot", {"raster:bands": [{"scale": 0.001}]}, None), ("AOT_10m", {}, None), ("WVP_20m", {}, None),
    ("thumbnail", {"type": "image/jpeg", "roles": ["thumbnail"]}, None), ("granule_metadata", {}, None),
    ("coastal", {}, None), ("nir09", {}, None), ("B01_60m", {}, None),  # B01 and B09 are not in the cube
    ("re", {"eo:bands": [{"name": "re", "common_name": "rededge"}]}, None),  # which red edge: not said
    ("vv", {}, None),
])
def test_each_providers_asset_names_its_band(key, asset, band):
    assert band_of_asset(key, asset, S2_L2A) == band


def test_backscatter_assets_by_polarisation():
    assert band_of_asset("vv", {"type": COG, "roles": ["data"]}, S1_BACKSCATTER) == "VV"
    assert band_of_asset("VH", {}, S1_BACKSCATTER) == "VH"
    assert band_of_asset("red", ES_RED, S1_BACKSCATTER) is None


def test_the_cog_wins_over_its_jpeg_2000_twin_whatever_the_order():
    jp2 = {**ES_RED, "type": JP2}
    assert choose_assets({"red-jp2": jp2, "red": ES_RED}, S2_L2A) == {"B04": "red"}
    # by the key or the file name alone, too
    assert choose_assets({"red-jp2": {**ES_RED}, "red": ES_RED}, S2_L2A) == {"B04": "red"}
    assert choose_assets({"a": {"href": "x/B04.jp2", "eo:bands": [{"name": "B04"}]},
                          "b": {"href": "x/B04.tif", "eo:bands": [{"name": "B04"}]}}, S2_L2A) == {"B04": "b"}
    # the media type's parameters in any order, case and spacing; STAC 1.0's older COG type
    assert choose_assets({"red": {"type": "image/TIFF;profile=cloud-optimized; application=geotiff"},
                          "B04": {"type": "image/tiff"}}, S2_L2A) == {"B04": "red"}
    assert choose_assets({"red": {"type": "image/vnd.stac.geotiff; cloud-optimized=true"},
                          "B04": {"type": "image/png"}}, S2_L2A) == {"B04": "red"}
    # alike in everything else, the key that is the band's own name
    assert choose_assets({"red": ES_RED, "B04": {**ES_RED}}, S2_L2A) == {"B04": "B04"}
    # the native resolution before the format: ingest refuses any other resolution
    coarse_cog = {**ES_RED, "gsd": 20, "raster:bands": [{"spatial_resolution": 20}]}
    assert choose_assets({"B04_10m": {"type": JP2}, "red": coarse_cog}, S2_L2A) == {"B04": "B04_10m"}


def test_the_native_resolution_then_a_finer_one():
    cdse = {f"{b}_{r}m": {"type": JP2} for b in ("B04", "B05", "SCL") for r in (10, 20, 60)
            if not (b != "B04" and r == 10)}
    assert choose_assets(cdse, S2_L2A) == {"B04": "B04_10m", "B05": "B05_20m", "SCL": "SCL_20m"}
    assert choose_assets({"B05_60m": {}, "B05_10m": {}}, S2_L2A) == {"B05": "B05_10m"}
    assert choose_assets({"B05_60m": {}}, S2_L2A) == {"B05": "B05_60m"}  # checking the scene refuses its pixels
    by_metadata = {"a": {"gsd": 60, "bands": [{"name": "B11"}]}, "b": {"gsd": 20, "bands": [{"name": "B11"}]}}
    assert choose_assets(by_metadata, S2_L2A) == {"B11": "b"}


def test_scale_and_offset_as_stac_1_0_and_1_1_write_them():
    assert scaling_of(ES_RED) == (0.0001, -0.1)
    assert scaling_of({"raster:scale": 0.0001, "raster:offset": -0.1, "data_type": "uint16"}) == (0.0001, -0.1)
    assert scaling_of({"bands": [{"name": "B04", "raster:scale": 0.0001, "raster:offset": 0.0}]}) == (0.0001, 0.0)
    assert scaling_of({"raster:bands": [{"nodata": 0, "data_type": "uint8"}]}) is None


def test_an_earth_search_item_is_keyed_and_scaled_by_cube_band(tiny_region):
    from tests.ingest.scene_edits import items_of

    feature = items_of(tiny_region.items, "sentinel-2-l2a")[0]
    old = earth_search_item(feature, offset=0.0)  # an item of a baseline without the offset
    scene = scene_from_item(pystac.Item.from_dict(old), S2_L2A, base="/region")
    assert set(scene.assets) == set(S2_L2A.band_names)
    assert scene.assets["B04"] == f"/region/{feature['assets']['B04']['href']}"  # the COG, not red-jp2
    assert scene.scaling["B04"] == (0.0001, 0.0) and "SCL" not in scene.scaling
    assert value_map(scene, S2_L2A.band("B04"), 0).shift == 1000  # so the cube's offset is found for B04
    assert "red-jp2" in scene.other_assets and "visual" in scene.other_assets and "red" not in scene.other_assets


def test_the_nodata_an_asset_says_is_read_in_each_form():
    """Off the raster extension's schema, a number written as text ("-9999") was ignored without a word, and
    -9999 went in as data where the file had no nodata tag."""
    import math

    from ingest.assets import nodata_of

    assert nodata_of({"raster:bands": [{"nodata": -9999}]}) == -9999.0
    assert nodata_of({"raster:bands": [{"nodata": "-9999"}]}) == -9999.0
    assert math.isnan(nodata_of({"raster:bands": [{"nodata": "nan"}]}))
    assert nodata_of({"raster:bands": [{"nodata": "-inf"}]}) == -math.inf == nodata_of({"nodata": "-Infinity"})
    assert nodata_of({"bands": [{"nodata": 0}]}) == 0.0 and nodata_of({"nodata": 0}) == 0.0
    assert nodata_of({"raster:bands": [{"nodata": "none"}]}) is None and nodata_of({"nodata": True}) is None
    assert nodata_of({"raster:bands": [{}]}) is None and nodata_of({}) is None
