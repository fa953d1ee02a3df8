"""Compaction moves committed hot-buffer dates into a cold block: it must move what ingest wrote, or nothing."""

from __future__ import annotations

import json
import logging
import math
import shutil
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import numcodecs
import numpy as np
import pytest

from cardcube.cli import main
from cardcube.errors import CorruptShardError, InvalidRequestError, MissingShardError
from cardcube.spec import ChunkLayout
from cardcube.storage import open_store
from cube import layout
from cube.dataset import open_cube
from cube.ledger import read_version
from cube.verify import verify
from ingest.expire import expire
from ingest.job import ingest
from tests.conftest import TEST_CHUNKS
from tests.ingest.checks import assert_matches_sources
from tests.ingest.scene_edits import asset_path, broken_copy, items_of, signed_nan_west, write_items


@pytest.fixture(scope="module")
def first_nine(tiny_region, tmp_path_factory) -> Path:
    """The tiny region's first 9 S2 dates: two cold blocks of 4, and hot slot 0."""
    root = tmp_path_factory.mktemp("compaction") / "cube"
    features = items_of(tiny_region.items, "sentinel-2-l2a")
    ingest(write_items(tiny_region.items, features[:9], "compaction-first.json"), root,
           chunks=ChunkLayout.parse(TEST_CHUNKS), progress=False)
    state = next(iter(read_version(open_store(root, read_only=True), "s2").tiles.values()))
    assert len(state.cold) == 8 and [h.slot for h in state.hot] == [0]
    return root


@pytest.fixture
def cube(first_nine, tmp_path) -> Path:
    return Path(shutil.copytree(first_nine, tmp_path / "cube"))


@pytest.fixture(scope="module")
def next_three(tiny_region) -> Path:
    """3 more dates: with hot slot 0 they fill cold block 2, so the ingest compacts the slot."""
    features = items_of(tiny_region.items, "sentinel-2-l2a")
    return write_items(tiny_region.items, features[9:12], "compaction-next.json")


def _hot_shard(cube: Path) -> Path:
    """A B04 shard of hot slot 0 (the tiny region spans four 10 m shards)."""
    return sorted((cube / "s2").glob("*/cube.zarr/hot/r10m/B04/c/0/*/*"))[0]


def _lose(shard: Path) -> None:
    shard.unlink()


def _truncate(shard: Path) -> None:
    shard.write_bytes(shard.read_bytes()[:-100])


def _flip(shard: Path) -> None:
    data = bytearray(shard.read_bytes())
    data[200:210] = bytes(b ^ 0x5A for b in data[200:210])  # inside the first chunk, the index intact
    shard.write_bytes(bytes(data))


def _swap(shard: Path) -> None:
    """Two stored chunks' places swapped in the shard's index, its checksum made anew: each chunk decodes (its own
    crc32c passes), in the other's place."""
    meta = json.loads((shard.parents[3] / "zarr.json").read_text())
    conf = meta["codecs"][0]["configuration"]
    n = math.prod(s // c for s, c in zip(meta["chunk_grid"]["configuration"]["chunk_shape"], conf["chunk_shape"],
                                         strict=True))
    data = shard.read_bytes()
    index = np.frombuffer(data[-(16 * n + 4):-4], "<u8").reshape(n, 2).copy()
    stored = np.flatnonzero(index[:, 0] != 2**64 - 1)[:2]
    assert len(stored) == 2
    index[stored] = index[stored[::-1]]
    shard.write_bytes(data[:-(16 * n + 4)] + bytes(numcodecs.CRC32C().encode(index.tobytes())))


