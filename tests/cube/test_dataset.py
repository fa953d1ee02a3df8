"""``open_cube``: the bands a caller names are read as every other read-side function reads them."""

from __future__ import annotations

import pytest

from cardcube.errors import InvalidRequestError
from cube.dataset import open_cube
from cube.indices import check_bands


def test_open_cube_takes_band_names_in_any_case(tiny_cube):
    assert list(open_cube(tiny_cube, bands=["b04", "scl"]).data_vars) == ["B04", "SCL"]
    assert list(open_cube(tiny_cube, "s1", bands="vv, VH").data_vars) == ["VV", "VH"]  # one string is a list
    with pytest.raises(InvalidRequestError, match=r"NDVI: an index, not a stored band.*cardcube.indices\('NDVI'\)"):
        open_cube(tiny_cube, bands=["ndvi"])
    with pytest.raises(InvalidRequestError, match="no band given"):
        open_cube(tiny_cube, bands=[])


def test_a_band_of_the_other_collection_names_it():
    from cardcube.spec import CUBE_SPECS

    with pytest.raises(InvalidRequestError, match="VV is a band of the s1 cube: add --collection s1"):
        check_bands("VV", CUBE_SPECS["s2"].band_names)
    with pytest.raises(InvalidRequestError, match="NDVI is an index of the s2 cube: add --collection s2"):
        check_bands("ndvi", CUBE_SPECS["s1"].band_names)
    with pytest.raises(InvalidRequestError) as refused:  # a Dataset of some S2 bands lacks B08: no other cube
        check_bands("B08", ["B04", "B03", "B02"])
    assert "--collection" not in str(refused.value)
