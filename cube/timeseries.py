"""``parcel_timeseries()``: statistics per parcel, per acquisition, per band, read by chunk.

Parcels are grouped by the cube tile that holds them whole (MGRS tiles overlap by ~10 km, so almost
every parcel has one); each parcel's window is read from the lazy cube in one dask computation, which
touches only the Zarr chunks intersecting the windows. The numbers come from :mod:`cube.stats` (the
same functions full-territory extraction uses) on the pixels chosen by :mod:`cube.membership`.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
import shapely
import xarray as xr
from odc.geo.geobox import GeoBox
from odc.geo.geom import Geometry
from pyproj import Transformer
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry
from zarr.abc.store import Store

from cardcube.errors import (
    DateNotFoundError,
    InvalidRequestError,
    NoAcquisitionWarning,
    ParcelError,
    ParcelOutsideCubeError,
    ParcelsWithoutStatisticsWarning,
    ParcelTooSmallError,
    RequestTooLargeError,
)
from cardcube.grid import TileGrid
from cardcube.query import parse_time_selection
from cardcube.spec import CUBE_SPECS, DEFAULT_SCL_MASK, SCL_CLASSES, SCL_NO_DATA
from cardcube.storage import StoreLike, open_store
from cube import layout
from cube.dataset import (
    as_read,
    check_acquisitions,
    compute_reads,
    dated_elsewhere,
    lacks_passes,
    passes_lacking,
    read_cube,
    tile_dates,
)
from cube.indices import INDICES, check_bands, stored_bands, units_of
from cube.ledger import CubeVersion, data_footprint, held_share, read_version
from cube.membership import DEFAULT_BUFFER, check_buffer, parcel_pixels, window_for
from cube.parcels import ParcelSet, as_parcels, too_small
from cube.pixels import TIME_COLUMNS, ParcelPixels
from cube.stats import STATS, stat_list
from cube.tile_arrays import ArrayCache


@dataclass(frozen=True, slots=True)
class ParcelStatus:
    """Why a parcel has (or has no) statistics: ``ok``, ``outside``, ``too_small`` or ``invalid`` (a parcel of
    a file that is no polygon, e.g. an empty geometry; extraction adds ``failed``), with its pixels and the
    tile(s) it was read from (``+``-joined; of a Dataset, the tiles it was read from). ``reason`` does not repeat
    the parcel id, in time series and extraction status tables alike."""

    parcel_id: Any
    status: str
    pixels: int
    reason: str = ""
    tile: str = ""


class ParcelStatuses(list):
    """``frame.attrs["parcel_status"]``: a record (dict) per parcel. pandas deep-copies a frame's ``attrs`` into
    every frame it derives (a column read, a filter, a sort, each column written to Parquet): the records of 300,000
    parcels took a second a step. This list is shared by those frames instead, as pandas shared ``attrs`` before
    2.1: read it, don't change it (copy it first: ``list(...)``, ``pd.DataFrame(...)``)."""

    __slots__ = ()

    def __deepcopy__(self, memo: dict) -> ParcelStatuses:
        return self


def dataset_geobox(ds: xr.Dataset) -> GeoBox:
    """The GeoBox of a cube Dataset (its CRS, transform and y/x shape), from its coordinates: the transform
    rioxarray keeps in ``spatial_ref`` goes stale when the Dataset is reordered."""
    return GeoBox((ds.sizes["y"], ds.sizes["x"]), ds.rio.transform(recalc=True), ds.rio.crs)


def cube_dataset(ds: Any) -> xr.Dataset:
    """``ds`` as the Dataset a chip or a time series reads: of ``open_cube``'s shape (``time``, ``y``, ``x`` and
    a CRS; one selected date is a date still), rows north to south and columns west to east, as the pixel
    grids of the parcels are (a Dataset sorted by ``y`` measured the wrong pixels). A clear error otherwise."""
    if isinstance(ds, xr.DataArray):
        raise InvalidRequestError(f"a DataArray ({ds.name}): give a Dataset, e.g. ds[[{str(ds.name)!r}]] rather "
                                  f"than ds[{str(ds.name)!r}]")
    if "time" not in ds.dims and "time" in ds.coords and ds["time"].ndim == 0:
        ds = ds.expand_dims("time")
    missing = [d for d in ("time", "y", "x") if d not in ds.dims]
    if missing or ds.rio.crs is None:
        said = f"no {', '.join(missing)} dimension" if missing else "no CRS (its spatial_ref)"
        raise InvalidRequestError(f"the Dataset has {said}: give one of open_cube, with its dates and grid (a "
                                  f"reduction over time, as ds.mean('time'), is no cube of dates)")
    if ds.sizes["y"] > 1 and ds["y"].values[0] < ds["y"].values[-1]:
        ds = ds.isel(y=slice(None, None, -1))
    if ds.sizes["x"] > 1 and ds["x"].values[0] > ds["x"].values[-1]:
        ds = ds.isel(x=slice(None, None, -1))
    for dim in ("y", "x"):  # the grid is one step and an origin: columns picked or areas merged with a gap have none
        steps = np.diff(np.asarray(ds[dim].values, dtype=np.float64))
        if steps.size > 1 and (steps[0] == 0 or np.abs(steps - steps[0]).max() > 1e-6 * abs(steps[0])):
            raise InvalidRequestError(f"the Dataset's {dim} coordinates are not evenly spaced (steps of "
                                      f"{abs(steps).min():g} to {abs(steps).max():g}): they are no grid of pixels "
                                      f"for the parcels; give it a contiguous area (ds.sel({dim}=slice(...)), not "
                                      f"{dim} values picked, nor areas merged with a gap between them)")
    held = {str(v) for v in ds.data_vars}
    if len(of := [spec.name for spec in CUBE_SPECS.values() if held & set(spec.band_names)]) > 1:
        # xr.merge([s2, s1]): each one's bands nodata on the other's dates, and S2's cloud mask masked every S1 pixel
        raise InvalidRequestError(f"the Dataset holds bands of the {' and '.join(of)} cubes (an xr.merge of their "
                                  f"Datasets?): their dates are no one cube's, and Sentinel-2's cloud mask would "
                                  f"leave out every pixel of the others; give each collection's Dataset on its own")
    _check_packing(ds)
    if "SCL" in ds.data_vars and np.issubdtype(ds["SCL"].dtype, np.floating):  # ds.where(...), a reindex, a merge
        ds = ds.assign(SCL=xr.apply_ufunc(scl_classes, ds["SCL"], dask="parallelized", output_dtypes=[np.uint8],
                                          keep_attrs=True))
    return ds


