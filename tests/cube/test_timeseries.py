"""parcel_timeseries against an independent reference, over folders and S3, with its errors."""

from __future__ import annotations

import json
import warnings

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from shapely.geometry import Point, box

from cardcube.counting_store import CountingStore
from cardcube.errors import (
    InvalidRequestError,
    NoAcquisitionWarning,
    ParcelNotFoundError,
    ParcelOutsideCubeError,
    ParcelsWithoutStatisticsWarning,
    ParcelTooSmallError,
    RequestTooLargeError,
)
from cardcube.grid import TileGrid
from cardcube.spec import DEFAULT_SCL_MASK, ChunkLayout
from cardcube.storage import open_store
from cube.chips import chip
from cube.dataset import open_cube
from cube.extract import extract
from cube.indices import add_indices
from cube.timeseries import parcel_timeseries
from ingest.job import ingest
from tests.conftest import TEST_CHUNKS
from tests.cube.reference import reference_stats, season_chunks
from tests.ingest.scene_edits import items_of, write_items

STATS = ("count", "masked", "mean", "std", "min", "max", "p25", "median", "p75")


@pytest.fixture(scope="module")
def sample(parcels) -> gpd.GeoDataFrame:
    """Three ordinary parcels of different sizes."""
    ordered = parcels.sort_values("area_ha")
    return ordered.iloc[[len(ordered) // 2, int(len(ordered) * 0.8), len(ordered) - 1]]


def _compare(frame: pd.DataFrame, items, collection, geometries: dict, band: str, mask) -> int:
    compared = 0
    for row in frame[frame.band == band].itertuples():
        ref = reference_stats(items, collection, row.scene_id if hasattr(row, "scene_id") else None,
                              geometries[row.parcel_id], band, mask_classes=mask)
        assert row.count == ref["count"] and row.masked == ref["masked"], (row.parcel_id, row.time)
        for stat in STATS[2:]:
            if ref["count"]:
                assert getattr(row, stat) == pytest.approx(ref[stat], rel=1e-6, abs=1e-9), (stat, row)
            else:
                assert np.isnan(getattr(row, stat))
        compared += 1
    return compared


def _with_scene_ids(frame: pd.DataFrame, items, collection: str) -> pd.DataFrame:
    """``frame``, whose every row names its date's scene, checked against the source items of its time."""
    source = "sentinel-2-l2a" if collection == "s2" else "sentinel-1-card-bs"
    ids = {pd.Timestamp(f["properties"]["datetime"]).tz_localize(None): f["id"] for f in items_of(items, source)}
    assert frame.scene_id.tolist() == frame.time.map(ids).tolist()  # an auditor ties each row to its product
    return frame


@pytest.mark.parametrize("mask", [DEFAULT_SCL_MASK, None])
def test_s2_statistics_equal_the_source_pixels(tiny_cube, tiny_region, sample, mask):
    frame = parcel_timeseries(tiny_cube, sample, bands=["B04", "B11"], mask=mask)
    frame = _with_scene_ids(frame, tiny_region.items, "s2")
    geoms = dict(zip(sample.parcel_id, sample.geometry, strict=True))
    n = sum(_compare(frame, tiny_region.items, "s2", geoms, band, mask) for band in ("B04", "B11"))
    assert n == 2 * len(sample) * 19
    assert set(frame.cube_version) == {1} and frame.attrs["cube_version"] == 1
    assert all(s["status"] == "ok" and s["tile"] == "31UFU" for s in frame.attrs["parcel_status"])


def test_the_parcels_status_is_shared_by_the_frames_pandas_derives_not_copied(tiny_cube, tiny_region, tmp_path):
    """pandas deep-copies a frame's attrs into each frame it derives: with a record per parcel, a register of 300,000
    parcels (most beyond the cube) made every column read take a second, `cardcube timeseries` 71 s. The records are
    shared by the derived frames, and read, written to Parquet and read back as before."""
    import geopandas as gpd

    parcels = gpd.read_parquet(tiny_region.parcels)
    far = parcels.iloc[:40].assign(parcel_id=lambda f: f.parcel_id + "-far",
                                   geometry=lambda f: f.translate(xoff=50_000))  # beyond the cube
    frame = parcel_timeseries(tiny_cube, pd.concat([parcels.iloc[:5], far]), bands=["B04"], stats=["mean"])
    status = frame.attrs["parcel_status"]
    assert len(status) == 45 and [s["status"] for s in status].count("outside") == 40
    for derived in (frame["mean"], frame[frame.band == "B04"], frame.sort_values("mean"), frame.copy(deep=True)):
        assert derived.attrs["parcel_status"] is status  # not a copy of each record
    frame.to_parquet(tmp_path / "ts.parquet")
    assert pd.read_parquet(tmp_path / "ts.parquet").attrs["parcel_status"] == pd.DataFrame(status).to_dict("records")


def test_the_parcels_status_records_are_plain_values_as_a_frame_of_them_gives(tiny_cube, tiny_region):
    """The records were read back from a frame of the statuses (its text columns Arrow's, value by value: 2 s of
    300,000 parcels); they are made from the statuses, the same records: plain Python values, integer ids and pixels
    as ints, in the fields' order, JSON as they are."""
    parcels = gpd.read_parquet(tiny_region.parcels).iloc[:6].assign(parcel_id=range(1040, 1046))
    far = parcels.iloc[:3].assign(parcel_id=range(9000, 9003), geometry=lambda f: f.translate(xoff=50_000))
    with pytest.warns(ParcelsWithoutStatisticsWarning, match="parcel 9000: outside the data"):
        frame = parcel_timeseries(tiny_cube, pd.concat([parcels, far]), bands=["B04"], stats=["mean"])
    status = frame.attrs["parcel_status"]
    assert status == pd.DataFrame(status).to_dict("records")  # what the frame of them gave
    assert [list(s) for s in status] == [["parcel_id", "status", "pixels", "reason", "tile"]] * 9
    assert {(type(s["parcel_id"]), type(s["pixels"])) for s in status} == {(int, int)}
    assert [s["parcel_id"] for s in status if s["status"] == "outside"] == [9000, 9001, 9002]
    assert all(s["pixels"] > 0 for s in status if s["status"] == "ok") and json.loads(json.dumps(status)) == status


def test_20m_bands_alone_are_measured_on_the_parcels_10m_pixels(tiny_cube, tiny_region, sample):
    """bands=["B11"] (20 m bands and SCL only) chose the parcel's pixels on a 20 m grid: other pixels, counted
    once each, so a band's numbers depended on the other bands asked for and differed from extraction's."""
    alone = parcel_timeseries(tiny_cube, sample, bands=["B11", "NDMI"])
    geoms = dict(zip(sample.parcel_id, sample.geometry, strict=True))
    assert _compare(_with_scene_ids(alone, tiny_region.items, "s2"), tiny_region.items, "s2", geoms, "B11",
                    DEFAULT_SCL_MASK) == len(sample) * 19
    mixed = parcel_timeseries(tiny_cube, sample, bands=["B04", "B11", "NDMI"])
    pd.testing.assert_frame_equal(alone, mixed[mixed.band != "B04"].reset_index(drop=True), check_exact=True)
    assert alone.attrs["parcel_status"] == mixed.attrs["parcel_status"]


@pytest.mark.parametrize("buffer", [10.0, 30.0])
def test_a_positive_buffer_keeps_every_pixel_it_reaches(tiny_cube, parcels, sample, buffer):
    """The parcels were read from the box of their outlines, which a positive buffer reaches beyond: the pixels
    there were left out, so a parcel got fewer pixels alone than beside parcels whose box held them."""
    from cube.membership import parcel_pixels, window_for

    grid = TileGrid.from_id("31UFU").geobox(10)
    for pid, geom in zip(sample.parcel_id, sample.geometry, strict=True):
        around = grid[window_for(geom, grid, buffer=buffer, pad=4)]
        alone = parcel_timeseries(tiny_cube, [pid], registry=parcels, bands=["B04"], buffer=buffer)
        assert alone.attrs["parcel_status"][0]["pixels"] == parcel_pixels(geom, around, buffer=buffer).sum() > 0
    together = parcel_timeseries(tiny_cube, parcels, bands=["B04"], buffer=buffer)
    alone = parcel_timeseries(tiny_cube, sample, bands=["B04"], buffer=buffer)
    pd.testing.assert_frame_equal(together[together.parcel_id.isin(sample.parcel_id)].reset_index(drop=True), alone)


def test_a_buffer_of_kilometres_is_refused_and_too_many_pixels_before_any_mask_is_made(tiny_cube, parcels, tiny_region,
                                                                                        monkeypatch, capsys, tmp_path):
    """``--buffer 100000`` over the tiny region's parcels ran for minutes and gigabytes (each parcel's mask grew to
    its whole tile, and the pixel limit was checked once every mask was made): a buffer is bounded as the REST
    service bounds it, and the limit is checked on the windows, before any mask."""
    from cardcube.cli import main
    from cube import timeseries
    from cube.membership import MAX_BUFFER

    for buffer in (MAX_BUFFER + 1, -1e5):
        with pytest.raises(InvalidRequestError, match=rf"buffer {buffer:g} m: give -100 to 100 metres"):
            parcel_timeseries(tiny_cube, parcels, bands=["B04"], buffer=buffer)
    assert main(["timeseries", "--cube", str(tiny_cube), "--parcels", str(tiny_region.parcels), "--bands", "B04",
                 "--buffer", "100000", "--out", str(tmp_path / "x.csv")]) == 2
    assert "buffer 100000 m: give -100 to 100 metres" in capsys.readouterr().err
    masks = []
    monkeypatch.setattr(timeseries, "parcel_pixels", lambda *a, **k: masks.append(a) or np.ones((1, 1), bool))
    with pytest.raises(RequestTooLargeError, match=r"the parcels' windows hold [\d,]+ pixels \(limit 1,000: "):
        parcel_timeseries(tiny_cube, parcels, bands=["B04"], buffer=MAX_BUFFER, max_pixels=1000)
    assert masks == []


def test_scl_histogram_counts_every_parcel_pixel(tiny_cube, sample):
    frame = parcel_timeseries(tiny_cube, sample, bands=["B04"], mask=None)
    scl = frame.filter(like="scl_").sum(axis=1)
    assert (scl == frame["count"] + frame["masked"]).all()


def test_s1_means_average_linear_power_and_report_db(tiny_cube, tiny_region, sample):
    frame = parcel_timeseries(tiny_cube, sample, collection="s1", bands=["VH"])
    frame = _with_scene_ids(frame, tiny_region.items, "s1")
    geoms = dict(zip(sample.parcel_id, sample.geometry, strict=True))
    assert _compare(frame, tiny_region.items, "s1", geoms, "VH", None) == len(sample) * 31
    assert set(frame.orbit_state) == {"ascending", "descending"}
    assert (frame["mean"] > frame["median"] - 0.5).mean() > 0.9  # linear mean sits above the dB median


def test_the_units_of_each_band_travel_with_the_statistics(tiny_cube, sample, tmp_path):
    """Nothing said what the numbers were in (reflectance or dB; RVI, a ratio of powers, no dB): the frame's attrs
    give each band's units, and so do a Parquet file of it and the record of ``cardcube timeseries``."""
    import json

    import pyarrow.parquet as pq

    from cardcube.cli import main

    s2 = parcel_timeseries(tiny_cube, sample.iloc[:2], bands=["B04", "B11", "NDVI"], stats=["mean"])
    s1 = parcel_timeseries(tiny_cube, sample.iloc[:2], collection="s1", bands=["VH", "VH_VV", "RVI"], stats=["mean"])
    assert s2.attrs["units"] == {"B04": "1", "B11": "1", "NDVI": "1"}
    assert s1.attrs["units"] == {"VH": "dB", "VH_VV": "dB", "RVI": "1"}
    s1.to_parquet(tmp_path / "s1.parquet")
    assert json.loads(pq.read_schema(tmp_path / "s1.parquet").metadata[b"PANDAS_ATTRS"])["units"]["VH"] == "dB"
    out = tmp_path / "ts.csv"
    sample.iloc[:2].to_parquet(tmp_path / "parcels.parquet")
    assert main(["timeseries", "--cube", str(tiny_cube), "--parcels", str(tmp_path / "parcels.parquet"), "--collection",
                 "s1", "--bands", "VH,RVI", "--out", str(out)]) == 0
    assert json.loads((tmp_path / "ts.csv.json").read_text())["units"] == {"VH": "dB", "RVI": "1"}


def test_reprojected_parcels_give_the_same_numbers(tiny_cube, sample):
    utm = parcel_timeseries(tiny_cube, sample, bands=["B08"])
    lonlat = parcel_timeseries(tiny_cube, sample.to_crs("EPSG:4326"), bands=["B08"])
    pd.testing.assert_frame_equal(utm, lonlat, check_exact=False, rtol=1e-9)


def test_point_and_id_lookups_give_the_parcel(tiny_cube, parcels, sample):
    target = sample.iloc[0]
    inside = target.geometry.representative_point()
    lon, lat = gpd.GeoSeries([inside], crs=parcels.crs).to_crs("EPSG:4326").iloc[0].coords[0]
    by_point = parcel_timeseries(tiny_cube, Point(lon, lat), registry=parcels, bands=["B04"])
    by_id = parcel_timeseries(tiny_cube, [target.parcel_id], registry=parcels, bands=["B04"])
    assert set(by_point.parcel_id) == {target.parcel_id}
    pd.testing.assert_frame_equal(by_point, by_id)


def test_ids_in_a_column_of_another_name(tiny_cube, sample):
    renamed = sample.rename(columns={"parcel_id": "id"}).reset_index(drop=True)
    with pytest.raises(InvalidRequestError, match="no 'parcel_id' column"):
        parcel_timeseries(tiny_cube, renamed, bands=["B04"])
    pd.testing.assert_frame_equal(parcel_timeseries(tiny_cube, renamed, bands=["B04"], id_column="id"),
                                  parcel_timeseries(tiny_cube, sample, bands=["B04"]), check_exact=True)


def test_indices_are_computed_per_pixel(tiny_cube, sample):
    frame = parcel_timeseries(tiny_cube, sample.iloc[:1], bands=["B04", "B08", "NDVI"], mask=None)
    ndvi = frame[frame.band == "NDVI"]
    assert ndvi["max"].max() <= 1.0 and ndvi["min"].min() >= -1.0
    assert (ndvi["count"].to_numpy() == frame[frame.band == "B04"]["count"].to_numpy()).all()


def test_the_ndvi_of_pixels_dark_below_zero_stays_an_ndvi(tiny_cube, sample):
    """L2A reflectance is DN / 10000 - 0.1: water and shadow pixels read below 0. At DN 999 (red) and 1001 (near
    infrared) their sum is 0 and the NDVI inf, and so was the parcel's mean; at 1003 and 995, 4. A reflectance
    below 0 is taken as 0, so the NDVI of every pixel stays in [-1, 1]."""
    ds = open_cube(tiny_cube, bbox=tuple(sample.total_bounds), bands=["B04", "B08"], decode=False).load()
    ds["B04"][0], ds["B08"][0] = 999, 1001
    ds["B04"][1], ds["B08"][1] = 1003, 995
    frame = parcel_timeseries(ds, sample, bands=["NDVI"], mask=None)
    first = frame[frame.time.isin(ds.time.values[:2])].sort_values(["parcel_id", "time"])
    assert len(first) == 2 * len(sample) and (first["count"] > 0).all()
    np.testing.assert_array_equal(first["mean"], np.tile([1.0, -1.0], len(sample)))
    decoded = open_cube(tiny_cube, bbox=tuple(sample.total_bounds), bands=["B04", "B08"], time="2024-06").load()
    decoded["B04"][0], decoded["B08"][0] = -0.0001, 0.0001
    ndvi = add_indices(decoded, "NDVI").NDVI
    assert (ndvi[0] == 1).all() and float(ndvi.min()) >= -1 and float(ndvi.max()) <= 1


def test_time_narrows_a_dataset_as_it_narrows_the_cube(tiny_cube, sample):
    """A Dataset given in place of the cube is read within ``time`` too (it was read whole); a range holding no
    date gives an empty frame and a warning naming the dates there are, from the Dataset as from the cube."""
    ds = open_cube(tiny_cube, bbox=tuple(sample.total_bounds), decode=False)
    june = pd.DatetimeIndex(ds.time.values)
    june = june[(june >= "2024-06-01") & (june < "2024-07-01")]
    assert 0 < len(june) < ds.sizes["time"]
    from_dataset = parcel_timeseries(ds, sample, bands=["B04"], time="2024-06")
    assert sorted(from_dataset.time.unique()) == list(june)
    pd.testing.assert_frame_equal(from_dataset, parcel_timeseries(tiny_cube, sample, bands=["B04"], time="2024-06"),
                                  check_exact=True)
    with pytest.warns(NoAcquisitionWarning, match="within the time range 2023-06: version .* holds dates from 2024"):
        empty = parcel_timeseries(tiny_cube, sample, bands=["B04"], time="2023-06")
    assert empty.empty
    pd.testing.assert_series_equal(empty.dtypes, from_dataset.dtypes)  # platform was object, not text: a concat mixed
    with pytest.warns(NoAcquisitionWarning, match="no date of the Dataset falls within the time range 2023-06; its "
                                                  "dates run from 2024"):
        assert parcel_timeseries(ds, sample, bands=["B04"], time="2023-06").empty


def test_a_dataset_is_the_version_it_was_read_at(tiny_cube, parcels, sample):
    """as_of given with a Dataset was ignored: the numbers of the Dataset's version, labelled with it, silently."""
    ds = open_cube(tiny_cube, bbox=tuple(sample.total_bounds), decode=False)
    held = ds.attrs["cardcube:version"]
    frame = parcel_timeseries(ds, sample, bands=["B04"], as_of=held)
    assert frame.attrs["cube_version"] == held
    assert {s["tile"] for s in frame.attrs["parcel_status"]} == {"31UFU"}  # the tile, as of the cube (was "")
    with pytest.raises(InvalidRequestError, match=rf"the Dataset was read at version {held} of the cube, not 99: "
                                                  r"open it with open_cube\(..., as_of=99\)"):
        parcel_timeseries(ds, sample, bands=["B04"], as_of=99)
    with pytest.raises(InvalidRequestError, match=f"read at version {held} of the cube, not 99"):
        chip(open_cube(tiny_cube, bbox=tuple(sample.total_bounds)), sample.iloc[[0]], size=8, as_of=99)


def test_a_dataset_without_scl_is_not_read_unmasked_by_default(tiny_cube, sample):
    """mask="default" of a Dataset opened without SCL gave the statistics of every pixel, clouds included, where the
    cube's location masks them."""
    ds = open_cube(tiny_cube, bbox=tuple(sample.total_bounds), bands=["B04", "B08"], decode=False)
    with pytest.raises(InvalidRequestError, match="the Dataset has no SCL band to mask clouds with"):
        parcel_timeseries(ds, sample, bands=["NDVI"])
    pd.testing.assert_frame_equal(parcel_timeseries(ds, sample, bands=["NDVI"], mask=None),
                                  parcel_timeseries(tiny_cube, sample, bands=["NDVI"], mask=None, histogram=False),
                                  check_exact=True)
    s1 = open_cube(tiny_cube, "s1", bbox=tuple(sample.total_bounds), decode=False)  # no SCL to expect
    assert not parcel_timeseries(s1, sample, bands=["VH"]).empty


def test_a_dataset_of_both_collections_merged_is_refused_not_read_all_masked(tiny_cube, sample):
    """``xr.merge([s2, s1])``, a scientist's one Dataset of both: its attrs are the first's (s2), so VV was read
    under Sentinel-2's cloud mask, whose SCL is nodata on every S1 date: a row per date, each of count 0, and no
    word of why. Refused, as it is no cube's Dataset; each collection's alone reads as ever."""
    area = tuple(sample.total_bounds)
    s2 = open_cube(tiny_cube, bbox=area, bands=["B04", "SCL"])
    s1 = open_cube(tiny_cube, "s1", bbox=area, bands=["VV"])
    merged = xr.merge([s2, s1], join="outer", compat="no_conflicts")
    for bands in (["VV"], ["B04"]):
        with pytest.raises(InvalidRequestError, match=r"the Dataset holds bands of the s2 and s1 cubes \(an xr.merge"):
            parcel_timeseries(merged, sample, bands=bands)
    alone = parcel_timeseries(s1, sample, bands=["VV"])
    assert (alone["count"] > 0).any()
    pd.testing.assert_frame_equal(alone, parcel_timeseries(tiny_cube, sample, collection="s1", bands=["VV"],
                                                           histogram=False), check_exact=True)


def test_a_dataset_whose_bands_lost_their_attributes_is_refused_not_read_in_other_units(tiny_cube, sample):
    """Under ``keep_attrs=False`` ``VV * 1`` has no ``units: dB`` (it was averaged in dB, 0.6 dB below the mean of
    linear power) and stored B04 no ``scale_factor`` (measured as reflectance: a mean of 1425), without a word."""
    s1 = open_cube(tiny_cube, "s1", bbox=tuple(sample.total_bounds))
    s2 = open_cube(tiny_cube, bbox=tuple(sample.total_bounds), bands=["B04", "SCL"], decode=False)
    with xr.set_options(keep_attrs=False):
        lost = [(s1.assign(VH=s1["VH"] * 1), "VH", r"the Dataset's VH holds backscatter without its units \(dB\)"),
                (s2.assign(B04=s2["B04"] + 0), "B04", "the Dataset's B04 holds stored integers without their "
                                                      "scale_factor, add_offset and nodata")]
    for ds, band, message in lost:
        with pytest.raises(InvalidRequestError, match=message + ": its attributes were lost"):
            parcel_timeseries(ds, sample, bands=[band])
    linear = s1.assign(VH=(10 ** (s1["VH"] / 10)).assign_attrs(units="1"))  # converted on purpose: read as it says
    want = 10 ** (parcel_timeseries(s1, sample, bands=["VH"], stats=["mean"])["mean"] / 10)
    got = parcel_timeseries(linear, sample, bands=["VH"], stats=["mean"])
    np.testing.assert_allclose(got["mean"], want, rtol=1e-5)
    assert got.attrs["units"] == {"VH": "1"}  # as read, not the cube's dB


def test_infinite_db_of_a_dataset_is_no_measurement(tiny_cube, sample):
    """A Dataset of the user's own dB (``10 log10`` of powers, some 0: -inf) had those pixels counted: a mean biased
    low by a power of 0 (-inf where all were), a std of NaN, a min of -inf, RVI 0 there. They are nodata, as ingest
    stores an infinite dB: the statistics are those of the Dataset with NaN in their place."""
    s1 = open_cube(tiny_cube, "s1", bbox=tuple(sample.total_bounds)).load()
    dark = s1["VH"] < -22
    infinite = s1.assign(VH=s1["VH"].where(~dark, -np.inf).assign_attrs(s1["VH"].attrs),
                         VV=s1["VV"].where(s1["VV"] < -5, np.inf).assign_attrs(s1["VV"].attrs))
    nodata = s1.assign(VH=s1["VH"].where(~dark).assign_attrs(s1["VH"].attrs),
                       VV=s1["VV"].where(s1["VV"] < -5).assign_attrs(s1["VV"].attrs))
    assert int(dark.sum()) and int((s1["VV"] >= -5).sum())  # both kinds of infinity are there
    bands = ["VV", "VH", "VH_VV", "RVI"]
    pd.testing.assert_frame_equal(parcel_timeseries(infinite, sample, bands=bands),
                                  parcel_timeseries(nodata, sample, bands=bands), check_exact=True)


def test_s1_indices_of_a_dataset_are_the_cubes_own(tiny_cube, sample):
    """RVI of a decoded Dataset (float32 bands) was computed in float32, a few ulps off the cube location's numbers."""
    s1 = open_cube(tiny_cube, "s1", bbox=tuple(sample.total_bounds))
    pd.testing.assert_frame_equal(parcel_timeseries(s1, sample, collection="s1", bands=["RVI", "VH_VV"]),
                                  parcel_timeseries(tiny_cube, sample, collection="s1", bands=["RVI", "VH_VV"]),
                                  check_exact=True)


def test_a_single_parcel_season_reads_only_its_chunks(tiny_cube, sample):
    store = CountingStore(open_store(tiny_cube))
    parcel = sample.iloc[[1]]
    parcel_timeseries(store, parcel, bands=["B04"], mask=None, histogram=False)
    chunk_gets = [k for k in store.keys_read if "/B04/c/" in k]
    # independent count: the 64 px chunks a 10 m window of the parcel's buffered bounds touches
    layout = ChunkLayout.parse(TEST_CHUNKS)
    rows, cols, time_chunks = season_chunks(parcel.geometry.iloc[0], layout, 19)
    shard = layout.shard_space // layout.space
    touched = len({r // shard for r in rows}) * len({c // shard for c in cols}) * time_chunks
    assert len(set(chunk_gets)) == touched  # each shard: its index once, then its chunks, adjacent ones together
    shards = {k.rsplit("/c/", 1)[1] for k in chunk_gets}
    assert 2 * touched <= len(chunk_gets) <= touched + len(rows) * len(cols) * time_chunks
    assert all(rows[0] // shard <= int(s.split("/")[1]) <= rows[-1] // shard for s in shards)
    assert all(cols[0] // shard <= int(s.split("/")[2]) <= cols[-1] // shard for s in shards)


def test_both_read_modes_give_the_same_numbers(tiny_cube, parcels, monkeypatch):
    """Parcels close together are read whole per band and time block, parcels far apart chunk by chunk:
    the same statistics either way."""
    from cube import timeseries
    from cube.ledger import read_version
    from cube.parcels import as_parcels

    spread = parcels.iloc[::7]
    tile = sorted(read_version(open_store(tiny_cube), "s2").tiles)[0]
    assert timeseries.read_mode(as_parcels(spread), tile, 10) == "window"  # the tiny region is 200 px wide
    window = parcel_timeseries(tiny_cube, spread, bands=["B04", "B11"])
    monkeypatch.setattr(timeseries, "WINDOW_READ_PIXELS", 64 * 64)
    assert timeseries.read_mode(as_parcels(spread), tile, 10) == "storage"
    pd.testing.assert_frame_equal(parcel_timeseries(tiny_cube, spread, bands=["B04", "B11"]), window,
                                  check_exact=True)


def test_clear_errors_for_parcels_that_cannot_be_measured(tiny_cube, parcels, parcel_id, sample):
    with pytest.raises(ParcelNotFoundError, match="NOPE"):
        parcel_timeseries(tiny_cube, ["NOPE"], registry=parcels)
    with pytest.raises(ParcelNotFoundError, match="no registered parcel contains"):
        parcel_timeseries(tiny_cube, Point(4.0, 52.0), registry=parcels)
    inside = parcels.set_index("parcel_id").to_crs(4326).geometry[parcel_id].representative_point()
    with pytest.raises(ParcelNotFoundError, match=f"lon and lat swapped.* is in parcel {parcel_id}"):
        parcel_timeseries(tiny_cube, Point(inside.y, inside.x), registry=parcels)  # lat, lon: the usual slip
    far = gpd.GeoDataFrame({"parcel_id": ["far"]}, geometry=[box(100, 100, 200, 200)], crs=parcels.crs)
    with pytest.raises(ParcelOutsideCubeError, match="far"):
        parcel_timeseries(tiny_cube, far)
    _, y0, x1, _ = parcels.total_bounds  # in the tile's square, but 3 km east of every scene's data:
    beside = box(x1 + 3000, y0, x1 + 3100, y0 + 100)
    assert box(*TileGrid.from_id("31UFU").bounds).contains(beside)
    off_data = gpd.GeoDataFrame({"parcel_id": ["beside"]}, geometry=[beside], crs=parcels.crs)
    with pytest.raises(ParcelOutsideCubeError, match="beside: outside the data of every tile"):
        parcel_timeseries(tiny_cube, off_data)  # not a season of nodata reported as ok
    with pytest.raises(ParcelOutsideCubeError, match="with data in it"):
        chip(tiny_cube, off_data, size=16)
    centre = sample.geometry.iloc[0].representative_point()
    sliver = gpd.GeoDataFrame({"parcel_id": ["sliver"]}, geometry=[centre.buffer(4)], crs=parcels.crs)
    with pytest.raises(ParcelTooSmallError, match="sliver"):
        parcel_timeseries(tiny_cube, sliver)
    with pytest.raises(InvalidRequestError, match="unknown band"):
        parcel_timeseries(tiny_cube, sample, bands=["B99"])
    mixed = pd.concat([sample.iloc[:1], sliver])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        frame = parcel_timeseries(tiny_cube, mixed, bands=["B04"])
    assert any("1 of 2 parcels have no statistics: parcel sliver: area" in str(w.message) for w in caught)
    status = pd.DataFrame(frame.attrs["parcel_status"]).set_index("parcel_id")
    assert status.status["sliver"] == "too_small" and set(frame.parcel_id) == {sample.parcel_id.iloc[0]}
    assert status.reason["sliver"].startswith("area ")  # the id is in its own column, as in extraction status


def test_a_collection_version_or_mask_of_the_wrong_kind_says_so(tiny_cube, sample):
    """"S1" was "no 'S1' cube here, no committed version", as_of="1" a ValueError about a format code, and
    mask="none" (the REST service's word) a ValueError about int()."""
    with pytest.raises(InvalidRequestError, match="unknown cube collection 'S1'; known: s2, s1"):
        parcel_timeseries(tiny_cube, sample, collection="S1")
    with pytest.raises(InvalidRequestError, match="unknown cube collection 'sentinel-2-l2a'"):
        open_cube(tiny_cube, "sentinel-2-l2a")
    with pytest.raises(InvalidRequestError, match=r"version \(as_of\) '1' is no version number: give an int"):
        parcel_timeseries(tiny_cube, sample, as_of="1")
    assert parcel_timeseries(tiny_cube, sample, bands=["B04"], as_of=np.int64(1)).attrs["cube_version"] == 1
    unmasked = parcel_timeseries(tiny_cube, sample, bands=["B04"], mask=None)
    pd.testing.assert_frame_equal(parcel_timeseries(tiny_cube, sample, bands=["B04"], mask="None"), unmasked)
    pd.testing.assert_frame_equal(parcel_timeseries(tiny_cube, sample, bands=["B04"], mask="DEFAULT"),
                                  parcel_timeseries(tiny_cube, sample, bands=["B04"]))
    with pytest.raises(InvalidRequestError, match="mask 'clouds': give 'default', 'none'"):
        parcel_timeseries(tiny_cube, sample, mask="clouds")
    pd.testing.assert_frame_equal(parcel_timeseries(tiny_cube, sample, bands=["B04"], mask=" 2,3, 8,9,10"),
                                  parcel_timeseries(tiny_cube, sample, bands=["B04"], mask=[2, 3, 8, 9, 10]))
    with pytest.raises(InvalidRequestError, match=r"mask \[3, 99\]: give a list of SCL class codes"):
        parcel_timeseries(tiny_cube, sample, mask="3,99")


@pytest.mark.parametrize("mask", [[99], [3.5], ["9"], 9, [True]])
def test_a_mask_of_no_scl_class_codes_says_so(tiny_cube, sample, mask, tmp_path):
    """[99] masked nothing without a word; a text, a float or a lone int failed deep in the statistics with a
    TypeError or ValueError, and a numpy array of codes with "the truth value of an array is ambiguous"."""
    with pytest.raises(InvalidRequestError, match=r"give a list of SCL class codes, e\.g\. \[0, 1, 3, 8, 9, 10, 11\] "
                       r"\(the default\); the classes: 0 no_data, 1 saturated_or_defective"):
        parcel_timeseries(tiny_cube, sample, bands=["B04"], mask=mask)
    with pytest.raises(InvalidRequestError, match="give a list of SCL class codes"):
        extract(sample, tiny_cube, tmp_path / "ex", bands=["B04"], mask=mask, progress=False)
    assert not (tmp_path / "ex").exists()
    pd.testing.assert_frame_equal(parcel_timeseries(tiny_cube, sample, bands=["B04"], mask=np.array([9, 10])),
                                  parcel_timeseries(tiny_cube, sample, bands=["B04"], mask=[9, 10]))


def test_as_of_reproduces_an_earlier_result(tiny_region, sample, tmp_path):
    chunks = ChunkLayout.parse(TEST_CHUNKS)
    early = write_items(tiny_region.items, items_of(tiny_region.items, "sentinel-1-card-bs")[:10], "early.json")
    ingest(early, tmp_path / "growing", collection="s1", chunks=chunks, progress=False)
    ingest(early, tmp_path / "frozen", collection="s1", chunks=chunks, progress=False)
    ingest(tiny_region.items, tmp_path / "growing", collection="s1", chunks=chunks, progress=False)
    then = parcel_timeseries(tmp_path / "growing", sample, collection="s1", as_of=1)
    frozen = parcel_timeseries(tmp_path / "frozen", sample, collection="s1")
    pd.testing.assert_frame_equal(then, frozen)
    assert parcel_timeseries(tmp_path / "growing", sample, collection="s1").attrs["cube_version"] == 2


def test_a_version_of_another_cube_or_collection_is_refused_as_as_of(appended_cube, tiny_cube, sample, tmp_path):
    """A CubeVersion given as as_of was used as it was, whatever cube it was read from: version 1 of a cube appended
    date by date (4 dates cold, its fifth in hot slot 0) read the tiny cube's hot slot 0, another date's pixels, as
    its fifth date, without a word. Refused now, naming both cubes; the same cube's version read through a copy (its
    record committed at the same time) reads as a number would."""
    import shutil

    from cube.ledger import read_version

    other = read_version(open_store(appended_cube), "s2", 1)
    with pytest.raises(InvalidRequestError, match=rf"version 1 of the s2 cube \(as_of\) was read from the cube at "
                                                  rf"{appended_cube}, not from the cube at {tiny_cube} \(whose version "
                                                  r"1 was committed at .*give as_of=1 \(a number\)"):
        parcel_timeseries(tiny_cube, sample, bands=["B04"], as_of=other)
    with pytest.raises(InvalidRequestError, match="was read from the cube at"):
        open_cube(tiny_cube, as_of=other, bands=["B04"])
    with pytest.raises(InvalidRequestError, match="version 1 is of the s1 cube, not of s2"):
        parcel_timeseries(tiny_cube, sample, bands=["B04"], as_of=read_version(open_store(tiny_cube), "s1", 1))
    ds = open_cube(tiny_cube, bbox=tuple(sample.total_bounds))
    with pytest.raises(InvalidRequestError, match=rf"the Dataset was read from the s2 cube at {tiny_cube}, and as_of "
                                                  rf"is a version of the s2 cube at {appended_cube}"):
        parcel_timeseries(ds, sample, bands=["B04"], as_of=other)
    copy = shutil.copytree(appended_cube, tmp_path / "copy")
    pd.testing.assert_frame_equal(parcel_timeseries(copy, sample, bands=["B04"], as_of=other),
                                  parcel_timeseries(copy, sample, bands=["B04"], as_of=1))
    mine = read_version(open_store(tiny_cube), "s2", 1)
    assert parcel_timeseries(ds, sample, bands=["B04"], as_of=mine).attrs["cube_version"] == 1


def test_s3_gives_the_numbers_of_the_folder(tiny_cube, tiny_region, sample, s3_bucket):
    url, opts = s3_bucket.url_for("cube"), s3_bucket.storage_options()
    ingest(tiny_region.items, url, collection="s1", chunks=ChunkLayout.parse(TEST_CHUNKS), storage_options=opts,
           progress=False)
    on_s3 = parcel_timeseries(url, sample, collection="s1", storage_options=opts)
    local = parcel_timeseries(tiny_cube, sample, collection="s1")
    pd.testing.assert_frame_equal(on_s3, local)


def test_a_dataset_reordered_or_cut_across_a_parcel_says_so_or_reads_right(tiny_cube, sample):
    """A Dataset sorted by y (south to north) measured the wrong pixels (its stale transform); one whose box cut a
    parcel gave the statistics of the part inside as "ok" without a word; an index without its bands, a DataArray
    or a reduction over time failed with a KeyError or a TypeError."""
    ds = open_cube(tiny_cube, bbox=tuple(sample.total_bounds), time="2024-06")
    want = parcel_timeseries(ds, sample, bands=["B04", "NDVI"])
    for reordered in (ds.sortby("y"), ds.sortby("x", ascending=False)):
        pd.testing.assert_frame_equal(parcel_timeseries(reordered, sample, bands=["B04", "NDVI"]), want)
    one = sample.iloc[[-1]]
    x0, y0, x1, y1 = one.total_bounds
    cut = ds.sel(x=slice(None, (x0 + x1) / 2))  # the western half of the parcel
    status = parcel_timeseries(cut, one, bands=["B04"]).attrs["parcel_status"][0]
    assert status["status"] == "ok" and "of the parcel lies outside the Dataset given" in status["reason"]
    share = float(status["reason"].split("%")[0]) / 100
    inside = one.geometry.iloc[0].intersection(box(float(cut.x.min()) - 5, y0, float(cut.x.max()) + 5, y1))
    assert share == pytest.approx(1 - inside.area / one.geometry.iloc[0].area, abs=0.01)
    # a sliver of it was "too_small": its 4.5 ha "leave no pixel after an inward buffer of 5 m"
    outside = (r"parcel .*: \d+\.\d% of the parcel lies outside the area read \(the Dataset given, or the cube's "
               r"tiles\), and its part inside holds no pixel$")
    with pytest.raises(ParcelOutsideCubeError, match=outside):
        parcel_timeseries(ds.sel(x=slice(None, x0 + 3)), one, bands=["B04"])
    speck = gpd.GeoDataFrame({"parcel_id": ["speck"]}, geometry=[box(x0 - 2, y0, x0 + 2, y0 + 4)], crs=one.crs)
    with pytest.raises(ParcelTooSmallError):  # no pixel wherever it lay: the buffer's doing, as it says
        parcel_timeseries(ds.sel(x=slice(None, x0)), speck, bands=["B04"])
    for bad, band, message in [
            (ds.cardcube.indices("NDVI")[["NDVI", "SCL"]], "NDVI",
             "the statistics of NDVI are computed from B08, B04: the Dataset lacks B08, B04"),
            (ds["B04"], "B04", r"a DataArray \(B04\): give a Dataset"),
            (ds.mean("time"), "B04", "the Dataset has no time dimension")]:
        with pytest.raises(InvalidRequestError, match=message):
            parcel_timeseries(bad, sample, bands=[band])


def test_a_dataset_of_no_even_grid_is_refused_not_measured_on_a_made_up_one(tiny_cube, sample):
    """Two areas merged with a gap between them, or columns picked, leave x unevenly spaced: the parcels were
    measured on a grid made up from the first and last coordinates (other pixels than theirs, without a word)."""
    one = sample.iloc[[-1]]
    x0, y0, x1, y1 = one.total_bounds
    ds = open_cube(tiny_cube, bbox=(x0 - 500, y0 - 20, x1 + 500, y1 + 20), bands=["B04", "B02", "B03", "SCL"],
                   time="2024-06")
    parcel_timeseries(ds, one, bands=["B04"])  # contiguous: measured
    merged = xr.merge([ds.sel(x=slice(None, x1 + 20)), ds.sel(x=slice(x1 + 300, None))], join="outer",
                      compat="no_conflicts")
    picked = ds.isel(y=[*range(ds.sizes["y"] // 2), *range(ds.sizes["y"] // 2 + 3, ds.sizes["y"])])
    for uneven, dim in ((merged, "x"), (picked, "y")):
        message = f"the Dataset's {dim} coordinates are not evenly spaced"
        with pytest.raises(InvalidRequestError, match=message):
            parcel_timeseries(uneven, one, bands=["B04"])
        with pytest.raises(InvalidRequestError, match=message):
            chip(uneven, one, size=16)


def test_a_dataset_whose_scl_became_float_reads_as_the_one_read(tiny_cube, sample):
    """``ds.where(...)``, a reindex or a merge make SCL float, NaN where they leave no value: the statistics failed
    with "classes float32 ... must be integer", and a chip counted NaN as seen (cloud share 0 outside the swath)."""
    ds = open_cube(tiny_cube, bbox=tuple(sample.total_bounds), bands=["B04", "B03", "B02", "SCL"])
    want = parcel_timeseries(ds, sample, bands=["B04"])
    x = ds["x"].values
    for floated in (ds.where(ds["B04"] > -1), ds.where(ds["SCL"] != 0),
                    ds.reindex(x=np.arange(x[0] - 100, x[-1] + 100, 10.0))):
        assert floated["SCL"].dtype.kind == "f"
        pd.testing.assert_frame_equal(parcel_timeseries(floated, sample, bands=["B04"]), want)
    one = sample.parcel_id.iloc[0]
    shown = chip(ds.where(ds["SCL"] != 0), one, registry=sample, size=16)
    np.testing.assert_array_equal(shown.cloud_fraction(), chip(ds, one, registry=sample, size=16).cloud_fraction())
    with pytest.raises(InvalidRequestError, match=r"the Dataset's SCL holds \d.*, no scene class code \(0 to 11\)"):
        parcel_timeseries(ds.resample(time="1MS").mean(), sample, bands=["B04"])


def test_check_query_says_a_bad_statistic_before_a_bad_band(tiny_cube, tiny_region):
    """The REST service checks a query before its turn to read with check_query: the same first error as
    parcel_timeseries gives, a statistic before a band."""
    from cube.ledger import read_version
    from cube.timeseries import check_query

    version = read_version(open_store(tiny_cube, read_only=True), "s2")
    with pytest.raises(InvalidRequestError, match="unknown statistic"):
        check_query(version, bands="B99", stats="bogus", mask="default")
    with pytest.raises(InvalidRequestError, match="unknown statistic"):
        parcel_timeseries(tiny_cube, gpd.read_parquet(tiny_region.parcels).iloc[:1], bands="B99", stats="bogus")


def test_a_parcel_just_beyond_the_data_whose_grown_outline_holds_some_is_measured_with_a_positive_buffer(
        tiny_cube, tmp_path):
    """A parcel 40 m beyond the edge of the cube's data, read with ``buffer=100``: its grown outline holds 60 m of
    the data, yet the tile choice judged its outline alone and called it ``outside``. It is judged by its grown
    outline now, in time series and extraction alike, and its counts are numpy's over the pixels whose centres lie
    in that outline."""
    import shapely

    from cube.extract import read_status, read_timeseries
    from cube.ledger import data_footprint, read_version

    version = read_version(open_store(tiny_cube), "s2")
    tile = next(iter(version.tiles))
    x0, _, x1, top = data_footprint(version, tile).bounds
    x = (x0 + x1) / 2
    outline = box(x - 100, top + 40, x + 100, top + 140)
    parcel = gpd.GeoDataFrame({"parcel_id": ["NORTH"]}, geometry=[outline], crs=TileGrid.from_id(tile).crs)
    with pytest.raises(ParcelOutsideCubeError):
        parcel_timeseries(tiny_cube, parcel, bands=["B04"], mask=None, buffer=0)
    frame = parcel_timeseries(tiny_cube, parcel, bands=["B04"], mask=None, buffer=100)
    assert frame.attrs["parcel_status"][0]["status"] == "ok"
    cube = open_cube(tiny_cube, "s2", bands="B04", bbox=shapely.buffer(outline, 150).bounds).B04.load()
    xs, ys = np.meshgrid(cube.x.values, cube.y.values)
    inside = shapely.contains_xy(shapely.buffer(outline, 100), xs, ys)
    want = [int((inside & ~np.isnan(cube.sel(time=t).values)).sum()) for t in cube.time.values]
    assert max(want) > 0
    assert frame.set_index("time").loc[cube.time.values, "count"].tolist() == want
    extract(parcel, tiny_cube, tmp_path / "out", bands=["B04"], mask=None, buffer=100, progress=False)
    assert read_status(tmp_path / "out").status.tolist() == ["ok"]
    assert read_timeseries(tmp_path / "out")["count"].tolist() == want


def test_a_parcel_in_lon_lat_given_latitude_first_is_outside_and_says_so(tiny_cube, sample, tmp_path):
    """EPSG:4326's official axis order is latitude first: a WFS or GML export in it, read as x/y, puts a Dutch field
    in the Indian Ocean, and its status said only "outside the data of every tile". It says lon and lat look
    swapped when, swapped back, the parcel lies in a tile's data; a parcel truly elsewhere says nothing of it."""
    import shapely

    from cube.extract import read_status

    lonlat = sample.to_crs(4326)
    swapped = lonlat.assign(geometry=shapely.transform(lonlat.geometry.values, lambda xy: xy[:, ::-1]))
    elsewhere = swapped.iloc[[0]].assign(parcel_id="elsewhere", geometry=swapped.geometry.iloc[[0]].translate(3, 0))
    given = pd.concat([lonlat.iloc[[0]], swapped.iloc[1:], elsewhere], ignore_index=True)
    frame = parcel_timeseries(tiny_cube, given, bands=["B04"])
    extract(given, tiny_cube, tmp_path / "out", bands=["B04"], progress=False)
    for status in (pd.DataFrame(frame.attrs["parcel_status"]), read_status(tmp_path / "out")):
        said = status.set_index("parcel_id")
        assert said.loc[given.parcel_id.iloc[0], "status"] == "ok"
        for pid in swapped.parcel_id.iloc[1:]:
            assert said.loc[pid, "status"] == "outside"
            assert "lon and lat swapped? so swapped it lies in the data of tile 31UFU" in said.loc[pid, "reason"]
        assert said.loc["elsewhere", "status"] == "outside" and "swapped" not in said.loc["elsewhere", "reason"]
    assert set(frame.parcel_id) == {given.parcel_id.iloc[0]}


def test_a_parcel_outside_the_data_says_where_it_and_the_data_lie(tiny_cube, tiny_region, sample, tmp_path):
    """A parcel file whose CRS is not its coordinates' (UTM coordinates labelled EPSG:3035) put every parcel outside
    the cube, each one's status "outside the data of every tile of the s2 cube", no more said, and the extraction
    "no parcel could be measured". Each says where it lies and where the data lies, in lon/lat, now."""
    import glob
    import re

    import rasterio
    import shapely
    from pyproj import Transformer

    from cube.extract import read_status

    with rasterio.open(sorted(glob.glob(str(tiny_region.out_dir / "scenes/sentinel-2-l2a/*/*_B04_10m.tif")))[0]) as r:
        left, bottom, right, top = r.bounds  # the scenes' area (every S2 scene of the region covers the same)
    corners = Transformer.from_crs(32631, 4326, always_xy=True).transform([left, right, left, right],
                                                                         [bottom, bottom, top, top])
    data = f"the cube's data lies within lon {min(corners[0]):.4f}..{max(corners[0]):.4f}, lat " \
           f"{min(corners[1]):.4f}..{max(corners[1]):.4f}"
    for given, crs in ((sample.set_crs(3035, allow_override=True), 3035),
                       (sample.assign(geometry=sample.geometry.translate(150_000, 0)), 32631)):
        points = shapely.point_on_surface(given.geometry.values)
        lon, lat = Transformer.from_crs(crs, 4326, always_xy=True).transform(shapely.get_x(points),
                                                                             shapely.get_y(points))
        with pytest.raises(ParcelOutsideCubeError) as none:  # of a time series: none measured, an error
            parcel_timeseries(tiny_cube, given, bands=["B04"])
        extract(given, tiny_cube, tmp_path / f"out{crs}", bands=["B04"], progress=False)
        for status in (pd.DataFrame(none.value.status), read_status(tmp_path / f"out{crs}")):
            said = status.set_index("parcel_id").loc[given.parcel_id]
            assert (said.status == "outside").all()
            for reason, x, y in zip(said.reason, lon, lat, strict=True):
                assert reason.startswith("outside the data of every tile of the s2 cube: it lies at lon ")
                at = re.search(r"at lon (\S+), lat (\S+) \(its coordinates read in EPSG:(\d+)\), (.*)$", reason)
                assert abs(float(at[1]) - x) < 1e-4 and abs(float(at[2]) - y) < 1e-4 and int(at[3]) == crs
                assert at[4] == data
