"""The files of an extraction (:func:`cube.extract.extract`), the manifest that pins its run, and reading them.

::

    <out>/manifest.json                                   cube, collection, version, parameters, run, scenes read
    <out>/timeseries/tile=<tile>/r<row>c<col>t<t>-<run>.parquet  parcel_id, time, band, count, masked, mean, ...
    <out>/timeseries/tile=<tile>/r<row>c<col>t<t>-v<version>-<run>.parquet   the same, dates an update added
    <out>/timeseries/tile=<tile>/r<row>c<col>t<t>[-v<version>]-g<generation>-<run>.parquet   one of those,
                                                          written again by an unfinished run resumed after a repair
                                                          (the manifest's ``generation``; the greatest is read)
    <out>/timeseries/tile=<tile>/r<row>c<col>t<t>[-v<version>][-g<generation>]-w<update>-<run>.parquet   one of
                                                          those, written anew by the update to version <update>
                                                          without the rows of dates a repair wrote anew (the
                                                          latest is read)
    <out>/timeseries/tile=mosaic/part-<n>-v<version>[-g<generation>]-<run>.parquet   parcels read across tiles, a
                                                          square of them a file, each update's anew (the latest
                                                          is read)
    <out>/parcels.parquet                                 GeoParquet: every parcel, status, reason, pixels

The manifest is written first, incomplete: a run with another cube or other parameters is refused rather than
mixed in (:func:`check_manifest`), an unfinished one is resumed, and an update records the scenes it adds. Its
``reads`` keep, per scene, the version whose pixels the rows read (:func:`scene_reads`): a date a repair has written
anew since is read again by an update (``update.replaced``, whose earlier rows :func:`drop_replaced` drops, writing
each file holding some anew under a name of the update's version, which a stopped run's task writing the earlier
name late does not undo: :func:`superseded`) or by the resumption of an unfinished run (which deletes its files
holding it, and whose tasks write them again under names of a new ``generation``, so that a task of the attempt
before the repair writing one late is left aside: :func:`read_before_repair`).
Its ``run``, drawn when it is written, names every statistics file, and only files of that name are the
extraction's (:func:`statistics_keys`): a task of a stopped run on a dask cluster that writes on after its driver
has gone cannot slip its rows into a run started anew in the same folder (its resumption writes the same rows).
An extraction from before runs were named (no ``run``) names its files without it.
:func:`finish_manifest` marks the run complete with the scenes read per tile. The readers refuse an unfinished
extraction unless asked to read what is there.
"""

from __future__ import annotations

import io
import itertools
import json
import re
import uuid
from collections.abc import Hashable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import shapely
from zarr.abc.store import Store

from cardcube import __version__
from cardcube.checkpoints import checkpoint
from cardcube.errors import (
    CommitConflictError,
    CubeNotFoundError,
    InvalidRequestError,
    StoreError,
    VersionNotFoundError,
)
from cardcube.query import parse_time_range
from cardcube.spec import CubeSpec
from cardcube.storage import (
    StoreLike,
    delete_key,
    list_children,
    list_keys,
    listed_names,
    open_store,
    read_bytes,
    read_json,
    read_tails,
    store_url,
    write_bytes,
    write_json,
)
from cube.dataset import tile_dates
from cube.indices import band_list
from cube.ledger import CubeVersion, committed_versions, read_version
from cube.parcel_ids import uniform_ids
from cube.parcel_layer import parquet_bytes
from cube.stats import FRAME_COLUMNS, small_uint
from cube.timeseries import ParcelStatus

MANIFEST = "manifest.json"
STATUS = "parcels.parquet"
TIMESERIES = "timeseries"
MOSAIC = f"{TIMESERIES}/tile=mosaic/"  # the parcels read through parcel_timeseries (across tiles), a file a batch


def new_run() -> str:
    """A name for a new extraction run, drawn when its manifest is written."""
    return uuid.uuid4().hex[:12]


def statistics_name(stem: str, run: str) -> str:
    """The name of a statistics file of run ``run`` ("" for an extraction from before runs were named)."""
    return f"{stem}-{run}.parquet" if run else f"{stem}.parquet"


def generation_tag(generation: int) -> str:
    """What names the statistics files the tasks of ``generation`` write (the manifest's: one more each time an
    unfinished run is resumed after a repair, :func:`_read_again`), after their unit, dates and update: nothing for
    the first, so that an extraction never resumed so is named as before."""
    return f"-g{generation:08d}" if generation else ""


def generation_of(manifest: Mapping[str, Any]) -> int:
    """The generation of the files the tasks of the run whose manifest is ``manifest`` write (0: before any
    resumption after a repair, or an extraction of a cardcube from before generations)."""
    return int(manifest.get("generation", 0))


def mosaic_key(batch: int, run: str, version: int, generation: int = 0) -> str:
    """The file of the ``batch``-th batch of parcels read across tiles, of the cube's ``version``: an update, which
    reads their whole season again, writes it beside the earlier version's (which it supersedes:
    :func:`superseded`), so that a task of a stopped run writing an earlier version's file late never replaces a
    later version's; a run resumed after a repair, under its new ``generation`` (:func:`generation_tag`), for the
    same reason."""
    return MOSAIC + statistics_name(f"part-{batch:05d}-v{version:08d}{generation_tag(generation)}", run)


_MOSAIC_NAME = re.compile(r"part-(\d+)(?:-v(\d+))?(?:-g(\d+))?(?:-|\.parquet$)")


def mosaic_batch(key: str) -> tuple[int, int, int] | None:
    """The batch number of a file of parcels read across tiles, the version in its name (0: none, a file of a
    cardcube from before 2026-12-05) and its generation (:func:`generation_tag`; 0: none); None for a name of no
    batch (``part.parquet``, the whole mosaic in one file, of a cardcube from before 2026-12-04)."""
    found = _MOSAIC_NAME.match(key.rsplit("/", 1)[-1])
    return None if found is None else (int(found[1]), int(found[2] or 0), int(found[3] or 0))


def superseded(keys: Iterable[str]) -> set[str]:
    """The statistics files in ``keys`` that a later file of the same name replaces, so that none of their rows is
    read: of a batch read across tiles, a file named by a later version or generation (:func:`_later_batches`); of a
    unit, a file written again by a run resumed after a repair, or anew by an update without the rows of dates a
    repair wrote anew (:func:`_written_anew`). Both are a stopped run's task writing an earlier file late, or a file
    a killed run had still to delete."""
    keys = list(keys)
    return _later_batches(keys) | _written_anew(keys)


def _later_batches(keys: Iterable[str]) -> set[str]:
    """The files of batches read across tiles in ``keys`` that a file of the same batch named by a later version (of
    the same version, a later generation) replaces (a stopped run's late write of an earlier one, while a run is
    unfinished: a finished one lists its files in the manifest, :func:`extraction_keys`); beside the whole mosaic of
    a cardcube before batches (``part.parquet``), every batch's file, until a run ends and deletes it."""
    named = [(k, mosaic_batch(k)) for k in keys if k.startswith(MOSAIC)]
    if whole := {k for k, batch in named if batch is None}:  # part.parquet: the rows of every batch, until a run
        return {k for k, _ in named} - whole  # of this cardcube ends (and deletes it): its files, beside, repeat them
    return _outranked((k, batch[0], batch[1:]) for k, batch in named if batch is not None)


