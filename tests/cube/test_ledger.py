"""The ledger's records: as the arrays readers and writers use, and where each date holds data."""

from __future__ import annotations

import json

import numpy as np
import pytest
import shapely
from shapely.geometry import Polygon, box, shape

from cardcube.spec import S1_BACKSCATTER
from cardcube.storage import open_store
from cube import layout
from cube.ledger import (
    Acquisition,
    CubeVersion,
    HotSlot,
    SceneRecord,
    TileState,
    acquisition_columns,
    data_footprint,
    footprint_record,
    read_version,
    scene_area,
    scene_extent,
)
from cube.scene_details import FIELDS


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


def test_a_scene_taken_as_it_was_records_no_polygon_and_its_area_is_its_windows_box(tiny_cube):
    """Records of scenes on the tile grid (and of cubes older than the field) are as they always were: no
    ``footprint`` in their JSON, read back the same, and a date's area is its window's box."""
    for collection in ("s1", "s2"):
        version = read_version(open_store(tiny_cube), collection)
        stored = json.loads((tiny_cube / layout.ledger_key(collection, version.version)).read_text())
        whole = {sid: {k: v for k, v in d.items() if k not in FIELDS} for sid, d in version.to_dict()["scenes"].items()}
        assert {sid: {k: v for k, v in d.items() if k != "details"} for sid, d in stored["scenes"].items()} == whole
        assert "footprint" not in json.dumps(stored["scenes"])
        for tile, state in version.tiles.items():
            boxes = [box(*scene_extent(version, tile, a.scene_id)) for a in state.acquisitions]
            assert all(version.scenes[a.scene_id].footprint is None for a in state.acquisitions)
            areas = [scene_area(version, tile, a.scene_id) for a in state.acquisitions]
            assert all(area.equals(b) for area, b in zip(areas, boxes, strict=True))
            assert data_footprint(version, tile).equals(shapely.union_all(boxes))


def test_a_polygon_round_trips_to_the_millimetre_and_bounds_its_scenes_area():
    triangle = Polygon([(600_000.0, 5_900_040.0), (600_300.12345, 5_900_040.0), (600_000.0, 5_899_000.98765)])
    record = SceneRecord("X_T31UFU", "31UFU", "2024-05-02T05:50:00Z", 1, windows={10: (0, 0, 50, 50)},
                         footprint=footprint_record(triangle))
    assert record.footprint["type"] == "Polygon" and [600300.123, 5900040.0] in record.footprint["coordinates"][0]
    assert SceneRecord.from_dict(record.to_dict()) == record
    acquisition = HotSlot(0, Acquisition(record.time, record.scene_id, "sentinel-1a", 37, "descending"))
    version = CubeVersion("s1", 1, S1_BACKSCATTER, {"31UFU": TileState("31UFU", hot=(acquisition,), hot_slots_used=1)},
                          {record.scene_id: record})
    area = scene_area(version, "31UFU", record.scene_id)  # the window (500 m square) within the triangle
    assert area.equals(shape(record.footprint).intersection(Polygon.from_bounds(600_000, 5_899_540, 600_500,
                                                                                5_900_040)))
    assert 0 < area.area < triangle.area


def test_a_tiles_footprint_is_made_once_per_version_and_anew_for_the_next(tiny_cube):
    """Every query takes the footprint of every tile (the union of its dates' areas, tens of milliseconds over
    hundreds of warped scenes' polygons): a version object keeps it, so the REST service's requests on one version
    make it once; the next version, and the version read again, make their own."""
    version = read_version(open_store(tiny_cube), "s1")
    tile = next(iter(version.tiles))
    first = data_footprint(version, tile)
    assert data_footprint(version, tile) is first and version.footprints == {tile: first}
    later = version.next(tiles={}, scenes={}, added=(), rejected=())
    assert later.footprints == {}  # not carried on
    again = read_version(open_store(tiny_cube), "s1")
    assert again == version and again.footprints == {}
    assert data_footprint(again, tile) is not first and data_footprint(again, tile).equals(first)


def test_a_record_holding_a_field_of_a_newer_cardcube_says_so_rather_than_restore_a_backup(tiny_cube, tmp_path):
    """A ledger field added by a later release (as ``footprint`` on 2026-12-05) made an older cardcube call the
    record damaged and advise restoring a backup: an operator of a host not yet upgraded would roll the cube back."""
    import shutil

    from cardcube.errors import CorruptDocumentError

    cube = tmp_path / "cube"
    shutil.copytree(tiny_cube, cube)
    version = read_version(open_store(cube), "s1")
    path = cube / layout.ledger_key("s1", version.version)
    record = json.loads(path.read_text())
    next(iter(record["scenes"].values()))["shimmer"] = [1, 2]
    path.write_text(json.dumps(record))
    with pytest.raises(CorruptDocumentError, match=r"holds a field this cardcube does not know \('shimmer'\): "
                                                   r"written by a newer cardcube") as err:
        read_version(open_store(cube), "s1")
    assert "restore it from a backup" not in str(err.value)


def test_a_version_number_too_long_for_a_key_is_no_version_not_a_store_failure(tiny_cube, s3_bucket):
    """``as_of`` of 300 digits (a REST client's typo, a URL edited by hand) named a ledger key longer than a folder's
    file names or S3's keys: the store's refusal was a 502 "cannot read", as if the store were out of reach, where
    every other version never committed is a 404 naming the versions kept. A version beyond an int64 (how
    extractions store ``cube_version``) is never committed: said so, without asking the store."""
    import s3fs

    from cardcube.errors import VersionNotFoundError

    fs = s3fs.S3FileSystem(**s3_bucket.storage_options())
    fs.put(str(tiny_cube / "s2" / "_ledger") + "/", f"{s3_bucket.name}/cube/s2/_ledger/", recursive=True)
    on_s3 = open_store(s3_bucket.url_for("cube"), storage_options=s3_bucket.storage_options())
    for store in (open_store(tiny_cube), on_s3):
        for number in (2 ** 63, 10 ** 300, 10 ** 1100):
            with pytest.raises(VersionNotFoundError, match=r"has no version \d+: the latest is 1$"):
                read_version(store, "s2", number)
        with pytest.raises(VersionNotFoundError, match="has no version -1"):
            read_version(store, "s2", -1)


def test_a_version_is_read_from_the_cubes_folder_or_url_as_every_reader_takes_it(tiny_cube, tmp_path):
    """The README's ``as_of`` takes a CubeVersion read by ``read_version``, whose first argument took a zarr Store
    alone: given the cube's folder, as ``open_cube`` and ``parcel_timeseries`` take it, it failed with
    "AttributeError: 'str' object has no attribute 'get'". A folder, a path or a URL is opened as they open it."""
    from cardcube.errors import CubeNotFoundError

    stored = read_version(open_store(tiny_cube), "s2")
    for location in (str(tiny_cube), tiny_cube, f"file://{tiny_cube}", str(tiny_cube / "catalog.json")):
        version = read_version(location, "s2", stored.version)
        assert (version.version, version.created) == (stored.version, stored.created)
        assert version.tiles.keys() == stored.tiles.keys()
    with pytest.raises(CubeNotFoundError, match=r"no cube at .*nowhere: the folder does not exist"):
        read_version(str(tmp_path / "nowhere"), "s2")
