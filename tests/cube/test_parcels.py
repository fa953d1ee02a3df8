"""Normalising parcel input: every input kind, reprojection checked with pyproj, clear errors."""

from __future__ import annotations

import tracemalloc
import warnings

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from geopandas.testing import assert_geodataframe_equal
from pyproj import Transformer
from shapely.geometry import LineString, Point, Polygon, box, mapping

from cardcube.errors import (
    InvalidRequestError,
    ParcelError,
    ParcelNotFoundError,
    ParcelTooSmallError,
)
from cube.parcels import ParcelSet, as_parcels, parcel_at, too_small
from tests.cube.conftest import FIELDS, UTM


def test_geodataframe_reprojected_to_the_tile_crs(register: gpd.GeoDataFrame) -> None:
    ps = as_parcels(register, crs=UTM)
    assert ps.ids == ("NL-001", "NL-002", "NL-003") and ps.crs.to_epsg() == 32631
    to_utm = Transformer.from_crs("EPSG:4326", UTM, always_xy=True)
    for pid, geom in ps:
        lon, lat = np.asarray(FIELDS[pid].exterior.coords).T
        np.testing.assert_allclose(np.asarray(geom.exterior.coords), np.column_stack(to_utm.transform(lon, lat)),
                                   atol=1e-6)
    assert 25_000 < ps.areas[0] < 35_000  # ~205 m x 156 m
    back = ps.to_crs("EPSG:4326")
    for pid, geom in back:
        np.testing.assert_allclose(np.asarray(geom.exterior.coords), np.asarray(FIELDS[pid].exterior.coords),
                                   atol=1e-9)
    assert ps.to_crs(UTM) is ps


def test_ids_from_the_index_and_a_geoseries(register: gpd.GeoDataFrame) -> None:
    by_index = register.drop(columns="parcel_id").set_index(pd.Index([10, 20, 30], name="parcel_id"))
    ps = as_parcels(by_index)
    assert ps.ids == (10, 20, 30) and type(ps.ids[0]) is int
    assert as_parcels(register.geometry, crs=UTM).ids == (0, 1, 2)


def test_a_frame_whose_ids_are_in_another_column_is_no_frame_of_row_numbers(register: gpd.GeoDataFrame) -> None:
    """A GeoDataFrame without the id column, numbered by row, was read with its row numbers as parcel ids."""
    renamed = register.rename(columns={"parcel_id": "id"})
    with pytest.raises(InvalidRequestError, match=r"no 'parcel_id' column \(columns: id, crop\) and their index is "
                                                  r"row numbers.*id_column="):
        as_parcels(renamed)
    assert as_parcels(renamed, id_column="id").ids == tuple(FIELDS)
    assert as_parcels(renamed.set_index("id")).ids == tuple(FIELDS)
    assert as_parcels(["NL-002"], registry=renamed, id_column="id").ids == ("NL-002",)
    with pytest.raises(InvalidRequestError, match="row numbers"):
        as_parcels(["NL-002"], registry=renamed)


def test_a_filtered_frame_without_its_id_column_is_refused_not_read_by_its_row_numbers(
        register: gpd.GeoDataFrame) -> None:
    """A frame without the id column filtered (``parcels[parcels.crop != "maize"]``) or sliced keeps the numbers of its
    rows in the whole (0 and 2), which were read as parcel ids without a word, where the whole frame is refused."""
    renamed = register.rename(columns={"parcel_id": "id"})
    for kept in (renamed[renamed.crop != "maize"], renamed.iloc[::2], renamed.iloc[[2, 0]]):
        assert kept.index.tolist() in ([0, 2], [2, 0])
        with pytest.raises(InvalidRequestError, match=r"no 'parcel_id' column \(columns: id, crop\) and their index "
                                                      r"is row numbers.*rename_axis\('parcel_id'\)"):
            as_parcels(kept)
        assert set(as_parcels(kept, id_column="id").ids) == {"NL-001", "NL-003"}
    named = renamed.drop(columns="id").set_axis(pd.Index([10, 20, 30]), axis=0)  # ids given as the index, unnamed
    with pytest.raises(InvalidRequestError, match="row numbers"):
        as_parcels(named)
    assert as_parcels(named.rename_axis("parcel_id")).ids == (10, 20, 30)
    assert as_parcels(named.set_axis(pd.Index(["a", "b", "c"]), axis=0)).ids == ("a", "b", "c")  # text: ids
    assert as_parcels(register.geometry[register.crop != "maize"]).ids == (0, 2)  # a GeoSeries's ids are its index


