"""The slices of one Sentinel-1 pass on one tile, mosaicked into one date: the grouping rule.

A Sentinel-1 GRD product is a *slice* of a pass, some 25 s of it; products made from GRDs (Planetary Computer's
``sentinel-1-rtc``) name no MGRS tile and are split per tile (:mod:`ingest.split`). Two consecutive slices of a
pass often both overlap a tile, each holding its part of it: on their own they would be two dates seconds
apart, each half empty. So the split pieces of one ingest run that land on one tile and belong to one pass --
same collection, platform, relative orbit and orbit state, each within :data:`PASS_GAP_S` of the previous one --
become one date (:func:`mosaic_passes`): the earliest slice's valid pixels, then the next one's where the earlier
have nodata (first valid wins, in time order), each slice resampled onto the tile exactly as on its own. The date
takes the earliest slice's time and scene id (``<item>_T<tile>``, stable from run to run); the ledger lists every
slice in it (``SceneRecord.parts``), and :mod:`ingest.write` fills the date from them.

Only slices offered in the same run are mosaicked: a committed date never changes (readers and extraction
updates rely on it), so a slice arriving after its pass's date on the tile was committed goes in as a date of
its own, and :func:`committed_pass_dates` names the date it would have joined, for the run to say so.

A Sentinel-2 acquisition on a tile may come as two (or more) products too, each holding part of the tile (a
datastrip boundary crosses it: Earth Search's ``..._0_L2A`` / ``..._1_L2A`` items, seconds apart), each file the
whole tile with nodata where the other holds data. Their windows are the same (the whole tile), so what tells
them from a reprocessed product is where their valid pixels are (:attr:`CheckedScene.coverage`): a product
whose fully valid cells barely meet those of the products of its date so far (:func:`another_part`) is another
part of it, mosaicked into its date as a pass's slices are (:func:`mosaic_parts`); one holding data where they
do is a duplicate. A product is read for that only while the date's products leave some of their windows
without data (:func:`covers`): a reprocessing of a product covering its tile is a duplicate unread. As for
slices, only the products of one run: a part arriving after its date was committed is a duplicate. Sentinel-1
products naming their tile (a per-tile product made per GRD slice) are parts of a date alike, by the same rule; one
that is not (a reprocessing, a slice of a later run) is a date of its own, as it always was.

Pure: no files, no store.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import shapely

from cardcube.grid import TileGrid
from cardcube.spec import PASS_GAP_S
from cube.ledger import CubeVersion, data_area
from ingest.sources import SourceScene, orbit_direction, platform_name
from ingest.validate import FULL, CheckedScene
from ingest.warp import Window


@dataclasses.dataclass(frozen=True, slots=True)
class PassKey:
    """What the slices of one pass on one tile share."""

    tile: str
    collection: str
    platform: str
    relative_orbit: int
    orbit_state: str


def pass_key(scene: SourceScene) -> PassKey | None:
    """The pass ``scene`` is a slice of, on its tile; None for a scene that is no split piece (a scene naming its
    tile, a Sentinel-2 product: never mosaicked)."""
    if not scene.item_id or not scene.tile:
        return None
    return PassKey(scene.tile, scene.collection, scene.platform, scene.relative_orbit, scene.orbit_state)


def _seconds(time: str) -> float:
    return datetime.fromisoformat(time.replace("Z", "+00:00")).timestamp()


def within_pass_gap(earlier: str, later: str) -> bool:
    """Whether acquisition times ``earlier`` and ``later`` (ISO 8601) are close enough to be one pass's slices."""
    return abs(_seconds(later) - _seconds(earlier)) <= PASS_GAP_S


