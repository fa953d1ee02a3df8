"""Reading a parcel file (GeoParquet, GeoPackage, GeoJSON, shapefile): its format, layer, ids, encoding and CRS, and
the file named in each refusal."""

from __future__ import annotations

import warnings

import geopandas as gpd
import pandas as pd
import pytest
from geopandas.testing import assert_geodataframe_equal
from shapely.geometry import Polygon

from cardcube.errors import InvalidRequestError, ParcelFileError
from cube.parcels import as_parcels
from tests.cube.conftest import FIELDS, UTM


def test_an_empty_parcel_file_is_named(register: gpd.GeoDataFrame, tmp_path) -> None:
    """It was "no parcels given", naming no file."""
    from cardcube.errors import ParcelFileError
    from cube.parcels import read_parcels

    for name in ("empty.gpkg", "empty.parquet"):
        path = tmp_path / name
        register.iloc[:0].to_parquet(path) if name.endswith(".parquet") else register.iloc[:0].to_file(path)
        with pytest.raises(ParcelFileError, match=rf"{path} holds no parcel$"):
            read_parcels(path)


def test_a_parcel_file_with_an_empty_geometry_is_read_without_a_warning(register: gpd.GeoDataFrame, tmp_path) -> None:
    """Reading it printed geopandas' 5-line UserWarning that GeoSeries.notna() changed meaning (on `cardcube serve`'s
    start-up, `timeseries`, `extract`): the empty and the missing geometry are told apart without it now, and the
    parcel stops only itself, as before."""
    from cube.parcels import read_parcels

    frame = register.iloc[:3].copy()
    frame.loc[frame.index[1], "geometry"] = Polygon()
    frame.loc[frame.index[2], "geometry"] = None
    frame.to_parquet(tmp_path / "holes.parquet")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read = read_parcels(tmp_path / "holes.parquet")
    assert len(read) == 3


def test_a_parcel_file_without_a_crs_is_named(register: gpd.GeoDataFrame, tmp_path) -> None:
    """A file whose coordinates say no CRS (a shapefile without its .prj) was refused later as "the parcels have no
    CRS; set one with GeoDataFrame.set_crs", naming no file: no help to a user of the command line."""
    from cardcube.errors import ParcelFileError
    from cube.parcels import read_parcels

    bare = register.to_crs(UTM).set_crs(None, allow_override=True)
    for name in ("parcels.gpkg", "parcels.parquet", "parcels.shp"):
        path = tmp_path / name
        bare.to_parquet(path) if name.endswith(".parquet") else bare.to_file(path)
        with pytest.raises(ParcelFileError, match=rf"{path} has no CRS: .*\(ogr2ogr -a_srs EPSG:<code>"):
            read_parcels(path)
    register.to_file(tmp_path / "with.gpkg")
    assert read_parcels(tmp_path / "with.gpkg").crs == register.crs


def test_a_geojson_file_of_feature_ids_is_read_by_them(register: gpd.GeoDataFrame, tmp_path) -> None:
    """A GeoJSON file whose Features carry integer ids (RFC 7946) had "no 'parcel_id' column": GDAL takes such ids
    for its feature ids, which a read leaves out. They are the parcels' ids, as for the same FeatureCollection given
    in Python or posted; a file whose features lack some id is still refused, naming the column."""
    import json

    from cardcube.errors import ParcelFileError
    from cube.parcels import read_parcels

    collection = json.loads(register[["geometry"]].iloc[:3].to_crs(4326).to_json())
    for i, feature in enumerate(collection["features"]):
        feature["id"], feature["properties"] = 100 + i, {}
    path = tmp_path / "ids.geojson"
    path.write_text(json.dumps(collection))
    for column in ("parcel_id", "id"):
        assert read_parcels(path, id_column=column)[column].tolist() == [100, 101, 102]
    assert as_parcels(read_parcels(path)).ids == as_parcels(collection).ids == (100, 101, 102)
    del collection["features"][1]["id"]
    path.write_text(json.dumps(collection))
    with pytest.raises(ParcelFileError, match=r"has no 'parcel_id' column"):
        read_parcels(path)


