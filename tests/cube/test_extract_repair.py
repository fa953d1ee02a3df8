"""An extraction after ``ingest --repair``: the dates a repair wrote anew are read again, their earlier rows replaced.

A shard damaged so that it still decodes (here: another date's shard copied over it) gives an extraction wrong
values; the repair writes the date anew (a hot date into a new slot, a cold block's shards in place), and the
extraction's update, or its resumption, must then equal a whole extraction of what the cube now holds, row for row.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest

from cardcube.spec import ChunkLayout
from cardcube.storage import open_store
from cube.extract import extract, read_status, read_timeseries
from cube.extraction_files import MANIFEST, TIMESERIES
from cube.ledger import read_version
from ingest.job import ingest
from tests.conftest import TEST_CHUNKS
from tests.cube.kept import keep, restored
from tests.cube.test_extract import BLOCK, REPO, TIME_BLOCK, _same
from tests.in_process import run_here
from tests.ingest.scene_edits import items_of, write_items

KW = {"bands": ["B04", "NDVI"], "block": BLOCK, "time_block": TIME_BLOCK, "progress": False}
FINISHED = ("status", "scenes", "updated_from", "mosaics", "software", "finished")  # what finish_manifest adds


def _cube(tiny_region, tmp_path: Path, dates: int) -> tuple[Path, list[dict]]:
    features = items_of(tiny_region.items, "sentinel-2-l2a")
    cube = tmp_path / "cube"
    ingest(write_items(tiny_region.items, features[:dates], f"repair-extract-{dates}.json"), cube,
           chunks=ChunkLayout.parse(TEST_CHUNKS), progress=False)
    return cube, features


@pytest.fixture(scope="module")
def cube_of(tiny_region, tmp_path_factory) -> Callable[[Path, int], tuple[Path, list[dict]]]:
    """:func:`_cube` of the region's first ``dates`` dates, ingested once for the module: each test gets a copy of
    it at ``tmp_path / "cube"`` to damage and repair (a copy takes milliseconds, an ingest seconds)."""
    made: dict[int, tuple[Path, list[dict]]] = {}

    def copy(tmp_path: Path, dates: int) -> tuple[Path, list[dict]]:
        if dates not in made:
            made[dates] = _cube(tiny_region, tmp_path_factory.mktemp(f"cube-of-{dates}-dates"), dates)
        cube, features = made[dates]
        return Path(shutil.copytree(cube, tmp_path / "cube")), features

    return copy


def _damage(cube: Path, part: str, block: int, source: int) -> Path:
    """Copy a B04 shard of time block (or hot slot) ``source`` over the one of ``block`` at the same place: it
    decodes, to another date's values, as a shard damaged behind cardcube's back may."""
    shards = sorted((cube / "s2").glob(f"*/cube.zarr/{part}/B04/c/{source}/*/*"))
    target = Path(str(shards[0]).replace(f"/c/{source}/", f"/c/{block}/"))
    assert target.exists()
    shutil.copyfile(shards[0], target)
    return target


def _argv(tiny_region, cube: Path, out: Path | str, *options: str) -> list[str]:
    """The arguments of ``cardcube extract`` with ``options``."""
    return ["extract", "--parcels", str(tiny_region.parcels), "--cube", str(cube), "--out", str(out), "--block",
            str(BLOCK), "--time-block", str(TIME_BLOCK), "--bands", "B04,NDVI", "--scheduler", "sync", "--quiet",
            *options]


def _cli(tiny_region, cube: Path, out: Path | str, *options: str, kill_at: str | None = None,
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``cardcube extract`` with ``options`` in a process of its own (``env`` added to its environment), killed at
    checkpoint ``kill_at`` if given."""
    cmd = [sys.executable, "-m", "cardcube.cli", *_argv(tiny_region, cube, out, *options)]
    environment = {k: v for k, v in os.environ.items() if k != "CARDCUBE_KILL_AT"}
    environment.update({"PYTHONPATH": str(REPO), **(env or {}), **({"CARDCUBE_KILL_AT": kill_at} if kill_at else {})})
    return subprocess.run(cmd, env=environment, capture_output=True, text=True, timeout=300)


