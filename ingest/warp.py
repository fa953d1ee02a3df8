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
rasterio's reproject does not let us turn off: thousandths of a dB between UTM zones; from a geographic CRS up to
tenths of a dB per pixel, where the whole warp's approximation is the coarser of the two).

Where a warped scene holds data on its tile is found from its valid pixels, not its raster: a GRD's raster on a
UTM grid of its own is mostly nodata collar around its rotated footprint, and that area is what the ledger, the
catalog's geometry and the parcels' ``ok``/``outside`` take for where the date holds data. It is found from
where each row of the file holds valid pixels (:func:`valid_extents`, counted as the checks read the file): the
convex hull of its valid pixels near the tile, each grown by the kernel's reach (:func:`kernel_reach`,
:func:`valid_reach`), so it holds every pixel a warp of the whole footprint makes valid (no value changes: a
pixel's value does not depend on the window), and no more collar beyond them than the reach (a pixel's box grown
by it: some 30 m at 10 m, 50 m at a corner). The window the scene is written to and recorded with
(:func:`data_windows`) is that hull's bounding box on the tile; the polygon recorded beside it
(:func:`data_polygon`, the hull within the window) leaves out the collar inside that box too (a GRD's slanted edge
across the tile), and the ledger takes the window's box within that polygon for the date's area
(:func:`cube.ledger.scene_area`).