def test_a_frame_indexed_by_several_levels_is_told_to_name_its_id_column(register: gpd.GeoDataFrame) -> None:
    """A MultiIndex (a register indexed by farm and field) gave tuple ids, which became a 2-D array of ids and failed
    deep in the statistics, after the cube was read, with "'<' not supported between instances of 'int' and 'str'"."""
    levels = register.assign(farm=[7, 7, 8]).set_index(["farm", "parcel_id"])
    said = r"parcel ids are single values \(text or integers\), not tuples such as \(7, 'NL-001'\) \(row 0\)"
    with pytest.raises(InvalidRequestError, match=said + ".*id_column="):
        as_parcels(levels)
    with pytest.raises(InvalidRequestError, match="not tuples"):
        as_parcels(register.assign(parcel_id=[("a", 1), ("b", 2), ("c", 3)]))
    assert as_parcels(levels.reset_index()).ids == tuple(FIELDS)


def test_an_id_of_another_type_than_the_registered_ones_says_so(register: gpd.GeoDataFrame) -> None:
    """Parcel 1 of a register of text ids was "unknown parcel id(s) 1 (3 parcels registered)", nothing more."""
    with pytest.raises(ParcelNotFoundError, match=r"unknown parcel id\(s\) 1 \(3 parcels registered\); the registered "
                                                  r"ids are text, e.g. 'NL-001', 'NL-002', 'NL-003'"):
        as_parcels([1], registry=register)
    with pytest.raises(ParcelNotFoundError, match=r"ids are integers, e.g. 10, 20, 30"):
        as_parcels([10.5], registry=register.drop(columns="parcel_id").set_index(pd.Index([10, 20, 30], name="id")))
    with pytest.raises(ParcelNotFoundError) as same_kind:  # an unknown id of the right kind: no hint
        as_parcels(["NL-9"], registry=register)
    assert "registered ids are" not in str(same_kind.value)
    registry = as_parcels(register)  # a service's: its ids' kinds found once, the same hint at every request
    for _ in range(2):
        with pytest.raises(ParcelNotFoundError, match=r"\(3 parcels registered\); the registered ids are text"):
            registry.select([1])
        with pytest.raises(ParcelNotFoundError, match=r"^unknown parcel id\(s\) 'NL-9' \(3 parcels registered\)$"):
            registry.select(["NL-9"])


def test_geojson_kinds() -> None:
    geom = mapping(FIELDS["NL-001"])
    assert as_parcels(geom, crs=UTM).ids == (0,)
    feature = {"type": "Feature", "id": "A7", "properties": {}, "geometry": geom}
    assert as_parcels(feature).ids == ("A7",)
    fc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"parcel_id": pid}, "geometry": mapping(g)} for pid, g in FIELDS.items()]}
    ps = as_parcels(fc, crs=UTM)
    assert ps.ids == tuple(FIELDS)
    assert ps.geometry("NL-002").equals_exact(as_parcels(mapping(FIELDS["NL-002"]), crs=UTM).geometries[0], 1e-6)
    with pytest.raises(InvalidRequestError, match="Topology"):
        as_parcels({"type": "Topology"})
    with pytest.raises(InvalidRequestError, match="no parcels"):
        as_parcels({"type": "FeatureCollection", "features": []})
    with pytest.raises(InvalidRequestError, match="parcel 0: malformed GeoJSON"):  # a ring of two points
        as_parcels({"type": "Polygon", "coordinates": [[[5, 52], [5.01, 52]]]})
    with pytest.raises(InvalidRequestError, match="parcel B: malformed GeoJSON"):
        as_parcels({"type": "FeatureCollection", "features": [
            {"type": "Feature", "id": "B", "properties": {}, "geometry": {"type": "Polygon", "coordinates": 7}}]})
    with pytest.raises(InvalidRequestError, match="feature 0 is not a GeoJSON Feature"):
        as_parcels({"type": "FeatureCollection", "features": ["x"]})
    bare = mapping(FIELDS["NL-002"])  # a geometry among the features was "has an empty geometry"
    with pytest.raises(InvalidRequestError, match=r"feature 0 is a bare geometry \(Polygon\), not a Feature: wrap "
                                                  r"it as \{\"type\": \"Feature\""):
        as_parcels({"type": "FeatureCollection", "features": [bare]})
    with pytest.raises(InvalidRequestError, match=r"feature 0 is a bare geometry \(GeometryCollection\)"):
        as_parcels({"type": "FeatureCollection", "features": [{"type": "GeometryCollection", "geometries": [bare]}]})


