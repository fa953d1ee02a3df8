"""The manifest that pins an extraction's run, without a cube: started, refused when mixed, finished."""

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

from cardcube.errors import InvalidRequestError
from cardcube.spec import cube_spec
from cardcube.storage import open_store, read_bytes, read_json, write_bytes, write_json
from cube import extraction_files
from cube.extraction_files import (
    MANIFEST,
    STATUS,
    TIMESERIES_PARQUET,
    run_of,
    statistics_keys,
    statistics_name,
    write_status,
)
from cube.extraction_manifest import check_manifest, finish_manifest, refuse_other_parameters
from cube.extraction_reader import read_manifest
from cube.ledger import Acquisition, CubeVersion, HotSlot, SceneRecord, TileState
from cube.parcel_layer import parquet_bytes
from cube.timeseries import ParcelStatus

PARAMETERS = {"cube": "memory://cube", "collection": "s2", "version": 1, "bands": ["B04"], "block": 256}


def _version(number: int, scenes: list[str]) -> CubeVersion:
    acqs = tuple(Acquisition(f"2024-05-0{i + 1}T10:50:31Z", sid, "sentinel-2a", 8, "descending")
                 for i, sid in enumerate(scenes))
    return replace(CubeVersion.empty(cube_spec("s2")), version=number, tiles={"31UFU": TileState("31UFU", cold=acqs)})


def test_a_run_starts_incomplete_and_finishes_with_the_scenes_it_read():
    out, version = MemoryStore(), _version(1, ["S2A_1", "S2A_2"])
    assert check_manifest(out, PARAMETERS, version, time=None, update=False, cube=out) is None  # a whole run
    assert read_json(out, MANIFEST)["complete"] is False
    assert check_manifest(out, PARAMETERS, version, time=None, update=False, cube=out) is None  # resumed
    finish_manifest(out, version, time=None, status={"ok": 3, "outside": 1})
    manifest = read_manifest(out)
    assert manifest["complete"] is True and manifest["scenes"] == {"31UFU": ["S2A_1", "S2A_2"]}
    assert manifest["status"] == {"ok": 3, "outside": 1} and manifest["updated_from"] == []


def test_the_same_parameters_written_another_way_resume_the_run():
    """Bands in another order and a time range written another way are the same run (they were refused as
    "other bands", "other time"); other ones are refused."""
    out, version = MemoryStore(), _version(1, ["S2A_1"])
    first = {**PARAMETERS, "bands": ["B04", "B08"], "time": "2024-05"}
    check_manifest(out, first, version, time="2024-05", update=False, cube=out)
    same = {**first, "bands": ["B08", "B04"], "time": "2024-05-01/2024-05-31"}
    assert check_manifest(out, same, version, time=same["time"], update=False, cube=out) is None
    with pytest.raises(InvalidRequestError, match=r"with other bands, time; .* as that run was: --bands B04,B08 "
                                                  r"--time 2024-05 \(Python: bands=\['B04', 'B08'\], "
                                                  r"time='2024-05'\)"):
        check_manifest(out, {**first, "bands": ["B04"], "time": "2024-05-01/2024-05-30"}, version, time=None,
                       update=False, cube=out)


def test_a_run_with_other_parameters_is_told_the_earlier_runs_options():
    """The refusal gave the earlier run's parameters as Python arguments (``bands=['B04', 'B08']``) to a user of
    the command line: now as its options, the Python ones beside."""
    out, version = MemoryStore(), _version(1, ["S2A_1"])
    first = {**PARAMETERS, "buffer": -5.0, "all_touched": False, "mask": None, "time": None}
    check_manifest(out, first, version, time=None, update=False, cube=out)
    other = {**first, "buffer": 0.0, "all_touched": True, "mask": [3, 8, 9], "time": "2024-05"}
    with pytest.raises(InvalidRequestError, match=r"as that run was: --buffer -5 \(no --all-touched\) --no-mask "
                                                  r"\(no --time\) \(Python: buffer=-5\.0, all_touched=False, "
                                                  r"mask=None, time=None\)$"):
        check_manifest(out, other, version, time="2024-05", update=False, cube=out)
    out = MemoryStore()  # a time given in Python as a pair (recorded as its text) has no --time of that text
    pair = {**first, "time": str(("2024-05-01", "2024-06-01"))}
    check_manifest(out, pair, version, time=None, update=False, cube=out)
    with pytest.raises(InvalidRequestError, match=r"as that run was: time=\('2024-05-01', '2024-06-01'\) \(Python"):
        check_manifest(out, first, version, time=None, update=False, cube=out)


