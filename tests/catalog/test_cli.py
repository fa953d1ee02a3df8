"""``cardcube catalog build|find`` through the real argument parser."""

from __future__ import annotations

import json

import pytest

from cardcube.cli import main
from cube.layout import ledger_key


def test_build_regenerates_from_the_ledger(cube, capsys):
    before = (cube / "s2" / "31UFU" / "s2-31UFU.json").read_bytes()
    for path in ("catalog.json", "s2/collection.json", "s2/31UFU/s2-31UFU.json"):
        (cube / path).unlink()
    assert main(["catalog", "build", "--cube", str(cube)]) == 0
    assert "s2: catalog of version 1" in capsys.readouterr().out
    assert (cube / "s2" / "31UFU" / "s2-31UFU.json").read_bytes() == before
    assert (cube / "catalog.json").exists()


@pytest.mark.parametrize(("number", "found"), [("1", True), ([1], False), ({"version": 1}, False)])
def test_a_version_number_edited_into_no_number_is_rebuilt(cube, capsys, number, found):
    """A collection whose cardcube:version is no whole number (edited by hand): catalog find and catalog build, which
    writes a damaged catalog anew, failed on it with a TypeError's traceback ('>' between str and int)."""
    path = cube / "s2" / "collection.json"
    before = path.read_bytes()
    path.write_text(json.dumps({**json.loads(before), "cardcube:version": number}))
    status = main(["catalog", "find", "--cube", str(cube)])
    out, err = capsys.readouterr()
    if found:
        assert status == 0 and '"tile": "31UFU"' in out
    else:  # a list or an object keys no item cache: the collection's damage, in one line
        assert status == 2 and "'cardcube catalog build' writes it anew" in err and "Traceback" not in err
    assert main(["catalog", "build", "--cube", str(cube)]) == 0
    assert "s2: catalog of version 1" in capsys.readouterr().out and path.read_bytes() == before


def test_build_and_find_without_cube_are_one_line_errors(tmp_path, capsys):
    assert main(["catalog", "build", "--cube", str(tmp_path)]) == 2
    assert "error: no cube collection with a committed version" in capsys.readouterr().err
    missing = tmp_path / "nocube"
    assert main(["catalog", "find", "--cube", str(missing)]) == 2
    assert "no cube at" in capsys.readouterr().err
    assert not missing.exists()  # looking for a cube does not create its folder


def test_find_says_what_a_cube_location_holding_no_cube_is_instead(cube, tmp_path, capsys):
    """A file, or a collection's folder inside the cube: ``versions``, ``verify`` and ``expire`` say so, ``catalog
    find`` said only "no committed version of s2 or s1"."""
    (tmp_path / "parcels.gpkg").write_bytes(b"")
    assert main(["catalog", "find", "--cube", str(tmp_path / "parcels.gpkg")]) == 2
    assert "; it is a file: a cube is a folder (that of its catalog.json) or an s3:// prefix" in capsys.readouterr().err
    assert main(["catalog", "find", "--cube", str(cube / "s2")]) == 2
    assert f"; it lies inside the cube at {cube} (its s2 collection): give that location" in capsys.readouterr().err
    assert main(["catalog", "build", "--cube", str(tmp_path / "parcels.gpkg")]) == 2
    assert "; it is a file: a cube is a folder (that of its catalog.json) or an s3:// prefix" in capsys.readouterr().err
    assert main(["catalog", "build", "--cube", str(cube / "s2")]) == 2
    assert f"; it lies inside the cube at {cube} (its s2 collection): give that location" in capsys.readouterr().err


