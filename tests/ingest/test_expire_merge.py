"""`cardcube expire` merges the ledger's details objects the latest version names into one.

Each ingest that adds scenes writes their details (band files, checksums) in a details object of its version, which
later records name again (:mod:`cube.scene_details`): after N such ingests every ingest and catalog build read N
objects, growing without end (a season of daily ingests: some 180). Expire commits a version reading the same data
whose record names one object holding them all; the objects merged go when the versions naming them expire. Written
as an ingest writes its version (the object, then the record), so a kill at any step loses nothing."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import xarray as xr

from cardcube.errors import CommitConflictError
from cardcube.storage import open_store
from catalog.write import published_version
from cube import layout
from cube.dataset import open_cube
from cube.ledger import CubeVersion, committed_versions, read_version
from cube.scene_details import FIELDS, details_document, details_named, lost_details, with_lost_details
from cube.verify import verify
from ingest.commit import commit
from ingest.expire import expire

EVERYTHING = timedelta(0)


@pytest.fixture
def cube(appended_cube, tmp_path) -> Path:
    """A copy of the cube of 9 versions, each of which added scenes: its latest record names 9 details objects."""
    return Path(shutil.copytree(appended_cube, tmp_path / "cube"))


def _read(cube: Path, as_of: int | None = None) -> xr.Dataset:
    return open_cube(cube, decode=False, as_of=as_of, chunks="window").compute().drop_attrs()


def _details(version: CubeVersion) -> dict[str, dict]:
    """Every scene's details as ``version`` reads them, plain."""
    def plain(x) -> dict:
        return {f: json.loads(json.dumps(dict(getattr(x, f)))) for f in FIELDS}
    return {sid: {**plain(r), "parts": [plain(p) for p in r.parts]} for sid, r in version.scenes.items()}


def _objects(cube: Path) -> set[str]:
    return {p.name for p in (cube / "s2" / "_ledger").glob("scenes-*.json")}


def _expire_command(cube: Path, *extra: str, kill_at: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "CARDCUBE_KILL_AT"}
    if kill_at:
        env["CARDCUBE_KILL_AT"] = kill_at
    return subprocess.run([sys.executable, "-m", "cardcube.cli", "expire", "--cube", str(cube), "--older-than", "0",
                           "--merge-details-over", "4", *extra], env=env, capture_output=True, text=True, timeout=300)


def test_expire_merges_the_latest_versions_details_objects_into_one_and_the_next_drops_them(cube):
    """The latest of 9 versions names 9 details objects; expire commits version 10, reading the same data and every
    scene's details as they were, naming one object; the next expire drops version 9 and the 9 objects."""
    store = open_store(cube)
    head = read_version(store, "s2")
    details, data = _details(head), _read(cube)
    assert len(details_named(head)) == 9 and len(_objects(cube)) == 9
    planned = expire(cube, older_than=EVERYTHING, merge_over=4, dry_run=True)
    assert planned.merged == (10, 9) and committed_versions(store, "s2") == list(range(1, 10))
    assert "the 9 details objects the latest version names would be merged into one" in planned.summary()
    assert planned.kept == (9, 10) and "kept versions 9-10" in planned.summary()  # was (9,): the run keeps its merge

    result = expire(cube, older_than=EVERYTHING, merge_over=4)
    assert result.merged == (10, 9) and result.kept == (9, 10) and result.to_dict()["merged"] == {"version": 10,
                                                                                                  "objects": 9}
    merged = read_version(store, "s2")
    assert merged.version == 10 and len(details_named(merged)) == 1 and len(_objects(cube)) == 10
    assert merged.data_from == head.data_tag and merged.tiles == head.tiles and not merged.added
    assert _details(merged) == details and _details(read_version(store, "s2", 9)) == details
    xr.testing.assert_identical(_read(cube), data)
    assert published_version(store, "s2") == 9 and verify(cube, progress=False).ok  # the catalog: of the same data

    again = expire(cube, older_than=EVERYTHING, merge_over=4)
    assert again.expired == (9,) and again.details == 9 and again.merged is None
    assert published_version(store, "s2") == 10  # the version it named is gone
    assert _objects(cube) == details_named(read_version(store, "s2")) and len(_objects(cube)) == 1
    assert _details(read_version(store, "s2")) == details and verify(cube, progress=False).ok
    assert expire(cube, older_than=EVERYTHING).merged is None  # the default: more than 16