def _written_anew(keys: Iterable[str]) -> set[str]:
    """The statistics files of units in ``keys`` that the same file of a later generation (written again by a run
    resumed after a repair: :func:`generation_tag`) or written anew by a later update (:func:`rewritten_key`)
    replaces: the earlier one a killed run had still to delete, or a stopped run's task writing it late, its rows of
    the dates read again or dropped back. An update's file outranks every generation of files not written anew by
    it, then generations rank: an update's driver writes anew the latest file of a run that had finished, so a file
    of a later generation without it is a task's, late (of an attempt stopped before that run's end), and must not
    bring back the rows the update dropped."""
    return _outranked((k, name, (update, generation)) for k in keys if not k.startswith(MOSAIC)
                      for name, generation, update in [written_as(k)])


def _outranked(ranked: Iterable[tuple[str, Hashable, tuple[int, ...]]]) -> set[str]:
    """Of ``ranked`` files (key, the file it is a version of, the version's rank), those a version of the same file
    of a greater rank replaces (of equal ranks, the first listed stays)."""
    latest: dict[Hashable, tuple[tuple[int, ...], str]] = {}
    keys = set()
    for key, name, rank in ranked:
        keys.add(key)
        if name not in latest or rank > latest[name][0]:
            latest[name] = (rank, key)
    return keys - {key for _, key in latest.values()}


_ANEW = re.compile(r"-w(\d{8})(?=(?:-[^-/]+)?\.parquet$)")  # before the run's name, if any, and .parquet
_GENERATION = re.compile(r"-g(\d{8})(?=(?:-w\d{8})?(?:-[^-/]+)?\.parquet$)")  # ... and before -w<update>, if any
_VERSIONED = re.compile(r"-v\d{8}(?=(?:-[^-/]+)?\.parquet$)")  # an update's file (written_as's name)


def first_key(key: str) -> tuple[str, int]:
    """The name statistics file ``key`` was first written under, by a task, and the version of the update that wrote
    it anew (:func:`rewritten_key`; 0: none)."""
    found = _ANEW.search(key)
    return (key, 0) if found is None else (key[:found.start()] + key[found.end():], int(found[1]))


def written_as(key: str) -> tuple[str, int, int]:
    """The name of the unit's file that statistics file ``key`` is, as its tasks name it in every generation (without
    generation or update: the name a resumption finds done), the generation of the tasks that wrote it
    (:func:`generation_tag`) and the version of the update that wrote it anew (:func:`rewritten_key`); 0: none."""
    first, update = first_key(key)
    found = _GENERATION.search(first)
    if found is None:
        return first, 0, update
    return first[:found.start()] + first[found.end():], int(found[1]), update


def rewritten_key(key: str, version: int, run: str) -> str:
    """The name of the statistics file ``key`` (of run ``run``) written anew by the update to ``version``, without
    the rows of dates a repair wrote anew (:func:`drop_replaced`): its first name and the version. Only an update's
    driver writes such a name, never a task, so that a stopped run's task writing the first name late, after the
    update, writes a file the update's supersedes (:func:`_written_anew`) instead of putting those rows back."""
    first = first_key(key)[0]
    return first[:len(first) - len(statistics_name("", run))] + statistics_name(f"-w{version:08d}", run)


# Times in microseconds: Spark reads no Parquet TIMESTAMP(NANOS), and acquisition times are whole seconds.
PORTABLE_PARQUET: dict[str, Any] = {"coerce_timestamps": "us"}
# Dictionary-encode the repeated strings and the columns of few distinct values (dates, pixel counts, the
# version), not the statistics, whose values are mostly distinct (but a Sentinel-2 extraction's order statistics:
# timeseries_parquet); keep min/max statistics on the columns readers filter on (parcel, time, band): 3x faster to
# write than pandas' defaults, and smaller with zstd (the few-valued columns dictionary-encoded: 0.89x the write time
# of the strings alone, files 6 % smaller). No Arrow schema stored: a unit's text columns come as Arrow dictionaries
# (cube.parcel_stats.stats_table(encoded=True): written as they are, not hashed row by row, 2026-12-06), which
# it would give readers back as such (pandas categoricals); the Parquet types alone read back as plain text, and
# every other column as the table's type.
TIMESERIES_PARQUET: dict[str, Any] = {
    "compression": "zstd", "compression_level": 1,
    "use_dictionary": ["parcel_id", "band", "platform", "orbit_state", "time", "count", "masked", "relative_orbit",
                       "scene_id", "cube_version"],
    "write_statistics": ["parcel_id", "time", "band"], "store_schema": False, **PORTABLE_PARQUET,
}


def timeseries_parquet(spec: CubeSpec, bands: Sequence[str], stats: Sequence[str]) -> dict[str, Any]:
    """:data:`TIMESERIES_PARQUET` for the rows of ``bands`` and ``stats`` of a cube of ``spec``: where every band is
    stored as small unsigned integers (Sentinel-2's reflectances, no index), a block's min, max and percentiles take
    a few thousand values (the integers scaled) in tens of thousands of rows, and are dictionary-encoded too: on
    benchmarks/extraction.py's 10 km territory (2026-12-06) 0.93x the write time, files 22 % smaller. Not otherwise:
    Sentinel-1's float dB values are mostly distinct (1.3x the time, files 10 % larger). A unit's files, and those
    an update writes anew without a repaired date's rows (:func:`drop_replaced`)."""
    if not all(b in spec.band_names and small_uint(np.dtype(spec.band(b).dtype)) for b in bands):
        return TIMESERIES_PARQUET
    encoded = [*TIMESERIES_PARQUET["use_dictionary"], *(s for s in stats if s not in ("mean", "std"))]
    return {**TIMESERIES_PARQUET, "use_dictionary": list(dict.fromkeys(encoded))}


def _differs(key: str, old: Any, new: Any) -> bool:
    """Whether a parameter of a run differs from the earlier run's: bands in another order, the SCL classes of a
    cloud mask in another order, or a time range written another way (``2024-05`` and ``2024-05-01/2024-05-31``),
    are the same."""
    if key == "bands" and isinstance(old, list) and isinstance(new, list):
        return sorted(old) != sorted(new)
    if key == "mask" and isinstance(old, list) and isinstance(new, list):
        return set(old) != set(new)
    if key == "time" and isinstance(old, str) and isinstance(new, str):
        try:
            return parse_time_range(old) != parse_time_range(new)
        except InvalidRequestError:
            return old != new
    return old != new


PARTIAL = ".partial"  # zarr's local store writes <name>.<uuid>.partial, then renames it: a kill leaves it behind


