"""``cardcube timeseries`` and ``cardcube chip``: the CLI writes what the Python API returns."""

from __future__ import annotations

import hashlib
import json

import geopandas as gpd
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from shapely.geometry import Polygon

from cardcube.cli import main
from cardcube.errors import InvalidRequestError
from cardcube.storage import open_store
from cube.extract import extract
from cube.ledger import read_version
from cube.timeseries import parcel_timeseries


def test_timeseries_cli_writes_the_api_frame(tiny_cube, tiny_region, tmp_path, capsys):
    parcels = gpd.read_parquet(tiny_region.parcels)
    ids = list(parcels.parcel_id.iloc[10:12])
    out = tmp_path / "stats.parquet"
    code = main(["timeseries", "--cube", str(tiny_cube), "--parcels", str(tiny_region.parcels), *ids,
                 "--bands", "b04,NDVI,B04", "--stats", "count, MEAN,p10,mean", "--out", str(out)])
    assert code == 0 and "from cube version 1" in capsys.readouterr().out
    written = pd.read_parquet(out)
    assert "p10" in written.columns and "median" not in written.columns
    expected = parcel_timeseries(tiny_cube, ids, registry=parcels, bands=["B04", "NDVI"],
                                 stats=["count", "mean", "p10"])
    pd.testing.assert_frame_equal(written.reset_index(drop=True), expected.reset_index(drop=True),
                                  check_categorical=False, check_dtype=False)
    assert pq.read_schema(out).field("time").type == pa.timestamp("us")  # Spark reads no TIMESTAMP(NANOS)
    record = json.loads((tmp_path / "stats.parquet.json").read_text())  # what a CSV cannot carry, beside it
    assert record["cube_version"] == 1 and record["collection"] == "s2" and record["bands"] == ["B04", "NDVI"]
    assert record["stats"] == ["count", "mean", "p10"]  # as read, not as typed ("count, MEAN,p10,mean")
    assert [p["parcel_id"] for p in record["parcels"]] == ids and {p["status"] for p in record["parcels"]} == {"ok"}


def test_timeseries_cli_takes_the_scl_classes_to_mask(tiny_cube, tiny_region, tmp_path, capsys):
    """--no-mask was the one choice: an agency masking dark areas and unclassified pixels too had no option."""
    parcels = gpd.read_parquet(tiny_region.parcels)
    ids, out = list(parcels.parcel_id.iloc[10:12]), tmp_path / "stats.parquet"
    strict = [0, 1, 2, 3, 7, 8, 9, 10, 11]
    assert main(["timeseries", "--cube", str(tiny_cube), "--parcels", str(tiny_region.parcels), *ids,
                 "--bands", "B04", "--mask", ",".join(map(str, strict)), "--out", str(out)]) == 0
    expected = parcel_timeseries(tiny_cube, ids, registry=parcels, bands=["B04"], mask=strict)
    pd.testing.assert_frame_equal(pd.read_parquet(out).reset_index(drop=True), expected.reset_index(drop=True),
                                  check_categorical=False, check_dtype=False)
    assert (expected["masked"] > parcel_timeseries(tiny_cube, ids, registry=parcels, bands=["B04"])["masked"]).any()
    assert json.loads((tmp_path / "stats.parquet.json").read_text())["mask"] == strict
    capsys.readouterr()
    with pytest.raises(SystemExit) as refused:
        main(["timeseries", "--cube", str(tiny_cube), "--parcels", str(tiny_region.parcels), *ids, "--mask", "3",
              "--no-mask", "--out", str(out)])
    assert refused.value.code == 2 and "not allowed with argument --mask" in capsys.readouterr().err
    # no class given (an unset variable in a script) was the default mask, without a word
    assert main(["timeseries", "--cube", str(tiny_cube), "--parcels", str(tiny_region.parcels), *ids, "--mask", "",
                 "--out", str(out)]) != 0
    assert "mask '': give 'default', 'none'" in capsys.readouterr().err


def test_timeseries_cli_over_many_parcels_points_to_extract(tiny_cube, tiny_region, tmp_path, capsys, monkeypatch):
    """A whole parcel file (the demo's: 31 s, 2.6 GB) printed nothing until its end, and no word of extract."""
    monkeypatch.setattr("cube.cli.MANY_PARCELS", 100)  # the tiny region has a couple of hundred
    command = ["timeseries", "--cube", str(tiny_cube), "--parcels", str(tiny_region.parcels), "--bands", "B04",
               "--stats", "count", "--time", "2024-05-01/2024-05-10"]
    assert main([*command, "--out", str(tmp_path / "all.csv")]) == 0
    note = capsys.readouterr().err
    assert f"parcels, read as one request (no progress shown until it ends); for a territory, cardcube extract " \
           f"--parcels {tiny_region.parcels} --cube {tiny_cube} --out DIR is the job" in note
    assert int(note.split("note: ")[1].split()[0]) == len(gpd.read_parquet(tiny_region.parcels))
    ids = list(gpd.read_parquet(tiny_region.parcels).parcel_id.iloc[:3])
    assert main([*command[:5], *ids, *command[5:], "--out", str(tmp_path / "few.csv")]) == 0
    assert "cardcube extract" not in capsys.readouterr().err
    assert main([*command[:5], *ids[:1], *command[5:], "--out", str(tmp_path / "few.csv")]) == 0  # an earlier output
    assert set(pd.read_csv(tmp_path / "few.csv").parcel_id) == {ids[0]}  # replaced


def test_timeseries_cli_says_when_no_date_falls_in_the_time_range(tiny_cube, tiny_region, tmp_path, capsys):
    pid = gpd.read_parquet(tiny_region.parcels).parcel_id.iloc[10]
    code = main(["timeseries", "--cube", str(tiny_cube), "--parcels", str(tiny_region.parcels), pid,
                 "--time", "2031-05", "--out", str(tmp_path / "x.csv")])
    err = capsys.readouterr().err
    assert code == 1 and "no acquisition within the time range 2031-05: version" in err and "holds dates from" in err



