"""``open_cube``: the bands a caller names are read as every other read-side function reads them."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest
import xarray as xr
import zarr

from cardcube.errors import InvalidRequestError, NoAcquisitionWarning
from cardcube.spec import DEFAULT_SCL_MASK
from cube import layout
from cube.dataset import open_cube
from cube.indices import add_indices, check_bands
from cube.mosaic import pass_times


def test_open_cube_takes_band_names_in_any_case(tiny_cube):
    assert list(open_cube(tiny_cube, bands=["b04", "scl"]).data_vars) == ["B04", "SCL"]
    assert list(open_cube(tiny_cube, "s1", bands="vv, VH").data_vars) == ["VV", "VH"]  # one string is a list
    with pytest.raises(InvalidRequestError, match=r"NDVI: an index, not a stored band.*cardcube.indices\('NDVI'\)"):
        open_cube(tiny_cube, bands=["ndvi"])
    with pytest.raises(InvalidRequestError, match="no band given"):
        open_cube(tiny_cube, bands=[])


def test_a_band_of_the_other_collection_names_it():
    from cardcube.spec import CUBE_SPECS

    with pytest.raises(InvalidRequestError, match="VV is a band of the s1 cube: add --collection s1"):
        check_bands("VV", CUBE_SPECS["s2"].band_names)
    with pytest.raises(InvalidRequestError, match="NDVI is an index of the s2 cube: add --collection s2"):
        check_bands("ndvi", CUBE_SPECS["s1"].band_names)
    with pytest.raises(InvalidRequestError) as refused:  # a Dataset of some S2 bands lacks B08: no other cube
        check_bands("B08", ["B04", "B03", "B02"])
    assert "--collection" not in str(refused.value)


def test_odc_geo_reads_the_grid_of_a_cube_dataset(tiny_cube):
    """The README's "CRS and transform understood by rioxarray and odc-geo": ``ds.odc`` was there only once the
    caller had imported odc.geo.xr itself. A fresh interpreter, as a notebook starts."""
    code = ("from cube.dataset import open_cube; from cube.timeseries import dataset_geobox; "
            f"ds = open_cube({str(tiny_cube)!r}, bands=['B04', 'B05']); "
            "assert ds.odc.geobox == dataset_geobox(ds), ds.odc.geobox; "
            "assert ds.B05.odc.crs == ds.rio.crs; "
            "assert ds.B04.isel(time=0).odc.reproject('EPSG:4326').odc.crs.epsg == 4326")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def test_indices_in_any_case_and_stored_integers_refused(tiny_cube):
    ds = open_cube(tiny_cube, bands=["B04", "B08", "SCL"], time="2024-06")
    ndvi = ds.cardcube.indices("ndvi")["NDVI"].values
    b04, b08 = (ds[b].values.astype(np.float64).clip(0) for b in ("B04", "B08"))  # shadows read below 0
    np.testing.assert_allclose(ndvi, (b08 - b04) / (b08 + b04), rtol=1e-6)
    assert add_indices(ds, "NDVI").NDVI.identical(add_indices(ds, ["NDVI"]).NDVI)  # one name, not four letters
    raw = open_cube(tiny_cube, bands=["B04", "B08", "SCL"], time="2024-06", decode=False)
    # masking stored integers left them as they were (nodata and clouds alike), without a word
    with pytest.raises(InvalidRequestError, match="cloud masking needs physical values, and B04, B08 holds stored "
                                                  "integers: open the cube with decode=True"):
        raw.cardcube.mask_clouds()
    with pytest.raises(InvalidRequestError, match="index NDVI needs physical values"):
        raw.cardcube.indices("NDVI")
    masked = ds.cardcube.mask_clouds()
    clouds = np.isin(ds.SCL.values, DEFAULT_SCL_MASK)
    assert np.isnan(masked.B04.values[clouds]).all() and clouds.any()
    assert (masked.SCL.values == ds.SCL.values).all()
    with pytest.raises(InvalidRequestError, match="cloud masking needs the SCL band: include it in bands="):
        ds[["B04"]].cardcube.mask_clouds()
    radar = open_cube(tiny_cube, "s1", bands=["VV"], time="2024-06")  # was told to include SCL, which S1 has not
    with pytest.raises(InvalidRequestError, match=r"cloud masking is for Sentinel-2 \(its SCL band\); the s1 cube has "
                                                  r"no clouds to mask"):
        radar.cardcube.mask_clouds()


def test_an_area_in_lon_lat_without_its_crs_is_named_so(tiny_cube):
    """The bounds were printed as np.float64(...) reprs, with no word of the CRS the caller forgot."""
    from cardcube.errors import AreaOutsideCubeError

    with pytest.raises(AreaOutsideCubeError, match=r"the area \(5.664432815, 52.706282, 5.6950396, 52.72486516\) "
                                                   r"\(in the tile CRS\) does not intersect any tile of the s2 cube "
                                                   r"\(tiles: 31UFU\); lon/lat\? say so with crs='EPSG:4326'"):
        open_cube(tiny_cube, bbox=tuple(np.array([5.664432815, 52.706282, 5.6950396, 52.72486516])))
    with pytest.raises(AreaOutsideCubeError) as far:  # metres beside the tile: no lon/lat hint
        open_cube(tiny_cube, bbox=(100.0, 100.0, 200.0, 200.0), crs="EPSG:32631")
    assert "lon/lat" not in str(far.value)
    # a GeoJSON dict or FeatureCollection, or a GeoDataFrame without a CRS, in lon/lat: "the area ?" and no hint
    import geopandas as gpd
    from shapely.geometry import box, mapping

    lonlat = box(5.664432815, 52.706282, 5.6950396, 52.72486516)
    for given in (mapping(lonlat), gpd.GeoSeries([lonlat]).__geo_interface__, gpd.GeoDataFrame(geometry=[lonlat])):
        said = r"the area \(5.664432815, 52.706282, 5.6950396, 52.72486516\) \(in the tile CRS\) .*; lon/lat\? say so"
        with pytest.raises(AreaOutsideCubeError, match=said):
            open_cube(tiny_cube, geometry=given)
    with pytest.raises(AreaOutsideCubeError, match=r"the area \(3000000.0, 3000000.0, 3000100.0, 3000100.0\) \(in "
                                                   r"EPSG:3035\) does not intersect"):  # its own CRS, not the tile's
        open_cube(tiny_cube, geometry=gpd.GeoDataFrame(geometry=[box(3e6, 3e6, 3e6 + 100, 3e6 + 100)], crs=3035))


def test_an_area_beside_the_data_of_its_tile_is_no_dataset_of_nodata(tiny_cube, tiny_region):
    """An area inside the tile's 110 km square but away from the scenes ingested (the README's bbox over the tiny
    demo) gave a Dataset of NaN only, without a word."""
    from cardcube.errors import AreaOutsideCubeError

    x0, y0, x1, y1 = tiny_region.bbox
    with pytest.raises(AreaOutsideCubeError, match=rf"the area holds no data of the s2 cube: it lies within tile\(s\) "
                                                   rf"31UFU, beside the scenes ingested \(tile 31UFU has data over "
                                                   rf"\({x0:.0f}, {y0:.0f}, {x1:.0f}, {y1:.0f}\) in EPSG:32631\)"):
        open_cube(tiny_cube, bbox=(x1 + 3000, y0, x1 + 3100, y0 + 100))
    # asked in lon/lat, the data's extent is given in lon/lat too, not only in the tile's metres
    from pyproj import Transformer

    to_lonlat = Transformer.from_crs("EPSG:32631", "EPSG:4326", always_xy=True)
    lon, lat = to_lonlat.transform(x1 + 3000, y0 + 50)
    with pytest.raises(AreaOutsideCubeError) as refused:
        open_cube(tiny_cube, bbox=(lon, lat, lon + 0.001, lat + 0.001), crs="EPSG:4326")
    west, south, east, north = to_lonlat.transform_bounds(x0, y0, x1, y1)
    assert (f"in EPSG:32631, ({west:.5f}, {south:.5f}, {east:.5f}, {north:.5f}) in EPSG:4326); a Dataset of it would "
            f"be nodata only") in str(refused.value)
    edge = open_cube(tiny_cube, bbox=(x1 - 20, y0, x1 + 500, y0 + 100), bands=["B04"])  # partly on the data: read
    assert np.isfinite(edge.B04.values).any() and np.isnan(edge.B04.values).any()


def _dates(*rows):
    """A Dataset of dates ``(seconds after noon, relative orbit, orbit direction)`` of one platform."""
    times = np.datetime64("2024-05-04T12:00:00", "ns") + np.array([r[0] for r in rows]) * np.timedelta64(1, "s")
    return xr.Dataset(coords={"time": times, "platform": ("time", ["sentinel-1a"] * len(rows)),
                              "relative_orbit": ("time", [r[1] for r in rows]),
                              "orbit_state": ("time", [r[2] for r in rows])})


def test_pass_times_join_one_pass_across_tiles_and_nothing_else():
    """Seconds apart on two tiles, one pass: the earliest time for both. Another orbit, a gap over two minutes, or
    two dates of one tile (a slice committed on its own) stay apart."""
    a = _dates((0, 37, "ascending"), (30, 37, "ascending"), (500, 37, "ascending"), (1000, 110, "descending"))
    b = _dates((4, 37, "ascending"), (1001, 37, "ascending"), (1010, 110, "descending"))
    got = pass_times([a, b])
    t = a.time.values
    np.testing.assert_array_equal(got[0], t)
    np.testing.assert_array_equal(got[1], [t[0], b.time.values[1], t[3]])


@pytest.mark.parametrize("collection", ["s2", "s1"])
def test_both_chunkings_read_the_same_pixels(tiny_cube, collection):
    """A dask task per stored chunk (the default) or one Zarr call per array and window: the whole cube, cold dates
    and hot buffer, bit for bit the same. (The ingest tests check pixels against the sources in the faster second.)"""
    import xarray as xr

    storage = open_cube(tiny_cube, collection, decode=False).compute()
    window = open_cube(tiny_cube, collection, decode=False, chunks="window").compute()
    assert storage.sizes["time"] > 4  # more than one time block of the tests' chunks
    xr.testing.assert_identical(storage, window)


@pytest.mark.timeout(240)
def test_a_dataset_computes_on_a_cluster_of_worker_processes(tiny_cube, tiny_region):
    """An analyst's ``Client(LocalCluster())`` computes the lazy Dataset: its tasks went to the workers with the
    query's missing-shard record, whose lock could not be pickled ("Could not serialize object")."""
    import distributed

    from cube.tile_arrays import ArrayCache
    from tests.cube.reference import _sample
    from tests.ingest.scene_edits import asset_path, items_of

    ds = open_cube(tiny_cube, bands=["B04", "SCL"], time="2024-06", decode=False)
    cached = open_cube(tiny_cube, bands=["B04"], time="2024-06", decode=False, cache=ArrayCache())
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  silence_logs=50) as cluster, distributed.Client(cluster):
        got, again = ds.compute(), cached.compute()
    xs, ys = np.meshgrid(got.x.values, got.y.values)
    scenes = {f["id"]: f for f in items_of(tiny_region.items, "sentinel-2-l2a")}
    for i, scene in enumerate(got.scene_id.values):
        for band in ("B04", "SCL"):
            expected, _ = _sample(asset_path(tiny_region.items, scenes[scene], band), xs, ys)
            np.testing.assert_array_equal(got[band].values[i], expected)
    np.testing.assert_array_equal(again.B04.values, got.B04.values)