def is_partial(key: str) -> bool:
    """Whether ``key`` is a file a killed write left half done (never one of an extraction's)."""
    return key.endswith(PARTIAL)


def run_keys(store: Store, run: str) -> list[str]:
    """Every statistics file of run ``run`` in ``store``: its Parquet files under ``timeseries/``, not a write's
    leftover (read as one more file, it repeated rows or failed the read), nor a file of another run (a stopped
    one's late write: other parameters, maybe)."""
    return [k for k in list_keys(store, f"{TIMESERIES}/") if k.endswith(f"-{run}.parquet" if run else ".parquet")]


def extraction_keys(store: Store, manifest: Mapping[str, Any]) -> list[str]:
    """The statistics files of the extraction whose manifest is ``manifest``: :func:`statistics_keys`, but where the
    extraction is finished and lists the files of its parcels read across tiles (``mosaics``), only the listed ones
    of those: a stopped run's file landing late beside them, of an earlier version, is none of its rows (one
    listing)."""
    keys = run_keys(store, run_of(manifest))
    if manifest.get("complete") and "mosaics" in manifest:
        listed = set(manifest["mosaics"])
        keys = [k for k in keys if not k.startswith(MOSAIC) or k in listed]
    return _latest(keys, manifest)


def statistics_keys(store: Store, manifest: Mapping[str, Any]) -> list[str]:
    """The statistics files of the extraction in ``store`` whose manifest is ``manifest``: :func:`run_keys` of its
    run but those a later file of the same batch or unit supersedes (:func:`superseded`), or that a resumption after
    a repair left aside (:func:`read_before_repair`): a stopped run's late write of an earlier one."""
    return _latest(run_keys(store, run_of(manifest)), manifest)


def _latest(keys: list[str], manifest: Mapping[str, Any]) -> list[str]:
    """``keys`` but those :func:`superseded` or :func:`read_before_repair` names."""
    old = superseded(keys) | read_before_repair(keys, manifest)
    return [k for k in keys if k not in old]


def _tile_of(key: str) -> str:
    """The tile whose partition statistics file ``key`` is in (``mosaic``: parcels read across tiles)."""
    return key.split("tile=", 1)[1].split("/", 1)[0]


def _earlier(key: str, again: Mapping[str, Any], run: str) -> bool:
    """Whether statistics file ``key`` is one the run resumed after a repair (``again``: a record of the manifest's
    ``read_again``, :func:`_read_again`) wrote in an earlier generation, on a tile of the dates it reads again (of
    parcels read across tiles: any): its first run's files, or an update's own (of its version)."""
    if key.startswith(MOSAIC):
        batch = mosaic_batch(key) or (0, 0, 0)
        return batch[2] < again["generation"] and (batch[1] == again["version"] if again["update"] else
                                                    batch[1] <= again["version"])
    name, generation, _ = written_as(key)
    if generation >= again["generation"] or _tile_of(key) not in again["scenes"]:
        return False
    return name.endswith(update_suffix(again["version"], run)) if again["update"] else not _VERSIONED.search(name)


def read_before_repair(keys: Iterable[str], manifest: Mapping[str, Any]) -> set[str]:
    """The statistics files in ``keys`` that a run resumed after a repair deleted, of an earlier generation
    (:func:`_read_again`), found by their names: a task of the attempt before the repair writing one late (a dask
    worker that kept going after its driver was stopped) would bring the repaired dates' damaged rows back, or its
    file (its dates' runs differing) repeat rows. Those of its parcels read across tiles (all of them), and of an
    update, its own files on the tiles of those dates. A first run deleted only the files holding those dates:
    :func:`held_before_repair` finds them by their contents."""
    run, again = run_of(manifest), manifest.get("read_again", ())
    return {k for k in keys for record in again
            if (k.startswith(MOSAIC) or record["update"]) and _earlier(k, record, run)}


def held_before_repair(store: Store, keys: Sequence[str], manifest: Mapping[str, Any],
                       version: CubeVersion) -> set[str]:
    """Those of ``keys`` (statistics files) of the first run of the extraction whose manifest is ``manifest``
    (``version``: the one it reads, or a later one) that it wrote before a repair it was resumed after, holding the
    dates it reads again: each resumption deleted those it found (:func:`_read_again`), and a task of the attempt
    before writing one late, or still running then, writes the damaged rows under a name its resumption would take
    for done. Only the footers of the files of earlier generations on those dates' tiles are read, and the files
    whose footers say they may hold them (:func:`_files_holding`)."""
    run, held = run_of(manifest), set()
    for record in manifest.get("read_again", ()):
        if record["update"] or record["version"] != manifest["version"] or "update" in manifest:
            continue  # an update's files, read again by their tiles; or an earlier run's, no more written by tasks
        earlier = [k for k in keys if not k.startswith(MOSAIC) and _earlier(k, record, run)]
        for tile, ids in sorted(record["scenes"].items()):
            held.update(key for key, _, _ in _files_holding(store, _tile_keys(earlier, tile),
                                                             _times(version, tile, ids)))
    return held


def run_of(manifest: Mapping[str, Any]) -> str:
    """The run an extraction's manifest names ("" for one from before runs were named)."""
    return manifest.get("run", "")


def _manifest(store: Store) -> dict[str, Any] | None:
    """The manifest of the extraction in ``store``, None if it holds none; a clear error for a ``manifest.json`` of
    no extraction (another tool's, in a folder given as --out), which is neither compared with nor written over."""
    doc = read_json(store, MANIFEST)
    if doc is not None and not (isinstance(doc, dict) and {"cube", "version"} <= doc.keys()):
        raise InvalidRequestError(f"{store_url(store)} holds a {MANIFEST} of no extraction (of cardcube extract's): "
                                  f"give the --out of an extraction, or extract into a new or empty --out")
    return doc