def _update(tiny_region, cube: Path, out: Path, kill_at: str | None = None) -> subprocess.CompletedProcess:
    """``cardcube extract --update`` in a process of its own, killed at checkpoint ``kill_at`` if given."""
    return _cli(tiny_region, cube, out, "--update", kill_at=kill_at)


def _resume_update(tiny_region, cube: Path, out: Path) -> str:
    """``cardcube extract --update`` run again after a kill: its output. In this process (the kill needs a process
    of its own; the command run to its end does not, and saves a Python start)."""
    done = run_here(_argv(tiny_region, cube, out, "--update"))
    assert done.returncode == 0, done.stderr
    return done.stdout


def _update_killed_then_resumed(tiny_region, cube: Path, out: Path, at: str) -> str:
    """``cardcube extract --update`` killed at checkpoint ``at`` (a process of its own), then run again: its
    output."""
    killed = _update(tiny_region, cube, out, at)
    assert killed.returncode == -9, killed.stderr
    assert not json.loads((out / MANIFEST).read_text())["complete"]
    return _resume_update(tiny_region, cube, out)


def _same_as_whole(out: Path, whole: Path) -> None:
    """Every row of ``out`` that of the whole extraction ``whole`` (but the version each was read at), no other row
    in its folder, and the same status of every parcel."""
    rows = read_timeseries(out)
    assert pq.ParquetDataset(out / "timeseries").read().num_rows == len(rows)  # no file of stale rows beside
    assert not rows.duplicated(["parcel_id", "time", "band"]).any()
    _same(rows.drop(columns="cube_version"), read_timeseries(whole).drop(columns="cube_version"))
    columns = ["parcel_id", "status", "reason", "tile", "pixels", "cube_version"]
    pd.testing.assert_frame_equal(read_status(out)[columns], read_status(whole)[columns])


def _differ_on(before: pd.DataFrame, after: pd.DataFrame, times: set) -> None:
    """The damage showed: rows of ``times`` differ between the two extractions, and no other row does."""
    key = ["parcel_id", "time", "band"]
    both = before.merge(after, on=key, suffixes=("", "_now"))
    changed = both[both["mean"].ne(both["mean_now"]) & both["mean"].notna()]
    assert len(changed) and set(changed.time) == times


def test_an_update_reads_a_hot_date_a_repair_wrote_anew_and_replaces_its_rows(cube_of, tiny_region, parcels, tmp_path):
    """A hot date damaged (it decodes, to other values), extracted, then repaired: ``--update`` was refused (extract
    anew into a new --out); it now reads the date again, drops its earlier rows, and equals a whole extraction of the
    repaired version, also killed while dropping them and resumed."""
    cube, features = cube_of(tmp_path, 10)  # cold blocks 0 and 1, hot slots 0 and 1
    _damage(cube, "hot/r10m", 0, 1)
    out = tmp_path / "out"
    extract(parcels, cube, out, **KW)
    before = read_timeseries(out)
    repaired = ingest(write_items(tiny_region.items, [features[8]], "repair-extract-hot.json"), cube, progress=False,
                      repair=True)
    assert repaired.version == 2 and repaired.repaired == (features[8]["id"],)

    said = _update_killed_then_resumed(tiny_region, cube, out, "extract-rows-replaced")
    assert "version 2" in said and "(1 date(s) read again" in said
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["complete"] and manifest["version"] == 2 and manifest["reads"][features[8]["id"]] == 2
    extract(parcels, cube, tmp_path / "whole", **KW)
    _same_as_whole(out, tmp_path / "whole")
    hot_time = pd.Timestamp(features[8]["properties"]["datetime"]).tz_localize(None)
    _differ_on(before, read_timeseries(out), {hot_time})
    assert set(read_timeseries(out).query("time == @hot_time").cube_version) == {2}
    again = extract(parcels, cube, out, update=True, **KW)  # read once: nothing more to do
    assert again.rows == 0 and again.new_scenes == 0 and again.replaced == 0