def test_shapely_polygon_and_its_crs() -> None:
    ps = as_parcels(FIELDS["NL-003"], crs=UTM)
    utm_poly = ps.geometries[0]
    with pytest.raises(InvalidRequestError, match=r"say their CRS .*geopandas\.GeoSeries\(\[geometry\], crs=\.\.\.\), "
                                                  r"which parcel_timeseries and chip take, or as_parcels\(\.\.\., "
                                                  r"src_crs=\.\.\.\)"):
        as_parcels(utm_poly, crs=UTM)  # UTM metres are no lon/lat
    again = as_parcels(utm_poly, src_crs=UTM, crs=UTM)
    assert again.geometries[0].equals(utm_poly)
    # the way out from parcel_timeseries and chip, which take no src_crs= (the advice named it alone: a TypeError)
    series = as_parcels(gpd.GeoSeries([utm_poly], crs=UTM), crs=UTM)
    assert series.ids == (0,) and series.geometries[0].equals(utm_poly)


def test_lookup_by_id_and_point(register: gpd.GeoDataFrame) -> None:
    reg = as_parcels(register, crs=UTM)
    assert as_parcels(["NL-003", "NL-001"], registry=reg).ids == ("NL-003", "NL-001")
    assert as_parcels("NL-002", registry=register, crs=UTM).ids == ("NL-002",)
    with pytest.raises(ParcelNotFoundError, match="'NL-999'"):
        as_parcels(["NL-001", "NL-999"], registry=reg)
    with pytest.raises(InvalidRequestError, match="registered"):
        as_parcels(["NL-001"])
    # Points: lon/lat inside the L shape, in its notch (outside every parcel) and far away.
    assert parcel_at(5.4052, 52.5025, reg) == "NL-003"
    assert as_parcels(Point(5.4010, 52.5007), registry=register, crs=UTM).ids == ("NL-001",)
    with pytest.raises(ParcelNotFoundError, match=r"lon 5\.402000, lat 52\.502500"):
        parcel_at(5.4020, 52.5025, reg)
    with pytest.raises(ParcelNotFoundError, match="no registered parcel"):
        as_parcels(Point(4.0, 51.0), registry=reg)
    x, y = reg.geometry("NL-002").centroid.coords[0]
    assert parcel_at(x, y, reg, crs=UTM) == "NL-002"
    assert isinstance(ParcelNotFoundError("x"), LookupError)


def test_a_parcel_of_a_large_registry_is_selected_without_copying_the_registry() -> None:
    """The REST service looks each request's parcel up in the registry: every lookup copied the registry's table of
    ids (and went through its repaired ones), 2.7 ms a request for 249,001 parcels, growing with the territory. A
    lookup now allocates what the parcel needs, whatever the registry's size (its tables are built once)."""
    n = 100_000
    ids = tuple(f"NL-{i:06d}" for i in range(n))
    reg = ParcelSet(ids, (box(0, 0, 10, 10),) * n, UTM, repaired=ids[::2], rejected=(("NL-bad", "empty geometry"),))
    assert reg.select(["NL-000001"]).ids == ("NL-000001",)  # the first lookup builds the tables
    tracemalloc.start()
    try:
        one = reg.select(["NL-000003", "NL-000002"])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert one.ids == ("NL-000003", "NL-000002") and one.repaired == ("NL-000002",)
    assert peak < 200_000, peak  # a copy of the ids' table alone is some 5 MB
    with pytest.raises(ParcelError, match="empty geometry"):
        reg.select(["NL-bad"])