def check_manifest(out: Store, manifest: dict[str, Any], version: CubeVersion, *, time: Any, update: bool,
                   cube: Store, head: CubeVersion | None = None) -> dict[str, list[str]] | None:
    """Refuse to mix two extractions in one output: same cube and parameters, and the same version unless
    ``update``. Returns, per tile, the scenes (within ``time``) an update or its resumption reads: those new since
    the extraction's version, and those a repair has written anew since it read them (the manifest's
    ``update.replaced``, whose earlier rows :func:`drop_replaced` drops); None for a whole run. An unfinished run
    resumed forgets its files holding dates a repair has written anew since it began (:func:`_read_again`), so that
    it reads them again. ``cube`` is looked up only to say whether an unfinished run's version can still be resumed;
    ``head``: the cube's latest version (default ``version``), whose records say which cold dates a repair has
    mended in place since (every version reads them so: :func:`scene_reads`)."""
    head = version if head is None else head
    old = _manifest(out)
    if old is None:
        others = [name for name in list_children(out, "") if not is_partial(name)]
        if MANIFEST in others:  # another run started into out between the read and the listing: compared with it
            old = _manifest(out)
        elif "" in others:  # S3 lists an object named as the prefix as "" under it
            raise InvalidRequestError(f"{store_url(out)} is an object, not a prefix: give --out a new or empty "
                                      "prefix (a folder)")
        elif others:  # parcels.parquet would overwrite a parcel file of the same name
            listed = listed_names(others, most=4)
            raise InvalidRequestError(f"{store_url(out)} holds {listed} but no extraction ({MANIFEST}): extract into "
                                      f"a new or empty --out, so that nothing of yours is overwritten")
    if old is None:
        try:
            reads = scene_reads(version, head, [a.scene_id for state in version.tiles.values()
                                                for a in tile_dates(state, time)])
            write_json(out, MANIFEST, {**manifest, "complete": False, "reads": reads}, create_only=True)
            return None
        except CommitConflictError:  # another run started into out a moment ago: compared with it below
            old = read_json(out, MANIFEST)
    where = _where(out, old)
    _refuse_other_parameters(old, manifest, where)
    _refuse_another_cube(old, version, cube, where, url=manifest["cube"])
    if old.get("cube") != manifest["cube"]:  # the same cube, moved or reached by another URL: recorded where it is
        old = {**old, "cube": manifest["cube"]}
        write_json(out, MANIFEST, old)
    if old["version"] == version.version:  # a re-run: resume what is missing (nothing after an update)
        if stale := _stale(old, version, head, time):
            if old.get("complete"):
                raise InvalidRequestError(f"{where}; {_repaired(stale, head)}: update it to the latest version "
                                          "(--update, without --as-of), which reads them again, or extract into a new "
                                          "--out")
            old = _read_again(out, old, version, head, stale, time)
        if "update" in old:
            return old["update"]["scenes"]
        if not old.get("complete") and old.get("tile_rule") != manifest.get("tile_rule"):
            raise InvalidRequestError(f"{where}, unfinished, by a cardcube that read some parcels from other tiles "
                                      f"(those of tile overlaps): resumed, their rows would be repeated; write to a "
                                      f"new --out")
        return {t: [] for t in version.tiles} if old.get("updated_from") else None
    if not old.get("complete"):
        if old["version"] not in committed_versions(cube, version.collection):
            raise InvalidRequestError(f"{where}, unfinished, and that version has been expired since (cardcube "
                                      f"expire): it cannot be resumed; write to a new --out")
        raise InvalidRequestError(f"{where}, unfinished: resume it with as_of={old['version']} (--as-of "
                                  f"{old['version']}), or write to a new --out"
                                  f"{' (an update starts from a complete extraction)' if update else ''}")
    if not update:
        raise InvalidRequestError(f"{where}; pass update=True (--update) to add the dates of version "
                                  f"{version.version} to it, or write to a new --out")
    if old["version"] > version.version:
        raise InvalidRequestError(f"{where}, newer than version {version.version}: an update only goes forward")
    if "scenes" not in old:
        raise InvalidRequestError(f"{where}, from before updates: an update starts from an extraction that lists "
                                  f"the scenes it read; write to a new --out")
    gained = sorted(set(version.tiles) - set(old["scenes"]))
    if gained:
        raise InvalidRequestError(f"{where}; the cube has gained tile(s) {', '.join(gained)} since, so parcels may "
                                  f"be read from other tiles now: extract into a new --out")
    # committed dates never go: a scene read then and missing now is another cube's (made anew where its version of
    # the extraction's number has expired, so that _refuse_another_cube had no commit time to compare)
    held = {tile: {a.scene_id for a in tile_dates(state, time)} for tile, state in version.tiles.items()}
    gone = [s for tile, ids in sorted(old["scenes"].items()) for s in ids if s not in held.get(tile, ())]
    if gone:
        raise InvalidRequestError(f"{where}; the cube there no longer holds {len(gone)} scene(s) it read, e.g. "
                                  f"{gone[0]}: another cube at the same location (made anew?), whose rows must not "
                                  f"be mixed with these; write to a new --out")
    # a repair writes a date anew (a new version on its record): the rows read before may hold a damaged shard's
    # values, so its dates are read again, their earlier rows dropped (:func:`drop_replaced`) before the new ones land
    stale = _stale(old, version, head, time)
    again = {s for ids in stale.values() for s in ids}
    new = {tile: [a.scene_id for a in tile_dates(state, time)
                  if a.scene_id not in set(old["scenes"][tile]) or a.scene_id in again]
           for tile, state in version.tiles.items()}
    reads = {**_reads(old, version, time), **scene_reads(version, head, [s for ids in new.values() for s in ids])}
    units = {"units": manifest["units"]} if "units" in manifest else {}  # an extraction from before kept none
    write_json(out, MANIFEST, {**old, **units, "version": version.version, "committed": version.created,
                               "complete": False, "reads": reads,
                               "update": {"from": old["version"], "scenes": new, "replaced": stale}})
    return new


READ_AGAIN = "extract-rows-replaced"  # the checkpoint after each file an update's repaired dates are dropped from
WRITTEN_ANEW = "extract-rows-written-anew"  # ... between that file written anew and its earlier name deleted


def scene_reads(version: CubeVersion, head: CubeVersion, scenes: Iterable[str]) -> dict[str, int]:
    """Per scene of ``scenes`` in ``version``, the version that wrote the pixels a read of ``version`` gets now (the
    manifest's ``reads``, kept per scene: an update or a resumption compares them with :func:`_stale`). A date in a
    hot slot of ``version`` is read from that slot: its record in ``version`` (a repair since writes the date into
    a new slot, which ``version`` does not read). A date in a cold block is read where a repair mends it, in place,
    for every version alike: its record in ``head``, the latest version (so an extraction ``as_of`` an earlier
    version, made after a mend, read the mended values). A scene without a record (none: 0) was never rewritten."""
    cold = {a.scene_id for state in version.tiles.values() for a in state.cold}
    reads = {}
    for scene in scenes:
        record = (head if scene in cold and scene in head.scenes else version).scenes.get(scene)
        reads[scene] = 0 if record is None else record.version
    return reads


def _reads(old: Mapping[str, Any], version: CubeVersion, time: Any) -> dict[str, int]:
    """What the rows of the extraction whose manifest is ``old`` read of each scene (:func:`scene_reads`); for a
    manifest from before they were kept, the extraction's version for each scene it read (the scenes it lists and
    its update adds; unfinished, every scene of ``version`` within ``time``): every repair up to it is in them."""
    if "reads" in old:
        return {s: int(v) for s, v in old["reads"].items()}
    if "scenes" in old:
        ids = [s for ids in [*old["scenes"].values(), *old.get("update", {}).get("scenes", {}).values()] for s in ids]
    else:
        ids = [a.scene_id for state in version.tiles.values() for a in tile_dates(state, time)]
    return dict.fromkeys(ids, old["version"])


