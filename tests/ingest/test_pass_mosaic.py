"""The slices of one Sentinel-1 pass on one tile go in as one date (ingest.passes): checked against the first-valid
mosaic, in time order, of rasterio.warp.reproject of each slice onto the tile, done here on its own. One synthetic
footprint is cut along track into two slices 25 s apart overlapping by 10 rows; the later one is made 0.5 dB
brighter, so the overlap tells which slice's pixels won."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import shapely
from rasterio.enums import Resampling
from shapely.geometry import Polygon, shape

from cardcube.errors import InvalidRequestError
from cardcube.grid import TileGrid
from cardcube.spec import PASS_GAP_S
from cardcube.storage import open_store
from cube.dataset import open_cube
from cube.ledger import ScenePart, SceneRecord, read_version, scene_extent
from ingest.job import ingest
from ingest.passes import group_passes, mosaic, mosaic_passes
from ingest.sources import SourceScene
from ingest.validate import CheckedScene
from tests.ingest.scene_edits import items_of, write_items
from tests.ingest.test_split import CHUNKS, RTC, _on_tile, _rtc_item
from tests.ingest.warp_checks import cube_pixels, reference_warp

TILE = "31UFU"
OPTIONS = {"collection": "s1", "chunks": CHUNKS, "progress": False, "warp": True, "source_collection": RTC}
WITHIN_31UFU = 620003  # a footprint's west edge inside 31UFU only; 608503 reaches into 31UEU (east edge 609780)


def _slices(folder: Path, *, x0: float = WITHIN_31UFU, collar: tuple[float | None, float | None] = (None, None),
            slope: float = 0.0) -> tuple[Path, Path]:
    """Slices PASS-A (rows 0-110, 05:50:00) and PASS-B (rows 100-200, 05:50:25, 0.5 dB brighter) of one 200 x 300
    footprint of one descending pass; ``collar``: each one's ``data_east_of``, its edge leaning ``slope``."""
    common = {"x0": x0, "y0": 5842007, "shape": (200, 300), "footprint": "PASS", "slope": slope}
    a = _rtc_item(folder, "PASS-A", rows=(0, 110), time="2024-05-02T05:50:00Z", data_east_of=collar[0], **common)
    b = _rtc_item(folder, "PASS-B", rows=(100, 200), time="2024-05-02T05:50:25Z", data_east_of=collar[1],
                  gain_db=0.5, **common)
    return a, b


def _both(a: Path, b: Path) -> Path:
    """One ItemCollection of both slices, as one ingest run is offered them."""
    return write_items(a, [*items_of(a, RTC), *items_of(b, RTC)], "pass.json")


def _file(item: Path, band: str) -> Path:
    return item.parent / item.stem / f"{band.lower()}.tif"


def _reference(items: list[Path], band: str, tile: str = TILE):
    """The first-valid mosaic, in the order of ``items``, of each one's file reprojected onto ``tile`` on its own;
    with each one's reprojection and the grid it is on."""
    target = _on_tile(TileGrid.from_id(tile), *(_file(i, "VV") for i in items), pad=3)
    each = [reference_warp(_file(i, band), target, Resampling.bilinear, db=False) for i in items]
    mosaic = each[0].copy()
    for later in each[1:]:
        mosaic = np.where(np.isnan(mosaic), later, mosaic)
    return mosaic, each, target


def _assert_date_is(cube: Path, scene_id: str, items: list[Path], tile: str = TILE) -> None:
    """Both bands of date ``scene_id`` equal the reference mosaic of ``items`` (one CRS: to float32 rounding)."""
    for band in ("VV", "VH"):
        expected, _, target = _reference(items, band, tile)
        got = cube_pixels(cube, "s1", scene_id, band, target, tile=tile)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)


