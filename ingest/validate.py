"""Checking a source scene before anything is written: every band is read in full.

Opening a file proves little (a truncated COG opens and fails only when its last blocks are read), so
:func:`check_scene` reads every band completely, checks CRS, pixel size and alignment against the MGRS
tile grid, dtype, that all bands cover the same footprint, that the scene holds data and that backscatter
is in dB. It works out how the file's values become stored ones (:mod:`ingest.values`: its nodata, its
reflectance offset, linear power to dB where something says the band is linear), and hashes each file, so
the ledger can record what exactly went in. What depends on the file alone (:func:`check_file`: read, hash,
dtype, CRS, counts) is apart from what depends on the tile (placement or warp window, the valid-pixel check),
so the pieces of a split item share one read of each file (:func:`check_files`). A remote file that passes
is kept in the run's spool (:mod:`ingest.spool`), and the writes read that copy of the bytes checked.

Two options widen what is taken, each only when asked for: ``linear_power`` (a band unsaid is linear power,
converted to dB) and ``warp`` (a scene off the tile grid is resampled onto it, :mod:`ingest.warp`). Without
them a scene that needs either is rejected, and the reason names the option.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import fsspec
import numpy as np
import rasterio
from aiohttp import ClientResponseError
from botocore.exceptions import ConnectionError as BotoConnectionError
from botocore.exceptions import NoCredentialsError, ReadTimeoutError
from odc.geo.geobox import GeoBox
from rasterio.enums import MaskFlags
from rasterio.errors import RasterioError
from rasterio.io import DatasetReader, MemoryFile
from rasterio.windows import Window as RasterWindow
from shapely.geometry.base import BaseGeometry

from cardcube.errors import (
    NoDataOnTileError,
    SceneContentError,
    SceneError,
    SceneGridError,
    SceneReadError,
    StoreError,
    StoreUnavailableError,
)
from cardcube.grid import TileGrid
from cardcube.source_files import gdal_path, gdal_source_config, shown_href, source_options
from cardcube.spec import BandSpec, CubeSpec
from cardcube.store_errors import unavailable
from ingest.assets import no_band_reason
from ingest.sources import REFUSED_ADVICE, SourceScene
from ingest.split import splits_items
from ingest.spool import is_remote, keep
from ingest.values import LINEAR_POWER_OPTION, ValueMap, linear_power_reason, unit_scale, value_map
from ingest.warp import (
    Window,
    check_item_ground,
    check_same_ground,
    data_polygon,
    data_windows,
    has_valid_pixel,
    kernel_reach,
    valid_extents,
    valid_pixels,
    valid_reach,
    warp_record,
)

WARP_OPTION = "ingest(..., warp=True), cardcube ingest --warp"
FileStamp = tuple[int, int | str]  # size, and a local file's modification time (ns) or a remote one's ETag


def file_stamp(href: str) -> FileStamp | None:
    """A band file's size and modification time (ns), or, over the network, its size and the ETag (else
    Last-Modified) its server gives in answer to a HEAD: what another file put in its place or the file rewritten
    changes (a sync job at work on the source folder, a producer republishing a scene). None if there is no such
    file or no answer (a signed URL that refuses a HEAD and a GET alike): then nothing is compared."""
    if is_remote(href):
        return _remote_stamp(href)
    try:
        st = os.stat(_local_path(href))
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def _remote_stamp(href: str) -> FileStamp | None:
    try:
        fs, path = fsspec.core.url_to_fs(href, **source_options(href))
        fs.invalidate_cache(path)  # s3fs answers from its listings' cache otherwise
        info = fs.info(path)  # HEAD (fsspec's HTTP: a GET's headers if HEAD is refused, without its body)
    except (OSError, ClientResponseError, BotoConnectionError, ReadTimeoutError):
        return None
    tag = info.get("ETag") or info.get("LastModified") or info.get("Last-Modified") or ""
    return None if info.get("size") is None else (int(info["size"]), str(tag))


@functools.lru_cache(maxsize=256)
def file_checksum(href: str, stamp: FileStamp | None) -> str | None:
    """The checksum of a local file's bytes as ingest records it (a file copied again unchanged has a new
    :func:`file_stamp`, not a new checksum); None if it cannot be read. ``stamp``: its stamp now, so that the
    shard writes of a process that read it hash it once."""
    try:
        with open(_local_path(href), "rb") as f:
            return _checksum(f.read())
    except OSError:
        return None


def _local_path(href: str) -> str:
    return urlparse(href).path if href.startswith("file:") else href


def _checksum(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# Multihash codes (with the digest's length) of the hashes hashlib computes: sha1, sha2-256, sha2-512, md5.
_MULTIHASHES = {"1114": "sha1", "1220": "sha256", "1340": "sha512", "d50110": "md5"}


def _check_declared(scene: SourceScene, band: str, data: bytes, shown: str, checksum: str) -> None:
    """:class:`SceneReadError` if the bytes read of ``band``'s file are not those its item declares (``file:size``,
    ``file:checksum``): a file corrupt in transit or at the source may still decode, to other values or to nodata
    (50 bytes changed in a 13 kB deflate COG: 38 % of its pixels read as 0, without an error from GDAL). A
    checksum of a hash hashlib does not compute (BLAKE3) is not checked; ``checksum``: the file's own
    (:func:`_checksum`), so a declared SHA-256 is not computed twice."""
    size, multihash = scene.declared.get(band, (None, None))
    if size is not None and size != len(data):
        raise SceneReadError(scene.scene_id, f"band {band} is {len(data):,} bytes ({shown}), its item's file:size "
                                             f"says {size:,}: a download cut short, or another file")
    known = [(prefix, name) for prefix, name in _MULTIHASHES.items() if multihash is not None
             and multihash.startswith(prefix) and len(multihash) == len(prefix) + 2 * int(prefix[-2:], 16)]
    for prefix, name in known:
        digest = checksum.removeprefix("sha256:") if name == "sha256" else hashlib.new(name, data).hexdigest()
        if digest != multihash[len(prefix):]:
            raise SceneReadError(scene.scene_id, f"band {band}'s file ({shown}) is not the one its item's "
                                                 f"file:checksum names ({name}): corrupt in transit or at the "
                                                 f"source, or another file")


@dataclass(frozen=True, slots=True)
class CheckedScene:
    """A scene that passed every check: where it sits in its tile and what its files hash to."""

    scene: SourceScene
    windows: dict[int, Window]  # per native resolution
    checksums: dict[str, str]
    source_bytes: int = 0  # of its band files, as read for the checks
    values: dict[str, ValueMap] = field(default_factory=dict)  # per band: file values to stored ones
    converted: dict[str, str] = field(default_factory=dict)  # per band taken as linear power: why
    warped: dict[str, dict[str, Any]] = field(default_factory=dict)  # per band, if resampled: how (ingest.warp)
    parts: tuple[CheckedScene, ...] = ()  # a date mosaicked from a pass's slices (ingest.passes): each, in time order
    paths: dict[str, str] = field(default_factory=dict)  # per band: where the writes read it (CheckedFile.path)
    stamps: dict[str, FileStamp] = field(default_factory=dict)  # per band read again from its href: CheckedFile.stamp
    footprint: BaseGeometry | None = None  # resampled: where in its windows its valid pixels reach (data_polygon),
    # None where that is their whole box
    coverage: np.ndarray | None = field(default=None, compare=False)  # on the tile grid: where in its finest window
    # its valid pixels are, per cell (coverage_cells): what tells another datastrip's product of its acquisition from
    # a reprocessing (ingest.passes.another_part); None for one resampled

    @property
    def scene_id(self) -> str:
        return self.scene.scene_id

    @property
    def slices(self) -> tuple[CheckedScene, ...]:
        """What this date's pixels come from, in time order: its parts, or itself alone."""
        return self.parts or (self,)


