"""Which tiles a query reads where two tiles overlap but hold different data: a tile's square says nothing of
where, or on which dates, it has data (tiles ingested for part of an area, a scene dropped by a cloud filter,
Sentinel-1 pieces). Each test failed before the reads looked at the tiles' data: a mosaic parcel read from one
tile, a chip of no data, dates of the other tile missing, a north/south mosaic upside down."""

from __future__ import annotations

import datetime as dt
import warnings
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from pyproj import Transformer
from shapely.geometry import Point, box

from cardcube.errors import InvalidRequestError, ParcelsWithoutStatisticsWarning, RequestTooLargeError
from cardcube.grid import TileGrid
from cardcube.spec import ChunkLayout
from cardcube.storage import open_store
from cardcube.synth import SynthConfig, generate
from cube.chips import chip
from cube.dataset import open_cube
from cube.extract import extract, read_status, read_timeseries
from cube.membership import parcel_pixels
from cube.timeseries import dataset_geobox, parcel_timeseries
from ingest.job import ingest
from tests.conftest import TEST_CHUNKS
from tests.cube.kept import keep, restored
from tests.ingest.scene_edits import items_of, write_items

MAY = dict(start=dt.date(2024, 5, 1), end=dt.date(2024, 5, 20), s1=False)


def _ingest(items, features, root, name: str) -> None:
    result = ingest(write_items(items, features, name), root, chunks=ChunkLayout.parse(TEST_CHUNKS), progress=False)
    assert result.ok, result.summary()


def _on(features: list[dict], tile: str) -> list[dict]:
    return [f for f in features if f["properties"]["grid:code"].endswith(tile)]


def _may(region) -> list[dict]:
    """The region's S2 scenes of 2024-05-01 to 05-20: 4 passes on each tile."""
    return [f for f in items_of(region.items, "sentinel-2-l2a") if f["properties"]["datetime"] < "2024-05-21"]


def _in_the_overlap(region) -> gpd.GeoDataFrame:
    """The largest parcel of the straddle region that both tiles' squares and data hold whole."""
    parcels = gpd.read_parquet(region.parcels)
    inside = parcels[parcels.within(box(708300, 5843000, 709700, 5845000))]
    return inside.loc[[inside.area.idxmax()]]


@pytest.fixture(scope="module")
def patchwork(tiny_straddle_region, tmp_path_factory):
    """31UGU holds the straddle region (x 708240-710240, y 5843000-5845000); 31UFU only a strip north of it and
    west (x 707000-709800, y 5844000-5845000): in their overlap, 31UFU's square holds ground it has no data of."""
    root = tmp_path_factory.mktemp("patchwork")
    north = generate(tmp_path_factory.mktemp("north-strip"),
                     SynthConfig.tiny(size_m=(2800.0, 1000.0), origin=(707000.0, 5845000.0), seed=3, **MAY))
    may = _may(tiny_straddle_region)
    _ingest(tiny_straddle_region.items, _on(may, "31UGU"), root, "ugu.json")
    _ingest(north.items, _on(items_of(north.items, "sentinel-2-l2a"), "31UFU"), root, "ufu.json")
    return root


def _parcel(geom) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame({"parcel_id": ["P"]}, geometry=[geom], crs="EPSG:32631")


def _valid(root, geom, tile: str, band: str = "B04") -> tuple[np.ndarray, np.ndarray]:
    """Reference: the parcel's pixels with a value in ``tile`` read alone, per date (times, dates x pixels)."""
    ds = open_cube(root, tiles=tile, bbox=geom.bounds, bands=[band], resolution=10).compute()
    inside = parcel_pixels(geom, dataset_geobox(ds))
    return ds.time.values, np.isfinite(ds[band].values[:, inside])


def test_a_parcel_no_tile_holds_is_read_from_every_tile_with_its_data(patchwork):
    """Its north-west part lies in 31UFU's data only, its south in 31UGU's only: it was read from 31UFU alone
    (whose square holds it), its count on every date that tile's pixels only."""
    geom = box(707500, 5843800, 708800, 5844400)
    frame = parcel_timeseries(patchwork, _parcel(geom), bands=["B04"], stats=["count"], mask=None)
    (status,) = frame.attrs["parcel_status"]
    assert status["status"] == "ok" and status["tile"] == "31UFU+31UGU"
    (t_fu, fu), (t_gu, gu) = _valid(patchwork, geom, "31UFU"), _valid(patchwork, geom, "31UGU")
    np.testing.assert_array_equal(t_fu, t_gu)  # the same passes (the synthetic schedule)
    want = (fu | gu).sum(axis=1)
    assert (fu.sum(axis=1) > 0).all() and (gu.sum(axis=1) > 0).all()
    np.testing.assert_array_equal(frame.sort_values("time")["count"].to_numpy(), want)