def test_a_cloud_mask_of_the_same_classes_in_another_order_is_the_same_run():
    """``--mask 11,10,9,8,3,1,0`` (or ``mask=[...]`` in another order) leaves out the classes the default does: it was
    refused as a run "with other mask", and told to run it as ``mask=[0, 1, ...]`` in Python, though ``--mask`` takes
    them now."""
    out, version = MemoryStore(), _version(1, ["S2A_1"])
    first = {**PARAMETERS, "mask": [0, 1, 3, 8, 9, 10, 11]}
    check_manifest(out, first, version, time=None, update=False, cube=out)
    same = {**first, "mask": [11, 10, 9, 8, 3, 1, 0, 3]}
    assert check_manifest(out, same, version, time=None, update=False, cube=out) is None
    with pytest.raises(InvalidRequestError, match=r"with other mask; .* as that run was: --mask 0,1,3,8,9,10,11 "
                                                  r"\(Python: mask=\[0, 1, 3, 8, 9, 10, 11\]\)$"):
        check_manifest(out, {**first, "mask": [0, 1, 3]}, version, time=None, update=False, cube=out)


def test_an_update_of_an_extraction_from_before_units_were_recorded_records_them():
    """The manifest says each band's units (README: "each band's units in the manifest's units"): one made before
    they were recorded kept none through every update."""
    out, first = MemoryStore(), _version(1, ["S2A_1"])
    check_manifest(out, PARAMETERS, first, time=None, update=False, cube=out)  # PARAMETERS: no units, as before
    finish_manifest(out, first, time=None, status={"ok": 1})
    check_manifest(out, {**PARAMETERS, "units": {"B04": "1"}}, _version(2, ["S2A_1", "S2A_2"]), time=None,
                   update=True, cube=out)
    assert read_json(out, MANIFEST)["units"] == {"B04": "1"}


def test_other_parameters_or_foreign_files_are_refused_and_an_update_adds_the_new_scenes_only():
    out = MemoryStore()
    write_json(out, "mine.txt", "not an extraction")
    with pytest.raises(InvalidRequestError, match=r"holds mine\.txt but no extraction"):
        check_manifest(out, PARAMETERS, _version(1, ["S2A_1"]), time=None, update=False, cube=out)
    out = MemoryStore()
    check_manifest(out, PARAMETERS, _version(1, ["S2A_1"]), time=None, update=False, cube=out)
    finish_manifest(out, _version(1, ["S2A_1"]), time=None, status={"ok": 1})
    with pytest.raises(InvalidRequestError, match=f"with other block; write to a new --out, or run it as that run "
                                                  f"was: --block {PARAMETERS['block']} \\(Python: block="):
        check_manifest(out, {**PARAMETERS, "block": 512}, _version(1, ["S2A_1"]), time=None, update=False, cube=out)
    newer = _version(2, ["S2A_1", "S2A_2"])
    with pytest.raises(InvalidRequestError, match="pass update=True"):
        check_manifest(out, PARAMETERS, newer, time=None, update=False, cube=out)
    assert check_manifest(out, PARAMETERS, newer, time=None, update=True, cube=out) == {"31UFU": ["S2A_2"]}
    finish_manifest(out, newer, time=None, status={"ok": 1})
    assert read_manifest(out)["updated_from"] == [1]


