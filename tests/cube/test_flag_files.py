"""Flagging from files: every declared parcel of an extraction gets a row, the provenance is the cube version."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest

import cube.flag_files as flag_files_module
from cardcube.cli import main
from cardcube.errors import InvalidRequestError
from cardcube.storage import open_store
from cube.anomalies import flag_parcels
from cube.extract import extract, read_status, read_timeseries
from cube.flag_files import (
    describe_statistics,
    flag_files,
    read_statistics,
    statistics_parameters,
    statistics_parts,
)
from cube.ledger import read_version
from cube.timeseries import parcel_timeseries

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def s2_extracted(tiny_cube, tiny_region, tmp_path_factory):
    out = tmp_path_factory.mktemp("extract")
    extract(tiny_region.parcels, tiny_cube, out, bands=["B04", "B08"], progress=False)
    return out


def test_flag_files_is_flag_parcels_plus_the_parcels_not_measured(s2_extracted, tiny_region):
    parcels = pd.read_parquet(tiny_region.parcels, columns=["parcel_id", "crop_code"])
    declared = parcels.set_index("parcel_id").crop_code
    flags = flag_files(s2_extracted, declared)
    status = read_status(s2_extracted)
    assert sorted(flags.parcel_id) == sorted(status.parcel_id.astype(str))
    direct = flag_parcels(read_timeseries(s2_extracted, bands=["B04", "B08"]), declared)
    measured = flags[flags.parcel_id.isin(direct.parcel_id)].set_index("parcel_id").sort_index()
    pd.testing.assert_frame_equal(measured, direct.set_index("parcel_id").sort_index(), check_like=True)
    unmeasured = status[status.status != "ok"]
    rows = flags.set_index("parcel_id").loc[unmeasured.parcel_id.astype(str)]
    assert len(rows) and not rows.flagged.any()
    assert rows.not_judged.tolist() == [f"every marker: no statistics ({s}: {r})"
                                        for s, r in zip(unmeasured.status, unmeasured.reason, strict=True)]
    extra = pd.concat([declared, pd.Series({"never-extracted": declared.iloc[0]})])
    with pytest.warns(UserWarning, match=r"1 declared parcel\(s\) have no statistics .* \(e.g. never-extracted\)"):
        flag_files(s2_extracted, extra)


def test_statistics_from_a_timeseries_file_and_their_version(s2_extracted, tiny_cube, tmp_path):
    frame = read_timeseries(s2_extracted, bands=["B04", "B08"])
    frame.attrs["cube_version"] = 7
    frame.to_parquet(tmp_path / "ts.parquet")
    frame.assign(cube_version=7).to_csv(tmp_path / "ts.csv", index=False)
    for path in (tmp_path / "ts.parquet", tmp_path / "ts.csv"):
        read = read_statistics(path, ["B04", "B08"])
        assert len(read) == len(frame) and read.parcel_id.map(type).eq(str).all()
        assert describe_statistics(path)["cube_version"] == 7
    described = describe_statistics(s2_extracted)
    assert described["cube_version"] == read_version(open_store(tiny_cube), "s2").version
    assert described["collection"] == "s2" and described["path"] == str(s2_extracted.resolve())
    with pytest.raises(InvalidRequestError, match="no statistics at"):
        read_statistics(tmp_path / "missing.parquet", ["B04"])


def test_a_parcel_with_statistics_gets_one_row_whatever_its_status_says(s2_extracted, tiny_region, tmp_path):
    """A status table calling a measured parcel failed (an update whose read failed, beside the first run's
    statistics) gave it two rows: judged, and "no statistics"."""
    import shutil

    from cube.extraction_files import STATUS

    copy = shutil.copytree(s2_extracted, tmp_path / "extract")
    status = read_status(copy)
    measured = read_timeseries(copy, bands=["B04"]).parcel_id.astype(str).iloc[0]
    status.loc[status.parcel_id.astype(str) == measured, ["status", "reason"]] = ["failed", "read error"]
    status.to_parquet(copy / STATUS)
    declared = pd.read_parquet(tiny_region.parcels).set_index("parcel_id").crop_code
    flags = flag_files(copy, declared, rules={"min_parcels": 3})  # rules as a mapping, as a JSON file gives them
    assert flags.parcel_id.is_unique and "no statistics" not in flags.set_index("parcel_id").loc[measured, "not_judged"]
    assert flags.attrs["rules"]["min_parcels"] == 3


def test_files_that_are_no_statistics_get_a_clear_error(s2_extracted, tmp_path):
    frame = read_timeseries(s2_extracted, bands=["B04", "B08"])
    frame.to_parquet(tmp_path / "upper.PARQUET")  # an upper-case suffix is still Parquet
    assert len(read_statistics(tmp_path / "upper.PARQUET", ["B04"])) == len(frame)
    frame.drop(columns="time").to_csv(tmp_path / "no-time.csv", index=False)
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "binary.csv").write_bytes(bytes(range(256)))
    for name, message in [("no-time.csv", "lacks the column.s. time"), ("empty.csv", "cannot read .* file is empty"),
                          ("binary.csv", "cannot read")]:
        with pytest.raises(InvalidRequestError, match=message):
            read_statistics(tmp_path / name, ["B04"])
    # the extraction's status table given for its statistics: its columns named, not the one of them read
    with pytest.raises(InvalidRequestError, match=r"lacks the column\(s\) time, band \(it has parcel_id, status, "
                                                  r"reason, "):
        read_statistics(s2_extracted / "parcels.parquet", ["B04"])


def test_statistics_without_the_cloud_mask_are_refused(tiny_cube, tiny_region, tmp_path, s2_extracted):
    """Unmasked statistics flagged every meadow of the tiny region as bare soil (120 of 120) without a word: the
    extraction's manifest and the timeseries file's record said mask null, and nothing read them."""
    parcels = pd.read_parquet(tiny_region.parcels, columns=["parcel_id", "crop_code"])
    declared = parcels.set_index("parcel_id").crop_code
    unmasked = tmp_path / "unmasked"
    extract(tiny_region.parcels, tiny_cube, unmasked, bands=["B04", "B08"], mask=None, progress=False)
    refused = r"were computed without the cloud mask .*: cloudy dates would read as bare soil"
    with pytest.raises(InvalidRequestError, match=refused):
        flag_files(unmasked, declared, grassland=[265, 266])
    frame = parcel_timeseries(tiny_cube, tiny_region.parcels, bands=["B04", "B08"], mask=None)  # the Python twin
    assert frame.attrs["mask"] is None
    with pytest.raises(InvalidRequestError, match=refused):
        flag_parcels(frame, declared, grassland=[265, 266])
    masked = parcel_timeseries(tiny_cube, tiny_region.parcels, bands=["B04", "B08"])
    assert masked.attrs["mask"] == [0, 1, 3, 8, 9, 10, 11]
    assert flag_parcels(masked, declared, grassland=[265, 266]).bare_soil.sum() < 10  # of 120 meadows
    assert flag_files(s2_extracted, declared, grassland=[265, 266]).bare_soil.sum() < 10


def test_statistics_of_cloudy_pixels_are_refused_without_a_record_or_with_a_mask_keeping_clouds(tiny_cube, tiny_region,
                                                                                                 tmp_path):
    """Only a record saying mask None was refused: a CSV without its record, batches joined by pd.concat (which drops
    the attrs), a mask of no cloud class ([] or [0]) all flagged every meadow as bare soil (120 of 120)."""
    parcels = pd.read_parquet(tiny_region.parcels, columns=["parcel_id", "crop_code"])
    declared = parcels.set_index("parcel_id").crop_code
    unmasked = tmp_path / "unmasked.csv"
    assert main(["timeseries", "--cube", str(tiny_cube), "--parcels", str(tiny_region.parcels), "--bands", "B04,B08",
                 "--no-mask", "--out", str(unmasked)]) == 0
    Path(f"{unmasked}.json").unlink()  # the CSV alone: its rows count the SCL classes of the pixels they took
    with pytest.raises(InvalidRequestError, match=r"rows count more cloud pixels \(SCL 3, 8, 9, 10\) than masked"):
        flag_files(unmasked, declared, grassland=[265, 266])
    outlines = gpd.read_parquet(tiny_region.parcels)
    some = [parcel_timeseries(tiny_cube, part, bands=["B04", "B08"], mask=None)
            for part in (outlines.iloc[:100], outlines.iloc[100:])]
    joined = pd.concat(some, ignore_index=True)
    assert "mask" not in joined.attrs
    with pytest.raises(InvalidRequestError, match="rows count more cloud pixels"):
        flag_parcels(joined, declared, grassland=[265, 266])
    nodata_only = parcel_timeseries(tiny_cube, tiny_region.parcels, bands=["B04", "B08"], mask=[0])
    with pytest.raises(InvalidRequestError, match=r"mask of SCL classes \[0\], which keeps the cloud class\(es\) "
                                                  r"3 \(cloud_shadows\), 8"):
        flag_parcels(nodata_only, declared, grassland=[265, 266])
    extracted = tmp_path / "nodata-only"
    extract(tiny_region.parcels, tiny_cube, extracted, bands=["B04", "B08"], mask=[0, 3], progress=False)
    with pytest.raises(InvalidRequestError, match=r"keeps the cloud class\(es\) 8 \(cloud_medium_probability\)"):
        flag_files(extracted, declared, grassland=[265, 266])
    masked = parcel_timeseries(tiny_cube, tiny_region.parcels, bands=["B04", "B08"])
    masked.attrs.clear()  # no record: the rows of masked statistics pass
    assert flag_parcels(masked, declared, grassland=[265, 266]).bare_soil.sum() < 10


def test_statistics_given_in_the_other_collection_s_place_are_named_so(tiny_cube, tiny_region, tmp_path,
                                                                      s2_extracted):
    """The Sentinel-1 extraction given as --timeseries was refused as "computed without the cloud mask (--no-mask)
    ... compute them with the mask": a mask Sentinel-1 has not, an option never given."""
    declared = pd.read_parquet(tiny_region.parcels, columns=["parcel_id", "crop_code"]).set_index("parcel_id").crop_code
    s1 = tmp_path / "s1"
    extract(tiny_region.parcels, tiny_cube, s1, collection="s1", bands=["VV", "VH"], progress=False)
    with pytest.raises(InvalidRequestError, match=r"the statistics at .*s1, given as --timeseries .*, are of the s1 "
                                                  r"cube: pass them as --s1 \(Python: s1=\)"):
        flag_files(s1, declared, grassland=[265, 266])
    with pytest.raises(InvalidRequestError, match=r"given as --s1 .*, are of the s2 cube: pass them as --timeseries"):
        flag_files(s2_extracted, declared, s1=s2_extracted, grassland=[265, 266])
    flags = flag_files(s2_extracted, declared, s1=s1, grassland=[265, 266])  # each in its place
    assert flags.parcel_id.is_unique and len(flags) >= len(declared) - 1