def group_passes(scenes: Sequence[CheckedScene]) -> list[list[CheckedScene]]:
    """``scenes`` in groups of one pass on one tile, each in time order (scenes of no pass alone), groups in the
    order of their first scene in ``scenes``. A group is a chain: each slice within :data:`PASS_GAP_S` of the
    one before it."""
    chains: dict[PassKey, list[list[CheckedScene]]] = {}
    for c in sorted(scenes, key=lambda c: (c.scene.time, c.scene_id)):
        key = pass_key(c.scene)
        if key is None:
            continue
        runs = chains.setdefault(key, [])
        if runs and within_pass_gap(runs[-1][-1].scene.time, c.scene.time):
            runs[-1].append(c)
        else:
            runs.append([c])
    group_of = {id(c): run for runs in chains.values() for run in runs for c in run}
    groups: dict[int, list[CheckedScene]] = {}  # by the id of the group: each once, in order of its first scene
    for c in scenes:
        group = group_of.get(id(c)) or [c]
        groups.setdefault(id(group), group)
    return list(groups.values())


def _union(windows: Sequence[Window]) -> Window:
    """The smallest window holding every one of ``windows``."""
    r0, c0 = min(w[0] for w in windows), min(w[1] for w in windows)
    r1, c1 = max(w[0] + w[2] for w in windows), max(w[1] + w[3] for w in windows)
    return r0, c0, r1 - r0, c1 - c0


def mosaic(parts: Sequence[CheckedScene]) -> CheckedScene:
    """One date of the slices ``parts`` (one pass on one tile, in time order): the earliest slice's scene, time and
    files as its own, the windows that hold them all, where in them they hold data (the union of the slices' areas,
    :func:`cube.ledger.data_area`; None if no slice has a footprint) and every slice as a part, for the writer and
    the ledger."""
    first = parts[0]
    windows = {res: _union([p.windows[res] for p in parts]) for res in first.windows}
    footprint = None
    if any(p.footprint is not None for p in parts):
        grid = TileGrid.from_id(first.scene.tile)
        footprint = shapely.union_all([data_area(grid, p.windows, p.footprint) for p in parts])
    return dataclasses.replace(first, windows=windows, parts=tuple(parts), footprint=footprint)


def mosaic_passes(scenes: Sequence[CheckedScene]) -> list[CheckedScene]:
    """``scenes`` with the slices of each pass on each tile mosaicked into one date (:func:`mosaic`)."""
    return [group[0] if len(group) == 1 else mosaic(group) for group in group_passes(scenes)]


COVERED = 1.0  # a date's share of coverage cells holding data, from which it covers its windows: no other part
# (every cell: at 0.95 a part holding up to 5% of the tile, a datastrip boundary near its corner, went unread as a
# duplicate, its pixels lost for that date for good; a reprocessing of a product with nodata is read, at worst)
SHARED = 0.10  # the most of the fewer valid cells two parts of one date may both hold in full (their boundary's none)


def coverage(parts: Sequence[CheckedScene]) -> np.ndarray | None:
    """Where the valid pixels of ``parts`` (products of one date, on the same windows) are, together: each cell as
    the most of it any holds (:attr:`CheckedScene.coverage`; full in one, full); None if one has no map (resampled)
    or they differ in shape."""
    maps = [p.coverage for p in parts]
    if any(m is None or m.shape != maps[0].shape for m in maps):
        return None
    return np.maximum.reduce(maps)


def covers(parts: Sequence[CheckedScene]) -> bool:
    """Whether ``parts`` (a date's products so far) hold data in all their windows (:data:`COVERED` of the
    coverage cells), so that no other product of the acquisition can add to it; True where that cannot be told (a
    product resampled): another product of it is then a duplicate, as before."""
    union = coverage(parts)
    return union is None or float(np.count_nonzero(union)) >= COVERED * union.size


def another_part(scene: CheckedScene, parts: Sequence[CheckedScene]) -> bool:
    """Whether ``scene``, a product of the acquisition of the date of ``parts`` (its products so far, the first the
    date's), holds another part of the tile: on the same windows, with valid pixels in full in few of the cells where
    theirs are in full (fewer than :data:`SHARED` of the valid cells of the smaller of the two; along the boundary
    between two datastrips, a cell holds some of each, full in neither). A reprocessed product holds data where they
    do: a duplicate."""
    union = coverage(parts)
    if scene.coverage is None or union is None or scene.coverage.shape != union.shape or any(
            p.windows != scene.windows for p in parts):
        return False
    shared = np.count_nonzero((scene.coverage == FULL) & (union == FULL))
    smaller = min(np.count_nonzero(scene.coverage), np.count_nonzero(union))
    return bool(smaller) and shared < SHARED * smaller