def test_stored_integers_written_out_read_back_with_nodata_as_nan(tiny_cube, tiny_region, tmp_path):
    """``decode=False`` gave CF's ``scale_factor``/``add_offset`` but its nodata only as ``nodata``, which CF readers
    do not know: a netCDF or Zarr copy read back with xarray (or ``xr.decode_cf``) turned nodata (DN 0) into a
    reflectance of -0.1."""
    import geopandas as gpd
    import rasterio

    from tests.ingest.scene_edits import asset_path, items_of

    x0, _, _, y0 = gpd.read_parquet(tiny_region.parcels).total_bounds  # the region's north-west corner
    bbox = (x0 - 300, y0 - 500, x0 + 500, y0 + 300)  # beyond its north-west corner: pixels of no scene
    raw = open_cube(tiny_cube, bands=["B04"], bbox=bbox, time="2024-06", decode=False)
    raw.chunk(-1).to_zarr(tmp_path / "copy.zarr")  # the cube's chunks cut at the area's edges: evenly, as README says
    written = xr.open_zarr(tmp_path / "copy.zarr")
    scenes = {f["id"]: f for f in items_of(tiny_region.items, "sentinel-2-l2a")}
    xs, ys = np.meshgrid(raw.x.values, raw.y.values)
    nodata = []
    for i, scene in enumerate(raw.scene_id.values):
        with rasterio.open(asset_path(tiny_region.items, scenes[scene], "B04")) as src:
            data = src.read(1)
            rows, cols = (np.asarray(v) for v in rasterio.transform.rowcol(src.transform, xs.ravel(), ys.ravel()))
        inside = (rows >= 0) & (rows < data.shape[0]) & (cols >= 0) & (cols < data.shape[1])
        dn = np.zeros(rows.shape, data.dtype)
        dn[inside] = data[rows[inside], cols[inside]]
        expected = np.where(dn == 0, np.nan, dn * 1e-4 - 0.1).reshape(xs.shape)
        nodata.append(np.isnan(expected).mean())
        for read in (written, xr.decode_cf(raw)):
            np.testing.assert_allclose(read.B04.values[i], expected, atol=1e-6)
    assert 0 < min(nodata) < 1  # every date has pixels of no scene beside the region's, and one has data