def _dtype_advice(band: BandSpec) -> str:
    """How to write a file of backscatter the cube reads (dB in hundredths as int16 is a common delivery); "" for
    another band."""
    if band.units != "dB":
        return ""
    return (f": the cube reads backscatter as {band.dtype} (dB, or linear power said so); write it as {band.dtype}, "
            "its scale applied (gdal_translate -ot Float32 -unscale)")


def _file_nodata(scene: SourceScene, band: BandSpec, ds: DatasetReader) -> float | None:
    """The nodata value of ``band``'s file: its GeoTIFF tag, else what its STAC asset says (``raster:bands``);
    both, differing, are a :class:`SceneContentError`, as is a file that marks its nodata with a mask band only
    (cardcube reads values, not masks: the masked pixels would go in as measurements)."""
    tag, said = ds.nodata, scene.nodata.get(band.name)
    if tag is not None and said is not None and not _same_value(tag, said, ds.dtypes[0]):
        raise SceneContentError(scene.scene_id, f"band {band.name}: its file's nodata is {tag}, its item's "
                                                f"raster:bands say {said}; which pixels are nodata is unclear")
    nodata = tag if tag is not None else said
    flags = ds.mask_flag_enums[0]
    if nodata is None and (MaskFlags.per_dataset in flags or MaskFlags.alpha in flags):
        raise SceneContentError(scene.scene_id, f"band {band.name} marks its nodata with a mask band, which cardcube "
                                                "does not read: give the file a nodata value (gdal_translate "
                                                "-a_nodata), or say it in the item's raster:bands")
    return nodata


def _same_value(a: float, b: float, dtype: str) -> bool:
    """Whether ``a`` and ``b`` are one value of a file of ``dtype``, as its pixels are compared with its nodata
    (float32's lowest, or 0.1, written at float32 precision by one and float64 by the other); NaN is NaN."""
    if np.dtype(dtype).kind != "f":
        return a == b
    with np.errstate(over="ignore", invalid="ignore"):
        x, y = np.array([a, b]).astype(dtype)
    return bool(x == y or (np.isnan(x) and np.isnan(y)))


