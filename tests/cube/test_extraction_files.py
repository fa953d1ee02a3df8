"""An extraction's files without a cube: a repaired date's rows dropped, a file written anew told from its earlier
name, the status table (the manifest: test_extraction_manifest.py)."""

from __future__ import annotations

import io
from dataclasses import replace

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import shapely
from zarr.storage import MemoryStore

from cardcube.spec import cube_spec
from cardcube.storage import open_store, read_bytes, read_json, write_bytes, write_json
from cube import extraction_files
from cube.extraction_files import (
    MANIFEST,
    STATUS,
    TIMESERIES_PARQUET,
    statistics_keys,
    statistics_name,
    write_status,
)
from cube.extraction_manifest import check_manifest
from cube.parcel_layer import parquet_bytes
from cube.timeseries import ParcelStatus
from tests.cube.conftest import PARAMETERS, _recorded, _version


def _out_store(where: str, request: pytest.FixtureRequest):
    """An extraction's store: in memory, or on moto's S3 over HTTP (``where == "s3"``)."""
    if where != "s3":
        return MemoryStore()
    bucket = request.getfixturevalue("s3_bucket")
    return open_store(bucket.url_for("out"), storage_options=bucket.storage_options())


def test_the_rows_of_a_repaired_date_are_dropped_reading_only_the_files_whose_footers_may_hold_it():
    """Dropping a repaired date's rows read every earlier file of its tile whole, one after another (on S3 a GET of
    megabytes each): a file whose footer says its times miss the date is now left unread but for its tail."""
    from cardcube.counting_store import CountingStore
    from cardcube.storage import read_bytes
    from cube.dated_rows import FOOTER_BYTES
    from cube.extraction_files import drop_replaced

    version = _recorded(_version(2, ["S2A_1", "S2A_2", "S2A_3"]))
    times = [np.datetime64(a.time.rstrip("Z"), "us") for a in version.tiles["31UFU"].cold]
    out, run = CountingStore(MemoryStore()), "d49cb602e05e"
    rng = np.random.default_rng(1)
    keys = {}
    for name, when, rows in (("r00000c00000t0000", times[:2], 40_000), ("r00000c00000t0002", times[2:], 10)):
        table = pa.table({"parcel_id": [f"p{i}" for i in range(rows)] * len(when),
                          "time": pa.array(np.repeat(when, rows), pa.timestamp("us")),
                          "mean": rng.random(rows * len(when))})
        keys[name] = f"timeseries/tile=31UFU/{statistics_name(name, run)}"
        write_bytes(out, keys[name], parquet_bytes(table, **TIMESERIES_PARQUET))
    big = len(read_bytes(out, keys["r00000c00000t0000"]))
    assert big > 2 * FOOTER_BYTES
    out.reset()
    manifest = {"run": run, "version": 2, "update": {"from": 1, "replaced": {"31UFU": ["S2A_3"]}}}
    assert drop_replaced(out, manifest, version) == 1
    assert read_bytes(out, keys["r00000c00000t0002"]) is None  # its one date's rows gone, and its name with them
    emptied = read_bytes(out, keys["r00000c00000t0002"].replace(f"-{run}", f"-w00000002-{run}"))
    assert pq.read_table(pa.BufferReader(emptied)).num_rows == 0  # a file of no row, under a name of version 2
    assert len(read_bytes(out, keys["r00000c00000t0000"])) == big  # untouched
    out.reset()
    assert drop_replaced(out, manifest, version) == 0  # dropping again drops nothing
    assert out.bytes_read <= FOOTER_BYTES + len(emptied)  # the tails only: their footers' times miss S2A_3


@pytest.mark.parametrize(("run", "where"), [("d49cb602e05e", "memory"), ("", "memory"), ("d49cb602e05e", "s3")],
                         ids=["run", "before-runs", "s3"])