def test_a_merge_keeps_the_scenes_whose_details_were_lost_as_lost(cube):
    """A details object lost without a backup: the version an ingest committed records its scenes' details as lost
    (naming it no more). A merge keeps them lost, not taken for scenes of no band files."""
    store = open_store(cube).with_read_only(False)
    first = min(details_named(read_version(store, "s2")))
    (cube / layout.details_key("s2", first)).unlink()
    head, lost, _ = with_lost_details(read_version(store, "s2"))
    assert lost
    commit(store, head.next(tiles=dict(head.tiles), scenes=dict(head.scenes), added=(), rejected=head.rejected))
    recorded = read_version(store, "s2")
    assert lost_details(recorded) == lost and len(details_named(recorded)) == 9  # 8 of the 9, and version 10's own

    assert expire(cube, older_than=EVERYTHING, merge_over=4).merged == (11, 9)
    merged = read_version(store, "s2")
    assert len(details_named(merged)) == 1 and lost_details(merged) == lost
    assert _details(merged) == _details(recorded)
    assert expire(cube, older_than=EVERYTHING, merge_over=4).expired == (10,)
    assert verify(cube, progress=False).ok


def test_a_merge_stops_short_of_a_lost_details_object_and_says_so(cube, caplog):
    """A details object the latest version names is lost: the merge would have to record its scenes' details as lost,
    an ingest's work: expire merges nothing, warning, and does the rest."""
    store = open_store(cube)
    (cube / layout.details_key("s2", min(details_named(read_version(store, "s2"))))).unlink()
    with caplog.at_level(logging.WARNING):
        result = expire(cube, older_than=EVERYTHING, merge_over=4)
    assert result.merged is None and result.expired == tuple(range(1, 9)) and result.kept == (9,)
    assert "were not merged" in caplog.text and "is missing" in caplog.text
    assert committed_versions(store, "s2") == [9]


def test_a_merge_does_not_write_anew_details_the_record_disagrees_with(cube, caplog):
    """The latest record names a sound details object (its digest checks) holding a piece of a pass the record does
    not name. A merge writing the details anew as the record says would make the fault pass for sound: expire merges
    nothing, warning, and verify names the record."""
    path = cube / layout.ledger_key("s2", 9)
    record = json.loads(path.read_text())
    old = max(s["details"] for s in record["scenes"].values())
    held = json.loads((cube / layout.details_key("s2", old)).read_text())["scenes"]
    sid = min(held)
    held[sid]["parts"] = [{"checksums": {}, "sources": {}}]
    name, data = details_document("s2", 9, held)
    (cube / layout.details_key("s2", name)).write_bytes(data)
    for s in record["scenes"].values():
        s["details"] = name if s["details"] == old else s["details"]
    path.write_text(json.dumps(record))
    assert f"{sid} (1 piece(s) of a pass held, the record names 0)" in verify(cube, progress=False).problems[0][1]
    with caplog.at_level(logging.WARNING):
        result = expire(cube, older_than=EVERYTHING, merge_over=4)
    assert result.merged is None and committed_versions(open_store(cube), "s2") == [9]
    assert "were not merged" in caplog.text
    assert f"for the details of scenes it does not hold as the record says ({sid})" in caplog.text


@pytest.mark.parametrize("step", ["details", "expire-merged", "expire-records"])
def test_an_expire_killed_at_any_step_of_a_merge_loses_nothing_and_the_rerun_finishes(cube, step):
    """Killed (SIGKILL) once the merged object is written but not its record (``details``), once its record is
    committed but the catalog not yet published (``expire-merged``), or after that: every version reads as before, and
    the re-run ends with the latest version naming one details object, the cube sound."""
    head = read_version(open_store(cube), "s2")
    details, data = _details(head), _read(cube)
    killed = _expire_command(cube, kill_at=step)
    assert killed.returncode == -9, killed.stderr
    store = open_store(cube)
    assert committed_versions(store, "s2") == ([9] if step == "details" else [9, 10])
    assert len(_objects(cube)) == 10  # the merged object, named or not
    for version in committed_versions(store, "s2"):
        xr.testing.assert_identical(_read(cube, version), data)
        assert _details(read_version(store, "s2", version)) == details
    done = _expire_command(cube, "--json")
    assert done.returncode == 0, done.stderr
    assert (json.loads(done.stdout)["merged"] is None) == (step != "details")
    merged = read_version(store, "s2")
    assert merged.version == 10 and len(details_named(merged)) == 1 and _details(merged) == details
    assert verify(cube, progress=False).ok
    xr.testing.assert_identical(_read(cube), data)
    assert _expire_command(cube).returncode == 0  # version 9, committed before the re-run's merge or not, goes
    assert _objects(cube) == details_named(read_version(store, "s2")) and published_version(store, "s2") == 10