def test_two_slices_of_one_pass_go_in_as_one_date_mosaicked_first_valid(tmp_path):
    a, b = _slices(tmp_path)
    cube = tmp_path / "cube"
    result = ingest(_both(a, b), cube, **OPTIONS)
    assert result.ok and result.added == ("PASS-A_T31UFU",) and result.mosaicked == ("PASS-B_T31UFU",)
    assert result.late == () and "mosaicked 1 slice piece(s) into the date of an earlier slice" in result.summary()
    assert result.source_bytes == sum(_file(i, band).stat().st_size for i in (a, b) for band in ("VV", "VH"))

    version = read_version(open_store(cube), "s1")
    (date,) = version.tiles[TILE].acquisitions  # one date, not two seconds apart
    assert (date.scene_id, date.time) == ("PASS-A_T31UFU", "2024-05-02T05:50:00Z")
    assert list(open_cube(cube, "s1", bands=["VV"])["scene_id"].values) == ["PASS-A_T31UFU"]
    _assert_date_is(cube, "PASS-A_T31UFU", [a, b])

    _, (only_a, only_b), target = _reference([a, b], "VV")
    got = cube_pixels(cube, "s1", "PASS-A_T31UFU", "VV", target)
    both = ~np.isnan(only_a) & ~np.isnan(only_b)
    assert both.sum() > 5 * 290  # the overlap: A's pixels won there, not B's 0.5 dB brighter ones
    np.testing.assert_allclose(got[both], only_a[both], rtol=0, atol=1e-4)
    assert abs(np.median(only_b[both] - got[both]) - 0.5) < 0.01
    # no nodata seam: every pixel inside the footprint holds a value, though each slice alone leaves half empty
    x, y = target.coords["x"].values, target.coords["y"].values
    inside = ((x > WITHIN_31UFU + 20) & (x < WITHIN_31UFU + 2980))[None, :] & ((y > 5840027) & (y < 5841987))[:, None]
    assert np.isnan(only_a[inside]).sum() > 50 * 290 and np.isnan(only_b[inside]).sum() > 50 * 290
    assert not np.isnan(got[inside]).any()

    record = version.scenes["PASS-A_T31UFU"]
    assert set(version.scenes) == {"PASS-A_T31UFU"} and version.added == ("PASS-A_T31UFU",)
    assert [(p.scene_id, p.item, p.time) for p in record.parts] == [
        ("PASS-A_T31UFU", "PASS-A", "2024-05-02T05:50:00Z"), ("PASS-B_T31UFU", "PASS-B", "2024-05-02T05:50:25Z")]
    for part, item in zip(record.parts, (a, b), strict=True):
        assert part.checksums == {band: "sha256:" + hashlib.sha256(_file(item, band).read_bytes()).hexdigest()
                                  for band in ("VV", "VH")}
        assert part.sources["VV"].endswith(f"{item.stem}/vv.tif") and part.warped["VV"]["resampling"] == "bilinear"
        assert set(part.converted) == {"VV", "VH"}
    assert record.items == ("PASS-A", "PASS-B")


def test_a_mosaicked_date_compacted_from_the_hot_buffer_keeps_every_slices_pixels(tmp_path):
    """The compaction copies a hot date over the windows its record names: both slices', not the first's only."""
    a, b = _slices(tmp_path)
    cube = tmp_path / "cube"
    ingest(_both(a, b), cube, **OPTIONS)
    for day in ("05-14", "05-26", "06-07"):  # the next passes, 12 days apart: the fourth date fills a block of 4
        later = _rtc_item(tmp_path, f"NEXT-{day}", x0=WITHIN_31UFU, y0=5842007, shape=(50, 50),
                          time=f"2024-{day}T05:50:00Z")
        assert ingest(later, cube, **OPTIONS).added == (f"NEXT-{day}_T31UFU",)
    state = read_version(open_store(cube), "s1").tiles[TILE]
    assert [d.scene_id for d in state.cold][:1] == ["PASS-A_T31UFU"] and len(state.cold) == 4 and not state.hot
    _assert_date_is(cube, "PASS-A_T31UFU", [a, b])


def test_offering_a_pass_again_or_one_slice_of_it_adds_nothing(tmp_path):
    a, b = _slices(tmp_path)
    cube = tmp_path / "cube"
    first = ingest(_both(a, b), cube, **OPTIONS)
    assert first.version == 1
    again = ingest(_both(a, b), cube, **OPTIONS)
    assert again.version is None and again.added == () and again.ok
    assert set(again.skipped) == {"PASS-A_T31UFU", "PASS-B_T31UFU"}
    for one in (b, a):
        alone = ingest(one, cube, **OPTIONS)
        assert alone.version is None and alone.added == () and alone.skipped == (f"{one.stem}_T31UFU",)
    assert read_version(open_store(cube), "s1").version == 1


