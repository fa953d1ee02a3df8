"""items.json: a STAC ItemCollection that validates offline against the core and extension schemas."""

from __future__ import annotations

import copy
import json

import pystac
import pytest
from pystac.validation import JsonSchemaSTACValidator
from pystac.validation.stac_validator import STACValidationError

from cardcube.spec import S1_BACKSCATTER, S2_L2A
from catalog.validate import SCHEMAS  # the extensions' schemas shipped with the package
from tests.synth.readers import load_items

# sar v1.0.0 (what pystac writes) has no offline copy; v1.1.0 only relaxed it (product_type optional).
_SUBSTITUTE = {"sar/v1.0.0": "sar/v1.1.0"}


class OfflineValidator(JsonSchemaSTACValidator):
    """pystac's validator with extension schemas read from the offline copies; records what it skipped."""

    def __init__(self) -> None:
        super().__init__()
        self.skipped: set[str] = set()
        self.checked: set[str] = set()

    def _local(self, uri: str) -> dict | None:
        key = uri.removeprefix("https://stac-extensions.github.io/").removesuffix("/schema.json")
        path = SCHEMAS / _SUBSTITUTE.get(key, key) / "schema.json"
        return json.loads(path.read_text()) if path.exists() else None

    def validate_extension(self, stac_dict, stac_object_type, stac_version, extension_id, href=None):
        schema = self._local(extension_id)
        if schema is None:
            self.skipped.add(extension_id)
            return None
        uri = schema["$id"].rstrip("#")
        d = dict(stac_dict)
        d["stac_extensions"] = [uri if e == extension_id else e for e in d["stac_extensions"]]
        self.schema_cache[uri] = schema
        self.checked.add(extension_id)
        return self._validate_from_uri(d, stac_object_type, uri, href=href)


@pytest.fixture(scope="module")
def collection(tiny_straddle_region) -> pystac.ItemCollection:
    return pystac.ItemCollection.from_file(str(tiny_straddle_region.items))


def test_items_validate(collection):
    validator = OfflineValidator()
    for item in collection:
        item.validate(validator=validator)
    checked = {u.split("/")[3] for u in validator.checked}
    assert {"eo", "projection", "raster", "sat", "sar"} <= checked
    assert {u.split("/")[3] for u in validator.skipped} <= {"grid", "mgrs"}


def test_invalid_item_is_caught(collection):
    d = copy.deepcopy(collection.items[0].to_dict(transform_hrefs=False))
    d["properties"]["proj:code"] = 32631  # must be a string
    item = pystac.Item.from_dict(d)
    with pytest.raises(STACValidationError):
        item.validate(validator=OfflineValidator())


def test_one_item_per_scene_with_relative_assets(tiny_straddle_region, collection):
    items = list(collection)
    assert len(items) == tiny_straddle_region.n_s2_scenes + tiny_straddle_region.n_s1_scenes
    assert len({i.id for i in items}) == len(items)
    raw = load_items(tiny_straddle_region)
    for item, d in zip(items, raw, strict=True):
        spec = S2_L2A if item.collection_id == S2_L2A.source_collection else S1_BACKSCATTER
        assert set(item.assets) == set(spec.band_names)
        props = item.properties
        assert props["proj:code"] == "EPSG:32631"
        assert props["grid:code"] in ("MGRS-31UFU", "MGRS-31UGU")
        assert props["mgrs:utm_zone"] == 31 and props["mgrs:latitude_band"] == "U"
        assert props["sat:orbit_state"] in ("ascending", "descending")
        lon0, lat0, lon1, lat1 = item.bbox
        assert 4.5 < lon0 < lon1 < 7.5 and 52 < lat0 < lat1 < 53.5
        for key, asset in d["assets"].items():
            assert not asset["href"].startswith(("/", "file:")), asset["href"]
            assert (tiny_straddle_region.out_dir / asset["href"]).exists()
            assert asset["type"] == pystac.MediaType.COG
            assert asset["roles"] == ["data"]
            rb = asset["raster:bands"][0]
            band = spec.band(key)
            assert rb["data_type"] == band.dtype and rb["spatial_resolution"] == band.resolution
        if spec is S2_L2A:
            assert 0 <= props["eo:cloud_cover"] <= 100
            assert d["assets"]["B04"]["raster:bands"][0]["offset"] == pytest.approx(-0.1)
            assert d["assets"]["B04"]["eo:bands"][0]["common_name"] == "red"
        else:
            assert props["sar:instrument_mode"] == "IW" and props["sar:frequency_band"] == "C"
            assert props["sar:polarizations"] == ["VV", "VH"]
            assert d["assets"]["VV"]["raster:bands"][0]["nodata"] == "nan"
    hours = {i.datetime.hour for i in items if i.collection_id == S1_BACKSCATTER.source_collection}
    assert hours == {5, 17}
