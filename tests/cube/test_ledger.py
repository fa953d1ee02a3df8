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



def test_a_location_inside_a_cube_names_the_cube(tiny_cube, tmp_path, s3_bucket):
    """What a cube's STAC catalog points at (a collection or tile item document, a tile's cube.zarr) is no cube's
    location: it said "no committed version" and nothing of the cube it lies in, on a folder and on S3 alike."""
    import pystac
    import pytest
    import s3fs

    from cardcube.errors import CubeNotFoundError
    from cube.dataset import open_cube

    fs = s3fs.S3FileSystem(**s3_bucket.storage_options())
    fs.put(str(tiny_cube) + "/", f"{s3_bucket.name}/cube/", recursive=True)
    catalog = pystac.Catalog.from_file(str(tiny_cube / "catalog.json"))
    item = next(catalog.get_child("sentinel-1-card-bs-cube").get_items())
    inside = [catalog.get_child("sentinel-2-l2a-cube").get_self_href(), item.get_self_href(),
              item.assets["data"].get_absolute_href()]
    for where, root, options in [(inside, str(tiny_cube), None),
                                 ([s3_bucket.url_for("cube/s1/31UFU/cube.zarr")], s3_bucket.url_for("cube"),
                                  s3_bucket.storage_options())]:
        for href in where:
            collection = "s1" if "/s1/" in href else "s2"
            with pytest.raises(CubeNotFoundError, match=f"no committed version; it lies inside the cube at {root} "
                                                        rf"\(its {collection} collection\): give that location"):
                open_cube(href, storage_options=options)
        assert open_cube(root, collection, storage_options=options).sizes["time"] > 0
    with pytest.raises(CubeNotFoundError) as elsewhere:  # a folder that is in no cube: nothing more to say
        open_cube(tmp_path)
    assert str(elsewhere.value).endswith("no committed version")


def test_the_cubes_catalog_json_names_the_cube_to_every_reader(tiny_cube, parcels, tmp_path):
    """``open_cube`` took the cube's ``catalog.json`` (what a STAC browser is pointed at) as the cube, the other
    readers did not ("no committed version"): each reads the same from it now."""
    import numpy as np
    import pandas as pd

    from cube.chips import chip
    from cube.extract import extract, read_timeseries
    from cube.timeseries import parcel_timeseries
    from cube.verify import verify

    catalog, few = str(tiny_cube / "catalog.json"), parcels.iloc[:3]
    pd.testing.assert_frame_equal(parcel_timeseries(catalog, few, bands=["B08"]),
                                  parcel_timeseries(tiny_cube, few, bands=["B08"]))
    a, b = (chip(where, few.iloc[:1], bands=["B04"]) for where in (catalog, tiny_cube))
    np.testing.assert_array_equal(a.data.B04.values, b.data.B04.values)
    assert verify(catalog, progress=False).to_dict() == verify(tiny_cube, progress=False).to_dict()
    extract(few, catalog, tmp_path / "a", bands=["B08"], progress=False)
    extract(few, tiny_cube, tmp_path / "b", bands=["B08"], progress=False)
    pd.testing.assert_frame_equal(read_timeseries(tmp_path / "a"), read_timeseries(tmp_path / "b"))


def test_only_a_file_named_catalog_json_names_its_cube():
    """A cube folder whose name ends with catalog.json (``s2catalog.json``) became its parent (``s2``)."""
    from cube.layout import cube_root

    assert cube_root("cubes/demo/catalog.json") == "cubes/demo" and cube_root("catalog.json") == "."
    assert cube_root("s3://bucket/cube/catalog.json") == "s3://bucket/cube"
    assert cube_root("cubes/s2catalog.json") == "cubes/s2catalog.json"
    assert cube_root("s3://bucket/mycatalog.json") == "s3://bucket/mycatalog.json"