def _mend(cube_of, tiny_region, parcels, tmp_path: Path) -> tuple[Path, Path, set]:
    """A cube of three cold blocks whose block 0 was damaged (a shard decoding to block 1's values), an extraction
    of it made then (``damaged``), and the block mended in place by ``ingest --repair`` (version 2); the times of
    the block's dates."""
    cube, features = cube_of(tmp_path, 12)
    _damage(cube, "r10m", 0, 1)
    damaged = tmp_path / "damaged"
    extract(parcels, cube, damaged, **KW)
    block = features[:4]
    result = ingest(write_items(tiny_region.items, block, "repair-extract-cold.json"), cube, progress=False,
                    repair=True)
    assert result.version == 2 and result.mended
    version = read_version(open_store(cube, read_only=True), "s2")
    assert {version.scenes[f["id"]].version for f in block} == {2}
    times = {pd.Timestamp(f["properties"]["datetime"]).tz_localize(None) for f in block}
    return cube, damaged, times


@pytest.fixture(scope="module")
def _mended_once(cube_of, tiny_region, parcels, tmp_path_factory) -> tuple[Path, tuple[Path, Path, set], dict]:
    """:func:`_mend` made once for the module in ``work`` (kept: :mod:`tests.cube.kept`), and whole extractions
    of the mended cube as of its versions 1 and 2 (the references the tests' runs must equal, by version)."""
    root = tmp_path_factory.mktemp("mended")
    (root / "work").mkdir()
    state = _mend(cube_of, tiny_region, parcels, root / "work")
    keep(root / "work")
    wholes = {version: root / f"whole-{version}" for version in (1, 2)}
    for version, whole in wholes.items():
        extract(parcels, state[0], whole, as_of=version, **KW)
    return root, state, wholes


@pytest.fixture
def mended(_mended_once) -> tuple[Path, Path, set]:
    """:func:`_mend` for one test to change (its cube, the extraction ``damaged`` and the mended dates' times): the
    module's copy restored at the same place (an extraction names its cube by path), so each test starts from the
    state it made."""
    root, state, _ = _mended_once
    restored(root / "work")
    return state


@pytest.fixture(scope="module")
def mended_whole(_mended_once) -> dict[int, Path]:
    """A whole extraction of :func:`mended`'s cube as of each of its versions, 1 and 2 (read only): a cold block is
    mended in place, so both read the mended block."""
    return _mended_once[2]


def test_an_update_reads_a_mended_cold_block_again_resumed_after_a_kill(mended, mended_whole, tiny_region):
    """The cold block's shards mended in place: every version reads them mended, so the update to version 2 reads
    the block's four dates again, also killed after its first file and resumed."""
    cube, out, times = mended
    before = read_timeseries(out)
    said = _update_killed_then_resumed(tiny_region, cube, out, "extract-unit-written")
    assert "(4 date(s) read again" in said
    _same_as_whole(out, mended_whole[2])
    _differ_on(before, read_timeseries(out), times)


def test_an_unfinished_run_resumed_after_a_mend_reads_the_mended_dates_again(mended, mended_whole, parcels,
                                                                              tmp_path):
    """A run stopped before it finished, its files read from the damaged block, resumed after the mend: it skipped
    the check and kept those files, for good."""
    cube, damaged, times = mended
    out = tmp_path / "unfinished"
    shutil.copytree(damaged, out)
    manifest = json.loads((out / MANIFEST).read_text())
    (out / MANIFEST).write_text(json.dumps({**{k: v for k, v in manifest.items() if k not in FINISHED},
                                            "complete": False}))  # as a run killed after its last file left it
    assert "generation" not in manifest  # as an earlier cardcube left it
    resumed = extract(parcels, cube, out, as_of=1, **KW)
    assert resumed.rows > 0 and resumed.version == 1
    assert json.loads((out / MANIFEST).read_text())["generation"] == 1
    _same_as_whole(out, mended_whole[1])  # read now: the block as mended
    _differ_on(read_timeseries(damaged), read_timeseries(out), times)