def test_invalid_geometries_are_repaired_or_reported() -> None:
    bowtie = Polygon([(5.40, 52.50), (5.41, 52.51), (5.41, 52.50), (5.40, 52.51)])
    assert not bowtie.is_valid
    ps = as_parcels({"type": "Feature", "id": "bow", "geometry": mapping(bowtie)}, crs=UTM)
    assert ps.repaired == ("bow",) and ps.geometries[0].is_valid
    assert ps.geometries[0].geom_type == "MultiPolygon"
    assert ps.geometries[0].area == pytest.approx(as_parcels(box(5.40, 52.50, 5.41, 52.51), crs=UTM).areas[0] / 2,
                                                  rel=0.01)
    with pytest.raises(ParcelError, match=r"parcel bow: invalid geometry .*Self-intersection"):
        as_parcels({"type": "Feature", "id": "bow", "geometry": mapping(bowtie)}, repair=False)
    with pytest.raises(ParcelError, match="parcel 0: is a LineString"):
        as_parcels(LineString([(5.4, 52.5), (5.5, 52.6)]))
    fc = {"type": "FeatureCollection", "features": [{"type": "Feature", "id": "e", "geometry": None}]}
    with pytest.raises(ParcelError, match="parcel e: has an empty geometry"):
        as_parcels(fc)


def test_a_collections_polygon_of_no_area_is_left_out_as_its_lines_are() -> None:
    """A GeometryCollection of a field and a polygon of no area (three points on a line: a sliver an overlay left)
    is the field, as a collection's lines and points are left out; its parts were made valid one by one since
    2026-12-05, and the part of no area left after repair refused the whole parcel."""
    field = box(5.40, 52.50, 5.41, 52.51)
    flat = Polygon([(5.42, 52.50), (5.43, 52.50), (5.44, 52.50)])
    assert not flat.is_valid and flat.area == 0
    collection = {"type": "GeometryCollection", "geometries": [mapping(field), mapping(flat)]}
    ps = as_parcels({"type": "Feature", "id": "gc", "geometry": collection})
    assert ps.geometries[0].equals(field) and ps.repaired == ("gc",)
    line = LineString([(5.4, 52.5), (5.5, 52.6)])
    alone = {"type": "GeometryCollection", "geometries": [mapping(flat), mapping(line)]}
    with pytest.raises(ParcelError, match=r"parcel gc: invalid geometry .* with no area left after repair"):
        as_parcels({"type": "Feature", "id": "gc", "geometry": alone})


def test_the_parcels_taken_as_they_are_in_bulk_are_those_polygonal_returns_unchanged() -> None:
    """A register's parcels are looked at all at once, and only those that are no valid polygon of finite
    coordinates one by one (300,000 one by one: 6 s): the bulk look must pass exactly the geometries that
    ``polygonal`` returns unchanged and unrepaired, whatever else a file holds."""
    from shapely.geometry import GeometryCollection, MultiPolygon

    from cube.parcels import _sound, polygonal

    field = box(0, 0, 10, 10)
    holed = Polygon(field.exterior.coords, [box(2, 2, 4, 4).exterior.coords])
    geoms = [field, holed, MultiPolygon([box(0, 0, 1, 1), box(2, 2, 3, 3)]),
             Polygon([(0, 0), (1, 1), (1, 0), (0, 1)]),  # a bow tie: repaired
             Polygon(), None, LineString([(0, 0), (1, 1)]), Point(1, 1), GeometryCollection([field]),
             Polygon([(0, 0), (np.nan, 1), (1, 0)]), Polygon([(0, 0), (np.inf, 1), (1, 1), (1, 0)]),
             MultiPolygon([box(0, 0, 2, 2), box(1, 1, 3, 3)])]  # overlapping parts: invalid
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # GEOS on the non-finite coordinates
        bulk = _sound(geoms)
        one_by_one = []
        for g in geoms:
            try:
                kept, repaired = polygonal("p", g, repair=True)
            except ParcelError:
                one_by_one.append(False)
            else:
                one_by_one.append(kept is g and not repaired)
    assert bulk.tolist() == one_by_one == [True, True, True] + [False] * 9


