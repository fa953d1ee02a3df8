"""Items of no MGRS tile, split into one scene per tile their footprint overlaps: with ``warp``.

Planetary Computer's ``sentinel-1-rtc`` items, like most products made from whole Sentinel-1 GRD scenes, cover a
footprint of some 250 x 170 km on a UTM grid of their own and name no MGRS tile. The cube is kept per tile, so
such an item becomes one :class:`~ingest.sources.SourceScene` per tile its footprint (the item's geometry)
overlaps, each resampled onto its tile by :mod:`ingest.warp` and checked, written and recorded on its own. Its
scene id is the item's with the tile appended (``<item>_T31UFU``): stable from run to run, so a second ingest of
the item skips the tiles already in, and the ledger keeps the item's id beside it (``SceneRecord.item``). The
pieces that the consecutive slices of one pass lay on one tile become one date (:mod:`ingest.passes`).

The footprint only chooses the tiles; what goes into each is read from the raster, and a tile the footprint
overlaps with nodata only (a GRD's collar over a tile's corner) is rejected by the checks, not written empty. The
checks also hold the raster to the footprint (:func:`ingest.warp.check_item_ground`): files whose geotransform or
CRS label puts them elsewhere would go in where they say, on the tiles the footprint chose.
Without ``warp`` nothing is split: such an item is rejected, and the reason names the option. Only backscatter
items are split (:func:`splits_items`): a Sentinel-2 L2A product is made per tile, so one naming no tile lacks
its metadata rather than covering several tiles.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from odc.geo.geom import Geometry

from cardcube.grid import tiles_overlapping
from cardcube.spec import CubeSpec
from ingest.sources import SourceScene


def splits_items(spec: CubeSpec) -> bool:
    """Whether items of no tile are split for ``spec``'s cube: backscatter (bands in dB) only. Split, a Sentinel-2
    product of no tile would lay strips on its neighbouring tiles at its datatake's time, taking the (tile, time)
    slot of the neighbours' own products, which would then be rejected as duplicates for good."""
    return spec.backscatter


def tile_scene_id(item_id: str, tile: str) -> str:
    """The scene id of ``tile``'s piece of item ``item_id``."""
    return f"{item_id}_T{tile}"


def split_by_tile(scene: SourceScene) -> list[SourceScene]:
    """``scene`` once per MGRS tile its footprint overlaps, by tile id; ``[scene]`` unchanged if it names its tile,
    or has no footprint or one that overlaps no tile (the checks then reject it, saying so)."""
    if scene.tile or not scene.geometry:
        return [scene]
    tiles = tiles_overlapping(Geometry(scene.geometry, "EPSG:4326"))
    if not tiles:
        return [scene]
    return [dataclasses.replace(scene, scene_id=tile_scene_id(scene.scene_id, t.tile_id), tile=t.tile_id,
                                item_id=scene.scene_id) for t in tiles]


def split_scenes(scenes: Iterable[SourceScene]) -> list[SourceScene]:
    """Every scene of ``scenes``, those of no tile split by :func:`split_by_tile`, in order."""
    return [piece for scene in scenes for piece in split_by_tile(scene)]