def test_a_merge_refused_at_its_commit_says_to_run_expire_again(cube, monkeypatch):
    """Another writer committing the version a merge was to be, in the moment between its checks of the lock and
    its record, stopped expire with "nothing of this run became visible, re-run the ingest": the versions it expired
    were gone, and no ingest had run. It says what did not become visible, and to run expire again."""
    import ingest.commit

    head = read_version(open_store(cube), "s2")
    theirs = cube / layout.ledger_key("s2", head.version + 1)
    checkpoint = ingest.commit.checkpoint

    def another_writer_commits(step: str) -> None:
        checkpoint(step)
        if step == "details":  # the merge's details object written, its record not yet
            theirs.write_bytes((cube / layout.ledger_key("s2", head.version)).read_bytes())

    monkeypatch.setattr(ingest.commit, "checkpoint", another_writer_commits)
    with pytest.raises(CommitConflictError) as refused:
        expire(cube, older_than=EVERYTHING, merge_over=4)
    assert str(refused.value) == (
        f"version {head.version + 1} of the s2 cube at {cube} was committed by another writer meanwhile; its merge of "
        "the ledger's details objects did not become visible (the versions it expired stay expired, their data left "
        "for the next run to delete), re-run cardcube expire, which merges them anew")
    assert "ingest" not in str(refused.value)
    assert committed_versions(open_store(cube), "s2") == [head.version, head.version + 1]


def test_on_s3_expire_merges_the_details_objects(appended_cube, s3_bucket):
    """The same on an object store (moto's S3 over HTTP): merged, then the objects merged dropped with version 9."""
    url, opts = s3_bucket.upload(appended_cube, "cube"), s3_bucket.storage_options()
    client = s3_bucket.server.client()
    store = open_store(url, storage_options=opts)
    details = _details(read_version(store, "s2"))

    def objects() -> set[str]:
        listed = client.list_objects_v2(Bucket=s3_bucket.name, Prefix="cube/s2/_ledger/scenes-")["Contents"]
        return {k["Key"].rsplit("/", 1)[-1] for k in listed}

    assert expire(url, older_than=EVERYTHING, merge_over=4, storage_options=opts).merged == (10, 9)
    assert len(objects()) == 10 and _details(read_version(store, "s2")) == details
    assert expire(url, older_than=EVERYTHING, merge_over=4, storage_options=opts).expired == (9,)
    assert objects() == details_named(read_version(store, "s2")) and len(objects()) == 1
    assert _details(read_version(store, "s2")) == details and verify(url, storage_options=opts, progress=False).ok


def test_a_dry_run_reports_no_merge_that_a_lost_details_object_would_stop(cube, caplog):
    """A details object the latest version names is lost: the run merges nothing (above), so its dry run reports no
    merge either, with the same warning; before, it reported one the run then did not make."""
    (cube / layout.details_key("s2", min(details_named(read_version(open_store(cube), "s2"))))).unlink()
    with caplog.at_level(logging.WARNING):
        planned = expire(cube, older_than=EVERYTHING, merge_over=4, dry_run=True)
    assert planned.merged is None and planned.to_dict()["merged"] is None and "merged into one" not in planned.summary()
    assert "were not merged" in caplog.text
    assert expire(cube, older_than=EVERYTHING, merge_over=4).merged is None


@pytest.mark.parametrize("value", ["-5", "1.5"])
def test_the_command_refuses_a_count_of_details_objects_below_zero(tmp_path, capsys, value):
    """``--merge-details-over -5`` was taken as 1 (merge whenever there are two) without a word: it is a count, and
    refused as a usage error before any cube is read, as every count of the command lines."""
    from cardcube.cli import main

    with pytest.raises(SystemExit) as stop:
        main(["expire", "--cube", str(tmp_path / "cube"), "--dry-run", "--merge-details-over", value])
    assert stop.value.code == 2
    assert f"argument --merge-details-over: expected a whole number >= 0, got '{value}'" in capsys.readouterr().err