def test_a_chip_reads_the_tile_holding_its_parcel_s_data(patchwork):
    """A 128 px chip of a parcel in 31UGU's data alone reaches 31UFU's strip: 31UFU (first by name, its square
    holds the chip) was read, and the parcel drawn as no data on every date."""  # now: 31UGU's pixels
    geom = box(708510, 5843520, 708570, 5843580)
    c = chip(patchwork, _parcel(geom), size=128)
    assert c.data.sizes["time"] == 4
    assert (c.nodata_fraction() == 0).sum() == 2  # the other two passes' swath ends west of it
    alone = open_cube(patchwork, tiles="31UGU", bbox=geom.bounds, bands=["B04"]).compute()
    at = dict(x=alone.x.values, y=alone.y.values)
    np.testing.assert_array_equal(c.data["B04"].sel(at).values, alone["B04"].values)


def test_a_chip_across_a_tile_s_edge_shows_that_tile_s_data(tmp_path_factory):
    """31UGU's data east of x 709500, 31UFU's west of its edge (x 709800): a 64 px chip at x 709600 lies in 31UGU's
    square alone, and was read from 31UGU alone, 31UFU's pixels west of 709500 drawn as no data (its square ends
    within the chip). Now a mosaic of both, as open_cube reads the chip's box."""
    root = tmp_path_factory.mktemp("edge-chip")
    for tile, origin in (("31UGU", (709500.0, 5845000.0)), ("31UFU", (708000.0, 5845000.0))):
        region = generate(tmp_path_factory.mktemp(f"edge-{tile}"),
                          SynthConfig.tiny(tile=tile, origin=origin, size_m=(1800.0, 1000.0), **MAY))
        _ingest(region.items, _on(items_of(region.items, "sentinel-2-l2a"), tile), root, f"{tile}.json")
    c = chip(root, Point(*Transformer.from_crs(32631, 4326, always_xy=True).transform(709600, 5844500)),
             size=64, bands="B04")
    west = c.data["B04"].sel(x=slice(None, 709500)).values
    assert west.shape[-1] == 22 and not np.isnan(west).all(axis=(1, 2)).any()  # 31UFU's data on every date
    box_ = c.geobox.boundingbox
    want = open_cube(root, bbox=(box_.left, box_.bottom, box_.right, box_.top), bands=["B04"]).compute()
    np.testing.assert_array_equal(c.data["B04"].values, want["B04"].values)


def test_an_area_a_tile_s_square_holds_without_its_data_is_read_from_the_tile_with_it(patchwork):
    """The bbox of a parcel in 31UGU's data alone was read from 31UFU: "the area holds no data of the cube"."""
    area = (708510, 5843520, 708570, 5843580)
    ds = open_cube(patchwork, bbox=area, bands=["B04"])
    assert ds.attrs["cardcube:tiles"] == "31UGU" and bool(np.isfinite(ds["B04"]).any())


@pytest.fixture(scope="module")
def one_date_missing(tiny_straddle_region, tmp_path_factory):
    """The straddle region's May scenes, without 31UGU's of 2024-05-07 (a cloud filter, a failed download)."""
    root = tmp_path_factory.mktemp("one-date-missing")
    may = _may(tiny_straddle_region)
    kept = [f for f in may if not (f["properties"]["grid:code"].endswith("31UGU")
                                   and f["properties"]["datetime"].startswith("2024-05-07"))]
    assert len(kept) == len(may) - 1
    _ingest(tiny_straddle_region.items, kept, root, "kept.json")
    return root


def test_a_date_one_tile_lacks_is_read_from_the_other(one_date_missing, tiny_straddle_region):
    """31UGU holds the whole region and was read alone: the date only 31UFU holds was missing from open_cube(),
    and a chip of it said there was no acquisition. Each date keeps its metadata in the mosaic (xarray dropped
    the coordinates the tiles disagreed on)."""
    ds = open_cube(one_date_missing, bands=["B04"])
    days = [str(t)[:10] for t in ds.time.values]
    assert days == ["2024-05-02", "2024-05-07", "2024-05-12", "2024-05-17"]
    assert {"platform", "relative_orbit", "orbit_state", "scene_id"} <= set(ds.coords)
    assert ds["tile"].values[1] == "31UFU" and "31UFU" in ds["tile"].values[0] and "31UGU" in ds["tile"].values[0]
    assert "T31UFU" in ds["scene_id"].values[1] and "+" not in ds["scene_id"].values[1]
    overlap = _in_the_overlap(tiny_straddle_region)
    c = chip(one_date_missing, overlap, size=32, date="2024-05-07")
    alone = open_cube(one_date_missing, tiles="31UFU", bbox=c.data.rio.bounds(), bands=["B04"], time="2024-05-07")
    np.testing.assert_array_equal(c.data["B04"].values, alone["B04"].values)


def test_a_parcel_two_tiles_hold_is_read_from_the_one_with_the_most_dates(tiny_straddle_region, tmp_path):
    """The first tile by name was read: 31UFU, lacking a date 31UGU holds (a tile added later with its recent dates
    only took the season away from the parcels of the overlap)."""
    may = _may(tiny_straddle_region)
    _ingest(tiny_straddle_region.items, [f for f in may if not (f["properties"]["grid:code"].endswith("31UFU")
                                         and f["properties"]["datetime"].startswith("2024-05-07"))], tmp_path, "k.json")
    overlap = _in_the_overlap(tiny_straddle_region)
    frame = parcel_timeseries(tmp_path, overlap, bands=["B04"], stats=["count"], mask=None)
    assert frame.attrs["parcel_status"][0]["tile"] == "31UGU"
    assert [str(t)[:10] for t in frame.time] == ["2024-05-02", "2024-05-07", "2024-05-12", "2024-05-17"]