def mosaic_parts(scenes: Sequence[CheckedScene], part_of: Mapping[str, str]) -> list[CheckedScene]:
    """``scenes`` with the products that are parts of another's date (``part_of``: the date's scene id, per part)
    mosaicked into it (:func:`mosaic`: first valid wins, in time order), in the order of the dates' products."""
    groups: dict[str, list[CheckedScene]] = {}
    for c in scenes:
        groups.setdefault(part_of.get(c.scene_id, c.scene_id), []).append(c)
    dates = []
    for date, group in groups.items():
        group.sort(key=lambda c: (c.scene.time, c.scene_id))
        assert group[0].scene_id == date, (date, [c.scene_id for c in group])
        dates.append(group[0] if len(group) == 1 else mosaic(group))
    return dates


@dataclass(frozen=True, slots=True)
class Product:
    """A per-tile product's acquisition, as two products of it may tell it apart or not: its platform (normalised:
    "Sentinel-2A", "sentinel-2a" and "S2A" are one), relative orbit and orbit state, each unknown (``""``, -1) in
    some items, and its time."""

    scene_id: str
    time: str
    platform: str
    relative_orbit: int
    orbit_state: str

    @classmethod
    def of(cls, scene_id: str, time: str, platform: str, relative_orbit: int, orbit_state: str) -> Product:
        """A product as ingest names its platform and orbit direction (a cube's older records spelled them as
        their items did: ``Sentinel-2A``, ``S2A``, ``DESCENDING``)."""
        return cls(scene_id, time, platform_name(platform), relative_orbit, orbit_direction(orbit_state))

    def same_acquisition(self, other: Product) -> bool:
        """Whether ``other`` is a product of this acquisition: seen within :data:`PASS_GAP_S` (a tile is seen once
        a pass), and no platform, orbit or orbit state that both say differs."""
        return (within_pass_gap(self.time, other.time)
                and all(a == b or not a or not b for a, b in ((self.platform, other.platform),
                                                              (self.orbit_state, other.orbit_state)))
                and (self.relative_orbit == other.relative_orbit or -1 in (self.relative_orbit, other.relative_orbit)))


def same_pass_product(scene: SourceScene, products: Mapping[str, Sequence[Product]]) -> str | None:
    """The scene id among ``products`` (by tile) that ``scene`` is another product of
    (:meth:`Product.same_acquisition`). For a cube of per-tile products (Sentinel-2 L2A), that is the same
    acquisition, even where the items' times differ by seconds (a reprocessed product, or another provider's
    convention for the time) or one of them spells the platform otherwise or leaves the orbit out."""
    this = Product.of(scene.scene_id, scene.time, scene.platform, scene.relative_orbit, scene.orbit_state)
    return next((p.scene_id for p in products.get(scene.tile, ()) if this.same_acquisition(p)), None)


def committed_pass_dates(head: CubeVersion, scenes: Sequence[SourceScene]) -> dict[str, str]:
    """Per split piece of ``scenes`` whose pass already has a date on its tile in ``head``: that date's scene id.
    Committed dates never change, so such a slice goes in as a date of its own."""
    found = {}
    for s in scenes:
        key = pass_key(s)
        if key is None or key.tile not in head.tiles:
            continue
        for a in head.tiles[key.tile].acquisitions:
            record = head.scenes.get(a.scene_id)
            if (record is not None and record.collection == key.collection and a.platform == key.platform
                    and a.relative_orbit == key.relative_orbit and a.orbit_state == key.orbit_state
                    and within_pass_gap(a.time, s.time)):
                found[s.scene_id] = a.scene_id
                break
    return found
