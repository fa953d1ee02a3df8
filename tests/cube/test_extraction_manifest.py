"""The manifest that pins an extraction's run, without a cube: started, refused when mixed, finished."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pyarrow as pa
import pytest
from zarr.storage import MemoryStore

from cardcube.errors import InvalidRequestError
from cardcube.storage import open_store, read_json, write_bytes, write_json
from cube.extraction_files import MANIFEST, TIMESERIES_PARQUET, run_of, statistics_keys, statistics_name
from cube.extraction_manifest import check_manifest, finish_manifest, refuse_other_parameters
from cube.extraction_reader import read_manifest
from cube.ledger import Acquisition, HotSlot, TileState
from cube.parcel_layer import parquet_bytes
from tests.cube.conftest import PARAMETERS, _recorded, _version


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
