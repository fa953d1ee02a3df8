"""Statistics rows regrouped by batches of whole parcels: from memory and spilled to a folder, the same rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cube.curve_file import CurveFile
from cube.parcel_batches import FrameBatches, spill


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


def test_a_batch_holds_every_row_of_its_parcels_and_batches_come_in_id_order(rows, tmp_path):
    ids = pd.Index([f"p{i:02d}" for i in range(20)][::-1]).sort_values()  # p20..p22 are not among them
    parts = [rows.iloc[:70], rows.iloc[70:]]
    observed = []
    spilled = spill(iter(parts), ids, 7, tmp_path, observe=observed.append)
    assert [len(p) for p in observed] == [70, len(rows) - 70]  # every row seen, those of p20..p22 too
    in_memory = FrameBatches(rows, ids, 7)
    assert len(spilled) == len(in_memory) == 3
    for k in range(3):
        batch = spilled[k]
        assert list(pd.unique(batch.parcel_id.sort_values())) == list(ids[7 * k:7 * (k + 1)])
        key = ["parcel_id", "time"]
        expected = rows[rows.parcel_id.isin(ids[7 * k:7 * (k + 1)])].sort_values(key, ignore_index=True)
        pd.testing.assert_frame_equal(batch.sort_values(key, ignore_index=True), expected, check_exact=True)
        pd.testing.assert_frame_equal(in_memory[k].sort_values(key, ignore_index=True), expected, check_exact=True)
    assert len(list(tmp_path.glob("*.arrow"))) == 2  # a file per part, a record batch per batch in it
    nothing = spill(iter([rows.iloc[:0]]), ids, 7, tmp_path / "empty")
    assert len(nothing) == 3 and nothing[0].empty and list(nothing[0].columns) == list(rows.columns)


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