def test_buffer_too_small_names_parcel_area_and_buffer(register: gpd.GeoDataFrame) -> None:
    strip = box(5.4000, 52.5000, 5.4030, 52.50006)  # ~205 m x 6.7 m
    gdf = gpd.GeoDataFrame({"parcel_id": ["big", "strip"]}, geometry=[FIELDS["NL-001"], strip], crs=4326)
    ps = as_parcels(gdf, crs=UTM)
    with pytest.raises(ParcelTooSmallError, match=r"parcel strip: area 1\d\d\d m² leaves no pixel after an "
                                                   r"inward buffer of 5 m; a smaller buffer \(--buffer; .* "
                                                   r"or --all-touched"):
        ps.buffered(-5.0)
    assert "; --all-touched (Python and REST: all_touched=true) counts every pixel" in str(
        too_small("x", strip, buffer=0))
    given = str(too_small("x", strip, buffer=-5, all_touched=True))  # it was advised again, given already
    assert "a smaller buffer (--buffer; Python and REST: buffer=) keeps more" in given and "touched" not in given
    shrunk = ps.select(["big"]).buffered(-5.0)
    assert shrunk.areas[0] < ps.areas[0]
    assert shapely.contains(ps.geometry("big"), shrunk.geometry("big"))
    with pytest.raises(InvalidRequestError, match="projected"):
        as_parcels(gdf).buffered(-5.0)


def test_parcel_set_checks(register: gpd.GeoDataFrame) -> None:
    with pytest.raises(InvalidRequestError, match=r"1 parcel id is shared by several parcels: a \(rows 0, 2\)"):
        ParcelSet(("a", "b", "a"), tuple(FIELDS.values()), "EPSG:4326")
    from shapely.geometry import Polygon

    repeated = gpd.GeoDataFrame({"parcel_id": ["a", "b", "a"]}, crs="EPSG:4326",
                                geometry=[*list(FIELDS.values())[:2], Polygon()])  # the repeat has no polygon
    for errors in ("raise", "collect"):  # it said "parcel a: has an empty geometry" of a's good polygon
        with pytest.raises(InvalidRequestError, match=r"shared by several parcels: a \(rows 0, 2\)"):
            as_parcels(repeated, errors=errors)
    with pytest.raises(InvalidRequestError, match="no CRS"):
        as_parcels(gpd.GeoDataFrame(geometry=list(FIELDS.values())))
    with pytest.raises(InvalidRequestError, match="cannot read parcels from a float"):
        as_parcels(1.5)
    with pytest.raises(InvalidRequestError, match=r"from a Series: one row of a frame \(parcels.iloc\[0\]\) is "
                                                  r"a Series of its fields; select rows with a list, "
                                                  r"parcels.iloc\[\[0\]\]"):
        as_parcels(register.iloc[0])
    assert as_parcels(register.iloc[[0]]).ids == ("NL-001",)
    gdf = as_parcels(register, crs=UTM).to_geodataframe()
    assert list(gdf.parcel_id) == list(FIELDS) and gdf.crs.to_epsg() == 32631
    assert "NL-001" in as_parcels(register) and "NL-9" not in as_parcels(register)