def test_an_id_column_a_geojson_file_lacks_is_refused_though_its_features_carry_ids(register: gpd.GeoDataFrame,
                                                                                     tmp_path) -> None:
    """``--id-column PERCEL`` (a misspelt PERCEEL) of a GeoJSON file whose Features carry ids (ArcGIS writes its
    OBJECTIDs, 1, 2, 3, ...) read those ids as the parcel ids, without a word: the statistics went out under the
    OBJECTIDs, where a GeoPackage of the same parcels is refused as having no such column. A column named so is a
    property, refused if no feature has it; the Feature ids stand for the default ``parcel_id`` (and ``id``) only."""
    import json

    from cube.parcels import read_parcels

    collection = json.loads(register.rename(columns={"parcel_id": "PERCEEL"}).to_json())
    for i, feature in enumerate(collection["features"]):
        feature["id"] = i + 1
    path = tmp_path / "arcgis.geojson"
    path.write_text(json.dumps(collection))
    with pytest.raises(ParcelFileError, match=r"arcgis\.geojson has no 'PERCEL' column \(columns: PERCEEL, crop, "
                                              r"geometry\); name the parcel id column with --id-column"):
        read_parcels(path, id_column="PERCEL")
    assert read_parcels(path, id_column="PERCEEL").PERCEEL.tolist() == list(FIELDS)
    assert read_parcels(path).parcel_id.tolist() == [1, 2, 3]  # without the default property: the Feature ids
    by_objectid = read_parcels(path, id_column="PERCEEL").assign(OBJECTID=[1, 2, 3]).set_index("OBJECTID")
    with pytest.raises(InvalidRequestError, match=r"no 'PERCEL' column \(columns: PERCEEL, crop\) and their index is "
                                                  r"named 'OBJECTID'"):  # a frame alike: its index was read
        as_parcels(by_objectid, id_column="PERCEL")
    assert as_parcels(by_objectid, id_column="PERCEEL").ids == tuple(FIELDS)
    assert as_parcels(by_objectid).ids == (1, 2, 3)  # the index, as ever, without an id_column named
    assert as_parcels(by_objectid.drop(columns="PERCEEL").rename_axis("PERCEL"), id_column="PERCEL").ids == (1, 2, 3)


def test_a_parcel_file_of_its_ids_as_index_or_primary_key_is_read_by_them(register: gpd.GeoDataFrame,
                                                                          tmp_path) -> None:
    """A GeoParquet written from parcels indexed by their id (``set_index("parcel_id").to_parquet``) and a GeoPackage
    whose primary key is the id column (``ogr2ogr -lco FID=parcel_id``, a PostGIS export) hold the ids, yet each had
    "no 'parcel_id' column": geopandas restores the first as the index, GDAL reads the second as the feature id.
    Both are read by those ids, as the same parcels with the ids as a column are (the file's other fields kept)."""
    import pyogrio

    from cube.parcels import read_parcels

    numbered = register.assign(parcel_id=[101, 102, 103])
    numbered.set_index("parcel_id").to_parquet(tmp_path / "indexed.parquet")
    pyogrio.write_dataframe(numbered, tmp_path / "keyed.gpkg", layer_options={"FID": "parcel_id"})
    assert "parcel_id" not in pyogrio.read_info(tmp_path / "keyed.gpkg")["fields"]  # the key, not a field
    pyogrio.write_dataframe(numbered.rename(columns={"parcel_id": "code"}), tmp_path / "coded.gpkg",
                            layer_options={"FID": "code"})
    for path, column in ((tmp_path / "indexed.parquet", "parcel_id"), (tmp_path / "keyed.gpkg", "parcel_id"),
                         (tmp_path / "coded.gpkg", "code")):
        frame = read_parcels(path, id_column=column)
        assert frame[column].tolist() == [101, 102, 103] and frame.crop.tolist() == ["wheat", "maize", "grass"], path
        parcels = as_parcels(frame, id_column=column)
        assert parcels.ids == (101, 102, 103), path
        for pid, geom in parcels:
            assert geom.equals(FIELDS[register.parcel_id[pid - 101]]), (path, pid)
    assert "parcel_id" not in read_parcels(tmp_path / "coded.gpkg", id_column="code").columns