def _read_file(scene: SourceScene, band: str, href: str) -> bytes:
    """A band file's bytes (one GET over HTTP: a refusal keeps its status, where fsspec's HEAD first would
    turn any of them into "not found"); a signed URL's query string is left out of the reason."""
    shown = shown_href(href)
    try:
        fs, path = fsspec.core.url_to_fs(href, **source_options(href))
        return fs.cat_file(path)
    except FileNotFoundError:
        raise SceneReadError(scene.scene_id, f"band {band} file not found: {shown}") from None
    except ClientResponseError as exc:  # HTTP(S): fsspec's aiohttp, for a status other than 404
        refused = f": {REFUSED_ADVICE}" if exc.status in (401, 403) else ""
        raise SceneReadError(scene.scene_id, f"band {band} cannot be read from {shown}: HTTP {exc.status} "
                             f"{exc.message}{refused}") from None
    except OSError as exc:
        said = str(exc).replace(href, shown)
        raise SceneReadError(scene.scene_id, f"band {band} cannot be read from {shown}: {said}") from None
    except (BotoConnectionError, ReadTimeoutError) as exc:  # the S3 endpoint of every s3:// source, not the scene
        raise _unanswered(scene, band, shown, exc) from None
    except NoCredentialsError as exc:
        raise _without_keys(scene, band, href, exc) from None
    except Exception as exc:  # an answer cut off midway after s3fs's tries (aiohttp's ClientPayloadError): rejected
        if not unavailable(exc):  # the scene as an "unexpected error", a version committed of that rejection
            raise
        raise _unanswered(scene, band, shown, exc) from None


def _unanswered(scene: SourceScene, band: str, shown: str, exc: Exception) -> StoreUnavailableError:
    """The error of a band file the sources' S3 endpoint does not answer for: the run stops, no scene rejected."""
    return StoreUnavailableError(f"cannot read {shown} (band {band} of scene {scene.scene_id}): {exc}; the S3 "
                                 f"endpoint of the sources (AWS_ENDPOINT_URL) is not answering, which is no "
                                 f"fault of the scene: nothing of this run is committed, run it again once "
                                 f"the endpoint answers")


def _without_keys(scene: SourceScene, band: str, href: str, exc: NoCredentialsError) -> StoreError:
    """The error of a band file read without S3 keys: those of every s3:// source, not the scene's fault, so the
    run stops (none is rejected for it: the ledger would list the scenes as ones to fix)."""
    return StoreError(f"cannot read {shown_href(href)} (band {band} of scene {scene.scene_id}): no S3 credentials "
                      f"found ({exc}); set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) where the "
                      f"scenes are read (with --scheduler, in the dask workers' environment too), which is no fault "
                      f"of the scene: nothing of this run is committed")


@dataclass(frozen=True, slots=True)
class CheckedFile:
    """One band file read in full and checked on its own, whatever tile it goes into: what it hashes to, its
    grid, how its values become stored ones and how many are valid. The pieces of a split item share it."""

    path: str  # where the writes read it: its copy in the spool (a remote file, ingest.spool), else its href
    checksum: str
    size: int  # bytes read
    geobox: GeoBox
    values: ValueMap
    converted: str | None  # why it is taken as linear power, None if it is not
    counts: _Counts
    stamp: FileStamp | None = None  # as it was before it was read (file_stamp); None for one read from the spool


def check_file(scene: SourceScene, band: BandSpec, *, linear_power: bool = False,
               check_grid: Callable[[GeoBox], object] | None = None, spool: str | None = None,
               coverage: bool = False) -> CheckedFile:
    """Read ``band``'s file of ``scene`` whole (one at a time in memory), hash it, check its layers, dtype and CRS
    and count its valid values; raise a :class:`SceneError` subclass naming the problem. ``check_grid``: run on
    the file's grid before its values are decoded (a scene's placement on its tile: a file off it is rejected
    without decoding it). ``spool``: the folder where a remote file that passes is kept for the writes, as read
    (:mod:`ingest.spool`); None: they read it from its href again."""
    sid, href = scene.scene_id, scene.assets[band.name]
    shown = shown_href(href)  # a signed URL's signature is a credential: never in a reason, which the ledger keeps
    spooled = spool is not None and is_remote(href)  # then the writes read the bytes read here: no stamp
    try:
        stamp = None if spooled else file_stamp(href)  # before the read: a file changed while it is read differs
    except NoCredentialsError as exc:  # its HEAD (--no-spool, a --scheduler's workers), before _read_file
        raise _without_keys(scene, band.name, href, exc) from None
    data = _read_file(scene, band.name, href)
    if not data:  # GDAL would say "'driver' is required to read/write dataset"
        raise SceneReadError(sid, f"band {band.name} is an empty file ({shown}, 0 bytes)")
    checksum = _checksum(data)
    _check_declared(scene, band.name, data, shown, checksum)
    try:
        with MemoryFile(data) as mem, mem.open() as ds:
            if ds.count != 1:
                raise SceneContentError(sid, f"band {band.name} has {ds.count} layers, expected 1")
            if ds.dtypes[0] != band.dtype:
                raise SceneContentError(sid, f"band {band.name} is {ds.dtypes[0]}, expected {band.dtype}"
                                             f"{_dtype_advice(band)}")
            _check_description(scene, band, href, ds.descriptions[0])
            if ds.crs is None:
                raise SceneGridError(sid, f"band {band.name} has no CRS")
            geobox = GeoBox(ds.shape, ds.transform, ds.crs)
            if check_grid is not None:
                check_grid(geobox)
            why = linear_power_reason(scene, band, linear_power=linear_power)
            vmap = value_map(scene, band, _file_nodata(scene, band, ds), to_db=why is not None)
            counts = _count(ds, band, vmap, coverage=coverage)
    except SceneError:
        raise
    except (RasterioError, OSError, ValueError) as exc:
        raise SceneReadError(sid, f"band {band.name} is truncated or corrupt ({shown}, {len(data):,} bytes): "
                                  f"{_gdal_reason(exc)}") from None
    path = keep(spool, href, data, checksum) if spooled else href
    return CheckedFile(path, checksum, len(data), geobox, vmap, why, counts, stamp)