def test_a_dataset_is_written_to_netcdf_and_read_back(tiny_cube, tmp_path):
    """Every attribute is one netCDF can hold: the tiles read were a list, which scipy's netCDF3 writer (the engine
    installed with cardcube) refused with ``KeyError: ('U', 20)``."""
    ds = open_cube(tiny_cube, bands=["B04", "SCL"], time="2024-06")
    ds.to_netcdf(tmp_path / "copy.nc")
    with xr.open_dataset(tmp_path / "copy.nc") as back:
        np.testing.assert_array_equal(back.B04.values, ds.B04.values)
        np.testing.assert_array_equal(back.SCL.values, ds.SCL.values)
        assert (back.time.values == ds.time.values).all() and list(back.scene_id.values) == list(ds.scene_id.values)
        tiles = ",".join(sorted(set(ds.tile.values.tolist())))
        assert back.attrs["cardcube:tiles"] == ds.attrs["cardcube:tiles"] == tiles


def test_decoded_bands_say_their_nodata_to_rioxarray(tiny_cube, tmp_path):
    """NaN is a decoded band's nodata: ``rio.nodata`` said None, so ``rio.to_raster`` wrote a GeoTIFF without one."""
    import rasterio

    ds = open_cube(tiny_cube, bands=["B04", "SCL"], time="2024-06")
    assert np.isnan(ds.B04.rio.nodata) and ds.SCL.rio.nodata == 0
    day = ds.B04.isel(time=0)
    day.rio.to_raster(tmp_path / "b04.tif")
    with rasterio.open(tmp_path / "b04.tif") as src:
        assert np.isnan(src.nodata)
        np.testing.assert_array_equal(src.read(1), day.values)