def _units(cube: Any, band: str) -> str:
    """The units of ``band``'s statistics: a Dataset's band's as its attributes say (converted on purpose, they are
    read so), else the cube's."""
    if isinstance(cube, xr.Dataset) and band in cube.data_vars and "units" in cube[band].attrs:
        return str(cube[band].attrs["units"])
    return units_of(band)


def _check_packing(ds: xr.Dataset) -> None:
    """A clear error for a cube band whose attributes, which say how to read its values, were lost
    (``xr.set_options(keep_attrs=False)``, a Dataset built by hand): stored integers without their ``scale_factor``
    were measured as reflectance (a mean of 1425), backscatter without ``units: dB`` averaged in dB, not in linear
    power. A band whose attributes say otherwise (converted on purpose) is read as they say."""
    specs = {b.name: b for spec in CUBE_SPECS.values() for b in spec.bands}
    for name, var in ds.data_vars.items():
        band = specs.get(str(name))
        if band is None or band.flag_values is not None:
            continue
        lost = ("scale_factor" if var.dtype.kind in "iu" and "scale_factor" not in var.attrs else
                "units" if band.units == "dB" and var.dtype.kind == "f" and "units" not in var.attrs else None)
        if lost:
            said = ("stored integers without their scale_factor, add_offset and nodata" if lost == "scale_factor"
                    else "backscatter without its units (dB)")
            raise InvalidRequestError(f"the Dataset's {name} holds {said}: its attributes were lost (xarray drops "
                                      f"them under keep_attrs=False), so its values cannot be read right; give "
                                      f"{name} the attributes open_cube gives it (ds[{str(name)!r}].attrs.update(...)) "
                                      f"or open the cube again")


def scl_classes(values: np.ndarray) -> np.ndarray:
    """A float SCL layer as the class codes it holds, NaN as no data (class 0): ``ds.where(...)``, a reindex or a
    merge make SCL float, with NaN where they leave no value, which the statistics refused as "classes float32 ...
    must be integer" and a chip's cloud share counted as seen. Any other value is no class (a mean of classes)."""
    codes = np.where(np.isnan(values), SCL_NO_DATA, values)
    known = np.isin(codes, list(SCL_CLASSES))
    if not known.all():
        bad = codes[~known].flat[0]
        raise InvalidRequestError(f"the Dataset's SCL holds {bad:g}, no scene class code ({min(SCL_CLASSES)} to "
                                  f"{max(SCL_CLASSES)}): keep SCL as open_cube reads it (not resampled or averaged)")
    return codes.astype(np.uint8)


def _members(ps: ParcelSet, geobox: GeoBox, *, buffer: float, all_touched: bool,
             max_pixels: int | None = None
             ) -> tuple[list[tuple[Any, tuple[slice, slice], np.ndarray]], list[ParcelStatus]]:
    """Each parcel's window and pixel mask on ``geobox``, and the status of every parcel; refused if the windows
    hold more than ``max_pixels`` pixels, before any mask is made (each is as large as its window)."""
    windows = [(pid, geom, window_for(geom, geobox, buffer=buffer)) for pid, geom in ps]
    pixels = sum((w[0].stop - w[0].start) * (w[1].stop - w[1].start) for *_, w in windows if w)
    if max_pixels is not None and pixels > max_pixels:  # memory grows with pixels even for one date (~50 B each)
        raise RequestTooLargeError(f"the parcels' windows hold {pixels:,} pixels (limit {max_pixels:,}: some "
                                   f"{max_pixels * 1e-4 * abs(geobox.resolution.x) ** 2:,.0f} ha); query a field or "
                                   f"a farm, or run cardcube extract for a territory")
    extent = box(*geobox.boundingbox)
    found, status = [], []
    for pid, geom, win in windows:
        mask = parcel_pixels(geom, geobox[win], buffer=buffer, all_touched=all_touched) if win else None
        if mask is not None and mask.any():
            found.append((pid, win, mask))
            status.append(ParcelStatus(pid, "ok", int(mask.sum())))
        elif not geom.intersects(extent):
            status.append(ParcelStatus(pid, "outside", 0, "outside the cube tile(s) read"))
        elif not extent.contains(geom) and _has_pixels(geom, geobox, buffer=buffer, all_touched=all_touched):
            share = geom.difference(extent).area / geom.area  # a Dataset cut across it: the buffer is not to blame
            status.append(ParcelStatus(pid, "outside", 0, f"{share:.1%} of the parcel lies outside the area read (the "
                                                          f"Dataset given, or the cube's tiles), and its part inside "
                                                          f"holds no pixel"))
        else:
            status.append(ParcelStatus(pid, "too_small", 0, too_small(pid, geom, buffer=buffer,
                                                                      all_touched=all_touched).reason))
    return found, status


