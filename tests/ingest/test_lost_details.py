"""A details object of the ledger lost without a backup (a lifecycle rule, a partial restore, an operator's rm): the
scenes' band files and checksums it held are kept nowhere else (format 2, :mod:`cube.scene_details`). Until
2026-12-06 every later ingest (``--repair`` too) and every catalog build failed for good on it; they go on, the next
version records those scenes' details as lost (naming the object no more), and verify says what to run."""

from __future__ import annotations

import json
import logging
import pickle
import shutil
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
import xarray as xr

from cardcube.errors import CorruptDocumentError, InvalidRequestError
from cardcube.spec import ChunkLayout
from cardcube.storage import open_store
from catalog.write import rebuild_catalog
from cube import layout
from cube.dataset import open_cube
from cube.ledger import committed_versions, read_version
from cube.scene_details import details_named, lost_details, warn_lost, with_lost_details
from cube.verify import verify
from ingest.commit import commit
from ingest.expire import expire
from ingest.job import ingest
from tests.conftest import TEST_CHUNKS
from tests.cube.test_verify_details import edit_record, first_and_last
from tests.ingest.crashing import run_ingest, run_ingest_here
from tests.ingest.scene_edits import items_of, write_items


@pytest.fixture(scope="module")
def two_versions(tiny_region, tmp_path_factory) -> tuple[Path, list[Path]]:
    """A cube of 2 versions (3 S2 dates, then 1), and the items of a date it does not hold, of those it holds, and of
    them all."""
    features = items_of(tiny_region.items, "sentinel-2-l2a")
    root = tmp_path_factory.mktemp("lost-details") / "cube"
    for i, batch in enumerate([features[:3], features[3:4]]):
        ingest(write_items(tiny_region.items, batch, f"lost-{i}.json"), root, chunks=ChunkLayout.parse(TEST_CHUNKS),
               progress=False)
    return root, [write_items(tiny_region.items, features[4:5], "lost-new.json"),
                  write_items(tiny_region.items, features[:4], "lost-held.json"),
                  write_items(tiny_region.items, features[:5], "lost-all.json")]


@pytest.fixture
def lost(two_versions, tmp_path) -> tuple[Path, str, list[Path]]:
    """A copy of ``two_versions`` whose first version's details object (its 3 scenes') is deleted: the cube, the
    object's name, and the items."""
    cube = Path(shutil.copytree(two_versions[0], tmp_path / "cube"))
    first = sorted((cube / "s2" / "_ledger").glob("scenes-00000001-*.json"))
    assert len(first) == 1
    first[0].unlink()
    return cube, first[0].name, two_versions[1]


@pytest.fixture
def misassigned(two_versions, tmp_path) -> tuple[Path, str, str, list[Path]]:
    """A copy of ``two_versions`` whose latest record names the second version's (sound) details object for a scene
    of the first, which it does not hold (a record edited by hand, a restore mixing backups): the cube, the scene,
    the object named and the items."""
    cube = Path(shutil.copytree(two_versions[0], tmp_path / "cube"))
    sid, _, other = first_and_last(cube, 2)
    edit_record(cube, 2, lambda r: r["scenes"][sid].update(details=other))
    return cube, sid, other, two_versions[1]


def _read(cube: Path | str, as_of: int, **kwargs) -> xr.Dataset:
    return open_cube(cube, decode=False, as_of=as_of, chunks="window", **kwargs).compute().drop_attrs()


def _superseded_until_expired(cube: Path, items: Path, caplog, key: str, advice: str, unnamed: str) -> None:
    """After the ingest that took the details as lost: verify reports ``key`` alone, as named only by versions older
    than the latest, saying that `cardcube expire` ``advice``; an ingest of ``items`` again commits nothing and warns
    nothing of ``unnamed``; expire drops versions 1 and 2, and verify finds the cube sound."""
    found = verify(cube, progress=False)
    assert [k for k, _ in found.problems] == [key] == list(found.superseded)
    assert f"`cardcube expire` {advice}" in found.summary()
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        again = ingest(items, cube, progress=False)
    assert again.version is None and not again.details_lost and unnamed not in caplog.text
    assert expire(cube, older_than=timedelta(0)).expired == (1, 2)
    assert verify(cube, progress=False).ok


