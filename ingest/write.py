"""Executing one shard write: gather the dates' pixels, write one whole shard per band.

Each task covers exactly one shard region, so no two tasks ever touch the same stored object, and each writes whole
shards, which zarr need not read first (:class:`_WholeShards`). Pixels come from the source COGs (windowed reads of
a local file, or of the checked copy of a remote one in the spool, :mod:`ingest.spool`; resampled onto the shard's
piece of the tile grid for a scene ingested with ``warp``, :mod:`ingest.warp`; a date mosaicked from the slices of a
pass or the products of a Sentinel-2 acquisition each holding part of the tile, :mod:`ingest.passes`, from each in
time order, where the earlier left nodata) or, when compacting, from committed hot-buffer slots, each shard checked
against its block's manifest first (:mod:`cube.manifest`). A repair writes a lost or damaged shard of a committed
cold block again (:func:`rewrite_shard`; :func:`rebuild_shards` for a block whose manifest is lost,
:mod:`ingest.repair`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np
import rasterio
import zarr
from rasterio.errors import RasterioIOError
from rasterio.windows import Window
from zarr.abc.store import ByteRequest, Store
from zarr.core.array import AsyncArray
from zarr.core.buffer import Buffer, BufferPrototype
from zarr.storage import StorePath, WrapperStore

from cardcube.errors import CorruptShardError, MissingShardError, SceneReadError
from cardcube.grid import TileGrid
from cardcube.source_files import gdal_path, gdal_source_config, shown_href
from cardcube.spec import BandSpec, CubeSpec
from cardcube.storage import read_bytes
from cube.manifest import BlockManifest
from cube.shard_reader import VALUES_DIFFER, check_shard, shard_key, values_checksum
from cube.tile_arrays import sized_view
from ingest.arrays import open_array
from ingest.commit import Fence
from ingest.plan import DateSource, ShardWrite
from ingest.sources import REFUSED_ADVICE
from ingest.spool import is_remote
from ingest.validate import CheckedScene, file_checksum, file_stamp
from ingest.values import ValueMap
from ingest.warp import read_warped, valid_pixels


def _overlap(a0: int, a1: int, b0: int, b1: int) -> tuple[int, int] | None:
    lo, hi = max(a0, b0), min(a1, b1)
    return (lo, hi) if lo < hi else None


StoredShard = tuple[str, bool, int, str, int, int, int]  # tile, hot, time block, band, shard row, column, crc32


HotManifests = Mapping[int, BlockManifest | None]  # the manifest of each hot slot a write compacts (None: none)


def write_shard(store: Store, spec: CubeSpec, task: ShardWrite, fence: Fence,
                hot_manifests: HotManifests | None = None) -> list[StoredShard]:
    """Write every band of ``task.resolution`` for ``task.dates`` into the task's shard region, checking
    ``fence`` (the writer lock still held) right before each band's write; the shards stored, for the
    blocks' manifests (:mod:`cube.manifest`): zarr stores none that holds only the fill value.
    ``hot_manifests``: the manifests of the committed hot slots among ``task.dates``, by slot, which their
    values are checked against before they move into a cold block (a slot missing here has none)."""
    manifests = hot_manifests or {}
    with rasterio.Env(**gdal_source_config()):  # sources on s3:// are read by GDAL, in byte ranges
        return [s for band in spec.bands_at(task.resolution)
                for s in _write_band(store, spec, task, band, fence, manifests)]


def _holds_data(values: np.ndarray, fill: float) -> bool:
    """Whether ``values`` hold anything but ``fill`` (NaN for NaN), as zarr decides whether to store a shard."""
    return bool(np.any(~np.isnan(values))) if np.isnan(fill) else bool(np.any(values != fill))


def rewrite_shard(store: Store, spec: CubeSpec, task: ShardWrite, band: str, checksum: int, fence: Fence) -> str:
    """Write ``band``'s shard of a committed cold block again (``task``: its region, its dates read again from their
    files), if the values are those ingest wrote there, the crc32 ``checksum`` its manifest records: every version
    reading the block then reads what it read before the shard was lost or damaged. Its store key."""
    values = _block_values(store, spec, task, spec.band(band), {})
    target = open_array(store, spec, task.tile, task.resolution, band, hot=False, mode="r+")
    key = _cold_key(target, spec, task)[0]
    if values_checksum(values) != checksum:
        raise CorruptShardError(
            f"repair: shard {key} read again from its dates' files (the bytes the ledger records) does not hold the "
            "values ingest wrote (crc32 of the values, against the block's manifest): not written. The files were "
            "read otherwise then (another cardcube, other options: --warp, --linear-power) or the manifest is "
            "damaged; restore the shard from a backup")
    _store(target, task, values, fence)
    return key


def rebuild_shards(store: Store, spec: CubeSpec, task: ShardWrite, fence: Fence) -> tuple[list[StoredShard], list[str]]:
    """The shards of a committed cold block whose manifest is lost, in the task's region, each band's values read
    again from the dates' files (``task``) and compared with the shard stored: one that holds them is kept, one lost
    or that does not decode is written again; one holding other values stops the repair (the files and the shard
    disagree, and no manifest tells which is right). The shards the block stores there (for its manifest anew) and
    the keys written."""
    stored, written = [], []
    for band in spec.bands_at(task.resolution):
        values = _block_values(store, spec, task, band, {})
        target = open_array(store, spec, task.tile, task.resolution, band.name, hot=False, mode="r+")
        key, coords = _cold_key(target, spec, task)
        data, crc = read_bytes(store, key), values_checksum(values)
        holds = _holds_data(values, band.fill)
        problem = check_shard(target, key, data, coords=coords, checksum=crc if holds else None)  # decoded once
        sound = problem is None or problem == VALUES_DIFFER
        if sound and (not holds or problem is not None):
            raise CorruptShardError(
                f"repair: shard {key} holds other values than its dates' files give (the bytes the ledger records), "
                "and its block's manifest, which would tell which is right, is lost: not repaired; restore the shard "
                "and the manifest from a backup")
        if holds and not sound:
            _store(target, task, values, fence)
            written.append(key)
        if holds:
            stored.append((task.tile, False, coords[0], band.name, coords[1], coords[2], crc))
    return stored, written


def _cold_key(target: zarr.Array, spec: CubeSpec, task: ShardWrite) -> tuple[str, tuple[int, int, int]]:
    """The store key and shard-grid place of the task's shard of a cold block in ``target``."""
    _, sr, sc = target.shards
    coords = (task.time_start // spec.chunks.time, task.rows[0] // sr, task.cols[0] // sc)
    return shard_key(target, coords), coords


def _write_band(store: Store, spec: CubeSpec, task: ShardWrite, band: BandSpec, fence: Fence,
                manifests: HotManifests) -> list[StoredShard]:
    block = _block_values(store, spec, task, band, manifests)
    target = open_array(store, spec, task.tile, task.resolution, band.name, hot=task.hot, mode="r+")
    _store(target, task, block, fence)
    _, sr, sc = target.shards
    fill = band.fill
    parts = [block[i:i + 1] for i in range(len(task.dates))] if task.hot else [block]
    return [(task.tile, task.hot, b, band.name, task.rows[0] // sr, task.cols[0] // sc, values_checksum(part))
            for b, part in zip(task.blocks(spec.chunks.time), parts, strict=True) if _holds_data(part, fill)]


def _store(target: zarr.Array, task: ShardWrite, values: np.ndarray, fence: Fence) -> None:
    """Write ``values`` over the task's whole shard region, without reading the shard first."""
    (r0, r1), (c0, c1) = task.rows, task.cols
    t0, t1 = task.time_start, task.time_start + len(task.dates)
    path = StorePath(_WholeShards(target.store_path.store), target.store_path.path)
    whole = zarr.Array(AsyncArray(target.metadata, path, config=target._async_array.config))
    fence.check()
    sized_view(whole, t1)[t0:t1, r0:r1, c0:c1] = values


class _WholeShards(WrapperStore[Store]):
    """A store through which every shard reads as absent. zarr's sharding codec reads the shard it writes to merge
    the write into it: a request per shard (a 404 on object storage, for a block not written yet), and a failure on
    the damaged shard a repair writes over. The cube's writes cover whole shards, so there is nothing to merge."""

    async def get(self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None) -> Buffer | None:
        if "/c/" in key:
            return None
        return await self._store.get(key, prototype, byte_range)


def _block_values(store: Store, spec: CubeSpec, task: ShardWrite, band: BandSpec, manifests: HotManifests
                  ) -> np.ndarray:
    """The values of ``band`` for the task's dates in its shard region, from their files or committed hot slots."""
    (r0, r1), (c0, c1) = task.rows, task.cols
    fill = band.fill
    block = np.full((len(task.dates), r1 - r0, c1 - c0), fill, dtype=band.dtype)
    for i, date in enumerate(task.dates):
        if date.scene is not None:
            for k, part in enumerate(date.scene.slices):  # first valid wins, in time order (ingest.passes)
                _fill_from(part, block[i], task, band, fill, where_nodata=k > 0)
        else:
            block[i] = _hot_values(store, spec, task, band, date, manifests.get(date.hot_slot))
    if np.isnan(fill):  # one NaN: zarr stores no chunk of NaN only (the fill), whose bits would read back otherwise
        block[np.isnan(block)] = fill  # (x86's invalid operations give NaN with its sign bit set), and the crc differ
    return block


def _hot_values(store: Store, spec: CubeSpec, task: ShardWrite, band: BandSpec, date: DateSource,
                manifest: BlockManifest | None) -> np.ndarray:
    """What the committed hot slot of ``date`` holds of ``band`` in the task's region (one shard of the slot), for a
    compaction to move into a cold block: checked first, as ``verify --deep`` checks, against the crc32 its
    manifest records. Read as it is, a lost shard would go into the cold block as nodata and a damaged one as wrong
    values, for good, with the cold block's new checksum vouching for them."""
    hot = open_array(store, spec, task.tile, task.resolution, band.name, hot=True)
    (r0, r1), (c0, c1) = task.rows, task.cols
    _, sr, sc = hot.shards
    coords = (date.hot_slot, r0 // sr, c0 // sc)
    crc = None if manifest is None else manifest.shards.get(band.name, {}).get(coords[1:])
    try:
        values = hot[date.hot_slot:date.hot_slot + 1, r0:r1, c0:c1]
        if crc is None or values_checksum(values) == crc:  # not listed: no data there (or a block of no manifest)
            return values[0]
    except (ValueError, RuntimeError):  # an index failing its crc32c, a chunk blosc cannot decode: told below
        pass
    key = shard_key(hot, coords)
    problem = check_shard(hot, key, read_bytes(store, key), coords=coords, checksum=crc) or "could not be read"
    a = date.acquisition
    raise (MissingShardError if problem == "missing" else CorruptShardError)(
        f"hot-buffer shard {key} (the date of {a.time}, scene {a.scene_id}): {problem}. This ingest was to "
        "move the date into a cold block, and commits nothing rather than make the damage the cold block's: restore "
        "the shard from a backup, or offer the scene again with --repair (Python: repair=True; read again from its "
        "files, which must be the bytes the ledger records), and run it again (`cardcube verify --deep` lists every "
        "damaged shard)")


def _fill_from(scene: CheckedScene, shard: np.ndarray, task: ShardWrite, band: BandSpec, fill: float, *,
               where_nodata: bool) -> None:
    """Put ``band`` of source ``scene`` into ``shard`` (one date of the task's shard region) over the pixels its
    window covers; ``where_nodata``: only those still nodata there (a later slice of a mosaicked pass, whose
    earlier slices' valid pixels win)."""
    (r0, r1), (c0, c1) = task.rows, task.cols
    wr, wc, wh, ww = scene.windows[task.resolution]
    rows, cols = _overlap(r0, r1, wr, wr + wh), _overlap(c0, c1, wc, wc + ww)
    if rows is None or cols is None:
        return
    out = shard[rows[0] - r0:rows[1] - r0, cols[0] - c0:cols[1] - c0]
    vmap = scene.values.get(band.name, ValueMap(fill))
    href, path = scene.scene.assets[band.name], scene.paths[band.name]  # path: the spooled copy of a remote href
    try:
        with rasterio.open(gdal_path(path)) as ds:
            if band.name in scene.warped:
                target = TileGrid.from_id(task.tile).geobox(task.resolution)[rows[0]:rows[1], cols[0]:cols[1]]
                values = read_warped(ds, band, vmap, target, scene.warped[band.name])
            else:
                win = Window(cols[0] - wc, rows[0] - wr, cols[1] - cols[0], rows[1] - rows[0])
                values = vmap.apply(ds.read(1, window=win))
    except RasterioIOError as exc:  # checked a moment ago: gone, or a signature expired since (nothing committed)
        said = str(exc).replace(href, shown_href(href))  # GDAL may quote the URL, signature and all
        refused = f"; {REFUSED_ADVICE}" if re.search(r"\b40[13]\b", said) else ""
        where = shown_href(href) if path == href else f"its checked copy {path} in the spool (of {shown_href(href)})"
        raise SceneReadError(scene.scene_id, f"band {band.name} could not be read again from {where} to write it "
                             f"(this run commits nothing): {said}{refused}") from None
    # read: was it the file checked? its bytes, where its size or time changed (copied again unchanged)
    if band.name in scene.stamps and (now := file_stamp(path)) != scene.stamps[band.name] \
            and (is_remote(path) or file_checksum(path, now) != scene.checksums[band.name]):
        what = "changed since it was checked" if now is not None else \
            "could not be looked up again to tell it is the file checked (gone, or its server no longer answers)"
        raise SceneReadError(scene.scene_id, f"band {band.name} {what} ({shown_href(href)}: rewritten, or another "
                             "file put in its place?), so what would go in may not be what was checked and hashed; "
                             "this run commits nothing: run it again once the source is settled")
    if where_nodata:
        empty = ~valid_pixels(out, band)
        out[empty] = values[empty]
    else:
        out[...] = values