def _has_pixels(geom: BaseGeometry, geobox: GeoBox, *, buffer: float, all_touched: bool) -> bool:
    """Whether ``geom`` holds a pixel of ``geobox``'s lattice, wherever it lies: on the geobox grown to hold it."""
    x0, y0, x1, y1 = geom.bounds
    e = geobox.boundingbox
    pad = math.ceil(max(e.left - x0, y0 - e.bottom, x1 - e.right, e.top - y1, 0) / abs(geobox.resolution.x)) + 1
    grown = geobox.pad(pad)
    win = window_for(geom, grown, buffer=buffer)
    return bool(win) and bool(parcel_pixels(geom, grown[win], buffer=buffer, all_touched=all_touched).any())


def _window_stats(ds: xr.Dataset, ps: ParcelSet, bands: Sequence[str], *, stats: Sequence[str],
                  mask: Sequence[int] | None, buffer: float, all_touched: bool, histogram: bool,
                  max_bytes: float, max_pixels: int | None) -> tuple[list[pd.DataFrame], list[ParcelStatus]]:
    geobox = dataset_geobox(ds)
    found, status = _members(ps.to_crs(geobox.crs), geobox, buffer=buffer, all_touched=all_touched,
                             max_pixels=max_pixels)
    if not found:
        return [], status
    names = [b for b in stored_bands(bands, list(ds.data_vars), scl=mask is not None or histogram) if b in ds]
    pixels = sum(int(m.size) for _, _, m in found)
    size = pixels * ds.sizes["time"] * sum(ds[n].dtype.itemsize for n in names)
    if size > max_bytes:
        raise RequestTooLargeError(f"the parcels' windows hold {pixels:,} pixels x {ds.sizes['time']} dates x "
                                   f"{len(names)} bands: {size / 2**20:.0f} MiB to read (limit "
                                   f"{max_bytes / 2**20:.0f} MiB); narrow the time range or the bands, or run "
                                   f"cardcube extract for a territory")
    # every parcel's pixels, row-major within each, picked at once: one task graph whatever the parcels (a window
    # per parcel made one graph layer each, and culling thousands of them cost more than the read)
    where = [np.nonzero(m) for _, _, m in found]
    ys, xs = (np.concatenate([at[k] + w[k].start for at, (_, w, _) in zip(where, found, strict=True)]) for k in (0, 1))
    labels = np.concatenate([np.full(len(at[0]), i, dtype=np.int64) for i, at in enumerate(where)])
    (picked,) = compute_reads(ds[names].isel(y=xr.DataArray(ys, dims="pixel"), x=xr.DataArray(xs, dims="pixel")))
    values = {name: _measured_db(picked[name].transpose("time", "pixel").values, ds[name].attrs) for name in names}
    pixels = ParcelPixels.from_labels(np.array([pid for pid, _, _ in found], dtype=object), labels, ds["time"].values,
                                      values, {n: dict(ds[n].attrs) for n in names},
                                      {c: ds[c].values for c in TIME_COLUMNS if c in ds.coords})
    return [pixels.frame(bands, stats=stats, mask=mask, histogram=histogram)], status


def _measured_db(values: np.ndarray, attrs: Mapping[str, Any]) -> np.ndarray:
    """``values`` of a band with NaN for its infinite dB (a Dataset's own ``10 log10`` of a power of 0, or of
    infinity): no measurement, as ingest stores them (:meth:`ingest.values.ValueMap.apply`). Counted as pixels, they
    made a mean of -inf or one biased low by a power of 0, a std of NaN and a min of -inf. Other bands as they are."""
    if attrs.get("units") != "dB" or values.dtype.kind != "f" or not np.isinf(values).any():
        return values
    return np.where(np.isinf(values), np.nan, values).astype(values.dtype)


def check_query(version: CubeVersion, *, bands: Sequence[str] | str | None, stats: Sequence[str] | str,
                mask: Sequence[int] | str | None) -> tuple[list[str], list[str], Sequence[int] | None]:
    """The bands, statistics and mask of a time series of ``version``, checked as :func:`parcel_timeseries` checks
    them before reading (the REST service too, before a request's turn to read)."""
    available = list(version.spec.band_names)
    stats = stat_list(stats)  # first, as parcel_timeseries has always said
    return check_bands(bands, available, statistics=True), stats, resolve_mask(mask, available, version.collection)