@pytest.fixture(scope="module")
def two_histories(tiny_straddle_region, tmp_path_factory):
    """The straddle region's May scenes without 31UGU's of 2024-05-07 and 31UFU's of 2024-05-12: each tile lacks a
    date the other holds (a scene rejected on one tile, tiles ingested in other batches)."""
    root = tmp_path_factory.mktemp("two-histories")
    dropped = {("31UGU", "2024-05-07"), ("31UFU", "2024-05-12")}
    kept = [f for f in _may(tiny_straddle_region)
            if (f["properties"]["grid:code"][-5:], f["properties"]["datetime"][:10]) not in dropped]
    _ingest(tiny_straddle_region.items, kept, root, "kept.json")
    return root


def test_a_parcel_two_tiles_hold_gets_the_dates_of_both(two_histories, tiny_straddle_region):
    """It was read from one tile (the one with the most dates): the date only the other holds was left out of
    its series, as ok, and a ``time`` of that date was a 404 in the REST service. Each date is read from a tile
    holding it: the numbers are those of that tile's pixels."""
    overlap = _in_the_overlap(tiny_straddle_region)
    geom = overlap.geometry.iloc[0]
    frame = parcel_timeseries(two_histories, overlap, bands=["B04"], stats=["count", "mean"], mask=None, buffer=0)
    (status,) = frame.attrs["parcel_status"]
    assert status["status"] == "ok" and sorted(status["tile"].split("+")) == ["31UFU", "31UGU"]
    days = [str(t)[:10] for t in frame.time]
    assert days == ["2024-05-02", "2024-05-07", "2024-05-12", "2024-05-17"]
    for day, row in zip(days, frame.itertuples(), strict=True):
        tile = {"2024-05-07": "31UFU", "2024-05-12": "31UGU"}.get(day, status["tile"].split("+")[0])
        ds = open_cube(two_histories, tiles=tile, bbox=geom.bounds, bands=["B04"], time=day, decode=False).compute()
        assert str(ds.time.values[0])[:10] == day and ds.attrs["cardcube:tiles"] == tile
        stored, attrs = ds["B04"].values[0][parcel_pixels(geom, dataset_geobox(ds), buffer=0)], ds["B04"].attrs
        values = stored[stored != attrs["nodata"]] * attrs["scale_factor"] + attrs["add_offset"]
        assert row.count == values.size > 0
        assert row.mean == pytest.approx(values.mean(), rel=1e-12)
    assert parcel_timeseries(two_histories, overlap, bands=["B04"], time="2024-05-07", mask=None).time.size == 1


def test_a_parcel_whose_tile_holds_no_date_of_the_time_range_says_so(two_histories, tiny_straddle_region, tmp_path):
    """31UGU lacks 2024-05-07, which 31UFU holds: its own parcels had status "ok", pixels, no reason, and no row."""
    parcels = gpd.read_parquet(tiny_straddle_region.parcels)
    extract(parcels, two_histories, tmp_path / "out", bands=["B04"], time="2024-05-07", progress=False)
    status = read_status(tmp_path / "out").set_index("parcel_id")
    measured = set(read_timeseries(tmp_path / "out").parcel_id)
    said = status.reason.str.contains("no acquisition of tile 31UGU within the time range 2024-05-07: no row")
    assert said.sum() > 10 and (status.tile[said] == "31UGU").all() and (status.status[said] == "ok").all()
    assert not set(status.index[said]) & measured
    assert set(status.index[(status.status == "ok") & ~said]) == measured
    frame = parcel_timeseries(two_histories, parcels, bands=["B04"], time="2024-05-07")
    reasons = pd.DataFrame(frame.attrs["parcel_status"]).set_index("parcel_id").reason
    pd.testing.assert_series_equal(reasons.sort_index(), status.reason.sort_index(), check_names=False)


