"""Where a STAC item's relative asset hrefs point, for items read from a folder, S3 or HTTP."""

from __future__ import annotations

import pystac
import pytest

from cardcube.grid import normalise_tile_id
from ingest.sources import join_href, scene_from_item


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
    scene = scene_from_item(_item())
    assert scene.time == "2024-06-01T10:56:21Z" and scene.tile == "31UFU"  # a UTC offset is converted
    ranged = scene_from_item(_item(**{"datetime": None, "start_datetime": "2024-06-01T10:56:21Z",
                                      "end_datetime": "2024-06-01T10:56:40Z", "sat:relative_orbit": None}))
    assert ranged.time == "2024-06-01T10:56:21Z" and ranged.relative_orbit == -1
    hawaii = _item(**{"grid:code": None, "mgrs:utm_zone": 4, "mgrs:latitude_band": "Q", "mgrs:grid_square": "FJ"})
    assert scene_from_item(hawaii).tile == "04QFJ"  # the MGRS extension's zone is an integer


@pytest.mark.parametrize(("text", "want"), [("T31UFU", "31UFU"), ("MGRS-4QFJ", "04QFJ"), ("t4qfj", "04QFJ"),
                                            ("31ufu", "31UFU"), ("nonsense", "NONSENSE")])
def test_tile_ids_are_normalised(text, want):
    assert normalise_tile_id(text) == want