def test_a_timeseries_file_failing_to_read_past_its_first_part_gets_the_same_clear_error(tmp_path):
    """The statistics of a timeseries file are read a part at a time: a malformed line past the first part was
    pandas' own ParserError (a traceback on the command line), where one in the first part is said clearly. And
    pandas before 3.1 read a line of too many fields at the start of a part as the header's width, its extra fields
    dropped without a word (pandas-dev/pandas#40587): a line of too many fields is refused wherever it lies."""
    good = [f"p{i},2024-06-01,B04,10,0,0.05" for i in range(60)]
    for at in range(0, 60, 7):  # 28: the start of a part of 4 rows
        lines = ["parcel_id,time,band,count,masked,mean", *good[:at], "p9,2024-06-01,B04,10,0,0.05,1,2", *good[at:]]
        (tmp_path / "late.csv").write_text("\n".join(lines) + "\n")
        with pytest.raises(InvalidRequestError, match=r"cannot read .*late.csv .*Expected 6 columns, got 8: p9,"):
            list(statistics_parts(tmp_path / "late.csv", ["B04"], rows=4))


def test_statistics_recorded_without_the_cloud_mask_are_refused_before_their_rows_are_read(tmp_path):
    """The record of statistics computed without the cloud mask was read only once every row had been read and
    spilled (minutes and gigabytes of TMPDIR over a territory) before they were refused; it is read first now: a
    file whose rows could not even be read is refused for its mask."""
    (tmp_path / "unmasked.csv").write_bytes(bytes(range(256)))  # no row to read
    (tmp_path / "unmasked.csv.json").write_text('{"mask": null}')
    with pytest.raises(InvalidRequestError, match="computed without the cloud mask"):
        flag_files(tmp_path / "unmasked.csv", {"p1": 1})