def test_an_ingest_goes_on_and_records_the_lost_scenes_details_as_lost(lost, two_versions, caplog):
    """An ingest of a new date goes on, warning of the scenes whose details are lost; its version records them as
    lost and names the lost object no more, every earlier version reads its pixels as before, the next ingest warns
    no more, verify reports the loss (what to run; then: expire drops it), and expire clears it."""
    cube, name, (new, _, everything) = lost
    before = {n: _read(two_versions[0], n) for n in (1, 2)}
    scenes = set(read_version(open_store(cube), "s2", 1).scenes)
    found = verify(cube, progress=False)
    assert [k for k, _ in found.problems] == [layout.details_key("s2", name)] and not found.superseded
    assert "run `cardcube ingest`" in found.problems[0][1]

    with caplog.at_level(logging.WARNING):
        result = ingest(new, cube, progress=False)
    assert result.version == 3 and len(result.added) == 1 and set(result.details_lost) == scenes
    assert name in caplog.text and all(s in caplog.text for s in scenes)
    assert "recorded the band files and checksums of 3 scene(s) as lost" in result.summary()
    head = read_version(open_store(cube), "s2")
    assert name not in details_named(head) and lost_details(head) == dict.fromkeys(scenes, name)
    assert all(not head.scenes[s].checksums and not head.scenes[s].sources for s in scenes)
    assert head.scenes[result.added[0]].checksums  # the new scene's details, as ever
    for n in (1, 2):
        xr.testing.assert_identical(_read(cube, n), before[n])

    # versions 1 and 2 still name it: reported, as only theirs
    _superseded_until_expired(cube, everything, caplog, layout.details_key("s2", name), "drops them", name)
    assert lost_details(read_version(open_store(cube), "s2")) == dict.fromkeys(scenes, name)


def test_ingest_repair_with_nothing_to_mend_records_the_lost_details(lost):
    """``ingest --repair`` offering the cube's own scenes, none damaged: it committed nothing and failed on the lost
    object; now it commits a version recording their details as lost, which reads the same data."""
    cube, name, (_, held, _) = lost
    result = ingest(held, cube, repair=True, progress=False)
    head = read_version(open_store(cube), "s2")
    assert result.version == 3 and len(result.details_lost) == 3 and not result.added and not result.repaired
    assert name not in details_named(head) and head.data_from == read_version(open_store(cube), "s2", 2).data_tag
    assert verify(cube, progress=False).superseded == (layout.details_key("s2", name),)


def test_a_repair_of_a_date_whose_details_are_lost_says_why_it_cannot(lost):
    """A damaged shard of a date whose checksums were lost: the repair cannot check the files offered to be the bytes
    it was read from. It said they were not ("not the bytes the ledger records"), blaming the files; it names the
    lost object, what to do, and commits nothing."""
    cube, name, (_, held, _) = lost
    block = cube / "s2" / "31UFU" / "cube.zarr" / "r20m" / "B05" / "c" / "0"  # cold block 0: every date
    next(p for p in block.rglob("*") if p.is_file()).unlink()
    with pytest.raises(InvalidRequestError, match=f"were lost with the details object {name} of the ledger") as err:
        ingest(held, cube, repair=True, progress=False)
    assert "restore that object from a backup" in str(err.value)
    assert read_version(open_store(cube), "s2").version == 2


def test_a_catalog_build_goes_on_without_the_lost_details(lost, caplog):
    """cardcube catalog build read every scene's source files and failed on the lost object: it writes the catalog,
    warning of the scenes whose details are lost."""
    cube, name, _ = lost
    (cube / "catalog.json").unlink()
    with caplog.at_level(logging.WARNING):
        assert rebuild_catalog(cube) == {"s2": 2}
    assert (cube / "catalog.json").exists() and name in caplog.text and "an ingest records them as lost" in caplog.text


def test_on_s3_an_ingest_goes_on_where_a_details_object_is_lost(two_versions, s3_bucket):
    """The same on an object store (moto's S3 over HTTP): the lost object's scenes recorded lost, verify says so."""
    url, opts = s3_bucket.upload(two_versions[0], "cube"), s3_bucket.storage_options()
    client = s3_bucket.server.client()
    key = next(k["Key"] for k in client.list_objects_v2(Bucket=s3_bucket.name, Prefix="cube/s2/_ledger/scenes-0"
                                                                                        "0000001-")["Contents"])
    client.delete_object(Bucket=s3_bucket.name, Key=key)
    name = key.rsplit("/", 1)[-1]
    assert [k for k, _ in verify(url, storage_options=opts, progress=False).problems] == [key.removeprefix("cube/")]
    result = ingest(two_versions[1][0], url, storage_options=opts, progress=False)
    assert result.version == 3 and len(result.details_lost) == 3
    head = read_version(open_store(url, storage_options=opts), "s2")
    assert name not in details_named(head) and len(lost_details(head)) == 3
    assert verify(url, storage_options=opts, progress=False).superseded == (key.removeprefix("cube/"),)