def test_an_extraction_made_under_another_pixel_rule_is_not_updated():
    """Its parcels with pixel centres on their buffered outline had one side's border pixels left out (rule 1, not
    recorded): an update would count them for the new dates alone."""
    from cube.membership import PIXEL_RULE

    out, now = MemoryStore(), {**PARAMETERS, "pixel_rule": PIXEL_RULE}
    check_manifest(out, PARAMETERS, _version(1, ["S2A_1"]), time=None, update=False, cube=out)
    finish_manifest(out, _version(1, ["S2A_1"]), time=None, status={"ok": 1})
    newer = _version(2, ["S2A_1", "S2A_2"])
    with pytest.raises(InvalidRequestError, match=rf"pixel rule differs \(rule 1, now {PIXEL_RULE}: .* write to a "
                                                  r"new --out$"):
        check_manifest(out, now, newer, time=None, update=True, cube=out)
    out = MemoryStore()
    check_manifest(out, now, _version(1, ["S2A_1"]), time=None, update=False, cube=out)
    finish_manifest(out, _version(1, ["S2A_1"]), time=None, status={"ok": 1})
    assert check_manifest(out, now, newer, time=None, update=True, cube=out) == {"31UFU": ["S2A_2"]}


def _out_store(where: str, request: pytest.FixtureRequest):
    """An extraction's store: in memory, or on moto's S3 over HTTP (``where == "s3"``)."""
    if where != "s3":
        return MemoryStore()
    bucket = request.getfixturevalue("s3_bucket")
    return open_store(bucket.url_for("out"), storage_options=bucket.storage_options())


def _recorded(version: CubeVersion, **versions: int) -> CubeVersion:
    """``version`` with a record of each of its scenes, written by version 1 but those given (``S2A_2=3``)."""
    acqs = [a for state in version.tiles.values() for a in state.acquisitions]
    return replace(version, scenes={a.scene_id: SceneRecord(a.scene_id, "31UFU", a.time, versions.get(a.scene_id, 1))
                                    for a in acqs})


def test_an_update_after_a_repair_of_dates_it_read_reads_them_again():
    """``ingest --repair`` writes a damaged date anew: the extraction's rows of it may hold the damaged values (a bit
    flipped that still decodes). The update kept them ("no scene new since the last run"), then was refused, naming
    the scene; now it reads the date again (``update.replaced``: their earlier rows are dropped)."""
    out, first = MemoryStore(), _recorded(_version(1, ["S2A_1", "S2A_2"]))
    check_manifest(out, PARAMETERS, first, time=None, update=False, cube=out)
    finish_manifest(out, first, time=None, status={"ok": 1})
    assert read_manifest(out)["reads"] == {"S2A_1": 1, "S2A_2": 1}
    added = _recorded(_version(2, ["S2A_1", "S2A_2", "S2A_3"]), S2A_3=2)
    repaired = _recorded(replace(added, version=3), S2A_2=3, S2A_3=2)
    assert check_manifest(out, PARAMETERS, repaired, time=None, update=True, cube=out) == {"31UFU": ["S2A_2", "S2A_3"]}
    manifest = read_json(out, MANIFEST)
    assert manifest["update"]["replaced"] == {"31UFU": ["S2A_2"]}
    assert manifest["reads"] == {"S2A_1": 1, "S2A_2": 3, "S2A_3": 2}
    finish_manifest(out, repaired, time=None, status={"ok": 1})
    later = _recorded(replace(_version(4, ["S2A_1", "S2A_2", "S2A_3", "S2A_4"])), S2A_2=3, S2A_3=2, S2A_4=4)
    assert check_manifest(out, PARAMETERS, later, time=None, update=True, cube=out) == {"31UFU": ["S2A_4"]}


def test_an_extraction_from_before_reads_were_kept_is_taken_to_have_read_its_version():
    """A manifest written before 2026-12-06 keeps no ``reads``: its rows read every scene as its version had it, so a
    scene repaired since is read again, and one repaired before (its record not newer) is not."""
    out, first = MemoryStore(), _recorded(_version(2, ["S2A_1", "S2A_2"]), S2A_1=2)
    check_manifest(out, {**PARAMETERS, "version": 2}, first, time=None, update=False, cube=out)
    finish_manifest(out, first, time=None, status={"ok": 1})
    write_json(out, MANIFEST, {k: v for k, v in read_json(out, MANIFEST).items() if k != "reads"})
    repaired = _recorded(replace(first, version=3), S2A_1=2, S2A_2=3)
    assert check_manifest(out, PARAMETERS, repaired, time=None, update=True, cube=out) == {"31UFU": ["S2A_2"]}
    manifest = read_json(out, MANIFEST)
    assert manifest["update"]["replaced"] == {"31UFU": ["S2A_2"]} and manifest["reads"] == {"S2A_1": 2, "S2A_2": 3}


