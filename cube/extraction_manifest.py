"""The manifest of an extraction (``manifest.json``): a run checked against it before it writes, and marked finished.

:func:`check_manifest` writes it first, incomplete, for a new run; refuses a run with another cube or other parameters
rather than mixing it in; resumes an unfinished one; records the scenes an update adds. Its ``reads`` keep, per scene,
the version whose pixels the rows read (:func:`scene_reads`): a date a repair has written anew since is read again by
an update (``update.replaced``) or by the resumption of an unfinished run (:func:`_read_again`, under a new
``generation``). :func:`finish_manifest` marks the run complete with the scenes read per tile. The files it pins, and
how they are named, are in :mod:`cube.extraction_files`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from zarr.abc.store import Store

from cardcube import __version__
from cardcube.errors import CommitConflictError, InvalidRequestError, VersionNotFoundError
from cardcube.query import parse_time_range
from cardcube.storage import delete_key, list_children, listed_names, read_json, store_url, write_json
from cube.dataset import tile_dates
from cube.dated_rows import files_holding, scene_times
from cube.extraction_files import (
    MANIFEST,
    MOSAIC,
    generation_of,
    is_partial,
    mosaic_batch,
    run_keys,
    run_of,
    tile_keys,
    update_suffix,
    written_as,
)
from cube.ledger import CubeVersion, committed_versions, read_version


def stored_manifest(store: Store) -> dict[str, Any] | None:
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
    ``update.replaced``, whose earlier rows :func:`cube.extraction_files.drop_replaced` drops); None for a whole run. An
    unfinished run resumed forgets its files holding dates a repair has written anew since it began
    (:func:`_read_again`), so that it reads them again. ``cube`` is looked up only to say whether an unfinished run's
    version can still be resumed; ``head``: the cube's latest version (default ``version``), whose records say which
    cold dates a repair has mended in place since (every version reads them so: :func:`scene_reads`)."""
    head = version if head is None else head
    old = stored_manifest(out)
    if old is None:
        others = [name for name in list_children(out, "") if not is_partial(name)]
        if MANIFEST in others:  # another run started into out between the read and the listing: compared with it
            old = stored_manifest(out)
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
    # values, so its dates are read again, their earlier rows dropped (:func:`cube.extraction_files.drop_replaced`)
    # before the new ones land
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


def _read_again(out: Store, old: dict[str, Any], version: CubeVersion, head: CubeVersion,
                stale: Mapping[str, Sequence[str]], time: Any) -> dict[str, Any]:
    """Make the unfinished run of ``old`` read the ``stale`` dates again (:func:`_stale`: a repair wrote them anew
    since it began): delete its files that hold them (a whole run's; an update's, every one of their tiles: the dates
    it reads there change) and of parcels read across tiles, which the resumption writes again; then record them in
    the manifest (an update's: read again, its earlier runs' rows of them dropped) with a new ``generation``, which
    names the files the resumption's tasks write (:func:`cube.extraction_files.generation_tag`), and in ``read_again``:
    a task of the attempt before writing its file late is left aside (:func:`cube.extraction_files.read_before_repair`,
    :func:`cube.extraction_files.held_before_repair`, :func:`cube.extraction_files.superseded`). Files first: a run
    killed between finds the dates stale again, and deletes the rest."""
    run, update = run_of(old), old.get("update")
    listed = run_keys(out, run)
    mine = [k for k in listed if not k.startswith(MOSAIC)]
    if update is not None:
        mine = [k for k in mine if written_as(k)[0].endswith(update_suffix(version.version, run))]
    gone = [k for k in listed if k.startswith(MOSAIC)  # an update's: those of its version
            and (update is None or (mosaic_batch(k) or (0, 0))[1] == version.version)]
    for tile, ids in stale.items():
        keys = tile_keys(mine, tile)
        if update is None:
            keys = [key for key, _, _ in files_holding(out, keys, scene_times(version, tile, ids))]
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


def refuse_other_parameters(out: Store, manifest: dict[str, Any]) -> None:
    """Refuse a run with other parameters than the extraction in ``out`` (if any) was made with, before anything
    else is compared with it (an update's parcels and tiles): what :func:`check_manifest` checks first."""
    old = stored_manifest(out)
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
    tiles (``mosaics``: :func:`cube.extraction_files.extraction_keys`)."""
    old = read_json(out, MANIFEST)
    scenes = {tile: [a.scene_id for a in tile_dates(state, time)] for tile, state in sorted(version.tiles.items())}
    history = old.get("updated_from", []) + ([old["update"]["from"]] if "update" in old else [])
    write_json(out, MANIFEST, {**{k: v for k, v in old.items() if k != "update"}, "complete": True,
                               "status": dict(status), "scenes": scenes, "updated_from": history,
                               "mosaics": sorted(mosaics),
                               "software": f"cardcube {__version__}",
                               "finished": datetime.now(UTC).isoformat(timespec="seconds")})