def check_scene(scene: SourceScene, spec: CubeSpec, *, linear_power: bool = False, warp: bool = False,
                files: Mapping[str, CheckedFile] | None = None, spool: str | None = None) -> CheckedScene:
    """Read and check every band of ``scene``; raise a :class:`SceneError` subclass naming the problem.

    ``linear_power``: a backscatter band whose metadata says no unit is linear power (converted to dB);
    ``warp``: a scene off the tile grid (CRS, pixel size, origin, extent) is resampled onto it, and must hold a
    valid pixel on its tile once resampled (an item of no tile is split per tile before, :mod:`ingest.split`).
    ``files``: its bands' files as checked already, per band (the pieces of one item, :func:`check_files`),
    else each is read here (a remote one kept in the ``spool`` folder, :func:`check_file`)."""
    sid = scene.scene_id
    tile = _tile_of(scene, spec, warp=warp)
    _check_assets(scene, spec)
    windows: dict[int, Window] = {}
    geoboxes: dict[str, GeoBox] = {}
    extents: dict[str, np.ndarray | None] = {}  # per band: where its file's valid pixels are, row by row
    off_grid = False  # with ``warp``: some band is not on the tile grid, so the whole scene is resampled
    checksums: dict[str, str] = {}
    paths: dict[str, str] = {}
    stamps: dict[str, FileStamp] = {}
    values: dict[str, ValueMap] = {}
    converted: dict[str, str] = {}
    valid = size = 0
    counts: dict[str, int] = {}  # valid pixels per band
    cells: dict[str, _Counts] = {}  # per band: its counts, with where its valid pixels are (coverage_cells)
    # a coverage map of the finest bands (every band of backscatter), to tell another part of a date from a
    # reprocessing (ingest.passes.another_part): 0.16 s of numpy a 10980 px band
    finest = min(b.resolution for b in spec.bands)
    for band in spec.bands:
        href = scene.assets[band.name]
        if files is None:  # placed before it is decoded, as the file is read
            file = check_file(scene, band, linear_power=linear_power, spool=spool, coverage=band.resolution == finest,
                              check_grid=lambda g, b=band, h=href: _place_or_warp(tile, b, g, h, sid, warp=warp))
        else:
            file = files[band.name]
        geobox = file.geobox
        checksums[band.name] = file.checksum
        paths[band.name] = file.path
        if file.stamp is not None:
            stamps[band.name] = file.stamp
        size += file.size
        placed = _place_or_warp(tile, band, geobox, href, sid, warp=warp)
        if placed is None:
            off_grid = True
        row, col = placed or (-1, -1)
        geoboxes[band.name] = geobox
        extents[band.name] = file.counts.extents
        if file.converted is not None:
            converted[band.name] = file.converted
        values[band.name] = file.values
        window = (row, col, *geobox.shape)
        previous = windows.setdefault(band.resolution, window)
        if previous != window and not off_grid:
            problem = SceneGridError(sid, f"band {band.name} covers {window}, other {band.resolution} m bands "
                                          f"{previous}")
            if not warp:
                raise _with_warp_hint(problem)
            off_grid = True
        _check_units(sid, band, file.counts, file.converted, scene.units.get(band.name))
        _check_flags(sid, band, file.counts)
        valid += file.counts.valid
        counts[band.name] = file.counts.valid
        cells[band.name] = file.counts
    _check_blank_bands(scene, spec, counts)
    _check_polarisations(scene, spec, cells)
    _check_distinct_files(scene, checksums, counts)
    if not off_grid:
        try:
            _check_footprints(sid, windows)
        except SceneGridError as exc:
            if not warp:
                raise _with_warp_hint(exc) from None
            off_grid = True
    if off_grid:
        check_same_ground(tile, geoboxes, scene_id=sid)
    check_item_ground(tile, geoboxes.values(), scene.geometry, scene_id=sid)  # the files lie under the item's geometry
    warped: dict[str, dict[str, Any]] = {}
    footprint = None
    if off_grid:  # every band resampled, on the tile pixels its valid pixels reach (its collar left out)
        warped = {b.name: warp_record(b, geoboxes[b.name], tile) for b in spec.bands}
        reach = [valid_reach(geoboxes[b.name], extents[b.name], tile.crs, pad=kernel_reach(warped[b.name]),
                             near=tile.bounds) for b in spec.bands if extents[b.name] is not None]
        windows = data_windows(tile, spec, geoboxes.values(), reach, scene_id=sid)  # {}: no valid pixel reaches it
        footprint = data_polygon(tile, windows, reach) if windows else None
    if valid == 0:
        raise SceneContentError(sid, "every pixel of every band is nodata")
    if warped and not (windows and _any_warped_valid(spec, tile, windows, paths, values, warped)):
        raise NoDataOnTileError(sid, f"no valid pixel on tile {tile.tile_id} once resampled onto it: its footprint "
                                     f"overlaps the tile, but only with nodata (its data lie beyond the tile)")
    coverage = None if off_grid else _coverage(spec, cells)
    return CheckedScene(scene, windows, checksums, size, values, converted, warped, paths=paths,
                        stamps=stamps, footprint=footprint, coverage=coverage)


