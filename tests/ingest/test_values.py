"""Source values to stored ones: reflectance offsets of old processing baselines, a file's own nodata, linear
backscatter refused unless something says it is linear, and then converted to dB. Checked pixel by pixel
against the source files."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio

from cardcube.cli import main
from cardcube.errors import SceneContentError
from cardcube.spec import S1_BACKSCATTER, S2_L2A, ChunkLayout
from cardcube.storage import open_store
from cube.dataset import open_cube
from cube.ledger import read_version
from ingest.job import ingest
from ingest.sources import SourceScene
from ingest.values import ValueMap, linear_power_reason, value_map
from tests.ingest.scene_edits import _rewrite, asset_path, broken_copy, items_of, write_items

CHUNKS = ChunkLayout(time=4, space=64, shard_space=256)
B04 = S2_L2A.band("B04")


def _scene(**kw) -> SourceScene:
    return SourceScene("S", "sentinel-2-l2a", "31UFU", "2021-06-01T10:00:00Z", "sentinel-2a", 51, "descending", 0.0,
                       **kw)


def test_the_offset_comes_from_raster_bands_then_the_processing_baseline():
    assert value_map(_scene(), B04, 0).shift == 0  # no word on it: the cube's convention
    assert value_map(_scene(processing_baseline=2.14), B04, 0).shift == 1000  # before 04.00: no offset in the DN
    assert value_map(_scene(processing_baseline=5.1), B04, 0).shift == 0
    stated = _scene(processing_baseline=2.14, scaling={"B04": (1e-4, -0.1)})  # the asset's own word wins
    assert value_map(stated, B04, 0).shift == 0
    assert value_map(_scene(scaling={"B04": (None, 0.0)}), B04, 0).shift == 1000
    # an asset stating its scale alone says no offset: the baseline does (it was taken as the cube's -0.1)
    assert value_map(_scene(processing_baseline=2.14, scaling={"B04": (1e-4, None)}), B04, 0).shift == 1000
    assert value_map(_scene(processing_baseline=5.1, scaling={"B04": (1e-4, None)}), B04, 0).shift == 0
    assert value_map(_scene(processing_baseline=2.14), S2_L2A.band("SCL"), 0).shift == 0  # classes are no DN
    # numbers written as text (off the schema, as nodata is read) are read; what is no number is refused by name
    from ingest.assets import scaling_of
    assert scaling_of({"raster:bands": [{"scale": "0.0001", "offset": "-0.1"}]}) == (1e-4, -0.1)
    with pytest.raises(SceneContentError, match=r"band B04: its asset's offset 'minus 0\.1' is no number"):
        value_map(_scene(scaling={"B04": (1e-4, "minus 0.1")}), B04, 0)
    with pytest.raises(SceneContentError, match=r"scaled by 0\.001"):
        value_map(_scene(scaling={"B04": (1e-3, 0.0)}), B04, 0)
    with pytest.raises(SceneContentError, match="not a whole number of DN"):
        value_map(_scene(scaling={"B04": (1e-4, -0.10005)}), B04, 0)


def test_value_map_shifts_valid_dn_and_maps_the_files_nodata():
    dn = np.array([0, 1, 2000, 65000], dtype=np.uint16)
    np.testing.assert_array_equal(ValueMap(0, shift=1000).apply(dn), [0, 1001, 3000, 65535])  # clipped, 0 kept
    db = np.array([-15.0, -32768.0, np.nan, 0.0], dtype=np.float32)
    out = ValueMap(np.nan, nodata=-32768.0).apply(db)
    np.testing.assert_array_equal(np.isnan(out), [False, True, True, False])
    assert value_map(_scene(), S1_BACKSCATTER.band("VV"), float("nan")).nodata is None  # the cube's own nodata
    infinite = np.array([-np.inf, -15.0, np.inf], dtype=np.float32)  # 10 log10 of zero power: no measurement
    np.testing.assert_array_equal(ValueMap(np.nan).apply(infinite), [np.nan, -15.0, np.nan])


@pytest.fixture(scope="module")
def odd_sources(tiny_region):
    """An old-baseline S2 scene (DN without offset, no raster:bands), an S1 scene with -32768 as its nodata in
    half its pixels, and an S1 scene in linear power."""
    items = tiny_region.items
    s2, s1 = items_of(items, "sentinel-2-l2a")[0], items_of(items, "sentinel-1-card-bs")
    old = broken_copy(items, s2, "S2-OLD-BASELINE", props={"s2:processing_baseline": "02.14"})
    for asset in old["assets"].values():
        asset.pop("raster:bands", None)

    def hole(band, path):
        _rewrite(path, data=lambda a: np.where(np.arange(a.shape[1]) < a.shape[1] // 2, -32768, a))
        with rasterio.open(path, "r+") as ds:
            ds.nodata = -32768

    def linear(band, path):
        _rewrite(path, data=lambda a: (10 ** (a / 10)).astype(a.dtype))

    def zero_power(band, path):  # a border of 10 log10(0) = -inf written as dB
        _rewrite(path, data=lambda a: np.where(np.arange(a.shape[0])[:, None] < 10, -np.inf, a).astype(a.dtype))

    holed = broken_copy(items, s1[0], "S1-NODATA", hole, props={"datetime": "2024-01-02T05:00:00Z"})
    for asset in holed["assets"].values():  # the item says the file's nodata (as a provider's would)
        asset["raster:bands"][0]["nodata"] = -32768
    lin = broken_copy(items, s1[1], "S1-LINEAR", linear, props={"datetime": "2024-01-03T05:00:00Z"})
    inf = broken_copy(items, s1[2], "S1-ZERO-POWER", zero_power, props={"datetime": "2024-01-04T05:00:00Z"})
    return write_items(items, [old], "old.json"), write_items(items, [holed, lin, inf], "s1-odd.json"), old


def _source_and_cube(cube, collection: str, items, feature: dict, band: str, *, decode: bool):
    """One band of a scene as its file holds it, and as the cube holds it over the same pixels."""
    with rasterio.open(asset_path(items, feature, band)) as src:
        source, b = src.read(1), src.bounds
    ds = open_cube(cube, collection, bands=[band], decode=decode)
    got = ds[band].sel(time=ds.time[list(ds["scene_id"].values).index(feature["id"])])
    return source, got.sel(x=slice(b.left, b.right), y=slice(b.top, b.bottom)).values


def test_an_old_processing_baseline_reads_as_reflectance_like_the_rest(odd_sources, tmp_path):
    old_items, _, old = odd_sources
    ingest(old_items, tmp_path / "cube", chunks=CHUNKS, progress=False)
    source, got = _source_and_cube(tmp_path / "cube", "s2", old_items, old, "B04", decode=False)
    dn, got = source.astype(np.int64), got.astype(np.int64)
    np.testing.assert_array_equal(got[dn > 0], dn[dn > 0] + 1000)  # stored with the cube's offset of -1000 DN
    np.testing.assert_array_equal(got[dn == 0], 0)
    record = read_version(open_store(tmp_path / "cube"), "s2").scenes["S2-OLD-BASELINE"]
    assert record.processing_baseline == 2.14  # in the ledger: why these values were shifted


def test_an_old_baseline_whose_assets_state_their_scale_alone_reads_as_reflectance(tiny_region, tmp_path):
    """A product of baseline 02.14 whose ``raster:bands`` give the scale and no offset (as many catalogs write them):
    its DN carry no offset, and are stored 1000 higher (they were stored as they were: reflectance 0.1 too low)."""
    s2 = items_of(tiny_region.items, "sentinel-2-l2a")[1]
    old = broken_copy(tiny_region.items, s2, "S2-OLD-SCALE-ONLY", props={"s2:processing_baseline": "02.14"})
    for asset in old["assets"].values():
        for entry in asset.get("raster:bands", []):
            entry.pop("offset", None)
    assert any("scale" in e for a in old["assets"].values() for e in a.get("raster:bands", []))
    items = write_items(tiny_region.items, [old], "old-scale-only.json")
    ingest(items, tmp_path / "cube", chunks=CHUNKS, progress=False)
    source, got = _source_and_cube(tmp_path / "cube", "s2", items, old, "B04", decode=False)
    dn, got = source.astype(np.int64), got.astype(np.int64)
    np.testing.assert_array_equal(got[dn > 0], dn[dn > 0] + 1000)
    np.testing.assert_array_equal(got[dn == 0], 0)


def test_a_files_nodata_is_nodata_and_linear_backscatter_is_refused(odd_sources, tmp_path):
    _, s1_items, _ = odd_sources
    result = ingest(s1_items, tmp_path / "cube", collection="s1", chunks=CHUNKS, progress=False)
    (rejection,) = result.rejected
    assert rejection.scene_id == "S1-LINEAR" and "looks like linear power, not dB" in rejection.reason
    assert "its asset says unit 'dB': if the file is linear power, that unit is wrong" in rejection.reason  # to mend
    holed = items_of(s1_items, "sentinel-1-card-bs")[0]
    source, vv = _source_and_cube(tmp_path / "cube", "s1", s1_items, holed, "VV", decode=True)
    np.testing.assert_array_equal(np.isnan(vv), source == -32768)
    assert np.isnan(vv).any() and (vv[source != -32768] == source[source != -32768]).all()
    zero = items_of(s1_items, "sentinel-1-card-bs")[2]  # -inf dB was stored, and counted as a measurement
    source, vv = _source_and_cube(tmp_path / "cube", "s1", s1_items, zero, "VV", decode=True)
    assert np.isinf(source[:10]).all() and np.isfinite(source[10:]).all()
    np.testing.assert_array_equal(np.isnan(vv), np.isinf(source))
    np.testing.assert_array_equal(vv[10:], source[10:])


def test_nodata_said_by_the_item_or_a_mask_band_is_not_taken_for_data(tiny_region, tmp_path):
    """Only the GeoTIFF nodata tag was read: -9999 said by the item's raster:bands, or pixels under the file's own
    mask band, went in as measurements (-9999 dB, 0 dB). The item's value is used; a mask band, or an item and a
    file that disagree, are refused."""
    items, s1 = tiny_region.items, items_of(tiny_region.items, "sentinel-1-card-bs")

    def border(value: float, *, mask: bool = False, tag: float | None = None):
        def edit(band, path):
            with rasterio.open(path) as src:
                profile, a = src.profile, src.read(1)
            a[:20] = value
            profile.update(driver="GTiff", nodata=tag)
            with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(path, "w", **profile) as dst:
                dst.write(a, 1)
                if mask:
                    dst.write_mask(np.where(np.arange(a.shape[0])[:, None] < 20, 0, 255).astype(np.uint8)
                                   * np.ones_like(a, dtype=np.uint8))
        return edit

    def said(feature: dict, nodata: float) -> dict:
        for asset in feature["assets"].values():
            asset["raster:bands"] = [{**asset.get("raster:bands", [{}])[0], "nodata": nodata}]
        return feature

    by_item = said(broken_copy(items, s1[0], "S1-ITEM-NODATA", border(-9999.0)), -9999)
    by_mask = broken_copy(items, s1[1], "S1-MASK", border(0.0, mask=True))
    both = said(broken_copy(items, s1[2], "S1-TWO-NODATA", border(-9999.0, tag=-32768.0)), -9999)
    for asset in by_mask["assets"].values():  # nothing but the mask says where the nodata is
        for entry in asset.get("raster:bands", []):
            entry.pop("nodata", None)
    lowest = float(np.finfo(np.float32).min)  # float32's lowest, written by the item at float32 precision
    f32 = said(broken_copy(items, s1[3], "S1-F32-NODATA", border(lowest, tag=lowest)), -3.4028235e+38)
    source_items = write_items(items, [by_item, by_mask, both, f32], "nodata-said.json")
    result = ingest(source_items, tmp_path / "cube", collection="s1", chunks=CHUNKS, progress=False)
    assert sorted(result.added) == ["S1-F32-NODATA", "S1-ITEM-NODATA"]  # one value in the file's type: agreed
    reasons = {r.scene_id: r.reason for r in result.rejected}
    assert "marks its nodata with a mask band, which cardcube does not read" in reasons["S1-MASK"]
    assert "its file's nodata is -32768.0, its item's raster:bands say -9999.0" in reasons["S1-TWO-NODATA"]
    source, vv = _source_and_cube(tmp_path / "cube", "s1", source_items, by_item, "VV", decode=True)
    assert (source[:20] == -9999).all()
    np.testing.assert_array_equal(np.isnan(vv), source == -9999)
    np.testing.assert_array_equal(vv[20:], source[20:])
    source, vv = _source_and_cube(tmp_path / "cube", "s1", source_items, f32, "VV", decode=True)
    assert (source[:20] == np.float32(lowest)).all() and np.isnan(vv[:20]).all()
    np.testing.assert_array_equal(vv[20:], source[20:])


VV = S1_BACKSCATTER.band("VV")


def _s1(collection: str = "sentinel-1-card-bs", **kw) -> SourceScene:
    return SourceScene("S1", collection, "31UFU", "2024-05-01T05:49:52Z", "sentinel-1a", 37, "descending", None, **kw)


def test_what_says_backscatter_is_linear_power():
    assert linear_power_reason(_s1(), VV) is None  # nothing says so: dB (the heuristic then checks it)
    assert linear_power_reason(_s1(units={"VV": "dB"}), VV) is None
    assert "unit 'Linear'" in linear_power_reason(_s1(units={"VV": "Linear"}), VV)
    assert "Planetary Computer" in linear_power_reason(_s1(collection="sentinel-1-rtc"), VV)
    assert linear_power_reason(_s1(collection="sentinel-1-rtc", units={"VV": "dB"}), VV) is None  # the asset wins
    assert "--linear-power" in linear_power_reason(_s1(), VV, linear_power=True)
    assert linear_power_reason(_s1(units={"VV": "m2/m2"}), VV) is None  # a unit that names no scale says nothing
    assert linear_power_reason(_scene(), B04, linear_power=True) is None  # reflectance is no backscatter
    with pytest.raises(SceneContentError, match="its asset says unit 'dB'"):
        linear_power_reason(_s1(units={"VV": "dB"}), VV, linear_power=True)  # a contradiction is no guess
    with pytest.raises(SceneContentError, match="not amplitude"):
        linear_power_reason(_s1(units={"VV": "amplitude"}), VV)


def test_a_unit_spelled_out_with_its_symbol_names_its_scale():
    rtc = "sentinel-1-rtc"  # linear power by convention: only a unit read as dB keeps its values as they are
    assert linear_power_reason(_s1(collection=rtc, units={"VV": "decibel (dB)"}), VV) is None
    assert linear_power_reason(_s1(collection=rtc, units={"VV": " Decibels "}), VV) is None
    assert "'Linear power (gamma0)'" in linear_power_reason(_s1(units={"VV": "Linear power (gamma0)"}), VV)
    assert "'power  (linear)'" in linear_power_reason(_s1(units={"VV": "power  (linear)"}), VV)
    with pytest.raises(SceneContentError, match="its asset says unit 'decibel \\(dB\\)'"):
        linear_power_reason(_s1(units={"VV": "decibel (dB)"}), VV, linear_power=True)
    with pytest.raises(SceneContentError, match="names both amplitude and dB"):
        linear_power_reason(_s1(units={"VV": "amplitude (dB)"}), VV)


def test_value_map_turns_linear_power_into_db_and_what_has_no_db_value_into_nodata():
    power = np.array([1.0, 0.01, 2.0, 0.0, -1.0, np.nan, -32768.0], dtype=np.float32)
    out = value_map(_s1(), VV, -32768.0, to_db=True).apply(power)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[:3], [0.0, -20.0, 10 * np.log10(2.0)], rtol=1e-6)
    assert np.isnan(out[3:]).all()


@pytest.fixture(scope="module")
def linear_sources(tiny_region):
    """Three S1 scenes in linear power -- one whose assets name no unit, one saying unit 'linear', and one in
    dB whose assets name no unit -- with a few pixels <= 0 in the first (no dB value: nodata)."""
    items = tiny_region.items
    s1 = items_of(items, "sentinel-1-card-bs")

    def to_power(band, path):
        def edit(a):
            p = (10 ** (a.astype(np.float64) / 10)).astype(a.dtype)
            p[0, :5], p[1, :5] = 0.0, -1.0
            return p
        _rewrite(path, data=edit)

    def unit(feature: dict, said: str | None) -> dict:
        for asset in feature["assets"].values():
            asset["raster:bands"][0].pop("unit", None)
            if said is not None:
                asset["raster:bands"][0]["unit"] = said
        return feature

    unsaid = unit(broken_copy(items, s1[2], "S1-POWER-UNSAID", to_power, props={"datetime": "2024-01-04T05:00:00Z"}),
                  None)
    said = unit(broken_copy(items, s1[3], "S1-POWER-SAID", to_power, props={"datetime": "2024-01-05T05:00:00Z"}),
                "linear")
    db = unit(broken_copy(items, s1[4], "S1-DB-UNSAID", props={"datetime": "2024-01-06T05:00:00Z"}), None)
    return items, write_items(items, [unsaid, said, db], "s1-power.json"), {"unsaid": unsaid, "said": said, "db": db}


def test_linear_power_goes_in_as_db_when_something_says_so(linear_sources, tmp_path):
    items, path, scenes = linear_sources
    cube = tmp_path / "cube"
    first = ingest(path, cube, collection="s1", chunks=CHUNKS, progress=False)
    assert set(first.added) == {"S1-DB-UNSAID", "S1-POWER-SAID"}  # the unit says linear: no option needed
    (rejection,) = first.rejected  # linear and unsaid: refused, with the way out
    assert rejection.scene_id == "S1-POWER-UNSAID" and "looks like linear power, not dB" in rejection.reason
    assert "--linear-power" in rejection.reason and first.converted == ("S1-POWER-SAID",)

    again = ingest(path, cube, collection="s1", chunks=CHUNKS, progress=False, linear_power=True)
    assert again.added == ("S1-POWER-UNSAID",) and again.converted == ("S1-POWER-UNSAID",)
    for kind in ("unsaid", "said"):
        for band in ("VV", "VH"):
            power, got = _source_and_cube(cube, "s1", items, scenes[kind], band, decode=False)
            with np.errstate(divide="ignore", invalid="ignore"):
                expected = 10 * np.log10(power.astype(np.float64))  # numpy's own dB of the file's power
            positive = power > 0
            assert (~positive).sum() >= 10 and np.isnan(got[~positive]).all()  # <= 0: nodata in the cube
            np.testing.assert_allclose(got[positive], expected[positive], rtol=1e-6, atol=1e-6)
    scenes_in = read_version(open_store(cube), "s1").scenes
    assert "--linear-power" in scenes_in["S1-POWER-UNSAID"].converted["VV"]  # the ledger says why
    assert "unit 'linear'" in scenes_in["S1-POWER-SAID"].converted["VH"]
    assert not scenes_in["S1-DB-UNSAID"].converted and "converted" not in scenes_in["S1-DB-UNSAID"].to_dict()


def test_linear_power_said_of_db_values_or_against_the_metadata_is_refused(linear_sources, tiny_region, tmp_path):
    items, _, scenes = linear_sources
    said_db = broken_copy(items, items_of(items, "sentinel-1-card-bs")[5], "S1-DB-SAID",
                          props={"datetime": "2024-01-07T05:00:00Z"})  # the synthetic items say unit "dB"
    batch = write_items(items, [scenes["db"], said_db], "s1-db-as-power.json")
    result = ingest(batch, tmp_path / "cube", collection="s1", chunks=CHUNKS, progress=False, linear_power=True)
    assert not result.added
    reasons = {r.scene_id: r.reason for r in result.rejected}
    assert "taken as linear power" in reasons["S1-DB-UNSAID"] and "in dB already?" in reasons["S1-DB-UNSAID"]
    assert "If so, leave out --linear-power (linear_power=True) for it" in reasons["S1-DB-UNSAID"]  # what took it so
    assert "its asset says unit 'dB'" in reasons["S1-DB-SAID"]
    with pytest.raises(ValueError, match=r"linear_power=True \(--linear-power\) is for backscatter: the s2 cube"):
        ingest(tiny_region.items, tmp_path / "s2", linear_power=True, progress=False)


def test_db_taken_as_linear_power_is_refused_saying_what_took_it_so(tiny_region, tmp_path):
    """dB values whose asset says unit "linear", or of Planetary Computer's sentinel-1-rtc (linear power by its
    convention: a user's own copy converted to dB): refused as "is it in dB already?", no more said of how to get
    it in, where what took it as linear is what to change."""
    src = items_of(tiny_region.items, "sentinel-1-card-bs")[0]
    said = broken_copy(tiny_region.items, src, "S1-DB-SAID-LINEAR")
    for asset in said["assets"].values():
        asset["raster:bands"][0]["unit"] = "linear"
    result = ingest(write_items(tiny_region.items, [said], "db-said-linear.json"), tmp_path / "cube",
                    collection="s1", chunks=CHUNKS, progress=False)
    assert "in dB already? If so, that unit is wrong (say 'dB')" in result.rejected[0].reason
    rtc = broken_copy(tiny_region.items, src, "S1-DB-RTC")
    rtc["collection"] = "sentinel-1-rtc"
    for asset in rtc["assets"].values():
        asset["raster:bands"][0].pop("unit")
    result = ingest(write_items(tiny_region.items, [rtc], "db-rtc.json"), tmp_path / "rtc", collection="s1",
                    chunks=CHUNKS, progress=False, source_collection="sentinel-1-rtc")
    (rejection,) = result.rejected
    assert "Planetary Computer's sentinel-1-rtc delivers gamma0 in linear power" in rejection.reason
    assert "in dB already? If so, say it: its STAC asset's unit (raster:bands unit 'dB') wins" in rejection.reason
    for asset in rtc["assets"].values():
        asset["raster:bands"][0]["unit"] = "dB"
    result = ingest(write_items(tiny_region.items, [rtc], "db-rtc-said.json"), tmp_path / "rtc", collection="s1",
                    chunks=CHUNKS, progress=False, source_collection="sentinel-1-rtc")
    assert result.added == ("S1-DB-RTC",) and not result.converted


def test_linear_power_whose_asset_says_db_is_refused_naming_the_unit(tiny_region, tmp_path):
    """A file of linear power whose asset says unit "dB" (a catalog's template copied from a dB product): refused as
    "looks like linear power, not dB ... if it is linear power, say so: its STAC asset's unit (raster:bands unit
    'linear'), or ... --linear-power", as if the asset said nothing, where it says the opposite: the unit to correct
    went unnamed, and the option it offered is refused against that unit."""
    def to_power(band, path):
        _rewrite(path, data=lambda a: (10 ** (a.astype(np.float64) / 10)).astype(a.dtype))

    src = items_of(tiny_region.items, "sentinel-1-card-bs")[0]
    power = broken_copy(tiny_region.items, src, "S1-POWER-SAID-DB", to_power)
    assert power["assets"]["VV"]["raster:bands"][0]["unit"] == "dB"
    result = ingest(write_items(tiny_region.items, [power], "power-said-db.json"), tmp_path / "cube", collection="s1",
                    chunks=CHUNKS, progress=False)
    (rejection,) = result.rejected
    assert "band VV looks like linear power, not dB" in rejection.reason
    assert "its asset says unit 'dB': if the file is linear power, that unit is wrong (say 'linear')" \
        in rejection.reason, rejection.reason
    result = ingest(write_items(tiny_region.items, [power], "power-said-db.json"), tmp_path / "cube", collection="s1",
                    chunks=CHUNKS, progress=False, linear_power=True)
    (rejection,) = result.rejected  # the option: a contradiction of the unit
    assert "is linear power by linear_power=True (--linear-power), but its asset says unit 'dB'" in rejection.reason
    for asset in power["assets"].values():
        asset["raster:bands"][0]["unit"] = "linear"
    result = ingest(write_items(tiny_region.items, [power], "power-said-linear.json"), tmp_path / "cube",
                    collection="s1", chunks=CHUNKS, progress=False)
    assert result.added == ("S1-POWER-SAID-DB",) and result.converted == ("S1-POWER-SAID-DB",)


def test_the_cli_passes_linear_power(linear_sources, tmp_path, capsys):
    _, path, _ = linear_sources
    args = ["ingest", str(path), "--cube", str(tmp_path / "cube"), "--collection", "s1", "--quiet", "--json",
            "--chunks", "time=4,space=64,shard_space=256"]
    assert main(args) == 1 and "cardcube ingest --linear-power" in capsys.readouterr().out
    assert main([*args, "--linear-power"]) == 0
    assert '"converted": ["S1-POWER-UNSAID"]' in capsys.readouterr().out
