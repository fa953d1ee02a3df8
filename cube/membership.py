"""Which pixels of a grid belong to a parcel.

One pixel rule everywhere, GDAL's (``rasterio.features.rasterize``): by default a pixel belongs to a
parcel when its centre lies inside the parcel polygon, after an inward buffer that keeps mixed border
pixels (field margins, hedges, neighbouring crops) out of the statistics. ``all_touched=True`` takes
every pixel the polygon touches instead (useful for drawing, never for statistics).

A centre on a buffered outline (within :data:`ON_OUTLINE` of it) belongs to the parcel, on every side: with the
default half-pixel inward buffer that is a pixel wholly inside a field whose edges are pixel edges (a register
drawn on the 10 m grid), with half a pixel outward the ring of pixels the field's edge halves. GDAL alone would
keep such centres on three sides of a square field and drop them on the fourth (90 of a 10 x 10 pixel field's
100). Without a buffer GDAL's own rule stands: it gives a centre on the common edge of two parcels to one of them.

All functions are pure: a shapely geometry in the CRS of an ``odc.geo.GeoBox`` in, numpy arrays out.
Buffer distances are in the units of that CRS, i.e. metres on the UTM tile grids.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import shapely
from odc.geo.geobox import GeoBox
from rasterio.enums import MergeAlg
from rasterio.features import rasterize
from shapely.geometry.base import BaseGeometry

from cardcube.errors import InvalidRequestError

DEFAULT_BUFFER = -5.0  # metres; half a 10 m pixel inwards
MAX_BUFFER = 100.0  # metres a parcel may be grown or shrunk by (a field's edge is a few metres)
# the share of a buffer it is eased outwards by (1 mm of the default 5 m), so that a pixel centre on the outline is
# inside: GEOS's shrink is exact to 5e-5 of its distance only where a field collapses (one twice the buffer wide:
# eased by a micrometre, a 10 m strip of the 10 m grid kept none or half of its pixels); a share, not metres, so
# that a shrink of less than the ease does not grow the parcel
ON_OUTLINE = 2e-4
PIXEL_RULE = 2  # one more whenever which pixels a parcel holds changes (label layers and extractions record it)

__all__ = ["DEFAULT_BUFFER", "MAX_BUFFER", "PIXEL_RULE", "buffered", "check_buffer", "label_pixels", "parcel_pixels",
           "window_for"]


def check_buffer(buffer: float) -> float:
    """``buffer`` as a float, refused unless it is a finite number of metres within :data:`MAX_BUFFER` (NaN and
    infinities buffer no parcel: shapely returns no geometry for NaN and raises for infinities; 100 km grew every
    parcel's window to its whole tile, and gigabytes of masks were built before any limit was checked)."""
    try:
        value = float(buffer)
    except (TypeError, ValueError):
        raise InvalidRequestError(f"buffer {buffer!r} is not a number of metres") from None
    if not math.isfinite(value):
        raise InvalidRequestError(f"buffer {buffer!r}: give a finite number of metres (default {DEFAULT_BUFFER:g})")
    if abs(value) > MAX_BUFFER:
        raise InvalidRequestError(f"buffer {value:g} m: give -{MAX_BUFFER:g} to {MAX_BUFFER:g} metres (default "
                                  f"{DEFAULT_BUFFER:g}; it moves a parcel's edge, which is a few metres wide)")
    return value


def _check_grid(geobox: GeoBox, buffer: float) -> None:
    check_buffer(buffer)
    if buffer and geobox.crs is not None and geobox.crs.geographic:
        raise InvalidRequestError(
            f"a buffer of {buffer} needs a projected grid in metres, not the geographic CRS {geobox.crs}"
        )


def buffered(geometry: BaseGeometry | None, buffer: float) -> BaseGeometry | None:
    """``geometry`` grown (``buffer > 0``) or shrunk (``buffer < 0``), eased outwards by :data:`ON_OUTLINE` of the
    buffer; None if nothing remains."""
    if geometry is None or geometry.is_empty:
        return None
    out = geometry if buffer == 0 else shapely.buffer(geometry, buffer + abs(buffer) * ON_OUTLINE)
    return None if out.is_empty else out


def parcel_pixels(
    geometry: BaseGeometry,
    geobox: GeoBox,
    *,
    buffer: float = DEFAULT_BUFFER,
    all_touched: bool = False,
) -> np.ndarray:
    """Boolean mask of shape ``geobox.shape``: True where a pixel belongs to the parcel.

    ``geometry`` is in the CRS of ``geobox``. A pixel belongs when its centre lies inside the
    polygon shrunk by ``-buffer`` (``all_touched=True``: when the shrunk polygon touches it at all).
    An all-False mask means the parcel has no pixel here (outside, or too small for the buffer).
    """
    _check_grid(geobox, buffer)
    geom = buffered(geometry, buffer)
    if geom is None:
        return np.zeros(geobox.shape, dtype=bool)
    burnt = rasterize(
        [(geom, 1)], out_shape=geobox.shape, transform=geobox.affine, fill=0, all_touched=all_touched,
        dtype="uint8",
    )
    return burnt.astype(bool)


def window_for(
    geometry: BaseGeometry,
    geobox: GeoBox,
    *,
    buffer: float = DEFAULT_BUFFER,
    pad: int = 0,
) -> tuple[slice, slice] | None:
    """Smallest ``(rows, cols)`` window of ``geobox`` holding every pixel the buffered parcel touches.

    The window covers every pixel ``parcel_pixels`` can select (either rule), grown by ``pad`` pixels
    on each side and clipped to the grid. ``geobox[window]`` is the matching sub-grid. None when the
    buffered parcel is empty or does not overlap the grid.
    """
    _check_grid(geobox, buffer)
    geom = buffered(geometry, buffer)
    if geom is None:
        return None
    # Clip first, so a parcel cut by the grid edge gets the window of its part inside the grid.
    geom = shapely.clip_by_rect(geom, *geobox.boundingbox)
    if geom.is_empty:
        return None
    minx, miny, maxx, maxy = geom.bounds
    inv = ~geobox.affine
    corners = [inv @ (x, y) for x in (minx, maxx) for y in (miny, maxy)]
    cols = [c for c, _ in corners]
    rows = [r for _, r in corners]
    # A pixel i spans [i, i + 1); a bound on a pixel edge touches the pixels on both sides of it,
    # which is what GDAL's all_touched does too.
    r0, r1 = math.floor(min(rows)) - pad, math.floor(max(rows)) + 1 + pad
    c0, c1 = math.floor(min(cols)) - pad, math.floor(max(cols)) + 1 + pad
    h, w = geobox.shape
    r0, c0, r1, c1 = max(r0, 0), max(c0, 0), min(r1, h), min(c1, w)
    if r0 >= r1 or c0 >= c1:
        return None
    return slice(r0, r1), slice(c0, c1)


def label_pixels(
    geometries: Sequence[BaseGeometry | None],
    geobox: GeoBox,
    *,
    buffer: float = DEFAULT_BUFFER,
    all_touched: bool = False,
) -> np.ndarray:
    """Label image (int32, shape ``geobox.shape``): the index into ``geometries`` of each pixel's parcel.

    -1 marks pixels of no parcel. Same pixel rule as :func:`parcel_pixels`, so for a single parcel
    ``label_pixels([g], gb) == 0`` equals ``parcel_pixels(g, gb)``. Parcels that are None, empty, or
    vanish under the buffer get no pixel.

    Overlaps: disjoint parcels (a parcel register) cannot share a pixel centre, and an inward buffer
    keeps them apart further, so with the default rule the labels are exact. Where buffered parcels do
    overlap (overlapping input, a positive buffer, or ``all_touched=True`` along shared borders), the
    parcel later in ``geometries`` wins the pixel and the earlier one loses it -- as GDAL burns shapes
    in order. Use :func:`parcel_pixels` per parcel when every parcel must keep all its pixels.
    """
    _check_grid(geobox, buffer)
    if len(geometries) >= np.iinfo(np.int32).max:
        raise InvalidRequestError(f"{len(geometries)} parcels do not fit an int32 label image")
    shapes = [(g, i) for i, g in enumerate(buffered(g, buffer) for g in geometries) if g is not None]
    if not shapes:
        return np.full(geobox.shape, -1, dtype=np.int32)
    return rasterize(
        shapes, out_shape=geobox.shape, transform=geobox.affine, fill=-1, all_touched=all_touched,
        dtype="int32",
    )


def shared_pixels(
    geometries: Sequence[BaseGeometry | None],
    geobox: GeoBox,
    *,
    buffer: float = DEFAULT_BUFFER,
    all_touched: bool = False,
) -> np.ndarray:
    """Boolean image: the pixels that more than one of ``geometries`` holds under the pixel rule of
    :func:`label_pixels` -- where overlapping parcels compete for a label and all but one lose the pixel."""
    _check_grid(geobox, buffer)
    shapes = [(g, 1) for g in (buffered(g, buffer) for g in geometries) if g is not None]
    if len(shapes) < 2:
        return np.zeros(geobox.shape, dtype=bool)
    holders = rasterize(shapes, out_shape=geobox.shape, transform=geobox.affine, fill=0, all_touched=all_touched,
                        dtype="int32", merge_alg=MergeAlg.add)
    return holders > 1