@pytest.mark.parametrize("batch_m", [None, 400.0])
def test_extraction_reads_the_dates_of_both_tiles_as_parcel_timeseries(two_histories, tiny_straddle_region,
                                                                        tmp_path, monkeypatch, batch_m):
    """Extraction read each parcel from one tile as well. The parcels read from several tiles are read in squares
    (here, with squares of 400 m, in tens of batches): the same numbers."""
    if batch_m:
        monkeypatch.setattr("cube.work_units.ACROSS_BATCH_M", batch_m)
    calls = []
    monkeypatch.setattr("cube.extract_job.parcel_timeseries",
                        lambda *a, **k: calls.append(1) or parcel_timeseries(*a, **k))
    parcels = gpd.read_parquet(tiny_straddle_region.parcels)
    x0, y0, _, _ = _in_the_overlap(tiny_straddle_region).to_crs(parcels.crs).total_bounds
    speck = gpd.GeoDataFrame({"parcel_id": ["speck"]}, geometry=[box(x0 + 1, y0 + 1, x0 + 7, y0 + 7)], crs=parcels.crs)
    parcels = pd.concat([parcels, speck], ignore_index=True)  # too small, read across tiles with its neighbours
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = extract(parcels, two_histories, tmp_path / "out", bands=["B04", "NDVI"], progress=False)
    # a batch's parcel without statistics was a warning as well as its status
    assert read_status(tmp_path / "out").set_index("parcel_id").status["speck"] == "too_small"
    assert not [w for w in caught if issubclass(w.category, ParcelsWithoutStatisticsWarning)]
    assert len(calls) < 10 if batch_m is None else len(calls) > 20, len(calls)
    assert result.status["ok"] > 0 and not result.failures
    with pytest.warns(UserWarning, match="no statistics"):
        reference = parcel_timeseries(two_histories, parcels, bands=["B04", "NDVI"])
    extracted = read_timeseries(tmp_path / "out").drop(columns="tile")
    key = ["parcel_id", "time", "band"]
    pd.testing.assert_frame_equal(extracted.sort_values(key, ignore_index=True),
                                  reference[extracted.columns].sort_values(key, ignore_index=True),
                                  check_dtype=False, check_exact=True, check_categorical=False)
    status = read_status(tmp_path / "out").set_index("parcel_id")
    pid = _in_the_overlap(tiny_straddle_region).parcel_id.iloc[0]
    assert "+" in status.tile[pid]
    assert extracted[extracted.parcel_id == pid].time.nunique() == 4


@pytest.mark.timeout(240)  # a hung worker fails in minutes
def test_the_batches_across_tiles_are_tasks_beside_the_units_on_threads_and_on_a_cluster(
        two_histories, tiny_straddle_region, tmp_path, monkeypatch):
    """They were read one after the other in the calling thread, once every unit was done: a core idle while
    they ran (3.1 s of a 4.1 s extraction of this region). Dask tasks now, with the units: in dask's threads by
    default, in a cluster's worker processes (each pickled with what it reads), the same files."""
    import threading

    from distributed import LocalCluster

    monkeypatch.setattr("cube.work_units.ACROSS_BATCH_M", 400.0)
    parcels = gpd.read_parquet(tiny_straddle_region.parcels)
    threads = []
    monkeypatch.setattr("cube.extract_job.parcel_timeseries",
                        lambda *a, **k: threads.append(threading.current_thread()) or parcel_timeseries(*a, **k))
    extract(parcels, two_histories, tmp_path / "threads", bands=["B04"], progress=False)
    assert len(threads) > 10 and threading.main_thread() not in threads
    monkeypatch.undo()  # the workers' module is not patched: the batches must be read there
    monkeypatch.setattr("cube.work_units.ACROSS_BATCH_M", 400.0)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        extract(parcels, two_histories, tmp_path / "cluster", bands=["B04"], scheduler=cluster.scheduler_address,
                progress=False)
    key = ["parcel_id", "time", "band"]
    def batches(out: str) -> list[str]:  # the files' names but each run's own token
        return sorted(p.stem.rsplit("-", 1)[0] for p in (tmp_path / out / "timeseries" / "tile=mosaic").glob("*"))

    assert batches("threads") == batches("cluster") and len(batches("threads")) > 1
    pd.testing.assert_frame_equal(read_timeseries(tmp_path / "cluster").sort_values(key, ignore_index=True),
                                  read_timeseries(tmp_path / "threads").sort_values(key, ignore_index=True))
    pd.testing.assert_frame_equal(read_status(tmp_path / "cluster"), read_status(tmp_path / "threads"))


def test_an_interrupted_extraction_reads_again_only_the_batches_across_tiles_it_had_not_written(
        in_batches, tiny_straddle_region, monkeypatch):
    """The parcels read across tiles were one file, written once all were read: an interrupted run read them all
    again, and their rows were held in memory together. A file a batch now."""
    monkeypatch.setattr("cube.work_units.ACROSS_BATCH_M", 400.0)
    parcels = gpd.read_parquet(tiny_straddle_region.parcels)
    cube, out = in_batches  # extracted, in batches of 400 m
    parts = sorted((out / "timeseries" / "tile=mosaic").glob("part-*.parquet"))
    whole = read_timeseries(out)
    assert len(parts) >= 10
    parts[3].unlink()  # as if the run had stopped before it
    calls = []
    monkeypatch.setattr("cube.extract_job.parcel_timeseries",
                        lambda *a, **k: calls.append(1) or parcel_timeseries(*a, **k))
    again = extract(parcels, cube, out, bands=["B04"], progress=False)
    assert len(calls) == 1 and again.units == 1 and again.units_resumed >= len(parts) - 1
    key = ["parcel_id", "time", "band"]
    pd.testing.assert_frame_equal(read_timeseries(out).sort_values(key, ignore_index=True),
                                  whole.sort_values(key, ignore_index=True))
    assert (read_status(out).set_index("parcel_id").status == "ok").sum() == again.status["ok"] > 0