def resolve_mask(mask: Sequence[int] | str | None, available: Sequence[str], collection: str
                 ) -> Sequence[int] | None:
    """The SCL classes to mask: ``"default"`` is :data:`DEFAULT_SCL_MASK` where there is an SCL band, ``"none"``
    (as the REST service spells it) None, ``"3,8,9,10"`` those codes (``--mask``); any other text is an error."""
    if isinstance(mask, str) and re.fullmatch(r"\s*\d+(\s*,\s*\d+)*\s*", mask):  # "3,8,9,10" (--mask, REST)
        mask = [int(c) for c in mask.split(",")]
    elif isinstance(mask, str):
        if mask.strip().lower() not in ("default", "none"):
            raise InvalidRequestError(f"mask {mask!r}: give 'default', 'none' (or None) or SCL class codes, e.g. "
                                      f"[3, 8, 9, 10] or '3,8,9,10'")
        mask = None if mask.strip().lower() == "none" else "default"
    if isinstance(mask, str):  # "default" (an array's == is elementwise)
        if "SCL" not in available and collection in CUBE_SPECS and "SCL" in CUBE_SPECS[collection].band_names:
            raise InvalidRequestError("the Dataset has no SCL band to mask clouds with (mask='default'): open it "
                                      "with SCL among its bands, or pass mask=None for statistics of every pixel, "
                                      "clouds included")  # it gave those without a word, unlike the cube's location
        return DEFAULT_SCL_MASK if "SCL" in available else None
    if mask is not None and "SCL" not in available:
        raise InvalidRequestError(f"the {collection} cube has no SCL band to mask clouds with; pass mask=None "
                                  f"(--no-mask)")
    return None if mask is None else scl_codes(mask)


def scl_codes(mask: Any) -> tuple[int, ...]:
    """``mask`` as SCL class codes, each one of :data:`SCL_CLASSES`; anything else is an error naming the classes
    (a code of no class masked nothing without a word, a text or a float failed deep in the statistics)."""
    codes = list(mask) if isinstance(mask, Iterable) and not isinstance(mask, str | bytes | Mapping) else None
    if codes is None or not all(isinstance(c, int | np.integer) and not isinstance(c, bool) and int(c) in SCL_CLASSES
                                for c in codes):
        classes = ", ".join(f"{code} {name}" for code, name in SCL_CLASSES.items())
        raise InvalidRequestError(f"mask {mask!r}: give a list of SCL class codes, e.g. {list(DEFAULT_SCL_MASK)} "
                                  f"(the default); the classes: {classes}")
    return tuple(int(c) for c in codes)


TILE_RULE = 2  # of assign_tiles: one more whenever it reads a parcel from other tiles (an extraction records it)
LONLAT = "EPSG:4326"  # where a parcel outside the data lies, and the data, are said in it (_where_outside)


def assign_tiles(version: CubeVersion, ps: ParcelSet, time: Any = None, *, reach: float = 0.0
                 ) -> list[tuple[str, ...]]:
    """The tiles to read each parcel from: the tile whose data holds it whole (the one with the most dates, then
    the first by name), followed by the tiles of its UTM zone with data over it on dates (within ``time``) it lacks
    (a mosaic per date, as :func:`cube.dataset.open_cube` reads one: tiles ingested with different histories, a
    scene rejected on one tile); else every tile of one UTM zone whose data it touches (a mosaic:
    :func:`_one_zone`; empty: outside the cube's data, so no parcel is reported with statistics of nodata only).
    ``reach``: how far a parcel's pixels reach beyond its outline (a positive buffer), judged by its outline grown
    so far (until 2026-12-05, a parcel just beyond the data whose grown outline held some was ``outside``).
    One rule for time series and extraction."""
    names = sorted(version.tiles)
    footprints = {name: data_footprint(version, name) for name in names}
    crs = {name: TileGrid.from_id(name).crs for name in names}
    geoms = {c: np.asarray(ps.to_crs(c).geometries, dtype=object) for c in set(crs.values())}
    if reach > 0:
        geoms = {c: shapely.buffer(g, reach) for c, g in geoms.items()}
    whole = np.zeros((len(names), len(ps)), dtype=bool)
    touch = np.zeros_like(whole)
    for k, name in enumerate(names):
        whole[k] = shapely.contains(footprints[name], geoms[crs[name]])
        touch[k] = shapely.intersects(footprints[name], geoms[crs[name]])
    # of the tiles whose data holds a parcel whole, the one with the most dates: first by name, a tile newly added
    # with its last 3 dates took the season away from a parcel its neighbour holds with 19
    most = np.argsort([-len(version.tiles[n].acquisitions) for n in names], kind="stable")
    # none when the cube has no tile yet (every scene of its ingests rejected): every parcel outside its data
    first = np.where(whole.any(axis=0), most[whole[most].argmax(axis=0)], -1) if names else np.full(len(ps), -1)
    # the tiles of its zone with data over it on passes its tile lacks there (see holds_passes), pair by pair
    selection, extra = parse_time_selection(time), [[] for _ in range(len(ps))]
    for f, best in enumerate(names):
        held = np.flatnonzero(first == f)
        for k, other in enumerate(names):
            near = held[touch[k, held]]
            if other == best or crs[other] != crs[best] or not near.size:
                continue
            lacking = passes_lacking(version, best, other, selection)
            for i in near[lacks_passes(lacking, geoms[crs[best]][near])]:
                extra[i].append(other)
    touched = touch.any(axis=0)
    return [(names[f], *extra[i]) if f >= 0 else
            _one_zone(tuple(n for n, t in zip(names, touch[:, i], strict=True) if t), footprints,
                      ps.geometries[i], ps.crs) if touched[i] else ()
            for i, f in enumerate(first.tolist())]


