"""Scenes off the MGRS tile grid, resampled onto it: opt-in, with ``ingest(..., warp=True)``.

By default a scene must sit on its tile's pixel lattice (:meth:`cardcube.grid.TileGrid.window`), so its pixels
go into the cube as they are. Real deliveries often do not: a whole GRD footprint orthorectified on a UTM grid
of its own origin (Planetary Computer's ``sentinel-1-rtc``), another UTM zone, another pixel size. With
``warp`` such a scene is resampled onto the tile grid, over the tile pixels its footprint covers (clipped to
the tile; a scene that misses its tile is still rejected), and the ledger records the method per band.

The methods, chosen per band by :func:`resampling_for`:

* class layers (SCL): **nearest** -- a class code has no in-between;
* backscatter: **bilinear** on linear power, then 10 log10 (a mean of dB values is a geometric mean of
  power, biased low over speckle: see ``cube/stats.py``); **average** instead when the source pixels are
  finer than the cube's, so every source pixel counts rather than the four nearest;
* reflectance: bilinear (average from finer pixels) on the DN, rounded by GDAL to whole DN.

Nodata never enters a value: GDAL weights the valid neighbours only. The kernel scale (GDAL's XSCALE/YSCALE)
is fixed from the pixel sizes rather than left to GDAL, which derives it from each processing chunk's shape:
so a pixel's value does not depend on the shard it is written in. Within one CRS (a shifted lattice) a
shard's values are then those of one GDAL warp of the whole scene (to float32 rounding); across CRSs they agree
with it to GDAL's approximate transformer (1/8 pixel tolerance in its interpolation of coordinates, which
rasterio's reproject does not let us turn off: thousandths of a dB).

A footprint that overlaps the tile may hold no data there (the nodata collar of a GRD footprint over a tile's
corner): :func:`has_valid_pixel` warps the tile window piece by piece as the writer will, so such a scene is
rejected before anything is written instead of going in as an empty date.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np
from odc.geo.geobox import GeoBox
from odc.geo.geom import Geometry
from rasterio.enums import Resampling
from rasterio.io import DatasetReader
from rasterio.warp import reproject
from rasterio.windows import Window as RasterWindow

from cardcube.errors import SceneGridError
from cardcube.grid import TILE_SIZE_M, TileGrid
from cardcube.spec import BandSpec, CubeSpec
from ingest.values import ValueMap, stored_db

Window = tuple[int, int, int, int]  # row, col, height, width in tile pixels
Bounds = tuple[float, float, float, float]  # minx, miny, maxx, maxy

_EPS = 1e-6  # pixels: a footprint edge this close to a lattice line is on it
_PAD = 2  # source pixels read beyond a target's footprint, so a kernel at its edge sees what a whole warp sees


def footprint_bounds(geobox: GeoBox, crs: Any) -> tuple[float, float, float, float]:
    """Bounding box of ``geobox``'s footprint in ``crs`` (edges densified, so a curved edge is not cut)."""
    res = max(abs(geobox.resolution.x), abs(geobox.resolution.y))
    bb = geobox.extent.to_crs(crs, resolution=res * 16).boundingbox
    return bb.left, bb.bottom, bb.right, bb.top