def test_a_column_index_or_array_of_ids_is_ids(register: gpd.GeoDataFrame) -> None:
    """parcels.parcel_id.head() was refused as "one row of a frame", its .values (an ArrowStringArray under
    pandas 3) as no parcels at all, and an empty list of ids was an IndexError."""
    column = register.parcel_id.iloc[[2, 0]]
    for ids in (column, column.values, column.array, pd.Index(column)):
        assert as_parcels(ids, registry=register).ids == ("NL-003", "NL-001"), type(ids)
    numbered = register.assign(parcel_id=[11, 12, 13])
    assert as_parcels(numbered.parcel_id.iloc[1:], registry=numbered).ids == (12, 13)
    with pytest.raises(InvalidRequestError, match="from a Series: one row of a frame"):
        as_parcels(register.iloc[0], registry=register)  # a row still says so
    for none in ([], register.parcel_id.iloc[:0]):
        with pytest.raises(InvalidRequestError, match="no parcel ids given"):
            as_parcels(none, registry=register)


def test_a_path_is_a_parcel_file_and_a_string_an_id(tiny_region):
    from pathlib import Path

    from cardcube.errors import ParcelFileError

    ps = as_parcels(Path(tiny_region.parcels))
    assert len(ps) == len(gpd.read_parquet(tiny_region.parcels))
    with pytest.raises(ParcelFileError, match="no parcel file"):
        as_parcels(Path(tiny_region.parcels).with_name("missing.parquet"))
    for given in (str(tiny_region.parcels), (5.1, 52.5)):  # a file name, a lon/lat pair: no ids, so say what is
        with pytest.raises(InvalidRequestError, match=r"a str is taken as a parcel id .*: pass a pathlib.Path for a "
                           r"parcel file, a shapely Point for a location"):
            as_parcels(given)


@pytest.mark.s3
def test_a_parcel_file_is_read_from_s3_or_http_as_from_a_path(register: gpd.GeoDataFrame, s3_bucket, tmp_path):
    """A GeoParquet and a GeoPackage in a bucket (the endpoint and keys as storage options, as the cube takes
    them), and the GeoPackage through a pre-signed HTTP URL, read as the same files from a folder; a missing object
    or bucket, and a file of two layers, are named by their URL."""
    from cardcube.errors import ParcelFileError
    from cube.parcels import read_parcels

    register.to_parquet(tmp_path / "parcels.parquet")
    register.to_file(tmp_path / "parcels.gpkg", layer="parcels_2024")
    register.to_file(tmp_path / "years.gpkg", layer="parcels_2024")
    register.iloc[:1].to_file(tmp_path / "years.gpkg", layer="parcels_2025")
    client = s3_bucket.server.client()
    for name in ("parcels.parquet", "parcels.gpkg", "years.gpkg"):
        client.upload_file(str(tmp_path / name), s3_bucket.name, f"lpis/{name}")
    options = s3_bucket.storage_options()
    for name in ("parcels.parquet", "parcels.gpkg"):
        got = read_parcels(s3_bucket.url_for(f"lpis/{name}"), storage_options=options)
        assert_geodataframe_equal(got, read_parcels(tmp_path / name))
    signed = client.generate_presigned_url("get_object", Params={"Bucket": s3_bucket.name, "Key": "lpis/parcels.gpkg"})
    assert_geodataframe_equal(read_parcels(signed), read_parcels(tmp_path / "parcels.gpkg"))
    assert read_parcels(s3_bucket.url_for("lpis/years.gpkg"), layer="parcels_2025", storage_options=options
                        ).parcel_id.tolist() == ["NL-001"]

    missing = s3_bucket.url_for("lpis/parcels-2023.gpkg")
    with pytest.raises(ParcelFileError, match=f"^no parcel file at {missing}$"):
        read_parcels(missing, storage_options=options)
    with pytest.raises(ParcelFileError, match=f"^no parcel file at s3://{s3_bucket.name}-gone/parcels.gpkg: the bucket "
                                              f"{s3_bucket.name}-gone does not exist"):
        read_parcels(f"s3://{s3_bucket.name}-gone/parcels.gpkg", storage_options=options)
    with pytest.raises(ParcelFileError, match=f"^{s3_bucket.url_for('lpis/years.gpkg')} holds 2 layers"):
        read_parcels(s3_bucket.url_for("lpis/years.gpkg"), storage_options=options)
    with pytest.raises(ParcelFileError, match="is GeoParquet, of one layer: --layer parcels_2025"):  # was ignored
        read_parcels(tmp_path / "parcels.parquet", layer="parcels_2025")