def test_expire_before_any_ingest_goes_on_and_the_loss_stays_reported(lost, two_versions):
    """expire reads no details: it expires what is old (the latest, naming the lost object, is kept), and verify
    still reports the object, not as superseded, until an ingest records the loss."""
    cube, name, (new, _, _) = lost
    latest = _read(two_versions[0], 2)
    assert expire(cube, older_than=timedelta(0)).expired == (1,)
    xr.testing.assert_identical(_read(cube, 2), latest)
    found = verify(cube, progress=False)
    assert [k for k, _ in found.problems] == [layout.details_key("s2", name)] and not found.superseded
    assert ingest(new, cube, progress=False).details_lost
    assert expire(cube, older_than=timedelta(0)).expired == (2,) and verify(cube, progress=False).ok


def test_a_damaged_details_object_says_what_to_do_without_a_backup(two_versions, tmp_path):
    """A damaged details object is no loss the ingest can tell from a bad read: it still stops, and says to delete
    it when there is no backup, after which the ingest goes on as for a lost one."""
    cube = Path(shutil.copytree(two_versions[0], tmp_path / "cube"))
    damaged = next((cube / "s2" / "_ledger").glob("scenes-00000001-*.json"))
    damaged.write_text(damaged.read_text().replace("sha256:", "sha256:0", 1))
    with pytest.raises(CorruptDocumentError, match="without one, delete it, and then run `cardcube ingest`"):
        ingest(two_versions[1][0], cube, progress=False)
    damaged.unlink()
    result = ingest(two_versions[1][0], cube, progress=False)
    assert result.version == 3 and len(result.details_lost) == 3


def test_a_version_with_lost_details_pickles_as_it_is(lost):
    """A version handed to a worker process keeps the scenes whose details are lost as such."""
    cube, name, _ = lost
    version, found, _ = with_lost_details(read_version(open_store(cube), "s2"))
    again = pickle.loads(pickle.dumps(version))
    assert set(found.values()) == {name} and lost_details(again) == found == lost_details(version)
    assert again.scenes == version.scenes


@pytest.mark.parametrize("step", ["validated", "details", "committed"])
def test_an_ingest_recording_the_loss_killed_at_a_step_then_rerun_completes(lost, two_versions, step):
    """The version recording the loss is committed as any: killed before its record, nothing is visible (the object
    it wrote is no record's) and the re-run records the loss; killed after, it is recorded and the re-run commits
    nothing more. Every earlier version reads as before."""
    cube, name, (new, _, _) = lost
    killed = run_ingest(new, str(cube), "s2", kill_at=step)
    assert killed.returncode == -9, killed.stderr
    assert committed_versions(open_store(cube), "s2") == ([1, 2, 3] if step == "committed" else [1, 2])
    done = run_ingest_here(new, str(cube), "s2")  # the same command line, in this process
    assert done.returncode == 0, done.stderr
    head = read_version(open_store(cube), "s2")
    assert head.version == 3 and name not in details_named(head) and len(lost_details(head)) == 3
    for n in (1, 2):
        xr.testing.assert_identical(_read(cube, n), _read(two_versions[0], n))


def test_a_pass_whose_details_are_lost_is_recorded_lost_with_its_slices(tmp_path):
    """The slices of a pass (``parts``) share their scene's details object: recorded lost with it, each slice's
    fields empty, and a record whose details are written again (a repair's change) keeps them lost."""
    cube = Path(shutil.copytree(Path(__file__).parents[1] / "cube" / "ledger_v1", tmp_path / "cube"))
    store = open_store(cube)
    head = read_version(store, "s1")
    commit(store, head.next(tiles=dict(head.tiles), scenes=dict(head.scenes), added=(), rejected=head.rejected))
    (name,) = details_named(read_version(store, "s1"))
    (cube / layout.details_key("s1", name)).unlink()
    head, found, _ = with_lost_details(read_version(store, "s1"))
    passes = [sid for sid, r in head.scenes.items() if r.parts]
    assert passes and set(found) == set(head.scenes)
    commit(store, head.next(tiles=dict(head.tiles), scenes=dict(head.scenes), added=(), rejected=head.rejected))
    v4 = read_version(store, "s1")
    assert name not in details_named(v4) and lost_details(v4) == found
    assert all(not p.checksums and not p.sources for sid in passes for p in v4.scenes[sid].parts)
    moved = {sid: replace(r, version=5, checksums={}) for sid, r in v4.scenes.items()}  # written anew: still lost
    commit(store, v4.next(tiles=dict(v4.tiles), scenes=moved, added=(), rejected=v4.rejected, repaired=tuple(moved)))
    assert lost_details(v5 := read_version(store, "s1")) == found and details_named(v5) != details_named(v4)


