"""Statistics rows regrouped by batches of whole parcels: from memory and spilled to a folder, the same rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cube.curve_file import CurveArray, CurveFile, curve_table
from cube.parcel_batches import FrameBatches, ParcelBatches, spill


@pytest.fixture()
def rows() -> pd.DataFrame:
    """Twenty-three parcels (three of them not declared), each with its dates in two parts, as an extraction's
    files of two runs of dates hold them."""
    rng = np.random.default_rng(5)
    ids = [f"p{i:02d}" for i in range(23)]
    times = pd.date_range("2024-05-01", periods=6, freq="5D")
    frame = pd.DataFrame({"parcel_id": np.repeat(ids, times.size), "time": np.tile(times, len(ids)),
                          "band": "B04", "mean": rng.random(len(ids) * times.size)})
    return frame.sample(frac=1, random_state=1, ignore_index=True)  # parcels in no order


def test_a_batch_holds_every_row_of_its_parcels_and_batches_come_as_the_rows_show_the_parcels(rows, tmp_path):
    ids = pd.Index([f"p{i:02d}" for i in range(20)][::-1]).sort_values()  # p20..p22 are not among them
    parts = [rows.iloc[:70], rows.iloc[70:]]
    observed = []
    spilled = spill(iter(parts), ParcelBatches(ids, 7), tmp_path, observe=observed.append)
    assert [len(p) for p in observed] == [70, len(rows) - 70]  # every row seen, those of p20..p22 too
    in_memory = FrameBatches(rows, ParcelBatches(ids, 7))
    assert len(spilled) == len(in_memory) == 3
    shown = pd.unique(rows.parcel_id[rows.parcel_id.isin(ids)])  # the declared parcels as the rows first show them
    for k in range(3):
        mine = shown[7 * k:7 * (k + 1)]
        key = ["parcel_id", "time"]
        expected = rows[rows.parcel_id.isin(mine)].sort_values(key, ignore_index=True)
        assert set(spilled[k].parcel_id) == set(in_memory[k].parcel_id) == set(mine)
        pd.testing.assert_frame_equal(spilled[k].sort_values(key, ignore_index=True), expected, check_exact=True)
        pd.testing.assert_frame_equal(in_memory[k].sort_values(key, ignore_index=True), expected, check_exact=True)
    assert len(list(tmp_path.glob("*.arrow"))) == 2  # a file per part, a record batch per batch in it
    nothing = spill(iter([rows.iloc[:0]]), ParcelBatches(ids, 7), tmp_path / "empty")
    assert len(nothing) == 0 and nothing[0].empty and list(nothing[0].columns) == list(rows.columns)


def test_other_statistics_follow_the_batches_the_first_placed_their_parcels_in(rows, tmp_path):
    """Sentinel-1 rows are judged with the Sentinel-2 rows of the same parcels: the same batches, whatever order
    their own files show the parcels in; rows of parcels the first statistics did not show are left out."""
    ids = pd.Index([f"p{i:02d}" for i in range(23)])
    batches = ParcelBatches(ids, 4)
    first = spill(iter([rows[rows.parcel_id < "p15"]]), batches, tmp_path / "s2")
    other = spill(iter([rows.iloc[::-1]]), batches, tmp_path / "s1", place=False)
    assert len(first) == len(other) == 4  # 15 parcels placed
    for k in range(4):
        assert set(other[k].parcel_id) == set(first[k].parcel_id)
    assert batches.placed == 15


def test_a_file_of_a_block_of_parcels_is_cut_into_pieces_for_a_few_batches_whatever_their_ids(tmp_path):
    """An extraction's file holds a block's parcels (some of their dates); a register's ids follow no spatial
    order. Batches of consecutive sorted ids had rows in every file: each of the 40 files here was cut into a piece
    for each of the 15 batches, and reading a batch back opened 40 pieces (300,000 parcels: 1.8 M pieces, some 15
    minutes). Placed as the files show them, a batch's parcels lie in one or two blocks: a batch is read from the
    pieces of those blocks' files, however many files the territory has."""
    rng = np.random.default_rng(3)
    blocks, runs, per_block, size = 10, 4, 10, 7
    names = rng.permutation(blocks * per_block)  # ids in no spatial order
    ids = pd.Index([f"p{n:03d}" for n in names]).sort_values()

    def parts():
        for block in range(blocks):
            parcels = [f"p{n:03d}" for n in names[block * per_block:(block + 1) * per_block]]
            for run in range(runs):  # a file per block and run of dates
                times = pd.date_range("2024-04-01", periods=3, freq="5D") + pd.Timedelta(days=15 * run)
                yield pd.DataFrame({"parcel_id": np.repeat(sorted(parcels), times.size),
                                    "time": np.tile(times, per_block), "band": "B04", "mean": 0.5})

    spilled = spill(parts(), ParcelBatches(ids, size), tmp_path)
    assert len(spilled) == -(-blocks * per_block // size) == 15
    pieces = [len(spilled.pieces[k]) for k in range(len(spilled))]
    assert max(pieces) <= 2 * runs  # one or two blocks' files, not all 40
    assert sum(pieces) <= blocks * runs * (-(-per_block // size) + 1)  # a file is cut for the batches of a block
    for k in range(len(spilled)):
        assert len(spilled[k]) == spilled[k].parcel_id.nunique() * 3 * runs  # every date of its parcels


def test_profiles_on_disk_read_back_by_rows_and_by_columns(tmp_path):
    table = np.random.default_rng(2).random((11, 5))
    table[3] = np.nan
    with CurveFile(tmp_path / "curves", 11, 5) as curves:
        assert np.isnan(curves.read_rows(0, 11)).all()  # NaN until written
        curves.write(0, table[:4])
        curves.write(4, table[4:])
        np.testing.assert_array_equal(curves.read_rows(0, 11), table)
        np.testing.assert_array_equal(curves.read_rows(2, 9), table[2:9])
        np.testing.assert_array_equal(curves.read_columns(1, 4), table[:, 1:4])
        assert curves.read_rows(2, 9).flags.c_contiguous and curves.read_columns(1, 4).flags.c_contiguous


def test_profiles_written_in_one_order_are_put_in_another_on_disk_and_in_memory(tmp_path):
    table = np.random.default_rng(4).random((9, 4))
    table[2] = np.nan
    place = np.random.default_rng(5).permutation(9)  # row i goes to row place[i]
    read = []
    for on_disk in (True, False):
        with curve_table(9, 4, on_disk=on_disk) as curves:
            assert isinstance(curves, CurveFile if on_disk else CurveArray)
            curves.write(0, table[:5])
            curves.write(5, table[5:])
            curves.reorder(place)
            np.testing.assert_array_equal(curves.read_rows(0, 9)[place], table)
            np.testing.assert_array_equal(curves.read_columns(0, 4), curves.read_rows(0, 9))
            read.append((curves.read_rows(2, 7), curves.read_columns(1, 3)))
    for on_disk, in_memory in zip(*read, strict=True):
        np.testing.assert_array_equal(on_disk, in_memory)
        assert in_memory.flags.c_contiguous and on_disk.flags.c_contiguous
