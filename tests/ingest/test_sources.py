"""Where a STAC item's relative asset hrefs point, for items read from a folder, S3 or HTTP."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pystac
import pytest

from cardcube.cli import main
from cardcube.errors import InvalidRequestError
from cardcube.grid import normalise_tile_id
from cardcube.spec import S1_BACKSCATTER, S2_L2A, ChunkLayout
from cardcube.storage import open_store
from catalog.build import build_cube_collection
from cube.dataset import open_cube
from cube.ledger import read_version
from ingest.job import ingest
from ingest.sources import join_href, load_scenes, scene_from_item
from tests.conftest import TEST_CHUNKS
from tests.ingest.providers import cdse_item, earth_search_item
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
    assert scene_from_item(_item(**{"processing:version": "03.01"}), S2_L2A).processing_baseline == 3.01  # CDSE
    assert scene_from_item(_item(**{"s2:processing_baseline": "05.10", "processing:version": "x"}),
                           S2_L2A).processing_baseline == 5.10


def test_an_item_saying_its_baseline_only_in_its_product_name_is_read_with_that_baseline():
    """An item whose ESA product name says N0213 (its id, Planetary Computer's s2:product_uri, Earth Search v0's
    sentinel:product_id) and nothing else: its DN carry no offset, and were read as the cube's (0.1 too low in
    reflectance); they are shifted by 1000 DN now, as an item saying baseline 02.13 is. A baseline said wins."""
    from ingest.values import value_map

    name = "S2A_MSIL2A_20210601T105031_N0213_R051_T31UFU_20210601T133001"
    by_id = _item()
    by_id.id = name
    assert scene_from_item(by_id, S2_L2A).processing_baseline == 2.13
    assert value_map(scene_from_item(by_id, S2_L2A), S2_L2A.band("B04"), 0).shift == 1000
    assert scene_from_item(_item(**{"s2:product_uri": f"{name}.SAFE"}), S2_L2A).processing_baseline == 2.13
    assert scene_from_item(_item(**{"sentinel:product_id": name.replace("N0213", "N0400")}),
                           S2_L2A).processing_baseline == 4.0
    assert scene_from_item(_item(**{"sentinel:product_id": name, "s2:processing_baseline": "05.10"}),
                           S2_L2A).processing_baseline == 5.1
    assert scene_from_item(_item(), S2_L2A).processing_baseline is None  # no name, no word: the cube's offset


def test_a_product_folder_gives_each_band_at_its_native_resolution_and_of_its_own_date(tiny_region, tmp_path,
                                                                                        caplog):
    """A SAFE-like folder holds B04 at 10, 20 and 60 m and SCL at 20 and 60 m: the last file by name was taken
    (60 m, resampled in silence with --warp); a band file of another date dropped in it dated the whole scene."""
    import shutil

    from tests.ingest.scene_edits import asset_path

    feature = items_of(tiny_region.items, "sentinel-2-l2a")[0]
    source = asset_path(tiny_region.items, feature, "B04").parent
    product = tmp_path / "products" / feature["id"]
    shutil.copytree(source, product)
    b04 = next(product.glob("*_B04_10m.tif"))
    scl = next(product.glob("*_SCL_20m.tif"))
    for res in ("20", "60"):
        shutil.copy(b04, product / b04.name.replace("_10m", f"_{res}m"))
    shutil.copy(scl, product / scl.name.replace("_20m", "_60m"))
    stamp = b04.name.split("_")[1]
    other = stamp[:6] + ("09" if stamp[6:8] != "09" else "10") + stamp[8:]
    shutil.copy(b04, product / b04.name.replace(stamp, other).replace("_B04_", "_B08_"))  # of another date
    (scene,) = load_scenes(tmp_path / "products", S2_L2A)
    assert Path(scene.assets["B04"]).name == b04.name and Path(scene.assets["SCL"]).name == scl.name
    assert stamp in Path(scene.assets["B08"]).name and scene.time.replace("-", "").replace(":", "")[:15] == stamp
    assert f"names tile {scene.tile} at {other}" in caplog.text


def test_a_sentinel_1_product_folder_takes_its_own_files_only(tiny_region, tmp_path, caplog):
    """A Sentinel-1 product folder holding a band file of another pass (copied in by hand): each file's band was the
    end of its name, the last by name won, and the other pass's VV went in as this date's without a word. A file of
    another product, or named otherwise (``VV.tif``), is left out with a warning, as a Sentinel-2 product's is; a
    product left without a band is rejected, missing it."""
    import shutil

    from tests.ingest.scene_edits import asset_path

    first, later = items_of(tiny_region.items, "sentinel-1-card-bs")[:2]
    products = tmp_path / "products"
    product = shutil.copytree(asset_path(tiny_region.items, first, "VV").parent, products / first["id"])
    stray = asset_path(tiny_region.items, later, "VV")
    assert stray.name > next(product.glob("*_VV.tif")).name  # the later by name: it was taken
    shutil.copy(stray, product / stray.name)
    (scene,) = load_scenes(products, S1_BACKSCATTER)
    assert {b: Path(f).name for b, f in scene.assets.items()} == {b: f"{first['id']}_{b}.tif" for b in ("VV", "VH")}
    assert f"{stray.name} is not a file of this product: left out" in caplog.text
    (product / f"{first['id']}_VH.tif").rename(product / "VH.tif")
    (scene,) = load_scenes(products, S1_BACKSCATTER)
    assert set(scene.assets) == {"VV"} and "VH.tif is not a file of this product: left out" in caplog.text


def test_a_product_folder_without_a_file_of_its_own_is_rejected_not_left_out(tiny_region, tmp_path, capsys):
    """A product folder renamed to another tile (or holding files named otherwise, ``B04.tif``): each file left
    out, the product vanished from the run (neither added nor rejected, exit status 0 with the others in); it is
    rejected, missing its bands, and the run says not everything went in."""
    import shutil

    from tests.ingest.scene_edits import asset_path

    good, odd, renamed = items_of(tiny_region.items, "sentinel-2-l2a")[:3]
    products = tmp_path / "products"
    shutil.copytree(asset_path(tiny_region.items, good, "B04").parent, products / good["id"])
    wrong_tile = odd["id"].replace("_T31UFU_", "_T31UGU_")
    shutil.copytree(asset_path(tiny_region.items, odd, "B04").parent, products / wrong_tile)
    for f in shutil.copytree(asset_path(tiny_region.items, renamed, "B04").parent, products / renamed["id"]).iterdir():
        f.rename(f.with_name(f.name.split("_")[2] + ".tif"))  # B04.tif ...
    code = main(["ingest", str(products), "--cube", str(tmp_path / "cube"), "--quiet", "--json", "--no-catalog"])
    out = json.loads(capsys.readouterr().out)
    assert code == 1
    assert out["added"] == [good["id"]]
    reasons = {r["scene_id"]: r["reason"] for r in out["rejected"]}
    assert set(reasons) == {wrong_tile, renamed["id"]}
    assert all("missing band(s) B02, B03, B04" in r for r in reasons.values())


def test_an_item_naming_no_collection_beside_items_that_do_is_an_error_not_left_out_in_silence(tiny_region, tmp_path):
    """Items merged by hand, one without its ``collection`` (a tool's export): beside items of the cube's
    collection it was left out without a word, neither added nor rejected (the run's exit status 0). As when no item
    names one, the source is refused, naming the items, and nothing is ingested."""
    s2 = items_of(tiny_region.items, "sentinel-2-l2a")[:2]
    s2[1].pop("collection")
    s2[1]["links"] = [link for link in s2[1]["links"] if link["rel"] != "collection"]
    merged = write_items(tiny_region.items, s2, "one-without-collection.json")
    with pytest.raises(InvalidRequestError, match=rf"1 of its 2 items name no collection \({s2[1]['id']}\), beside "
                                                  r"sentinel-2-l2a items: an item says its collection in its "
                                                  r"'collection' field"):
        ingest(merged, tmp_path / "cube", chunks=TEST_CHUNKS_LAYOUT, progress=False, catalog=False)
    assert not (tmp_path / "cube" / "s2").exists()


def test_metadata_that_is_no_number_is_unknown_not_a_crash(caplog):
    """``eo:cloud_cover: "4%"`` passed the checks and crashed the commit (a traceback, the run's 18 other scenes
    lost); ``sat:relative_orbit: "R051"`` crashed the load. Metadata, not pixels: unknown, with a warning."""
    scene = scene_from_item(_item(**{"eo:cloud_cover": "4%", "sat:relative_orbit": "R051"}), S2_L2A)
    assert scene.cloud_cover is None and scene.relative_orbit == -1
    assert "eo:cloud_cover '4%' is no number" in caplog.text and "'R051'" in caplog.text
    good = scene_from_item(_item(**{"eo:cloud_cover": "12.5", "sat:relative_orbit": 51.0}), S2_L2A)
    assert good.cloud_cover == 12.5 and good.relative_orbit == 51


def test_a_static_catalogs_asset_hrefs_are_relative_to_each_item_not_the_cwd(tiny_region, tmp_path, monkeypatch):
    """A self-contained catalog, its asset hrefs relative to each item's file (the STAC norm): every scene was
    rejected "file not found" unless the run started where those hrefs happened to resolve."""
    import os

    from tests.ingest.scene_edits import asset_path

    features = items_of(tiny_region.items, "sentinel-1-card-bs")[:2]
    catalog = pystac.Catalog("archive", "S1 CARD scenes")
    for feature in features:
        item = pystac.Item.from_dict(feature)
        item.clear_links()
        for band in S1_BACKSCATTER.bands:
            item.assets[band.name].href = str(asset_path(tiny_region.items, feature, band.name))
        catalog.add_item(item)
    catalog.normalize_hrefs(str(tmp_path / "catalog"))
    catalog.make_all_asset_hrefs_relative()
    catalog.save(pystac.CatalogType.SELF_CONTAINED)
    saved = json.loads(next((tmp_path / "catalog").glob("*/*.json")).read_text())
    assert not os.path.isabs(saved["assets"]["VV"]["href"])  # relative in the file, as the test means
    monkeypatch.chdir(tmp_path)  # elsewhere than the items' folders
    result = ingest(tmp_path / "catalog" / "catalog.json", tmp_path / "cube", collection="s1",
                    chunks=TEST_CHUNKS_LAYOUT, progress=False)
    assert result.ok and sorted(result.added) == sorted(f["id"] for f in features)


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


def test_a_sentinel_1_item_of_hh_and_hv_is_rejected_saying_they_are_other_polarisations(tiny_region, tmp_path):
    """A dual-pol HH+HV product (Sentinel-1 acquires them over polar seas and some coasts) among VV+VH ones: its
    rejection said its assets were tried as "band and resolution like B04_10m, ... common names like red or nir08",
    a Sentinel-2 product's names, and nothing of why HH and HV are no band of the cube."""
    good, odd = items_of(tiny_region.items, "sentinel-1-card-bs")[:2]
    odd["assets"] = {"HH": odd["assets"]["VV"], "HV": odd["assets"]["VH"]}
    result = ingest(write_items(tiny_region.items, [good, odd], "hh-hv.json"), tmp_path / "cube", collection="s1",
                    chunks=TEST_CHUNKS_LAYOUT, progress=False, catalog=False)
    assert result.added == (good["id"],)
    (rejection,) = result.rejected
    assert "no asset is a band of the s1 cube (VV, VH): its assets are HH, HV" in rejection.reason
    assert "HH and HV are the polarisations of a dual-pol HH+HV product, not the cube's VV and VH" in rejection.reason


def test_an_item_that_is_not_valid_stac_is_named_among_the_others(tiny_region, tmp_path):
    good, odd = items_of(tiny_region.items, "sentinel-2-l2a")[:2]
    del odd["properties"]["datetime"]  # nor start_datetime: pystac refuses the item, and with it the document
    broken = write_items(tiny_region.items, [good, odd], "no-datetime.json")
    with pytest.raises(InvalidRequestError, match=rf"is not valid STAC .*item 2 of 2 \({odd['id']}\): .*datetime"):
        ingest(broken, tmp_path / "cube", chunks=TEST_CHUNKS_LAYOUT, progress=False, catalog=False)
    assert not (tmp_path / "cube" / "s2").exists()


@pytest.mark.parametrize(("edit", "said"), [
    (lambda f: f.update(assets=None), '"assets" member is null, not an object'),
    (lambda f: f.update(assets=[]), '"assets" member is an array, not an object'),
    (lambda f: f.update(properties=None), '"properties" member is null, not an object'),
    (lambda f: f["assets"].update(B04="B04.tif"), 'asset "B04" is a string, not an object'),
    (lambda f: f["assets"]["B04"].pop("href"), 'asset "B04" has no "href" member (its file)'),  # KeyError 'href'
    (lambda f: f.update(id=5), '"id" is a number, not a string'),  # went through the checks, then a TypeError
    (lambda f: f.update(id=None), '"id" is null, not a string'),
    (lambda f: f.update(id=""), '"id" is blank: a scene is known by its id'),  # went in, as scene ""
])
def test_an_item_whose_members_are_of_another_json_type_is_an_error_naming_it(edit, said, tiny_region, tmp_path,
                                                                                capsys):
    """``"assets": null`` and the like: pystac raised an AttributeError, a traceback with exit status 1 (which says
    some scenes were rejected), nothing naming the item; an id of 5 or null went through the checks and the writes,
    then stopped the run at its commit with a TypeError; an empty id went in. Each is the error of an item that is
    not valid STAC."""
    good, odd = items_of(tiny_region.items, "sentinel-2-l2a")[:2]
    edit(odd)
    broken = write_items(tiny_region.items, [good, odd], "odd-member.json")
    code = main(["ingest", str(broken), "--cube", str(tmp_path / "cube"), "--quiet", "--no-catalog"])
    err = capsys.readouterr().err
    assert code == 2
    name = f" ({odd['id']})" if odd["id"] else ""
    assert f"is not valid STAC (STACError: item 2 of 2{name}: its {said}; no item was ingested" in err
    assert not (tmp_path / "cube" / "s2").exists()


def _by_scene(cube, bbox, ids: list[str]) -> dict[str, np.ndarray]:
    """Every band of the s2 cube at ``cube`` over ``bbox`` for scenes ``ids`` (in that order), as stored."""
    out = {}
    for res in S2_L2A.resolutions:
        ds = open_cube(cube, "s2", resolution=res, bbox=bbox, decode=False,  # read at once, as tests/ingest/checks.py
                       bands=[b.name for b in S2_L2A.bands_at(res)], chunks="window")
        held = list(ds["scene_id"].values)
        index = [held.index(i) for i in ids]
        out |= {b: ds[b].isel(time=index).values for b in ds.data_vars}
    return out


def test_earth_search_items_ingest_to_the_same_cube_as_the_band_keyed_ones(tiny_region, tiny_cube, tmp_path):
    features = items_of(tiny_region.items, "sentinel-2-l2a")
    es = [earth_search_item(f, offset=0.0 if i == 0 else -0.1) for i, f in enumerate(features)]
    source = write_items(tiny_region.items, es, "earth-search.json")
    result = ingest(source, tmp_path / "cube", chunks=TEST_CHUNKS_LAYOUT, progress=False, catalog=False,
                    source_collection="sentinel-2-c1-l2a")
    assert result.ok and len(result.added) == len(features)  # no -jp2 twin was taken: they do not exist
    ids = [f["id"] for f in features]
    got, want = _by_scene(tmp_path / "cube", tiny_region.bbox, ids), _by_scene(tiny_cube, tiny_region.bbox, ids)
    for band in S2_L2A.band_names:
        np.testing.assert_array_equal(got[band][1:], want[band][1:], err_msg=band)
    # the first item says offset 0 (DN of an old baseline) on "red", "nir", ...: its DN are shifted to the cube's
    red = want["B04"][0].astype(np.int64)
    np.testing.assert_array_equal(got["B04"][0], np.where(red > 0, np.minimum(red + 1000, 65535), 0))
    np.testing.assert_array_equal(got["SCL"][0], want["SCL"][0])  # classes carry no offset
    version = read_version(open_store(tmp_path / "cube"), "s2")  # the ledger and the catalog say where they came from
    record = version.scenes[es[1]["id"]]
    assert record.collection == "sentinel-2-c1-l2a" and record.sources["B08"].endswith(Path(
        es[1]["assets"]["nir"]["href"]).name) and record.processing_baseline == 5.1
    assert build_cube_collection(version, []).summaries.lists["cardcube:source_collections"] == ["sentinel-2-c1-l2a"]


def test_cdse_items_with_jpeg_2000_at_every_resolution_ingest_like_the_cogs(tiny_region, tiny_cube, tmp_path):
    features = items_of(tiny_region.items, "sentinel-2-l2a")[::6][:3]  # a few dates: each band becomes a JP2
    source = write_items(tiny_region.items, [cdse_item(tiny_region.items, f) for f in features], "cdse.json")
    result = ingest(source, tmp_path / "cube", chunks=TEST_CHUNKS_LAYOUT, progress=False, catalog=False)
    assert result.ok and len(result.added) == 3, result.rejected  # B04_20m, SCL_60m, TCI_10m... point nowhere
    ids = [f["id"] for f in features]
    got, want = _by_scene(tmp_path / "cube", tiny_region.bbox, ids), _by_scene(tiny_cube, tiny_region.bbox, ids)
    for band in S2_L2A.band_names:
        np.testing.assert_array_equal(got[band], want[band], err_msg=band)


def test_the_cli_takes_another_source_collection_id(tiny_region, tmp_path, capsys):
    features = items_of(tiny_region.items, "sentinel-2-l2a")[:2]
    source = write_items(tiny_region.items, [earth_search_item(f) for f in features], "earth-search-c1.json")
    args = ["ingest", str(source), "--cube", str(tmp_path / "cube"), "--chunks", TEST_CHUNKS, "--quiet",
            "--no-catalog", "--json"]
    assert main(args) == 2  # the cube's own id is not in it
    err = capsys.readouterr().err
    assert "holds no sentinel-2-l2a item" in err and "sentinel-2-c1-l2a" in err and "--source-collection" in err
    assert main([*args, "--source-collection", "sentinel-2-c1-l2a"]) == 0
    assert json.loads(capsys.readouterr().out)["added"] == [f["id"] for f in features]
    ds = open_cube(tmp_path / "cube", bbox=tiny_region.bbox)
    assert list(ds["scene_id"].values) == [f["id"] for f in features]
    products = tmp_path / "products"  # a folder of products is named like ESA's: no collection id to choose
    products.mkdir()
    assert main(["ingest", str(products), "--cube", str(tmp_path / "cube1"), "--collection", "s1",
                 "--source-collection", "sentinel-2-l2a", "--quiet"]) == 2
    assert "a source collection (sentinel-2-l2a) is chosen in a STAC source only" in capsys.readouterr().err
    assert not (tmp_path / "cube1").exists()


def test_items_without_a_collection_are_named_so(tiny_region, tmp_path):
    features = [{k: v for k, v in f.items() if k != "collection"} for f in items_of(tiny_region.items,
                                                                                   "sentinel-2-l2a")[:2]]
    source = write_items(tiny_region.items, features, "no-collection.json")
    with pytest.raises(InvalidRequestError, match="only 2 of no collection: an item says its collection in its "
                                                  "'collection' field"):
        load_scenes(source, S2_L2A)


def test_backscatter_items_of_another_collection_keyed_by_polarisation(tiny_region):
    features = items_of(tiny_region.items, "sentinel-1-card-bs")[:2]
    rtc = []
    for f in features:
        item = json.loads(json.dumps(f))
        item["collection"] = "sentinel-1-rtc"
        item["assets"] = {k.lower(): a for k, a in item["assets"].items()}
        item["assets"]["rendered_preview"] = {"href": "preview.png", "type": "image/png", "roles": ["overview"]}
        rtc.append(item)
    source = write_items(tiny_region.items, rtc, "rtc.json")
    scenes = load_scenes(source, S1_BACKSCATTER, collection="sentinel-1-rtc")
    assert [s.scene_id for s in scenes] == [f["id"] for f in features]
    assert scenes[0].assets["VV"].endswith(features[0]["assets"]["VV"]["href"])
    assert scenes[0].other_assets == ("rendered_preview",)
    with pytest.raises(InvalidRequestError, match="holds no sentinel-1-card-bs item"):
        load_scenes(source, S1_BACKSCATTER)


@pytest.mark.parametrize(("said", "stored"), [
    ("ASC", "ascending"), ("asc", "ascending"), ("DSC", "descending"), ("DES", "descending"), ("Desc", "descending"),
    (" DESCENDING", "descending"), ("ascending", "ascending"), ("geostationary", "geostationary"), (None, ""),
])
def test_an_orbit_direction_abbreviated_is_the_one_it_names(said, stored):
    """``ASC``/``DSC``, as ESA's CARD product names (and the folders of products cardcube reads) abbreviate them, and
    ``DES``/``desc``: an item built from a product's name stored ``asc``, a track apart from ``ascending`` for the
    mowing marker, the plots and the contact sheets."""
    assert scene_from_item(_item(**{"sat:orbit_state": said}), S1_BACKSCATTER).orbit_state == stored


def test_an_orbit_direction_that_is_none_is_unknown_with_a_warning(caplog):
    """``"sat:orbit_state": "decending"`` (a typo of a hand-made catalog) was stored as it is, without a word: a track
    of its own beside ``descending``. It is taken as unknown with a warning, as a relative orbit that is no number is
    (the plots draw a pass of no known direction in grey)."""
    scene = scene_from_item(_item(**{"sat:orbit_state": "decending"}), S1_BACKSCATTER)
    assert scene.orbit_state == ""
    assert "item S2A_x: sat:orbit_state 'decending' is no orbit direction (ascending, descending); taken as " \
           "unknown" in caplog.text
    assert scene_from_item(_item(**{"sat:orbit_state": "geostationary"}), S1_BACKSCATTER).orbit_state == \
        "geostationary"  # STAC's third value


def test_one_orbit_direction_and_satellite_spelt_otherwise_are_one_track(tiny_region, tmp_path):
    """Items of one Sentinel-1 track, one saying ``DESCENDING`` and ``Sentinel-1B`` (as ESA's manifests and some
    catalogues write them), the other ``descending`` and ``sentinel-1a``: the time series gave the spellings as they
    were, so the mowing marker, the plots and the contact sheet took them for two tracks (no drop measured between
    their passes). Both are STAC's lower-case names now."""
    import geopandas as gpd

    from cube.timeseries import parcel_timeseries

    first, _, third = items_of(tiny_region.items, "sentinel-1-card-bs")[:3]
    assert first["properties"]["sat:orbit_state"] == third["properties"]["sat:orbit_state"] == "descending"
    shouted = json.loads(json.dumps(third))
    shouted["properties"].update({"sat:orbit_state": " DESCENDING", "platform": "Sentinel-1B"})
    assert scene_from_item(pystac.Item.from_dict(shouted), S1_BACKSCATTER).platform == "sentinel-1b"
    assert scene_from_item(_item(platform="S2A"), S2_L2A).platform == "sentinel-2a"
    assert scene_from_item(_item(platform="landsat-8"), S2_L2A).platform == "landsat-8"  # another name: as given
    cube = tmp_path / "cube"
    result = ingest(write_items(tiny_region.items, [first, shouted], "shouted.json"), cube, collection="s1",
                    chunks=ChunkLayout.parse(TEST_CHUNKS), progress=False)
    assert len(result.added) == 2
    parcels = gpd.read_parquet(tiny_region.parcels).iloc[:1]
    frame = parcel_timeseries(cube, parcels, collection="s1", bands=["VH"])
    assert frame["orbit_state"].tolist() == ["descending", "descending"]
    assert frame["platform"].tolist() == ["sentinel-1a", "sentinel-1b"]
    assert frame.groupby(["orbit_state", "relative_orbit"]).ngroups == 1  # one track, as the marker groups it
