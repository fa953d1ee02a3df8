"""The mosaic of tile windows, against a plain numpy mosaic of the same pixels: placed by its coordinates, the
first window with a value wins, every pixel of the bounds there."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import rioxarray  # noqa: F401
import xarray as xr

from cardcube.spec import S2_L2A
from cube.mosaic import _space_chunks, _time_chunks, mosaic

B04, B08 = S2_L2A.band("B04"), S2_L2A.band("B08")
NOON = np.datetime64("2024-05-04T12:00:00", "ns")


def _window(tile: str, days: list[int], x0: float, y0: float, shape: tuple[int, int], seed: int,
            chunks: tuple[int, int, int]) -> xr.Dataset:
    """A tile's window of 10 m pixels, west ``x0``, north ``y0`` (pixel centres), on ``days`` after NOON: B04
    decoded (float32, NaN its nodata) and B08 as stored (uint16, 0), a fifth of each nodata."""
    rng = np.random.default_rng(seed)
    stored = rng.integers(1, 5000, (len(days), *shape), dtype="uint16")
    stored[rng.random(stored.shape) < 0.2] = 0
    decoded = np.where(stored == 0, np.nan, stored * np.float32(1e-4) - np.float32(0.1)).astype("float32")
    times = NOON + np.array(days) * np.timedelta64(1, "D")
    ds = xr.Dataset({"B04": (("time", "y", "x"), da.from_array(decoded, chunks)),
                     "B08": (("time", "y", "x"), da.from_array(stored, chunks))},
                    coords={"time": times, "y": y0 - 10 * np.arange(shape[0]), "x": x0 + 10 * np.arange(shape[1]),
                            "platform": ("time", ["sentinel-2a"] * len(days)),
                            "relative_orbit": ("time", [51] * len(days)),
                            "orbit_state": ("time", ["descending"] * len(days)),
                            "scene_id": ("time", [f"{tile}-{d}" for d in days]), "tile": ("time", [tile] * len(days))})
    return ds.rio.write_crs("EPSG:32631")


def _reference(parts: list[xr.Dataset], band: str, empty: float) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                                          np.ndarray]:
    """The mosaic by hand: every date and pixel of the parts' bounds, the first part's value that is not empty."""
    times = np.unique(np.concatenate([p.time.values for p in parts]))
    xs = np.arange(min(p.x.values.min() for p in parts), max(p.x.values.max() for p in parts) + 1, 10.0)
    ys = np.arange(max(p.y.values.max() for p in parts), min(p.y.values.min() for p in parts) - 1, -10.0)
    out = np.full((times.size, ys.size, xs.size), empty, dtype=parts[0][band].dtype)
    for t, time in enumerate(times):
        for i, y in enumerate(ys):
            for j, x in enumerate(xs):
                for p in parts:
                    if time in p.time.values and y in p.y.values and x in p.x.values:
                        v = p[band].sel(time=time, y=y, x=x).values
                        if not (np.isnan(v) if np.isnan(empty) else v == empty):
                            out[t, i, j] = v
                            break
    return times, ys, xs, out


@pytest.mark.parametrize("whole", [True, False])
def test_a_mosaic_is_the_first_value_of_its_windows_at_every_pixel_and_date(whole):
    """Three windows: two overlapping with dates in common and their own (out of step), a third apart from both
    (nodata between); blocks that do not line up with the mosaic's. Both bands, both chunkings."""
    parts = [_window("31UFU", [0, 2, 5, 6, 9], 1000, 5000, (9, 7), 1, (2, 4, 3)),
             _window("31UGU", [0, 1, 5, 9, 12], 1040, 4970, (8, 9), 2, (3, 5, 4)),
             _window("31UGV", [3, 5], 1200, 5100, (3, 2), 3, (1, 3, 2))]
    got = mosaic(parts, [B04, B08], whole=whole).compute()
    for band, empty in (("B04", np.nan), ("B08", 0)):
        times, ys, xs, want = _reference(parts, band, empty)
        np.testing.assert_array_equal(got.time.values, times)
        np.testing.assert_array_equal(got.y.values, ys)
        np.testing.assert_array_equal(got.x.values, xs)
        assert got[band].dtype == want.dtype
        np.testing.assert_array_equal(got[band].values, want)
    # each date names the scenes of every window holding it; the grid is the pixels' own
    assert got.sel(time=NOON + np.timedelta64(5, "D")).scene_id.item() == "31UFU-5+31UGU-5+31UGV-5"
    assert got.sel(time=NOON + np.timedelta64(12, "D")).tile.item() == "31UGU"
    assert tuple(got.rio.transform())[:6] == (10, 0, 995, 0, -10, 5105)
    assert got.rio.crs == "EPSG:32631"