def test_an_extraction_as_of_a_version_is_judged_by_what_it_read():
    """A cold block is mended in place: a version before the mend reads the mended values too, so an extraction made
    ``as_of`` it after the mend is not read again (its update was refused). A hot date repaired goes into a new
    slot, which the earlier version does not read: its rows are read again."""
    out, head = MemoryStore(), _recorded(_version(3, ["S2A_1", "S2A_2"]), S2A_2=3)
    check_manifest(out, PARAMETERS, _recorded(_version(1, ["S2A_1", "S2A_2"])), time=None, update=False, cube=out,
                   head=head)
    finish_manifest(out, _version(1, ["S2A_1", "S2A_2"]), time=None, status={"ok": 1})
    assert read_json(out, MANIFEST)["reads"] == {"S2A_1": 1, "S2A_2": 3}  # mended before it was read
    assert check_manifest(out, PARAMETERS, head, time=None, update=True, cube=out) == {"31UFU": []}

    out, hot = MemoryStore(), _version(1, ["S2A_1"])
    hot = _recorded(replace(hot, tiles={"31UFU": TileState("31UFU", cold=hot.tiles["31UFU"].cold, hot=(
        HotSlot(0, Acquisition("2024-05-02T10:50:31Z", "S2A_2", "sentinel-2a", 8, "descending")),))}))
    now = replace(hot, version=3, scenes={**hot.scenes, "S2A_2": replace(hot.scenes["S2A_2"], version=3)})
    check_manifest(out, PARAMETERS, hot, time=None, update=False, cube=out, head=now)
    finish_manifest(out, hot, time=None, status={"ok": 1})
    assert read_json(out, MANIFEST)["reads"] == {"S2A_1": 1, "S2A_2": 1}  # version 1's slot: the damaged one
    assert check_manifest(out, PARAMETERS, now, time=None, update=True, cube=out) == {"31UFU": ["S2A_2"]}
    assert read_json(out, MANIFEST)["update"]["replaced"] == {"31UFU": ["S2A_2"]}


def test_a_complete_extraction_of_dates_repaired_since_is_not_taken_as_done():
    """A run again of a complete extraction's version, a repair having mended dates it read since: said, not a
    no-op keeping the rows read from the damaged shards."""
    out, first = MemoryStore(), _recorded(_version(1, ["S2A_1", "S2A_2"]))
    check_manifest(out, PARAMETERS, first, time=None, update=False, cube=out)
    finish_manifest(out, first, time=None, status={"ok": 1})
    head = _recorded(replace(first, version=2), S2A_2=2)
    with pytest.raises(InvalidRequestError, match=r"1 scene\(s\) it read were written anew by `cardcube ingest "
                                                  r"--repair` since \(e\.g\. S2A_2, in version 2\): update it "
                                                  r"to the latest version \(--update, without --as-of\)"):
        check_manifest(out, PARAMETERS, first, time=None, update=False, cube=out, head=head)


def test_an_unfinished_run_resumed_after_a_mend_writes_the_mended_dates_again():
    """Files an unfinished run wrote before a repair mended dates in them are deleted, so that its resumption reads
    them again (it kept them: resuming skipped the repair check); files without those dates stay."""
    out, first = MemoryStore(), _recorded(_version(1, ["S2A_1", "S2A_2"]))
    check_manifest(out, PARAMETERS, first, time=None, update=False, cube=out)
    run = run_of(read_json(out, MANIFEST))
    times = [np.datetime64(a.time.rstrip("Z"), "us") for a in first.tiles["31UFU"].cold]
    for name, when in (("r00000c00000t0000", times), ("r00000c00256t0000", times[:1])):
        table = pa.table({"parcel_id": ["a"] * len(when), "time": pa.array(when, pa.timestamp("us"))})
        write_bytes(out, f"timeseries/tile=31UFU/{statistics_name(name, run)}",
                    parquet_bytes(table, **TIMESERIES_PARQUET))
    head = _recorded(replace(first, version=2), S2A_2=2)
    assert check_manifest(out, PARAMETERS, first, time=None, update=False, cube=out, head=head) is None
    assert [k.split("/")[-1][:17] for k in statistics_keys(out, read_json(out, MANIFEST))] == ["r00000c00256t0000"]
    assert read_json(out, MANIFEST)["reads"] == {"S2A_1": 1, "S2A_2": 2}
    assert check_manifest(out, PARAMETERS, first, time=None, update=False, cube=out, head=head) is None  # said once