def check_files(scene: SourceScene, spec: CubeSpec, *, linear_power: bool = False, spool: str | None = None
                ) -> dict[str, CheckedFile]:
    """:func:`check_file` of every band of ``scene``, one after the other: for the pieces of one split item
    (:mod:`ingest.split`: the same files, one tile each), whose files are then read, hashed and counted once for
    all of them (a whole GRD once, not once per tile), each piece checked on its tile by :func:`check_scene`."""
    _check_assets(scene, spec)
    return {b.name: check_file(scene, b, linear_power=linear_power, spool=spool) for b in spec.bands}


def _tile_of(scene: SourceScene, spec: CubeSpec, *, warp: bool) -> TileGrid:
    """The scene's MGRS tile; :class:`SceneGridError` if it names none, or one that does not exist."""
    sid = scene.scene_id
    if not scene.tile:
        if not splits_items(spec):
            raise SceneGridError(sid, "no MGRS tile in the scene metadata (grid:code, s2:mgrs_tile or mgrs:*): the "
                                      f"{spec.name} cube's products are made per tile, so an item must name its tile")
        if not warp:
            raise SceneGridError(sid, f"no MGRS tile in the scene metadata (grid:code); to split the item over the "
                                      f"MGRS tiles its footprint covers, each resampled onto its tile: {WARP_OPTION}")
        raise SceneGridError(sid, "no MGRS tile in the scene metadata (grid:code), nor a footprint (item geometry) "
                                  "overlapping one to split the item over")
    try:
        return TileGrid.from_id(scene.tile)
    except ValueError as exc:
        raise SceneGridError(sid, str(exc)) from None


def _check_assets(scene: SourceScene, spec: CubeSpec) -> None:
    """Every band of the cube has a file among the scene's assets."""
    missing = [b for b in spec.band_names if b not in scene.assets]
    if not scene.assets and scene.other_assets:
        raise SceneContentError(scene.scene_id, no_band_reason(list(scene.other_assets), spec))
    if missing:
        others = f" (its other assets: {', '.join(scene.other_assets)})" if scene.other_assets else ""
        raise SceneContentError(scene.scene_id, f"missing band(s) {', '.join(missing)}{others}")
    if empty := [b for b in spec.band_names if not scene.assets[b]]:
        raise SceneContentError(scene.scene_id, f"band {', '.join(empty)}'s asset has no href")


def _any_warped_valid(spec: CubeSpec, tile: TileGrid, windows: dict[int, Window], paths: dict[str, str],
                      values: dict[str, ValueMap], warped: dict[str, dict[str, Any]]) -> bool:
    """Whether some band of a scene resampled onto ``tile`` holds a valid pixel there. The source's valid count
    says nothing of it (its data may all lie beyond the tile), so the tile window is warped as the writer will,
    band after band until one valid pixel is found: cheap for a scene with data on the tile, the whole window
    for one without."""
    with rasterio.Env(**gdal_source_config()):
        for band in spec.bands:
            with rasterio.open(gdal_path(paths[band.name])) as ds:
                side = spec.chunks.shards(band.resolution)[1]
                if has_valid_pixel(ds, band, values[band.name], tile, windows[band.resolution],
                                   warped[band.name], side=side):
                    return True
    return False


def _place_or_warp(tile: TileGrid, band: BandSpec, geobox: GeoBox, href: str, scene_id: str, *, warp: bool
                   ) -> tuple[int, int] | None:
    """:func:`_place`, or None for a file off the tile grid that is to be resampled onto it (``warp``)."""
    try:
        return _place(tile, band, geobox, href, scene_id)
    except SceneGridError as exc:
        if not warp:
            raise _with_warp_hint(exc) from None
        return None


def _place(tile: TileGrid, band: BandSpec, geobox: GeoBox, href: str, scene_id: str) -> tuple[int, int]:
    """Row and column of the band's file in its tile; :class:`SceneGridError` if it is not on the tile grid (its
    CRS first, then its pixel size, then :meth:`TileGrid.window`)."""
    tile.check_crs(geobox, scene_id=scene_id)
    if abs(geobox.affine.a - band.resolution) > 1e-9:
        name = _file_name(href)
        raise SceneGridError(scene_id, f"band {band.name} ({name}) has {geobox.affine.a:g} m "
                                       f"pixels, expected {band.resolution} m")
    return tile.window(geobox, scene_id=scene_id)


def _with_warp_hint(exc: SceneGridError) -> SceneGridError:
    """The strict rejection of a scene off the tile grid, saying how to take it all the same."""
    return SceneGridError(exc.scene_id, f"{exc.reason} (to resample it onto the tile grid: {WARP_OPTION})")


def _file_name(href: str) -> str:
    """The name of the file at ``href`` for a reason (a signed URL's signature left out: the ledger keeps it)."""
    return shown_href(href).rsplit("/", 1)[-1]


def _check_description(scene: SourceScene, band: BandSpec, href: str, description: str | None) -> None:
    """A file whose band description (its GDAL/GeoTIFF band name) is another band of the cube is that band's: an
    item whose assets point at each other's files (swapped in a hand-made catalog) would put red in B08 and NIR in
    B04, silently, and a committed date never changes."""
    said = (description or "").strip().upper()
    other = next((name for name in scene.assets if name.upper() == said and name != band.name), None)
    if other is not None:
        name = _file_name(href)
        raise SceneContentError(scene.scene_id, f"band {band.name}'s file ({name}) says it is band "
                                                f"{other} (its band description): are the item's assets swapped?")