def test_a_registry_given_as_text_says_so(register: gpd.GeoDataFrame, tmp_path) -> None:
    """``registry="parcels.gpkg"`` was read as parcel ids, and the error said no registry was given."""
    path = tmp_path / "parcels.gpkg"
    register.to_file(path)
    for registry in (str(path), "s3://lpis/parcels.gpkg"):
        with pytest.raises(InvalidRequestError, match=rf"registry='{registry}' is text: give the registered parcels "
                                                      r"as a GeoDataFrame or ParcelSet \(cube.parcels.read_parcels"):
            as_parcels(["NL-002"], registry=registry)
    assert as_parcels(["NL-002"], registry=path).ids == ("NL-002",)  # a Path is a parcel file


@pytest.mark.s3
def test_a_shapefile_is_read_from_s3_with_the_files_beside_it(register: gpd.GeoDataFrame, s3_bucket, tmp_path):
    """A shapefile in a bucket was copied without its .shx, .dbf and .prj: "not a readable parcel file: Unable to
    open /tmp/cardcube-.../parcels.shx ... Set SHAPE_RESTORE_SHX config option". They are copied beside it and it
    is read as from a folder; a .shp without them (uploaded alone, or through a pre-signed URL, which names one
    object) is told what it lacks and how to give it, as is a local one."""
    import os

    from cardcube.errors import ParcelFileError
    from cube.parcels import read_parcels

    folder = tmp_path / "lpis"
    folder.mkdir()
    register.to_crs(UTM).to_file(folder / "parcels.shp")
    client = s3_bucket.server.client()
    for part in sorted(os.listdir(folder)):
        client.upload_file(str(folder / part), s3_bucket.name, f"lpis/{part}")
        client.upload_file(str(folder / part), s3_bucket.name, f"LPIS/{part.replace('parcels.', 'PARCELS.').upper()}")
    client.upload_file(str(folder / "parcels.shp"), s3_bucket.name, "alone/parcels.shp")
    options = s3_bucket.storage_options()
    local = read_parcels(folder / "parcels.shp")
    assert local.crs == UTM and local.parcel_id.tolist() == list(FIELDS)
    for key in ("lpis/parcels.shp", "LPIS/PARCELS.SHP"):
        assert_geodataframe_equal(read_parcels(s3_bucket.url_for(key), storage_options=options), local)

    alone = s3_bucket.url_for("alone/parcels.shp")
    signed = client.generate_presigned_url("get_object", Params={"Bucket": s3_bucket.name, "Key": "lpis/parcels.shp"})
    for url, given in ((alone, options), (signed, None)):
        with pytest.raises(ParcelFileError, match=r"is a shapefile without its \.shx and \.dbf: .* the parts zipped "
                                                  r"\(\.shp\.zip\), a GeoPackage or GeoParquet$") as caught:
            read_parcels(url, storage_options=given)
        assert str(caught.value).startswith(url) and "/tmp" not in str(caught.value)
    os.remove(folder / "parcels.dbf")
    with pytest.raises(ParcelFileError, match=rf"^{folder / 'parcels.shp'} is a shapefile without its \.dbf: "):
        read_parcels(folder / "parcels.shp")