@pytest.mark.parametrize("document", [[1, 2], {"name": "a web app"}])
def test_a_manifest_of_no_extraction_is_named_so(document):
    """A folder holding another tool's manifest.json, given as --out: a JSON list failed with an AttributeError, an
    object was "an extraction of version None of None with other cube, collection, ..."."""
    out = MemoryStore()
    write_json(out, MANIFEST, document)
    for refused in (lambda: refuse_other_parameters(out, PARAMETERS), lambda: read_manifest(out),
                    lambda: check_manifest(out, PARAMETERS, _version(1, ["S2A_1"]), time=None, update=True, cube=out)):
        with pytest.raises(InvalidRequestError, match=r"holds a manifest\.json of no extraction"):
            refused()
    assert read_json(out, MANIFEST) == document


def test_two_runs_started_together_into_one_empty_output_are_not_both_let_in(tmp_path, monkeypatch):
    """Both found no manifest, and both wrote theirs (the last one stayed), so runs with other parameters wrote
    their rows into one output. The manifest is created only if absent: the run that loses the race is compared
    with the other's, as with any run found there."""
    import threading

    from zarr.storage import LocalStore

    from cube import extraction_manifest

    both_looked, listed = threading.Barrier(2, timeout=60), extraction_manifest.list_children

    def list_children(store, prefix):  # each run has found no manifest when it lists the folder
        both_looked.wait()
        return listed(store, prefix)

    monkeypatch.setattr(extraction_manifest, "list_children", list_children)
    version, outcomes = _version(1, ["S2A_1"]), {}

    def run(block):
        try:
            outcomes[block] = check_manifest(LocalStore(tmp_path), {**PARAMETERS, "block": block}, version,
                                             time=None, update=False, cube=MemoryStore())
        except InvalidRequestError as exc:
            outcomes[block] = exc

    runs = [threading.Thread(target=run, args=(block,)) for block in (256, 512)]
    for thread in runs:
        thread.start()
    for thread in runs:
        thread.join()
    winner = read_json(LocalStore(tmp_path), MANIFEST)["block"]
    loser = 512 if winner == 256 else 256
    assert outcomes[winner] is None
    assert isinstance(outcomes[loser], InvalidRequestError) and "with other block" in str(outcomes[loser])


def test_a_run_that_lists_the_output_after_another_run_started_into_it_is_compared_with_that_run(tmp_path,
                                                                                                  monkeypatch):
    """The other run created its manifest between this run's read of it (none) and its listing of the folder: it
    was "... holds manifest.json but no extraction (manifest.json)" (the race of the test above, at times, under
    load), not the comparison of the two runs."""
    from zarr.storage import LocalStore

    from cube import extraction_manifest

    out, version = LocalStore(tmp_path), _version(1, ["S2A_1"])
    assert check_manifest(out, {**PARAMETERS, "block": 256}, version, time=None, update=False,
                          cube=MemoryStore()) is None  # the other run
    reads, read = [], extraction_manifest.read_json

    def read_before_it(store, key):  # this run's first read of the manifest came before the other run wrote it
        reads.append(key)
        return None if len(reads) == 1 else read(store, key)

    monkeypatch.setattr(extraction_manifest, "read_json", read_before_it)
    with pytest.raises(InvalidRequestError, match="with other block"):
        check_manifest(out, {**PARAMETERS, "block": 512}, version, time=None, update=False, cube=MemoryStore())


def test_an_output_prefix_that_is_an_object_on_s3_is_named_so(s3_bucket):
    """``--out s3://bucket/results`` where ``results`` is an object: "... holds  but no extraction", no name."""
    s3_bucket.server.client().put_object(Bucket=s3_bucket.name, Key="results", Body=b"a report")
    out = open_store(s3_bucket.url_for("results"), storage_options=s3_bucket.storage_options())
    with pytest.raises(InvalidRequestError, match=rf"s3://{s3_bucket.name}/results is an object, not a prefix: give "):
        check_manifest(out, PARAMETERS, _version(1, ["S2A_1"]), time=None, update=False, cube=MemoryStore())