def _check_blank_bands(scene: SourceScene, spec: CubeSpec, valid: Mapping[str, int]) -> None:
    """A band nodata at every pixel while another band of its resolution, of the same pixels, holds data is a broken
    file (a failed download or conversion that left a valid GeoTIFF of nodata): taken in, its date would lack that
    band for good, as a committed date never changes and a product offered again for it is a duplicate."""
    for band in spec.bands:
        others = [b.name for b in spec.bands_at(band.resolution) if valid[b.name]]
        if not valid[band.name] and others:
            name = _file_name(scene.assets[band.name])
            raise SceneContentError(scene.scene_id, f"band {band.name} ({name}) is nodata at every pixel, where the "
                                                    f"other {band.resolution} m bands hold data ({', '.join(others)}): "
                                                    "a broken file? fix it and offer the scene again")


# Each cross-polarised band of backscatter, with its co-polarised band: the cross-polarised return is the weaker over
# any ground (some 5 to 10 dB below on a scene's mean), so one brighter is the other's file
CO_POLARISED = {"VH": "VV", "HV": "HH"}


def _check_polarisations(scene: SourceScene, spec: CubeSpec, counts: Mapping[str, _Counts]) -> None:
    """A cross-polarised band brighter on average than its co-polarised band is the other's file: an item whose VV
    and VH assets name each other's files (files that name no band, which :func:`_check_description` reads) would
    go in with every VH_VV positive, RVI above 2, and the mowing marker reading VV."""
    names = {b.name for b in spec.bands if b.units == "dB"}
    for cross, co in CO_POLARISED.items():
        if {cross, co} <= names and counts[cross].valid and counts[co].valid:
            mean_cross, mean_co = (counts[b].db_sum / counts[b].valid for b in (cross, co))
            if mean_cross > mean_co:
                files = {b: _file_name(scene.assets[b]) for b in (cross, co)}
                raise SceneContentError(scene.scene_id, f"band {cross} ({files[cross]}) is brighter than band {co} "
                                                        f"({files[co]}): a mean of {mean_cross:.1f} dB against "
                                                        f"{mean_co:.1f} dB, where {cross} backscatter is some 5 to 10 "
                                                        f"dB below {co}: are the item's {co} and {cross} assets "
                                                        "swapped?")


def _check_distinct_files(scene: SourceScene, checksums: Mapping[str, str], valid: Mapping[str, int]) -> None:
    """Two bands holding data read from the same bytes are one file given twice (an asset's href copied into another
    asset): no two bands of a product are alike, and the one band's values would go in as the other's for good."""
    first: dict[str, str] = {}
    for band, checksum in checksums.items():
        other = first.setdefault(checksum, band)
        if other != band and valid[band]:
            names = {b: _file_name(scene.assets[b]) for b in (other, band)}
            raise SceneContentError(scene.scene_id, f"bands {other} ({names[other]}) and {band} ({names[band]}) are "
                                                    "the same bytes: one file given for two bands?")


ZEROS_DB = 0.01  # the most of a dB band's values that may be exactly 0 dB (a measurement of a power of exactly 1)
# dB no backscatter measurement reaches (a power of 1e-10, some 75 dB below Sentinel-1's noise floor, or of 1e10): a
# fill value (-9999, -32768, float32's lowest) the file does not declare as its nodata, whose power of 0 would go into
# every mean it meets (a parcel's, a resampled pixel's) as a measurement
FILL_DB = 100.0
FILLS_DB = 1e-4  # the most of a dB band's values that may lie beyond FILL_DB (stray pixels: 10 log10 of tiny powers)
# the most of a dB band's values that may be exactly 0 dB beside another (a row or column neighbour): a measurement of
# exactly 0 dB is rare, two side by side rarer still, where a stripe of border noise written as 0 at a swath's edge,
# too thin for ZEROS_DB, is a line of them (a power of 1, some 15 dB above the fields: +2.6 dB on a parcel it crosses)
ZEROS_TOGETHER_DB = 1e-4


