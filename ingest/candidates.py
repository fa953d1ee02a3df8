"""Which offered scenes go in: each sorted against the cube (a candidate, a later listing of its id, already
present, or refused), one product chosen per acquisition, and the chosen checked, with the next listing of an id or
the next product of an acquisition checked in the place of one refused; :func:`ingest.job.ingest` writes the
outcome."""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import replace
from typing import Any

from cardcube.errors import DuplicateSceneError, SceneError, SpoolError, StoreError
from cardcube.parallel import run_tasks
from cardcube.source_files import shown_href
from cardcube.spec import CubeSpec
from cube.ledger import CubeVersion, Rejection
from ingest.passes import Product, another_part, coverage, covers, same_pass_product
from ingest.sources import SourceScene
from ingest.validate import CheckedScene, check_files, check_scene

log = logging.getLogger(__name__)


def triage(scenes: list[SourceScene], head: CubeVersion
           ) -> tuple[list[SourceScene], dict[str, list[SourceScene]], list[str], list[Rejection]]:
    """Split offered scenes by their ids into candidates, their later listings with other files or metadata (two
    sources merged, one with a stale href: by scene id, read in the place of a candidate that fails its checks,
    :func:`check_chosen`), already-present (skipped) and refused: an id the cube holds at another time. Which
    candidate of an acquisition goes in is :func:`_one_per_acquisition`'s choice, once their files are checked."""
    candidates, skipped, rejected = [], [], []
    later: dict[str, list[SourceScene]] = {}
    held = {p for r in head.scenes.values() for p in r.piece_ids}  # with the slices mosaicked into a date
    items = {i for r in head.scenes.values() for i in r.items}  # split items (ingest.split) the cube holds pieces of
    offered: dict[str, SourceScene] = {}
    for s in scenes:
        record = head.scenes.get(s.scene_id)
        if record is not None and not record.parts and s.tile == record.tile and s.time != record.time:
            rejected.append(_rejection(s, DuplicateSceneError(
                s.scene_id, f"the cube holds a scene of this id at {record.time}, and this one is of {s.time}: "
                            "another product under the same id is not ingested")))
            continue
        # in the cube (an item of no tile offered unsplit, without warp: as pieces), or listed twice alike
        if s.scene_id in held or (not s.tile and s.scene_id in items) or s in (offered.get(s.scene_id),
                                                                              *later.get(s.scene_id, ())):
            skipped.append(s.scene_id)
            continue
        if s.scene_id in offered:  # one id, two different listings: the first is read, the next if it fails
            later.setdefault(s.scene_id, []).append(s)
            continue
        offered[s.scene_id] = s
        candidates.append(s)
    return candidates, later, skipped, rejected