def test_an_extraction_as_of_a_version_made_after_a_mend_is_updated_without_reading_again(mended, mended_whole,
                                                                                          parcels, tmp_path):
    """Made ``as_of`` version 1 after the mend, it read the mended block (a cold block is mended in place, for every
    version): its update to version 2 was refused, as if it had read the damaged shard; it has nothing to read."""
    cube, damaged, times = mended
    out = tmp_path / "as-of"
    extract(parcels, cube, out, as_of=1, **KW)
    _differ_on(read_timeseries(damaged), read_timeseries(out), times)
    updated = extract(parcels, cube, out, update=True, **KW)
    assert updated.version == 2 and updated.new_scenes == 0 and updated.replaced == 0 and updated.rows == 0
    _same_as_whole(out, mended_whole[2])


def test_an_update_after_a_mend_reads_the_parcels_across_tiles_again_and_drops_no_batch_row(tiny_straddle_region,
                                                                                            tiny_straddle_cube,
                                                                                            tmp_path):
    """A parcel no tile holds whole is read across tiles, into batch files of its own: the update reads it again
    whole, and the rows dropped from the tile's files are those of the mended dates alone."""
    from tests.cube.test_multitile import _with_strip

    items = tiny_straddle_region.items
    parcels, strip = _with_strip(tiny_straddle_region)
    some = pd.concat([parcels[["parcel_id", "geometry"]].iloc[:30], strip], ignore_index=True)
    cube, out = tmp_path / "cube", tmp_path / "out"
    shutil.copytree(tiny_straddle_cube, cube, ignore=shutil.ignore_patterns("_parcels"))  # as ingested, no layer
    for shard in sorted((cube / "s2" / "31UFU").glob("cube.zarr/r10m/B04/c/1/*/*")):  # all of block 0 damaged
        shutil.copyfile(shard, str(shard).replace("/c/1/", "/c/0/"))
    kw = {**KW, "bands": ["B04"]}
    extract(some, cube, out, **kw)
    before = read_timeseries(out)
    assert set(read_timeseries(out).query("parcel_id == 'strip'").tile) == {"mosaic"}
    block = {a.scene_id for a in read_version(open_store(cube, read_only=True), "s2").tiles["31UFU"].cold[:4]}
    offered = [f for f in items_of(items, "sentinel-2-l2a") if f["id"] in block]
    assert len(offered) == 4
    assert ingest(write_items(items, offered, "repair-extract-straddle.json"), cube, progress=False,
                  repair=True).mended
    updated = extract(some, cube, out, update=True, **kw)
    assert updated.replaced == 4 and updated.version == 2
    extract(some, cube, tmp_path / "whole", **kw)
    _same_as_whole(out, tmp_path / "whole")
    assert len(list((out / "timeseries" / "tile=mosaic").glob("*.parquet"))) == 1  # the earlier version's gone
    changed = before.merge(read_timeseries(out), on=["parcel_id", "time", "band"], suffixes=("", "_now"))
    assert changed["mean"].ne(changed["mean_now"]).any()


def test_a_late_write_of_an_earlier_runs_file_after_an_update_dropped_its_repaired_rows_brings_none_back(
        mended, mended_whole, parcels):
    """The update wrote the earlier run's files anew without the mended dates' rows, under their own keys: a task of
    a stopped earlier attempt writing its file late (a worker that kept going after the driver was stopped) put the
    damaged rows back beside the update's, two rows of each mended date. The files written anew are named by the
    update's version now, and a late file of their name is left aside, then deleted by the next run."""
    cube, out, _ = mended
    earlier = {path: path.read_bytes() for path in (out / "timeseries").rglob("*.parquet")}
    updated = extract(parcels, cube, out, update=True, **KW)
    assert updated.replaced == 4
    for path, data in earlier.items():  # what a late task does: its file's bytes, written to its key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    rows = read_timeseries(out)
    assert not rows.duplicated(["parcel_id", "time", "band"]).any()
    _same(rows.drop(columns="cube_version"), read_timeseries(mended_whole[2]).drop(columns="cube_version"))
    again = extract(parcels, cube, out, update=True, **KW)  # nothing to read; the late files go
    assert again.rows == 0 and again.replaced == 0
    _same_as_whole(out, mended_whole[2])