def test_a_file_an_update_wrote_anew_is_not_undone_by_its_earlier_name_written_late(run, where, request):
    """An update dropping a repaired date's rows wrote the earlier file anew under its own name: a stopped run's task
    writing that name late put the dropped rows back beside the update's. The file written anew is named by the
    update's version, supersedes its earlier name (written late, or left by a killed update), and is written anew
    again by a later update; an extraction from before runs were named (no run in its names) alike, and on S3."""
    from cardcube.storage import read_bytes
    from cube.extraction_files import drop_replaced, extraction_keys, first_key, rewritten_key

    version = _recorded(_version(3, ["S2A_1", "S2A_2", "S2A_3"]))
    times = [np.datetime64(a.time.rstrip("Z"), "us") for a in version.tiles["31UFU"].cold]
    out = _out_store(where, request)
    folder = "timeseries/tile=31UFU/"
    first, added = folder + statistics_name("r00000c00000t0000", run), folder + statistics_name(
        "r00000c00000t0000-v00000002", run)  # the first run's file, and an update's to version 2
    for key, when in ((first, times[:2]), (added, times[2:])):
        table = pa.table({"parcel_id": ["a"] * len(when), "time": pa.array(when, pa.timestamp("us"))})
        write_bytes(out, key, parquet_bytes(table, **TIMESERIES_PARQUET))
    late = read_bytes(out, first)
    tail = f"-{run}.parquet" if run else ".parquet"
    assert rewritten_key(first, 2, run) == folder + f"r00000c00000t0000-w00000002{tail}"
    assert rewritten_key(added, 3, run) == folder + f"r00000c00000t0000-v00000002-w00000003{tail}"
    assert first_key(rewritten_key(added, 3, run)) == (added, 3) and first_key(added) == (added, 0)

    def rows() -> dict[str, list]:
        return {k: pq.read_table(pa.BufferReader(read_bytes(out, k)))["time"].to_pylist()
                for k in statistics_keys(out, {"run": run})}

    two = {"run": run, "version": 2, "update": {"from": 1, "replaced": {"31UFU": ["S2A_2"]}}}
    assert drop_replaced(out, two, version) == 1
    anew = rewritten_key(first, 2, run)
    assert read_bytes(out, first) is None and len(rows()[anew]) == 1
    write_bytes(out, first, late)  # a stopped run's task, writing its file late
    assert rows() == {anew: [times[0].item()], added: [times[2].item()]}  # the late file left aside
    assert drop_replaced(out, two, version) == 0  # dropping again drops nothing: the file written anew is read
    finished = {"run": run, "complete": True, "mosaics": []}
    assert sorted(extraction_keys(out, finished)) == sorted([anew, added])
    three = {"run": run, "version": 3, "update": {"from": 2, "replaced": {"31UFU": ["S2A_1", "S2A_3"]}}}
    assert drop_replaced(out, three, version) == 2  # a later update writes both anew, the first one left with none
    assert rows() == {rewritten_key(first, 3, run): [], rewritten_key(added, 3, run): []}
    assert read_bytes(out, anew) is None and read_bytes(out, added) is None and read_bytes(out, first) == late


def test_a_file_an_update_wrote_anew_is_written_anew_again_in_place_by_the_same_update_resumed_after_a_repair():
    """An unfinished update resumed after another repair drops more dates' rows: from the file it wrote anew, under
    the same name (only an update writes it), which stays."""
    from cardcube.storage import read_bytes
    from cube.extraction_files import drop_replaced, rewritten_key

    version, run = _recorded(_version(2, ["S2A_1", "S2A_2", "S2A_3"])), "d49cb602e05e"
    times = [np.datetime64(a.time.rstrip("Z"), "us") for a in version.tiles["31UFU"].cold]
    out, first = MemoryStore(), f"timeseries/tile=31UFU/{statistics_name('r00000c00000t0000', run)}"
    table = pa.table({"parcel_id": ["a"] * 3, "time": pa.array(times, pa.timestamp("us"))})
    write_bytes(out, first, parquet_bytes(table, **TIMESERIES_PARQUET))
    update = {"run": run, "version": 2, "update": {"from": 1, "replaced": {"31UFU": ["S2A_2"]}}}
    assert drop_replaced(out, update, version) == 1
    resumed = {**update, "update": {"from": 1, "replaced": {"31UFU": ["S2A_1", "S2A_2"]}}}
    assert drop_replaced(out, resumed, version) == 1
    anew = rewritten_key(first, 2, run)
    assert statistics_keys(out, {"run": run}) == [anew] and read_bytes(out, first) is None
    assert pq.read_table(pa.BufferReader(read_bytes(out, anew)))["time"].to_pylist() == [times[2].item()]


@pytest.mark.parametrize(("run", "where"), [("d49cb602e05e", "memory"), ("", "memory"), ("d49cb602e05e", "s3")],
                         ids=["run", "before-runs", "s3"])