def test_ids_declared_twice_once_compared_as_text_are_refused_clearly(tmp_path):
    """Parcel ids are compared as text: a declaration of 1 and of "1" is one parcel declared twice, refused as such
    (it was pandas' InvalidIndexError from deep in the batching, a traceback)."""
    rows = pd.DataFrame({"parcel_id": "1", "time": pd.Timestamp("2024-06-01"), "band": ["B04", "B08"], "count": 10,
                         "masked": 0, "mean": [0.05, 0.3]})
    rows.to_csv(tmp_path / "stats.csv", index=False)
    with pytest.raises(InvalidRequestError, match=r"declared twice \(e.g. '1'\)"):
        flag_files(tmp_path / "stats.csv", {1: "maize", "1": "wheat", 2: "maize"})


def test_a_parcel_file_of_other_fields_is_refused_and_undeclared_statistics_are_counted(s2_extracted, tiny_region):
    """Another region's parcel file whose ids coincide: its 217 parcels were judged against other fields'
    statistics, and the measured parcels it lacked (3,147 of the demo's 3,364) vanished without a word."""
    import geopandas as gpd

    parcels = gpd.read_parquet(tiny_region.parcels)
    declared = parcels.set_index("parcel_id").crop_code
    geometries = parcels.set_index("parcel_id").geometry
    assert flag_files(s2_extracted, declared, geometries=geometries).parcel_id.nunique() == len(parcels)
    moved = geometries.translate(xoff=5_000)  # the same ids, on fields 5 km away
    with pytest.raises(InvalidRequestError, match=r"^\d+ of the \d+ parcels both the extraction at .* and the parcel "
                                                  r"file hold are other fields there \(e.g. NL-\d+"):
        flag_files(s2_extracted, declared, geometries=moved)
    edited = geometries.copy()
    edited.iloc[0] = edited.iloc[0].buffer(-2)  # an outline amended a little is the same field
    flag_files(s2_extracted, declared, geometries=edited)
    flag_files(s2_extracted, declared, geometries=geometries.to_crs(4326))  # the same fields in lon/lat
    with pytest.raises(InvalidRequestError, match=r"^1 of the \d+ parcels"):  # one field moved among the same ones
        flag_files(s2_extracted, declared, geometries=edited.where(edited.index != edited.index[3],
                                                                   moved.iloc[3]).set_crs(geometries.crs))
    some = declared.iloc[:50]
    measured = set(read_timeseries(s2_extracted, bands=["B04"]).parcel_id.astype(str))
    with pytest.warns(UserWarning, match=rf"{len(measured - set(some.index))} of the {len(measured)} parcels of the "
                                         rf"statistics in .* have no declaration \(e.g. .*\): left out, no row"):
        flag_files(s2_extracted, some)