def _one_per_acquisition(candidates: list[SourceScene], head: CubeVersion, checked: Mapping[str, CheckedScene],
                         failed: Collection[str]) -> tuple[list[SourceScene], list[Rejection], dict[str, str]]:
    """Of ``candidates`` (in time order, then by id), those to go in, and the duplicates of an acquisition: of the
    same tile and time, or, in a cube of per-tile products (Sentinel-2; backscatter slices of one pass may each name
    the tile), of the same tile and pass seconds apart (:func:`ingest.passes.same_pass_product`), or, once
    ``checked``, read from files of the same bytes on the tile (one product under two ids). A committed one is
    kept; of those offered, the first not ``failed`` (its files checked and refused): a broken product must not
    keep a sound one of its acquisition out. In a cube of per-tile products, another product of an acquisition
    chosen in this run that holds another part of the tile (a datastrip boundary crosses it) is a part of its date,
    named in the third value (:func:`ingest.passes.another_part`): chosen, to be checked, while the date's products
    checked so far leave some of their windows without data (:func:`ingest.passes.covers`), kept once checked if it
    is a part, a duplicate otherwise. So is a backscatter product naming its tile of the pass of one chosen in this
    run (a slice of it), but one that is no part of its date is a date of its own, as slices always were."""
    chosen, rejected = [], []
    parts: dict[str, list[CheckedScene]] = {}  # per date chosen in this run: its products checked so far
    part_of: dict[str, str] = {}  # per product that is a part of another's date: that date's scene id
    seen = {(r.tile, r.time): r.scene_id for r in head.scenes.values()}
    files = {(r.tile, _same_bytes(p.checksums)): p.scene_id for r in head.scenes.values() for p in r.parts or (r,)}
    per_tile = not head.spec.backscatter
    products: dict[str, list[Product]] = {}  # by tile
    # backscatter naming its tile: the products chosen in this run, by tile (a pass's slices may each be one, each
    # holding its part of the tile: another part of a date is mosaicked into it, as a datastrip's product is)
    slices: dict[str, list[Product]] = {}
    for tile, state in head.tiles.items() if per_tile else ():
        products[tile] = [Product.of(a.scene_id, a.time, a.platform, a.relative_orbit, a.orbit_state)
                          for a in state.acquisitions]
    times = {s.scene_id: s.time for s in candidates}
    for s in (s for s in candidates if s.scene_id not in failed):
        bytes_ = (s.tile, _same_bytes(checked[s.scene_id].checksums)) if s.scene_id in checked else None
        other = seen.get((s.tile, s.time)) or (same_pass_product(s, products) if per_tile else None)
        slice_of = None if per_tile or other is not None or s.item_id else same_pass_product(s, slices)
        if other is None and (copy := files.get(bytes_)) is not None:
            kept = "the cube holds it" if copy not in times else "it goes in once"
            rejected.append(_rejection(s, DuplicateSceneError(
                s.scene_id, f"its files are the same bytes as those of scene {copy} on tile {s.tile}: one product "
                            f"under two ids (another provider's item of it), and {kept}")))
            continue
        read = ""  # of a product checked for holding another part of the tile: why it is no such part
        if other is not None and per_tile and other in times and other in checked:
            date = parts.setdefault(other, [checked[other]])
            if s.scene_id not in checked and not covers(date):  # it may hold the rest of the tile: read it
                chosen.append(s)
                continue
            if s.scene_id in checked and another_part(checked[s.scene_id], date):
                date.append(checked[s.scene_id])
                part_of[s.scene_id] = other
                files[bytes_] = s.scene_id  # a copy of it under another id and time is a copy of it
                chosen.append(s)
                continue
            if s.scene_id in checked and coverage([checked[s.scene_id], *date]) is not None:  # compared
                read = (f" (its valid pixels lie where those of scene {' and '.join(p.scene_id for p in date)} do, "
                        "so it holds no other part of the tile, as another datastrip's product would)")
        if slice_of is not None and slice_of in checked:  # a date of its own unless it holds another part of the tile
            date = parts.setdefault(slice_of, [checked[slice_of]])
            if s.scene_id not in checked and not covers(date):
                chosen.append(s)
                continue
            if s.scene_id in checked and another_part(checked[s.scene_id], date):
                date.append(checked[s.scene_id])
                part_of[s.scene_id] = slice_of
                files[bytes_] = s.scene_id
                chosen.append(s)
                continue
        if other is not None:
            when = head.scenes[other].time if other in head.scenes else times[other]
            at = s.time if when == s.time else f"{when}, on the pass this one was seen on at {s.time}"
            if other in head.scenes:
                why = (f"tile {s.tile} already has the acquisition of {at} (scene {other}); committed dates never "
                       "change (extractions rely on it): a reprocessed product goes into a new cube, and another "
                       "datastrip's product of it, holding another part of the tile, goes into its date only when "
                       "offered in the run that commits it")
            else:
                why = (f"the acquisition of {at} on tile {s.tile} is read from scene {other}: of two products of one "
                       "acquisition in the source, the earliest that passes its checks is read (of one time, the one "
                       f"whose id sorts first), whatever their order in the source{read}")
            rejected.append(_rejection(s, DuplicateSceneError(s.scene_id, why)))
            continue
        seen[(s.tile, s.time)] = s.scene_id
        if bytes_ is not None:
            files[bytes_] = s.scene_id
        if per_tile or not s.item_id:
            (products if per_tile else slices).setdefault(s.tile, []).append(
                Product.of(s.scene_id, s.time, s.platform, s.relative_orbit, s.orbit_state))
        chosen.append(s)
    return chosen, rejected, part_of


