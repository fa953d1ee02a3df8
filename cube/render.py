"""Pictures an inspector wants, from plain arrays: true colour, a coloured index, the parcel outline,
a season's contact sheet, PNG and GeoTIFF files. No cube access here; the read side cuts the chips.

Images are RGBA ``uint8`` arrays ``(rows, cols, 4)``; NaN input pixels become fully transparent.
Outlines are drawn with Pillow in the pixel frame of the chip's ``odc.geo.GeoBox``, so they line up
with the pixels whatever the display enlargement (:func:`enlarge` by an integer factor first).
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
import rasterio
from odc.geo.geobox import GeoBox
from PIL import Image, ImageDraw, ImageFont
from PIL.PngImagePlugin import PngInfo
from shapely.geometry.base import BaseGeometry

from cardcube.errors import InvalidRequestError, RequestTooLargeError
from cardcube.storage import replacing

__all__ = [
    "ContactSheet",
    "Legend",
    "colour_index",
    "contact_sheet",
    "draw_outline",
    "enlarge",
    "png_bytes",
    "robust_limits",
    "stretch",
    "true_colour",
    "write_geotiff",
    "write_png",
]

TRUE_COLOUR_LIMITS = (0.0, 0.3)  # surface reflectance shown black .. white: fields, not clouds
NDVI_LIMITS = (0.0, 1.0)
OUTLINE = (255, 230, 0, 255)  # yellow: visible on green, brown and grey
INDEX_OUTLINE = (255, 0, 255, 255)  # magenta: on a colour map of yellows and greens (RdYlGn), yellow is lost
CLOUDY = (220, 30, 30)
NO_DATA = (150, 150, 150)


ROBUST_SAMPLE = 1 << 22  # values a stretch is worked out from: a 2,048 px date whole, a season's evenly strided


def robust_limits(*arrays: np.ndarray, percentiles: tuple[float, float] = (2.0, 98.0)) -> tuple[float, float]:
    """``(lo, hi)`` percentiles of all finite values of ``arrays`` together (one stretch for all of them,
    so colours stay comparable); the default true-colour limits when nothing is finite. Of more than
    :data:`ROBUST_SAMPLE` values, every n-th is taken: a season of 2,048 px chips (1 GB) made float64 copies
    of 2 GB and more to draw one date."""
    flat = [np.asarray(a).ravel() for a in arrays]
    step = max(1, -(-sum(a.size for a in flat) // ROBUST_SAMPLE))
    finite = np.concatenate([a[::step].astype(np.float64) for a in flat])
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return TRUE_COLOUR_LIMITS
    lo, hi = np.percentile(finite, percentiles)
    return (float(lo), float(hi)) if hi > lo else (float(lo), float(lo) + 1e-6)


def stretch(values: np.ndarray, *, limits: tuple[float, float], gamma: float = 1.0) -> np.ndarray:
    """Linear map of ``limits`` to 0..1, clipped, then ``x ** (1 / gamma)`` (gamma > 1 brightens the
    darks). Monotonic non-decreasing; NaN stays NaN. ``lo`` and ``hi`` may be arrays along the last axis
    (a pair of limits per band)."""
    lo, hi = limits
    if not np.all(np.asarray(hi) > np.asarray(lo)):
        raise InvalidRequestError(f"stretch limits {limits} must increase")
    with np.errstate(invalid="ignore"):
        x = np.clip((np.asarray(values, dtype=np.float64) - lo) / (hi - lo), 0.0, 1.0)
    return x if gamma == 1.0 else x ** (1.0 / gamma)


def _to_rgba(rgb01: np.ndarray, valid: np.ndarray) -> np.ndarray:
    rgba = np.zeros((*valid.shape, 4), dtype=np.uint8)
    rgba[..., :3] = np.round(np.nan_to_num(rgb01, nan=0.0) * 255).astype(np.uint8)
    rgba[..., 3] = np.where(valid, 255, 0)
    rgba[~valid, :3] = 0
    return rgba


def true_colour(
    red: np.ndarray,
    green: np.ndarray,
    blue: np.ndarray,
    *,
    limits: tuple[float, float] | Sequence[tuple[float, float]] = TRUE_COLOUR_LIMITS,
    gamma: float = 1.0,
) -> np.ndarray:
    """RGBA true-colour image from reflectance (B04, B03, B02 as 0..1 floats).

    Default: reflectance 0..0.3 stretched linearly, the usual view of vegetation and bare soil (clouds
    saturate white). Pass ``limits=robust_limits(red, green, blue)`` for a 2-98 % stretch, or three
    ``(lo, hi)`` pairs, one per band (a composite of bands of other units). A pixel NaN in any band is
    transparent black.
    """
    bands = np.stack([np.asarray(b, dtype=np.float64) for b in (red, green, blue)], axis=-1)
    valid = np.isfinite(bands).all(axis=-1)
    pairs = np.asarray(limits, dtype=np.float64)
    lo_hi = (pairs[:, 0], pairs[:, 1]) if pairs.ndim == 2 else (pairs[0], pairs[1])
    return _to_rgba(stretch(bands, limits=lo_hi, gamma=gamma), valid)


def colour_index(
    index: np.ndarray,
    *,
    cmap: str = "RdYlGn",
    limits: tuple[float, float] = NDVI_LIMITS,
) -> np.ndarray:
    """RGBA image of an index (e.g. NDVI) through a matplotlib colormap; NaN is transparent.

    Default: ``RdYlGn`` over 0..1, bare soil red, full canopy green (water and snow clip to red).
    """
    x = stretch(index, limits=limits)
    colours = matplotlib.colormaps[cmap](np.nan_to_num(x, nan=0.0))[..., :3]
    return _to_rgba(colours, np.isfinite(x))


def enlarge(image: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour enlargement by an integer ``factor``: pixels stay sharp squares."""
    if factor < 1 or int(factor) != factor:
        raise InvalidRequestError(f"enlargement factor must be a positive integer, got {factor}")
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)


