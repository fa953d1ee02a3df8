"""A region across the 31UFU/31UGU edge: parcels in both tiles, parcels crossing the tile edge."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import rasterio
from rasterio.windows import from_bounds
from shapely.geometry import Point, box

from cardcube.errors import DateNotFoundError, NoAcquisitionWarning
from cardcube.grid import TileGrid
from cardcube.spec import ChunkLayout
from cube.chips import chip
from cube.dataset import open_cube
from cube.timeseries import parcel_timeseries
from ingest.job import ingest
from tests.conftest import TEST_CHUNKS
from tests.cube.kept import keep, restored
from tests.cube.reference import reference_stats
from tests.ingest.scene_edits import asset_path, broken_copy, items_of, later_on_tile, shifted, write_items


@pytest.fixture(scope="module")
def straddle_cube(tiny_straddle_cube):
    """The straddle region's S2 scenes, ingested with the tests' chunks (the session's cube: read only)."""
    return tiny_straddle_cube


def _split(tiny_straddle_region):
    parcels = gpd.read_parquet(tiny_straddle_region.parcels)
    ufu = box(*TileGrid.from_id("31UFU").geobox(10).boundingbox)
    crossing = parcels[parcels.intersects(ufu.exterior) & (parcels.area > 5000)]
    in_both = parcels[parcels.within(ufu) & (parcels.area > 5000)]
    return parcels, crossing, in_both


def _with_strip(tiny_straddle_region) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    """The region's parcels, and a strip from west of 31UGU's edge to east of 31UFU's, longer than their overlap:
    no tile holds it whole."""
    parcels = gpd.read_parquet(tiny_straddle_region.parcels)
    _, miny, _, maxy = tiny_straddle_region.bbox
    y = (miny + maxy) / 2
    west, east = TileGrid.from_id("31UGU").bounds[0], TileGrid.from_id("31UFU").bounds[2]
    return parcels, gpd.GeoDataFrame({"parcel_id": ["strip"]}, geometry=[box(west - 100, y, east + 100, y + 60)],
                                     crs=parcels.crs)


def test_a_parcel_crossing_the_tile_edge_is_read_whole_from_the_other_tile(straddle_cube, tiny_straddle_region):
    _, crossing, _ = _split(tiny_straddle_region)
    assert len(crossing)
    parcel = crossing.iloc[[0]]
    frame = parcel_timeseries(straddle_cube, parcel, bands=["B08"], mask=None)
    ugu = {f["properties"]["datetime"][:19]: f["id"] for f in items_of(tiny_straddle_region.items, "sentinel-2-l2a")
           if f["properties"]["grid:code"].endswith("31UGU")}
    for row in frame.itertuples():
        assert row.scene_id == ugu[row.time.isoformat()[:19]]  # the other tile's product, as read
        ref = reference_stats(tiny_straddle_region.items, "s2", row.scene_id, parcel.geometry.iloc[0], "B08")
        assert row.count == ref["count"]
        if ref["count"]:
            assert row.mean == pytest.approx(ref["mean"], rel=1e-9)


def test_parcels_in_the_overlap_read_the_same_from_either_tile(straddle_cube, tiny_straddle_region):
    _, _, in_both = _split(tiny_straddle_region)
    some = in_both.iloc[:3]
    both = [open_cube(straddle_cube, tiles=[t], bbox=some.total_bounds, bands=["B04"]).compute()
            for t in ("31UFU", "31UGU")]
    np.testing.assert_array_equal(both[0]["B04"].values, both[1]["B04"].values)


def test_a_parcel_in_the_overlap_is_read_from_one_tile_alike_everywhere(tiny_straddle_region, tmp_path):
    """31UGU holds every date, 31UFU its first 3 (later products missing there): a parcel in the overlap is read
    from one tile, the one with the most dates (the first by name was read before: 3 dates of 19), by the time
    series and the extraction alike; 31UFU has no date 31UGU lacks, so it is not read (see test_tile_choice for
    tiles that each lack a date the other has)."""
    from cube.extract import extract, read_status, read_timeseries

    features = items_of(tiny_straddle_region.items, "sentinel-2-l2a")
    ufu = sorted((f for f in features if f["properties"]["grid:code"].endswith("31UFU")),
                 key=lambda f: f["properties"]["datetime"])
    keep = [f for f in features if f not in ufu[3:]]
    cube = tmp_path / "cube"
    ingest(write_items(tiny_straddle_region.items, keep, "uneven.json"), cube, chunks=ChunkLayout.parse(TEST_CHUNKS),
           progress=False)
    _, _, in_both = _split(tiny_straddle_region)
    some = in_both.iloc[:4]
    frame = parcel_timeseries(cube, some, bands=["B04"])
    status = frame.attrs["parcel_status"]
    ugu = {f["properties"]["datetime"][:10] for f in keep if f["properties"]["grid:code"].endswith("31UGU")}
    assert {s["tile"] for s in status} == {"31UGU"}
    assert (frame.groupby("parcel_id").time.nunique() == len(ugu)).all() and len(ugu) > 3
    extract(some, cube, tmp_path / "out", bands=["B04"], progress=False)
    assert read_status(tmp_path / "out").set_index("parcel_id").tile.to_dict() == {
        s["parcel_id"]: s["tile"] for s in status}
    rows = read_timeseries(tmp_path / "out")
    assert sorted(rows.time.unique()) == sorted(frame.time.unique())


def test_a_query_across_the_edge_is_a_mosaic(straddle_cube, tiny_straddle_region):
    edge = TileGrid.from_id("31UFU").geobox(10).boundingbox.right
    _, miny, _, maxy = tiny_straddle_region.bbox
    ds = open_cube(straddle_cube, bbox=(edge - 200, miny, edge + 200, maxy), bands=["B04"])
    assert set(ds.attrs["cardcube:tiles"].split(",")) == {"31UGU"}  # 31UGU holds the whole box
    west = TileGrid.from_id("31UGU").ulx - 1000  # west of 31UGU, and east of 31UFU: no tile holds it all
    mosaic = open_cube(straddle_cube, bbox=(west, miny, edge + 200, maxy), bands=["B04"])
    assert set(mosaic.attrs["cardcube:tiles"].split(",")) == {"31UFU", "31UGU"}
    assert np.isnan(mosaic.B04.rio.nodata)  # the mosaic keeps the decoded nodata
    assert mosaic.sizes["x"] == round((edge + 200 - west) / 10)
    inside = mosaic["B04"].sel(x=slice(edge - 200, edge + 200)).values
    np.testing.assert_array_equal(inside, ds["B04"].values)
    stored = open_cube(straddle_cube, bbox=(west, miny, edge + 200, maxy), bands=["B04", "SCL"], decode=False)
    assert stored["B04"].dtype == np.uint16 and stored["SCL"].dtype == np.uint8  # merged on nodata, as stored
    one_tile = open_cube(straddle_cube, tiles=["31UGU"], bands=["B04"], decode=False)
    assert stored["B04"].attrs == one_tile["B04"].attrs and "scale_factor" in stored["B04"].attrs  # CF packing kept
    b04 = stored["B04"].values
    np.testing.assert_array_equal(np.where(b04 == 0, np.nan, b04.astype(np.float32) * np.float32(1e-4)
                                           + np.float32(-0.1)), mosaic["B04"].values)


@pytest.fixture(scope="module")
def per_tile_cube(tiny_straddle_region, tmp_path_factory) -> tuple[Path, list[dict]]:
    """The straddle region's first 3 passes, 31UGU's B04 7 DN above 31UFU's where they overlap (L2A is corrected tile
    by tile, so two tiles' pixels of one pass differ there): the cube's root, and the items ingested."""
    features = items_of(tiny_straddle_region.items, "sentinel-2-l2a")
    first = sorted({f["properties"]["datetime"] for f in features})[:3]
    kept = [broken_copy(tiny_straddle_region.items, f, f"{f['id']}-B04-brighter", shifted("B04", 7))
            if f["properties"]["grid:code"].endswith("31UGU") else f
            for f in features if f["properties"]["datetime"] in first]
    cube = tmp_path_factory.mktemp("per-tile") / "cube"
    ingest(write_items(tiny_straddle_region.items, kept, "per_tile.json"), cube,
           chunks=ChunkLayout.parse(TEST_CHUNKS), progress=False)
    return cube, kept


def _b04_of_31ufu(region, kept: list[dict], inside) -> dict[pd.Timestamp, np.ndarray]:
    """31UFU's B04 reflectance (numpy on its source files) at its pixels with data whose centres ``inside(xs, ys)``
    holds, per date (dates without any left out: outside that orbit's swath)."""
    out = {}
    for f in (f for f in kept if f["properties"]["grid:code"].endswith("31UFU")):
        with rasterio.open(asset_path(region.items, f, "B04")) as src:
            rows, cols = np.indices(src.shape)
            xs, ys = src.transform * (cols + 0.5, rows + 0.5)
            dn = src.read(1)
        where = inside(xs, ys) & (dn > 0)
        if where.any():
            out[pd.Timestamp(f["properties"]["datetime"]).tz_localize(None)] = dn[where] * 1e-4 - 0.1
    return out


def test_a_parcel_s_numbers_are_its_tiles_whatever_parcels_are_read_with_it(per_tile_cube, tiny_straddle_region,
                                                                            tmp_path):
    """A parcel on the data's north edge within 31UFU's data (no tile holds it whole: 31UFU then 31UGU) was read
    from 31UFU asked alone, from 31UGU asked with a parcel across 31UFU's edge (the two together held by 31UGU
    alone): its mean depended on the parcels asked with it, and an extraction's batches gave either. Its pixels are
    31UFU's (numpy on the source files here) in every request."""
    from cube.extract import extract, read_timeseries

    cube, kept = per_tile_cube
    minx, _, _, maxy = tiny_straddle_region.bbox
    edge = TileGrid.from_id("31UFU").bounds[2]
    assert minx < edge - 400
    parcels = gpd.GeoDataFrame({"parcel_id": ["north", "across"]}, crs="EPSG:32631",
                               geometry=[box(minx + 100, maxy - 60, minx + 200, maxy + 40),
                                         box(edge - 100, maxy - 60, edge + 100, maxy + 40)])
    asked = {"bands": ["B04"], "stats": ["mean"], "mask": None}
    alone = parcel_timeseries(cube, parcels.iloc[:1], **asked)
    together = parcel_timeseries(cube, parcels, **asked)
    extract(parcels, cube, tmp_path / "out", progress=False, **asked)
    extracted = read_timeseries(tmp_path / "out")
    expected = _b04_of_31ufu(tiny_straddle_region, kept,
                             lambda xs, ys: (xs >= minx + 105) & (xs <= minx + 195) & (ys >= maxy - 55))
    assert expected
    for when, values in expected.items():
        for frame in (alone, together, extracted):
            got = frame[(frame.parcel_id == "north") & (frame.time == when)]["mean"]
            assert len(got) == 1 and got.iloc[0] == pytest.approx(values.mean(), abs=1e-9)  # 31UGU's: 7e-4 more


def test_a_parcel_s_chip_shows_the_pixels_its_numbers_are_of(per_tile_cube, tiny_straddle_region):
    """A parcel in the tiles' overlap, read from 31UFU (both hold it whole, with the same dates: the first by name),
    near 31UFU's east edge: its chip reaches beyond 31UFU's data, and was read from 31UGU alone (holding most of the
    chip), so the parcel's pixels in the chip (and its GeoTIFF) were not those of its statistics. They are 31UFU's
    now, 31UGU's beyond 31UFU's edge."""
    cube, kept = per_tile_cube
    _, miny, _, maxy = tiny_straddle_region.bbox
    edge, y = TileGrid.from_id("31UFU").bounds[2], (miny + maxy) / 2
    parcel = gpd.GeoDataFrame({"parcel_id": ["near-edge"]}, crs="EPSG:32631",
                              geometry=[box(edge - 300, y, edge - 200, y + 100)])
    series = parcel_timeseries(cube, parcel, bands=["B04"], mask=None)
    assert series.attrs["parcel_status"][0]["tile"] == "31UFU"
    c = chip(cube, parcel, size=64, bands="B04")
    expected = _b04_of_31ufu(tiny_straddle_region, kept, lambda xs, ys: (np.abs(xs - (edge - 245)) < 1)
                             & (np.abs(ys - (y + 55)) < 1))
    assert expected
    for when, values in expected.items():
        got = c.data["B04"].sel(time=when, x=edge - 245, y=y + 55).item()
        assert got == pytest.approx(values[0], abs=1e-6)  # 31UGU's: 7e-4 more
    assert float(c.data["x"].max()) > edge  # the chip reaches beyond 31UFU's data


def _strip_before_the_last_passes(tiny_straddle_region, root: Path) -> tuple[gpd.GeoDataFrame, Path, Path, dict]:
    """The region's first 30 parcels and the strip, a cube ``root / "cube"`` of every pass of both tiles but the
    last two (they come later), extracted into ``root / "out"``: the parcels, cube, ``out`` and the extraction's
    options."""
    from cube.extract import extract

    items = tiny_straddle_region.items
    parcels, strip = _with_strip(tiny_straddle_region)
    some = pd.concat([parcels[["parcel_id", "geometry"]].iloc[:30], strip], ignore_index=True)
    features = items_of(items, "sentinel-2-l2a")
    last = sorted({f["properties"]["datetime"] for f in features})[-2]  # the last two passes come later
    cube, out = root / "cube", root / "out"
    ingest(write_items(items, [f for f in features if f["properties"]["datetime"] < last], "strip-first.json"),
           cube, chunks=ChunkLayout.parse(TEST_CHUNKS), progress=False)
    kw = {"bands": ["B04"], "block": 64, "time_block": 4, "progress": False}
    extract(some, cube, out, **kw)
    return some, cube, out, kw


@pytest.fixture(scope="module")
def _strip_once(tiny_straddle_region, tmp_path_factory) -> tuple[Path, tuple, Path]:
    """:func:`_strip_before_the_last_passes` made once for the module in ``work`` (kept: :mod:`tests.cube.kept`),
    and a whole extraction of its cube given every pass (version 2, in a copy of it): the reference
    the updates must equal."""
    from cube.extract import extract

    root = tmp_path_factory.mktemp("strip")
    (root / "work").mkdir()
    state = _strip_before_the_last_passes(tiny_straddle_region, root / "work")
    keep(root / "work")
    some, _, _, kw = state
    every = Path(shutil.copytree(root / "work" / "cube", root / "every"))
    ingest(tiny_straddle_region.items, every, progress=False)
    extract(some, every, root / "whole", **kw)
    return root, state, root / "whole"


@pytest.fixture
def strip_before_the_last_passes(_strip_once) -> tuple[gpd.GeoDataFrame, Path, Path, dict, Path]:
    """:func:`_strip_before_the_last_passes` for one test to change (parcels, cube, ``out``, options), and the whole
    extraction of version 2 (read only): the module's copy restored at the same place (an extraction names its cube
    by path)."""
    root, state, whole = _strip_once
    restored(root / "work")
    return (*state, whole)


@pytest.mark.parametrize("earlier", [False, True])
def test_extraction_reads_a_parcel_no_tile_holds_as_a_mosaic_also_when_updated(tiny_straddle_region,
                                                                               strip_before_the_last_passes, earlier):
    """A strip from west of 31UGU's edge to east of 31UFU's, longer than their overlap, lies whole in
    neither tile: extraction reads it as a mosaic. An update reads it again whole (a date can be new in one
    of its tiles only), so the output still equals a whole extraction of the new version. ``earlier``: the
    extraction was made by a cardcube whose rows named no scene; its update writes rows of its columns, so that
    all its files keep one schema (a dataset of two schemas trips readers that expect one)."""
    from cube.extract import extract, read_status, read_timeseries

    items = tiny_straddle_region.items
    features = items_of(items, "sentinel-2-l2a")
    some, cube, out, kw, whole = strip_before_the_last_passes  # extracted before the last two passes came
    status = read_status(out).set_index("parcel_id")
    assert (status.loc["strip", "status"], status.loc["strip", "tile"]) == ("ok", "31UFU+31UGU"), \
        status.loc["strip", "reason"]
    (part,) = (out / "timeseries" / "tile=mosaic").glob("part-*.parquet")
    mosaic = pd.read_parquet(part)
    assert pq.read_schema(part).field("time").type == pa.timestamp("us")  # as the units': Spark reads no NANOS
    seen = mosaic["count"] + mosaic["masked"]  # the strip's pixels inside the region, clear or cloudy
    assert set(mosaic.parcel_id) == {"strip"} and seen.min() == seen.max() > 1000
    products = {f["id"]: pd.Timestamp(f["properties"]["datetime"]).tz_localize(None) for f in features}
    for when, named in mosaic.groupby("time").scene_id.first().items():  # each tile's product of the pass, named
        assert len(ids := named.split("+")) == 2 and all(abs(products[i] - when) < pd.Timedelta("120s") for i in ids)

    if earlier:  # as that cardcube wrote them: no scene_id, and no time_columns in the manifest
        for path in (out / "timeseries").rglob("*.parquet"):
            pd.read_parquet(path).drop(columns="scene_id").to_parquet(path, index=False)  # attrs kept
        manifest = json.loads((out / "manifest.json").read_text())
        (out / "manifest.json").write_text(json.dumps({k: v for k, v in manifest.items() if k != "time_columns"}))

    ingest(items, cube, progress=False)
    extract(some, cube, out, update=True, **kw)
    again = extract(some, cube, out, update=True, **kw)  # nothing new: its summary said "1 already there"
    files = list((out / "timeseries").rglob("*.parquet"))
    assert len(files) > 2 and {"scene_id" in pq.read_schema(p).names for p in files} == {not earlier}
    assert again.rows == 0 and "(no scene new since the last run" in again.summary()
    a, b = (read_timeseries(p).drop(columns=["cube_version", *(["scene_id"] if earlier and p == whole else [])])
            .sort_values(["parcel_id", "time", "band"], ignore_index=True) for p in (out, whole))
    pd.testing.assert_frame_equal(a, b, check_exact=True, check_categorical=False)
    assert len(set(a[a.parcel_id == "strip"].time)) == len({f["properties"]["datetime"] for f in features})


def test_a_parcel_across_tiles_too_small_for_a_pixel_is_too_small_not_failed(straddle_cube, tiny_straddle_region,
                                                                              tmp_path):
    """A strip no tile holds whole and too narrow for a pixel was "failed", listed as a failure of the run (exit 1
    every week); it is too_small as on one tile, and the run has no failure."""
    import shutil

    import pandas as pd

    from cube.extract import extract, read_status

    cube = shutil.copytree(straddle_cube, tmp_path / "cube")
    parcels = gpd.read_parquet(tiny_straddle_region.parcels)
    _, miny, _, maxy = tiny_straddle_region.bbox
    y = (miny + maxy) / 2
    west, east = TileGrid.from_id("31UGU").bounds[0], TileGrid.from_id("31UFU").bounds[2]
    thin = gpd.GeoDataFrame({"parcel_id": ["thin"]}, geometry=[box(west - 100, y, east + 100, y + 6)], crs=parcels.crs)
    result = extract(pd.concat([parcels[["parcel_id", "geometry"]].iloc[:5], thin], ignore_index=True), cube,
                     tmp_path / "out", bands=["B04"], progress=False)
    status = read_status(tmp_path / "out").set_index("parcel_id")
    assert result.failures == () and status.loc["thin", "status"] == "too_small", status.loc["thin", "reason"]
    assert status.loc["thin", "tile"] == "31UFU+31UGU" and "leaves no pixel after an inward buffer" in \
        status.loc["thin", "reason"] and not status.loc["thin", "reason"].startswith("parcel thin")


def test_a_tile_ingested_without_the_catalog_is_still_read(tiny_straddle_region, tmp_path):
    """The catalog routes reads; a tile an ``ingest --no-catalog`` added is not in it yet, and is read anyway."""
    features = items_of(tiny_straddle_region.items, "sentinel-2-l2a")
    by_tile = {t: [f for f in features if f["properties"]["grid:code"].endswith(t)][:2] for t in ("31UFU", "31UGU")}
    root, chunks = tmp_path / "cube", ChunkLayout.parse(TEST_CHUNKS)
    ingest(write_items(tiny_straddle_region.items, by_tile["31UFU"], "ufu.json"), root, chunks=chunks, progress=False)
    ingest(write_items(tiny_straddle_region.items, by_tile["31UGU"], "ugu.json"), root, chunks=chunks, progress=False,
           catalog=False)
    edge = TileGrid.from_id("31UFU").geobox(10).boundingbox.right
    _, miny, _, _ = tiny_straddle_region.bbox
    ds = open_cube(root, bbox=(edge + 100, miny + 100, edge + 300, miny + 300), bands=["B04"])  # 31UGU only
    assert ds.attrs["cardcube:tiles"] == "31UGU" and ds.sizes["time"] == 2
    assert int(ds["B04"].notnull().sum()) > 0


def test_a_chip_on_a_tile_without_a_date_in_range_says_so(tiny_straddle_region, tmp_path):
    """The cube has dates in the range, but on the other tile: no chip, and an error naming the chip's tile."""
    features = sorted(items_of(tiny_straddle_region.items, "sentinel-2-l2a"), key=lambda f: f["properties"]["datetime"])
    ufu = [f for f in features if f["properties"]["grid:code"].endswith("31UFU")][:2]  # early dates on 31UFU
    ugu = [f for f in features if f["properties"]["grid:code"].endswith("31UGU")][-2:]  # late dates on 31UGU
    root = tmp_path / "cube"
    ingest(write_items(tiny_straddle_region.items, ufu + ugu, "split.json"), root,
           chunks=ChunkLayout.parse(TEST_CHUNKS), progress=False)
    edge = TileGrid.from_id("31UFU").geobox(10).boundingbox.right
    _, miny, _, _ = tiny_straddle_region.bbox
    point = gpd.GeoSeries([Point(edge + 300, miny + 300)], crs=TileGrid.from_id("31UGU").crs).to_crs(4326).iloc[0]
    early = f"{ufu[0]['properties']['datetime'][:10]}/{ufu[-1]['properties']['datetime'][:10]}"
    assert len(chip(root, point, size=16).times) == 2  # 31UGU's own dates
    with pytest.raises(DateNotFoundError, match=f"no acquisition of tile 31UGU, which holds the chip, within the "
                                                f"time range {early}: its dates run from "
                                                f"{ugu[0]['properties']['datetime'][:10]}"):
        chip(root, point, size=16, time=early)


def test_a_chip_no_tile_holds_whole_is_a_mosaic_of_the_tiles(straddle_cube, tiny_straddle_region):
    """A chip wider than the tiles' overlap (9.8 km): neither tile holds it, so it shows each tile's pixels, as the
    source scenes of both tiles hold them, not the tile of its centre with no data beyond that tile's edge."""
    edge = TileGrid.from_id("31UFU").geobox(10).boundingbox.right
    _, miny, _, maxy = tiny_straddle_region.bbox
    assert TileGrid.from_id("31UGU").ulx > edge - 4800 - 5500  # the chip reaches west of 31UGU and east of 31UFU
    centre = gpd.GeoSeries([Point(edge - 4800, (miny + maxy) / 2)], crs=32631).to_crs(4326).iloc[0]
    features = items_of(tiny_straddle_region.items, "sentinel-2-l2a")
    day = min(f["properties"]["datetime"][:10] for f in features)
    c = chip(straddle_cube, centre, size=1100, bands="B04", time=day)
    a = c.geobox.affine
    expected = np.full(c.geobox.shape, np.nan)
    for feature in (f for f in features if f["properties"]["datetime"][:10] == day):  # one scene per tile
        with rasterio.open(asset_path(tiny_straddle_region.items, feature, "B04")) as src:
            window = from_bounds(a.c, a.f + a.e * 1100, a.c + a.a * 1100, a.f, src.transform)
            raw = src.read(1, window=window, boundless=True, fill_value=0).astype("float64")
        expected = np.where(np.isnan(expected), np.where(raw == 0, np.nan, raw * 1e-4 - 0.1), expected)
    got = c.data["B04"].values[0]
    assert (np.isfinite(expected) & (c.data.x.values > edge)).any()  # 31UGU's own pixels are in the chip
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    np.testing.assert_allclose(got, expected, atol=1e-6, equal_nan=True)
    assert c.data["SCL"].dtype == np.uint8 and (c.data["SCL"].values[0] != 0).sum() == np.isfinite(got).sum()


def _passes_seconds_apart(region, source: str, days: int, seconds: float, cube) -> list[dict]:
    """The ``source`` collection's scenes of the region's first ``days`` days, 31UGU's ``seconds`` after 31UFU's,
    ingested into ``cube``: the features ingested."""
    every = items_of(region.items, source)
    first = sorted({f["properties"]["datetime"][:10] for f in every})[:days]
    features = [f for f in every if f["properties"]["datetime"][:10] in first]
    later_on_tile(features, "31UGU", seconds)
    ingest(write_items(region.items, features, f"{source}-{seconds}s-apart.json"), cube,
           collection="s1" if source.startswith("sentinel-1") else "s2", chunks=ChunkLayout.parse(TEST_CHUNKS),
           progress=False)
    return features


def test_one_pass_seconds_apart_on_two_tiles_is_one_date_of_a_mosaic(straddle_cube, tiny_straddle_region, tmp_path):
    """Real Sentinel-2 granules of one datatake carry their own sensing times, seconds apart from tile to tile. A
    read across the tile edge shows each pass once, at its earliest time, with the same pixels as when the two
    tiles' times agree; not two half-empty dates seconds apart."""

    # the first 6 passes (a time block and a half of the tests' chunks), each on both tiles
    features = _passes_seconds_apart(tiny_straddle_region, "sentinel-2-l2a", 6, 4, tmp_path)
    passes = sorted({f["properties"]["datetime"][:10] for f in features})
    assert len(features) == 12
    west, edge = TileGrid.from_id("31UGU").ulx - 1000, TileGrid.from_id("31UFU").geobox(10).boundingbox.right
    _, miny, _, maxy = tiny_straddle_region.bbox
    area = (west, miny, edge + 200, maxy)
    got = open_cube(tmp_path, bbox=area, bands=["B04", "SCL"], chunks="window").compute()
    want = open_cube(straddle_cube, bbox=area, bands=["B04", "SCL"], time=(passes[0], passes[-1]),
                     chunks="window").compute()
    ufu_times = np.array(sorted({f["properties"]["datetime"][:19] for f in features
                                 if f["properties"]["grid:code"].endswith("31UFU")}), dtype="datetime64[ns]")
    assert sorted(got.attrs["cardcube:tiles"].split(",")) == ["31UFU", "31UGU"]  # a mosaic of the two
    assert got.sizes["time"] == want.sizes["time"] and set(ufu_times) <= set(got.time.values)
    np.testing.assert_array_equal(got.time.values, want.time.values)
    np.testing.assert_array_equal(got["B04"].values, want["B04"].values)
    np.testing.assert_array_equal(got["SCL"].values, want["SCL"].values)


def test_the_time_a_mosaic_date_is_given_selects_that_date_whole(tiny_straddle_region, tmp_path):
    """31UGU's products of each pass 4 s after 31UFU's: the strip (no tile holds it) has each pass as one date, at
    31UFU's time. Asked again with that time (time=, as a time series gives it), the date was 31UFU's alone: the
    strip's pixels of 31UGU came out masked, its statistics those of a part. Now the pass is read whole."""

    _passes_seconds_apart(tiny_straddle_region, "sentinel-2-l2a", 3, 4, tmp_path)
    _, strip = _with_strip(tiny_straddle_region)
    series = parcel_timeseries(tmp_path, strip, bands=["B04"], mask=None)
    assert series.attrs["parcel_status"][0]["tile"] == "31UFU+31UGU" and len(series) == 3  # the set-up
    area = strip.total_bounds
    whole = open_cube(tmp_path, bbox=tuple(area), bands=["B04"]).compute()
    for when in series.time:
        for given in (when, f"{when:%Y-%m-%dT%H:%M:%SZ}"):
            one = parcel_timeseries(tmp_path, strip, bands=["B04"], mask=None, time=given)
            pd.testing.assert_frame_equal(one, series[series.time == when].reset_index(drop=True))
            ds = open_cube(tmp_path, bbox=tuple(area), bands=["B04"], time=given)
            assert ds.sizes["time"] == 1
            np.testing.assert_array_equal(ds["B04"].values[0], whole["B04"].sel(time=when).values)


def test_a_pass_across_midnight_is_read_once_in_the_ranges_either_side(tiny_straddle_region, tmp_path):
    """31UFU's products of each pass at 23:59:58, 31UGU's at 00:00:03 the next day (a pass near midnight UTC, as
    Sentinel-1's over the Americas). Before, the ranges on either side of midnight both held it: a parcel read across
    the tiles had a date before the start of the range of the next day (a Dataset of the mosaic, narrowed by that
    range, had not), and a parcel of 31UGU within 31UFU's data was read across the tiles in the range of the day
    before, at 31UFU's time, and from 31UGU alone in the next: two rows of one pass. Each pass is now a date of the
    range its date (a mosaic's: its earliest time) lies in, and the two ranges make the season's rows."""
    features = items_of(tiny_straddle_region.items, "sentinel-2-l2a")
    days = sorted({f["properties"]["datetime"][:10] for f in features})[:3]
    features = [f for f in features if f["properties"]["datetime"][:10] in days]
    for f in features:
        day = pd.Timestamp(f["properties"]["datetime"][:10])
        late = f["properties"]["grid:code"].endswith("31UGU")  # 31UGU's 5 s later, after midnight
        when = day + pd.Timedelta(days=1, seconds=3) if late else day + pd.Timedelta(hours=23, minutes=59, seconds=58)
        f["properties"]["datetime"] = f"{when:%Y-%m-%dT%H:%M:%SZ}"
    ingest(write_items(tiny_straddle_region.items, features, "across-midnight.json"), tmp_path,
           chunks=ChunkLayout.parse(TEST_CHUNKS), progress=False)
    parcels, strip = _with_strip(tiny_straddle_region)
    every = pd.concat([parcels[["parcel_id", "geometry"]], strip], ignore_index=True)
    night = pd.Timestamp(days[0]) + pd.Timedelta(days=1)  # the first pass's midnight
    kw = {"bands": ["B04"], "mask": None}
    before = parcel_timeseries(tmp_path, every, time=f"../{days[0]}", **kw)
    after = parcel_timeseries(tmp_path, every, time=f"{night:%Y-%m-%d}/..", **kw)
    whole = parcel_timeseries(tmp_path, every, **kw)
    assert (before.time < night).all() and (after.time >= night).all() and len(before) and len(after)
    # the range of the day after holds the passes after the first: no word of the first's later tile (every parcel
    # across the tiles was told to "ask for the pass's date", the rows of the range's passes beside it)
    assert not [s for s in after.attrs["parcel_status"] if "dated outside it" in s["reason"]]
    assert "31UFU+31UGU" in {s["tile"] for s in whole.attrs["parcel_status"]}  # the strip: a mosaic
    keys = ["parcel_id", "time", "band"]
    halves = pd.concat([before, after]).sort_values(keys).reset_index(drop=True)
    pd.testing.assert_frame_equal(halves, whole.sort_values(keys).reset_index(drop=True))
    area = tuple(strip.total_bounds)
    mosaic = open_cube(tmp_path, bbox=area, bands=["B04"])
    assert sorted(mosaic.attrs["cardcube:tiles"].split(",")) == ["31UFU", "31UGU"] and mosaic.sizes["time"] == 3
    late = open_cube(tmp_path, bbox=area, bands=["B04"], time=f"{night:%Y-%m-%d}/..")
    np.testing.assert_array_equal(late.time.values, mosaic.time.values[1:])  # as the Dataset narrowed by it
    np.testing.assert_array_equal(late["B04"].values, mosaic["B04"].values[1:])
    own = f"{night:%Y-%m-%d}T00:00:03Z"  # 31UGU's own time of the first pass: no date of the mosaic, said why
    why = f"of passes dated outside it .*: {own}, of the pass dated {days[0]}T23:59:58Z; ask for the pass's date"
    with pytest.warns(NoAcquisitionWarning, match=f"hold acquisitions within the time range {own} {why}"):
        assert open_cube(tmp_path, bbox=area, bands=["B04"], time=own).sizes["time"] == 0
    series = parcel_timeseries(tmp_path, strip, time=own, **kw)
    assert series.empty and re.search(why, series.attrs["parcel_status"][0]["reason"])
    centre = strip.to_crs(4326).geometry.iloc[0].centroid  # a chip of both tiles: a range of it said alike
    with pytest.raises(DateNotFoundError, match=f"no date of the chip: tile.*{why}"):
        chip(tmp_path, centre, size=1100, bands="B04", time=own)
    assert list(chip(tmp_path, centre, size=1100, bands="B04", date=own).times) == [mosaic.time.values[0]]
    # exact times name a pass by any of its times: 31UGU's own time of the first pass reads it for every parcel the
    # season reads it for (a parcel of 31UFU within 31UGU's data, read from 31UFU alone, had none of it)
    named = parcel_timeseries(tmp_path, every, time=frozenset({own}), **kw)
    first_pass = whole[whole.time < night + pd.Timedelta(hours=1)]
    assert set(named.parcel_id) == set(first_pass.parcel_id) and len(named) == len(first_pass)


def test_a_time_selects_the_mosaic_date_it_names_as_pass_times_groups_it():
    """31UGU holds two dates of one pass (a slice that came after its pass's date was committed: a date of its own,
    25 s later), 31UFU the pass 5 s after 31UGU's first: time= the first mosaic date also read the late slice's, a
    date not asked for (not on 31UGU alone). A pass chained over three tiles, the last beyond PASS_GAP of the
    first, is one date of the mosaic: the third tile's part of it was left out."""
    from cardcube.query import parse_time_selection
    from cardcube.spec import cube_spec
    from cube.dataset import pass_selection
    from cube.ledger import Acquisition, CubeVersion, TileState

    def version(tiles: dict[str, list[str]]) -> CubeVersion:
        return CubeVersion("s1", 1, cube_spec("s1"), {tile: TileState(tile, tuple(
            Acquisition(f"2024-05-02T{t}Z", f"{tile}-{t}", "sentinel-1a", 88, "ascending") for t in times))
            for tile, times in tiles.items()}, {})

    def selected(v: CubeVersion, tiles: list[str]) -> list[str]:
        sel = pass_selection(v, tiles, parse_time_selection(frozenset({"2024-05-02T05:50:00Z"})))
        return sorted(f"{t}"[11:19] for t in sel)
    late = version({"31UFU": ["05:50:05"], "31UGU": ["05:50:00", "05:50:25"]})
    assert selected(late, ["31UFU", "31UGU"]) == ["05:50:00", "05:50:05"]
    chained = version({"31UFU": ["05:50:00"], "31UGU": ["05:51:40"], "31UFT": ["05:53:20"]})
    assert selected(chained, ["31UFU", "31UGU", "31UFT"]) == ["05:50:00", "05:51:40", "05:53:20"]


def test_a_cube_opened_without_an_area_holds_every_tile_s_data(straddle_cube, tiny_straddle_region):
    """No bbox: where any tile holds data, not the first tile's footprint alone (31UFU ends inside the region)."""
    minx, miny, maxx, maxy = tiny_straddle_region.bbox
    ds = open_cube(straddle_cube, bands=["B04"])
    assert ds.attrs["cardcube:tiles"] == "31UGU"  # the one tile holding the region whole
    assert (float(ds.x.min()) - 5, float(ds.x.max()) + 5) == (minx, maxx)
    assert (float(ds.y.min()) - 5, float(ds.y.max()) + 5) == (miny, maxy)
    boxed = open_cube(straddle_cube, bbox=(minx, miny, maxx, maxy), bands=["B04"])
    np.testing.assert_array_equal(ds["B04"].values, boxed["B04"].values)


def test_tiles_as_one_string_name_tiles_not_characters(straddle_cube, tiny_straddle_region):
    """``tiles="31UGU"`` (or "T31UGU", or "31UFU,31UGU") is read as tile ids, as ingest's ``tiles=`` is."""
    bbox = tiny_straddle_region.bbox
    ds = open_cube(straddle_cube, tiles="t31ugu", bbox=bbox, bands=["B04"])
    assert ds.attrs["cardcube:tiles"] == "31UGU"
    both = open_cube(straddle_cube, tiles="31UFU,31UGU", bbox=bbox, bands=["B04"])
    assert both.attrs["cardcube:tiles"] == "31UGU"  # of the two, the one holding the area whole


def test_a_chip_takes_the_pass_time_its_parcel_s_series_gives_from_the_other_tile(tiny_straddle_region, tmp_path):
    """One Sentinel-1 pass with a sensing time on 31UGU 20 s after 31UFU's (products of consecutive slices): a
    parcel near 31UFU's east edge has its series from 31UFU, and its 128 px chip, reaching beyond 31UFU's data, was
    read from 31UGU alone and refused each pass time of the series ("no acquisition of tile 31UGU ... within the
    time range"), then gave 31UGU's own time. The chip is read with the parcel's tile first (its pixels those of its
    series), a mosaic with 31UGU beyond 31UFU's data: that pass's chip at the series' time, as 31UGU's time of the
    pass gives it too."""

    _passes_seconds_apart(tiny_straddle_region, "sentinel-1-card-bs", 2, 20, tmp_path)
    parcels = gpd.read_parquet(tiny_straddle_region.parcels)
    x = parcels.to_crs(32631).geometry.centroid.x
    edge = TileGrid.from_id("31UFU").geobox(10).boundingbox.right
    near = parcels[(x > edge - 600) & (x < edge - 100)].parcel_id.tolist()[:4]
    series = parcel_timeseries(tmp_path, near, registry=parcels, collection="s1", bands=["VH"])
    assert len(series) and {s["tile"] for s in series.attrs["parcel_status"]} == {"31UFU"}  # the set-up
    for pid, when in series[["parcel_id", "time"]].itertuples(index=False):
        given = f"{when:%Y-%m-%dT%H:%M:%SZ}"
        c = chip(tmp_path, [pid], registry=parcels, collection="s1", bands="VH", date=given)
        assert c.data.attrs["cardcube:tiles"] == "31UFU,31UGU" and c.data.sizes["time"] == 1
        assert pd.Timestamp(c.times[0], tz="UTC") == pd.Timestamp(given)  # the pass as the series dates it
        ugu = (pd.Timestamp(given) + pd.Timedelta(seconds=20)).to_pydatetime()  # 31UGU's time of that pass
        same = chip(tmp_path, [pid], registry=parcels, collection="s1", bands="VH", date=ugu)
        np.testing.assert_array_equal(c.data["VH"].values, same.data["VH"].values)
    late = f"{series.time.iloc[0] + pd.Timedelta(seconds=1):%Y-%m-%dT%H:%M:%SZ}"  # no pass's time: refused as before
    with pytest.raises(DateNotFoundError, match=f"no acquisition of the s1 cube at {late}"):
        chip(tmp_path, [near[0]], registry=parcels, collection="s1", bands="VH", date=late)


def _extracted_before_a_date_of_31ugu(tiny_straddle_region, tmp_path: Path) -> tuple[Path, Path, Path, dict]:
    """The region's parcels and the strip (a file), a cube of 6 dates of both tiles but one of 31UGU (the parcels
    it holds whole are read across tiles until that date comes: a file a batch of them), extracted into ``out``,
    then given every scene (version 2): its parcels file, cube, ``out`` and the extraction's options."""
    from cube.extract import extract, read_status

    items = tiny_straddle_region.items
    parcels, strip = _with_strip(tiny_straddle_region)
    some = tmp_path / "some.parquet"
    pd.concat([parcels[["parcel_id", "geometry"]], strip], ignore_index=True).to_parquet(some)
    features = items_of(items, "sentinel-2-l2a")
    assert features[5]["properties"]["grid:code"].endswith("31UGU")
    cube, out = tmp_path / "cube", tmp_path / "out"
    ingest(write_items(items, features[:5] + features[6:12], "strip-first.json"), cube,
           chunks=ChunkLayout.parse(TEST_CHUNKS), progress=False)
    kw = {"bands": ["B04"], "block": 64, "time_block": 4, "progress": False}
    extract(some, cube, out, **kw)
    across = read_status(out).set_index("parcel_id").tile.str.contains("+", regex=False)
    assert across.sum() > 1, across  # the strip, and the parcels crossing 31UFU's edge
    ingest(items, cube, progress=False)
    return some, cube, out, kw


@pytest.fixture(scope="module")
def _before_31ugu_once(tiny_straddle_region, tmp_path_factory) -> tuple[Path, tuple[Path, Path, Path, dict], Path]:
    """:func:`_extracted_before_a_date_of_31ugu` made once for the module in ``work`` (kept:
    :mod:`tests.cube.kept`), and a whole extraction of the cube's version 2 (the reference the updates must
    equal)."""
    from cube.extract import extract

    root = tmp_path_factory.mktemp("before-31ugu")
    (root / "work").mkdir()
    state = _extracted_before_a_date_of_31ugu(tiny_straddle_region, root / "work")
    keep(root / "work")
    some, cube, _, kw = state
    extract(some, cube, root / "whole", **kw)
    return root, state, root / "whole"


@pytest.fixture
def before_31ugu(_before_31ugu_once) -> tuple[Path, Path, Path, dict, Path]:
    """:func:`_extracted_before_a_date_of_31ugu` for one test to change (its parcels file, cube, ``out`` and the
    extraction's options), and the whole extraction of version 2 (read only): the module's copy restored at the
    same place (an extraction names its cube by path), so each test starts from the state it made."""
    root, state, whole = _before_31ugu_once
    restored(root / "work")
    return (*state, whole)


def _rows(where: Path) -> pd.DataFrame:
    """An extraction's rows, the files they are in aside (a parcel read across tiles stays so after an update, its
    tiles' scenes named in the order it read them then, as its status names the tiles)."""
    from cube.extract import read_timeseries

    rows = read_timeseries(where).drop(columns=["cube_version", "tile"])
    return rows.assign(scene_id=["+".join(sorted(s.split("+"))) for s in rows.scene_id]).sort_values(
        ["parcel_id", "time", "band"], ignore_index=True)


def test_an_update_of_parcels_read_across_tiles_survives_a_resume_without_the_flag_and_late_tasks(before_31ugu):
    """Parcels read across tiles (a file a batch) after an update was killed: resumed without ``--update`` (as a
    plain re-run, or as the message of an unfinished run says), their earlier dates were taken for stale files and
    deleted. And an update rewrote their batch file under the first run's name, so a stopped run's task writing it
    late replaced the update's rows with the earlier version's. An update's batch files are named by its version,
    the manifest lists those of the finished run, and only the driver deletes the others."""
    import json
    import os
    import subprocess
    import sys

    from tests.in_process import run_here

    some, cube, out, _, whole = before_31ugu
    mosaic = out / "timeseries" / "tile=mosaic"
    earlier = {p: p.read_bytes() for p in mosaic.glob("part-*.parquet")}

    argv = ["extract", "--parcels", str(some), "--cube", str(cube), "--out", str(out), "--bands", "B04", "--block",
            "64", "--time-block", "4", "--scheduler", "sync", "--quiet"]
    env = {**os.environ, "CARDCUBE_KILL_AT": "extract-unit-written",
           "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    assert subprocess.run([sys.executable, "-m", "cardcube.cli", *argv, "--update"], env=env, capture_output=True,
                          text=True, timeout=300).returncode == -9  # killed: a process of its own
    resumed = run_here(argv)  # without --update, in this process
    assert resumed.returncode == 0, resumed.stderr

    pd.testing.assert_frame_equal(_rows(out), _rows(whole), check_exact=True, check_categorical=False)
    run = json.loads((out / "manifest.json").read_text())["run"]
    updated = set(mosaic.glob("part-*.parquet"))  # the first run's files replaced by the update's, named anew
    assert {p.name for p in updated} == {p.name.replace("v00000001", "v00000002") for p in earlier}
    assert all(p.name.endswith(f"-{run}.parquet") for p in updated) and not set(earlier) & updated

    for path, data in earlier.items():  # a stopped run's tasks write late: read beside the update's, not instead
        path.write_bytes(data)
    pd.testing.assert_frame_equal(_rows(out), _rows(whole), check_exact=True, check_categorical=False)


def test_a_batch_an_update_fails_to_read_has_no_stale_rows_and_is_read_by_the_next_run(before_31ugu, monkeypatch):
    """A task of an update whose read of a batch across tiles failed deleted the batch's file, which a stopped
    run's late task did too, after the update it was stopped in had been resumed and finished. Now only the driver
    deletes, once the run is over: the earlier version's file of a failed batch goes (its parcels "failed", no
    rows of another version), and the next run reads them."""
    import cube.extract_job as extract_job
    from cardcube.errors import StoreError
    from cube.extract import extract, read_status

    some, cube, out, kw, whole = before_31ugu
    across = read_status(out).query("tile.str.contains('+', regex=False)").parcel_id

    def unreachable(*args, **kwargs):
        raise StoreError("the store does not answer")

    with monkeypatch.context() as patched:
        patched.setattr(extract_job, "parcel_timeseries", unreachable)
        failed = extract(some, cube, out, update=True, **kw)
    assert failed.failures and failed.status["failed"] == len(across)
    assert not list((out / "timeseries" / "tile=mosaic").glob("part-*.parquet"))
    assert set(read_status(out).set_index("parcel_id").status[across]) == {"failed"}
    assert not set(_rows(out).parcel_id) & set(across)  # no rows of version 1 under a version 2 extraction
    again = extract(some, cube, out, update=True, **kw)
    assert not again.failures and again.status["failed"] == 0
    pd.testing.assert_frame_equal(_rows(out), _rows(whole), check_exact=True, check_categorical=False)


def test_an_update_stopped_by_a_cardcube_before_versioned_batch_files_is_resumed_with_its_files(
        before_31ugu, tmp_path, monkeypatch):
    """An update stopped under the cardcube before batch files were named by version, resumed after an upgrade:
    its batch files across tiles (``part-<n>-<run>.parquet``, of version 2) were taken for done, then deleted as
    an earlier version's: the parcels' rows were lost. And an extraction of a cardcube before batches (the
    whole mosaic in ``part.parquet``) could not be read."""
    import json
    import shutil

    import cube.extract_job as extract_job
    from cube.extract import extract, read_timeseries

    some, cube, out, kw, whole = before_31ugu
    manifest = json.loads((out / "manifest.json").read_text())
    manifest.pop("mosaics", None)
    (out / "manifest.json").write_text(json.dumps(manifest))
    for path in (out / "timeseries" / "tile=mosaic").glob("*.parquet"):  # as the cardcube before named them
        path.rename(path.with_name(path.name.replace("-v00000001", "")))
    write_bytes = extract_job.write_bytes

    class Stopped(BaseException):
        pass

    def as_before(store, key, data, *args, **kwargs):  # a batch's file by its old name, then the stop
        mosaic = "tile=mosaic/" in key
        write_bytes(store, key.replace("-v00000002", "") if mosaic else key, data, *args, **kwargs)
        if mosaic:
            raise Stopped

    with monkeypatch.context() as patched:
        patched.setattr(extract_job, "write_bytes", as_before)
        with pytest.raises(Stopped):
            extract(some, cube, out, update=True, scheduler="sync", **kw)
    legacy = sorted((out / "timeseries" / "tile=mosaic").glob(f"part-?????-{manifest['run']}.parquet"))
    assert len(legacy) > 1  # the one the update wrote, the others still of version 1
    resumed = extract(some, cube, out, update=True, **kw)
    assert resumed.units_resumed >= 1 and sum(p.exists() for p in legacy) == 1  # the update's kept
    pd.testing.assert_frame_equal(_rows(out), _rows(whole), check_exact=True, check_categorical=False)

    old = tmp_path / "old"  # as a cardcube before runs and batches wrote it: no run, one mosaic file
    shutil.copytree(whole, old)
    manifest = json.loads((old / "manifest.json").read_text())
    run = manifest.pop("run")
    manifest.pop("mosaics", None)
    (old / "manifest.json").write_text(json.dumps(manifest))
    for path in (old / "timeseries").rglob("*.parquet"):
        path.rename(path.with_name(path.name.replace(f"-{run}", "")))
    mosaics = sorted((old / "timeseries" / "tile=mosaic").glob("*.parquet"))
    pd.concat([pd.read_parquet(p) for p in mosaics]).to_parquet(mosaics[0].parent / "part.parquet")
    for path in mosaics:
        path.unlink()
    pd.testing.assert_frame_equal(read_timeseries(old).drop(columns="tile"), read_timeseries(whole)
                                  .drop(columns="tile"), check_exact=True, check_categorical=False)
    def stop_after_a_batch(store, key, data, *args, **kwargs):
        write_bytes(store, key, data, *args, **kwargs)
        if "tile=mosaic/" in key:
            raise Stopped

    with monkeypatch.context() as patched:  # run again, and stopped once it has written a batch's file beside it
        patched.setattr(extract_job, "write_bytes", stop_after_a_batch)
        with pytest.raises(Stopped):
            extract(some, cube, old, scheduler="sync", **kw)
    assert sorted(p.name for p in (old / "timeseries" / "tile=mosaic").glob("*.parquet")) == [
        "part-00000-v00000002.parquet", "part.parquet"]
    pd.testing.assert_frame_equal(_rows(old), _rows(whole), check_exact=True, check_categorical=False)
    extract(some, cube, old, **kw)  # resumed to its end: the batches' files replace part.parquet
    assert not (old / "timeseries" / "tile=mosaic" / "part.parquet").exists()
    pd.testing.assert_frame_equal(_rows(old), _rows(whole), check_exact=True, check_categorical=False)


def test_a_run_whose_batch_fails_leaves_that_batch_s_file_of_its_version(before_31ugu, monkeypatch):
    """Two runs into one --out at once, of one version: one whose read of a batch failed deleted, once it had run,
    that batch's file the other had written and listed (its manifest then named a file gone, its parcels "ok" and
    without rows). A run deletes only files of earlier versions."""
    import cube.extract_job as extract_job
    import cube.work_units as work_units
    from cardcube.errors import StoreError
    from cube.extract import extract

    some, cube, out, kw, _ = before_31ugu
    written = set((out / "timeseries" / "tile=mosaic").glob("part-*.parquet"))  # the other run's, say

    def unreachable(*args, **kwargs):
        raise StoreError("the store does not answer")

    monkeypatch.setattr(work_units, "mosaic_status", lambda *args, **kwargs: None)  # not yet written, it saw
    monkeypatch.setattr(extract_job, "parcel_timeseries", unreachable)
    failed = extract(some, cube, out, as_of=1, **kw)
    assert failed.failures and written and all(p.exists() for p in written)


def test_a_run_an_update_overtook_does_not_write_its_version_back(before_31ugu, monkeypatch):
    """A run of version 1 into an extraction, and an --update to version 2 started while it went on and finished
    first: the run's status table and manifest put version 1 back over the update's (complete, its scenes), so the
    next update repeated rows. It now says so and writes neither."""
    import json

    import cube.extract as extract_module
    from cardcube.errors import InvalidRequestError
    from cube.extract import extract

    some, cube, out, kw, whole = before_31ugu
    check_written, overtaken = extract_module._check_written, []

    def update_meanwhile(*args, **kwargs):
        check_written(*args, **kwargs)
        if not overtaken:  # the first run's check: the update runs (its own check passes by)
            overtaken.append("update")
            overtaken.append(extract(some, cube, out, update=True, **kw))

    monkeypatch.setattr(extract_module, "_check_written", update_meanwhile)
    with pytest.raises(InvalidRequestError, match=r"another run \(an --update\) made it so while this run of "):
        extract(some, cube, out, as_of=1, **kw)
    manifest = json.loads((out / "manifest.json").read_text())
    assert overtaken and manifest["version"] == 2 and manifest["complete"] and manifest["updated_from"] == [1]
    monkeypatch.undo()
    pd.testing.assert_frame_equal(_rows(out), _rows(whole), check_exact=True, check_categorical=False)


def test_an_update_of_dates_beyond_its_time_range_keeps_the_parcels_read_across_tiles(tiny_straddle_region,
                                                                                      tmp_path):
    """May, each tile lacking a date of it the other holds: the parcels of the overlap are read across tiles,
    31UFU first (as many dates); 31UGU's June scenes came later, none of them in the time range, but 31UGU has the
    most dates now, so those parcels are read from it first, in the batches of the parcels crossing 31UFU's edge.
    The update kept the first run's batch files by their numbers, now of other parcels: it deleted two and failed
    (KeyError), their parcels' rows gone. A batch whose file holds other parcels is read again."""
    from cube.extract import extract, read_status

    items = tiny_straddle_region.items
    dropped = {("31UGU", "2024-05-07"), ("31UFU", "2024-05-12")}
    features = [(f["properties"]["grid:code"][-5:], f["properties"]["datetime"], f)
                for f in items_of(items, "sentinel-2-l2a")]
    may = [f for tile, when, f in features if when < "2024-05-21" and (tile, when[:10]) not in dropped]
    june = [f for tile, when, f in features if when.startswith("2024-06") and tile == "31UGU"][:2]
    parcels = gpd.read_parquet(tiny_straddle_region.parcels)[["parcel_id", "geometry"]]
    cube, out, whole = tmp_path / "cube", tmp_path / "out", tmp_path / "whole"
    ingest(write_items(items, may, "may.json"), cube, chunks=ChunkLayout.parse(TEST_CHUNKS), progress=False)
    kw = {"bands": ["B04"], "time": "2024-05-01/2024-05-20", "progress": False}
    extract(parcels, cube, out, **kw)
    assert set(read_status(out).tile) == {"31UGU", "31UFU+31UGU", "31UGU+31UFU"}
    ingest(write_items(items, june, "june.json"), cube, progress=False)
    assert extract(parcels, cube, out, update=True, **kw).new_scenes == 0
    extract(parcels, cube, whole, **kw)
    assert set(read_status(whole).tile) == {"31UGU", "31UGU+31UFU"}
    pd.testing.assert_frame_equal(_rows(out), _rows(whole), check_exact=True, check_categorical=False)
    columns = ["parcel_id", "status", "reason", "tile", "pixels"]
    pd.testing.assert_frame_equal(read_status(out)[columns], read_status(whole)[columns])