@pytest.mark.parametrize(("damage", "error", "said"), [
    (_lose, MissingShardError, "missing"),
    (_truncate, CorruptShardError, "index fails its checksum"),
    (_flip, CorruptShardError, "does not decode"),  # its crc32c fails (before 2026-12-07: the values differed)
    (_swap, CorruptShardError, "values differ from those ingest wrote"),
])
def test_a_damaged_hot_shard_stops_its_compaction_and_nothing_is_committed(cube, next_three, tiny_region, damage, error,
                                                                             said):
    """A hot shard lost or damaged behind cardcube's back (a lifecycle rule, a partial restore, a bad disk) was read
    as nodata or wrong values into the cold block the next ingest compacted it into, for good, and `verify --deep`
    then called the cube sound: the compaction checks the slot against its manifest and refuses."""
    shard = _hot_shard(cube)
    sound = shard.read_bytes()
    before = open_cube(cube, decode=False).B04.isel(time=8).values
    damage(shard)

    with pytest.raises(error, match=rf"{shard.relative_to(cube).as_posix()} .*: .*{said}.* commits nothing"):
        ingest(next_three, cube, progress=False)
    assert read_version(open_store(cube, read_only=True), "s2").version == 1

    shard.write_bytes(sound)  # restored from a backup: the same run goes in, the hot date as it was ingested
    result = ingest(next_three, cube, progress=False)
    assert result.version == 2 and result.compacted == 1 and len(result.added) == 3
    state = next(iter(read_version(open_store(cube, read_only=True), "s2").tiles.values()))
    assert len(state.cold) == 12 and not state.hot
    np.testing.assert_array_equal(open_cube(cube, decode=False).B04.isel(time=8).values, before)
    assert int((before != 0).sum()) > 0
    twelve = items_of(tiny_region.items, "sentinel-2-l2a")[:12]
    assert_matches_sources(cube, write_items(tiny_region.items, twelve, "compaction-twelve.json"), "s2")
    assert verify(cube, deep=True, progress=False).ok


def test_a_lost_manifest_of_a_slot_to_compact_stops_the_ingest_until_a_repair(cube, next_three, hot_scene,
                                                                              tiny_region):
    manifest = next((cube / "s2").glob("*/_manifest/hot-000000.json"))
    manifest.unlink()
    with pytest.raises(CorruptShardError, match=r"manifest of 1 hot-buffer slot.*hot-000000\.json.*commits nothing.*"
                                                r"--repair"):
        ingest(next_three, cube, progress=False)
    assert read_version(open_store(cube, read_only=True), "s2").version == 1
    offered = write_items(tiny_region.items, [hot_scene, *items_of(next_three, "sentinel-2-l2a")], "repair-m.json")
    result = ingest(offered, cube, progress=False, repair=True)
    assert result.repaired == (hot_scene["id"],) and result.compacted == 1 and len(result.added) == 3