def _rings(geometry: BaseGeometry) -> list[np.ndarray]:
    parts = getattr(geometry, "geoms", [geometry])
    rings = []
    for part in parts:
        if part.geom_type == "Polygon":
            rings.append(np.asarray(part.exterior.coords))
            rings.extend(np.asarray(r.coords) for r in part.interiors)
        elif part.geom_type in ("LineString", "LinearRing"):
            rings.append(np.asarray(part.coords))
    return rings


def draw_outline(
    image: np.ndarray,
    geometry: BaseGeometry,
    geobox: GeoBox,
    *,
    colour: tuple[int, int, int, int] = OUTLINE,
    width: int = 1,
) -> np.ndarray:
    """A copy of RGBA ``image`` with ``geometry`` (in the CRS of ``geobox``) drawn as an outline.

    ``geobox`` is the chip's grid; ``image`` may be the chip enlarged by any factor, the outline is
    scaled to it. Exterior and hole rings are drawn, ``width`` pixels wide.
    """
    h, w = image.shape[:2]
    sy, sx = h / geobox.shape[0], w / geobox.shape[1]
    inv = ~geobox.affine
    canvas = Image.fromarray(np.ascontiguousarray(image), mode="RGBA")
    draw = ImageDraw.Draw(canvas)
    for ring in _rings(geometry):
        cols, rows = inv @ (ring[:, 0], ring[:, 1])
        # Pixel i spans [i, i+1) in the GeoBox frame; Pillow truncates coordinates, so hand it the
        # pixel that holds each vertex (floored, which also treats negative coordinates right).
        xs = np.floor(np.asarray(cols) * sx).astype(int).tolist()
        ys = np.floor(np.asarray(rows) * sy).astype(int).tolist()
        pts = list(zip(xs, ys, strict=True))
        draw.line(pts, fill=tuple(colour), width=width, joint="curve")
    return np.asarray(canvas)