def test_an_ingest_goes_on_where_the_record_names_a_details_object_for_a_scene_it_does_not_hold(
        misassigned, two_versions, caplog):
    """A record naming a sound details object for a scene it does not hold: verify said to restore the record, and
    without a backup every later ingest stopped on it for good. The ingest goes on, warning why; its version records
    that scene's details as lost (the other scenes' as they are), every version reads its pixels as before, verify
    reports the older record as superseded and expire drops it."""
    cube, sid, other, (new, _, everything) = misassigned
    found = verify(cube, progress=False)
    assert [k for k, _ in found.problems] == [layout.ledger_key("s2", 2)] and not found.superseded
    assert "without one, run `cardcube ingest`" in found.problems[0][1]

    with caplog.at_level(logging.WARNING):
        result = ingest(new, cube, progress=False)
    assert result.version == 3 and len(result.added) == 1 and result.details_lost == (sid,)
    assert f"{other} of the ledger holds not what the ledger record of version 2 says ({sid}: none held)" \
        in caplog.text and "is missing" not in caplog.text and "Restore the record from a backup" in caplog.text
    head = read_version(open_store(cube), "s2")
    assert lost_details(head) == {sid: other} and not head.scenes[sid].checksums and not head.scenes[sid].sources
    assert all(dict(r.checksums) for s, r in head.scenes.items() if s != sid)
    for n in (1, 2):
        xr.testing.assert_identical(_read(cube, n), _read(two_versions[0], n))

    # version 2's record is still wrong: reported, as only older versions'
    _superseded_until_expired(cube, everything, caplog, layout.ledger_key("s2", 2), "drops it", other)
    assert lost_details(read_version(open_store(cube), "s2")) == {sid: other}


def test_a_catalog_build_goes_on_where_the_record_names_a_details_object_for_a_scene_it_does_not_hold(
        misassigned, caplog):
    """cardcube catalog build stopped on it ("holds no details of scene ..."): it writes the catalog, warning why."""
    cube, sid, other, _ = misassigned
    (cube / "catalog.json").unlink()
    with caplog.at_level(logging.WARNING):
        assert rebuild_catalog(cube) == {"s2": 2}
    assert (cube / "catalog.json").exists() and f"{other} of the ledger holds not what" in caplog.text
    assert sid in caplog.text and "an ingest records them as lost" in caplog.text


def test_a_pass_whose_record_names_fewer_pieces_than_its_details_object_holds_is_taken_as_lost(tmp_path, caplog):
    """A record naming fewer pieces of a pass than its (sound) details object holds: the details can be read but
    disagree with the record, whose pieces are what reading uses; they are taken as lost (the conservative choice),
    the warning says so, and a version committed records them lost."""
    cube = Path(shutil.copytree(Path(__file__).parents[1] / "cube" / "ledger_v1", tmp_path / "cube"))
    store = open_store(cube)
    head = read_version(store, "s1")
    commit(store, head.next(tiles=dict(head.tiles), scenes=dict(head.scenes), added=(), rejected=head.rejected))
    path = cube / layout.ledger_key("s1", 3)
    record = json.loads(path.read_text())
    sid = min(s for s, r in record["scenes"].items() if r.get("parts"))
    record["scenes"][sid]["parts"] = record["scenes"][sid]["parts"][:-1]
    path.write_text(json.dumps(record))
    head, found, why = with_lost_details(read_version(store, "s1"))
    (name,) = details_named(read_version(store, "s1"))
    assert found == {sid: name} and set(why) == {name}
    with caplog.at_level(logging.WARNING):
        warn_lost(found, "this ingest records them as lost in the version it commits", why)
    assert "piece(s) of a pass held, the record names" in caplog.text and "the conservative choice" in caplog.text
    commit(store, head.next(tiles=dict(head.tiles), scenes=dict(head.scenes), added=(), rejected=head.rejected))
    assert lost_details(read_version(store, "s1")) == found


def test_on_s3_an_ingest_goes_on_where_the_record_names_a_details_object_for_a_scene_it_does_not_hold(
        two_versions, s3_bucket):
    """The same on an object store (moto's S3 over HTTP): that scene's details recorded lost, verify says so."""
    url, opts = s3_bucket.upload(two_versions[0], "cube"), s3_bucket.storage_options()
    client = s3_bucket.server.client()
    sid, _, other = first_and_last(two_versions[0], 2)
    key = f"cube/{layout.ledger_key('s2', 2)}"
    record = json.loads(client.get_object(Bucket=s3_bucket.name, Key=key)["Body"].read())
    record["scenes"][sid]["details"] = other
    client.put_object(Bucket=s3_bucket.name, Key=key, Body=json.dumps(record).encode())
    result = ingest(two_versions[1][0], url, storage_options=opts, progress=False)
    assert result.version == 3 and result.details_lost == (sid,)
    assert lost_details(read_version(open_store(url, storage_options=opts), "s2")) == {sid: other}
    assert verify(url, storage_options=opts, progress=False).superseded == (layout.ledger_key("s2", 2),)