def test_chip_and_extract_say_when_no_date_falls_in_the_time_range(tiny_cube, tiny_region, tmp_path, capsys):
    pid = gpd.read_parquet(tiny_region.parcels).parcel_id.iloc[10]
    for command in (["chip", pid, "--size", "16", "--out", str(tmp_path / "chips")],
                    ["extract", "--quiet", "--out", str(tmp_path / "ex")]):  # exit 1 as timeseries: nothing measured
        assert main([*command, "--cube", str(tiny_cube), "--parcels", str(tiny_region.parcels), "--time", "2023"]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"cardcube {command[0]}: error: no acquisition within the time range " \
            "2023: version 1 of the s2 cube holds dates from 2024-" in err
    assert not (tmp_path / "chips").exists() and not (tmp_path / "ex").exists()


def test_timeseries_cli_reports_unknown_ids(tiny_cube, tiny_region, tmp_path, capsys):
    code = main(["timeseries", "--cube", str(tiny_cube), "--parcels", str(tiny_region.parcels), "NOPE",
                 "--out", str(tmp_path / "x.csv")])
    assert code == 2 and "NOPE" in capsys.readouterr().err


def test_chip_cli_writes_a_png_per_date_and_a_sheet(tiny_cube, tiny_region, tmp_path):
    pid = gpd.read_parquet(tiny_region.parcels).parcel_id.iloc[20]
    assert main(["chip", "--cube", str(tiny_cube), "--parcels", str(tiny_region.parcels), pid, "--size", "32",
                 "--out", str(tmp_path / "chips")]) == 0
    pngs = sorted((tmp_path / "chips").glob("*.png"))
    assert len(pngs) == 19 and Image.open(pngs[0]).size == (128, 128)
    assert main(["chip", "--cube", str(tiny_cube), "--parcels", str(tiny_region.parcels), pid, "--size", "32",
                 "--sheet", "--out", str(tmp_path / "sheet")]) == 0
    assert (tmp_path / "sheet" / f"{pid}_s2_B04-B03-B02_season.png").exists()


def test_a_folder_in_place_of_a_chip_is_found_before_any_chip_is_written(tiny_cube, tiny_region, tmp_path, capsys):
    """A folder named as one of the chips (the last date's) was found by its write: the chips of the dates before it
    were written, then IsADirectoryError. It is refused before any chip is written, naming it."""
    pid = gpd.read_parquet(tiny_region.parcels).parcel_id.iloc[20]
    command = ["chip", "--cube", str(tiny_cube), "--parcels", str(tiny_region.parcels), pid, "--size", "32"]
    assert main([*command, "--out", str(tmp_path / "first")]) == 0
    last = sorted(p.name for p in (tmp_path / "first").iterdir())[-1]
    (tmp_path / "chips" / last).mkdir(parents=True)
    for sheet in ([], ["--sheet"]):
        if sheet:
            (tmp_path / "chips" / f"{pid}_s2_B04-B03-B02_season.png").mkdir()
        assert main([*command, *sheet, "--out", str(tmp_path / "chips")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "the name of a chip, is a folder there: move it, or give another --out" in err
        assert all(p.is_dir() for p in (tmp_path / "chips").iterdir())  # no chip written


def test_chip_cli_given_two_ids_says_it_writes_one_parcel_s(tiny_cube, tiny_region, tmp_path, capsys):
    """It printed the top-level usage and "unrecognized arguments" (the second id)."""
    a, b = gpd.read_parquet(tiny_region.parcels).parcel_id.iloc[20:22]
    assert main(["chip", "--cube", str(tiny_cube), "--parcels", str(tiny_region.parcels), a, b, "--out",
                 str(tmp_path / "c")]) == 2
    assert f"chip writes the chips of one parcel, 2 ids given ({a}, {b}): run it once per parcel" in \
        capsys.readouterr().err and not (tmp_path / "c").exists()


def test_a_sheet_too_large_is_refused_before_anything_is_read(tiny_cube, tiny_region, tmp_path, capsys):
    """`chip --sheet --size 1024` read and decoded every date (8 s, 2 GB on the demo) before it was refused; the
    dates the version holds tell the sheet's least size first, as the REST service does. Shown on a copy of the
    cube whose B04 shards are gone: a read would fail on them."""
    import shutil

    cube = shutil.copytree(tiny_cube, tmp_path / "cube")
    for shard in cube.glob("s2/*/cube.zarr/**/B04/c/**/*"):
        shard.unlink() if shard.is_file() else None
    pid = gpd.read_parquet(tiny_region.parcels).parcel_id.iloc[20]
    command = ["chip", "--cube", str(cube), "--parcels", str(tiny_region.parcels), pid, "--out", str(tmp_path / "c")]
    assert main([*command, "--size", "1024", "--sheet"]) == 2
    assert "a season sheet of 19 dates of 1024 px at scale 3 would be at least" in capsys.readouterr().err
    assert main([*command, "--size", "16", "--sheet"]) == 2  # a sheet of that size reads, and finds the loss
    assert "stored are missing" in capsys.readouterr().err


def test_parcel_files_without_ids_or_missing_are_one_line_errors(tiny_cube, tiny_region, tmp_path, capsys):
    parcels = gpd.read_parquet(tiny_region.parcels).sort_values("area_ha").iloc[-5:]
    renamed = tmp_path / "field_ids.gpkg"
    parcels.rename(columns={"parcel_id": "field_id"}).to_file(renamed)
    base = ["timeseries", "--cube", str(tiny_cube), "--bands", "B04", "--out", str(tmp_path / "s.csv")]
    assert main([*base, "--parcels", str(renamed)]) == 2  # row numbers are no parcel ids
    err = capsys.readouterr().err
    assert "has no 'parcel_id' column (columns: field_id" in err and "name the parcel id column with --id-column" in err
    assert main([*base, "--parcels", str(renamed), "--id-column", "field_id"]) == 0
    csv = pd.read_csv(tmp_path / "s.csv")
    assert set(csv.parcel_id) == set(parcels.parcel_id)
    assert csv.time.str.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ").all()  # UTC, said so (was no Z)
    assert main([*base[:-1], str(tmp_path / "s.parquet"), "--parcels", str(renamed), "--id-column", "field_id"]) == 0
    parquet = pd.read_parquet(tmp_path / "s.parquet")
    assert (pd.to_datetime(csv.time, utc=True) == pd.to_datetime(parquet.time, utc=True)).all()
    capsys.readouterr()
    assert main([*base, "--parcels", str(tmp_path / "missing.gpkg")]) == 2
    assert "no parcel file at" in capsys.readouterr().err


def test_parcels_without_statistics_are_reported_once(tiny_cube, tiny_region, tmp_path, capsys, recwarn):
    assert main(["timeseries", "--cube", str(tiny_cube), "--parcels", str(tiny_region.parcels), "--bands", "B04",
                 "--buffer", "-30", "--out", str(tmp_path / "s.csv")]) == 0
    out = capsys.readouterr().out
    assert out.count("no statistics:") > 0 and not [w for w in recwarn if "no statistics" in str(w.message)]


def test_parcels_without_statistics_are_listed_up_to_a_bound(tiny_cube, tiny_region, tmp_path, capsys):
    """A register reaching beyond the cube (50,000 parcels, 47,500 of them outside it) printed a line for each
    parcel without statistics; the first 20 are named, and the rest counted, their reasons in the record."""
    parcels = gpd.read_parquet(tiny_region.parcels)
    beyond = parcels.assign(parcel_id=[f"far-{i}" for i in range(len(parcels))],
                            geometry=parcels.geometry.translate(50_000, 0))
    pd.concat([parcels.iloc[:5], beyond]).to_parquet(tmp_path / "register.parquet")
    assert main(["timeseries", "--cube", str(tiny_cube), "--parcels", str(tmp_path / "register.parquet"), "--bands",
                 "B04", "--out", str(tmp_path / "s.csv")]) == 0
    out = capsys.readouterr().out
    record = json.loads((tmp_path / "s.csv.json").read_text())
    unmeasured = [p for p in record["parcels"] if p["status"] != "ok"]
    assert len(unmeasured) > len(beyond) > 20 == out.count("no statistics:")
    more = len(unmeasured) - 20
    assert f"  ... and {more} more parcel(s) without statistics ({tmp_path / 's.csv'}.json gives each one's reason)\n" \
        in out


def test_a_timeseries_parquet_of_a_register_keeps_the_statuses_in_its_record_not_its_metadata(
        tiny_cube, tiny_region, tmp_path, capsys):
    """Each parcel's status went into the Parquet file's metadata, which pandas and pyarrow store three times: a
    register of 300,000 parcels gave 193 MB for 41,040 rows, a footer no reader opened ("Exceeded size limit"),
    flag included. The record beside it lists them; the file keeps the rest of the frame's attrs, and flag still
    says why each parcel without statistics is not judged."""
    parcels = gpd.read_parquet(tiny_region.parcels)
    beyond = parcels.assign(parcel_id=[f"far-{i}" for i in range(len(parcels))],
                            geometry=parcels.geometry.translate(50_000, 0))
    pd.concat([parcels.iloc[:5], beyond]).to_parquet(tmp_path / "register.parquet")
    out = tmp_path / "s.parquet"
    assert main(["timeseries", "--cube", str(tiny_cube), "--parcels", str(tmp_path / "register.parquet"), "--bands",
                 "B04,B08", "--out", str(out)]) == 0
    metadata = b"".join(pq.read_schema(out).metadata.values())
    assert b"far-0" not in metadata and b"parcel_status" not in metadata  # not once per parcel, nor base64'd
    written = pd.read_parquet(out)
    assert written.attrs["cube_version"] == 1 and written.attrs["mask"] and written.attrs["units"]["B04"] == "1"
    assert set(written.parcel_id) == set(parcels.parcel_id.iloc[:5]) - {"NL-000002"}  # too small
    record = json.loads((tmp_path / "s.parquet.json").read_text())
    assert len(record["parcels"]) == 5 + len(beyond)
    assert (tmp_path / "s.parquet.json").read_text() == json.dumps(record, indent=2) + "\n"  # written in pieces
    assert main(["flag", "--timeseries", str(out), "--parcels", str(tmp_path / "register.parquet"), "--out",
                 str(tmp_path / "f.csv")]) == 0
    flags = pd.read_csv(tmp_path / "f.csv", keep_default_na=False).set_index("parcel_id")
    assert flags.loc["far-0", "not_judged"].startswith("every marker: no statistics (outside: outside the data of "
                                                       "every tile of the s2 cube: it lies at lon ")


@pytest.mark.parametrize("command", ["timeseries", "extract"])
def test_a_buffer_of_no_finite_number_is_refused_before_any_work(tiny_cube, tiny_region, tmp_path, capsys, command):
    """--buffer nan gave a traceback (shapely's None buffer), after extract had written its manifest."""
    pid = gpd.read_parquet(tiny_region.parcels).parcel_id.iloc[10]
    out = tmp_path / ("s.csv" if command == "timeseries" else "ex")
    with pytest.raises(SystemExit) as stop:
        main([command, "--cube", str(tiny_cube), "--parcels", str(tiny_region.parcels), "--buffer", "nan",
              "--out", str(out)])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "argument --buffer: expected a number of metres, got 'nan'" in err
    assert "Traceback" not in err and not out.exists()
    with pytest.raises(InvalidRequestError, match="finite number of metres"):
        parcel_timeseries(tiny_cube, [pid], registry=gpd.read_parquet(tiny_region.parcels), buffer=float("inf"))
    with pytest.raises(InvalidRequestError, match="finite number of metres"):
        extract(tiny_region.parcels, tiny_cube, tmp_path / "ex2", buffer=float("nan"), progress=False)
    assert not (tmp_path / "ex2").exists()


def test_an_empty_geometry_in_the_parcel_file_stops_that_parcel_only(tiny_cube, tiny_region, tmp_path, capsys):
    """One empty geometry in a register refused every parcel of it; and an id given twice was called an id
    "shared by several parcels" of the file."""
    some = gpd.read_parquet(tiny_region.parcels).iloc[10:12].copy()
    some.loc[some.index[0], "geometry"] = Polygon()
    some.to_file(tmp_path / "lpis.gpkg")
    empty, good = some.parcel_id.tolist()
    base = ["timeseries", "--cube", str(tiny_cube), "--parcels", str(tmp_path / "lpis.gpkg"), "--bands", "B04"]
    assert main([*base, good, good, "--out", str(tmp_path / "one.csv")]) == 0
    assert set(pd.read_csv(tmp_path / "one.csv").parcel_id) == {good}
    assert main([*base, "--out", str(tmp_path / "all.csv")]) == 0  # every parcel of the file: the empty one listed
    assert f"no statistics: parcel {empty}: has an empty geometry" in capsys.readouterr().out
    record = json.loads((tmp_path / "all.csv.json").read_text())
    assert {p["parcel_id"]: p["status"] for p in record["parcels"]} == {good: "ok", empty: "invalid"}
    assert main([*base, empty, "--out", str(tmp_path / "none.csv")]) == 2
    assert capsys.readouterr().err == f"cardcube timeseries: error: parcel {empty}: has an empty geometry\n"


def test_a_point_of_no_number_is_one_readable_error(tiny_cube, tiny_region, tmp_path, capsys):
    """chip --point nan 52 gave a traceback (NaN passed the lon/lat check), and timeseries --point nan 52 an error
    spelling out the parcels' CRS as a page of PROJJSON."""
    assert main(["chip", "--cube", str(tiny_cube), "--point", "nan", "52", "--out", str(tmp_path / "c")]) == 2
    assert capsys.readouterr().err == ("cardcube chip: error: the point's coordinates (nan, 52.0, nan, 52.0) are not "
                                       "lon/lat in EPSG:4326: give a lon/lat point, shapely.geometry.Point(lon, lat)\n")
    assert main(["timeseries", "--cube", str(tiny_cube), "--parcels", str(tiny_region.parcels), "--point", "nan", "52",
                 "--out", str(tmp_path / "s.csv")]) == 2
    assert capsys.readouterr().err == ("cardcube timeseries: error: the point's coordinates (nan, 52.0, nan, 52.0) are "
                                       "not lon/lat in EPSG:4326: give lon, lat (Python: or name their CRS, crs=)\n")
    assert main(["timeseries", "--cube", str(tiny_cube), "--parcels", str(tiny_region.parcels), "--point", "682400",
                 "5843400", "--out", str(tmp_path / "s.csv")]) == 2  # metres: "no position", naming no cause
    assert "the point's coordinates (682400.0, 5843400.0, " in capsys.readouterr().err


@pytest.mark.parametrize("command", ["timeseries", "chip", "extract"])
@pytest.mark.parametrize("value", ["latest", "0", "1.5"])
def test_as_of_is_a_version_number(tiny_cube, tiny_region, tmp_path, capsys, command, value):
    """--as-of latest was argparse's bare "invalid int value", and --as-of 0 a version the cube was searched for."""
    with pytest.raises(SystemExit) as stop:
        main([command, "--cube", str(tiny_cube), "--parcels", str(tiny_region.parcels), "--as-of", value,
              "--out", str(tmp_path / "out")])
    assert stop.value.code == 2 and f"argument --as-of: expected a whole number >= 1, got '{value}'" in \
        capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("option", "value"), [("--scale", "0"), ("--size", "0"), ("--size", "-3")])
def test_chip_cli_refuses_a_size_or_scale_below_one(tiny_cube, tiny_region, tmp_path, capsys, option, value):
    """--scale 0 was taken as no --scale (the default 4) without a word; --size 0 was "too large: lower the size"."""
    pid = gpd.read_parquet(tiny_region.parcels).parcel_id.iloc[20]
    with pytest.raises(SystemExit) as stop:
        main(["chip", "--cube", str(tiny_cube), "--parcels", str(tiny_region.parcels), pid, option, value,
              "--out", str(tmp_path / "chips")])
    assert stop.value.code == 2 and f"argument {option}: expected a whole number >= 1, got '{value}'" in \
        capsys.readouterr().err
    assert not (tmp_path / "chips").exists()


def test_chip_cli_checks_bands_and_defaults_per_collection(tiny_cube, tiny_region, tmp_path, capsys):
    pid = gpd.read_parquet(tiny_region.parcels).parcel_id.iloc[20]
    base = ["chip", "--cube", str(tiny_cube), "--parcels", str(tiny_region.parcels), pid, "--size", "16"]
    assert main([*base, "--bands", "FOO", "--out", str(tmp_path / "bad")]) == 2
    assert "unknown band(s) FOO" in capsys.readouterr().err
    assert main([*base, "--collection", "s1", "--bands", "NDVI", "--out", str(tmp_path / "bad")]) == 2
    assert "unknown band(s) NDVI" in capsys.readouterr().err  # an S2 index cannot be made from S1
    assert main([*base, "--collection", "s1", "--sheet", "--out", str(tmp_path / "s1")]) == 0  # VH_VV by default
    assert (tmp_path / "s1" / f"{pid}_s1_VH_VV_season.png").exists()


def test_chips_of_other_collections_and_bands_share_a_folder(tiny_cube, tiny_region, tmp_path):
    """The collection and the bands are in every file name: an S1 sheet or NDVI chips written into the folder of
    the true-colour ones overwrite none of them."""
    pid = gpd.read_parquet(tiny_region.parcels).parcel_id.iloc[20]
    base = ["chip", "--cube", str(tiny_cube), "--parcels", str(tiny_region.parcels), pid, "--size", "16",
            "--time", "2024-06-01/2024-06-10", "--out", str(tmp_path)]
    for extra in ([], ["--bands", "ndvi"], ["--sheet"], ["--sheet", "--collection", "s1"]):
        assert main([*base, *extra]) == 0
    names = sorted(p.name for p in tmp_path.glob("*.png"))
    rgb, ndvi = [n for n in names if "_s2_B04-B03-B02_2024" in n], [n for n in names if "_s2_NDVI_2024" in n]
    assert len(rgb) == len(ndvi) >= 1
    assert f"{pid}_s2_B04-B03-B02_season.png" in names and f"{pid}_s1_VH_VV_season.png" in names
    assert len(names) == 2 * len(rgb) + 2


def test_flag_cli_refuses_what_would_check_nothing(tiny_region, tmp_path, capsys):
    assert main(["flag", "--timeseries", str(tmp_path / "nodir"), "--parcels", str(tiny_region.parcels),
                 "--out", str(tmp_path / "f.csv")]) == 2
    err = capsys.readouterr().err
    assert "no statistics at" in err and "no --grassland codes" not in err  # a note before the error misled


def test_flag_cli_refuses_rules_given_twice_and_an_id_column_that_is_the_crop_column(tiny_region, tmp_path, capsys):
    rules = tmp_path / "rules.json"
    rules.write_text('{"bare_ndvi": 0.25, "bare_ndvi": 0.5}')  # json keeps the last without a word
    common = ["flag", "--timeseries", str(tmp_path / "nodir"), "--parcels", str(tiny_region.parcels), "--out",
              str(tmp_path / "f.csv")]
    assert main([*common, "--rules", str(rules)]) == 2
    assert "bare_ndvi given more than once: which value is meant?" in capsys.readouterr().err
    assert main([*common, "--id-column", "crop_code"]) == 2  # was a traceback (KeyError), exit 1
    assert "--id-column and --crop-column both name the column 'crop_code'" in capsys.readouterr().err
    rules.write_bytes(b'\xef\xbb\xbf{"bare_ndvi": 30}')  # as Windows Notepad saves it: read, its BOM left out
    assert main([*common, "--rules", str(rules)]) == 2
    assert "bare_ndvi = 30 (must be an NDVI in (-1, 1))" in capsys.readouterr().err


def test_flag_cli_reads_zero_padded_ids_of_a_csv_and_says_what_it_does_not_judge(tiny_cube, tiny_region, tmp_path,
                                                                                  capsys):
    parcels = gpd.read_parquet(tiny_region.parcels)
    padded = parcels.assign(parcel_id=[f"{i:06d}" for i in range(len(parcels))])  # as many registers number them
    padded.to_parquet(tmp_path / "padded.parquet")
    csv = tmp_path / "june.csv"
    assert main(["timeseries", "--cube", str(tiny_cube), "--parcels", str(tmp_path / "padded.parquet"),
                 "--bands", "B04,B08", "--time", "2024-06", "--out", str(csv)]) == 0
    assert main(["flag", "--timeseries", str(csv), "--parcels", str(tmp_path / "padded.parquet"), "--grassland",
                 ",".join(map(str, sorted(set(parcels.crop_code))[:3])), "--out", str(tmp_path / "f.csv")]) == 0
    out, err = capsys.readouterr()
    flags = pd.read_csv(tmp_path / "f.csv", dtype={"parcel_id": str}, keep_default_na=False)
    assert set(flags.parcel_id) <= set(padded.parcel_id) and len(flags) > 100  # matched as text, "000042"
    assert "note: the Sentinel-2 dates span" in err and not flags.no_mowing.any()  # a month judges no meadow
    assert "markers the data could not judge (column not_judged)" in out  # and each meadow's row says so
    assert flags.not_judged.str.contains("no_mowing: the Sentinel-2 dates span").sum() > 10
    record = json.loads((tmp_path / "f.csv.json").read_text())  # the version the CSV's rows were read from
    assert record["inputs"]["timeseries"]["cube_version"] == read_version(open_store(tiny_cube), "s2").version
    # and the declarations it judged: the register corrected under the same name gives other flags
    assert record["inputs"]["parcels_sha256"] == hashlib.sha256((tmp_path / "padded.parquet").read_bytes()).hexdigest()
    assert main(["flag", "--timeseries", str(csv), "--parcels", str(tmp_path / "padded.parquet"), "--grassland",
                 ",".join(map(str, sorted(set(parcels.crop_code))[:3])), "--out", str(tmp_path / "f7.csv"),
                 "--batch-size", "7"]) == 0  # judged 7 parcels at a time: the same flags
    assert (tmp_path / "f7.csv").read_bytes() == (tmp_path / "f.csv").read_bytes()
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        main(["flag", "--timeseries", str(csv), "--parcels", str(tmp_path / "padded.parquet"), "--out",
              str(tmp_path / "f0.csv"), "--batch-size", "0"])
    assert stop.value.code == 2 and "--batch-size: expected a whole number >= 1, got '0'" in capsys.readouterr().err


def test_flag_cli_reads_an_extraction_on_s3(tiny_cube, tiny_region, tmp_path, s3_bucket, monkeypatch, capsys):
    """What extract writes to a bucket (extract --out s3://..., as on a cluster) flag reads, as from a folder."""
    for name, value in s3_bucket.server.environment().items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL")  # the endpoint from --endpoint-url, as extract took it
    endpoint = ["--endpoint-url", s3_bucket.server.endpoint_url]
    extracted = {"local": str(tmp_path / "ex"), "s3": s3_bucket.url_for("ex")}
    for out in extracted.values():
        assert main(["extract", "--cube", str(tiny_cube), "--parcels", str(tiny_region.parcels), "--bands", "B04,B08",
                     "--out", out, "--quiet", *endpoint]) == 0
    grassland = ",".join(map(str, sorted(set(gpd.read_parquet(tiny_region.parcels).crop_code))[:3]))
    for where, out in extracted.items():
        assert main(["flag", "--timeseries", out, "--parcels", str(tiny_region.parcels), "--grassland", grassland,
                     "--out", str(tmp_path / f"{where}.csv"), *endpoint]) == 0, capsys.readouterr().err
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "s3.csv"), pd.read_csv(tmp_path / "local.csv"))
    record = json.loads((tmp_path / "s3.csv.json").read_text())["inputs"]["timeseries"]
    assert record["path"] == extracted["s3"]
    assert record["cube_version"] == read_version(open_store(tiny_cube), "s2").version