def _by_day(region, wanted: set[tuple[str, str]]) -> list[dict]:
    """The region's May scenes of the (tile, day) pairs ``wanted``."""
    return [f for f in _may(region) if (f["properties"]["grid:code"][-5:], f["properties"]["datetime"][:10]) in wanted]


@pytest.fixture(scope="module")
def _in_batches_once(two_histories, tiny_straddle_region, tmp_path_factory) -> tuple[Path, Path]:
    """A copy of ``two_histories`` (``cube``) and its extraction of B04 with the parcels read across tiles in squares
    of 400 m (``out``: tens of batch files), made once for the module in ``work`` (kept: :mod:`tests.cube.kept`);
    and a whole extraction, in the same squares, of the cube given 31UFU's late scene of 2024-05-12 (the reference of
    the updates that add it)."""
    import shutil

    root = tmp_path_factory.mktemp("in-batches")
    parcels = gpd.read_parquet(tiny_straddle_region.parcels)
    with pytest.MonkeyPatch.context() as patched:
        patched.setattr("cube.work_units.ACROSS_BATCH_M", 400.0)
        shutil.copytree(two_histories, root / "work" / "cube")
        extract(parcels, root / "work" / "cube", root / "work" / "out", bands=["B04"], progress=False)
        keep(root / "work")
        late = Path(shutil.copytree(root / "work" / "cube", root / "late-cube"))
        _ingest(tiny_straddle_region.items, _by_day(tiny_straddle_region, {("31UFU", "2024-05-12")}), late,
                "late.json")
        extract(parcels, late, root / "late-whole", bands=["B04"], progress=False)
    return root, root / "late-whole"


@pytest.fixture
def in_batches(_in_batches_once) -> tuple[Path, Path]:
    """:func:`_in_batches_once`'s cube and extraction for one test to change: the module's copy restored at the
    same place (an extraction names its cube by path)."""
    root, _ = _in_batches_once
    work = restored(root / "work")
    return work / "cube", work / "out"


@pytest.fixture(scope="module")
def late_whole(_in_batches_once) -> Path:
    """A whole extraction, in squares of 400 m, of ``two_histories`` given 31UFU's scene of 2024-05-12 (read only)."""
    return _in_batches_once[1]


def _same_rows(a: pd.DataFrame, b: pd.DataFrame) -> None:
    key = ["parcel_id", "time", "band"]
    pd.testing.assert_frame_equal(a.drop(columns=["cube_version", "tile"]).sort_values(key, ignore_index=True),
                                  b.drop(columns=["cube_version", "tile"]).sort_values(key, ignore_index=True),
                                  check_exact=True, check_categorical=False)


def test_an_update_keeps_a_parcel_on_its_tile_while_the_neighbour_s_scene_of_a_date_came_first(
        tiny_straddle_region, tmp_path):
    """31UGU's scene of 2024-05-12 was ingested a day before 31UFU's: the parcels of the overlap, read from 31UFU,
    were then read from 31UGU (more dates), and the update was refused ("extract into a new --out"), every parcel
    of the territory without its new date. They stay on 31UFU, their status saying what 31UGU holds that it
    lacks; once 31UFU's scene is in, the extraction equals a whole one."""
    region, cube, out = tiny_straddle_region, tmp_path / "cube", tmp_path / "out"
    parcels = gpd.read_parquet(region.parcels)
    pid = _in_the_overlap(region).parcel_id.iloc[0]
    kw = {"bands": ["B04"], "progress": False}
    days = ("2024-05-02", "2024-05-07")
    _ingest(region.items, _by_day(region, {(t, d) for t in ("31UFU", "31UGU") for d in days}), cube, "v1.json")
    extract(parcels, cube, out, **kw)
    assert read_status(out).set_index("parcel_id").tile[pid] == "31UFU"
    _ingest(region.items, _by_day(region, {("31UGU", "2024-05-12")}), cube, "v2.json")
    extract(parcels, cube, out, update=True, **kw)
    status = read_status(out).set_index("parcel_id")
    assert status.tile[pid] == "31UFU" and "the dates 31UGU holds over it and 31UFU lacks are not in it" in \
        status.reason[pid]
    assert read_timeseries(out).query("parcel_id == @pid").time.nunique() == 2
    rows = read_timeseries(out)
    again = extract(parcels, cube, out, **kw)  # the first run's command again (no --update): it moved them to 31UGU
    assert again.rows == 0 and read_status(out).set_index("parcel_id").tile[pid] == "31UFU"
    _same_rows(read_timeseries(out), rows)
    _ingest(region.items, _by_day(region, {("31UFU", "2024-05-12")}), cube, "v3.json")
    extract(parcels, cube, out, update=True, **kw)
    assert read_status(out).set_index("parcel_id").reason[pid] == ""
    extract(parcels, cube, tmp_path / "whole", **kw)
    _same_rows(read_timeseries(out), read_timeseries(tmp_path / "whole"))