def test_a_geojson_dict_is_read_in_the_crs_its_member_names(register: gpd.GeoDataFrame) -> None:
    """A FeatureCollection of national coordinates with its crs member (json.load of a file QGIS wrote) was read as
    lon/lat: "parcel coordinates ... are not lon/lat". The member is read, as GDAL reads it from the file; a
    src_crs other than it is refused."""
    import json

    collection = json.loads(register.to_crs("EPSG:28992").to_json())
    collection["crs"] = {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::28992"}}
    want = as_parcels(register, crs=UTM)
    for given in (None, "EPSG:28992"):
        got = as_parcels(collection, crs=UTM, src_crs=given)
        assert got.ids == want.ids
        for a, b in zip(got.geometries, want.geometries, strict=True):
            assert a.equals_exact(b, 0.01)  # within a centimetre: through RD New and back
    with pytest.raises(InvalidRequestError, match=r"^the GeoJSON's crs member says urn:ogc:def:crs:EPSG::28992, and "
                                                  r"its CRS is given as EPSG:2154: which one"):
        as_parcels(collection, src_crs="EPSG:2154")
    collection["crs"] = {"type": "EPSG", "properties": {"code": 28992}}  # the 2008 draft's other form, not read
    with pytest.raises(InvalidRequestError, match=r"crs member .* names no CRS known here: write it as"):
        as_parcels(collection)


def test_a_shapefile_at_a_url_answering_403_for_a_missing_part_is_read(register: gpd.GeoDataFrame, tmp_path):
    """S3 answers a missing key with 403 to a client that may not list the bucket (a public bucket over https, keys
    that may only get objects): a shapefile without the optional .cpg failed with aiohttp's "403, message='File not
    found', url='.../parcels.cpg'", though its .shx, .dbf and .prj were there. A part answered so is one that is not
    there: the shapefile is read, and one without its .dbf is told so."""
    import functools
    import http.server
    import os
    import threading

    from cardcube.errors import ParcelFileError
    from cube.parcels import read_parcels

    class AsS3(http.server.SimpleHTTPRequestHandler):
        def send_error(self, code, message=None, explain=None):  # a missing object: 403 AccessDenied
            super().send_error(403 if code == 404 else code, message, explain)

        def log_message(self, *args):
            pass

    folder = tmp_path / "lpis"
    folder.mkdir()
    register.to_crs(UTM).to_file(folder / "parcels.shp")
    for part in folder.glob("parcels.cpg"):
        os.remove(part)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(AsS3, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/parcels.shp"
        assert_geodataframe_equal(read_parcels(url), read_parcels(folder / "parcels.shp"))
        os.remove(folder / "parcels.dbf")
        with pytest.raises(ParcelFileError, match=rf"^{url} is a shapefile without its \.dbf: "):
            read_parcels(url)
    finally:
        server.shutdown()
        server.server_close()


def test_a_parcel_file_at_a_url_the_server_refuses_says_so_without_its_signature(register: gpd.GeoDataFrame, tmp_path):
    """A pre-signed URL of the parcel file whose signature expired is answered 403: the read failed with aiohttp's
    own error, the URL's signature (a credential) in it. It is a store error naming the URL without its query and
    what to do; a missing file (404) is no parcel file there, its signature hidden too."""
    import http.server
    import threading

    from cardcube.errors import ParcelFileError, StoreError
    from cube.parcels import read_parcels

    class Expired(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # S3's answer to an expired pre-signed URL
            status = 404 if "missing" in self.path else 403
            body = b"<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>"
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Expired)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        at = f"http://127.0.0.1:{server.server_port}/lpis"
        with pytest.raises(StoreError) as refused:
            read_parcels(f"{at}/parcels.gpkg?X-Amz-Expires=60&X-Amz-Signature=0123abcd")
        assert str(refused.value) == (f"cannot read {at}/parcels.gpkg?<signature hidden>: the server answered 403 "
                                      "Forbidden: the URL's signature may have expired (a pre-signed URL lasts a "
                                      "limited time): sign it again")
        with pytest.raises(StoreError, match=r"403 Forbidden: it is not allowed to be read so"):
            read_parcels(f"{at}/parcels.gpkg")
        with pytest.raises(ParcelFileError) as missing:
            read_parcels(f"{at}/missing.gpkg?X-Amz-Signature=0123abcd")
        assert str(missing.value) == f"no parcel file at {at}/missing.gpkg?<signature hidden>"
    finally:
        server.shutdown()
        server.server_close()