def check_chosen(candidates: list[SourceScene], later: Mapping[str, Sequence[SourceScene]], head: CubeVersion,
                 spec: CubeSpec, options: Mapping[str, bool], spool: str | None, *, scheduler: Any, progress: bool
                 ) -> tuple[list[CheckedScene | Rejection], list[Rejection], dict[str, str]]:
    """Check the product of each acquisition :func:`_one_per_acquisition` chooses and, in the place of one refused,
    the next listing of its id (``later``, :func:`triage`) or else the next product of its acquisition, and the
    products that may hold another part of a date's tile: the outcomes of those chosen and of those refused, in
    the order of ``candidates``, the other rejections (duplicates: a scene checked in one round may be another's
    duplicate in the next; listings refused or not read) and, per product that is another part of a date, that
    date's scene id."""
    candidates, spare = list(candidates), {i: list(c) for i, c in later.items()}
    outcomes: dict[str, CheckedScene | Rejection] = {}
    listings: dict[str, list[tuple[SourceScene, Rejection]]] = {}  # per id: its listings refused, in order
    while True:
        chosen, twins, part_of = _one_per_acquisition(
            candidates, head, {i: r for i, r in outcomes.items() if isinstance(r, CheckedScene)},
            {i for i, r in outcomes.items() if isinstance(r, Rejection)})
        unchecked = [s for s in chosen if s.scene_id not in outcomes]
        if not unchecked:
            break
        desc = "checking other products of the acquisitions refused" if outcomes else "checking scenes"
        outcomes.update(check_scenes(unchecked, spec, options, spool, scheduler=scheduler, progress=progress,
                                     desc=desc))
        for s in unchecked:  # a listing refused gives way to the next listing of its id, checked in its place
            if isinstance(outcomes[s.scene_id], Rejection) and spare.get(s.scene_id):
                listings.setdefault(s.scene_id, []).append((s, outcomes.pop(s.scene_id)))
                candidates[candidates.index(s)] = spare[s.scene_id].pop(0)
                candidates.sort(key=lambda c: (c.time, c.scene_id))
    ids = {s.scene_id for s in chosen}
    by_id = {s.scene_id: s for s in candidates}
    refused = [r for scene_id, tried in listings.items()
               for r in _listings_refused(tried, went=isinstance(outcomes.get(scene_id), CheckedScene)
                                          and scene_id in ids)]
    for scene_id, rest in spare.items():  # listings not read: the one before them was, or was not checked
        read = by_id[scene_id]
        refused += [_rejection(s, DuplicateSceneError(
            scene_id, f"listed twice in the source with other files or metadata (at {read.time} and {s.time}): the "
                      "first listing is read, the next only in the place of one that fails its checks"))
            for s in rest]
    outcome = _outcome_with_listings(listings, outcomes)
    return [r for s in candidates if (r := outcome.get(s.scene_id)) is not None
            and (s.scene_id in ids or isinstance(r, Rejection))], twins + refused, part_of


def _listings_refused(tried: Sequence[tuple[SourceScene, Rejection]], *, went: bool) -> list[Rejection]:
    """The rejections of the listings of one scene id that failed their checks (``tried``, in order), each saying
    what became of the next one read in its place (the last of which ``went`` in, or not)."""
    done = "went in" if went else "was refused too"
    return [replace(r, reason=f"{r.reason}; the scene is listed again in the source with other files or metadata, "
                              f"which was read in its place and {done if i == len(tried) - 1 else 'was refused too'}")
            for i, (_, r) in enumerate(tried)]


def _outcome_with_listings(listings: Mapping[str, Sequence[tuple[SourceScene, Rejection]]],
                           outcomes: Mapping[str, CheckedScene | Rejection]) -> dict[str, CheckedScene | Rejection]:
    """``outcomes`` with the rejection of a scene id whose every listing was refused telling of the earlier ones:
    the ledger keeps the latest rejection of an id, and an operator fixing the source must fix them all."""
    outcome = dict(outcomes)
    for scene_id, tried in listings.items():
        if isinstance(last := outcomes.get(scene_id), Rejection):
            said = "; ".join(r.reason.removeprefix(f"scene {scene_id}: ") for _, r in tried)
            which = "earlier listing" + ("s" if len(tried) > 1 else "")
            outcome[scene_id] = replace(last, reason=f"{last.reason}; its {which} in the source (other files or "
                                                     f"metadata) refused: {said}")
    return outcome


