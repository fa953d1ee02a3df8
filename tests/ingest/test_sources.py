"""Where a STAC item's relative asset hrefs point, for items read from a folder, S3 or HTTP."""

from __future__ import annotations

import json

import pystac
import pytest

from cardcube.errors import InvalidRequestError
from cardcube.grid import normalise_tile_id
from cardcube.spec import S2_L2A, ChunkLayout
from ingest.job import ingest
from ingest.sources import join_href, load_scenes, scene_from_item
from tests.conftest import TEST_CHUNKS
from tests.ingest.scene_edits import items_of, write_items

TEST_CHUNKS_LAYOUT = ChunkLayout.parse(TEST_CHUNKS)


@pytest.mark.parametrize(("base", "href", "want"), [
    ("/data/stac", "scenes/a/B04.tif", "/data/stac/scenes/a/B04.tif"),
    ("/data/stac", "../cogs/B04.tif", "/data/cogs/B04.tif"),
    ("s3://eodata/stac", "scenes/a/B04.tif", "s3://eodata/stac/scenes/a/B04.tif"),
    ("s3://eodata/stac/", "../cogs/B04.tif", "s3://eodata/cogs/B04.tif"),
    ("s3://eodata", "B04.tif", "s3://eodata/B04.tif"),
    ("https://example.org/stac/v1", "items/B04.tif", "https://example.org/stac/v1/items/B04.tif"),
])
def test_relative_hrefs_resolve_against_the_items_folder(base, href, want):
    assert join_href(base, href) == want


def _item(**props) -> pystac.Item:
    base = {"datetime": "2024-06-01T12:56:21+02:00", "grid:code": "MGRS-31UFU", "platform": "sentinel-2a",
            "sat:relative_orbit": 51}
    base.update(props)
    return pystac.Item.from_dict({
        "type": "Feature", "stac_version": "1.0.0", "id": "S2A_x", "collection": "sentinel-2-l2a",
        "geometry": None, "properties": base, "links": [], "assets": {"B04": {"href": "B04.tif"}}})


def test_item_metadata_as_providers_write_it():
    scene = scene_from_item(_item(), S2_L2A)
    assert scene.time == "2024-06-01T10:56:21Z" and scene.tile == "31UFU"  # a UTC offset is converted
    ranged = scene_from_item(_item(**{"datetime": None, "start_datetime": "2024-06-01T10:56:21Z",
                                      "end_datetime": "2024-06-01T10:56:40Z", "sat:relative_orbit": None}),
                             S2_L2A)
    assert ranged.time == "2024-06-01T10:56:21Z" and ranged.relative_orbit == -1
    hawaii = _item(**{"grid:code": None, "mgrs:utm_zone": 4, "mgrs:latitude_band": "Q", "mgrs:grid_square": "FJ"})
    assert scene_from_item(hawaii, S2_L2A).tile == "04QFJ"  # the MGRS extension's zone is an integer


@pytest.mark.parametrize(("text", "want"), [("T31UFU", "31UFU"), ("MGRS-4QFJ", "04QFJ"), ("t4qfj", "04QFJ"),
                                            ("31ufu", "31UFU"), ("nonsense", "NONSENSE")])
def test_tile_ids_are_normalised(text, want):
    assert normalise_tile_id(text) == want


def _unknown_layout(feature: dict) -> dict:
    """``feature`` with its files under keys no rule makes a band of (a provider cardcube does not know)."""
    item = json.loads(json.dumps(feature))
    item["assets"] = {f"sr_{k.lower()}_img": {k2: v for k2, v in a.items() if k2 != "eo:bands"}
                      for k, a in item["assets"].items()}
    item["assets"]["preview"] = {"href": "preview.png", "type": "image/png", "roles": ["overview"]}
    return item


def test_items_with_no_band_are_a_clear_error_naming_the_item_and_its_assets(tiny_region, tmp_path):
    features = items_of(tiny_region.items, "sentinel-2-l2a")[:3]
    unknown = write_items(tiny_region.items, [_unknown_layout(f) for f in features], "unknown.json")
    with pytest.raises(InvalidRequestError, match="no asset is a band of the s2 cube") as info:
        load_scenes(unknown, S2_L2A)
    message = str(info.value)
    assert features[0]["id"] in message and "sr_b04_img, sr_b05_img" in message and "preview" in message
    assert "nor in the other 2 sentinel-2-l2a items" in message
    with pytest.raises(InvalidRequestError, match=features[0]["id"]):  # before the cube is touched
        ingest(unknown, tmp_path / "cube", chunks=TEST_CHUNKS_LAYOUT, progress=False)
    assert not (tmp_path / "cube" / "s2").exists()


def test_one_item_without_bands_among_good_ones_is_rejected_with_its_assets(tiny_region, tmp_path):
    good, odd = items_of(tiny_region.items, "sentinel-2-l2a")[:2]
    mixed = write_items(tiny_region.items, [good, _unknown_layout(odd)], "mixed.json")
    result = ingest(mixed, tmp_path / "cube", chunks=TEST_CHUNKS_LAYOUT, progress=False, catalog=False)
    assert result.added == (good["id"],)
    (rejection,) = result.rejected
    assert rejection.scene_id == odd["id"] and rejection.kind == "SceneContentError"
    assert "no asset is a band of the s2 cube" in rejection.reason and "sr_scl_img" in rejection.reason