def _stale(old: Mapping[str, Any], version: CubeVersion, head: CubeVersion, time: Any) -> dict[str, list[str]]:
    """Per tile of ``version``, the scenes (within ``time``) whose rows the extraction ``old`` holds were read from
    other pixels than a read of ``version`` gets now: a repair has written them anew since (``ingest --repair``: a
    damaged shard may have decoded, to other values)."""
    reads = _reads(old, version, time)
    now = scene_reads(version, head, reads)
    stale = {tile: [a.scene_id for a in tile_dates(state, time)
                    if a.scene_id in now and now[a.scene_id] > reads[a.scene_id]]
             for tile, state in sorted(version.tiles.items())}
    return {tile: ids for tile, ids in stale.items() if ids}


def _repaired(stale: Mapping[str, Sequence[str]], head: CubeVersion) -> str:
    """What :func:`_stale` found, for a message."""
    first = min((head.scenes[s].version if s in head.scenes else 0, s) for ids in stale.values() for s in ids)
    return (f"{sum(map(len, stale.values()))} scene(s) it read were written anew by `cardcube ingest --repair` since "
            f"(e.g. {first[1]}, in version {first[0]})")


def version_tag(version: int) -> str:
    """What names the statistics files an update to ``version`` writes, after their unit and dates."""
    return f"-v{version:08d}"


def update_suffix(version: int, run: str) -> str:
    """How the statistics files an update to ``version`` writes end (:func:`statistics_name`)."""
    return statistics_name(version_tag(version), run)


def _tile_keys(keys: Iterable[str], tile: str) -> list[str]:
    """Those of ``keys`` (statistics files) in ``tile``'s partition."""
    return [k for k in keys if k.startswith(f"{TIMESERIES}/tile={tile}/")]


def _times(version: CubeVersion, tile: str, scenes: Iterable[str]) -> pa.Array:
    """The acquisition times of ``scenes`` on ``tile``, as the statistics files store them."""
    wanted = set(scenes)
    return pa.array([a.datetime64 for a in version.tiles[tile].acquisitions if a.scene_id in wanted],
                    pa.timestamp("ns"))


FOOTER_BYTES = 1 << 16  # a statistics file's tail read for its footer (a few kB: its schema and row groups)


def _may_hold(out: Store, keys: Sequence[str], times: pa.Array) -> list[str]:
    """Those of ``keys`` (statistics files) that may hold rows of ``times``: each file's footer is read (its tail,
    all at once) and a file whose ``time`` column's range in every row group misses them all is left out, unread;
    a file whose footer tells nothing is kept. A repaired date is in one time run of a tile: its other files were
    read whole for nothing (on S3, a GET of megabytes each, one after another)."""
    wanted = times.to_numpy(zero_copy_only=False).astype("datetime64[ns]")
    kept = []
    for key, tail in zip(keys, read_tails(out, keys, FOOTER_BYTES), strict=True):
        spans = _time_spans(tail)
        if spans is None or any(((lo <= wanted) & (wanted <= hi)).any() for lo, hi in spans):
            kept.append(key)
    return kept


def _time_spans(tail: bytes | None) -> list[tuple[np.datetime64, np.datetime64]] | None:
    """The least and greatest ``time`` of each row group of the Parquet file whose last bytes are ``tail`` (naive
    UTC, as the files store it), from its footer (none for a file of no row); None where the tail does not hold the
    footer whole, or the footer keeps no such statistics."""
    if tail is None or len(tail) < 8 or tail[-4:] != b"PAR1":
        return None
    size = int.from_bytes(tail[-8:-4], "little")
    if size + 8 > len(tail):
        return None
    try:
        meta = pq.read_metadata(pa.BufferReader(tail[-(size + 8):]))
        column = meta.schema.names.index("time")
    except (pa.ArrowException, ValueError):
        return None
    if meta.num_rows == 0:  # a file written anew without any row (drop_replaced): no time, whatever its groups say
        return []
    spans = []
    for group in range(meta.num_row_groups):
        stats = meta.row_group(group).column(column).statistics
        if stats is None or not stats.has_min_max:
            return None
        spans.append((_naive(stats.min), _naive(stats.max)))
    return spans


def _naive(value: Any) -> np.datetime64:
    """A footer's time statistic as naive UTC nanoseconds."""
    t = pd.Timestamp(value)
    return np.datetime64((t.tz_convert(None) if t.tzinfo else t).to_datetime64(), "ns")


def _files_holding(out: Store, keys: Sequence[str], times: pa.Array) -> Iterator[tuple[str, pa.Table, pa.Array]]:
    """Each of ``keys`` (statistics files) that holds rows of ``times``, read (those whose footers rule them out are
    not: :func:`_may_hold`), with its table and which of its rows are of ``times``."""
    for key in _may_hold(out, keys, times):
        data = read_bytes(out, key)
        if data is None:
            continue
        table = pq.read_table(io.BytesIO(data))
        kind = pa.timestamp("ns", table.schema.field("time").type.tz)  # lossless, whatever unit the file has
        holding = pc.is_in(table["time"].cast(kind), value_set=times.cast(kind))
        if pc.any(holding).as_py():
            yield key, table, holding


def _read_again(out: Store, old: dict[str, Any], version: CubeVersion, head: CubeVersion,
                stale: Mapping[str, Sequence[str]], time: Any) -> dict[str, Any]:
    """Make the unfinished run of ``old`` read the ``stale`` dates again (:func:`_stale`: a repair wrote them anew
    since it began): delete its files that hold them (a whole run's; an update's, every one of their tiles: the dates
    it reads there change) and of parcels read across tiles, which the resumption writes again; then record them in
    the manifest (an update's: read again, its earlier runs' rows of them dropped) with a new ``generation``, which
    names the files the resumption's tasks write (:func:`generation_tag`), and in ``read_again``: a task of the
    attempt before writing its file late is left aside (:func:`read_before_repair`, :func:`held_before_repair`,
    :func:`superseded`). Files first: a run killed between finds the dates stale again, and deletes the rest."""
    run, update = run_of(old), old.get("update")
    listed = run_keys(out, run)
    mine = [k for k in listed if not k.startswith(MOSAIC)]
    if update is not None:
        mine = [k for k in mine if written_as(k)[0].endswith(update_suffix(version.version, run))]
    gone = [k for k in listed if k.startswith(MOSAIC)  # an update's: those of its version
            and (update is None or (mosaic_batch(k) or (0, 0))[1] == version.version)]
    for tile, ids in stale.items():
        keys = _tile_keys(mine, tile)
        if update is None:
            keys = [key for key, _, _ in _files_holding(out, keys, _times(version, tile, ids))]
        gone += keys
    for key in gone:
        delete_key(out, key)
    generation = generation_of(old) + 1  # the resumption's tasks write names of their own (generation_tag)
    doc = {**old, "reads": {**_reads(old, version, time),
                            **scene_reads(version, head, [s for ids in stale.values() for s in ids])},
           "generation": generation,
           "read_again": [*old.get("read_again", ()), {"generation": generation, "version": version.version,
                                                       "update": update is not None,
                                                       "scenes": {t: list(ids) for t, ids in sorted(stale.items())}}]}
    if update is not None:
        again = {s for ids in stale.values() for s in ids}
        adds = {tile: [a.scene_id for a in tile_dates(state, time)
                       if a.scene_id in again or a.scene_id in set(update["scenes"].get(tile, ()))]
                for tile, state in version.tiles.items()}
        # the earlier runs' rows to drop: of the dates they read (``scenes``), not of those new in the update
        drop = {tile: (again & set(old["scenes"].get(tile, ()))) | set(update.get("replaced", {}).get(tile, ()))
                for tile in version.tiles}
        replaced = {tile: [a.scene_id for a in tile_dates(state, time) if a.scene_id in drop[tile]]
                    for tile, state in version.tiles.items()}
        doc["update"] = {**update, "scenes": adds, "replaced": {t: ids for t, ids in replaced.items() if ids}}
    write_json(out, MANIFEST, doc)
    return doc