def _same_bytes(checksums: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """A product's band files by their checksums, equal for one product's whatever its id or time."""
    return tuple(sorted(checksums.items()))


def refiled_scenes(scenes: Sequence[SourceScene], head: CubeVersion, skipped: Sequence[str]) -> tuple[str, ...]:
    """Those of the ``skipped`` scenes (ids the cube holds) offered from other files than its record names: a
    corrected product republished under its id, or the same files moved. Neither is read again (that would take
    reading them); the run says so rather than skip them without a word."""
    skipped = set(skipped)
    refiled: dict[str, None] = {}  # once each, in the order offered (a scene offered twice is skipped twice)
    for s in scenes:
        record = head.scenes.get(s.scene_id)
        if s.scene_id in skipped and record is not None and record.sources and any(
                record.sources.get(band, shown_href(href)) != shown_href(href) for band, href in s.assets.items()):
            refiled[s.scene_id] = None
    for scene_id in refiled:
        log.warning("scene %s is in the cube, read from %s; offered from other files, it was skipped", scene_id,
                    ", ".join(sorted(set(head.scenes[scene_id].sources.values()))[:2]))
    return tuple(refiled)


def _rejection(scene: SourceScene, err: Exception) -> Rejection:
    """``scene`` rejected for ``err``, named by its own id (a piece of a split item failing on a file of it), with the
    tile and time of its acquisition."""
    said = err.reason if isinstance(err, SceneError) else f"unexpected error: {err}"
    return Rejection(scene.scene_id, type(err).__name__, f"scene {scene.scene_id}: {said}", scene.tile, scene.time)


def _check(scenes: list[SourceScene], spec: CubeSpec, options: Mapping[str, bool], spool: str | None
           ) -> list[CheckedScene | Rejection]:
    """Check one scene, or the pieces of one split item together: each of its files read, hashed and counted
    once for them all (:func:`ingest.validate.check_files`), each piece then checked on its own tile; a remote
    file kept in the ``spool`` folder (:mod:`ingest.spool`)."""
    files = None
    if len(scenes) > 1:
        try:
            files = check_files(scenes[0], spec, linear_power=options["linear_power"], spool=spool)
        except (SpoolError, StoreError):  # this machine's disk, the sources' endpoint or keys: the run stops
            raise
        except Exception as err:  # a file that fails fails every piece
            return [_rejection(s, err) for s in scenes]
    results: list[CheckedScene | Rejection] = []
    for scene in scenes:
        try:
            results.append(check_scene(scene, spec, **options, files=files, spool=spool))
        except (SpoolError, StoreError):
            raise
        except Exception as err:  # one broken scene must not stop the others
            results.append(_rejection(scene, err))
    return results


def check_scenes(scenes: list[SourceScene], spec: CubeSpec, options: Mapping[str, bool], spool: str | None, *,
                 scheduler: Any, progress: bool, desc: str) -> dict[str, CheckedScene | Rejection]:
    """Each of ``scenes`` checked (:func:`_check`; a split item's files read once for all its pieces), by scene id."""
    tasks = [(g, spec, options, spool) for g in _by_item(scenes)]
    return {r.scene_id: r for rs in run_tasks(_check, tasks, scheduler=scheduler, desc=desc, progress=progress,
                                              unit="item") for r in rs}


def _by_item(scenes: list[SourceScene]) -> list[list[SourceScene]]:
    """The pieces of each split item together (:mod:`ingest.split`), every other scene on its own, in order."""
    groups: dict[str, list[SourceScene]] = {}
    for s in scenes:
        groups.setdefault(f"item:{s.item_id}" if s.item_id else f"scene:{s.scene_id}", []).append(s)
    return list(groups.values())
