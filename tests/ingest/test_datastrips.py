"""One Sentinel-2 acquisition on a tile delivered as two products, each holding part of the tile (a datastrip
boundary crosses it: Earth Search's ``..._0_L2A`` / ``..._1_L2A`` items, seconds apart), goes in as one date, the
earlier product's valid pixels first, the other's where it has nodata (ingest.passes.another_part, mosaic_parts);
a reprocessed product of the acquisition is still a duplicate. Checked with plain rasterio on the source files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import rasterio

from cardcube.spec import ChunkLayout, cube_spec
from cardcube.storage import open_store
from cube.dataset import open_cube
from cube.ledger import read_version
from ingest import validate
from ingest.job import ingest
from ingest.passes import another_part, covers
from ingest.sources import SourceScene
from ingest.validate import FULL, SOME, CheckedScene, coverage_cells
from tests.ingest.scene_edits import _rewrite, asset_path, broken_copy, items_of, write_items

CHUNKS = ChunkLayout(time=4, space=64, shard_space=256)
OVERLAP = 0.005  # of the tile's width: a strip along the boundary where both products hold data


def _part(start: float, stop: float, k: int) -> Callable[[str, Path], None]:
    """Keep, of every band, the part of the tile between two slanted boundaries (a datastrip's edge crosses the tile
    obliquely) at ``start`` and ``stop`` of its width in the first row (each 0.2 further east in the last), nodata
    beyond them; neighbouring parts share a strip of :data:`OVERLAP`. The reflectances of part ``k`` are ``k``
    higher, so the strip tells which product's pixels won."""
    def edit(band: str, path: Path) -> None:
        with rasterio.open(path) as src:
            nodata = src.nodata if src.nodata is not None else 0

        def cut(a: np.ndarray) -> np.ndarray:
            h, w = a.shape
            rows, cols = np.mgrid[0:h, 0:w]
            slant = 0.2 * rows / h
            inside = (cols / w >= start + slant - OVERLAP) & (cols / w < stop + slant + OVERLAP)
            a = np.where(inside, a, nodata).astype(a.dtype)
            if band != "SCL":
                a[a != nodata] += k
            return a
        _rewrite(path, data=cut)
    return edit


def _later(feature: dict, seconds: int) -> dict:
    time = feature["properties"]["datetime"]
    return {"datetime": f"{time[:-3]}{int(time[-3:-1]) + seconds:02d}Z"}


def _parts(region, name: str, edges: tuple[float, ...] = (0.4,)) -> list[dict]:
    """The products of the first S2 scene of ``region`` split at ``edges`` (ids ..._0, ..._1, ...), 4 s apart."""
    first = items_of(region.items, "sentinel-2-l2a")[0]
    bounds = [-1.0, *edges, 2.0]
    return [broken_copy(region.items, first, f"{first['id']}_{name}_{k}", _part(bounds[k], bounds[k + 1], k),
                        props=_later(first, 4 * k)) for k in range(len(bounds) - 1)]


def _halves(region, name: str) -> tuple[dict, dict]:
    west, east = _parts(region, name)
    return west, east


def _read(region, feature: dict, band: str) -> tuple[np.ndarray, float, rasterio.coords.BoundingBox]:
    with rasterio.open(asset_path(region.items, feature, band)) as src:
        return src.read(1), (src.nodata if src.nodata is not None else 0), src.bounds


def _date(cube: Path, scene_id: str, band: str, resolution: int, bounds) -> np.ndarray:
    ds = open_cube(cube, "s2", resolution=resolution, decode=False, bands=[band], chunks="window").load()
    (t,) = np.flatnonzero(ds["scene_id"].values == scene_id)
    return ds[band].isel(time=int(t)).sel(x=slice(bounds.left, bounds.right),
                                          y=slice(bounds.top, bounds.bottom)).values


@pytest.fixture
def reads(monkeypatch) -> list[str]:
    """The scene ids whose band files the run reads (one entry per file)."""
    seen: list[str] = []
    read = validate._read_file

    def counted(scene, band, href):
        seen.append(scene.scene_id)
        return read(scene, band, href)
    monkeypatch.setattr(validate, "_read_file", counted)
    return seen


