"""The files of an extraction (:func:`cube.extract.extract`): how they are named, which are its rows, their writing.

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
mixed in (:func:`cube.extraction_manifest.check_manifest`), an unfinished one is resumed, and an update records the
scenes it adds. Its ``reads`` keep, per scene, the version whose pixels the rows read
(:func:`cube.extraction_manifest.scene_reads`): a date a repair has written anew since is read again by an update
(``update.replaced``, whose earlier rows :func:`drop_replaced` drops, writing each file holding some anew under a name
of the update's version, which a stopped run's task writing the earlier name late does not undo: :func:`superseded`) or
by the resumption of an unfinished run (which deletes its files holding it, and whose tasks write them again under names
of a new ``generation``, so that a task of the attempt before the repair writing one late is left aside:
:func:`read_before_repair`). Its ``run``, drawn when it is written, names every statistics file, and only files of that
name are the extraction's (:func:`statistics_keys`): a task of a stopped run on a dask cluster that writes on after its
driver has gone cannot slip its rows into a run started anew in the same folder (its resumption writes the same rows).
An extraction from before runs were named (no ``run``) names its files without it.
:func:`cube.extraction_manifest.finish_manifest` marks the run complete with the scenes read per tile. The readers
(:mod:`cube.extraction_reader`) refuse an unfinished extraction unless asked to read what is there.
"""

from __future__ import annotations

import io
import json
import re
import uuid
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any

import geopandas as gpd
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import shapely
from zarr.abc.store import Store

from cardcube.checkpoints import checkpoint
from cardcube.spec import CubeSpec
from cardcube.storage import (
    delete_key,
    list_keys,
    read_bytes,
    write_bytes,
)
from cube.dated_rows import files_holding, scene_times
from cube.ledger import CubeVersion
from cube.parcel_ids import uniform_ids
from cube.parcel_layer import parquet_bytes
from cube.stats import small_uint
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
    unfinished run is resumed after a repair, :func:`cube.extraction_manifest._read_again`), after their unit, dates and
    update: nothing for the first, so that an extraction never resumed so is named as before."""
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


def tile_of(key: str) -> str:
    """The tile whose partition statistics file ``key`` is in (``mosaic``: parcels read across tiles)."""
    return key.split("tile=", 1)[1].split("/", 1)[0]


def _earlier(key: str, again: Mapping[str, Any], run: str) -> bool:
    """Whether statistics file ``key`` is one the run resumed after a repair (``again``: a record of the manifest's
    ``read_again``, :func:`cube.extraction_manifest._read_again`) wrote in an earlier generation, on a tile of the dates
    it reads again (of parcels read across tiles: any): its first run's files, or an update's own (of its version)."""
    if key.startswith(MOSAIC):
        batch = mosaic_batch(key) or (0, 0, 0)
        return batch[2] < again["generation"] and (batch[1] == again["version"] if again["update"] else
                                                    batch[1] <= again["version"])
    name, generation, _ = written_as(key)
    if generation >= again["generation"] or tile_of(key) not in again["scenes"]:
        return False
    return name.endswith(update_suffix(again["version"], run)) if again["update"] else not _VERSIONED.search(name)


def read_before_repair(keys: Iterable[str], manifest: Mapping[str, Any]) -> set[str]:
    """The statistics files in ``keys`` that a run resumed after a repair deleted, of an earlier generation
    (:func:`cube.extraction_manifest._read_again`), found by their names: a task of the attempt before the repair
    writing one late (a dask worker that kept going after its driver was stopped) would bring the repaired dates'
    damaged rows back, or its file (its dates' runs differing) repeat rows. Those of its parcels read across tiles (all
    of them), and of an update, its own files on the tiles of those dates. A first run deleted only the files holding
    those dates: :func:`held_before_repair` finds them by their contents."""
    run, again = run_of(manifest), manifest.get("read_again", ())
    return {k for k in keys for record in again
            if (k.startswith(MOSAIC) or record["update"]) and _earlier(k, record, run)}


def held_before_repair(store: Store, keys: Sequence[str], manifest: Mapping[str, Any],
                       version: CubeVersion) -> set[str]:
    """Those of ``keys`` (statistics files) of the first run of the extraction whose manifest is ``manifest``
    (``version``: the one it reads, or a later one) that it wrote before a repair it was resumed after, holding the
    dates it reads again: each resumption deleted those it found (:func:`cube.extraction_manifest._read_again`), and a
    task of the attempt before writing one late, or still running then, writes the damaged rows under a name its
    resumption would take for done. Only the footers of the files of earlier generations on those dates' tiles are read,
    and the files whose footers say they may hold them (:func:`files_holding`)."""
    run, held = run_of(manifest), set()
    for record in manifest.get("read_again", ()):
        if record["update"] or record["version"] != manifest["version"] or "update" in manifest:
            continue  # an update's files, read again by their tiles; or an earlier run's, no more written by tasks
        earlier = [k for k in keys if not k.startswith(MOSAIC) and _earlier(k, record, run)]
        for tile, ids in sorted(record["scenes"].items()):
            held.update(key for key, _, _ in files_holding(store, tile_keys(earlier, tile),
                                                            scene_times(version, tile, ids)))
    return held


def run_of(manifest: Mapping[str, Any]) -> str:
    """The run an extraction's manifest names ("" for one from before runs were named)."""
    return manifest.get("run", "")


def version_tag(version: int) -> str:
    """What names the statistics files an update to ``version`` writes, after their unit and dates."""
    return f"-v{version:08d}"


def update_suffix(version: int, run: str) -> str:
    """How the statistics files an update to ``version`` writes end (:func:`statistics_name`)."""
    return statistics_name(version_tag(version), run)


def tile_keys(keys: Iterable[str], tile: str) -> list[str]:
    """Those of ``keys`` (statistics files) in ``tile``'s partition."""
    return [k for k in keys if k.startswith(f"{TIMESERIES}/tile={tile}/")]


READ_AGAIN = "extract-rows-replaced"  # the checkpoint after each file an update's repaired dates are dropped from
WRITTEN_ANEW = "extract-rows-written-anew"  # ... between that file written anew and its earlier name deleted


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
        for key, table, drop in files_holding(out, tile_keys(earlier, tile), scene_times(version, tile, ids)):
            anew = rewritten_key(key, manifest["version"], run)
            write_bytes(out, anew, parquet_bytes(table.filter(pc.invert(drop)), **options))
            checkpoint(WRITTEN_ANEW)
            if anew != key:  # the same name: written anew again by this update, resumed after another repair
                delete_key(out, key)
            changed += 1
            checkpoint(READ_AGAIN)
    return changed


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