def test_an_update_killed_between_a_file_written_anew_and_its_earlier_name_deleted_reads_as_after_and_resumes(
        mended, mended_whole, tiny_region):
    """Killed with a file both written anew (without the mended dates' rows) and under its earlier name: the
    extraction reads that file as written anew, no row of it lost or doubled, and the update resumed ends as a whole
    extraction, the earlier name deleted."""
    cube, out, times = mended
    key = ["parcel_id", "time", "band"]
    before = read_timeseries(out)
    killed = _update(tiny_region, cube, out, "extract-rows-written-anew")
    assert killed.returncode == -9, killed.stderr
    (anew,) = (out / "timeseries").rglob("*-w00000002-*.parquet")
    earlier = anew.with_name(anew.name.replace("-w00000002", ""))
    assert earlier.exists()  # both names there
    there = read_timeseries(out, allow_incomplete=True)
    assert not there.duplicated(key).any()
    _same(there, before.merge(there[key], on=key))  # every row as it was: none of the update's yet
    assert not pq.read_table(anew).to_pandas().time.isin(times).any()  # here none is left: a file of no row
    gone = before.merge(pq.read_table(earlier).to_pandas()[key], on=key)
    assert gone.time.isin(times).any()
    pd.testing.assert_frame_equal(  # those of the file's mended dates alone are gone: it reads as written anew
        before.merge(there[key], on=key, how="left", indicator=True).query("_merge == 'left_only'")[key]
        .reset_index(drop=True), gone[gone.time.isin(times)][key].reset_index(drop=True), check_dtype=False)
    _resume_update(tiny_region, cube, out)
    assert not earlier.exists()
    _same_as_whole(out, mended_whole[2])


def test_an_extraction_whose_files_an_earlier_cardcube_wrote_anew_in_place_reads_and_updates_after_a_repair(
        cube_of, tiny_region, parcels, tmp_path):
    """An update by an earlier cardcube wrote the files holding repaired dates anew under their own names: they read
    as they are, and a later update after another repair drops the rows of its dates from them, as from any file."""
    cube, features = cube_of(tmp_path, 12)  # cold blocks 0, 1 and 2
    _damage(cube, "r10m", 0, 2)
    _damage(cube, "r10m", 1, 2)
    out, kw = tmp_path / "out", {**KW, "time_block": 8}  # a file of every block: each repair drops from it
    extract(parcels, cube, out, **kw)
    for version, block in ((2, features[:4]), (3, features[4:8])):
        assert ingest(write_items(tiny_region.items, block, f"repair-extract-{version}.json"), cube, progress=False,
                      repair=True).version == version
        assert extract(parcels, cube, out, update=True, **kw).replaced == 4
        whole = tmp_path / f"whole-{version}"
        extract(parcels, cube, whole, **kw)
        _same_as_whole(out, whole)
        anew = sorted((out / "timeseries").rglob(f"*-w{version:08d}-*.parquet"))
        assert anew and {p.name.split("-")[0][-5:] for p in anew} == {"t0000"}  # the first run's, of both blocks
        times = {pd.Timestamp(f["properties"]["datetime"]).tz_localize(None) for f in block}
        assert not any(pq.read_table(p).to_pandas().time.isin(times).any() for p in anew)
        if version == 2:  # as an earlier cardcube left them: under their own names
            for path in anew:
                path.rename(path.with_name(path.name.replace(f"-w{version:08d}", "")))
            _same_as_whole(out, whole)