def test_the_files_of_a_run_written_before_a_repair_it_was_resumed_after_are_told_from_its_resumptions(
        run, where, request):
    """A run resumed after a repair deletes its files holding the dates read again, and of parcels read across tiles,
    and its tasks write them again under the same names: a task of the attempt before writing one late, before the
    resumption listed the files (taken for done) or after it wrote them (written over), brought the damaged rows
    back. The resumption's names are of a new generation now (``-g<n>``), which supersedes the earlier; a file of an
    earlier generation holding those dates is not done (its footer read), nor is an earlier batch file."""
    from cardcube.storage import read_bytes
    from cube.extraction_files import (
        generation_tag,
        held_before_repair,
        mosaic_batch,
        mosaic_key,
        rewritten_key,
        written_as,
    )

    version = _recorded(_version(1, ["S2A_1", "S2A_2", "S2A_3"]))
    times = [np.datetime64(a.time.rstrip("Z"), "us") for a in version.tiles["31UFU"].cold]
    out = _out_store(where, request)
    check_manifest(out, PARAMETERS, version, time=None, update=False, cube=out)
    write_json(out, MANIFEST, {**read_json(out, MANIFEST), "run": run})
    folder = "timeseries/tile=31UFU/"
    held, other = (folder + statistics_name(f"r00000c00000t000{t}", run) for t in (0, 2))
    batch = mosaic_key(0, run, 1)
    for key, when in ((held, times[:2]), (other, times[2:]), (batch, times)):
        table = pa.table({"parcel_id": ["a"] * len(when), "time": pa.array(when, pa.timestamp("us"))})
        write_bytes(out, key, parquet_bytes(table, **TIMESERIES_PARQUET))
    late = {key: read_bytes(out, key) for key in (held, batch)}
    head = _recorded(replace(version, version=2), S2A_2=2)
    check_manifest(out, PARAMETERS, version, time=None, update=False, cube=out, head=head)  # S2A_2 read again
    manifest = read_json(out, MANIFEST)
    assert manifest["generation"] == 1 and manifest["read_again"] == [
        {"generation": 1, "version": 1, "update": False, "scenes": {"31UFU": ["S2A_2"]}}]
    assert statistics_keys(out, manifest) == [other]
    for key, data in late.items():  # the attempt before the repair, late, before the resumption lists the files
        write_bytes(out, key, data)
    listed = statistics_keys(out, manifest)
    assert sorted(listed) == sorted([held, other])  # the earlier batch file left aside by its name
    assert held_before_repair(out, listed, manifest, version) == {held}  # and the unit's by its footer

    again = folder + statistics_name(f"r00000c00000t0000{generation_tag(1)}", run)  # the resumption's files
    assert written_as(again) == (held, 1, 0) and written_as(rewritten_key(again, 2, run)) == (held, 1, 2)
    assert mosaic_batch(mosaic_key(0, run, 1, 1)) == (0, 1, 1) and mosaic_batch(batch) == (0, 1, 0)
    for key in (again, mosaic_key(0, run, 1, 1)):
        write_bytes(out, key, late[held])
    for key, data in late.items():  # ... or after it wrote them
        write_bytes(out, key, data)
    assert sorted(statistics_keys(out, manifest)) == sorted([again, other, mosaic_key(0, run, 1, 1)])
    assert held_before_repair(out, statistics_keys(out, manifest), manifest, version) == set()


def test_an_update_s_file_written_anew_is_not_undone_by_a_late_file_of_a_later_generation():
    """A unit's file that a run resumed after a repair found done (written late by the attempt before the repair) is
    the one an update drops a repaired date from, writing it anew (``-w``): a task of the resumption's own stopped
    attempt writing that unit late (``-g00000001``) outranked the update's file by its generation, so the date's
    earlier rows were read again beside the update's (twice, damaged), and the next run deleted the update's file. An
    update's driver writes anew the latest file of a finished run, which a task's late file never replaces."""
    from cube.extraction_files import generation_tag, rewritten_key, superseded

    run = "0123456789ab"
    first = "timeseries/tile=31UFU/" + statistics_name("r00000c00000t0000", run)  # the first run's, found done
    anew = rewritten_key(first, 3, run)  # the update to version 3's, without the repaired date's rows
    late = "timeseries/tile=31UFU/" + statistics_name(f"r00000c00000t0000{generation_tag(1)}", run)
    assert superseded([anew, late]) == {late}
    assert superseded([first, anew, late]) == {first, late}
    again = rewritten_key(late, 3, run)  # ... where the resumption wrote it, the update wrote that anew
    assert superseded([first, late, again]) == {first, late}