def tile_windows(tile: TileGrid, spec: CubeSpec, footprints: Iterable[GeoBox], *, scene_id: str) -> dict[int, Window]:
    """The window of tile pixels, at each of ``spec``'s resolutions, that the union of ``footprints`` covers:
    clipped to the tile and snapped outward to the coarsest resolution, so every resolution covers the same
    ground. :class:`SceneGridError` if the footprints do not overlap the tile."""
    boxes = [footprint_bounds(g, tile.crs) for g in footprints]
    minx, miny = min(b[0] for b in boxes), min(b[1] for b in boxes)
    maxx, maxy = max(b[2] for b in boxes), max(b[3] for b in boxes)
    tminx, tminy, tmaxx, tmaxy = tile.bounds
    lo_x, lo_y, hi_x, hi_y = max(minx, tminx), max(miny, tminy), min(maxx, tmaxx), min(maxy, tmaxy)
    if lo_x >= hi_x or lo_y >= hi_y:
        raise SceneGridError(scene_id, f"its footprint ({minx:.0f}, {miny:.0f}, {maxx:.0f}, {maxy:.0f} in {tile.crs}) "
                                       f"does not overlap tile {tile.tile_id}")
    coarse = max(spec.resolutions)
    c0 = math.floor((lo_x - tile.ulx) / coarse + _EPS)
    c1 = math.ceil((hi_x - tile.ulx) / coarse - _EPS)
    r0 = math.floor((tile.uly - hi_y) / coarse + _EPS)
    r1 = math.ceil((tile.uly - lo_y) / coarse - _EPS)
    return {res: (r0 * (coarse // res), c0 * (coarse // res), (r1 - r0) * (coarse // res), (c1 - c0) * (coarse // res))
            for res in spec.resolutions}


def shares_ground(a: Bounds, b: Bounds) -> bool:
    """Whether boxes ``a`` and ``b`` (minx, miny, maxx, maxy) are one ground: at least half of the smaller's area in
    common. Two footprints of one scene are, where a geotransform or a CRS label is wrong they are far apart; a NaN
    box (a footprint beyond its CRS's domain) is no ground."""
    common = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return bool(common >= 0.5 * smaller)


def check_same_ground(tile: TileGrid, footprints: Mapping[str, GeoBox], *, scene_id: str) -> None:
    """:class:`SceneGridError` if a band's footprint is not the others' ground (:func:`shares_ground`): each band is
    resampled onto the tile on its own, so a band file labelled with another CRS, or of another scene, went in as
    nodata (or as another place) over the union of the footprints."""
    boxes = {name: footprint_bounds(g, tile.crs) for name, g in footprints.items()}
    first, (ax0, ay0, ax1, ay1) = next(iter(boxes.items()))
    for name, (bx0, by0, bx1, by1) in boxes.items():
        if not shares_ground(boxes[first], boxes[name]):
            raise SceneGridError(scene_id, f"band {name} covers other ground than band {first} (in {tile.crs}: "
                                           f"{bx0:.0f}, {by0:.0f}, {bx1:.0f}, {by1:.0f} against {ax0:.0f}, "
                                           f"{ay0:.0f}, {ax1:.0f}, {ay1:.0f}): a band file labelled with another "
                                           f"CRS, or of another scene")


def check_item_ground(tile: TileGrid, footprints: Iterable[GeoBox], geometry: Mapping[str, Any] | None, *,
                      scene_id: str) -> None:
    """:class:`SceneGridError` if the files' footprint (the union of ``footprints``) and the item's ``geometry``
    (GeoJSON, lon/lat) are not one ground (:func:`shares_ground`, the rule bands are held to). One of the two is
    wrong, most likely the files' geotransform or CRS label: the data would go in where the files say, on the tiles
    the geometry chose (an item of no tile is split by it, :mod:`ingest.split`). A geometry that cannot be placed
    in the tile's CRS (none, of no area, beyond the CRS's domain) proves nothing and is let be."""
    if not geometry:
        return
    try:
        said = Geometry(geometry, "EPSG:4326").to_crs(tile.crs, resolution=0.01).boundingbox
    except (ValueError, TypeError, KeyError, AttributeError):  # not GeoJSON
        return
    item = said.left, said.bottom, said.right, said.top
    if not all(math.isfinite(v) for v in item) or said.left >= said.right or said.bottom >= said.top:
        return
    boxes = [footprint_bounds(g, tile.crs) for g in footprints]
    files = min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes)
    if shares_ground(files, item):
        return
    tminx, tminy, tmaxx, tmaxy = tile.bounds
    on_tile = files[0] < tmaxx and files[2] > tminx and files[1] < tmaxy and files[3] > tminy
    missed = "" if on_tile else f", and its files' footprint does not overlap tile {tile.tile_id}"
    shown = ", ".join(f"{v:.0f}" for v in files), ", ".join(f"{v:.0f}" for v in item)
    raise SceneGridError(scene_id, f"its files' footprint ({shown[0]} in {tile.crs}) and its item's geometry "
                                   f"({shown[1]}) do not cover the same ground{missed}: a wrong geotransform or CRS "
                                   f"label in its files (or a geometry of another scene)")


def pixel_size(geobox: GeoBox, crs: Any) -> float:
    """The side of ``geobox``'s pixels in ``crs`` units, from its footprint's area (any CRS, any rotation)."""
    area = geobox.extent.to_crs(crs, resolution=max(abs(geobox.resolution.x), abs(geobox.resolution.y)) * 16).area
    return math.sqrt(area / (geobox.shape[0] * geobox.shape[1]))


def resampling_for(band: BandSpec, source_pixel: float) -> Resampling:
    """The method that puts ``band`` from source pixels of ``source_pixel`` metres onto its cube resolution."""
    if band.is_flag:
        return Resampling.nearest
    return Resampling.average if source_pixel < band.resolution * (1 - 1e-3) else Resampling.bilinear


def warp_record(band: BandSpec, geobox: GeoBox, tile: TileGrid) -> dict[str, Any]:
    """How ``band`` (its file's grid ``geobox``) is put on ``tile``'s grid: the ledger's record and the writer's
    recipe (``resampling``, and ``scale``: cube pixels per source pixel, GDAL's XSCALE/YSCALE)."""
    source_pixel = pixel_size(geobox, tile.crs)
    crs = geobox.crs
    return {"resampling": resampling_for(band, source_pixel).name, "scale": source_pixel / band.resolution,
            "crs": f"EPSG:{crs.epsg}" if crs.epsg else crs.to_wkt(), "transform": list(geobox.affine)[:6]}


def _source_window(ds: DatasetReader, target: GeoBox, pad: int) -> RasterWindow | None:
    """The window of ``ds`` that ``target``'s footprint falls in, padded by ``pad`` pixels; None if outside."""
    minx, miny, maxx, maxy = footprint_bounds(target, ds.crs)
    inverse = ~ds.transform
    cols, rows = zip(*(inverse * (x, y) for x in (minx, maxx) for y in (miny, maxy)), strict=True)
    c0, c1 = max(math.floor(min(cols)) - pad, 0), min(math.ceil(max(cols)) + pad, ds.width)
    r0, r1 = max(math.floor(min(rows)) - pad, 0), min(math.ceil(max(rows)) + pad, ds.height)
    return RasterWindow(c0, r0, c1 - c0, r1 - r0) if c0 < c1 and r0 < r1 else None


def read_warped(ds: DatasetReader, band: BandSpec, vmap: ValueMap, target: GeoBox, how: dict[str, Any]) -> np.ndarray:
    """``band``'s values of ``ds`` resampled onto ``target`` (a piece of the tile grid), as the cube stores them:
    the file's values mapped by ``vmap`` first, backscatter resampled in linear power (``how``: from
    :func:`warp_record`)."""
    fill = band.fill
    scale = float(how["scale"])
    window = _source_window(ds, target, _PAD + math.ceil(1 / scale))
    if window is None:
        return np.full(target.shape, fill, dtype=band.dtype)
    raw = ds.read(1, window=window)
    backscatter = band.units == "dB"
    values, nodata = (vmap.power(raw), np.nan) if backscatter else (vmap.apply(raw), fill)
    out = np.full(target.shape, nodata, dtype=values.dtype)
    reproject(values, out, src_transform=ds.window_transform(window), src_crs=ds.crs, src_nodata=nodata,
              dst_transform=target.affine, dst_crs=target.crs, dst_nodata=nodata,
              resampling=Resampling[how["resampling"]], XSCALE=scale, YSCALE=scale)
    if backscatter:
        out = stored_db(out)
        out[np.isnan(out)] = fill
    return out.astype(band.dtype)


def shard_pieces(window: Window, resolution: int, side: int) -> Iterator[tuple[tuple[int, int], tuple[int, int]]]:
    """The rows and columns of ``window`` (tile pixels at ``resolution``) in each shard of ``side`` pixels it
    touches: the pieces of the tile grid the writer resamples a scene onto, one per shard write."""
    r, c, h, w = window
    n = round(TILE_SIZE_M / resolution)
    for i in range(r // side, (r + h - 1) // side + 1):
        rows = max(r, i * side), min(r + h, (i + 1) * side, n)
        for j in range(c // side, (c + w - 1) // side + 1):
            cols = max(c, j * side), min(c + w, (j + 1) * side, n)
            if rows[0] < rows[1] and cols[0] < cols[1]:
                yield rows, cols


def valid_pixels(values: np.ndarray, band: BandSpec) -> np.ndarray:
    """Where ``values`` (as the cube stores them) hold a measurement, not the band's nodata."""
    ok = ~np.isnan(values) if values.dtype.kind == "f" else np.ones(values.shape, bool)
    if band.nodata is not None and not (isinstance(band.nodata, float) and np.isnan(band.nodata)):
        ok &= values != band.nodata
    return ok


def has_valid_pixel(ds: DatasetReader, band: BandSpec, vmap: ValueMap, tile: TileGrid, window: Window,
                    how: dict[str, Any], *, side: int) -> bool:
    """Whether ``band`` of ``ds`` resampled onto ``window`` of ``tile`` holds any valid pixel. Warped piece by
    piece (:func:`shard_pieces`, ``side``: the cube's shard side at the band's resolution) exactly as the writer
    warps it, so the answer is the writer's pixel for pixel; it stops at the first piece with a valid pixel."""
    grid = tile.geobox(band.resolution)
    return any(valid_pixels(read_warped(ds, band, vmap, grid[rows[0]:rows[1], cols[0]:cols[1]], how), band).any()
               for rows, cols in shard_pieces(window, band.resolution, side))
