"""Bad source scenes: each gets a clear message naming it, is recorded as rejected, and stops nothing else."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import xarray as xr

from cardcube.cli import main
from cardcube.errors import InvalidRequestError, SourceNotFoundError
from cardcube.spec import ChunkLayout
from cardcube.storage import LISTED_LINES, open_store
from cube.dataset import open_cube
from cube.ledger import committed_versions, read_version
from ingest.expire import expire
from ingest.job import ingest
from tests.ingest.checks import assert_matches_sources
from tests.ingest.crashing import ingest_command, stopped_at
from tests.ingest.http_source import http_server, served
from tests.ingest.scene_edits import (
    asset_path,
    blank,
    blank_band,
    broken_copy,
    empty,
    foreign_classes,
    items_of,
    one_file_twice,
    reproject,
    reproject_label,
    shift,
    stretch,
    swap_assets,
    truncate,
    undescribed,
    west_part,
    without_href,
    write_items,
)

CHUNKS = ChunkLayout(time=4, space=64, shard_space=256)
UTM31_TOWGS84 = "+proj=utm +zone=31 +ellps=WGS84 +towgs84=0,0,0,0,0,0,0 +units=m +no_defs"  # no EPSG code


@pytest.fixture(scope="module")
def bad_batch(tiny_region):
    """Three good S2 scenes plus one broken copy of each kind, as one ItemCollection."""
    items = tiny_region.items
    good = items_of(items, "sentinel-2-l2a")
    src = good[3]
    def when(day: int) -> dict:  # an acquisition time of its own, so no copy is a duplicate of another
        return {"datetime": f"2024-01-{day:02d}T10:00:00Z"}

    broken = {
        "truncated": broken_copy(items, src, "BAD-truncated", truncate, props=when(1)),
        "crs": broken_copy(items, src, "BAD-crs", reproject_label(32632), props=when(2)),
        "crs-no-epsg": broken_copy(items, src, "BAD-crs-no-epsg", reproject_label(UTM31_TOWGS84), props=when(6)),
        "off-grid": broken_copy(items, src, "BAD-offgrid", shift(5.0), props=when(3)),
        "missing": broken_copy(items, src, "BAD-missing", drop="B11", props=when(4)),
        "blank": broken_copy(items, src, "BAD-blank", blank, props=when(5)),
        "empty": broken_copy(items, src, "BAD-empty", empty, props=when(7)),
        "classes": broken_copy(items, src, "BAD-classes", foreign_classes, props=when(8)),
        "band-blank": broken_copy(items, src, "BAD-band-blank", blank_band("B11"), props=when(10)),
        "same-file": one_file_twice(broken_copy(items, src, "BAD-same-file", undescribed, props=when(11)), "B04",
                                    "B03"),
        "swapped": swap_assets(broken_copy(items, src, "BAD-swapped", props=when(9)), "B04", "B08"),
        "no-href": without_href(broken_copy(items, src, "BAD-no-href", props=when(12)), "B12"),
    }
    path = write_items(items, [*good[:3], *broken.values()], "bad-batch.json")
    return path, good[:3], broken


EXPECTED = {
    "truncated": ("SceneReadError", "truncated or corrupt"),
    "crs": ("SceneGridError", "EPSG:32632"),
    "crs-no-epsg": ("SceneGridError", "CRS 'unknown', UTM zone 31N, datum 'Unknown based on WGS 84 ellipsoid"),
    "off-grid": ("SceneGridError", "off the 10 m pixel grid"),
    "missing": ("SceneContentError", "missing band(s) B11"),
    "blank": ("SceneContentError", "nodata"),
    "empty": ("SceneReadError", "band B08 is an empty file ("),
    "classes": ("SceneContentError", "band SCL holds values that are none of its classes: 255 ("),
    "band-blank": ("SceneContentError", "band B11 (B11.tif) is nodata at every pixel, where the other 20 m bands "
                                        "hold data (B05, B06, B07, B8A, B12, SCL)"),
    "same-file": ("SceneContentError", "bands B03 (B04.tif) and B04 (B04.tif) are the same bytes: one file given for "
                                       "two bands?"),
    "no-href": ("SceneContentError", "band B12's asset has no href"),
    "swapped": ("SceneContentError", "band B04's file (B08.tif) says it is band B08 (its band description): are the "
                                     "item's assets swapped?"),
}


def test_each_bad_scene_is_rejected_with_its_reason_and_the_rest_goes_in(bad_batch, tmp_path):
    path, good, broken = bad_batch
    result = ingest(path, tmp_path / "cube", chunks=CHUNKS, progress=False)
    assert not result.ok
    assert sorted(result.added) == sorted(f["id"] for f in good)
    by_id = {r.scene_id: r for r in result.rejected}
    for kind, item in broken.items():
        rejection = by_id[item["id"]]
        cls, text = EXPECTED[kind]
        assert rejection.kind == cls, (kind, rejection)
        assert text in rejection.reason and item["id"] in rejection.reason, (kind, rejection.reason)
    version = read_version(open_store(tmp_path / "cube"), "s2")
    assert {r.scene_id for r in version.rejected} == {i["id"] for i in broken.values()}
    assert not set(version.scenes) & {i["id"] for i in broken.values()}
    assert assert_matches_sources(tmp_path / "cube", write_items(path, good, "good-only.json"), "s2") > 0


def test_a_rejected_scene_can_go_in_once_fixed(bad_batch, tiny_region, tmp_path):
    path, _, broken = bad_batch
    ingest(path, tmp_path / "cube", chunks=CHUNKS, progress=False)
    fixed = dict(broken["missing"], assets=items_of(tiny_region.items, "sentinel-2-l2a")[3]["assets"])
    result = ingest(write_items(path, [fixed], "fixed.json"), tmp_path / "cube", chunks=CHUNKS, progress=False)
    assert result.ok and result.added == (fixed["id"],)


def test_rejections_outlive_expire_until_the_scene_goes_in(bad_batch, tiny_region, tmp_path, capsys):
    """A daily run offers only new scenes: the scenes rejected on an earlier day must stay listed after the
    version that rejected them expired, and leave the list once they went in."""
    path, good, broken = bad_batch
    cube = tmp_path / "cube"
    ingest(write_items(path, [good[0], *broken.values()], "day1.json"), cube, chunks=CHUNKS, progress=False)
    ingest(write_items(path, [good[1]], "day2.json"), cube, chunks=CHUNKS, progress=False)  # nothing bad
    expire(cube, "s2", older_than=timedelta(0))
    assert committed_versions(open_store(cube), "s2") == [2]  # the version that rejected them is gone
    fixed = dict(broken["missing"], assets=items_of(tiny_region.items, "sentinel-2-l2a")[3]["assets"])
    ingest(write_items(path, [fixed, broken["crs"]], "day3.json"), cube, chunks=CHUNKS, progress=False)
    rejected = {r.scene_id: r for r in read_version(open_store(cube), "s2").rejected}
    assert set(rejected) == {i["id"] for i in broken.values()} - {fixed["id"]}
    assert all(text in rejected[broken[kind]["id"]].reason for kind, (_, text) in EXPECTED.items() if kind != "missing")
    assert main(["versions", "--cube", str(cube), "--collection", "s2"]) == 0
    out = capsys.readouterr().out
    assert "version 2 " in out and "version 3 " in out and "version 1 " not in out
    assert f"rejected and not in the cube: {len(rejected)} scene(s)" in out
    assert all(f"  {sid} ({r.kind}): {r.reason}" in out for sid, r in rejected.items())
    assert fixed["id"] not in out


def test_cli_exit_status_says_not_everything_went_in(bad_batch, tmp_path, capsys):
    path, _, broken = bad_batch
    code = main(["ingest", str(path), "--cube", str(tmp_path / "cube"), "--quiet", "--chunks",
                 "time=4,space=64,shard_space=256"])
    out = capsys.readouterr().out
    assert code == 1
    assert all(f"rejected scene {item['id']}: " in out for item in broken.values())


def test_a_summary_names_the_first_rejected_scenes_and_counts_the_others(tiny_region, tmp_path, capsys):
    """A season's items whose assets cannot be read (signed hrefs expired) are rejected by the hundred: the summary
    names the first ones, says how many more, and where each is named (a line each flooded the terminal)."""
    src = items_of(tiny_region.items, "sentinel-2-l2a")[0]
    more = 5
    copies = [dict(without_href(src, "B12"), id=f"NO-HREF-{i:02d}",
                   properties=dict(src["properties"], datetime=f"2024-01-{i + 1:02d}T10:00:00Z"))
              for i in range(LISTED_LINES + more)]
    path, cube = write_items(tiny_region.items, copies, "no-hrefs.json"), tmp_path / "cube"
    assert main(["ingest", str(path), "--cube", str(cube), "--quiet", "--chunks", "time=4,space=64,shard_space=256"
                 ]) == 1
    out = capsys.readouterr().out
    named = [line for line in out.splitlines() if line.startswith("  rejected scene ")]
    assert len(named) == LISTED_LINES and all("band B12's asset has no href" in line for line in named)
    assert (f"  ... and {more} more scene(s) rejected: `cardcube versions --cube {cube} --collection s2` names "
            "each") in out
    assert main(["versions", "--cube", str(cube)]) == 0  # where the summary sends the user: every one of them
    listing = capsys.readouterr().out
    assert all(f"  {c['id']} (SceneContentError): " in listing for c in copies)
    assert main(["ingest", str(path), "--cube", str(cube), "--quiet", "--json"]) == 1  # and --json
    assert len(json.loads(capsys.readouterr().out)["rejected"]) == LISTED_LINES + more


def test_all_rejected_changes_no_data(bad_batch, tmp_path):
    path, good, broken = bad_batch
    ingest(write_items(path, good, "good.json"), tmp_path / "cube", chunks=CHUNKS, progress=False)
    before = open_cube(tmp_path / "cube", decode=False).compute()
    result = ingest(write_items(path, [broken["truncated"], broken["crs"]], "only-bad.json"), tmp_path / "cube",
                    chunks=CHUNKS, progress=False)
    assert not result.added and len(result.rejected) == 2 and result.version == 2  # the rejections are recorded
    after = open_cube(tmp_path / "cube", decode=False).compute()
    assert before.drop_attrs().identical(after.drop_attrs())
    again = ingest(write_items(path, [broken["truncated"], broken["crs"]], "only-bad.json"), tmp_path / "cube",
                   chunks=CHUNKS, progress=False)  # a retry of the same bad batch: nothing new to record
    assert again.version is None and len(again.rejected) == 2
    assert committed_versions(open_store(tmp_path / "cube"), "s2") == [1, 2]


def test_a_scene_listed_twice_goes_in_once(bad_batch, tmp_path):
    path, good, _ = bad_batch
    result = ingest(write_items(path, [*good, good[0]], "twice.json"), tmp_path / "cube", chunks=CHUNKS,
                    progress=False)
    assert sorted(result.added) == sorted(g["id"] for g in good) and not result.rejected and result.ok
    assert result.skipped == (good[0]["id"],)


def test_a_redelivered_acquisition_is_rejected_as_duplicate(bad_batch, tiny_region, tmp_path):
    path, good, _ = bad_batch
    ingest(write_items(path, good, "good.json"), tmp_path / "cube", chunks=CHUNKS, progress=False)
    again = broken_copy(tiny_region.items, good[0], "REDELIVERED")  # same tile and time, another id
    result = ingest(write_items(path, [again], "again.json"), tmp_path / "cube", chunks=CHUNKS, progress=False)
    (rejection,) = result.rejected
    assert rejection.kind == "DuplicateSceneError" and good[0]["id"] in rejection.reason
    assert "a reprocessed product goes into a new cube" in rejection.reason
    assert "REDELIVERED" not in read_version(open_store(tmp_path / "cube"), "s2").scenes


def test_a_scene_reprojected_to_another_crs_is_rejected_for_its_crs_not_its_pixel_size(bad_batch, tiny_region,
                                                                                        tmp_path):
    path, good, _ = bad_batch
    warped = broken_copy(tiny_region.items, good[0], "WARPED-32632", reproject(32632),
                         props={"datetime": "2024-01-07T10:00:00Z"})
    result = ingest(write_items(path, [warped], "warped.json"), tmp_path / "cube", chunks=CHUNKS, progress=False)
    (rejection,) = result.rejected
    assert rejection.kind == "SceneGridError"
    assert "CRS EPSG:32632 is not the CRS of tile 31UFU (EPSG:32631)" in rejection.reason, rejection.reason
    assert "m pixels, expected" not in rejection.reason


def test_of_two_products_of_one_acquisition_in_one_source_the_reason_says_which_goes_in_and_why(bad_batch,
                                                                                                tiny_region, tmp_path):
    path, good, _ = bad_batch
    reprocessed = broken_copy(tiny_region.items, good[0], good[0]["id"].replace("_N0", "_N9"))  # same tile and time
    assert reprocessed["id"] > good[0]["id"]
    for name, order in [("new-first", [reprocessed, good[0]]), ("old-first", [good[0], reprocessed])]:
        result = ingest(write_items(path, order, f"{name}.json"), tmp_path / name, chunks=CHUNKS, progress=False)
        assert result.added == (good[0]["id"],), name  # whatever the order in the source
        (rejection,) = result.rejected
        assert rejection.scene_id == reprocessed["id"] and f"is read from scene {good[0]['id']}:" in rejection.reason
        assert "the earliest that passes its checks is read (of one time, the one whose id sorts first), whatever " \
               "their order in the source" in rejection.reason
        assert "already has" not in rejection.reason  # the tile had no such date: it went in with this run


def test_a_broken_product_of_an_acquisition_does_not_keep_a_sound_one_out(bad_batch, tiny_region, tmp_path):
    """Two products of one acquisition in one source (a reprocessing), the first broken: the date went in neither
    time, the sound one rejected as a duplicate of the broken one ("tile ... already has the acquisition"), on
    every run offering both, until the broken one was removed from the source."""
    path, good, _ = bad_batch
    broken = broken_copy(tiny_region.items, good[0], good[0]["id"].replace("_N0", "_N0000"), truncate)
    sound = broken_copy(tiny_region.items, good[0], good[0]["id"].replace("_N0", "_N9"))
    assert broken["id"] < sound["id"]  # the one read first, were both sound
    items = write_items(path, [sound, broken, *good[1:]], "broken-twin.json")
    first = ingest(items, tmp_path / "cube", chunks=CHUNKS, progress=False)
    assert sorted(first.added) == sorted([sound["id"], *(g["id"] for g in good[1:])])
    assert [(r.scene_id, r.kind) for r in first.rejected] == [(broken["id"], "SceneReadError")]
    assert "truncated or corrupt" in first.rejected[0].reason
    assert_matches_sources(tmp_path / "cube", write_items(path, [sound, *good[1:]], "broken-twin-in.json"), "s2")
    # nothing to fix and offer again: its acquisition is in the cube (it stayed listed so, for good)
    assert read_version(open_store(tmp_path / "cube"), "s2").rejected == ()

    again = ingest(items, tmp_path / "cube", progress=False)  # the next routine run
    assert not again.added and again.skipped == (sound["id"], *(g["id"] for g in good[1:]))
    (rejection,) = again.rejected
    assert rejection.scene_id == broken["id"] and f"already has the acquisition of {sound['properties']['datetime']}" \
        in rejection.reason and sound["id"] in rejection.reason
    assert again.version is None  # its rejection as a duplicate committed a version of no new data


def test_a_rejection_is_settled_by_another_product_of_its_acquisition_in_a_later_run(bad_batch, tiny_region,
                                                                                      tmp_path, capsys):
    """A product refused (truncated) stayed listed by `cardcube versions` after the provider's sound product of the
    acquisition went in on a later day; another product of another date stays listed."""
    path, good, broken = bad_batch
    cube = tmp_path / "cube"
    truncated = broken_copy(tiny_region.items, good[0], good[0]["id"].replace("_N0", "_N0000"), truncate)
    day1 = ingest(write_items(path, [truncated, broken["crs"]], "settled-1.json"), cube, chunks=CHUNKS, progress=False)
    assert {r.scene_id for r in read_version(open_store(cube), "s2").rejected} == {truncated["id"], broken["crs"]["id"]}
    ingest(write_items(path, [good[0]], "settled-2.json"), cube, progress=False)
    (left,) = read_version(open_store(cube), "s2").rejected
    assert left == {r.scene_id: r for r in day1.rejected}[broken["crs"]["id"]]
    assert main(["versions", "--cube", str(cube)]) == 0
    assert truncated["id"] not in capsys.readouterr().out


@pytest.mark.parametrize("change", ["another date's file", "cut to half its width"])
def test_a_local_file_changed_between_its_check_and_the_writes_goes_in_not_and_commits_nothing(bad_batch, tiny_region,
                                                                                             tmp_path, change):
    """A sync job rewriting the source folder while an ingest runs: a local file is read where it is, so what went in
    was another date's pixels under the checked file's sha256 (``verify --deep`` then said sound), or, a file of
    another size, a raw traceback (``could not broadcast``) with exit 1."""
    path, good, _ = bad_batch
    scene = broken_copy(tiny_region.items, good[2], f"CHANGED-{len(change)}")  # its own files, to change
    b04 = asset_path(tiny_region.items, scene, "B04")
    items = write_items(path, [scene], f"changed-{len(change)}.json")
    cube = tmp_path / "cube"
    proc = stopped_at(ingest_command(items, str(cube), "s2"), "validated")  # checked, nothing written yet
    if change == "another date's file":
        shutil.copy(asset_path(tiny_region.items, good[0], "B04"), b04)  # of the same grid
    else:
        west_part(0.5)("B04", b04)
    proc.send_signal(signal.SIGCONT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 2 and "Traceback" not in err, err
    assert f"error: scene {scene['id']}: band B04 changed since it was checked" in err and "commits nothing" in err
    assert not committed_versions(open_store(cube), "s2")

    result = ingest(items, cube, chunks=CHUNKS, progress=False)  # run again: the file as it is now
    if change == "cut to half its width":  # its bands no longer cover the same ground
        assert [r.kind for r in result.rejected] == ["SceneGridError"] and not result.added
        return
    assert result.added == (scene["id"],) and result.ok
    assert read_version(open_store(cube), "s2").scenes[scene["id"]].checksums["B04"] == \
        "sha256:" + hashlib.sha256(b04.read_bytes()).hexdigest()
    assert_matches_sources(cube, items, "s2")


def test_a_local_file_copied_again_unchanged_during_the_run_goes_in(bad_batch, tiny_region, tmp_path):
    """A sync tool copying a file again with the same bytes (rsync without -t, a download again): its size and time
    changed, its checksum did not, and the run goes on (it stopped: "changed since it was checked")."""
    path, good, _ = bad_batch
    scene = broken_copy(tiny_region.items, good[2], "RECOPIED")
    b04 = asset_path(tiny_region.items, scene, "B04")
    items = write_items(path, [scene], "recopied.json")
    cube = tmp_path / "cube"
    proc = stopped_at(ingest_command(items, str(cube), "s2"), "validated")
    data, when = b04.read_bytes(), b04.stat().st_mtime_ns
    b04.unlink()
    b04.write_bytes(data)
    os.utime(b04, ns=(when + 10**9, when + 10**9))  # a second later, whatever the clock's resolution
    proc.send_signal(signal.SIGCONT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert committed_versions(open_store(cube), "s2") == [1]
    assert_matches_sources(cube, items, "s2")


def test_one_product_offered_under_two_ids_goes_in_once(tiny_region, tmp_path):
    """A Sentinel-1 product offered under a second id, its time a second later (another provider's item of it): it
    went in as a second date, identical to the first. Sentinel-2's rule of one pass does not apply to backscatter
    (the slices of a pass may each name the tile); files of the same bytes are one product, whatever the ids."""
    s1 = items_of(tiny_region.items, "sentinel-1-card-bs")
    when = datetime.fromisoformat(s1[0]["properties"]["datetime"].replace("Z", "+00:00"))
    later = (when + timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    twin = broken_copy(tiny_region.items, s1[0], s1[0]["id"] + "_OTHER_PROVIDER", props={"datetime": later})
    both = write_items(tiny_region.items, [twin, s1[0], s1[1]], "s1-twins.json")
    result = ingest(both, tmp_path / "cube", collection="s1", chunks=CHUNKS, progress=False)
    assert sorted(result.added) == sorted([s1[0]["id"], s1[1]["id"]])
    (rejection,) = result.rejected
    assert rejection.scene_id == twin["id"] and rejection.kind == "DuplicateSceneError"
    assert f"its files are the same bytes as those of scene {s1[0]['id']} on tile" in rejection.reason, rejection.reason
    assert open_cube(tmp_path / "cube", "s1").sizes["time"] == 2

    alone = ingest(write_items(tiny_region.items, [twin], "s1-twin.json"), tmp_path / "cube", collection="s1",
                   progress=False)  # offered in a later run: the committed product's
    (rejection,) = alone.rejected
    assert not alone.added and rejection.reason.endswith("and the cube holds it")
    assert f"its files are the same bytes as those of scene {s1[0]['id']} on tile" in rejection.reason


@pytest.mark.parametrize("other", ["same metadata", "platform spelled otherwise", "no orbit said"])
def test_a_reprocessed_product_seconds_apart_from_a_committed_date_is_rejected_as_its_duplicate(bad_batch,
                                                                                               tiny_region, tmp_path,
                                                                                               other):
    """Another product of one tile's acquisition whose item time differs by seconds (a reprocessing, another
    provider's time): the same pass, so the same acquisition, not a second date; also where the other provider
    spells the platform otherwise ("Sentinel-2A", "S2A") or says no orbit (it went in as a second date)."""
    path, good, _ = bad_batch
    ingest(write_items(path, good, "good.json"), tmp_path / "cube", chunks=CHUNKS, progress=False)
    when = datetime.fromisoformat(good[0]["properties"]["datetime"].replace("Z", "+00:00"))
    later = (when + timedelta(seconds=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    again = broken_copy(tiny_region.items, good[0], good[0]["id"].replace("_N0", "_N9"), props={"datetime": later})
    props = again["properties"]
    if other == "platform spelled otherwise":
        assert props["platform"] in ("sentinel-2a", "sentinel-2b")
        props["platform"] = props["platform"].replace("sentinel-", "S").upper()
    elif other == "no orbit said":
        del props["sat:relative_orbit"], props["sat:orbit_state"]
    result = ingest(write_items(path, [again], "seconds-apart.json"), tmp_path / "cube", chunks=CHUNKS,
                    progress=False)
    (rejection,) = result.rejected
    assert rejection.kind == "DuplicateSceneError" and f"(scene {good[0]['id']})" in rejection.reason
    assert "on the pass this one was seen on at" in rejection.reason
    assert open_cube(tmp_path / "cube", "s2", decode=False).sizes["time"] == len(good)


def test_sources_and_layouts_that_cannot_be_ingested_are_clear_errors(bad_batch, tmp_path):
    path, good, _ = bad_batch
    s2_only = write_items(path, good, "s2-only.json")
    with pytest.raises(InvalidRequestError, match="no sentinel-1-card-bs item for the s1 cube, only 3 of "
                                                  "sentinel-2-l2a"):
        ingest(s2_only, tmp_path / "cube", collection="s1", progress=False)
    (tmp_path / "a-file").write_text("")  # it said "cannot read s2/_lock.json ...: File exists"
    with pytest.raises(InvalidRequestError, match=r"the cube .*a-file is a file: give a folder"):
        ingest(s2_only, tmp_path / "a-file", progress=False)
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(InvalidRequestError, match="its JSON is a list"):
        ingest(tmp_path / "list.json", tmp_path / "cube", progress=False)
    with pytest.raises(InvalidRequestError, match="multiples of 2 for the 20 m bands"):
        ingest(s2_only, tmp_path / "cube", chunks=ChunkLayout(time=4, space=129, shard_space=1032), progress=False)
    for text, says in [("time=0", "positive"), ("foo=1", "use time=N"), ("time=abc", "whole number")]:
        with pytest.raises(InvalidRequestError, match=says):
            ChunkLayout.parse(text)
    assert ChunkLayout.parse(" time=16 , space=128 ") == ChunkLayout(time=16, space=128)
    assert not (tmp_path / "cube").exists() or not committed_versions(open_store(tmp_path / "cube"), "s2")


def test_unknown_source_and_collection_are_clear_errors(tmp_path):
    with pytest.raises(SourceNotFoundError, match="does not exist"):  # a FileNotFoundError, not CubeNotFound
        ingest(tmp_path / "nowhere.json", tmp_path / "cube", progress=False)
    with pytest.raises(ValueError, match="unknown cube collection"):
        ingest(tmp_path, tmp_path / "cube", collection="s3", progress=False)


def test_one_id_for_two_different_scenes_is_rejected(bad_batch, tmp_path):
    path, good, _ = bad_batch
    other = {**good[0], "properties": {**good[0]["properties"], "datetime": "2024-01-20T10:00:00Z"}}
    result = ingest(write_items(path, [*good, other], "same-id.json"), tmp_path / "cube", chunks=CHUNKS,
                    progress=False)
    assert sorted(result.added) == sorted(g["id"] for g in good)
    (rejection,) = result.rejected
    assert rejection.kind == "DuplicateSceneError" and "listed twice in the source with other files" in rejection.reason


def test_a_scene_listed_twice_whose_first_listing_fails_its_checks_goes_in_from_the_second(bad_batch, tiny_region,
                                                                                           tmp_path):
    """Two STAC sources merged, one listing a scene with a stale href (its file truncated): the sound second listing
    was refused at once as "listed twice ... only the first is read" and the first failed its checks, so the
    acquisition never went in, run after run. The second is checked in the place of the first now."""
    path, good, _ = bad_batch
    stale = broken_copy(tiny_region.items, good[0], good[0]["id"], truncate)  # the same id and time, other files
    items = write_items(path, [stale, *good], "stale-listing.json")  # listed first: read first
    result = ingest(items, tmp_path / "cube", chunks=CHUNKS, progress=False)
    assert sorted(result.added) == sorted(g["id"] for g in good)
    (rejection,) = result.rejected  # the first listing's, saying what became of the scene
    assert rejection.scene_id == good[0]["id"] and rejection.kind == "SceneReadError"
    assert "truncated or corrupt" in rejection.reason and "listed again in the source with other files or " \
        "metadata, which was read in its place and went in" in rejection.reason, rejection.reason
    assert read_version(open_store(tmp_path / "cube"), "s2").rejected == ()  # the scene is in: nothing to fix
    assert_matches_sources(tmp_path / "cube", write_items(path, good, "stale-listing-good.json"), "s2")

    # both listings broken: the rejection the ledger keeps (the latest) tells of both
    gone = dict(good[1], assets={band: dict(asset, href="gone/" + asset["href"])
                                 for band, asset in good[1]["assets"].items()})
    both = write_items(path, [broken_copy(tiny_region.items, good[1], good[1]["id"], truncate), gone], "both-bad.json")
    refused = ingest(both, tmp_path / "other", chunks=CHUNKS, progress=False)
    assert not refused.added and [r.scene_id for r in refused.rejected] == [good[1]["id"]] * 2
    first, second = refused.rejected
    assert "truncated or corrupt" in first.reason and "which was read in its place and was refused too" in first.reason
    assert "its earlier listing in the source (other files or metadata) refused: " in second.reason
    assert "truncated or corrupt" in second.reason and "gone/" in second.reason, second.reason
    (kept,) = read_version(open_store(tmp_path / "other"), "s2").rejected
    assert kept == second


def test_a_folder_without_products_and_geojson_that_is_not_stac(tiny_region, tmp_path):
    (tmp_path / "empty" / "S2B_MSIL2A_x.SAFE").mkdir(parents=True)
    with pytest.raises(InvalidRequestError, match=r"no product found in .*SAFE folders and JPEG 2000 are not read"):
        ingest(tmp_path / "empty", tmp_path / "cube", progress=False)
    gpd.read_parquet(tiny_region.parcels).head(2).to_file(tmp_path / "parcels.geojson")
    with pytest.raises(InvalidRequestError, match=r"parcels\.geojson is not valid STAC"):
        ingest(tmp_path / "parcels.geojson", tmp_path / "cube", progress=False)
    with pytest.raises(InvalidRequestError, match=r"parcels\.parquet is not STAC JSON \(an ItemCollection, a "
                       r"catalog\) or a folder of scenes"):  # a binary file: no "'utf-8' codec can't decode"
        ingest(tiny_region.parcels, tmp_path / "cube", progress=False)


def test_a_file_other_than_its_item_declares_is_rejected_though_it_decodes(tiny_region, tmp_path):
    """CDSE's items declare each file's size and multihash (``file:size``, ``file:checksum``). A file with 50 bytes
    changed mid-stream still decodes (GDAL's deflate gives nodata for the rest of the block, no error): it went in,
    its pixels nodata or other values without a word. A file the item's size or checksum does not name is rejected;
    one they name goes in, pixel for pixel."""
    items = tiny_region.items
    src = items_of(items, "sentinel-2-l2a")[3]

    def declare(feature: dict, band: str, *, md5: bool = False) -> dict:  # as the original file's bytes are
        data = asset_path(items, src, band).read_bytes()
        digest = "d50110" + hashlib.md5(data).hexdigest() if md5 else "1220" + hashlib.sha256(data).hexdigest()
        feature["assets"][band].update({"file:size": len(data), "file:checksum": digest})
        return feature

    def flip(band: str, path: Path) -> None:
        if band == "B04":
            data = bytearray(path.read_bytes())
            data[len(data) // 2:len(data) // 2 + 50] = bytes(b ^ 0x55 for b in data[len(data) // 2:len(data) // 2 + 50])
            path.write_bytes(bytes(data))

    def longer(band: str, path: Path) -> None:
        if band == "B04":
            path.write_bytes(path.read_bytes() + bytes(100))

    sound = declare(declare(broken_copy(items, src, "FILE-SOUND", props={"datetime": "2024-01-01T10:00:00Z"}),
                            "B04"), "SCL", md5=True)
    flipped = declare(broken_copy(items, src, "FILE-FLIPPED", flip, props={"datetime": "2024-01-02T10:00:00Z"}),
                      "B04")
    grown = declare(broken_copy(items, src, "FILE-LONGER", longer, props={"datetime": "2024-01-03T10:00:00Z"}), "B04")
    grown["assets"]["B04"].pop("file:checksum")
    path = write_items(items, [sound, flipped, grown], "declared.json")
    result = ingest(path, tmp_path / "cube", chunks=CHUNKS, progress=False)
    assert result.added == ("FILE-SOUND",)
    reasons = {r.scene_id: r.reason for r in result.rejected}
    assert "band B04's file (" in reasons["FILE-FLIPPED"] and "is not the one its item's file:checksum names " \
        "(sha256)" in reasons["FILE-FLIPPED"]
    size = asset_path(items, src, "B04").stat().st_size
    assert f"band B04 is {size + 100:,} bytes (" in reasons["FILE-LONGER"]
    assert f"its item's file:size says {size:,}" in reasons["FILE-LONGER"]
    assert assert_matches_sources(tmp_path / "cube", path, "s2", sample=1) > 0  # FILE-SOUND, bit for bit


def test_a_truncated_file_is_described_by_what_gdal_found_not_by_a_pointer_to_a_hidden_exception(bad_batch,
                                                                                                  tmp_path):
    path, _, broken = bad_batch
    only = write_items(path, [broken["truncated"]], "truncated-only.json")
    (rejection,) = ingest(only, tmp_path / "cube", chunks=CHUNKS, progress=False).rejected
    assert "See previous exception" not in rejection.reason  # GDAL's wording: nobody sees that exception
    assert "IReadBlock failed" in rejection.reason and ".tif, band 1" not in rejection.reason  # no /vsimem/ name
    assert "B04.tif" in rejection.reason and "bytes" in rejection.reason  # the file, and how much of it there is


REFUSING_SERVER = """
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class Refuse(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_error(403, "Server failed to authenticate the request")
    do_HEAD = do_GET
    def log_message(self, *args):
        pass
server = ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


def test_a_refused_signed_url_says_it_may_have_expired_and_keeps_its_signature_out(bad_batch, tiny_region, tmp_path):
    """A band file behind an HTTP server that refuses the request (403: a provider's signed URL past its
    expiry, as Planetary Computer's SAS tokens are after an hour) is a rejected scene saying so, not "file not
    found", and the reason shows no signature; the other scenes go in."""
    _, good, _ = bad_batch
    with http_server(REFUSING_SERVER) as base:
        signed = dict(good[2], id="SIGNED", assets={
            band: dict(asset, href=f"{base}/{band}.tif?se=2024-06-01&sig=SECRET")
            for band, asset in good[2]["assets"].items()}, properties={**good[2]["properties"],
                                                                          "datetime": "2024-01-07T10:00:00Z"})
        path = write_items(tiny_region.items, [*good[:2], signed], "signed.json")
        result = ingest(path, tmp_path / "cube", chunks=CHUNKS, progress=False)
    assert sorted(result.added) == sorted(f["id"] for f in good[:2])
    (rejection,) = result.rejected
    assert rejection.scene_id == "SIGNED" and rejection.kind == "SceneReadError"
    assert "HTTP 403" in rejection.reason and "signature may have expired" in rejection.reason, rejection.reason
    assert "?<signature hidden>" in rejection.reason and "SECRET" not in rejection.reason


SERVING_ONCE = """
import functools, sys
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
served = set()
class Once(SimpleHTTPRequestHandler):
    def do_GET(self, head=False):
        if self.path in served:
            self.send_error(403, "Server failed to authenticate the request")
            return
        if head:  # the check's HEAD before its read: an expiry after the read, not before it
            return super().do_HEAD()
        served.add(self.path)
        super().do_GET()
    def do_HEAD(self):
        self.do_GET(head=True)
    def log_message(self, *args):
        pass
server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Once, directory=sys.argv[1]))
print(server.server_address[1], flush=True)
server.serve_forever()
"""


def test_a_signed_urls_signature_is_kept_nowhere_in_the_cube(bad_batch, tiny_region, tmp_path):
    """The ledger recorded each band file's href whole, a signed URL's signature included, and `catalog serve`
    publishes the ledger (to any origin): the signature is left out of what is stored, as out of messages."""
    from tests.ingest.http_source import COUNTING_SERVER

    _, good, _ = bad_batch
    cube = tmp_path / "cube"
    with http_server(COUNTING_SERVER, str(tiny_region.items.parent)) as base:
        signed = served(good[0], base, "?se=2030-01-01&sig=SECRET")
        result = ingest(write_items(tiny_region.items, [signed], "signed-ok.json"), cube, chunks=CHUNKS,
                        progress=False)
    assert result.added == (good[0]["id"],)
    stored = [p for p in cube.rglob("*") if p.is_file() and p.suffix in (".json", "")]
    assert stored and not [p for p in stored if b"SECRET" in p.read_bytes()]
    record = read_version(open_store(cube), "s2").scenes[good[0]["id"]]
    assert all(href.endswith("?<signature hidden>") for href in record.sources.values()) and record.sources


def test_a_rejected_signed_urls_signature_is_in_no_reason(bad_batch, tiny_region, tmp_path):
    """A truncated, empty or off-grid file behind a signed URL: its rejection named the file by its href whole,
    signature and all, in the run's output and in the ledger, which `catalog serve` publishes."""
    from tests.ingest.http_source import COUNTING_SERVER

    path, _, broken = bad_batch
    items = tiny_region.items
    stretched = broken_copy(items, items_of(items, "sentinel-2-l2a")[3], "BAD-stretched", stretch(1.00001),
                            props={"datetime": "2024-01-09T10:00:00Z"})
    cube = tmp_path / "cube"
    with http_server(COUNTING_SERVER, str(items.parent)) as base:
        signed = [served(item, base, "?se=2030-01-01&sig=SECRET")
                  for item in (broken["truncated"], broken["empty"], stretched)]
        result = ingest(write_items(path, signed, "signed-bad.json"), cube, chunks=CHUNKS, progress=False)
    reasons = {r.scene_id: r.reason for r in result.rejected}
    assert set(reasons) == {i["id"] for i in signed}
    assert all("SECRET" not in reason and "?<signature hidden>" in reason for reason in reasons.values()), reasons
    assert not [p for p in cube.rglob("*") if p.is_file() and b"SECRET" in p.read_bytes()]


def test_a_signature_expiring_between_the_checks_and_the_writes_fails_the_run_and_commits_nothing(
        bad_batch, tiny_region, tmp_path, capsys):
    """Signed URLs that answer the checks' read and are refused when the shards are written (expired in
    between), read again without the spool (``--no-spool``; with it the writes read the checked copies,
    tests/ingest/test_spool.py): the run ends with one error line saying so, its signature hidden, commits nothing
    and leaves the cube to the next run."""
    _, good, _ = bad_batch
    cube = tmp_path / "cube"
    ingest(write_items(tiny_region.items, good[:2], "first.json"), cube, chunks=CHUNKS, progress=False)
    with http_server(SERVING_ONCE, str(tiny_region.items.parent)) as base:
        signed = served(good[2], base, "?sig=SECRET")
        assert main(["ingest", str(write_items(tiny_region.items, [signed], "signed.json")), "--cube", str(cube),
                     "--quiet", "--no-spool"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "could not be read again" in err and "commits nothing" in err, err
    assert "signature may have expired" in err and "SECRET" not in err
    assert committed_versions(open_store(cube), "s2") == [1]
    result = ingest(write_items(tiny_region.items, good[2:3], "again.json"), cube, chunks=CHUNKS, progress=False)
    assert result.added == (good[2]["id"],) and result.version == 2


def test_an_ingest_into_a_folder_inside_a_cube_is_refused_naming_the_cube(tiny_region, tiny_cube):
    """``ingest --cube CUBE/s2`` built a second cube nested in the first, where versions, verify and expire
    say the location lies inside a cube; nothing is written there now."""
    before = sorted(p.relative_to(tiny_cube) for p in tiny_cube.rglob("*"))
    with pytest.raises(InvalidRequestError, match=rf"ingest would make a new cube at .*s2; it lies inside the cube "
                                                  rf"at {tiny_cube} \(its s2 collection\)"):
        ingest(tiny_region.items, tiny_cube / "s2", progress=False)
    assert sorted(p.relative_to(tiny_cube) for p in tiny_cube.rglob("*")) == before


def test_a_new_cube_in_a_folder_of_other_files_is_refused(tiny_region, tmp_path):
    """``ingest --cube`` given the scenes' folder (or any folder of the user's) made the cube there, its
    catalog.json replacing the scenes' own static STAC catalog without a word. A cube a run left before its first
    commit, and a new collection of a cube, still go in."""
    scenes = tmp_path / "scenes"
    scenes.mkdir()
    (scenes / "catalog.json").write_text('{"type": "Catalog", "id": "mine"}')
    # a scene of each collection: what is checked is where the cube goes, not how many dates go in
    items = write_items(tiny_region.items, [*items_of(tiny_region.items, "sentinel-2-l2a")[:1],
                                            *items_of(tiny_region.items, "sentinel-1-card-bs")[:1]], "new-cube.json")
    with pytest.raises(InvalidRequestError, match=r"scenes holds catalog\.json but no cube: give --cube \(Python: "
                                                  r"cube=\) a new or empty folder"):
        ingest(items, scenes, chunks=CHUNKS, progress=False)
    assert [p.name for p in scenes.iterdir()] == ["catalog.json"]
    assert (scenes / "catalog.json").read_text() == '{"type": "Catalog", "id": "mine"}'
    cube = tmp_path / "cube"
    (cube / "s2").mkdir(parents=True)  # what a first run killed before its commit leaves
    (cube / "zarr.json").write_text("{}")
    assert ingest(items, cube, chunks=CHUNKS, progress=False, catalog=False).version == 1
    assert ingest(items, cube, collection="s1", chunks=CHUNKS, progress=False).version == 1


def test_a_cube_wiped_and_built_again_at_its_place_is_no_folder_of_other_files(tiny_region, tmp_path):
    """``rm -r CUBE/s2`` (a pipeline run again from scratch) leaves the cube's own catalog.json and sources/ at its
    root: they were taken for the user's files, and the new cube refused. A catalog of another's still is."""
    first = write_items(tiny_region.items, items_of(tiny_region.items, "sentinel-2-l2a")[:1], "wiped.json")
    cube = tmp_path / "cube"
    assert ingest(first, cube, chunks=CHUNKS, progress=False).version == 1
    shutil.rmtree(cube / "s2")
    assert {"catalog.json", "sources"} <= {p.name for p in cube.iterdir()}
    assert ingest(first, cube, chunks=CHUNKS, progress=False).version == 1
    volume = tmp_path / "volume"  # a disk mounted for the cube: its file system's lost+found at the top
    (volume / "lost+found").mkdir(parents=True)
    assert ingest(first, volume, chunks=CHUNKS, progress=False).version == 1
    shutil.rmtree(cube / "s2")
    (cube / "catalog.json").write_text('{"type": "Catalog", "id": "mine"}')
    with pytest.raises(InvalidRequestError, match=r"holds catalog\.json, sources but no cube"):
        ingest(first, cube, chunks=CHUNKS, progress=False)


def test_with_warp_a_band_labelled_with_another_crs_is_rejected_not_nodata(tiny_region, tmp_path):
    """--warp resamples each band on its own: a scene with one band file labelled EPSG:32632 (the others on the
    tile) went in with that band all nodata over the union of the footprints (a window 15 times the scene's)."""
    relabel = reproject_label(32632)
    src = items_of(tiny_region.items, "sentinel-2-l2a")[3]
    odd = broken_copy(tiny_region.items, src, "ONE-BAND-32632",
                      lambda band, path: band == "B08" and relabel(band, path))
    result = ingest(write_items(tiny_region.items, [odd], "one-band.json"), tmp_path / "cube", chunks=CHUNKS,
                    warp=True, progress=False)
    assert result.added == () and [r.kind for r in result.rejected] == ["SceneGridError"]
    assert "band B08 covers other ground than band" in result.rejected[0].reason


def test_a_scene_whose_files_lie_off_its_item_geometry_on_its_tile_is_rejected(tiny_region, tmp_path):
    """A scene naming its tile, its files moved 20 km west on the tile's own pixel lattice (a wrong geotransform):
    it went in there without a word, with or without warp. Its item's geometry says where it is."""
    src = items_of(tiny_region.items, "sentinel-1-card-bs")[0]
    moved = broken_copy(tiny_region.items, src, "S1-MOVED-20KM", shift(-19_980.0))
    path = write_items(tiny_region.items, [moved], "moved.json")
    for warp in (False, True):
        result = ingest(path, tmp_path / f"cube-{warp}", collection="s1", chunks=CHUNKS, warp=warp, progress=False)
        (rejection,) = result.rejected
        assert not result.added and rejection.kind == "SceneGridError", rejection
        assert "and its item's geometry (" in rejection.reason and "do not cover the same ground" in rejection.reason
        assert not read_version(open_store(tmp_path / f"cube-{warp}"), "s1").tiles


def test_backscatter_with_an_undeclared_nodata_border_of_0_db_is_rejected(tiny_region, tmp_path):
    """A dB file whose border is 0.0 with no nodata said (neither its GeoTIFF tag nor its item): the border went in
    as measurements of 0 dB (10 % of the pixels here), passing the "mostly negative" check. Said as nodata 0 by its
    item, it goes in with those pixels as nodata."""
    import rasterio

    def zero_border(band: str, path: Path) -> None:
        with rasterio.open(path) as src:
            profile, arr = src.profile, src.read(1)
        arr = np.where(np.isnan(arr), 0, arr)
        arr[:, :20] = 0
        profile.update(driver="GTiff", nodata=None)
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(arr, 1)

    src = items_of(tiny_region.items, "sentinel-1-card-bs")[0]
    bordered = broken_copy(tiny_region.items, src, "S1-ZERO-BORDER", zero_border)
    for asset in bordered["assets"].values():
        for described in asset.get("raster:bands", []):
            described.pop("nodata", None)
    result = ingest(write_items(tiny_region.items, [bordered], "zeros.json"), tmp_path / "cube", collection="s1",
                    chunks=CHUNKS, progress=False)
    (rejection,) = result.rejected
    assert not result.added and rejection.kind == "SceneContentError"
    assert "band VH holds 10% values of exactly 0 dB" in rejection.reason or \
        "band VV holds 10% values of exactly 0 dB" in rejection.reason
    assert "Say its nodata" in rejection.reason
    for asset in bordered["assets"].values():
        asset["raster:bands"] = [{**(asset.get("raster:bands") or [{}])[0], "nodata": 0}]
    result = ingest(write_items(tiny_region.items, [bordered], "said.json"), tmp_path / "cube", collection="s1",
                    chunks=CHUNKS, progress=False)
    assert result.added == ("S1-ZERO-BORDER",)
    vv = open_cube(tmp_path / "cube", "s1", bands=["VV"]).VV.isel(time=0)
    with rasterio.open(asset_path(tiny_region.items, bordered, "VV")) as f:
        left = f.bounds.left
    assert np.isnan(vv.sel(x=slice(left, left + 200)).values).all()  # the 20 px border: nodata, not 0 dB


def test_backscatter_whose_vv_and_vh_assets_are_swapped_is_rejected(tiny_region, tmp_path):
    """An S1 item whose VV and VH assets name each other's files, whose files name no band (as many providers'
    do): it went in, VH 9 dB above VV, every VH_VV positive, RVI above 2 and the mowing marker reading VV. No
    backscatter's cross-polarisation outshines its co-polarisation over a scene: rejected, naming both; the files
    put right, it goes in."""
    src = items_of(tiny_region.items, "sentinel-1-card-bs")[0]
    plain = broken_copy(tiny_region.items, src, "S1-SWAPPED", undescribed)
    swapped = swap_assets(plain, "VV", "VH")
    result = ingest(write_items(tiny_region.items, [swapped], "swapped.json"), tmp_path / "cube", collection="s1",
                    chunks=CHUNKS, progress=False)
    (rejection,) = result.rejected
    assert not result.added and rejection.kind == "SceneContentError", result
    assert re.search(r"band VH \(VV\.tif\) is brighter than band VV \(VH\.tif\): a mean of -\d+\.\d dB against "
                     r"-\d+\.\d dB", rejection.reason), rejection.reason
    assert "are the item's VV and VH assets swapped?" in rejection.reason
    result = ingest(write_items(tiny_region.items, [plain], "plain.json"), tmp_path / "cube", collection="s1",
                    chunks=CHUNKS, progress=False)
    assert result.added == ("S1-SWAPPED",) and not result.rejected


def test_backscatter_of_another_data_type_is_rejected_saying_how_to_convert_it(tiny_region, tmp_path):
    """Backscatter delivered as dB in hundredths in int16 (``raster:bands`` scale 0.01) or as float64: rejected with
    "band VV is int16, expected float32", no more said of what the cube reads or how to get there."""
    import rasterio

    def as_type(dtype: str) -> Callable[[str, Path], None]:
        def edit(band: str, path: Path) -> None:
            with rasterio.open(path) as src:
                profile, arr = src.profile, src.read(1)
            if dtype == "int16":
                arr = np.where(np.isnan(arr), -32768, np.round(arr * 100))
            profile.update(dtype=dtype, nodata=-32768 if dtype == "int16" else profile["nodata"])
            with rasterio.open(path, "w", **profile) as dst:
                dst.write(arr.astype(dtype), 1)
        return edit

    src = items_of(tiny_region.items, "sentinel-1-card-bs")[0]
    scaled = broken_copy(tiny_region.items, src, "S1-INT16", as_type("int16"))
    for asset in scaled["assets"].values():
        asset["raster:bands"] = [{**asset["raster:bands"][0], "nodata": -32768, "scale": 0.01, "data_type": "int16"}]
    double = broken_copy(tiny_region.items, src, "S1-FLOAT64", as_type("float64"),
                         props={"datetime": "2024-05-01T07:00:00Z"})
    result = ingest(write_items(tiny_region.items, [scaled, double], "types.json"), tmp_path / "cube",
                    collection="s1", chunks=CHUNKS, progress=False)
    reasons = {r.scene_id: r.reason for r in result.rejected}
    assert not result.added and set(reasons) == {"S1-INT16", "S1-FLOAT64"}, result
    assert "band VV is int16, expected float32: the cube reads backscatter as float32 (dB, or linear power said so);" \
        " write it as float32, its scale applied (gdal_translate -ot Float32 -unscale)" in reasons["S1-INT16"]
    assert "band VV is float64, expected float32: the cube reads backscatter as float32" in reasons["S1-FLOAT64"]


def test_backscatter_with_a_stripe_of_0_db_is_rejected(tiny_region, tmp_path):
    """A dB file whose nodata is said (NaN) but holds a thin stripe of 0.0 (border noise at a swath edge, written as 0
    by the producer's dB conversion): under the 1 % of exactly 0 dB a border is rejected at, it went in as
    measurements of a power of 1, and a parcel across it measured VV 2.6 dB too high, VH 8.5 dB (5 of its 87 pixels).
    Exactly 0 dB side by side is no measurement: rejected, naming where; scattered ones still go in. Said as nodata 0,
    the stripe goes in as nodata."""
    import rasterio

    def striped(rows: slice, columns: slice | list[int]) -> Callable[[str, Path], None]:
        def edit(band: str, path: Path) -> None:
            with rasterio.open(path) as src:
                profile, arr = src.profile, src.read(1)
            arr[rows, columns] = 0
            with rasterio.open(path, "w", **profile) as dst:
                dst.write(arr, 1)
        return edit

    src = items_of(tiny_region.items, "sentinel-1-card-bs")[0]
    stripe = broken_copy(tiny_region.items, src, "S1-ZERO-STRIPE", striped(slice(0, 60), slice(100, 101)))
    scattered = broken_copy(tiny_region.items, src, "S1-ZERO-SCATTERED", striped(slice(10, 60, 10), [5, 50, 150]),
                            props={"datetime": "2024-05-01T07:00:00Z"})
    with rasterio.open(asset_path(tiny_region.items, stripe, "VV")) as f:
        zeros, values = int(np.count_nonzero(f.read(1) == 0)), f.width * f.height
    assert 0 < zeros < 0.01 * values  # under the threshold of scattered zeros (a border)
    result = ingest(write_items(tiny_region.items, [stripe, scattered], "stripe.json"), tmp_path / "cube",
                    collection="s1", chunks=CHUNKS, progress=False)
    assert result.added == ("S1-ZERO-SCATTERED",), result
    (rejection,) = result.rejected
    assert rejection.scene_id == "S1-ZERO-STRIPE" and rejection.kind == "SceneContentError"
    assert "band VV holds 60 values of exactly 0 dB side by side (from row 0, column 100)" in rejection.reason, \
        rejection.reason
    assert "Say its nodata 0 (the GeoTIFF's nodata tag, gdal_edit.py -a_nodata 0: NaN stays nodata" in rejection.reason
    for asset in stripe["assets"].values():
        asset["raster:bands"] = [{**(asset.get("raster:bands") or [{}])[0], "nodata": 0}]
    for band in ("VV", "VH"):  # its files' tag says NaN: say 0 there too
        with rasterio.open(asset_path(tiny_region.items, stripe, band)) as f:
            profile, arr = f.profile, f.read(1)
        profile.update(nodata=0)
        with rasterio.open(asset_path(tiny_region.items, stripe, band), "w", **profile) as f:
            f.write(np.where(np.isnan(arr), 0, arr), 1)
    result = ingest(write_items(tiny_region.items, [stripe], "said.json"), tmp_path / "cube", collection="s1",
                    chunks=CHUNKS, progress=False)
    assert result.added == ("S1-ZERO-STRIPE",), result
    vv = open_cube(tmp_path / "cube", "s1", bands=["VV"], time=frozenset([stripe["properties"]["datetime"]])).VV
    with rasterio.open(asset_path(tiny_region.items, stripe, "VV")) as f:
        x, top = f.transform * (100.5, 0)
    stored = vv.isel(time=0).sel(y=slice(top, top - 600))
    assert np.isnan(stored.sel(x=x).values).all() and len(stored.y) == 60  # the stripe: nodata, not 0 dB
    assert not np.isnan(stored.sel(x=x - 10).values).any()


def test_backscatter_with_an_undeclared_fill_value_is_rejected(tiny_region, tmp_path):
    """A dB file whose border is -9999 (or -32768) with no nodata said: the border went in as measurements, a parcel
    on it measured a mean of -inf dB and a min of -9999 (one across it a mean biased low by the border's power of 0),
    passing every check ("mostly negative", not 0 dB). Said as nodata by its item, it goes in with those pixels as
    nodata; a few tiny powers (-120 dB) are no fill value and go in."""
    import rasterio

    def filled(value: float, rows: slice, columns: slice) -> Callable[[str, Path], None]:
        def edit(band: str, path: Path) -> None:
            with rasterio.open(path) as src:
                profile, arr = src.profile, src.read(1)
            arr[rows, columns] = value
            profile.update(driver="GTiff", nodata=None)
            with rasterio.open(path, "w", **profile) as dst:
                dst.write(arr, 1)
        return edit

    src = items_of(tiny_region.items, "sentinel-1-card-bs")[0]
    bordered = broken_copy(tiny_region.items, src, "S1-FILL-BORDER", filled(-9999.0, slice(None), slice(0, 20)))
    tiny = broken_copy(tiny_region.items, src, "S1-TINY-POWERS", filled(-120.0, slice(0, 2), slice(0, 1)),
                       props={"datetime": "2024-05-01T07:00:00Z"})
    for item in (bordered, tiny):
        for asset in item["assets"].values():
            for described in asset.get("raster:bands", []):
                described.pop("nodata", None)
    result = ingest(write_items(tiny_region.items, [bordered, tiny], "fill.json"), tmp_path / "cube",
                    collection="s1", chunks=CHUNKS, progress=False)
    assert [r.reason for r in result.rejected if r.scene_id != "S1-FILL-BORDER"] == []
    (rejection,) = result.rejected
    assert result.added == ("S1-TINY-POWERS",) and rejection.scene_id == "S1-FILL-BORDER", result
    assert rejection.kind == "SceneContentError" and "values beyond +-100 dB (10.00% of its values, e.g. -9999)" \
        in rejection.reason and "Say its nodata" in rejection.reason, rejection.reason
    for asset in bordered["assets"].values():
        asset["raster:bands"] = [{**(asset.get("raster:bands") or [{}])[0], "nodata": -9999}]
    result = ingest(write_items(tiny_region.items, [bordered], "said.json"), tmp_path / "cube", collection="s1",
                    chunks=CHUNKS, progress=False)
    assert result.added == ("S1-FILL-BORDER",)
    vv = open_cube(tmp_path / "cube", "s1", bands=["VV"], time=frozenset([bordered["properties"]["datetime"]])).VV
    with rasterio.open(asset_path(tiny_region.items, bordered, "VV")) as f:
        left, inside = f.bounds.left, f.read(1)[:, 20:]
    assert np.isnan(vv.isel(time=0).sel(x=slice(left, left + 200)).values).all()  # the border: nodata, not -9999 dB
    assert np.array_equal(vv.isel(time=0).sel(x=slice(left + 200, left + 2000)).values, inside, equal_nan=True)


def test_a_scene_id_the_cube_holds_offered_again_at_another_time_is_rejected(tiny_region, tmp_path):
    """Within one run, one id with two times is a DuplicateSceneError; offered in a later run it was "skipped,
    already present", exit 0, its other time unsaid. The same item again is still skipped."""
    first = items_of(tiny_region.items, "sentinel-2-l2a")[0]
    cube = tmp_path / "cube"
    ingest(write_items(tiny_region.items, [first], "first.json"), cube, chunks=CHUNKS, progress=False)
    moved = {**first, "properties": {**first["properties"], "datetime": "2024-01-15T10:00:00Z"}}
    result = ingest(write_items(tiny_region.items, [moved, first], "again.json"), cube, chunks=CHUNKS, progress=False)
    assert result.skipped == (first["id"],) and [r.kind for r in result.rejected] == ["DuplicateSceneError"]
    assert "the cube holds a scene of this id at" in result.rejected[0].reason and "2024-01-15" in \
        result.rejected[0].reason
    assert result.refiled == ()  # the same files: nothing to say


def test_a_scene_id_the_cube_holds_offered_again_from_other_files_is_skipped_and_said(tiny_region, tmp_path,
                                                                                        caplog):
    """A corrected product republished under its id (or the same files moved) was "skipped, already present"
    without a word: the run names it, once even when offered twice, and reads nothing of it."""
    first = items_of(tiny_region.items, "sentinel-2-l2a")[0]
    cube = tmp_path / "cube"
    ingest(write_items(tiny_region.items, [first], "first.json"), cube, chunks=CHUNKS, progress=False)
    before = open_cube(cube, decode=False).compute()
    corrected = broken_copy(tiny_region.items, first, first["id"], blank)  # same id and time, other files
    with caplog.at_level("WARNING", logger="ingest"):
        result = ingest(write_items(tiny_region.items, [corrected, corrected], "corrected.json"), cube,
                        chunks=CHUNKS, progress=False)
    assert sum("offered from other files, it was skipped" in r.getMessage() for r in caplog.records) == 1
    assert first["id"] in result.skipped and result.refiled == (first["id"],) and result.ok
    assert f"of those skipped, 1 offered from other files than the cube read them from ({first['id']})" in \
        result.summary() and result.to_dict()["refiled"] == [first["id"]]
    xr.testing.assert_identical(open_cube(cube, decode=False).compute(), before)


@pytest.mark.parametrize("wait", ["-1", "nan", "inf"])
def test_a_wait_that_is_no_number_of_seconds_is_refused_before_any_work(wait, tiny_region, tmp_path, capsys):
    """--wait took -1 and nan without a word (nan waited forever, as inf)."""
    with pytest.raises(SystemExit) as refused:
        main(["ingest", str(tiny_region.items), "--cube", str(tmp_path / "cube"), "--wait", wait])
    assert refused.value.code == 2 and "expected a number of seconds >= 0" in capsys.readouterr().err
    assert not (tmp_path / "cube").exists()