@dataclass(frozen=True)
class _Out:
    """An extraction's output, in a folder or on moto's S3: where to extract to, and its files as a late task writes
    them (through fsspec)."""

    url: str
    options: dict[str, Any] | None
    fs: Any
    root: str
    env: dict[str, str]  # what points a cardcube process at it

    def files(self) -> dict[str, bytes]:
        """Every file under ``timeseries/``, by its key."""
        self.fs.invalidate_cache()
        return {p[len(self.root) + 1:]: self.fs.cat_file(p) for p in self.fs.find(f"{self.root}/{TIMESERIES}")}

    def write_back(self, files: dict[str, bytes]) -> None:
        """What a stopped attempt's late tasks do: each file's bytes, written to its key."""
        for key, data in files.items():
            self.fs.pipe_file(f"{self.root}/{key}", data)

    def manifest(self) -> dict[str, Any]:
        self.fs.invalidate_cache()
        return json.loads(self.fs.cat_file(f"{self.root}/{MANIFEST}"))


@pytest.fixture(params=["folder", "s3"])
def unfinished(request, mended, tmp_path) -> tuple[Path, _Out]:
    """The damaged extraction of ``mended`` as a run stopped before it finished left it (as in
    :func:`test_an_unfinished_run_resumed_after_a_mend_reads_the_mended_dates_again`), in a folder or on S3."""
    import fsspec

    cube, damaged, _ = mended
    manifest = json.loads((damaged / MANIFEST).read_text())
    manifest = {**{k: v for k, v in manifest.items() if k not in FINISHED}, "complete": False}
    if request.param == "folder":
        folder = str(tmp_path / "unfinished")
        out = _Out(folder, None, fsspec.filesystem("file", auto_mkdir=True), folder, {})
    else:
        bucket = request.getfixturevalue("s3_bucket")
        options = bucket.storage_options()
        out = _Out(bucket.url_for("unfinished"), options, fsspec.filesystem("s3", **options),
                   f"{bucket.name}/unfinished", bucket.server.environment())
    out.write_back({str(p.relative_to(damaged)): p.read_bytes() for p in damaged.rglob("*") if p.is_file()})
    out.fs.pipe_file(f"{out.root}/{MANIFEST}", json.dumps(manifest).encode())  # as a run killed after its last file
    return cube, out


def _same_as_whole_at(out: _Out, whole: Path) -> None:
    """:func:`_same_as_whole`, of an output in a folder or on S3."""
    rows = read_timeseries(out.url, storage_options=out.options)
    assert sum(pq.read_metadata(io.BytesIO(data)).num_rows for data in out.files().values()) == len(rows)
    assert not rows.duplicated(["parcel_id", "time", "band"]).any()
    _same(rows.drop(columns="cube_version"), read_timeseries(whole).drop(columns="cube_version"))
    columns = ["parcel_id", "status", "reason", "tile", "pixels", "cube_version"]
    pd.testing.assert_frame_equal(read_status(out.url, storage_options=out.options)[columns],
                                  read_status(whole)[columns])


def test_a_late_write_of_the_attempt_before_a_mend_after_its_resumption_wrote_brings_no_damaged_row_back(
        unfinished, mended_whole, parcels):
    """An unfinished run resumed after a mend deleted its files holding the mended dates, and its tasks wrote them
    again under the same keys: a task of the attempt before the mend writing its file late (a dask worker that kept
    going after its driver was stopped) replaced the new file with the damaged one, and the extraction differed from a
    whole one (mean values, 13 %). Written again under a name of the resumption's generation now, which the late
    file's does not replace; the next run deletes the late ones."""
    cube, out = unfinished
    earlier = out.files()
    extract(parcels, cube, out.url, as_of=1, out_storage_options=out.options, **KW)
    out.write_back(earlier)  # the attempt before the mend, late
    whole = mended_whole[1]
    rows = read_timeseries(out.url, storage_options=out.options)
    assert not rows.duplicated(["parcel_id", "time", "band"]).any()
    _same(rows.drop(columns="cube_version"), read_timeseries(whole).drop(columns="cube_version"))
    assert out.manifest()["generation"] == 1
    assert any("-g00000001-" in key for key in out.files())
    again = extract(parcels, cube, out.url, as_of=1, out_storage_options=out.options, **KW)  # nothing to read
    assert again.rows == 0
    _same_as_whole_at(out, whole)