def png_bytes(image: np.ndarray, text: Mapping[str, str] | None = None) -> bytes:
    """PNG encoding of a uint8 image: grey (h, w), RGB (h, w, 3) or RGBA (h, w, 4); ``text``: what it shows
    (acquisition time, scene, parcel), as the file's text chunks (``Image.open(f).text``), so a saved chip says it."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
        raise InvalidRequestError(f"a PNG needs a uint8 (h, w[, 3|4]) image, got {image.dtype} {image.shape}")
    info = PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, value)  # iTXt (UTF-8) where latin-1 cannot hold it
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", optimize=False, pnginfo=info)
    return buf.getvalue()


def write_png(image: np.ndarray, path: str | os.PathLike[str], text: Mapping[str, str] | None = None) -> None:
    """Write ``image`` (see :func:`png_bytes`) to ``path``, whose name must end ``.png``: a PNG under another
    suffix (``chip.jpg``) would mislead every viewer that trusts the name."""
    if Path(path).suffix.lower() != ".png":
        raise InvalidRequestError(f"{os.fspath(path)}: a chip image is written as PNG; give a file name ending .png "
                                  "(or write a GeoTIFF with to_geotiff)")
    data = png_bytes(image, text)
    with replacing(path) as part, open(part, "wb") as f:
        f.write(data)


@dataclass(frozen=True)
class Legend:
    """What the colours of a contact sheet mean, written under its panels: ``text``, then for a colour map
    ``cmap`` a colour bar from ``limits[0]`` to ``limits[1]`` with both values written at its ends."""

    text: str
    cmap: str | None = None
    limits: tuple[float, float] = (0.0, 1.0)


@dataclass(frozen=True, eq=False)
class ContactSheet:
    """A season on one picture: ``image`` (RGB uint8), each panel's ``(x0, y0, x1, y1)`` pixel box
    (x1, y1 exclusive), whether it was marked cloudy, or as having no data, the legend written under it, and
    ``text``, what it shows (parcel, times, cube version), as its PNG's text chunks."""

    image: np.ndarray
    boxes: tuple[tuple[int, int, int, int], ...]
    cloudy: tuple[bool, ...]
    empty: tuple[bool, ...] = ()
    legend: Legend | None = None
    text: Mapping[str, str] | None = None

    def to_png(self) -> bytes:
        return png_bytes(self.image, self.text)

    def write(self, path: str | os.PathLike[str]) -> None:
        write_png(self.image, path, self.text)


SHEET_FRAME, SHEET_GAP, SHEET_TEXT = 3, 6, 14  # px of a contact sheet's panel frame, gaps and label line