def test_numeric_ids_and_ids_with_a_slash_are_found_and_named_safely(tiny_cube, tiny_region, tmp_path):
    parcels = gpd.read_parquet(tiny_region.parcels).iloc[10:14]
    numbered = parcels.assign(parcel_id=[1040, 1041, 1042, 1043])
    numbered.to_parquet(tmp_path / "numbered.parquet")
    assert main(["timeseries", "--cube", str(tiny_cube), "--parcels", str(tmp_path / "numbered.parquet"), "1042",
                 "--bands", "B04", "--out", str(tmp_path / "n.csv")]) == 0  # the command line's "1042" is 1042
    assert set(pd.read_csv(tmp_path / "n.csv").parcel_id) == {1042}
    slashed = parcels.assign(parcel_id=["NL/1", "NL/2", "NL/3", "NL/4"])
    slashed.to_parquet(tmp_path / "slashed.parquet")
    assert main(["chip", "--cube", str(tiny_cube), "--parcels", str(tmp_path / "slashed.parquet"), "NL/2",
                 "--size", "16", "--sheet", "--out", str(tmp_path / "chips")]) == 0
    digest = hashlib.sha256(b"NL/2").hexdigest()[:12]  # "NL/2" is no file name; "NL_2" is another parcel's
    assert [p.name for p in (tmp_path / "chips").iterdir()] == [f"NL_2_{digest}_s2_B04-B03-B02_season.png"]
    slashed.assign(parcel_id=["NL/1", "NL/2", "NL_2", "NL/4"]).to_parquet(tmp_path / "both.parquet")
    for pid in ("NL_2", "NL/2"):  # the chips of NL/2 replaced those of NL_2
        assert main(["chip", "--cube", str(tiny_cube), "--parcels", str(tmp_path / "both.parquet"), pid,
                     "--size", "16", "--sheet", "--out", str(tmp_path / "both")]) == 0
    assert sorted(p.name for p in (tmp_path / "both").iterdir()) == [
        f"NL_2_{digest}_s2_B04-B03-B02_season.png", "NL_2_s2_B04-B03-B02_season.png"]
    lon, lat = slashed.to_crs(4326).geometry.iloc[0].centroid.coords[0]
    assert main(["chip", "--cube", str(tiny_cube), "--point", str(lon), str(lat), "--size", "16", "--sheet",
                 "--out", str(tmp_path / "points")]) == 0  # every point was "point_...": the next replaced it
    assert [p.name for p in (tmp_path / "points").iterdir()] == [f"point_{lon:.6f}_{lat:.6f}_s2_B04-B03-B02_season.png"]
    assert main(["chip", "--cube", str(tiny_cube), "--parcels", str(tmp_path / "slashed.parquet"), "NL/2",
                 "--size", "1200", "--time", "2024-06-01/2024-06-10", "--out", str(tmp_path / "big")]) == 0
    assert {Image.open(p).size for p in (tmp_path / "big").glob("*.png")} == {(3600, 3600)}  # drawn at scale 3


