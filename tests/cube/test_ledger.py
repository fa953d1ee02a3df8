"""The ledger's records as the arrays readers and writers use."""

from __future__ import annotations

import numpy as np

from cube.ledger import Acquisition, acquisition_columns


def test_acquisition_columns_type_each_field_as_the_coordinate_arrays_store_it():
    acqs = [Acquisition("2024-05-01T10:50:31Z", "S2A_1", "sentinel-2a", 8, "descending", 12.5),
            Acquisition("2024-05-03T10:40:29Z", "S2B_2", "sentinel-2b", 51, "descending")]
    columns = acquisition_columns(acqs)
    assert columns["time"].dtype == np.dtype("datetime64[ns]")
    assert columns["time"][0] == np.datetime64("2024-05-01T10:50:31", "ns")
    assert columns["relative_orbit"].dtype == np.int16 and columns["relative_orbit"].tolist() == [8, 51]
    assert columns["cloud_cover"].dtype == np.float32
    assert columns["cloud_cover"][0] == np.float32(12.5) and np.isnan(columns["cloud_cover"][1])  # unknown: NaN
    assert columns["scene_id"].tolist() == ["S2A_1", "S2B_2"]
    assert all(len(v) == 0 for v in acquisition_columns([]).values())