def _one_zone(tiles: tuple[str, ...], footprints: Mapping[str, BaseGeometry], parcel: BaseGeometry,
              crs: Any) -> tuple[str, ...]:
    """``tiles`` if they lie in one UTM zone, else those of the zone whose data (``footprints``) holds most of the
    parcel: tiles of two zones make no mosaic (their pixels are not one lattice), and the parcel's status then
    says what share of it those tiles' data leave out (:func:`outside_shares`), instead of reading one tile and
    claiming the rest. ``parcel`` is in ``crs``, made an odc Geometry only here: one for each parcel outside
    the data cost 27 µs (300,000 parcels of a register beyond a small cube: 8 s)."""
    zones: dict[Any, list[str]] = {}
    for t in tiles:
        zones.setdefault(TileGrid.from_id(t).crs, []).append(t)
    if len(zones) < 2:
        return tiles

    def held(zone: Any) -> float:
        return held_share(shapely.union_all([footprints[t] for t in zones[zone]]),
                          Geometry(parcel, crs).to_crs(zone).geom)

    return tuple(zones[max(zones, key=held)])


def outside_reasons(version: CubeVersion, ps: ParcelSet, collection: str) -> dict[Any, str]:
    """The status reason of each of ``ps``, parcels outside the data of every tile (:func:`assign_tiles` gave them
    none): that, and for one in lon/lat that lies in the cube's data with its two coordinates swapped (an export of
    EPSG:4326 in its official latitude-first axis order, read as x/y), that hint: it was no field out at sea."""
    said = f"outside the data of every tile of the {collection} cube"
    reasons = dict.fromkeys(ps.ids, said)
    if not len(ps):
        return reasons
    reasons.update(_where_outside(version, ps, said))
    if not ps.crs.is_geographic:
        return reasons
    turned = shapely.transform(np.asarray(ps.geometries, dtype=object), lambda xy: xy[:, ::-1])
    swapped = ParcelSet(ps.ids, tuple(turned), ps.crs)
    for pid, tiles in zip(ps.ids, assign_tiles(version, swapped), strict=True):
        if tiles:
            reasons[pid] = (f"{said}; lon and lat swapped? so swapped it lies in the data of tile {'+'.join(tiles)}: "
                            "give its coordinates lon first (x, y)")
    return reasons


def _where_outside(version: CubeVersion, ps: ParcelSet, said: str) -> dict[Any, str]:
    """``said`` of each of ``ps`` (parcels outside the cube's data) with where it lies and where the data lies, in
    lon/lat: "outside the data", no more said, of every parcel of a file whose CRS is not its coordinates' (RD New
    coordinates labelled EPSG:3035) named no cause; a parcel hundreds of km from the data says it."""
    data = [Geometry(shapely.segmentize(data_footprint(version, t), 1000.0), TileGrid.from_id(t).crs)
            .to_crs(LONLAT).geom for t in version.tiles]
    bounds = shapely.total_bounds(np.asarray(data, dtype=object)) if data else np.full(4, np.nan)  # no tile: no scene
    where = ("the cube holds no data" if not np.isfinite(bounds).all() else
             f"the cube's data lies within lon {bounds[0]:.4f}..{bounds[2]:.4f}, lat {bounds[1]:.4f}..{bounds[3]:.4f}")
    x, y = shapely.get_coordinates(shapely.point_on_surface(np.asarray(ps.geometries, dtype=object))).T
    lon, lat = Transformer.from_crs(ps.crs, LONLAT, always_xy=True).transform(x, y)
    return {pid: (f"{said}: it lies at lon {a:.4f}, lat {b:.4f} (its coordinates read in {ps.crs.to_string()}), "
                  f"{where}" if math.isfinite(a) and math.isfinite(b) else
                  f"{said}: its coordinates read in {ps.crs.to_string()} have no place in lon/lat")
            for pid, a, b in zip(ps.ids, lon, lat, strict=True)}


def outside_shares(version: CubeVersion, ps: ParcelSet, tiles_of: Sequence[tuple[str, ...]]) -> dict[Any, float]:
    """For the parcels partly outside the data of the tiles they are read from (on the edge of the cube's
    data), the share of their area outside it: their statistics cover the rest only, which their status
    says. Measured in the first tile's CRS, the others' footprints densified and reprojected into it."""
    out: dict[Any, float] = {}
    for tiles, ids in _tile_groups(ps, tiles_of).items():
        if not tiles:  # outside every tile's data: a status of its own
            continue
        crs = TileGrid.from_id(tiles[0]).crs
        covered = shapely.union_all([Geometry(shapely.segmentize(data_footprint(version, t), 1000.0),
                                              TileGrid.from_id(t).crs).to_crs(crs).geom for t in tiles])
        sub = ps.select(ids).to_crs(crs)
        geoms = np.asarray(sub.geometries, dtype=object)
        partly = ~shapely.contains(covered, geoms)
        shares = shapely.area(shapely.difference(geoms[partly], covered)) / shapely.area(geoms[partly])
        out.update({pid: float(v) for pid, v in zip(np.asarray(sub.ids, dtype=object)[partly], shares, strict=True)
                    if v > 1e-3})
    return out


