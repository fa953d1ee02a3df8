"""Scenes off the tile grid: rejected as before without ``warp``, resampled onto the grid with it -- checked
against rasterio.warp.reproject of the same files, done here on its own over the whole scene."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from odc.geo.crs import CRS
from odc.geo.geobox import GeoBox
from rasterio.enums import Resampling
from rasterio.warp import calculate_default_transform, reproject
from scipy.spatial import cKDTree

from cardcube.cli import main
from cardcube.errors import SceneGridError
from cardcube.grid import TileGrid
from cardcube.spec import S1_BACKSCATTER, S2_L2A, ChunkLayout
from cardcube.storage import open_store
from cube.ledger import read_version
from ingest.job import ingest
from ingest.values import ValueMap
from ingest.warp import (
    data_polygon,
    data_windows,
    kernel_reach,
    read_warped,
    resampling_for,
    tile_windows,
    valid_extents,
    valid_reach,
    warp_record,
)
from tests.ingest.scene_edits import _rewrite, asset_path, broken_copy, items_of, write_items
from tests.ingest.warp_checks import cube_pixels as _cube
from tests.ingest.warp_checks import reference_warp as _reference

CHUNKS = ChunkLayout(time=4, space=64, shard_space=256)  # the 2 km scenes span 2 x 2 shards
TILE = TileGrid.from_id("31UFU")


def _moved(dx: float, dy: float):
    """An edit moving every band by ``dx`` m east and ``dy`` m north (same CRS, same pixel size)."""
    def edit(band: str, path: Path) -> None:
        with rasterio.open(path) as src:
            t = src.transform
        _rewrite(path, transform=Affine(t.a, t.b, t.c + dx, t.d, t.e, t.f + dy))
    return edit


def _to_utm32_power(band: str, path: Path) -> None:
    """Planetary Computer's sentinel-1-rtc as delivered: linear power, nodata -32768, on a UTM grid of its own --
    here the neighbouring zone 32, at 10 m with its own origin."""
    with rasterio.open(path) as src:
        db, crs, transform, (h, w), bounds = src.read(1), src.crs, src.transform, src.shape, src.bounds
    power = np.where(np.isnan(db), -32768, 10 ** (db.astype(np.float64) / 10)).astype(np.float32)
    dst_t, dst_w, dst_h = calculate_default_transform(crs, "EPSG:32632", w, h, *bounds, resolution=10)
    dst_t = Affine(10, 0, math.floor(dst_t.c) + 3, 0, -10, math.floor(dst_t.f) + 7)  # an origin of its own
    out = np.full((dst_h, dst_w), -32768, np.float32)
    reproject(power, out, src_transform=transform, src_crs=crs, src_nodata=-32768, dst_transform=dst_t,
              dst_crs="EPSG:32632", dst_nodata=-32768, resampling=Resampling.nearest)
    with rasterio.open(path, "w", driver="GTiff", width=dst_w, height=dst_h, count=1, dtype="float32",
                       crs="EPSG:32632", transform=dst_t, nodata=-32768) as dst:
        dst.write(out, 1)


@pytest.fixture(scope="module")
def off_grid(tiny_region):
    """Off-grid copies of the tiny region's scenes: S1 and S2 moved by half a 10 m pixel, a Planetary-Computer-like
    linear S1 scene in UTM zone 32, and an S1 scene moved 200 km away from its tile."""
    items = tiny_region.items
    s1, s2 = items_of(items, "sentinel-1-card-bs"), items_of(items, "sentinel-2-l2a")
    half = _moved(5.0, -5.0)
    scenes = {
        "s1": broken_copy(items, s1[0], "S1-HALF-PIXEL", half, props={"datetime": "2024-01-02T05:00:00Z"}),
        "s2": broken_copy(items, s2[0], "S2-HALF-PIXEL", half, props={"datetime": "2024-01-02T10:00:00Z"}),
        "far": broken_copy(items, s1[1], "S1-FAR-AWAY", _moved(200_000.0, 0.0),
                           props={"datetime": "2024-01-03T05:00:00Z"}),
    }
    rtc = broken_copy(items, s1[2], "S1-RTC-UTM32", _to_utm32_power, props={"datetime": "2024-01-04T05:00:00Z"})
    rtc["collection"] = "sentinel-1-rtc"
    raster = [{"nodata": -32768, "data_type": "float32", "spatial_resolution": 10}]  # no unit, as PC writes it
    rtc["assets"] = {key.lower(): {"href": a["href"], "type": a["type"], "raster:bands": raster}
                     for key, a in rtc["assets"].items()}
    scenes["rtc"] = rtc
    paths = {name: write_items(items, [feature], f"off-grid-{name}.json") for name, feature in scenes.items()}
    return items, scenes, paths


def _target(bounds: rasterio.coords.BoundingBox, res: int, *, pad: int) -> GeoBox:
    """The tile grid's pixels at ``res`` covering ``bounds`` (in the tile's CRS) and ``pad`` pixels around."""
    c0, c1 = math.floor((bounds.left - TILE.ulx) / res) - pad, math.ceil((bounds.right - TILE.ulx) / res) + pad
    r0, r1 = math.floor((TILE.uly - bounds.top) / res) - pad, math.ceil((TILE.uly - bounds.bottom) / res) + pad
    return TILE.geobox(res)[r0:r1, c0:c1]


def _bounds(path: Path) -> rasterio.coords.BoundingBox:
    with rasterio.open(path) as src:
        return src.bounds


def test_without_warp_an_off_grid_scene_is_rejected_as_before_and_told_of_the_option(off_grid, tmp_path):
    _, scenes, paths = off_grid
    for name, says in [("s1", "off the 10 m pixel grid of tile 31UFU"),
                       ("rtc", "CRS EPSG:32632 is not the CRS of tile 31UFU")]:
        (rejection,) = ingest(paths[name], tmp_path / name, collection="s1", chunks=CHUNKS, progress=False,
                              source_collection=scenes[name]["collection"]).rejected
        assert rejection.kind == "SceneGridError" and says in rejection.reason, rejection.reason
        assert "ingest(..., warp=True), cardcube ingest --warp" in rejection.reason


def test_an_s1_scene_half_a_pixel_off_is_resampled_bilinear_in_linear_power(off_grid, tmp_path):
    items, scenes, paths = off_grid
    result = ingest(paths["s1"], tmp_path / "cube", collection="s1", chunks=CHUNKS, progress=False, warp=True)
    assert result.added == ("S1-HALF-PIXEL",) and result.warped == ("S1-HALF-PIXEL",) and not result.converted
    for band in ("VV", "VH"):
        path = asset_path(items, scenes["s1"], band)
        target = _target(_bounds(path), 10, pad=3)
        expected = _reference(path, target, Resampling.bilinear, db=True)
        got = _cube(tmp_path / "cube", "s1", "S1-HALF-PIXEL", band, target)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
        assert np.isnan(got).sum() > 0 and (~np.isnan(got)).sum() >= 199 * 199  # the pad is nodata, the rest not
        np.testing.assert_allclose(got[~np.isnan(got)], expected[~np.isnan(expected)], rtol=0, atol=1e-4)
    record = read_version(open_store(tmp_path / "cube"), "s1").scenes["S1-HALF-PIXEL"]
    assert record.warped["VV"]["resampling"] == "bilinear" and record.warped["VV"]["crs"] == "EPSG:32631"
    assert record.warped["VV"]["transform"][2] == 680005.0 and record.windows[10] == (5504, 8000, 201, 201)


def test_an_s2_scene_half_a_pixel_off_keeps_its_classes_and_resamples_reflectance(off_grid, tmp_path):
    items, scenes, paths = off_grid
    result = ingest(paths["s2"], tmp_path / "cube", chunks=CHUNKS, progress=False, warp=True)
    assert result.added == ("S2-HALF-PIXEL",) and result.warped == ("S2-HALF-PIXEL",)
    for band, res, how in [("SCL", 20, Resampling.nearest), ("B04", 10, Resampling.bilinear),
                           ("B11", 20, Resampling.bilinear)]:
        path = asset_path(items, scenes["s2"], band)
        target = _target(_bounds(path), res, pad=2)
        expected = _reference(path, target, how, db=None, nodata=0)
        got = _cube(tmp_path / "cube", "s2", "S2-HALF-PIXEL", band, target)
        assert got.dtype == expected.dtype and (got == 0).sum() > 0
        np.testing.assert_array_equal(got, expected, err_msg=band)
        if band == "SCL":
            with rasterio.open(path) as src:
                assert set(np.unique(got)) <= set(np.unique(src.read(1))) | {0}  # no class is made up
    warped = read_version(open_store(tmp_path / "cube"), "s2").scenes["S2-HALF-PIXEL"].warped
    assert warped["SCL"]["resampling"] == "nearest" and warped["B04"]["resampling"] == "bilinear"


def test_a_linear_scene_of_the_neighbouring_utm_zone_goes_in_like_planetary_computers_rtc(off_grid, tmp_path):
    """No option but ``warp``: the collection (Planetary Computer's sentinel-1-rtc) says the values are linear."""
    items, scenes, paths = off_grid
    result = ingest(paths["rtc"], tmp_path / "cube", collection="s1", chunks=CHUNKS, progress=False, warp=True,
                    source_collection="sentinel-1-rtc")
    assert result.added == ("S1-RTC-UTM32",) and result.converted == result.warped == ("S1-RTC-UTM32",)
    for band in ("vv", "vh"):
        path = asset_path(items, scenes["rtc"], band)
        target = _target(_bounds(asset_path(items, items_of(items, "sentinel-1-card-bs")[2], band.upper())), 10,
                         pad=20)
        expected = _reference(path, target, Resampling.bilinear, db=False)  # the file is linear power
        got = _cube(tmp_path / "cube", "s1", "S1-RTC-UTM32", band.upper(), target)
        inside = ~np.isnan(expected)
        assert inside.sum() > 190 * 190 and (~inside).sum() > 0
        # across CRSs GDAL interpolates coordinates (1/8 px tolerance), per shard in ingest, once here: a pixel at
        # the footprint's edge may come out or not, and values differ by thousandths of a dB
        core = inside & ~np.isnan(got)
        assert (inside != ~np.isnan(got)).sum() < 0.005 * inside.sum()
        np.testing.assert_allclose(got[core], expected[core], rtol=0, atol=0.01)  # dB
    record = read_version(open_store(tmp_path / "cube"), "s1").scenes["S1-RTC-UTM32"]
    assert "Planetary Computer" in record.converted["VV"] and record.warped["VH"]["crs"] == "EPSG:32632"


def test_a_scene_that_misses_its_tile_is_rejected_even_with_warp(off_grid, tmp_path):
    _, _, paths = off_grid
    result = ingest(paths["far"], tmp_path / "cube", collection="s1", chunks=CHUNKS, progress=False, warp=True)
    (rejection,) = result.rejected
    assert rejection.kind == "SceneGridError" and "does not overlap tile 31UFU" in rejection.reason
    assert not result.added and result.version == 1  # the rejection is recorded, no data


def test_the_cli_passes_warp(off_grid, tmp_path, capsys):
    _, _, paths = off_grid
    args = ["ingest", str(paths["rtc"]), "--cube", str(tmp_path / "cube"), "--collection", "s1", "--quiet",
            "--source-collection", "sentinel-1-rtc", "--chunks", "time=4,space=64,shard_space=256"]
    assert main(args) == 1 and "cardcube ingest --warp" in capsys.readouterr().out
    assert main([*args, "--warp", "--json"]) == 0
    assert '"warped": ["S1-RTC-UTM32"]' in capsys.readouterr().out


def test_tile_windows_clip_to_the_tile_and_snap_to_the_coarsest_lattice():
    def box(x0: float, y0: float, n: int, res: float = 10.0, crs: str = TILE.crs) -> GeoBox:
        return GeoBox((n, n), Affine(res, 0, x0, 0, -res, y0), crs)
    inside = tile_windows(TILE, S2_L2A, [box(TILE.ulx + 1005, TILE.uly - 2005, 10)], scene_id="x")
    assert inside == {10: (200, 100, 12, 12), 20: (100, 50, 6, 6)}  # 100 m at 5 m off: 11 px, snapped to 20 m
    straddling = tile_windows(TILE, S1_BACKSCATTER, [box(TILE.ulx - 500, TILE.uly + 300, 100)], scene_id="x")
    assert straddling == {10: (0, 0, 70, 50)}  # clipped to the tile
    with pytest.raises(SceneGridError, match="does not overlap tile 31UFU"):
        tile_windows(TILE, S1_BACKSCATTER, [box(TILE.ulx - 1000, TILE.uly, 100)], scene_id="x")  # its edge touches
    assert resampling_for(S2_L2A.band("SCL"), 10.0).name == "nearest"
    assert resampling_for(S1_BACKSCATTER.band("VV"), 10.0).name == "bilinear"
    assert resampling_for(S1_BACKSCATTER.band("VV"), 5.0).name == "average"  # finer pixels: each one counts


def test_finer_pixels_are_averaged_in_linear_power_whatever_the_shard():
    """A 5 m backscatter file into the 10 m cube: each cube pixel is the mean power of the four source pixels it
    covers (nodata left out), whether read as one piece of the grid or two."""
    rng = np.random.default_rng(7)
    db = (-15 + 3 * rng.standard_normal((40, 40))).astype(np.float32)
    db[10, 10] = np.nan
    x0, y0 = TILE.ulx + 8000, TILE.uly - 6000
    with rasterio.MemoryFile() as mem:
        with mem.open(driver="GTiff", width=40, height=40, count=1, dtype="float32", crs=TILE.crs, nodata=np.nan,
                      transform=Affine(5, 0, x0, 0, -5, y0)) as dst:
            dst.write(db, 1)
        with mem.open() as ds:
            vv = S1_BACKSCATTER.band("VV")
            how = warp_record(vv, GeoBox(ds.shape, ds.transform, ds.crs), TILE)
            assert how["resampling"] == "average" and how["scale"] == pytest.approx(0.5)
            grid = TILE.geobox(10)[600:620, 800:820]
            whole = read_warped(ds, vv, ValueMap(np.nan), grid, how)
            halves = np.hstack([read_warped(ds, vv, ValueMap(np.nan), grid[:, :7], how),
                                read_warped(ds, vv, ValueMap(np.nan), grid[:, 7:], how)])
    power = (10 ** (db.astype(np.float64) / 10)).reshape(20, 2, 20, 2)
    expected = 10 * np.log10(np.nanmean(power, axis=(1, 3)))
    np.testing.assert_allclose(whole, expected, rtol=0, atol=1e-4)
    np.testing.assert_array_equal(whole, halves)


SHEARED = [("EPSG:32632", 10.0, 0), ("EPSG:4326", 0.0001, 0), ("EPSG:32631", 10.0, 12)]  # crs, pixel, turn (°)


def _sheared(crs: str, res: float, turn: float) -> tuple[TileGrid, dict, np.ndarray, tuple, tuple, np.ndarray]:
    """A GRD-like file (its data a sheared band, nodata collar around it, like a whole GRD's rotated footprint on a
    UTM grid) of another CRS, or of 31UGU's on a grid turned by ``turn`` degrees, onto 31UGU: its tile, how it is
    warped, its reach (valid_reach), its data window (data_windows) and footprint window (tile_windows) at 10 m,
    and the tile pixels (rows, cols) a warp of that whole footprint window makes valid."""
    tile = TileGrid.from_id("31UGU")
    x, y = CRS("EPSG:32631").transformer_to_crs(crs)(752003.0, 5846007.0)
    n = 400
    rows, cols = np.mgrid[0:n, 0:n]
    db = (-15 + np.random.default_rng(3).standard_normal((n, n))).astype(np.float32)
    db[(cols < 0.3 * rows + 150) | (cols > 0.3 * rows + 250) | (rows < 30)] = np.nan  # data: a sheared band
    with rasterio.MemoryFile() as mem:
        with mem.open(driver="GTiff", width=n, height=n, count=1, dtype="float32", crs=crs, nodata=np.nan,
                      transform=Affine.translation(x, y) * Affine.rotation(turn) * Affine.scale(res, -res)) as dst:
            dst.write(db, 1)
        with mem.open() as ds:
            geobox = GeoBox(ds.shape, ds.transform, ds.crs)
            vv = S1_BACKSCATTER.band("VV")
            how = warp_record(vv, geobox, tile)
            reach = valid_reach(geobox, valid_extents(~np.isnan(db)), tile.crs, pad=kernel_reach(how),
                                near=tile.bounds)
            data = data_windows(tile, S1_BACKSCATTER, [geobox], [reach], scene_id="x")[10]
            whole = tile_windows(tile, S1_BACKSCATTER, [geobox], scene_id="x")[10]
            r, c, h, w = whole
            warped = read_warped(ds, vv, ValueMap(np.nan), tile.geobox(10)[r:r + h, c:c + w], how)
    vr, vc = np.nonzero(~np.isnan(warped))
    return tile, how, reach, data, whole, np.stack([vr + r, vc + c])  # tile pixels


@pytest.mark.parametrize("crs, res, turn", SHEARED)
def test_the_data_window_holds_every_valid_pixel_of_the_whole_window_warped_and_leaves_the_collar_out(crs, res, turn):
    """The window from the file's valid pixels (data_windows) holds every valid pixel that warping the whole
    footprint window gives, and is the bounding box of those pixels to the kernel's reach, where the footprint
    window (tile_windows) holds the collar too; the polygon within it (data_polygon) holds those pixels too, and
    leaves out the collar beside the band's slanted edges."""
    tile, how, reach, data, (_, _, h, w), (vr, vc) = _sheared(crs, res, turn)
    dr, dc, dh, dw = data
    assert vr.size > 10_000 and dh * dw < 0.8 * h * w
    assert dr <= vr.min() and vr.max() < dr + dh and dc <= vc.min() and vc.max() < dc + dw  # nothing cut
    margin = (kernel_reach(how) + 1) * how["scale"] * 1.6 + 2  # the reach and a pixel, in tile pixels
    assert vr.min() - dr < margin and dr + dh - vr.max() < margin and vc.min() - dc < margin
    assert dc + dw - vc.max() < margin
    # the polygon within it: every pixel of that warp that is valid, and not the collar beside the band's slanted
    # edges (two triangles of the box)
    polygon = data_polygon(tile, {10: data}, [reach])
    square = shapely.box(*tile.window_bounds(data, 10))
    assert polygon.covered_by(square) and shapely.contains_xy(polygon, *_centres(tile, vr, vc)).all()
    assert square.area - polygon.area > 0.2 * square.area and len(polygon.exterior.coords) < 25  # a few vertices
    # data filling the window leave nothing out: no polygon, rather than its box again in every ledger version
    full = shapely.get_coordinates(square.buffer(50, join_style="mitre"))
    assert data_polygon(tile, {10: data}, [full]) is None


@pytest.mark.parametrize("crs, res, turn", SHEARED)
def test_the_polygon_is_the_valid_pixels_to_the_kernels_reach_and_a_pixel(crs, res, turn):
    """No point of the polygon (data_polygon) lies farther from a valid pixel of the warp than the kernel's reach
    and a pixel, diagonally (the corner of a pixel's box grown by the reach), along its slanted edges too: it
    leaves no strip of collar a parcel could lie in (a block of source pixels and the reach, some 450 m, before)."""
    tile, how, reach, data, _, (vr, vc) = _sheared(crs, res, turn)
    polygon = data_polygon(tile, {10: data}, [reach])
    ring = polygon.exterior
    edge = shapely.get_coordinates(shapely.line_interpolate_point(ring, np.arange(0, ring.length, 1.0)))
    far = cKDTree(np.column_stack(_centres(tile, vr, vc))).query(edge)[0].max()  # m: the farthest point (convex)
    source_pixel = how["scale"] * 10  # m
    assert far <= (kernel_reach(how) + 1) * source_pixel * math.sqrt(2) + 1
    assert far > kernel_reach(how) * source_pixel * 0.5  # the reach is kept: no valid pixel cut off


def _centres(tile: TileGrid, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The centres, in ``tile``'s CRS, of its 10 m pixels at ``rows``, ``cols``."""
    return tile.ulx + (cols + 0.5) * 10, tile.uly - (rows + 0.5) * 10