def test_a_slice_arriving_after_its_pass_date_was_committed_goes_in_as_its_own_date(tmp_path, caplog):
    """Committed dates never change: A's date stays as it was, pixel for pixel, and B is a date of its own."""
    a, b = _slices(tmp_path)
    cube = tmp_path / "cube"
    ingest(a, cube, **OPTIONS)
    _, _, target = _reference([a, b], "VV")
    before = cube_pixels(cube, "s1", "PASS-A_T31UFU", "VV", target)
    with caplog.at_level(logging.WARNING, logger="ingest.job"):
        later = ingest(b, cube, **OPTIONS)
    assert later.added == ("PASS-B_T31UFU",) and later.late == ("PASS-B_T31UFU",) and later.mosaicked == ()
    assert "scene PASS-B_T31UFU: a slice of the pass whose date PASS-A_T31UFU" in caplog.text
    assert "1 slice piece(s) as dates of their own" in later.summary()
    assert later.to_dict()["late"] == ["PASS-B_T31UFU"]
    version = read_version(open_store(cube), "s1")
    assert [d.scene_id for d in version.tiles[TILE].acquisitions] == ["PASS-A_T31UFU", "PASS-B_T31UFU"]
    assert version.scenes["PASS-A_T31UFU"].parts == version.scenes["PASS-B_T31UFU"].parts == ()
    np.testing.assert_array_equal(cube_pixels(cube, "s1", "PASS-A_T31UFU", "VV", target), before)
    _assert_date_is(cube, "PASS-A_T31UFU", [a])
    _assert_date_is(cube, "PASS-B_T31UFU", [b])


def _lose_hot_shard(cube: Path, slot: int) -> None:
    """A VV shard of hot slot ``slot`` lost (a repair writes anew only a date whose shards are lost or damaged)."""
    sorted((cube / "s1").glob(f"*/cube.zarr/hot/r10m/VV/c/{slot}/*/*"))[0].unlink()


def test_repair_reads_a_mosaicked_date_again_from_every_slice_and_refuses_one_slice(tmp_path):
    """A hot date mosaicked from two slices is read again from both, mosaicked as before; one slice alone cannot
    stand in for it."""
    a, b = _slices(tmp_path)
    cube = tmp_path / "cube"
    ingest(_both(a, b), cube, **OPTIONS)
    footprint = read_version(open_store(cube), "s1").scenes["PASS-A_T31UFU"].footprint
    _lose_hot_shard(cube, 0)  # a sound date is not written again
    with pytest.raises(InvalidRequestError, match=r"PASS-A_T31UFU is mosaicked .* PASS-B_T31UFU is not offered"):
        ingest(a, cube, **OPTIONS, repair=True)
    repaired = ingest(_both(a, b), cube, **OPTIONS, repair=True)
    assert repaired.repaired == ("PASS-A_T31UFU",) and not repaired.added and not repaired.skipped
    version = read_version(open_store(cube), "s1")
    state = version.tiles[TILE]
    assert [(h.slot, h.acquisition.scene_id) for h in state.hot] == [(1, "PASS-A_T31UFU")]
    assert version.scenes["PASS-A_T31UFU"].footprint == footprint  # where its data are (None: the whole window)
    _assert_date_is(cube, "PASS-A_T31UFU", [a, b])


def test_repair_reads_a_pass_date_and_its_late_slice_date_again_each_as_it_was(tmp_path):
    """A slice committed as a date of its own after its pass's date: offered together for a repair, each is read
    again as its record says (mosaicking them anew refused both: "not the bytes the ledger records")."""
    a, b = _slices(tmp_path)
    cube = tmp_path / "cube"
    ingest(a, cube, **OPTIONS)
    ingest(b, cube, **OPTIONS)
    _lose_hot_shard(cube, 0)
    _lose_hot_shard(cube, 1)
    repaired = ingest(_both(a, b), cube, **OPTIONS, repair=True)
    assert repaired.repaired == ("PASS-A_T31UFU", "PASS-B_T31UFU") and repaired.late == ()
    _assert_date_is(cube, "PASS-A_T31UFU", [a])
    _assert_date_is(cube, "PASS-B_T31UFU", [b])