def test_a_late_write_of_the_attempt_before_a_mend_before_its_resumption_listed_its_files_is_not_taken_as_done(
        unfinished, mended_whole, tiny_region, parcels):
    """The resumption after a mend deleted the files holding the mended dates, and was stopped (killed after its
    first file); a task of the attempt before the mend then wrote its file late, and the next resumption found it
    there and took it for done: the mended dates kept their damaged rows for good. A file of an earlier generation
    holding those dates is not done now, and is written again."""
    cube, out = unfinished
    earlier = out.files()
    killed = _cli(tiny_region, cube, out.url, "--as-of", "1", kill_at="extract-unit-written", env=out.env)
    assert killed.returncode == -9, killed.stderr
    assert not out.manifest()["complete"]
    out.write_back(earlier)  # the attempt before the mend, late
    resumed = extract(parcels, cube, out.url, as_of=1, out_storage_options=out.options, **KW)
    _same_as_whole_at(out, mended_whole[1])
    assert resumed.rows > 0  # the late files holding the mended dates were written again


def test_a_late_write_of_an_unfinished_updates_attempt_before_a_mend_repeats_no_row(cube_of, tiny_region, parcels,
                                                                                    tmp_path):
    """An unfinished update resumed after a mend of a date the run before it read deletes its own files of that
    date's tile: it reads the date again, so its runs of dates there, and their files' names, change. A task of the
    attempt before the mend writing its file late put rows of the new dates in twice (a name the resumption no
    longer writes), or its earlier rows over the resumption's (the same name). Both are left aside now (a file of
    the update's own, of an earlier generation, on that tile) and deleted by the next run."""
    cube, features = cube_of(tmp_path, 8)  # cold blocks 0 and 1
    _damage(cube, "r10m", 0, 1)
    out = tmp_path / "out"
    extract(parcels, cube, out, **KW)
    assert ingest(write_items(tiny_region.items, features[8:12], "repair-extract-added.json"), cube,
                  progress=False).version == 2
    killed = _update(tiny_region, cube, out, "extract-unit-written")
    assert killed.returncode == -9, killed.stderr
    earlier = {path: path.read_bytes() for path in (out / "timeseries").rglob("*-v00000002-*.parquet")}
    assert earlier
    assert ingest(write_items(tiny_region.items, features[:4], "repair-extract-block.json"), cube, progress=False,
                  repair=True).mended
    resumed = extract(parcels, cube, out, as_of=2, update=True, **KW)
    assert resumed.replaced == 4
    for path, data in earlier.items():  # the attempt before the mend, late
        path.write_bytes(data)
    whole = tmp_path / "whole"
    extract(parcels, cube, whole, as_of=2, **KW)
    rows = read_timeseries(out)
    assert not rows.duplicated(["parcel_id", "time", "band"]).any()
    _same(rows.drop(columns="cube_version"), read_timeseries(whole).drop(columns="cube_version"))
    assert json.loads((out / MANIFEST).read_text())["generation"] == 1
    assert extract(parcels, cube, out, as_of=2, update=True, **KW).rows == 0  # nothing to read; the late files go
    _same_as_whole(out, whole)