def test_a_shapefile_of_utf8_text_without_its_cpg_keeps_its_ids(register: gpd.GeoDataFrame, tmp_path) -> None:
    """A shapefile says its text's encoding in a .cpg file beside it; without one (lost, or not written by an older
    tool) GDAL reads the text as ISO-8859-1, and UTF-8 ids came out changed without a word ("Žitné" as
    "Å½itnÃ©"), as did a column's name beyond ASCII. Text that is UTF-8 is read as such; text that is not (a
    Windows code page) is read as before, with a warning saying how to name its encoding."""
    import os

    from cube.parcels import read_parcels

    ids = ["Žitné-1", "Ústí 7", "田んぼ"]
    fields = register.to_crs(UTM).assign(parcel_id=ids, **{"plodina": ["pšenice", "kukuřice", None]}).rename(
        columns={"plodina": "plodina_č"})
    for encoding in ("UTF-8", "cp1250"):
        fields.iloc[:2 if encoding == "cp1250" else 3].to_file(tmp_path / f"{encoding}.shp", encoding=encoding)
        assert (tmp_path / f"{encoding}.cpg").exists()
        described = read_parcels(tmp_path / f"{encoding}.shp")  # as before: its .cpg says
        os.remove(tmp_path / f"{encoding}.cpg")
        if encoding == "UTF-8":
            frame = read_parcels(tmp_path / "UTF-8.shp")
            assert frame.parcel_id.tolist() == ids and frame["plodina_č"].iloc[:2].tolist() == ["pšenice", "kukuřice"]
            assert_geodataframe_equal(frame, described)
            assert as_parcels(frame).ids == tuple(ids)
        else:
            with pytest.warns(UserWarning, match=r"cp1250.shp does not say the encoding of its text \(no \.cpg file "
                                                 r"beside it\): read as ISO-8859-1 \(Latin-1\), e.g. 'p\\x9aenice'; "
                                                 r"if its ids .* a line CP1250 or CP1252"):
                frame = read_parcels(tmp_path / "cp1250.shp")
            assert frame.parcel_id.tolist() == ["\x8eitné-1", "Ústí 7"]  # as GDAL reads it
    ascii_only = register.to_crs(UTM)
    ascii_only.to_file(tmp_path / "ascii.shp")
    os.remove(tmp_path / "ascii.cpg")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_parcels(tmp_path / "ascii.shp").parcel_id.tolist() == list(FIELDS)


def test_a_parcel_file_of_metres_said_to_be_lon_lat_is_named(register: gpd.GeoDataFrame, tmp_path) -> None:
    """A GeoJSON file of national coordinates without a crs member is lon/lat by RFC 7946 (GDAL reads it so), as is a
    GeoPackage given EPSG:4326 by mistake: refused later as "parcel coordinates ... are not lon/lat ... (a
    GeoDataFrame's own; a shapely geometry's ...; crs= in a REST request", naming no file and no way to mend one.
    Now the file is named, with the command that gives it its CRS."""
    import json

    from cardcube.errors import ParcelFileError
    from cube.parcels import read_parcels

    collection = json.loads(register.to_crs("EPSG:28992").to_json())
    collection.pop("crs", None)
    (tmp_path / "rd.geojson").write_text(json.dumps(collection))
    register.to_crs("EPSG:28992").set_crs(4326, allow_override=True).to_file(tmp_path / "rd.gpkg")
    for name in ("rd.geojson", "rd.gpkg"):
        path = tmp_path / name
        rfc = r" \(a GeoJSON file without a crs member is lon/lat: RFC 7946\)" if name.endswith(".geojson") else ""
        with pytest.raises(ParcelFileError, match=rf"^the coordinates of {path} \(15[0-9.]+, 50[0-9.]+, 15[0-9.]+, "
                                                  rf"50[0-9.]+\) are not lon/lat in EPSG:4326: the CRS the file says"
                                                  rf"{rfc}; give it the CRS of its coordinates \(ogr2ogr -a_srs"):
            read_parcels(path)
    register.to_file(tmp_path / "lonlat.geojson")
    assert read_parcels(tmp_path / "lonlat.geojson").parcel_id.tolist() == list(FIELDS)