def read_notes(version: CubeVersion, ps: ParcelSet, tiles_of: Sequence[tuple[str, ...]], time: Any = None
               ) -> dict[Any, str]:
    """What the status of a parcel read from the tiles ``tiles_of`` (:func:`assign_tiles`) says beside "ok": the
    share of it outside their data (:func:`outside_shares`), and that they hold no date ``time`` selects (another
    tile does: the run goes on), so it has no row."""
    shares = outside_shares(version, ps, tiles_of)
    read = dict(zip(ps.ids, tiles_of, strict=True))
    beyond = _other_zones(version, ps, read, shares)
    notes = {pid: partly_outside(v, f"the data of tile(s) {'+'.join(read[pid])} read (in tile(s) "
                                    f"{'+'.join(beyond[pid])} of another UTM zone: no mosaic across zones)")
             if pid in beyond else partly_outside(v) for pid, v in shares.items()}
    if time is None:
        return notes
    dateless = {tile for tile, state in version.tiles.items() if not tile_dates(state, time)}
    elsewhere = {tiles: dated_elsewhere(version, tiles, time) for tiles in set(tiles_of) if len(tiles) > 1}
    for pid, tiles in zip(ps.ids, tiles_of, strict=True):
        said = (f"no acquisition of tile {'+'.join(tiles)} within the time range {time}: no row"
                if tiles and set(tiles) <= dateless else elsewhere.get(tiles, ""))
        if said:
            notes[pid] = f"{notes[pid]}; {said}" if pid in notes else said
    return notes


def _other_zones(version: CubeVersion, ps: ParcelSet, read: Mapping[Any, tuple[str, ...]], shares: Mapping[Any, float]
                 ) -> dict[Any, list[str]]:
    """For the parcels of ``shares`` (partly outside the data of the tiles ``read``), the tiles of other UTM zones
    whose data holds some of that part: it is not outside the cube's data, as their status said, but in a zone
    :func:`_one_zone` did not read (no mosaic across zones)."""
    out: dict[Any, list[str]] = {}
    crs = {t: TileGrid.from_id(t).crs for t in version.tiles}
    if len(set(crs.values())) < 2:  # one zone: nothing of another (the common case, no geometry work)
        return out
    covered: dict[tuple[str, ...], BaseGeometry] = {}  # the data of the tiles read, in their zone: once per set
    for pid in shares:
        tiles = read[pid]
        zone = crs[tiles[0]]
        if tiles not in covered:
            covered[tiles] = shapely.union_all([Geometry(shapely.segmentize(data_footprint(version, t), 1000.0),
                                                         crs[t]).to_crs(zone).geom for t in tiles])
        rest = Geometry(Geometry(ps.geometry(pid), ps.crs).to_crs(zone).geom.difference(covered[tiles]), zone)
        others = [t for t in sorted(version.tiles) if crs[t] != zone
                  and held_share(data_footprint(version, t), rest.to_crs(crs[t]).geom) > 0]
        if others:
            out[pid] = others
    return out


def _beyond(ps: ParcelSet, geobox: GeoBox) -> dict[Any, float]:
    """For the parcels of ``ps`` partly beyond ``geobox`` (a Dataset cut across them), the share of their area
    beyond it, as :func:`outside_shares` gives it for the edge of a cube's data."""
    sub = ps.to_crs(geobox.crs)
    geoms = np.asarray(sub.geometries, dtype=object)
    extent = box(*geobox.boundingbox)
    partly = shapely.intersects(extent, geoms) & ~shapely.contains(extent, geoms)
    shares = shapely.area(shapely.difference(geoms[partly], extent)) / shapely.area(geoms[partly])
    return {pid: float(v) for pid, v in zip(np.asarray(sub.ids, dtype=object)[partly], shares, strict=True)
            if v > 1e-3}


def _check_inputs(bands: Sequence[str], available: Sequence[str]) -> None:
    """A clear error for an index of a Dataset without the bands it is computed from (the statistics of an index
    are those of its formula on each pixel, computed from the stored bands)."""
    for band in bands:
        if band in INDICES and (missing := [b for b in INDICES[band][0] if b not in available]):
            raise InvalidRequestError(f"the statistics of {band} are computed from {', '.join(INDICES[band][0])}: "
                                      f"the Dataset lacks {', '.join(missing)}; keep them in it")


def partly_outside(share: float, data: str = "the cube's data") -> str:
    """The reason an ``ok`` parcel's status gives when ``share`` of its area lies outside ``data``."""
    return f"{share:.0%} of the parcel lies outside {data}: its statistics cover the rest only"


MAX_READ_BYTES = 2 * 2**30  # stored values one call may read (held as float64: 4x that of 16-bit bands in memory)
MAX_PIXELS = 10_000_000  # pixels of one call's windows (1,000 km² at 10 m; ~50 B each in memory, whatever the dates)
WINDOW_READ_PIXELS = 512 * 512  # query areas up to this size are read whole, per band and time block


def read_mode(ps: ParcelSet, tile: str, resolution: int) -> str:
    """How :func:`open_cube` should chunk the reads of ``ps``: ``"window"`` (one read per band and time
    block, each shard's index fetched once) when their bounding box is small, else ``"storage"`` (one per
    Zarr chunk, so parcels far apart do not read the ground between them)."""
    minx, miny, maxx, maxy = ps.to_crs(TileGrid.from_id(tile).crs).bounds
    return "window" if (maxx - minx) * (maxy - miny) <= WINDOW_READ_PIXELS * resolution ** 2 else "storage"