def test_flag_cli_writes_dates_spark_reads_from_statistics_in_nanoseconds(tiny_cube, tiny_region, tmp_path):
    """Statistics files written before times were stored in microseconds still give flags Spark reads."""
    stats = tmp_path / "stats.parquet"
    assert main(["timeseries", "--cube", str(tiny_cube), "--parcels", str(tiny_region.parcels), "--bands", "B04,B08",
                 "--out", str(stats)]) == 0
    frame = pd.read_parquet(stats)
    frame.astype({"time": "datetime64[ns]"}).to_parquet(stats)
    assert main(["flag", "--timeseries", str(stats), "--parcels", str(tiny_region.parcels), "--out",
                 str(tmp_path / "flags.parquet")]) == 0
    assert pq.read_schema(tmp_path / "flags.parquet").field("min_ndvi_date").type == pa.timestamp("us")


def test_options_that_cannot_work_are_refused_before_any_work(tiny_cube, tiny_region, tmp_path, capsys,
                                                              monkeypatch):
    monkeypatch.chdir(tmp_path)  # where an --out s3://... once became a folder "s3:"
    pid = gpd.read_parquet(tiny_region.parcels).parcel_id.iloc[10]
    cube = ["--cube", str(tiny_cube), "--parcels", str(tiny_region.parcels)]
    (tmp_path / "folder").mkdir()
    (tmp_path / "file.png").write_bytes(b"")
    (tmp_path / "folder" / "weather.csv").write_text("day,rain_mm\n")  # no output of cardcube: not replaced
    (tmp_path / "folder" / "s.csv.json").mkdir()  # where the record goes: the write failed after all the work
    refused = {
        ("timeseries", *cube, pid, "--out", str(tmp_path / "folder")): "is a folder: give a file name ending .parquet",
        ("timeseries", *cube, pid, "--out", str(tmp_path / "s.txt")): "give a file name ending .parquet or .csv",
        ("timeseries", *cube, pid, "--point", "5.1", "52.5", "--out", str(tmp_path / "s.csv")):
            f"give parcel ids or --point, not both: --point picks the parcel containing it (got {pid})",
        ("timeseries", *cube, pid, "--bands", "VV", "--out", str(tmp_path / "s.csv")):
            "VV is a band of the s1 cube: add --collection s1",
        ("chip", *cube, pid, "--out", str(tmp_path / "file.png")): "is a file: give a folder for the chips",
        ("chip", *cube, pid, "--out", str(tmp_path / "file.png" / "sub")):  # found after the reading, as a traceback
            f"{tmp_path / 'file.png'} is a file: give a folder for the chips",
        ("timeseries", *cube, pid, "--out", "s3://bucket/s.parquet"):
            "--out s3://bucket/s.parquet is a URL: give a local file name ending .parquet or .csv (cardcube extract",
        ("chip", *cube, pid, "--out", "s3://bucket/chips"): "is a URL: give a local folder for the chips",
        # a file's name: it became a folder chip.png holding the chip
        ("chip", *cube, pid, "--out", str(tmp_path / "chip.png")): "chip.png is the name of a file: chip writes a "
            "folder of chips, a file per date (named by parcel, bands and time); give a folder",
        ("chip", *cube, pid, "--sheet", "--out", "sheet.PNG"): "sheet.PNG is the name of a file",
        ("extract", *cube, "--out", str(tmp_path / "file.png")): "is a file: give a folder",
        ("extract", *cube, "--out", str(tmp_path / "ex"), "--block", "0"): "block (--block) must be a positive number",
        ("extract", *cube, "--out", str(tmp_path / "ex"), "--time-block", "0"):
            "time_block (--time-block) must be a positive number of dates",
        ("flag", "--timeseries", str(tmp_path), "--parcels", str(tiny_region.parcels), "--out", str(tmp_path / "f")):
            "give a file name ending .parquet or .csv",
        # an output that would replace an input: the statistics, the parcels, the rules (OUT.json)
        ("flag", "--timeseries", str(tmp_path / "ts.csv"), "--parcels", str(tiny_region.parcels), "--out",
         str(tmp_path / "ts.csv")): f"--out {tmp_path / 'ts.csv'} would overwrite the input --timeseries",
        ("flag", "--timeseries", str(tmp_path / "ts.csv"), "--parcels", str(tiny_region.parcels), "--rules",
         "f.csv.json", "--out", "f.csv"): "--out f.csv would overwrite the input --rules f.csv.json",
        # inside an extraction given as input: its status table replaced, a foreign file among its statistics
        ("flag", "--timeseries", str(tmp_path / "folder"), "--parcels", str(tiny_region.parcels), "--out",
         str(tmp_path / "folder" / "parcels.parquet")): "is inside the input --timeseries",
        ("timeseries", "--cube", str(tiny_cube), "--parcels", "p.parquet", "--out", str(tmp_path / "p.parquet")):
            "would overwrite the input --parcels p.parquet",
        ("timeseries", "--cube", str(tiny_cube), "--parcels", "p.csv.json", "--out", str(tmp_path / "p.csv")):
            "would overwrite the input --parcels p.csv.json",  # with its record, OUT.json
        ("timeseries", *cube, pid, "--out", str(tmp_path / "folder" / "weather.csv")):
            f"--out {tmp_path / 'folder' / 'weather.csv'} exists, and is no earlier output of cardcube (none has its "
            "weather.csv.json beside it), which would be replaced: give a new name, or delete it first",
        ("flag", "--timeseries", str(tmp_path / "ts.csv"), "--parcels", str(tiny_region.parcels), "--out",
         str(tmp_path / "folder" / "weather.csv")): "exists, and is no earlier output of cardcube",
        ("timeseries", *cube, pid, "--out", str(tmp_path / "file.png" / "s.csv")):  # FileExistsError, after the work
            f"--out {tmp_path / 'file.png' / 's.csv'}: {tmp_path / 'file.png'} is a file, no folder to write in",
        ("timeseries", *cube, pid, "--out", str(tmp_path / "folder" / "s.csv")):
            f"--out {tmp_path / 'folder' / 's.csv'}: s.csv.json, where the record of the parameters goes, is a folder",
        # what to measure: said in the command's options, not as the Python API's "registry=", nor as a count of
        # the parcels of the file a chip was given without an id
        ("timeseries", "--cube", str(tiny_cube), "--point", "5.1", "52.5", "--out", str(tmp_path / "s.csv")):
            "--point picks the parcel containing it: give --parcels too",
        ("timeseries", "--cube", str(tiny_cube), "--out", str(tmp_path / "s.csv")):
            "give --parcels, with parcel ids or none for all of them",
        ("chip", "--cube", str(tiny_cube), "--out", str(tmp_path / "c")): "give --parcels with a parcel id, or --point",
        ("chip", *cube, "--out", str(tmp_path / "c")):
            f"give a parcel id of {tiny_region.parcels} or --point LON LAT: a chip shows one parcel",
        ("chip", *cube, pid, "--geotiff", "--scale", "4", "--out", str(tmp_path / "c")):  # GeoTIFFs at scale 1 were
            "--scale 4 enlarges PNGs; a --geotiff chip holds the cube's pixels on their grid, unscaled",  # written
    }
    for argv, message in refused.items():
        assert main(list(argv)) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, (argv, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.png", "folder"]  # nothing written, no folder made
    by_argparse = {("chip", *cube, pid, "--sheet", "--geotiff", "--out", str(tmp_path / "c")):  # a sheet is a PNG
                   "argument --geotiff: not allowed with argument --sheet",
                   ("serve", "--cube", str(tiny_cube), "--refresh", "-1"): "expected a number of seconds >= 0"}
    for argv, message in by_argparse.items():
        with pytest.raises(SystemExit) as exc:
            main(list(argv))
        assert exc.value.code == 2 and message in capsys.readouterr().err


def test_a_file_of_the_record_s_name_that_cardcube_did_not_write_is_kept(tiny_cube, tiny_region, tmp_path, capsys):
    """OUT.json, where timeseries and flag record their parameters, was replaced whatever it was: a user's own
    ``x.csv.json`` beside the ``x.csv`` asked for (a table of theirs with its own JSON too) was lost without a
    word. Such a file is refused before any work, naming it; an earlier output's record is replaced as before."""
    pid = gpd.read_parquet(tiny_region.parcels).parcel_id.iloc[10]
    cube = ["--cube", str(tiny_cube), "--parcels", str(tiny_region.parcels), pid, "--bands", "B04,B08"]
    (tmp_path / "x.csv.json").write_text('{"mine": "notes of a field visit"}\n')
    (tmp_path / "mine.csv").write_text("day,rain_mm\n")  # a table of the user's with a JSON of the same name
    (tmp_path / "mine.csv.json").write_text('{"source": "weather station"}\n')
    (tmp_path / "cut.csv.json").write_text('{"cube": ')  # no JSON: no record of cardcube's
    before = {path.name: path.read_bytes() for path in tmp_path.iterdir()}
    for argv, name in (
            (["timeseries", *cube, "--out", str(tmp_path / "x.csv")], "x.csv.json"),
            (["timeseries", *cube, "--out", str(tmp_path / "mine.csv")], "mine.csv.json"),
            (["timeseries", *cube, "--out", str(tmp_path / "cut.csv")], "cut.csv.json"),
            (["flag", "--timeseries", str(tmp_path / "ts.csv"), "--parcels", str(tiny_region.parcels), "--out",
              str(tmp_path / "x.csv")], "x.csv.json")):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"{name}, where the record of the parameters goes, exists and is no " \
            "record cardcube wrote (of timeseries or flag), which would be replaced: give another name, or move " \
            "that file" in err, (argv, err)
    assert {path.name: path.read_bytes() for path in tmp_path.iterdir()} == before  # nothing written, nothing lost
    out = tmp_path / "stats.csv"
    for _ in range(2):  # a run again replaces the output and the record it wrote
        assert main(["timeseries", *cube, "--out", str(out)]) == 0
    flags = tmp_path / "flags.csv"
    for _ in range(2):
        assert main(["flag", "--timeseries", str(out), "--parcels", str(tiny_region.parcels), "--out",
                     str(flags)]) == 0
    assert json.loads((tmp_path / "stats.csv.json").read_text())["collection"] == "s2"
    assert "rules" in json.loads((tmp_path / "flags.csv.json").read_text())


_THREADED_LABELS = """
import sys
from concurrent.futures import ThreadPoolExecutor
from odc.geo.geobox import GeoBox
from shapely.geometry import box
from cube.membership import label_pixels
if sys.argv[1] == "quiet":
    from cardcube.cli import quiet_rasterio_threads
    quiet_rasterio_threads()
grid = GeoBox.from_bbox((700000, 5834760, 710240, 5845000), "EPSG:32631", resolution=10)
def burn(i):
    return label_pixels([box(700000 + 10 * (i % 40), 5840000, 700500, 5840500)], grid)
with ThreadPoolExecutor(4) as pool:
    labels = list(pool.map(burn, range(400)))
assert all((lab == burn(i)).all() for i, lab in enumerate(labels)), "threads burnt other labels than one thread"
"""


def test_threaded_label_layers_warn_of_no_missing_geotransform_on_the_command_line():
    """rasterio's rasterize in threads (extract's label layers) now and then warns that its own in-memory dataset
    has no geotransform although the labels are burnt right: the command line hides that warning, and only it.
    The race is rare, so the filter is checked on the warning itself, and the threaded burn for its labels."""
    import subprocess
    import sys
    import warnings

    from rasterio.errors import NotGeoreferencedWarning

    from cardcube.cli import quiet_rasterio_threads

    def shown(message: str, module: str) -> bool:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            quiet_rasterio_threads()
            warnings.warn_explicit(message, NotGeoreferencedWarning, "features.py", 1, module=module)
        return bool(seen)

    spurious = "Dataset has no geotransform, gcps, or rpcs. The identity matrix will be returned."
    assert not shown(spurious, "rasterio.features") and not shown(spurious, "rasterio.warp")
    assert shown(spurious, "rasterio.io")  # a user's own file without georeferencing is still told
    assert shown("another warning", "rasterio.features")
    run = subprocess.run([sys.executable, "-c", _THREADED_LABELS, "quiet"], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0 and "NotGeoreferencedWarning" not in run.stderr, run.stderr


@pytest.mark.parametrize("stop", [KeyboardInterrupt, "Terminated"])
def test_an_extraction_stopped_says_the_same_command_resumes_it(tiny_cube, tiny_region, tmp_path, capsys,
                                                                  monkeypatch, stop):
    """A stopped extraction whose tasks ended within the grace said only "terminated"; it says how to go on."""
    import signal

    import cardcube.cli
    import cube.cli

    raised = cardcube.cli.Terminated if stop == "Terminated" else stop

    def stopped(args):
        raise raised()

    monkeypatch.setattr(cube.cli, "_extract", stopped)
    code = main(["extract", "--parcels", str(tiny_region.parcels), "--cube", str(tiny_cube), "--out",
                 str(tmp_path / "out")])
    said = "terminated" if stop == "Terminated" else "interrupted"
    assert code == (128 + signal.SIGTERM if stop == "Terminated" else 130)
    assert capsys.readouterr().err == (f"cardcube extract: {said}: the same command resumes it, the files written "
                                       f"kept (with --as-of the version it read, should the cube gain one "
                                       f"meanwhile: the manifest names it)\n")


def test_a_table_whose_writing_fails_halfway_leaves_the_earlier_output_whole(tiny_cube, tiny_region, tmp_path):
    """The table was written in place, then its record: a run stopped halfway (a full disk, Ctrl-C) left a
    truncated CSV that still parses beside the earlier run's record. Here the OS refuses writes past 64 KiB
    (``RLIMIT_FSIZE``, as a full disk would), and the earlier output and record stay as they were."""
    resource, signal = pytest.importorskip("resource"), pytest.importorskip("signal")
    ids = list(gpd.read_parquet(tiny_region.parcels).parcel_id)
    out = tmp_path / "stats.csv"
    command = ["timeseries", "--cube", str(tiny_cube), "--parcels", str(tiny_region.parcels), "--out", str(out)]
    assert main([*command[:5], ids[0], *command[5:], "--bands", "B04", "--stats", "count"]) == 0
    earlier = {path.name: path.read_bytes() for path in tmp_path.iterdir()}
    assert set(earlier) == {"stats.csv", "stats.csv.json"} and len(earlier["stats.csv"]) < 2**16
    limits, handler = resource.getrlimit(resource.RLIMIT_FSIZE), signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        resource.setrlimit(resource.RLIMIT_FSIZE, (2**16, limits[1]))
        try:
            code = main([*command[:5], *ids, *command[5:], "--bands", "B04,B08,NDVI"])
        except OSError as exc:  # the CLI's one error line, or the error itself
            code = exc.errno
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, handler)
    assert code != 0
    assert {path.name: path.read_bytes() for path in tmp_path.iterdir()} == earlier