def drop_replaced(out: Store, manifest: Mapping[str, Any], version: CubeVersion) -> int:
    """Drop from the statistics files of the runs before an update (``manifest``'s, unfinished) the rows of the dates
    it reads again (``update.replaced``: a repair wrote them anew), so that the update's rows of them are their only
    ones: each file holding some is written anew without them, whole, at once, under a name of the update's
    version (:func:`rewritten_key`; left with none, a file of no row), then its earlier name deleted. A stopped
    run's task writing the earlier name late puts no row back: the readers take the file written anew
    (:func:`superseded`). Killed between the two, the extraction reads as after; a file already written anew
    holds none of the dates, so an update killed meanwhile drops the rest when resumed. The files of parcels read
    across tiles are read again whole by the update. Returns how many files it changed."""
    replaced = (manifest.get("update") or {}).get("replaced") or {}
    if not replaced:
        return 0
    run = run_of(manifest)
    earlier = [k for k in statistics_keys(out, manifest)
               if not k.startswith(MOSAIC) and not written_as(k)[0].endswith(update_suffix(manifest["version"], run))]
    changed, options = 0, timeseries_parquet(version.spec, manifest.get("bands", ()), manifest.get("stats", ()))
    for tile, ids in sorted(replaced.items()):
        for key, table, drop in _files_holding(out, _tile_keys(earlier, tile), _times(version, tile, ids)):
            anew = rewritten_key(key, manifest["version"], run)
            write_bytes(out, anew, parquet_bytes(table.filter(pc.invert(drop)), **options))
            checkpoint(WRITTEN_ANEW)
            if anew != key:  # the same name: written anew again by this update, resumed after another repair
                delete_key(out, key)
            changed += 1
            checkpoint(READ_AGAIN)
    return changed


def refuse_other_parameters(out: Store, manifest: dict[str, Any]) -> None:
    """Refuse a run with other parameters than the extraction in ``out`` (if any) was made with, before anything
    else is compared with it (an update's parcels and tiles): what :func:`check_manifest` checks first."""
    old = _manifest(out)
    if old is not None:
        _refuse_other_parameters(old, manifest, _where(out, old))


def _where(out: Store, old: dict[str, Any]) -> str:
    return f"{store_url(out)} holds an extraction of version {old.get('version')} of {old.get('cube')}"


def _refuse_other_parameters(old: dict[str, Any], manifest: dict[str, Any], where: str) -> None:
    mismatched = [k for k in manifest if k not in ("cube", "version", "committed", "tile_rule", "pixel_rule", "run",
                                                   "units", "time_columns")
                  and _differs(k, old.get(k), manifest[k])]  # the rules: see check_manifest and below
    if mismatched:
        shown = [k for k in mismatched if k != "parcels"]
        options = " ".join(_as_option(k, old.get(k)) for k in shown)
        then = ", ".join(f"{k}={old.get(k)!r}" for k in shown)
        raise InvalidRequestError(f"{where} with other {', '.join(mismatched)}; write to a new --out"
                                  + (f", or run it as that run was: {options} (Python: {then})" if shown else ""))
    if old.get("pixel_rule", 1) != manifest.get("pixel_rule", 1):  # 1: before extractions recorded it
        raise InvalidRequestError(f"{where} by a cardcube whose pixel rule differs (rule {old.get('pixel_rule', 1)}, "
                                  f"now {manifest.get('pixel_rule')}: a pixel centre on a parcel's buffered outline "
                                  "was the parcel's on some sides only), so a parcel's earlier rows and this run's "
                                  "could count other pixels; write to a new --out")


def _as_option(key: str, value: Any) -> str:
    """A parameter of an earlier run as ``cardcube extract``'s option that gives it (``bands=['B04', 'B08']``:
    ``--bands B04,B08``); as a Python argument where the command has no such option (a histogram)."""
    flag = f"--{key.replace('_', '-')}"
    if key == "time" and isinstance(value, str) and value.startswith(("(", "[", "slice(")):  # given in Python
        return f"time={value}"
    if key in ("bands", "stats", "mask") and isinstance(value, list) and value:  # --mask takes no empty list
        return f"{flag} {','.join(map(str, value))}"
    if key in ("all_touched", "time", "block", "time_block", "buffer"):
        if value is None or value is False:
            return f"(no {flag})"
        return flag if value is True else f"{flag} {value:g}" if isinstance(value, float) else f"{flag} {value}"
    if key == "mask" and value is None:
        return "--no-mask"
    return f"{key}={value!r}"


def _refuse_another_cube(old: dict[str, Any], version: CubeVersion, cube: Store, where: str, *, url: str) -> None:
    """Refuse an output read from another cube: at the same location (deleted and ingested anew: its version numbers
    start again), the commit time of the version it was read from is not that version's now. A cube at another
    location (``url``) is the same cube, moved, copied or reached by another URL, only where that commit time says
    so; a demo folder moved whole is extracted into again."""
    then = old.get("committed")
    moved = old.get("cube") != url
    if moved and (not then or not isinstance(old.get("version"), int)):
        raise InvalidRequestError(f"{where}, not {url}: the extraction records no commit time to tell the same cube "
                                  f"at another location; give that cube (--cube), or write to a new --out")
    if not then or not isinstance(old.get("version"), int):
        return  # an extraction from before the commit time was kept
    if old["version"] == version.version:
        now = version.created
    else:
        try:
            now = read_version(cube, version.collection, old["version"]).created
        except VersionNotFoundError:  # expired, or never committed there: nothing to compare
            latest = max(committed_versions(cube, version.collection), default=0)
            if old["version"] > latest and not moved:  # the cube there now numbers its versions anew
                raise InvalidRequestError(f"{where}; the cube there now never held version {old['version']} (its "
                                          f"latest is {latest}): another cube at the same location (made anew?), "
                                          f"whose rows must not be mixed with these; write to a new --out") from None
            if moved:  # a copy made before that version never had it
                gone = (f"no longer holds version {old['version']} (expired)" if old["version"] < latest else
                        f"never held version {old['version']} (its latest is {latest}: a copy made before it?)")
                raise InvalidRequestError(f"{where}, not {url}, which {gone}: it cannot be told to be the same cube; "
                                          "give that cube (--cube), or write to a new --out") from None
            return  # expired there (an update checks the scenes it read)
    if now != then:
        there = f"the cube at {url}" if moved else "the cube there now"
        raise InvalidRequestError(f"{where}, committed at {then}; {there} has a version {old['version']} committed "
                                  f"at {now}: another cube{'' if moved else ' at the same location (made anew?)'}, "
                                  f"whose rows must not be mixed with these; write to a new --out")