def test_a_file_written_anew_without_a_repaired_date_keeps_the_encoding_of_the_units_files():
    """A Sentinel-2 unit's order statistics are dictionary-encoded (a few thousand stored integers scaled); an update
    dropping a repaired date's rows wrote the file anew with the plain options: its order statistics plain, the file
    larger than the one it replaced. It is written as the extraction's units are; a Sentinel-1 one plain still."""
    from cardcube.storage import read_bytes
    from cube.extraction_files import drop_replaced, rewritten_key, timeseries_parquet

    def encodings(data: bytes) -> dict[str, set[str]]:
        meta = pq.ParquetFile(pa.BufferReader(data)).metadata.row_group(0)
        return {meta.column(i).path_in_schema: set(meta.column(i).encodings) for i in range(meta.num_columns)}

    run, stats = "d49cb602e05e", ["count", "max", "mean", "median", "min", "p25", "p75", "std"]
    for collection, bands, encoded in (("s2", ["B04", "B08"], True), ("s1", ["VH"], False)):
        version = _recorded(replace(_version(2, ["S2A_1", "S2A_2", "S2A_3"]), spec=cube_spec(collection)))
        times = [np.datetime64(a.time.rstrip("Z"), "us") for a in version.tiles["31UFU"].cold]
        rows = 3000
        values = np.round(np.random.default_rng(2).integers(0, 400, rows * 3) * 1e-4 - 0.1, 4)
        table = pa.table({"parcel_id": [f"p{i}" for i in range(rows)] * 3,
                          "time": pa.array(np.repeat(times, rows), pa.timestamp("us")),
                          **{s: values for s in stats}})
        out, key = MemoryStore(), f"timeseries/tile=31UFU/{statistics_name('r00000c00000t0000', run)}"
        options = timeseries_parquet(version.spec, bands, stats)
        write_bytes(out, key, parquet_bytes(table, **options))
        assert ("RLE_DICTIONARY" in encodings(read_bytes(out, key))["p25"]) is encoded
        manifest = {"run": run, "version": 2, "bands": bands, "stats": stats,
                    "update": {"from": 1, "replaced": {"31UFU": ["S2A_2"]}}}
        assert drop_replaced(out, manifest, version) == 1
        anew = encodings(read_bytes(out, rewritten_key(key, 2, run)))
        assert {c for c in ("min", "max", "p25", "median", "p75") if "RLE_DICTIONARY" in anew[c]} == (
            {"min", "max", "p25", "median", "p75"} if encoded else set()), collection
        assert "RLE_DICTIONARY" not in anew["mean"] | anew["std"]


def _status_by_geopandas(frame, status, repaired, cube_version):
    """The status table as geopandas writes it: the reference of write_status's bytes."""
    ids = frame.parcel_id.tolist()
    each = [status[i] for i in ids]
    return parquet_bytes(gpd.GeoDataFrame({
        "parcel_id": ids, "status": [s.status for s in each], "reason": [s.reason for s in each],
        "tile": [s.tile for s in each], "pixels": np.array([s.pixels for s in each], dtype=np.int64),
        "repaired": [i in repaired for i in ids], "cube_version": np.full(len(ids), cube_version, dtype=np.int64),
    }, geometry=frame.geometry.to_numpy(), crs=frame.crs))


@pytest.mark.parametrize("ids", [["b", "a", "c", "d", "e"], [5, 1, 9, 3, 7]])
def test_the_status_table_is_the_geoparquet_geopandas_writes_in_row_groups_of_its_rows(ids, monkeypatch):
    """write_status builds the table in Arrow a row group at a time, not a GeoDataFrame of the whole register: the
    same bytes as geopandas' GeoParquet in one group (its metadata's geometry types and bounds those of every
    parcel, a 3-D one and a missing outline among them), the same table in several."""
    two = shapely.MultiPolygon([shapely.box(20, -5, 30, 5), shapely.box(40, 0, 50, 9)])
    raised = shapely.Polygon([(0, 0, 1), (0, 8, 1), (8, 0, 1)])  # 3-D: "Polygon Z" among its geometry types
    geoms = [shapely.box(0, 0, 10, 10), None, two, raised, shapely.box(-7, 3, 2, 4)]
    frame = gpd.GeoDataFrame({"parcel_id": ids, "crop": ["x"] * 5}, geometry=geoms, crs="EPSG:32631")
    status = {ids[0]: ParcelStatus(ids[0], "ok", 12, "", "31UFU"),
              ids[1]: ParcelStatus(ids[1], "invalid", 0, "has an empty geometry"),
              ids[2]: ParcelStatus(ids[2], "outside", 0, "outside the data of every tile of the s2 cube"),
              ids[3]: ParcelStatus(ids[3], "too_small", 0, "area 32 m² leaves no pixel", "31UFU"),
              ids[4]: ParcelStatus(ids[4], "ok", 3, "12% of it outside the data", "31UFU+31UGU")}
    expected = _status_by_geopandas(frame, status, {ids[4]}, 2)
    out = MemoryStore()
    write_status(out, frame, "parcel_id", status, {ids[4]}, 2)
    assert read_bytes(out, STATUS) == expected
    monkeypatch.setattr(extraction_files, "STATUS_ROWS", 2)
    write_status(out, frame, "parcel_id", status, {ids[4]}, 2)
    written = pq.ParquetFile(io.BytesIO(read_bytes(out, STATUS)))
    assert written.metadata.num_row_groups == 3
    assert written.schema_arrow.equals(pq.read_schema(io.BytesIO(expected)), check_metadata=True)
    assert written.read().equals(pq.read_table(io.BytesIO(expected)))
    pd.testing.assert_frame_equal(gpd.read_parquet(io.BytesIO(read_bytes(out, STATUS))),
                                  gpd.read_parquet(io.BytesIO(expected)))