def test_an_extraction_never_resumed_after_a_repair_is_named_resumed_and_updated_as_before(cube_of, tiny_region,
                                                                                           parcels, tmp_path):
    """Generations name only the files of a run resumed after a repair: an extraction of an earlier cardcube (its
    manifest without ``generation``), stopped, is resumed and updated under the names it had, and reads as a whole
    extraction. (One resumed after a repair is :func:`test_an_unfinished_run_resumed_after_a_mend_reads_the_mended_
    dates_again` and the tests after it: their manifests had no generation either.)"""
    cube, features = cube_of(tmp_path, 8)
    out = tmp_path / "out"
    extract(parcels, cube, out, **KW)
    manifest = json.loads((out / MANIFEST).read_text())
    assert "generation" not in manifest and "read_again" not in manifest
    (out / MANIFEST).write_text(json.dumps({**{k: v for k, v in manifest.items() if k not in FINISHED},
                                            "complete": False}))  # stopped halfway
    files = sorted((out / "timeseries").rglob("*.parquet"))
    for path in files[::2]:
        path.unlink()
    resumed = extract(parcels, cube, out, **KW)
    assert resumed.units == len(files[::2]) and resumed.units_resumed == len(files[1::2])
    assert sorted((out / "timeseries").rglob("*.parquet")) == files  # the same names
    extract(parcels, cube, tmp_path / "whole-1", **KW)
    _same_as_whole(out, tmp_path / "whole-1")
    ingest(write_items(tiny_region.items, features[8:12], "generation-added.json"), cube, progress=False)
    updated = extract(parcels, cube, out, update=True, **KW)
    assert updated.version == 2 and updated.rows > 0
    names = [p.name for p in (out / "timeseries").rglob("*.parquet")]
    assert any("-v00000002-" in n for n in names) and not any("-g0" in n for n in names)
    assert "generation" not in json.loads((out / MANIFEST).read_text())
    extract(parcels, cube, tmp_path / "whole-2", **KW)
    _same_as_whole(out, tmp_path / "whole-2")



def test_a_file_a_resumption_after_a_mend_wrote_is_written_anew_by_a_later_update_no_late_file_undoing_either(
        mended, tiny_region, parcels, tmp_path):
    """The block mended while a run was stopped is damaged and mended again after the run finished: the update
    drops its rows from the files the resumption wrote (``-g00000001``), writing them anew (``-g00000001-w00000003``),
    and no late write of either earlier attempt's files brings a damaged row back."""
    cube, damaged, _ = mended
    out = tmp_path / "out"
    shutil.copytree(damaged, out)
    manifest = json.loads((out / MANIFEST).read_text())
    (out / MANIFEST).write_text(json.dumps({**{k: v for k, v in manifest.items() if k not in FINISHED},
                                            "complete": False}))
    late = {path: path.read_bytes() for path in (out / "timeseries").rglob("*.parquet")}
    extract(parcels, cube, out, as_of=1, **KW)  # resumed after the mend
    again = {path: path.read_bytes() for path in (out / "timeseries").rglob("*-g00000001-*.parquet")}
    assert again
    late.update(again)
    _damage(cube, "r10m", 0, 1)  # damaged again (after it was read), and mended again
    features = items_of(tiny_region.items, "sentinel-2-l2a")
    assert ingest(write_items(tiny_region.items, features[:4], "repair-extract-again.json"), cube, progress=False,
                  repair=True).version == 3
    updated = extract(parcels, cube, out, update=True, **KW)
    assert updated.replaced == 4 and updated.version == 3
    assert sorted(p.name.replace("-w00000003", "") for p in (out / "timeseries").rglob("*-w00000003-*.parquet")) == \
        sorted(p.name for p in again)  # the resumption's files, written anew
    for path, data in late.items():  # both attempts before, late
        path.write_bytes(data)
    whole = tmp_path / "whole"
    extract(parcels, cube, whole, **KW)
    rows = read_timeseries(out)
    assert not rows.duplicated(["parcel_id", "time", "band"]).any()
    _same(rows.drop(columns="cube_version"), read_timeseries(whole).drop(columns="cube_version"))
    assert extract(parcels, cube, out, update=True, **KW).rows == 0  # nothing to read; the late files go
    _same_as_whole(out, whole)
