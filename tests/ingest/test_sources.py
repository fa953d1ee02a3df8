"""Where a STAC item's relative asset hrefs point, for items read from a folder, S3 or HTTP."""

from __future__ import annotations

import pytest

from ingest.sources import join_href


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