@pytest.mark.parametrize("edges", [(0.4,), (0.25, 0.55)], ids=["two", "three"])
def test_products_each_holding_part_of_the_tile_go_in_as_one_date_holding_them_all(tiny_region, tmp_path, edges):
    parts = _parts(tiny_region, f"parts{len(edges)}", edges)
    items = write_items(tiny_region.items, parts[::-1], f"parts{len(edges)}.json")  # the order does not matter
    cube = tmp_path / "cube"
    result = ingest(items, cube, chunks=CHUNKS, progress=False)
    ids = [p["id"] for p in parts]
    assert result.ok and result.added == (ids[0],) and result.mosaicked == tuple(ids[1:])
    assert result.to_dict()["mosaicked"] == ids[1:] and f"mosaicked {len(ids) - 1} product(s)" in result.summary()
    record = read_version(open_store(cube), "s2").scenes[ids[0]]
    assert [p.scene_id for p in record.parts] == ids and record.time == parts[0]["properties"]["datetime"]
    assert open_cube(cube, "s2", decode=False).sizes["time"] == 1
    both = 0
    for band in cube_spec("s2").bands:  # every band, SCL too: the first valid of the parts, in time order
        expected, nodata, bounds = _read(tiny_region, parts[0], band.name)
        for part in parts[1:]:
            later, _, _ = _read(tiny_region, part, band.name)
            both += int(((expected != nodata) & (later != nodata)).sum())
            expected = np.where(expected != nodata, expected, later)
        assert (expected != nodata).all(), band.name  # together they cover the tile
        np.testing.assert_array_equal(_date(cube, ids[0], band.name, band.resolution, bounds), expected,
                                      err_msg=band.name)
    assert both  # the strips two parts hold: the earlier product's pixels won there


def test_a_part_holding_a_corner_of_the_tile_goes_into_its_date(tiny_region, tmp_path):
    """A datastrip boundary near the tile's corner: the first product holds some 97% of the tile, the other the
    rest. The first was taken as covering its tile (95% of its cells), the other a duplicate unread: its pixels
    were lost for that date for good."""
    big, small = _parts(tiny_region, "corner", (0.9,))
    a, nodata, bounds = _read(tiny_region, big, "B04")
    b, _, _ = _read(tiny_region, small, "B04")
    assert 0 < ((a == nodata) & (b != nodata)).mean() < 0.05  # the set-up
    cube = tmp_path / "cube"
    result = ingest(write_items(tiny_region.items, [big, small], "corner.json"), cube, chunks=CHUNKS, progress=False)
    assert result.added == (big["id"],) and result.mosaicked == (small["id"],) and not result.rejected
    np.testing.assert_array_equal(_date(cube, big["id"], "B04", 10, bounds), np.where(a != nodata, a, b))


def test_a_reprocessed_product_of_a_product_covering_its_tile_is_a_duplicate_its_files_unread(tiny_region, tmp_path,
                                                                                             reads):
    """The common case costs nothing: a product holding data all over its tile leaves no other part to read."""
    first = items_of(tiny_region.items, "sentinel-2-l2a")[0]
    again = broken_copy(tiny_region.items, first, first["id"].replace("_N0", "_N9"), props=_later(first, 2))
    result = ingest(write_items(tiny_region.items, [first, again], "covering.json"), tmp_path / "cube",
                    chunks=CHUNKS, progress=False)
    assert result.added == (first["id"],) and not result.mosaicked
    (rejection,) = result.rejected
    assert rejection.scene_id == again["id"] and rejection.kind == "DuplicateSceneError"
    assert f"is read from scene {first['id']}" in rejection.reason and "valid pixels lie" not in rejection.reason
    assert first["id"] in reads and again["id"] not in reads


def test_a_reprocessed_product_of_a_product_holding_part_of_its_tile_is_a_duplicate(tiny_region, tmp_path, reads):
    """Read, as it might hold the rest of the tile, and found to hold data where the first does: a duplicate."""
    west, _ = _halves(tiny_region, "reprocessed")
    again = broken_copy(tiny_region.items, west, west["id"].replace("_N0", "_N9"), props=_later(west, 2))
    again_files = {b: asset_path(tiny_region.items, again, b).read_bytes() for b in again["assets"]}
    assert again_files["B04"] == asset_path(tiny_region.items, west, "B04").read_bytes()  # the same pixels
    cube = tmp_path / "cube"
    result = ingest(write_items(tiny_region.items, [again, west], "reprocessed.json"), cube, chunks=CHUNKS,
                    progress=False)
    assert result.added == (west["id"],) and not result.mosaicked
    (rejection,) = result.rejected
    assert rejection.scene_id == again["id"] and rejection.kind == "DuplicateSceneError"
    assert f"its valid pixels lie where those of scene {west['id']} do" in rejection.reason
    assert again["id"] in reads  # read: it might have held the rest of the tile
    assert not read_version(open_store(cube), "s2").scenes[west["id"]].parts
    a, _, bounds = _read(tiny_region, west, "B04")
    np.testing.assert_array_equal(_date(cube, west["id"], "B04", 10, bounds), a)