def test_a_slice_with_no_data_on_a_tile_is_left_out_of_that_tiles_mosaic(tmp_path):
    """Across 31UEU/31UFU, B's data start east of 31UEU: on 31UEU, A alone; on 31UFU, A and B mosaicked."""
    a, b = _slices(tmp_path, x0=608503, collar=(None, 610000))
    cube = tmp_path / "cube"
    result = ingest(_both(a, b), cube, **OPTIONS)
    assert result.ok and result.added == ("PASS-A_T31UEU", "PASS-A_T31UFU")
    assert result.empty == ("PASS-B_T31UEU",) and result.mosaicked == ("PASS-B_T31UFU",)
    scenes = read_version(open_store(cube), "s1").scenes
    assert scenes["PASS-A_T31UEU"].parts == ()
    assert [p.scene_id for p in scenes["PASS-A_T31UFU"].parts] == ["PASS-A_T31UFU", "PASS-B_T31UFU"]
    _assert_date_is(cube, "PASS-A_T31UEU", [a], tile="31UEU")
    _assert_date_is(cube, "PASS-A_T31UFU", [a, b])


def test_a_tile_where_every_slice_has_no_data_gets_no_date(tmp_path):
    a, b = _slices(tmp_path, x0=608503, collar=(610000, 610000))
    cube = tmp_path / "cube"
    result = ingest(_both(a, b), cube, **OPTIONS)
    assert result.ok and result.added == ("PASS-A_T31UFU",) and result.tiles == (TILE,)
    assert result.empty == ("PASS-A_T31UEU", "PASS-B_T31UEU")
    assert set(read_version(open_store(cube), "s1").tiles) == {TILE}
    _assert_date_is(cube, "PASS-A_T31UFU", [a, b])


def test_a_broken_slice_is_rejected_on_its_own_and_the_rest_of_its_pass_goes_in(tmp_path):
    a, b = _slices(tmp_path)
    vh = _file(b, "VH")
    vh.write_bytes(vh.read_bytes()[:2000])  # truncated
    cube = tmp_path / "cube"
    result = ingest(_both(a, b), cube, **OPTIONS)
    assert result.added == ("PASS-A_T31UFU",) and result.mosaicked == ()
    (rejection,) = result.rejected
    assert rejection.scene_id == "PASS-B_T31UFU" and rejection.kind == "SceneReadError"
    assert "band VH is truncated or corrupt" in rejection.reason
    version = read_version(open_store(cube), "s1")
    assert version.scenes["PASS-A_T31UFU"].parts == () and version.rejected == (rejection,)
    _assert_date_is(cube, "PASS-A_T31UFU", [a])


def test_a_pass_dates_polygon_is_the_union_of_its_slices(tmp_path):
    """Each slice's data east of one slanted edge (a GRD's): the date of both records the union of the polygons each
    slice records on its own, which holds every valid pixel of the date and leaves the collar out."""
    a, b = _slices(tmp_path / "items", collar=(620500, 620500), slope=1.0)
    cubes = {"A": [a], "B": [b], "AB": [a, b]}
    footprints = {}
    for name, items in cubes.items():
        result = ingest(items[0] if len(items) == 1 else _both(*items), tmp_path / name, **OPTIONS)
        assert result.ok and result.added == (f"{items[0].stem}_T31UFU",)
        footprints[name] = shape(read_version(open_store(tmp_path / name), "s1").scenes[result.added[0]].footprint)
    union = shapely.union_all([footprints["A"], footprints["B"]])
    assert footprints["AB"].symmetric_difference(union).area < 1.0  # m², the millimetres rounded
    assert footprints["AB"].area > 1.2 * max(footprints["A"].area, footprints["B"].area)
    target = _on_tile(TileGrid.from_id(TILE), _file(a, "VV"), _file(b, "VV"), pad=3)
    x, y = np.meshgrid(target.coords["x"].values, target.coords["y"].values)
    got = ~np.isnan(cube_pixels(tmp_path / "AB", "s1", "PASS-A_T31UFU", "VV", target))
    assert got.sum() > 100 * 100 and shapely.contains_xy(footprints["AB"], x[got], y[got]).all()
    window = shapely.box(*scene_extent(read_version(open_store(tmp_path / "AB"), "s1"), TILE, "PASS-A_T31UFU"))
    assert window.area - footprints["AB"].area > 0.2e6  # m²: the collar beside the edge, inside the window