def test_an_unfinished_update_resumed_after_a_mend_of_an_earlier_date_reads_it_again_with_its_tile():
    """A date the update was not reading (read by the run before) mended while it was stopped: read again too, its
    earlier rows dropped; the update's files of that tile go, as the dates it reads there (so its files) change."""
    out, first = MemoryStore(), _recorded(_version(1, ["S2A_1", "S2A_2"]))
    check_manifest(out, PARAMETERS, first, time=None, update=False, cube=out)
    finish_manifest(out, first, time=None, status={"ok": 1})
    added = _recorded(_version(2, ["S2A_1", "S2A_2", "S2A_3"]), S2A_3=2)
    assert check_manifest(out, PARAMETERS, added, time=None, update=True, cube=out) == {"31UFU": ["S2A_3"]}
    mine = f"timeseries/tile=31UFU/{statistics_name('r00000c00000t0000-v00000002', '')}"
    write_bytes(out, mine, b"a file of the update")
    head = _recorded(replace(added, version=3), S2A_1=3, S2A_3=2)
    assert check_manifest(out, PARAMETERS, added, time=None, update=False, cube=out, head=head) == {
        "31UFU": ["S2A_1", "S2A_3"]}
    manifest = read_json(out, MANIFEST)
    assert manifest["update"]["replaced"] == {"31UFU": ["S2A_1"]} and manifest["reads"]["S2A_1"] == 3
    assert statistics_keys(out, read_json(out, MANIFEST)) == []


def test_a_date_new_in_an_unfinished_update_mended_while_it_was_stopped_is_read_again_not_replaced():
    """A date the update itself reads (new since the extraction) mended while it was stopped: read again, but no
    earlier run has rows of it to replace (it was counted among the dates whose earlier rows were replaced)."""
    out, first = MemoryStore(), _recorded(_version(1, ["S2A_1", "S2A_2"]))
    check_manifest(out, PARAMETERS, first, time=None, update=False, cube=out)
    finish_manifest(out, first, time=None, status={"ok": 1})
    added = _recorded(_version(2, ["S2A_1", "S2A_2", "S2A_3"]), S2A_3=2)
    check_manifest(out, PARAMETERS, added, time=None, update=True, cube=out)
    head = _recorded(replace(added, version=3), S2A_2=3, S2A_3=3)
    assert check_manifest(out, PARAMETERS, added, time=None, update=False, cube=out, head=head) == {
        "31UFU": ["S2A_2", "S2A_3"]}
    assert read_json(out, MANIFEST)["update"]["replaced"] == {"31UFU": ["S2A_2"]}


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


def test_a_file_gone_between_the_listing_and_its_read_file_by_file_is_said_so():
    """timeseries_files reads an extraction a file at a time (cardcube flag: minutes for a territory): a file a run
    into the extraction deletes meanwhile (an update writing it anew) was read as no bytes, pyarrow's own 'Parquet
    file size is 0 bytes' (a traceback on the command line). It is a StoreError naming the file and what to do."""
    from cardcube.errors import StoreError
    from cardcube.storage import delete_key
    from cube.extraction_reader import timeseries_files

    out, version = MemoryStore(), _version(1, ["S2A_1"])
    check_manifest(out, PARAMETERS, version, time=None, update=False, cube=out)
    run = run_of(read_json(out, MANIFEST))
    keys = [f"timeseries/tile=31UFU/{statistics_name(f'r00000c00{c}00t0000', run)}" for c in (0, 1)]
    for key in keys:
        when = pa.array([np.datetime64("2024-05-01T10:50:31", "us")], pa.timestamp("us"))
        table = pa.table({"parcel_id": ["a"], "time": when, "band": ["B04"], "mean": [0.1]})
        write_bytes(out, key, parquet_bytes(table, **TIMESERIES_PARQUET))
    finish_manifest(out, version, time=None, status={"ok": 1})
    parts = timeseries_files(out)
    assert len(next(parts)) == 1
    for key in keys:  # the second, not read yet, deleted by a run into the extraction
        delete_key(out, key)
    with pytest.raises(StoreError, match=r"r00000c00100t0000.* is gone since: a run into the extraction"):
        next(parts)


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