def least_sheet_size(n: int, panel: tuple[int, int], *, columns: int, scale: int) -> tuple[int, int]:
    """The least width and height in px of a :func:`contact_sheet` of ``n`` panels of ``panel`` (height, width)
    px with its legend line (a chip's sheet has one): known before any panel is drawn (labels, or a legend,
    wider than the panels can only widen it)."""
    cols = max(1, min(columns, n))
    cell_w = panel[1] * scale + 2 * SHEET_FRAME + SHEET_GAP
    cell_h = panel[0] * scale + 2 * SHEET_FRAME + SHEET_TEXT + SHEET_GAP
    return cols * cell_w + SHEET_GAP, -(-n // cols) * cell_h + SHEET_GAP + SHEET_TEXT + SHEET_GAP


def contact_sheet(
    panels: Sequence[np.ndarray],
    *,
    labels: Sequence[str],
    cloud_fraction: Sequence[float] | None = None,
    nodata_fraction: Sequence[float] | None = None,
    cloud_threshold: float = 0.3,
    columns: int = 6,
    scale: int = 4,
    background: tuple[int, int, int] = (40, 40, 40),
    legend: Legend | None = None,
    max_pixels: int | None = None,
) -> ContactSheet:
    """Small multiples of RGBA ``panels`` (same shape, one per date) with a label under each.

    Panels are enlarged ``scale`` times and laid out ``columns`` wide. A date whose
    ``cloud_fraction`` exceeds ``cloud_threshold`` gets a red frame and its cloud percentage in red
    next to the label; NaN fractions (no SCL) are not marked. A date where more than half the pixels have
    no data (``nodata_fraction``: outside the swath) gets a grey frame and "no data" instead: a missing
    image, not a cloudy one. Transparent pixels show the background. A ``legend`` is written on a line
    under the panels. A sheet of more than ``max_pixels`` is a :class:`RequestTooLargeError` before it is made.
    """
    n = len(panels)
    if n == 0 or len(labels) != n or any(f is not None and len(f) != n for f in (cloud_fraction, nodata_fraction)):
        raise InvalidRequestError(f"{n} panels need as many labels ({len(labels)}), cloud and no-data fractions")
    shapes = {p.shape for p in panels}
    if len(shapes) != 1 or next(iter(shapes))[2:] != (4,):
        raise InvalidRequestError(f"contact sheet panels must be RGBA images of one shape, got {sorted(shapes)}")
    ph, pw = panels[0].shape[0] * scale, panels[0].shape[1] * scale
    frame, gap, text_h = SHEET_FRAME, SHEET_GAP, SHEET_TEXT
    font = ImageFont.load_default(size=11)
    fractions = [np.nan] * n if cloud_fraction is None else [float(f) for f in cloud_fraction]
    missing = [np.nan] * n if nodata_fraction is None else [float(f) for f in nodata_fraction]
    empty = [bool(np.isfinite(gone) and gone > 0.5) for gone in missing]
    cloudy = [bool(not e and np.isfinite(f) and f > cloud_threshold) for f, e in zip(fractions, empty, strict=True)]
    marks = [(CLOUDY, f"{f:.0%} cloud") if c else (NO_DATA, "no data") if e else None
             for f, c, e in zip(fractions, cloudy, empty, strict=True)]
    # a cell as wide as its panel, or as its label and mark (small panels): no text runs into the next cell
    texts = [str(label) + (f"  {mark[1]}" if mark else "") for label, mark in zip(labels, marks, strict=True)]
    cols = max(1, min(columns, n))
    rows = -(-n // cols)
    cell_w = max(pw + 2 * frame, math.ceil(max(map(font.getlength, texts))) + frame) + gap
    cell_h = ph + 2 * frame + text_h + gap
    bar_w, legend_h = 120, (text_h + gap if legend else 0)
    legend_w = 0 if legend is None else font.getlength(legend.text) + (
        font.getlength(f"  {legend.limits[0]:.3g}  {legend.limits[1]:.3g}") + bar_w + 8 if legend.cmap else 0)
    width, height = max(cols * cell_w + gap, math.ceil(legend_w) + 2 * gap), rows * cell_h + gap + legend_h
    if max_pixels is not None and width * height > max_pixels:  # labels wider than the panels widened it
        raise RequestTooLargeError(f"a contact sheet of {n} panels would be {width} x {height} px (limit "
                                   f"{max_pixels / 1e6:.0f} Mpx); give fewer panels or a smaller scale")
    sheet = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(sheet)
    if legend:
        _draw_legend(sheet, legend, (gap, rows * cell_h + gap), font=font, bar_width=bar_w)
    boxes = []
    for i, (panel, label, mark) in enumerate(zip(panels, labels, marks, strict=True)):
        x0 = gap + (i % cols) * cell_w + frame
        y0 = gap + (i // cols) * cell_h + frame
        if mark:
            draw.rectangle((x0 - frame, y0 - frame, x0 + pw + frame - 1, y0 + ph + frame - 1), fill=mark[0])
        tile = Image.new("RGB", (pw, ph), background)
        tile.paste(Image.fromarray(enlarge(panel, scale), mode="RGBA"), (0, 0),
                   Image.fromarray(enlarge(panel[..., 3], scale), mode="L"))
        sheet.paste(tile, (x0, y0))
        text_y = y0 + ph + frame + 1
        draw.text((x0, text_y), str(label), fill=(235, 235, 235), font=font)
        if mark:
            tx = x0 + draw.textlength(str(label) + "  ", font=font)
            draw.text((tx, text_y), mark[1], fill=mark[0], font=font)
        boxes.append((x0, y0, x0 + pw, y0 + ph))
    return ContactSheet(np.asarray(sheet), tuple(boxes), tuple(cloudy), tuple(empty), legend)


def _draw_legend(sheet: Image.Image, legend: Legend, at: tuple[float, float], *, font: ImageFont.FreeTypeFont,
                 bar_width: int) -> None:
    """``legend`` on ``sheet`` from ``at``: its text, then for a colour map its low value, a colour bar of
    ``bar_width`` px and its high value."""
    draw = ImageDraw.Draw(sheet)
    x, y = at
    draw.text((x, y), legend.text, fill=(235, 235, 235), font=font)
    if legend.cmap:
        lo, hi = legend.limits
        x += font.getlength(legend.text + "  ")
        draw.text((x, y), f"{lo:.3g}", fill=(235, 235, 235), font=font)
        x = math.ceil(x + font.getlength(f"{lo:.3g}") + 4)
        bar = matplotlib.colormaps[legend.cmap](np.linspace(0, 1, bar_width))[:, :3] * 255
        sheet.paste(Image.fromarray(np.repeat(np.round(bar).astype(np.uint8)[None], 10, axis=0)), (x, y + 2))
        draw.text((x + bar_width + 4, y), f"{hi:.3g}", fill=(235, 235, 235), font=font)


def write_geotiff(
    path: str | os.PathLike[str],
    data: np.ndarray,
    geobox: GeoBox,
    *,
    nodata: float | None = None,
    band_names: Sequence[str] | None = None,
    units: Sequence[str] | None = None,
    tags: Mapping[str, str] | None = None,
    compress: str = "deflate",
) -> None:
    """Write a chip ``(bands, rows, cols)`` or ``(rows, cols)`` as a GeoTIFF on ``geobox``'s grid
    (its CRS and transform), one band per layer, named by ``band_names``, with ``units`` per band and the
    dataset ``tags`` (where the chip comes from: its date, scene, parcel); ``path`` ends ``.tif`` or ``.tiff``."""
    if Path(path).suffix.lower() not in (".tif", ".tiff"):  # a GeoTIFF under a .png name misled every viewer
        raise InvalidRequestError(f"{os.fspath(path)}: a chip is written as GeoTIFF here; give a file name ending .tif "
                                  f"(or write a PNG with to_png)")
    arr = np.asarray(data)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[1:] != geobox.shape:
        raise InvalidRequestError(f"chip {np.shape(data)} does not match the grid {geobox.shape}")
    if band_names is not None and len(band_names) != arr.shape[0]:
        raise InvalidRequestError(f"{len(band_names)} band names for {arr.shape[0]} bands")
    profile = {
        "driver": "GTiff", "height": arr.shape[1], "width": arr.shape[2], "count": arr.shape[0],
        "dtype": arr.dtype.name, "crs": geobox.crs.to_wkt(), "transform": geobox.affine,
        "nodata": nodata, "compress": compress,
    }
    with replacing(path) as part, rasterio.open(part, "w", **profile) as dst:
        dst.write(arr)
        for i, name in enumerate(band_names or (), start=1):
            dst.set_band_description(i, name)
        for i, unit in enumerate(units or (), start=1):
            dst.set_band_unit(i, unit)
        if tags:
            dst.update_tags(**tags)