def test_an_update_reads_a_parcel_read_across_tiles_whole_again_once_one_tile_holds_its_dates(
        two_histories, tiny_straddle_region, tmp_path):
    """31UGU's missing scene of 2024-05-07 came later: the parcels read across both tiles, now held by 31UGU with
    every date, were refused as "read from other tiles"."""
    import shutil

    region, cube, out = tiny_straddle_region, tmp_path / "cube", tmp_path / "out"
    shutil.copytree(two_histories, cube)
    parcels = gpd.read_parquet(region.parcels)
    pid = _in_the_overlap(region).parcel_id.iloc[0]
    extract(parcels, cube, out, bands=["B04"], progress=False)
    assert "+" in read_status(out).set_index("parcel_id").tile[pid]
    _ingest(region.items, _by_day(region, {("31UGU", "2024-05-07")}), cube, "late.json")
    extract(parcels, cube, out, update=True, bands=["B04"], progress=False)
    extract(parcels, cube, tmp_path / "whole", bands=["B04"], progress=False)
    assert read_status(tmp_path / "whole").set_index("parcel_id").tile[pid] == "31UGU"
    _same_rows(read_timeseries(out), read_timeseries(tmp_path / "whole"))


def test_a_batch_across_tiles_that_fails_in_an_update_is_read_again_by_the_next_run(
        in_batches, late_whole, tiny_straddle_region, monkeypatch):
    """A batch failing in an update (the store out of reach for a moment) left the earlier version's file, which
    the next run took as done: its parcels "ok" without the update's dates. (The outage is raised where the batch
    is read: a real one would fail the units as well.)"""
    from cardcube.errors import StoreUnavailableError

    region, (cube, out) = tiny_straddle_region, in_batches  # extracted, in batches of 400 m
    monkeypatch.setattr("cube.work_units.ACROSS_BATCH_M", 400.0)
    parcels = gpd.read_parquet(region.parcels)
    _ingest(region.items, _by_day(region, {("31UFU", "2024-05-12")}), cube, "late.json")
    pid = _in_the_overlap(region).parcel_id.iloc[0]
    parts = out / "timeseries" / "tile=mosaic"
    assert pid in set(pd.concat(map(pd.read_parquet, parts.glob("*.parquet"))).parcel_id)
    calls = []

    def outage_once(store, batch, **kwargs):  # the batch holding ``pid``, once
        if pid in batch and not calls:
            calls.append(1)
            raise StoreUnavailableError("the store cannot be reached")
        return parcel_timeseries(store, batch, **kwargs)

    monkeypatch.setattr("cube.extract_job.parcel_timeseries", outage_once)
    failed = extract(parcels, cube, out, update=True, bands=["B04"], progress=False)
    assert failed.failures and read_status(out).set_index("parcel_id").status[pid] == "failed"
    assert pid not in set(pd.concat(map(pd.read_parquet, parts.glob("*.parquet"))).parcel_id)
    again = extract(parcels, cube, out, update=True, bands=["B04"], progress=False)
    assert not again.failures and again.status["failed"] == 0
    _same_rows(read_timeseries(out), read_timeseries(late_whole))