def check_still_of(out: Store, version: CubeVersion) -> None:
    """:class:`InvalidRequestError` if the extraction in ``out`` is no more of ``version``: an ``--update`` into
    it, started while this run went on, finished first, and this run's status table and manifest would put the
    earlier version's back over it."""
    now = read_json(out, MANIFEST) or {}
    if now.get("version") != version.version:
        raise InvalidRequestError(f"{_where(out, now)}: another run (an --update) made it so while this run of "
                                  f"version {version.version} went on; this run's status table and manifest are "
                                  f"not written over it (its files stay: rows of version {version.version})")


def finish_manifest(out: Store, version: CubeVersion, *, time: Any, status: Mapping[str, int],
                    mosaics: Sequence[str] = ()) -> None:
    """Mark the run complete: its parcels' ``status`` counts, the scenes of ``version`` (within ``time``) read per
    tile, which the next update starts from, the versions updated from, and the files of its parcels read across
    tiles (``mosaics``: :func:`extraction_keys`)."""
    old = read_json(out, MANIFEST)
    scenes = {tile: [a.scene_id for a in tile_dates(state, time)] for tile, state in sorted(version.tiles.items())}
    history = old.get("updated_from", []) + ([old["update"]["from"]] if "update" in old else [])
    write_json(out, MANIFEST, {**{k: v for k, v in old.items() if k != "update"}, "complete": True,
                               "status": dict(status), "scenes": scenes, "updated_from": history,
                               "mosaics": sorted(mosaics),
                               "software": f"cardcube {__version__}",
                               "finished": datetime.now(UTC).isoformat(timespec="seconds")})


def _ids(gdf: gpd.GeoDataFrame, id_column: str) -> list[Any]:
    raw = gdf[id_column].tolist() if id_column in gdf.columns else gdf.index.tolist()
    return uniform_ids([i.item() if isinstance(i, np.generic) else i for i in raw])  # as_parcels' ids


def mosaic_status(out: Store, key: str, version: int | None = None) -> list[dict[str, Any]] | None:
    """The status of the parcels of a batch read across tiles, from the metadata of an earlier run's file ``key``
    (read whole: a fraction of the cube bytes reading those parcels again would take), or None if it does not
    hold it, or (``version`` given) holds it for another cube version."""
    data = read_bytes(out, key)
    try:
        meta = None if data is None else pq.read_schema(io.BytesIO(data)).metadata
    except pa.ArrowInvalid:
        return None
    attrs = json.loads((meta or {}).get(b"PANDAS_ATTRS", b"{}"))
    return attrs.get("parcel_status") if version in (None, attrs.get("cube_version")) else None


STATUS_ROWS = 1 << 16  # rows of a row group of the status table: its outlines are made WKB a group at a time


def write_status(out: Store, frame: gpd.GeoDataFrame, id_column: str,
                 status: Mapping[Any, ParcelStatus], repaired: set[Any], cube_version: int) -> None:
    """``parcels.parquet``: every parcel of ``frame`` (the parcel file) with its status, reason, tile and pixels.

    The GeoParquet geopandas writes of them (its schema and metadata: :func:`_status_schema`; the same bytes up to
    :data:`STATUS_ROWS` parcels, in row groups of as many beyond), built in Arrow a row group at a time: a
    GeoDataFrame of the whole register, its outlines made WKB at once, took 230 MB more at the end of an extraction
    of 300,000 parcels, where its memory peaks."""
    ids = _ids(frame, id_column)
    geoms = np.asarray(frame.geometry.array, dtype=object)
    schema = _status_schema(frame.crs, ids, geoms, status)
    types = [field.type for field in schema]
    buf = io.BytesIO()
    with pq.ParquetWriter(buf, schema) as writer:
        for start in range(0, len(ids), STATUS_ROWS):
            part = ids[start:start + STATUS_ROWS]
            each = [status[i] for i in part]
            columns = (part, [s.status for s in each], [s.reason for s in each], [s.tile for s in each],
                       np.array([s.pixels for s in each], dtype=np.int64), [i in repaired for i in part],
                       np.full(len(part), cube_version, dtype=np.int64),
                       shapely.to_wkb(geoms[start:start + STATUS_ROWS], flavor="iso"))  # as geopandas writes them
            writer.write_table(pa.Table.from_arrays([pa.array(c, type=t) for c, t in zip(columns, types, strict=True)],
                                                    schema=schema))
    write_bytes(out, STATUS, buf.getvalue())


def _status_schema(crs: Any, ids: Sequence[Any], geoms: np.ndarray, status: Mapping[Any, ParcelStatus]) -> pa.Schema:
    """The schema geopandas gives the status table of parcels ``ids`` (their columns' types, its ``pandas`` and
    ``geo`` metadata), from the few rows that make its ``geo`` metadata: the first of each kind of geometry (its
    ``geometry_types``) and those at the edges of their bounds (its ``bbox``)."""
    kinds = np.where(shapely.has_z(geoms), 8, 0) + shapely.get_type_id(geoms)
    rows = set(np.unique(kinds, return_index=True)[1].tolist())
    bounds = shapely.bounds(geoms)
    if np.isfinite(bounds).any():
        rows.update(int(np.nanargmin(bounds[:, k])) for k in (0, 1))
        rows.update(int(np.nanargmax(bounds[:, k])) for k in (2, 3))
    at = sorted(rows)
    each = [status[ids[k]] for k in at]
    template = gpd.GeoDataFrame({
        "parcel_id": [ids[k] for k in at],
        "status": [s.status for s in each],
        "reason": [s.reason for s in each],
        "tile": [s.tile for s in each],
        "pixels": np.array([s.pixels for s in each], dtype=np.int64),
        "repaired": np.zeros(len(at), dtype=bool),
        "cube_version": np.zeros(len(at), dtype=np.int64),
    }, geometry=geoms[at], crs=crs)
    return pq.read_schema(io.BytesIO(parquet_bytes(template)))


def _extraction_store(out: StoreLike, storage_options: Mapping[str, Any] | None) -> Any:
    """The store of the extraction at ``out``, read only; a missing folder is named as no extraction (not as no
    cube, which :func:`open_store` says)."""
    try:
        return open_store(out, storage_options=storage_options, read_only=True)
    except CubeNotFoundError:
        raise InvalidRequestError(f"no extraction at {out}: the folder does not exist (give the --out folder of "
                                  f"cardcube extract)") from None