def _piece(item: str, time: str, *, tile: str = TILE, orbit: int = 37, of_item: bool = True,
           window: tuple[int, int, int, int] = (0, 0, 10, 10)) -> CheckedScene:
    scene = SourceScene(f"{item}_T{tile}", RTC, tile, time, "sentinel-1a", orbit, "descending", None,
                        item_id=item if of_item else "")
    return CheckedScene(scene, {10: window}, {})


def test_the_slices_of_a_pass_are_those_of_one_tile_orbit_and_time_each_within_the_gap_of_the_last():
    a = _piece("A", "2024-05-02T05:50:00Z", window=(0, 5, 10, 10))
    b = _piece("B", "2024-05-02T05:50:25Z", window=(8, 0, 10, 10))
    c = _piece("C", "2024-05-02T05:51:40Z")  # 75 s after B (B missing a slice between): still the pass
    gap = _piece("D", "2024-05-02T05:53:41Z")  # 121 s after C
    next_pass = _piece("E", "2024-05-14T05:50:00Z")
    other_orbit = _piece("F", "2024-05-02T05:50:10Z", orbit=110)
    other_tile = _piece("G", "2024-05-02T05:50:10Z", tile="31UEU")
    named = _piece("H", "2024-05-02T05:50:05Z", of_item=False)  # names its tile: never mosaicked
    assert PASS_GAP_S == 120
    scenes = [b, named, other_orbit, next_pass, c, a, gap, other_tile]
    assert [[s.scene.scene_id for s in g] for g in group_passes(scenes)] == [
        ["A_T31UFU", "B_T31UFU", "C_T31UFU"], ["H_T31UFU"], ["F_T31UFU"], ["E_T31UFU"], ["D_T31UFU"], ["G_T31UEU"]]
    dates = mosaic_passes(scenes)
    assert [d.scene_id for d in dates] == ["A_T31UFU", "H_T31UFU", "F_T31UFU", "E_T31UFU", "D_T31UFU", "G_T31UEU"]
    assert dates[0].windows == {10: (0, 0, 18, 15)} and dates[0].parts == (a, b, c) and dates[0].scene is a.scene
    assert all(d.parts == () for d in dates[1:])


def test_a_pass_dates_polygon_counts_a_slice_without_one_by_its_windows_box_and_none_without_any():
    grid = TileGrid.from_id(TILE)
    a = replace(_piece("A", "2024-05-02T05:50:00Z", window=(0, 5, 10, 10)),
                footprint=Polygon([grid.window_bounds((0, 5, 10, 10), 10)[:2], (grid.ulx + 150, grid.uly),
                                   (grid.ulx + 50, grid.uly)]))
    b = _piece("B", "2024-05-02T05:50:25Z", window=(8, 0, 10, 10))
    c = _piece("C", "2024-05-02T05:50:50Z", window=(5, 5, 10, 10))
    assert mosaic([a, b]).footprint.equals(shapely.union_all([a.footprint,
                                                              shapely.box(*grid.window_bounds((8, 0, 10, 10), 10))]))
    assert mosaic([b, c]).footprint is None


def test_a_record_without_parts_serialises_as_before_and_one_with_parts_round_trips():
    old = {"scene_id": "X_T31UFU", "tile": TILE, "time": "2024-05-02T05:50:00Z", "version": 3,
           "checksums": {"VV": "sha256:00"}, "windows": {"10": [0, 0, 5, 5]}, "collection": RTC,
           "sources": {"VV": "x/vv.tif"}, "processing_baseline": None, "item": "X"}
    assert SceneRecord.from_dict(old).to_dict() == old and "parts" not in SceneRecord.from_dict(old).to_dict()
    part = ScenePart("Y_T31UFU", "Y", "2024-05-02T05:50:25Z", {"VV": "sha256:11"}, {"VV": "y/vv.tif"},
                     warped={"VV": {"resampling": "bilinear"}})
    mosaicked = {**old, "parts": [ScenePart("X_T31UFU", "X", old["time"]).to_dict(), part.to_dict()]}
    record = SceneRecord.from_dict(mosaicked)
    assert record.parts[1] == part and record.to_dict() == mosaicked and "converted" not in part.to_dict()
    assert record.piece_ids == ("X_T31UFU", "X_T31UFU", "Y_T31UFU") and record.items == ("X", "Y")
