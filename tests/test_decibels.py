"""The dB <-> linear power conversion against numpy's plain formulas, edge values included."""

from __future__ import annotations

import numpy as np
import pytest

from cardcube.decibels import db_to_linear, linear_to_db

EDGES = [0.0, -0.0, -1.0, -np.inf, np.inf, np.nan, 1e-300, 5e-324, 1.0, 0.01, 1e30]


def test_db_to_linear_is_ten_to_the_tenth_of_db() -> None:
    db = np.array([-np.inf, -400.0, -35.5, -1.0, 0.0, 3.0, 12.25, 300.0, np.inf, np.nan])
    got = db_to_linear(db)
    assert got.dtype == np.float64
    # exp(dB ln(10) / 10): the rounding of ln(10) / 10 grows with |dB|, a few ulps over backscatter's range
    np.testing.assert_allclose(got, 10 ** (db / 10), rtol=1e-13)  # -inf -> 0, inf -> inf, NaN -> NaN
    assert got[0] == 0.0 and got[-2] == np.inf and np.isnan(got[-1])


def test_linear_to_db_is_ten_log10_with_numpys_rule_for_powers_without_db() -> None:
    power = np.array(EDGES)
    with np.errstate(divide="ignore", invalid="ignore"):
        want = 10 * np.log10(power)
    got = linear_to_db(power)
    np.testing.assert_array_equal(got, want)
    assert got[0] == got[1] == -np.inf and np.isnan(got[2]) and np.isnan(got[3]) and got[4] == np.inf


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int16])
def test_both_ways_work_in_float64_and_invert_each_other(dtype) -> None:
    db = np.arange(-40, 20, 3).astype(dtype)
    assert db_to_linear(db).dtype == linear_to_db(db_to_linear(db)).dtype == np.float64
    np.testing.assert_allclose(linear_to_db(db_to_linear(db)), db.astype(np.float64), rtol=1e-12, atol=1e-12)


def test_scalars_and_lists_convert_without_warnings() -> None:
    with np.errstate(all="raise"):
        assert linear_to_db(0.0) == -np.inf and np.isnan(linear_to_db(-2.0))
        assert linear_to_db([100.0]).tolist() == [20.0] and db_to_linear(10.0) == pytest.approx(10.0, rel=1e-15)