def holds_extraction(out: StoreLike, storage_options: Mapping[str, Any] | None = None) -> bool:
    """Whether ``out`` holds an extraction (finished or not), found without creating anything."""
    try:
        return read_json(_extraction_store(out, storage_options), MANIFEST) is not None
    except InvalidRequestError:  # no such folder
        return False


def _finished(store: Any, *, allow_incomplete: bool) -> dict[str, Any]:
    """The manifest of the extraction at ``store``; a clear error if it holds none, or an unfinished one (its
    files hold only some parcels) and ``allow_incomplete`` is not set."""
    manifest = _manifest(store)
    if manifest is None:
        raise InvalidRequestError(f"no extraction at {store_url(store)}: it has no {MANIFEST} (give the --out folder "
                                  f"of cardcube extract)")
    if not manifest.get("complete") and not allow_incomplete:
        raise InvalidRequestError(f"the extraction at {store_url(store)} is unfinished: its files hold only some "
                                  f"parcels and dates. Resume it with the same cardcube extract command (or pass "
                                  f"allow_incomplete=True to read what is there)")
    return manifest


def read_timeseries(out: StoreLike, *, bands: Sequence[str] | None = None, columns: Sequence[str] | None = None,
                    storage_options: Mapping[str, Any] | None = None, allow_incomplete: bool = False) -> pd.DataFrame:
    """Every statistics row of the extraction at ``out`` (only ``bands``, in any case, and ``columns``, if
    given: one it does not hold is an error), sorted by parcel, time and band, with the ``tile`` it was read
    from (the partition key, as pyarrow's hive partitioning gives it). An unfinished extraction is refused
    unless ``allow_incomplete``.

    Reads all files into memory: for a territory, select the bands and columns you need, read them file by file
    (:func:`timeseries_files`), or query the Parquet dataset with pyarrow, DuckDB or dask instead
    (``<out>/timeseries/*/*-<run>.parquet``, the manifest's ``run``, partitioned by ``tile=``: a stopped run's late
    files may lie beside them).
    """
    parts = list(timeseries_files(out, bands=bands, columns=columns, storage_options=storage_options,
                                  allow_incomplete=allow_incomplete))
    frame = pd.concat(parts, ignore_index=True)
    return frame.sort_values(["parcel_id", "time", "band"], kind="stable", ignore_index=True)


def timeseries_files(out: StoreLike, *, bands: Sequence[str] | None = None, columns: Sequence[str] | None = None,
                     storage_options: Mapping[str, Any] | None = None, allow_incomplete: bool = False
                     ) -> Iterator[pd.DataFrame]:
    """The rows of :func:`read_timeseries`, a frame per statistics file (a work unit's block and run of dates, or a
    square of parcels read across tiles), unsorted: memory holds one file's rows at a time. The arguments are
    checked, and the manifest read, before the first frame is yielded; an extraction without a row yields one
    empty frame of the columns asked for."""
    store = _extraction_store(out, storage_options)
    manifest = _finished(store, allow_incomplete=allow_incomplete)
    keys = extraction_keys(store, manifest)
    where = f"the extraction at {store_url(store)}"
    if bands is not None:
        extracted = {b.upper(): b for b in manifest["bands"]}
        bands = [extracted.get(b.upper(), b) for b in band_list(bands)]
        if missing := [b for b in bands if b not in manifest["bands"]]:
            raise InvalidRequestError(f"{where} holds no band {', '.join(missing)}; its bands: "
                                      f"{', '.join(manifest['bands'])}")
    if not keys:  # no parcel measured: no row, but the columns asked for (a frame of none was no frame to select from)
        return iter([pd.DataFrame(columns=[*dict.fromkeys(["parcel_id", "time", "band",
                                                            *(columns or FRAME_COLUMNS[3:]), "tile"])])])
    files = (io.BytesIO(_listed(store, k)) for k in keys)
    wanted = None
    if columns is not None:
        wanted = [c for c in dict.fromkeys(["parcel_id", "time", "band", *columns]) if c != "tile"]  # the folder's
        first = next(files)
        names = pq.read_schema(first).names
        if missing := [c for c in wanted if c not in names]:
            raise InvalidRequestError(f"{where} has no column {', '.join(missing)}; its columns: {', '.join(names)}")
        files = itertools.chain([first], files)  # the first file read once, for its schema and its rows
    return (_read_file(f, wanted, bands).assign(tile=_tile_of(k))
            for k, f in zip(keys, files, strict=True))


def _listed(store: Store, key: str) -> bytes:
    """Statistics file ``key``, listed when a read of the extraction began; a clear error if it is gone since: a
    file-by-file read takes minutes over a territory (cardcube flag), while which a run into the extraction (an
    update writing a file anew, deleting the earlier one) may delete it."""
    data = read_bytes(store, key)
    if data is None:
        raise StoreError(f"{store_url(store)}/{key}, a file of the extraction when its read began, is gone since: a "
                         f"run into the extraction (an update) deleted it; read it again once that run has ended")
    return data


FILE_BATCH = 1 << 15  # rows of a statistics file decoded at a time


def _read_file(data: io.BytesIO, columns: Sequence[str] | None, bands: Sequence[str] | None) -> pd.DataFrame:
    """The rows of ``bands`` (None: all) of the statistics file ``data``, ``columns`` of them (None: all), decoded
    ``FILE_BATCH`` rows at a time: a file holds every band of a block's parcels, and decoding it whole before keeping
    two bands of ten took twice the memory."""
    source = pq.ParquetFile(data, buffer_size=1 << 20, pre_buffer=False)
    wanted = None if bands is None else pa.array(bands)
    parts = [part if wanted is None else part.filter(pc.is_in(part.column("band"), value_set=wanted))
             for part in source.iter_batches(batch_size=FILE_BATCH, columns=columns, use_threads=False)]
    if not parts:  # a file of no row
        return source.schema_arrow.empty_table().select(columns or source.schema_arrow.names).to_pandas()
    return pa.Table.from_batches(parts).to_pandas()


def read_manifest(out: StoreLike, *, storage_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The manifest of the finished extraction at ``out``: the cube and version it read, its parameters, the scenes
    read per tile."""
    return _finished(_extraction_store(out, storage_options), allow_incomplete=False)


def read_status(out: StoreLike, *, storage_options: Mapping[str, Any] | None = None,
                columns: Sequence[str] | None = None) -> gpd.GeoDataFrame | pd.DataFrame:
    """The status table of the extraction at ``out``: every input parcel with status, reason, tile, pixels (only
    ``columns``, if given: without ``geometry``, a plain DataFrame, a fraction of the outlines' memory)."""
    store = _extraction_store(out, storage_options)
    _finished(store, allow_incomplete=True)
    data = read_bytes(store, STATUS)
    if data is None:
        raise InvalidRequestError(f"no extraction status at {store_url(store)}/{STATUS}: the run has not finished")
    if columns is not None and "geometry" not in columns:
        return pd.read_parquet(io.BytesIO(data), columns=list(columns))
    return gpd.read_parquet(io.BytesIO(data), columns=None if columns is None else list(columns))