def test_a_lazy_mosaic_keeps_the_first_windows_time_chunks():
    """Cut in time where the first window's chunks start, each of its stored chunks read by one block of the
    mosaic; in space of its chunks' size, or whole (one block over the area, as a window read)."""
    parts = [_window("31UFU", [0, 2, 5, 6, 9], 1000, 5000, (9, 7), 1, (2, 4, 3)),
             _window("31UGU", [0, 1, 3, 9, 12], 1040, 4970, (8, 9), 2, (3, 5, 4))]
    got = mosaic(parts, [B04], whole=False).B04.data
    # dates 0 1 2 3 5 6 9 12: the first window's chunks start at days 0, 5 and 9; 11 rows, 13 columns
    assert got.chunks == ((4, 2, 2), (4, 4, 3), (3, 3, 3, 3, 1))
    assert mosaic(parts, [B04], whole=True).B04.data.chunks == ((8,), (11,), (13,))  # far below WHOLE_BLOCK_BYTES


def test_a_whole_mosaics_blocks_hold_enough_dates_and_keep_stored_chunks_whole():
    """A whole-area mosaic of one-date chunks (the hot buffer) is cut at the first window's chunk starts, each
    block of at least ``at_least`` dates: a 2,048 px chip in blocks of 4 dates, a parcel's window in one."""
    assert _time_chunks(np.arange(8), (1,) * 8, 8, at_least=3) == (3, 3, 2)
    assert _time_chunks(np.array([0, 2, 4, 5, 6]), (2, 3), 7, at_least=3) == (4, 3)  # never inside a stored chunk
    assert _time_chunks(np.array([1, 3]), (1, 1), 4, at_least=1) == (1, 2, 1)  # dates before the first window's
    assert _time_chunks(np.empty(0, int), (0,), 0) == (0,)


def test_a_lazy_mosaics_chunks_in_space_are_the_first_windows_stored_chunks():
    """A window cut at the area's edges begins and ends with partial chunks: the mosaic kept their size for all
    its chunks (46 px chunks of a cube storing 128), each stored chunk read by several blocks. It keeps the
    window's stored chunks whole and goes on beyond them on their lattice, at their full size."""
    assert _space_chunks(5, (2, 4, 4, 1), 20) == (3, 4, 4, 4, 4, 1)
    assert _space_chunks(0, (46, 128, 128), 400) == (46, 128, 128, 98)
    assert _space_chunks(30, (50,), 100) == (30, 50, 20)


def test_stored_values_averaged_to_a_coarser_grid_are_merged_on_their_nodata():
    """``decode=False`` at 20 m of a 10 m band: float32 means, the stored nodata (0) where a 2 x 2 block holds no
    data. Merged on NaN, that 0 hid the next tile's value there; it is merged on the nodata its attrs give."""
    parts = [_window("31UFU", [0, 1], 1000, 5000, (4, 4), 1, (2, 4, 4)),
             _window("31UGU", [0, 1], 1000, 5000, (4, 4), 2, (2, 4, 4))]
    parts = [p.assign(B08=p.B08.astype("float32").assign_attrs(nodata=0)) for p in parts]
    got = mosaic(parts, [B08], whole=True).B08.values
    first, second = parts[0].B08.values, parts[1].B08.values
    np.testing.assert_array_equal(got, np.where(first != 0, first, second))
    assert (first == 0).any() and ((first == 0) & (second != 0)).any()