def _check_units(scene_id: str, band: BandSpec, counts: _Counts, linear_why: str | None, unit: str | None = None
                 ) -> None:
    """Backscatter must end up in dB: a band taken as linear power must hold positive values, and a band
    taken as dB (or converted) must be mostly negative, as land backscatter in dB is, and hardly ever exactly 0 dB
    (:data:`ZEROS_DB`): many such values are a nodata border of 0 the file does not declare, which would go in as
    measurements, nor hold values of exactly 0 dB side by side (:data:`ZEROS_TOGETHER_DB`): a stripe of border noise
    written as 0, too thin for the first. Nor may a band in dB hold values beyond :data:`FILL_DB` (but for a few:
    :data:`FILLS_DB`), a fill value such as -9999 the file does not declare. ``unit``: the one its asset says,
    named where the values contradict it."""
    if band.units != "dB":
        return
    if linear_why is not None and counts.nonpositive > (counts.valid + counts.nonpositive) / 2:
        share = counts.nonpositive / (counts.valid + counts.nonpositive)
        raise SceneContentError(scene_id, f"band {band.name} is taken as linear power ({linear_why}), but {share:.0%} "
                                          f"of its values are <= 0, which power never is: is it in dB already? "
                                          f"{_if_in_db(linear_why)}")
    if linear_why is None and counts.fills > FILLS_DB * counts.valid:
        raise SceneContentError(scene_id, f"band {band.name} holds {counts.fills:,} values beyond +-{FILL_DB:g} dB "
                                          f"({counts.fills / counts.valid:.2%} of its values, e.g. "
                                          f"{counts.fill_example:g}), which no backscatter is: a nodata value not "
                                          "declared? Say its nodata (the GeoTIFF's nodata tag, or its STAC asset's "
                                          "raster:bands nodata)")
    if counts.zeros > ZEROS_DB * counts.valid:
        raise SceneContentError(scene_id, f"band {band.name} holds {counts.zeros / counts.valid:.0%} values of exactly "
                                          "0 dB, which backscatter hardly ever is: a nodata border written as 0 and "
                                          "not declared? Say its nodata (the GeoTIFF's nodata tag, or its STAC "
                                          "asset's raster:bands nodata 0)")
    if counts.valid and counts.negative < counts.valid / 2:
        said = "" if linear_why is None else f" even after converting it from linear power ({linear_why})"
        hint = "" if linear_why is not None else (
            f"; its asset says unit {unit!r}: if the file is linear power, that unit is wrong (say 'linear')"
            if unit_scale(scene_id, band.name, unit) == "dB" else
            f"; if it is linear power, say so: its STAC asset's unit (raster:bands unit 'linear'), or "
            f"{LINEAR_POWER_OPTION}")
        raise SceneContentError(scene_id, f"band {band.name} looks like linear power, not dB{said}: only "
                                          f"{counts.negative / counts.valid:.0%} of its values are negative (land "
                                          f"backscatter in dB mostly is); the cube stores 10 log10 of it{hint}")
    if counts.zeros_together > ZEROS_TOGETHER_DB * counts.valid:
        row, col = counts.zeros_at
        raise SceneContentError(scene_id, f"band {band.name} holds {counts.zeros_together:,} values of exactly 0 dB "
                                          f"side by side (from row {row}, column {col}), which backscatter never is: "
                                          "border noise or a nodata border written as 0 and not declared? Say its "
                                          "nodata 0 (the GeoTIFF's nodata tag, gdal_edit.py -a_nodata 0: NaN stays "
                                          "nodata; and its STAC asset's raster:bands nodata, if it says one)")


def _if_in_db(linear_why: str) -> str:
    """What to do for a band taken as linear power (``linear_why``, :func:`ingest.values.linear_power_reason`) that
    holds dB: what took it so is what to change."""
    if linear_why.startswith("its asset says unit"):
        return "If so, that unit is wrong (say 'dB')"
    if "--linear-power" in linear_why:
        return "If so, leave out --linear-power (linear_power=True) for it"
    return "If so, say it: its STAC asset's unit (raster:bands unit 'dB') wins over the provider's convention"


def _gdal_reason(exc: Exception) -> str:
    """What GDAL found wrong: rasterio's "Read failed. See previous exception for details." points at an
    exception nobody sees (its cause), which names the in-memory copy instead of the file."""
    cause = exc.__cause__ if isinstance(exc, RasterioError) and exc.__cause__ is not None else exc
    return re.sub(r"^\S+\.tif, ", "", str(cause))


@dataclass(frozen=True, slots=True)
class _Counts:
    valid: int = 0
    negative: int = 0
    nonpositive: int = 0  # values <= 0 of a band converted from linear power (nodata once converted)
    unknown: dict[int, int] = field(default_factory=dict)  # of a flag band: its values that are no flag, counted
    extents: np.ndarray | None = field(default=None, compare=False)  # where its rows' valid values are (valid_extents)
    cells: np.ndarray | None = field(default=None, compare=False)  # where its valid values are (coverage_cells)
    zeros: int = 0  # of a band in dB: its values of exactly 0 dB (a nodata border written as 0, not declared)
    fills: int = 0  # of a band in dB: its values beyond FILL_DB (a nodata value such as -9999, not declared)
    fill_example: float = 0.0  # the one of them farthest from 0 dB, to name
    db_sum: float = 0.0  # of a band in dB: the sum of its valid values (their mean, to compare polarisations)
    zeros_together: int = 0  # of those zeros, the ones beside another (a row or column neighbour): a stripe, a patch
    zeros_at: tuple[int, int] = (0, 0)  # the row and column of the first of them, to name