def test_the_ingest_command_says_which_shard_in_one_line_and_exits_with_2(cube, next_three, hot_scene, tiny_region):
    _lose(_hot_shard(cube))
    command = [sys.executable, "-m", "cardcube.cli", "ingest", "--cube", str(cube), "--quiet"]
    done = subprocess.run([*command, str(next_three)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "error: hot-buffer shard s2/" in done.stderr
    assert "restore the shard from a backup, or offer the scene again with --repair" in done.stderr
    offered = write_items(tiny_region.items, [hot_scene, *items_of(next_three, "sentinel-2-l2a")], "repair-cli.json")
    repaired = subprocess.run([*command, str(offered), "--repair"], capture_output=True, text=True, timeout=300)
    assert repaired.returncode == 0, repaired.stderr
    assert "added 3 scene(s)" in repaired.stdout and "read 1 hot date(s) again from their files" in repaired.stdout


@pytest.fixture(scope="module")
def hot_scene(tiny_region) -> dict:
    """The item of hot slot 0's date in ``first_nine``: its ninth S2 scene."""
    return items_of(tiny_region.items, "sentinel-2-l2a")[8]


def test_repair_reads_a_lost_hot_date_again_from_its_files_and_the_compaction_goes_on(cube, next_three, hot_scene,
                                                                                   tiny_region):
    """Without a backup a lost hot shard stopped every compaction of its tile for good: ``repair`` reads the date
    again from its files, the bytes the ledger records, and the next dates go in with it."""
    lost = _hot_shard(cube)
    _lose(lost)
    with pytest.raises(MissingShardError):
        ingest(next_three, cube, progress=False)
    offered = [hot_scene, *items_of(next_three, "sentinel-2-l2a")]
    result = ingest(write_items(tiny_region.items, offered, "repair-and-next.json"), cube, progress=False,
                    repair=True)
    assert result.repaired == (hot_scene["id"],) and len(result.added) == 3 and not result.skipped
    assert result.compacted == 1  # the repaired hot date, moved into the cold block
    state = next(iter(read_version(open_store(cube, read_only=True), "s2").tiles.values()))
    assert len(state.cold) == 12 and not state.hot
    twelve = items_of(tiny_region.items, "sentinel-2-l2a")[:12]
    assert_matches_sources(cube, write_items(tiny_region.items, twelve, "repair-twelve.json"), "s2")
    kept = verify(cube, deep=True, progress=False)  # version 1 still reads the lost shard
    assert [k for k, _ in kept.problems] == [lost.relative_to(cube).as_posix()]
    expire(cube, "s2", older_than=timedelta(0))  # version 1 and its hot slot go
    assert verify(cube, deep=True, progress=False).ok


def test_repair_alone_writes_the_hot_date_into_a_new_slot(cube, hot_scene, tiny_region, capsys):
    """With no new date to compact it, the repaired date takes a new hot slot: readable again at once."""
    _lose(_hot_shard(cube))
    with pytest.raises(MissingShardError):
        open_cube(cube, decode=False).B04.isel(time=8).compute()
    result = ingest(write_items(tiny_region.items, [hot_scene], "repair-alone.json"), cube, progress=False,
                    repair=True)
    assert result.version == 2 and result.repaired == (hot_scene["id"],) and not result.added
    assert result.bytes_new_data == 0 and result.tiles == ("31UFU",)  # no new data: the date was in the cube
    version = read_version(open_store(cube, read_only=True), "s2")
    state = version.tiles["31UFU"]
    assert [(h.slot, h.acquisition.scene_id) for h in state.hot] == [(1, hot_scene["id"])]
    assert version.repaired == (hot_scene["id"],) and version.scenes[hot_scene["id"]].version == 2
    nine = items_of(tiny_region.items, "sentinel-2-l2a")[:9]
    assert_matches_sources(cube, write_items(tiny_region.items, nine, "repair-nine.json"), "s2")
    assert main(["versions", "--cube", str(cube)]) == 0
    assert "version 2  " in (said := capsys.readouterr().out) and "repaired 1 date(s)" in said
    expire(cube, "s2", older_than=timedelta(0))
    assert verify(cube, deep=True, progress=False).ok
    # the new slot was written with a manifest by version 2, now the oldest kept: its loss is found, not taken
    # for a block written before manifests (its scene's version said 1)
    key = layout.manifest_key("s2", "31UFU", 1, hot=True)
    (cube / key).unlink()
    (problem,) = verify(cube, progress=False).problems
    assert problem[0] == key and problem[1].startswith("manifest missing"), problem
    again = ingest(write_items(tiny_region.items, [hot_scene], "repair-alone.json"), cube, progress=False)
    assert again.version is None and again.skipped == (hot_scene["id"],)  # without repair: held, skipped


def test_verify_sends_a_shard_only_older_versions_read_to_expire_not_to_another_repair(cube, hot_scene, tiny_region,
                                                                                       capsys):
    """After a repair the lost slot is still read by the version before it, so verify lists it; it told to offer
    the scene to ``--repair`` again, which only wrote one more copy of the date, version after version, and the
    same report each time."""
    lost = _hot_shard(cube)
    key = lost.relative_to(cube).as_posix()
    _lose(lost)
    before = verify(cube, progress=False)  # the latest version reads it: a repair mends it
    assert before.superseded == () and "--repair" in before.summary()
    ingest(write_items(tiny_region.items, [hot_scene], "repair-alone.json"), cube, progress=False, repair=True)
    after = verify(cube, progress=False)
    assert [k for k, _ in after.problems] == [key] and after.superseded == (key,)
    assert "--repair" not in after.summary() and "`cardcube expire`" in after.summary()
    assert main(["verify", "--cube", str(cube), "--json", "--quiet"]) == 1
    assert json.loads(capsys.readouterr().out)["superseded"] == [key]
    # expire keeps the versions superseded for less than --older-than (7 days): the advice says so
    assert expire(cube).expired == () and verify(cube, progress=False).superseded == (key,)
    assert "superseded for longer than its --older-than (7d by default)" in after.summary()
    assert expire(cube, older_than=timedelta(0)).expired and verify(cube, progress=False).ok


def test_repair_of_a_sound_cold_block_writes_nothing_and_says_so(cube, tiny_region, caplog):
    cold = items_of(tiny_region.items, "sentinel-2-l2a")[0]
    before = {p: p.stat().st_mtime_ns for p in (cube / "s2").rglob("*") if p.is_file() and "_lock" not in p.name}
    with caplog.at_level(logging.WARNING, logger="ingest.repair"):
        result = ingest(write_items(tiny_region.items, [cold], "repair-cold.json"), cube, progress=False, repair=True)
    assert result.version is None and result.skipped == (cold["id"],) and not result.repaired and not result.mended
    assert "every shard of cold block 0 of tile 31UFU is sound" in caplog.text
    assert {p: p.stat().st_mtime_ns for p in before} == before



def test_repair_writes_anew_only_the_hot_dates_whose_shards_are_lost_or_damaged(cube, hot_scene, tiny_region, caplog):
    """``--repair`` wrote every offered hot date anew, sound or not (a version and a new hot slot of each, and a
    copy to expire), where a cold block is written only where a shard is lost or damaged: a hot date is checked as
    ``verify --deep`` checks it now, and a sound one is left in its slot."""
    tenth = items_of(tiny_region.items, "sentinel-2-l2a")[9]
    ingest(write_items(tiny_region.items, [tenth], "repair-tenth.json"), cube, progress=False)  # hot slot 1
    before = {p: p.stat().st_mtime_ns for p in (cube / "s2").rglob("*") if p.is_file() and "_lock" not in p.name}
    with caplog.at_level(logging.WARNING, logger="ingest.repair"):
        sound = ingest(write_items(tiny_region.items, [tenth], "repair-sound.json"), cube, progress=False, repair=True)
    assert sound.version is None and sound.skipped == (tenth["id"],) and not sound.repaired
    assert sound.bytes_written == 0 and {p: p.stat().st_mtime_ns for p in before} == before
    assert f"every shard of hot slot 1 of tile 31UFU (scene {tenth['id']}) is sound" in caplog.text

    _flip(_hot_shard(cube))  # slot 0's
    both = ingest(write_items(tiny_region.items, [hot_scene, tenth], "repair-both.json"), cube, progress=False,
                  repair=True)
    assert both.repaired == (hot_scene["id"],) and both.skipped == (tenth["id"],)
    state = read_version(open_store(cube, read_only=True), "s2").tiles["31UFU"]
    assert [(h.slot, h.acquisition.scene_id) for h in state.hot] == [(2, hot_scene["id"]), (1, tenth["id"])]
    ten = items_of(tiny_region.items, "sentinel-2-l2a")[:10]
    assert_matches_sources(cube, write_items(tiny_region.items, ten, "repair-ten.json"), "s2")

def test_repair_matching_no_date_of_the_cube_says_so(tiny_region, tmp_path, caplog):
    first = items_of(tiny_region.items, "sentinel-2-l2a")[0]
    with caplog.at_level(logging.WARNING, logger="ingest.repair"):
        result = ingest(write_items(tiny_region.items, [first], "repair-new.json"), tmp_path / "cube", progress=False,
                        chunks=ChunkLayout.parse(TEST_CHUNKS), repair=True)
    assert result.added == (first["id"],) and not result.repaired and not result.mended  # a new scene: added
    assert "repair: none of the offered scenes is a date of the cube" in caplog.text


def _cold_shards(cube: Path, block: int, group: str = "r10m", band: str = "B04") -> list[Path]:
    return sorted((cube / "s2").glob(f"*/cube.zarr/{group}/{band}/c/{block}/*/*"))


def test_repair_writes_lost_and_damaged_cold_shards_again_for_every_version(cube, next_three, tiny_region, capsys):
    """A cold block is read by every version since it was written: a shard of it lost or damaged is written again
    in place, from its dates' files, with the values ingest wrote there (the manifest's crc32 says so)."""
    ingest(next_three, cube, progress=False)  # version 2 compacts hot slot 0: both versions read cold block 0
    lost, flipped = _cold_shards(cube, 0)[0], _cold_shards(cube, 0, "r20m", "SCL")[-1]
    _lose(lost)
    _flip(flipped)
    with pytest.raises(MissingShardError):
        open_cube(cube, decode=False, as_of=1).B04.isel(time=0).compute()
    assert len(verify(cube, deep=True, progress=False).problems) == 2
    block = items_of(tiny_region.items, "sentinel-2-l2a")[:4]
    offered = write_items(tiny_region.items, block, "repair-cold-block.json")
    assert main(["ingest", str(offered), "--cube", str(cube), "--repair", "--quiet"]) == 0
    said = capsys.readouterr().out
    assert "wrote 2 lost or damaged cold shard(s) again" in said and "this version records the repair" in said
    assert "(then flag it anew: cardcube flag)" in said  # no flag file is made anew by itself
    # the ledger, an inspector's audit trail, says so: what was read of the block before (an extraction) can tell
    version = read_version(open_store(cube, read_only=True), "s2")
    assert version.version == 3 and version.repaired == tuple(sorted(b["id"] for b in block))
    assert {version.scenes[b["id"]].version for b in block} == {3} and not version.added
    assert main(["versions", "--cube", str(cube)]) == 0  # the 4 dates mended in a cold block: no hot date
    assert "repaired 4 date(s)," in (said := capsys.readouterr().out) and "hot date" not in said
    assert verify(cube, deep=True, progress=False).ok
    twelve = items_of(tiny_region.items, "sentinel-2-l2a")[:12]
    assert_matches_sources(cube, write_items(tiny_region.items, twelve, "mended-twelve.json"), "s2")
    nine = items_of(tiny_region.items, "sentinel-2-l2a")[:9]
    assert_matches_sources(cube, write_items(tiny_region.items, nine, "mended-nine.json"), "s2", as_of=1)


def test_a_cold_mend_of_a_run_that_fails_after_it_is_recorded_by_the_next_version(cube, tiny_region):
    """The mend writes in place before anything else: a run failing after it (here a compaction stopped by a damaged
    hot shard; or killed) committed nothing, its rerun found the block sound, and no version recorded its dates, so an
    extraction's update kept the rows it had read of them from the damaged shard."""
    _flip(_cold_shards(cube, 0)[0])
    _flip(_hot_shard(cube))
    s2 = items_of(tiny_region.items, "sentinel-2-l2a")
    block = s2[:4]
    with pytest.raises(CorruptShardError):  # the cold shard mended, then the compaction of hot slot 0 refused
        ingest(write_items(tiny_region.items, [*block, *s2[9:12]], "mend-then-fail.json"), cube, progress=False,
               repair=True)
    assert [k for k, _ in verify(cube, deep=True, progress=False).problems] == [
        _hot_shard(cube).relative_to(cube).as_posix()]  # the cold one mended
    result = ingest(write_items(tiny_region.items, [*block, s2[8], *s2[9:12]], "mend-again.json"), cube,
                    progress=False, repair=True)
    version = read_version(open_store(cube, read_only=True), "s2")
    assert result.mended == () and version.version == 2  # the block was sound by then
    assert set(version.repaired) == {b["id"] for b in block} | {s2[8]["id"]}
    assert {version.scenes[b["id"]].version for b in block} == {2}
    assert not (cube / layout.mending_key("s2")).exists()
    assert ingest(write_items(tiny_region.items, block, "sound.json"), cube, progress=False).version is None


def test_a_cold_repair_needs_every_date_of_the_block(cube, tiny_region):
    lost = _cold_shards(cube, 1)[0]
    _lose(lost)
    three = items_of(tiny_region.items, "sentinel-2-l2a")[4:7]
    with pytest.raises(InvalidRequestError, match=r"cold block 1 of tile 31UFU has 1 lost or damaged shard.*offer the "
                       r"scenes of them all \(.* not offered\)"):
        ingest(write_items(tiny_region.items, three, "repair-three.json"), cube, progress=False, repair=True)
    assert not lost.exists()


def test_a_cold_repair_writes_nothing_but_the_values_ingest_wrote(cube, tiny_region):
    """Files read otherwise than at their ingest (another cardcube, another option) or a manifest damaged: the
    values read again are not those the manifest vouches for, and the shard is not written."""
    lost = _cold_shards(cube, 0)[0]
    _lose(lost)
    key = cube / layout.manifest_key("s2", "31UFU", 0)
    doc = json.loads(key.read_text())
    doc["shards"]["B04"] = [[r, c, crc ^ 1] for r, c, crc in doc["shards"]["B04"]]
    key.write_text(json.dumps(doc))
    block = items_of(tiny_region.items, "sentinel-2-l2a")[:4]
    with pytest.raises(CorruptShardError, match="does not hold the values ingest wrote"):
        ingest(write_items(tiny_region.items, block, "repair-block.json"), cube, progress=False, repair=True)
    assert not lost.exists()


def test_a_cold_block_whose_manifest_is_lost_is_checked_against_its_files_and_its_manifest_written_anew(cube,
                                                                                                      tiny_region):
    """A lost manifest left its block's lost shards beyond repair: nothing recorded the values to write. The
    block's dates read again (the bytes the ledger records) say them: a shard holding them is kept, a lost one is
    written again, and the manifest is written anew, the one ingest wrote."""
    key = cube / layout.manifest_key("s2", "31UFU", 0)
    written = json.loads(key.read_text())
    key.unlink()
    lost = _cold_shards(cube, 0)[0]
    lost_size = lost.stat().st_size
    _lose(lost)
    block = items_of(tiny_region.items, "sentinel-2-l2a")[:4]
    with pytest.raises(InvalidRequestError, match=r"cold block 0 of tile 31UFU has lost its manifest.*offer the "
                                                  r"scenes of them all"):
        ingest(write_items(tiny_region.items, block[:3], "repair-three.json"), cube, progress=False, repair=True)
    kept = {p: p.stat().st_mtime_ns for p in _cold_shards(cube, 0) + _cold_shards(cube, 0, "r20m", "SCL")}
    result = ingest(write_items(tiny_region.items, block, "repair-block.json"), cube, progress=False, repair=True)
    assert result.mended == (lost.relative_to(cube).as_posix(),) and result.version == 2 and not result.repaired
    assert result.bytes_written >= lost_size  # the shard written again (its count was taken before the write: 0)
    assert json.loads(key.read_text()) == written
    assert {p: p.stat().st_mtime_ns for p in kept} == kept  # the sound shards were not written
    assert verify(cube, deep=True, progress=False).ok
    nine = items_of(tiny_region.items, "sentinel-2-l2a")[:9]
    assert_matches_sources(cube, write_items(tiny_region.items, nine, "rebuilt-nine.json"), "s2")


def test_a_cold_shard_disagreeing_with_its_files_without_a_manifest_is_not_overwritten(cube, tiny_region):
    """No record tells whether the files or the shard are right: the repair stops, and writes nothing there."""
    (cube / layout.manifest_key("s2", "31UFU", 0)).unlink()
    b04, b03 = _cold_shards(cube, 0)[0], _cold_shards(cube, 0, band="B03")[0]
    shutil.copy(b03, b04)  # a sound shard of other values
    block = items_of(tiny_region.items, "sentinel-2-l2a")[:4]
    with pytest.raises(CorruptShardError, match="holds other values than its dates' files give"):
        ingest(write_items(tiny_region.items, block, "repair-block.json"), cube, progress=False, repair=True)
    assert b04.read_bytes() == b03.read_bytes()
    assert not (cube / layout.manifest_key("s2", "31UFU", 0)).exists()


def test_repair_refuses_files_that_are_not_the_bytes_the_cube_read(cube, hot_scene, tiny_region):
    first_b04 = asset_path(tiny_region.items, items_of(tiny_region.items, "sentinel-2-l2a")[0], "B04")

    def another_dates_b04(band: str, path: Path) -> None:
        if band == "B04":
            shutil.copy(first_b04, path)

    other = broken_copy(tiny_region.items, hot_scene, hot_scene["id"], another_dates_b04)  # its id, other bytes
    _lose(_hot_shard(cube))
    with pytest.raises(InvalidRequestError, match=r"repair: the date of scene .* not the bytes the ledger records"):
        ingest(write_items(tiny_region.items, [other], "repair-other.json"), cube, progress=False, repair=True)
    assert read_version(open_store(cube, read_only=True), "s2").version == 1


@pytest.fixture
def signed_nan_hot(tiny_region, tmp_path) -> tuple[Path, Path, dict]:
    """An S1 cube of 5 dates, the fifth in hot slot 0 with its nodata NaN of the sign bit set; the next 3 dates."""
    s1 = items_of(tiny_region.items, "sentinel-1-card-bs")
    fifth = broken_copy(tiny_region.items, s1[4], s1[4]["id"] + "_SIGNED_NAN", signed_nan_west)
    cube = tmp_path / "cube"
    ingest(write_items(tiny_region.items, [*s1[:4], fifth], "signed-nan-first.json"), cube, collection="s1",
           chunks=ChunkLayout.parse(TEST_CHUNKS), progress=False)
    state = next(iter(read_version(open_store(cube, read_only=True), "s1").tiles.values()))
    assert [h.acquisition.scene_id for h in state.hot] == [fifth["id"]]
    return cube, write_items(tiny_region.items, s1[5:8], "signed-nan-next.json"), fifth


def test_a_backscatter_date_whose_nodata_is_nan_with_the_sign_bit_set_compacts(signed_nan_hot, tiny_region):
    """zarr stores no chunk of NaN only (the fill): such a chunk reads back as the fill's NaN, whose bits differ. The
    crc ingest recorded was of the file's NaN, so ``verify --deep`` called the shard damaged, and the compaction
    refused the sound date for good: ingest now writes one NaN, the fill's."""
    cube, more, fifth = signed_nan_hot
    assert verify(cube, "s1", deep=True, progress=False).ok
    result = ingest(more, cube, collection="s1", progress=False)
    assert result.compacted == 1 and len(result.added) == 3
    assert verify(cube, "s1", deep=True, progress=False).ok
    s1 = items_of(tiny_region.items, "sentinel-1-card-bs")
    assert_matches_sources(cube, write_items(tiny_region.items, [*s1[:4], fifth, *s1[5:8]], "signed-nan-all.json"),
                           "s1")  # NaN for NaN, whatever its sign
