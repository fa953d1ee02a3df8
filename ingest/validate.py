"""Checking a source scene before anything is written: every band is read in full.

Opening a file proves little (a truncated COG opens and fails only when its last blocks are read), so
:func:`check_scene` reads every band completely, checks CRS, pixel size and alignment against the MGRS
tile grid, dtype, that all bands cover the same footprint, that the scene holds data and that backscatter
is in dB. It works out how the file's values become stored ones (:mod:`ingest.values`: its nodata, its
reflectance offset), and hashes each file, so the ledger can record what exactly went in.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

import fsspec
import numpy as np
from odc.geo.geobox import GeoBox
from rasterio.errors import RasterioError
from rasterio.io import DatasetReader, MemoryFile
from rasterio.windows import Window as RasterWindow

from cardcube.errors import SceneContentError, SceneError, SceneGridError, SceneReadError
from cardcube.grid import TileGrid
from cardcube.spec import BandSpec, CubeSpec
from ingest.assets import no_band_reason
from ingest.sources import SourceScene
from ingest.values import ValueMap, value_map

Window = tuple[int, int, int, int]  # row, col, height, width in tile pixels


@dataclass(frozen=True, slots=True)
class CheckedScene:
    """A scene that passed every check: where it sits in its tile and what its files hash to."""

    scene: SourceScene
    windows: dict[int, Window]  # per native resolution
    checksums: dict[str, str]
    valid_fraction: float
    source_bytes: int = 0  # of its band files, as read for the checks
    values: dict[str, ValueMap] = field(default_factory=dict)  # per band: file values to stored ones

    @property
    def scene_id(self) -> str:
        return self.scene.scene_id


def _read_file(scene: SourceScene, band: str, href: str) -> bytes:
    try:
        with fsspec.open(href, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise SceneReadError(scene.scene_id, f"band {band} file not found: {href}") from None
    except OSError as exc:
        raise SceneReadError(scene.scene_id, f"band {band} cannot be read from {href}: {exc}") from exc
    return data


def check_scene(scene: SourceScene, spec: CubeSpec) -> CheckedScene:
    """Read and check every band of ``scene``; raise a :class:`SceneError` subclass naming the problem."""
    sid = scene.scene_id
    if not scene.tile:
        raise SceneGridError(sid, "no MGRS tile in the scene metadata (grid:code)")
    try:
        tile = TileGrid.from_id(scene.tile)
    except ValueError as exc:
        raise SceneGridError(sid, str(exc)) from None
    missing = [b for b in spec.band_names if b not in scene.assets]
    if not scene.assets and scene.other_assets:
        raise SceneContentError(sid, no_band_reason(list(scene.other_assets), spec))
    if missing:
        others = f" (its other assets: {', '.join(scene.other_assets)})" if scene.other_assets else ""
        raise SceneContentError(sid, f"missing band(s) {', '.join(missing)}{others}")

    windows: dict[int, Window] = {}
    checksums: dict[str, str] = {}
    values: dict[str, ValueMap] = {}
    valid = total = size = 0
    for band in spec.bands:
        href = scene.assets[band.name]
        data = _read_file(scene, band.name, href)
        checksums[band.name] = "sha256:" + hashlib.sha256(data).hexdigest()
        size += len(data)
        try:
            with MemoryFile(data) as mem, mem.open() as ds:
                if ds.count != 1:
                    raise SceneContentError(sid, f"band {band.name} has {ds.count} layers, expected 1")
                if ds.dtypes[0] != band.dtype:
                    raise SceneContentError(sid, f"band {band.name} is {ds.dtypes[0]}, expected {band.dtype}")
                if ds.crs is None:
                    raise SceneGridError(sid, f"band {band.name} has no CRS")
                if abs(ds.transform.a - band.resolution) > 1e-9:
                    raise SceneGridError(sid, f"band {band.name} ({href.rsplit('/', 1)[-1]}) has {ds.transform.a:g} m "
                                              f"pixels, expected {band.resolution} m")
                geobox = GeoBox(ds.shape, ds.transform, ds.crs)
                row, col = tile.window(geobox, scene_id=sid)
                values[band.name] = value_map(scene, band, ds.nodata)
                counts = _count(ds, band, values[band.name])
        except SceneError:
            raise
        except (RasterioError, OSError, ValueError) as exc:
            raise SceneReadError(sid, f"band {band.name} is truncated or corrupt ({href}, {len(data):,} bytes): "
                                      f"{_gdal_reason(exc)}") from None
        window = (row, col, *geobox.shape)
        previous = windows.setdefault(band.resolution, window)
        if previous != window:
            raise SceneGridError(sid, f"band {band.name} covers {window}, other {band.resolution} m bands {previous}")
        if band.units == "dB" and counts.valid and counts.negative < counts.valid / 2:
            raise SceneContentError(sid, f"band {band.name} looks like linear power, not dB: only "
                                         f"{counts.negative / counts.valid:.0%} of its values are negative (land "
                                         f"backscatter in dB mostly is); the cube stores 10 log10 of it")
        valid += counts.valid
        total += geobox.shape[0] * geobox.shape[1]
    _check_footprints(sid, windows)
    if valid == 0:
        raise SceneContentError(sid, "every pixel of every band is nodata")
    return CheckedScene(scene, windows, checksums, valid / total, size, values)


def _gdal_reason(exc: Exception) -> str:
    """What GDAL found wrong: rasterio's "Read failed. See previous exception for details." points at an
    exception nobody sees (its cause), which names the in-memory copy instead of the file."""
    cause = exc.__cause__ if isinstance(exc, RasterioError) and exc.__cause__ is not None else exc
    return re.sub(r"^\S+\.tif, ", "", str(cause))


@dataclass(frozen=True, slots=True)
class _Counts:
    valid: int = 0
    negative: int = 0


def _count(ds: DatasetReader, band: BandSpec, vmap: ValueMap, rows: int = 1024) -> _Counts:
    """Valid (and negative) values of the band, read ``rows`` rows at a time: every block is decoded (a
    truncated file fails here), and a whole 10980 px tile is never in memory at once."""
    valid = negative = 0
    for r0 in range(0, ds.height, rows):
        block = vmap.apply(ds.read(1, window=RasterWindow(0, r0, ds.width, min(rows, ds.height - r0))))
        ok = ~np.isnan(block) if block.dtype.kind == "f" else np.ones(block.shape, bool)
        if band.nodata is not None and not (isinstance(band.nodata, float) and np.isnan(band.nodata)):
            ok &= block != band.nodata
        valid += int(np.count_nonzero(ok))
        if band.units == "dB":
            negative += int(np.count_nonzero(block[ok] < 0))
    return _Counts(valid, negative)


def _check_footprints(scene_id: str, windows: dict[int, Window]) -> None:
    """All resolutions must cover the same ground (a 20 m window is the 10 m window halved)."""
    finest = min(windows)
    r0, c0, h0, w0 = windows[finest]
    for res, (r, c, h, w) in windows.items():
        k = res // finest
        if (r * k, c * k) != (r0, c0) or abs(h * k - h0) >= k or abs(w * k - w0) >= k:
            raise SceneGridError(scene_id, f"{res} m bands cover {windows[res]}, {finest} m bands {windows[finest]}")