def test_the_record_of_a_timeseries_file_names_its_cube_mask_and_checksum(tiny_cube, tiny_region, tmp_path,
                                                                         monkeypatch):
    import hashlib
    import json
    import os

    from cardcube.cli import main
    from cardcube.spec import DEFAULT_SCL_MASK

    out = tmp_path / "ts.parquet"
    monkeypatch.chdir(tmp_path)  # the cube named relative to here: the record names it from anywhere
    assert main(["timeseries", "--cube", os.path.relpath(tiny_cube), "--parcels", str(tiny_region.parcels), "--bands",
                 "B04,B08", "--out", str(out), "--buffer", "-5"]) == 0
    described = describe_statistics(out)
    record = json.loads(out.with_name("ts.parquet.json").read_text())
    assert described["cube"] == record["cube"] == str(Path(tiny_cube).resolve()) and described["collection"] == "s2"
    assert described["mask"] == list(DEFAULT_SCL_MASK)  # the classes, as resolved
    assert described["buffer"] == -5 and described["bands"] == record["bands"]
    assert described["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest() == record["table"]["sha256"]
    assert described["cube_version"] == record["cube_version"]


def test_a_record_beside_another_table_is_not_taken_for_its_parameters(tiny_cube, tiny_region, tmp_path):
    """The table and its record are two renames: a run stopped between them leaves a new record beside an older
    table (or a table copied over by hand). The record's digest tells: its parameters are then unknown, not
    taken for the table's."""
    out = tmp_path / "ts.csv"
    assert main(["timeseries", "--cube", str(tiny_cube), "--parcels", str(tiny_region.parcels), "--bands", "B04",
                 "--out", str(out), "--no-mask"]) == 0
    assert statistics_parameters(out)["mask"] is None
    out.write_text(out.read_text().replace("\n", "\r\n"))  # another table of that name
    with pytest.warns(UserWarning, match=r"ts\.csv\.json is not of the table beside it"):
        assert statistics_parameters(out) == {}


def test_a_timeseries_file_s_unmeasured_parcels_get_a_row_not_judged(tiny_cube, tiny_region, tmp_path,
                                                                       monkeypatch):
    """A declared parcel ``cardcube timeseries`` could not measure (too small) had no row in the flags of its file,
    only a note, although the file's record lists its status and reason: as from an extraction, it gets a row, not
    judged, with them. A Parquet file written from the frame in Python carries the statuses in its own metadata."""
    parcels = gpd.read_parquet(tiny_region.parcels)
    declared = parcels.set_index("parcel_id").crop_code
    out = tmp_path / "ts.csv"
    assert main(["timeseries", "--cube", str(tiny_cube), "--parcels", str(tiny_region.parcels), "--bands", "B04,B08",
                 "--out", str(out)]) == 0
    status = pd.DataFrame(statistics_parameters(out)["parcels"])
    unmeasured = status[status.status != "ok"]
    assert len(unmeasured)  # the tiny region has a parcel too small for a pixel
    with pytest.warns(UserWarning, match="have no statistics"):  # the parcel too small
        frame = parcel_timeseries(tiny_cube, parcels, bands=["B04", "B08"])
    frame.to_parquet(tmp_path / "ts.parquet")
    reads = []  # the record of a register's statuses (300,000: 53 MB, 0.6 s a read) was read three times by flag
    monkeypatch.setattr(flag_files_module, "statistics_parameters", lambda path, **kw: reads.append(path) or
                        statistics_parameters(path, **kw))
    for path in (out, tmp_path / "ts.parquet"):
        flags = flag_files(path, declared).set_index("parcel_id")
        assert flags.index.is_unique and set(flags.index) == set(declared.index)
        rows = flags.loc[unmeasured.parcel_id.astype(str)]
        assert not rows.flagged.any() and rows.not_judged.tolist() == [
            f"every marker: no statistics ({s}: {r})" for s, r in zip(unmeasured.status, unmeasured.reason,
                                                                      strict=True)]
    assert reads == [out, tmp_path / "ts.parquet"]  # once each


def _notes(caught: list[warnings.WarningMessage]) -> list[str]:
    """The warnings flag gave, of those ``caught``: not a resource another test left to the garbage collector (an
    unclosed aiohttp session of an S3 test, said when collected during this one)."""
    return [str(w.message) for w in caught if not issubclass(w.category, ResourceWarning)]


@pytest.fixture(scope="module")
def s1_extracted(tiny_cube, tiny_region, tmp_path_factory):
    out = tmp_path_factory.mktemp("extract-s1")
    extract(tiny_region.parcels, tiny_cube, out, collection="s1", bands=["VH"], progress=False)
    return out


def test_flags_in_batches_of_a_few_parcels_are_those_of_all_parcels_at_once(s2_extracted, s1_extracted, tiny_region,
                                                                            tmp_path):
    """flag held some 40 KB per parcel (1.6 GB at 30,000 parcels): the rows are now judged a batch of parcels at a
    time, the crops' reference profiles and robust z-scores still over all their parcels. Batches of 7 parcels (31
    of them here) give every flag, score, reason and note of all parcels in memory at once, to the bit."""
    declared = pd.read_parquet(tiny_region.parcels, columns=["parcel_id", "crop_code"]).set_index("parcel_id").crop_code
    s2 = read_timeseries(s2_extracted, bands=["B04", "B08"]).astype({"parcel_id": str})
    s1 = read_timeseries(s1_extracted, bands=["VH"]).astype({"parcel_id": str})
    assert s2.parcel_id.nunique() > 20 * 7

    def flagged(how, **kwargs):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            flags = how(**kwargs)
        return flags, _notes(caught)

    whole, notes = flagged(flag_parcels, frame=s2, declared=declared, s1=s1, grassland=[265, 266],
                           batch_size=len(declared))
    assert whole.flagged.any() and whole.crop_mismatch.any() and whole.no_mowing.any() and notes
    for size in (7, 1):
        batched, batched_notes = flagged(flag_parcels, frame=s2, declared=declared, s1=s1, grassland=[265, 266],
                                         batch_size=size)
        pd.testing.assert_frame_equal(batched, whole, check_exact=True)
        assert batched_notes == notes
    files, file_notes = flagged(flag_files, timeseries=s2_extracted, declared=declared, s1=s1_extracted,
                                grassland=[265, 266], batch_size=7)
    pd.testing.assert_frame_equal(files[files.parcel_id.isin(whole.parcel_id)].reset_index(drop=True), whole,
                                  check_exact=True)
    assert files.attrs == whole.attrs and set(notes) <= set(file_notes)
    s2.to_csv(tmp_path / "ts.csv", index=False)  # a timeseries file, read in parts
    from_csv, _ = flagged(flag_files, timeseries=tmp_path / "ts.csv", declared=declared, grassland=[265, 266],
                          batch_size=7)
    alone, _ = flagged(flag_parcels, frame=s2, declared=declared, grassland=[265, 266])
    pd.testing.assert_frame_equal(from_csv, alone, check_exact=True)
    parts = list(statistics_parts(tmp_path / "ts.csv", ["B04", "B08"], rows=1000))
    assert len(parts) > 1 and max(map(len, parts)) < 2000
    pd.testing.assert_frame_equal(pd.concat(parts, ignore_index=True), read_statistics(tmp_path / "ts.csv", ["B04"]))
    for wrong in (0, -3, 2.5, True):
        with pytest.raises(InvalidRequestError, match="batch_size must be a whole number of parcels >= 1"):
            flag_files(s2_extracted, declared, batch_size=wrong)


def test_flags_of_parcels_whose_ids_follow_no_spatial_order_are_those_of_ids_that_do(tiny_cube, tiny_region,
                                                                                     s2_extracted, s1_extracted,
                                                                                     tmp_path):
    """A register's ids follow no spatial order (the synthetic regions' do), and the batches are placed as the
    extraction's files show the parcels, not by id: the profiles are put back in id order before the references.
    The tiny region's parcels renamed at random and extracted again get the flags, scores, reasons and notes of
    their own ids, at batch sizes 7 and 1, in files and in memory."""
    parcels = gpd.read_parquet(tiny_region.parcels)
    names = dict(zip(parcels.parcel_id.astype(str), [f"R{n:05d}" for n in np.random.default_rng(8).permutation(
        np.arange(len(parcels)) * 7 + 11)], strict=True))
    renamed = parcels.assign(parcel_id=parcels.parcel_id.astype(str).map(names))
    assert not renamed.parcel_id.is_monotonic_increasing
    renamed.to_parquet(tmp_path / "renamed.parquet")
    extract(tmp_path / "renamed.parquet", tiny_cube, tmp_path / "s2", bands=["B04", "B08"], progress=False)
    extract(tmp_path / "renamed.parquet", tiny_cube, tmp_path / "s1", collection="s1", bands=["VH"], progress=False)
    declared = parcels.set_index(parcels.parcel_id.astype(str)).crop_code

    def flagged(how, *args, **kwargs):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            flags = how(*args, grassland=[265, 266], **kwargs)
        return flags.set_index("parcel_id").sort_index(), flags.attrs, _notes(caught)

    own, attrs, notes = flagged(flag_files, s2_extracted, declared, s1=s1_extracted)
    expected = own.set_axis(own.index.map(names)).sort_index()
    assert expected.flagged.any() and expected.crop_mismatch.any() and expected.no_mowing.any()
    declared = declared.set_axis(declared.index.map(names))
    frames = [read_timeseries(tmp_path / c).astype({"parcel_id": str}) for c in ("s2", "s1")]
    for size in (7, 1):
        got, got_attrs, got_notes = flagged(flag_files, tmp_path / "s2", declared, s1=tmp_path / "s1",
                                            batch_size=size)
        pd.testing.assert_frame_equal(got, expected, check_exact=True)
        assert got_attrs == attrs and got_notes == notes
        shuffled = [f.sample(frac=1, random_state=size) for f in frames]  # rows in no order: batches in none
        got, _, got_notes = flagged(flag_parcels, shuffled[0], declared, s1=shuffled[1], batch_size=size)
        pd.testing.assert_frame_equal(got, expected.loc[got.index], check_exact=True)
        assert set(got_notes) <= set(notes)


def test_flag_parcels_keeps_the_profiles_of_a_frame_in_memory_in_memory(s2_extracted, tiny_region, tmp_path,
                                                                        monkeypatch):
    """flag_parcels wrote its frame's profiles to TMPDIR, which it had never needed (the frame, in memory, is far
    larger): without a writable temporary folder (a read-only container) it failed with an OSError; it needs none.
    The flags are those flag_files gives, whose profiles wait on disk."""
    import tempfile

    declared = pd.read_parquet(tiny_region.parcels, columns=["parcel_id", "crop_code"]).set_index("parcel_id").crop_code
    s2 = read_timeseries(s2_extracted, bands=["B04", "B08"]).astype({"parcel_id": str})
    on_disk = flag_files(s2_extracted, declared, grassland=[265, 266], batch_size=7)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no-such-folder"))  # as TMPDIR naming none
    with pytest.raises(OSError):
        tempfile.mkdtemp()
    flags = flag_parcels(s2, declared, grassland=[265, 266], batch_size=7)
    pd.testing.assert_frame_equal(flags, on_disk[on_disk.parcel_id.isin(flags.parcel_id)].reset_index(drop=True),
                                  check_exact=True)


def test_a_parquet_file_of_a_frame_is_read_with_the_parameters_its_metadata_records(tiny_cube, tiny_region, tmp_path):
    """A Parquet file written from ``parcel_timeseries``'s frame keeps its attrs (mask None) in its metadata, which
    flag_files read for the statuses alone: without the SCL counts (``stats=["mean"]`` and those columns dropped) the
    unmasked statistics were judged, every cloudy date of a meadow bare soil. Its mask and collection are read now,
    as flag_parcels reads them of the frame, and the record names its cube version."""
    declared = pd.read_parquet(tiny_region.parcels, columns=["parcel_id", "crop_code"]).set_index("parcel_id").crop_code
    frame = parcel_timeseries(tiny_cube, tiny_region.parcels, bands=["B04", "B08"], stats=["mean"], mask=None)
    frame = frame.drop(columns=[c for c in frame.columns if c.startswith("scl_")])
    frame.attrs.pop("parcel_status")
    frame.to_parquet(tmp_path / "unmasked.parquet")
    assert pd.read_parquet(tmp_path / "unmasked.parquet").attrs["mask"] is None
    with pytest.raises(InvalidRequestError, match=r"computed without the cloud mask \(--no-mask, mask=None\)"):
        flag_files(tmp_path / "unmasked.parquet", declared, grassland=[265, 266])
    radar = parcel_timeseries(tiny_cube, tiny_region.parcels, collection="s1", bands=["VH"], stats=["mean"])
    radar.attrs.pop("parcel_status")
    radar.to_parquet(tmp_path / "s1.parquet")
    with pytest.raises(InvalidRequestError, match=r"given as --timeseries .*, are of the s1 cube: pass them as --s1"):
        flag_files(tmp_path / "s1.parquet", declared, grassland=[265, 266])
    assert statistics_parameters(tmp_path / "s1.parquet")["collection"] == "s1"
    assert "parcel_status" not in statistics_parameters(tmp_path / "unmasked.parquet")
    assert describe_statistics(tmp_path / "s1.parquet")["cube_version"] == radar.attrs["cube_version"]


def test_a_file_without_a_column_ndvi_needs_or_of_other_ids_says_what_to_do(tmp_path):
    """A timeseries file without ``masked`` was "the statistics frame lacks column(s) ['masked']", and statistics of
    other ids told a command-line user to call ``parcels.set_index('parcel_id')``: the errors say what NDVI reads
    and which option chooses the ids."""
    times = pd.date_range("2024-05-01", periods=4, freq="5D")
    rows = pd.DataFrame([{"parcel_id": p, "time": t, "band": b, "count": 10, "masked": 0, "mean": 0.1}
                         for p in ("a", "b") for t in times for b in ("B04", "B08")])
    rows.drop(columns="masked").to_csv(tmp_path / "no-masked.csv", index=False)
    with pytest.raises(InvalidRequestError, match=r"lacks column\(s\) \['masked'\]: NDVI is taken of the B04 and B08 "
                                                  r"means on dates with enough clear pixels \(count, masked\)"):
        flag_files(tmp_path / "no-masked.csv", pd.Series({"a": 1, "b": 1}))
    rows.to_csv(tmp_path / "ids.csv", index=False)
    with pytest.raises(InvalidRequestError, match=r"the frame's parcels are 'a', 'b'; .*cardcube flag: --id-column"):
        flag_files(tmp_path / "ids.csv", pd.Series({"x": 1, "y": 1}))


def test_sentinel1_statistics_recorded_in_other_units_than_db_are_refused(tiny_cube, tiny_region, tmp_path,
                                                                         s2_extracted):
    """VH averaged from a Dataset converted to linear power (its attrs say units 'linear', and so do the statistics')
    was read as dB: every drop far below 1.2 dB, every meadow of the tiny region flagged unmown."""
    from cube.dataset import open_cube

    declared = pd.read_parquet(tiny_region.parcels, columns=["parcel_id", "crop_code"]).set_index("parcel_id").crop_code
    ds = open_cube(tiny_cube, collection="s1")
    linear = ds.assign(VH=(10 ** (ds.VH / 10)).assign_attrs(units="linear"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s1 = parcel_timeseries(linear, tiny_region.parcels, bands=["VH"], stats=["mean"])
    assert s1.attrs["units"] == {"VH": "linear"}
    s2 = read_timeseries(s2_extracted, bands=["B04", "B08"])
    refused = r"the Sentinel-1 statistics .*give VH in 'linear': the mowing marker's drop \(1.2 dB by default\)"
    with pytest.raises(InvalidRequestError, match=refused):
        flag_parcels(s2, declared, grassland=[265, 266], s1=s1)
    s1.attrs.pop("parcel_status")
    s1.to_parquet(tmp_path / "linear.parquet")
    with pytest.raises(InvalidRequestError, match=refused):
        flag_files(s2_extracted, declared, grassland=[265, 266], s1=tmp_path / "linear.parquet")
    db = s1.assign(mean=10 * np.log10(s1["mean"]))
    db.attrs["units"] = {"VH": "dB"}
    flags = flag_parcels(s2, declared, grassland=[265, 266], s1=db)
    assert flags.no_mowing.sum() < flags.declared.isin([265, 266]).sum() / 4  # in dB: the cuts are seen


def test_a_flag_killed_outright_leaves_its_batches_only_until_the_next_flag(s2_extracted, tiny_region, tmp_path):
    """kill -9 (the OOM killer) removes nothing: the killed run's batches in TMPDIR (about 2 MB per 1,000 parcels)
    stayed there for good, one folder a killed run; the next flag removes them, and never a live run's."""
    from cardcube.scratch import scratch_folder

    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    argv = [sys.executable, "-m", "cardcube.cli", "flag", "--timeseries", str(s2_extracted), "--parcels",
            str(tiny_region.parcels), "--out", str(tmp_path / "flags.csv")]
    env = {**os.environ, "TMPDIR": str(tmpdir), "PYTHONPATH": str(REPO)}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TMPDIR", str(tmpdir))
        patch.setattr(tempfile, "tempdir", None)  # TMPDIR read again
        with scratch_folder("flag") as live:  # a run at work meanwhile
            killed = subprocess.run(argv, env={**env, "CARDCUBE_KILL_AT": "flag-spilled"}, capture_output=True,
                                    text=True, timeout=300)
            assert killed.returncode == -9, killed.stderr
            left = set(tmpdir.iterdir()) - {live}
            assert left  # its batches, as it was killed
            done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
            assert done.returncode == 0, done.stderr
            assert all(f"removed {path}, the temporary folder of a cardcube flag" in done.stderr for path in left)
            assert list(tmpdir.iterdir()) == [live]
    assert list(tmpdir.iterdir()) == []