def _count(ds: DatasetReader, band: BandSpec, vmap: ValueMap, rows: int = 1024, *, coverage: bool = False
           ) -> _Counts:
    """Valid (and negative) values of the band, where each row's valid values lie
    (:func:`ingest.warp.valid_extents`: where a warped scene's window and polygon go) and, if ``coverage``, where
    they are by cells (:func:`coverage_cells`), read about ``rows`` rows at a time (whole rows of cells): every block
    is decoded (a truncated file fails here), and a whole 10980 px tile is never in memory at once."""
    valid = negative = nonpositive = zeros = fills = together = 0
    fill_example = db_sum = 0.0
    zeros_at: tuple[int, int] | None = None
    unknown: dict[int, int] = {}
    extents, cells = [], []
    side = _cell_side(ds.height, ds.width)
    rows = max(1, rows // side) * side
    for r0 in range(0, ds.height, rows):
        raw = ds.read(1, window=RasterWindow(0, r0, ds.width, min(rows, ds.height - r0)))
        if vmap.to_db:
            nonpositive += int(np.count_nonzero(~vmap.missing(raw) & (raw <= 0)))
        block = vmap.apply(raw)
        ok = valid_pixels(block, band)
        valid += int(np.count_nonzero(ok))
        extents.append(valid_extents(ok))
        if coverage:
            cells.append(coverage_cells(ok, side))
        if band.units == "dB":
            values = block[ok]  # a copy: once, for both counts
            negative += int(np.count_nonzero(values < 0))
            db_sum += float(np.sum(values, dtype=np.float64))
            n_zeros = int(np.count_nonzero(values == 0))
            zeros += n_zeros
            if n_zeros > 1:
                beside = zeros_together(ok & (block == 0))
                together += int(np.count_nonzero(beside))
                if zeros_at is None and beside.any():
                    r, c = np.argwhere(beside)[0]
                    zeros_at = (r0 + int(r), int(c))
            beyond = values[np.abs(values) > FILL_DB]
            if beyond.size:
                fills += beyond.size
                fill_example = max(fill_example, float(beyond[np.argmax(np.abs(beyond))]), key=abs)
        if band.is_flag:
            values, counts = np.unique(block[ok & ~np.isin(block, band.flag_values)], return_counts=True)
            for v, n in zip(values.tolist(), counts.tolist(), strict=True):
                unknown[v] = unknown.get(v, 0) + n
    return _Counts(valid, negative, nonpositive, unknown, np.concatenate(extents) if extents else None,
                   np.concatenate(cells) if cells else None, zeros, fills, fill_example, db_sum, together,
                   zeros_at or (0, 0))


def zeros_together(zero: np.ndarray) -> np.ndarray:
    """Which of the pixels ``zero`` (bool, rows x columns) have another beside them, in their row or column."""
    beside = np.zeros_like(zero)
    beside[:, 1:] |= zero[:, :-1]
    beside[:, :-1] |= zero[:, 1:]
    beside[1:] |= zero[:-1]
    beside[:-1] |= zero[1:]
    return zero & beside


COVERAGE_CELLS = 128  # cells along a file's longer side in its coverage map: 86 px (860 m) on a 10980 px S2 tile
SOME, FULL = 1, 2  # a cell of a coverage map holding some valid pixel, or valid pixels only (0: none)


def _cell_side(height: int, width: int) -> int:
    """The side in pixels of a coverage map's cells over a file of ``height`` x ``width`` (:data:`COVERAGE_CELLS`)."""
    return max(1, -(-max(height, width) // COVERAGE_CELLS))


def coverage_cells(ok: np.ndarray, side: int) -> np.ndarray:
    """Where the valid pixels ``ok`` (bool, rows x columns) are, in cells of ``side`` x ``side`` px (those of the last
    row and column smaller): per cell 0 (none valid), :data:`SOME` or :data:`FULL` (every pixel valid)."""
    h, w = ok.shape
    rows, cols = -(-h // side), -(-w // side)
    padded = np.zeros((rows * side, cols * side), bool)
    padded[:h, :w] = ok
    some = padded.reshape(rows, side, cols, side).any(axis=(1, 3))
    padded[h:, :] = padded[:, w:] = True  # beyond the file: no nodata of it
    full = padded.reshape(rows, side, cols, side).all(axis=(1, 3))
    return np.where(full, FULL, np.where(some, SOME, 0)).astype(np.uint8)


def _coverage(spec: CubeSpec, counts: Mapping[str, _Counts]) -> np.ndarray | None:
    """A scene's coverage map: its finest bands' (:func:`coverage_cells`), a cell full where each of them is full and
    holding some valid pixel where one of them does. None if they differ in shape (files of other extents)."""
    maps = [counts[b.name].cells for b in spec.bands_at(min(b.resolution for b in spec.bands))]
    if any(m is None or m.shape != maps[0].shape for m in maps):
        return None
    full = np.logical_and.reduce([m == FULL for m in maps])
    some = np.logical_or.reduce([m > 0 for m in maps])
    return np.where(full, FULL, np.where(some, SOME, 0)).astype(np.uint8)


def _check_flags(scene_id: str, band: BandSpec, counts: _Counts) -> None:
    """A flag band (the scene classification) must hold its flags only: another value is a corrupt or another
    product's, and the cloud mask, which masks the classes it names, would take its pixels for clear ones."""
    if counts.unknown:
        shown = ", ".join(f"{v} ({n:,} px)" for v, n in sorted(counts.unknown.items())[:5])
        raise SceneContentError(scene_id, f"band {band.name} holds values that are none of its classes: {shown}; "
                                          f"its classes are {min(band.flag_values)} to {max(band.flag_values)}, and "
                                          "the cloud mask would take those pixels for clear ones")


def _check_footprints(scene_id: str, windows: dict[int, Window]) -> None:
    """All resolutions must cover the same ground (a 20 m window is the 10 m window halved)."""
    finest = min(windows)
    r0, c0, h0, w0 = windows[finest]
    for res, (r, c, h, w) in windows.items():
        k = res // finest
        if (r * k, c * k) != (r0, c0) or abs(h * k - h0) >= k or abs(w * k - w0) >= k:
            raise SceneGridError(scene_id, f"{res} m bands cover {windows[res]}, {finest} m bands {windows[finest]}")