def test_find_prints_tiles(base_cube, capsys):
    assert main(["catalog", "find", "--cube", str(base_cube), "--bbox", "705000,5850000,705100,5850100",
                 "--crs", "EPSG:32631", "--time", "2024-04-01/2024-04-30"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["tile"] for r in lines] == ["31UFU", "31UGU"] and lines[0]["zarr_path"] == "s2/31UFU/cube.zarr"
    assert main(["catalog", "find", "--cube", str(base_cube / "catalog.json"), "--bbox", "705000,5850000,705100,"
                 "5850100", "--crs", "EPSG:32631", "--time", "2024-04-01/2024-04-30"]) == 0  # the catalog names its
    assert [json.loads(line) for line in capsys.readouterr().out.splitlines()] == lines  # cube, as to open_cube
    from catalog.serve import make_app

    make_app(base_cube / "catalog.json")  # it said "catalog.json is missing"

    assert main(["catalog", "find", "--cube", str(base_cube), "--time", "2019"]) == 0  # an empty search: a note
    out, err = capsys.readouterr()
    assert out == "" and err == "no tile of the s2 cube matches the time range 2019\n"


def test_find_says_when_the_catalog_is_behind_the_cube(cube, tmp_path, capsys):
    """After an ``ingest --no-catalog`` find searched the older catalog without a word ("no tile matches" the
    new date, exit 0)."""
    from ingest.job import ingest
    from tests.catalog.conftest import make_scenes

    ingest(make_scenes(tmp_path / "more", days=(40,)), cube, collection="s2", catalog=False, progress=False)
    assert main(["catalog", "find", "--cube", str(cube), "--time", "2024-05-11"]) == 0
    err = capsys.readouterr().err
    assert "the catalog describes version 1 of the s2 cube, which is at version 2" in err and "catalog build" in err
    assert main(["catalog", "build", "--cube", str(cube)]) == 0
    capsys.readouterr()
    assert main(["catalog", "find", "--cube", str(cube), "--time", "2024-05-11"]) == 0
    out, err = capsys.readouterr()
    assert out and err == ""
    bad = make_scenes(tmp_path / "bad", days=(45,))  # a version that only rejects a scene changes no data: the
    next((tmp_path / "bad").rglob("*.tif")).unlink()  # catalog stays as it is, and is not "behind"
    result = ingest(bad, cube, collection="s2", progress=False)
    assert result.rejected and result.version == 3
    assert main(["catalog", "find", "--cube", str(cube), "--time", "2024-05-11"]) == 0
    out, err = capsys.readouterr()
    assert out and err == ""
    (cube / ledger_key("s2", 3)).write_text('{"version": 3}')  # a damaged newest record: the tiles found are
    assert main(["catalog", "find", "--cube", str(cube), "--time", "2024-05-11"]) == 0  # printed, then exit 2 was
    found, err = capsys.readouterr()
    assert found == out and "check the cube with cardcube verify" in err and "v00000003.json" in err


@pytest.mark.parametrize("verb", ["build", "serve", "find"])
def test_help(verb, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["catalog", verb, "--help"])
    assert exc.value.code == 0 and "--cube" in capsys.readouterr().out


def test_find_names_a_bbox_that_is_no_numbers(base_cube, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["catalog", "find", "--cube", str(base_cube), "--bbox", "a,b,c,d"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "bbox 'a,b,c,d' needs four numbers" in err
    assert err.splitlines()[-1].startswith("cardcube catalog find: error: ")  # as cardcube's own errors say it


def test_find_refuses_a_bbox_of_no_area(base_cube, capsys):
    """A point given as a bbox found no tile, exit 0, though the point lies on tile 31UFU."""
    assert main(["catalog", "find", "--cube", str(base_cube), "--bbox", "705000,5850000,705000,5850000",
                 "--crs", "EPSG:32631"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("cardcube catalog find: error: bbox (705000.0, 5850000.0, 705000.0, 5850000.0) "
                                        "has no area")


def test_find_says_nothing_of_a_sentinel1_version_that_changed_no_data(two_pass_cube, two_pass_region, tmp_path,
                                                                       capsys):
    """After an S1 ``ingest --no-catalog`` that only rejected a scene, find warned that the catalog was behind."""
    import shutil

    from ingest.job import ingest
    from tests.catalog.test_write import rejected_s1_scene

    cube = shutil.copytree(two_pass_cube, tmp_path / "cube")
    result = ingest(rejected_s1_scene(two_pass_region, tmp_path), cube, collection="s1", catalog=False,
                    progress=False)
    assert result.rejected and result.version == 2
    assert main(["catalog", "find", "--cube", str(cube), "--collection", "s1"]) == 0
    out, err = capsys.readouterr()
    assert [json.loads(line)["tile"] for line in out.splitlines()] == ["31UFU"] and err == ""


def test_build_of_a_collection_the_cube_lacks_names_what_it_holds(cube, capsys):
    """``catalog build --collection s1`` of a cube of s2 alone said "no cube collection with a committed version", as
    if there were no cube, and with ``--collection s2`` beside it rebuilt s2 without a word of s1; it says the cube
    holds no s1, as ``versions`` and ``catalog find`` do, before writing anything."""
    item = cube / "s2" / "31UFU" / "s2-31UFU.json"
    item.unlink()
    assert main(["catalog", "build", "--cube", str(cube), "--collection", "s1"]) == 2
    assert f"the cube at {cube} holds no 's1' collection (no committed version); it holds s2" in capsys.readouterr().err
    assert main(["catalog", "build", "--cube", str(cube), "--collection", "s2", "--collection", "s1"]) == 2
    assert "holds no 's1' collection" in capsys.readouterr().err
    assert not item.exists()  # nothing written: the command asked for is not half done
    assert main(["catalog", "build", "--cube", str(cube), "--collection", "s2"]) == 0
    assert item.exists()
