"""Parcel ids: each parcel one of its own, of one kind; missing, shared, geometries as ids, integers beyond 64 bits and
reals beyond 2**53 refused, naming their rows."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from shapely.geometry import box, mapping

from cardcube.errors import InvalidRequestError
from cube.parcels import ParcelSet, as_parcels
from tests.cube.conftest import FIELDS, UTM


def test_the_geometry_named_for_the_id_column_is_refused(register: gpd.GeoDataFrame, tmp_path) -> None:
    """``--id-column geometry`` took the outlines for the ids and ended ``cardcube extract`` with pyarrow's traceback
    ("Could not convert <POLYGON ...> ... Conversion failed for column parcel_id"), its manifest in --out."""
    from cube.parcels import read_parcels

    register.to_parquet(tmp_path / "register.parquet")
    with pytest.raises(InvalidRequestError, match=r"^parcel ids are single values \(text or integers\), not "
                                                  r"geometries such as Polygon \(row 0\): the id column named is the "
                                                  r"parcels' geometry; name the column of their ids \(--id-column"):
        as_parcels(read_parcels(tmp_path / "register.parquet", id_column="geometry"), id_column="geometry")


def test_ids_of_integers_and_text_mixed_become_text(register: gpd.GeoDataFrame) -> None:
    """Two registers joined (1, 2 and "NL-003"): the ids are text, as GeoJSON's are, and stay unique; they were
    kept mixed, and Arrow refused them deep inside an extraction (ArrowInvalid: could not convert 'NL-003')."""
    mixed = register.assign(parcel_id=pd.Series([1, 2, "NL-003"], dtype=object).values)
    assert as_parcels(mixed).ids == ("1", "2", "NL-003")
    with pytest.raises(InvalidRequestError, match=r"parcel id is shared by several parcels: 2 \(rows 1, 2\)"):
        as_parcels(register.assign(parcel_id=pd.Series([1, 2, "2"], dtype=object).values))


def test_duplicate_ids_are_counted_and_say_what_to_do() -> None:
    """Of a register with many shared ids, the message counts them all, names a few and says what to do."""
    polygon = next(iter(FIELDS.values()))
    ids = [f"p{i % 12}" for i in range(24)]
    with pytest.raises(InvalidRequestError) as caught:
        ParcelSet(tuple(ids), (polygon,) * 24, "EPSG:4326")
    message = str(caught.value)
    assert message.startswith("12 parcel ids are shared by several parcels: p0 (rows 0, 12), p1 (rows 1, 13)")
    assert "p9 (rows 9, 21) ..." in message and "p10" not in message
    assert "give each parcel its own id, or name the id column with --id-column" in message


def test_ids_read_as_floats_beyond_two_to_the_53_are_refused(register: gpd.GeoDataFrame, tmp_path) -> None:
    """A shapefile reads integers of more than 18 digits as reals (a spreadsheet's export stores every number so):
    ids beyond 2**53 lost their last digits, 1152921504606846977 read as 1152921504606846976, and every statistic
    went out under an id of no parcel, without a word. Such ids are refused, saying how to keep them; whole numbers
    within 2**53 stored as reals are exact, and read as before."""
    from cube.parcels import read_parcels

    big = register.to_crs(UTM).assign(parcel_id=[1152921504606846977, 1152921504606850001, 1152921504606860003])
    big.to_file(tmp_path / "big.shp")
    frame = read_parcels(tmp_path / "big.shp")
    assert frame.parcel_id.dtype == "float64"  # GDAL's reading, not cardcube's
    with pytest.raises(InvalidRequestError, match=r"^3 parcel id\(s\) are floating-point numbers beyond 2\*\*53, e.g. "
                                                  r"1.152921504606847e\+18 \(row 0\), .* store them as text, or in a "
                                                  r"GeoPackage or GeoParquet as integers$"):
        as_parcels(frame)
    big.to_file(tmp_path / "big.gpkg")
    assert as_parcels(read_parcels(tmp_path / "big.gpkg")).ids == tuple(big.parcel_id)
    exact = register.assign(parcel_id=[1.0, 2.0, float(2**53)])
    assert as_parcels(exact).ids == (1.0, 2.0, float(2**53))


def test_integer_ids_beyond_64_bits_are_refused_before_anything_is_written(register: gpd.GeoDataFrame,
                                                                             tmp_path) -> None:
    """A GeoParquet of unsigned 64-bit ids (a 64-bit hash of the parcel's key) above 2**63 passed for parcels, and
    ``cardcube extract`` failed with pyarrow's traceback ("OverflowError: Python int too large to convert to C long")
    writing the label layer, its manifest already in --out. Refused as the parcels are read now, as a GeoJSON
    Feature's id beyond 64 bits is; those within signed 64 bits are read as before."""
    from cube.parcels import read_parcels

    hashed = register.assign(parcel_id=np.array([2**63 + 5, 2**64 - 1, 7], dtype=np.uint64))
    hashed.to_parquet(tmp_path / "hashed.parquet")
    with pytest.raises(InvalidRequestError, match=r"^2 parcel id\(s\) are integers beyond 64 bits \(signed\), e.g. "
                                                  r"9223372036854775813 \(row 0\), .*store them as text$"):
        as_parcels(read_parcels(tmp_path / "hashed.parquet"))
    with pytest.raises(InvalidRequestError, match=r"^1 parcel id\(s\) are integers beyond 64 bits"):
        ParcelSet((-(2**63) - 1, 1.5, 3), (box(0, 0, 1, 1),) * 3, UTM)  # of mixed kinds, checked one by one
    within = register.assign(parcel_id=np.array([2**63 - 1, 0, 7], dtype=np.uint64))
    assert as_parcels(within).ids == (2**63 - 1, 0, 7)
    assert as_parcels(register.assign(parcel_id=[-(2**63), 0, 1])).ids == (-(2**63), 0, 1)


def test_a_blank_id_is_no_id(register: gpd.GeoDataFrame, tmp_path) -> None:
    """A GeoPackage's or GeoParquet's blank id ("", spaces) passed for an id, where a shapefile's reads as none: the
    parcel's rows went out under an id a CSV reads back as missing and no command line can name. Refused as the
    missing id it is, naming its row."""
    from cube.parcels import read_parcels

    blank = register.assign(parcel_id=["NL-001", "", "  "])
    for name in ("blank.gpkg", "blank.parquet", "blank.shp"):
        path = tmp_path / name
        blank.to_parquet(path) if name.endswith(".parquet") else blank.to_crs(UTM).to_file(path)
        with pytest.raises(InvalidRequestError, match=r"^2 parcel\(s\) have no id \(row\(s\) 1, 2\): every parcel "
                                                      r"needs one$"):
            as_parcels(read_parcels(path))
    with pytest.raises(InvalidRequestError, match=r"^1 parcel\(s\) have no id \(row\(s\) 0\)"):
        as_parcels({"type": "Feature", "properties": {"parcel_id": " "}, "geometry": mapping(FIELDS["NL-001"])})
