"""Items of no MGRS tile (Planetary Computer's sentinel-1-rtc: a whole GRD footprint on a UTM grid of its own),
split with ``warp`` into one scene per tile their footprint overlaps -- each tile checked against
rasterio.warp.reproject of the same file onto that tile's grid -- and rejected without it. Also: a tile its
footprint overlaps with nodata only is rejected, not written as an empty date."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import warnings
import zlib
from collections import Counter
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from odc.geo.geobox import GeoBox
from odc.geo.geom import Geometry, box
from rasterio.enums import Resampling
from shapely.geometry import shape

from cardcube.cli import main
from cardcube.grid import TileGrid, tiles_overlapping
from cardcube.spec import ChunkLayout
from cardcube.storage import open_store
from catalog import keys
from catalog.validate import validate_catalog
from cube import layout
from cube.extract import extract, read_status
from cube.ledger import data_footprint, read_version, scene_extent
from cube.timeseries import parcel_timeseries, partly_outside
from ingest import validate
from ingest.job import ingest
from ingest.sources import SourceScene
from ingest.split import split_by_tile
from ingest.warp import kernel_reach
from tests.ingest.http_source import COUNTING_SERVER, bytes_sent, http_server, served
from tests.ingest.scene_edits import _rewrite, broken_copy, items_of, write_items
from tests.ingest.warp_checks import cube_pixels, reference_warp

CHUNKS = ChunkLayout(time=4, space=64, shard_space=256)  # a 3 km scene spans a few shards of each tile
NODATA = -32768.0
RTC = "sentinel-1-rtc"


def _rtc_item(folder: Path, item_id: str, *, x0: float, y0: float, shape: tuple[int, int] = (200, 300),
              data_east_of: float | None = None, tile: str | None = None, time: str = "2024-05-02T05:50:00Z",
              rows: tuple[int, int] | None = None, footprint: str | None = None, gain_db: float = 0.0,
              slope: float = 0.0) -> Path:
    """An ItemCollection of one item as Planetary Computer writes sentinel-1-rtc: VV and VH in linear power (no
    unit), nodata -32768, 10 m pixels in EPSG:32631 from its own origin ``(x0, y0)``, no MGRS tile (unless
    ``tile``), its geometry the raster's footprint. ``data_east_of``: nodata west of that easting (a collar) at the
    footprint's top, and west of an edge leaning ``slope`` m east per m south below it (a GRD's slanted edge).
    A slice of a pass: ``rows`` of the ``shape`` raster of ``footprint`` (its values, drawn from that name, the same
    for every slice of it), ``gain_db`` brighter."""
    folder = folder / item_id
    folder.mkdir(parents=True)
    rng = np.random.default_rng(zlib.crc32((footprint or item_id).encode()))
    r0, r1 = rows or (0, shape[0])
    transform = Affine(10, 0, x0, 0, -10, y0 - 10 * r0)
    size = (r1 - r0, shape[1])
    assets = {}
    for band in ("vv", "vh"):
        db = (-15 - 7 * (band == "vh") + 3 * rng.standard_normal(shape))[r0:r1] + gain_db
        power = (10 ** (db / 10)).astype(np.float32)
        if data_east_of is not None:
            east = (transform * (np.arange(shape[1]) + 0.5, 0))[0]
            south = y0 - (transform * (0, np.arange(size[0]) + 0.5))[1]  # of the footprint's top
            power[east[None, :] <= data_east_of + slope * south[:, None]] = NODATA
        with rasterio.open(folder / f"{band}.tif", "w", driver="GTiff", width=size[1], height=size[0], count=1,
                           dtype="float32", crs="EPSG:32631", transform=transform, nodata=NODATA) as dst:
            dst.write(power, 1)
        assets[band] = {"href": f"{item_id}/{band}.tif", "type": "image/tiff; application=geotiff; "
                        "profile=cloud-optimized", "roles": ["data"],
                        "raster:bands": [{"nodata": NODATA, "data_type": "float32", "spatial_resolution": 10}]}
    outline = GeoBox(size, transform, "EPSG:32631").extent.to_crs("EPSG:4326", resolution=100.0)
    props = {"datetime": time, "platform": "SENTINEL-1A", "sat:relative_orbit": 37,
             "sat:orbit_state": "descending"}
    if tile:
        props["grid:code"] = f"MGRS-{tile}"
    item = {"type": "Feature", "stac_version": "1.0.0", "id": item_id, "collection": RTC,
            "geometry": outline.json, "bbox": list(outline.boundingbox), "properties": props, "assets": assets,
            "links": []}
    path = folder.parent / f"{item_id}.json"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [item]}))
    return path


def _on_tile(tile: TileGrid, *paths: Path, pad: int) -> GeoBox:
    """``tile``'s 10 m pixels over the files' footprints and ``pad`` pixels around, clipped to the tile."""
    boxes = []
    for path in paths:
        with rasterio.open(path) as src:
            boxes.append(GeoBox(src.shape, src.transform, src.crs).extent.to_crs(tile.crs, resolution=10.0).boundingbox)
    minx, miny = min(b.left for b in boxes), min(b.bottom for b in boxes)
    maxx, maxy = max(b.right for b in boxes), max(b.top for b in boxes)
    c0, c1 = math.floor((minx - tile.ulx) / 10) - pad, math.ceil((maxx - tile.ulx) / 10) + pad
    r0, r1 = math.floor((tile.uly - maxy) / 10) - pad, math.ceil((tile.uly - miny) / 10) + pad
    n = tile.geobox(10).shape[0]
    return tile.geobox(10)[max(r0, 0):min(r1, n), max(c0, 0):min(c1, n)]


def _assert_tile_matches(cube: Path, item: Path, scene_id: str, tile: str, *, same_crs: bool) -> None:
    """Both bands of ``scene_id`` in the cube equal one rasterio reproject of the whole file onto ``tile``'s grid:
    to float32 rounding in the file's CRS; across CRSs to thousandths of a dB (hundredths on this white noise),
    but for a few pixels at its edge (GDAL's approximate coordinate transform, see ingest.warp)."""
    grid = TileGrid.from_id(tile)
    target = _on_tile(grid, item.parent / item.stem / "vv.tif", pad=3)
    for band in ("vv", "vh"):
        path = item.parent / item.stem / f"{band}.tif"
        expected = reference_warp(path, target, Resampling.bilinear, db=False)
        got = cube_pixels(cube, "s1", scene_id, band.upper(), target, tile=tile)
        inside = ~np.isnan(expected)
        assert inside.sum() > 20 * 20, (tile, inside.sum())
        if same_crs:
            np.testing.assert_array_equal(np.isnan(got), ~inside)
            np.testing.assert_allclose(got[inside], expected[inside], rtol=0, atol=1e-4)
        else:
            core = inside & ~np.isnan(got)
            assert (inside != ~np.isnan(got)).sum() < 0.01 * inside.sum()
            np.testing.assert_allclose(got[core], expected[core], rtol=0, atol=0.05)
            assert np.median(np.abs(got[core] - expected[core])) < 0.002


def test_an_item_of_no_tile_goes_into_every_tile_it_overlaps_once(tmp_path):
    """Across the 31UEU/31UFU overlap (one UTM zone): both tiles, each with the file as reprojected onto it; a
    second ingest of the item adds nothing."""
    item = _rtc_item(tmp_path, "RTC-EDGE", x0=603003, y0=5842007)
    cube = tmp_path / "cube"
    result = ingest(item, cube, collection="s1", chunks=CHUNKS, progress=False, warp=True, source_collection=RTC)
    assert result.added == ("RTC-EDGE_T31UEU", "RTC-EDGE_T31UFU") and not result.rejected
    assert result.tiles == ("31UEU", "31UFU") and result.warped == result.converted == result.added
    for tile in ("31UEU", "31UFU"):
        _assert_tile_matches(cube, item, f"RTC-EDGE_T{tile}", tile, same_crs=True)
    version = read_version(open_store(cube), "s1")
    records = {sid: version.scenes[sid] for sid in result.added}
    assert {(r.tile, r.item) for r in records.values()} == {("31UEU", "RTC-EDGE"), ("31UFU", "RTC-EDGE")}
    assert records["RTC-EDGE_T31UFU"].sources["VV"].endswith("RTC-EDGE/vv.tif")
    assert records["RTC-EDGE_T31UEU"].windows[10] != records["RTC-EDGE_T31UFU"].windows[10]

    again = ingest(item, cube, collection="s1", chunks=CHUNKS, progress=False, warp=True, source_collection=RTC)
    assert again.added == () and set(again.skipped) == set(result.added) and again.version is None
    assert read_version(open_store(cube), "s1").version == version.version


def test_a_split_item_behind_http_is_downloaded_once_and_each_tile_written_from_the_spooled_copy(tmp_path):
    """The pieces of a split item share one read of each file (check_files), kept in the spool: every file is
    sent once, whole, and both tiles hold the file as reprojected onto them, as from the local file."""
    item = _rtc_item(tmp_path, "RTC-EDGE", x0=603003, y0=5842007)
    feature = json.loads(item.read_text())["features"][0]
    with http_server(COUNTING_SERVER, str(tmp_path)) as base:
        served_items = write_items(item, [served(feature, base)], "served.json")
        result = ingest(served_items, tmp_path / "cube", collection="s1", chunks=CHUNKS, progress=False, warp=True,
                        source_collection=RTC)
        sent = bytes_sent(base)
    assert result.added == ("RTC-EDGE_T31UEU", "RTC-EDGE_T31UFU") and not result.rejected
    assert sent == {f"/RTC-EDGE/{b}.tif": (tmp_path / "RTC-EDGE" / f"{b}.tif").stat().st_size for b in ("vv", "vh")}
    for tile in ("31UEU", "31UFU"):
        _assert_tile_matches(tmp_path / "cube", item, f"RTC-EDGE_T{tile}", tile, same_crs=True)
    assert read_version(open_store(tmp_path / "cube"), "s1").scenes["RTC-EDGE_T31UFU"].sources["VV"] == \
        f"{base}/RTC-EDGE/vv.tif"


def _count_reads(monkeypatch) -> Counter:
    """Whole-file reads of the checks (``ingest.validate._read_file``), per href, from now on."""
    reads: Counter = Counter()
    read = validate._read_file

    def counting(scene, band, href):
        reads[href] += 1
        return read(scene, band, href)

    monkeypatch.setattr(validate, "_read_file", counting)
    return reads


def test_each_file_of_a_split_item_is_read_and_hashed_once_for_all_its_tiles(tmp_path, monkeypatch):
    """Three tiles, two bands: two whole-file reads, not six; source_bytes is the files' size on disk, once; every
    piece records the file's own checksum."""
    item = _rtc_item(tmp_path, "RTC-ONCE", x0=708003, y0=5842007)
    files = {band: item.parent / item.stem / f"{band.lower()}.tif" for band in ("VV", "VH")}
    reads = _count_reads(monkeypatch)
    cube = tmp_path / "cube"
    result = ingest(item, cube, collection="s1", chunks=CHUNKS, progress=False, warp=True, source_collection=RTC)
    assert result.tiles == ("31UFU", "31UGU", "32ULD") and result.ok and len(result.warped) == 3
    assert sorted(reads.values()) == [1, 1] and {Path(h).name for h in reads} == {"vv.tif", "vh.tif"}
    assert result.source_bytes == sum(f.stat().st_size for f in files.values())
    records = read_version(open_store(cube), "s1").scenes
    for sid in result.added:
        assert records[sid].checksums == {
            band: "sha256:" + hashlib.sha256(f.read_bytes()).hexdigest() for band, f in files.items()}
    for tile in result.tiles:
        _assert_tile_matches(cube, item, f"RTC-ONCE_T{tile}", tile, same_crs=tile.startswith("31"))


def test_a_split_item_with_a_broken_file_rejects_every_piece_by_its_own_id(tmp_path, monkeypatch):
    item = _rtc_item(tmp_path, "RTC-BROKEN", x0=603003, y0=5842007)
    vh = item.parent / item.stem / "vh.tif"
    vh.write_bytes(vh.read_bytes()[:2000])  # truncated
    reads = _count_reads(monkeypatch)
    result = ingest(item, tmp_path / "cube", collection="s1", chunks=CHUNKS, progress=False, warp=True,
                    source_collection=RTC)
    assert not result.added and result.source_bytes == 0
    assert [(r.scene_id, r.kind) for r in result.rejected] == [
        ("RTC-BROKEN_T31UEU", "SceneReadError"), ("RTC-BROKEN_T31UFU", "SceneReadError")]
    for r in result.rejected:
        assert r.reason.startswith(f"scene {r.scene_id}: band VH is truncated or corrupt"), r.reason
    assert sorted(reads.values()) == [1, 1]


def test_an_item_across_a_utm_zone_boundary_goes_into_the_tiles_of_both_zones(tmp_path):
    item = _rtc_item(tmp_path, "RTC-ZONES", x0=708003, y0=5842007)  # reaches east of 6 E: zone 32's 32ULD
    cube = tmp_path / "cube"
    result = ingest(item, cube, collection="s1", chunks=CHUNKS, progress=False, warp=True, source_collection=RTC)
    assert result.tiles == ("31UFU", "31UGU", "32ULD") and not result.rejected
    for tile in result.tiles:
        _assert_tile_matches(cube, item, f"RTC-ZONES_T{tile}", tile, same_crs=tile.startswith("31"))
    version = read_version(open_store(cube), "s1")
    warped = version.scenes["RTC-ZONES_T32ULD"].warped["VV"]
    assert warped["crs"] == "EPSG:32631" and warped["resampling"] == "bilinear"
    # each piece's polygon: its own, within its window, in its tile's CRS (none where its data fill the window)
    polygons = {f"RTC-ZONES_T{tile}": version.scenes[f"RTC-ZONES_T{tile}"].footprint for tile in result.tiles}
    assert any(polygons.values())
    for (sid, polygon), tile in zip(polygons.items(), result.tiles, strict=True):
        assert polygon is None or shape(polygon).covered_by(shapely.box(*scene_extent(version, tile, sid)))


def test_a_tile_overlapped_by_the_nodata_collar_only_is_left_out_and_the_other_tile_goes_in(tmp_path, monkeypatch):
    """The raster reaches 1.3 km into 31UEU (to its east edge at 609780), but its data start at 610000. The
    item's files are read once for both tiles all the same. That piece is no fault of the item: left out, not
    rejected, so a routine run offering the item again succeeds."""
    item = _rtc_item(tmp_path, "RTC-COLLAR", x0=608503, y0=5842007, data_east_of=610000)
    cube = tmp_path / "cube"
    reads = _count_reads(monkeypatch)
    result = ingest(item, cube, collection="s1", chunks=CHUNKS, progress=False, warp=True, source_collection=RTC)
    assert result.added == ("RTC-COLLAR_T31UFU",) and result.tiles == ("31UFU",)
    assert sorted(reads.values()) == [1, 1]
    assert result.source_bytes == sum((item.parent / item.stem / f).stat().st_size for f in ("vv.tif", "vh.tif"))
    assert result.empty == ("RTC-COLLAR_T31UEU",) and result.rejected == () and result.ok
    assert "left out 1 tile piece(s) of split items with no data on their tile" in result.summary()
    _assert_tile_matches(cube, item, "RTC-COLLAR_T31UFU", "31UFU", same_crs=True)
    version = read_version(open_store(cube), "s1")
    assert set(version.tiles) == {"31UFU"} and version.rejected == ()
    assert not (cube / "s1" / "31UEU.zarr").exists() and not any("31UEU" in p.name for p in cube.rglob("*"))
    again = ingest(item, cube, collection="s1", chunks=CHUNKS, progress=False, warp=True, source_collection=RTC)
    assert again.ok and again.version is None and again.skipped == ("RTC-COLLAR_T31UFU",)
    assert again.empty == ("RTC-COLLAR_T31UEU",)


def test_a_warped_scenes_window_is_where_its_data_reach_not_its_nodata_collar(tmp_path):
    """The raster covers x 613003-616003, its data only east of 614500 (the west half a GRD's collar). The window
    written and recorded was the raster's, collar and all, so the date's extent (the catalog's geometry, routing)
    claimed the collar and a parcel wholly in it was "ok" with no pixel on its only date. Now the window starts
    within a block of source pixels and the kernel's reach west of the data, the pixels are those of one reproject of
    the file as before, and that parcel is outside."""
    item = _rtc_item(tmp_path, "RTC-WEST-COLLAR", x0=613003, y0=5842007, data_east_of=614500)
    cube = tmp_path / "cube"
    result = ingest(item, cube, collection="s1", chunks=CHUNKS, progress=False, warp=True, source_collection=RTC)
    assert result.added == ("RTC-WEST-COLLAR_T31UFU",) and result.ok
    _assert_tile_matches(cube, item, "RTC-WEST-COLLAR_T31UFU", "31UFU", same_crs=True)  # no valid pixel lost
    version = read_version(open_store(cube), "s1")
    west, south, east, north = scene_extent(version, "31UFU", "RTC-WEST-COLLAR_T31UFU")
    assert 614500 - (32 + 3) * 10 - 10 <= west < 614500 and (south, east, north) == (5840000, 616010, 5842010)
    parcels = gpd.GeoDataFrame({"parcel_id": ["IN-COLLAR", "ON-THE-EDGE"]}, crs="EPSG:32631",
                               geometry=[shapely.box(613300, 5840500, 613900, 5841500),
                                         shapely.box(614200, 5840500, 614800, 5841500)])
    with pytest.warns(UserWarning, match="1 of 2 parcels have no statistics"):
        frame = parcel_timeseries(cube, parcels, collection="s1", bands=["VV"])
    status = {s["parcel_id"]: s for s in frame.attrs["parcel_status"]}
    assert status["IN-COLLAR"]["status"] == "outside" and status["ON-THE-EDGE"]["status"] == "ok"
    assert frame.loc[frame.parcel_id == "ON-THE-EDGE", "count"].item() > 0


SLANT = "RTC-SLANT_T31UFU"
# a GRD piece of x 613003-617003, y 5839007-5842007: data east of an edge from 613500 at its top leaning 1 m east
# per m south (to 616500 at its bottom), so the window's box holds a triangle of nodata collar in its south-west
IN_THE_COLLAR = shapely.box(613600, 5839100, 614100, 5839600)
ACROSS_THE_EDGE = shapely.box(613900, 5840300, 615400, 5840700)
ACROSS_THE_SLANT = {"parcel_id": ["IN-THE-COLLAR", "ACROSS-THE-EDGE"], "geometry": [IN_THE_COLLAR, ACROSS_THE_EDGE]}
BESIDE_THE_SLANT = shapely.box(614500, 5840560, 614600, 5840660)  # a hectare some 170 m west of the slanted edge


@pytest.fixture(scope="module")
def slanted(tmp_path_factory) -> tuple[Path, Path]:
    """The item and the cube it went into (read it; copy it to change it)."""
    folder = tmp_path_factory.mktemp("slanted")
    item = _rtc_item(folder, "RTC-SLANT", x0=613003, y0=5842007, shape=(300, 400), data_east_of=613500, slope=1.0)
    cube = folder / "cube"
    result = ingest(item, cube, collection="s1", chunks=CHUNKS, progress=False, warp=True, source_collection=RTC)
    assert result.added == (SLANT,) and result.ok
    return item, cube


def _valid_hull(item: Path) -> shapely.Polygon:
    """The convex hull of the centres of the file's valid pixels, from its valid mask alone."""
    with rasterio.open(item.parent / item.stem / "vv.tif") as src:
        rows, cols = np.nonzero(src.read(1) != NODATA)
        x, y = src.transform * (cols + 0.5, rows + 0.5)
    return shapely.multipoints(np.column_stack([x, y])).convex_hull


def _data_reach(item: Path, record) -> shapely.Polygon:
    """Where the file's valid pixels could make a warped pixel valid: the hull of their centres (_valid_hull), grown
    by half a pixel and the kernel's reach, diagonally (the most the scene's polygon may claim beyond them: the
    corner of a pixel's box grown by the reach), and a metre."""
    reach = math.hypot(kernel_reach(record.warped["VV"]) + 0.5, kernel_reach(record.warped["VV"]) + 0.5)
    return _valid_hull(item).buffer(reach * 10 + 1)


def test_a_warped_scenes_polygon_holds_every_pixel_it_wrote_and_leaves_the_collar_inside_its_window_out(slanted):
    """The window (the box of where the data reach) holds a triangle of collar beside a GRD's slanted edge; the
    polygon recorded with it holds every valid pixel of the date in the cube, and none of that collar."""
    item, cube = slanted
    _assert_tile_matches(cube, item, SLANT, "31UFU", same_crs=True)  # no valid pixel lost
    version = read_version(open_store(cube), "s1")
    record = version.scenes[SLANT]
    polygon, window = shape(record.footprint), shapely.box(*scene_extent(version, "31UFU", SLANT))
    assert record.footprint["type"] == "Polygon" and len(record.footprint["coordinates"][0]) < 25
    assert polygon.covered_by(window) and data_footprint(version, "31UFU").equals(polygon)  # the date's area
    target = _on_tile(TileGrid.from_id("31UFU"), item.parent / item.stem / "vv.tif", pad=3)
    x, y = np.meshgrid(target.coords["x"].values, target.coords["y"].values)  # the pixel centres
    for band in ("VV", "VH"):
        valid = ~np.isnan(cube_pixels(cube, "s1", SLANT, band, target))
        assert valid.sum() > 0.4 * 300 * 400 and shapely.contains_xy(polygon, x[valid], y[valid]).all()
    collar = window.difference(_data_reach(item, record))  # the window's nodata, from the file's valid mask alone
    assert collar.area > 0.5e6  # m²: a triangle of the window in the south-west
    assert polygon.intersection(collar).area < 1.0 and window.area - polygon.area > collar.area
    # the tile's STAC geometry (where the tile holds data) follows it, and the catalog validates
    item_geometry = shape(json.loads((cube / keys.item_key("s1", "31UFU")).read_text())["geometry"])
    on_grid = Geometry(item_geometry, "EPSG:4326").to_crs("EPSG:32631").geom  # grown by what lon/lat edges cut off
    assert polygon.difference(on_grid).area < 1e-3 and on_grid.hausdorff_distance(polygon) < 1.5  # m², m
    assert validate_catalog(cube)


def test_a_parcel_in_the_collar_inside_a_warped_scenes_window_is_outside_and_one_across_its_edge_says_its_share(
        slanted, tmp_path):
    """Inside the window, beyond the polygon: the parcel in the collar was ``ok`` with a count of 0 on the only
    date, in a time series and an extraction alike, and the parcel across the polygon's edge was ``ok`` with no
    word of the part of it that holds no data."""
    item, cube = slanted
    version = read_version(open_store(cube), "s1")
    window = shapely.box(*scene_extent(version, "31UFU", SLANT))
    assert window.contains(IN_THE_COLLAR) and window.contains(ACROSS_THE_EDGE)
    assert not IN_THE_COLLAR.intersects(_data_reach(item, version.scenes[SLANT]))  # no valid pixel can reach it
    parcels = gpd.GeoDataFrame(ACROSS_THE_SLANT, crs="EPSG:32631")
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        frame = parcel_timeseries(cube, parcels, collection="s1", bands=["VV"])
    extract(parcels, cube, tmp_path / "out", collection="s1", bands=["VV"], layers=tmp_path / "layers",
            progress=False)
    status = {s["parcel_id"]: s for s in frame.attrs["parcel_status"]}
    extracted = read_status(tmp_path / "out").set_index("parcel_id")
    assert (status["IN-THE-COLLAR"]["status"], extracted.loc["IN-THE-COLLAR", "status"]) == ("outside", "outside")
    assert "outside the data of every tile" in status["IN-THE-COLLAR"]["reason"]
    assert "outside the data of every tile" in extracted.loc["IN-THE-COLLAR", "reason"]
    assert any("1 of 2 parcels have no statistics" in str(w.message) for w in said)
    assert set(frame.parcel_id) == {"ACROSS-THE-EDGE"} and frame["count"].item() > 0

    share = ACROSS_THE_EDGE.difference(shape(version.scenes[SLANT].footprint)).area / ACROSS_THE_EDGE.area
    assert 0.1 < share < 0.9  # the parcel's part beyond the polygon: its statistics cover the rest only
    assert status["ACROSS-THE-EDGE"]["status"] == "ok" and status["ACROSS-THE-EDGE"]["reason"] == partly_outside(share)
    assert extracted.loc["ACROSS-THE-EDGE", "status"] == "ok"
    assert extracted.loc["ACROSS-THE-EDGE", "reason"] == partly_outside(share)


def test_a_parcel_beside_a_warped_scenes_slanted_edge_beyond_the_kernels_reach_is_outside(slanted, tmp_path):
    """A hectare beside the slanted edge, farther from the valid pixels than the kernel's reach but within a block of
    32 source pixels of them: the polygon (the hull of the blocks holding a valid pixel, its side out by up to a
    block's diagonal along a slanted edge) held it, so it was ``ok`` with a count of 0. The polygon is the valid
    pixels' hull grown by the reach now: it is ``outside``, in a time series and an extraction alike."""
    item, cube = slanted
    version = read_version(open_store(cube), "s1")
    record = version.scenes[SLANT]
    assert shapely.box(*scene_extent(version, "31UFU", SLANT)).contains(BESIDE_THE_SLANT)
    reach = kernel_reach(record.warped["VV"]) * 10  # m
    assert 2 * reach < BESIDE_THE_SLANT.distance(_valid_hull(item)) < 32 * 10 / math.sqrt(2)  # a block's half-diagonal
    parcels = gpd.GeoDataFrame({"parcel_id": ["BESIDE-THE-SLANT", "IN-THE-DATA"],
                                "geometry": [BESIDE_THE_SLANT, shapely.box(616000, 5841500, 616300, 5841800)]},
                               crs="EPSG:32631")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # that a parcel has no statistics
        frame = parcel_timeseries(cube, parcels, collection="s1", bands=["VV"])
    extract(parcels, cube, tmp_path / "out", collection="s1", bands=["VV"], layers=tmp_path / "layers",
            progress=False)
    status = {s["parcel_id"]: s for s in frame.attrs["parcel_status"]}["BESIDE-THE-SLANT"]
    extracted = read_status(tmp_path / "out").set_index("parcel_id").loc["BESIDE-THE-SLANT"]
    assert (status["status"], extracted["status"]) == ("outside", "outside")
    assert "outside the data of every tile" in status["reason"] and "outside the data" in extracted["reason"]
    assert set(frame.parcel_id) == {"IN-THE-DATA"} and frame["count"].item() > 0
    assert not shape(record.footprint).intersects(BESIDE_THE_SLANT)


def test_a_warped_scene_recorded_without_its_polygon_reads_as_before(slanted, tmp_path):
    """A cube ingested before scenes recorded their polygon: the window's box is where the date holds data, as it
    was, so the parcel in its collar is ``ok`` with no pixel, and nothing else changes."""
    _, cube = slanted
    old = Path(shutil.copytree(cube, tmp_path / "cube"))
    key = old / layout.ledger_key("s1", 1)
    record = read_version(open_store(old), "s1").to_dict()  # its record as a cardcube of then wrote it: format 1
    del record["scenes"][SLANT]["footprint"]
    key.write_text(json.dumps(record))
    version = read_version(open_store(old), "s1")
    assert version.scenes[SLANT].footprint is None and "footprint" not in version.scenes[SLANT].to_dict()
    assert version.to_dict()["scenes"] == record["scenes"]
    assert data_footprint(version, "31UFU").equals(shapely.box(*scene_extent(version, "31UFU", SLANT)))
    frame = parcel_timeseries(old, gpd.GeoDataFrame(ACROSS_THE_SLANT, crs="EPSG:32631"), collection="s1",
                              bands=["VV"])
    status = {s["parcel_id"]: s for s in frame.attrs["parcel_status"]}
    assert status["IN-THE-COLLAR"]["status"] == status["ACROSS-THE-EDGE"]["status"] == "ok"
    assert status["IN-THE-COLLAR"]["reason"] == status["ACROSS-THE-EDGE"]["reason"] == ""
    assert frame.loc[frame.parcel_id == "IN-THE-COLLAR", "count"].item() == 0


def test_a_scene_naming_its_tile_with_nodata_only_there_is_rejected_before_anything_is_written(tmp_path):
    item = _rtc_item(tmp_path, "RTC-ON-31UEU", x0=608503, y0=5842007, data_east_of=610000, tile="31UEU")
    cube = tmp_path / "cube"
    result = ingest(item, cube, collection="s1", chunks=CHUNKS, progress=False, warp=True, source_collection=RTC)
    (rejection,) = result.rejected
    assert rejection.scene_id == "RTC-ON-31UEU" and "no valid pixel on tile 31UEU" in rejection.reason
    assert not result.added and result.version == 1 and not read_version(open_store(cube), "s1").tiles


def test_without_warp_an_item_of_no_tile_is_rejected_naming_the_option(tmp_path):
    item = _rtc_item(tmp_path, "RTC-NO-WARP", x0=603003, y0=5842007)
    result = ingest(item, tmp_path / "cube", collection="s1", chunks=CHUNKS, progress=False, source_collection=RTC)
    (rejection,) = result.rejected
    assert rejection.scene_id == "RTC-NO-WARP" and rejection.kind == "SceneGridError" and not result.added
    assert "no MGRS tile in the scene metadata (grid:code)" in rejection.reason
    assert "split the item over the MGRS tiles its footprint covers" in rejection.reason
    assert "cardcube ingest --warp" in rejection.reason


def test_an_item_rejected_without_warp_and_then_split_with_it_leaves_no_rejection(tmp_path):
    """Its rejection (by the item's id) is settled once its pieces are in; offered again without warp, it is in
    already (skipped), not rejected anew."""
    item = _rtc_item(tmp_path, "RTC-LATER", x0=603003, y0=5842007)
    cube = tmp_path / "cube"
    options = {"collection": "s1", "chunks": CHUNKS, "progress": False, "source_collection": RTC}
    first = ingest(item, cube, **options)
    assert [r.scene_id for r in first.rejected] == ["RTC-LATER"]
    split = ingest(item, cube, warp=True, tiles=["31UFU"], **options)
    assert split.added == ("RTC-LATER_T31UFU",) and split.ok
    assert read_version(open_store(cube), "s1").rejected == ()
    again = ingest(item, cube, **options)
    assert again.skipped == ("RTC-LATER",) and again.ok and again.version is None
    assert read_version(open_store(cube), "s1").rejected == ()


def test_a_split_item_whose_files_lie_off_its_geometry_is_rejected_naming_both_and_the_rest_goes_in(tmp_path):
    """The geometry picks the tiles, the files say where the pixels go: files 30 km east of their item's geometry
    (a wrong geotransform), or labelled with zone 32's CRS, went in where the files say (or were rejected as "does
    not overlap tile" only). Every piece is rejected, before anything is written, naming both boxes and the likely
    cause; a sound item of the same run goes in."""
    good = _rtc_item(tmp_path, "RTC-GOOD", x0=603003, y0=5842007)
    shifted = _rtc_item(tmp_path, "RTC-SHIFTED", x0=706003, y0=5846007, time="2024-05-04T05:50:00Z")
    relabelled = _rtc_item(tmp_path, "RTC-RELABELLED", x0=603003, y0=5842007, time="2024-05-03T05:50:00Z")
    for band in ("vv", "vh"):
        _rewrite(tmp_path / "RTC-SHIFTED" / f"{band}.tif", transform=Affine(10, 0, 736003, 0, -10, 5846007))
        _rewrite(tmp_path / "RTC-RELABELLED" / f"{band}.tif", crs="EPSG:32632")
    features = [json.loads(p.read_text())["features"][0] for p in (good, shifted, relabelled)]
    items = write_items(good, features, "three.json")
    cube = tmp_path / "cube"
    result = ingest(items, cube, collection="s1", chunks=CHUNKS, progress=False, warp=True, source_collection=RTC)
    assert result.added == ("RTC-GOOD_T31UEU", "RTC-GOOD_T31UFU")
    rejected = {r.scene_id: r for r in result.rejected}
    assert {sid.split("_T")[0] for sid in rejected} == {"RTC-SHIFTED", "RTC-RELABELLED"}
    assert {"RTC-SHIFTED_T31UFU", "RTC-SHIFTED_T31UGU", "RTC-RELABELLED_T31UEU", "RTC-RELABELLED_T31UFU"} <= set(
        rejected)
    for r in rejected.values():
        assert r.kind == "SceneGridError" and "do not cover the same ground" in r.reason, r.reason
        assert r.reason.endswith("a wrong geotransform or CRS label in its files (or a geometry of another scene)")
    assert "its files' footprint (736003, 5844007, 739003, 5846007 in EPSG:32631) and its item's geometry (706003, " \
        "5844007, 709003, 5846007)" in rejected["RTC-SHIFTED_T31UGU"].reason
    assert "does not overlap tile 31UFU" in rejected["RTC-SHIFTED_T31UFU"].reason  # the files miss this tile too
    version = read_version(open_store(cube), "s1")
    assert set(version.tiles) == {"31UEU", "31UFU"} and set(version.scenes) == set(result.added)
    assert {r.scene_id for r in version.rejected} == set(rejected)


def test_split_by_tile_names_each_piece_by_item_and_tile():
    footprint = box(5.9, 52.6, 6.1, 52.7, "EPSG:4326")  # across 6 E
    assert [t.tile_id for t in tiles_overlapping(footprint)] == ["31UFU", "31UGU", "32ULD"]
    assert [t.tile_id for t in tiles_overlapping(box(603003, 5840007, 606003, 5842007, "EPSG:32631"))] == [
        "31UEU", "31UFU"]
    scene = SourceScene("ITEM", RTC, "", "2024-05-02T05:50:00Z", "sentinel-1a", 37, "descending", None,
                        {"VV": "vv.tif"}, geometry=footprint.json)
    pieces = split_by_tile(scene)
    assert [(p.scene_id, p.tile, p.item_id) for p in pieces] == [
        ("ITEM_T31UFU", "31UFU", "ITEM"), ("ITEM_T31UGU", "31UGU", "ITEM"), ("ITEM_T32ULD", "32ULD", "ITEM")]
    assert all(p.assets == scene.assets and p.time == scene.time for p in pieces)
    with_tile = SourceScene("S", RTC, "31UFU", scene.time, "sentinel-1a", 37, "descending", None,
                            geometry=footprint.json)
    assert split_by_tile(with_tile) == [with_tile]
    nowhere = SourceScene("SEA", RTC, "", scene.time, "sentinel-1a", 37, "descending", None,
                          geometry=box(0, 88.5, 0.1, 88.6, "EPSG:4326").json)  # beyond the grid's 84 N
    assert split_by_tile(nowhere) == [nowhere]
    unknown = SourceScene("NO-GEOMETRY", RTC, "", scene.time, "sentinel-1a", 37, "descending", None)
    assert split_by_tile(unknown) == [unknown]


def test_tiles_keeps_an_item_to_the_tiles_asked_for(tmp_path, capsys):
    item = _rtc_item(tmp_path, "RTC-TILES", x0=603003, y0=5842007)
    cube = tmp_path / "cube"
    result = ingest(item, cube, collection="s1", chunks=CHUNKS, progress=False, warp=True, source_collection=RTC,
                    tiles=["T31UFU"])
    assert result.added == ("RTC-TILES_T31UFU",) and result.outside == ("RTC-TILES_T31UEU",) and result.ok
    assert set(read_version(open_store(cube), "s1").tiles) == {"31UFU"}
    args = ["ingest", str(item), "--cube", str(cube), "--collection", "s1", "--quiet", "--warp", "--source-collection",
            RTC, "--chunks", "time=4,space=64,shard_space=256", "--json"]
    assert main([*args, "--tiles", "31UEU,31UFU"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["added"] == ["RTC-TILES_T31UEU"] and out["skipped"] == ["RTC-TILES_T31UFU"] and not out["outside"]
    one = ingest(item, tmp_path / "one", collection="s1", chunks=CHUNKS, progress=False, warp=True,
                 source_collection=RTC, tiles="31ufu")  # a string is one id (or several, with commas)
    assert one.added == ("RTC-TILES_T31UFU",) and one.outside == ("RTC-TILES_T31UEU",)
    assert main([*args, "--tiles", "31XYZ"]) == 2 and "unknown MGRS tile '31XYZ'" in capsys.readouterr().err


def test_a_sentinel2_item_of_no_tile_is_rejected_not_split(tiny_region, tmp_path):
    """An L2A product is made per tile: one naming none lacks its metadata. Split, its strips on the neighbouring
    tiles would take the (tile, time) slot of the neighbours' own products of that datatake."""
    feature = items_of(tiny_region.items, "sentinel-2-l2a")[0]
    item = broken_copy(tiny_region.items, feature, "S2-NO-TILE")
    item["properties"] = {k: v for k, v in item["properties"].items()
                          if not k.startswith(("grid:", "mgrs:", "s2:mgrs"))}
    assert item["geometry"]  # a footprint it could have been split by
    path = write_items(tiny_region.items, [item], "s2-no-tile.json")
    result = ingest(path, tmp_path / "cube", collection="s2", chunks=CHUNKS, progress=False, warp=True)
    (rejection,) = result.rejected
    assert rejection.scene_id == "S2-NO-TILE" and not result.added
    assert "s2 cube's products are made per tile, so an item must name its tile" in rejection.reason