def test_a_geopackage_of_parcels_and_a_table_reads_the_parcels(register: gpd.GeoDataFrame, tmp_path) -> None:
    """A register's GeoPackage holding its parcels and a table without geometries (the crop codes' names) was
    refused as a file of 2 layers, and the table named with --layer said it had "no 'parcel_id' column". The one
    layer of geometries is read; a table named is said to be one. A file of two layers of parcels still needs one
    named (the first may be the wrong year)."""
    import pyogrio

    from cardcube.errors import ParcelFileError
    from cube.parcels import read_parcels

    path = tmp_path / "lpis.gpkg"
    register.to_file(path, layer="parcels")
    pyogrio.write_dataframe(pd.DataFrame({"crop": ["wheat", "maize"], "code": [311, 201]}), path, layer="crops")
    assert [str(name) for name, _ in pyogrio.list_layers(path)] == ["parcels", "crops"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # GDAL's "More than one layer found" was a warning of each read
        assert read_parcels(path).parcel_id.tolist() == read_parcels(path, layer="parcels").parcel_id.tolist() == \
            list(FIELDS)
    with pytest.raises(ParcelFileError, match=rf"^{path} layer 'crops' is a table without geometries; its layers: "
                                              r"parcels$"):
        read_parcels(path, layer="crops")
    register.iloc[:1].to_file(path, layer="parcels_2025")
    with pytest.raises(ParcelFileError, match=rf"^{path} holds 2 layers \(parcels, parcels_2025\): name one"):
        read_parcels(path)


def test_an_id_column_a_shapefile_cut_short_is_named_as_cut(register: gpd.GeoDataFrame, tmp_path) -> None:
    """A shapefile keeps 10 characters of a column's name: --id-column parcel_identifier was told the file has no
    such column, listing parcel_ide among the columns without saying it is the one."""
    from cardcube.errors import ParcelFileError
    from cube.parcels import read_parcels

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # geopandas' and GDAL's word that the name is cut
        register.rename(columns={"parcel_id": "parcel_identifier"}).to_crs(UTM).to_file(tmp_path / "long.shp")
    with pytest.raises(ParcelFileError, match=r"has no 'parcel_identifier' column \(columns: parcel_ide, crop, "
                                              r"geometry\); .* \(a shapefile keeps the first 10 characters of a "
                                              r"column's name: --id-column parcel_ide\)$"):
        read_parcels(tmp_path / "long.shp", id_column="parcel_identifier")
    assert read_parcels(tmp_path / "long.shp", id_column="parcel_ide").parcel_ide.tolist() == list(FIELDS)


def test_a_geoparquet_file_is_read_whatever_its_name_ends_with(register: gpd.GeoDataFrame, tmp_path) -> None:
    """A GeoParquet named ``parcels.geoparquet`` (as some portals serve it), ``.pq`` or ``.PARQUET`` (a Windows
    export) went to GDAL, by its name no Parquet, and was refused as "not a readable parcel file: libduckdb.so: cannot
    open shared object file", naming no cause the user could mend. It is read as Parquet by its first bytes now."""
    from cube.parcels import read_parcels

    register.to_crs(UTM).to_parquet(tmp_path / "register.parquet")
    expected = read_parcels(tmp_path / "register.parquet")
    for name in ("register.geoparquet", "register.pq", "REGISTER.PARQUET", "register"):
        (tmp_path / name).write_bytes((tmp_path / "register.parquet").read_bytes())
        assert_geodataframe_equal(read_parcels(tmp_path / name), expected)
    with pytest.raises(ParcelFileError, match=r"weather\.pq is not a GeoParquet file \(no geometry column\)"):
        pd.DataFrame({"rain_mm": [1.0, 2.5]}).to_parquet(tmp_path / "weather.pq")
        read_parcels(tmp_path / "weather.pq")
    (tmp_path / "fields.geojson").write_text(register.to_json())  # by its bytes, another file goes to GDAL still
    assert read_parcels(tmp_path / "fields.geojson").parcel_id.tolist() == list(FIELDS)


def test_a_geoparquet_register_is_read_as_geopandas_reads_it(register: gpd.GeoDataFrame, tmp_path) -> None:
    """read_parcels gives Arrow's pool back the buffers of its read (kept for later allocations, 140 MB of a register
    of 300,000 parcels, until others purged them): the frame is geopandas' own, every column and outline, read
    again after it (the buffers given back are no frame's)."""
    from cube.parcels import read_parcels

    register.to_crs(UTM).to_parquet(tmp_path / "register.parquet")
    first = read_parcels(tmp_path / "register.parquet")
    assert_geodataframe_equal(first, gpd.read_parquet(tmp_path / "register.parquet"))
    assert_geodataframe_equal(read_parcels(tmp_path / "register.parquet"), first)
    assert first.crop.tolist() == ["wheat", "maize", "grass"] and first.crs == UTM