A footprint that overlaps the tile may hold no data there (the nodata collar of a GRD footprint over a tile's
corner): :func:`has_valid_pixel` warps the window piece by piece as the writer will, so such a scene is
rejected before anything is written instead of going in as an empty date (without warping at all when no
valid pixel's reach meets the tile).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import shapely
from odc.geo.crs import CRS
from odc.geo.geobox import GeoBox
from odc.geo.geom import Geometry
from odc.geo.geom import box as geom_box
from rasterio.enums import Resampling
from rasterio.io import DatasetReader
from rasterio.warp import reproject
from rasterio.windows import Window as RasterWindow
from shapely.geometry import Polygon
from shapely.geometry.base import BaseGeometry

from cardcube.errors import SceneGridError
from cardcube.grid import TILE_SIZE_M, TileGrid
from cardcube.spec import BandSpec, CubeSpec
from ingest.values import ValueMap, stored_db

Window = tuple[int, int, int, int]  # row, col, height, width in tile pixels
Bounds = tuple[float, float, float, float]  # minx, miny, maxx, maxy

_EPS = 1e-6  # pixels: a footprint edge this close to a lattice line is on it
_PAD = 2  # source pixels read beyond a target's footprint, so a kernel at its edge sees what a whole warp sees
VALID_PIECE = 1024  # source pixels: the pieces of a file's rows whose valid pixels' extent is kept (valid_extents)
_EDGE = 32  # source pixels: the longest side of a file's hull placed in another CRS as a straight line
_SLACK = 0.5  # tile CRS units (m): the most a hull's side is moved out to drop a vertex (valid_reach)


def footprint_bounds(geobox: GeoBox, crs: Any) -> tuple[float, float, float, float]:
    """Bounding box of ``geobox``'s footprint in ``crs`` (edges densified, so a curved edge is not cut)."""
    res = max(abs(geobox.resolution.x), abs(geobox.resolution.y))
    bb = geobox.extent.to_crs(crs, resolution=res * 16).boundingbox
    return bb.left, bb.bottom, bb.right, bb.top


def tile_windows(tile: TileGrid, spec: CubeSpec, footprints: Iterable[GeoBox], *, scene_id: str) -> dict[int, Window]:
    """The window of tile pixels, at each of ``spec``'s resolutions, that the union of ``footprints`` covers:
    clipped to the tile and snapped outward to the coarsest resolution, so every resolution covers the same
    ground. :class:`SceneGridError` if the footprints do not overlap the tile."""
    return _snapped(tile, spec, _on_tile(tile, footprints, scene_id=scene_id))


def data_windows(tile: TileGrid, spec: CubeSpec, footprints: Iterable[GeoBox], data: Iterable[np.ndarray], *,
                 scene_id: str) -> dict[int, Window]:
    """:func:`tile_windows` shrunk to the bounding box of ``data`` (each band's :func:`valid_reach`) on the tile:
    the tile pixels the scene can hold a valid pixel in once resampled, its nodata collar left out. This is the
    window written and recorded; what the ledger, the catalog and the parcels take for where the date holds data is
    its box within :func:`data_polygon`. Empty if no valid pixel reaches the tile."""
    on_tile = shapely.box(*_on_tile(tile, footprints, scene_id=scene_id))
    reach = _hull(data).intersection(on_tile)
    return _snapped(tile, spec, reach.bounds) if reach.area > 0 else {}


def data_polygon(tile: TileGrid, windows: Mapping[int, Window], data: Iterable[np.ndarray]) -> Polygon | None:
    """Where in ``windows`` (:func:`data_windows`) the scene's valid pixels can reach: the convex hull of ``data``
    (each band's :func:`valid_reach`) clipped to the window's box. It holds every pixel the writer makes valid, and
    leaves out the collar inside the window beyond the valid pixels' reach (a GRD's slanted edge across the tile),
    in a few vertices (a convex hull). None when it is the window's whole box: nothing to record."""
    res = min(windows)
    window = shapely.box(*tile.window_bounds(windows[res], res))
    polygon = _hull(data).intersection(window)
    return None if polygon.equals(window) else polygon


def _hull(data: Iterable[np.ndarray]) -> BaseGeometry:
    """The convex hull of the points of ``data`` (n x 2 arrays, :func:`valid_reach`); empty if there are none."""
    return shapely.multipoints(np.concatenate([np.empty((0, 2)), *data])).convex_hull


def _on_tile(tile: TileGrid, footprints: Iterable[GeoBox], *, scene_id: str) -> Bounds:
    """The bounding box of the union of ``footprints`` in ``tile``'s CRS, clipped to the tile;
    :class:`SceneGridError` if they do not overlap it."""
    boxes = [footprint_bounds(g, tile.crs) for g in footprints]
    minx, miny = min(b[0] for b in boxes), min(b[1] for b in boxes)
    maxx, maxy = max(b[2] for b in boxes), max(b[3] for b in boxes)
    tminx, tminy, tmaxx, tmaxy = tile.bounds
    lo_x, lo_y, hi_x, hi_y = max(minx, tminx), max(miny, tminy), min(maxx, tmaxx), min(maxy, tmaxy)
    if lo_x >= hi_x or lo_y >= hi_y:
        raise SceneGridError(scene_id, f"its footprint ({minx:.0f}, {miny:.0f}, {maxx:.0f}, {maxy:.0f} in {tile.crs}) "
                                       f"does not overlap tile {tile.tile_id}")
    return lo_x, lo_y, hi_x, hi_y


def _snapped(tile: TileGrid, spec: CubeSpec, bounds: Bounds) -> dict[int, Window]:
    """The tile pixels covering ``bounds`` (within the tile), snapped outward to the coarsest resolution."""
    lo_x, lo_y, hi_x, hi_y = bounds
    coarse = max(spec.resolutions)
    c0 = math.floor((lo_x - tile.ulx) / coarse + _EPS)
    c1 = math.ceil((hi_x - tile.ulx) / coarse - _EPS)
    r0 = math.floor((tile.uly - hi_y) / coarse + _EPS)
    r1 = math.ceil((tile.uly - lo_y) / coarse - _EPS)
    return {res: (r0 * (coarse // res), c0 * (coarse // res), (r1 - r0) * (coarse // res), (c1 - c0) * (coarse // res))
            for res in spec.resolutions}


def valid_extents(ok: np.ndarray, side: int = VALID_PIECE) -> np.ndarray:
    """Where the True pixels of each row of the mask ``ok`` lie, piece by piece of ``side`` columns (the last cut at
    its edge): per row and piece, the column of the first True in the piece and one past the last (0, 0 where there
    is none), as h x pieces x 2. A file's valid pixels to the pixel at the edges of their rows, small enough (4 bytes
    a piece of a row) to be kept for a whole GRD and placed on any tile."""
    h, w = ok.shape
    padded = np.zeros((h, -(-w // side) * side), dtype=bool)
    padded[:, :w] = ok
    pieces = padded.reshape(h, -1, side)
    extent = np.stack([pieces.argmax(axis=2), side - pieces[..., ::-1].argmax(axis=2)], axis=2)
    extent[~pieces.any(axis=2)] = 0
    return extent.astype(np.min_scalar_type(side))


def valid_reach(geobox: GeoBox, extents: np.ndarray, crs: Any, *, pad: int, near: Bounds | None = None
                ) -> np.ndarray:
    """Where the file resampled can hold a valid pixel: the vertices (n x 2: x, y in ``crs``) of the convex hull of
    its valid pixels (``extents``: :func:`valid_extents`), each grown by ``pad`` source pixels
    (:func:`kernel_reach`), since a target pixel's value comes from the source pixels within its kernel's reach.
    The hull is taken on the file's grid, of the first and last valid pixel of each row (so it is the valid pixels'
    hull to the pixel); placed in another CRS its sides are cut every :data:`_EDGE` pixels, each a straight line
    there too to a small fraction of a pixel, and the vertices of that hull that add less than :data:`_SLACK` are
    dropped, its sides moved out by as much. ``near``: a box in ``crs`` (a tile's); only the rows, and pieces of
    them, within the kernel's reach of it are taken (a whole GRD on one tile). No vertex if no valid pixel is."""
    h, n = extents.shape[:2]
    rows, pieces = (0, h), (0, n)
    if near is not None:
        c0, r0, c1, r1 = _pixel_bounds(geobox, near, crs, margin=pad + 1)
        rows = int(np.clip(np.floor(r0), 0, h)), int(np.clip(np.ceil(r1), 0, h))
        pieces = int(np.clip(np.floor(c0 / VALID_PIECE), 0, n)), int(np.clip(np.ceil(c1 / VALID_PIECE), 0, n))
    part = extents[rows[0]:rows[1], pieces[0]:pieces[1]].astype(np.int64)
    held = part[..., 1] > 0
    r = np.nonzero(held.any(axis=1))[0]
    if not r.size:
        return np.empty((0, 2))
    first, last = held[r].argmax(axis=1), held.shape[1] - 1 - held[r, ::-1].argmax(axis=1)
    x0 = (pieces[0] + first) * VALID_PIECE + part[r, first, 0] - pad
    x1 = (pieces[0] + last) * VALID_PIECE + part[r, last, 1] + pad
    y0, y1 = rows[0] + r - pad, rows[0] + r + 1 + pad
    hull = shapely.multipoints(np.column_stack([np.concatenate([x0, x1, x0, x1]),
                                                np.concatenate([y0, y0, y1, y1])])).convex_hull
    other = geobox.crs != CRS(crs)
    x, y = geobox.affine * shapely.get_coordinates(shapely.segmentize(hull, _EDGE) if other else hull).T
    if other:
        x, y = geobox.crs.transformer_to_crs(crs)(x, y)
    placed = np.column_stack([x, y])
    placed = shapely.multipoints(placed[np.isfinite(placed).all(axis=1)]).convex_hull
    return shapely.get_coordinates(placed.simplify(_SLACK).buffer(_SLACK, join_style="mitre"))


def _pixel_bounds(geobox: GeoBox, bounds: Bounds, crs: Any, *, margin: int) -> tuple[float, float, float, float]:
    """The columns and rows (c0, r0, c1, r1) of ``geobox``'s pixel grid that ``bounds`` (in ``crs``) cover, grown by
    ``margin`` pixels; the whole grid's range unbounded where ``bounds`` cannot be placed in it (beyond its CRS's
    domain)."""
    step = max(bounds[2] - bounds[0], bounds[3] - bounds[1]) / 64  # its edges densified: curved in geobox's CRS
    try:
        bb = geom_box(*bounds, crs).to_crs(geobox.crs, resolution=step).boundingbox
    except ValueError:
        return -math.inf, -math.inf, math.inf, math.inf
    cols, rows = (~geobox.affine) * (np.array([bb.left, bb.right, bb.left, bb.right]),
                                     np.array([bb.bottom, bb.bottom, bb.top, bb.top]))
    box = cols.min() - margin, rows.min() - margin, cols.max() + margin, rows.max() + margin
    return box if all(math.isfinite(v) for v in box) else (-math.inf, -math.inf, math.inf, math.inf)


def kernel_reach(how: Mapping[str, Any]) -> int:
    """How many source pixels beyond a target pixel's footprint its value may come from (``how``: from
    :func:`warp_record`): the resampling kernel's radius at GDAL's kernel scale, and a margin."""
    return _PAD + math.ceil(1 / float(how["scale"]))


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
    window = _source_window(ds, target, kernel_reach(how))
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