def _tile_groups(ps: ParcelSet, tiles_of: Sequence[tuple[str, ...]]) -> dict[tuple[str, ...], list[Any]]:
    """Parcel ids by the tiles to read (see :func:`assign_tiles`)."""
    groups: dict[tuple[str, ...], list[Any]] = {}
    for pid, tiles in zip(ps.ids, tiles_of, strict=True):
        groups.setdefault(tiles, []).append(pid)
    return groups


def parcel_timeseries(
    cube: xr.Dataset | StoreLike,
    parcels: Any,
    *,
    collection: str = "s2",
    bands: Sequence[str] | None = None,
    stats: Sequence[str] = STATS,
    mask: Sequence[int] | str | None = "default",
    buffer: float = DEFAULT_BUFFER,
    all_touched: bool = False,
    time: Any = None,
    as_of: int | CubeVersion | None = None,
    registry: Any = None,
    id_column: str = "parcel_id",
    histogram: bool = True,
    storage_options: Mapping[str, Any] | None = None,
    cache: ArrayCache | None = None,
    max_bytes: float = MAX_READ_BYTES,
    max_rows: int | None = None,
    max_pixels: int | None = MAX_PIXELS,
) -> pd.DataFrame:
    """Per parcel, acquisition and band: count, masked, mean, std, min, max, p25, median, p75.

    ``cube`` is a Dataset from :func:`open_cube` or a cube location; ``parcels`` a GeoDataFrame, a GeoJSON
    geometry, a lon/lat ``Point`` or parcel ids (both looked up in ``registry``); the ids of a GeoDataFrame are
    in its ``id_column`` (or its index, when it has no such column and the index is named or of text: unnamed
    integers are row numbers, of the whole or of the rows a filter kept). ``bands`` may include indices
    (``"NDVI"``). ``mask`` lists the SCL classes treated as missing ("default": shadows, clouds, cirrus, snow,
    saturated; None: no masking). Sentinel-1 statistics average linear power and report dB.
    Each row carries the acquisition metadata and the SCL class counts of its date (``scl_<code>``);
    ``frame.attrs`` hold ``cube_version``, the ``bands`` and ``stats`` read (as resolved: ``b04,B04`` is B04 once;
    no bands, every band), the ``units`` of each band's statistics (``dB``, or ``1`` for reflectance and indices)
    and ``parcel_status`` (one record per parcel: ok / outside /
    too_small with the reason; plain dicts, so the frame still writes to Parquet). ``time`` selects the dates
    of a Dataset too; none within it gives an empty frame and a :class:`NoAcquisitionWarning` naming the dates
    there are. A single parcel that
    cannot be measured raises instead, and so do parcels whose windows hold more than ``max_bytes`` of
    stored values over the dates (:class:`RequestTooLargeError`: a territory is a job for ``extract``), or
    would give more than ``max_rows`` rows (parcels x dates x bands, before reading; None: no limit), or whose
    windows hold more than ``max_pixels`` pixels (whatever the dates; None: no limit): a 40 km square is no parcel,
    and its read took the machine's memory.
    ``cache`` keeps opened arrays between calls (see :func:`cube.dataset.open_cube`).
    A Dataset is measured on its own grid: a cube location on 10 m pixels, but a Dataset of 20 m bands alone
    (``open_cube``'s default for them) on 20 m ones unless opened with ``resolution=10``; a parcel the Dataset cuts
    is measured on the part inside, which its status says.
    """
    buffer = check_buffer(buffer)
    ps = as_parcels(parcels, registry=registry, id_column=id_column)
    stats = stat_list(stats)
    if isinstance(cube, xr.Dataset | xr.DataArray):
        cube = cube_dataset(cube)
        narrowed, no_dates = as_read(cube, as_of=as_of, time=time)
        version_no = cube.attrs.get("cardcube:version")
        collection = cube.attrs.get("cardcube:collection", collection)
        available = [str(v) for v in cube.data_vars]
        bands = check_bands(bands, available, statistics=True)
        _check_inputs(bands, available)
        mask = resolve_mask(mask, available, collection)
        # the Dataset is the whole cube this call sees, and its edge the data's; its parcels read from its tiles
        reads = [(narrowed, ps, cube.attrs.get("cardcube:tiles", "").replace(",", "+"))]
        notes = {pid: partly_outside(v, "the Dataset given") for pid, v in _beyond(ps, dataset_geobox(cube)).items()}
    else:
        store = open_store(layout.cube_root(cube), storage_options=storage_options, read_only=True)
        version = read_version(store, collection, as_of)
        version_no = version.version
        available = list(version.spec.band_names)
        bands, stats, mask = check_query(version, bands=bands, stats=stats, mask=mask)
        no_dates = ""
        if time is not None:
            try:
                check_acquisitions(version, time)
            except DateNotFoundError as exc:
                no_dates = str(exc)
        needed = stored_bands(bands, available, scl=mask is not None or histogram)
        reads, notes = _tile_reads(store, version, ps, needed, time=time, cache=cache, grow=max(buffer, 0.0))

    rows = sum(len(sub) * ds.sizes["time"] for ds, sub, _ in reads if ds is not None) * len(bands)
    if max_rows is not None and rows > max_rows:
        raise RequestTooLargeError(f"{len(ps)} parcel(s) x their dates x {len(bands)} band(s): up to {rows:,} rows "
                                   f"(limit {max_rows:,}); narrow the time range, the bands or the parcels, or run "
                                   f"cardcube extract for a territory")
    frames, status = [], []
    for ds, sub, tile in reads:
        if ds is None:
            status += [ParcelStatus(p, "outside", 0, reason)
                       for p, reason in outside_reasons(version, sub, collection).items()]
            continue
        f, s = _window_stats(ds, sub, bands, stats=stats, mask=mask, buffer=buffer, all_touched=all_touched,
                             histogram=histogram, max_bytes=max_bytes, max_pixels=max_pixels)
        frames += f
        status += [replace(one, tile=tile) for one in s]
    status = [replace(s, reason=notes[s.parcel_id]) if s.status == "ok" and s.parcel_id in notes else s
              for s in status]
    status += [ParcelStatus(pid, "invalid", 0, reason) for pid, reason in ps.rejected]  # errors="collect"
    records = _checked_status(status)
    if no_dates:
        warnings.warn(f"{no_dates}; no rows", NoAcquisitionWarning, stacklevel=2)
    frame = pd.concat(frames, ignore_index=True).sort_values(["parcel_id", "time", "band"], kind="stable")
    frame = frame.reset_index(drop=True)
    frame["cube_version"] = version_no
    frame.attrs.update(cube_version=version_no, collection=collection,  # mask: what flag_parcels needs to know
                       mask=None if mask is None else [int(c) for c in mask], bands=list(bands), stats=list(stats),
                       units={band: _units(cube, band) for band in bands},  # of every statistic but count, masked
                       parcel_status=ParcelStatuses(records))
    return frame