def test_an_interrupted_update_reads_again_only_the_batches_across_tiles_it_had_not_written(
        in_batches, late_whole, tiny_straddle_region, monkeypatch):
    """An update reads every batch again (a date may be new in one of their tiles): resumed, it read again those it
    had written too, and as they ran first (the longest tasks), an update stopped again and again never reached
    its work units."""
    region, (cube, out) = tiny_straddle_region, in_batches  # extracted, in batches of 400 m
    monkeypatch.setattr("cube.work_units.ACROSS_BATCH_M", 400.0)
    parcels = gpd.read_parquet(region.parcels)
    kw = {"bands": ["B04"], "progress": False, "scheduler": "sync"}
    _ingest(region.items, _by_day(region, {("31UFU", "2024-05-12")}), cube, "late.json")
    calls = []

    def stopped_at_the_fifth(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return parcel_timeseries(*args, **kwargs)

    monkeypatch.setattr("cube.extract_job.parcel_timeseries", stopped_at_the_fifth)
    with pytest.raises(KeyboardInterrupt):
        extract(parcels, cube, out, update=True, **kw)
    calls.clear()
    monkeypatch.setattr("cube.extract_job.parcel_timeseries",
                        lambda *a, **k: calls.append(1) or parcel_timeseries(*a, **k))
    resumed = extract(parcels, cube, out, update=True, **kw)
    batches = len(list((out / "timeseries" / "tile=mosaic").glob("part-*.parquet")))
    assert batches > 10 and len(calls) == batches - 4 and resumed.units_resumed >= 4
    _same_rows(read_timeseries(out), read_timeseries(late_whole))


def test_an_extraction_interrupted_under_another_choice_of_tiles_is_not_resumed(two_histories, tiny_straddle_region,
                                                                                 tmp_path):
    """One interrupted before the parcels of the overlaps were read across tiles had their rows in its tiles'
    files; resumed, they were read again across tiles: 1,014 of 1,324 rows twice."""
    import json

    from cardcube.errors import InvalidRequestError

    parcels, out = gpd.read_parquet(tiny_straddle_region.parcels), tmp_path / "out"
    extract(parcels, two_histories, out, bands=["B04"], progress=False)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["tile_rule"] == 2
    manifest.pop("tile_rule")  # as an earlier cardcube wrote it, before the run completed
    (out / "manifest.json").write_text(json.dumps({**manifest, "complete": False}))
    with pytest.raises(InvalidRequestError, match="unfinished, by a cardcube that read some parcels from other tiles"):
        extract(parcels, two_histories, out, bands=["B04"], progress=False)


def test_a_pass_over_two_tiles_counts_once_though_its_granules_carry_their_own_times(tiny_straddle_region, tmp_path):
    """Real granules of one datatake carry times seconds apart: "/collections/s2" said 8 dates for 4 passes."""
    from cube.dataset import pass_dates
    from cube.ledger import read_version
    from cube.service import _collection_info

    later = []
    for f in _may(tiny_straddle_region):
        if f["properties"]["grid:code"].endswith("31UGU"):
            t = dt.datetime.fromisoformat(f["properties"]["datetime"].replace("Z", "+00:00")) + dt.timedelta(seconds=3)
            f = {**f, "properties": {**f["properties"], "datetime": t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")}}
        later.append(f)
    _ingest(tiny_straddle_region.items, later, tmp_path, "later.json")
    version = read_version(open_store(tmp_path, read_only=True), "s2")
    assert len({a.time for state in version.tiles.values() for a in state.acquisitions}) == 8
    assert len(pass_dates(version)) == _collection_info(version)["dates"] == 4
    assert open_cube(tmp_path, bands=["B04"]).sizes["time"] == 4


def test_a_north_south_mosaic_is_north_up(tmp_path_factory):
    """Tiles one above the other: the mosaic came back south up (y ascending), and ``ds.rio.transform()`` put
    its pixels elsewhere (a parcel rasterised with it had no pixel)."""
    region = generate(tmp_path_factory.mktemp("north-south"),
                      SynthConfig.tiny(size_m=(1000.0, 2000.0), origin=(680000.0, 5791240.0), **MAY))
    features = items_of(region.items, "sentinel-2-l2a")
    days = sorted({f["properties"]["datetime"][:10] for f in features})
    root = tmp_path_factory.mktemp("north-south-cube")  # 31UFT the first date, 31UFU (its north half) the last
    _ingest(region.items, [f for f in _on(features, "31UFT") if f["properties"]["datetime"].startswith(days[0])],
            root, "ft.json")
    _ingest(region.items, [f for f in _on(features, "31UFU") if f["properties"]["datetime"].startswith(days[-1])],
            root, "fu.json")
    ds = open_cube(root, bbox=region.bbox, bands=["B04"]).compute()
    assert sorted(ds.attrs["cardcube:tiles"].split(",")) == ["31UFT", "31UFU"]
    assert (np.diff(ds.y.values) < 0).all() and (np.diff(ds.x.values) > 0).all()
    transform = ds.rio.transform()
    assert transform.e < 0 and (transform.c, transform.f) == (region.bbox[0], region.bbox[3])
    north = open_cube(root, tiles="31UFU", bbox=region.bbox, bands=["B04"]).compute()
    np.testing.assert_array_equal(ds["B04"].sel(x=north.x, y=north.y).values[-1], north["B04"].values[0])


def test_a_parcel_of_tens_of_kilometres_is_refused_before_it_is_read(tiny_cube, tiny_region):
    """A 40 km square went to be read whole (pixels x dates as float64): MemoryError, or the machine's memory."""
    minx, miny, _, _ = tiny_region.bbox
    huge = box(minx, miny - 40_000, minx + 40_000, miny)
    with pytest.raises(RequestTooLargeError, match=r"pixels \(limit 10,000,000"):
        parcel_timeseries(tiny_cube, _parcel(huge), bands=["B04"])


@pytest.fixture(scope="module")
def two_zones(tmp_path_factory):
    """A cube of 31UGU's and 32ULD's data, 2 km each, side by side across the zone edge; and their regions."""
    root = tmp_path_factory.mktemp("two-zones")
    regions = {}
    for tile, origin, seed in (("31UGU", (790000.0, 5846000.0), 1), ("32ULD", (384000.0, 5839000.0), 2)):
        regions[tile] = region = generate(tmp_path_factory.mktemp(f"zone-{tile}"),
                          SynthConfig.tiny(tile=tile, origin=origin, seed=seed, **MAY))
        _ingest(region.items, items_of(region.items, "sentinel-2-l2a"), root, f"{tile}.json")
    return root, regions


def test_a_cube_of_two_utm_zones_is_opened_a_zone_at_a_time(two_zones):
    """``open_cube()`` of the whole cube read 32ULD alone, whose square holds 31UGU's data near the zone edge: the
    other zone's data was left out without a word."""
    root, regions = two_zones
    with pytest.raises(InvalidRequestError, match=r"different UTM zones \(32ULD; 31UGU\).*tiles='31UGU'"):
        open_cube(root, bands=["B04"])
    for tile, region in regions.items():
        ds = open_cube(root, tiles=tile, bands=["B04"])
        assert ds.attrs["cardcube:tiles"] == tile and ds.rio.crs == TileGrid.from_id(tile).crs
        assert ds.rio.bounds() == pytest.approx(region.bbox) and bool(np.isfinite(ds["B04"]).any())


def test_a_parcel_across_two_utm_zones_is_read_from_the_zone_holding_most_of_it(two_zones):
    """Two tiles of different zones make no mosaic: the parcel was read from the first (31UGU), which holds 42 % of
    it, and its status said 23 % lay outside the cube's data. Now from 32ULD, and the status says what it leaves
    out."""
    root, regions = two_zones
    parcel = _parcel(box(789302.5, 5845002.5, 790502.5, 5845202.5))
    frame = parcel_timeseries(root, parcel, bands=["B04"], stats=["count"], mask=None)
    (status,) = frame.attrs["parcel_status"]
    local = parcel.to_crs("EPSG:32632")
    ds = open_cube(root, tiles="32ULD", bbox=local.total_bounds, bands=["B04"], resolution=10).compute()
    held = box(*regions["32ULD"].bbox).intersection(local.geometry.iloc[0]).area / local.area.iloc[0]
    assert status["tile"] == "32ULD" and held > 0.5
    assert status["reason"].startswith(f"{1 - held:.0%} of the parcel lies outside the cube's data")
    inside = parcel_pixels(local.geometry.iloc[0], dataset_geobox(ds))
    want = np.isfinite(ds["B04"].values[:, inside]).sum(axis=1)
    np.testing.assert_array_equal(frame.sort_values("time")["count"].to_numpy(), want)


def test_a_parcel_read_from_one_zone_says_where_the_rest_of_it_lies(tmp_path_factory):
    """31UGU's data and 32ULD's 1 km further east, over the same ground in part: a strip from 31UGU's data to east
    of it is read from 31UGU (no mosaic across zones), and its status said a quarter of it lay outside the cube's
    data, which holds it in 32ULD."""
    ugu, uld = TileGrid.from_id("31UGU"), TileGrid.from_id("32ULD")
    west = (ugu.ulx + 40_000.0, ugu.uly - 55_040.0)
    x, y = Transformer.from_crs(ugu.crs, uld.crs, always_xy=True).transform(west[0] + 1000.0, west[1])
    east = (uld.ulx + round((x - uld.ulx) / 20) * 20.0, uld.uly + round((y - uld.uly) / 20) * 20.0)
    root = tmp_path_factory.mktemp("zones-apart")
    for tile, origin in (("31UGU", west), ("32ULD", east)):
        region = generate(tmp_path_factory.mktemp(f"apart-{tile}"),
                          SynthConfig.tiny(tile=tile, origin=origin, size_m=(2_000.0, 400.0), **MAY))
        _ingest(region.items, items_of(region.items, "sentinel-2-l2a"), root, f"{tile}.json")
    y0 = west[1] - 200
    strip = _parcel(box(west[0] + 503, y0 - 100, west[0] + 2503, y0))
    (status,) = parcel_timeseries(root, strip, bands=["B04"], stats=["count"]).attrs["parcel_status"]
    assert status["tile"] == "31UGU" and status["reason"] == (
        "25% of the parcel lies outside the data of tile(s) 31UGU read (in tile(s) 32ULD of another UTM zone: no "
        "mosaic across zones): its statistics cover the rest only")


def test_a_cube_whose_every_scene_was_rejected_says_its_parcels_are_outside_its_data(tiny_region, tmp_path):
    """A first ingest whose every scene was rejected (their files out of reach) commits a version of no tile: a time
    series or an extraction of it failed inside numpy ("attempt to get argmax of an empty sequence"), saying nothing
    of the cube; each parcel is outside its data, as of any cube holding none of them."""
    from cardcube.errors import DateNotFoundError, ParcelOutsideCubeError
    from tests.ingest.scene_edits import write_features

    features = items_of(tiny_region.items, "sentinel-2-l2a")[:2]
    unreachable = write_features(features, tmp_path / "items.json")  # beside no scene: its relative hrefs lead nowhere
    cube = tmp_path / "cube"
    result = ingest(unreachable, cube, chunks=ChunkLayout.parse(TEST_CHUNKS), progress=False)
    assert result.version == 1 and not result.tiles and len(result.rejected) == 2
    parcels = gpd.read_parquet(tiny_region.parcels).iloc[:3]
    with pytest.raises(ParcelOutsideCubeError, match="outside the data of every tile of the s2 cube"):
        parcel_timeseries(cube, parcels, bands=["B04"])
    with pytest.raises(DateNotFoundError, match=r"^no acquisition: version 1 of the s2 cube holds no acquisition$"):
        extract(parcels, cube, tmp_path / "out", bands=["B04"], progress=False)  # not "within the time range None"