def test_a_damaged_array_document_is_a_corrupt_cube_not_a_json_error(tiny_cube, tmp_path):
    """A truncated ``zarr.json`` raised the JSON parser's error (REST: 500 ``Internal``, as for a bug)."""
    import shutil

    from cardcube.errors import CorruptDocumentError
    from cube import layout

    root = tmp_path / "cube"
    shutil.copytree(tiny_cube, root, ignore=shutil.ignore_patterns("_parcels"))
    tile = sorted(p.name for p in (root / "s2").iterdir() if (p / "cube.zarr").is_dir())[0]
    doc = root / layout.array_path("s2", tile, 10, "B04", hot=False) / "zarr.json"
    doc.write_text(doc.read_text()[:40])
    with pytest.raises(CorruptDocumentError, match=rf"an array document \(zarr.json\) of tile {tile} in .* is not "
                                                   r"valid JSON .*cardcube verify"):
        open_cube(root, bands=["B04"], tiles=[tile]).B04.isel(time=0).compute()


def test_interactive_reads_of_many_threads_share_one_pool_of_threads():
    """compute_reads from many threads at once (the REST service's) runs on READ_THREADS threads in all: dask,
    given a number of threads, made a pool of them per calling thread and kept it as long as that thread."""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    import dask

    from cube.dataset import READ_THREADS, compute_reads

    def reader() -> int:
        time.sleep(0.01)  # tasks overlap, so that a pool starts all its threads
        return threading.get_ident()

    def query(_: int) -> set[int]:
        return set(compute_reads(*[dask.delayed(reader)() for _ in range(2 * READ_THREADS)]))

    with ThreadPoolExecutor(6) as callers:
        workers = set().union(*callers.map(query, range(6)))
    assert READ_THREADS // 2 <= len(workers) <= READ_THREADS


def _sleepy_abs(x: int) -> int:
    import time

    time.sleep(0.01)  # tasks overlap, so that they go to the pool's threads
    return abs(x)


def _read_in_child(queue) -> None:
    import dask

    from cube.dataset import compute_reads

    queue.put(compute_reads(*[dask.delayed(_sleepy_abs)(-i) for i in range(8)]))


def test_a_forked_process_reads_on_threads_of_its_own():
    """A process forked after reading (a pre-forking server, multiprocessing's fork) reads too: it inherits the
    shared pool of read threads without the threads."""
    import multiprocessing
    import warnings

    import dask

    from cube.dataset import compute_reads

    assert compute_reads(*[dask.delayed(_sleepy_abs)(-i) for i in range(8)]) == tuple(range(8))  # the parent's pool
    fork = multiprocessing.get_context("fork")
    queue = fork.Queue()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # forking a process with threads: the point here
        child = fork.Process(target=_read_in_child, args=(queue,))
        child.start()
    child.join(60)
    if child.is_alive():
        child.kill()
    assert child.exitcode == 0 and queue.get(timeout=5) == tuple(range(8))