def test_a_part_offered_after_its_date_was_committed_is_a_duplicate_saying_so(tiny_region, tmp_path):
    """Committed dates never change: the other part, offered in a later run, does not go into the date."""
    west, east = _halves(tiny_region, "late")
    cube = tmp_path / "cube"
    first = ingest(write_items(tiny_region.items, [west], "late-west.json"), cube, chunks=CHUNKS, progress=False)
    assert first.added == (west["id"],)
    result = ingest(write_items(tiny_region.items, [east], "late-east.json"), cube, progress=False)
    assert not result.added and not result.mosaicked
    (rejection,) = result.rejected
    assert rejection.scene_id == east["id"] and rejection.kind == "DuplicateSceneError"
    assert f"(scene {west['id']}); committed dates never change" in rejection.reason
    assert "another datastrip's product of it, holding another part of the tile, goes into its date only when " \
           "offered in the run that commits it" in rejection.reason
    a, _, bounds = _read(tiny_region, west, "B04")
    np.testing.assert_array_equal(_date(cube, west["id"], "B04", 10, bounds), a)


def test_coverage_tells_parts_of_a_tile_from_products_holding_data_where_another_does():
    ok = np.zeros((5, 7), bool)
    ok[:, :3] = True
    ok[4, 3] = True
    ok[3, 3] = True  # cells of 2 x 2 px: the last row's (row 4 alone) and column's (column 6) are smaller
    assert coverage_cells(ok, 2).tolist() == [[FULL, SOME, 0, 0], [FULL, SOME, 0, 0], [FULL, FULL, 0, 0]]
    scene = SourceScene("A", "sentinel-2-l2a", "31UFU", "2024-05-02T10:50:31Z", "sentinel-2a", 51, "descending", None)

    def checked(cells: np.ndarray) -> CheckedScene:
        return CheckedScene(scene, {10: (0, 0, 200, 200)}, {}, coverage=cells.astype(np.uint8))
    west, east = np.zeros((10, 10)), np.zeros((10, 10))
    west[:, :5], west[:, 5], east[:, 5], east[:, 6:] = FULL, SOME, SOME, FULL  # they meet along column 5
    assert not covers([checked(west)]) and covers([checked(west), checked(east)])
    assert another_part(checked(east), [checked(west)])
    assert not another_part(checked(west), [checked(west)])  # the same pixels: a reprocessing
    wider = west.copy()
    wider[:, 5:8] = FULL  # in full where the other is in 2 of its 5 columns: 40% of the smaller's valid cells
    assert not another_part(checked(east), [checked(wider)])


def test_slices_of_a_sentinel1_pass_each_naming_the_tile_go_in_as_one_date(tiny_region, tmp_path):
    """Two slices of one Sentinel-1 pass as products naming the tile (a per-tile product made per GRD slice), 3 s
    apart, each holding part of it: they went in as two dates seconds apart, so a parcel across their boundary had two
    rows of that pass, each measured on some of its pixels. They go in as one date, the earlier slice's pixels first;
    a reprocessed product of the pass (data where the slices' are) is still a date of its own, as before."""
    first = items_of(tiny_region.items, "sentinel-1-card-bs")[0]
    west, east, again = (broken_copy(tiny_region.items, first, f"{first['id']}_SLICE_{k}", _part(a, b, k),
                                     props=_later(first, 3 * k)) for k, (a, b) in enumerate(((-1.0, 0.4), (0.4, 2.0),
                                                                                             (-1.0, 2.0))))
    cube = tmp_path / "cube"
    result = ingest(write_items(tiny_region.items, [again, east, west], "slices.json"), cube, collection="s1",
                    chunks=CHUNKS, progress=False)
    assert result.added == (west["id"], again["id"]) and result.mosaicked == (east["id"],) and not result.rejected
    ds = open_cube(cube, "s1", bands=["VV"]).load()
    assert ds["scene_id"].values.tolist() == [west["id"], again["id"]]
    (vv_west, _, bounds), (vv_east, _, _) = _read(tiny_region, west, "VV"), _read(tiny_region, east, "VV")
    got = ds["VV"].isel(time=0).sel(x=slice(bounds.left, bounds.right), y=slice(bounds.top, bounds.bottom)).values
    assert np.isnan(vv_west).any() and np.isnan(vv_east).any()  # each slice holds part of the tile
    assert np.array_equal(got, np.where(np.isnan(vv_west), vv_east, vv_west), equal_nan=True)  # the earlier's first
    again_run = ingest(write_items(tiny_region.items, [again, east, west], "slices.json"), cube, collection="s1",
                       chunks=CHUNKS, progress=False)  # offered again: every slice of the date is skipped
    assert again_run.added == () and set(again_run.skipped) == {west["id"], east["id"], again["id"]}