def _tile_reads(store: Store, version: CubeVersion, ps: ParcelSet, needed: Sequence[str], *, time: Any,
                cache: ArrayCache | None, grow: float = 0.0
                ) -> tuple[list[tuple[xr.Dataset | None, ParcelSet, str]], dict[Any, str]]:
    """The parcels grouped by the tiles to read them from (:func:`assign_tiles`), each group with the lazy
    Dataset of its bounding box grown by ``grow`` metres (a positive buffer's reach: the pixels it adds beyond
    the parcels were cut off, fewer the nearer the box's edge) (None: outside the cube's data) and its tiles
    (``+``-joined); and what each parcel's status says of how it was read (:func:`read_notes`)."""
    tiles_of = assign_tiles(version, ps, time, reach=grow)
    reads: list[tuple[xr.Dataset | None, ParcelSet, str]] = []
    # the parcels' pixels are the cube's finest (10 m) pixels whatever the bands, as extraction's label layers: a
    # 20 m grid for B05 and SCL alone chose other pixels (centres 20 m apart) and counted them once each
    resolution = min(version.spec.resolutions)
    for tiles, ids in _tile_groups(ps, tiles_of).items():
        sub = ps.select(ids)
        if not tiles:
            reads.append((None, sub, ""))
            continue
        crs = TileGrid.from_id(tiles[0]).crs
        minx, miny, maxx, maxy = sub.to_crs(crs).bounds
        # stored integers, decoded in float64 here: exact statistics, half the bytes moved
        # the tiles in assign_tiles' order: a parcel's pixels where they overlap are its first tile's, whatever parcels
        # share its read (the group's box chose them: another parcel's made another tile first, whose L2A pixels of a
        # pass, corrected tile by tile, differ)
        ds = read_cube(store, version, bbox=(minx - grow, miny - grow, maxx + grow, maxy + grow), crs=crs,
                       time=time, bands=needed, tiles=list(tiles), decode=False,
                       chunks=read_mode(sub, tiles[0], resolution), resolution=resolution, cache=cache,
                       order="given")
        reads.append((ds, sub, "+".join(tiles)))
    return reads, read_notes(version, ps, tiles_of, time)


def _checked_status(status: Sequence[ParcelStatus]) -> list[dict[str, Any]]:
    """The parcels' status as records of plain values (``frame.attrs["parcel_status"]``); the error of the first
    parcel when none could be measured (a single parcel: its own error), a
    :class:`ParcelsWithoutStatisticsWarning` when some could not. Taken from the statuses themselves: through a
    frame (its text columns Arrow's, read back value by value) 300,000 parcels took 3 s."""
    failed = [s for s in status if s.status != "ok"]
    if len(failed) == len(status):
        first = failed[0]
        err = {"outside": ParcelOutsideCubeError, "too_small": ParcelTooSmallError}.get(first.status, ParcelError)
        raise err(first.parcel_id, first.reason, status=tuple(status)) if len(failed) == 1 else err(
            ", ".join(str(s.parcel_id) for s in failed[:5]), f"none of the {len(failed)} parcels can be measured; "
            f"first: parcel {first.parcel_id}: {first.reason}", status=tuple(status))
    if failed:
        warnings.warn(f"{len(failed)} of {len(status)} parcels have no statistics: " + "; ".join(
            f"parcel {s.parcel_id}: {s.reason}" for s in failed[:3]), ParcelsWithoutStatisticsWarning, stacklevel=3)
    return [{"parcel_id": s.parcel_id.item() if isinstance(s.parcel_id, np.generic) else s.parcel_id,
             "status": s.status, "pixels": int(s.pixels), "reason": s.reason, "tile": s.tile} for s in status]