@pytest.mark.filterwarnings("error:Mean of empty slice")  # blocks beyond the scene's data: NaN, without a word
def test_stored_integers_averaged_to_20m_leave_their_nodata_out(tiny_region, tmp_path):
    """open_cube(decode=False, resolution=20) averaged a 10 m band's nodata (0) into its 2 x 2 means: with one
    pixel of each block nodata, a mean was three quarters of the value, and decoded it said so. A block all nodata is
    NaN (nodata stored) without numpy's "Mean of empty slice" RuntimeWarning, which every such read printed."""
    from cardcube.spec import ChunkLayout
    from ingest.job import ingest
    from tests.conftest import TEST_CHUNKS
    from tests.ingest.scene_edits import _rewrite, broken_copy, items_of, write_items

    def holes(band: str, path) -> None:  # one 10 m pixel of every 2 x 2 block of B04 no data
        if band == "B04":
            _rewrite(path, data=lambda a: np.where((np.indices(a.shape) % 2 == 1).all(axis=0), 0, a))

    feature = items_of(tiny_region.items, "sentinel-2-l2a")[5]
    copy = broken_copy(tiny_region.items, feature, "HOLES", holes)
    cube = tmp_path / "cube"
    ingest(write_items(tiny_region.items, [copy], "holes.json"), cube, chunks=ChunkLayout.parse(TEST_CHUNKS),
           progress=False, catalog=False)
    fine = open_cube(cube, bands=["B04"]).B04.values[0]  # decoded at 10 m: NaN where the holes are
    assert np.isnan(fine).sum() >= fine.size // 4 - fine.shape[0]
    with warnings.catch_warnings():  # the reference's own blocks without data
        warnings.filterwarnings("ignore", "Mean of empty slice", RuntimeWarning)
        want = np.nanmean(fine.reshape(fine.shape[0] // 2, 2, fine.shape[1] // 2, 2), axis=(1, 3))
    assert np.isnan(want).any()  # blocks all nodata, which cube reads average too
    stored = open_cube(cube, bands=["B04"], decode=False, resolution=20).B04
    decoded = xr.decode_cf(stored.to_dataset()).B04.values[0]  # as the attrs say: scale, offset, nodata
    np.testing.assert_allclose(decoded, want, rtol=1e-6)
    np.testing.assert_allclose(open_cube(cube, bands=["B04"], resolution=20).B04.values[0], want, rtol=1e-6)


def test_a_time_range_keeps_the_stored_time_chunks(tiny_cube):
    """A range not starting at the first stored date was a fancy index, which dask rechunked evenly (chunks of 2
    or 12 dates where the cube stores 4 or 16): each stored chunk read by several tasks."""
    whole = open_cube(tiny_cube, "s2", bands=["B04"])
    stored = whole.chunks["time"]
    assert stored[:3] == (4, 4, 4)  # TEST_CHUNKS: 4 dates a chunk (then the hot dates, one each)
    edges = np.cumsum((0, *stored))
    times = whole.time.values
    ranged = open_cube(tiny_cube, "s2", bands=["B04"], time=f"{str(times[5])[:19]}Z/{str(times[-3])[:19]}Z")
    np.testing.assert_array_equal(ranged.time.values, times[5:-2])
    cut = np.cumsum((0, *ranged.chunks["time"])) + 5
    assert set(cut[1:-1]) <= set(edges), (ranged.chunks["time"], stored)  # boundaries where the cube has them
    np.testing.assert_array_equal(ranged.B04.values, whole.B04.values[5:-2])


def test_a_time_range_beside_the_cube_s_dates_warns_naming_them(tiny_cube, recwarn):
    """A Dataset of no date looked like a cube without data: no word that the range missed the season."""
    times = open_cube(tiny_cube, "s2", bands=["B04"]).time.values
    first, last = (str(t)[:10] for t in (times[0], times[-1]))
    with pytest.warns(NoAcquisitionWarning, match=rf"no acquisition within the time range 2030-01-01/2030-02-01: "
                                                  rf"version \d+ of the s2 cube holds dates from {first} to {last}"):
        ds = open_cube(tiny_cube, "s2", bands=["B04"], time="2030-01-01/2030-02-01")
    assert ds.sizes["time"] == 0
    recwarn.clear()
    assert open_cube(tiny_cube, "s2", bands=["B04"], time=f"{first}/{last}").sizes["time"] == len(times)
    assert not [w for w in recwarn if issubclass(w.category, NoAcquisitionWarning)]


def test_what_a_query_begun_before_the_cache_was_cleared_reads_stays_out_of_it(tiny_cube, monkeypatch):
    """The REST service clears its cache when the cube is replaced at the same place; a query begun before went on
    and put the old cube's shard indexes and arrays back, under the paths of the new cube's objects."""
    import cube.tile_arrays as tile_arrays
    from cube.tile_arrays import ArrayCache

    cache = ArrayCache(16)
    begun = open_cube(tiny_cube, bands=["B04"], time="2024-06", decode=False, cache=cache)  # lazy: nothing read yet
    assert len(cache.arrays) > 0 and len(cache.indexes) == 0
    cache.clear()  # the cube replaced meanwhile
    begun.compute()  # the query goes on, reading shard indexes
    assert len(cache.indexes) == 0 and len(cache.arrays) == 0
    after = open_cube(tiny_cube, bands=["B04"], time="2024-06", decode=False, cache=cache).compute()
    assert len(cache.indexes) > 0  # a query after the clear fills it again, and reads the same
    np.testing.assert_array_equal(after.B04.values, begun.B04.values)
    opening = tile_arrays.sync
    monkeypatch.setattr(tile_arrays, "sync", lambda c: (cache.clear(), opening(c))[1])  # cleared while it opens
    open_cube(tiny_cube, bands=["B08"], time="2024-06", decode=False, cache=cache)
    assert len(cache.arrays) == 0


def test_a_tiles_date_lacking_a_slice_of_its_neighbours_takes_nothing_away_from_what_the_neighbour_adds():
    """31UFU holds a pass's date mosaicked from two slices, 31UEU the same pass from one (the other refused there):
    where 31UEU's area (a window's box, a polygon's margin: more than its data) lay over the second slice's data,
    31UFU's pixels of the date were never read for a parcel or a box read from 31UEU. A date holding every slice
    of the neighbour's (as many, and every split item of them) still takes its area away: nothing to add."""
    from cardcube.spec import S1_BACKSCATTER
    from cube.dataset import passes_lacking
    from cube.ledger import Acquisition, CubeVersion, HotSlot, ScenePart, SceneRecord, TileState

    def date(tile: str, col: int, items: tuple[str, ...], *, parts: tuple[str, ...] = ()) -> tuple[TileState, dict]:
        """A date of one pass on ``tile``, its window the same 5 km square of ground on either tile."""
        sid = f"{items[0]}_T{tile}"
        record = SceneRecord(sid, tile, "2024-05-02T05:50:00Z", 1, windows={10: (0, col, 500, 500)}, item=items[0],
                             parts=tuple(ScenePart(f"{i}_T{tile}", i, "2024-05-02T05:50:20Z") for i in parts))
        slot = HotSlot(0, Acquisition(record.time, sid, "sentinel-1a", 37, "descending"))
        return TileState(tile, hot=(slot,), hot_slots_used=1), {sid: record}

    def version(eu: tuple[TileState, dict], fu: tuple[TileState, dict]) -> CubeVersion:
        return CubeVersion("s1", 1, S1_BACKSCATTER, {"31UEU": eu[0], "31UFU": fu[0]}, {**eu[1], **fu[1]})

    ALL = (None, None)  # every date (parse_time_selection(None))
    both = date("31UFU", 0, ("A",), parts=("B",))  # 31UFU's columns from x 600000, 31UEU's from x 499980
    one = version(date("31UEU", 10_002, ("A",)), both)
    assert passes_lacking(one, "31UEU", "31UFU", ALL).area == pytest.approx(5_000 * 5_000)  # read 31UFU too
    assert passes_lacking(one, "31UFU", "31UEU", ALL).is_empty  # 31UFU holds all 31UEU holds
    whole = version(date("31UEU", 10_002, ("A",), parts=("B",)), both)
    assert passes_lacking(whole, "31UEU", "31UFU", ALL).is_empty
    other = version(date("31UEU", 10_002, ("C",), parts=("B",)), both)  # as many slices, not the same ones
    assert passes_lacking(other, "31UEU", "31UFU", ALL).area == pytest.approx(5_000 * 5_000)


def test_a_dataset_of_no_dates_says_whether_other_tiles_have_some():
    """The area's tiles may lack every date of the range where other tiles hold some: said so, not as a cube of no
    date within it."""
    from dataclasses import replace

    from cardcube.spec import cube_spec
    from cube.dataset import _no_dates
    from cube.ledger import Acquisition, CubeVersion, TileState

    def acquisitions(day: str, tile: str) -> tuple[Acquisition, ...]:
        return (Acquisition(f"2024-{day}T10:50:31Z", f"S2A_{tile}_{day}", "sentinel-2a", 8, "descending"),)

    version = replace(CubeVersion.empty(cube_spec("s2")), version=3,
                      tiles={"31UFU": TileState("31UFU", cold=acquisitions("05-02", "31UFU")),
                             "31UGU": TileState("31UGU", cold=acquisitions("06-20", "31UGU"))})
    assert _no_dates(version, ["31UGU"], "2024-05") == (
        "no acquisition of tile(s) 31UGU within the time range 2024-05, though other tiles of the cube have some "
        "(version 3 of the s2 cube holds dates from 2024-05-02 to 2024-06-20): the Dataset has no dates")
    assert _no_dates(version, ["31UFU", "31UGU"], "2030") == (
        "no acquisition within the time range 2030: version 3 of the s2 cube holds dates from 2024-05-02 to "
        "2024-06-20; the Dataset has no dates")


def test_parcels_in_another_crs_than_crs_says_are_refused_not_read_at_another_place(tiny_cube, tiny_region):
    """A GeoDataFrame in EPSG:32632 given with crs="EPSG:32631" was read as if its metres were zone 31's: an area
    6 degrees west of the parcels, whose Dataset (the cube's pixels there) came back without a word."""
    import geopandas as gpd

    here = gpd.read_parquet(tiny_region.parcels).iloc[:3]  # zone 31's metres, labelled zone 32: a place in Germany
    elsewhere = here.set_crs("EPSG:32632", allow_override=True)
    with pytest.raises(InvalidRequestError, match=r"is in EPSG:32632, and crs='EPSG:32631' names another"):
        open_cube(tiny_cube, geometry=elsewhere, crs="EPSG:32631", bands=["B04"])
    same = open_cube(tiny_cube, geometry=here, crs="EPSG:32631", bands=["B04"])  # its own CRS named: read as ever
    assert same.sizes["x"] > 0 and same.rio.crs == "EPSG:32631"


def test_a_resolution_of_another_type_reads_or_says_what_to_give(tiny_cube):
    """``resolution=10.0`` (a float a caller computed) was a TypeError deep in the window's slicing, and
    ``resolution="10"`` said "resolution 10 m is not one of the cube's [10, 20]"."""
    box_ = (680510, 5843510, 680990, 5843990)
    whole = open_cube(tiny_cube, bands=["B11"], bbox=box_, resolution=10.0)
    assert whole.identical(open_cube(tiny_cube, bands=["B11"], bbox=box_, resolution=10))
    for bad in ("10", True):
        with pytest.raises(InvalidRequestError, match=rf"resolution {bad!r} is no number of metres: give one of the "
                                                      r"cube's \[10, 20\], e.g. resolution=10"):
            open_cube(tiny_cube, bands=["B11"], bbox=box_, resolution=bad)


def test_no_tile_given_is_said_so(tiny_cube):
    """``tiles=""`` or ``[]`` (a list of tiles filtered to none) said "the area ? does not intersect any tile"."""
    for none in ("", [], " , "):
        with pytest.raises(InvalidRequestError, match=rf"no tile given \(tiles={re.escape(repr(none))}\); the s2 "
                                                      r"cube's tiles: 31UFU"):
            open_cube(tiny_cube, bands=["B04"], tiles=none)


def test_a_zarr_copy_read_back_as_the_readme_says_keeps_the_grid(tiny_cube, tmp_path):
    """README: a copy keeps its CRS in ``spatial_ref``, a grid mapping, read back with ``decode_coords="all"``;
    the grid (odc-geo's GeoBox, rioxarray's CRS and transform) is the Dataset's, and so are its values."""
    ds = open_cube(tiny_cube, bands=["B04"], time="2024-06", bbox=(680510, 5843510, 680990, 5843990))
    ds.chunk(-1).to_zarr(tmp_path / "copy.zarr")
    back = xr.open_zarr(tmp_path / "copy.zarr", decode_coords="all")
    assert back.rio.crs == ds.rio.crs == "EPSG:32631" and back.rio.transform() == ds.rio.transform()
    assert back.odc.geobox == ds.odc.geobox
    np.testing.assert_array_equal(back.B04.values, ds.B04.values)
    for name in ("scene_id", "relative_orbit", "cloud_cover"):  # the per-date arrays' CF attributes, as stored
        stored = zarr.open_array(tiny_cube / layout.array_path("s2", "31UFU", 10, name), mode="r").attrs
        assert back[name].attrs == ds[name].attrs == dict(stored) and "long_name" in stored
    assert ds.cloud_cover.attrs["units"] == "percent"


def test_an_array_cache_serves_one_cube_and_refuses_another(tiny_cube, tiny_straddle_cube):
    """An ArrayCache keeps arrays by their path in the cube: one passed to a second cube gave the first cube's arrays
    for the second's tile (its pixels, or nodata where the first has none, for the second's dates), without a word."""
    from cube.tile_arrays import ArrayCache

    cache = ArrayCache()
    first = open_cube(tiny_cube, bands=["B04"], tiles="31UFU", cache=cache)
    np.testing.assert_array_equal(first.B04[:2].values, open_cube(tiny_cube, bands=["B04"], tiles="31UFU").B04[:2])
    with pytest.raises(InvalidRequestError, match=rf"this ArrayCache keeps the arrays of the cube at "
                                                  rf"{re.escape(str(tiny_cube))}, not of .*; give each cube an "
                                                  r"ArrayCache of its own"):
        open_cube(tiny_straddle_cube, bands=["B04"], tiles="31UFU", cache=cache)
    again = open_cube(tiny_cube / "catalog.json", bands=["B04"], tiles="31UFU", cache=cache)  # the same cube, named so
    np.testing.assert_array_equal(again.B04[:2].values, first.B04[:2].values)


def test_a_mosaic_of_tiles_with_data_far_apart_is_on_one_grid(tiny_cube, tmp_path):
    """Read with no area, a cube holding data in 31UFU (x 680 km) and far east in 31UGU (x 790 km) joined the two
    tiles' windows into one ``x`` with a jump of 108 km: rioxarray's transform took the jump for a step of its
    pixels, and odc-geo's grid put the east data beside the west, 108 km from its place. The mosaic holds
    every pixel between, nodata; each source pixel is where the Dataset's grid says it is."""
    import datetime as dt
    import shutil

    import rasterio

    from cardcube.spec import ChunkLayout
    from cardcube.synth import SynthConfig, generate
    from ingest.job import ingest
    from tests.conftest import TEST_CHUNKS
    from tests.ingest.scene_edits import asset_path, items_of

    east = generate(tmp_path / "east", SynthConfig.tiny(tile="31UGU", origin=(790_000.0, 5_845_000.0), s1=False,
                                                        size_m=(600.0, 600.0), end=dt.date(2024, 5, 12)))
    root = tmp_path / "cube"
    shutil.copytree(tiny_cube, root, ignore=shutil.ignore_patterns("_parcels"))
    assert ingest(east.items, root, collection="s2", chunks=ChunkLayout.parse(TEST_CHUNKS), progress=False).ok
    ds = open_cube(root, bands=["B04", "SCL"])
    assert ds.attrs["cardcube:tiles"] == "31UFU,31UGU"
    assert set(np.diff(ds.x.values)) == {10.0} and set(np.diff(ds.y.values)) == {-10.0}
    grid = ds.odc.geobox
    assert grid.affine == ds.rio.transform() and grid.shape == (ds.sizes["y"], ds.sizes["x"])
    assert grid.boundingbox.left <= 680_000 and grid.boundingbox.right >= 790_600
    inverse = ~grid.affine
    for scene in items_of(east.items, "sentinel-2-l2a"):
        t = next(i for i, ids in enumerate(ds.scene_id.values) if scene["id"] in ids.split("+"))  # a pass: joined
        with rasterio.open(asset_path(east.items, scene, "B04")) as src:
            data, rows, cols = src.read(1), [3, 30, 55], [5, 40, 58]
            places = [src.transform * (c + 0.5, r + 0.5) for r, c in zip(rows, cols, strict=True)]
        expected = np.where(data[rows, cols] == 0, np.nan, data[rows, cols] * 1e-4 - 0.1)
        at = [tuple(int(v) for v in inverse * p) for p in places]  # the source pixel's column and row on the grid
        got = [float(ds.B04[t, row, col]) for col, row in at]
        np.testing.assert_allclose(got, expected, atol=1e-6)
    assert int(ds.SCL.isel(time=0, x=ds.sizes["x"] // 2).max()) == 0  # between the tiles' data: nodata
    assert ds.cloud_cover.attrs == {"long_name": "scene cloud cover (percent)", "units": "percent"}  # as stored


def test_dates_arriving_before_the_cold_ones_keep_the_stored_time_chunks(tiny_cube, tiny_region, tmp_path):
    """Dates older than the cold block's, ingested after it (in the hot buffer), were put in time order by a fancy
    index, which dask rechunked evenly: 2 dates a chunk where the cube stores 4, each stored chunk read by two tasks
    (3,370 tasks for the tiny cube's B04 and B11, 2,692 now). Each run of stored dates keeps its stored chunks."""
    from cardcube.spec import ChunkLayout
    from ingest.job import ingest
    from tests.conftest import TEST_CHUNKS
    from tests.ingest.scene_edits import items_of, write_items

    features = items_of(tiny_region.items, "sentinel-2-l2a")
    root = tmp_path / "cube"
    for i, batch in enumerate([features[3:], features[:3]]):  # 16 dates, a cold block of 4 chunks; then 3 earlier
        ingest(write_items(tiny_region.items, batch, f"late-{i}.json"), root, chunks=ChunkLayout.parse(TEST_CHUNKS),
               progress=False)
    late = open_cube(root, bands=["B04"])
    assert late.chunks["time"] == (1, 1, 1, 4, 4, 4, 4)  # the hot dates one each, then the stored chunks
    same = open_cube(tiny_cube, bands=["B04"])
    np.testing.assert_array_equal(late.time.values, same.time.values)
    np.testing.assert_array_equal(late.B04.values, same.B04.values)


def test_a_cube_made_anew_at_its_place_is_not_read_for_the_one_before(tiny_region, tmp_path):
    """dask computes a key once, and a Dataset's arrays were named by the cube's location and version number alone:
    a Dataset persisted from a cube and one of a cube made anew at its place (version 1 again) had arrays of one
    name, and a graph of both gave the new one the old one's pixels. The names hold the version's commit time."""
    import dask

    from cardcube.spec import ChunkLayout
    from ingest.job import ingest
    from tests.conftest import TEST_CHUNKS
    from tests.ingest.scene_edits import items_of, write_items

    features = items_of(tiny_region.items, "sentinel-2-l2a")
    root = tmp_path / "cube"
    for name, batch in (("first.json", features[:4]), ("again.json", features[4:8])):
        if root.exists():
            shutil.rmtree(root)
        ingest(write_items(tiny_region.items, batch, name), root, chunks=ChunkLayout.parse(TEST_CHUNKS), progress=False)
        if name == "first.json":
            old = open_cube(root, bands=["B04"], decode=False).persist()
    new = open_cube(root, bands=["B04"], decode=False)
    assert new.attrs["cardcube:version"] == old.attrs["cardcube:version"] == 1
    assert list(new.scene_id.values) == [f["id"] for f in features[4:8]]
    alone = new.B04.values
    assert not np.array_equal(alone, old.B04.values)  # other scenes: other pixels
    _, together = dask.compute(old.B04.data, new.B04.data)
    np.testing.assert_array_equal(together, alone)
