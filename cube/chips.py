"""Image chips: a small window of the cube around a parcel or point, at selected dates.

:func:`chip` returns a :class:`Chip` (the xarray subset plus the parcel outline) whose methods render
what an inspector looks at: a true-colour or index PNG with the parcel outline, a GeoTIFF, and a
contact sheet of the season with cloudy dates marked.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
import xarray as xr
from odc.geo.geobox import GeoBox
from pyproj import CRS
from shapely.geometry import MultiLineString, Point, box
from shapely.geometry.base import BaseGeometry

from cardcube.errors import (
    AmbiguousDateError,
    AreaOutsideCubeError,
    DateNotFoundError,
    InvalidRequestError,
    ParcelOutsideCubeError,
    RequestTooLargeError,
)
from cardcube.grid import TileGrid
from cardcube.query import TIME_FORMAT, check_lonlat, parse_time_range, space_for_plus
from cardcube.spec import CLOUD_SCL_CLASSES, SCL_NO_DATA, cube_spec
from cardcube.storage import StoreLike, open_store
from cube import layout, render
from cube.dataset import (
    PASS_GAP,
    as_read,
    check_acquisitions,
    compute_reads,
    dated_elsewhere,
    pass_key,
    read_cube,
    tile_dates,
)
from cube.indices import INDICES, add_indices, band_list, bands_for, check_bands, check_decoded, stored_bands
from cube.ledger import CubeVersion, data_footprint, held_share, read_version
from cube.membership import parcel_pixels
from cube.parcels import ParcelSet, as_parcels
from cube.tile_arrays import ArrayCache
from cube.timeseries import assign_tiles, cube_dataset, dataset_geobox

MAX_SIZE = 2048  # pixels per side
MAX_IMAGE_SIZE = 4096  # pixels per side of a rendered (enlarged) chip
MAX_BYTES = 1 << 30  # decoded float32 bytes of one chip request
SHEET_COLUMNS, SHEET_SCALE = 6, 3  # a season contact sheet's panels per row and enlargement (Chip.contact_sheet)
SHEET_ADVICE = "narrow the time range, the size or the scale"  # what the caller of a sheet too large may change
MAX_SHEET_PIXELS = 25_000_000  # pixels of a season sheet (a 5,000 px square)
TRUE_COLOUR = ("B04", "B03", "B02")
PER_DATE_TAGS = frozenset({"ACQUISITION_TIME", "SCENE_ID", "PLATFORM", "ORBIT_STATE"})  # a sheet's: one per panel
ORBIT_ABBREVIATIONS = {"ascending": "asc", "descending": "desc"}
DEFAULT_BANDS = {"s2": TRUE_COLOUR, "s1": ("VH_VV",)}  # what a chip shows unless told: true colour, the VH/VV ratio
REFLECTANCE = frozenset(b for b in cube_spec("s2").band_names if b != "SCL")  # shown over REFLECTANCE_LIMITS in RGB
# each reflectance band drawn black to white in a composite of three, on every chip: the visible bands and red edge 1
# over 0..0.3 (true colour: fields, not clouds), the near-infrared plateau (red edge 2 and 3, B08, B8A) over 0..0.6
# and the short-wave infrared over 0..0.5, where crops and soils lie above 0.3 (a false-colour B08,B04,B03 chip over
# 0..0.3 drew 70 % of the clear farmland pixels of a season one flat red: a crop in full canopy as one at half of it)
REFLECTANCE_LIMITS: dict[str, tuple[float, float]] = {
    **dict.fromkeys(("B02", "B03", "B04", "B05"), render.TRUE_COLOUR_LIMITS),
    **dict.fromkeys(("B06", "B07", "B08", "B8A"), (0.0, 0.6)), **dict.fromkeys(("B11", "B12"), (0.0, 0.5))}
# one acquisition: a day, or a time (to the minute or second, "Z" or an offset; after a "T" or a space, as time=
# takes it and pandas prints it; "t" and "z" in lower case too, as RFC 3339 allows), as chip(date=) takes it as text
ONE_DATE = re.compile(r"\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}(:?\d{2})?)?)?", re.IGNORECASE)
# an index's range on its colour map where NDVI's 0..1 would clip farmland to one colour: NDWI is negative over
# land (-0.6 over crops), water above 0; NDMI and NBR go below 0 over bare soil; RVI exceeds 1 under dense canopy
# and speckle (its theoretical range is 0..4)
INDEX_LIMITS = {"VH_VV": (-25.0, 0.0), "NDWI": (-1.0, 1.0), "NDMI": (-0.2, 0.6), "NBR": (-0.2, 1.0),
                "RVI": (0.0, 1.5)}
# Sentinel-1 backscatter drawn black to white over the same dB on every chip, date and request (farmland: VV about
# -22 to -8 dB, VH -30 to -15): a stretch of the chip's own values made a date's grey depend on the dates asked with it
# SCL's classes 0..11 each a grey of its own (a stretch of a chip's classes drew shadow and saturated pixels black)
BAND_LIMITS = {"VV": (-25.0, -5.0), "VH": (-30.0, -10.0), "SCL": (0.0, 11.0)}


def check_chip_size(size: int) -> None:
    """A clear error for a chip of more than :data:`MAX_SIZE` px a side (or none, or not a whole number)."""
    if not isinstance(size, int | np.integer) or isinstance(size, bool):  # 64.5 made 65 px, True 1 px
        raise InvalidRequestError(f"chip size {size!r}: give a whole number of pixels a side from 1 to {MAX_SIZE}")
    if size < 1:  # too small, not too large
        raise InvalidRequestError(f"chip size {size} px: give a whole number of pixels a side from 1 to {MAX_SIZE}")
    if size > MAX_SIZE:
        raise RequestTooLargeError(f"chip size {size} px is outside 1..{MAX_SIZE} px a side; lower the size")


def check_image_size(size: int, scale: int) -> None:
    """A clear error for a chip of ``size`` px too large to read (:func:`check_chip_size`) or that would be drawn
    larger than :data:`MAX_IMAGE_SIZE` a side."""
    check_chip_size(size)
    if scale < 1:  # too small, not too large
        raise InvalidRequestError(f"scale {scale} is no enlargement: give a whole number from 1 (each pixel drawn as "
                                  f"scale x scale pixels)")
    if size * scale > MAX_IMAGE_SIZE:
        raise RequestTooLargeError(f"a {size} px chip enlarged {scale}x would be {size * scale} px a side (limit "
                                   f"{MAX_IMAGE_SIZE}); lower the scale or the size")


@dataclass(frozen=True, eq=False)
class Chip:
    """A chip: ``data``, a Dataset of one ``(time, y, x)`` variable per band (physical values) plus ``SCL`` for
    Sentinel-2, the parcel ``outline`` (chip CRS) and its id, or the ``point`` it is centred on (chip CRS)."""

    data: xr.Dataset
    bands: tuple[str, ...]
    outline: BaseGeometry | None = None
    parcel_id: Any = None
    point: Point | None = None

    @property
    def geobox(self) -> GeoBox:
        return dataset_geobox(self.data)

    @property
    def times(self) -> np.ndarray:
        return self.data["time"].values

    @cached_property
    def _inside(self) -> np.ndarray:
        """The chip pixels the per-date fractions count: the parcel's, or all without a parcel (or a parcel
        smaller than a pixel); worked out once for the cloud and the no-data fractions."""
        shape = (self.data.sizes["y"], self.data.sizes["x"])
        inside = parcel_pixels(self.outline, self.geobox, buffer=0.0) if self.outline is not None else None
        return inside if inside is not None and inside.any() else np.ones(shape, bool)

    def _shown(self, band: str, t: int | None = None) -> np.ndarray:
        """``band`` (at date index ``t``, else every date) as drawn and written: floats, with SCL's no-data class
        as NaN, as every other band's no data (it was drawn black, and a GeoTIFF could not say NaN in uint8)."""
        values = self.data[band].values if t is None else self.data[band].isel(time=t).values
        if band == "SCL":
            return np.where(values == SCL_NO_DATA, np.float32(np.nan), values.astype(np.float32))
        return values

    def cloud_fraction(self, classes: Sequence[int] = CLOUD_SCL_CLASSES) -> np.ndarray:
        """Per date, the share of the parcel's pixels (or the chip's, without a parcel) with data that SCL
        calls cloud (shadows, clouds, cirrus; not snow nor saturated pixels, which the statistics' default mask
        masks too; ``classes`` to count others): pixels outside the swath (SCL 0, no data) are left out, as they
        are no cloud (:meth:`nodata_fraction` counts them). NaN without an SCL layer (Sentinel-1 sees through
        clouds) or without a pixel with data."""
        if "SCL" not in self.data:
            return np.full(self.data.sizes["time"], np.nan)
        scl = self.data["SCL"].values[:, self._inside]
        seen = scl != SCL_NO_DATA
        with np.errstate(invalid="ignore", divide="ignore"):
            return (np.isin(scl, list(classes)) & seen).sum(axis=1) / seen.sum(axis=1)

    def nodata_fraction(self) -> np.ndarray:
        """Per date, the share of the parcel's pixels (or the chip's) with no value in any shown band: outside
        that orbit's swath or the tile's data, not cloudy."""
        empty = np.all([np.isnan(self._shown(b)) for b in self.bands], axis=0)
        return empty[:, self._inside].mean(axis=1)

    @property
    def outline_colour(self) -> tuple[int, int, int, int]:
        """The parcel outline's colour: :data:`render.OUTLINE` (yellow) on true colour and grey,
        :data:`render.INDEX_OUTLINE` (magenta) on an index's colour map, which has yellows of its own."""
        return render.INDEX_OUTLINE if len(self.bands) == 1 and self.bands[0] in INDICES else render.OUTLINE

    @property
    def mark(self) -> BaseGeometry | None:
        """What is drawn over the chip: the parcel outline, or a cross of 5 pixels on the point it is centred on (its
        arms 2 pixels long: an end is drawn in the pixel holding it, so arms of 2.5 drew 6 pixels, the cross half a
        pixel off the point's)."""
        if self.outline is not None or self.point is None:
            return self.outline
        d, (x, y) = 2 * abs(self.geobox.affine.a), self.point.coords[0]
        return MultiLineString([[(x - d, y), (x + d, y)], [(x, y - d), (x, y + d)]])

    def _check_date(self, t: int) -> None:
        """A clear error for a date index ``t`` the chip does not have (negative ones count from the end)."""
        n = self.data.sizes["time"]
        if not isinstance(t, int | np.integer) or isinstance(t, bool):  # a date given as text or a Timestamp
            raise InvalidRequestError(f"date index {t!r} is no position: give 0..{n - 1} (Chip.times lists the "
                                      f"dates; chip(..., time=...) makes a chip of one day)")
        if not -n <= t < n:
            raise InvalidRequestError(f"date index {t} is outside the chip's {n} date(s): give 0..{n - 1} "
                                      f"(-1 the last; Chip.times lists them)" if n else
                                      f"date index {t}: the chip has no date")

    def rgb_limits(self, *layers: np.ndarray) -> list[tuple[float, float]]:
        """The stretch of each of three bands: surface reflectance over :data:`REFLECTANCE_LIMITS` (true colour over
        0..0.3), backscatter over :data:`BAND_LIMITS`, an index over its range (:data:`INDEX_LIMITS`, else NDVI's
        0..1), any other band over its own 2-98 % of ``layers``."""
        return [REFLECTANCE_LIMITS[b] if b in REFLECTANCE else BAND_LIMITS[b] if b in BAND_LIMITS else
                INDEX_LIMITS.get(b, render.NDVI_LIMITS) if b in INDICES else render.robust_limits(layer)
                for b, layer in zip(self.bands, layers, strict=True)]

    @cached_property
    def stretch(self) -> Any:
        """The stretch every date of the chip is drawn with, so its images compare (a date twice as bright is
        drawn brighter): VV, VH, SCL over :data:`BAND_LIMITS` (the same on every chip), another band that is no index
        over its 2-98 % of all the chip's dates, three bands over :meth:`rgb_limits` of all its dates; None for an
        index (its range, :data:`INDEX_LIMITS`)."""
        if len(self.bands) == 3:
            return self.rgb_limits(*(self._shown(b) for b in self.bands))
        if self.bands[0] in INDICES:
            return None
        return BAND_LIMITS.get(self.bands[0]) or render.robust_limits(self._shown(self.bands[0]))

    def image(self, t: int = 0, *, scale: int = 1, outline: bool = True,
              limits: Any = None) -> np.ndarray:
        """RGBA image of date index ``t``: three bands as RGB, a colour map for one; ``scale``: each pixel drawn
        as a ``scale`` x ``scale`` block, up to :data:`MAX_IMAGE_SIZE` a side. An index is drawn over its range
        (:data:`INDEX_LIMITS`, else NDVI's 0..1) on the RdYlGn colour map. A band that is no index is
        stretched over ``limits``, by default :attr:`stretch` (VV and VH over fixed dB, another band over its 2-98 %
        of all the chip's dates, not of this date: until 2026-12-07 each date had its own, the same dB drawn grey 128
        on one date, 193 on the next); three bands likewise, a pair per band (reflectance over 0..0.3)."""
        check_image_size(max(self.data.sizes["y"], self.data.sizes["x"]), scale)
        self._check_date(t)
        layers = [self._shown(b, t) for b in self.bands]
        limits = self.stretch if limits is None else limits
        if len(layers) == 3:
            img = render.true_colour(*layers, limits=limits)
        elif self.bands[0] in INDICES:
            img = render.colour_index(layers[0], limits=INDEX_LIMITS.get(self.bands[0], render.NDVI_LIMITS))
        else:
            img = render.colour_index(layers[0], cmap="gray", limits=limits)
        img = render.enlarge(img, scale) if scale > 1 else img
        if outline and self.mark is not None:
            img = render.draw_outline(img, self.mark, self.geobox, colour=self.outline_colour, width=max(1, scale // 2))
        return img

    def tags(self, t: int = 0) -> dict[str, str]:
        """What date index ``t``'s image shows, as its files say it: the acquisition time (UTC), its scene and
        orbit, the bands, the parcel and the cube version."""
        self._check_date(t)
        at = self.data.isel(time=t)
        return {"ACQUISITION_TIME": pd.Timestamp(self.times[t]).strftime(TIME_FORMAT),
                **{name.upper(): str(at[name].values) for name in ("scene_id", "platform", "orbit_state")
                   if name in at.coords},
                "BANDS": ",".join(self.bands),
                **({"PARCEL_ID": str(self.parcel_id)} if self.parcel_id is not None else {}),
                **({"CUBE_VERSION": str(self.data.attrs["cardcube:version"])}
                   if "cardcube:version" in self.data.attrs else {})}

    def png_text(self, t: int = 0) -> dict[str, str]:
        """The text chunks of date index ``t``'s PNG: its :meth:`tags`, and ``STRETCH``, what its colours mean (the
        bands' values drawn darkest and brightest, or the index's range on its colour map): a chip's grey of VV is
        its chip's :attr:`stretch`, which a saved PNG did not say."""
        legend = self._legend(self.stretch)
        lo, hi = legend.limits
        stretch = (legend.text if legend.cmap is None else f"{legend.text} {lo:.3g} (black) to {hi:.3g} (white)"
                   if legend.cmap == "gray" else f"{legend.text} {lo:.3g} to {hi:.3g} on {legend.cmap}")
        return {**self.tags(t), "STRETCH": stretch}

    def sheet_text(self) -> dict[str, str]:
        """The text chunks of the season sheet's PNG: what :meth:`png_text` says of a date, for all of them (the
        acquisition times and scenes, comma-separated, in the panels' order); a saved sheet named no parcel, cube
        version or scene."""
        each = [self.png_text(t) for t in range(self.data.sizes["time"])]
        return {key: ",".join(d.get(key, "") for d in each) if key in PER_DATE_TAGS else each[0][key]
                for key in dict.fromkeys(k for d in each for k in d)}

    def to_png(self, path: str, t: int = 0, *, scale: int = 4) -> None:
        """Date index ``t`` as a PNG (:meth:`image`), its :meth:`png_text` as the file's text chunks."""
        render.write_png(self.image(t, scale=scale), path, self.png_text(t))

    def to_geotiff(self, path: str, t: int = 0) -> None:
        """Date index ``t`` as a GeoTIFF on the chip's grid: a float32 band per shown band (NaN for no data), named,
        with its unit; tagged with its :meth:`tags`."""
        tags = self.tags(t)
        data = np.stack([self._shown(b, t) for b in self.bands]).astype(np.float32, copy=False)
        render.write_geotiff(path, data, self.geobox, nodata=float("nan"), band_names=list(self.bands),
                             units=[self.data[b].attrs.get("units", "") for b in self.bands], tags=tags)

    @property
    def labels(self) -> list[str]:
        """A label per date: the day (UTC), and the orbit direction ("asc", "desc") when the chip has dates of both
        (Sentinel-1: the look direction, and so the backscatter, differs from one pass to the next)."""
        days = [pd.Timestamp(t).strftime("%Y-%m-%d") for t in self.times]
        states = self.data["orbit_state"].values if "orbit_state" in self.data.coords else []
        if len(set(states)) < 2:
            return days
        return [f"{day} {ORBIT_ABBREVIATIONS.get(str(s), s)}" for day, s in zip(days, states, strict=True)]

    def _unit(self, band: str) -> str:
        return " (dB)" if self.data[band].attrs.get("units") == "dB" else ""

    def _legend(self, limits: Any) -> render.Legend:
        """What the sheet's colours mean: the bands of R, G and B with their stretch, or the band's colour bar."""
        if len(self.bands) == 3:
            if all(b in REFLECTANCE for b in self.bands) and len({REFLECTANCE_LIMITS[b] for b in self.bands}) == 1:
                lo, hi = REFLECTANCE_LIMITS[self.bands[0]]
                return render.Legend(f"R {self.bands[0]}, G {self.bands[1]}, B {self.bands[2]}: reflectance "
                                     f"{lo:.3g} (dark) to {hi:.3g} (bright)")
            if all(b in REFLECTANCE for b in self.bands):  # false colour: the near and short-wave infrared's own
                return render.Legend(", ".join(f"{c} {b} {lo:.3g} to {hi:.3g}" for c, b, (lo, hi)
                                               in zip("RGB", self.bands, limits, strict=True))
                                     + ": reflectance, dark to bright")
            return render.Legend("; ".join(f"{c} {b}{self._unit(b)} {lo:.3g} to {hi:.3g}" for c, b, (lo, hi)
                                           in zip("RGB", self.bands, limits, strict=True)))
        band = self.bands[0]
        if band in INDICES:
            return render.Legend(f"{band}{self._unit(band)}", "RdYlGn", INDEX_LIMITS.get(band, render.NDVI_LIMITS))
        return render.Legend(f"{band}{self._unit(band)}", "gray", limits)

    def contact_sheet(self, *, columns: int = SHEET_COLUMNS, scale: int = SHEET_SCALE,
                      classes: Sequence[int] = CLOUD_SCL_CLASSES, advice: str = SHEET_ADVICE) -> render.ContactSheet:
        """The season at a glance: one panel per date (labelled by :attr:`labels`), cloudy dates framed in red,
        dates without data over the parcel (outside that orbit's swath) in grey. Every date is drawn with the
        chip's :attr:`stretch` (fixed ranges, or one 2-98 % of the whole season), so its dates compare.
        A sheet that would exceed :data:`MAX_SHEET_PIXELS` is a :class:`RequestTooLargeError` before any drawing,
        saying ``advice`` (what the caller may change)."""
        labels = self.labels
        _check_sheet_size(len(labels), (self.data.sizes["y"], self.data.sizes["x"]), columns=columns, scale=scale,
                          advice=advice)
        limits = self.stretch
        panels = [self.image(t, outline=False) for t in range(len(labels))]
        sheet = render.contact_sheet(panels, labels=labels, cloud_fraction=self.cloud_fraction(classes),
                                     nodata_fraction=self.nodata_fraction(), columns=columns, scale=scale,
                                     legend=self._legend(limits), max_pixels=MAX_SHEET_PIXELS)
        sheet = replace(sheet, text=self.sheet_text())
        if self.mark is None:
            return sheet
        image = sheet.image.copy()
        for x0, y0, x1, y1 in sheet.boxes:  # the outline (or the point's cross) on every panel
            image[y0:y1, x0:x1, :3] = render.draw_outline(
                np.dstack([image[y0:y1, x0:x1, :3], np.full((y1 - y0, x1 - x0), 255, np.uint8)]),
                self.mark, self.geobox, colour=self.outline_colour, width=1)[..., :3]
        return replace(sheet, image=image)


def _one_date(date: Any) -> Any:
    """The time range of ``chip(date=)``: the day or the instant ``date`` writes (cardcube.query reads it; a
    datetime64 comes as its text, see :func:`chip`)."""
    if isinstance(date, dt.date):
        return date
    if not isinstance(date, str) or not ONE_DATE.fullmatch(date.strip()):
        try:  # a month or a range: each of its dates is a panel of the season sheet
            parse_time_range(date)
            season = f"; every date of a range: time={date} (REST: season.png?time={date})"
        except InvalidRequestError:
            season = ""
        raise InvalidRequestError(f"date {date!r} is not a day or a time: give one day as YYYY-MM-DD, or an "
                                  f"acquisition's time as YYYY-MM-DDTHH:MM:SSZ (a parcel's timeseries lists "
                                  f"them){season}{space_for_plus(date)}")
    try:
        parse_time_range(date.strip())
    except InvalidRequestError as exc:  # 2024-06-31: no day of the calendar, said as such, not as a range
        raise InvalidRequestError(f"date {date!r} is no day or time of the calendar ({exc})") from None
    return f"{date.strip()}/{date.strip()}"


def _is_time(date: Any) -> bool:
    """Whether ``date`` (a chip's) is a time of day, not a day alone: a datetime, or text with a time after a
    "T" or a space."""
    if isinstance(date, str):
        return bool((one := ONE_DATE.fullmatch(date.strip())) and one[1])
    return isinstance(date, dt.datetime)


def _same_pass(version: CubeVersion, tiles: Sequence[str], time: Any) -> frozenset | None:
    """The exact times on ``tiles`` (the chip's) of the passes a chip date's ``time`` names on any tile, where one
    of ``tiles`` holds such a pass at another time of its own (its product's sensing time, seconds from another
    tile's: the time series may read that one); None where ``tiles`` hold them at ``time`` already. A pass is as
    :func:`cube.mosaic.pass_times` joins tiles: its platform, relative orbit and orbit direction, within
    :data:`~cube.dataset.PASS_GAP`; a tile holding a date within ``time`` keeps that date alone."""
    asked = [a for state in version.tiles.values() for a in tile_dates(state, time)]
    kept, moved = set(), False
    for tile in tiles:
        state = version.tiles[tile]
        own = tile_dates(state, time)
        if not own:
            own = [a for a in state.acquisitions for b in asked
                   if pass_key(a) == pass_key(b) and abs(a.datetime64 - b.datetime64) <= PASS_GAP]
            moved |= bool(own)
        kept.update(a.datetime64 for a in own)
    return frozenset(kept) if moved else None


def _one_pass(result: Chip, date: Any, collection: str) -> Chip:
    """``result`` (read for ``date``, a day) of its one acquisition with data over the parcel (over the chip, for a
    point), or :class:`AmbiguousDateError` listing those that have (every one, if none has). A pass whose swath
    misses the parcel made the day ambiguous and was offered as the date to give, a chip of no data; the chip's
    pixels of the day's few dates tell (as :meth:`Chip.nodata_fraction` does), the ledger's scene extents do not."""
    ds = result.data
    if ds.sizes["time"] < 2:
        return result
    seen = np.flatnonzero(result.nodata_fraction() < 1)
    if len(seen) == 1:
        return replace(result, data=ds.isel(time=seen))
    over = "the parcel" if result.outline is not None else "the chip"
    dates = seen if len(seen) else range(ds.sizes["time"])
    times = [pd.Timestamp(ds["time"].values[t]).strftime(TIME_FORMAT) for t in dates]
    listed = []
    for t, when in zip(dates, times, strict=True):  # Sentinel-1's passes differ by their orbit (and look direction)
        orbit = [str(ds["orbit_state"].values[t])] if "orbit_state" in ds.coords else []
        if "relative_orbit" in ds.coords:
            orbit.append(f"relative orbit {int(ds['relative_orbit'].values[t])}")
        listed.append(f"{when} ({', '.join(orbit)})" if orbit else when)
    which = f"with data over {over}" if len(seen) else f"over the chip, none with data over {over}"
    raise AmbiguousDateError(f"date {date} holds {len(times)} acquisitions of the {collection} cube {which}: "
                             f"{'; '.join(listed)}; give one of these times as the date, e.g. date={times[-1]}")


def _missed(version: CubeVersion, date: Any) -> str | None:
    """For ``chip(date=)`` given a time no acquisition has: the acquisitions of that day, as a message (None for no
    time, or a day without any)."""
    if date is None or not _is_time(date):
        return None
    day = str(parse_time_range(_one_date(date))[0])[:10]  # in UTC, as the times it lists
    held = sorted({(a.time, a.orbit_state) for state in version.tiles.values() for a in tile_dates(state, day)})
    if not held:
        return None
    return (f"no acquisition of the {version.collection} cube at {date}; {day} holds "
            f"{'; '.join(f'{t} ({orbit})' for t, orbit in held)}: give one of these times as the date")


def _nearest(version: CubeVersion, date: Any) -> str:
    """For ``chip(date=)`` of a day (or time) between the cube's dates without an acquisition: "; ..." naming the
    acquisitions just before and after it, to ask for one of them ("" otherwise: the cube's dates say it all)."""
    if date is None:
        return ""
    lo, hi = parse_time_range(_one_date(date))
    times = sorted({a.time for state in version.tiles.values() for a in state.acquisitions})
    before = [t for t in times if np.datetime64(t.rstrip("Z"), "ns") < lo]
    after = [t for t in times if np.datetime64(t.rstrip("Z"), "ns") >= hi]
    if not (before and after):
        return ""
    return f"; the nearest acquisitions: {before[-1]} before, {after[0]} after"


def check_chip(version: CubeVersion, *, date: Any = None, time: Any = None,
               bands: Sequence[str] | str | None = None) -> None:
    """Check the time range and bands of a chip of ``version`` as :func:`chip` checks them before reading anything:
    the REST service asks before a request's turn to read, so that a request's own fault (a date that is none, or
    of no acquisition; an unknown band) is answered at once."""
    time = _chip_time(date, time)
    _checked_on(version, _requested_bands(bands, version.collection), time, date)


def _chip_time(date: Any, time: Any) -> Any:
    """The time range of a chip of ``time`` (a range) or ``date`` (one acquisition), not both."""
    if date is None:
        return time
    if time is not None:
        raise InvalidRequestError(f"give time= (a range) or date= (one acquisition), not both: time={time!r}, "
                                  f"date={date!r}")
    return _one_date(date)


def _requested_bands(bands: Sequence[str] | str | None, collection: str) -> tuple[str, ...]:
    """The bands asked for, three (RGB) or one, or the collection's default for none."""
    if bands is not None and not band_list(bands):  # bands="," as the time series refuse it: not the default
        raise InvalidRequestError("no band given: name three bands (RGB) or one band or index, or none for the "
                                  "default")
    return _check_count(band_list(bands or ()) or DEFAULT_BANDS.get(collection, TRUE_COLOUR))


def _checked_on(version: CubeVersion, bands: tuple[str, ...], time: Any, date: Any) -> tuple[str, ...]:
    """``bands`` as ``version`` names them, once they and ``time`` are found there (a time that misses says the
    acquisitions of its day, if any, to choose from)."""
    bands = _check_count(check_bands(bands, version.spec.band_names))
    try:
        check_acquisitions(version, time)
    except DateNotFoundError as exc:
        raise DateNotFoundError(_missed(version, date) or str(exc) + _nearest(version, date)) from None
    return bands


def _check_count(bands: Sequence[str]) -> tuple[str, ...]:
    """``bands`` if they are three (RGB) or one; after :func:`check_bands` too, which merges ``B04`` and ``b04``."""
    if len(bands) not in (1, 3):
        raise InvalidRequestError(f"a chip shows three bands (RGB) or one band/index, got {list(bands)}")
    return tuple(bands)


def _locate(where: Any, registry: Any, id_column: str = "parcel_id") -> tuple[BaseGeometry | None, Any, Any]:
    """(parcel geometry or None, parcel id or None, CRS) of what the user pointed at."""
    if isinstance(where, Point):  # with a registry too: the parcel containing a lon/lat point
        check_lonlat(where.bounds, "EPSG:4326", what="the point's coordinates",
                     advice="give a lon/lat point, shapely.geometry.Point(lon, lat)")
    if isinstance(where, Point) and registry is None:
        return where, None, "EPSG:4326"
    ps = as_parcels(where, registry=registry, id_column=id_column)
    if len(ps) != 1:
        raise InvalidRequestError(f"a chip shows one parcel or point, got {len(ps)} parcels")
    anonymous = isinstance(where, BaseGeometry) and not isinstance(where, Point)  # a bare polygon has no id
    return ps.geometries[0], (None if anonymous else ps.ids[0]), ps.crs


def _project(geometry: BaseGeometry, src: Any, dst: Any) -> BaseGeometry:
    return gpd.GeoSeries([geometry], crs=src).to_crs(dst).iloc[0]


def _chip_box(centre: Point, grid: TileGrid, resolution: int, size: int) -> tuple[float, float, float, float]:
    """A ``size`` x ``size`` pixel box on the tile lattice centred on ``centre`` (tile CRS)."""
    col = math.floor((centre.x - grid.ulx) / resolution) - size // 2
    row = math.floor((grid.uly - centre.y) / resolution) - size // 2
    x0, y1 = grid.ulx + col * resolution, grid.uly - row * resolution
    return x0, y1 - size * resolution, x0 + size * resolution, y1


def _padded(data: xr.Dataset, chip_box: tuple[float, float, float, float], resolution: int) -> xr.Dataset:
    """``data`` (a part of the chip) on the whole chip's pixels, with no data (NaN, SCL 0) where it has none."""
    x0, _, x1, y1 = chip_box
    xs = x0 + (np.arange(round((x1 - x0) / resolution)) + 0.5) * resolution
    ys = y1 - (np.arange(xs.size) + 0.5) * resolution
    fill = {name: SCL_NO_DATA if name == "SCL" else np.nan for name in data.data_vars}
    return data.reindex(x=xs, y=ys, method="nearest", tolerance=resolution / 4, fill_value=fill)


def _window(ds: xr.Dataset, geom: BaseGeometry, *, size: int, what: str
            ) -> tuple[xr.Dataset, tuple[float, float, float, float] | None]:
    """The pixels of ``ds`` in the ``size`` x ``size`` chip centred on ``geom`` (in the Dataset's CRS), and the
    chip's box if they are only a part of it (to pad with no data: the chip stays centred on ``geom``); an
    :class:`AreaOutsideCubeError` when none of them lies within it (``what``: the geometry's kind, for it)."""
    geobox = dataset_geobox(ds)
    centre = geom.centroid if geom.geom_type != "Point" else geom
    res = abs(geobox.affine.a)
    col = math.floor((centre.x - geobox.affine.c) / res) - size // 2
    row = math.floor((geobox.affine.f - centre.y) / res) - size // 2
    rows, cols = geobox.shape
    if not (row < rows and col < cols and row + size > 0 and col + size > 0):  # the chip lies beyond the Dataset
        raise AreaOutsideCubeError(f"the {what} of the chip lies outside the Dataset's {cols} x {rows} px")
    x0, y1 = geobox.affine.c + col * res, geobox.affine.f - row * res
    whole = row >= 0 and col >= 0 and row + size <= rows and col + size <= cols
    return (ds.isel(y=slice(max(row, 0), row + size), x=slice(max(col, 0), col + size)),
            None if whole else (x0, y1 - size * res, x0 + size * res, y1))


@dataclass(frozen=True, slots=True)
class _ChipTiles:
    """Where a chip is read: the tile holding it (whole, or its centre), the tiles to read, its box in their CRS."""

    tile: str
    read: list[str]
    box: tuple[float, float, float, float]
    whole: bool  # the tile holds the whole chip; else the tiles read may leave part of it to pad with no data


def _chip_tiles(version: CubeVersion, geom: BaseGeometry, crs: Any, *, resolution: int, size: int
                ) -> _ChipTiles | None:
    """Where to read the chip centred on ``geom`` (in ``crs``), trying first the tiles whose data holds most of
    ``geom``: the first one whose square holds the whole chip, with every tile of its UTM zone with data in the chip
    (:func:`cube.dataset.open_cube` reads the one holding the chip's data and dates alone, else a mosaic of them:
    a tile's square says nothing of where it has data; until 2026-12-05 a tile whose square ends within the chip
    was left out, and its data there drawn as no data); else the tile holding its centre, read with every tile of
    its UTM zone with data in the chip (a mosaic, padded); None if no tile has data in the chip."""

    def held(tile: str) -> float:
        return held_share(data_footprint(version, tile), _project(geom, crs, TileGrid.from_id(tile).crs))

    first = sorted(version.tiles, key=lambda t: -held(t))  # stable: by name among equals
    for whole in (True, False):
        for tile in first:
            grid = TileGrid.from_id(tile)
            local = _project(geom, crs, grid.crs)
            centre = local.centroid if local.geom_type != "Point" else local
            chip_box, tile_box = _chip_box(centre, grid, resolution, size), box(*grid.bounds)
            inside = tile_box.contains(box(*chip_box)) if whole else tile_box.contains(centre)
            if inside and _has_data(version, tile, chip_box):
                read = [t for t in sorted(version.tiles) if TileGrid.from_id(t).crs == grid.crs
                        and _has_data(version, t, chip_box)]
                return _ChipTiles(tile, read, chip_box, whole)
    return None


def _swapped_hint(version: CubeVersion, geom: BaseGeometry, crs: Any, *, resolution: int, size: int) -> str:
    """For a chip of ``geom`` in lon/lat that no tile holds: "; lon and lat swapped? ..." where its coordinates
    swapped (lat given first: ``--point 52.7 6.1``, EPSG:4326's official axis order) lie in a tile's data, else ""."""
    turned = shapely.transform(geom, lambda xy: xy[:, ::-1])
    west, south, east, north = turned.bounds
    if not (west >= -180 and east <= 180 and south >= -90 and north <= 90):
        return ""
    found = _chip_tiles(version, turned, crs, resolution=resolution, size=size)
    if found is None:
        return ""
    c = turned.centroid
    return (f"; lon and lat swapped? so swapped (lon {c.x:.6g}, lat {c.y:.6g}) it lies in the data of tile "
            f"{found.tile}: give the coordinates lon first (x, y)")


def _has_data(version: CubeVersion, tile: str, chip_box: tuple[float, float, float, float]) -> bool:
    """Whether ``tile`` has data inside the box, not only along its edge (a chip of no data, drawn NaN)."""
    footprint, area = data_footprint(version, tile), box(*chip_box)
    return footprint.intersects(area) and not footprint.touches(area)


def _parcel_first(version: CubeVersion, tiles: Sequence[str], geom: BaseGeometry, crs: Any) -> list[str]:
    """``tiles`` (a chip's, of one UTM zone) with those a parcel ``geom`` is read from first, in the order its time
    series reads them (:func:`cube.timeseries.assign_tiles`): where tiles overlap, the chip's pixels of the parcel
    are those its statistics are of (L2A is corrected tile by tile: two tiles' pixels of a pass differ there), not
    those of the tile holding most of the chip. A point's chip keeps ``tiles``."""
    if geom.geom_type == "Point":
        return list(tiles)
    mine = assign_tiles(version, ParcelSet((0,), (geom,), CRS.from_user_input(crs)))[0]
    return [*(t for t in mine if t in tiles), *(t for t in tiles if t not in mine)]


def check_sheet(version: CubeVersion, time: Any, size: int, *, scale: int = SHEET_SCALE,
                advice: str = SHEET_ADVICE) -> None:
    """:class:`RequestTooLargeError` for a season sheet of ``size`` px panels at ``scale`` over
    :data:`MAX_SHEET_PIXELS` whatever its labels, before anything is read: the panels of the fewest dates a tile
    of ``version`` holds within ``time`` (a chip has those of its tile, or of several) already exceed it.
    :meth:`Chip.contact_sheet` checks the chip's own dates again before drawing."""
    dates = min((n for state in version.tiles.values() if (n := len(tile_dates(state, time)))), default=0)
    _check_sheet_size(dates, (size, size), columns=SHEET_COLUMNS, scale=scale, advice=advice)


def _check_sheet_size(dates: int, panel: tuple[int, int], *, columns: int, scale: int, advice: str) -> None:
    width, height = render.least_sheet_size(dates, panel, columns=columns, scale=scale)
    if dates and width * height > MAX_SHEET_PIXELS:
        raise RequestTooLargeError(f"a season sheet of {dates} dates of {panel[1]} px at scale {scale} would be at "
                                   f"least {width} x {height} px (limit {MAX_SHEET_PIXELS / 1e6:.0f} Mpx); {advice}")


def chip(
    cube: xr.Dataset | StoreLike,
    where: Any,
    *,
    collection: str = "s2",
    size: int = 128,
    time: Any = None,
    date: Any = None,
    bands: Sequence[str] | str | None = None,
    registry: Any = None,
    id_column: str = "parcel_id",
    as_of: int | CubeVersion | None = None,
    storage_options: Mapping[str, Any] | None = None,
    cache: ArrayCache | None = None,
) -> Chip:
    """A ``size`` x ``size`` pixel chip centred on a parcel (id, geometry) or a lon/lat point.

    ``bands`` are three bands shown as RGB, or one band or index (``("NDVI",)``); by default
    :data:`DEFAULT_BANDS` of the collection (true colour for S2, the VH/VV ratio for S1). Requests larger than
    :data:`MAX_SIZE` pixels a side or :data:`MAX_BYTES` of data raise :class:`RequestTooLargeError`.
    A chip that no tile holds whole is a mosaic of the tiles with data in it (of its centre's UTM zone), padded
    with no data (NaN, SCL 0) beyond them. The ids of a GeoDataFrame (``where`` or ``registry``) are in its
    ``id_column``, as for :func:`parcel_timeseries`.
    ``cache`` keeps opened arrays between calls (see :func:`cube.dataset.open_cube`).
    ``date`` (instead of ``time``) asks for one acquisition: a day (``"2024-05-04"``, a ``datetime.date``, a
    ``datetime64`` of a day) or its time (``"2024-05-04T17:23:48Z"``, as ``Chip.times`` and the time series give
    it; a pass's time on another tile is that pass on the chip's tile, at its own time: :func:`_same_pass`); a
    day holding several acquisitions with data over the parcel (Sentinel-1's dawn and dusk passes; over the chip,
    for a point) is an :class:`AmbiguousDateError` listing their times and orbits, rather than a chip of the
    first; a day of one such acquisition is its chip, whatever passes without data there the day holds too.
    """
    check_chip_size(size)
    if isinstance(date, np.datetime64):  # at its unit's precision: a day's is a day, a month's refused as "2024-05"
        date = str(np.datetime_as_string(date))
    time = _chip_time(date, time)
    if isinstance(cube, xr.Dataset | xr.DataArray):
        collection = cube.attrs.get("cardcube:collection", collection)
    bands = _requested_bands(bands, collection)
    geom, pid, crs = _locate(where, registry, id_column)
    pad_to = None  # the whole chip's box, where only a part of it is read
    if isinstance(cube, xr.Dataset | xr.DataArray):
        cube = cube_dataset(cube)  # one selected date is a chip of it; y sorted north to south
        ds, no_dates = as_read(cube, as_of=as_of, time=time)
        if no_dates:
            raise DateNotFoundError(no_dates)
        bands = _check_count(check_bands(bands, list(ds.data_vars)))
        check_decoded(ds, bands_for(bands), "a chip")  # stored integers would be drawn as reflectance
        ds, pad_to = _window(ds, _project(geom, crs, dataset_geobox(ds).crs), size=size,
                             what=geom.geom_type.lower())
        res = abs(dataset_geobox(ds).affine.a)
    else:
        store = open_store(layout.cube_root(cube), storage_options=storage_options, read_only=True)
        version = read_version(store, collection, as_of)
        bands = _checked_on(version, bands, time, date)
        res = min(version.spec.band(b).resolution for b in bands_for(bands))
        found = _chip_tiles(version, geom, crs, resolution=res, size=size)
        if found is None:
            lonlat = crs is not None and CRS.from_user_input(crs).is_geographic
            reason = (f"no tile of the {collection} cube holds a {size} px chip around it with data in it"
                      + (_swapped_hint(version, geom, crs, resolution=res, size=size) if lonlat else ""))
            if pid is not None:
                raise ParcelOutsideCubeError(pid, reason)
            c = geom.centroid  # lon and lat named: a point given lat first is then seen at once
            at = f"lon {c.x:.6g}, lat {c.y:.6g}" if lonlat else f"{c.x:.6g}, {c.y:.6g}"
            raise AreaOutsideCubeError(f"the {geom.geom_type.lower()} at {at} ({crs}): {reason}")
        if _is_time(date):  # a pass's time on another tile (as the time series may give it): the chip's tile's own
            time = _same_pass(version, found.read, time) or time
        ds = read_cube(store, version, bbox=found.box, time=time, tiles=_parcel_first(version, found.read, geom, crs),
                       bands=stored_bands(bands, version.spec.band_names), resolution=res, chunks="window",
                       cache=cache, order="area" if geom.geom_type == "Point" else "first")  # a read per band, block
        pad_to = None if found.whole else found.box
        if not ds.sizes["time"]:  # the cube has dates in ``time``, but not on the tiles holding the chip
            if elsewhere := dated_elsewhere(version, found.read, time):
                raise DateNotFoundError(f"no date of the chip: {elsewhere}")
            held = sorted(a.time for t in found.read for a in tile_dates(version.tiles[t]))
            raise DateNotFoundError(f"no acquisition of tile {'+'.join(found.read)}, which holds the chip, within the "
                                    f"time range {time}: its dates run from {held[0][:10]} to {held[-1][:10]}")
    stored = stored_bands(bands, list(ds.data_vars))
    derived = [b for b in bands if b in INDICES]
    # every array the chip holds at once: the stored bands read (an index's inputs, SCL) and the indices made
    n_bytes = ds.sizes["time"] * ds.sizes["y"] * ds.sizes["x"] * 4 * (len(stored) + len(derived))
    if n_bytes > MAX_BYTES:
        raise RequestTooLargeError(f"the chip would read {n_bytes / 1e9:.1f} GB ({ds.sizes['time']} dates); "
                                   f"narrow the time range (limit {MAX_BYTES / 1e9:.1f} GB)")
    # the stored bands read, the indices computed from them after: dask.compute of a Dataset loses a variable that
    # another is computed from (dask/xarray#11329), so VV, VH, VH_VV at once failed with "Missing dependency"
    (data,) = compute_reads(ds[stored])
    if derived:
        data = add_indices(data, derived)
    data = data[list(dict.fromkeys([*bands, *(["SCL"] if "SCL" in data else [])]))]
    if pad_to is not None:  # the chip crosses the edge of the tiles holding data: no data beyond them
        data = _padded(data, pad_to, res)
    local = _project(geom, crs, data.rio.crs)
    if local.geom_type == "Point":  # a point no parcel was looked up for: the chip is centred on it
        result = Chip(data, tuple(bands), point=local)
    else:
        result = Chip(data, tuple(bands), local, pid)
    return result if date is None else _one_pass(result, date, collection)
